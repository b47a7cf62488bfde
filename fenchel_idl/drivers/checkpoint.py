"""Checkpoints of a BCD run: how they are written, checked, locked, and what a Ctrl-C says
about them.

A checkpoint directory holds ``checkpoint.npz`` (the state arrays and a small JSON metadata
record, rewritten atomically after every sweep) and ``history/<run id>.jsonl``, an
append-only log with one JSON line per block record ({"record": ...}) or solve event
({"event": ...}). The metadata names the log and the byte length of its valid prefix, so a
checkpoint write costs the same at every sweep. Bytes past the valid prefix (a kill between
appending and replacing ``checkpoint.npz``) are ignored on resume and overwritten by the
next append.

Integrity (format 3): the metadata carries a SHA-256 checksum of the arrays and of the rest
of the metadata, and the log entry carries a hash chain over the lines of the valid prefix
(``h_k = sha256(h_{k-1} + line_k)``, extended at each append), so a hand-edited record
(``"certified": true``) or array is refused on resume. The metadata also records the
resolved settings of the run (:func:`run_settings`: tolerances, schedule, seed, solvers,
start) beside the problem's fingerprint (data and model); a resume with other settings is
refused with the settings that differ. Formats 1 and 2 (no checksum, no settings) are
still read, with a warning that neither can be checked.

One run at a time: :func:`checkpoint_lock` holds an exclusive ``flock`` on the directory
while a run uses it. The operating system drops the lock when the process ends, however it
ends (SIGKILL included), so a lock never outlives its run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fenchel_idl.blocks.block_solvers import State
from fenchel_idl.drivers.records import BlockRecord
from fenchel_idl.errors import CheckpointError, TrainingInterrupted
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.training_problem import TrainingProblem

try:  # POSIX; elsewhere a checkpoint directory is not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["HISTORY_DIR", "CheckpointLock", "checkpoint_lock", "checkpoint_sweep",
           "interrupted", "load_checkpoint", "new_log", "run_settings", "save_checkpoint"]

_CKPT_VERSION = 3
_CKPT_KEYS = ("sweep", "stage", "stage_sweeps", "rejected", "max_increase")
HISTORY_DIR = "history"
_LOGGER = logging.getLogger("fenchel_idl.drivers")
#: Directories locked by this process: resolved path -> [descriptor, holders, directories the
#: lock created] (a run inside another run on the same directory shares its lock).
_HELD: dict[str, list] = {}


# -- the lock --------------------------------------------------------------------------------

class CheckpointLock:
    """An exclusive lock on a checkpoint directory, held until :meth:`release` (or the end of
    the process). ``checkpoint_lock(None)`` gives a lock that holds nothing. The last release
    removes the directories the lock created when they are still empty (a run stopped before
    its first checkpoint leaves nothing behind)."""

    def __init__(self, key: str | None = None, fd: int | None = None):
        self.key, self.fd, self.released = key, fd, key is None

    def release(self) -> None:
        """Give the lock up (the last holder in this process closes the descriptor)."""
        if self.released:
            return
        self.released = True
        entry = _HELD.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.key]
            for created in entry[2]:  # innermost first; stops at the first non-empty one
                try:
                    created.rmdir()
                except OSError:
                    break
            os.close(self.fd)  # closing the descriptor drops the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def checkpoint_lock(directory: str | os.PathLike | None) -> CheckpointLock:
    """Create ``directory`` if needed and take an exclusive lock on it for this run.

    Raises
    ------
    CheckpointError
        Another process holds the lock (a run is using the directory), or the directory
        cannot be created or opened.
    """
    if directory is None:
        return CheckpointLock()
    path = Path(directory)
    created = [d for d in (path, *path.parents) if not d.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        key = str(path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            return CheckpointLock(key, _HELD[key][0])
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CheckpointError(f"'checkpoint' must be a directory that can be created and "
                              f"written; {str(path)!r} cannot ({type(exc).__name__}: "
                              f"{exc.strerror or exc}).") from None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"checkpoint directory {str(path)!r} is in use by another "
                                  "running training process (it holds the directory's lock); "
                                  "wait for it to end, or use another directory.") from None
    _HELD[key] = [fd, 1, created]
    return CheckpointLock(key, fd)


# -- the settings of a run -------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """``value`` as JSON data: a dataclass as its fields, a model as a digest of its arrays
    and activation, anything else that JSON cannot hold as its repr."""
    if isinstance(value, ImplicitModel):
        h = hashlib.sha256(json.dumps(value.activation.to_dict(), sort_keys=True).encode())
        for k in ("A", "B", "C", "D", "bias_x", "bias_y"):
            h.update(np.ascontiguousarray(getattr(value, k), dtype=np.float64).tobytes())
        return {"model sha256": h.hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return repr(value)


def run_settings(**settings: Any) -> dict:
    """The resolved settings of a run that change its checkpointed state (for solve_bcd:
    ``tol``, ``schedule``, ``seed``, ``solver``, ``on_failure``, ``gap_tol``,
    ``block_solver``, ``init``), as JSON data to store in and compare with a checkpoint.
    Settings that only act after the checkpointed sweeps (``max_sweeps``, ``refine``) or
    that do not change results (``executor``, ``progress``) are left out by the caller."""
    return {k: _plain(v) for k, v in sorted(settings.items())}


def _settings_changes(saved: Any, settings: dict) -> list[str]:
    """What differs between the settings a checkpoint was written with and ``settings``."""
    if not isinstance(saved, dict):
        return [f"the checkpoint's settings record is {saved!r}"]
    changes = []
    for key in sorted(set(saved) | set(settings)):
        if key in saved and isinstance(saved[key], dict) and isinstance(settings.get(key), dict):
            changes += [f"{key}.{c}" for c in _settings_changes(saved[key], settings[key])]
        elif saved.get(key, "<unset>") != settings.get(key, "<unset>"):
            changes.append(f"{key}: {saved.get(key, '<unset>')!r} -> "
                           f"{settings.get(key, '<unset>')!r}")
    return changes


# -- writing ---------------------------------------------------------------------------------

def new_log() -> dict:
    """The log entry of a run that has written nothing yet (a fresh log file name)."""
    return {"file": f"{uuid.uuid4().hex}.jsonl", "bytes": 0, "records": 0, "events": 0,
            "sha256": ""}


def _chain(digest: str, lines: list[bytes]) -> str:
    """Extend the hash chain of the log by ``lines`` (each without its newline)."""
    for line in lines:
        digest = hashlib.sha256(digest.encode() + line).hexdigest()
    return digest


def _truncate_log(directory: Path, log: dict) -> None:
    path = directory / HISTORY_DIR / log["file"]
    if path.exists():
        with open(path, "r+b") as fh:
            fh.truncate(log["bytes"])


def _append_log(directory: Path, log: dict, history: list, events: list) -> dict:
    """Append the records and events not yet in the log; return the new log metadata."""
    lines = [json.dumps({"record": asdict(r)}, default=float) for r in history[log["records"]:]]
    lines += [json.dumps({"event": e}, default=float) for e in events[log["events"]:]]
    encoded = [line.encode() for line in lines]
    data = b"".join(line + b"\n" for line in encoded)
    path = directory / HISTORY_DIR / log["file"]
    path.parent.mkdir(exist_ok=True)
    with open(path, "ab") as fh:  # appends go to the end, which is now log["bytes"]
        fh.truncate(log["bytes"])
        fh.write(data)
    return {**log, "bytes": log["bytes"] + len(data), "records": len(history),
            "events": len(events), "sha256": _chain(log.get("sha256", ""), encoded)}


def _checksum(arrays: dict, meta: dict) -> str:
    """SHA-256 of the arrays (names, shapes, bytes) and of the metadata as canonical JSON
    (all of it but the checksum itself)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k], dtype=np.float64)
        h.update(k.encode() + str(a.shape).encode() + a.tobytes())
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(b"metadata" + json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def save_checkpoint(directory: Path, problem: TrainingProblem, s: State, meta: dict,
                    history: list, events: list, log: dict,
                    settings: dict | None = None) -> dict:
    """Write the state atomically (a temporary file, then a rename) after appending the new
    history records and events to the log; return the new log metadata. ``settings``
    (:func:`run_settings`) is stored for the check on resume.

    On failure (or Ctrl-C) the directory is left as it was: the temporary file is removed
    and the log cut back to the length the previous checkpoint refers to.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.npz.tmp"
    try:
        new_log = _append_log(directory, log, history, events)
        arrays = s.arrays()
        full = json.loads(json.dumps(
            {**meta, "log": new_log, "version": _CKPT_VERSION, "settings": settings or {},
             "fingerprint": problem.fingerprint()}, default=float))
        full["sha256"] = _checksum(arrays, full)
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays, meta=np.frombuffer(json.dumps(full).encode(),
                                                      dtype=np.uint8))
        os.replace(tmp, directory / "checkpoint.npz")
    except BaseException:
        tmp.unlink(missing_ok=True)
        _truncate_log(directory, log)
        raise
    if log["bytes"] == 0:  # first checkpoint of this run: drop the logs of earlier runs
        for old in (directory / HISTORY_DIR).glob("*.jsonl"):
            if old.name != log["file"]:
                old.unlink(missing_ok=True)
    return new_log


# -- reading ---------------------------------------------------------------------------------

def _read_log(path: Path, directory: Path, log: Any, chained: bool) -> tuple[list, list]:
    """The block records (BlockRecord) and solve events (dict) of the valid prefix of a
    checkpoint's log; with ``chained`` (format 3) the prefix must match its hash chain."""
    ok = (isinstance(log, dict) and isinstance(log.get("file"), str)
          and Path(log["file"]).name == log["file"] and log["file"].endswith(".jsonl")
          and all(isinstance(log.get(k), int) and log[k] >= 0
                  for k in ("bytes", "records", "events"))
          and (not chained or isinstance(log.get("sha256"), str)))
    if not ok:
        raise CheckpointError(f"checkpoint {str(path)!r} has a malformed history-log entry "
                              f"{log!r}; delete the checkpoint directory to start over.")
    log_path = directory / HISTORY_DIR / log["file"]
    try:
        with open(log_path, "rb") as fh:
            data = fh.read(log["bytes"])
        if len(data) != log["bytes"]:
            raise ValueError(f"{len(data)} bytes, expected at least {log['bytes']}")
        history, events, digest = [], [], ""
        for line in data.splitlines():  # one parsed line at a time: a low peak of memory
            digest = _chain(digest, [line]) if chained else digest
            item = json.loads(line)
            if "record" in item:
                history.append(BlockRecord(**item["record"]))
            elif "event" in item:
                events.append(item["event"])
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"the history log {str(log_path)!r} of checkpoint {str(path)!r} "
                              f"is missing, corrupt or truncated ({type(exc).__name__}: {exc}); "
                              "delete the checkpoint directory to start over.") from None
    if chained and digest != log["sha256"]:
        raise CheckpointError(f"the history log {str(log_path)!r} of checkpoint {str(path)!r} "
                              "failed its checksum: its records were changed after they were "
                              "written; delete the checkpoint directory to start over.")
    if (len(history), len(events)) != (log["records"], log["events"]):
        raise CheckpointError(f"the history log {str(log_path)!r} of checkpoint {str(path)!r} "
                              f"holds {len(history)} records and {len(events)} events, expected "
                              f"{log['records']} and {log['events']}; delete the checkpoint "
                              "directory to start over.")
    return history, events


