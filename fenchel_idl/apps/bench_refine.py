"""Benchmarks of gradient refinement and of the kappa-ball projection (private).

- :func:`bench_refine_epoch` times :func:`fenchel_idl.drivers.refine.refine` on the cosine problem
  of section 7.1 against a plain numpy loop that does the same work written inline in this
  process: the same warm-started forward Picard iterations (2.6), the same adjoint
  iterations (6.6) with the same stopping rules, the same Adam update, the same sort-based
  projection, and the same full-data evaluation. The ratio measures the package's overhead
  (validation, records, model objects), not a different algorithm: both loops perform the
  same fixed-point iterations, which the function checks.
- :func:`bench_projection` compares the two projection methods of
  :mod:`fenchel_idl.drivers.projection`.
- :func:`cosine_experiment` runs the paper's pure gradient method from a random start on the
  cosine problem and reports train RMSE and RMSE against the noiseless f on a 1000-point
  grid.

These are wired into ``python -m fenchel_idl.apps.bench`` elsewhere; no CLI here.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.validation import check_int
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.drivers.projection import project_inf_ball
from fenchel_idl.drivers.refine import RefineOptions, RefineResult, init_random, refine

__all__ = ["COSINE_SETTINGS", "bench_projection", "bench_refine_epoch", "cosine_data",
           "cosine_experiment"]

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
    from fenchel_idl.problem.datasets import cosine, cosine_grid

    ds, g = cosine(m=m, noise=1.0, seed=seed), cosine_grid(1000)
    return ds.U, ds.Y, g.U, g.Y


def _cosine_start(s: dict[str, Any]) -> ImplicitModel:
    return init_random(1, 1, s["n"], kappa=s["kappa"], seed=s["init_seed"],
                       scale=s["init_scale"], bias_scale=s.get("init_bias_scale"))


def _rmse(model: ImplicitModel, U: Array, Y: Array) -> float:
    return float(np.sqrt(np.mean((model.predict(U) - Y) ** 2)))


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
    return {"train_rmse": _rmse(res.model, U, Y), "grid_rmse": _rmse(res.model, Ug, Fg),
            "initial_train_rmse": _rmse(start, U, Y), "noise_floor": 1.0 / np.sqrt(3.0),
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


def _reference(model: ImplicitModel, U: Array, Y: Array, kappa: float, opts: RefineOptions
               ) -> tuple[dict[str, Array], list[int]]:
    """The refinement loop in plain numpy (ReLU, squared loss, Adam, warm starts)."""
    P = {k: np.array(getattr(model, k), dtype=float) for k in ("A", "B", "C", "D", "bias_x",
                                                               "bias_y")}
    P["A"] = _project_sort(P["A"], kappa)
    mom = {k: np.zeros_like(v) for k, v in P.items()}
    vel = {k: np.zeros_like(v) for k, v in P.items()}
    m = U.shape[1]
    rng = np.random.default_rng(opts.seed)
    b1, b2, eps, lr, t = opts.beta1, opts.beta2, opts.eps, opts.lr, 0
    Xs, _ = _picard(P["A"], P["B"] @ U + P["bias_x"][:, None], np.zeros((model.n, m)),
                    opts.tol, opts.max_iter)
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
            V, ait = _adjoint(P["A"].T, (Z > 0).astype(float), P["C"].T @ G, opts.adjoint_tol,
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


def bench_refine_epoch(repeats: int = 3, epochs: int = 1, batch_size: int = 20) -> dict[str, Any]:
    """Time refinement epochs on the cosine problem against the plain numpy loop.

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
    U, Y, _, _ = cosine_data()
    kappa = COSINE_SETTINGS["kappa"]
    start = _cosine_start(COSINE_SETTINGS)
    opts = RefineOptions(epochs=epochs, batch_size=batch_size, lr=1e-2, seed=0)
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
            "n": COSINE_SETTINGS["n"], "m": U.shape[1], "repeats": repeats}


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
def warm_vs_random(out: str | None = None, path: str | None = None) -> dict[str, Any]:
    """BCD followed by refinement, as ``problems/cosine_regression.toml`` (the README's main
    job; or ``path``) states them, against refinement from a random start with
    :data:`COSINE_SETTINGS`, on that file's data, timed in the same process.

    Returns the two curves (wall time in s, train RMSE) and, for each RMSE level reached by
    both, the time each needed; with ``out`` the curves are plotted to
    ``out/warm_vs_random.png``.
    """
    from fenchel_idl.drivers.bcd import refine_stage, solve_bcd
    from fenchel_idl.problem.datasets import cosine_grid
    from fenchel_idl.apps.experiments import _problems_dir
    from fenchel_idl.drivers.problem_file import load_data, bcd_options, build_problem, load_problem

    spec = load_problem(_problems_dir(None) / "cosine_regression.toml" if path is None
                        else path)
    ds, _ = load_data(spec)
    U, Y = ds.U, ds.Y
    grid = cosine_grid(1000)
    Ug, Fg = grid.U, grid.Y
    s = COSINE_SETTINGS
    sd_y = float(np.std(Y))
    problem = build_problem(spec, ds)
    warm_t, warm_r = [], []
    t0 = time.perf_counter()

    def on_record(rec):
        if rec.block == "LS":
            warm_t.append(time.perf_counter() - t0)
            warm_r.append(float(np.sqrt(2.0 * rec.loss)) * sd_y)  # standardized units

    bcd = solve_bcd(problem, **bcd_options(spec, refine=False), callback=on_record)
    t_bcd = time.perf_counter() - t0
    bcd_rmse = _rmse(bcd.model, U, Y)
    # the file's [refine] stage, as solve_bcd runs it (its defaults if the file has none)
    warm_model, warm_hist = refine_stage(problem, bcd.model,
                                          bcd_options(spec)["refine"] or True, spec.seed, False)
    warm_t += [t_bcd + float(v) for v in warm_hist.time]
    warm_r += [float(np.sqrt(2.0 * v)) for v in warm_hist.loss]
    # random: the paper's pure gradient method with the tuned settings
    t1 = time.perf_counter()
    rr = refine(_cosine_start(s), U, Y, kappa=s["kappa"], options=RefineOptions(**s["options"]))
    rand_t = [float(v) for v in rr.history.time]
    rand_r = [float(np.sqrt(2.0 * v)) for v in rr.history.loss]
    t_rand = time.perf_counter() - t1

    def first_time(ts, rs, level):
        return next((t for t, r in zip(ts, rs) if r <= level), None)

    levels = {}
    for level in (0.60, 0.59, 0.58, 0.57, 0.565, 0.56):
        tw, tr = first_time(warm_t, warm_r, level), first_time(rand_t, rand_r, level)
        levels[level] = (tw, tr)
    res = {"bcd_seconds": t_bcd, "bcd_train_rmse": bcd_rmse,
           "bcd_grid_rmse": _rmse(bcd.model, Ug, Fg),
           "warm_train_rmse": _rmse(warm_model, U, Y), "warm_grid_rmse": _rmse(warm_model, Ug, Fg),
           "warm_seconds": warm_t[-1], "random_train_rmse": _rmse(rr.model, U, Y),
           "random_grid_rmse": _rmse(rr.model, Ug, Fg), "random_seconds": t_rand,
           "levels": levels, "curves": {"warm": (warm_t, warm_r), "random": (rand_t, rand_r)}}
    if out is not None:
        from pathlib import Path

        from fenchel_idl.analysis.plots import _plt

        plt = _plt()
        fig, ax = plt.subplots(figsize=(7, 4.2))
        # raw per-epoch values (faint) and the best so far (what keep_best returns)
        for (ts, rs), colour, label in (((warm_t, warm_r), "tab:blue",
                                         "BCD (line search), then refinement"),
                                        ((rand_t, rand_r), "tab:orange",
                                         "refinement from a random start")):
            ax.plot(ts, rs, "-", color=colour, lw=0.5, alpha=0.3)
            ax.plot(ts, np.minimum.accumulate(rs), "-", color=colour, lw=2,
                    label=label + " (best so far)")
        ax.axvline(t_bcd, color="tab:blue", ls=":", lw=1, label="end of BCD")
        ax.axhline(1 / np.sqrt(3), color="grey", ls="--", lw=1, label="noise std 1/sqrt(3)")
        ax.set_xscale("log")
        ax.set_ylim(0.5, max(0.8, min(max(rand_r), 1.2)))
        ax.set_xlabel("wall time (s, same process)")
        ax.set_ylabel("train RMSE")
        ax.set_title("cosine problem (n = 75): warm start against random start")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(out).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(out) / "warm_vs_random.png", dpi=110)
        plt.close(fig)
    return res


if __name__ == "__main__":  # python -m fenchel_idl.apps.bench_refine [OUT]
    import sys

    r = warm_vs_random(sys.argv[1] if len(sys.argv) > 1 else None)
    r.pop("curves")
    for k, v in r.items():
        print(f"{k}: {v}")
