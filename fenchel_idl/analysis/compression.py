"""Sparsity and model compression (section 5): smaller models that predict the same thing.

What is here, by subsection of the paper:

- 5.1, feature selection: :func:`selected_features` lists the inputs whose column of
  ``(B; D)`` is not zero.
- 5.2, dimension reduction from row and column sparsity: :func:`reduce` removes states that
  are constant (zero row of ``(A, B)``: their value ``phi(bias)`` is folded into the biases
  of the states and outputs that read them) or never read (zero column of ``(A; C)``, and
  more generally no path to the output), repeatedly, and reports the states that stay but
  are computed in closed form (zero row of ``A``, ``x_i = phi(B_i u + b_i)``).
- 5.3, rank sparsity: :class:`LowRankModel` stores ``A = L R^T`` and solves the small
  fixed-point equation ``z = R^T phi(L z + B u + b)`` in O(kn) per iteration;
  :func:`low_rank` truncates the SVD of A.
- 5.4, model errors: :func:`perturbation_bound` is Theorem 5.1 in its sound form, and
  :attr:`Reduction.error_bound` applies the same argument to a reduction that treated small
  entries as zeros.

A note on Theorem 5.1. The paper states ``|x - x0| <= (I - |A0 + E|)^{-1} E x0`` under
``lambda_PF(|A0 + E|) < 1``. Its proof bounds ``|A|`` by ``|A0| + E``, not by ``|A0 + E|``,
and the right-hand side needs ``|x0|``. The literal statement can be beaten: with the
identity map, ``A0 = [[0, -0.4], [-0.4, 0]]``, ``E = 0.4 (1 1^T - I)`` and ``b = (1, -1)``,
``|A0 + E| = 0`` and the literal bound is 0.667 per state, but ``A = A0 - E`` moves each state
by 3.333. This module therefore implements

    ``|x - x0| <= (I - Gamma (|A0| + E))^{-1} Gamma E |x0|``,  valid when
    ``lambda_PF(Gamma (|A0| + E)) < 1``,

where ``Gamma = diag(gamma_i)`` holds the Lipschitz constants of the componentwise map
(Gamma = I for CONE maps, as in the paper). It holds for every A with ``|A - A0| <= E``,
and is attained in the example above.

Only componentwise activations are handled (the paper's section 5 assumes CONE maps); a
:class:`fenchel_idl.Blockwise` map whose blocks are all componentwise is fine, a vector
block such as softmax is refused with a :class:`fenchel_idl.ValidationError`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order

from fenchel_idl.errors import (
    ConvergenceWarning,
    EquilibriumError,
    InputTypeError,
    NotWellPosedError,
    ShapeError,
    ValidationError,
)
from fenchel_idl.model.activations import (
    Activation,
    Blockwise,
    activation_for,
    get_activation,
    restrict_activation,
    state_lipschitz,
)
from fenchel_idl.model.equilibrium import EquilibriumInfo
from fenchel_idl.model.implicit_model import ImplicitModel, ModelSizes, check_model_shapes, frozen
from fenchel_idl.model.wellposedness import pf_eigenvalue
from fenchel_idl.validation import as_float_array, as_samples, check_choice, check_int, check_real

__all__ = [
    "ClosedFormState",
    "ErrorBound",
    "LowRankApproximation",
    "LowRankModel",
    "Reduction",
    "ReductionErrorBound",
    "RemovedState",
    "low_rank",
    "perturbation_bound",
    "predict_speedup",
    "reduce",
    "selected_features",
]

Array = NDArray[np.float64]

#: Tolerance used for the nominal equilibrium inside the error bounds.
_BOUND_TOL = 1e-12
_BOUND_MAX_ITER = 20000


# ------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------
def _as_model(model: object, name: str = "model") -> ImplicitModel:
    if not isinstance(model, ImplicitModel):
        raise InputTypeError(f"'{name}' must be an ImplicitModel; got {type(model).__name__}.")
    return model


def _check_componentwise(phi: Activation, name: str, what: str) -> None:
    if not phi.componentwise:
        raise ValidationError(f"{what} needs a componentwise activation (section 5 assumes "
                              f"CONE maps); '{name}' has {phi!r}, which contains a vector "
                              "block (softmax). Split the model or keep it uncompressed.")




def _check_tol(tol: Any) -> float:
    return check_real("tol", tol, 0.0, None)


# ------------------------------------------------------------------------------------------
# error-bound records (Theorem 5.1)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ErrorBound:
    """Componentwise bounds on the state and output errors of a compressed model.

    Attributes
    ----------
    state : ndarray of shape (n, m) (or (n,) for 1-D inputs)
        Bound on ``|x - x0|`` where x0 is the nominal (compressed) model's state and x the
        state of any model covered by the bound.
    output : ndarray of shape (q, m) (or (q,))
        Bound on ``|y - y0|``.
    nominal_state : ndarray of shape (n, m) (or (n,))
        The nominal state x0 the bound was computed from.
    pf_eigenvalue : float
        lambda_PF of the matrix ``Gamma (|A0| + E)`` of Theorem 5.1 (< 1).
    """

    state: Array
    output: Array
    nominal_state: Array
    pf_eigenvalue: float


def _box_state_growth(absA0_g: Array, absB0_g: Array, sigma_u: Array) -> Array:
    """Theorem 4.1 for a componentwise map: bound on |x0(u) - x0(u0)| over the input box."""
    n = absA0_g.shape[0]
    return np.linalg.solve(np.eye(n) - absA0_g, absB0_g @ sigma_u)


def _sigma_u(sigma_u: ArrayLike | None, p: int, m: int) -> Array | None:
    if sigma_u is None:
        return None
    s = as_float_array("sigma_u", sigma_u, ndim=(1, 2))
    if s.ndim == 1:
        s = s[:, None]
    if s.shape[0] != p or s.shape[1] not in (1, m):
        raise ShapeError(f"'sigma_u' must have shape ({p},), ({p}, 1) or ({p}, {m}) to match "
                         f"U; got {s.shape}.")
    if np.any(s < 0):
        raise ValidationError(f"'sigma_u' must be nonnegative (a box radius); got a minimum "
                              f"entry of {s.min():.3g}.")
    return np.broadcast_to(s, (p, m))


# ------------------------------------------------------------------------------------------
# 5.2: reduction by row and column sparsity
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemovedState:
    """A state that :func:`reduce` removed.

    Attributes
    ----------
    index : int
        Index of the state in the original model.
    kind : {"constant", "unread"}
        "constant": zero row of (A, B) (after folding earlier removals), so ``x_i`` does not
        depend on u; its value was folded into the biases. "unread": no path from ``x_i`` to
        the output (a zero column of (A; C), possibly after earlier removals); dropped.
    reason : str
        A sentence saying why, for reports.
    value : float or None
        The constant value of the state ("constant" only).
    round : int
        The pass of the reduction loop (1, 2, ...) that removed it; a chain of removals
        shows up as increasing rounds.
    """

    index: int
    kind: str
    reason: str
    value: float | None = None
    round: int = 1


@dataclass(frozen=True)
class ClosedFormState:
    """A state that stays but is computed in closed form (section 5.2, ``x2 = phi(B2 u)``).

    Its row of A is zero off the diagonal, so the equilibrium solver computes it directly
    (``x_i = phi(B_i u + b_i)``, or the scalar root of ``x_i = phi(a_ii x_i + B_i u + b_i)``)
    before the states that read it; it cannot be removed without leaving the form
    ``x = phi(A x + B u)``, because its readers need the nonlinear value ``phi(B_i u)``.

    Attributes
    ----------
    index : int
        Index in the original model.
    reduced_index : int
        Index in the reduced model.
    reason : str
    """

    index: int
    reduced_index: int
    reason: str


@dataclass(frozen=True, eq=False)
class ReductionErrorBound:
    """How far a reduction with ``tol > 0`` can be from the original model.

    With ``tol > 0`` the entries that :func:`reduce` treated as zero are set to zero in a
    *pruned* model of the original size (``A0, B0, C0``; D and the biases unchanged); the
    reduced model is an exact, smaller form of the pruned model. For an input u, with x the
    original's state and x0 the pruned model's, the argument of Theorem 5.1 gives

        ``|x - x0| <= (I - Gamma |A|)^{-1} Gamma (E_A |x0| + E_B |u|)``,
        ``|y - y0| <= |C| |x - x0| + E_C |x0|``,

    where ``E_A = |A - A0|``, ``E_B = |B - B0|``, ``E_C = |C - C0|`` and ``|A| = |A0| + E_A``.
    It needs ``lambda_PF(Gamma |A|) < 1`` for the original. For all inputs in a box
    ``|u - u0| <= sigma_u`` at once, ``|x0|`` and ``|u|`` are replaced by their bounds
    ``|x0(u0)| + (I - Gamma |A0|)^{-1} Gamma |B0| sigma_u`` (Theorem 4.1) and
    ``|u0| + sigma_u``.

    Attributes
    ----------
    original, pruned : ImplicitModel
        The original model and the same-size model with the pruned entries set to zero.
    E_A : ndarray of shape (n, n)
    E_B : ndarray of shape (n, p)
    E_C : ndarray of shape (q, n)
        Absolute values of the pruned entries (every entry is <= tol).
    pf_eigenvalue : float
        lambda_PF(Gamma |A|) of the original; the bound exists when it is < 1.
    """

    original: ImplicitModel
    pruned: ImplicitModel
    E_A: Array
    E_B: Array
    E_C: Array
    pf_eigenvalue: float

    def evaluate(self, U: ArrayLike, sigma_u: ArrayLike | None = None) -> ErrorBound:
        """Bound the errors of the reduced model at the inputs U (columns).

        Parameters
        ----------
        U : array_like of shape (p, m) or (p,)
        sigma_u : array_like of shape (p,), (p, 1) or (p, m), optional
            If given, the bound holds for every input u with ``|u - U[:, j]| <= sigma_u``
            (column j of the result covers the box around column j).

        Returns
        -------
        ErrorBound
            ``state`` is indexed like the original model's states.

        Raises
        ------
        NotWellPosedError
            lambda_PF(Gamma |A|) >= 1 for the original model.
        ShapeError, ValidationError
            Bad U or sigma_u.
        EquilibriumError
            The nominal equilibrium did not reach the tight tolerance the bound uses.

        Notes
        -----
        x0 is computed to a relative tolerance of 1e-12; the bound is sound up to that
        accuracy.
        """
        m0 = self.pruned
        U2, was_1d = as_samples("U", U, m0.p, f"p = {m0.p} inputs")
        if self.pf_eigenvalue >= 1.0:
            raise NotWellPosedError(f"the reduction error bound needs lambda_PF(Gamma |A|) < 1 "
                                    f"for the original model; got {self.pf_eigenvalue:.6g}.")
        gam = state_lipschitz(m0.activation, m0.n)[:, None]
        X0, _ = m0.equilibrium(U2, tol=_BOUND_TOL, max_iter=_BOUND_MAX_ITER,
                               on_nonconvergence="raise")
        absX0, absU = np.abs(X0), np.abs(U2)
        su = _sigma_u(sigma_u, m0.p, U2.shape[1])
        if su is not None:
            absX0 = absX0 + _box_state_growth(gam * np.abs(m0.A), gam * np.abs(m0.B), su)
            absU = absU + su
        M = gam * np.abs(self.original.A)
        rhs = gam * (self.E_A @ absX0 + self.E_B @ absU)
        state = np.maximum(np.linalg.solve(np.eye(m0.n) - M, rhs), 0.0)
        output = np.abs(self.original.C) @ state + self.E_C @ absX0
        if was_1d:
            return ErrorBound(state[:, 0], output[:, 0], X0[:, 0], self.pf_eigenvalue)
        return ErrorBound(state, output, X0, self.pf_eigenvalue)


@dataclass(frozen=True, eq=False)
class Reduction:
    """The result of :func:`reduce`.

    Attributes
    ----------
    model : ImplicitModel
        The reduced model: same inputs and outputs, fewer states. With ``tol = 0`` it
        predicts exactly what the original predicts (for a well-posed original).
    kept : tuple of int
        Original indices of the states of ``model``, in order.
    removed : tuple of RemovedState
        The removed states, in the order they were removed, with the reason.
    closed_form : tuple of ClosedFormState
        Kept states whose row of A is zero off the diagonal (computed directly).
    tol : float
        Entries with ``|value| <= tol`` were treated as zeros.
    error_bound : ReductionErrorBound or None
        With ``tol > 0``, the record that bounds the reduced model's error for given
        inputs (see :meth:`ReductionErrorBound.evaluate`); None for an exact reduction.
    placeholder : bool
        True when every state was removed: ImplicitModel needs n >= 1, so ``model`` then
        has one inert state (zero A, B, C and bias) and predicts ``D u + bias_y``.
    """

    model: ImplicitModel
    kept: tuple[int, ...]
    removed: tuple[RemovedState, ...]
    closed_form: tuple[ClosedFormState, ...]
    tol: float
    error_bound: ReductionErrorBound | None = None
    placeholder: bool = False

    @property
    def n_original(self) -> int:
        """Number of states of the original model."""
        return len(self.kept) + len(self.removed)

    def __str__(self) -> str:
        head = (f"reduced {self.n_original} states to {len(self.kept)} (tol={self.tol:g}); "
                f"{len(self.closed_form)} kept state(s) are computed in closed form")
        lines = [head]
        lines += [f"  x_{r.index}: removed ({r.kind}, round {r.round}): {r.reason}"
                  for r in self.removed]
        lines += [f"  x_{c.index}: kept as x'_{c.reduced_index}: {c.reason}"
                  for c in self.closed_form]
        return "\n".join(lines)


def reduce(model: ImplicitModel, tol: float = 0.0) -> Reduction:
    """Remove the states made redundant by row sparsity of (A, B) and column sparsity of
    (A; C) (section 5.2), repeatedly, and fold constants into the biases.

    Each pass of the loop

    1. drops the states with no path to the output ("unread"): state j is read by state
       k when ``|A_kj| > tol`` (k != j) and by the output when a column entry of C exceeds
       tol. A zero column of (A; C) is the simplest case; a state read only by itself or by
       other unread states is dropped too. Nothing the kept states compute changes.
    2. folds the "constant" states: row i of (A, B) is zero off the diagonal, so x_i solves
       ``x_i = phi(a_ii x_i + b_i)`` (``x_i = phi(b_i)`` when ``a_ii = 0``) whatever u is;
       ``A_ki x_i`` is added to ``bias_x`` of every reader k and ``C_i x_i`` to ``bias_y``,
       and the state is dropped. Readers can in turn become constant (a chain).
    3. notes the "closed-form" states: row i of A zero off the diagonal but row i of B not.
       They stay (the equilibrium solver computes them directly, before their readers),
       because dropping them would leave the form ``x = phi(A x + B u)``.

    The loop stops when a pass changes nothing. The inputs are never removed (the reduced
    model takes the same U); see :func:`selected_features` for section 5.1.

    Parameters
    ----------
    model : ImplicitModel
        A model with a componentwise activation (ReLU, tanh, ..., or a Blockwise map of
        componentwise blocks).
    tol : float, default 0.0
        Entries with ``|value| <= tol`` count as zeros. With 0 the reduction is exact; with
        ``tol > 0`` the entries treated as zeros are pruned and :attr:`Reduction.error_bound`
        bounds the effect (Theorem 5.1 argument).

    Returns
    -------
    Reduction
        ``.model`` (smaller ImplicitModel), ``.kept``, ``.removed``, ``.closed_form`` and,
        with ``tol > 0``, ``.error_bound``.

    Raises
    ------
    InputTypeError
        ``model`` is not an ImplicitModel, or ``tol`` not a number.
    ValidationError
        Negative or non-finite ``tol``, or an activation with a vector block (softmax).

    Notes
    -----
    Exactness assumes the original equilibrium is unique (a well-posed model): the reduced
    equation is then solved by the kept part of the original solution, and it has no other
    solution when the kept part of A is well-posed (which the PF condition (2.5) on the
    whole model implies). A constant state with a self loop is folded only when
    ``gamma_i a_ii < 1`` (its scalar equation has one root).

    Examples
    --------
    >>> from fenchel_idl import ImplicitModel
    >>> m = ImplicitModel(A=[[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0]],
    ...                   B=[[1.0], [0.0], [1.0]], C=[[1.0, 0.0, 0.0]], D=[[0.0]],
    ...                   bias_x=[0.0, 2.0, 0.0])
    >>> r = reduce(m)
    >>> r.model.n, [(s.index, s.kind) for s in r.removed]
    (1, [(2, 'unread'), (1, 'constant')])
    >>> r.model.bias_x.tolist()   # 0.5 * relu(2.0) folded into state 0
    [1.0]
    """
    model = _as_model(model)
    tol = _check_tol(tol)
    _check_componentwise(model.activation, "model.activation", "reduce")
    work = _Pruning.start(model, tol)
    rnd = 0
    changed = True
    while changed:
        rnd += 1
        changed = _drop_unread(work, rnd)
        changed |= _fold_constants(work, rnd)
        changed |= _note_closed_form(work)
    kept = np.flatnonzero(work.alive)
    pos = {int(k): r for r, k in enumerate(kept)}
    closed_form = tuple(ClosedFormState(i, pos[i], why)
                        for i, why in sorted(work.closed.items()) if i in pos)
    bound = _reduction_error_bound(model, work) if tol > 0 else None
    return Reduction(model=_reduced_model(model, work, kept), kept=tuple(int(k) for k in kept),
                     removed=tuple(work.removed), closed_form=closed_form, tol=tol,
                     error_bound=bound, placeholder=bool(kept.size == 0))


@dataclass(eq=False)
class _Pruning:
    """The working state of :func:`reduce`.

    PA, PB, PC are the pruned A, B, C at the original size, without the folding; WA is the
    working A, whose columns of folded constants are zero; bx, by are the biases with the
    folded constants added. ``alive`` marks the states not yet removed, ``reads_folded`` the
    states whose bias includes a folded constant.
    """

    phi: Activation
    tol: float
    PA: Array
    PB: Array
    PC: Array
    WA: Array
    bx: Array
    by: Array
    alive: NDArray[np.bool_]
    reads_folded: NDArray[np.bool_]
    offdiag: NDArray[np.bool_]
    removed: list[RemovedState] = field(default_factory=list)
    closed: dict[int, str] = field(default_factory=dict)

    @classmethod
    def start(cls, model: ImplicitModel, tol: float) -> _Pruning:
        n = model.n
        return cls(phi=model.activation, tol=tol, PA=model.A.copy(), PB=model.B.copy(),
                   PC=model.C.copy(), WA=model.A.copy(), bx=model.bias_x.copy(),
                   by=model.bias_y.copy(), alive=np.ones(n, dtype=bool),
                   reads_folded=np.zeros(n, dtype=bool), offdiag=~np.eye(n, dtype=bool))

    def live(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.alive)


def _drop_unread(work: _Pruning, rnd: int) -> bool:
    """Step 1 of :func:`reduce`: drop the states with no path to the output."""
    tol, alive = work.tol, work.alive
    read = (np.abs(work.WA) > tol) & work.offdiag
    read[~alive, :] = False
    read[:, ~alive] = False
    roots = alive & np.any(np.abs(work.PC) > tol, axis=0)
    dead = np.flatnonzero(alive & ~_reachable(read, roots))
    if not dead.size:
        return False
    for j in dead:
        readers = np.flatnonzero(read[:, j])
        if readers.size == 0:
            why = (f"zero column of (A; C): x_{j} is never read, so it is dropped "
                   "(section 5.2)")
        else:
            why = (f"x_{j} is read only by states {readers.tolist()}, which have no "
                   "path to the output (column sparsity of (A; C), iterated), so it "
                   "is dropped")
        work.removed.append(RemovedState(int(j), "unread", why, None, rnd))
    # prune the (small) entries that lead from dead states to live ones and to y
    keep_rows = alive.copy()
    keep_rows[dead] = False
    for M in (work.PA, work.WA):
        M[np.ix_(keep_rows, dead)] = 0.0
    work.PC[:, dead] = 0.0
    alive[dead] = False
    return True


def _constant_candidates(work: _Pruning, live: NDArray[np.int64]) -> tuple[NDArray[np.int64],
                                                                            Array]:
    """The live states whose row of (A, B) is zero off the diagonal and whose scalar
    equation has one root, with their diagonal entries (entries <= tol set to zero)."""
    tol, offdiag = work.tol, work.offdiag
    rowsA = np.abs(work.WA[np.ix_(live, live)]) * offdiag[np.ix_(live, live)]
    no_input = np.all(np.abs(work.PB[live]) <= tol, axis=1)
    cand = live[np.all(rowsA <= tol, axis=1) & no_input]
    if not cand.size:
        return cand, np.zeros(0)
    diag = work.WA[cand, cand].copy()
    diag[np.abs(diag) <= tol] = 0.0
    ok = (diag == 0.0) | restrict_activation(work.phi, cand).scalar_well_posed(diag)
    return cand[ok], diag[ok]


def _constant_reason(i: int, a: float, v: float, reads_folded: bool) -> str:
    if a == 0.0:
        why = (f"zero row of (A, B): x_{i} = phi(b_{i}) = {v:.6g} is constant; "
               "folded into the biases of the states and outputs that read it "
               "(section 5.2)")
    else:
        why = (f"row of (A, B) zero except a_ii = {a:.6g}: x_{i} solves "
               f"x_{i} = phi(a_ii x_{i} + b_{i}), the constant {v:.6g}; folded "
               "into the biases of the states and outputs that read it")
    if reads_folded:
        why += " (its bias includes the constant states it reads, folded earlier)"
    return why


def _fold_constants(work: _Pruning, rnd: int) -> bool:
    """Step 2 of :func:`reduce`: fold the constant states into their readers' biases."""
    live = work.live()
    if not live.size:
        return False
    cand, diag = _constant_candidates(work, live)
    if not cand.size:
        return False
    WA, alive = work.WA, work.alive
    # prune the small entries of these rows, then solve the scalar equations
    for M in (work.PA, WA):
        M[np.ix_(cand, live)] = 0.0  # entries <= tol, diagonal restored below
        M[cand, cand] = diag
    work.PB[cand] = 0.0
    sub_phi = restrict_activation(work.phi, cand)
    values = sub_phi.solve_scalar(diag[:, None], work.bx[cand][:, None])[:, 0]
    for i, a, v in zip(cand, diag, values):
        why = _constant_reason(i, a, v, bool(work.reads_folded[i]))
        work.removed.append(RemovedState(int(i), "constant", why, float(v), rnd))
    readers = alive.copy()
    readers[cand] = False
    work.reads_folded[readers] |= np.any(WA[np.ix_(readers, cand)] != 0.0, axis=1)
    work.bx[readers] += WA[np.ix_(readers, cand)] @ values
    work.by += work.PC[:, cand] @ values
    WA[:, cand] = 0.0
    alive[cand] = False
    return True


