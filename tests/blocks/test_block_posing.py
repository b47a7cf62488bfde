"""The blocks are posed without large cancelling constants, so that their gaps are small in
units of the training objective (issue: a gap relative to an objective of -7e6 allowed
absolute errors above the training loss).

References: the DCA majorizer and the proximal (A, B) objective evaluated in plain numpy in
extended precision (their literal, expanded forms), optima from scipy's L-BFGS-B and from
Clarabel, and the solver statistics of a CVXPY problem with a large constant.
"""

from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import minimize

from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import fast_ab_block, fast_ab_penalized
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.blocks.x_step import fast_x_block
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.drivers.minibatch import solve_bcd_minibatch
from fenchel_idl.drivers.problem_file import bcd_options, build_problem, load_data, load_problem
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem import penalties as pen_mod
from fenchel_idl.problem.training_problem import TrainingProblem
from tests.blocks.test_first_order import _penalized_setup

REPO = Path(__file__).resolve().parents[2]
LD = np.longdouble


def _large_state_problem(rng, scale=300.0):
    """A ReLU problem whose states are of size ~scale (unstandardized inputs): the expanded
    divergence terms are ~scale^2 times lam, far above the loss."""
    p, m, n = 2, 60, 6
    U = scale * rng.uniform(-1, 1, (p, m))
    Y = np.sin(U[:1] / scale * 3)
    pb = TrainingProblem(U, Y, n=n, kappa=0.5, standardize=False)
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, p)), rng.standard_normal(n)
    X = np.zeros((n, m))
    for _ in range(200):  # the equilibrium (||A||_inf = 0.45), then a small perturbation
        X = np.maximum(A @ X + B @ U + b[:, None], 0)
    X = X * rng.uniform(0.999, 1.001, (n, m))
    C = 1e-3 * rng.standard_normal((1, n))
    D, d = 1e-3 * rng.standard_normal((1, p)), np.zeros(1)
    return pb, (A, B, b, C, D, d, X)


def _majorizer_ld(pb, A, B, b, C, D, d, Xbar, lam, X):
    """The X block's objective in its literal expanded form, in extended precision: the
    squared loss + (1/m) sum_i lam_i (1/2 x^2 + 1/2 z_+^2 - x z) + (1/2m) tr((X - Xbar)^T S+
    (X - Xbar)), S+ the positive part of Lam A + A^T Lam."""
    m = pb.m
    M = lam[:, None] * A
    ev, Q = np.linalg.eigh(M + M.T)
    Sp = (Q * np.maximum(ev, 0)) @ Q.T
    X, Xbar = X.astype(LD), Xbar.astype(LD)
    Z = A.astype(LD) @ X + (B @ pb.U + b[:, None]).astype(LD)
    E = C.astype(LD) @ X + (D @ pb.U + d[:, None]).astype(LD) - pb.Y.astype(LD)
    div = 0.5 * X * X + 0.5 * np.maximum(Z, 0) ** 2 - X * Z
    Dx = X - Xbar
    return (0.5 * np.sum(E * E) + np.sum(lam.astype(LD)[:, None] * div)
            + 0.5 * np.sum(Dx * (Sp.astype(LD) @ Dx))) / m


def test_x_block_objective_is_the_majorizer_at_the_loss_scale_and_its_gap_bounds_it(rng):
    pb, (A, B, b, C, D, d, X) = _large_state_problem(rng)
    lam = np.full(pb.n, 300.0)
    # the expanded terms of the divergence are huge beside the objective
    Z = A @ X + B @ pb.U + b[:, None]
    expanded = float(np.sum(lam[:, None] * X * Z)) / pb.m
    Xn, info = fast_x_block(pb, A, B, b, C, D, d, X, lam, tol=1e-8)
    assert info.certified
    ref = float(_majorizer_ld(pb, A, B, b, C, D, d, X, lam, Xn))
    assert expanded > 1e5 * max(ref, 1e-3)
    assert info.objective == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # the certified gap is absolute (objective below 1), and it bounds the distance to an
    # optimum found independently by L-BFGS-B on the extended-precision objective's values
    assert info.objective < 1.0
    assert info.gap <= 1e-8
    shape = Xn.shape

    def fun(v):
        Xv = v.reshape(shape)
        return float(_majorizer_ld(pb, A, B, b, C, D, d, X, lam, Xv))

    res = minimize(fun, Xn.ravel(), method="L-BFGS-B", bounds=[(0, None)] * Xn.size,
                   options={"maxiter": 200, "ftol": 1e-15, "gtol": 1e-12})
    best = min(float(res.fun), ref)
    assert ref - best <= info.gap + 1e-12


