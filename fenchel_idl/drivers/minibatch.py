"""Mini-batch BCD for large m: incremental majorization-minimization on the relaxed problem.

The relaxed objective of :class:`fenchel_idl.TrainingProblem` (section 6.3) is a
sum over samples (columns j) plus a penalty,

    J(X, W, K) = (1/m) sum_j [ l(y_j, K v_j) + sum_i lam_i F(x_ij, (W v_j)_i) ] + P(K),

with v_j = (x_j, u_j, 1), W = [A, B, b] and K = [C, D, d]. :func:`solve_bcd_minibatch`
sweeps over batches S of samples and, for each batch, updates X_S, then W, then K, with W
and K carried from batch to batch. What makes this a sound method:

- **X_S step: an exact block-coordinate step of J.** J is separable over samples, so the
  DCA step of :mod:`fenchel_idl.blocks.dca` restricted to the columns S (the other columns
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
  proximal step, :func:`fenchel_idl.blocks.first_order.fast_w_step`: batched FISTA in
  centred coordinates, with the certificate of :mod:`fenchel_idl.blocks.first_order`)
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
activation the W step is the exact proximal (A, B) block too (with the centred proximal
term of :func:`fenchel_idl.blocks.first_order.fast_w_step`). With ``restart=True`` (the
default, as in :func:`fenchel_idl.solve_bcd`) each epoch starts from the true equilibrium of
the current (A, B), and H is reset to J.

With ``line_search=True`` each epoch is followed by a search along its step on the *true*
objective, as :func:`fenchel_idl.solve_bcd` searches along a sweep's step (a line search
between two points of BCD, evaluated on the true objective): the next epoch starts from the
best point found, at its true equilibrium, and H is reset there as after any restart.

The run ends with the optimal readout of :func:`fenchel_idl.solve_bcd`: X at the true
equilibrium of the final (A, B) on the full data, and (C, D) solved on it: exactly, through
the Gram matrix, for the squared loss; for cross-entropy by the rule of solve_bcd
(:func:`fenchel_idl.blocks.first_order.ce_readout`): the CVXPY (C, D) block (Clarabel) for small
programs, FISTA over the balls past them, certified by a Fenchel-dual lower bound within an
iteration budget, and the CVXPY block again when FISTA is not certified and the program
fits memory (not at MNIST scale). The random-feature start's readout is solved the same
way.

**Stochastic steps** (``steps="stochastic"``). The incremental W and K steps minimize H,
whose anchors for the samples outside the batch are stale: in an epoch the model moves by
about one majorize-minimize step of the full J, and on MNIST the true loss fell by about
0.007 per epoch. The stochastic steps instead take each block step on the relaxed
objective of the batch alone, J_S = (1/|S|) sum_{j in S} [l_j + sum_i lam_i F_ij] + P
(:func:`batch_problem`), whose mean over an epoch's batches is J. For each batch:

1. X_S is set to the true equilibrium of the current (A, B) (a restart of its columns);
2. K: proximal majorize-minimize steps of J_S in K (the quadratic loss majorizer anchored
   at the current K, through the batch's Gram matrix; with a penalty on C or D, the CVXPY
   Gram block), on those equilibrium states, so that the readout follows the model the
   final readout will see;
3. X_S: the DCA step of J_S (the same block step as above, on the batch's columns);
4. W: proximal majorize-minimize steps of J_S in W (the f* majorizer anchored at the
   current W, through the batch's Gram matrix: each FISTA iteration costs n k^2 whatever
   |S|, and the batch's centred Gram matrix keeps the iterations few).

Every step is certified and none increases J_S (one that would is rejected). This is
stochastic proximal block descent: no claim that J decreases, and the certificate's
``monotone`` compares J at each epoch's start and end; with ``line_search`` the *true*
objective at the epochs' ends still never increases. On MNIST (all 60,000 images, n = 128,
batches of 2,000, lam = 0.1) the first epoch took the true objective from 0.288 to 0.223,
where the incremental steps took about 0.007 per epoch. On small problems a batch's step
can overfit the batch when lam is small (the states fit its labels and W fits the states):
the line search then keeps the epoch's start; a larger lam helps.

Not covered: penalties that read A or B (the W step has no certified batched solver for
them); use :func:`fenchel_idl.solve_bcd`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp, softmax

from fenchel_idl._blas import env_blas_threads
from fenchel_idl.blocks.block_solvers import BlockSolvers, SolvePolicy, State, make_block_solvers
from fenchel_idl.blocks.first_order import (
    AB_PROX,
    CentredGram,
    ab_projector,
    fast_k_step,
    fast_readout_apply,
    fast_w_step,
    pack_cd,
    readout_projector,
    unpack_cd,
)
from fenchel_idl.blocks.gram import GramReadout
from fenchel_idl.blocks.solvers import SolveInfo, describe_solve
from fenchel_idl.drivers.finish import DescentStats, check_run_options, finish
from fenchel_idl.drivers.progress import Progress
from fenchel_idl.drivers.records import BatchRecord, BCDResult, outcome
from fenchel_idl.drivers.schedule import Schedule
from fenchel_idl.drivers.state import equilibrium, initial_state, objective, train_metric
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.losses import CrossEntropyLoss
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import check_choice, check_int, check_real

__all__ = ["solve_bcd_minibatch"]

Array = NDArray[np.float64]

#: Curvature bound of the softmax cross-entropy in yhat (Boehning: Hessian <= 1/2 I).
_CE_CURVATURE = 0.5

#: The proximal weights of the stochastic steps (``steps="stochastic"``), relative to the
#: curvature bounds of their blocks on the batch: a W or K step on one batch moves the model
#: for all samples, and a weight far below these lets it fit that batch's noise.
_STOCHASTIC_AB_PROX, _STOCHASTIC_CD_PROX = 1e-3, 1e-2

#: Majorize-minimize steps of a stochastic W step, and of a cross-entropy K step (the
#: squared loss is its own majorizer: one).
_STOCHASTIC_MM_STEPS = 3

#: Largest and smallest steps of the epoch line search (``line_search``), relative to the
#: epoch's own step.
_LS_STEP_MAX, _LS_STEP_MIN = 16.0, 0.125

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

    def solve(self, st: _Stats, A: Array, B: Array, solve: Callable,  # type: ignore[override]
              tol: float = 1e-6, least_squares: bool = True):
        return super().solve(st.G, st.Hl, A, B, solve, tol, least_squares)


def _k_surrogate(problem: TrainingProblem, st: _Stats, C, D, d) -> float:
    """The K-dependent part of H: l/(2m) [tr(K G K^T) - 2 tr(K Hl^T)] + P."""
    K = pack_cd(problem, C, D, d)
    quad = float(np.sum((K @ st.G) * K)) - 2.0 * float(np.sum(K * st.Hl))
    # the penalties read C and D only (solve_bcd_minibatch refuses the others)
    pen = problem.penalty_value({"C": C, "D": D}) if problem.penalties else 0.0
    return _curvature(problem) / (2.0 * problem.m) * quad + pen


def _batch_terms(problem: TrainingProblem, s, idx, X: Array) -> float:
    """The columns idx's part of J: (1/m) sum_j [l_j + sum_i lam_i F_ij]."""
    U, Y = problem.U[:, idx], problem.Y[:, idx]
    Z = s.A @ X + s.B @ U + s.b[:, None]
    Yh = s.C @ X + s.D @ U + s.d[:, None]
    frac = X.shape[1] / problem.m
    return problem.loss.value(Y, Yh) * frac + \
        float(s.lam @ problem.activation.fenchel(X, Z).sum(axis=1)) / problem.m


