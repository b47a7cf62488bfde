"""Implicit-differentiation gradients (6.4)-(6.6) against central finite differences."""

import numpy as np
import pytest

from fenchel_idl.drivers.gradients import loss_gradients
from fenchel_idl.model import Blockwise
from fenchel_idl.problem.losses import get_loss
from fenchel_idl.problem.projection import project_well_posed
from tests.helpers import random_model

H = 1e-6
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "relu+softmax"]


def make_problem(activation, loss, seed):
    """A small random model and data set, with every pre-activation away from a kink."""
    rng = np.random.default_rng(seed)
    if activation == "relu+softmax":
        phi = Blockwise([(3, "relu"), (3, "softmax")])
        model = random_model(rng, n=6, p=3, q=3, kappa=0.6, activation=phi)
        model = model.replace(A=project_well_posed(model.A, 0.6, phi))
    else:
        model = random_model(rng, n=6, p=3, q=3, kappa=0.6, activation=activation)
    U = rng.standard_normal((3, 5))
    if loss == "cross_entropy":
        Y = np.eye(3)[:, rng.integers(0, 3, 5)]
    else:
        Y = rng.standard_normal((3, 5))
    return model, U, Y


def min_abs_preactivation(model, U):
    X, _ = model.equilibrium(U, tol=1e-14, max_iter=20000)
    return float(np.min(np.abs(model.A @ X + model.state_input(U))))


def kink_free_problem(activation, loss):
    for seed in range(100):
        model, U, Y = make_problem(activation, loss, seed)
        if activation not in ("relu", "leaky_relu", "relu+softmax") or \
                min_abs_preactivation(model, U) > 1e-3:
            return model, U, Y
    raise RuntimeError("no kink-free problem found")  # pragma: no cover


def objective(model, U, Y, loss):
    X, info = model.equilibrium(U, tol=1e-14, max_iter=20000)
    assert info.converged
    return get_loss(loss).value(Y, model.output(X, U))


def finite_differences(model, U, Y, loss, name, entries):
    """Central differences of the loss in the given entries of the named array."""
    base = np.array(U if name == "U" else getattr(model, name), dtype=float)
    grad = np.zeros(len(entries))
    for k, idx in enumerate(entries):
        vals = []
        for sign in (1.0, -1.0):
            pert = base.copy()
            pert[idx] += sign * H
            if name == "U":
                vals.append(objective(model, pert, Y, loss))
            else:
                vals.append(objective(model.replace(**{name: pert}), U, Y, loss))
        grad[k] = (vals[0] - vals[1]) / (2 * H)
    return grad


def some_entries(shape, rng, count=8):
    """Up to ``count`` distinct entries of an array of the given shape (all when fewer)."""
    every = list(np.ndindex(shape))
    if len(every) <= count:
        return every
    return [every[i] for i in rng.choice(len(every), count, replace=False)]


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences(activation, loss):
    model, U, Y = kink_free_problem(activation, loss)
    g = loss_gradients(model, U, Y, loss=loss, tol=1e-13)
    assert g.adjoint_converged
    # loss_gradients solves the forward equilibrium at its default tolerance (1e-9)
    assert g.loss == pytest.approx(objective(model, U, Y, loss), rel=1e-7)
    rng = np.random.default_rng(7)
    for name in ("A", "B", "C", "D", "bias_x", "bias_y", "U"):
        entries = some_entries(getattr(g, name).shape, rng)
        fd = finite_differences(model, U, Y, loss, name, entries)
        ours = np.array([getattr(g, name)[idx] for idx in entries])
        np.testing.assert_allclose(ours, fd, rtol=1e-5, atol=1e-8,
                                   err_msg=f"d loss / d {name} ({activation}, {loss})")


def test_adjoint_matches_dense_formula(rng):
    """V of (6.6) equals the closed form (6.4): (C (I - Psi A)^{-1} Psi)^T G, per sample."""
    model = random_model(rng, n=7, p=2, q=2, activation="tanh")
    U = rng.standard_normal((2, 4))
    Y = rng.standard_normal((2, 4))
    g = loss_gradients(model, U, Y, tol=1e-13)
    X = g.X
    Z = model.A @ X + model.state_input(U)
    G = (model.output(X, U) - Y) / U.shape[1]
    V = np.empty_like(X)
    for j in range(U.shape[1]):
        Psi = np.diag(1 - np.tanh(Z[:, j]) ** 2)
        V[:, j] = (model.C @ np.linalg.solve(np.eye(7) - Psi @ model.A, Psi)).T @ G[:, j]
    np.testing.assert_allclose(g.A, V @ X.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.bias_x, V.sum(axis=1), rtol=1e-9, atol=1e-12)


def test_solve_adjoint_keeps_float32_and_agrees_with_float64(rng):
    from fenchel_idl.drivers.gradients import solve_adjoint

    model = random_model(rng, n=9, p=3, q=2, kappa=0.6)
    U = rng.standard_normal((3, 25))
    X, _ = model.equilibrium(U)
    Z = model.A @ X + model.state_input(U)
    G = rng.standard_normal((2, 25))
    V64, _, ok64 = solve_adjoint(model, Z, G, tol=1e-12)
    V32, _, ok32 = solve_adjoint(model, Z.astype(np.float32), G, tol=1e-5)
    assert ok64 and ok32 and V32.dtype == np.float32 and V64.dtype == np.float64
    # V64 solves V = Psi o (A^T V + C^T G): an independent check of the fixed point
    Psi = (Z > 0).astype(float)
    assert np.allclose(V64, Psi * (model.A.T @ V64 + model.C.T @ G), atol=1e-10)
    assert np.max(np.abs(V32 - V64)) <= 1e-4 * max(1.0, np.max(np.abs(V64)))
