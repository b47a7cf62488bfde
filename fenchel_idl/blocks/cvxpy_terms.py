"""CVXPY building blocks of the relaxed problem's convex blocks: the f and f* terms of the
Fenchel divergence, weighted sums, norm balls, the penalties, and the DCP/DPP check each
block passes when it is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cvxpy as cp

from fenchel_idl.errors import NotConvexError
from fenchel_idl.model.activations import Activation, Blockwise
from fenchel_idl.problem.training_problem import TrainingProblem

__all__ = ["check_compiled", "f_terms", "fstar_terms", "inf_ball", "penalty_terms", "weighted"]


def f_terms(phi: Activation, n: int, X: Any):
    """Sum over states of f(X_i) as (list of expressions per block, constraints)."""
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, cons, start = [], [], 0
    for size, act in parts:
        term = act.f_cvxpy(X[start:start + size])
        out.append((slice(start, start + size), term.expr))
        cons.extend(term.constraints)
        start += size
    return out, cons


def fstar_terms(phi: Activation, n: int, Z: Any):
    """f*(Z_i) of every block of states, as a list of (rows, expression)."""
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, start = [], 0
    for size, act in parts:
        out.append((slice(start, start + size), act.fstar_cvxpy(Z[start:start + size])))
        start += size
    return out


def weighted(terms, w: Any):
    """sum_i w_i * sum_j term_ij for a (n, 1) nonnegative parameter w."""
    return sum(cp.sum(cp.multiply(w[sl], expr)) for sl, expr in terms)


def inf_ball(M: Any, radius: float) -> list:
    """The rows of M in l1 balls of the given radius (an induced inf-norm bound)."""
    return [cp.sum(cp.abs(M), axis=1) <= radius]


def penalty_terms(problem: TrainingProblem, M: Mapping[str, Any],
                  reads: tuple[str, ...] = ("A", "B", "C", "D")):
    """The sum of the expressions of the problem's penalties that read any of the matrices
    ``reads`` (:meth:`TrainingProblem.penalties_reading`) at the matrices M, and their
    constraints. A block leaves out the penalties on the other blocks' matrices: they are
    constants there, and posing them would only make its program larger (a nuclear norm of
    a fixed A turns a readout into a semidefinite program)."""
    expr, cons = 0.0, []
    for pn in problem.penalties_reading(*reads):
        e, c = pn.expression(M)
        expr = expr + e
        cons += c
    return expr, cons


def check_compiled(name: str, prob: cp.Problem) -> None:
    """Raise NotConvexError unless the block is DCP and DPP (compiled once, re-solved)."""
    if not prob.is_dcp():
        raise NotConvexError(f"the {name} block is not DCP; a penalty or constraint is "
                             "not convex in the block's variables.")
    if not prob.is_dcp(dpp=True):
        raise NotConvexError(f"the {name} block is not DPP (it could not be compiled "
                             "once and re-solved); a penalty uses a fixed matrix "
                             "nonlinearly. Write it with the block's own variables.")
