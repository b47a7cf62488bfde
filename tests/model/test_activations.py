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
    # the expressions themselves, with one argument a variable holding the value
    for variable_x in (True, False):
        if isinstance(act, ReLU) and not variable_x:
            continue  # its fixed-x form has an auxiliary variable (tested below)
        v = cp.Variable((3, 5))
        v.value = x if variable_x else z
        term = act.fenchel_cvxpy(v, z) if variable_x else act.fenchel_cvxpy(x, v)
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
    xv, zv = cp.Variable(x.shape), cp.Variable(z.shape)
    xv.value, zv.value = x, z
    for term in (sm.fenchel_cvxpy(xv, z), sm.fenchel_cvxpy(x, zv)):
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


# -- stable CVXPY forms of the divergence (issue 23) ------------------------------------------

mpmath = pytest.importorskip("mpmath")


def _mp_divergence(act, x: float, z: float) -> float:
    """f(x) + f*(z) - x z in 60-digit arithmetic on the float inputs (an independent
    reference: the literal definition, evaluated without cancellation)."""
    with mpmath.workdps(60):
        x, z = mpmath.mpf(x), mpmath.mpf(z)
        if isinstance(act, LeakyReLU):
            a = mpmath.mpf(act.alpha)
            f = x * x / 2 if x >= 0 else x * x / (2 * a)
            fs = z * z / 2 if z >= 0 else a * z * z / 2
        elif isinstance(act, Tanh):
            f = ((1 + x) * mpmath.log(1 + x) if x > -1 else 0) / 2 \
                + ((1 - x) * mpmath.log(1 - x) if x < 1 else 0) / 2
            fs = mpmath.log(mpmath.cosh(z))
        else:
            f = (x * mpmath.log(x) if x > 0 else 0) + ((1 - x) * mpmath.log(1 - x) if x < 1 else 0)
            fs = mpmath.log(1 + mpmath.exp(z))
        return float(f + fs - x * z)


def _both_forms(act, x, z):
    """Values of fenchel_cvxpy with z fixed (x a variable) and with x fixed (z a variable),
    after checking that each is convex in its variable."""
    x, z = np.asarray(x, dtype=float), np.asarray(z, dtype=float)
    xv, zv = cp.Variable(x.shape), cp.Variable(z.shape)
    xv.value, zv.value = x, z
    fz = act.fenchel_cvxpy(xv, cp.Constant(z)).expr
    fx = act.fenchel_cvxpy(cp.Constant(x), zv).expr
    assert fz.is_convex() and fx.is_convex()
    return np.asarray(fz.value), np.asarray(fx.value)


def _literal_value(act, x, z):
    xv, zv = cp.Variable(), cp.Variable()
    xv.value, zv.value = np.asarray(x), np.asarray(z)
    return float((act.f_cvxpy(xv).expr + act.fstar_cvxpy(zv) - xv * zv).value)


LARGE = [
    (LeakyReLU(0.1), 1e8 + 1, 1e8), (LeakyReLU(0.1), -1e8 - 1, -1e9),
    (LeakyReLU(0.1), -1e12 - 0.5, -1e13), (LeakyReLU(0.1), 1e12 + 0.001, 1e12),
    (LeakyReLU(0.3), 1e8 + 1, -1e8), (LeakyReLU(0.3), -1e9, 1e9 + 1),
    (Tanh(), 1 - 2.0 ** -40, 1e8), (Tanh(), -1 + 2.0 ** -30, -1e12), (Tanh(), 1.0, 20.0),
    (Tanh(), 1 - 2.0 ** -40, 13.0),
    (Sigmoid(), 1 - 2.0 ** -40, 1e8), (Sigmoid(), 2.0 ** -30, -1e12),
    (Sigmoid(), 1 - 2.0 ** -45, 30.0),
]


@pytest.mark.parametrize("act, x, z", LARGE, ids=lambda v: getattr(v, "name", repr(v)))
def test_cvxpy_divergence_keeps_its_digits_at_large_arguments(act, x, z):
    exact = _mp_divergence(act, x, z)
    for F in (*_both_forms(act, x, z), act.fenchel(np.array(x), np.array(z))):
        assert float(F) == pytest.approx(exact, rel=1e-12, abs=1e-300)


def test_literal_form_loses_the_large_cases():
    """The references above are not met by f(x) + f*(z) - x z: the test can fail."""
    lost = [abs(_literal_value(act, x, z) - _mp_divergence(act, x, z))
            > 1e-6 * abs(_mp_divergence(act, x, z)) for act, x, z in LARGE]
    assert sum(lost) >= 8


def test_relu_leaky_named_value():
    fz, fx = _both_forms(LeakyReLU(0.2), np.array([1e8 + 1]), np.array([1e8]))
    assert float(fz[0]) == 0.5 and float(fx[0]) == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize("act", [LeakyReLU(0.1), LeakyReLU(0.7), Tanh(), Sigmoid()],
                         ids=lambda a: f"{a.name}{getattr(a, 'alpha', '')}")
