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
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, check_int, check_real
from .activations import Activation, Blockwise, get_activation
from .errors import NotConvexError, ShapeError, ValidationError
from .losses import CrossEntropyLoss, get_loss
from .model import ImplicitModel
from .penalties import Penalty, check_penalty_convex, get_penalty

__all__ = ["TrainingProblem", "Bounds"]

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
    C: float | None = 20.0
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
        out = np.zeros((max(q, 2), m))
        out[arr, np.arange(m)] = 1.0
        return out
    Yf = as_float_array("Y", arr, ndim=2)
    ok = np.all((Yf == 0) | (Yf == 1)) and np.all(Yf.sum(axis=0) == 1)
    if not ok:
        raise ValidationError("'Y' for cross_entropy must be one-hot columns (entries 0/1, one 1 "
                              "per column) or integer labels; got a matrix with column sums in "
                              f"[{Yf.sum(axis=0).min():g}, {Yf.sum(axis=0).max():g}].")
    return Yf


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
        Penalties: :mod:`fenchel_idl.penalties` objects, dicts such as
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
        that are not one-hot or in range.
    ShapeError
        U and Y with different sample counts, lam of the wrong length.
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
                 activation: Any = "relu", kappa: float = 0.5, lam: Any = 1.0,
                 bounds: Bounds | Mapping[str, float | None] | None = None,
                 penalties: Sequence[Any] = (), constraints: Sequence[Any] = (),
                 bias: bool = True, standardize: bool = True):
        self.loss = get_loss(loss)
        U = as_float_array("U", U, ndim=(1, 2))
        if U.ndim == 1:
            U = U[None, :]
        p, m = U.shape
        if m < 1 or p < 1:
            raise ShapeError(f"'U' must have at least one input row and one sample column; got "
                             f"shape {U.shape}.")
        self.n = check_int("n", n, low=1)
        if isinstance(self.loss, CrossEntropyLoss):
            Y = _one_hot_targets(Y, m)
        else:
            Y = as_float_array("Y", Y, ndim=(1, 2))
            if Y.ndim == 1:
                Y = Y[None, :]
        if Y.shape[1] != m:
            raise ShapeError(f"'U' and 'Y' must have the same number of samples (columns); got "
                             f"U {U.shape} and Y {Y.shape}.")
        self.kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
        phi = get_activation(activation)
        parts = phi.blocks if isinstance(phi, Blockwise) else ((self.n, phi),)
        if any(not act.componentwise for _, act in parts):
            raise ValidationError("'activation' must be componentwise (relu, leaky_relu, tanh, "
                                  "sigmoid, identity) or a Blockwise map of them for training; "
                                  f"got {phi!r}.")
        if isinstance(phi, Blockwise) and phi.n != self.n:
            raise ValidationError(f"'activation' covers {phi.n} states but n = {self.n}.")
        self.activation: Activation = phi
        lam_arr = np.asarray(lam, dtype=float) if not isinstance(lam, (int, float)) else None
        if lam_arr is None:
            check_real("lam", lam, 0.0, None, low_open=True)
            lam_arr = np.full(self.n, float(lam))
        lam_arr = as_float_array("lam", lam_arr, ndim=1)
        if lam_arr.shape != (self.n,):
            raise ShapeError(f"'lam' must be a scalar or have shape (n,) = ({self.n},); got "
                             f"{lam_arr.shape}.")
        if np.any(lam_arr <= 0):
            raise ValidationError(f"'lam' must be positive; got minimum {lam_arr.min():g}.")
        self.lam0 = lam_arr
        if bounds is None:
            bounds = Bounds()
        elif isinstance(bounds, Mapping):
            unknown = set(bounds) - {"B", "C", "D"}
            if unknown:
                raise ValidationError(f"'bounds' keys must be among ['B', 'C', 'D']; got "
                                      f"{sorted(unknown)}.")
            bounds = Bounds(**bounds)
        elif not isinstance(bounds, Bounds):
            raise ValidationError(f"'bounds' must be a Bounds or a dict; got {bounds!r}.")
        self.bounds = bounds
        self.bias = bool(bias)
        self.standardize = bool(standardize)
        self.penalties: tuple[Penalty, ...] = tuple(get_penalty(pn) for pn in penalties)
        from .penalties import Custom

        self.penalties += tuple(
            Custom(fn=c, label=getattr(c, "__name__", "constraint")) if callable(c)
            else get_penalty(c) for c in constraints)
        q = Y.shape[0]
        shapes = {"A": (self.n, self.n), "B": (self.n, p), "C": (q, self.n), "D": (q, p)}
        for pen in self.penalties:
            check_penalty_convex(pen, shapes)
        # raw data and the standardization
        self.U_raw, self.Y_raw = U, Y
        if self.standardize:
            self.mu_u = U.mean(axis=1)
            sd = U.std(axis=1)
            self.sd_u = np.where(sd > 1e-12 * max(1.0, float(np.abs(U).max())), sd, 1.0)
        else:
            self.mu_u, self.sd_u = np.zeros(p), np.ones(p)
        classify = isinstance(self.loss, CrossEntropyLoss)
        if self.standardize and not classify:
            self.mu_y = Y.mean(axis=1)
            sd = Y.std(axis=1)
            self.sd_y = np.where(sd > 1e-12 * max(1.0, float(np.abs(Y).max())), sd, 1.0)
        else:
            self.mu_y, self.sd_y = np.zeros(q), np.ones(q)
        self.U = (U - self.mu_u[:, None]) / self.sd_u[:, None]
        self.Y = Y if classify else (Y - self.mu_y[:, None]) / self.sd_y[:, None]
        self.p, self.q, self.m = p, q, m

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

    @property
    def cone(self) -> str:
        """Cone type of the blocks (selects the solver chain)."""
        from .penalties import Nuclear

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


