"""State-driven fitting: each row against an independent CVXPY program on all samples, the
certificates against feasible points, exact recovery of a teacher without penalties, the
well-posedness ball, sparsity, the readout and the settings form."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import fenchel_idl as fi
from fenchel_idl.drivers.state_fit import fit_states, fit_teacher, teacher_model
from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError


def _teacher(hidden=(6,), p=4, q=3, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    sizes = (p,) + tuple(hidden) + (q,)
    W = [scale * rng.normal(size=(sizes[i + 1], sizes[i])) for i in range(len(sizes) - 1)]
    b = [rng.normal(size=s) * 0.3 for s in sizes[1:]]
    return W, b


def _inputs(p=4, m=80, seed=1):
    return np.random.default_rng(seed).normal(size=(p, m))


def _row_optimum(X, U, z, l1_A, l1_B, radius):
    """The row program on all samples (not the Gram form), by CVXPY: an independent value."""
    n, p = X.shape[0], U.shape[0]
    a, b, c = cp.Variable(n), cp.Variable(p), cp.Variable()
    m = X.shape[1]
    obj = cp.sum_squares(a @ X + b @ U + c - z) / (2 * m) + l1_A * cp.norm1(a) \
        + l1_B * cp.norm1(b)
    prob = cp.Problem(cp.Minimize(obj), [cp.norm1(a) <= radius])
    prob.solve(solver="CLARABEL")
    return prob.value


def _row_objective(fit, teacher, U, i, l1_A, l1_B):
    X, _ = teacher.equilibrium(U, tol=1e-13)
    z = teacher.A[i] @ X + teacher.B[i] @ U + teacher.bias_x[i]
    r = fit.model.A[i] @ X + fit.model.B[i] @ U + fit.model.bias_x[i] - z
    return (r @ r / (2 * U.shape[1]) + l1_A * np.abs(fit.model.A[i]).sum()
            + l1_B * np.abs(fit.model.B[i]).sum()), X, z


@pytest.mark.parametrize("l1", [0.0, 1e-2])
def test_rows_match_an_independent_program_and_their_certificates_hold(l1):
    W, b = _teacher(hidden=(5, 4), seed=2)
    U = _inputs()
    fit = fit_states({"weights": W, "biases": b}, U, kappa=0.4, l1_A=l1, l1_B=l1)
    teacher = fit.teacher
    assert fit.certified
    for i in range(teacher.n):
        ours, X, z = _row_objective(fit, teacher, U, i, l1, l1)
        ref = _row_optimum(X, U, z, l1, l1, 0.4)
        row = fit.rows[i]
        assert row.objective == pytest.approx(ours, rel=1e-7, abs=1e-9)  # describes the model
        assert row.lower <= ref + 1e-7 * max(1.0, abs(ref))  # a true lower bound
        assert ours <= ref + 1e-5 * max(1.0, abs(ref))  # near the optimum
        assert row.gap <= 1e-6


def test_certificate_lower_bounds_are_never_beaten_by_feasible_points():
    W, b = _teacher(hidden=(6,), seed=3)
    U = _inputs(m=50, seed=4)
    fit = fit_states({"weights": W, "biases": b}, U, kappa=0.5, l1_A=3e-2, l1_B=3e-2)
    teacher = fit.teacher
    X, _ = teacher.equilibrium(U)
    rng = np.random.default_rng(5)
    n, p = teacher.n, teacher.p
    for i in range(n):
        z = teacher.A[i] @ X + teacher.B[i] @ U + teacher.bias_x[i]
        for _ in range(50):
            a = rng.normal(size=n)
            a *= rng.uniform(0, 0.5) / np.abs(a).sum()
            bb = fit.model.B[i] + rng.normal(size=p) * rng.uniform(0, 0.3)
            c = fit.model.bias_x[i] + rng.normal() * 0.1
            r = a @ X + bb @ U + c - z
            val = r @ r / (2 * U.shape[1]) + 3e-2 * (np.abs(a).sum() + np.abs(bb).sum())
            assert val >= fit.rows[i].lower - 1e-12


def test_without_penalties_a_one_layer_teacher_is_recovered_exactly():
    W, b = _teacher(hidden=(7,), seed=6)
    U = _inputs(m=60, seed=7)
    teacher = fi.from_layers(W, b)
    # the interior-point solver goes well past the gap tolerance on this consistent system
    fit = fit_states(teacher, U, l1_A=0.0, l1_B=0.0, readout="keep", method="cvxpy")
    np.testing.assert_allclose(fit.model.predict(U), teacher.predict(U), atol=1e-5)
    assert max(r.residual for r in fit.rows) < 1e-5


def test_deep_teacher_is_rescaled_into_the_ball_and_recovered():
    """A two-layer teacher with large weights (||A||_inf >> kappa) is rescaled (section 2.5)
    so that its own rows are feasible: without penalties the fit reproduces its outputs."""
    W, b = _teacher(hidden=(5, 5), seed=8, scale=2.0)
    U = _inputs(m=70, seed=9)
    raw = fi.from_layers(W, b)
    assert np.abs(raw.A).sum(axis=1).max() > 1.0
    fit = fit_states({"weights": W, "biases": b}, U, kappa=0.3, l1_A=0.0, l1_B=0.0,
                     readout="keep")
    assert np.abs(fit.teacher.A).sum(axis=1).max() < 0.3
    # a relative gap of 1e-6 on an objective whose optimum is 0 leaves residuals of about
    # 1e-5 of the pre-activations, which two layers and the readout amplify
    assert fit.certified and max(r.residual for r in fit.rows) < 1e-4
    Y = raw.predict(U)
    np.testing.assert_allclose(fit.model.predict(U), Y, rtol=0, atol=1e-4 * np.abs(Y).max())


def test_well_posed_and_sparse_under_a_large_penalty():
    W, b = _teacher(hidden=(6,), seed=10)
    U = _inputs(seed=11)
    fit = fit_states({"weights": W, "biases": b}, U, kappa=0.5, l1_A=1e2, l1_B=1e-3)
    assert fit.sparsity_A == 1.0  # the optimum has a = 0 and the returned rows hold exact zeros
    assert fi.is_well_posed(fit.model)
    mild = fit_states({"weights": W, "biases": b}, U, kappa=0.5, l1_A=1e-4, l1_B=1e-4)
    assert np.abs(mild.model.A).sum(axis=1).max() <= 0.5 + 1e-7
    assert mild.certified and fit.certified


def test_mlp_teacher_readout_and_subsample():
    from sklearn.neural_network import MLPClassifier

    ds = fi.datasets.digits(n=400, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((16,), max_iter=200, random_state=0).fit(ds.U.T, ds.labels)
    fit = fit_states(mlp, ds.U, l1_A=1e-3, l1_B=1e-3, samples=300, seed=1)
    assert fit.samples == 300
    assert fit.readout is not None and fit.readout.certified
    teacher_labels = mlp.predict(ds.U.T)
    agree = np.mean(fit.model.predict(ds.U).argmax(axis=0) == teacher_labels)
    assert agree >= 0.95
    assert "certified" in fit.summary()


def test_teacher_table_trains_the_mlp_and_fits_it():
    ds = fi.datasets.digits(n=300, seed=1)
    settings = {"hidden": [12], "max_iter": 150, "kappa": 0.3, "l1_A": 1e-3, "l1_B": 1e-3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's ConvergenceWarning at 150 iterations
        fit = fit_teacher(settings, ds.U, ds.Y, task="classification", seed=0)
    assert fit.teacher.n == 12 and fit.model.n == 12 and fit.certified
    assert np.abs(fit.model.A).sum(axis=1).max() <= 0.3 + 1e-7
    agree = np.mean(fit.model.predict(ds.U).argmax(axis=0)
                    == fit.teacher.predict(ds.U).argmax(axis=0))
    assert agree >= 0.95


def test_teacher_table_regression():
    U = _inputs(p=3, m=120, seed=14)
    y = np.sin(U.sum(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_teacher({"hidden": [8], "max_iter": 300, "l1_A": 0.0, "l1_B": 0.0},
                          U, y, task="regression", seed=0)
    assert fit.teacher.q == 1 and fit.certified
    teacher = fit.teacher.predict(U)
    assert np.abs(fit.model.predict(U) - teacher).max() <= 1e-3 * max(1.0, np.abs(teacher).max())


def test_settings_and_errors():
    W, b = _teacher(hidden=(3,), seed=12)
    U = _inputs(m=30, seed=13)
    with pytest.raises(ValidationError, match=r"'\[teacher\]' keys.*'lr'"):
        fit_teacher({"lr": 1.0}, U, np.zeros(30, dtype=int))
    with pytest.raises(ValidationError, match="'task'"):
        fit_teacher({}, U, np.zeros(30, dtype=int), task="ranking")
    with pytest.raises(ValidationError, match="'kappa'"):
        fit_states(W, U, kappa=1.5)
    with pytest.raises(ValidationError, match="'readout'"):
        fit_states(W, U, readout="labels")
    with pytest.raises(ValidationError, match="'l1_A'"):
        fit_states(W, U, l1_A=-1.0)
    with pytest.raises(ShapeError, match="'U' must have p = 4 rows"):
        fit_states(W, U.T)
    with pytest.raises(InputTypeError, match="'teacher' must be"):
        teacher_model("mlp")
    with pytest.raises(ValidationError, match="'weights'"):
        teacher_model({"biases": b})


def test_first_order_rows_agree_with_cvxpy_and_say_when_not_certified():
    W, b = _teacher(hidden=(5, 4), seed=15)
    U = _inputs(m=90, seed=16)
    teacher = {"weights": W, "biases": b}
    ref = fit_states(teacher, U, kappa=0.4, l1_A=1e-2, l1_B=1e-2, method="cvxpy",
                     readout="keep")
    fo = fit_states(teacher, U, kappa=0.4, l1_A=1e-2, l1_B=1e-2, method="fista",
                    max_iter=20000, readout="keep")
    assert ref.certified and fo.certified
    assert all(r.solve.solver == "FISTA" for r in fo.rows)
    for r1, r2 in zip(ref.rows, fo.rows):
        # each certificate brackets the other's objective
        assert r2.lower <= r1.objective + 1e-12 and r1.lower <= r2.objective + 1e-12
        assert r2.objective == pytest.approx(r1.objective, rel=2e-6, abs=2e-6)
    short = fit_states(teacher, U, kappa=0.4, l1_A=1e-4, l1_B=1e-4, method="fista",
                       max_iter=2, readout="keep")
    assert not short.certified and not all(r.certified for r in short.rows)
    bad = [r for r in short.rows if not r.certified]
    assert all(r.gap > 1e-6 for r in bad)  # the flag follows the row's own gap
    auto = fit_states(teacher, U, kappa=0.4, l1_A=1e-4, l1_B=1e-4, method="auto", max_iter=2,
                      readout="keep")
    assert auto.certified  # the rows FISTA left uncertified were solved by CVXPY
    assert {r.solve.solver for r in auto.rows} & {"CLARABEL", "ECOS", "SCS"}
