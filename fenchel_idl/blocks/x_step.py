"""The certified DCA X step for ReLU, all samples at once, by projected Newton-CG.

The block (the relaxed objective with the concave part of -tr(X^T Lam A X) linearized at
Xbar, the current X; see :mod:`fenchel_idl.problem.training_problem`)::

    min_{X >= 0}  L(Y, C X + D U + d)
                  + (1/m) [ sum_i lam_i (1/2 (X - Z_+)_i^2 + X_i (Z_-)_i)
                            + 1/2 tr((X - Xbar)^T S+ (X - Xbar)) ],   Z = A X + B U + b,

is posed with the divergence as a sum of nonnegative terms and no constant: expanded into
1/2 lam X^2 + 1/2 lam Z_+^2 - <G, X> + ..., its value is a difference of terms a million
times the training loss, and a gap relative to that value would allow absolute errors far
above the loss.

**Certificate.** The block is (1/m) min(lam)-strongly convex, so
``phi(X) - phi* <= ||g||^2 / (2 mu)``, where g is the minimal-norm element of the
subdifferential (the projected gradient for X >= 0). That bound is the reported gap,
relative to max(1, phi(X)), which is at the scale of the training objective. It holds at
any X >= 0, whatever method produced it.

**Why Newton.** The objective is a sum of one n-dimensional problem per column (sample).
Up to its kinks, the Hessian of a column is::

    C^T H_j C  +  Lam + A^T Lam_{z_j > 0} A + S-,

with H_j the loss Hessian at the column's prediction (I for the squared loss,
diag(p) - p p^T for cross-entropy). Every term is positive semidefinite and Lam >= lam I.
With a small lam and a readout ball of 20, the first term is thousands of times the rest,
and a first-order method needs hundreds of iterations (its rate is governed by
||C||^2 / lam). But that term has rank at most q. Each column here takes a projected
Newton step (Bertsekas, "Projected Newton methods for optimization problems with simple
constraints", 1982): the coordinates at their bound with a gradient pushing out of the
orthant get a scaled gradient step; on the others the Newton system is solved by
conjugate gradients, preconditioned by diag(Lam + A^T Lam_z A + S-) + C^T H_j C, whose
inverse is a q x q solve per column (Woodbury). The step then backtracks along the
projection arc (Armijo, per column). The iterations needed no longer grow with ||C||^2/lam.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.dca import x_step_data
from fenchel_idl.blocks.first_order import fista_info
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.problem.losses import CrossEntropyLoss

__all__ = ["XStepObjective", "fast_x_block", "newton_x"]

Array = NDArray[np.float64]

#: Armijo's sufficient-decrease fraction, and the step's halvings before a column gives up.
_ARMIJO, _BACKTRACKS = 0.1, 30
#: Conjugate-gradient iterations per Newton step, and the relative residual (in the
#: preconditioner's norm, squared) at which they stop.
_CG_MAX, _CG_TOL = 10, 1e-4


class XStepObjective:
    """The X block's objective at the current (A, B, b, C, D, d, X, lam): values per column,
    the gradient, Hessian products, the Woodbury preconditioner and the certificate.
    Values and gradients here are per column, *not* divided by m; :meth:`value_grad` gives
    the block objective (divided by m) and its gradient."""

    def __init__(self, problem, A, B, b, C, D, d, X, lam):
        data = x_step_data(problem, A, B, b, D, d, X, lam)
        self.Y, self.m = problem.Y, problem.m
        self.A, self.C, self.W, self.R = A, C, data.W, data.R
        self.Xbar, self.lam = X, lam[:, None]
        self.S_minus = data.S_minus
        M = lam[:, None] * A
        self.S_plus = M + M.T + data.S_minus
        self.min_eigenvalue = data.min_eigenvalue
        self.ce = isinstance(problem.loss, CrossEntropyLoss)
        self.mu = float(lam.min()) / problem.m
        self._diag_base = (lam + np.diag(data.S_minus))[:, None]
        self._A2 = A * A

    def columns(self, Xc: Array) -> tuple[Array, dict]:
        """Each column's objective (times m) at Xc, and what its gradient reuses."""
        Yhat = self.C @ Xc + self.R
        if self.ce:
            mx = Yhat.max(axis=0, keepdims=True)
            ex = np.exp(Yhat - mx)
            tot = ex.sum(axis=0, keepdims=True)
            # Y's columns are on the simplex (CrossEntropyLoss)
            loss = (mx + np.log(tot))[0] - np.sum(self.Y * Yhat, axis=0)
            P = ex / tot
            dloss = P - self.Y
        else:
            E = Yhat - self.Y
            loss, P, dloss = 0.5 * np.sum(E * E, axis=0), None, E
        Z = self.A @ Xc + self.W
        Zp = np.maximum(Z, 0.0)
        Ex = Xc - Zp
        SD = self.S_plus @ (Xc - self.Xbar)
        # the divergence in its stable form 1/2 (x - z+)^2 + x z- (x >= 0), plus the DCA
        # excess 1/2 (X - Xbar)^T S+ (X - Xbar) >= 0: no large cancelling terms, no constant
        val = (loss + np.sum(self.lam * (0.5 * Ex * Ex + Xc * (Zp - Z)), axis=0)
               + 0.5 * np.sum((Xc - self.Xbar) * SD, axis=0))
        return val, {"P": P, "dloss": dloss, "Z": Z, "Ex": Ex, "SD": SD}

    def gradient(self, Xc: Array, parts: dict) -> Array:
        """Each column's gradient (times m) at Xc, from :meth:`columns`' parts."""
        return (self.C.T @ parts["dloss"] + self.lam * (Xc - parts["Z"])
                - self.A.T @ (self.lam * parts["Ex"]) + parts["SD"])

    def value_grad(self, Xc: Array) -> tuple[float, Array]:
        """The block objective and its gradient."""
        val, parts = self.columns(Xc)
        return float(val.sum()) / self.m, self.gradient(Xc, parts) / self.m

    def certificate(self, Xc: Array, f: float, g: Array) -> float:
        """The bound ||g_min||^2 / (2 mu) on phi(Xc) - phi* (g the block gradient at Xc, f
        its value, unused: the signature of :func:`fenchel_idl.blocks.first_order.fista`)."""
        gmin = np.where(Xc > 0, g, np.minimum(g, 0.0))
        return float(np.sum(gmin * gmin)) / (2.0 * self.mu)

    def lipschitz(self) -> float:
        """A Lipschitz constant of the block gradient (what a first-order method steps by)."""
        c2 = float(np.linalg.norm(self.C, 2)) ** 2
        return (c2 * (0.5 if self.ce else 1.0)
                + float(self.lam.max()) * (1.0 + float(np.linalg.norm(self.A, 2)) ** 2)
                + max(-self.min_eigenvalue, 0.0)) / self.m

    def _loss_hessian(self, P: Array | None, V: Array) -> Array:
        """H_j v_j for every column (V is q x columns)."""
        if P is None:
            return V
        return P * V - P * np.sum(P * V, axis=0, keepdims=True)

    def newton_operators(self, parts: dict, free: Array):
        """The Hessian product restricted to the free coordinates, the diagonal of its
        non-loss part, and the preconditioner's inverse (Woodbury), at the point of
        ``parts``."""
        P, C, A, lam = parts["P"], self.C, self.A, self.lam
        lam_z = lam * (parts["Z"] > 0)
        Fm = free.astype(float)
        diag = self._diag_base + self._A2.T @ lam_z
        Dinv = Fm / diag
        K = np.einsum("ki,ij,li->jkl", C, Dinv, C, optimize=True)  # C diag(Dinv_j) C^T
        q = C.shape[0]
        if P is None:
            HK = K
        else:
            Pt = P.T[:, :, None]
            HK = Pt * K - Pt * np.einsum("jk,jkl->jl", P.T, K)[:, None, :]
        system = np.eye(q)[None] + HK                           # I + H_j K_j, invertible

        def hess(V: Array) -> Array:
            return Fm * (C.T @ self._loss_hessian(P, C @ V) + lam * V
                         + A.T @ (lam_z * (A @ V)) + self.S_minus @ V)

        def precondition(Rv: Array) -> Array:
            z = Dinv * Rv
            rhs = self._loss_hessian(P, C @ z).T[:, :, None]
            y = np.linalg.solve(system, rhs)[:, :, 0].T
            return z - Dinv * (C.T @ y)

        return hess, diag, precondition


