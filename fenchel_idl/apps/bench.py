"""Benchmarks: every figure is a ratio against a baseline run in the same process.

Run ``python -m fenchel_idl.apps.bench`` (or ``fenchel-idl bench``); ``--quick`` keeps the sizes
small. Absolute times on shared machines mean little; the ratios are what to compare.

- forward equilibrium: ``model.equilibrium`` (plain and Anderson) against a plain numpy
  Picard loop at the same tolerance;
- one BCD sweep against a naive formulation: one CVXPY problem per block, rebuilt every
  sweep, default solvers; and the per-block times;
- the same at digits scale (m = 1797, n = 64, p = 64, sklearn's load_digits) with the
  squared loss on one-hot labels: the naive formulation with cross-entropy adds 17 970
  exponential cones to the (C, D) block and its X block is then an exponential-cone
  problem with 115 008 variables, which the default solvers did not finish in our budget;
  the squared loss keeps both formulations quadratic programs (about 11 minutes for the
  naive sweep, so it runs only without ``--quick``);
- sweep time against m and n (table, per-block times and log-log slopes, plot), and the
  same against m with BLAS left multithreaded (``FENCHEL_IDL_BLAS_THREADS=auto``), which
  makes the growth superlinear;
- the separable CVXPY block solves on 2 local processes and on a 2-worker Dask
  ``LocalCluster`` against serial;
- mini-batch BCD against full BCD at large m;
- the cross-entropy readout: FISTA against Clarabel on digits, and at MNIST scale on every
  core against one BLAS thread;
- the ReLU X step at MNIST scale: projected Newton-CG against FISTA on the same objective
  and certificate;
- the stochastic mini-batch W step at MNIST scale: FISTA in centred coordinates against
  the same problem in the original coordinates;
- the BCD targets on the cosine problem (``problems/cosine_regression.toml``, BCD alone):
  train RMSE against its own random-feature start, certificates and sweep time, at the
  problem file's readout ball, 100 and a tighter one, and (without ``--quick``) the file's
  refinement from each BCD point, with held-out figures;
- one refinement epoch against a plain numpy loop; the two l1-ball projections;
- declared penalties: BCD sweep time with each of the paper's named penalties (and a few
  generic CVXPY ones) over the same run without a penalty, on scikit-learn's diabetes data
  (:func:`bench_penalties`).

``--results FILE`` writes the printed report into the ``bench`` section of the results
document (``docs/results.md``); ``--only NAME`` runs one section of :data:`SECTIONS` and
writes it into the section ``bench-NAME`` (``fenchel-idl bench --only penalties --results
docs/results.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cvxpy as cp
import numpy as np
from joblib.externals.loky import get_reusable_executor

from fenchel_idl.analysis import pyplot
from fenchel_idl.apps.bench_refine import bench_projection, bench_refine_epoch, heldout_cosine
from fenchel_idl.apps.common import machine_line, problems_dir, rmse, write_section
from fenchel_idl.blocks import (
    Blocks,
    CentredGram,
    ParallelBlocks,
    SolveOptions,
    XStepObjective,
    fast_ce_readout,
    fast_w_step,
    fast_x_block,
    fista,
    make_executor,
    solve_certified,
    unpack_cd,
)
from fenchel_idl.drivers import (
    bcd_options,
    build_problem,
    initial_state,
    load_data,
    load_problem,
    refine_stage,
    solve_bcd,
    solve_bcd_minibatch,
)
from fenchel_idl.model import ImplicitModel, state_lipschitz
from fenchel_idl.problem import (
    L1,
    ColumnNorms,
    FeatureSelection,
    LipschitzBound,
    Nuclear,
    RowNorms,
    TrainingProblem,
    datasets,
)
from fenchel_idl.validation import check_choice

__all__ = ["SECTIONS", "bench_ce_readout", "bench_ce_readout_start", "bench_ce_readout_step",
           "bench_ce_readout_threads",
           "bench_cosine_targets", "bench_equilibrium", "bench_executor", "bench_minibatch",
           "bench_penalties", "bench_scaling", "bench_section", "bench_sweep", "bench_x_step",
           "main", "run_benchmarks"]


@contextlib.contextmanager
def _blas_env(value: str | None) -> Iterator[None]:
    """``FENCHEL_IDL_BLAS_THREADS`` set to ``value`` (None: unset) within the block, and
    restored after it."""
    saved = os.environ.get("FENCHEL_IDL_BLAS_THREADS")
    if value is None:
        os.environ.pop("FENCHEL_IDL_BLAS_THREADS", None)
    else:
        os.environ["FENCHEL_IDL_BLAS_THREADS"] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FENCHEL_IDL_BLAS_THREADS", None)
        else:
            os.environ["FENCHEL_IDL_BLAS_THREADS"] = saved


def _best(fn, repeats=3):
    best = np.inf
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _random_model(n, p, kappa, seed, nonnegative=False):
    rng = np.random.default_rng(seed)
    A = rng.uniform(size=(n, n)) if nonnegative else rng.standard_normal((n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    return ImplicitModel(A, rng.standard_normal((n, p)), rng.standard_normal((1, n)),
                         np.zeros((1, p)), "relu", rng.standard_normal(n))


def _numpy_picard(A, b, tol, max_iter=100000):
    X = np.zeros_like(b)
    for _ in range(max_iter):
        Xn = np.maximum(A @ X + b, 0.0)
        step = np.max(np.abs(Xn - X))
        X = Xn
        if step <= tol * max(1.0, np.max(np.abs(X))):
            break
    return X


def bench_equilibrium(quick: bool = False) -> list[dict]:
    """model.equilibrium against a plain numpy Picard loop (same tolerance)."""
    rows = []
    sizes = [(50, 1000), (200, 1000)] if quick else [(n, m) for n in (50, 200, 500)
                                                     for m in (1000, 10000)]
    for n, m in sizes:
        model = _random_model(n, 10, 0.9, n + m)
        U = np.random.default_rng(0).standard_normal((10, m))
        b = model.state_input(U)
        _ = model.structure  # analysed once per model (cached), as in use
        t_np, X_ref = _best(lambda model=model, b=b: _numpy_picard(model.A, b, 1e-9))
        t_pf, (X, info) = _best(lambda model=model, U=U: model.equilibrium(U, tol=1e-9))
        t_aa, (_, info_a) = _best(lambda model=model, U=U: model.equilibrium(
            U, tol=1e-9, method="anderson"))
        rows.append({"n": n, "m": m, "picard_iters": info.iterations,
                     "ratio_picard": t_pf / t_np, "ratio_anderson": t_aa / t_np,
                     "anderson_iters": info_a.iterations,
                     "max_diff": float(np.max(np.abs(X - X_ref)))})
    # a model where Picard needs many iterations (kappa near 1)
    model = _random_model(100, 10, 0.98, 7, nonnegative=True)
    U = np.random.default_rng(1).standard_normal((10, 2000))
    b = model.state_input(U)
    t_np, _ = _best(lambda: _numpy_picard(model.A, b, 1e-9))
    t_aa, (_, info_a) = _best(lambda: model.equilibrium(U, tol=1e-9, method="anderson",
                                                          max_iter=100000))
    _, (_, info_p) = _best(lambda: model.equilibrium(U, tol=1e-9, max_iter=100000), 1)
    rows.append({"n": 100, "m": 2000, "picard_iters": info_p.iterations,
                 "ratio_picard": np.nan, "ratio_anderson": t_aa / t_np,
                 "anderson_iters": info_a.iterations, "max_diff": np.nan,
                 "note": "slow model: A >= 0, lambda_PF = 0.98"})
    return rows


def _naive_sweep(problem, A, B, b, C, D, d, X, lam):
    """One sweep with one CVXPY problem per block, rebuilt, default solver (the baseline)."""
    n, m = problem.n, problem.m
    U, Y = problem.U, problem.Y
    Xv = cp.Variable((n, m), nonneg=True)
    M = lam[:, None] * A
    ev, Q = np.linalg.eigh(M + M.T)
    Sp = (Q * np.maximum(ev, 0)) @ Q.T
    Smh = (Q * np.sqrt(np.maximum(-ev, 0))) @ Q.T
    W = B @ U + b[:, None]
    sl = np.sqrt(lam)[:, None]
    obj = (cp.sum_squares(C @ Xv + D @ U + d[:, None] - Y) / (2 * m)
           + (0.5 * cp.sum_squares(cp.multiply(sl, Xv))
              + 0.5 * cp.sum_squares(cp.pos(cp.multiply(sl, A @ Xv + W)))
              - cp.sum(cp.multiply(Xv, lam[:, None] * W + Sp @ X))
              + 0.5 * cp.sum_squares(Smh @ Xv)) / m)
    t0 = time.perf_counter()
    cp.Problem(cp.Minimize(obj)).solve()
    X = Xv.value
    t1 = time.perf_counter()
    Wv = cp.Variable((n, n + problem.p + 1))
    V = np.vstack([X, U, np.ones((1, m))])
    obj = (0.5 * cp.sum(cp.multiply(lam[:, None], cp.square(cp.pos(Wv @ V))))
           - cp.sum(cp.multiply(Wv, (lam[:, None] * X) @ V.T))) / m
    cons = [cp.sum(cp.abs(Wv[:, :n]), axis=1) <= problem.kappa,
            cp.sum(cp.abs(Wv[:, n:n + problem.p]), axis=1) <= problem.bounds.B,
            cp.abs(Wv[:, -1]) <= problem.bounds.B]
    cp.Problem(cp.Minimize(obj), cons).solve()
    t2 = time.perf_counter()
    Cv, Dv, dv = cp.Variable(C.shape), cp.Variable(D.shape), cp.Variable(d.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(Cv @ X + Dv @ U + dv[:, None] - Y) / (2 * m)),
               [cp.sum(cp.abs(Cv), axis=1) <= problem.bounds.C,
                cp.sum(cp.abs(Dv), axis=1) <= problem.bounds.D]).solve()
    t3 = time.perf_counter()
    return {"X": t1 - t0, "AB": t2 - t1, "CD": t3 - t2, "total": t3 - t0}


def _problem(kind: str, n: int, m: int | None = None):
    if kind == "cosine":
        ds = datasets.cosine(m=m or 200, seed=0)
        return TrainingProblem(ds.U, ds.Y, n=n)
    ds = datasets.digits()
    if m is not None:
        ds = ds.subset(np.arange(min(m, ds.m)))
    # squared loss on one-hot targets keeps the naive baseline a QP, like the cosine one
    return TrainingProblem(ds.U, ds.Y, n=n)


def _run_sweeps(problem, sweeps: int, **kw) -> dict:
    """Run solve_bcd for ``sweeps + 1`` sweeps; the first (compiles, fills caches) is not
    counted. Returns the mean time per block, their sum and the wall time per sweep (which
    also counts the restart equilibrium and anything else a sweep does)."""
    stamps: dict[int, float] = {}

    def stamp(rec):
        stamps[rec.sweep] = time.perf_counter()

    t = time.perf_counter()
    res = solve_bcd(problem, max_sweeps=sweeps + 1, seed=0, callback=stamp, **kw)
    total = time.perf_counter() - t
    later = [r for r in res.history if r.sweep >= 1]
    names = list(dict.fromkeys(r.block for r in later))
    per_block = {k: float(sum(r.time for r in later if r.block == k)) / sweeps for k in names}
    last = max(stamps)
    return {"per_block_s": per_block, "blocks_s": float(sum(per_block.values())),
            "wall_s": (stamps[last] - stamps[0]) / last,
            "first_sweep_s": float(sum(r.time for r in res.history if r.sweep == 0)),
            "total_s": total, "result": res}


def bench_sweep(kind: str = "cosine", n: int = 75, m: int | None = None, sweeps: int = 3,
                naive: bool = True, **kw) -> dict:
    """Seconds per BCD sweep (after the first) and per block, against the naive sweep.

    ``speedup`` is naive seconds over our wall time per sweep (everything a sweep does,
    e.g. the restart equilibrium and the line search of the default schedule);
    ``speedup_blocks`` counts only our X, (A, B) and (C, D) blocks, the naive sweep's three.
    """
    problem = _problem(kind, n, m)
    run = _run_sweeps(problem, sweeps, **kw)
    res = run.pop("result")
    out = {"problem": kind, "n": n, "m": problem.m, "p": problem.p,
           "loss": problem.loss.name, "sweep_s": run["wall_s"], **run}
    if naive:
        A, B, b, C, D, d = problem.from_user_model(res.model)
        X, _ = res.model.equilibrium(problem.U_raw)
        nv = _naive_sweep(problem, A, B, b, C, D, d, X, problem.lam0)
        out["naive_sweep_s"] = nv["total"]
        out["naive_per_block_s"] = nv
        out["speedup"] = nv["total"] / run["wall_s"]
        same = sum(v for k, v in run["per_block_s"].items() if k in ("X", "AB", "CD"))
        out["speedup_blocks"] = nv["total"] / same
    return out


def _slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def bench_scaling(quick: bool = False, out: str | None = None,
                  blas_compare: bool | None = None) -> dict:
    """Sweep time against m (n = 20) and against n (m = 200), with log-log slopes, per
    block too; with ``blas_compare`` also against m with BLAS multithreaded."""
    ms = [200, 800, 3200] if quick else [200, 1000, 5000, 20000]
    ns = [20, 50] if quick else [20, 50, 100, 200]
    runs_m = [_run_sweeps(_problem("cosine", 20, m), 2) for m in ms]
    by_m = [r["wall_s"] for r in runs_m]
    by_n = [_run_sweeps(_problem("cosine", n, 200), 2)["wall_s"] for n in ns]
    blocks = list(runs_m[0]["per_block_s"])
    per_block_m = {k: [r["per_block_s"].get(k, np.nan) for r in runs_m] for k in blocks}
    res = {"m": ms, "sweep_by_m": by_m, "slope_m": _slope(ms, by_m), "n": ns,
           "sweep_by_n": by_n, "slope_n": _slope(ns, by_n), "per_block_by_m": per_block_m,
           "slope_m_per_block": {k: _slope(ms, v) for k, v in per_block_m.items()
                                 if np.all(np.asarray(v) > 0)}}
    if blas_compare is None:
        blas_compare = not quick
    if blas_compare:
        ms_b = [200, 1000, 5000]
        with _blas_env("auto"):
            by_b = [_run_sweeps(_problem("cosine", 20, m), 2)["wall_s"] for m in ms_b]
        one = [r["wall_s"] for m, r in zip(ms, runs_m) if m in ms_b]
        res.update({"m_blas": ms_b, "sweep_by_m_blas_auto": by_b,
                    "slope_m_blas_auto": _slope(ms_b, by_b),
                    "blas_ratio": [b / o for b, o in zip(by_b, one)] if len(one) == len(by_b)
                    else None})
    if out is not None:
        _plot_scaling(res, Path(out) / "scaling.png")
    return res


def _plot_scaling(res: dict, path: Path) -> None:
    """Sweep time against m (per block too) and against n, on log-log axes."""
    import matplotlib.ticker

    plt = pyplot()
    ms, ns, by_m, by_n = res["m"], res["n"], res["sweep_by_m"], res["sweep_by_n"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].loglog(ms, by_m, "o-", label=f"sweep (slope {res['slope_m']:.2f})")
    for k, v in res["per_block_by_m"].items():
        axes[0].loglog(ms, v, ".--", label=k)
    if "m_blas" in res:
        axes[0].loglog(res["m_blas"], res["sweep_by_m_blas_auto"], "x:",
                       label=f"BLAS multithreaded (slope {res['slope_m_blas_auto']:.2f})")
    axes[0].set_title("sweep time vs m (n = 20)")
    axes[0].set_xlabel("m")
    axes[0].set_ylabel("seconds per sweep")
    axes[0].legend(fontsize=8)
    axes[1].loglog(ns, by_n, "o-")
    axes[1].set_title(f"sweep time vs n (m = 200): slope {res['slope_n']:.2f}")
    axes[1].set_xlabel("n")
    # label the measured sizes themselves (log-axis minor labels overlap on short ranges)
    for ax, ticks in ((axes[0], ms), (axes[1], ns)):
        ax.set_xticks(list(ticks))
        ax.set_xticklabels([str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _burn(count: int) -> int:
    total = 0
    for i in range(count):
        total += i * i
    return total


def _parallel_capacity(workers: int = 2, count: int = 3_000_000) -> float:
    """Control for the executor figures: 4 pure-Python CPU tasks, serial time over the time
    on ``workers`` loky processes. About 2 on 2 idle cores; on a shared machine it says how
    much parallelism the executors could get at that moment."""
    pool = get_reusable_executor(max_workers=workers, timeout=300)
    list(pool.map(_burn, [10] * workers))
    t = time.perf_counter()
    for _ in range(4):
        _burn(count)
    serial = time.perf_counter() - t
    t = time.perf_counter()
    list(pool.map(_burn, [count] * 4))
    return serial / (time.perf_counter() - t)


def bench_executor(quick: bool = False, repeats: int = 2) -> dict:
    """The separable CVXPY blocks (X column batches, (A, B) row batches) on one state:
    serial :class:`Blocks` against :class:`ParallelBlocks` on 2 local processes and (when
    dask.distributed is installed) on a 2-worker LocalCluster. Best of ``repeats`` after a
    first call that starts the workers and compiles; the results are checked equal."""
    n, m = (50, 200) if quick else (75, 400)
    problem = _problem("cosine", n, m)
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, (n, n))
    A *= 0.45 / np.abs(A).sum(axis=1, keepdims=True)
    B, b = rng.standard_normal((n, 1)), rng.standard_normal(n)
    X = np.maximum(B @ problem.U + b[:, None], 0.0)
    C, D, d = rng.standard_normal((1, n)), rng.standard_normal((1, 1)), np.zeros(1)
    lam = problem.lam0
    W0 = np.hstack([A, B, b[:, None]])

    def serial_solve(prob, name):
        return solve_certified(prob, name, problem.cone, None, "fallback", 1e-6,
                               warm_start=False)[-1]

    def measure(blocks):
        best = {"X": np.inf, "AB": np.inf}
        out = None
        for _ in range(repeats + 1):  # the first call starts workers and compiles
            t = time.perf_counter()
            Xn, _ = blocks.solve_x(A, B, b, C, D, d, X, lam, serial_solve)
            tx = time.perf_counter() - t
            t = time.perf_counter()
            out = (Xn,) + blocks.solve_ab(Xn, lam, C, D, serial_solve, W0, 1e-3)[:3]
            ta = time.perf_counter() - t
            best = {"X": min(best["X"], tx), "AB": min(best["AB"], ta)}
        return best, out

    rows, results = {}, {}
    rows["serial"], results["serial"] = measure(Blocks(problem))
    opts = SolveOptions(problem.cone, None, "fallback", 1e-6)
    ex = make_executor(2)
    try:
        blocks = ParallelBlocks(problem, ex, opts, [])
        rows["processes:2"], results["processes:2"] = measure(blocks)
        blocks.close()
    finally:
        ex.close()
    try:
        import distributed
    except ImportError:
        distributed = None
    if distributed is not None:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            blocks = ParallelBlocks(problem, make_executor(client), opts, [])
            label = "dask LocalCluster(2)"
            rows[label], results[label] = measure(blocks)
            blocks.close()
    base = rows["serial"]["X"] + rows["serial"]["AB"]
    for label, r in rows.items():
        r["X+AB"] = r["X"] + r["AB"]
        r["speedup"] = base / r["X+AB"]
        r["equal"] = all(np.array_equal(a, c) for a, c in zip(results[label],
                                                               results["serial"]))
    return {"n": n, "m": m, "batches": {"X": -(-m // 50), "AB": -(-n // 25)}, "rows": rows,
            "capacity": _parallel_capacity(2)}


def bench_minibatch(quick: bool = False) -> dict:
    """Mini-batch BCD against full-batch BCD on the cosine problem at large m: wall time,
    train RMSE and relaxed objective after the same number of passes over the data."""
    m, epochs, batch = (5000, 3, 500) if quick else (20000, 5, 1000)
    problem = _problem("cosine", 20, m)
    t = time.perf_counter()
    full = solve_bcd(problem, max_sweeps=epochs, seed=0)
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    mb = solve_bcd_minibatch(problem, batch_size=batch, epochs=epochs, seed=0)
    t_mb = time.perf_counter() - t
    rows = {}
    for label, res, secs in (("full BCD", full, t_full), (f"mini-batch {batch}", mb, t_mb)):
        c = res.certificate
        rows[label] = {"seconds": secs, "rmse": c.train_metric["rmse"],
                       "start_rmse": res.start_metric["rmse"], "true_loss": c.true_loss,
                       "certified": c.blocks_certified and c.readout_certified,
                       "monotone": c.monotone}
    return {"m": m, "n": 20, "passes": epochs, "rows": rows}


def bench_ce_readout(quick: bool = False) -> dict:
    """The cross-entropy (C, D) readout on digits (n = 64 random ReLU features, balls of 5):
    the first-order readout (FISTA on centred features, Fenchel-dual certificate) against
    Clarabel on the exponential-cone program, both to a relative gap of 1e-6."""
    ds = datasets.digits()
    if quick:
        ds = ds.subset(np.arange(400))
    pb = TrainingProblem(ds.U, ds.labels, n=64, loss="cross_entropy",
                         bounds={"B": 5.0, "C": 5.0, "D": 5.0})
    st = initial_state(pb)
    t = time.perf_counter()
    _, info = fast_ce_readout(pb, st.X, tol=1e-6)
    t_fista = time.perf_counter() - t
    t = time.perf_counter()
    *_, ref = Blocks(pb).solve_cd(st.X, st.A, st.B, lambda prob, name: solve_certified(
        prob, name, pb.cone, ("CLARABEL",), "warn", 1e-6, warm_start=False)[-1])
    t_clarabel = time.perf_counter() - t
    return {"m": pb.m, "n": 64, "fista_s": t_fista, "clarabel_s": t_clarabel,
            "ratio": t_fista / t_clarabel, "fista_gap": info.gap, "clarabel_gap": ref.gap,
            "certified": bool(info.certified and ref.certified),
            "objective_diff": abs(float(info.objective) - float(ref.objective))}


def bench_ce_readout_threads(quick: bool = False) -> dict:
    """The first-order cross-entropy readout at MNIST scale (n = 128 random ReLU features of
    the training images, balls of 20 as ``problems/mnist_bcd.toml``), the same fixed number
    of FISTA iterations with its products on every core (the default past
    ``_CE_WIDE_MIN`` entries of features) against one BLAS thread
    (``FENCHEL_IDL_BLAS_THREADS=1``)."""
    m, iters = (6000, 50) if quick else (60000, 300)
    ds = datasets.load_mnist("train", n=m)
    pb = TrainingProblem(ds.U, ds.labels, n=128, loss="cross_entropy", kappa=0.5,
                         standardize=False, bounds={"B": 40.0, "C": 20.0, "D": 20.0})
    st = initial_state(pb)
    # standardize=False: the user model reads the same inputs as the problem
    X, _ = pb.to_user_model(st.A, st.B, st.b, st.C, st.D, st.d).equilibrium(pb.U)
    times, objectives = {}, {}
    for label, env in (("1 thread", "1"), ("wide", None)):
        with _blas_env(env):
            t = time.perf_counter()
            # tol 0: never certified, so both run exactly `iters` iterations
            _, info = fast_ce_readout(pb, X, tol=0.0, max_iter=iters)
            times[label], objectives[label] = time.perf_counter() - t, float(info.objective)
    return {"m": m, "n": 128, "iterations": iters, "threads": os.cpu_count() or 1,
            "one_s": times["1 thread"], "wide_s": times["wide"],
            "ratio": times["wide"] / times["1 thread"],
            "objective_diff": abs(objectives["wide"] - objectives["1 thread"])
            / max(1.0, abs(objectives["1 thread"]))}


def _mnist_start(m: int) -> tuple[TrainingProblem, Any]:
    """The first m MNIST training images with n = 128 and the balls of
    ``problems/mnist_bcd.toml``, and the states X of its random-feature start."""
    ds = datasets.load_mnist("train", n=m)
    pb = TrainingProblem(ds.U, ds.labels, n=128, loss="cross_entropy", kappa=0.5,
                         standardize=False, bounds={"B": 40.0, "C": 20.0, "D": 20.0})
    return pb, initial_state(pb).X


def bench_ce_readout_step(quick: bool = False) -> dict:
    """The cross-entropy readout of MNIST's random-feature start (n = 128, balls of 20 as
    ``problems/mnist_bcd.toml``) to a relative gap of 1e-6, both from the least-squares
    start: FISTA with backtracking on the step (the default) against the fixed step of
    Boehning's global bound."""
    pb, X = _mnist_start(6000 if quick else 20000)
    out: dict = {"m": pb.m, "n": 128}
    for label, backtracking in (("fixed", False), ("backtracking", True)):
        t = time.perf_counter()
        _, info = fast_ce_readout(pb, X, tol=1e-6, max_iter=20000, backtracking=backtracking)
        out[f"{label}_s"], out[f"{label}_objective"] = time.perf_counter() - t, info.objective
        out[f"{label}_certified"] = bool(info.certified)
        out[f"{label}_iterations"] = info.note or "certified"
    out["ratio"] = out["backtracking_s"] / out["fixed_s"]
    out["objective_diff"] = abs(out["backtracking_objective"] - out["fixed_objective"])
    return out


