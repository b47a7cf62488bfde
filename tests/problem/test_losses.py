"""Losses (fenchel_idl.problem.losses): value, gradient and CVXPY form agree."""

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.errors import ValidationError
from fenchel_idl.problem.losses import get_loss


@pytest.mark.parametrize("name", ["squared", "cross_entropy"])
def test_loss_gradient_and_cvxpy_agree_with_numpy(name, rng):
    loss = get_loss(name)
    Y = np.eye(3)[:, rng.integers(0, 3, 7)]
    Yhat = rng.standard_normal((3, 7))
    assert float(loss.cvxpy(Y, cp.Constant(Yhat), 7).value) == pytest.approx(loss.value(Y, Yhat))
    h = 1e-6
    fd = np.zeros_like(Yhat)
    for idx in np.ndindex(*Yhat.shape):
        E = np.zeros_like(Yhat)
        E[idx] = h
        fd[idx] = (loss.value(Y, Yhat + E) - loss.value(Y, Yhat - E)) / (2 * h)
    np.testing.assert_allclose(loss.grad(Y, Yhat), fd, atol=1e-7)
    with pytest.raises(ValidationError, match="'loss' must be one of"):
        get_loss("hinge")
