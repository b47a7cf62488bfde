"""The (A, B) block of BCD with the Lipschitz penalty (4.7), by certified FISTA.

In the (A, B) block C and D are constants, so the penalty of
:class:`fenchel_idl.problem.penalties.LipschitzBound` is

    P(A, B) = w [ (||B||_inf^2 + c^2) / (2 (1 - ||A||_inf)) + ||D||_inf ],   c = ||C||_inf,

w g(a, b) plus a constant, with a = ||A||_inf, b = ||B||_inf (max row l1 norms) and g
jointly convex and nondecreasing in each argument for a < 1. Its proximal map together with
the block's balls (||A_i||_1 <= r_i = kappa / gamma_i, ||B_i||_1 <= beta_B, |b_i| <= beta_B)
is exact up to a two-dimensional convex problem, in the metric of any row weights omega
(the FISTA steps take one per row): since g is nondecreasing,
``g(||A||, ||B||) = min_{a >= ||A||, b >= ||B||} g(a, b)``, and for fixed radii the nearest
W is the rows' projections on l1 balls, so

    prox(Z) = rows of Z projected on the l1 balls of radii min(a*, r_i) (A) and
              min(b*, beta_B) (B), where (a*, b*) minimizes
    Phi(a, b) = 1/2 sum_i omega_i dist^2(ZA_i, B1(min(a, r_i)))
                + 1/2 sum_i omega_i dist^2(ZB_i, B1(min(b, beta))) + w (b^2 + c^2) / (2 (1 - a)).

d/dr of 1/2 dist^2(z, B1(r)) is minus the projection's soft-threshold level tau(r) =
max(0, max_k (s_k - r) / k) (s_k the sum of the k largest |z_j|), so Phi's derivatives are
closed-form: for fixed a, b* solves w b / (1 - a) = T_B(b) = sum_i omega_i tau_i(b), a
piecewise linear equation solved exactly from its breakpoints; then a* is the root of the
increasing psi'(a) = w (b*(a)^2 + c^2) / (2 (1 - a)^2) - sum_{i: a < r_i} omega_i tau_i(a),
bracketed on one segment of the piecewise linear sum and found there by Brent's method to
machine precision.

The block's proximal term sum_i c_i / 2 ||w_i - w0_i||^2 takes the weights c of
:func:`fenchel_idl.blocks.first_order.ab_prox_rows`, as every (A, B) solver does, so the block
is 1-strongly convex in the norm sum_i c_i ||w_i||^2. The certificate is a true bound whatever
the accuracy of the prox: the smaller of ``sum_i ||e_i||^2 / (2 c_i)`` for the
element e of dF(W) built explicitly by :func:`lipschitz_ab_residual` (smooth gradient, an
element of the subdifferential of w g(||A||_inf, ||B||_inf) by the chain rule, and the
balls' normal cone) and a Fenchel duality gap (:func:`_lipschitz_gap`).

The squared-loss (C, D) block sees the penalty as alpha ||C||_inf^2 + w ||D||_inf plus a
constant (alpha = w / (2 (1 - a))): its prox with the balls is two one-dimensional equations
of the same kind, solved exactly (:func:`fast_cd_lipschitz`, certified by a duality gap).
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from fenchel_idl.blocks.first_order import (
    AB_PROX,
    ab_penalties,
    ab_prox_rows,
    ab_prox_weight,
    fista,
    fista_info,
)
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.problem.losses import SquaredLoss
from fenchel_idl.problem.penalties import LipschitzBound, penalty_reads

__all__ = [
    "fast_ab_lipschitz",
    "fast_cd_lipschitz",
    "lipschitz_ab_apply",
    "lipschitz_ab_prox",
    "lipschitz_ab_residual",
    "lipschitz_cd_apply",
]

Array = NDArray[np.float64]

#: Relative tolerance under which a row's l1 norm counts as equal to a radius (the row is
#: then active in ||.||_inf or on its ball), as for the balls of the other (A, B) blocks.
_ACTIVE = 1e-12


def lipschitz_ab_apply(problem) -> bool:
    """Whether :func:`fast_ab_lipschitz` covers the (A, B) block: ReLU, and the only penalty
    reading A or B is one :class:`LipschitzBound`."""
    pens = ab_penalties(problem)
    return (problem.activation.name == "relu" and len(pens) == 1
            and isinstance(pens[0], LipschitzBound))


def _inf_norm(M: Array) -> float:
    return float(np.abs(M).sum(axis=1).max()) if M.size else 0.0


class _Rows:
    """The sorted rows of Z, for the soft-threshold levels of their projections on l1 balls:
    tau_i(r) = max(0, max_k (s_k - r) / k), s_k the sum of the k largest |z_ij|, convex and
    decreasing in r, and piecewise linear: slope -1/k between the radii s_k - k v_k and
    s_{k+1} - (k+1) v_{k+1} (v the sorted |z_i|), 0 past ||z_i||_1. ``omega`` weighs the
    rows in the sum T."""

    def __init__(self, Z: Array, omega: Array):
        k = Z.shape[1]
        v = -np.sort(-np.abs(Z), axis=1)
        cs = np.cumsum(v, axis=1)
        ks = np.arange(1, k + 1)
        self.inv = 1.0 / ks
        self.q = cs * self.inv
        self.norms = cs[:, -1]
        # the sum T(x) = sum_i omega_i tau_i(x) (every row at radius x): its breakpoints xs
        # (from 0), its values there and its slope after each
        inc = self.inv - np.append(self.inv[1:], 0.0)  # slope change leaving size k
        pos = np.concatenate([(cs - ks * v)[:, 1:], cs[:, -1:]], axis=1).ravel()
        order = np.argsort(pos, kind="stable")
        self.xs = np.concatenate([[0.0], pos[order]])
        incs = (omega[:, None] * inc).ravel()[order]
        self.slopes = -float(omega.sum()) + np.concatenate([[0.0], np.cumsum(incs)])
        T = float(omega @ v[:, 0]) + np.concatenate(
            [[0.0], np.cumsum(self.slopes[:-1] * np.diff(self.xs))])
        self.T = np.maximum(T, 0.0)
        # T(x) / x at the breakpoints x > 0, decreasing: the root of s b = T(b) by search
        with np.errstate(divide="ignore", invalid="ignore"):
            self.ratio = np.where(self.xs[1:] > 0, self.T[1:] / self.xs[1:], np.inf)

    def thresholds(self, radius: Array) -> Array:
        """tau_i at the radii ``radius`` (one per row)."""
        return np.maximum(np.max(self.q - radius[:, None] * self.inv, axis=1), 0.0)

    def root(self, s):
        """The root b >= 0 of s b = T(b) (s b - T(b) increases), for s > 0 (a number or an
        array): on the segment where T(x) / x crosses s, b = (T_j - t_j x_j) / (s - t_j)
        with t_j the segment's slope."""
        j = np.searchsorted(-self.ratio, -np.asarray(s), side="right")
        return np.maximum((self.T[j] - self.slopes[j] * self.xs[j]) / (s - self.slopes[j]),
                          0.0)


    def level(self, y: float) -> float:
        """The least x >= 0 with T(x) <= y (T is nonincreasing and continuous): exact on its
        segment."""
        if self.T[0] <= y:
            return 0.0
        j = int(np.searchsorted(-self.T, -y, side="left")) - 1  # T[j] > y >= T[j + 1]
        if j + 1 >= self.xs.size or self.slopes[j] >= 0.0:
            return float(self.xs[-1])
        return float(self.xs[j] + (y - self.T[j]) / self.slopes[j])


