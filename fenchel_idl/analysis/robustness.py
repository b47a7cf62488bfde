"""Robustness analysis of implicit models (section 4 of the paper).

Every bound here holds for **any** nominal input ``u0`` and any ``u`` in the input set

- box (4.1):          ``|u - u0| <= sigma_u`` (componentwise), or
- cardinality (4.2):  the box plus ``Card(u - u0) <= k``,

and bounds the change of the state ``x(u) - x(u0)`` or of the output ``y(u) - y(u0)``,
where ``x(u)`` solves ``x = phi(A x + B u + bias_x)``. Biases cancel in the differences.

=========================  ==============================================================
function                   what (paper)
=========================  ==============================================================
:func:`state_bounds`       box bound on ``|x - x0|`` (section 4.2, Thm 4.1, (4.3)-(4.4))
:func:`lipschitz_bound`    Lipschitz constant ``rho`` of ``u -> y`` in the inf-norm (4.3)
:func:`lipschitz_penalty_value`  the convex upper bound (4.7) on ``rho`` (model layer)
:func:`sensitivity_matrix` ``S`` with ``|y(u) - y(u0)| <= S |u - u0|`` (Thm 4.2, (4.8))
:func:`output_bound`       ``S sigma_u`` (or its cardinality version)
:func:`lp_bound`           LP relaxation for ReLU (Thm 4.3), with an attack candidate
=========================  ==============================================================

How the fixed points are made sound. The bounds of Thm 4.1 and 4.2 are the least
nonnegative solution ``X* = sum_t N^t R`` of ``X = N X + R`` with ``N = N(A, gamma) >= 0``
and ``lambda_PF(N) < 1``. The iteration ``X(t+1) = N X(t) + R`` from zero increases to X*,
so stopping it early would *under*-estimate the bound. After the iteration we therefore
inflate the iterate into a super-solution ``X_up >= N X_up + R`` along a Collatz-Wielandt
vector ``w`` (with ``N w <= theta w``, ``theta < 1``); any super-solution satisfies
``X_up >= X*`` because ``(I - N)^{-1} >= 0``. The correction is of the size of the final
residual, so the bounds are the paper's up to rounding, and they stay valid when the
iteration is stopped by ``max_iter``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import (
    ConvergenceWarning,
    InputTypeError,
    NotConvexError,
    NotWellPosedError,
    ShapeError,
    SolverError,
    ValidationError,
)
from fenchel_idl.model.activations import Activation, Blockwise, ReLU, blip_structure
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.lipschitz import inf_norm, lipschitz_penalty_value
from fenchel_idl.model.wellposedness import norm_matrix, pf_eigenvalue
from fenchel_idl.validation import as_float_array, check_choice, check_int, check_real

__all__ = [
    "LP_SOLVERS",
    "LPBound",
    "StateBounds",
    "lipschitz_bound",
    "lipschitz_penalty_value",
    "lp_bound",
    "output_bound",
    "sensitivity_matrix",
    "state_bounds",
]

Array = NDArray[np.float64]

#: Solvers tried in order by :func:`lp_bound` (those that are installed).
LP_SOLVERS: tuple[str, ...] = ("HIGHS", "CLARABEL", "ECOS", "SCS")


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StateBounds:
    """Bounds on the state change ``x(u) - x(u0)`` over an input set (section 4.2).

    Attributes
    ----------
    sigma_x : ndarray of shape (n,)
        Componentwise bound ``|x_i(u) - x_i(u0)| <= sigma_x[i]``. For a vector block
        (softmax) every state of block l gets ``eta[l]``, valid since ``|z_i| <= ||z||_p``.
    eta : ndarray of shape (L,)
        Bound on the vector of block norms ``eta(x - x0)`` of (1.2), equation (4.6).
        Equals ``sigma_x`` when the map is componentwise (one block per state).
    block_starts : ndarray of int, shape (L,)
        First state of each block.
    block_norms : ndarray of shape (L,)
        The norm ``p_l`` of each block (inf for componentwise maps, 1 for softmax).
    inf_bound : float
        Scalar bound on ``||x(u) - x(u0)||_inf``: ``delta / (1 - ||N(A, gamma)||_inf)`` as in
        (4.3) (box) or (4.4) (cardinality). ``math.inf`` when ``||N(A, gamma)||_inf >= 1``,
        where that argument does not apply (``sigma_x`` still holds; see
        :func:`fenchel_idl.rescale`).
    k : int or None
        The cardinality of the input set, or None for the box set.
    iterations : int
        Fixed-point iterations used.
    converged : bool
        Whether the iteration reached its tolerance (the bound is valid either way).
    """

    sigma_x: Array
    eta: Array
    block_starts: NDArray[np.int64]
    block_norms: Array
    inf_bound: float
    k: int | None
    iterations: int
    converged: bool


@dataclass(frozen=True)
class LPBound:
    """Result of the LP relaxation of Theorem 4.3 (ReLU models).

    Attributes
    ----------
    bound : float
        Certified upper bound on the objective over the input set: for
        ``objective="linear"`` on ``max c^T x(u) + d^T u + offset``, for ``"discrepancy"`` on
        ``max ||x(u) - x(u0)||_2^2``. Never larger than the box bound of
        :func:`state_bounds`.
    value : float
        The objective at the true equilibrium ``x(u)`` of the returned attack ``u``: a
        lower bound on the true maximum (so ``value <= bound``).
    lp_value : float
        Optimal value reported by the solver (for ``"discrepancy"``, the sum of squares of
        the solver's componentwise values).
    x : ndarray of shape (n,)
        The LP maximizer's (relaxed) state, for the best LP.
    u : ndarray of shape (p,)
        The attack: an input inside the set (at most k changed entries when k is given).
    x_eq : ndarray of shape (n,)
        The true equilibrium at ``u``.
    x0 : ndarray of shape (n,)
        The nominal equilibrium ``x(u0)``.
    sigma_x : ndarray of shape (n,)
        The state box used as a constraint (from :func:`state_bounds`).
    componentwise : ndarray of shape (n, 2) or None
        For ``"discrepancy"``: certified bounds ``[up_i, down_i]`` with
        ``-down_i <= x_i(u) - x0_i <= up_i``.
    status : str
        Solver status of the (last) accepted solve ("optimal").
    solver : str
        Solver that produced the accepted solve(s).
    objective : str
        "linear" or "discrepancy".
    relaxation : str
        "paper" (the LP of Theorem 4.3) or "triangle" (with the ReLU chords).
    n_solves : int
        Number of LPs solved.
    """

    bound: float
    value: float
    lp_value: float
    x: Array
    u: Array
    x_eq: Array
    x0: Array
    sigma_x: Array
    componentwise: Array | None
    status: str
    solver: str
    objective: str
    relaxation: str
    n_solves: int


# ------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------

def _as_model(model: Any) -> ImplicitModel:
    if not isinstance(model, ImplicitModel):
        raise InputTypeError(f"'model' must be an ImplicitModel; got {type(model).__name__}.")
    return model


def _as_sigma(sigma_u: Any, p: int, name: str = "sigma_u") -> Array:
    """A nonnegative (p,) radius vector; a scalar is broadcast to every input."""
    s = as_float_array(name, sigma_u, ndim=(0, 1))
    if s.ndim == 0:
        s = np.full(p, float(s))
    elif s.shape != (p,):
        raise ShapeError(f"'{name}' must be a scalar or have shape (p,) = ({p},) (one radius "
                         f"per input); got shape {s.shape}.")
    if np.any(s < 0):
        j = int(np.argmin(s))
        raise ValidationError(f"'{name}' must be nonnegative (a box radius |u - u0| <= "
                              f"sigma_u); got {s[j]:.6g} at index {j}.")
    return s


def _as_k(k: Any, p: int) -> int | None:
    if k is None:
        return None
    return check_int("k", k, low=1, high=p)


def _as_vector(name: str, value: Any, size: int, what: str) -> Array:
    v = as_float_array(name, value, ndim=1)
    if v.shape != (size,):
        raise ShapeError(f"'{name}' must have shape ({size},) ({what}); got shape {v.shape}.")
    return v


def _as_range(input_range: Any) -> tuple[float, float] | None:
    if input_range is None:
        return None
    if not isinstance(input_range, (tuple, list)) or len(input_range) != 2:
        raise ValidationError("'input_range' must be a pair (low, high) or None; got "
                              f"{input_range!r}.")
    lo = check_real("input_range[0]", input_range[0])
    hi = check_real("input_range[1]", input_range[1])
    if lo > hi:
        raise ValidationError(f"'input_range' must have low <= high; got ({lo}, {hi}).")
    return lo, hi


def _require_pf(model: ImplicitModel, N: Array) -> float:
    lam = pf_eigenvalue(N)
    if not lam < 1.0:
        raise NotWellPosedError(
            "'model' must satisfy the PF condition lambda_PF(N(A, gamma)) < 1 of Theorem 2.2, "
            f"which the bounds of section 4 rely on; got lambda_PF = {lam:.6g}. Train with "
            "||A||_inf <= kappa < 1, or check fenchel_idl.well_posedness(model).")
    return lam


def _top_k_sum(M: Array, k: int) -> Array:
    """s_k of every row of M >= 0: the sum of its k largest entries."""
    if k >= M.shape[1]:
        return M.sum(axis=1)
    return np.partition(M, M.shape[1] - k, axis=1)[:, M.shape[1] - k:].sum(axis=1)


# ------------------------------------------------------------------------------------------
# norm matrices (2.4), (4.5) and N(C) of Thm 4.2
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Norms:
    NA: Array  # (L, L)  N(A, gamma)
    NB: Array  # (L, p)  N(B, gamma)
    NC: Array  # (q, L)  N(C), dual norms
    starts: NDArray[np.int64]
    norms: Array
    sizes: NDArray[np.int64]


def _dual(pn: float) -> float:
    if pn == np.inf:
        return 1.0
    if pn == 1:
        return np.inf
    return pn / (pn - 1.0)


def _norm_matrices(model: ImplicitModel) -> _Norms:
    n = model.n
    starts, gammas, norms, all_scalar = blip_structure(model.activation, n)
    NA = norm_matrix(model.A, model.activation)
    if all_scalar:
        NB = gammas[:, None] * np.abs(model.B)
        NC = np.abs(model.C)
        sizes = np.ones(n, dtype=np.int64)
    else:
        ends = np.append(starts[1:], n)
        sizes = (ends - starts).astype(np.int64)
        L = len(starts)
        NB = np.empty((L, model.p))
        NC = np.empty((model.q, L))
        for l in range(L):
            rows = slice(starts[l], ends[l])
            NB[l] = gammas[l] * np.linalg.norm(model.B[rows], ord=norms[l], axis=0)
            NC[:, l] = np.linalg.norm(model.C[:, rows], ord=_dual(norms[l]), axis=1)
    return _Norms(NA, NB, NC, starts, norms, sizes)


# ------------------------------------------------------------------------------------------
# the sound fixed point X* = (I - N)^{-1} R
# ------------------------------------------------------------------------------------------

def _least_fixed_point(N: Array, R: Array, tol: float = 1e-13,
                       max_iter: int = 100_000) -> tuple[Array, int, bool]:
    """A certified upper bound on the least solution of X = N X + R (N, R >= 0, PF < 1).

    Runs X(t+1) = N X(t) + R from X(0) = 0 together with a Collatz-Wielandt column
    w = N w + 1, then inflates X along w into a super-solution (see the module docstring).

    Returns (X_up of the shape of R, iterations, converged).
    """
    L = N.shape[0]
    R2 = np.column_stack([R, np.ones(L)])
    X = np.zeros_like(R2)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        Xn = N @ X + R2
        step = float(np.max(np.abs(Xn - X))) if Xn.size else 0.0
        X = Xn
        if step <= tol * max(1.0, float(np.max(X)) if X.size else 0.0):
            converged = True
            break
    if not converged:
        warnings.warn(f"the fixed-point iteration X <- N X + R did not reach tol={tol:g} in "
                      f"{max_iter} iterations (lambda_PF(N) is close to 1); the returned bound "
                      "is still valid but may be loose.", ConvergenceWarning, stacklevel=3)
    w = X[:, -1]
    X = X[:, :-1]
    Nw = N @ w
    theta = float(np.max(Nw / w)) if L else 0.0
    if not theta < 1.0:  # iteration too short for a certificate: solve for w directly
        try:
            w = np.linalg.solve(np.eye(L) - N, np.ones(L))
        except np.linalg.LinAlgError:
            w = -np.ones(L)
        Nw = N @ w
        if np.all(w > 0):
            theta = float(np.max(Nw / w))
        if not (np.all(w > 0) and theta < 1.0):
            raise NotWellPosedError("could not certify lambda_PF(N(A, gamma)) < 1 numerically "
                                    "(it is too close to 1 for a sound bound).")
    NX = N @ X
    image = NX + R
    # residual of the last iterate, plus a rounding margin for the products above
    resid = np.maximum(image - X, 0.0) + 1e-12 * image + 1e-300
    eps = np.max(resid / ((1.0 - theta) * w[:, None]), axis=0) if L else np.zeros(R.shape[1])
    return X + np.outer(w, eps), it, converged


# ------------------------------------------------------------------------------------------
# section 4.2: state bounds
# ------------------------------------------------------------------------------------------

def state_bounds(model: ImplicitModel, sigma_u: ArrayLike | float,
                 k: int | None = None) -> StateBounds:
    """Box bound on the state change over the box (4.1) or cardinality (4.2) input set.

    For every ``u0`` and every ``u`` with ``|u - u0| <= sigma_u`` (and at most k changed
    entries when k is given), ``|x(u) - x(u0)| <= sigma_x`` componentwise, where

    - box set, Thm 4.1: ``sigma_x`` is the limit of
      ``sigma_x <- N(A, gamma) sigma_x + N(B, gamma) sigma_u`` (4.6). For a CONE map
      ``N(A, gamma) = |A|`` and ``N(B, gamma) = |B|``; for componentwise maps with constants
      gamma_i, ``gamma_i |A_ij|`` and ``gamma_i |B_ij|``.
    - cardinality set: the same iteration with ``N(B, gamma) sigma_u`` replaced by the
      vector ``v_l = s_k(sigma_u o N(B, gamma)_l)`` (s_k = sum of the k largest entries).
      This is valid because ``gamma_l ||sum_i B_li (u - u0)_i|| <= sum_i N(B)_li |u - u0|_i
      <= v_l`` when at most k terms are nonzero; it refines the scalar bound (4.4).

    The scalar bounds (4.3) and (4.4), ``||x - x0||_inf <= delta / (1 - ||N(A, gamma)||_inf)``
    with ``delta = max_l v_l``, are returned as :attr:`StateBounds.inf_bound`; the
    componentwise bound is never larger than it.

    Parameters
    ----------
    model : ImplicitModel
        Any BLIP activation; needs lambda_PF(N(A, gamma)) < 1 (Thm 2.2).
    sigma_u : float or array_like of shape (p,)
        Radii of the input box, >= 0 (a scalar is used for every input).
    k : int, optional
        At most k inputs change, 1 <= k <= p (set (4.2)).

    Returns
    -------
    StateBounds

    Raises
    ------
    NotWellPosedError
        lambda_PF(N(A, gamma)) >= 1 (for example a model certified only by its triangular
        structure with large diagonal entries).
    ShapeError
        ``sigma_u`` not a scalar or of shape (p,).
    ValidationError
        Negative or non-finite ``sigma_u``; k outside [1, p].

    Examples
    --------
    >>> m = ImplicitModel(A=[[0.0, 0.5], [0.0, 0.0]], B=[[1.0, 0.0], [0.0, 2.0]],
    ...                   C=[[1.0, 1.0]], D=[[0.0, 0.0]])
    >>> sb = state_bounds(m, 0.1)
    >>> np.round(sb.sigma_x, 6).tolist(), round(sb.inf_bound, 6)
    ([0.2, 0.2], 0.4)
    """
    model = _as_model(model)
    sigma = _as_sigma(sigma_u, model.p)
    kk = _as_k(k, model.p)
    nm = _norm_matrices(model)
    _require_pf(model, nm.NA)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        v = nm.NB @ sigma if kk is None else _top_k_sum(nm.NB * sigma[None, :], kk)
        eta, it, conv = _least_fixed_point(nm.NA, v[:, None])
    eta = eta[:, 0]
    if not np.all(np.isfinite(eta)):
        raise ValidationError(f"'sigma_u' (largest radius {float(np.max(sigma)):.3g}) is too "
                              "large: the state bound overflows float64; use smaller radii or "
                              "scale the inputs.")
    sigma_x = np.repeat(eta, nm.sizes)
    norm_inf = float(np.max(nm.NA.sum(axis=1))) if nm.NA.size else 0.0
    delta = float(np.max(v)) if v.size else 0.0
    inf_bound = delta / (1.0 - norm_inf) if norm_inf < 1.0 else math.inf
    if inf_bound < math.inf:
        inf_bound *= 1.0 + 1e-12  # rounding margin
    return StateBounds(sigma_x=sigma_x, eta=eta, block_starts=nm.starts.copy(),
                       block_norms=nm.norms.copy(), inf_bound=float(inf_bound), k=kk,
                       iterations=it, converged=conv)


# ------------------------------------------------------------------------------------------
# section 4.3: Lipschitz constant and sensitivity matrix
# ------------------------------------------------------------------------------------------

def lipschitz_bound(model: ImplicitModel) -> float:
    """Lipschitz constant rho of u -> y in the inf-norm (section 4.3).

    ``||y(u) - y(u0)||_inf <= rho ||u - u0||_inf`` with

        rho = ||Gamma B||_inf ||C||_inf / (1 - ||Gamma A||_inf) + ||D||_inf,

    where Gamma = diag(gamma) holds the Lipschitz constants of the componentwise map. For a
    CONE map (ReLU, leaky ReLU, tanh: gamma = 1) this is the paper's
    ``rho = ||B||_inf ||C||_inf / (1 - ||A||_inf) + ||D||_inf``.

    Parameters
    ----------
    model : ImplicitModel
        With a componentwise activation and ``||Gamma A||_inf < 1``.

    Returns
    -------
    float

    Raises
    ------
    NotWellPosedError
        ``||Gamma A||_inf >= 1``. A model with lambda_PF(|A|) < 1 can be brought to
        ``||A||_inf < 1`` by :func:`fenchel_idl.rescale` (section 2.5).
    ValidationError
        A non-componentwise activation (softmax blocks): use :func:`sensitivity_matrix`
        (Thm 4.2), whose ``||S||_inf`` is a Lipschitz constant for BLIP maps.

    Examples
    --------
    >>> m = ImplicitModel(A=[[0.5]], B=[[2.0]], C=[[3.0]], D=[[1.0]])
    >>> lipschitz_bound(m)
    13.0
    """
    model = _as_model(model)
    phi = model.activation
    if not phi.componentwise:
        raise ValidationError("lipschitz_bound needs a componentwise activation (the CONE case "
                              f"of section 4.3); got {phi!r}. Use sensitivity_matrix(model) "
                              "(Thm 4.2) for BLIP maps: ||S||_inf bounds the Lipschitz constant.")
    _, gammas, _, _ = blip_structure(phi, model.n)
    a = inf_norm(gammas[:, None] * model.A)
    if not a < 1.0:
        raise NotWellPosedError(f"lipschitz_bound needs ||A||_inf < 1 (section 4.3); got "
                                f"||Gamma A||_inf = {a:.6g}. If lambda_PF(|A|) < 1, use "
                                "fenchel_idl.rescale(model) first: it gives an equivalent model "
                                "with ||A||_inf < 1.")
    b = inf_norm(gammas[:, None] * model.B)
    return b * inf_norm(model.C) / (1.0 - a) + inf_norm(model.D)


def sensitivity_matrix(model: ImplicitModel) -> Array:
    """The sensitivity matrix S of Theorem 4.2: ``|y(u) - y(u0)| <= S |u - u0|`` (4.8).

        S = N(C) (I - N(A, gamma))^{-1} N(B, gamma) + |D|,

    which for a CONE map is ``|C| (I - |A|)^{-1} |B| + |D|``. N(C) holds the dual norms
    ``||C_il||_{p_l*}`` of the column blocks of C. The inverse is never formed: the limit
    of ``X(t+1) = N(A, gamma) X(t) + N(B, gamma)`` is computed by fixed-point iterations
    (which converge since lambda_PF(N(A, gamma)) < 1) and certified as an upper bound (see
    the module docstring); then ``S = N(C) X + |D|``.

    Parameters
    ----------
    model : ImplicitModel
        Any BLIP activation with lambda_PF(N(A, gamma)) < 1.

    Returns
    -------
    S : ndarray of shape (q, p), entries >= 0

    Raises
    ------
    NotWellPosedError
        lambda_PF(N(A, gamma)) >= 1.

    Examples
    --------
    >>> m = ImplicitModel(A=[[0.5]], B=[[2.0, -1.0]], C=[[3.0]], D=[[0.0, 1.0]])
    >>> np.round(sensitivity_matrix(m), 6)
    array([[12.,  7.]])
    """
    model = _as_model(model)
    nm = _norm_matrices(model)
    _require_pf(model, nm.NA)
    X, _, _ = _least_fixed_point(nm.NA, nm.NB)
    return nm.NC @ X + np.abs(model.D)


def output_bound(model: ImplicitModel, sigma_u: ArrayLike | float,
                 k: int | None = None) -> Array:
    """Componentwise bound on ``|y(u) - y(u0)|`` over the box or cardinality set (4.8).

    Box set: ``S sigma_u``. Cardinality set: row by row ``s_k(S_i o sigma_u)``, the largest
    sum of k terms of ``sum_j S_ij |u - u0|_j``.

    Parameters
    ----------
    model : ImplicitModel
    sigma_u : float or array_like of shape (p,)
    k : int, optional

    Returns
    -------
    ndarray of shape (q,)

    Raises
    ------
    NotWellPosedError, ShapeError, ValidationError
        As :func:`state_bounds`.
    """
    model = _as_model(model)
    sigma = _as_sigma(sigma_u, model.p)
    kk = _as_k(k, model.p)
    S = sensitivity_matrix(model)
    if kk is None:
        return S @ sigma
    return _top_k_sum(S * sigma[None, :], kk)


# ------------------------------------------------------------------------------------------
# section 4.4: the LP relaxation (Theorem 4.3) for ReLU
# ------------------------------------------------------------------------------------------

def _is_relu(phi: Activation) -> bool:
    if isinstance(phi, ReLU):
        return True
    return isinstance(phi, Blockwise) and all(isinstance(a, ReLU) for _, a in phi.blocks)


class _ReluLP:
    """The bidual LP of Theorem 4.3, built once per model (DPP) and re-solved.

    With ``w = u - u0`` in ``W = {w_lo <= w <= w_hi, sum_j |w_j| / sigma_j <= k}`` (the box,
    cut by an optional input range, and the convex hull of the cardinality set (4.2)):

        max  c^T x + d^T w
        s.t. x - A x - B w >= r                       (x >= z,  z = A x + B u + bias_x)
             s o (A x + B w) - x >= h2                (triangle only: x <= s o z + q)
             x_lo <= x <= x_hi                        (x >= 0, |x - x0| <= sigma_x)

    with r = B u0 + bias_x and h2 = -(q + s o r).
    """

    def __init__(self, model: ImplicitModel, card: bool, triangle: bool):
        n, p = model.n, model.p
        self.x = cp.Variable(n, name="x")
        self.w = cp.Variable(p, name="w")
        self.c = cp.Parameter(n, name="c")
        self.d = cp.Parameter(p, name="d")
        self.r = cp.Parameter(n, name="r")
        self.x_lo = cp.Parameter(n, name="x_lo")
        self.x_hi = cp.Parameter(n, name="x_hi")
        self.w_lo = cp.Parameter(p, name="w_lo")
        self.w_hi = cp.Parameter(p, name="w_hi")
        Ax_Bw = model.A @ self.x + model.B @ self.w
        self.link = self.x - Ax_Bw >= self.r
        cons = [self.link, self.x >= self.x_lo, self.x <= self.x_hi, self.w >= self.w_lo,
                self.w <= self.w_hi]
        self.k = self.inv_sig = self.s = self.h2 = self.chord = None
        if card:
            self.k = cp.Parameter(nonneg=True, name="k")
            self.inv_sig = cp.Parameter(p, nonneg=True, name="inv_sigma_u")
            cons.append(cp.sum(cp.multiply(self.inv_sig, cp.abs(self.w))) <= self.k)
        if triangle:
            self.s = cp.Parameter(n, nonneg=True, name="s")
            self.h2 = cp.Parameter(n, name="h2")
            self.chord = cp.multiply(self.s, Ax_Bw) - self.x >= self.h2
            cons.append(self.chord)
        self.problem = cp.Problem(cp.Maximize(self.c @ self.x + self.d @ self.w), cons)
        if not self.problem.is_dcp(dpp=True):  # pragma: no cover - fixed structure
            raise NotConvexError("the LP relaxation of Theorem 4.3 is not DPP; this is a bug.")


_LP_CACHE: weakref.WeakKeyDictionary[ImplicitModel, dict[tuple[bool, bool], _ReluLP]] = \
    weakref.WeakKeyDictionary()


def _relu_lp(model: ImplicitModel, card: bool, triangle: bool) -> _ReluLP:
    per_model = _LP_CACHE.setdefault(model, {})
    key = (card, triangle)
    if key not in per_model:
        per_model[key] = _ReluLP(model, card, triangle)
    return per_model[key]


def _solver_chain(solver: str | Sequence[str] | None) -> list[str]:
    installed = set(cp.installed_solvers())
    if solver is None:
        chain = [s for s in LP_SOLVERS if s in installed]
    else:
        wanted = [solver] if isinstance(solver, str) else list(solver)
        for s in wanted:
            if not isinstance(s, str) or s.upper() not in installed:
                raise ValidationError(f"'solver' must name installed CVXPY solvers "
                                      f"{sorted(installed)}; got {s!r}.")
        chain = [s.upper() for s in wanted]
    if not chain:
        raise SolverError("no LP solver is installed (tried " + ", ".join(LP_SOLVERS) + ").")
    return chain


_LOG = logging.getLogger("fenchel_idl.analysis")
# HiGHS writes its banner once per process; after one silenced solve nothing needs silencing
_HIGHS_BANNER = {"silenced": False}


@contextlib.contextmanager
def _quiet_stdout(active: bool) -> Iterator[None]:
    """Send what is written to the process's standard output (file descriptor 1, which C code
    writes to and Python's ``sys.stdout`` redirects do not reach) to the null device.

    HiGHS writes its banner to standard output when its first instance is made, before any
    option can be set; that is the only output of the LP solvers run without ``verbose``.
    Standard error (Python's warnings) is left alone.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _solve(lp: _ReluLP, chain: list[str]) -> tuple[str, str]:
    """Solve the LP with the first solver of ``chain`` that reaches a certified optimum.

    The solvers' output (and HiGHS's banner) is shown only when the ``fenchel_idl`` logger
    is at DEBUG (``fenchel-idl --verbose``).
    """
    attempts = []
    verbose = _LOG.isEnabledFor(logging.DEBUG)
    for name in chain:
        silence = not verbose and name == "HIGHS" and not _HIGHS_BANNER["silenced"]
        try:
            with _quiet_stdout(silence):
                lp.problem.solve(solver=name, verbose=verbose)
            _HIGHS_BANNER["silenced"] |= silence
        except (cp.error.SolverError, ValueError, ArithmeticError) as exc:
            attempts.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        status = lp.problem.status
        ok = (status == cp.OPTIMAL and lp.x.value is not None and lp.w.value is not None
              and lp.link.dual_value is not None
              and (lp.chord is None or lp.chord.dual_value is not None))
        if ok:
            return name, status
        attempts.append(f"{name}: status {status}")
    raise SolverError("the LP relaxation of Theorem 4.3 failed with every solver: "
                      + "; ".join(attempts) + ". No bound is reported.",
                      status=lp.problem.status or "solver_error", attempts=attempts)


def _support_w(b: Array, w_lo: Array, w_hi: Array, sig: Array, k: float | None) -> float:
    """Support function (4.10) of W: max b^T w over w_lo <= w <= w_hi (w_lo <= 0 <= w_hi)
    and sum_j |w_j| / sigma_j <= k.

    Coordinate j gives |b_j| sigma_j per unit of budget |w_j| / sigma_j, up to a cap; with
    the budget this is a fractional knapsack, solved greedily. Without k it is
    ``sum_j max(b_j w_lo_j, b_j w_hi_j)`` (for the plain box, ``b^T u0 + sigma_u^T |b|``
    once the constant is added; with k and no input range, ``s_k(sigma_u o |b|)``).
    """
    reach = np.where(b >= 0, w_hi, -w_lo)  # how far w_j can move in the good direction
    if k is None:
        return float(np.sum(np.abs(b) * reach))
    pos = sig > 0
    gain = np.where(pos, np.abs(b) * sig, 0.0)  # per unit of budget
    cap = np.where(pos, reach / np.where(pos, sig, 1.0), 0.0)  # budget units available
    order = np.argsort(-gain, kind="stable")
    cum = np.cumsum(cap[order])
    prev = np.concatenate([[0.0], cum[:-1]])
    take = np.clip(k - prev, 0.0, cap[order])
    return float(np.sum(gain[order] * take))


@dataclass(frozen=True)
class _LPData:
    u0: Array
    r: Array
    sig: Array
    x_lo: Array
    x_hi: Array
    w_lo: Array
    w_hi: Array
    k: float | None
    s: Array | None
    h2: Array | None


def _dual_value(model: ImplicitModel, lam: Array, mu: Array | None, c: Array, d: Array,
                data: _LPData) -> float:
    """Lagrange dual function of the LP at lam, mu >= 0: an upper bound for every such pair.

    g = d^T u0 - lam^T r - mu^T h2 + max_{x in box} gx^T x + sigma_W(gw), with
    gx = c + lam - A^T lam + A^T (s o mu) - mu and gw = d - B^T lam + B^T (s o mu); this is
    the dual form ``p_bar = min_lam sigma_U(B^T lam) + sum_i g_i`` of Theorem 4.3.
    """
    A, B = model.A, model.B
    gx = c + lam - A.T @ lam
    gw = d - B.T @ lam
    const = float(d @ data.u0 - lam @ data.r)
    if mu is not None and data.s is not None and data.h2 is not None:
        smu = data.s * mu
        gx = gx + A.T @ smu - mu
        gw = gw + B.T @ smu
        const -= float(mu @ data.h2)
    bx = float(np.sum(np.maximum(gx * data.x_lo, gx * data.x_hi)))
    bw = _support_w(gw, data.w_lo, data.w_hi, data.sig, data.k)
    scale = (abs(const) + float(np.sum(np.abs(gx) * np.maximum(np.abs(data.x_lo),
                                                                 np.abs(data.x_hi))))
             + abs(bw) + float(np.abs(lam) @ np.abs(data.r)))
    return const + bx + bw + 1e-12 * scale  # with a margin for rounding


def _triangle(model: ImplicitModel, data: _LPData, k: int | None) -> tuple[Array, Array]:
    """Chord x <= s o z + q of ReLU over the pre-activation interval [l, h] of z.

    l, h bound z = A x + B w + r over the x box and W by interval arithmetic.
    """
    A, B = model.A, model.B
    Ap, An = np.maximum(A, 0.0), np.minimum(A, 0.0)
    Bp, Bn = np.maximum(B, 0.0), np.minimum(B, 0.0)
    ax_lo = Ap @ data.x_lo + An @ data.x_hi
    ax_hi = Ap @ data.x_hi + An @ data.x_lo
    bw_lo = Bp @ data.w_lo + Bn @ data.w_hi
    bw_hi = Bp @ data.w_hi + Bn @ data.w_lo
    if k is not None:
        reach = np.maximum(data.w_hi, -data.w_lo)
        card = _top_k_sum(np.abs(B) * reach[None, :], k)
        bw_lo = np.maximum(bw_lo, -card)
        bw_hi = np.minimum(bw_hi, card)
    l = ax_lo + bw_lo + data.r
    h = ax_hi + bw_hi + data.r
    margin = 1e-12 * (np.abs(A) @ np.maximum(np.abs(data.x_lo), np.abs(data.x_hi))
                      + np.abs(B) @ np.maximum(np.abs(data.w_lo), np.abs(data.w_hi))
                      + np.abs(data.r)) + 1e-300
    l, h = l - margin, h + margin
    unstable = (l < 0) & (h > 0)
    s = np.where(h <= 0, 0.0, 1.0)
    q = np.zeros_like(l)
    width = np.where(unstable, h - l, 1.0)
    s = np.where(unstable, h / width, s)
    q = np.where(unstable, -h * l / width, q)
    return s, q


def _round_to_set(w: Array, data: _LPData, k: int | None) -> list[Array]:
    """Candidate attacks in the (non-convex) input set from an LP solution w = u - u0.

    The LP point is clipped into the box; with k, only its k largest changes (relative to
    sigma_u) are kept. A second candidate pushes every kept change to its end of the box.
    """
    w = np.clip(w, data.w_lo, data.w_hi)
    pos = data.sig > 0
    rel = np.where(pos, np.abs(w) / np.where(pos, data.sig, 1.0), 0.0)
    if k is not None:
        keep = np.argsort(-rel, kind="stable")[:k]
        mask = np.zeros(w.shape, dtype=bool)
        mask[keep] = True
        w = np.where(mask, w, 0.0)
        rel = np.where(mask, rel, 0.0)
    moved = rel > 1e-9
    pushed = np.where(moved & (w > 0), data.w_hi, np.where(moved & (w < 0), data.w_lo, 0.0))
    return [w, pushed]


def lp_bound(model: ImplicitModel, u0: ArrayLike, sigma_u: ArrayLike | float,
             c: ArrayLike | None = None, k: int | None = None, *,
             d: ArrayLike | None = None, offset: float = 0.0, objective: str = "linear",
             relaxation: str = "paper", input_range: tuple[float, float] | None = None,
             solver: str | Sequence[str] | None = None) -> LPBound:
    """LP relaxation bound of Theorem 4.3 for ReLU models, with an attack candidate.

    ``objective="linear"``: bound ``max c^T x(u) + d^T u + offset`` over the input set by
    the bidual LP of Theorem 4.3,

        max  c^T x + d^T u (+ offset)
        s.t. x >= A x + B u + bias_x,  x >= 0,  |x - x0| <= sigma_x,  |u - u0| <= sigma_u,
             ||diag(sigma_u)^{-1} (u - u0)||_1 <= k          (cardinality set only),

    where ``x0 = x(u0)`` and ``sigma_x`` comes from :func:`state_bounds` (box or
    cardinality version). Every ``(x(u), u)`` with u in the set is feasible (ReLU gives
    ``x = (z)_+ >= z`` and ``x >= 0``; the l1 ball with the box is the convex hull of the
    cardinality set), so the LP optimum bounds the true maximum.

    ``relaxation="triangle"`` adds the chord ``x_i <= s_i z_i + q_i`` of the ReLU over an
    interval ``[l_i, h_i]`` of the pre-activation ``z = A x + B u + bias_x`` (from the state
    and input boxes by interval arithmetic). This is not in the paper; it is the standard
    convex hull of the ReLU graph on an interval, only tightens the LP, and unlike the paper's
    LP it bounds *increases* of states (with ``c >= 0`` the paper's LP is the box bound).

    The reported :attr:`LPBound.bound` is not the solver's primal value: it is the Lagrange
    dual function of the LP at the solver's multipliers ``lambda >= 0`` of the coupling
    constraints (the dual form ``p_bar = min_lambda sigma_U(B^T lambda) + sum_i g_i`` of
    Theorem 4.3), which bounds the maximum for *every* ``lambda >= 0``, however inexact the
    solve. At ``lambda = 0`` it is the box bound ``c^T x0 + |c|^T sigma_x`` (tightened by
    ``x >= 0``); the smaller of the two is returned, so the LP bound is never looser than
    the box bound.

    ``objective="discrepancy"`` (section 7.3.2, ``f_i(xi) = (xi - x0_i)^2`` in (4.9)):
    maximizing a convex function is not an LP, so this solves, for every state i and sign,
    the LP ``max +-(x_i - x0_i)``, giving certified bounds ``-down_i <= x_i - x0_i <= up_i``
    (LPs that the box already settles, ``sigma_x,i = 0`` or ``x0_i = 0`` downwards, are
    skipped), and the bound ``sum_i max(up_i, down_i)^2`` on ``||x(u) - x0||_2^2``. The
    attack is the candidate, among all these LPs' maximizers, with the largest true
    discrepancy at its equilibrium. This costs up to 2n LP solves (the LP is built once
    per model with CVXPY parameters and re-solved).

    The attack ``u`` is the LP maximizer's input clipped into the box; for the cardinality
    set only its k largest changes are kept, so ``u`` always lies in the set. A second
    candidate pushes the kept changes to the box ends; the better one (true objective at
    the equilibrium) is returned.

    Parameters
    ----------
    model : ImplicitModel
        With the ReLU activation and lambda_PF(|A|) < 1.
    u0 : array_like of shape (p,)
        Nominal input.
    sigma_u : float or array_like of shape (p,)
        Box radii, >= 0.
    c : array_like of shape (n,), optional
        Linear objective on the state; required for ``objective="linear"``.
    k : int, optional
        Cardinality bound, 1 <= k <= p.
    d : array_like of shape (p,), optional
        Linear objective on the input (``objective="linear"`` only), for example
        ``D_t - D_y`` when c and d encode an output margin.
    offset : float
        Constant added to the linear objective (for example ``bias_y[t] - bias_y[y]``), so
        that ``bound`` and ``value`` are margins.
    objective : {"linear", "discrepancy"}
    relaxation : {"paper", "triangle"}
        The LP of Theorem 4.3, or that LP plus the ReLU chords.
    input_range : (float, float), optional
        Valid input range (for example (0, 1) for images): the box is cut to it, so the
        bound and the attack refer to ``{u in set : low <= u <= high}``. ``u0`` must lie in
        the range.
    solver : str or sequence of str, optional
        CVXPY solver(s) to try in order; default :data:`LP_SOLVERS` (installed ones).

    Returns
    -------
    LPBound

    Raises
    ------
    ValidationError
        Activation other than ReLU; bad ``objective`` or ``relaxation``; ``c`` missing for
        "linear" or given for "discrepancy"; negative ``sigma_u``; k outside [1, p]; ``u0``
        outside ``input_range``.
    ShapeError
        ``u0``, ``sigma_u``, ``c`` or ``d`` of the wrong shape.
    NotWellPosedError
        lambda_PF(|A|) >= 1.
    SolverError
        Every solver failed; no bound is reported.

    Examples
    --------
    >>> m = ImplicitModel(A=[[0.0, 0.5], [0.0, 0.0]], B=[[1.0], [-1.0]], C=[[1.0, 1.0]],
    ...                   D=[[0.0]])
    >>> res = lp_bound(m, [1.0], 0.5, c=[-1.0, 0.0])   # how low can x_1 go?
    >>> round(-res.bound, 6), round(-res.value, 6), res.status
    (0.5, 0.5, 'optimal')
    """
    model = _as_model(model)
    if not _is_relu(model.activation):
        raise ValidationError("lp_bound needs the ReLU activation (the LP relaxation of "
                              f"Theorem 4.3 is for phi = max(., 0)); got {model.activation!r}.")
    objective = check_choice("objective", objective, ("linear", "discrepancy"))
    relaxation = check_choice("relaxation", relaxation, ("paper", "triangle"))
    n, p = model.n, model.p
    u0v = _as_vector("u0", u0, p, f"p = {p} inputs")
    sig = _as_sigma(sigma_u, p)
    kk = _as_k(k, p)
    rng_ = _as_range(input_range)
    cv, dv, off = _lp_objective(objective, c, d, offset, n, p)
    run = _LPRun.build(model, u0v, sig, kk, rng_, relaxation, solver)
    if objective == "linear":
        return _linear_bound(run, cv, dv, off, relaxation)
    return _discrepancy_bound(run, relaxation)


def _lp_objective(objective: str, c: ArrayLike | None, d: ArrayLike | None, offset: float,
                  n: int, p: int) -> tuple[Array, Array, float]:
    """The checked linear objective (c, d, offset) of :func:`lp_bound`; zeros for
    "discrepancy", which takes none."""
    if objective == "linear":
        if c is None:
            raise ValidationError("'c' is required for objective='linear': an array of shape "
                                  f"(n,) = ({n},); got None.")
        cv = _as_vector("c", c, n, f"n = {n} states")
        dv = np.zeros(p) if d is None else _as_vector("d", d, p, f"p = {p} inputs")
        return cv, dv, check_real("offset", offset)
    if c is not None or d is not None or offset != 0.0:
        raise ValidationError("'c', 'd' and 'offset' must be left unset for "
                              "objective='discrepancy' (the objective is ||x - x0||_2^2); "
                              "got a value.")
    return np.zeros(n), np.zeros(p), 0.0


def _input_box(u0v: Array, sig: Array,
               rng_: tuple[float, float] | None) -> tuple[Array, Array]:
    """Bounds ``w_lo <= u - u0 <= w_hi``: the box, cut to the input range if one is given."""
    w_lo, w_hi = -sig, sig.copy()
    if rng_ is not None:
        lo, hi = rng_
        if np.any(u0v < lo) or np.any(u0v > hi):
            raise ValidationError(f"'u0' must lie in input_range [{lo}, {hi}]; got values in "
                                  f"[{u0v.min():.6g}, {u0v.max():.6g}].")
        w_lo = np.maximum(w_lo, lo - u0v)
        w_hi = np.minimum(w_hi, hi - u0v)
    return w_lo, w_hi


@dataclass(frozen=True)
class _LPRun:
    """One call of :func:`lp_bound`: the model, its LP with the parameters set for this
    input set, the solvers to try, the nominal equilibrium x0 and the state box."""

    model: ImplicitModel
    lp: _ReluLP
    chain: list[str]
    data: _LPData
    k: int | None
    x0: Array
    sigma_x: Array

    @classmethod
    def build(cls, model: ImplicitModel, u0v: Array, sig: Array, kk: int | None,
              rng_: tuple[float, float] | None, relaxation: str,
              solver: str | Sequence[str] | None) -> _LPRun:
        w_lo, w_hi = _input_box(u0v, sig, rng_)
        # the state box (section 4.2) around the nominal equilibrium
        sb = state_bounds(model, sig, kk)
        x0, _ = model.equilibrium(u0v, tol=1e-13, max_iter=100_000, on_nonconvergence="ignore")
        sigma_x = sb.sigma_x + 1e-9 * np.maximum(1.0, np.abs(x0))  # slack for the solve of x0
        data = _LPData(u0=u0v, r=model.B @ u0v + model.bias_x, sig=sig,
                       x_lo=np.maximum(0.0, x0 - sigma_x), x_hi=x0 + sigma_x, w_lo=w_lo,
                       w_hi=w_hi, k=None if kk is None else float(kk), s=None, h2=None)
        if relaxation == "triangle":
            s, q = _triangle(model, data, kk)
            data = _LPData(**{**data.__dict__, "s": s, "h2": -(q + s * data.r)})
        lp = _relu_lp(model, kk is not None, relaxation == "triangle")
        _set_parameters(lp, data, kk)
        return cls(model, lp, _solver_chain(solver), data, kk, x0, sigma_x)

    def solve(self, cvec: Array, dvec: Array) -> tuple[float, float, Array, Array, str, str]:
        """Solve the LP for the objective (cvec, dvec): (certified bound, the solver's value,
        its x, its w = u - u0, solver, status)."""
        lp, model, data = self.lp, self.model, self.data
        lp.c.value = cvec
        lp.d.value = dvec
        used, status = _solve(lp, self.chain)
        lam = np.maximum(np.asarray(lp.link.dual_value, dtype=float), 0.0)
        mu = None if lp.chord is None else np.maximum(np.asarray(lp.chord.dual_value,
                                                                 dtype=float), 0.0)
        zeros_n = np.zeros(model.n)
        cert = min(_dual_value(model, lam, mu, cvec, dvec, data),
                   _dual_value(model, zeros_n, None if mu is None else zeros_n, cvec, dvec,
                               data))
        lp_value = float(lp.problem.value) + float(dvec @ data.u0)
        return (cert, lp_value, np.array(lp.x.value, dtype=float),
                np.array(lp.w.value, dtype=float), used, status)

    def true_objective(self, W: Array, cv: Array | None,
                       dv: Array | None) -> tuple[Array, Array]:
        """The objective at the true equilibria of the inputs ``u0 + W[:, j]``: linear with
        (cv, dv), or the discrepancy ``||x - x0||_2^2`` when cv is None; and the states."""
        U = self.data.u0[:, None] + W
        X, _ = self.model.equilibrium(U, tol=1e-12, max_iter=100_000,
                                      on_nonconvergence="ignore")
        if cv is not None:
            return cv @ X + dv @ U, X
        return np.sum((X - self.x0[:, None]) ** 2, axis=0), X


def _set_parameters(lp: _ReluLP, data: _LPData, kk: int | None) -> None:
    lp.r.value = data.r
    lp.x_lo.value = data.x_lo
    lp.x_hi.value = data.x_hi
    lp.w_lo.value = data.w_lo
    lp.w_hi.value = data.w_hi
    if lp.k is not None:
        sig = data.sig
        lp.k.value = float(kk)  # type: ignore[arg-type]
        lp.inv_sig.value = np.where(sig > 0, 1.0 / np.where(sig > 0, sig, 1.0), 0.0)
    if lp.s is not None:
        lp.s.value = data.s
        lp.h2.value = data.h2


def _linear_bound(run: _LPRun, cv: Array, dv: Array, off: float, relaxation: str) -> LPBound:
    """``objective="linear"``: one LP, and the better of its two rounded attacks."""
    bound, lp_value, x_lp, w_lp, used, status = run.solve(cv, dv)
    W = np.column_stack(_round_to_set(w_lp, run.data, run.k))
    vals, X = run.true_objective(W, cv, dv)
    best = int(np.argmax(vals))
    return LPBound(bound=bound + off, value=float(vals[best]) + off,
                   lp_value=lp_value + off, x=x_lp,
                   u=run.data.u0 + W[:, best], x_eq=X[:, best], x0=run.x0,
                   sigma_x=run.sigma_x, componentwise=None, status=status, solver=used,
                   objective="linear", relaxation=relaxation, n_solves=1)


def _discrepancy_bound(run: _LPRun, relaxation: str) -> LPBound:
    """``objective="discrepancy"``: 2n linear LPs, skipping those the box settles."""
    data, x0 = run.data, run.x0
    n, p = x0.shape[0], data.u0.shape[0]
    up = data.x_hi - x0
    down = x0 - data.x_lo
    up_lp = np.zeros(n)
    down_lp = np.zeros(n)
    cands, xs = [np.zeros(p)], [x0.copy()]
    used, status, n_solves = run.chain[0], str(cp.OPTIMAL), 0
    for i in range(n):
        for sign in (1.0, -1.0):
            if (up[i] if sign > 0 else down[i]) <= 0.0:
                continue
            e = np.zeros(n)
            e[i] = sign
            cert, val, x_lp, w_lp, used, status = run.solve(e, np.zeros(p))
            n_solves += 1
            if sign > 0:
                up[i] = min(up[i], max(cert - x0[i], 0.0))
                up_lp[i] = max(val - x0[i], 0.0)
            else:
                down[i] = min(down[i], max(cert + x0[i], 0.0))
                down_lp[i] = max(val + x0[i], 0.0)
            for wc in _round_to_set(w_lp, data, run.k):
                cands.append(wc)
                xs.append(x_lp)
    W = np.column_stack(cands)
    vals, X = run.true_objective(W, None, None)
    best = int(np.argmax(vals))
    width = np.maximum(up, down)
    return LPBound(bound=float(np.sum(width ** 2)) * (1.0 + 1e-12), value=float(vals[best]),
                   lp_value=float(np.sum(np.maximum(up_lp, down_lp) ** 2)), x=xs[best],
                   u=data.u0 + W[:, best], x_eq=X[:, best], x0=x0, sigma_x=run.sigma_x,
                   componentwise=np.column_stack([up, down]), status=status, solver=used,
                   objective="discrepancy", relaxation=relaxation, n_solves=n_solves)