def _read_npz(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: np.array(data[k]) for k in ("A", "B", "b", "C", "D", "d", "X", "lam")}
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the checkpoint is bad
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated "
                              f"({type(exc).__name__}: {exc}); delete it to start over.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt (its metadata is "
                              f"{type(meta).__name__}, not a record); delete it to start over.")
    return meta, arrays


def _check_meta(path: Path, meta: dict, arrays: dict, problem: TrainingProblem,
                settings: dict | None) -> None:
    """Format, fingerprint, checksum and settings of a checkpoint's metadata."""
    if meta.get("fingerprint") != problem.fingerprint():
        raise CheckpointError(f"checkpoint {str(path)!r} belongs to a different problem or data "
                              "set (fingerprint mismatch); use another directory or delete it.")
    version = meta.get("version")
    keys = _CKPT_KEYS + {1: ("history", "events"), 2: ("log",),
                         _CKPT_VERSION: ("log", "settings", "sha256")}.get(version, ())
    missing = [k for k in keys if k not in meta]
    if version not in (1, 2, _CKPT_VERSION) or missing:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {version!r} (this "
                              f"fenchel_idl reads 1 to {_CKPT_VERSION}) or lacks {missing}; "
                              "delete it to start over.")
    if version != _CKPT_VERSION:
        _LOGGER.warning("checkpoint %r has the older format %s, which carries neither a checksum "
                        "nor the run's settings: neither can be checked on this resume.",
                        str(path), version)
        return
    if meta["sha256"] != _checksum(arrays, meta):
        raise CheckpointError(f"checkpoint {str(path)!r} failed its checksum: its arrays or "
                              "metadata were changed after it was written; delete it to start "
                              "over.")
    changes = [] if settings is None else _settings_changes(meta["settings"], settings)
    if changes:
        raise CheckpointError(f"checkpoint {str(path)!r} was written with other settings than "
                              f"this run's ({'; '.join(changes)}); resuming would mix them. "
                              "Resume with the settings it was written with, or use another "
                              "checkpoint directory (or delete it) to start over.")


