"""Projection onto {||A||_inf <= kappa} and the BLIP ball (fenchel_idl.drivers.projection, (6.7))."""

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError
from fenchel_idl.model import Blockwise, norm_matrix
from fenchel_idl.problem.projection import (
    project_inf_ball,
    project_l1_rows,
    project_well_posed,
    well_posed_radii,
)


def check_kkt(A0, P, radius, atol=1e-9):
    """Optimality of P = argmin ||P - A0||_F s.t. ||P_i||_1 <= r_i, row by row (independent
    of how P was computed): either the row is inside its ball and unchanged, or it is the
    soft-thresholding of a0 at one tau >= 0 and lies on the sphere ||a||_1 = r."""
    radius = np.broadcast_to(radius, (A0.shape[0],))
    for a0, a, r in zip(A0, P, radius):
        if np.abs(a0).sum() <= r:
            np.testing.assert_array_equal(a, a0)
            continue
        assert np.abs(a).sum() == pytest.approx(r, rel=1e-12, abs=1e-14)
        support = a != 0
        assert support.any()
        # same signs on the support, one common threshold, zeros where |a0| <= tau
        assert np.all(np.sign(a[support]) == np.sign(a0[support]))
        taus = np.abs(a0[support]) - np.abs(a[support])
        tau = taus.mean()
        assert tau >= -atol
        np.testing.assert_allclose(taus, tau, atol=atol)
        assert np.all(np.abs(a0[~support]) <= tau + atol)


@pytest.mark.parametrize("shape,kappa", [((75, 75), 0.5), ((30, 200), 0.05), ((20, 3), 0.9),
                                         ((40, 40), 25.0), ((5, 8), 1e-9)])
def test_methods_agree_and_satisfy_kkt(rng, shape, kappa):
    A0 = rng.standard_normal(shape) * rng.exponential(size=(shape[0], 1))
    P_sort = project_inf_ball(A0, kappa, method="sort")
    P_bis = project_inf_ball(A0, kappa, method="bisection")
    np.testing.assert_allclose(P_sort, P_bis, rtol=0, atol=1e-8)
    for P in (P_sort, P_bis):
        assert np.abs(P).sum(axis=1).max() <= kappa  # exact feasibility, no tolerance
        check_kkt(A0, P, kappa)


def test_rows_inside_are_untouched_and_input_not_modified(rng):
    A0 = rng.standard_normal((10, 10))
    A0[::2] *= 0.01  # even rows inside the ball of radius 0.5
    keep = A0.copy()
    for method in ("sort", "bisection"):
        P = project_inf_ball(A0, 0.5, method=method)
        np.testing.assert_array_equal(P[::2], A0[::2])
        assert np.all(np.abs(P[1::2]).sum(axis=1) <= 0.5)
    np.testing.assert_array_equal(A0, keep)


def test_ties_zeros_and_single_entries():
    A0 = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 0.0, 0.0, 0.0],
                   [2.0, -2.0, 0.5, 0.0]])
    for method in ("sort", "bisection"):
        P = project_inf_ball(A0, 1.0, method=method)
        np.testing.assert_allclose(P[0], 0.25, atol=1e-15)
        np.testing.assert_array_equal(P[1], 0.0)
        np.testing.assert_allclose(P[2], [-1.0, 0, 0, 0], atol=1e-15)
        np.testing.assert_allclose(P[3], [0.5, -0.5, 0, 0], atol=1e-15)
        check_kkt(A0, P, 1.0)


def test_against_cvxpy(rng):
    for trial in range(4):
        A0 = rng.standard_normal((6, 7)) * (trial + 1)
        kappa = [0.3, 0.5, 0.9, 2.0][trial]
        X = cp.Variable(A0.shape)
        prob = cp.Problem(cp.Minimize(cp.sum_squares(X - A0)),
                          [cp.sum(cp.abs(X), axis=1) <= kappa])
        prob.solve(solver=cp.CLARABEL)
        assert prob.status == cp.OPTIMAL
        for method in ("sort", "bisection"):
            P = project_inf_ball(A0, kappa, method=method)
            # never worse than the interior-point optimum, and close to its solution (the
            # objective is 2-strongly convex, so the solver's small gap bounds the distance)
            assert np.sum((P - A0) ** 2) <= prob.value + 1e-7
            np.testing.assert_allclose(P, X.value, atol=1e-4)


