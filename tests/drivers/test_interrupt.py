"""Long runs: Ctrl-C (SIGINT) leaves a usable checkpoint and one clear line, and a long run
keeps steady memory and checkpoints whose size does not grow with the sweep count.

The end-to-end tests send a real SIGINT to ``python -m fenchel_idl.apps.cli run`` in a subprocess
and resume with the command that the message prints. The tests of the other phases (start,
final readout, a checkpoint write, data loading) raise SIGINT in this process at a chosen
point with ``signal.raise_signal``: Python's own handler turns it into a KeyboardInterrupt
there, as it does for a Ctrl-C arriving at that moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.apps import run as run_module
from fenchel_idl.apps.cli import main as cli_main
from fenchel_idl.apps.run import run_problem
from fenchel_idl.drivers import BlockRecord, problem_file, solve_bcd
from fenchel_idl.drivers import checkpoint as checkpoint_module
from fenchel_idl.drivers import finish as finish_module
from fenchel_idl.drivers import state as state_module
from fenchel_idl.errors import CheckpointError, TrainingInterrupted
from fenchel_idl.problem.training_problem import TrainingProblem

REPO = Path(__file__).resolve().parents[2]
ARRAYS = ("A", "B", "C", "D", "bias_x", "bias_y")
MAX_SWEEPS = 60
# The line-search schedule (the default) stops a converged tiny problem early; these tests
# need runs of a known length, so they use the plain restart schedule.
PLAIN = {"line_search": False}
# about 20 ms per sweep (the CVXPY blocks with Clarabel are faster than FISTA at this size)
PROBLEM = f"""
name = "tiny"
seed = 3
[data]
source = "cosine"
m = 24
[model]
n = 4
kappa = 0.5
[training]
lam = 100.0
max_sweeps = {MAX_SWEEPS}
[schedule]
stages = 100000
line_search = false
[solver]
name = "CLARABEL"
"""

pytestmark = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's default SIGINT handler (KeyboardInterrupt)")
# the subprocess tests measure the CPU a run uses after SIGINT from /proc (Linux)
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny problem file, and two with a refinement stage (long and short)."""
    d = tmp_path_factory.mktemp("problems")
    (d / "tiny.toml").write_text(PROBLEM)
    for name, epochs in (("refine_long", 100000), ("refine_short", 3)):
        text = PROBLEM.replace(f"max_sweeps = {MAX_SWEEPS}", "max_sweeps = 3")
        (d / f"{name}.toml").write_text(text + f"[refine]\nepochs = {epochs}\nlr = 0.001\n")
    return d


@pytest.fixture(scope="module")
def reference(files):
    """The uninterrupted run of the tiny problem, in this process."""
    result, _ = run_problem(files / "tiny.toml", None, progress=False)
    return result.model


def _assert_same_model(got: ImplicitModel, want: ImplicitModel, atol=1e-12):
    for k in ARRAYS:
        np.testing.assert_allclose(getattr(got, k), getattr(want, k), rtol=0.0, atol=atol,
                                   err_msg=k)


