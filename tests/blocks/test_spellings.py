"""One problem, one answer: a penalty spelled by name, as a callable, or as ``Custom(...,
reads=...)`` takes different routes (the named ones the first-order blocks, the others CVXPY),
and every route reaches the same block objective within the certified gaps."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.blocks.block_solvers import SolvePolicy, State, make_block_solvers
from fenchel_idl.blocks.first_order import ab_prox_rows, ab_prox_weight
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.drivers.state import objective
from fenchel_idl.problem import penalties as pen_mod
from fenchel_idl.problem.training_problem import TrainingProblem

W = 2e-2


def _stacked_bd(B, D):
    return cp.sum(cp.norm(cp.vstack([B, D]), 2, axis=0))


# (named penalty, the same function of (A, B, C, D) in CVXPY, the matrices it reads)
CASES = {
    "l1": (pen_mod.L1(W), lambda A, B, C, D: cp.sum(cp.abs(A)), ("A",)),
    "row_norms": (pen_mod.RowNorms(W), lambda A, B, C, D: cp.sum(cp.norm(A, 2, axis=1)), ("A",)),
    "column_norms": (pen_mod.ColumnNorms(W), lambda A, B, C, D: cp.sum(cp.norm(A, 2, axis=0)),
                     ("A",)),
    "nuclear": (pen_mod.Nuclear(W), lambda A, B, C, D: cp.normNuc(A), ("A",)),
    "feature_selection": (pen_mod.FeatureSelection(W), lambda A, B, C, D: _stacked_bd(B, D),
                          ("B", "D")),
}


def _spellings(case):
    named, fn, reads = CASES[case]
    return {"named": named,
            "callable": lambda A, B, C, D: W * fn(A, B, C, D),
            "custom": pen_mod.Custom(fn=fn, reads=reads, weight=W)}


def _state(problem, seed):
    """A state off every block's optimum: a dense A inside its ball, random B, C, D and
    positive states, with a spread of lam."""
    rng = np.random.default_rng(seed)
    n, p, m = problem.n, problem.p, problem.m
    A = rng.standard_normal((n, n))
    A *= 0.9 * problem.kappa / np.abs(A).sum(axis=1, keepdims=True)
    return State(A=A, B=rng.standard_normal((n, p)), b=rng.standard_normal(n) * 0.1,
                 C=rng.standard_normal((1, n)), D=rng.standard_normal((1, p)) * 0.3,
                 d=np.zeros(1), X=np.maximum(rng.standard_normal((n, m)), 0.0),
                 lam=rng.uniform(3.0, 100.0, n))


def _problem(pen):
    rng = np.random.default_rng(3)
    U = rng.standard_normal((4, 60))
    return TrainingProblem(U, np.sin(U[:1] + U[1:2]), n=6, kappa=0.5, penalties=[pen])


def _block_value(pb, s0, s):
    """The (A, B) block's objective at s, recomputed from scratch: the problem's relaxed
    objective plus the proximal term sum_i c_i / 2 ||w_i - w0_i||^2 around s0, with
    c = ab_prox_rows(pb.penalties_reading("A", "B"), lam, rho) and
    rho = ab_prox_weight(||V||^2 / m) as the block solvers take them."""
    V = np.vstack([s0.X, pb.U, np.ones((1, pb.m))])
    rho = ab_prox_weight(float(np.linalg.norm(V, 2)) ** 2 / pb.m)
    c = ab_prox_rows(pb.penalties_reading("A", "B"), s0.lam, rho)
    dW = s.W(True) - s0.W(True)
    return float(sum(objective(pb, s))) + 0.5 * float(c @ np.sum(dW * dW, axis=1))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_every_spelling_of_a_penalty_reaches_one_block_objective(case, seed):
    """From one state, the (A, B) block of each spelling (through the solver routing that
    BCD uses) returns a point whose relaxed objective, recomputed in numpy by the problem,
    plus the proximal term, is within the sum of the two certified absolute gaps of every
    other spelling's; the
    named spelling takes the first-order path, the others the CVXPY one."""
    values, gaps, solvers = {}, {}, {}
    for label, pen in _spellings(case).items():
        pb = _problem(pen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = make_block_solvers(pb, SolvePolicy(pb.cone, gap_tol=1e-8))
        s0 = _state(pb, seed)
        s, info = blocks.AB.solve(s0)
        assert info.certified
        values[label] = _block_value(pb, s0, s)
        gaps[label] = (float(info.abs_gap) if info.abs_gap is not None
                       else float(info.gap) * max(1.0, abs(float(info.objective))))
        solvers[label] = info.solver
    assert solvers["named"] == "FISTA" and solvers["callable"] != "FISTA"
    for a in values:
        for b in values:
            assert values[a] - values[b] <= gaps[a] + gaps[b] + 1e-9 * max(1.0, abs(values[b]))


@pytest.mark.parametrize("case", ["l1", "nuclear"])
def test_a_callable_and_its_custom_spelling_train_alike_to_the_named_schedule(case):
    """BCD with a callable penalty on A and with its ``Custom(reads=...)`` spelling runs the
    same schedule as the named penalty (the line search extrapolates for all three: none
    declares a constraint), so after one sweep the three true objectives differ by no more
    than the blocks' tolerance carried through the line search."""
    runs = {}
    for label, pen in _spellings(case).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = solve_bcd(_problem(pen), max_sweeps=1)
        ls = [r for r in res.history if r.block == "LS"]
        runs[label] = (ls[-1].step, res.history[-1].objective)
    steps = {v[0] for v in runs.values()}
    assert len(steps) == 1 and steps.pop() > 1.0
    objs = [v[1] for v in runs.values()]
    assert max(objs) - min(objs) <= 1e-3 * max(objs)


