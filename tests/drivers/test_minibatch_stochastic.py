"""The stochastic steps of mini-batch BCD (solve_bcd_minibatch(steps="stochastic")) against
independent references: CVXPY blocks, plain numpy objectives and forward passes."""

import itertools

import cvxpy as cp
import numpy as np
import pytest
from scipy.special import logsumexp

from fenchel_idl import ImplicitModel, TrainingProblem
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.drivers.minibatch import batch_problem, solve_bcd_minibatch
from fenchel_idl.drivers.problem_file import load_problem, train_spec
from fenchel_idl.errors import ValidationError
from tests.helpers import identity_ab_block


def _solve(prob, name):
    return solve_certified(prob, name, "qp", tol=1e-8)[-1]


def _equilibrium(prob, A, B, b, U=None):
    model = ImplicitModel(A, B, np.zeros((1, prob.n)), np.zeros((1, prob.p)), prob.activation,
                          b, None)
    return model.equilibrium(prob.U if U is None else U, tol=1e-12, max_iter=50000)[0]


def _classification(rng, m=240):
    U = rng.standard_normal((3, m))
    labels = (U[0] * U[1] > 0).astype(int) + (U[2] > 0.8)
    return U, labels


def _numpy_objective(U, Y, lam, A, B, b, C, D, d, X):
    """(1/m) sum_j [cross-entropy_j + sum_i lam_i F(x_ij, z_ij)], F written out for ReLU."""
    Z = A @ X + B @ U + b[:, None]
    Yh = C @ X + D @ U + d[:, None]
    ce = np.mean(logsumexp(Yh, axis=0) - np.sum(Y * Yh, axis=0))
    F = 0.5 * X ** 2 + 0.5 * np.maximum(Z, 0.0) ** 2 - X * Z
    return ce + float(lam @ F.sum(axis=1)) / X.shape[1]


def test_the_batch_problem_is_the_mean_over_its_samples(rng):
    """J_S of batch_problem: the batch's own mean, by a numpy re-derivation."""
    U, labels = _classification(rng, m=90)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", lam=0.3)
    idx = np.sort(rng.choice(90, 25, replace=False))
    view = batch_problem(prob, idx)
    assert view.m == 25 and prob.m == 90  # the full problem is untouched
    n, p, q = 5, 3, prob.q
    A = 0.1 * rng.standard_normal((n, n))
    B, b = rng.standard_normal((n, p)), rng.standard_normal(n)
    C, D, d = rng.standard_normal((q, n)), rng.standard_normal((q, p)), rng.standard_normal(q)
    X = np.abs(rng.standard_normal((n, 25)))
    lam = rng.uniform(0.1, 1.0, n)
    got = sum(view.objective_parts(A, B, b, C, D, d, X, lam))
    want = _numpy_objective(prob.U[:, idx], prob.Y[:, idx], lam, A, B, b, C, D, d, X)
    assert got == pytest.approx(want, rel=1e-12)