def lipschitz_ab_prox(problem, gammas: Array, weight: float, c_norm: float):
    """The proximal map of w g(||A||_inf, ||B||_inf) + the (A, B) block's balls on
    W = [A, B, b] in the metric of row weights omega (see the module docstring),
    g(a, b) = (b^2 + c^2) / (2 (1 - a)):
    ``argmin_W w g + balls + 1/2 sum_i omega_i ||W_i - Z_i||^2``. The row weights do not
    change the rows' projections, only the sums of their levels (omega_i tau_i).

    Returns ``prox(Z, omega) -> (W, tau_A, tau_B)``, omega of shape (n,): the prox and the
    soft-threshold levels of the rows of A and B (omega tau is the penalty's and the balls'
    multiplier per row, a start for :func:`lipschitz_ab_residual`).
    """
    n, p, bias = problem.n, problem.p, problem.bias
    r_a = np.asarray(problem.kappa / gammas, dtype=float)
    beta = np.inf if problem.bounds.B is None else float(problem.bounds.B)
    c2 = float(c_norm) ** 2

    def prox(Z: Array, omega: Array) -> tuple[Array, Array, Array]:
        ZA, ZB = Z[:, :n], Z[:, n:n + p]
        ra, rb = _Rows(ZA, omega), _Rows(ZB, omega)
        a = _radius_a(ra, rb, r_a, beta, omega, weight, c2)
        b = min(float(rb.root(weight / (1.0 - a))), beta) if weight > 0 else beta
        tau_a = ra.thresholds(np.minimum(a, r_a))
        tau_b = rb.thresholds(np.full(n, min(b, beta)))
        out = np.array(Z, copy=True)
        out[:, :n] = np.sign(ZA) * np.maximum(np.abs(ZA) - tau_a[:, None], 0.0)
        out[:, n:n + p] = np.sign(ZB) * np.maximum(np.abs(ZB) - tau_b[:, None], 0.0)
        if bias and beta < np.inf:
            out[:, n + p] = np.clip(Z[:, n + p], -beta, beta)
        return out, tau_a, tau_b

    return prox