def test_paper_lambda_max_bounds_the_threshold(rng):
    """The bisection interval [0, ||a||_2^2 / (2 kappa)] of section 6.2 contains tau."""
    for _ in range(300):
        a0 = rng.standard_normal(rng.integers(1, 12)) * rng.exponential()
        kappa = rng.exponential()
        if np.abs(a0).sum() <= kappa:
            continue
        a = project_inf_ball(a0[None], kappa)[0]
        tau = np.max(np.abs(a0) - np.abs(a))
        assert 0 < tau <= a0 @ a0 / (2 * kappa)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, (4, 5), elements=st.floats(-1e3, 1e3)),
       st.floats(1e-6, 1e2))
def test_property_feasible_and_agreeing(A0, kappa):
    P1 = project_inf_ball(A0, kappa)
    P2 = project_inf_ball(A0, kappa, method="bisection")
    assert np.abs(P1).sum(axis=1).max() <= kappa
    assert np.abs(P2).sum(axis=1).max() <= kappa
    np.testing.assert_allclose(P1, P2, rtol=0, atol=1e-8 * max(1.0, np.abs(A0).max()))
    # the projection is nonexpansive around any feasible point, here 0
    assert np.linalg.norm(P1) <= np.linalg.norm(A0) + 1e-12


def test_row_radii(rng):
    A0 = rng.standard_normal((5, 6))
    r = np.array([0.1, 1.0, np.inf, 3.0, 0.5])
    for method in ("sort", "bisection"):
        P = project_l1_rows(A0, r, method=method)
        np.testing.assert_array_equal(P[2], A0[2])
        assert np.all(np.abs(P).sum(axis=1) <= r)
        check_kkt(A0, P, r)


def test_well_posed_componentwise_scaling(rng):
    A0 = rng.standard_normal((8, 8))
    # sigmoid: gamma = 1/4, so rows go to the l1 ball of radius 4 kappa
    P = project_well_posed(A0, 0.5, "sigmoid")
    np.testing.assert_allclose(P, project_inf_ball(A0, 2.0), atol=1e-15)
    assert norm_matrix(P, "sigmoid").sum(axis=1).max() <= 0.5 * (1 + 1e-15)
    # relu: the plain kappa ball
    np.testing.assert_array_equal(project_well_posed(A0, 0.5), project_inf_ball(A0, 0.5))
    # a blockwise mix of componentwise maps: exact, row radii kappa / gamma_i
    phi = Blockwise([(3, "relu"), (5, "sigmoid")])
    radii, exact = well_posed_radii(phi, 8, 0.5)
    assert exact and radii.tolist() == [0.5] * 3 + [2.0] * 5
    P = project_well_posed(A0, 0.5, phi, method="bisection")
    check_kkt(A0, P, radii)
    assert norm_matrix(P, phi).sum(axis=1).max() <= 0.5 * (1 + 1e-15)


def test_well_posed_softmax_blocks_sound_subset(rng):
    phi = Blockwise([(2, "relu"), (3, "softmax"), (1, "tanh"), (2, "softmax")])
    for trial in range(5):
        A0 = rng.standard_normal((8, 8)) * (trial + 1)
        for kappa in (0.3, 0.9):
            P = project_well_posed(A0, kappa, phi)
            assert norm_matrix(P, phi).sum(axis=1).max() <= kappa * (1 + 1e-12)
            # row blocks: the flattened entries of each block row are in the l1 ball
            for s, e in [(0, 1), (1, 2), (2, 5), (5, 6), (6, 8)]:
                assert np.abs(P[s:e]).sum() <= kappa * (1 + 1e-12)
            # a matrix already inside the subset is left alone
            small = A0 * (0.1 * kappa / np.abs(A0).sum())
            np.testing.assert_array_equal(project_well_posed(small, kappa, phi), small)


def test_validation_messages():
    with pytest.raises(ValidationError, match="'kappa' must be in"):
        project_inf_ball(np.eye(2), 0.0)
    with pytest.raises(ValidationError, match="'method' must be one of"):
        project_inf_ball(np.eye(2), 0.5, method="newton")
    with pytest.raises(ShapeError, match="'A' must be a 2-D"):
        project_inf_ball(np.ones(3), 0.5)
    with pytest.raises(ValidationError, match="finite"):
        project_inf_ball([[np.nan, 0.0]], 0.5)
    with pytest.raises(InputTypeError, match="'kappa' must be a real number"):
        project_inf_ball(np.eye(2), "0.5")
    with pytest.raises(ShapeError, match="one radius per row"):
        project_l1_rows(np.eye(3), [1.0, 2.0])
    with pytest.raises(ValidationError, match="'radius' must contain only values in"):
        project_l1_rows(np.eye(2), [1.0, -1.0])
    with pytest.raises(ShapeError, match="square"):
        project_well_posed(np.ones((2, 3)), 0.5)
    with pytest.raises(ValidationError, match="blockwise over 3 states"):
        project_well_posed(np.eye(2), 0.5, Blockwise([(3, "relu")]))
