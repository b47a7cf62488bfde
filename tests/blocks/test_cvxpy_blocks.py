"""The CVXPY blocks of BCD (fenchel_idl.blocks.cvxpy_blocks) against known optima, the
objective they majorize, and the certified first-order blocks."""

import numpy as np
import pytest

from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import fast_ab_block
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.blocks.x_step import fast_x_block
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem.training_problem import TrainingProblem
from tests.helpers import qp_solve, random_state, small_regression


def test_x_block_never_increases_the_relaxed_objective(problem, rng):
    """The DCA majorizer touches the objective at the current X (numpy re-evaluation)."""
    blocks = Blocks(problem)
    for _ in range(3):
        A, B, b, C, D, d, X = random_state(problem, rng)
        lam = rng.uniform(0.5, 10, problem.n)
        before = sum(problem.objective_parts(A, B, b, C, D, d, X, lam))
        Xn, info = blocks.solve_x(A, B, b, C, D, d, X, lam, qp_solve)
        assert info.certified
        after = sum(problem.objective_parts(A, B, b, C, D, d, np.maximum(Xn, 0), lam))
        assert after <= before + 1e-7


def test_fast_blocks_agree_with_cvxpy_blocks(problem, rng):
    blocks = Blocks(problem)
    A, B, b, C, D, d, X = random_state(problem, rng)
    lam = rng.uniform(0.5, 10, problem.n)
    Xc, ic = blocks.solve_x(A, B, b, C, D, d, X, lam, qp_solve)
    Xf, if_ = fast_x_block(problem, A, B, b, C, D, d, X, lam, tol=1e-10)
    assert ic.certified and if_.certified
    np.testing.assert_allclose(Xf, np.maximum(Xc, 0), atol=1e-4)
    W0 = np.hstack([A, B, b[:, None]])
    Ac, Bc, bc, _ = blocks.solve_ab(Xf, lam, C, D, qp_solve, W0, 1e-2)
    Af, Bf, bf, info = fast_ab_block(problem, Xf, state_lipschitz(problem.activation, problem.n),
                                     W0, tol=1e-9, rho=1e-2)
    assert info.certified
    # the proximal block is strongly convex: the two certified solutions coincide
    np.testing.assert_allclose(np.hstack([Af, Bf, bf[:, None]]),
                               np.hstack([Ac, Bc, bc[:, None]]), atol=1e-3)
    obj = [sum(problem.objective_parts(Am, Bm, bm, C, D, d, Xf, lam)[1:])
           for Am, Bm, bm in ((A, B, b), (Af, Bf, bf))]
    assert obj[1] <= obj[0] + 1e-9  # a proximal step never increases the block objective
    assert np.abs(Af).sum(axis=1).max() <= problem.kappa + 1e-9


def test_readout_is_the_constrained_least_squares_optimum(rng):
    """Known optimum: with an inactive ball the (C, D) block is plain least squares."""
    U, Y = small_regression(rng)
    prob = TrainingProblem(U, Y, n=4, kappa=0.5, bounds={"C": 1e6, "D": 1e6})
    blocks = Blocks(prob)
    X = np.maximum(rng.standard_normal((4, 2)) @ prob.U + 0.3, 0)
    C, D, d, info = blocks.solve_cd(X, np.zeros((4, 4)), np.zeros((4, 2)), qp_solve)
    V = np.vstack([X, prob.U, np.ones((1, prob.m))])
    W = np.linalg.lstsq(V.T, prob.Y.T, rcond=None)[0].T
    np.testing.assert_allclose(np.hstack([C, D, d[:, None]]), W, atol=1e-5)
    assert info.certified


def test_large_cross_entropy_readout_is_rebuilt_with_constants(rng, monkeypatch):
    """Past _CD_DPP_MAX the cross-entropy (C, D) block is rebuilt with X, A, B as constants
    (CVXPY's DPP tensor would not fit in memory); it must give the same optimum."""
    import fenchel_idl.blocks.cvxpy_blocks as training

    U = rng.standard_normal((3, 60))
    labels = (U[0] + 0.5 * U[1] > 0).astype(int) + (U[2] > 1).astype(int)
    prob = TrainingProblem(U, labels, n=5, kappa=0.5, loss="cross_entropy",
                           bounds={"C": 3.0, "D": 3.0})
    A, B, b, C, D, d, X = random_state(prob, rng)
    ref = Blocks(prob).solve_cd(X, A, B, lambda p, name: solve_certified(p, name, "exp")[-1])
    monkeypatch.setattr(training, "_CD_DPP_MAX", 0)
    out = Blocks(prob).solve_cd(X, A, B, lambda p, name: solve_certified(p, name, "exp")[-1])
    assert out[3].certified and ref[3].certified
    assert out[3].objective == pytest.approx(ref[3].objective, rel=1e-6)
    value = prob.loss.value(prob.Y, out[0] @ X + out[1] @ prob.U + out[2][:, None])
    assert value == pytest.approx(ref[3].objective, rel=1e-6)


