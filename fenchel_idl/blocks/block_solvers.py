"""One interface for the block solves of BCD: ``solver.solve(state) -> (state, SolveInfo)``.

A :class:`BlockSolver` takes the current :class:`State` of the relaxed problem's variables
and returns a new state in which its block is replaced by the block's minimizer, with the
:class:`fenchel_idl.blocks.solvers.SolveInfo` that certifies it. The implementations:

- :class:`CvxpyX`, :class:`CvxpyAB`: the compiled CVXPY blocks of
  :class:`fenchel_idl.blocks.cvxpy_blocks.Blocks` (or of its parallel subclass
  :class:`fenchel_idl.blocks.parallel.ParallelBlocks`), by batches of columns or rows;
- :class:`FirstOrderX`, :class:`FirstOrderAB`: the batched certified first-order solvers of
  :mod:`fenchel_idl.blocks.first_order` (ReLU, no penalty on A or B);
- :class:`LipschitzAB`, :class:`LipschitzCD`: the (A, B) and the squared-loss (C, D) block
  with the Lipschitz penalty (4.7) by FISTA with its exact prox
  (:mod:`fenchel_idl.blocks.lipschitz`);
- :class:`Fallback`: a first-order solver whose uncertified result is replaced by the CVXPY
  block;
- :class:`Readout`: the (C, D) block, by the one readout rule (the Gram form for the squared
  loss, :func:`fenchel_idl.blocks.first_order.ce_readout` for the cross-entropy).

Every solve goes through one :class:`SolvePolicy`: the solver chain, the failure policy
(``on_failure``), the gap tolerance, and the list of uncertified attempts that the
certificate reports.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.first_order import (
    AB_PROX,
    ab_penalties,
    ab_prox_weight,
    ce_readout,
    fast_ab_apply,
    fast_ab_block,
    fast_ab_penalized,
    fast_readout_apply,
    fast_x_apply,
    pack_cd,
)
from fenchel_idl.blocks.lipschitz import (
    fast_ab_lipschitz,
    fast_cd_lipschitz,
    lipschitz_ab_apply,
    lipschitz_cd_apply,
)
from fenchel_idl.blocks.parallel import ParallelBlocks, SolveOptions, make_executor
from fenchel_idl.blocks.routing import columns_apply, columns_readout_apply
from fenchel_idl.blocks.solvers import ON_FAILURE, SolveInfo, solve_certified
from fenchel_idl.blocks.x_step import fast_x_block
from fenchel_idl.errors import SolverError, SolverWarning, ValidationError
from fenchel_idl.model.activations import state_lipschitz
from fenchel_idl.problem.losses import CrossEntropyLoss
from fenchel_idl.problem.penalties import penalty_reads
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import check_choice

__all__ = [
    "BlockSolver",
    "BlockSolvers",
    "CvxpyAB",
    "CvxpyX",
    "Fallback",
    "FirstOrderAB",
    "FirstOrderX",
    "LipschitzAB",
    "LipschitzCD",
    "Readout",
    "SolvePolicy",
    "State",
    "make_block_solvers",
]

Array = NDArray[np.float64]


@dataclass
class State:
    """The variables of the relaxed problem, in the problem's (standardized) units: the
    model (A, B, b, C, D, d), the states X of shape (n, m) and the weights lam of shape
    (n,)."""

    A: Array
    B: Array
    b: Array
    C: Array
    D: Array
    d: Array
    X: Array
    lam: Array

    def arrays(self) -> dict[str, Array]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy(self) -> State:
        return State(**{k: np.array(v, copy=True) for k, v in self.arrays().items()})

    def W(self, bias: bool) -> Array:
        """[A, B, b] (without b when the problem has no bias)."""
        return np.hstack([self.A, self.B] + ([self.b[:, None]] if bias else []))

    def with_W(self, W: Array, problem: TrainingProblem) -> State:
        """A copy with (A, B, b) taken from W = [A, B, b]."""
        n, p = problem.n, problem.p
        b = W[:, n + p] if problem.bias else np.zeros(n)
        return replace(self, A=W[:, :n], B=W[:, n:n + p], b=b)


class SolvePolicy:
    """How every block is solved and what counts as a failure.

    Parameters
    ----------
    cone : str
        The cone class of the CVXPY blocks (selects the solver chain).
    solver : str, optional
        Force one solver (no chain).
    on_failure : {"fallback", "warn", "raise"}
        As in :func:`fenchel_idl.blocks.solvers.solve_certified`; with "raise" an
        uncertified first-order solve raises too.
    gap_tol : float
        Tolerance of the certificates.

    Attributes
    ----------
    events : list of dict
        Every solve attempt that was not certified, as ``SolveInfo.to_dict()``.
    """

    def __init__(self, cone: str, solver: str | None = None, on_failure: str = "fallback",
                 gap_tol: float = 1e-6):
        self.cone = cone
        self.solvers = (solver,) if solver else None
        self.on_failure = check_choice("on_failure", on_failure, ON_FAILURE)
        self.gap_tol = gap_tol
        self.events: list[dict] = []

    @property
    def options(self) -> SolveOptions:
        return SolveOptions(self.cone, self.solvers, self.on_failure, self.gap_tol)

    def cvxpy(self, prob, name: str) -> SolveInfo:
        """Solve a compiled block; returns the record of the solution it holds.

        No solver warm start: a solve then depends on its data only, so a run resumed from
        a checkpoint (which holds no solver state) equals an uninterrupted one.
        """
        infos = solve_certified(prob, name, self.cone, self.solvers, self.on_failure,
                                self.gap_tol, warm_start=False)
        self.events.extend(inf.to_dict() for inf in infos if not inf.certified)
        return infos[-1]

    def uncertified(self, info: SolveInfo) -> None:
        """Record a first-order solve that missed its certificate; raise under "raise"."""
        self.events.append(info.to_dict())
        if self.on_failure == "raise":
            raise SolverError(f"block {info.block!r} was not certified by {info.solver} "
                              f"({info.note}).", status=info.status, attempts=[info])


class BlockSolver(ABC):
    """Solves one block: ``solve(state)`` returns the state with that block replaced by its
    minimizer, and the SolveInfo that certifies it."""

    block: str

    @abstractmethod
    def solve(self, s: State) -> tuple[State, SolveInfo]: ...


def _ab_prox(problem: TrainingProblem, s: State, prox: float) -> float:
    """The proximal weight of the CVXPY (A, B) step at s (:func:`ab_prox_weight`); the
    first-order steps derive it from the V they build (their ``prox`` argument)."""
    V = np.vstack([s.X, problem.U] + ([np.ones((1, problem.m))] if problem.bias else []))
    return ab_prox_weight(float(np.linalg.norm(V, 2)) ** 2 / problem.m, prox)


class CvxpyX(BlockSolver):
    """The DCA X step on the compiled CVXPY blocks.

    With ``cols`` the step is restricted to those columns (samples), with the full 1/m
    scaling: the state's X then holds only those columns, and so does the result's.
    """

    block = "X"

    def __init__(self, blocks: Blocks, policy: SolvePolicy):
        self.blocks, self.policy = blocks, policy

    def solve(self, s: State, cols=None) -> tuple[State, SolveInfo]:
        X, info = self.blocks.solve_x(s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam,
                                      self.policy.cvxpy, cols)
        if self.blocks.problem.activation.name == "relu":
            X = np.maximum(X, 0.0)
        return replace(s, X=X), info


class FirstOrderX(BlockSolver):
    """The DCA X step for ReLU by batched FISTA with its certificate (``cols`` as in
    :class:`CvxpyX`)."""

    block = "X"

    def __init__(self, problem: TrainingProblem, policy: SolvePolicy):
        self.problem, self.policy = problem, policy

    def solve(self, s: State, cols=None) -> tuple[State, SolveInfo]:
        pb = self.problem if cols is None else _Columns(self.problem, cols)
        X, info = fast_x_block(pb, s.A, s.B, s.b, s.C, s.D, s.d, s.X, s.lam,
                               tol=self.policy.gap_tol)
        return replace(s, X=X), info


class _Columns:
    """The attributes of a TrainingProblem that the first-order X step reads, restricted to
    the columns ``cols``; ``m`` stays the full m (the X_S objective is the restriction of
    the full objective, not a rescaling)."""

    def __init__(self, problem: TrainingProblem, cols):
        self.U, self.Y = problem.U[:, cols], problem.Y[:, cols]
        self.m, self.n, self.loss = problem.m, problem.n, problem.loss


class CvxpyAB(BlockSolver):
    """The proximal (A, B) step on the compiled CVXPY blocks."""

    block = "AB"

    def __init__(self, blocks: Blocks, policy: SolvePolicy, prox: float = AB_PROX):
        self.blocks, self.policy, self.prox = blocks, policy, prox

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        pb = self.blocks.problem
        A, B, b, info = self.blocks.solve_ab(s.X, s.lam, s.C, s.D, self.policy.cvxpy,
                                             s.W(pb.bias), _ab_prox(pb, s, self.prox))
        return replace(s, A=A, B=B, b=b), info


class FirstOrderAB(BlockSolver):
    """The proximal (A, B) step for ReLU by batched FISTA with its certificate; with a
    penalty on A or B (one with a proximal operator, :func:`fast_ab_apply`) by FISTA with
    the proximal map of the penalty and the balls (:func:`fast_ab_penalized`)."""

    block = "AB"

    def __init__(self, problem: TrainingProblem, policy: SolvePolicy, prox: float = AB_PROX):
        self.problem, self.policy, self.prox = problem, policy, prox
        self.gammas = state_lipschitz(problem.activation, problem.n)
        pens = ab_penalties(problem)
        self.penalty = pens[0] if pens else None

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        pb = self.problem
        if self.penalty is None:
            A, B, b, info = fast_ab_block(pb, s.X, self.gammas, s.W(pb.bias),
                                          tol=self.policy.gap_tol, lam=s.lam, prox=self.prox)
        else:
            A, B, b, info = fast_ab_penalized(pb, s.X, s.lam, self.gammas, self.penalty,
                                              {"C": s.C, "D": s.D}, s.W(pb.bias),
                                              tol=self.policy.gap_tol, prox=self.prox)
        return replace(s, A=A, B=B, b=b), info


class LipschitzAB(BlockSolver):
    """The proximal (A, B) step for ReLU with the Lipschitz penalty (4.7) by FISTA with the
    exact prox of the penalty and the balls
    (:func:`fenchel_idl.blocks.lipschitz.fast_ab_lipschitz`)."""

    block = "AB"

    def __init__(self, problem: TrainingProblem, policy: SolvePolicy, prox: float = AB_PROX):
        self.problem, self.policy, self.prox = problem, policy, prox
        self.gammas = state_lipschitz(problem.activation, problem.n)
        self.penalty = ab_penalties(problem)[0]

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        pb = self.problem
        A, B, b, info = fast_ab_lipschitz(pb, s.X, s.lam, self.gammas, self.penalty,
                                          {"C": s.C, "D": s.D}, s.W(pb.bias),
                                          tol=self.policy.gap_tol, prox=self.prox)
        return replace(s, A=A, B=B, b=b), info


class LipschitzCD(BlockSolver):
    """The squared-loss (C, D) block with the Lipschitz penalty (4.7) by FISTA with the exact
    prox of the penalty and the balls, certified by a duality gap
    (:func:`fenchel_idl.blocks.lipschitz.fast_cd_lipschitz`)."""

    block = "CD"

    def __init__(self, problem: TrainingProblem, policy: SolvePolicy):
        self.problem, self.policy = problem, policy
        self.penalty = next(pn for pn in problem.penalties if pn.name == "lipschitz")

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        pb = self.problem
        C, D, d, info = fast_cd_lipschitz(pb, s.X, s.A, s.B, self.penalty,
                                          pack_cd(pb, s.C, s.D, s.d), tol=self.policy.gap_tol)
        return replace(s, C=C, D=D, d=d), info


class Fallback(BlockSolver):
    """``primary``, and ``backup`` in its place when the primary is not certified (the
    policy records the miss, or raises).

    Under ``on_failure="warn"`` a backup that finds no solution at all (every solver of its
    chain failed, for instance out of memory on a large CVXPY block) leaves the primary's
    uncertified point in place, with a SolverWarning: the run goes on and its certificate
    lists the block as not certified, as that setting promises.
    """

    def __init__(self, primary: BlockSolver, backup: BlockSolver, policy: SolvePolicy):
        self.primary, self.backup, self.policy = primary, backup, policy
        self.block = primary.block

    def solve(self, s: State, **kw) -> tuple[State, SolveInfo]:
        new, info = self.primary.solve(s, **kw)
        if info.certified:
            return new, info
        self.policy.uncertified(info)
        try:
            return self.backup.solve(s, **kw)
        except SolverError as err:
            if self.policy.on_failure != "warn":
                raise
            warnings.warn(f"block {info.block!r}: the {info.solver} point is kept uncertified "
                          f"({info.note}); its backup failed: {err}", SolverWarning, stacklevel=2)
            return new, info


class Readout(BlockSolver):
    """The (C, D) block at the states of s: for the squared loss on the Gram matrix of
    (X, U, 1); for the cross-entropy by :func:`fenchel_idl.blocks.first_order.ce_readout`
    (first-order when ``first_order`` and the program is large, else the CVXPY block)."""

    block = "CD"

    def __init__(self, blocks: Blocks, policy: SolvePolicy, first_order: bool,
                 max_iter: int | None = None):
        self.blocks, self.policy = blocks, policy
        self.first_order, self.max_iter = first_order, max_iter

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        pb, blocks, policy = self.blocks.problem, self.blocks, self.policy
        if isinstance(pb.loss, CrossEntropyLoss):
            # no readout yet (all zero, as at a random-feature start): ce_readout picks
            # its own start
            fresh = not (s.C.any() or s.D.any() or s.d.any())
            C, D, d, info = ce_readout(
                pb, s.X, None if fresh else pack_cd(pb, s.C, s.D, s.d),
                lambda: blocks.solve_cd(s.X, s.A, s.B, policy.cvxpy), policy.uncertified,
                policy.gap_tol, self.max_iter, first_order=self.first_order)
        else:
            C, D, d, info = blocks.solve_cd(s.X, s.A, s.B, policy.cvxpy)
        return replace(s, C=C, D=D, d=d), info


@dataclass
class BlockSolvers:
    """The solvers of one run's three blocks, and the compiled blocks they share."""

    X: BlockSolver
    AB: BlockSolver
    CD: BlockSolver
    blocks: Blocks

    def __getitem__(self, block: str) -> BlockSolver:
        return getattr(self, block)

    def close(self) -> None:
        """Release a parallel executor's workers (nothing for the serial blocks)."""
        if isinstance(self.blocks, ParallelBlocks):
            self.blocks.close()


