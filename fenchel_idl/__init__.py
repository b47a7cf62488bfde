"""fenchel_idl: implicit deep learning through convex optimization.

An implicit model (El Ghaoui et al., "Implicit Deep Learning", SIAM J. Math. Data Science,
2021) predicts

    y = C x + D u        where the state solves        x = phi(A x + B u).

Conventions, stated once: the paper's letters are kept (A, B, C, D, U, X, Y, phi), and
**samples are columns**: U has shape (p, m), X (n, m) and Y (q, m), where p is the number
of inputs, n of states, q of outputs and m of samples. The scikit-learn wrappers use rows
for samples, as scikit-learn does, and convert at their boundary only.
"""

from .activations import (Activation, Blockwise, Identity, LeakyReLU, ReLU, Sigmoid, Softmax,
                          Tanh, get_activation)
from . import datasets
from .bcd import BCDResult, BlockRecord, Certificate, Schedule, solve_bcd
from .executors import BlockExecutor, make_executor
from .minibatch import BatchRecord, solve_bcd_minibatch
from .composition import cascade, concat, feedback, parallel
from .compression import (ClosedFormState, ErrorBound, LowRankApproximation, LowRankModel,
                          Reduction, ReductionErrorBound, RemovedState, low_rank,
                          perturbation_bound, predict_speedup, reduce, selected_features)
from .equilibrium import EquilibriumInfo
from .errors import (CheckpointError, ConvergenceWarning, DataNotFoundError, EquilibriumError, FenchelIDLError,
                     InputTypeError, ModelFileError, NotConvexError, NotWellPosedError,
                     NumericalWarning, ShapeError, SolverError, SolverWarning,
                     TrainingInterrupted, ValidationError)
from .estimators import ImplicitClassifier, ImplicitRegressor
from .feedforward import from_layers, from_mlp
from .gradients import Gradients, input_gradient, loss_gradients
from .losses import get_loss
from .model import ImplicitModel
from .penalties import (L1, ColumnNorms, Custom, FeatureSelection, LipschitzBound, Nuclear,
                        Penalty, RowNorms, get_penalty)
from .solvers import SolveInfo, solve_certified
from .training import Bounds, TrainingProblem
from .wellposedness import (WellPosedness, check_well_posed, induced_norm, is_well_posed,
                            norm_matrix, pf_eigenvalue, rescale, well_posedness)

__version__ = "0.1.0"

__all__ = [
    "Activation", "Blockwise", "Identity", "LeakyReLU", "ReLU", "Sigmoid", "Softmax", "Tanh",
    "get_activation",
    "datasets",
    "BCDResult", "BlockRecord", "Certificate", "Schedule", "solve_bcd",
    "BlockExecutor", "make_executor", "BatchRecord", "solve_bcd_minibatch",
    "Gradients", "input_gradient", "loss_gradients", "get_loss",
    "L1", "ColumnNorms", "Custom", "FeatureSelection", "LipschitzBound", "Nuclear", "Penalty",
    "RowNorms", "get_penalty",
    "SolveInfo", "solve_certified", "Bounds", "TrainingProblem",
    "cascade", "concat", "feedback", "parallel",
    "ClosedFormState", "ErrorBound", "LowRankApproximation", "LowRankModel", "Reduction",
    "ReductionErrorBound", "RemovedState", "low_rank", "perturbation_bound", "predict_speedup",
    "reduce", "selected_features",
    "EquilibriumInfo",
    "CheckpointError", "ConvergenceWarning", "DataNotFoundError", "EquilibriumError", "FenchelIDLError",
    "InputTypeError", "ModelFileError", "NotConvexError", "NotWellPosedError",
    "NumericalWarning", "ShapeError", "SolverError", "SolverWarning", "TrainingInterrupted",
    "ValidationError",
    "ImplicitClassifier", "ImplicitRegressor",
    "from_layers", "from_mlp",
    "ImplicitModel",
    "WellPosedness", "check_well_posed", "induced_norm", "is_well_posed", "norm_matrix",
    "pf_eigenvalue", "rescale", "well_posedness",
]
