"""The implicit model and its theory (sections 2-3): the model value, activations,
equilibria, well-posedness, composition and the conversion of feedforward networks.
"""

from fenchel_idl.model.activations import (Activation, ReLU, LeakyReLU, Tanh, Sigmoid, Identity,
                                           Softmax, Blockwise, get_activation, CvxTerm)
from fenchel_idl.model.equilibrium import EquilibriumInfo, solve_equilibrium, picard
from fenchel_idl.model.implicit_model import ImplicitModel, FORMAT_NAME, FORMAT_VERSION
from fenchel_idl.model.wellposedness import (pf_eigenvalue, induced_norm, norm_matrix,
                                             is_well_posed, check_well_posed, well_posedness,
                                             WellPosedness, rescale)
from fenchel_idl.model.composition import cascade, parallel, concat, feedback
from fenchel_idl.model.lipschitz import lipschitz_penalty_value
from fenchel_idl.model.feedforward import from_layers, from_mlp

__all__ = [
    "Activation", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Identity", "Softmax", "Blockwise",
    "get_activation", "CvxTerm", "EquilibriumInfo", "solve_equilibrium", "picard", "ImplicitModel",
    "FORMAT_NAME", "FORMAT_VERSION", "pf_eigenvalue", "induced_norm", "norm_matrix",
    "is_well_posed", "check_well_posed", "well_posedness", "WellPosedness", "rescale", "cascade",
    "parallel", "concat", "feedback", "from_layers", "from_mlp", "lipschitz_penalty_value",
]
