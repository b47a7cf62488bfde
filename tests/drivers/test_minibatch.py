"""Mini-batch BCD (fenchel_idl.drivers.minibatch) against independent references."""

import itertools
import json
import os

import cvxpy as cp
import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from fenchel_idl import ImplicitModel, TrainingProblem
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import fast_w_step
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.drivers.minibatch import (
    _GramReadout,
    _Stats,
    divergence_anchor,
    divergence_gap,
    loss_gap,
    solve_bcd_minibatch,
)
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.model.activations import get_activation
from tests.helpers import identity_ab_block


def _regression(rng, m=80, p=2):
    U = rng.uniform(-1, 1, (p, m))
    Y = np.sin(2 * U[:1]) + 0.3 * U[1:2] ** 2 + 0.05 * rng.standard_normal((1, m))
    return U, Y


def _solve(prob, name):
    return solve_certified(prob, name, "qp", tol=1e-8)[-1]  # Clarabel stops at 1e-8


# closed forms of f* (phi = d f*/dz), written out here independently of the package
FSTAR = {
    "relu": lambda z: 0.5 * np.maximum(z, 0.0) ** 2,
    "leaky_relu": lambda z: 0.5 * np.where(z > 0, z, 0.1 * z) * z,  # alpha = 0.1
    "tanh": lambda z: np.log(np.cosh(z)),
    "sigmoid": lambda z: np.logaddexp(0.0, z),
    "identity": lambda z: 0.5 * z ** 2,
}
GAMMA = {"relu": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "identity": 1.0}


@pytest.mark.parametrize("name", sorted(FSTAR))
def test_divergence_majorizer_bounds_fstar_and_touches_at_the_anchor(rng, name):
    act = {"leaky_relu": {"name": "leaky_relu", "alpha": 0.1}}.get(name, name)
    U, Y = _regression(rng, m=10)
    prob = TrainingProblem(U, Y, n=3, activation=act)
    assert get_activation(act).lipschitz == GAMMA[name]
    Z0 = rng.normal(0, 3, (3, 400))
    Z = Z0 + rng.normal(0, 2, (3, 400))
    f, g = FSTAR[name], GAMMA[name]
    phi0 = get_activation(act)(Z0)
    # the majorizer written from f*, phi and gamma directly
    upper = f(Z0) + phi0 * (Z - Z0) + 0.5 * g * (Z - Z0) ** 2
    assert np.all(upper >= f(Z) - 1e-9)
    np.testing.assert_allclose(divergence_gap(prob, Z, Z0), upper - f(Z), atol=1e-8)
    np.testing.assert_allclose(divergence_gap(prob, Z0, Z0), 0.0, atol=1e-12)
    # its centre: upper - gamma/2 (z - a)^2 does not depend on z
    a = divergence_anchor(prob, Z0)
    const = upper - 0.5 * g * (Z - a) ** 2
    np.testing.assert_allclose(const, f(Z0) - phi0 ** 2 / (2 * g), atol=1e-8)


def test_cross_entropy_majorizer_bounds_the_loss(rng):
    labels = rng.integers(0, 4, 30)
    prob = TrainingProblem(rng.standard_normal((2, 30)), labels, n=3, loss="cross_entropy")
    Yh0 = rng.normal(0, 3, (4, 500))
    Yh = Yh0 + rng.normal(0, 3, (4, 500))
    # Boehning: lse(y) <= lse(y0) + softmax(y0)^T (y - y0) + 1/4 ||y - y0||^2
    gap = loss_gap(prob, Yh, Yh0)
    direct = (logsumexp(Yh0, axis=0) + np.sum(softmax(Yh0, axis=0) * (Yh - Yh0), axis=0)
              + 0.25 * np.sum((Yh - Yh0) ** 2, axis=0) - logsumexp(Yh, axis=0))
    np.testing.assert_allclose(gap, direct, atol=1e-9)
    assert np.all(gap >= -1e-12)
    np.testing.assert_allclose(loss_gap(prob, Yh0, Yh0), 0.0, atol=1e-12)


