"""Block-coordinate descent (BCD) on the Fenchel-relaxed training problem (section 6.3).

Each sweep solves the X block (a DCA majorization step) and the (A, B) block of
:class:`fenchel_idl.TrainingProblem`, then the (C, D) block, each by a certified
:class:`fenchel_idl.blocks.block_solvers.BlockSolver`. A block update that would increase
the relaxed objective (by more than the solvers' tolerance) is rejected, so the objective
never increases within a stage of fixed lam. How lam changes between stages, and the line
search along the (A, B) step, are in :mod:`fenchel_idl.drivers.schedule`. With the
feature-selection or row-norm penalty the line-search schedule ends every sweep with the
prune step of that module (:func:`~fenchel_idl.drivers.schedule.prune`): the groups whose
removal lowers the true objective are set to exactly zero, so BCD alone returns exact zero
columns of (B; D) and rows of (A, B).

Every run ends with the optimal readout of :mod:`fenchel_idl.drivers.finish`: X recomputed
as the true equilibrium of the final (A, B) and (C, D) re-solved on it, which is globally
optimal for the given (A, B).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fenchel_idl._blas import env_blas_threads
from fenchel_idl.blocks.block_solvers import BlockSolvers, SolvePolicy, State, make_block_solvers
from fenchel_idl.blocks.columns import with_column_block
from fenchel_idl.blocks.first_order import AB_PROX
from fenchel_idl.drivers.checkpoint import (
    checkpoint_lock,
    interrupted,
    load_checkpoint,
    new_log,
    run_settings,
    save_checkpoint,
)
from fenchel_idl.drivers.finish import DescentStats, check_run_options, finish
from fenchel_idl.drivers.progress import Progress
from fenchel_idl.drivers.records import BCDResult, BlockRecord, outcome
from fenchel_idl.drivers.schedule import Schedule, adapt_lam, line_search, prune, readout_weights
from fenchel_idl.drivers.state import equilibrium, initial_state, objective, train_metric
from fenchel_idl.errors import InputTypeError, ValidationError
from fenchel_idl.problem.penalties import penalty_constrains
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import check_int, check_real

__all__ = ["solve_bcd"]


@env_blas_threads
def solve_bcd(problem: TrainingProblem, *, max_sweeps: int = 40, tol: float = 1e-6,
              init: Any = None, schedule: Schedule | dict | None = None,
              callback: Callable[[BlockRecord], Any] | None = None, refine: Any = None,
              seed: int = 0, on_failure: str = "fallback", solver: str | None = None,
              gap_tol: float = 1e-6, checkpoint: str | os.PathLike | None = None,
              resume: bool = False, progress: bool = False,
              block_solver: str = "auto", executor: Any = None,
              ab_prox: float = AB_PROX) -> BCDResult:
    """Train an implicit model by block-coordinate descent on the relaxed problem.

    Parameters
    ----------
    problem : TrainingProblem
    max_sweeps : int
        Cap on the total number of sweeps over all stages.
    tol : float
        Monotonicity tolerance: a block update that raises the relaxed objective by more
        than ``tol * max(1, |objective|)`` is rejected (solver noise).
    init : None, "random" or ImplicitModel
        Start: random B and A = 0 (a random-feature model), or a given model.
    schedule : Schedule or dict, optional
        The lam continuation (see :class:`Schedule`).
    callback : callable, optional
        Called with every :class:`BlockRecord`.
    refine : None, bool, dict or RefineOptions
        Optional final gradient refinement (:func:`fenchel_idl.drivers.refine.refine`).
    seed : int
        Seed of the random start.
    on_failure : {"fallback", "warn", "raise"}
        Solver-failure policy (:func:`fenchel_idl.blocks.solvers.solve_certified`).
    solver : str, optional
        Force one solver (no fallback chain) for every block.
    gap_tol : float
        Tolerance of the block certificates.
    checkpoint : path, optional
        Directory where a checkpoint is written atomically after every sweep. The run holds
        an exclusive lock on it (one run at a time; the lock ends with the process).
    resume : bool
        Resume from the checkpoint in ``checkpoint`` if there is one. It must have been
        written for the same problem and with the same settings (all but ``max_sweeps``,
        ``refine``, ``callback``, ``progress`` and ``executor``).
    progress : bool
        Show a progress bar over the sweeps when stderr is a terminal; otherwise write one
        INFO line per sweep, and why the sweeps stopped, to the ``fenchel_idl.drivers``
        logger.
    block_solver : {"auto", "cvxpy", "fista"}
        How the X and (A, B) blocks are solved: "cvxpy" always uses the compiled CVXPY
        blocks; "fista" the batched certified solvers of :mod:`fenchel_idl.blocks.first_order`
        (ReLU, no penalty on A or B); "auto" uses them where they apply. An uncertified
        batched solve falls back to the CVXPY block, and the event is recorded. Unless it
        is "cvxpy", the cross-entropy (C, D) readout without penalties follows
        :func:`fenchel_idl.blocks.first_order.ce_readout`: Clarabel's up to 50,000 nonzeros of its
        exponential-cone program, past that FISTA with its dual certificate, falling back to
        Clarabel when FISTA is not certified and the program has at most 20,000 cones.
    executor : None, int, str, dask.distributed.Client or BlockExecutor
        Where the separable CVXPY block solves (the (A, B) row batches and the X column
        batches) run: ``None`` serially here; an int N or ``"processes:N"`` on N local
        processes; a Dask ``Client`` or a scheduler address ``"tcp://host:port"`` on a Dask
        cluster (``pip install fenchel_idl[dask]``). The results equal the serial ones.
        See :mod:`fenchel_idl.blocks.parallel`.
    ab_prox : float > 0
        Weight of the proximal term of the (A, B) step, relative to the curvature bound
        ||V||^2 / m of its smooth part (:func:`fenchel_idl.blocks.first_order.ab_prox_weight`):
        the default 1e-5 keeps the step near the block's own minimizer; a larger weight damps
        it in the directions of small curvature (``problems/digits.toml`` uses 1e-2).

    Returns
    -------
    BCDResult

    Raises
    ------
    SolverError
        A block could not be solved to certified optimality (policy "fallback"/"raise").
    CheckpointError
        A corrupt or edited checkpoint, one written for another problem or with other
        settings (the message names them), or a checkpoint directory in use by another run.
    TrainingInterrupted
        Ctrl-C (a ``KeyboardInterrupt``): its message and attributes say in which phase the
        run stopped and which checkpoint (sweep count and directory) is on disk to resume
        from. A checkpoint write that is interrupted leaves the previous checkpoint intact.
    """
    schedule = _check_arguments(problem, max_sweeps, tol, seed, gap_tol, callback, init,
                                refine, checkpoint, resume, schedule)
    check_real("ab_prox", ab_prox, 0.0, None, low_open=True)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    lock = checkpoint_lock(ckpt)  # one run at a time per checkpoint directory
    policy = SolvePolicy(problem.cone, solver, on_failure, gap_tol)
    solvers = with_column_block(problem, make_block_solvers(problem, policy, block_solver,
                                                            executor, ab_prox=ab_prox),
                                block_solver)
    t_start = time.perf_counter()
    try:
        run = _Descent(problem, solvers, schedule, tol, callback)
        run.settings = run_settings(tol=tol, schedule=schedule, seed=seed, solver=solver,
                                    on_failure=on_failure, gap_tol=gap_tol,
                                    block_solver=block_solver, init=init,
                                    # only when set: checkpoints written before the option
                                    # existed resume with the default
                                    **({} if ab_prox == AB_PROX else {"ab_prox": ab_prox}))
        start_model, log = run.start(init, seed, ckpt, resume)
        run.descend(max_sweeps, ckpt, log, progress)
        t_bcd = time.perf_counter() - t_start
        done = finish(problem, run.s, solvers.CD, run.stats(), tol=tol,
                      stage_tol=schedule.stage_tol, refine=refine, seed=seed,
                      progress=progress,
                      on_interrupt=lambda phase, exc: interrupted(phase, run.sweep, ckpt, exc))
    finally:
        solvers.close()
        lock.release()
    return BCDResult(model=done.model, history=run.history, certificate=done.certificate,
                     start_model=start_model, start_metric=train_metric(problem, start_model),
                     n_sweeps=run.sweep, lam=run.s.lam.copy(),
                     refine_history=done.refine_history, equilibrium_losses=run.eq_losses,
                     timings={**done.timings, "bcd": t_bcd,
                              "total": time.perf_counter() - t_start})


def _check_arguments(problem, max_sweeps, tol, seed, gap_tol, callback, init, refine,
                     checkpoint, resume, schedule) -> Schedule:
    """Validate solve_bcd's arguments; return the schedule as a Schedule."""
    if not isinstance(problem, TrainingProblem):
        raise InputTypeError(f"'problem' must be a TrainingProblem; got {type(problem).__name__}.")
    check_int("max_sweeps", max_sweeps, low=1)
    check_real("tol", tol, 0.0, None)
    check_int("seed", seed, low=0)
    check_real("gap_tol", gap_tol, 0.0, None, low_open=True)
    check_run_options(callback, init, refine)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise InputTypeError(f"'checkpoint' must be a directory path; got "
                             f"{type(checkpoint).__name__}.")
    if resume and checkpoint is None:
        raise ValidationError("'resume' needs a 'checkpoint' directory; got checkpoint=None.")
    if checkpoint is not None and Path(checkpoint).exists() and not Path(checkpoint).is_dir():
        raise ValidationError(f"'checkpoint' must be a directory; {str(checkpoint)!r} is a "
                              "file.")
    if schedule is None:
        return Schedule()
    if isinstance(schedule, dict):
        try:
            return Schedule(**schedule)
        except TypeError as exc:
            raise ValidationError(f"bad 'schedule' options: {exc}") from None
    if not isinstance(schedule, Schedule):
        raise InputTypeError(f"'schedule' must be a Schedule or a dict; got "
                             f"{type(schedule).__name__}.")
    return schedule