def _radius_a(ra: _Rows, rb: _Rows, r_a: Array, beta: float, omega: Array, tw: float,
              c2: float) -> float:
    """a* of the prox: the root of the increasing
    psi'(a) = tw (b*(a)^2 + c^2) / (2 (1 - a)^2) - sum_{i: a < r_i} omega_i tau_i(a) on
    [0, min(max r_i, max ||ZA_i||_1, 1)), b*(a) = min(root of tw b / (1 - a) = T_B(b), beta),
    or an end of that interval where psi' keeps its sign. With one radius for every row the
    sum is the piecewise linear T_A, and psi' is first evaluated at all its breakpoints at
    once to bracket the root on one of its segments; Brent's method then finds it to
    machine precision."""
    hi = min(float(r_a.max()), float(ra.norms.max()), 1.0 - 1e-12)
    if hi <= 0.0:
        return 0.0
    if tw <= 0.0:
        return hi
    same = bool(np.all(r_a == r_a[0]))

    def dpsi(a):
        b = np.minimum(rb.root(tw / (1.0 - a)), beta)
        if same:
            ta = np.interp(a, ra.xs, ra.T)
        else:
            ta = (omega * ra.thresholds(np.full(r_a.size, a)))[a < r_a].sum()
        return tw * (b * b + c2) / (2.0 * (1.0 - a) ** 2) - ta

    lo = 0.0
    if same:
        grid = np.append(ra.xs[ra.xs < hi], hi)
        d = dpsi(grid)
        k = int(np.searchsorted(d >= 0.0, True))  # d increases: the first sign change
        if k == 0:
            return 0.0
        if k == grid.size:
            return hi
        lo, hi = float(grid[k - 1]), float(grid[k])
    elif dpsi(0.0) >= 0.0:
        return 0.0
    elif dpsi(hi) <= 0.0:
        return hi
    return brentq(lambda x: float(dpsi(x)), lo, hi, xtol=1e-300,
                  rtol=4.0 * np.finfo(float).eps)


def _coefficients(norms: Array, radius: Array, coef: float, hint: Array) -> Array:
    """Per row, the multiplier c_i of an element c_i s_i (s_i in d||M_i||_1) of
    coef * d||M||_inf + N(balls) nearest to ``hint``: c_i = coef theta_i + nu_i with theta in
    the simplex over the rows where ||M_i||_1 = ||M||_inf and nu_i >= 0 on the rows on their
    ball (zero elsewhere)."""
    top = float(norms.max()) if norms.size else 0.0
    act = norms >= top * (1.0 - _ACTIVE)
    ball = norms >= radius * (1.0 - _ACTIVE)
    c = np.where(act | ball, np.maximum(hint, 0.0), 0.0)
    free = act & ~ball  # c_i = coef theta_i exactly
    both = act & ball  # c_i >= coef theta_i
    if not np.any(both):
        s = float(c[act].sum())
        c[act] = c[act] * (coef / s) if s > 0.0 else coef / int(act.sum())
        return c
    s_free = float(c[free].sum())
    if s_free > coef:
        c[free] *= coef / s_free
        s_free = coef
    deficit = coef - s_free - float(c[both].sum())
    if deficit > 0.0:
        c[both] += deficit / int(both.sum())
    return c


