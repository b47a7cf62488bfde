"""Section 7.3: every attack stays inside its set, and picks what an independent numpy
re-derivation says it should."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.neural_network import MLPClassifier

from fenchel_idl import ImplicitModel, from_mlp
from fenchel_idl.analysis.attacks import (
    AttackTable,
    attack_success_rate,
    attack_table,
    gradient_attack,
    lp_attack,
    save_attack_figure,
    sensitivity_attack,
    sensitivity_scores,
)
from fenchel_idl.errors import ShapeError, ValidationError
from tests.helpers import random_model


@pytest.fixture(scope="module")
def digits_net():
    """A small ReLU MLP on scikit-learn's 8x8 digits (pixels scaled to [0, 1])."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        mlp = MLPClassifier((24,), max_iter=200, random_state=0).fit(X[:1200], y[:1200])
    return from_mlp(mlp), X[1200:1400].T.copy(), y[1200:1400]


def in_set(U0, U, sigma, k=None, input_range=None):
    W = U - U0
    ok = np.all(np.abs(W) <= np.broadcast_to(np.atleast_1d(sigma)[:, None]
                                             if np.ndim(sigma) else sigma, W.shape) + 1e-12)
    if k is not None:
        ok &= bool(np.all(np.count_nonzero(W, axis=0) <= k))
    if input_range is not None:
        ok &= bool(np.all((U >= input_range[0]) & (U <= input_range[1])))
    return ok


# -- sensitivity attack ---------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 6), values=st.sampled_from(
    ["random", "extreme"]), rng_on=st.booleans())
def test_sensitivity_attack_stays_in_set(seed, k, values, rng_on):
    rng = np.random.default_rng(seed)
    m = random_model(rng, n=7, p=6, kappa=0.8)
    rr = (0.0, 1.0) if rng_on else None
    U = rng.uniform(0, 1, (6, 9))
    sigma = rng.uniform(0, 0.7, 6)
    res = sensitivity_attack(m, U, sigma, k=k, input_range=rr, values=values, seed=seed)
    assert res.U.shape == U.shape and res.k == k and res.method == "sensitivity"
    assert in_set(U, res.U, sigma, k, rr)
    assert np.all(res.changed.sum(axis=0) == k)
    assert np.all(res.U[~res.changed] == U[~res.changed])


def test_sensitivity_attack_picks_the_most_sensitive_inputs(rng):
    m = random_model(rng, n=8, p=10, q=3, kappa=0.7)
    S = np.abs(m.C) @ np.linalg.inv(np.eye(8) - np.abs(m.A)) @ np.abs(m.B) + np.abs(m.D)
    U = rng.standard_normal((10, 4))
    res = sensitivity_attack(m, U, 0.5, k=3, seed=0)
    expected = set(np.argsort(-S.sum(axis=0))[:3])
    for j in range(4):
        assert set(np.flatnonzero(res.changed[:, j])) == expected
    np.testing.assert_allclose(res.scores, S.sum(axis=0), rtol=1e-10)
    res = sensitivity_attack(m, U, 0.5, k=2, target=1, seed=0)
    assert set(np.flatnonzero(res.changed[:, 0])) == set(np.argsort(-S[1])[:2])
    np.testing.assert_allclose(sensitivity_scores(m, [0.0, 2.0, 1.0]), 2 * S[1] + S[2])
    # fraction: 30% of 10 inputs is 3; the same seed gives the same attack
    a = sensitivity_attack(m, U, 0.5, fraction=0.3, seed=7)
    b = sensitivity_attack(m, U, 0.5, k=3, seed=7)
    assert a.k == 3 and np.array_equal(a.U, b.U)
    one = sensitivity_attack(m, U[:, 0], 0.5, k=2, values="extreme")
    assert one.U.shape == (10,)
    assert np.allclose(np.abs(one.U - U[:, 0])[one.changed], 0.5)