def test_ab_block_objective_and_gap_are_lam_weighted_and_free_of_the_constant(rng):
    pb, (A, B, b, _, _, _, X) = _large_state_problem(rng, scale=3.0)
    lam = rng.uniform(50, 500, pb.n)
    gam = state_lipschitz(pb.activation, pb.n)
    W0 = np.hstack([A, B, b[:, None]])
    rho = 1e-2
    Af, Bf, bf, info = fast_ab_block(pb, X, gam, W0, tol=1e-9, rho=rho, lam=lam)
    assert info.certified
    V = np.vstack([X, pb.U, np.ones((1, pb.m))])
    Wf = np.hstack([Af, Bf, bf[:, None]])

    def rows_ld(W):
        """Row i: (1/m) sum_j (1/2 x^2 + 1/2 z_+^2 - x z) + rho/2 ||w - w0||^2."""
        Z = W.astype(LD) @ V.astype(LD)
        Xl = X.astype(LD)
        div = np.sum(0.5 * Xl * Xl + 0.5 * np.maximum(Z, 0) ** 2 - Xl * Z, axis=1) / pb.m
        return div + 0.5 * rho * np.sum((W.astype(LD) - W0) ** 2, axis=1)

    assert info.objective == pytest.approx(float(lam @ rows_ld(Wf)), rel=1e-9)
    # each row against Clarabel on the same row program: the lam-weighted excess is
    # within the certified (lam-weighted) gap
    excess, got = 0.0, rows_ld(Wf)
    for i in range(pb.n):
        w = cp.Variable(V.shape[0])
        z = V.T @ w
        obj = (0.5 * cp.sum_squares(cp.pos(z)) - X[i] @ z) / pb.m \
            + 0.5 * rho * cp.sum_squares(w - W0[i]) + 0.5 * float(X[i] @ X[i]) / pb.m
        n, p = pb.n, pb.p
        cons = [gam[i] * cp.norm1(w[:n]) <= pb.kappa]
        if pb.bounds.B is not None:
            cons += [cp.norm1(w[n:n + p]) <= pb.bounds.B, cp.abs(w[n + p]) <= pb.bounds.B]
        cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
        excess += lam[i] * max(float(got[i]) - float(obj.value), 0.0)
    assert excess <= info.gap * max(1.0, info.objective) + 1e-7


def test_a_cvxpy_gap_is_relative_to_the_posed_value_not_the_solvers_objective():
    # ||x - a||^2 expanded, with large a: the solver sees ||x||^2 - 2 a^T x, about -5e8 at
    # the optimum, and CVXPY adds the constant ||a||^2 back; the posed value is 5
    a = np.full(5, 1e4)
    x = cp.Variable(5)
    const = cp.Parameter(value=float(a @ a))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) - 2 * a @ x + const), [x <= a - 1.0])
    info = solve_certified(prob, "toy", "qp", solvers=("CLARABEL",), on_failure="warn", tol=1e-6)[-1]
    stats = prob.solver_stats.extra_stats
    assert abs(stats["pcost"]) > 1e8
    absolute = abs(stats["pcost"] - stats["dcost"])
    assert info.abs_gap == absolute
    assert info.gap == pytest.approx(absolute / max(1.0, abs(prob.value)))
    # certified means within tol of the posed value, not of the solver's -5e8: here the
    # optimum is 5 (x = a - 1) and Clarabel's point is 4e-5 above it
    assert info.certified == (absolute <= 1e-6 * max(1.0, abs(prob.value)))
    if prob.value - 5.0 > 1e-6 * 5.0:
        assert not info.certified


