"""Training drivers: block-coordinate descent (full batch and mini-batch), gradient
refinement, problem files and the scikit-learn estimators.
"""

from fenchel_idl.drivers.projection import (PROJECTION_METHODS, project_inf_ball, project_l1_rows,
                                            project_well_posed, well_posed_radii)
from fenchel_idl.drivers.gradients import Gradients, loss_gradients, input_gradient, solve_adjoint
from fenchel_idl.drivers.refine import (PARAMETERS, EpochRecord, RefineHistory, RefineOptions,
                                        RefineResult, init_random, refine)
from fenchel_idl.drivers.bcd import (Schedule, BlockRecord, Certificate, BCDResult, solve_bcd,
                                     initial_state, refine_stage, checkpoint_sweep, HISTORY_DIR)
from fenchel_idl.drivers.minibatch import BatchRecord, solve_bcd_minibatch
from fenchel_idl.drivers.problem_file import (ProblemSpec, bcd_options, build_problem, load_data,
                                              load_problem)
from fenchel_idl.drivers.estimators import ImplicitClassifier, ImplicitRegressor

__all__ = [
    "PROJECTION_METHODS", "project_inf_ball", "project_l1_rows", "project_well_posed",
    "well_posed_radii", "Gradients", "loss_gradients", "input_gradient", "solve_adjoint",
    "PARAMETERS", "EpochRecord", "RefineHistory", "RefineOptions", "RefineResult", "init_random",
    "refine", "Schedule", "BlockRecord", "Certificate", "BCDResult", "solve_bcd", "initial_state", "refine_stage", "checkpoint_sweep", "HISTORY_DIR", "BatchRecord",
    "solve_bcd_minibatch", "ProblemSpec", "bcd_options", "build_problem", "load_data", "load_problem", "ImplicitClassifier",
    "ImplicitRegressor",
]
