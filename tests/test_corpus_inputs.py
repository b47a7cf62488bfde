"""The validation corpus of silent wrong results, resources and raw errors (issue 23,
sections 3 and 5).

Entries follow :mod:`tests.test_validation_corpus`: ``(call, expected error, regex on the
message)``; each call gets a fresh temporary directory and must raise an error from
:mod:`fenchel_idl.errors` whose message names the parameter, key or file at fault. Calls
that could run for minutes or allocate terabytes are refused before any work starts, so
each entry also runs under a small time limit. Cases that must warn instead of raising are
in ``WARN_CASES`` (asserted with ``pytest.warns``), and the right answers that replace a
silent wrong one are checked against numpy below.

The classes: an equilibrium that does not exist or is not unique (a residual above the
tolerance is never "converged"); data scaled by 1e200 or 1e-300; problem-file values of the
wrong TOML type or range, a non-UTF-8 file; targets without rows; a state bound that
overflows; sizes beyond memory (states, samples, classes, a model file's headers); model
files that are not model files.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from fenchel_idl import FenchelIDLError, ImplicitModel
from fenchel_idl.analysis import robustness
from fenchel_idl.apps.run import run_problem
from fenchel_idl.drivers import problem_file, solve_bcd
from fenchel_idl.drivers.estimators import ImplicitClassifier, ImplicitRegressor
from fenchel_idl.errors import (
    ConvergenceWarning,
    EquilibriumError,
    InputTypeError,
    ModelFileError,
    NotWellPosedWarning,
    NumericalWarning,
    ResourceError,
    ShapeError,
    ValidationError,
)
from fenchel_idl.problem import datasets
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import (
    MEMORY_LIMIT_ENV,
    array_bytes,
    check_memory,
    memory_limit,
)

from .test_validation_corpus import _GOOD_TOML, LAB20, M3, U20, Y20, _toml, case

#: The time limit of every corpus call: each must refuse before any work starts.
LIMIT_S = 10.0


def _scalar(a: float, activation: str = "relu") -> ImplicitModel:
    """x = phi(a x + u), y = x: a scalar self loop."""
    return ImplicitModel(A=[[a]], B=[[1.0]], C=[[1.0]], D=[[0.0]], activation=activation)


#: A triangular model with diagonal 1.5: each state is a self loop without a fixed point.
TRI15 = ImplicitModel(A=[[1.5, 0.0], [0.3, 1.5]], B=np.ones((2, 1)), C=np.ones((1, 2)),
                      D=[[0.0]])
#: A dense ReLU model with the fixed points 0 and (1, 1) at u = (-1, -1): Picard from 0
#: converges to 0 and nothing certifies uniqueness (lambda_PF(|A|) = ||A||_inf = 2).
TWO_FIXED_POINTS = ImplicitModel(A=[[0.0, 2.0], [2.0, 0.0]], B=np.eye(2), C=np.eye(2),
                                 D=np.zeros((2, 2)))


def _pf(t: Path, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    """The tiny good problem file with lines appended or one text replaced."""
    text = _GOOD_TOML if replace is None else _GOOD_TOML.replace(*replace)
    return _toml(t, text + extra)


def _raw_file(t: Path, content: bytes) -> Path:
    path = t / "problem.toml"
    path.write_bytes(content)
    return path


def _npz_with(t: Path, name: str, member: str, payload: bytes) -> Path:
    """M3's model file with one member replaced by raw .npy bytes."""
    good = M3.save(t / "good.npz")
    path = t / name
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, payload if item == member else zin.read(item))
    return path


