"""Batched first-order solvers, with certificates, for the ReLU (A, B) block (and the
(C, D) block without penalties). The ReLU X block has its own batched solver, projected
Newton-CG (:mod:`fenchel_idl.blocks.x_step`): its conditioning grows with ||C||^2 / lam,
which first-order methods pay for and Newton does not.

For the most common problem (ReLU, no penalty on A or B) the (A, B) block is a smooth
convex problem over simple sets, and the general CVXPY blocks of
:mod:`fenchel_idl.blocks.cvxpy_blocks` spend their time in interpreter and solver overhead,
one small conic program per row. Here all rows are solved at once by FISTA with adaptive
restart, in a few matrix products per iteration, and each solve carries a certificate:

- **(A, B) block**, one row w = (a_i, b_i, c_i) at a time (all rows in one matrix), with a
  proximal term (proximal BCD: the block objective still never increases)::

      min  (1/m) sum_j [ 1/2 (x_ij - (w^T v_j)_+)^2 + x_ij (w^T v_j)_- ]
           + rho/2 ||w - w_prev||^2
      s.t. gamma_i ||a||_1 <= kappa,  ||b||_1 <= beta_B,  |c| <= beta_B

  (row i's divergence in its stable form, with no constant: the expanded form is a
  difference of terms far larger than the loss, as for the X block).

  The proximal term makes each row rho-strongly convex, so
  ``phi(w) - phi* <= ||g||^2 / (2 rho)``, with g the minimal-norm element of
  grad + N_K(w) (computed in closed form per ball, up to a one-dimensional minimization).
  Without it the only certificate is the Frank-Wolfe gap, which needs the suboptimality
  squared and so many more iterations. lam_i scales a row's divergence and does not move
  its minimizer, so it is left out.

It is verified against the CVXPY block in the tests.

For problems without penalties, the (C, D) block has first-order solvers too, used by
:func:`fenchel_idl.solve_bcd_minibatch` where CVXPY does not scale:

- :func:`fast_k_step`, the proximal (C, D) step on Gram statistics (quadratic losses and
  majorizers), certified like the (A, B) block, and :func:`fast_w_step`, the (A, B) step
  on the quadratic majorizer of the divergences through the same statistics, in the
  centred coordinates of :class:`CentredGram`;
- :func:`fast_ce_readout`, the cross-entropy (C, D) block on all samples, certified by the
  duality gap of a Fenchel-dual lower bound (:func:`ce_readout_lower_bound`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.sparse.linalg import eigsh
from scipy.special import softmax

from fenchel_idl._blas import blas_threads, wide_blas_limit
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem.projection import project_l1_rows, project_rows

__all__ = [
    "AB_PROX",
    "CentredGram",
    "ab_penalties",
    "ab_prox_rows",
    "ab_prox_weight",
    "ce_readout_lower_bound",
    "fast_ab_apply",
    "fast_ab_block",
    "fast_ab_penalized",
    "fast_blocks_apply",
    "fast_ce_readout",
    "fast_k_step",
    "fast_w_step",
    "fast_readout_apply",
    "fast_x_apply",
    "fista",
    "fista_info",
    "pack_cd",
    "unpack_cd",
]

Array = NDArray[np.float64]


def fast_blocks_apply(problem) -> bool:
    """Whether the batched solvers cover both the X and the (A, B) block of this problem
    (:func:`fast_x_apply` and :func:`fast_ab_apply`)."""
    return fast_x_apply(problem) and fast_ab_apply(problem)


def fast_x_apply(problem) -> bool:
    """Whether :func:`fenchel_idl.blocks.x_step.fast_x_block` covers the X block: ReLU
    (penalties never enter it)."""
    return problem.activation.name == "relu"


def ab_penalties(problem) -> list:
    """The penalties of the problem that read A or B (:func:`penalty_reads`)."""
    return problem.penalties_reading("A", "B")


def fast_ab_apply(problem) -> bool:
    """Whether :func:`fast_ab_block` covers the (A, B) block: ReLU, and at most one penalty
    reading A or B, with a proximal operator (``ab_fast``: l1, row or column norms, feature
    selection, nuclear norm)."""
    pens = ab_penalties(problem)
    return problem.activation.name == "relu" and (
        not pens or (len(pens) == 1 and pens[0].ab_fast))


#: Default weight of the proximal term of the (A, B) block, relative to ||V||^2 / m
#: (``ab_prox`` of :func:`fenchel_idl.solve_bcd` and :func:`fenchel_idl.solve_bcd_minibatch`).
AB_PROX = 1e-5


def fista(grad_obj: Callable, project: Callable, certificate: Callable, x0: Array, L: float,
           tol: float, max_iter: int, check_every: int = 5):
    """FISTA with gradient-based adaptive restart (O'Donoghue and Candes, "Adaptive restart
    for accelerated gradient schemes", 2015). Returns (x, f, gap, iterations).

    One gradient per iteration, at the extrapolated point; the momentum restarts when the
    gradient-mapping step points against the last move, (y - x+)^T (x+ - x) > 0. The
    objective, its gradient at the iterate and the certificate are evaluated every
    ``check_every`` iterations. (A function-value restart would need the gradient at the
    iterate as well, two gradients per iteration, for the same iteration counts.)
    """
    x = project(x0)
    f, g = grad_obj(x)
    gap = certificate(x, f, g)
    if gap <= tol * max(1.0, abs(f)):
        return x, f, gap, 0
    y, t = x, 1.0
    it = 0
    for it in range(1, max_iter + 1):
        _, gy = grad_obj(y)
        x_new = project(y - gy / L)
        if float(np.vdot(y - x_new, x_new - x)) > 0.0:
            t = 1.0  # restart the momentum
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if it % check_every == 0 or it == max_iter:
            f, g = grad_obj(x)
            gap = certificate(x, f, g)
            if gap <= tol * max(1.0, abs(f)):
                break
    return x, f, gap, it


def fista_info(block: str, f: float, gap: float, iters: int, tol: float, t0: float,
               bound: str = "gap bound", solver: str = "FISTA",
               unit: str = "iterations") -> SolveInfo:
    """The SolveInfo of an iterative solve (FISTA unless ``solver`` says otherwise) that
    stopped at objective f with the certified gap bound ``gap`` after ``iters`` ``unit``
    (started at ``time.perf_counter()`` t0): certified when the relative gap is within
    ``tol``."""
    rel = gap / max(1.0, abs(f))
    ok = rel <= tol
    return SolveInfo(block, solver, "optimal" if ok else "optimal_inaccurate", f, rel, None, ok,
                     time.perf_counter() - t0, 1,
                     "" if ok else f"{bound} {rel:.2e} above {tol:.1e} after {iters} {unit}")


def _min_norm_l1(g: Array, w: Array, radius: Array) -> Array:
    """Squared norm of the minimal-norm element of g + N(w) for the l1 balls of the rows
    (the rows of :func:`_l1_ball_residual`)."""
    r = _l1_ball_residual(g, w, radius)
    return np.sum(r * r, axis=1)


def fast_ab_block(problem, X, gammas, W0=None, tol: float = 1e-7, rho: float | None = None,
                  max_iter: int = 20000, lam: Array | None = None, prox: float = AB_PROX
                  ) -> tuple[Array, Array, Array, SolveInfo]:
    """The proximal (A, B) step for ReLU, all rows at once (see the module docstring).

    ``W0`` is the current [A, B, b] (the proximal centre and the warm start); ``rho``
    defaults to :func:`ab_prox_weight` with weight ``prox``. ``lam`` (the divergence
    weights, ones when None) does not move the minimizer; it weighs the rows' objectives
    and gaps, so that both are in units of the training objective, where row i's
    divergence counts lam_i times.
    """
    t0 = time.perf_counter()
    n, p, m = problem.n, problem.p, problem.m
    U = problem.U
    bias = problem.bias
    V = np.vstack([X, U] + ([np.ones((1, m))] if bias else []))
    L0 = float(np.linalg.norm(V, 2)) ** 2 / m
    if rho is None:
        rho = ab_prox_weight(L0, prox)
    if W0 is None:
        W0 = np.zeros((n, V.shape[0]))
    weights = np.ones(n) if lam is None else np.asarray(lam, dtype=float)
    centre = W0

    project = ab_projector(problem, gammas)

    def grad_obj(Wc):
        Z = Wc @ V
        Zp = np.maximum(Z, 0.0)
        Ex = Zp - X
        D = Wc - centre
        # the rows' divergences in the stable form 1/2 (x - z+)^2 + x z- (X >= 0): the
        # expanded 1/2 z+^2 - x z differs by the constant 1/2 x^2, large beside the gap
        rows = np.sum(0.5 * Ex * Ex + X * (Zp - Z), axis=1) / m \
            + 0.5 * rho * np.sum(D * D, axis=1)
        return float(weights @ rows), (Ex @ V.T) / m + rho * D

    def certificate(Wc, f, g):
        return float(weights @ _ab_gap_rows(problem, gammas, Wc, g, centre, rho, project))

    Wn, f, gap, iters = fista(grad_obj, project, certificate, W0, L0 + rho, tol, max_iter)
    info = fista_info("AB", f, gap, iters, tol, t0)
    b = Wn[:, n + p] if bias else np.zeros(n)
    return Wn[:, :n], Wn[:, n:n + p], b, info


def _ab_gap_rows(problem, gammas: Array, W: Array, g: Array, W0: Array, rho: float,
                project: Callable[[Array], Array]) -> Array:
    """Per row, a bound on the suboptimality of W in the proximal (A, B) block
    ``min_{w in K} phi(w) + rho/2 ||w - w0||^2`` (phi smooth and convex; g the gradient of
    the whole objective at W): the smaller of two valid bounds,

    - the strong-convexity bound ``||g_min||^2 / (2 rho)`` (g_min the minimal-norm element
      of g + N_K(W)), tight near the optimum;
    - the Fenchel duality gap at the dual point made of phi's gradient, which for
      s = g - rho (W - w0) and w_s = proj_K(w0 - s / rho) is
      ``<s, w - w_s> + rho/2 (||w - w0||^2 - ||w_s - w0||^2)``, linear in the distance to
      the optimum and so the tighter one for small rho.
    """
    strong = ab_min_norm_rows(problem, gammas, W, g) / (2.0 * rho)
    s = g - rho * (W - W0)
    Ws = project(W0 - s / rho)
    dual = np.sum(s * (W - Ws), axis=1) + 0.5 * rho * (
        np.sum((W - W0) ** 2, axis=1) - np.sum((Ws - W0) ** 2, axis=1))
    return np.minimum(strong, np.maximum(dual, 0.0))


def ab_projector(problem, gammas: Array) -> Callable[[Array], Array]:
    """Euclidean projection of W = [A, B, b] onto the (A, B) block's feasible set: one l1
    ball per row of A (radius kappa / gamma_i), one per row of B (radius beta_B) and the
    box |b| <= beta_B (no B ball when ``bounds.B`` is None)."""
    n, p, bias = problem.n, problem.p, problem.bias
    radius_a = problem.kappa / gammas
    beta = problem.bounds.B

    def project(Wc: Array) -> Array:
        out = np.empty_like(Wc)
        out[:, :n] = project_l1_rows(Wc[:, :n], radius_a)
        if beta is not None:
            out[:, n:n + p] = project_l1_rows(Wc[:, n:n + p], np.full(n, beta))
            if bias:
                out[:, n + p] = np.clip(Wc[:, n + p], -beta, beta)
        else:
            out[:, n:] = Wc[:, n:]
        return out

    return project


def ab_min_norm_rows(problem, gammas: Array, W: Array, g: Array) -> Array:
    """Per row, the squared norm of the minimal-norm element of g + N_K(W), K the (A, B)
    block's feasible set (see :func:`ab_projector`): the gradient-mapping part of the
    strong-convexity gap bound ``||.||^2 / (2 rho)``."""
    n, p, bias = problem.n, problem.p, problem.bias
    beta = problem.bounds.B
    sq = _min_norm_l1(g[:, :n], W[:, :n], problem.kappa / gammas)
    if beta is None:
        return sq + np.sum(g[:, n:] ** 2, axis=1)
    sq = sq + _min_norm_l1(g[:, n:n + p], W[:, n:n + p], np.full(n, beta))
    if bias:
        c, gc = W[:, n + p], g[:, n + p]
        gc = np.where(c >= beta, np.maximum(gc, 0.0), np.where(c <= -beta, np.minimum(gc, 0.0),
                                                                gc))
        sq = sq + gc * gc
    return sq


def _l1_ball_residual(g: Array, w: Array, radius: Array) -> Array:
    """g + n with n in the normal cone of the rows' l1 balls at w, the one of least norm.

    On a row strictly inside its ball the normal cone is {0}. On the boundary it is
    {mu s : mu >= 0, s in sign(w)} (s_i free in [-1, 1] where w_i = 0), and for a given mu
    the best residual is g_i + mu sign(w_i) on the support and soft(g_i, mu) off it. That
    convex, piecewise-quadratic function of mu is minimized exactly: its derivative
    vanishes where N mu + b = sum_off (|g_i| - mu)_+, with N the size of the support and
    b = sum_supp sign(w_i) g_i, a root found by sorting |g_i| off the support (as for the
    projection on the l1 ball), vectorized over rows: exact, and cheaper than an iterative
    line search over mu. The residual at mu is kept where it beats mu = 0 (g itself).
    """
    sgn = np.sign(w)
    on = np.abs(np.abs(w).sum(axis=1) - radius) <= 1e-12 * np.maximum(radius, 1.0)
    if not np.any(on):
        return g
    supp = sgn != 0
    n_supp = supp.sum(axis=1)
    b = np.sum(np.where(supp, sgn * g, 0.0), axis=1)
    h = -np.sort(-np.where(supp, 0.0, np.abs(g)), axis=1)  # off-support |g|, descending
    cs = np.cumsum(h, axis=1)
    j = np.arange(1, h.shape[1] + 1)
    # h_(j) > mu*  <=>  (N + j) h_(j) > cs_j - b; a prefix of j, since h is sorted
    count = np.sum(h * (n_supp[:, None] + j) > cs - b[:, None], axis=1)
    cs_count = np.take_along_axis(cs, np.maximum(count - 1, 0)[:, None], axis=1)[:, 0]
    cs_count = np.where(count > 0, cs_count, 0.0)
    denom = n_supp + count
    mu = np.maximum(np.where(denom > 0, (cs_count - b) / np.maximum(denom, 1), 0.0), 0.0)
    r = np.where(supp, g + mu[:, None] * sgn,
                 np.sign(g) * np.maximum(np.abs(g) - mu[:, None], 0.0))
    use = on & (np.sum(r * r, axis=1) < np.sum(g * g, axis=1))
    return np.where(use[:, None], r, g)


def _ab_ball_residual(problem, gammas: Array, W: Array, g: Array) -> Array:
    """g + n, n the least-norm element of g + N_K(W) over the (A, B) block's balls
    (:func:`ab_projector`), as a matrix."""
    n, p, bias = problem.n, problem.p, problem.bias
    beta = problem.bounds.B
    out = np.array(g, copy=True)
    out[:, :n] = _l1_ball_residual(g[:, :n], W[:, :n], problem.kappa / gammas)
    if beta is None:
        return out
    out[:, n:n + p] = _l1_ball_residual(g[:, n:n + p], W[:, n:n + p], np.full(n, beta))
    if bias:
        c, gc = W[:, n + p], g[:, n + p]
        out[:, n + p] = np.where(c >= beta, np.maximum(gc, 0.0),
                                 np.where(c <= -beta, np.minimum(gc, 0.0), gc))
    return out


def _ab_parts(problem, W: Array) -> dict[str, Array]:
    n, p = problem.n, problem.p
    return {"A": W[:, :n], "B": W[:, n:n + p]}


def _ab_join(problem, W: Array, parts: dict[str, Array]) -> Array:
    out = np.array(W, copy=True)
    n, p = problem.n, problem.p
    if "A" in parts:
        out[:, :n] = parts["A"]
    if "B" in parts:
        out[:, n:n + p] = parts["B"]
    return out


def ab_penalty_prox(problem, gammas: Array, pen, t, fixed: dict[str, Array],
                    eta: float = 0.0) -> Callable[[Array], Array]:
    """The proximal map of t P + the indicator (t a number, or per row an array of shape
    (n, 1) for a row-separable P) of the (A, B) block's balls, on W = [A, B, b].

    - l1: exact in closed form, the l1 balls' projection of the soft-thresholded W (soft
      thresholding by t and then by the ball's multiplier is soft thresholding by their
      sum).
    - row norms of A: exact, row by row (:func:`_row_norm_ball_prox`), and the balls'
      projection of B and b, which the penalty does not read.
    - the others: the proximal Dykstra iteration (Bauschke and Combettes, "Convex Analysis
      and Monotone Operator Theory", 29.2), warm-started from the dual sequences of the
      previous call (:func:`_warm_dykstra`, inexact by ``eta`` when it is positive).

    Every value returned is feasible (a projection onto the balls, or on them by
    construction), and zeros of the penalty's prox stay zeros.
    """
    project = ab_projector(problem, gammas)

    def prox_p(Wc):
        return _ab_join(problem, Wc, pen.ab_prox(_ab_parts(problem, Wc), t, fixed))

    if pen.name == "l1":
        return lambda Wc: project(prox_p(Wc))
    radius = problem.kappa / gammas
    if pen.name == "row_norms" and pen.of == "A":
        tau = np.broadcast_to(np.asarray(t * pen.weight, dtype=float).reshape(-1),
                              (problem.n,))
        return _split_prox(problem, radius,
                           prox_a=lambda Ac: _row_norm_ball_prox(Ac, tau, radius))
    def part(key: str, r: Array | None) -> Callable[[Array], Array]:
        """The prox of the penalty on A or B alone with that matrix's row balls of radii r:
        Dykstra, or the penalty's prox itself without balls."""
        def prox_part(M):
            return pen.ab_prox({key: M}, t, fixed)[key]

        return prox_part if r is None else _warm_dykstra(
            prox_part, lambda M: project_rows(M, r, "sort"), eta=eta)

    # a penalty on A alone or on B alone: the other part is only projected
    reads = set(pen.matrices) & {"A", "B"}
    if reads == {"A"}:
        return _split_prox(problem, radius, prox_a=part("A", radius))
    if reads == {"B"}:
        beta = problem.bounds.B
        return _split_prox(problem, radius,
                           prox_b=part("B", None if beta is None else np.full(problem.n, beta)))
    return _warm_dykstra(prox_p, project, eta=eta)


#: Inexactness of the Dykstra prox inside :func:`fast_ab_penalized` (``eta`` of
#: :func:`_warm_dykstra`).
_DYKSTRA_ETA = 1e-3


def _warm_dykstra(prox_p: Callable[[Array], Array], project: Callable[[Array], Array],
                  max_iter: int = 200, eta: float = 0.0) -> Callable[[Array], Array]:
    """The proximal Dykstra iteration for prox_{f + g}(z) (prox_p of f, project of g), with
    its dual sequences kept from one call to the next.

    It is block-coordinate minimization of the dual ``f*(u) + g*(v) + 1/2 ||z - u - v||^2``
    over u (the p sequence) and v (the q sequence), with x = z - u - v; it converges from
    any (u, v), so the previous call's pair, near the new one when z moves little (as
    between FISTA steps), is a warm start. The returned x is a projection, so feasible.

    It stops when its iterate moves by at most 1e-13 relative, or, with ``eta`` > 0, by at
    most ``eta`` times the distance between this argument z and the previous call's: an
    inexact prox whose error shrinks with the steps of the method that calls it (summable
    where FISTA converges linearly; a call at the previous argument is exact). In
    :func:`fast_ab_penalized` that is about one Dykstra round per call instead of four or
    five, for a few more FISTA iterations; its certificate does not rely on the prox being
    exact (it bounds the gap at the returned feasible point from an element of its
    subdifferential)."""
    duals: dict[str, Array | float] = {"p": 0.0, "q": 0.0, "z": None}

    def prox(Wc: Array) -> Array:
        p_, q_ = duals["p"], duals["q"]
        x = Wc - p_ - q_
        tol_abs = 0.0 if duals["z"] is None or eta <= 0.0 else \
            eta * float(np.linalg.norm(Wc - duals["z"]))
        for _ in range(max_iter):
            y = prox_p(x + p_)
            p_ = x + p_ - y
            xn = project(y + q_)
            q_new = y + q_ - xn
            # q = 0 before and after: y = prox_f(z) (x + p = z) lies in the set, so it is
            # the answer exactly
            done = (not np.any(q_) and not np.any(q_new)) or (
                np.linalg.norm(xn - x) <= max(1e-13 * (1.0 + np.linalg.norm(xn)), tol_abs))
            q_ = q_new
            x = xn
            if done:
                break
        duals.update(p=p_, q=q_, z=Wc)
        return x

    return prox


def _split_prox(problem, radius: Array, prox_a: Callable[[Array], Array] | None = None,
                prox_b: Callable[[Array], Array] | None = None) -> Callable[[Array], Array]:
    """The proximal map on W = [A, B, b] of a penalty on A alone or on B alone + the (A, B)
    block's balls: ``prox_a`` (that of the penalty + the balls of A's rows, radii
    ``radius``) on A or ``prox_b`` (the same for B) on B; the part the penalty does not read
    is only projected onto its balls, which do not meet the penalty, and so is b."""
    n, p, bias = problem.n, problem.p, problem.bias
    beta = problem.bounds.B
    radius_b = None if beta is None else np.full(n, beta)

    def prox(Wc: Array) -> Array:
        out = np.array(Wc, copy=True)
        out[:, :n] = prox_a(Wc[:, :n]) if prox_a is not None else \
            project_rows(Wc[:, :n], radius, "sort")
        if prox_b is not None:
            out[:, n:n + p] = prox_b(Wc[:, n:n + p])
        elif radius_b is not None:
            out[:, n:n + p] = project_rows(Wc[:, n:n + p], radius_b, "sort")
        if beta is not None and bias:
            out[:, n + p] = np.clip(Wc[:, n + p], -beta, beta)
        return out

    return prox


def _row_norm_ball_prox(M: Array, tau: Array, radius: Array) -> Array:
    """Row by row, argmin_x tau_i ||x||_2 + 1/2 ||x - m_i||^2 s.t. ||x||_1 <= r_i, exactly.

    With a multiplier mu >= 0 for the ball, the minimizer is the prox of
    tau ||.||_2 + mu ||.||_1, which is group shrinkage of the soft-thresholded row,
    x(mu) = (1 - tau / ||s||)_+ s, s = soft(m, mu) (the l2 prox only rescales, and the
    l1 subdifferential at a positive multiple of s contains the one at s, so the two proxes
    compose). ||x(mu)||_1 is continuous and nonincreasing in mu: mu = 0 when x(0) is in the
    ball, else the root of ||x(mu)||_1 = r. Its segment between two consecutive sorted |m_j|
    is found from the breakpoints' values, and on it, with k active entries,
    ||s||_1 = c1 - k mu and ||s||^2 = c2 - 2 mu c1 + k mu^2 (c1, c2 the sums of the k
    largest |m_j| and their squares), the root is found by Newton's method inside a
    shrinking bracket. A last rescaling by at most a few ulps keeps ||x||_1 <= r in floating
    point.
    """
    absM = np.abs(M)
    scale = np.maximum(1.0 - tau / np.maximum(np.sqrt(np.sum(M * M, axis=1)), 1e-300), 0.0)
    out = M * scale[:, None]
    over = np.flatnonzero(scale * absM.sum(axis=1) > radius)
    if over.size == 0:
        return out
    v = -np.sort(-absM[over], axis=1)  # decreasing
    c1, c2 = np.cumsum(v, axis=1), np.cumsum(v * v, axis=1)
    zero = np.zeros((over.size, 1))
    c1p, c2p = np.hstack([zero, c1[:, :-1]]), np.hstack([zero, c2[:, :-1]])
    j = np.arange(v.shape[1], dtype=float)  # at mu = v_j, the j entries above it are active
    s1 = c1p - j * v
    s2 = np.maximum(c2p - 2.0 * v * c1p + j * v * v, 0.0)
    to, ro = tau[over], radius[over]
    at_breaks = np.maximum(1.0 - to[:, None] / np.maximum(np.sqrt(s2), 1e-300), 0.0) * s1
    mu = _row_norm_root(v, c1, c2, np.sum(at_breaks <= ro[:, None], axis=1), to, ro)
    S = np.sign(M[over]) * np.maximum(absM[over] - mu[:, None], 0.0)
    Po = S * np.maximum(1.0 - to / np.maximum(np.sqrt(np.sum(S * S, axis=1)), 1e-300),
                        0.0)[:, None]
    s = np.abs(Po).sum(axis=1)
    Po *= np.minimum(1.0, ro / np.maximum(s, 1e-300) * (1.0 - 4.0 * np.finfo(float).eps))[:, None]
    out[over] = Po
    return out


def _row_norm_root(v: Array, c1: Array, c2: Array, k: Array, tau: Array, r: Array
                   ) -> Array:
    """The multiplier mu of :func:`_row_norm_ball_prox` on the segment with k active entries
    (v sorted decreasing, c1 and c2 the cumulative sums of v and v^2): the root of
    F(mu) = (c1 - k mu) (1 - tau / sqrt(c2 - 2 mu c1 + k mu^2)) - r, decreasing on
    [v_{k+1}, v_k], by Newton's method kept inside the bracket (bisection when it leaves)."""
    idx = np.arange(v.shape[0])
    C1, C2 = c1[idx, k - 1], c2[idx, k - 1]
    hi = v[idx, k - 1]
    lo = np.where(k < v.shape[1], v[idx, np.minimum(k, v.shape[1] - 1)], 0.0)
    mu = lo
    for _ in range(100):
        ell = C1 - k * mu
        q = np.maximum(C2 - 2.0 * mu * C1 + k * mu * mu, 1e-300)
        sq = np.sqrt(q)
        F = ell * (1.0 - tau / sq) - r
        dF = -k + tau * k / sq - tau * ell * ell / (q * sq)
        lo, hi = np.where(F > 0, mu, lo), np.where(F <= 0, mu, hi)
        done = (np.abs(F) <= 1e-14 * r) | (hi - lo <= 1e-15 * hi)
        if np.all(done):
            break
        step = mu - F / np.minimum(dF, -1e-300)
        mu = np.where(done, mu, np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi)))
    return mu


