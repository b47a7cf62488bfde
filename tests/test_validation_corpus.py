"""A corpus of bad inputs across the public API (issue "Reliability").

Every entry is ``(call, expected error, regex on the message)``. Each call must raise an
error from :mod:`fenchel_idl.errors` (a :class:`FenchelIDLError`), never a raw
IndexError, KeyError, LinAlgError, TypeError or a CVXPY internal error, and its message
must name the parameter and say what was given.

Entries marked ``xfail(strict=True)`` assert the right behaviour where the package does
not (yet) have it; the reason says what happens today and the fix.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import (
    FenchelIDLError,
    ImplicitModel,
    cascade,
    check_well_posed,
    concat,
    feedback,
    from_layers,
    from_mlp,
    is_well_posed,
    parallel,
    pf_eigenvalue,
    rescale,
)
from fenchel_idl.analysis import attacks, compression, robustness
from fenchel_idl.apps.cli import main as cli_main
from fenchel_idl.apps.run import run_problem
from fenchel_idl.blocks.solvers import solve_certified
from fenchel_idl.drivers import Schedule, problem_file, solve_bcd
from fenchel_idl.errors import (
    CheckpointError,
    DataNotFoundError,
    EquilibriumError,
    InputTypeError,
    ModelFileError,
    NotConvexError,
    NotWellPosedError,
    ShapeError,
    SolverError,
    ValidationError,
)
from fenchel_idl.model import Blockwise, LeakyReLU, get_activation, induced_norm, norm_matrix
from fenchel_idl.problem import datasets, penalties
from fenchel_idl.problem.training_problem import Bounds, TrainingProblem

# -- fixed small objects (no randomness, so every case is reproducible) ----------------------

#: A well-posed ReLU model, n = 3, p = 2, q = 2 (||A||_inf = 0.4).
M3 = ImplicitModel(A=[[0.0, 0.3, 0.0], [0.2, 0.0, 0.1], [0.0, 0.0, 0.4]], B=np.ones((3, 2)),
                   C=np.ones((2, 3)), D=np.zeros((2, 2)))
#: Not well-posed: lambda_PF(|A|) = 2, and the Picard iteration diverges for u > 0.
BAD = ImplicitModel(A=[[0.0, 2.0], [2.0, 0.0]], B=np.ones((2, 2)), C=np.ones((2, 2)),
                    D=np.zeros((2, 2)))
#: A scalar model (n = p = q = 1) with D = 1, for algebraic loops.
ONE_D1 = ImplicitModel(A=[[0.0]], B=[[1.0]], C=[[1.0]], D=[[1.0]])
ONE = ImplicitModel(A=[[0.0]], B=[[1.0]], C=[[1.0]], D=[[0.0]])

_grid = np.linspace(-1.0, 1.0, 20)
U20 = np.vstack([_grid, _grid[::-1] ** 2])          # (2, 20)
Y20 = np.sin(U20.sum(axis=0, keepdims=True))         # (1, 20)
LAB20 = (U20[0] > 0).astype(int)                     # labels 0/1


def _tp(**kw):
    """A tiny TrainingProblem, with keyword overrides."""
    args = {"U": U20, "Y": Y20, "n": 3}
    args.update(kw)
    return TrainingProblem(args.pop("U"), args.pop("Y"), **args)


def _bcd(**kw):
    """One BCD sweep on the tiny problem, with solve_bcd options overridden."""
    return solve_bcd(_tp(), max_sweeps=1, **kw)


def _qp():
    x = cp.Variable(2)
    return cp.Problem(cp.Minimize(cp.sum_squares(x - 1.0)))


# -- files ---------------------------------------------------------------------------------

_GOOD_TOML = """name = "tiny"
seed = 0
[data]
source = "cosine"
m = 20
[model]
n = 3
"""


def _csv(tmp: Path, text: str) -> str:
    """Write ``data.csv`` beside the problem file; the [data] lines that read it."""
    (tmp / "data.csv").write_text(text)
    return "[data]\nsource = 'csv'\npath = 'data.csv'\n"


def _toml(tmp: Path, text: str) -> Path:
    path = tmp / "problem.toml"
    path.write_text(text)
    return path


def _model_file(tmp: Path, *, meta: dict | None = None, arrays: dict | None = None,
                raw_meta: bytes | None = None, drop: str | None = None) -> Path:
    """A model file written by ImplicitModel.save, then edited as asked."""
    good = M3.save(tmp / "good.npz")
    with np.load(good) as data:
        content = {k: data[k] for k in data.files}
    if meta is not None or raw_meta is not None:
        m = json.loads(bytes(content["metadata"]).decode())
        m.update(meta or {})
        text = raw_meta if raw_meta is not None else json.dumps(m).encode()
        content["metadata"] = np.frombuffer(text, dtype=np.uint8)
    content.update(arrays or {})
    if drop:
        content.pop(drop)
    path = tmp / "edited.npz"
    np.savez(path, **content)
    return path


def _truncated_model(tmp: Path) -> Path:
    good = M3.save(tmp / "good.npz")
    raw = good.read_bytes()
    path = tmp / "truncated.npz"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _bytes_file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


class _FakeMLP:
    """Looks like a fitted scikit-learn MLP with an activation this package cannot model."""

    activation = "softplus"

    def __init__(self):
        self.coefs_ = [np.ones((2, 3)), np.ones((3, 1))]
        self.intercepts_ = [np.zeros(3), np.zeros(1)]


# -- the corpus ------------------------------------------------------------------------------

def case(id, call, exc, match, xfail=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(call, exc, match, id=id, marks=marks)


CASES = [
    # ImplicitModel -------------------------------------------------------------------------
    case("model-A-not-square", lambda t: ImplicitModel(np.ones((2, 3)), np.ones((2, 1)),
                                                       np.ones((1, 2)), np.zeros((1, 1))),
         ShapeError, r"'A'.*square.*got shape \(2, 3\)"),
    case("model-A-empty", lambda t: ImplicitModel(np.zeros((0, 0)), np.zeros((0, 1)),
                                                  np.zeros((1, 0)), np.zeros((1, 1))),
         ShapeError, r"'A'.*non-empty.*got shape \(0, 0\)"),
    case("model-A-3d", lambda t: ImplicitModel(np.zeros((1, 1, 1)), np.zeros((1, 1)),
                                               np.zeros((1, 1)), np.zeros((1, 1))),
         ShapeError, r"'A'.*2-D.*got shape \(1, 1, 1\)"),
    case("model-B-rows", lambda t: ImplicitModel(np.zeros((3, 3)), np.zeros((2, 1)),
                                                 np.zeros((1, 3)), np.zeros((1, 1))),
         ShapeError, r"'B'.*n = 3 rows.*got shape \(2, 1\)"),
    case("model-C-cols", lambda t: ImplicitModel(np.zeros((3, 3)), np.zeros((3, 1)),
                                                 np.zeros((1, 2)), np.zeros((1, 1))),
         ShapeError, r"'C'.*n = 3 columns.*got shape \(1, 2\)"),
    case("model-D-shape", lambda t: ImplicitModel(np.zeros((3, 3)), np.zeros((3, 2)),
                                                  np.zeros((1, 3)), np.zeros((2, 2))),
         ShapeError, r"'D'.*\(1, 2\).*got shape \(2, 2\)"),
    case("model-A-nan", lambda t: ImplicitModel([[np.nan]], [[1.0]], [[1.0]], [[0.0]]),
         ValidationError, r"'A'.*finite.*1 NaN or inf"),
    case("model-A-string", lambda t: ImplicitModel("A", [[1.0]], [[1.0]], [[0.0]]),
         InputTypeError, r"'A'.*numeric.*'A' of type str"),
    case("model-A-ragged", lambda t: ImplicitModel([[1.0], [1.0, 2.0]], np.zeros((2, 1)),
                                                   np.zeros((1, 2)), np.zeros((1, 1))),
         InputTypeError, r"'A'.*numeric array.*\[\[1\.0\], \[1\.0, 2\.0\]\]"),
    case("model-A-complex", lambda t: ImplicitModel(np.array([[1j]]), [[1.0]], [[1.0]],
                                                    [[0.0]]),
         InputTypeError, r"'A'.*real.*complex"),
    case("model-bias_x-shape", lambda t: M3.replace(bias_x=np.zeros(2)),
         ShapeError, r"'bias_x'.*\(3,\).*got \(2,\)"),
    case("model-bias_y-shape", lambda t: M3.replace(bias_y=np.zeros(3)),
         ShapeError, r"'bias_y'.*\(2,\).*got \(3,\)"),
    case("model-activation-unknown", lambda t: M3.replace(activation="relu6"),
         ValidationError, r"'activation'.*one of.*got 'relu6'"),
    case("model-activation-type", lambda t: M3.replace(activation=3),
         InputTypeError, r"'activation'.*got 3 of type int"),
    case("model-blockwise-size", lambda t: M3.replace(activation=Blockwise([(2, "relu")])),
         ValidationError, r"'activation'.*2 states.*n = 3"),
    case("model-replace-unknown-field", lambda t: M3.replace(E=1.0),
         ValidationError, r"'E'"),
    # equilibrium / predict -----------------------------------------------------------------
    case("predict-U-rows", lambda t: M3.predict(np.zeros((3, 4))),
         ShapeError, r"'U'.*2 rows.*got shape \(3, 4\)"),
    case("predict-U-inf", lambda t: M3.predict(np.array([np.inf, 0.0])),
         ValidationError, r"'U'.*finite.*1 NaN or inf"),
    case("predict-U-none", lambda t: M3.predict(None),
         InputTypeError, r"'U'.*got None"),
    case("equilibrium-method", lambda t: M3.equilibrium(np.zeros(2), method="newton"),
         ValidationError, r"'method'.*got 'newton'"),
    case("equilibrium-tol", lambda t: M3.equilibrium(np.zeros(2), tol=-1.0),
         ValidationError, r"'tol'.*got -1\.0"),
    case("equilibrium-tol-type", lambda t: M3.equilibrium(np.zeros(2), tol="tight"),
         InputTypeError, r"'tol'.*'tight' of type str"),
    case("equilibrium-max_iter", lambda t: M3.equilibrium(np.zeros(2), max_iter=0),
         ValidationError, r"'max_iter'.*got 0"),
    case("equilibrium-on_nonconvergence",
         lambda t: M3.equilibrium(np.zeros(2), on_nonconvergence="explode"),
         ValidationError, r"'on_nonconvergence'.*got 'explode'"),
    case("equilibrium-X0-shape", lambda t: M3.equilibrium(np.zeros((2, 4)), X0=np.zeros((3, 2))),
         ShapeError, r"'X0'.*\(3, 4\).*got \(3, 2\)"),
    case("equilibrium-diverges-raise",
         lambda t: BAD.equilibrium(np.ones(2), on_nonconvergence="raise"),
         EquilibriumError, r"did not converge|diverge"),
    case("predict-unknown-option", lambda t: M3.predict(np.zeros(2), tolerance=1e-3),
         ValidationError, r"'tolerance'"),
    # activations ---------------------------------------------------------------------------
    case("leaky-alpha-range", lambda t: LeakyReLU(alpha=1.5),
         ValidationError, r"'alpha'.*\(0\.0, 1\.0\).*got 1\.5"),
    case("leaky-alpha-type", lambda t: LeakyReLU(alpha="x"),
         InputTypeError, r"'alpha'.*'x' of type str"),
    case("activation-bad-option", lambda t: get_activation({"name": "leaky_relu", "beta": 1}),
         ValidationError, r"options.*'beta'.*'leaky_relu'"),
    case("activation-dict-unknown", lambda t: get_activation({"name": "foo"}),
         ValidationError, r"'activation'.*got 'foo'"),
    case("blockwise-empty", lambda t: Blockwise([]),
         ValidationError, r"'blocks'.*non-empty.*got \[\]"),
    case("blockwise-size-zero", lambda t: Blockwise([(0, "relu")]),
         ValidationError, r"blocks\[0\] size.*got 0"),
    case("blockwise-not-pair", lambda t: Blockwise([(2,)]),
         ValidationError, r"'blocks\[0\]'.*pair.*got \(2,\)"),
    case("blockwise-nested-size", lambda t: Blockwise([(3, Blockwise([(2, "relu"),
                                                                      (2, "tanh")]))]),
         ValidationError, r"'blocks\[0\]'.*size 3.*4 states"),
    case("blockwise-dict-bad-size",
         lambda t: get_activation({"name": "blockwise", "blocks": [["a", "relu"]]}),
         ValidationError, r"blocks.*'a'"),
    # well-posedness --------------------------------------------------------------------------
    case("pf-not-square", lambda t: pf_eigenvalue(np.ones((2, 3))),
         ShapeError, r"'M'.*square.*got shape \(2, 3\)"),
    case("pf-negative", lambda t: pf_eigenvalue(-np.ones((2, 2))),
         ValidationError, r"'M'.*nonnegative.*-1"),
    case("pf-nan", lambda t: pf_eigenvalue(np.full((2, 2), np.nan)),
         ValidationError, r"'M'.*finite.*4 NaN or inf"),
    case("norm_matrix-not-square", lambda t: norm_matrix(np.ones((2, 3))),
         ShapeError, r"'A'.*square.*got shape \(2, 3\)"),
    case("norm_matrix-activation", lambda t: norm_matrix(np.ones((2, 2)), "swish"),
         ValidationError, r"'activation'.*got 'swish'"),
    case("norm_matrix-blockwise-size", lambda t: norm_matrix(np.ones((2, 2)),
                                                             Blockwise([(3, "relu")])),
         ValidationError, r"'activation'.*3 states.*2"),
    case("induced_norm-M-type", lambda t: induced_norm("abc", 1, 1),
         InputTypeError, r"'M'.*'abc'"),
    case("induced_norm-p", lambda t: induced_norm(np.ones((2, 2)), 3, 3),
         ValidationError, r"p, q.*got p=3, q=3"),
    case("rescale-activation", lambda t: rescale(M3.replace(activation="tanh")),
         ValidationError, r"activation.*got Tanh\(\)"),
    case("rescale-not-well-posed", lambda t: rescale(BAD),
         NotWellPosedError, r"lambda_PF\(\|A\|\) < 1; got 2"),
    case("rescale-model-type", lambda t: rescale("m"),
         InputTypeError, r"'model'.*got str"),
    case("check_well_posed", lambda t: check_well_posed(BAD),
         NotWellPosedError, r"'model'.*not certified.*lambda_PF = 2"),
    case("is_well_posed-type", lambda t: is_well_posed([[0.5]]),
         InputTypeError, r"'model'.*got list"),
    # composition -----------------------------------------------------------------------------
    case("cascade-sizes", lambda t: cascade(M3, ImplicitModel([[0.0]], [[1.0, 1.0, 1.0]],
                                                              [[1.0]], [[0.0, 0.0, 0.0]])),
         ShapeError, r"m1's outputs \(q = 2\).*m2's inputs \(p = 3\)"),
    case("cascade-type", lambda t: cascade(M3, "x"),
         InputTypeError, r"'m2'.*got str"),
    case("parallel-sizes", lambda t: parallel(M3, ONE),
         ShapeError, r"equal output sizes.*q = 2 and q = 1"),
    case("concat-sizes", lambda t: concat(M3, ONE),
         ShapeError, r"equal input sizes.*p = 2 and p = 1"),
    case("feedback-sizes", lambda t: feedback(M3, ONE),
         ShapeError, r"m2's outputs \(q = 1\).*m1's inputs \(p = 2\)"),
    case("feedback-algebraic-loop", lambda t: feedback(ONE_D1, ONE_D1),
         ValidationError, r"I - D1 D2.*singular"),
    # feedforward -----------------------------------------------------------------------------
    case("from_layers-one-matrix", lambda t: from_layers([np.ones((2, 2))]),
         ValidationError, r"'weights'.*at least two.*got 1"),
    case("from_layers-sizes", lambda t: from_layers([np.ones((3, 2)), np.ones((1, 4))]),
         ShapeError, r"'weights\[1\]'.*3 columns.*got \(1, 4\)"),
    case("from_layers-ndarray", lambda t: from_layers(np.ones((2, 2, 2))),
         InputTypeError, r"'weights'.*got ndarray"),
    case("from_layers-1d-weight", lambda t: from_layers([np.ones(3), np.ones((1, 3))]),
         ShapeError, r"'weights\[0\]'.*2-D.*got shape \(3,\)"),
    case("from_layers-bias-count", lambda t: from_layers([np.ones((3, 2)), np.ones((1, 3))],
                                                         biases=[np.zeros(3)]),
         ValidationError, r"'biases'.*2 entries.*got 1"),
    case("from_layers-bias-shape", lambda t: from_layers([np.ones((3, 2)), np.ones((1, 3))],
                                                         biases=[np.zeros(2), np.zeros(1)]),
         ShapeError, r"'biases\[0\]'.*\(3,\).*got \(2,\)"),
    case("from_layers-activation-count",
         lambda t: from_layers([np.ones((3, 2)), np.ones((1, 3))], activations=["relu"] * 2),
         ValidationError, r"'activations'.*1 entries.*got 2"),
    case("from_layers-biases-type",
         lambda t: from_layers([np.ones((3, 2)), np.ones((1, 3))], biases=5),
         InputTypeError, r"'biases'.*int"),
    case("from_layers-activations-type",
         lambda t: from_layers([np.ones((3, 2)), np.ones((1, 3))], activations=5),
         InputTypeError, r"'activations'.*int"),
    case("from_mlp-type", lambda t: from_mlp(object()),
         InputTypeError, r"'mlp'.*got object"),
    case("from_mlp-activation", lambda t: from_mlp(_FakeMLP()),
         ValidationError, r"'mlp.activation'.*got 'softplus'"),
    # TrainingProblem -------------------------------------------------------------------------
    case("tp-kappa-one", lambda t: _tp(kappa=1.0),
         ValidationError, r"'kappa'.*\(0\.0, 1\.0\).*got 1\.0"),
    case("tp-kappa-zero", lambda t: _tp(kappa=0.0),
         ValidationError, r"'kappa'.*\(0\.0, 1\.0\).*got 0\.0"),
    case("tp-kappa-above", lambda t: _tp(kappa=1.5),
         ValidationError, r"'kappa'.*got 1\.5"),
    case("tp-kappa-type", lambda t: _tp(kappa="0.5"),
         InputTypeError, r"'kappa'.*'0\.5' of type str"),
    case("tp-lam-negative", lambda t: _tp(lam=-1.0),
         ValidationError, r"'lam'.*got -1\.0"),
    case("tp-lam-vector-negative", lambda t: _tp(lam=[1.0, -1.0, 1.0]),
         ValidationError, r"'lam'.*positive.*-1"),
    case("tp-lam-shape", lambda t: _tp(lam=[1.0, 1.0]),
         ShapeError, r"'lam'.*\(3,\).*got \(2,\)"),
    case("tp-lam-string", lambda t: _tp(lam="big"),
         InputTypeError, r"'lam'.*'big'"),
    case("tp-U-Y-samples", lambda t: _tp(Y=Y20[:, :19]),
         ShapeError, r"'U' and 'Y'.*same number of samples.*\(2, 20\).*\(1, 19\)"),
    case("tp-U-empty", lambda t: _tp(U=np.zeros((2, 0)), Y=np.zeros((1, 0))),
         ShapeError, r"'U'.*at least one.*got shape \(2, 0\)"),
    case("tp-U-nan", lambda t: _tp(U=np.where(U20 > 0.9, np.nan, U20)),
         ValidationError, r"'U'.*finite.*NaN or inf"),
    case("tp-Y-3d", lambda t: _tp(Y=np.zeros((1, 1, 20))),
         ShapeError, r"'Y'.*1-D or 2-D.*got shape \(1, 1, 20\)"),
    case("tp-n-zero", lambda t: _tp(n=0),
         ValidationError, r"'n'.*got 0"),
    case("tp-n-float", lambda t: _tp(n=2.5),
         InputTypeError, r"'n'.*2\.5 of type float"),
    case("tp-labels-negative", lambda t: _tp(Y=np.where(LAB20 == 0, -1, 1),
                                             loss="cross_entropy"),
         ValidationError, r"'Y'.*labels.*got -1"),
    case("tp-labels-fractional", lambda t: _tp(Y=LAB20 + 0.5, loss="cross_entropy"),
         ValidationError, r"'Y'.*integer class labels.*float64"),
    case("tp-labels-count", lambda t: _tp(Y=LAB20[:19], loss="cross_entropy"),
         ShapeError, r"'Y'.*one label per sample.*20; got 19"),
    case("tp-onehot-column-sums", lambda t: _tp(Y=np.vstack([LAB20, LAB20]),
                                                loss="cross_entropy"),
         ValidationError, r"'Y'.*one-hot.*column sums in \[0, 2\]"),
    case("tp-onehot-fractional-entries", lambda t: _tp(Y=np.full((2, 20), 0.5),
                                                       loss="cross_entropy"),
         ValidationError, r"'Y'.*one-hot.*0\.5"),
    case("tp-loss-unknown", lambda t: _tp(loss="hinge"),
         ValidationError, r"'loss'.*got 'hinge'"),
    case("tp-activation-unknown", lambda t: _tp(activation="swish"),
         ValidationError, r"'activation'.*got 'swish'"),
    case("tp-activation-softmax", lambda t: _tp(activation="softmax"),
         ValidationError, r"'activation'.*componentwise.*got Softmax\(\)"),
    case("tp-activation-blockwise-size", lambda t: _tp(activation=Blockwise([(2, "relu")])),
         ValidationError, r"'activation' covers 2 states but n = 3"),
    case("tp-penalty-unknown", lambda t: _tp(penalties=[{"name": "l3", "weight": 1.0}]),
         ValidationError, r"'penalties'.*got 'l3'"),
    case("tp-penalty-no-name", lambda t: _tp(penalties=[{"weight": 1.0}]),
         ValidationError, r"'penalties' needs a 'name' key.*got keys \['weight'\]"),
    case("tp-penalty-bad-option", lambda t: _tp(penalties=[{"name": "l1", "of": "A"}]),
         ValidationError, r"options.*'of'.*'l1'"),
    case("tp-penalty-type", lambda t: _tp(penalties=["l1"]),
         InputTypeError, r"'penalties'.*got str"),
    case("tp-penalty-concave", lambda t: _tp(penalties=[lambda A, B, C, D: -cp.norm(A)]),
         NotConvexError, r"not convex.*curvature CONCAVE"),
    case("tp-penalty-not-dcp", lambda t: _tp(penalties=[
        lambda A, B, C, D: cp.sqrt(cp.sum_squares(A))]),
         NotConvexError, r"not convex.*curvature QUASICONVEX"),
    case("tp-penalty-not-scalar", lambda t: _tp(penalties=[lambda A, B, C, D: cp.abs(A)]),
         NotConvexError, r"scalar.*\(3, 3\)"),
    case("tp-penalty-crashes", lambda t: _tp(penalties=[lambda A, B, C, D: A.value.sum()]),
         ValidationError, r"could not be built.*raised AttributeError"),
    case("tp-constraint-not-dcp", lambda t: _tp(constraints=[
        lambda A, B, C, D: [cp.norm(A) >= 1]]),
         NotConvexError, r"constraint that is not DCP"),
    case("tp-bounds-key", lambda t: _tp(bounds={"E": 1.0}),
         ValidationError, r"'bounds'.*\['E'\]"),
    case("tp-bounds-negative", lambda t: _tp(bounds={"B": -1.0}),
         ValidationError, r"bounds\['B'\].*got -1\.0"),
    case("tp-bounds-type", lambda t: _tp(bounds=[1, 2]),
         ValidationError, r"'bounds'.*got \[1, 2\]"),
    case("bounds-zero", lambda t: Bounds(C=0.0),
         ValidationError, r"bounds\['C'\].*got 0\.0"),
    # solve_bcd options -----------------------------------------------------------------------
    case("bcd-problem-type", lambda t: solve_bcd("problem"),
         InputTypeError, r"'problem'.*got str"),
    case("bcd-max_sweeps", lambda t: solve_bcd(_tp(), max_sweeps=0),
         ValidationError, r"'max_sweeps'.*got 0"),
    case("bcd-tol-nan", lambda t: _bcd(tol=float("nan")),
         ValidationError, r"'tol'.*finite.*got nan"),
    case("bcd-on_failure", lambda t: _bcd(on_failure="ignore"),
         ValidationError, r"'on_failure'.*got 'ignore'"),
    case("bcd-solver-unknown", lambda t: _bcd(solver="GUROBI_FAKE"),
         ValidationError, r"'solver'.*installed.*got 'GUROBI_FAKE'"),
    case("bcd-schedule-value", lambda t: _bcd(schedule={"factor": 0.5}),
         ValidationError, r"schedule factor.*got 0\.5"),
    case("bcd-schedule-key", lambda t: _bcd(schedule={"factr": 2.0}),
         ValidationError, r"'schedule'.*'factr'"),
    case("bcd-schedule-type", lambda t: _bcd(schedule=3),
         InputTypeError, r"'schedule'.*got int"),
    case("schedule-stages", lambda t: Schedule(stages=0),
         ValidationError, r"schedule stages.*got 0"),
    case("bcd-init-name", lambda t: _bcd(init="zeros"),
         InputTypeError, r"'init'.*got str"),
    case("bcd-init-shape", lambda t: _bcd(init=M3),
         ShapeError, r"'init'.*\(3, 2, 1\).*got \(3, 2, 2\)"),
    case("bcd-init-array", lambda t: _bcd(init=np.zeros(3)),
         InputTypeError, r"'init'.*ndarray"),
    case("bcd-seed-negative", lambda t: _bcd(seed=-1),
         ValidationError, r"'seed'.*got -1"),
    case("bcd-seed-type", lambda t: _bcd(seed="a"),
         InputTypeError, r"'seed'.*'a'"),
    case("bcd-gap_tol-negative", lambda t: _bcd(gap_tol=-1.0),
         ValidationError, r"'gap_tol'.*got -1\.0"),
    case("bcd-gap_tol-type", lambda t: _bcd(gap_tol="x"),
         InputTypeError, r"'gap_tol'.*'x'"),
    case("bcd-callback-type", lambda t: _bcd(callback=3),
         InputTypeError, r"'callback'.*int"),
    case("bcd-refine-type", lambda t: _bcd(refine="yes"),
         (InputTypeError, ValidationError), r"'refine'.*'yes'"),
    case("bcd-resume-without-checkpoint", lambda t: _bcd(resume=True),
         ValidationError, r"'resume'.*'checkpoint'"),
    case("bcd-checkpoint-is-file",
         lambda t: _bcd(checkpoint=_bytes_file(t, "afile", b"x")),
         (ValidationError, CheckpointError), r"'checkpoint'.*afile"),
    case("bcd-checkpoint-type", lambda t: _bcd(checkpoint=5),
         InputTypeError, r"'checkpoint'.*int"),
    # solve_certified -------------------------------------------------------------------------
    case("solve-cone", lambda t: solve_certified(_qp(), "X", cone="lp"),
         ValidationError, r"'cone'.*got 'lp'"),
    case("solve-on_failure", lambda t: solve_certified(_qp(), "X", on_failure="retry"),
         ValidationError, r"'on_failure'.*got 'retry'"),
    case("solve-solver-unknown", lambda t: solve_certified(_qp(), "X", solvers=("NOPE",)),
         ValidationError, r"'solver'.*got 'NOPE'"),
    case("solve-tol-negative", lambda t: solve_certified(_qp(), "X", tol=-1.0),
         ValidationError, r"'tol'.*got -1\.0"),
    case("solve-problem-type", lambda t: solve_certified("not a problem", "X"),
         InputTypeError, r"'problem'.*str"),
    # penalties -------------------------------------------------------------------------------
    case("pen-weight", lambda t: penalties.L1(weight=-1.0),
         ValidationError, r"l1 weight.*got -1\.0"),
    case("pen-weight-nan", lambda t: penalties.Nuclear(weight=float("nan")),
         ValidationError, r"nuclear weight.*finite.*got nan"),
    case("pen-l1-on", lambda t: penalties.L1(on="E"),
         ValidationError, r"l1 'on'.*got 'E'"),
    case("pen-row_norms-of", lambda t: penalties.RowNorms(of="C"),
         ValidationError, r"row_norms 'of'.*got 'C'"),
    case("pen-column_norms-of", lambda t: penalties.ColumnNorms(of="B"),
         ValidationError, r"column_norms 'of'.*got 'B'"),
    case("pen-custom-fn", lambda t: penalties.Custom(fn=None),
         InputTypeError, r"callable.*got NoneType"),
    case("pen-custom-reads", lambda t: penalties.Custom(fn=lambda *a: 0, reads=("Z",)),
         ValidationError, r"'reads'.*got 'Z'"),
    case("pen-get-type", lambda t: penalties.get_penalty(3),
         InputTypeError, r"'penalties'.*got int"),
    case("pen-value-missing-matrix", lambda t: penalties.L1(on="AB").value({"A": np.eye(2)}),
         ValidationError, r"'B'"),
    # robustness -----------------------------------------------------------------------------
    case("sb-sigma-negative", lambda t: robustness.state_bounds(M3, -0.1),
         ValidationError, r"'sigma_u'.*nonnegative.*got -0\.1"),
    case("sb-sigma-shape", lambda t: robustness.state_bounds(M3, [0.1, 0.1, 0.1]),
         ShapeError, r"'sigma_u'.*\(2,\).*got shape \(3,\)"),
    case("sb-sigma-2d", lambda t: robustness.state_bounds(M3, np.ones((2, 2))),
         ShapeError, r"'sigma_u'.*got shape \(2, 2\)"),
    case("sb-sigma-nan", lambda t: robustness.state_bounds(M3, np.nan),
         ValidationError, r"'sigma_u'.*finite"),
    case("sb-k-zero", lambda t: robustness.state_bounds(M3, 0.1, k=0),
         ValidationError, r"'k'.*\[1, 2\].*got 0"),
    case("sb-k-above-p", lambda t: robustness.state_bounds(M3, 0.1, k=3),
         ValidationError, r"'k'.*\[1, 2\].*got 3"),
    case("sb-k-float", lambda t: robustness.state_bounds(M3, 0.1, k=1.5),
         InputTypeError, r"'k'.*1\.5 of type float"),
    case("sb-not-well-posed", lambda t: robustness.state_bounds(BAD, 0.1),
         NotWellPosedError, r"'model'.*lambda_PF = 2"),
    case("lipschitz-not-well-posed", lambda t: robustness.lipschitz_bound(BAD),
         NotWellPosedError, r"\|\|A\|\|_inf < 1.*got .*= 2"),
    case("sensitivity-not-well-posed", lambda t: robustness.sensitivity_matrix(BAD),
         NotWellPosedError, r"'model'.*lambda_PF = 2"),
    case("output_bound-sigma", lambda t: robustness.output_bound(M3, -1.0),
         ValidationError, r"'sigma_u'.*got -1"),
    case("lp-c-missing", lambda t: robustness.lp_bound(M3, [0, 0], 0.1),
         ValidationError, r"'c' is required.*got None"),
    case("lp-c-shape", lambda t: robustness.lp_bound(M3, [0, 0], 0.1, c=[1, 0]),
         ShapeError, r"'c'.*\(3,\).*got shape \(2,\)"),
    case("lp-u0-shape", lambda t: robustness.lp_bound(M3, [0, 0, 0], 0.1, c=[1, 0, 0]),
         ShapeError, r"'u0'.*\(2,\).*got shape \(3,\)"),
    case("lp-u0-range", lambda t: robustness.lp_bound(M3, [2, 0], 0.1, c=[1, 0, 0],
                                                      input_range=(0, 1)),
         ValidationError, r"'u0'.*input_range.*\[0, 2\]"),
    case("lp-range-reversed", lambda t: robustness.lp_bound(M3, [0, 0], 0.1, c=[1, 0, 0],
                                                            input_range=(1, 0)),
         ValidationError, r"'input_range'.*got \(1\.0, 0\.0\)"),
    case("lp-objective", lambda t: robustness.lp_bound(M3, [0, 0], 0.1, c=[1, 0, 0],
                                                       objective="quadratic"),
         ValidationError, r"'objective'.*got 'quadratic'"),
    case("lp-solver", lambda t: robustness.lp_bound(M3, [0, 0], 0.1, c=[1, 0, 0],
                                                    solver="NOPE"),
         ValidationError, r"'solver'.*got 'NOPE'"),
    case("lp-activation", lambda t: robustness.lp_bound(M3.replace(activation="tanh"),
                                                        [0, 0], 0.1, c=[1, 0, 0]),
         ValidationError, r"ReLU.*got Tanh\(\)"),
    case("lp-not-well-posed", lambda t: robustness.lp_bound(BAD, [0, 0], 0.1, c=[1, 0]),
         NotWellPosedError, r"lambda_PF = 2"),
    case("lipschitz_penalty-shapes", lambda t: robustness.lipschitz_penalty_value(
        np.zeros((2, 2)), np.zeros((3, 1)), np.zeros((1, 2)), np.zeros((1, 1))),
         ShapeError, r"'B'.*n = 2 rows.*got shape \(3, 1\)"),
    # attacks ---------------------------------------------------------------------------------
    case("attack-k-and-fraction", lambda t: attacks.sensitivity_attack(
        M3, np.zeros(2), 0.1, k=1, fraction=0.5),
         ValidationError, r"exactly one of 'k'.*'fraction'.*got k=1, fraction=0\.5"),
    case("attack-neither", lambda t: attacks.sensitivity_attack(M3, np.zeros(2), 0.1),
         ValidationError, r"exactly one.*got k=None, fraction=None"),
    case("attack-k-range", lambda t: attacks.sensitivity_attack(M3, np.zeros(2), 0.1, k=5),
         ValidationError, r"'k'.*\[1, 2\].*got 5"),
    case("attack-fraction-zero", lambda t: attacks.sensitivity_attack(
        M3, np.zeros(2), 0.1, fraction=0.0),
         ValidationError, r"'fraction'.*got 0\.0"),
    case("attack-U-range", lambda t: attacks.sensitivity_attack(
        M3, np.full(2, 3.0), 0.1, k=1, input_range=(0, 1)),
         ValidationError, r"'U'.*input_range.*\[3, 3\]"),
    case("attack-values", lambda t: attacks.sensitivity_attack(
        M3, np.zeros(2), 0.1, k=1, values="max"),
         ValidationError, r"'values'.*got 'max'"),
    case("attack-seed", lambda t: attacks.sensitivity_attack(
        M3, np.zeros(2), 0.1, k=1, seed=-3),
         ValidationError, r"'seed'.*got -3"),
    case("attack-sigma-negative", lambda t: attacks.sensitivity_attack(
        M3, np.zeros(2), -0.1, k=1),
         ValidationError, r"'sigma_u'.*got -0\.1"),
    case("attack-not-well-posed", lambda t: attacks.sensitivity_attack(
        BAD, np.zeros(2), 0.1, k=1),
         NotWellPosedError, r"lambda_PF = 2"),
    case("gradient-labels-range", lambda t: attacks.gradient_attack(
        M3, np.zeros((2, 3)), np.array([0, 1, 5]), 0.1, k=1),
         ValidationError, r"'Y'.*\[0, 2\).*\[0, 5\]"),
    case("gradient-labels-float", lambda t: attacks.gradient_attack(
        M3, np.zeros((2, 3)), np.array([0.0, 1.0, 0.5]), 0.1, k=1),
         InputTypeError, r"'Y'.*integers.*float64"),
    case("gradient-labels-count", lambda t: attacks.gradient_attack(
        M3, np.zeros((2, 3)), np.array([0, 1]), 0.1, k=1),
         ShapeError, r"'Y'.*\(3,\).*got \(2,\)"),
    case("gradient-loss", lambda t: attacks.gradient_attack(
        M3, np.zeros((2, 3)), np.array([0, 1, 1]), 0.1, k=1, loss="hinge"),
         ValidationError, r"'loss'.*got 'hinge'"),
    case("scores-target", lambda t: attacks.sensitivity_scores(M3, 5),
         ValidationError, r"'target'.*got 5"),
    case("scores-weights", lambda t: attacks.sensitivity_scores(M3, [-1.0, 1.0]),
         ValidationError, r"'target'.*nonnegative.*-1"),
    case("lp_attack-c-and-target", lambda t: attacks.lp_attack(
        M3, np.zeros((2, 1)), 0.1, c=[1, 0, 0], target=1),
         ValidationError, r"'c'.*'target'.*got both"),
    case("success_rate-shapes", lambda t: attacks.attack_success_rate(
        M3, np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(3, int)),
         ShapeError, r"'U_clean' \(2, 3\), 'U_adv' \(2, 2\)"),
    # compression -----------------------------------------------------------------------------
    case("reduce-tol", lambda t: compression.reduce(M3, tol=-1),
         ValidationError, r"'tol'.*got -1"),
    case("reduce-type", lambda t: compression.reduce("m"),
         InputTypeError, r"'model'.*got str"),
    case("reduce-softmax", lambda t: compression.reduce(M3.replace(activation="softmax")),
         ValidationError, r"componentwise.*Softmax\(\)"),
    case("low_rank-zero", lambda t: compression.low_rank(M3, 0),
         ValidationError, r"'rank'.*\[1, 3\].*got 0"),
    case("low_rank-above-n", lambda t: compression.low_rank(M3, 4),
         ValidationError, r"'rank'.*\[1, 3\].*got 4"),
    case("perturbation-E-negative", lambda t: compression.perturbation_bound(
        M3, -np.ones((3, 3)), np.zeros(2)),
         ValidationError, r"'E'.*nonnegative.*-1"),
    case("perturbation-E-shape", lambda t: compression.perturbation_bound(
        M3, np.ones((2, 2)), np.zeros(2)),
         ShapeError, r"'E'.*\(3, 3\).*got \(2, 2\)"),
    case("perturbation-E-too-large", lambda t: compression.perturbation_bound(
        M3, np.ones((3, 3)), np.zeros(2)),
         NotWellPosedError, r"lambda_PF\(Gamma \(\|A0\| \+ E\)\) < 1; got 3\.3"),
    case("perturbation-sigma", lambda t: compression.perturbation_bound(
        M3, 0.01 * np.ones((3, 3)), np.zeros(2), sigma_u=[-1.0, 1.0]),
         ValidationError, r"'sigma_u'.*nonnegative.*-1"),
    case("lowrank-model-shapes", lambda t: compression.LowRankModel(
        L=np.ones((3, 1)), R=np.ones((2, 1)), B=np.ones((3, 1)), C=np.ones((1, 3)),
        D=np.zeros((1, 1))),
         ShapeError, r"'R'.*\(3, 1\).*got \(2, 1\)"),
    case("lowrank-predict-option", lambda t: compression.low_rank(M3, 1).model.predict(
        np.zeros(2), foo=1),
         ValidationError, r"\['foo'\]"),
    case("speedup-type", lambda t: compression.predict_speedup(object(), M3, np.zeros(2)),
         InputTypeError, r"'original'.*predict.*got object"),
    case("speedup-repeats", lambda t: compression.predict_speedup(M3, M3, np.zeros(2),
                                                                  repeats=0),
         ValidationError, r"'repeats'.*got 0"),
    case("selected_features-type", lambda t: compression.selected_features("m"),
         InputTypeError, r"'model'.*got str"),
    # datasets --------------------------------------------------------------------------------
    case("load-name", lambda t: datasets.load("imagenet"),
         ValidationError, r"'name'.*got 'imagenet'"),
    case("load-option", lambda t: datasets.load("cosine", bogus=1),
         ValidationError, r"'cosine'.*\['bogus'\]"),
    case("load-type", lambda t: datasets.load(3),
         InputTypeError, r"'name'.*got int"),
    case("cosine-m", lambda t: datasets.cosine(m=0),
         ValidationError, r"'m'.*got 0"),
    case("cosine-noise", lambda t: datasets.cosine(noise=-1.0),
         ValidationError, r"'noise'.*got -1\.0"),
    case("cosine-seed", lambda t: datasets.cosine(seed=-1),
         ValidationError, r"'seed'.*got -1"),
    case("one_hot-range", lambda t: datasets.one_hot([0, 3], 3),
         ValidationError, r"'labels'.*\[0, 3\).*\[0, 3\]"),
    case("one_hot-float", lambda t: datasets.one_hot([0.5], 3),
         InputTypeError, r"'labels'.*integers.*float64"),
    case("one_hot-classes", lambda t: datasets.one_hot([0], 0),
         ValidationError, r"'num_classes'.*got 0"),
    case("split-fraction", lambda t: datasets.train_test_split(datasets.cosine(m=10),
                                                               test_fraction=1.0),
         ValidationError, r"'test_fraction'.*got 1\.0"),
    case("split-type", lambda t: datasets.train_test_split("x"),
         InputTypeError, r"'dataset'.*got str"),
    case("split-one-sample", lambda t: datasets.train_test_split(datasets.cosine(m=1)),
         ValidationError, r"'dataset'.*at least 2.*m = 1"),
    case("dataset-samples", lambda t: datasets.Dataset(U=np.zeros((1, 3)), Y=np.zeros((1, 4))),
         ShapeError, r"'U' and 'Y'.*\(1, 3\).*\(1, 4\)"),
    case("subset-range", lambda t: datasets.cosine(m=5).subset([7]),
         ValidationError, r"'indices'.*\[0, 5\).*\[7, 7\]"),
    case("read_idx-missing", lambda t: datasets.read_idx(t / "nope.idx"),
         DataNotFoundError, r"nope\.idx.*does not exist"),
    case("read_idx-corrupt", lambda t: datasets.read_idx(_bytes_file(t, "bad.idx", b"garbage")),
         ValidationError, r"bad\.idx.*corrupt.*b'garb'"),
    case("mnist-split", lambda t: datasets.load_mnist(split="val"),
         ValidationError, r"'split'.*got 'val'"),
    case("mnist-missing-dir", lambda t: datasets.load_mnist(data_dir=t),
         DataNotFoundError, r"train-images-idx3-ubyte\.gz.*not found"),
    case("synthetic-hidden", lambda t: datasets.synthetic_from_network(hidden=[]),
         ValidationError, r"'hidden'.*empty"),
    case("synthetic-kappa", lambda t: datasets.synthetic_from_implicit(kappa=1.5),
         ValidationError, r"'kappa'.*got 1\.5"),
    # problem files ---------------------------------------------------------------------------
    case("pf-missing", lambda t: problem_file.load_problem(t / "nope.toml"),
         ValidationError, r"'problem'.*nope\.toml.*does not exist"),
    case("pf-bad-toml", lambda t: problem_file.load_problem(_toml(t, "name = \n[[")),
         ValidationError, r"problem\.toml.*not valid TOML"),
    case("pf-unknown-section", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML + "[bogus]\nx = 1\n")),
         ValidationError, r"unknown sections/keys \['bogus'\]"),
    case("pf-no-source", lambda t: problem_file.load_problem(
        _toml(t, "[data]\nm = 3\n[model]\nn = 3\n")),
         ValidationError, r"needs \[data\] source"),
    case("pf-no-n", lambda t: problem_file.load_problem(
        _toml(t, "[data]\nsource = 'cosine'\n[model]\nkappa = 0.5\n")),
         ValidationError, r"needs \[model\] n"),
    case("pf-model-key", lambda t: problem_file.load_problem(_toml(t, _GOOD_TOML
                                                                   + "kapa = 0.5\n")),
         ValidationError, r"\[model\] keys.*got \['kapa'\]"),
    case("pf-training-key", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML + "[training]\nmax_sweep = 3\n")),
         ValidationError, r"\[training\] keys.*got \['max_sweep'\]"),
    case("pf-solver-key", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML + "[solver]\nsolvr = 'ECOS'\n")),
         ValidationError, r"\[solver\] keys.*got \['solvr'\]"),
    case("pf-schedule-key", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML + "[schedule]\nfactr = 2.0\n")),
         ValidationError, r"factr"),
    case("pf-refine-key", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML + "[refine]\nepoch = 2\n")),
         ValidationError, r"epoch"),
    case("pf-seed-type", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML.replace("seed = 0", "seed = 'abc'"))),
         ValidationError, r"seed.*'abc'"),
    case("pf-data-not-table", lambda t: problem_file.load_problem(
        _toml(t, "data = 'cosine'\n[model]\nn = 3\n")),
         ValidationError, r"\[data\].*'cosine'"),
    case("pf-run-unknown-source", lambda t: run_problem(
        _toml(t, _GOOD_TOML.replace('"cosine"', '"imagenet"')), progress=False, max_sweeps=1),
         ValidationError, r"\[data\] 'source' must be one of .*'csv', 'npz', 'npy'; got "
                          r"'imagenet'"),
    case("pf-source-file-name", lambda t: problem_file.load_problem(
        _toml(t, _GOOD_TOML.replace('"cosine"', '"diabetes.npz"'))),
         ValidationError, r"\[data\] 'source'.*got 'diabetes\.npz'.*source = 'npz' and "
                          r"path = 'diabetes\.npz'"),
    case("pf-csv-no-path", lambda t: problem_file.load_problem(
        _toml(t, "[data]\nsource = 'csv'\ntarget = 'y'\n[model]\nn = 3\n")),
         ValidationError, r"\[data\] source = 'csv' needs 'path'"),
    case("pf-csv-missing-file", lambda t: run_problem(
        _toml(t, "[data]\nsource = 'csv'\npath = 'no.csv'\ntarget = 'y'\n[model]\nn = 3\n"),
        progress=False, max_sweeps=1),
         DataNotFoundError, r"\[data\] 'path' = 'no\.csv'.*no\.csv' does not exist"),
    case("pf-csv-unknown-column", lambda t: run_problem(
        _toml(t, _csv(t, "a,b,y\n1,2,3\n4,5,6\n")
              + "target = 'z'\n[model]\nn = 3\n"), progress=False, max_sweeps=1),
         ValidationError, r"\[data\] 'path'.*no column 'z'.*\['a', 'b', 'y'\]"),
    case("pf-csv-not-a-number", lambda t: run_problem(
        _toml(t, _csv(t, "a,b,y\n1,2,3\n4,x,6\n")
              + "target = 'y'\n[model]\nn = 3\n"), progress=False, max_sweeps=1),
         ValidationError, r"column 'b' holds 'x' on line 3.*not a number"),
    case("pf-csv-task", lambda t: problem_file.load_problem(
        _toml(t, _csv(t, "a,y\n1,2\n") + "task = 'clasification'\n[model]\nn = 3\n")),
         ValidationError, r"\[data\] 'task' must be one of.*got 'clasification'"),
    case("pf-run-data-option", lambda t: run_problem(
        _toml(t, _GOOD_TOML.replace("m = 20", "mm = 20")), progress=False, max_sweeps=1),
         ValidationError, r"'cosine'.*\['mm'\]"),
    case("pf-run-kappa", lambda t: run_problem(
        _toml(t, _GOOD_TOML + "kappa = 1.5\n"), progress=False, max_sweeps=1),
         ValidationError, r"'kappa'.*got 1\.5"),
    case("pf-run-penalty", lambda t: run_problem(
        _toml(t, _GOOD_TOML + "[[penalties]]\nname = 'l3'\n"), progress=False, max_sweeps=1),
         ValidationError, r"'penalties'.*got 'l3'"),
    case("pf-run-n-type", lambda t: run_problem(
        _toml(t, _GOOD_TOML.replace("n = 3", "n = 'three'")), progress=False, max_sweeps=1),
         (ValidationError, InputTypeError), r"'n'.*'three'"),
    # model files -----------------------------------------------------------------------------
    case("mf-missing", lambda t: ImplicitModel.load(t / "nothere.npz"),
         ModelFileError, r"'path'.*nothere\.npz.*does not exist"),
    case("mf-save-missing-dir", lambda t: M3.save(t / "nodir" / "m.npz"),
         ModelFileError, r"'path'.*nodir.*does not exist"),
    case("mf-directory", lambda t: ImplicitModel.load(t),
         ModelFileError, r"'path'.*existing model file"),
    case("mf-truncated", lambda t: ImplicitModel.load(_truncated_model(t)),
         ModelFileError, r"truncated\.npz.*corrupt or truncated"),
    case("mf-not-npz", lambda t: ImplicitModel.load(_bytes_file(t, "junk.npz", b"hello")),
         ModelFileError, r"junk\.npz.*not a readable"),
    case("mf-foreign-npz", lambda t: ImplicitModel.load(
        np.savez(t / "foreign.npz", A=np.eye(2)) or t / "foreign.npz"),
         ModelFileError, r"foreign\.npz.*not a fenchel_idl model file"),
    case("mf-future-version", lambda t: ImplicitModel.load(_model_file(t, meta={"version": 2})),
         ModelFileError, r"edited\.npz.*version 2.*reads version 1"),
    case("mf-foreign-format", lambda t: ImplicitModel.load(
        _model_file(t, meta={"format": "other.Model"})),
         ModelFileError, r"not written by fenchel_idl.*'other\.Model'"),
    case("mf-tampered-array", lambda t: ImplicitModel.load(
        _model_file(t, arrays={"A": np.zeros((3, 3))})),
         ModelFileError, r"edited\.npz.*checksum"),
    case("mf-missing-array", lambda t: ImplicitModel.load(_model_file(t, drop="B")),
         ModelFileError, r"lacks the arrays \['B'\]"),
    case("mf-metadata-not-json", lambda t: ImplicitModel.load(
        _model_file(t, raw_meta=b"not json")),
         ModelFileError, r"edited\.npz.*corrupt"),
    case("mf-metadata-list", lambda t: ImplicitModel.load(_model_file(t, raw_meta=b"[1, 2]")),
         ModelFileError, r"not written by fenchel_idl.*\[1, 2\]"),
    case("mf-object-array", lambda t: ImplicitModel.load(
        _model_file(t, arrays={"metadata": np.array([{"a": 1}], dtype=object)})),
         ModelFileError, r"edited\.npz.*corrupt"),
    case("mf-tampered-activation", lambda t: ImplicitModel.load(
        _model_file(t, meta={"activation": {"name": "tanh"}})),
         ModelFileError, r"edited\.npz.*(checksum|tamper)"),
    case("mf-unknown-activation", lambda t: ImplicitModel.load(
        _model_file(t, meta={"activation": {"name": "nope"}})),
         ModelFileError, r"edited\.npz.*activation.*'nope'"),
    case("mf-activation-none", lambda t: ImplicitModel.load(
        _model_file(t, meta={"activation": None})),
         ModelFileError, r"edited\.npz.*activation"),
    case("mf-activation-blockwise-garbage", lambda t: ImplicitModel.load(
        _model_file(t, meta={"activation": {"name": "blockwise", "blocks": [["x", "relu"]]}})),
         ModelFileError, r"edited\.npz.*activation"),
]


@pytest.mark.parametrize("call, exc, match", CASES)
def test_bad_input_raises_a_clear_package_error(call, exc, match, tmp_path):
    excs = exc if isinstance(exc, tuple) else (exc,)
    assert all(issubclass(e, FenchelIDLError) for e in excs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings of diverging models, solver noise
        with pytest.raises(excs, match=match) as info:
            call(tmp_path)
    assert isinstance(info.value, FenchelIDLError)
    assert str(info.value).strip(), "the message must not be empty"


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


def test_package_errors_derive_from_builtin_classes():
    """``except ValueError`` / ``except TypeError`` keep working for users (errors.py)."""
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ShapeError, ValueError)
    assert issubclass(InputTypeError, TypeError)
    assert issubclass(ModelFileError, ValueError)
    assert issubclass(CheckpointError, ValueError)
    assert issubclass(SolverError, RuntimeError)
    assert issubclass(EquilibriumError, RuntimeError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


# -- the command line reports package errors as a one-line message and exit status 2 --------

def test_cli_reports_missing_problem_file(tmp_path, capsys):
    rc = cli_main(["run", str(tmp_path / "nope.toml"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "fenchel-idl: error:" in err and "nope.toml" in err
    assert "Traceback" not in err


def test_cli_reports_bad_toml(tmp_path, capsys):
    rc = cli_main(["run", str(_toml(tmp_path, "name = \n[[")), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not valid TOML" in err


def test_cli_reports_bad_seed(tmp_path, capsys):
    path = _toml(tmp_path, _GOOD_TOML.replace("seed = 0", "seed = 'abc'"))
    rc = cli_main(["run", str(path), "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "seed" in err
