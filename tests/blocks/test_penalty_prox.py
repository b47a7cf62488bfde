"""The proximal maps of the penalized first-order (A, B) block (penalty + the balls of the
rows) against independent references: Clarabel solves of the prox problems, the unchanged
Newton solver of the shifted group prox, and a cold Dykstra run beside the warm-started
one; and the penalized block with row norms of A, and with the nuclear norm (its uniform
proximal term), against the Clarabel block."""

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.blocks.first_order import (
    _row_norm_ball_prox,
    _warm_dykstra,
    ab_penalty_prox,
    ab_penalty_residual,
    ab_prox_rows,
    fast_ab_penalized,
)
from fenchel_idl.problem import penalties as pen_mod
from fenchel_idl.problem.penalties import _shifted_columns, _weighted_column_shrink
from fenchel_idl.problem.projection import project_l1_rows
from fenchel_idl.problem.training_problem import TrainingProblem
from tests.blocks.test_first_order import _penalized_setup

_CLARABEL = {"solver": "CLARABEL", "tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10,
             "tol_feas": 1e-10}


def _row_instance(rng, n=7, k=9):
    M = rng.standard_normal((n, k)) * rng.uniform(0.2, 3.0)
    M[0, 1] = M[0, 0]  # a tie in |m|
    M[1, 2] = -M[1, 3]
    M[2, :3] = 0.0  # exact zeros
    tau = rng.uniform(0.0, 1.5, n)
    radius = rng.uniform(0.2, 3.0, n)
    return M, tau, radius


@pytest.mark.parametrize("seed", range(6))
def test_row_norm_ball_prox_is_the_clarabel_minimizer(seed):
    """sum_i tau_i ||x_i|| + 1/2 ||X - M||^2 over ||x_i||_1 <= r_i: the closed form is
    feasible in floating point, no worse than Clarabel's minimizer, and equal to it."""
    rng = np.random.default_rng(seed)
    M, tau, radius = _row_instance(rng)
    P = _row_norm_ball_prox(M, tau, radius)
    X = cp.Variable(M.shape)
    obj = cp.sum(cp.multiply(tau, cp.norm(X, 2, axis=1))) + 0.5 * cp.sum_squares(X - M)
    cp.Problem(cp.Minimize(obj), [cp.norm(X, 1, axis=1) <= radius]).solve(**_CLARABEL)

    def f(Z):
        return float(tau @ np.linalg.norm(Z, axis=1) + 0.5 * np.sum((Z - M) ** 2))

    assert np.all(np.abs(P).sum(axis=1) <= radius)
    assert f(P) <= f(X.value) + 1e-10
    np.testing.assert_allclose(P, X.value, atol=2e-5)
    # the optimality conditions, exactly: a row on its ball or zero, else the group prox
    inside = np.abs(P).sum(axis=1) < radius * (1 - 1e-12)
    nrm = np.linalg.norm(M, axis=1, keepdims=True)
    group = M * np.maximum(1 - tau[:, None] / nrm, 0.0)
    np.testing.assert_allclose(P[inside], group[inside], atol=1e-12)