def ab_penalty_residual(problem, gammas: Array, pen, W: Array, g: Array,
                        fixed: dict[str, Array], t=1.0, row_weight=1.0,
                        rounds: int = 2, memory: dict | None = None) -> float:
    """Squared norm of an element of g + dP(W) + N_K(W) (K the balls), made small by
    alternating the penalty's nearest subgradient and the balls' least-norm normal vector;
    any element bounds the gap of a strongly convex objective, the least one best. ``t``
    weighs the penalty (per row as an (n, 1) array for a row-separable one); the squared
    norm is weighted by ``row_weight`` per row (the dual of the metric norm).

    The alternation is block-coordinate descent of the convex ||g + S + N||^2 over S in
    dP(W) and N in N_K(W); where both are active on the same entries (a coupled penalty on
    its ball) it needs many rounds. ``memory`` (a dict) keeps the last normal vector
    between calls, a start for the next call at a nearby W: the normal vector only guides
    the choice of S, and every residual returned is built from an S in dP(W) and the
    least-norm normal vector at W for it, so it stays valid from any start."""
    nK = np.zeros_like(W) if memory is None else memory.get("nK", np.zeros_like(W))
    best = np.inf
    for _ in range(rounds):
        S = _ab_join(problem, np.zeros_like(W),
                     pen.ab_subgradient(_ab_parts(problem, W),
                                        _ab_parts(problem, g + nK), t, fixed))
        r = _ab_ball_residual(problem, gammas, W, g + S)
        nK = r - g - S
        best = min(best, float(np.sum(r * r * row_weight)))
    if memory is not None:
        memory["nK"] = nK
    return best


