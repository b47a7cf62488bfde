"""Well-posedness: the PF condition (Thm 2.2), block-triangular structure (Thm 2.7, 2.8),
the norm matrix N(A, gamma) of (2.4), and Collatz-Wielandt rescaling (section 2.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import InputTypeError, NotWellPosedError, ShapeError, ValidationError
from fenchel_idl.model.activations import (
    Activation,
    activation_for,
    blip_structure,
    get_activation,
    restrict_activation,
)
from fenchel_idl.model.equilibrium import Structure
from fenchel_idl.validation import as_float_array

__all__ = [
    "WellPosedness",
    "check_well_posed",
    "induced_norm",
    "is_well_posed",
    "norm_matrix",
    "pf_eigenvalue",
    "rescale",
    "well_posedness",
]

Array = NDArray[np.float64]


def pf_eigenvalue(M: ArrayLike) -> float:
    """Perron-Frobenius eigenvalue of a square nonnegative matrix (its spectral radius).

    Parameters
    ----------
    M : array_like of shape (k, k), entries >= 0

    Raises
    ------
    ShapeError
        M not square.
    ValidationError
        Negative, NaN or inf entries.

    Examples
    --------
    >>> pf_eigenvalue(np.abs(np.array([[0.5, 0.0], [2.0, -0.5]])))
    0.5
    """
    M = as_float_array("M", M, ndim=2)
    if M.shape[0] != M.shape[1]:
        raise ShapeError(f"'M' must be square; got shape {M.shape}.")
    if np.any(M < 0):
        raise ValidationError(f"'M' must be nonnegative (apply np.abs first); got a minimum "
                              f"entry of {M.min():.3g}.")
    if M.size == 0:
        return 0.0
    if not np.any(np.tril(M, -1)) or not np.any(np.triu(M, 1)):  # triangular
        return float(np.max(np.diag(M)))
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def induced_norm(M: Array, p: float, q: float) -> float:
    """||M||_{p -> q} for p, q in {1, 2, inf}; exact except where noted.

    The cases inf -> 1, inf -> 2 and 2 -> 1 are NP-hard or costly in general; they are
    replaced by sound upper bounds (the sum of |M|, and sqrt(rows) * ||M||_2 or
    sqrt(cols) * ||M||_2), which keeps every well-posedness and robustness bound valid.

    Parameters
    ----------
    M : array_like of shape (r, c) or (c,)
        A 1-D M is read as one row.
    p, q : {1, 2, inf}

    Raises
    ------
    InputTypeError
        M is not a numeric array.
    ShapeError, ValidationError
        M is not 1-D or 2-D, has NaN or inf entries, or p, q are not in {1, 2, inf}.
    """
    M = np.atleast_2d(as_float_array("M", M, ndim=(1, 2)))
    if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
               and v in (1, 2, np.inf) for v in (p, q)):
        raise ValidationError(f"norms p, q must be in {{1, 2, inf}}; got p={p}, q={q}.")
    if M.size == 0:
        return 0.0
    absM = np.abs(M)
    if p == 1:  # largest column q-norm
        return float(np.max(np.linalg.norm(M, ord=q, axis=0)))
    if q == np.inf:  # largest row p*-norm
        pstar = 1.0 if p == np.inf else (2.0 if p == 2 else np.inf)
        return float(np.max(np.linalg.norm(M, ord=pstar, axis=1)))
    if p == 2 and q == 2:
        return float(np.linalg.norm(M, 2))
    if p == np.inf and q == 1:
        return float(absM.sum())
    if p == np.inf and q == 2:
        return float(np.sqrt(M.shape[1]) * np.linalg.norm(M, 2))
    # the last case left: p == 2 and q == 1
    return float(np.sqrt(M.shape[0]) * np.linalg.norm(M, 2))


def norm_matrix(A: ArrayLike, activation: Activation | str = "relu") -> Array:
    """The L x L matrix N(A, gamma) of (2.4): (N)_ij = gamma_i ||A_ij||_{p_j -> p_i}.

    For a componentwise (CONE-like) map this is ``gamma_i |A_ij|``, i.e. |A| for CONE maps.

    Parameters
    ----------
    A : array_like of shape (n, n)
    activation : Activation or str
        Gives the block partition, norms and constants. A blockwise map must cover
        exactly the n states of A.

    Raises
    ------
    ShapeError
        A is not square.
    ValidationError
        Unknown activation, or a blockwise map that does not cover n states.
    """
    A = as_float_array("A", A, ndim=2)
    if A.shape[0] != A.shape[1]:
        raise ShapeError(f"'A' must be square; got shape {A.shape}.")
    n = A.shape[0]
    phi = activation_for(get_activation(activation), n)
    starts, gammas, norms, all_scalar = blip_structure(phi, n)
    if all_scalar:
        return gammas[:, None] * np.abs(A)
    ends = np.append(starts[1:], n)
    L = len(starts)
    N = np.empty((L, L))
    for i in range(L):
        for j in range(L):
            blk = A[starts[i]:ends[i], starts[j]:ends[j]]
            N[i, j] = gammas[i] * induced_norm(blk, norms[j], norms[i])
    return N


@dataclass(frozen=True)
class WellPosedness:
    """A well-posedness report.

    Attributes
    ----------
    pf_eigenvalue : float
        lambda_PF(N(A, gamma)); the PF condition (2.5) holds when it is < 1.
    norm_inf : float
        ||N(A, gamma)||_inf (= ||A||_inf for CONE maps); < 1 is the convex sufficient
        condition of Remark 2.4.
    condition : str or None
        What certified the model: "pf" (Thm 2.2), "triangular" (Thm 2.7/2.8: every diagonal
        block of the block-triangular form is well-posed), or None.
    well_posed : bool
        Whether some sufficient condition certified it.
    """

    pf_eigenvalue: float
    norm_inf: float
    condition: str | None
    well_posed: bool

    def __str__(self) -> str:
        what = {"pf": "PF condition lambda_PF(N(A, gamma)) < 1 (Thm 2.2)",
                "triangular": "block-triangular structure with well-posed diagonal blocks "
                              "(Thm 2.7/2.8)",
                None: "no sufficient condition holds"}[self.condition]
        return (f"well-posed: {self.well_posed} ({what}); lambda_PF = {self.pf_eigenvalue:.6g}, "
                f"||N(A, gamma)||_inf = {self.norm_inf:.6g}")


class _Model(Protocol):
    """What the verbs of this module read of a model: :class:`fenchel_idl.ImplicitModel`,
    which imports this module to certify itself (so this module cannot import it)."""

    A: Array
    activation: Activation
    structure: Structure

    def replace(self, **changes: Any) -> Any: ...


def _as_model(model: object) -> _Model:
    if not (isinstance(getattr(model, "A", None), np.ndarray)
            and isinstance(getattr(model, "activation", None), Activation)
            and hasattr(type(model), "structure") and hasattr(model, "replace")):
        raise InputTypeError(f"'model' must be an ImplicitModel; got {type(model).__name__}.")
    return model  # type: ignore[return-value]


def _failing_parts(A: Array, phi: Activation, struct: Structure) -> tuple[bool, bool]:
    """Which parts of the block-triangular form (Thm 2.7/2.8) fail their own sufficient
    condition: (a scalar self loop with A_ii * Lip(phi) >= 1, a strongly connected
    component of several blocks with lambda_PF(N) >= 1)."""
    loops = components = False
    for lv in struct.levels:
        if lv.singles.size and not loops:
            # scalar states with self loops: x = phi(a x + c) unique if a * slope < 1
            sub = restrict_activation(phi, lv.singles)
            loops = not np.all(sub.scalar_well_posed(lv.singles_diag) | (lv.singles_diag == 0))
        if lv.iterative.size and not components:
            # a union of independent strongly connected components: PF on each one
            idx = lv.iterative
            Nsub = norm_matrix(A[np.ix_(idx, idx)], restrict_activation(phi, idx))
            components = pf_eigenvalue(Nsub) >= 1.0
    return loops, components


def _certify(A: Array, phi: Activation, struct: Structure) -> WellPosedness:
    N = norm_matrix(A, phi)
    lam = pf_eigenvalue(N)
    norm_inf = float(np.max(N.sum(axis=1))) if N.size else 0.0
    if lam < 1.0:
        cond: str | None = "pf"
    elif not any(_failing_parts(A, phi, struct)):
        cond = "triangular"
    else:
        cond = None
    return WellPosedness(lam, norm_inf, cond, cond is not None)


def well_posedness(model: _Model) -> WellPosedness:
    """Report lambda_PF(N(A, gamma)), ||N(A, gamma)||_inf and which condition certifies."""
    model = _as_model(model)
    return _certify(model.A, model.activation, model.structure)


def _uncertified_iteration(A: Array, phi: Activation,
                           struct: Structure) -> tuple[str, bool] | None:
    """Why the equilibrium that a fixed-point iteration finds may not be unique, or None.

    None when a sufficient condition certifies a unique equilibrium (the norm condition of
    Remark 2.4, the PF condition of Thm 2.2, or the block-triangular form of Thm 2.7/2.8).
    Otherwise (a sentence with the values that failed, whether a strongly connected
    component of several blocks fails): when only scalar self loops fail, the structured
    equilibrium solver names them itself. The norm ||N(A, gamma)||_inf is tried first: it
    costs O(n^2) and certifies every model trained with ||A||_inf <= kappa < 1, so the
    eigenvalues are computed only when it fails.

    Parameters
    ----------
    A : ndarray of shape (n, n)
    phi : Activation
    struct : Structure
        The model's :func:`fenchel_idl.model.equilibrium.structure`.
    """
    N = norm_matrix(A, phi)
    norm_inf = float(np.max(N.sum(axis=1))) if N.size else 0.0
    if norm_inf < 1.0:
        return None
    lam = pf_eigenvalue(N)
    loops, components = (False, False) if lam < 1.0 else _failing_parts(A, phi, struct)
    if not (loops or components):
        return None
    parts = ["a strongly connected component of several states fails the PF condition"] \
        if components else []
    parts += ["a scalar self loop has A_ii * Lip(phi) >= 1"] if loops else []
    return (f"lambda_PF(N(A, gamma)) = {lam:.6g} >= 1 (Thm 2.2), ||N(A, gamma)||_inf = "
            f"{norm_inf:.6g} >= 1 (Remark 2.4), and in its block-triangular form (Thm 2.7/2.8) "
            + " and ".join(parts)), components


def is_well_posed(model: _Model) -> bool:
    """True when a sufficient condition (Thm 2.2, or Thm 2.7/2.8) certifies the model.

    Examples
    --------
    >>> from fenchel_idl import ImplicitModel
    >>> m = ImplicitModel(A=[[-2.0, 1.0], [0.0, 0.5]], B=[[1.0], [1.0]], C=[[1.0, 0.0]],
    ...                   D=[[0.0]])
    >>> is_well_posed(m)   # triangular, diag < 1, although lambda_PF(|A|) = 2
    True
    """
    return well_posedness(model).well_posed


def check_well_posed(model: _Model) -> WellPosedness:
    """Return the report, or raise :class:`NotWellPosedError` when nothing certifies it."""
    rep = well_posedness(model)
    if not rep.well_posed:
        raise NotWellPosedError(f"'model' is not certified well-posed: {rep}. Train with "
                                "||A||_inf <= kappa < 1 or rescale a model with "
                                "lambda_PF(|A|) < 1.")
    return rep


def rescale(model: _Model) -> Any:
    """Return an equivalent model with ||A'||_inf < 1 (Collatz-Wielandt scaling, section 2.5).

    With s = (I - |A|)^{-1} 1 and S = diag(s): A' = S^-1 A S, B' = S^-1 B, C' = C S, D' = D,
    and bias_x' = S^-1 bias_x. Then |A'| 1 = S^-1 |A| s = S^-1 (s - 1) < 1 row by row.

    Raises
    ------
    ValidationError
        The activation is not componentwise and positively homogeneous (ReLU, leaky ReLU,
        identity), which the scaling needs.
    NotWellPosedError
        lambda_PF(|A|) >= 1, so no diagonal scaling exists (2.7).
    """
    model = _as_model(model)
    phi = model.activation
    if not (phi.componentwise and phi.positively_homogeneous):
        raise ValidationError("rescale needs a componentwise, positively homogeneous activation "
                              f"(relu, leaky_relu, identity); got {phi!r}.")
    absA = np.abs(model.A)
    lam = pf_eigenvalue(absA)
    if lam >= 1.0:
        raise NotWellPosedError(f"rescale needs lambda_PF(|A|) < 1; got {lam:.6g}. No diagonal "
                                "scaling makes ||S^-1 A S||_inf < 1 (Collatz-Wielandt (2.7)).")
    n = model.n
    s = np.linalg.solve(np.eye(n) - absA, np.ones(n))
    return model.replace(A=model.A * (s[None, :] / s[:, None]), B=model.B / s[:, None],
                         C=model.C * s[None, :], bias_x=model.bias_x / s)
