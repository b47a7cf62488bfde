"""Analysis of trained models: robustness bounds (section 4), attacks (section 7.3),
sparsity and compression (section 5), and plots.
"""

from fenchel_idl.analysis.robustness import (StateBounds, LPBound, state_bounds, lipschitz_bound,
                                             lipschitz_penalty_value, sensitivity_matrix,
                                             output_bound, lp_bound, LP_SOLVERS)
from fenchel_idl.analysis.attacks import (AttackResult, AttackTable, sensitivity_attack,
                                          sensitivity_scores, gradient_attack, lp_attack,
                                          attack_success_rate, attack_table, save_attack_figure,
                                          TABLE1_FRACTIONS)
from fenchel_idl.analysis.compression import (ClosedFormState, ErrorBound, LowRankApproximation,
                                              LowRankModel, Reduction, ReductionErrorBound,
                                              RemovedState, low_rank, perturbation_bound,
                                              predict_speedup, reduce, selected_features)
from fenchel_idl.analysis.plots import plot_convergence, plot_fit, pyplot

__all__ = [
    "StateBounds", "LPBound", "state_bounds", "lipschitz_bound", "lipschitz_penalty_value",
    "sensitivity_matrix", "output_bound", "lp_bound", "LP_SOLVERS", "AttackResult", "AttackTable",
    "sensitivity_attack", "sensitivity_scores", "gradient_attack", "lp_attack",
    "attack_success_rate", "attack_table", "save_attack_figure", "TABLE1_FRACTIONS",
    "ClosedFormState", "ErrorBound", "LowRankApproximation", "LowRankModel", "Reduction",
    "ReductionErrorBound", "RemovedState", "low_rank", "perturbation_bound", "predict_speedup",
    "reduce", "selected_features", "plot_convergence", "plot_fit", "pyplot",
]