def batch_problem(problem: TrainingProblem, idx) -> TrainingProblem:
    """The training problem of the samples ``idx`` alone: a shallow copy with their U and Y
    and m = |idx|, so that its relaxed objective is the batch's J_S = (1/|S|) sum over S
    (plus the same penalties); the standardization is the full problem's."""
    view = copy.copy(problem)
    view.U, view.Y, view.m = problem.U[:, idx], problem.Y[:, idx], len(idx)
    view.U_raw, view.Y_raw = problem.U_raw[:, idx], problem.Y_raw[:, idx]
    return view


def _batch_objective(view: TrainingProblem, s: State, X: Array) -> float:
    return float(sum(view.objective_parts(s.A, s.B, s.b, s.C, s.D, s.d, X, s.lam)))


# ----------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------
@env_blas_threads
def solve_bcd_minibatch(problem: TrainingProblem, *, batch_size: int = 1024, epochs: int = 5,
                        init: Any = None, seed: int = 0, shuffle: bool = True,
                        restart: bool = True, lam_growth: float = 1.0,
                        line_search: bool = False, steps: str = "incremental",
                        ab_prox: float | None = None, cd_prox: float | None = None,
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
    lam_growth : float >= 1
        lam is multiplied by this factor at the start of every epoch after the first (a
        continuation: lam is the inverse step of the X steps, so a small lam lets the
        states, and through the W step the features, move far toward the labels early, and
        a grown lam ties the last epochs' states to the model's equilibrium). H is reset
        to J at every epoch's start, so it is monotone within each epoch as with a fixed
        lam. 1 (the default) keeps lam fixed.
    line_search : bool
        After every epoch, search along the epoch's step, from (W, K) at its start to (W,
        K) at its end, for a lower *true* training objective (loss at the true equilibrium,
        plus the penalties), as :func:`fenchel_idl.solve_bcd`'s line search does along a
        sweep's step: t = 1, then 2, 4, ... 16 while the objective falls (points past the
        segment projected onto the balls), or 1/2, 1/4, 1/8 when t = 1 does not improve on
        the epoch's start; the best improving point is kept, the start when none improves.
        Each trial point costs one equilibrium solve on all samples; the readout is the
        trial point's own K (re-solving it at every point would cost a full readout). So
        the true objective at the epochs' ends never increases. Needs ``restart``.
    steps : {"incremental", "stochastic"}
        What the W and K steps minimize. "incremental" (the default): the majorizer H of
        the full relaxed objective J, through its statistics over all samples (the module
        docstring; H never increases within an epoch). "stochastic": the relaxed objective
        of the batch alone, J_S = (1/|S|) sum_{j in S} [l_j + sum_i lam_i F_ij] + P, whose
        mean over the batches of an epoch is J: for each batch, its states restart at the
        true equilibrium of the current (A, B), then K (proximal majorize-minimize steps of
        J_S in K, three for cross-entropy), X_S (the DCA step of J_S) and W (three
        proximal majorize-minimize steps of J_S in W) each take a certified step that does
        not increase J_S (see the module docstring). J itself may rise within an epoch
        (the certificate's ``monotone`` compares J at each epoch's start and end).
    ab_prox : float > 0, optional
        Weight of the proximal term of the W step, relative to ||V||^2 / m (the batch's for
        "stochastic"); the term is taken in centred coordinates
        (:func:`fenchel_idl.blocks.first_order.fast_w_step`). Default:
        :func:`fenchel_idl.blocks.first_order.ab_prox_weight`'s for "incremental", 1e-3 for
        "stochastic" (a step on one batch must not fit its noise).
    cd_prox : float > 0, optional
        Weight of the proximal term of the K step, relative to l ||V||^2 / m (problems
        without penalties, whose K step is FISTA; with penalties it is the CVXPY block).
        Default 1e-5 for "incremental", 1e-2 for "stochastic".
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
        A progress bar over the batches, with H and J, and a line per readout stage, when
        stderr is a terminal; otherwise one INFO line per epoch and per readout stage to the
        ``fenchel_idl.drivers`` logger.

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
    check_choice("steps", steps, ("incremental", "stochastic"))
    stochastic = steps == "stochastic"
    if ab_prox is None:
        ab_prox = _STOCHASTIC_AB_PROX if stochastic else AB_PROX
    if cd_prox is None:
        cd_prox = _STOCHASTIC_CD_PROX if stochastic else 1e-5
    batch_size, readout_iter = _check_arguments(
        problem, batch_size, epochs, seed, ab_prox, cd_prox, readout_iter, tol, gap_tol,
        monitor, callback, refine, init)
    check_real("lam_growth", lam_growth, 1.0, None)
    if not isinstance(line_search, bool):
        raise InputTypeError(f"'line_search' must be a bool; got {type(line_search).__name__}.")
    if line_search and not restart:
        raise ValidationError("'line_search'=True needs 'restart'=True: the search starts "
                              "from the epoch's start at its true equilibrium.")
    policy = SolvePolicy(problem.cone, solver, on_failure, gap_tol)
    solvers = make_block_solvers(problem, policy, readout_iter=readout_iter)
    t_start = time.perf_counter()
    run = _MiniBatch(problem, solvers, batch_size, ab_prox, cd_prox, tol, monitor, callback,
                     progress, line_search, stochastic)
    rng = np.random.default_rng(seed)
    run.shown.open(epochs * run.n_batches, "batch")  # first: the start readout says where
    start_model = run.start(init, rng)
    for epoch in range(epochs):
        if epoch:
            run.s.lam = run.s.lam * lam_growth
        run.epoch(epoch, epochs, rng.permutation(problem.m) if shuffle else None, restart)
        if line_search:
            run.line_search(epoch)
    run.shown.close()
    t_bcd = time.perf_counter() - t_start
    run.say("final readout at the true equilibrium")
    done = finish(problem, run.s, solvers.CD, run.stats(), tol=tol,
                  stage_tol=Schedule().stage_tol, refine=refine, seed=seed, progress=progress)
    run.say(f"final readout: {describe_solve(done.readout_info)}")
    return BCDResult(model=done.model, history=run.history, certificate=done.certificate,
                     start_model=start_model, start_metric=train_metric(problem, start_model),
                     n_sweeps=epochs, lam=run.s.lam.copy(), equilibrium_losses=run.eq_losses,
                     refine_history=done.refine_history,
                     timings={**run.timings, **done.timings, "bcd": t_bcd,
                              "total": time.perf_counter() - t_start})