def test_row_norm_ball_prox_cases_at_the_edges():
    """A row shrunk to zero by its norm, a row already inside its ball after shrinking,
    and a huge threshold: each matches its closed form."""
    M = np.array([[0.1, -0.2, 0.0], [0.3, 0.1, -0.2], [5.0, 4.0, -3.0], [2.0, 2.0, 2.0]])
    tau = np.array([1.0, 0.01, 0.5, 100.0])
    radius = np.array([1.0, 10.0, 1.0, 1.0])
    P = _row_norm_ball_prox(M, tau, radius)
    np.testing.assert_array_equal(P[0], 0.0)
    np.testing.assert_allclose(P[1], M[1] * (1 - 0.01 / np.linalg.norm(M[1])), rtol=1e-14)
    assert abs(np.abs(P[2]).sum() - 1.0) <= 1e-14
    np.testing.assert_array_equal(P[3], 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_weighted_column_shrink_matches_the_shifted_group_solver(seed):
    """The column-group prox in a per-row metric (Newton on 1 / g) against the general
    shifted-group solver with c = 0 (Newton on g^2), and against Clarabel."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 8)) * rng.uniform(0.2, 2.0)
    X[:, 0] *= 1e-3  # a column that goes to zero
    T = np.broadcast_to(rng.uniform(0.05, 2.0, (6, 1)), X.shape)
    P = _weighted_column_shrink(X, T)
    np.testing.assert_allclose(P, _shifted_columns(X, np.zeros(8), T), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_array_equal(P[:, 0], 0.0)
    Z = cp.Variable(X.shape)
    obj = cp.sum(cp.norm(Z, 2, axis=0)) + 0.5 * cp.sum_squares(cp.multiply(T ** -0.5, Z - X))
    cp.Problem(cp.Minimize(obj)).solve(**_CLARABEL)

    def f(Y):
        return float(np.linalg.norm(Y, axis=0).sum() + 0.5 * np.sum((Y - X) ** 2 / T))

    assert f(P) <= f(Z.value) + 1e-10
    np.testing.assert_allclose(P, Z.value, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-7, 1e-3, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_shifted_columns_meets_its_optimality_conditions(seed, scale):
    """The prox of sum_j sqrt(||x_j||^2 + c_j^2) in the metric sum X_ij^2 / T_ij, with
    fixed parts c_j > 0 large and small beside the column: x solves (x - v) / T +
    x / sqrt(||x||^2 + c^2) = 0 column by column, to rounding (the metric's weights from
    1e-7, those of the first-order (A, B) block, to 1)."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((20, 10)) * rng.uniform(0.01, 3.0, 10)
    c = rng.uniform(0.0, 2.0, 10) * np.r_[1e-3, 1e-2, np.ones(8)]
    T = np.broadcast_to(rng.uniform(0.1, 1.0, (20, 1)) * scale, V.shape)
    P = _shifted_columns(V, c, T)
    nu = np.sqrt(np.sum(P * P, axis=0) + c * c)
    residual = (P - V) / T + P / nu
    np.testing.assert_allclose(residual * T, 0.0, atol=1e-14 * np.abs(V).max())


def _prox_reference(pb, gammas, pen, t, Z, fixed):
    """argmin of sum_i ||w_i - z_i||^2 / (2 t_i) + P over the (A, B) block's balls (t a
    number or per row), by Clarabel."""
    n, p = pb.n, pb.p
    W = cp.Variable(Z.shape)
    A, B = W[:, :n], W[:, n:n + p]
    tr = np.broadcast_to(np.asarray(t, dtype=float).reshape(-1), (n,))
    expr, _ = pen.expression({"A": A, "B": B, **{k: cp.Constant(v) for k, v in fixed.items()}})
    obj = expr + cp.sum(cp.multiply(1 / (2 * tr), cp.sum(cp.square(W - Z), axis=1)))
    cons = [cp.norm(A, 1, axis=1) <= pb.kappa / gammas]
    if pb.bounds.B is not None:
        cons += [cp.norm(B, 1, axis=1) <= pb.bounds.B, cp.abs(W[:, n + p]) <= pb.bounds.B]
    cp.Problem(cp.Minimize(obj), cons).solve(**_CLARABEL)
    return W.value


@pytest.mark.parametrize("pen, per_row", [
    (pen_mod.RowNorms(0.5), True), (pen_mod.RowNorms(0.5), False),
    (pen_mod.ColumnNorms(0.5), True), (pen_mod.Nuclear(0.5), False),
    (pen_mod.RowNorms(0.5, of="AB"), True)],
    ids=["rows-per-row-t", "rows", "columns-per-row-t", "nuclear", "rows-AB"])
def test_ab_penalty_prox_is_the_clarabel_minimizer(pen, per_row):
    """The block's prox of t P + the balls (closed form for row norms of A, warm Dykstra
    otherwise), at points where the balls are active, against Clarabel; every output is
    feasible. Each point is passed several times: Dykstra's iteration cap can stop a call
    short at a hard point, and the next call goes on from its duals."""
    pb, _, _, C, D, W0, _, _, gammas = _penalized_setup(pen, 2)
    rng = np.random.default_rng(7)
    t = rng.uniform(0.05, 1.0, (pb.n, 1)) if per_row else 0.4
    prox = ab_penalty_prox(pb, gammas, pen, t, {"C": C, "D": D})
    n, p = pb.n, pb.p
    for step in range(3):  # moving points: the warm start carries over
        Z = W0 * (3.0 + step) + 0.1 * step
        for _ in range(20):
            P = prox(Z)
        assert np.all(np.abs(P[:, :n]).sum(axis=1) <= pb.kappa / gammas)
        assert np.any(np.abs(P[:, :n]).sum(axis=1) >= pb.kappa / gammas * (1 - 1e-12))
        ref = _prox_reference(pb, gammas, pen, t, Z, {"C": C, "D": D})

        def f(W, Z=Z):
            return pen.value({"A": W[:, :n], "B": W[:, n:n + p], "C": C, "D": D}) \
                + float(np.sum((W - Z) ** 2 / (2 * np.reshape(t, (-1, 1)))))

        assert f(P) <= f(ref) + 1e-10 * max(1.0, f(ref))  # Clarabel's is no better
        np.testing.assert_allclose(P, ref, atol=1e-5)
        if pen.matrices == ("A",):  # B and b are only projected onto their balls
            np.testing.assert_array_equal(P[:, n:n + p],
                                          project_l1_rows(Z[:, n:n + p], pb.bounds.B))


def test_warm_dykstra_reaches_the_cold_result():
    """Dykstra started from the previous call's duals converges to what a fresh (cold)
    run gives at the same point, along a sequence of nearby points."""
    rng = np.random.default_rng(3)
    radius = np.full(6, 0.8)
    pen = pen_mod.Nuclear(0.3)

    def prox_f(A):
        return pen.ab_prox({"A": A}, 1.0, {})["A"]

    def project(A):
        return project_l1_rows(A, radius)

    warm = _warm_dykstra(prox_f, project, max_iter=5000)
    Z = rng.standard_normal((6, 6))
    for _ in range(5):
        Z = Z + 0.05 * rng.standard_normal(Z.shape)
        cold = _warm_dykstra(prox_f, project, max_iter=5000)(Z)
        np.testing.assert_allclose(warm(Z), cold, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_penalized_ab_block_with_row_norms_of_a_reaches_clarabel(seed):
    """Row norms of A (the closed-form prox) in the fast (A, B) block: certified, its
    objective within its certified gap of the Clarabel block's, rows on the ball, and
    exact zero rows where Clarabel's are below 1e-6."""
    from fenchel_idl.blocks.cvxpy_blocks import Blocks
    from fenchel_idl.blocks.solvers import solve_certified
    pen = pen_mod.RowNorms(0.05 if seed < 2 else 3.0)
    pb, X, lam, C, D, W0, V, rho, gammas = _penalized_setup(pen, seed)
    A, B, b, info = fast_ab_penalized(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0,
                                      tol=1e-7, rho=rho)
    A2, B2, b2, _ = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-8)[-1],
        W0, rho)

    def F(A, B, b):
        W = np.hstack([A, B, b[:, None]])
        Zp = np.maximum(W @ V, 0.0)
        rows = (0.5 * (Zp ** 2).sum(1) - (W * (X @ V.T)).sum(1)) / pb.m
        # the proximal term is uniform, rho max(lam), with a penalty on A or B
        return float(lam @ rows) + 0.5 * rho * lam.max() * float(np.sum((W - W0) ** 2)) \
            + pen.value({"A": A})

    assert info.certified
    assert np.all(np.abs(A).sum(axis=1) <= pb.kappa / gammas)
    f1, f2 = F(A, B, b), F(A2, B2, b2)
    scale = max(1.0, abs(f2))
    assert f1 - f2 <= info.gap * max(1.0, abs(info.objective)) + 1e-8 * scale
    assert abs(f1 - f2) <= 1e-6 * scale
    zero = np.all(A == 0.0, axis=1)
    np.testing.assert_array_equal(zero, np.linalg.norm(A2, axis=1) < 1e-6)


