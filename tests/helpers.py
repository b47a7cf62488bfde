"""Seeded builders shared by the test folders (import as ``from tests.helpers import ...``)."""

import cvxpy as cp
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


def identity_ab_block(X, U, W0, rho, kappa, beta=None):
    """Reference for the mini-batch W step with phi = identity (written out in CVXPY): the
    proximal (A, B) block min (1/2m) ||X - W V||^2 + rho/2 ||T (W - W0)||^2 over the rows'
    l1 balls ||a_i||_1 <= kappa (and, with ``beta``, ||B_i||_1 <= beta and |b_i| <= beta),
    V = [X; U; 1], with T the centring b' = b + w_^T mu (mu the
    mean of the columns of [X; U]) of the W step's proximal term. F(x, z) = (x - z)^2 / 2
    for phi = identity, and lam scales each row's whole objective, so it is left out.
    Returns (A, B, b, SolveInfo)."""
    n, m = X.shape
    V = np.vstack([X, U, np.ones((1, m))])
    mu = V[:-1].mean(axis=1)
    W = cp.Variable(W0.shape)
    Dw = W - W0
    TD = cp.hstack([Dw[:, :-1], Dw[:, -1:] + Dw[:, :-1] @ mu[:, None]])
    balls = [cp.sum(cp.abs(W[:, :n]), axis=1) <= kappa]
    if beta is not None:
        balls += [cp.sum(cp.abs(W[:, n:-1]), axis=1) <= beta, cp.abs(W[:, -1]) <= beta]
    block = cp.Problem(cp.Minimize(cp.sum_squares(X - W @ V) / (2 * m)
                                   + rho / 2 * cp.sum_squares(TD)), balls)
    info = solve_certified(block, "AB", "qp", tol=1e-8)[-1]  # Clarabel stops at 1e-8
    return W.value[:, :n], W.value[:, n:-1], W.value[:, -1], info
