"""The demonstrations command (fenchel_idl.apps.demos) on its quick settings.

Each demo runs once (module fixture, about 15 s) and its reported figures are checked
against independent references: plain numpy re-derivations on the saved models.
"""

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.analysis.compression import selected_features
from fenchel_idl.apps.demos import (
    DEMOS,
    FeatureSelectionRow,
    LowRankRow,
    RobustRow,
    RowSparsityRow,
    feature_selection_demo,
    low_rank_demo,
    main,
    run_demos,
)
from fenchel_idl.drivers.problem_file import load_problem
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.problem import datasets

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    reports = run_demos(out, quick=True, progress=False)
    return out, {r.name: r for r in reports}


def _test_set(report):
    """The held-out test images of a demo file, rebuilt independently of the demo code."""
    spec = load_problem(report.problem)
    ds = datasets.digits()
    _, test = datasets.train_test_split(ds, spec.data["test_fraction"], seed=spec.seed)
    return test


def _accuracy(model, test):
    return float(np.mean(np.argmax(model.predict(test.U), axis=0) == test.labels))


def _fixed_point(A, B, C, D, bx, by, U, tol=1e-14, max_iter=50000):
    """Plain numpy Picard iteration x <- relu(A x + B u + b) to a tight tolerance; y too."""
    X = np.zeros((A.shape[0], U.shape[1]))
    c = B @ U + bx[:, None]
    for _ in range(max_iter):
        Xn = np.maximum(A @ X + c, 0.0)
        done = np.max(np.abs(Xn - X)) <= tol * max(1.0, np.max(np.abs(Xn)))
        X = Xn
        if done:
            break
    else:  # pragma: no cover - the references are contractions
        raise AssertionError("reference fixed point did not converge")
    return X, C @ X + D @ U + by[:, None]


def _inf(M):
    return np.abs(M).sum(axis=1).max()


def _pf(M):
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def test_report_files_and_records(demo_run):
    out, reports = demo_run
    assert tuple(reports) == DEMOS
    text = (out / "demos.md").read_text()
    data = json.loads((out / "demos.json").read_text())
    assert [d["name"] for d in data["demos"]] == list(DEMOS)
    import matplotlib.image as mpimg

    for rep in reports.values():
        assert rep.title in text
        assert rep.rows and rep.trained and rep.figures
        for fig in rep.figures:
            img = mpimg.imread(out / fig)
            assert img.ndim == 3 and min(img.shape[:2]) > 100
            assert f"]({fig})" in text
        for t in rep.trained:
            assert (out / t.file).is_file()
    assert all(isinstance(r, FeatureSelectionRow) for r in reports["feature_selection"].rows)
    assert all(isinstance(r, RowSparsityRow) for r in reports["row_sparsity"].rows)
    assert all(isinstance(r, LowRankRow) for r in reports["low_rank"].rows)
    assert all(isinstance(r, RobustRow) for r in reports["robust"].rows)
    # a bar inside a table cell is escaped, so the tables keep their columns
    for line in text.splitlines():
        if line.startswith("| weight | rank"):
            assert line.replace("\\|", "").count("|") == 14


