"""The paper's experiments (section 7), their baselines, and a markdown report, in one command.

::

    python -m fenchel_idl.apps.experiments [--quick] [--full] [--seeds K] [--only NAME ...]
                                           [--problems DIR] --out DIR [--results FILE]

Every experiment is a problem file in ``problems/`` (see :mod:`fenchel_idl.drivers.problem_file`):

==================== =============================== ==================================
problem file         paper                           metric
==================== =============================== ==================================
cosine_regression    section 7.1, Figures 3-4        training RMSE (also RMSE vs f)
synthetic_network    section 7.2.1, Figure 5         test accuracy, 5 runs
synthetic_implicit   section 7.2.1, Figure 6         test accuracy, 5 runs
digits               (not in the paper; a sanity     test accuracy, 5 seeds
                     check on scikit-learn's digits)
mnist                section 7.2.2, Figure 7         test accuracy, 5 runs
fashion_mnist        section 7.2.2, Figure 8 (GTSRB  test accuracy, 5 runs
                     stand-in: GTSRB is not
                     available offline)
==================== =============================== ==================================

For each seed the implicit model is trained as the problem file says (BCD on the relaxed
problem, section 6.3, then the optional gradient refinement of section 6.2), and in the
same process two baselines are trained on the same training samples:

- a ReLU MLP of matched size (hidden widths summing to the number n of states, the
  correspondence of section 3.2) with Adam, its step size chosen from a small grid on a
  validation split, as in section 7.2 ("ADAM with a grid-search tuned step-size");
- logistic regression (classification) or linear regression.

Modes:

- default: the small experiments (cosine, the two synthetic sets, digits) as written in
  their problem files, with as many seeds as the paper has runs;
- ``--full``: also MNIST and Fashion-MNIST, everything on all 60,000 training images
  (mini-batch BCD, refinement, baselines; about 40 minutes per seed on 2 cores, so
  ``--seeds 1`` for one run; see :data:`EXPERIMENTS`);
- ``--quick``: every experiment on small subsets with few sweeps and epochs and one seed,
  for CI (about a minute in all).

The output directory receives ``report.md`` (a table: experiment, paper figure, implicit,
MLP, linear/logistic, paper numbers, target, met?), ``results.json``, and PNG plots: the
test metric over training epochs (mean and standard deviation over seeds, the layout of
Figures 5-8), the BCD convergence of the first seed, and the fitted function for the
cosine problem. With ``--results FILE`` the summary table also goes into the
``experiments`` section of the results document (``docs/results.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.analysis import plot_convergence, pyplot
from fenchel_idl.apps.bench_refine import COSINE_SETTINGS
from fenchel_idl.apps.common import (
    configure_logging,
    machine_line,
    problems_dir,
    score,
    write_section,
)
from fenchel_idl.blocks import env_blas_threads
from fenchel_idl.drivers import (
    BlockRecord,
    bcd_options,
    build_problem,
    init_random,
    load_data,
    load_problem,
    refine,
    solve_bcd,
    train_spec,
)
from fenchel_idl.errors import FenchelIDLError, ValidationError
from fenchel_idl.problem import datasets, prediction_metric

__all__ = [
    "EXPERIMENTS",
    "VALIDATION_FRACTION",
    "Experiment",
    "ExperimentResult",
    "SeedRun",
    "Target",
    "choose_sweeps",
    "experiments_section",
    "main",
    "run_experiment",
    "run_experiments",
    "write_report",
]

Array = NDArray[np.float64]

#: Modes of the command.
MODES = ("quick", "default", "full")


# -- what each experiment is ------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """The claim an experiment checks.

    Attributes
    ----------
    kind : {"vs_mlp", "at_most", "at_least"}
        ``"vs_mlp"``: the implicit model matches the matched-size MLP up to ``value``
        (accuracy ``>= mlp - value``, RMSE ``<= mlp + value``); ``"at_most"`` /
        ``"at_least"``: the implicit metric is below / above ``value``.
    value : float
    text : str
        The claim in words, for the report.
    of : {"final", "bcd"}
        Which implicit model the claim is about: the final one (BCD, then the problem
        file's refinement) or the BCD model alone (every block certified, no gradient
        stage).
    """

    kind: str
    value: float
    text: str
    of: str = "final"

    def met(self, implicit: float, mlp: float, higher_is_better: bool) -> bool:
        """Whether mean metrics ``implicit`` and ``mlp`` satisfy the target."""
        if not np.isfinite(implicit):
            return False
        if self.kind == "at_most":
            return implicit <= self.value
        if self.kind == "at_least":
            return implicit >= self.value
        if higher_is_better:
            return implicit >= mlp - self.value
        return implicit <= mlp + self.value


@dataclass(frozen=True)
class Experiment:
    """One experiment of section 7: its problem file, what the paper reports, its baselines.

    Attributes
    ----------
    name : str
        Stem of the problem file in ``problems/``.
    figure : str
        Where the paper reports it.
    metric : {"accuracy", "rmse"}
        Test accuracy, or (regression) training RMSE as in section 7.1.
    paper_implicit, paper_nn : float or None
        The paper's numbers (average best accuracy over 5 runs, or RMSE).
    runs : int
        Number of runs the paper averages over: the default number of seeds (5 for the
        digits check, which is not in the paper).
    mlp_hidden : tuple of int
        Hidden widths of the baseline MLP; they sum to the n of the problem file.
    mlp_epochs : int
        Adam epochs of the baseline MLP.
    mlp_batch : int
        Its mini-batch size: :func:`run_experiment` sets it to the problem file's refinement
        ``batch_size`` (a fair match), or leaves 32 when there is no refinement.
    mlp_tune_epochs : int or None
        Epochs of each run of the step-size search (None: ``mlp_epochs``); fewer on
        MNIST-size data, where three full runs would dominate the budget.
    mlp_batches : tuple of int or None
        When given, the MLP's batch size is searched too, jointly with the step size and on
        the same validation split, over these sizes (instead of ``mlp_batch``): for
        experiments whose refinement settings were themselves chosen on a validation split,
        so that both sides are tuned alike.
    target : Target
    long : bool
        Run only with ``--full`` (MNIST-size data).
    refine_samples : int or None
        Refine the BCD model, and train the baselines, on a stratified subset of this many
        training samples instead of the BCD training set (MNIST-size problems, where BCD
        runs on a smaller subset).
    quick : mapping
        Overrides for ``--quick``: ``{"data": {...}, "model": {...}, "training": {...},
        "schedule": {...}, "refine": {...}, "experiment": {...}}``; the last one overrides
        fields of this record (``refine_samples``, ``mlp_epochs``).
    note : str
        What differs from the paper, for the report.
    select_sweeps : bool
        Choose the number of BCD sweeps (1 to the problem file's ``max_sweeps``) on a
        validation split of the training set (:data:`VALIDATION_FRACTION`), then train on
        the whole training set with that count (:func:`choose_sweeps`); the test set is
        scored only at the end. Otherwise the problem file's ``max_sweeps`` is used.
    random_init : mapping
        Keyword arguments of :func:`fenchel_idl.drivers.init_random` (``scale``,
        ``bias_scale``) for the refinement from a random start.
    """

    name: str
    figure: str
    metric: str
    paper_implicit: float | None
    paper_nn: float | None
    runs: int
    mlp_hidden: tuple[int, ...]
    mlp_epochs: int
    target: Target
    mlp_batch: int = 32
    mlp_tune_epochs: int | None = None
    mlp_batches: tuple[int, ...] | None = None
    long: bool = False
    refine_samples: int | None = None
    quick: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    note: str = ""
    select_sweeps: bool = False
    random_init: Mapping[str, float] = field(default_factory=dict)

    @property
    def tune_epochs(self) -> int:
        """Epochs of each step-size search run (at most ``mlp_epochs``)."""
        return min(self.mlp_tune_epochs or self.mlp_epochs, self.mlp_epochs)

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


_MLP_LRS = (1e-3, 3e-3, 1e-2)

#: Share of the training set held out to choose the BCD sweep count (``select_sweeps``).
VALIDATION_FRACTION = 0.2

#: What the two synthetic experiments of section 7.2.1 share: 5 runs, an MLP of 10 + 10 units.
_SYNTHETIC = {
    "runs": 5, "mlp_hidden": (10, 10), "mlp_epochs": 200,
    "quick": {"data": {"m": 300}, "model": {"n": 10}, "training": {"max_sweeps": 2},
              "refine": {"epochs": 5}, "experiment": {"mlp_hidden": (5, 5), "mlp_epochs": 30}},
}

#: What the two MNIST-size experiments share: 5 runs, an MLP of 128 units, mini-batch BCD,
#: refinement and baselines on all 60,000 training images, only with ``--full``.
_IMAGE_SET = {
    "runs": 5, "mlp_hidden": (128,), "mlp_epochs": 30, "mlp_tune_epochs": 10, "long": True,
    "refine_samples": 60_000,
    "quick": {"data": {"n": 50, "test_split": 500}, "model": {"n": 5},
              "minibatch": {"epochs": 1, "batch_size": 25, "readout_iter": 2000},
              "refine": {"epochs": 1},
              "experiment": {"refine_samples": 1000, "mlp_hidden": (5,), "mlp_epochs": 3}},
}

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        name="cosine_regression", figure="Fig. 3-4 (sec. 7.1)", metric="rmse",
        paper_implicit=0.56, paper_nn=0.65, runs=1, mlp_hidden=(25, 25, 25), mlp_epochs=2000,
        # the refinement is full-batch (batch_size = m); the MLP keeps batches of 20, its
        # stronger setting on this problem (full-batch Adam, step size tuned, fits worse)
        mlp_batches=(20,),
        # the random start of the refinement spreads the ReLU kinks over the inputs' range,
        # as the tuned pure-gradient settings of the cosine benchmark do
        random_init={"scale": COSINE_SETTINGS["init_scale"],
                     "bias_scale": COSINE_SETTINGS["init_bias_scale"]},
        target=Target("at_most", 0.56, "train RMSE <= 0.56 (paper: implicit 0.56, NN 0.65; "
                                       "noise std 0.577)"),
        quick={"model": {"n": 21}, "training": {"max_sweeps": 2}, "refine": {"epochs": 20},
               "experiment": {"mlp_hidden": (7, 7, 7), "mlp_epochs": 200}},
        note="The paper trains (A, B) by projected gradient, then (C, D) by least squares; "
             "here the problem file's BCD (and its [refine] stage, if it has one)."),
    Experiment(
        name="synthetic_network", figure="Fig. 5 (sec. 7.2.1)", metric="accuracy",
        paper_implicit=0.85, paper_nn=0.76,
        target=Target("vs_mlp", 0.0, "implicit >= MLP (paper: implicit 0.85 > NN 0.76)"),
        **_SYNTHETIC,  # type: ignore[arg-type]
        note="The paper's generator is in its supplement (not available); ours is documented "
             "in fenchel_idl.problem.datasets.synthetic_from_network. Absolute accuracies are not "
             "comparable, the ranking is."),
    Experiment(
        name="synthetic_implicit", figure="Fig. 6 (sec. 7.2.1)", metric="accuracy",
        paper_implicit=0.85, paper_nn=0.74,
        target=Target("vs_mlp", 0.0, "implicit >= MLP (paper: implicit 0.85 > NN 0.74)"),
        **_SYNTHETIC,  # type: ignore[arg-type]
        note="Generator documented in fenchel_idl.problem.datasets.synthetic_from_implicit (n = 20, "
             "||A||_inf = 0.9)."),
    Experiment(
        name="digits", figure="- (sanity check)", metric="accuracy",
        paper_implicit=None, paper_nn=None, runs=5, mlp_hidden=(20,), mlp_epochs=100,
        mlp_batches=(16, 32, 64), select_sweeps=True,
        target=Target("vs_mlp", 0.0, "BCD alone >= MLP", of="bcd"),
        quick={"data": {"n": 300}, "model": {"n": 10}, "training": {"max_sweeps": 2},
               "refine": {"epochs": 3}, "experiment": {"mlp_hidden": (10,), "mlp_epochs": 20}},
        note="Not in the paper: scikit-learn's 8x8 digits, a small image set that runs in "
             "minutes. The BCD sweep count is chosen on a validation split of the training "
             "set; the target is about BCD alone."),
    Experiment(
        name="mnist", figure="Fig. 7 (sec. 7.2.2)", metric="accuracy",
        paper_implicit=0.976, paper_nn=0.972,
        target=Target("at_least", 0.976, "test accuracy >= 0.976 (paper: 0.976 vs 0.972 on "
                                           "all 60,000 images)"),
        **_IMAGE_SET,  # type: ignore[arg-type]
        note="Mini-batch BCD (problem file [minibatch]; BCD alone is problems/mnist_bcd.toml), "
             "the gradient refinement and both baselines on all 60,000 training images; "
             "test on the 10,000 test images, as in the paper."),
    Experiment(
        name="fashion_mnist", figure="Fig. 8 (GTSRB; stand-in)", metric="accuracy",
        paper_implicit=0.874, paper_nn=0.859,
        target=Target("vs_mlp", 0.0, "implicit >= MLP (paper on GTSRB: 0.874 vs "
                                       "0.859)"),
        **_IMAGE_SET,  # type: ignore[arg-type]
        note="GTSRB cannot be obtained offline; Fashion-MNIST is the stand-in, so the "
             "paper's numbers are a reference for the ranking only. Same budget as MNIST."),
)}


# -- results ----------------------------------------------------------------------------------

@dataclass
class SeedRun:
    """One seed of one experiment.

    Attributes
    ----------
    seed : int
    implicit, mlp, linear : float
        The metric of the final implicit model, the MLP and the linear/logistic baseline.
    implicit_start, implicit_bcd : float
        The metric of the random-feature start and of the model after BCD (before
        refinement).
    implicit_random : float
        The metric of the refinement from a random start (:func:`fenchel_idl.init_random`),
        with the problem file's refinement options (the same epochs); nan without one.
    train, test : dict
        The metric of each model ("start", "bcd", "final", "random", "mlp", "linear") on
        the BCD training set and on the test set (for the cosine problem: RMSE against
        the noiseless f on a grid).
    extra : dict
        Other metrics (for regression: RMSE against the noiseless function on a grid).
    curve_implicit, curve_random, curve_mlp : list of (epoch, metric)
        The metric over refinement epochs (epoch 0: after BCD), over the epochs of the
        refinement from a random start, and over Adam epochs.
    times : dict
        Wall times in seconds: "start" (the random-feature start, up to the first block
        update of BCD), "bcd" (the whole BCD run, start included), "refine", "random",
        "mlp", "linear".
    certificate : dict
        Part of the certificate of the BCD model (before refinement): well_posed,
        blocks_certified, true_loss, relaxed_objective, relaxation_gap, n_sweeps, ...
    """

    seed: int
    implicit: float
    mlp: float
    linear: float
    implicit_start: float
    implicit_bcd: float
    implicit_random: float = float("nan")
    train: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    curve_implicit: list = field(default_factory=list)
    curve_random: list = field(default_factory=list)
    curve_mlp: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    certificate: dict = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """All seeds of one experiment, with its settings and plots."""

    experiment: Experiment
    mode: str
    runs: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)
    skipped: str | None = None
    time: float = 0.0

    def stat(self, key: str) -> tuple[float, float]:
        """(mean, std) over seeds of ``key`` ("implicit", "mlp", ...; "train.bcd" for an
        entry of a dict field, "times.bcd", "certificate.relaxation_gap"); std is 0 for 1
        seed."""
        name, _, sub = key.partition(".")
        vals = np.array([getattr(r, name)[sub] if sub else getattr(r, name)
                         for r in self.runs], dtype=float)
        if vals.size == 0:
            return float("nan"), float("nan")
        return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0

    @property
    def met(self) -> bool | None:
        if self.skipped or not self.runs:
            return None
        target = self.experiment.target
        key = "implicit_bcd" if target.of == "bcd" else "implicit"
        return target.met(self.stat(key)[0], self.stat("mlp")[0],
                          self.experiment.higher_is_better)

    def to_dict(self) -> dict:
        return {"experiment": dataclasses.asdict(self.experiment), "mode": self.mode,
                "runs": [dataclasses.asdict(r) for r in self.runs], "settings": self.settings,
                "plots": self.plots, "skipped": self.skipped, "time": self.time,
                "met": self.met}


# -- data -------------------------------------------------------------------------------------

def _merged(base: Mapping[str, Any] | None, patch: Mapping[str, Any] | None) -> dict:
    out = dict(base or {})
    out.update(patch or {})
    return out


def _patched(spec, overrides: Mapping[str, Mapping[str, Any]]):
    """The problem spec with the ``--quick`` overrides applied (a new ProblemSpec)."""
    changes = {}
    for key in ("data", "model", "training", "schedule"):
        if key in overrides:
            changes[key] = _merged(getattr(spec, key), overrides[key])
    if "minibatch" in overrides and spec.minibatch is not None:
        changes["minibatch"] = _merged(spec.minibatch, overrides["minibatch"])
    if "refine" in overrides and spec.refine is not None:
        changes["refine"] = _merged(spec.refine, overrides["refine"])
    return dataclasses.replace(spec, **changes)


def _load_data(spec, refine_samples: int | None):
    """(train, refine_set, test) from the [data] table of a problem spec.

    ``train`` is what BCD sees; ``refine_set`` is what the refinement and the baselines see
    (``train`` itself unless ``refine_samples`` asks for a larger subset of an image set).
    """
    train, test = load_data(spec)
    opts = {k: v for k, v in spec.data.items()
            if k not in ("source", "test_fraction", "test_split")}
    source = spec.data["source"]
    if test is None and source == "cosine":
        test = datasets.cosine_grid()
    elif test is None:
        raise ValidationError(f"problem {spec.name!r}: [data] needs test_fraction or "
                              "test_split for an experiment (a held-out test set).")
    refine_set = train
    if refine_samples is not None and refine_samples > train.m:
        refine_set = datasets.load(source, **{**opts, "n": int(refine_samples)})
    return train, refine_set, test


def _model_metric(metric: str, model, ds) -> float:
    """Accuracy on the labels of ``ds``, or RMSE against its targets."""
    if metric == "accuracy":
        return score(model, ds.U, ds.labels, "classification")
    return score(model, ds.U, ds.Y, "regression")


# -- one seed ---------------------------------------------------------------------------------

def _solve_bcd(spec, problem, max_sweeps: int, seed: int,
               progress: bool) -> tuple[Any, float, float, int]:
    """BCD without refinement as the problem file states it
    (:func:`fenchel_idl.drivers.train_spec`: full-batch, or mini-batch with [minibatch],
    ``max_sweeps`` then counting epochs); returns (result, wall seconds, seconds of the
    random-feature start, number of warnings). ``progress``: the driver's progress (a bar on
    a terminal, INFO lines to the ``fenchel_idl.drivers`` logger otherwise).

    The start's time is measured up to the first block update (the time of that update,
    which its record carries, taken off), so it includes building the blocks.
    """
    t0 = time.perf_counter()
    first: list[float] = []

    def mark(rec) -> None:
        if not first:
            first.append(time.perf_counter() - float(rec.time) - t0)

    with warnings.catch_warnings(record=True) as caught:
        # solver notes ("inaccurate", fallbacks) are recorded in the certificate
        warnings.simplefilter("always")
        result = train_spec(spec, problem, refine=False, max_sweeps=max_sweeps, seed=seed,
                            callback=mark, progress=progress)
    seconds = time.perf_counter() - t0
    return result, seconds, (first[0] if first else seconds), len(caught)


def choose_sweeps(spec, train, *, metric: str = "accuracy", seed: int = 0,
                  fraction: float = VALIDATION_FRACTION) -> dict[str, Any]:
    """The number of BCD sweeps with the best validation metric.

    A stratified split (:func:`fenchel_idl.problem.datasets.train_test_split`, seeded with
    the problem's seed) holds out ``fraction`` of ``train``. BCD runs on the rest with the
    problem file's settings, one sweep at a time up to its ``max_sweeps``: each step resumes
    the previous one from its checkpoint (:func:`fenchel_idl.solve_bcd` with ``checkpoint``
    and ``resume``), so the model scored after k sweeps is the model, with its final
    readout, that a run of k sweeps returns. The test set is not used.

    Parameters
    ----------
    spec : ProblemSpec
    train : Dataset
        The training set.
    metric : {"accuracy", "rmse"}
    seed : int
        Seed of the BCD start.
    fraction : float in (0, 1)

    Returns
    -------
    dict
        ``sweeps`` (the chosen count; the fewest among equal scores), ``curve`` (list of
        (sweeps, validation metric)), ``seconds``, ``m_fit`` and ``m_val``.
    """
    if spec.minibatch is not None:
        raise ValidationError(f"problem {spec.name!r}: choosing the sweep count resumes "
                              "full-batch BCD from its checkpoints; a [minibatch] file trains "
                              "its stated epochs.")
    fit, val = datasets.train_test_split(train, fraction, seed=spec.seed)
    problem = build_problem(spec, fit)
    opts = bcd_options(spec, refine=False)
    top = int(opts.pop("max_sweeps"))
    opts["seed"] = seed
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solver notes are in each run's certificate
        for k in range(1, top + 1):
            result = solve_bcd(problem, **opts, max_sweeps=k, checkpoint=ckpt, resume=True)
            curve.append((int(result.n_sweeps), _model_metric(metric, result.model, val)))
            if result.n_sweeps < k:  # the schedule stopped: more sweeps change nothing
                break
    sign = 1.0 if metric == "accuracy" else -1.0
    best = int(np.argmax([sign * v for _, v in curve]))
    return {"sweeps": curve[best][0], "curve": curve, "seconds": time.perf_counter() - t0,
            "m_fit": fit.m, "m_val": val.m}


def _refine_run(exp: Experiment, spec, problem, model, refine_set, scored, seed: int,
                eval_points: int, progress: bool) -> tuple[Any, float, list]:
    """The problem file's refinement of ``model`` on ``refine_set`` (with refine's progress
    when ``progress``); returns (model, wall seconds, curve of the metric on ``scored`` over
    epochs)."""
    opts = dict(spec.refine)
    kappa = opts.pop("kappa", problem.kappa)
    opts.setdefault("seed", seed)
    epochs = int(opts.get("epochs", 100))
    every = max(1, epochs // eval_points)
    curve: list[tuple[int, float]] = []

    def record(rec, current):
        if rec.epoch % every == 0 or rec.epoch == epochs:
            curve.append((int(rec.epoch), _model_metric(exp.metric, current, scored)))

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes are in the history
        res = refine(model, refine_set.U, refine_set.Y, loss=problem.loss.name,
                     penalties=list(problem.penalties), kappa=kappa, callback=record,
                     progress=progress, **opts)
    return res.model, time.perf_counter() - t0, curve


def _train_implicit(exp: Experiment, spec, train, refine_set, test, seed: int,
                    max_sweeps: int, say: Any, progress: bool,
                    eval_points: int = 40) -> tuple[dict, Any, Any]:
    """The four implicit models of one seed: the random-feature start and BCD alone (one
    BCD run of ``max_sweeps``), BCD then the problem file's refinement on ``refine_set``,
    and the same refinement from a random start; metrics, wall times and the BCD
    certificate. ``say`` is called with a line as each stage begins; ``progress`` turns on
    the drivers' own progress."""
    problem = build_problem(spec, train)
    unit = "sweep" if spec.minibatch is None else "epoch"
    say(f"[{exp.name}] seed {seed}: BCD alone ({max_sweeps} {unit}(s) on {train.m} samples) "
        "...")
    result, t_bcd, t_start, warned = _solve_bcd(spec, problem, int(max_sweeps), seed,
                                                progress)
    metric = exp.metric
    scored = train if metric == "rmse" else test  # section 7.1 reports the training RMSE
    model = result.model
    out: dict[str, Any] = {
        "start": _model_metric(metric, result.start_model, scored),
        "bcd": _model_metric(metric, model, scored), "random": float("nan"),
        "times": {"start": t_start, "bcd": t_bcd, "refine": 0.0, "random": 0.0},
        "train": {"start": _model_metric(metric, result.start_model, train),
                  "bcd": _model_metric(metric, model, train)},
        "test": {"start": _model_metric(metric, result.start_model, test),
                 "bcd": _model_metric(metric, model, test)},
        "curve_random": []}
    out["curve"] = [(0, out["bcd"])]
    if spec.refine is not None:
        say(f"[{exp.name}] seed {seed}: BCD alone {out['bcd']:.4f} ({t_bcd:.1f} s); "
            "refinement of the BCD model ...")
        model, out["times"]["refine"], curve = _refine_run(
            exp, spec, problem, model, refine_set, scored, seed, eval_points, progress)
        out["curve"] += curve
        say(f"[{exp.name}] seed {seed}: refinement from a random start ...")
        start = init_random(train.p, train.q, int(spec.model["n"]), kappa=problem.kappa,
                            activation=spec.model.get("activation", "relu"), seed=seed,
                            **dict(exp.random_init))
        rnd, out["times"]["random"], out["curve_random"] = _refine_run(
            exp, spec, problem, start, refine_set, scored, seed, eval_points, progress)
        out["random"] = _model_metric(metric, rnd, scored)
        out["train"]["random"] = _model_metric(metric, rnd, train)
        out["test"]["random"] = _model_metric(metric, rnd, test)
    out["final"] = _model_metric(metric, model, scored)
    out["train"]["final"] = _model_metric(metric, model, train)
    out["test"]["final"] = _model_metric(metric, model, test)
    out["certificate"] = _bcd_certificate(result, warned)
    return out, result, model


