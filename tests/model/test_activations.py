from fractions import Fraction

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.model import (
    Blockwise,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    get_activation,
)

COMPONENTWISE = [ReLU(), LeakyReLU(0.1), Tanh(), Sigmoid(), Identity()]
reals = st.floats(min_value=-6, max_value=6, allow_nan=False)


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
@settings(max_examples=200, deadline=None)
@given(z=reals, x=reals)
def test_fenchel_nonnegative_and_zero_exactly_at_phi(act, z, x):
    F_at = act.fenchel(act(np.array(z)), np.array(z))
    assert abs(float(F_at)) < 1e-9
    lo, hi = act.range_
    x = float(np.clip(x, lo, hi)) if np.isfinite(lo) or np.isfinite(hi) else x
    if isinstance(act, ReLU):
        x = abs(x)
    F = float(act.fenchel(np.array(x), np.array(z)))
    assert F >= 0.0
    # zero only at x = phi(z): F grows at least quadratically away from it (strong convexity
    # of f with modulus >= 1 for these maps)
    assert F >= 0.5 * (x - float(act(np.array(z)))) ** 2 - 1e-9


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
def test_fenchel_numpy_and_cvxpy_agree(act, rng):
    z = rng.uniform(-3, 3, size=(3, 5))
    x = act(rng.uniform(-3, 3, size=(3, 5)))
    if isinstance(act, (Tanh, Sigmoid)):
        x = np.clip(x, act.range_[0] + 1e-3, act.range_[1] - 1e-3)
    term = act.fenchel_cvxpy(cp.Constant(x), cp.Constant(z))
    np.testing.assert_allclose(term.expr.value, act.fenchel(x, z), atol=1e-7)


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
def test_fenchel_cvxpy_is_convex_in_each_argument(act, rng):
    z0 = rng.uniform(-1, 1, size=(2, 3))
    x0 = np.clip(act(z0), 0.05, 0.95) if isinstance(act, Sigmoid) else act(z0) * 0.9
    xv, zv = cp.Variable((2, 3)), cp.Variable((2, 3))
    assert act.fenchel_cvxpy(xv, cp.Constant(z0)).expr.is_convex()
    assert act.fenchel_cvxpy(cp.Constant(x0), zv).expr.is_convex()


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
def test_minimizing_fenchel_over_x_recovers_phi(act, rng):
    """argmin_x F(x, z) = phi(z): solved by CVXPY, compared with numpy."""
    z = rng.uniform(-2, 2, size=(4, 1))
    x = cp.Variable((4, 1))
    term = act.fenchel_cvxpy(x, cp.Constant(z))
    cp.Problem(cp.Minimize(cp.sum(term.expr)), term.constraints).solve(solver="CLARABEL")
    # the solver is accurate on the objective (~1e-8); the argmin then to about its root
    assert np.all(act.fenchel(x.value, z) < 1e-8)
    np.testing.assert_allclose(x.value, act(z), atol=1e-4)


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
def test_derivative_matches_finite_differences(act, rng):
    z = rng.uniform(-3, 3, size=(5, 4))
    z = z[np.abs(z) > 1e-3].reshape(-1, 1)  # away from kinks
    h = 1e-6
    fd = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z), fd, atol=1e-6)


@pytest.mark.parametrize("act", COMPONENTWISE, ids=lambda a: a.name)
def test_lipschitz_constant_holds(act, rng):
    a, b = rng.uniform(-5, 5, size=(2, 1000))
    assert np.all(np.abs(act(a) - act(b)) <= act.lipschitz * np.abs(a - b) + 1e-12)


def test_softmax_is_1_lipschitz_in_l1_and_fenchel(rng):
    sm = Softmax()
    for _ in range(200):
        u, v = rng.normal(size=(2, 6, 1)) * 3
        assert np.abs(sm(u) - sm(v)).sum() <= np.abs(u - v).sum() + 1e-12
    z = rng.normal(size=(4, 7))
    np.testing.assert_allclose(sm.fenchel(sm(z), z), 0.0, atol=1e-12)
    x = rng.dirichlet(np.ones(4), size=7).T
    assert np.all(sm.fenchel(x, z) >= 0)
    term = sm.fenchel_cvxpy(cp.Constant(x), cp.Constant(z))
    np.testing.assert_allclose(term.expr.value, sm.fenchel(x, z), atol=1e-9)


