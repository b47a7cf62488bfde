"""The records of a training run: one line of history per block update
(:class:`BlockRecord`), what the run certifies (:class:`Certificate`), and the result
(:class:`BCDResult`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.model.implicit_model import ImplicitModel

__all__ = [
    "SCOPE",
    "BCDResult",
    "BatchRecord",
    "BlockRecord",
    "Certificate",
    "SolveOutcome",
    "global_gap_line",
    "outcome",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class SolveOutcome:
    """What every history record says about its block solve.

    Attributes
    ----------
    solver, status : str
        The solver that produced the kept solution, and its status.
    gap, kkt_residual : float or None
        Its relative duality gap and KKT residual, where known.
    certified : bool
        The solve met its certificate.
    accepted : bool
        The update was kept (it did not raise the monotone quantity).
    abs_gap : float or None
        The gap in absolute units of the training objective (the relative gap is relative
        to max(1, |block objective|), and a block objective can be far larger than the
        loss: constants of the majorizer), where known.
    """

    solver: str
    status: str
    gap: float | None
    kkt_residual: float | None
    certified: bool
    accepted: bool
    abs_gap: float | None = None


def outcome(info, accepted: bool) -> dict:
    """The :class:`SolveOutcome` fields of a record, from a SolveInfo (the absolute gap from
    the solver, or the relative gap times max(1, |objective|))."""
    absolute = getattr(info, "abs_gap", None)
    if absolute is None and info.gap is not None and info.objective is not None:
        absolute = float(info.gap) * max(1.0, abs(float(info.objective)))
    return {"solver": info.solver, "status": info.status, "gap": info.gap,
            "kkt_residual": info.kkt_residual, "certified": info.certified, "accepted": accepted,
            "abs_gap": None if absolute is None else float(absolute)}


@dataclass(frozen=True)
class BlockRecord(SolveOutcome):
    """One block update of :func:`fenchel_idl.solve_bcd` (with the fields of
    :class:`SolveOutcome`); "LS" records are line searches, with their step and number of
    evaluations."""

    sweep: int
    stage: int
    block: str
    objective: float
    loss: float
    divergence: float
    penalty: float
    time: float
    lam_mean: float
    step: float | None = None
    evaluations: int | None = None


@dataclass(frozen=True)
class BatchRecord(SolveOutcome):
    """One block update of :func:`fenchel_idl.solve_bcd_minibatch`.

    Attributes
    ----------
    epoch, step : int
        The epoch, and the batch step within the run (0, 1, ...).
    block : str
        "X", "AB", "CD", "restart" for the start of an epoch (and, with
        ``steps="stochastic"``, of every batch: its states at the true equilibrium), or
        "LS" for the line search after an epoch (``line_search``).
    batch : int
        Number of samples of the batch.
    surrogate : float
        H after the update: the majorizer of the relaxed objective that the method
        decreases (H >= J; H = J at the start of every epoch). With
        ``steps="stochastic"``, the batch's relaxed objective J_S after the update (J at
        the epoch's start for the epoch's "restart" record).
    objective : float or None
        The relaxed objective J after the update, computed on the full data when
        ``monitor="step"`` (and for "restart" records); None otherwise.
    time : float
        Seconds the update took.
    line_step, evaluations : float or None, int or None
        For "LS" records: the step taken along the epoch's step (0: none improved, the
        epoch's start kept) and the number of trial points; for "LS", ``surrogate`` and
        ``objective`` hold the true objective of the kept point.
    """

    epoch: int
    step: int
    block: str
    batch: int
    surrogate: float
    objective: float | None
    time: float
    line_step: float | None = None
    evaluations: int | None = None


#: What a certificate certifies and what it does not (printed by every certificate).
SCOPE = ("certified: each convex block solve, the readout (C, D) for the final (A, B), and "
         "well-posedness; NOT certified: global optimality of the (non-convex) training problem")


@dataclass(frozen=True)
class Certificate:
    """What the run certifies about the model it returns, by stage (BCD, then the optional
    refinement), and what it does not certify (:data:`SCOPE`).

    Losses and objectives are in the units of the training problem (:attr:`units`); the
    training metric is in raw units. Relative gaps are relative to max(1, |objective|) of
    the block's own objective; the absolute ones are in units of the training objective.

    Attributes
    ----------
    blocks_certified : bool
        Every block solve of BCD that was used (and the final readout) had status optimal
        and a gap within tolerance.
    max_gap : float
        Largest relative duality gap (or KKT residual) among the accepted block solves.
    solve_events : list of dict
        Every solve attempt that was not certified (fallbacks, failures), with its status.
    monotone : bool
        The relaxed objective never increased within a stage of fixed lam, where the
        driver measures it: after every update (:func:`fenchel_idl.solve_bcd`; the
        majorizer H of the incremental mini-batch steps), or, for the stochastic mini-batch
        steps (``steps="stochastic"``), between each epoch's start and end.
    max_increase : float
        Largest relative increase observed within a stage (<= 0 when monotone).
    rejected_updates : int
        Block updates rejected because they would have increased the objective.
    stationary : bool
        BCD stopped because it found no improving step along its own direction (the
        schedule's stop, or a last sweep that improved the relaxed objective by less than
        the stage tolerance), not because it hit ``max_sweeps``. This is not first-order
        stationarity of the training problem (see :attr:`fw_gap`).
    last_improvement : float
        Relative improvement of the relaxed objective in the last sweep.
    pf_eigenvalue : float
        lambda_PF(|A|) of the returned model (< 1: well-posed by Thm 2.2).
    norm_inf : float
        ||N(A, gamma)||_inf of the returned model.
    kappa : float
    well_posed : bool
        pf_eigenvalue < 1 and norm_inf <= kappa (up to 1e-9).
    equilibrium_residual : float
        Relative residual of the returned model's equilibrium solve.
    relaxed_objective : float
        BCD's relaxed objective at its final state.
    true_loss : float
        Training loss of the returned model at its true equilibrium.
    relaxation_gap : float
        The true objective (loss + penalties) of BCD's final state, its (A, B, C, D) at the
        true equilibrium, minus its relaxed objective (loss at BCD's states + lam x Fenchel
        divergences + the same penalties): both of the same model.
    readout_certified : bool
        The returned model's (C, D) is the certified optimal readout for its (A, B),
        certified on the posed problem.
    train_metric : dict
        Training RMSE (regression, raw units) or accuracy (classification).
    refined : bool
        Gradient refinement ran after BCD and changed the model (so its (C, D) is no longer
        the certified readout). A refinement that kept the BCD model leaves it False.
    describes : str
        Which model the certificate describes (the returned one).
    units : str
        "standardized" or "raw": the units of the losses and objectives.
    stop_reason : str
        Why BCD stopped.
    max_gap_abs : float
        Largest gap of the accepted block solves in absolute units of the training objective.
    readout_gap : float
        Bound on the final readout's gap on the posed problem, absolute units.
    readout_note : str
        How the final readout was certified (or why not).
    bcd_true_loss : float
        True loss of the BCD model after its optimal readout.
    bcd_objective, refine_start_objective, refine_end_objective : float
        True objectives (loss + penalties at the true equilibrium): of the BCD model, and
        at the start and end of the refinement (nan without refinement).
    refine_worse : bool
        The refinement ended worse than its start.
    fw_gap : float
        Frank-Wolfe gap of the true training loss over the feasible set of (A, B, b) at the
        returned model, (C, D) fixed (with the optimal readout this is the gap of the
        problem with the readout re-solved), absolute units; nan when not computed.
    fw_note : str
        Why it was not computed, or "".
    first_order_stationary : bool
        fw_gap within the tolerance and the readout certified: a first-order stationary
        point of the training problem (never a claim of global optimality).
    global_bound : dict or None
        The figures of :func:`fenchel_idl.global_bound` (``GlobalBound.to_dict()``: a
        certified lower bound on the training loss of every model of the problem's class,
        SCIP's status, nodes, time, its bound trace) when it was computed, else None. The
        certificate prints the gap of :attr:`true_loss` to that bound.
    """

    blocks_certified: bool
    max_gap: float
    solve_events: list
    monotone: bool
    max_increase: float
    rejected_updates: int
    stationary: bool
    last_improvement: float
    pf_eigenvalue: float
    norm_inf: float
    kappa: float
    well_posed: bool
    equilibrium_residual: float
    relaxed_objective: float
    true_loss: float
    relaxation_gap: float
    readout_certified: bool
    train_metric: dict
    refined: bool = False
    describes: str = "the BCD model with its optimal readout"
    units: str = "standardized"
    stop_reason: str = ""
    max_gap_abs: float = 0.0
    readout_gap: float = float("nan")
    readout_note: str = ""
    bcd_true_loss: float = float("nan")
    bcd_objective: float = float("nan")
    refine_start_objective: float = float("nan")
    refine_end_objective: float = float("nan")
    refine_worse: bool = False
    fw_gap: float = float("nan")
    fw_note: str = ""
    first_order_stationary: bool = False
    scope: str = SCOPE
    global_bound: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the certificate as strict JSON (a value that does not apply, nan, as null)."""
        path = Path(path)
        data = {k: None if isinstance(v, float) and np.isnan(v) else v
                for k, v in self.to_dict().items()}
        data["global_bound"] = _strict_json(data["global_bound"])
        path.write_text(json.dumps(data, indent=2, default=float))
        return path

    def __str__(self) -> str:
        return "\n".join(self._header() + self._bcd_lines() + self._refine_lines()
                         + self._model_lines())

    def _header(self) -> list[str]:
        return [f"Certificate of the returned model: {self.describes}",
                (f"  units: losses and objectives in {self.units} units; training metric in raw "
                "units"),
                f"  {self.scope}"]

    def _bcd_lines(self) -> list[str]:
        ok = {True: "yes", False: "NO"}
        return [
            "BCD",
            f"  stopped                      : {self.stop_reason or 'unknown'}",
            (f"  no improving step found along the BCD direction : {ok[self.stationary]} "
            f"(last sweep improved the relaxed objective by {self.last_improvement:.2e})"),
            (f"  every block certified        : {ok[self.blocks_certified]} (max gap "
            f"{self.max_gap:.2e} relative, {self.max_gap_abs:.2e} absolute; "
            f"{len(self.solve_events)} uncertified attempt(s) recorded)"),
            (f"  objective monotone per stage : {ok[self.monotone]} (max increase "
            f"{self.max_increase:.2e}, {self.rejected_updates} update(s) rejected)"),
            (f"  relaxed objective            : {self.relaxed_objective:.6g} (true objective of "
            f"the same model {self.relaxed_objective + self.relaxation_gap:.6g}, relaxation gap "
            f"{self.relaxation_gap:+.3g})"),
            f"  after the optimal readout    : true loss {self.bcd_true_loss:.6g}, objective "
            f"{self.bcd_objective:.6g} (readout gap bound {self.readout_gap:.2e}"
            + (f"; {self.readout_note}" if self.readout_note else "") + ")",
        ]

    def _refine_lines(self) -> list[str]:
        if np.isnan(self.refine_start_objective):
            return []
        lines = ["Refinement",
                 f"  true objective               : {self.refine_start_objective:.6g} at its "
                 f"start -> {self.refine_end_objective:.6g} at its end"
                 + ("" if self.refined else " (it kept the BCD model)")]
        if self.refine_worse:
            lines.append("  WARNING                      : the refinement ended worse than its "
                         "start")
        return lines

    def _model_lines(self) -> list[str]:
        ok = {True: "yes", False: "NO"}
        metric = ", ".join(f"{k} = {v:.4g}" for k, v in self.train_metric.items())
        fw = (f"Frank-Wolfe gap over (A, B, b) {self.fw_gap:.3g} "
              f"({self.fw_gap / max(abs(self.true_loss), 1e-300):.3g} times the loss)"
              if np.isfinite(self.fw_gap) else f"not computed ({self.fw_note})")
        return [
            "Returned model",
            (f"  well-posed                   : {ok[self.well_posed]} (lambda_PF(|A|) = "
            f"{self.pf_eigenvalue:.4f}, ||A||_inf = {self.norm_inf:.4f} <= kappa = "
            f"{self.kappa})"),
            f"  equilibrium residual         : {self.equilibrium_residual:.2e}",
            f"  true loss at equilibrium     : {self.true_loss:.6g}",
            f"  readout globally optimal     : {ok[self.readout_certified]}"
            + (" (gradient refinement moved (C, D) after the certified readout)"
               if self.refined and not self.readout_certified else ""),
            f"  first-order stationary       : {ok[self.first_order_stationary]} ({fw})",
            f"  training metric              : {metric}",
        ] + self._global_lines()

    def _global_lines(self) -> list[str]:
        """The gap of the returned model to the certified global lower bound, when computed;
        and the loss of a better model that the global search found (it is not returned)."""
        if self.global_bound is None:
            return []
        lines = [(f"  global gap                   : "
                 f"{global_gap_line(self.global_bound, self.true_loss)}")]
        best = self.global_bound.get("upper_bound")
        if best is not None and best < self.true_loss * (1 - 1e-9):
            lines.append(f"  better model found by SCIP   : true loss {best:.6g} (not the returned "
                         "model)")
        return lines


def global_gap_line(bound: dict, loss: float) -> str:
    """The certificate's "global gap" text for a model of training loss ``loss`` against a
    global lower bound (the fields lower_bound, status, nodes and time of
    ``GlobalBound.to_dict()``): (loss - lower_bound) / loss in %, and the solve's figures."""
    loss, lower = float(loss), float(bound["lower_bound"])
    gap = 0.0 if loss <= 0 else max(loss - lower, 0.0) / loss
    return (f"{100 * gap:.2f}% (true loss {loss:.6g} >= global lower bound {lower:.6g}; "
            f"SCIP {bound['status']}, {bound['nodes']} nodes, {bound['time']:.1f} s)")


def _strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts, lists, tuples) as None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


@dataclass
class BCDResult:
    """The result of :func:`fenchel_idl.solve_bcd`.

    Attributes
    ----------
    model : ImplicitModel
        The trained model, on raw inputs.
    history : list of BlockRecord
    certificate : Certificate
    start_model : ImplicitModel
        The random-feature start (A = 0, random B, optimal readout).
    start_metric : dict
        Its training metric.
    n_sweeps : int
    lam : ndarray of shape (n,)
        Final lam.
    refine_history : object or None
        The history of the optional refinement stage.
    equilibrium_losses : list of (sweep, float)
        With ``Schedule(restart=True)``: the loss (standardized units) of the current model
        at its true equilibrium, at the start of every stage.
    """

    model: ImplicitModel
    history: list
    certificate: Certificate
    start_model: ImplicitModel
    start_metric: dict
    n_sweeps: int
    lam: Array
    refine_history: Any = None
    timings: dict = field(default_factory=dict)
    equilibrium_losses: list = field(default_factory=list)
