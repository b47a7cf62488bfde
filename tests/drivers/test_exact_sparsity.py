"""Exact sparsity of BCD alone (issue 24, target 2): the feature-selection column norms of
(B; D) and the row norms of (A, B) give exact zero groups; a zero column of (B; D) is
optimal for the readout (its loss gradient w.r.t. D_j, re-derived in numpy, is within the
penalty's ball); reduce() removes the zero rows' states without changing the predictions
(numpy forward pass); the run stays monotone in the true objective and certified."""

import itertools

import numpy as np

from fenchel_idl import reduce, selected_features
from fenchel_idl.drivers import solve_bcd
from fenchel_idl.problem.training_problem import TrainingProblem


def _data(seed=0, p=6, m=80):
    """Inputs 0-2 carry the signal, 3-5 are noise."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((p, m))
    Y = (np.maximum(U[0] - U[1], 0.0) + 0.5 * U[2])[None, :] + 0.05 * rng.standard_normal((1, m))
    return U, Y


def _numpy_state(A, B, b, U, iters=4000):
    X = np.zeros((A.shape[0], U.shape[1]))
    for _ in range(iters):
        X = np.maximum(A @ X + B @ U + b[:, None], 0.0)
    return X


def _numpy_gradients(pb, model):
    """Gradients of the squared loss 1/(2m) ||C X + D U + d - Y||^2 at the equilibrium, in the
    problem's standardized units, by the adjoint of X = relu(A X + B U + b), written out."""
    A, B, b, C, D, d = pb.from_user_model(model)
    U, Y, m = pb.U, pb.Y, pb.m
    X = _numpy_state(A, B, b, U)
    G = (C @ X + D @ U + d[:, None] - Y) / m
    S = (A @ X + B @ U + b[:, None] > 0.0).astype(float)
    W = np.zeros_like(X)          # W = S * (C^T G + A^T W), solved column by column
    for k in range(m):
        M = np.eye(pb.n) - S[:, k][:, None] * A.T
        W[:, k] = np.linalg.solve(M, S[:, k] * (C.T @ G[:, k]))
    return {"A": W @ X.T, "B": W @ U.T, "D": G @ U.T}, (A, B, b, C, D, d)


def _numpy_predict(model, U):
    bx = np.zeros(model.n) if model.bias_x is None else model.bias_x
    by = np.zeros(model.C.shape[0]) if model.bias_y is None else model.bias_y
    X = _numpy_state(model.A, model.B, bx, U)
    return model.C @ X + model.D @ U + by[:, None]


def _check_run(res):
    cert = res.certificate
    assert cert.blocks_certified and cert.monotone and cert.readout_certified
    eq = [loss for _, loss in res.equilibrium_losses]
    ls = [r.objective for r in res.history if r.block in ("LS", "PR") and r.accepted]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(ls))   # true objective, monotone
    assert len(eq) >= 1
    pr = [r for r in res.history if r.block == "PR"]
    assert pr and all(r.certified for r in pr)
    return pr


def test_feature_selection_gives_exact_optimal_zero_columns():
    U, Y = _data()
    w = 0.2
    pb = TrainingProblem(U, Y, n=6, kappa=0.5, bounds={"C": 20.0},
                         penalties=[{"name": "feature_selection", "weight": w}])
    res = solve_bcd(pb, max_sweeps=6, seed=0)
    _check_run(res)
    model = res.model
    sel = selected_features(model, tol=0)
    assert sel.tolist() == [0, 1, 2]                       # the noise inputs are gone
    assert np.all(model.B[:, 3:] == 0.0) and np.all(model.D[:, 3:] == 0.0)
    g, (_, B, _, _, D, _) = _numpy_gradients(pb, model)
    zero = np.flatnonzero(~np.any(np.vstack([B, D]) != 0.0, axis=0))
    assert zero.tolist() == [3, 4, 5]
    # with B_j = 0, D_j = 0 is optimal for the readout: the loss gradient w.r.t. D_j at the
    # returned model lies in the penalty's subdifferential at 0, the ball of radius w (the
    # readout's certified gap allows a hair more)
    assert np.all(np.linalg.norm(g["D"][:, zero], axis=0) <= w * (1.0 + 1e-3))
    # and the exact zeros are not the readout's: a column kept in B has D_j != 0
    assert np.all(np.any(D[:, sel] != 0.0, axis=0))


def test_row_norms_give_exact_optimal_zero_rows_that_reduce_removes():
    U, Y = _data()
    w = 0.003
    pb = TrainingProblem(U, Y, n=6, kappa=0.5, bounds={"C": 20.0},
                         penalties=[{"name": "row_norms", "of": "AB", "weight": w}])
    res = solve_bcd(pb, max_sweeps=6, seed=0)
    _check_run(res)
    model = res.model
    zero = np.flatnonzero(~np.any(np.hstack([model.A, model.B]) != 0.0, axis=1))
    assert 0 < zero.size < pb.n
    # the zero rows came from the prune step, accepted because the true objective fell
    assert any(r.step > 0 for r in res.history if r.block == "PR")
    red = reduce(model)
    assert red.model.n <= pb.n - zero.size
    rng = np.random.default_rng(1)
    V = np.hstack([U, rng.standard_normal((U.shape[0], 40))])
    np.testing.assert_allclose(_numpy_predict(red.model, V), _numpy_predict(model, V),
                               rtol=0, atol=1e-10)
