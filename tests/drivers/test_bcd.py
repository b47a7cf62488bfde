"""Training: the relaxed problem, its blocks, and the BCD driver with certificates."""

import json
import re
import sys

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import ImplicitModel, is_well_posed
from fenchel_idl.drivers.bcd import Schedule, solve_bcd
from fenchel_idl.errors import NotConvexError, ShapeError, ValidationError
from fenchel_idl.blocks.first_order import fast_ab_block, fast_x_block
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem.training_problem import TrainingProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project's own fallback (pyproject.toml)
    import tomli as tomllib


def small_regression(rng, m=40, p=2):
    U = rng.uniform(-1, 1, (p, m))
    Y = np.sin(2 * U[:1]) + 0.3 * U[1:2] ** 2 + 0.05 * rng.standard_normal((1, m))
    return U, Y


def _solve(prob, name):
    return solve_certified(prob, name, "qp")[-1]


@pytest.fixture
def problem(rng):
    U, Y = small_regression(rng)
    return TrainingProblem(U, Y, n=6, kappa=0.5, lam=5.0, bounds={"C": 20.0})


def _random_state(problem, rng):
    n, p = problem.n, problem.p
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, p)), rng.standard_normal(n)
    X = np.maximum(B @ problem.U + b[:, None], 0) + 0.1 * rng.uniform(size=(n, problem.m))
    C, D, d = rng.standard_normal((1, n)), rng.standard_normal((1, p)), rng.standard_normal(1)
    return A, B, b, C, D, d, X


def test_x_block_never_increases_the_relaxed_objective(problem, rng):
    """The DCA majorizer touches the objective at the current X (numpy re-evaluation)."""
    blocks = Blocks(problem)
    for _ in range(3):
        A, B, b, C, D, d, X = _random_state(problem, rng)
        lam = rng.uniform(0.5, 10, problem.n)
        before = sum(problem.objective_parts(A, B, b, C, D, d, X, lam))
        Xn, info = blocks.solve_x(A, B, b, C, D, d, X, lam, _solve)
        assert info.certified
        after = sum(problem.objective_parts(A, B, b, C, D, d, np.maximum(Xn, 0), lam))
        assert after <= before + 1e-7


def test_fast_blocks_agree_with_cvxpy_blocks(problem, rng):
    blocks = Blocks(problem)
    A, B, b, C, D, d, X = _random_state(problem, rng)
    lam = rng.uniform(0.5, 10, problem.n)
    Xc, ic = blocks.solve_x(A, B, b, C, D, d, X, lam, _solve)
    Xf, if_ = fast_x_block(problem, A, B, b, C, D, d, X, lam, tol=1e-10)
    assert ic.certified and if_.certified
    np.testing.assert_allclose(Xf, np.maximum(Xc, 0), atol=1e-4)
    W0 = np.hstack([A, B, b[:, None]])
    Ac, Bc, bc, _ = blocks.solve_ab(Xf, lam, C, D, _solve, W0, 1e-2)
    Af, Bf, bf, info = fast_ab_block(problem, Xf, state_lipschitz(problem.activation, problem.n),
                                     W0, tol=1e-9, rho=1e-2)
    assert info.certified
    # the proximal block is strongly convex: the two certified solutions coincide
    np.testing.assert_allclose(np.hstack([Af, Bf, bf[:, None]]),
                               np.hstack([Ac, Bc, bc[:, None]]), atol=1e-3)
    obj = [sum(problem.objective_parts(Am, Bm, bm, C, D, d, Xf, lam)[1:])
           for Am, Bm, bm in ((A, B, b), (Af, Bf, bf))]
    assert obj[1] <= obj[0] + 1e-9  # a proximal step never increases the block objective
    assert np.abs(Af).sum(axis=1).max() <= problem.kappa + 1e-9


def test_readout_is_the_constrained_least_squares_optimum(rng):
    """Known optimum: with an inactive ball the (C, D) block is plain least squares."""
    U, Y = small_regression(rng)
    prob = TrainingProblem(U, Y, n=4, kappa=0.5, bounds={"C": 1e6, "D": 1e6})
    blocks = Blocks(prob)
    X = np.maximum(rng.standard_normal((4, 2)) @ prob.U + 0.3, 0)
    C, D, d, info = blocks.solve_cd(X, np.zeros((4, 4)), np.zeros((4, 2)), _solve)
    V = np.vstack([X, prob.U, np.ones((1, prob.m))])
    W = np.linalg.lstsq(V.T, prob.Y.T, rcond=None)[0].T
    np.testing.assert_allclose(np.hstack([C, D, d[:, None]]), W, atol=1e-5)
    assert info.certified


