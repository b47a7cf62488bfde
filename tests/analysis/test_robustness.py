"""Section 4: every bound is checked against plain numpy re-derivations and against random
sampling inside its input set, which must never beat it."""

import warnings

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from fenchel_idl import ImplicitModel, pf_eigenvalue, rescale
from fenchel_idl.analysis.robustness import (
    _least_fixed_point,
    lipschitz_bound,
    lipschitz_penalty_value,
    lp_bound,
    output_bound,
    sensitivity_matrix,
    state_bounds,
)
from fenchel_idl.errors import (
    ConvergenceWarning,
    InputTypeError,
    NotWellPosedError,
    ShapeError,
    SolverError,
    ValidationError,
)
from fenchel_idl.model import Blockwise, norm_matrix
from tests.helpers import random_model

TOL = 1e-7


# -- helpers ---------------------------------------------------------------------------------

def top_k_sum(v, k):
    return np.sort(v)[::-1][:k].sum()


def card_perturbations(rng, p, m, sigma, k):
    """m random perturbations with |w| <= sigma and at most k nonzeros, half at the corners."""
    W = np.zeros((p, m))
    for j in range(m):
        idx = rng.choice(p, size=rng.integers(1, k + 1), replace=False)
        vals = rng.uniform(-1, 1, idx.size)
        if j % 2:
            vals = np.sign(vals)
        W[idx, j] = vals * sigma[idx]
    return W


def box_perturbations(rng, p, m, sigma):
    W = rng.uniform(-1, 1, (p, m))
    W[:, : m // 2] = np.sign(W[:, : m // 2])  # corners of the box
    return W * sigma[:, None]


def blip_model(rng, n_relu=4, n_soft=3, p=4, q=3, lam=0.8):
    """A random BLIP model (ReLU states and one softmax block) with lambda_PF(N) = lam."""
    phi = Blockwise([(n_relu, "relu"), (n_soft, "softmax")])
    n = n_relu + n_soft
    A = rng.standard_normal((n, n))
    A *= lam / pf_eigenvalue(norm_matrix(A, phi))
    return ImplicitModel(A=A, B=rng.standard_normal((n, p)), C=rng.standard_normal((q, n)),
                         D=rng.standard_normal((q, p)), activation=phi,
                         bias_x=rng.standard_normal(n), bias_y=rng.standard_normal(q))


def equilibria(model, U):
    X, info = model.equilibrium(U, tol=1e-13, max_iter=100000)
    assert info.converged
    return X


# -- state bounds (section 4.2, Thm 4.1) ----------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_state_bounds_match_linear_solve(rng, activation):
    m = random_model(rng, n=10, p=5, kappa=0.9, activation=activation)
    sigma = rng.uniform(0, 0.5, 5)
    gamma = 0.25 if activation == "sigmoid" else 1.0
    ref = np.linalg.solve(np.eye(10) - gamma * np.abs(m.A), gamma * np.abs(m.B) @ sigma)
    sb = state_bounds(m, sigma)
    assert np.all(sb.sigma_x >= ref)  # the certified fixed point is an upper bound ...
    np.testing.assert_allclose(sb.sigma_x, ref, rtol=1e-10)  # ... and tight
    np.testing.assert_array_equal(sb.eta, sb.sigma_x)
    # (4.3): ||x - x0||_inf <= ||Gamma B sigma||_inf / (1 - ||Gamma A||_inf), never below sigma_x
    a = np.abs(gamma * m.A).sum(1).max()
    assert sb.inf_bound == pytest.approx(np.max(gamma * np.abs(m.B) @ sigma) / (1 - a))
    assert sb.sigma_x.max() <= sb.inf_bound * (1 + 1e-12)
    assert sb.k is None and sb.converged


def test_cardinality_bounds_match_formula_4_4(rng):
    m = random_model(rng, n=9, p=6, kappa=0.7)
    sigma = rng.uniform(0.1, 1.0, 6)
    k = 2
    v = np.array([top_k_sum(sigma * np.abs(m.B[i]), k) for i in range(9)])
    sb = state_bounds(m, sigma, k=k)
    np.testing.assert_allclose(sb.sigma_x, np.linalg.solve(np.eye(9) - np.abs(m.A), v),
                               rtol=1e-10)
    assert sb.inf_bound == pytest.approx(v.max() / (1 - 0.7))
    box = state_bounds(m, sigma)
    assert np.all(sb.sigma_x <= box.sigma_x + 1e-12)
    assert state_bounds(m, sigma, k=6).sigma_x == pytest.approx(box.sigma_x)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), activation=st.sampled_from(["relu", "tanh", "sigmoid"]),
       k=st.integers(1, 5))
