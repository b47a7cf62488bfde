"""Demonstrations of sparsity, compression and robust training on the 8x8 digits (sections
4.3 and 5).

=====================  ==========================================  ==============================
demo                   problem file                                what it measures
=====================  ==========================================  ==============================
``feature_selection``  ``problems/feature_selection_digits.toml``  pixels kept by the column
                                                                   norms of (B; D) (5.1), test
                                                                   accuracy, mask images
``row_sparsity``       ``problems/row_sparsity_digits.toml``       states removed by
                                                                   :func:`fenchel_idl.reduce`
                                                                   after row norms of (A, B)
                                                                   (5.2), predict speed-up
``low_rank``           ``problems/low_rank_digits.toml``           accuracy, speed, error and
                                                                   the Theorem 5.1 bound against
                                                                   the rank of A (5.3)
``robust``             ``problems/robust_digits.toml``             rho, ||S||_inf and accuracy
                                                                   against the weight of the
                                                                   Lipschitz penalty (4.7)
=====================  ==========================================  ==============================

Command line::

    python -m fenchel_idl.apps.demos --out DIR [--quick] [--only NAME ...] [--problems DIR]

writes ``DIR/<demo>.md`` (settings, table, figures, findings) and ``DIR/<demo>.json`` (the
same records) for each demo run, the index ``DIR/demos.md`` / ``DIR/demos.json`` of every
demo present in DIR (so ``--only`` keeps the others' sections), the PNG figures and the
trained models (``DIR/models/*.npz``).

A demo file is an ordinary problem file (:mod:`fenchel_idl.drivers.problem_file`) with a ``[demo]``
table, read only here:

- ``kind``: the demo the file is for (one of :data:`DEMOS`);
- ``weights``: the values swept for the weight of the first ``[[penalties]]`` entry (0
  drops it); the other penalties keep their weights;
- ``train``: ``"refine"`` (projected proximal gradient, :func:`fenchel_idl.drivers.refine.refine`,
  from :func:`fenchel_idl.drivers.refine.init_random`, with the options of ``[refine]``) or
  ``"bcd"`` (:func:`fenchel_idl.solve_bcd` on the :class:`fenchel_idl.TrainingProblem` of
  the file, with ``[refine]`` as its optional refinement stage);
- ``train_samples``: train on a stratified subset of this many training images (the test
  set stays whole);
- ``init_scale``: ``scale`` of the random start (``train = "refine"``), default 1;
- per demo: ``refit_epochs`` (feature_selection), ``timing_repeats`` (row_sparsity,
  low_rank), ``check_samples`` (row_sparsity), ``ranks`` (low_rank);
- ``[demo.quick]``: what ``--quick`` changes: any of the keys above, and tables ``data``,
  ``model``, ``training``, ``schedule`` and ``refine`` merged into those sections.

Timings are ratios measured in the same process: the models predict in turn, with BLAS
limited to one thread, and the median of the repeats is kept. The ratios use the process's
CPU time (wall-time ratios are reported beside them): on a shared machine the wall time of a
call of a few milliseconds is inflated whenever the process is descheduled.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.analysis import (
    lipschitz_bound,
    lipschitz_penalty_value,
    low_rank,
    perturbation_bound,
    pyplot,
    reduce,
    selected_features,
    sensitivity_matrix,
)
from fenchel_idl.apps import common
from fenchel_idl.apps.common import score
from fenchel_idl.drivers import (
    bcd_options,
    build_problem,
    init_random,
    load_data,
    load_problem,
    refine,
    solve_bcd,
)
from fenchel_idl.errors import InputTypeError, NotWellPosedError, ValidationError
from fenchel_idl.model import ImplicitModel, pf_eigenvalue, state_lipschitz
from fenchel_idl.problem import datasets, get_penalty
from fenchel_idl.validation import check_int, check_real, describe

__all__ = [
    "DEMOS",
    "DemoReport",
    "FeatureSelectionRow",
    "LowRankRow",
    "RobustRow",
    "RowSparsityRow",
    "TrainedModel",
    "feature_selection_demo",
    "low_rank_demo",
    "main",
    "robust_demo",
    "row_sparsity_demo",
    "run_demos",
]

Array = NDArray[np.float64]

#: The demos, in the order the command runs them.
DEMOS: tuple[str, ...] = ("feature_selection", "row_sparsity", "low_rank", "robust")

#: The penalty each demo sweeps (the first [[penalties]] entry of its file).
_PENALTY = {"feature_selection": "feature_selection", "row_sparsity": "row_norms",
            "low_rank": "nuclear", "robust": "lipschitz"}
_COMMON_KEYS = {"kind", "weights", "train", "train_samples", "init_scale", "quick"}
_EXTRA_KEYS = {"feature_selection": {"refit_epochs"},
               "row_sparsity": {"timing_repeats", "check_samples"},
               "low_rank": {"ranks", "timing_repeats"},
               "robust": set()}
_QUICK_TABLES = ("data", "model", "training", "schedule", "refine")
#: Tolerance of the equilibria behind every reported error (equivalence, Theorem 5.1).
_TIGHT = {"tol": 1e-12, "max_iter": 20000}
#: Slack for floating-point rounding when a measured error is compared with its bound.
_SLACK = 1e-9


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainedModel:
    """One model a demo trained.

    Attributes
    ----------
    weight : float
        Weight of the swept penalty (0: no penalty).
    file : str
        The model file (``ImplicitModel.save``), relative to the output directory.
    seconds : float
        Training time.
    train_accuracy, test_accuracy : float
    note : str
        How it was trained (method, sweeps or epochs, certificate, warnings).
    """

    weight: float
    file: str
    seconds: float
    train_accuracy: float
    test_accuracy: float
    note: str


@dataclass(frozen=True)
class FeatureSelectionRow:
    """One weight of the feature-selection demo (section 5.1).

    Attributes
    ----------
    weight : float
    n_features : int
        Number of inputs whose column of (B; D) is not zero.
    features : tuple of int
        Those inputs, ``fenchel_idl.selected_features(model)`` (tol 0).
    train_accuracy, test_accuracy : float
        Of the penalized model.
    refit_test_accuracy : float or None
        Test accuracy of a model retrained without penalty on the kept pixels only (None
        when refitting is off or no pixel is kept).
    mask_file : str
        PNG of the selected pixels (white), one image pixel per input pixel scaled up by
        :attr:`mask_scale`.
    mask_scale : int
    model_file : str
    """

    weight: float
    n_features: int
    features: tuple[int, ...]
    train_accuracy: float
    test_accuracy: float
    refit_test_accuracy: float | None
    mask_file: str
    mask_scale: int
    model_file: str


@dataclass(frozen=True)
class RowSparsityRow:
    """One weight of the row-sparsity demo (section 5.2).

    Attributes
    ----------
    weight : float
    n_states, n_reduced : int
        States of the trained model and of ``reduce(model).model``.
    constant, unread, closed_form : int
        States removed as constants or as unread, and kept states computed in closed form.
    placeholder : bool
        Every state was removed: the reduced model holds one inert state (ImplicitModel
        needs n >= 1) and is the linear map ``D u + bias``.
    test_accuracy : float
        Of the trained model (the reduced one predicts the same).
    max_abs_diff : float
        Largest ``|y - y_reduced|`` over the test images and random inputs (equilibria to a
        relative tolerance of 1e-12).
    time_original_ms, time_reduced_ms : float
        Median CPU time of one predict of each on the timing inputs.
    speedup : float
        ``time_original_ms / time_reduced_ms`` (CPU time).
    speedup_wall : float
        The same ratio of median wall times (noisier on a shared machine).
    model_file, reduced_file : str
    """

    weight: float
    n_states: int
    n_reduced: int
    constant: int
    unread: int
    closed_form: int
    placeholder: bool
    test_accuracy: float
    max_abs_diff: float
    time_original_ms: float
    time_reduced_ms: float
    speedup: float
    speedup_wall: float
    model_file: str
    reduced_file: str


@dataclass(frozen=True)
class LowRankRow:
    """One (model, rank) of the low-rank demo (section 5.3, Theorem 5.1).

    Attributes
    ----------
    weight : float
        Nuclear-norm weight of the model that was truncated.
    rank : int
    certified : bool
        ``lambda_PF(|R|^T |L|) < 1`` (the factored iteration is certified); otherwise it
        was run with ``force=True``.
    pf_factored : float
        ``lambda_PF(|R|^T |L|)``.
    converged : bool
        The factored iteration converged on every input.
    test_accuracy : float
        Of the truncated model.
    state_error, output_error : float
        Measured ``max |x - x0|`` and ``max |y - y0|`` on the test images (x: original,
        x0: truncated).
    state_bound, output_bound : float or None
        Largest entry of the Theorem 5.1 bound on the same images; None when the theorem
        does not apply.
    bound_pf : float
        ``lambda_PF(|A0| + E)`` (the theorem needs < 1).
    bound_violations : int
        Entries where the measured error exceeds the bound by more than 1e-9 (0 when the
        bound holds; 0 also when there is no bound).
    time_dense_ms, time_low_rank_ms, speedup : float
        Median CPU times of one predict of the original and of the factored model, and
        their ratio.
    speedup_wall : float
        The same ratio of median wall times (noisier on a shared machine).
    iterations_dense, iterations_low_rank : int
        Fixed-point iterations of one predict on the timing inputs.
    """

    weight: float
    rank: int
    certified: bool
    pf_factored: float
    converged: bool
    test_accuracy: float
    state_error: float
    output_error: float
    state_bound: float | None
    output_bound: float | None
    bound_pf: float
    bound_violations: int
    time_dense_ms: float
    time_low_rank_ms: float
    speedup: float
    speedup_wall: float
    iterations_dense: int
    iterations_low_rank: int


@dataclass(frozen=True)
class RobustRow:
    """One weight of the robust-training demo (section 4.3).

    Attributes
    ----------
    weight : float
    rho : float
        ``fenchel_idl.analysis.robustness.lipschitz_bound(model)``.
    sensitivity_inf : float
        ``||S||_inf`` (largest row sum of ``sensitivity_matrix(model)``, Thm 4.2).
    penalty_bound : float
        The convex bound (4.7) at the model (>= rho).
    local_gain : float
        Largest ``||dy/du||_inf`` (the Jacobian at the equilibrium) over the test images: a
        lower bound on the true Lipschitz constant, so ``local_gain <= sensitivity_inf <=
        rho``.
    state_path_share : float
        Share of rho due to the implicit part, ``||B||_inf ||C||_inf / (1 - ||A||_inf) /
        rho`` (the rest is ``||D||_inf``, the linear part).
    train_accuracy, test_accuracy : float
    blocks_certified : bool or None
        Every BCD block solve certified (None for refinement).
    model_file : str
    """

    weight: float
    rho: float
    sensitivity_inf: float
    penalty_bound: float
    local_gain: float
    state_path_share: float
    train_accuracy: float
    test_accuracy: float
    blocks_certified: bool | None
    model_file: str


@dataclass(frozen=True)
class DemoReport:
    """What one demo did and measured.

    Attributes
    ----------
    name : str
        One of :data:`DEMOS`.
    title : str
    problem : str
        The problem file.
    quick : bool
    settings : mapping
        The settings used (sizes, method, options), for the report.
    trained : tuple of TrainedModel
    rows : tuple
        The demo's table: :class:`FeatureSelectionRow`, :class:`RowSparsityRow`,
        :class:`LowRankRow` or :class:`RobustRow` records.
    figures : tuple of str
        PNG files, relative to the output directory.
    notes : tuple of str
        Findings, computed from the rows (including where an effect did not show).
    seconds : float
    """

    name: str
    title: str
    problem: str
    quick: bool
    settings: Mapping[str, Any]
    trained: tuple[TrainedModel, ...]
    rows: tuple[Any, ...]
    figures: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {"name": self.name, "title": self.title, "problem": self.problem,
                "quick": self.quick, "settings": dict(self.settings),
                "trained": [dataclasses.asdict(t) for t in self.trained],
                "rows": [dataclasses.asdict(r) for r in self.rows],
                "figures": list(self.figures), "notes": list(self.notes),
                "seconds": self.seconds}

    def to_markdown(self) -> str:
        """A section of the report: settings, trained models, table, figures, notes."""
        lines = [f"## {self.title}", "", f"Problem file: `{_shown_path(self.problem)}`"
                 + (" (quick settings)" if self.quick else "") + ".", ""]
        lines += [f"- {k}: {_fmt_setting(v)}" for k, v in self.settings.items()]
        lines += ["", "Trained models:", "",
                  _table(["weight", "train acc", "test acc", "time (s)", "file", "how"],
                         [[_g(t.weight), _pct(t.train_accuracy), _pct(t.test_accuracy),
                           f"{t.seconds:.1f}", f"`{t.file}`", t.note] for t in self.trained]),
                  ""]
        lines += [_ROW_TABLES[self.name](self.rows), ""]
        lines += [f"![{f}]({f})" for f in self.figures]
        if self.notes:
            lines += ["", "Findings:", ""] + [f"- {n}" for n in self.notes]
        lines += ["", f"Time: {self.seconds:.1f} s.", ""]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# formatting
# ------------------------------------------------------------------------------------------
def _shown_path(path: str) -> str:
    """The path relative to the working directory when it lies below it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path


