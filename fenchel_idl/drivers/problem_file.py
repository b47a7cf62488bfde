"""Declarative problem files (TOML): parse, validate, and map them to a training run.

A problem file declares the data source, the model size, the loss, the activation, kappa,
the lam schedule, the penalties by name with their weights, solver options, an optional
refinement stage and the seed. An optional [minibatch] table (batch_size, epochs, ...)
trains with :func:`fenchel_idl.solve_bcd_minibatch` instead of :func:`fenchel_idl.solve_bcd`
(``problems/mnist.toml``). An optional [certify] table with ``global = true`` asks
``fenchel-idl run`` for a certified global lower bound after training
(``problems/global_tiny.toml``). A [teacher] table makes the file a state-driven fit
instead (:func:`fenchel_idl.drivers.fit_teacher`: a scikit-learn MLP trained on the data,
then one certified convex program per hidden state; ``problems/teacher_digits.toml``); such
a file holds only ``name``, ``description``, ``seed``, [data] and [teacher]. See
``problems/cosine_regression.toml`` for a commented example. :func:`load_problem` parses and checks a file, :func:`load_data` loads its data,
:func:`build_problem` builds its :class:`~fenchel_idl.problem.TrainingProblem` and
:func:`bcd_options` gives the keywords of :func:`fenchel_idl.solve_bcd` it states
(``fenchel-idl run`` trains a file and writes its results).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.drivers.minibatch import solve_bcd_minibatch
from fenchel_idl.drivers.refine import RefineOptions
from fenchel_idl.drivers.schedule import Schedule
from fenchel_idl.drivers.state_fit import FIT_KEYS, TEACHER_KEYS, _check_teacher_table
from fenchel_idl.errors import DataNotFoundError, FenchelIDLError, InputTypeError, ValidationError
from fenchel_idl.problem import datasets
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import (
    annotation_kinds,
    array_bytes,
    check_choice,
    check_int,
    check_kind,
    check_memory,
    check_real,
    describe,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ProblemSpec", "bcd_options", "build_problem", "load_data", "load_problem"]

_SECTIONS = {"name", "description", "seed", "data", "model", "training", "schedule",
             "minibatch", "penalties", "solver", "refine", "demo", "certify", "teacher"}
_TABLES = ("data", "model", "training", "schedule", "minibatch", "solver", "refine", "demo",
           "certify", "teacher")
_MODEL_KEYS = {"n", "activation", "kappa", "bias"}
_TRAINING_KEYS = {"loss", "lam", "max_sweeps", "bounds", "standardize", "tol", "ab_prox"}
_SOLVER_KEYS = {"name", "on_failure", "gap_tol"}
#: The TOML type of each key (kinds of :func:`fenchel_idl.validation.check_kind`): a bool only
#: from a TOML boolean, an int only from a TOML integer, a number from an integer or a float.
_MODEL_KINDS = {"n": ("int",), "kappa": ("float",), "bias": ("bool",),
                "activation": ("str", "table")}
_TRAINING_KINDS = {"loss": ("str",), "lam": ("float", "array"), "max_sweeps": ("int",),
                   "bounds": ("table",), "standardize": ("bool",), "tol": ("float",),
                   "ab_prox": ("float",)}
_SOLVER_KINDS = {"name": ("str",), "on_failure": ("str",), "gap_tol": ("float",)}
#: [certify]: ``global = true`` bounds the trained model's gap to the global optimum with
#: :func:`fenchel_idl.global_bound` (tiny ReLU problems), given ``global_time_limit`` seconds
#: and stopping at the relative gap ``global_gap``; these are the defaults.
_CERTIFY_DEFAULTS = {"global": False, "global_time_limit": 600.0, "global_gap": 0.01}
_CERTIFY_KINDS = {"global": ("bool",), "global_time_limit": ("float",),
                  "global_gap": ("float",)}
_FILE_DATA_KINDS = {"path": ("str",), "test_path": ("str",), "delimiter": ("str",),
                    "header": ("bool",), "task": ("str",), "test_fraction": ("float",),
                    "target": ("str", "int", "array"), "inputs": ("str", "int", "array")}
#: [teacher]: the TOML type of each key (the keys of fit_teacher: the MLP's and the fit's).
_TEACHER_KINDS = {"hidden": ("int", "array"), "activation": ("str",), "max_iter": ("int",),
                  "alpha": ("float",), "learning_rate_init": ("float",), "batch_size": ("int",),
                  "kappa": ("float",), "l1_A": ("float",), "l1_B": ("float",),
                  "readout": ("str",), "samples": ("int",), "tol": ("float",),
                  "zero_tol": ("float",), "on_failure": ("str",), "solver": ("str",),
                  "method": ("str",), "fit_max_iter": ("int",)}
_BY_BCD = "a [teacher] problem is fitted by fit_states, one convex program per state, not by BCD"
#: The sections a [teacher] problem refuses, each with the reason: each would be ignored.
_NOT_WITH_TEACHER = {
    "model": ("the fitted model's states are the teacher's hidden units ([teacher] hidden) and "
              "its well-posedness ball is [teacher] kappa"),
    "training": _BY_BCD, "schedule": _BY_BCD, "minibatch": _BY_BCD,
    "refine": "a state fit has no gradient refinement stage",
    "penalties": "the fit's penalties are [teacher] l1_A and l1_B",
    "solver": "the fit's solver options are [teacher] solver, method, on_failure and tol",
    "certify": "the global bound is for BCD problems; a state fit certifies every row",
    "demo": "the demos train by BCD"}
#: Ranges of numeric keys, checked after their types: (low, high, low_open, high_open).
_RANGES = {"hidden": (1, None, False, False), "max_sweeps": (1, None, False, False), "n": (1, None, False, False),
           "kappa": (0.0, 1.0, True, True), "tol": (0.0, None, False, False),
           "gap_tol": (0.0, None, True, False), "test_fraction": (0.0, 1.0, True, True),
           "test_split": (1, None, False, False), "global_time_limit": (0.0, None, True, False),
           "global_gap": (0.0, 1.0, True, True), "ab_prox": (0.0, None, True, False)}
#: [data] of a file source (source = "csv", "npz" or "npy"): the options of
#: :func:`fenchel_idl.problem.datasets.load_file`, the file(s) and the test split
_FILE_DATA_KEYS = {"source", "path", "test_path", "test_fraction", "target", "inputs", "task",
                   "delimiter", "header"}
#: [minibatch]: train with :func:`fenchel_idl.solve_bcd_minibatch` and these of its options
_MINIBATCH_INTS = {"batch_size": 1, "epochs": 1, "readout_iter": 1}
#: real options and their lower limits (open for cd_prox, closed for lam_growth)
_MINIBATCH_REALS = {"cd_prox": (0.0, True), "lam_growth": (1.0, False)}
_MINIBATCH_BOOLS = ("shuffle", "restart", "line_search")
#: choice options and their values
_MINIBATCH_CHOICES = {"steps": ("incremental", "stochastic")}


def _check_minibatch(table: dict) -> None:
    """The values of [minibatch], checked as solve_bcd_minibatch checks them."""
    for key, low in _MINIBATCH_INTS.items():
        if key in table:
            check_int(key, table[key], low=low)
    for key, (low, low_open) in _MINIBATCH_REALS.items():
        if key in table:
            check_real(key, table[key], low, None, low_open=low_open)
    for key in _MINIBATCH_BOOLS:
        if key in table and not isinstance(table[key], bool):
            raise ValidationError(f"[minibatch] '{key}' must be true or false; got "
                                  f"{describe(table[key])}.")
    for key, allowed in _MINIBATCH_CHOICES.items():
        if key in table:
            check_choice(key, table[key], allowed)
    if table.get("line_search") and table.get("restart") is False:
        raise ValidationError("[minibatch] 'line_search' = true needs 'restart' = true: the "
                              "search starts from the epoch's start at its true equilibrium.")


def _schedule_keys() -> set[str]:
    """The keys of [schedule]: the fields of :class:`fenchel_idl.Schedule`."""
    return {f.name for f in dataclasses.fields(Schedule)}


def _refine_keys() -> set[str]:
    """The keys of [refine]: the fields of :class:`fenchel_idl.drivers.refine.RefineOptions`, and
    ``kappa`` (the radius of the well-posedness ball during refinement)."""
    return {f.name for f in dataclasses.fields(RefineOptions)} | {"kappa"}


@dataclass(frozen=True)
class ProblemSpec:
    """A parsed problem file."""

    name: str
    description: str
    seed: int
    data: dict
    model: dict
    training: dict
    schedule: dict
    penalties: list
    solver: dict
    refine: dict | None
    path: str
    #: the optional [demo] table, read (and validated) only by :mod:`fenchel_idl.apps.demos`
    demo: dict | None = None
    #: the optional [minibatch] table: train with :func:`fenchel_idl.solve_bcd_minibatch`
    minibatch: dict | None = None
    #: the [certify] table with its defaults filled in (:data:`_CERTIFY_DEFAULTS`)
    certify: dict = dataclasses.field(default_factory=lambda: dict(_CERTIFY_DEFAULTS))
    #: the [teacher] table of a state-driven fit (:func:`fenchel_idl.drivers.fit_teacher`),
    #: or None for a BCD problem
    teacher: dict | None = None


def load_problem(path: str | Path) -> ProblemSpec:
    """Parse and validate a problem file.

    Every section is checked here, before any data is loaded or any work is done: the
    sections [data], [model], [training], [schedule], [solver] and [refine] must be
    tables with known keys (those of [schedule] are the fields of
    :class:`fenchel_idl.Schedule`, those of [refine] the fields of
    :class:`fenchel_idl.drivers.refine.RefineOptions` and ``kappa``), ``seed`` a nonnegative
    integer and [model] ``n`` a positive integer. The values of [schedule] and [refine]
    are validated by building those records. An optional [demo] table must be a table; its
    keys are checked by :mod:`fenchel_idl.apps.demos`, which alone reads it. An optional
    [certify] table takes ``global`` (true or false), ``global_time_limit`` (seconds, > 0)
    and ``global_gap`` (in (0, 1)); ``ProblemSpec.certify`` holds them with their defaults
    (false, 600, 0.01).

    A file with a [teacher] table is a state-driven fit (:func:`fenchel_idl.drivers.fit_teacher`):
    it holds ``name``, ``description``, ``seed``, [data] and [teacher] only, and any other
    section ([model], [training], [schedule], [minibatch], [[penalties]], [solver],
    [refine], [certify], [demo]) is refused, with where its setting goes, rather than
    ignored. Every key of [teacher] is checked by its TOML type and its value;
    ``ProblemSpec.teacher`` holds the table and ``ProblemSpec.model`` is empty.

    Raises
    ------
    ValidationError
        Unknown sections or keys, a section that is not a table, a missing data source
        or model size, a value of the wrong type or out of range, bad TOML.
    """
    raw, path = _read_toml(path)
    where = f"problem file {str(path)!r}"
    unknown = set(raw) - _SECTIONS
    if unknown:
        raise ValidationError(f"{where} has unknown sections/keys "
                              f"{sorted(unknown)}; allowed: {sorted(_SECTIONS)}.")
    for key in _TABLES:
        if key in raw and not isinstance(raw[key], dict):
            raise ValidationError(f"{where}: [{key}] must be a table (a [{key}] section); got "
                                  f"{key} = {describe(raw[key])}.")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise ValidationError(f"{where}: '{key}' must be a string; got "
                                  f"{describe(raw[key])}.")
    if "teacher" in raw:
        return _teacher_spec(where, raw, path)
    penalties = raw.get("penalties", [])
    if not isinstance(penalties, list):
        raise ValidationError(f"{where}: 'penalties' must be an array of tables "
                              f"([[penalties]] sections); got {describe(penalties)}.")
    seed = _checked(where, lambda: check_int("seed", raw.get("seed", 0), low=0))
    data = dict(raw.get("data", {}))
    _check_data(where, data)
    model = dict(raw.get("model", {}))
    if "n" not in model:
        raise ValidationError(f"{where} needs [model] n (number of states).")
    _check_keys("model", model, _MODEL_KEYS)
    _check_kinds(where, "model", model, _MODEL_KINDS)
    check_memory(f"{where}: [model] n = {model['n']} states (two n x n matrices)",
                 array_bytes(*[(model["n"], model["n"])] * 2))
    training = dict(raw.get("training", {}))
    _check_keys("training", training, _TRAINING_KEYS)
    _check_kinds(where, "training", training, _TRAINING_KINDS)
    _check_kinds(where, "training.bounds", training.get("bounds", {}),
                 dict.fromkeys(("B", "C", "D"), ("float",)))
    solver = dict(raw.get("solver", {}))
    _check_keys("solver", solver, _SOLVER_KEYS)
    _check_kinds(where, "solver", solver, _SOLVER_KINDS)
    schedule = dict(raw.get("schedule", {}))
    _check_keys("schedule", schedule, _schedule_keys())
    _check_kinds(where, "schedule", schedule, _record_kinds(Schedule))
    _checked(where, lambda: Schedule(**schedule))
    minibatch = raw.get("minibatch")
    if minibatch is not None:
        minibatch = dict(minibatch)
        if "ab_prox" in minibatch:
            raise ValidationError(f"{where}: [minibatch] 'ab_prox' is a [training] key (both "
                                  "drivers read it there); move it to [training].")
        _check_keys("minibatch", minibatch,
                    set(_MINIBATCH_INTS) | set(_MINIBATCH_REALS) | set(_MINIBATCH_BOOLS)
                    | set(_MINIBATCH_CHOICES))
        _checked(where, lambda: _check_minibatch(minibatch))
        if schedule:
            raise ValidationError(f"{where}: [schedule] is for full-batch BCD; with "
                                  "[minibatch] leave it out.")
    refine = raw.get("refine")
    if refine is not None:
        refine = dict(refine)
        _check_keys("refine", refine, _refine_keys())
        _check_kinds(where, "refine", refine, {**_record_kinds(RefineOptions),
                                               "kappa": ("float",)})
        _checked(where, lambda: RefineOptions(**{k: v for k, v in refine.items()
                                                 if k != "kappa"}))
    certify = dict(raw.get("certify", {}))
    _check_keys("certify", certify, set(_CERTIFY_DEFAULTS))
    _check_kinds(where, "certify", certify, _CERTIFY_KINDS)
    return ProblemSpec(name=raw.get("name", path.stem), description=raw.get("description", ""),
                       seed=seed, data=data, model=model, training=training,
                       schedule=schedule, penalties=list(penalties), solver=solver,
                       refine=refine, path=str(path),
                       demo=dict(raw["demo"]) if "demo" in raw else None,
                       minibatch=minibatch, certify={**_CERTIFY_DEFAULTS, **certify})


def _teacher_spec(where: str, raw: dict, path: Path) -> ProblemSpec:
    """The spec of a state-driven fit: [data] and [teacher] checked, the sections that a
    state fit would ignore refused (:data:`_NOT_WITH_TEACHER`, all of them named)."""
    refused = [key for key in _NOT_WITH_TEACHER if key in raw]
    if refused:
        shown = {key: "[[penalties]]" if key == "penalties" else f"[{key}]" for key in refused}
        why = "; ".join(f"{shown[key]}: {_NOT_WITH_TEACHER[key]}" for key in refused)
        raise ValidationError(f"{where} has a [teacher] table (a state-driven fit) and "
                              f"{', '.join(shown.values())}, which a state fit does not use; "
                              f"remove {'it' if len(refused) == 1 else 'them'} ({why}).")
    seed = _checked(where, lambda: check_int("seed", raw.get("seed", 0), low=0))
    data = dict(raw.get("data", {}))
    _check_data(where, data)
    teacher = _check_teacher(where, dict(raw["teacher"]))
    return ProblemSpec(name=raw.get("name", path.stem), description=raw.get("description", ""),
                       seed=seed, data=data, model={}, training={}, schedule={}, penalties=[],
                       solver={}, refine=None, path=str(path), teacher=teacher)


def _check_teacher(where: str, table: dict) -> dict:
    """[teacher]: known keys (all unknown ones named), each value's TOML type
    (:data:`_TEACHER_KINDS`), then its value as :func:`fenchel_idl.drivers.fit_teacher`
    checks it; every error names the file, the table and the key."""
    allowed = set(TEACHER_KEYS) | set(FIT_KEYS)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValidationError(f"{where}: [teacher] keys must be among {sorted(allowed)}; got "
                              f"{unknown}.")
    _check_kinds(where, "teacher", table, _TEACHER_KINDS)
    try:
        _check_teacher_table(table)
    except FenchelIDLError as exc:
        raise ValidationError(f"{where}: [teacher] {exc}") from None
    return table


def _read_toml(path: Any) -> tuple[dict, Path]:
    """The parsed TOML of an existing UTF-8 file, or a ValidationError naming the file."""
    if not isinstance(path, (str, PathLike)):
        raise InputTypeError(f"'problem' must be a path to a TOML file; got {describe(path)}.")
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"'problem' must be an existing TOML file; {str(path)!r} does not "
                              "exist.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path
    except UnicodeDecodeError as exc:
        raise ValidationError(f"problem file {str(path)!r} is not UTF-8 text (TOML files are "
                              f"UTF-8): byte {exc.object[exc.start]:#04x} at position "
                              f"{exc.start} cannot be decoded.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"problem file {str(path)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValidationError(f"problem file {str(path)!r} cannot be read "
                              f"({type(exc).__name__}: {exc.strerror or exc}).") from None


def _record_kinds(record: type) -> dict[str, tuple[str, ...]]:
    """The kinds of the fields of a dataclass record whose annotations are simple types
    (bool, int, float, str, optionally with None); other fields are checked by the record."""
    kinds = {}
    for f in dataclasses.fields(record):
        found = annotation_kinds(f.type)
        if found is not None:
            kinds[f.name] = found[0]
    return kinds


def _check_kinds(where: str, section: str, table: dict,
                 kinds: dict[str, tuple[str, ...]]) -> None:
    """Check the TOML type of each key of ``table`` that ``kinds`` lists, then its range.

    Raises a ValidationError naming the file, the section, the key, the expected type and
    what came: ``bias = "false"`` is a string, not false; ``max_sweeps = 2.9`` is not an
    integer.
    """
    for key, value in table.items():
        if key in kinds:
            _check_value(where, f"[{section}] '{key}'", key, value, kinds[key])


def _check_value(where: str, name: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """One value of a problem file against its kinds (see :func:`_check_kinds`)."""
    if isinstance(value, (dict, list)):
        if ("table" if isinstance(value, dict) else "array") not in allowed:
            _bad_kind(where, name, allowed, value)
        number = [k for k in ("float", "int") if k in allowed]
        if isinstance(value, list) and number and "str" not in allowed:  # numbers
            for i, item in enumerate(value):
                _check_value(where, f"{name}[{i}]", key, item, (number[0],))
        return
    simple = tuple(k for k in allowed if k not in ("table", "array"))
    if not simple:
        _bad_kind(where, name, allowed, value)
    try:
        check_kind(name, value, simple)
        if key in _RANGES and not isinstance(value, str):
            check_real(name, value, *_RANGES[key])
    except InputTypeError:
        _bad_kind(where, name, allowed, value)
    except FenchelIDLError as exc:
        quoted = f"'{name}'"
        raise ValidationError(f"{where}: {str(exc).replace(quoted, name)}") from None


def _bad_kind(where: str, name: str, allowed: tuple[str, ...], value: Any) -> None:
    words = {"table": "a table", "array": "an array", "float": "a number", "int": "an integer",
             "str": "a string", "bool": "true or false"}
    raise ValidationError(f"{where}: {name} must be {' or '.join(words[k] for k in allowed)}; "
                          f"got {describe(value)}.")


def _sources() -> str:
    """The values of [data] source, for messages."""
    return (f"one of {sorted(datasets.DATASET_NAMES)} or "
            + ", ".join(repr(f) for f in datasets.FILE_FORMATS))


def _check_data(where: str, data: dict) -> None:
    """[data]: a known ``source``; for a file source, known keys, a ``path``, at most one
    test split, and a valid ``task``. The options of a built-in set are checked by its
    loader."""
    if "source" not in data:
        raise ValidationError(f"{where} needs [data] source = {_sources()}.")
    source = data["source"]
    key = source.strip().lower().replace("-", "_") if isinstance(source, str) else None
    if key in datasets.DATASET_NAMES:
        _check_kinds(where, "data", data, {"test_fraction": ("float",), "test_split": ("int",)})
        options = {k: v for k, v in data.items()
                   if k not in ("source", "test_fraction", "test_split")}
        _checked(f"{where}: [data]", lambda: datasets.check_load_options(key, options))
        return
    if key not in datasets.FILE_FORMATS:
        hint = ""
        if isinstance(source, str) and Path(source).suffix.lower().lstrip(".") in \
                datasets.FILE_FORMATS:
            hint = (f" To read the file, write source = {Path(source).suffix.lower()[1:]!r} "
                    f"and path = {source!r}.")
        raise ValidationError(f"{where}: [data] 'source' must be {_sources()}; got "
                              f"{describe(source)}.{hint}")
    data["source"] = key
    _check_keys("data", data, _FILE_DATA_KEYS)
    _check_kinds(where, "data", data, _FILE_DATA_KINDS)
    if "path" not in data:
        raise ValidationError(f"{where}: [data] source = {key!r} needs 'path', the {key} "
                              "file (relative to the problem file's directory, or absolute).")
    if "test_path" in data and "test_fraction" in data:
        raise ValidationError(f"{where}: [data] takes 'test_path' (a separate test file) or "
                              "'test_fraction' (a held-out share), not both.")
    if data.get("task", "regression") not in datasets.TASKS:
        raise ValidationError(f"{where}: [data] 'task' must be one of {list(datasets.TASKS)} "
                              f"(or left out, to infer it); got {describe(data['task'])}.")


def _check_keys(section: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValidationError(f"[{section}] keys must be among {sorted(allowed)}; got "
                              f"{unknown}.")


def _checked(where: str, check: Callable[[], Any]) -> Any:
    """Run a validation; a wrong type in a file is a bad value of the file: re-raise an
    :class:`InputTypeError` as a :class:`ValidationError` naming the file."""
    try:
        return check()
    except ValidationError:
        raise
    except FenchelIDLError as exc:
        raise ValidationError(f"{where}: {exc}") from None


def load_data(spec: ProblemSpec) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(train, test) data sets of the [data] table: ``test`` is the official test split
    (``test_split`` images of an MNIST-like set), the separate ``test_path`` file of a file
    source, a ``test_fraction`` held out with the file's seed, or None.

    Raises
    ------
    DataNotFoundError
        A data file named by ``path`` or ``test_path`` does not exist (the message names
        the key and the resolved path).
    ValidationError
        Data a loader refuses (for a file: an unknown target column, a value that is not a
        number, ...), named with the [data] key of the file.
    """
    opts = dict(spec.data)
    source = opts.pop("source")
    test_fraction = opts.pop("test_fraction", None)
    test_split = opts.pop("test_split", None)  # for MNIST-like sets: load the official test set
    test = None
    if source in datasets.FILE_FORMATS:
        ds, test = _load_files(spec, source, opts)
    else:
        ds = datasets.load(source, **opts)
    if test_split is not None:
        test = datasets.load(source, **{**opts, "split": "test", "n": test_split})
    elif test_fraction:
        ds, test = datasets.train_test_split(ds, float(test_fraction), seed=spec.seed)
    return ds, test


