"""Projected stochastic gradient refinement (fenchel_idl.drivers.refine, section 6.2)."""

import dataclasses
import warnings

import numpy as np
import pytest

from fenchel_idl import ImplicitModel, is_well_posed
from fenchel_idl.drivers.gradients import loss_gradients
from fenchel_idl.drivers.refine import (
    EpochRecord,
    RefineHistory,
    RefineOptions,
    RefineResult,
    init_random,
    refine,
)
from fenchel_idl.errors import (
    ConvergenceWarning,
    InputTypeError,
    NumericalWarning,
    ShapeError,
    ValidationError,
)
from fenchel_idl.model import Blockwise, norm_matrix
from fenchel_idl.problem.penalties import L1, Custom, LipschitzBound, NotSupportedInRefinement
from fenchel_idl.problem.projection import project_inf_ball
from tests.helpers import random_model


def wp_norm(model):
    return float(norm_matrix(model.A, model.activation).sum(axis=1).max())


@pytest.fixture
def regression():
    rng = np.random.default_rng(3)
    U = rng.uniform(-2, 2, (2, 60))
    Y = np.vstack([np.sin(2 * U[0]) * U[1], np.cos(U[0] + U[1])])
    return U, Y


@pytest.mark.parametrize("activation", ["relu", "sigmoid",
                                        Blockwise([(4, "relu"), (3, "softmax"), (3, "tanh")])])
def test_never_leaves_the_kappa_ball_and_is_well_posed(regression, activation):
    U, Y = regression
    kappa = 0.6
    seen = []

    def check(record, model):
        seen.append(wp_norm(model))
        assert record.norm == pytest.approx(seen[-1])

    start = init_random(2, 2, 10, kappa=kappa, activation=activation, seed=1)
    # a large learning rate pushes A hard against the constraint at every step
    res = refine(start, U, Y, kappa=kappa, epochs=6, batch_size=8, lr=0.2, callback=check)
    assert len(seen) == 6
    assert max(seen) <= kappa * (1 + 1e-12)
    assert wp_norm(res.model) <= kappa * (1 + 1e-12)
    assert np.all(res.history.column("norm") <= kappa * (1 + 1e-12))
    assert is_well_posed(res.model)
    assert res.kappa == kappa


def test_loss_decreases(regression):
    U, Y = regression
    res = refine(init_random(2, 2, 12, kappa=0.5, seed=0), U, Y, kappa=0.5, epochs=40,
                 batch_size=10, lr=1e-2)
    h = res.history
    assert isinstance(h, RefineHistory) and isinstance(h[0], EpochRecord)
    assert len(h) == 40 and h.stop_reason == "epochs"
    assert h.loss[-1] < 0.5 * h.initial_loss
    assert np.all(np.diff(h.time) >= 0)
    # the recorded loss is the model's actual training loss
    Yhat = res.model.predict(U)
    assert h.loss[-1] == pytest.approx(0.5 * np.sum((Yhat - Y) ** 2) / U.shape[1], rel=1e-6)
    assert h.to_dict()["loss"] == pytest.approx(list(h.loss))


def test_one_full_batch_sgd_step_is_a_projected_gradient_step(rng, regression):
    """Independent re-derivation: A+ = Proj(A - lr dL/dA), the others a plain step."""
    U, Y = regression
    model = random_model(rng, n=8, p=2, q=2, kappa=0.5)
    lr = 0.05
    res = refine(model, U, Y, kappa=0.5, epochs=1, batch_size=None, optimizer="sgd", lr=lr,
                 tol=1e-13, adjoint_tol=1e-13)
    g = loss_gradients(model, U, Y, tol=1e-13)
    np.testing.assert_allclose(res.model.A, project_inf_ball(model.A - lr * g.A, 0.5),
                               atol=1e-8)
    for name in ("B", "C", "D", "bias_x", "bias_y"):
        np.testing.assert_allclose(getattr(res.model, name),
                                   getattr(model, name) - lr * getattr(g, name), atol=1e-8)


def test_deterministic_given_seed(regression):
    U, Y = regression
    start = init_random(2, 2, 8, kappa=0.5, seed=4)
    runs = [refine(start, U, Y, kappa=0.5, epochs=5, batch_size=7, lr=1e-2, seed=s)
            for s in (11, 11, 12)]
    for name in ("A", "B", "C", "D", "bias_x", "bias_y"):
        np.testing.assert_array_equal(getattr(runs[0].model, name), getattr(runs[1].model, name))
    np.testing.assert_array_equal(runs[0].history.loss, runs[1].history.loss)
    assert not np.array_equal(runs[0].model.A, runs[2].model.A)
    a = init_random(3, 2, 6, seed=9, scale=2.0)
    b = init_random(3, 2, 6, seed=9, scale=2.0)
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.B, b.B)


