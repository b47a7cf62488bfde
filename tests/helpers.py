"""Seeded builders shared by the test folders (import as ``from tests.helpers import ...``)."""

import numpy as np

from fenchel_idl import ImplicitModel
from fenchel_idl.blocks.solvers import solve_certified


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


def small_regression(rng, m=40, p=2):
    U = rng.uniform(-1, 1, (p, m))
    Y = np.sin(2 * U[:1]) + 0.3 * U[1:2] ** 2 + 0.05 * rng.standard_normal((1, m))
    return U, Y


def qp_solve(prob, name):
    """The block solve the CVXPY blocks take: the certified QP chain, its last record."""
    return solve_certified(prob, name, "qp")[-1]


def random_state(problem, rng):
    """A random BCD state (A in the 0.45 ball, X near the ReLU equilibrium) for ``problem``."""
    n, p = problem.n, problem.p
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, p)), rng.standard_normal(n)
    X = np.maximum(B @ problem.U + b[:, None], 0) + 0.1 * rng.uniform(size=(n, problem.m))
    C, D, d = rng.standard_normal((1, n)), rng.standard_normal((1, p)), rng.standard_normal(1)
    return A, B, b, C, D, d, X
