"""The start of a BCD run and the evaluations every driver needs: the true equilibrium of
the current (A, B), the relaxed objective, and the training metric."""

from __future__ import annotations

from typing import Any

import numpy as np

from fenchel_idl.blocks.block_solvers import State
from fenchel_idl.errors import InputTypeError
from fenchel_idl.model.equilibrium import EquilibriumInfo
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.losses import prediction_metric
from fenchel_idl.problem.training_problem import TrainingProblem

__all__ = ["equilibrium", "initial_state", "objective", "train_metric"]


def equilibrium(problem: TrainingProblem, s: State, X0=None) -> tuple[np.ndarray, EquilibriumInfo]:
    """The states X = phi(A X + B U + b) of the current (A, B, b) on the training inputs,
    solved to 1e-11 (warm-started from ``X0``)."""
    model = ImplicitModel(s.A, s.B, np.zeros((1, problem.n)), np.zeros((1, problem.p)),
                          problem.activation, s.b, None)
    return model.equilibrium(problem.U, X0=X0, tol=1e-11, max_iter=20000,
                             on_nonconvergence="warn")


def objective(problem: TrainingProblem, s: State) -> tuple[float, float, float]:
    """(loss, weighted divergence, penalty) of the relaxed objective at s."""
    return problem.objective_parts(s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam)


def train_metric(problem: TrainingProblem, model: ImplicitModel) -> dict[str, float]:
    """Training accuracy (cross-entropy) or RMSE (raw units) of ``model``."""
    task = "classification" if problem.loss.name == "cross_entropy" else "regression"
    return prediction_metric(model.predict(problem.U_raw), problem.Y_raw, task)


def initial_state(problem: TrainingProblem, init: Any = None,
                  rng: np.random.Generator | int = 0) -> State:
    """The start of BCD: random B and A = 0 (a random-feature model; ``rng`` a generator or a
    seed) or the given model, with X at its true equilibrium and (C, D) not yet solved."""
    rng = np.random.default_rng(rng)
    n, p, q = problem.n, problem.p, problem.q
    if init is None or (isinstance(init, str) and init == "random"):
        scale = 1.0 / np.sqrt(p)
        B = rng.standard_normal((n, p)) * scale * 2.0
        b = rng.standard_normal(n) if problem.bias else np.zeros(n)
        if problem.bounds.B is not None:  # start inside the ball
            rows = np.abs(B).sum(axis=1)
            B *= np.minimum(1.0, problem.bounds.B / np.maximum(rows, 1e-300))[:, None]
            b = np.clip(b, -problem.bounds.B, problem.bounds.B)
        A = np.zeros((n, n))
        C, D, d = np.zeros((q, n)), np.zeros((q, p)), np.zeros(q)
    elif isinstance(init, ImplicitModel):
        A, B, b, C, D, d = problem.from_user_model(init)
    else:
        raise InputTypeError(f"'init' must be None, 'random' or an ImplicitModel; got "
                             f"{type(init).__name__}.")
    s = State(A, B, b, C, D, d, np.zeros((n, problem.m)), problem.lam0.copy())
    s.X, _ = equilibrium(problem, s)
    return s