def test_l1_prox_makes_exact_zeros(regression):
    U, Y = regression
    start = init_random(2, 2, 10, kappa=0.5, seed=2)
    plain = refine(start, U, Y, kappa=0.5, epochs=10, batch_size=10, lr=1e-2)
    sparse = refine(start, U, Y, kappa=0.5, epochs=10, batch_size=10, lr=1e-2,
                    penalties=[L1(weight=0.5, on="AB")])
    assert np.count_nonzero(plain.model.B == 0) == 0
    assert np.count_nonzero(sparse.model.A == 0) > np.count_nonzero(plain.model.A == 0)
    assert np.count_nonzero(sparse.model.B == 0) > 0
    h = sparse.history
    assert np.all(h.column("penalty") > 0)
    np.testing.assert_allclose(h.objective, h.loss + h.column("penalty"))
    # the dict form of problem files works too, and so does SGD
    sgd = refine(start, U, Y, kappa=0.5, epochs=5, batch_size=10, lr=0.1, optimizer="sgd",
                 penalties=[{"name": "l1", "weight": 0.05, "on": "A"}])
    assert np.count_nonzero(sgd.model.A == 0) > 0


def test_unsupported_penalties_raise(regression):
    U, Y = regression
    start = init_random(2, 2, 6, kappa=0.5)
    for pen in (LipschitzBound(weight=0.1), Custom(fn=lambda A, B, C, D: 0 * A.sum())):
        with pytest.raises(NotSupportedInRefinement, match="not supported in refinement"):
            refine(start, U, Y, kappa=0.5, epochs=1, penalties=[pen])
    with pytest.raises(ValidationError, match="not trained"):
        refine(start, U, Y, kappa=0.5, epochs=1, params=("B",),
               penalties=[{"name": "feature_selection", "weight": 0.1}])


def test_options_dict_call_form_and_validation(regression):
    U, Y = regression
    start = init_random(2, 2, 6, kappa=0.5)
    options_dict = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "optimizer": "sgd",
                    "momentum": 0.5, "seed": 3}
    res = refine(start, U, Y, loss="squared", penalties=(), kappa=0.5, **options_dict)
    assert isinstance(res, RefineResult) and len(res.history) == 2
    assert res.options == RefineOptions(**options_dict)
    res2 = refine(start, U, Y, kappa=0.5, options=RefineOptions(**options_dict))
    np.testing.assert_array_equal(res.model.A, res2.model.A)
    limited = refine(start, U, Y, kappa=0.5, blas_threads=1, **options_dict)
    np.testing.assert_array_equal(limited.model.A, res.model.A)
    with pytest.raises(ValidationError, match="did you mean 'epochs'"):
        refine(start, U, Y, kappa=0.5, epoch=3)
    with pytest.raises(ValidationError, match="'lr' must be in"):
        RefineOptions(lr=0.0)
    with pytest.raises(ValidationError, match="'optimizer' must be one of"):
        RefineOptions(optimizer="lbfgs")
    with pytest.raises(InputTypeError, match="'epochs' must be an integer"):
        RefineOptions(epochs=2.5)
    with pytest.raises(ValidationError, match="'params'"):
        RefineOptions(params=("E",))
    with pytest.raises(InputTypeError, match="'options' must be a RefineOptions"):
        refine(start, U, Y, kappa=0.5, options=options_dict)
    with pytest.raises(ValidationError, match="'kappa' must be in"):
        refine(start, U, Y, kappa=1.0)
    with pytest.raises(InputTypeError, match="'model' must be an ImplicitModel"):
        refine("model", U, Y, kappa=0.5)
    with pytest.raises(ShapeError, match="'Y' must have as many columns"):
        refine(start, U, Y[:, :-1], kappa=0.5)
    with pytest.raises(ShapeError, match="'U' must have 2 rows"):
        refine(start, U[:1], Y, kappa=0.5)
    with pytest.raises(ValidationError, match="'loss' must be one of"):
        refine(start, U, Y, loss="hinge", kappa=0.5)


def test_kappa_default_and_initial_projection(rng, regression):
    U, Y = regression
    inside = random_model(rng, n=6, p=2, q=2, kappa=0.7)
    res = refine(inside, U, Y, epochs=1)  # kappa=None: the current ||A||_inf
    assert res.kappa == pytest.approx(0.7) and res.history.initial_projection == 0.0
    outside = inside.replace(A=inside.A * 2)  # ||A||_inf = 1.4
    with pytest.raises(ValidationError, match="'kappa' must be given"):
        refine(outside, U, Y, epochs=1)
    res = refine(outside, U, Y, kappa=0.5, epochs=1)
    assert res.history.initial_projection > 0
    assert np.abs(res.model.A).sum(axis=1).max() <= 0.5