@pytest.mark.parametrize("block_solver", ["auto", "cvxpy"])
def test_bcd_certificate_and_monotonicity(rng, block_solver):
    U, Y = small_regression(rng, m=30)
    prob = TrainingProblem(U, Y, n=5, kappa=0.5, lam=10.0, bounds={"C": 20.0})
    res = solve_bcd(prob, max_sweeps=6, schedule=Schedule(stages=3, sweeps_per_stage=2),
                    block_solver=block_solver, seed=1)
    cert = res.certificate
    assert cert.blocks_certified and cert.monotone and cert.readout_certified
    assert cert.well_posed and cert.norm_inf <= 0.5 + 1e-9
    # the relaxed objective never increases within a stage (independent check on history)
    for a, b in zip(res.history, res.history[1:]):
        if a.stage == b.stage:
            assert b.objective <= a.objective + 1e-6 * max(1, abs(a.objective))
    # the certificate's figures re-derived from the model
    model = res.model
    assert is_well_posed(model)
    Yhat = model.predict(U)
    assert cert.train_metric["rmse"] == pytest.approx(np.sqrt(np.mean((Yhat - Y) ** 2)))
    Ys = (Y - Y.mean()) / Y.std()
    assert cert.true_loss == pytest.approx(0.5 * np.mean(((Yhat - Y.mean()) / Y.std() - Ys) ** 2),
                                           rel=1e-6)
    assert json.loads(json.dumps(cert.to_dict(), default=float))["kappa"] == 0.5
    assert "well-posed" in str(cert)


def test_bcd_improves_on_its_random_feature_start(rng):
    U, Y = small_regression(rng, m=60)
    prob = TrainingProblem(U, Y, n=8, kappa=0.5, lam=30.0, bounds={"C": 50.0})
    res = solve_bcd(prob, max_sweeps=12, seed=0,
                    schedule=Schedule(stages=12, sweeps_per_stage=1, restart=True, factor=1.0,
                                      div_tol=0.0))
    assert res.certificate.train_metric["rmse"] < res.start_metric["rmse"]



def _numpy_predict(model, U, iters=3000):
    """Plain Picard iteration and readout, written out (independent of the package)."""
    X = np.zeros((model.n, U.shape[1]))
    bx = np.zeros(model.n) if model.bias_x is None else model.bias_x
    by = np.zeros(model.C.shape[0]) if model.bias_y is None else model.bias_y
    for _ in range(iters):
        X = np.maximum(model.A @ X + model.B @ U + bx[:, None], 0.0)
    return model.C @ X + model.D @ U + by[:, None]


def test_line_search_schedule_lowers_the_true_loss_every_sweep():
    """Line-search schedule (uniform lam) on the cosine problem (section 7.1) at n = 20: the
    true loss (at the equilibrium, optimal readout) never increases, and it falls well
    below the random-feature start (measured: 0.797 -> 0.587 in 30 sweeps)."""
    from fenchel_idl.problem import datasets

    ds = datasets.cosine(m=200, seed=0)
    prob = TrainingProblem(ds.U, ds.Y, n=20, kappa=0.5, lam=300.0)
    res = solve_bcd(prob, max_sweeps=30, seed=0, schedule=Schedule(lam_weights="uniform"))
    eq = [loss for _, loss in res.equilibrium_losses]
    assert len(eq) == 30
    assert all(b <= a for a, b in zip(eq, eq[1:]))
    ls = [r for r in res.history if r.block == "LS"]
    assert all((r.step > 0) == r.accepted for r in ls)
    assert sum(r.step > 1 for r in ls) >= 5          # the search does extrapolate
    rmse = float(np.sqrt(np.mean((_numpy_predict(res.model, ds.U) - ds.Y) ** 2)))
    assert rmse == pytest.approx(res.certificate.train_metric["rmse"], rel=1e-8)
    assert rmse <= 0.85 * res.start_metric["rmse"]
    cert = res.certificate
    assert cert.blocks_certified and cert.monotone and cert.well_posed


