"""PyTorch interop (the optional extra ``fenchel_idl[torch]``): an implicit model as an
``nn.Module`` and back.

:func:`to_torch` returns a module whose parameters are A, B, C, D, bias_x and bias_y and
whose forward pass, on a batch U of shape (batch, p) (rows are samples, as in PyTorch), is

    X = phi(X A^T + U B^T + bias_x)  (the equilibrium),   Y = X C^T + U D^T + bias_y.

The equilibrium is solved by :func:`fenchel_idl.solve_equilibrium` (exact on triangular
structure, Picard or Anderson otherwise) in float64 on the CPU. Its backward pass is the
implicit gradient (section 6.2): with Psi = phi'(Z) at the equilibrium and G = dL/dX,

    V = Psi * (V A + G)          (the adjoint equation (6.6), batched, by fixed point),
    dL/dA = V^T X,  dL/dB = V^T U,  dL/dbias_x = 1^T V,  dL/dU = V B,

which solves the linear system (I - diag(Psi) A^T) v = Psi * g of each sample; it converges
under the well-posedness condition. The backward runs in torch on the parameters' device.
C, D and bias_y enter through ordinary torch operations, so any torch optimizer trains the
module; :meth:`project_` (on the returned module) keeps A in the well-posedness ball
||N(A, gamma)||_inf <= kappa between steps. :func:`from_torch` reads a module back into an
:class:`~fenchel_idl.ImplicitModel`; in float64 the round trip is exact.

torch is imported only inside these functions: the package never needs it.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from fenchel_idl.errors import ConvergenceWarning, InputTypeError, ValidationError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.model.equilibrium import solve_equilibrium
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.projection import project_l1_rows
from fenchel_idl.validation import check_choice, check_int, check_real

__all__ = ["from_torch", "to_torch"]

_DTYPES = ("float64", "float32")


def _torch():
    """The torch module, or an ImportError naming the extra to install."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("PyTorch interop needs torch: pip install 'fenchel-idl[torch]'.") \
            from exc
    return torch


@functools.lru_cache(maxsize=1)
def _classes():
    """The autograd Function and the Module class, built once torch is imported."""
    torch = _torch()

    class Equilibrium(torch.autograd.Function):
        """X = phi(X A^T + U B^T + bias_x), with the implicit gradient as backward."""

        @staticmethod
        def forward(ctx, U, A, B, bias_x, layer):
            An = A.detach().cpu().double().numpy()
            W = (U.detach().cpu().double().numpy() @ B.detach().cpu().double().numpy().T
                 + bias_x.detach().cpu().double().numpy())
            X, _ = solve_equilibrium(An, W.T, layer.activation, tol=layer.tol,
                                     max_iter=layer.max_iter, on_nonconvergence="raise")
            Z = An @ X + W.T
            Psi = torch.as_tensor(layer.activation.derivative(Z).T, dtype=A.dtype,
                                  device=A.device)
            Xt = torch.as_tensor(X.T, dtype=A.dtype, device=A.device)
            ctx.save_for_backward(U, A, B, Xt, Psi)
            ctx.layer = layer
            return Xt

        @staticmethod
        def backward(ctx, G):
            U, A, B, X, Psi = ctx.saved_tensors
            V = _adjoint(torch, A, Psi, G, ctx.layer.tol, ctx.layer.max_iter)
            return V @ B, V.T @ X, V.T @ U, V.sum(dim=0), None

    class ImplicitLayer(torch.nn.Module):
        """An implicit model as a torch module (see :mod:`fenchel_idl.analysis.torch_interop`).

        Attributes: parameters ``A, B, C, D, bias_x, bias_y``; ``activation`` (the
        fenchel_idl Activation); ``tol`` and ``max_iter`` of the equilibrium and adjoint
        solves.
        """

        def __init__(self, model: ImplicitModel, dtype, tol: float, max_iter: int):
            super().__init__()
            for name in ("A", "B", "C", "D", "bias_x", "bias_y"):
                value = torch.as_tensor(np.array(getattr(model, name)), dtype=dtype)
                self.register_parameter(name, torch.nn.Parameter(value))
            self.activation = model.activation
            self.tol, self.max_iter = tol, max_iter

        def equilibrium(self, U):
            """The states X, shape (batch, n), of a batch U of shape (batch, p)."""
            return Equilibrium.apply(U, self.A, self.B, self.bias_x, self)

        def forward(self, U):
            X = self.equilibrium(U)
            return X @ self.C.T + U @ self.D.T + self.bias_y

        @torch.no_grad()
        def project_(self, kappa: float = 0.95):
            """Project each row of A onto gamma_i ||a_i||_1 <= kappa (in place), which makes
            the model well-posed (Remark 2.4); returns self."""
            kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
            gam = state_lipschitz(self.activation, self.A.shape[0])
            P = project_l1_rows(self.A.detach().cpu().double().numpy(), kappa / gam)
            self.A.copy_(torch.as_tensor(P, dtype=self.A.dtype))
            return self

        def extra_repr(self) -> str:
            n, p = self.B.shape
            return f"n={n}, p={p}, q={self.C.shape[0]}, activation={self.activation!r}"

    return Equilibrium, ImplicitLayer


