"""Helpers the applications share: where the problem files are, and how a model is scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from fenchel_idl.problem import prediction_metric

__all__ = ["model_metric", "problems_dir", "rmse", "score"]


def problems_dir(given: str | Path | None = None) -> Path:
    """The directory of the problem files: ``given``, else ``problems/`` of the checkout,
    else ``problems/`` of the working directory."""
    if given is not None:
        return Path(given)
    for base in (Path(__file__).resolve().parents[2] / "problems", Path.cwd() / "problems"):
        if base.is_dir():
            return base
    return Path.cwd() / "problems"


def score(model: Any, U: ArrayLike, target: ArrayLike, task: str, **predict_options: Any
          ) -> float:
    """The one figure of :func:`fenchel_idl.problem.prediction_metric` for ``model`` on the
    inputs ``U`` (columns): accuracy (``task="classification"``, ``target`` labels or one-hot
    columns) or RMSE (``task="regression"``)."""
    (value,) = prediction_metric(model.predict(U, **predict_options), target, task).values()
    return value


def rmse(model: Any, U: ArrayLike, Y: ArrayLike) -> float:
    """Root mean squared error of ``model`` on inputs ``U`` against targets ``Y``."""
    return score(model, U, Y, "regression")


def model_metric(model: Any, ds: Any) -> dict[str, float]:
    """``{"accuracy": ...}`` on a labelled data set, else ``{"rmse": ...}``."""
    target = ds.Y if ds.task == "regression" else ds.labels
    return prediction_metric(model.predict(ds.U), target, ds.task)