def bench_ce_readout_start(quick: bool = False) -> dict:
    """The cross-entropy readout of MNIST's random-feature start (n = 128, balls of 20 as
    ``problems/mnist_bcd.toml``) to a relative gap of 1e-6: from the projected
    least-squares fit (K0 = None, the default without a readout) against from 0."""
    pb, X = _mnist_start(6000 if quick else 20000)
    out: dict = {"m": pb.m, "n": 128}
    zero = np.zeros((pb.q, pb.n + pb.p + 1))  # [C, D, d] (the problem has a bias)
    for label, K0 in (("zero", zero), ("ls", None)):
        t = time.perf_counter()
        _, info = fast_ce_readout(pb, X, K0, tol=1e-6, max_iter=20000)
        out[f"{label}_s"], out[f"{label}_objective"] = time.perf_counter() - t, info.objective
        out[f"{label}_certified"] = bool(info.certified)
    out["ratio"] = out["ls_s"] / out["zero_s"]
    return out


def bench_x_step(quick: bool = False) -> dict:
    """The ReLU X step at MNIST scale, the first of training (n = 128 random ReLU features,
    lam 0.01, balls of ``problems/mnist_bcd.toml``, after the start's readout), to a
    relative gap of 1e-6: projected Newton-CG (:func:`fenchel_idl.blocks.fast_x_block`)
    against FISTA with adaptive restart on the same objective and certificate, the
    first-order method it replaced."""
    m = 1000 if quick else 5000
    ds = datasets.load_mnist("train", n=m)
    pb = TrainingProblem(ds.U, ds.labels, n=128, loss="cross_entropy", kappa=0.5, lam=0.01,
                         standardize=False, bounds={"B": 40.0, "C": 20.0, "D": 20.0})
    st = initial_state(pb)
    K, _ = fast_ce_readout(pb, st.X, tol=1e-6)
    C, D, d = unpack_cd(pb, K)
    args = (pb, st.A, st.B, st.b, C, D, d, st.X, st.lam)
    t = time.perf_counter()
    _, info = fast_x_block(*args, tol=1e-6)
    t_newton = time.perf_counter() - t
    t = time.perf_counter()
    obj = XStepObjective(*args)
    _, f, gap, iters = fista(obj.value_grad, lambda Z: np.maximum(Z, 0.0), obj.certificate,
                             st.X, obj.lipschitz(), 1e-6, 20000)
    t_fista = time.perf_counter() - t
    return {"m": m, "n": 128, "newton_s": t_newton, "fista_s": t_fista,
            "ratio": t_newton / t_fista, "fista_iterations": iters,
            "certified": bool(info.certified and gap <= 1e-6 * max(1.0, abs(f))),
            "objective_diff": abs(float(info.objective) - f)}


