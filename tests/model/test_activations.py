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