def _bcd_certificate(result, warned: int) -> dict[str, Any]:
    """The fields of the BCD run's certificate (no refinement ran in it) that the report
    shows. ``relaxation_gap`` compares one model: BCD's final (A, B, C, D) at its true
    equilibrium (``state_objective``: loss plus penalties) against its relaxed objective
    (loss at BCD's own states plus lam times the Fenchel divergences plus the same
    penalties); ``true_loss`` is the returned model's, after the final optimal readout."""
    cert = result.certificate
    return {"well_posed": bool(cert.well_posed),
            "blocks_certified": bool(cert.blocks_certified),
            "readout_certified": bool(cert.readout_certified),
            "true_loss": float(cert.true_loss),
            "relaxed_objective": float(cert.relaxed_objective),
            "relaxation_gap": float(cert.relaxation_gap),
            "state_objective": float(cert.relaxed_objective + cert.relaxation_gap),
            "stop_reason": str(cert.stop_reason),
            "stationary": bool(cert.stationary),
            "fw_gap": float(cert.fw_gap),
            "fw_note": str(cert.fw_note),
            "max_gap_abs": float(cert.max_gap_abs),
            "pf_eigenvalue": float(cert.pf_eigenvalue),
            "n_sweeps": int(result.n_sweeps),
            "uncertified_solves": len(cert.solve_events),
            "warnings": warned, **_x_block_gap(result.history)}