def test_gram_readout_equals_the_full_cvxpy_block(rng):
    """The (C, D) block through the k x k square root of the Gram matrix solves the (C, D)
    block written on all m samples (the reference, in plain CVXPY)."""
    U, Y = _regression(rng, m=120)
    prob = TrainingProblem(U, Y, n=6, kappa=0.5, bounds={"C": 3.0},
                           penalties=[{"name": "l1", "weight": 1e-3, "on": "C"}])
    n = prob.n
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.4 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, 2)), rng.standard_normal(n)
    X = np.maximum(B @ prob.U + b[:, None], 0)
    X[2] = 0.0  # a dead state: G is singular
    st = _Stats(prob)
    st.add(1.0, X, st.V(X, np.arange(prob.m)), np.zeros((n, prob.m)), np.zeros((1, prob.m)),
           prob.Y)
    C1, D1, d1, info = _GramReadout(prob).solve(st, A, B, _solve)
    C2, D2, d2, info2 = Blocks(prob).solve_cd(X, A, B, _solve)  # (Gram as well, from X)
    # the reference: the block written out on all m samples, with CVXPY
    Cv, Dv, dv = cp.Variable((1, n)), cp.Variable((1, 2)), cp.Variable(1)
    fit = Cv @ X + Dv @ prob.U + dv[:, None] @ np.ones((1, prob.m)) - prob.Y
    ref = cp.Problem(cp.Minimize(cp.sum_squares(fit) / (2 * prob.m) + 1e-3 * cp.norm1(Cv)),
                     [cp.norm1(Cv) <= 3.0, cp.norm1(Dv) <= prob.bounds.D])
    ref.solve(solver="CLARABEL")
    want = np.hstack([Cv.value, Dv.value, dv.value[:, None]])
    assert info.certified and info2.certified and ref.status == "optimal"
    np.testing.assert_allclose(np.hstack([C1, D1, d1[:, None]]), want, atol=1e-6)
    np.testing.assert_allclose(np.hstack([C2, D2, d2[:, None]]), want, atol=1e-6)
    assert np.abs(C1).sum() <= 3.0 + 1e-7


def _equilibrium(prob, A, B, b):
    model = ImplicitModel(A, B, np.zeros((1, prob.n)), np.zeros((1, prob.p)), prob.activation,
                          b, None)
    return model.equilibrium(prob.U, tol=1e-12, max_iter=50000)[0]


def test_batch_size_m_with_identity_is_one_bcd_sweep(rng):
    """Known case: for phi = identity f*(z) = z^2/2 is its own majorizer and the squared
    loss is exact, so one epoch with batch_size = m is one BCD sweep: the X block, the
    proximal (A, B) block and the (C, D) block of Blocks, then the optimal readout."""
    U, Y = _regression(rng, m=60)
    prob = TrainingProblem(U, Y, n=5, kappa=0.5, lam=4.0, activation="identity",
                           bounds={"C": 20.0})
    n, p, m = prob.n, prob.p, prob.m
    A0 = rng.uniform(-1, 1, (n, n))
    A0 *= 0.3 / np.abs(A0).sum(axis=1, keepdims=True)
    init = prob.to_user_model(A0, 0.3 * rng.standard_normal((n, p)), rng.standard_normal(n),
                              rng.standard_normal((1, n)), rng.standard_normal((1, p)),
                              np.zeros(1))
    prox = 1.0  # rho = ||V||^2 / m: the (A, B) step is well conditioned (see below)
    res = solve_bcd_minibatch(prob, batch_size=m, epochs=1, init=init, shuffle=False,
                              ab_prox=prox, gap_tol=1e-8)
    # the reference, from the CVXPY blocks
    A, B, b, C, D, d = prob.from_user_model(init)
    lam = prob.lam0
    blocks = Blocks(prob)
    X = _equilibrium(prob, A, B, b)
    X, ix = blocks.solve_x(A, B, b, C, D, d, X, lam, _solve)
    V = np.vstack([X, prob.U, np.ones((1, m))])
    rho = prox * np.linalg.norm(V, 2) ** 2 / m
    A, B, b, ia = identity_ab_block(X, prob.U, np.hstack([A, B, b[:, None]]), rho,
                                    prob.kappa)
    assert ix.certified and ia.certified
    X = _equilibrium(prob, A, B, b)
    C, D, d, _ = blocks.solve_cd(X, A, B, _solve)
    ref = prob.to_user_model(A, B, b, C, D, d)
    # both (A, B) solves are rho-strongly convex: ||W - W*||^2 <= 2 gap / rho for each
    ab = next(r for r in res.history if r.block == "AB")
    bound = sum(np.sqrt(2 * g * max(1.0, abs(f)) / rho)
                for g, f in ((ab.gap, 2.0), (ia.gap, ia.objective)))
    assert bound < 1e-4
    for k in "AB":
        np.testing.assert_allclose(getattr(res.model, k), getattr(ref, k), rtol=0, atol=bound)
    # (C, D) is not unique here (with phi = identity, X is affine in U), its fit is
    np.testing.assert_allclose(res.model.predict(U), ref.predict(U), rtol=0, atol=1e-5)
    assert res.certificate.blocks_certified and res.certificate.readout_certified