def _check_arguments(problem, batch_size, epochs, seed, ab_prox, cd_prox, readout_iter, tol,
                     gap_tol, monitor, callback, refine, init) -> tuple[int, int | None]:
    """Validate solve_bcd_minibatch's arguments; return (batch size, readout_iter)."""
    if not isinstance(problem, TrainingProblem):
        raise InputTypeError(f"'problem' must be a TrainingProblem; got {type(problem).__name__}.")
    batch_size = min(check_int("batch_size", batch_size, low=1), problem.m)
    check_int("epochs", epochs, low=1)
    check_int("seed", seed, low=0)
    check_real("ab_prox", ab_prox, 0.0, None, low_open=True)
    check_real("cd_prox", cd_prox, 0.0, None, low_open=True)
    if readout_iter is not None:
        readout_iter = check_int("readout_iter", readout_iter, low=1)
    check_real("tol", tol, 0.0, None)
    check_real("gap_tol", gap_tol, 0.0, None, low_open=True)
    check_choice("monitor", monitor, ("epoch", "step"))
    check_run_options(callback, init, refine)
    reads_ab = [pn.name for pn in problem.penalties if set(pn.matrices) & {"A", "B"}]
    if reads_ab:
        raise ValidationError(f"solve_bcd_minibatch supports penalties on C and D only; the "
                              f"penalties {reads_ab} read A or B. Use solve_bcd for them.")
    return batch_size, readout_iter