def test_a_penalty_on_a_or_b_leaves_the_readout_on_its_fast_path():
    """The (C, D) readout never reads a penalty on A or B, so it stays first-order (the
    cross-entropy readout by FISTA, the squared loss on the Gram matrix) for the named
    penalties and for a callable declared with ``reads=("A",)``; a penalty that reads C
    (named, or a callable whose expression reads it) sends the readout to CVXPY."""
    from fenchel_idl.blocks.first_order import fast_readout_apply
    rng = np.random.default_rng(0)
    U = rng.standard_normal((4, 50))
    Y = np.eye(3)[rng.integers(0, 3, 50)].T
    fn = CASES["nuclear"][1]
    for pen in (pen_mod.L1(W, on="AB"), pen_mod.Nuclear(W),
                pen_mod.Custom(fn=fn, reads=("A",), weight=W)):
        pb = TrainingProblem(U, Y, n=5, loss="cross_entropy", penalties=[pen])
        assert fast_readout_apply(pb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert make_block_solvers(pb, SolvePolicy(pb.cone)).CD.first_order
    for pen in (pen_mod.L1(W, on="C"), lambda A, B, C, D: W * (cp.sum(cp.abs(A)) + cp.sum(cp.abs(C)))):
        pb = TrainingProblem(U, Y, n=5, loss="cross_entropy", penalties=[pen])
        assert not fast_readout_apply(pb)


def test_a_constraint_on_a_keeps_the_line_search_on_its_segment():
    """A user constraint on A is not the balls the extrapolated steps are projected on, so
    with one the line search never steps past t = 1 and every returned A satisfies it (here
    A >= 0 elementwise); a penalty expression on A alone extrapolates (the test above)."""
    from fenchel_idl.problem.penalties import penalty_constrains

    def nonneg(A, B, C, D):
        return [A >= 0]

    pb = _problem(pen_mod.Custom(fn=nonneg, reads=("A",)))
    shapes = {"A": (6, 6), "B": (6, 4), "C": (1, 6), "D": (1, 4)}
    assert penalty_constrains(pb.penalties[0], shapes)
    assert not penalty_constrains(CASES["nuclear"][0], shapes)
    assert not penalty_constrains(_spellings("nuclear")["custom"], shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_bcd(pb, max_sweeps=3)
    steps = [r.step for r in res.history if r.block == "LS"]
    assert steps and max(steps) <= 1.0
    assert np.all(res.model.A >= -1e-9)