def _note_closed_form(work: _Pruning) -> bool:
    """Step 3 of :func:`reduce`: note the closed-form states (zero row of A off the
    diagonal, nonzero row of B) and prune their small entries; True when that removed an
    edge (readers may change)."""
    live = work.live()
    if not live.size:
        return False
    tol, PA = work.tol, work.PA
    changed = False
    block = work.WA[np.ix_(live, live)]
    small_row = np.all((np.abs(block) <= tol) | ~work.offdiag[np.ix_(live, live)], axis=1)
    reads_u = np.any(np.abs(work.PB[live]) > tol, axis=1)  # else an unfoldable constant
    for i in live[small_row & reads_u]:
        row = PA[i, live].copy()
        row_mask = (np.abs(row) <= tol) & (live != i)
        if np.abs(PA[i, i]) <= tol:
            row_mask |= live == i
        if np.any(row[row_mask] != 0.0):
            changed = True
            PA[i, live[row_mask]] = 0.0
            work.WA[i, live[row_mask]] = 0.0
        if int(i) not in work.closed:
            work.closed[int(i)] = _closed_form_reason(i, PA[i, i])
    return changed


def _closed_form_reason(i: int, a: float) -> str:
    if a == 0.0:
        return (f"zero row of A: closed form x_{i} = phi(B_{i} u + b_{i}), computed before the "
                "states that read it (section 5.2)")
    return (f"row of A zero except a_ii = {a:.6g}: x_{i} is the scalar root of "
            f"x_{i} = phi(a_ii x_{i} + B_{i} u + b_{i}), computed directly")