# ----------------------------------------------------------------------------------------
# The three blocks, each compiled once with Parameters
# ----------------------------------------------------------------------------------------
def _f_terms(phi: Activation, n: int, X: Any):
    """Sum over states of f(X_i) as (list of expressions per block, constraints)."""
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, cons, start = [], [], 0
    for size, act in parts:
        term = act.f_cvxpy(X[start:start + size])
        out.append((slice(start, start + size), term.expr))
        cons.extend(term.constraints)
        start += size
    return out, cons


def _fstar_terms(phi: Activation, n: int, Z: Any):
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, start = [], 0
    for size, act in parts:
        out.append((slice(start, start + size), act.fstar_cvxpy(Z[start:start + size])))
        start += size
    return out


def _weighted(terms, w: Any):
    """sum_i w_i * sum_j term_ij for a (n, 1) nonnegative parameter w."""
    return sum(cp.sum(cp.multiply(w[sl], expr)) for sl, expr in terms)


def _inf_ball(M: Any, radius: float) -> list:
    return [cp.sum(cp.abs(M), axis=1) <= radius]


def _penalty_terms(problem: TrainingProblem, M: Mapping[str, Any]):
    expr, cons = 0.0, []
    for pn in problem.penalties:
        e, c = pn.expression(M)
        expr = expr + e
        cons += c
    return expr, cons


