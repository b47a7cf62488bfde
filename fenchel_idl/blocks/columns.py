"""The (B, D) column block of the relaxed problem, for the feature-selection penalty (5.1).

With P = w sum_j ||(B; D) e_j||_2 the column j of (B; D) is split between the (A, B) block
and the (C, D) block: each sees the other half fixed, and while that half is not zero the
group norm is smooth in its own half, so neither block ever sets the column to exactly 0.
With A, C and X fixed the relaxed objective is jointly convex in (B, b, D, d): the ReLU
divergence is convex in Z = A X + B U + b, the loss is convex in C X + D U + d. This module
solves that joint block::

    min  sum_i lam_i (1/m) [1/2 ||(Z_i)_+||^2 - <X_i, Z_i>]  +  L(Y, C X + D U + d)
         + rho/2 sum_r c_r ||k_r - k0_r||^2  +  w sum_j ||(B; D) e_j||_2
    s.t. ||B_i||_1 <= beta_B, |b_i| <= beta_B, ||D_k||_1 <= beta_D

over the rows k_r of K = [[B, b], [D, d]] (c_r = lam_r on the state rows, 1 on the output
rows), by proximal FISTA in the diagonal metric c (one step per row) with the proximal map
of the column norms and the balls (block soft-thresholding of the columns, proximal
Dykstra with the balls' projection): exact zero columns. The proximal term (proximal BCD:
the relaxed objective still never increases) makes the block rho-strongly convex in the
metric c, and the certificate is the bound ``F(K) - F* <= sum_r ||e_r||^2 / c_r / (2 rho)``
for an element e of dF(K), taken at the proximal-gradient point that is returned, as for
:func:`fenchel_idl.blocks.first_order.fast_ab_penalized`. A column is 0 at the optimum iff
the gradient of the smooth part w.r.t. that column, at 0, has norm at most w (without
active balls).

The same solver with the state rows fixed (``states=False``: the penalty is then
``w sum_j sqrt(||D e_j||^2 + ||B e_j||^2)``) polishes the certified (C, D) readout
(:class:`PolishedReadout`): a zero column of B gets an exact zero column of D, so
:func:`fenchel_idl.selected_features` needs no tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.block_solvers import (BlockSolver, BlockSolvers, Fallback, SolvePolicy,
                                              State)
from fenchel_idl.blocks.first_order import _l1_ball_residual, ab_prox_weight, fista, fista_info
from fenchel_idl.blocks.gram import GramReadout
from fenchel_idl.blocks.routing import column_penalty, columns_apply, columns_readout_apply
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.errors import SolverError
from fenchel_idl.problem.penalties import FeatureSelection
from fenchel_idl.problem.projection import project_l1_rows

__all__ = [
    "ColumnBlockSolvers",
    "ColumnsBlock",
    "ColumnsReadout",
    "PolishedReadout",
    "fast_bd_block",
    "fast_cd_columns",
    "with_column_block",
]

Array = NDArray[np.float64]


@dataclass
class _Layout:
    """Rows and balls of K: the state rows [B, b] (when free), then the output rows [D, d]."""

    n_state: int   # free state rows (n, or 0 when B is fixed)
    p: int
    bias: bool
    beta_b: float | None
    beta_d: float | None

    def project(self, K: Array) -> Array:
        """Euclidean projection onto the balls (per row, so also in the row metric)."""
        out = K.copy()
        ns, p = self.n_state, self.p
        if self.beta_b is not None and ns:
            out[:ns, :p] = project_l1_rows(K[:ns, :p], np.full(ns, self.beta_b))
            if self.bias:
                out[:ns, p] = np.clip(K[:ns, p], -self.beta_b, self.beta_b)
        if self.beta_d is not None:
            out[ns:, :p] = project_l1_rows(K[ns:, :p], np.full(K.shape[0] - ns, self.beta_d))
        return out

    def inside(self, K: Array) -> bool:
        """Whether every row (and state bias) of K lies in its ball."""
        ns, p = self.n_state, self.p
        if self.beta_b is not None and ns:
            if np.abs(K[:ns, :p]).sum(axis=1).max() > self.beta_b:
                return False
            if self.bias and np.abs(K[:ns, p]).max() > self.beta_b:
                return False
        return self.beta_d is None or K.shape[0] == ns or \
            float(np.abs(K[ns:, :p]).sum(axis=1).max()) <= self.beta_d

    def snap(self, K: Array, rel: float = 1e-9, small: float = 1e-12) -> Array:
        """K with the rows (and biases) within ``rel`` of their ball's boundary scaled onto it,
        so that the boundary test of the certificate sees them there, and entries below
        ``small`` times their row's largest in a row with a ball set to zero (zeros stay
        zeros; the point stays feasible)."""
        out = K.copy()
        ns, p = self.n_state, self.p
        for rows, beta in ((slice(0, ns), self.beta_b), (slice(ns, None), self.beta_d)):
            if beta is None:
                continue
            # entries left at rounding size by the projection's soft-thresholding are zeros
            # (else they count as a support whose sign the normal cone must match)
            blk = out[rows, :p]
            blk[np.abs(blk) <= small * np.abs(blk).max(axis=1, keepdims=True)] = 0.0
            s = np.abs(out[rows, :p]).sum(axis=1)
            near = (s >= (1.0 - rel) * beta) & (s < beta)
            out[rows, :p] *= np.where(near, beta / np.maximum(s, 1e-300), 1.0)[:, None]
        if self.bias and ns and self.beta_b is not None:
            c = out[:ns, p]
            out[:ns, p] = np.where(np.abs(c) >= (1.0 - rel) * self.beta_b,
                                   np.sign(c) * self.beta_b, c)
        return out

    def residual(self, K: Array, g: Array) -> Array:
        """g + n, n the least-norm element of the balls' normal cone at K (per row)."""
        out = np.array(g, copy=True)
        ns, p = self.n_state, self.p
        if self.beta_b is not None and ns:
            out[:ns, :p] = _l1_ball_residual(g[:ns, :p], K[:ns, :p], np.full(ns, self.beta_b))
            if self.bias:
                c, gc = K[:ns, p], g[:ns, p]
                # at b = beta the normal cone is [0, inf): the residual is max(g, 0)
                out[:ns, p] = np.where(c >= self.beta_b, np.maximum(gc, 0.0),
                                       np.where(c <= -self.beta_b, np.minimum(gc, 0.0), gc))
        if self.beta_d is not None:
            nd = K.shape[0] - ns
            out[ns:, :p] = _l1_ball_residual(g[ns:, :p], K[ns:, :p], np.full(nd, self.beta_d))
        return out


