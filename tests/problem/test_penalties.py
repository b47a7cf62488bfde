import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.errors import InputTypeError, NotConvexError, ValidationError
from fenchel_idl.problem.penalties import (
    L1,
    ColumnNorms,
    Custom,
    FeatureSelection,
    LipschitzBound,
    NotSupportedInRefinement,
    Nuclear,
    RowNorms,
    check_penalty_convex,
    get_penalty,
    penalty_reads,
)


def _mats(rng):
    return {"A": rng.uniform(-1, 1, (4, 4)) * 0.2, "B": rng.standard_normal((4, 3)),
            "C": rng.standard_normal((2, 4)), "D": rng.standard_normal((2, 3))}


def test_penalty_values_match_numpy_formulas(rng):
    M = _mats(rng)
    A, B, C, D = M["A"], M["B"], M["C"], M["D"]
    assert L1(0.5, on="AB").value(M) == pytest.approx(0.5 * (np.abs(A).sum() + np.abs(B).sum()))
    assert FeatureSelection(2.0).value(M) == pytest.approx(
        2.0 * np.linalg.norm(np.vstack([B, D]), axis=0).sum())
    assert RowNorms(1.0, of="AB").value(M) == pytest.approx(
        np.linalg.norm(np.hstack([A, B]), axis=1).sum())
    assert ColumnNorms(1.0, of="AC").value(M) == pytest.approx(
        np.linalg.norm(np.vstack([A, C]), axis=0).sum())
    assert Nuclear(1.0).value(M) == pytest.approx(np.linalg.svd(A, compute_uv=False).sum())
    a, b, c, d = (np.abs(X).sum(axis=1).max() for X in (A, B, C, D))
    assert LipschitzBound(1.0).value(M) == pytest.approx((b * b + c * c) / (2 * (1 - a)) + d)
    # the CVXPY form of (4.7) has the same value at its optimum over the auxiliary variables
    expr, cons = LipschitzBound(1.0).expression({k: cp.Constant(v) for k, v in M.items()})
    cp.Problem(cp.Minimize(expr), cons).solve(solver="CLARABEL")
    assert float(expr.value) == pytest.approx(LipschitzBound(1.0).value(M), rel=1e-6)


@pytest.mark.parametrize("pen", [L1(0.3, on="AB"), FeatureSelection(0.4), RowNorms(0.3, "AB"),
                                 ColumnNorms(0.3, "AC"), Nuclear(0.3)], ids=lambda p: p.name)
def test_prox_matches_cvxpy(pen, rng):
    M = _mats(rng)
    step = 0.7
    out = pen.prox(M, step)
    V = {k: cp.Variable(v.shape) for k, v in M.items()}
    expr, cons = pen.expression(V)
    obj = step * expr + 0.5 * sum(cp.sum_squares(V[k] - M[k]) for k in pen.matrices)
    cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
    for k, v in out.items():
        np.testing.assert_allclose(v, V[k].value, atol=1e-5)


def test_unsupported_prox_and_non_convex_penalties():
    with pytest.raises(NotSupportedInRefinement, match="not supported in refinement"):
        LipschitzBound(1.0).prox({}, 0.1)
    shapes = {"A": (3, 3), "B": (3, 2), "C": (1, 3), "D": (1, 2)}
    with pytest.raises(NotConvexError, match="not convex"):
        check_penalty_convex(Custom(fn=lambda A, B, C, D: -cp.norm(A, "fro")), shapes)
    with pytest.raises(NotConvexError, match="not DCP"):
        check_penalty_convex(Custom(fn=lambda A, B, C, D: [cp.norm(A, "fro") == 1]), shapes)
    with pytest.raises(ValidationError, match="'penalties' names must be among"):
        get_penalty({"name": "l0"})
    with pytest.raises(ValidationError, match=r"needs a 'name' key.*got keys \['l1'\]"):
        get_penalty({"l1": 1e-3})
    with pytest.raises(InputTypeError, match=r"got str \(for a named penalty write "
                                             r"\{'name': 'l1', 'weight': \.\.\.\}\)"):
        get_penalty("l1")
    assert isinstance(get_penalty(lambda A, B, C, D: cp.norm1(A)), Custom)


def test_lipschitz_penalty_is_dpp_with_fixed_matrices_and_tight_at_the_optimum(rng):
    # the (C, D) block of TrainingProblem holds A and B as Parameters: (4.7) must stay DPP
    M = _mats(rng)
    A, B = cp.Parameter((4, 4)), cp.Parameter((4, 3))
    C, D = cp.Variable((2, 4)), cp.Variable((2, 3))
    pen = LipschitzBound(0.3)
    expr, cons = pen.expression({"A": A, "B": B, "C": C, "D": D})
    prob = cp.Problem(cp.Minimize(cp.sum_squares(C - M["C"]) + cp.sum_squares(D - M["D"])
                                  + expr), cons)
    assert prob.is_dcp(dpp=True)
    A.value, B.value = M["A"], M["B"]
    prob.solve()
    # the epigraph variables are tight: the CVXPY value is the numpy value (4.7) at (C*, D*)
    ref = LipschitzBound(0.3).value({"A": M["A"], "B": M["B"], "C": C.value, "D": D.value})
    assert float(expr.value) == pytest.approx(ref, rel=1e-5)


