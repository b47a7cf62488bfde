"""Shared, seeded fixtures."""

import numpy as np
import pytest

from fenchel_idl import ImplicitModel


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_model(rng, n=12, p=4, q=3, kappa=0.8, activation="relu", bias=True):
    """A random model with ||A||_inf = kappa (so it is well-posed for CONE maps)."""
    A = rng.standard_normal((n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    return ImplicitModel(A=A, B=rng.standard_normal((n, p)), C=rng.standard_normal((q, n)),
                         D=rng.standard_normal((q, p)), activation=activation,
                         bias_x=rng.standard_normal(n) if bias else None,
                         bias_y=rng.standard_normal(q) if bias else None)


def numpy_fixed_point(model, U, iters=5000):
    """Plain numpy reference: the Picard iteration (2.6) run far past convergence."""
    X = np.zeros((model.n, U.shape[1]))
    for _ in range(iters):
        X = model.activation(model.A @ X + model.B @ U + model.bias_x[:, None])
    return X


@pytest.fixture
def model(rng):
    return random_model(rng)
