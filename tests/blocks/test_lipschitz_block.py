"""The first-order (A, B) block with the Lipschitz penalty (4.7) (fenchel_idl.blocks.lipschitz)
against Clarabel: its prox, its certificate and the block, and the routing of BCD."""

import warnings
from types import SimpleNamespace

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.blocks.block_solvers import (
    CvxpyAB,
    FirstOrderX,
    LipschitzAB,
    SolvePolicy,
    make_block_solvers,
)
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import ab_prox_weight
from fenchel_idl.blocks.lipschitz import (
    fast_ab_lipschitz,
    lipschitz_ab_apply,
    lipschitz_ab_prox,
    lipschitz_ab_residual,
)
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import SolverWarning
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem.penalties import L1, LipschitzBound
from fenchel_idl.problem.training_problem import TrainingProblem


def _inf(M):
    return float(np.abs(M).sum(axis=1).max())


def _clarabel_prox(Z, n, p, kappa, beta, weight, c, omega):
    """argmin w (||B||^2 + c^2) / (2 (1 - ||A||)) + 1/2 sum_i omega_i ||W_i - Z_i||^2 over
    the balls, posed from the definition in CVXPY."""
    A, B = cp.Variable((n, n)), cp.Variable((n, p))
    s, u = cp.Variable(), cp.Variable(nonneg=True)
    cons = [cp.sum(cp.abs(A), axis=1) <= kappa, s >= cp.max(cp.sum(cp.abs(A), axis=1)),
            u >= cp.max(cp.sum(cp.abs(B), axis=1))]
    if beta is not None:
        cons.append(cp.sum(cp.abs(B), axis=1) <= beta)
    sw = np.sqrt(omega)[:, None]
    obj = 0.5 * cp.sum_squares(cp.multiply(sw, A - Z[:, :n])) \
        + 0.5 * cp.sum_squares(cp.multiply(sw, B - Z[:, n:n + p])) \
        + weight * cp.quad_over_lin(cp.hstack([u, c]), 2 * (1 - s))
    cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL", tol_gap_abs=1e-9,
                                             tol_gap_rel=1e-9, tol_feas=1e-9)
    return A.value, B.value


@pytest.mark.parametrize("beta", [None, 0.6, 3.0])
@pytest.mark.parametrize("scale", [0.05, 0.4, 1.5])
def test_prox_equals_the_clarabel_prox(rng, beta, scale):
    n, p = 5, 4
    pb = SimpleNamespace(n=n, p=p, bias=True, kappa=0.8, bounds=SimpleNamespace(B=beta))
    Z = rng.standard_normal((n, n + p + 1)) * scale
    omega = rng.uniform(0.5, 3.0, n)
    weight, c = 0.7, 0.4
    W, _, _ = lipschitz_ab_prox(pb, np.ones(n), weight, c)(Z, omega)
    A2, B2 = _clarabel_prox(Z, n, p, 0.8, beta, weight, c, omega)
    np.testing.assert_allclose(W[:, :n], A2, atol=2e-6 * max(scale, 1.0))
    np.testing.assert_allclose(W[:, n:n + p], B2, atol=2e-6 * max(scale, 1.0))
    want_b = Z[:, -1] if beta is None else np.clip(Z[:, -1], -beta, beta)
    np.testing.assert_array_equal(W[:, -1], want_b)
    assert np.all(np.abs(W[:, :n]).sum(axis=1) <= 0.8 * (1 + 1e-12))
    if beta is not None:
        assert np.all(np.abs(W[:, n:n + p]).sum(axis=1) <= beta * (1 + 1e-12))