def test_frozen_parameters_and_output_refit(regression):
    U, Y = regression
    start = init_random(2, 2, 8, kappa=0.5, seed=5)
    res = refine(start, U, Y, kappa=0.5, epochs=3, params=("A", "B"))
    np.testing.assert_array_equal(res.model.C, start.C)
    np.testing.assert_array_equal(res.model.D, start.D)
    assert not np.array_equal(res.model.A, start.A)
    refit = refine(start, U, Y, kappa=0.5, epochs=3, params=("A", "B"), refit_output=True)
    np.testing.assert_array_equal(refit.model.A, res.model.A)
    # (C, D, bias_y) solve the ridge least-squares problem: its optimality condition is
    # (1/m) R F^T + ridge (C, D, 0) = 0 with R the residual and F = (X; U; 1)
    m = U.shape[1]
    X, _ = refit.model.equilibrium(U)
    R = refit.model.predict(U) - Y
    F = np.vstack([X, U, np.ones((1, m))])
    W = np.hstack([refit.model.C, refit.model.D, np.zeros((2, 1))])
    np.testing.assert_allclose(R @ F.T / m + refit.options.refit_ridge * W, 0, atol=1e-7)
    assert refit.history.loss[-1] == res.history.loss[-1]  # recorded before the refit
    assert np.sum(R ** 2) / (2 * m) < res.history.loss[-1]
    with pytest.raises(ValidationError, match="'refit_output' needs loss='squared'"):
        refine(start, U, np.eye(2)[:, (U[0] > 0).astype(int)], loss="cross_entropy",
               kappa=0.5, refit_output=True)


def test_cross_entropy_classification():
    rng = np.random.default_rng(8)
    U = rng.standard_normal((2, 80))
    labels = (U[0] * U[1] > 0).astype(int)  # XOR-like: not linearly separable
    Y = np.eye(2)[:, labels]
    start = init_random(2, 2, 12, kappa=0.5, seed=3, scale=2.0)
    res = refine(start, U, Y, loss="cross_entropy", kappa=0.5, epochs=60, batch_size=16,
                 lr=2e-2)
    assert res.history.loss[-1] < 0.6 * res.history.initial_loss
    acc = np.mean(np.argmax(res.model.predict(U), axis=0) == labels)
    assert acc > 0.85


def test_callback_stop_progress_and_divergence(regression):
    U, Y = regression
    start = init_random(2, 2, 6, kappa=0.5)
    res = refine(start, U, Y, kappa=0.5, epochs=50, callback=lambda rec, m: rec.epoch == 3,
                 progress=True)
    assert len(res.history) == 3 and res.history.stop_reason == "callback"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumericalWarning)
        with pytest.raises(NumericalWarning, match="non-finite"):
            refine(start, U, Y * 1e150, kappa=0.5, epochs=20, optimizer="sgd", lr=1e10)
    with pytest.warns(NumericalWarning):
        bad = refine(start, U, Y * 1e150, kappa=0.5, epochs=20, optimizer="sgd", lr=1e10)
    assert bad.history.stop_reason == "diverged"
    assert all(np.all(np.isfinite(getattr(bad.model, k))) for k in ("A", "B", "C", "D"))
    assert np.abs(bad.model.A).sum(axis=1).max() <= 0.5


def test_init_random(rng):
    m = init_random(3, 2, 9, kappa=0.4, activation="sigmoid", seed=1, scale=2.0, bias_scale=0.0)
    assert isinstance(m, ImplicitModel) and (m.n, m.p, m.q) == (9, 3, 2)
    assert wp_norm(m) == pytest.approx(0.4)  # on the boundary of the ball
    assert np.all(m.bias_x == 0) and np.all(m.D == 0)
    phi = Blockwise([(2, "relu"), (3, "softmax")])
    assert wp_norm(init_random(1, 1, 5, kappa=0.5, activation=phi)) <= 0.5 * (1 + 1e-12)
    with pytest.raises(ValidationError, match="'kappa' must be in"):
        init_random(1, 1, 3, kappa=1.5)
    with pytest.raises(ValidationError, match="'n' must be an integer in"):
        init_random(1, 1, 0)


