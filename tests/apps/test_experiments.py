"""The experiments command: problem files, quick runs, the report.

The full quick run of every experiment (about a minute and a half on 2 cores) is marked
slow; run it with::

    python -m pytest -m slow tests/apps/test_experiments.py

or directly: ``python -m fenchel_idl.apps.experiments --quick --out runs/quick``.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fenchel_idl.apps.experiments import EXPERIMENTS, Target, _patched, main
from fenchel_idl.drivers.problem_file import load_problem
from fenchel_idl.errors import ValidationError

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"
OURS = ("synthetic_network", "synthetic_implicit", "digits", "mnist", "fashion_mnist")


@pytest.mark.parametrize("name", OURS)
def test_problem_files_parse(name):
    spec = load_problem(PROBLEMS / f"{name}.toml")
    assert spec.name == name
    assert spec.model["n"] >= 1
    assert "test_fraction" in spec.data or "test_split" in spec.data
    exp = EXPERIMENTS[name]
    # the baseline MLP has as many hidden units as the implicit model has states (sec. 3.2)
    assert sum(exp.mlp_hidden) == spec.model["n"]


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_quick_overrides_keep_sizes_matched(name):
    exp = EXPERIMENTS[name]
    path = PROBLEMS / f"{name}.toml"
    if not path.is_file():
        pytest.skip(f"{path} is not written yet")
    spec = load_problem(path)
    quick = _patched(spec, exp.quick)
    hidden = exp.quick.get("experiment", {}).get("mlp_hidden", exp.mlp_hidden)
    assert sum(hidden) == quick.model["n"]
    assert spec.model["n"] == load_problem(path).model["n"]  # the spec was not mutated


def test_targets():
    vs = Target("vs_mlp", 0.01, "")
    assert vs.met(0.90, 0.905, higher_is_better=True)
    assert not vs.met(0.88, 0.90, higher_is_better=True)
    assert vs.met(0.50, 0.495, higher_is_better=False)
    assert not vs.met(float("nan"), 0.5, higher_is_better=True)
    assert Target("at_most", 0.65, "").met(0.6, 9.0, higher_is_better=False)
    assert not Target("at_most", 0.65, "").met(0.7, 0.1, higher_is_better=False)
    assert Target("at_least", 0.9, "").met(0.95, 1.0, higher_is_better=True)


def test_quick_run_writes_report(tmp_path, capsys):
    code = main(["--quick", "--only", "synthetic_network", "synthetic_implicit",
                 "--out", str(tmp_path)])
    assert code == 0
    report = (tmp_path / "report.md").read_text()
    assert ("| experiment | paper figure | metric | BCD alone | BCD + refinement | "
            "random start + refinement | MLP (matched size) |") in report
    for name in ("synthetic_network", "synthetic_implicit"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert "Fig. " in row and ("yes" in row or "no" in row)
        assert (tmp_path / f"{name}_curves.png").stat().st_size > 1000
        assert (tmp_path / f"{name}_bcd.png").is_file()
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["experiment"]["name"] for r in results] == ["synthetic_network",
                                                          "synthetic_implicit"]
    run = results[0]["runs"][0]
    assert 0.5 <= run["implicit"] <= 1.0 and 0.0 <= run["mlp"] <= 1.0
    assert run["certificate"]["well_posed"]
    # the four implicit models of the same run, each with its test figure and wall time
    section = report.split("## synthetic_network")[1].split("## synthetic_implicit")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    labels = ("random-feature start", "**BCD alone**", "BCD + refinement",
              "refinement from a random start")
    for label, key in zip(labels, ("start", "bcd", "final", "random")):
        row = next(line for line in rows if line.startswith(f"| {label}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{run['train'][key]:.3f}" and cells[2] == f"{run['test'][key]:.3f}"
        assert cells[3].endswith(" s")
    assert run["test"]["bcd"] == run["implicit_bcd"] and run["test"]["final"] == run["implicit"]
    assert run["test"]["random"] == run["implicit_random"]
    t = run["times"]
    assert 0.0 < t["start"] < t["bcd"] and t["random"] > 0.0
    # the relaxation gap of the BCD model is reported, as its certificate states it
    cert = run["certificate"]
    assert f"{cert['relaxation_gap']:+.3g}" in section and "Relaxation gap" in section
    assert cert["true_loss"] > 0.0
    assert cert["state_objective"] == pytest.approx(cert["relaxed_objective"]
                                                    + cert["relaxation_gap"])
    # the gap of one model from the last X-block solve: minimizing over the states alone
    # cannot rise above the model's true objective (its equilibrium is a feasible X with
    # zero divergence), and when that model is the returned one its true objective is the
    # certificate's true objective of BCD's final state
    assert cert["x_gap_relaxed"] <= cert["x_gap_true"] + 1e-9
    if cert["x_gap_is_returned"]:
        assert cert["x_gap_true"] == pytest.approx(cert["state_objective"], rel=1e-6)
    assert f"{cert['x_gap_true'] - cert['x_gap_relaxed']:+.3g}" in section
    assert "wrote" in capsys.readouterr().out


def test_missing_problem_file_is_reported_as_skipped(tmp_path):
    code = main(["--quick", "--only", "digits", "--problems", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")])
    assert code == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| digits |" in report and "skipped" in report


def test_bad_seed_count_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["--quick", "--seeds", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_run_of_every_experiment(tmp_path):
    """python -m pytest -m slow tests/apps/test_experiments.py (about 1.5 minutes)."""
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for name in EXPERIMENTS:
        assert f"| {name} |" in report


def test_mlp_batch_search_picks_the_best_validation_pair():
    """With ``mlp_batches`` the batch size is searched jointly with the step size: the pair
    returned is the one whose MLP, retrained here on the same split, scores best."""

    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from fenchel_idl.apps.experiments import _MLP_LRS, _tune_mlp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((160, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
    exp = dataclasses.replace(EXPERIMENTS["digits"], mlp_hidden=(5,), mlp_epochs=5,
                              mlp_batches=(8, 40))
    lr, batch = _tune_mlp(exp, X, y, 5, seed=3)
    assert batch in (8, 40) and lr in _MLP_LRS
    Xa, Xv, ya, yv = train_test_split(X, y, test_size=0.2, random_state=3, stratify=y)
    scores = {}
    for b in (8, 40):
        for rate in _MLP_LRS:
            net = MLPClassifier((5,), solver="adam", learning_rate_init=rate, alpha=0.0,
                                batch_size=b, random_state=3)
            for _ in range(5):
                net.partial_fit(Xa, ya, classes=np.unique(y))
            scores[(rate, b)] = np.mean(net.predict(Xv) == yv)
    assert scores[(lr, batch)] == max(scores.values())
    # without a batch grid the experiment's own batch is kept
    assert _tune_mlp(dataclasses.replace(exp, mlp_batches=None, mlp_batch=40), X, y, 5,
                     seed=3)[1] == 40


def test_target_of_bcd_checks_the_bcd_model():
    """A target about BCD alone is judged on the BCD model, not the refined one."""
    from fenchel_idl.apps.experiments import ExperimentResult, SeedRun

    exp = EXPERIMENTS["digits"]
    assert exp.target.of == "bcd" and exp.select_sweeps
    runs = [SeedRun(seed=0, implicit=0.99, mlp=0.95, linear=0.9, implicit_start=0.9,
                    implicit_bcd=0.94)]
    assert ExperimentResult(exp, "default", runs=runs).met is False
    runs[0].implicit_bcd = 0.951
    assert ExperimentResult(exp, "default", runs=runs).met is True
    final = dataclasses.replace(exp, target=Target("vs_mlp", 0.0, "", of="final"))
    runs[0].implicit_bcd = 0.5
    assert ExperimentResult(final, "default", runs=runs).met is True


def test_choose_sweeps_scores_the_model_a_run_of_k_sweeps_returns():
    """Each point of the validation curve is the model of an uninterrupted BCD run of that
    many sweeps (re-run here without checkpoints), scored on the held-out part of the
    training set only; the count chosen is the best point (the fewest sweeps on ties)."""
    from fenchel_idl.apps.common import score
    from fenchel_idl.apps.experiments import choose_sweeps
    from fenchel_idl.drivers import bcd_options, build_problem, load_data, solve_bcd
    from fenchel_idl.problem import datasets

    spec = _patched(load_problem(PROBLEMS / "synthetic_network.toml"),
                    {"data": {"m": 150}, "model": {"n": 4}, "training": {"max_sweeps": 3}})
    train, _ = load_data(spec)
    chosen = choose_sweeps(spec, train, metric="accuracy", seed=1)
    fit, val = datasets.train_test_split(train, 0.2, seed=spec.seed)
    assert (chosen["m_fit"], chosen["m_val"]) == (fit.m, val.m) and fit.m + val.m == train.m
    assert 1 <= len(chosen["curve"]) <= 3
    opts = bcd_options(spec, refine=False)
    for k, value in chosen["curve"]:
        res = solve_bcd(build_problem(spec, fit), **{**opts, "max_sweeps": k, "seed": 1})
        assert res.n_sweeps == k
        assert value == score(res.model, val.U, val.labels, "classification")
    values = [v for _, v in chosen["curve"]]
    assert chosen["sweeps"] == chosen["curve"][values.index(max(values))][0]


_MB_DIGITS = """
name = "digits_mb"
seed = 0
[data]
source = "digits"
test_fraction = 0.2
[model]
n = 8
kappa = 0.5
[training]
loss = "cross_entropy"
lam = 1.0
bounds = { B = 5.0, C = 2.0, D = 2.0 }
[minibatch]
batch_size = 500
epochs = 2
[refine]
epochs = 1
"""


def test_a_minibatch_problem_file_is_trained_by_minibatch_bcd_in_the_experiment(tmp_path):
    from fenchel_idl import solve_bcd_minibatch
    from fenchel_idl.apps.experiments import choose_sweeps, run_experiment
    from fenchel_idl.drivers.problem_file import build_problem, load_data

    path = tmp_path / "digits_mb.toml"
    path.write_text(_MB_DIGITS)
    exp = dataclasses.replace(EXPERIMENTS["digits"], select_sweeps=False, runs=1,
                              mlp_hidden=(8,), mlp_epochs=2, mlp_batches=None)
    res = run_experiment(exp, path, seeds=1)
    # the BCD-alone row is the model of the file's mini-batch run, stated by hand
    spec = load_problem(path)
    train, test = load_data(spec)
    ref = solve_bcd_minibatch(build_problem(spec, train), batch_size=500, epochs=2, seed=0)
    labels = np.argmax(ref.model.predict(test.U), axis=0)
    assert res.runs[0].implicit_bcd == pytest.approx(np.mean(labels == test.labels), abs=0)
    assert res.runs[0].certificate["n_sweeps"] == 2
    assert res.settings["minibatch"]["batch_size"] == 500
    # choosing a sweep count resumes full-batch checkpoints: refused for such a file
    with pytest.raises(ValidationError, match="minibatch"):
        choose_sweeps(spec, train)


def test_an_experiment_says_each_stage_and_passes_the_drivers_progress(tmp_path, caplog):
    import logging

    from fenchel_idl.apps.experiments import run_experiment

    path = tmp_path / "digits_mb.toml"
    path.write_text(_MB_DIGITS)
    exp = dataclasses.replace(EXPERIMENTS["digits"], select_sweeps=False, runs=1,
                              mlp_hidden=(8,), mlp_epochs=2, mlp_batches=None)
    lines: list[str] = []
    with caplog.at_level(logging.INFO, logger="fenchel_idl.drivers"):
        res = run_experiment(exp, path, seeds=1, log=lines.append, progress=True)
    stages = ["tuning the MLP", "seed 0: BCD alone (2 epoch(s) on 1438 samples)",
              "refinement of the BCD model", "refinement from a random start",
              "the MLP (2 epochs)", "seed 0: start"]
    found = [next(i for i, line in enumerate(lines) if stage in line) for stage in stages]
    assert found == sorted(found), lines
    # the drivers' own lines (no terminal here: INFO records), one per epoch of each stage
    driver = [r.getMessage() for r in caplog.records if r.name == "fenchel_idl.drivers"]
    assert any(m.startswith("mini-batch BCD: epoch 2/2") for m in driver), driver
    assert sum(m.startswith("refine: epoch 1/1") for m in driver) == 2, driver
    # progress changes what is shown, not what is trained
    quiet = run_experiment(exp, path, seeds=1)
    assert res.runs[0].implicit_bcd == quiet.runs[0].implicit_bcd
    assert res.runs[0].implicit == quiet.runs[0].implicit