def test_state_bounds_never_beaten(seed, activation, k):
    rng = np.random.default_rng(seed)
    m = random_model(rng, n=8, p=5, kappa=rng.uniform(0.3, 0.95), activation=activation)
    sigma = rng.uniform(0, 1, 5) * rng.choice([0.1, 1.0, 5.0])
    u0 = 3 * rng.standard_normal(5)
    x0 = equilibria(m, u0[:, None])
    for kk, W in ((None, box_perturbations(rng, 5, 40, sigma)),
                  (k, card_perturbations(rng, 5, 40, sigma, k))):
        sb = state_bounds(m, sigma, k=kk)
        dev = np.abs(equilibria(m, u0[:, None] + W) - x0)
        assert np.all(dev <= sb.sigma_x[:, None] + TOL)
        assert np.all(dev.max(axis=0) <= sb.inf_bound + TOL)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_blip_bounds_never_beaten(seed):
    rng = np.random.default_rng(seed)
    m = blip_model(rng)
    sigma = rng.uniform(0, 1, 4)
    sb = state_bounds(m, sigma)
    assert sb.eta.shape == (5,) and sb.block_starts.tolist() == [0, 1, 2, 3, 4]
    assert sb.block_norms.tolist() == [np.inf] * 4 + [1.0]
    u0 = rng.standard_normal(4)
    x0 = equilibria(m, u0[:, None])
    D = equilibria(m, u0[:, None] + box_perturbations(rng, 4, 40, sigma)) - x0
    eta = np.vstack([np.abs(D[:4]), np.abs(D[4:]).sum(axis=0)])  # eta(x - x0) of (1.2)
    assert np.all(eta <= sb.eta[:, None] + TOL)
    assert np.all(np.abs(D) <= sb.sigma_x[:, None] + TOL)
    sbk = state_bounds(m, sigma, k=2)
    Dk = equilibria(m, u0[:, None] + card_perturbations(rng, 4, 40, sigma, 2)) - x0
    assert np.all(np.abs(Dk) <= sbk.sigma_x[:, None] + TOL)


def test_blip_norm_matrices_by_hand():
    phi = Blockwise([(1, "relu"), (2, "softmax")])
    A = np.array([[0.1, 0.2, -0.3], [0.2, 0.0, 0.1], [-0.1, 0.1, 0.0]])
    B = np.array([[1.0, -2.0], [0.5, 0.25], [-1.0, 0.5]])
    C = np.array([[1.0, 2.0, -3.0], [0.5, -0.5, 0.25]])
    D = np.array([[0.1, 0.0], [0.0, -0.2]])
    m = ImplicitModel(A, B, C, D, activation=phi)
    NA = norm_matrix(A, phi)
    NB = np.array([np.abs(B[0]), np.abs(B[1:]).sum(axis=0)])  # ||B_li||_{p_l}
    NC = np.column_stack([np.abs(C[:, 0]), np.abs(C[:, 1:]).max(axis=1)])  # dual of l1: l_inf
    S_ref = NC @ np.linalg.inv(np.eye(2) - NA) @ NB + np.abs(D)
    np.testing.assert_allclose(sensitivity_matrix(m), S_ref, rtol=1e-10)
    sigma = np.array([0.3, 0.2])
    np.testing.assert_allclose(state_bounds(m, sigma).eta,
                               np.linalg.solve(np.eye(2) - NA, NB @ sigma), rtol=1e-10)