def test_prox_with_row_radii_and_zero_weight(rng):
    """Rows with their own radii kappa / gamma_i (the direct sum of levels), and weight 0
    (the plain projection on the balls)."""
    n, p = 5, 3
    pb = SimpleNamespace(n=n, p=p, bias=False, kappa=0.8, bounds=SimpleNamespace(B=None))
    gammas = np.array([1.0, 1.0, 2.0, 4.0, 1.6])
    Z = rng.standard_normal((n, n + p))
    W, _, _ = lipschitz_ab_prox(pb, gammas, 0.0, 0.3)(Z, np.ones(n))
    for i in range(n):  # the projection on the ball, by the definition
        x = cp.Variable(n)
        cp.Problem(cp.Minimize(cp.sum_squares(x - Z[i, :n])),
                   [cp.norm1(x) <= 0.8 / gammas[i]]).solve(solver="CLARABEL")
        np.testing.assert_allclose(W[i, :n], x.value, atol=1e-6)
    np.testing.assert_array_equal(W[:, n:], Z[:, n:])
    W, _, _ = lipschitz_ab_prox(pb, gammas, 0.5, 0.3)(Z, np.full(n, 2.0))
    A = cp.Variable((n, n))
    B, s, u = cp.Variable((n, p)), cp.Variable(), cp.Variable(nonneg=True)
    rows = cp.sum(cp.abs(A), axis=1)
    cp.Problem(cp.Minimize(cp.sum_squares(A - Z[:, :n]) + cp.sum_squares(B - Z[:, n:])
                           + 0.5 * cp.quad_over_lin(cp.hstack([u, 0.3]), 2 * (1 - s))),
               [rows <= 0.8 / gammas, s >= cp.max(rows),
                u >= cp.max(cp.sum(cp.abs(B), axis=1))]).solve(solver="CLARABEL")
    np.testing.assert_allclose(W[:, :n], A.value, atol=2e-6)
    np.testing.assert_allclose(W[:, n:], B.value, atol=2e-6)


def test_residual_is_a_subgradient(rng):
    """e - G lies in d(w g(||A||, ||B||) + balls)(W): the subgradient inequality holds at
    random feasible points (and at points near W, where it is tight)."""
    n, p, w, c = 4, 3, 0.9, 0.5
    beta = 1.0
    pb = SimpleNamespace(n=n, p=p, bias=True, kappa=0.7, bounds=SimpleNamespace(B=beta))
    gam = np.ones(n)
    prox = lipschitz_ab_prox(pb, gam, w, c)

    def h(W):
        a, b = _inf(W[:, :n]), _inf(W[:, n:n + p])
        return w * (b * b + c * c) / (2 * (1 - a))

    def feasible(M):
        return prox(M, np.full(n, 1e12))[0]  # weight / 1e12: the balls' projection

    for trial in range(6):
        Z = rng.standard_normal((n, n + p + 1)) * 0.8
        W, ta, tb = prox(Z, np.ones(n))
        G = rng.standard_normal(W.shape)
        hints = (ta, tb) if trial % 2 else (rng.uniform(0, 2, n), rng.uniform(0, 2, n))
        S = lipschitz_ab_residual(pb, gam, w, c, W, G, *hints) - G
        for k in range(300):
            step = 10.0 ** rng.uniform(-6, 0.5)
            W2 = feasible(W + step * rng.standard_normal(W.shape))
            assert h(W2) >= h(W) + float(np.sum(S * (W2 - W))) - 1e-12 * (1 + h(W))


def _setup(weight, seed, n=6):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((4, 60))
    pb = TrainingProblem(U, np.sin(U[:1] + U[1:2]), n=n, kappa=0.5,
                         penalties=[LipschitzBound(weight)])
    X = np.maximum(rng.standard_normal((n, pb.m)), 0.0)
    lam = rng.uniform(3.0, 150.0, n)
    C, D = rng.standard_normal((1, n)) * 0.3, rng.standard_normal((1, pb.p)) * 0.3
    W0 = rng.standard_normal((n, n + pb.p + 1)) * 0.3
    V = np.vstack([X, pb.U, np.ones((1, pb.m))])
    rho = ab_prox_weight(np.linalg.norm(V, 2) ** 2 / pb.m)
    return pb, X, lam, C, D, W0, V, rho, state_lipschitz(pb.activation, n)


def _objective(pb, X, lam, C, D, W0, V, rho, pen):
    def F(A, B, b):  # the lam-weighted block objective, in numpy
        W = np.hstack([A, B, b[:, None]])
        Zp = np.maximum(W @ V, 0.0)
        rows = (0.5 * (Zp ** 2).sum(1) - (W * (X @ V.T)).sum(1)) / pb.m
        # the proximal term is uniform, rho max(lam) on every row: the penalty reads A, B
        return float(lam @ rows) + 0.5 * rho * lam.max() * float(np.sum((W - W0) ** 2)) \
            + pen.value({"A": A, "B": B, "C": C, "D": D})
    return F


