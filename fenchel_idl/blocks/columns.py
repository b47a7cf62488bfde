"""The (B, D) column block of the relaxed problem, for the feature-selection penalty (5.1).

With P = w sum_j ||(B; D) e_j||_2 the column j of (B; D) is split between the (A, B) block
and the (C, D) block: each sees the other half fixed, and while that half is not zero the
group norm is smooth in its own half, so neither block ever sets the column to exactly 0.
With A, C and X fixed the relaxed objective is jointly convex in (B, b, D, d): the ReLU
divergence is convex in Z = A X + B U + b, the loss is convex in C X + D U + d. This module
solves that joint block::

    min  sum_i lam_i (1/m) [1/2 ||(Z_i)_+||^2 - <X_i, Z_i>]  +  L(Y, C X + D U + d)
         + rho/2 sum_r c_r ||k_r - k0_r||^2  +  w sum_j ||(B; D) e_j||_2
    s.t. ||B_i||_1 <= beta_B, |b_i| <= beta_B, ||D_k||_1 <= beta_D

over the rows k_r of K = [[B, b], [D, d]] (c_r = lam_r on the state rows, 1 on the output
rows), by proximal FISTA in the diagonal metric c (one step per row) with the proximal map
of the column norms and the balls (block soft-thresholding of the columns, proximal
Dykstra with the balls' projection): exact zero columns. The proximal term (proximal BCD:
the relaxed objective still never increases) makes the block rho-strongly convex in the
metric c, and the certificate is the bound ``F(K) - F* <= sum_r ||e_r||^2 / c_r / (2 rho)``
for an element e of dF(K), taken at the proximal-gradient point that is returned, as for
:func:`fenchel_idl.blocks.first_order.fast_ab_penalized`. A column is 0 at the optimum iff
the gradient of the smooth part w.r.t. that column, at 0, has norm at most w (without
active balls).

The same solver with the state rows fixed (``states=False``: the penalty is then
``w sum_j sqrt(||D e_j||^2 + ||B e_j||^2)``) polishes the certified (C, D) readout
(:class:`PolishedReadout`): a zero column of B gets an exact zero column of D, so
:func:`fenchel_idl.selected_features` needs no tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.block_solvers import BlockSolver, BlockSolvers, SolvePolicy, State
from fenchel_idl.blocks.first_order import _l1_ball_residual, ab_prox_weight, fista, fista_info
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.problem.penalties import FeatureSelection, penalty_reads
from fenchel_idl.problem.projection import project_l1_rows

__all__ = [
    "ColumnBlockSolvers",
    "ColumnsBlock",
    "PolishedReadout",
    "column_penalty",
    "columns_apply",
    "fast_bd_block",
    "with_column_block",
]

Array = NDArray[np.float64]


def column_penalty(problem) -> FeatureSelection | None:
    """The feature-selection penalty of the problem when it is the only penalty reading B or
    D (the column block then covers the penalty part of those matrices), else None."""
    shapes = {"A": (problem.n, problem.n), "B": (problem.n, problem.p),
              "C": (problem.q, problem.n), "D": (problem.q, problem.p)}
    pens = [pn for pn in problem.penalties if set(penalty_reads(pn, shapes)) & {"B", "D"}]
    if len(pens) == 1 and isinstance(pens[0], FeatureSelection):
        return pens[0]
    return None


def columns_apply(problem) -> bool:
    """Whether :func:`fast_bd_block` covers the (B, D) block: ReLU, and one feature-selection
    penalty as the only penalty reading B or D (:func:`column_penalty`)."""
    return problem.activation.name == "relu" and column_penalty(problem) is not None


@dataclass
class _Layout:
    """Rows and balls of K: the state rows [B, b] (when free), then the output rows [D, d]."""

    n_state: int   # free state rows (n, or 0 when B is fixed)
    p: int
    bias: bool
    beta_b: float | None
    beta_d: float | None

    def project(self, K: Array) -> Array:
        """Euclidean projection onto the balls (per row, so also in the row metric)."""
        out = K.copy()
        ns, p = self.n_state, self.p
        if self.beta_b is not None and ns:
            out[:ns, :p] = project_l1_rows(K[:ns, :p], np.full(ns, self.beta_b))
            if self.bias:
                out[:ns, p] = np.clip(K[:ns, p], -self.beta_b, self.beta_b)
        if self.beta_d is not None:
            out[ns:, :p] = project_l1_rows(K[ns:, :p], np.full(K.shape[0] - ns, self.beta_d))
        return out

    def snap(self, K: Array, rel: float = 1e-9, small: float = 1e-12) -> Array:
        """K with the rows (and biases) within ``rel`` of their ball's boundary scaled onto it,
        so that the boundary test of the certificate sees them there, and entries below
        ``small`` times their row's largest in a row with a ball set to zero (zeros stay
        zeros; the point stays feasible)."""
        out = K.copy()
        ns, p = self.n_state, self.p
        for rows, beta in ((slice(0, ns), self.beta_b), (slice(ns, None), self.beta_d)):
            if beta is None:
                continue
            # entries left at rounding size by the projection's soft-thresholding are zeros
            # (else they count as a support whose sign the normal cone must match)
            blk = out[rows, :p]
            blk[np.abs(blk) <= small * np.abs(blk).max(axis=1, keepdims=True)] = 0.0
            s = np.abs(out[rows, :p]).sum(axis=1)
            near = (s >= (1.0 - rel) * beta) & (s < beta)
            out[rows, :p] *= np.where(near, beta / np.maximum(s, 1e-300), 1.0)[:, None]
        if self.bias and ns and self.beta_b is not None:
            c = out[:ns, p]
            out[:ns, p] = np.where(np.abs(c) >= (1.0 - rel) * self.beta_b,
                                   np.sign(c) * self.beta_b, c)
        return out

    def residual(self, K: Array, g: Array) -> Array:
        """g + n, n the least-norm element of the balls' normal cone at K (per row)."""
        out = np.array(g, copy=True)
        ns, p = self.n_state, self.p
        if self.beta_b is not None and ns:
            out[:ns, :p] = _l1_ball_residual(g[:ns, :p], K[:ns, :p], np.full(ns, self.beta_b))
            if self.bias:
                c, gc = K[:ns, p], g[:ns, p]
                # at b = beta the normal cone is [0, inf): the residual is max(g, 0)
                out[:ns, p] = np.where(c >= self.beta_b, np.maximum(gc, 0.0),
                                       np.where(c <= -self.beta_b, np.minimum(gc, 0.0), gc))
        if self.beta_d is not None:
            nd = K.shape[0] - ns
            out[ns:, :p] = _l1_ball_residual(g[ns:, :p], K[ns:, :p], np.full(nd, self.beta_d))
        return out