def _column_prox(pen: FeatureSelection, lay: _Layout, t: Array, shift: Array | None):
    """The proximal map of P + the balls' indicator in the row metric 1 / t (t of shape
    (rows, 1)): the column-group prox (the penalty's own, on the stacked matrix, with the
    fixed part's column norms ``shift``), alternated with the balls' projection by proximal
    Dykstra (Bauschke and Combettes, 29.2) unless the group prox already lies in the balls (it
    is then the prox of the sum). The value returned is the balls' projection of the
    last group prox (rows within 1e-9 of a boundary put on it): feasible, with that prox's
    exact zero columns."""
    p = lay.p
    fixed = {} if shift is None else {"D": shift}

    def prox_p(K):
        out = K.copy()
        out[:, :p] = pen.ab_prox({"B": K[:, :p]}, t, fixed)["B"]
        return out

    if lay.beta_b is None and lay.beta_d is None:
        return prox_p

    def prox(K):
        y = prox_p(K)
        if lay.inside(y):  # the group prox lies in the balls: it is the prox of the sum
            return y
        x, pd, qd = K, 0.0, 0.0
        for _ in range(200):
            y = prox_p(x + pd)
            pd = x + pd - y
            xn = lay.project(y + qd)
            qd = y + qd - xn
            done = np.linalg.norm(xn - x) <= 1e-13 * (1.0 + np.linalg.norm(xn))
            x = xn
            if done:
                break
        # the balls' projection of the last group prox: its zero columns stay exactly zero
        # (the l1 projection soft-thresholds) and rows over a ball land on its boundary
        return lay.snap(lay.project(y))

    return prox


def _column_residual(pen: FeatureSelection, lay: _Layout, K: Array, g: Array,
                     shift: Array | None, row_weight: Array, rounds: int = 2) -> float:
    """Weighted squared norm sum_r ||e_r||^2 row_weight_r of an element e of
    g + dP(K) + N_balls(K), made small by alternating the penalty's subgradient nearest to
    the rest and the balls' least-norm normal vector (any element bounds the gap)."""
    p = lay.p
    fixed = {} if shift is None else {"D": shift}
    nK = np.zeros_like(K)
    best = np.inf
    for _ in range(rounds):
        S = np.zeros_like(K)
        S[:, :p] = pen.ab_subgradient({"B": K[:, :p]}, {"B": (g + nK)[:, :p]}, 1.0, fixed)["B"]
        r = lay.residual(K, g + S)
        nK = r - g - S
        best = min(best, float(np.sum(r * r * row_weight)))
    return best


