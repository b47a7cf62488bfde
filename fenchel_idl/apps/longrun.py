"""A long training run with memory sampling (private tool for the "long runs" checks).

    python -m fenchel_idl.apps.longrun --minutes 30 --out runs/longrun [--every 5]
                                   [--problem problems/cosine_regression.toml] [--resume]

Runs ``fenchel-idl run PROBLEM --checkpoint OUT/checkpoint`` in this process (through
:func:`fenchel_idl.apps.cli.main`, progress bar on) with no limit on the sweeps (the problem's
``[schedule] stages`` is raised too), while a thread samples every ``--every`` seconds the
resident memory (VmRSS of /proc/self/status), the sweeps saved in the checkpoint, and the
sizes of the checkpoint file and of its history log. After ``--minutes`` the thread sends
SIGINT to this process, as a Ctrl-C would (a SIGINT from outside ends the run the same way
earlier), so the run ends through the interrupt path. ``--resume`` continues from the
checkpoint already in OUT/checkpoint. Then it checks that the checkpoint loads, and writes
into OUT:

- ``samples.csv``: elapsed_s, rss_mb, sweeps, sweep_s (mean wall time per sweep since the
  previous sample), cpu_sweep_s (the same in CPU time of this process, which a busy machine
  does not inflate), checkpoint_bytes, log_bytes;
- ``longrun.png``: RSS, sweep time and checkpoint sizes against elapsed time;
- ``stderr.log``: everything written to stderr (the progress bar and the final message);
- ``summary.json``: exit code, the interrupt message, the figures at start, middle and end,
  whether the progress display stayed on one line, and the checkpoint check.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from fenchel_idl.analysis import pyplot
from fenchel_idl.apps.cli import main as cli_main
from fenchel_idl.drivers import (
    HISTORY_DIR,
    build_problem,
    checkpoint_sweep,
    load_checkpoint,
    load_data,
    load_problem,
)
from fenchel_idl.errors import FenchelIDLError

__all__: list[str] = []

_DEFAULT_PROBLEM = Path(__file__).resolve().parents[2] / "problems" / "cosine_regression.toml"
_FIELDS = ("elapsed_s", "cpu_s", "rss_mb", "sweeps", "sweep_s", "cpu_sweep_s",
           "checkpoint_bytes", "log_bytes")


def _rss_mb() -> float:
    """Resident set size of this process in MB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")  # pragma: no cover - not Linux