def ab_prox_rows(penalties, lam: Array, rho: float) -> Array:
    """The weights c_i of the (A, B) block's proximal term sum_i c_i / 2 ||w_i - w0_i||^2 in
    the lam-weighted block objective (training units), given the ``penalties`` that read A
    or B (``problem.penalties_reading("A", "B")``): shape (n,).

    - ``rho * lam_i`` without such a penalty (row i's divergence and its proximal term both
      count lam_i times), the unpenalized block;
    - ``rho * max(lam)`` on every row with one, whatever the penalty and however it is
      spelled (named, a callable, ``Custom``): the weights depend only on which matrices
      the penalties read, so every spelling poses one block problem. Uniform weights make
      the block rho max(lam)-strongly convex instead of rho min(lam): as well conditioned
      as one row where lam spreads over a factor of tens after a few stages, which a
      coupled penalty whose prox has no per-row metric (the nuclear norm, one FISTA step
      max(lam) L0 + c for all rows) needs; row-separable and per-row-metric penalties
      take them in their own metrics.

    Any positive weights give a valid proximal BCD block (the block objective never
    increases); the first-order blocks (:func:`fast_ab_penalized`,
    :func:`fenchel_idl.blocks.lipschitz.fast_ab_lipschitz`) and the CVXPY blocks
    (:meth:`fenchel_idl.blocks.cvxpy_blocks.Blocks.solve_ab`, joint and row batches) all
    take theirs from here, so they solve one problem.
    """
    lam = np.asarray(lam, dtype=float)
    return np.full(lam.shape, rho * float(lam.max())) if len(penalties) else rho * lam


