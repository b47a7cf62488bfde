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