#: Past this size of the (C, D) program with the Lipschitz penalty (q m (n + p + 1)
#: nonzeros, the CVXPY block on all samples) its first-order solver (:class:`LipschitzCD`,
#: whose iterations cost q k^2 on the Gram matrix, whatever m) replaces the CVXPY block.
#: Below it Clarabel is as fast or faster: the diabetes readout (13,700) took 1.1x the
#: CVXPY time within BCD, while a synthetic readout of 62,000 took a quarter of it and one
#: of 310,000 a twentieth.
_LIPSCHITZ_CD_MIN_SIZE = 30_000


def make_block_solvers(problem: TrainingProblem, policy: SolvePolicy, block_solver: str = "auto",
                       executor=None, readout_iter: int | None = None,
                       ab_prox: float = AB_PROX) -> BlockSolvers:
    """The solvers of the X, (A, B) and (C, D) blocks; ``ab_prox`` is the weight of the
    (A, B) step's proximal term (:func:`fenchel_idl.blocks.first_order.ab_prox_weight`).

    ``block_solver`` "cvxpy" uses the compiled CVXPY blocks only; "fista" the first-order
    X and (A, B) solvers (it raises when they do not apply); "auto" uses them where they
    apply (ReLU, at most one penalty on A or B with a proximal operator, the Lipschitz
    penalty (4.7) included, no forced solver), with the CVXPY block as fallback.
    With an ``executor`` (any value :func:`fenchel_idl.blocks.parallel.make_executor`
    takes) the CVXPY batches run on it; an executor made here is closed by
    :meth:`BlockSolvers.close`. The cross-entropy readout is first-order unless ``block_solver`` is
    "cvxpy", a solver is forced or a penalty reads C or D.

    Only the blocks that read a penalty without a proximal operator (or several on A and B)
    take the generic CVXPY path, and :func:`_say_generic_path` says so once per run. With
    the Lipschitz penalty (4.7) the squared-loss (C, D) block is first-order past
    ``_LIPSCHITZ_CD_MIN_SIZE`` (:class:`LipschitzCD`); with the feature-selection penalty
    and the squared loss :func:`fenchel_idl.blocks.columns.with_column_block` makes it
    first-order.
    """
    check_choice("block_solver", block_solver, ("auto", "cvxpy", "fista"))
    allowed = block_solver != "cvxpy" and policy.solvers is None
    fast_x = allowed and fast_x_apply(problem)
    fast = fast_x and fast_ab_apply(problem)
    lipschitz = fast_x and not fast and lipschitz_ab_apply(problem)
    if block_solver == "fista" and not (fast or lipschitz):
        raise ValidationError("'block_solver'='fista' needs the ReLU activation and at most one "
                              "penalty on A or B, with a proximal operator (l1, row or column "
                              "norms, feature_selection, nuclear, lipschitz); use 'auto' or "
                              "'cvxpy'.")
    fast_cd = allowed and lipschitz_cd_apply(problem) and (
        problem.q * problem.m * (problem.n + problem.p + 1) > _LIPSCHITZ_CD_MIN_SIZE)
    if allowed:
        # the feature-selection readout is first-order too (with_column_block of
        # fenchel_idl.blocks.columns puts it in place)
        columns_cd = columns_apply(problem) and columns_readout_apply(problem)
        _say_generic_path(problem, fast_x, fast or lipschitz, fast_cd or columns_cd)
    pool = make_executor(executor)
    if pool is None:
        blocks = Blocks(problem, gap_tol=policy.gap_tol, least_squares=policy.solvers is None)
    else:
        blocks = ParallelBlocks(problem, pool, policy.options, policy.events,
                                owns_executor=pool is not executor)
    x: BlockSolver = CvxpyX(blocks, policy)
    ab: BlockSolver = CvxpyAB(blocks, policy, ab_prox)
    if fast_x:
        x = Fallback(FirstOrderX(problem, policy), x, policy)
    if fast:
        ab = Fallback(FirstOrderAB(problem, policy, ab_prox), ab, policy)
    elif lipschitz:
        ab = Fallback(LipschitzAB(problem, policy, ab_prox), ab, policy)
    fast_ce = block_solver != "cvxpy" and policy.solvers is None and fast_readout_apply(problem)
    cd: BlockSolver = Readout(blocks, policy, fast_ce, readout_iter)
    if fast_cd:
        cd = Fallback(LipschitzCD(problem, policy), cd, policy)
    return BlockSolvers(x, ab, cd, blocks)


