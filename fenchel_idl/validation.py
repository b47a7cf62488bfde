"""Checks of user input that raise the errors of :mod:`fenchel_idl.errors`, naming the
parameter, what was expected and what came. Shared by the library and its applications."""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.errors import InputTypeError, ResourceError, ShapeError, ValidationError

#: Environment variable that overrides the memory limit of :func:`check_memory`: a number of
#: bytes, optionally with a suffix K, M, G or T (powers of 1024), e.g. ``"8G"``.
MEMORY_LIMIT_ENV = "FENCHEL_IDL_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} of type {type(value).__name__}"


def as_float_array(name: str, value: Any, ndim: int | tuple[int, ...] | None = None,
                   finite: bool = True) -> NDArray[np.float64]:
    """Return ``value`` as a float64 array, or raise a clear error.

    Parameters
    ----------
    name : str
        Parameter name used in messages.
    value : array_like
        The value to convert.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    finite : bool
        Whether NaN and inf are refused.
    """
    if value is None:
        raise InputTypeError(f"'{name}' must be a numeric array; got None.")
    if isinstance(value, (str, bytes)):
        raise InputTypeError(f"'{name}' must be a numeric array; got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged nested lists and the like
        raise InputTypeError(f"'{name}' must be a numeric array; got {describe(value)} "
                             f"({exc}).") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputTypeError(f"'{name}' must be a numeric array; got {describe(arr)}.")
    if np.iscomplexobj(arr):
        raise InputTypeError(f"'{name}' must be real; got a complex array of shape {arr.shape}.")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ShapeError(f"'{name}' must be a {want} array; got shape {arr.shape}.")
    if finite and arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValidationError(f"'{name}' must contain only finite values; got {bad} NaN or "
                              f"inf entries in an array of shape {arr.shape}.")
    return arr


def check_real(name: str, value: Any, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float inside the given interval, or raise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputTypeError(f"'{name}' must be a real number; got {describe(value)}.")
    v = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if not np.isfinite(v):
        raise ValidationError(f"'{name}' must be a finite number in {interval}; got {value!r}.")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValidationError(f"'{name}' must be in {interval}; got {value!r}.")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValidationError(f"'{name}' must be in {interval}; got {value!r}.")
    return v


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int inside ``[low, high]``, or raise."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputTypeError(f"'{name}' must be an integer; got {describe(value)}.")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        interval = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValidationError(f"'{name}' must be an integer in {interval}; got {v}.")
    return v


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool if it is one (``bool`` or ``numpy.bool_``), or raise: a
    string such as ``"false"`` or a number is refused, not read by its truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"'{name}' must be a bool (True or False); got {describe(value)}.")
    return bool(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise."""
    if not isinstance(value, str) or value not in choices:
        raise ValidationError(f"'{name}' must be one of {sorted(choices)}; got {value!r}.")
    return value


def as_samples(name: str, value: Any, rows: int,
               rows_name: str) -> tuple[NDArray[np.float64], bool]:
    """Return (2-D array with ``rows`` rows, was_1d) for samples-as-columns data."""
    arr = as_float_array(name, value, ndim=(1, 2))
    was_1d = arr.ndim == 1
    if was_1d:
        arr = arr[:, None]
    if arr.shape[0] != rows:
        raise ShapeError(f"'{name}' must have {rows} rows ({rows_name}; samples are columns); "
                         f"got shape {arr.shape if not was_1d else (arr.shape[0],)}.")
    return arr, was_1d


def _parse_bytes(text: str) -> int:
    """A byte count such as ``"123"``, ``"512M"`` or ``"8G"``; raises ValidationError."""
    t = text.strip().upper().removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = float(t[:-1] if unit else t) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValidationError(f"the environment variable {MEMORY_LIMIT_ENV} must be a positive "
                              f"number of bytes, optionally with K, M, G or T; got {text!r}.")
    return int(value)


def available_memory() -> int | None:
    """Bytes of memory available now: MemAvailable of /proc/meminfo, else the free physical
    pages of ``os.sysconf``; None when neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit() -> int | None:
    """The memory limit of :func:`check_memory` in bytes: the environment variable
    ``FENCHEL_IDL_MEMORY_LIMIT`` when set, else the available memory (None: unknown)."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    return available_memory() if text is None or not text.strip() else _parse_bytes(text)


def array_bytes(*shapes: tuple[int, ...], itemsize: int = 8) -> int:
    """Bytes of float arrays of the given shapes (exact integers: no overflow)."""
    return sum(math.prod(int(d) for d in shape) for shape in shapes) * itemsize


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in a readable unit, e.g. ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if unit == "B" and nbytes < 1024:
            return f"{int(nbytes)} B"
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_memory(what: str, nbytes: int, limit: int | None = None) -> int:
    """Refuse, before anything is allocated, a job whose memory estimate exceeds the limit.

    Parameters
    ----------
    what : str
        What needs the memory, with its sizes, as the message should name it (for example
        ``"TrainingProblem with n = 10000000 states and m = 200 samples"``).
    nbytes : int
        The estimate in bytes (see :func:`array_bytes`).
    limit : int, optional
        The limit in bytes; default :func:`memory_limit` (available memory, or the
        ``FENCHEL_IDL_MEMORY_LIMIT`` environment variable). No check when it is unknown.

    Returns
    -------
    int
        ``nbytes``.

    Raises
    ------
    ResourceError
        The estimate exceeds the limit; the message gives both.
    """
    given = limit is not None
    limit = memory_limit() if limit is None else limit
    if limit is not None and nbytes > limit:
        source = ("given by the caller" if given else
                  f"set by the environment variable {MEMORY_LIMIT_ENV}"
                  if os.environ.get(MEMORY_LIMIT_ENV, "").strip() else
                  f"the available memory; set the environment variable {MEMORY_LIMIT_ENV} to "
                  "change it")
        raise ResourceError(f"{what} needs about {format_bytes(nbytes)} of memory; the limit is "
                            f"{format_bytes(limit)} ({source}). Use smaller sizes.")
    return nbytes


#: The simple kinds of :func:`check_kind`, and how messages name them.
_KIND_NAMES = {"bool": "a boolean (true or false)", "int": "an integer",
               "float": "a number", "str": "a string", "path": "a path"}
_ANNOTATION_KINDS = {"bool": "bool", "int": "int", "float": "float", "str": "str",
                     "os.PathLike": "path", "PathLike": "path", "Path": "path"}


def annotation_kinds(annotation: Any) -> tuple[tuple[str, ...], bool] | None:
    """The kinds of a simple type annotation and whether it admits None, e.g.
    ``"int | None"`` -> ``(("int",), True)``; None for annotations made of other types
    (sequences, records), which their own checks validate."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                  str(annotation))
    parts = [part.strip() for part in text.split("|")]
    kinds = tuple(dict.fromkeys(_ANNOTATION_KINDS.get(part, "?") for part in parts
                                if part != "None"))
    if not kinds or "?" in kinds:
        return None
    return kinds, "None" in parts


def check_kind(name: str, value: Any, kinds: tuple[str, ...], nullable: bool = False) -> Any:
    """Return ``value`` if it is of one of the ``kinds`` ("bool", "int", "float", "str",
    "path"), or raise; nothing is converted: a bool is only a bool (never the string
    "false"), an int only an integer (never 2.9), a float any finite real number.

    Raises
    ------
    InputTypeError
        A value of another type.
    ValidationError
        A NaN or infinite number where a number is expected.
    """
    if value is None and nullable:
        return value
    is_bool = isinstance(value, (bool, np.bool_))
    ok = (("bool" in kinds and is_bool)
          or ("int" in kinds and isinstance(value, Integral) and not is_bool)
          or ("float" in kinds and isinstance(value, Real) and not is_bool)
          or ("str" in kinds and isinstance(value, str))
          or ("path" in kinds and isinstance(value, (str, os.PathLike))))
    if not ok:
        want = " or ".join(_KIND_NAMES[k] for k in kinds) + (" or None" if nullable else "")
        raise InputTypeError(f"'{name}' must be {want}; got {describe(value)}.")
    if "float" in kinds and not is_bool and isinstance(value, Real) \
            and not math.isfinite(float(value)):
        raise ValidationError(f"'{name}' must be a finite number; got {value!r}.")
    return value


def read_npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length in bytes) of the .npy stream that starts at ``fh``,
    read without reading (or allocating) the data; ValueError for a stream that is not
    .npy. Lets a reader check the claimed size against the stored bytes and the memory
    limit before :func:`numpy.load` allocates it."""
    start = fh.tell()
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(d) for d in shape), dtype, fh.tell() - start