def _g(x: float) -> str:
    return f"{x:g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _fmt_setting(v: Any) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k} = {_fmt_setting(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_setting(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(c: Any) -> str:  # a literal bar inside a cell must be escaped
        return str(c).replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _feature_selection_table(rows: Sequence[FeatureSelectionRow]) -> str:
    return _table(["weight", "pixels kept (of 64)", "train acc", "test acc",
                   "test acc, refit on kept pixels", "mask"],
                  [[_g(r.weight), str(r.n_features), _pct(r.train_accuracy),
                    _pct(r.test_accuracy), _pct(r.refit_test_accuracy),
                    f"`{r.mask_file}`"] for r in rows])


def _row_sparsity_table(rows: Sequence[RowSparsityRow]) -> str:
    return _table(["weight", "states", "after reduce", "removed (constant / unread)",
                   "test acc", "max abs diff", "predict CPU ms original / reduced",
                   "speed-up (CPU)", "speed-up (wall)"],
                  [[_g(r.weight), str(r.n_states),
                    "0 (1 inert placeholder)" if r.placeholder else str(r.n_reduced),
                    f"{r.constant} / {r.unread}", _pct(r.test_accuracy),
                    f"{r.max_abs_diff:.1e}",
                    f"{r.time_original_ms:.1f} / {r.time_reduced_ms:.1f}",
                    f"{r.speedup:.2f}x", f"{r.speedup_wall:.2f}x"] for r in rows])


def _low_rank_table(rows: Sequence[LowRankRow]) -> str:
    def bound(r: LowRankRow, b: float | None) -> str:
        return _e(b) if b is not None else f"n/a (lambda_PF = {r.bound_pf:.3g} >= 1)"

    return _table(["weight", "rank", "test acc", "max |x - x0|", "Thm 5.1 bound",
                   "max |y - y0|", "Thm 5.1 bound", "violations",
                   "factored certified (lambda_PF)", "predict CPU ms dense / factored",
                   "speed-up (CPU)", "speed-up (wall)", "iterations dense / factored"],
                  [[_g(r.weight), str(r.rank), _pct(r.test_accuracy), _e(r.state_error),
                    bound(r, r.state_bound), _e(r.output_error), bound(r, r.output_bound),
                    str(r.bound_violations),
                    f"{'yes' if r.certified else 'no, force=True'} ({r.pf_factored:.3g})",
                    f"{r.time_dense_ms:.1f} / {r.time_low_rank_ms:.1f}",
                    f"{r.speedup:.2f}x", f"{r.speedup_wall:.2f}x",
                    f"{r.iterations_dense} / {r.iterations_low_rank}"
                    + ("" if r.converged else " (not converged)")] for r in rows])


def _robust_table(rows: Sequence[RobustRow]) -> str:
    return _table(["weight", "rho (Lipschitz bound)", "||S||_inf", "bound (4.7)",
                   "largest local gain", "implicit share of rho", "train acc", "test acc",
                   "blocks certified"],
                  [[_g(r.weight), f"{r.rho:.4g}", f"{r.sensitivity_inf:.4g}",
                    f"{r.penalty_bound:.4g}", f"{r.local_gain:.4g}",
                    f"{100 * r.state_path_share:.0f}%",
                    _pct(r.train_accuracy), _pct(r.test_accuracy),
                    "-" if r.blocks_certified is None else str(r.blocks_certified)]
                   for r in rows])


_ROW_TABLES: dict[str, Callable[[Any], str]] = {
    "feature_selection": _feature_selection_table, "row_sparsity": _row_sparsity_table,
    "low_rank": _low_rank_table, "robust": _robust_table}


# ------------------------------------------------------------------------------------------
# settings: the problem file and its [demo] table
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Settings:
    kind: str
    spec: Any  # ProblemSpec, with the quick overrides applied
    weights: tuple[float, ...]
    train: str
    train_samples: int | None
    init_scale: float
    extra: Mapping[str, Any] = field(default_factory=dict)


def _problem_path(kind: str, problem: Any) -> Path:
    if problem is None:
        return common.problems_dir() / f"{kind}_digits.toml"
    if not isinstance(problem, (str, Path)):
        raise InputTypeError(f"'problem' must be a path to a problem file or None; got "
                             f"{type(problem).__name__}.")
    return Path(problem)


