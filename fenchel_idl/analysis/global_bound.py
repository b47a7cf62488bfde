"""Certified global lower bounds on the training loss of tiny ReLU implicit models.

BCD certifies every convex block and the final readout, but the training problem (6.1) is
non-convex: nothing in BCD bounds how far its model is from the best model of its size.
:func:`global_bound` gives that bound for small problems by solving the exact problem

    min  1/(2m) ||C X + D U + d 1^T - Y||_F^2
    s.t. X = max(0, A X + B U + b 1^T),  ||A||_inf <= kappa,
         ||B||_inf <= r_B, |b| <= r_B,  ||C||_inf <= r_C,  ||D||_inf <= r_D,

(standardized units, the balls of :class:`fenchel_idl.Bounds`) to global optimality with SCIP
(spatial branch-and-bound; pyscipopt, Apache 2.0):

- the ReLU is written by complementarity, one binary s_ij per state and sample with big-M
  constants from the state box of Theorem 4.1: ||x_j||_inf <= r_B (||u_j||_inf + 1)/(1 - kappa),
  and |z| is bounded by the same number;
- the bilinear terms A X and C X are left to SCIP, which relaxes them by McCormick envelopes
  and branches on them;
- two symmetries are removed, both without loss of generality: the states are ordered by
  their bias (a permutation of the states changes nothing), and the largest row of C has
  l1 norm exactly r_C (ReLU is positively homogeneous: scaling (B, b) by a <= 1 scales X by
  a, and C by 1/a restores the output; C = 0 is the case B = b = 0). The second one is what
  makes the relaxation useful: without it C and X trade scale freely and the McCormick
  envelopes of C X bound nothing.

The lower bound is SCIP's proven dual bound, less a margin of :data:`BOUND_MARGIN` (relative)
for its floating-point tolerances. The returned model is never SCIP's own point: its (A, B, b)
are projected onto the balls, the states are our equilibrium (Picard/Anderson) and (C, D, d)
our certified readout, and its loss is computed by us. The best of that model and the
``start`` model is returned, and a lower bound above its loss (beyond the margin) raises.

Both routes to a global bound grow exponentially in the number of parameters and indicators;
:data:`MAX_STATES` and :data:`MAX_INDICATORS` bound the sizes accepted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.blocks.block_solvers import Readout, SolvePolicy, State
from fenchel_idl.blocks.cvxpy_blocks import Blocks
from fenchel_idl.drivers.records import BCDResult, global_gap_line
from fenchel_idl.drivers.state import equilibrium
from fenchel_idl.errors import InputTypeError, ResourceError, SolverError, ValidationError
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.problem.losses import SquaredLoss
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import check_int, check_real

__all__ = ["BOUND_MARGIN", "MAX_INDICATORS", "MAX_STATES", "GlobalBound", "check_global_size",
           "global_bound"]

Array = NDArray[np.float64]

#: Largest number of states accepted.
MAX_STATES = 3
#: Largest number n * m of ReLU indicators (binaries) accepted.
MAX_INDICATORS = 150
#: Relative margin subtracted from SCIP's dual bound (its tolerances are 1e-6 and 1e-9).
BOUND_MARGIN = 1e-6
#: SCIP's default value of infinity: a bound of this size means "none yet".
_SCIP_INFINITY = 1e20


@dataclass(frozen=True)
class GlobalBound:
    """The result of :func:`global_bound` (losses in the problem's standardized units, like
    ``Certificate.true_loss``).

    Attributes
    ----------
    lower_bound : float
        No model of the problem's class (its n, kappa and balls) has a training loss below it.
    upper_bound : float
        The training loss of ``model`` at its true equilibrium, computed by fenchel_idl.
    model : ImplicitModel
        The best model found (raw units): the ``start`` model or the one built from SCIP's
        best (A, B, b) with our equilibrium and certified readout.
    source : str
        "start" or "scip": where ``model`` comes from.
    gap : float
        (upper_bound - lower_bound) / upper_bound (0 when both are 0).
    status : str
        SCIP's status ("optimal", "gaplimit", "timelimit", "nodelimit", ...).
    nodes : int
        Branch-and-bound nodes.
    time : float
        Wall seconds of the SCIP solve.
    trace : list of (time, nodes, dual bound, primal bound)
        SCIP's bounds during the solve (its objective: the same loss, SCIP's own points).
    """

    lower_bound: float
    upper_bound: float
    model: ImplicitModel
    source: str
    gap: float
    status: str
    nodes: int
    time: float
    trace: list = field(default_factory=list, repr=False)

    def gap_of(self, loss: float) -> float:
        """The certified relative gap of a model whose training loss is ``loss``:
        (loss - lower_bound) / loss."""
        return _relative_gap(float(loss), self.lower_bound)

    def to_dict(self) -> dict:
        """The figures (no model), for a certificate or a JSON record; the trace's rows are
        lists, and a bound SCIP holds at its infinity (no incumbent, no dual bound yet) is
        None."""
        out = asdict(self)
        out.pop("model")
        out["trace"] = [[None if isinstance(x, float) and not abs(x) < _SCIP_INFINITY else x
                         for x in row] for row in self.trace]
        return out

    def line(self, loss: float | None = None) -> str:
        """One certificate line: the gap of ``loss`` (default: of ``upper_bound``); the text of
        the "global gap" line of :class:`fenchel_idl.Certificate`."""
        loss = self.upper_bound if loss is None else float(loss)
        return global_gap_line(self.to_dict(), loss)

    def __str__(self) -> str:
        return "global gap: " + self.line()


def _relative_gap(upper: float, lower: float) -> float:
    return 0.0 if upper <= 0 else max(upper - lower, 0.0) / upper


def check_global_size(problem: TrainingProblem) -> None:
    """Raise unless :func:`global_bound` handles ``problem``: ReLU, squared loss, no penalty,
    finite balls on B and C, n <= MAX_STATES and n * m <= MAX_INDICATORS."""
    if not isinstance(problem, TrainingProblem):
        raise InputTypeError(f"'problem' must be a TrainingProblem; got "
                             f"{type(problem).__name__}.")
    n, m = problem.n, problem.m
    if n > MAX_STATES or n * m > MAX_INDICATORS:
        raise ResourceError(f"global_bound handles n <= {MAX_STATES} states and n * m <= "
                            f"{MAX_INDICATORS} ReLU indicators (branch-and-bound grows "
                            f"exponentially in both); got n = {n}, m = {m} (n * m = {n * m}).")
    if getattr(problem.activation, "name", None) != "relu":
        raise ValidationError(f"global_bound needs the 'relu' activation; got "
                              f"{problem.activation!r}.")
    if not isinstance(problem.loss, SquaredLoss):
        raise ValidationError(f"global_bound needs the 'squared' loss (a quadratic objective); "
                              f"got {problem.loss.name!r}. For two classes, train on +/-1 "
                              "targets with the squared loss.")
    if problem.penalties:
        raise ValidationError(f"global_bound needs a problem without penalties (the scale "
                              f"normalization changes their value); got "
                              f"{[pn.name for pn in problem.penalties]}.")
    if problem.bounds.B is None or problem.bounds.C is None:
        raise ValidationError("global_bound needs finite balls on B and C (bounds['B'] and "
                              f"bounds['C']); got {problem.bounds}.")


# -- the SCIP model ---------------------------------------------------------------------------

def _ball(mdl, rows: int, cols: int, radius: float | None, name: str) -> tuple[dict, dict]:
    """Variables M (rows, cols) with every row in the l1 ball of ``radius`` (None: free), and
    their absolute values T (T >= |M|, sum of a row of T <= radius)."""
    r = None if radius is None else float(radius)
    M = {(i, k): mdl.addVar(lb=None if r is None else -r, ub=r, name=f"{name}_{i}_{k}")
         for i in range(rows) for k in range(cols)}
    T: dict = {}
    if r is None:
        return M, T
    for i in range(rows):
        for k in range(cols):
            T[i, k] = mdl.addVar(lb=0.0, ub=r, name=f"abs{name}_{i}_{k}")
            mdl.addCons(M[i, k] <= T[i, k])
            mdl.addCons(-M[i, k] <= T[i, k])
        mdl.addCons(sum(T[i, k] for k in range(cols)) <= r)
    return M, T


def _scale_normalization(mdl, C: dict, TC: dict, q: int, n: int, rC: float) -> tuple[dict, dict]:
    """Some row of C has l1 norm exactly rC: sign binaries make T = |C|, and a binary per
    row selects one row whose norm reaches rC. Returns the two sets of binaries."""
    sign, full = {}, {}
    for o in range(q):
        for k in range(n):
            sign[o, k] = s = mdl.addVar(vtype="B", name=f"signC_{o}_{k}")
            mdl.addCons(TC[o, k] <= C[o, k] + 2 * rC * (1 - s))
            mdl.addCons(TC[o, k] <= -C[o, k] + 2 * rC * s)
        full[o] = mdl.addVar(vtype="B", name=f"fullC_{o}")
        mdl.addCons(sum(TC[o, k] for k in range(n)) >= rC * full[o])
    mdl.addCons(sum(full.values()) >= 1)
    return sign, full


def _parameters(mdl, pb: TrainingProblem) -> dict:
    """A, B, b, C, D, d with their balls, the state order and the scale normalization."""
    n, p, q = pb.n, pb.p, pb.q
    rB, rC = float(pb.bounds.B), float(pb.bounds.C)
    A, TA = _ball(mdl, n, n, pb.kappa, "A")
    B, TB = _ball(mdl, n, p, rB, "B")
    C, TC = _ball(mdl, q, n, rC, "C")
    D, TD = _ball(mdl, q, p, pb.bounds.D, "D")
    b = {i: mdl.addVar(lb=-rB if pb.bias else 0.0, ub=rB if pb.bias else 0.0, name=f"b_{i}")
         for i in range(n)}
    d = {o: mdl.addVar(lb=None if pb.bias else 0.0, ub=None if pb.bias else 0.0,
                       name=f"d_{o}") for o in range(q)}
    first = b if pb.bias else {i: B[i, 0] for i in range(n)}
    for i in range(n - 1):  # states in decreasing order of their bias (or first input weight)
        mdl.addCons(first[i] >= first[i + 1])
    sign, full = _scale_normalization(mdl, C, TC, q, n, rC)
    return {"A": A, "B": B, "b": b, "C": C, "D": D, "d": d, "TA": TA, "TB": TB, "TC": TC,
            "TD": TD, "signC": sign, "fullC": full}


def _states(mdl, pb: TrainingProblem, v: dict) -> None:
    """X = max(0, A X + B U + b) by complementarity, big-M from the state box (Theorem 4.1)."""
    n, p, m = pb.n, pb.p, pb.m
    rB, U = float(pb.bounds.B), pb.U
    box = rB * (np.abs(U).max(axis=0) + (1.0 if pb.bias else 0.0)) / (1.0 - pb.kappa)
    X, S, Zs = {}, {}, {}
    for j in range(m):
        M = float(box[j])
        for i in range(n):
            X[i, j] = mdl.addVar(lb=0.0, ub=M, name=f"X_{i}_{j}")
            S[i, j] = mdl.addVar(vtype="B", name=f"on_{i}_{j}")
        for i in range(n):
            Zs[i, j] = Z = mdl.addVar(lb=-M, ub=M, name=f"Z_{i}_{j}")
            mdl.addCons(Z == sum(v["A"][i, k] * X[k, j] for k in range(n))
                        + sum(float(U[l, j]) * v["B"][i, l] for l in range(p)) + v["b"][i])
            mdl.addCons(X[i, j] >= Z)
            mdl.addCons(X[i, j] <= M * S[i, j])
            mdl.addCons(X[i, j] - Z <= M * (1 - S[i, j]))
    v["X"], v["S"], v["Z"] = X, S, Zs


def _objective(mdl, pb: TrainingProblem, v: dict) -> None:
    """t >= 1/(2m) sum of squared residuals, residuals bilinear in (C, X); minimize t."""
    n, p, q, m = pb.n, pb.p, pb.q, pb.m
    res = {}
    for o in range(q):
        for j in range(m):
            res[o, j] = r = mdl.addVar(lb=None, ub=None, name=f"r_{o}_{j}")
            mdl.addCons(r == sum(v["C"][o, k] * v["X"][k, j] for k in range(n))
                        + sum(float(pb.U[l, j]) * v["D"][o, l] for l in range(p))
                        + v["d"][o] - float(pb.Y[o, j]))
    t = mdl.addVar(lb=0.0, ub=None, name="loss")
    mdl.addCons(sum(r * r for r in res.values()) <= 2.0 * m * t)
    mdl.setObjective(t, "minimize")
    v["r"], v["t"] = res, t


def _build(ps, pb: TrainingProblem) -> tuple[Any, dict]:
    mdl = ps.Model("fenchel_idl global bound")
    mdl.hideOutput()
    v = _parameters(mdl, pb)
    _states(mdl, pb, v)
    _objective(mdl, pb, v)
    return mdl, v


# -- points: the start given to SCIP, and the model built from SCIP's point ------------------

def _normalized(pb: TrainingProblem, A, B, b, C, D, d) -> tuple[Array, ...]:
    """The same predictor with its largest row of C at l1 norm r_C (module docstring)."""
    rC = float(pb.bounds.C)
    size = float(np.abs(C).sum(axis=1).max())
    if size <= 1e-12 * rC:
        C = np.zeros_like(C)
        C[0, 0] = rC
        return A, np.zeros_like(B), np.zeros_like(b), C, D, d
    a = min(size / rC, 1.0)
    return A, a * B, a * b, C / a, D, d


def _start_values(pb: TrainingProblem, params: tuple[Array, ...]) -> dict[str, Any]:
    """Every variable of the SCIP model at a model (standardized matrices), normalized and
    with its states in the order of the SCIP model."""
    A, B, b, C, D, d = _normalized(pb, *params)
    key = b if pb.bias else B[:, 0]
    P = np.argsort(-key, kind="stable")
    A, B, b, C = A[np.ix_(P, P)], B[P], b[P], C[:, P]
    X, _ = equilibrium(pb, State(A, B, b, C, D, d, np.zeros((pb.n, pb.m)), pb.lam0))
    Z = A @ X + B @ pb.U + b[:, None]
    R = C @ X + D @ pb.U + d[:, None] - pb.Y
    normC = np.abs(C).sum(axis=1)
    return {"A": A, "B": B, "b": b, "C": C, "D": D, "d": d, "TA": np.abs(A), "TB": np.abs(B),
            "TC": np.abs(C), "TD": np.abs(D), "signC": (C >= 0).astype(float),
            "fullC": (normC >= normC.max()).astype(float), "X": X, "Z": Z,
            "S": (X > 0).astype(float), "r": R, "t": 0.5 * float(np.sum(R * R)) / pb.m}


def _give_start(mdl, v: dict, pb: TrainingProblem, params: tuple[Array, ...]) -> None:
    """Offer a model to SCIP as a primal solution; SCIP checks it and drops it when it
    violates a constraint beyond its tolerance."""
    values = _start_values(pb, params)
    sol = mdl.createSol()
    for key, val in values.items():
        if key == "t":
            mdl.setSolVal(sol, v["t"], val)
            continue
        for idx, var in v[key].items():
            mdl.setSolVal(sol, var, float(np.asarray(val)[idx]))
    mdl.addSol(sol, free=True)


def _model_from(pb: TrainingProblem, A: Array, B: Array, b: Array) -> tuple[ImplicitModel, float]:
    """The model with (A, B, b) projected onto the balls, our equilibrium and our certified
    readout, and its training loss computed by us."""
    A = A * np.minimum(1.0, pb.kappa / np.maximum(np.abs(A).sum(axis=1), 1e-300))[:, None]
    rB = float(pb.bounds.B)
    B = B * np.minimum(1.0, rB / np.maximum(np.abs(B).sum(axis=1), 1e-300))[:, None]
    b = np.clip(b, -rB, rB) if pb.bias else np.zeros(pb.n)
    zero = np.zeros((pb.q, pb.n)), np.zeros((pb.q, pb.p)), np.zeros(pb.q)
    s = State(A, B, b, *zero, np.zeros((pb.n, pb.m)), pb.lam0)
    s.X, _ = equilibrium(pb, s)
    s, _ = Readout(Blocks(pb), SolvePolicy(pb.cone), first_order=False).solve(s)
    loss = pb.loss.value(pb.Y, s.C @ s.X + s.D @ pb.U + s.d[:, None])
    return pb.to_user_model(s.A, s.B, s.b, s.C, s.D, s.d), float(loss)


def _start_model(pb: TrainingProblem, start: Any) -> tuple[ImplicitModel, float] | None:
    """The start (an ImplicitModel or a BCDResult) and its training loss computed by us."""
    if start is None:
        return None
    if isinstance(start, BCDResult):
        start = start.model
    if not isinstance(start, ImplicitModel):
        raise InputTypeError(f"'start' must be None, an ImplicitModel or a BCDResult; got "
                             f"{type(start).__name__}.")
    A, B, b, C, D, d = pb.from_user_model(start)
    X, _ = equilibrium(pb, State(A, B, b, C, D, d, np.zeros((pb.n, pb.m)), pb.lam0))
    return start, float(pb.loss.value(pb.Y, C @ X + D @ pb.U + d[:, None]))


def _values(mdl, sol, v: dict, key: str, shape: tuple[int, ...]) -> Array:
    out = np.zeros(shape)
    for idx, var in v[key].items():
        out[idx] = mdl.getSolVal(sol, var)
    return out


# -- the bound trace ---------------------------------------------------------------------------

def _tracer(ps, every: float):
    """An event handler recording (time, nodes, dual, primal) after solved nodes, at most
    once per ``every`` seconds and whenever a bound moves."""

    class _Trace(ps.Eventhdlr):
        def __init__(self):
            self.rows: list[tuple[float, int, float, float]] = []
            self.t0 = time.perf_counter()

        def eventinit(self):
            self.model.catchEvent(ps.SCIP_EVENTTYPE.NODESOLVED, self)
            self.model.catchEvent(ps.SCIP_EVENTTYPE.BESTSOLFOUND, self)

        def eventexit(self):
            self.model.dropEvent(ps.SCIP_EVENTTYPE.NODESOLVED, self)
            self.model.dropEvent(ps.SCIP_EVENTTYPE.BESTSOLFOUND, self)

        def eventexec(self, event):
            mdl = self.model
            row = (time.perf_counter() - self.t0, int(mdl.getNNodes()),
                   float(mdl.getDualbound()), float(mdl.getPrimalbound()))
            last = self.rows[-1] if self.rows else None
            if last is None or row[0] - last[0] >= every or row[2:] != last[2:]:
                self.rows.append(row)

    return _Trace()


# -- the driver ---------------------------------------------------------------------------------

def global_bound(problem: TrainingProblem, *, time_limit: float = 60.0, gap: float = 1e-2,
                 start: Any = None, node_limit: int | None = None, seed: int = 0,
                 trace_every: float = 0.5) -> GlobalBound:
    """A certified lower bound on the training loss of every model of ``problem``'s class,
    and the best model found (module docstring).

    Parameters
    ----------
    problem : TrainingProblem
        ReLU, squared loss, no penalties, finite balls on B and C, n <= 3, n * m <= 150.
    time_limit : float
        Seconds given to SCIP.
    gap : float
        Stop once SCIP's relative gap is at most ``gap`` (0: prove optimality).
    start : ImplicitModel or BCDResult, optional
        A model (e.g. BCD's) offered to SCIP as its first incumbent; it is returned when
        nothing better is found.
    node_limit : int, optional
        Cap on branch-and-bound nodes.
    seed : int
        SCIP's random seed shift.
    trace_every : float
        Seconds between two recorded bound pairs (bound changes are always recorded).

    Returns
    -------
    GlobalBound

    Raises
    ------
    ResourceError
        n > MAX_STATES or n * m > MAX_INDICATORS.
    ValidationError
        Not ReLU, not the squared loss, penalties, or no ball on B or C.
    ImportError
        pyscipopt missing (``pip install fenchel_idl[global]``).
    SolverError
        SCIP's bound exceeds the loss of a model we evaluated ourselves: the bound would
        be false, so it is not returned.
    """
    check_global_size(problem)
    time_limit = check_real("time_limit", time_limit, 0.0, None, low_open=True)
    gap = check_real("gap", gap, 0.0, None)
    seed = check_int("seed", seed, low=0)
    if node_limit is not None:
        node_limit = check_int("node_limit", node_limit, low=1)
    try:
        import pyscipopt as ps
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test env
        raise ImportError("global_bound needs SCIP: pip install fenchel_idl[global]") from exc
    pb = problem
    candidates = [c for c in (_start_model(pb, start),) if c is not None]
    mdl, v = _build(ps, pb)
    if candidates:
        _give_start(mdl, v, pb, pb.from_user_model(candidates[0][0]))
    _set_limits(mdl, time_limit, gap, node_limit, seed)
    tracer = _tracer(ps, float(trace_every))
    mdl.includeEventhdlr(tracer, "fenchel_idl_trace", "records SCIP's bounds")
    t0 = time.perf_counter()
    mdl.optimize()
    elapsed = time.perf_counter() - t0
    return _result(pb, mdl, v, candidates, tracer.rows, elapsed)


def _set_limits(mdl, time_limit: float, gap: float, node_limit: int | None, seed: int) -> None:
    mdl.setParam("limits/time", time_limit)
    mdl.setParam("limits/gap", gap)
    if node_limit is not None:
        mdl.setParam("limits/nodes", node_limit)
    mdl.setParam("randomization/randomseedshift", seed)


def _result(pb: TrainingProblem, mdl, v: dict, candidates: list, trace: list,
            elapsed: float) -> GlobalBound:
    """The GlobalBound of a finished SCIP solve: our evaluation of SCIP's best point, the best
    model, SCIP's dual bound less the margin, checked against the best model's loss."""
    n, p = pb.n, pb.p
    sources = ["start"] * len(candidates)
    if mdl.getNSols() > 0:
        sol = mdl.getBestSol()
        A = _values(mdl, sol, v, "A", (n, n))
        B = _values(mdl, sol, v, "B", (n, p))
        b = _values(mdl, sol, v, "b", (n,))
        candidates.append(_model_from(pb, A, B, b))
        sources.append("scip")
    else:  # the linear model (no state in use) is always in the class
        candidates.append(_model_from(pb, np.zeros((n, n)), np.zeros((n, p)), np.zeros(n)))
        sources.append("scip")
    best = int(np.argmin([loss for _, loss in candidates]))
    model, upper = candidates[best]
    dual = float(mdl.getDualbound())
    lower = max(0.0, dual - BOUND_MARGIN * max(1.0, abs(dual))) if np.isfinite(dual) else 0.0
    if lower > upper + BOUND_MARGIN * max(1.0, upper):
        raise SolverError(f"SCIP's lower bound {lower:.9g} exceeds the loss {upper:.9g} of a "
                          "model evaluated by fenchel_idl; the bound is not returned.",
                          status=str(mdl.getStatus()))
    lower = min(lower, upper)
    return GlobalBound(lower_bound=lower, upper_bound=upper, model=model,
                       source=sources[best], gap=_relative_gap(upper, lower),
                       status=str(mdl.getStatus()), nodes=int(mdl.getNNodes()), time=elapsed,
                       trace=list(trace))
