"""The (C, D) block of a quadratic loss through the Gram matrix: its cost does not grow with m.

For the squared loss (and for the quadratic majorizers of :mod:`fenchel_idl.drivers.minibatch`)
the (C, D) block of :class:`fenchel_idl.blocks.cvxpy_blocks.Blocks` is

    min_K  l/(2m) sum_j ||K v_j - ytilde_j||^2 + P(C, D)   over the balls on C and D,

with K = [C, D, d] and v_j = (x_j, u_j, 1). It depends on the data only through
G = sum_j v_j v_j^T (k x k, k = n + p + 1) and Hl = sum_j ytilde_j v_j^T (q x k): with
G = S S^T (S = Q Lambda^(1/2) from the eigendecomposition, which also covers a singular G,
e.g. a dead state) and Yt = S^+ Hl^T,

    sum_j ||K v_j - ytilde_j||^2 = ||K S - Yt^T||_F^2 + const,

a least-squares problem on k "virtual samples", compiled once with Parameters. The CVXPY
block on all m samples compiles a parameter tensor with q n m entries and re-applies it at
every solve, which is slower than rebuilding the problem each time; this form costs a
k-sample solve plus O(k^2 m) for G.

G squares the condition number of V, and eigenvalues of G below 1e-12 of the largest are
dropped: on badly scaled data (one input 1e7 times the others) the solved problem is then
not the posed one, and the solver's duality gap certifies the truncated problem only.
:func:`readout_gap` therefore bounds the gap of the posed problem from the data themselves
(a Frank-Wolfe bound, below). That bound grows like the square root of the solver's gap, so
when it is too large the caller solves the Gram problem again at strict tolerances
(:meth:`GramReadout.solve_strict`), and only then on all samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.cvxpy_terms import check_compiled, penalty_terms
from fenchel_idl.blocks.first_order import pack_cd, readout_projector, unpack_cd
from fenchel_idl.blocks.solvers import SolveInfo, solve_strict

__all__ = ["LEAST_SQUARES", "GramReadout", "readout_gap"]

Array = NDArray[np.float64]

#: The solver name of a readout that is the unconstrained least-squares minimizer.
LEAST_SQUARES = "least squares"


def _inside(radius: float | None, M: Array) -> bool:
    """Whether every row of M lies in the l1 ball of ``radius`` (None: no ball)."""
    return radius is None or bool(np.abs(M).sum(axis=1).max(initial=0.0) <= radius)


def readout_gap(problem, X: Array, C: Array, D: Array, d: Array,
                tol: float = 0.0) -> tuple[float, float, str]:
    """A bound on the gap of the posed squared-loss (C, D) problem at (C, D, d), computed
    from the samples (X, U, Y), not from the Gram matrix.

    The posed problem is min 1/(2m) ||C X + D U + d 1^T - Y||^2 over the balls on C and D.
    The matrices without a ball (d always, C or D when its bound is None) are eliminated
    exactly by least squares, which leaves a convex function phi of the bounded ones, K_b;
    with R the residual at that least-squares optimum and g = R V_b^T / m its gradient,

        P(K) - P*  <=  (P(K) - phi(K_b)) + <g, K_b> + sum_rows r ||g_row||_inf

    (the Frank-Wolfe gap of phi over the l1 balls of radius r, a valid bound by convexity).
    When that bound exceeds ``tol`` (relative to max(1, P)), P(K) minus the least-squares
    lower bound of :func:`_least_squares_bound` is used where it is smaller (the bound that
    is tight when no ball is active, where the Frank-Wolfe bound is loose).

    Returns
    -------
    objective : float
        The loss P(K) of the posed problem at (C, D, d).
    gap : float
        The bound above (inf when it does not apply: a penalty reads C or D).
    note : str
        Why the bound does not apply, or "".
    """
    pb = problem
    if pb.penalties_reading("C", "D"):
        return np.nan, np.inf, "a penalty reads C or D (no Frank-Wolfe bound)"
    R = C @ X + D @ pb.U + d[:, None] - pb.Y
    m = pb.m
    loss = 0.5 * float(np.sum(R * R)) / m
    parts = [(X, C, pb.bounds.C), (pb.U, D, pb.bounds.D)]
    free = [V for V, _, r in parts if r is None] + ([np.ones((1, m))] if pb.bias else [])
    if free:
        Vf = np.vstack(free)
        coef = np.linalg.lstsq(Vf.T, -R.T, rcond=None)[0]
        R = R + (Vf.T @ coef).T
    excess = max(loss - 0.5 * float(np.sum(R * R)) / m, 0.0)
    fw = 0.0
    for V, M, r in parts:
        if r is not None:
            g = R @ V.T / m
            fw += float(np.sum(g * M)) + float(r) * float(np.abs(g).max(axis=1).sum())
    gap = excess + max(fw, 0.0)
    if gap > tol * max(1.0, loss):
        gap = min(gap, max(loss - _least_squares_bound(pb, X, tol, loss), 0.0))
    return loss, gap, ""


def _least_squares_bound(pb, X: Array, tol: float, loss: float) -> float:
    """A lower bound on P* from least squares, tight when no ball is active.

    With balls on both C and D, d is eliminated by centring, and on the SVD of the centred
    [X; U] the directions whose singular value s is so small that a feasible K moves the
    fit by at most sqrt(q) (r_C + r_D) s (||row||_2 <= ||row||_1) are dropped: the least
    squares on the others, minus that movement, bounds ||K V - Y|| from below for every
    feasible K. Without a ball on C or D, the least-squares loss of [X; U; 1] (numerical
    rank of ``numpy.linalg.lstsq``) is used.
    """
    m = pb.m
    if pb.bounds.C is None or pb.bounds.D is None:
        V = np.vstack([X, pb.U, np.ones((1, m))])
        res = V.T @ np.linalg.lstsq(V.T, pb.Y.T, rcond=None)[0] - pb.Y.T
        return 0.5 * float(np.sum(res * res)) / m
    Vb, Yc = np.vstack([X, pb.U]), pb.Y
    if pb.bias:
        Vb = Vb - Vb.mean(axis=1, keepdims=True)
        Yc = Yc - Yc.mean(axis=1, keepdims=True)
    W, sig, _ = np.linalg.svd(Vb.T, full_matrices=False)
    radius = np.sqrt(pb.q) * (float(pb.bounds.C) + float(pb.bounds.D))
    keep = sig * radius > 1e-3 * np.sqrt(2.0 * m * tol * max(1.0, loss))
    res = Yc.T - W[:, keep] @ (W[:, keep].T @ Yc.T)
    moved = radius * float(sig[~keep].max(initial=0.0))
    return 0.5 * max(np.sqrt(float(np.sum(res * res))) - moved, 0.0) ** 2 / m


class GramReadout:
    """The (C, D) block on the statistics (G, Hl); see the module docstring.

    Parameters
    ----------
    problem : TrainingProblem
    curvature : float
        l in l/(2m) ||K V - Ytilde||^2 (1 for the squared loss).
    """

    def __init__(self, problem, curvature: float = 1.0):
        pb = problem
        n, p, q = pb.n, pb.p, pb.q
        k = n + p + (1 if pb.bias else 0)
        self.pb, self.k, self.curvature = pb, k, float(curvature)
        self.Sx = cp.Parameter((n, k), name="S_X")
        self.Su = cp.Parameter((p, k), name="S_U")
        self.S1 = cp.Parameter((1, k), name="S_1") if pb.bias else None
        self.Yt = cp.Parameter((q, k), name="Yt")
        self.Ap = cp.Parameter((n, n), name="A_fixed")
        self.Bp = cp.Parameter((n, p), name="B_fixed")
        Cv, Dv = cp.Variable((q, n), name="C"), cp.Variable((q, p), name="D")
        dv = cp.Variable((q, 1), name="d") if pb.bias else None
        fit = Cv @ self.Sx + Dv @ self.Su + (dv @ self.S1 if dv is not None else 0) - self.Yt
        pen, pcons = penalty_terms(pb, {"A": self.Ap, "B": self.Bp, "C": Cv, "D": Dv}, ("C", "D"))
        cons = list(pcons)
        if pb.bounds.C is not None:
            cons += [cp.sum(cp.abs(Cv), axis=1) <= pb.bounds.C]
        if pb.bounds.D is not None:
            cons += [cp.sum(cp.abs(Dv), axis=1) <= pb.bounds.D]
        scale = float(curvature) / (2.0 * pb.m)
        self.prob = cp.Problem(cp.Minimize(scale * cp.sum_squares(fit) + pen), cons)
        check_compiled("(C, D) on the Gram matrix", self.prob)
        self.vars = (Cv, Dv, dv)

    def statistics(self, X: Array) -> tuple[Array, Array]:
        """G = V V^T and Hl = Y V^T for the squared loss, V = [X; U; 1]."""
        pb = self.pb
        V = np.vstack([X, pb.U] + ([np.ones((1, pb.m))] if pb.bias else []))
        return V @ V.T, pb.Y @ V.T

    def solve(self, G: Array, Hl: Array, A: Array, B: Array, solve: Callable,
              tol: float = 1e-6, least_squares: bool = True
              ) -> tuple[Array, Array, Array, SolveInfo]:
        """Solve the block for the statistics (G, Hl). Without a penalty on C or D, the
        minimizer of the unconstrained least squares, K = Hl G^+, is computed first: when
        it lies in the balls it is the block's solution, certified within ``tol`` by its
        own gap bound (:meth:`_least_squares_info`), and no solver runs (a conic solve of
        the k-sample problem grows like q k^3: minutes at k = 1,800). Otherwise
        ``solve(prob, name)`` solves and certifies the CVXPY problem; always with
        ``least_squares=False`` (a forced solver solves every block)."""
        pb = self.pb
        n, p = pb.n, pb.p
        ev, Q = np.linalg.eigh(G)
        keep = ev > 1e-12 * max(float(ev[-1]), 1e-300)
        root = np.sqrt(ev[keep])
        S = np.zeros((self.k, self.k))
        S[:, :root.size] = Q[:, keep] * root
        Yt = np.zeros((self.k, pb.q))
        Yt[:root.size] = (Q[:, keep].T @ Hl.T) / root[:, None]  # S^+ Hl^T
        self.Sx.value, self.Su.value = S[:n], S[n:n + p]
        if self.S1 is not None:
            self.S1.value = S[n + p:]
        self.Yt.value = Yt.T
        self.Ap.value, self.Bp.value = A, B
        if least_squares and not pb.penalties_reading("C", "D"):
            t0 = time.perf_counter()
            K = (Hl @ Q[:, keep]) / ev[keep] @ Q[:, keep].T  # Hl G^+, the least-squares K
            C, D, d = unpack_cd(pb, K)
            if _inside(pb.bounds.C, C) and _inside(pb.bounds.D, D):
                info = self._least_squares_info(K, G, Hl, Q[:, keep], ev[keep], tol, t0)
                if info.certified:
                    return C, D, d, info
        return self.resolve(solve)

    def resolve(self, solve: Callable) -> tuple[Array, Array, Array, SolveInfo]:
        """Solve the last :meth:`solve`'s problem by CVXPY (``solve(prob, name)`` certifies
        it), also where its least-squares minimizer lies in the balls."""
        info = solve(self.prob, "CD")
        return (*self._point(), info)

    def _least_squares_info(self, K: Array, G: Array, Hl: Array, Qk: Array, evk: Array,
                            tol: float, t0: float) -> SolveInfo:
        """The record of the least-squares minimizer K, which is inside the balls. With the
        gradient g = c (K G - Hl) of the block's objective f (c = l/m), which lies in the
        range of G, f(K) - f* <= f(K) - min f over all K = tr(g G^+ g^T) / (2c): that
        bound, computed in floating point, is the certificate (0 in exact arithmetic)."""
        c = self.curvature / self.pb.m
        gQ = c * (K @ G - Hl) @ Qk
        gap = float(np.sum(gQ * gQ / evk)) / (2.0 * c)
        root = np.sqrt(evk)
        fit = (K @ Qk) * root - (Hl @ Qk) / root  # K S - Yt^T: what the CVXPY solve reports
        obj = 0.5 * c * float(np.sum(fit * fit))
        rel = gap / max(1.0, abs(obj))
        ok = rel <= tol
        return SolveInfo("CD", LEAST_SQUARES, "optimal" if ok else "optimal_inaccurate", obj,
                         rel, None, ok, time.perf_counter() - t0, 1,
                         "" if ok else f"least-squares gap bound {rel:.2e} above {tol:.1e}",
                         abs_gap=gap)

    def _point(self) -> tuple[Array, Array, Array]:
        Cv, Dv, dv = self.vars
        d = dv.value[:, 0] if dv is not None else np.zeros(self.pb.q)
        return np.array(Cv.value), np.array(Dv.value), np.array(d)

    def solve_strict(self, solver: str) -> tuple[Array, Array, Array] | None:
        """The last :meth:`solve`'s problem solved again by ``solver`` at strict tolerances
        (:func:`fenchel_idl.blocks.solvers.solve_strict`), projected onto the balls (the
        solver leaves rows outside by up to its feasibility tolerance); None when the
        solver has no strict settings or fails. Nothing is certified: the caller bounds the
        point on the posed problem (:func:`readout_gap`)."""
        if not solve_strict(self.prob, solver):
            return None
        pb = self.pb
        return unpack_cd(pb, readout_projector(pb)(pack_cd(pb, *self._point())))