def _settings(kind: str, problem: Any, quick: Any) -> _Settings:
    """Load the problem file, check its [demo] table and apply the quick overrides."""
    if not isinstance(quick, (bool, np.bool_)):
        raise InputTypeError(f"'quick' must be a bool; got {describe(quick)}.")
    path = _problem_path(kind, problem)
    where = f"problem file {str(path)!r}"
    spec, demo = _demo_table(kind, load_problem(path), where, bool(quick))
    _check_penalty(kind, spec, where)
    weights = demo.get("weights")
    if not isinstance(weights, list) or not weights:
        raise ValidationError(f"{where}: [demo] weights must be a non-empty array of numbers "
                              f">= 0; got {describe(weights)}.")
    weights_t = tuple(check_real("[demo] weights", w, 0.0, None) for w in weights)
    train = demo.get("train", "refine")
    if train not in ("refine", "bcd"):
        raise ValidationError(f"{where}: [demo] train must be 'refine' or 'bcd'; got "
                              f"{train!r}.")
    if train == "refine" and spec.refine is None:
        raise ValidationError(f"{where}: [demo] train = 'refine' needs a [refine] table (the "
                              "options of fenchel_idl.drivers.refine.refine).")
    samples = demo.get("train_samples")
    if samples is not None:
        samples = check_int("[demo] train_samples", samples, low=10)
    scale = check_real("[demo] init_scale", demo.get("init_scale", 1.0), 0.0, None,
                       low_open=True)
    return _Settings(kind=kind, spec=spec, weights=weights_t, train=train,
                     train_samples=samples, init_scale=scale,
                     extra=_extra_settings(kind, demo, spec, where))


def _demo_table(kind: str, spec: Any, where: str, quick: bool) -> tuple[Any, dict[str, Any]]:
    """The checked [demo] table of a problem file; with ``quick``, its [demo.quick]
    overrides applied to the spec's tables and to the demo settings."""
    demo = spec.demo
    if demo is None:
        raise ValidationError(f"{where} has no [demo] table; a demo file needs [demo] with "
                              f"kind = {kind!r} and weights = [...].")
    if demo.get("kind") != kind:
        raise ValidationError(f"{where}: [demo] kind must be {kind!r} for this demo; got "
                              f"{demo.get('kind')!r}.")
    allowed = _COMMON_KEYS | _EXTRA_KEYS[kind]
    _check_keys(where, "demo", demo, allowed)
    demo = {k: v for k, v in demo.items() if k != "quick"}
    quick_table = spec.demo.get("quick", {})
    if not isinstance(quick_table, Mapping):
        raise ValidationError(f"{where}: [demo.quick] must be a table; got "
                              f"{describe(quick_table)}.")
    _check_keys(where, "demo.quick", quick_table,
                (allowed - {"kind", "quick"}) | set(_QUICK_TABLES))
    if quick:
        changes: dict[str, Any] = {}
        for key in _QUICK_TABLES:
            if key in quick_table:
                patch = quick_table[key]
                if not isinstance(patch, Mapping):
                    raise ValidationError(f"{where}: [demo.quick] {key} must be a table; got "
                                          f"{describe(patch)}.")
                changes[key] = {**(getattr(spec, key) or {}), **patch}
        spec = dataclasses.replace(spec, **changes)
        demo.update({k: v for k, v in quick_table.items() if k not in _QUICK_TABLES})
    return spec, demo


def _check_penalty(kind: str, spec: Any, where: str) -> None:
    """The first [[penalties]] entry is the one the demo sweeps, and it is valid."""
    if not spec.penalties or not isinstance(spec.penalties[0], Mapping):
        raise ValidationError(f"{where}: the demo sweeps the weight of the first "
                              f"[[penalties]] entry; the file has none.")
    pname = spec.penalties[0].get("name")
    if pname != _PENALTY[kind]:
        raise ValidationError(f"{where}: the first [[penalties]] entry of a {kind!r} demo must "
                              f"be {_PENALTY[kind]!r}; got {pname!r}.")
    get_penalty(dict(spec.penalties[0]))  # its other options are valid


def _extra_settings(kind: str, demo: dict[str, Any], spec: Any, where: str) -> dict[str, Any]:
    """The checked [demo] keys of one kind of demo (refit epochs, timing repeats, ranks)."""
    extra: dict[str, Any] = {}
    if kind == "feature_selection":
        extra["refit_epochs"] = check_int("[demo] refit_epochs", demo.get("refit_epochs", 0),
                                          low=0)
    if kind in ("row_sparsity", "low_rank"):
        extra["timing_repeats"] = check_int("[demo] timing_repeats",
                                            demo.get("timing_repeats", 11), low=1)
    if kind == "row_sparsity":
        extra["check_samples"] = check_int("[demo] check_samples",
                                           demo.get("check_samples", 200), low=0)
    if kind == "low_rank":
        ranks = demo.get("ranks")
        if not isinstance(ranks, list) or not ranks:
            raise ValidationError(f"{where}: [demo] ranks must be a non-empty array of "
                                  f"integers >= 1; got {describe(ranks)}.")
        n = int(spec.model["n"])
        ranks_t = sorted({check_int("[demo] ranks", k, low=1) for k in ranks})
        if ranks_t[-1] > n:
            raise ValidationError(f"{where}: [demo] ranks must be at most n = {n}; got "
                                  f"{ranks_t[-1]}.")
        extra["ranks"] = tuple(ranks_t)
    return extra