def test_sensitivity_attack_errors(rng):
    m = random_model(rng, n=5, p=4)
    U = rng.uniform(0, 1, (4, 3))
    with pytest.raises(ValidationError, match="give exactly one of 'k'.*and 'fraction'"):
        sensitivity_attack(m, U, 0.1)
    with pytest.raises(ValidationError, match="give exactly one of 'k'"):
        sensitivity_attack(m, U, 0.1, k=1, fraction=0.5)
    with pytest.raises(ValidationError, match=r"'k' must be an integer in \[1, 4\]; got 5"):
        sensitivity_attack(m, U, 0.1, k=5)
    with pytest.raises(ValidationError, match=r"'fraction' must be in \(0.0, 1.0\]; got 0"):
        sensitivity_attack(m, U, 0.1, fraction=0)
    with pytest.raises(ValidationError, match=r"'U' must lie in input_range \[0.0, 1.0\]"):
        sensitivity_attack(m, U + 1, 0.1, k=1, input_range=(0.0, 1.0))
    with pytest.raises(ValidationError, match="'sigma_u' must be nonnegative"):
        sensitivity_attack(m, U, [0.1, -1, 0, 0], k=1)
    with pytest.raises(ShapeError, match=r"'U' must have 4 rows"):
        sensitivity_attack(m, U.T, 0.1, k=1)
    with pytest.raises(ValidationError, match=r"'target' must be an integer in \[0, 2\]"):
        sensitivity_attack(m, U, 0.1, k=1, target=3)
    with pytest.raises(ValidationError, match="'values' must be one of"):
        sensitivity_attack(m, U, 0.1, k=1, values="big")


# -- gradient attack ------------------------------------------------------------------------

def ce_loss(m, u, label):
    y = m.predict(u, tol=1e-13, max_iter=100000)
    return logsumexp(y) - y[label]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradient_saliency_matches_finite_differences(rng, activation):
    m = random_model(rng, n=6, p=5, q=3, kappa=0.6, activation=activation)
    U = rng.standard_normal((5, 2))
    labels = np.array([0, 2])
    res = gradient_attack(m, U, labels, 0.1, k=2, seed=0)
    h = 1e-6
    for j in range(2):
        fd = np.array([(ce_loss(m, U[:, j] + h * e, labels[j])
                        - ce_loss(m, U[:, j] - h * e, labels[j])) / (2 * h) for e in np.eye(5)])
        # input_gradient averages the loss over the m = 2 samples
        np.testing.assert_allclose(2 * res.scores[:, j], np.abs(fd), rtol=1e-5, atol=1e-7)
        assert set(np.flatnonzero(res.changed[:, j])) == set(np.argsort(-np.abs(fd))[:2])
    assert in_set(U, res.U, 0.1, 2)


def test_gradient_attack_per_sample_and_errors(digits_net):
    m, U, y = digits_net
    res = gradient_attack(m, U[:, :20], y[:20], 1.0, fraction=0.1, input_range=(0.0, 1.0),
                          seed=1)
    assert res.k == 6 and res.scores.shape == (64, 20)
    assert in_set(U[:, :20], res.U, 1.0, 6, (0.0, 1.0))
    assert not np.all(res.changed == res.changed[:, :1])  # data-dependent choice
    sq = gradient_attack(m, U[:, :3], np.eye(10)[:, y[:3]], 0.2, k=3, loss="squared", seed=0)
    assert in_set(U[:, :3], sq.U, 0.2, 3)
    with pytest.raises(ValidationError, match=r"'Y' labels must lie in \[0, 10\)"):
        gradient_attack(m, U[:, :2], np.array([0, 10]), 0.1, k=1)
    with pytest.raises(ShapeError, match=r"'Y' labels must have shape \(2,\)"):
        gradient_attack(m, U[:, :2], np.array([0, 1, 2]), 0.1, k=1)
    with pytest.raises(ValidationError, match="'loss' must be one of"):
        gradient_attack(m, U[:, :2], y[:2], 0.1, k=1, loss="hinge")


# -- LP attack ------------------------------------------------------------------------------

