"""The one finish path of every BCD driver: the optimal readout at the true equilibrium,
the optional gradient refinement, and the certificate of the returned model.

The readout recomputes X as the true equilibrium of the final (A, B) and re-solves (C, D)
on it; that readout is globally optimal for the given (A, B) when its solve is certified.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fenchel_idl.blocks.block_solvers import BlockSolver, State
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.drivers.gradients import loss_gradients
from fenchel_idl.drivers.records import Certificate
from fenchel_idl.drivers.refine import RefineOptions, refine
from fenchel_idl.drivers.state import equilibrium, train_metric
from fenchel_idl.errors import ConvergenceWarning, InputTypeError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.wellposedness import pf_eigenvalue
from fenchel_idl.problem.training_problem import TrainingProblem

__all__ = ["DescentStats", "Finished", "check_run_options", "finish", "refine_stage",
           "stationarity_gap"]


@dataclass
class DescentStats:
    """What the descent phase of a driver hands to the certificate.

    Attributes
    ----------
    used : list
        The history records of the block solves whose results were used (accepted), each
        with ``certified``, ``gap`` and ``kkt_residual``.
    events : list of dict
        The uncertified solve attempts.
    max_increase : float
        Largest relative increase of the monotone quantity (-inf when none was measured).
    rejected : int
        Updates rejected because they would have increased it.
    last_improvement : float
        Relative improvement of the last sweep (epoch).
    relaxed_objective, relaxed_loss : float
        The relaxed objective, and its loss part, at the end of the descent.
    stop_reason : str
        Why the descent stopped.
    hit_max : bool
        It stopped because it reached its cap on sweeps (epochs), not by its own test.
    """

    used: list
    events: list
    max_increase: float
    rejected: int
    last_improvement: float
    relaxed_objective: float
    relaxed_loss: float
    stop_reason: str = ""
    hit_max: bool = False


@dataclass
class Finished:
    """The outcome of :func:`finish`."""

    model: ImplicitModel
    certificate: Certificate
    refine_history: Any
    readout_info: SolveInfo
    timings: dict


def check_run_options(callback: Any, init: Any, refine: Any) -> None:
    """The arguments both drivers take: ``callback`` callable or None, ``init`` None,
    "random" or an ImplicitModel, ``refine`` None, a bool, a dict or RefineOptions."""
    if callback is not None and not callable(callback):
        raise InputTypeError(f"'callback' must be callable; got {type(callback).__name__}.")
    if init is not None and not isinstance(init, (str, ImplicitModel)):
        raise InputTypeError(f"'init' must be None, 'random' or an ImplicitModel; got "
                             f"{type(init).__name__}.")
    if refine is not None and not isinstance(refine, (bool, dict, RefineOptions)):
        raise InputTypeError(f"'refine' must be None, a bool, a dict or RefineOptions; got "
                             f"{refine!r}.")


def refine_stage(problem: TrainingProblem, model: ImplicitModel, options: Any, seed: int = 0,
                 progress: bool = False) -> tuple[ImplicitModel, Any]:
    """The optional gradient refinement after BCD (``options`` as the ``refine`` argument of
    :func:`fenchel_idl.solve_bcd`), on the problem's raw data, inside its well-posedness
    ball; returns (model, history)."""
    opts = {} if options is True else (dict(options) if isinstance(options, dict)
                                       else asdict(options))
    opts.setdefault("kappa", problem.kappa)
    opts.setdefault("seed", seed)
    opts.setdefault("progress", progress)
    result = refine(model, problem.U_raw, problem.Y_raw, loss=problem.loss.name,
                    penalties=list(problem.penalties), **opts)
    return result.model, result.history


@contextlib.contextmanager
def _phase(name: str, on_interrupt: Callable[[str, BaseException], BaseException] | None
           ) -> Iterator[None]:
    """Translate a Ctrl-C in the phase ``name`` with ``on_interrupt`` (when given)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if on_interrupt is None:
            raise
        raise on_interrupt(name, exc) from None


def _same_model(a: ImplicitModel, b: ImplicitModel) -> bool:
    """Whether two models have equal matrices (a refinement that kept its start)."""
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("A", "B", "C", "D", "bias_x", "bias_y"))