def _check_keys(where: str, table: str, values: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValidationError(f"{where}: [{table}] keys must be among {sorted(allowed)}; got "
                              f"{unknown}.")


# ------------------------------------------------------------------------------------------
# data, training, measurements
# ------------------------------------------------------------------------------------------
def _data(st: _Settings) -> tuple[Any, Any]:
    """(train, test) Datasets of a classification problem file."""
    train, test = load_data(st.spec)
    where = f"problem file {st.spec.path!r}"
    if test is None:
        raise ValidationError(f"{where}: a demo needs a test set; add [data] test_fraction "
                              "(or test_split for MNIST-like sets).")
    if train.labels is None:
        raise ValidationError(f"{where}: the demos need a classification data set (labels); "
                              f"got {train.name!r}.")
    k = st.train_samples
    if k is not None and k < train.m:
        train, _ = datasets.train_test_split(train, 1.0 - k / train.m, seed=st.spec.seed)
    return train, test


def _accuracy(model: Any, U: Array, labels: Any, **options: Any) -> float:
    """Accuracy of ``model`` on the inputs ``U`` (``options`` go to its ``predict``)."""
    return score(model, U, labels, "classification", **options)


def _penalties(st: _Settings, weight: float) -> list[dict[str, Any]]:
    first = dict(st.spec.penalties[0], weight=float(weight))
    rest = [dict(p) for p in st.spec.penalties[1:]]
    return ([first] if weight > 0 else []) + rest


def _refine_options(spec: Any, **changes: Any) -> tuple[float, dict[str, Any]]:
    opts = dict(spec.refine or {})
    kappa = float(opts.pop("kappa", spec.model.get("kappa", 0.5)))
    opts.update(changes)
    return kappa, opts


def _warn_note(caught: list[warnings.WarningMessage]) -> str:
    if not caught:
        return ""
    kinds = sorted({w.category.__name__ for w in caught})
    first = str(caught[0].message).split(". ")[0]
    return f"; {len(caught)} warning(s) ({', '.join(kinds)}): {first}"


def _fit(st: _Settings, train: Any, weight: float) -> tuple[ImplicitModel, float, str, Any]:
    """Train one model at one penalty weight; returns (model, seconds, note, certified)."""
    spec = st.spec
    pens = _penalties(st, weight)
    loss = spec.training.get("loss", "squared")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if st.train == "refine":
            kappa, opts = _refine_options(spec)
            m0 = init_random(p=train.p, q=train.q, n=int(spec.model["n"]), kappa=kappa,
                             activation=spec.model.get("activation", "relu"), seed=spec.seed,
                             scale=st.init_scale)
            res = refine(m0, train.U, train.Y, loss=loss, penalties=pens, kappa=kappa, **opts)
            model, certified = res.model, None
            note = (f"refine from a random start: {len(res.history)} epochs, "
                    f"{opts.get('optimizer', 'adam')}, lr {opts.get('lr', 1e-3):g}, "
                    f"{loss} loss")
        else:
            problem = build_problem(dataclasses.replace(spec, penalties=pens), train)
            res_b = solve_bcd(problem, **bcd_options(spec))
            model = res_b.model
            certified = bool(res_b.certificate.blocks_certified)
            note = (f"BCD: {res_b.n_sweeps} sweep(s), {problem.loss.name} loss, blocks "
                    f"certified: {certified}"
                    + (", then refinement" if spec.refine is not None else ""))
    seconds = time.perf_counter() - t0
    return model, seconds, note + _warn_note(list(caught)), certified


@dataclass(frozen=True)
class _Timing:
    cpu: tuple[float, ...]   # median CPU seconds (time.process_time) of each callable
    wall: tuple[float, ...]  # median wall seconds (time.perf_counter)


def _median_times(fns: Sequence[Callable[[], Any]], repeats: int) -> _Timing:
    """Median CPU and wall time of each callable: one warm-up call each, then ``repeats``
    rounds in which they run in turn (so load changes hit all of them), BLAS on one thread.

    CPU time of the process is what the ratios use: on a shared machine the wall time of a
    call of a few milliseconds jumps by a factor of up to 5 whenever the process is
    descheduled; its CPU time does not."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in fns:
            f()
        cpu: list[list[float]] = [[] for _ in fns]
        wall: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for c, w, f in zip(cpu, wall, fns):
                c0, w0 = time.process_time(), time.perf_counter()
                f()
                c.append(time.process_time() - c0)
                w.append(time.perf_counter() - w0)
    return _Timing(cpu=tuple(max(float(np.median(c)), 1e-9) for c in cpu),
                   wall=tuple(max(float(np.median(w)), 1e-9) for w in wall))


def _local_gain(model: ImplicitModel, U: Array) -> float:
    """Largest ``||J(u)||_inf`` over the columns of U, where ``J = dy/du`` is the Jacobian
    at the equilibrium: ``C (I - diag(phi'(z)) A)^{-1} diag(phi'(z)) B + D``."""
    X, _ = model.equilibrium(U, **_TIGHT, on_nonconvergence="ignore")
    Z = model.A @ X + model.B @ U + model.bias_x[:, None]
    G = model.activation.derivative(Z)
    eye = np.eye(model.n)
    best = 0.0
    for j in range(U.shape[1]):
        g = G[:, j][:, None]
        J = model.C @ np.linalg.solve(eye - g * model.A, g * model.B) + model.D
        best = max(best, float(np.abs(J).sum(axis=1).max()))
    return best


def _save(model: ImplicitModel, out: Path, name: str) -> str:
    rel = Path("models") / name
    model.save(out / rel)
    return rel.as_posix()


def _check_out(out: Any) -> Path:
    if not isinstance(out, (str, Path)):
        raise InputTypeError(f"'out' must be a directory path; got {describe(out)}.")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValidationError(f"'out' must be a directory; {str(path)!r} is a file.")
    (path / "models").mkdir(parents=True, exist_ok=True)
    return path


def _start(name: str, out: Any, problem: Any, quick: Any) -> tuple:
    """What every demo does first: (start time, checked output directory, settings,
    training set, test set)."""
    t_start = time.perf_counter()
    out = _check_out(out)
    st = _settings(name, problem, quick)
    train, test = _data(st)
    return t_start, out, st, train, test


def _bar(progress: Any, total: int, desc: str) -> Any:
    if not isinstance(progress, (bool, np.bool_)):
        raise InputTypeError(f"'progress' must be a bool; got {describe(progress)}.")
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None if progress else True,
                leave=True)


def _base_settings(st: _Settings, train: Any, test: Any) -> dict[str, Any]:
    spec = st.spec
    out: dict[str, Any] = {
        "data": f"{spec.data.get('source')}: {train.m} training / {test.m} test images, "
                f"p = {train.p} pixels, q = {train.q} classes",
        "model": f"n = {spec.model['n']}, {spec.model.get('activation', 'relu')}, "
                 f"kappa = {spec.model.get('kappa', 0.5)}",
        "loss": spec.training.get("loss", "squared") + " (on one-hot label columns)"
                if spec.training.get("loss", "squared") == "squared"
                else spec.training.get("loss"),
        "penalty swept": " ".join([_PENALTY[st.kind]] + [
            f"({_fmt_setting(opts)})" for opts in [{k: v for k, v in spec.penalties[0].items()
                                                     if k not in ("name", "weight")}] if opts]),
        "weights": list(st.weights),
    }
    if st.train == "refine":
        kappa, opts = _refine_options(spec)
        out["training"] = ("projected proximal gradient (fenchel_idl.drivers.refine) from "
                           f"init_random(scale={st.init_scale:g}, seed={spec.seed}), "
                           f"kappa = {kappa:g}; " + _fmt_setting(opts))
    else:
        tr = spec.training
        out["training"] = (f"BCD (solve_bcd): max_sweeps = {tr.get('max_sweeps', 40)}, "
                           f"lam = {tr.get('lam', 1.0)}, standardize = "
                           f"{tr.get('standardize', True)}, schedule "
                           f"{_fmt_setting(spec.schedule or {})}"
                           + ("" if spec.refine is None else
                              f"; refinement {_fmt_setting(spec.refine)}"))
    return out


def _plain_log(ax: Any, which: str = "y") -> None:
    """Ticks of a log axis at 1, 2, 5 x 10^k inside its current limits, as plain numbers."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lim = ax.get_ylim() if which == "y" else ax.get_xlim()
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), tuple(range(1, 10))):
        ticks = [c for c in (m * 10.0 ** e for e in range(-6, 7) for m in subs)
                 if lim[0] <= c <= lim[1]]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:
        return
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_ticks(ticks)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    (ax.set_ylim if which == "y" else ax.set_xlim)(lim)


def _save_figure(plt: Any, fig: Any, path: Path) -> str:
    """Lay out, save (110 dpi) and close a figure; return its file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _accuracy_limits(ax: Any, values: Sequence[float]) -> None:
    """An accuracy axis (in %) wide enough that small differences do not look large."""
    lo = min(values)
    ax.set_ylim(max(0.0, min(lo - 2.0, 100.0 - 12.0)), 100.5)


def _weight_labels(weights: Sequence[float]) -> list[str]:
    return [f"{w:g}" for w in weights]


def _one_blas_thread(fn: Callable[..., DemoReport]) -> Callable[..., DemoReport]:
    """Run a demo with BLAS limited to one thread (OpenBLAS workers that spin after a
    multi-threaded call would otherwise burn CPU time inside the timed calls)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> DemoReport:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------
# (a) feature selection, section 5.1
# ------------------------------------------------------------------------------------------
_MASK_SCALE = 16


def _save_mask(mask: NDArray[np.bool_], shape: tuple[int, int], path: Path) -> None:
    """An exact mask PNG: each input pixel is a _MASK_SCALE x _MASK_SCALE block, white when
    selected."""
    plt = pyplot()
    img = np.kron(mask.reshape(shape).astype(float), np.ones((_MASK_SCALE, _MASK_SCALE)))
    plt.imsave(path, img, cmap="gray", vmin=0.0, vmax=1.0)


@_one_blas_thread
def feature_selection_demo(out: str | Path, problem: str | Path | None = None, *,
                           quick: bool = False, progress: bool = False) -> DemoReport:
    """Feature selection by the column norms of (B; D) (section 5.1, penalty (5.1)).

    For every weight of the file's ``[demo] weights``: train, list the inputs whose column of
    (B; D) is not zero (:func:`fenchel_idl.selected_features`, tol 0: the proximal operator
    makes exact zeros), measure the accuracy, optionally retrain without penalty on the
    kept pixels only (``refit_epochs``), and save the model and an exact mask PNG.

    Parameters
    ----------
    out : str or Path
        Output directory (created); figures go there, models to ``out/models``.
    problem : str or Path, optional
        Problem file with a ``[demo]`` table of kind "feature_selection"; default
        ``problems/feature_selection_digits.toml``.
    quick : bool, default False
        Apply the ``[demo.quick]`` overrides (a smoke test).
    progress : bool, default False
        Show a tqdm progress bar.

    Returns
    -------
    DemoReport
        Rows are :class:`FeatureSelectionRow`; figures ``feature_selection_masks.png`` and
        ``feature_selection_accuracy.png``.

    Raises
    ------
    InputTypeError
        ``out``, ``problem``, ``quick`` or ``progress`` of the wrong type.
    ValidationError
        A bad problem file or ``[demo]`` table (the message names the key).
    """
    t_start, out, st, train, test = _start("feature_selection", out, problem, quick)
    shape = tuple(train.image_shape or (train.p, 1))
    if len(shape) != 2:
        raise ValidationError(f"feature selection masks need 2-D images; got image_shape "
                              f"{shape}.")
    refit_epochs = st.extra["refit_epochs"]
    bar = _bar(progress, len(st.weights) * (2 if refit_epochs else 1), "feature_selection")
    trained, rows = [], []
    with bar:
        for i, w in enumerate(st.weights):
            model, secs, note, _ = _fit(st, train, w)
            bar.update(1)
            sel = selected_features(model)
            tr_acc = _accuracy(model, train.U, train.labels)
            te_acc = _accuracy(model, test.U, test.labels)
            mfile = _save(model, out, f"feature_selection_{i}.npz")
            trained.append(TrainedModel(w, mfile, secs, tr_acc, te_acc, note))
            refit = None
            if refit_epochs and sel.size:
                kappa, opts = _refine_options(st.spec, epochs=refit_epochs)
                sub = ImplicitModel(A=model.A, B=model.B[:, sel], C=model.C,
                                    D=model.D[:, sel], activation=model.activation,
                                    bias_x=model.bias_x, bias_y=model.bias_y)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = refine(sub, train.U[sel], train.Y,
                                 loss=st.spec.training.get("loss", "squared"), kappa=kappa,
                                 **opts)
                refit = _accuracy(res.model, test.U[sel], test.labels)
            if refit_epochs:
                bar.update(1)
            mask = np.zeros(train.p, dtype=bool)
            mask[sel] = True
            mask_file = f"feature_selection_mask_{i}.png"
            _save_mask(mask, shape, out / mask_file)
            rows.append(FeatureSelectionRow(
                weight=w, n_features=int(sel.size), features=tuple(int(j) for j in sel),
                train_accuracy=tr_acc, test_accuracy=te_acc, refit_test_accuracy=refit,
                mask_file=mask_file, mask_scale=_MASK_SCALE, model_file=mfile))
    figures = (_plot_masks(rows, train, shape, out / "feature_selection_masks.png"),
               _plot_feature_accuracy(rows, train.p, out / "feature_selection_accuracy.png"))
    settings = _base_settings(st, train, test)
    settings["refit"] = (f"{refit_epochs} epochs without penalty on the kept pixels only, "
                         "from the penalized model's weights" if refit_epochs else "off")
    return DemoReport(name="feature_selection",
                      title="Feature selection on the digits (section 5.1, penalty (5.1))",
                      problem=st.spec.path, quick=bool(quick), settings=settings,
                      trained=tuple(trained), rows=tuple(rows), figures=figures,
                      notes=tuple(_feature_selection_notes(rows, train.p)),
                      seconds=time.perf_counter() - t_start)