def _x_block_gap(history) -> dict[str, Any]:
    """The relaxation gap of one model read off the BCD history: the last X-block solve that
    started from a model at its true equilibrium (the record before it has divergence 0,
    so its objective is that model's true objective) lowered the relaxed objective, over the
    states X alone, from that true objective to the relaxed optimum of the same (A, B, C, D)
    at the current lam. ``x_gap_is_returned``: no later move of the model was accepted (a
    line search, or without one an (A, B) or (C, D) block), so that model is the one BCD
    returns. Empty when no such record exists, and for mini-batch BCD, whose X steps solve
    one batch each (its records carry no Fenchel divergence)."""
    if not all(isinstance(r, BlockRecord) for r in history):
        return {}
    moves = ("LS",) if any(r.block == "LS" for r in history) else ("AB", "CD")
    for i in range(len(history) - 1, 0, -1):
        rec, before = history[i], history[i - 1]
        if (rec.block == "X" and rec.accepted
                and before.divergence <= 1e-12 * max(1.0, abs(before.objective))):
            later = any(r.accepted and r.block in moves for r in history[i + 1:])
            return {"x_gap_true": float(before.objective), "x_gap_relaxed": float(rec.objective),
                    "x_gap_sweep": int(rec.sweep), "x_gap_is_returned": not later}
    return {}


