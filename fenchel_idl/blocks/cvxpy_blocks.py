"""The three convex blocks of the relaxed training problem, each compiled once as a
parameterized (DPP) CVXPY problem and re-solved (section 6.3).
"""

from __future__ import annotations

from typing import Any, Mapping

import cvxpy as cp
import numpy as np
from numpy.typing import NDArray

from fenchel_idl.model.activations import Activation, Blockwise
from fenchel_idl.errors import NotConvexError
from fenchel_idl.problem.losses import CrossEntropyLoss
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.model.activations import state_lipschitz

Array = NDArray[np.float64]


# ----------------------------------------------------------------------------------------
# The three blocks, each compiled once with Parameters
# ----------------------------------------------------------------------------------------
def _f_terms(phi: Activation, n: int, X: Any):
    """Sum over states of f(X_i) as (list of expressions per block, constraints)."""
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, cons, start = [], [], 0
    for size, act in parts:
        term = act.f_cvxpy(X[start:start + size])
        out.append((slice(start, start + size), term.expr))
        cons.extend(term.constraints)
        start += size
    return out, cons


def _fstar_terms(phi: Activation, n: int, Z: Any):
    parts = phi.blocks if isinstance(phi, Blockwise) else ((n, phi),)
    out, start = [], 0
    for size, act in parts:
        out.append((slice(start, start + size), act.fstar_cvxpy(Z[start:start + size])))
        start += size
    return out


def _weighted(terms, w: Any):
    """sum_i w_i * sum_j term_ij for a (n, 1) nonnegative parameter w."""
    return sum(cp.sum(cp.multiply(w[sl], expr)) for sl, expr in terms)


def _inf_ball(M: Any, radius: float) -> list:
    return [cp.sum(cp.abs(M), axis=1) <= radius]


def _penalty_terms(problem: TrainingProblem, M: Mapping[str, Any]):
    expr, cons = 0.0, []
    for pn in problem.penalties:
        e, c = pn.expression(M)
        expr = expr + e
        cons += c
    return expr, cons