def test_readout_weights_against_uniform_lam():
    """The default "readout" lam weights (the X step scaled per state by its readout column
    norm, uniform retry when no step improves) against uniform lam, on the cosine problem
    at n = 40 (data seed 2; measured 0.600 -> 0.518 against 0.561 in 40 sweeps): lower true
    loss, still monotone and certified, and the lam the run ends with (its adapted base) is
    uniform over the states; the weights are the sweep's only."""
    from collections import Counter

    from fenchel_idl.problem import datasets
    from fenchel_idl.drivers.bcd import _readout_weights

    ds = datasets.cosine(m=200, seed=2)
    prob = TrainingProblem(ds.U, ds.Y, n=40, kappa=0.5, lam=300.0,
                           bounds={"B": 5.0, "C": 100.0, "D": 20.0})
    runs = {lw: solve_bcd(prob, max_sweeps=40, seed=2, schedule=Schedule(lam_weights=lw))
            for lw in ("readout", "uniform")}
    w, u = runs["readout"], runs["uniform"]
    assert w.start_metric == u.start_metric
    assert w.certificate.true_loss < 0.95 * u.certificate.true_loss
    for res in runs.values():
        eq = [loss for _, loss in res.equilibrium_losses]
        assert all(b <= a for a, b in zip(eq, eq[1:]))
        assert res.certificate.monotone and res.certificate.blocks_certified
        assert np.all(res.lam == res.lam[0])
    # a sweep whose weighted step found nothing was retried with uniform weights
    ls = [r for r in w.history if r.block == "LS"]
    twice = [k for k, c in Counter(r.sweep for r in ls).items() if c == 2]
    assert twice and all(not next(r for r in ls if r.sweep == k).accepted for k in twice)
    assert all(c == 1 for c in Counter(r.sweep for r in u.history if r.block == "LS").values())
    # the weights, re-derived: (|C_i|^2 + 0.3 c) / (1.3 c) with c the mean; mean 1
    C = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 1.0]])
    c2 = np.array([25.0, 0.0, 2.0])
    np.testing.assert_allclose(_readout_weights(C), (c2 + 0.3 * 9.0) / (1.3 * 9.0))
    assert _readout_weights(C).mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(_readout_weights(np.zeros((1, 4))), np.ones(4))
    with pytest.raises(ValidationError, match="lam_weights"):
        Schedule(lam_weights="columns")


def test_line_search_needs_restarts():
    with pytest.raises(ValidationError, match="restart"):
        Schedule(line_search=True, restart=False)
    assert Schedule(restart=False).line_search is False
    assert Schedule().line_search is True
    with pytest.raises(ValidationError, match="step_max"):
        Schedule(step_max=0.5)
    with pytest.raises(ValidationError, match="lam_min"):
        Schedule(lam_min=0.0)

def test_classification_with_cross_entropy(rng):
    U = rng.standard_normal((2, 60))
    labels = (U[0] * U[1] > 0).astype(int) + (U[0] > 1)
    flip = rng.uniform(size=60) < 0.15  # label noise keeps the logits moderate
    labels[flip] = rng.integers(0, 3, flip.sum())
    prob = TrainingProblem(U, labels, n=6, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 5.0})
    res = solve_bcd(prob, max_sweeps=3, schedule=Schedule(stages=2, sweeps_per_stage=2))
    assert res.certificate.blocks_certified
    acc = np.mean(res.model.predict(U).argmax(0) == labels)
    assert acc == pytest.approx(res.certificate.train_metric["accuracy"])
    assert acc > np.bincount(labels).max() / 60  # better than the majority class


def test_penalties_and_structure_constraints_take_effect(rng):
    U, Y = small_regression(rng, m=30)
    n = 5
    mask = np.tril(np.ones((n, n)))

    def feedforward(A, B, C, D):
        return [cp.multiply(mask, A) == 0]

    prob = TrainingProblem(U, Y, n=n, kappa=0.5, lam=5.0, constraints=[feedforward],
                           penalties=[{"name": "feature_selection", "weight": 0.05}])
    res = solve_bcd(prob, max_sweeps=3, schedule=Schedule(stages=2, sweeps_per_stage=1))
    A = res.model.A
    assert np.abs(A[mask == 1]).max() <= 1e-7
    assert res.certificate.blocks_certified
    # strictly upper triangular up to solver precision: a feedforward network (Thm 2.7)
    assert res.certificate.pf_eigenvalue < 1e-3


