"""The Fenchel-relaxed training problem (sections 6.1 and 6.3) and its convex blocks.

The problem, stated with the state matrix X as a variable:

    min_{A, B, C, D, X}  L(Y, C X + D U) + P(A, B, C, D)
                         + (1/m) sum_i lam_i 1^T F_phi(X_i, (A X + B U)_i)
    s.t.  ||N(A, gamma)||_inf <= kappa,   norm balls on B, C and D,

where F_phi is the Fenchel divergence of the activation (zero exactly when X = phi(AX + BU))
and lam is an n-vector. Biases (the (u, 1) trick) are variables of the (A, B) and (C, D)
blocks. With ``standardize=True`` the data are centred and scaled inside the problem and the
trained model is mapped back exactly, so ``model.predict(U)`` takes the raw U.

Three blocks, each a convex CVXPY problem built once with Parameters (DPP) and re-solved:

- **(C, D)**: the loss plus penalties, X fixed.
- **(A, B)**: the weighted divergence plus penalties, X fixed: ``sum_i lam_i f*(Z_i) -
  tr(X^T Lam Z)`` with Z = A X + B U + b, convex in (A, B).
- **X**: the loss plus the divergence, model fixed. The term -tr(X^T Lam A X) is
  indefinite, so it is majorized (a DCA step): with Lam A + A^T Lam = S+ - S- (eigenvalue
  split), -x^T S+ x / 2 is replaced by its linearization at the current X. The majorizer
  touches the objective at the current X, so each X step never increases the relaxed
  objective.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import NumericalWarning, ShapeError, ValidationError
from fenchel_idl.model.activations import Activation, Blockwise, get_activation
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.losses import CrossEntropyLoss, get_loss
from fenchel_idl.problem.penalties import (
    Custom,
    Nuclear,
    Penalty,
    check_penalty_convex,
    get_penalty,
    penalty_reads,
)
from fenchel_idl.validation import (
    array_bytes,
    as_float_array,
    check_bool,
    check_int,
    check_memory,
    check_real,
)

__all__ = ["Bounds", "TrainingProblem"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Bounds:
    """Radii of the norm balls, in the standardized units of the problem.

    Each ball bounds the max-row l1 norm (the induced infinity norm, as in section 4.3):
    ||B||_inf <= B (the state bias is bounded entrywise by B too), ||C||_inf <= C,
    ||D||_inf <= D. ``None`` removes a ball (not advised for C: without it the relaxation
    is degenerate).
    """

    B: float | None = 5.0
    C: float | None = 100.0
    D: float | None = 20.0

    def __post_init__(self):
        for k in ("B", "C", "D"):
            v = getattr(self, k)
            if v is not None:
                check_real(f"bounds['{k}']", v, 0.0, None, low_open=True)


def _one_hot_targets(Y: Any, m: int) -> Array:
    """One-hot (q, m) targets from integer labels (m,) or a (q, m) one-hot array."""
    arr = np.asarray(Y)
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValidationError("'Y' for cross_entropy must be integer class labels of "
                                      f"shape ({m},) or one-hot columns (q, {m}); got dtype "
                                      f"{arr.dtype}.")
        if arr.shape[0] != m:
            raise ShapeError(f"'Y' must have one label per sample (column of U): {m}; got "
                             f"{arr.shape[0]}.")
        if arr.min() < 0:
            raise ValidationError(f"'Y' class labels must be in [0, q); got {arr.min()}.")
        q = int(arr.max()) + 1
        if q > _max_classes(m):
            raise ValidationError(f"'Y' class labels must be 0, 1, ..., q - 1 with q at most "
                                  f"{_max_classes(m)} for {m} samples; got the label "
                                  f"{q - 1}, which would make {q} classes, most of them "
                                  "without samples. Relabel with np.unique(Y, "
                                  "return_inverse=True).")
        check_memory(f"one-hot targets of {q} classes and {m} samples", array_bytes((q, m)))
        out = np.zeros((max(q, 2), m))
        out[arr, np.arange(m)] = 1.0
        return out
    Yf = as_float_array("Y", arr, ndim=2)
    binary = np.all((Yf == 0) | (Yf == 1))
    if not binary:
        bad = Yf[(Yf != 0) & (Yf != 1)]
        raise ValidationError("'Y' for cross_entropy must be one-hot columns (entries 0 or 1) or "
                              f"integer labels; got entries other than 0/1, in "
                              f"[{bad.min():g}, {bad.max():g}].")
    if not np.all(Yf.sum(axis=0) == 1):
        raise ValidationError("'Y' for cross_entropy must be one-hot columns (entries 0/1, one 1 "
                              "per column) or integer labels; got a matrix with column sums in "
                              f"[{Yf.sum(axis=0).min():g}, {Yf.sum(axis=0).max():g}].")
    return Yf


def _max_classes(m: int) -> int:
    """The largest number of classes accepted for m integer labels: twice the sample count
    plus 100 (a label far beyond it is a mistake, and its one-hot matrix and cross-entropy
    block would be huge)."""
    return 2 * m + 100


def _input_matrix(U: Any) -> Array:
    """U as a float (p, m) array with p, m >= 1 (a 1-D U is one input row)."""
    U = as_float_array("U", U, ndim=(1, 2))
    if U.ndim == 1:
        U = U[None, :]
    if U.shape[1] < 1 or U.shape[0] < 1:
        raise ShapeError(f"'U' must have at least one input row and one sample column; got "
                         f"shape {U.shape}.")
    return U


def _target_matrix(Y: Any, m: int, classify: bool) -> Array:
    """Y as a float (q, m') array: one-hot columns for classification, a 1-D Y as one row."""
    if classify:
        return _one_hot_targets(Y, m)
    Y = as_float_array("Y", Y, ndim=(1, 2))
    Y = Y[None, :] if Y.ndim == 1 else Y
    if Y.shape[0] < 1:
        raise ShapeError(f"'Y' must have at least one target row (q >= 1; samples are "
                         f"columns); got shape {Y.shape}.")
    return Y


def _training_activation(activation: Any, n: int) -> Activation:
    """The activation, refused unless componentwise (or Blockwise of such) over n states."""
    phi = get_activation(activation)
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    if any(not act.componentwise for _, act in parts):
        raise ValidationError("'activation' must be componentwise (relu, leaky_relu, tanh, "
                              "sigmoid, identity) or a Blockwise map of them for training; "
                              f"got {phi!r}.")
    if isinstance(phi, Blockwise) and phi.n != n:
        raise ValidationError(f"'activation' covers {phi.n} states but n = {n}.")
    return phi


def _lam_vector(lam: Any, n: int) -> Array:
    """The divergence weights as a positive (n,) vector (a scalar is repeated)."""
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        check_real("lam", lam, 0.0, None, low_open=True)
        lam_arr = np.full(n, float(lam))
    else:
        lam_arr = as_float_array("lam", lam, ndim=1)
    if lam_arr.shape != (n,):
        raise ShapeError(f"'lam' must be a scalar or have shape (n,) = ({n},); got "
                         f"{lam_arr.shape}.")
    if np.any(lam_arr <= 0):
        raise ValidationError(f"'lam' must be positive; got minimum {lam_arr.min():g}.")
    return lam_arr


def _as_bounds(bounds: Any) -> Bounds:
    """A Bounds from None (the defaults), a Bounds or a dict with keys among B, C, D."""
    if bounds is None:
        return Bounds()
    if isinstance(bounds, Mapping):
        unknown = set(bounds) - {"B", "C", "D"}
        if unknown:
            raise ValidationError(f"'bounds' keys must be among ['B', 'C', 'D']; got "
                                  f"{sorted(unknown)}.")
        return Bounds(**bounds)
    if not isinstance(bounds, Bounds):
        raise ValidationError(f"'bounds' must be a Bounds or a dict; got {bounds!r}.")
    return bounds


def _convex_penalties(penalties: Sequence[Any], constraints: Sequence[Any],
                      shapes: Mapping[str, tuple[int, int]]) -> tuple[Penalty, ...]:
    """The penalties, then the constraints (callables become :class:`Custom`), each checked
    DCP-convex on variables of the given shapes."""
    pens = tuple(get_penalty(pn) for pn in penalties)
    pens += tuple(Custom(fn=c, label=getattr(c, "__name__", "constraint")) if callable(c)
                  else get_penalty(c) for c in constraints)
    for pen in pens:
        check_penalty_convex(pen, shapes)
    return pens


def _centre_scale(M: Array) -> tuple[Array, Array]:
    """Row means and spreads of M; a row whose spread is negligible against its own size is
    constant and keeps the scale 1.

    Rows of extreme size (largest entry above 1e150 or below 1e-150) are divided by that
    size before the mean and the spread are taken and multiplied back after, so that the
    squares of the spread neither overflow (data near 1e200) nor underflow (near 1e-300).
    """
    size = np.abs(M).max(axis=1)
    if np.all((size == 0) | ((size > 1e-150) & (size < 1e150))):
        sd = M.std(axis=1)
        return M.mean(axis=1), np.where(sd > 1e-12 * np.maximum(size, 1e-300), sd, 1.0)
    s = np.where(size > 0, size, 1.0)
    Ms = M / s[:, None]
    sd_rel = Ms.std(axis=1)
    return Ms.mean(axis=1) * s, np.where(sd_rel > 1e-12, sd_rel * s, 1.0)


def _check_scales(sd_u: Array, sd_y: Array) -> None:
    """Refuse scalings whose model in raw units would overflow: the trained model divides
    by sd_u and multiplies by sd_y (:meth:`TrainingProblem.to_user_model`)."""
    worst = float(np.max(sd_y)) / float(np.min(sd_u))
    if not (np.isfinite(1e6 / np.min(sd_u)) and np.isfinite(1e6 * worst)):
        raise ValidationError(f"the scales of the data are too far apart for float64: 'U' "
                              f"has a row spread of {float(np.min(sd_u)):.3g} and 'Y' of "
                              f"{float(np.max(sd_y)):.3g}; the model in raw units would "
                              "overflow. Rescale U or Y (e.g. to unit size) before training.")


def _check_problem_memory(n: int, p: int, q: int, m: int) -> None:
    """Refuse, before anything of size n is allocated, a problem whose training needs more
    memory than the limit: the model matrices, a few copies of the states X (n, m), the
    data, and a dense (n, m) block problem (the X block)."""
    need = array_bytes((n, n), (n, n), (n, p), (q, n), (q, p), (p, m), (q, m), (p, m), (q, m),
                       *[(n, m)] * 8)
    check_memory(f"a training problem with n = {n} states, p = {p} inputs, q = {q} outputs "
                 f"and m = {m} samples", need)


class TrainingProblem:
    """A declarative implicit-model training problem in relaxed Fenchel form.

    Parameters
    ----------
    U : array_like of shape (p, m)
        Inputs, samples as columns (raw units).
    Y : array_like of shape (q, m), or integer labels of shape (m,) for cross-entropy
        Targets.
    n : int
        Number of states.
    loss : {"squared", "cross_entropy"}
    activation : str or Activation
        A componentwise map (relu, leaky_relu, tanh, sigmoid, identity), or a Blockwise map
        of them. Vector maps (softmax) are not supported in training.
    kappa : float in (0, 1)
        Radius of the well-posedness ball ||N(A, gamma)||_inf <= kappa.
    lam : float or array_like of shape (n,)
        Initial weights of the Fenchel divergence, one per state.
    bounds : Bounds or dict, optional
        Radii of the norm balls on B, C, D (standardized units).
    penalties : sequence
        Penalties: :mod:`fenchel_idl.problem.penalties` objects, dicts such as
        ``{"name": "l1", "weight": 1e-3, "on": "A"}``, or callables ``fn(A, B, C, D)``
        returning a convex expression, a list of constraints, or both.
    constraints : sequence of callables
        ``fn(A, B, C, D)`` returning a list of CVXPY constraints (e.g. a sparsity mask).
    bias : bool
        Whether the model gets bias terms (default True).
    standardize : bool
        Centre and scale U (and Y for the squared loss) inside the problem.

    Raises
    ------
    ValidationError
        kappa outside (0, 1), negative lam, an unknown loss/activation/penalty name, labels
        that are not one-hot or in range (or so large that most classes have no sample),
        data whose scales cannot be represented in raw units.
    ShapeError
        U and Y with different sample counts, Y without rows, lam of the wrong length.
    InputTypeError
        ``bias`` or ``standardize`` not a bool (a string such as "false" is refused).
    ResourceError
        Sizes whose training would need more memory than the limit
        (:func:`fenchel_idl.validation.check_memory`), refused before allocating.
    NotConvexError
        A penalty or constraint that is not DCP, refused before anything is solved.

    Examples
    --------
    >>> import numpy as np
    >>> U = np.random.default_rng(0).uniform(-1, 1, (1, 30))
    >>> prob = TrainingProblem(U, np.sin(3 * U), n=5, kappa=0.5, penalties=[
    ...     {"name": "l1", "weight": 1e-3, "on": "A"}])
    >>> prob.n, prob.p, prob.q, prob.m
    (5, 1, 1, 30)
    """

    def __init__(self, U: ArrayLike, Y: ArrayLike, n: int, *, loss: str = "squared",
                 activation: Any = "relu", kappa: float = 0.5, lam: Any = 100.0,
                 bounds: Bounds | Mapping[str, float | None] | None = None,
                 penalties: Sequence[Any] = (), constraints: Sequence[Any] = (),
                 bias: bool = True, standardize: bool = True):
        self.loss = get_loss(loss)
        U = _input_matrix(U)
        p, m = U.shape
        self.n = check_int("n", n, low=1)
        Y = _target_matrix(Y, m, isinstance(self.loss, CrossEntropyLoss))
        if Y.shape[1] != m:
            raise ShapeError(f"'U' and 'Y' must have the same number of samples (columns); got "
                             f"U {U.shape} and Y {Y.shape}.")
        _check_problem_memory(self.n, p, Y.shape[0], m)
        self.kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
        self.activation: Activation = _training_activation(activation, self.n)
        self.lam0 = _lam_vector(lam, self.n)
        self.bounds = _as_bounds(bounds)
        self.bias = check_bool("bias", bias)
        self.standardize = check_bool("standardize", standardize)
        q = Y.shape[0]
        shapes = {"A": (self.n, self.n), "B": (self.n, p), "C": (q, self.n), "D": (q, p)}
        self.penalties: tuple[Penalty, ...] = _convex_penalties(penalties, constraints, shapes)
        # what each penalty reads, once: a callable is narrowed to the variables it uses
        self._reads = tuple(frozenset(penalty_reads(pn, shapes)) for pn in self.penalties)
        self.U_raw, self.Y_raw = U, Y
        self._standardize_data(U, Y)
        self.p, self.q, self.m = p, q, m

    def _standardize_data(self, U: Array, Y: Array) -> None:
        """Set the scalings (mu, sd) of U and Y and the standardized ``self.U``, ``self.Y``;
        warn about badly scaled data, kappa near 1 and classes without samples."""
        classify = isinstance(self.loss, CrossEntropyLoss)
        if self.standardize:
            self.mu_u, self.sd_u = _centre_scale(U)
        else:
            self.mu_u, self.sd_u = np.zeros(U.shape[0]), np.ones(U.shape[0])
            scale = float(np.abs(U).max()) if U.size else 0.0
            if scale > 1e3 or 0.0 < scale < 1e-3:
                warnings.warn(f"'U' has entries up to {scale:.3g} and standardize=False: the norm "
                              "balls and lam are then badly scaled for these data; use "
                              "standardize=True.", NumericalWarning, stacklevel=3)
        if self.kappa > 0.99:
            warnings.warn(f"kappa = {self.kappa} is close to 1: equilibria converge slowly "
                          "(Picard rate ~kappa) and the bounds of section 4 grow like "
                          "1/(1 - kappa).", NumericalWarning, stacklevel=3)
        if classify:
            empty = np.flatnonzero(Y.sum(axis=1) == 0)
            if empty.size:
                warnings.warn(f"class(es) {empty.tolist()} of {Y.shape[0]} have no samples; "
                              "their logits will only be pushed down (a labelling mistake?).",
                              UserWarning, stacklevel=3)
        if self.standardize and not classify:
            self.mu_y, self.sd_y = _centre_scale(Y)
        else:
            self.mu_y, self.sd_y = np.zeros(Y.shape[0]), np.ones(Y.shape[0])
        _check_scales(self.sd_u, self.sd_y)
        self.U = (U - self.mu_u[:, None]) / self.sd_u[:, None]
        self.Y = Y if classify else (Y - self.mu_y[:, None]) / self.sd_y[:, None]

    # -- conversions between the standardized and the user's units --------------------------
    def to_user_model(self, A, B, b, C, D, d) -> ImplicitModel:
        """Map standardized-space matrices to a model on raw U (exact)."""
        Bu = B / self.sd_u[None, :]
        bx = b - Bu @ self.mu_u
        Cu = self.sd_y[:, None] * C
        Du = self.sd_y[:, None] * D / self.sd_u[None, :]
        by = self.sd_y * d - Du @ self.mu_u + self.mu_y
        return ImplicitModel(A, Bu, Cu, Du, self.activation, bx, by)

    def from_user_model(self, model: ImplicitModel) -> tuple[Array, ...]:
        """The inverse of :meth:`to_user_model` (for warm starts from a given model)."""
        if (model.n, model.p, model.q) != (self.n, self.p, self.q):
            raise ShapeError(f"'init' model must have (n, p, q) = ({self.n}, {self.p}, {self.q});"
                             f" got ({model.n}, {model.p}, {model.q}).")
        B = model.B * self.sd_u[None, :]
        b = model.bias_x + model.B @ self.mu_u
        C = model.C / self.sd_y[:, None]
        D = model.D * self.sd_u[None, :] / self.sd_y[:, None]
        d = (model.bias_y + model.D @ self.mu_u - self.mu_y) / self.sd_y
        return model.A.copy(), B, b, C, D, d

    def fingerprint(self) -> str:
        """A hash of the data and settings (used to match checkpoints to problems)."""
        h = hashlib.sha256()
        for a in (self.U_raw, self.Y_raw, self.lam0):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((self.n, self.loss.name, self.activation.to_dict(), self.kappa,
                       self.bounds, self.bias, self.standardize,
                       [pn.to_dict() for pn in self.penalties])).encode())
        return h.hexdigest()

    # -- numeric objective ------------------------------------------------------------------
    def penalty_value(self, M: Mapping[str, Array]) -> float:
        return float(sum(pn.value(M) for pn in self.penalties))

    def divergence(self, X: Array, Z: Array) -> Array:
        """Per-state mean divergence (1/m) sum_j F(X_ij, Z_ij), shape (n,)."""
        return self.activation.fenchel(X, Z).mean(axis=1)

    def objective_parts(self, A, B, b, C, D, d, X, lam) -> tuple[float, float, float]:
        """(loss, weighted divergence, penalty) of the relaxed objective at numeric values."""
        Z = A @ X + B @ self.U + b[:, None]
        loss = self.loss.value(self.Y, C @ X + D @ self.U + d[:, None])
        div = float(lam @ self.divergence(X, Z))
        pen = self.penalty_value({"A": A, "B": B, "C": C, "D": D}) if self.penalties else 0.0
        return loss, div, pen

    def penalties_reading(self, *names: str) -> list[Penalty]:
        """The penalties that read any of the matrices ``names`` ("A", "B", "C", "D"), by
        :func:`fenchel_idl.problem.penalties.penalty_reads` (a callable counts by the
        variables its expression uses), so that every spelling of a penalty is routed alike."""
        return [pn for pn, r in zip(self.penalties, self._reads) if r & set(names)]

    @property
    def cone(self) -> str:
        """Cone type of the blocks (selects the solver chain)."""
        if any(isinstance(pn, Nuclear) for pn in self.penalties):
            return "sdp"
        acts = self.activation.blocks if isinstance(self.activation, Blockwise) else \
            ((self.n, self.activation),)
        if isinstance(self.loss, CrossEntropyLoss) or any(a.name in ("tanh", "sigmoid")
                                                          for _, a in acts):
            return "exp"
        return "qp"

    def __repr__(self) -> str:
        return (f"TrainingProblem(n={self.n}, p={self.p}, q={self.q}, m={self.m}, "
                f"loss={self.loss.name!r}, activation={self.activation!r}, kappa={self.kappa}, "
                f"penalties={[pn.name for pn in self.penalties]})")