def fast_bd_block(problem, A: Array, B: Array, b: Array, C: Array, D: Array, d: Array,
                  X: Array, lam: Array, pen: FeatureSelection, *, states: bool = True,
                  rho: float | None = None, tol: float = 1e-7,
                  max_iter: int = 20000) -> tuple[Array, Array, Array, Array, SolveInfo]:
    """The proximal (B, D) block with the feature-selection penalty (see the module
    docstring), from and around the current (B, b, D, d).

    Parameters
    ----------
    problem : TrainingProblem
        ReLU activation (:func:`columns_apply`).
    A, B, b, C, D, d : ndarray
        The model in the problem's standardized units; A and C stay fixed.
    X : ndarray of shape (n, m)
        The states (fixed).
    lam : ndarray of shape (n,)
        The divergence weights.
    pen : FeatureSelection
    states : bool
        Whether the state rows (B, b) are free; with False only (D, d) move, and B enters
        the penalty as a constant.
    rho : float, optional
        Weight of the proximal term; default :func:`ab_prox_weight` of ||(U; 1)||^2 / m.
    tol, max_iter : float, int
        Relative gap target and iteration cap of FISTA.

    Returns
    -------
    B, b, D, d : ndarray
        The block's solution (B and b unchanged when ``states`` is False).
    info : SolveInfo
        Block "BD" (or "CD" for ``states=False``): the block objective (constant terms left
        out) and its certified gap bound.
    """
    t0 = time.perf_counter()
    m, n, p, bias = problem.m, problem.n, problem.p, problem.bias
    V = np.vstack([problem.U] + ([np.ones((1, m))] if bias else []))
    Y = problem.Y
    ns = n if states else 0
    lay = _Layout(ns, p, bias, problem.bounds.B, problem.bounds.D)
    lam = np.asarray(lam, dtype=float)
    AXc = A @ X if states else None
    CX = C @ X
    XVt = X @ V.T / m if states else None
    L0 = float(np.linalg.norm(V, 2)) ** 2 / m
    rho = ab_prox_weight(L0) if rho is None else float(rho)
    curv = 0.5 if problem.loss.name == "cross_entropy" else 1.0
    lc = np.concatenate([lam, np.ones(problem.q)] if states else [np.ones(problem.q)])[:, None]
    L = lc * (np.concatenate([np.full(ns, L0), np.full(problem.q, curv * L0)])[:, None] + rho)
    K0 = np.vstack(([np.hstack([B] + ([b[:, None]] if bias else []))] if states else [])
                   + [np.hstack([D] + ([d[:, None]] if bias else []))])
    shift = None if states else B

    def grad_obj(Kc):
        Ko = Kc[ns:]
        Yhat = CX + Ko @ V
        f = problem.loss.value(Y, Yhat)
        g = np.empty_like(Kc)
        g[ns:] = problem.loss.grad(Y, Yhat) @ V.T
        if states:
            Z = AXc + Kc[:ns] @ V
            Zp = np.maximum(Z, 0.0)
            f += float(lam @ (0.5 * np.sum(Zp * Zp, axis=1) - np.sum(X * Z, axis=1))) / m
            g[:ns] = lam[:, None] * (Zp @ V.T / m - XVt)
        Dk = Kc - K0
        f += 0.5 * rho * float(np.sum(lc * Dk * Dk))
        return f, g + rho * lc * Dk

    def pen_value(Kc):
        cols = np.sum(Kc[:, :p] ** 2, axis=0) + (0.0 if shift is None
                                                  else np.sum(shift ** 2, axis=0))
        return pen.weight * float(np.sum(np.sqrt(cols)))

    prox = _column_prox(pen, lay, 1.0 / L, shift)
    last: dict = {}

    def certificate(Kc, f, g):
        # the proximal-gradient point, and the same with entries of relative size 1e-7 in
        # the balls' rows set to zero: Dykstra leaves such entries where the exact prox has
        # zeros, and a wrong support spoils the bound; the better bound and its point are kept
        best = None
        Kp0 = prox(Kc - g / L)
        for Kp in (Kp0, lay.snap(Kp0, rel=1e-6 * (p + 1), small=1e-7)):
            fp, gp = grad_obj(Kp)
            gap = _column_residual(pen, lay, Kp, gp, shift, 1.0 / lc) / (2.0 * rho)
            if best is None or gap < best[2]:
                best = (Kp, fp + pen_value(Kp), gap)
        last.update(point=best[0], f=best[1], gap=best[2])
        return last["gap"] * max(1.0, abs(f)) / max(1.0, abs(last["f"]))

    _, _, _, iters = fista(grad_obj, prox, certificate, K0, L, tol, max_iter)
    Kn, f, gap = last["point"], last["f"], last["gap"]
    info = replace(fista_info("BD" if states else "CD", f, gap, iters, tol, t0), abs_gap=gap)
    Bn, bn = (Kn[:ns, :p], Kn[:ns, p] if bias else np.zeros(n)) if states else (B, b)
    Dn, dn = Kn[ns:, :p], (Kn[ns:, p] if bias else np.zeros(problem.q))
    return Bn, bn, Dn, dn, info