def test_a_readout_that_misses_the_posed_bound_is_re_solved_strictly_before_all_samples(
        rng, monkeypatch):
    """A Gram solve stopped early (absolute gap 1e-4, as a solver's default tolerance can
    leave it: the posed bound grows like the square root of that gap) is solved again at
    strict tolerances, certified by the posed bound, without the solve on all samples; the
    certified gap holds against an independent solve of the posed problem."""
    import cvxpy as cp

    from fenchel_idl.blocks.gram import readout_gap
    from fenchel_idl.blocks.solvers import SolveInfo

    m = 120
    U = rng.uniform(-1, 1, (3, m))
    Y = np.vstack([np.sin(3 * U[0]) + U[1] * U[2], np.cos(2 * U[1])])
    prob = TrainingProblem(U, Y, n=6, kappa=0.5, bounds={"C": 0.8, "D": 0.5},
                           standardize=False)
    X = np.maximum(rng.standard_normal((6, 3)) @ prob.U + 0.2, 0)

    def loose(problem, name):
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-4, tol_gap_rel=1e-4, tol_feas=1e-4)
        return SolveInfo(name, "CLARABEL", problem.status, problem.value, 1e-7, None, True,
                         0.0, 1)

    blocks = Blocks(prob)
    monkeypatch.setattr(blocks, "_cd_problem",
                        lambda *a: pytest.fail("the block was solved on all samples"))
    C, D, d, info = blocks.solve_cd(X, np.zeros((6, 6)), np.zeros((6, 3)), loose)
    assert info.certified and "strict re-solve" in info.note
    first = float(info.note.split("bound ")[-1].split(" at")[0])
    assert first > blocks.gap_tol  # the loose point missed the bound: the path was taken
    # the independent optimum of the posed problem, from the samples
    Cv, Dv, dv = cp.Variable((2, 6)), cp.Variable((2, 3)), cp.Variable((2, 1))
    fit = Cv @ X + Dv @ prob.U + dv @ np.ones((1, m)) - prob.Y
    ref = cp.Problem(cp.Minimize(cp.sum_squares(fit) / (2 * m)),
                     [cp.sum(cp.abs(Cv), axis=1) <= 0.8, cp.sum(cp.abs(Dv), axis=1) <= 0.5])
    ref.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    r = Cv.value @ X + Dv.value @ prob.U + dv.value - prob.Y
    best = 0.5 * float(np.sum(r * r)) / m
    loss = 0.5 * float(np.sum((C @ X + D @ prob.U + d[:, None] - prob.Y) ** 2)) / m
    assert np.abs(C).sum(axis=1).max() <= 0.8 and np.abs(D).sum(axis=1).max() <= 0.5
    assert loss - best <= info.abs_gap + 1e-10
    assert readout_gap(prob, X, C, D, d)[1] == pytest.approx(info.abs_gap)
    assert np.abs(C).sum(axis=1).max() > 0.8 - 1e-6  # a ball is active: the bound is FW's


def test_a_readout_whose_least_squares_minimizer_is_in_the_balls_takes_it_without_a_solver(
        rng):
    """Balls that the least-squares minimizer lies in: the block returns that minimizer, equal
    to numpy's least squares on all samples, with no solver call, certified by a gap that
    holds against an independent tight solve of the posed problem. Balls that cut it off,
    or a forced solver, go to the solver."""
    import cvxpy as cp

    m, n = 150, 5
    U = rng.uniform(-1, 1, (3, m))
    Y = np.vstack([np.sin(3 * U[0]) + U[1] * U[2], np.cos(2 * U[1])])
    X = np.maximum(rng.standard_normal((n, 3)) @ U + 0.2, 0)  # standardize=False: U as is
    A, B = np.zeros((n, n)), np.zeros((n, 3))
    calls = []

    def solve(problem, name):
        calls.append(name)
        return solve_certified(problem, name, cone="qp")[-1]

    loose = TrainingProblem(U, Y, n=n, bounds={"C": 1e3, "D": 1e3}, standardize=False)
    C, D, d, info = Blocks(loose).solve_cd(X, A, B, solve)
    assert calls == [] and info.solver == "least squares" and info.certified
    V = np.vstack([X, loose.U, np.ones((1, m))])
    K = np.linalg.lstsq(V.T, loose.Y.T, rcond=None)[0].T
    assert np.allclose(np.hstack([C, D, d[:, None]]), K, atol=1e-8)
    Cv, Dv, dv = cp.Variable((2, n)), cp.Variable((2, 3)), cp.Variable((2, 1))
    fit = Cv @ X + Dv @ loose.U + dv @ np.ones((1, m)) - loose.Y
    ref = cp.Problem(cp.Minimize(cp.sum_squares(fit) / (2 * m)),
                     [cp.sum(cp.abs(Cv), axis=1) <= 1e3, cp.sum(cp.abs(Dv), axis=1) <= 1e3])
    ref.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    r = Cv.value @ X + Dv.value @ loose.U + dv.value - loose.Y
    loss = 0.5 * float(np.sum((C @ X + D @ loose.U + d[:, None] - loose.Y) ** 2)) / m
    assert loss - 0.5 * float(np.sum(r * r)) / m <= info.abs_gap + 1e-10

    tight = TrainingProblem(U, Y, n=n, bounds={"C": 0.3, "D": 0.3}, standardize=False)
    assert np.abs(K[:, n:n + 3]).sum(axis=1).max() > 0.3  # the minimizer is cut off
    C, D, d, info = Blocks(tight).solve_cd(X, A, B, solve)
    assert calls == ["CD"] and info.solver != "least squares" and info.certified
    assert max(np.abs(C).sum(axis=1).max(), np.abs(D).sum(axis=1).max()) <= 0.3 + 1e-9
    *_, info = Blocks(loose, least_squares=False).solve_cd(X, A, B, solve)
    assert calls == ["CD", "CD"] and info.solver != "least squares"
