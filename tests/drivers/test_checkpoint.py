"""Checkpoints of solve_bcd: atomic writes, resuming after SIGKILL, refusal of bad
checkpoints, and determinism.

The tests only use the public contract: ``solve_bcd(..., checkpoint=DIR)`` keeps a
checkpoint in DIR after every sweep, and ``solve_bcd(..., checkpoint=DIR, resume=True)``
continues from it. They do not assume a file name inside DIR, except that a temporary file
ends in ``.tmp``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import FenchelIDLError
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import CheckpointError
from fenchel_idl.problem.training_problem import TrainingProblem

REPO = Path(__file__).resolve().parents[2]
ARRAYS = ("A", "B", "C", "D", "bias_x", "bias_y")

# The job run in a subprocess (and imported here for the uninterrupted reference run).
JOB = r'''
import os, signal, sys, time
from pathlib import Path

import numpy as np

from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.problem.training_problem import TrainingProblem

MAX_SWEEPS = 6
SCHEDULE = {"stage_tol": 0.0}  # the default line-search schedule: a stage per sweep
SEED = 5


def make_problem(shift=0.0, kappa=0.6, bounds=None):
    rng = np.random.default_rng(11)
    U = rng.uniform(-1.0, 1.0, (2, 24))
    Y = np.vstack([np.sin(2.0 * U[0]) * U[1], np.cos(U.sum(axis=0))]) + shift
    return TrainingProblem(U, Y, n=4, kappa=kappa, bounds=bounds)


def run(checkpoint=None, resume=False, callback=None, max_sweeps=MAX_SWEEPS, problem=None):
    return solve_bcd(problem or make_problem(), max_sweeps=max_sweeps, seed=SEED,
                     schedule=SCHEDULE, checkpoint=checkpoint, resume=resume,
                     callback=callback)


def summary(res, first_sweep=-1):
    m = res.model
    out = {k: np.asarray(getattr(m, k)) for k in ("A", "B", "C", "D", "bias_x", "bias_y")}
    out["objectives"] = np.array([r.objective for r in res.history])
    out["first_sweep"] = np.array(first_sweep)
    out["n_sweeps"] = np.array(res.n_sweeps)
    return out


if __name__ == "__main__":
    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
    kill_at = (int(sys.argv[4]), sys.argv[5]) if len(sys.argv) > 5 else None
    seen = []

    def callback(rec):
        seen.append(rec.sweep)
        if kill_at is not None and (rec.sweep, rec.block) == kill_at:
            if mode == "selfkill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif mode == "hang":
                Path(out + ".ready").write_text("ready")
                time.sleep(300)

    res = run(checkpoint=ckpt, resume=(mode == "resume"), callback=callback)
    np.savez(out, **summary(res, seen[0] if seen else -1))
'''


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    path = tmp_path_factory.mktemp("job") / "ckpt_job.py"
    path.write_text(JOB)
    spec = importlib.util.spec_from_file_location("ckpt_job", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.PATH = path
    return mod


@pytest.fixture(scope="module")
def reference(job):
    """The uninterrupted run (same seed), in this process."""
    return job.summary(job.run())


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(job, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(job.PATH), *map(str, args)], cwd=str(REPO),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(job, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(job.PATH), *map(str, args)], cwd=str(REPO),
                          env=_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def _wait_until_ready(proc: subprocess.Popen, out: Path) -> None:
    """Wait until the 'hang' job marks (with ``out``.ready) that it waits in the chosen block."""
    ready = Path(str(out) + ".ready")
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the job never reached the chosen block"
        time.sleep(0.05)


def _files(directory: Path) -> dict[str, str]:
    """name -> sha256 of the files in a directory."""
    if not directory.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def _tmp_files(directory: Path) -> list[str]:
    return [name for name in _files(directory) if name.endswith(".tmp")]


def _assert_same_model(got: dict, want: dict, atol=1e-12):
    for k in ARRAYS:
        np.testing.assert_allclose(got[k], want[k], rtol=0.0, atol=atol, err_msg=k)


def _load(path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# -- (a) atomic writes, one checkpoint after every sweep -----------------------------------

def test_checkpoint_is_present_after_every_sweep_and_never_left_as_tmp(job, tmp_path,
                                                                         reference):
    ckpt = tmp_path / "ckpt"
    snapshots: dict[int, Path] = {}
    digests: list[dict] = []

    def callback(rec):
        assert _tmp_files(ckpt) == [], f"temporary file left at {rec}"
        if rec.block == "X" and rec.sweep not in snapshots:
            files = _files(ckpt)
            if rec.sweep == 0:
                assert files == {}, "no checkpoint before the first sweep ends"
            else:
                assert files, f"no checkpoint after sweep {rec.sweep - 1}"
                assert not digests or files != digests[-1], "checkpoint not rewritten"
                digests.append(files)
                snap = tmp_path / f"snap{rec.sweep}"
                shutil.copytree(ckpt, snap)
                snapshots[rec.sweep] = snap

    res = job.run(checkpoint=ckpt, callback=callback)
    assert _tmp_files(ckpt) == []
    assert _files(ckpt), "the final checkpoint must remain"
    assert len(snapshots) == res.n_sweeps - 1
    # every intermediate checkpoint is complete: resuming from it ends at the same model
    for sweep in (1, res.n_sweeps // 2, res.n_sweeps - 1):
        first: list[int] = []
        resumed = job.run(checkpoint=snapshots[sweep], resume=True, callback=first.append)
        assert first[0].sweep == sweep, "the resumed run must start at the checkpointed sweep"
        _assert_same_model(job.summary(resumed), reference)


def test_a_failed_write_keeps_the_previous_checkpoint(job, tmp_path, monkeypatch, reference):
    ckpt = tmp_path / "ckpt"
    job.run(checkpoint=ckpt, max_sweeps=2)
    before = _files(ckpt)
    assert before

    def failing_savez(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"PK\x03\x04 half a checkpoint")
        else:
            Path(str(file)).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(np, "savez", failing_savez)
    monkeypatch.setattr(np, "savez_compressed", failing_savez)
    with pytest.raises((OSError, FenchelIDLError)):
        job.run(checkpoint=ckpt, resume=True, max_sweeps=4)
    monkeypatch.undo()
    after = {k: v for k, v in _files(ckpt).items() if not k.endswith(".tmp")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".tmp")}, \
        "the previous checkpoint must survive a failed write unchanged"
    resumed = job.run(checkpoint=ckpt, resume=True)
    _assert_same_model(job.summary(resumed), reference)


def test_a_failed_write_leaves_no_tmp_file(job, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    job.run(checkpoint=ckpt, max_sweeps=1)

    def failing_savez(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(np, "savez", failing_savez)
    monkeypatch.setattr(np, "savez_compressed", failing_savez)
    with pytest.raises((OSError, FenchelIDLError)):
        job.run(checkpoint=ckpt, resume=True, max_sweeps=3)
    monkeypatch.undo()
    assert _tmp_files(ckpt) == []


# -- (b) SIGKILL in the middle of a sweep, then resume in a new process ---------------------

@pytest.mark.interrupt
@pytest.mark.parametrize("sweep, block", [(0, "X"), (2, "AB"), (3, "LS")],
                         ids=["before-first-checkpoint", "mid-sweep", "at-stage-boundary"])
def test_resume_after_sigkill_matches_uninterrupted_run(job, tmp_path, reference, sweep, block):
    ckpt = tmp_path / "ckpt"
    killed = _run(job, "selfkill", ckpt, tmp_path / "killed.npz", sweep, block)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed.npz").exists()
    assert _tmp_files(ckpt) == []
    assert bool(_files(ckpt)) == (sweep > 0)

    resumed = _run(job, "resume", ckpt, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr
    got = _load(tmp_path / "resumed.npz")
    assert int(got["first_sweep"]) == sweep, "must resume from the last checkpoint"
    assert int(got["n_sweeps"]) == int(reference["n_sweeps"])
    _assert_same_model(got, reference)
    np.testing.assert_allclose(got["objectives"], reference["objectives"], rtol=0, atol=1e-12)


@pytest.mark.interrupt
def test_resume_after_external_sigkill_with_a_stale_tmp_file(job, tmp_path, reference):
    """Killed by another process while it waits in a callback; a half-written temporary
    file from an earlier crash lies in the directory and must not confuse the resume."""
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "hung.npz"
    proc = _spawn(job, "hang", ckpt, out, 4, "AB")
    try:
        _wait_until_ready(proc, out)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (ckpt / "checkpoint.npz.tmp").write_bytes(b"PK\x03\x04 garbage from an earlier crash")

    resumed = _run(job, "resume", ckpt, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr
    got = _load(tmp_path / "resumed.npz")
    assert int(got["first_sweep"]) == 4
    _assert_same_model(got, reference)


def test_stop_and_continue_equals_one_run(job, tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    part = job.run(checkpoint=ckpt, max_sweeps=3)
    assert part.n_sweeps == 3
    full = job.run(checkpoint=ckpt, resume=True)
    assert full.n_sweeps == int(reference["n_sweeps"])
    _assert_same_model(job.summary(full), reference)
    assert len(full.history) == len(reference["objectives"])


def test_resume_without_a_checkpoint_starts_from_scratch(job, tmp_path, reference):
    res = job.run(checkpoint=tmp_path / "empty", resume=True)
    _assert_same_model(job.summary(res), reference)


def test_certificate_of_a_resumed_run_keeps_earlier_solve_events(job, tmp_path, monkeypatch):
    real_solve = cp.Problem.solve
    state = {"fail_next": False}

    def solve(self, *args, **kwargs):
        if state["fail_next"]:
            state["fail_next"] = False
            raise cp.error.SolverError("injected failure")
        return real_solve(self, *args, **kwargs)

    def callback(rec):  # the first solve after the (A, B) record of sweep 0 fails once
        if (rec.sweep, rec.block) == (0, "AB"):
            state["fail_next"] = True

    monkeypatch.setattr(cp.Problem, "solve", solve)
    # readout balls that cut off the least-squares minimizer: the readout is a CVXPY solve
    tight = job.make_problem(bounds={"C": 0.2, "D": 0.2})
    one_run = job.run(callback=callback, max_sweeps=4, problem=tight)
    assert len(one_run.certificate.solve_events) == 1
    ckpt = tmp_path / "ckpt"
    job.run(checkpoint=ckpt, callback=callback, max_sweeps=2, problem=tight)
    resumed = job.run(checkpoint=ckpt, resume=True, max_sweeps=4, problem=tight)
    def no_time(events):  # wall times differ between runs; everything else must match
        return [{k: v for k, v in e.items() if k != "time"} for e in events]

    assert no_time(resumed.certificate.solve_events) == no_time(one_run.certificate.solve_events)
    assert resumed.certificate.rejected_updates == one_run.certificate.rejected_updates
    assert resumed.certificate.blocks_certified == one_run.certificate.blocks_certified


# -- (c) corrupt checkpoints and checkpoints of other problems are refused --------------------

@pytest.fixture
def saved(job, tmp_path):
    ckpt = tmp_path / "ckpt"
    job.run(checkpoint=ckpt, max_sweeps=2)
    names = [n for n in _files(ckpt) if not n.endswith(".tmp")]
    assert names
    return ckpt, names


def test_garbage_checkpoint_is_refused(job, saved):
    ckpt, names = saved
    for name in names:
        (ckpt / name).write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt|truncated") as info:
        job.run(checkpoint=ckpt, resume=True)
    assert str(ckpt) in str(info.value), "the message must name the checkpoint"
    assert "delete" in str(info.value), "the message must say how to recover"


def test_truncated_checkpoint_is_refused(job, saved):
    ckpt, names = saved
    for name in names:
        raw = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointError, match=r"corrupt|truncated"):
        job.run(checkpoint=ckpt, resume=True)


def test_empty_checkpoint_file_is_refused(job, saved):
    ckpt, names = saved
    for name in names:
        (ckpt / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"corrupt|truncated"):
        job.run(checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("change", [{"shift": 1e-9}, {"kappa": 0.7}],
                         ids=["other-data", "other-settings"])
def test_checkpoint_of_another_problem_is_refused(job, saved, change):
    ckpt, _ = saved
    other = job.make_problem(**change)
    with pytest.raises(CheckpointError, match=r"different problem or data") as info:
        job.run(checkpoint=ckpt, resume=True, problem=other)
    assert str(ckpt) in str(info.value)


def test_checkpoint_of_a_different_size_is_refused(job, saved):
    ckpt, _ = saved
    p = job.make_problem()
    other = TrainingProblem(p.U_raw, p.Y_raw, n=5, kappa=p.kappa)
    with pytest.raises(CheckpointError, match=r"different problem"):
        job.run(checkpoint=ckpt, resume=True, problem=other)


def _edit_checkpoint(ckpt: Path, names, edit_array=None, edit_meta=None):
    """Rewrite each checkpoint npz with its arrays and JSON metadata edited."""
    for name in names:
        content = _load(ckpt / name)
        for key, val in list(content.items()):
            meta = None
            if val.dtype == np.uint8 and val.ndim == 1:
                try:
                    meta = json.loads(bytes(val).decode())
                except (UnicodeDecodeError, json.JSONDecodeError):
                    meta = None
            if isinstance(meta, dict):
                if edit_meta is not None:
                    content[key] = np.frombuffer(json.dumps(edit_meta(meta)).encode(),
                                                 dtype=np.uint8)
            elif edit_array is not None and val.dtype.kind == "f":
                content[key] = edit_array(val)
        with open(ckpt / name, "wb") as fh:
            np.savez(fh, **content)


def test_checkpoint_with_incomplete_metadata_is_refused(job, saved):
    ckpt, names = saved
    fp = job.make_problem().fingerprint()
    _edit_checkpoint(ckpt, names,
                     edit_meta=lambda meta: {k: v for k, v in meta.items() if v == fp})
    with pytest.raises(CheckpointError):
        job.run(checkpoint=ckpt, resume=True)


def test_checkpoint_with_wrong_shapes_is_refused(job, saved):
    ckpt, names = saved
    _edit_checkpoint(ckpt, names, edit_array=lambda a: a[:-1] if a.ndim else a)
    with pytest.raises(CheckpointError):
        job.run(checkpoint=ckpt, resume=True)


def test_checkpoint_with_nan_values_is_refused(job, saved):
    ckpt, names = saved
    _edit_checkpoint(ckpt, names, edit_array=lambda a: np.full_like(a, np.nan))
    with pytest.raises(CheckpointError):
        job.run(checkpoint=ckpt, resume=True)


# -- (d) determinism ------------------------------------------------------------------------

def test_same_seed_gives_identical_results(job, reference):
    again = job.summary(job.run())
    for k in ARRAYS + ("objectives",):
        assert np.array_equal(again[k], reference[k]), k


def test_different_seed_gives_a_different_start(job):
    a = solve_bcd(job.make_problem(), max_sweeps=1, seed=1)
    b = solve_bcd(job.make_problem(), max_sweeps=1, seed=2)
    assert not np.array_equal(a.start_model.B, b.start_model.B)


# -- (e) integrity of the history log, settings of a resume, one run per directory ----------

def _log_file(ckpt: Path) -> Path:
    (log,) = (ckpt / "history").iterdir()
    return log


def test_a_hand_edited_history_record_is_refused(job, saved):
    """Flipping one block's "certified" in the log would change the final certificate."""
    ckpt, _ = saved
    log = _log_file(ckpt)
    text = log.read_text()
    assert '"certified": true' in text
    log.write_text(text.replace('"certified": true', '"certified": false', 1))
    with pytest.raises(CheckpointError, match=r"history log.*failed its checksum") as info:
        job.run(checkpoint=ckpt, resume=True)
    assert str(log) in str(info.value) and "delete" in str(info.value)