def load_checkpoint(directory: Path, problem: TrainingProblem, settings: dict | None = None):
    """The state and metadata of the checkpoint in ``directory`` (None when there is none).

    ``settings`` (:func:`run_settings`) must equal those the checkpoint was written with;
    None skips that check (to inspect a checkpoint).

    Raises
    ------
    CheckpointError
        A corrupt, truncated or tampered checkpoint or history log, one of another problem
        or data set, or one written with other settings (the message names them).
    """
    path = Path(directory) / "checkpoint.npz"
    if not path.is_file():
        return None
    meta, arrays = _read_npz(path)
    _check_meta(path, meta, arrays, problem, settings)
    n, p, q, m = problem.n, problem.p, problem.q, problem.m
    shapes = {"A": (n, n), "B": (n, p), "b": (n,), "C": (q, n), "D": (q, p), "d": (q,),
              "X": (n, m), "lam": (n,)}
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise CheckpointError(f"checkpoint {str(path)!r}: array {k!r} has shape "
                                  f"{arrays[k].shape}, expected {shape}.")
        if not np.all(np.isfinite(arrays[k])):
            raise CheckpointError(f"checkpoint {str(path)!r}: non-finite values in array {k!r}.")
    if "log" in meta:
        meta["history"], meta["events"] = _read_log(path, Path(directory), meta["log"],
                                                    chained=meta["version"] == _CKPT_VERSION)
    else:  # format 1
        try:
            meta["history"] = [BlockRecord(**r) for r in meta["history"]]
        except TypeError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} has malformed history records "
                                  f"({exc}); delete it to start over.") from None
    return State(**arrays), meta