def _mlp(exp: Experiment, lr: float, seed: int):
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if exp.metric == "accuracy" else MLPRegressor
    # no regularization, as in section 7.2 ("we do not apply ... regularization")
    return cls(hidden_layer_sizes=exp.mlp_hidden, activation="relu", solver="adam",
               learning_rate_init=lr, alpha=0.0, batch_size=exp.mlp_batch,
               random_state=seed)


def _train_mlp(exp: Experiment, X: Array, y: Array, Xs: Array, scored, lr: float, seed: int,
               epochs: int, eval_points: int = 40) -> tuple[float, list, Any]:
    """Adam epochs by ``partial_fit``; returns (final metric, curve, model)."""
    net = _mlp(exp, lr, seed)
    every = max(1, epochs // eval_points)
    curve = []
    classes = np.unique(y) if exp.metric == "accuracy" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(1, epochs + 1):
            if classes is not None:
                net.partial_fit(X, y, classes=classes)
            else:
                net.partial_fit(X, y)
            if epoch % every == 0 or epoch == epochs:
                curve.append((epoch, _sk_metric(exp.metric, net, Xs, scored)))
    return curve[-1][1], curve, net


def _sk_metric(metric: str, est, X: Array, ds) -> float:
    if metric == "accuracy":
        return float(np.mean(est.predict(X) == ds.labels))
    pred = np.asarray(est.predict(X), dtype=float).reshape(ds.m, -1).T
    return prediction_metric(pred, ds.Y, "regression")["rmse"]


def _tune_mlp(exp: Experiment, X: Array, y: Array, epochs: int,
              seed: int) -> tuple[float, int]:
    """The Adam step size of the grid (and the batch size of ``exp.mlp_batches``, if given)
    with the best metric on a 20% validation split; returns (step size, batch size)."""
    from sklearn.model_selection import train_test_split

    strat = y if exp.metric == "accuracy" else None
    try:
        Xa, Xv, ya, yv = train_test_split(X, y, test_size=0.2, random_state=seed,
                                          stratify=strat)
    except ValueError:  # a class too small to stratify
        Xa, Xv, ya, yv = train_test_split(X, y, test_size=0.2, random_state=seed)
    val = _RowsView(Xv, yv, exp.metric)
    grid = [(lr, batch) for batch in (exp.mlp_batches or (exp.mlp_batch,)) for lr in _MLP_LRS]
    scores = []
    for lr, batch in grid:
        score, _, _ = _train_mlp(dataclasses.replace(exp, mlp_batch=batch), Xa, ya, Xv, val,
                                 lr, seed, epochs, eval_points=1)
        scores.append(score if exp.higher_is_better else -score)
    lr, batch = grid[int(np.argmax(scores))]
    return float(lr), int(batch)


@dataclass(frozen=True)
class _RowsView:
    """Labels/targets in the attributes :func:`_sk_metric` reads (labels, Y, m)."""

    X: Array
    y: Array
    metric: str

    @property
    def labels(self):
        return self.y

    @property
    def Y(self):
        return np.atleast_2d(self.y.T) if self.y.ndim > 1 else self.y[None, :]

    @property
    def m(self):
        return self.y.shape[0]


def _train_linear(exp: Experiment, X: Array, y: Array, Xs: Array, scored, train,
                  test) -> tuple[float, float, float]:
    """Logistic or linear regression on (X, y); its metric on ``scored``, ``train`` and
    ``test``."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = LogisticRegression(max_iter=1000) if exp.metric == "accuracy" else \
            LinearRegression()
        est.fit(X, y)
    return (_sk_metric(exp.metric, est, Xs, scored),
            _sk_metric(exp.metric, est, train.X_rows, train),
            _sk_metric(exp.metric, est, test.X_rows, test))


# -- one experiment ---------------------------------------------------------------------------

@env_blas_threads
def run_experiment(exp: Experiment, problem_path: str | Path, *, mode: str = "default",
                   seeds: int | None = None, out: str | Path | None = None,
                   log: Any = None, progress: bool = False) -> ExperimentResult:
    """Run one experiment for several seeds; plots go to ``out`` when given.

    Everything, the baselines included, runs with BLAS on one thread (the environment
    variable ``FENCHEL_IDL_BLAS_THREADS``, as in :func:`fenchel_idl.solve_bcd`): on a busy
    machine a multithreaded BLAS spends most of an MLP epoch waiting for its threads.

    Parameters
    ----------
    exp : Experiment
    problem_path : path
        Its problem file.
    mode : {"quick", "default", "full"}
        ``"quick"`` applies ``exp.quick``.
    seeds : int, optional
        Number of seeds (default: ``exp.runs``, or 1 in quick mode). Seed k trains with
        ``problem seed + k`` (the data stay fixed).
    out : path, optional
        Directory for the plots.
    log : callable, optional
        Called with a line as each stage begins and ends.
    progress : bool
        The drivers' own progress within a stage (BCD's batches or sweeps, refinement's
        epochs): a bar on a terminal, INFO lines to the ``fenchel_idl.drivers`` logger
        otherwise.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    ValidationError
        A bad mode or seed count, or a problem file without a test set.
    """
    if mode not in MODES:
        raise ValidationError(f"'mode' must be one of {list(MODES)}; got {mode!r}.")
    say = log or (lambda msg: None)
    t_start = time.perf_counter()
    spec = load_problem(problem_path)
    if mode == "quick":
        spec = _patched(spec, exp.quick)
        exp = dataclasses.replace(exp, **dict(exp.quick.get("experiment", {})))
    if spec.refine is not None and "batch_size" in spec.refine:
        exp = dataclasses.replace(exp, mlp_batch=int(spec.refine["batch_size"]))
    k = seeds if seeds is not None else (1 if mode == "quick" else exp.runs)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"'seeds' must be an int >= 1; got {k!r}.")
    train, refine_set, test = _load_data(spec, exp.refine_samples)
    X, y = refine_set.X_rows, refine_set.y_rows
    scored = train if exp.metric == "rmse" else test
    Xs = scored.X_rows
    res = ExperimentResult(experiment=exp, mode=mode)
    res.settings = {
        "problem_file": str(problem_path), "n": int(spec.model["n"]),
        "kappa": spec.model.get("kappa", 0.5), "m_bcd": train.m, "m_refine": refine_set.m,
        "m_test": test.m, "p": train.p,
        "max_sweeps": (spec.training.get("max_sweeps", 40) if spec.minibatch is None
                       else spec.minibatch.get("epochs", 5)),
        "minibatch": None if spec.minibatch is None else dict(spec.minibatch),
        "refine": dict(spec.refine) if spec.refine is not None else None,
        "mlp_hidden": list(exp.mlp_hidden), "mlp_epochs": exp.mlp_epochs,
        "mlp_batch": exp.mlp_batch, "mlp_tune_epochs": exp.tune_epochs,
        "seeds": k,
        "scored_on": "training set" if exp.metric == "rmse" else "test set",
    }
    say(f"[{exp.name}] tuning the MLP step size on a validation split ...")
    t0 = time.perf_counter()
    lr, batch = _tune_mlp(exp, X, y, exp.tune_epochs, spec.seed)
    exp = dataclasses.replace(exp, mlp_batch=batch)
    res.settings["mlp_lr"] = lr
    res.settings["mlp_lr_grid"] = list(_MLP_LRS)
    res.settings["mlp_batch"] = batch
    res.settings["mlp_batch_grid"] = list(exp.mlp_batches) if exp.mlp_batches else None
    res.settings["mlp_tuning_time"] = time.perf_counter() - t0
    sweeps = int(res.settings["max_sweeps"])
    if exp.select_sweeps:
        say(f"[{exp.name}] choosing the BCD sweep count (1 to {sweeps}) on a validation "
            "split of the training set ...")
        chosen = choose_sweeps(spec, train, metric=exp.metric, seed=spec.seed)
        sweeps = chosen["sweeps"]
        res.settings["sweep_selection"] = chosen
        say(f"[{exp.name}] validation {exp.metric} by sweeps: "
            + ", ".join(f"{s}: {v:.4f}" for s, v in chosen["curve"])
            + f"; chosen {sweeps} ({chosen['seconds']:.1f} s)")
    res.settings["sweeps"] = sweeps
    first_bcd = first_model = first_mlp = None
    for j in range(k):
        seed = spec.seed + j
        imp, bcd_result, model = _train_implicit(exp, spec, train, refine_set, test, seed,
                                                 sweeps, say=say, progress=progress)
        say(f"[{exp.name}] seed {seed}: the MLP ({exp.mlp_epochs} epochs) and the linear "
            "baseline ...")
        t0 = time.perf_counter()
        mlp_final, mlp_curve, net = _train_mlp(exp, X, y, Xs, scored, lr, seed,
                                               exp.mlp_epochs)
        t_mlp = time.perf_counter() - t0
        t0 = time.perf_counter()
        linear, linear_train, linear_test = _train_linear(exp, X, y, Xs, scored, train, test)
        t_lin = time.perf_counter() - t0
        extra = {}
        mlp_test = _sk_metric(exp.metric, net, test.X_rows, test)
        if exp.metric == "rmse":
            extra["implicit_rmse_vs_f"] = imp["test"]["final"]
            extra["mlp_rmse_vs_f"] = mlp_test
        run = SeedRun(seed=seed, implicit=imp["final"], mlp=mlp_final, linear=linear,
                      implicit_start=imp["start"], implicit_bcd=imp["bcd"],
                      implicit_random=imp["random"],
                      train={**imp["train"], "mlp": _sk_metric(exp.metric, net,
                                                               train.X_rows, train),
                             "linear": linear_train},
                      test={**imp["test"], "mlp": mlp_test, "linear": linear_test},
                      extra=extra, curve_implicit=imp["curve"],
                      curve_random=imp["curve_random"], curve_mlp=mlp_curve,
                      times={**imp["times"], "mlp": t_mlp, "linear": t_lin},
                      certificate=imp["certificate"])
        res.runs.append(run)
        t = run.times
        say(f"[{exp.name}] seed {seed}: start {run.implicit_start:.4f}, BCD alone "
            f"{run.implicit_bcd:.4f} ({t['bcd']:.1f} s), BCD + refinement "
            f"{run.implicit:.4f} (+{t['refine']:.1f} s), random start + refinement "
            f"{run.implicit_random:.4f} ({t['random']:.1f} s), MLP {run.mlp:.4f} "
            f"({t_mlp:.1f} s), linear {run.linear:.4f}; relaxation gap "
            f"{run.certificate['relaxation_gap']:+.3g} (relaxed objective "
            f"{run.certificate['relaxed_objective']:.3g}, true objective of the same model "
            f"{run.certificate['state_objective']:.3g})")
        if j == 0:
            first_bcd, first_model, first_mlp = bcd_result, model, net
    res.time = time.perf_counter() - t_start
    if out is not None:
        res.plots = _plots(res, Path(out), first_bcd, first_model, first_mlp, train, test)
    return res


# -- plots ------------------------------------------------------------------------------------

def _band(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[Array, Array, Array]:
    """Epochs, mean and std of curves recorded at the same epochs."""
    length = min(len(c) for c in curves)
    arr = np.array([[v for _, v in c[:length]] for c in curves], dtype=float)
    epochs = np.array([e for e, _ in curves[0][:length]], dtype=float)
    return epochs, arr.mean(axis=0), arr.std(axis=0)


def _plots(res: ExperimentResult, out: Path, bcd_result, model, net, train, test) -> list[str]:
    plt = pyplot()
    exp = res.experiment
    out.mkdir(parents=True, exist_ok=True)
    written = []
    label = "test accuracy" if exp.metric == "accuracy" else "training RMSE"
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, name, color in (("curve_implicit", "implicit (epoch 0: after BCD)", "tab:blue"),
                             ("curve_random", "implicit from a random start", "tab:green"),
                             ("curve_mlp", f"MLP {exp.mlp_hidden} (Adam)", "tab:orange")):
        curves = [getattr(r, key) for r in res.runs if getattr(r, key)]
        if not curves:
            continue
        e, mu, sd = _band(curves)
        ax.plot(e, mu, color=color, label=name, marker="o" if e.size == 1 else None)
        ax.fill_between(e, mu - sd, mu + sd, color=color, alpha=0.2)
    lin = res.stat("linear")[0]
    ax.axhline(lin, color="grey", ls="--",
               label="logistic regression" if exp.metric == "accuracy" else "linear regression")
    ax.set_xlabel("epoch (implicit: refinement epochs; MLP: Adam epochs)")
    ax.set_ylabel(label)
    ax.set_title(f"{exp.name}: mean and std over {len(res.runs)} seed(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{exp.name}_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path.name)
    if bcd_result is not None and bcd_result.history:
        path = out / f"{exp.name}_bcd.png"
        plot_convergence(bcd_result, path, title=f"{exp.name}: BCD, seed {res.runs[0].seed}")
        written.append(path.name)
    if exp.metric == "rmse" and train.p == 1 and train.q == 1:
        grid = np.linspace(float(train.U.min()), float(train.U.max()), 1000)
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.scatter(train.U[0], train.Y[0], s=8, color="grey", alpha=0.6, label="training data")
        if train.f is not None:
            ax.plot(grid, train.f(grid), color="k", lw=1.5, label="noiseless f")
        ax.plot(grid, model.predict(grid[None, :])[0], color="tab:blue", lw=2,
                label=f"implicit (train RMSE {res.runs[0].implicit:.3f})")
        ax.plot(grid, net.predict(grid[:, None]), color="tab:orange", lw=1.2,
                label=f"MLP (train RMSE {res.runs[0].mlp:.3f})")
        ax.set_xlabel("u")
        ax.set_ylabel("y")
        ax.legend(fontsize=8)
        ax.set_title(f"{exp.name}: fitted functions (Figure 4 layout)")
        fig.tight_layout()
        path = out / f"{exp.name}_fit.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path.name)
    return written


# -- the report -------------------------------------------------------------------------------

def _fmt(mean: float, std: float, k: int, metric: str) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if k > 1 else f"{mean:.3f}"


def _paper(exp: Experiment) -> str:
    if exp.paper_implicit is None:
        return "-"
    return f"{exp.paper_implicit:g} / {exp.paper_nn:g}"


def write_report(results: Sequence[ExperimentResult], out: str | Path, *, mode: str,
                 command: str = "", total_time: float | None = None) -> Path:
    """Write ``report.md`` and ``results.json`` into ``out``; return the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Implicit deep learning: the experiments of section 7", "",
             *_summary(results, mode=mode, command=command, total_time=total_time)]
    for r in results:
        lines += _details(r)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1,
                                                 default=_json_default))
    return path


