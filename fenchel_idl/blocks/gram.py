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
"""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.cvxpy_terms import check_compiled, penalty_terms

Array = NDArray[np.float64]


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
        self.pb, self.k = pb, k
        self.Sx = cp.Parameter((n, k), name="S_X")
        self.Su = cp.Parameter((p, k), name="S_U")
        self.S1 = cp.Parameter((1, k), name="S_1") if pb.bias else None
        self.Yt = cp.Parameter((q, k), name="Yt")
        self.Ap = cp.Parameter((n, n), name="A_fixed")
        self.Bp = cp.Parameter((n, p), name="B_fixed")
        Cv, Dv = cp.Variable((q, n), name="C"), cp.Variable((q, p), name="D")
        dv = cp.Variable((q, 1), name="d") if pb.bias else None
        fit = Cv @ self.Sx + Dv @ self.Su + (dv @ self.S1 if dv is not None else 0) - self.Yt
        pen, pcons = penalty_terms(pb, {"A": self.Ap, "B": self.Bp, "C": Cv, "D": Dv})
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

    def solve(self, G: Array, Hl: Array, A: Array, B: Array,
              solve: Callable) -> tuple[Array, Array, Array, object]:
        """Solve the block for the statistics (G, Hl); ``solve(prob, name)`` certifies it."""
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
        info = solve(self.prob, "CD")
        Cv, Dv, dv = self.vars
        d = dv.value[:, 0] if dv is not None else np.zeros(pb.q)
        return np.array(Cv.value), np.array(Dv.value), np.array(d), info
