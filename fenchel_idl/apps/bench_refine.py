"""Benchmarks of gradient refinement and of the kappa-ball projection, and the cosine problem
from a warm (BCD) against a random start.

- :func:`bench_refine_epoch` times :func:`fenchel_idl.drivers.refine.refine` on the cosine problem
  of section 7.1 against a plain numpy loop that does the same work written inline in this
  process: the same warm-started forward Picard iterations (2.6), the same adjoint
  iterations (6.6) with the same stopping rules, the same Adam update, the same sort-based
  projection, and the same full-data evaluation. The ratio measures the package's overhead
  (validation, records, model objects), not a different algorithm: both loops perform the
  same fixed-point iterations, which the function checks.
- :func:`bench_projection` compares the two projection methods of
  :mod:`fenchel_idl.problem.projection`.
- :func:`cosine_experiment` runs the paper's pure gradient method from a random start on the
  cosine problem and reports train RMSE and RMSE against the noiseless f on a 1000-point
  grid.

- :func:`warm_vs_random` trains the cosine problem file by BCD and its refinement stage, and
  by refinement from a random start, in one process; :func:`cosine_section` writes its
  figures to the results document.
- :func:`bench_parity` times float32 refinement epochs on MNIST (the whole call: the
  per-epoch evaluation, keep_best and the float64 judgement included) against the same
  loop in plain float32 numpy and, when it can be imported, against torchidl (the paper
  authors' PyTorch package), all in one process on one thread.

The first two run inside ``fenchel-idl bench``; the others are the command
``python -m fenchel_idl.apps.bench_refine [--out DIR] [--quick] [--results FILE]`` (also
``fenchel-idl bench-refine``), with ``--parity [--mnist SAMPLES] [--epochs E] [--repeats R]
[--torchidl PATH]`` for the last.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.analysis import pyplot
from fenchel_idl.apps.common import machine_line, problems_dir, rmse, write_section
from fenchel_idl.drivers import (
    RefineOptions,
    RefineResult,
    bcd_options,
    build_problem,
    init_random,
    load_data,
    load_problem,
    refine,
    refine_stage,
    solve_bcd,
)
from fenchel_idl.model import ImplicitModel
from fenchel_idl.problem import datasets, project_inf_ball
from fenchel_idl.validation import check_int

__all__ = ["COSINE_SETTINGS", "TORCHIDL_SETTINGS", "bench_mnist_epoch", "bench_parity",
           "bench_projection", "bench_refine_epoch", "cosine_data", "cosine_experiment",
           "cosine_section", "heldout_cosine", "main", "mnist_section", "parity_section",
           "warm_vs_random"]

Array = NDArray[np.float64]

#: Refinement settings found for the cosine problem (section 7.1), from a random start.
#: Tuned on init seeds 0, 1, 2 (train RMSE 0.565-0.571, grid RMSE 0.233-0.236); kinks of the
#: random ReLU units spread over [-5, 5] thanks to the wide bias (bias_x ~ N(0, 6^2)).
COSINE_SETTINGS: dict[str, Any] = {
    "n": 75, "kappa": 0.5, "init_scale": 2.0, "init_bias_scale": 6.0, "init_seed": 0,
    "options": {"epochs": 3000, "batch_size": 20, "optimizer": "adam", "lr": 1e-2,
                "lr_decay": 0.999, "seed": 0, "blas_threads": 1},
}


def cosine_data(m: int = 200, seed: int = 0) -> tuple[Array, Array, Array, Array]:
    """(U, Y, U_grid, F_grid) of section 7.1: m noisy samples
    (:func:`fenchel_idl.problem.datasets.cosine`) and f on 1000 grid points."""
    ds, g = datasets.cosine(m=m, noise=1.0, seed=seed), datasets.cosine_grid(1000)
    return ds.U, ds.Y, g.U, g.Y


def _cosine_start(s: dict[str, Any]) -> ImplicitModel:
    return init_random(1, 1, s["n"], kappa=s["kappa"], seed=s["init_seed"],
                       scale=s["init_scale"], bias_scale=s.get("init_bias_scale"))


def cosine_experiment(settings: dict[str, Any] | None = None, refit_output: bool = False,
                      init_seed: int | None = None, **option_overrides: Any) -> dict[str, Any]:
    """Pure gradient refinement from a random start on the cosine problem (section 7.1).

    Parameters
    ----------
    settings : dict, optional
        Like :data:`COSINE_SETTINGS` (the default).
    refit_output : bool, default False
        Refit (C, D, bias_y) by (ridge) least squares at the end, as the paper's second block
        update does.
    init_seed : int, optional
        Seed of the random start (default: the settings' ``init_seed``).
    **option_overrides
        Overrides of the refinement options (``epochs=...``, ``lr=...``).

    Returns
    -------
    dict
        ``train_rmse``, ``grid_rmse`` (against the noiseless f on 1000 points),
        ``noise_floor`` (1/sqrt(3)), ``seconds``, ``seconds_per_epoch``, ``epochs`` and the
        settings used.
    """
    s = dict(COSINE_SETTINGS if settings is None else settings)
    if init_seed is not None:
        s["init_seed"] = init_seed
    U, Y, Ug, Fg = cosine_data()
    start = _cosine_start(s)
    opts = RefineOptions(**{**s["options"], **option_overrides, "refit_output": refit_output})
    t0 = time.perf_counter()
    res = refine(start, U, Y, kappa=s["kappa"], options=opts)
    seconds = time.perf_counter() - t0
    return {"train_rmse": rmse(res.model, U, Y), "grid_rmse": rmse(res.model, Ug, Fg),
            "initial_train_rmse": rmse(start, U, Y), "noise_floor": 1.0 / np.sqrt(3.0),
            "seconds": seconds, "epochs": len(res.history),
            "seconds_per_epoch": float(res.history.time[-1] / max(len(res.history), 1)),
            "norm_A": float(np.abs(res.model.A).sum(axis=1).max()),
            "settings": {**s, "options": {**s["options"], **option_overrides},
                         "refit_output": refit_output}}


# -- the plain numpy reference ----------------------------------------------------------------

def _picard(A: Array, b: Array, X: Array, tol: float, max_iter: int) -> tuple[Array, int]:
    """X <- relu(A X + b), stopped as in fenchel_idl.model.equilibrium.picard: the iterate whose
    image was computed last is returned (its residual is that last step)."""
    for it in range(1, max_iter + 1):
        Xn = np.maximum(A @ X + b, 0.0)
        step = np.max(np.abs(Xn - X))
        if step <= tol * max(1.0, np.max(np.abs(Xn))) or it == max_iter:
            return X, it
        X = Xn
    return X, max_iter


def _adjoint(AT: Array, Psi: Array, rhs: Array, tol: float, max_iter: int) -> tuple[Array, int]:
    """V <- Psi o (A^T V + rhs), started and stopped as in fenchel_idl.drivers.gradients."""
    V = Psi * rhs
    for it in range(1, max_iter + 1):
        Vn = Psi * (AT @ V + rhs)
        diff = np.max(np.abs(Vn - V))
        V = Vn
        if diff <= tol * max(1.0, np.max(np.abs(V))):
            return V, it
    return V, max_iter


def _project_sort(A: Array, kappa: float) -> Array:
    """Rows onto the l1 ball, by sorting (the same algorithm, written inline)."""
    absA = np.abs(A)
    out = absA.sum(axis=1) > kappa
    if not out.any():
        return A
    a = absA[out]
    v = -np.sort(-a, axis=1)
    css = np.cumsum(v, axis=1) - kappa
    ks = np.arange(1, a.shape[1] + 1)
    rho = a.shape[1] - np.argmax((v * ks > css)[:, ::-1], axis=1)
    tau = css[np.arange(a.shape[0]), rho - 1] / rho
    A = A.copy()
    A[out] = np.sign(A[out]) * np.maximum(a - tau[:, None], 0.0)
    return A


#: Smallest fixed-point tolerance of float32 epochs, and the fraction of the forward
#: tolerance of the float64 judgement of the start (as in fenchel_idl.drivers.refine).
_F32_TOL = 1e-5
_JUDGE_TOL = 1e-2


def _start_states(P: dict[str, Array], U: Array, dt: np.dtype, judge_tol: float,
                  max_iter: int) -> Array:
    """The states refine starts from: the float64 equilibrium of the start at
    ``judge_tol`` from zero, cast to ``dt``."""
    b = P["B"] @ U + P["bias_x"][:, None]
    X, _ = _picard(P["A"], b, np.zeros(b.shape), judge_tol, max_iter)
    return X.astype(dt)


def _reference(model: ImplicitModel, U: Array, Y: Array, kappa: float, opts: RefineOptions
               ) -> tuple[dict[str, Array], list[int]]:
    """The refinement loop in plain numpy (ReLU, squared loss, Adam, warm starts), in
    ``opts.dtype`` (the projected start is computed in float64, then cast)."""
    dt = np.dtype(opts.dtype)
    P = {k: np.array(getattr(model, k), dtype=float) for k in ("A", "B", "C", "D", "bias_x",
                                                               "bias_y")}
    P["A"] = _project_sort(P["A"], kappa)
    P64, U64 = P, U
    P = {k: v.astype(dt) for k, v in P.items()}
    U, Y = U.astype(dt), Y.astype(dt)
    low = _F32_TOL if dt == np.float32 else 0.0
    judge_tol = _JUDGE_TOL * opts.tol
    opts = opts.replace(tol=max(opts.tol, low), adjoint_tol=max(opts.adjoint_tol, low))
    mom = {k: np.zeros_like(v) for k, v in P.items()}
    vel = {k: np.zeros_like(v) for k, v in P.items()}
    m = U.shape[1]
    rng = np.random.default_rng(opts.seed)
    b1, b2, eps, lr, t = opts.beta1, opts.beta2, opts.eps, opts.lr, 0
    Xs = _start_states(P64, U64, dt, judge_tol, opts.max_iter)
    iterations = []
    for _ in range(opts.epochs):
        order = rng.permutation(m)
        for start in range(0, m, opts.batch_size):
            idx = order[start:start + opts.batch_size]
            Ub, Yb = U[:, idx], Y[:, idx]
            b = P["B"] @ Ub + P["bias_x"][:, None]
            X, it = _picard(P["A"], b, Xs[:, idx], opts.tol, opts.max_iter)
            Xs[:, idx] = X
            Z = P["A"] @ X + b
            G = (P["C"] @ X + P["D"] @ Ub + P["bias_y"][:, None] - Yb) / len(idx)
            V, ait = _adjoint(P["A"].T, (Z > 0).astype(dt), P["C"].T @ G, opts.adjoint_tol,
                              opts.max_iter)
            iterations += [it, ait]
            grads = {"A": V @ X.T, "B": V @ Ub.T, "C": G @ X.T, "D": G @ Ub.T,
                     "bias_x": V.sum(axis=1), "bias_y": G.sum(axis=1)}
            t += 1
            for k, g in grads.items():
                mom[k] = b1 * mom[k] + (1 - b1) * g
                vel[k] = b2 * vel[k] + (1 - b2) * g * g
                P[k] = P[k] - (lr / (1 - b1 ** t)) * mom[k] / (np.sqrt(vel[k] / (1 - b2 ** t))
                                                               + eps)
            P["A"] = _project_sort(P["A"], kappa)
        Xs, _ = _picard(P["A"], P["B"] @ U + P["bias_x"][:, None], Xs, opts.tol, opts.max_iter)
        _ = 0.5 * np.sum((P["C"] @ Xs + P["D"] @ U + P["bias_y"][:, None] - Y) ** 2) / m
        lr *= opts.lr_decay
    return P, iterations


def _one_blas_thread() -> AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def bench_refine_epoch(repeats: int = 3, epochs: int = 1, batch_size: int = 20,
                       dtype: str = "float64", data: tuple[Array, Array] | None = None,
                       n: int | None = None) -> dict[str, Any]:
    """Time refinement epochs on the cosine problem (or ``data`` = (U, Y) with ``n``
    states) against the plain numpy loop, both in ``dtype``.

    Both run ``epochs`` epochs from the same random start (n = 75, kappa = 0.5, ReLU, Adam,
    ``batch_size``), interleaved ``repeats`` times (alternating which goes first); the best
    time of each is kept. The package time is the whole :func:`refine` call (validation,
    initial projection and evaluation, records included). Both loops run with the BLAS
    limited to one thread (``threadpoolctl``, entered once around the whole benchmark): on
    these small products a multithreaded BLAS mostly measures thread contention.

    Returns
    -------
    dict
        ``refine_seconds``, ``numpy_seconds`` (per run of ``epochs`` epochs), ``ratio``
        (refine / numpy; target <= 1.5), ``max_param_difference`` between the two final
        models (they do the same arithmetic, so this is ~1e-12), and the settings.
    """
    repeats = check_int("repeats", repeats, low=1)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    kappa = COSINE_SETTINGS["kappa"]
    if data is None:
        U, Y, _, _ = cosine_data()
        start = _cosine_start(COSINE_SETTINGS)
    else:
        U, Y = data
        start = init_random(U.shape[0], Y.shape[0], check_int("n", n, low=1), kappa=kappa)
    # the reference loop keeps the last epoch: no best-epoch bookkeeping, no backtracking
    opts = RefineOptions(epochs=epochs, batch_size=batch_size, lr=1e-2, seed=0, dtype=dtype,
                         keep_best=False, backtrack=False)
    t_pkg, t_ref = np.inf, np.inf
    res: RefineResult | None = None
    ref: dict[str, Array] = {}
    with _one_blas_thread():
        for r in range(repeats):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                if which == 0:
                    res = refine(start, U, Y, kappa=kappa, options=opts)
                    t_pkg = min(t_pkg, time.perf_counter() - t0)
                else:
                    ref, _ = _reference(start, U, Y, kappa, opts)
                    t_ref = min(t_ref, time.perf_counter() - t0)
    if res is None:  # pragma: no cover - repeats >= 1 is checked
        raise RuntimeError("no benchmark run")
    diff = max(float(np.max(np.abs(getattr(res.model, k) - ref[k]))) for k in ref)
    return {"refine_seconds": t_pkg, "numpy_seconds": t_ref, "ratio": t_pkg / t_ref,
            "max_param_difference": diff, "epochs": epochs, "batch_size": batch_size,
            "n": start.n, "m": U.shape[1], "repeats": repeats, "dtype": dtype}


def bench_mnist_epoch(samples: int | None = None, n: int = 128, batch_size: int = 128,
                      repeats: int = 1) -> dict[str, Any]:
    """One refinement epoch on MNIST (``samples`` training images, all by default; squared
    loss on one-hot labels, ReLU, Adam) at n states, in float64 and in float32, each against
    the plain numpy loop in the same dtype (:func:`bench_refine_epoch`).

    Returns
    -------
    dict
        ``float64`` and ``float32``: the :func:`bench_refine_epoch` results; ``speedup``:
        float64 refine seconds / float32 refine seconds.
    """
    ds = datasets.load_mnist("train", n=samples)
    out: dict[str, Any] = {}
    for dtype in ("float64", "float32"):
        out[dtype] = bench_refine_epoch(repeats=repeats, epochs=1, batch_size=batch_size,
                                        dtype=dtype, data=(ds.U, ds.Y), n=n)
    out["speedup"] = out["float64"]["refine_seconds"] / out["float32"]["refine_seconds"]
    return out


#: torchidl's ImplicitModel defaults that bear on the comparison (its
#: ``implicit_base_model.py``): forward and gradient Picard iterations capped at 300,
#: stopped when ``max |X(t+1) - X(t)| < 3e-6`` (absolute), each from X = 0.
TORCHIDL_SETTINGS = {"mitr": 300, "grad_mitr": 300, "tol": 3e-6, "grad_tol": 3e-6}


def _import_torchidl(path: str | Path | None) -> tuple[Any, Any] | None:
    """(torch, torchidl.ImplicitModel), with ``path`` (a torchidl checkout's ``src`` or the
    folder holding the package) put first on ``sys.path``; None when either is missing."""
    if path is not None:
        sys.path.insert(0, str(path))
    try:
        import torch
        from torchidl import ImplicitModel as model_class  # optional, on the user's path
    except (ImportError, AttributeError):
        return None
    return torch, model_class


def _torchidl_seconds(mods: tuple[Any, Any], U: Array, Y: Array, n: int, kappa: float,
                      epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Seconds of ``epochs`` epochs of torchidl's ImplicitModel(p, q, n, kappa) with its
    default solver settings, trained by torch's Adam at ``lr`` on the squared loss
    ``0.5 ||Yhat - Y||^2 / batch`` (refine's) in float32, one torch thread, shuffled
    mini-batches; the data conversion is not timed."""
    torch, TorchImplicitModel = mods
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = TorchImplicitModel(U.shape[0], Y.shape[0], n, kappa=kappa, **TORCHIDL_SETTINGS)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        Ut = torch.tensor(U.T, dtype=torch.float32)
        Yt = torch.tensor(Y.T, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(Ut.shape[0], generator=gen)
            for start in range(0, Ut.shape[0], batch_size):
                idx = order[start:start + batch_size]
                loss = 0.5 * ((model(Ut[idx]) - Yt[idx]) ** 2).sum() / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def bench_parity(samples: int | None = None, epochs: int = 1, n: int = 128,
                 batch_size: int = 64, lr: float = 1e-3, repeats: int = 1,
                 torchidl: str | Path | None = None) -> dict[str, Any]:
    """Refinement epochs on MNIST in float32 against a plain float32 numpy loop and, when
    it can be imported, torchidl, all in this process with one BLAS/torch thread.

    ``refine`` runs with its defaults (the per-epoch evaluation on all samples, keep_best,
    backtracking, the float64 judgement of the start and of the result), Adam at ``lr``,
    ``batch_size``, float32, from :func:`fenchel_idl.drivers.init_random` (kappa = 0.5,
    ReLU), on the squared loss of one-hot labels; its time is the whole call divided by
    ``epochs``. The numpy loop is the same algorithm inline (:func:`bench_refine_epoch`'s
    reference: warm starts, adjoint, Adam, projection, per-epoch evaluation; no keep_best,
    no judgement). torchidl trains its ImplicitModel(784, 10, n, kappa=0.5) with
    :data:`TORCHIDL_SETTINGS` (cold starts, no biases, A scaled into the ball) by torch's
    Adam at the same ``lr`` and batch size. The three are interleaved ``repeats`` times and
    the best time of each is kept.

    Parameters
    ----------
    torchidl : path, optional
        Put first on ``sys.path`` before importing ``torchidl`` (a checkout's ``src``).

    Returns
    -------
    dict
        ``refine_epoch_seconds``, ``numpy_epoch_seconds``, ``torchidl_epoch_seconds``
        (None when torchidl is not importable), ``ratio_numpy`` (refine / numpy),
        ``ratio_torchidl`` (refine / torchidl or None), refine's mean forward and adjoint
        iterations per batch, its final objective, and the settings.
    """
    epochs = check_int("epochs", epochs, low=1)
    repeats = check_int("repeats", repeats, low=1)
    ds = datasets.load_mnist("train", n=samples)
    U, Y = ds.U, ds.Y
    kappa = 0.5
    start = init_random(U.shape[0], Y.shape[0], check_int("n", n, low=1), kappa=kappa)
    opts = RefineOptions(epochs=epochs, batch_size=check_int("batch_size", batch_size, low=1),
                         lr=lr, seed=0, dtype="float32")
    mods = _import_torchidl(torchidl)
    best = {"refine": np.inf, "numpy": np.inf, "torchidl": np.inf}
    res: RefineResult | None = None
    with _one_blas_thread():
        for r in range(repeats):
            for which in (("refine", "numpy", "torchidl")[::1 if r % 2 == 0 else -1]):
                t0 = time.perf_counter()
                if which == "refine":
                    res = refine(start, U, Y, kappa=kappa, options=opts)
                elif which == "numpy":
                    _reference(start, U, Y, kappa, opts)
                if which != "torchidl":
                    best[which] = min(best[which], time.perf_counter() - t0)
                elif mods is not None:
                    best[which] = min(best[which], _torchidl_seconds(
                        mods, U, Y, n, kappa, epochs, batch_size, lr, seed=0))
    if res is None:  # pragma: no cover - repeats >= 1 is checked
        raise RuntimeError("no benchmark run")
    per = {k: (v / epochs if np.isfinite(v) else None) for k, v in best.items()}
    h = res.history
    return {"refine_epoch_seconds": per["refine"], "numpy_epoch_seconds": per["numpy"],
            "torchidl_epoch_seconds": per["torchidl"],
            "ratio_numpy": best["refine"] / best["numpy"],
            "ratio_torchidl": None if mods is None else best["refine"] / best["torchidl"],
            "forward_iterations": float(np.mean(h.column("forward_iterations"))),
            "adjoint_iterations": float(np.mean(h.column("adjoint_iterations"))),
            "final_objective": h.final_objective, "initial_objective": h.initial_objective,
            "m": U.shape[1], "n": n, "batch_size": batch_size, "epochs": epochs, "lr": lr,
            "repeats": repeats}


def parity_section(res: dict[str, Any]) -> str:
    """The lines of a :func:`bench_parity` result."""
    t = res["torchidl_epoch_seconds"]
    lines = [(f"MNIST refinement, float32, m = {res['m']}, n = {res['n']}, batch "
             f"{res['batch_size']}, Adam lr {res['lr']:g}, {res['epochs']} epoch(s), one "
             "thread, seconds per epoch (whole call / epochs)"),
             "| loop | s / epoch | refine / loop |", "|---|---|---|",
             (f"| refine (defaults: evaluation, keep_best, float64 judgement) | "
             f"{res['refine_epoch_seconds']:.2f} | 1.00 |"),
             (f"| plain float32 numpy loop | {res['numpy_epoch_seconds']:.2f} | "
             f"{res['ratio_numpy']:.2f} |")]
    if t is None:
        lines.append("| torchidl | not importable (--torchidl PATH) | - |")
    else:
        lines.append(f"| torchidl ImplicitModel | {t:.2f} | {res['ratio_torchidl']:.2f} |")
    lines.append(f"refine: {res['forward_iterations']:.1f} forward and "
                 f"{res['adjoint_iterations']:.1f} adjoint iterations per batch; objective "
                 f"{res['initial_objective']:.4f} -> {res['final_objective']:.4f}")
    return "\n".join(lines)


def bench_projection(n: int = 75, kappa: float = 0.5, repeats: int = 20,
                     seed: int = 0) -> dict[str, Any]:
    """Time the sort and bisection projections of an (n, n) Gaussian matrix.

    Returns
    -------
    dict
        ``sort_seconds``, ``bisection_seconds`` (best of ``repeats``), ``ratio``
        (bisection / sort) and ``max_difference`` between the two results.
    """
    A = np.random.default_rng(seed).standard_normal((n, n))
    times = {}
    out = {}
    for method in ("sort", "bisection"):
        best = np.inf
        for _ in range(check_int("repeats", repeats, low=1)):
            t0 = time.perf_counter()
            out[method] = project_inf_ball(A, kappa, method=method)
            best = min(best, time.perf_counter() - t0)
        times[method] = best
    return {"sort_seconds": times["sort"], "bisection_seconds": times["bisection"],
            "ratio": times["bisection"] / times["sort"],
            "max_difference": float(np.max(np.abs(out["sort"] - out["bisection"]))),
            "n": n, "kappa": kappa}


# -- warm start (BCD, then refinement) against the random start --------------------------------

def heldout_cosine(spec: Any, m: int, heldout: int = 2000) -> tuple[Array, Array]:
    """(U, Y) of ``heldout`` fresh samples of a cosine problem file's draw: samples m, m + 1,
    ... of :func:`fenchel_idl.problem.datasets.cosine` with the file's noise and seed."""
    fresh = datasets.cosine(m=m + heldout, noise=spec.data.get("noise", 1.0),
                            seed=spec.data.get("seed", 0))
    return fresh.U[:, m:], fresh.Y[:, m:]


#: ``quick`` settings of :func:`warm_vs_random`: sweeps and epochs of a pipeline check.
_QUICK = {"max_sweeps": 2, "epochs": 20}


def warm_vs_random(out: str | Path | None = None, path: str | Path | None = None,
                   quick: bool = False) -> dict[str, Any]:
    """BCD followed by refinement, as ``problems/cosine_regression.toml`` (or ``path``)
    states them, against refinement from a random start with :data:`COSINE_SETTINGS`, on
    that file's data, timed in the same process. ``quick`` cuts BCD to 2 sweeps and both
    refinements to 20 epochs.

    Returns the train RMSE, the RMSE against the noiseless f on 1000 points and the test
    RMSE on 2000 fresh samples of the random-feature start (``start_*``), the BCD model
    (``bcd_*``), BCD then refinement (``warm_*``) and refinement from a random start
    (``random_*``); the two curves (wall time in s, train RMSE) and, for each RMSE level
    reached by both, the time each needed. With ``out`` the curves are plotted to
    ``out/warm_vs_random.png``.
    """
    spec = load_problem(problems_dir() / "cosine_regression.toml" if path is None else path)
    ds, _ = load_data(spec)
    grid = datasets.cosine_grid(1000)
    U_test, Y_test = heldout_cosine(spec, ds.m)
    bcd, warm_model, warm, t_bcd = _warm_run(spec, ds, quick)
    s = COSINE_SETTINGS
    options = {**s["options"], **({"epochs": _QUICK["epochs"]} if quick else {})}
    t0 = time.perf_counter()
    rr = refine(_cosine_start(s), ds.U, ds.Y, kappa=s["kappa"], options=RefineOptions(**options))
    t_rand = time.perf_counter() - t0
    rand = ([float(v) for v in rr.history.time],
            [float(np.sqrt(2.0 * v)) for v in rr.history.loss])
    models = {"start": bcd.start_model, "bcd": bcd.model, "warm": warm_model,
              "random": rr.model}
    sets = {"train_rmse": (ds.U, ds.Y), "grid_rmse": (grid.U, grid.Y),
            "test_rmse": (U_test, Y_test)}
    res: dict[str, Any] = {f"{name}_{what}": rmse(model, U, Y) for name, model in models.items()
                           for what, (U, Y) in sets.items()}
    res.update({"path": spec.path, "n": int(spec.model["n"]), "m": ds.m, "quick": quick,
                "bcd_sweeps": bcd.n_sweeps, "bcd_seconds": t_bcd, "warm_seconds": warm[0][-1],
                "random_seconds": t_rand, "random_epochs": len(rr.history),
                "levels": _levels(warm, rand), "curves": {"warm": warm, "random": rand}})
    if out is not None:
        _plot_warm_vs_random(warm, rand, t_bcd, Path(out) / "warm_vs_random.png")
    return res


def _warm_run(spec: Any, ds: Any, quick: bool) -> tuple[Any, ImplicitModel, tuple, float]:
    """The problem file's BCD, then its [refine] stage as solve_bcd runs it (its defaults if
    the file has none); returns (BCD result, refined model, curve, BCD seconds)."""
    sd_y = float(np.std(ds.Y))
    problem = build_problem(spec, ds)
    opts = bcd_options(spec, refine=False)
    stage = bcd_options(spec)["refine"] or True
    if quick:
        opts["max_sweeps"] = _QUICK["max_sweeps"]
        stage = {**(stage if isinstance(stage, dict) else {}), "epochs": _QUICK["epochs"]}
    times: list[float] = []
    losses: list[float] = []
    t0 = time.perf_counter()

    def on_record(rec: Any) -> None:
        if rec.block == "LS":
            times.append(time.perf_counter() - t0)
            losses.append(float(np.sqrt(2.0 * rec.loss)) * sd_y)  # standardized units

    bcd = solve_bcd(problem, **opts, callback=on_record)
    t_bcd = time.perf_counter() - t0
    model, hist = refine_stage(problem, bcd.model, stage, spec.seed, False)
    times += [t_bcd + float(v) for v in hist.time]
    losses += [float(np.sqrt(2.0 * v)) for v in hist.loss]
    return bcd, model, (times, losses), t_bcd


def _levels(warm: tuple, rand: tuple) -> dict[float, tuple[float | None, float | None]]:
    """For each train RMSE level, the first time each curve reached it (None: never)."""
    def first_time(ts: list[float], rs: list[float], level: float) -> float | None:
        return next((t for t, r in zip(ts, rs) if r <= level), None)

    return {level: (first_time(*warm, level), first_time(*rand, level))
            for level in (0.60, 0.59, 0.58, 0.57, 0.565, 0.56)}


def _plot_warm_vs_random(warm: tuple, rand: tuple, t_bcd: float, path: Path) -> None:
    """Both curves against wall time: raw per-epoch values (faint) and the best so far
    (what keep_best returns)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (ts, rs), colour, label in ((warm, "tab:blue", "BCD (line search), then refinement"),
                                    (rand, "tab:orange", "refinement from a random start")):
        ax.plot(ts, rs, "-", color=colour, lw=0.5, alpha=0.3)
        ax.plot(ts, np.minimum.accumulate(rs), "-", color=colour, lw=2,
                label=label + " (best so far)")
    ax.axvline(t_bcd, color="tab:blue", ls=":", lw=1, label="end of BCD")
    ax.axhline(1 / np.sqrt(3), color="grey", ls="--", lw=1, label="noise std 1/sqrt(3)")
    ax.set_xscale("log")
    ax.set_ylim(0.5, max(0.8, min(max(rand[1]), 1.2)))
    ax.set_xlabel("wall time (s, same process)")
    ax.set_ylabel("train RMSE")
    ax.set_title("cosine problem (n = 75): warm start against random start")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seconds(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f}"


def cosine_section(res: dict[str, Any], command: str) -> str:
    """The results-document section of a :func:`warm_vs_random` result."""
    gain = 1.0 - res["bcd_train_rmse"] / res["start_train_rmse"]
    lines = ["## Cosine problem (section 7.1): BCD, then refinement, against a random start", "",
             (f"Command: `{command}`; problem file `{Path(res['path']).name}` (n = {res['n']}, "
             f"m = {res['m']}). {machine_line()}"), ""]
    if res["quick"]:
        lines += [("**Quick mode: 2 sweeps and 20 epochs. The numbers check that the pipeline "
                  "runs; they are not results.**"), ""]
    lines += [("| model | train RMSE | test RMSE (2000 fresh samples) | RMSE against f "
              "(1000 points) | wall time |"), "|---|---|---|---|---|"]
    rows = (("start", "random-feature start (A = 0, optimal readout)", None),
            ("bcd", (f"BCD alone ({res['bcd_sweeps']} sweeps, {100 * gain:.1f}% below its "
                    "start)"), res["bcd_seconds"]),
            ("warm", "BCD, then the file's refinement", res["warm_seconds"]),
            ("random", (f"refinement from a random start ({res['random_epochs']} epochs, "
                       "COSINE_SETTINGS)"), res["random_seconds"]))
    for key, label, secs in rows:
        lines.append(f"| {label} | {res[key + '_train_rmse']:.3f} | "
                     f"{res[key + '_test_rmse']:.3f} | {res[key + '_grid_rmse']:.3f} | "
                     + ("-" if secs is None else f"{secs:.1f} s") + " |")
    lines += ["", ("The noise alone scores 0.577 (std 1/sqrt(3)); the paper reports 0.56 for "
              "its implicit model and 0.65 for its network."), "",
              "| train RMSE reached | BCD, then refinement (s) | random start (s) |",
              "|---|---|---|"]
    lines += [f"| {level:g} | {_seconds(tw)} | {_seconds(tr)} |"
              for level, (tw, tr) in res["levels"].items()]
    return "\n".join(lines)


def mnist_section(res: dict[str, Any]) -> str:
    """The lines of a :func:`bench_mnist_epoch` result: epoch seconds of refine and of the
    plain numpy loop in each dtype, their ratio, and the float32 speed-up."""
    r64 = res["float64"]
    lines = [f"MNIST refinement epoch, m = {r64['m']}, n = {r64['n']}, batch {r64['batch_size']}",
             "| dtype | refine (s) | plain numpy loop (s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {d} | {res[d]['refine_seconds']:.2f} | {res[d]['numpy_seconds']:.2f} | "
              f"{res[d]['ratio']:.2f} |" for d in ("float64", "float32")]
    lines.append(f"float32 speed-up of refine: {res['speedup']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl bench-refine`` (also ``python -m fenchel_idl.apps.bench_refine``): the
    warm-against-random comparison; ``prog`` names the command in its help and section."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m fenchel_idl.apps.bench_refine",
        description="The cosine problem file by BCD and refinement against refinement from a "
                    "random start, in one process.")
    parser.add_argument("out", nargs="?", default=None,
                        help="directory for warm_vs_random.png")
    parser.add_argument("--problem", default=None,
                        help="the problem file (default: problems/cosine_regression.toml)")
    parser.add_argument("--quick", action="store_true", help="2 sweeps and 20 epochs")
    parser.add_argument("--results", default=None,
                        help="results document whose 'cosine' section to rewrite")
    parser.add_argument("--mnist", type=int, default=None, metavar="SAMPLES",
                        help="only time one MNIST refinement epoch on SAMPLES images (0: all), "
                             "float64 and float32, against the plain numpy loop")
    parser.add_argument("--parity", action="store_true",
                        help="time float32 refinement epochs on MNIST (--mnist SAMPLES, default "
                             "all) against a plain float32 numpy loop and torchidl")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of --parity")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved runs of --parity; the best time of each is kept")
    parser.add_argument("--torchidl", default=None, metavar="PATH",
                        help="with --parity: put PATH (a torchidl checkout's src) on sys.path; "
                             "torchidl is skipped when it cannot be imported")
    args = parser.parse_args(argv)
    if args.parity:
        print(parity_section(bench_parity(samples=args.mnist or None, epochs=args.epochs,
                                          repeats=args.repeats, torchidl=args.torchidl)))
        return 0
    if args.mnist is not None:
        print(mnist_section(bench_mnist_epoch(samples=args.mnist or None)))
        return 0
    res = warm_vs_random(args.out, args.problem, quick=args.quick)
    command = f"{parser.prog} " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    text = cosine_section(res, command.strip())
    print(text)
    if args.results is not None:
        print(f"wrote {write_section('cosine', text, args.results)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
