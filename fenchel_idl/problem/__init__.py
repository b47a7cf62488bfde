"""The training problem (section 6): losses, penalties, the Fenchel-relaxed problem
and the data sets it is stated on.
"""

from fenchel_idl.problem import datasets
from fenchel_idl.problem.losses import (
    LOSSES,
    CrossEntropyLoss,
    Loss,
    SquaredLoss,
    get_loss,
    prediction_metric,
)
from fenchel_idl.problem.penalties import (
    L1,
    PENALTIES,
    ColumnNorms,
    Custom,
    FeatureSelection,
    LipschitzBound,
    NotSupportedInRefinement,
    Nuclear,
    Penalty,
    RowNorms,
    get_penalty,
)
from fenchel_idl.problem.training_problem import Bounds, TrainingProblem

__all__ = [
    "L1",
    "LOSSES",
    "PENALTIES",
    "Bounds",
    "ColumnNorms",
    "CrossEntropyLoss",
    "Custom",
    "FeatureSelection",
    "LipschitzBound",
    "Loss",
    "NotSupportedInRefinement",
    "Nuclear",
    "Penalty",
    "RowNorms",
    "SquaredLoss",
    "TrainingProblem",
    "datasets",
    "get_loss",
    "get_penalty",
    "prediction_metric",
]