def _l1_part(G: Array, M: Array, c: Array) -> Array:
    """G + c_i s_i per row with the s_i in d||M_i||_1 nearest to -G_i / c_i: G + c sign(M)
    on the support, soft(G, c) off it."""
    on = M != 0
    return np.where(on, G + c[:, None] * np.sign(M),
                    np.sign(G) * np.maximum(np.abs(G) - c[:, None], 0.0))


def lipschitz_ab_residual(problem, gammas: Array, weight: float, c_norm: float, W: Array,
                          G: Array, hint_a: Array | None = None,
                          hint_b: Array | None = None) -> Array:
    """An element e = G + S + N of dF(W), F = smooth + w g(||A||_inf, ||B||_inf) + balls, for
    a feasible W = [A, B, b] with ||A||_inf < 1 and the smooth gradient G.

    S + N is built row by row: by the chain rule (g differentiable and nondecreasing in each
    argument) S = g_a U + g_b V with U in d||A||_inf and V in d||B||_inf, that is theta_i s_i
    on the rows of largest l1 norm (theta in the simplex, s_i in d||A_i||_1); the balls add
    nu_i s_i on the rows on them. The multipliers follow ``hint_a`` and ``hint_b`` (those of
    the prox, the optimal ones at the optimum), moved onto that set
    (:func:`_coefficients`); the signs off the support are the best for them.

    Returns
    -------
    ndarray of the shape of W
    """
    n, p, bias = problem.n, problem.p, problem.bias
    beta = problem.bounds.B
    A, B = W[:, :n], W[:, n:n + p]
    a, b = _inf_norm(A), _inf_norm(B)
    ga = weight * (b * b + float(c_norm) ** 2) / (2.0 * (1.0 - a) ** 2)
    gb = weight * b / (1.0 - a)
    na, nb = np.abs(A).sum(axis=1), np.abs(B).sum(axis=1)
    ha = np.zeros(n) if hint_a is None else hint_a
    hb = np.zeros(n) if hint_b is None else hint_b
    e = np.array(G, copy=True)
    e[:, :n] = _l1_part(G[:, :n], A, _coefficients(na, problem.kappa / gammas, ga, ha))
    rb = np.full(n, np.inf if beta is None else beta)
    e[:, n:n + p] = _l1_part(G[:, n:n + p], B, _coefficients(nb, rb, gb, hb))
    if bias and beta is not None:
        c, gc = W[:, n + p], G[:, n + p]
        e[:, n + p] = np.where(c >= beta, np.maximum(gc, 0.0),
                               np.where(c <= -beta, np.minimum(gc, 0.0), gc))
    return e


def _lipschitz_value(weight: float, A: Array, B: Array, c_norm: float, d_norm: float) -> float:
    """w [ (||B||_inf^2 + c^2) / (2 (1 - ||A||_inf)) + ||D||_inf ] (inf when ||A||_inf >= 1)."""
    a = _inf_norm(A)
    if a >= 1.0:
        return np.inf
    return weight * ((_inf_norm(B) ** 2 + c_norm ** 2) / (2.0 * (1.0 - a)) + d_norm)