@pytest.mark.parametrize("beta", [None, 0.5])
def test_w_step_is_the_centred_proximal_ab_block(rng, beta):
    """The W step (phi = identity: its majorizer is exact) against the CVXPY proximal (A, B)
    block with the same centred proximal term. Inputs with a large mean make the bias want
    to be large: with beta = 0.5 its box binds, and the step must fall back to the original
    coordinates (the centred ones leave b' free); the result keeps |b| <= beta."""
    m, n, p = 50, 4, 3
    U = rng.uniform(2.0, 4.0, (p, m))
    prob = TrainingProblem(U, rng.standard_normal((1, m)), n=n, kappa=0.5, lam=2.0,
                           activation="identity", bounds={"B": beta, "C": 20.0},
                           standardize=False)
    X = 10.0 + rng.standard_normal((n, m))
    W0 = 0.1 * rng.standard_normal((n, n + p + 1))
    st = _Stats(prob)
    V = st.V(X, np.arange(m))
    st.G, st.T = V @ V.T, X @ V.T
    st.Ha = divergence_anchor(prob, W0 @ V) @ V.T  # zero for phi = identity
    prox = 1e-3
    W, info = fast_w_step(prob, st.G, st.T, st.Ha, W0, prox, 1e-9, prob.lam0)
    rho = prox * np.linalg.eigvalsh(V @ V.T)[-1] / m
    A, B, b, ref = identity_ab_block(X, U, W0, rho, prob.kappa, beta)
    assert info.certified and ref.certified
    np.testing.assert_allclose(W, np.hstack([A, B, b[:, None]]), rtol=0, atol=1e-4)
    if beta is not None:
        assert np.max(np.abs(W[:, -1])) == pytest.approx(beta, abs=1e-9)  # the box binds
        assert np.all(np.abs(W[:, n:n + p]).sum(axis=1) <= beta + 1e-9)


def test_minibatch_decreases_its_majorizer_which_bounds_the_objective(rng):
    U, Y = _regression(rng, m=150)
    prob = TrainingProblem(U, Y, n=8, kappa=0.5, lam=10.0, bounds={"C": 50.0})
    res = solve_bcd_minibatch(prob, batch_size=40, epochs=3, monitor="step", seed=3)
    cert = res.certificate
    assert cert.blocks_certified and cert.readout_certified and cert.well_posed
    assert cert.monotone and cert.rejected_updates == 0
    recs = res.history
    assert [r.batch for r in recs[:4]] == [150, 38, 38, 38]  # 150 = 38 + 38 + 37 + 37
    for r in recs:
        # J re-computed on the full data by the driver; H is tracked incrementally
        assert r.objective <= r.surrogate + 1e-9 * max(1.0, abs(r.surrogate))
    for a, b_ in itertools.pairwise(recs):
        if b_.block != "restart":
            assert b_.surrogate <= a.surrogate + 1e-9 * max(1.0, abs(a.surrogate))
    starts = [r for r in recs if r.block == "restart"]
    assert all(r.surrogate == r.objective for r in starts)
    # the final model is better than its random-feature start (train RMSE, raw units)
    Yhat = res.model.predict(U)
    rmse = float(np.sqrt(np.mean((Yhat - Y) ** 2)))
    assert rmse == pytest.approx(cert.train_metric["rmse"])
    assert rmse < res.start_metric["rmse"]


def test_lam_growth_multiplies_lam_at_every_epoch_and_h_stays_monotone_within_each(rng):
    U, Y = _regression(rng, m=120)
    prob = TrainingProblem(U, Y, n=6, kappa=0.5, lam=0.5, bounds={"C": 20.0})
    res = solve_bcd_minibatch(prob, batch_size=40, epochs=3, lam_growth=4.0, monitor="step",
                              seed=1)
    np.testing.assert_array_equal(res.lam, np.full(6, 0.5 * 4.0 ** 2))
    cert = res.certificate
    assert cert.blocks_certified and cert.readout_certified and cert.monotone
    for epoch in range(3):
        recs = [r for r in res.history if r.epoch == epoch]
        assert recs[0].block == "restart" and recs[0].surrogate == recs[0].objective
        for a, b_ in itertools.pairwise(recs):
            assert b_.surrogate <= a.surrogate + 1e-9 * max(1.0, abs(a.surrogate))
        # J with this epoch's lam, recomputed from scratch by the driver, never above H
        for r in recs:
            assert r.objective <= r.surrogate + 1e-9 * max(1.0, abs(r.surrogate))
    # an epoch starts at the true equilibrium, where J is the training loss for any lam:
    # so a grown lam shows only in the later records of the epoch
    eq = dict(res.equilibrium_losses)
    assert [r.objective for r in res.history if r.block == "restart"] == \
        pytest.approx([eq[e] for e in range(3)], rel=1e-12)


def _true_objective(prob, model):
    """Cross-entropy of the model's logits on the training data, by plain numpy (its own
    equilibrium by a Picard loop): the true training objective without penalties."""
    A, B, b = model.A, model.B, model.bias_x
    X = np.zeros((A.shape[0], prob.m))
    for _ in range(5000):
        X = np.maximum(A @ X + B @ prob.U + b[:, None], 0.0)
    Z = model.C @ X + model.D @ prob.U + model.bias_y[:, None]
    return float(np.mean(logsumexp(Z, axis=0) - np.sum(prob.Y * Z, axis=0)))