class _Descent:
    """The state of one BCD run between sweeps, and its named steps."""

    def __init__(self, problem: TrainingProblem, solvers: BlockSolvers, schedule: Schedule,
                 tol: float, callback: Callable | None):
        self.problem, self.solvers, self.schedule = problem, solvers, schedule
        self.tol, self.callback = tol, callback
        # steps beyond 1 are projected on the balls: not with user constraints on A or B
        # (a penalty's expression alone never stops it, so that every spelling of one
        # penalty, named or a callable, takes the same line search)
        shapes = {"A": (problem.n, problem.n), "B": (problem.n, problem.p),
                  "C": (problem.q, problem.n), "D": (problem.q, problem.p)}
        self.extrapolate = not any(penalty_constrains(pn, shapes)
                                   for pn in problem.penalties_reading("A", "B"))
        # the sweep's blocks; with a feature-selection penalty the joint (B, D) block last
        # (fenchel_idl.blocks.columns), whose exact zero columns the (A, B) step cannot make
        self.blocks = (("X", "AB") if schedule.line_search else ("X", "AB", "CD")) + (
            ("BD",) if getattr(solvers, "BD", None) is not None else ())
        # exact zero groups of the sparsity penalties, tried at each sweep's true
        # equilibrium (schedule.prune); needs the line-search schedule's restarts
        self.prunes = bool(schedule.line_search) and any(
            getattr(pn, "name", "") in ("feature_selection", "row_norms")
            for pn in problem.penalties)
        self.history: list[BlockRecord] = []
        self.eq_losses: list[tuple[int, float]] = []
        self.sweep = self.stage = self.stage_sweeps = self.rejected = 0
        self.max_increase = -np.inf
        self.last_improvement = np.inf
        self.settings: dict = {}  # run_settings(...), checked against a checkpoint
        self.stop_reason: str | None = None
        self.max_sweeps = 0
        self.s: State

    # -- start and checkpoints ------------------------------------------------------------
    def start(self, init: Any, seed: int, ckpt: Path | None, resume: bool):
        """The start state (the random-feature start with its readout, or ``init``), or the
        checkpoint's state when resuming; returns (start model, history-log metadata)."""
        pb, log = self.problem, new_log()
        try:
            loaded = (load_checkpoint(ckpt, pb, self.settings) if (ckpt is not None and resume)
                      else None)
            self.s = initial_state(pb, init, np.random.default_rng(seed))
            if init is None or isinstance(init, str):
                self.s, _ = self.solvers.CD.solve(self.s)
        except KeyboardInterrupt:
            raise interrupted("start", 0, ckpt) from None
        s = self.s
        start_model = pb.to_user_model(s.A, s.B, s.b, s.C, s.D, s.d)
        if loaded is not None:
            self.s, meta = loaded
            self.sweep, self.stage = meta["sweep"], meta["stage"]
            self.stage_sweeps = meta["stage_sweeps"]
            self.history = meta.pop("history")
            self.solvers.CD.policy.events.extend(meta.pop("events"))
            self.rejected, self.max_increase = meta["rejected"], float(meta["max_increase"])
            # a resumed run that had already stopped reports the same stop (older
            # checkpoints do not hold them: then "unknown")
            last = float(meta.get("last_improvement", 1e300))
            self.last_improvement = np.inf if last >= 1e300 else last
            self.stop_reason = meta.get("stop_reason")
            log = meta.get("log", log)  # a format-1 checkpoint: its history goes to a new log
        self.evaluate()
        return start_model, log

    def save(self, ckpt: Path, log: dict) -> dict:
        meta = {"sweep": self.sweep, "stage": self.stage, "stage_sweeps": self.stage_sweeps,
                "rejected": self.rejected,
                "max_increase": self.max_increase if np.isfinite(self.max_increase)
                else -1e300,
                "last_improvement": self.last_improvement if np.isfinite(self.last_improvement)
                else 1e300, "stop_reason": self.stop_reason}
        return save_checkpoint(ckpt, self.problem, self.s, meta, self.history,
                               self.solvers.CD.policy.events, log, self.settings)

    # -- the loop -------------------------------------------------------------------------
    def descend(self, max_sweeps: int, ckpt: Path | None, log: dict, progress: bool) -> None:
        """Sweep until ``max_sweeps`` or the schedule stops, checkpointing every sweep."""
        self.max_sweeps = max_sweeps
        shown = Progress(progress, "BCD")
        shown.open(max_sweeps, "sweep", initial=self.sweep)
        try:
            while self.sweep < max_sweeps and self.stage < self.schedule.stages:
                t_sweep = time.perf_counter()
                self.sweep_once()
                t = time.perf_counter() - t_sweep
                stop = self.stopping(max_sweeps)
                shown.update(f"obj {self.J:.4g}, loss {self.loss:.4g}, div {self.div:.3g}, "
                             f"{t:.1f} s" + ("" if stop is None else f"; stopping: {stop}"))
                shown.line(f"sweep {self.sweep}/{max_sweeps}: objective {self.J:.4g}, loss "
                           f"{self.loss:.4g}, {t:.1f} s")
                if ckpt is not None:
                    log = self.save(ckpt, log)
        except KeyboardInterrupt:
            raise interrupted("bcd", self.sweep, ckpt) from None
        finally:
            shown.close()
        shown.say(f"stopped after {self.sweep} sweeps: {self.stopping(max_sweeps)}")

    def stopping(self, max_sweeps: int) -> str | None:
        """Why the sweeps stop here (None while they go on). The schedule's stop signal is
        ``stage == schedule.stages``: set when the line search finds no improving step even
        at lam_max, when every state is at equilibrium, or after the last lam stage."""
        if self.stage >= self.schedule.stages:
            return self.stop_reason or f"the last of {self.schedule.stages} lam stages ended"
        if self.sweep >= max_sweeps:
            return f"max_sweeps={max_sweeps} reached"
        return None

    def sweep_once(self) -> None:
        """One sweep: the block steps, then the line search and the lam change, or the
        continuation at the end of a stage."""
        sch = self.schedule
        lam_base, start, step = self.s.lam, self.s, 0.0
        # "readout" weights first; a sweep whose line search finds no improving step is
        # retried from the same point with uniform weights before lam grows
        weightings = (True, False) if sch.line_search and sch.lam_weights == "readout" \
            else (False,)
        for weighted in weightings:
            self.s = start
            if len(weightings) > 1:
                if weighted:
                    self.s = start.copy()
                    self.s.lam = lam_base * readout_weights(self.s.C)
                self.evaluate()
            J_before, base = self.J, self.s
            for name in self.blocks:
                self.block_step(name)
            if sch.line_search:
                step = self.line_search_step(base, J_before)
                if step > 0.0:
                    break
        if sch.line_search:
            if self.prunes:
                self.prune_step()
            self.eq_losses.append((self.sweep + 1, float(self.loss)))
            # the weights are the sweep's; lam adapts unweighted
            self.s.lam, stationary = adapt_lam(lam_base.copy(), step, sch)
            if stationary:
                self.stage = sch.stages
                self.stop_reason = "stationary (no improving step, even at lam_max)"
        self.sweep += 1
        self.stage_sweeps += 1
        self.last_improvement = (J_before - self.J) / max(1.0, abs(J_before))
        stage_over = (self.last_improvement < sch.stage_tol
                      or self.stage_sweeps >= sch.sweeps_per_stage)
        if stage_over and not sch.line_search:
            self.end_stage()

    # -- the steps ------------------------------------------------------------------------
    def evaluate(self) -> None:
        self.loss, self.div, self.pen = objective(self.problem, self.s)
        self.J = self.loss + self.div + self.pen

    def record(self, rec: BlockRecord) -> None:
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)

    def block_step(self, name: str) -> None:
        """Solve one block; keep the result unless it raises the relaxed objective."""
        t0 = time.perf_counter()
        trial, info = self.solvers[name].solve(self.s)
        l2, d2, p2 = objective(self.problem, trial)
        J2 = l2 + d2 + p2
        increase = (J2 - self.J) / max(1.0, abs(self.J))
        accepted = increase <= self.tol
        if accepted:
            self.s = trial
            self.max_increase = max(self.max_increase, increase)
            self.loss, self.div, self.pen, self.J = l2, d2, p2, J2
        else:
            self.rejected += 1
        self.record(BlockRecord(self.sweep, self.stage, name, self.J, self.loss, self.div,
                                self.pen, time.perf_counter() - t0, float(self.s.lam.mean()),
                                **outcome(info, accepted)))

    def line_search_step(self, base: State, J_before: float) -> float:
        """The line search along the sweep's (A, B) step; the accepted point, at its
        equilibrium, starts a new stage. Returns the step (0 when none improved)."""
        t0 = time.perf_counter()
        self.s, step, n_eval, info = line_search(self.problem, base, self.s, J_before,
                                                 self.solvers.CD, self.schedule,
                                                 self.extrapolate)
        self.evaluate()
        self.stage += 1
        self.record(BlockRecord(self.sweep, self.stage, "LS", self.J, self.loss, self.div,
                                self.pen, time.perf_counter() - t0, float(self.s.lam.mean()),
                                step, n_eval, **outcome(info, step > 0)))
        return step

    def prune_step(self) -> None:
        """Zero the sparsity groups whose removal lowers the true objective
        (:func:`fenchel_idl.drivers.schedule.prune`); recorded as block "PR"."""
        t0 = time.perf_counter()
        self.s, _, k, n_eval, info = prune(self.problem, self.s, self.J, self.solvers.CD)
        if info is None:
            return
        self.evaluate()
        self.record(BlockRecord(self.sweep, self.stage, "PR", self.J, self.loss, self.div,
                                self.pen, time.perf_counter() - t0, float(self.s.lam.mean()),
                                float(k), n_eval, **outcome(info, True)))

    def end_stage(self) -> None:
        """Per-unit continuation: raise lam_i of the states still off equilibrium (or stop
        when none is), and restart from the true equilibrium when the schedule says so."""
        pb, s, sch = self.problem, self.s, self.schedule
        per_unit = pb.divergence(s.X, s.A @ s.X + s.B @ pb.U + s.b[:, None])
        high = per_unit > sch.div_tol
        if not np.any(high) and self.stage > 0:
            self.stage = sch.stages
            self.stop_reason = "every state at equilibrium"
        else:
            grow = high if sch.per_unit else np.ones_like(high)
            s.lam = np.where(grow, np.minimum(s.lam * sch.factor, sch.lam_max), s.lam)
            self.stage += 1
            self.stage_sweeps = 0
        if sch.restart:
            s.X, _ = equilibrium(pb, s, X0=s.X)
        self.evaluate()
        if sch.restart:
            self.eq_losses.append((self.sweep, float(self.loss)))

    def stats(self) -> DescentStats:
        stop = self.stopping(self.max_sweeps) or "not stopped"
        return DescentStats(used=[r for r in self.history if r.accepted],
                            events=self.solvers.CD.policy.events,
                            max_increase=self.max_increase, rejected=self.rejected,
                            last_improvement=self.last_improvement,
                            relaxed_objective=self.J, relaxed_loss=self.loss,
                            stop_reason=stop, hit_max=stop.startswith("max_sweeps"))