def _digests(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under a directory."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _message(stderr: str) -> str:
    """The one 'fenchel-idl:' line of stderr; no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in re.split(r"[\r\n]", stderr) if ln.startswith("fenchel-idl:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _assert_usable_checkpoint(ckpt: Path, problem_path: Path, sweep: int) -> None:
    """No temporary files; the checkpoint loads for its problem and holds ``sweep`` sweeps
    and their history."""
    assert not [p for p in ckpt.rglob("*") if p.name.endswith(".tmp")]
    spec = problem_file.load_problem(problem_path)
    problem = problem_file.build_problem(spec, problem_file.load_data(spec)[0])
    state, meta = checkpoint_module.load_checkpoint(ckpt, problem)
    assert meta["sweep"] == sweep
    assert len(meta["history"]) == 3 * sweep  # X, AB and CD records of every sweep
    assert all(np.all(np.isfinite(v)) for v in state.arrays().values())


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "fenchel_idl.apps.cli", *map(str, args)]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running (or stopped) process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _interrupt_when(proc: subprocess.Popen, ready, frozen=lambda: None, timeout=120.0):
    """Wait for ``ready()``; stop the run (SIGSTOP) and read its state with ``frozen()``;
    then send SIGINT, let it go on (SIGCONT) and wait for its exit. Returns what ``frozen``
    returned and the CPU seconds the run used after the SIGINT: unlike wall-clock seconds,
    these do not grow when other processes load the machine."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run never reached the point to interrupt"
        time.sleep(0.02)
    try:
        proc.send_signal(signal.SIGSTOP)
        os.waitpid(proc.pid, os.WUNTRACED)  # returns once the run is stopped
        state = frozen()
        before = _cpu_seconds(proc.pid) + _reaped_children_cpu()
        proc.send_signal(signal.SIGINT)  # pending until the run continues
        proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return state, _reaped_children_cpu() - before


def _resume_command(message: str) -> list[str]:
    """The command printed after 'resume with:', run with this Python."""
    cmd = shlex.split(message.split("resume with: ", 1)[1])
    assert cmd[:2] == ["fenchel-idl", "run"], message
    return _cli(*cmd[1:])


# -- Ctrl-C of a real run, in a subprocess ---------------------------------------------------

@pytest.mark.interrupt
@needs_proc
def test_ctrl_c_during_the_sweeps_then_resume_matches_an_uninterrupted_run(files, tmp_path,
                                                                         reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(_cli("run", files / "tiny.toml", "--out", out,
                                     "--checkpoint", ckpt),
                                cwd=str(tmp_path), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=fh)
        frozen_at, cpu = _interrupt_when(proc, lambda: (ckpt / "checkpoint.npz").exists(),
                                         lambda: checkpoint_module.checkpoint_sweep(ckpt))
    stderr = err.read_bytes().decode()  # keeps the "\r" of the bar
    assert proc.returncode == 130, stderr
    assert cpu < 20.0, f"the run used {cpu:.1f} s of CPU to stop after SIGINT"
    msg = _message(stderr)
    assert str(ckpt) in msg and "resume with: fenchel-idl run" in msg and "--resume" in msg
    saved = int(re.search(r"the last checkpoint, after sweep (\d+)", msg).group(1))
    done = int(re.search(r"after (\d+) completed sweep", msg).group(1))
    assert 1 <= saved <= done < MAX_SWEEPS, msg
    # it stops in the sweep SIGINT found it in (stopped while the checkpoint held frozen_at
    # sweeps): at most that sweep is completed, and saved if its write had begun
    assert frozen_at <= saved <= done <= frozen_at + 1, (frozen_at, msg)
    # the progress display: the bar of the sweeps, then the message on its own line
    for line in stderr.split("\n"):
        if line and not line.startswith("fenchel-idl:"):
            assert all(part.startswith("BCD") for part in line.split("\r") if part), line
    assert not out.exists() or not any(out.iterdir()), "an interrupted run writes no results"
    _assert_usable_checkpoint(ckpt, files / "tiny.toml", saved)

    resumed = subprocess.run(_resume_command(msg), cwd=str(tmp_path), env=_env(),
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{MAX_SWEEPS} sweeps in" in resumed.stdout
    _assert_same_model(ImplicitModel.load(out / "model.npz"), reference)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 3 * MAX_SWEEPS
    assert [r["sweep"] for r in history] == [k for k in range(MAX_SWEEPS) for _ in range(3)]


@pytest.mark.interrupt
@needs_proc
def test_ctrl_c_during_refinement_keeps_the_bcd_checkpoint(files, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(_cli("run", files / "refine_long.toml", "--out", out,
                                     "--checkpoint", ckpt),
                                cwd=str(tmp_path), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=fh)
        _, cpu = _interrupt_when(proc, lambda: "refine:" in err.read_text())
    stderr = err.read_bytes().decode()  # keeps the "\r" of the bar
    assert proc.returncode == 130, stderr
    assert cpu < 20.0
    msg = _message(stderr)
    assert "in the refinement stage" in msg and "refinement keeps no checkpoint" in msg
    assert f"the last checkpoint, after sweep 3, is in {str(ckpt)!r}" in msg
    assert not out.exists() or not any(out.iterdir())
    _assert_usable_checkpoint(ckpt, files / "refine_long.toml", 3)
    # the checkpoint is usable: resuming (with a short refinement) skips the sweeps and
    # ends where an uninterrupted run with that refinement ends
    assert cli_main(["run", str(files / "refine_short.toml"), "--checkpoint", str(ckpt),
                     "--resume", "--out", str(out), "--quiet"]) == 0
    want, _ = run_problem(files / "refine_short.toml", None, progress=False)
    _assert_same_model(ImplicitModel.load(out / "model.npz"), want.model)


# -- Ctrl-C in the other phases (SIGINT raised in this process at a chosen point) ----------

def _raise_sigint_in(monkeypatch, module, name, when=lambda *a, **k: True):
    """Replace ``module.name`` by a wrapper that raises SIGINT on the calls where ``when``
    holds; return the list of calls that raised it."""
    real = getattr(module, name)
    hits = []

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            hits.append(args)
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return hits


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_ctrl_c_in_the_initial_equilibrium(files, tmp_path, monkeypatch, capsys, resume):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    args = ["run", str(files / "tiny.toml"), "--checkpoint", str(ckpt), "--out", str(out),
            "--quiet"]
    if resume:  # an earlier run left a checkpoint after 2 sweeps
        assert cli_main(args + ["--max-sweeps", "2", "--out", str(tmp_path / "first")]) == 0
        capsys.readouterr()
    before = _digests(ckpt) if resume else {}
    hits = _raise_sigint_in(monkeypatch, state_module, "equilibrium")
    assert cli_main(args + (["--resume"] if resume else [])) == 130
    assert len(hits) == 1
    msg = _message(capsys.readouterr().err)
    assert "while starting" in msg
    if resume:
        assert f"the last checkpoint, after sweep 2, is in {str(ckpt)!r}" in msg
        assert _digests(ckpt) == before, "the checkpoint must be left as it was"
    else:
        assert "no checkpoint had been written" in msg and "start again with:" in msg
        assert not ckpt.exists()
    assert not out.exists()


def test_ctrl_c_in_the_final_readout_then_resume(files, tmp_path, monkeypatch, capsys,
                                                 reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    args = ["run", str(files / "tiny.toml"), "--checkpoint", str(ckpt), "--out", str(out),
            "--quiet"]
    # every sweep is saved before the final readout: its equilibrium is the first call
    # made when the checkpoint holds all sweeps
    hits = _raise_sigint_in(monkeypatch, finish_module, "equilibrium",
                            lambda *a, **k: checkpoint_module.checkpoint_sweep(ckpt) == MAX_SWEEPS)
    assert cli_main(args) == 130
    assert len(hits) == 1
    msg = _message(capsys.readouterr().err)
    assert "in the final readout" in msg and "resuming redoes the final readout" in msg
    assert f"the last checkpoint, after sweep {MAX_SWEEPS}, is in {str(ckpt)!r}" in msg
    assert not out.exists()
    _assert_usable_checkpoint(ckpt, files / "tiny.toml", MAX_SWEEPS)
    monkeypatch.undo()
    assert cli_main(args + ["--resume"]) == 0
    _assert_same_model(ImplicitModel.load(out / "model.npz"), reference)


def test_ctrl_c_while_loading_the_data(files, tmp_path, monkeypatch, capsys):
    _raise_sigint_in(monkeypatch, run_module, "load_data")
    assert cli_main(["run", str(files / "tiny.toml"), "--quiet"]) == 130
    msg = _message(capsys.readouterr().err)
    assert msg == ("fenchel-idl: interrupted; no checkpoint was kept (run with --checkpoint "
                   "DIR to be able to resume).")


def test_ctrl_c_while_writing_the_results_leaves_no_half_written_file(files, tmp_path,
                                                                     monkeypatch, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"

    def half_a_plot_then_ctrl_c(result, path, title=""):
        Path(path).write_bytes(b"\x89PNG half a plot")
        signal.raise_signal(signal.SIGINT)

    # run_problem's own name for it (it imports the function from fenchel_idl.analysis)
    monkeypatch.setattr(run_module, "plot_convergence", half_a_plot_then_ctrl_c)
    assert cli_main(["run", str(files / "tiny.toml"), "--checkpoint", str(ckpt), "--out",
                     str(out), "--quiet", "--max-sweeps", "5"]) == 130
    msg = _message(capsys.readouterr().err)
    assert msg.startswith(f"fenchel-idl: interrupted; the last checkpoint, after sweep 5, is "
                          f"in {str(ckpt)!r}; resume with: ")
    # the files written before the interrupt are complete; the plot is not there at all
    assert sorted(p.name for p in out.iterdir()) == ["certificate.json", "certificate.txt",
                                                     "history.json", "model.npz"]
    assert len(json.loads((out / "history.json").read_text())) == 15
    assert json.loads((out / "certificate.json").read_text())["blocks_certified"] in (True,
                                                                                      False)
    ImplicitModel.load(out / "model.npz")


def _tiny_problem() -> TrainingProblem:
    rng = np.random.default_rng(11)
    U = rng.uniform(-1.0, 1.0, (2, 12))
    return TrainingProblem(U, np.sin(2.0 * U[:1]) * U[1:], n=3, kappa=0.6)


def test_ctrl_c_in_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    problem = _tiny_problem()
    want = solve_bcd(problem, max_sweeps=5, seed=2)
    writes = []

    def third_write(src, dst, **_):
        if Path(dst).name == "checkpoint.npz":
            writes.append(dst)
        return len(writes) == 3

    hits = _raise_sigint_in(monkeypatch, os, "replace", third_write)
    with pytest.raises(TrainingInterrupted) as info:
        solve_bcd(problem, max_sweeps=5, seed=2, checkpoint=ckpt)
    monkeypatch.undo()
    assert len(hits) == 1
    exc = info.value
    assert (exc.phase, exc.sweeps, exc.checkpoint_sweep, exc.checkpoint) == ("bcd", 3, 2, ckpt)
    assert str(exc) == (f"training interrupted after 3 completed sweep(s); the last "
                        f"checkpoint, after sweep 2, is in {str(ckpt)!r}; resume with "
                        f"solve_bcd(..., checkpoint={str(ckpt)!r}, resume=True).")
    # nothing half-written: no temporary file, and the history log is cut back to the
    # length the previous checkpoint refers to
    assert not [p for p in ckpt.rglob("*") if p.name.endswith(".tmp")]
    _, meta = checkpoint_module.load_checkpoint(ckpt, problem)
    assert meta["sweep"] == 2 and len(meta["history"]) == 6
    (log,) = (ckpt / "history").iterdir()
    assert log.stat().st_size == meta["log"]["bytes"]
    got = solve_bcd(problem, max_sweeps=5, seed=2, checkpoint=ckpt, resume=True)
    _assert_same_model(got.model, want.model)
    assert [r.objective for r in got.history] == [r.objective for r in want.history]


def test_history_log_past_the_checkpoint_is_ignored_and_a_short_one_refused(tmp_path):
    problem = _tiny_problem()
    want = solve_bcd(problem, max_sweeps=4, seed=2)
    ckpt = tmp_path / "ckpt"
    solve_bcd(problem, max_sweeps=2, seed=2, checkpoint=ckpt)
    (log,) = (ckpt / "history").iterdir()
    with open(log, "ab") as fh:  # killed after appending, before replacing the checkpoint
        fh.write(b'{"record": {"sweep": 2, "half a line')
    got = solve_bcd(problem, max_sweeps=4, seed=2, checkpoint=ckpt, resume=True)
    _assert_same_model(got.model, want.model)
    assert [r.objective for r in got.history] == [r.objective for r in want.history]
    # a fresh run in the directory starts its own log and drops the old one
    solve_bcd(problem, max_sweeps=2, seed=2, checkpoint=ckpt)
    (log,) = (ckpt / "history").iterdir()
    log.write_bytes(log.read_bytes()[:-10])  # shorter than the checkpoint says
    with pytest.raises(CheckpointError, match="history log") as info:
        solve_bcd(problem, max_sweeps=4, seed=2, checkpoint=ckpt, resume=True)
    assert str(log) in str(info.value) and "delete" in str(info.value)


def test_a_format_1_checkpoint_still_resumes(tmp_path):
    """Format 1 kept the history and the events inside checkpoint.npz."""
    problem = _tiny_problem()
    want = solve_bcd(problem, max_sweeps=4, seed=2)
    ckpt = tmp_path / "ckpt"
    solve_bcd(problem, max_sweeps=2, seed=2, checkpoint=ckpt)
    _, meta = checkpoint_module.load_checkpoint(ckpt, problem)
    with np.load(ckpt / "checkpoint.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
    old = {k: v for k, v in meta.items() if k not in ("log", "history", "events")}
    old.update(version=1, history=[asdict(r) for r in meta["history"]], events=meta["events"])
    (ckpt / "history").rename(tmp_path / "no-log")
    np.savez(ckpt / "checkpoint.npz", **arrays,
             meta=np.frombuffer(json.dumps(old).encode(), dtype=np.uint8))
    got = solve_bcd(problem, max_sweeps=4, seed=2, checkpoint=ckpt, resume=True)
    _assert_same_model(got.model, want.model)
    assert [r.objective for r in got.history] == [r.objective for r in want.history]
    _, meta = checkpoint_module.load_checkpoint(ckpt, problem)  # now in the current format
    assert meta["version"] == 3 and "sha256" in meta and len(meta["history"]) == len(want.history)


# -- steady memory and checkpoint size over many sweeps -------------------------------------

def _bytes_per_record(history: list) -> float:
    """Traced bytes of a block record with its own field values (fresh floats, ints and
    strings, as a run creates them), measured on copies of ``history``."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copies = [BlockRecord(**json.loads(json.dumps(asdict(r)))) for r in history]
    size = tracemalloc.get_traced_memory()[0] - before
    if not was_tracing:
        tracemalloc.stop()
    del copies
    return size / len(history)


# One history-log line per block record: ~ 350 bytes of JSON; budget 450 B.
LOG_BYTES_PER_RECORD = 450


def test_memory_and_checkpoint_size_stay_steady_over_300_sweeps(tmp_path):
    ckpt = tmp_path / "ckpt"
    rng = np.random.default_rng(4)
    U = rng.uniform(-1.0, 1.0, (1, 8))
    problem = TrainingProblem(U, np.cos(3.0 * U), n=2, kappa=0.5)
    marks: dict[int, dict] = {}

    def callback(rec):
        done = rec.sweep  # the X record of sweep k comes after the checkpoint of k sweeps
        if rec.block != "X":
            return
        if done == 100:  # caches filled; tracing slows a sweep about 4 times
            tracemalloc.start()
        if done in (110, 300):  # the peaks over sweeps 100-110 and 290-300
            current, peak = tracemalloc.get_traced_memory()
            marks.setdefault(done, {})["transient"] = peak - current
        if done in (100, 200, 300):
            marks.setdefault(done, {}).update(
                current=tracemalloc.get_traced_memory()[0],
                npz=(ckpt / "checkpoint.npz").stat().st_size,
                log=sum(p.stat().st_size for p in (ckpt / "history").iterdir()))
        if done in (100, 290):
            tracemalloc.reset_peak()

    try:
        res = solve_bcd(problem, max_sweeps=301, seed=0, schedule={"stages": 10**6, **PLAIN},
                        checkpoint=ckpt, callback=callback)
    finally:
        tracemalloc.stop()
    assert res.n_sweeps == 301
    # What a run must keep per sweep: its block records and one (sweep, loss) pair of
    # equilibrium_losses (a 2-tuple, an int and a float: ~ 130 B with its list slot).
    records_per_sweep = len(res.history) / res.n_sweeps
    record = _bytes_per_record(res.history[300:600])
    budget = 1.25 * (records_per_sweep * record + 130)  # ~ 2.2 KB on CPython 3.11
    assert budget < 4096, f"a block record takes {record:.0f} B"
    # Growth per sweep over sweeps 100-200 and over 200-300: a leak grows in both. One
    # window alone may hold a one-off resize of an interpreter-wide table (measured: the
    # 7.5 MB table of interned strings, grown by pathlib's sys.intern when earlier tests in
    # the session had interned enough strings), which is not per-sweep growth.
    grown = [marks[b]["current"] - marks[a]["current"] for a, b in ((100, 200), (200, 300))]
    assert min(grown) <= 100 * budget, (f"memory grew by {grown} B over sweeps 100-200 and "
                                        f"200-300 ({min(grown) / 100:.0f} B per sweep at "
                                        f"least; budget {budget:.0f} B)")
    # the temporary memory of a sweep (and of its checkpoint write) does not grow with the
    # history: at sweep 300 the history is three times as long as at sweep 100
    assert marks[300]["transient"] <= marks[110]["transient"] + 64 * 1024, marks
    # the checkpoint file keeps its size; the history log grows linearly, and each
    # checkpoint write appends only the records of its sweep
    assert abs(marks[300]["npz"] - marks[100]["npz"]) <= 64, marks
    first, second = (marks[200]["log"] - marks[100]["log"], marks[300]["log"] - marks[200]["log"])
    log_budget = 100 * records_per_sweep * LOG_BYTES_PER_RECORD
    assert 0 < first <= log_budget and 0 < second <= log_budget, marks
    assert abs(second - first) <= 0.05 * first, marks
