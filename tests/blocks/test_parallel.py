"""Separable block solves on local processes and on Dask distributed (fenchel_idl.blocks.parallel).

The reference for "equal" is the plain serial code: :class:`Blocks` solving the same batches
in order, or ``solve_bcd(executor=None)``, each solve with a fresh solver
(``warm_start=False``, as solve_bcd and the executors do: a batch's solution then depends on
its data only). Equality is to 1e-12, i.e. bitwise up to the last digits: the same solver
on the same data.
"""

import sys
import warnings

import numpy as np
import pytest

from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.blocks.parallel import (
    ParallelBlocks,
    ProcessExecutor,
    SolveOptions,
    _InProcessExecutor,
    make_executor,
)
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import InputTypeError, SolverError, SolverWarning, ValidationError
from fenchel_idl.problem.training_problem import TrainingProblem

EXACT = {"rtol": 0.0, "atol": 1e-12}


def _problem(rng, n=30, m=120):
    U = rng.uniform(-1, 1, (2, m))
    Y = np.sin(2 * U[:1]) + 0.3 * U[1:2] ** 2 + 0.05 * rng.standard_normal((1, m))
    return TrainingProblem(U, Y, n=n, kappa=0.5, lam=5.0, bounds={"C": 20.0})


def _state(problem, seed=1):
    r = np.random.default_rng(seed)
    n, p = problem.n, problem.p
    A = r.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = r.standard_normal((n, p)), r.standard_normal(n)
    X = np.maximum(B @ problem.U + b[:, None], 0) + 0.1 * r.uniform(size=(n, problem.m))
    C, D, d = r.standard_normal((1, n)), r.standard_normal((1, p)), r.standard_normal(1)
    lam = r.uniform(0.5, 10, n)
    return A, B, b, C, D, d, X, lam


def _serial_fresh(prob, name):
    return solve_certified(prob, name, "qp", warm_start=False)[-1]


def _serial_blocks_result(problem, state):
    """The independent reference: plain Blocks, batches in order, fresh solver each."""
    A, B, b, C, D, d, X, lam = state
    blocks = Blocks(problem)
    Xs, _ = blocks.solve_x(A, B, b, C, D, d, X, lam, _serial_fresh)
    W0 = np.hstack([A, B, b[:, None]])
    As, Bs, bs, _ = blocks.solve_ab(Xs, lam, C, D, _serial_fresh, W0, 1e-3)
    return Xs, As, Bs, bs


def _parallel_blocks_result(problem, state, executor, events=None):
    A, B, b, C, D, d, X, lam = state
    blocks = ParallelBlocks(problem, executor, SolveOptions("qp", None, "fallback", 1e-6),
                            [] if events is None else events)
    Xp, ix = blocks.solve_x(A, B, b, C, D, d, X, lam, None)
    W0 = np.hstack([A, B, b[:, None]])
    Ap, Bp, bp, ia = blocks.solve_ab(Xp, lam, C, D, None, W0, 1e-3)
    blocks.close()
    assert ix.certified and ia.certified
    assert ix.note == "3 batch(es)" and ia.note == "2 batch(es)"  # m = 120, n = 30
    return Xp, Ap, Bp, bp


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, error, match", [
    (0, ValidationError, r"'executor' must be .* got 0 \(the number of worker processes"),
    (-2, ValidationError, r"got -2"),
    (True, InputTypeError, r"'executor' must be .* got True of type bool"),
    (2.5, InputTypeError, r"got 2.5 of type float"),
    ("threads:2", ValidationError, r"got 'threads:2'"),
    ("processes:zero", ValidationError, r"got 'processes:zero' \(N must be an integer >= 1\)"),
    ("processes:0", ValidationError, r"N must be an integer >= 1"),
    (object(), InputTypeError, r"'executor' must be None, an int >= 1, 'processes:N'"),
])
def test_bad_executor_is_refused_with_a_clear_message(spec, error, match):
    with pytest.raises(error, match=match):
        make_executor(spec)


def test_solve_bcd_refuses_a_bad_executor_before_solving(rng):
    problem = _problem(rng, n=4, m=20)
    with pytest.raises(ValidationError, match="'executor' must be"):
        solve_bcd(problem, max_sweeps=1, executor="gpu")


def test_dask_address_without_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'fenchel_idl\[dask\]'"):
        make_executor("tcp://127.0.0.1:8786")


def test_process_specs_make_process_executors():
    ex = make_executor("processes:2")
    assert isinstance(ex, ProcessExecutor) and ex.workers == 2
    ex.close()
    assert make_executor(None) is None
    assert make_executor(ex) is ex  # an executor made earlier is used as it is


# -- the worker code path, in this process ----------------------------------------------------
def test_executor_path_equals_the_serial_blocks(rng):
    problem = _problem(rng)
    state = _state(problem)
    ref = _serial_blocks_result(problem, state)
    got = _parallel_blocks_result(problem, state, _InProcessExecutor())
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, **EXACT)