def test_cosine_job_blocks_are_certified_in_absolute_units_of_the_loss():
    spec = load_problem(REPO / "problems" / "cosine_regression.toml")
    ds, _ = load_data(spec)
    pb = build_problem(spec, ds)
    opts = bcd_options(spec, refine=False)
    opts.update(max_sweeps=4)
    res = solve_bcd(pb, **opts)
    tol = opts.get("gap_tol", 1e-6)
    for r in res.history:
        if r.block in ("X", "AB"):
            assert r.certified
            # the loss is ~0.07: a gap of tol in absolute units, not tol times 7e6
            assert r.abs_gap <= tol * max(1.0, abs(r.objective)) * 1.0000001


def test_minibatch_blocks_are_certified_in_absolute_units_of_the_loss():
    # the mini-batch W step works on a majorizer whose constant is not tracked: its value is
    # taken relative to the step's start, and its rows weighted by lam
    spec = load_problem(REPO / "problems" / "cosine_regression.toml")
    ds, _ = load_data(spec)
    pb = build_problem(spec, ds)
    res = solve_bcd_minibatch(pb, batch_size=50, epochs=1, seed=0, gap_tol=1e-6)
    assert res.certificate.relaxed_objective < 1.0
    for r in res.history:
        if r.block in ("X", "AB", "CD"):
            assert r.certified
            assert r.abs_gap <= 1e-6 * 1.0000001


@pytest.mark.parametrize("pen", [pen_mod.L1(0.05, on="AB"), pen_mod.ColumnNorms(0.05)],
                         ids=["l1-rowwise", "columns-coupled"])
def test_penalized_ab_block_value_and_gap_are_in_training_units(pen):
    pb, X, lam, C, D, W0, V, rho, gammas = _penalized_setup(pen, seed=3)
    A, B, b, info = fast_ab_penalized(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0,
                                      tol=1e-9, rho=rho)
    assert info.certified

    def F(A, B, b):
        """lam_i-weighted rows (expanded form plus its constant, extended precision) + P."""
        W = np.hstack([A, B, b[:, None]]).astype(LD)
        Z = W @ V.astype(LD)
        Xl = X.astype(LD)
        div = np.sum(0.5 * Xl * Xl + 0.5 * np.maximum(Z, 0) ** 2 - Xl * Z, axis=1) / pb.m
        # the proximal term is uniform, rho max(lam) on every row, with a penalty on A or B
        prox = 0.5 * rho * float(lam.max()) * np.sum((W - W0) ** 2)
        return float(lam.astype(LD) @ div + prox) + pen.value({"A": A, "B": B, "C": C, "D": D})

    assert info.objective == pytest.approx(F(A, B, b), rel=1e-9)
    A2, B2, b2, _ = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-8)[-1],
        W0, rho)
    # Clarabel's point is a reference (its own tolerance 1e-8 of a value below 1)
    assert F(A, B, b) - F(A2, B2, b2) <= info.gap * max(1.0, info.objective) + 1e-8


def test_bias_on_its_box_is_certified_only_when_the_gradient_points_outward(rng):
    # at b = beta the normal cone is [0, inf): the least-norm residual of g + N is max(g, 0);
    # a bias at the bound with g > 0 (the objective decreases inward) is not optimal
    from fenchel_idl.blocks.first_order import ab_min_norm_rows
    pb, _ = _large_state_problem(rng, scale=3.0)
    n, p, beta = pb.n, pb.p, pb.bounds.B
    gam = state_lipschitz(pb.activation, n)
    W = np.zeros((n, n + p + 1))
    W[:, n + p] = beta
    g = np.zeros_like(W)
    g[:, n + p] = 1.0      # decreasing b lowers the objective: residual 1 per row
    assert ab_min_norm_rows(pb, gam, W, g) == pytest.approx(np.ones(n))
    g[:, n + p] = -1.0     # the objective wants b above beta: optimal, residual 0
    assert ab_min_norm_rows(pb, gam, W, g) == pytest.approx(np.zeros(n))
    W[:, n + p] = -beta
    assert ab_min_norm_rows(pb, gam, W, g) == pytest.approx(np.ones(n))