def test_feature_selection_matches_selected_features_and_the_mask_images(demo_run):
    import matplotlib.image as mpimg

    out, reports = demo_run
    rep = reports["feature_selection"]
    test = _test_set(rep)
    for row, trained in zip(rep.rows, rep.trained):
        model = ImplicitModel.load(out / row.model_file)
        ref = np.flatnonzero(np.linalg.norm(np.vstack([model.B, model.D]), axis=0) > 0)
        assert list(row.features) == ref.tolist() == selected_features(model).tolist()
        assert row.n_features == ref.size
        img = mpimg.imread(out / row.mask_file)
        s = row.mask_scale
        assert img.shape[:2] == (8 * s, 8 * s)
        centres = img[s // 2::s, s // 2::s, 0]  # one value per input pixel
        assert np.all((centres == 0.0) | (centres == 1.0))
        assert int(centres.sum()) == row.n_features
        assert np.flatnonzero(centres.ravel() == 1.0).tolist() == list(row.features)
        assert row.test_accuracy == pytest.approx(_accuracy(model, test), abs=1e-12)
        assert trained.test_accuracy == row.test_accuracy
    # the penalty removes pixels: the largest weight keeps fewer than no penalty
    by_weight = sorted(rep.rows, key=lambda r: r.weight)
    assert by_weight[0].weight == 0 and by_weight[-1].n_features < by_weight[0].n_features


def test_reduced_model_predicts_like_the_original(demo_run):
    out, reports = demo_run
    rep = reports["row_sparsity"]
    rng = np.random.default_rng(7)
    U = np.hstack([rng.uniform(0, 1, (64, 40)), 3 * rng.standard_normal((64, 40))])
    for row in rep.rows:
        full = ImplicitModel.load(out / row.model_file)
        small = ImplicitModel.load(out / row.reduced_file)
        assert (full.n, small.n) == (row.n_states, row.n_reduced)
        _, Y_ref = _fixed_point(full.A, full.B, full.C, full.D, full.bias_x, full.bias_y, U)
        Y_small = small.predict(U, tol=1e-13, max_iter=20000)
        assert np.max(np.abs(Y_small - Y_ref)) <= 1e-10
        assert row.max_abs_diff <= 1e-10
        # states whose row of (A, B) is zero are constants: reduce removes at least those
        dead = np.all(np.hstack([full.A, full.B]) == 0, axis=1).sum()
        assert row.n_states - row.n_reduced >= dead
        assert row.speedup > 0 and np.isfinite(row.speedup)
    assert any(r.n_reduced < r.n_states for r in rep.rows)


def test_low_rank_error_never_exceeds_the_theorem_5_1_bound(demo_run):
    out, reports = demo_run
    rep = reports["low_rank"]
    test = _test_set(rep)
    U = np.asarray(test.U)
    checked = 0
    for row in rep.rows:
        (trained,) = [t for t in rep.trained if t.weight == row.weight]
        m = ImplicitModel.load(out / trained.file)
        Uf, s, Vt = np.linalg.svd(m.A)
        A0 = (Uf[:, :row.rank] * s[:row.rank]) @ Vt[:row.rank]
        E = np.abs(m.A - A0)
        M = np.abs(A0) + E
        X, Y = _fixed_point(m.A, m.B, m.C, m.D, m.bias_x, m.bias_y, U)
        assert row.bound_pf == pytest.approx(_pf(M), rel=1e-6)
        if _pf(M) >= 1:
            assert row.state_bound is None and row.output_bound is None
            continue
        X0, Y0 = _fixed_point(A0, m.B, m.C, m.D, m.bias_x, m.bias_y, U)
        bound = np.linalg.solve(np.eye(m.n) - M, E @ np.abs(X0))
        err = np.abs(X - X0)
        assert np.all(err <= bound + 1e-9)
        assert np.all(np.abs(Y - Y0) <= np.abs(m.C) @ bound + 1e-9)
        assert row.state_error == pytest.approx(err.max(), rel=1e-6, abs=1e-9)
        assert row.state_bound == pytest.approx(bound.max(), rel=1e-6, abs=1e-12)
        assert row.output_error <= row.output_bound + 1e-9
        assert row.bound_violations == 0
        assert row.test_accuracy == pytest.approx(
            float(np.mean(np.argmax(Y0, axis=0) == test.labels)), abs=1e-12)
        checked += 1
    assert checked >= 1


def test_robust_rho_is_the_saved_models_and_falls_with_the_weight(demo_run):
    out, reports = demo_run
    rep = reports["robust"]
    test = _test_set(rep)
    for row in rep.rows:
        m = ImplicitModel.load(out / row.model_file)
        a = _inf(m.A)
        assert a < 1
        rho = _inf(m.B) * _inf(m.C) / (1 - a) + _inf(m.D)
        S = np.abs(m.C) @ np.linalg.solve(np.eye(m.n) - np.abs(m.A), np.abs(m.B)) + np.abs(m.D)
        assert row.rho == pytest.approx(rho, rel=1e-12)
        assert row.sensitivity_inf == pytest.approx(S.sum(axis=1).max(), rel=1e-8)
        assert row.state_path_share == pytest.approx((rho - _inf(m.D)) / rho, rel=1e-9)
        assert row.penalty_bound == pytest.approx(
            0.5 * (_inf(m.B) ** 2 + _inf(m.C) ** 2) / (1 - a) + _inf(m.D), rel=1e-12)
        # lower bound <= certified bounds, up to the rounding of two formulas for one value
        # (with A = 0 the sensitivity matrix bound is tight: S_inf = rho in exact arithmetic)
        assert row.local_gain <= row.sensitivity_inf * (1 + 1e-9)
        assert row.sensitivity_inf <= row.rho * (1 + 1e-9)
        assert row.test_accuracy == pytest.approx(_accuracy(m, test), abs=1e-12)
    weights = [r.weight for r in rep.rows]
    rhos = [r.rho for r in rep.rows]
    assert weights == sorted(weights)
    assert all(b <= a for a, b in pairwise(rhos))
    assert rhos[-1] < rhos[0]


def test_demo_problem_files_load_and_name_their_demo():
    for name in DEMOS:
        spec = load_problem(PROBLEMS / f"{name}_digits.toml")
        assert spec.demo["kind"] == name
        assert spec.penalties and spec.penalties[0]["name"]


def test_command_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--quick", "--only", "feature_selection",
                 "--no-progress"]) == 0
    assert "feature_selection" in capsys.readouterr().out
    data = json.loads((tmp_path / "demos.json").read_text())
    assert [d["name"] for d in data["demos"]] == ["feature_selection"]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--only", "sparsity"])
    assert "'only' must name demos" in capsys.readouterr().err


