"""The cosine-targets benchmark (fenchel_idl.apps.bench) reports what it ran."""

import re
import sys

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the project's own fallback (pyproject.toml)
    import tomli as tomllib


def test_cosine_targets_benchmark_reports_what_it_ran(tmp_path):
    """The benchmark's figures are those of the models it trained: the improvement is the
    ratio of the two RMSEs, BCD never ends above its start (the line search only accepts
    improving steps), and the file's refinement keeps its best epoch, so it never ends
    above the BCD point it started from (here the file with 5 refinement epochs)."""
    from pathlib import Path

    from fenchel_idl.apps.bench import bench_cosine_targets

    text = (Path(__file__).resolve().parents[2] / "problems"
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

    path = Path(__file__).resolve().parents[2] / "problems" / "cosine_regression.toml"
    ball = tomllib.loads(path.read_text())["training"]["bounds"]["C"]  # not our loader
    out = bench_cosine_targets(max_sweeps=1, refined=False, heldout=10)
    assert [r["ball_C"] for r in out["rows"]] == [ball, 100.0, 50.0]
    assert out["refine"] is None and "refined_rmse" not in out["rows"][0]
    # BCD figures: the readout is the certified one, not moved by a refinement
    assert all(r["certified"] for r in out["rows"])


def test_penalty_benchmark_times_each_penalty_against_the_unpenalized_run(monkeypatch):
    """bench_penalties: the first row is the baseline of the same process (ratio 1), every
    ratio is its row's seconds over the baseline's, the named l1 keeps the fast blocks and a
    callable group norm on B is flagged as taking the generic CVXPY path."""
    import cvxpy as cp

    from fenchel_idl.apps import bench
    from fenchel_idl.problem import L1

    def group_b(A, B, C, D):
        return 1e-3 * cp.sum(cp.norm(B, 2, axis=0))

    monkeypatch.setattr(bench, "_penalty_cases",
                        lambda weight: [("l1", L1(weight)), ("group", group_b)])
    rows = bench.bench_penalties(quick=True, n=4)
    assert [r["label"] for r in rows] == ["no penalty", "l1", "group"]
    assert rows[0]["ratio"] == 1.0
    for r in rows[1:]:
        assert r["ratio"] == pytest.approx(r["s"] / rows[0]["s"])
    assert [r["generic"] for r in rows] == [False, False, True]
    assert all(r["certified"] for r in rows)


def test_one_section_runs_alone_and_is_written_to_its_own_results_section(monkeypatch,
                                                                         tmp_path):
    """``--only penalties`` runs that section only and writes it between the markers of
    ``bench-penalties``, leaving the document's other sections as they were; an unknown
    section name is refused by name."""
    from fenchel_idl.apps import bench
    from fenchel_idl.apps.common import read_section, write_section
    from fenchel_idl.errors import ValidationError
    from fenchel_idl.problem import L1

    monkeypatch.setattr(bench, "_penalty_cases", lambda weight: [("l1", L1(weight))])
    doc = tmp_path / "results.md"
    write_section("bench", "the full report", doc)
    results = bench.benchmark(True, None, doc, "fenchel-idl bench --only penalties",
                              "penalties")
    assert set(results) == {"penalties", "lines"}
    assert [r["label"] for r in results["penalties"]] == ["no penalty", "l1"]
    text = read_section("bench-penalties", doc)
    assert "declared penalties" in text and "--only penalties" in text
    assert read_section("bench", doc) == "the full report"
    with pytest.raises(ValidationError, match="bench section"):
        bench.run_benchmarks(True, only=["nonsense"])