class _Tee:
    """A text stream writing to the real stderr and to a log file."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._log.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class _Sampler(threading.Thread):
    """Samples memory and checkpoint progress; sends SIGINT at the deadline."""

    def __init__(self, out: Path, ckpt: Path, every: float, seconds: float):
        super().__init__(daemon=True)
        self.out, self.ckpt, self.every, self.seconds = out, ckpt, every, seconds
        self.rows: list[dict] = []
        self.stop = threading.Event()
        self.sent_sigint = False
        self.t0 = time.monotonic()
        self.csv_path = out / "samples.csv"
        with open(self.csv_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=_FIELDS).writeheader()

    def sample(self) -> None:
        sweeps = checkpoint_sweep(self.ckpt) or 0
        npz = self.ckpt / "checkpoint.npz"
        logs = list((self.ckpt / HISTORY_DIR).glob("*.jsonl")) if self.ckpt.exists() else []
        row = {"elapsed_s": time.monotonic() - self.t0, "cpu_s": time.process_time(),
               "rss_mb": _rss_mb(), "sweeps": sweeps, "sweep_s": float("nan"),
               "cpu_sweep_s": float("nan"),
               "checkpoint_bytes": npz.stat().st_size if npz.exists() else 0,
               "log_bytes": sum(p.stat().st_size for p in logs)}
        if self.rows and sweeps > self.rows[-1]["sweeps"]:
            prev = self.rows[-1]
            row["sweep_s"] = (row["elapsed_s"] - prev["elapsed_s"]) / (sweeps - prev["sweeps"])
            row["cpu_sweep_s"] = (row["cpu_s"] - prev["cpu_s"]) / (sweeps - prev["sweeps"])
        self.rows.append(row)
        with open(self.csv_path, "a", newline="") as fh:  # a row is on disk at once
            csv.DictWriter(fh, fieldnames=_FIELDS).writerow(row)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.sample()
            except OSError:  # a file replaced between listing and stat: next time
                continue
            if not self.sent_sigint and time.monotonic() - self.t0 >= self.seconds:
                self.sent_sigint = True
                os.kill(os.getpid(), signal.SIGINT)

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.sample()


def _long_problem(src: Path, dst: Path) -> None:
    """Copy a problem file, raising ``[schedule] stages`` so that only Ctrl-C ends it."""
    text = src.read_text()
    if "\n[schedule]\n" not in text:
        text += "\n[schedule]\n"
    text = text.replace("\n[schedule]\n", "\n[schedule]\nstages = 1000000000\n", 1)
    dst.write_text(text)


def _display(stderr: str) -> dict:
    """How the progress display behaved: bar updates, lines, and any other output."""
    lines = stderr.split("\n")
    other = [ln for ln in lines if ln and not ln.startswith("fenchel-idl:")
             and not all(part.startswith(("BCD", "refine")) for part in ln.split("\r") if part)]
    return {"bar_updates": stderr.count("\r"), "lines": len([ln for ln in lines if ln]),
            "other_lines": other[:20],
            "one_line": not other and sum("BCD" in ln for ln in lines) == 1}


def _plot(rows: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    t = [r["elapsed_s"] / 60.0 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(t, [r["rss_mb"] for r in rows], ".-", ms=2)
    axes[0].set_ylabel("RSS (MB)")
    axes[0].set_title(title)
    axes[1].plot(t, [1000.0 * r["sweep_s"] for r in rows], ".", ms=3, label="wall time")
    axes[1].plot(t, [1000.0 * r["cpu_sweep_s"] for r in rows], ".", ms=3,
                 label="CPU time of this process")
    axes[1].set_ylabel("per sweep (ms)")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8, loc="upper left")
    ax = axes[2]
    ax.plot(t, [r["checkpoint_bytes"] / 1e3 for r in rows], label="checkpoint.npz (kB)")
    ax.plot(t, [r["log_bytes"] / 1e6 for r in rows], label="history log (MB)")
    ax2 = ax.twinx()
    ax2.plot(t, [r["sweeps"] for r in rows], color="grey", lw=0.8, ls=":")
    ax2.set_ylabel("sweeps (dotted)")
    ax.set_ylabel("size")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("elapsed (min)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _at(rows: list[dict], frac: float) -> dict:
    return rows[min(len(rows) - 1, int(frac * (len(rows) - 1)))]


def _median(rows: list[dict], frac: float, key: str, width: int = 10) -> float | None:
    """The median of ``key`` over ``width`` samples around the fraction ``frac`` of the run."""
    if not rows:
        return None
    i = min(len(rows) - 1, int(frac * (len(rows) - 1)))
    lo = max(0, min(i - width // 2, len(rows) - width))
    return float(sorted(r[key] for r in rows[lo:lo + width])[len(rows[lo:lo + width]) // 2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fenchel_idl.apps.longrun",
                                     description="A long BCD run with memory sampling.")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--every", type=float, default=5.0, help="sampling period (s)")
    parser.add_argument("--problem", default=str(_DEFAULT_PROBLEM))
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in OUT/checkpoint")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    problem_path = out / "problem.toml"
    _long_problem(Path(args.problem), problem_path)
    sampler = _Sampler(out, ckpt, args.every, 60.0 * args.minutes)
    sampler.sample()
    sampler.start()
    real_stderr = sys.stderr
    with open(out / "stderr.log", "w") as log:
        sys.stderr = _Tee(real_stderr, log)
        try:
            rc = cli_main(["run", str(problem_path), "--out", str(out / "result"),
                           "--checkpoint", str(ckpt), "--max-sweeps", str(10**9)]
                          + (["--resume"] if args.resume else []))
        finally:
            sys.stderr = real_stderr
            sampler.finish()
    stderr = (out / "stderr.log").read_bytes().decode(errors="replace")  # keep the \r
    message = [ln for ln in stderr.splitlines() if ln.startswith("fenchel-idl:")]
    check: dict = {}
    name = problem_path.stem
    try:
        spec = load_problem(problem_path)
        name = spec.name
        problem = build_problem(spec, load_data(spec)[0])
        t0 = time.perf_counter()
        loaded = load_checkpoint(ckpt, problem)
        check = {"loads": loaded is not None, "load_s": time.perf_counter() - t0}
        if loaded is not None:
            check.update(sweep=loaded[1]["sweep"], records=len(loaded[1]["history"]))
    except (FenchelIDLError, OSError) as exc:  # reported: the figures are still written
        check = {"loads": False, "error": f"{type(exc).__name__}: {exc}"}
    rows = sampler.rows
    timed = [r for r in rows if r["sweep_s"] == r["sweep_s"]]  # not NaN
    summary = {"exit_code": rc, "sigint_sent_by_timer": sampler.sent_sigint,
               "message": message, "checkpoint": check, "display": _display(stderr),
               "samples": len(rows),
               "rss_mb": {k: _at(rows, f)["rss_mb"] for k, f in
                          (("start", 0.0), ("first_sweeps", 0.02), ("middle", 0.5),
                           ("end", 1.0))},
               "sweep_s": {k: _median(timed, f, "sweep_s") for k, f in
                           (("start", 0.0), ("middle", 0.5), ("end", 1.0))},
               "cpu_sweep_s": {k: _median(timed, f, "cpu_sweep_s") for k, f in
                               (("start", 0.0), ("middle", 0.5), ("end", 1.0))},
               "sweeps": rows[-1]["sweeps"], "elapsed_s": rows[-1]["elapsed_s"],
               "checkpoint_bytes": {"middle": _at(rows, 0.5)["checkpoint_bytes"],
                                    "end": rows[-1]["checkpoint_bytes"]},
               "log_bytes": {"middle": _at(rows, 0.5)["log_bytes"],
                             "end": rows[-1]["log_bytes"]}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    _plot(rows, out / "longrun.png", f"{name}: "
          f"{summary['sweeps']} sweeps in {summary['elapsed_s'] / 60:.1f} min")
    print(json.dumps(summary, indent=2, default=float))
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