def test_line_search_keeps_the_true_objective_from_rising_between_epochs(rng):
    """With line_search, every epoch ends at a point whose true objective (at its own
    equilibrium, with its own K) is below the epoch's start, and the next epoch starts
    there; the records' objectives are checked against a numpy forward pass."""
    U = rng.standard_normal((3, 150))
    labels = (U[0] * U[1] > 0).astype(int) + (U[2] > 0.8)
    prob = TrainingProblem(U, labels, n=8, loss="cross_entropy", kappa=0.5, lam=0.05,
                           bounds={"B": 5.0, "C": 5.0, "D": 5.0})
    seen = []

    def keep(rec):
        if rec.block == "LS":
            seen.append(rec)

    res = solve_bcd_minibatch(prob, batch_size=50, epochs=4, line_search=True, seed=3,
                              callback=keep)
    restarts = [r for r in res.history if r.block == "restart"]
    searches = [r for r in res.history if r.block == "LS"]
    assert [r.epoch for r in searches] == [0, 1, 2, 3] and seen == searches
    for start, ls in zip(restarts, searches, strict=True):
        assert ls.objective <= start.objective
        assert ls.accepted == (ls.line_step > 0.0) and ls.evaluations >= 1
        assert ls.line_step in (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    # the next epoch restarts at the kept point: its true objective, recomputed there
    for ls, nxt in zip(searches, restarts[1:]):
        assert nxt.objective == pytest.approx(ls.objective, rel=1e-9)
    assert searches[-1].objective < restarts[0].objective
    # the returned model's readout is re-solved at the last kept point: no worse than it
    assert _true_objective(prob, res.model) <= searches[-1].objective + 1e-7
    assert res.certificate.blocks_certified and res.certificate.readout_certified


def test_relaxation_gap_compares_objectives_with_their_penalties(rng):
    """The certificate's relaxation gap is the true objective (loss + penalties) of BCD's
    final state minus its relaxed objective (which carries the same penalties). With the
    line search the run ends at the searched point, at its true equilibrium, where the
    divergences vanish: the gap is 0, and not minus the penalty."""
    U = rng.standard_normal((3, 150))
    labels = (U[0] * U[1] > 0).astype(int) + (U[2] > 0.8)
    prob = TrainingProblem(U, labels, n=8, loss="cross_entropy", kappa=0.5, lam=0.05,
                           bounds={"B": 5.0, "C": 5.0, "D": 5.0},
                           penalties=[{"name": "l1", "weight": 0.02, "on": "CD"}])
    res = solve_bcd_minibatch(prob, batch_size=50, epochs=2, line_search=True, seed=3)
    cert = res.certificate
    searches = [r for r in res.history if r.block == "LS"]
    # the penalty is in play: the returned model's objective exceeds its loss by it
    assert cert.bcd_objective - cert.bcd_true_loss > 1e-2
    assert cert.relaxed_objective == pytest.approx(searches[-1].objective, rel=1e-9)
    assert cert.relaxation_gap == pytest.approx(0.0, abs=1e-9 * cert.relaxed_objective)
    assert "true objective of the same model" in str(cert)


def test_line_search_keeps_the_start_when_no_step_improves(rng):
    """With lam so large that the states cannot move, the second epoch's step does not
    improve the true objective at any t in 1 ... 1/8 (measured): the line search keeps
    the epoch's start, exactly."""
    U = rng.standard_normal((2, 60))
    labels = (U[0] > 0).astype(int)
    prob = TrainingProblem(U, labels, n=4, loss="cross_entropy", kappa=0.5, lam=1e6,
                           bounds={"B": 2.0, "C": 2.0, "D": 2.0})
    res = solve_bcd_minibatch(prob, batch_size=60, epochs=2, line_search=True)
    restarts = [r for r in res.history if r.block == "restart"]
    searches = [r for r in res.history if r.block == "LS"]
    for start, ls in zip(restarts, searches, strict=True):
        assert ls.objective <= start.objective
    last = searches[-1]
    assert last.line_step == 0.0 and not last.accepted and last.evaluations == 4
    assert last.objective == restarts[-1].objective


def test_with_batch_size_m_the_majorizer_is_tight_after_every_x_step(rng):
    """One batch: every anchor is refreshed by the X step, so H = J there (a check of the
    incremental bookkeeping against J computed from scratch)."""
    U, Y = _regression(rng, m=70)
    prob = TrainingProblem(U, Y, n=6, kappa=0.5, lam=5.0)
    res = solve_bcd_minibatch(prob, batch_size=70, epochs=3, monitor="step")
    xs = [r for r in res.history if r.block == "X"]
    assert len(xs) == 3
    for r in xs:
        assert r.surrogate == pytest.approx(r.objective, rel=1e-9, abs=1e-12)


def test_cross_entropy_classification(rng):
    U = rng.standard_normal((2, 90))
    labels = (U[0] * U[1] > 0).astype(int) + (U[0] > 1)
    prob = TrainingProblem(U, labels, n=6, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 5.0})
    res = solve_bcd_minibatch(prob, batch_size=30, epochs=2, monitor="step")
    assert res.certificate.blocks_certified and res.certificate.monotone
    for r in res.history:
        assert r.objective <= r.surrogate + 1e-9 * max(1.0, abs(r.surrogate))
    acc = np.mean(res.model.predict(U).argmax(0) == labels)
    assert acc == pytest.approx(res.certificate.train_metric["accuracy"])
    assert acc > np.bincount(labels).max() / 90


