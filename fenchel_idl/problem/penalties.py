"""Convex penalties P(A, B, C, D) for training (sections 4.3, 5 and 6.1).

A penalty is a small value that knows

- its CVXPY expression of the model matrices (``expression``), used by every BCD block
  (the matrices of the other blocks enter as constants or parameters);
- its numpy value (``value``);
- its proximal operator where one exists in closed form (``prox``), used by gradient
  refinement; others raise :class:`NotSupportedInRefinement`.

Named penalties (the paper's): :class:`L1` (elementwise), :class:`FeatureSelection`
(column norms of (B; D), (5.1)), :class:`RowNorms` (of A or (A, B)), :class:`ColumnNorms`
(of A or (A; C)), :class:`Nuclear` (of A) and :class:`LipschitzBound` (the convex bound
(4.7) on the Lipschitz constant). :class:`Custom` wraps any user callable
``fn(A, B, C, D)`` returning a convex expression, a list of constraints, or both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from fenchel_idl.errors import InputTypeError, NotConvexError, ValidationError
from fenchel_idl.model.lipschitz import lipschitz_penalty_value
from fenchel_idl.validation import as_float_array, check_choice, check_real

__all__ = [
    "L1",
    "PENALTIES",
    "ColumnNorms",
    "Custom",
    "FeatureSelection",
    "LipschitzBound",
    "NotSupportedInRefinement",
    "Nuclear",
    "Penalty",
    "RowNorms",
    "get_penalty",
    "penalty_constrains",
    "penalty_reads",
]

Array = NDArray[np.float64]
MATRICES = ("A", "B", "C", "D")


class NotSupportedInRefinement(ValidationError):
    """The penalty has no proximal operator usable by gradient refinement."""


def _norm_cols(M, alpha):
    return cp.norm(M, alpha, axis=0)


@dataclass(frozen=True)
class Penalty:
    """Base class. ``weight`` multiplies the penalty; ``matrices`` lists what it reads."""

    weight: float = 1.0
    name: ClassVar[str] = "penalty"
    #: whether the penalty splits over rows of (A, B) (so the (A, B) block can split too)
    row_separable: ClassVar[bool] = False

    def __post_init__(self):
        check_real(f"{self.name} weight", self.weight, 0.0, None)

    @property
    def matrices(self) -> tuple[str, ...]:
        raise NotImplementedError

    def expression(self, M: Mapping[str, Any]) -> tuple[Any, list]:
        """(convex CVXPY expression, constraints) of the matrices in ``M``."""
        raise NotImplementedError

    def row_terms(self, M: Mapping[str, Any]) -> Any:
        """Per-row penalty of the (A, B) rows in ``M`` (shape (r,)), for row-separable
        penalties; the parts on C and D are constants of the (A, B) block and left out."""
        raise NotImplementedError

    def value(self, M: Mapping[str, Array]) -> float:
        """The penalty at numeric matrices (evaluated through the same expression).

        Parameters
        ----------
        M : mapping of str to ndarray
            The matrices by name ("A", "B", "C", "D"); it must hold every matrix of
            :attr:`matrices` (others are ignored).

        Raises
        ------
        ValidationError
            A matrix the penalty reads is missing, or has NaN or inf entries.
        InputTypeError
            ``M`` is not a mapping, or a matrix is not numeric.
        """
        expr, _ = self.expression(_constants(self._matrices(M)))
        return float(expr.value) if not isinstance(expr, (int, float)) else float(expr)

    def _matrices(self, M: Mapping[str, Array]) -> dict[str, Array]:
        """The numeric matrices of ``M`` as float arrays, after checking that every matrix
        the penalty reads is there."""
        if not isinstance(M, Mapping):
            raise InputTypeError(f"penalty {self.name!r} needs a mapping of matrices by name "
                                 f"{list(self.matrices)}; got {type(M).__name__}.")
        missing = [k for k in self.matrices if k not in M]
        if missing:
            raise ValidationError(f"penalty {self.name!r} reads the matrices "
                                  f"{list(self.matrices)}; missing {missing} from the "
                                  f"matrices given {list(M)}.")
        return {k: as_float_array(k, M[k], ndim=2) for k in MATRICES if k in M}

    #: whether :meth:`ab_prox` and :meth:`ab_subgradient` exist (the first-order (A, B) block)
    ab_fast: ClassVar[bool] = False
    #: whether they take per-row weights t of shape (n, 1) (a diagonal metric over rows)
    ab_metric: ClassVar[bool] = False

    def ab_prox(self, M: Mapping[str, Array], t: float,
                fixed: Mapping[str, Array]) -> dict[str, Array]:
        """argmin over the A and B it reads of t * P + 1/2 ||. - M||^2, with C and D fixed at
        ``fixed`` (the (A, B) block of BCD). Only where :attr:`ab_fast`."""
        raise NotImplementedError

    def ab_value(self, M: Mapping[str, Array], fixed: Mapping[str, Array]) -> float:
        """The penalty at A, B of ``M`` and C, D of ``fixed`` (numeric, unchecked: the
        first-order (A, B) block's objective)."""
        return self._raw_value({**fixed, **M})

    def _raw_value(self, M: Mapping[str, Array]) -> float:
        return self.value(M)

    def ab_subgradient(self, M: Mapping[str, Array], R: Mapping[str, Array], t: float,
                       fixed: Mapping[str, Array]) -> dict[str, Array]:
        """The element S of t * dP (over the A and B it reads, C and D fixed) nearest to -R,
        that is with the least ||R + S|| (the certificate of the first-order (A, B) block)."""
        raise NotImplementedError

    def prox(self, M: dict[str, Array], step: float) -> dict[str, Array]:
        """Proximal step: argmin_X step * P(X) + 1/2 ||X - M||^2 for the matrices it reads."""
        raise NotSupportedInRefinement(
            f"penalty {self.name!r} is not supported in refinement (no proximal operator); "
            "drop it from the refinement stage or use it in BCD only.")

    def to_dict(self) -> dict:
        return {"name": self.name, "weight": float(self.weight)}


def _constants(M: Mapping[str, Array]) -> dict[str, Any]:
    return {k: cp.Constant(v) for k, v in M.items()}


def _soft(x: Array, t: float) -> Array:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def _group_shrink(M: Array, t: float, axis: int) -> Array:
    """Block soft-thresholding of the columns (axis=0) or rows (axis=1) of M (l2 groups)."""
    norms = np.linalg.norm(M, axis=axis, keepdims=True)
    scale = np.maximum(1.0 - t / np.maximum(norms, 1e-300), 0.0)
    return M * scale


def _shrink_stacked(M: Mapping[str, Array], keys: tuple[str, ...], t: float,
                    axis: int) -> dict[str, Array]:
    """:func:`_group_shrink` of the matrices ``keys`` joined along ``axis`` (stacked for
    column groups, side by side for row groups), split back into the named matrices."""
    parts = [M[k] for k in keys]
    joined = _group_shrink(np.concatenate(parts, axis=axis), t, axis)
    cuts = np.cumsum([P.shape[axis] for P in parts])[:-1]
    return dict(zip(keys, np.split(joined, cuts, axis=axis)))


def _toward(R: Array, t: float, axis: int | None) -> Array:
    """-R shrunk into l2 balls of radius t (groups along ``axis``; None: one group): the
    subgradient of t ||.||_2 at zero nearest to -R."""
    nr = np.linalg.norm(R, axis=axis, keepdims=axis is not None)
    return -R * np.minimum(1.0, t / np.maximum(nr, 1e-300))


def _shifted_groups(X: Array, c: Array, t, axis: int) -> Array:
    """Prox of sum_g sqrt(||x_g||^2 + c_g^2) (groups along ``axis``, constants c_g >= 0) in
    the metric sum_i ||row_i||^2 / t_i: t a number, or per row an (n, 1) array (for row
    groups the rows' own t). Each group is scaled entrywise, x_i nu / (nu + t_i), with nu
    the root of c^2 / nu^2 + sum_i x_i^2 / (nu + t_i)^2 = 1 (Newton; exact zeros where
    c_g = 0 and ||x_g / t||_2 <= 1)."""
    c = np.asarray(c, dtype=float)
    if np.ndim(t) == 2 and axis == 1:
        t = np.squeeze(t, axis=1)  # row groups: one t per group
    tg = np.broadcast_to(np.asarray(t, dtype=float), X.shape) if np.ndim(t) == 2 else None
    if tg is None:
        a = np.linalg.norm(X, axis=axis)
        scale = np.maximum(1.0 - t / np.maximum(a, 1e-300), 0.0)
        if not np.any(c > 0):
            return X * np.expand_dims(scale, axis)
        tg = np.broadcast_to(np.expand_dims(np.asarray(t, dtype=float) + 0.0 * a, axis),
                             X.shape)
    if axis == 1:
        return _shifted_columns(X.T, c, tg.T).T
    return _shifted_columns(X, c, tg)


def _shifted_columns(X: Array, c: Array, T: Array) -> Array:
    """:func:`_shifted_groups` for column groups with weights T of X's shape. nu solves
    h(nu) = c^2 / nu^2 + sum_i x_i^2 / (nu + t_i)^2 - 1 = 0; h is convex and decreasing, so
    Newton's method from a point where h >= 0 rises monotonically to the root. (It runs in
    the first-order (A, B) block's every proximal step, hence the few array operations.)"""
    X2 = X * X
    c2 = c * c
    # columns that are 0: no fixed part and ||x / t|| <= 1 (none when every c > 0)
    zero = None if np.all(c > 0) else (c == 0) & (np.sum(X2 / (T * T), axis=0) <= 1.0)
    # h >= 0 at c (c > 0) and at ||(x, c)|| - max t (there every denominator, (nu + t_i)^2
    # and nu^2, is at most ||(x, c)||^2): a start within max t of the root, so that Newton's
    # method takes a few steps when t is small beside the column
    nu = np.maximum(c, np.sqrt(np.sum(X2, axis=0) + c2) - T.max(axis=0))
    for _ in range(100):
        Dn = nu + T
        R2 = X2 / (Dn * Dn)
        nn = np.maximum(nu, 1e-300)
        cn = c2 / nn / nn  # 0 where c = 0 (nn * nn would underflow to 0)
        h = cn + R2.sum(axis=0) - 1.0
        slope = cn / nn + np.sum(R2 / Dn, axis=0)  # -h' / 2
        step = np.maximum(h, 0.0) / (2.0 * np.maximum(slope, 1e-300))
        if zero is not None:
            step[zero] = 0.0
        nu = nu + step
        # after a step s the error is at most h'' / (2 |h'|) s^2 <= 1.5 s^2 / nu (term by
        # term h'' / |h'| = 3 / (nu + t_i) <= 3 / nu): a step of 1e-8 nu leaves 1.5e-16 nu
        if np.all(step <= 1e-8 * nn):
            break
    out = X * (nu / (nu + T))
    if zero is not None:
        out[:, zero] = 0.0
    return out


def _weighted_column_shrink(X: Array, T: Array) -> Array:
    """Prox of sum_j ||x_j||_2 (columns x_j) in the metric sum_ij X_ij^2 / T_ij (weights T of
    X's shape, > 0): :func:`_shifted_columns` with c = 0. Column j is 0 where
    ||x_j / t_j|| <= 1, else x_j nu / (nu + t_j) with nu > 0 the root of g(nu) = 1,
    g(nu) = ||x_j / (nu + t_j)||. Newton's method runs on psi = 1 / g - 1, which is increasing
    and concave in nu (as the secular function of trust-region steps, More and Sorensen
    1983), so from a point left of the root (psi <= 0 at nu = ||x_j|| - max t) it rises
    monotonically to it, and in one step when the weights of the column are equal (psi is
    then linear)."""
    X2 = X * X
    zero = np.sum(X2 / (T * T), axis=0) <= 1.0
    nu = np.maximum(np.sqrt(np.sum(X2, axis=0)) - T.max(axis=0), 0.0)
    for _ in range(100):
        Dn = nu[None, :] + T
        ratio = X2 / (Dn * Dn)
        g = np.sqrt(np.sum(ratio, axis=0))
        dg = -np.sum(ratio / Dn, axis=0) / np.maximum(g, 1e-300)  # g'
        psi = 1.0 / np.maximum(g, 1e-300) - 1.0
        step = np.where(zero | (psi >= 0), 0.0, psi * g * g / np.minimum(dg, -1e-300))
        nu = nu + step
        if np.all(step <= 1e-15 * np.maximum(nu, 1e-300)):
            break
    return np.where(zero[None, :], 0.0, X * nu[None, :] / (nu[None, :] + T))


def _shifted_subgradient(X: Array, R: Array, c: Array, t: float, axis: int) -> Array:
    """Element of the subdifferential of t sum_g sqrt(||x_g||^2 + c_g^2) nearest to -R:
    the gradient where (x_g, c_g) is not zero, -R_g shrunk into the t ball where it is."""
    a = np.linalg.norm(X, axis=axis, keepdims=True)
    nu = np.sqrt(a * a + np.expand_dims(np.asarray(c, dtype=float) ** 2, axis))
    zero = nu == 0
    if np.ndim(t) == 2 and axis == 0:
        # per-row weights within a column group: the subgradient at zero is the weighted
        # ball {s : ||s / t|| <= 1}; -R shrunk radially into it is one of its elements
        q = np.linalg.norm(R / t, axis=0, keepdims=True)
        at_zero = -R * np.minimum(1.0, 1.0 / np.maximum(q, 1e-300))
        return np.where(zero, at_zero, t * X / np.where(zero, 1.0, nu))
    return np.where(zero, _toward(R, t, axis), t * X / np.where(zero, 1.0, nu))


def _cols_norm(M: Array | None, size: int) -> Array:
    """Column norms of a fixed matrix (zeros when there is none)."""
    return np.zeros(size) if M is None else np.linalg.norm(M, axis=0)


@dataclass(frozen=True)
class L1(Penalty):
    """weight * sum |M_ij| over the chosen matrices (elementwise sparsity, section 5)."""

    on: tuple[str, ...] = ("A",)
    name: ClassVar[str] = "l1"
    row_separable: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        on = (self.on,) if isinstance(self.on, str) else tuple(self.on)
        on = tuple(ch for item in on for ch in item) if all(isinstance(o, str) for o in on) else on
        for k in on:
            check_choice("l1 'on'", k, MATRICES)
        object.__setattr__(self, "on", on)

    @property
    def matrices(self):
        return self.on

    def expression(self, M):
        return self.weight * sum(cp.sum(cp.abs(M[k])) for k in self.on), []

    def row_terms(self, M):
        parts = [cp.sum(cp.abs(M[k]), axis=1) for k in self.on if k in ("A", "B")]
        return self.weight * sum(parts) if parts else None

    def prox(self, M, step):
        return {k: _soft(M[k], step * self.weight) for k in self.on}

    ab_fast: ClassVar[bool] = True
    ab_metric: ClassVar[bool] = True

    def ab_prox(self, M, t, fixed):
        return {k: _soft(M[k], t * self.weight) for k in self.on if k in ("A", "B")}

    def ab_subgradient(self, M, R, t, fixed):
        tw = t * self.weight
        return {k: np.where(M[k] != 0, tw * np.sign(M[k]), -np.clip(R[k], -tw, tw))
                for k in self.on if k in ("A", "B")}

    def value(self, M):
        return self._raw_value(self._matrices(M))

    def _raw_value(self, M):
        return self.weight * float(sum(np.abs(M[k]).sum() for k in self.on))

    def to_dict(self):
        return {**super().to_dict(), "on": "".join(self.on)}


@dataclass(frozen=True)
class FeatureSelection(Penalty):
    """weight * sum_j ||(B; D) e_j||_2: column norms of (B; D) select inputs (5.1)."""

    name: ClassVar[str] = "feature_selection"

    @property
    def matrices(self):
        return ("B", "D")

    def expression(self, M):
        return self.weight * cp.sum(_norm_cols(cp.vstack([M["B"], M["D"]]), 2)), []

    def prox(self, M, step):
        return _shrink_stacked(M, ("B", "D"), step * self.weight, axis=0)

    ab_fast: ClassVar[bool] = True
    ab_metric: ClassVar[bool] = True

    def ab_prox(self, M, t, fixed):
        c = _cols_norm(fixed.get("D"), M["B"].shape[1])
        return {"B": _shifted_groups(M["B"], c, t * self.weight, 0)}

    def ab_subgradient(self, M, R, t, fixed):
        c = _cols_norm(fixed.get("D"), M["B"].shape[1])
        return {"B": _shifted_subgradient(M["B"], R["B"], c, t * self.weight, 0)}

    def value(self, M):
        return self._raw_value(self._matrices(M))

    def _raw_value(self, M):
        return self.weight * float(np.linalg.norm(np.vstack([M["B"], M["D"]]), axis=0).sum())


@dataclass(frozen=True)
class _GroupNorms(Penalty):
    """What :class:`RowNorms` and :class:`ColumnNorms` share: ``of`` names the matrices
    whose rows (``axis`` 1) or columns (``axis`` 0) are the l2 groups."""

    of: str = "A"
    choices: ClassVar[tuple[str, ...]] = ("A",)
    axis: ClassVar[int] = 0

    def __post_init__(self):
        super().__post_init__()
        check_choice(f"{self.name} 'of'", self.of, self.choices)

    @property
    def matrices(self):
        return tuple(self.of)

    def prox(self, M, step):
        return _shrink_stacked(M, tuple(self.of), step * self.weight, self.axis)

    ab_fast: ClassVar[bool] = True
    ab_metric: ClassVar[bool] = True

    def _ab_split(self, M, fixed):
        """(variable keys, their join along the groups, norms of the fixed part per group)."""
        keys = tuple(k for k in self.of if k in ("A", "B"))
        joined = M[keys[0]] if len(keys) == 1 else np.concatenate([M[k] for k in keys],
                                                                   axis=self.axis)
        size = joined.shape[1 - self.axis]
        fixed_keys = [k for k in self.of if k not in ("A", "B")]
        c = (np.linalg.norm(np.concatenate([fixed[k] for k in fixed_keys], axis=self.axis),
                            axis=self.axis) if fixed_keys else np.zeros(size))
        return keys, joined, c

    def _ab_unsplit(self, keys, joined, M):
        if len(keys) == 1:
            return {keys[0]: joined}
        cuts = np.cumsum([M[k].shape[self.axis] for k in keys])[:-1]
        return dict(zip(keys, np.split(joined, cuts, axis=self.axis)))

    def ab_prox(self, M, t, fixed):
        keys, joined, c = self._ab_split(M, fixed)
        if self.axis == 0 and np.ndim(t) == 2 and not np.any(c > 0):
            # column groups, one weight per row, nothing fixed in the groups
            out = _weighted_column_shrink(joined, np.broadcast_to(t * self.weight, joined.shape))
        else:
            out = _shifted_groups(joined, c, t * self.weight, self.axis)
        return self._ab_unsplit(keys, out, M)

    def ab_subgradient(self, M, R, t, fixed):
        keys, joined, c = self._ab_split(M, fixed)
        Rj = R[keys[0]] if len(keys) == 1 else np.concatenate([R[k] for k in keys],
                                                              axis=self.axis)
        S = _shifted_subgradient(joined, Rj, c, t * self.weight, self.axis)
        return self._ab_unsplit(keys, S, M)

    def value(self, M):
        return self._raw_value(self._matrices(M))

    def _raw_value(self, M):
        joined = np.concatenate([M[k] for k in self.of], axis=self.axis)
        return self.weight * float(np.linalg.norm(joined, axis=self.axis).sum())

    def to_dict(self):
        return {**super().to_dict(), "of": self.of}


@dataclass(frozen=True)
class RowNorms(_GroupNorms):
    """weight * sum_i ||row i of A (or of (A, B))||_2: row sparsity (section 5.2)."""

    name: ClassVar[str] = "row_norms"
    row_separable: ClassVar[bool] = True
    choices: ClassVar[tuple[str, ...]] = ("A", "AB")
    axis: ClassVar[int] = 1

    def expression(self, M):
        return cp.sum(self.row_terms(M)), []

    def row_terms(self, M):
        R = M["A"] if self.of == "A" else cp.hstack([M["A"], M["B"]])
        return self.weight * cp.norm(R, 2, axis=1)


@dataclass(frozen=True)
class ColumnNorms(_GroupNorms):
    """weight * sum_j ||column j of A (or of (A; C))||_2: column sparsity (section 5.2)."""

    name: ClassVar[str] = "column_norms"
    choices: ClassVar[tuple[str, ...]] = ("A", "AC")
    axis: ClassVar[int] = 0

    def expression(self, M):
        K = M["A"] if self.of == "A" else cp.vstack([M["A"], M["C"]])
        return self.weight * cp.sum(_norm_cols(K, 2)), []


@dataclass(frozen=True)
class Nuclear(Penalty):
    """weight * ||A||_*: encourages a low-rank A (section 5.3)."""

    name: ClassVar[str] = "nuclear"

    @property
    def matrices(self):
        return ("A",)

    def expression(self, M):
        return self.weight * cp.normNuc(M["A"]), []

    def prox(self, M, step):
        U, s, Vt = np.linalg.svd(M["A"], full_matrices=False)
        return {"A": (U * np.maximum(s - step * self.weight, 0.0)) @ Vt}

    ab_fast: ClassVar[bool] = True

    def ab_prox(self, M, t, fixed):
        return self.prox(M, t)

    def ab_subgradient(self, M, R, t, fixed):
        """t (U1 V1^T + W): U1, V1 the singular vectors of the nonzero singular values, W in
        their orthogonal complements with spectral norm <= 1, chosen nearest to -R / t."""
        tw = t * self.weight
        U, s, Vt = np.linalg.svd(M["A"], full_matrices=False)
        r = int(np.sum(s > 1e-12 * max(float(s[0]) if s.size else 0.0, 1e-300)))
        U1, V1 = U[:, :r], Vt[:r].T
        Rp = R["A"] - U1 @ (U1.T @ R["A"])
        Rp = Rp - (Rp @ V1) @ V1.T
        P, sp, Qt = np.linalg.svd(Rp, full_matrices=False)
        return {"A": tw * (U1 @ V1.T) - (P * np.minimum(sp, tw)) @ Qt}

    def value(self, M):
        return self._raw_value(self._matrices(M))

    def _raw_value(self, M):
        return self.weight * float(np.linalg.svd(M["A"], compute_uv=False).sum())


@dataclass(frozen=True)
class LipschitzBound(Penalty):
    """weight * [ (||B||_inf^2 + ||C||_inf^2) / (2 (1 - ||A||_inf)) + ||D||_inf ]  (4.7).

    A convex upper bound on the Lipschitz constant rho of the prediction rule (section
    4.3), finite when ||A||_inf < 1. In a BCD block the matrices of the other blocks are
    constants, so each block sees a convex function of its own variables.
    """

    name: ClassVar[str] = "lipschitz"

    @property
    def matrices(self):
        return MATRICES

    def expression(self, M):
        def inf_norm(X):
            return cp.max(cp.sum(cp.abs(X), axis=1))

        # epigraph variables for the three norms: quad_over_lin needs a parameter-free
        # denominator under DPP, and in the (C, D) block A is a Parameter
        t = cp.Variable(2, nonneg=True)
        s = cp.Variable()
        cons = [t[0] >= inf_norm(M["B"]), t[1] >= inf_norm(M["C"]), s >= inf_norm(M["A"])]
        expr = cp.quad_over_lin(t, 2 * (1 - s)) + inf_norm(M["D"])
        return self.weight * expr, cons

    def value(self, M):
        M = self._matrices(M)
        if self.weight == 0:
            return 0.0
        return self.weight * lipschitz_penalty_value(M["A"], M["B"], M["C"], M["D"])


@dataclass(frozen=True)
class Custom(Penalty):
    """A user penalty: ``fn(A, B, C, D)`` returns a convex CVXPY expression, a list of
    constraints, or a tuple (expression, constraints). ``matrices`` says which it reads
    (all four by default).

    Examples
    --------
    >>> mask = np.tril(np.ones((4, 4)))  # A strictly upper triangular: a feedforward network
    >>> upper = Custom(fn=lambda A, B, C, D: [cp.multiply(mask, A) == 0], reads=("A",))
    """

    fn: Callable[..., Any] | None = None
    reads: tuple[str, ...] = MATRICES
    label: str = "custom"
    name: ClassVar[str] = "custom"

    def __post_init__(self):
        super().__post_init__()
        if not callable(self.fn):
            raise InputTypeError("a custom penalty needs a callable fn(A, B, C, D); got "
                                 f"{type(self.fn).__name__}.")
        for k in self.reads:
            check_choice("custom penalty 'reads'", k, MATRICES)

    @property
    def matrices(self):
        return tuple(self.reads)

    def expression(self, M):
        # a matrix the penalty does not read may be left out of M (None is passed)
        out = self.fn(*(M.get(k) for k in MATRICES))
        if isinstance(out, tuple) and len(out) == 2:
            expr, cons = out
        elif isinstance(out, (list, cp.constraints.constraint.Constraint)):
            expr, cons = 0.0, out if isinstance(out, list) else [out]
        else:
            expr, cons = out, []
        return (expr if isinstance(expr, (int, float)) else self.weight * expr), list(cons)

    def value(self, M):
        expr, _ = self.expression(_constants(self._matrices(M)))
        return float(expr) if isinstance(expr, (int, float)) else float(expr.value)

    def to_dict(self):
        return {"name": self.name, "label": self.label, "weight": float(self.weight)}


PENALTIES: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (L1, FeatureSelection, RowNorms, ColumnNorms, Nuclear,
                              LipschitzBound)
}