def _ball_support(M: Array, beta: float | None) -> float:
    """sup {<M, K> : every row of K in the l1 ball of radius beta} (beta None: no ball)."""
    if beta is None:
        return 0.0 if not np.any(M) else np.inf
    return float(beta) * float(np.abs(M).max(axis=1).sum()) if M.size else 0.0


def _d_conjugate_bound(M: Array, D: Array, c: Array, w: float, beta: float | None) -> float:
    """An upper bound on g*(M) for g(D) = w sum_j sqrt(||D e_j||^2 + c_j^2) + the row l1 balls
    of D: g* <= g1*(M1) + sigma_balls(M - M1) for any split with ||M1 e_j|| <= w, where
    g1*(y) = -c_j sqrt(w^2 - ||y_j||^2) column by column. Two splits are tried, M clipped
    column-wise to norm w, and the gradient of g1 at D (exact at the optimum, where
    M - M1 is the balls' normal vector); the smaller bound is returned."""
    def g1_conj(M1):
        r2 = np.maximum(w * w - np.sum(M1 * M1, axis=0), 0.0)
        return -float(c @ np.sqrt(r2))

    norms = np.linalg.norm(M, axis=0)
    clip = M * np.minimum(1.0, w / np.maximum(norms, 1e-300))
    best = g1_conj(clip) + _ball_support(M - clip, beta)
    if beta is not None:
        den = np.sqrt(np.sum(D * D, axis=0) + c * c)
        live = den > 0
        S = np.where(live, w * D / np.where(live, den, 1.0), clip)
        best = min(best, g1_conj(S) + _ball_support(M - S, beta))
    return best


class _BallActive(Exception):
    """The least-squares C of the reduced readout leaves C's ball."""


def _inside_rows(M: Array, beta: float | None) -> Array:
    """M with every row scaled into the l1 ball of radius beta (a solver's rounding can
    leave a row just outside; scaling keeps its zeros)."""
    if beta is None:
        return M
    norms = np.abs(M).sum(axis=1)
    return M * np.minimum(1.0, beta / np.maximum(norms, 1e-300))[:, None]


