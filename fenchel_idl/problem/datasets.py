"""The data sets of the paper's experiments (section 7), as typed records.

Every loader returns a :class:`Dataset` whose arrays follow the package convention,
**samples are columns**: ``U`` has shape (p, m) and ``Y`` has shape (q, m). ``Y`` holds the
regression targets, or the one-hot class indicators for classification (then ``labels``
holds the class indices). :attr:`Dataset.X_rows` and :attr:`Dataset.y_rows` give the
scikit-learn layout (samples are rows).

- :func:`cosine` (section 7.1): y = 5 cos(pi u) exp(-|u|/2) + uniform noise, u in [-5, 5];
  :func:`cosine_grid` is the noiseless 1000-point grid of Figure 4.
- :func:`synthetic_from_network` and :func:`synthetic_from_implicit` (section 7.2.1):
  5 inputs, 2 classes, labelled by a random ReLU network or a random well-posed implicit
  model.
- :func:`digits`: scikit-learn's 8x8 digits, pixels in [0, 1].
- :func:`load_mnist` (section 7.2.2): MNIST, 28x28 digits, pixels in [0, 1].
- :func:`load_fashion_mnist`: Fashion-MNIST, the offline stand-in for GTSRB and CIFAR-10.

Every random loader is deterministic given ``seed`` (it uses its own
``numpy.random.default_rng``, never the global random state). :func:`load` dispatches by
name, for declarative problem files.

The image files are read from the first of these directories that holds them (see
:func:`data_directories`): the environment variable ``FENCHEL_IDL_DATA``, the
``problems/data`` folder of the source checkout, and ``./problems/data``.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.errors import (
    DataNotFoundError,
    FenchelIDLError,
    InputTypeError,
    ShapeError,
    ValidationError,
)
from fenchel_idl.model.feedforward import from_layers
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.wellposedness import check_well_posed
from fenchel_idl.validation import (
    annotation_kinds,
    array_bytes,
    as_float_array,
    check_choice,
    check_int,
    check_kind,
    check_memory,
    check_real,
    read_npy_header,
)

__all__ = [
    "DATASET_NAMES",
    "DATA_ENV",
    "FILE_FORMATS",
    "MAX_INFERRED_CLASSES",
    "TASKS",
    "Dataset",
    "check_load_options",
    "cosine",
    "cosine_function",
    "cosine_grid",
    "data_directories",
    "digits",
    "from_arrays",
    "load",
    "load_fashion_mnist",
    "load_file",
    "load_mnist",
    "one_hot",
    "read_idx",
    "synthetic_from_implicit",
    "synthetic_from_network",
    "train_test_split",
]

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

DATA_ENV = "FENCHEL_IDL_DATA"
"""Name of the environment variable that points to a data directory."""

_MNIST_CLASSES = tuple(str(d) for d in range(10))
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot")
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# -- the record ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set, samples as columns.

    Parameters
    ----------
    U : array_like of shape (p, m)
        Inputs, one sample per column.
    Y : array_like of shape (q, m)
        Targets: regression values, or one-hot class indicators for classification.
    name : str
        Short name, for example ``"mnist-train"``.
    labels : array_like of int, shape (m,), optional
        Class indices in ``[0, q)``; ``None`` for regression.
    description : str
        One or two sentences on the origin of the data.
    class_names : tuple of str, optional
        Names of the q classes.
    image_shape : tuple of int, optional
        Shape of one image when the inputs are flattened images (prod equals p).
    f : callable, optional
        The noiseless function behind a synthetic regression set (``f(U)`` has the shape of
        ``Y``); :func:`cosine` sets it to :func:`cosine_function`.
    generator : ImplicitModel, optional
        The model whose outputs labelled a synthetic classification set:
        ``labels == argmax(generator.predict(U), axis=0)`` before any label noise.
    info : mapping
        Provenance (seed, noise level, source files, ...), stored read-only.

    Raises
    ------
    ShapeError
        U or Y not 2-D, a different number of columns, or labels of the wrong length.
    ValidationError
        Non-finite entries, labels outside ``[0, q)``, or an image shape that does not
        match p.

    Notes
    -----
    The arrays are stored read-only; arrays that are already read-only float64 are kept
    without a copy, so large image sets are not duplicated.
    """

    U: Array
    Y: Array
    name: str = "dataset"
    labels: IntArray | None = None
    description: str = ""
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None
    f: Callable[[ArrayLike], Array] | None = None
    generator: ImplicitModel | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        U = _stored("U", self.U)
        Y = _stored("Y", self.Y)
        if U.shape[1] != Y.shape[1]:
            raise ShapeError(f"'U' and 'Y' must have the same number of columns (samples); got "
                             f"U {U.shape} and Y {Y.shape}.")
        if not isinstance(self.name, str):
            raise InputTypeError(f"'name' must be a str; got {type(self.name).__name__}.")
        labels = None
        if self.labels is not None:
            raw = np.asarray(self.labels)
            if not np.issubdtype(raw.dtype, np.integer):
                raise InputTypeError(f"'labels' must be an integer array; got dtype {raw.dtype}.")
            if raw.shape != (U.shape[1],):
                raise ShapeError(f"'labels' must have shape ({U.shape[1]},); got {raw.shape}.")
            if raw.size and (raw.min() < 0 or raw.max() >= Y.shape[0]):
                raise ValidationError(f"'labels' must lie in [0, {Y.shape[0]}) (one row of Y per "
                                      f"class); got values in [{raw.min()}, {raw.max()}].")
            labels = raw if (raw.dtype == np.int64 and not raw.flags.writeable) else \
                _readonly(raw.astype(np.int64, copy=True))
        if self.class_names is not None:
            names = tuple(str(c) for c in self.class_names)
            if len(names) != Y.shape[0]:
                raise ShapeError(f"'class_names' must have q = {Y.shape[0]} entries; got "
                                 f"{len(names)}.")
            object.__setattr__(self, "class_names", names)
        if self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            if int(np.prod(shape)) != U.shape[0]:
                raise ValidationError(f"'image_shape' {shape} must have p = {U.shape[0]} pixels; "
                                      f"got {int(np.prod(shape))}.")
            object.__setattr__(self, "image_shape", shape)
        if self.generator is not None and not isinstance(self.generator, ImplicitModel):
            raise InputTypeError("'generator' must be an ImplicitModel or None; got "
                                 f"{type(self.generator).__name__}.")
        object.__setattr__(self, "U", U)
        object.__setattr__(self, "Y", Y)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))

    # -- sizes ------------------------------------------------------------------------------
    @property
    def p(self) -> int:
        """Number of inputs (rows of U)."""
        return self.U.shape[0]

    @property
    def q(self) -> int:
        """Number of outputs (rows of Y); the number of classes for classification."""
        return self.Y.shape[0]

    @property
    def m(self) -> int:
        """Number of samples (columns)."""
        return self.U.shape[1]

    @property
    def task(self) -> str:
        """``"classification"`` when the set has labels, else ``"regression"``."""
        return "regression" if self.labels is None else "classification"

    # -- scikit-learn layout ----------------------------------------------------------------
    @property
    def X_rows(self) -> Array:
        """Inputs in scikit-learn layout: ndarray of shape (m, p) (a view of U.T)."""
        return self.U.T

    @property
    def Y_rows(self) -> Array:
        """Targets in row layout: ndarray of shape (m, q) (a view of Y.T)."""
        return self.Y.T

    @property
    def y_rows(self) -> NDArray[Any]:
        """Targets as scikit-learn expects them.

        The labels, shape (m,), for classification; the targets of shape (m,) for a
        single-output regression and (m, q) otherwise.
        """
        if self.labels is not None:
            return self.labels
        return self.Y[0] if self.q == 1 else self.Y.T

    @property
    def images(self) -> NDArray[np.float64]:
        """The inputs as images, ndarray of shape (m, *image_shape).

        Raises
        ------
        ValidationError
            The set has no image shape.
        """
        if self.image_shape is None:
            raise ValidationError(f"data set {self.name!r} holds no images (image_shape is None).")
        return self.U.T.reshape((self.m, *self.image_shape))

    def subset(self, indices: ArrayLike, name: str | None = None) -> Dataset:
        """Return the samples (columns) ``indices`` as a new Dataset (all else kept).

        Raises
        ------
        ValidationError
            Indices that are not integers in ``[0, m)``.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise ValidationError(f"'indices' must be a 1-D integer array; got shape {idx.shape} "
                                  f"and dtype {idx.dtype}.")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.m):
            raise ValidationError(f"'indices' must lie in [0, {self.m}); got values in "
                                  f"[{idx.min()}, {idx.max()}].")
        return Dataset(U=_readonly(self.U[:, idx]), Y=_readonly(self.Y[:, idx]),
                       name=self.name if name is None else name,
                       labels=None if self.labels is None else _readonly(self.labels[idx]),
                       description=self.description, class_names=self.class_names,
                       image_shape=self.image_shape, f=self.f, generator=self.generator,
                       info=self.info)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, p={self.p}, q={self.q}, m={self.m}, "
                f"task={self.task!r})")


def _stored(name: str, value: Any) -> Array:
    """A read-only float64 2-D array; no copy if it is already one."""
    if isinstance(value, np.ndarray) and value.dtype == np.float64 and value.ndim == 2 \
            and not value.flags.writeable:
        as_float_array(name, value, ndim=2)  # finiteness check
        return value
    arr = np.array(as_float_array(name, value, ndim=2), dtype=np.float64, copy=True)
    return _readonly(arr)


# -- small helpers ---------------------------------------------------------------------------

def one_hot(labels: ArrayLike, num_classes: int) -> Array:
    """One-hot indicators of class labels, one sample per column.

    Parameters
    ----------
    labels : array_like of int, shape (m,)
        Class indices in ``[0, num_classes)``.
    num_classes : int
        The number q of classes.

    Returns
    -------
    Y : ndarray of shape (num_classes, m)
        ``Y[k, i] = 1`` when ``labels[i] == k``, else 0.

    Raises
    ------
    InputTypeError
        Labels that are not integers.
    ValidationError
        Labels outside ``[0, num_classes)``, or ``num_classes < 1``.

    Examples
    --------
    >>> one_hot([0, 2, 1], 3)
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]])
    """
    q = check_int("num_classes", num_classes, low=1)
    lab = np.asarray(labels)
    check_memory(f"one-hot targets of {q} classes and {lab.size} samples",
                 array_bytes((q, lab.size)))
    if lab.ndim != 1:
        raise ShapeError(f"'labels' must be a 1-D array; got shape {lab.shape}.")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise InputTypeError(f"'labels' must be integers; got dtype {lab.dtype}.")
    if lab.size and (lab.min() < 0 or lab.max() >= q):
        raise ValidationError(f"'labels' must lie in [0, {q}); got values in [{lab.min()}, "
                              f"{lab.max()}].")
    Y = np.zeros((q, lab.size))
    Y[lab.astype(np.int64), np.arange(lab.size)] = 1.0
    return Y


def _rngs(seed: Any, k: int) -> list[np.random.Generator]:
    """k independent generators derived from ``seed`` (one per purpose)."""
    s = check_int("seed", seed, low=0)
    return [np.random.default_rng(child) for child in np.random.SeedSequence(s).spawn(k)]


def _stratified_choice(labels: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    """Sorted indices of n samples drawn without replacement, class proportions kept.

    Class counts are ``n * share`` rounded by the largest-remainder rule (ties go to the
    smaller class index), so they sum to n exactly.
    """
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / labels.size
    take = np.floor(exact).astype(np.int64)
    extra = n - int(take.sum())
    take[np.argsort(-(exact - take), kind="stable")[:extra]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def train_test_split(dataset: Dataset, test_fraction: float = 0.25,
                     seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split a data set into train and test sets, deterministically.

    Classification sets are split stratified: each class keeps its share in both parts
    (largest-remainder rounding). Regression sets are split by a seeded permutation. Each
    part keeps the original order of its samples.

    Parameters
    ----------
    dataset : Dataset
        With at least 2 samples.
    test_fraction : float in (0, 1)
        Share of the samples in the test set; the test size is rounded and kept in
        ``[1, m - 1]``.
    seed : int >= 0

    Returns
    -------
    train, test : Dataset
        Named ``"<name>-train"`` and ``"<name>-test"``.

    Raises
    ------
    InputTypeError
        ``dataset`` is not a Dataset.
    ValidationError
        ``test_fraction`` outside (0, 1), fewer than 2 samples, or a bad seed.

    Examples
    --------
    >>> train, test = train_test_split(digits(), test_fraction=0.2, seed=0)
    >>> train.m, test.m
    (1438, 359)
    """
    if not isinstance(dataset, Dataset):
        raise InputTypeError(f"'dataset' must be a Dataset; got {type(dataset).__name__}.")
    frac = check_real("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    (rng,) = _rngs(seed, 1)
    m = dataset.m
    if m < 2:
        raise ValidationError(f"'dataset' must have at least 2 samples to split; got m = {m}.")
    n_test = min(max(round(frac * m), 1), m - 1)
    if dataset.labels is not None:
        test_idx = _stratified_choice(dataset.labels, n_test, rng)
    else:
        test_idx = np.sort(rng.permutation(m)[:n_test])
    mask = np.ones(m, dtype=bool)
    mask[test_idx] = False
    return (dataset.subset(np.flatnonzero(mask), name=f"{dataset.name}-train"),
            dataset.subset(test_idx, name=f"{dataset.name}-test"))


# -- section 7.1: the cosine regression ------------------------------------------------------

def cosine_function(u: ArrayLike) -> Array:
    """The function of section 7.1: f(u) = 5 cos(pi u) exp(-|u| / 2).

    Parameters
    ----------
    u : array_like
        Any shape.

    Returns
    -------
    ndarray of the shape of ``u``

    Examples
    --------
    >>> cosine_function([0.0, 1.0, 2.0]).round(6).tolist()
    [5.0, -3.032653, 1.839397]
    """
    u = as_float_array("u", u)
    return 5.0 * np.cos(np.pi * u) * np.exp(-0.5 * np.abs(u))


def cosine(m: int = 200, noise: float = 1.0, seed: int = 0) -> Dataset:
    """The noisy cosine regression set of section 7.1.

    ``u`` is uniform in [-5, 5] and ``y = f(u) + w`` with ``w`` uniform in
    ``[-noise, noise]`` and ``f`` = :func:`cosine_function`. The paper uses m = 200 and
    noise = 1 (so the noise has standard deviation 1/sqrt(3) ~ 0.577).

    Sample i depends only on ``seed`` and i: a larger m extends a smaller one, and a
    different ``noise`` keeps the inputs.

    Parameters
    ----------
    m : int >= 1
        Number of samples.
    noise : float >= 0
        Half-width of the uniform noise.
    seed : int >= 0

    Returns
    -------
    Dataset
        ``U`` and ``Y`` of shape (1, m); ``f`` is :func:`cosine_function`.

    Raises
    ------
    ValidationError, InputTypeError
        Bad ``m``, ``noise`` or ``seed``.

    Examples
    --------
    >>> ds = cosine(m=5, seed=0)
    >>> ds.U.shape, ds.Y.shape, ds.X_rows.shape, ds.y_rows.shape
    ((1, 5), (1, 5), (5, 1), (5,))
    """
    m = check_int("m", m, low=1)
    check_memory(f"the cosine data set with m = {m} samples", array_bytes(*[(m, 2)] * 4))
    noise = check_real("noise", noise, low=0.0)
    (rng,) = _rngs(seed, 1)
    draws = rng.uniform(size=(m, 2))  # row i holds sample i: prefix-stable in m
    u = -5.0 + 10.0 * draws[:, 0]
    w = noise * (2.0 * draws[:, 1] - 1.0)
    return Dataset(U=u[None, :], Y=(cosine_function(u) + w)[None, :], name="cosine",
                   description="y = 5 cos(pi u) exp(-|u|/2) + w, u ~ U[-5, 5], "
                               f"w ~ U[-{noise:g}, {noise:g}] (section 7.1).",
                   f=cosine_function, info={"m": m, "noise": noise, "seed": int(seed)})


def cosine_grid(num: int = 1000) -> Dataset:
    """The noiseless cosine function on ``num`` evenly spaced points of [-5, 5].

    The grid on which Figure 4 of the paper compares a fitted model with f.

    Parameters
    ----------
    num : int >= 2

    Returns
    -------
    Dataset
        ``U`` of shape (1, num) from -5 to 5 and ``Y = f(U)``.

    Examples
    --------
    >>> g = cosine_grid()
    >>> g.m, float(g.U[0, 0]), float(g.U[0, -1])
    (1000, -5.0, 5.0)
    """
    num = check_int("num", num, low=2)
    check_memory(f"the cosine grid with num = {num} points", array_bytes(*[(num,)] * 4))
    u = np.linspace(-5.0, 5.0, num)
    return Dataset(U=u[None, :], Y=cosine_function(u)[None, :], name="cosine_grid",
                   description=f"f(u) = 5 cos(pi u) exp(-|u|/2) on {num} points of [-5, 5].",
                   f=cosine_function, info={"num": num})


# -- section 7.2.1: synthetic classification -------------------------------------------------

_SYNTH_P, _SYNTH_Q = 5, 2
_CALIBRATION_SIZE = 20_000


def _labelled_by(generator: ImplicitModel, m: int, label_noise: float,
                 rngs: Sequence[np.random.Generator], name: str, description: str,
                 info: dict[str, Any]) -> Dataset:
    """Balance a 2-output generator at its median, then label m standard normal inputs.

    The threshold is the median of ``y_1 - y_0`` over a separate calibration sample, folded
    into ``bias_y``; it depends on the seed only, not on m, so the labelling rule is the
    same function for every m.
    """
    rng_cal, rng_data, rng_noise = rngs
    U_cal = rng_cal.standard_normal((_CALIBRATION_SIZE, _SYNTH_P)).T
    Y_cal = generator.predict(U_cal, on_nonconvergence="raise")
    shift = float(np.median(Y_cal[1] - Y_cal[0]))
    generator = generator.replace(bias_y=generator.bias_y - np.array([0.0, shift]))
    U = rng_data.standard_normal((m, _SYNTH_P)).T  # row i of the draw is sample i
    labels = np.argmax(generator.predict(U, on_nonconvergence="raise"), axis=0)
    flips = rng_noise.uniform(size=m) < label_noise
    labels = np.where(flips, 1 - labels, labels).astype(np.int64)
    info = dict(info, m=m, label_noise=label_noise, flipped=int(flips.sum()), threshold=shift)
    return Dataset(U=U, Y=one_hot(labels, _SYNTH_Q), labels=labels, name=name,
                   description=description, class_names=("0", "1"), generator=generator,
                   info=info)


def synthetic_from_network(m: int = 1000, seed: int = 0, hidden: Sequence[int] = (10, 10),
                           label_noise: float = 0.0) -> Dataset:
    """Two-class data labelled by a random ReLU network (section 7.2.1, Figure 5).

    The paper defers the generator to its supplement, which is not available; this one
    is documented here. Inputs u in R^5 are standard normal. The network
    ``u -> relu(W_0 u + b_0) -> ... -> W_L x_L + b_L`` in R^2 has weights
    ``W_l ~ N(0, 2 / fan_in)`` (He scaling) and biases ``b_l ~ N(0, 0.25)``. Its output
    difference ``y_1 - y_0`` is centred at its median over 20,000 calibration inputs, so
    the two classes are balanced; the label is ``argmax(y)``. Each label is then flipped
    with probability ``label_noise``.

    Parameters
    ----------
    m : int >= 1
        Number of samples.
    seed : int >= 0
        Fixes the network, the calibration and the samples; sample i depends only on
        ``seed`` and i.
    hidden : sequence of int >= 1
        Widths of the hidden layers.
    label_noise : float in [0, 0.5]
        Probability of flipping each label.

    Returns
    -------
    Dataset
        ``U`` of shape (5, m), one-hot ``Y`` of shape (2, m), ``labels`` of shape (m,), and
        ``generator`` the network as an :class:`ImplicitModel` (built by
        :func:`fenchel_idl.from_layers`, threshold included), so that
        ``labels == argmax(generator.predict(U), axis=0)`` when ``label_noise == 0``.

    Raises
    ------
    ValidationError, InputTypeError
        Bad ``m``, ``seed``, ``hidden`` or ``label_noise``.

    Examples
    --------
    >>> ds = synthetic_from_network(m=100, seed=0)
    >>> ds.U.shape, ds.Y.shape, ds.labels.shape
    ((5, 100), (2, 100), (100,))
    """
    m = check_int("m", m, low=1)
    _check_synthetic_memory(m, 1)
    noise = check_real("label_noise", label_noise, 0.0, 0.5)
    widths = _widths(hidden)
    check_memory(f"a generator network with widths {widths}",
                 array_bytes(*[(w, w) for w in widths]))
    rng_model, *rest = _rngs(seed, 4)
    sizes = [_SYNTH_P, *widths, _SYNTH_Q]
    weights = [rng_model.standard_normal((sizes[i + 1], sizes[i])) * np.sqrt(2.0 / sizes[i])
               for i in range(len(sizes) - 1)]
    biases = [0.5 * rng_model.standard_normal(sizes[i + 1]) for i in range(len(sizes) - 1)]
    generator = from_layers(weights, biases, "relu")
    return _labelled_by(generator, m, noise, rest, "synthetic_network",
                        f"5 standard normal inputs labelled by argmax of a random ReLU network "
                        f"5-{'-'.join(map(str, widths))}-2 balanced at its median (section "
                        f"7.2.1).", {"seed": int(seed), "hidden": widths})


def synthetic_from_implicit(m: int = 1000, seed: int = 0, n: int = 20, kappa: float = 0.9,
                            label_noise: float = 0.0) -> Dataset:
    """Two-class data labelled by a random well-posed implicit model (section 7.2.1, Fig. 6).

    The paper defers the generator to its supplement, which is not available; this one
    is documented here. Inputs, calibration, balancing and label noise are those of
    :func:`synthetic_from_network`; only the generator differs. It is a ReLU implicit
    model with ``A`` of standard normal entries scaled so that ``||A||_inf = kappa < 1``
    (so it is well-posed, Remark 2.4; this is checked with
    :func:`fenchel_idl.check_well_posed`), ``B ~ N(0, 1/5)``, ``bias_x ~ N(0, 0.25)``,
    ``C ~ N(0, 1/n)`` and ``D = 0``, so that the labels depend on u only through the
    equilibrium state.

    Parameters
    ----------
    m, seed, label_noise
        As for :func:`synthetic_from_network` (``seed`` fixes the model in place of the
        network).
    n : int >= 1
        Number of states of the generating model.
    kappa : float in (0, 1)
        The value of ``||A||_inf``.

    Returns
    -------
    Dataset
        As for :func:`synthetic_from_network`, with ``generator`` the implicit model
        (threshold included).

    Raises
    ------
    ValidationError, InputTypeError
        Bad ``m``, ``seed``, ``n``, ``kappa`` or ``label_noise``.

    Examples
    --------
    >>> ds = synthetic_from_implicit(m=100, seed=0)
    >>> ds.generator.n, round(float(np.abs(ds.generator.A).sum(axis=1).max()), 12)
    (20, 0.9)
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    _check_synthetic_memory(m, n)
    kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
    noise = check_real("label_noise", label_noise, 0.0, 0.5)
    rng_model, *rest = _rngs(seed, 4)
    A = rng_model.standard_normal((n, n))
    A *= kappa / np.abs(A).sum(axis=1).max()
    generator = ImplicitModel(A=A, B=rng_model.standard_normal((n, _SYNTH_P)) / np.sqrt(_SYNTH_P),
                              C=rng_model.standard_normal((_SYNTH_Q, n)) / np.sqrt(n),
                              D=np.zeros((_SYNTH_Q, _SYNTH_P)), activation="relu",
                              bias_x=0.5 * rng_model.standard_normal(n))
    check_well_posed(generator)
    return _labelled_by(generator, m, noise, rest, "synthetic_implicit",
                        f"5 standard normal inputs labelled by argmax of a random ReLU implicit "
                        f"model with n = {n}, ||A||_inf = {kappa:g}, balanced at its median "
                        f"(section 7.2.1).", {"seed": int(seed), "n": n, "kappa": kappa})


def _check_synthetic_memory(m: int, n: int) -> None:
    """Refuse a synthetic set whose inputs, one-hot targets, generator (n states) and
    equilibria need more memory than the limit."""
    check_memory(f"a synthetic data set with m = {m} samples and a generator of n = {n} "
                 "states", array_bytes((n, n), (_SYNTH_P, m), (_SYNTH_P, m), (_SYNTH_Q, m),
                                       (n, _CALIBRATION_SIZE), *[(n, m)] * 3, (m,), (m,)))


def _widths(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (Sequence, np.ndarray)):
        raise InputTypeError(f"'hidden' must be a sequence of layer widths; got "
                             f"{type(hidden).__name__}.")
    if len(hidden) == 0:
        raise ValidationError("'hidden' must list at least one hidden layer width; got an "
                              "empty sequence.")
    return tuple(check_int(f"hidden[{i}]", w, low=1) for i, w in enumerate(hidden))


# -- scikit-learn digits ---------------------------------------------------------------------

def digits(n: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 hand-written digits (1797 images, 10 classes).

    Parameters
    ----------
    n : int in [1, 1797], optional
        ``None`` keeps every image in scikit-learn's order; otherwise a stratified,
        seeded subset of n images (in their original order).
    seed : int >= 0
        Chooses the subset.

    Returns
    -------
    Dataset
        ``U`` of shape (64, m) with pixels scaled to [0, 1] (divided by 16), one-hot ``Y``
        of shape (10, m), ``labels`` of shape (m,), ``image_shape`` (8, 8).

    Raises
    ------
    ValidationError, InputTypeError
        Bad ``n`` or ``seed``.

    Examples
    --------
    >>> ds = digits()
    >>> ds.U.shape, ds.Y.shape, float(ds.U.max())
    ((64, 1797), (10, 1797), 1.0)
    """
    (rng,) = _rngs(seed, 1)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx = _subset_indices(labels, n, rng)
    U = _readonly(np.ascontiguousarray(np.asarray(bunch.data, dtype=np.float64)[idx].T) / 16.0)
    return Dataset(U=U, Y=one_hot(labels[idx], 10), labels=labels[idx], name="digits",
                   description="scikit-learn's 8x8 hand-written digits (UCI optical "
                               "recognition of handwritten digits), pixels / 16.",
                   class_names=_MNIST_CLASSES, image_shape=(8, 8),
                   info={"n": None if n is None else int(n), "seed": int(seed)})


def _subset_indices(labels: IntArray, n: Any, rng: np.random.Generator) -> IntArray:
    if n is None:
        return np.arange(labels.size)
    k = check_int("n", n, low=1, high=labels.size)
    return _stratified_choice(labels, k, rng)


# -- IDX files (MNIST, Fashion-MNIST) --------------------------------------------------------

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not), the format of MNIST and Fashion-MNIST.

    The header is two zero bytes, a type byte (0x08 for uint8, also 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number of
    dimensions d, and d big-endian uint32 sizes; the data follow in C order, big-endian.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    ndarray of the shape given by the header, in native byte order (read-only for uint8)

    Raises
    ------
    DataNotFoundError
        No file at ``path``.
    ValidationError
        A corrupt file: bad gzip stream, bad magic number, unknown type, or a data size
        that does not match the header. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file {str(path)!r} does not exist.")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValidationError(f"IDX file {str(path)!r} is corrupt: its gzip stream cannot "
                                  f"be read ({type(exc).__name__}: {exc}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValidationError(f"IDX file {str(path)!r} is corrupt: it must start with two zero "
                              f"bytes; got {raw[:4]!r}.")
    dtype = _IDX_TYPES.get(raw[2])
    if dtype is None:
        raise ValidationError(f"IDX file {str(path)!r} is corrupt: unknown type byte "
                              f"0x{raw[2]:02x} (expected one of "
                              f"{', '.join(f'0x{t:02x}' for t in _IDX_TYPES)}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValidationError(f"IDX file {str(path)!r} is corrupt: a header with {ndim} "
                              f"dimensions in a file of {len(raw)} bytes.")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValidationError(f"IDX file {str(path)!r} is corrupt: the header announces shape "
                              f"{shape} ({expected} data bytes) but the file holds "
                              f"{len(raw) - header}.")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def data_directories() -> list[Path]:
    """The directories searched for data files, in order.

    1. ``$FENCHEL_IDL_DATA`` when the variable is set;
    2. the ``problems/data`` folder of the source checkout holding this package;
    3. ``./problems/data`` relative to the current directory.
    """
    dirs = []
    env = os.environ.get(DATA_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(__file__).resolve().parents[2] / "problems" / "data")
    dirs.append(Path.cwd() / "problems" / "data")
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _locate(folder: str, files: Sequence[str], data_dir: str | os.PathLike | None) -> Path:
    """The first directory ``<base>/<folder>`` that holds all ``files``."""
    check_kind("data_dir", data_dir, ("str", "path"), nullable=True)
    bases = [Path(data_dir)] if data_dir is not None else data_directories()
    for base in bases:
        if all((base / folder / f).is_file() for f in files):
            return base / folder
    tried = "\n".join(f"  - {base / folder}" for base in bases)
    hint = "" if data_dir is not None else (
        f" Set the environment variable {DATA_ENV} to a directory holding '{folder}/', or "
        "pass data_dir=.")
    raise DataNotFoundError(f"data set files {list(files)} not found in any of:\n{tried}\n"
                            f"{hint}".rstrip())