def test_fixed_point_certificate_survives_early_stop(rng):
    N = np.abs(rng.standard_normal((6, 6)))
    N *= 0.99 / pf_eigenvalue(N)
    R = np.abs(rng.standard_normal((6, 3)))
    exact = np.linalg.solve(np.eye(6) - N, R)
    with pytest.warns(ConvergenceWarning, match="still valid"):
        X, it, conv = _least_fixed_point(N, R, max_iter=20)
    assert not conv and it == 20
    assert np.all(X >= exact - 1e-12)  # stopped early, still an upper bound
    X, _, conv = _least_fixed_point(N, R)
    assert conv and np.all(X >= exact) and np.allclose(X, exact, rtol=1e-9)
    assert np.all(N @ X + R <= X)  # a super-solution


# -- sensitivity matrix and Lipschitz constant (section 4.3, Thm 4.2) -----------------------

@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_sensitivity_matrix_matches_inverse(rng, activation):
    m = random_model(rng, n=12, p=4, q=3, kappa=0.85, activation=activation)
    ref = np.abs(m.C) @ np.linalg.inv(np.eye(12) - np.abs(m.A)) @ np.abs(m.B) + np.abs(m.D)
    S = sensitivity_matrix(m)
    assert S.shape == (3, 4) and np.all(S >= ref)
    np.testing.assert_allclose(S, ref, rtol=1e-10)
    sigma = rng.uniform(0, 1, 4)
    np.testing.assert_allclose(output_bound(m, sigma), S @ sigma)
    np.testing.assert_allclose(output_bound(m, sigma, k=1), (S * sigma).max(axis=1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["relu", "tanh", "blip"]))
def test_output_bounds_never_beaten(seed, kind):
    rng = np.random.default_rng(seed)
    m = blip_model(rng) if kind == "blip" else random_model(rng, n=8, p=4, kappa=0.9,
                                                             activation=kind)
    S = sensitivity_matrix(m)
    U0 = 2 * rng.standard_normal((4, 30))
    U = U0 + rng.standard_normal((4, 30)) * rng.choice([0.01, 1.0, 10.0])
    dY = np.abs(m.predict(U, tol=1e-13, max_iter=100000) - m.predict(U0, tol=1e-13,
                                                                       max_iter=100000))
    assert np.all(dY <= S @ np.abs(U - U0) + TOL * (1 + dY))
    if kind != "blip":
        rho = lipschitz_bound(m)
        assert np.abs(S).sum(axis=1).max() <= rho * (1 + 1e-12)  # ||S||_inf <= rho
        assert np.all(dY.max(axis=0) <= rho * np.abs(U - U0).max(axis=0) + TOL * (1 + dY.max()))


def test_lipschitz_bound_formula_and_penalty(rng):
    m = random_model(rng, n=6, p=3, q=2, kappa=0.6)
    def nrm(M):
        return np.abs(M).sum(axis=1).max()

    rho = nrm(m.B) * nrm(m.C) / (1 - 0.6) + nrm(m.D)
    assert lipschitz_bound(m) == pytest.approx(rho)
    pen = lipschitz_penalty_value(m.A, m.B, m.C, m.D)
    assert pen == pytest.approx(0.5 * (nrm(m.B) ** 2 + nrm(m.C) ** 2) / 0.4 + nrm(m.D))
    assert pen >= rho
    assert lipschitz_penalty_value(2 * m.A / 0.6, m.B, m.C, m.D) == np.inf
    with pytest.raises(ShapeError, match="'D' must have shape"):
        lipschitz_penalty_value(m.A, m.B, m.C, m.D.T)
    sig = random_model(rng, n=6, p=3, kappa=0.6, activation="sigmoid")  # gamma = 1/4
    assert lipschitz_bound(sig) == pytest.approx(nrm(sig.B / 4) * nrm(sig.C) / (1 - 0.15)
                                                 + nrm(sig.D))


