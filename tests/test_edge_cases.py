"""Edge cases of training and prediction: none may crash, and each gets a clear warning
where one is due (a NumericalWarning for numerically delicate settings, as errors.py says:
"badly scaled, kappa near 1"; a ConvergenceWarning when an iteration stops early).

Every problem is tiny (n <= 4, m <= 24) and runs a few sweeps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.analysis.robustness import state_bounds
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import ConvergenceWarning, NumericalWarning
from fenchel_idl.problem.training_problem import TrainingProblem

M = 20
_rng = np.random.default_rng(2024)
U0 = _rng.uniform(-1.0, 1.0, (2, M))
Y0 = np.sin(2.0 * U0[0:1]) + 0.5 * U0[1:2] ** 2
LAB0 = (U0[0] > 0).astype(int)


def train(U, Y, *, n=3, kappa=0.5, loss="squared", max_sweeps=3, standardize=True, **kw):
    """Train a tiny problem; return (result, list of warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = TrainingProblem(U, Y, n=n, kappa=kappa, loss=loss, standardize=standardize)
        res = solve_bcd(problem, max_sweeps=max_sweeps, seed=0, **kw)
    return problem, res, caught


def check_sound(problem, res, U):
    """The result is a usable, certified, well-posed model with finite predictions."""
    model = res.model
    assert isinstance(model, ImplicitModel)
    assert (model.n, model.p, model.q) == (problem.n, problem.p, problem.q)
    cert = res.certificate
    assert cert.well_posed
    assert cert.norm_inf <= problem.kappa + 1e-9
    assert np.isfinite(cert.true_loss) and np.isfinite(cert.relaxed_objective)
    P = model.predict(U)
    assert P.shape == (problem.q, U.shape[1])
    assert np.all(np.isfinite(P))
    for v in cert.train_metric.values():
        assert np.isfinite(v)
    return P


def categories(caught):
    return [w.category for w in caught]


def _issubclass_any(cats, cls):
    return any(issubclass(c, cls) for c in cats)


@pytest.fixture(scope="module")
def base():
    problem, res, caught = train(U0, Y0)
    return problem, res, caught


def test_baseline_trains_without_warnings(base):
    problem, res, caught = base
    check_sound(problem, res, U0)
    assert res.certificate.blocks_certified
    ours = [w for w in caught if not issubclass(w.category, (DeprecationWarning,
                                                              PendingDeprecationWarning))]
    assert ours == [], [str(w.message) for w in ours]


# -- kappa close to 1 ------------------------------------------------------------------------

def test_kappa_close_to_one_trains():
    problem, res, _ = train(U0, Y0, kappa=0.999)
    check_sound(problem, res, U0)
    assert res.certificate.pf_eigenvalue < 1.0


def test_kappa_close_to_one_warns():
    with pytest.warns(NumericalWarning, match="kappa"):
        TrainingProblem(U0, Y0, n=3, kappa=0.999)


def test_prediction_near_the_well_posedness_limit_converges_or_warns():
    """||A||_inf = 0.999 on a cycle: Picard contracts at rate 0.999, so 2000 iterations do
    not reach 1e-9. The result must then carry a ConvergenceWarning, never a silent error."""
    n = 4
    A = 0.999 * np.roll(np.eye(n), 1, axis=1)
    model = ImplicitModel(A=A, B=np.ones((n, 1)), C=np.ones((1, n)), D=np.zeros((1, 1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X, info = model.equilibrium(np.array([1.0]))
    exact = np.full(n, 1.0 / (1.0 - 0.999))
    if info.converged:
        np.testing.assert_allclose(X, exact, rtol=1e-6)
    else:
        assert _issubclass_any(categories(caught), ConvergenceWarning)
        assert np.all(np.isfinite(X))
    X2, info2 = model.equilibrium(np.array([1.0]), method="anderson", max_iter=20000)
    assert info2.converged
    np.testing.assert_allclose(X2, exact, rtol=1e-6)
    sb = state_bounds(model, 0.1)  # the bound is finite and valid close to the limit
    assert np.all(np.isfinite(sb.sigma_x)) and np.all(sb.sigma_x >= 0.1 / (1 - 0.999) - 1e-6)


# -- badly scaled data ---------------------------------------------------------------------

def test_badly_scaled_data_is_standardized_exactly(base):
    """Features ~1e6 and targets ~1e6: standardization makes the problem identical to the
    unscaled one, so the trained predictions scale exactly."""
    _, res0, _ = base
    problem, res, caught = train(U0 * 1e6, Y0 * 1e6)
    P = check_sound(problem, res, U0 * 1e6)
    np.testing.assert_allclose(P, res0.model.predict(U0) * 1e6, rtol=1e-6, atol=1e-6 * 1e6)
    assert not _issubclass_any(categories(caught), NumericalWarning), \
        "standardized data are not delicate: no warning is due"


def test_mixed_feature_scales_are_standardized(base):
    """One feature ~1e6, the other ~1e-6: standardization must make this the unscaled
    problem exactly."""
    _, res0, _ = base
    scale = np.array([[1e6], [1e-6]])
    problem, res, _ = train(U0 * scale, Y0)
    P = check_sound(problem, res, U0 * scale)
    np.testing.assert_allclose(P, res0.model.predict(U0), rtol=1e-6, atol=1e-8)


def test_badly_scaled_data_without_standardization_trains():
    problem, res, _ = train(U0 * 1e6, Y0, standardize=False)
    check_sound(problem, res, U0 * 1e6)


def test_badly_scaled_data_without_standardization_warns():
    with pytest.warns(NumericalWarning, match="scal"):
        TrainingProblem(U0 * 1e6, Y0, n=3, standardize=False)


# -- degenerate data -----------------------------------------------------------------------

@pytest.mark.parametrize("standardize", [True, False])
def test_all_zero_inputs(standardize):
    """No information in U: the best model predicts the mean of Y (with the output bias)."""
    U = np.zeros((2, M))
    problem, res, _ = train(U, Y0, standardize=standardize)
    P = check_sound(problem, res, U)
    np.testing.assert_allclose(P, np.full_like(P, Y0.mean()), atol=1e-4)


def test_duplicate_samples():
    U = np.repeat(U0[:, :5], 4, axis=1)
    Y = np.repeat(Y0[:, :5], 4, axis=1)
    problem, res, _ = train(U, Y)
    P = check_sound(problem, res, U)
    # the four copies of a sample get identical predictions
    for j in range(5):
        np.testing.assert_allclose(P[:, 4 * j:4 * j + 4], P[:, [4 * j]] * np.ones((1, 4)),
                                   rtol=0, atol=1e-12)


def test_single_sample():
    problem, res, _ = train(U0[:, :1], Y0[:, :1])
    P = check_sound(problem, res, U0[:, :1])
    np.testing.assert_allclose(P, Y0[:, :1], atol=1e-6)


def test_single_sample_one_dimensional_inputs():
    problem, res, _ = train(np.array([0.3]), np.array([1.5]))
    check_sound(problem, res, np.array([[0.3]]))


def test_constant_targets():
    Y = np.full((1, M), 2.5)
    problem, res, _ = train(U0, Y)
    P = check_sound(problem, res, U0)
    np.testing.assert_allclose(P, Y, atol=1e-6)


def test_one_state():
    problem, res, _ = train(U0, Y0, n=1)
    check_sound(problem, res, U0)
    assert res.model.A.shape == (1, 1)
    assert abs(res.model.A[0, 0]) <= 0.5 + 1e-9


def test_one_state_with_kappa_close_to_one():
    problem, res, _ = train(U0, Y0, n=1, kappa=0.999)
    check_sound(problem, res, U0)


# -- classification with a class that never occurs ------------------------------------------

@pytest.fixture(scope="module")
def missing_class():
    labels = np.where(LAB0 == 1, 2, 0)  # classes 0 and 2 only
    return labels, train(U0, labels, loss="cross_entropy", max_sweeps=2)


def test_class_that_never_occurs_trains(missing_class):
    _, (problem, res, _) = missing_class
    assert problem.q == 3
    P = check_sound(problem, res, U0)
    pred = P.argmax(axis=0)
    assert not np.any(pred == 1), "a class without samples must not be predicted"
    assert res.certificate.train_metric["accuracy"] >= 0.9


def test_class_that_never_occurs_as_one_hot_rows():
    labels = np.where(LAB0 == 1, 2, 0)
    Y = np.zeros((3, M))
    Y[labels, np.arange(M)] = 1.0
    problem, res, _ = train(U0, Y, loss="cross_entropy", max_sweeps=1)
    assert problem.q == 3
    check_sound(problem, res, U0)


def test_class_that_never_occurs_warns():
    labels = np.where(LAB0 == 1, 2, 0)
    with pytest.warns(UserWarning, match=r"class.*1"):
        TrainingProblem(U0, labels, n=3, loss="cross_entropy")


def test_single_class_labels():
    problem, res, _ = train(U0, np.zeros(M, dtype=int), loss="cross_entropy", max_sweeps=1)
    assert problem.q == 2
    P = check_sound(problem, res, U0)
    assert np.all(P.argmax(axis=0) == 0)


# -- prediction edge cases -------------------------------------------------------------------

def test_predict_with_no_samples(base):
    _, res, _ = base
    P = res.model.predict(np.zeros((2, 0)))
    assert P.shape == (1, 0)


def test_predict_on_extreme_inputs_is_finite(base):
    _, res, _ = base
    U = np.array([[1e8, -1e8, 0.0], [-1e8, 1e8, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow inside the solver
        P = res.model.predict(U)
    assert np.all(np.isfinite(P))