def bench_cosine_targets(quick: bool = False, balls: tuple[float, ...] | None = None,
                         max_sweeps: int | None = None, refined: bool | None = None,
                         path: str | Path | None = None, data_seed: int | None = None,
                         heldout: int = 2000) -> dict:
    """BCD alone on the cosine problem of section 7.1 as ``problems/cosine_regression.toml``
    states it (n = 75, kappa = 0.5; its data, lam, schedule, sweeps and balls; no
    refinement), with the readout ball ||C||_inf <= ``balls[i]`` (standardized units).
    Default: the problem file's ball, then 100 and 50.

    For each ball: train RMSE of the random-feature start and of the BCD result (both at
    their true equilibrium with the optimal readout), the improvement, whether every block
    was certified and the relaxed objective monotone, and the wall time per sweep. With
    ``refined`` (default: not ``quick``), also the file's [refine] stage from each BCD
    point (full-batch Adam, A kept in the kappa ball, C and D free, best epoch kept): how
    far a local method gets from there, as ``refined_*`` figures. ``path`` defaults to the
    file in the ``problems/`` directory the experiments command uses (the checkout's, else
    the working directory's).

    Held-out figures of each model: ``test_rmse`` on ``heldout`` fresh samples of the same
    draw (samples m, m + 1, ... of :func:`fenchel_idl.problem.datasets.cosine`), and ``f_rmse``
    against the noiseless f on 2001 points of [-5, 5]. ``data_seed`` replaces the file's
    seed (data and training) to measure other draws of the same problem.
    """
    spec = load_problem(problems_dir() / "cosine_regression.toml" if path is None else path)
    if data_seed is not None:
        spec = dataclasses.replace(spec, seed=int(data_seed),
                                   data={**spec.data, "seed": int(data_seed)})
    ds, _ = load_data(spec)
    U_test, Y_test = heldout_cosine(spec, ds.m, heldout)
    grid = datasets.cosine_grid(2001)
    u_grid, f_grid = grid.U, grid.Y
    if balls is None:
        balls = (float(spec.training.get("bounds", {}).get("C", 100.0)), 100.0, 50.0)
    if refined is None:
        refined = not quick
    opts = bcd_options(spec, refine=False)
    stage = bcd_options(spec)["refine"] if refined else None  # run after the BCD figures
    if max_sweeps is not None:
        opts["max_sweeps"] = max_sweeps
    rows = []
    for ball in balls:
        bounds = {**spec.training.get("bounds", {}), "C": float(ball)}
        problem = build_problem(dataclasses.replace(
            spec, training={**spec.training, "bounds": bounds}), ds)
        t = time.perf_counter()
        res = solve_bcd(problem, **opts)
        secs = time.perf_counter() - t
        c = res.certificate
        start, end = res.start_metric["rmse"], c.train_metric["rmse"]
        rows.append({"ball_C": float(ball), "start_rmse": start, "rmse": end,
                     "improvement": 1.0 - end / start, "sweeps": res.n_sweeps,
                     "certified": bool(c.blocks_certified and c.readout_certified),
                     "monotone": bool(c.monotone), "well_posed": bool(c.well_posed),
                     "norm_A": c.norm_inf, "seconds": secs,
                     "sweep_s": float(res.timings.get("bcd", secs)) / max(res.n_sweeps, 1),
                     "test_rmse": rmse(res.model, U_test, Y_test),
                     "f_rmse": rmse(res.model, u_grid, f_grid)})
        if stage:
            t = time.perf_counter()
            model, _ = refine_stage(problem, res.model, stage, spec.seed, False)
            rows[-1].update({"refined_rmse": rmse(model, ds.U, ds.Y),
                             "refined_test_rmse": rmse(model, U_test, Y_test),
                             "refined_f_rmse": rmse(model, u_grid, f_grid),
                             "refine_s": time.perf_counter() - t})
    return {"n": spec.model["n"], "m": ds.m, "rows": rows,
            "refine": None if not stage else (dict(spec.refine) or "defaults")}