def test_an_edited_checkpoint_with_valid_zip_is_refused(job, saved):
    """A rewritten checkpoint.npz (valid zip CRCs) with one array changed by 1e-12."""
    ckpt, names = saved
    _edit_checkpoint(ckpt, names, edit_array=lambda a: a + 1e-12)
    with pytest.raises(CheckpointError, match=r"failed its checksum"):
        job.run(checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("change, named", [
    ({"seed": 6}, r"seed: 5 -> 6"),
    ({"gap_tol": 1e-7}, r"gap_tol: 1e-06 -> 1e-07"),
    ({"tol": 1e-5}, r"tol: 1e-06 -> 1e-05"),
    ({"schedule": {"stage_tol": 0.0, "line_search": False}},
     r"schedule\.line_search: True -> False"),
    ({"solver": "SCS"}, r"solver: None -> 'SCS'"),
    ({"block_solver": "cvxpy"}, r"block_solver: 'auto' -> 'cvxpy'"),
    ({"on_failure": "warn"}, r"on_failure: 'fallback' -> 'warn'"),
    ({"ab_prox": 1e-2}, r"ab_prox: '<unset>' -> 0.01"),
], ids=["seed", "gap_tol", "tol", "line_search", "solver", "block_solver", "on_failure",
        "ab_prox"])
def test_resume_with_other_settings_is_refused_and_names_them(job, saved, change, named):
    ckpt, _ = saved
    before = _files(ckpt)
    kw = {"max_sweeps": job.MAX_SWEEPS, "seed": job.SEED, "schedule": job.SCHEDULE, **change}
    with pytest.raises(CheckpointError, match=r"other settings") as info:
        solve_bcd(job.make_problem(), checkpoint=ckpt, resume=True, **kw)
    assert re.search(named, str(info.value)), str(info.value)
    assert str(ckpt) in str(info.value)
    assert _files(ckpt) == before, "a refused resume leaves the checkpoint as it was"


def test_resume_with_the_same_settings_and_more_sweeps_is_allowed(job, saved, reference):
    """max_sweeps (and refine) act after the checkpointed sweeps: changing them is fine."""
    ckpt, _ = saved
    _assert_same_model(job.summary(job.run(checkpoint=ckpt, resume=True)), reference)


def test_a_second_run_on_a_locked_directory_is_refused(job, tmp_path):
    """A second process is refused while the first holds the directory; after the first is
    killed (SIGKILL: the system drops its lock) a resume goes ahead."""
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "hung.npz"
    proc = _spawn(job, "hang", ckpt, out, 2, "AB")
    try:
        _wait_until_ready(proc, out)
        before = _files(ckpt)
        second = _run(job, "run", ckpt, tmp_path / "second.npz")
        assert second.returncode != 0
        assert "CheckpointError" in second.stderr and "in use by another" in second.stderr
        assert str(ckpt) in second.stderr
        assert _files(ckpt) == before, "the refused run must not touch the checkpoint"
        with pytest.raises(CheckpointError, match=r"in use by another"):
            job.run(checkpoint=ckpt, resume=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    resumed = _run(job, "resume", ckpt, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr
    assert int(_load(tmp_path / "resumed.npz")["first_sweep"]) == 2


def test_the_lock_is_released_after_a_run_and_after_an_error(job, tmp_path):
    ckpt = tmp_path / "ckpt"
    job.run(checkpoint=ckpt, max_sweeps=1)
    with pytest.raises(CheckpointError, match="other settings"):
        solve_bcd(job.make_problem(), max_sweeps=2, seed=9, checkpoint=ckpt, resume=True)
    job.run(checkpoint=ckpt, resume=True, max_sweeps=2)  # not blocked by either run