def _least_residual_nuclear(A, gA, tw, radius):
    """min ||gA + S + N||^2 over S in tw d||A||_* and N in the normal cone of the rows' l1
    balls at A, by Clarabel (the definition, with the rank at 1e-12 of the largest singular
    value as in the penalty)."""
    U, s, Vt = np.linalg.svd(A)
    r = int(np.sum(s > 1e-12 * s[0]))
    U1, U2, V1, V2 = U[:, :r], U[:, r:], Vt[:r].T, Vt[r:].T
    M = cp.Variable((A.shape[0] - r, A.shape[1] - r))
    mu = cp.Variable(A.shape[0], nonneg=True)
    N = cp.Variable(A.shape)
    on = np.abs(np.abs(A).sum(axis=1) - radius) <= 1e-12 * radius
    sgn, supp = np.sign(A), A != 0
    cons = [cp.sigma_max(M) <= 1]
    for i in range(A.shape[0]):
        if not on[i]:
            cons.append(N[i] == 0)
            continue
        cons += [N[i, supp[i]] == mu[i] * sgn[i, supp[i]]] if supp[i].any() else []
        cons += [cp.abs(N[i, ~supp[i]]) <= mu[i]] if (~supp[i]).any() else []
    S = tw * (U1 @ V1.T + U2 @ M @ V2.T)
    pr = cp.Problem(cp.Minimize(cp.sum_squares(gA + S + N)), cons)
    pr.solve(**_CLARABEL)
    return pr.value


