"""The convex blocks of the relaxed problem (section 6.3) and how each is solved and
certified: one block-solver interface over the compiled CVXPY blocks, the certified
first-order solvers and the parallel executors, with one failure policy.
"""

from fenchel_idl._blas import blas_threads, env_blas_threads
from fenchel_idl.blocks.block_solvers import (BlockSolver, BlockSolvers, SolvePolicy, State,
                                              make_block_solvers)
from fenchel_idl.blocks.columns import (ColumnBlockSolvers, ColumnsBlock, ColumnsReadout,
                                        PolishedReadout, fast_bd_block, fast_cd_columns,
                                        with_column_block)
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import (CentredGram, ab_prox_weight,
                                            ce_readout_lower_bound, fast_ab_block,
                                            fast_blocks_apply, fast_ce_readout, fast_k_step,
                                            fast_readout_apply, fast_w_step, fista, unpack_cd)
from fenchel_idl.blocks.lipschitz import (fast_ab_lipschitz, fast_cd_lipschitz,
                                          lipschitz_ab_apply, lipschitz_ab_prox,
                                          lipschitz_ab_residual, lipschitz_cd_apply)
from fenchel_idl.blocks.parallel import (BlockExecutor, DaskExecutor, ParallelBlocks,
                                         ProcessExecutor, SolveOptions, make_executor)
from fenchel_idl.blocks.routing import column_penalty, columns_apply, columns_readout_apply
from fenchel_idl.blocks.solvers import (CHAINS, ON_FAILURE, SolveInfo, describe_solve,
                                        solve_certified)
from fenchel_idl.blocks.x_step import XStepObjective, fast_x_block

__all__ = [
    # the interface and its policy
    "BlockSolver", "BlockSolvers", "State", "SolvePolicy", "make_block_solvers",
    "SolveInfo", "solve_certified", "describe_solve", "CHAINS", "ON_FAILURE",
    # the compiled CVXPY blocks and the first-order solvers
    "Blocks", "ab_prox_weight", "ce_readout_lower_bound", "fast_ab_block", "fast_blocks_apply",
    "fast_ce_readout", "fast_k_step", "fast_readout_apply", "fista", "unpack_cd",
    "CentredGram", "fast_w_step",
    # the ReLU X step (projected Newton-CG) and its objective
    "XStepObjective", "fast_x_block",
    # the (A, B) and (C, D) blocks with the Lipschitz penalty (4.7)
    "fast_ab_lipschitz", "lipschitz_ab_apply", "lipschitz_ab_prox", "lipschitz_ab_residual",
    "fast_cd_lipschitz", "lipschitz_cd_apply",
    # the (B, D) column block and the readout of the feature-selection penalty
    "ColumnBlockSolvers", "ColumnsBlock", "ColumnsReadout", "PolishedReadout", "fast_bd_block",
    "fast_cd_columns", "with_column_block", "column_penalty", "columns_apply",
    "columns_readout_apply",
    # executors and BLAS threads
    "BlockExecutor", "DaskExecutor", "ParallelBlocks", "ProcessExecutor", "SolveOptions",
    "make_executor", "blas_threads", "env_blas_threads",
]
