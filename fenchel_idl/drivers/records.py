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

__all__ = ["BCDResult", "BatchRecord", "BlockRecord", "Certificate", "SolveOutcome", "outcome"]

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
    """

    solver: str
    status: str
    gap: float | None
    kkt_residual: float | None
    certified: bool
    accepted: bool


def outcome(info, accepted: bool) -> dict:
    """The :class:`SolveOutcome` fields of a record, from a SolveInfo."""
    return {"solver": info.solver, "status": info.status, "gap": info.gap,
            "kkt_residual": info.kkt_residual, "certified": info.certified, "accepted": accepted}


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
        "X", "AB", "CD" (or "restart" for the start of an epoch).
    batch : int
        Number of samples of the batch.
    surrogate : float
        H after the update: the majorizer of the relaxed objective that the method
        decreases (H >= J; H = J at the start of every epoch).
    objective : float or None
        The relaxed objective J after the update, computed on the full data when
        ``monitor="step"`` (and for "restart" records); None otherwise.
    time : float
        Seconds the update took.
    """

    epoch: int
    step: int
    block: str
    batch: int
    surrogate: float
    objective: float | None
    time: float


@dataclass(frozen=True)
class Certificate:
    """What the run certifies about its result.

    Attributes
    ----------
    blocks_certified : bool
        Every block solve that was used had status optimal and a gap within tolerance.
    max_gap : float
        Largest relative duality gap (or KKT residual) among the accepted block solves.
    solve_events : list of dict
        Every solve attempt that was not certified (fallbacks, failures), with its status.
    monotone : bool
        The relaxed objective never increased within a stage of fixed lam.
    max_increase : float
        Largest relative increase observed within a stage (<= 0 when monotone).
    rejected_updates : int
        Block updates rejected because they would have increased the objective.
    stationary : bool
        The last sweep improved the relaxed objective by less than the stage tolerance.
    last_improvement : float
    pf_eigenvalue : float
        lambda_PF(|A|) of the final model (< 1: well-posed by Thm 2.2).
    norm_inf : float
        ||N(A, gamma)||_inf of the final model.
    kappa : float
    well_posed : bool
        pf_eigenvalue < 1 and norm_inf <= kappa (up to 1e-9).
    equilibrium_residual : float
        Relative residual of the final equilibrium solve.
    relaxed_objective : float
        Relaxed objective (standardized units) at the end of the last stage.
    true_loss : float
        Training loss of the final model at its true equilibrium (standardized units).
    relaxation_gap : float
        true_loss - (loss part of the relaxed objective at the end of the last stage).
    readout_certified : bool
        The final (C, D) solve on the true equilibrium is certified optimal, so the
        readout is globally optimal for the final (A, B).
    train_metric : dict
        Training RMSE (regression, raw units) or accuracy (classification).
    refined : bool
        Gradient refinement ran after BCD and changed the model: it moved (C, D) away from
        the certified readout, so ``readout_certified`` is False. A refinement that kept
        the BCD model (``keep_best`` with no better epoch) leaves both as they were.
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

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the certificate as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=float))
        return path

    def __str__(self) -> str:
        ok = {True: "yes", False: "NO"}
        metric = ", ".join(f"{k} = {v:.4g}" for k, v in self.train_metric.items())
        lines = [
            "Certificate",
            f"  every block certified        : {ok[self.blocks_certified]} (max gap "
            f"{self.max_gap:.2e}; {len(self.solve_events)} uncertified attempt(s) recorded)",
            f"  objective monotone per stage : {ok[self.monotone]} (max increase "
            f"{self.max_increase:.2e}, {self.rejected_updates} update(s) rejected)",
            f"  block stationarity           : {ok[self.stationary]} (last sweep improved "
            f"{self.last_improvement:.2e})",
            f"  well-posed                   : {ok[self.well_posed]} (lambda_PF(|A|) = "
            f"{self.pf_eigenvalue:.4f}, ||A||_inf = {self.norm_inf:.4f} <= kappa = "
            f"{self.kappa})",
            f"  equilibrium residual         : {self.equilibrium_residual:.2e}",
            f"  relaxed objective            : {self.relaxed_objective:.6g}",
            f"  true loss at equilibrium     : {self.true_loss:.6g} (relaxation gap "
            f"{self.relaxation_gap:+.3g})",
            f"  readout globally optimal     : {ok[self.readout_certified]}"
            + (" (gradient refinement moved (C, D) after the certified readout)"
               if self.refined and not self.readout_certified else ""),
            f"  training metric              : {metric}",
        ]
        return "\n".join(lines)


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