def test_tanh_uses_the_cvxpy_x_block_and_stays_certified(rng):
    U, Y = _regression(rng, m=40)
    prob = TrainingProblem(U, Y, n=3, kappa=0.5, lam=5.0, activation="tanh")
    res = solve_bcd_minibatch(prob, batch_size=20, epochs=1, monitor="step")
    assert res.certificate.blocks_certified and res.certificate.monotone
    assert {r.solver for r in res.history if r.block == "X"} != {"FISTA"}
    for r in res.history:
        assert r.objective <= r.surrogate + 1e-9


def test_bad_options_are_refused(rng):
    U, Y = _regression(rng, m=30)
    prob = TrainingProblem(U, Y, n=3)
    with pytest.raises(ValidationError, match=r"'batch_size' must be an integer in \[1, inf\]"):
        solve_bcd_minibatch(prob, batch_size=0)
    with pytest.raises(InputTypeError, match="'batch_size' must be an integer"):
        solve_bcd_minibatch(prob, batch_size=10.0)
    with pytest.raises(ValidationError, match="'epochs' must be an integer"):
        solve_bcd_minibatch(prob, epochs=0)
    with pytest.raises(ValidationError, match="'monitor' must be one of"):
        solve_bcd_minibatch(prob, monitor="sweep")
    with pytest.raises(ValidationError, match="'ab_prox' must be in"):
        solve_bcd_minibatch(prob, ab_prox=0.0)
    with pytest.raises(InputTypeError, match="'problem' must be a TrainingProblem"):
        solve_bcd_minibatch("cosine")
    pen = TrainingProblem(U, Y, n=3, penalties=[{"name": "l1", "weight": 1e-3, "on": "A"}])
    with pytest.raises(ValidationError, match=r"penalties \['l1'\] read A or B"):
        solve_bcd_minibatch(pen)
    with pytest.raises(ValidationError, match="'cd_prox' must be in"):
        solve_bcd_minibatch(prob, cd_prox=-1.0)
    with pytest.raises(ValidationError, match="'readout_iter' must be an integer"):
        solve_bcd_minibatch(prob, readout_iter=0)
    with pytest.raises(InputTypeError, match="'refine' must be None, a bool"):
        solve_bcd_minibatch(prob, refine="yes")
    with pytest.raises(ValidationError, match=r"'lam_growth' must be in \[1"):
        solve_bcd_minibatch(prob, lam_growth=0.5)
    with pytest.raises(ValidationError, match="'line_search'=True needs 'restart'=True"):
        solve_bcd_minibatch(prob, line_search=True, restart=False)
    with pytest.raises(InputTypeError, match="'line_search' must be a bool"):
        solve_bcd_minibatch(prob, line_search=1)


# ----------------------------------------------------------------------------------------
# The first-order (C, D) solvers of the mini-batch driver
# ----------------------------------------------------------------------------------------
def _classification(rng, m=120, p=4, q=3):
    U = rng.standard_normal((p, m))
    labels = (U[0] + 0.5 * U[1] ** 2 > 0.5).astype(int) + (U[2] > 1.0)
    return U, labels


def test_fast_k_step_is_the_proximal_gram_block(rng):
    """The proximal (C, D) step by FISTA against the same problem written in CVXPY on the
    samples themselves; the certificate bounds the distance to the CVXPY optimum."""
    from fenchel_idl.blocks.first_order import fast_k_step

    U, Y = _regression(rng, m=60, p=3)
    Y = np.vstack([Y, np.cos(U[:1])])
    prob = TrainingProblem(U, Y, n=4, bounds={"C": 0.8, "D": 0.5})
    n, p, q, m = prob.n, prob.p, prob.q, prob.m
    X = np.abs(rng.standard_normal((n, m)))
    V = np.vstack([X, prob.U, np.ones((1, m))])
    K0 = 0.1 * rng.standard_normal((q, n + p + 1))
    curv, prox = 0.5, 1e-2
    K, info = fast_k_step(prob, V @ V.T, prob.Y @ V.T, K0, curv, prox, tol=1e-10)
    rho = prox * curv * np.linalg.eigvalsh(V @ V.T)[-1] / m
    Kv = cp.Variable((q, n + p + 1))
    obj = curv / (2 * m) * cp.sum_squares(Kv @ V - prob.Y) + rho / 2 * cp.sum_squares(Kv - K0)
    cons = [cp.sum(cp.abs(Kv[:, :n]), axis=1) <= 0.8,
            cp.sum(cp.abs(Kv[:, n:n + p]), axis=1) <= 0.5]
    ref = cp.Problem(cp.Minimize(obj), cons)
    ref.solve(solver="CLARABEL")
    assert info.certified and info.solver == "FISTA"
    # the reference objective differs by the constant curv/(2m) ||Y||^2
    assert info.objective + curv / (2 * m) * np.sum(prob.Y ** 2) == pytest.approx(ref.value,
                                                                                  abs=1e-7)
    # rho-strong convexity: ||K - K*||^2 <= 2 (f - f*) / rho
    bound = np.sqrt(2 * info.gap * max(1.0, abs(info.objective)) / rho) + 1e-6
    np.testing.assert_allclose(K, Kv.value, rtol=0, atol=bound)
    assert np.abs(K[:, :n]).sum(axis=1).max() <= 0.8 + 1e-9