def fast_ab_lipschitz(problem, X: Array, lam: Array, gammas: Array, pen: LipschitzBound,
                      fixed: dict[str, Array], W0: Array, tol: float = 1e-7,
                      rho: float | None = None, max_iter: int = 20000,
                      prox: float = AB_PROX) -> tuple[Array, Array, Array, SolveInfo]:
    """The proximal (A, B) step with the Lipschitz penalty (4.7), by FISTA with the exact
    prox of the penalty + the balls (:func:`lipschitz_ab_prox`)::

        min_W  sum_i lam_i (1/m) (1/2 ||x_i - (w_i V)_+||^2 + x_i (w_i V)_-)
               + sum_i c_i / 2 ||w_i - w0_i||^2 + P(A, B; C, D)   over the balls,

    the CVXPY block's objective (``fixed`` holds C and D), with the proximal weights c of
    :func:`fenchel_idl.blocks.first_order.ab_prox_rows` (rho max(lam) on every row: the
    penalty reads A and B). The steps are taken in the metric of row weights
    lam_i L0 + c_i, and the prox is exact in that metric too. The certificate
    (:func:`_lipschitz_gap`) is taken at the proximal-gradient point of each check, the
    point returned. Value and gap are in units of the training objective. ``rho`` defaults
    to :func:`fenchel_idl.blocks.first_order.ab_prox_weight` with weight ``prox``.
    """
    t0 = time.perf_counter()
    n, p, m = problem.n, problem.p, problem.m
    V = np.vstack([X, problem.U] + ([np.ones((1, m))] if problem.bias else []))
    L0 = float(np.linalg.norm(V, 2)) ** 2 / m
    rho = ab_prox_weight(L0, prox) if rho is None else rho
    lc = np.asarray(lam, dtype=float)[:, None]
    cw = ab_prox_rows([pen], lc[:, 0], rho)[:, None]  # c, training units
    L = lc * L0 + cw
    c_norm, d_norm = _inf_norm(fixed["C"]), _inf_norm(fixed["D"])
    w = float(pen.weight)
    prox = lipschitz_ab_prox(problem, gammas, w, c_norm)

    def value(Wc):
        return _lipschitz_value(w, Wc[:, :n], Wc[:, n:n + p], c_norm, d_norm)

    def grad_obj(Wc):
        Z = Wc @ V
        Zp = np.maximum(Z, 0.0)
        Ex = Zp - X
        Dw = Wc - W0
        rows = np.sum(0.5 * Ex * Ex + X * (Zp - Z), axis=1) / m
        f = float(lc[:, 0] @ rows) + 0.5 * float(np.sum(cw * Dw * Dw))
        return f, lc * ((Ex @ V.T) / m) + cw * Dw

    last: dict = {}

    def residual(Wc, G, hint_a, hint_b):
        return lipschitz_ab_residual(problem, gammas, w, c_norm, Wc, G, hint_a, hint_b)

    def certificate(Wc, f, g):
        Wp, ta, tb = prox(Wc - g / L, L[:, 0])
        fp, gp = grad_obj(Wp)
        full = fp + value(Wp)
        e = residual(Wp, gp, L[:, 0] * ta, L[:, 0] * tb)
        gap = _lipschitz_gap(Wp, gp, e, W0, cw, prox, residual, value)
        last.update(point=Wp, f=full, gap=gap)
        # fista compares the gap with tol * max(1, |f|) for its own f (the smooth part)
        return gap * max(1.0, abs(f)) / max(1.0, abs(full))

    _, _, _, iters = fista(grad_obj, lambda Z: prox(Z, L[:, 0])[0], certificate, W0, L, tol,
                           max_iter, check_every=20)
    Wn, f, gap = last["point"], last["f"], last["gap"]
    info = fista_info("AB", f, gap, iters, tol, t0)
    b = Wn[:, n + p] if problem.bias else np.zeros(n)
    return Wn[:, :n], Wn[:, n:n + p], b, info