def _column_prox(pen: FeatureSelection, lay: _Layout, t: Array, shift: Array | None):
    """The proximal map of P + the balls' indicator in the row metric 1 / t (t of shape
    (rows, 1)): the column-group prox (the penalty's own, on the stacked matrix, with the
    fixed part's column norms ``shift``), alternated with the balls' projection by proximal
    Dykstra (Bauschke and Combettes, 29.2). The value returned is the balls' projection of the
    last group prox (rows within 1e-9 of a boundary put on it): feasible, with that prox's
    exact zero columns."""
    p = lay.p
    fixed = {} if shift is None else {"D": shift}

    def prox_p(K):
        out = K.copy()
        out[:, :p] = pen.ab_prox({"B": K[:, :p]}, t, fixed)["B"]
        return out

    if lay.beta_b is None and lay.beta_d is None:
        return prox_p

    def prox(K):
        x, pd, qd = K, 0.0, 0.0
        y = x
        for _ in range(200):
            y = prox_p(x + pd)
            pd = x + pd - y
            xn = lay.project(y + qd)
            qd = y + qd - xn
            done = np.linalg.norm(xn - x) <= 1e-13 * (1.0 + np.linalg.norm(xn))
            x = xn
            if done:
                break
        # the balls' projection of the last group prox: its zero columns stay exactly zero
        # (the l1 projection soft-thresholds) and rows over a ball land on its boundary
        return lay.snap(lay.project(y))

    return prox