def _say_generic_path(problem: TrainingProblem, fast_x: bool, fast_ab: bool,
                      fast_cd: bool = False) -> None:
    """One SolverWarning per run naming each block that takes the generic CVXPY path because
    of a penalty, and the penalties that send it there (none for a block whose first-order
    solver covers its penalties: ``fast_ab``, ``fast_cd``)."""
    if problem.activation.name != "relu" or not problem.penalties:
        return
    shapes = {"A": (problem.n, problem.n), "B": (problem.n, problem.p),
              "C": (problem.q, problem.n), "D": (problem.q, problem.p)}
    reads = [(pn, set(penalty_reads(pn, shapes))) for pn in problem.penalties]
    parts = []
    if fast_x and not fast_ab:
        names = [_pen_name(pn) for pn, r in reads if r & {"A", "B"}]
        parts.append(f"the (A, B) block for {', '.join(names)}")
    names = [] if fast_cd else [_pen_name(pn) for pn, r in reads if r & {"C", "D"}]
    if names:
        parts.append(f"the (C, D) block for {', '.join(names)}")
    if parts:
        warnings.warn("generic CVXPY path (slower than the first-order blocks): "
                      + "; ".join(parts) + ". The other blocks stay on the fast path.",
                      SolverWarning, stacklevel=3)


def _pen_name(pen) -> str:
    label = getattr(pen, "label", None)
    return repr(pen.name) if label is None else f"{pen.name} {label!r}"
