"""The scikit-learn estimators: scikit-learn's own checks, composition, and real fits."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fenchel_idl.drivers.estimators import ImplicitClassifier, ImplicitRegressor
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.problem import datasets

# Small instances keep the ~110 checks (each one or more fits) to about a minute: every fit
# builds and solves real convex blocks, so the work is cut through hyperparameters, never
# by skipping checks. random_state fixes the random-feature start, so repeated fits agree.
CHECKED = [ImplicitRegressor(n_states=3, max_sweeps=2, random_state=0),
           ImplicitClassifier(n_states=3, max_sweeps=2, random_state=0)]


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, centers=3, n_features=4, random_state=0)
    return X, y


# -- composition ------------------------------------------------------------------------------

def test_pipeline_regression():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (80, 3)) * np.array([1.0, 100.0, 0.01])
    y = np.abs(X[:, 0]) + X[:, 1] / 100.0
    pipe = make_pipeline(StandardScaler(), ImplicitRegressor(n_states=5, max_sweeps=3,
                                                             random_state=0))
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (80,)
    assert pipe.score(X, y) > 0.8


def test_grid_search_classifier(blobs):
    X, y = blobs
    grid = GridSearchCV(ImplicitClassifier(max_sweeps=1, random_state=0),
                        {"n_states": [2, 4], "kappa": [0.3, 0.6]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["n_states"] in (2, 4)
    assert grid.best_estimator_.model_.n == grid.best_params_["n_states"]
    assert grid.score(X, y) > 0.9


# -- real fits --------------------------------------------------------------------------------

def test_digits_subset_beats_trivial_baseline():
    train, test = datasets.train_test_split(datasets.digits(n=300, seed=0), 0.3, seed=0)
    clf = ImplicitClassifier(n_states=8, max_sweeps=1, random_state=0)
    clf.fit(train.X_rows, train.y_rows)
    trivial = DummyClassifier().fit(train.X_rows, train.y_rows).score(test.X_rows, test.y_rows)
    acc = clf.score(test.X_rows, test.y_rows)
    assert trivial < 0.15
    assert acc > 0.8
    assert clf.certificate_.well_posed
    assert clf.classes_.tolist() == list(range(10))


def test_predict_proba_and_decision_function(blobs):
    X, y = blobs
    clf = ImplicitClassifier(n_states=4, max_sweeps=2, random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, atol=1e-12)
    dec = clf.decision_function(X)
    assert dec.shape == (120, 3)
    np.testing.assert_array_equal(clf.classes_[dec.argmax(axis=1)], clf.predict(X))
    # the samples-as-columns model behind the estimator gives the same scores
    np.testing.assert_allclose(clf.model_.predict(X.T).T, dec, atol=1e-10)


def test_binary_string_labels(blobs):
    X, y = blobs
    mask = y < 2
    labels = np.where(y[mask] == 0, "cat", "dog")
    clf = ImplicitClassifier(n_states=4, max_sweeps=2, random_state=0).fit(X[mask], labels)
    assert clf.classes_.tolist() == ["cat", "dog"]
    dec = clf.decision_function(X[mask])
    assert dec.shape == (int(mask.sum()),)
    np.testing.assert_array_equal(np.where(dec > 0, "dog", "cat"), clf.predict(X[mask]))
    proba = clf.predict_proba(X[mask])
    np.testing.assert_allclose(proba[:, 1], 1.0 / (1.0 + np.exp(-dec)), atol=1e-12)
    assert clf.score(X[mask], labels) > 0.95


def test_single_class_is_refused():
    X = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValidationError, match="at least 2 classes"):
        ImplicitClassifier(n_states=2, max_sweeps=1).fit(X, np.ones(10))


def test_regressor_output_shapes():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3))
    Y = np.column_stack([X[:, 0] ** 2, X[:, 1] - X[:, 2]])
    reg = ImplicitRegressor(n_states=4, max_sweeps=2, random_state=0)
    assert reg.fit(X, Y).predict(X).shape == (50, 2)
    assert reg.model_.q == 2 and reg.n_outputs_ == 2
    assert reg.fit(X, Y[:, 1]).predict(X).shape == (50,)
    assert reg.fit(X, Y[:, :1]).predict(X).shape == (50, 1)
    assert reg.n_iter_ >= 1 and reg.n_features_in_ == 3
    assert len(reg.history_) >= 3
    assert reg.certificate_.well_posed


def test_fit_is_reproducible_with_random_state():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 2))
    y = np.sin(X[:, 0]) + X[:, 1]
    a = ImplicitRegressor(n_states=4, max_sweeps=2, random_state=3).fit(X, y).predict(X)
    b = ImplicitRegressor(n_states=4, max_sweeps=2, random_state=3).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_refine_option_is_used():
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (60, 2))
    y = np.sin(3 * X[:, 0]) + X[:, 1]
    reg = ImplicitRegressor(n_states=6, max_sweeps=2, random_state=0,
                            refine={"epochs": 3, "lr": 1e-3, "batch_size": 20}).fit(X, y)
    assert reg.bcd_result_.refine_history is not None
    assert len(reg.bcd_result_.refine_history) == 3
    assert reg.certificate_.norm_inf <= 0.5 + 1e-9


# -- hyperparameter validation ----------------------------------------------------------------

@pytest.mark.parametrize("params, error, name", [
    ({"n_states": 0}, ValidationError, "n_states"),
    ({"n_states": 2.5}, InputTypeError, "n_states"),
    ({"kappa": 1.0}, ValidationError, "kappa"),
    ({"kappa": "0.5"}, InputTypeError, "kappa"),
    ({"lam": -1.0}, ValidationError, "lam"),
    ({"max_sweeps": 0}, ValidationError, "max_sweeps"),
    ({"activation": "swish"}, ValidationError, "activation"),
    ({"on_failure": "ignore"}, ValidationError, "on_failure"),
    ({"schedule": [1, 2]}, InputTypeError, "schedule"),
    ({"penalties": "l1"}, InputTypeError, "penalties"),
    ({"refine": "yes"}, InputTypeError, "refine"),
    ({"tol": -1.0}, ValidationError, "tol"),
])
def test_bad_hyperparameters_raise_at_fit(params, error, name):
    X = np.random.default_rng(0).standard_normal((10, 2))
    est = ImplicitRegressor(**params)  # __init__ only stores
    with pytest.raises(error, match=f"'{name}' parameter of ImplicitRegressor"):
        est.fit(X, X[:, 0])


def test_errors_are_scikit_learn_compatible():
    X = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValueError):  # ValidationError derives from ValueError
        ImplicitRegressor(kappa=2.0).fit(X, X[:, 0])
    with pytest.raises(TypeError):  # InputTypeError derives from TypeError
        ImplicitRegressor(n_states="3").fit(X, X[:, 0])
    reg = ImplicitRegressor(n_states=2, max_sweeps=1, random_state=0).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="features"):
        reg.predict(X[:, :1])
