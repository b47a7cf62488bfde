"""The lam schedule of BCD and the line search along its (A, B) step.

**Default** (``Schedule()``): every sweep starts from the true equilibrium of the current
(A, B) with the optimal (C, D) readout, where the relaxed objective equals the true training
objective. The X and (A, B) steps then propose new (A, B); a line search along that step
(t = 1, 2, 4, ... or 1/2, 1/4, ...) evaluates each trial point at its true equilibrium with
its own certified optimal readout and accepts the best improving one. So the *true*
training objective never increases from sweep to sweep, and lam acts as an inverse step
size (halved after long steps, doubled after short ones).

**Per-unit continuation** (``Schedule(restart=False, factor=4, sweeps_per_stage=4,
div_tol=1e-4)``): the relaxed problem is solved over several sweeps per stage, and at the
end of a stage every state whose mean divergence is still above ``div_tol`` gets its lam_i
multiplied by ``factor`` (a dual-ascent step on F <= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.block_solvers import BlockSolver, State
from fenchel_idl.blocks.first_order import ab_projector
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.drivers.gradients import loss_gradients
from fenchel_idl.drivers.state import equilibrium, objective
from fenchel_idl.errors import ValidationError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import check_int, check_real

__all__ = ["Schedule", "adapt_lam", "line_search", "prune", "readout_weights"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Schedule:
    """How lam grows between stages (per-unit continuation).

    Attributes
    ----------
    factor : float
        Multiplier applied to lam_i of the states whose divergence is above ``div_tol``.
    stages : int
        Maximum number of lam stages.
    sweeps_per_stage : int
        Maximum sweeps in one stage.
    stage_tol : float
        A stage ends when one sweep improves the relaxed objective by less than
        ``stage_tol`` (relative).
    div_tol : float
        Mean divergence per state below which a state counts as at equilibrium.
    per_unit : bool
        Raise lam only for the states above ``div_tol`` (True) or for all (False).
    lam_max : float
        Upper limit of lam_i.
    restart : bool
        Start every stage from the true equilibrium X of the current (A, B) (a forward
        pass), so that the relaxation gap cannot build up across stages.
    line_search : bool
        After the X and (A, B) steps of a sweep, search along the step of (A, B) for the
        point that most lowers the *true* objective (loss at the equilibrium, with the
        optimal (C, D) readout, plus penalties): steps t = 1, 2, 4, ... up to ``step_max``
        while they improve, or t = 1/2, 1/4, ... down to 1/64 when t = 1 does not. Only an
        improving point is accepted, so the true objective never increases. lam then acts
        as the inverse step size: halved after a step t >= 4, doubled after t < 1 (within
        [``lam_min``, ``lam_max``]). Needs ``restart=True``; the default (None) is on
        exactly when ``restart`` is, so ``Schedule(restart=False, factor=4)`` is the
        continuation schedule without it.
    step_max : float
        Largest step of the line search. Steps above 1 are projected on the norm balls;
        they are not tried when a user constraint restricts A or B (no projection is
        known). Every step keeps the proposal's zero groups of the sparsity penalties on A
        and B (see :func:`line_search`).
    lam_min : float
        Lower limit of lam_i in the line-search schedule.
    lam_weights : {"readout", "uniform"}
        How the line-search schedule spreads lam over the states within a sweep.
        "readout" weighs lam_i by the squared norm of column i of C, w_i = (||C_i||^2 +
        eps c) / ((1 + eps) c) with c the mean of ||C_i||^2 and eps = 0.3 (mean weight 1): a
        diagonal Gauss-Newton scaling of the X step, which then moves every state's
        contribution C_i x_i to the output alike instead of moving the states with large
        readout weights most. When its line search finds no improving step, the sweep is
        retried from the same point with uniform weights before lam grows. "uniform" uses
        lam_i as it is. The weights are fixed within one search (one stage), so the relaxed
        objective of a stage is one function; the adapted lam stays unweighted.
    """

    factor: float = 1.0
    stages: int = 1000
    sweeps_per_stage: int = 1
    stage_tol: float = 1e-3
    div_tol: float = 0.0
    per_unit: bool = True
    lam_max: float = 1e6
    restart: bool = True
    line_search: bool | None = None
    step_max: float = 64.0
    lam_min: float = 1.0
    lam_weights: str = "readout"

    def __post_init__(self):
        check_real("schedule step_max", self.step_max, 1.0, None)
        check_real("schedule lam_min", self.lam_min, 0.0, None, low_open=True)
        if self.line_search is None:
            object.__setattr__(self, "line_search", self.restart)
        if self.line_search and not self.restart:
            raise ValidationError("schedule 'line_search'=True needs 'restart'=True (the line "
                                  "search compares points at their true equilibrium); got "
                                  "restart=False.")
        check_real("schedule factor", self.factor, 1.0, None)
        check_int("schedule stages", self.stages, low=1)
        check_int("schedule sweeps_per_stage", self.sweeps_per_stage, low=1)
        check_real("schedule stage_tol", self.stage_tol, 0.0, None)
        check_real("schedule div_tol", self.div_tol, 0.0, None)
        check_real("schedule lam_max", self.lam_max, 0.0, None, low_open=True)
        if self.lam_weights not in ("readout", "uniform"):
            raise ValidationError("schedule 'lam_weights' must be one of ['readout', "
                                  f"'uniform']; got {self.lam_weights!r}.")


def _kept_zeros(problem: TrainingProblem, prop: State) -> tuple[Array, Array]:
    """The entries of A and B that the line search keeps at zero along the whole path: the
    proposal's zero groups of the sparsity penalties on A or B (entries for ``l1``, columns
    of B for ``feature_selection``, rows of A or (A, B) for ``row_norms``, columns of A for
    ``column_norms``). Their proximal maps make these exact zeros; a step t != 1 from the
    base point would otherwise turn a zero group into t times the base's or (1 - t) times it.
    Returns boolean masks of the shapes of A and B."""
    zA, zB = np.zeros(prop.A.shape, bool), np.zeros(prop.B.shape, bool)
    for pn in problem.penalties:
        kind = getattr(pn, "name", "")
        if kind == "l1":
            zA |= ("A" in pn.matrices) & (prop.A == 0.0)
            zB |= ("B" in pn.matrices) & (prop.B == 0.0)
        elif kind == "feature_selection":
            zB |= ~np.any(prop.B != 0.0, axis=0)[None, :]
        elif kind == "row_norms":
            rows = ~np.any(prop.A != 0.0, axis=1)
            if pn.of == "AB":
                rows &= ~np.any(prop.B != 0.0, axis=1)
                zB |= rows[:, None]
            zA |= rows[:, None]
        elif kind == "column_norms":
            zA |= ~np.any(prop.A != 0.0, axis=0)[None, :]
    return zA, zB


def line_search(problem: TrainingProblem, base: State, prop: State, J_base: float,
                readout: BlockSolver, schedule: Schedule,
                extrapolate: bool) -> tuple[State, float, int, SolveInfo]:
    """Search along the (A, B) step from ``base`` to ``prop`` for a lower true objective.

    Every trial point is put at its true equilibrium and gets the optimal (C, D) readout (a
    certified solve), so its objective is the true training objective of that (A, B), and
    only a point that lowers it is accepted: any trial point keeps the monotone guarantee.
    With ``extrapolate`` (no user constraint on A or B) every trial point keeps the
    proposal's zero groups of the sparsity penalties (:func:`_kept_zeros`): zeroing entries
    keeps a point in the norm balls, and steps t > 1 are projected back onto them. When no
    step t <= 1 of that path improves, the plain segment is searched as well, so the sparse
    path never stops a run that the plain one would continue.
    Returns the accepted state (``base`` when no step improves), the step
    (0 for none), the number of trial points and the SolveInfo of the accepted readout.
    """
    n, p, bias = problem.n, problem.p, problem.bias
    project = ab_projector(problem, state_lipschitz(problem.activation, problem.n))
    zA, zB = _kept_zeros(problem, prop) if extrapolate else (None, None)
    sparse = zA is not None and bool(np.any(base.A[zA] != 0.0) or np.any(base.B[zB] != 0.0))

    def point(t: float, keep: bool = True):
        st = prop.copy()
        st.A = base.A + t * (prop.A - base.A)
        st.B = base.B + t * (prop.B - base.B)
        st.b = base.b + t * (prop.b - base.b)
        if keep and zA is not None:
            st.A[zA], st.B[zB] = 0.0, 0.0
        if t > 1.0:  # outside the segment: back onto the balls (zeros stay zeros)
            W = project(np.hstack([st.A, st.B] + ([st.b[:, None]] if bias else [])))
            st.A, st.B = W[:, :n], W[:, n:n + p]
            if bias:
                st.b = W[:, n + p]
        st.X, _ = equilibrium(problem, st, X0=prop.X)
        st, info = readout.solve(st)
        return st, float(sum(objective(problem, st))), info

    def better(Jt: float, Jref: float) -> bool:
        return Jt < Jref - 1e-12 * max(1.0, abs(Jref))

    evals = 1
    st, Jt, info = point(1.0)
    best = (st, Jt, 1.0, info) if better(Jt, J_base) and info.certified else None
    last_info = info
    if best is not None:
        t = 2.0
        while extrapolate and t <= schedule.step_max:
            st, Jt, info = point(t)
            evals += 1
            if not (better(Jt, best[1]) and info.certified):
                break
            best = (st, Jt, t, info)
            t *= 2.0
    else:
        for keep in ((True, False) if sparse else (True,)):
            t = 0.5
            while best is None and t >= 1.0 / 64.0:
                st, Jt, info = point(t, keep)
                evals += 1
                last_info = info
                if better(Jt, J_base) and info.certified:
                    best = (st, Jt, t, info)
                t /= 2.0
    if best is None:
        return base, 0.0, evals, last_info
    return best[0], best[2], evals, best[3]


def _prune_groups(problem: TrainingProblem, s: State) -> list[tuple[Array, Array, float]]:
    """The groups of the sparsity penalties on B and (A, B) that :func:`prune` may zero, as
    (mask of A, mask of B, predicted change of the true objective): zeroing the group g
    changes the loss by about -<grad_g, g> (implicit gradients at the equilibrium, section
    6.2) and the penalty by exactly -w ||g|| (for (B; D) columns the readout re-solved
    on the zero column of B removes D's part as well)."""
    model = ImplicitModel(s.A, s.B, s.C, s.D, problem.activation,
                          s.b if problem.bias else None, s.d if problem.bias else None)
    g = loss_gradients(model, problem.U, problem.Y, problem.loss)
    out = []
    for pn in problem.penalties:
        kind = getattr(pn, "name", "")
        if kind == "feature_selection":
            for j in np.flatnonzero(np.any(s.B != 0.0, axis=0)):
                mB = np.zeros(s.B.shape, bool)
                mB[:, j] = True
                norm = float(np.hypot(np.linalg.norm(s.B[:, j]), np.linalg.norm(s.D[:, j])))
                lin = float(g.B[:, j] @ s.B[:, j] + g.D[:, j] @ s.D[:, j])
                out.append((np.zeros(s.A.shape, bool), mB, -lin - pn.weight * norm))
        elif kind == "row_norms":
            both = pn.of == "AB"
            for i in np.flatnonzero(np.any(s.A != 0.0, axis=1)
                                    | (both & np.any(s.B != 0.0, axis=1))):
                mA, mB = np.zeros(s.A.shape, bool), np.zeros(s.B.shape, bool)
                mA[i] = True
                mB[i] = both
                norm = float(np.hypot(np.linalg.norm(s.A[i]), both * np.linalg.norm(s.B[i])))
                lin = float(g.A[i] @ s.A[i] + both * (g.B[i] @ s.B[i]))
                out.append((mA, mB, -lin - pn.weight * norm))
    return out


def prune(problem: TrainingProblem, s: State, J: float, readout: BlockSolver,
          tries: int = 3) -> tuple[State, float, int, int, SolveInfo | None]:
    """Set to exactly zero the groups of the sparsity penalties (columns of (B; D) for
    ``feature_selection``, rows of A or (A, B) for ``row_norms``) whose removal is
    predicted to lower the true objective, and keep the result only if it does.

    ``s`` is at its true equilibrium with its optimal readout and true objective ``J``. The
    BCD blocks only shrink such groups (their steps are held near the current states by
    lam), so a group whose optimum is zero can take many sweeps to reach it; this step
    reaches it at once. The trial point (the groups with a negative predicted change, then
    the better half of them, ... ``tries`` points at most) is put at its true equilibrium
    with its certified optimal readout and accepted only when its true objective is lower:
    the true objective never increases, and the accepted state's readout is certified.
    Returns (state, objective, groups zeroed, points tried, SolveInfo of the accepted readout
    or None).
    """
    groups = sorted((gr for gr in _prune_groups(problem, s) if gr[2] < 0.0),
                    key=lambda gr: gr[2])
    k, evals = len(groups), 0
    while k > 0 and evals < tries:
        st = s.copy()
        for mA, mB, _ in groups[:k]:
            st.A[mA], st.B[mB] = 0.0, 0.0
        st.X, _ = equilibrium(problem, st, X0=s.X)
        st, info = readout.solve(st)
        evals += 1
        Jt = float(sum(objective(problem, st)))
        if info.certified and Jt < J - 1e-12 * max(1.0, abs(J)):
            return st, Jt, k, evals, info
        k //= 2
    return s, J, 0, evals, None


def readout_weights(C: Array, eps: float = 0.3) -> Array:
    """Per-state weights of lam for the "readout" schedule: (||C_i||^2 + eps c) / ((1 + eps)
    c), c the mean of the squared column norms ||C_i||^2 (all ones when C = 0)."""
    c2 = np.sum(C * C, axis=0)
    c = float(c2.mean())
    if not c > 0.0:
        return np.ones(C.shape[1])
    return (c2 + eps * c) / ((1.0 + eps) * c)


def adapt_lam(lam: Array, step: float, schedule: Schedule) -> tuple[Array, bool]:
    """lam after a line search that took ``step``: halved after a step of 4 or more,
    doubled after a step below 1 (within [lam_min, lam_max]). Returns (lam, stationary):
    stationary when no step improved and lam could not grow any more."""
    if step >= 4.0:
        new = np.maximum(lam / 2.0, schedule.lam_min)
    elif step < 1.0:
        new = np.minimum(lam * 2.0, schedule.lam_max)
    else:
        new = lam
    return new, bool(step == 0.0 and np.array_equal(lam, new))
