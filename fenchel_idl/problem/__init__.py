"""The training problem (section 6): losses, penalties, the Fenchel-relaxed problem, the
projections onto its well-posedness ball and the data sets it is stated on.
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
    penalty_constrains,
    penalty_reads,
)
from fenchel_idl.problem.projection import (
    PROJECTION_METHODS,
    project_inf_ball,
    project_l1_rows,
    project_well_posed,
    well_posed_radii,
)
from fenchel_idl.problem.training_problem import Bounds, TrainingProblem

__all__ = [
    "L1",
    "LOSSES",
    "PENALTIES",
    "PROJECTION_METHODS",
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
    "penalty_constrains",
    "penalty_reads",
    "prediction_metric",
    "project_inf_ball",
    "project_l1_rows",
    "project_well_posed",
    "well_posed_radii",
]