@pytest.mark.parametrize("weight", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_block_reaches_the_clarabel_objective(weight, seed):
    """The fast block and the generic CVXPY block (Clarabel) of the same problem reach one
    objective: FISTA's is certified and never above Clarabel's by more than the tolerance."""
    pb, X, lam, C, D, W0, V, rho, gammas = _setup(weight, seed)
    pen = pb.penalties[0]
    A, B, b, info = fast_ab_lipschitz(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0,
                                      tol=1e-7, rho=rho)
    A2, B2, b2, _ = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-8)[-1],
        W0, rho)
    F = _objective(pb, X, lam, C, D, W0, V, rho, pen)
    assert info.certified and info.solver == "FISTA"
    assert np.all(np.abs(A).sum(axis=1) <= pb.kappa / gammas * (1 + 1e-12))
    f1, f2 = F(A, B, b), F(A2, B2, b2)
    scale = max(1.0, abs(f2))
    assert f1 - f2 <= 1e-7 * scale
    assert abs(f1 - f2) <= 1e-6 * scale
    # the record's value is the same objective with the divergence in its stable form,
    # which adds the constant sum_i lam_i ||x_i||^2 / (2 m)
    const = float(lam @ (X * X).sum(axis=1)) / (2 * pb.m)
    assert abs(info.objective - (f1 + const)) <= 1e-9 * max(1.0, abs(info.objective))


def test_certificate_bounds_the_true_gap():
    """Stopped early, the reported gap (uncertified) is still at least the distance to the
    Clarabel optimum: the bound holds from any iterate."""
    pb, X, lam, C, D, W0, V, rho, gammas = _setup(1.0, 2)
    pen = pb.penalties[0]
    A2, B2, b2, _ = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-9)[-1],
        W0, rho)
    F = _objective(pb, X, lam, C, D, W0, V, rho, pen)
    f_star = F(A2, B2, b2)
    for iters in (1, 20, 60, 200):
        A, B, b, info = fast_ab_lipschitz(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0,
                                          tol=1e-14, rho=rho, max_iter=iters)
        gap = info.gap * max(1.0, abs(info.objective))
        assert F(A, B, b) - f_star <= gap + 1e-8 * max(1.0, abs(f_star))


def _tiny(**kw):
    rng = np.random.default_rng(5)
    U = rng.standard_normal((3, 40))
    return TrainingProblem(U, np.sin(U[:1]), n=4, **kw)


def test_routing_takes_the_fast_block_and_names_only_the_cd_block():
    policy = SolvePolicy("socp")
    pb = _tiny(penalties=[LipschitzBound(1e-3)])
    assert lipschitz_ab_apply(pb)
    assert not lipschitz_ab_apply(_tiny(penalties=[L1(1e-3)]))
    assert not lipschitz_ab_apply(_tiny(penalties=[LipschitzBound(1e-3), L1(1e-3)]))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = make_block_solvers(pb, policy)
    assert isinstance(s.X.primary, FirstOrderX) and isinstance(s.AB.primary, LipschitzAB)
    assert isinstance(s.AB.backup, CvxpyAB)
    msgs = [str(x.message) for x in w if issubclass(x.category, SolverWarning)]
    assert len(msgs) == 1 and "(C, D) block for 'lipschitz'" in msgs[0]
    assert "(A, B)" not in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        s = make_block_solvers(pb, policy, block_solver="fista")
    assert isinstance(s.AB.primary, LipschitzAB)
    assert isinstance(make_block_solvers(pb, policy, block_solver="cvxpy").AB, CvxpyAB)