def test_lp_attack_margin_dense_and_sparse(digits_net):
    m, U, _ = digits_net
    pred = np.argmax(m.predict(U[:, :2]), axis=0)
    for k, sigma in ((None, 0.15), (4, 1.0)):
        res = lp_attack(m, U[:, :2], sigma, target="any", k=k, input_range=(0.0, 1.0))
        assert res.method == "lp" and len(res.lp) == 2
        assert in_set(U[:, :2], res.U, sigma, k, (0.0, 1.0))
        Y = m.predict(res.U)
        for j, rec in enumerate(res.lp):
            # value is the true margin y_t - y_pred at the attack for the chosen target t
            margins = Y[:, j] - Y[pred[j], j]
            assert np.any(np.isclose(np.delete(margins, pred[j]), rec.value, atol=1e-7))
            assert rec.value <= rec.bound + 1e-7
            if rec.value > 0:
                assert np.argmax(Y[:, j]) != pred[j]
    one = lp_attack(m, U[:, 0], 0.1, target="runner_up", input_range=(0.0, 1.0))
    assert one.U.shape == (64,) and len(one.lp) == 1


def test_lp_attack_state_objectives(rng):
    m = random_model(rng, n=5, p=3, kappa=0.6)
    U = rng.standard_normal((3, 2))
    c = rng.standard_normal(5)
    res = lp_attack(m, U, 0.3, c=c, k=1)
    assert in_set(U, res.U, 0.3, 1)
    assert [r.objective for r in res.lp] == ["linear", "linear"]
    disc = lp_attack(m, U[:, 0], 0.3)  # the paper's choice: largest state discrepancy
    assert disc.lp[0].objective == "discrepancy"
    assert in_set(U[:, :1], disc.U[:, None], 0.3)
    with pytest.raises(ValidationError, match="at most one of 'c'.*and 'target'"):
        lp_attack(m, U, 0.3, c=c, target=0)
    with pytest.raises(ValidationError, match="'target' must be one of"):
        lp_attack(m, U, 0.3, target="all")
    with pytest.raises(ValidationError, match="needs the ReLU activation"):
        lp_attack(random_model(rng, n=5, p=3, activation="tanh"), U, 0.3, c=c)


# -- Table 1 and the figures ----------------------------------------------------------------

def test_attack_success_rate_by_hand():
    m = ImplicitModel(A=[[0.0]], B=[[0.0, 0.0]], C=[[0.0], [0.0]], D=[[1.0, 0.0], [0.0, 1.0]])
    U0 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # predictions 0, 1, 0
    U1 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # predictions 0, 1, 1
    assert attack_success_rate(m, U0, U1, np.array([0, 0, 0])) == pytest.approx(0.5)
    assert np.isnan(attack_success_rate(m, U0, U1, np.array([1, 0, 1])))


def test_attack_table_layout(digits_net):
    m, U, y = digits_net
    table = attack_table({"digits": (m, U, y), "again": (m, U[:, :50], y[:50])}, seed=0)
    assert isinstance(table, AttackTable)
    assert table.sensitivity.shape == (5, 2) == table.gradient.shape
    assert np.all((table.sensitivity >= 0) & (table.sensitivity <= 1))
    assert table.k[:, 0].tolist() == [1, 1, 6, 13, 19]
    md = table.to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith("| % of perturbed inputs | Sensitivity: digits")
    assert "Gradient: again" in lines[0]
    assert [ln.split(" ")[1] for ln in lines[2:7]] == ["0.1%", "1%", "10%", "20%", "30%"]
    assert "clean accuracy" in md and str(table) == md
    # more perturbed pixels: the attack does not get weaker on average
    assert table.sensitivity[-1, 0] >= table.sensitivity[0, 0]
    with pytest.raises(ValidationError, match="non-empty mapping"):
        attack_table({})


def test_save_attack_figure(tmp_path, digits_net):
    m, U, _ = digits_net
    res = sensitivity_attack(m, U[:, :4], 1.0, k=5, input_range=(0.0, 1.0), seed=0)
    out = save_attack_figure(U[:, :4], res.U, tmp_path / "fig" / "a.png", image_shape=(8, 8),
                             captions_clean=list("abcd"), title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShapeError, match="'image_shape'"):
        save_attack_figure(U[:, :4], res.U, tmp_path / "b.png")
    with pytest.raises(ShapeError, match="must have the same shape"):
        save_attack_figure(U[:, :4], res.U[:, :3], tmp_path / "b.png", image_shape=(8, 8))