def test_raw_inputs_and_biases(rng):
    """Users pass raw U (here badly scaled); the model predicts on the same raw U."""
    U, Y = small_regression(rng, m=30)
    U = U * 1e3 + 5e3
    prob = TrainingProblem(U, Y, n=4, kappa=0.5, lam=5.0)
    res = solve_bcd(prob, max_sweeps=2, schedule=Schedule(stages=1, sweeps_per_stage=2))
    assert res.model.has_bias
    np.testing.assert_allclose(res.model.predict(U[:, :3]).shape, (1, 3))
    assert res.certificate.train_metric["rmse"] < np.std(Y) * 1.01


def test_user_model_round_trip(rng, problem):
    A, B, b, C, D, d, _ = _random_state(problem, rng)
    m = problem.to_user_model(A, B, b, C, D, d)
    back = problem.from_user_model(m)
    for x, y in zip((A, B, b, C, D, d), back):
        np.testing.assert_allclose(x, y, atol=1e-10)
    assert isinstance(m, ImplicitModel)


def test_bad_input_is_refused_before_solving(rng):
    U, Y = small_regression(rng)
    with pytest.raises(ValidationError, match=r"'kappa' must be in \(0.0, 1.0\); got 1.2"):
        TrainingProblem(U, Y, n=3, kappa=1.2)
    with pytest.raises(ValidationError, match="'lam' must be"):
        TrainingProblem(U, Y, n=3, lam=-1.0)
    with pytest.raises(ShapeError, match="same number of samples"):
        TrainingProblem(U, Y[:, :-1], n=3)
    with pytest.raises(ValidationError, match="one-hot"):
        TrainingProblem(U, np.full((2, U.shape[1]), 0.5), n=3, loss="cross_entropy")
    with pytest.raises(ValidationError, match="'loss' must be one of"):
        TrainingProblem(U, Y, n=3, loss="hinge")
    with pytest.raises(ValidationError, match="'penalties' names must be among"):
        TrainingProblem(U, Y, n=3, penalties=[{"name": "l3"}])
    with pytest.raises(NotConvexError, match="not convex"):
        TrainingProblem(U, Y, n=3, penalties=[lambda A, B, C, D: -cp.norm1(A)])
    prob = TrainingProblem(U, Y, n=3)
    with pytest.raises(ValidationError, match="'solver' must be one of the installed"):
        solve_bcd(prob, max_sweeps=1, solver="GUROBI_NOT_HERE", block_solver="cvxpy")


@pytest.mark.parametrize("schedule", [Schedule(), Schedule(restart=False, factor=4.0,
                                                           sweeps_per_stage=2)],
                         ids=["line-search", "continuation"])
