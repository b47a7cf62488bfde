"""State-driven implicit modeling: fit an implicit model to the hidden states of a trained
network, one certified convex program per state.

Given a teacher (a feedforward network, seen as the implicit model of section 3.2) and
inputs U of shape (p, m), its states X = phi(A_t X + B_t U + b_t) and pre-activations
Z = A_t X + B_t U + b_t are collected. Each state row i is then refitted by the convex
program

    min_{a, b, c}  1/(2m) ||a X + b U + c 1^T - z_i||^2 + l1_A ||a||_1 + l1_B ||b||_1
    s.t.           gamma_i ||a||_1 <= kappa,

where gamma_i is the Lipschitz constant of the row's activation: together the rows give
||N(A, gamma)||_inf <= kappa < 1, so the fitted model is well-posed (Remark 2.4) whatever
the fit. The program depends on the data only through the Gram matrix of v_j = (x_j, u_j, 1),
so its size does not grow with m: with G / m = R^T R (eigendecomposition, which covers a
singular G) and R^T t = V z_i / m, the fit is 1/2 ||R w - t||^2 plus a constant.

Each row is solved by :func:`fenchel_idl.blocks.solvers.solve_certified` (one compiled DPP
problem, re-solved with the row's t), and the row that is returned, after exact zeros are
set where the solver left entries below ``zero_tol``, is certified again by a duality gap
computed here from the Fenchel dual of the program:

    max_theta  -1/2 ||theta||^2 - theta^T t - kappa_i (||R_a^T theta||_inf - l1_A)_+
    s.t.       ||R_b^T theta||_inf <= l1_B,  R_c^T theta = 0,

at theta = R w - t made dual feasible (projected onto R_c^T theta = 0, and onto
R_b^T theta = 0 too when l1_B = 0, then scaled into the l1_B box). Weak duality makes it a
lower bound for any theta, so the gap bounds the returned row's suboptimality.

The readout (C, D) is then refitted by the certified Gram readout
(:class:`fenchel_idl.blocks.gram.GramReadout`, squared loss) to the teacher's outputs at the
fitted model's own equilibrium states, or the teacher's readout is kept.

:func:`fit_teacher` is the problem-file form (a ``[teacher]`` table): it trains a
scikit-learn MLP on the problem's data and fits it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.blocks.cvxpy_terms import check_compiled
from fenchel_idl.blocks.first_order import fista, fista_info
from fenchel_idl.blocks.gram import GramReadout
from fenchel_idl.blocks.solvers import ON_FAILURE, SolveInfo, describe_solve, solve_certified
from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError
from fenchel_idl.model.activations import Blockwise, state_lipschitz
from fenchel_idl.model.feedforward import from_layers, from_mlp
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.model.wellposedness import pf_eigenvalue, rescale, well_posedness
from fenchel_idl.problem.projection import project_l1_rows
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import as_float_array, check_choice, check_int, check_real

__all__ = ["FIT_KEYS", "METHODS", "READOUTS", "TEACHER_KEYS", "RowCertificate", "StateFit",
           "fit_states", "fit_teacher", "teacher_model"]

Array = NDArray[np.float64]

#: How the readout (C, D) of the fitted model is made: "teacher" refits it to the teacher's
#: outputs (certified least squares on the Gram matrix), "keep" keeps the teacher's.
READOUTS = ("teacher", "keep")

#: How the rows are solved (see :func:`fit_states`).
METHODS = ("auto", "fista", "cvxpy")

#: Samples per chunk when the statistics are accumulated (bounds the memory of V).
_CHUNK = 10_000

#: What a state fit certifies, and what it does not.
_SCOPE = ("certified: each state row's convex program (its duality gap), the readout (C, D) "
          "as the least-squares fit to the teacher's outputs at the fitted states, and "
          "well-posedness (||N(A, gamma)||_inf <= kappa < 1); NOT certified: that the fitted "
          "model predicts as the teacher does (measured, not certified)")


@dataclass(frozen=True)
class RowCertificate:
    """The certificate of one fitted state row.

    Attributes
    ----------
    objective : float
        The row's objective at the returned (a_i, b_i, c_i).
    lower : float
        A lower bound on the row's optimum (the Fenchel dual value).
    gap : float
        (objective - lower) / max(1, |objective|).
    certified : bool
        gap <= tol and the solver's own record certified.
    residual : float
        RMS of a_i X + b_i U + c_i - z_i over the samples, relative to the RMS of z_i.
    solve : SolveInfo
        The record of the solver run that produced the row (for FISTA, the one run over all
        rows; the row's own gap above decides whether the row is certified).
    """

    objective: float
    lower: float
    gap: float
    certified: bool
    residual: float
    solve: SolveInfo


@dataclass(frozen=True)
class StateFit:
    """The result of :func:`fit_states`.

    Attributes
    ----------
    model : ImplicitModel
        The fitted model (raw inputs, as the teacher).
    teacher : ImplicitModel
        The teacher as an implicit model (rescaled when its ||A||_inf exceeded kappa).
    rows : tuple of RowCertificate
        One per state, in the order of the states.
    readout : SolveInfo or None
        The readout's record (None with ``readout="keep"``).
    sparsity_A, sparsity_B : float
        Fraction of exact zeros in the fitted A and B.
    samples : int
        Number of samples the programs were built from.
    time : float
        Wall time in seconds.
    kappa : float
        The radius of the well-posedness ball the rows were fitted in.
    """

    model: ImplicitModel
    teacher: ImplicitModel
    rows: tuple[RowCertificate, ...]
    readout: SolveInfo | None
    sparsity_A: float
    sparsity_B: float
    samples: int
    time: float
    kappa: float = float("nan")

    @property
    def certified(self) -> bool:
        """Every row and the readout certified."""
        return all(r.certified for r in self.rows) and (self.readout is None
                                                        or self.readout.certified)

    @property
    def max_gap(self) -> float:
        """The largest relative duality gap over the rows."""
        return max(r.gap for r in self.rows)

    def summary(self) -> str:
        """A few lines: rows certified, worst gap, fit residuals, sparsity, readout, time."""
        res = np.array([r.residual for r in self.rows])
        ok = sum(r.certified for r in self.rows)
        lines = [(f"state rows: {ok}/{len(self.rows)} certified, largest duality gap "
                 f"{self.max_gap:.2e}"),
                 f"relative fit residual: median {np.median(res):.3g}, max {res.max():.3g}",
                 (f"sparsity: A {self.sparsity_A:.1%} zeros, B {self.sparsity_B:.1%} zeros; "
                 f"||A||_inf = {_inf_norm(self.model.A):.4g}"),
                 "readout: " + ("teacher's kept" if self.readout is None
                                else describe_solve(self.readout)),
                 f"{self.samples} samples, {self.time:.1f} s"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The certificate as plain values (strict JSON): what is certified, every row's
        objective, dual bound, relative gap, residual and solver, the readout's record, the
        fitted model's well-posedness, sparsity, samples and time."""
        wp = well_posedness(self.model)
        rows = [{"state": i, "objective": r.objective, "lower": r.lower, "gap": r.gap,
                 "certified": r.certified, "residual": r.residual, "solver": r.solve.solver}
                for i, r in enumerate(self.rows)]
        return {"scope": _SCOPE, "certified": self.certified,
                "rows_certified": sum(r.certified for r in self.rows),
                "n_rows": len(self.rows), "max_gap": self.max_gap, "rows": rows,
                "readout": None if self.readout is None else self.readout.to_dict(),
                "well_posed": wp.well_posed, "pf_eigenvalue": wp.pf_eigenvalue,
                "norm_inf": wp.norm_inf, "kappa": None if np.isnan(self.kappa) else self.kappa,
                "sparsity_A": self.sparsity_A, "sparsity_B": self.sparsity_B,
                "samples": self.samples, "time": self.time}

    def certificate_text(self, rows: bool = True) -> str:
        """The certificate to read: what is certified and what is not, the rows, the readout
        and well-posedness, then (with ``rows``) one line per row: gap, residual, solver."""
        d = self.to_dict()
        ok = {True: "yes", False: "NO"}
        lines = ["Certificate of the state fit (fitted model)", f"  {_SCOPE}",
                 (f"  every row certified          : {ok[d['rows_certified'] == d['n_rows']]} "
                  f"({d['rows_certified']}/{d['n_rows']}, largest relative gap "
                  f"{d['max_gap']:.2e})"),
                 "  readout                      : " + ("the teacher's, kept (not refitted)"
                                                        if self.readout is None
                                                        else describe_solve(self.readout)),
                 (f"  well-posed                   : {ok[d['well_posed']]} (lambda_PF = "
                  f"{d['pf_eigenvalue']:.4f}, ||N(A, gamma)||_inf = {d['norm_inf']:.4f} <= "
                  f"kappa = {self.kappa:g})"),
                 (f"  sparsity                     : A {self.sparsity_A:.1%} zeros, B "
                  f"{self.sparsity_B:.1%} zeros"),
                 f"  fitted on                    : {self.samples} samples in {self.time:.1f} s"]
        if not rows:
            return "\n".join(lines)
        lines.append("Rows (relative duality gap, relative fit residual, solver)")
        lines += [f"  state {r['state']:>4}: gap {r['gap']:.2e}, residual {r['residual']:.3g}, "
                  f"{r['solver']}" + ("" if r["certified"] else ", NOT certified")
                  for r in d["rows"]]
        return "\n".join(lines)


def _inf_norm(A: Array) -> float:
    """||A||_inf, the largest row l1 norm."""
    return float(np.abs(A).sum(axis=1).max())


def teacher_model(teacher: Any) -> ImplicitModel:
    """The teacher as an implicit model: an ImplicitModel as is, a fitted scikit-learn MLP
    through :func:`fenchel_idl.from_mlp`, a list of weight matrices (W_0, ..., W_L) or a dict
    of :func:`fenchel_idl.from_layers` keywords (weights, biases, activations).

    Raises
    ------
    InputTypeError
        None of these.
    """
    if isinstance(teacher, ImplicitModel):
        return teacher
    if hasattr(teacher, "coefs_"):
        return from_mlp(teacher)
    if isinstance(teacher, Mapping):
        unknown = set(teacher) - {"weights", "biases", "activations"}
        if unknown or "weights" not in teacher:
            raise ValidationError("'teacher' as a dict must have the key 'weights' and "
                                  "optionally 'biases', 'activations'; got keys "
                                  f"{sorted(teacher)}.")
        return from_layers(**teacher)
    if isinstance(teacher, (list, tuple)):
        return from_layers(list(teacher))
    raise InputTypeError("'teacher' must be an ImplicitModel, a fitted scikit-learn MLP, a list "
                         f"of weight matrices or a dict of from_layers keywords; got "
                         f"{type(teacher).__name__}.")


def _prepare_teacher(teacher: Any, kappa: float) -> ImplicitModel:
    """The teacher's implicit model; when its ||A||_inf exceeds kappa and the activation allows
    it (ReLU-like), the equivalent diagonally rescaled model of section 2.5 with
    ||A'||_inf < kappa (rescaling A / kappa, which needs lambda_PF(|A|) < kappa), so that the
    teacher's own rows lie inside the ball the fit keeps."""
    model = teacher_model(teacher)
    phi = model.activation
    if (_inf_norm(model.A) <= kappa or not phi.componentwise
            or not phi.positively_homogeneous or pf_eigenvalue(np.abs(model.A)) >= kappa):
        return model
    scaled = rescale(model.replace(A=model.A / kappa))
    return scaled.replace(A=scaled.A * kappa)


def _statistics(model: ImplicitModel, U: Array) -> tuple[Array, Array, Array]:
    """G = V V^T, H = Z V^T and zz = (||z_i||^2)_i for V = (X; U; 1) at the teacher's states
    X and its pre-activations Z, accumulated over chunks of samples."""
    n, p = model.n, model.p
    k = n + p + 1
    G = np.zeros((k, k))
    H = np.zeros((n, k))
    zz = np.zeros(n)
    for j0 in range(0, U.shape[1], _CHUNK):
        Uc = U[:, j0:j0 + _CHUNK]
        X, _ = model.equilibrium(Uc, on_nonconvergence="raise")
        Z = model.A @ X + model.state_input(Uc)
        V = np.vstack([X, Uc, np.ones((1, Uc.shape[1]))])
        G += V @ V.T
        H += Z @ V.T
        zz += np.sum(Z * Z, axis=1)
    return G, H, zz


def _root(G: Array) -> tuple[Array, Array, Array]:
    """(R, Q_r, root) with G = R^T R, R = diag(root) Q_r^T over the eigenvalues above
    1e-12 of the largest."""
    ev, Q = np.linalg.eigh(G)
    keep = ev > 1e-12 * max(float(ev[-1]), 1e-300)
    root = np.sqrt(ev[keep])
    return root[:, None] * Q[:, keep].T, Q[:, keep], root


class _RowProgram:
    """The row programs of the module docstring over the shared root R (rows as the rows of
    W = [A, B, b] and T): their primal values, their Fenchel-dual lower bounds, the CVXPY
    program of one row (compiled on first use) and the batched first-order solve."""

    def __init__(self, R: Array, n: int, p: int, l1_A: float, l1_B: float):
        self.R, self.n, self.p, self.l1_A, self.l1_B = R, n, p, l1_A, l1_B
        self._cvxpy: tuple | None = None
        # columns of R whose dual constraint is an equality: c, and b without a penalty
        eq = R[:, n + p:] if l1_B > 0 else R[:, n:]
        Qe, se, _ = np.linalg.svd(eq, full_matrices=False)
        self.eq_basis = Qe[:, se > 1e-12 * max(float(se[0]), 1e-300)] if se.size else Qe

    def _compiled(self) -> tuple:
        if self._cvxpy is None:
            r, k = self.R.shape
            w, t = cp.Variable(k, name="w"), cp.Parameter(r, name="t")
            radius = cp.Parameter(nonneg=True, name="radius")
            a, b = w[:self.n], w[self.n:self.n + self.p]
            obj = 0.5 * cp.sum_squares(self.R @ w - t)
            if self.l1_A > 0:
                obj = obj + self.l1_A * cp.norm1(a)
            if self.l1_B > 0:
                obj = obj + self.l1_B * cp.norm1(b)
            prob = cp.Problem(cp.Minimize(obj), [cp.norm1(a) <= radius])
            check_compiled("state row", prob)
            self._cvxpy = (prob, w, t, radius)
        return self._cvxpy

    def solve(self, t: Array, radius: float, tol: float, on_failure: str, solvers):
        """One row by :func:`solve_certified` (the CVXPY program)."""
        prob, w, tp, rp = self._compiled()
        tp.value, rp.value = t, radius
        info = solve_certified(prob, "state row", "socp", solvers, on_failure, tol)[-1]
        return np.array(w.value, dtype=float), info

    def primal(self, W: Array, T: Array) -> Array:
        """The rows' objectives (without the constant), shape (rows,)."""
        n, p = self.n, self.p
        res = W @ self.R.T - T
        return (0.5 * np.sum(res * res, axis=1) + self.l1_A * np.abs(W[:, :n]).sum(axis=1)
                + self.l1_B * np.abs(W[:, n:n + p]).sum(axis=1))

    def lower(self, W: Array, T: Array, radii: Array) -> Array:
        """The dual values at theta_i = R w_i - t_i made feasible (module docstring)."""
        n, p = self.n, self.p
        theta = W @ self.R.T - T
        theta = theta - (theta @ self.eq_basis) @ self.eq_basis.T
        S = theta @ self.R
        if self.l1_B > 0 and p:
            top = np.abs(S[:, n:n + p]).max(axis=1)
            scale = np.where(top > self.l1_B, self.l1_B / np.maximum(top, 1e-300), 1.0)
            theta, S = theta * scale[:, None], S * scale[:, None]
        excess = np.maximum(np.abs(S[:, :n]).max(axis=1) - self.l1_A, 0.0)
        return -0.5 * np.sum(theta * theta, axis=1) - np.sum(theta * T, axis=1) - radii * excess

    def first_order(self, T: Array, radii: Array, const: Array, tol: float,
                    max_iter: int) -> tuple[Array, SolveInfo]:
        """All rows at once by FISTA (:func:`fenchel_idl.blocks.first_order.fista`) with the
        proximal map of the l1 terms and the ball (soft thresholding, then the projection on
        the ball: the two compose), stopped on the largest relative row gap."""
        t0 = time.perf_counter()
        n, p = self.n, self.p
        Gm, RT = self.R.T @ self.R, T @ self.R  # G / m and H / m
        L = max(float(np.linalg.eigvalsh(Gm)[-1]), 1e-300)

        def grad_obj(W):  # the criterion is the relative gap itself, so f is reported as 0
            return 0.0, W @ Gm - RT

        def prox(V):
            out = V.copy()
            a = np.sign(V[:, :n]) * np.maximum(np.abs(V[:, :n]) - self.l1_A / L, 0.0)
            out[:, :n] = project_l1_rows(a, radii)
            out[:, n:n + p] = np.sign(V[:, n:n + p]) * np.maximum(
                np.abs(V[:, n:n + p]) - self.l1_B / L, 0.0)
            return out

        def certificate(W, f, g):
            P = self.primal(W, T) + const
            return float(np.max((P - self.lower(W, T, radii) - const)
                                / np.maximum(1.0, np.abs(P))))

        W, _, gap, iters = fista(grad_obj, prox, certificate, np.zeros((T.shape[0], n + p + 1)),
                                 L, tol, max_iter, check_every=10)
        return W, fista_info("state rows", 0.0, gap, iters, tol, t0)


def _row_certificate(prog: _RowProgram, w: Array, t: Array, radius: float, const: float,
                     tol: float, info: SolveInfo) -> RowCertificate:
    """The certificate of the returned row w: its objective, its dual lower bound, their
    relative gap and the relative fit residual. ``const`` is the objective's constant
    (1/(2m) ||z_i||^2 - ||t||^2 / 2). A CVXPY row needs its solver's record certified too."""
    n, p = prog.n, prog.p
    f = float(prog.primal(w[None], t[None])[0]) + const
    lo = float(prog.lower(w[None], t[None], np.array([radius]))[0]) + const
    gap = max(f - lo, 0.0) / max(1.0, abs(f))
    fit = f - prog.l1_A * np.abs(w[:n]).sum() - prog.l1_B * np.abs(w[n:n + p]).sum()
    zz = max(2.0 * const + float(t @ t), 1e-300)  # ||z_i||^2 / m
    ok = gap <= tol and (info.solver == "FISTA" or info.certified)
    return RowCertificate(f, lo, gap, bool(ok), float(np.sqrt(max(2.0 * fit, 0.0) / zz)), info)


def _fit_row(prog: _RowProgram, t: Array, radius: float, const: float, zero_tol: float,
             tol: float, on_failure: str, solvers) -> tuple[Array, RowCertificate]:
    """Solve one row by CVXPY; set the entries of (a, b) below zero_tol times the largest to
    exact zeros when the row's own gap stays within tol (else keep the row as solved)."""
    w, info = prog.solve(t, radius, tol, on_failure, solvers)
    n, p = prog.n, prog.p
    wz = w.copy()
    scale = max(float(np.abs(w[:n + p]).max()), 1e-300)
    wz[:n + p][np.abs(wz[:n + p]) <= zero_tol * scale] = 0.0
    cert = _row_certificate(prog, wz, t, radius, const, tol, info)
    if cert.gap <= tol:
        return wz, cert
    return w, _row_certificate(prog, w, t, radius, const, tol, info)


def _fit_rows(prog: _RowProgram, T: Array, radii: Array, const: Array, method: str,
              max_iter: int, zero_tol: float, tol: float, on_failure: str,
              solvers) -> tuple[Array, list[RowCertificate]]:
    """Every row: by the batched first-order solve (``method`` "fista" or "auto"), then by
    CVXPY for the rows it did not certify ("auto") or for all ("cvxpy"). With "fista" an
    uncertified row is kept, and its certificate says so."""
    n, k = T.shape[0], prog.n + prog.p + 1
    W = np.zeros((n, k))
    rows: list[RowCertificate | None] = [None] * n
    if method != "cvxpy":
        Wf, info = prog.first_order(T, radii, const, tol, max_iter)
        for i in range(n):
            cert = _row_certificate(prog, Wf[i], T[i], float(radii[i]), float(const[i]), tol,
                                    info)
            if cert.certified or method == "fista":
                W[i], rows[i] = Wf[i], cert
    for i in range(n):
        if rows[i] is None:
            W[i], rows[i] = _fit_row(prog, T[i], float(radii[i]), float(const[i]), zero_tol,
                                     tol, on_failure, solvers)
    return W, rows  # type: ignore[return-value]


def _check_settings(kappa, l1_A, l1_B, readout, samples, tol, zero_tol, on_failure, method,
                    max_iter):
    kappa = check_real("kappa", kappa, 0.0, 1.0, low_open=True, high_open=True)
    l1_A = check_real("l1_A", l1_A, 0.0, None)
    l1_B = check_real("l1_B", l1_B, 0.0, None)
    check_choice("readout", readout, READOUTS)
    if samples is not None:
        check_int("samples", samples, low=1)
    check_real("tol", tol, 0.0, None, low_open=True)
    check_real("zero_tol", zero_tol, 0.0, 1.0)
    check_choice("on_failure", on_failure, ON_FAILURE)
    check_choice("method", method, METHODS)
    check_int("max_iter", max_iter, low=1)
    return kappa, l1_A, l1_B


def fit_states(teacher: Any, U: ArrayLike, *, kappa: float = 0.5, l1_A: float = 1e-3,
               l1_B: float = 1e-3, readout: str = "teacher", samples: int | None = None,
               seed: int = 0, tol: float = 1e-6, zero_tol: float = 1e-6,
               on_failure: str = "fallback", solver: str | None = None,
               method: str = "auto", max_iter: int = 5000) -> StateFit:
    """Fit a well-posed implicit model to a teacher's hidden states, one certified convex
    program per state (see the module docstring).

    Parameters
    ----------
    teacher : ImplicitModel, fitted scikit-learn MLP, list of weights or dict
        See :func:`teacher_model`. A teacher whose ||A||_inf exceeds kappa is replaced by its
        rescaled equivalent (:func:`fenchel_idl.rescale`, ReLU-like activations).
    U : array_like of shape (p, m)
        Inputs, samples as columns.
    kappa : float in (0, 1)
        Radius of the well-posedness ball ||N(A, gamma)||_inf <= kappa.
    l1_A, l1_B : float >= 0
        Weights of the l1 penalties on the rows of A and of B.
    readout : {"teacher", "keep"}
        Refit (C, D) to the teacher's outputs at the fitted model's states (certified least
        squares), or keep the teacher's readout.
    samples : int, optional
        Fit on a seeded random subset of this many columns of U (all of them by default).
    tol : float
        Tolerance of every certificate (relative duality gap).
    zero_tol : float in [0, 1]
        Entries of a row of (A, B) below zero_tol times the row's largest are set to exact
        zeros, when the row's own duality gap stays within tol (otherwise the row is kept as
        solved).
    on_failure : {"fallback", "warn", "raise"}
        As in :func:`fenchel_idl.blocks.solve_certified`.
    solver : str, optional
        Force one CVXPY solver.
    method : {"auto", "fista", "cvxpy"}
        "auto": all rows at once by FISTA, certified by each row's dual gap, and the rows it
        does not certify within ``max_iter`` iterations by CVXPY (:func:`solve_certified`);
        "fista": FISTA only (an uncertified row is kept and its certificate says so);
        "cvxpy": every row by CVXPY.
    max_iter : int
        Iteration cap of the first-order solve.

    Returns
    -------
    StateFit

    Raises
    ------
    ValidationError, InputTypeError, ShapeError
        Bad settings, teacher or inputs.
    SolverError
        A row could not be certified (with ``on_failure`` "fallback" or "raise").
    """
    t0 = time.perf_counter()
    kappa, l1_A, l1_B = _check_settings(kappa, l1_A, l1_B, readout, samples, tol, zero_tol,
                                        on_failure, method, max_iter)
    model = _prepare_teacher(teacher, kappa)
    U = as_float_array("U", U, ndim=2)
    if U.shape[0] != model.p:
        raise ShapeError(f"'U' must have p = {model.p} rows (inputs, samples as columns); got "
                         f"shape {U.shape}.")
    if samples is not None and samples < U.shape[1]:
        idx = np.sort(np.random.default_rng(seed).choice(U.shape[1], samples, replace=False))
        U = U[:, idx]
    m, n, p = U.shape[1], model.n, model.p
    G, H, zz = _statistics(model, U)
    R, Qr, root = _root(G / m)
    T = (H / m) @ Qr / root[None, :]  # row i: t_i with R^T t_i = H_i / m
    prog = _RowProgram(R, n, p, l1_A, l1_B)
    radii = kappa / state_lipschitz(model.activation, n)
    const = 0.5 * (zz / m - np.sum(T * T, axis=1))
    solvers = (solver,) if solver else None
    W, rows = _fit_rows(prog, T, radii, const, method, max_iter, zero_tol, tol, on_failure,
                        solvers)
    fitted = model.replace(A=W[:, :n], B=W[:, n:n + p], bias_x=W[:, n + p])
    fitted, rec = _readout(fitted, model, U, readout, tol, on_failure, solvers)
    A, B = fitted.A, fitted.B
    return StateFit(fitted, model, tuple(rows), rec, float(np.mean(A == 0)),
                    float(np.mean(B == 0)), m, time.perf_counter() - t0, kappa)


def _readout(fitted: ImplicitModel, teacher: ImplicitModel, U: Array, readout: str, tol: float,
             on_failure: str, solvers) -> tuple[ImplicitModel, SolveInfo | None]:
    """(C, D, bias_y) refitted to the teacher's outputs at the fitted model's equilibrium
    states (the certified Gram readout, squared loss, no balls), or kept."""
    if readout == "keep":
        return fitted, None
    n, p, q, m = fitted.n, fitted.p, fitted.q, U.shape[1]
    k = n + p + 1
    G = np.zeros((k, k))
    Hl = np.zeros((q, k))
    for j0 in range(0, m, _CHUNK):
        Uc = U[:, j0:j0 + _CHUNK]
        X, _ = fitted.equilibrium(Uc, on_nonconvergence="raise")
        V = np.vstack([X, Uc, np.ones((1, Uc.shape[1]))])
        G += V @ V.T
        Hl += teacher.predict(Uc) @ V.T
    # the problem only carries the sizes, m and the (absent) balls: a placeholder sample
    # of the right shapes, since the Gram statistics are computed above
    pb = TrainingProblem(np.zeros((p, 1)), np.zeros((q, 1)), n, loss="squared",
                         activation=_plain_activation(fitted), kappa=0.5,
                         bounds={"B": None, "C": None, "D": None}, standardize=False)
    pb.m = m
    gram = GramReadout(pb)

    def solve(prob, name):
        return solve_certified(prob, name, "qp", solvers, on_failure, tol)[-1]

    C, D, d, info = gram.solve(G, Hl, fitted.A, fitted.B, solve)
    return fitted.replace(C=C, D=D, bias_y=d), info


def _plain_activation(model: ImplicitModel):
    """The model's activation in a form TrainingProblem accepts (componentwise)."""
    phi = model.activation
    return phi if isinstance(phi, Blockwise) or phi.componentwise else "relu"


#: Keys of a problem file's ``[teacher]`` table that describe the teacher network (a
#: scikit-learn MLP trained on the problem's data), with their scikit-learn names.
TEACHER_KEYS = {"hidden": "hidden_layer_sizes", "activation": "activation",
                "max_iter": "max_iter", "alpha": "alpha",
                "learning_rate_init": "learning_rate_init", "batch_size": "batch_size"}
#: Keys of ``[teacher]`` passed to :func:`fit_states`, with its keyword names: ``max_iter``
#: is the MLP's (scikit-learn's name), so the first-order iteration cap of the fit is
#: ``fit_max_iter``.
FIT_KEYS = {"kappa": "kappa", "l1_A": "l1_A", "l1_B": "l1_B", "readout": "readout",
            "samples": "samples", "tol": "tol", "zero_tol": "zero_tol",
            "on_failure": "on_failure", "solver": "solver", "method": "method",
            "fit_max_iter": "max_iter"}
#: The activations of a scikit-learn MLP (``[teacher] activation``).
_MLP_ACTIVATIONS = ("identity", "logistic", "relu", "tanh")


def _check_teacher_table(settings: Any) -> None:
    """The keys and values of a ``[teacher]`` table, checked before anything is trained:
    the network's as scikit-learn would check them, the fit's as :func:`fit_states` does.

    Raises
    ------
    InputTypeError
        ``settings`` is not a table, or a value of the wrong type.
    ValidationError
        An unknown key (all are named) or a value out of range.
    """
    if not isinstance(settings, Mapping):
        raise InputTypeError(f"'[teacher]' must be a table; got {type(settings).__name__}.")
    unknown = sorted(set(settings) - set(TEACHER_KEYS) - set(FIT_KEYS))
    if unknown:
        raise ValidationError(f"'[teacher]' keys must be among "
                              f"{sorted(TEACHER_KEYS) + list(FIT_KEYS)}; got {unknown}.")
    if "hidden" in settings:
        widths = settings["hidden"]
        widths = [widths] if isinstance(widths, int) and not isinstance(widths, bool) else widths
        if not isinstance(widths, (list, tuple)) or not widths:
            raise ValidationError("'hidden' must be a positive integer or a nonempty list of "
                                  f"them (the hidden layer widths); got {widths!r}.")
        for i, width in enumerate(widths):
            check_int(f"hidden[{i}]", width, low=1)
    if "activation" in settings:
        check_choice("activation", settings["activation"], _MLP_ACTIVATIONS)
    for key in ("max_iter", "batch_size"):
        if key in settings:
            check_int(key, settings[key], low=1)
    if "alpha" in settings:
        check_real("alpha", settings["alpha"], 0.0, None)
    if "learning_rate_init" in settings:
        check_real("learning_rate_init", settings["learning_rate_init"], 0.0, None,
                   low_open=True)
    fit = {**(fit_states.__kwdefaults__ or {}), **_fit_keywords(settings)}
    _check_settings(*(fit[k] for k in ("kappa", "l1_A", "l1_B", "readout", "samples", "tol",
                                       "zero_tol", "on_failure", "method", "max_iter")))
    if fit["solver"] is not None and not isinstance(fit["solver"], str):
        raise InputTypeError(f"'solver' must be a CVXPY solver name; got {fit['solver']!r}.")


def _fit_keywords(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`fit_states` that a ``[teacher]`` table states."""
    return {FIT_KEYS[k]: v for k, v in settings.items() if k in FIT_KEYS}


def _class_labels(Y: Array) -> Array:
    """Integer labels 0, ..., K-1 (K >= 3, every class present) from labels or one-hot
    columns: the index of the MLP's output unit is then the class. A binary
    MLPClassifier has one logistic output, which an argmax cannot read."""
    labels = Y.argmax(axis=0) if Y.ndim == 2 else Y
    k = Y.shape[0] if Y.ndim == 2 else int(labels.max()) + 1 if labels.size else 0
    classes = np.unique(labels)
    if k < 3 or not np.array_equal(classes, np.arange(k)):
        raise ValidationError("'Y' of a classification teacher must hold every class 0, ..., "
                              "K-1 with K >= 3 (scikit-learn's MLPClassifier gives two classes "
                              "one logistic output; train that as task='regression' on one-hot "
                              f"targets); got the classes {classes.tolist()[:10]} of K = {k}.")
    return labels


def fit_teacher(settings: Mapping[str, Any], U: ArrayLike, Y: ArrayLike, *,
                task: str = "classification", seed: int = 0) -> StateFit:
    """The ``[teacher]`` form: train a scikit-learn MLP on (U, Y), then :func:`fit_states`
    to it on U.

    Parameters
    ----------
    settings : mapping
        The ``[teacher]`` table: the network (:data:`TEACHER_KEYS`: hidden = layer widths,
        activation, max_iter, alpha, learning_rate_init, batch_size) and the fit
        (:data:`FIT_KEYS`: the keywords of :func:`fit_states`, its ``max_iter`` as
        ``fit_max_iter``). Every key and value is checked before the MLP is trained.
    U : array_like of shape (p, m)
        Training inputs, samples as columns.
    Y : array_like
        Integer labels 0, ..., K-1 of shape (m,) or one-hot columns (K, m), K >= 3 and every
        class present, for ``task="classification"``; targets (q, m) or (m,) for
        ``"regression"``.
    task : {"classification", "regression"}
    seed : int
        Seeds the MLP's training and the subsample of the fit.

    Raises
    ------
    ValidationError
        An unknown key (named in the message), a value out of range, a bad task, or
        classification labels that are not 0, ..., K-1 with K >= 3.
    InputTypeError
        ``settings`` is not a table, or a value of the wrong type.
    """
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    _check_teacher_table(settings)
    check_choice("task", task, ("classification", "regression"))
    seed = check_int("seed", seed, low=0)
    U = as_float_array("U", U, ndim=2)
    options = {TEACHER_KEYS[k]: (tuple(v) if isinstance(v, (list, tuple)) else v)
               for k, v in settings.items() if k in TEACHER_KEYS}
    Ya = np.asarray(Y)
    if task == "classification":
        mlp = MLPClassifier(random_state=seed, **options)
        mlp.fit(U.T, _class_labels(Ya))
    else:
        mlp = MLPRegressor(random_state=seed, **options)
        mlp.fit(U.T, Ya.T if Ya.ndim == 2 else Ya)
    return fit_states(mlp, U, seed=seed, **_fit_keywords(settings))