class Blocks:
    """The three compiled block problems of a :class:`TrainingProblem`.

    Built once; each ``solve_*`` sets the Parameters and re-solves (DPP, no rebuild).
    DCP and DPP are checked when the blocks are built.
    """

    def __init__(self, problem: TrainingProblem):
        self.problem = pb = problem
        n, p, q, m = pb.n, pb.p, pb.q, pb.m
        U, Y = pb.U, pb.Y
        ones = np.ones((1, m))
        # parameters holding the current values of fixed matrices
        self.A = cp.Parameter((n, n), name="A_fixed")
        self.B = cp.Parameter((n, p), name="B_fixed")
        self.C = cp.Parameter((q, n), name="C_fixed")
        self.D = cp.Parameter((q, p), name="D_fixed")
        self.X = cp.Parameter((n, m), name="X_fixed")
        # ---- (C, D) block
        Cv, Dv = cp.Variable((q, n), name="C"), cp.Variable((q, p), name="D")
        dv = cp.Variable((q, 1), name="d") if pb.bias else None
        Yhat = Cv @ self.X + Dv @ U + (dv @ ones if dv is not None else 0)
        pen, pcons = _penalty_terms(pb, {"A": self.A, "B": self.B, "C": Cv, "D": Dv})
        cons = list(pcons)
        if pb.bounds.C is not None:
            cons += _inf_ball(Cv, pb.bounds.C)
        if pb.bounds.D is not None:
            cons += _inf_ball(Dv, pb.bounds.D)
        self.cd = cp.Problem(cp.Minimize(pb.loss.cvxpy(Y, Yhat, m) + pen), cons)
        self.cd_vars = (Cv, Dv, dv)
        self.W = cp.Parameter((n, m), name="BU_plus_b")  # B U + b 1^T
        self.G = cp.Parameter((n, m), name="linear")  # Lam (B U + b) + S+ Xbar
        self.Sm = cp.Parameter((n, n), name="S_minus_sqrt")
        self.R = cp.Parameter((q, m), name="D_U_plus_d")
        # <Lam X, A X + B U + b 1^T> = <A, Lam X X^T> + <B, Lam X U^T> + <b, Lam X 1>
        self.TA = cp.Parameter((n, n), name="lam_X_Xt")
        self.TB = cp.Parameter((n, p), name="lam_X_Ut")
        self.Tb = cp.Parameter((n, 1), name="lam_X_1")
        self.lam: Array | None = None
        self._check("(C, D)", self.cd)

    def build_stage(self, lam: Array) -> None:
        """(Re)build the (A, B) and X blocks for the weights ``lam`` of a new stage.

        lam multiplies convex functions of expressions that contain Parameters, which DPP
        does not allow as a Parameter; it is a constant of the blocks instead, so these two
        blocks are compiled once per lam stage (and re-solved with new Parameter values at
        every sweep of the stage).
        """
        pb = self.problem
        n, p, m = pb.n, pb.p, pb.m
        U = pb.U
        ones = np.ones((1, m))
        self.lam = lam = np.array(lam, dtype=float, copy=True)
        w = lam[:, None]
        # ---- (A, B) block
        Av, Bv = cp.Variable((n, n), name="A"), cp.Variable((n, p), name="B")
        bv = cp.Variable((n, 1), name="b") if pb.bias else None
        Z = Av @ self.X + Bv @ U + (bv @ ones if bv is not None else 0)
        fz = _weighted(_fstar_terms(pb.activation, n, Z), w)
        lin = cp.sum(cp.multiply(Av, self.TA)) + cp.sum(cp.multiply(Bv, self.TB))
        if bv is not None:
            lin = lin + cp.sum(cp.multiply(bv, self.Tb))
        pen, pcons = _penalty_terms(pb, {"A": Av, "B": Bv, "C": self.C, "D": self.D})
        gammas = _gammas(pb.activation, n)
        cons = [cp.multiply(gammas[:, None], cp.sum(cp.abs(Av), axis=1, keepdims=True))
                <= pb.kappa] + list(pcons)
        if pb.bounds.B is not None:
            cons += _inf_ball(Bv, pb.bounds.B)
            if bv is not None:
                cons += [cp.abs(bv) <= pb.bounds.B]
        self.ab = cp.Problem(cp.Minimize((fz - lin) / m + pen), cons)
        self.ab_vars = (Av, Bv, bv)
        # ---- X block (DCA majorization)
        Xv = cp.Variable((n, m), name="X")
        Zx = self.A @ Xv + self.W
        fx_terms, fcons = _f_terms(pb.activation, n, Xv)
        obj = (pb.loss.cvxpy(pb.Y, self.C @ Xv + self.R, m)
               + (_weighted(fx_terms, w) + _weighted(_fstar_terms(pb.activation, n, Zx), w)
                  - cp.sum(cp.multiply(Xv, self.G))
                  + 0.5 * cp.sum_squares(self.Sm @ Xv)) / m)
        self.x = cp.Problem(cp.Minimize(obj), fcons)
        self.x_var = Xv
        self._check("(A, B)", self.ab)
        self._check("X", self.x)

    @staticmethod
    def _check(name: str, prob: cp.Problem) -> None:
        if not prob.is_dcp():
            raise NotConvexError(f"the {name} block is not DCP; a penalty or constraint is "
                                 "not convex in the block's variables.")
        if not prob.is_dcp(dpp=True):
            raise NotConvexError(f"the {name} block is not DPP (it could not be compiled "
                                 "once and re-solved); a penalty uses a fixed matrix "
                                 "nonlinearly. Write it with the block's own variables.")

    # -- setting parameters -------------------------------------------------------------------
    def set_model(self, A, B, C, D):
        self.A.value, self.B.value, self.C.value, self.D.value = A, B, C, D

    def x_parameters(self, A, B, b, C, D, d, X, lam):
        pb = self.problem
        if self.lam is None or not np.array_equal(lam, self.lam):
            self.build_stage(lam)
        W = B @ pb.U + b[:, None]
        M = lam[:, None] * A
        M = M + M.T
        w, Q = np.linalg.eigh(M)
        Sp = (Q * np.maximum(w, 0.0)) @ Q.T
        self.W.value = W
        self.G.value = lam[:, None] * W + Sp @ X
        self.Sm.value = (Q * np.sqrt(np.maximum(-w, 0.0))) @ Q.T
        self.R.value = D @ pb.U + d[:, None]
        self.A.value, self.C.value = A, C

    def ab_parameters(self, X, lam, C, D):
        if self.lam is None or not np.array_equal(lam, self.lam):
            self.build_stage(lam)
        self.X.value = X
        LX = lam[:, None] * X
        self.TA.value = LX @ X.T
        self.TB.value = LX @ self.problem.U.T
        self.Tb.value = LX.sum(axis=1, keepdims=True)
        self.C.value, self.D.value = C, D

    def cd_parameters(self, X, A, B):
        self.X.value = X
        self.A.value, self.B.value = A, B


def _gammas(phi: Activation, n: int) -> Array:
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    return np.concatenate([np.full(size, act.lipschitz) for size, act in parts])