def _load_idx_set(folder: str, name: str, class_names: tuple[str, ...], description: str,
                  split: str, n: int | None, seed: int,
                  data_dir: str | os.PathLike | None) -> Dataset:
    split = check_choice("split", split, tuple(_SPLIT_PREFIX))
    (rng,) = _rngs(seed, 1)
    prefix = _SPLIT_PREFIX[split]
    img_file = f"{prefix}-images-idx3-ubyte.gz"
    lab_file = f"{prefix}-labels-idx1-ubyte.gz"
    where = _locate(folder, (img_file, lab_file), data_dir)
    labels = read_idx(where / lab_file)
    if labels.ndim != 1 or labels.dtype != np.uint8 or labels.size == 0:
        raise ValidationError(f"IDX file {str(where / lab_file)!r} must hold a non-empty 1-D "
                              f"uint8 array of labels; got shape {labels.shape}, dtype "
                              f"{labels.dtype}.")
    if labels.max() >= len(class_names):
        raise ValidationError(f"IDX file {str(where / lab_file)!r} holds label "
                              f"{labels.max()}; expected labels in [0, {len(class_names)}).")
    labels = labels.astype(np.int64)
    idx = _subset_indices(labels, n, rng)  # validates n before the large read
    images = read_idx(where / img_file)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[0] != labels.size:
        raise ValidationError(f"IDX file {str(where / img_file)!r} must hold {labels.size} "
                              f"uint8 images to match its labels; got shape {images.shape}, "
                              f"dtype {images.dtype}.")
    pixels = images.shape[1] * images.shape[2]
    flat = images.reshape(images.shape[0], pixels)
    if n is not None:
        flat = flat[idx]
    U = np.ascontiguousarray(flat.T, dtype=np.float64)
    U /= 255.0
    return Dataset(U=_readonly(U), Y=_readonly(one_hot(labels[idx], len(class_names))),
                   labels=_readonly(labels[idx]), name=f"{name}-{split}",
                   description=description, class_names=class_names,
                   image_shape=images.shape[1:],
                   info={"split": split, "n": None if n is None else int(n),
                         "seed": int(seed), "images": str(where / img_file),
                         "labels": str(where / lab_file)})