def test_lipschitz_bound_errors_point_to_rescale(rng):
    A = np.array([[0.0, 3.0], [0.1, 0.0]])  # lambda_PF = 0.55 but ||A||_inf = 3
    m = ImplicitModel(A=A, B=np.eye(2), C=np.ones((1, 2)), D=np.zeros((1, 2)))
    with pytest.raises(NotWellPosedError, match=r"\|\|A\|\|_inf < 1.*rescale"):
        lipschitz_bound(m)
    rho = lipschitz_bound(rescale(m))  # same prediction rule, ||A'||_inf < 1
    U0, U = rng.standard_normal((2, 50)), rng.standard_normal((2, 50))
    dY = np.abs(m.predict(U) - m.predict(U0)).max(axis=0)
    assert np.all(dY <= rho * np.abs(U - U0).max(axis=0) + TOL)
    with pytest.raises(ValidationError, match="componentwise.*sensitivity_matrix"):
        lipschitz_bound(blip_model(rng))


# -- validation -----------------------------------------------------------------------------

def test_bad_inputs_are_named(rng):
    m = random_model(rng, n=5, p=3)
    with pytest.raises(ValidationError, match=r"'sigma_u' must be nonnegative.*-0.5 at index 1"):
        state_bounds(m, [0.1, -0.5, 0.2])
    with pytest.raises(ShapeError, match=r"'sigma_u' must be a scalar or have shape \(p,\) = "
                                         r"\(3,\).*got shape \(2,\)"):
        state_bounds(m, [0.1, 0.2])
    with pytest.raises(ValidationError, match=r"'k' must be an integer in \[1, 3\]; got 0"):
        state_bounds(m, 0.1, k=0)
    with pytest.raises(ValidationError, match=r"'k' must be an integer in \[1, 3\]; got 4"):
        output_bound(m, 0.1, k=4)
    with pytest.raises(InputTypeError, match="'k' must be an integer"):
        state_bounds(m, 0.1, k=1.5)
    with pytest.raises(ValidationError, match="'sigma_u' must contain only finite"):
        state_bounds(m, np.nan)
    with pytest.raises(InputTypeError, match="'model' must be an ImplicitModel"):
        sensitivity_matrix("model")


def test_models_without_pf_condition_are_refused():
    # well-posed by its triangular structure, but lambda_PF(|A|) = 2: no box bound
    tri = ImplicitModel(A=[[-2.0, 1.0], [0.0, 0.5]], B=[[1.0], [1.0]], C=[[1.0, 0.0]],
                        D=[[0.0]])
    for f in (lambda: state_bounds(tri, 0.1), lambda: sensitivity_matrix(tri),
              lambda: lp_bound(tri, [0.0], 0.1, c=[1.0, 0.0])):
        with pytest.raises(NotWellPosedError, match=r"lambda_PF\(N\(A, gamma\)\) < 1.*got "
                                                    r"lambda_PF = 2"):
            f()


# -- the LP relaxation (section 4.4, Thm 4.3) -----------------------------------------------

def scipy_lp(m, u0, sigma, c, d=None, k=None, input_range=None):
    """Independent re-derivation: the LP of Thm 4.3 in (x, u[, s]) for scipy's HiGHS."""
    n, p = m.n, m.p
    d = np.zeros(p) if d is None else d
    x0 = equilibria(m, u0[:, None])[:, 0]
    sx = state_bounds(m, sigma, k).sigma_x
    ulo, uhi = u0 - sigma, u0 + sigma
    if input_range is not None:
        ulo, uhi = np.maximum(ulo, input_range[0]), np.minimum(uhi, input_range[1])
    bounds = list(zip(np.maximum(0, x0 - sx), x0 + sx)) + list(zip(ulo, uhi))
    A_ub = np.hstack([m.A - np.eye(n), m.B])  # A x + B u + b <= x
    b_ub = -m.bias_x
    obj = -np.concatenate([c, d])
    if k is not None:  # s >= |u - u0|, sum s / sigma <= k
        Z = np.zeros
        A_ub = np.block([[A_ub, Z((n, p))],
                         [Z((p, n)), np.eye(p), -np.eye(p)],
                         [Z((p, n)), -np.eye(p), -np.eye(p)],
                         [Z((1, n + p)), 1 / sigma[None, :]]])
        b_ub = np.concatenate([b_ub, u0, -u0, [k]])
        bounds += [(0, None)] * p
        obj = np.concatenate([obj, np.zeros(p)])
    res = linprog(obj, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
    assert res.status == 0
    return -res.fun


@pytest.mark.parametrize("k", [None, 2])
def test_lp_bound_matches_scipy_linprog(rng, k):
    for _ in range(3):
        m = random_model(rng, n=7, p=4, kappa=0.7)
        u0, c, d = rng.standard_normal(4), rng.standard_normal(7), rng.standard_normal(4)
        sigma = rng.uniform(0.05, 0.6, 4)
        res = lp_bound(m, u0, sigma, c, k, d=d)
        ref = scipy_lp(m, u0, sigma, c, d, k)
        assert res.bound == pytest.approx(ref, rel=1e-6, abs=1e-6)
        assert res.lp_value == pytest.approx(ref, rel=1e-6, abs=1e-6)
        assert res.bound >= ref - 1e-9  # the dual certificate is never below the LP optimum
        assert res.status == "optimal" and res.objective == "linear" and res.n_solves == 1
    rr = (0.0, 1.0)
    m = random_model(rng, n=7, p=4, kappa=0.7)
    u0 = rng.uniform(0, 1, 4)
    c = rng.standard_normal(7)
    assert lp_bound(m, u0, 0.5, c, k, input_range=rr).bound == pytest.approx(
        scipy_lp(m, u0, np.full(4, 0.5), c, None, k, rr), rel=1e-6, abs=1e-6)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([None, 1, 3]),
       relaxation=st.sampled_from(["paper", "triangle"]))