Say = Callable[[str], Any]


def _report_equilibrium(quick: bool, say: Say) -> list[dict]:
    say("== forward equilibrium: time / plain numpy Picard loop (same tolerance 1e-9)")
    rows = bench_equilibrium(quick)
    for r in rows:
        picard = "not timed" if np.isnan(r["ratio_picard"]) else f"x{r['ratio_picard']:.2f}"
        say(f"  n={r['n']:4d} m={r['m']:6d}  picard {picard}  "
            f"anderson x{r['ratio_anderson']:.2f}  (Picard {r['picard_iters']} it, Anderson "
            f"{r['anderson_iters']} it) {r.get('note', '')}")
    return rows


def _report_sweep(kind: str, n: int, quick: bool, say: Say) -> dict:
    naive = not (quick and kind == "digits")
    r = bench_sweep(kind, n, None, naive=naive)
    head = f"  {kind}: n={r['n']} m={r['m']} p={r['p']} ({r['loss']} loss)"
    if kind == "digits":
        head += ", one-hot labels: cross-entropy naive is intractable here (see docstring)"
    say(head)
    say(f"    sweep {r['sweep_s']:.3f} s wall (blocks {r['blocks_s']:.3f} s; first sweep "
        f"{r['first_sweep_s']:.2f} s)")
    say("    per block (s):  " + "  ".join(f"{k} {v:.3f}" for k, v in r["per_block_s"].items()))
    if naive:
        nb = r["naive_per_block_s"]
        say("    naive (s):      " + "  ".join(f"{k} {nb[k]:.2f}" for k in ("X", "AB", "CD"))
            + f"  total {r['naive_sweep_s']:.1f}")
        say(f"    speed-up x{r['speedup']:.1f} (wall per sweep), x{r['speedup_blocks']:.1f} "
            "(our X, AB, CD blocks only)")
    else:
        say("    naive sweep not run with --quick (about 11 minutes on 2 cores)")
    return r


