"""Executors for the separable block solves of BCD: local processes or Dask distributed.

Two blocks of :class:`fenchel_idl.blocks.cvxpy_blocks.Blocks` split into independent convex problems
(section 6.3):

- the **(A, B) block** into batches of rows, because the well-posedness ball
  ||N(A, gamma)||_inf <= kappa is one l1 ball per row (when every penalty is
  row-separable);
- the **X block** into batches of columns (samples), because the loss and the Fenchel
  divergence are sums over samples.

:func:`make_executor` turns the ``executor=`` argument of
:func:`fenchel_idl.solve_bcd` into a :class:`BlockExecutor`, and :class:`ParallelBlocks`
sends those batches to it. Each worker rebuilds the block problems **once** from the
training problem, compiles each batch size on first use and keeps them in a cache keyed by
the problem fingerprint (one cache per worker thread, since a compiled CVXPY problem holds
its Parameter values); only the numeric Parameter values of a batch travel with a task.
The parent computes every Parameter value exactly as the serial blocks do, and the
batches are solved by the same solver chain and collected in the same order, so the
results equal the serial ones.

Accepted ``executor`` values:

- ``None``: serial, in this process (the default);
- an int ``N >= 1`` or the string ``"processes:N"``: N local worker processes (loky's
  reusable pool, see :class:`ProcessExecutor`);
- a ``dask.distributed.Client``, or a scheduler address such as ``"tcp://host:8786"``
  (needs ``pip install fenchel_idl[dask]``);
- a :class:`BlockExecutor` made by :func:`make_executor`, to reuse one pool across runs
  (it is then not closed by ``solve_bcd``).

The batched first-order solvers of :mod:`fenchel_idl.blocks.first_order` (ReLU without penalties
on A or B) stay in the parent process: they take a few matrix products per iteration, and
splitting them would change their iterates (the certificate is per block, not per batch).
With those problems an executor is used only by the CVXPY fallback.

The worker processes run BLAS on one thread, as BCD itself does (see
:func:`fenchel_idl._blas.blas_threads` for why).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tempfile
import threading
import warnings
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np
from joblib.externals.loky import get_reusable_executor
from numpy.typing import NDArray

from fenchel_idl._blas import blas_controller
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.solvers import SolveInfo, solve_certified
from fenchel_idl.errors import InputTypeError, SolverError, SolverWarning, ValidationError
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import describe

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BlockExecutor", "DaskExecutor", "ParallelBlocks", "ProcessExecutor", "SolveOptions",
           "make_executor"]

Array = NDArray[np.float64]

_DASK_HINT = "install the optional extra: pip install 'fenchel_idl[dask]'"


# ----------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SolveOptions:
    """How a worker solves a block: the arguments of
    :func:`fenchel_idl.blocks.solvers.solve_certified`."""

    cone: str
    solvers: tuple[str, ...] | None
    on_failure: str
    gap_tol: float


class BlockExecutor(ABC):
    """Runs batch tasks against a problem that every worker receives once.

    ``bind(key, payload)`` makes a pickled payload available to the workers and returns a
    handle; ``map(fn, handle, items)`` returns ``[fn(handle, item) for item in items]``
    in order, computed by the workers; ``close()`` releases what the executor owns.
    """

    kind: str = "executor"
    workers: int = 1

    @abstractmethod
    def bind(self, key: str, payload: bytes) -> Any:
        """Send ``payload`` (pickled bytes) to the workers once; return a handle."""

    @abstractmethod
    def map(self, fn: Callable[[Any, Any], Any], handle: Any, items: Sequence[Any]) -> list:
        """``[fn(handle, item) for item in items]``, in order, on the workers."""

    def unbind(self, handle: Any) -> None:
        """Release the payload of ``handle``."""

    def close(self) -> None:
        """Shut down what this executor started."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class _InProcessExecutor(BlockExecutor):
    """Runs the worker code path in this process (for tests and debugging)."""

    kind = "in-process"

    def bind(self, key: str, payload: bytes) -> Any:
        return (key, payload)

    def map(self, fn, handle, items):
        return [fn(handle, item) for item in items]


def _process_init() -> None:
    ctl = blas_controller()
    if ctl is not None:
        ctl.limit(limits=1, user_api="blas")


def _call(args):
    fn, handle, item = args
    return fn(handle, item)