def finish(problem: TrainingProblem, s: State, readout: BlockSolver, stats: DescentStats, *,
           tol: float, stage_tol: float, refine: Any = None, seed: int = 0,
           progress: bool = False,
           on_interrupt: Callable[[str, BaseException], BaseException] | None = None
           ) -> Finished:
    """The optimal readout at the true equilibrium of s's (A, B), the optional refinement,
    and the certificate of the returned model.

    ``on_interrupt(phase, exc)`` makes the exception raised for a Ctrl-C in the phase
    "readout" or "refine" (a plain KeyboardInterrupt propagates when it is None).

    Warns
    -----
    ConvergenceWarning
        The final equilibrium did not converge, or the refinement ended worse (in the true
        objective) than its start.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with _phase("readout", on_interrupt):
        final = s.copy()
        final.X, eq_info = equilibrium(problem, final, X0=s.X)
        # BCD's own (C, D) at the true equilibrium: its objective (loss + penalties), the
        # counterpart of the relaxed objective (which carries the same penalties)
        state_objective = _true_objective(problem, final)[1]
        final, readout_info = readout.solve(final)
    timings["final_readout"] = time.perf_counter() - t0
    stages = {"state_objective": state_objective, "bcd": _true_objective(problem, final),
              "refine": None}
    model = problem.to_user_model(final.A, final.B, final.b, final.C, final.D, final.d)
    refine_history, refined = None, False
    if refine:
        t0 = time.perf_counter()
        with _phase("refine", on_interrupt):
            bcd_model = model
            model, refine_history = refine_stage(problem, model, refine, seed, progress)
            refined = not _same_model(model, bcd_model)
            A, B, b, C, D, d = problem.from_user_model(model)
            final = State(A, B, b, C, D, d, final.X, final.lam)
            final.X, eq_info = equilibrium(problem, final, X0=final.X)
            stages["refine"] = _true_objective(problem, final)
        timings["refine"] = time.perf_counter() - t0
    cert = _certificate(problem, final, model, stats, tol, stage_tol, readout_info=readout_info,
                        refined=refined, eq_residual=eq_info.residual, stages=stages)
    if not eq_info.converged:
        warnings.warn("the final equilibrium did not converge; see the certificate.",
                      ConvergenceWarning, stacklevel=3)
    if cert.refine_worse:
        warnings.warn(f"the gradient refinement ended worse than its start: true objective "
                      f"{cert.refine_start_objective:.6g} -> {cert.refine_end_objective:.6g} "
                      f"({cert.units} units); see the certificate.", ConvergenceWarning,
                      stacklevel=4)
    return Finished(model, cert, refine_history, readout_info, timings)


def _true_objective(problem: TrainingProblem, s: State) -> tuple[float, float]:
    """(loss, loss + penalties) of s's model at the states s.X (its true equilibrium)."""
    loss, _, pen = problem.objective_parts(s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam)
    return float(loss), float(loss + pen)


def stationarity_gap(problem: TrainingProblem, s: State) -> tuple[float, str]:
    """The Frank-Wolfe gap of the true training loss over the feasible set of (A, B, b) at
    s's model, with (C, D, d) fixed, in the problem's units:

        max over feasible (A', B', b') of <grad, (A, B, b) - (A', B', b')>

    with the implicit gradients of :func:`fenchel_idl.drivers.gradients.loss_gradients`
    (section 6.2). The feasible set is the rows of A in gamma_i ||A_i||_1 <= kappa and,
    with a bound on B, the rows of B in l1 balls and |b_i| <= bound. When (C, D, d) is the
    optimal readout for (A, B), this is the gap of the problem with the readout re-solved
    (Danskin). Zero exactly at a first-order stationary point; an upper bound on the
    decrease one step can promise, not on the distance to a global optimum.

    Returns (gap, note): gap nan with a note when it does not apply (a penalty on A or B).
    """
    pb = problem
    if any(set(pn.matrices) & {"A", "B"} for pn in pb.penalties):
        return float("nan"), "a penalty on A or B"
    model = ImplicitModel(s.A, s.B, s.C, s.D, pb.activation, s.b, s.d)
    g = loss_gradients(model, pb.U, pb.Y, pb.loss)
    radius = pb.kappa / state_lipschitz(pb.activation, pb.n)
    gap = float(np.sum(g.A * s.A) + np.sum(radius * np.abs(g.A).max(axis=1, initial=0.0)))
    parts = [(g.B, s.B)] + ([(g.bias_x[:, None], s.b[:, None])] if pb.bias else [])
    for G, M in parts:
        if pb.bounds.B is None:
            gap += 0.0 if not np.any(G) else float("inf")
        else:
            gap += float(np.sum(G * M) + pb.bounds.B * np.abs(G).max(axis=1, initial=0.0).sum())
    return max(gap, 0.0), ""


