"""The main job: train the problem of a problem file and write its results.

The output directory
--------------------
``out`` is checked before any training: it must be a directory that can be created and
written (a probe file is written and removed), it must not hold a directory where a result
file goes, and it must be new, empty, or hold only the results of an earlier run (the files
of :data:`OUTPUTS`, their temporary files and :data:`MANIFEST`). A directory with other
files is refused unless ``overwrite`` is given, which writes into it anyway and leaves the
other files alone. A directory this run created is removed again when training fails.

After training, the earlier run's results are removed (the manifest first, so the directory
never looks complete while it is rewritten), so no stale file (a ``fit.png`` that this
problem does not draw) survives. Each result is written to a temporary file and renamed;
``manifest.json`` (every file's SHA-256) is written last, so a set of results is complete
exactly when its manifest is there and its checksums match (:func:`check_results`).

A state-driven fit
------------------
A problem file with a ``[teacher]`` table is fitted, not trained by BCD: a scikit-learn MLP
is trained on its data and an implicit model is fitted to its hidden states, one certified
convex program per state (:func:`fenchel_idl.drivers.fit_teacher`). Its results go through
the same output directory checks, atomic writes and manifest: ``model.npz`` (the fitted
model), ``teacher.npz`` (the teacher as an implicit model), ``certificate.json`` / ``.txt``
(:meth:`fenchel_idl.drivers.StateFit.to_dict`: each row's duality gap, the readout's, the
well-posedness) and ``summary.json`` (teacher and fitted accuracy or RMSE on the training
and test data, zeros in A and B, rows certified, wall times). Checkpoints, ``--resume`` and
``max_sweeps`` are for BCD and refused.

The global bound
----------------
A problem file with ``[certify] global = true`` gets, after training, a certified lower
bound on the training loss of every model of its class (:func:`fenchel_idl.global_bound`,
SCIP started from the trained model), and its certificate a "global gap" line. Whether
the problem is one that the bound handles (its size, activation, loss, penalties, balls)
and whether SCIP is installed is checked before training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fenchel_idl.analysis import check_global_size, global_bound, plot_convergence, plot_fit
from fenchel_idl.apps.common import model_metric
from fenchel_idl.drivers import (
    BCDResult,
    ProblemSpec,
    StateFit,
    build_problem,
    fit_teacher,
    load_data,
    load_problem,
    train_spec,
)
from fenchel_idl.errors import FenchelIDLError, OutputError, ValidationError

__all__ = ["MANIFEST", "OUTPUTS", "check_results", "default_out", "run_name", "run_problem"]

#: The result files ``fenchel-idl run`` writes, in the order they are written; :data:`MANIFEST`
#: comes last. BCD writes all but ``teacher.npz`` (``fit.png`` only for one input and one
#: output); a ``[teacher]`` fit writes ``model.npz``, ``teacher.npz``, the certificate and
#: ``summary.json``.
OUTPUTS = ("model.npz", "teacher.npz", "history.json", "certificate.json", "certificate.txt",
           "convergence.png", "fit.png", "summary.json")
#: Written last: the SHA-256 of every result file of the run. Its presence marks a complete
#: set of results.
MANIFEST = "manifest.json"
_TMP_PREFIX = ".fenchel-idl-"


def run_name(spec: ProblemSpec) -> str:
    """The problem file's ``name``, checked to be a name and not a path (it names the output
    directory ``runs/<name>``).

    Raises
    ------
    ValidationError
        An empty name, ``.`` or ``..``, a path separator, or a control character.
    """
    name = spec.name
    bad = (not name.strip() or name in (".", "..") or "/" in name or "\\" in name
           or os.sep in name or (os.altsep or "/") in name
           or any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise ValidationError(f"problem file {spec.path!r}: 'name' must be a plain name (it "
                              "names the output directory runs/<name>): not empty, not '.' or "
                              f"'..', no path separators or control characters; got {name!r}.")
    return name


def default_out(spec: ProblemSpec) -> Path:
    """``runs/<name>``: the output directory of a run given no ``out``."""
    return Path("runs") / run_name(spec)


def run_problem(path: str | Path, out: str | Path | None = None, *, progress: bool = True,
                checkpoint: str | Path | None = None, resume: bool = False,
                max_sweeps: int | None = None, overwrite: bool = False
                ) -> tuple[BCDResult | StateFit, dict]:
    """Train the problem of a problem file (or fit its ``[teacher]``); write results to
    ``out`` when given.

    ``out`` is checked before training and written as the module docstring says;
    ``overwrite`` lets a run write into a directory that holds files of its own.

    Returns
    -------
    result : BCDResult, or StateFit for a ``[teacher]`` problem
    summary : dict
        Train (and test) metrics, timings and the paths written; for a ``[teacher]``
        problem also the teacher's metrics, zeros in A and B and the rows certified.

    Raises
    ------
    ValidationError
        A bad problem file or ``name``; an ``out`` that is a file, lies under a file, cannot
        be created or written, holds a directory where a result goes, or holds other files
        (without ``overwrite``); ``checkpoint``, ``resume`` or ``max_sweeps`` with a
        ``[teacher]`` problem.
    OutputError
        A result could not be written (a full disk): the directory then has no manifest.
    """
    spec = load_problem(path)
    run_name(spec)
    if spec.teacher is not None:
        _check_teacher_run(spec, checkpoint, resume, max_sweeps)
    created = _prepare_out(Path(out), overwrite) if out is not None else []
    try:
        if spec.teacher is not None:
            result, summary = _fit(spec)
            writers = _fit_writers(result)
        else:
            result, summary, ds = _train(spec, progress, checkpoint, resume, max_sweeps)
            writers = _bcd_writers(spec, result, ds)
    except BaseException:
        for directory in created:  # innermost first; leave what holds anything
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    if out is not None:
        summary["written"] = _write_results(Path(out), spec, writers, summary)
    return result, summary


def _train(spec: ProblemSpec, progress: bool, checkpoint, resume: bool,
           max_sweeps: int | None) -> tuple[BCDResult, dict, Any]:
    ds, test = load_data(spec)
    problem = build_problem(spec, ds)
    _check_global(spec, problem)
    t0 = time.perf_counter()
    result = train_spec(spec, problem, max_sweeps=max_sweeps, checkpoint=checkpoint,
                        resume=resume, progress=progress)
    summary: dict[str, Any] = {"problem": spec.name, "n_sweeps": result.n_sweeps,
                               "time_s": time.perf_counter() - t0,
                               "timings": dict(result.timings),
                               # the model metric of the start, as for the result (the
                               # driver's start_metric is the training loss's: RMSE for a
                               # squared loss on one-hot labels)
                               "start_train": model_metric(result.start_model, ds),
                               "train": model_metric(result.model, ds)}
    if test is not None:
        summary["test"] = model_metric(result.model, test)
        summary["start_test"] = model_metric(result.start_model, test)
    if spec.certify["global"]:
        bound = global_bound(problem, time_limit=spec.certify["global_time_limit"],
                             gap=spec.certify["global_gap"], start=result)
        figures = bound.to_dict()
        result.certificate = replace(result.certificate, global_bound=figures)
        summary["global_bound"] = {k: v for k, v in figures.items() if k != "trace"}
        summary["global_bound"]["gap_of_returned_model"] = bound.gap_of(
            result.certificate.true_loss)
    return result, summary, ds


def _check_teacher_run(spec: ProblemSpec, checkpoint, resume: bool,
                       max_sweeps: int | None) -> None:
    """Refuse, before anything runs, the options of BCD that a ``[teacher]`` fit would
    ignore."""
    given = [name for name, value in (("checkpoint", checkpoint is not None),
                                      ("resume", resume), ("max_sweeps", max_sweeps is not None))
             if value]
    if given:
        raise ValidationError(f"problem file {spec.path!r} is a state-driven fit ([teacher]): "
                              f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                              "BCD training; leave out --checkpoint, --resume and --max-sweeps.")


def _fit(spec: ProblemSpec) -> tuple[StateFit, dict]:
    """Train the teacher MLP of [teacher] on the training data and fit the implicit model
    to its states (:func:`fenchel_idl.drivers.fit_teacher`); the summary holds the teacher's
    and the fitted model's metrics on the training (and test) data."""
    ds, test = load_data(spec)
    target = ds.labels if ds.task == "classification" else ds.Y
    t0 = time.perf_counter()
    fit = fit_teacher(spec.teacher or {}, ds.U, target, task=ds.task, seed=spec.seed)
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "problem": spec.name, "kind": "teacher", "time_s": wall, "fit_time_s": fit.time,
        "teacher_time_s": wall - fit.time, "n_states": fit.model.n, "samples": fit.samples,
        "rows_certified": sum(r.certified for r in fit.rows), "max_gap": fit.max_gap,
        "certified": fit.certified, "zeros_A": fit.sparsity_A, "zeros_B": fit.sparsity_B,
        "teacher_train": model_metric(fit.teacher, ds), "train": model_metric(fit.model, ds)}
    if test is not None:
        summary["teacher_test"] = model_metric(fit.teacher, test)
        summary["test"] = model_metric(fit.model, test)
    return fit, summary