def _reduced_model(model: ImplicitModel, work: _Pruning,
                   kept: NDArray[np.int64]) -> ImplicitModel:
    """The model on the kept states; one inert state when none is kept (n >= 1)."""
    phi = work.phi
    if kept.size == 0:
        first = phi.blocks[0][1] if isinstance(phi, Blockwise) else phi
        return ImplicitModel(A=np.zeros((1, 1)), B=np.zeros((1, model.p)),
                             C=np.zeros((model.q, 1)), D=model.D, activation=first,
                             bias_x=np.zeros(1), bias_y=work.by)
    return ImplicitModel(A=work.WA[np.ix_(kept, kept)], B=work.PB[kept], C=work.PC[:, kept],
                         D=model.D, activation=restrict_activation(phi, kept),
                         bias_x=work.bx[kept], bias_y=work.by)


def _reduction_error_bound(model: ImplicitModel, work: _Pruning) -> ReductionErrorBound:
    """The record that bounds the effect of the pruned entries (``tol > 0``)."""
    A, B, C = model.A, model.B, model.C
    PA, PB, PC = work.PA, work.PB, work.PC
    gam = state_lipschitz(work.phi, model.n)
    return ReductionErrorBound(
        original=model, pruned=model.replace(A=PA, B=PB, C=PC), E_A=frozen(np.abs(A - PA)),
        E_B=frozen(np.abs(B - PB)), E_C=frozen(np.abs(C - PC)),
        pf_eigenvalue=pf_eigenvalue(gam[:, None] * np.abs(A)))


