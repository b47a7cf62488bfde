"""The three convex blocks of the relaxed training problem, each compiled once as a
parameterized (DPP) CVXPY problem and re-solved (section 6.3).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.cvxpy_terms import (
    check_compiled,
    f_terms,
    fstar_terms,
    inf_ball,
    penalty_terms,
    weighted,
)
from fenchel_idl.blocks.dca import x_step_data
from fenchel_idl.blocks.first_order import ab_prox_rows
from fenchel_idl.blocks.gram import LEAST_SQUARES, GramReadout, readout_gap
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.errors import SolverWarning
from fenchel_idl.model.activations import Activation, Blockwise, state_lipschitz
from fenchel_idl.problem.losses import CrossEntropyLoss
from fenchel_idl.problem.training_problem import TrainingProblem

Array = NDArray[np.float64]


def _aggregate(block: str, infos: list[SolveInfo]) -> SolveInfo:
    """One record for a block solved as several batches: worst gap, all certified?"""
    gaps = [i.gap for i in infos if i.gap is not None]
    res = [i.kkt_residual for i in infos if i.kkt_residual is not None]
    absolute = [i.abs_gap for i in infos]
    bad = [i for i in infos if not i.certified]
    return SolveInfo(block=block, solver="+".join(sorted({i.solver for i in infos})),
                     status=bad[0].status if bad else infos[-1].status,
                     objective=float(sum(i.objective or 0.0 for i in infos)),
                     gap=max(gaps) if gaps else None, kkt_residual=max(res) if res else None,
                     certified=not bad, time=float(sum(i.time for i in infos)),
                     attempt=max(i.attempt for i in infos),
                     note=bad[0].note if bad else f"{len(infos)} batch(es)",
                     abs_gap=None if None in absolute else float(sum(absolute)))


def _f_sum(act: Activation, X: Array, weights: Array | None = None) -> float:
    """sum_ij w_i f(X_ij) (w = 1 when None) for a componentwise map; 0 for a vector map,
    whose f does not split by rows, and where f is not finite."""
    if not act.componentwise:
        return 0.0
    value = act.f_cvxpy(X).expr.value
    if value is None or not np.all(np.isfinite(value)):
        return 0.0
    rows = np.sum(np.reshape(value, X.shape), axis=1)
    return float(rows.sum() if weights is None else weights @ rows)


class Blocks:
    """The three convex blocks of a :class:`TrainingProblem`, compiled once and re-solved.

    - (C, D): one problem; the fixed X, A, B are Parameters.
    - (A, B): split into batches of rows (the ||A||_inf ball is one l1 ball per row) when
      every penalty is row-separable; each batch size compiles one problem whose
      Parameters are re-set for every batch. With penalties that couple rows (column norms,
      nuclear norm, custom) the block is one problem.
    - X: split into batches of columns (samples), since the loss and the divergence are
      sums over samples; one compiled problem per batch size.

    lam is a constant of the X block (and of a joint (A, B) block), because DPP does not
    allow a Parameter to multiply a convex function of Parameter-dependent expressions; those
    are compiled once per lam stage (:meth:`build_stage`). DCP and DPP are checked when
    each problem is built.

    Parameters
    ----------
    problem : TrainingProblem
    row_batch, col_batch : int
        Batch sizes of the (A, B) rows and of the X columns.
    gap_tol : float
        Tolerance of the posed-problem gap bound of the squared-loss readout
        (:meth:`solve_cd`); the solve policy's own tolerance.
    least_squares : bool
        Let the squared-loss readout take the least-squares minimizer when it lies in the
        balls (:meth:`fenchel_idl.blocks.gram.GramReadout.solve`); False when a solver is
        forced for every block.
    """

    def __init__(self, problem: TrainingProblem, row_batch: int = 25, col_batch: int = 50,
                 gap_tol: float = 1e-6, least_squares: bool = True):
        self.problem = pb = problem
        self.gap_tol, self.least_squares = float(gap_tol), bool(least_squares)
        n, p, m = pb.n, pb.p, pb.m
        self.row_batch = max(1, min(int(row_batch), n))
        self.col_batch = max(1, min(int(col_batch), m))
        self.rowwise = all(pn.row_separable for pn in pb.penalties)
        self.lam: Array | None = None
        self._x_cache: dict[int, tuple] = {}
        self._ab_cache: dict[tuple, tuple] = {}
        self._ab_joint: tuple | None = None
        self._gram: Any = None
        # ---- (C, D) block
        self.Xcd = cp.Parameter((n, m), name="X_fixed")
        self.Acd = cp.Parameter((n, n), name="A_fixed")
        self.Bcd = cp.Parameter((n, p), name="B_fixed")
        self.cd, self.cd_vars = self._cd_problem(self.Xcd, self.Acd, self.Bcd)
        check_compiled("(C, D)", self.cd)
        self.gammas = state_lipschitz(pb.activation, n)

    def _cd_problem(self, X: Any, A: Any, B: Any) -> tuple[cp.Problem, tuple]:
        """The (C, D) problem at X (Parameters, or constants), and its variables."""
        pb = self.problem
        n, p, q, m = pb.n, pb.p, pb.q, pb.m
        Cv, Dv = cp.Variable((q, n), name="C"), cp.Variable((q, p), name="D")
        dv = cp.Variable((q, 1), name="d") if pb.bias else None
        Yhat = Cv @ X + Dv @ pb.U + (dv @ np.ones((1, m)) if dv is not None else 0)
        pen, pcons = penalty_terms(pb, {"A": A, "B": B, "C": Cv, "D": Dv}, ("C", "D"))
        cons = list(pcons)
        if pb.bounds.C is not None:
            cons += inf_ball(Cv, pb.bounds.C)
        if pb.bounds.D is not None:
            cons += inf_ball(Dv, pb.bounds.D)
        return cp.Problem(cp.Minimize(pb.loss.cvxpy(pb.Y, Yhat, m) + pen), cons), (Cv, Dv, dv)

    # -- stage ------------------------------------------------------------------------------
    def build_stage(self, lam: Array) -> None:
        """Start a lam stage: the X block (and a joint (A, B) block) use the new lam."""
        self.lam = np.array(lam, dtype=float, copy=True)
        self._x_cache.clear()
        self._ab_joint = None

    def _ensure_stage(self, lam: Array) -> None:
        if self.lam is None or not np.array_equal(lam, self.lam):
            self.build_stage(lam)

    # -- (C, D) -----------------------------------------------------------------------------
    def solve_cd(self, X, A, B, solve) -> tuple[Array, Array, Array, SolveInfo]:
        """The (C, D) block at X. For the squared loss it is solved on the Gram matrix of
        (X, U, 1) (:mod:`fenchel_idl.blocks.gram`: the same problem, at a cost that does not grow
        with m) and certified on the posed problem (:meth:`_posed_readout`); with a penalty on
        C or D, and for cross-entropy, on all samples."""
        pb = self.problem
        if not isinstance(pb.loss, CrossEntropyLoss):
            if pb.penalties_reading("C", "D"):
                # no posed-problem bound for the Gram solve with a penalty on C or D: the
                # block is solved on all samples, certified by the solver's gap
                prob, (Cv, Dv, dv) = self._cd_problem(X, A, B)
                info = solve(prob, "CD")
                d = dv.value[:, 0] if dv is not None else np.zeros(pb.q)
                return np.array(Cv.value), np.array(Dv.value), np.array(d), info
            if self._gram is None:
                self._gram = GramReadout(pb)
            G, Hl = self._gram.statistics(X)
            C, D, d, info = self._gram.solve(G, Hl, A, B, solve, self.gap_tol,
                                             self.least_squares)
            return self._posed_readout(X, A, B, (C, D, d), info, solve)
        if pb.q * pb.m * pb.n * pb.m <= _CD_DPP_MAX:
            self.Xcd.value, self.Acd.value, self.Bcd.value = X, A, B
            prob, (Cv, Dv, dv) = self.cd, self.cd_vars
        else:
            # CVXPY's DPP parameter tensor for C @ X grows like (q m)(n m), so past
            # _CD_DPP_MAX the block is rebuilt with X, A, B as constants (the compile is
            # small next to the exponential-cone solve).
            prob, (Cv, Dv, dv) = self._cd_problem(X, A, B)
        info = solve(prob, "CD")
        d = dv.value[:, 0] if dv is not None else np.zeros(self.problem.q)
        return np.array(Cv.value), np.array(Dv.value), np.array(d), info

    def _posed_readout(self, X, A, B, K: tuple, info: SolveInfo,
                       solve) -> tuple[Array, Array, Array, SolveInfo]:
        """Certify the Gram-path readout K = (C, D, d) on the posed problem: its gap bound
        from the samples (:func:`fenchel_idl.blocks.gram.readout_gap`, relative like the
        solvers' gaps) replaces the Gram solve's gap. When the bound exceeds ``gap_tol``, the
        Gram problem is solved again at strict tolerances and that point bounded the same
        way; when it still exceeds it (or the bound does not apply), the block is re-solved
        on all samples; that solve counts as
        certified only if its own bound (when it applies) is within tolerance too, and
        otherwise the record says "not certified" and why, with a SolverWarning."""
        tol, m = self.gap_tol, self.problem.m
        loss, gap, why = readout_gap(self.problem, X, *K, tol)
        rel = gap / max(1.0, abs(loss))
        if info.certified and rel <= tol:
            return (*K, replace(info, gap=rel, abs_gap=gap,
                                note="gap bound of the posed problem"))
        if info.solver == LEAST_SQUARES:
            # the Gram problem's least-squares minimizer misses the posed bound (the Gram
            # problem drops G's smallest eigenvalues): its conic solve, bounded the same way
            *K2, info2 = self._gram.resolve(solve)
            return self._posed_readout(X, A, B, tuple(K2), info2, solve)
        if info.certified and np.isfinite(rel):
            # the bound grows like the square root of the solver's own gap, so a point at
            # the solver's default tolerance can miss it where a stricter solve of the same
            # k-sample problem does not; that costs far less than a solve on all m samples
            t0 = time.perf_counter()
            strict = self._gram.solve_strict(info.solver)
            if strict is not None:
                loss2, gap2, _ = readout_gap(self.problem, X, *strict, tol)
                rel2 = gap2 / max(1.0, abs(loss2))
                if rel2 <= tol:
                    return (*strict, replace(
                        info, objective=float(self._gram.prob.value), gap=rel2, abs_gap=gap2,
                        time=info.time + time.perf_counter() - t0,
                        note=f"gap bound of the posed problem, after a strict re-solve of the "
                             f"Gram problem (bound {rel:.1e} at the default tolerance)"))
        prob, (Cv, Dv, dv) = self._cd_problem(X, A, B)
        exact = solve(prob, "CD")
        d = dv.value[:, 0] if dv is not None else np.zeros(self.problem.q)
        K = (np.array(Cv.value), np.array(Dv.value), np.array(d))
        loss, gap, _ = readout_gap(self.problem, X, *K, tol)
        rel2 = gap / max(1.0, abs(loss))
        note = (f"the Gram-path readout's gap bound on the posed problem was {rel:.1e}"
                if np.isfinite(rel) else f"the Gram-path readout has no posed-problem "
                f"bound ({why})") + f"; re-solved on all {m} samples"
        if np.isfinite(rel2):
            ok, gap2 = exact.certified and rel2 <= tol, max(rel2, exact.gap or 0.0)
            absolute = gap2 * max(1.0, abs(loss))
        else:
            ok, gap2, absolute = exact.certified, exact.gap, exact.abs_gap
        if not ok:
            note += (f"; NOT certified: gap bound {rel2:.1e} above tolerance {tol:.1e}"
                     if exact.certified else f"; NOT certified ({exact.note or exact.status})")
            warnings.warn(f"the (C, D) readout is not certified: {note}.", SolverWarning,
                          stacklevel=4)
        return (*K, replace(exact, gap=gap2, abs_gap=absolute, certified=ok, note=note))

    # -- (A, B) -----------------------------------------------------------------------------
    def _row_batches(self):
        """Row ranges of equal activation, at most row_batch long."""
        pb = self.problem
        parts = pb.activation.blocks if isinstance(pb.activation, Blockwise) else \
            ((pb.n, pb.activation),)
        start = 0
        for size, act in parts:
            for i0 in range(start, start + size, self.row_batch):
                yield i0, min(i0 + self.row_batch, start + size), act
            start += size

    def _ab_rows_problem(self, r: int, act: Activation):
        key = (r, act)
        if key in self._ab_cache:
            return self._ab_cache[key]
        pb = self.problem
        n, p, m = pb.n, pb.p, pb.m
        k = n + p + (1 if pb.bias else 0)
        W = cp.Variable((r, k), name="AB_rows")
        V = cp.Parameter((k, m), name="X_U_1")
        T = cp.Parameter((r, k), name="X_rows_Vt")
        rho = cp.Parameter((r, 1), nonneg=True, name="inv_lam")
        radius = cp.Parameter((r, 1), nonneg=True, name="kappa_over_gamma")
        # sum_i prox_i/2 ||w_i - centre_i||^2 written DPP-style: sqrt(prox_i) per row and
        # sqrt(prox_i) centre_i
        centre = cp.Parameter((r, k), name="sqrt_prox_times_current")
        prox = cp.Parameter((r, 1), nonneg=True, name="sqrt_prox")
        # sum_ij f(X_ij) / m of these rows: with it the value is the rows' divergence, not
        # that minus a constant that can be far larger (the gap's yardstick)
        const = cp.Parameter(name="constant")
        Z = W @ V
        obj = ((cp.sum(act.fstar_cvxpy(Z)) - cp.sum(cp.multiply(W, T))) / m + const
               + 0.5 * cp.sum_squares(cp.multiply(prox, W) - centre))
        M = {"A": W[:, :n], "B": W[:, n:n + p]}
        terms = [pn.row_terms(M) for pn in pb.penalties]
        terms = [t for t in terms if t is not None]
        if terms:
            obj = obj + cp.sum(cp.multiply(rho, cp.reshape(sum(terms), (r, 1), order="F")))
        cons = [cp.sum(cp.abs(W[:, :n]), axis=1, keepdims=True) <= radius]
        if pb.bounds.B is not None:
            cons += [cp.sum(cp.abs(W[:, n:n + p]), axis=1) <= pb.bounds.B]
            if pb.bias:
                cons += [cp.abs(W[:, n + p]) <= pb.bounds.B]
        prob = cp.Problem(cp.Minimize(obj), cons)
        check_compiled("(A, B)", prob)
        self._ab_cache[key] = (prob, W, V, T, rho, radius, centre, prox, const)
        return self._ab_cache[key]

    def _ab_joint_problem(self, lam: Array):
        """(A, B) as one problem (penalties that couple rows); lam is a constant."""
        pb = self.problem
        n, p, m = pb.n, pb.p, pb.m
        ones = np.ones((1, m))
        X = cp.Parameter((n, m), name="X_fixed")
        TA = cp.Parameter((n, n), name="lam_X_Xt")
        TB = cp.Parameter((n, p), name="lam_X_Ut")
        Tb = cp.Parameter((n, 1), name="lam_X_1")
        C = cp.Parameter((pb.q, n), name="C_fixed")
        D = cp.Parameter((pb.q, p), name="D_fixed")
        Av, Bv = cp.Variable((n, n), name="A"), cp.Variable((n, p), name="B")
        bv = cp.Variable((n, 1), name="b") if pb.bias else None
        k = n + p + (1 if pb.bias else 0)
        centre = cp.Parameter((n, k), name="sqrt_prox_times_current")
        prox = cp.Parameter(nonneg=True, name="sqrt_prox")
        Wv = cp.hstack([Av, Bv] + ([bv] if bv is not None else []))
        Z = Av @ X + Bv @ pb.U + (bv @ ones if bv is not None else 0)
        fz = weighted(fstar_terms(pb.activation, n, Z), lam[:, None])
        # <Lam X, A X + B U + b 1^T> = <A, Lam X X^T> + <B, Lam X U^T> + <b, Lam X 1>
        lin = cp.sum(cp.multiply(Av, TA)) + cp.sum(cp.multiply(Bv, TB))
        if bv is not None:
            lin = lin + cp.sum(cp.multiply(bv, Tb))
        pen, pcons = penalty_terms(pb, {"A": Av, "B": Bv, "C": C, "D": D})
        cons = [cp.multiply(self.gammas[:, None], cp.sum(cp.abs(Av), axis=1, keepdims=True))
                <= pb.kappa] + list(pcons)
        if pb.bounds.B is not None:
            cons += inf_ball(Bv, pb.bounds.B)
            if bv is not None:
                cons += [cp.abs(bv) <= pb.bounds.B]
        # proximal term sum_i c_i / 2 ||w_i - centre_i||^2 with the first-order blocks'
        # weights c / rho (max(lam) with a penalty on A or B, else lam_i, as in the row
        # batches): every path solves one problem
        sl = np.sqrt(ab_prox_rows(pb.penalties_reading("A", "B"), lam, 1.0))[:, None]
        proxterm = 0.5 * cp.sum_squares(cp.multiply(sl, prox * Wv - centre))
        const = cp.Parameter(name="constant")  # sum_i lam_i f(X_i) / m, as in the rows
        prob = cp.Problem(cp.Minimize((fz - lin) / m + const + pen + proxterm), cons)
        check_compiled("(A, B)", prob)
        return prob, (Av, Bv, bv), (X, TA, TB, Tb, C, D, centre, prox, const)

    def solve_ab(self, X, lam, C, D, solve, centre: Array,
                 prox: float) -> tuple[Array, Array, Array, SolveInfo]:
        """The proximal (A, B) step: the block objective plus the proximal term
        sum_i c_i / 2 ||w_i - centre_i||^2 in training units, W = [A, B, b], with
        c = :func:`fenchel_idl.blocks.first_order.ab_prox_rows` at weight ``prox``
        (prox max(lam) on every row with a penalty on A or B, else prox lam_i). The row
        batches solve row i divided by lam_i, so their proximal weight is c_i / lam_i."""
        pb = self.problem
        n, p = pb.n, pb.p
        if not self.rowwise:
            self._ensure_stage(lam)
            if self._ab_joint is None:
                self._ab_joint = self._ab_joint_problem(lam)
            prob, (Av, Bv, bv), (Xp, TA, TB, Tb, Cp, Dp, Ce, Pw, Kp) = self._ab_joint
            Ce.value, Pw.value = np.sqrt(prox) * centre, np.sqrt(prox)
            Kp.value = sum(_f_sum(act, X[i0:i1], lam[i0:i1])
                           for i0, i1, act in self._row_batches()) / pb.m
            LX = lam[:, None] * X
            Xp.value, TA.value, TB.value = X, LX @ X.T, LX @ pb.U.T
            Tb.value, Cp.value, Dp.value = LX.sum(axis=1, keepdims=True), C, D
            info = solve(prob, "AB")
            b = bv.value[:, 0] if bv is not None else np.zeros(n)
            return np.array(Av.value), np.array(Bv.value), np.array(b), info
        Vval = np.vstack([X, pb.U] + ([np.ones((1, pb.m))] if pb.bias else []))
        # sqrt(c_i / lam_i): the rows are solved divided by lam_i (c / rho / lam is exactly
        # 1 without a penalty on A or B)
        ratio = ab_prox_rows(pb.penalties_reading("A", "B"), lam, 1.0) / lam
        sq = np.sqrt(prox * ratio)[:, None]
        batches = [(f"AB[{i0}:{i1}]",
                    (i0, i1, Vval, X[i0:i1] @ Vval.T, (1.0 / lam[i0:i1])[:, None],
                     (pb.kappa / self.gammas[i0:i1])[:, None], sq[i0:i1] * centre[i0:i1],
                     sq[i0:i1], _f_sum(act, X[i0:i1]) / pb.m))
                   for i0, i1, act in self._row_batches()]
        rows, infos = self._solve_batches("AB", batches, solve)
        # a batch's rows are solved unweighted (1/lam_i scales only their penalty terms);
        # in units of the training objective row i counts lam_i times
        infos = [replace(info, abs_gap=info.abs_gap * float(lam[p_[0]:p_[1]].max()))
                 if info.abs_gap is not None else info
                 for info, (_, p_) in zip(infos, batches)]
        Wall = np.empty((n, Vval.shape[0]))  # C order, whatever order the solver returns
        for (_, params), W in zip(batches, rows):
            Wall[params[0]:params[1]] = W
        b = Wall[:, n + p] if pb.bias else np.zeros(n)
        return Wall[:, :n], Wall[:, n:n + p], b, _aggregate("AB", infos)

    def solve_ab_rows(self, params: tuple, name: str, solve: Callable) -> tuple[Array, SolveInfo]:
        """One batch of rows i0:i1 of the (A, B) block, from the Parameter values that
        :meth:`solve_ab` computes: (i0, i1, V, T, 1/lam, kappa/gamma, sqrt(c/lam) centre,
        sqrt(c/lam) (both per row), the constant)."""
        i0, i1, Vval, T, rho, radius, centre, sqrt_prox, const = params
        act = next(a for j0, j1, a in self._row_batches() if (j0, j1) == (i0, i1))
        prob, W, V, Tp, rhop, radp, Ce, Pw, Kp = self._ab_rows_problem(i1 - i0, act)
        V.value, Tp.value, rhop.value, radp.value, Kp.value = Vval, T, rho, radius, const
        Ce.value, Pw.value = centre, sqrt_prox
        info = solve(prob, name)
        return np.array(W.value), info

    # -- X ----------------------------------------------------------------------------------
    def _x_problem(self, k: int):
        if k in self._x_cache:
            return self._x_cache[k]
        pb = self.problem
        n, q, m = pb.n, pb.q, pb.m
        w = self.lam[:, None]
        Xv = cp.Variable((n, k), name="X")
        A = cp.Parameter((n, n), name="A_fixed")
        Wp = cp.Parameter((n, k), name="BU_plus_b")
        G = cp.Parameter((n, k), name="linear")  # Lam (B U + b) + S+ Xbar
        Sm = cp.Parameter((n, n), name="S_minus_sqrt")
        C = cp.Parameter((q, n), name="C_fixed")
        R = cp.Parameter((q, k), name="D_U_plus_d")
        CtY = cp.Parameter((n, k), name="Ct_Y")
        # the constant of the DCA linearization, 1/2 tr(Xbar^T S+ Xbar) / m, and for
        # cross-entropy -<Y, D U + d> / m (the squared loss is whole: R holds -Y): with it
        # the block's value is the majorizer of the relaxed objective, at the scale of the
        # training objective (the gap's yardstick)
        const = cp.Parameter(name="constant")
        Yhat = C @ Xv + R
        if isinstance(pb.loss, CrossEntropyLoss):
            # the constant -<Y, R> of the loss is left out of the block objective
            loss = (cp.sum(cp.log_sum_exp(Yhat, axis=0)) - cp.sum(cp.multiply(CtY, Xv))) / m
        else:
            loss = cp.sum_squares(Yhat) / (2.0 * m)  # R holds D U + d - Y here
        fx_terms, fcons = f_terms(pb.activation, n, Xv)
        obj = loss + (weighted(fx_terms, w)
                      + weighted(fstar_terms(pb.activation, n, A @ Xv + Wp), w)
                      - cp.sum(cp.multiply(Xv, G)) + 0.5 * cp.sum_squares(Sm @ Xv)) / m + const
        prob = cp.Problem(cp.Minimize(obj), fcons)
        check_compiled("X", prob)
        self._x_cache[k] = (prob, Xv, A, Wp, G, Sm, C, R, CtY, const)
        return self._x_cache[k]

    def solve_x(self, A, B, b, C, D, d, X, lam, solve, cols=None) -> tuple[Array, SolveInfo]:
        """The DCA step on X (:mod:`fenchel_idl.blocks.dca`) by batches of columns; with
        ``cols`` only on those columns (``X`` then holds them), with the full 1/m scaling."""
        pb = self.problem
        self._ensure_stage(lam)
        data = x_step_data(pb, A, B, b, D, d, X, lam, cols)
        R = data.R
        Y = pb.Y if cols is None else pb.Y[:, cols]
        classify = isinstance(pb.loss, CrossEntropyLoss)
        if not classify:
            R = R - Y
        k = X.shape[1]
        batches = []
        # the constant left out of the X problem, per column: 1/2 xbar^T S+ xbar, with
        # S+ Xbar = G - Lam W, and for cross-entropy -<y, D u + d>
        const = 0.5 * np.sum(X * (data.G - lam[:, None] * data.W), axis=0)
        if classify:
            const = const - np.sum(Y * R, axis=0)
        const = const / pb.m
        for j0 in range(0, k, self.col_batch):
            j1 = min(j0 + self.col_batch, k)
            CtY = C.T @ Y[:, j0:j1] if classify else np.zeros((pb.n, j1 - j0))
            batches.append((f"X[{j0}:{j1}]", (A, data.S_minus_root, C, data.W[:, j0:j1],
                                              data.G[:, j0:j1], R[:, j0:j1], CtY,
                                              float(np.sum(const[j0:j1])))))
        parts, infos = self._solve_batches("X", batches, solve)
        Xnew = np.empty_like(X)  # C order, whatever order the solver returns
        j0 = 0
        for part in parts:
            Xnew[:, j0:j0 + part.shape[1]] = part
            j0 += part.shape[1]
        return Xnew, _aggregate("X", infos)

    def solve_x_columns(self, params: tuple, name: str,
                        solve: Callable) -> tuple[Array, SolveInfo]:
        """One batch of columns of the X block, from the Parameter values that
        :meth:`solve_x` computes: (A, root of S-, C, B U + b, G, R, C^T Y, the constant)."""
        A, Smv, C, W, G, R, CtY, const = params
        prob, Xv, Ap, Wp, Gp, Sm, Cp, Rp, CtYp, Kp = self._x_problem(W.shape[1])
        Ap.value, Sm.value, Cp.value, Kp.value = A, Smv, C, const
        Wp.value, Gp.value, Rp.value, CtYp.value = W, G, R, CtY
        info = solve(prob, name)
        return np.array(Xv.value), info

    def _solve_batches(self, block: str, batches: list, solve: Callable) -> tuple[list, list]:
        """Solve the (name, params) batches of a separable block in order; returns the
        values and the SolveInfos. :class:`fenchel_idl.blocks.parallel.ParallelBlocks`
        sends them to an executor instead."""
        one = self.solve_x_columns if block == "X" else self.solve_ab_rows
        out = [one(params, name, solve) for name, params in batches]
        return [v for v, _ in out], [i for _, i in out]




#: Largest (q m)(n m) for which the cross-entropy (C, D) block is solved as the compiled
#: (DPP) problem; beyond it, CVXPY's parameter tensor gets too large (see Blocks.solve_cd).
_CD_DPP_MAX = 2e7
