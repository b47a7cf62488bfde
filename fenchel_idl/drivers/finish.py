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
from fenchel_idl.drivers.records import Certificate
from fenchel_idl.drivers.refine import RefineOptions, refine
from fenchel_idl.drivers.state import equilibrium, train_metric
from fenchel_idl.errors import ConvergenceWarning, InputTypeError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.wellposedness import pf_eigenvalue
from fenchel_idl.problem.training_problem import TrainingProblem

__all__ = ["DescentStats", "Finished", "check_run_options", "finish", "refine_stage"]


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
    """

    used: list
    events: list
    max_increase: float
    rejected: int
    last_improvement: float
    relaxed_objective: float
    relaxed_loss: float


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
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with _phase("readout", on_interrupt):
        final = s.copy()
        final.X, eq_info = equilibrium(problem, final, X0=s.X)
        final, readout_info = readout.solve(final)
    timings["final_readout"] = time.perf_counter() - t0
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
        timings["refine"] = time.perf_counter() - t0
    cert = _certificate(problem, final, model, stats, tol, stage_tol,
                        readout_certified=readout_info.certified, refined=refined,
                        eq_residual=eq_info.residual)
    if not eq_info.converged:
        warnings.warn("the final equilibrium did not converge; see the certificate.",
                      ConvergenceWarning, stacklevel=3)
    return Finished(model, cert, refine_history, readout_info, timings)


def _certificate(problem: TrainingProblem, final: State, model: ImplicitModel,
                 stats: DescentStats, tol: float, stage_tol: float, *, readout_certified: bool,
                 refined: bool, eq_residual: float) -> Certificate:
    """The certificate of ``model`` (whose standardized variables are ``final``)."""
    true_loss = problem.loss.value(problem.Y, final.C @ final.X + final.D @ problem.U
                                   + final.d[:, None])
    gam = state_lipschitz(problem.activation, problem.n)
    norm_inf = float(np.max(gam * np.abs(final.A).sum(axis=1)))
    lam_pf = pf_eigenvalue(gam[:, None] * np.abs(final.A))
    gaps = [g for r in stats.used for g in (r.gap, r.kkt_residual) if g is not None]
    finite = np.isfinite(stats.max_increase)
    return Certificate(
        blocks_certified=all(r.certified for r in stats.used) and readout_certified,
        max_gap=float(max(gaps)) if gaps else 0.0,
        solve_events=stats.events,
        monotone=bool(stats.max_increase <= tol) if finite else True,
        max_increase=float(stats.max_increase) if finite else 0.0,
        rejected_updates=stats.rejected,
        stationary=bool(abs(stats.last_improvement) < stage_tol),
        last_improvement=float(stats.last_improvement),
        pf_eigenvalue=lam_pf, norm_inf=norm_inf, kappa=problem.kappa,
        well_posed=bool(lam_pf < 1 and norm_inf <= problem.kappa + 1e-9),
        equilibrium_residual=eq_residual,
        relaxed_objective=float(stats.relaxed_objective), true_loss=float(true_loss),
        relaxation_gap=float(true_loss - stats.relaxed_loss),
        readout_certified=readout_certified and not refined,
        train_metric=train_metric(problem, model), refined=refined)