def _report_scaling(quick: bool, out: str | None, say: Say) -> dict:
    say("== scaling of the sweep time (wall per sweep, n = 20 / m = 200)")
    sc = bench_scaling(quick, out)
    say("  m:     " + "  ".join(f"{m}: {t:.3f}s" for m, t in zip(sc["m"], sc["sweep_by_m"]))
        + f"   log-log slope {sc['slope_m']:.2f}")
    say("    per block slope in m: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                 sc["slope_m_per_block"].items()))
    say("  n:     " + "  ".join(f"{n}: {t:.3f}s" for n, t in zip(sc["n"], sc["sweep_by_n"]))
        + f"   log-log slope {sc['slope_n']:.2f}")
    if "sweep_by_m_blas_auto" in sc:
        say("  m, BLAS multithreaded: " + "  ".join(
            f"{m}: {t:.3f}s" for m, t in zip(sc["m_blas"], sc["sweep_by_m_blas_auto"]))
            + f"   slope {sc['slope_m_blas_auto']:.2f}"
            + ("" if sc["blas_ratio"] is None else "   (x" + ", x".join(
                f"{x:.1f}" for x in sc["blas_ratio"]) + " the one-thread time)"))
    return sc


def _report_executor(quick: bool, say: Say) -> dict:
    say("== separable CVXPY block solves on one state: executors against serial Blocks")
    ex = bench_executor(quick)
    say(f"  n={ex['n']} m={ex['m']}: {ex['batches']['X']} X batches, "
        f"{ex['batches']['AB']} (A, B) row batches")
    for label, r in ex["rows"].items():
        say(f"  {label:22s} X {r['X']:.2f} s  AB {r['AB']:.2f} s  speed-up x{r['speedup']:.2f}"
            f"  (results equal to serial: {r['equal']})")
    say(f"  control: pure-Python CPU tasks on 2 processes run x{ex['capacity']:.2f} faster "
        "than serial right now (2 on 2 idle cores)")
    return ex


def _report_minibatch(quick: bool, say: Say) -> dict:
    say("== mini-batch BCD against full BCD (cosine, n = 20, same passes over the data)")
    mb = bench_minibatch(quick)
    for label, r in mb["rows"].items():
        say(f"  m={mb['m']} {label:18s} {mb['passes']} passes {r['seconds']:.1f} s  train RMSE "
            f"{r['rmse']:.4f} (start {r['start_rmse']:.4f})  certified {r['certified']}  "
            f"monotone {r['monotone']}")
    return mb


def bench_w_step(quick: bool = False) -> dict:
    """The stochastic mini-batch W step of ``problems/mnist_bcd.toml`` on one batch of MNIST
    images, after the readout and the X step of the random-feature start (n = 128, lam 0.1,
    prox 1e-3, three majorize-minimize steps, each to a gap of 1e-6): FISTA in the centred
    coordinates of :class:`fenchel_idl.blocks.CentredGram` (the default) against the same
    problems solved in the original coordinates, where the centred proximal term is not
    diagonal."""
    ds = datasets.load_mnist("train", n=1000 if quick else 2000)
    pb = TrainingProblem(ds.U, ds.labels, n=128, loss="cross_entropy", kappa=0.5, lam=0.1,
                         standardize=False, bounds={"B": 40.0, "C": 20.0, "D": 20.0})
    st = initial_state(pb)
    # the batch's steps before its W step: the readout, then the X step (at the start's
    # equilibrium the W step has nothing to do)
    C, D, d = unpack_cd(pb, fast_ce_readout(pb, st.X, tol=1e-6)[0])
    X = fast_x_block(pb, st.A, st.B, st.b, C, D, d, st.X, st.lam, tol=1e-6)[0]
    V = np.vstack([X, pb.U, np.ones((1, pb.m))])
    G, T = V @ V.T, X @ V.T
    gam = state_lipschitz(pb.activation, pb.n)[:, None]
    out: dict = {"m": pb.m, "n": pb.n}
    for label, centred in (("original", False), ("centred", True)):
        W = st.W(pb.bias)
        t = time.perf_counter()
        metric = CentredGram(pb, G)
        total = 0.0
        for _ in range(3):
            Z0 = W @ V
            Ha = (Z0 - pb.activation(Z0) / gam) @ V.T  # the majorizers' centres
            W, info = fast_w_step(pb, G, T, Ha, W, 1e-3, 1e-6, st.lam, metric=metric,
                                  centred=centred)
            total += info.objective
            out[f"{label}_certified"] = out.get(f"{label}_certified", True) and info.certified
        out[f"{label}_s"], out[f"{label}_objective"] = time.perf_counter() - t, total
        out[f"{label}_W"] = W
    out["ratio"] = out["centred_s"] / out["original_s"]
    out["objective_diff"] = abs(out["centred_objective"] - out["original_objective"])
    out["max_w_diff"] = float(np.max(np.abs(out.pop("centred_W") - out.pop("original_W"))))
    return out


def _report_w_step(quick: bool, say: Say) -> dict:
    say("== mini-batch W step: centred / original coordinates (3 MM steps, gap 1e-6)")
    ws = bench_w_step(quick)
    say(f"  MNIST batch m={ws['m']} n={ws['n']}: centred {ws['centred_s']:.2f} s, original "
        f"{ws['original_s']:.2f} s: x{ws['ratio']:.3f}  (certified: "
        f"{ws['centred_certified'] and ws['original_certified']}; objectives differ by "
        f"{ws['objective_diff']:.1e}, W by {ws['max_w_diff']:.1e})")
    return ws


def _report_ce_readout(quick: bool, say: Say) -> dict:
    say("== cross-entropy readout: FISTA with its dual certificate / Clarabel (gap 1e-6)")
    ce = bench_ce_readout(quick)
    say(f"  digits m={ce['m']} n={ce['n']}: FISTA {ce['fista_s']:.2f} s, Clarabel "
        f"{ce['clarabel_s']:.2f} s: x{ce['ratio']:.3f}  (both certified: {ce['certified']}; "
        f"objectives differ by {ce['objective_diff']:.1e})")
    wide = bench_ce_readout_threads(quick)
    say(f"  MNIST m={wide['m']} n={wide['n']}, {wide['iterations']} FISTA iterations: on "
        f"{wide['threads']} BLAS threads {wide['wide_s']:.1f} s, on 1 {wide['one_s']:.1f} s: "
        f"x{wide['ratio']:.3f}  (objectives differ by {wide['objective_diff']:.1e})")
    step = bench_ce_readout_step(quick)
    say(f"  MNIST m={step['m']} n={step['n']}, the random-feature start's readout to gap "
        f"1e-6: backtracking step {step['backtracking_s']:.1f} s, fixed step "
        f"{step['fixed_s']:.1f} s: x{step['ratio']:.3f}  (certified: "
        f"{step['backtracking_certified'] and step['fixed_certified']}; objectives differ "
        f"by {step['objective_diff']:.1e})")
    start = bench_ce_readout_start(quick)
    say(f"  MNIST m={start['m']} n={start['n']}, the random-feature start's readout to gap "
        f"1e-6: from the least-squares start {start['ls_s']:.1f} s, from 0 "
        f"{start['zero_s']:.1f} s: x{start['ratio']:.3f}  (certified: "
        f"{start['ls_certified'] and start['zero_certified']})")
    return {**ce, "wide": wide, "step": step, "start": start}


def _report_x_step(quick: bool, say: Say) -> dict:
    say("== ReLU X step: projected Newton-CG / FISTA on the same objective (gap 1e-6)")
    xs = bench_x_step(quick)
    say(f"  MNIST m={xs['m']} n={xs['n']}, the first X step of training: Newton "
        f"{xs['newton_s']:.2f} s, FISTA {xs['fista_s']:.2f} s ({xs['fista_iterations']} "
        f"iterations): x{xs['ratio']:.3f}  (both certified: {xs['certified']}; objectives "
        f"differ by {xs['objective_diff']:.1e})")
    return xs


def _penalty_cases(weight: float) -> list[tuple[str, Any]]:
    """(label, penalty or constraint) of the penalty benchmark: the named penalties keep the
    first-order blocks; the last ones take the generic CVXPY path for the blocks they read."""
    def group_b(A, B, C, D):
        return weight * cp.sum(cp.norm(B, 2, axis=0))

    def c_nonneg(A, B, C, D):
        return [C >= 0]

    return [("l1 on A", L1(weight)), ("row norms of A", RowNorms(weight)),
            ("column norms of A", ColumnNorms(weight)),
            ("feature selection (B; D)", FeatureSelection(weight)),
            ("nuclear norm of A", Nuclear(weight)), ("l1 on C", L1(weight, on="C")),
            ("lipschitz (4.7)", LipschitzBound(weight)),
            ("callable: group norm of B", group_b), ("callable: C >= 0", c_nonneg)]


def bench_penalties(quick: bool = False, n: int = 20, sweeps: int = 5,
                    weight: float = 1e-3) -> list[dict]:
    """CPU seconds per BCD sweep with each penalty of :func:`_penalty_cases` over the same
    run without one (diabetes data, ``n`` states, ``sweeps`` sweeps, seed 0), in one
    process. Rows: label, seconds, ratio, sweeps run, all blocks certified, generic
    (whether a block took the generic CVXPY path, from its warning)."""
    from sklearn.datasets import load_diabetes

    U, y = load_diabetes(return_X_y=True)
    sweeps = 3 if quick else sweeps

    def timed(spec):
        kw = {} if spec is None else (
            {"constraints": [spec]} if getattr(spec, "__name__", "") == "c_nonneg"
            else {"penalties": [spec]})
        problem = TrainingProblem(U.T, y[None, :], n=n, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = time.process_time()
            res = solve_bcd(problem, max_sweeps=sweeps, seed=0)
            cpu = time.process_time() - t
        ran = max(r.sweep for r in res.history) + 1
        return {"s": cpu / ran, "sweeps": ran,
                "certified": all(r.certified for r in res.history if r.block in ("X", "AB")),
                "generic": any("generic CVXPY path" in str(w.message) for w in caught)}

    base = timed(None)
    rows = [{"label": "no penalty", "ratio": 1.0, **base}]
    for label, spec in _penalty_cases(weight):
        row = timed(spec)
        rows.append({"label": label, "ratio": row["s"] / base["s"], **row})
    return rows


def _report_penalties(quick: bool, say: Say) -> list[dict]:
    say("== declared penalties: CPU time per BCD sweep / the same run without a penalty "
        "(diabetes, n = 20, weight 1e-3; targets: named x2, on C or D alone x5)")
    rows = bench_penalties(quick)
    for r in rows:
        say(f"  {r['label']:28s} {r['s']:.3f} s/sweep  x{r['ratio']:.2f}  ({r['sweeps']} "
            f"sweeps; X, (A, B) certified: {r['certified']}"
            + ("; generic CVXPY path" if r["generic"] else "") + ")")
    return rows


def _report_cosine_targets(quick: bool, say: Say) -> dict:
    say("== BCD alone on the cosine problem (n = 75; targets: train RMSE <= 0.65, 15% below "
        "its random-feature start, certified, monotone, sweep <= 2 s)")
    ct = bench_cosine_targets(quick)
    for r in ct["rows"]:
        say(f"  ||C||_inf <= {r['ball_C']:5.0f}: start {r['start_rmse']:.4f} -> BCD "
            f"{r['rmse']:.4f} ({100 * r['improvement']:.1f}% better) in {r['sweeps']} sweeps, "
            f"{r['sweep_s']:.2f} s/sweep; certified {r['certified']}, monotone "
            f"{r['monotone']}, ||A||_inf {r['norm_A']:.3f}; held out: test "
            f"{r['test_rmse']:.4f}, against f {r['f_rmse']:.4f}")
        if "refined_rmse" in r:
            say(f"      then the file's refinement ({r['refine_s']:.1f} s; A in the kappa "
                f"ball, C and D free): train {r['refined_rmse']:.4f}, test "
                f"{r['refined_test_rmse']:.4f}, against f {r['refined_f_rmse']:.4f}")
    return ct


def _report_refinement(quick: bool, say: Say) -> tuple[dict, dict]:
    say("== refinement epoch against a plain numpy loop; projections")
    rb = bench_refine_epoch(repeats=2 if quick else 3)
    say(f"  refine epoch / numpy loop: x{rb.get('ratio', float('nan')):.2f}")
    pj = bench_projection()
    say("  projection: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in pj.items()))
    return rb, pj


def _report_sweeps(quick: bool, say: Say) -> dict:
    say("== one BCD sweep against the naive formulation (CVXPY, rebuilt, default solvers)")
    return {kind: _report_sweep(kind, n, quick, say) for kind, n in (("cosine", 75),
                                                                     ("digits", 64))}


#: The sections of the report, in order: name -> reporter(quick, say) (``scaling`` also
#: takes the plot directory).
SECTIONS: dict[str, Callable[..., Any]] = {
    "equilibrium": _report_equilibrium, "sweep": _report_sweeps,
    "scaling": _report_scaling, "executor": _report_executor,
    "minibatch": _report_minibatch, "ce_readout": _report_ce_readout, "x_step": _report_x_step,
    "w_step": _report_w_step,
    "cosine_targets": _report_cosine_targets, "penalties": _report_penalties,
    "refinement": _report_refinement,
}


def run_benchmarks(quick: bool = False, out: str | None = None, say: Say = print,
                   only: list[str] | None = None) -> dict:
    """Run the benchmarks (every section of :data:`SECTIONS`, or those named in ``only``)
    and report their ratios, one line at a time, through ``say``.

    Returns the results of each section by name, and under ``"lines"`` the report."""
    for name in only or ():
        check_choice("bench section", name, tuple(SECTIONS))
    lines: list[str] = []

    def tell(text: str) -> None:
        lines.append(text)
        say(text)

    results: dict[str, Any] = {}
    for name, report in SECTIONS.items():
        if only and name not in only:
            continue
        results[name] = (report(quick, out, tell) if name == "scaling"
                         else report(quick, tell))
    results["lines"] = lines
    return results


def bench_section(results: dict, command: str, quick: bool) -> str:
    """The results-document section of a :func:`run_benchmarks` report."""
    text = ["## Benchmarks: ratios against baselines run in the same process", "",
            f"Command: `{command}`. {machine_line()}", ""]
    if quick:
        text += ["**Quick mode: small sizes only.**", ""]
    return "\n".join(text + ["```text", *results["lines"], "```"])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl bench`` (also ``python -m fenchel_idl.apps.bench``); ``prog`` names the
    command in its help and in the results section."""
    ap = argparse.ArgumentParser(prog=prog or "python -m fenchel_idl.apps.bench",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--out", default=None, help="directory for the scaling plot")
    ap.add_argument("--results", default=None,
                    help="results document whose 'bench' section to rewrite (with --only, "
                    "the section 'bench-NAME')")
    ap.add_argument("--only", choices=list(SECTIONS), default=None,
                    help="run one section of the report only")
    args = ap.parse_args(argv)
    command = f"{ap.prog} " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    benchmark(args.quick, args.out, args.results, command.strip(), args.only)
    return 0


def benchmark(quick: bool, out: str | None, results_path: str | Path | None,
              command: str, only: str | None = None) -> dict:
    """Run the benchmarks (or the section ``only``) and, with ``results_path``, write their
    section of the results document ("bench", or "bench-ONLY")."""
    results = run_benchmarks(quick, out, only=None if only is None else [only])
    if results_path is not None:
        section = "bench" if only is None else f"bench-{only}"
        path = write_section(section, bench_section(results, command, quick), results_path)
        print(f"wrote {path}")
    return results


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