def _column_residual(pen: FeatureSelection, lay: _Layout, K: Array, g: Array,
                     shift: Array | None, row_weight: Array, rounds: int = 2) -> float:
    """Weighted squared norm sum_r ||e_r||^2 row_weight_r of an element e of
    g + dP(K) + N_balls(K), made small by alternating the penalty's subgradient nearest to
    the rest and the balls' least-norm normal vector (any element bounds the gap)."""
    p = lay.p
    fixed = {} if shift is None else {"D": shift}
    nK = np.zeros_like(K)
    best = np.inf
    for _ in range(rounds):
        S = np.zeros_like(K)
        S[:, :p] = pen.ab_subgradient({"B": K[:, :p]}, {"B": (g + nK)[:, :p]}, 1.0, fixed)["B"]
        r = lay.residual(K, g + S)
        nK = r - g - S
        best = min(best, float(np.sum(r * r * row_weight)))
    return best


def fast_bd_block(problem, A: Array, B: Array, b: Array, C: Array, D: Array, d: Array,
                  X: Array, lam: Array, pen: FeatureSelection, *, states: bool = True,
                  rho: float | None = None, tol: float = 1e-7,
                  max_iter: int = 20000) -> tuple[Array, Array, Array, Array, SolveInfo]:
    """The proximal (B, D) block with the feature-selection penalty (see the module
    docstring), from and around the current (B, b, D, d).

    Parameters
    ----------
    problem : TrainingProblem
        ReLU activation (:func:`columns_apply`).
    A, B, b, C, D, d : ndarray
        The model in the problem's standardized units; A and C stay fixed.
    X : ndarray of shape (n, m)
        The states (fixed).
    lam : ndarray of shape (n,)
        The divergence weights.
    pen : FeatureSelection
    states : bool
        Whether the state rows (B, b) are free; with False only (D, d) move, and B enters
        the penalty as a constant.
    rho : float, optional
        Weight of the proximal term; default :func:`ab_prox_weight` of ||(U; 1)||^2 / m.
    tol, max_iter : float, int
        Relative gap target and iteration cap of FISTA.

    Returns
    -------
    B, b, D, d : ndarray
        The block's solution (B and b unchanged when ``states`` is False).
    info : SolveInfo
        Block "BD" (or "CD" for ``states=False``): the block objective (constant terms left
        out) and its certified gap bound.
    """
    t0 = time.perf_counter()
    m, n, p, bias = problem.m, problem.n, problem.p, problem.bias
    V = np.vstack([problem.U] + ([np.ones((1, m))] if bias else []))
    Y = problem.Y
    ns = n if states else 0
    lay = _Layout(ns, p, bias, problem.bounds.B, problem.bounds.D)
    lam = np.asarray(lam, dtype=float)
    AXc = A @ X if states else None
    CX = C @ X
    XVt = X @ V.T / m if states else None
    L0 = float(np.linalg.norm(V, 2)) ** 2 / m
    rho = ab_prox_weight(L0) if rho is None else float(rho)
    curv = 0.5 if problem.loss.name == "cross_entropy" else 1.0
    lc = np.concatenate([lam, np.ones(problem.q)] if states else [np.ones(problem.q)])[:, None]
    L = lc * (np.concatenate([np.full(ns, L0), np.full(problem.q, curv * L0)])[:, None] + rho)
    K0 = np.vstack(([np.hstack([B] + ([b[:, None]] if bias else []))] if states else [])
                   + [np.hstack([D] + ([d[:, None]] if bias else []))])
    shift = None if states else B

    def grad_obj(Kc):
        Ko = Kc[ns:]
        Yhat = CX + Ko @ V
        f = problem.loss.value(Y, Yhat)
        g = np.empty_like(Kc)
        g[ns:] = problem.loss.grad(Y, Yhat) @ V.T
        if states:
            Z = AXc + Kc[:ns] @ V
            Zp = np.maximum(Z, 0.0)
            f += float(lam @ (0.5 * np.sum(Zp * Zp, axis=1) - np.sum(X * Z, axis=1))) / m
            g[:ns] = lam[:, None] * (Zp @ V.T / m - XVt)
        Dk = Kc - K0
        f += 0.5 * rho * float(np.sum(lc * Dk * Dk))
        return f, g + rho * lc * Dk

    def pen_value(Kc):
        cols = np.sum(Kc[:, :p] ** 2, axis=0) + (0.0 if shift is None
                                                  else np.sum(shift ** 2, axis=0))
        return pen.weight * float(np.sum(np.sqrt(cols)))

    prox = _column_prox(pen, lay, 1.0 / L, shift)
    last: dict = {}

    def certificate(Kc, f, g):
        # the proximal-gradient point, and the same with entries of relative size 1e-7 in
        # the balls' rows set to zero: Dykstra leaves such entries where the exact prox has
        # zeros, and a wrong support spoils the bound; the better bound and its point are kept
        best = None
        Kp0 = prox(Kc - g / L)
        for Kp in (Kp0, lay.snap(Kp0, rel=1e-6 * (p + 1), small=1e-7)):
            fp, gp = grad_obj(Kp)
            gap = _column_residual(pen, lay, Kp, gp, shift, 1.0 / lc) / (2.0 * rho)
            if best is None or gap < best[2]:
                best = (Kp, fp + pen_value(Kp), gap)
        last.update(point=best[0], f=best[1], gap=best[2])
        return last["gap"] * max(1.0, abs(f)) / max(1.0, abs(last["f"]))

    _, _, _, iters = fista(grad_obj, prox, certificate, K0, L, tol, max_iter)
    Kn, f, gap = last["point"], last["f"], last["gap"]
    info = replace(fista_info("BD" if states else "CD", f, gap, iters, tol, t0), abs_gap=gap)
    Bn, bn = (Kn[:ns, :p], Kn[:ns, p] if bias else np.zeros(n)) if states else (B, b)
    Dn, dn = Kn[ns:, :p], (Kn[ns:, p] if bias else np.zeros(problem.q))
    return Bn, bn, Dn, dn, info