class _ReadoutStats:
    """The (C, D) readout of the feature-selection problem in terms of the centred Gram
    matrix G = Vc Vc^T / m of V = [X; U] and H = Yc Vc^T / m (d is eliminated: it is the
    least-squares intercept of K = [C, D]): its objective and duality-gap bound
    (:meth:`bound`) at any feasible K, and the certification of a point from another solver
    (:meth:`certify`)."""

    def __init__(self, problem, X: Array, B: Array, pen: FeatureSelection):
        n, p, m, q = problem.n, problem.p, problem.m, problem.q
        self.n, self.p, self.q, self.bias = n, p, q, problem.bias
        self.beta_c, self.beta_d = problem.bounds.C, problem.bounds.D
        self.pen, self.w, self.B = pen, float(pen.weight), B
        self.c = np.linalg.norm(B, axis=0)
        V = np.vstack([X, problem.U])
        self.mu = V.mean(axis=1) if problem.bias else np.zeros(n + p)
        Vc = V - self.mu[:, None]
        self.ybar = problem.Y.mean(axis=1) if problem.bias else np.zeros(q)
        Yc = problem.Y - self.ybar[:, None]
        self.G, self.H = Vc @ Vc.T / m, Yc @ Vc.T / m
        self.yc2 = float(np.sum(Yc * Yc)) / m
        # Gxx^+ on the states' eigenvectors above rounding level (the others carry no
        # signal: X^T v = 0 up to rounding)
        ev, Q = np.linalg.eigh(self.G[:n, :n])
        keep = ev > max(float(ev[-1]) if n else 0.0, 1e-300) * 1e-13
        Qk = Q[:, keep] / np.sqrt(ev[keep])
        self.Sx = Qk @ Qk.T

    def intercept(self, K: Array) -> Array:
        return self.ybar - K @ self.mu if self.bias else np.zeros(self.q)

    def bound(self, K: Array) -> tuple[float, float]:
        """(F(K), an upper bound on F(K) - F*) for a feasible K = [C, D]: the Fenchel dual
        of the readout at theta (R - E),
        ``F* >= -theta <R - E, Yc> - theta^2 m/2 ||R - E||^2 - sigma_C(-theta g_C)
        - g*(-theta g_D)`` (g the gradients of that dual point, :func:`_d_conjugate_bound`).

        R = (K Vc - Yc) / m are the residuals and E, on a set of rows, R's projection on the
        row space of the centred states (zero on the other rows): those rows then have no
        gradient in C and no part in sigma_C, which removes the beta_C-fold amplification
        of a small error in a row of C inside its ball. The rows corrected are none, those
        of C inside its ball, or all; the largest lower bound is kept (each is valid)."""
        n, p, q, w, c = self.n, self.p, self.q, self.w, self.c
        G, H, yc2, beta_c = self.G, self.H, self.yc2, self.beta_c
        # <R, Yc> = <K, H> - yc2, m ||R||^2 = <K G, K> - 2 <K, H> + yc2, R Vc^T = K G - H;
        # E Xc^T = g_x Gxx^+ Gxx, E Uc^T = g_x Gxx^+ G_xu, <E, Yc> = <g_x Gxx^+, H_x>,
        # m ||R - E||^2 = m ||R||^2 - g_x Gxx^+ g_x^T (E is an orthogonal projection of R)
        KG = K @ G
        a, b = float(np.sum(KG * K)), float(np.sum(K * H))
        g = KG - H
        Dk = K[:, n:]
        full = 0.5 * (a - 2.0 * b + yc2) + w * float(np.sum(np.sqrt(np.sum(Dk ** 2, axis=0)
                                                                     + c * c)))
        gS = g[:, :n] @ self.Sx
        e_y, e_2 = np.sum(gS * H[:, :n], axis=1), np.sum(gS * g[:, :n], axis=1)
        e_x, e_u = gS @ G[:n, :n], gS @ G[:n, n:]
        inside = (np.ones(q, bool) if beta_c is None
                  else np.abs(K[:, :n]).sum(axis=1) < beta_c * (1.0 - 1e-9))
        lower = -np.inf
        for rows in {(), tuple(np.flatnonzero(inside)), tuple(range(q))}:
            r = list(rows)
            gl = g.copy()
            gl[r, :n] -= e_x[r]
            gl[r, n:] -= e_u[r]
            ry = (b - yc2) - float(e_y[r].sum())            # <R - E, Yc>
            rr = (a - 2.0 * b + yc2) - float(e_2[r].sum())  # m ||R - E||^2
            top = float(np.linalg.norm(gl[:, n:], axis=0).max()) if p else 0.0
            for theta in {1.0, min(1.0, (1.0 - 1e-12) * w / top) if top > 0 else 1.0}:
                M = -theta * gl
                lo = (-theta * ry - 0.5 * theta * theta * rr
                      - _ball_support(M[:, :n], beta_c)
                      - _d_conjugate_bound(M[:, n:], Dk, c, w, self.beta_d))
                lower = max(lower, lo)
        return full, max(full - lower, 0.0)

    def certify(self, C: Array, D: Array, tol: float) -> tuple[Array, float, float]:
        """A certified point near another solver's (C, D): (K, F(K), gap bound).

        (C, D) is put in the balls (rows scaled). The solver leaves at its own tolerance the
        columns of D whose zero is optimal, so first the snap: D_j = 0 where B_j = 0 and
        ||grad_{D_j} loss|| < w (1 - 1e-6) (a nonzero optimal column has that norm equal to
        w). If that point is not within tol, proximal-gradient steps on the whole readout
        follow (the column prox makes the same columns exactly zero and the steps tighten
        the dual residual): the first point within tol is returned, else the point of
        least bound (the solver's own among them)."""
        n, G, H, beta_c = self.n, self.G, self.H, self.beta_c
        K = np.hstack([_inside_rows(np.asarray(C, float), beta_c),
                       _inside_rows(np.asarray(D, float), self.beta_d)])
        best, (full, gap) = K, self.bound(K)
        snap = (self.c == 0.0) & (np.linalg.norm((K @ G - H)[:, n:], axis=0)
                                  < self.w * (1.0 - 1e-6))
        snap &= np.any(K[:, n:] != 0.0, axis=0)
        if np.any(snap):
            K = K.copy()
            K[:, n:][:, snap] = 0.0
            f2, g2 = self.bound(K)
            if g2 <= max(gap, tol * max(1.0, abs(f2))):
                best, full, gap = K, f2, g2
        if gap <= tol * max(1.0, abs(full)):
            return best, full, gap
        Lk = max(float(np.linalg.eigvalsh(G)[-1]), 1e-300)
        prox = _column_prox(self.pen, _Layout(0, self.p, False, None, self.beta_d),
                            np.full((self.q, 1), 1.0 / Lk), self.B)
        K = best
        for step in range(1, 201):
            Z = K - (K @ G - H) / Lk
            Z[:, :n] = Z[:, :n] if beta_c is None else project_l1_rows(Z[:, :n], beta_c)
            Z[:, n:] = prox(Z[:, n:])
            K = Z
            if step <= 3 or step % 5 == 0:
                f2, g2 = self.bound(K)
                if g2 < gap:
                    best, full, gap = K.copy(), f2, g2
                if g2 <= tol * max(1.0, abs(f2)):
                    break
        return best, full, gap


