"""The projected Newton X step (fenchel_idl.blocks.x_step) against independent references:
the block objective re-derived in plain numpy, L-BFGS-B on that objective, finite
differences, and the certificate against the distance to a reference optimum."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from fenchel_idl.blocks.x_step import XStepObjective, fast_x_block
from fenchel_idl.problem.training_problem import TrainingProblem


def _ill_conditioned(rng, loss, m=50, n=8, p=3, q=3, lam=0.01, cball=20.0):
    """A ReLU problem at a point where C is large beside lam (||C||^2 / lam ~ 1e5), as in
    MNIST training: the regime first-order methods pay for."""
    U = rng.standard_normal((p, m))
    labels = rng.integers(0, q, m)
    Y = np.eye(q)[:, labels] if loss == "cross_entropy" else rng.standard_normal((q, m))
    pb = TrainingProblem(U, Y, n=n, kappa=0.5, loss=loss, standardize=False)
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, p)), 0.1 * rng.standard_normal(n)
    C = rng.standard_normal((q, n))
    C *= cball / np.abs(C).sum(axis=1, keepdims=True)
    D, d = rng.standard_normal((q, p)), np.zeros(q)
    X = np.maximum(rng.standard_normal((n, m)), 0.0)
    lam_v = lam * rng.uniform(1.0, 3.0, n)  # per-unit multipliers
    return pb, (A, B, b, C, D, d, X, lam_v)


def _numpy_block(pb, A, B, b, C, D, d, Xbar, lam, X):
    """The X block objective re-derived: the loss, (1/m) sum_i lam_i (1/2 x^2 + 1/2 z_+^2 - x z)
    and the DCA excess (1/2m) tr((X - Xbar)^T S+ (X - Xbar)), S+ the positive part of
    Lam A + A^T Lam (the expanded divergence, so the cancellation is the test's own)."""
    m = pb.m
    Yhat = C @ X + D @ pb.U + d[:, None]
    if pb.loss.name == "cross_entropy":
        loss = float(np.sum(logsumexp(Yhat, axis=0)) - np.sum(pb.Y * Yhat)) / m
    else:
        loss = 0.5 * float(np.sum((Yhat - pb.Y) ** 2)) / m
    Z = A @ X + B @ pb.U + b[:, None]
    div = 0.5 * X * X + 0.5 * np.maximum(Z, 0) ** 2 - X * Z
    M = lam[:, None] * A
    ev, Q = np.linalg.eigh(M + M.T)
    Sp = (Q * np.maximum(ev, 0)) @ Q.T
    Dx = X - Xbar
    return loss + (float(np.sum(lam[:, None] * div)) + 0.5 * float(np.sum(Dx * (Sp @ Dx)))) / m


def _reference_optimum(pb, state, X0):
    """L-BFGS-B on the re-derived objective (its gradient by the block's own formula would
    not be independent: finite differences are checked separately)."""
    A, B, b, C, D, d, X, lam = state
    obj = XStepObjective(pb, A, B, b, C, D, d, X, lam)
    shape = X0.shape

    def fun(v):
        f, g = obj.value_grad(v.reshape(shape))
        return f, g.ravel()

    res = minimize(fun, X0.ravel(), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * X0.size,
                   options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-16, "gtol": 1e-13})
    return res.x.reshape(shape)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_objective_and_gradient_are_the_re_derived_block(rng, loss):
    pb, state = _ill_conditioned(rng, loss)
    A, B, b, C, D, d, X, lam = state
    obj = XStepObjective(pb, *state)
    Xt = np.maximum(X + 0.3 * rng.standard_normal(X.shape), 0.0) + 0.05
    f, g = obj.value_grad(Xt)
    assert f == pytest.approx(_numpy_block(pb, A, B, b, C, D, d, X, lam, Xt), rel=1e-10)
    # central differences away from the kinks (Xt > 0 everywhere; Z rarely exactly 0)
    h = 1e-6
    for _ in range(6):
        i, j = rng.integers(0, Xt.shape[0]), rng.integers(0, Xt.shape[1])
        E = np.zeros_like(Xt)
        E[i, j] = h
        fd = (_numpy_block(pb, A, B, b, C, D, d, X, lam, Xt + E)
              - _numpy_block(pb, A, B, b, C, D, d, X, lam, Xt - E)) / (2 * h)
        assert g[i, j] == pytest.approx(fd, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_newton_x_step_is_certified_and_its_gap_bounds_the_distance_to_the_optimum(rng, loss):
    """Ill-conditioned (||C||^2 / lam ~ 1e5): certified within its default Newton budget, at
    the objective L-BFGS-B reaches, with the reported gap above the true suboptimality."""
    pb, state = _ill_conditioned(rng, loss)
    A, B, b, C, D, d, X, lam = state
    Xn, info = fast_x_block(pb, *state, tol=1e-9)
    assert info.certified and info.solver == "projected Newton"
    assert Xn.min() >= 0.0
    f = _numpy_block(pb, A, B, b, C, D, d, X, lam, Xn)
    assert info.objective == pytest.approx(f, rel=1e-9)
    Xr = _reference_optimum(pb, state, Xn)
    best = min(_numpy_block(pb, A, B, b, C, D, d, X, lam, Xr), f)
    assert f - best <= info.gap * max(1.0, f) + 1e-13
    # the DCA step never increases the relaxed majorizer it minimizes
    assert f <= _numpy_block(pb, A, B, b, C, D, d, X, lam, np.maximum(X, 0)) + 1e-12


def test_an_unfinished_step_says_so_and_its_gap_still_bounds_it(rng):
    """Stopped after one Newton step: not certified, and the reported bound still holds
    (a certificate is never false, even for an iterate that is not optimal)."""
    pb, state = _ill_conditioned(rng, "cross_entropy")
    A, B, b, C, D, d, X, lam = state
    X1, info = fast_x_block(pb, *state, tol=1e-12, max_iter=1)
    assert not info.certified and info.status == "optimal_inaccurate"
    assert "after 1 Newton steps" in info.note
    f1 = _numpy_block(pb, A, B, b, C, D, d, X, lam, X1)
    Xs, sharp = fast_x_block(pb, *state, tol=1e-12)
    assert sharp.certified
    fs = _numpy_block(pb, A, B, b, C, D, d, X, lam, Xs)
    assert f1 - fs > 0  # one step is not the optimum here
    assert f1 - fs <= info.gap * max(1.0, f1)