def _ce_block(prob, X):
    """The cross-entropy (C, D) block, in CVXPY, written out here."""
    n, p, q, m = prob.n, prob.p, prob.q, prob.m
    Kv = cp.Variable((q, n + p + 1))
    V = np.vstack([X, prob.U, np.ones((1, m))])
    Z = Kv @ V
    f = (cp.sum(cp.log_sum_exp(Z, axis=0)) - cp.sum(cp.multiply(prob.Y, Z))) / m
    cons = [cp.sum(cp.abs(Kv[:, :n]), axis=1) <= prob.bounds.C,
            cp.sum(cp.abs(Kv[:, n:n + p]), axis=1) <= prob.bounds.D]
    ref = cp.Problem(cp.Minimize(f), cons)
    ref.solve(solver="CLARABEL")
    assert ref.status == "optimal"
    return ref.value, V


def test_dual_lower_bound_of_the_cross_entropy_readout_is_never_above_the_optimum(rng):
    """Sampling: the Fenchel-dual bound from any softmax outputs P (not only optimal ones)
    is at most the optimum that Clarabel finds."""
    from fenchel_idl.blocks.first_order import ce_readout_lower_bound

    U, labels = _classification(rng)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", bounds={"C": 2.0, "D": 1.0})
    X = np.abs(rng.standard_normal((prob.n, prob.m)))
    opt, V = _ce_block(prob, X)
    for scale in (0.0, 0.3, 1.0, 3.0, 10.0):
        for _ in range(5):
            P = softmax(scale * rng.standard_normal((prob.q, prob.m)), axis=0)
            assert ce_readout_lower_bound(prob, V, prob.Y, P) <= opt + 1e-9


def test_fast_ce_readout_reaches_the_cvxpy_optimum_with_its_certificate(rng):
    from fenchel_idl.blocks.first_order import fast_ce_readout

    U, labels = _classification(rng)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", bounds={"C": 2.0, "D": 1.0})
    X = np.abs(rng.standard_normal((prob.n, prob.m)))
    opt, _ = _ce_block(prob, X)
    K, info = fast_ce_readout(prob, X, tol=1e-8)
    assert info.certified and info.gap <= 1e-8
    # primal value within the certified gap of the optimum (and never below it)
    assert opt - 1e-7 <= info.objective <= opt + 1e-8 * max(1.0, opt) + 1e-7
    # from 0 instead of the least-squares start: the same optimum
    _, zero = fast_ce_readout(prob, X, K0=np.zeros_like(K), tol=1e-8)
    assert zero.certified and abs(zero.objective - info.objective) <= 2e-8 * max(1.0, opt)
    # the fixed step of Boehning's bound (the benchmark's baseline): the same optimum, in
    # more iterations than the backtracking default
    _, fixed = fast_ce_readout(prob, X, tol=1e-8, backtracking=False)
    assert fixed.certified and abs(fixed.objective - info.objective) <= 2e-8 * max(1.0, opt)
    # a budget too small is reported as such, never as optimal
    _, short = fast_ce_readout(prob, X, tol=1e-12, max_iter=3)
    assert not short.certified and short.status == "optimal_inaccurate"
    assert "duality gap" in short.note


def test_a_readout_without_a_start_begins_at_the_projected_least_squares_fit(rng):
    """K0 = None: FISTA starts from the least-squares fit of the one-hot labels on the
    centred features (numpy's lstsq), projected onto the balls; a random-feature start's
    readout (C = D = 0, d = 0) is such a readout."""
    from fenchel_idl.blocks import first_order as fb
    from fenchel_idl.blocks.block_solvers import SolvePolicy, make_block_solvers
    from fenchel_idl.drivers.state import initial_state

    U, labels = _classification(rng)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", bounds={"C": 0.1, "D": 0.1})
    X = np.abs(rng.standard_normal((prob.n, prob.m)))
    V = np.vstack([X, prob.U])
    V = np.vstack([V - V.mean(axis=1, keepdims=True), np.ones((1, prob.m))])
    ls = np.linalg.lstsq(V.T, prob.Y.T, rcond=None)[0].T
    assert np.abs(ls[:, :prob.n]).sum(axis=1).max() > 0.1  # the projection does something
    start = fb._least_squares_start(prob, V, prob.Y)
    np.testing.assert_allclose(start, fb.readout_projector(prob)(ls), atol=1e-6)
    starts = []
    real = fb.fast_ce_readout

    def spy(problem, X, K0=None, **kw):
        starts.append(K0)
        return real(problem, X, K0, **kw)

    big = TrainingProblem(*_classification(rng, m=2000), n=8, loss="cross_entropy")
    assert fb.ce_program_size(big) > fb._CE_FISTA_MIN_SIZE  # the first-order readout
    solvers = make_block_solvers(big, SolvePolicy(big.cone))
    s = initial_state(big)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fb, "fast_ce_readout", spy)
        s, info = solvers.CD.solve(s)
        solvers.CD.solve(s)
    assert starts[0] is None and starts[1] is not None  # a readout to start from: its own
    assert info.certified