def test_convergence_plot_of_either_schedule(rng, tmp_path, schedule):
    from fenchel_idl.analysis.plots import plot_convergence

    U, Y = small_regression(rng, m=30)
    res = solve_bcd(TrainingProblem(U, Y, n=4, kappa=0.5, lam=10.0), max_sweeps=4,
                    schedule=schedule)
    assert any(r.block == "LS" for r in res.history) == schedule.line_search
    path = plot_convergence(res, tmp_path / "c.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_large_cross_entropy_readout_is_rebuilt_with_constants(rng, monkeypatch):
    """Past _CD_DPP_MAX the cross-entropy (C, D) block is rebuilt with X, A, B as constants
    (CVXPY's DPP tensor would not fit in memory); it must give the same optimum."""
    import fenchel_idl.blocks.cvxpy_blocks as training

    U = rng.standard_normal((3, 60))
    labels = (U[0] + 0.5 * U[1] > 0).astype(int) + (U[2] > 1).astype(int)
    prob = TrainingProblem(U, labels, n=5, kappa=0.5, loss="cross_entropy",
                           bounds={"C": 3.0, "D": 3.0})
    A, B, b, C, D, d, X = _random_state(prob, rng)
    ref = Blocks(prob).solve_cd(X, A, B, lambda p, name: solve_certified(p, name, "exp")[-1])
    monkeypatch.setattr(training, "_CD_DPP_MAX", 0)
    out = Blocks(prob).solve_cd(X, A, B, lambda p, name: solve_certified(p, name, "exp")[-1])
    assert out[3].certified and ref[3].certified
    assert out[3].objective == pytest.approx(ref[3].objective, rel=1e-6)
    value = prob.loss.value(prob.Y, out[0] @ X + out[1] @ prob.U + out[2][:, None])
    assert value == pytest.approx(ref[3].objective, rel=1e-6)


def test_certificate_says_why_the_readout_is_not_certified_after_refinement():
    from fenchel_idl import TrainingProblem, solve_bcd

    U = np.random.default_rng(3).uniform(-1, 1, (1, 60))
    prob = TrainingProblem(U, np.sin(3 * U), n=4)
    plain = solve_bcd(prob, max_sweeps=2).certificate
    assert plain.readout_certified and not plain.refined
    assert "refinement moved" not in str(plain)
    refined = solve_bcd(prob, max_sweeps=2, refine={"epochs": 2, "lr": 1e-3}).certificate
    assert refined.refined and not refined.readout_certified
    assert "gradient refinement moved (C, D)" in str(refined)
    # a refinement that keeps the BCD model (keep_best, no better epoch) keeps its certificate
    kept = solve_bcd(prob, max_sweeps=2, refine={"epochs": 2, "lr": 10.0, "keep_best": True})
    assert kept.refine_history.best_epoch == 0
    base = solve_bcd(prob, max_sweeps=2)
    np.testing.assert_array_equal(kept.model.C, base.model.C)
    assert kept.certificate.readout_certified and not kept.certificate.refined


def test_cross_entropy_readout_by_fista_is_the_clarabel_optimum(rng, monkeypatch):
    """The first-order cross-entropy readout of solve_bcd (no penalties) against the
    exponential-cone program written out here and solved by Clarabel, at the final (A, B).
    The problem (270 cones of 9 entries) is below the size where solve_bcd itself picks
    FISTA, so the test lowers that size to 0; at the default its readouts are Clarabel's."""
    import cvxpy as cp

    import fenchel_idl.blocks.first_order as fb

    U = rng.standard_normal((3, 90))
    labels = (U[0] * U[1] > 0).astype(int) + (U[2] > 0.8)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 3.0, "D": 2.0})
    assert fb.ce_program_size(prob) <= fb._CE_FISTA_MIN_SIZE
    small = solve_bcd(prob, max_sweeps=1, gap_tol=1e-7)
    assert {r.solver for r in small.history if r.block == "LS"} == {"CLARABEL"}
    monkeypatch.setattr(fb, "_CE_FISTA_MIN_SIZE", 0)
    res = solve_bcd(prob, max_sweeps=2, gap_tol=1e-7)
    cert = res.certificate
    assert cert.readout_certified and cert.blocks_certified
    assert {r.solver for r in res.history if r.block == "LS"} == {"FISTA"}
    A, B, b, C, D, d = prob.from_user_model(res.model)
    X = ImplicitModel(A, B, C, D, prob.activation, b, d).equilibrium(
        prob.U, tol=1e-12, max_iter=50000)[0]
    n, p, q, m = prob.n, prob.p, prob.q, prob.m
    Kv = cp.Variable((q, n + p + 1))
    Z = Kv @ np.vstack([X, prob.U, np.ones((1, m))])
    f = (cp.sum(cp.log_sum_exp(Z, axis=0)) - cp.sum(cp.multiply(prob.Y, Z))) / m
    ref = cp.Problem(cp.Minimize(f), [cp.sum(cp.abs(Kv[:, :n]), axis=1) <= 3.0,
                                      cp.sum(cp.abs(Kv[:, n:n + p]), axis=1) <= 2.0])
    ref.solve(solver="CLARABEL")
    assert ref.status == "optimal"
    assert ref.value - 1e-7 <= cert.true_loss <= ref.value + 2e-7


