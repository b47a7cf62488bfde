"""Checkpoints of a BCD run, and what a Ctrl-C says about them.

A checkpoint directory holds ``checkpoint.npz`` (the state arrays and a small JSON metadata
record, rewritten atomically after every sweep) and ``history/<run id>.jsonl``, an
append-only log with one JSON line per block record ({"record": ...}) or solve event
({"event": ...}). The metadata names the log and the byte length of its valid prefix, so a
checkpoint write costs the same at every sweep. Bytes past the valid prefix (a kill between
appending and replacing ``checkpoint.npz``) are ignored on resume and overwritten by the
next append. Format 1, which kept the history in the metadata, is still read.
"""

from __future__ import annotations

import json
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
from fenchel_idl.problem.training_problem import TrainingProblem

__all__ = ["HISTORY_DIR", "checkpoint_sweep", "interrupted", "load_checkpoint", "new_log",
           "save_checkpoint"]

_CKPT_VERSION = 2
_CKPT_KEYS = ("sweep", "stage", "stage_sweeps", "rejected", "max_increase")
HISTORY_DIR = "history"



def new_log() -> dict:
    return {"file": f"{uuid.uuid4().hex}.jsonl", "bytes": 0, "records": 0, "events": 0}


def _truncate_log(directory: Path, log: dict) -> None:
    path = directory / HISTORY_DIR / log["file"]
    if path.exists():
        with open(path, "r+b") as fh:
            fh.truncate(log["bytes"])


def _append_log(directory: Path, log: dict, history: list, events: list) -> dict:
    """Append the records and events not yet in the log; return the new log metadata."""
    lines = [json.dumps({"record": asdict(r)}, default=float) for r in history[log["records"]:]]
    lines += [json.dumps({"event": e}, default=float) for e in events[log["events"]:]]
    data = "".join(line + "\n" for line in lines).encode()
    path = directory / HISTORY_DIR / log["file"]
    path.parent.mkdir(exist_ok=True)
    with open(path, "ab") as fh:  # appends go to the end, which is now log["bytes"]
        fh.truncate(log["bytes"])
        fh.write(data)
    return {**log, "bytes": log["bytes"] + len(data), "records": len(history),
            "events": len(events)}


def save_checkpoint(directory: Path, problem: TrainingProblem, s: State, meta: dict,
                     history: list, events: list, log: dict) -> dict:
    """Write the state atomically (a temporary file, then a rename) after appending the new
    history records and events to the log; return the new log metadata.

    On failure (or Ctrl-C) the directory is left as it was: the temporary file is removed
    and the log cut back to the length the previous checkpoint refers to.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.npz.tmp"
    try:
        new_log = _append_log(directory, log, history, events)
        with open(tmp, "wb") as fh:
            np.savez(fh, **s.arrays(), meta=np.frombuffer(json.dumps(
                {**meta, "log": new_log, "version": _CKPT_VERSION,
                 "fingerprint": problem.fingerprint()}, default=float).encode(),
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


def _read_log(path: Path, directory: Path, log: Any) -> tuple[list, list]:
    """The block records (BlockRecord) and solve events (dict) of the valid prefix of a
    checkpoint's log."""
    ok = (isinstance(log, dict) and isinstance(log.get("file"), str)
          and Path(log["file"]).name == log["file"] and log["file"].endswith(".jsonl")
          and all(isinstance(log.get(k), int) and log[k] >= 0
                  for k in ("bytes", "records", "events")))
    if not ok:
        raise CheckpointError(f"checkpoint {str(path)!r} has a malformed history-log entry "
                              f"{log!r}; delete the checkpoint directory to start over.")
    log_path = directory / HISTORY_DIR / log["file"]
    try:
        with open(log_path, "rb") as fh:
            data = fh.read(log["bytes"])
        if len(data) != log["bytes"]:
            raise ValueError(f"{len(data)} bytes, expected at least {log['bytes']}")
        history, events = [], []
        for line in data.splitlines():  # one parsed line at a time: a low peak of memory
            item = json.loads(line)
            if "record" in item:
                history.append(BlockRecord(**item["record"]))
            elif "event" in item:
                events.append(item["event"])
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"the history log {str(log_path)!r} of checkpoint {str(path)!r} "
                              f"is missing, corrupt or truncated ({type(exc).__name__}: {exc}); "
                              "delete the checkpoint directory to start over.") from None
    if (len(history), len(events)) != (log["records"], log["events"]):
        raise CheckpointError(f"the history log {str(log_path)!r} of checkpoint {str(path)!r} "
                              f"holds {len(history)} records and {len(events)} events, expected "
                              f"{log['records']} and {log['events']}; delete the checkpoint "
                              "directory to start over.")
    return history, events


def load_checkpoint(directory: Path, problem: TrainingProblem):
    path = directory / "checkpoint.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: np.array(data[k]) for k in ("A", "B", "b", "C", "D", "d", "X", "lam")}
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated "
                              f"({type(exc).__name__}: {exc}); delete it to start over.") from None
    if not isinstance(meta, dict) or meta.get("fingerprint") != problem.fingerprint():
        raise CheckpointError(f"checkpoint {str(path)!r} belongs to a different problem or data "
                              "set (fingerprint mismatch); use another directory or delete it.")
    # format 1 kept the history and the events in the metadata; format 2 in the log
    keys = _CKPT_KEYS + (("log",) if meta.get("version") == 2 else ("history", "events"))
    missing = [k for k in keys if k not in meta]
    if meta.get("version") not in (1, _CKPT_VERSION) or missing:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version "
                              f"{meta.get('version')!r} (this fenchel_idl reads 1 and "
                              f"{_CKPT_VERSION}) or lacks {missing}; delete it to start over.")
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
        meta["history"], meta["events"] = _read_log(path, directory, meta["log"])
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