def test_one_batch_of_m_is_the_k_x_w_sweep_of_the_cvxpy_blocks(rng):
    """Known case: with batch_size = m and phi = identity (f* is its own majorizer, the
    squared loss is exact), one stochastic epoch is: X at the equilibrium, the proximal
    (C, D) block, the X block, then three proximal (A, B) blocks (with the W step's centred
    proximal term), each centred at the last; then the optimal readout. Reference: the CVXPY
    blocks and a CVXPY proximal (C, D)."""
    U = rng.uniform(-1, 1, (2, 60))
    Y = np.sin(2 * U[:1]) + 0.3 * U[1:2] ** 2 + 0.05 * rng.standard_normal((1, 60))
    prob = TrainingProblem(U, Y, n=5, kappa=0.5, lam=4.0, activation="identity",
                           bounds={"C": 20.0})
    n, p, m = prob.n, prob.p, prob.m
    A0 = rng.uniform(-1, 1, (n, n))
    A0 *= 0.3 / np.abs(A0).sum(axis=1, keepdims=True)
    init = prob.to_user_model(A0, 0.3 * rng.standard_normal((n, p)), rng.standard_normal(n),
                              rng.standard_normal((1, n)), rng.standard_normal((1, p)),
                              np.zeros(1))
    res = solve_bcd_minibatch(prob, batch_size=m, epochs=1, init=init, shuffle=False,
                              steps="stochastic", ab_prox=1.0, cd_prox=1.0, gap_tol=1e-9)
    A, B, b, C, D, d = prob.from_user_model(init)
    lam = prob.lam0
    blocks = Blocks(prob)
    X = _equilibrium(prob, A, B, b)
    # the proximal (C, D) block, rho = cd_prox * lambda_max(V V^T) / m
    V = np.vstack([X, prob.U, np.ones((1, m))])
    rho = np.linalg.eigvalsh(V @ V.T)[-1] / m
    K0 = np.hstack([C, D, d[:, None]])
    K = cp.Variable(K0.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(K @ V - prob.Y) / (2 * m)
                           + rho / 2 * cp.sum_squares(K - K0)),
               [cp.sum(cp.abs(K[:, :n]), axis=1) <= 20.0]).solve(solver="CLARABEL")
    C, D, d = K.value[:, :n], K.value[:, n:n + p], K.value[:, -1]
    X, ix = blocks.solve_x(A, B, b, C, D, d, X, lam, _solve)
    V = np.vstack([X, prob.U, np.ones((1, m))])
    rho_ab = np.linalg.norm(V, 2) ** 2 / m
    for _ in range(3):
        A, B, b, ia = identity_ab_block(X, prob.U, np.hstack([A, B, b[:, None]]), rho_ab,
                                        prob.kappa)
        assert ix.certified and ia.certified
    X = _equilibrium(prob, A, B, b)
    C, D, d, _ = blocks.solve_cd(X, A, B, _solve)
    ref = prob.to_user_model(A, B, b, C, D, d)
    assert [r.block for r in res.history] == ["restart", "restart", "CD", "X", "AB", "AB", "AB"]
    for k in "AB":
        np.testing.assert_allclose(getattr(res.model, k), getattr(ref, k), rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.model.predict(U), ref.predict(U), rtol=0, atol=1e-5)
    assert res.certificate.blocks_certified and res.certificate.readout_certified


def test_no_step_raises_its_batch_objective_and_monotone_says_what_j_did(rng):
    """Within each batch the records' J_S never rises (restart, CD x3, X, AB x3); the
    certificate's monotone and max_increase are those of J (recomputed on all samples by
    the driver, monitor="step") between each epoch's start and end."""
    U, labels = _classification(rng)
    prob = TrainingProblem(U, labels, n=8, loss="cross_entropy", kappa=0.5, lam=0.1,
                           bounds={"B": 5.0, "C": 5.0, "D": 5.0})
    res = solve_bcd_minibatch(prob, batch_size=60, epochs=3, steps="stochastic",
                              monitor="step", seed=2)
    recs = res.history
    starts = [i for i, r in enumerate(recs) if r.block == "restart" and r.batch == 60]
    assert len(starts) == 12  # 4 batches x 3 epochs
    for i in starts:
        batch = recs[i:i + 8]
        assert [r.block for r in batch] == ["restart", "CD", "CD", "CD", "X", "AB", "AB", "AB"]
        for a, b_ in itertools.pairwise(batch):
            assert b_.surrogate <= a.surrogate + 1e-9 * max(1.0, abs(a.surrogate))
    rises = []
    for epoch in range(3):
        er = [r for r in recs if r.epoch == epoch]
        assert er[0].block == "restart" and er[0].batch == prob.m
        rises.append((er[-1].objective - er[0].objective) / max(1.0, abs(er[0].objective)))
    cert = res.certificate
    assert cert.max_increase == pytest.approx(max(rises), rel=1e-9, abs=1e-15)
    assert cert.monotone == (max(rises) <= 1e-6)
    assert cert.blocks_certified and cert.readout_certified and cert.well_posed