def fast_ab_penalized(problem, X, lam: Array, gammas: Array, pen, fixed: dict[str, Array],
                      W0: Array, tol: float = 1e-7, rho: float | None = None,
                      max_iter: int = 20000, prox: float = AB_PROX
                      ) -> tuple[Array, Array, Array, SolveInfo]:
    """The proximal (A, B) step with a penalty P on A or B, by FISTA with the proximal map
    of P + the balls (:func:`ab_penalty_prox`)::

        min_W  sum_i lam_i (1/m) [ 1/2 ||(w_i V)_+ - x_i||^2 + x_i^T (w_i V)_- ]
               + sum_i c_i / 2 ||w_i - w0_i||^2 + P(A, B; C, D)   over the balls,

    the CVXPY block's objective, with the proximal weights c of :func:`ab_prox_rows`
    (rho max(lam) on every row: P reads A or B). FISTA minimizes it scaled per row by
    1 / s_i: s = lam for a row-separable P (the rows apart, each as one row whatever the
    spread of lam, as the row batches do; row i's proximal weight is then c_i / lam_i),
    else s = 1. The scaled objective is 1-strongly convex in the norm sum_i (c_i / s_i)
    ||w_i||^2, so ``F(W) - F* <= sum_i s_i ||e_i||^2 / (c_i / s_i) / 2`` in training
    units for any e in the scaled dF(W) (:func:`ab_penalty_residual`), the certificate,
    taken at the proximal-gradient point of the last check, which is the point returned.
    ``fixed`` holds C and D.

    The rows' divergences are posed in the stable form 1/2 (x - z+)^2 + x z- (no constant;
    see :func:`fast_ab_block`), and the value and the gap are in units of the training
    objective. ``rho`` defaults to :func:`ab_prox_weight` with weight ``prox``."""
    t0 = time.perf_counter()
    n, p, m = problem.n, problem.p, problem.m
    V = np.vstack([X, problem.U] + ([np.ones((1, m))] if problem.bias else []))
    L0 = float(np.linalg.norm(V, 2)) ** 2 / m
    rho = ab_prox_weight(L0, prox) if rho is None else rho
    lam = np.asarray(lam, dtype=float)[:, None]
    prox_rows = ab_prox_rows([pen], lam[:, 0], rho)[:, None]  # c, training units
    s = lam if pen.row_separable else np.ones_like(lam)
    lc, cw, tw = lam / s, prox_rows / s, 1.0 / s  # divergence, proximal, penalty weights
    # steps per row (a diagonal metric) where the penalty's prox takes one, else one step
    L = lc * L0 + cw if pen.ab_metric else float(np.max(lc * L0 + cw))
    rw = s / cw  # squared residual per row -> twice the gap in training units

    def row_values(Wc):
        Z = Wc @ V
        Zp = np.maximum(Z, 0.0)
        Ex = Zp - X
        Dw = Wc - W0
        return np.sum(0.5 * Ex * Ex + X * (Zp - Z), axis=1) / m, Ex, Dw

    def grad_obj(Wc):
        rows, Ex, Dw = row_values(Wc)
        f = float(np.sum(lc[:, 0] * rows) + 0.5 * np.sum(cw * Dw * Dw))
        return f, lc * ((Ex @ V.T) / m) + cw * Dw

    def full(Wc):
        """The value in units of the training objective: lam-weighted rows, the proximal
        term and P."""
        rows, _, Dw = row_values(Wc)
        return float(lam[:, 0] @ rows + 0.5 * np.sum(prox_rows * Dw * Dw)) \
            + pen.ab_value(_ab_parts(problem, Wc), fixed)

    prox = ab_penalty_prox(problem, gammas, pen, tw / L, fixed,  # per row when L is
                           eta=_DYKSTRA_ETA)
    exact = pen.name == "l1"  # the prox is exact in closed form (the step bound below)
    last: dict = {}
    residual_memory: dict = {}  # the residual's normal vector, from check to check

    def certificate(Wc, f, g):
        # at the proximal-gradient point W+ = prox(W - g / L) the support is right sooner
        # than at W; with an exact prox, L (W - W+) + grad(W+) - g lies in dF(W+)
        Wp = prox(Wc - g / L)
        _, gp = grad_obj(Wp)
        sq = ab_penalty_residual(problem, gammas, pen, Wp, gp, fixed, tw, rw,
                                 memory=residual_memory)
        if exact:
            e = L * (Wc - Wp) + gp - g
            sq = min(sq, float(np.sum(e * e * rw)))
        full_p = full(Wp)
        last.update(point=Wp, f=full_p, gap=0.5 * sq)
        # fista compares the gap with tol * max(1, |f|) for its own f (the smooth part)
        return last["gap"] * max(1.0, abs(f)) / max(1.0, abs(full_p))

    # a check (a prox, a gradient, the residual and the value) costs several iterations,
    # and these solves run hundreds: checking every 20 overshoots by 10 on average
    _, _, _, iters = fista(grad_obj, prox, certificate, W0, L, tol, max_iter,
                           check_every=20)
    Wn, f, gap = last["point"], last["f"], last["gap"]
    info = fista_info("AB", f, gap, iters, tol, t0)
    b = Wn[:, n + p] if problem.bias else np.zeros(n)
    return Wn[:, :n], Wn[:, n:n + p], b, info