def get_penalty(spec: Any) -> Penalty:
    """A penalty from a Penalty, a callable (-> :class:`Custom`), or a dict such as
    ``{"name": "l1", "weight": 1e-3, "on": "AB"}`` (as in problem files).

    Raises
    ------
    ValidationError
        Unknown penalty name or bad options.
    """
    if isinstance(spec, Penalty):
        return spec
    if callable(spec):
        return Custom(fn=spec, label=getattr(spec, "__name__", "custom"))
    if isinstance(spec, Mapping):
        opts = dict(spec)
        if "name" not in opts:
            raise ValidationError("each dict in 'penalties' needs a 'name' key, e.g. "
                                  "{'name': 'l1', 'weight': 1e-3}; got keys "
                                  f"{sorted(map(str, opts))}.")
        name = opts.pop("name")
        if name not in PENALTIES:
            raise ValidationError(f"'penalties' names must be among {sorted(PENALTIES)}; got "
                                  f"{name!r}.")
        try:
            return PENALTIES[name](**opts)
        except TypeError as exc:
            raise ValidationError(f"bad options {opts} for penalty {name!r}: {exc}") from None
    hint = (f" (for a named penalty write {{'name': {spec!r}, 'weight': ...}})"
            if isinstance(spec, str) else "")
    raise InputTypeError("each entry of 'penalties' must be a Penalty, a callable or a dict; "
                         f"got {type(spec).__name__}{hint}.")