def experiments_section(results: Sequence[ExperimentResult], *, mode: str, command: str = "",
                        total_time: float | None = None) -> str:
    """The results-document section: the summary table of :func:`write_report`, then each
    experiment's table of four implicit models and the relaxation gap at the end of BCD."""
    lines = ["## Experiments of section 7", "",
             *_summary(results, mode=mode, command=command, total_time=total_time)]
    for r in results:
        if r.skipped or not r.runs:
            continue
        lines += [f"### {r.experiment.name}", "", *_four_rows(r)]
    return "\n".join(lines)


def _summary(results: Sequence[ExperimentResult], *, mode: str, command: str,
             total_time: float | None) -> list[str]:
    """Mode, command, machine, what the metric is, and one table row per experiment."""
    where = f"; command: `{command}`" if command else ""
    total = f" Total time {total_time:.0f} s." if total_time is not None else ""
    lines = [f"Mode: **{mode}**{where}.", f"{machine_line()}{total}", ""]
    lines += [("Metric: test accuracy (classification) or training RMSE (cosine, as in "
               "section 7.1). Values are mean ± standard deviation over seeds (model seeds; "
               "the data are fixed by the problem file). \"BCD alone\" is the model that "
               "block-coordinate descent returns, every block a certified convex solve and "
               "no gradient stage; \"BCD + refinement\" adds the problem file's gradient "
               "refinement; \"random start\" is that refinement (same epochs) from a random "
               "model. \"paper\" gives the paper's implicit / neural network numbers (average "
               "best accuracy over 5 runs); ours are the accuracies at the last epoch, not "
               "the best over epochs (which would select on the test set)."), ""]
    if mode == "quick":
        lines += [("**Quick mode: small subsets, few sweeps and epochs, one seed. The numbers "
                   "check that the pipeline runs; they are not results.**"), ""]
    lines += [("| experiment | paper figure | metric | BCD alone | BCD + refinement | "
               "random start + refinement | MLP (matched size) | linear / logistic | "
               "paper (implicit / NN) | target | met? |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        e = r.experiment
        if r.skipped:
            lines.append(f"| {e.name} | {e.figure} | {e.metric} | skipped | | | | | "
                         f"{_paper(e)} | {e.target.text} | - |")
            continue
        k = len(r.runs)
        cells = [_fmt(*r.stat(key), k, e.metric)
                 for key in ("implicit_bcd", "implicit", "implicit_random", "mlp", "linear")]
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(f"| {e.name} | {e.figure} | {e.metric} | {' | '.join(cells)} | "
                     f"{_paper(e)} | {e.target.text} | {met} |")
    lines.append("")
    return lines


#: The rows of an experiment's table: (key of SeedRun.train/test/times, label).
_MODELS = (("start", "random-feature start (A = 0, random B, optimal readout)"),
           ("bcd", "BCD alone"),
           ("final", "BCD + refinement"),
           ("random", "refinement from a random start"))


def _row_time(r: ExperimentResult, key: str) -> str:
    """Mean wall time per seed of one row (BCD + refinement: both stages)."""
    if key == "final":
        vals = [run.times["bcd"] + run.times["refine"] for run in r.runs]
    else:
        vals = [run.times[key] for run in r.runs]
    return f"{np.mean(vals):.1f} s"


def _four_rows(r: ExperimentResult) -> list[str]:
    """The table of the four implicit models of one experiment (and the two baselines),
    measured in the same run, and the relaxation gap of the BCD model."""
    e, s, k = r.experiment, r.settings, len(r.runs)
    if e.metric == "accuracy":
        heads = ("train accuracy", "test accuracy")
    else:
        heads = ("train RMSE", "RMSE against f (1000-point grid)")
    certified = sum(bool(run.certificate.get("blocks_certified")) for run in r.runs)
    sweeps = [run.certificate.get("n_sweeps", 0) for run in r.runs]
    chosen = " chosen on a validation split" if "sweep_selection" in s else ""
    refine = s.get("refine") or {}
    epochs = refine.get("epochs", "-")
    unit = "epoch" if s.get("minibatch") else "sweep"  # mini-batch BCD counts epochs
    labels = {
        "start": _MODELS[0][1],
        "bcd": (f"**BCD alone** ({min(sweeps)}-{max(sweeps)} {unit}s" if min(sweeps) !=
                max(sweeps) else f"**BCD alone** ({sweeps[0]} {unit}(s)")
               + f"{chosen}; every block certified in {certified} of {k} seed(s))",
        "final": f"BCD + refinement ({epochs} epochs)",
        "random": f"refinement from a random start ({epochs} epochs)"}
    lines = [f"| model | {heads[0]} | {heads[1]} | wall time per seed |", "|---|---|---|---|"]
    for key, _ in _MODELS:
        if key == "random" and s.get("refine") is None:
            lines.append(f"| {labels[key]} | - | - | - (no [refine] table) |")
            continue
        cells = [_fmt(*r.stat(f"{part}.{key}"), k, e.metric) for part in ("train", "test")]
        lines.append(f"| {labels[key]} | {cells[0]} | {cells[1]} | {_row_time(r, key)} |")
    for key, label in (("mlp", f"baseline: MLP {tuple(e.mlp_hidden)}, Adam"),
                       ("linear", "baseline: logistic regression" if e.metric == "accuracy"
                        else "baseline: linear regression")):
        cells = [_fmt(*r.stat(f"{part}.{key}"), k, e.metric) for part in ("train", "test")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {_row_time(r, key)} |")
    lines += ["", _gap_line(r)]
    sel = s.get("sweep_selection")
    if sel:
        curve = ", ".join(f"{n}: {v:.4f}" for n, v in sel["curve"])
        lines += ["", (f"BCD sweep count chosen on a validation split ({sel['m_val']} of the "
                       f"{sel['m_val'] + sel['m_fit']} training samples held out, BCD on the "
                       f"other {sel['m_fit']}; the test set unused): validation {e.metric} "
                       f"after k sweeps {curve}; chosen k = {sel['sweeps']} "
                       f"({sel['seconds']:.0f} s, once for all seeds), then BCD on all "
                       f"training samples.")]
    lines.append("")
    return lines


def _gap_line(r: ExperimentResult) -> str:
    """The relaxation gap at the end of BCD (means over seeds): the certificate's field, the
    gap of one model read off the last X-block solve (:func:`_x_block_gap`), the BCD model's
    true loss after its final readout, why BCD stopped and its Frank-Wolfe gap."""
    certs = [run.certificate for run in r.runs]
    gap = float(np.mean([c["relaxation_gap"] for c in certs]))
    state = float(np.mean([c["state_objective"] for c in certs]))
    true = float(np.mean([c["true_loss"] for c in certs]))
    text = (f"Relaxation gap at the end of BCD (standardized units, mean over seeds). The "
            f"certificate's: true objective (loss + penalties) of BCD's final (A, B, C, D) at "
            f"its equilibrium minus "
            f"its relaxed objective (loss at BCD's own states + lam x Fenchel divergences + "
            f"penalties) = {state:.3g} - {state - gap:.3g} = {gap:+.3g}")
    if abs(gap) <= 1e-9 * max(1.0, abs(state)):
        text += (" (0 by construction here: the line search on the true objective ends "
                 "every sweep at the true equilibrium, where the divergences vanish)")
    text += "."
    xs = [c for c in certs if "x_gap_true" in c]
    if xs:
        t = float(np.mean([c["x_gap_true"] for c in xs]))
        x = float(np.mean([c["x_gap_relaxed"] for c in xs]))
        returned = sum(bool(c["x_gap_is_returned"]) for c in xs)
        text += (f" The relaxation's own gap, for one model: BCD's last X-block solve from a "
                 f"model at its true equilibrium (sweep "
                 f"{min(c['x_gap_sweep'] for c in xs) + 1}"
                 + (f"-{max(c['x_gap_sweep'] for c in xs) + 1}"
                    if len({c['x_gap_sweep'] for c in xs}) > 1 else "")
                 + f") lowered its relaxed objective from its true objective {t:.3g} to "
                 f"{x:.3g} over the states alone: gap {t - x:+.3g} ({100 * (t - x) / t:.1f}% "
                 f"of the true objective; that model is the returned one in {returned} of "
                 f"{len(xs)} seed(s), otherwise the one a sweep before).")
    text += f" With its readout re-solved, the BCD model returned has true loss {true:.3g}."
    reasons = sorted({c.get("stop_reason") or "" for c in certs} - {""})
    if reasons:
        text += " BCD stopped: " + "; ".join(reasons) + "."
    fw = [c.get("fw_gap", float("nan")) for c in certs]
    if np.all(np.isfinite(fw)):
        text += (f" Frank-Wolfe gap over (A, B, b) at the BCD model: {np.mean(fw):.3g} "
                 f"(absolute; 0 at a first-order stationary point).")
    else:
        notes = sorted({c.get("fw_note") or "not computed" for c in certs})
        text += f" Frank-Wolfe gap: not computed ({'; '.join(notes)})."
    return text


def _details(r: ExperimentResult) -> list[str]:
    """The report's section of one experiment: settings, the four models, one row per
    seed, plots."""
    e = r.experiment
    lines = [f"## {e.name}", ""]
    if r.skipped:
        return lines + [f"Skipped: {r.skipped}", ""]
    lines += [e.note, "", *_settings_lines(r), "", *_four_rows(r)]
    lines += [("| seed | start | BCD alone | BCD + refinement | random start + refinement | "
               "MLP | linear | well-posed | blocks certified | sweeps | relaxed objective | "
               "true objective (same model) | relaxation gap | true loss after readout | BCD s | "
               "refine s | random s | MLP s |"),
              "|" + "---|" * 18]
    yes = {True: "yes", False: "no"}
    for run in r.runs:
        c, t = run.certificate, run.times
        lines.append(f"| {run.seed} | {run.implicit_start:.4f} | {run.implicit_bcd:.4f} | "
                     f"{run.implicit:.4f} | {run.implicit_random:.4f} | {run.mlp:.4f} | "
                     f"{run.linear:.4f} | {yes[bool(c.get('well_posed'))]} | "
                     f"{yes[bool(c.get('blocks_certified'))]} | {c.get('n_sweeps')} | "
                     f"{c.get('relaxed_objective', float('nan')):.4g} | "
                     f"{c.get('state_objective', float('nan')):.4g} | "
                     f"{c.get('relaxation_gap', float('nan')):+.3g} | "
                     f"{c.get('true_loss', float('nan')):.4g} | {t['bcd']:.1f} | "
                     f"{t['refine']:.1f} | {t['random']:.1f} | {t['mlp']:.1f} |")
    if e.metric == "rmse":
        f_imp = np.mean([run.extra["implicit_rmse_vs_f"] for run in r.runs])
        f_mlp = np.mean([run.extra["mlp_rmse_vs_f"] for run in r.runs])
        lines += ["", (f"RMSE against the noiseless f on a 1000-point grid: implicit "
                       f"{f_imp:.3f}, MLP {f_mlp:.3f}.")]
    lines.append("")
    lines += [f"![{p}]({p})" for p in r.plots]
    lines.append("")
    return lines


def _settings_lines(r: ExperimentResult) -> list[str]:
    s = r.settings
    scored = s["m_test"] if s["scored_on"] == "test set" else s["m_bcd"]
    return [
        (f"- problem file: `{s['problem_file']}`; n = {s['n']} states, kappa = {s['kappa']}; "
         + (f"BCD on m = {s['m_bcd']} samples (p = {s['p']}), at most {s['sweeps']} sweep(s)"
            if not s.get("minibatch") else
            f"mini-batch BCD on m = {s['m_bcd']} samples (p = {s['p']}), {s['sweeps']} "
            f"epoch(s) in batches of at most {s['minibatch'].get('batch_size', 1024)}")
         + (f" (chosen on a validation split among 1 to {s['max_sweeps']})"
            if "sweep_selection" in s else "")),
        (f"- refinement: {_refine_text(s)}; baselines trained on the same {s['m_refine']} "
         f"samples; metric on the {s['scored_on']} ({scored} samples)"),
        (f"- MLP {tuple(s['mlp_hidden'])}, Adam, {s['mlp_epochs']} epochs, batch "
         f"{s.get('mlp_batch', 32)}"
         + (f" (chosen from {s['mlp_batch_grid']})" if len(s.get("mlp_batch_grid") or ()) > 1
            else "")
         + f", step size {s['mlp_lr']:g} chosen from {s['mlp_lr_grid']} on a 20% validation "
         f"split ({s.get('mlp_tune_epochs', s['mlp_epochs'])} epochs each)"),
        f"- wall time {r.time:.1f} s for {len(r.runs)} seed(s)",
    ]


def _refine_text(s: dict) -> str:
    if s["refine"] is None:
        return "none"
    opts = ", ".join(f"{k} = {v}" for k, v in s["refine"].items())
    where = f" on {s['m_refine']} samples" if s["m_refine"] != s["m_bcd"] else ""
    return f"projected gradient ({opts}){where}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# -- the command ------------------------------------------------------------------------------

def run_experiments(names: Sequence[str], *, mode: str = "default", seeds: int | None = None,
                    out: str | Path = "runs/experiments", problems: str | Path | None = None,
                    log: Any = print, command: str = "",
                    results_path: str | Path | None = None, progress: bool = False
                    ) -> tuple[list[ExperimentResult], Path]:
    """Run the named experiments and write the report; return (results, report path).

    ``log`` receives a line per stage; ``progress`` is passed to :func:`run_experiment`.

    A missing problem file or data set skips its experiment (the report says why). With
    ``results_path``, the summary table also goes into the ``experiments`` section of that
    results document.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pdir = problems_dir(problems)
    results = []
    t0 = time.perf_counter()
    for name in names:
        exp = EXPERIMENTS[name]
        path = pdir / f"{name}.toml"
        if not path.is_file():
            results.append(ExperimentResult(exp, mode, skipped=f"problem file {path} not found"))
            log(f"[{name}] skipped: no problem file {path}")
            continue
        try:
            results.append(run_experiment(exp, path, mode=mode, seeds=seeds, out=out, log=log,
                                          progress=progress))
        except FileNotFoundError as exc:  # DataNotFoundError: data files not installed
            results.append(ExperimentResult(exp, mode, skipped=str(exc)))
            log(f"[{name}] skipped: {exc}")
    total = time.perf_counter() - t0
    report = write_report(results, out, mode=mode, command=command, total_time=total)
    if results_path is not None:
        write_section("experiments", experiments_section(results, mode=mode, command=command,
                                                         total_time=total), results_path)
    return results, report


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl experiments`` (also ``python -m fenchel_idl.apps.experiments``); returns
    the exit status. ``prog`` names the command in its help and in the report."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m fenchel_idl.apps.experiments",
        description="Run the experiments of section 7 of 'Implicit Deep Learning' with "
                    "baselines (matched MLP, linear/logistic) and write report.md.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true",
                       help="small subsets, few sweeps/epochs, one seed (CI; about a minute)")
    group.add_argument("--full", action="store_true",
                       help="also the MNIST-size experiments (mnist, fashion_mnist; about 40 "
                            "minutes per seed on 2 cores)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per experiment (default: the paper's number of runs; 1 "
                             "with --quick)")
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), default=None,
                        metavar="NAME", help=f"run only these ({', '.join(EXPERIMENTS)})")
    parser.add_argument("--problems", default=None,
                        help="directory of the problem files (default: problems/ of the "
                             "checkout)")
    parser.add_argument("--out", default="runs/experiments", help="output directory")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress within a stage (BCD's batches or sweeps, "
                             "refinement's epochs); the stage lines remain")
    parser.add_argument("--results", default=None,
                        help="results document whose 'experiments' section to rewrite "
                             "(docs/results.md)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else ("full" if args.full else "default")
    if args.only:
        names = list(args.only)
    else:
        names = [n for n, e in EXPERIMENTS.items() if mode != "default" or not e.long]
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1; got {args.seeds}")
    command = f"{parser.prog} " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    try:
        _, report = run_experiments(names, mode=mode, seeds=args.seeds, out=args.out,
                                    problems=args.problems, command=command.strip(),
                                    log=lambda msg: print(msg, flush=True),
                                    results_path=args.results,
                                    progress=not args.no_progress)
    except FenchelIDLError as exc:
        print(f"experiments: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    configure_logging()  # as ``fenchel-idl experiments`` does: the progress lines on stderr
    sys.exit(main())