def load_mnist(split: str = "train", n: int | None = None, seed: int = 0,
               data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST hand-written digits (LeCun, Cortes, Burges), read from the IDX files.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    n : int, optional
        ``None`` keeps every image in file order; otherwise a stratified, seeded subset of
        n images (class shares kept, images in file order).
    seed : int >= 0
        Chooses the subset.
    data_dir : path-like, optional
        A directory holding ``mnist/``; by default the directories of
        :func:`data_directories` are searched.

    Returns
    -------
    Dataset
        ``U`` of shape (784, m) with pixels / 255 in [0, 1], one-hot ``Y`` of shape
        (10, m), ``labels`` of shape (m,), ``image_shape`` (28, 28).

    Raises
    ------
    DataNotFoundError
        The files are in none of the searched directories (all are listed).
    ValidationError
        A bad ``split`` or ``n``, or a corrupt file (named in the message).

    Examples
    --------
    >>> ds = load_mnist("test", n=100, seed=0)
    >>> ds.U.shape, ds.Y.shape, ds.images.shape
    ((784, 100), (10, 100), (100, 28, 28))
    """
    return _load_idx_set("mnist", "mnist", _MNIST_CLASSES,
                         "MNIST hand-written digits (Y. LeCun, C. Cortes, C. Burges), 28x28, "
                         "pixels / 255.", split, n, seed, data_dir)


def load_fashion_mnist(split: str = "train", n: int | None = None, seed: int = 0,
                       data_dir: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST clothing images (Xiao, Rasul, Vollgraf, Zalando Research, 2017).

    The stand-in for the paper's harder image tasks (GTSRB, CIFAR-10), which cannot be
    obtained offline. Same layout, options and errors as :func:`load_mnist`, with the
    files in ``fashion-mnist/``; the class names are in ``class_names``.

    Returns
    -------
    Dataset
        ``U`` of shape (784, m) in [0, 1], one-hot ``Y`` of shape (10, m), ``labels``.
    """
    return _load_idx_set("fashion-mnist", "fashion_mnist", _FASHION_CLASSES,
                         "Fashion-MNIST clothing images (H. Xiao, K. Rasul, R. Vollgraf, "
                         "arXiv:1708.07747, Zalando Research), 28x28, pixels / 255.",
                         split, n, seed, data_dir)


# -- dispatch by name ------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "cosine": cosine,
    "cosine_grid": cosine_grid,
    "synthetic_network": synthetic_from_network,
    "synthetic_implicit": synthetic_from_implicit,
    "digits": digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
}

DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
"""The names accepted by :func:`load`."""


def load(name: str, **options: Any) -> Dataset:
    """Load a data set by name, for declarative problem files.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`: ``"cosine"``, ``"cosine_grid"``,
        ``"synthetic_network"``, ``"synthetic_implicit"``, ``"digits"``, ``"mnist"``,
        ``"fashion_mnist"`` (hyphens are read as underscores).
    **options
        Keyword arguments of the loader (for example ``m``, ``seed``, ``split``, ``n``).

    Raises
    ------
    ValidationError
        An unknown name, or an option the loader does not take (both listed).

    Examples
    --------
    >>> load("cosine", m=10, seed=1).m
    10
    """
    return _LOADERS[check_load_options(name, options)](**options)


def check_load_options(name: Any, options: Mapping[str, Any]) -> str:
    """Check the name and options of :func:`load` before anything is loaded; return the
    loader's key.

    Each option must be one the loader takes, of the type its signature declares (an int
    only from an integer, never 2.9 or "3"; a path only from a string or path-like).

    Raises
    ------
    InputTypeError
        ``name`` not a str, or an option of the wrong type.
    ValidationError
        An unknown name or option (both listed), or a NaN or infinite number.
    """
    if not isinstance(name, str):
        raise InputTypeError(f"'name' must be a str, one of {list(DATASET_NAMES)}; got "
                             f"{type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValidationError(f"'name' must be one of {list(DATASET_NAMES)}; got {name!r}.")
    params = inspect.signature(_LOADERS[key]).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValidationError(f"data set {key!r} does not take the option(s) {unknown}; its "
                              f"options are {list(params)}.")
    for opt, value in options.items():
        kinds = annotation_kinds(params[opt].annotation)
        if kinds is not None:
            check_kind(opt, value, *kinds)
    return key


# -- your own data: arrays and files ---------------------------------------------------------

FILE_FORMATS: tuple[str, ...] = ("csv", "npz", "npy")
"""The file formats read by :func:`load_file`."""

TASKS: tuple[str, ...] = ("classification", "regression")

MAX_INFERRED_CLASSES = 20
"""A single integer-valued target with at most this many distinct values is inferred to be
class labels (see :func:`from_arrays`); state ``task="regression"`` for a count target."""

_SUFFIX_FORMATS = {".csv": "csv", ".npz": "npz", ".npy": "npy"}
_KINDS = {"csv": "CSV", "npz": "npz", "npy": "npy"}
#: the names of the arrays of an npz file, when ``inputs`` or ``target`` is not given
_NPZ_DEFAULTS = {"inputs": "X", "target": "y"}

Column = str | int


def _infer_task(y: Array) -> str:
    """Classification for one target column of integers with few distinct values."""
    if y.shape[1] != 1 or not np.all(y == np.round(y)):
        return "regression"
    return "classification" if np.unique(y).size <= MAX_INFERRED_CLASSES else "regression"


def _class_labels(y: Array, classes: ArrayLike | None) -> tuple[IntArray, NDArray[Any]]:
    """Labels in ``[0, K)`` for integer class values ``y`` of shape (m, 1), and the K values."""
    if y.shape[1] != 1:
        raise ValidationError(f"classification needs one target column (the class labels); "
                              f"got {y.shape[1]} target columns.")
    values = y[:, 0]
    if not np.all(values == np.round(values)):
        bad = values[values != np.round(values)][0]
        raise ValidationError(f"classification needs integer class labels in 'target'; got "
                              f"the value {bad!r}. State task = 'regression' for real targets.")
    values = values.astype(np.int64)
    known = np.unique(values) if classes is None else np.asarray(classes, dtype=np.int64)
    unknown = np.setdiff1d(values, known)
    if unknown.size:
        raise ValidationError(f"'target' holds the class values {unknown.tolist()}, which are "
                              f"not among the classes {known.tolist()} of the training data.")
    return np.searchsorted(known, values).astype(np.int64), known


def from_arrays(X: ArrayLike, y: ArrayLike, *, task: str | None = None,
                classes: ArrayLike | None = None, name: str = "data", description: str = "",
                info: Mapping[str, Any] | None = None) -> Dataset:
    """A :class:`Dataset` from arrays in row layout (samples are rows, as users store them).

    Parameters
    ----------
    X : array_like of shape (m, p) or (m,)
        Inputs, one sample per row (1-D: one input).
    y : array_like of shape (m,) or (m, q)
        Targets, one sample per row.
    task : {"classification", "regression"}, optional
        Inferred when omitted: classification when ``y`` is one column of integers with at
        most :data:`MAX_INFERRED_CLASSES` distinct values, regression otherwise.
    classes : array_like of int, optional
        For classification: the class values, in label order (by default the sorted
        distinct values of ``y``). Give a training set's ``info["classes"]`` to label a
        test set the same way.
    name, description : str
    info : mapping, optional
        Provenance; ``task`` and, for classification, ``classes`` are added.

    Returns
    -------
    Dataset
        ``U = X.T`` of shape (p, m); for regression ``Y = y.T`` of shape (q, m); for
        classification ``labels`` in ``[0, K)`` (index of the value in ``classes``) and
        one-hot ``Y`` of shape (K, m), the class values as ``class_names``.

    Raises
    ------
    InputTypeError
        Non-numeric arrays.
    ShapeError
        X and y with different numbers of rows, or arrays with more than 2 dimensions.
    ValidationError
        Non-finite values, a bad ``task``, class labels that are not integers, several
        target columns for classification, or values outside ``classes``.

    Examples
    --------
    >>> ds = from_arrays([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [1, 0, 1])
    >>> ds.U.shape, ds.task, ds.labels.tolist(), ds.class_names
    ((2, 3), 'classification', [1, 0, 1], ('0', '1'))
    """
    X = as_float_array("inputs", X, ndim=(1, 2))
    y = as_float_array("target", y, ndim=(1, 2))
    X = X[:, None] if X.ndim == 1 else X
    y = y[:, None] if y.ndim == 1 else y
    if X.shape[0] != y.shape[0]:
        raise ShapeError(f"'inputs' and 'target' must have the same number of rows (samples); "
                         f"got {X.shape[0]} and {y.shape[0]}.")
    if X.shape[0] < 1 or X.shape[1] < 1 or y.shape[1] < 1:
        raise ShapeError(f"'inputs' and 'target' must have at least one sample and one column "
                         f"each; got inputs of shape {X.shape} and target of shape {y.shape}.")
    task = _infer_task(y) if task is None else check_choice("task", task, TASKS)
    info = dict(info or {}, task=task)
    U = _readonly(np.ascontiguousarray(X.T))
    if task == "regression":
        return Dataset(U=U, Y=_readonly(np.ascontiguousarray(y.T)), name=name,
                       description=description, info=info)
    labels, known = _class_labels(y, classes)
    info["classes"] = known.tolist()
    return Dataset(U=U, Y=one_hot(labels, known.size), labels=labels, name=name,
                   description=description, class_names=tuple(str(c) for c in known),
                   info=info)


def _file_format(path: Path, file_format: str | None) -> str:
    if file_format is not None:
        return check_choice("file_format", file_format, FILE_FORMATS)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValidationError(f"'file_format' must be one of {list(FILE_FORMATS)} when the "
                              f"suffix of {str(path)!r} does not tell it; got None.")
    return fmt


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV file with their line numbers, fields stripped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [(reader.line_num, [f.strip() for f in row]) for row in reader
                    if any(f.strip() for f in row)]
    except UnicodeDecodeError as exc:
        raise ValidationError(f"CSV file {str(path)!r} is not UTF-8 text: byte "
                              f"{exc.object[exc.start]:#04x} at position {exc.start} cannot be "
                              "decoded (save the file as UTF-8).") from None
    except csv.Error as exc:
        raise ValidationError(f"CSV file {str(path)!r} cannot be read: {exc}.") from None
    if not rows:
        raise ValidationError(f"CSV file {str(path)!r} holds no rows.")
    return rows


def _read_csv(path: Path, delimiter: str, header: bool | None
              ) -> tuple[Array, list[Column]]:
    """The values of a CSV file as an (m, k) array, and the names of its k columns (their
    indices when it has no header). ``header=None``: the first row is a header when one of
    its fields is not a number."""
    rows = _csv_rows(path, delimiter)
    first = rows[0][1]
    if header is None:
        header = not all(_is_number(f) for f in first)
    names: list[Column] = list(first) if header else list(range(len(first)))
    if header:
        dupes = sorted({n for n in first if first.count(n) > 1})
        if dupes:
            raise ValidationError(f"CSV file {str(path)!r} has duplicate column names {dupes}.")
        rows = rows[1:]
    if not rows:
        raise ValidationError(f"CSV file {str(path)!r} holds a header but no data rows.")
    for line, row in rows:
        if len(row) != len(names):
            raise ValidationError(f"CSV file {str(path)!r}: line {line} has {len(row)} fields; "
                                  f"the file has {len(names)} columns.")
    try:
        table = np.array([row for _, row in rows], dtype=np.float64)
    except ValueError:
        for j, col in enumerate(names):
            for line, row in rows:
                if not _is_number(row[j]):
                    raise ValidationError(
                        f"CSV file {str(path)!r}: column {col!r} holds {row[j]!r} on line "
                        f"{line}, which is not a number (every value must be numeric)."
                    ) from None
        raise
    _check_finite(table, names, f"CSV file {str(path)!r}", [line for line, _ in rows])
    return table, names


def _check_finite(table: Array, names: Sequence[Column], where: str,
                  lines: Sequence[int] | None = None) -> None:
    """Refuse NaN and inf, naming the column and the row (the file's line, when known)."""
    bad = ~np.isfinite(table)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        row = f"line {lines[i]}" if lines is not None else f"sample (row) {i}"
        raise ValidationError(f"{where}: column {names[j]!r} holds {table[i, j]} on {row}; "
                              "every value must be finite.")


def _column(spec: Any, names: Sequence[Column], key: str, where: str) -> int:
    """The index of the column ``spec`` (a name, or an index, negative from the end)."""
    k = len(names)
    if isinstance(spec, str):
        if spec not in names:
            listed = [n for n in names if isinstance(n, str)]
            raise ValidationError(f"{where} has no column {spec!r} ('{key}'); its columns are "
                                  + (f"{listed}." if listed else f"unnamed: give an index in "
                                     f"[0, {k})."))
        return list(names).index(spec)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not -k <= spec < k:
            raise ValidationError(f"'{key}' column index {spec} is out of range: {where} has "
                                  f"{k} columns (indices 0..{k - 1}, or negative from the end).")
        return int(spec) % k
    raise InputTypeError(f"'{key}' must be a column name, a column index or a list of them; "
                         f"got {spec!r} ({type(spec).__name__}).")


def _columns(spec: Any, names: Sequence[Column], key: str, where: str) -> list[int]:
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise ValidationError(f"'{key}' must name at least one column; got an empty list.")
    idx = [_column(s, names, key, where) for s in specs]
    if len(set(idx)) != len(idx):
        raise ValidationError(f"'{key}' names a column twice; got {list(specs)}.")
    return idx


def _split_table(table: Array, names: Sequence[Column], target: Any, inputs: Any,
                 where: str) -> tuple[Array, Array, list[Column], list[Column]]:
    """Inputs and targets of an (m, k) table: the ``target`` columns, and the ``inputs``
    columns (by default every other column)."""
    if target is None:
        raise ValidationError(f"'target' is required for {where}: give the name or the index "
                              f"of the target column (columns: {list(names)}).")
    t_idx = _columns(target, names, "target", where)
    if inputs is None:
        i_idx = [j for j in range(len(names)) if j not in t_idx]
    else:
        i_idx = _columns(inputs, names, "inputs", where)
    both = sorted(set(t_idx) & set(i_idx))
    if both:
        raise ValidationError(f"'inputs' and 'target' share the column(s) "
                              f"{[names[j] for j in both]} of {where}.")
    if not i_idx:
        raise ValidationError(f"{where} has no input column besides the target(s).")
    return (table[:, i_idx], table[:, t_idx], [names[j] for j in i_idx],
            [names[j] for j in t_idx])


def _check_stored_arrays(path: Path, fmt: str) -> None:
    """Read the array headers of an npy or npz file and refuse, before numpy allocates
    anything, arrays that the file does not hold (a header claiming more bytes than are
    stored), that are not real numbers, or that exceed the memory limit."""
    where = f"{fmt} file {str(path)!r}"
    try:
        if fmt == "npy":
            with path.open("rb") as fh:
                headers = {"the array": (*read_npy_header(fh), path.stat().st_size)}
        else:
            if not zipfile.is_zipfile(path):
                raise ValidationError(f"{where} cannot be read: it is not an npz (zip) "
                                      "archive (an .npy array under an .npz name? write "
                                      "source = 'npy').")
            with zipfile.ZipFile(path) as zf:
                headers = {}
                for info in zf.infolist():
                    with zf.open(info) as fh:
                        headers[info.filename.removesuffix(".npy")] = (
                            *read_npy_header(fh), info.file_size)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, FenchelIDLError):
            raise
        raise ValidationError(f"{where} cannot be read: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
    for name, (shape, dtype, header_len, stored) in headers.items():
        if math.prod(shape) * dtype.itemsize + header_len > stored:
            raise ValidationError(f"{where}: {name!r} claims shape {shape} of {dtype}, more "
                                  f"than the {stored} bytes stored for it (corrupt or "
                                  "truncated).")
    check_memory(f"the arrays of {where}",
                 sum(math.prod(h[0]) * h[1].itemsize for h in headers.values()))


def _read_npy(path: Path) -> Array:
    _check_stored_arrays(path, "npy")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"npy file {str(path)!r} cannot be read: {exc}") from None
    if arr.ndim != 2:
        raise ShapeError(f"npy file {str(path)!r} must hold one 2-D array (samples as rows, "
                         f"inputs and target(s) as columns); got shape {arr.shape}.")
    arr = as_float_array(f"the array of {str(path)!r}", arr, finite=False)
    _check_finite(arr, range(arr.shape[1]), f"npy file {str(path)!r}")
    return arr