def check_penalty_convex(pen: Penalty, shapes: Mapping[str, tuple[int, int]]) -> None:
    """Refuse a penalty that is not DCP-convex (checked on variables of the given shapes).

    A :class:`Custom` penalty's ``reads`` is narrowed to the matrices its expression and
    constraints contain (:func:`penalty_reads`), so that every spelling of one penalty is
    routed to the same block solvers.

    Raises
    ------
    NotConvexError
        The expression is not convex, or a constraint is not DCP.
    ValidationError
        The penalty raised when called with CVXPY variables (its message is given), or it
        uses a cp.Parameter (training never sets one).
    """
    M = {k: cp.Variable(v, name=k) for k, v in shapes.items()}
    try:
        expr, cons = pen.expression(M)
    except Exception as exc:  # user code failing on variables
        who = f"the callable {_label(pen)}" if isinstance(pen, Custom) else repr(pen.name)
        raise ValidationError(f"penalty {who} could not be built on CVXPY variables A, B, C, "
                              f"D of shapes {[tuple(v) for v in shapes.values()]}: it raised "
                              f"{type(exc).__name__}: {str(exc).rstrip('.')}. A penalty is "
                              "called with CVXPY variables and must build its expression "
                              "from them with CVXPY atoms.") from exc
    _refuse_parameters(pen, expr, cons)
    if isinstance(pen, Custom):
        # one problem, one answer: a callable is routed by what it reads, whatever its
        # spelling (a bare callable, or Custom with or without reads)
        object.__setattr__(pen, "reads", _variables_read(pen, expr, cons))
    if not isinstance(expr, (int, float)):
        if not isinstance(expr, cp.Expression) or expr.size != 1:
            raise NotConvexError(f"penalty {pen.name!r} must return a scalar CVXPY expression; "
                                 f"got {expr!r}.")
        if not expr.is_convex():
            raise NotConvexError(f"penalty {pen.name!r} is not convex under CVXPY's DCP rules "
                                 f"(curvature {expr.curvature}); write it with DCP atoms, e.g. "
                                 "cp.norm(...) instead of sqrt(sum_squares(...)) or -norm(...).")
    for c in cons:
        if not isinstance(c, cp.constraints.constraint.Constraint) or not c.is_dcp():
            raise NotConvexError(f"penalty {pen.name!r} returned a constraint that is not DCP: "
                                 f"{c!r}.")