class ProcessExecutor(BlockExecutor):
    """N local worker processes; the payload reaches each worker through a file, once.

    The workers are loky's reusable pool (loky ships with joblib, a dependency of
    scikit-learn): they do not re-run the user's main script (the stdlib ``spawn`` and
    ``forkserver`` methods do, and then need an ``if __name__ == "__main__"`` guard), they
    stay alive between runs (idle timeout 300 s), so a second run skips the start-up
    (importing CVXPY) and reuses the compiled block problems of the same problem, and they
    run BLAS on one thread.
    """

    kind = "processes"

    def __init__(self, workers: int):
        self.workers = int(workers)
        self._dir = tempfile.mkdtemp(prefix="fenchel_idl_")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)

    def _pool(self):
        return get_reusable_executor(max_workers=self.workers, timeout=300,
                                     initializer=_process_init)

    def bind(self, key: str, payload: bytes) -> Any:
        path = os.path.join(self._dir, f"{key}.pkl")
        if not os.path.exists(path):
            tmp = path + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, path)
        return (key, path)

    def map(self, fn, handle, items):
        return list(self._pool().map(_call, [(fn, handle, item) for item in items]))

    def unbind(self, handle: Any) -> None:
        with contextlib.suppress(OSError):
            os.unlink(handle[1])

    def close(self) -> None:
        """Remove the payload files (the reusable workers stay up until their idle
        timeout)."""
        self._finalizer()


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("a Dask executor needs dask.distributed, which is not installed; "
                          f"{_DASK_HINT}.") from exc
    return distributed


class DaskExecutor(BlockExecutor):
    """Batch tasks on a Dask distributed cluster; the payload is scattered to every worker
    once (``client.scatter(..., broadcast=True)``).

    Parameters
    ----------
    client : distributed.Client
    owns_client : bool
        Close the client in :meth:`close` (True when made from a scheduler address).
    """

    kind = "dask"

    def __init__(self, client: Any, owns_client: bool = False):
        self.client = client
        self.owns_client = owns_client
        info = client.scheduler_info()
        self.workers = max(1, sum(int(w.get("nthreads", 1))
                                  for w in info.get("workers", {}).values()))

    def bind(self, key: str, payload: bytes) -> Any:
        future = self.client.scatter(payload, broadcast=True, hash=False)
        return (key, future)

    def map(self, fn, handle, items):
        key, future = handle
        futures = [self.client.submit(fn, (key, future), item, pure=False) for item in items]
        return self.client.gather(futures)

    def unbind(self, handle: Any) -> None:
        with contextlib.suppress(Exception):
            handle[1].release()

    def close(self) -> None:
        if self.owns_client:
            self.client.close()


def make_executor(spec: Any) -> BlockExecutor | None:
    """Turn an ``executor=`` value into a :class:`BlockExecutor` (``None`` for serial).

    Parameters
    ----------
    spec : None, int, str, distributed.Client or BlockExecutor
        ``None`` (serial); an int N >= 1 or ``"processes:N"`` (N local processes); a
        ``dask.distributed.Client`` or a scheduler address ``"tcp://host:port"`` (also
        ``tls://``, ``ucx://``, ``inproc://``); or an executor made earlier.

    Returns
    -------
    BlockExecutor or None

    Raises
    ------
    ValidationError
        An int below 1, a string of another form, or a scheduler that cannot be reached.
    InputTypeError
        Any other type.
    ImportError
        A Dask client or address without dask.distributed installed (the message names the
        extra to install).

    Examples
    --------
    >>> make_executor(None) is None
    True
    >>> make_executor("threads:2")
    Traceback (most recent call last):
    ...
    fenchel_idl.errors.ValidationError: 'executor' must be None, an int >= 1, 'processes:N', a \
dask.distributed.Client or a scheduler address 'tcp://host:port'; got 'threads:2'.
    """
    expected = ("None, an int >= 1, 'processes:N', a dask.distributed.Client or a scheduler "
                "address 'tcp://host:port'")
    if spec is None or isinstance(spec, BlockExecutor):
        return spec
    if isinstance(spec, bool):
        raise InputTypeError(f"'executor' must be {expected}; got {describe(spec)}.")
    if isinstance(spec, (int, np.integer)):
        if spec < 1:
            raise ValidationError(f"'executor' must be {expected}; got {int(spec)} (the number "
                                  "of worker processes must be at least 1).")
        return ProcessExecutor(int(spec))
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("processes:"):
            count = text.split(":", 1)[1]
            if not count.isdigit() or int(count) < 1:
                raise ValidationError(f"'executor' must be {expected}; got {spec!r} (N must be "
                                      "an integer >= 1).")
            return ProcessExecutor(int(count))
        if "://" in text and text.split("://", 1)[0] in ("tcp", "tls", "ucx", "inproc", "ws",
                                                          "wss"):
            distributed = _import_distributed()
            try:
                client = distributed.Client(text, timeout=10)
            except (OSError, TimeoutError) as exc:
                raise ValidationError(f"'executor' must be a reachable Dask scheduler address; "
                                      f"could not connect to {text!r} "
                                      f"({type(exc).__name__}: {exc}).") from None
            return DaskExecutor(client, owns_client=True)
        raise ValidationError(f"'executor' must be {expected}; got {spec!r}.")
    if type(spec).__module__.split(".")[0] == "distributed" and type(spec).__name__ == "Client":
        return DaskExecutor(spec, owns_client=False)
    raise InputTypeError(f"'executor' must be {expected}; got {describe(spec)}.")