def test_result_records_are_frozen(regression):
    U, Y = regression
    res = refine(init_random(2, 2, 4, kappa=0.5), U, Y, kappa=0.5, epochs=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.model = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.history[0].loss = 0.0


def test_keep_best_never_worsens_the_objective(regression):
    U, Y = regression
    start = init_random(2, 2, 8, kappa=0.5, seed=6)
    polished = refine(start, U, Y, kappa=0.5, epochs=5, lr=1e-2)
    # a far too large step makes every epoch worse than the starting point
    res = refine(polished.model, U, Y, kappa=0.5, epochs=3, optimizer="sgd", lr=1.0,
                 keep_best=True)
    h = res.history
    assert h.best_epoch == 0 and np.all(h.loss > h.initial_loss)
    for name in ("A", "B", "C", "D", "bias_x", "bias_y"):
        np.testing.assert_array_equal(getattr(res.model, name), getattr(polished.model, name))
    good = refine(start, U, Y, kappa=0.5, epochs=5, lr=1e-2, keep_best=True)
    assert good.history.best_epoch == int(np.argmin(good.history.objective)) + 1
    with pytest.raises(ValidationError, match="'keep_best' needs evaluate=True"):
        RefineOptions(keep_best=True, evaluate=False)


@pytest.mark.parametrize("bad", ["many", 0, 1.5])
def test_bad_blas_threads_is_refused_with_the_parameter_named(bad):
    from fenchel_idl.drivers.refine import RefineOptions

    with pytest.raises((ValidationError, InputTypeError), match="blas_threads"):
        RefineOptions(blas_threads=bad)


def test_blas_threads_auto_and_env_default_are_accepted():
    from fenchel_idl.drivers.refine import RefineOptions

    assert RefineOptions(blas_threads="auto").blas_threads == "auto"
    assert RefineOptions().blas_threads is None  # the FENCHEL_IDL_BLAS_THREADS limit


# -- safe defaults, float32, low rank ----------------------------------------------------------

def numpy_objective(model, U, Y, l1_A=0.0):
    """Squared-loss training objective by a plain numpy Picard loop (ReLU), an independent
    forward pass: 0.5 ||C X + D U + bias_y - Y||^2 / m + l1_A ||A||_1."""
    A, b = model.A, model.B @ U + model.bias_x[:, None]
    X = np.zeros((model.n, U.shape[1]))
    for _ in range(10000):
        Xn = np.maximum(A @ X + b, 0.0)
        if np.max(np.abs(Xn - X)) <= 1e-14 * max(1.0, np.max(np.abs(Xn))):
            break
        X = Xn
    R = model.C @ Xn + model.D @ U + model.bias_y[:, None] - Y
    return 0.5 * np.sum(R ** 2) / U.shape[1] + l1_A * np.abs(A).sum()


@pytest.fixture(scope="module")
def bcd_cosine():
    """A BCD model of the README's tour problem (smaller: n = 12, two sweeps)."""
    import warnings as w

    from fenchel_idl import TrainingProblem, datasets, solve_bcd
    ds = datasets.cosine(m=120, seed=0)
    problem = TrainingProblem(ds.U, ds.Y, n=12, kappa=0.5, lam=300.0,
                              bounds={"B": 5.0, "C": 60.0, "D": 20.0},
                              penalties=[{"name": "l1", "weight": 1e-4, "on": "A"}])
    with w.catch_warnings():
        w.simplefilter("ignore")
        res = solve_bcd(problem, max_sweeps=2)
    return res.model, problem


@pytest.mark.parametrize("settings", [{}, {"epochs": 100, "lr": 0.001}, {"epochs": 60, "lr": 0.01},
                                      {"epochs": 40, "lr": 0.05, "optimizer": "sgd"}])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refinement_from_bcd_never_ends_above_its_start(bcd_cosine, settings, seed):
    """With the default options (keep_best and backtracking on), the returned model's training
    objective, by an independent numpy forward pass, is never above the BCD model's."""
    model, problem = bcd_cosine
    U, Y = problem.U_raw, problem.Y_raw
    settings = {"epochs": 30, **settings}
    res = refine(model, U, Y, penalties=list(problem.penalties), kappa=problem.kappa,
                 seed=seed, **settings)
    start, end = numpy_objective(model, U, Y, 1e-4), numpy_objective(res.model, U, Y, 1e-4)
    assert end <= start * (1 + 1e-9)
    h = res.history
    assert h.initial_objective == pytest.approx(start, rel=1e-7)
    assert h.final_objective == pytest.approx(end, rel=1e-7)
    assert not h.worsened and res.options.keep_best and res.options.backtrack


def test_backtracking_cuts_the_step_and_a_worse_end_warns(regression):
    U, Y = regression
    polished = refine(init_random(2, 2, 10, kappa=0.5, seed=0), U, Y, kappa=0.5, epochs=20,
                      lr=1e-2).model
    res = refine(polished, U, Y, kappa=0.5, epochs=6, optimizer="sgd", lr=3.0)
    h = res.history
    assert h.column("backtracked").any()
    lrs = h.column("lr")
    for i in np.flatnonzero(h.column("backtracked")[:-1]):
        assert lrs[i + 1] == pytest.approx(0.5 * lrs[i])
    assert h.final_objective <= h.initial_objective
    with pytest.warns(ConvergenceWarning, match="above its start"):
        bad = refine(polished, U, Y, kappa=0.5, epochs=3, optimizer="sgd", lr=3.0,
                     keep_best=False, backtrack=False)
    assert bad.history.worsened
    assert bad.history.final_objective == pytest.approx(
        numpy_objective(bad.model, U, Y), rel=1e-7)
    with pytest.raises(ValidationError, match="'backtrack' needs evaluate=True"):
        RefineOptions(backtrack=True, evaluate=False)
    assert RefineOptions(evaluate=False).keep_best is False


def test_float32_epochs_return_a_float64_model_in_the_ball(regression):
    U, Y = regression
    start = init_random(2, 2, 12, kappa=0.5, seed=0)
    r64 = refine(start, U, Y, kappa=0.5, epochs=15, batch_size=10, lr=1e-2)
    r32 = refine(start, U, Y, kappa=0.5, epochs=15, batch_size=10, lr=1e-2, dtype="float32")
    for k in ("A", "B", "C", "D", "bias_x", "bias_y"):
        assert getattr(r32.model, k).dtype == np.float64
    assert wp_norm(r32.model) <= 0.5 * (1 + 1e-12)
    assert r32.history.final_objective == pytest.approx(numpy_objective(r32.model, U, Y),
                                                        rel=1e-7)
    # the same trajectory up to float32 rounding
    assert r32.history.final_objective == pytest.approx(r64.history.final_objective, rel=1e-3)
    with pytest.raises(ValidationError, match="dtype"):
        RefineOptions(dtype="float16")


def test_low_rank_training_keeps_the_rank_and_the_ball(regression):
    U, Y = regression
    start = init_random(2, 2, 12, kappa=0.5, seed=2)
    res = refine(start, U, Y, kappa=0.5, epochs=40, batch_size=10, lr=1e-2, rank=3)
    A = res.model.A
    assert np.linalg.matrix_rank(A, tol=1e-10) <= 3
    assert wp_norm(res.model) <= 0.5 * (1 + 1e-12)
    assert is_well_posed(res.model)
    # the truncated start is the best rank-3 approximation of A (Eckart-Young)
    s = np.linalg.svd(start.A, compute_uv=False)
    assert res.history.initial_projection >= np.sqrt(np.sum(s[3:] ** 2)) * (1 - 1e-9)
    assert res.history.final_objective < 0.5 * res.history.initial_objective
    assert res.history.final_objective == pytest.approx(numpy_objective(res.model, U, Y),
                                                        rel=1e-7)
    with pytest.raises(ValidationError, match="penalties"):
        refine(start, U, Y, kappa=0.5, epochs=1, rank=3, penalties=[L1(1e-3, on="A")])
    with pytest.raises(ValidationError, match="'A' in params"):
        RefineOptions(rank=2, params=("C", "D"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_warm_started_float64_judgement_agrees_with_a_cold_numpy_pass(regression, dtype):
    """The start and the returned model are judged in float64 from warm starts (the float32
    states of the start, the states of the best epoch); the figures agree with an
    independent cold-started numpy forward pass, also when the best epoch is not the last."""
    U, Y = regression
    start = init_random(2, 2, 12, kappa=0.5, seed=4)
    # a large plain-SGD step: some epochs are worse than an earlier one, so the returned
    # (best) epoch's states differ from the last epoch's
    res = refine(start, U, Y, kappa=0.5, epochs=5, batch_size=10, optimizer="sgd", lr=0.6,
                 backtrack=False, dtype=dtype)
    h = res.history
    assert h.best_epoch < len(h)
    projected = start.replace(A=project_inf_ball(start.A, 0.5))
    assert h.initial_objective == pytest.approx(numpy_objective(projected, U, Y), rel=1e-9)
    assert h.initial_loss == pytest.approx(h.initial_objective, rel=1e-12)
    assert h.final_objective == pytest.approx(numpy_objective(res.model, U, Y), rel=1e-9)
    assert h.final_objective <= h.initial_objective