def _check_global(spec: ProblemSpec, problem: Any) -> None:
    """With ``[certify] global = true``, refuse before training a problem that
    :func:`fenchel_idl.global_bound` does not handle, or a missing SCIP."""
    if not spec.certify["global"]:
        return
    try:
        check_global_size(problem)
    except FenchelIDLError as exc:
        raise type(exc)(f"problem file {spec.path!r}: [certify] global = true: {exc}") from None
    if importlib.util.find_spec("pyscipopt") is None:
        raise ValidationError(f"problem file {spec.path!r}: [certify] global = true needs SCIP "
                              "(pyscipopt): pip install fenchel_idl[global].")


# -- the output directory -------------------------------------------------------------------------

def _ours(name: str) -> bool:
    """A file name this tool writes in an output directory (results, manifest, temporaries)."""
    return name in OUTPUTS or name == MANIFEST or name.startswith(_TMP_PREFIX)


def _prepare_out(out: Path, overwrite: bool) -> list[Path]:
    """Check (and create) the output directory before training; return the directories
    created, innermost first."""
    if out.exists() and not out.is_dir():
        raise ValidationError(f"'out' must be a directory; {str(out)!r} is a file.")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValidationError(f"'out' {str(out)!r} cannot be created: {str(parent)!r} is "
                                  "a file, not a directory.")
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=_TMP_PREFIX + "probe-") as fh:
            fh.write(b"probe")
            fh.flush()
    except OSError as exc:
        for directory in created:
            try:
                directory.rmdir()
            except OSError:
                break
        raise ValidationError(f"'out' must be a directory that can be created and written; "
                              f"{str(out)!r} cannot ({type(exc).__name__}: "
                              f"{exc.strerror or exc}).") from None
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir() and _ours(p.name))
    if dirs:
        raise ValidationError(f"'out' {str(out)!r} holds directories where result files go "
                              f"({dirs}); remove them or choose another directory.")
    others = sorted(p.name for p in out.iterdir() if not _ours(p.name))
    if others and not overwrite:
        shown = others[:5] + (["..."] if len(others) > 5 else [])
        raise ValidationError(f"'out' {str(out)!r} holds files that are not results of an "
                              f"earlier fenchel-idl run ({shown}); choose another directory, "
                              "or pass --overwrite (overwrite=True) to write the results into "
                              "it anyway (the other files are left alone).")
    return created


