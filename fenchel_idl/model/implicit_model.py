"""The implicit model: ``y = C x + D u + bias_y`` where ``x = phi(A x + B u + bias_x)``.

Samples are columns, as in the paper: U has shape (p, m), X (n, m) and Y (q, m).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import (
    FenchelIDLError,
    InputTypeError,
    ModelFileError,
    NotWellPosedWarning,
    ShapeError,
    ValidationError,
)
from fenchel_idl.model.activations import Activation, activation_for, get_activation
from fenchel_idl.model.equilibrium import EquilibriumInfo, Structure, solve_equilibrium, structure
from fenchel_idl.model.wellposedness import _uncertified_iteration
from fenchel_idl.validation import (
    as_float_array,
    as_samples,
    check_memory,
    describe,
    read_npy_header,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ImplicitModel"]

Array = NDArray[np.float64]
FORMAT_NAME = "fenchel_idl.ImplicitModel"
FORMAT_VERSION = 1
_ARRAYS = ("A", "B", "C", "D", "bias_x", "bias_y")
_FIELDS = ("A", "B", "C", "D", "activation", "bias_x", "bias_y")
#: The keyword options of :meth:`ImplicitModel.equilibrium` that ``predict`` forwards.
_EQUILIBRIUM_OPTIONS = ("tol", "max_iter", "method", "X0", "on_nonconvergence")


def frozen(a: ArrayLike) -> Array:
    """A read-only float64 copy of ``a`` (the arrays of the immutable model records)."""
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def check_model_shapes(n: int, anchor: str, B: Array, C: Array, D: Array,
                       bias_x: ArrayLike | None = None,
                       bias_y: ArrayLike | None = None) -> tuple[Array, Array]:
    """Check that B, C, D and the biases fit a model with n states; return the biases.

    Parameters
    ----------
    n : int
        Number of states, fixed by the state matrix that ``anchor`` names.
    anchor : str
        That matrix and its shape as the messages name it, for example ``"A (3, 3)"``.
    B, C, D : ndarray
        The input, output and feedthrough matrices, already 2-D float arrays.
    bias_x, bias_y : array_like, optional
        The biases (zero when None).

    Returns
    -------
    bias_x : ndarray of shape (n,)
    bias_y : ndarray of shape (q,)

    Raises
    ------
    ShapeError
        A shape that does not fit: B not (n, p), C not (q, n), D not (q, p), a bias not of
        the number of states or outputs.
    ValidationError, InputTypeError
        A bias with NaN or inf or non-numeric entries.
    """
    if B.shape[0] != n:
        raise ShapeError(f"'B' must have n = {n} rows to match {anchor}; got shape "
                         f"{B.shape}.")
    p = B.shape[1]
    if C.shape[1] != n:
        raise ShapeError(f"'C' must have n = {n} columns to match {anchor}; got shape "
                         f"{C.shape}.")
    q = C.shape[0]
    if D.shape != (q, p):
        raise ShapeError(f"'D' must have shape (q, p) = ({q}, {p}) to match C {C.shape} and "
                         f"B {B.shape}; got shape {D.shape}.")
    bx = np.zeros(n) if bias_x is None else as_float_array("bias_x", bias_x, 1)
    by = np.zeros(q) if bias_y is None else as_float_array("bias_y", bias_y, 1)
    if bx.shape != (n,):
        raise ShapeError(f"'bias_x' must have shape ({n},); got {bx.shape}.")
    if by.shape != (q,):
        raise ShapeError(f"'bias_y' must have shape ({q},); got {by.shape}.")
    return bx, by


class ModelSizes:
    """The sizes of a model record with an input matrix B of shape (n, p) and an output
    matrix C of shape (q, n) (the implicit model and its low-rank form)."""

    B: Array
    C: Array

    @property
    def n(self) -> int:
        """Number of states."""
        return self.B.shape[0]

    @property
    def p(self) -> int:
        """Number of inputs."""
        return self.B.shape[1]

    @property
    def q(self) -> int:
        """Number of outputs."""
        return self.C.shape[0]


@dataclass(frozen=True, eq=False)
class ImplicitModel(ModelSizes):
    """An immutable, validated implicit model (equation (1.1)).

    Parameters
    ----------
    A : array_like of shape (n, n)
    B : array_like of shape (n, p)
    C : array_like of shape (q, n)
    D : array_like of shape (q, p)
    activation : str, dict or Activation, default "relu"
        The map phi; a :class:`fenchel_idl.Blockwise` map for BLIP structures.
    bias_x : array_like of shape (n,), optional
        Bias inside the equilibrium equation (the paper's (u, 1) trick made explicit).
    bias_y : array_like of shape (q,), optional
        Bias of the output.

    Raises
    ------
    ShapeError
        Shapes that do not fit together, or A not square.
    ValidationError
        NaN or inf entries, or an unknown activation.
    InputTypeError
        Non-numeric arrays.

    Examples
    --------
    >>> import numpy as np
    >>> m = ImplicitModel(A=[[0.5, 0.0], [2.0, -0.5]], B=[[1.0], [1.0]], C=[[1.0, 1.0]],
    ...                   D=[[0.0]])
    >>> x, info = m.equilibrium(np.array([1.0]))
    >>> np.round(x, 6).tolist(), info.method
    ([2.0, 3.333333], 'exact')
    """

    A: Array
    B: Array
    C: Array
    D: Array
    activation: Activation = field(default="relu")  # type: ignore[assignment]
    bias_x: Array | None = None
    bias_y: Array | None = None

    def __post_init__(self):
        A = as_float_array("A", self.A, ndim=2)
        B = as_float_array("B", self.B, ndim=2)
        C = as_float_array("C", self.C, ndim=2)
        D = as_float_array("D", self.D, ndim=2)
        n = A.shape[0]
        if A.shape != (n, n) or n == 0:
            raise ShapeError(f"'A' must be a non-empty square matrix (n, n); got shape {A.shape}.")
        bx, by = check_model_shapes(n, f"A {A.shape}", B, C, D, self.bias_x, self.bias_y)
        phi = activation_for(get_activation(self.activation), n)
        for name, val in zip(_ARRAYS, (A, B, C, D, bx, by)):
            object.__setattr__(self, name, frozen(val))
        object.__setattr__(self, "activation", phi)

    @property
    def has_bias(self) -> bool:
        return bool(np.any(self.bias_x) or np.any(self.bias_y))

    @cached_property
    def structure(self) -> Structure:
        """Topological levels of the state dependency graph (used by :meth:`equilibrium`)."""
        return structure(self.A, self.activation)

    @cached_property
    def _uniqueness_doubt(self) -> tuple[str, bool] | None:
        """Why an equilibrium found by iteration may not be unique, or None (computed once
        per model, on the first converged iterative solve)."""
        return _uncertified_iteration(self.A, self.activation, self.structure)

    def replace(self, **changes: Any) -> ImplicitModel:
        """Return a copy with some fields replaced (validated again).

        Raises
        ------
        ValidationError
            A name that is not a field of the model (A, B, C, D, activation, bias_x,
            bias_y), or a replaced value that does not fit.
        """
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise ValidationError(f"ImplicitModel.replace got unknown field(s) "
                                  f"{', '.join(repr(k) for k in unknown)}; the fields are "
                                  f"{list(_FIELDS)}.")
        fields = {k: getattr(self, k) for k in _FIELDS}
        fields.update(changes)
        return ImplicitModel(**fields)

    # -- prediction -------------------------------------------------------------------------
    def _inputs(self, U: ArrayLike) -> tuple[Array, bool]:
        return as_samples("U", U, self.p, f"p = {self.p} inputs")

    def state_input(self, U: Array) -> Array:
        """B U + bias_x, shape (n, m), for 2-D U already validated."""
        return self.B @ U + self.bias_x[:, None]

    def equilibrium(self, U: ArrayLike, *, tol: float = 1e-9, max_iter: int = 2000,
                    method: str = "auto", X0: ArrayLike | None = None,
                    on_nonconvergence: str = "warn") -> tuple[Array, EquilibriumInfo]:
        """Solve x = phi(A x + B u) for every column of U.

        Parameters
        ----------
        U : array_like of shape (p, m) or (p,)
        tol, max_iter, method, on_nonconvergence
            See :func:`fenchel_idl.model.equilibrium.solve_equilibrium`. Triangular structure is
            detected and solved exactly by back substitution (Remark 2.5).
        X0 : array_like of shape (n, m), optional
            Warm start.

        Returns
        -------
        X : ndarray of shape (n, m) (or (n,) for 1-D U)
        info : EquilibriumInfo
            Residual, iteration count, method, and whether it converged.

        Raises
        ------
        ShapeError, ValidationError
            Bad U or X0.
        EquilibriumError
            With ``on_nonconvergence="raise"`` when the iteration fails to converge.

        Warns
        -----
        ConvergenceWarning
            With ``on_nonconvergence="warn"`` when no equilibrium was found.
        NotWellPosedWarning
            Unless ``on_nonconvergence="ignore"``: the iteration converged but nothing
            certifies that the equilibrium is unique (:func:`fenchel_idl.well_posedness`
            finds no sufficient condition), so the result may depend on X0. The message
            gives lambda_PF(N(A, gamma)) and ||N(A, gamma)||_inf. The check is computed
            once per model, and costs O(n^2) for a model with ||N(A, gamma)||_inf < 1.
        """
        U2, was_1d = self._inputs(U)
        X0a = None
        if X0 is not None:
            X0a, _ = as_samples("X0", X0, self.n, f"n = {self.n} states")
            if X0a.shape != (self.n, U2.shape[1]):
                raise ShapeError(f"'X0' must have shape ({self.n}, {U2.shape[1]}); got "
                                 f"{X0a.shape}.")
        X, info = solve_equilibrium(self.A, self.state_input(U2), self.activation,
                                    self.structure if method != "picard" else None, X0a, tol,
                                    max_iter, method, on_nonconvergence)
        if info.converged and info.method != "exact" and on_nonconvergence != "ignore":
            self._warn_if_not_unique(method == "picard", X0 is not None)
        return (X[:, 0] if was_1d else X), info

    def _warn_if_not_unique(self, forced_picard: bool, has_x0: bool) -> None:
        """Warn that a converged iteration may have found one of several equilibria, when
        no sufficient condition certifies the model (scalar self loops alone are named by
        the structured solver, so they are named here only for ``method="picard"``)."""
        doubt = self._uniqueness_doubt
        if doubt is None or not (doubt[1] or forced_picard):
            return
        start = "the given X0" if has_x0 else "X0 = 0"
        warnings.warn(f"the model has no well-posedness certificate: {doubt[0]}. The iteration "
                      "converged, but x = phi(A x + B u) may have other solutions: the "
                      f"returned equilibrium is the limit from {start} and may not be the "
                      "unique one (see fenchel_idl.well_posedness(model)).",
                      NotWellPosedWarning, stacklevel=3)

    def output(self, X: Array, U: Array) -> Array:
        """C X + D U + bias_y for validated 2-D arrays."""
        return self.C @ X + self.D @ U + self.bias_y[:, None]

    def predict(self, U: ArrayLike, **equilibrium_options: Any) -> Array:
        """Return C x + D u at the equilibrium, shape (q, m) (or (q,) for 1-D U).

        Parameters
        ----------
        U : array_like of shape (p, m) or (p,)
        **equilibrium_options
            ``tol``, ``max_iter``, ``method``, ``X0`` or ``on_nonconvergence``, passed to
            :meth:`equilibrium`.

        Raises
        ------
        ValidationError
            An option that :meth:`equilibrium` does not take, or a bad value.
        """
        unknown = sorted(set(equilibrium_options) - set(_EQUILIBRIUM_OPTIONS))
        if unknown:
            raise ValidationError(f"unknown option(s) {unknown} for ImplicitModel.predict; "
                                  f"allowed options are {list(_EQUILIBRIUM_OPTIONS)}.")
        U2, was_1d = self._inputs(U)
        X, _ = self.equilibrium(U2, **equilibrium_options)
        Y = self.output(X, U2)
        return Y[:, 0] if was_1d else Y

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Metadata describing the model (no arrays)."""
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "activation": self.activation.to_dict(),
                "shapes": {"n": self.n, "p": self.p, "q": self.q}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (npz of arrays plus JSON metadata; no pickle).

        The metadata carries a format name, a version and a SHA-256 checksum of the arrays
        and of the rest of the metadata (activation, format, version, shapes), so that
        :meth:`load` refuses truncated or tampered files. The file is written to a
        temporary name and renamed, so a crash never leaves a half-written model.

        Raises
        ------
        ModelFileError
            The directory of ``path`` does not exist, or ``path`` cannot be written.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise ModelFileError(f"'path' must be in an existing directory; the directory "
                                 f"{str(path.parent)!r} of {str(path)!r} does not exist.")
        if path.is_dir():
            raise ModelFileError(f"'path' must be a file name; {str(path)!r} is a directory.")
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in _ARRAYS}
        meta = self.to_dict()
        meta["sha256"] = _checksum(arrays, meta)
        buf = io.BytesIO()
        np.savez(buf, **arrays, metadata=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelFileError(f"could not write the model file {str(path)!r} "
                                 f"({type(exc).__name__}: {exc.strerror or exc}).") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImplicitModel:
        """Read a model written by :meth:`save`. Never executes code (no pickle).

        The array headers are read and checked (real numeric dtypes, at most 2-D, sizes
        that the file really holds and that fit in memory) before any array is read.

        Raises
        ------
        InputTypeError
            ``path`` is not a str or path-like.
        ModelFileError
            Missing, truncated, tampered or foreign file (for example a .npy file under an
            .npz name, a string array, a corrupt zip directory, metadata nested too deeply),
            or an unknown format version.
        ResourceError
            Arrays whose headers claim more memory than the limit.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InputTypeError(f"'path' must be a str or path-like naming a model file; got "
                                 f"{describe(path)}.")
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"'path' must be an existing model file; {str(path)!r} does "
                                 "not exist.")
        meta, arrays = _read_model_file(path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{str(path)!r} was not written by fenchel_idl (format "
                                 f"{meta.get('format') if isinstance(meta, dict) else meta!r}).")
        if meta.get("version") != FORMAT_VERSION:
            raise ModelFileError(f"{str(path)!r} has model format version {meta.get('version')!r};"
                                 f" this fenchel_idl reads version {FORMAT_VERSION}.")
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise ModelFileError(f"{str(path)!r} lacks the arrays {missing}.")
        try:
            get_activation(meta.get("activation"))
        except (FenchelIDLError, TypeError, ValueError, RecursionError) as exc:
            raise ModelFileError(f"{str(path)!r} has an invalid activation in its metadata: "
                                 f"{exc}") from None
        if meta.get("sha256") != _checksum(arrays, meta):
            raise ModelFileError(f"{str(path)!r} failed its checksum: the arrays or the "
                                 "metadata were changed after the file was written.")
        try:
            return cls(**arrays, activation=meta["activation"])
        except FenchelIDLError as exc:
            raise ModelFileError(f"{str(path)!r} does not hold a valid model: {exc}") from None

    def __repr__(self) -> str:
        return (f"ImplicitModel(n={self.n}, p={self.p}, q={self.q}, "
                f"activation={self.activation!r})")


def _checksum(arrays: dict[str, Array], meta: dict) -> str:
    """SHA-256 of the arrays and of the metadata (all of it but the checksum itself).

    The metadata enters as canonical JSON (sorted keys, no spaces), so the activation,
    format, version and shapes cannot be edited without failing the check.
    """
    h = hashlib.sha256()
    for k in _ARRAYS:
        a = np.ascontiguousarray(arrays[k], dtype=np.float64)
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(b"metadata")
    h.update(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


#: What a damaged zip or .npy member can raise while it is read (never pickle: no code runs).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile,
                zlib.error, NotImplementedError, struct.error, OverflowError, RuntimeError,
                RecursionError)
#: The metadata of a model is a few hundred bytes; more is not a model file.
_MAX_METADATA = 1 << 20


def _read_model_file(path: Path) -> tuple[Any, dict[str, Array]]:
    """(metadata, arrays) of a model file, each array header checked before it is read.

    Raises ModelFileError for anything that is not a sound model npz, and ResourceError
    when the headers claim more memory than the limit.
    """
    where = repr(str(path))
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            start = fh.read(6)
        what = ("a .npy array, not an npz archive (saved with np.save under an .npz name?)"
                if start == b"\x93NUMPY" else
                "a zip archive without its directory (corrupt or truncated)"
                if start[:4] == b"PK\x03\x04" else "not an npz (zip) archive")
        raise ModelFileError(f"{where} is not a readable fenchel_idl model file: {what}.")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            if "metadata.npy" not in infos:
                raise ModelFileError(f"{where} is not a fenchel_idl model file (no metadata "
                                     "entry).")
            wanted = ["metadata", *(k for k in _ARRAYS if f"{k}.npy" in infos)]
            headers = {k: _array_header(zf, infos[f"{k}.npy"], where) for k in wanted}
            check_memory(f"the model file {where} (arrays of shapes "
                         f"{[h[0] for h in headers.values()]})",
                         sum(math.prod(shape) * dt.itemsize for shape, dt in headers.values()))
            loaded = {k: _read_member(zf, infos[f"{k}.npy"]) for k in wanted}
            meta_bytes = loaded.pop("metadata")
            if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1 \
                    or meta_bytes.size > _MAX_METADATA:
                raise ModelFileError(f"{where} has a metadata entry that is not a short byte "
                                     f"string (dtype {meta_bytes.dtype}, shape "
                                     f"{meta_bytes.shape}).")
            meta = json.loads(meta_bytes.tobytes().decode())
            json.dumps(meta)  # metadata nested too deeply to be written back is refused here
    except FenchelIDLError:
        raise
    except _READ_ERRORS as exc:
        raise ModelFileError(f"{where} is not a readable fenchel_idl model file (corrupt or "
                             f"truncated: {type(exc).__name__}: {str(exc)[:200]}).") from None
    return meta, {k: np.asarray(v, dtype=np.float64) for k, v in loaded.items()}


def _array_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                  where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an .npy member, refused unless a real numeric array of at most two
    dimensions whose data fits in the member's stored size."""
    with zf.open(info) as fh:
        shape, dtype, header_len = read_npy_header(fh)
    name = info.filename.removesuffix(".npy")
    if dtype.hasobject or dtype.kind not in "biuf" or len(shape) > 2:
        raise ModelFileError(f"{where} is corrupt or not a model file: it holds an array "
                             f"{name!r} of dtype {dtype} and shape {shape}; a model file holds "
                             "real numeric arrays of at most two dimensions (never objects "
                             "or strings).")
    if math.prod(shape) * dtype.itemsize + header_len > info.file_size:
        raise ModelFileError(f"{where}: the header of the array {name!r} claims shape {shape} "
                             f"({math.prod(shape) * dtype.itemsize} bytes), but the file holds "
                             f"{info.file_size} bytes for it (corrupt or truncated).")
    return shape, dtype


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """The array of an .npy member (pickles refused)."""
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)