def test_wide_readouts_run_on_the_wide_blas_limit_with_the_same_optimum(rng, monkeypatch):
    """Past _CE_WIDE_MIN entries of features the readout's products run on every core (or
    on FENCHEL_IDL_BLAS_THREADS when it is set); the threads change nothing but rounding."""
    from threadpoolctl import threadpool_info

    import fenchel_idl.blocks.first_order as fb
    from fenchel_idl._blas import blas_threads, wide_blas_limit

    U, labels = _classification(rng)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", bounds={"C": 2.0, "D": 1.0})
    X = np.abs(rng.standard_normal((prob.n, prob.m)))
    seen = []
    solve = fb._ce_fista

    def spy(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return solve(*args, **kwargs)

    monkeypatch.setattr(fb, "_ce_fista", spy)
    with blas_threads(1):
        _, narrow = fb.fast_ce_readout(prob, X, tol=1e-8)
        monkeypatch.setattr(fb, "_CE_WIDE_MIN", 0)
        monkeypatch.delenv("FENCHEL_IDL_BLAS_THREADS", raising=False)
        _, wide = fb.fast_ce_readout(prob, X, tol=1e-8)
        monkeypatch.setenv("FENCHEL_IDL_BLAS_THREADS", "1")
        assert wide_blas_limit() == 1
        fb.fast_ce_readout(prob, X, tol=1e-8)
    assert wide_blas_limit() == 1
    monkeypatch.delenv("FENCHEL_IDL_BLAS_THREADS")
    assert wide_blas_limit() == (os.cpu_count() or 1)
    with blas_threads(os.cpu_count() or 1):  # what the pools allow (they cap the limit)
        allowed = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert seen == [{1}, allowed, {1}]
    assert wide.certified and narrow.certified
    assert wide.objective == pytest.approx(narrow.objective, rel=1e-9)


def test_large_cross_entropy_problems_use_the_first_order_readout(rng, monkeypatch):
    """Past _CE_FISTA_MIN_SIZE the start and final readouts are FISTA (the rule of
    fast_blocks.ce_readout, as in solve_bcd); the final one is certified and optimal for the
    final (A, B), as Clarabel's block confirms."""
    import fenchel_idl.blocks.first_order as fb

    monkeypatch.setattr(fb, "_CE_FISTA_MIN_SIZE", 0)
    U, labels = _classification(rng, m=90)
    prob = TrainingProblem(U, labels, n=6, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 3.0, "D": 2.0})
    res = solve_bcd_minibatch(prob, batch_size=30, epochs=2, gap_tol=1e-7)
    cert = res.certificate
    assert cert.blocks_certified and cert.readout_certified and cert.monotone
    assert {r.solver for r in res.history if r.block in ("AB", "CD")} == {"FISTA"}
    A, B, b, C, D, d = prob.from_user_model(res.model)
    X = _equilibrium(prob, A, B, b)
    opt, _ = _ce_block(prob, X)
    assert cert.true_loss == pytest.approx(opt, abs=1e-6)


def test_refinement_after_minibatch_bcd(rng):
    U, Y = _regression(rng, m=60)
    prob = TrainingProblem(U, Y, n=5, kappa=0.5, lam=5.0)
    res = solve_bcd_minibatch(prob, batch_size=30, epochs=1,
                              refine={"epochs": 20, "lr": 1e-2, "batch_size": 20})
    assert res.refine_history is not None
    assert res.certificate.refined and not res.certificate.readout_certified
    Yhat = res.model.predict(U)
    rmse = float(np.sqrt(np.mean((Yhat - Y) ** 2)))
    assert rmse == pytest.approx(res.certificate.train_metric["rmse"])
    assert res.certificate.well_posed


# ----------------------------------------------------------------------------------------
# Problem files with [minibatch]
# ----------------------------------------------------------------------------------------
_MB_FILE = """
name = "mb"
seed = 0
[data]
source = "cosine"
m = 120
[model]
n = 8
kappa = 0.5
[training]
lam = 5.0
[minibatch]
batch_size = 40
epochs = 2
"""