# ----------------------------------------------------------------------------------------
# Worker side: one Blocks per (problem key, thread), compiled problems cached inside it
# ----------------------------------------------------------------------------------------
_LOCAL = threading.local()
_CACHE_SIZE = 2


def _serialize(obj: Any) -> bytes:
    return cloudpickle.dumps(obj)


def _worker_blocks(handle: Any) -> Blocks:
    key, ref = handle
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = OrderedDict()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    if isinstance(ref, str):  # a file written by ProcessExecutor.bind
        with open(ref, "rb") as fh:
            ref = fh.read()
    problem, row_batch, col_batch = pickle.loads(ref)
    blocks = Blocks(problem, row_batch=row_batch, col_batch=col_batch)
    cache[key] = blocks
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return blocks


def _batch_task(handle, item):
    """Solve one batch of a separable block on a worker: (value, infos, warnings, error),
    with nothing raised across the process line."""
    blocks = _worker_blocks(handle)
    block, lam, opts, name, params = item
    if block == "X":  # lam is a constant of the compiled X problems
        blocks._ensure_stage(lam)
    attempts: list = []

    def solve(prob, label):
        # a fresh solver for every batch (warm_start=False): a batch's solution then
        # depends on its data only, not on which batches this worker solved before
        attempts.extend(solve_certified(prob, label, opts.cone, opts.solvers, opts.on_failure,
                                        opts.gap_tol, warm_start=False))
        return attempts[-1]

    one = blocks.solve_x_columns if block == "X" else blocks.solve_ab_rows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value, _ = one(params, name, solve)
        except SolverError as exc:
            return None, None, [], (str(exc), exc.status, list(exc.attempts))
    msgs = [str(w.message) for w in caught if issubclass(w.category, SolverWarning)]
    return value, attempts, msgs, None


# ----------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------
class ParallelBlocks(Blocks):
    """:class:`fenchel_idl.blocks.cvxpy_blocks.Blocks` whose (A, B) row batches and X column batches
    are solved by a :class:`BlockExecutor`.

    Parameters
    ----------
    problem : TrainingProblem
    executor : BlockExecutor
    options : SolveOptions
        The solver chain, failure policy and gap tolerance of every batch.
    events : list
        Where uncertified solve attempts are recorded (as ``SolveInfo.to_dict()``), as the
        serial ``solve`` callable of :func:`fenchel_idl.solve_bcd` does.
    owns_executor : bool
        Close the executor in :meth:`close`.
    row_batch, col_batch : int
        As in :class:`Blocks`.

    Notes
    -----
    The (C, D) block, and the (A, B) block when a penalty couples rows, are one problem
    each and are solved in this process.
    """

    def __init__(self, problem: TrainingProblem, executor: BlockExecutor,
                 options: SolveOptions, events: list, owns_executor: bool = False,
                 row_batch: int = 25, col_batch: int = 50):
        super().__init__(problem, row_batch=row_batch, col_batch=col_batch,
                         gap_tol=options.gap_tol, least_squares=options.solvers is None)
        if not isinstance(executor, BlockExecutor):
            raise InputTypeError(f"'executor' must be a BlockExecutor; got "
                                 f"{describe(executor)}.")
        self.executor = executor
        self.options = options
        self.events = events
        self.owns_executor = owns_executor
        self._handle: Any = None

    def _bound(self) -> Any:
        if self._handle is None:
            payload = _serialize((self.problem, self.row_batch, self.col_batch))
            digest = hashlib.sha256(payload).hexdigest()[:16]
            key = f"{self.problem.fingerprint()[:32]}-{digest}"
            self._handle = self.executor.bind(key, payload)
        return self._handle

    def close(self) -> None:
        """Release the payload on the workers, and the executor if this object owns it."""
        if self._handle is not None:
            self.executor.unbind(self._handle)
            self._handle = None
        if self.owns_executor:
            self.executor.close()

    def _collect(self, results, names) -> list[SolveInfo]:
        """Record events and warnings in batch order; raise the first failure."""
        last = []
        for (value, infos, msgs, err), name in zip(results, names):
            if err is not None:
                msg, status, attempts = err
                raise SolverError(msg, status=status, attempts=attempts)
            for msg in msgs:
                warnings.warn(msg, SolverWarning, stacklevel=4)
            for inf in infos:
                if not inf.certified:
                    self.events.append(inf.to_dict())
            last.append(infos[-1])
        return last

    def _solve_batches(self, block: str, batches: list, solve) -> tuple[list, list]:
        """As :meth:`Blocks._solve_batches`, on the executor; events and warnings are
        recorded in batch order and the first failure is raised."""
        items = [(block, self.lam, self.options, name, params) for name, params in batches]
        results = self.executor.map(_batch_task, self._bound(), items)
        return [res[0] for res in results], self._collect(results, [n for n, _ in batches])