def test_uncertified_first_order_readout_falls_back_only_where_the_cones_fit(rng,
                                                                            monkeypatch):
    """fast_blocks.ce_readout, the one readout rule of solve_bcd and solve_bcd_minibatch: an
    uncertified FISTA readout (a 3-iteration budget) is reported, then replaced by the CVXPY
    block while the program has at most _CE_CVXPY_MAX_CONES cones; past that it is kept and
    solve_bcd's certificate says the readout is not certified, with FISTA's gap."""
    import fenchel_idl.blocks.first_order as fb

    U = rng.standard_normal((3, 60))
    labels = (U[0] > 0).astype(int) + (U[1] > 0.5)
    prob = TrainingProblem(U, labels, n=4, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 3.0, "D": 2.0})
    X = np.abs(rng.standard_normal((4, 60)))
    K0 = np.zeros((prob.q, prob.n + prob.p + 1))
    monkeypatch.setattr(fb, "_CE_FISTA_MIN_SIZE", 0)
    reported, cvxpy_calls = [], []

    def cvxpy_block():
        cvxpy_calls.append(1)
        return "C", "D", "d", "clarabel record"

    out = fb.ce_readout(prob, X, K0, cvxpy_block, reported.append, 1e-9, 3)
    assert out == ("C", "D", "d", "clarabel record") and len(cvxpy_calls) == 1
    assert len(reported) == 1 and not reported[0].certified and reported[0].solver == "FISTA"

    monkeypatch.setattr(fb, "_CE_CVXPY_MAX_CONES", prob.q * prob.m - 1)
    C, D, d, info = fb.ce_readout(prob, X, K0, cvxpy_block, reported.append, 1e-9, 3)
    assert len(cvxpy_calls) == 1 and len(reported) == 2
    assert info is reported[1] and not info.certified and info.gap > 1e-9
    assert np.abs(C).sum(axis=1).max() <= 3.0 + 1e-9
    assert np.abs(D).sum(axis=1).max() <= 2.0 + 1e-9
    assert C.shape == (prob.q, 4) and D.shape == (prob.q, 3) and d.shape == (prob.q,)

    monkeypatch.setattr(fb, "_CE_READOUT_ITER", 3)
    res = solve_bcd(prob, max_sweeps=1)
    assert not res.certificate.readout_certified
    assert any(e["solver"] == "FISTA" and not e["certified"] for e in res.certificate.solve_events)


def test_cosine_targets_benchmark_reports_what_it_ran(tmp_path):
    """The benchmark's figures are those of the models it trained: the improvement is the
    ratio of the two RMSEs, BCD never ends above its start (the line search only accepts
    improving steps), and the file's refinement keeps its best epoch, so it never ends
    above the BCD point it started from (here the file with 5 refinement epochs)."""
    from pathlib import Path

    from fenchel_idl.apps.bench import bench_cosine_targets

    text = (Path(__file__).resolve().parents[1] / "problems"
            / "cosine_regression.toml").read_text()
    path = tmp_path / "cosine.toml"
    path.write_text(re.sub(r"(?m)^epochs = \d+", "epochs = 5", text))
    out = bench_cosine_targets(balls=(100.0, 40.0), max_sweeps=2, refined=True, path=path)
    assert out["refine"]["epochs"] == 5
    assert [r["ball_C"] for r in out["rows"]] == [100.0, 40.0]
    for r in out["rows"]:
        assert r["refined_rmse"] <= r["rmse"] + 1e-12
        assert r["refined_test_rmse"] ** 2 == pytest.approx(r["refined_f_rmse"] ** 2 + 1 / 3,
                                                             abs=0.05)
        assert r["rmse"] <= r["start_rmse"] + 1e-12
        assert r["improvement"] == pytest.approx(1 - r["rmse"] / r["start_rmse"])
        assert r["certified"] and r["monotone"] and r["well_posed"]
        assert r["norm_A"] <= 0.5 + 1e-9
        # held out: noise uniform in [-1, 1] (variance 1/3) is independent of the fresh
        # inputs, so on 2000 samples test MSE = MSE against f + 1/3, up to sampling error
        # (sd of the mean of w^2 about 0.007, cross term about 0.01 |f - fhat|)
        assert r["test_rmse"] ** 2 == pytest.approx(r["f_rmse"] ** 2 + 1 / 3, abs=0.05)
    # a tighter readout ball fits random features worse
    assert out["rows"][1]["start_rmse"] > out["rows"][0]["start_rmse"]


