"""Training losses L(Y, Yhat), averaged over samples (columns), section 6.1.

- ``squared``: (1/2m) ||Y - Yhat||_F^2.
- ``cross_entropy``: softmax cross-entropy (6.2), (1/m) sum_j [log 1^T exp(yhat_j) - y_j^T yhat_j],
  with Y one-hot (or any columns on the simplex).

Each loss gives its value and gradient in numpy and its CVXPY expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp, softmax

from fenchel_idl.validation import check_choice

__all__ = ["LOSSES", "CrossEntropyLoss", "Loss", "SquaredLoss", "get_loss", "prediction_metric"]

Array = NDArray[np.float64]


class Loss:
    """Base class of losses; all are convex in Yhat."""

    name: ClassVar[str] = "loss"

    def value(self, Y: Array, Yhat: Array) -> float:
        raise NotImplementedError

    def grad(self, Y: Array, Yhat: Array) -> Array:
        """dL/dYhat, shape (q, m)."""
        raise NotImplementedError

    def cvxpy(self, Y: Any, Yhat: Any, m: int) -> Any:
        """The loss as a CVXPY expression (Y may be a Parameter or a constant)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SquaredLoss(Loss):
    name: ClassVar[str] = "squared"

    def value(self, Y, Yhat):
        return float(0.5 * np.sum((Y - Yhat) ** 2) / Y.shape[1])

    def grad(self, Y, Yhat):
        return (Yhat - Y) / Y.shape[1]

    def cvxpy(self, Y, Yhat, m):
        return cp.sum_squares(Yhat - Y) / (2.0 * m)


@dataclass(frozen=True)
class CrossEntropyLoss(Loss):
    name: ClassVar[str] = "cross_entropy"

    def value(self, Y, Yhat):
        return float((np.sum(logsumexp(Yhat, axis=0)) - np.sum(Y * Yhat)) / Y.shape[1])

    def grad(self, Y, Yhat):
        return (softmax(Yhat, axis=0) * Y.sum(axis=0, keepdims=True) - Y) / Y.shape[1]

    def cvxpy(self, Y, Yhat, m):
        return (cp.sum(cp.log_sum_exp(Yhat, axis=0)) - cp.sum(cp.multiply(Y, Yhat))) / m


LOSSES = {cls.name: cls for cls in (SquaredLoss, CrossEntropyLoss)}


def get_loss(spec: Any) -> Loss:
    """Return the loss named ``spec`` ("squared" or "cross_entropy"), or ``spec`` itself."""
    if isinstance(spec, Loss):
        return spec
    return LOSSES[check_choice("loss", spec, tuple(LOSSES))]()


def prediction_metric(Yhat: ArrayLike, target: ArrayLike, task: str) -> dict[str, float]:
    """The figure a model is judged by: ``{"accuracy": ...}`` or ``{"rmse": ...}``.

    Parameters
    ----------
    Yhat : array_like of shape (q, m)
        Predictions (scores for classification).
    target : array_like
        Classification: labels of shape (m,), or one-hot columns of shape (q, m).
        Regression: targets of shape (q, m).
    task : {"classification", "regression"}

    Examples
    --------
    >>> import numpy as np
    >>> prediction_metric(np.array([[0.9, 0.2], [0.1, 0.8]]), np.array([0, 0]), "classification")
    {'accuracy': 0.5}
    >>> prediction_metric(np.array([[1.0, 3.0]]), np.array([[1.0, 1.0]]), "regression")
    {'rmse': 1.4142135623730951}
    """
    task = check_choice("task", task, ("classification", "regression"))
    Yhat, target = np.asarray(Yhat, dtype=float), np.asarray(target)
    if task == "classification":
        labels = target.argmax(0) if target.ndim == 2 else target
        return {"accuracy": float(np.mean(Yhat.argmax(0) == labels))}
    return {"rmse": float(np.sqrt(np.mean((Yhat - target) ** 2)))}
