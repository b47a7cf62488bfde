"""The data of the DCA step on X (section 6.3), shared by the CVXPY and first-order X blocks.

The X block's objective contains -tr(X^T Lam A X), indefinite in general. With the
eigenvalue split Lam A + A^T Lam = S+ - S-, the concave part -x^T S+ x / 2 is replaced by
its linearization at the current X; the majorizer touches the objective there, so an X step
never increases the relaxed objective. What remains is convex: the loss, the weighted f(X)
and f*(A X + B U + b), the linear term -<G, X> with G = Lam (B U + b) + S+ X, and
x^T S- x / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["XStepData", "x_step_data"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class XStepData:
    """The constants of one DCA X step on the columns it was made for.

    Attributes
    ----------
    W : ndarray of shape (n, k)
        B U + b.
    G : ndarray of shape (n, k)
        The linear term Lam (B U + b) + S+ X.
    S_minus : ndarray of shape (n, n)
        S-, positive semidefinite.
    S_minus_root : ndarray of shape (n, n)
        Its symmetric square root.
    min_eigenvalue : float
        The smallest eigenvalue of Lam A + A^T Lam.
    R : ndarray of shape (q, k)
        D U + d, so that the prediction is C X + R.
    """

    W: Array
    G: Array
    S_minus: Array
    S_minus_root: Array
    min_eigenvalue: float
    R: Array


def x_step_data(problem, A: Array, B: Array, b: Array, D: Array, d: Array, X: Array,
                lam: Array, cols=None) -> XStepData:
    """The DCA data at the current (A, B, b, D, d, X, lam), for the columns ``cols`` (all
    when None); ``X`` holds those columns only."""
    U = problem.U if cols is None else problem.U[:, cols]
    W = B @ U + b[:, None]
    M = lam[:, None] * A
    ev, Q = np.linalg.eigh(M + M.T)
    neg = np.maximum(-ev, 0.0)
    G = lam[:, None] * W + (Q * np.maximum(ev, 0.0)) @ Q.T @ X
    return XStepData(W=W, G=G, S_minus=(Q * neg) @ Q.T, S_minus_root=(Q * np.sqrt(neg)) @ Q.T,
                     min_eigenvalue=float(ev.min()), R=D @ U + d[:, None])
