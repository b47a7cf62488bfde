import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fenchel_idl import (
    ImplicitModel,
    check_well_posed,
    is_well_posed,
    pf_eigenvalue,
    rescale,
    well_posedness,
)
from fenchel_idl.errors import NotWellPosedError, ValidationError
from fenchel_idl.model import Blockwise, norm_matrix
from tests.helpers import random_model


def test_paper_example_pf():
    A = np.array([[0.5, 0.0], [2.0, -0.5]])
    assert pf_eigenvalue(np.abs(A)) == pytest.approx(0.5)
    m = ImplicitModel(A=A, B=np.ones((2, 1)), C=np.ones((1, 2)), D=np.zeros((1, 1)))
    rep = well_posedness(m)
    assert rep.well_posed and rep.condition == "pf" and rep.norm_inf == pytest.approx(2.5)


def test_triangular_with_large_negative_diagonal_is_certified():
    A = np.array([[-1.5, 3.0], [0.0, 0.5]])
    assert pf_eigenvalue(np.abs(A)) > 1
    m = ImplicitModel(A=A, B=np.ones((2, 1)), C=np.ones((1, 2)), D=np.zeros((1, 1)))
    rep = well_posedness(m)
    assert rep.well_posed and rep.condition == "triangular"
    bad = m.replace(A=np.array([[1.5, 3.0], [0.0, 0.5]]))  # diag >= 1: not well-posed
    assert not is_well_posed(bad)
    with pytest.raises(NotWellPosedError, match="not certified well-posed"):
        check_well_posed(bad)


def test_pf_eigenvalue_matches_power_iteration(rng):
    M = np.abs(rng.standard_normal((15, 15)))
    v = np.ones(15)
    for _ in range(2000):
        v = M @ v
        v /= np.linalg.norm(v)
    assert pf_eigenvalue(M) == pytest.approx(v @ M @ v, rel=1e-8)
    with pytest.raises(ValidationError, match="nonnegative"):
        pf_eigenvalue(-M)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6, 6), elements=st.floats(-1, 1)))
def test_pf_certified_models_have_unique_convergent_fixed_points(A):
    m = ImplicitModel(A=A, B=np.eye(6), C=np.ones((1, 6)), D=np.zeros((1, 6)))
    if well_posedness(m).condition != "pf":
        return
    U = np.random.default_rng(0).standard_normal((6, 4))
    X1, info = m.equilibrium(U, max_iter=100000, tol=1e-12)
    assert info.converged
    X2, _ = m.equilibrium(U, X0=10 * np.ones((6, 4)), max_iter=100000, tol=1e-12)
    np.testing.assert_allclose(X1, X2, atol=1e-7)


def test_norm_matrix_blip():
    phi = Blockwise([(1, "relu"), (2, "softmax")])
    A = np.array([[0.1, 0.2, -0.3], [0.4, 0.0, 0.5], [-0.6, 0.7, 0.0]])
    N = norm_matrix(A, phi)
    # block (2,1): 2x1 column, l_inf -> l_1 norm = l1 norm of the column
    assert N.shape == (2, 2)
    assert N[0, 0] == pytest.approx(0.1)
    assert N[0, 1] == pytest.approx(0.3)  # row (0.2, -0.3): l1 -> l_inf = max |.|
    assert N[1, 0] == pytest.approx(1.0)
    assert N[1, 1] == pytest.approx(0.7)  # l1 -> l1: max column sum


def test_rescale_preserves_predictions_and_reaches_norm_condition(rng):
    A = rng.uniform(-1, 1, (10, 10)) * (rng.uniform(size=(10, 1)) * 0.25)
    A[0] *= 8  # one heavy row: ||A||_inf > 1 while lambda_PF < 1
    m = ImplicitModel(A=A, B=rng.standard_normal((10, 3)), C=rng.standard_normal((2, 10)),
                      D=rng.standard_normal((2, 3)), bias_x=rng.standard_normal(10))
    assert np.abs(A).sum(1).max() > 1 and pf_eigenvalue(np.abs(A)) < 1
    r = rescale(m)
    assert np.abs(r.A).sum(1).max() < 1
    U = rng.standard_normal((3, 25))
    np.testing.assert_allclose(r.predict(U), m.predict(U), atol=1e-9)


def test_rescale_errors(rng):
    m = random_model(rng, activation="tanh")
    with pytest.raises(ValidationError, match="positively homogeneous"):
        rescale(m)
    big = random_model(rng, kappa=0.8).replace(A=np.eye(12) * 1.2)
    with pytest.raises(NotWellPosedError, match="lambda_PF"):
        rescale(big)