def _feature_selection_notes(rows: Sequence[FeatureSelectionRow], p: int) -> list[str]:
    notes = []
    fewest = min(rows, key=lambda r: (r.n_features, -r.weight))
    if fewest.n_features == max(r.n_features for r in rows):
        notes.append(f"The penalty did not remove more pixels at any weight: every model keeps "
                     f"{fewest.n_features} of {p}.")
    else:
        base = rows[0]
        notes.append(f"Pixels kept fall from {base.n_features} of {p} (weight {base.weight:g}) "
                     f"to {fewest.n_features} (weight {fewest.weight:g}); the penalized "
                     f"model's test accuracy goes from {_pct(base.test_accuracy)} to "
                     f"{_pct(fewest.test_accuracy)}"
                     + (f", and {_pct(fewest.refit_test_accuracy)} after retraining on the "
                        "kept pixels." if fewest.refit_test_accuracy is not None else "."))
    nonmono = [b for a, b in pairwise(rows) if b.weight > a.weight
               and b.n_features > a.n_features]
    if nonmono:
        notes.append("The number of kept pixels is not monotone in the weight at weight(s) "
                     + ", ".join(f"{r.weight:g}" for r in nonmono)
                     + " (the runs are not converged to the penalized optimum).")
    refits = [r for r in rows if r.refit_test_accuracy is not None]
    if refits:
        gain = [r.refit_test_accuracy - r.test_accuracy for r in refits]  # type: ignore
        notes.append("Retraining without penalty on the kept pixels changes the test accuracy "
                     f"by {min(gain) * 100:+.1f} to {max(gain) * 100:+.1f} points: the "
                     "penalty also shrinks the weights of the pixels it keeps.")
    return notes