def test_cvxpy_divergence_on_mixed_magnitudes(act, rng):
    """Entries from 1e-3 to 1e9 of both signs, x near and far from phi(z): every entry
    within 1e-13 relative (plus 1e-15 absolute, the rounding of O(1) terms) of the
    60-digit reference, in both fixed arguments."""
    z = 10.0 ** rng.uniform(-3, 9, size=(4, 6)) * rng.choice([-1, 1], size=(4, 6))
    x = act(z) + rng.choice([-1, 1], size=(4, 6)) * 10.0 ** rng.uniform(-6, 2, size=(4, 6))
    if not isinstance(act, LeakyReLU):
        x = np.clip(x, act.range_[0] + 1e-12, act.range_[1] - 1e-12)
    exact = np.vectorize(lambda a, b: _mp_divergence(act, a, b))(x, z)
    for F in (*_both_forms(act, x, z), act.fenchel(x, z)):
        assert np.all(np.abs(F - exact) <= 1e-13 * exact + 1e-15)


@pytest.mark.parametrize("act", [LeakyReLU(0.1), LeakyReLU(0.6), Tanh(), Sigmoid()],
                         ids=lambda a: f"{a.name}{getattr(a, 'alpha', '')}")
def test_stable_forms_give_the_literal_optimum(act, rng):
    """A small block solve on ordinary data: the proximal problems min_x sum F(x, z) +
    |x - t|^2 / 2 and min_z sum F(x, z) + |z - s|^2 / 2 reach the same optimum and
    minimizer with the stable form as with the literal f(x) + f*(z) - x z (Clarabel)."""
    z0 = rng.uniform(-30, 30, size=(3, 8))
    x0 = act(rng.uniform(-30, 30, size=(3, 8)))
    if not isinstance(act, LeakyReLU):
        x0 = np.clip(x0, act.range_[0] + 0.05, act.range_[1] - 0.05)
    t, s = x0 + rng.normal(scale=0.1, size=x0.shape), rng.normal(scale=5, size=z0.shape)
    results = []
    for stable in (True, False):
        xv, zv = cp.Variable(x0.shape), cp.Variable(z0.shape)
        if stable:
            ex, ez = act.fenchel_cvxpy(xv, z0).expr, act.fenchel_cvxpy(x0, zv).expr
        else:
            ex = act.f_cvxpy(xv).expr + act.fstar_cvxpy(z0) - cp.multiply(xv, z0)
            ez = act.f_cvxpy(x0).expr + act.fstar_cvxpy(zv) - cp.multiply(x0, zv)
        px = cp.Problem(cp.Minimize(cp.sum(ex) + 0.5 * cp.sum_squares(xv - t)))
        pz = cp.Problem(cp.Minimize(cp.sum(ez) + 0.5 * cp.sum_squares(zv - s)))
        assert px.is_dcp() and pz.is_dcp()
        px.solve(solver="CLARABEL")
        pz.solve(solver="CLARABEL")
        results.append((px.value, xv.value, pz.value, zv.value))
    (vx, x1, vz, z1), (wx, x2, wz, z2) = results
    assert vx == pytest.approx(wx, rel=1e-6, abs=1e-7)
    assert vz == pytest.approx(wz, rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(x1, x2, atol=1e-4)
    np.testing.assert_allclose(z1, z2, atol=1e-4)


def test_parameters_keep_the_literal_dpp_form():
    """A cp.Parameter as the fixed argument has no value to build the stable form from
    (and a block that re-solves must stay DPP): the literal form, which is DPP."""
    zp = cp.Parameter((2, 3))
    xv = cp.Variable((2, 3))
    for act in (LeakyReLU(0.2), Tanh(), Sigmoid()):
        term = act.fenchel_cvxpy(xv, zp)
        assert cp.Problem(cp.Minimize(cp.sum(term.expr)), term.constraints).is_dcp(dpp=True)


def test_softmax_cvxpy_divergence_at_a_large_common_level():
    """z = (1e8 + 2, 1e8) and x = (1/2, 1/2): F = log(e^2 + 1) - 1 - log 2 (the common
    level 1e8 cancels exactly), in both fixed arguments and per column."""
    sm = Softmax()
    x = np.array([[0.5, 0.25], [0.5, 0.75]])
    z = np.array([[1e8 + 2.0, -1e9], [1e8, -1e9 - 1.0]])
    exact = [np.log(np.exp(2.0) + 1) - 1.0 - np.log(2),
             float(_mp_softmax([0.25, 0.75], [-1e9, -1e9 - 1.0]))]
    xv, zv = cp.Variable((2, 2)), cp.Variable((2, 2))
    xv.value, zv.value = x, z
    for expr in (sm.fenchel_cvxpy(xv, z).expr, sm.fenchel_cvxpy(x, zv).expr):
        assert expr.is_convex()
        np.testing.assert_allclose(expr.value, exact, rtol=1e-12)
    z1 = cp.Variable(2)
    z1.value = z[:, 0]
    term = sm.fenchel_cvxpy(x[:, 0], z1)
    assert term.expr.shape == () and float(term.expr.value) == pytest.approx(exact[0], rel=1e-12)


def _mp_softmax(x, z):
    with mpmath.workdps(60):
        x = [mpmath.mpf(v) for v in x]
        z = [mpmath.mpf(v) for v in z]
        return (sum(v * mpmath.log(v) for v in x if v > 0)
                + mpmath.log(sum(mpmath.exp(v) for v in z)) - sum(a * b for a, b in zip(x, z)))
