"""The command-line tool: one ``fenchel-idl`` with a subcommand per application, each with
its own ``--help``; the logging flags; and the package list of pyproject.toml."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from fenchel_idl.apps import cli
from fenchel_idl.apps import run as run_module
from fenchel_idl.apps.cli import COMMANDS, configure_logging, main
from fenchel_idl.apps.common import SHIPPED_PROBLEMS, problems_dir
from fenchel_idl.errors import ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

#: One option of each subcommand that its --help must list (its own parser's options).
OWN_OPTIONS = {
    "run": ["--max-sweeps", "--checkpoint", "--resume", "problem"],
    "experiments": ["--quick", "--full", "--only", "--seeds", "--no-progress"],
    "demos": ["--no-progress", "--only", "--problems"],
    "attacks": ["--lp-images", "--relaxation", "--n-train"],
    "bench": ["--quick", "--results"],
    "bench-refine": ["--problem", "--quick", "--results"],
    "results": ["--only", "--runs"],
}


@pytest.fixture(autouse=True)
def _restore_logger():
    """Each test leaves the ``fenchel_idl`` logger as it found it."""
    logger = logging.getLogger("fenchel_idl")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_every_command_is_listed():
    assert set(OWN_OPTIONS) == {"run", *COMMANDS}


@pytest.mark.parametrize("command", sorted(OWN_OPTIONS))
def test_each_command_help_lists_its_own_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fenchel-idl {command} ")
    for option in OWN_OPTIONS[command]:
        assert option in out, (command, option)


def test_tool_help_lists_the_commands_and_log_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--verbose" in out and "--quiet" in out
    for command in OWN_OPTIONS:
        assert f"\n  {command} " in out, command


def test_unknown_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["trian", "problems/cosine_regression.toml"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and "'run'" in err and "'experiments'" in err


def test_no_command_names_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet"])
    assert exit_.value.code == 2
    assert "name a command: run, experiments" in capsys.readouterr().err


def test_unknown_option_of_a_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["experiments", "--quikc"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "fenchel-idl experiments: error:" in err and "--quikc" in err


@pytest.mark.parametrize(("flags", "level"), [([], logging.INFO), (["--quiet"], logging.WARNING),
                                              (["-q"], logging.WARNING),
                                              (["--verbose"], logging.DEBUG),
                                              (["-v"], logging.DEBUG)])
def test_log_flags_set_the_logger_level(flags, level, monkeypatch):
    seen = {}

    def fake(argv, prog):
        seen.update(argv=argv, prog=prog, level=logging.getLogger("fenchel_idl").level)
        return 0

    monkeypatch.setitem(COMMANDS, "bench", (COMMANDS["bench"][0], fake))
    assert main([*flags, "bench", "--quick"]) == 0
    assert seen == {"argv": ["--quick"], "prog": "fenchel-idl bench", "level": level}


@pytest.mark.parametrize(("flags", "level", "progress"), [
    (["run", "P"], logging.INFO, True),
    (["--quiet", "run", "P"], logging.WARNING, False),
    (["run", "P", "--quiet"], logging.WARNING, False),
    (["run", "P", "--verbose"], logging.DEBUG, True),
    (["-v", "run", "P"], logging.DEBUG, True)])
def test_run_takes_the_log_flags_before_or_after(flags, level, progress, monkeypatch):
    seen = {}

    def fake(args):
        seen.update(level=logging.getLogger("fenchel_idl").level, progress=not args.quiet)
        return 0

    monkeypatch.setattr(cli, "_run", fake)
    assert main(flags) == 0
    assert seen == {"level": level, "progress": progress}


@pytest.mark.parametrize("command", ["demos", "experiments"])
def test_quiet_demos_and_experiments_have_no_progress_bars(monkeypatch, command):
    seen = {}
    monkeypatch.setitem(COMMANDS, command, ("", lambda argv, prog: seen.setdefault("a", argv)))
    main(["--quiet", command, "--out", "x"])
    assert seen["a"] == ["--out", "x", "--no-progress"]
    seen.clear()
    main([command, "--out", "x"])
    assert seen["a"] == ["--out", "x"]


def test_configure_logging_one_plain_stderr_handler(capsys):
    logger = configure_logging()
    configure_logging(verbose=True)  # a second call replaces the handler
    ours = [h for h in logger.handlers if h.__class__.__name__ == "_StderrHandler"]
    assert len(ours) == 1 and logger.level == logging.DEBUG
    logging.getLogger("fenchel_idl.drivers").info("sweep 3: objective 0.5")
    logging.getLogger("fenchel_idl.drivers").warning("slow")
    err = capsys.readouterr().err
    assert "sweep 3: objective 0.5\n" in err and "warning: slow\n" in err


def test_package_errors_of_a_command_are_one_line(monkeypatch, capsys):
    def fail(argv, prog):
        raise ValidationError("'seeds' must be >= 1; got 0.")

    monkeypatch.setitem(COMMANDS, "experiments", ("", fail))
    assert main(["experiments"]) == 2
    assert capsys.readouterr().err == "fenchel-idl experiments: error: 'seeds' must be >= 1; " \
                                      "got 0.\n"


def test_run_finds_a_shipped_problem_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli._problem_path("cosine_regression") == str(problems_dir()
                                                         / "cosine_regression.toml")
    assert cli._problem_path("cosine_regression.toml") == str(problems_dir()
                                                              / "cosine_regression.toml")
    assert cli._problem_path("sub/cosine_regression.toml") == "sub/cosine_regression.toml"
    assert cli._problem_path("nope") == "nope"


def test_problems_dir_in_a_checkout():
    assert problems_dir() == ROOT / "problems"
    assert problems_dir("elsewhere") == Path("elsewhere")


def test_pyproject_ships_every_package_and_the_problem_files():
    """The package list of pyproject.toml is explicit (setuptools' find cannot discover the
    mapped problems/ folder): it must name every package of the checkout."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = f"fenchel_idl.{SHIPPED_PROBLEMS}"
    packages = {".".join(init.parent.relative_to(ROOT).parts)
                for init in (ROOT / "fenchel_idl").rglob("__init__.py")}
    assert set(config["packages"]) == {*packages, shipped}
    assert config["package-dir"] == {shipped: "problems"}