def test_worker_builds_the_problem_once_per_fingerprint(rng):
    from fenchel_idl.blocks import parallel as parallel

    problem = _problem(rng, n=6, m=60)
    state = _state(problem)
    ex = _InProcessExecutor()
    parallel._LOCAL.cache = None
    _parallel_blocks_result_small(problem, state, ex)
    cache = parallel._LOCAL.cache
    assert len(cache) == 1
    (key, blocks), = cache.items()
    assert key.startswith(problem.fingerprint()[:32])
    compiled = dict(blocks._x_cache)
    _parallel_blocks_result_small(problem, state, ex)  # same problem: same Blocks, same
    assert list(parallel._LOCAL.cache.items()) == [(key, blocks)]  # compiled problems
    assert all(blocks._x_cache[k] is v for k, v in compiled.items())
    other = _problem(np.random.default_rng(7), n=6, m=60)
    _parallel_blocks_result_small(other, _state(other), ex)
    assert len(parallel._LOCAL.cache) == 2


def _parallel_blocks_result_small(problem, state, executor):
    A, B, b, C, D, d, X, lam = state
    blocks = ParallelBlocks(problem, executor, SolveOptions("qp", None, "fallback", 1e-6), [])
    Xp, info = blocks.solve_x(A, B, b, C, D, d, X, lam, None)
    assert info.certified
    return Xp


def test_failures_and_warnings_cross_the_process_line_as_in_serial(rng):
    """An uncertifiable solver: "raise" gives the SolverError with its attempts, "warn"
    re-emits the SolverWarning and records the same events as the serial path."""
    problem = _problem(rng, n=6, m=60)
    A, B, b, C, D, d, X, lam = _state(problem)
    ex = _InProcessExecutor()
    # SCS stops at its iteration cap far from a 1e-14 gap: never certified
    opts = SolveOptions("qp", ("SCS",), "raise", 1e-14)
    blocks = ParallelBlocks(problem, ex, opts, [])
    with pytest.raises(SolverError, match=r"block 'X\[0:50\]'") as err:
        blocks.solve_x(A, B, b, C, D, d, X, lam, None)
    assert err.value.attempts and err.value.attempts[0].solver == "SCS"
    events: list = []
    blocks = ParallelBlocks(problem, ex, SolveOptions("qp", ("SCS",), "warn", 1e-14), events)
    with pytest.warns(SolverWarning, match="no solver certified"):
        _, info = blocks.solve_x(A, B, b, C, D, d, X, lam, None)
    assert not info.certified
    serial_events: list = []

    def serial(prob, name):
        infos = solve_certified(prob, name, "qp", ("SCS",), "warn", 1e-14, warm_start=False)
        serial_events.extend(i.to_dict() for i in infos if not i.certified)
        return infos[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        Blocks(problem).solve_x(A, B, b, C, D, d, X, lam, serial)
    strip = [{k: v for k, v in e.items() if k != "time"} for e in events]
    assert strip == [{k: v for k, v in e.items() if k != "time"} for e in serial_events]


# -- real workers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    import dask

    # workers starting on a loaded machine may need longer than the default 30 s to connect
    with dask.config.set({"distributed.comm.timeouts.connect": "180s"}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, protocol="tcp://")
        client = distributed.Client(cluster)
        yield client
        client.close()
        cluster.close()


@pytest.mark.distributed
def test_dask_local_cluster_equals_serial(rng, dask_client):
    """A LocalCluster with 2 worker processes: the blocks equal the serial Blocks."""
    problem = _problem(rng)
    state = _state(problem)
    ref = _serial_blocks_result(problem, state)
    ex = make_executor(dask_client)
    assert ex.workers == 2
    got = _parallel_blocks_result(problem, state, ex)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, **EXACT)
    assert len(set(dask_client.run(lambda: __import__("os").getpid()).values())) == 2


@pytest.mark.distributed
def test_solve_bcd_on_dask_equals_the_serial_run(rng, dask_client):
    """A whole BCD run through a scheduler address: the same history and model as the
    serial run (executor=None), every block certified."""
    problem = _problem(rng, n=30, m=100)
    kw = {"max_sweeps": 2, "block_solver": "cvxpy", "seed": 0}
    ref = solve_bcd(problem, **kw)
    got = solve_bcd(problem, executor=dask_client.scheduler_info()["address"], **kw)
    assert got.certificate.blocks_certified and got.certificate.monotone
    assert [(r.block, r.accepted) for r in got.history] == \
        [(r.block, r.accepted) for r in ref.history]
    np.testing.assert_allclose([r.objective for r in got.history],
                               [r.objective for r in ref.history], **EXACT)
    for k in "ABCD":
        np.testing.assert_allclose(getattr(got.model, k), getattr(ref.model, k), **EXACT)


@pytest.mark.distributed
def test_local_processes_equal_serial(rng):
    """executor=2: two local worker processes give the serial Blocks' results."""
    problem = _problem(rng)
    state = _state(problem)
    ref = _serial_blocks_result(problem, state)
    ex = make_executor(2)
    try:
        got = _parallel_blocks_result(problem, state, ex)
    finally:
        ex.close()
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, **EXACT)
