"""Training drivers: block-coordinate descent (full batch and mini-batch), its schedule,
checkpoints and certificate, gradient refinement, problem files and the scikit-learn
estimators.
"""

from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.drivers.checkpoint import HISTORY_DIR, checkpoint_sweep, load_checkpoint
from fenchel_idl.drivers.estimators import ImplicitClassifier, ImplicitRegressor
from fenchel_idl.drivers.finish import refine_stage
from fenchel_idl.drivers.gradients import Gradients, input_gradient, loss_gradients, solve_adjoint
from fenchel_idl.drivers.minibatch import solve_bcd_minibatch
from fenchel_idl.drivers.problem_file import (ProblemSpec, bcd_options, build_problem, load_data,
                                              load_problem, train_spec)
from fenchel_idl.drivers.records import (BatchRecord, BCDResult, BlockRecord, Certificate,
                                         global_gap_line)
from fenchel_idl.drivers.refine import (PARAMETERS, EpochRecord, RefineHistory, RefineOptions,
                                        RefineResult, init_random, refine)
from fenchel_idl.drivers.schedule import Schedule
from fenchel_idl.drivers.state import initial_state
from fenchel_idl.drivers.state_fit import (RowCertificate, StateFit, fit_states,
                                            fit_teacher, teacher_model)

__all__ = [
    # BCD and its records
    "solve_bcd", "solve_bcd_minibatch", "Schedule", "BCDResult", "BlockRecord", "BatchRecord",
    "Certificate", "initial_state", "checkpoint_sweep", "load_checkpoint", "HISTORY_DIR",
    "global_gap_line",
    # refinement and gradients
    "refine", "refine_stage", "RefineOptions", "RefineResult", "RefineHistory", "EpochRecord",
    "PARAMETERS", "init_random", "Gradients", "loss_gradients", "input_gradient",
    "solve_adjoint",
    # problem files and estimators
    "ProblemSpec", "load_problem", "load_data", "build_problem", "bcd_options", "train_spec",
    "ImplicitRegressor", "ImplicitClassifier",
    # state-driven fitting to a teacher network
    "fit_states", "fit_teacher", "StateFit", "RowCertificate", "teacher_model",
]
