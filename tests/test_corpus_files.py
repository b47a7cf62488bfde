"""The validation corpus of files, directories and checkpoints (issue 23, section 4).

Entries follow :mod:`tests.test_validation_corpus`: ``(call, expected error, regex on the
message)``; each call gets a fresh temporary directory and must raise an error from
:mod:`fenchel_idl.errors` whose message names the key, path or setting at fault. The
classes: a problem ``name`` that is a path; an output directory that is a file, lies under
a file, cannot be created or written, holds a directory where a result goes, holds other
files, or fills up while the results are written; a result set changed after it was
written; a checkpoint directory in use by another run; a resume with other settings; a
checkpoint or history log edited after it was written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from fenchel_idl import FenchelIDLError
from fenchel_idl.apps import run as run_module
from fenchel_idl.apps.run import check_results, default_out, run_problem
from fenchel_idl.drivers import load_problem, solve_bcd
from fenchel_idl.errors import CheckpointError, OutputError, ValidationError
from fenchel_idl.problem.training_problem import TrainingProblem

from .test_validation_corpus import _GOOD_TOML, U20, Y20, _toml, case

# -- helpers (each builds its situation in the test's temporary directory t) ----------------

TWO_SWEEPS = _GOOD_TOML + "[training]\nmax_sweeps = 2\n"


def _named(t: Path, name: str) -> Path:
    return _toml(t, TWO_SWEEPS.replace('name = "tiny"', f"name = {json.dumps(name)}"))


def _run(t: Path, out, **kw):
    return run_problem(_toml(t, TWO_SWEEPS), out, progress=False, **kw)


def _file(t: Path, name: str = "afile") -> Path:
    (t / name).write_text("not a directory")
    return t / name


def _with(t: Path, *names: str, dirs: tuple[str, ...] = ()) -> Path:
    out = t / "out"
    out.mkdir()
    for name in names:
        (out / name).write_text("earlier content")
    for name in dirs:
        (out / name).mkdir()
    return out


def _full_disk(t: Path):
    """The disk fills up while the plots are written (after training)."""
    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch.object(run_module, "plot_convergence", no_space):
        return _run(t, t / "out")


def _changed_results(t: Path):
    _run(t, t / "out")
    cert = t / "out" / "certificate.json"
    cert.write_text(cert.read_text().replace('"blocks_certified": true',
                                             '"blocks_certified": false'))
    return check_results(t / "out")


def _half_written_results(t: Path):
    _run(t, t / "out")
    (t / "out" / "manifest.json").unlink()  # as if killed before the manifest was written
    return check_results(t / "out")


@contextmanager
def _held_by_another_run(directory: Path):
    """Hold the checkpoint directory's flock through a descriptor of our own, as another
    process running on it would."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _locked(t: Path, cli: bool = False):
    with _held_by_another_run(t / "ckpt"):
        if cli:
            return _run(t, None, checkpoint=t / "ckpt")
        return solve_bcd(_tp(), max_sweeps=1, checkpoint=t / "ckpt")


def _tp() -> TrainingProblem:
    return TrainingProblem(U20, Y20, n=3)


def _resumed_with(t: Path, **changed):
    """Two sweeps with a checkpoint, then a resume with ``changed`` settings."""
    solve_bcd(_tp(), max_sweeps=2, checkpoint=t / "ckpt")
    return solve_bcd(_tp(), max_sweeps=3, checkpoint=t / "ckpt", resume=True, **changed)


def _problem_file_resumed_with(t: Path, old: str, new: str):
    path = _toml(t, TWO_SWEEPS + "[schedule]\nline_search = true\n[solver]\ngap_tol = 1e-6\n")
    run_problem(path, None, progress=False, checkpoint=t / "ckpt")
    path.write_text(path.read_text().replace(old, new))
    return run_problem(path, None, progress=False, checkpoint=t / "ckpt", resume=True,
                       max_sweeps=3)


def _edited_log(t: Path):
    solve_bcd(_tp(), max_sweeps=2, checkpoint=t / "ckpt")
    (log,) = (t / "ckpt" / "history").iterdir()
    lines = log.read_text().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["record"]["certified"] = not record["record"]["certified"]
    lines[0] = json.dumps(record) + "\n"
    log.write_text("".join(lines))
    return solve_bcd(_tp(), max_sweeps=3, checkpoint=t / "ckpt", resume=True)


