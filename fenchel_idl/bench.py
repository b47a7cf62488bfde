"""Benchmarks: every figure is a ratio against a baseline run in the same process.

Run ``python -m fenchel_idl.bench`` (or ``fenchel-idl bench``); ``--quick`` keeps the sizes
small. Absolute times on shared machines mean little; the ratios are what to compare.

- forward equilibrium: ``model.equilibrium`` (plain and Anderson) against a plain numpy
  Picard loop at the same tolerance;
- one BCD sweep against a naive formulation: one CVXPY problem per block, rebuilt every
  sweep, default solvers; and the per-block times;
- sweep time against m and n (table, log-log plot with the fitted slope);
- one refinement epoch against a plain numpy loop; the two l1-ball projections.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cvxpy as cp
import numpy as np

from .model import ImplicitModel

__all__ = ["run_benchmarks", "bench_equilibrium", "bench_sweep", "bench_scaling"]


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
        model.structure  # analysed once per model (cached), as in use
        t_np, X_ref = _best(lambda: _numpy_picard(model.A, b, 1e-9))
        t_pf, (X, info) = _best(lambda: model.equilibrium(U, tol=1e-9))
        t_aa, (Xa, info_a) = _best(lambda: model.equilibrium(U, tol=1e-9, method="anderson"))
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
    from . import datasets
    from .training import TrainingProblem

    if kind == "cosine":
        ds = datasets.cosine(m=m or 200, seed=0)
        return TrainingProblem(ds.U, ds.Y, n=n)
    ds = datasets.digits()
    if m is not None:
        ds = ds.subset(np.arange(min(m, ds.m)))
    # squared loss on one-hot targets keeps the naive baseline a QP, like the cosine one
    return TrainingProblem(ds.U, ds.Y, n=n)


def bench_sweep(kind: str = "cosine", n: int = 75, m: int | None = None, sweeps: int = 3,
                naive: bool = True) -> dict:
    """Seconds per BCD sweep (after the first) and per block, against the naive sweep."""
    from .bcd import solve_bcd

    problem = _problem(kind, n, m)
    t = time.perf_counter()
    res = solve_bcd(problem, max_sweeps=sweeps + 1, seed=0)
    total = time.perf_counter() - t
    later = [r for r in res.history if r.sweep >= 1]
    per_block = {k: float(np.mean([r.time for r in later if r.block == k]))
                 for k in ("X", "AB", "CD")}
    sweep_time = float(sum(per_block.values()))
    first = float(sum(r.time for r in res.history if r.sweep == 0))
    out = {"problem": kind, "n": n, "m": problem.m, "sweep_s": sweep_time, "first_sweep_s": first,
           "per_block_s": per_block, "total_s": total}
    if naive:
        s = res.history  # state after the run is not exposed; start from the trained model
        del s
        A, B, b, C, D, d = problem.from_user_model(res.model)
        X, _ = res.model.equilibrium(problem.U_raw)
        nv = _naive_sweep(problem, A, B, b, C, D, d, X, problem.lam0)
        out["naive_sweep_s"] = nv["total"]
        out["naive_per_block_s"] = nv
        out["speedup"] = nv["total"] / sweep_time
    return out


def bench_scaling(quick: bool = False, out: str | None = None) -> dict:
    """Sweep time against m (n fixed) and against n (m fixed), with log-log slopes."""
    ms = [200, 800, 3200] if quick else [200, 1000, 5000, 20000]
    ns = [20, 50] if quick else [20, 50, 100, 200]
    by_m = [bench_sweep("cosine", 20, m, sweeps=2, naive=False)["sweep_s"] for m in ms]
    by_n = [bench_sweep("cosine", n, 200, sweeps=2, naive=False)["sweep_s"] for n in ns]
    slope_m = float(np.polyfit(np.log(ms), np.log(by_m), 1)[0])
    slope_n = float(np.polyfit(np.log(ns), np.log(by_n), 1)[0])
    res = {"m": ms, "sweep_by_m": by_m, "slope_m": slope_m, "n": ns, "sweep_by_n": by_n,
           "slope_n": slope_n}
    if out is not None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].loglog(ms, by_m, "o-")
        axes[0].set_title(f"sweep time vs m (n = 20): slope {slope_m:.2f}")
        axes[0].set_xlabel("m")
        axes[0].set_ylabel("seconds per sweep")
        axes[1].loglog(ns, by_n, "o-")
        axes[1].set_title(f"sweep time vs n (m = 200): slope {slope_n:.2f}")
        axes[1].set_xlabel("n")
        fig.tight_layout()
        Path(out).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(out) / "scaling.png", dpi=110)
        plt.close(fig)
    return res


def run_benchmarks(quick: bool = False, out: str | None = None) -> dict:
    """Run every benchmark and print the ratios."""
    from ._bench_refine import bench_projection, bench_refine_epoch

    results: dict = {}
    print("== forward equilibrium: time / plain numpy Picard loop (same tolerance 1e-9)")
    rows = bench_equilibrium(quick)
    results["equilibrium"] = rows
    for r in rows:
        print(f"  n={r['n']:4d} m={r['m']:6d}  picard x{r['ratio_picard']:.2f}  "
              f"anderson x{r['ratio_anderson']:.2f}  (Picard {r['picard_iters']} it, Anderson "
              f"{r['anderson_iters']} it) {r.get('note', '')}")
    print("== one BCD sweep against the naive formulation (CVXPY, rebuilt, default solvers)")
    cases = [("cosine", 75, None)] + ([] if quick else [("digits", 64, None)])
    for kind, n, m in cases:
        r = bench_sweep(kind, n, m, naive=True)
        results[f"sweep_{kind}"] = r
        print(f"  {kind}: n={r['n']} m={r['m']}: sweep {r['sweep_s']:.3f} s (first "
              f"{r['first_sweep_s']:.2f} s), naive {r['naive_sweep_s']:.2f} s: speed-up "
              f"x{r['speedup']:.1f}")
        pb = r["per_block_s"]
        nb = r["naive_per_block_s"]
        print("    per block (s):  " + "  ".join(f"{k} {pb[k]:.3f} (naive {nb[k]:.2f})"
                                                 for k in ("X", "AB", "CD")))
    print("== scaling of the sweep time")
    sc = bench_scaling(quick, out)
    results["scaling"] = sc
    print("  m:     " + "  ".join(f"{m}: {t:.3f}s" for m, t in zip(sc["m"], sc["sweep_by_m"]))
          + f"   log-log slope {sc['slope_m']:.2f}")
    print("  n:     " + "  ".join(f"{n}: {t:.3f}s" for n, t in zip(sc["n"], sc["sweep_by_n"]))
          + f"   log-log slope {sc['slope_n']:.2f}")
    print("== refinement epoch against a plain numpy loop; projections")
    rb = bench_refine_epoch(repeats=2 if quick else 3)
    results["refine_epoch"] = rb
    print(f"  refine epoch / numpy loop: x{rb.get('ratio', float('nan')):.2f}")
    pj = bench_projection()
    results["projection"] = pj
    print("  projection: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in pj.items()))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fenchel_idl.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run_benchmarks(args.quick, args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