def _adjoint(torch, A, Psi, G, tol: float, max_iter: int):
    """V = Psi * (V A + G) by fixed-point iteration (rows are samples)."""
    V = Psi * G
    for _ in range(max_iter):
        Vn = Psi * (V @ A + G)
        diff = float((Vn - V).abs().max()) if V.numel() else 0.0
        V = Vn
        if diff <= tol * max(1.0, float(V.abs().max()) if V.numel() else 0.0):
            return V
    warnings.warn(f"the adjoint iteration (6.6) did not converge in {max_iter} iterations; "
                  "the gradients are inaccurate.", ConvergenceWarning, stacklevel=3)
    return V


def to_torch(model: ImplicitModel, *, dtype: str = "float64", tol: float = 1e-10,
             max_iter: int = 5000) -> Any:
    """An ``nn.Module`` computing the implicit model, with the implicit gradient.

    Parameters
    ----------
    model : ImplicitModel
        A model with a componentwise activation (or a Blockwise map of them).
    dtype : {"float64", "float32"}
        dtype of the module's parameters (the equilibrium is solved in float64).
    tol, max_iter
        Tolerance and iteration cap of the equilibrium and adjoint solves.

    Returns
    -------
    torch.nn.Module
        Its forward takes U of shape (batch, p) and returns (batch, q); ``equilibrium(U)``
        returns the states (batch, n); ``project_(kappa)`` projects A into the
        well-posedness ball.

    Raises
    ------
    InputTypeError
        ``model`` is not an ImplicitModel.
    ValidationError
        A vector activation (softmax), a bad dtype, tol or max_iter.
    ImportError
        torch is not installed (``pip install 'fenchel-idl[torch]'``).

    Examples
    --------
    >>> import numpy as np, fenchel_idl as fi
    >>> model = fi.from_layers([np.eye(2), np.ones((1, 2))])
    >>> layer = to_torch(model)  # doctest: +SKIP
    """
    if not isinstance(model, ImplicitModel):
        raise InputTypeError(f"'model' must be an ImplicitModel; got {type(model).__name__}.")
    check_choice("dtype", dtype, _DTYPES)
    tol = check_real("tol", tol, 0.0, None, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    if not model.activation.componentwise:
        raise ValidationError("'model.activation' must be componentwise (relu, leaky_relu, tanh, "
                              "sigmoid, identity, or a Blockwise map of them) for to_torch; got "
                              f"{model.activation!r}.")
    torch = _torch()
    _, layer_class = _classes()
    return layer_class(model, getattr(torch, dtype), tol, max_iter)


def from_torch(module: Any) -> ImplicitModel:
    """The :class:`~fenchel_idl.ImplicitModel` of a module made by :func:`to_torch` (with its
    current, possibly trained, parameters; float64 arrays, exact for a float64 module).

    Raises
    ------
    InputTypeError
        ``module`` was not made by :func:`to_torch`.
    """
    torch = _torch()
    _, layer_class = _classes()
    if not isinstance(module, layer_class):
        raise InputTypeError("'module' must be a module made by fenchel_idl.to_torch; got "
                             f"{type(module).__name__}.")
    with torch.no_grad():
        arrays = {name: getattr(module, name).detach().cpu().double().numpy().copy()
                  for name in ("A", "B", "C", "D", "bias_x", "bias_y")}
    return ImplicitModel(activation=module.activation, **arrays)
