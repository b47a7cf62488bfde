"""Gradient refinement (section 6.2): projected (stochastic) proximal gradient on the model.

The training problem (6.3),

    min  L(Y, C X + D U) + P(A, B, C, D)   s.t.  X = phi(A X + B U),  ||N(A, gamma)||_inf <= kappa,

is attacked directly: every step draws a mini-batch, solves the forward equilibrium (2.6)
(warm-started from the states the same samples had at their last visit), solves the
adjoint equilibrium (6.5)-(6.6) with :func:`fenchel_idl.drivers.gradients.solve_adjoint`, takes a
gradient step (SGD with optional momentum, or Adam), applies the proximal operators of the
penalties, and projects A back onto the well-posedness ball with
:func:`fenchel_idl.problem.projection.project_well_posed` (for CONE maps: ``||A||_inf <= kappa``,
problem (6.7)). The iterate therefore never leaves the ball, and every model produced is
well-posed.

:func:`refine` is used in two ways: to polish a model trained by block-coordinate descent
(the "refinement" stage), or, from :func:`init_random`, as the paper's pure gradient method
(section 7.1), so that the two approaches can be compared.

Penalties and optimizers
------------------------
A penalty enters through its proximal operator ``prox_{t P}``, with t the current learning
rate, after the gradient step and before the projection (a proximal gradient step). For the
l1 penalty on A this composition is the exact prox of ``P + indicator(ball)`` (both are
functions of the row l1 norms); for group penalties it is a feasible splitting. With
``optimizer="adam"`` the prox uses the scalar step ``lr``, not Adam's per-coordinate step
``lr / (sqrt(v) + eps)``: a common heuristic ("proximal Adam with an isotropic metric") that
does make exact zeros, but whose fixed points are not exactly those of the penalized
problem. Use ``optimizer="sgd"`` when the penalized optimum matters. Penalties without a
proximal operator raise :class:`fenchel_idl.problem.penalties.NotSupportedInRefinement`; they are
never ignored silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl._blas import blas_threads, env_blas_limit
from fenchel_idl.drivers.gradients import solve_adjoint
from fenchel_idl.drivers.progress import Progress
from fenchel_idl.errors import (
    ConvergenceWarning,
    InputTypeError,
    NotWellPosedError,
    NumericalWarning,
    ShapeError,
    TrainingInterrupted,
    ValidationError,
)
from fenchel_idl.model.activations import Activation, get_activation
from fenchel_idl.model.equilibrium import picard
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.wellposedness import norm_matrix
from fenchel_idl.problem.losses import Loss, SquaredLoss, get_loss
from fenchel_idl.problem.penalties import Penalty, get_penalty
from fenchel_idl.problem.projection import (
    PROJECTION_METHODS,
    project_rows,
    project_well_posed,
    well_posed_radii,
)
from fenchel_idl.validation import as_samples, check_choice, check_int, check_real

__all__ = ["PARAMETERS", "EpochRecord", "RefineHistory", "RefineOptions", "RefineResult",
           "init_random", "refine"]

Array = NDArray[np.float64]

PARAMETERS = ("A", "B", "C", "D", "bias_x", "bias_y")
"""Names of the trainable arrays, in the order of :class:`fenchel_idl.ImplicitModel`."""

_OPTIMIZERS = ("adam", "sgd")
_DTYPES = ("float64", "float32")

#: Smallest relative tolerance of the fixed-point iterations in float32: its rounding
#: (about 6e-8 per operation, summed over a row of A) stalls the steps near 1e-6.
_F32_TOL = 1e-5

#: The float64 judgement of the start and of the result iterates to this fraction of the
#: forward tolerance.
_JUDGE_TOL = 1e-2


# -- options ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefineOptions:
    """Settings of :func:`refine`, validated on construction.

    Parameters
    ----------
    epochs : int >= 0, default 100
        Passes over the data.
    batch_size : int >= 1 or None, default 32
        Mini-batch size; None (or a size >= m) means full-batch gradients.
    optimizer : {"adam", "sgd"}, default "adam"
    lr : float > 0, default 1e-3
        Learning rate (step size) of the first epoch; also the step of the penalty prox. The
        default suits polishing a trained model; from a random start larger steps pay off
        (1e-2 on the cosine problem of section 7.1).
    lr_decay : float in (0, 1], default 1.0
        Multiplies the learning rate after every epoch (1.0: constant step).
    beta1, beta2 : float in [0, 1), defaults 0.9 and 0.999
        Adam's moment decay rates.
    eps : float > 0, default 1e-8
        Adam's denominator offset.
    momentum : float in [0, 1), default 0.0
        Heavy-ball momentum of SGD.
    params : tuple of str, default all of ("A", "B", "C", "D", "bias_x", "bias_y")
        Which arrays are trained; the others stay fixed. The paper's first block update
        (section 7.1) is ``params=("A", "B")``.
    refit_output : bool, default False
        After the last epoch, refit (C, D, bias_y) by least squares on the training set (the
        paper's second block update in section 7.1; squared loss only).
    refit_ridge : float >= 0, default 1e-6
        Ridge weight of that least-squares refit, on the scale of the averaged loss:
        ``(1/2m) ||Y - C X - D U - bias_y||^2 + (refit_ridge / 2) ||(C, D)||_F^2``. Trained
        ReLU states are often nearly collinear; without it the coefficients can explode.
        The history records the losses before the refit.
    seed : int >= 0, default 0
        Seed of the mini-batch shuffling; equal seeds give identical runs.
    shuffle : bool, default True
        Shuffle the samples every epoch (otherwise batches follow the column order).
    warm_start : bool, default True
        Start each forward equilibrium from the states the batch's samples had at their
        previous visit (costs an (n, m) array; saves fixed-point iterations).
    tol : float > 0, default 1e-8
        Relative tolerance of the forward fixed-point iteration (2.6).
    adjoint_tol : float > 0, default 1e-10
        Tolerance of the adjoint iteration (6.6), see
        :func:`fenchel_idl.drivers.gradients.solve_adjoint`.
    max_iter : int >= 1, default 2000
        Iteration cap of both fixed-point iterations.
    projection : {"sort", "bisection"}, default "sort"
        Method of the projection onto the kappa ball (see :mod:`fenchel_idl.problem.projection`).
    evaluate : bool, default True
        Compute the full training loss after every epoch (one extra forward pass on all
        samples). When False, :attr:`EpochRecord.loss` is NaN and only the running mini-batch
        loss is recorded.
    keep_best : bool or None, default None (True when ``evaluate``)
        Return the parameters with the lowest training objective (loss + penalties) seen at
        the end of an epoch or before the first step, instead of the last ones; so polishing
        a BCD model never makes its training objective worse (checked once more in float64
        at the end). Needs ``evaluate=True``.
    backtrack : bool or None, default None (True when ``evaluate``)
        When an epoch ends with a training objective above ``(1 + backtrack_tol)`` times the
        best one seen so far (the step blew up), return to the best parameters, restart the
        optimizer's moments and multiply the learning rate by ``backtrack_factor``. Needs
        ``evaluate=True``.
    backtrack_factor : float in (0, 1), default 0.5
    backtrack_tol : float >= 0, default 1.0
        The relative rise that counts as a blow-up (1.0: the objective doubled); smaller
        rises are the noise of stochastic steps and are left alone (``keep_best`` still
        returns the best epoch). A tight value halves the step on that noise and stops
        training early.
    dtype : {"float64", "float32"}, default "float64"
        Precision of the epochs (forward and adjoint iterations, steps). In float32 the
        fixed-point tolerances are raised to at least 1e-5 (float32 keeps about 7 digits).
        The returned model is float64 either way: its A is projected onto the kappa ball
        in float64 and its objective (``history.final_objective``) is evaluated in float64.
    rank : int >= 1 or None, default None
        Low-rank training: A = L R^T with L, R of shape (n, rank), started from the
        truncated SVD of the model's A and trained by their gradients
        ``dL/dL = (dL/dA) R``, ``dL/dR = (dL/dA)^T L``. Each factor is projected onto its own
        ball (rows of L, columns of R in l1) whose radii multiply to the well-posedness
        radius, so ``||A||_inf <= ||L||_inf ||R^T||_inf <= kappa`` holds at every step.
        Needs ``"A"`` in ``params``, a row-wise ball (componentwise activations), and no
        penalty on A.
    blas_threads : int >= 1, "auto" or None, default None
        Limit the BLAS thread pool during refinement (through ``threadpoolctl``, a
        scikit-learn dependency). None takes the limit of the environment variable
        ``FENCHEL_IDL_BLAS_THREADS`` (default 1, as in :func:`fenchel_idl.solve_bcd`);
        "auto" leaves BLAS alone. Mini-batch steps multiply small matrices, where a
        multithreaded BLAS spends more time synchronizing than computing, so one thread is
        the default.

    Raises
    ------
    ValidationError, InputTypeError
        A value out of range or of the wrong type; the message names the option.

    Examples
    --------
    >>> opts = RefineOptions(epochs=10, lr=1e-3)
    >>> opts.replace(batch_size=None).batch_size is None
    True
    """

    epochs: int = 100
    batch_size: int | None = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0
    params: tuple[str, ...] = PARAMETERS
    refit_output: bool = False
    refit_ridge: float = 1e-6
    seed: int = 0
    shuffle: bool = True
    warm_start: bool = True
    tol: float = 1e-8
    adjoint_tol: float = 1e-10
    max_iter: int = 2000
    projection: str = "sort"
    evaluate: bool = True
    keep_best: bool | None = None
    blas_threads: int | str | None = None
    backtrack: bool | None = None
    backtrack_factor: float = 0.5
    backtrack_tol: float = 1.0
    dtype: str = "float64"
    rank: int | None = None

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, low=0)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, low=1)
        check_choice("optimizer", self.optimizer, _OPTIMIZERS)
        check_real("lr", self.lr, 0.0, None, low_open=True)
        check_real("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        check_real("beta1", self.beta1, 0.0, 1.0, high_open=True)
        check_real("beta2", self.beta2, 0.0, 1.0, high_open=True)
        check_real("eps", self.eps, 0.0, None, low_open=True)
        check_real("momentum", self.momentum, 0.0, 1.0, high_open=True)
        params = (self.params,) if isinstance(self.params, str) else self.params
        if not isinstance(params, (tuple, list)) or len(params) == 0:
            raise ValidationError(f"'params' must be a non-empty tuple of names among "
                                  f"{list(PARAMETERS)}; got {self.params!r}.")
        for p in params:
            check_choice("params", p, PARAMETERS)
        object.__setattr__(self, "params", tuple(k for k in PARAMETERS if k in params))
        for name in ("keep_best", "backtrack"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, isinstance(self.evaluate, (bool, np.bool_))
                                   and bool(self.evaluate))
        for name in ("refit_output", "shuffle", "warm_start", "evaluate", "keep_best",
                     "backtrack"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputTypeError(f"'{name}' must be a bool; got {getattr(self, name)!r}.")
        check_real("refit_ridge", self.refit_ridge, 0.0, None)
        check_int("seed", self.seed, low=0)
        check_real("tol", self.tol, 0.0, None, low_open=True)
        check_real("adjoint_tol", self.adjoint_tol, 0.0, None, low_open=True)
        check_int("max_iter", self.max_iter, low=1)
        check_choice("projection", self.projection, PROJECTION_METHODS)
        if self.blas_threads is not None and self.blas_threads != "auto":
            if isinstance(self.blas_threads, str):
                raise ValidationError(f"'blas_threads' must be a positive integer, 'auto' or "
                                      f"None; got {self.blas_threads!r}.")
            check_int("blas_threads", self.blas_threads, low=1)
        for name in ("keep_best", "backtrack"):
            if getattr(self, name) and not self.evaluate:
                raise ValidationError(f"'{name}' needs evaluate=True (the full training loss "
                                      f"of every epoch); got {name}=True with evaluate=False.")
        check_real("backtrack_factor", self.backtrack_factor, 0.0, 1.0, low_open=True,
                   high_open=True)
        check_real("backtrack_tol", self.backtrack_tol, 0.0, None)
        check_choice("dtype", self.dtype, _DTYPES)
        if self.rank is not None:
            check_int("rank", self.rank, low=1)
            if "A" not in self.params:
                raise ValidationError(f"'rank' trains A as L R^T and needs 'A' in params; got "
                                      f"params={list(self.params)}.")

    def replace(self, **changes: Any) -> RefineOptions:
        """A copy with some options changed; unknown names raise :class:`ValidationError`."""
        _check_option_names(changes)
        return dataclasses.replace(self, **changes)


_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RefineOptions))


def _check_option_names(changes: Mapping[str, Any]) -> None:
    unknown = [k for k in changes if k not in _OPTION_NAMES]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, _OPTION_NAMES, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValidationError(f"unknown refinement option(s) {', '.join(hints)}; the options "
                              f"are {list(_OPTION_NAMES)}.")


# -- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpochRecord:
    """What one epoch of :func:`refine` did.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    loss : float
        Training loss L(Y, Yhat) on all samples after the epoch (NaN when
        ``evaluate=False``).
    batch_loss : float
        Sample-weighted mean of the mini-batch losses seen during the epoch (each taken
        before its step).
    penalty : float
        Sum of the penalties P(A, B, C, D) after the epoch (0 without penalties).
    objective : float
        ``loss + penalty``.
    time : float
        Seconds since the first epoch started (cumulative, including evaluation).
    lr : float
        Learning rate used in this epoch.
    norm : float
        ``||N(A, gamma)||_inf`` after the epoch (``||A||_inf`` for CONE maps); never above
        kappa.
    forward_iterations, adjoint_iterations : float
        Mean fixed-point iterations per mini-batch.
    converged : bool
        Whether every forward and adjoint solve of the epoch reached its tolerance.
    backtracked : bool
        The epoch's objective rose above the backtracking threshold: the parameters went
        back to the best epoch's and the learning rate was cut (see ``backtrack``). Loss and
        objective are the rejected epoch's; ``norm`` is that of the parameters kept.
    """

    epoch: int
    loss: float
    batch_loss: float
    penalty: float
    objective: float
    time: float
    lr: float
    norm: float
    forward_iterations: float
    adjoint_iterations: float
    converged: bool
    backtracked: bool = False


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(EpochRecord))


@dataclass(frozen=True)
class RefineHistory:
    """The per-epoch records of a :func:`refine` run.

    Attributes
    ----------
    records : tuple of EpochRecord
        One per completed epoch.
    initial_loss : float
        Training loss before the first step (after the initial projection); NaN when
        ``evaluate=False``.
    initial_projection : float
        Frobenius distance by which the initial projection moved A (0 when the model
        already was inside the kappa ball).
    stop_reason : {"epochs", "callback", "diverged"}
        Why the run ended.
    best_epoch : int
        Epoch whose parameters were returned with ``keep_best=True`` (0: the starting
        point); otherwise the last epoch run.
    initial_objective : float
        Training objective (loss + penalties) of the starting point after the initial
        projection, in float64 on all samples (equilibrium to a hundredth of ``tol``):
        what the refinement started from.
    final_objective : float
        The same for the returned model (after ``refit_output``). With ``keep_best`` it is
        never above ``initial_objective``; without it a higher value is also announced by a
        :class:`fenchel_idl.errors.ConvergenceWarning`.

    Examples
    --------
    ``history.loss`` is the array of per-epoch losses, ``history.column("norm")`` any other
    field; ``len(history)`` is the number of epochs run.
    """

    records: tuple[EpochRecord, ...]
    initial_loss: float
    initial_projection: float
    stop_reason: str
    best_epoch: int = 0
    initial_objective: float = float("nan")
    final_objective: float = float("nan")

    @property
    def worsened(self) -> bool:
        """Whether the returned model's training objective is above its start's."""
        return bool(self.final_objective > self.initial_objective)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.records[i]

    def column(self, name: str) -> NDArray[Any]:
        """One field of every record as an array, shape (epochs,).

        Raises
        ------
        ValidationError
            Unknown field name.
        """
        check_choice("name", name, _RECORD_FIELDS)
        return np.array([getattr(r, name) for r in self.records])

    @property
    def loss(self) -> Array:
        """Full training loss after each epoch, shape (epochs,)."""
        return self.column("loss")

    @property
    def objective(self) -> Array:
        """Loss plus penalties after each epoch, shape (epochs,)."""
        return self.column("objective")

    @property
    def time(self) -> Array:
        """Cumulative seconds at the end of each epoch, shape (epochs,)."""
        return self.column("time")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, for JSON."""
        out: dict[str, Any] = {k: self.column(k).tolist() for k in _RECORD_FIELDS}
        out.update(initial_loss=self.initial_loss, initial_projection=self.initial_projection,
                   stop_reason=self.stop_reason, best_epoch=self.best_epoch,
                   initial_objective=self.initial_objective,
                   final_objective=self.final_objective)
        return out


@dataclass(frozen=True)
class RefineResult:
    """Result of :func:`refine`.

    Attributes
    ----------
    model : ImplicitModel
        The refined model; ``||N(A, gamma)||_inf <= kappa`` and certified well-posed.
    history : RefineHistory
        Per-epoch records.
    kappa : float
        The radius that was enforced.
    options : RefineOptions
        The options that were used.
    """

    model: ImplicitModel
    history: RefineHistory
    kappa: float = float("nan")
    options: RefineOptions = field(default_factory=RefineOptions)


# -- optimizers ------------------------------------------------------------------------------

class _Adam:
    """Adam (Kingma & Ba) on a dict of arrays, updated in place.

    Every operation writes into preallocated buffers (two per array), in the order of the
    textbook expression ``p -= (lr / c1) m / (sqrt(v / c2) + eps)``, so the result is that
    expression's, rounding included, without a temporary array per operation.
    """

    def __init__(self, params: dict[str, Array], beta1: float, beta2: float, eps: float):
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.work = {k: (np.empty_like(v), np.empty_like(v)) for k, v in params.items()}
        self.b1, self.b2, self.eps, self.t = beta1, beta2, eps, 0

    def step(self, params: dict[str, Array], grads: dict[str, Array], lr: float) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for k, g in grads.items():
            m, v, (w, d) = self.m[k], self.v[k], self.work[k]
            m *= self.b1
            np.multiply(g, 1.0 - self.b1, out=w)
            m += w
            v *= self.b2
            np.multiply(g, g, out=w)
            w *= 1.0 - self.b2
            v += w
            np.divide(v, c2, out=d)
            np.sqrt(d, out=d)
            d += self.eps
            np.multiply(m, lr / c1, out=w)
            w /= d
            params[k] -= w


class _SGD:
    """Plain or heavy-ball SGD on a dict of arrays, updated in place."""

    def __init__(self, params: dict[str, Array], momentum: float):
        self.mu = momentum
        self.vel = {k: np.zeros_like(v) for k, v in params.items()} if momentum else None

    def step(self, params: dict[str, Array], grads: dict[str, Array], lr: float) -> None:
        for k, g in grads.items():
            if self.vel is not None:
                vel = self.vel[k]
                vel *= self.mu
                vel += g
                g = vel
            params[k] -= lr * g


# -- helpers ---------------------------------------------------------------------------------

def _as_penalties(penalties: Any) -> tuple[Penalty, ...]:
    if penalties is None:
        return ()
    if isinstance(penalties, (Penalty, Mapping)) or callable(penalties):
        penalties = (penalties,)
    if not isinstance(penalties, Iterable) or isinstance(penalties, (str, bytes)):
        raise InputTypeError("'penalties' must be a sequence of Penalty objects or dicts; got "
                             f"{type(penalties).__name__}.")
    return tuple(get_penalty(p) for p in penalties)


def _check_penalties(pens: tuple[Penalty, ...], params: dict[str, Array],
                     trained: tuple[str, ...]) -> tuple[Penalty, ...]:
    """Refuse penalties without a prox; return those acting on trained matrices."""
    active = []
    for pen in pens:
        reads = tuple(pen.matrices)
        # raises NotSupportedInRefinement for penalties without a proximal operator
        pen.prox({k: params[k] for k in reads}, 0.0)
        on = [k for k in reads if k in trained]
        if not on:
            continue  # a constant of the refinement: counted in the objective only
        if len(on) != len(reads):
            frozen = [k for k in reads if k not in trained]
            raise ValidationError(f"penalty {pen.name!r} couples {list(reads)} but {frozen} "
                                  f"are not trained (params={list(trained)}); train all of "
                                  f"{list(reads)} or drop the penalty.")
        active.append(pen)
    return tuple(active)


def _penalty_value(pens: tuple[Penalty, ...], params: dict[str, Array]) -> float:
    return float(sum(pen.value({k: params[k] for k in pen.matrices}) for pen in pens))


def _norm(A: Array, phi: Activation) -> float:
    N = norm_matrix(A, phi)
    return float(np.max(N.sum(axis=1))) if N.size else 0.0


def _resolve_kappa(kappa: Any, model: ImplicitModel) -> float:
    if kappa is not None:
        return check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
    current = _norm(model.A, model.activation)
    if not 0.0 < current < 1.0:
        raise ValidationError(
            "'kappa' must be given (a float in (0, 1)) when the model's ||N(A, gamma)||_inf "
            f"is not in (0, 1); kappa=None would use the current value, which is {current:.6g}."
            " Pass kappa explicitly (the first projection then moves A into the ball), or "
            "rescale the model first with fenchel_idl.rescale.")
    return current


def _ridge_output(X: Array, U: Array, Y: Array, ridge: float) -> tuple[Array, Array, Array]:
    """(C, D, bias_y) minimizing (1/2m) ||Y - C X - D U - bias_y 1^T||^2 + (ridge/2) ||(C, D)||^2.

    The features (X; U) of a trained ReLU model are often nearly collinear (dead or
    duplicated units); the small ridge keeps the coefficients bounded.
    """
    n, p, m = X.shape[0], U.shape[0], X.shape[1]
    F = np.vstack([X, U, np.ones((1, m))])
    if ridge > 0:
        reg = np.full(n + p + 1, m * ridge)
        reg[-1] = 0.0  # the bias is not penalized; the matrix stays positive definite
        W = np.linalg.solve(F @ F.T + np.diag(reg), F @ Y.T).T
    else:
        W = np.linalg.lstsq(F.T, Y.T, rcond=None)[0].T
    return W[:, :n], W[:, n:n + p], W[:, n + p]


def _samples_as_rows(U: Array, dtype: np.dtype, block: int = 512) -> Array:
    """U in ``dtype``. When that takes a copy, the copy stores the samples as rows and U is
    its transposed view: a mini-batch then gathers whole rows (contiguous) instead of one
    entry per row of U, and BLAS reads the view as a transposed operand. The copy is
    written by blocks of samples, which keeps the transposition as fast as a plain cast."""
    if U.dtype == dtype:
        return U
    rows = np.empty((U.shape[1], U.shape[0]), dtype=dtype)
    for s in range(0, U.shape[1], block):
        rows[s:s + block] = U[:, s:s + block].T
    return rows.T


@dataclass(frozen=True)
class _AdjointOperands:
    """The three fields of an ImplicitModel that :func:`solve_adjoint` reads (A, C, phi).

    Validating a full model at every step would cost as much as several fixed-point
    iterations on small problems; the arrays here are already validated.
    """

    A: Array
    C: Array
    activation: Activation


def _balanced_factors(A: Array, rank: int, radii: Array, seed: int) -> tuple[Array, Array]:
    """(L, R) of shape (n, rank) with L R^T the rank-``rank`` truncated SVD of A, scaled so
    that the largest row l1 norm of L relative to ``radii`` equals the largest column l1 norm
    of R. A zero A gives L = 0 and a random R (a zero R would have a zero gradient)."""
    Uv, s, Vt = np.linalg.svd(A)
    k = min(rank, len(s))
    L = np.zeros((A.shape[0], rank))
    R = np.zeros((A.shape[0], rank))
    L[:, :k] = Uv[:, :k] * np.sqrt(s[:k])
    R[:, :k] = Vt[:k].T * np.sqrt(s[:k])
    alpha = float(np.max(np.abs(L).sum(axis=1) / radii))
    c = float(np.max(np.abs(R).sum(axis=0)))
    if alpha > 0 and c > 0:
        t = np.sqrt(alpha / c)
        return L / t, R * t
    R = np.random.default_rng(seed).standard_normal(R.shape)
    return np.zeros_like(L), 0.5 * R / np.abs(R).sum(axis=0)


class _Refiner:
    """The mutable state of one :func:`refine` run: parameters, optimizer, warm starts.

    Private; :func:`refine` validates everything before building one. The epochs run in
    ``opts.dtype``; ``start`` keeps the (projected) starting parameters in float64. With
    ``opts.rank`` the factors L, R live in ``factors`` and ``params["A"]`` is kept equal to
    L R^T. Rows of L lie in l1 balls of the well-posedness radii, columns of R in the unit l1
    ball, so ``||A_i||_1 <= ||L_i||_1 max_j ||R_j||_1 <= r_i``.
    """

    def __init__(self, model: ImplicitModel, U: Array, Y: Array, loss: Loss,
                 opts: RefineOptions, kappa: float, penalties: tuple[Penalty, ...]):
        self.template, self.loss, self.opts = model, loss, opts
        self.kappa, self.phi, self.dtype = kappa, model.activation, np.dtype(opts.dtype)
        params = {k: np.array(getattr(model, k), dtype=np.float64, copy=True)
                  for k in PARAMETERS}
        self.radii, self.exact_ball = well_posed_radii(self.phi, model.n, kappa)
        self.trained = opts.params
        self.penalties = _check_penalties(penalties, params, self.trained)
        A0 = params["A"]
        factors: dict[str, Array] = {}
        if opts.rank is not None:
            L, R = _balanced_factors(A0, opts.rank, self.radii, opts.seed)
            factors = {"L": L, "R": R}
            self.project_factors(factors)
            params["A"] = factors["L"] @ factors["R"].T
        else:
            params["A"] = self.project(A0)
        self.initial_projection = float(np.linalg.norm(params["A"] - A0))
        self.start = {k: v.copy() for k, v in {**params, **factors}.items()}
        self.U64, self.Y64 = U, Y
        self.params = {k: v.astype(self.dtype) for k, v in params.items()}
        self.factors = {k: v.astype(self.dtype) for k, v in factors.items()}
        self.U, self.Y = _samples_as_rows(U, self.dtype), Y.astype(self.dtype, copy=False)
        low = _F32_TOL if self.dtype == np.float32 else 0.0
        self.tol, self.adjoint_tol = max(opts.tol, low), max(opts.adjoint_tol, low)
        # the arrays the optimizer updates (shared with params and factors)
        self.variables = {k: self.params[k] for k in self.trained if not (k == "A" and factors)}
        self.variables.update(self.factors)
        self.optimizer: _Adam | _SGD = self.new_optimizer()
        m = U.shape[1]
        self.batch_size = m if opts.batch_size is None else min(opts.batch_size, m)
        self.rng = np.random.default_rng(opts.seed)
        # the states of every sample, stored as rows (the (n, m) array is a transposed
        # view): a mini-batch reads and writes whole rows instead of one entry per state
        self.Xstore: Array | None = (np.zeros((m, model.n), dtype=self.dtype).T
                                     if opts.warm_start else None)
        self.best_states: Array | None = None
        self.initial_loss = float("nan")
        self.failures = 0

    def new_optimizer(self) -> _Adam | _SGD:
        """A fresh optimizer (zero moments) on the trained arrays."""
        if self.opts.optimizer == "adam":
            return _Adam(self.variables, self.opts.beta1, self.opts.beta2, self.opts.eps)
        return _SGD(self.variables, self.opts.momentum)

    # -- pieces of a step ------------------------------------------------------------------
    def project(self, A: Array) -> Array:
        """Projection onto the kappa ball (6.7), exact row-scaled l1 balls when possible."""
        if self.exact_ball:
            return project_rows(A, self.radii, self.opts.projection)
        return project_well_posed(A, self.kappa, self.phi, self.opts.projection)

    def project_factors(self, factors: dict[str, Array]) -> None:
        """Rows of L onto their l1 balls (radii r_i), columns of R onto the unit l1 ball, in
        place; their product then lies in the well-posedness ball."""
        L, R = factors["L"], factors["R"]
        L[...] = project_rows(L, self.radii, self.opts.projection)
        R[...] = project_rows(R.T, np.ones(R.shape[1]), self.opts.projection).T

    def snapshot(self) -> dict[str, Array]:
        return {k: v.copy() for k, v in {**self.params, **self.factors}.items()}

    def restore(self, saved: dict[str, Array]) -> None:
        for k, v in saved.items():
            (self.factors if k in ("L", "R") else self.params)[k][...] = v

    def model(self) -> ImplicitModel:
        """The current parameters as an (immutable, validated) model."""
        return self.template.replace(**self.params)

    def forward(self, U: Array, X0: Array | None) -> tuple[Array, Array, int, bool]:
        """Picard iteration (2.6): returns (X, B U + bias_x, iterations, converged)."""
        P = self.params
        b = P["B"] @ U + P["bias_x"][:, None]
        X, it, _, ok = picard(P["A"], b, self.phi, X0, self.tol, self.opts.max_iter)
        self.failures += not ok
        return X, b, it, ok

    def output(self, X: Array, U: Array) -> Array:
        P = self.params
        return P["C"] @ X + P["D"] @ U + P["bias_y"][:, None]

    def full_loss(self) -> float:
        """Training loss on all samples; refreshes the warm starts."""
        X, _, _, _ = self.forward(self.U, self.Xstore)
        if self.Xstore is not None:
            self.Xstore[...] = X
        return self.loss.value(self.Y, self.output(X, self.U))

    def objective64(self, P: dict[str, Array], pens: tuple[Penalty, ...],
                    X0: Array | None = None) -> tuple[float, Array]:
        """Loss plus penalties of the float64 parameters ``P`` on all samples, and the float64
        states: the figure the start and the result are judged by. The iteration runs in
        float64 from ``X0`` when it is given and finite (states of nearby parameters, or the
        float32 states of the same ones): a well-posed model has one equilibrium, so the
        start changes the iteration count, not the answer. It stops at a hundredth of the
        forward tolerance ``opts.tol``, so that the comparison of the two figures is not
        decided by where each iteration happened to stop."""
        if X0 is not None and not np.all(np.isfinite(X0)):
            X0 = None
        b = P["B"] @ self.U64 + P["bias_x"][:, None]
        X, _, _, _ = picard(P["A"], b, self.phi, X0, _JUDGE_TOL * self.opts.tol,
                            self.opts.max_iter)
        Yhat = P["C"] @ X + P["D"] @ self.U64 + P["bias_y"][:, None]
        value = self.loss.value(self.Y64, Yhat) + (_penalty_value(pens, P) if pens else 0.0)
        return value, X

    def initial_objective(self, pens: tuple[Penalty, ...]) -> float:
        """:meth:`objective64` of the start, from zero states; its states seed the warm
        starts and its loss is the history's ``initial_loss`` (``self.initial_loss``).
        (A float32 pass first would save float64 iterations but cost a product B U of its
        own; on MNIST at n = 128 it is slower.)"""
        value, X = self.objective64(self.start, pens, None)
        self.initial_loss = value - (_penalty_value(pens, self.start) if pens else 0.0)
        if self.Xstore is not None:
            self.Xstore[...] = X
        return value

    def keep_states(self) -> None:
        """Copy the warm-start states (those of the current parameters right after an
        evaluation) as the best epoch's, to warm-start the final float64 judgement."""
        if self.Xstore is None:
            return
        if self.best_states is None:
            self.best_states = self.Xstore.copy(order="K")
        else:
            self.best_states[...] = self.Xstore

    def final_objective(self, pens: tuple[Penalty, ...]) -> float:
        """:meth:`objective64` of the current (float64) parameters, warm-started from the
        states of the epoch they come from."""
        X0 = self.best_states if self.opts.keep_best else self.Xstore
        return self.objective64(self.params, pens, X0)[0]

    def to_float64(self) -> None:
        """Parameters back to float64, A projected onto the ball in float64 (from the factors
        with ``rank``), so that the returned model satisfies the bound exactly."""
        self.params = {k: v.astype(np.float64) for k, v in self.params.items()}
        if self.factors:
            self.factors = {k: v.astype(np.float64) for k, v in self.factors.items()}
            self.project_factors(self.factors)
            self.params["A"] = self.factors["L"] @ self.factors["R"].T
        elif self.dtype != np.float64:
            self.params["A"] = self.project(self.params["A"])

    def gradients(self, idx: NDArray[np.int64], X: Array, b: Array, G: Array,
                  Ub: Array) -> tuple[dict[str, Array], int, bool]:
        """Gradients of the batch loss on the trained arrays (adjoint (6.5)-(6.6))."""
        P = self.params
        Z = P["A"] @ X + b
        operands = _AdjointOperands(P["A"], P["C"], self.phi)
        V, ait, aok = solve_adjoint(operands, Z, G,  # type: ignore[arg-type]
                                    tol=self.adjoint_tol, max_iter=self.opts.max_iter)
        self.failures += not aok
        grads = {"A": lambda: V @ X.T, "B": lambda: V @ Ub.T, "C": lambda: G @ X.T,
                 "D": lambda: G @ Ub.T, "bias_x": lambda: V.sum(axis=1),
                 "bias_y": lambda: G.sum(axis=1)}
        out = {k: grads[k]() for k in self.variables if k in grads}
        if self.factors:
            gA = grads["A"]()
            out.update(L=gA @ self.factors["R"], R=gA.T @ self.factors["L"])
        return out, ait, aok

    def step(self, idx: NDArray[np.int64], lr: float) -> tuple[float, int, int, bool]:
        """One projected (proximal) gradient step on the batch ``idx``.

        Returns (batch loss before the step, forward iterations, adjoint iterations, all
        converged). A non-finite batch loss returns at once, without a step.
        """
        P = self.params
        Ub, Yb = self.U[:, idx], self.Y[:, idx]
        X0 = self.Xstore[:, idx] if self.Xstore is not None else None
        X, b, it, ok = self.forward(Ub, X0)
        if self.Xstore is not None:
            self.Xstore[:, idx] = X
        Yhat = self.output(X, Ub)
        value = self.loss.value(Yb, Yhat)
        if not np.isfinite(value):
            return value, it, 0, ok
        grads, ait, aok = self.gradients(idx, X, b, self.loss.grad(Yb, Yhat), Ub)
        self.optimizer.step(self.variables, grads, lr)
        for pen in self.penalties:
            for k, v in pen.prox({k: P[k] for k in pen.matrices}, lr).items():
                P[k][...] = v
        if self.factors:
            self.project_factors(self.factors)
            np.matmul(self.factors["L"], self.factors["R"].T, out=P["A"])
        elif "A" in self.trained:
            P["A"][...] = self.project(P["A"])
        return value, it, ait, ok and aok

    def epoch(self, lr: float) -> tuple[float, float, float, bool, bool]:
        """One pass over the data in shuffled mini-batches.

        Returns (mean batch loss, mean forward iterations, mean adjoint iterations, all
        converged, finite).
        """
        m = self.U.shape[1]
        order = self.rng.permutation(m) if self.opts.shuffle else np.arange(m)
        total, fwd, adj, steps, conv = 0.0, 0, 0, 0, True
        for start in range(0, m, self.batch_size):
            idx = order[start:start + self.batch_size]
            value, it, ait, ok = self.step(idx, lr)
            if not np.isfinite(value):
                return float("nan"), 0.0, 0.0, False, False
            total += value * len(idx)
            fwd, adj, steps, conv = fwd + it, adj + ait, steps + 1, conv and ok
        finite = all(np.all(np.isfinite(v)) for v in self.params.values())
        return total / m, fwd / max(steps, 1), adj / max(steps, 1), conv, finite

    def refit_output(self, ridge: float) -> None:
        """Least-squares (C, D, bias_y) on the float64 equilibrium of all samples."""
        P = self.params
        b = P["B"] @ self.U64 + P["bias_x"][:, None]
        X, _, _, ok = picard(P["A"], b, self.phi, self.Xstore, self.opts.tol, self.opts.max_iter)
        self.failures += not ok
        C, D, by = _ridge_output(X, self.U64, self.Y64, ridge)
        self.params.update(C=C, D=D, bias_y=by)


# -- the method ------------------------------------------------------------------------------

def refine(model: ImplicitModel, U: ArrayLike, Y: ArrayLike, loss: str | Loss = "squared",
           penalties: Any = (), kappa: float | None = None, *,
           options: RefineOptions | None = None,
           callback: Callable[[EpochRecord, ImplicitModel], Any] | None = None,
           progress: bool = False, **overrides: Any) -> RefineResult:
    """Refine a model by projected stochastic (proximal) gradient descent (section 6.2).

    Each step on a mini-batch (U_b, Y_b):

    1. forward: ``X = phi(A X + B U_b + bias_x)`` by Picard iteration (2.6), warm-started;
    2. adjoint: ``V = Psi o (A^T V + C^T G)``, ``G = dL/dYhat`` (6.5)-(6.6), then
       ``dL/dA = V X^T``, ``dL/dB = V U_b^T``, ``dL/dC = G X^T``, ``dL/dD = G U_b^T``;
    3. a gradient step (Adam or SGD) on the trained arrays;
    4. the penalties' proximal operators with step ``lr``;
    5. projection of A onto ``{||N(A, gamma)||_inf <= kappa}`` ((6.7) for CONE maps).

    The model is also projected once before the first step, so every model the method
    produces (and the result) lies in the kappa ball and is well-posed (Remark 2.4).

    Parameters
    ----------
    model : ImplicitModel
        Starting point: a BCD result to polish, or :func:`init_random` for the pure
        gradient method.
    U : array_like of shape (p, m)
        Inputs, samples as columns.
    Y : array_like of shape (q, m)
        Targets (one-hot columns for ``loss="cross_entropy"``).
    loss : {"squared", "cross_entropy"} or Loss, default "squared"
        Averaged over samples (see :mod:`fenchel_idl.problem.losses`).
    penalties : Penalty, dict, or sequence of them, default ()
        Applied through their proximal operators.
    kappa : float in (0, 1), optional
        Radius of the well-posedness ball. Default: the model's current
        ``||N(A, gamma)||_inf`` (``||A||_inf`` for CONE maps), which must then lie in (0, 1);
        otherwise kappa is required.
    options : RefineOptions, optional
        All settings (see :class:`RefineOptions`); defaults when omitted.
    callback : callable, optional
        ``callback(record, model)`` after every epoch, with the :class:`EpochRecord` and the
        current model; returning True stops the run (``stop_reason="callback"``).
    progress : bool, default False
        Show a tqdm progress bar when stderr is a terminal; otherwise write about ten INFO
        lines (and the stop reason) to the ``fenchel_idl.drivers`` logger.
    **overrides
        Any field of :class:`RefineOptions` (``epochs=50, lr=1e-3, ...``), applied on top of
        ``options``. So ``refine(model, U, Y, loss=..., penalties=..., kappa=...,
        **options_dict)`` works with a plain dict of options. Misspelled names raise.

    Returns
    -------
    RefineResult
        ``.model`` (refined, well-posed, inside the kappa ball) and ``.history``.

    Raises
    ------
    InputTypeError
        ``model`` is not an ImplicitModel, or arrays/options of the wrong type.
    ShapeError
        U or Y of the wrong shape, or different numbers of samples.
    ValidationError
        Bad options or kappa; kappa=None with ``||N(A, gamma)||_inf`` outside (0, 1);
        ``refit_output`` with a loss other than squared or penalties on C/D; a penalty
        coupling trained and frozen arrays.
    NotSupportedInRefinement
        A penalty without a proximal operator (e.g. "lipschitz", custom penalties).
    TrainingInterrupted
        Ctrl-C during the epochs: a ``KeyboardInterrupt`` whose ``epoch`` attribute and
        message name the epoch that was running.

    Warns
    -----
    ConvergenceWarning
        Some forward or adjoint fixed-point iterations hit ``max_iter``.
    NumericalWarning
        The loss became non-finite (learning rate too large); the run stops and returns the
        model of the last finite epoch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> U = rng.uniform(-1, 1, (2, 40)); Y = np.sin(3 * U[:1]) + U[1:]
    >>> m0 = init_random(p=2, q=1, n=8, kappa=0.5, seed=0)
    >>> res = refine(m0, U, Y, kappa=0.5, epochs=30, batch_size=10, lr=1e-2)
    >>> bool(res.history.loss[-1] < res.history.initial_loss)
    True
    >>> bool(np.abs(res.model.A).sum(axis=1).max() <= 0.5)
    True
    """
    if not isinstance(model, ImplicitModel):
        raise InputTypeError(f"'model' must be an ImplicitModel; got {type(model).__name__}.")
    if options is None:
        options = RefineOptions()
    elif not isinstance(options, RefineOptions):
        raise InputTypeError(f"'options' must be a RefineOptions; got {type(options).__name__}. "
                             "Pass a dict as keyword arguments: refine(..., **options_dict).")
    opts = options.replace(**overrides) if overrides else options
    if callback is not None and not callable(callback):
        raise InputTypeError(f"'callback' must be callable or None; got "
                             f"{type(callback).__name__}.")
    if not isinstance(progress, (bool, np.bool_)):
        raise InputTypeError(f"'progress' must be a bool; got {progress!r}.")
    L = get_loss(loss)
    U2, _ = as_samples("U", U, model.p, f"p = {model.p} inputs")
    Y2, _ = as_samples("Y", Y, model.q, f"q = {model.q} outputs")
    m = U2.shape[1]
    if Y2.shape[1] != m:
        raise ShapeError(f"'Y' must have as many columns (samples) as U ({m}); got "
                         f"{Y2.shape[1]}.")
    if m == 0:
        raise ShapeError("'U' must hold at least one sample (column); got 0.")
    kap = _resolve_kappa(kappa, model)
    pens = _as_penalties(penalties)
    if opts.refit_output:
        if not isinstance(L, SquaredLoss):
            raise ValidationError(f"'refit_output' needs loss='squared'; got {L.name!r}.")
        on_output = [p.name for p in pens if set(p.matrices) & {"C", "D"}]
        if on_output:
            raise ValidationError(f"'refit_output' solves an unpenalized least-squares problem "
                                  f"for (C, D), but penalties {on_output} act on C or D.")
    _check_rank(opts, pens, model, kap)
    limit = (env_blas_limit() if opts.blas_threads is None
             else None if opts.blas_threads == "auto" else int(opts.blas_threads))
    with blas_threads(limit):
        run = _Refiner(model, U2, Y2, L, opts, kap, pens)
        initial = run.initial_objective(pens)
        history = _train(run, pens, callback, progress)
        run.to_float64()
        if opts.refit_output:
            run.refit_output(opts.refit_ridge)
        history = _settle(run, history, pens, initial)
    if run.failures:
        warnings.warn(f"{run.failures} forward or adjoint fixed-point solves hit max_iter="
                      f"{opts.max_iter} during refinement; gradients were inexact. Raise "
                      "max_iter or lower kappa.", ConvergenceWarning, stacklevel=2)
    out = run.model()
    norm = _norm(out.A, out.activation)
    if not norm <= kap * (1.0 + 1e-12) < 1.0:  # pragma: no cover - guarded by the projection
        raise NotWellPosedError(f"refinement left the kappa ball: ||N(A, gamma)||_inf = "
                                f"{norm:.17g} > kappa = {kap:.17g}.")
    return RefineResult(out, history, kap, opts)


def _check_rank(opts: RefineOptions, pens: tuple[Penalty, ...], model: ImplicitModel,
                kappa: float) -> None:
    """Low-rank training needs a row-wise ball and no penalty on A (its prox acts on A)."""
    if opts.rank is None:
        return
    on_A = [p.name for p in pens if "A" in p.matrices]
    if on_A:
        raise ValidationError(f"'rank' trains A through its factors L R^T; penalties {on_A} "
                              "act on A itself. Drop them or train without 'rank'.")
    if not well_posed_radii(model.activation, model.n, kappa)[1]:
        raise ValidationError(f"'rank' needs a well-posedness ball of row-wise l1 norms "
                              f"(componentwise activations); got {model.activation!r}.")


def _settle(run: _Refiner, history: RefineHistory, pens: tuple[Penalty, ...],
            initial: float) -> RefineHistory:
    """Judge the returned model against its start in float64: with ``keep_best`` a model
    whose objective is above the start's is replaced by the start; otherwise it warns."""
    final = run.final_objective(pens)
    best_epoch = history.best_epoch
    if not final <= initial:
        if run.opts.keep_best:
            run.params = {k: run.start[k].copy() for k in PARAMETERS}
            final, best_epoch = initial, 0
        else:
            warnings.warn(f"refinement ended with a training objective of {final:.6g}, above "
                          f"its start ({initial:.6g}); pass keep_best=True to keep the better "
                          "model, or lower lr.", ConvergenceWarning, stacklevel=3)
    return dataclasses.replace(history, initial_objective=float(initial),
                               final_objective=float(final), best_epoch=best_epoch)


@dataclass
class _Best:
    """The best epoch seen so far (objective, epoch number, saved parameters)."""

    value: float
    epoch: int = 0
    saved: dict[str, Array] | None = None


def _judge(run: _Refiner, best: _Best, objective: float, epoch: int, lr: float
           ) -> tuple[bool, float]:
    """Track the best epoch and backtrack after a blow-up; returns (backtracked, next lr)."""
    opts = run.opts
    if best.saved is None:
        best.epoch = epoch
    elif objective < best.value:
        best.value, best.epoch, best.saved = objective, epoch, run.snapshot()
        run.keep_states()
    elif opts.backtrack and objective > best.value + opts.backtrack_tol * abs(best.value):
        run.restore(best.saved)
        run.optimizer = run.new_optimizer()
        return True, lr * opts.backtrack_factor * opts.lr_decay
    return False, lr * opts.lr_decay


def _train(run: _Refiner, pens: tuple[Penalty, ...],
           callback: Callable[[EpochRecord, ImplicitModel], Any] | None,
           progress: bool) -> RefineHistory:
    """The epoch loop of :func:`refine`: records, callback, progress bar, best epoch,
    backtracking, divergence."""
    opts = run.opts
    # the start's loss and warm starts come from its float64 judgement (initial_objective)
    initial_loss = run.initial_loss if opts.evaluate else float("nan")
    records: list[EpochRecord] = []
    stop_reason = "epochs"
    last_good = run.snapshot()
    best = _Best(initial_loss + (_penalty_value(pens, run.params) if pens else 0.0))
    if opts.keep_best or opts.backtrack:
        best.saved = run.snapshot()
        run.keep_states()
    lr = opts.lr
    shown = Progress(progress, "refine")
    shown.open(opts.epochs, "epoch")
    # without a bar, about ten log lines: epochs are many and fast
    log_every = -(-opts.epochs // 10)
    t0 = time.perf_counter()
    epoch = 0
    # non-finite values are detected and reported (NumericalWarning); numpy's own overflow
    # warnings would only repeat that
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            for epoch in range(1, opts.epochs + 1):
                batch_loss, fwd, adj, conv, finite = run.epoch(lr)
                full = run.full_loss() if (finite and opts.evaluate) else float("nan")
                if not finite or (opts.evaluate and not np.isfinite(full)):
                    run.restore(last_good)
                    stop_reason = "diverged"
                    warnings.warn(f"the training loss became non-finite in epoch {epoch} "
                                  f"(lr={lr:g} is probably too large); refinement stopped and "
                                  "returns the model of the last finite epoch.",
                                  NumericalWarning, stacklevel=3)
                    break
                pen_val = _penalty_value(pens, run.params) if pens else 0.0
                used = lr
                backtracked, lr = _judge(run, best, full + pen_val, epoch, lr)
                norm = _norm(run.params["A"], run.phi)  # of the parameters kept
                rec = EpochRecord(epoch=epoch, loss=full, batch_loss=batch_loss,
                                  penalty=pen_val, objective=full + pen_val,
                                  time=time.perf_counter() - t0, lr=used, norm=norm,
                                  forward_iterations=fwd, adjoint_iterations=adj,
                                  converged=conv, backtracked=backtracked)
                records.append(rec)
                last_good = run.snapshot()
                shown.update(f"loss={full if opts.evaluate else batch_loss:.4g}")
                if epoch % log_every == 0 or epoch == opts.epochs:
                    shown.line(f"epoch {epoch}/{opts.epochs}: loss "
                               f"{full if opts.evaluate else batch_loss:.4g}, "
                               f"{rec.time:.1f} s")
                if callback is not None and callback(rec, run.model()) is True:
                    stop_reason = "callback"
                    break
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"refinement interrupted in epoch {epoch} of "
                                      f"{opts.epochs}; refinement keeps no checkpoint.",
                                      phase="refine", epoch=epoch) from None
        finally:
            shown.close()
    shown.say(f"stopped after {epoch} epochs ({stop_reason}); keeping epoch {best.epoch}")
    if opts.keep_best and best.saved is not None:
        run.restore(best.saved)
    else:
        best.epoch = len(records)
    return RefineHistory(tuple(records), float(initial_loss), run.initial_projection,
                         stop_reason, best.epoch)


# -- random start ----------------------------------------------------------------------------

def init_random(p: int, q: int, n: int, kappa: float = 0.5,
                activation: Activation | str | dict[str, Any] = "relu", seed: int = 0,
                scale: float = 1.0, bias_scale: float | None = None) -> ImplicitModel:
    """A random well-posed model: the starting point of the pure gradient method (section 7.1).

    ``A`` has Gaussian entries, each row rescaled onto the boundary of the well-posedness
    ball (``||N(A, gamma)||_inf = kappa``; for vector blocks the result is projected with
    :func:`fenchel_idl.problem.projection.project_well_posed`). ``B`` has i.i.d.
    N(0, scale^2 / p) entries, ``C`` N(0, 1 / n), ``D`` and ``bias_y`` are zero, and
    ``bias_x`` is N(0, bias_scale^2).

    Parameters
    ----------
    p, q, n : int >= 1
        Numbers of inputs, outputs and states.
    kappa : float in (0, 1), default 0.5
    activation : str, dict or Activation, default "relu"
    seed : int >= 0, default 0
    scale : float > 0, default 1.0
        Scale of the input weights B (per unit-variance input); raise it for inputs with a
        large range so that the activations' kinks spread over the data.
    bias_scale : float >= 0, optional
        Standard deviation of bias_x; default ``scale``.

    Returns
    -------
    ImplicitModel

    Raises
    ------
    ValidationError, InputTypeError
        Bad sizes, kappa, seed or scales.

    Examples
    --------
    >>> m = init_random(p=3, q=2, n=10, kappa=0.5, seed=1)
    >>> (m.n, m.p, m.q), round(float(np.abs(m.A).sum(axis=1).max()), 12)
    ((10, 3, 2), 0.5)
    """
    p = check_int("p", p, low=1)
    q = check_int("q", q, low=1)
    n = check_int("n", n, low=1)
    kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
    seed = check_int("seed", seed, low=0)
    scale = check_real("scale", scale, 0.0, None, low_open=True)
    bias_scale = scale if bias_scale is None else check_real("bias_scale", bias_scale, 0.0)
    phi = get_activation(activation)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    radii, exact = well_posed_radii(phi, n, kappa)
    row_l1 = np.abs(A).sum(axis=1)
    finite = np.isfinite(radii)
    A[finite] *= (radii[finite] / np.maximum(row_l1[finite], 1e-300))[:, None]
    A[~finite] /= np.maximum(row_l1[~finite], 1e-300)[:, None]
    A = project_rows(A, radii, "sort") if exact else project_well_posed(A, kappa, phi)
    B = rng.standard_normal((n, p)) * (scale / np.sqrt(p))
    C = rng.standard_normal((q, n)) / np.sqrt(n)
    bias_x = rng.standard_normal(n) * bias_scale
    return ImplicitModel(A=A, B=B, C=C, D=np.zeros((q, p)), activation=phi, bias_x=bias_x,
                         bias_y=np.zeros(q))
