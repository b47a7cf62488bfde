"""Shared, seeded fixtures. Builders used by several folders live in tests/helpers.py."""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fenchel_idl.problem.training_problem import TrainingProblem
from tests.helpers import random_model, small_regression

# Property tests never depend on the machine's speed: no per-example deadline, and no
# health-check failure when a loaded machine generates examples slowly.
settings.register_profile("fenchel_idl", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fenchel_idl")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def model(rng):
    return random_model(rng)


@pytest.fixture
def problem(rng):
    """A small regression TrainingProblem (n = 6, kappa = 0.5, readout ball 20)."""
    U, Y = small_regression(rng)
    return TrainingProblem(U, Y, n=6, kappa=0.5, lam=5.0, bounds={"C": 20.0})
