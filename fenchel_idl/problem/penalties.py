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
        out = self.fn(M["A"], M["B"], M["C"], M["D"])
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

    Raises
    ------
    NotConvexError
        The expression is not convex, or a constraint is not DCP.
    """
    M = {k: cp.Variable(v, name=k) for k, v in shapes.items()}
    try:
        expr, cons = pen.expression(M)
    except Exception as exc:  # noqa: BLE001 - user code failing on variables
        raise NotConvexError(f"penalty {pen.name!r} could not be built on CVXPY variables: "
                             f"{type(exc).__name__}: {exc}") from None
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

