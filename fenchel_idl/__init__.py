"""fenchel_idl: implicit deep learning through convex optimization.

An implicit model (El Ghaoui et al., "Implicit Deep Learning", SIAM J. Math. Data Science,
2021) predicts

    y = C x + D u        where the state solves        x = phi(A x + B u).

Conventions, stated once: the paper's letters are kept (A, B, C, D, U, X, Y, phi), and
**samples are columns**: U has shape (p, m), X (n, m) and Y (q, m), where p is the number
of inputs, n of states, q of outputs and m of samples. The scikit-learn wrappers use rows
for samples, as scikit-learn does, and convert at their boundary only.

The package is layered; each layer imports only from the layers listed before it:

- :mod:`fenchel_idl.model`: the model, activations, equilibria, well-posedness (sections 2-3);
- :mod:`fenchel_idl.problem`: losses, penalties, the relaxed training problem, data sets;
- :mod:`fenchel_idl.blocks`: the convex blocks and their certified solvers (section 6.3);
- :mod:`fenchel_idl.drivers`: BCD, mini-batch BCD, refinement, problem files, estimators;
- :mod:`fenchel_idl.analysis`: robustness, attacks, compression, plots (sections 4, 5, 7.3);
- :mod:`fenchel_idl.apps`: the command line, experiments, demos and benchmarks, built on
  the names exported here and by the layers.

The names below are the common ones; each layer's ``__all__`` lists all of its public names.
"""

from fenchel_idl import errors
from fenchel_idl.analysis import (from_torch, global_bound, lipschitz_bound, low_rank, lp_bound,
                                  reduce, selected_features, sensitivity_matrix, to_torch)
from fenchel_idl.drivers import (BCDResult, Certificate, ImplicitClassifier, ImplicitRegressor,
                                 RefineOptions, Schedule, fit_states, load_problem, refine,
                                 solve_bcd, solve_bcd_minibatch)
from fenchel_idl.errors import FenchelIDLError
from fenchel_idl.model import (ImplicitModel, cascade, check_well_posed, concat, feedback,
                               from_layers, from_mlp, is_well_posed, parallel, pf_eigenvalue,
                               rescale, well_posedness)
from fenchel_idl.problem import (L1, Bounds, ColumnNorms, Custom, FeatureSelection,
                                 LipschitzBound, Nuclear, RowNorms, TrainingProblem, datasets)

__version__ = "0.1.0"

__all__ = [
    # the model (sections 2-3)
    "ImplicitModel", "well_posedness", "pf_eigenvalue", "is_well_posed", "check_well_posed",
    "rescale", "cascade", "parallel", "concat", "feedback", "from_mlp", "from_layers",
    # the training problem (section 6) and its data
    "TrainingProblem", "Bounds", "L1", "RowNorms", "ColumnNorms", "FeatureSelection",
    "Nuclear", "LipschitzBound", "Custom", "datasets",
    # training
    "solve_bcd", "solve_bcd_minibatch", "Schedule", "BCDResult", "Certificate", "refine",
    "RefineOptions", "load_problem", "ImplicitRegressor", "ImplicitClassifier", "fit_states",
    # analysis (sections 4-5)
    "sensitivity_matrix", "lipschitz_bound", "lp_bound", "reduce", "low_rank",
    "selected_features", "global_bound",
    # PyTorch interop (the torch extra)
    "to_torch", "from_torch",
    # errors
    "errors", "FenchelIDLError",
]