_Writers = dict[str, Callable[[Path], Any]]


def _bcd_writers(spec: ProblemSpec, result: BCDResult, ds: Any) -> _Writers:
    """The result files of a BCD run, by name, each with the function that writes it."""
    writers: _Writers = {
        "model.npz": result.model.save,
        "history.json": lambda p: p.write_text(json.dumps(
            [asdict(r) for r in result.history], indent=1, default=float)),
        "certificate.json": result.certificate.save,
        "certificate.txt": lambda p: p.write_text(str(result.certificate) + "\n"),
        "convergence.png": lambda p: plot_convergence(result, p, title=spec.name)}
    if ds.task == "regression" and ds.p == 1 and ds.q == 1:
        writers["fit.png"] = lambda p: plot_fit(result, ds, p, title=spec.name)
    return writers


def _fit_writers(fit: StateFit) -> _Writers:
    """The result files of a ``[teacher]`` fit, by name, each with the function that
    writes it."""
    return {"model.npz": fit.model.save, "teacher.npz": fit.teacher.save,
            "certificate.json": lambda p: p.write_text(json.dumps(
                fit.to_dict(), indent=2, default=float, allow_nan=False)),
            "certificate.txt": lambda p: p.write_text(fit.certificate_text() + "\n")}


def _write_results(out: Path, spec: ProblemSpec, writers: _Writers, summary: dict) -> list[str]:
    """Replace the results of an earlier run in ``out`` by the files of ``writers``, then
    ``summary.json`` and the manifest; return the paths."""
    writers = dict(writers)
    summary["written"] = [str(out / name) for name in (*writers, "summary.json", MANIFEST)]
    writers["summary.json"] = lambda p: p.write_text(json.dumps(summary, indent=2,
                                                                default=float))
    try:
        (out / MANIFEST).unlink(missing_ok=True)  # first: incomplete until rewritten
        for p in out.iterdir():
            if _ours(p.name) and p.is_file():
                p.unlink()
        digests = {}
        for name, write in writers.items():
            _atomic(out / name, write)
            digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
        manifest = {"problem": spec.name, "files": digests}
        _atomic(out / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    except (OSError, FenchelIDLError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OutputError(f"could not write the results to {str(out)!r} ({type(exc).__name__}: "
                          f"{detail}); the directory holds an incomplete set of results (no "
                          f"{MANIFEST}). Free the space and run again (with --checkpoint DIR "
                          "--resume, a run resumes from its last checkpoint).") from None
    return summary["written"]


def check_results(out: str | Path) -> dict[str, str]:
    """The manifest of a complete set of results in ``out`` (file name -> SHA-256).

    Raises
    ------
    ValidationError
        No manifest (the run did not finish writing), an unreadable one, or a result file
        missing or changed since it was written.
    """
    out = Path(out)
    try:
        files = json.loads((out / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        files = None
    if not isinstance(files, dict):
        raise ValidationError(f"{str(out)!r} holds no complete set of results: its {MANIFEST} "
                              "is missing or unreadable (the run did not finish writing).")
    for name, digest in files.items():
        path = out / str(name)
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ValidationError(f"result file {str(path)!r} is missing or was changed after "
                                  f"it was written (its SHA-256 differs from {MANIFEST}).")
    return files


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a result file through a temporary file in its directory, then rename it, so
    that a Ctrl-C (or a crash) while results are written never leaves a half-written file.
    The temporary name keeps the suffix (matplotlib picks the format from it)."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