def fast_cd_columns(problem, X: Array, B: Array, C: Array, D: Array, pen: FeatureSelection,
                    tol: float = 1e-7, max_iter: int = 20000,
                    exact: Callable[[], tuple[Array, Array, SolveInfo]] | None = None
                    ) -> tuple[Array, Array, Array, SolveInfo]:
    """The squared-loss (C, D) readout with the feature-selection penalty, B fixed::

        min_{C, D, d}  1/(2m) ||C X + D U + d - Y||^2 + w sum_j sqrt(||D e_j||^2 + ||B e_j||^2)
        s.t. ||C_k||_1 <= beta_C, ||D_k||_1 <= beta_D

    C and d are least-squares coefficients given D, so FISTA runs on D alone, on the reduced
    problem min_D f(D) + g(D), f(D) = min_{C, d} of the loss (a quadratic in D whose Gram
    matrix is the Schur complement of the states' block), with the column prox of D and its
    balls (:func:`_column_prox`): a column of D is exactly zero where B's is and zero is
    optimal. The reduced problem drops C's ball; its optimum is the readout's whenever the
    least-squares C lies in that ball. When a check finds C outside it, ``exact()`` (a
    solve of the whole readout, e.g. the CVXPY block on the Gram matrix) supplies (C, D)
    instead, certified by the same bound after :meth:`_ReadoutStats.certify`. Without
    ``exact`` the starting point is returned, not certified.

    The certificate is the Fenchel duality gap of the whole readout (:meth:`_ReadoutStats.
    bound`), computed from the Gram matrix of the centred features, so a check costs
    q k^2 whatever m. Returns (C, D, d, record); d is the least-squares intercept of
    (C, D), and the record's objective is the readout's loss plus penalty, in units of the
    training objective.
    """
    t0 = time.perf_counter()
    st = _ReadoutStats(problem, X, B, pen)
    n, G, H, Sx = st.n, st.G, st.H, st.Sx
    Gr = G[n:, n:] - G[n:, :n] @ Sx @ G[:n, n:]         # the Schur complement
    Gr = 0.5 * (Gr + Gr.T)
    Hr = H[:, n:] - H[:, :n] @ Sx @ G[:n, n:]
    L = max(float(np.linalg.eigvalsh(Gr)[-1]), 1e-300)
    prox = _column_prox(pen, _Layout(0, st.p, False, None, st.beta_d),
                        np.full((st.q, 1), 1.0 / L), B)

    def grad_obj(Dc):
        DG = Dc @ Gr
        return 0.5 * (float(np.sum(DG * Dc)) - 2.0 * float(np.sum(Dc * Hr))), DG - Hr

    last: dict = {}

    def certificate(Dc, f, gr):
        K = np.hstack([(H[:, :n] - Dc @ G[n:, :n]) @ Sx, Dc])   # C(D) by least squares
        if st.beta_c is not None and np.abs(K[:, :n]).sum(axis=1).max() > st.beta_c:
            raise _BallActive
        full, gap = st.bound(K)
        last.update(point=K, f=full, gap=gap)
        return gap * max(1.0, abs(f)) / max(1.0, abs(full))

    try:
        _, _, _, iters = fista(grad_obj, prox, certificate, np.array(D, dtype=float), L, tol,
                               max_iter, check_every=10)
    except _BallActive:
        start = st.intercept(np.hstack([C, D]))
        if exact is None:
            return C, D, start, SolveInfo(
                "CD", "FISTA", "optimal_inaccurate", None, None, None, False,
                time.perf_counter() - t0, 1,
                "the least-squares C leaves its ball: the reduced readout does not apply")
        C2, D2, info2 = exact()
        if C2 is None or info2.status not in ("optimal", "optimal_inaccurate"):
            return C, D, start, replace(info2, certified=False)
        K, full, gap = st.certify(C2, D2, tol)
        rel = gap / max(1.0, abs(full))
        ok = rel <= tol
        note = "C's ball is active: the whole readout was solved and certified by its " \
               "duality gap" + ("" if ok else f" ({rel:.1e}, above tolerance)")
        return K[:, :n], K[:, n:], st.intercept(K), SolveInfo(
            "CD", f"{info2.solver} (Gram)", "optimal" if ok else "optimal_inaccurate", full,
            rel, None, ok, time.perf_counter() - t0, info2.attempt, note, gap)
    K, f, gap = np.array(last["point"]), last["f"], last["gap"]
    info = replace(fista_info("CD", f, gap, iters, tol, t0, "duality gap"), abs_gap=gap)
    return K[:, :n], K[:, n:], st.intercept(K), info