def _reachable(read: NDArray[np.bool_], roots: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """States reachable from ``roots`` along "k reads j" edges (read[k, j])."""
    n = read.shape[0]
    rows, cols = np.nonzero(read)
    src = np.concatenate([rows, np.full(int(roots.sum()), n)])
    dst = np.concatenate([cols, np.flatnonzero(roots)])
    graph = csr_matrix((np.ones(src.size), (src, dst)), shape=(n + 1, n + 1))
    order = breadth_first_order(graph, n, directed=True, return_predecessors=False)
    out = np.zeros(n + 1, dtype=bool)
    out[order] = True
    return out[:n]


# ------------------------------------------------------------------------------------------
# 5.1: feature selection
# ------------------------------------------------------------------------------------------
def selected_features(model: ImplicitModel | LowRankModel, tol: float = 0.0) -> NDArray[np.int64]:
    """Indices of the inputs used by the model: columns of ``(B; D)`` with an entry > tol.

    A zero column of ``(B; D)`` means that input plays no role in the prediction rule
    (section 5.1, penalty (5.1)). An input that reaches only unread states still counts
    here; call ``selected_features(reduce(model).model)`` to drop those as well.

    Parameters
    ----------
    model : ImplicitModel or LowRankModel
    tol : float, default 0.0
        Entries with ``|value| <= tol`` count as zeros.

    Returns
    -------
    ndarray of int of shape (k,)
        Sorted input indices (rows of U) whose column of (B; D) has an entry > tol.

    Raises
    ------
    InputTypeError
        ``model`` is neither an ImplicitModel nor a LowRankModel.
    ValidationError
        Negative or non-finite ``tol``.

    Examples
    --------
    >>> from fenchel_idl import ImplicitModel
    >>> m = ImplicitModel(A=[[0.0]], B=[[1.0, 0.0, 0.0]], C=[[1.0]], D=[[0.0, 0.0, 2.0]])
    >>> selected_features(m).tolist()
    [0, 2]
    """
    if not isinstance(model, (ImplicitModel, LowRankModel)):
        raise InputTypeError("'model' must be an ImplicitModel or a LowRankModel; got "
                             f"{type(model).__name__}.")
    tol = _check_tol(tol)
    BD = np.vstack([model.B, model.D])
    return np.flatnonzero(np.any(np.abs(BD) > tol, axis=0)).astype(np.int64)


# ------------------------------------------------------------------------------------------
# 5.3: rank sparsity
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LowRankModel(ModelSizes):
    """An implicit model with a factored ``A = L R^T`` (section 5.3).

    The equilibrium ``x = phi(L R^T x + B u + b)`` is found through ``z = R^T x``, the
    solution of the k-dimensional fixed-point equation ``z = R^T phi(L z + B u + b)``,
    by the iteration ``z <- R^T phi(L z + B u + b)`` from z = 0: O(kn) per iteration and
    sample instead of O(n^2). Then ``x = phi(L z + B u + b)`` and
    ``y = C x + D u + bias_y``.

    Parameters
    ----------
    L, R : array_like of shape (n, k)
    B : array_like of shape (n, p)
    C : array_like of shape (q, n)
    D : array_like of shape (q, p)
    activation : str, dict or Activation, default "relu"
        A componentwise map (or a Blockwise map of componentwise blocks).
    bias_x : array_like of shape (n,), optional
    bias_y : array_like of shape (q,), optional

    Raises
    ------
    ShapeError
        Shapes that do not fit together.
    ValidationError
        NaN or inf entries, an unknown activation, or one with a vector block.
    InputTypeError
        Non-numeric arrays.

    Notes
    -----
    The iteration is certified by ``lambda_PF(|R|^T Gamma |L|) < 1`` (Gamma = I for CONE
    maps, as in section 5.3): the map z -> R^T phi(L z + c) is then a contraction. Since
    ``|A| <= |L| |R|^T`` and ``|L| |R|^T`` has the same nonzero eigenvalues as
    ``|R|^T |L|``, this also certifies the dense model (Thm 2.2). The test depends on the
    factorization (not on diagonal rescalings of it) and can fail for a well-posed A;
    ``force=True`` then runs the iteration anyway.

    Examples
    --------
    >>> import numpy as np
    >>> lr = LowRankModel(L=[[0.5], [0.2]], R=[[0.4], [0.6]], B=[[1.0], [-1.0]],
    ...                   C=[[1.0, 1.0]], D=[[0.0]])
    >>> lr.well_posed
    True
    >>> bool(np.allclose(lr.predict([1.0]), lr.to_dense().predict([1.0])))
    True
    """

    L: Array  # (n, k)
    R: Array  # (n, k)
    B: Array  # (n, p)
    C: Array  # (q, n)
    D: Array  # (q, p)
    activation: Activation = field(default="relu")  # type: ignore[assignment]
    bias_x: Array | None = None  # (n,)
    bias_y: Array | None = None  # (q,)

    def __post_init__(self) -> None:
        L = as_float_array("L", self.L, ndim=2)
        R = as_float_array("R", self.R, ndim=2)
        B = as_float_array("B", self.B, ndim=2)
        C = as_float_array("C", self.C, ndim=2)
        D = as_float_array("D", self.D, ndim=2)
        n, k = L.shape
        if n == 0 or k == 0:
            raise ShapeError(f"'L' must have shape (n, k) with n, k >= 1; got {L.shape}.")
        if R.shape != (n, k):
            raise ShapeError(f"'R' must have the shape of L, (n, k) = ({n}, {k}); got "
                             f"{R.shape}.")
        bx, by = check_model_shapes(n, f"L {L.shape}", B, C, D, self.bias_x, self.bias_y)
        phi = activation_for(get_activation(self.activation), n)
        _check_componentwise(phi, "activation", "LowRankModel")
        for name, val in zip(("L", "R", "B", "C", "D", "bias_x", "bias_y"),
                             (L, R, B, C, D, bx, by)):
            object.__setattr__(self, name, frozen(val))
        object.__setattr__(self, "activation", phi)

    @property
    def k(self) -> int:
        """Rank of the factorization (size of z)."""
        return self.L.shape[1]

    @cached_property
    def pf_eigenvalue(self) -> float:
        """lambda_PF(|R|^T Gamma |L|), shape (k, k) matrix; < 1 certifies the iteration."""
        gam = state_lipschitz(self.activation, self.n)
        return pf_eigenvalue(np.abs(self.R).T @ (gam[:, None] * np.abs(self.L)))

    @property
    def well_posed(self) -> bool:
        """Whether lambda_PF(|R|^T Gamma |L|) < 1 (section 5.3)."""
        return self.pf_eigenvalue < 1.0

    def to_dense(self) -> ImplicitModel:
        """The same model with the n x n matrix ``A = L R^T``."""
        return ImplicitModel(A=self.L @ self.R.T, B=self.B, C=self.C, D=self.D,
                             activation=self.activation, bias_x=self.bias_x,
                             bias_y=self.bias_y)

    def _check_posed(self, force: bool) -> None:
        if not isinstance(force, bool):
            raise InputTypeError(f"'force' must be a bool; got {type(force).__name__}.")
        if not force and not self.well_posed:
            raise NotWellPosedError(
                f"LowRankModel is not certified well-posed: lambda_PF(|R|^T Gamma |L|) = "
                f"{self.pf_eigenvalue:.6g} >= 1 (section 5.3). Pass force=True to run the "
                "iteration anyway, or use to_dense() and fenchel_idl.is_well_posed.")

    def latent(self, U: ArrayLike, *, tol: float = 1e-9, max_iter: int = 2000,
               Z0: ArrayLike | None = None, on_nonconvergence: str = "warn",
               force: bool = False) -> tuple[Array, EquilibriumInfo]:
        """Solve ``z = R^T phi(L z + B u + b)`` for every column of U.

        Parameters
        ----------
        U : array_like of shape (p, m) or (p,)
        tol : float
            Stop when ``max |z(t+1) - z(t)| <= tol * max(1, max |z(t+1)|)``.
        max_iter : int
        Z0 : array_like of shape (k, m), optional
            Warm start (default zero).
        on_nonconvergence : {"warn", "raise", "ignore"}
        force : bool
            Run even when the model is not certified well-posed.

        Returns
        -------
        Z : ndarray of shape (k, m) (or (k,) for 1-D U)
        info : EquilibriumInfo
            ``method`` is "low_rank"; ``residual`` is the relative residual of the
            full-state equation ``x = phi(L R^T x + B u + b)`` at ``x = phi(L z + ...)``.

        Raises
        ------
        NotWellPosedError
            lambda_PF(|R|^T Gamma |L|) >= 1 and ``force`` is False.
        EquilibriumError
            With ``on_nonconvergence="raise"`` when the iteration does not converge.
        ShapeError, ValidationError
            Bad U, Z0 or options.
        """
        Z, _, info, was_1d = self._solve(U, tol, max_iter, Z0, on_nonconvergence, force)
        return (Z[:, 0] if was_1d else Z), info

    def equilibrium(self, U: ArrayLike, *, tol: float = 1e-9, max_iter: int = 2000,
                    Z0: ArrayLike | None = None, on_nonconvergence: str = "warn",
                    force: bool = False) -> tuple[Array, EquilibriumInfo]:
        """The full state ``x = phi(L z + B u + b)`` at the solution z (section 5.3).

        Parameters and Raises are those of :meth:`latent`.

        Returns
        -------
        X : ndarray of shape (n, m) (or (n,) for 1-D U)
        info : EquilibriumInfo
        """
        _, X, info, was_1d = self._solve(U, tol, max_iter, Z0, on_nonconvergence, force)
        return (X[:, 0] if was_1d else X), info

    def predict(self, U: ArrayLike, **options: Any) -> Array:
        """Return ``C phi(L z + B u + b) + D u + bias_y``, shape (q, m) (or (q,)).

        Keyword options are those of :meth:`latent` (including ``force``).

        Raises
        ------
        NotWellPosedError
            lambda_PF(|R|^T Gamma |L|) >= 1 and ``force`` is not True.
        """
        U2, was_1d = as_samples("U", U, self.p, f"p = {self.p} inputs")
        _, X, _, _ = self._solve(U2, **_solve_options(options))
        Y = self.C @ X + self.D @ U2 + self.bias_y[:, None]
        return Y[:, 0] if was_1d else Y

    def _solve(self, U: ArrayLike, tol: float = 1e-9, max_iter: int = 2000,
               Z0: ArrayLike | None = None, on_nonconvergence: str = "warn",
               force: bool = False) -> tuple[Array, Array, EquilibriumInfo, bool]:
        self._check_posed(force)
        check_choice("on_nonconvergence", on_nonconvergence, ("warn", "raise", "ignore"))
        tol = check_real("tol", tol, 0.0, None, low_open=True)
        max_iter = check_int("max_iter", max_iter, low=1)
        U2, was_1d = as_samples("U", U, self.p, f"p = {self.p} inputs")
        m = U2.shape[1]
        c = self.B @ U2 + self.bias_x[:, None]
        phi, L, Rt = self.activation, self.L, self.R.T
        if Z0 is None:
            Z = np.zeros((self.k, m))
        else:
            Z, _ = as_samples("Z0", Z0, self.k, f"k = {self.k} latent values")
            if Z.shape != (self.k, m):
                raise ShapeError(f"'Z0' must have shape ({self.k}, {m}); got {Z.shape}.")
            Z = Z.copy()
        converged, it, step = False, 0, np.inf
        for it in range(1, max_iter + 1):
            Zn = Rt @ phi(L @ Z + c)
            step = float(np.max(np.abs(Zn - Z))) if Zn.size else 0.0
            Z = Zn
            scale = max(1.0, float(np.max(np.abs(Z))) if Z.size else 1.0)
            if step <= tol * scale:
                converged = True
                break
        X = phi(L @ Z + c)
        xscale = max(1.0, float(np.max(np.abs(X))) if X.size else 1.0)
        res = float(np.max(np.abs(X - phi(L @ (Rt @ X) + c)))) / xscale if X.size else 0.0
        info = EquilibriumInfo(converged=converged, iterations=int(it), residual=res,
                               method="low_rank")
        if not converged:
            msg = (f"low-rank iteration z <- R^T phi(L z + B u + b) did not converge in "
                   f"max_iter={max_iter} iterations (relative residual {res:.3e}, tol={tol:g});"
                   f" lambda_PF(|R|^T Gamma |L|) = {self.pf_eigenvalue:.6g}. Raise max_iter "
                   "or use to_dense().")
            if on_nonconvergence == "raise":
                raise EquilibriumError(msg)
            if on_nonconvergence == "warn":
                warnings.warn(msg, ConvergenceWarning, stacklevel=4)
        return Z, X, info, was_1d

    def __repr__(self) -> str:
        return (f"LowRankModel(n={self.n}, k={self.k}, p={self.p}, q={self.q}, "
                f"activation={self.activation!r})")


_SOLVE_OPTIONS = ("tol", "max_iter", "Z0", "on_nonconvergence", "force")


def _solve_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_SOLVE_OPTIONS))
    if unknown:
        raise ValidationError(f"unknown option(s) {unknown} for LowRankModel.predict; allowed "
                              f"options are {list(_SOLVE_OPTIONS)}.")
    return options


