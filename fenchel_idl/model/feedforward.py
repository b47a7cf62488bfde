"""Feedforward networks as implicit models (section 3.2, equation (3.2)).

The state lists the hidden layers last first, x = (x_L, ..., x_1), so A is strictly block
upper triangular: the model is well-posed whatever the weights, and its equilibrium is one
exact forward pass (back substitution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError
from fenchel_idl.model.activations import Activation, Blockwise, get_activation
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.validation import as_float_array

__all__ = ["from_layers", "from_mlp"]

_SKLEARN_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid",
                        "identity": "identity"}


def from_layers(weights: Sequence[Any], biases: Sequence[Any] | None = None,
                activations: Sequence[Any] | str = "relu") -> ImplicitModel:
    """Implicit model of the network x_{l+1} = phi_l(W_l x_l + b_l), x_0 = u, y = W_L x_L + b_L.

    Parameters
    ----------
    weights : sequence of L+1 arrays
        W_0 of shape (n_1, p), ..., W_L of shape (q, n_L). The last one is the linear
        output layer.
    biases : sequence of L+1 arrays, optional
        b_l of shape (n_{l+1},); zeros when omitted.
    activations : str, dict, Activation, or list of L of them
        phi_0, ..., phi_{L-1} for the hidden layers (one for all of them, or one each).

    Returns
    -------
    ImplicitModel
        With n = n_1 + ... + n_L states, ordered (x_L, ..., x_1).

    Raises
    ------
    InputTypeError
        'weights' or 'biases' is not a list/tuple, or 'activations' is neither an
        activation nor a list/tuple of them.
    ShapeError
        Consecutive layer sizes that do not match.
    ValidationError
        Fewer than two weight matrices, or a wrong number of biases or activations.
    """
    if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
        raise InputTypeError("'weights' must be a list of 2-D arrays; got "
                             f"{type(weights).__name__}.")
    if len(weights) < 2:
        raise ValidationError("'weights' needs at least two matrices (one hidden layer and the "
                              f"output layer); got {len(weights)}.")
    W = [as_float_array(f"weights[{i}]", w, ndim=2) for i, w in enumerate(weights)]
    L = len(W) - 1
    if biases is None:
        b = [np.zeros(w.shape[0]) for w in W]
    else:
        if isinstance(biases, np.ndarray) or not isinstance(biases, (list, tuple)):
            raise InputTypeError("'biases' must be a list of 1-D arrays (one per weight "
                                 f"matrix) or None; got {type(biases).__name__}.")
        if len(biases) != L + 1:
            raise ValidationError(f"'biases' must have {L + 1} entries like 'weights'; got "
                                  f"{len(biases)}.")
        b = [as_float_array(f"biases[{i}]", v, ndim=1) for i, v in enumerate(biases)]
    for i in range(L + 1):
        if b[i].shape != (W[i].shape[0],):
            raise ShapeError(f"'biases[{i}]' must have shape ({W[i].shape[0]},); got "
                             f"{b[i].shape}.")
        if i and W[i].shape[1] != W[i - 1].shape[0]:
            raise ShapeError(f"'weights[{i}]' must have {W[i - 1].shape[0]} columns to follow "
                             f"weights[{i - 1}] of shape {W[i - 1].shape}; got {W[i].shape}.")
    if isinstance(activations, (str, dict, Activation)):
        acts = [get_activation(activations)] * L
    else:
        if not isinstance(activations, (list, tuple)):
            raise InputTypeError("'activations' must be an activation (name, dict or "
                                 "Activation) or a list of them, one per hidden layer; got "
                                 f"{type(activations).__name__}.")
        if len(activations) != L:
            raise ValidationError(f"'activations' must have {L} entries (one per hidden layer); "
                                  f"got {len(activations)}.")
        acts = [get_activation(a) for a in activations]
    sizes = [W[i].shape[0] for i in range(L)]  # n_1..n_L
    n = sum(sizes)
    # offsets in the reversed order (x_L first)
    offs = {}
    pos = 0
    for layer in range(L, 0, -1):
        offs[layer] = pos
        pos += sizes[layer - 1]
    p = W[0].shape[1]
    A = np.zeros((n, n))
    B = np.zeros((n, p))
    bias_x = np.zeros(n)
    for layer in range(1, L + 1):  # x_layer = phi(W_{layer-1} x_{layer-1} + b_{layer-1})
        r = slice(offs[layer], offs[layer] + sizes[layer - 1])
        bias_x[r] = b[layer - 1]
        if layer == 1:
            B[r] = W[0]
        else:
            A[r, offs[layer - 1]:offs[layer - 1] + sizes[layer - 2]] = W[layer - 1]
    C = np.zeros((W[L].shape[0], n))
    C[:, offs[L]:offs[L] + sizes[L - 1]] = W[L]
    D = np.zeros((W[L].shape[0], p))
    phi = Blockwise(tuple((sizes[layer - 1], acts[layer - 1]) for layer in range(L, 0, -1)))
    act: Activation = phi.blocks[0][1] if len(phi.blocks) == 1 else phi
    return ImplicitModel(A, B, C, D, act, bias_x, b[L])


def from_mlp(mlp: Any) -> ImplicitModel:
    """Implicit model of a fitted scikit-learn MLPRegressor or MLPClassifier.

    The result takes the MLP's raw inputs (as columns): ``from_mlp(mlp).predict(X.T)``
    equals the MLP's output-layer values before its output activation (for a regressor,
    ``mlp.predict(X)``; for a classifier, the logits behind ``predict_proba``).

    Raises
    ------
    InputTypeError
        Not a fitted scikit-learn MLP.
    ValidationError
        An activation this package does not model.
    """
    if not (hasattr(mlp, "coefs_") and hasattr(mlp, "intercepts_")):
        raise InputTypeError("'mlp' must be a fitted scikit-learn MLPRegressor or MLPClassifier; "
                             f"got {type(mlp).__name__} without coefs_/intercepts_.")
    name = getattr(mlp, "activation", None)
    if name not in _SKLEARN_ACTIVATIONS:
        raise ValidationError(f"'mlp.activation' must be one of {sorted(_SKLEARN_ACTIVATIONS)}; "
                              f"got {name!r}.")
    weights = [np.asarray(c).T for c in mlp.coefs_]
    return from_layers(weights, [np.asarray(b) for b in mlp.intercepts_],
                       _SKLEARN_ACTIVATIONS[name])