def _plot_masks(rows: Sequence[FeatureSelectionRow], train: Any, shape: tuple[int, int],
                path: Path) -> str:
    plt = pyplot()
    k = len(rows) + 1
    ncols = min(k, 4)
    nrows = -(-k // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.9 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    axes = axes.reshape(1, -1)[:, :k]
    ax = axes[0, 0]
    ax.imshow(np.asarray(train.U).mean(axis=1).reshape(shape), cmap="gray",
              interpolation="nearest")
    ax.set_title("mean training\nimage", fontsize=8)
    mean = np.asarray(train.U).mean(axis=1)
    for ax, r in zip(axes[0, 1:], rows):
        mask = np.zeros(train.p, dtype=bool)
        mask[list(r.features)] = True
        img = np.zeros(shape + (3,))
        img[mask.reshape(shape)] = (1.0, 0.85, 0.2)
        # faint outline of the mean digit under the dropped pixels
        dim = 0.35 * (mean / max(mean.max(), 1e-12)).reshape(shape)
        img[~mask.reshape(shape)] = np.stack([dim[~mask.reshape(shape)]] * 3, axis=-1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"w = {r.weight:g}\n{r.n_features} px, test {_pct(r.test_accuracy)}",
                     fontsize=8)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Selected pixels (yellow) by weight of the column-norm penalty on (B; D)\n"
                 "dropped pixels show the mean digit, dimmed", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, wspace=0.1, hspace=0.3,
                        top=1 - 0.75 / fig.get_figheight())
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _plot_feature_accuracy(rows: Sequence[FeatureSelectionRow], p: int, path: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    k = [r.n_features for r in rows]
    ax.plot(k, [100 * r.test_accuracy for r in rows], "o-", label="penalized model")
    refit = [(r.n_features, 100 * r.refit_test_accuracy) for r in rows
             if r.refit_test_accuracy is not None]
    if refit:
        ax.plot(*zip(*refit), "s--", label="retrained on the kept pixels")
    for r in rows:
        ax.annotate(f"w={r.weight:g}", (r.n_features, 100 * r.test_accuracy),
                    textcoords="offset points", xytext=(4, -11), fontsize=7)
    ax.set_xlabel(f"pixels kept (of {p})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-1, p + 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Feature selection on the digits: accuracy against pixels kept", fontsize=10)
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------------------------------
# (b) row sparsity, section 5.2
# ------------------------------------------------------------------------------------------
@_one_blas_thread
def row_sparsity_demo(out: str | Path, problem: str | Path | None = None, *,
                      quick: bool = False, progress: bool = False) -> DemoReport:
    """Row sparsity of (A, B) and :func:`fenchel_idl.reduce` (section 5.2).

    For every weight: train with the row norms of (A, B), reduce the model, check that it
    predicts what the original predicts (largest ``|y - y_reduced|`` on the test images and
    ``check_samples`` random inputs in [0, 1]^p, equilibria to a relative tolerance of
    1e-12) and time ``predict`` of both on all images (median of ``timing_repeats``
    interleaved runs, one BLAS thread).

    Parameters
    ----------
    out : str or Path
        Output directory.
    problem : str or Path, optional
        Default ``problems/row_sparsity_digits.toml``.
    quick : bool, default False
    progress : bool, default False

    Returns
    -------
    DemoReport
        Rows are :class:`RowSparsityRow`; figure ``row_sparsity.png``.

    Raises
    ------
    InputTypeError, ValidationError
        As :func:`feature_selection_demo`.
    """
    t_start, out, st, train, test = _start("row_sparsity", out, problem, quick)
    repeats, n_check = st.extra["timing_repeats"], st.extra["check_samples"]
    rng = np.random.default_rng(st.spec.seed)
    U_check = np.hstack([np.asarray(test.U), rng.uniform(0.0, 1.0, (train.p, n_check))])
    U_time = np.hstack([np.asarray(train.U), np.asarray(test.U)])
    bar = _bar(progress, 2 * len(st.weights), "row_sparsity")
    trained, rows = [], []
    with bar:
        for i, w in enumerate(st.weights):
            model, secs, note, _ = _fit(st, train, w)
            bar.update(1)
            red = reduce(model)
            small = red.model
            diff = float(np.max(np.abs(model.predict(U_check, **_TIGHT)
                                       - small.predict(U_check, **_TIGHT))))
            tm = _median_times([lambda m=model: m.predict(U_time),
                                lambda m=small: m.predict(U_time)], repeats)
            (t_full, t_small), (w_full, w_small) = tm.cpu, tm.wall
            te_acc = _accuracy(model, test.U, test.labels)
            mfile = _save(model, out, f"row_sparsity_{i}.npz")
            rfile = _save(small, out, f"row_sparsity_{i}_reduced.npz")
            trained.append(TrainedModel(w, mfile, secs, _accuracy(model, train.U, train.labels),
                                        te_acc, note))
            rows.append(RowSparsityRow(
                weight=w, n_states=model.n, n_reduced=small.n,
                constant=sum(r.kind == "constant" for r in red.removed),
                unread=sum(r.kind == "unread" for r in red.removed),
                closed_form=len(red.closed_form), placeholder=bool(red.placeholder),
                test_accuracy=te_acc, max_abs_diff=diff,
                time_original_ms=1e3 * t_full, time_reduced_ms=1e3 * t_small,
                speedup=t_full / t_small, speedup_wall=w_full / w_small, model_file=mfile,
                reduced_file=rfile))
            bar.update(1)
    figures = (_plot_row_sparsity(rows, out / "row_sparsity.png"),)
    settings = _base_settings(st, train, test)
    settings["equivalence check"] = (f"the {test.m} test images and {n_check} random inputs "
                                     "in [0, 1]^p, equilibria to relative tolerance 1e-12")
    settings["timing"] = (f"predict on all {U_time.shape[1]} images, default tolerance; "
                          f"median CPU time (and wall time) of {repeats} interleaved runs, "
                          "one BLAS thread")
    return DemoReport(name="row_sparsity",
                      title="Row sparsity and model reduction (section 5.2)",
                      problem=st.spec.path, quick=bool(quick), settings=settings,
                      trained=tuple(trained), rows=tuple(rows), figures=figures,
                      notes=tuple(_row_sparsity_notes(rows)), seconds=time.perf_counter() - t_start)


def _row_sparsity_notes(rows: Sequence[RowSparsityRow]) -> list[str]:
    notes = []
    worst = max(r.max_abs_diff for r in rows)
    notes.append(f"The reduced models predict what the originals predict: the largest "
                 f"difference over all weights is {worst:.1e}.")
    reduced = [r for r in rows if r.n_reduced < r.n_states and not r.placeholder]
    if not reduced and not any(r.placeholder for r in rows):
        notes.append("No state was removed at any weight: the penalty did not make a whole row "
                     "of (A, B) zero here.")
    for r in reduced:
        notes.append(f"Weight {r.weight:g}: {r.constant + r.unread} of {r.n_states} states "
                     f"removed ({r.n_reduced} left), predict {r.speedup:.2f}x faster (CPU "
                     f"time), test accuracy {_pct(r.test_accuracy)} (unpenalized "
                     f"{_pct(rows[0].test_accuracy)}).")
    for r in rows:
        if r.placeholder:
            notes.append(f"Weight {r.weight:g}: every state is removed; the model is the linear "
                         f"map D u + bias (test accuracy {_pct(r.test_accuracy)}), so its "
                         f"{r.speedup:.0f}x says nothing about implicit models.")
    first = rows[0]
    faster = [r for r in rows[1:] if r.time_original_ms < 0.8 * first.time_original_ms]
    if faster:
        notes.append("The original models with dead states also predict faster than the "
                     f"unpenalized one ({first.time_original_ms:.1f} ms): the equilibrium solver "
                     "computes states with a zero row of A directly (structure analysis), so "
                     "the speed-ups above are against a baseline that already exploits the "
                     "sparsity.")
    slow = [r for r in rows if r.speedup < 1.0]
    if slow:
        notes.append("Ratios below 1 where nothing or little was removed are timing noise "
                     "(the machine is shared): " + ", ".join(
                         f"{r.speedup:.2f}x at weight {r.weight:g}" for r in slow) + ".")
    return notes


def _plot_row_sparsity(rows: Sequence[RowSparsityRow], path: Path) -> str:
    plt = pyplot()
    x = np.arange(len(rows))
    labels = _weight_labels([r.weight for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    kept = [0 if r.placeholder else r.n_reduced for r in rows]
    ax.bar(x, kept, color="tab:blue", label="states after reduce()")
    ax.axhline(rows[0].n_states, color="k", ls=":", lw=1, label=f"n = {rows[0].n_states}")
    for xi, k, r in zip(x, kept, rows):
        ax.text(xi, k, "0 (linear)" if r.placeholder else str(k), ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("weight of the row-norm penalty on (A, B)")
    ax.set_ylabel("states")
    ax2 = ax.twinx()
    ax2.plot(x, [100 * r.test_accuracy for r in rows], "o-", color="tab:red",
             label="test accuracy")
    ax2.set_ylabel("test accuracy (%)", color="tab:red")
    _accuracy_limits(ax2, [100 * r.test_accuracy for r in rows])
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    ax.set_title("states kept and accuracy", fontsize=10)
    ax = axes[1]
    ax.bar(x, [r.speedup for r in rows], color="tab:green")
    ax.axhline(1.0, color="k", lw=0.8)
    for xi, r in zip(x, rows):
        ax.text(xi, r.speedup, f"{r.speedup:.2f}x\n{r.time_original_ms:.1f} / "
                f"{r.time_reduced_ms:.1f} ms", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_yscale("log")
    ax.set_ylim(min(0.5, min(r.speedup for r in rows) / 1.5),
                max(r.speedup for r in rows) * 4)
    _plain_log(ax)
    ax.set_xlabel("weight of the row-norm penalty on (A, B)")
    ax.set_ylabel("predict speed-up (original / reduced)")
    ax.set_title("predict speed-up (CPU time, median of repeats; labels: ms)", fontsize=10)
    fig.suptitle("Row sparsity on the digits: reduce() removes the dead states", fontsize=11)
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------------------------------
# (c) low rank, section 5.3
# ------------------------------------------------------------------------------------------
@_one_blas_thread
def low_rank_demo(out: str | Path, problem: str | Path | None = None, *,
                  quick: bool = False, progress: bool = False) -> DemoReport:
    """SVD truncation of A against rank, with the bound of Theorem 5.1 (section 5.3).

    For every weight (of the nuclear norm; 0 trains without penalty) one model is trained;
    for every rank k of ``[demo] ranks``, :func:`fenchel_idl.low_rank` truncates its A to
    ``A0 = L R^T``. On the test images the demo measures the accuracy of the factored model,
    the state and output errors ``max |x - x0|`` and ``max |y - y0|`` (equilibria to a
    relative tolerance of 1e-12), the bound of Theorem 5.1
    (:func:`fenchel_idl.perturbation_bound` with ``E = |A - A0|``, where it applies) and
    the entries where the error exceeds it, and the predict times of the dense and the
    factored model on all images.

    Parameters
    ----------
    out : str or Path
    problem : str or Path, optional
        Default ``problems/low_rank_digits.toml``.
    quick : bool, default False
    progress : bool, default False

    Returns
    -------
    DemoReport
        Rows are :class:`LowRankRow`; figure ``low_rank.png``.

    Raises
    ------
    InputTypeError, ValidationError
        As :func:`feature_selection_demo`.
    """
    t_start, out, st, train, test = _start("low_rank", out, problem, quick)
    ranks, repeats = st.extra["ranks"], st.extra["timing_repeats"]
    U_te = np.asarray(test.U)
    U_time = np.hstack([np.asarray(train.U), U_te])
    bar = _bar(progress, len(st.weights) * (1 + len(ranks)), "low_rank")
    trained, rows, spectra = [], [], []
    with bar:
        for i, w in enumerate(st.weights):
            model, secs, note, _ = _fit(st, train, w)
            bar.update(1)
            mfile = _save(model, out, f"low_rank_{i}.npz")
            te_acc = _accuracy(model, U_te, test.labels)
            trained.append(TrainedModel(w, mfile, secs, _accuracy(model, train.U, train.labels),
                                        te_acc, note))
            spectra.append((w, np.linalg.svd(model.A, compute_uv=False), te_acc))
            X = model.equilibrium(U_te, **_TIGHT)[0]
            Y = model.output(X, U_te)
            for k in ranks:
                rows.append(_low_rank_row(model, w, k, U_te, test.labels, X, Y, U_time,
                                          repeats))
                bar.update(1)
    figures = (_plot_low_rank(rows, spectra, out / "low_rank.png"),)
    settings = _base_settings(st, train, test)
    settings["ranks"] = list(ranks)
    settings["errors"] = ("on the test images; equilibria to relative tolerance 1e-12; "
                          f"violations = entries with error > bound + {_SLACK:g}")
    settings["timing"] = (f"predict on all {U_time.shape[1]} images, default tolerance "
                          f"(1e-9); median CPU time (and wall time) of {repeats} interleaved "
                          "runs, one BLAS thread")
    return DemoReport(name="low_rank", title="Low-rank A against rank (section 5.3, "
                                             "Theorem 5.1)",
                      problem=st.spec.path, quick=bool(quick), settings=settings,
                      trained=tuple(trained), rows=tuple(rows), figures=figures,
                      notes=tuple(_low_rank_notes(rows, spectra)),
                      seconds=time.perf_counter() - t_start)


def _low_rank_row(model: ImplicitModel, w: float, k: int, U: Array, labels: Any, X: Array,
                  Y: Array, U_time: Array, repeats: int) -> LowRankRow:
    approx = low_rank(model, k)
    lr = approx.model
    force = not lr.well_posed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X0, info = lr.equilibrium(U, **_TIGHT, force=force, on_nonconvergence="ignore")
        Y0 = lr.C @ X0 + lr.D @ U + lr.bias_y[:, None]
        acc = float(np.mean(np.argmax(Y0, axis=0) == labels))
        dX, dY = np.abs(X - X0), np.abs(Y - Y0)
        gam = state_lipschitz(model.activation, model.n)[:, None]
        lam = pf_eigenvalue(gam * (np.abs(lr.L @ lr.R.T) + approx.error))
        try:
            b = perturbation_bound(lr, approx.error, U)
            s_bound, o_bound = float(b.state.max()), float(b.output.max())
            lam = b.pf_eigenvalue
            viol = int(np.sum(dX > b.state + _SLACK) + np.sum(dY > b.output + _SLACK))
        except NotWellPosedError:
            s_bound = o_bound = None
            viol = 0
        tm = _median_times([lambda: model.predict(U_time),
                            lambda: lr.predict(U_time, force=force)], repeats)
        (t_dense, t_lr), (w_dense, w_lr) = tm.cpu, tm.wall
        it_dense = model.equilibrium(U_time)[1].iterations
        _, info_t = lr.latent(U_time, force=force, on_nonconvergence="ignore")
    return LowRankRow(weight=w, rank=k, certified=not force, pf_factored=lr.pf_eigenvalue,
                      converged=bool(info.converged and info_t.converged), test_accuracy=acc,
                      state_error=float(dX.max()), output_error=float(dY.max()),
                      state_bound=s_bound, output_bound=o_bound, bound_pf=float(lam),
                      bound_violations=viol, time_dense_ms=1e3 * t_dense,
                      time_low_rank_ms=1e3 * t_lr, speedup=t_dense / t_lr,
                      speedup_wall=w_dense / w_lr,
                      iterations_dense=int(it_dense), iterations_low_rank=int(info_t.iterations))


def _low_rank_notes(rows: Sequence[LowRankRow], spectra: Sequence[tuple[float, Array, float]]
              ) -> list[str]:
    notes = []
    bounded = [r for r in rows if r.state_bound is not None]
    viol = sum(r.bound_violations for r in rows)
    if bounded:
        notes.append(f"Theorem 5.1 applies in {len(bounded)} of {len(rows)} (model, rank) "
                     f"pairs; the measured error exceeded its bound in {viol} entries"
                     + (" (the bound was never beaten)." if viol == 0 else "."))
    missing = [r for r in rows if r.state_bound is None]
    if missing:
        notes.append("No bound where lambda_PF(|A0| + E) >= 1: " + ", ".join(
            f"weight {r.weight:g} rank {r.rank} ({r.bound_pf:.2f})" for r in missing) + ".")
    for w, sv, acc in spectra:
        mine = [r for r in rows if r.weight == w]
        if not mine:
            continue
        diffs = [100 * (r.test_accuracy - acc) for r in mine]
        if max(abs(d) for d in diffs) <= 1.0:
            notes.append(f"Weight {w:g}: the truncated models' test accuracy stays within "
                         f"{max(abs(d) for d in diffs):.1f} points of the full model's at every "
                         "rank, even where the state error is large: on these data the "
                         "predicted classes are insensitive to this change of A, so lowering "
                         "the rank buys speed at no measurable cost in accuracy.")
        lowest = min(mine, key=lambda r: r.rank)
        notes.append(f"Weight {w:g}: A has {int(np.sum(sv > 1e-6 * max(sv[0], 1e-300)))} "
                     f"singular values above 1e-6 sigma_1 (sigma_1 = {sv[0]:.3g}); the full "
                     f"model's test accuracy is {_pct(acc)}, at rank {lowest.rank} it is "
                     f"{_pct(lowest.test_accuracy)} with predict {lowest.speedup:.2f}x as fast.")
    uncert = [r for r in rows if not r.certified]
    if uncert:
        notes.append("The factored iteration is not certified (lambda_PF(|R|^T |L|) >= 1) at "
                     + ", ".join(f"weight {r.weight:g} rank {r.rank}" for r in uncert)
                     + "; it was run with force=True"
                     + ("" if all(r.converged for r in uncert) else
                        ", and did not converge everywhere") + ".")
    return notes


def _plot_low_rank(rows: Sequence[LowRankRow], spectra: Sequence[tuple[float, Array, float]],
                   path: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (w, sv, acc) in enumerate(spectra):
        c = colors[j % len(colors)]
        mine = [r for r in rows if r.weight == w]
        lab = "no penalty" if w == 0 else f"nuclear norm, w = {w:g}"
        ks = [r.rank for r in mine]
        ax = axes[0, 0]
        ax.plot(ks, [100 * r.test_accuracy for r in mine], "o-", color=c, label=lab)
        ax.axhline(100 * acc, color=c, ls=":", lw=1)
        ax = axes[0, 1]
        ax.semilogy(ks, [max(r.output_error, 1e-17) for r in mine], "o-", color=c,
                    label=f"{lab}: measured max |y - y0|")
        bk = [(r.rank, r.output_bound) for r in mine if r.output_bound is not None]
        if bk:
            ax.semilogy([k for k, _ in bk], [max(b, 1e-17) for _, b in bk], "s--", color=c,
                        label=f"{lab}: Theorem 5.1 bound")
        ax = axes[1, 0]
        ax.loglog(ks, [r.speedup for r in mine], "o-", color=c, label=lab)
        for r in mine:
            if not r.certified:
                ax.plot([r.rank], [r.speedup], "x", color="k", ms=9)
        ax = axes[1, 1]
        ax.semilogy(np.arange(1, sv.size + 1), np.maximum(sv, 1e-17), ".-", color=c, label=lab)
    axes[0, 0].set_xscale("log")
    axes[0, 0].set(xlabel="rank k", ylabel="test accuracy (%)",
                   title="accuracy of the truncated model (dotted: full model)")
    _accuracy_limits(axes[0, 0], [100 * r.test_accuracy for r in rows]
                     + [100 * acc for _, _, acc in spectra])
    axes[0, 1].set_xscale("log")
    axes[0, 1].set(xlabel="rank k", ylabel="largest output error on test images",
                   title="measured error and Theorem 5.1 bound")
    axes[1, 0].axhline(1.0, color="k", lw=0.8)
    axes[1, 0].set(xlabel="rank k", ylabel="predict speed-up (dense / factored)",
                   title="predict speed-up, CPU time (x: not certified, force=True)")
    axes[1, 1].set(xlabel="index", ylabel="singular value of A", title="spectrum of A")
    for ax, which in ((axes[0, 0], "x"), (axes[0, 1], "x"), (axes[1, 0], "x"),
                      (axes[1, 0], "y")):
        _plain_log(ax, which)
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=8)
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Low-rank A = L R^T by SVD truncation on the digits (section 5.3)",
                 fontsize=11)
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------------------------------
# robust training, section 4.3 (issue 5)
# ------------------------------------------------------------------------------------------
@_one_blas_thread
def robust_demo(out: str | Path, problem: str | Path | None = None, *, quick: bool = False,
                progress: bool = False) -> DemoReport:
    """Robust training with the Lipschitz-bound penalty (4.7) (section 4.3).

    For every weight: train (BCD in the shipped file: the penalty has no proximal operator,
    so refinement cannot use it), then report rho (:func:`fenchel_idl.analysis.robustness.
    lipschitz_bound`), ``||S||_inf`` (:func:`fenchel_idl.analysis.robustness.sensitivity_matrix`),
    the bound (4.7) itself, the largest local gain ``||dy/du||_inf`` over the test images (a
    lower bound on the true Lipschitz constant) and the accuracies.

    Parameters
    ----------
    out : str or Path
    problem : str or Path, optional
        Default ``problems/robust_digits.toml``.
    quick : bool, default False
    progress : bool, default False

    Returns
    -------
    DemoReport
        Rows are :class:`RobustRow`; figure ``robust.png``.

    Raises
    ------
    InputTypeError, ValidationError
        As :func:`feature_selection_demo`.
    """
    t_start, out, st, train, test = _start("robust", out, problem, quick)
    U_te = np.asarray(test.U)
    bar = _bar(progress, len(st.weights), "robust")
    trained, rows = [], []
    with bar:
        for i, w in enumerate(st.weights):
            model, secs, note, certified = _fit(st, train, w)
            tr_acc = _accuracy(model, train.U, train.labels)
            te_acc = _accuracy(model, U_te, test.labels)
            mfile = _save(model, out, f"robust_{i}.npz")
            trained.append(TrainedModel(w, mfile, secs, tr_acc, te_acc, note))
            S = sensitivity_matrix(model)
            rho = lipschitz_bound(model)
            rows.append(RobustRow(
                weight=w, rho=rho,
                sensitivity_inf=float(S.sum(axis=1).max()),
                penalty_bound=lipschitz_penalty_value(model.A, model.B, model.C, model.D),
                local_gain=_local_gain(model, U_te),
                state_path_share=_state_path_share(model, rho), train_accuracy=tr_acc,
                test_accuracy=te_acc, blocks_certified=certified, model_file=mfile))
            bar.update(1)
    figures = (_plot_robust(rows, out / "robust.png"),)
    settings = _base_settings(st, train, test)
    settings["measures"] = ("rho = ||B||_inf ||C||_inf / (1 - ||A||_inf) + ||D||_inf; "
                            "||S||_inf of Thm 4.2; bound (4.7); largest ||dy/du||_inf over "
                            "the test images (a lower bound on the Lipschitz constant)")
    return DemoReport(name="robust", title="Robust training with the Lipschitz bound (4.7) "
                                           "(section 4.3)",
                      problem=st.spec.path, quick=bool(quick), settings=settings,
                      trained=tuple(trained), rows=tuple(rows), figures=figures,
                      notes=tuple(_robust_notes(rows)), seconds=time.perf_counter() - t_start)


def _state_path_share(model: ImplicitModel, rho: float) -> float:
    d = float(np.abs(model.D).sum(axis=1).max())
    return max(rho - d, 0.0) / rho if rho > 0 else 0.0


def _robust_notes(rows: Sequence[RobustRow]) -> list[str]:
    notes = []
    base = rows[0]
    low = min(rows, key=lambda r: r.rho)
    if low.rho < base.rho:
        notes.append(f"rho falls from {base.rho:.4g} (weight {base.weight:g}) to {low.rho:.4g} "
                     f"(weight {low.weight:g}), ||S||_inf from {base.sensitivity_inf:.4g} to "
                     f"{low.sensitivity_inf:.4g}; test accuracy goes from "
                     f"{_pct(base.test_accuracy)} to {_pct(low.test_accuracy)}.")
    else:
        notes.append(f"The penalty did not lower rho below its value at weight "
                     f"{base.weight:g} ({base.rho:.4g}).")
    bad = [b for a, b in pairwise(rows) if b.weight > a.weight and b.rho > a.rho]
    notes.append("rho is non-increasing in the weight." if not bad else
                 "rho is not monotone in the weight: it rises at weight(s) "
                 + ", ".join(f"{r.weight:g}" for r in bad) + " (BCD is a local method).")
    best = max(rows, key=lambda r: r.test_accuracy)
    if best is not base and best.test_accuracy > base.test_accuracy:
        notes.append(f"The best test accuracy, {_pct(best.test_accuracy)}, is at weight "
                     f"{best.weight:g}, above the unpenalized {_pct(base.test_accuracy)}.")
    free = [r for r in rows[1:] if r.test_accuracy >= base.test_accuracy - 0.005]
    if free:
        r = min(free, key=lambda r: r.rho)
        notes.append(f"Largest cut of rho without losing more than 0.5 points of test "
                     f"accuracy: weight {r.weight:g}, rho {r.rho:.4g} ({base.rho / r.rho:.3g} "
                     f"times lower than without penalty), test accuracy "
                     f"{_pct(r.test_accuracy)}.")
    linear = [r for r in rows if r.state_path_share < 0.2]
    if linear:
        notes.append("At weight(s) " + ", ".join(f"{r.weight:g}" for r in linear)
                     + " less than 20% of rho comes from the implicit part (||B|| ||C|| / "
                       "(1 - ||A||)); the rest is ||D||_inf: the penalty, quadratic in B and C "
                       "but linear in D, mostly switches the implicit part off and leaves a "
                       "nearly linear model"
                     + (", whose bounds are tight (rho within 1% of the largest local gain)."
                        if all(r.rho <= 1.01 * r.local_gain for r in linear) else "."))
    gap = [r.rho / max(r.local_gain, 1e-300) for r in rows]
    notes.append(f"The certified rho is {min(gap):.3g} to {max(gap):.3g} times the largest "
                 "local gain observed on the test images.")
    return notes


def _plot_robust(rows: Sequence[RobustRow], path: Path) -> str:
    plt = pyplot()
    x = np.arange(len(rows))
    labels = _weight_labels([r.weight for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    ax = axes[0]
    ax.semilogy(x, [r.penalty_bound for r in rows], "^:", label="bound (4.7)")
    ax.semilogy(x, [r.rho for r in rows], "o-", lw=2, label="rho (Lipschitz bound)")
    ax.semilogy(x, [r.sensitivity_inf for r in rows], "s--", label="||S||_inf (Thm 4.2)")
    ax.semilogy(x, [r.local_gain for r in rows], "d-", label="largest local gain (observed)")
    ax.set_xticks(x, labels)
    ax.set(xlabel="penalty weight", title="robustness measures")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(x, [100 * r.test_accuracy for r in rows], "o-", label="test")
    ax.plot(x, [100 * r.train_accuracy for r in rows], "s--", label="train")
    ax.set_xticks(x, labels)
    ax.set(xlabel="penalty weight", ylabel="accuracy (%)", title="accuracy")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.semilogx([r.rho for r in rows], [100 * r.test_accuracy for r in rows], "o-")
    for r in rows:
        ax.annotate(f"w={r.weight:g}", (r.rho, 100 * r.test_accuracy), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set(xlabel="rho (certified Lipschitz bound)", ylabel="test accuracy (%)",
           title="trade-off")
    ax.margins(x=0.12, y=0.08)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.title.set_fontsize(10)
    fig.suptitle("Robust training on the digits: the Lipschitz-bound penalty (4.7)",
                 fontsize=11)
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------------------------------
# all demos and the command line
# ------------------------------------------------------------------------------------------
_RUNNERS: dict[str, Callable[..., DemoReport]] = {
    "feature_selection": feature_selection_demo, "row_sparsity": row_sparsity_demo,
    "low_rank": low_rank_demo, "robust": robust_demo}


def _only(only: Any) -> tuple[str, ...]:
    if only is None:
        return DEMOS
    names = [only] if isinstance(only, str) else only
    if not isinstance(names, (list, tuple)) or not all(isinstance(s, str) for s in names):
        raise InputTypeError(f"'only' must be a demo name or a sequence of them; got "
                             f"{describe(only)}.")
    flat = [s.strip() for item in names for s in item.split(",") if s.strip()]
    bad = [s for s in flat if s not in DEMOS]
    if bad or not flat:
        raise ValidationError(f"'only' must name demos among {list(DEMOS)}; got "
                              f"{bad or flat!r}.")
    return tuple(d for d in DEMOS if d in flat)


def _write_index(out_dir: Path) -> None:
    """demos.md and demos.json from every <demo>.md / <demo>.json in the directory, so that
    running one demo with --only keeps the sections of the others."""
    present = [d for d in DEMOS if (out_dir / f"{d}.md").is_file()
               and (out_dir / f"{d}.json").is_file()]
    head = ["# Sparsity, compression and robust training on the digits (sections 4.3 and 5)",
            "", ("Accuracies are on the held-out test images unless marked train. Timing ratios "
                 "are measured in the same process: median CPU time of interleaved repeats, "
                 "one BLAS thread (wall-time ratios beside them); the machine is shared, so "
                 "ratios within about 10% of 1 are noise. Each section says which command "
                 "produced it."), ""]
    (out_dir / "demos.md").write_text("\n".join(head + [(out_dir / f"{d}.md").read_text()
                                                       for d in present]))
    (out_dir / "demos.json").write_text(json.dumps(
        {"demos": [json.loads((out_dir / f"{d}.json").read_text()) for d in present]},
        indent=1))


def run_demos(out: str | Path, *, quick: bool = False, only: str | Sequence[str] | None = None,
              problems_dir: str | Path | None = None, progress: bool = True
              ) -> tuple[DemoReport, ...]:
    """Run the demos; write ``out/<demo>.md`` and ``out/<demo>.json`` for each, and the
    index ``out/demos.md`` and ``out/demos.json`` of all demos present in ``out`` (so a
    run with ``only`` keeps the sections written earlier by the others).

    Parameters
    ----------
    out : str or Path
        Output directory (created).
    quick : bool, default False
        The ``[demo.quick]`` settings of each file (a smoke test, a minute or less).
    only : str or sequence of str, optional
        Demo names among :data:`DEMOS` (comma-separated strings are split); default all.
    problems_dir : str or Path, optional
        Where the ``<demo>_digits.toml`` files are; default the repository's ``problems/``.
    progress : bool, default True
        tqdm progress bars.

    Returns
    -------
    tuple of DemoReport

    Raises
    ------
    InputTypeError, ValidationError
        Bad arguments, unknown demo names, or bad problem files.
    """
    names = _only(only)
    out_dir = _check_out(out)
    if problems_dir is not None and not isinstance(problems_dir, (str, Path)):
        raise InputTypeError(f"'problems_dir' must be a directory path; got "
                             f"{describe(problems_dir)}.")
    pdir = common.problems_dir(problems_dir)
    cmd = (f"python -m fenchel_idl.apps.demos --out {out}" + (" --quick" if quick else "")
           + ("" if only is None else f" --only {','.join(names)}"))
    reports = []
    for name in names:
        rep = _RUNNERS[name](out_dir, pdir / f"{name}_digits.toml", quick=quick,
                             progress=progress)
        reports.append(rep)
        stamp = time.strftime("%Y-%m-%d %H:%M")
        md = rep.to_markdown().replace("\n\n", f"\n\nRun by `{cmd}`, finished {stamp}.\n\n", 1)
        (out_dir / f"{name}.md").write_text(md)
        (out_dir / f"{name}.json").write_text(json.dumps(
            {"command": cmd, "finished": stamp, **rep.to_dict()}, indent=1, default=float))
    _write_index(out_dir)
    return tuple(reports)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl demos --out DIR [--quick] [--only NAME ...]`` (also ``python -m
    fenchel_idl.apps.demos``); ``prog`` names the command in its help."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m fenchel_idl.apps.demos",
        description="Feature selection, row sparsity, low rank (section 5) and robust "
                    "training (section 4.3) on the 8x8 digits; writes DIR/demos.md, "
                    "DIR/demos.json, PNG figures and the models.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="the [demo.quick] settings of each problem file (a smoke test)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help=f"run only these demos (repeat or comma-separate): "
                             f"{', '.join(DEMOS)}")
    parser.add_argument("--problems", default=None,
                        help="directory of the <demo>_digits.toml files (default: problems/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        reports = run_demos(args.out, quick=args.quick, only=args.only,
                            problems_dir=args.problems, progress=not args.no_progress)
    except (ValidationError, InputTypeError) as exc:
        parser.error(str(exc))
    for r in reports:
        print(f"[demos] {r.name}: {r.seconds:.1f} s; " + " ".join(r.notes[:1]), flush=True)
    print(f"[demos] wrote {Path(args.out) / 'demos.md'}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
