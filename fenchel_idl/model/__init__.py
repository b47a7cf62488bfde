"""The implicit model and its theory (sections 2-3): the model value, activations,
equilibria, well-posedness, composition and the conversion of feedforward networks.
"""

from fenchel_idl.model.activations import (
    Activation,
    Blockwise,
    CvxTerm,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    get_activation,
    state_lipschitz,
)
from fenchel_idl.model.composition import cascade, concat, feedback, parallel
from fenchel_idl.model.equilibrium import EquilibriumInfo, picard, solve_equilibrium
from fenchel_idl.model.feedforward import from_layers, from_mlp
from fenchel_idl.model.implicit_model import FORMAT_NAME, FORMAT_VERSION, ImplicitModel
from fenchel_idl.model.lipschitz import lipschitz_penalty_value
from fenchel_idl.model.wellposedness import (
    WellPosedness,
    check_well_posed,
    induced_norm,
    is_well_posed,
    norm_matrix,
    pf_eigenvalue,
    rescale,
    well_posedness,
)

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "Activation", "Blockwise", "CvxTerm", "EquilibriumInfo",
    "Identity", "ImplicitModel", "LeakyReLU", "ReLU", "Sigmoid", "Softmax", "Tanh",
    "WellPosedness", "cascade", "check_well_posed", "concat", "feedback", "from_layers",
    "from_mlp", "get_activation", "state_lipschitz",
    "induced_norm", "is_well_posed", "lipschitz_penalty_value",
    "norm_matrix", "parallel", "pf_eigenvalue", "picard", "rescale", "solve_equilibrium",
    "well_posedness",
]