def test_penalty_residual_is_valid_from_any_start_and_reaches_the_least():
    """The certificate's residual for the nuclear norm on its ball (a low-rank A with rows on
    their balls, B and b inside theirs): from a junk remembered normal vector it is never
    below the least residual (Clarabel, from the definition), and calls that remember their
    normal vector come down to it."""
    pen = pen_mod.Nuclear(0.3)
    pb, _, _, C, D, W0, _, _, gammas = _penalized_setup(pen, 4)
    rng = np.random.default_rng(11)
    n = pb.n
    radius = pb.kappa / gammas
    L = rng.standard_normal((n, 2)) @ rng.standard_normal((2, n))
    scale = radius / np.abs(L).sum(axis=1) * np.r_[1.0, 1.0, 1.0, 0.5, 0.3, 0.7]
    A = L * scale[:, None]
    W = np.hstack([A, 0.01 * W0[:, n:]])  # B and b inside their balls
    g = rng.standard_normal(W.shape)
    least = _least_residual_nuclear(A, g[:, :n], 0.3, radius) + float(np.sum(g[:, n:] ** 2))
    fixed = {"C": C, "D": D}
    eps = 1e-9 * max(1.0, least)  # Clarabel's accuracy
    junk = {"nK": 5.0 * rng.standard_normal(W.shape)}
    assert ab_penalty_residual(pb, gammas, pen, W, g, fixed, memory=junk) >= least - eps
    assert ab_penalty_residual(pb, gammas, pen, W, g, fixed) >= least - eps
    memory: dict = {}
    for _ in range(20):
        got = ab_penalty_residual(pb, gammas, pen, W, g, fixed, memory=memory)
        assert got >= least - eps
    assert got <= least + 10 * eps


def test_warm_dykstra_with_eta_is_feasible_and_exact_where_its_argument_settles():
    """The inexact warm Dykstra (eta > 0) of the first-order block: every output on the
    balls, and along arguments that converge (as FISTA's do), outputs that converge to the
    cold, exact prox; a call at the previous argument is exact."""
    rng = np.random.default_rng(4)
    radius = np.full(6, 0.8)
    pen = pen_mod.Nuclear(0.3)

    def prox_f(A):
        return pen.ab_prox({"A": A}, 1.0, {})["A"]

    def project(A):
        return project_l1_rows(A, radius)

    inexact = _warm_dykstra(prox_f, project, max_iter=5000, eta=1e-3)
    target = 2.0 * rng.standard_normal((6, 6))
    exact = _warm_dykstra(prox_f, project, max_iter=5000)(target)
    assert np.any(np.abs(exact).sum(axis=1) >= radius * (1 - 1e-12))  # the balls are active
    Z = target + rng.standard_normal((6, 6))
    errors = []
    for _ in range(40):
        Z = target + 0.7 * (Z - target)
        P = inexact(Z)
        assert np.all(np.abs(P).sum(axis=1) <= radius * (1 + 1e-12))
        errors.append(np.abs(P - _warm_dykstra(prox_f, project, max_iter=5000)(Z)).max())
    assert errors[-1] <= 1e-8
    np.testing.assert_allclose(inexact(Z), _warm_dykstra(prox_f, project, max_iter=5000)(Z),
                               atol=1e-10)


@pytest.mark.parametrize("pen", [
    pen_mod.Nuclear(0.1), pen_mod.L1(0.1), pen_mod.RowNorms(0.1), pen_mod.ColumnNorms(0.1),
    pen_mod.FeatureSelection(0.1), pen_mod.LipschitzBound(0.1),
    pen_mod.Custom(fn=lambda A, B, C, D: cp.sum(cp.abs(A)), reads=("A",)),
    lambda A, B, C, D: cp.normNuc(A)],
    ids=["nuclear", "l1", "rows", "columns", "feature-selection", "lipschitz", "custom",
         "callable"])