# -- fenchel-idl run: output directories, as a user meets them ---------------------------------

TINY = """name = "tiny"
seed = 0
[data]
source = "cosine"
m = 20
[model]
n = 3
[training]
max_sweeps = 2
"""


def _problem(tmp_path: Path, text: str = TINY) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return str(path)


def test_run_twice_into_the_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["run", _problem(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote runs/tiny/model.npz") == 2 and "runs/tiny/manifest.json" in out
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == [
        "certificate.json", "certificate.txt", "convergence.png", "fit.png", "history.json",
        "manifest.json", "model.npz", "summary.json"]


@pytest.mark.parametrize(("name", "shown"), [("../../x", "'../../x'"),
                                             ("/tmp/fenchel-idl-abs", "'/tmp/fenchel-idl-abs'"),
                                             ("", "''"), ("..", "'..'")])
def test_run_refuses_a_name_that_is_a_path(name, shown, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = TINY.replace('name = "tiny"', f'name = "{name}"')
    assert main(["run", _problem(tmp_path, text), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fenchel-idl: error: problem file ") and "'name' must be a plain " \
        "name (it names the output directory runs/<name>)" in err and f"got {shown}." in err
    assert not (tmp_path / "runs").exists() and not Path("/tmp/fenchel-idl-abs").exists()


def test_run_checks_the_output_directory_before_training(tmp_path, monkeypatch, capsys):
    trained = []
    real = run_module._train
    monkeypatch.setattr(run_module, "_train", lambda *a: trained.append(1) or real(*a))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for out, said in [("afile", "is a file"), ("afile/sub", "cannot be created"),
                      ("other", "--overwrite"), ("/proc/x", "can be created and written")]:
        target = out if out.startswith("/") else str(tmp_path / out)
        assert main(["run", _problem(tmp_path), "--quiet", "--out", target]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and err.count("\n") == 1, err
    assert trained == [], "no training before the output directory is known to be usable"
    assert main(["run", _problem(tmp_path), "--quiet", "--out", str(tmp_path / "other"),
                 "--overwrite"]) == 0
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine" and trained == [1]


def test_run_refuses_max_sweeps_zero(tmp_path, capsys):
    assert main(["run", _problem(tmp_path), "--quiet", "--max-sweeps", "0", "--out",
                 str(tmp_path / "out")]) == 2
    assert "'max_sweeps' must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_help_states_the_output_policy(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for words in ("--overwrite", "Checked before training", "manifest.json is written last",
                  "one run at a time",
                  "refused when the problem file's data, model or settings differ"):
        assert words in out, words


# -- fenchel-idl run with [certify] global = true ----------------------------------------------

GLOBAL_TINY = ROOT / "problems" / "global_tiny.toml"


def _strict_json(path: Path):
    """The JSON of ``path``, refusing NaN and Infinity (not JSON)."""
    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _check_global_results(out: Path, stdout: str) -> dict:
    """The certificate written and printed has the global gap of the returned model: its
    true loss against the bound, as GlobalBound.line prints it (rebuilt here from the
    figures), and the bound is below the loss of the model we return and of SCIP's best."""
    cert = _strict_json(out / "certificate.json")
    bound = cert["global_bound"]
    loss, lower = cert["true_loss"], bound["lower_bound"]
    assert 0.0 < lower <= bound["upper_bound"] and bound["upper_bound"] <= loss * (1 + 1e-9)
    want = (f"  global gap                   : {100 * (loss - lower) / loss:.2f}% (true loss "
            f"{loss:.6g} >= global lower bound {lower:.6g}; SCIP {bound['status']}, "
            f"{bound['nodes']} nodes, {bound['time']:.1f} s)")
    assert want in (out / "certificate.txt").read_text().splitlines()
    assert want in stdout.splitlines()
    assert bound["trace"] and all(len(row) == 4 for row in bound["trace"])
    summary = _strict_json(out / "summary.json")["global_bound"]
    assert summary["gap_of_returned_model"] == pytest.approx((loss - lower) / loss, rel=1e-12)
    run_module.check_results(out)
    return bound


def test_run_with_a_global_bound(tmp_path, capsys):
    """The shipped tiny problem with 6 samples (fast): the certificate gets the global gap."""
    pytest.importorskip("pyscipopt")
    text = GLOBAL_TINY.read_text().replace("m = 10\n", "m = 6\n")
    assert "m = 6\n" in text
    out = tmp_path / "out"
    assert main(["run", _problem(tmp_path, text), "--quiet", "--out", str(out)]) == 0
    bound = _check_global_results(out, capsys.readouterr().out)
    assert bound["gap"] <= 0.01 and bound["status"] in ("gaplimit", "optimal")


@pytest.mark.slow
def test_run_the_shipped_global_tiny_problem(tmp_path, capsys):
    """problems/global_tiny.toml as documented: SCIP closes its gap to 0.5% within its limit,
    and the trained model is within 1% of the global optimum."""
    pytest.importorskip("pyscipopt")
    out = tmp_path / "g"
    assert main(["run", str(GLOBAL_TINY), "--quiet", "--out", str(out)]) == 0
    bound = _check_global_results(out, capsys.readouterr().out)
    assert bound["gap"] <= 0.005 and bound["time"] < 60.0
    summary = _strict_json(out / "summary.json")["global_bound"]
    assert summary["gap_of_returned_model"] <= 0.01


@pytest.mark.parametrize(("old", "new", "error"), [
    ("\nn = 1 ", "\nn = 4 ", r"global_bound handles n <= 3 states .*got n = 4, m = 10 "),
    ("m = 10\n", "m = 151\n", r"got n = 1, m = 151 \(n \* m = 151\)"),
    ('activation = "relu"', 'activation = "tanh"', r"needs the 'relu' activation"),
    ("[certify]", '[[penalties]]\nname = "l1"\nweight = 0.001\non = "A"\n[certify]',
     r"needs a problem without penalties"),
])
def test_run_refuses_a_global_bound_it_cannot_give_before_training(tmp_path, monkeypatch,
                                                                    capsys, old, new, error):
    """Sizes, activation and penalties are checked before any training, with one line
    naming the file, the table and what the bound needs."""
    trained = []
    monkeypatch.setattr(run_module, "train_spec", lambda *a, **k: trained.append(1))
    text = GLOBAL_TINY.read_text()
    assert old in text
    out = tmp_path / "out"
    assert main(["run", _problem(tmp_path, text.replace(old, new, 1)), "--quiet", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fenchel-idl: error: problem file ") and err.count("\n") == 1, err
    assert "[certify] global = true: " in err and re.search(error, err), err
    assert trained == [] and not out.exists()