def ab_prox_weight(L: float, prox: float = AB_PROX) -> float:
    """Weight rho of the proximal term rho/2 ||W - W0||^2 of the (A, B) block: ``prox``
    times the curvature bound ||V||^2 / m of its smooth part.

    The default, 1e-5, keeps the step close to the block's own minimizer. A larger weight
    damps the step in the directions of small curvature (the rows of V with little spread)
    and keeps the rows nearer their start: on scikit-learn's digits, 1e-2 reached a better
    validation accuracy in fewer sweeps (``problems/digits.toml``). A much smaller one
    weakens the strong convexity the gap bound relies on, so the solves take many more
    iterations.
    """
    return prox * L


# ----------------------------------------------------------------------------------------
# The (C, D) block without CVXPY: balls on the rows of C and D, no penalty
# ----------------------------------------------------------------------------------------
def fast_readout_apply(problem) -> bool:
    """Whether the first-order (C, D) solvers below cover this problem: no penalty reads C
    or D (:func:`penalty_reads`), so the block's only constraints are the row l1 balls
    ``bounds.C`` and ``bounds.D``; penalties on A or B are constants of this block."""
    return not problem.penalties_reading("C", "D")


def readout_projector(problem) -> Callable[[Array], Array]:
    """Euclidean projection of K = [C, D, d] onto the (C, D) block's feasible set: one l1
    ball per row of C (radius ``bounds.C``) and of D (``bounds.D``); d is free."""
    n, p = problem.n, problem.p
    beta_c, beta_d = problem.bounds.C, problem.bounds.D

    def project(Kc: Array) -> Array:
        out = Kc.copy()
        if beta_c is not None:
            out[:, :n] = project_l1_rows(Kc[:, :n], np.full(Kc.shape[0], beta_c))
        if beta_d is not None:
            out[:, n:n + p] = project_l1_rows(Kc[:, n:n + p], np.full(Kc.shape[0], beta_d))
        return out

    return project