def test_lp_bound_never_beaten_and_never_looser_than_box(seed, k, relaxation):
    rng = np.random.default_rng(seed)
    m = random_model(rng, n=8, p=5, kappa=rng.uniform(0.3, 0.9))
    u0, c = rng.standard_normal(5), rng.standard_normal(8)
    sigma = rng.uniform(0, 1, 5) * rng.choice([0.1, 1.0])
    res = lp_bound(m, u0, sigma, c, k, relaxation=relaxation)
    sb = state_bounds(m, sigma, k)
    box = c @ res.x0 + np.abs(c) @ sb.sigma_x
    assert res.bound <= box + 1e-7 * (1 + abs(box))
    W = box_perturbations(rng, 5, 60, sigma) if k is None else \
        card_perturbations(rng, 5, 60, sigma, k)
    vals = c @ equilibria(m, u0[:, None] + W)
    assert np.all(vals <= res.bound + TOL)
    # the attack lies in the set, and its true value is a lower bound of the maximum
    w = res.u - u0
    assert np.all(np.abs(w) <= sigma + 1e-12)
    if k is not None:
        assert np.count_nonzero(w) <= k
    assert res.value == pytest.approx(c @ res.x_eq)
    np.testing.assert_allclose(res.x_eq, equilibria(m, res.u[:, None])[:, 0], atol=1e-9)
    assert res.value <= res.bound + TOL
    if relaxation == "triangle":
        paper = lp_bound(m, u0, sigma, c, k).bound
        assert res.bound <= paper + 1e-7 * (1 + abs(paper))


def test_lp_bound_input_range_and_zero_radii(rng):
    m = random_model(rng, n=6, p=4, kappa=0.5)
    u0 = np.array([0.0, 0.5, 1.0, 0.2])
    sigma = np.array([0.3, 0.0, 0.3, 0.3])
    res = lp_bound(m, u0, sigma, rng.standard_normal(6), k=2, input_range=(0.0, 1.0))
    assert np.all((res.u >= 0) & (res.u <= 1)) and res.u[1] == 0.5
    assert np.count_nonzero(res.u - u0) <= 2
    with pytest.raises(ValidationError, match=r"'u0' must lie in input_range \[0.0, 1.0\]"):
        lp_bound(m, u0 + 2, 0.1, np.ones(6), input_range=(0.0, 1.0))