def _read_npz(path: Path, inputs: Any, target: Any
              ) -> tuple[Array, Array, list[Column], list[Column]]:
    """The arrays ``inputs`` (default "X") and ``target`` (default "y") of an npz file."""
    keys = {"inputs": _NPZ_DEFAULTS["inputs"] if inputs is None else inputs,
            "target": _NPZ_DEFAULTS["target"] if target is None else target}
    _check_stored_arrays(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key, name in keys.items():
                if not isinstance(name, str):
                    raise InputTypeError(f"'{key}' must name an array of the npz file (a "
                                         f"str); got {name!r}.")
                if name not in archive.files:
                    raise ValidationError(f"npz file {str(path)!r} has no array {name!r} "
                                          f"('{key}'); its arrays are {archive.files}.")
                arrays[key] = archive[name]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FenchelIDLError):
            raise
        raise ValidationError(f"npz file {str(path)!r} cannot be read: {exc}") from None
    out = []
    for key, arr in arrays.items():
        arr = as_float_array(f"{key} {keys[key]!r} of {str(path)!r}", arr, ndim=(1, 2),
                             finite=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        _check_finite(arr, [f"{keys[key]}[:, {j}]" for j in range(arr.shape[1])],
                      f"npz file {str(path)!r}")
        out.append(arr)
    return out[0], out[1], [keys["inputs"]], [keys["target"]]


def load_file(path: str | os.PathLike, target: Column | Sequence[Column] | None = None, *,
              inputs: Any = None, task: str | None = None, classes: ArrayLike | None = None,
              file_format: str | None = None, delimiter: str = ",",
              header: bool | None = None) -> Dataset:
    """Load your own data set from a CSV, npz or npy file (samples are rows in the file).

    Parameters
    ----------
    path : str or path-like
        The file; its format is ``file_format`` or, by default, its suffix
        (``.csv``, ``.npz``, ``.npy``).
    target : str, int or list of them
        CSV and npy: the target column(s), by name (CSV with a header) or index (negative
        from the end); required. npz: the name of the target array (default ``"y"``).
    inputs : optional
        CSV and npy: the input columns (names or indices; default every column that is not
        a target). npz: the name of the input array (default ``"X"``).
    task : {"classification", "regression"}, optional
        Inferred when omitted, as in :func:`from_arrays`.
    classes : array_like of int, optional
        The class values of a training set (its ``info["classes"]``), for a test file.
    file_format : {"csv", "npz", "npy"}, optional
    delimiter : str
        The CSV field separator.
    header : bool, optional
        Whether the CSV's first row holds column names; by default it does when one of its
        fields is not a number.

    Returns
    -------
    Dataset
        Samples as columns (``U`` of shape (p, m)), named after the file; ``info`` holds
        the file, its format, and the ``inputs`` and ``target`` columns that were read.

    Raises
    ------
    DataNotFoundError
        No file at ``path``.
    ValidationError
        A missing or unknown target column (the columns are listed), a value that is not a
        number (its column and line are named), a non-finite value, a file that cannot be
        read, or a bad ``task``.
    InputTypeError
        ``target`` or ``inputs`` of the wrong type.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "d.csv").write_text("a,b,y\\n1,2,0.5\\n3,4,1.5\\n5,6,2.5\\n")
    >>> ds = load_file(folder / "d.csv", target="y")
    >>> ds.U.tolist(), ds.Y.tolist(), ds.task
    ([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]], [[0.5, 1.5, 2.5]], 'regression')
    """
    path = Path(path).expanduser()
    fmt = _file_format(path, file_format)
    if not path.is_file():
        raise DataNotFoundError(f"'path' must name an existing {_KINDS[fmt]} file; "
                                f"{str(path)!r} does not exist.")
    where = f"{_KINDS[fmt]} file {str(path)!r}"
    if fmt == "npz":
        X, y, in_names, t_names = _read_npz(path, inputs, target)
    else:
        if fmt == "csv":
            table, names = _read_csv(path, delimiter, header)
        else:
            table = _read_npy(path)
            names = list(range(table.shape[1]))
        X, y, in_names, t_names = _split_table(table, names, target, inputs, where)
    return from_arrays(X, y, task=task, classes=classes, name=path.stem,
                       description=f"{fmt} file {path.name}: inputs {in_names}, target "
                                   f"{t_names}.",
                       info={"path": str(path), "file_format": fmt, "inputs": in_names,
                             "target": t_names})