class ColumnsReadout(BlockSolver):
    """The first-order (C, D) readout of a feature-selection problem
    (:func:`fast_cd_columns`); when C's ball is active the readout is solved by the CVXPY
    block on the Gram matrix (:class:`fenchel_idl.blocks.gram.GramReadout`, whose cost does
    not grow with m) and certified by the same duality-gap bound."""

    block = "CD"

    def __init__(self, problem, policy: SolvePolicy):
        self.problem, self.policy = problem, policy
        self.penalty = column_penalty(problem)
        self._gram: GramReadout | None = None

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        def exact():
            # a Gram solve that no solver certifies is an uncertified primary: the Fallback
            # then takes the all-samples readout instead of ending the run
            if self._gram is None:
                self._gram = GramReadout(self.problem)
            G, Hl = self._gram.statistics(s.X)
            try:
                C, D, _, info = self._gram.solve(G, Hl, s.A, s.B, self.policy.cvxpy,
                                                 self.policy.gap_tol,
                                                 self.policy.solvers is None)
            except SolverError as err:
                return None, None, SolveInfo("CD", "CVXPY (Gram)", err.status, None, None,
                                             None, False, 0.0, len(err.attempts), str(err))
            return C, D, info

        C, D, d, info = fast_cd_columns(self.problem, s.X, s.B, s.C, s.D, self.penalty,
                                        tol=self.policy.gap_tol, exact=exact)
        return replace(s, C=C, D=D, d=d), info


class ColumnsBlock(BlockSolver):
    """The joint (B, D) block of :func:`fast_bd_block` as a block solver ("BD"). An
    uncertified solve is kept with its record (the policy records it, or raises); the
    driver's monotonicity check still guards the relaxed objective."""

    block = "BD"

    def __init__(self, problem, policy: SolvePolicy):
        self.problem, self.policy = problem, policy
        self.penalty = column_penalty(problem)

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        B, b, D, d, info = fast_bd_block(self.problem, s.A, s.B, s.b, s.C, s.D, s.d, s.X,
                                         s.lam, self.penalty, tol=self.policy.gap_tol)
        if not info.certified:
            self.policy.uncertified(info)
        return replace(s, B=B, b=b, D=D, d=d), info


def _absolute_gap(info: SolveInfo) -> float | None:
    if info.abs_gap is not None:
        return float(info.abs_gap)
    if info.gap is not None and info.objective is not None:
        return float(info.gap) * max(1.0, abs(float(info.objective)))
    return None