def test_stochastic_steps_train_a_classifier_below_its_random_start(rng):
    """With the epoch line search, the returned model's true objective (a numpy forward
    pass) is below the random-feature start's and its certificate's figures are its own."""
    U, labels = _classification(rng, m=300)
    # lam = 10: with a small lam the states fit each batch's labels and W fits the states,
    # which overfits a batch of this small problem (the module docstring)
    prob = TrainingProblem(U, labels, n=12, loss="cross_entropy", kappa=0.5, lam=10.0,
                           bounds={"B": 10.0, "C": 10.0, "D": 10.0})
    res = solve_bcd_minibatch(prob, batch_size=75, epochs=4, steps="stochastic",
                              line_search=True, seed=0)

    def true_objective(model):
        # the user model reads raw inputs (the problem standardizes its own copy)
        X = np.zeros((model.A.shape[0], prob.m))
        for _ in range(3000):
            X = np.maximum(model.A @ X + model.B @ U + model.bias_x[:, None], 0.0)
        Z = model.C @ X + model.D @ U + model.bias_y[:, None]
        return float(np.mean(logsumexp(Z, axis=0) - np.sum(prob.Y * Z, axis=0))), Z

    end, Z = true_objective(res.model)
    start, _ = true_objective(res.start_model)
    assert end < start - 0.05
    assert res.certificate.true_loss == pytest.approx(end, rel=1e-6)
    accuracy = float(np.mean(Z.argmax(axis=0) == labels))
    assert accuracy == pytest.approx(res.certificate.train_metric["accuracy"])
    assert res.certificate.blocks_certified and res.certificate.readout_certified


def test_tanh_takes_the_cvxpy_x_block(rng):
    U, labels = _classification(rng, m=80)
    prob = TrainingProblem(U, labels, n=4, loss="cross_entropy", activation="tanh",
                           kappa=0.5, lam=0.5, bounds={"B": 5.0, "C": 5.0, "D": 5.0})
    res = solve_bcd_minibatch(prob, batch_size=40, epochs=1, steps="stochastic",
                              monitor="step")
    batch = [r for r in res.history if r.block != "restart"][:7]
    assert [r.block for r in batch] == ["CD", "CD", "CD", "X", "AB", "AB", "AB"]
    x_solver = next(r.solver for r in res.history if r.block == "X")
    assert x_solver not in ("FISTA", "projected Newton")  # a CVXPY X block
    for a, b_ in itertools.pairwise(batch):
        assert b_.surrogate <= a.surrogate + 1e-9 * max(1.0, abs(a.surrogate))
    assert res.certificate.blocks_certified


def test_bad_steps_are_refused(rng, tmp_path):
    U, labels = _classification(rng, m=40)
    prob = TrainingProblem(U, labels, n=4, loss="cross_entropy")
    with pytest.raises(ValidationError, match=r"'steps' must be one of \['incremental', "
                                              r"'stochastic'\]; got 'sgd'"):
        solve_bcd_minibatch(prob, steps="sgd")
    path = tmp_path / "bad.toml"
    path.write_text('name = "b"\n[data]\nsource = "cosine"\nm = 40\n[model]\nn = 4\n'
                    '[minibatch]\nsteps = 1\n')
    with pytest.raises(ValidationError, match=r"'steps' must be one of"):
        load_problem(path)


def test_a_problem_file_passes_its_steps_to_the_driver(tmp_path):
    path = tmp_path / "st.toml"
    path.write_text('name = "st"\nseed = 0\n[data]\nsource = "cosine"\nm = 60\n[model]\n'
                    'n = 6\nkappa = 0.5\n[training]\nlam = 1.0\n[minibatch]\nbatch_size = 30\n'
                    'epochs = 1\nsteps = "stochastic"\n')
    spec = load_problem(path)
    from fenchel_idl.drivers.problem_file import build_problem, load_data

    ds, _ = load_data(spec)
    res = train_spec(spec, build_problem(spec, ds))
    # the stochastic steps restart every batch at its equilibrium: two batches, two restarts
    assert [r.batch for r in res.history if r.block == "restart"] == [60, 30, 30]
    assert res.certificate.blocks_certified