def checkpoint_sweep(directory: str | os.PathLike | None) -> int | None:
    """The sweep count stored in the checkpoint in ``directory``; None when there is none
    (or it cannot be read)."""
    if directory is None:
        return None
    try:
        with np.load(Path(directory) / "checkpoint.npz", allow_pickle=False) as data:
            return int(json.loads(bytes(data["meta"]).decode())["sweep"])
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None


def interrupted(phase: str, sweeps: int, ckpt_dir: Path | None,
                 inner: BaseException | None = None) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` for a Ctrl-C in ``phase``, saying what is on disk."""
    epoch = getattr(inner, "epoch", None)
    where = {"start": "while starting (initial equilibrium and readout, before any sweep)",
             "bcd": f"after {sweeps} completed sweep(s)",
             "readout": f"in the final readout, after {sweeps} sweep(s)",
             "refine": f"in the refinement stage{f' (epoch {epoch})' if epoch else ''}, "
                       f"after {sweeps} sweep(s)"}[phase]
    saved = checkpoint_sweep(ckpt_dir)
    if ckpt_dir is None:
        kept = "no checkpoint was kept (pass checkpoint=DIR to be able to resume)"
    elif saved is None:
        kept = f"no checkpoint has been written to {str(ckpt_dir)!r} yet"
    else:
        kept = (f"the last checkpoint, after sweep {saved}, is in {str(ckpt_dir)!r}; resume "
                f"with solve_bcd(..., checkpoint={str(ckpt_dir)!r}, resume=True)")
        if phase == "refine":
            kept += " (refinement keeps no checkpoint: resuming redoes the readout and it)"
    return TrainingInterrupted(f"training interrupted {where}; {kept}.", phase=phase,
                               sweeps=sweeps, checkpoint=ckpt_dir, checkpoint_sweep=saved,
                               epoch=epoch)
