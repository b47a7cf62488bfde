"""The first-order feature-selection readout (fenchel_idl.blocks.columns.fast_cd_columns)
against an independent CVXPY statement of the same (C, D) problem, and its routing."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import fenchel_idl as fi
from fenchel_idl.blocks.block_solvers import Fallback, SolvePolicy, State, make_block_solvers
from fenchel_idl.blocks.columns import ColumnsReadout, fast_cd_columns, with_column_block
from fenchel_idl.blocks.routing import column_penalty, columns_readout_apply
from fenchel_idl.errors import SolverWarning
from fenchel_idl.problem.penalties import FeatureSelection


def _data(seed=0, p=6, q=2, m=200):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(p, m))
    Y = np.vstack([U[0] + U[1] ** 2, U[2] - U[0]]) + 0.1 * rng.normal(size=(q, m))
    return U, Y


def _cvxpy_readout(pb, X, B, w):
    """min 1/(2m) ||C X + D U + d - Y||^2 + w sum_j ||(B; D) e_j|| over the row l1 balls."""
    q, n, p, m = pb.q, pb.n, pb.p, pb.m
    C, D, d = cp.Variable((q, n)), cp.Variable((q, p)), cp.Variable((q, 1))
    fit = C @ X + D @ pb.U + d @ np.ones((1, m)) - pb.Y
    obj = 0.5 * cp.sum_squares(fit) / m + w * cp.sum(cp.norm(cp.vstack([B, D]), 2, axis=0))
    cons = [cp.sum(cp.abs(C), axis=1) <= pb.bounds.C]
    if pb.bounds.D is not None:
        cons.append(cp.sum(cp.abs(D), axis=1) <= pb.bounds.D)
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return prob.value


# "gram": C's ball binds, so the whole readout is solved by CVXPY on the Gram matrix and
# certified by the same bound; "fista": FISTA on D alone
@pytest.mark.parametrize("w, bounds, path", [
    (0.05, fi.Bounds(), "fista"),                    # balls inactive
    (0.3, fi.Bounds(), "fista"),                     # heavy penalty: most columns zero
    (0.05, fi.Bounds(C=0.5, D=0.3), "gram"),         # C's and D's balls active
    (0.02, fi.Bounds(C=0.1, D=0.2), "gram"),         # C's and D's balls far inside
    (0.02, fi.Bounds(C=1.0, D=None), "fista"),       # no ball on D
])
def test_matches_the_cvxpy_optimum_within_its_certified_gap(w, bounds, path):
    U, Y = _data()
    n = 5
    pb = fi.TrainingProblem(U, Y, n=n, penalties=[FeatureSelection(weight=w)], bounds=bounds)
    assert columns_readout_apply(pb)
    rng = np.random.default_rng(1)
    X = np.maximum(rng.normal(size=(n, pb.m)), 0.0)
    B = rng.normal(size=(n, pb.p))
    B[:, [3, 5]] = 0.0
    C0, D0 = np.zeros((pb.q, n)), np.zeros((pb.q, pb.p))
    state = State(np.zeros((n, n)), B, np.zeros(n), C0, D0, np.zeros(pb.q), X, np.ones(n))
    out, info = ColumnsReadout(pb, SolvePolicy(pb.cone, gap_tol=1e-8)).solve(state)
    C, D, d = out.C, out.D, out.d
    assert info.certified
    assert ("Gram" in info.solver) == (path == "gram")
    # the returned point is feasible and its objective, recomputed in numpy, is the record's
    assert np.abs(C).sum(axis=1).max() <= bounds.C * (1 + 1e-12)
    if bounds.D is not None:
        assert np.abs(D).sum(axis=1).max() <= bounds.D * (1 + 1e-12)
    F = (0.5 * np.sum((C @ X + D @ pb.U + d[:, None] - pb.Y) ** 2) / pb.m
         + w * np.linalg.norm(np.vstack([B, D]), axis=0).sum())
    assert F == pytest.approx(info.objective, rel=1e-12)
    opt = _cvxpy_readout(pb, X, B, w)
    # the certificate is never beaten by an independent solve, and it is tight
    assert F - info.abs_gap <= opt + 1e-9
    assert F - opt <= info.abs_gap + 1e-9
    # where B's column is zero, D's is exactly zero iff zero meets the optimality condition
    # ||grad_{D_j} loss|| <= w (read away from the threshold, with D's balls inactive)
    zero = ~np.any(D != 0.0, axis=0)
    grad = np.linalg.norm((C @ X + D @ pb.U + d[:, None] - pb.Y) @ pb.U.T / pb.m, axis=0)
    if bounds.D is None or np.abs(D).sum(axis=1).max() < bounds.D * (1 - 1e-6):
        for j in (3, 5):
            assert zero[j] or grad[j] >= 0.99 * w
            assert not zero[j] or grad[j] <= w * (1 + 1e-6)
    if w == 0.3:
        assert zero[3] and zero[5]


def test_bcd_routes_the_feature_selection_readout_to_it_without_the_generic_path_warning():
    U, Y = _data(p=5, m=120)
    pb = fi.TrainingProblem(U, Y, n=4, penalties=[FeatureSelection(weight=0.05)])
    policy = SolvePolicy(pb.cone)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        solvers = with_column_block(pb, make_block_solvers(pb, policy))
        res = fi.solve_bcd(pb, max_sweeps=2, seed=0)
    assert isinstance(solvers.CD, Fallback) and isinstance(solvers.CD.primary, ColumnsReadout)
    assert res.certificate.readout_certified
    # a penalty on C as well sends the readout back to CVXPY (and the run says so)
    on_c = fi.TrainingProblem(U, Y, n=4, penalties=[FeatureSelection(weight=0.05),
                                                   fi.L1(weight=0.01, on="C")])
    assert not columns_readout_apply(on_c)


def _random_states(weight, bounds, n):
    """A feature-selection problem on :func:`_data` and random states X >= 0 and B."""
    U, Y = _data()
    pb = fi.TrainingProblem(U, Y, n=n, penalties=[FeatureSelection(weight=weight)],
                            bounds=bounds)
    rng = np.random.default_rng(1)
    return pb, np.maximum(rng.normal(size=(n, pb.m)), 0.0), rng.normal(size=(n, pb.p))


def test_without_a_whole_solve_an_active_c_ball_returns_the_start_uncertified():
    n = 5
    pb, X, B = _random_states(0.02, fi.Bounds(C=0.1, D=0.2), n)
    C0, D0 = np.full((pb.q, n), 0.01), np.zeros((pb.q, pb.p))
    C, D, d, info = fast_cd_columns(pb, X, B, C0, D0, column_penalty(pb), tol=1e-8)
    assert not info.certified and "ball" in info.note
    assert np.array_equal(C, C0) and np.array_equal(D, D0)
    # d is the least-squares intercept of the returned (C, D)
    np.testing.assert_allclose(d, (pb.Y - C0 @ X - D0 @ pb.U).mean(axis=1), atol=1e-12)


def test_a_gram_solve_that_fails_hands_the_readout_to_the_all_samples_backup(monkeypatch):
    """When C's ball binds and no solver certifies the Gram-matrix solve, the first-order
    readout returns an uncertified record (the run does not end) and the routed Fallback
    takes the all-samples CVXPY readout, whose result is certified."""
    from fenchel_idl.blocks.gram import GramReadout
    from fenchel_idl.errors import SolverError

    n = 5
    pb, X, B = _random_states(0.05, fi.Bounds(C=0.5, D=0.3), n)
    state = State(np.zeros((n, n)), B, np.zeros(n), np.zeros((pb.q, n)),
                  np.zeros((pb.q, pb.p)), np.zeros(pb.q), X, np.ones(n))

    def fail(self, *args, **kwargs):
        raise SolverError("block 'CD' could not be solved to certified optimality (test)")

    monkeypatch.setattr(GramReadout, "solve", fail)
    policy = SolvePolicy(pb.cone)
    out, info = ColumnsReadout(pb, policy).solve(state)
    assert not info.certified and "test" in info.note
    assert np.array_equal(out.C, state.C) and np.array_equal(out.D, state.D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        solvers = with_column_block(pb, make_block_solvers(pb, policy))
    out, info = solvers.CD.solve(state)
    assert info.certified and "Gram" not in info.solver
    # the backup's point is the readout's optimum: an independent solve does not beat it
    F = (0.5 * np.sum((out.C @ X + out.D @ pb.U + out.d[:, None] - pb.Y) ** 2) / pb.m
         + 0.05 * np.linalg.norm(np.vstack([B, out.D]), axis=0).sum())
    assert abs(F - _cvxpy_readout(pb, X, B, 0.05)) <= 1e-5
