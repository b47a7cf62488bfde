"""The exceptions and warnings of fenchel_idl.

Every error the package raises on purpose derives from :class:`FenchelIDLError`, and
also from the built-in class that fits (``ValueError`` for bad values, ``TypeError``
for bad types, ``RuntimeError`` for failures at run time), so that ``except
ValueError`` keeps working for users who do not know this module.

Messages name the parameter, say what was expected, and say what was given.
"""

from __future__ import annotations

__all__ = [
    "FenchelIDLError",
    "ValidationError",
    "ShapeError",
    "InputTypeError",
    "NotWellPosedError",
    "NotConvexError",
    "SolverError",
    "EquilibriumError",
    "ModelFileError",
    "ResourceError",
    "CheckpointError",
    "OutputError",
    "DataNotFoundError",
    "TrainingInterrupted",
    "ConvergenceWarning",
    "NumericalWarning",
    "NotWellPosedWarning",
    "SolverWarning",
]


class FenchelIDLError(Exception):
    """Base class of every error raised on purpose by fenchel_idl."""


class ValidationError(FenchelIDLError, ValueError):
    """A parameter has a value outside its allowed range or set."""


class ShapeError(ValidationError):
    """Arrays have shapes that do not fit together."""


class InputTypeError(FenchelIDLError, TypeError):
    """A parameter has the wrong type (for example a non-numeric array)."""


class NotWellPosedError(ValidationError):
    """A model is not certified well-posed where the operation needs it to be."""


class NotConvexError(ValidationError):
    """A penalty or constraint is not convex (not DCP) or not DPP-compliant."""


class SolverError(FenchelIDLError, RuntimeError):
    """A convex solve failed with every solver of its fallback chain.

    Attributes
    ----------
    status : str
        The last status reported by the solver(s).
    attempts : list
        The solve attempts, as :class:`fenchel_idl.SolveInfo` records.
    """

    def __init__(self, message: str, status: str = "solver_error", attempts=None):
        super().__init__(message)
        self.status = status
        self.attempts = list(attempts or [])


class EquilibriumError(FenchelIDLError, RuntimeError):
    """The equilibrium iteration did not converge (with ``on_nonconvergence="raise"``)."""


class ModelFileError(FenchelIDLError, ValueError):
    """A model file is corrupt, truncated, tampered with, or not a fenchel_idl model."""


class ResourceError(ValidationError, MemoryError):
    """Sizes that would need more memory than the limit (available memory, or the
    ``FENCHEL_IDL_MEMORY_LIMIT`` environment variable); refused before anything is allocated.

    It derives from ``ValueError`` (the sizes are bad values) and from ``MemoryError``.
    """


class CheckpointError(FenchelIDLError, ValueError):
    """A checkpoint is corrupt or belongs to another problem or data set."""


class OutputError(FenchelIDLError, OSError):
    """Results could not be written to an output directory (a full disk, a file removed or
    made read-only during the run); the message says what is left there."""


class DataNotFoundError(FenchelIDLError, FileNotFoundError):
    """A data file that a loader needs is not where it looked (the message lists the places)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a training run; the message says what is kept and how to resume.

    It derives from ``KeyboardInterrupt`` only, not from :class:`FenchelIDLError`, so that
    ``except Exception`` never swallows a Ctrl-C.

    Attributes
    ----------
    phase : str
        Where the run was: "start" (initial equilibrium and readout, before the first
        sweep), "bcd" (the sweeps), "readout" (the final optimal readout) or "refine" (the
        refinement stage, which keeps no checkpoint).
    sweeps : int or None
        Sweeps completed when the run stopped.
    checkpoint : pathlib.Path or None
        The checkpoint directory of the run (None: the run kept no checkpoint).
    checkpoint_sweep : int or None
        The sweep count stored in the checkpoint on disk (None: no checkpoint there yet).
    epoch : int or None
        The refinement epoch that was running (phase "refine").
    """

    def __init__(self, message: str, *, phase: str, sweeps=None, checkpoint=None,
                 checkpoint_sweep=None, epoch=None):
        super().__init__(message)
        self.phase = phase
        self.sweeps = sweeps
        self.checkpoint = checkpoint
        self.checkpoint_sweep = checkpoint_sweep
        self.epoch = epoch


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before reaching its tolerance."""


class NumericalWarning(UserWarning):
    """Data or parameters are in a numerically delicate range (badly scaled, kappa near 1)."""


class NotWellPosedWarning(UserWarning):
    """An equilibrium was found, but the model is not well-posed where it was solved: the
    equation x = phi(A x + B u) may have other solutions, so the result depends on the
    starting point X0."""


class SolverWarning(RuntimeWarning):
    """No solver certified a convex block and an uncertified solution was kept (the
    ``on_failure="warn"`` policy of :func:`fenchel_idl.blocks.solvers.solve_certified`)."""
