"""Mini-batch BCD for large m: incremental majorization-minimization on the relaxed problem.

The relaxed objective of :class:`fenchel_idl.problem.training_problem.TrainingProblem` (section 6.3) is a
sum over samples (columns j) plus a penalty,

    J(X, W, K) = (1/m) sum_j [ l(y_j, K v_j) + sum_i lam_i F(x_ij, (W v_j)_i) ] + P(K),

with v_j = (x_j, u_j, 1), W = [A, B, b] and K = [C, D, d]. :func:`solve_bcd_minibatch`
sweeps over batches S of samples and, for each batch, updates X_S, then W, then K, with W
and K carried from batch to batch. What makes this a sound method:

- **X_S step: an exact block-coordinate step of J.** J is separable over samples, so the
  DCA step of :mod:`fenchel_idl.problem.training_problem` restricted to the columns S (the other columns
  fixed) is a block-coordinate step of the full J; it never increases J. It is solved
  and certified as in :func:`fenchel_idl.solve_bcd` (batched FISTA for ReLU, the CVXPY
  X block otherwise), scaled by the full 1/m.
- **W and K steps: incremental majorization-minimization (MISO; J. Mairal, "Incremental
  majorization-minimization optimization with application to large-scale machine
  learning", SIAM J. Optim. 25(2), 2015).** f*, the conjugate in F(x, z) = f(x) + f*(z) -
  xz, has the derivative phi, which is gamma-Lipschitz; so for every anchor z0

      f*(z) <= f*(z0) + phi(z0)(z - z0) + gamma/2 (z - z0)^2,

  with equality at z0 (the gap is gamma/2 (z - z0)^2 - F(phi(z0), z) >= 0). Likewise the
  cross-entropy loss, whose Hessian is at most 1/2 I (Boehning's bound), is majorized by a
  quadratic with curvature 1/2; the squared loss is its own majorizer. Every sample keeps
  the anchors (z0_j = W v_j, yhat0_j = K v_j) set when its batch was last visited. The sum
  of the majorizers, H, is then a quadratic in W and in K whose data are sums over samples:
  the Gram matrix G = sum_j v_j v_j^T and the products sum_j x_j v_j^T, sum_j a_j v_j^T,
  sum_j ytilde_j v_j^T. They are updated in O(|S|) when a batch moves, so the W step (a
  proximal step, batched FISTA with the certificate of :mod:`fenchel_idl.blocks.first_order`)
  and the K step (a proximal step by FISTA with the same kind of certificate; with a
  penalty on C or D, the exact step in CVXPY on the k x k square root of G, certified by
  the duality gap) cost the same for any m.

**What it converges to.** Precisely:

1. H >= J everywhere, H = J when every anchor is fresh, and no step increases H (X_S: an
   exact step, then the anchors of S are refreshed; W, K: minimizers of H plus a proximal
   term; a step that would raise H by more than ``tol`` is rejected, as in
   :func:`fenchel_idl.solve_bcd`). Within an epoch H decreases monotonically and bounds J
   from above, so it converges.
2. The fixed points of an epoch (no block moves) are exactly the stationary points of J:
   X is then a DCA fixed point (stationary in X); every anchor is at the current (W, K),
   and the majorizers are *first-order surrogates* (their error to J vanishes with its
   gradient at the anchor), so the optimality conditions of the W and K steps are those
   of J; J is C^1 (for the losses and activations here), and block stationarity over a
   product of convex sets is stationarity (the (C, D) minimizer may not be unique: then
   "no move" means "still a minimizer"). This holds with ``restart=False``; with restarts
   an epoch also moves X to the true equilibrium of (A, B), so its fixed points are the
   stationary points of J at which X is that equilibrium.
3. For X fixed, the W and K steps are Mairal's incremental MM with first-order surrogates,
   whose iterates satisfy the asymptotic stationary-point condition. For the joint scheme
   with X updated in the same cycle we claim no more than 1 and 2.

With ``batch_size = m`` every anchor is fresh at every step, H = J, and one epoch is one
BCD sweep whose W step is one MM step of the (A, B) block; for the squared loss the K step
is the proximal (C, D) block (the sufficient statistics are exact), and with the identity
activation the W step is the exact proximal (A, B) block too. With ``restart=True`` (the
default, as in :func:`fenchel_idl.solve_bcd`) each epoch starts from the true equilibrium of
the current (A, B), and H is reset to J.

The run ends with the optimal readout of :func:`fenchel_idl.solve_bcd`: X at the true
equilibrium of the final (A, B) on the full data, and (C, D) solved on it: exactly, through
the Gram matrix, for the squared loss; for cross-entropy by the rule of solve_bcd
(:func:`fenchel_idl.blocks.first_order.ce_readout`): the CVXPY (C, D) block (Clarabel) for small
programs, FISTA over the balls past them, certified by a Fenchel-dual lower bound within an
iteration budget, and the CVXPY block again when FISTA is not certified and the program
fits memory (not at MNIST scale). The random-feature start's readout is solved the same
way.

Not covered: penalties that read A or B (the W step has no certified batched solver for
them); use :func:`fenchel_idl.solve_bcd`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp, softmax

from fenchel_idl.blocks.gram import GramReadout
from fenchel_idl.validation import check_choice, check_int, check_real
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl._blas import env_blas_threads
from fenchel_idl.blocks.first_order import (_fista, ab_min_norm_sq, ab_projector, fast_blocks_apply,
                                            ce_readout, fast_k_step, fast_readout_apply,
                                            fast_x_block, pack_cd, unpack_cd)
from fenchel_idl.problem.losses import CrossEntropyLoss
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.blocks.solvers import ON_FAILURE, SolveInfo, solve_certified
from fenchel_idl.blocks.cvxpy_blocks import Blocks, _aggregate
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.model.activations import state_lipschitz

__all__ = ["BatchRecord", "solve_bcd_minibatch"]

Array = NDArray[np.float64]

#: Curvature bound of the softmax cross-entropy in yhat (Boehning: Hessian <= 1/2 I).
_CE_CURVATURE = 0.5

@dataclass(frozen=True)
class BatchRecord:
    """One block update of :func:`solve_bcd_minibatch`.

    Attributes
    ----------
    epoch, step : int
        The epoch, and the batch step within the run (0, 1, ...).
    block : str
        "X", "AB", "CD" (or "restart" for the start of an epoch).
    batch : int
        Number of samples of the batch.
    surrogate : float
        H after the update: the majorizer of the relaxed objective that the method
        decreases (H >= J; H = J at the start of every epoch).
    objective : float or None
        The relaxed objective J after the update, computed on the full data when
        ``monitor="step"`` (and for "restart" records); None otherwise.
    time : float
    solver, status : str
    gap, kkt_residual : float or None
    certified, accepted : bool
    """

    epoch: int
    step: int
    block: str
    batch: int
    surrogate: float
    objective: float | None
    time: float
    solver: str
    status: str
    gap: float | None
    kkt_residual: float | None
    certified: bool
    accepted: bool


# ----------------------------------------------------------------------------------------
# The majorizers
# ----------------------------------------------------------------------------------------
def divergence_anchor(problem: TrainingProblem, Z0: Array) -> Array:
    """Centres a of the quadratic majorizers of f* at the anchors Z0, shape (n, k).

    f*(z) <= gamma/2 (z - a)^2 + const with a = z0 - phi(z0) / gamma (exact at z0).
    """
    gam = state_lipschitz(problem.activation, problem.n)[:, None]
    return Z0 - problem.activation(Z0) / gam


def divergence_gap(problem: TrainingProblem, Z: Array, Z0: Array) -> Array:
    """Entrywise majorizer minus f*: gamma/2 (z - z0)^2 - F(phi(z0), z) >= 0, zero at z0."""
    gam = state_lipschitz(problem.activation, problem.n)[:, None]
    return 0.5 * gam * (Z - Z0) ** 2 - problem.activation.fenchel(problem.activation(Z0), Z)


def loss_anchor(problem: TrainingProblem, Y: Array, Yh0: Array) -> Array:
    """Centres of the quadratic loss majorizers (curvature l): y itself for the squared loss
    (exact), yhat0 - (softmax(yhat0) - y) / l for cross-entropy."""
    if isinstance(problem.loss, CrossEntropyLoss):
        return Yh0 - (softmax(Yh0, axis=0) - Y) / _CE_CURVATURE
    return Y


def loss_gap(problem: TrainingProblem, Yh: Array, Yh0: Array) -> Array:
    """Per sample majorizer minus loss (zero for the squared loss), shape (k,)."""
    if not isinstance(problem.loss, CrossEntropyLoss):
        return np.zeros(Yh.shape[1])
    lse, lse0 = logsumexp(Yh, axis=0), logsumexp(Yh0, axis=0)
    breg = lse - lse0 - np.sum(softmax(Yh0, axis=0) * (Yh - Yh0), axis=0)
    return 0.5 * _CE_CURVATURE * np.sum((Yh - Yh0) ** 2, axis=0) - breg


def _curvature(problem: TrainingProblem) -> float:
    return _CE_CURVATURE if isinstance(problem.loss, CrossEntropyLoss) else 1.0


# ----------------------------------------------------------------------------------------
# Sufficient statistics
# ----------------------------------------------------------------------------------------
class _Stats:
    """Sums over samples that the W and K majorizers need (see the module docstring)."""

    def __init__(self, problem: TrainingProblem):
        self.pb = problem
        n, p, q = problem.n, problem.p, problem.q
        k = n + p + (1 if problem.bias else 0)
        self.G = np.zeros((k, k))
        self.T = np.zeros((n, k))    # sum_j x_j v_j^T
        self.Ha = np.zeros((n, k))   # sum_j a_j v_j^T  (divergence anchors)
        self.Hl = np.zeros((q, k))   # sum_j ytilde_j v_j^T  (loss anchors)

    def V(self, X: Array, idx) -> Array:
        pb = self.pb
        parts = [X, pb.U[:, idx]] + ([np.ones((1, X.shape[1]))] if pb.bias else [])
        return np.vstack(parts)

    def add(self, sign: float, X: Array, V: Array, Z0: Array, Yh0: Array, Y: Array) -> None:
        self.G += sign * (V @ V.T)
        self.T += sign * (X @ V.T)
        self.Ha += sign * (divergence_anchor(self.pb, Z0) @ V.T)
        self.Hl += sign * (loss_anchor(self.pb, Y, Yh0) @ V.T)


# ----------------------------------------------------------------------------------------
# The W = [A, B, b] step on the majorizer
# ----------------------------------------------------------------------------------------
def _w_step(problem: TrainingProblem, st: _Stats, W0: Array, prox: float, tol: float,
            max_iter: int = 20000) -> tuple[Array, SolveInfo]:
    """min over the balls of sum_i (1/m)[gamma_i/2 w_i^T G w_i - w_i^T (gamma_i Ha_i + T_i)]
    + rho/2 ||W - W0||^2, by FISTA, with the certificate ||g_min||^2 / (2 rho).

    rho = prox * ||V||^2 / m, as :func:`fenchel_idl.blocks.first_order.ab_prox_weight` does for
    the (A, B) block of :func:`fenchel_idl.solve_bcd` (prox = 1e-5 there)."""
    t0 = time.perf_counter()
    n, m = problem.n, problem.m
    gam = state_lipschitz(problem.activation, n)
    G = st.G
    lin = gam[:, None] * st.Ha + st.T
    gc = gam[:, None] / m
    rho = 0.0  # set below, before the closures are called

    project = ab_projector(problem, gam)

    def grad_obj(Wc):
        WG = Wc @ G
        D = Wc - W0
        obj = 0.5 * float(np.sum(gc * WG * Wc)) - float(np.sum(Wc * lin)) / m \
            + 0.5 * rho * float(np.sum(D * D))
        return obj, gc * WG - lin / m + rho * D

    def certificate(Wc, f, g):
        return ab_min_norm_sq(problem, gam, Wc, g) / (2.0 * rho)

    lmax = float(np.linalg.eigvalsh(G)[-1]) / m
    rho = prox * lmax
    L = float(gam.max()) * lmax + rho
    Wn, f, gap, iters = _fista(grad_obj, project, certificate, W0, L, tol, max_iter)
    rel = gap / max(1.0, abs(f))
    ok = rel <= tol
    info = SolveInfo("AB", "FISTA", "optimal" if ok else "optimal_inaccurate", f, rel, None, ok,
                     time.perf_counter() - t0, 1,
                     "" if ok else f"gap bound {rel:.2e} above {tol:.1e} after {iters} "
                                   "iterations")
    return Wn, info


def _w_surrogate(problem: TrainingProblem, st: _Stats, W: Array, lam: Array) -> float:
    """The W-dependent part of H: sum_i lam_i/m [gamma_i/2 w_i^T G w_i - w_i^T lin_i]."""
    gam = state_lipschitz(problem.activation, problem.n)
    lin = gam[:, None] * st.Ha + st.T
    per_row = 0.5 * gam * np.sum((W @ st.G) * W, axis=1) - np.sum(W * lin, axis=1)
    return float(lam @ per_row) / problem.m


# ----------------------------------------------------------------------------------------
# The K = [C, D, d] step on the majorizer, through a square root of G
# ----------------------------------------------------------------------------------------
class _GramReadout(GramReadout):
    """The K step of the majorizer: :class:`fenchel_idl.blocks.gram.GramReadout` with the loss
    curvature l (1 for the squared loss, 1/2 for cross-entropy) and the statistics G, Hl."""

    def __init__(self, problem: TrainingProblem):
        super().__init__(problem, curvature=_curvature(problem))

    def solve(self, st: _Stats, A: Array, B: Array, solve: Callable):  # type: ignore[override]
        return super().solve(st.G, st.Hl, A, B, solve)


def _k_surrogate(problem: TrainingProblem, st: _Stats, C, D, d) -> float:
    """The K-dependent part of H: l/(2m) [tr(K G K^T) - 2 tr(K Hl^T)] + P."""
    K = pack_cd(problem, C, D, d)
    quad = float(np.sum((K @ st.G) * K)) - 2.0 * float(np.sum(K * st.Hl))
    pen = problem.penalty_value({"A": None, "B": None, "C": C, "D": D}) \
        if problem.penalties else 0.0
    return _curvature(problem) / (2.0 * problem.m) * quad + pen


# ----------------------------------------------------------------------------------------
# The X_S step (full 1/m scaling)
# ----------------------------------------------------------------------------------------
class _BatchView:
    """The attributes of a TrainingProblem that the batched X solver reads, for columns S.

    ``m`` stays the full m: the X_S objective is the restriction of J, not a rescaling.
    """

    def __init__(self, problem: TrainingProblem, idx):
        self.U, self.Y = problem.U[:, idx], problem.Y[:, idx]
        self.m, self.n, self.loss = problem.m, problem.n, problem.loss


def _x_step_cvxpy(blocks: Blocks, s, idx, solve) -> tuple[Array, SolveInfo]:
    """Blocks.solve_x restricted to the columns idx (same compiled batch problems)."""
    pb = blocks.problem
    blocks._ensure_stage(s.lam)
    U, Y, X = pb.U[:, idx], pb.Y[:, idx], s.X[:, idx]
    Wall = s.B @ U + s.b[:, None]
    M = s.lam[:, None] * s.A
    M = M + M.T
    ev, Q = np.linalg.eigh(M)
    Gall = s.lam[:, None] * Wall + (Q * np.maximum(ev, 0.0)) @ Q.T @ X
    Smv = (Q * np.sqrt(np.maximum(-ev, 0.0))) @ Q.T
    classify = isinstance(pb.loss, CrossEntropyLoss)
    Rall = s.D @ U + s.d[:, None] - (0.0 if classify else Y)
    Xnew = np.empty_like(X)
    infos = []
    for j0 in range(0, X.shape[1], blocks.col_batch):
        j1 = min(j0 + blocks.col_batch, X.shape[1])
        prob, Xv, Ap, Wp, Gp, Sm, Cp, Rp, CtY = blocks._x_problem(j1 - j0)
        Ap.value, Sm.value, Cp.value = s.A, Smv, s.C
        Wp.value, Gp.value, Rp.value = Wall[:, j0:j1], Gall[:, j0:j1], Rall[:, j0:j1]
        CtY.value = s.C.T @ Y[:, j0:j1] if classify else np.zeros((pb.n, j1 - j0))
        infos.append(solve(prob, f"X[batch {j0}:{j1}]"))
        Xnew[:, j0:j1] = Xv.value
    return Xnew, _aggregate("X", infos)


def _batch_terms(problem: TrainingProblem, s, idx, X: Array) -> float:
    """The columns idx's part of J: (1/m) sum_j [l_j + sum_i lam_i F_ij]."""
    U, Y = problem.U[:, idx], problem.Y[:, idx]
    Z = s.A @ X + s.B @ U + s.b[:, None]
    Yh = s.C @ X + s.D @ U + s.d[:, None]
    frac = X.shape[1] / problem.m
    return problem.loss.value(Y, Yh) * frac + \
        float(s.lam @ problem.activation.fenchel(X, Z).sum(axis=1)) / problem.m