def _describe(refined: bool, ran: bool) -> str:
    if refined:
        return "the refined model (gradient refinement after BCD and its optimal readout)"
    if ran:
        return "the BCD model with its optimal readout (the refinement kept it)"
    return "the BCD model with its optimal readout"


def _certificate(problem: TrainingProblem, final: State, model: ImplicitModel,
                 stats: DescentStats, tol: float, stage_tol: float, *, readout_info: SolveInfo,
                 refined: bool, eq_residual: float, stages: dict) -> Certificate:
    """The certificate of ``model`` (whose standardized variables are ``final``), with one
    section per stage: ``stages`` holds BCD's final state's true loss, the BCD model's
    (loss, objective) and the refined model's (None without refinement)."""
    true_loss, true_obj = _true_objective(problem, final)
    gam = state_lipschitz(problem.activation, problem.n)
    norm_inf = float(np.max(gam * np.abs(final.A).sum(axis=1)))
    lam_pf = pf_eigenvalue(gam[:, None] * np.abs(final.A))
    used = stats.used
    gaps = [g for r in used for g in (r.gap, r.kkt_residual) if g is not None]
    absolute = [r.abs_gap for r in used if getattr(r, "abs_gap", None) is not None]
    finite = np.isfinite(stats.max_increase)
    readout_ok = bool(readout_info.certified) and not refined
    fw, fw_note = stationarity_gap(problem, final)
    bcd_loss, bcd_obj = stages["bcd"]
    ref = stages["refine"]
    r_abs = readout_info.abs_gap if readout_info.abs_gap is not None else (
        (readout_info.gap or 0.0) * max(1.0, abs(readout_info.objective or 0.0)))
    return Certificate(
        blocks_certified=all(r.certified for r in used) and bool(readout_info.certified),
        max_gap=float(max(gaps)) if gaps else 0.0,
        solve_events=stats.events,
        monotone=bool(stats.max_increase <= tol) if finite else True,
        max_increase=float(stats.max_increase) if finite else 0.0,
        rejected_updates=stats.rejected,
        stationary=bool(not stats.hit_max and abs(stats.last_improvement) < stage_tol)
        or stats.stop_reason.startswith("stationary"),
        last_improvement=float(stats.last_improvement),
        pf_eigenvalue=lam_pf, norm_inf=norm_inf, kappa=problem.kappa,
        well_posed=bool(lam_pf < 1 and norm_inf <= problem.kappa + 1e-9),
        equilibrium_residual=eq_residual,
        relaxed_objective=float(stats.relaxed_objective), true_loss=float(true_loss),
        relaxation_gap=float(stages["state_objective"] - stats.relaxed_objective),
        readout_certified=readout_ok,
        train_metric=train_metric(problem, model), refined=refined,
        describes=_describe(refined, ref is not None),
        units="standardized" if problem.standardize else "raw",
        stop_reason=stats.stop_reason, max_gap_abs=float(max(absolute)) if absolute else 0.0,
        readout_gap=float(r_abs), readout_note=readout_info.note,
        bcd_true_loss=bcd_loss, bcd_objective=bcd_obj,
        refine_start_objective=bcd_obj if ref is not None else float("nan"),
        refine_end_objective=ref[1] if ref is not None else float("nan"),
        refine_worse=bool(ref is not None and ref[1] > bcd_obj + 1e-12 * max(1.0, abs(bcd_obj))),
        fw_gap=fw, fw_note=fw_note,
        first_order_stationary=bool(readout_ok and fw <= tol * max(1.0, abs(true_obj))))