@dataclass(frozen=True, eq=False)
class LowRankApproximation:
    """The result of :func:`low_rank`.

    Attributes
    ----------
    model : LowRankModel
        The truncated model, ``A0 = L R^T``.
    error : ndarray of shape (n, n)
        The componentwise error ``E = |A - L R^T|`` (use it with :func:`perturbation_bound`).
    singular_values : ndarray of shape (n,)
        All singular values of the original A, in decreasing order.
    rank : int
    """

    model: LowRankModel
    error: Array
    singular_values: Array
    rank: int


def low_rank(model: ImplicitModel, rank: int) -> LowRankApproximation:
    """Truncate A to a given rank by SVD (section 5.3): ``A ~ U_k S_k V_k^T``.

    The factors are ``L = U_k S_k`` and ``R = V_k``. Any diagonal rescaling of them gives
    the same well-posedness test lambda_PF(|R|^T |L|), so this choice costs nothing.

    Parameters
    ----------
    model : ImplicitModel
        Componentwise activation.
    rank : int
        Target rank k, 1 <= k <= n.

    Returns
    -------
    LowRankApproximation
        ``.model`` (LowRankModel) and ``.error`` = ``|A - L R^T|``, so that
        ``perturbation_bound(result.model, result.error, U)`` bounds how far the original
        state is from the truncated one (Theorem 5.1).

    Raises
    ------
    InputTypeError
        ``model`` is not an ImplicitModel, or ``rank`` not an integer.
    ValidationError
        ``rank`` outside [1, n], or an activation with a vector block.

    Examples
    --------
    >>> import numpy as np
    >>> from fenchel_idl import ImplicitModel
    >>> m = ImplicitModel(A=0.1 * np.ones((3, 3)), B=np.ones((3, 1)), C=np.ones((1, 3)),
    ...                   D=np.zeros((1, 1)))
    >>> approx = low_rank(m, 1)
    >>> approx.model.k, bool(approx.error.max() < 1e-12)
    (1, True)
    """
    model = _as_model(model)
    _check_componentwise(model.activation, "model.activation", "low_rank")
    rank = check_int("rank", rank, low=1, high=model.n)
    Uf, s, Vt = np.linalg.svd(model.A)
    L = Uf[:, :rank] * s[None, :rank]
    R = Vt[:rank].T
    lr = LowRankModel(L=L, R=R, B=model.B, C=model.C, D=model.D, activation=model.activation,
                      bias_x=model.bias_x, bias_y=model.bias_y)
    return LowRankApproximation(model=lr, error=frozen(np.abs(model.A - L @ R.T)),
                                singular_values=frozen(s), rank=rank)