def _load_files(spec: ProblemSpec, fmt: str, opts: dict
                ) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The data file ``path`` of [data] and its ``test_path`` file (or None), the paths read
    relative to the problem file's directory. The test file is read with the training
    file's columns, task and classes."""
    base = Path(spec.path).resolve().parent
    test_path = opts.pop("test_path", None)
    train = _read_data_file(spec, "path", base, fmt, opts)
    if test_path is None:
        return train, None
    same = {**opts, "task": train.task, "classes": train.info.get("classes")}
    if fmt != "npz":  # the same columns; npz names its arrays by the same keys already
        same.update(inputs=train.info["inputs"], target=train.info["target"])
    test = _read_data_file(spec, "test_path", base, fmt, {**same, "path": test_path})
    if test.p != train.p:
        raise ValidationError(f"problem file {spec.path!r}: [data] the 'test_path' file has "
                              f"{test.p} inputs; the 'path' file has {train.p}.")
    return train, test


def _read_data_file(spec: ProblemSpec, key: str, base: Path, fmt: str, opts: dict
                    ) -> datasets.Dataset:
    """Load the file of [data] ``key`` (relative to ``base``); errors name the key."""
    opts = dict(opts)
    given = opts.pop("path")
    path = Path(given).expanduser()
    path = path if path.is_absolute() else base / path
    where = f"problem file {spec.path!r}: [data] '{key}'"
    if not path.is_file():
        raise DataNotFoundError(f"{where} = {given!r}: the {fmt} file {str(path)!r} does not "
                                "exist (a relative path is read from the problem file's "
                                "directory).")
    try:
        return datasets.load_file(path, file_format=fmt, **opts)
    except FenchelIDLError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def build_problem(spec: ProblemSpec, ds: datasets.Dataset) -> TrainingProblem:
    """The :class:`~fenchel_idl.problem.TrainingProblem` of a problem file on the data set
    ``ds``: the loss defaults to cross-entropy on labels for classification, squared
    otherwise."""
    tr = spec.training
    loss = tr.get("loss", "cross_entropy" if ds.task == "classification" else "squared")
    Y = ds.labels if loss == "cross_entropy" and ds.labels is not None else ds.Y
    return TrainingProblem(ds.U, Y, n=spec.model["n"], loss=loss,
                           activation=spec.model.get("activation", "relu"),
                           kappa=spec.model.get("kappa", 0.5), lam=tr.get("lam", 1.0),
                           bounds=tr.get("bounds"), penalties=spec.penalties,
                           bias=spec.model.get("bias", True),
                           standardize=tr.get("standardize", True))


