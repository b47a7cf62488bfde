"""The convex blocks of the relaxed problem (section 6.3) and how each is solved and
certified: compiled CVXPY blocks, certified first-order solvers, parallel executors.
"""

from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import (
                                            ab_prox_weight,
                                            ce_readout_lower_bound,
                                            fast_ab_block,
                                            fast_blocks_apply,
                                            fast_ce_readout,
                                            fast_k_step,
                                            fast_readout_apply,
                                            fast_x_block,
)
from fenchel_idl.blocks.parallel import (
                                            BlockExecutor,
                                            DaskExecutor,
                                            ParallelBlocks,
                                            ProcessExecutor,
                                            SolveOptions,
                                            make_executor,
)
from fenchel_idl.blocks.solvers import CHAINS, ON_FAILURE, SolveInfo, solve_certified

__all__ = [
    "SolveInfo", "Blocks", "solve_certified", "CHAINS", "ON_FAILURE", "ab_prox_weight",
    "ce_readout_lower_bound", "fast_ab_block", "fast_blocks_apply", "fast_ce_readout",
    "fast_k_step", "fast_readout_apply", "fast_x_block", "BlockExecutor", "DaskExecutor",
    "ParallelBlocks", "ProcessExecutor", "SolveOptions", "make_executor",
]