def _aggregate(block: str, infos: list[SolveInfo]) -> SolveInfo:
    """One record for a block solved as several batches: worst gap, all certified?"""
    gaps = [i.gap for i in infos if i.gap is not None]
    res = [i.kkt_residual for i in infos if i.kkt_residual is not None]
    bad = [i for i in infos if not i.certified]
    return SolveInfo(block=block, solver="+".join(sorted({i.solver for i in infos})),
                     status=bad[0].status if bad else infos[-1].status,
                     objective=float(sum(i.objective or 0.0 for i in infos)),
                     gap=max(gaps) if gaps else None, kkt_residual=max(res) if res else None,
                     certified=not bad, time=float(sum(i.time for i in infos)),
                     attempt=max(i.attempt for i in infos),
                     note=bad[0].note if bad else f"{len(infos)} batch(es)")


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
    """

    def __init__(self, problem: TrainingProblem, row_batch: int = 25, col_batch: int = 50):
        self.problem = pb = problem
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
        self._check("(C, D)", self.cd)
        self.gammas = state_lipschitz(pb.activation, n)

    def _cd_problem(self, X: Any, A: Any, B: Any) -> tuple[cp.Problem, tuple]:
        """The (C, D) problem at X (Parameters, or constants), and its variables."""
        pb = self.problem
        n, p, q, m = pb.n, pb.p, pb.q, pb.m
        Cv, Dv = cp.Variable((q, n), name="C"), cp.Variable((q, p), name="D")
        dv = cp.Variable((q, 1), name="d") if pb.bias else None
        Yhat = Cv @ X + Dv @ pb.U + (dv @ np.ones((1, m)) if dv is not None else 0)
        pen, pcons = _penalty_terms(pb, {"A": A, "B": B, "C": Cv, "D": Dv})
        cons = list(pcons)
        if pb.bounds.C is not None:
            cons += _inf_ball(Cv, pb.bounds.C)
        if pb.bounds.D is not None:
            cons += _inf_ball(Dv, pb.bounds.D)
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
        with m); for cross-entropy on all samples."""
        if not isinstance(self.problem.loss, CrossEntropyLoss):
            from fenchel_idl.blocks.gram import GramReadout

            if self._gram is None:
                self._gram = GramReadout(self.problem)
            G, Hl = self._gram.statistics(X)
            return self._gram.solve(G, Hl, A, B, solve)
        pb = self.problem
        if pb.q * pb.m * pb.n * pb.m <= _CD_DPP_MAX:
            self.Xcd.value, self.Acd.value, self.Bcd.value = X, A, B
            prob, (Cv, Dv, dv) = self.cd, self.cd_vars
        else:
            # CVXPY's DPP tensor for C @ X grows like (q m)(n m): measured 4 GB and 61 s for
            # the first digits cross-entropy solve at n = 10, out of memory at n = 64. Past
            # _CD_DPP_MAX the block is rebuilt with X, A, B as constants (0.5 GB at n = 64;
            # the compile is small next to the exponential-cone solve).
            prob, (Cv, Dv, dv) = self._cd_problem(X, A, B)
        info = solve(prob, "CD")
        d = dv.value[:, 0] if dv is not None else np.zeros(self.problem.q)
        return np.array(Cv.value), np.array(Dv.value), np.array(d), info

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
        # prox/2 ||W - centre||^2 written DPP-style: sqrt(prox) and sqrt(prox) * centre
        centre = cp.Parameter((r, k), name="sqrt_prox_times_current")
        prox = cp.Parameter(nonneg=True, name="sqrt_prox")
        Z = W @ V
        obj = ((cp.sum(act.fstar_cvxpy(Z)) - cp.sum(cp.multiply(W, T))) / m
               + 0.5 * cp.sum_squares(prox * W - centre))
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
        self._check("(A, B)", prob)
        self._ab_cache[key] = (prob, W, V, T, rho, radius, centre, prox)
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
        fz = _weighted(_fstar_terms(pb.activation, n, Z), lam[:, None])
        # <Lam X, A X + B U + b 1^T> = <A, Lam X X^T> + <B, Lam X U^T> + <b, Lam X 1>
        lin = cp.sum(cp.multiply(Av, TA)) + cp.sum(cp.multiply(Bv, TB))
        if bv is not None:
            lin = lin + cp.sum(cp.multiply(bv, Tb))
        pen, pcons = _penalty_terms(pb, {"A": Av, "B": Bv, "C": C, "D": D})
        cons = [cp.multiply(self.gammas[:, None], cp.sum(cp.abs(Av), axis=1, keepdims=True))
                <= pb.kappa] + list(pcons)
        if pb.bounds.B is not None:
            cons += _inf_ball(Bv, pb.bounds.B)
            if bv is not None:
                cons += [cp.abs(bv) <= pb.bounds.B]
        # proximal term weighted like the rows' divergence (lam_i), as in the row batches
        sl = np.sqrt(lam)[:, None]
        proxterm = 0.5 * cp.sum_squares(cp.multiply(sl, prox * Wv - centre))
        prob = cp.Problem(cp.Minimize((fz - lin) / m + pen + proxterm), cons)
        self._check("(A, B)", prob)
        return prob, (Av, Bv, bv), (X, TA, TB, Tb, C, D, centre, prox)

    def solve_ab(self, X, lam, C, D, solve, centre: Array,
                 prox: float) -> tuple[Array, Array, Array, SolveInfo]:
        """The proximal (A, B) step: the block objective plus prox/2 ||W - centre||^2
        (per row, weighted by lam_i in the joint form), W = [A, B, b]."""
        pb = self.problem
        n, p = pb.n, pb.p
        if not self.rowwise:
            self._ensure_stage(lam)
            if self._ab_joint is None:
                self._ab_joint = self._ab_joint_problem(lam)
            prob, (Av, Bv, bv), (Xp, TA, TB, Tb, Cp, Dp, Ce, Pw) = self._ab_joint
            Ce.value, Pw.value = np.sqrt(prox) * centre, np.sqrt(prox)
            LX = lam[:, None] * X
            Xp.value, TA.value, TB.value = X, LX @ X.T, LX @ pb.U.T
            Tb.value, Cp.value, Dp.value = LX.sum(axis=1, keepdims=True), C, D
            info = solve(prob, "AB")
            b = bv.value[:, 0] if bv is not None else np.zeros(n)
            return np.array(Av.value), np.array(Bv.value), np.array(b), info
        parts = [X, pb.U] + ([np.ones((1, pb.m))] if pb.bias else [])
        Vval = np.vstack(parts)
        Wall = np.zeros((n, Vval.shape[0]))
        infos = []
        for i0, i1, act in self._row_batches():
            prob, W, V, T, rho, radius, Ce, Pw = self._ab_rows_problem(i1 - i0, act)
            Ce.value, Pw.value = np.sqrt(prox) * centre[i0:i1], np.sqrt(prox)
            V.value = Vval
            T.value = X[i0:i1] @ Vval.T
            rho.value = (1.0 / lam[i0:i1])[:, None]
            radius.value = (pb.kappa / self.gammas[i0:i1])[:, None]
            infos.append(solve(prob, f"AB[{i0}:{i1}]"))
            Wall[i0:i1] = W.value
        b = Wall[:, n + p] if pb.bias else np.zeros(n)
        return Wall[:, :n], Wall[:, n:n + p], b, _aggregate("AB", infos)

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
        Yhat = C @ Xv + R
        if isinstance(pb.loss, CrossEntropyLoss):
            # the constant -<Y, R> of the loss is left out of the block objective
            loss = (cp.sum(cp.log_sum_exp(Yhat, axis=0)) - cp.sum(cp.multiply(CtY, Xv))) / m
        else:
            loss = cp.sum_squares(Yhat) / (2.0 * m)  # R holds D U + d - Y here
        fx_terms, fcons = _f_terms(pb.activation, n, Xv)
        obj = loss + (_weighted(fx_terms, w)
                      + _weighted(_fstar_terms(pb.activation, n, A @ Xv + Wp), w)
                      - cp.sum(cp.multiply(Xv, G)) + 0.5 * cp.sum_squares(Sm @ Xv)) / m
        prob = cp.Problem(cp.Minimize(obj), fcons)
        self._check("X", prob)
        self._x_cache[k] = (prob, Xv, A, Wp, G, Sm, C, R, CtY)
        return self._x_cache[k]

    def x_data(self, A, B, b, D, d, X, lam) -> tuple[Array, Array, Array, Array, bool]:
        """The DCA data of the X step: B U + b, the linear term G = Lam (B U + b) + S_+ X,
        the square root of S_-, the residual offset R (D U + d, minus Y for the squared
        loss) and whether the loss is the cross-entropy."""
        pb = self.problem
        Wall = B @ pb.U + b[:, None]
        M = lam[:, None] * A
        M = M + M.T
        ev, Q = np.linalg.eigh(M)
        Gall = lam[:, None] * Wall + (Q * np.maximum(ev, 0.0)) @ Q.T @ X
        Smv = (Q * np.sqrt(np.maximum(-ev, 0.0))) @ Q.T
        Rall = D @ pb.U + d[:, None]
        classify = isinstance(pb.loss, CrossEntropyLoss)
        if not classify:
            Rall = Rall - pb.Y
        return Wall, Gall, Smv, Rall, classify

    def solve_x(self, A, B, b, C, D, d, X, lam, solve) -> tuple[Array, SolveInfo]:
        """The DCA step on X (see the module docstring), by batches of columns."""
        pb = self.problem
        self._ensure_stage(lam)
        Wall, Gall, Smv, Rall, classify = self.x_data(A, B, b, D, d, X, lam)
        Xnew = np.empty_like(X)
        infos = []
        for j0 in range(0, pb.m, self.col_batch):
            j1 = min(j0 + self.col_batch, pb.m)
            prob, Xv, Ap, Wp, G, Sm, Cp, R, CtY = self._x_problem(j1 - j0)
            Ap.value, Sm.value, Cp.value = A, Smv, C
            Wp.value, G.value, R.value = Wall[:, j0:j1], Gall[:, j0:j1], Rall[:, j0:j1]
            CtY.value = C.T @ pb.Y[:, j0:j1] if classify else np.zeros((pb.n, j1 - j0))
            infos.append(solve(prob, f"X[{j0}:{j1}]"))
            Xnew[:, j0:j1] = Xv.value
        return Xnew, _aggregate("X", infos)

    @staticmethod
    def _check(name: str, prob: cp.Problem) -> None:
        if not prob.is_dcp():
            raise NotConvexError(f"the {name} block is not DCP; a penalty or constraint is "
                                 "not convex in the block's variables.")
        if not prob.is_dcp(dpp=True):
            raise NotConvexError(f"the {name} block is not DPP (it could not be compiled "
                                 "once and re-solved); a penalty uses a fixed matrix "
                                 "nonlinearly. Write it with the block's own variables.")


#: Largest (q m)(n m) for which the cross-entropy (C, D) block is solved as the compiled
#: (DPP) problem; beyond it, CVXPY's parameter tensor gets too large (see Blocks.solve_cd).
_CD_DPP_MAX = 2e7


