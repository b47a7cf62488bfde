"""The training problem (section 6): losses, penalties, the Fenchel-relaxed problem
and the data sets it is stated on.
"""

from fenchel_idl.problem.losses import (Loss, SquaredLoss, CrossEntropyLoss, get_loss, LOSSES,
                                      prediction_metric)
from fenchel_idl.problem.penalties import (Penalty, L1, FeatureSelection, RowNorms, ColumnNorms,
                                           Nuclear, LipschitzBound, Custom, get_penalty,
                                           NotSupportedInRefinement, PENALTIES)
from fenchel_idl.problem.training_problem import TrainingProblem, Bounds
from fenchel_idl.problem import datasets

__all__ = [
    "Loss", "SquaredLoss", "CrossEntropyLoss", "get_loss", "LOSSES", "prediction_metric", "Penalty", "L1",
    "FeatureSelection", "RowNorms", "ColumnNorms", "Nuclear", "LipschitzBound", "Custom",
    "get_penalty", "NotSupportedInRefinement", "PENALTIES", "TrainingProblem", "Bounds",
    "datasets",
]