def readout_min_norm_sq(problem, K: Array, g: Array) -> float:
    """Squared norm of the minimal-norm element of g + N(K) for :func:`readout_projector`'s
    set (the strong-convexity gap bound of a proximal (C, D) step is this over 2 rho)."""
    n, p = problem.n, problem.p
    q = K.shape[0]
    total = float(np.sum(g[:, n + p:] ** 2))
    for sl, beta in ((slice(0, n), problem.bounds.C), (slice(n, n + p), problem.bounds.D)):
        if beta is None:
            total += float(np.sum(g[:, sl] ** 2))
        else:
            total += float(np.sum(_min_norm_l1(g[:, sl], K[:, sl], np.full(q, beta))))
    return total


def fast_k_step(problem, G: Array, Hl: Array, K0: Array, curvature: float, prox: float,
                tol: float = 1e-7, max_iter: int = 20000) -> tuple[Array, SolveInfo]:
    """The proximal (C, D) step on a quadratic loss through its Gram statistics::

        min_K  l/(2m) [tr(K G K^T) - 2 tr(K Hl^T)] + rho/2 ||K - K0||^2   (K in the balls)

    with rho = prox * l lambda_max(G) / m, by FISTA; certified by ``||g_min||^2 / (2 rho)``
    as the (A, B) step. The cost per iteration is q k^2, whatever m."""
    t0 = time.perf_counter()
    m = problem.m
    c = float(curvature) / m
    L0 = c * max(_gram_lmax(G), 1e-300)
    rho = prox * L0

    def grad_obj(Kc):
        KG = Kc @ G
        Dk = Kc - K0
        obj = 0.5 * c * float(np.sum(KG * Kc)) - c * float(np.sum(Kc * Hl)) \
            + 0.5 * rho * float(np.sum(Dk * Dk))
        return obj, c * (KG - Hl) + rho * Dk

    def certificate(Kc, f, g):
        return readout_min_norm_sq(problem, Kc, g) / (2.0 * rho)

    Kn, f, gap, iters = fista(grad_obj, readout_projector(problem), certificate, K0,
                               L0 + rho, tol, max_iter)
    info = fista_info("CD", f, gap, iters, tol, t0)
    return Kn, info


class CentredGram:
    """What the W steps (:func:`fast_w_step`) on one Gram matrix G = sum_j v_j v_j^T share:
    the scale of the proximal weight and, with a bias, the centred coordinates of the step.

    With a bias (the last entry of v_j is 1), a row w = (w_, b) of W = [A, B, b] acts on
    v_j through w_^T (v_j_ - mu) + b', with mu the mean of the v_j_ (read off G: its last
    column over its last entry, the sample count) and b' = b + w_^T mu. In the coordinates
    (w_, b') the Gram matrix is block diagonal, diag(G_c, m), G_c the centred Gram matrix.
    For nonnegative features (pixels, ReLU states) the mean direction carries most of G:
    on a batch of 2,000 MNIST images with n = 128 states the largest eigenvalue of G / m is
    115.5, of G_c / m 7.2, so the W step's condition number falls from 1,000 to 63 at the
    same proximal weight (measured: 175 FISTA iterations to a gap of 1e-6 against 40).
    The W step's proximal term is taken in these coordinates, rho/2 (||w_ - w0_||^2 +
    (b' - b0')^2): the change of the weights and of the row's mean pre-activation, a
    quadratic that vanishes at W0 as ||W - W0||^2 does."""

    def __init__(self, problem, G: Array):
        m = float(G[-1, -1]) if problem.bias else None
        self.lmax = _gram_lmax(G)  # of G, unnormalized: the proximal weight's scale
        self.mu = G[:-1, -1] / m if m else None
        if self.mu is None:
            self.G, self.L = G, self.lmax
            return
        Gc = G - np.outer(G[:, -1], G[-1, :]) / m
        Gc[-1, -1] = m
        Gc[-1, :-1] = Gc[:-1, -1] = 0.0
        self.G, self.L = Gc, _gram_lmax(Gc)

    def to_centred(self, W: Array) -> Array:
        """(w_, b) -> (w_, b' = b + w_^T mu), row by row (a copy)."""
        out = np.array(W, dtype=float)
        if self.mu is not None:
            out[:, -1] += W[:, :-1] @ self.mu
        return out

    def from_centred(self, W: Array) -> Array:
        out = np.array(W, dtype=float)
        if self.mu is not None:
            out[:, -1] -= W[:, :-1] @ self.mu
        return out

    def prox_gradient(self, D: Array) -> Array:
        """T^T T D in the original coordinates, T = :meth:`to_centred` (the gradient of
        1/2 ||T D||^2)."""
        E = self.to_centred(D)
        if self.mu is not None:
            E[:, :-1] += np.outer(E[:, -1], self.mu)
        return E

    def prox_extremes(self) -> tuple[float, float]:
        """The smallest and largest eigenvalues of T^T T on one row."""
        if self.mu is None:
            return 1.0, 1.0
        a2 = float(self.mu @ self.mu)
        root = np.sqrt(a2 * (4.0 + a2))
        return 2.0 / (2.0 + a2 + root), (2.0 + a2 + root) / 2.0


def _gram_lmax(G: Array) -> float:
    """The largest eigenvalue of the symmetric positive semidefinite matrix G: by Lanczos
    (ARPACK) from a fixed start vector, so that runs repeat bit for bit, to 1e-12 relative
    (the callers use it as a step size and as the scale of a proximal weight; their
    certificates do not depend on it); by a full eigendecomposition below 64 rows. At
    k = 913 (MNIST, n = 128) Lanczos takes 16-50 ms where the eigendecomposition takes 76
    (measured on one thread), and the W and K steps of a batch need five of them."""
    if G.shape[0] < 64:
        return float(np.linalg.eigvalsh(G)[-1])
    return float(eigsh(G, k=1, which="LA", return_eigenvectors=False, v0=np.ones(G.shape[0]),
                       tol=1e-12)[0])


