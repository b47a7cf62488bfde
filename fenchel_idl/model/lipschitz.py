"""The convex upper bound (4.7) on the Lipschitz constant of an implicit model, in numpy.

It lives in the model layer because two layers use it: the Lipschitz penalty of the training
problem (section 6) and the robustness analysis (section 4.3).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import ShapeError
from fenchel_idl.model.implicit_model import check_model_shapes
from fenchel_idl.validation import as_float_array

__all__ = ["inf_norm", "lipschitz_penalty_value"]


def inf_norm(M: NDArray[np.float64]) -> float:
    """The induced inf-norm ``||M||_inf``, the largest absolute row sum (0 for an empty M)."""
    return float(np.max(np.abs(M).sum(axis=1))) if M.size else 0.0


def lipschitz_penalty_value(A: ArrayLike, B: ArrayLike, C: ArrayLike, D: ArrayLike) -> float:
    """The convex upper bound (4.7) on rho, in numpy.

        (1/2) (||B||_inf^2 + ||C||_inf^2) / (1 - ||A||_inf) + ||D||_inf  >=  rho

    (by ``b c <= (b^2 + c^2)/2``). It is jointly convex in (A, B, C, D) on
    ``||A||_inf < 1`` (a quadratic-over-linear function); outside that domain the value is
    ``math.inf``, as for an extended-value convex function.

    Parameters
    ----------
    A, B, C, D : array_like
        The matrices of an implicit model, of shapes (n, n), (n, p), (q, n) and (q, p).

    Returns
    -------
    float

    Raises
    ------
    ShapeError
        Shapes that do not fit together.

    Examples
    --------
    >>> lipschitz_penalty_value([[0.5]], [[2.0]], [[3.0]], [[1.0]])
    14.0
    """
    A = as_float_array("A", A, ndim=2)
    B = as_float_array("B", B, ndim=2)
    C = as_float_array("C", C, ndim=2)
    D = as_float_array("D", D, ndim=2)
    n = A.shape[0]
    if A.shape != (n, n):
        raise ShapeError(f"'A' must be square (n, n); got shape {A.shape}.")
    check_model_shapes(n, f"A {A.shape}", B, C, D)
    a = inf_norm(A)
    if not a < 1.0:
        return math.inf
    return 0.5 * (inf_norm(B) ** 2 + inf_norm(C) ** 2) / (1.0 - a) + inf_norm(D)
