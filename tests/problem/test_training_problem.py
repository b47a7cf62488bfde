"""The relaxed training problem (fenchel_idl.problem.training_problem): user model round
trip and the input checks made before any solve."""

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import NotConvexError, ShapeError, ValidationError
from fenchel_idl.problem.training_problem import TrainingProblem
from tests.helpers import random_state, small_regression


def test_user_model_round_trip(rng, problem):
    A, B, b, C, D, d, _ = random_state(problem, rng)
    m = problem.to_user_model(A, B, b, C, D, d)
    back = problem.from_user_model(m)
    for x, y in zip((A, B, b, C, D, d), back):
        np.testing.assert_allclose(x, y, atol=1e-10)
    assert isinstance(m, ImplicitModel)


def test_bad_input_is_refused_before_solving(rng):
    U, Y = small_regression(rng)
    with pytest.raises(ValidationError, match=r"'kappa' must be in \(0.0, 1.0\); got 1.2"):
        TrainingProblem(U, Y, n=3, kappa=1.2)
    with pytest.raises(ValidationError, match="'lam' must be"):
        TrainingProblem(U, Y, n=3, lam=-1.0)
    with pytest.raises(ShapeError, match="same number of samples"):
        TrainingProblem(U, Y[:, :-1], n=3)
    with pytest.raises(ValidationError, match="one-hot"):
        TrainingProblem(U, np.full((2, U.shape[1]), 0.5), n=3, loss="cross_entropy")
    with pytest.raises(ValidationError, match="'loss' must be one of"):
        TrainingProblem(U, Y, n=3, loss="hinge")
    with pytest.raises(ValidationError, match="'penalties' names must be among"):
        TrainingProblem(U, Y, n=3, penalties=[{"name": "l3"}])
    with pytest.raises(NotConvexError, match="not convex"):
        TrainingProblem(U, Y, n=3, penalties=[lambda A, B, C, D: -cp.norm1(A)])
    prob = TrainingProblem(U, Y, n=3)
    with pytest.raises(ValidationError, match="'solver' must be one of the installed"):
        solve_bcd(prob, max_sweeps=1, solver="GUROBI_NOT_HERE", block_solver="cvxpy")