def fast_w_step(problem, G: Array, T: Array, Ha: Array, W0: Array, prox: float, tol: float,
                lam: Array, max_iter: int = 20000, metric: CentredGram | None = None,
                centred: bool = True) -> tuple[Array, SolveInfo]:
    """The (A, B) step on the quadratic majorizer of the divergences, through its Gram
    statistics (the W step of :mod:`fenchel_idl.drivers.minibatch`)::

        min_W  sum_i lam_i [ (1/m)(gamma_i/2 w_i^T G w_i - w_i^T (gamma_i Ha_i + T_i))
                             + rho/2 ||T_c (w_i - w0_i)||^2 ]     (W in the balls)

    with m = G's sample count, T_c the centring of :class:`CentredGram` (the identity
    without a bias) and rho = prox * lambda_max(G) / m, as :func:`ab_prox_weight` does for
    the (A, B) block. By FISTA, certified by ``||g_min||^2 / (2 rho_min)`` (rho_min the
    proximal term's strong convexity), the value taken relative to W0's: the majorizer's
    constant is not tracked, and without it the value is a large number whose relative gap
    would allow absolute errors far above the training objective. The rows' values and
    gaps are weighted by lam (row i counts lam_i times in the training objective); lam does
    not move the minimizer. Each iteration costs n k^2, whatever m.

    FISTA runs in the centred coordinates, where b' is free and the balls of A and B are
    unchanged: that minimum is over a larger set, so its certificate bounds the gap of the
    returned W too when W keeps |b| within its box. When the box binds, or with
    ``centred=False`` (the benchmark's baseline), the same problem is solved in the
    original coordinates, where its proximal term is not diagonal (a slower solve).
    ``metric``: the :class:`CentredGram` of G when the caller already has it."""
    t0 = time.perf_counter()
    n = problem.n
    m = problem.m
    gam = state_lipschitz(problem.activation, n)
    metric = CentredGram(problem, G) if metric is None else metric
    lin = gam[:, None] * Ha + T
    gc = gam[:, None] / m
    lam = np.asarray(lam, dtype=float)
    rho = prox * metric.lmax / m
    exact = ab_projector(problem, gam)
    gmax = float(gam.max())

    def solve(Gm, lin, W_start, centre, prox_grad, project, free_bias, rho_min, L):
        def rows(Wc):
            WG = Wc @ Gm
            D = Wc - centre
            PD = prox_grad(D)
            return (0.5 * np.sum(gc * WG * Wc, axis=1) - np.sum(Wc * lin, axis=1) / m
                    + 0.5 * rho * np.sum(D * PD, axis=1)), gc * WG - lin / m + rho * PD

        start = float(lam @ rows(centre)[0])

        def grad_obj(Wc):
            r, g = rows(Wc)
            return float(lam @ r) - start, g

        def certificate(Wc, f, g):
            if free_bias:  # b' is unconstrained: its gradient counts in full
                Wc = Wc.copy()
                Wc[:, -1] = 0.0
            return float(lam @ ab_min_norm_rows(problem, gam, Wc, g)) / (2.0 * rho_min)

        return fista(grad_obj, project, certificate, W_start, L, tol, max_iter)

    iters = 0
    Wn = W0
    if metric.mu is not None and centred:
        def relaxed(Wc):  # the balls of A and B; b' free
            out = exact(Wc)
            out[:, -1] = Wc[:, -1]
            return out

        lin_c = lin.copy()
        lin_c[:, :-1] -= np.outer(lin[:, -1], metric.mu)
        W0c = metric.to_centred(W0)
        Wc, f, gap, iters = solve(metric.G, lin_c, W0c, W0c, lambda D: D, relaxed, True, rho,
                                  gmax * metric.L / m + rho)
        Wn = metric.from_centred(Wc)
        beta = problem.bounds.B
        if beta is None or np.max(np.abs(Wn[:, -1])) <= beta:
            return Wn, fista_info("AB", f, gap, iters, tol, t0)
    lo, hi = metric.prox_extremes()
    Wn, f, gap, more = solve(G, lin, exact(Wn), W0, metric.prox_gradient, exact, False,
                             rho * lo, gmax * metric.lmax / m + rho * hi)
    return Wn, fista_info("AB", f, gap, iters + more, tol, t0)


def ce_readout_lower_bound(problem, V: Array, Y: Array, P: Array) -> float:
    """A Fenchel-dual lower bound on the cross-entropy (C, D) block, from softmax outputs P.

    The block is min_K (1/m) sum_j l_j(K v_j) over the balls, l_j(z) = lse(z) - y_j^T z,
    whose conjugate is l_j*(theta) = sum_c p_c log p_c for p = theta + y_j in the simplex.
    For any such p_j with sum_j p_j = sum_j y_j (so that the free bias d drops out),
    Fenchel-Young gives, for every feasible K, with M = (P - Y) V^T / m,

        (1/m) sum_j l_j(K v_j) >= -(1/m) sum_jc p_jc log p_jc
                                  - beta_C sum_r ||M_C,r||_inf - beta_D sum_r ||M_D,r||_inf.

    P (the softmax at the current K) is first mixed with one distribution pi,
    p_j' = (1 - t) p_j + t pi, with the smallest t that makes the class totals match; at
    the optimum t = 0 and the bound is tight. Returns -inf when a ball is missing (the bound
    then needs M = 0 on that block exactly).
    """
    m = V.shape[1]
    n, p = problem.n, problem.p
    beta_c, beta_d = problem.bounds.C, problem.bounds.D
    if beta_c is None or beta_d is None:
        return -np.inf
    counts = Y.sum(axis=1)
    mass = P.sum(axis=1)
    t = float(np.max(np.maximum(1.0 - counts / np.maximum(mass, 1e-300), 0.0)))
    if t > 0.0:
        pi = (counts - (1.0 - t) * mass) / (t * m)
        P = (1.0 - t) * P + t * np.maximum(pi, 0.0)[:, None]
    Pl = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
    M = (P - Y) @ V[:n + p].T / m
    sigma = beta_c * float(np.abs(M[:, :n]).max(axis=1).sum()) \
        + beta_d * float(np.abs(M[:, n:]).max(axis=1).sum())
    return -float(Pl.sum()) / m - sigma


#: Up to this size of the exponential-cone program (:func:`ce_program_size`) the
#: cross-entropy readout is Clarabel's (the CVXPY block), past it FISTA's
#: (:func:`fast_ce_readout`). Small programs are cheap for Clarabel, while FISTA's dual
#: certificate is weak there (the optimal set is nearly flat and the softmax of a primal
#: point is a poor dual point), so it often cannot certify; large ones are faster by FISTA.
_CE_FISTA_MIN_SIZE = 50_000

#: Largest number of exponential cones (q m) for which an uncertified FISTA readout falls
#: back to the CVXPY block: the exponential-cone program's time and memory grow with the
#: number of cones and do not fit at MNIST scale. Past it the FISTA readout is kept and its
#: record says it is not certified, with its gap.
_CE_CVXPY_MAX_CONES = 20_000

#: Features V (n + p + 1 by m) of at least this many entries run the first-order readout's
#: products on every core (:func:`fast_ce_readout`): MNIST's 913 x 60,000 has 5.5e7.
_CE_WIDE_MIN = 5_000_000

#: Iteration budget of the first-order readout before it falls back: large enough that the
#: readout certifies at digits scale, since a fallback to Clarabel costs far more than the
#: extra iterations.
_CE_READOUT_ITER = 20_000

#: Factor by which the backtracking readout shrinks its curvature estimate every iteration
#: (it doubles it while the sufficient decrease fails).
_CE_SHRINK = 0.9


def pack_cd(problem, C: Array, D: Array, d: Array) -> Array:
    """K = [C, D, d] (d only with a bias): the (C, D) block's variable as one matrix."""
    return np.hstack([C, D] + ([d[:, None]] if problem.bias else []))


def unpack_cd(problem, K: Array) -> tuple[Array, Array, Array]:
    """(C, D, d) from K = [C, D, d] (d = 0 without a bias); copies."""
    n, p = problem.n, problem.p
    d = K[:, n + p].copy() if problem.bias else np.zeros(problem.q)
    return K[:, :n].copy(), K[:, n:n + p].copy(), d


def ce_program_size(problem) -> int:
    """Nonzeros of the cross-entropy readout's cone constraints: q m cones, each reading the
    n + p + 1 entries of one row of [C, D, d]."""
    return problem.q * problem.m * (problem.n + problem.p + 1)


def ce_readout(problem, X: Array, K0: Array | None, cvxpy_block: Callable[[], tuple],
               uncertified: Callable[[SolveInfo], None], tol: float,
               max_iter: int | None = None,
               first_order: bool = True) -> tuple[Array, Array, Array, SolveInfo]:
    """The cross-entropy (C, D) readout on all samples at the states X, by the one rule of
    :func:`fenchel_idl.solve_bcd` and :func:`fenchel_idl.solve_bcd_minibatch`.

    With ``first_order`` (no penalty, no forced solver) and a program larger than
    ``_CE_FISTA_MIN_SIZE``, FISTA from K0 = [C, D, d] (None: no readout yet, see
    :func:`fast_ce_readout`) with its dual certificate, for
    ``max_iter`` iterations (default ``_CE_READOUT_ITER``). An uncertified result is passed
    to ``uncertified`` (which records it, or raises), then replaced by ``cvxpy_block()`` when
    the program has at most ``_CE_CVXPY_MAX_CONES`` cones, or else kept. Otherwise
    ``cvxpy_block()``. Returns (C, D, d, record).
    """
    if first_order and ce_program_size(problem) > _CE_FISTA_MIN_SIZE:
        K, info = fast_ce_readout(problem, X, K0, tol=tol,
                                  max_iter=_CE_READOUT_ITER if max_iter is None else max_iter)
        if not info.certified:
            uncertified(info)
        if info.certified or problem.q * problem.m > _CE_CVXPY_MAX_CONES:
            return (*unpack_cd(problem, K), info)
    return cvxpy_block()