def _label(pen: Penalty) -> str:
    """A Custom penalty's name for messages: its label and the callable's qualified name."""
    fn = getattr(pen, "fn", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    label = getattr(pen, "label", pen.name)
    return repr(name) if label in ("custom", "constraint", name) else f"{label!r} ({name})"


def _refuse_parameters(pen: Penalty, expr: Any, cons: list) -> None:
    """A penalty that uses a cp.Parameter is refused when the problem is built: training
    never sets its value, and the blocks compile their own Parameters around it."""
    params = [] if isinstance(expr, (int, float)) or not hasattr(expr, "parameters") \
        else list(expr.parameters())
    for c in cons:
        if hasattr(c, "parameters"):
            params += c.parameters()
    if params:
        names = sorted({p.name() for p in params})
        who = f"the callable {_label(pen)}" if isinstance(pen, Custom) else repr(pen.name)
        raise ValidationError(f"penalty {who} uses the cp.Parameter(s) {names}; training does "
                              "not set Parameters, so a penalty must use fixed numbers: pass "
                              "the value (e.g. param.value, a float or an array) instead.")


def penalty_reads(pen: Penalty, shapes: Mapping[str, tuple[int, int]]) -> tuple[str, ...]:
    """The matrices a penalty actually reads: :attr:`Penalty.matrices`, narrowed for a
    :class:`Custom` penalty to the variables its expression and constraints contain (so a
    callable spelling and ``Custom(..., reads=...)`` of one constraint are routed alike).

    Parameters
    ----------
    pen : Penalty
    shapes : mapping of str to (int, int)
        The shapes of A, B, C and D.
    """
    if not isinstance(pen, Custom):
        return tuple(pen.matrices)
    M = {k: cp.Variable(v, name=k) for k, v in shapes.items()}
    return _variables_read(pen, *pen.expression(M))


def penalty_constrains(pen: Penalty, shapes: Mapping[str, tuple[int, int]]) -> bool:
    """Whether a penalty declares constraints (a :class:`Custom` whose function returns
    some; the named penalties never do), on CVXPY variables of the given shapes."""
    if not isinstance(pen, Custom):
        return False
    M = {k: cp.Variable(v, name=k) for k, v in shapes.items()}
    return bool(pen.expression(M)[1])


def _variables_read(pen: Penalty, expr: Any, cons: list) -> tuple[str, ...]:
    """The matrices among ``pen.matrices`` whose variables occur in (expr, cons)."""
    used = set() if isinstance(expr, (int, float)) else {v.name() for v in expr.variables()}
    for c in cons:
        used |= {v.name() for v in c.variables()}
    return tuple(k for k in pen.matrices if k in used)