# ------------------------------------------------------------------------------------------
# 5.4: Theorem 5.1
# ------------------------------------------------------------------------------------------
def perturbation_bound(model: ImplicitModel | LowRankModel, E: ArrayLike, U: ArrayLike,
                       sigma_u: ArrayLike | None = None) -> ErrorBound:
    """State and output error bounds of Theorem 5.1 (sound form) for errors in A.

    ``model`` is the nominal model with matrix A0 (for a LowRankModel, ``A0 = L R^T``) and
    state x0 at the inputs U. For every A with ``|A - A0| <= E`` (same B, C, D and biases),
    the state x of the perturbed model satisfies

        ``|x - x0| <= (I - Gamma (|A0| + E))^{-1} Gamma E |x0|``

    when ``lambda_PF(Gamma (|A0| + E)) < 1``, and its output ``|y - y0| <= |C| |x - x0|``.
    Gamma = diag(gamma_i) holds the Lipschitz constants of the componentwise activation
    (I for CONE maps). This is the paper's Theorem 5.1 with ``|A0 + E|`` replaced by
    ``|A0| + E`` and ``x0`` by ``|x0|``, as its proof requires; the literal statement can be
    beaten (see the module docstring).

    Parameters
    ----------
    model : ImplicitModel or LowRankModel
        The nominal (compressed) model.
    E : array_like of shape (n, n), entries >= 0
        Componentwise bound on the error in A.
    U : array_like of shape (p, m) or (p,)
        Inputs (columns).
    sigma_u : array_like of shape (p,), (p, 1) or (p, m), optional
        If given, the bound holds for every input u with ``|u - U[:, j]| <= sigma_u``: ``|x0|``
        is replaced by ``|x0(u0)| + (I - Gamma |A0|)^{-1} Gamma |B| sigma_u`` (Theorem 4.1).

    Returns
    -------
    ErrorBound
        ``state`` (n, m), ``output`` (q, m), ``nominal_state`` x0 and ``pf_eigenvalue``.

    Raises
    ------
    InputTypeError
        ``model`` is neither an ImplicitModel nor a LowRankModel.
    ShapeError
        E not (n, n), or bad U or sigma_u.
    ValidationError
        Negative or non-finite entries of E.
    NotWellPosedError
        lambda_PF(Gamma (|A0| + E)) >= 1: the perturbed models are not all certified.
    EquilibriumError
        The nominal equilibrium did not reach the tight tolerance (1e-12, relative) that
        the bound uses; the bound is sound up to that accuracy.

    Examples
    --------
    The example where the literal statement fails (identity map); the bound is attained:

    >>> import numpy as np
    >>> from fenchel_idl import ImplicitModel
    >>> A0 = np.array([[0.0, -0.4], [-0.4, 0.0]])
    >>> m0 = ImplicitModel(A=A0, B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)),
    ...                    activation="identity")
    >>> E = np.array([[0.0, 0.4], [0.4, 0.0]])
    >>> b = perturbation_bound(m0, E, np.array([1.0, -1.0]))
    >>> np.round(b.state, 4).tolist()
    [3.3333, 3.3333]
    >>> x = np.linalg.solve(np.eye(2) - (A0 - E), [1.0, -1.0])
    >>> np.round(np.abs(x - b.nominal_state), 4).tolist()
    [3.3333, 3.3333]
    """
    if isinstance(model, LowRankModel):
        A0 = model.L @ model.R.T
    elif isinstance(model, ImplicitModel):
        A0 = model.A
    else:
        raise InputTypeError("'model' must be an ImplicitModel or a LowRankModel; got "
                             f"{type(model).__name__}.")
    _check_componentwise(model.activation, "model.activation", "perturbation_bound")
    n = model.n
    E = as_float_array("E", E, ndim=2)
    if E.shape != (n, n):
        raise ShapeError(f"'E' must have shape (n, n) = ({n}, {n}) to match the model's A; got "
                         f"{E.shape}.")
    if np.any(E < 0):
        raise ValidationError(f"'E' must be a nonnegative bound on |A - A0|; got a minimum "
                              f"entry of {E.min():.3g}.")
    U2, was_1d = as_samples("U", U, model.p, f"p = {model.p} inputs")
    gam = state_lipschitz(model.activation, n)[:, None]
    M = gam * (np.abs(A0) + E)
    lam = pf_eigenvalue(M)
    if lam >= 1.0:
        raise NotWellPosedError(f"Theorem 5.1 needs lambda_PF(Gamma (|A0| + E)) < 1; got "
                                f"{lam:.6g}. Use a smaller E (a better approximation).")
    if isinstance(model, LowRankModel) and model.well_posed:
        X0, _ = model.equilibrium(U2, tol=_BOUND_TOL, max_iter=_BOUND_MAX_ITER,
                                  on_nonconvergence="raise")
    else:  # A0 is certified by lambda_PF(Gamma |A0|) <= lam < 1: the dense solve converges
        dense = model.to_dense() if isinstance(model, LowRankModel) else model
        X0, _ = dense.equilibrium(U2, tol=_BOUND_TOL, max_iter=_BOUND_MAX_ITER,
                                  on_nonconvergence="raise")
    absX0 = np.abs(X0)
    su = _sigma_u(sigma_u, model.p, U2.shape[1])
    if su is not None:
        absX0 = absX0 + _box_state_growth(gam * np.abs(A0), gam * np.abs(model.B), su)
    state = np.maximum(np.linalg.solve(np.eye(n) - M, gam * (E @ absX0)), 0.0)
    output = np.abs(model.C) @ state
    if was_1d:
        return ErrorBound(state[:, 0], output[:, 0], X0[:, 0], lam)
    return ErrorBound(state, output, X0, lam)


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def predict_speedup(original: Any, compressed: Any, U: ArrayLike, repeats: int = 5) -> float:
    """Ratio of predict times, original over compressed, measured in this process.

    Each model predicts once untimed (warm-up), then ``repeats`` times; the best time of
    each is kept. A value above 1 means the compressed model is faster.

    Parameters
    ----------
    original, compressed : objects with a ``predict(U)`` method
        For example an ImplicitModel and ``reduce(model).model`` or a LowRankModel.
    U : array_like of shape (p, m)
        Inputs (columns), passed unchanged to both.
    repeats : int, default 5

    Returns
    -------
    float
        ``time(original.predict(U)) / time(compressed.predict(U))``.

    Raises
    ------
    InputTypeError
        An argument without a callable ``predict``, or ``repeats`` not an integer.
    ValidationError
        ``repeats`` < 1.
    """
    for name, obj in (("original", original), ("compressed", compressed)):
        if not callable(getattr(obj, "predict", None)):
            raise InputTypeError(f"'{name}' must have a predict(U) method; got "
                                 f"{type(obj).__name__}.")
    repeats = check_int("repeats", repeats, low=1)
    U = as_float_array("U", U, ndim=(1, 2))

    def best(obj: Any) -> float:
        obj.predict(U)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            obj.predict(U)
            times.append(time.perf_counter() - t0)
        return max(min(times), 1e-12)

    return best(original) / best(compressed)
