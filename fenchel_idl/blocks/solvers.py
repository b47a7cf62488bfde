"""Solving one convex block with a certificate and a solver-fallback policy.

Every solve returns a :class:`SolveInfo`: the solver, its status, the primal objective,
and a certificate of optimality, which is

- a duality gap (primal minus dual objective of the solver's conic form) for the
  interior-point solvers Clarabel and ECOS and for SCS, or
- the primal and dual residuals of the KKT conditions for OSQP (which reports no dual
  objective).

A solve counts as *certified* only when the status is ``optimal`` and the gap (or the
KKT residual) is within tolerance. A failed, inaccurate or uncertified solve is handled
by the ``on_failure`` policy:

- ``"fallback"`` (default): retry with the next solver of the chain for the block's cone;
  raise :class:`fenchel_idl.errors.SolverError` when none certifies;
- ``"warn"``: like fallback, but when no solver certifies keep the best solution found
  (recorded as uncertified), move its record to the end of the returned list, and emit a
  :class:`fenchel_idl.errors.SolverWarning`; raise only when none returned a solution;
- ``"raise"``: raise at the first solve that is not certified.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import cvxpy as cp
import cvxpy.settings as cps
from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import CLARABEL

from fenchel_idl.errors import InputTypeError, SolverError, SolverWarning, ValidationError
from fenchel_idl.validation import check_choice, check_real, describe

__all__ = ["CHAINS", "ON_FAILURE", "SolveInfo", "describe_solve", "solve_certified",
           "solve_strict"]

ON_FAILURE = ("fallback", "warn", "raise")


class _ClarabelWithGap(CLARABEL):
    """Clarabel through CVXPY, also reporting the primal and dual objectives."""

    def name(self):
        return "CLARABEL_GAP"

    def invert(self, solution, inverse_data):
        sol = super().invert(solution, inverse_data)
        sol.attr[cps.EXTRA_STATS] = {"pcost": float(solution.obj_val),
                                     "dcost": float(solution.obj_val_dual),
                                     "status": str(solution.status)}
        return sol


_CLARABEL = _ClarabelWithGap()

#: Solver chains by cone type of the block, first choice first.
CHAINS: dict[str, tuple[str, ...]] = {
    "qp": ("CLARABEL", "OSQP", "ECOS", "SCS"),
    "socp": ("CLARABEL", "ECOS", "SCS"),
    "exp": ("CLARABEL", "ECOS", "SCS"),
    "sdp": ("CLARABEL", "SCS"),
}

_OPTIONS: dict[str, dict[str, Any]] = {
    "OSQP": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iter": 100000, "polishing": True},
    "SCS": {"eps": 1e-7, "max_iters": 20000},
    "ECOS": {"max_iters": 500},
    # Clarabel stops at an absolute gap of 1e-8 or a gap of 1e-8 relative to its own
    # objective, which leaves out the problem's constant and can be a large number (see
    # _certificate): the relative test is made strict so that the absolute one decides
    "CLARABEL": {"tol_gap_rel": 1e-12},
}

#: Tolerances of :func:`solve_strict`, near the limits of double precision.
_STRICT: dict[str, dict[str, Any]] = {
    "CLARABEL": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12},
    "OSQP": {"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iter": 200000, "polishing": True},
    "ECOS": {"abstol": 1e-12, "reltol": 1e-12, "feastol": 1e-12, "max_iters": 500},
    "SCS": {"eps": 1e-10, "max_iters": 100000},
}


@dataclass(frozen=True)
class SolveInfo:
    """The record of one block solve.

    Attributes
    ----------
    block : str
        Which block ("X", "AB", "CD", "readout", ...).
    solver : str
    status : str
        CVXPY status ("optimal", "optimal_inaccurate", "infeasible", "unbounded",
        "solver_error", ...).
    objective : float or None
        Primal objective of the block (None when the solve failed).
    gap : float or None
        Relative duality gap |p - d| / max(1, |p|), when the solver reports d.
    kkt_residual : float or None
        max(primal, dual) residual, for solvers that report residuals instead (OSQP).
    certified : bool
        Status optimal and gap (or residual) within tolerance.
    time : float
        Wall time in seconds.
    attempt : int
        1 for the first solver tried, 2 for the first fallback, ...
    note : str
        Why the solve was not certified, or "".
    abs_gap : float or None
        The duality gap in the block objective's own units, |p - d| (the units of the
        training objective: every block objective is a part of it plus constants), where
        known.
    """

    block: str
    solver: str
    status: str
    objective: float | None
    gap: float | None
    kkt_residual: float | None
    certified: bool
    time: float
    attempt: int
    note: str = ""
    abs_gap: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _certificate(name: str, problem: cp.Problem, tol: float):
    """(gap, residual, ok, note, absolute gap) from the solver's own statistics.

    The relative gap is the absolute one over max(1, |value of the problem as posed|),
    constants included: the solver's own objective leaves CVXPY's constant offset out, and
    can be a large number whose relative gap allows absolute errors far above the value
    the block is about."""
    stats = problem.solver_stats.extra_stats if problem.solver_stats is not None else None
    gap = res = absolute = p = d = None
    if name == "CLARABEL" and isinstance(stats, dict):
        p, d = stats["pcost"], stats["dcost"]
    elif name == "ECOS" and isinstance(stats, dict) and "info" in stats:
        p, d = stats["info"]["pcost"], stats["info"]["dcost"]
        res = max(stats["info"]["pres"], stats["info"]["dres"])
    elif name == "SCS" and isinstance(stats, dict) and "info" in stats:
        p, d = stats["info"]["pobj"], stats["info"]["dobj"]
        res = max(stats["info"]["res_pri"], stats["info"]["res_dual"])
    elif name == "OSQP" and stats is not None and hasattr(stats, "info"):
        res = max(float(stats.info.prim_res), float(stats.info.dual_res))
    if p is not None and d is not None:
        absolute = abs(float(p) - float(d))
        gap = absolute / max(1.0, abs(float(problem.value)))
    if gap is not None:
        ok = gap <= tol
        note = "" if ok else f"duality gap {gap:.2e} above tolerance {tol:.1e}"
    elif res is not None:
        ok = res <= tol
        note = "" if ok else f"KKT residual {res:.2e} above tolerance {tol:.1e}"
    else:
        ok, note = False, "solver reported neither a dual objective nor residuals"
    return gap, res, ok, note, absolute


def solve_certified(problem: cp.Problem, block: str, cone: str = "qp",
                    solvers: tuple[str, ...] | None = None, on_failure: str = "fallback",
                    tol: float = 1e-6, warm_start: bool = True) -> list[SolveInfo]:
    """Solve ``problem`` with the fallback chain for ``cone``; return every attempt.

    The last record of the returned list is the one whose solution the variables hold.
    The records are in the order of the attempts (see :attr:`SolveInfo.attempt`), except
    under ``on_failure="warn"`` when the kept best solution came from an earlier attempt:
    its record is then moved to the end.

    Parameters
    ----------
    problem : cvxpy.Problem
    block : str
        Name recorded in the SolveInfo.
    cone : {"qp", "socp", "exp", "sdp"}
        Selects the default chain :data:`CHAINS`.
    solvers : tuple of str, optional
        An explicit chain (names as in ``cvxpy.installed_solvers()``).
    on_failure : {"fallback", "warn", "raise"}
    tol : float
        Tolerance on the relative duality gap or KKT residual, > 0.

    Warns
    -----
    SolverWarning
        With ``on_failure="warn"``, when no solver certifies and an uncertified solution
        is kept.

    Raises
    ------
    SolverError
        When no solver certifies the block (or at the first failure with "raise"). The
        error carries the last status and every attempt.
    ValidationError
        Unknown cone, policy, or solver name, or a tolerance that is not > 0 and finite.
    InputTypeError
        ``problem`` is not a ``cvxpy.Problem``.
    """
    if not isinstance(problem, cp.Problem):
        raise InputTypeError(f"'problem' must be a cvxpy.Problem; got {describe(problem)}.")
    check_choice("on_failure", on_failure, ON_FAILURE)
    tol = check_real("tol", tol, 0.0, None, low_open=True)
    check_choice("cone", cone, tuple(CHAINS))
    chain = tuple(solvers) if solvers else CHAINS[cone]
    installed = set(cp.installed_solvers())
    for s in chain:
        if s not in installed:
            raise ValidationError(f"'solver' must be one of the installed solvers "
                                  f"{sorted(installed)}; got {s!r}.")
    attempts: list[SolveInfo] = []
    best: tuple[float, dict, int] | None = None  # (score, variable values, index in attempts)
    for k, name in enumerate(chain, 1):
        t0 = time.perf_counter()
        status, value, note = "solver_error", None, ""
        try:
            solver = _CLARABEL if name == "CLARABEL" else name
            problem.solve(solver=solver, warm_start=warm_start, **_OPTIONS.get(name, {}))
            status = problem.status
            value = problem.value
        except cp.error.SolverError as exc:
            note = f"solver error: {exc}"
        except Exception as exc:  # a solver crashing inside
            note = f"solver error: {type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - t0
        gap = res = absolute = None
        ok = False
        if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and value is not None:
            gap, res, ok, cert_note, absolute = _certificate(name, problem, tol)
            if status != cp.OPTIMAL:
                ok = False
                cert_note = cert_note or "solver reported optimal_inaccurate"
            note = note or cert_note
            values = {v.id: v.value for v in problem.variables()}
            score = gap if gap is not None else (res if res is not None else float("inf"))
            if best is None or score < best[0]:
                best = (score, values, len(attempts))
        elif not note:
            note = f"status {status}"
        info = SolveInfo(block, name, status, None if value is None else float(value), gap, res,
                         ok, elapsed, k, note, absolute)
        attempts.append(info)
        if ok:
            return attempts
        if on_failure == "raise":
            break
    if on_failure == "warn" and best is not None:
        for v in problem.variables():
            v.value = best[1][v.id]
        kept = attempts.pop(best[2])
        attempts.append(kept)  # the last record describes the solution the variables hold
        warnings.warn(f"block {block!r}: no solver certified optimality; keeping the best "
                      f"uncertified solution, from {kept.solver} (attempt {kept.attempt}, "
                      f"status {kept.status}: {kept.note}). The certificate records it.",
                      SolverWarning, stacklevel=2)
        return attempts
    raise SolverError(f"block {block!r} could not be solved to certified optimality with "
                      f"{[a.solver for a in attempts]}: last status {attempts[-1].status!r} "
                      f"({attempts[-1].note}).", status=attempts[-1].status, attempts=attempts)


def solve_strict(problem: cp.Problem, solver: str) -> bool:
    """Solve ``problem`` again with ``solver`` at the tolerances of :data:`_STRICT`; return
    whether its variables now hold a solution (status optimal or optimal_inaccurate).

    The solver's own statistics certify nothing here: this is for a caller that checks the
    point itself with a bound of the posed problem (the Gram-path readout of
    :class:`fenchel_idl.blocks.cvxpy_blocks.Blocks`, whose posed-problem bound grows like
    the square root of the solver's gap, so a solve at the default tolerance can miss it).
    A solver without strict settings, or one that fails, returns False."""
    if solver not in _STRICT:
        return False
    try:
        with warnings.catch_warnings():  # CVXPY's "may be inaccurate": the caller checks
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=_CLARABEL if solver == "CLARABEL" else solver,
                          warm_start=False, **_STRICT[solver])
    except Exception:  # a solver error or crash: the caller falls back
        return False
    return problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and all(
        v.value is not None for v in problem.variables())


def describe_solve(info: SolveInfo) -> str:
    """One line on a solve: solver, gap (or KKT residual), certified or why not."""
    g = info.gap if info.gap is not None else info.kkt_residual
    figure = f"gap {g:.2e}" if g is not None else "no gap"
    return f"{info.solver}, {figure}, " + ("certified" if info.certified
                                           else f"NOT certified ({info.note or info.status})")
