"""Solving the equilibrium equation X = phi(A X + B U + b 1^T) for all samples at once.

One entry point, :func:`solve_equilibrium`, returns ``(X, EquilibriumInfo)``.

How it works: the states are grouped into the blocks of the activation map (a
componentwise map has one block per state) and the dependency graph "block l reads block
h" (A_lh != 0) is split into strongly connected components, solved in topological order.

- A component of one scalar state is solved exactly, ``x = phi(a x + c)`` in closed form
  (ReLU, leaky ReLU, identity) or by bisection (tanh, sigmoid). This is the back
  substitution of Remark 2.5; for triangular A (Thm 2.7, 2.8) nothing else is needed, and a
  feedforward network becomes one exact forward pass, layer by layer.
- A larger component is solved by the Picard iteration (2.6), optionally accelerated by a
  safeguarded Anderson mixing that falls back to plain Picard steps when it does not help.

A dense trained A is one component, so the common case is a plain Picard loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fenchel_idl.errors import ConvergenceWarning, EquilibriumError, NotWellPosedWarning
from fenchel_idl.model.activations import Activation, Blockwise, blip_structure, restrict_activation
from fenchel_idl.validation import check_choice, check_int, check_real

__all__ = ["EquilibriumInfo", "picard", "solve_equilibrium"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class EquilibriumInfo:
    """What the equilibrium solve did.

    Attributes
    ----------
    converged : bool
        Whether the returned X is an equilibrium: every iterative part reached the
        tolerance and the residual is finite and within the tolerance.
    iterations : int
        Largest number of fixed-point iterations used by an iterative component (0 when
        the solve was exact).
    residual : float
        ``max |X - phi(A X + B U)|`` at the returned X, relative to ``max(1, max |X|)``.
    method : str
        "exact" (triangular back substitution), "picard", "anderson" or "mixed" (some
        components iterated, including scalar self loops that are not well-posed).
    """

    converged: bool
    iterations: int
    residual: float
    method: str


@dataclass(frozen=True)
class _Level:
    singles: NDArray[np.int64]  # scalar states solved in closed form / bisection
    singles_diag: Array  # their diagonal entries of A
    iterative: NDArray[np.int64]  # states of multi-node components, solved by Picard


@dataclass(frozen=True)
class Structure:
    """The topological levels of the block dependency graph of A (cached per model)."""

    levels: tuple[_Level, ...]
    exact: bool  # True when no level needs an iteration

    @property
    def n_components(self) -> int:
        return sum(len(lv.singles) + (1 if len(lv.iterative) else 0) for lv in self.levels)


def structure(A: Array, phi: Activation) -> Structure:
    """Split the states into topologically ordered levels of strongly connected components."""
    n = A.shape[0]
    starts, _, _, _ = blip_structure(phi, n)
    node_of = np.zeros(n, dtype=np.int64)
    node_of[starts] = 1
    node_of = np.cumsum(node_of) - 1
    n_nodes = len(starts)
    sizes = np.diff(np.append(starts, n))
    rows, cols = np.nonzero(A)
    nr, nc = node_of[rows], node_of[cols]
    graph = coo_matrix((np.ones(len(nr)), (nr, nc)), shape=(n_nodes, n_nodes)).tocsr()
    n_comp, label = connected_components(graph, directed=True, connection="strong")
    comp_size = np.bincount(label, minlength=n_comp)
    self_loop = np.zeros(n_nodes, dtype=bool)
    self_loop[nr[nr == nc]] = True
    # condensation edges: comp(i) depends on comp(j)
    ci, cj = label[nr], label[nc]
    mask = ci != cj
    dep = coo_matrix((np.ones(int(mask.sum())), (ci[mask], cj[mask])),
                     shape=(n_comp, n_comp)).tocsr()
    dep.sum_duplicates()
    # longest-path levels by Kahn's algorithm on the reversed dependency graph
    n_deps = np.diff(dep.indptr)  # number of (distinct) dependencies of each component
    remaining = n_deps.copy()
    users = dep.T.tocsr()  # users[j] = components that read j
    level = np.zeros(n_comp, dtype=np.int64)
    frontier = np.flatnonzero(remaining == 0)
    order_levels: list[NDArray[np.int64]] = []
    depth = 0
    while frontier.size:
        level[frontier] = depth
        order_levels.append(frontier)
        nxt = []
        for c in frontier:
            for u in users.indices[users.indptr[c]:users.indptr[c + 1]]:
                remaining[u] -= 1
                if remaining[u] == 0:
                    nxt.append(u)
        frontier = np.asarray(sorted(nxt), dtype=np.int64)
        depth += 1
    # group states by level
    state_comp = label[node_of]
    node_scalar = sizes == 1
    comp_scalar_single = np.zeros(n_comp, dtype=bool)
    single_nodes = np.flatnonzero(comp_size[label] == 1)
    comp_scalar_single[label[single_nodes]] = node_scalar[single_nodes]
    # a single node without a self loop is exact too, even when it is a vector block
    comp_direct = np.zeros(n_comp, dtype=bool)
    comp_direct[label[single_nodes]] = ~self_loop[single_nodes]
    levels = []
    exact = True
    state_level = level[state_comp]
    for d in range(depth):
        states = np.flatnonzero(state_level == d)
        sc = state_comp[states]
        is_single = comp_scalar_single[sc] | comp_direct[sc]
        singles = states[is_single]
        iterative = states[~is_single]
        if iterative.size:
            exact = False
        levels.append(_Level(singles, A[singles, singles].copy(), iterative))
    return Structure(tuple(levels), exact)


def _residual(X: Array, AX_plus_b: Array, phi: Activation) -> float:
    scale = max(1.0, float(np.max(np.abs(X))) if X.size else 1.0)
    return float(np.max(np.abs(X - phi(AX_plus_b)))) / scale if X.size else 0.0


#: Bytes of one (n, columns) block of states in the plain Picard iteration: columns
#: (samples) are independent, so a wide state is iterated one block of columns at a time,
#: and the block, its image, the difference and the input stay in a core's L2 cache.
_BLOCK_BYTES = 1 << 18
#: Fewest columns of a block: narrower products with A lose more in BLAS than the cache saves.
_MIN_BLOCK_COLS = 512


def picard(A: Array, b: Array, phi: Activation, X0: Array | None = None, tol: float = 1e-9,
           max_iter: int = 2000, anderson: int = 0) -> tuple[Array, int, float, bool]:
    """Fixed-point iteration X <- phi(A X + b) (2.6), optionally with Anderson mixing.

    Returns (X, iterations, residual, converged). The stopping test is
    ``max |X(t+1) - X(t)| <= tol * max(1, max |X(t+1)|)``. The plain iteration returns the
    iterate X(t) whose image was just computed: its residual ``max |X - phi(A X + b)|`` is
    that last step, known exactly without another product with A, and is returned
    relative to ``max(1, max |X|)``. (With Anderson mixing the third value is the relative
    step at exit.) An iteration that diverges (an iterate with NaN or inf entries) stops at
    once and reports ``converged=False`` with the non-finite iterate, so the caller can
    tell divergence from a slow iteration. The iteration runs in the floating dtype of
    ``b`` (float32 for the float32 refinement epochs; X0 is cast to it).

    The columns (samples) do not interact, so on a wide state the plain iteration runs on
    blocks of columns (about 256 KB of states, at least 512 columns) one after the other,
    each with the stopping test above on its own columns (as strict as the test on all of
    them, since a block's ``max |X(t+1)|`` is at most the whole one's) and each stopping
    when it passes: blocks stay in cache and fast columns stop early. ``iterations`` is
    then the largest count of a block.
    """
    dtype = b.dtype if b.dtype.kind == "f" else np.float64
    X = np.zeros_like(b, dtype=dtype) if X0 is None else np.array(X0, dtype=dtype, copy=True)
    if anderson > 0:
        return _anderson(A, b, phi, X, tol, max_iter, anderson)
    if not X.size:
        return X, 1, 0.0, True
    cols = max(_MIN_BLOCK_COLS, _BLOCK_BYTES // (X.shape[0] * X.itemsize))
    if X.shape[1] < 2 * cols:
        Xb, it, step, scale, done = _picard_block(A, b, phi, X, tol, max_iter)
        return Xb, it, (float("inf") if not np.isfinite(step) else step / max(1.0, scale)), done
    iters, step, scale, done = 0, 0.0, 0.0, True
    for s in range(0, X.shape[1], cols):
        Xb, it, step_b, scale_b, done_b = _picard_block(
            A, np.ascontiguousarray(b[:, s:s + cols], dtype=dtype), phi,
            np.ascontiguousarray(X[:, s:s + cols]), tol, max_iter)
        X[:, s:s + cols] = Xb
        iters, done = max(iters, it), done and done_b
        if not np.isfinite(step_b):
            return X, iters, float("inf"), False
        step, scale = max(step, step_b), max(scale, scale_b)
    return X, iters, step / max(1.0, scale), done


def _picard_block(A: Array, b: Array, phi: Activation, X: Array, tol: float, max_iter: int
                  ) -> tuple[Array, int, float, float, bool]:
    """The plain Picard loop of :func:`picard` on one block of columns; X is overwritten.

    Returns (X, iterations, last step, max |X|, converged); the step is inf and X the
    non-finite iterate when the iteration diverged.
    """
    # two state buffers and one work buffer, reused: no allocation per iteration
    Xn, D = np.empty_like(X), np.empty_like(X)
    scale = _maxabs(X)
    for it in range(1, max_iter + 1):
        np.matmul(A, X, out=Xn)
        Xn += b
        phi.apply_(Xn)
        np.subtract(Xn, X, out=D)
        step = _maxabs(D)
        scale_n = _maxabs(Xn)
        if not (np.isfinite(step) and np.isfinite(scale_n)):  # diverged: inf <= tol * inf
            return Xn, it, float("inf"), scale_n, False
        done = step <= tol * max(1.0, scale_n)
        if done or it == max_iter:  # X's own residual is exactly this step
            return X, it, step, scale, done
        X, Xn, scale = Xn, X, scale_n
    raise AssertionError("unreachable")  # the loop always returns at it == max_iter


def _maxabs(Z: Array) -> float:
    """max |Z| without a temporary array (NaN propagates)."""
    return float(max(Z.max(), -Z.min()))


def _anderson(A, b, phi, X, tol, max_iter, memory):
    """Type-II Anderson acceleration with per-sample mixing and a Picard safeguard.

    Each column (sample) gets its own mixing coefficients, from a small regularized
    least-squares problem solved for all columns at once. When a mixed step makes the
    largest residual grow, the step is rejected: the iteration restarts from the plain
    Picard image of the previous iterate and the memory is cleared. Every iteration costs
    one product with A, like a Picard step.
    """
    F_hist: list = []
    G_hist: list = []
    prev, G_prev, mixed = np.inf, None, False
    step = np.inf
    for it in range(1, max_iter + 1):
        G = phi(A @ X + b)
        F = G - X
        step = float(np.max(np.abs(F))) if F.size else 0.0
        scale = max(1.0, float(np.max(np.abs(G))) if G.size else 1.0)
        if not (np.isfinite(step) and np.isfinite(scale)):  # diverged
            return G, it, float("inf"), False
        if step <= tol * scale:
            return G, it, step / scale, True
        if mixed and step > prev:
            X, prev, mixed = G_prev, np.inf, False
            F_hist.clear()
            G_hist.clear()
            continue
        prev, G_prev = step, G
        F_hist.append(F)
        G_hist.append(G)
        if len(F_hist) > memory + 1:
            F_hist.pop(0)
            G_hist.pop(0)
        k = len(F_hist) - 1
        if k == 0:
            X, mixed = G, False
            continue
        dF = np.stack([F_hist[i + 1] - F_hist[i] for i in range(k)])  # (k, n, m)
        dG = np.stack([G_hist[i + 1] - G_hist[i] for i in range(k)])
        M = np.einsum("inm,jnm->mij", dF, dF)
        rhs = np.einsum("inm,nm->mi", dF, F)
        reg = 1e-10 * np.trace(M, axis1=1, axis2=2)[:, None, None] + 1e-300
        gam = np.linalg.solve(M + reg * np.eye(k)[None], rhs[..., None])[..., 0]
        X, mixed = G - np.einsum("inm,mi->nm", dG, gam), True
    scale = max(1.0, float(np.max(np.abs(X))) if X.size else 1.0)
    return X, max_iter, step / scale, False


def solve_equilibrium(A: Array, b: Array, phi: Activation, struct: Structure | None = None,
                      X0: Array | None = None, tol: float = 1e-9, max_iter: int = 2000,
                      method: str = "auto", on_nonconvergence: str = "warn"
                      ) -> tuple[Array, EquilibriumInfo]:
    """Solve X = phi(A X + b) where b = B U (+ bias), shape (n, m).

    Parameters
    ----------
    A : ndarray of shape (n, n)
    b : ndarray of shape (n, m)
    phi : Activation
    struct : Structure, optional
        The cached result of :func:`structure` (computed when not given).
    X0 : ndarray of shape (n, m), optional
        Warm start for the iterative parts (default zero, as in (2.6)).
    tol : float
        Relative tolerance on the fixed-point step.
    max_iter : int
        Iteration cap.
    method : {"auto", "picard", "anderson"}
        "auto" uses exact back substitution where the structure allows it and Picard
        elsewhere; "anderson" accelerates the iterative parts; "picard" forces a plain
        Picard iteration on the whole state (no structure analysis).
    on_nonconvergence : {"warn", "raise", "ignore"}
        What happens when the cap is reached first. The info record always says so.

    Returns
    -------
    X : ndarray of shape (n, m)
    info : EquilibriumInfo

    Raises
    ------
    EquilibriumError
        With ``on_nonconvergence="raise"`` when the iteration does not converge.

    Warns
    -----
    ConvergenceWarning
        With ``on_nonconvergence="warn"`` (the default) when no equilibrium was found (the
        iteration diverged, hit ``max_iter``, or left a residual above ``tol``).
    NotWellPosedWarning
        Unless ``on_nonconvergence="ignore"``: an equilibrium was found, but a scalar self
        loop with ``A_ii * Lip(phi) >= 1`` makes it possibly non-unique, so it depends on X0.
    """
    check_choice("method", method, ("auto", "picard", "anderson"))
    check_choice("on_nonconvergence", on_nonconvergence, ("warn", "raise", "ignore"))
    tol = check_real("tol", tol, 0.0, None, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    res = None  # the residual, when the iteration already knows it exactly
    ill: list[tuple[int, float]] = []  # scalar self loops where uniqueness fails
    if method == "picard":
        X, iters, res, conv = picard(A, b, phi, X0, tol, max_iter)
        used = "picard"
    else:
        if struct is None:
            struct = structure(A, phi)
        anderson = 5 if method == "anderson" else 0
        single_level = len(struct.levels) == 1 and struct.levels[0].singles.size == 0
        if single_level:  # the common dense case: one Picard loop on everything
            X, iters, r, conv = picard(A, b, phi, X0, tol, max_iter, anderson)
            res = None if anderson else r
        else:
            X, iters, conv = _solve_levels(A, b, phi, struct, X0, tol, max_iter, anderson, ill)
        used = "exact" if struct.exact and not ill else (
            ("anderson" if anderson else "picard") if single_level else "mixed")
    finite = bool(np.all(np.isfinite(X)))
    if not finite:
        res = float("inf")  # diverged
    elif res is None:
        res = _residual(X, A @ X + b, phi)
    # the step test of the iteration and the residual of the returned X differ by a factor
    # (1 + tol) at most; beyond it, or not finite, the result is not an equilibrium
    conv = bool(conv) and finite and res <= tol * (1.0 + tol)
    info = EquilibriumInfo(converged=conv, iterations=int(iters), residual=res, method=used)
    if not conv:
        _report_failure(finite, iters, res, tol, max_iter, on_nonconvergence)
    elif ill and on_nonconvergence != "ignore":
        _warn_not_unique(ill, X0 is not None)
    return X, info


def _solve_levels(A: Array, b: Array, phi: Activation, struct: Structure, X0: Array | None,
                  tol: float, max_iter: int, anderson: int,
                  ill: list[tuple[int, float]]) -> tuple[Array, int, bool]:
    """Solve level by level: scalar states in closed form, larger components by Picard.

    A scalar self loop ``x = phi(a x + c)`` with ``a * Lip(phi) >= 1`` may have several
    solutions or none, so the closed form does not apply: it is iterated by Picard from X0
    (zero by default) like a larger component, and its (state, a) pairs are appended to
    ``ill``. Returns (X, largest iteration count, converged).
    """
    n, m = b.shape
    X = np.zeros((n, m)) if X0 is None else np.array(X0, dtype=float, copy=True)
    iters, conv = 0, True
    for lv in struct.levels:
        if lv.singles.size:
            idx, diag = lv.singles, lv.singles_diag
            c = A[idx] @ X - diag[:, None] * X[idx] + b[idx]
            sub = restrict_activation(phi, idx)
            bad = (diag != 0) & ~np.asarray(sub.scalar_well_posed(diag), dtype=bool)
            good = ~bad
            if np.any(good):
                X[idx[good]] = _solve_singles(phi, idx[good], diag[good], c[good])
            if np.any(bad):
                k = idx[bad]
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported
                    Xk, it, _, ok = picard(np.diag(diag[bad]), c[bad],
                                           restrict_activation(phi, k), X[k], tol, max_iter)
                X[k] = Xk
                iters, conv = max(iters, it), conv and ok
                ill.extend((int(i), float(a)) for i, a in zip(k, diag[bad]))
        if lv.iterative.size:
            idx = lv.iterative
            rest = A[np.ix_(idx, idx)]
            c = A[idx] @ X - rest @ X[idx] + b[idx]
            sub_phi = restrict_activation(phi, idx)
            Xi, it, _, ok = picard(rest, c, sub_phi, X[idx] if X0 is not None else None,
                                   tol, max_iter, anderson)
            X[idx] = Xi
            iters = max(iters, it)
            conv = conv and ok
    return X, iters, conv


def _report_failure(finite: bool, iters: int, res: float, tol: float, max_iter: int,
                    on_nonconvergence: str) -> None:
    """Raise or warn (per ``on_nonconvergence``) that no equilibrium was found."""
    if not finite:
        msg = (f"equilibrium iteration diverged: the state became NaN or inf after "
               f"{iters} iterations (it did not converge); the model is probably not "
               "well-posed (check fenchel_idl.well_posedness(model)).")
    else:
        msg = (f"equilibrium iteration did not converge in max_iter={max_iter} iterations "
               f"(relative residual {res:.3e}, tol={tol:g}): the returned states are not a "
               "fixed point. The model may not be well-posed or kappa may be close to 1. "
               "Raise max_iter, use method='anderson', or check "
               "fenchel_idl.well_posedness(model).")
    if on_nonconvergence == "raise":
        raise EquilibriumError(msg)
    if on_nonconvergence == "warn":
        warnings.warn(msg, ConvergenceWarning, stacklevel=4)


def _warn_not_unique(ill: list[tuple[int, float]], has_x0: bool) -> None:
    """Warn that scalar self loops with a * Lip(phi) >= 1 make the equilibrium non-unique."""
    shown = ", ".join(f"x[{i}] (A[{i},{i}] = {a:.6g})" for i, a in ill[:5])
    more = f" and {len(ill) - 5} more" if len(ill) > 5 else ""
    start = "the given X0" if has_x0 else "X0 = 0"
    warnings.warn(f"the model is not well-posed: the self loop(s) of {shown}{more} have "
                  "A[i,i] * Lip(phi) >= 1, so x = phi(A x + B u) may have several solutions; "
                  f"the returned equilibrium is the Picard limit from {start} and depends on "
                  "X0 (see fenchel_idl.well_posedness(model)).", NotWellPosedWarning,
                  stacklevel=4)


def _solve_singles(phi: Activation, idx, diag, c):
    """Solve x_i = phi_i(a_ii x_i + c_i) for the given scalar states, all samples at once.

    A vector block (softmax) appears here only without a self loop, as phi(c) directly.
    """
    if not isinstance(phi, Blockwise):
        if phi.componentwise:
            return phi.solve_scalar(diag[:, None], c)
        return phi(c)
    out = np.empty_like(c)
    pos = {int(s): k for k, s in enumerate(idx)}
    for sl, act in phi.slices():
        ks = [pos[i] for i in range(sl.start, sl.stop) if i in pos]
        if not ks:
            continue
        ks = np.asarray(ks)
        if act.componentwise:
            out[ks] = act.solve_scalar(diag[ks][:, None], c[ks])
        else:  # whole vector block, no self loop
            out[ks] = act(c[ks])
    return out
