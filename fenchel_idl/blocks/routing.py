"""Which first-order block covers a problem's penalties: the predicates that route the
feature-selection penalty (5.1) to :mod:`fenchel_idl.blocks.columns`. They read only the
problem, so :mod:`fenchel_idl.blocks.block_solvers` (which the column solvers build on) can
ask them when it says which blocks take the generic CVXPY path."""

from __future__ import annotations

from fenchel_idl.problem.losses import SquaredLoss
from fenchel_idl.problem.penalties import FeatureSelection

__all__ = ["column_penalty", "columns_apply", "columns_readout_apply"]


def column_penalty(problem) -> FeatureSelection | None:
    """The feature-selection penalty of the problem when it is the only penalty reading B or
    D (the column block then covers the penalty part of those matrices), else None."""
    pens = problem.penalties_reading("B", "D")
    if len(pens) == 1 and isinstance(pens[0], FeatureSelection):
        return pens[0]
    return None


def columns_apply(problem) -> bool:
    """Whether :func:`fenchel_idl.blocks.columns.fast_bd_block` covers the (B, D) block:
    ReLU, and one feature-selection penalty as the only penalty reading B or D
    (:func:`column_penalty`)."""
    return problem.activation.name == "relu" and column_penalty(problem) is not None


def columns_readout_apply(problem) -> bool:
    """Whether :func:`fenchel_idl.blocks.columns.fast_cd_columns` covers the (C, D)
    readout: the squared loss, the feature-selection penalty as the only penalty reading B,
    C or D, and a ball on C (its support function keeps the dual bound finite)."""
    if not (isinstance(problem.loss, SquaredLoss) and problem.bounds.C is not None
            and column_penalty(problem) is not None):
        return False
    return not problem.penalties_reading("C")