def _lipschitz_gap(W: Array, g: Array, e: Array, W0: Array, cw: Array, prox, residual,
                   value) -> float:
    """A bound on F(W) - F* for the block of :func:`fast_ab_lipschitz` at a feasible W (g the
    smooth gradient, e an element of dF(W), cw the proximal weights c_i as an (n, 1) array):
    the smaller of

    - the strong-convexity bound ``sum_i ||e_i||^2 / (2 c_i)`` (F is 1-strongly convex in
      the norm sum_i c_i ||w_i||^2), tight near the optimum;
    - the Fenchel duality gap at the dual point made of the divergence's gradient
      s = g - c (W - W0): by convexity, F* >= phi(W) + min_W' q(W') - <s, W> with
      q(W') = <s, W'> + sum_i c_i / 2 ||w'_i - w0_i||^2 + P(W') over the balls, whose
      minimizer is an exact prox (:func:`lipschitz_ab_prox` in the metric c); q is
      1-strongly convex in the same norm, so ``q(W') - sum_i ||e_q,i||^2 / (2 c_i)``
      (e_q in dq(W')) is a true lower bound on its minimum whatever the accuracy of W'.
      Linear in the distance to the optimum, it is the tighter one for small c.
    """
    strong = 0.5 * float(np.sum(e * e / cw))
    s = g - cw * (W - W0)
    Wq, ta, tb = prox(W0 - s / cw, cw[:, 0])
    Gq = s + cw * (Wq - W0)
    eq = residual(Wq, Gq, cw[:, 0] * ta, cw[:, 0] * tb)
    dual = float(np.sum(s * (W - Wq))) + 0.5 * float(
        np.sum(cw * (W - W0) ** 2) - np.sum(cw * (Wq - W0) ** 2)) + value(W) - value(Wq) \
        + 0.5 * float(np.sum(eq * eq / cw))
    return min(strong, max(dual, 0.0))


# ----------------------------------------------------------------------------------------
# The (C, D) block: the squared-loss readout with the penalty, A and B fixed
# ----------------------------------------------------------------------------------------
def lipschitz_cd_apply(problem) -> bool:
    """Whether :func:`fast_cd_lipschitz` covers the (C, D) block: the squared loss, and the
    only penalty reading C or D is one :class:`LipschitzBound`."""
    shapes = {"A": (problem.n, problem.n), "B": (problem.n, problem.p),
              "C": (problem.q, problem.n), "D": (problem.q, problem.p)}
    pens = [pn for pn in problem.penalties if set(penalty_reads(pn, shapes)) & {"C", "D"}]
    return (isinstance(problem.loss, SquaredLoss) and len(pens) == 1
            and isinstance(pens[0], LipschitzBound))


def _cd_prox(n: int, p: int, alpha: float, w: float, beta_c, beta_d):
    """``prox(Z, t)``: the proximal map of t (alpha ||C||_inf^2 + w ||D||_inf) + the row l1
    balls of C and D on K = [C, D, d] (d free). As for (A, B), the rows are projected on l1
    balls whose radii c*, d* solve one-dimensional equations, here apart and in closed form
    on a segment of the piecewise linear sums of levels T: 2 t alpha c = T_C(c) and
    t w = T_D(d), each capped by its ball."""
    cap_c = np.inf if beta_c is None else float(beta_c)
    cap_d = np.inf if beta_d is None else float(beta_d)

    def prox(Z: Array, t: float) -> Array:
        out = np.array(Z, copy=True)
        for sl, cap, radius in ((slice(0, n), cap_c, lambda r: float(r.root(2.0 * t * alpha))
                                 if alpha > 0 else float(r.xs[-1])),
                                (slice(n, n + p), cap_d, lambda r: r.level(t * w))):
            M = Z[:, sl]
            rows = _Rows(M, np.ones(M.shape[0]))
            tau = rows.thresholds(np.full(M.shape[0], min(radius(rows), cap)))
            out[:, sl] = np.sign(M) * np.maximum(np.abs(M) - tau[:, None], 0.0)
        return out

    return prox


def _cd_conjugate(M: Array, n: int, alpha: float, w: float, beta_c, beta_d) -> float:
    """h*(M) for h(K) = alpha ||C||_inf^2 + w ||D||_inf + the balls (d free): with
    s = sum_i ||M_i||_inf over C's (D's) columns (the dual norm of ||.||_inf),
    max_{0 <= c <= beta_C} (c s_C - alpha c^2) + max_{0 <= d <= beta_D} d (s_D - w)
    (inf when a missing ball leaves it unbounded, or the d column of M is not 0)."""
    s_c = float(np.abs(M[:, :n]).max(axis=1).sum()) if n else 0.0
    s_d = float(np.abs(M[:, n:]).max(axis=1).sum()) if M.shape[1] > n else 0.0
    if alpha > 0:
        c = s_c / (2.0 * alpha) if beta_c is None else min(s_c / (2.0 * alpha), beta_c)
        out = c * s_c - alpha * c * c
    else:
        out = 0.0 if s_c == 0 else (np.inf if beta_c is None else beta_c * s_c)
    if s_d > w:
        out += np.inf if beta_d is None else beta_d * (s_d - w)
    return out