def _least_squares_start(problem, V: Array, Y: Array) -> Array:
    """The start of a cross-entropy readout without one: the least-squares fit K V ~ Y of
    the one-hot labels (a ridge of 1e-8 of G's mean eigenvalue covers a singular G, e.g. a
    constant pixel), projected onto the balls: the same classes score high as at the
    optimum, where 0 scores every class alike. Whether FISTA certifies sooner from there
    depends on the data (``fenchel-idl bench --only ce_readout`` compares both starts). It
    costs one k x k Gram matrix, about k / (2q) FISTA iterations."""
    G = V @ V.T
    G[np.diag_indices_from(G)] += 1e-8 * max(float(np.trace(G)) / G.shape[0], 1e-300)
    K = np.linalg.solve(G, V @ Y.T).T
    return readout_projector(problem)(K)


def _ce_value(Z: Array, Y: Array) -> tuple[float, Array]:
    """The mean cross-entropy of the logits Z (q x m) and their softmax. log-sum-exp
    inline: scipy.special.logsumexp's argument handling costs more than the arithmetic of
    a tiny problem's iteration."""
    mx = Z.max(axis=0)
    E = np.exp(Z - mx)
    s = E.sum(axis=0)
    return float(np.sum(np.log(s) + mx) - np.sum(Y * Z)) / Z.shape[1], E / s


def _ce_fista(pb, V: Array, Y: Array, K0: Array, L_max: float, tol: float, max_iter: int,
              check_every: int = 10) -> tuple[Array, float, float, int]:
    """FISTA with backtracking on the step and adaptive restart for the cross-entropy
    readout over the balls: (K, objective, gap, iterations).

    Boehning's bound L_max = ||V||^2 / (2m) holds everywhere, but where the softmax is
    confident the curvature is far smaller, and a step of 1/L_max crawls. Each iteration
    takes the step 1/L with L shrunk by ``_CE_SHRINK`` and doubled until the sufficient
    decrease f(K+) <= f(Y) + <g, K+ - Y> + L/2 ||K+ - Y||^2 holds (never past L_max,
    where it holds by Boehning). The logits of the extrapolated point are the same
    combination of the iterates' logits, so an iteration costs one product with V for
    the gradient and one per trial step, as the fixed step does. The certificate is
    the same duality gap (:func:`ce_readout_lower_bound`), every ``check_every``
    iterations."""
    m = V.shape[1]
    project = readout_projector(pb)
    x = project(K0)
    Zx = x @ V
    fx, Px = _ce_value(Zx, Y)
    gap = fx - ce_readout_lower_bound(pb, V, Y, Px)
    y, Zy, fy, Py, t = x, Zx, fx, Px, 1.0
    L, it = L_max * _CE_SHRINK, 0
    while gap > tol * max(1.0, abs(fx)) and it < max_iter:
        it += 1
        g = (Py - Y) @ V.T / m
        while True:
            xn = project(y - g / L)
            Zn = xn @ V
            fn, Pn = _ce_value(Zn, Y)
            d = xn - y
            model = fy + float(np.vdot(g, d)) + 0.5 * L * float(np.vdot(d, d))
            if fn <= model + 1e-15 * abs(fy) or L >= L_max:
                break
            L = min(2.0 * L, L_max)
        if float(np.vdot(y - xn, xn - x)) > 0.0:
            t = 1.0  # restart the momentum
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        y, Zy = xn + beta * (xn - x), Zn + beta * (Zn - Zx)
        fy, Py = _ce_value(Zy, Y)
        x, Zx, fx, Px, t = xn, Zn, fn, Pn, t_new
        L *= _CE_SHRINK
        if it % check_every == 0 or it == max_iter:
            gap = fx - ce_readout_lower_bound(pb, V, Y, Px)
    return x, fx, gap, it


def fast_ce_readout(problem, X: Array, K0: Array | None = None, tol: float = 1e-7,
                    max_iter: int = _CE_READOUT_ITER, backtracking: bool = True
                    ) -> tuple[Array, SolveInfo]:
    """The cross-entropy (C, D) block on all samples, by FISTA over the balls, certified by
    the duality gap of :func:`ce_readout_lower_bound` (no CVXPY: the exponential-cone
    program has q m cones and does not fit memory at MNIST scale).

    Features V (n + p + 1 by m) of at least ``_CE_WIDE_MIN`` entries make products of
    q x m outputs, which gain from BLAS threads: they run on
    :func:`fenchel_idl._blas.wide_blas_limit` threads.

    Without ``K0`` (no readout yet, as at a random-feature start) FISTA starts from the
    least-squares fit of the one-hot labels projected onto the balls
    (:func:`_least_squares_start`), not from 0.

    With ``backtracking`` (the default) the steps adapt to the local curvature
    (:func:`_ce_fista`); ``False`` keeps the fixed step of Boehning's global bound (the
    benchmark's baseline, ``fenchel-idl bench --only ce_readout``).

    Returns K = [C, D, d] and the record; the gap is relative, (f - lower) / max(1, |f|).
    """
    t0 = time.perf_counter()
    pb = problem
    m = pb.m
    V = np.vstack([X, pb.U, np.ones((1, m))]) if pb.bias else np.vstack([X, pb.U])
    Y = pb.Y
    mu = None
    if pb.bias:
        # With a free bias d, K v = [C, D] (v - mu) + (d + [C, D] mu): solving for
        # d' = d + [C, D] mu on centred features changes neither the objective nor the balls,
        # and removes the mean direction that dominates ||V|| for nonnegative inputs (pixels,
        # ReLU states), which makes the problem badly conditioned.
        mu = V[:-1].mean(axis=1)
        V[:-1] -= mu[:, None]
    if K0 is None:
        K0 = _least_squares_start(pb, V, Y)  # in the centred coordinates already
    else:
        K0 = np.array(K0, dtype=float)
        if mu is not None:
            K0[:, -1] += K0[:, :-1] @ mu
    # Boehning: the Hessian of lse is at most 1/2 I, so L = ||V||^2 / (2m)
    L = 0.5 * float(np.linalg.norm(V, 2)) ** 2 / m

    def grad_obj(Kc):
        f, P = _ce_value(Kc @ V, Y)
        return f, (P - Y) @ V.T / m

    def certificate(Kc, f, g):
        return f - ce_readout_lower_bound(pb, V, Y, softmax(Kc @ V, axis=0))

    with blas_threads(wide_blas_limit() if V.size >= _CE_WIDE_MIN else None):
        if backtracking:
            Kn, f, gap, iters = _ce_fista(pb, V, Y, K0, L, tol, max_iter)
        else:
            Kn, f, gap, iters = fista(grad_obj, readout_projector(pb), certificate, K0, L,
                                       tol, max_iter, check_every=10)
    if mu is not None:
        Kn[:, -1] -= Kn[:, :-1] @ mu
    info = fista_info("readout", f, gap, iters, tol, t0, "duality gap")
    return Kn, info