class _MiniBatch:
    """The state of one mini-batch run: the variables, the anchors and statistics of the
    majorizer H, the history, and the named steps of an epoch."""

    def __init__(self, problem: TrainingProblem, solvers: BlockSolvers, batch_size: int,
                 ab_prox: float, cd_prox: float, tol: float, monitor: str,
                 callback: Callable | None, progress: bool, searches: bool = False,
                 stochastic: bool = False):
        self.pb, self.solvers, self.policy = problem, solvers, solvers.CD.policy
        self.searches = searches  # keep each epoch's start for the line search
        self.stochastic = stochastic
        self.n_batches = -(-problem.m // batch_size)
        self.ab_prox, self.cd_prox, self.tol = ab_prox, cd_prox, tol
        self.monitor, self.callback = monitor, callback
        self.readout_k = _GramReadout(problem)
        self.fast_k = self.policy.solvers is None and fast_readout_apply(problem)
        self.history: list[BatchRecord] = []
        self.eq_losses: list[tuple[int, float]] = []
        self.timings: dict[str, float] = {}
        self.rejected, self.step = 0, 0
        self.max_increase, self.last_improvement = -np.inf, np.inf
        self.H = self.J = np.nan
        self.shown = Progress(progress, "mini-batch BCD")
        self.s: State

    # -- start, progress, result ----------------------------------------------------------
    def start(self, init: Any, rng: np.random.Generator) -> ImplicitModel:
        """The start state, with the readout of a random-feature start; its model."""
        t0 = time.perf_counter()
        self.s = initial_state(self.pb, init, rng)
        if init is None or isinstance(init, str):
            self.say("readout of the random-feature start")
            self.s, info = self.solvers.CD.solve(self.s)
            self.timings["start_readout"] = time.perf_counter() - t0
            self.say(f"start readout: {describe_solve(info)}")
        s = self.s
        return self.pb.to_user_model(s.A, s.B, s.b, s.C, s.D, s.d)

    def say(self, text: str) -> None:
        """A message above the progress bar, or an INFO log line without one."""
        self.shown.say(text)

    def stats(self) -> DescentStats:
        relaxed = objective(self.pb, self.s)
        return DescentStats(
            used=[r for r in self.history if r.accepted and r.block not in ("restart", "LS")],
            events=self.policy.events, max_increase=self.max_increase, rejected=self.rejected,
            last_improvement=self.last_improvement, relaxed_objective=float(sum(relaxed)),
            relaxed_loss=relaxed[0], hit_max=True,
            stop_reason=f"epochs={getattr(self, 'n_epochs', 0)} ran (the mini-batch driver "
            "runs every epoch)")

    # -- H, J and the records -------------------------------------------------------------
    def objective(self) -> float:
        return float(sum(objective(self.pb, self.s)))

    def refresh_all(self) -> None:
        """Anchors at the current (W, K) for every sample; exact statistics; H = J."""
        pb, s = self.pb, self.s
        self.Z0 = s.A @ s.X + s.B @ pb.U + s.b[:, None]
        self.Yh0 = s.C @ s.X + s.D @ pb.U + s.d[:, None]
        self.st = _Stats(pb)
        self.st.add(1.0, s.X, self.st.V(s.X, np.arange(pb.m)), self.Z0, self.Yh0, pb.Y)

    def record(self, epoch: int, block: str, size: int, info: SolveInfo, accepted: bool,
               t0: float) -> None:
        rec = BatchRecord(epoch, self.step, block, size, float(self.H),
                          self.objective() if self.monitor == "step" else None,
                          time.perf_counter() - t0, **outcome(info, accepted))
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)

    def accept(self, dH: float) -> bool:
        """Whether a change dH of H is within the tolerance (then it counts toward the
        largest increase), else a rejection."""
        increase = dH / max(1.0, abs(self.H))
        if increase <= self.tol:
            self.max_increase = max(self.max_increase, increase)
            return True
        self.rejected += 1
        return False

    # -- an epoch -------------------------------------------------------------------------
    def epoch(self, epoch: int, epochs: int, order, restart: bool) -> None:
        """(Optionally) restart at the true equilibrium, then one pass over the batches in
        ``order`` (None: in sample order)."""
        self.n_epochs = epochs
        pb, t0 = self.pb, time.perf_counter()
        if restart:
            self.s.X, _ = equilibrium(pb, self.s, X0=self.s.X)
            self.eq_losses.append((epoch, float(objective(pb, self.s)[0])))
        if not self.stochastic:  # the stochastic steps keep no statistics
            self.refresh_all()
        self.H = self.J = H_start = self.objective()
        if self.searches:  # the line search's start, at its true equilibrium
            self.base = (self.s.copy(), self.J)
        self.history.append(BatchRecord(
            epoch, self.step, "restart", pb.m, self.H, self.J, time.perf_counter() - t0,
            solver="equilibrium" if restart else "-", status="optimal", gap=None,
            kkt_residual=None, certified=True, accepted=True))
        order = np.arange(pb.m) if order is None else order
        # ceil(m / batch_size) batches of balanced sizes (no small last batch)
        for part in np.array_split(order, self.n_batches):
            idx = np.sort(part)
            if self.stochastic:
                self.batch_steps(epoch, idx)
            else:
                self.x_step(epoch, idx)
                self.w_step(epoch, idx.size)
                self.k_step(epoch, idx.size)
            self.step += 1
            self.shown.update(f"epoch {epoch + 1}/{epochs} H {self.H:.4g}")
        J_end = self.objective()
        self.last_improvement = (H_start - J_end) / max(1.0, abs(H_start))
        if self.stochastic:  # J is measured at the epoch's start and end only
            self.max_increase = max(self.max_increase, -self.last_improvement)
        self.shown.postfix(f"epoch {epoch + 1}/{epochs} H {self.H:.4g} J {J_end:.4g}")
        # H is the majorizer for the incremental steps, the last batch's J_S for the
        # stochastic ones; J_end is the relaxed objective at the states the batches left
        what = "last batch's J_S" if self.stochastic else "majorizer H"
        self.shown.line(f"epoch {epoch + 1}/{epochs}: {what} {self.H:.4g}, relaxed objective J "
                        f"{J_end:.4g}, {time.perf_counter() - t0:.1f} s")

    def line_search(self, epoch: int) -> None:
        """The search along the epoch's step on the true objective (see
        ``line_search`` in :func:`solve_bcd_minibatch`); recorded as block "LS"."""
        pb, t0 = self.pb, time.perf_counter()
        (base, J_base), prop = self.base, self.s
        project_w = ab_projector(pb, state_lipschitz(pb.activation, pb.n))
        project_k = readout_projector(pb)
        Wb, Wp = base.W(pb.bias), prop.W(pb.bias)
        Kb = pack_cd(pb, base.C, base.D, base.d)
        Kp = pack_cd(pb, prop.C, prop.D, prop.d)

        def point(t: float) -> tuple[State, float]:
            W, K = Wb + t * (Wp - Wb), Kb + t * (Kp - Kb)
            if t > 1.0:  # outside the segment: back onto the balls
                W, K = project_w(W), project_k(K)
            st = prop.with_W(W, pb)
            st.C, st.D, st.d = unpack_cd(pb, K)
            st.X, _ = equilibrium(pb, st, X0=prop.X)
            return st, float(sum(objective(pb, st)))

        st, Jt = point(1.0)
        evals, best = 1, None
        if Jt < J_base:
            best, t = (st, Jt, 1.0), 2.0
            while t <= _LS_STEP_MAX:
                st, Jt = point(t)
                evals += 1
                if not Jt < best[1]:
                    break
                best, t = (st, Jt, t), 2.0 * t
        else:
            t = 0.5
            while best is None and t >= _LS_STEP_MIN:
                st, Jt = point(t)
                evals += 1
                if Jt < J_base:
                    best = (st, Jt, t)
                t /= 2.0
        self.s, J_new, step = best if best is not None else (base, J_base, 0.0)
        rec = BatchRecord(epoch, self.step, "LS", pb.m, J_new, J_new, time.perf_counter() - t0,
                          solver="equilibrium", status="optimal", gap=None, kkt_residual=None,
                          certified=True, accepted=step > 0.0, line_step=step,
                          evaluations=evals)
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)
        self.shown.line(f"epoch {epoch + 1} line search: step {step:g}, true objective "
                        f"{J_base:.4g} -> {J_new:.4g} ({evals} equilibria, "
                        f"{time.perf_counter() - t0:.1f} s)")

    def x_step(self, epoch: int, idx) -> None:
        """X_S: an exact block step of J on the columns idx; then their anchors are
        refreshed, which removes their stale gap from H."""
        pb, s, t0 = self.pb, self.s, time.perf_counter()
        X_old = s.X[:, idx]
        V_old = self.st.V(X_old, idx)
        old_terms = _batch_terms(pb, s, idx, X_old)
        Z_now = s.A @ X_old + s.B @ pb.U[:, idx] + s.b[:, None]
        Yh_now = s.C @ X_old + s.D @ pb.U[:, idx] + s.d[:, None]
        stale = (float(s.lam @ divergence_gap(pb, Z_now, self.Z0[:, idx]).sum(axis=1))
                 + float(loss_gap(pb, Yh_now, self.Yh0[:, idx]).sum())) / pb.m
        new, info = self.solvers.X.solve(replace(s, X=X_old), cols=idx)
        X_new = new.X
        new_terms = _batch_terms(pb, s, idx, X_new)
        ok = new_terms - old_terms <= self.tol * max(1.0, abs(self.H))
        if not ok:
            self.rejected += 1
            X_new, new_terms = X_old, old_terms
        else:
            self.max_increase = max(self.max_increase,
                                    (new_terms - old_terms) / max(1.0, abs(self.H)))
        self.H = self.H - stale + (new_terms - old_terms)
        Z_new = s.A @ X_new + s.B @ pb.U[:, idx] + s.b[:, None]
        Yh_new = s.C @ X_new + s.D @ pb.U[:, idx] + s.d[:, None]
        Y_S = pb.Y[:, idx]
        self.st.add(-1.0, X_old, V_old, self.Z0[:, idx], self.Yh0[:, idx], Y_S)
        self.st.add(1.0, X_new, self.st.V(X_new, idx), Z_new, Yh_new, Y_S)
        s.X[:, idx], self.Z0[:, idx], self.Yh0[:, idx] = X_new, Z_new, Yh_new
        self.record(epoch, "X", idx.size, info, ok, t0)

    def batch_steps(self, epoch: int, idx) -> None:
        """The stochastic steps on the batch idx (``steps="stochastic"``): its states at the
        true equilibrium of the current (A, B), then K, X_S and W, each a certified step
        that does not increase the batch's relaxed objective J_S (one that would raise it
        by more than ``tol`` is rejected, as in the incremental steps)."""
        pb, s, t0 = self.pb, self.s, time.perf_counter()
        view = batch_problem(pb, idx)
        X, _ = equilibrium(view, s, X0=s.X[:, idx])
        self.H = _batch_objective(view, s, X)
        self.history.append(BatchRecord(
            epoch, self.step, "restart", idx.size, self.H, None, time.perf_counter() - t0,
            solver="equilibrium", status="optimal", gap=None, kkt_residual=None,
            certified=True, accepted=True))
        # K: majorize-minimize steps of J_S in K, on the equilibrium states
        st = _Stats(view)
        V = st.V(X, slice(None))
        G = V @ V.T
        for _ in range(_STOCHASTIC_MM_STEPS if isinstance(pb.loss, CrossEntropyLoss) else 1):
            t0 = time.perf_counter()
            K0 = pack_cd(pb, s.C, s.D, s.d)
            Hl = loss_anchor(pb, view.Y, K0 @ V) @ V.T
            K, info = self.batch_k(view, s, G, Hl, K0)
            C, D, d = unpack_cd(pb, K)
            self.batch_update(epoch, view, "CD", info, replace(s, C=C, D=D, d=d), X, t0)
        # X_S: the DCA step of J_S (the columns idx of J)
        t0 = time.perf_counter()
        new, info = self.solvers.X.solve(replace(s, X=X), cols=idx)
        if self.batch_update(epoch, view, "X", info, s, new.X, t0):
            X = new.X
        s.X[:, idx] = X
        # W: majorize-minimize steps of J_S in W, through the batch's Gram matrix
        V = st.V(X, slice(None))
        st.G, st.T = V @ V.T, X @ V.T
        metric = CentredGram(view, st.G)  # one G for all the W steps of the batch
        for _ in range(_STOCHASTIC_MM_STEPS):
            t0 = time.perf_counter()
            W0 = s.W(pb.bias)
            st.Ha = divergence_anchor(pb, W0 @ V) @ V.T
            Wn, info = fast_w_step(view, st.G, st.T, st.Ha, W0, self.ab_prox,
                                   self.policy.gap_tol, s.lam, metric=metric)
            if not info.certified:
                self.policy.uncertified(info)
            self.batch_update(epoch, view, "AB", info, s.with_W(Wn, pb), X, t0)

    def batch_k(self, view: TrainingProblem, s: State, G: Array, Hl: Array, K0: Array
                ) -> tuple[Array, SolveInfo]:
        """One proximal step of the batch's quadratic loss majorizer in K: FISTA, or, with a
        penalty or when FISTA is not certified, the CVXPY Gram block (without the proximal
        term), whose 1/(2m) scaling is turned into the batch's 1/(2|S|)."""
        pb, info = self.pb, None
        if self.fast_k:
            K, info = fast_k_step(view, G, Hl, K0, _curvature(pb), self.cd_prox,
                                  tol=self.policy.gap_tol)
            if info.certified:
                return K, info
            self.policy.uncertified(info)
        scale = pb.m / view.m
        stats = _Stats(pb)
        stats.G, stats.Hl = G * scale, Hl * scale
        C, D, d, info = self.readout_k.solve(stats, s.A, s.B, self.policy.cvxpy,
                                             self.policy.gap_tol, self.policy.solvers is None)
        return pack_cd(pb, C, D, d), info

    def batch_update(self, epoch: int, view: TrainingProblem, block: str, info: SolveInfo,
                     trial: State, X: Array, t0: float) -> bool:
        """Keep ``trial`` (its block's matrices, or the states X for block "X") when its
        solve is certified and J_S (``self.H`` before the step) does not rise by more than
        ``tol``; record the step."""
        s, before = self.s, self.H
        after = _batch_objective(view, trial, X)
        ok = bool(info.certified) and after - before <= self.tol * max(1.0, abs(before))
        if ok and block != "X":
            s.A, s.B, s.b, s.C, s.D, s.d = trial.A, trial.B, trial.b, trial.C, trial.D, trial.d
        if ok:
            self.H = after
        elif info.certified:
            self.rejected += 1
        self.record(epoch, block, view.m, info, ok, t0)
        return ok

    def w_step(self, epoch: int, size: int) -> None:
        """W = [A, B, b]: a proximal step on the majorizer."""
        pb, s, t0 = self.pb, self.s, time.perf_counter()
        W = s.W(pb.bias)
        W_new, info = fast_w_step(pb, self.st.G, self.st.T, self.st.Ha, W, self.ab_prox,
                                  self.policy.gap_tol, s.lam)
        if not info.certified:
            self.policy.uncertified(info)
        dH = _w_surrogate(pb, self.st, W_new, s.lam) - _w_surrogate(pb, self.st, W, s.lam)
        ok = info.certified and self.accept(dH)
        if ok:
            new = s.with_W(W_new, pb)
            s.A, s.B, s.b = new.A, new.B, new.b
            self.H += dH
        self.record(epoch, "AB", size, info, ok, t0)

    def k_step(self, epoch: int, size: int) -> None:
        """K = [C, D, d]: the proximal (C, D) step on the majorizer, by FISTA or, with a
        penalty or when FISTA is not certified, the CVXPY block on the Gram root."""
        pb, s, t0 = self.pb, self.s, time.perf_counter()
        info = None
        if self.fast_k:
            K, info = fast_k_step(pb, self.st.G, self.st.Hl, pack_cd(pb, s.C, s.D, s.d),
                                  _curvature(pb), self.cd_prox, tol=self.policy.gap_tol)
            if info.certified:
                C, D, d = unpack_cd(pb, K)
            else:
                self.policy.uncertified(info)
        if info is None or not info.certified:
            C, D, d, info = self.readout_k.solve(self.st, s.A, s.B, self.policy.cvxpy,
                                                 self.policy.gap_tol,
                                                 self.policy.solvers is None)
        dH = _k_surrogate(pb, self.st, C, D, d) - _k_surrogate(pb, self.st, s.C, s.D, s.d)
        ok = self.accept(dH)
        if ok:
            s.C, s.D, s.d = C, D, d
            self.H += dH
        self.record(epoch, "CD", size, info, ok, t0)