def _cg(hess, precondition, rhs: Array) -> Array:
    """Preconditioned conjugate gradients on hess(d) = rhs, every column its own system;
    stops when every column's residual has fallen by ``_CG_TOL`` (squared, preconditioned
    norm) or after ``_CG_MAX`` iterations. From 0, every iterate is a descent direction."""
    d = np.zeros_like(rhs)
    r = rhs.copy()
    z = precondition(r)
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    stop = _CG_TOL * rz
    for _ in range(_CG_MAX):
        Hp = hess(p)
        pHp = np.sum(p * Hp, axis=0)
        alpha = np.divide(rz, pHp, out=np.zeros_like(rz), where=pHp > 0)
        d += alpha * p
        r -= alpha * Hp
        z = precondition(r)
        rz_new = np.sum(r * z, axis=0)
        if np.all(rz_new <= stop):
            break
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
        p = z + beta * p
        rz = rz_new
    return d


def newton_x(obj: XStepObjective, X0: Array, tol: float, max_iter: int
             ) -> tuple[Array, float, float, int]:
    """Projected Newton-CG on the X block from max(X0, 0) until its certified gap is within
    ``tol`` (relative to max(1, objective)) or ``max_iter`` Newton steps. Returns
    (X, objective, gap, steps)."""
    x = np.maximum(X0, 0.0)
    val, parts = obj.columns(x)
    g = obj.gradient(x, parts)
    steps = 0
    while True:
        f = float(val.sum()) / obj.m
        gap = obj.certificate(x, f, g / obj.m)
        if gap <= tol * max(1.0, abs(f)) or steps == max_iter:
            return x, f, gap, steps
        steps += 1
        # Bertsekas' epsilon-active set: near the bound with the gradient pushing out
        width = np.sqrt(np.sum((x - np.maximum(x - g, 0.0)) ** 2, axis=0, keepdims=True))
        active = (x <= np.minimum(width, 1e-3)) & (g > 0)
        free = ~active
        hess, diag, precondition = obj.newton_operators(parts, free)
        direction = _cg(hess, precondition, np.where(free, -g, 0.0)) - active * g / diag
        slope = np.sum(free * g * direction, axis=0)
        step = np.ones(x.shape[1])
        todo = np.ones(x.shape[1], dtype=bool)
        # the accepted columns' values and parts are kept: no evaluation at the new point
        x_new, val_new = x.copy(), val.copy()
        parts_new = {k: None if v is None else v.copy() for k, v in parts.items()}
        for _ in range(_BACKTRACKS):
            xt = np.maximum(x + step * direction, 0.0)
            vt, pt = obj.columns(xt)
            decrease = step * slope + np.sum(active * g * (xt - x), axis=0)
            # per column; a rounding allowance lets a converged column accept its step
            ok = todo & (vt <= val + _ARMIJO * decrease + 1e-12 * (1.0 + np.abs(val)))
            x_new[:, ok], val_new[ok] = xt[:, ok], vt[ok]
            for k, v in pt.items():
                if v is not None:
                    parts_new[k][:, ok] = v[:, ok]
            todo &= ~ok
            if not todo.any():
                break
            step = np.where(todo, 0.5 * step, step)
        if todo.all():  # no column can decrease: the point is as good as rounding allows
            return x, f, gap, steps
        x, val, parts = x_new, val_new, parts_new
        g = obj.gradient(x, parts)


def fast_x_block(problem, A, B, b, C, D, d, X, lam, tol: float = 1e-7,
                 max_iter: int = 100) -> tuple[Array, SolveInfo]:
    """The DCA X step for ReLU, all samples at once (see the module docstring): projected
    Newton-CG from the current X, with the strong-convexity certificate. ``max_iter``
    bounds the Newton steps."""
    t0 = time.perf_counter()
    obj = XStepObjective(problem, A, B, b, C, D, d, X, lam)
    Xn, f, gap, steps = newton_x(obj, X, tol, max_iter)
    return Xn, fista_info("X", f, gap, steps, tol, t0, solver="projected Newton",
                          unit="Newton steps")
