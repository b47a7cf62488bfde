"""Composition of implicit models (section 2.4). Each result is a new ImplicitModel.

States of the parts are stacked; when their activations differ the result uses a
:class:`fenchel_idl.Blockwise` map. Biases are carried through exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag

from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError
from fenchel_idl.model.activations import Activation, Blockwise
from fenchel_idl.model.implicit_model import ImplicitModel

__all__ = ["cascade", "concat", "feedback", "parallel"]


def _check(*models: object) -> None:
    for i, m in enumerate(models, 1):
        if not isinstance(m, ImplicitModel):
            raise InputTypeError(f"'m{i}' must be an ImplicitModel; got {type(m).__name__}.")


def _join(first: ImplicitModel, second: ImplicitModel) -> Activation:
    """Activation of the stacked state (first's states, then second's)."""
    a, b = first.activation, second.activation
    if a == b and a.componentwise and not isinstance(a, Blockwise):
        return a
    phi = Blockwise(((first.n, a), (second.n, b)))
    return phi.blocks[0][1] if len(phi.blocks) == 1 else phi


def cascade(m1: ImplicitModel, m2: ImplicitModel) -> ImplicitModel:
    """u goes through m1, then its output through m2: y = m2(m1(u)).

    The state is (x2, x1), and A is block upper triangular, so the cascade is well-posed
    if and only if both parts are (Thm 2.8).

    Raises
    ------
    ShapeError
        m1's output size differs from m2's input size.
    """
    _check(m1, m2)
    if m1.q != m2.p:
        raise ShapeError(f"cascade needs m1's outputs (q = {m1.q}) to match m2's inputs "
                         f"(p = {m2.p}).")
    A = np.block([[m2.A, m2.B @ m1.C], [np.zeros((m1.n, m2.n)), m1.A]])
    B = np.vstack([m2.B @ m1.D, m1.B])
    C = np.hstack([m2.C, m2.D @ m1.C])
    D = m2.D @ m1.D
    bias_x = np.concatenate([m2.B @ m1.bias_y + m2.bias_x, m1.bias_x])
    bias_y = m2.D @ m1.bias_y + m2.bias_y
    return ImplicitModel(A, B, C, D, _join(m2, m1), bias_x, bias_y)


def _stacked_states(m1: ImplicitModel, m2: ImplicitModel, B: np.ndarray, C: np.ndarray,
                    D: np.ndarray, bias_y: np.ndarray) -> ImplicitModel:
    """The model with the states of m1 and m2 side by side (A = diag(A1, A2), not coupled)
    and the given input, output and feedthrough maps."""
    return ImplicitModel(block_diag(m1.A, m2.A), B, C, D, _join(m1, m2),
                         np.concatenate([m1.bias_x, m2.bias_x]), bias_y)


def _check_equal(op: str, what: str, letter: str, a: int, b: int) -> None:
    if a != b:
        raise ShapeError(f"{op} needs equal {what} sizes; got {letter} = {a} and {letter} = {b}.")


def parallel(m1: ImplicitModel, m2: ImplicitModel) -> ImplicitModel:
    """Stacked inputs (u1, u2), summed outputs: y = m1(u1) + m2(u2).

    Raises
    ------
    ShapeError
        The two output sizes differ.
    """
    _check(m1, m2)
    _check_equal("parallel", "output", "q", m1.q, m2.q)
    return _stacked_states(m1, m2, block_diag(m1.B, m2.B), np.hstack([m1.C, m2.C]),
                           np.hstack([m1.D, m2.D]), m1.bias_y + m2.bias_y)


def concat(m1: ImplicitModel, m2: ImplicitModel) -> ImplicitModel:
    """Same input, stacked outputs: y = (m1(u), m2(u)).

    Raises
    ------
    ShapeError
        The two input sizes differ.
    """
    _check(m1, m2)
    _check_equal("concat", "input", "p", m1.p, m2.p)
    return _stacked_states(m1, m2, np.vstack([m1.B, m2.B]), block_diag(m1.C, m2.C),
                           np.vstack([m1.D, m2.D]), np.concatenate([m1.bias_y, m2.bias_y]))


def feedback(m1: ImplicitModel, m2: ImplicitModel) -> ImplicitModel:
    """Feedback connection: u1 = u + y2, u2 = y1, and y = y1 (section 2.4).

    With D1 = D2 = 0 this is the paper's matrix [[A1, B1 C2], [B2 C1, A2]]. Direct
    feedthrough is allowed when I - D1 D2 is invertible (the algebraic loop is solved).
    The result need not be well-posed even when both parts are; check it with
    :func:`fenchel_idl.is_well_posed`.

    Raises
    ------
    ShapeError
        m2's outputs must match m1's inputs, and m1's outputs m2's inputs.
    ValidationError
        I - D1 D2 is singular (an ill-posed algebraic loop).
    """
    _check(m1, m2)
    if m2.q != m1.p or m1.q != m2.p:
        raise ShapeError(f"feedback needs m2's outputs (q = {m2.q}) to match m1's inputs "
                         f"(p = {m1.p}) and m1's outputs (q = {m1.q}) to match m2's inputs "
                         f"(p = {m2.p}).")
    loop = np.eye(m1.q) - m1.D @ m2.D
    if np.linalg.cond(loop) > 1e12:
        raise ValidationError("feedback needs I - D1 D2 invertible (no algebraic loop); it is "
                              "singular.")
    E = np.linalg.inv(loop)
    Cx = E @ np.hstack([m1.C, m1.D @ m2.C])  # y1 = Cx x + Du u + by
    Du = E @ m1.D
    by = E @ (m1.D @ m2.bias_y + m1.bias_y)
    sel2 = np.hstack([np.zeros((m2.q, m1.n)), m2.C])  # y2 = sel2 x + D2 y1 + by2
    A = block_diag(m1.A, m2.A) + np.vstack([m1.B @ (sel2 + m2.D @ Cx), m2.B @ Cx])
    B = np.vstack([m1.B @ (np.eye(m1.p) + m2.D @ Du), m2.B @ Du])
    bias_x = np.concatenate([m1.B @ (m2.D @ by + m2.bias_y) + m1.bias_x, m2.B @ by + m2.bias_x])
    return ImplicitModel(A, B, Cx, Du, _join(m1, m2), bias_x, by)
