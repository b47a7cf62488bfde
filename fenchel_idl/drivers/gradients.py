"""Gradients of the training loss by implicit differentiation (section 6.2).

With z = A x + B u + bias_x, x = phi(z) and yhat = C x + D u + bias_y, the gradient
V = dL/dz solves the adjoint equilibrium (6.5)-(6.6), batched over samples:

    V = J_phi(Z)^T (A^T V + C^T G),        G = dL/dYhat,

(for componentwise maps J_phi^T is the entrywise product with Psi = phi'(Z)), solved by
fixed-point iteration, which converges under the well-posedness condition. Then

    dL/dA = V X^T,  dL/dB = V U^T,  dL/dC = G X^T,  dL/dD = G U^T,  dL/dU = B^T V + D^T G.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import ConvergenceWarning, InputTypeError, ShapeError
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.losses import get_loss
from fenchel_idl.validation import as_samples

__all__ = ["Gradients", "input_gradient", "loss_gradients", "solve_adjoint"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Gradients:
    """Loss value and its gradients at a model (shapes as the model's matrices)."""

    loss: float
    A: Array
    B: Array
    C: Array
    D: Array
    bias_x: Array
    bias_y: Array
    U: Array
    X: Array
    adjoint_iterations: int
    adjoint_converged: bool


def solve_adjoint(model: ImplicitModel, Z: Array, G: Array, tol: float = 1e-10,
                  max_iter: int = 5000) -> tuple[Array, int, bool]:
    """Solve V = J_phi(Z)^T (A^T V + C^T G) by fixed-point iteration (6.6).

    Parameters
    ----------
    model : ImplicitModel
    Z : ndarray of shape (n, m)
        Pre-activations A X + B U + bias_x at the equilibrium.
    G : ndarray of shape (q, m)
        dL/dYhat.

    The iteration runs in the dtype of Z (float32 operands give a float32 V).

    Returns
    -------
    V : ndarray of shape (n, m)
    iterations : int
    converged : bool
    """
    phi = model.activation
    AT = model.A.T.astype(Z.dtype, copy=False)
    rhs = (model.C.T @ G).astype(Z.dtype, copy=False)
    if phi.componentwise:
        Psi = phi.derivative(Z).astype(Z.dtype, copy=False)

        def step(V):
            return Psi * (AT @ V + rhs)
    else:
        def step(V):
            return phi.vjp(Z, AT @ V + rhs).astype(Z.dtype, copy=False)
    V = step(np.zeros_like(Z))
    for it in range(1, max_iter + 1):
        Vn = step(V)
        diff = float(np.max(np.abs(Vn - V))) if V.size else 0.0
        V = Vn
        if diff <= tol * max(1.0, float(np.max(np.abs(V))) if V.size else 0.0):
            return V, it, True
    return V, max_iter, False


def loss_gradients(model: ImplicitModel, U: ArrayLike, Y: ArrayLike, loss: Any = "squared",
                   tol: float = 1e-10) -> Gradients:
    """Loss and gradients with respect to A, B, C, D, the biases and the inputs U.

    Parameters
    ----------
    model : ImplicitModel
    U : array_like of shape (p, m)
    Y : array_like of shape (q, m)
        Targets (one-hot columns for ``loss="cross_entropy"``).
    loss : {"squared", "cross_entropy"} or Loss

    Returns
    -------
    Gradients

    Raises
    ------
    ShapeError
        U or Y of the wrong shape.
    """
    if not isinstance(model, ImplicitModel):
        raise InputTypeError(f"'model' must be an ImplicitModel; got {type(model).__name__}.")
    L = get_loss(loss)
    U2, _ = as_samples("U", U, model.p, f"p = {model.p} inputs")
    Y2, _ = as_samples("Y", Y, model.q, f"q = {model.q} outputs")
    if Y2.shape[1] != U2.shape[1]:
        raise ShapeError(f"'Y' must have as many columns (samples) as U ({U2.shape[1]}); got "
                         f"{Y2.shape[1]}.")
    X, _ = model.equilibrium(U2)
    Z = model.A @ X + model.state_input(U2)
    Yhat = model.output(X, U2)
    G = L.grad(Y2, Yhat)
    V, iters, conv = solve_adjoint(model, Z, G, tol=tol)
    if not conv:
        warnings.warn(f"adjoint iteration (6.6) did not converge in {iters} iterations; the "
                      "gradients are inaccurate.", ConvergenceWarning, stacklevel=2)
    return Gradients(loss=L.value(Y2, Yhat), A=V @ X.T, B=V @ U2.T, C=G @ X.T, D=G @ U2.T,
                     bias_x=V.sum(axis=1), bias_y=G.sum(axis=1),
                     U=model.B.T @ V + model.D.T @ G, X=X, adjoint_iterations=iters,
                     adjoint_converged=conv)


def input_gradient(model: ImplicitModel, U: ArrayLike, Y: ArrayLike,
                   loss: Any = "cross_entropy") -> Array:
    """dL/dU, shape (p, m): the saliency used by gradient attacks (section 7.3.1).

    The loss is averaged over samples, so the columns are scaled by 1/m; only their
    magnitudes and signs matter for attacks.
    """
    return loss_gradients(model, U, Y, loss).U