def fast_cd_lipschitz(problem, X: Array, A: Array, B: Array, pen: LipschitzBound, K0: Array,
                      tol: float = 1e-7,
                      max_iter: int = 20000) -> tuple[Array, Array, Array, SolveInfo]:
    """The squared-loss (C, D) block with the Lipschitz penalty (4.7), A and B fixed::

        min_{C, D, d}  1/(2m) ||C X + D U + d - Y||^2
                       + w [ (b^2 + ||C||_inf^2) / (2 (1 - a)) + ||D||_inf ]   over the balls,

    a = ||A||_inf, b = ||B||_inf, by FISTA with the exact prox of the penalty and the balls
    (:func:`_cd_prox`), on the Gram matrix of the centred features (the free d absorbs
    the means). Certified by the Fenchel duality gap at the dual point made of the
    residuals R = (K V - Y) / m, centred per row so that the free d drops out:
    ``F* >= -<R, Y> - m/2 ||R||^2 - h*(-R V^T)`` (:func:`_cd_conjugate`), tight at the
    optimum. Returns (C, D, d, record); the record's objective is the block's value in
    units of the training objective.
    """
    t0 = time.perf_counter()
    n, p, m, Y = problem.n, problem.p, problem.m, problem.Y
    beta_c, beta_d = problem.bounds.C, problem.bounds.D
    a, b = _inf_norm(A), _inf_norm(B)
    w = float(pen.weight)
    alpha, const = w / (2.0 * (1.0 - a)), w * b * b / (2.0 * (1.0 - a))
    V = np.vstack([X, problem.U] + ([np.ones((1, m))] if problem.bias else []))
    K0 = np.array(K0, dtype=float)
    mu = None
    if problem.bias:  # centred features: the mean direction no longer dominates ||V||
        mu = V[:-1].mean(axis=1)
        V[:-1] -= mu[:, None]
        K0[:, -1] += K0[:, :-1] @ mu
    G, H = V @ V.T / m, Y @ V.T / m
    L = max(float(np.linalg.eigvalsh(G)[-1]), 1e-300)
    y2 = float(np.sum(Y * Y)) / (2.0 * m)
    prox = _cd_prox(n, p, alpha, w, beta_c, beta_d)

    def grad_obj(Kc):
        KG = Kc @ G
        return 0.5 * float(np.sum(KG * Kc)) - float(np.sum(Kc * H)) + y2, KG - H

    def penalty(Kc):
        return alpha * _inf_norm(Kc[:, :n]) ** 2 + w * _inf_norm(Kc[:, n:n + p]) + const

    last: dict = {}

    def certificate(Kc, f, g):
        R = (Kc @ V - Y) / m
        if mu is not None:
            R -= R.mean(axis=1, keepdims=True)
        lower = -float(np.sum(R * Y)) - 0.5 * m * float(np.sum(R * R)) \
            - _cd_conjugate(-(R @ V[:n + p].T), n, alpha, w, beta_c, beta_d) + const
        full = 0.5 * float(np.sum((Kc @ V - Y) ** 2)) / m + penalty(Kc)
        last.update(point=Kc, f=full, gap=full - lower)
        return last["gap"] * max(1.0, abs(f)) / max(1.0, abs(full))

    _, _, _, iters = fista(grad_obj, lambda Z: prox(Z, 1.0 / L), certificate, K0, L, tol,
                           max_iter, check_every=10)
    K, f, gap = np.array(last["point"]), last["f"], last["gap"]
    info = fista_info("CD", f, gap, iters, tol, t0, "duality gap")
    if mu is not None:
        K[:, -1] -= K[:, :-1] @ mu
    d = K[:, n + p] if problem.bias else np.zeros(problem.q)
    return K[:, :n], K[:, n:n + p], d, info