def test_bcd_sweep_is_certified_and_matches_the_cvxpy_sweep():
    """One BCD sweep with the fast (A, B) block and with the CVXPY block: both certified, one
    objective within the blocks' tolerance."""
    objs = []
    for solver in ("auto", "cvxpy"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            res = solve_bcd(_tiny(penalties=[LipschitzBound(0.05)]), max_sweeps=1, seed=0,
                            block_solver=solver)
        ab = [r for r in res.history if r.block == "AB"]
        assert ab and all(r.certified for r in ab)
        assert (ab[0].solver == "FISTA") == (solver == "auto")
        objs.append(res.history[-1].objective)
    assert abs(objs[0] - objs[1]) <= 1e-5 * max(1.0, abs(objs[1]))


# ---- the (C, D) block ---------------------------------------------------------------------
def _cd_setup(weight, seed, bias=True, m=60):
    rng = np.random.default_rng(seed)
    n = 6
    U = rng.standard_normal((4, m))
    pb = TrainingProblem(U, np.sin(U[:1] + U[1:2]), n=n, kappa=0.5, bias=bias,
                         penalties=[LipschitzBound(weight)])
    X = np.maximum(rng.standard_normal((n, m)), 0.0)
    A = rng.standard_normal((n, n))
    A *= 0.4 / _inf(A)
    B = rng.standard_normal((n, pb.p)) * 0.3
    return pb, X, A, B


def _cd_value(pb, X, A, B, C, D, d):
    return pb.loss.value(pb.Y, C @ X + D @ pb.U + d[:, None]) + pb.penalties[0].value(
        {"A": A, "B": B, "C": C, "D": D})


@pytest.mark.parametrize("weight", [1e-3, 0.05, 1.0, 20.0])
@pytest.mark.parametrize("bias", [True, False])
def test_cd_block_reaches_the_clarabel_objective(weight, bias):
    from fenchel_idl.blocks.lipschitz import fast_cd_lipschitz
    pb, X, A, B = _cd_setup(weight, 0 if bias else 1, bias)
    K0 = np.zeros((pb.q, pb.n + pb.p + int(bias)))
    C, D, d, info = fast_cd_lipschitz(pb, X, A, B, pb.penalties[0], K0, tol=1e-8)
    C2, D2, d2, _ = Blocks(pb).solve_cd(
        X, A, B, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-7)[-1])
    assert info.certified and info.block == "CD"
    f1, f2 = _cd_value(pb, X, A, B, C, D, d), _cd_value(pb, X, A, B, C2, D2, d2)
    assert f1 - f2 <= 1e-7 * max(1.0, abs(f2))
    assert abs(info.objective - f1) <= 1e-10 * max(1.0, abs(f1))
    assert np.abs(C).sum(axis=1).max() <= pb.bounds.C * (1 + 1e-12)
    assert np.abs(D).sum(axis=1).max() <= pb.bounds.D * (1 + 1e-12)
    if not bias:
        np.testing.assert_array_equal(d, 0.0)


def test_cd_duality_gap_bounds_the_true_gap_from_any_iterate():
    from fenchel_idl.blocks.lipschitz import fast_cd_lipschitz
    pb, X, A, B = _cd_setup(0.5, 3)
    C2, D2, d2, _ = Blocks(pb).solve_cd(
        X, A, B, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-8)[-1])
    f_star = _cd_value(pb, X, A, B, C2, D2, d2)
    K0 = np.zeros((pb.q, pb.n + pb.p + 1))
    for iters in (1, 10, 30, 100):
        C, D, d, info = fast_cd_lipschitz(pb, X, A, B, pb.penalties[0], K0, tol=1e-15,
                                          max_iter=iters)
        gap = info.gap * max(1.0, abs(info.objective))
        assert _cd_value(pb, X, A, B, C, D, d) - f_star <= gap + 1e-8 * max(1.0, f_star)


def test_cd_routing_by_size(monkeypatch):
    """The first-order (C, D) block past the size threshold (then no block is generic),
    the CVXPY block below it (named by the warning); a BCD sweep through the fast blocks
    matches the one through the CVXPY blocks (after one sweep: the line search's long steps
    amplify the blocks' tolerance-level differences in later sweeps)."""
    import fenchel_idl.blocks.block_solvers as bs
    from fenchel_idl.blocks.block_solvers import LipschitzCD, Readout
    pb = _tiny(penalties=[LipschitzBound(1e-3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        assert isinstance(make_block_solvers(pb, SolvePolicy("socp")).CD, Readout)
    assert not bs.lipschitz_cd_apply(_tiny(penalties=[LipschitzBound(1e-3), L1(1e-3, on="C")]))
    monkeypatch.setattr(bs, "_LIPSCHITZ_CD_MIN_SIZE", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)  # no block is generic
        s = make_block_solvers(pb, SolvePolicy("socp"))
    assert isinstance(s.CD.primary, LipschitzCD) and isinstance(s.CD.backup, Readout)
    objs = []
    for solver in ("auto", "cvxpy"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            res = solve_bcd(_tiny(penalties=[LipschitzBound(0.05)]), max_sweeps=1, seed=0,
                            block_solver=solver)
        assert all(r.certified for r in res.history if r.block != "X")
        assert any(r.solver == "FISTA" for r in res.history if r.block == "LS") == (
            solver == "auto")
        objs.append(res.history[-1].objective)
    assert abs(objs[0] - objs[1]) <= 1e-5 * max(1.0, abs(objs[1]))