def test_problem_file_with_minibatch_runs_and_writes_its_results(tmp_path):
    from fenchel_idl.apps.run import run_problem

    path = tmp_path / "mb.toml"
    path.write_text(_MB_FILE)
    res, summary = run_problem(path, tmp_path / "out", progress=False)
    assert res.n_sweeps == 2 and {r.block for r in res.history} == {"restart", "X", "AB",
                                                                      "CD"}
    assert res.certificate.blocks_certified and res.certificate.monotone
    assert summary["train"]["rmse"] == pytest.approx(res.certificate.train_metric["rmse"])
    for name in ("model.npz", "history.json", "certificate.json", "convergence.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # --max-sweeps sets the epochs
    res1, _ = run_problem(path, None, progress=False, max_sweeps=1)
    assert res1.n_sweeps == 1


def test_problem_file_with_the_epoch_line_search_writes_its_results(tmp_path):
    """[minibatch] line_search = true: the run writes every result, its history holds one
    "LS" record per epoch with its step and true objective, and the convergence plot draws
    them (a search record is not a full-batch sweep record)."""
    from fenchel_idl.apps.run import run_problem

    path = tmp_path / "mb.toml"
    path.write_text(_MB_FILE + "line_search = true\n")
    res, _ = run_problem(path, tmp_path / "out", progress=False)
    searches = [r for r in res.history if r.block == "LS"]
    assert [r.epoch for r in searches] == [0, 1]
    assert all(r.line_step is not None and r.evaluations >= 1 for r in searches)
    for name in ("model.npz", "history.json", "certificate.json", "convergence.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    rows = history if isinstance(history, list) else history["history"]
    assert [r["line_step"] for r in rows if r["block"] == "LS"] == \
        [r.line_step for r in searches]


@pytest.mark.parametrize("extra, match", [
    ("batch_size = 0\n", r"'batch_size' must be an integer in \[1, inf\]"),
    ("shuffle = 1\n", r"'shuffle' must be true or false"),
    ("cd_prox = -1.0\n", r"'cd_prox' must be in"),
    ("ab_prox = 0.01\n", r"\[minibatch\] 'ab_prox' is a \[training\] key"),
    ("lam_growth = 0.9\n", r"'lam_growth' must be in \[1"),
    ("line_search = true\nrestart = false\n", r"'line_search' = true needs 'restart'"),
    ("sweeps = 3\n", r"\[minibatch\] keys must be among"),
])
def test_bad_minibatch_tables_are_refused_before_any_work(tmp_path, extra, match):
    from fenchel_idl.drivers.problem_file import load_problem

    path = tmp_path / "bad.toml"
    path.write_text(_MB_FILE.replace("batch_size = 40\n", "") + extra)
    with pytest.raises(ValidationError, match=match):
        load_problem(path)


def test_minibatch_refuses_a_schedule_and_a_checkpoint(tmp_path):
    from fenchel_idl.apps.run import run_problem
    from fenchel_idl.drivers.problem_file import load_problem

    path = tmp_path / "s.toml"
    path.write_text(_MB_FILE + "[schedule]\nrestart = false\n")
    with pytest.raises(ValidationError, match=r"\[schedule\] is for full-batch BCD"):
        load_problem(path)
    path.write_text(_MB_FILE)
    with pytest.raises(ValidationError, match="checkpoint/resume is for full-batch BCD"):
        run_problem(path, None, progress=False, checkpoint=tmp_path / "ck")


def test_the_full_mnist_problem_file_trains_on_every_image_in_batches():
    from pathlib import Path

    from fenchel_idl.drivers.problem_file import load_problem

    spec = load_problem(Path(__file__).resolve().parents[2] / "problems" / "mnist.toml")
    assert "n" not in spec.data and spec.data["source"] == "mnist"  # all 60,000 images
    assert spec.minibatch["batch_size"] < 60000 and spec.refine["epochs"] >= 1


def test_train_spec_trains_a_minibatch_file_as_solve_bcd_minibatch_does(tmp_path):
    from fenchel_idl import solve_bcd_minibatch
    from fenchel_idl.drivers.problem_file import build_problem, load_data, load_problem, train_spec

    path = tmp_path / "mb.toml"
    path.write_text(_MB_FILE)
    spec = load_problem(path)
    problem = build_problem(spec, load_data(spec)[0])
    res = train_spec(spec, problem, max_sweeps=1, seed=3)
    # the same run, stated by hand from the file: batches of 40, one epoch, seed 3
    ref = solve_bcd_minibatch(problem, batch_size=40, epochs=1, seed=3)
    assert res.n_sweeps == 1 and all(r.epoch == 0 for r in res.history)
    for name in ("A", "B", "C", "D", "bias_x", "bias_y"):
        np.testing.assert_array_equal(getattr(res.model, name), getattr(ref.model, name))
    with pytest.raises(ValidationError, match="checkpoint/resume is for full-batch BCD"):
        train_spec(spec, problem, resume=True)
