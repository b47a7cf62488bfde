"""Projections onto the well-posedness ball {||A||_inf <= kappa} (projection step of section 6.2).

The projected gradient method of section 6.2 keeps the iterate inside the convex set
``{A : ||A||_inf <= kappa}``, kappa < 1, which certifies well-posedness for CONE maps
(Remark 2.4). The Euclidean projection (6.7) splits over the rows of A: every row is
projected onto the l1 ball of radius kappa,

    min_a 1/2 ||a - a0||_2^2  s.t.  ||a||_1 <= r,

whose solution is ``a0`` itself when ``||a0||_1 <= r`` and otherwise the soft-thresholding
``a = sign(a0) max(|a0| - tau, 0)`` at the unique ``tau > 0`` with ``||a||_1 = r``. Two ways
of finding ``tau`` are provided, both vectorized over rows:

- ``method="bisection"``: the paper's bisection on the dual of (6.7), all rows at once.
  The dual function ``d(lambda) = -r lambda + sum_j s_j(lambda)`` is concave, with derivative
  ``g(lambda) = -r + sum_j (|a0_j| - lambda)_+``. So ``g(lambda) > 0`` means that lambda lies
  *below* the optimum and the **lower** end moves up. (Step 3 of the paper's listing states the
  opposite assignment, which is a typo: it would converge to 0.) The starting interval is
  ``[0, ||a0||_2^2 / (2 r)]``, as in the paper; the bound is valid because
  ``r tau = sum_j tau (|a0_j| - tau)_+ <= sum_j a0_j^2 / 4``. Halving runs until no row's
  interval can be split further in floating point, and the upper end (the feasible side)
  is kept.
- ``method="sort"`` (default): the exact finite algorithm. With ``v`` the entries of
  ``|a0|`` sorted in decreasing order and ``c_k = v_1 + ... + v_k``, the threshold is
  ``tau = (c_rho - r) / rho`` where ``rho`` is the last k with ``v_k > (c_k - r) / k``.
  Cost O(k log k) per row, no iteration.

For a blockwise (BLIP) map the well-posedness set is ``{||N(A, gamma)||_inf <= kappa}`` with
N of (2.4). :func:`project_well_posed` handles it: for componentwise maps it is exact (row i
in the l1 ball of radius ``kappa / gamma_i``; sigmoid has gamma = 1/4, so radius 4 kappa);
with vector blocks (softmax) it projects onto a documented convex subset (see there).

A last guard rescales, by at most a few units in the last place, any row whose computed
l1 norm exceeds its radius through rounding, so that ``np.abs(P).sum(axis=1) <= radius``
holds exactly in floating point.

The ball is a constraint of the training problem (6.3); the first-order blocks and gradient
refinement both project onto it, so the projections live in the problem layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import ShapeError, ValidationError
from fenchel_idl.model.activations import Activation, activation_for, blip_structure, get_activation
from fenchel_idl.validation import as_float_array, check_choice, check_real

__all__ = ["PROJECTION_METHODS", "project_inf_ball", "project_l1_rows", "project_rows",
           "project_well_posed", "well_posed_radii"]

Array = NDArray[np.float64]

PROJECTION_METHODS = ("sort", "bisection")

_MAX_BISECTIONS = 2200  # far beyond the ~1100 halvings that can exhaust a float64 interval


# -- row thresholds -------------------------------------------------------------------------

def _tau_sort(absA: Array, r: Array) -> Array:
    """Soft-threshold levels of the rows of ``absA`` (all with l1 norm > r), by sorting."""
    k = absA.shape[1]
    v = -np.sort(-absA, axis=1)  # decreasing
    css = np.cumsum(v, axis=1) - r[:, None]
    ks = np.arange(1, k + 1, dtype=np.float64)
    cond = v * ks > css  # v_k > (c_k - r) / k, a prefix in exact arithmetic
    # last true position; the first entry is always true since r > 0
    rho = k - np.argmax(cond[:, ::-1], axis=1)
    tau = css[np.arange(absA.shape[0]), rho - 1] / rho
    return np.maximum(tau, 0.0)


def _tau_bisection(absA: Array, r: Array) -> Array:
    """Dual bisection of section 6.2 (vectorized over rows), to machine precision.

    Maintains ``g(lo) > 0 >= g(hi)`` where ``g(l) = -r + sum_j (|a_j| - l)_+`` and returns
    ``hi``, the end on the feasible side.
    """
    lo = np.zeros(absA.shape[0])
    hi = np.sum(absA * absA, axis=1) / (2.0 * r)  # lambda_max of the paper
    for _ in range(_MAX_BISECTIONS):
        mid = 0.5 * (lo + hi)
        active = (mid > lo) & (mid < hi)
        if not np.any(active):
            break
        g = np.sum(np.maximum(absA - mid[:, None], 0.0), axis=1) - r
        below = g > 0  # the optimum lies above mid
        lo = np.where(active & below, mid, lo)
        hi = np.where(active & ~below, mid, hi)
    return hi


def _guard(P: Array, r: Array) -> Array:
    """Shrink, by a few ulps, rows whose computed l1 norm exceeds r through rounding."""
    for _ in range(8):
        s = np.abs(P).sum(axis=1)
        bad = s > r
        if not np.any(bad):
            break
        P[bad] *= ((r[bad] / s[bad]) * (1.0 - 4.0 * np.finfo(float).eps))[:, None]
    return P


def project_rows(A: Array, r: Array, method: str) -> Array:
    """Project row i of A onto the l1 ball of radius r[i] (r > 0, inf allowed).

    :func:`project_l1_rows` without its input checks, for inner loops that pass float
    arrays they have validated (gradient refinement projects after every step, and a
    diverging step must reach its own non-finite check rather than raise here).
    """
    P = np.array(A, dtype=np.float64, copy=True)
    if P.size == 0:
        return P
    absA = np.abs(P)
    outside = np.flatnonzero(absA.sum(axis=1) > r)
    if outside.size == 0:
        return P
    ab, rb = absA[outside], r[outside]
    tau = _tau_sort(ab, rb) if method == "sort" else _tau_bisection(ab, rb)
    P[outside] = np.sign(P[outside]) * np.maximum(ab - tau[:, None], 0.0)
    P[outside] = _guard(P[outside], rb)
    return P


# -- public ----------------------------------------------------------------------------------

def project_l1_rows(A: ArrayLike, radius: ArrayLike, method: str = "sort") -> Array:
    """Project every row of A onto an l1 ball, with one radius per row.

    Solves ``min_P ||P - A||_F  s.t.  ||P[i]||_1 <= radius[i]`` for all i, i.e. the row
    subproblems of (6.7) with row-dependent radii.

    Parameters
    ----------
    A : array_like of shape (n, k)
    radius : float or array_like of shape (n,)
        Radii, > 0; ``inf`` leaves a row unconstrained.
    method : {"sort", "bisection"}, default "sort"
        Exact sort-based thresholds, or the dual bisection of section 6.2.

    Returns
    -------
    ndarray of shape (n, k)
        A new array; rows already inside their ball are returned unchanged (bit for bit).

    Raises
    ------
    ShapeError
        A not 2-D, or radius of the wrong length.
    ValidationError
        NaN or inf in A, a radius <= 0 or NaN, or an unknown method.
    InputTypeError
        Non-numeric input.

    Examples
    --------
    >>> project_l1_rows([[3.0, 1.0], [0.1, 0.2]], [2.0, 1.0]).tolist()
    [[2.0, 0.0], [0.1, 0.2]]
    """
    A = as_float_array("A", A, ndim=2)
    check_choice("method", method, PROJECTION_METHODS)
    r = as_float_array("radius", radius, ndim=(0, 1), finite=False)
    if r.ndim == 0:
        r = np.full(A.shape[0], float(r))
    if r.shape != (A.shape[0],):
        raise ShapeError(f"'radius' must be a scalar or have shape ({A.shape[0]},) (one radius "
                         f"per row of A); got shape {r.shape}.")
    if np.any(np.isnan(r)) or np.any(r <= 0):
        low = float(np.nanmin(r)) if not np.all(np.isnan(r)) else float("nan")
        raise ValidationError(f"'radius' must contain only values in (0, inf]; got minimum "
                              f"{low:g} and {int(np.isnan(r).sum())} NaN entries.")
    return project_rows(A, r, method)


def project_inf_ball(A: ArrayLike, kappa: float, method: str = "sort") -> Array:
    """Euclidean projection onto ``{A : ||A||_inf <= kappa}`` (problem (6.7)).

    ``||A||_inf`` is the max-row-sum norm, so every row is projected onto the l1 ball of
    radius kappa; see the module docstring for the two methods.

    Parameters
    ----------
    A : array_like of shape (n, k)
        Usually square (the state matrix), but any 2-D array is accepted.
    kappa : float > 0
        Radius. Well-posedness (Remark 2.4) needs kappa < 1, but the projection itself is
        defined for every kappa > 0.
    method : {"sort", "bisection"}, default "sort"

    Returns
    -------
    ndarray of shape (n, k)
        The projection; ``np.abs(P).sum(axis=1).max() <= kappa`` holds exactly.

    Raises
    ------
    ShapeError
        A not 2-D.
    ValidationError
        NaN or inf in A, kappa <= 0 or not finite, or an unknown method.
    InputTypeError
        Non-numeric A or kappa.

    Examples
    --------
    >>> P = project_inf_ball([[0.9, -0.6], [0.1, 0.2]], kappa=0.5)
    >>> P.round(12).tolist()  # row 1 soft-thresholded at tau = 0.5; row 2 already inside
    [[0.4, -0.1], [0.1, 0.2]]
    >>> np.allclose(P, project_inf_ball([[0.9, -0.6], [0.1, 0.2]], 0.5, method="bisection"))
    True
    """
    kappa = check_real("kappa", kappa, 0.0, None, low_open=True)
    return project_l1_rows(A, kappa, method)


def well_posed_radii(activation: Activation | str | dict[str, Any], n: int,
                     kappa: float) -> tuple[Array, bool]:
    """Per-row l1 radii of the projection used by :func:`project_well_posed`.

    Returns
    -------
    radii : ndarray of shape (n,)
        ``kappa / gamma_i`` for the row's block (``inf`` when gamma_i = 0).
    exact : bool
        True when every block is componentwise, so that the row-scaled l1 ball *is* the set
        ``{||N(A, gamma)||_inf <= kappa}``; False when vector blocks make it a subset.
    """
    phi = activation_for(get_activation(activation), n)
    starts, gammas, _, all_scalar = blip_structure(phi, n)
    ends = np.append(starts[1:], n)
    radii = np.empty(n)
    with np.errstate(divide="ignore"):
        for s, e, g in zip(starts, ends, gammas):
            radii[s:e] = kappa / g if g > 0 else np.inf
    return radii, bool(all_scalar)


def project_well_posed(A: ArrayLike, kappa: float, activation: Activation | str | dict[str, Any]
                       = "relu", method: str = "sort") -> Array:
    """Project A onto ``{||N(A, gamma)||_inf <= kappa}`` (BLIP maps, section 6.1 and (2.4)).

    *Componentwise maps* (ReLU, tanh, sigmoid, ..., or a blockwise mix of them):
    ``||N(A, gamma)||_inf = max_i gamma_i ||a_i||_1``, so the set is a row-scaled l1 ball and
    the Euclidean projection is exact: row i goes to the l1 ball of radius ``kappa / gamma_i``
    (for CONE maps, gamma = 1 and this is :func:`project_inf_ball`).

    *Blockwise maps with vector blocks* (softmax, l1 norm): the entries of N involve induced
    norms (``max`` over a softmax column block for a scalar row, the largest column l1 norm
    for a softmax row block), and no closed-form projection is used. Instead A is projected
    exactly onto the convex **subset** in which, for every row block I (a scalar row or all
    rows of a vector block), the flattened entries ``A[I, :]`` lie in the l1 ball of radius
    ``kappa / gamma_I``. The subset is sound: each induced norm in (2.4) is bounded by the
    entrywise l1 norm of its block (``max_l |a_l| <= sum_l |a_l|`` and
    ``max_c ||M_c||_1 <= sum_c ||M_c||_1``), so ``||N(A, gamma)||_inf <= kappa`` holds at the
    result. It is a projection onto a smaller set, so it may move A more than needed.

    Parameters
    ----------
    A : array_like of shape (n, n)
    kappa : float > 0
    activation : str, dict or Activation, default "relu"
        The map phi; a :class:`fenchel_idl.Blockwise` map must cover n states.
    method : {"sort", "bisection"}, default "sort"

    Returns
    -------
    ndarray of shape (n, n)
        With ``norm_matrix(P, activation).sum(axis=1).max() <= kappa`` (up to rounding in
        the induced norms).

    Raises
    ------
    ShapeError
        A not square, or a blockwise map over another number of states.
    ValidationError
        NaN or inf in A, kappa <= 0, an unknown method or activation.

    Examples
    --------
    >>> P = project_well_posed([[1.0, 1.0], [0.5, 0.5]], kappa=0.5, activation="sigmoid")
    >>> P.tolist()  # sigmoid: gamma = 1/4, radius 4 kappa = 2
    [[1.0, 1.0], [0.5, 0.5]]
    """
    A = as_float_array("A", A, ndim=2)
    if A.shape[0] != A.shape[1]:
        raise ShapeError(f"'A' must be square (n, n); got shape {A.shape}.")
    kappa = check_real("kappa", kappa, 0.0, None, low_open=True)
    check_choice("method", method, PROJECTION_METHODS)
    n = A.shape[0]
    phi = activation_for(get_activation(activation), n)
    radii, exact = well_posed_radii(phi, n, kappa)
    if exact:
        return project_rows(A, radii, method)
    starts, _, _, _ = blip_structure(phi, n)
    ends = np.append(starts[1:], n)
    sizes = ends - starts
    P = np.array(A, copy=True)
    scalar = starts[sizes == 1]
    if scalar.size:
        P[scalar] = project_rows(A[scalar], radii[scalar], method)
    for s, e in zip(starts[sizes > 1], ends[sizes > 1]):
        flat = A[s:e].reshape(1, -1)
        P[s:e] = project_rows(flat, radii[s:s + 1], method).reshape(e - s, n)
    return P