def _describe_solve(info: SolveInfo) -> str:
    """One line on a solve: solver, gap (or KKT residual), certified or why not."""
    g = info.gap if info.gap is not None else info.kkt_residual
    figure = f"gap {g:.2e}" if g is not None else "no gap"
    return f"{info.solver}, {figure}, " + ("certified" if info.certified
                                           else f"NOT certified ({info.note or info.status})")


# ----------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------
@env_blas_threads
def solve_bcd_minibatch(problem: TrainingProblem, *, batch_size: int = 1024, epochs: int = 5,
                        init: Any = None, seed: int = 0, shuffle: bool = True,
                        restart: bool = True, ab_prox: float = 1e-5, cd_prox: float = 1e-5,
                        readout_iter: int | None = None, tol: float = 1e-6,
                        gap_tol: float = 1e-6, on_failure: str = "fallback",
                        solver: str | None = None, monitor: str = "epoch",
                        callback: Callable[[BatchRecord], Any] | None = None,
                        refine: Any = None, progress: bool = False):
    """Train by mini-batch BCD (incremental majorization-minimization, see the module
    docstring for what it converges to).

    Parameters
    ----------
    problem : TrainingProblem
        Any loss and componentwise activation; no penalty may read A or B.
    batch_size : int >= 1
        Largest number of samples per batch: an epoch visits ceil(m / batch_size) batches
        of balanced sizes (``batch_size >= m``: one batch, one BCD sweep per epoch).
    epochs : int >= 1
        Passes over the data.
    init : None, "random" or ImplicitModel
        As in :func:`fenchel_idl.solve_bcd`.
    seed : int
        Seed of the random start and of the batch order.
    shuffle : bool
        Visit the samples in a new random order every epoch (else in their order).
    restart : bool
        Start every epoch from the true equilibrium of the current (A, B).
    ab_prox : float > 0
        Weight of the proximal term of the W step, relative to ||V||^2 / m (the default
        is :func:`fenchel_idl.blocks.first_order.ab_prox_weight`).
    cd_prox : float > 0
        Weight of the proximal term of the K step, relative to l ||V||^2 / m (problems
        without penalties, whose K step is FISTA; with penalties it is the CVXPY block).
    readout_iter : int >= 1, optional
        Iteration budget of the first-order cross-entropy readout (start and end; see
        :func:`fenchel_idl.blocks.first_order.ce_readout`); by default that of solve_bcd,
        20,000. A readout that does not reach ``gap_tol`` within it falls back to the CVXPY
        block where that fits memory, and is otherwise kept, with the certificate saying it
        is not certified, with its gap.
    tol : float
        An update that raises H by more than ``tol * max(1, |H|)`` is rejected.
    gap_tol : float
        Tolerance of the block certificates.
    on_failure : {"fallback", "warn", "raise"}
        Policy for the CVXPY solves (:func:`fenchel_idl.blocks.solvers.solve_certified`); with
        "raise" an uncertified batched FISTA solve raises too.
    solver : str, optional
        Force one solver for the CVXPY solves.
    monitor : {"epoch", "step"}
        Compute J on the full data only at the start of an epoch, or after every update
        (a full pass each: for tests and small problems).
    callback : callable, optional
        Called with every :class:`BatchRecord`.
    refine : None, bool, dict or RefineOptions
        Optional final gradient refinement on all samples, as in
        :func:`fenchel_idl.solve_bcd` (the certificate then says that the readout is no
        longer the certified one).
    progress : bool
        A progress bar over the batches, with H and J, and a line per readout stage.

    Returns
    -------
    BCDResult
        ``history`` holds :class:`BatchRecord` objects; ``n_sweeps`` is the number of
        epochs; the certificate's ``monotone`` says that H never increased within an epoch.

    Raises
    ------
    ValidationError
        Bad options, or a penalty that reads A or B.
    SolverError
        A block that could not be certified (policies "fallback" and "raise").

    Examples
    --------
    >>> import numpy as np
    >>> from fenchel_idl import TrainingProblem
    >>> U = np.random.default_rng(0).uniform(-1, 1, (1, 200))
    >>> prob = TrainingProblem(U, np.sin(3 * U), n=8)
    >>> res = solve_bcd_minibatch(prob, batch_size=50, epochs=2)
    >>> res.certificate.blocks_certified and res.certificate.monotone
    True
    """
    from fenchel_idl.drivers.bcd import (BCDResult, Certificate, _equilibrium, _fista_failed,
                                         initial_state, _metric, refine_stage)
    from fenchel_idl.drivers.refine import RefineOptions
    from fenchel_idl.model.wellposedness import pf_eigenvalue

    if not isinstance(problem, TrainingProblem):
        raise InputTypeError(f"'problem' must be a TrainingProblem; got {type(problem).__name__}.")
    batch_size = min(check_int("batch_size", batch_size, low=1), problem.m)
    epochs = check_int("epochs", epochs, low=1)
    seed = check_int("seed", seed, low=0)
    ab_prox = check_real("ab_prox", ab_prox, 0.0, None, low_open=True)
    cd_prox = check_real("cd_prox", cd_prox, 0.0, None, low_open=True)
    if readout_iter is not None:
        readout_iter = check_int("readout_iter", readout_iter, low=1)
    tol = check_real("tol", tol, 0.0, None)
    gap_tol = check_real("gap_tol", gap_tol, 0.0, None, low_open=True)
    check_choice("on_failure", on_failure, ON_FAILURE)
    check_choice("monitor", monitor, ("epoch", "step"))
    if callback is not None and not callable(callback):
        raise InputTypeError(f"'callback' must be callable; got {type(callback).__name__}.")
    if refine is not None and not isinstance(refine, (bool, dict, RefineOptions)):
        raise InputTypeError(f"'refine' must be None, a bool, a dict or RefineOptions; got "
                             f"{refine!r}.")
    if init is not None and not isinstance(init, (str, ImplicitModel)):
        raise InputTypeError(f"'init' must be None, 'random' or an ImplicitModel; got "
                             f"{type(init).__name__}.")
    reads_ab = [pn.name for pn in problem.penalties if set(pn.matrices) & {"A", "B"}]
    if reads_ab:
        raise ValidationError(f"solve_bcd_minibatch supports penalties on C and D only; the "
                              f"penalties {reads_ab} read A or B. Use solve_bcd for them.")
    solvers = (solver,) if solver else None
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    pb = problem
    n, m = pb.n, pb.m
    fast_x = solver is None and fast_blocks_apply(pb)
    relu = pb.activation.name == "relu"
    blocks = Blocks(pb)
    readout_k = _GramReadout(pb)
    fast_k = solver is None and fast_readout_apply(pb)
    squared = not isinstance(pb.loss, CrossEntropyLoss)
    events: list[dict] = []

    def solve(prob, name):
        # no solver warm start: a solve depends on its data only (as in solve_bcd)
        infos = solve_certified(prob, name, pb.cone, solvers, on_failure, gap_tol,
                                warm_start=False)
        events.extend(inf.to_dict() for inf in infos if not inf.certified)
        return infos[-1]

    def fista_failed(info: SolveInfo) -> None:
        _fista_failed(info, events, on_failure)

    s = initial_state(pb, init, rng)
    stats = _Stats(pb)
    everything = np.arange(m)

    def refresh_all():
        """Anchors at the current (W, K) for every sample; exact statistics; H = J."""
        Z0 = s.A @ s.X + s.B @ pb.U + s.b[:, None]
        Yh0 = s.C @ s.X + s.D @ pb.U + s.d[:, None]
        st = _Stats(pb)
        st.add(1.0, s.X, st.V(s.X, everything), Z0, Yh0, pb.Y)
        return st, Z0, Yh0

    def objective():
        return float(sum(pb.objective_parts(s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam)))

    def readout():
        """The (C, D) block on all samples at the current X (see the module docstring)."""
        if squared:
            st, _, _ = refresh_all()
            return readout_k.solve(st, s.A, s.B, solve)
        return ce_readout(pb, s.X, pack_cd(pb, s.C, s.D, s.d),
                          lambda: blocks.solve_cd(s.X, s.A, s.B, solve), fista_failed,
                          gap_tol, readout_iter, first_order=fast_k)

    def k_step(st):
        """The (C, D) step on the majorizer: proximal FISTA, or CVXPY on the Gram root."""
        if fast_k:
            K, info = fast_k_step(pb, st.G, st.Hl, pack_cd(pb, s.C, s.D, s.d), _curvature(pb),
                                  cd_prox, tol=gap_tol)
            if info.certified:
                return (*unpack_cd(pb, K), info)
            fista_failed(info)
        return readout_k.solve(st, s.A, s.B, solve)

    n_batches = -(-m // batch_size)
    timings: dict[str, float] = {}

    def say(text: str) -> None:
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(f"mini-batch BCD: {text}")

    if init is None or isinstance(init, str):
        say("readout of the random-feature start")
        s.C, s.D, s.d, start_info = readout()
        timings["start_readout"] = time.perf_counter() - t_start
        say(f"start readout: {_describe_solve(start_info)}")
    start_model = pb.to_user_model(s.A, s.B, s.b, s.C, s.D, s.d)
    start_metric = _metric(pb, start_model)
    history: list[BatchRecord] = []
    rejected = 0
    max_increase = -np.inf
    eq_losses: list[tuple[int, float]] = []
    step = 0
    H = J = np.nan
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, desc="mini-batch BCD", unit="batch")

    def record(epoch, block, size, info, accepted, t0):
        rec = BatchRecord(epoch, step, block, size, float(H),
                          objective() if monitor == "step" else None,
                          time.perf_counter() - t0, info.solver, info.status, info.gap,
                          info.kkt_residual, info.certified, accepted)
        history.append(rec)
        if callback is not None:
            callback(rec)

    def accept(dH: float) -> bool:
        nonlocal rejected, max_increase
        increase = dH / max(1.0, abs(H))
        if increase <= tol:
            max_increase = max(max_increase, increase)
            return True
        rejected += 1
        return False

    last_improvement = np.inf
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if restart:
            s.X, _ = _equilibrium(pb, s, X0=s.X)
            eq_losses.append((epoch, float(pb.objective_parts(
                s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam)[0])))
        stats, Z0, Yh0 = refresh_all()
        H = J = objective()
        H_epoch_start = H
        history.append(BatchRecord(epoch, step, "restart", m, H, J, time.perf_counter() - t0,
                                   "equilibrium" if restart else "-", "optimal", None, None,
                                   True, True))
        order = rng.permutation(m) if shuffle else everything
        # ceil(m / batch_size) batches of balanced sizes (no small last batch)
        for part in np.array_split(order, n_batches):
            idx = np.sort(part)
            size = idx.size
            # -- X_S: an exact block step of J; then the anchors of S are refreshed
            t0 = time.perf_counter()
            X_old = s.X[:, idx]
            V_old = stats.V(X_old, idx)
            old_terms = _batch_terms(pb, s, idx, X_old)
            Z_now = s.A @ X_old + s.B @ pb.U[:, idx] + s.b[:, None]
            Yh_now = s.C @ X_old + s.D @ pb.U[:, idx] + s.d[:, None]
            stale = (float(s.lam @ divergence_gap(pb, Z_now, Z0[:, idx]).sum(axis=1))
                     + float(loss_gap(pb, Yh_now, Yh0[:, idx]).sum())) / m
            info = None
            if fast_x:
                X_new, info = fast_x_block(_BatchView(pb, idx), s.A, s.B, s.b, s.C, s.D, s.d,
                                           X_old, s.lam, tol=gap_tol)
                if not info.certified:
                    fista_failed(info)
            if info is None or not info.certified:
                X_new, info = _x_step_cvxpy(blocks, s, idx, solve)
            if relu:
                X_new = np.maximum(X_new, 0.0)
            new_terms = _batch_terms(pb, s, idx, X_new)
            ok = new_terms - old_terms <= tol * max(1.0, abs(H))
            if not ok:
                rejected += 1
                X_new = X_old
                new_terms = old_terms
            else:
                max_increase = max(max_increase, (new_terms - old_terms) / max(1.0, abs(H)))
            # refreshing S's anchors removes its stale gap; the X step changes J_S
            H = H - stale + (new_terms - old_terms)
            V_new = stats.V(X_new, idx)
            Z_new = s.A @ X_new + s.B @ pb.U[:, idx] + s.b[:, None]
            Yh_new = s.C @ X_new + s.D @ pb.U[:, idx] + s.d[:, None]
            Y_S = pb.Y[:, idx]
            stats.add(-1.0, X_old, V_old, Z0[:, idx], Yh0[:, idx], Y_S)
            stats.add(1.0, X_new, V_new, Z_new, Yh_new, Y_S)
            s.X[:, idx], Z0[:, idx], Yh0[:, idx] = X_new, Z_new, Yh_new
            record(epoch, "X", size, info, ok, t0)
            # -- W = [A, B, b]: a proximal step on the majorizer
            t0 = time.perf_counter()
            W = np.hstack([s.A, s.B] + ([s.b[:, None]] if pb.bias else []))
            W_new, info = _w_step(pb, stats, W, ab_prox, gap_tol)
            if not info.certified:
                fista_failed(info)
            dH = _w_surrogate(pb, stats, W_new, s.lam) - _w_surrogate(pb, stats, W, s.lam)
            ok = info.certified and accept(dH)
            if ok:
                s.A, s.B = W_new[:, :n], W_new[:, n:n + pb.p]
                s.b = W_new[:, n + pb.p] if pb.bias else np.zeros(n)
                H += dH
            record(epoch, "AB", size, info, ok, t0)
            # -- K = [C, D, d]: the (C, D) block on the majorizer (exact for squared loss)
            t0 = time.perf_counter()
            C, D, d, info = k_step(stats)
            dH = _k_surrogate(pb, stats, C, D, d) - _k_surrogate(pb, stats, s.C, s.D, s.d)
            ok = accept(dH)
            if ok:
                s.C, s.D, s.d = C, D, d
                H += dH
            record(epoch, "CD", size, info, ok, t0)
            step += 1
            if bar is not None:
                bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} H {H:.4g}")
                bar.update(1)
        J_end = objective()
        last_improvement = (H_epoch_start - J_end) / max(1.0, abs(H_epoch_start))
        if bar is not None:
            bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} H {H:.4g} J {J_end:.4g}")
    if bar is not None:
        bar.close()
    t_bcd = time.perf_counter() - t_start
    # final optimal readout on the true equilibrium, full data
    relaxed_parts = pb.objective_parts(s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam)
    s.X, eq_info = _equilibrium(pb, s, X0=s.X)
    say("final readout at the true equilibrium")
    t0 = time.perf_counter()
    s.C, s.D, s.d, readout_info = readout()
    timings["final_readout"] = time.perf_counter() - t0
    say(f"final readout: {_describe_solve(readout_info)}")
    model = pb.to_user_model(s.A, s.B, s.b, s.C, s.D, s.d)
    refine_history = None
    if refine:
        t0 = time.perf_counter()
        model, refine_history = refine_stage(pb, model, refine, seed, progress)
        timings["refine"] = time.perf_counter() - t0
        s.A, s.B, s.b, s.C, s.D, s.d = pb.from_user_model(model)
        s.X, eq_info = _equilibrium(pb, s, X0=s.X)
    true_loss = pb.loss.value(pb.Y, s.C @ s.X + s.D @ pb.U + s.d[:, None])
    gam = state_lipschitz(pb.activation, pb.n)
    norm_inf = float(np.max(gam * np.abs(s.A).sum(axis=1)))
    lam_pf = pf_eigenvalue(gam[:, None] * np.abs(s.A))
    used = [r for r in history if r.accepted and r.block != "restart"]
    gaps = [g for r in used for g in (r.gap, r.kkt_residual) if g is not None]
    cert = Certificate(
        blocks_certified=all(r.certified for r in used) and readout_info.certified,
        max_gap=float(max(gaps)) if gaps else 0.0, solve_events=events,
        monotone=bool(max_increase <= tol) if np.isfinite(max_increase) else True,
        max_increase=float(max_increase) if np.isfinite(max_increase) else 0.0,
        rejected_updates=rejected, stationary=bool(abs(last_improvement) < 1e-3),
        last_improvement=float(last_improvement), pf_eigenvalue=lam_pf, norm_inf=norm_inf,
        kappa=pb.kappa, well_posed=bool(lam_pf < 1 and norm_inf <= pb.kappa + 1e-9),
        equilibrium_residual=eq_info.residual, relaxed_objective=float(sum(relaxed_parts)),
        true_loss=float(true_loss), relaxation_gap=float(true_loss - relaxed_parts[0]),
        readout_certified=readout_info.certified and refine_history is None,
        train_metric=_metric(pb, model), refined=refine_history is not None)
    if not eq_info.converged:
        warnings.warn("the final equilibrium did not converge; see the certificate.",
                      RuntimeWarning, stacklevel=2)
    return BCDResult(model=model, history=history, certificate=cert, start_model=start_model,
                     start_metric=start_metric, n_sweeps=epochs, lam=s.lam.copy(),
                     equilibrium_losses=eq_losses, refine_history=refine_history,
                     timings={**timings, "bcd": t_bcd, "total": time.perf_counter() - t_start})