def bcd_options(spec: ProblemSpec, refine: bool = True) -> dict[str, Any]:
    """The keyword arguments of :func:`fenchel_idl.solve_bcd` that a problem file states:
    ``max_sweeps``, ``tol``, ``schedule``, ``seed``, ``solver``, ``on_failure``, ``gap_tol``,
    ``ab_prox`` (when [training] states it; :func:`fenchel_idl.solve_bcd_minibatch` takes it
    too) and, with ``refine``, its [refine] stage (an empty [refine] section means the
    default options)."""
    opts: dict[str, Any] = {
        "max_sweeps": spec.training.get("max_sweeps", 40),
        "tol": spec.training.get("tol", 1e-6), "schedule": spec.schedule or None,
        "seed": spec.seed, "solver": spec.solver.get("name"),
        "on_failure": spec.solver.get("on_failure", "fallback"),
        "gap_tol": spec.solver.get("gap_tol", 1e-6)}
    if "ab_prox" in spec.training:
        opts["ab_prox"] = spec.training["ab_prox"]
    if refine:
        opts["refine"] = None if spec.refine is None else (spec.refine or True)
    return opts


def train_spec(spec: ProblemSpec, problem: TrainingProblem, *, refine: bool = True,
               max_sweeps: int | None = None, checkpoint: Any = None, resume: bool = False,
               **options: Any):
    """Train ``problem`` as the problem file ``spec`` states it: by
    :func:`fenchel_idl.solve_bcd`, or, when the file has a [minibatch] table, by
    :func:`fenchel_idl.solve_bcd_minibatch` with that table's options.

    Parameters
    ----------
    spec : ProblemSpec
    problem : TrainingProblem
        Built from ``spec`` (:func:`build_problem`).
    refine : bool
        Run the file's [refine] stage, if it has one.
    max_sweeps : int, optional
        Override the file's sweep count (its epochs, with [minibatch]).
    checkpoint, resume
        As in :func:`fenchel_idl.solve_bcd` (full-batch BCD only).
    **options
        Further keyword arguments of the driver (``seed``, ``callback``, ``progress``);
        they override the file's.

    Returns
    -------
    BCDResult

    Raises
    ------
    ValidationError
        ``checkpoint`` or ``resume`` for a [minibatch] file.
    """
    opts = bcd_options(spec, refine=refine)
    if spec.minibatch is None:
        if max_sweeps is not None:
            opts["max_sweeps"] = int(max_sweeps)
        return solve_bcd(problem, **{**opts, **options}, checkpoint=checkpoint, resume=resume)
    if checkpoint is not None or resume:
        raise ValidationError("checkpoint/resume is for full-batch BCD; the problem file "
                              f"{spec.path!r} trains on mini-batches ([minibatch]).")
    mb = dict(spec.minibatch)
    if max_sweeps is not None:
        mb["epochs"] = int(max_sweeps)
    for key in ("max_sweeps", "schedule"):  # full-batch only
        del opts[key]
    return solve_bcd_minibatch(problem, **mb, **{**opts, **options})