def test_proximal_weights_are_uniform_with_any_penalty_on_a_or_b(pen):
    """rho max(lam) on every row with any penalty on A or B, whatever it is and however it
    is spelled, so every spelling poses one block problem; rho lam_i without one."""
    lam = np.array([3.0, 110.0, 17.0])
    want = np.full(3, 2e-5 * 110.0)
    np.testing.assert_allclose(ab_prox_rows([pen], lam, 2e-5), want, rtol=1e-15)
    both = ab_prox_rows([pen_mod.L1(0.1), pen], lam, 2e-5)  # a second penalty on A or B
    np.testing.assert_allclose(both, want, rtol=1e-15)
    np.testing.assert_array_equal(ab_prox_rows([], lam, 2e-5), 2e-5 * lam)


def test_proximal_weights_follow_the_problems_penalties_on_a_or_b():
    """Through ``penalties_reading("A", "B")``: uniform for a callable nuclear norm and its
    Custom spelling as for the named one, rho lam_i for a penalty on C alone and none."""
    rng = np.random.default_rng(0)
    U = rng.standard_normal((3, 20))
    lam = np.array([3.0, 110.0, 17.0, 40.0])
    for pens, uniform in (([pen_mod.Nuclear(0.1)], True),
                          ([lambda A, B, C, D: 0.1 * cp.normNuc(A)], True),
                          ([pen_mod.Custom(fn=lambda A, B, C, D: cp.normNuc(A), reads=("A",),
                                           weight=0.1)], True),
                          ([pen_mod.L1(0.1, on="C")], False), ([], False)):
        pb = TrainingProblem(U, np.sin(U[:1]), n=4, penalties=pens)
        got = ab_prox_rows(pb.penalties_reading("A", "B"), lam, 2e-5)
        np.testing.assert_array_equal(got, np.full(4, 2e-5 * 110.0) if uniform else 2e-5 * lam)


@pytest.mark.parametrize("seed", [0, 1])
def test_nuclear_blocks_solve_one_problem_with_a_uniform_proximal_term(seed):
    """With the nuclear norm and lam spread over a factor of 50, the first-order block
    (inexact Dykstra prox) and the Clarabel block solve the same problem, whose proximal
    term is rho max(lam) / 2 ||W - W0||^2 (numpy, from the definition): both report
    their value in training units (the stable divergences, lam-weighted), FISTA's is
    certified and not above Clarabel's by more than its certified gap, and the two agree
    within the block tolerance."""
    from fenchel_idl.blocks.cvxpy_blocks import Blocks
    from fenchel_idl.blocks.solvers import solve_certified
    pen = pen_mod.Nuclear(0.1)
    pb, X, lam, C, D, W0, V, rho, gammas = _penalized_setup(pen, seed)
    lam = np.linspace(3.0, 150.0, pb.n)[np.random.default_rng(seed).permutation(pb.n)]
    A, B, b, info = fast_ab_penalized(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0,
                                      tol=1e-7, rho=rho)
    A2, B2, b2, info2 = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "sdp", None, "raise", 1e-8)[-1],
        W0, rho)

    def F(A, B, b):  # lam-weighted stable divergences + uniform proximal term + P
        W = np.hstack([A, B, b[:, None]])
        Z = W @ V
        Zp = np.maximum(Z, 0.0)
        rows = (0.5 * (X - Zp) ** 2 + X * (Zp - Z)).sum(1) / pb.m
        return float(lam @ rows) + 0.5 * rho * lam.max() * float(np.sum((W - W0) ** 2)) \
            + 0.1 * float(np.linalg.svd(A, compute_uv=False).sum())

    f1, f2 = F(A, B, b), F(A2, B2, b2)
    assert info.certified
    assert info.objective == pytest.approx(f1, rel=1e-10, abs=1e-12)
    assert info2.objective == pytest.approx(f2, rel=1e-6, abs=1e-8)
    assert f1 - f2 <= info.gap * max(1.0, abs(info.objective)) + 1e-8 * max(1.0, abs(f2))
    assert abs(f1 - f2) <= 1e-6 * max(1.0, abs(f2))