def test_cosine_targets_benchmark_starts_at_the_problem_files_ball():
    """By default the benchmark measures the ball the problem file ships first, then the
    former default 100 and a tighter 50."""
    from pathlib import Path

    from fenchel_idl.apps.bench import bench_cosine_targets

    path = Path(__file__).resolve().parents[1] / "problems" / "cosine_regression.toml"
    ball = tomllib.loads(path.read_text())["training"]["bounds"]["C"]  # not our loader
    out = bench_cosine_targets(max_sweeps=1, refined=False, heldout=10)
    assert [r["ball_C"] for r in out["rows"]] == [ball, 100.0, 50.0]
    assert out["refine"] is None and "refined_rmse" not in out["rows"][0]
    # BCD figures: the readout is the certified one, not moved by a refinement
    assert all(r["certified"] for r in out["rows"])


def _numpy_rmse(model, U, Y):
    """Train RMSE by a plain numpy Picard loop on x = relu(A x + B u + bias_x) (||A||_inf
    <= 0.5, so the loop contracts), then y = C x + D u + bias_y."""
    bx = np.zeros(model.A.shape[0]) if model.bias_x is None else model.bias_x
    by = np.zeros(model.C.shape[0]) if model.bias_y is None else model.bias_y
    X = np.zeros((model.A.shape[0], U.shape[1]))
    for _ in range(200):
        X = np.maximum(model.A @ X + model.B @ U + bx[:, None], 0.0)
    Yhat = model.C @ X + model.D @ U + by[:, None]
    return float(np.sqrt(np.mean((Yhat - Y) ** 2)))


@pytest.mark.slow
def test_cosine_problem_file_meets_the_bcd_targets():
    """python -m pytest -m slow tests/test_bcd.py (about 30 s). The main job, BCD alone
    (section 7.1, n = 75): train RMSE at most 0.65 (the paper's network), at least 15%
    below its own random-feature start, every block certified, the relaxed objective
    monotone, the model in the kappa ball. Both RMSEs are re-derived by a numpy forward
    pass of the returned models."""
    from pathlib import Path

    from fenchel_idl.drivers.problem_file import load_data, bcd_options, build_problem, load_problem

    spec = load_problem(Path(__file__).resolve().parents[1] / "problems"
                        / "cosine_regression.toml")
    ds, _ = load_data(spec)
    res = solve_bcd(build_problem(spec, ds), **bcd_options(spec, refine=False))
    start = _numpy_rmse(res.start_model, ds.U, ds.Y)
    end = _numpy_rmse(res.model, ds.U, ds.Y)
    assert start == pytest.approx(res.start_metric["rmse"], abs=1e-9)
    assert end == pytest.approx(res.certificate.train_metric["rmse"], abs=1e-9)
    assert end <= 0.65
    assert end <= 0.85 * start
    c = res.certificate
    assert c.blocks_certified and c.readout_certified and c.monotone and c.well_posed
    assert np.abs(res.model.A).sum(axis=1).max() <= spec.model["kappa"] + 1e-9


@pytest.mark.parametrize("refine_table, want", [("", None), ("[refine]\n", True),
                                                ("[refine]\nepochs = 3\n", {"epochs": 3})])
def test_bcd_options_are_what_the_problem_file_states(tmp_path, refine_table, want):
    """One mapping from a problem file to solve_bcd's keywords (the CLI, the experiments,
    the demos and the benchmarks use it): every stated value, the defaults otherwise, and
    the three meanings of [refine] (absent, empty, with options)."""
    from fenchel_idl.drivers.problem_file import bcd_options, load_problem

    head = ('name = "t"\nseed = 4\n[data]\nsource = "cosine"\nm = 20\n[model]\nn = 3\n'
            '[training]\nlam = 10.0\n')
    path = tmp_path / "t.toml"
    path.write_text(head + "max_sweeps = 7\ntol = 1e-4\n[schedule]\nline_search = false\n"
                    '[solver]\nname = "OSQP"\non_failure = "raise"\ngap_tol = 1e-5\n'
                    + refine_table)
    opts = bcd_options(load_problem(path))
    assert opts == {"max_sweeps": 7, "tol": 1e-4, "schedule": {"line_search": False},
                    "seed": 4, "solver": "OSQP", "on_failure": "raise", "gap_tol": 1e-5,
                    "refine": want}
    assert "refine" not in bcd_options(load_problem(path), refine=False)
    path.write_text(head)
    assert bcd_options(load_problem(path), refine=False) == {
        "max_sweeps": 40, "tol": 1e-6, "schedule": None, "seed": 4, "solver": None,
        "on_failure": "fallback", "gap_tol": 1e-6}
