import warnings

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
from fenchel_idl.errors import NotWellPosedError, NotWellPosedWarning, ValidationError
from fenchel_idl.model import Blockwise, norm_matrix
from fenchel_idl.model import implicit_model as im_module
from fenchel_idl.model import wellposedness as wp_module
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
    rep = well_posedness(m)
    # the iteration contracts like lambda_PF^t in a weighted norm: 1e5 steps reach 1e-12
    # for lambda_PF <= 0.999, not for lambda_PF = 1 - 1e-16 (which hypothesis finds)
    if rep.condition != "pf" or rep.pf_eigenvalue > 0.999:
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


# -- a converged iteration of an uncertified model warns that it may not be unique ----------

def _warnings_of(call):
    """(result, list of the NotWellPosedWarning messages) of call()."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call()
    return out, [str(w.message) for w in caught if issubclass(w.category, NotWellPosedWarning)]


def test_two_fixed_points_dense_model_warns_and_follows_x0():
    """x1 = relu(2 x2 - 1), x2 = relu(2 x1 - 1) has the fixed points 0 and (1, 1) (checked
    here by numpy): Picard from 0 stops at 0, converged, and the call says it may not be
    the unique equilibrium, with lambda_PF(|A|) = ||A||_inf = 2."""
    A = np.array([[0.0, 2.0], [2.0, 0.0]])
    m = ImplicitModel(A=A, B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)))
    U = -np.ones((2, 1))
    for x in (np.zeros((2, 1)), np.ones((2, 1))):
        np.testing.assert_array_equal(np.maximum(A @ x + U, 0.0), x)
    assert max(abs(np.linalg.eigvals(A))) == pytest.approx(2.0)
    (X, info), msgs = _warnings_of(lambda: m.equilibrium(U))
    assert info.converged and info.method == "picard"
    np.testing.assert_array_equal(X, 0.0)
    assert len(msgs) == 1
    assert "lambda_PF(N(A, gamma)) = 2 >= 1" in msgs[0]
    assert "||N(A, gamma)||_inf = 2 >= 1" in msgs[0] and "from X0 = 0" in msgs[0]
    (X1, info1), msgs = _warnings_of(lambda: m.equilibrium(U, X0=np.ones((2, 1))))
    assert info1.converged and len(msgs) == 1 and "the given X0" in msgs[0]
    np.testing.assert_array_equal(X1, 1.0)
    _, msgs = _warnings_of(lambda: m.predict(U))
    assert len(msgs) == 1
    _, msgs = _warnings_of(lambda: m.equilibrium(U, on_nonconvergence="ignore"))
    assert msgs == []


def test_contracting_iteration_without_certificate_warns(rng):
    """A rotation-like A with lambda_PF(|A|) = ||A||_inf = 1.2: no sufficient condition
    holds, yet the Picard iteration converges on the data (re-run in numpy)."""
    A = np.array([[0.6, 0.6], [-0.6, 0.6]])
    m = ImplicitModel(A=A, B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)))
    lam = max(abs(np.linalg.eigvals(np.abs(A))))
    assert lam == pytest.approx(1.2) and np.abs(A).sum(1).max() == pytest.approx(1.2)
    assert not is_well_posed(m)
    U = rng.standard_normal((2, 6))
    X_ref = np.zeros((2, 6))
    for _ in range(400):
        X_ref = np.maximum(A @ X_ref + U, 0.0)
    (X, info), msgs = _warnings_of(lambda: m.equilibrium(U, tol=1e-12))
    assert info.converged
    np.testing.assert_allclose(X, X_ref, atol=1e-10)
    assert len(msgs) == 1 and f"lambda_PF(N(A, gamma)) = {lam:.6g}" in msgs[0]
    (_, info2), msgs = _warnings_of(lambda: m.equilibrium(U, method="picard"))
    assert info2.converged and len(msgs) == 1


def test_certified_models_stay_silent(rng):
    iterated = ("auto", "picard", "anderson")
    models = [
        (random_model(rng), iterated),  # ||A||_inf = 0.8
        (random_model(rng, activation="tanh"), iterated),
        # lambda_PF < 1 although ||A||_inf > 1
        (ImplicitModel(A=[[0.5, 0.1], [2.0, -0.3]], B=np.ones((2, 1)), C=np.ones((1, 2)),
                       D=[[0.0]]), iterated),
        # triangular with diagonal -1.5: exact back substitution (Picard would oscillate)
        (ImplicitModel(A=[[-1.5, 3.0], [0.0, 0.5]], B=np.ones((2, 1)), C=np.ones((1, 2)),
                       D=[[0.0]]), ("auto",)),
    ]
    assert pf_eigenvalue(np.abs(models[2][0].A)) < 1 < np.abs(models[2][0].A).sum(1).max()
    for m, methods in models:
        U = rng.standard_normal((m.p, 5))
        for method in methods:
            (_, info), msgs = _warnings_of(lambda m=m, U=U, method=method: m.equilibrium(
                U, method=method, tol=1e-10))
            assert info.converged and msgs == [], (m, method, info, msgs)


def test_self_loops_alone_are_named_once():
    """x = tanh(2 x + u): the structured solver names the self loop; the model adds no
    second warning. A forced Picard iteration skips the structure, so the model names it."""
    m = ImplicitModel(A=[[2.0]], B=[[1.0]], C=[[1.0]], D=[[0.0]], activation="tanh")
    _, msgs = _warnings_of(lambda: m.equilibrium(np.zeros((1, 2))))
    assert len(msgs) == 1 and "depends on X0" in msgs[0]
    _, msgs = _warnings_of(lambda: m.equilibrium(np.zeros((1, 2)), method="picard"))
    assert len(msgs) == 1 and "a scalar self loop has A_ii * Lip(phi) >= 1" in msgs[0]


def test_uniqueness_check_runs_once_per_model_and_skips_eigenvalues_when_normed(
        rng, monkeypatch):
    calls = {"check": 0, "pf": 0}
    check, pf = wp_module._uncertified_iteration, wp_module.pf_eigenvalue

    def counting_check(*args):
        calls["check"] += 1
        return check(*args)

    def counting_pf(M):
        calls["pf"] += 1
        return pf(M)

    monkeypatch.setattr(im_module, "_uncertified_iteration", counting_check)
    monkeypatch.setattr(wp_module, "pf_eigenvalue", counting_pf)
    m = random_model(rng)
    U = rng.standard_normal((m.p, 4))
    for _ in range(5):
        m.equilibrium(U)
        m.predict(U)
    assert calls == {"check": 1, "pf": 0}
    bad = ImplicitModel(A=[[0.6, 0.6], [-0.6, 0.6]], B=np.eye(2), C=np.eye(2),
                        D=np.zeros((2, 2)))
    for _ in range(3):
        _warnings_of(lambda: bad.equilibrium(np.ones((2, 3))))
    assert calls["check"] == 2 and calls["pf"] >= 1