def test_softmax_vjp_matches_jacobian(rng):
    sm = Softmax()
    z = rng.normal(size=(5, 1))
    v = rng.normal(size=(5, 1))
    s = sm(z)[:, 0]
    J = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(sm.vjp(z, v)[:, 0], J.T @ v[:, 0], atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(z=st.lists(reals, min_size=5, max_size=5))
def test_blockwise_acts_block_by_block(z):
    phi = Blockwise([(2, "relu"), (3, "softmax")])
    z = np.array(z)[:, None]
    out = phi(z)
    np.testing.assert_allclose(out[:2], np.maximum(z[:2], 0))
    np.testing.assert_allclose(out[2:], Softmax()(z[2:]))
    F = phi.fenchel(out, z)
    np.testing.assert_allclose(F, 0.0, atol=1e-9)


def test_get_activation_names_and_errors():
    assert get_activation("relu") == ReLU()
    assert get_activation({"name": "leaky_relu", "alpha": 0.2}) == LeakyReLU(0.2)
    phi = Blockwise([(2, "relu"), (1, "tanh")])
    assert get_activation(phi.to_dict()) == phi
    with pytest.raises(ValidationError, match="'activation' must be one of"):
        get_activation("swish")
    with pytest.raises(InputTypeError, match="'activation'"):
        get_activation(3)
    with pytest.raises(ValidationError, match="'alpha'"):
        LeakyReLU(1.5)


@pytest.mark.parametrize("act", [ReLU(), LeakyReLU(0.2), Identity(), Tanh(), Sigmoid()],
                         ids=lambda a: a.name)
def test_solve_scalar(act, rng):
    a = rng.uniform(-3, 0.9, size=(6, 1))
    c = rng.uniform(-3, 3, size=(6, 8))
    x = act.solve_scalar(a, c)
    np.testing.assert_allclose(x, act(a * x + c), atol=1e-12)


# -- numerics of the divergence at large arguments (issue 23) ---------------------------------

def _relu_exact(x: float, z: float) -> float:
    """(6.8) in exact rational arithmetic on the float inputs."""
    fx, fz = Fraction(x), Fraction(z)
    zp = max(fz, Fraction(0))
    return float(fx * fx / 2 + zp * zp / 2 - fx * fz)


@pytest.mark.parametrize("x, z", [(1e8 + 1, 1e8), (1e12 + 0.001, 1e12), (3e15, -2e15),
                                  (0.0, 5e300 ** 0.5), (2.5, 2.5), (1e-3, -7.0)])
def test_relu_divergence_matches_exact_arithmetic(x, z):
    assert ReLU().fenchel(np.array(x), np.array(z)) == pytest.approx(_relu_exact(x, z),
                                                                      rel=1e-12, abs=1e-300)


def test_relu_divergence_named_values():
    relu = ReLU()
    assert float(relu.fenchel(np.array(1e8 + 1), np.array(1e8))) == 0.5
    assert float(relu.fenchel(np.array(1e12 + 0.001), np.array(1e12))) == pytest.approx(
        4.768371582e-7, rel=1e-9)  # x - z is 0.0009765625 in float64


@pytest.mark.parametrize("x, z", [(1e8 + 1, 1e8), (-1e8 - 1, -1e9), (2.0, -3.0), (-4.0, 5.0),
                                  (-1e12 - 0.5, -1e13)])
def test_leaky_relu_divergence_matches_exact_arithmetic(x, z):
    a = Fraction(0.1)
    fx, fz = Fraction(x), Fraction(z)
    f = fx * fx / 2 if fx >= 0 else fx * fx / (2 * a)
    fs = fz * fz / 2 if fz >= 0 else a * fz * fz / 2
    exact = float(f + fs - fx * fz)
    assert LeakyReLU(0.1).fenchel(np.array(x), np.array(z)) == pytest.approx(exact, rel=1e-12)


def test_smooth_divergences_at_large_arguments_by_hand():
    """F(x, z) = f(x) - log 2 + (1 - x) z for tanh at z >> 0, f(x) + (1 - x) z for sigmoid
    (the log1p terms vanish below one ulp), and 0 at x = phi(z)."""
    z = 1e12
    ft = 0.5 * (1.5 * np.log(1.5) + 0.5 * np.log(0.5))
    assert Tanh().fenchel(np.array(0.5), np.array(z)) == pytest.approx(ft - np.log(2) + 0.5 * z,
                                                                      rel=1e-15)
    assert Tanh().fenchel(np.array(1.0), np.array(z)) == 0.0
    assert Tanh().fenchel(np.array(-1.0), np.array(-z)) == 0.0
    fs = 2 * 0.5 * np.log(0.5)
    assert Sigmoid().fenchel(np.array(0.5), np.array(z)) == pytest.approx(fs + 0.5 * z, rel=1e-15)
    assert Sigmoid().fenchel(np.array(0.0), np.array(-z)) == 0.0
    sm = Softmax().fenchel(np.array([[0.5], [0.5]]), np.array([[z + 2.0], [z]]))
    # log(e^2 + 1) - 2 * 0.5 - log 2 for x = (1/2, 1/2) on the simplex
    assert float(sm[0]) == pytest.approx(np.log(np.exp(2.0) + 1) - 1.0 - np.log(2), rel=1e-12)


def test_relu_cvxpy_divergence_is_stable_and_exact_in_minimization():
    relu = ReLU()
    x = cp.Variable(1)
    x.value = np.array([1e8 + 1])
    term = relu.fenchel_cvxpy(x, cp.Constant(np.array([1e8])))
    assert float(term.expr.value[0]) == 0.5
    # fixed x: the auxiliary form equals F at the minimum over its variable
    zv = cp.Variable(3)
    x0, z0 = np.array([0.5, 2.0, 0.0]), np.array([-1.0, 1.5, 3.0])
    t = relu.fenchel_cvxpy(cp.Constant(x0), zv)
    prob = cp.Problem(cp.Minimize(cp.sum(t.expr)), t.constraints + [zv == z0])
    prob.solve(solver="CLARABEL")
    assert prob.value == pytest.approx(float(relu.fenchel(x0, z0).sum()), abs=1e-7)