@pytest.mark.parametrize("k", [None, 2])
def test_discrepancy_bound_never_beaten(rng, k):
    m = random_model(rng, n=6, p=4, kappa=0.6)
    u0, sigma = rng.standard_normal(4), np.full(4, 0.4)
    res = lp_bound(m, u0, sigma, k=k, objective="discrepancy")
    up, down = res.componentwise.T
    box = state_bounds(m, sigma, k).sigma_x
    assert np.all(up <= box + 1e-8) and np.all(down <= np.minimum(box, res.x0) + 1e-8)
    assert res.bound == pytest.approx(np.sum(np.maximum(up, down) ** 2), rel=1e-9)
    assert res.bound <= np.sum(box ** 2) + 1e-7
    W = box_perturbations(rng, 4, 80, sigma) if k is None else \
        card_perturbations(rng, 4, 80, sigma, k)
    dX = equilibria(m, u0[:, None] + W) - res.x0[:, None]
    assert np.all(dX <= up[:, None] + TOL) and np.all(-dX <= down[:, None] + TOL)
    assert np.all(np.sum(dX ** 2, axis=0) <= res.bound + TOL)
    # the attack: in the set, evaluated at its true equilibrium, below the bound
    assert np.all(np.abs(res.u - u0) <= sigma + 1e-12)
    if k is not None:
        assert np.count_nonzero(res.u - u0) <= k
    assert res.value == pytest.approx(np.sum((res.x_eq - res.x0) ** 2))
    assert 0 <= res.value <= res.bound
    assert 1 <= res.n_solves <= 2 * m.n
    tri = lp_bound(m, u0, sigma, k=k, objective="discrepancy", relaxation="triangle")
    assert tri.bound <= res.bound + 1e-7 and tri.value <= tri.bound


def test_lp_bound_validation(rng):
    m = random_model(rng, n=5, p=3)
    c = np.ones(5)
    with pytest.raises(ValidationError, match="needs the ReLU activation"):
        lp_bound(random_model(rng, n=5, p=3, activation="tanh"), np.zeros(3), 0.1, c)
    with pytest.raises(ValidationError, match="'c' is required for objective='linear'"):
        lp_bound(m, np.zeros(3), 0.1)
    with pytest.raises(ValidationError, match="must be left unset for objective=.discrepancy."):
        lp_bound(m, np.zeros(3), 0.1, c, objective="discrepancy")
    with pytest.raises(ValidationError, match="'objective' must be one of"):
        lp_bound(m, np.zeros(3), 0.1, c, objective="l2")
    with pytest.raises(ShapeError, match=r"'c' must have shape \(5,\)"):
        lp_bound(m, np.zeros(3), 0.1, np.ones(4))
    with pytest.raises(ShapeError, match=r"'u0' must have shape \(3,\)"):
        lp_bound(m, np.zeros(4), 0.1, c)
    with pytest.raises(ValidationError, match=r"'k' must be an integer in \[1, 3\]; got 4"):
        lp_bound(m, np.zeros(3), 0.1, c, k=4)
    with pytest.raises(ValidationError, match="'sigma_u' must be nonnegative"):
        lp_bound(m, np.zeros(3), -0.1, c)
    with pytest.raises(ValidationError, match="'solver' must name installed CVXPY solvers"):
        lp_bound(m, np.zeros(3), 0.1, c, solver="NO_SUCH_SOLVER")


def test_failed_solves_are_never_reported_as_bounds(rng, monkeypatch):
    m = random_model(rng, n=5, p=3)

    def broken(self, *args, **kwargs):
        raise cp.error.SolverError("simulated failure")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    with pytest.raises(SolverError, match="failed with every solver.*simulated failure") as e:
        lp_bound(m, np.zeros(3), 0.1, np.ones(5), solver=["CLARABEL", "SCS"])
    assert len(e.value.attempts) == 2


def test_lp_bound_falls_back_and_agrees_across_solvers(rng):
    m = random_model(rng, n=6, p=3, kappa=0.5)
    u0, c = rng.standard_normal(3), rng.standard_normal(6)
    values = [lp_bound(m, u0, 0.3, c, solver=s).bound for s in ("HIGHS", "CLARABEL")]
    assert values[0] == pytest.approx(values[1], rel=1e-5, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scs = lp_bound(m, u0, 0.3, c, solver="SCS")  # a loose first-order solve ...
    assert scs.bound >= values[0] - 1e-9  # ... still gives a valid (certified) bound
