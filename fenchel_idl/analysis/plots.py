"""Plots of training runs (matplotlib, imported lazily with the Agg backend)."""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_convergence", "plot_fit", "pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported on first use with the non-interactive Agg backend.

    The import is lazy so that the package loads without matplotlib's start-up cost; the
    Agg backend writes files and never opens a window (``force=False`` keeps a backend the
    caller chose).

    Raises
    ------
    ImportError
        matplotlib is not installed (it says what to install).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise ImportError("plots need matplotlib: pip install matplotlib") from exc
    return plt


_plt = pyplot  # the applications' old name; they move to fenchel_idl.analysis.pyplot


def _save_figure(fig: Any, path: str | Path, *, make_parents: bool = False) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG, 110 dpi), close it and return the path."""
    fig.tight_layout()
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_convergence(result: Any, path: str | Path, title: str = "") -> Path:
    """Convergence of a BCD run, saved as PNG.

    With the line-search schedule (a ``"LS"`` record per sweep): the true training
    objective per sweep (at the equilibrium, with the optimal readout), and the accepted
    step with lam. Otherwise: the relaxed objective, loss and divergence over block updates
    with the lam stages marked, the true loss at each restart, and the mean lam.
    """
    plt = pyplot()
    hist = result.history
    ls = [r for r in hist if r.block == "LS"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if hist and hasattr(hist[0], "surrogate"):
        _plot_minibatch(result, axes, hist)
    elif ls:
        ax = axes[0]
        sw = [r.sweep + 1 for r in ls]
        # a sweep whose readout-weighted search found no step has a second (uniform) search:
        # its last search gives the sweep's objective and lam
        last = list({r.sweep: r for r in ls}.values())
        sl = [r.sweep + 1 for r in last]
        ax.plot(sl, [r.objective for r in last], "k.-", lw=1, ms=3,
                label="true objective (equilibrium, optimal readout)")
        ax.axhline(result.certificate.true_loss, color="tab:red", ls="--",
                   label=f"final: {result.certificate.true_loss:.4g} "
                         f"({_fmt(result.certificate.train_metric)}; start "
                         f"{_fmt(result.start_metric)})")
        ax.set_xlabel("sweep")
        ax.set_title("true training objective (never increases)")
        ax.legend(fontsize=8)
        ax = axes[1]
        ax.semilogy(sw, [max(r.step, 1e-3) for r in ls], ".", color="tab:blue",
                    label="step t of each search (1e-3: none)")
        ax.semilogy(sl, [r.lam_mean for r in last], "-", color="tab:purple", label="mean lam")
        ax.set_xlabel("sweep")
        ax.set_title("line search: step along the (A, B) update, and lam")
        ax.legend(fontsize=8)
    else:
        _plot_relaxed(result, axes, hist)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def _plot_minibatch(result: Any, axes: Any, hist: list) -> None:
    """Mini-batch BCD: the majorizer H over block updates (for the stochastic steps, each
    batch's true objective at its start instead: their J_S only fall within a batch) with
    J at each epoch start (and, with ``line_search``, the true objective after each epoch's
    search), and the time of every block update."""
    ax = axes[0]
    # the stochastic steps' per-batch restarts carry no full-data objective
    batch_starts = [(i + 1, r.surrogate) for i, r in enumerate(hist)
                    if r.block == "restart" and r.objective is None]
    if batch_starts:
        ax.plot([i for i, _ in batch_starts], [v for _, v in batch_starts], ".", ms=3,
                label="true objective of each batch at its start (states at equilibrium)")
    else:
        upd = [(i + 1, r.surrogate) for i, r in enumerate(hist) if r.block != "LS"]
        ax.plot([i for i, _ in upd], [v for _, v in upd], lw=1.5,
                label="majorizer H (decreases in an epoch)")
    starts = [(i + 1, r.objective) for i, r in enumerate(hist)
              if r.block == "restart" and r.objective is not None]
    ax.plot([i for i, _ in starts], [v for _, v in starts], "ko", ms=4,
            label="relaxed objective J at each epoch start")
    searched = [(i + 1, r.objective, r.line_step) for i, r in enumerate(hist)
                if r.block == "LS"]
    if searched:
        ax.plot([i for i, _, _ in searched], [v for _, v, _ in searched], "rv", ms=5,
                label="true objective after each epoch's line search")
        for i, v, t in searched:
            ax.annotate(f"t={t:g}", (i, v), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
    after = " (after refinement)" if result.certificate.refined else ""
    ax.axhline(result.certificate.true_loss, color="k", ls="--",
               label=f"final true loss{after}: {result.certificate.true_loss:.3g}")
    ax.set_xlabel("block update (X, AB, CD per batch)")
    ax.set_title("mini-batch BCD")
    ax.legend(fontsize=8)
    ax = axes[1]
    for block, color in (("X", "tab:blue"), ("AB", "tab:orange"), ("CD", "tab:green")):
        pts = [(i + 1, r.time) for i, r in enumerate(hist) if r.block == block]
        ax.semilogy([i for i, _ in pts], [t for _, t in pts], ".", color=color, label=block)
    ax.set_xlabel("block update")
    ax.set_ylabel("seconds")
    ax.set_title("time per block update")
    ax.legend(fontsize=8)


def _plot_relaxed(result: Any, axes: Any, hist: list) -> None:
    k = np.arange(1, len(hist) + 1)
    ax = axes[0]
    ax.semilogy(k, [max(r.objective, 1e-16) for r in hist], label="relaxed objective", lw=2)
    ax.semilogy(k, [max(r.loss, 1e-16) for r in hist], label="loss at X", lw=1)
    ax.semilogy(k, [max(r.divergence, 1e-16) for r in hist], label="lam-weighted divergence",
                lw=1)
    eq = getattr(result, "equilibrium_losses", [])
    if eq:
        # the first block update of each restart's sweep (history sweeps never decrease);
        # a bisection, so that a long run (10 000 sweeps) plots in linear time
        hist_sweeps = [r.sweep for r in hist]
        pos = [min(bisect_left(hist_sweeps, sw) + 1, len(hist)) for sw, _ in eq]
        ax.semilogy(pos, [v for _, v in eq], "k.-", lw=1, label="loss at true equilibrium")
    ax.axhline(result.certificate.true_loss, color="k", ls="--",
               label=f"final (after readout/refinement): {result.certificate.true_loss:.3g}")
    stages = [i for i in range(1, len(hist)) if hist[i].stage != hist[i - 1].stage]
    if len(stages) <= 200:  # beyond that (one stage per sweep of a long run) only clutter
        for s in stages:
            ax.axvline(s + 0.5, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("block update (X, AB, CD per sweep)")
    ax.set_title("relaxed objective (dotted lines: lam stages)")
    # matplotlib's "best" place searches every line segment: slow for a long history
    ax.legend(fontsize=8, loc="best" if len(hist) <= 3000 else "upper right")
    ax = axes[1]
    ax.semilogy(k, [r.lam_mean for r in hist], color="tab:purple")
    ax.set_xlabel("block update")
    ax.set_title("mean lam (per-unit continuation)")


def plot_fit(result: Any, ds: Any, path: str | Path, title: str = "") -> Path:
    """For 1-D regression: data, the noiseless function if known, the random-feature start
    and the trained model, on a grid."""
    plt = pyplot()
    u = ds.U[0]
    grid = np.linspace(u.min(), u.max(), 1000)[None, :]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(u, ds.Y[0], s=8, color="grey", alpha=0.6, label="training data")
    if getattr(ds, "f", None) is not None:
        ax.plot(grid[0], ds.f(grid[0]), color="k", lw=1.5, label="noiseless f")
    ax.plot(grid[0], result.start_model.predict(grid)[0], color="tab:orange", lw=1,
            label=f"random-feature start ({_fmt(result.start_metric)})")
    ax.plot(grid[0], result.model.predict(grid)[0], color="tab:blue", lw=2,
            label=f"trained implicit model ({_fmt(result.certificate.train_metric)})")
    ax.legend(fontsize=8)
    ax.set_xlabel("u")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    return _save_figure(fig, path)


def _fmt(metric: dict) -> str:
    return ", ".join(f"train {k} {v:.3f}" for k, v in metric.items())