def _file(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


_FS = (PROBLEMS / "feature_selection_digits.toml").read_text()


def _fs_with(old, new):
    """The feature-selection file with ``old`` replaced (which must occur in it, so that a
    changed file cannot turn a refusal case into a full training run)."""
    assert old in _FS, old
    return _FS.replace(old, new)


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: run_demos(t, only="nope", progress=False), ValidationError,
     r"'only' must name demos among .*got \['nope'\]"),
    (lambda t: run_demos(t, only=3, progress=False), InputTypeError, r"'only'"),
    (lambda t: feature_selection_demo(5), InputTypeError, r"'out' must be a directory path"),
    (lambda t: feature_selection_demo(t, quick="yes"), InputTypeError,
     r"'quick' must be a bool"),
    (lambda t: feature_selection_demo(t, progress=1), InputTypeError, r"'progress'"),
    (lambda t: feature_selection_demo(t, PROBLEMS / "robust_digits.toml"), ValidationError,
     r"kind must be 'feature_selection'.*got 'robust'"),
    (lambda t: feature_selection_demo(t, PROBLEMS / "digits.toml"), ValidationError,
     r"no \[demo\] table"),
    (lambda t: feature_selection_demo(t, _file(t, _fs_with("refit_epochs = 0",
                                                              "refit_epoch = 0"))),
     ValidationError, r"\[demo\] keys must be among .*got \['refit_epoch'\]"),
    (lambda t: feature_selection_demo(t, _file(t, _fs_with("weights = [0.0, 0.03",
                                                         "weights = [-1.0, 0.03"))),
     ValidationError, r"weights.*got -1"),
    (lambda t: feature_selection_demo(t, _file(t, _fs_with('name = "feature_selection"',
                                                              'name = "l1"'))),
     ValidationError, r"must be 'feature_selection'; got 'l1'"),
    (lambda t: feature_selection_demo(t, _file(t, _fs_with('train = "bcd"',
                                                              'train = "sgd"'))),
     ValidationError, r"train must be 'refine' or 'bcd'; got 'sgd'"),
    (lambda t: low_rank_demo(t, _file(t, (PROBLEMS / "low_rank_digits.toml").read_text()
                                      .replace("100, 200]", "100, 201]"))),
     ValidationError, r"ranks must be at most n = 200; got 201"),
    (lambda t: load_problem(_file(t, "demo = 3\n[data]\nsource = 'digits'\n[model]\nn = 3\n")),
     ValidationError, r"\[demo\] must be a table"),
])
def test_bad_input_gets_a_clear_error(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tmp_path)
