"""``fenchel-idl run`` on a ``[teacher]`` problem file: the teacher MLP trained, the implicit
model fitted to its states (fit_teacher), and its results written as the BCD path writes
its own, checked against independent references: the reloaded model re-run by a plain numpy
fixed-point iteration, and scikit-learn's own predictions of the same teacher."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.apps import run as run_module
from fenchel_idl.apps.cli import main
from fenchel_idl.drivers import load_data, load_problem

pytest.importorskip("sklearn")

#: Small and fast: 300 digits, a (12, 8) ReLU teacher.
DIGITS = """name = "teach"
seed = 3
[data]
source = "digits"
n = 300
test_fraction = 0.25
[teacher]
hidden = [12, 8]
max_iter = 150
kappa = 0.4
l1_A = 0.002
l1_B = 0.002
"""

COSINE = """name = "teach_cos"
seed = 1
[data]
source = "cosine"
m = 80
[teacher]
hidden = [6]
max_iter = 400
learning_rate_init = 0.01
l1_A = 0.0
l1_B = 0.0
"""


def _problem(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def _strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _numpy_predict(model: ImplicitModel, U: np.ndarray, iters: int = 300) -> np.ndarray:
    """y = C x + D u + d at x = relu(A x + B u + b), by plain Picard iteration (a
    contraction: ||A||_inf <= kappa < 1)."""
    X = np.zeros((model.n, U.shape[1]))
    for _ in range(iters):
        X = np.maximum(model.A @ X + model.B @ U + model.bias_x[:, None], 0.0)
    return model.C @ X + model.D @ U + model.bias_y[:, None]


def _run(tmp_path, text, capsys, *extra):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the teacher's ConvergenceWarning at few epochs
        assert main(["run", str(_problem(tmp_path, text)), "--quiet", "--out", str(out),
                     *extra]) == 0
    return out, capsys.readouterr().out


def test_run_teacher_writes_a_certified_fit_that_reloads_and_predicts_as_reported(tmp_path,
                                                                                   capsys):
    from sklearn.neural_network import MLPClassifier

    out, stdout = _run(tmp_path, DIGITS, capsys)
    assert sorted(p.name for p in out.iterdir()) == [
        "certificate.json", "certificate.txt", "manifest.json", "model.npz", "summary.json",
        "teacher.npz"]
    assert set(run_module.check_results(out)) == {
        "model.npz", "teacher.npz", "certificate.json", "certificate.txt", "summary.json"}
    summary = _strict_json(out / "summary.json")
    cert = _strict_json(out / "certificate.json")
    # the certificate: each row's gap within the tolerance, the readout's, well-posedness
    assert len(cert["rows"]) == 20 and cert["rows_certified"] == 20 == summary["rows_certified"]
    assert all(r["certified"] and 0.0 <= r["gap"] <= 1e-6 for r in cert["rows"])
    assert all(r["lower"] <= r["objective"] + 1e-12 for r in cert["rows"])
    assert cert["readout"]["certified"] and cert["readout"]["gap"] <= 1e-6
    model = ImplicitModel.load(out / "model.npz")
    norm_inf = np.abs(model.A).sum(axis=1).max()
    assert cert["well_posed"] and norm_inf <= 0.4 + 1e-9
    assert cert["norm_inf"] == pytest.approx(norm_inf, rel=1e-9)
    assert summary["zeros_A"] == pytest.approx(np.mean(model.A == 0.0))
    # the reloaded model, re-run by numpy, has the accuracies reported
    train, test = load_data(load_problem(tmp_path / "p.toml"))
    for ds, key in ((train, "train"), (test, "test")):
        labels = _numpy_predict(model, ds.U).argmax(axis=0)
        assert summary[key]["accuracy"] == np.mean(labels == ds.labels), key
    # the teacher's accuracy is scikit-learn's own, for the same network on the same split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=150, random_state=3).fit(train.U.T, train.labels)
    assert summary["teacher_test"]["accuracy"] == mlp.score(test.U.T, test.labels)
    assert summary["teacher_train"]["accuracy"] == mlp.score(train.U.T, train.labels)
    teacher = ImplicitModel.load(out / "teacher.npz")
    np.testing.assert_array_equal(_numpy_predict(teacher, test.U).argmax(axis=0),
                                  mlp.predict(test.U.T))
    # what is printed is what is written
    text = (out / "certificate.txt").read_text()
    assert "every row certified          : yes (20/20" in text and "NOT certified:" in text
    assert text.count("\n  state ") == 20
    assert (f"test accuracy: teacher {summary['teacher_test']['accuracy']:.4f}, fitted "
            f"{summary['test']['accuracy']:.4f}") in stdout
    assert "well-posed                   : yes" in stdout and str(out / "manifest.json") in stdout


def test_run_teacher_regression_against_scikit_learn(tmp_path, capsys):
    """A regression teacher (MLPRegressor): its RMSE is scikit-learn's, and without
    penalties the fitted model reproduces it (a one-layer teacher is recovered exactly)."""
    from sklearn.neural_network import MLPRegressor

    out, _ = _run(tmp_path, COSINE, capsys)
    summary = _strict_json(out / "summary.json")
    train, _ = load_data(load_problem(tmp_path / "p.toml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPRegressor(hidden_layer_sizes=(6,), max_iter=400, learning_rate_init=0.01,
                           random_state=1).fit(train.U.T, train.Y.ravel())
    rmse = float(np.sqrt(np.mean((mlp.predict(train.U.T) - train.Y.ravel()) ** 2)))
    assert summary["teacher_train"]["rmse"] == pytest.approx(rmse, rel=1e-9)
    model = ImplicitModel.load(out / "model.npz")
    fitted = float(np.sqrt(np.mean((_numpy_predict(model, train.U) - train.Y) ** 2)))
    assert summary["train"]["rmse"] == pytest.approx(fitted, rel=1e-9)
    assert fitted == pytest.approx(rmse, rel=1e-4)


@pytest.mark.parametrize("extra, said", [
    (["--max-sweeps", "3"], "max_sweeps is for BCD training"),
    (["--checkpoint", "ck"], "checkpoint is for BCD training"),
])
def test_run_teacher_refuses_bcd_options_before_anything(tmp_path, capsys, extra, said):
    out = tmp_path / "out"
    assert main(["run", str(_problem(tmp_path, DIGITS)), "--quiet", "--out", str(out),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert "is a state-driven fit ([teacher])" in err and said in err
    assert not out.exists() and not (tmp_path / "ck").exists()


def test_run_teacher_replaces_an_earlier_bcd_run(tmp_path, capsys):
    """The same output directory policy as BCD: a BCD run's files are results of an earlier
    run, replaced without --overwrite, and none of them (history, plots) stays."""
    bcd = ('name = "b"\n[data]\nsource = "cosine"\nm = 20\n[model]\nn = 2\n[training]\n'
           'max_sweeps = 1\n')
    out = tmp_path / "out"
    bcd_path = tmp_path / "b.toml"
    bcd_path.write_text(bcd)
    assert main(["run", str(bcd_path), "--quiet", "--out", str(out)]) == 0
    assert (out / "history.json").is_file()
    _run(tmp_path, DIGITS, capsys)
    assert not (out / "history.json").exists() and not (out / "convergence.png").exists()
    run_module.check_results(out)


def test_teacher_max_iter_is_the_mlps_and_fit_max_iter_the_fits(tmp_path):
    """[teacher] max_iter caps the MLP's epochs only; fit_max_iter caps the first-order fit:
    3 epochs leave the rows certifiable by FISTA, 2 FISTA iterations do not certify them."""
    from sklearn.neural_network import MLPClassifier

    head = DIGITS.replace("max_iter = 150", "max_iter = 3") + 'method = "fista"\n'
    spec_path = _problem(tmp_path, head + "fit_max_iter = 20000\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit, summary = run_module.run_problem(spec_path, progress=False)
        train, test = load_data(load_problem(spec_path))
        mlp = MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=3,
                            random_state=3).fit(train.U.T, train.labels)
    assert summary["teacher_test"]["accuracy"] == mlp.score(test.U.T, test.labels)
    assert fit.certified and all(r.solve.solver == "FISTA" for r in fit.rows)
    spec_path.write_text(head + "fit_max_iter = 2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short, _ = run_module.run_problem(spec_path, progress=False)
    assert not all(r.certified for r in short.rows)
    assert "NOT certified" in short.certificate_text()


@pytest.mark.parametrize("labels, said", [
    ([0, 1] * 15, r"K >= 3.*got the classes \[0, 1\] of K = 2"),
    ([0, 1, 3] * 10, r"every class 0, \.\.\., K-1.*got the classes \[0, 1, 3\] of K = 4"),
])
def test_fit_teacher_refuses_labels_an_argmax_cannot_read(labels, said):
    """Two classes (one logistic output) or a missing class (output unit != label) would
    make the reported accuracy wrong: refused before the MLP is trained."""
    from fenchel_idl.drivers import fit_teacher
    from fenchel_idl.errors import ValidationError

    U = np.random.default_rng(0).normal(size=(3, len(labels)))
    with pytest.raises(ValidationError, match=said):
        fit_teacher({"hidden": [4]}, U, np.array(labels))
