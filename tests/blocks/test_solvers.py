"""The solver-failure policy (solvers.solve_certified and solve_bcd), with injected failures.

``cvxpy.Problem.solve`` is wrapped so that chosen solvers raise ``cvxpy.error.SolverError``,
report ``optimal_inaccurate`` (after a real solve, so a solution exists) or report
``infeasible`` (no solution). Every test checks that

- "fallback" moves down the chain and records every attempt;
- "raise" stops at the first uncertified solve with a SolverError carrying its status and
  the attempts;
- "warn" keeps the best uncertified solution, warns, and marks it uncertified;
- in solve_bcd every uncertified attempt appears in ``certificate.solve_events`` and a
  failed or inaccurate solve is never reported as certified optimal.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import FenchelIDLError
from fenchel_idl.blocks.solvers import CHAINS, SolveInfo, solve_certified
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import SolverError
from fenchel_idl.problem.training_problem import TrainingProblem

_REAL_SOLVE = cp.Problem.solve
QP_CHAIN = CHAINS["qp"]  # ("CLARABEL", "OSQP", "ECOS", "SCS")


def _solver_name(kwargs) -> str:
    s = kwargs.get("solver")
    name = s if isinstance(s, str) else (s.name() if s is not None else "DEFAULT")
    return "CLARABEL" if str(name).upper().startswith("CLARABEL") else str(name).upper()


class Injector:
    """Wraps cvxpy.Problem.solve; ``plan`` maps a solver name to a failure mode.

    Modes: "ok", "error" (raise cvxpy.error.SolverError), "inaccurate" (solve, then report
    optimal_inaccurate), "infeasible" (report infeasible with no solution). ``once`` makes
    the next solve of any solver fail with the given mode, then behave again.
    """

    def __init__(self, plan=None):
        self.plan = dict(plan or {})
        self.once: str | None = None
        self.calls: list[tuple[str, str]] = []

    def __call__(self, problem, *args, **kwargs):
        name = _solver_name(kwargs)
        mode = self.plan.get(name, "ok")
        if self.once is not None:
            mode, self.once = self.once, None
        self.calls.append((name, mode))
        if mode == "error":
            raise cp.error.SolverError(f"injected failure of {name}")
        if mode == "infeasible":
            problem._clear_solution()
            problem._status = cp.INFEASIBLE
            problem._value = np.inf
            return problem._value
        value = _REAL_SOLVE(problem, *args, **kwargs)
        if mode == "inaccurate":
            problem._status = cp.OPTIMAL_INACCURATE
        return value


@pytest.fixture
def inject(monkeypatch):
    def install(plan=None):
        inj = Injector(plan)
        monkeypatch.setattr(cp.Problem, "solve", lambda self, *a, **k: inj(self, *a, **k))
        return inj
    return install


def _least_squares():
    """min ||M x - v||^2 + ||x||_1 with a known answer from an independent solve."""
    rng = np.random.default_rng(7)
    M = rng.standard_normal((8, 3))
    v = rng.standard_normal(8)
    x = cp.Variable(3, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(M @ x - v) + 0.1 * cp.norm1(x)))
    return prob, x


def _reference_x():
    prob, x = _least_squares()
    _REAL_SOLVE(prob, solver="CLARABEL")
    return np.array(x.value)


def _tiny_problem(activation="leaky_relu", **kw) -> TrainingProblem:
    """n = 3, m = 20. Leaky ReLU keeps every block on the compiled CVXPY path, where the
    failures are injected (the batched first-order blocks cover plain ReLU only)."""
    rng = np.random.default_rng(3)
    U = rng.uniform(-1.0, 1.0, (2, 20))
    Y = np.sin(U.sum(axis=0, keepdims=True))
    return TrainingProblem(U, Y, n=3, kappa=0.5, activation=activation, **kw)


# -- solve_certified -------------------------------------------------------------------------

def test_no_failure_is_certified_at_first_attempt(inject):
    inj = inject()
    prob, x = _least_squares()
    attempts = solve_certified(prob, "B", cone="qp")
    assert [a.solver for a in attempts] == ["CLARABEL"]
    a = attempts[0]
    assert isinstance(a, SolveInfo)
    assert a.certified and a.status == "optimal" and a.attempt == 1 and a.note == ""
    assert a.gap is not None and a.gap <= 1e-6
    assert inj.calls == [("CLARABEL", "ok")]
    np.testing.assert_allclose(x.value, _reference_x(), atol=1e-6)


@pytest.mark.parametrize("mode, status", [("error", "solver_error"),
                                          ("inaccurate", "optimal_inaccurate"),
                                          ("infeasible", "infeasible")])
def test_fallback_moves_to_next_solver_and_records_the_failure(inject, mode, status):
    inj = inject({"CLARABEL": mode})
    prob, x = _least_squares()
    attempts = solve_certified(prob, "B", cone="qp", on_failure="fallback")
    assert [a.solver for a in attempts] == list(QP_CHAIN[:2])
    first, second = attempts
    assert (first.status, first.certified, first.attempt) == (status, False, 1)
    assert first.note, "an uncertified attempt must say why"
    if mode == "error":
        assert "injected failure" in first.note and first.objective is None
    assert second.certified and second.status == "optimal" and second.attempt == 2
    assert [c[0] for c in inj.calls] == list(QP_CHAIN[:2])
    # the variables hold the certified (second) solution
    np.testing.assert_allclose(x.value, _reference_x(), atol=1e-5)


def test_fallback_records_every_attempt_down_the_chain(inject):
    inject({"CLARABEL": "inaccurate", "OSQP": "infeasible", "ECOS": "error"})
    prob, _ = _least_squares()
    attempts = solve_certified(prob, "B", cone="qp", on_failure="fallback")
    assert [a.solver for a in attempts] == list(QP_CHAIN)
    assert [a.status for a in attempts] == ["optimal_inaccurate", "infeasible",
                                            "solver_error", "optimal"]
    assert [a.certified for a in attempts] == [False, False, False, True]
    assert [a.attempt for a in attempts] == [1, 2, 3, 4]


def test_fallback_raises_when_no_solver_certifies(inject):
    inject({s: "error" for s in QP_CHAIN[:-1]} | {QP_CHAIN[-1]: "inaccurate"})
    prob, _ = _least_squares()
    with pytest.raises(SolverError, match=r"block 'B'.*optimal_inaccurate") as info:
        solve_certified(prob, "B", cone="qp", on_failure="fallback")
    err = info.value
    assert isinstance(err, FenchelIDLError)
    assert err.status == "optimal_inaccurate"
    assert [a.solver for a in err.attempts] == list(QP_CHAIN)
    assert [a.status for a in err.attempts] == ["solver_error"] * 3 + ["optimal_inaccurate"]
    assert not any(a.certified for a in err.attempts)


def test_an_optimal_status_with_a_gap_above_tolerance_is_not_certified(inject):
    inject()
    prob, _ = _least_squares()
    with pytest.raises(SolverError) as info:
        solve_certified(prob, "B", cone="qp", solvers=("CLARABEL", "ECOS"), tol=1e-300)
    for a in info.value.attempts:
        assert a.status == "optimal" and not a.certified
        assert "above tolerance" in a.note


@pytest.mark.parametrize("mode, status", [("error", "solver_error"),
                                          ("inaccurate", "optimal_inaccurate"),
                                          ("infeasible", "infeasible")])
def test_raise_policy_stops_at_the_first_failure(inject, mode, status):
    inj = inject({"CLARABEL": mode})
    prob, _ = _least_squares()
    with pytest.raises(SolverError) as info:
        solve_certified(prob, "B", cone="qp", on_failure="raise")
    err = info.value
    assert err.status == status
    assert len(err.attempts) == 1
    assert err.attempts[0].solver == "CLARABEL" and not err.attempts[0].certified
    assert [c[0] for c in inj.calls] == ["CLARABEL"], "no fallback under 'raise'"
    assert "CLARABEL" in str(err) and status in str(err)


def test_warn_policy_keeps_an_uncertified_solution_and_warns(inject):
    inject({s: "inaccurate" for s in QP_CHAIN})
    prob, x = _least_squares()
    with pytest.warns(Warning, match=r"block 'B'.*no solver certified"):
        attempts = solve_certified(prob, "B", cone="qp", on_failure="warn")
    # every solver was tried, in chain order (the kept solution's record is moved last)
    in_order = sorted(attempts, key=lambda a: a.attempt)
    assert [a.solver for a in in_order] == list(QP_CHAIN)
    assert [a.attempt for a in in_order] == [1, 2, 3, 4]
    assert all(not a.certified and a.status == "optimal_inaccurate" for a in attempts)
    assert x.value is not None
    # the injected statuses were false alarms: the kept solution is the real optimum
    np.testing.assert_allclose(x.value, _reference_x(), atol=1e-4)


def test_warn_policy_raises_when_no_solver_returned_a_solution(inject):
    inject({"CLARABEL": "infeasible", "OSQP": "error", "ECOS": "error", "SCS": "infeasible"})
    prob, _ = _least_squares()
    with pytest.raises(SolverError) as info:
        solve_certified(prob, "B", cone="qp", on_failure="warn")
    assert info.value.status == "infeasible"
    assert len(info.value.attempts) == 4


def test_warn_policy_last_record_describes_the_kept_solution(inject):
    inject({"CLARABEL": "inaccurate", "OSQP": "error", "ECOS": "error", "SCS": "error"})
    prob, _ = _least_squares()
    with pytest.warns(Warning):
        attempts = solve_certified(prob, "B", cone="qp", on_failure="warn")
    kept = attempts[-1]
    assert kept.solver == "CLARABEL"
    assert kept.status == "optimal_inaccurate" and not kept.certified
    assert kept.objective == pytest.approx(prob.objective.value, rel=1e-9)


def test_explicit_chain_is_used_in_order(inject):
    inj = inject({"ECOS": "error"})
    prob, _ = _least_squares()
    attempts = solve_certified(prob, "B", cone="qp", solvers=("ECOS", "SCS"))
    assert [a.solver for a in attempts] == ["ECOS", "SCS"]
    assert [c[0] for c in inj.calls] == ["ECOS", "SCS"]
    assert attempts[-1].certified


# -- solve_bcd ------------------------------------------------------------------------------

def _events(result):
    return result.certificate.solve_events


def test_bcd_without_failures_is_certified_and_has_no_events(inject):
    inject()
    res = solve_bcd(_tiny_problem(), max_sweeps=2, seed=0)
    assert res.certificate.blocks_certified
    assert res.certificate.readout_certified
    assert _events(res) == []
    assert all(r.certified and r.status == "optimal" for r in res.history)


def test_bcd_warn_with_inaccurate_solver_is_never_reported_optimal(inject):
    inj = inject({s: "inaccurate" for s in QP_CHAIN})
    # readout balls that the least-squares minimizer leaves, so the readout needs the solver
    tight = {"C": 0.05, "D": 0.05}
    with pytest.warns(Warning, match="no solver certified"):
        res = solve_bcd(_tiny_problem(bounds=tight), max_sweeps=2, seed=0,
                        on_failure="warn", solver="CLARABEL")
    cert = res.certificate
    assert not cert.blocks_certified
    assert not cert.readout_certified
    assert res.history, "the run must still make progress"
    for rec in res.history:
        assert not rec.certified
        assert rec.status == "optimal_inaccurate"
    # one event per solve that was made, each uncertified with its status
    assert len(_events(res)) == len(inj.calls)
    for ev in _events(res):
        assert ev["status"] == "optimal_inaccurate" and ev["certified"] is False
        assert ev["solver"] == "CLARABEL"
    assert any(ev["block"] == "CD" for ev in _events(res))
    assert np.all(np.isfinite(res.model.predict(_tiny_problem().U_raw)))


def test_bcd_fallback_records_every_failed_attempt(inject):
    inj = inject({"CLARABEL": "error"})
    res = solve_bcd(_tiny_problem(), max_sweeps=2, seed=0, on_failure="fallback")
    n_clarabel = sum(1 for name, _ in inj.calls if name == "CLARABEL")
    assert n_clarabel > 0
    events = _events(res)
    assert len(events) == n_clarabel
    assert all(ev["solver"] == "CLARABEL" and ev["status"] == "solver_error"
               and ev["certified"] is False for ev in events)
    # the fallback solver certified every block, so the run is certified
    assert all(r.certified and r.solver != "CLARABEL" for r in res.history)
    assert res.certificate.blocks_certified


@pytest.mark.parametrize("mode, status", [("error", "solver_error"),
                                          ("inaccurate", "optimal_inaccurate")])
def test_bcd_raise_policy_raises_solver_error(inject, mode, status):
    inject({"CLARABEL": mode})
    with pytest.raises(SolverError) as info:
        solve_bcd(_tiny_problem(), max_sweeps=2, seed=0, on_failure="raise")
    assert info.value.status == status
    assert info.value.attempts and info.value.attempts[0].solver == "CLARABEL"


def _fail_one_block(inj, sweep, block, mode):
    """A callback that makes the first solve after the record (sweep, block) fail."""
    def callback(rec):
        if rec.sweep == sweep and rec.block == block:
            inj.once = mode
    return callback


@pytest.mark.parametrize("policy", ["warn", "fallback"])
def test_bcd_single_failure_in_one_block_is_recorded(inject, policy):
    """The solve after the X block of sweep 1 (the first (A, B) batch) fails once."""
    inj = inject()
    mode = "inaccurate" if policy == "warn" else "error"
    solver = "CLARABEL" if policy == "warn" else None
    ctx = pytest.warns(Warning) if policy == "warn" else warnings.catch_warnings()
    with ctx:
        res = solve_bcd(_tiny_problem(), max_sweeps=3, seed=0, on_failure=policy,
                        solver=solver, callback=_fail_one_block(inj, 1, "X", mode))
    events = _events(res)
    assert len(events) == 1
    ev = events[0]
    assert ev["block"].startswith("AB") and ev["solver"] == "CLARABEL"
    assert ev["status"] == ("optimal_inaccurate" if mode == "inaccurate" else "solver_error")
    (ab,) = [r for r in res.history if r.sweep == 1 and r.block == "AB"]
    others = [r for r in res.history if r is not ab]
    assert all(r.certified for r in others)
    if policy == "warn":
        assert not ab.certified and ab.status == "optimal_inaccurate"
        # an uncertified solve that was used makes the run uncertified
        assert res.certificate.blocks_certified is (not ab.accepted)
    else:
        assert ab.certified and ab.solver != "CLARABEL"
        assert res.certificate.blocks_certified


def test_bcd_checks_solve_events_are_plain_records(inject):
    inject({"CLARABEL": "error"})
    res = solve_bcd(_tiny_problem(), max_sweeps=1, seed=0)
    for ev in _events(res):
        assert set(ev) >= {"block", "solver", "status", "certified", "note", "attempt"}
        assert ev["note"]


def test_bcd_forced_solver_is_used_for_every_block():
    res = solve_bcd(_tiny_problem(activation="relu"), max_sweeps=1, seed=0, solver="ECOS")
    assert {r.solver for r in res.history} == {"ECOS"}
