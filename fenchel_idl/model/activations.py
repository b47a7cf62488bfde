"""Activation maps phi, with their Lipschitz data and Fenchel divergences.

Each activation is a small immutable value that knows

- its value ``phi(z)`` and its derivative (as a vector-Jacobian product, for gradients);
- its Lipschitz data: the constant ``gamma`` and the norm ``p`` of the BLIP condition
  (section 2.1 of the paper);
- its **Fenchel divergence** ``F(x, z) = f(x) + f*(z) - x z >= 0`` where ``phi = grad f*``,
  which is zero exactly when ``x = phi(z)`` (section 6.3, equation (6.8) for ReLU), both in
  numpy and as a CVXPY expression that is convex in each argument when the other is fixed.

Arrays follow the paper's convention: states are rows, samples are columns, so ``z`` has
shape (k, m) and a componentwise map acts entrywise.

A :class:`Blockwise` map puts several activations side by side on a partition
``n = n_1 + ... + n_L`` of the state (the BLIP structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, logsumexp, xlogy
from scipy.special import softmax as _softmax

from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.validation import check_int, check_real

__all__ = [
    "Activation",
    "Blockwise",
    "CvxTerm",
    "Identity",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "get_activation",
]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class CvxTerm:
    """A CVXPY expression with the domain constraints that go with it.

    Attributes
    ----------
    expr : cvxpy.Expression
        Elementwise divergence, shape (k, m) for a componentwise map, (m,) for a vector map.
    constraints : list of cvxpy.Constraint
        Domain constraints of ``f`` (for example ``x >= 0`` for ReLU).
    """

    expr: Any
    constraints: list


class Activation:
    """Base class of activation maps. Subclasses are frozen dataclasses."""

    name: ClassVar[str] = "activation"
    componentwise: ClassVar[bool] = True
    #: Whether phi(t z) = t phi(z) for t >= 0 (needed by :func:`fenchel_idl.rescale`).
    positively_homogeneous: ClassVar[bool] = False
    #: Norm p of the BLIP condition for this block.
    norm: ClassVar[float] = np.inf

    # -- values ---------------------------------------------------------------------------
    def __call__(self, z: Array) -> Array:
        raise NotImplementedError

    def apply_(self, z: Array) -> Array:
        """phi(z) written over the float array z (the fixed-point loops' buffers); returns z."""
        z[...] = self(z)
        return z

    def derivative(self, z: Array) -> Array:
        """Entrywise derivative phi'(z) (componentwise maps only)."""
        raise NotImplementedError

    def vjp(self, z: Array, v: Array) -> Array:
        """Vector-Jacobian product J_phi(z)^T v, column by column. Shapes (k, m)."""
        return self.derivative(z) * v

    @property
    def lipschitz(self) -> float:
        """Lipschitz constant gamma with respect to the norm :attr:`norm`."""
        raise NotImplementedError

    # -- Fenchel divergence ---------------------------------------------------------------
    def fenchel(self, x: Array, z: Array) -> Array:
        """Fenchel divergence F(x, z) = f(x) + f*(z) - x z, entrywise (inf off the domain)."""
        raise NotImplementedError

    def fenchel_cvxpy(self, x: Any, z: Any) -> CvxTerm:
        """The same divergence as a CVXPY expression plus domain constraints.

        Convex in x for fixed z and in z for fixed x (biconvex), not jointly. When the fixed
        argument is a numeric constant (no ``cp.Parameter``), the expression is a form in
        which no two large terms cancel (:meth:`_fenchel_fixed_z`, :meth:`_fenchel_fixed_x`),
        so its value keeps its digits at large arguments as :meth:`fenchel` does; when both
        are numeric it is the constant :meth:`fenchel`. Otherwise (a Parameter, as in a
        DPP block, or two variables) it is the literal f(x) + f*(z) - x z.
        """
        x, z = _expression(x), _expression(z)
        xv, zv = _numeric(x), _numeric(z)
        if xv is not None and zv is not None:
            return CvxTerm(cp.Constant(self.fenchel(xv, zv)), [])
        term = None
        if zv is not None:
            term = self._fenchel_fixed_z(x, zv)
        elif xv is not None:
            term = self._fenchel_fixed_x(xv, z)
        return self._fenchel_literal(x, z) if term is None else term

    def _fenchel_literal(self, x: Any, z: Any) -> CvxTerm:
        """f(x) + f*(z) - x z, as written (paper (6.8) and its generalization)."""
        fx = self.f_cvxpy(x)
        return CvxTerm(fx.expr + self.fstar_cvxpy(z) - cp.multiply(x, z), fx.constraints)

    def _fenchel_fixed_z(self, x: Any, z: Array) -> CvxTerm | None:
        """A stable form of F(., z), convex in the expression x, for numeric z (None: use
        the literal form)."""
        return None

    def _fenchel_fixed_x(self, x: Array, z: Any) -> CvxTerm | None:
        """A stable form of F(x, .), convex in the expression z, for numeric x (None: use
        the literal form)."""
        return None

    def f_cvxpy(self, x: Any) -> CvxTerm:
        """f(x) entrywise as a CVXPY expression, with the constraints of its domain."""
        raise NotImplementedError

    def fstar_cvxpy(self, z: Any) -> Any:
        """f*(z) entrywise as a CVXPY expression (phi = grad f*)."""
        raise NotImplementedError

    # -- misc -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name}

    def solve_scalar(self, a: Array, c: Array) -> Array:
        """Solve x = phi(a x + c) entrywise, for a * sup(phi') < 1 (unique root).

        Used by the exact triangular solver (Remark 2.5). The generic method bisects on the
        increasing function x - phi(a x + c) over the range of phi.
        """
        lo, hi = self.range_
        a = np.broadcast_to(a, c.shape)
        lo_arr = np.full(c.shape, lo)
        hi_arr = np.full(c.shape, hi)
        for _ in range(80):
            mid = 0.5 * (lo_arr + hi_arr)
            g = mid - self(a * mid + c)
            up = g > 0
            hi_arr = np.where(up, mid, hi_arr)
            lo_arr = np.where(up, lo_arr, mid)
        return 0.5 * (lo_arr + hi_arr)

    range_: ClassVar[tuple[float, float]] = (-np.inf, np.inf)

    def scalar_well_posed(self, a: Array) -> NDArray[np.bool_]:
        """Whether x = phi(a x + c) has a unique solution for every c (sufficient test)."""
        return np.asarray(a) * self.lipschitz < 1.0


def _floats(x: Any, z: Any) -> tuple[Array, Array]:
    """The two arguments of a divergence as float arrays."""
    return np.asarray(x, dtype=float), np.asarray(z, dtype=float)


def _two_product(a: Any, b: Array) -> tuple[Array, Array]:
    """(p, e) with p = fl(a b) and p + e = a b exactly (Dekker's product by splitting), so
    that x - a b keeps its digits when x and a b nearly cancel."""
    def split(v):
        c = 134217729.0 * v  # 2^27 + 1
        hi = c - (c - v)
        return hi, v - hi

    a = np.asarray(a, dtype=float)
    p = a * b
    with np.errstate(over="ignore", invalid="ignore"):
        ah, al = split(a)
        bh, bl = split(b)
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, np.where(np.isfinite(e), e, 0.0)


def _expression(v: Any) -> Any:
    """v as a CVXPY expression (numbers and arrays become float constants)."""
    return v if isinstance(v, cp.Expression) else cp.Constant(np.asarray(v, dtype=float))


def _numeric(v: Any) -> Array | None:
    """The float value of a constant expression without Parameters, else None."""
    if not v.is_constant() or v.parameters() or v.value is None:
        return None
    return np.asarray(v.value, dtype=float)


def _huber(d: Any, c: Array) -> Any:
    """Elementwise Huber function ``d^2`` for ``|d| <= c`` and ``2 c |d| - c^2`` beyond, for
    a constant c (0 or >= 1) of d's shape, as CVXPY ``c^2 huber(d / c, 1)`` (its ``huber``
    takes one scalar M); 0 where c = 0. With c >= 1 no coefficient 1/c exceeds 1."""
    on = c > 0
    w = np.where(on, c, 0.0)
    return cp.multiply(w, cp.multiply(w, cp.huber(cp.multiply(1.0 / np.where(on, c, 1.0), d),
                                                  1.0)))


def _bregman_two_slopes(d: Any, y: Array, p: float, q: float) -> Any:
    """The Bregman divergence of g(t) = p t_+^2 / 2 + q t_-^2 / 2 between y + d and y, for
    a constant y and an expression d, as convex terms of d itself (no two terms of the size
    of y cancel). With lo < hi the two curvatures:

    - y on the low-curvature half (or 0): lo/2 d^2 + (hi - lo)/2 (y + d)_far^2, where
      ``far`` is the part on the high-curvature half;
    - y on the high-curvature half, |y| >= 1: the sum over the halves of their own
      divergences, p/2 [H(d, y_+) + (d - |y|)_+^2] + q/2 [H(d, y_-) + (-d - |y|)_+^2]
      (H of :func:`_huber`; the half that holds y is quadratic in d up to y's side of 0
      and linear beyond, the other half is the square of y + d on its side);
    - y on the high-curvature half, |y| < 1: the literal g(y + d) - g(y) - g'(y) d, whose
      terms are not large there (and no Huber coefficient 1/|y| grows without bound).
    """
    y = np.broadcast_to(np.asarray(y, dtype=float), d.shape)
    x = d + y
    low = (y >= 0) if p <= q else (y <= 0)
    huber = ~low & (np.abs(y) >= 1.0)
    literal = ~low & ~huber
    far = cp.neg(x) if p <= q else cp.pos(x)
    parts = [(low, 0.5 * min(p, q) * cp.square(d) + 0.5 * abs(q - p) * cp.square(far))]
    if np.any(huber):
        yp = np.where(huber, np.maximum(y, 0.0), 0.0)
        ym = np.where(huber, np.maximum(-y, 0.0), 0.0)
        ay = np.abs(y)
        parts.append((huber, 0.5 * p * (_huber(d, yp) + cp.square(cp.pos(d - ay)))
                      + 0.5 * q * (_huber(d, ym) + cp.square(cp.pos(-d - ay)))))
    if np.any(literal):
        yp, ym = np.maximum(y, 0.0), np.maximum(-y, 0.0)
        g_y = 0.5 * p * yp ** 2 + 0.5 * q * ym ** 2
        parts.append((literal, 0.5 * p * cp.square(cp.pos(x)) + 0.5 * q * cp.square(cp.neg(x))
                      - g_y - cp.multiply(p * yp - q * ym, d)))
    if np.all(low):
        return parts[0][1]
    return sum(cp.multiply(mask.astype(float), expr) for mask, expr in parts if np.any(mask))


def _lse2(a: Any, b: Any) -> Any:
    """Elementwise log(exp(a) + exp(b)) of two expressions of one shape (convex); its value
    is computed by scipy's logsumexp, which subtracts the larger argument first."""
    shape = a.shape
    pair = cp.vstack([cp.vec(a, order="F"), cp.vec(b, order="F")])
    return cp.reshape(cp.log_sum_exp(pair, axis=0), shape, order="F")


@dataclass(frozen=True)
class ReLU(Activation):
    """phi(z) = max(z, 0). A CONE map; F is equation (6.8): x^2/2 + (z_+)^2/2 - x z, x >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> relu = ReLU()
    >>> relu(np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    >>> float(relu.fenchel(np.array(2.0), np.array(2.0)))
    0.0
    """

    name: ClassVar[str] = "relu"
    lipschitz: ClassVar[float] = 1.0  # type: ignore[assignment]
    positively_homogeneous: ClassVar[bool] = True

    def __call__(self, z):
        return np.maximum(z, 0.0)

    def apply_(self, z):
        return np.maximum(z, 0.0, out=z)

    def derivative(self, z):
        return (z > 0).astype(np.float64)

    def fenchel(self, x, z):
        """(6.8) in the stable form 0.5 (x - z_+)^2 + x z_- (z = z_+ - z_-): a sum of
        nonnegative terms, where the literal form cancels digits (it returns 0 for
        F(1e8 + 1, 1e8) = 0.5)."""
        x, z = _floats(x, z)
        val = 0.5 * (x - np.maximum(z, 0.0)) ** 2 + x * np.maximum(-z, 0.0)
        return np.where(x >= 0, val, np.inf)

    def fenchel_cvxpy(self, x, z):
        """(6.8) in the stable form of :meth:`fenchel`. For fixed z it is
        0.5 (x - z_+)^2 + z_- x; for fixed x >= 0 it is the minimum over t >= max(z, 0) of
        0.5 (t - x)^2 + x (t - z), written with an auxiliary variable t (the minimum is at
        t = z_+), so the term is exact inside a minimization."""
        x = x if isinstance(x, cp.Expression) else cp.Constant(np.asarray(x, dtype=float))
        z = z if isinstance(z, cp.Expression) else cp.Constant(np.asarray(z, dtype=float))
        if x.is_constant() and z.is_constant() and x.value is not None \
                and z.value is not None and not x.parameters() and not z.parameters():
            return CvxTerm(cp.Constant(self.fenchel(x.value, z.value)), [])
        if z.is_constant():
            expr = 0.5 * cp.square(x - cp.pos(z)) + cp.multiply(cp.neg(z), x)
            return CvxTerm(expr, [] if x.is_constant() else [x >= 0])
        if x.is_constant():
            t = cp.Variable(z.shape, name="relu_divergence_t")
            expr = 0.5 * cp.square(t - x) + cp.multiply(x, t - z)
            return CvxTerm(expr, [t >= z, t >= 0])
        return super().fenchel_cvxpy(x, z)

    def f_cvxpy(self, x):
        x = x if isinstance(x, cp.Expression) else cp.Constant(np.asarray(x, dtype=float))
        return CvxTerm(0.5 * cp.square(x), [] if x.is_constant() else [x >= 0])

    def fstar_cvxpy(self, z):
        return 0.5 * cp.square(cp.pos(z))

    def solve_scalar(self, a, c):
        return np.maximum(c, 0.0) / (1.0 - a)


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """phi(z) = z for z >= 0 and alpha z otherwise, with 0 < alpha < 1.

    f*(z) = z_+^2/2 + alpha z_-^2/2 and f(x) = x_+^2/2 + x_-^2/(2 alpha).
    """

    alpha: float = 0.01
    name: ClassVar[str] = "leaky_relu"
    lipschitz: ClassVar[float] = 1.0  # type: ignore[assignment]
    positively_homogeneous: ClassVar[bool] = True

    def __post_init__(self):
        check_real("alpha", self.alpha, 0.0, 1.0, low_open=True, high_open=True)

    def __call__(self, z):
        return np.where(z >= 0, z, self.alpha * z)

    def derivative(self, z):
        return np.where(z > 0, 1.0, self.alpha)

    def fenchel(self, x, z):
        """F = 0.5 (x_+ - z_+)^2 + (x_- - alpha z_-)^2 / (2 alpha) + x_+ z_- + x_- z_+: the
        literal f(x) + f*(z) - x z regrouped into nonnegative terms (no cancellation)."""
        x, z = _floats(x, z)
        xp, xm = np.maximum(x, 0.0), np.maximum(-x, 0.0)
        zp, zm = np.maximum(z, 0.0), np.maximum(-z, 0.0)
        a = self.alpha
        prod, err = _two_product(a, zm)  # alpha z_- = prod + err exactly
        return 0.5 * (xp - zp) ** 2 + ((xm - prod) - err) ** 2 / (2.0 * a) + xp * zm + xm * zp

    def _fenchel_fixed_z(self, x, z):
        """F(x, z) = the Bregman divergence of f between x and y = phi(z) (f' = phi^-1),
        in the terms of :func:`_bregman_two_slopes` of d = x - y (curvature 1 for x > 0,
        1/alpha below); alpha z_- enters exactly (Dekker's product), so d keeps its digits
        when x and phi(z) nearly cancel."""
        prod, err = _two_product(self.alpha, np.maximum(-z, 0.0))  # alpha z_- = prod + err
        y = np.maximum(z, 0.0) - prod  # phi(z) = y - err
        return CvxTerm(_bregman_two_slopes(x - y + err, y, 1.0, 1.0 / self.alpha), [])

    def _fenchel_fixed_x(self, x, z):
        """F(x, z) = the Bregman divergence of f* between z and z0 = phi^-1(x) (curvature
        1 for z > 0, alpha below), with x_- / alpha carried as a rounded quotient plus
        its exact remainder."""
        xm = np.maximum(-x, 0.0)
        quo = xm / self.alpha
        prod, err = _two_product(self.alpha, quo)
        rem = ((xm - prod) - err) / self.alpha  # x_- / alpha = quo + rem
        z0 = np.maximum(x, 0.0) - quo  # phi^-1(x) = z0 - rem
        return CvxTerm(_bregman_two_slopes(z - z0 + rem, z0, 1.0, self.alpha), [])

    def f_cvxpy(self, x):
        return CvxTerm(0.5 * cp.square(cp.pos(x)) + (0.5 / self.alpha) * cp.square(cp.neg(x)), [])

    def fstar_cvxpy(self, z):
        return 0.5 * cp.square(cp.pos(z)) + (0.5 * self.alpha) * cp.square(cp.neg(z))

    def to_dict(self):
        return {"name": self.name, "alpha": float(self.alpha)}

    def solve_scalar(self, a, c):
        return np.where(c >= 0, c / (1.0 - a), self.alpha * c / (1.0 - self.alpha * a))


@dataclass(frozen=True)
class Identity(Activation):
    """phi(z) = z. f = f* = (.)^2/2 and F(x, z) = (x - z)^2 / 2."""

    name: ClassVar[str] = "identity"
    lipschitz: ClassVar[float] = 1.0  # type: ignore[assignment]
    positively_homogeneous: ClassVar[bool] = True

    def __call__(self, z):
        return np.array(z, dtype=float, copy=True)

    def apply_(self, z):
        return z

    def derivative(self, z):
        return np.ones_like(z, dtype=float)

    def fenchel(self, x, z):
        d = np.asarray(x, dtype=float) - np.asarray(z, dtype=float)
        return 0.5 * d * d

    def f_cvxpy(self, x):
        return CvxTerm(0.5 * cp.square(x), [])

    def fstar_cvxpy(self, z):
        return 0.5 * cp.square(z)

    def solve_scalar(self, a, c):
        return c / (1.0 - a)


def _log_cosh(z):
    az = np.abs(z)
    return az + np.log1p(np.exp(-2.0 * az)) - np.log(2.0)


@dataclass(frozen=True)
class Tanh(Activation):
    """phi(z) = tanh z. f*(z) = log cosh z; f(x) = ((1+x)log(1+x) + (1-x)log(1-x))/2, |x| <= 1."""

    name: ClassVar[str] = "tanh"
    lipschitz: ClassVar[float] = 1.0  # type: ignore[assignment]
    range_: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def __call__(self, z):
        return np.tanh(z)

    def apply_(self, z):
        return np.tanh(z, out=z)

    def derivative(self, z):
        t = np.tanh(z)
        return 1.0 - t * t

    def fenchel(self, x, z):
        x, z = _floats(x, z)
        inside = np.abs(x) <= 1.0
        xc = np.clip(x, -1.0, 1.0)
        # f(x) - log 2, without the constant log 2 that f(x) nearly equals at |x| -> 1
        fx_log2 = 0.5 * (xlogy(1.0 + xc, 0.5 * (1.0 + xc)) + xlogy(1.0 - xc, 0.5 * (1.0 - xc)))
        # log cosh z - x z = |z| - x z + log1p(exp(-2|z|)) - log 2, and |z| - x z =
        # (1 - x) z_+ + (1 + x) z_-: no cancellation of two terms of size |z|
        zp, zm = np.maximum(z, 0.0), np.maximum(-z, 0.0)
        val = (fx_log2 + np.log1p(np.exp(-2.0 * np.abs(z)))
               + (1.0 - xc) * zp + (1.0 + xc) * zm)
        return np.where(inside, np.maximum(val, 0.0), np.inf)

    def _fenchel_fixed_z(self, x, z):
        """F = f(x) - log 2 + log1p(e^{-2|z|}) + (1 - x) z_+ + (1 + x) z_- (as
        :meth:`fenchel`): convex in x, the terms of size |z| multiply 1 -+ x, which are
        exact near the bounds, and f(x) - log 2 is (rel_entr(1 + x, 2) + rel_entr(1 - x, 2))
        / 2, without the constant log 2 that f(x) nearly equals there."""
        two = np.full(x.shape, 2.0)
        fx = 0.5 * (cp.rel_entr(1 + x, two) + cp.rel_entr(1 - x, two))
        rest = np.log1p(np.exp(-2.0 * np.abs(z)))
        return CvxTerm(fx + rest + cp.multiply(np.maximum(z, 0.0), 1 - x)
                       + cp.multiply(np.maximum(-z, 0.0), 1 + x), [])

    def _fenchel_fixed_x(self, x, z):
        """F = f(x) - log 2 + log(e^{(1 - x) z} + e^{-(1 + x) z}) (log cosh z - x z with
        its linear parts cancelled analytically), convex in z; the log-sum-exp is
        evaluated shifted by its larger argument. Outside |x| <= 1 the literal form."""
        if np.any(np.abs(x) > 1.0):
            return None
        fx = 0.5 * (xlogy(1.0 + x, 0.5 * (1.0 + x)) + xlogy(1.0 - x, 0.5 * (1.0 - x)))
        return CvxTerm(fx + _lse2(cp.multiply(1.0 - x, z), cp.multiply(-(1.0 + x), z)), [])

    def f_cvxpy(self, x):
        return CvxTerm(-0.5 * (cp.entr(1 + x) + cp.entr(1 - x)), [])

    def fstar_cvxpy(self, z):
        # log cosh z = z + log(1 + exp(-2 z)) - log 2
        return z + cp.logistic(-2 * z) - np.log(2.0)


@dataclass(frozen=True)
class Sigmoid(Activation):
    """phi(z) = 1/(1+exp(-z)). f*(z) = log(1+e^z); f(x) = x log x + (1-x) log(1-x), 0 <= x <= 1.

    Its Lipschitz constant is 1/4.
    """

    name: ClassVar[str] = "sigmoid"
    lipschitz: ClassVar[float] = 0.25  # type: ignore[assignment]
    range_: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __call__(self, z):
        return expit(z)

    def apply_(self, z):
        return expit(z, out=z)

    def derivative(self, z):
        s = expit(z)
        return s * (1.0 - s)

    def fenchel(self, x, z):
        x, z = _floats(x, z)
        inside = (x >= 0.0) & (x <= 1.0)
        xc = np.clip(x, 0.0, 1.0)
        fx = xlogy(xc, xc) + xlogy(1.0 - xc, 1.0 - xc)
        # log(1 + e^z) - x z = log1p(e^-|z|) + (1 - x) z_+ + x z_- (no cancellation)
        zp, zm = np.maximum(z, 0.0), np.maximum(-z, 0.0)
        val = fx + np.log1p(np.exp(-np.abs(z))) + (1.0 - xc) * zp + xc * zm
        return np.where(inside, np.maximum(val, 0.0), np.inf)

    def _fenchel_fixed_z(self, x, z):
        """F = f(x) + log1p(e^{-|z|}) + (1 - x) z_+ + x z_- (as :meth:`fenchel`), convex
        in x; the terms of size |z| multiply 1 - x or x, never cancel each other."""
        rest = np.log1p(np.exp(-np.abs(z)))
        return CvxTerm(-(cp.entr(x) + cp.entr(1 - x)) + rest
                       + cp.multiply(np.maximum(z, 0.0), 1 - x)
                       + cp.multiply(np.maximum(-z, 0.0), x), [])

    def _fenchel_fixed_x(self, x, z):
        """F = f(x) + log(e^{-x z} + e^{(1 - x) z}) (log(1 + e^z) - x z with its linear
        part cancelled analytically), convex in z. Outside 0 <= x <= 1 the literal form."""
        if np.any((x < 0.0) | (x > 1.0)):
            return None
        fx = xlogy(x, x) + xlogy(1.0 - x, 1.0 - x)
        return CvxTerm(fx + _lse2(cp.multiply(-x, z), cp.multiply(1.0 - x, z)), [])

    def f_cvxpy(self, x):
        return CvxTerm(-(cp.entr(x) + cp.entr(1 - x)), [])

    def fstar_cvxpy(self, z):
        return cp.logistic(z)


@dataclass(frozen=True)
class Softmax(Activation):
    """phi(z) = exp(z) / sum(exp(z)) over a block; 1-Lipschitz in the l1 norm (section 2.1).

    f*(z) = log sum exp(z); f(x) = sum x log x on the simplex. :meth:`fenchel` returns one
    value per column (sample), shape (m,).
    """

    name: ClassVar[str] = "softmax"
    lipschitz: ClassVar[float] = 1.0  # type: ignore[assignment]
    componentwise: ClassVar[bool] = False
    norm: ClassVar[float] = 1.0

    def __call__(self, z):
        return _softmax(z, axis=0)

    def derivative(self, z):
        raise ValidationError("softmax is not componentwise: use 'vjp' instead of 'derivative'.")

    def vjp(self, z, v):
        s = _softmax(z, axis=0)
        return s * (v - np.sum(s * v, axis=0, keepdims=True))

    def fenchel(self, x, z):
        x, z = _floats(x, z)
        if x.ndim == 1:
            x, z = x[:, None], z[:, None]
        inside = np.all(x >= 0, axis=0) & np.isclose(np.sum(x, axis=0), 1.0, atol=1e-9)
        xc = np.clip(x, 0.0, None)
        # logsumexp(z) - <x, z> with z shifted by its column maximum (sum x = 1 on the
        # simplex), so two terms of the size of max z do not cancel
        zs = z - np.max(z, axis=0, keepdims=True)
        val = (np.sum(xlogy(xc, xc), axis=0) + logsumexp(zs, axis=0)
               - np.sum(xc * zs, axis=0) + (1.0 - np.sum(xc, axis=0)) * np.max(z, axis=0))
        return np.where(inside, np.maximum(val, 0.0), np.inf)

    def fenchel_cvxpy(self, x, z):
        """One value per column: shape (m,) for (k, m) arguments, a scalar for (k,) ones
        (see :meth:`Activation.fenchel_cvxpy` for the forms)."""
        term = super().fenchel_cvxpy(x, z)
        if len(_expression(x).shape) == 1 and term.expr.shape == (1,):
            return CvxTerm(cp.reshape(term.expr, ()), term.constraints)
        return term

    def _fenchel_literal(self, x, z):
        if len(x.shape) == 1:
            expr = -cp.sum(cp.entr(x)) + cp.log_sum_exp(z) - x @ z
            cons = [cp.sum(x) == 1] if not x.is_constant() else []
        else:
            expr = (-cp.sum(cp.entr(x), axis=0) + cp.log_sum_exp(z, axis=0)
                    - cp.sum(cp.multiply(x, z), axis=0))
            cons = [cp.sum(x, axis=0) == 1] if not x.is_constant() else []
        return CvxTerm(expr, cons)

    def _fenchel_fixed_z(self, x, z):
        """As :meth:`fenchel`: z shifted by its column maximum, plus (1 - sum x) max z
        (zero on the simplex, which the constraint imposes)."""
        top = np.max(z, axis=0)
        zs = z - top
        if len(x.shape) == 1:
            expr = (-cp.sum(cp.entr(x)) + logsumexp(zs) - x @ zs + top * (1 - cp.sum(x)))
            return CvxTerm(expr, [cp.sum(x) == 1])
        expr = (-cp.sum(cp.entr(x), axis=0) + logsumexp(zs, axis=0)
                - cp.sum(cp.multiply(x, zs), axis=0) + cp.multiply(top, 1 - cp.sum(x, axis=0)))
        return CvxTerm(expr, [cp.sum(x, axis=0) == 1])

    def _fenchel_fixed_x(self, x, z):
        """For x on the simplex, F = sum x log x + lse_j(sum_i x_i (z_j - z_i)) (lse(z) -
        <x, z> with sum x = 1), convex in z: the differences z_j - z_i are formed before
        they are weighted, so z's common level cancels exactly. Off the simplex (beyond
        the tolerance of :meth:`fenchel`), the literal form."""
        x2 = x if x.ndim == 2 else x[:, None]
        if np.any(x2 < 0) or not np.allclose(np.sum(x2, axis=0), 1.0, rtol=0.0, atol=1e-9):
            return None
        ent = np.sum(xlogy(x2, x2), axis=0)
        if x.ndim == 1:
            diff = sum(float(x[i]) * (z - z[i]) for i in range(len(x)) if x[i] != 0)
            return CvxTerm(float(ent[0]) + cp.log_sum_exp(diff), [])
        k = x.shape[0]
        diff = sum(cp.multiply(np.tile(x[i], (k, 1)), z - np.ones((k, 1)) @ z[i:i + 1, :])
                   for i in range(k))
        return CvxTerm(ent + cp.log_sum_exp(diff, axis=0), [])

    def solve_scalar(self, a, c):  # pragma: no cover - a softmax block is never scalar
        raise ValidationError("softmax blocks have no scalar solve.")

    def scalar_well_posed(self, a):
        return np.zeros(np.shape(a), dtype=bool)


_NAMED: dict[str, type[Activation]] = {
    cls.name: cls for cls in (ReLU, LeakyReLU, Tanh, Sigmoid, Identity, Softmax)
}


@dataclass(frozen=True)
class Blockwise(Activation):
    """A blockwise (BLIP) map: ``phi(z) = (phi_1(z_1), ..., phi_L(z_L))``.

    Parameters
    ----------
    blocks : sequence of (int, Activation or str)
        The block sizes ``n_l`` and their maps, in state order.

    Examples
    --------
    >>> phi = Blockwise([(2, "relu"), (3, "softmax")])
    >>> phi.n
    5
    """

    blocks: tuple = ()
    name: ClassVar[str] = "blockwise"

    def __post_init__(self):
        if not isinstance(self.blocks, (list, tuple)) or len(self.blocks) == 0:
            raise ValidationError("'blocks' must be a non-empty sequence of (size, activation) "
                                  f"pairs; got {self.blocks!r}.")
        norm = []
        for i, blk in enumerate(self.blocks):
            if not isinstance(blk, (list, tuple)) or len(blk) != 2:
                raise ValidationError(f"'blocks[{i}]' must be a (size, activation) pair; "
                                      f"got {blk!r}.")
            size = check_int(f"blocks[{i}] size", blk[0], low=1)
            act = get_activation(blk[1])
            if isinstance(act, Blockwise):
                norm.extend(act.blocks)
                if act.n != size:
                    raise ValidationError(f"'blocks[{i}]' has size {size} but its blockwise map "
                                          f"covers {act.n} states.")
            else:
                norm.append((size, act))
        # merge neighbouring componentwise blocks that share a map
        merged: list[tuple[int, Activation]] = []
        for size, act in norm:
            if merged and act.componentwise and merged[-1][1] == act:
                merged[-1] = (merged[-1][0] + size, act)
            else:
                merged.append((size, act))
        object.__setattr__(self, "blocks", tuple(merged))

    @property
    def n(self) -> int:
        return sum(size for size, _ in self.blocks)

    @property
    def componentwise(self) -> bool:  # type: ignore[override]
        return all(act.componentwise for _, act in self.blocks)

    @property
    def positively_homogeneous(self) -> bool:  # type: ignore[override]
        return all(act.positively_homogeneous for _, act in self.blocks)

    def slices(self):
        """Yield (slice, activation) pairs in state order."""
        start = 0
        for size, act in self.blocks:
            yield slice(start, start + size), act
            start += size

    def _apply(self, method: str, *arrays):
        out = np.empty_like(arrays[-1], dtype=float)
        for sl, act in self.slices():
            out[sl] = getattr(act, method)(*(a[sl] for a in arrays))
        return out

    def __call__(self, z):
        return self._apply("__call__", np.asarray(z, dtype=float))

    def derivative(self, z):
        return self._apply("derivative", np.asarray(z, dtype=float))

    def vjp(self, z, v):
        return self._apply("vjp", np.asarray(z, dtype=float), np.asarray(v, dtype=float))

    @property
    def lipschitz(self):
        return max(act.lipschitz for _, act in self.blocks)

    def fenchel(self, x, z):
        """Entrywise divergence for componentwise blocks; vector blocks put their per-sample
        value on the block's first row and zeros on the others. Shape (n, m)."""
        x, z = _floats(x, z)
        out = np.zeros(np.broadcast_shapes(x.shape, z.shape))
        for sl, act in self.slices():
            val = act.fenchel(x[sl], z[sl])
            if act.componentwise:
                out[sl] = val
            else:
                out[sl.start] = val
        return out

    def fenchel_cvxpy(self, x, z):
        raise ValidationError("a blockwise map has no single CVXPY divergence; use the blocks' "
                              "own fenchel_cvxpy on their slices (see Blockwise.slices).")

    def scalar_well_posed(self, a):
        a = np.asarray(a, dtype=float)
        out = np.zeros(a.shape, dtype=bool)
        for sl, act in self.slices():
            out[sl] = act.scalar_well_posed(a[sl])
        return out

    def solve_scalar(self, a, c):
        return self._apply("solve_scalar", np.broadcast_to(a, c.shape), c)

    def to_dict(self):
        return {"name": self.name, "blocks": [[size, act.to_dict()] for size, act in self.blocks]}


def get_activation(spec: Any) -> Activation:
    """Return the activation named by ``spec``.

    Parameters
    ----------
    spec : str, dict or Activation
        A name ("relu", "leaky_relu", "tanh", "sigmoid", "identity", "softmax"), a dict
        written by :meth:`Activation.to_dict`, or an activation (returned as is).

    Raises
    ------
    ValidationError
        Unknown name or bad options (for a blockwise dict, also a block size that is not a
        positive integer).
    InputTypeError
        ``spec`` is not a str, dict or Activation.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValidationError(f"'activation' must be one of {sorted(_NAMED)} or an "
                                  f"Activation; got {spec!r}.")
        return _NAMED[spec]()
    if isinstance(spec, dict):
        name = spec.get("name")
        if name == Blockwise.name:
            extra = sorted(set(spec) - {"name", "blocks"})
            if extra:
                raise ValidationError(f"bad options {extra} for activation 'blockwise'; it "
                                      "takes only 'blocks'.")
            blocks = spec.get("blocks", ())
            if isinstance(blocks, list):  # JSON gives lists; Blockwise validates each pair
                blocks = tuple(tuple(b) if isinstance(b, list) else b for b in blocks)
            try:
                return Blockwise(blocks)
            except InputTypeError as exc:  # a wrong type inside a dict is a bad value
                raise ValidationError(f"bad 'blocks' for activation 'blockwise': {exc}") from None
        if name not in _NAMED:
            raise ValidationError(f"'activation' must name one of {sorted(_NAMED)}; got "
                                  f"{name!r}.")
        options = {k: v for k, v in spec.items() if k != "name"}
        try:
            return _NAMED[name](**options)
        except TypeError as exc:
            raise ValidationError(f"bad options {options} for activation {name!r}: {exc}") from None
    raise InputTypeError("'activation' must be a name, a dict or an Activation; got "
                         f"{spec!r} of type {type(spec).__name__}.")


def blip_structure(phi: Activation, n: int) -> tuple[NDArray[np.int64], NDArray[np.float64],
                                                      NDArray[np.float64], bool]:
    """Return (block_starts, gammas, norms, all_scalar) of the BLIP partition of n states.

    Componentwise blocks expand to singletons; vector maps (softmax) are one block each.
    """
    pairs = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    starts, gammas, norms = [], [], []
    pos = 0
    for size, act in pairs:
        if act.componentwise:
            starts.extend(range(pos, pos + size))
            gammas.extend([act.lipschitz] * size)
            norms.extend([np.inf] * size)
        else:
            starts.append(pos)
            gammas.append(act.lipschitz)
            norms.append(act.norm)
        pos += size
    all_scalar = len(starts) == n
    return (np.asarray(starts, dtype=np.int64), np.asarray(gammas, dtype=float),
            np.asarray(norms, dtype=float), all_scalar)


def state_lipschitz(phi: Activation, n: int) -> NDArray[np.float64]:
    """The Lipschitz constant gamma_i of the map acting on each of the n states, shape (n,).

    For a componentwise map gamma_i is that of its scalar function; the states of a vector
    block (softmax) share the block's constant.
    """
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    return np.concatenate([np.full(size, float(act.lipschitz)) for size, act in parts])


def activation_for(phi: Activation, n: int) -> Activation:
    """Check that ``phi`` fits a state of size n (a Blockwise map must cover exactly n)."""
    if isinstance(phi, Blockwise) and phi.n != n:
        raise ValidationError(f"'activation' is blockwise over {phi.n} states but the model "
                              f"has n = {n} states.")
    if not isinstance(phi, Blockwise) and not phi.componentwise and n == 0:
        raise ValidationError("'activation' softmax needs at least one state.")
    return phi


def restrict_activation(phi: Activation, idx: Any) -> Activation:
    """The activation acting on the states ``idx`` (a union of whole blocks of ``phi``).

    A map that is not blockwise acts the same way on every subset of states; a
    :class:`Blockwise` map keeps, in order, each block's map with the number of its states
    in ``idx``.
    """
    if not isinstance(phi, Blockwise):
        return phi
    pieces = []
    idx_set = {int(i) for i in idx}
    for sl, act in phi.slices():
        count = sum(1 for i in range(sl.start, sl.stop) if i in idx_set)
        if count:
            pieces.append((count, act))
    return Blockwise(tuple(pieces))