class ColumnsBlock(BlockSolver):
    """The joint (B, D) block of :func:`fast_bd_block` as a block solver ("BD"). An
    uncertified solve is kept with its record (the policy records it, or raises); the
    driver's monotonicity check still guards the relaxed objective."""

    block = "BD"

    def __init__(self, problem, policy: SolvePolicy):
        self.problem, self.policy = problem, policy
        self.penalty = column_penalty(problem)

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        B, b, D, d, info = fast_bd_block(self.problem, s.A, s.B, s.b, s.C, s.D, s.d, s.X,
                                         s.lam, self.penalty, tol=self.policy.gap_tol)
        if not info.certified:
            self.policy.uncertified(info)
        return replace(s, B=B, b=b, D=D, d=d), info


def _absolute_gap(info: SolveInfo) -> float | None:
    if info.abs_gap is not None:
        return float(info.abs_gap)
    if info.gap is not None and info.objective is not None:
        return float(info.gap) * max(1.0, abs(float(info.objective)))
    return None


class PolishedReadout(BlockSolver):
    """The certified (C, D) readout of ``readout``, then the proximal (D, d) step of
    :func:`fast_bd_block` (``states=False``) from it, which makes the columns of D exactly
    zero where B's are and zero is optimal.

    The polished point K+ is certified for the readout problem itself: with K0 the readout's
    point and F its objective, F(K+) <= F(K0) + gap_polish (the proximal objective at K+ is
    within its gap of a minimum that is at most F(K0)), so F(K+) - F* <= gap_readout +
    gap_polish, the absolute gap reported. Uncertified readouts are passed on unpolished.
    """

    block = "CD"

    def __init__(self, readout: BlockSolver, problem):
        self.readout, self.problem = readout, problem
        self.policy = readout.policy
        self.blocks = getattr(readout, "blocks", None)
        self.penalty = column_penalty(problem)

    def solve(self, s: State) -> tuple[State, SolveInfo]:
        s1, info = self.readout.solve(s)
        gap1 = _absolute_gap(info)
        if not info.certified or gap1 is None or info.objective is None:
            return s1, info
        zero_b = ~np.any(s1.B != 0.0, axis=0)
        if not np.any(zero_b & np.any(s1.D != 0.0, axis=0)):
            return s1, info  # nothing to polish: D is zero wherever B is
        pb = self.problem
        # first the snap: D_j = 0 where B_j = 0 and zero satisfies the readout's optimality
        # condition ||grad_{D_j} loss|| <= w; F(K+) - F* <= gap1 + (F(K+) - F(K0)), an
        # exact figure (zeroing entries keeps the balls)
        G = pb.loss.grad(pb.Y, s1.C @ s1.X + s1.D @ pb.U + s1.d[:, None])
        ok_zero = zero_b & (np.linalg.norm(G @ pb.U.T, axis=0) <= self.penalty.weight)
        D = s1.D.copy()
        D[:, ok_zero] = 0.0
        s2 = replace(s1, D=D)
        change = self._value(s2) - self._value(s1)
        out = self._polished(info, gap1, change, max(change, 0.0), "snap", 0.0)
        if out.certified:
            return s2, out
        _, _, D, d, info2 = fast_bd_block(pb, s1.A, s1.B, s1.b, s1.C, s1.D, s1.d, s1.X,
                                          s1.lam, self.penalty, states=False,
                                          tol=self.policy.gap_tol, max_iter=500)
        if not info2.certified:
            return s1, info
        s2 = replace(s1, D=D, d=d)
        change = self._value(s2) - self._value(s1)
        out = self._polished(info, gap1, change, float(info2.abs_gap), "FISTA", info2.time)
        return (s2, out) if out.certified else (s1, info)

    def _polished(self, info: SolveInfo, gap1: float, change: float, extra: float,
                  how: str, seconds: float) -> SolveInfo:
        """The SolveInfo of the polished point: objective changed by ``change``, absolute
        gap ``gap1 + extra``, certified when that is within the policy's tolerance."""
        obj = float(info.objective) + change
        total = gap1 + extra
        rel = total / max(1.0, abs(obj))
        ok = rel <= self.policy.gap_tol
        return SolveInfo(info.block, f"{info.solver}+{how}", info.status if ok else
                         "optimal_inaccurate", obj, rel, info.kkt_residual, ok,
                         info.time + seconds, info.attempt,
                         "" if ok else f"gap after the column polish {rel:.2e}", total)

    def _value(self, s: State) -> float:
        """Loss plus penalty of the readout at s (the part that the polish changes)."""
        pb = self.problem
        loss = pb.loss.value(pb.Y, s.C @ s.X + s.D @ pb.U + s.d[:, None])
        return loss + self.penalty.value({"B": s.B, "D": s.D})


@dataclass
class ColumnBlockSolvers(BlockSolvers):
    """:class:`BlockSolvers` with the joint (B, D) block ``BD`` of a feature-selection
    problem (the readout ``CD`` is then a :class:`PolishedReadout`)."""

    BD: BlockSolver | None = None


def with_column_block(problem, solvers: BlockSolvers, block_solver: str = "auto"
                      ) -> BlockSolvers:
    """``solvers`` with the (B, D) column block and the polished readout when
    :func:`columns_apply` holds and the first-order solvers are allowed (``block_solver``
    not "cvxpy", no forced solver); otherwise ``solvers`` itself."""
    policy = solvers.CD.policy
    if block_solver == "cvxpy" or policy.solvers is not None or not columns_apply(problem):
        return solvers
    return ColumnBlockSolvers(solvers.X, solvers.AB, PolishedReadout(solvers.CD, problem),
                              solvers.blocks, BD=ColumnsBlock(problem, policy))
