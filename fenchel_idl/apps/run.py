"""The main job: train the problem of a problem file and write its results."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fenchel_idl.analysis import plot_convergence, plot_fit
from fenchel_idl.apps.common import model_metric
from fenchel_idl.drivers import (
    BCDResult,
    bcd_options,
    build_problem,
    load_data,
    load_problem,
    solve_bcd,
    solve_bcd_minibatch,
)
from fenchel_idl.errors import ValidationError

__all__ = ["run_problem"]


def run_problem(path: str | Path, out: str | Path | None = None, *, progress: bool = True,
                checkpoint: str | Path | None = None, resume: bool = False,
                max_sweeps: int | None = None) -> tuple[BCDResult, dict]:
    """Train the problem of a problem file; write results to ``out`` when given.

    Returns
    -------
    result : BCDResult
    summary : dict
        Train (and test) metrics, timings and the paths written.
    """
    spec = load_problem(path)
    ds, test = load_data(spec)
    problem = build_problem(spec, ds)
    t0 = time.perf_counter()
    opts = bcd_options(spec)
    if spec.minibatch is not None:
        if checkpoint is not None or resume:
            raise ValidationError("checkpoint/resume is for full-batch BCD; the problem file "
                                  f"{spec.path!r} trains on mini-batches ([minibatch]).")
        mb = dict(spec.minibatch)
        if max_sweeps is not None:
            mb["epochs"] = max_sweeps
        for key in ("max_sweeps", "schedule"):  # full-batch only
            del opts[key]
        result = solve_bcd_minibatch(problem, **mb, **opts, progress=progress)
    else:
        if max_sweeps:
            opts["max_sweeps"] = max_sweeps
        result = solve_bcd(problem, **opts, checkpoint=checkpoint, resume=resume,
                           progress=progress)
    summary: dict[str, Any] = {"problem": spec.name, "n_sweeps": result.n_sweeps,
                               "time_s": time.perf_counter() - t0,
                               "timings": dict(result.timings),
                               "start_train": result.start_metric,
                               "train": model_metric(result.model, ds)}
    if test is not None:
        summary["test"] = model_metric(result.model, test)
        summary["start_test"] = model_metric(result.start_model, test)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.model.save(out / "model.npz")  # atomic itself
        _atomic(out / "history.json", lambda p: p.write_text(json.dumps(
            [asdict(r) for r in result.history], indent=1, default=float)))
        _atomic(out / "certificate.json", result.certificate.save)
        _atomic(out / "certificate.txt", lambda p: p.write_text(str(result.certificate) + "\n"))
        _atomic(out / "convergence.png", lambda p: plot_convergence(result, p, title=spec.name))
        written = ["model.npz", "history.json", "certificate.json", "certificate.txt",
                   "convergence.png"]
        if ds.task == "regression" and ds.p == 1 and ds.q == 1:
            _atomic(out / "fit.png", lambda p: plot_fit(result, ds, p, title=spec.name))
            written.append("fit.png")
        summary["written"] = [str(out / w) for w in written]
        _atomic(out / "summary.json",
                lambda p: p.write_text(json.dumps(summary, indent=2, default=float)))
    return result, summary


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a result file through a temporary file in its directory, then rename it, so
    that a Ctrl-C (or a crash) while results are written never leaves a half-written file.
    The temporary name keeps the suffix (matplotlib picks the format from it)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