class PolishedReadout(BlockSolver):
    """The certified (C, D) readout of ``readout``, then the proximal (D, d) step of
    :func:`fast_bd_block` (``states=False``) from it, which makes the columns of D exactly
    zero where B's are and zero is optimal.

    The polished point K+ is certified for the readout problem itself: with K0 the readout's
    point and F its objective, F(K+) <= F(K0) + gap_polish (the proximal objective at K+ is
    within its gap of a minimum that is at most F(K0)), so F(K+) - F* <= gap_readout +
    gap_polish, the absolute gap reported. Uncertified readouts are passed on unpolished.
    """

    block = "CD"

    def __init__(self, readout: BlockSolver, problem):
        self.readout, self.problem = readout, problem
        self.policy = readout.policy
        self.blocks = getattr(readout, "blocks", None)
        self.penalty = column_penalty(problem)

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        s1, info = self.readout.solve(s)
        gap1 = _absolute_gap(info)
        if not info.certified or gap1 is None or info.objective is None:
            return s1, info
        zero_b = ~np.any(s1.B != 0.0, axis=0)
        if not np.any(zero_b & np.any(s1.D != 0.0, axis=0)):
            return s1, info  # nothing to polish: D is zero wherever B is
        pb = self.problem
        # first the snap: D_j = 0 where B_j = 0 and zero satisfies the readout's optimality
        # condition ||grad_{D_j} loss|| <= w; F(K+) - F* <= gap1 + (F(K+) - F(K0)), an
        # exact figure (zeroing entries keeps the balls)
        G = pb.loss.grad(pb.Y, s1.C @ s1.X + s1.D @ pb.U + s1.d[:, None])
        ok_zero = zero_b & (np.linalg.norm(G @ pb.U.T, axis=0) <= self.penalty.weight)
        D = s1.D.copy()
        D[:, ok_zero] = 0.0
        s2 = replace(s1, D=D)
        change = self._value(s2) - self._value(s1)
        out = self._polished(info, gap1, change, max(change, 0.0), "snap", 0.0)
        if out.certified:
            return s2, out
        _, _, D, d, info2 = fast_bd_block(pb, s1.A, s1.B, s1.b, s1.C, s1.D, s1.d, s1.X,
                                          s1.lam, self.penalty, states=False,
                                          tol=self.policy.gap_tol, max_iter=500)
        if not info2.certified:
            return s1, info
        s2 = replace(s1, D=D, d=d)
        change = self._value(s2) - self._value(s1)
        out = self._polished(info, gap1, change, float(info2.abs_gap), "FISTA", info2.time)
        return (s2, out) if out.certified else (s1, info)

    def _polished(self, info: SolveInfo, gap1: float, change: float, extra: float,
                  how: str, seconds: float) -> SolveInfo:
        """The SolveInfo of the polished point: objective changed by ``change``, absolute
        gap ``gap1 + extra``, certified when that is within the policy's tolerance."""
        obj = float(info.objective) + change
        total = gap1 + extra
        rel = total / max(1.0, abs(obj))
        ok = rel <= self.policy.gap_tol
        return SolveInfo(info.block, f"{info.solver}+{how}", info.status if ok else
                         "optimal_inaccurate", obj, rel, info.kkt_residual, ok,
                         info.time + seconds, info.attempt,
                         "" if ok else f"gap after the column polish {rel:.2e}", total)

    def _value(self, s: State) -> float:
        """Loss plus penalty of the readout at s (the part that the polish changes)."""
        pb = self.problem
        loss = pb.loss.value(pb.Y, s.C @ s.X + s.D @ pb.U + s.d[:, None])
        return loss + self.penalty.value({"B": s.B, "D": s.D})


@dataclass
class ColumnBlockSolvers(BlockSolvers):
    """:class:`BlockSolvers` with the joint (B, D) block ``BD`` of a feature-selection
    problem (the readout ``CD`` is then a :class:`PolishedReadout`)."""

    BD: BlockSolver | None = None


def with_column_block(problem, solvers: BlockSolvers, block_solver: str = "auto"
                      ) -> BlockSolvers:
    """``solvers`` with the (B, D) column block and the polished readout when
    :func:`columns_apply` holds and the first-order solvers are allowed (``block_solver``
    not "cvxpy", no forced solver); otherwise ``solvers`` itself."""
    policy = solvers.CD.policy
    if block_solver == "cvxpy" or policy.solvers is not None or not columns_apply(problem):
        return solvers
    readout: BlockSolver = PolishedReadout(solvers.CD, problem)
    if columns_readout_apply(problem):
        readout = Fallback(ColumnsReadout(problem, policy), readout, policy)
    return ColumnBlockSolvers(solvers.X, solvers.AB, readout, solvers.blocks,
                              BD=ColumnsBlock(problem, policy))