def test_lipschitz_penalty_trains_in_bcd_and_lowers_the_bound():
    from fenchel_idl import TrainingProblem, solve_bcd
    from fenchel_idl.analysis.robustness import lipschitz_bound

    rng = np.random.default_rng(0)
    U = rng.uniform(-1, 1, (3, 40))
    Y = np.vstack([np.sin(2 * U[0]) + U[1], U[2] ** 2])
    rho = []
    for w in (0.0, 0.1):
        pens = [{"name": "lipschitz", "weight": w}] if w else []
        prob = TrainingProblem(U, Y, n=5, kappa=0.5, lam=1.0, penalties=pens,
                               standardize=False)
        rho.append(lipschitz_bound(solve_bcd(prob, max_sweeps=1).model))
    assert rho[1] < rho[0]


# ---- the first-order (A, B) block's pieces: numpy values, proximal maps, subgradients ----
_AB_PENALTIES = [L1(0.3, on="AB"), L1(0.2, on="A"), RowNorms(0.4, of="AB"), RowNorms(0.3),
                 ColumnNorms(0.4), ColumnNorms(0.3, of="AC"), FeatureSelection(0.5),
                 Nuclear(0.6)]


def _ab_cvxpy(pen, M, fixed, t):
    """argmin over the A, B the penalty reads of P + sum_i ||row_i - M_i||^2 / (2 t_i), by
    Clarabel (the independent reference of ab_prox)."""
    V = {k: cp.Variable(M[k].shape) for k in ("A", "B")}
    expr, _ = pen.expression({**{k: cp.Constant(v) for k, v in fixed.items()}, **V})
    tt = np.broadcast_to(np.asarray(t, dtype=float).reshape(-1, 1), (M["A"].shape[0], 1))
    fit = sum(cp.sum(cp.multiply(1.0 / (2 * tt), cp.square(V[k] - M[k]))) for k in V)
    cp.Problem(cp.Minimize(expr + fit)).solve(solver="CLARABEL", tol_gap_abs=1e-11,
                                               tol_gap_rel=1e-11, tol_feas=1e-11)
    return {k: V[k].value for k in V}, lambda X: float(
        pen.value({**fixed, **X}) + sum(np.sum((X[k] - M[k]) ** 2 / (2 * tt)) for k in X))


@pytest.mark.parametrize("pen", _AB_PENALTIES, ids=lambda p: f"{p.name}-{p.to_dict()}")
def test_numpy_value_equals_the_cvxpy_expression(pen, rng):
    M = _mats(rng)
    expr, _ = pen.expression({k: cp.Constant(v) for k, v in M.items()})
    assert pen.value(M) == pytest.approx(float(expr.value), rel=1e-12)


@pytest.mark.parametrize("metric", [False, True])
@pytest.mark.parametrize("pen", _AB_PENALTIES, ids=lambda p: f"{p.name}-{p.to_dict()}")
def test_ab_prox_is_the_clarabel_minimizer(pen, metric, rng):
    """ab_prox with C, D fixed (shifted groups for (A; C) and (B; D)) and, where the penalty
    takes one, per-row weights t: its objective is at most Clarabel's, and the points agree."""
    if metric and not pen.ab_metric:
        pytest.skip("scalar step only")
    M = _mats(rng)
    M["B"][:, 0] *= 0.05  # a column that the group penalties zero out
    fixed = {"C": M["C"], "D": M["D"] * np.array([0.0, 1.0, 1.0])}
    t = rng.uniform(0.3, 2.0, (4, 1)) if metric else 0.7
    got = pen.ab_prox({k: M[k] for k in ("A", "B")}, t, fixed)
    ref, obj = _ab_cvxpy(pen, M, fixed, t)
    full = {k: got.get(k, M[k]) for k in ("A", "B")}
    assert obj(full) <= obj(ref) + 1e-9
    for k in got:
        np.testing.assert_allclose(got[k], ref[k], atol=2e-5)


@pytest.mark.parametrize("pen", _AB_PENALTIES, ids=lambda p: f"{p.name}-{p.to_dict()}")
def test_ab_subgradient_satisfies_the_subgradient_inequality(pen, rng):
    """S from ab_subgradient is in t dP(W): P(Z) >= P(W) + <S / t, Z - W> at 300 random Z
    (at a point with exact zeros from the prox, where the subdifferential is a set)."""
    M = _mats(rng)
    fixed = {"C": M["C"], "D": M["D"] * np.array([0.0, 1.0, 1.0])}
    W = pen.ab_prox({k: M[k] for k in ("A", "B")}, 0.8, fixed)
    W = {k: W.get(k, M[k]) for k in ("A", "B")}
    R = {k: rng.standard_normal(W[k].shape) for k in W}
    t = 2.0
    S = pen.ab_subgradient(W, R, t, fixed)
    base = pen.value({**fixed, **W})
    for _ in range(300):
        Z = {k: W[k] + rng.standard_normal(W[k].shape) * rng.choice([1e-3, 1e-1, 1.0])
             for k in W}
        lin = sum(np.sum(S[k] * (Z[k] - W[k])) for k in S) / t
        assert pen.value({**fixed, **Z}) >= base + lin - 1e-9


def test_penalty_reads_narrows_a_callable_to_the_variables_it_contains():
    shapes = {"A": (3, 3), "B": (3, 2), "C": (1, 3), "D": (1, 2)}
    assert penalty_reads(get_penalty(lambda A, B, C, D: [C >= 0]), shapes) == ("C",)
    assert penalty_reads(get_penalty(lambda A, B, C, D: cp.norm1(B) + cp.norm1(D)),
                         shapes) == ("B", "D")
    assert penalty_reads(L1(1.0, on="C"), shapes) == ("C",)
    assert penalty_reads(LipschitzBound(1.0), shapes) == ("A", "B", "C", "D")