def _edited_checkpoint(t: Path, key: str, value):
    """Rewrite checkpoint.npz (a valid zip) with one metadata entry changed."""
    solve_bcd(_tp(), max_sweeps=2, checkpoint=t / "ckpt")
    path = t / "ckpt" / "checkpoint.npz"
    with np.load(path) as data:
        content = {k: data[k] for k in data.files}
    meta = json.loads(bytes(content["meta"]).decode())
    meta[key] = value
    content["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **content)
    return solve_bcd(_tp(), max_sweeps=3, checkpoint=t / "ckpt", resume=True)


NAME = r"'name' must be a plain name.*runs/<name>"

CASES = [
    # a problem file's name is a name, not a path ----------------------------------------------
    case("name-parent-dirs", lambda t: default_out(load_problem(_named(t, "../../x"))),
         ValidationError, NAME + r".*got '\.\./\.\./x'"),
    case("name-absolute", lambda t: default_out(load_problem(_named(t, "/tmp/x"))),
         ValidationError, NAME + r".*got '/tmp/x'"),
    case("name-empty", lambda t: default_out(load_problem(_named(t, ""))),
         ValidationError, NAME + r".*got ''"),
    case("name-blank", lambda t: default_out(load_problem(_named(t, "  "))),
         ValidationError, NAME + r".*got '  '"),
    case("name-dot", lambda t: default_out(load_problem(_named(t, "."))),
         ValidationError, NAME + r".*got '\.'"),
    case("name-subdir", lambda t: default_out(load_problem(_named(t, "a/b"))),
         ValidationError, NAME + r".*got 'a/b'"),
    case("name-backslash", lambda t: default_out(load_problem(_named(t, "a\\b"))),
         ValidationError, NAME + r".*got 'a\\\\b'"),
    case("name-control-char", lambda t: default_out(load_problem(_named(t, "a\nb"))),
         ValidationError, NAME + r".*got 'a\\nb'"),
    case("name-run-problem", lambda t: run_problem(_named(t, "../x"), t / "out",
                                                   progress=False),
         ValidationError, NAME + r".*got '\.\./x'"),
    # output directories, checked before training --------------------------------------------
    case("out-is-a-file", lambda t: _run(t, _file(t)),
         ValidationError, r"'out' must be a directory; '.*afile' is a file"),
    case("out-under-a-file", lambda t: _run(t, _file(t) / "sub" / "out"),
         ValidationError, r"'out' '.*afile/sub/out' cannot be created: '.*afile' is a file"),
    case("out-cannot-be-created", lambda t: _run(t, Path("/proc/fenchel-idl-out")),
         ValidationError, r"'out' must be a directory that can be created and written; "
                          r"'/proc/fenchel-idl-out' cannot \("),
    case("out-not-writable", lambda t: _run(t, Path("/proc")),
         ValidationError, r"'out' must be a directory that can be created and written; "
                          r"'/proc' cannot"),
    case("out-directory-where-history-goes", lambda t: _run(t, _with(t, dirs=("history.json",))),
         ValidationError, r"'out' '.*out' holds directories where result files go "
                          r"\(\['history\.json'\]\)"),
    case("out-other-files", lambda t: _run(t, _with(t, "notes.txt", "model.npz")),
         ValidationError, r"'out' '.*out' holds files that are not results of an earlier "
                          r"fenchel-idl run \(\['notes\.txt'\]\).*--overwrite"),
    case("out-disk-full", _full_disk,
         OutputError, r"could not write the results to '.*out' \(OSError: No space left on "
                      r"device\); the directory holds an incomplete set.*no manifest\.json"),
    case("results-changed", _changed_results,
         ValidationError, r"result file '.*certificate\.json' is missing or was changed"),
    case("results-without-manifest", _half_written_results,
         ValidationError, r"'.*out' holds no complete set of results: its manifest\.json"),
    case("max-sweeps-zero", lambda t: _run(t, None, max_sweeps=0),
         ValidationError, r"'max_sweeps' must be .*got 0"),
    # one run per checkpoint directory ----------------------------------------------------------
    case("checkpoint-locked", _locked,
         CheckpointError, r"checkpoint directory '.*ckpt' is in use by another running "
                          r"training process"),
    case("checkpoint-locked-problem-file", lambda t: _locked(t, cli=True),
         CheckpointError, r"checkpoint directory '.*ckpt' is in use"),
    case("checkpoint-under-a-file", lambda t: solve_bcd(_tp(), max_sweeps=1,
                                                         checkpoint=_file(t) / "ckpt"),
         CheckpointError, r"'checkpoint' must be a directory that can be created and written; "
                          r"'.*afile/ckpt' cannot \(NotADirectoryError"),
    case("checkpoint-cannot-be-created", lambda t: solve_bcd(
        _tp(), max_sweeps=1, checkpoint="/proc/fenchel-idl-ckpt"),
         CheckpointError, r"'checkpoint' must be a directory .*'/proc/fenchel-idl-ckpt' cannot"),
    # a resume with other settings --------------------------------------------------------------
    case("resume-seed", lambda t: _resumed_with(t, seed=1),
         CheckpointError, r"'.*ckpt/checkpoint\.npz' was written with other settings.*"
                          r"seed: 0 -> 1"),
    case("resume-gap-tol", lambda t: _resumed_with(t, gap_tol=1e-5),
         CheckpointError, r"other settings.*gap_tol: 1e-06 -> 1e-05"),
    case("resume-tol", lambda t: _resumed_with(t, tol=1e-3),
         CheckpointError, r"other settings.*tol: 1e-06 -> 0\.001"),
    case("resume-schedule", lambda t: _resumed_with(t, schedule={"line_search": False}),
         CheckpointError, r"other settings.*schedule\.line_search: True -> False"),
    case("resume-solver", lambda t: _resumed_with(t, solver="CLARABEL"),
         CheckpointError, r"other settings.*solver: None -> 'CLARABEL'"),
    case("resume-on-failure", lambda t: _resumed_with(t, on_failure="raise"),
         CheckpointError, r"other settings.*on_failure: 'fallback' -> 'raise'"),
    case("resume-block-solver", lambda t: _resumed_with(t, block_solver="cvxpy"),
         CheckpointError, r"other settings.*block_solver: 'auto' -> 'cvxpy'"),
    case("resume-init", lambda t: _resumed_with(t, init=solve_bcd(_tp(), max_sweeps=1).model),
         CheckpointError, r"other settings.*init: None -> \{'model sha256'"),
    case("resume-file-seed", lambda t: _problem_file_resumed_with(t, "seed = 0", "seed = 4"),
         CheckpointError, r"other settings.*seed: 0 -> 4"),
    case("resume-file-line-search", lambda t: _problem_file_resumed_with(
        t, "line_search = true", "line_search = false"),
         CheckpointError, r"other settings.*schedule\.line_search: True -> False"),
    case("resume-file-gap-tol", lambda t: _problem_file_resumed_with(
        t, "gap_tol = 1e-6", "gap_tol = 1e-7"),
         CheckpointError, r"other settings.*gap_tol: 1e-06 -> 1e-07"),
    case("resume-file-data", lambda t: _problem_file_resumed_with(t, "m = 20", "m = 21"),
         CheckpointError, r"different problem or data set"),
    # checkpoints and history logs edited after they were written --------------------------------
    case("history-log-edited", _edited_log,
         CheckpointError, r"history log '.*\.jsonl' of checkpoint .* failed its checksum"),
    case("checkpoint-sweep-edited", lambda t: _edited_checkpoint(t, "sweep", 1),
         CheckpointError, r"checkpoint '.*checkpoint\.npz' failed its checksum"),
    case("checkpoint-settings-edited", lambda t: _edited_checkpoint(t, "settings", {}),
         CheckpointError, r"failed its checksum"),
    case("checkpoint-log-chain-edited", lambda t: _edited_checkpoint(t, "log", {}),
         CheckpointError, r"failed its checksum"),
]


@pytest.mark.parametrize("call, exc, match", CASES)
def test_bad_file_or_directory_raises_a_clear_package_error(call, exc, match, tmp_path):
    excs = exc if isinstance(exc, tuple) else (exc,)
    assert all(issubclass(e, FenchelIDLError) for e in excs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solver noise of the tiny problems
        with pytest.raises(excs, match=match) as info:
            call(tmp_path)
    assert isinstance(info.value, FenchelIDLError)


def test_corpus_covers_every_class():
    assert len(CASES) >= 39


# -- what must still work (the other side of each refusal) ------------------------------------

def test_a_rerun_replaces_the_earlier_results_and_no_stale_file_stays(tmp_path):
    """A problem with one input draws fit.png; a rerun into the same directory with two
    inputs draws none, so the earlier fit.png must go; the manifest lists what is there."""
    out = tmp_path / "out"
    _run(tmp_path, out)
    assert (out / "fit.png").is_file()
    (tmp_path / "data.csv").write_text("a,b,y\n" + "".join(
        f"{i},{(i * 7) % 5},{i % 3}\n" for i in range(12)))
    csv = _toml(tmp_path, "name = 'two'\n[data]\nsource = 'csv'\npath = 'data.csv'\n"
                          "target = 'y'\n[model]\nn = 2\n[training]\nmax_sweeps = 1\n")
    run_problem(csv, out, progress=False)
    assert not (out / "fit.png").exists()
    files = check_results(out)
    assert set(files) | {"manifest.json"} == {p.name for p in out.iterdir()}
    assert json.loads((out / "summary.json").read_text())["problem"] == "two"


def test_overwrite_writes_beside_other_files_and_leaves_them(tmp_path):
    out = _with(tmp_path, "notes.txt")
    _run(tmp_path, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "earlier content"
    check_results(out)


def test_a_refused_or_failed_run_leaves_no_new_directory(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(ValidationError, match="max_sweeps"):
        _run(tmp_path, out, max_sweeps=0)
    assert not (tmp_path / "new").exists()


def test_a_full_disk_leaves_no_manifest_and_the_earlier_one_is_gone(tmp_path):
    _run(tmp_path, tmp_path / "out")
    with pytest.raises(OutputError):
        _full_disk(tmp_path)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_a_resume_with_more_sweeps_and_the_same_settings_goes_ahead(tmp_path):
    want = solve_bcd(_tp(), max_sweeps=3)
    got = _resumed_with(tmp_path)
    np.testing.assert_array_equal(got.model.A, want.model.A)
    np.testing.assert_array_equal(got.model.C, want.model.C)