def _npy_claiming(shape: tuple[int, ...], payload: bytes = b"\0" * 32) -> bytes:
    """An .npy header that claims ``shape`` (float64) followed by a few bytes only."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + payload


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npy_as_npz(t: Path) -> Path:
    path = t / "model.npz"
    path.write_bytes(_npy(np.eye(3)))
    return path


def _nested_meta(t: Path) -> Path:
    return _npz_with(t, "nested.npz", "metadata.npy",
                     _npy(np.frombuffer(b"[" * 100_000 + b"]" * 100_000, dtype=np.uint8)))


def _save_npz(t: Path, **arrays: np.ndarray) -> str:
    """Write ``e.npz`` beside the problem file; nothing to append to the file."""
    np.savez(t / "e.npz", **arrays)
    return ""


def _raw_npy(t: Path, content: bytes) -> Path:
    (t / "d.npy").write_bytes(content)
    return t / "d.npy"


def _raw_csv(t: Path, content: bytes) -> Path:
    (t / "d.csv").write_bytes(content)
    return t / "d.csv"


def _with_limit(limit: str, call):
    with mock.patch.dict(os.environ, {MEMORY_LIMIT_ENV: limit}):
        return call()


CASES = [
    # equilibria that do not exist: raised with on_nonconvergence="raise" -----------------
    case("eq-relu-self-loop-2", lambda t: _scalar(2.0).predict(
        [[1.0]], on_nonconvergence="raise"), EquilibriumError, r"diverged.*not converge"),
    case("eq-relu-self-loop-1", lambda t: _scalar(1.0).predict(
        [[1.0]], on_nonconvergence="raise"), EquilibriumError,
         r"did not converge.*residual.*not a fixed point"),
    case("eq-triangular-diag-1.5", lambda t: TRI15.predict(
        [[1.0]], on_nonconvergence="raise"), EquilibriumError, r"diverged"),
    # data ------------------------------------------------------------------------------
    case("tp-Y-zero-rows", lambda t: TrainingProblem(U20, np.zeros((0, 20)), n=3),
         ShapeError, r"'Y' must have at least one target row.*\(0, 20\)"),
    case("tp-scales-apart", lambda t: TrainingProblem(U20 * 1e-300, Y20 * 1e300, n=3),
         ValidationError, r"scales of the data are too far apart.*'U'.*'Y'"),
    case("tp-bias-string", lambda t: TrainingProblem(U20, Y20, n=3, bias="false"),
         InputTypeError, r"'bias' must be a bool.*'false'"),
    case("tp-standardize-int", lambda t: TrainingProblem(U20, Y20, n=3, standardize=0),
         InputTypeError, r"'standardize' must be a bool.*0 of type int"),
    case("tp-label-far-beyond", lambda t: TrainingProblem(
        U20, np.where(np.arange(20) == 3, 10**6, LAB20), n=3, loss="cross_entropy"),
         ValidationError, r"q at most 140 for 20 samples; got the label 1000000.*1000001 classes"),
    case("ds-target-zero-columns", lambda t: datasets.from_arrays(np.ones((5, 2)),
                                                                  np.ones((5, 0))),
         ShapeError, r"'target' must have at least one sample and one column.*\(5, 0\)"),
    case("pf-npz-target-zero-columns", lambda t: problem_file.load_data(problem_file.load_problem(
        _pf(t, replace=('source = "cosine"\nm = 20', 'source = "npz"\npath = "e.npz"'),
            extra=_save_npz(t, X=np.ones((5, 2)), y=np.ones((5, 0)))))),
         ShapeError, r"\[data\] 'path'.*target of shape \(5, 0\)"),
    case("ds-npz-header-claims-huge", lambda t: datasets.load_file(
        _npz_with(t, "claim.npz", "A.npy", _npy_claiming((40000, 40000)))),
         ValidationError, r"npz file .*claim\.npz': 'A' claims shape \(40000, 40000\).*160 "
                          r"bytes stored"),
    case("ds-npy-under-npz", lambda t: datasets.load_file(_npy_as_npz(t)),
         ValidationError, r"npz file .*model\.npz' cannot be read: it is not an npz \(zip\) "
                          r"archive.*'npy'"),
    case("ds-npy-header-claims-huge", lambda t: datasets.load_file(
        _raw_npy(t, _npy_claiming((10**6, 10**6))), target=0),
         ValidationError, r"npy file .*d\.npy': 'the array' claims shape \(1000000, 1000000\)"),
    case("ds-csv-not-utf8", lambda t: datasets.load_file(
        _raw_csv(t, b"a,b,y\n1,2,3\n2,3,\xff4\n"), target="y"),
         ValidationError, r"CSV file .*d\.csv' is not UTF-8 text: byte 0xff at position 16"),
    case("run-max-sweeps-zero", lambda t: run_problem(_pf(t), None, max_sweeps=0,
                                                      progress=False),
         ValidationError, r"'max_sweeps' must be an integer in \[1, inf\]; got 0"),
    # resources: refused before anything is allocated ------------------------------------
    case("tp-n-1e7", lambda t: TrainingProblem(U20, Y20, n=10**7),
         ResourceError, r"n = 10000000 states.*needs about .* the limit is"),
    case("tp-n-1e20", lambda t: TrainingProblem(U20, Y20, n=10**20),
         ResourceError, r"n = 100000000000000000000 states.*needs about"),
    case("ds-cosine-m-1e10", lambda t: datasets.cosine(m=10**10),
         ResourceError, r"m = 10000000000 samples.*needs about"),
    case("ds-synthetic-m-1e10", lambda t: datasets.synthetic_from_implicit(m=10**10),
         ResourceError, r"m = 10000000000 samples.*needs about"),
    case("ds-synthetic-n-1e6", lambda t: datasets.synthetic_from_implicit(m=10, n=10**6),
         ResourceError, r"n = 1000000 states.*needs about"),
    case("ds-network-width", lambda t: datasets.synthetic_from_network(m=10,
                                                                       hidden=(10**6, 10)),
         ResourceError, r"widths \(1000000, 10\).*needs about"),
    case("ds-one-hot-classes", lambda t: datasets.one_hot([0, 1], 10**12),
         ResourceError, r"1000000000000 classes.*needs about"),
    case("reg-n-states-1e6", lambda t: ImplicitRegressor(n_states=10**6).fit(U20.T, Y20[0]),
         ResourceError, r"ImplicitRegressor with n_states = 1000000.*needs about"),
    case("clf-n-states-1e6", lambda t: ImplicitClassifier(n_states=10**6).fit(U20.T, LAB20),
         ResourceError, r"ImplicitClassifier with n_states = 1000000"),
    case("mem-env-override", lambda t: _with_limit("1K", lambda: TrainingProblem(
        U20, Y20, n=30)), ResourceError, r"limit is 1 KiB \(set by the environment variable "
                                         r"FENCHEL_IDL_MEMORY_LIMIT\)"),
    case("mem-env-garbage", lambda t: _with_limit("lots", lambda: TrainingProblem(
        U20, Y20, n=3)), ValidationError, r"FENCHEL_IDL_MEMORY_LIMIT must be a positive "
                                          r"number of bytes.*'lots'"),
    # state bounds ------------------------------------------------------------------------
    case("sb-overflow", lambda t: robustness.state_bounds(M3, 1e308),
         ValidationError, r"'sigma_u'.*1e\+308.*overflows"),
    # problem files: strict types, ranges and encoding ------------------------------------
    case("pf-bias-string", lambda t: problem_file.load_problem(_pf(t, 'bias = "false"\n')),
         ValidationError, r"\[model\] 'bias' must be true or false; got 'false' of type str"),
    case("pf-line-search-string", lambda t: problem_file.load_problem(
        _pf(t, '[schedule]\nline_search = "no"\n')),
         ValidationError, r"\[schedule\] 'line_search' must be true or false; got 'no'"),
    case("pf-restart-int", lambda t: problem_file.load_problem(
        _pf(t, "[schedule]\nrestart = 1\n")),
         ValidationError, r"\[schedule\] 'restart' must be true or false; got 1 of type int"),
    case("pf-max-sweeps-float", lambda t: problem_file.load_problem(
        _pf(t, "[training]\nmax_sweeps = 2.9\n")),
         ValidationError, r"\[training\] 'max_sweeps' must be an integer; got 2\.9"),
    case("pf-max-sweeps-zero", lambda t: problem_file.load_problem(
        _pf(t, "[training]\nmax_sweeps = 0\n")),
         ValidationError, r"\[training\] 'max_sweeps' must be in \[1, inf\]; got 0"),
    case("pf-max-sweeps-string", lambda t: problem_file.load_problem(
        _pf(t, '[training]\nmax_sweeps = "abc"\n')),
         ValidationError, r"'max_sweeps' must be an integer; got 'abc' of type str"),
    case("pf-max-sweeps-list", lambda t: problem_file.load_problem(
        _pf(t, "[training]\nmax_sweeps = [2]\n")),
         ValidationError, r"'max_sweeps' must be an integer; got \[2\] of type list"),
    case("pf-max-sweeps-nan", lambda t: problem_file.load_problem(
        _pf(t, "[training]\nmax_sweeps = nan\n")),
         ValidationError, r"'max_sweeps' must be an integer; got nan"),
    case("pf-tol-nan", lambda t: problem_file.load_problem(_pf(t, "[training]\ntol = nan\n")),
         ValidationError, r"\[training\] 'tol' must be a finite number; got nan"),
    case("pf-standardize-string", lambda t: problem_file.load_problem(
        _pf(t, '[training]\nstandardize = "no"\n')),
         ValidationError, r"'standardize' must be true or false; got 'no'"),
    case("pf-lam-item", lambda t: problem_file.load_problem(
        _pf(t, '[training]\nlam = [1.0, "x", 2.0]\n')),
         ValidationError, r"\[training\] 'lam'\[1\] must be a number; got 'x'"),
    case("pf-bounds-not-table", lambda t: problem_file.load_problem(
        _pf(t, "[training]\nbounds = 3\n")),
         ValidationError, r"\[training\] 'bounds' must be a table; got 3"),
    case("pf-bounds-value", lambda t: problem_file.load_problem(
        _pf(t, '[training]\nbounds = {C = "big"}\n')),
         ValidationError, r"\[training.bounds\] 'C' must be a number; got 'big'"),
    case("pf-kappa-string", lambda t: problem_file.load_problem(_pf(t, 'kappa = "0.5"\n')),
         ValidationError, r"\[model\] 'kappa' must be a number; got '0\.5'"),
    case("pf-gap-tol-bool", lambda t: problem_file.load_problem(
        _pf(t, "[solver]\ngap_tol = true\n")),
         ValidationError, r"\[solver\] 'gap_tol' must be a number; got True"),
    case("pf-refine-shuffle-string", lambda t: problem_file.load_problem(
        _pf(t, '[refine]\nshuffle = "yes"\n')),
         ValidationError, r"\[refine\] 'shuffle' must be true or false; got 'yes'"),
    case("pf-refine-epochs-float", lambda t: problem_file.load_problem(
        _pf(t, "[refine]\nepochs = 10.5\n")),
         ValidationError, r"\[refine\] 'epochs' must be an integer; got 10\.5"),
    case("pf-test-fraction-string", lambda t: problem_file.load_problem(
        _pf(t, 'test_fraction = "abc"\n', ("m = 20\n", "m = 20\ntest_fraction = \"abc\"\n"))),
         ValidationError, r"\[data\] 'test_fraction' must be a number; got 'abc'"),
    case("pf-test-fraction-range", lambda t: problem_file.load_problem(
        _pf(t, replace=("m = 20\n", "m = 20\ntest_fraction = 1.5\n"))),
         ValidationError, r"\[data\] 'test_fraction' must be in \(0\.0, 1\.0\); got 1\.5"),
    case("pf-data-dir-int", lambda t: problem_file.load_problem(
        _pf(t, replace=('source = "cosine"\nm = 20', 'source = "mnist"\ndata_dir = 5'))),
         ValidationError, r"\[data\].*'data_dir' must be a string or a path.*got 5 of type int"),
    case("pf-data-m-float", lambda t: problem_file.load_problem(
        _pf(t, replace=("m = 20", "m = 2.5"))),
         ValidationError, r"\[data\].*'m' must be an integer; got 2\.5"),
    case("pf-csv-header-string", lambda t: problem_file.load_problem(
        _pf(t, replace=('source = "cosine"\nm = 20',
                        'source = "csv"\npath = "d.csv"\nheader = "yes"'))),
         ValidationError, r"\[data\] 'header' must be true or false; got 'yes'"),
    case("pf-non-utf8", lambda t: problem_file.load_problem(
        _raw_file(t, b'name = "caf\xe9"\n')),
         ValidationError, r"problem\.toml' is not UTF-8 text.*0xe9 at position 11"),
    case("pf-path-int", lambda t: problem_file.load_problem(5),
         InputTypeError, r"'problem' must be a path to a TOML file; got 5"),
    case("pf-n-beyond-memory", lambda t: problem_file.load_problem(
        _pf(t, replace=("n = 3", "n = 100000000000"))),
         ResourceError, r"\[model\] n = 100000000000 states.*needs about"),
    case("ds-load-data-dir-int", lambda t: datasets.load("mnist", data_dir=5),
         InputTypeError, r"'data_dir' must be a string or a path or None; got 5"),
    case("ds-mnist-data-dir-int", lambda t: datasets.load_mnist(data_dir=5),
         InputTypeError, r"'data_dir' must be a string or a path or None; got 5"),
    case("ds-load-m-float", lambda t: datasets.load("cosine", m=2.9),
         InputTypeError, r"'m' must be an integer; got 2\.9"),
    # model files -------------------------------------------------------------------------
    case("mf-npy-under-npz", lambda t: ImplicitModel.load(_npy_as_npz(t)),
         ModelFileError, r"model\.npz' is not a readable .*a \.npy array, not an npz"),
    case("mf-string-array", lambda t: ImplicitModel.load(
        _npz_with(t, "s.npz", "A.npy", _npy(np.array([["a", "b"], ["c", "d"]])))),
         ModelFileError, r"s\.npz' is corrupt or not a model file.*'A' of dtype <U1"),
    case("mf-header-claims-huge", lambda t: ImplicitModel.load(
        _npz_with(t, "claim.npz", "A.npy", _npy_claiming((40000, 40000)))),
         ModelFileError, r"claim\.npz'.*'A' claims shape \(40000, 40000\).*holds \d+ bytes"),
    case("mf-header-3d", lambda t: ImplicitModel.load(
        _npz_with(t, "d3.npz", "B.npy", _npy(np.zeros((3, 2, 1))))),
         ModelFileError, r"d3\.npz'.*'B'.*shape \(3, 2, 1\).*at most two dimensions"),
    case("mf-nested-metadata", lambda t: ImplicitModel.load(_nested_meta(t)),
         ModelFileError, r"nested\.npz' is not a readable .*RecursionError"),
    case("mf-load-int", lambda t: ImplicitModel.load(5),
         InputTypeError, r"'path' must be a str or path-like.*got 5 of type int"),
    case("mf-beyond-memory", lambda t: _with_limit("100", lambda: ImplicitModel.load(
        M3.save(t / "m.npz"))), ResourceError, r"model file .*m\.npz'.*needs about"),
]


@pytest.mark.parametrize("call, exc, match", CASES)
def test_bad_input_raises_a_clear_package_error_at_once(call, exc, match, tmp_path):
    assert issubclass(exc, FenchelIDLError)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings of diverging models
        with pytest.raises(exc, match=match) as info:
            call(tmp_path)
    assert isinstance(info.value, FenchelIDLError)
    assert time.perf_counter() - start < LIMIT_S, "refused only after the work started"


def test_zip_directory_flips_give_model_file_errors(tmp_path):
    """Every byte of the zip central directory flipped: a ModelFileError or the same model
    (a flip in a field that does not matter), never a raw error."""
    raw = M3.save(tmp_path / "good.npz").read_bytes()
    start = raw.find(b"PK\x01\x02")
    U = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    outcomes = {"error": 0, "same": 0}
    for i in range(start, len(raw)):
        edited = bytearray(raw)
        edited[i] ^= 0xFF
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(edited))
        try:
            loaded = ImplicitModel.load(path)
        except ModelFileError:
            outcomes["error"] += 1
        else:
            np.testing.assert_array_equal(loaded.predict(U), M3.predict(U))
            outcomes["same"] += 1
    assert outcomes["error"] > 100


# -- warnings -------------------------------------------------------------------------------

WARN_CASES = [
    pytest.param(lambda: _scalar(2.0).predict([[1.0]]), ConvergenceWarning, r"diverged",
                 id="predict-relu-2"),
    pytest.param(lambda: _scalar(1.0).predict([[1.0]]), ConvergenceWarning,
                 r"did not converge.*not a fixed point", id="predict-relu-1"),
    pytest.param(lambda: TRI15.predict([[1.0]]), ConvergenceWarning, r"diverged",
                 id="predict-triangular-1.5"),
    pytest.param(lambda: _scalar(2.0, "tanh").predict([[0.0]]), NotWellPosedWarning,
                 r"x\[0\] \(A\[0,0\] = 2\).*several solutions.*depends on X0",
                 id="predict-tanh-several-fixed-points"),
    pytest.param(lambda: TWO_FIXED_POINTS.predict([[-1.0], [-1.0]]), NotWellPosedWarning,
                 r"no well-posedness certificate: lambda_PF\(N\(A, gamma\)\) = 2 >= 1.*"
                 r"\|\|N\(A, gamma\)\|\|_inf = 2 >= 1.*may not be the unique one",
                 id="predict-dense-two-fixed-points"),
    pytest.param(lambda: TrainingProblem(U20 * 1e-6, Y20, n=3, standardize=False),
                 NumericalWarning, r"standardize=False", id="tp-tiny-unstandardized"),
]


@pytest.mark.parametrize("call, category, match", WARN_CASES)
def test_silent_result_now_warns(call, category, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow of a divergence
        with pytest.warns(category, match=match):
            call()


def test_corpus_size():
    assert len(CASES) + len(WARN_CASES) >= 60


# -- the right answers, checked against numpy -----------------------------------------------

def _residual(model: ImplicitModel, X: np.ndarray, U: np.ndarray) -> float:
    """max |X - phi(A X + B U + b)| relative to max(1, |X|), in plain numpy."""
    act = model.activation.name
    phi = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[act]
    with np.errstate(all="ignore"):
        Z = model.A @ X + model.B @ U + model.bias_x[:, None]
        r = np.max(np.abs(X - phi(Z)))
    return float(r / max(1.0, float(np.max(np.abs(X)))))


@pytest.mark.parametrize("model", [_scalar(2.0), _scalar(1.0), TRI15,
                                   _scalar(0.5), _scalar(-3.0)],
                         ids=["relu-2", "relu-1", "tri-1.5", "relu-0.5", "relu-minus-3"])
def test_converged_means_fixed_point(model):
    U = np.array([[1.0, -1.0, 0.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, info = model.equilibrium(U)
    r = _residual(model, X, U)
    if info.converged:
        assert r <= 1e-9 * (1 + 1e-9)
    else:
        assert not (r <= 1e-9)
    assert info.converged == (r <= 1e-9 * (1 + 1e-9))
    assert np.isfinite(info.residual) == bool(np.all(np.isfinite(X)))


def test_well_posed_self_loops_still_converge_exactly():
    """Self loops with A_ii < 1 keep the closed form (the method stays "exact")."""
    model = ImplicitModel(A=[[0.5, 0.0], [0.4, -3.0]], B=np.ones((2, 1)), C=np.ones((1, 2)),
                          D=[[0.0]])
    U = np.array([[1.0, -2.0, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X, info = model.equilibrium(U)
    assert info.converged and info.method == "exact"
    assert _residual(model, X, U) <= 1e-14


def test_random_models_never_report_a_false_convergence():
    """Random small models, well-posed or not, dense or triangular: ``converged`` is True
    exactly when the numpy residual is within the tolerance."""
    rng = np.random.default_rng(7)
    seen = {True: 0, False: 0}
    for trial in range(60):
        n = int(rng.integers(1, 5))
        A = rng.normal(scale=1.2, size=(n, n))
        if trial % 2:
            A = np.tril(A)
        model = ImplicitModel(A=A, B=rng.normal(size=(n, 2)), C=np.ones((1, n)),
                              D=np.zeros((1, 2)))
        U = rng.normal(size=(2, 5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X, info = model.equilibrium(U, max_iter=300)
        r = _residual(model, X, U)
        assert info.converged == (r <= 1e-9 * (1 + 1e-9)), (trial, info, r)
        seen[info.converged] += 1
    assert seen[True] > 5 and seen[False] > 5


def test_tanh_self_loop_honours_x0():
    """x = tanh(2 x) has three fixed points (0 and +-0.9575): the result follows X0 and the
    call warns that it is not unique."""
    model = _scalar(2.0, "tanh")
    U = np.zeros((1, 3))
    results = {}
    for start in (-0.5, 0.0, 0.5):
        with pytest.warns(NotWellPosedWarning, match="depends on X0"):
            X, info = model.equilibrium(U, X0=np.full((1, 3), start))
        assert info.converged
        assert _residual(model, X, U) <= 1e-9
        results[start] = X[0, 0]
    assert results[0.0] == 0.0
    assert results[0.5] == pytest.approx(0.957504, abs=1e-6)
    assert results[-0.5] == pytest.approx(-0.957504, abs=1e-6)


@pytest.mark.parametrize("scale", [1e200, 1e-300])
def test_extreme_input_scales_train_like_unit_scales(scale):
    """Inputs scaled by 1e200 or 1e-300 give the same trained model (predictions on the
    scaled inputs equal those on the unscaled ones) and the same certificate."""
    ref = solve_bcd(TrainingProblem(U20, Y20, n=3), max_sweeps=1, seed=0)
    run = solve_bcd(TrainingProblem(U20 * scale, Y20, n=3), max_sweeps=1, seed=0)
    np.testing.assert_allclose(run.model.predict(U20 * scale), ref.model.predict(U20),
                               rtol=1e-6, atol=1e-8)
    assert run.certificate.well_posed == ref.certificate.well_posed


@pytest.mark.parametrize("scale", [1e200, 1e-300])
def test_extreme_scales_regressor_scores_like_unit_scales(scale):
    X, y = U20.T, Y20[0]
    ref = ImplicitRegressor(n_states=3, max_sweeps=1, random_state=0).fit(X, y)
    reg = ImplicitRegressor(n_states=3, max_sweeps=1, random_state=0).fit(X * scale, y)
    assert reg.score(X * scale, y) == pytest.approx(ref.score(X, y), abs=1e-6)
    assert ref.score(X, y) > 0.5


def test_memory_helper_estimates_and_limits():
    assert array_bytes((10, 20), (3,)) == 8 * 203
    assert array_bytes((10**20, 10**20)) == 8 * 10**40  # exact integers, no overflow
    assert check_memory("small", 100, limit=1000) == 100
    with pytest.raises(ResourceError, match=r"big needs about 1.95 KiB.*limit is 1000 B"):
        check_memory("big", 2000, limit=1000)
    with mock.patch.dict(os.environ, {MEMORY_LIMIT_ENV: "2G"}):
        assert memory_limit() == 2 * 1024**3
    with mock.patch.dict(os.environ, {MEMORY_LIMIT_ENV: ""}):
        limit = memory_limit()
    assert limit is None or limit > 0
    assert issubclass(ResourceError, MemoryError) and issubclass(ResourceError, ValueError)


def test_good_problem_file_types_still_load(tmp_path):
    """Integers are accepted where numbers are expected; TOML booleans and arrays of
    numbers load as before."""
    spec = problem_file.load_problem(_pf(tmp_path, "kappa = 0.5\nbias = false\n"
                                         "[training]\nmax_sweeps = 2\nlam = [1, 2.0, 3]\n"
                                         "tol = 0\n[schedule]\nline_search = false\n"
                                         "restart = false\n"))
    assert spec.model["bias"] is False and spec.training["lam"] == [1, 2.0, 3]
    assert problem_file.bcd_options(spec)["max_sweeps"] == 2


def test_label_limit_keeps_sparse_but_plausible_labels():
    """Labels up to 2 m + 99 are accepted (classes without samples only warn)."""
    labels = np.where(np.arange(20) == 0, 139, LAB20)
    with pytest.warns(UserWarning, match="have no samples"):
        prob = TrainingProblem(U20, labels, n=3, loss="cross_entropy")
    assert prob.q == 140
    assert json.dumps(prob.q)
