import json
import zipfile

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.errors import (
    ConvergenceWarning,
    EquilibriumError,
    InputTypeError,
    ModelFileError,
    ShapeError,
    ValidationError,
)
from tests.helpers import numpy_fixed_point, random_model


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "identity"])
def test_equilibrium_matches_plain_numpy_fixed_point(rng, activation):
    m = random_model(rng, activation=activation)
    U = rng.standard_normal((m.p, 50))
    X, info = m.equilibrium(U)
    assert info.converged and info.residual < 1e-8 and info.iterations > 0
    np.testing.assert_allclose(X, numpy_fixed_point(m, U), atol=1e-8)
    Y = m.predict(U)
    np.testing.assert_allclose(Y, m.C @ X + m.D @ U + m.bias_y[:, None], atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("method", ["auto", "picard", "anderson"])
def test_reported_residual_is_the_residual_of_the_returned_state(rng, activation, method):
    # the Picard loop reports the residual without another product with A: check it
    # against a direct numpy evaluation, also when the iteration stops at max_iter
    m = random_model(rng, n=30, kappa=0.9, activation=activation)
    U = rng.standard_normal((m.p, 40))
    phi = {"relu": lambda z: np.maximum(z, 0), "identity": lambda z: z, "tanh": np.tanh,
           "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
           "leaky_relu": lambda z: np.where(z >= 0, z, m.activation.alpha * z)}[activation]
    for max_iter in (3, 2000):
        with pytest.warns(ConvergenceWarning) if max_iter == 3 else _no_warning():
            X, info = m.equilibrium(U, method=method, max_iter=max_iter)
        Z = m.A @ X + m.B @ U + m.bias_x[:, None]
        direct = np.max(np.abs(X - phi(Z))) / max(1.0, np.max(np.abs(X)))
        assert info.residual == pytest.approx(direct, rel=1e-9, abs=1e-15)
        assert info.converged == (max_iter == 2000)


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            yield
    return ctx()


def test_activation_apply_in_place_equals_the_value(rng):
    from fenchel_idl.model.activations import get_activation

    Z = rng.standard_normal((7, 9)) * 3
    for name in ("relu", "leaky_relu", "tanh", "sigmoid", "identity", "softmax"):
        act = get_activation(name)
        buf = Z.copy()
        out = act.apply_(buf)
        assert out is buf
        np.testing.assert_array_equal(buf, act(Z))


def test_anderson_gives_the_same_equilibrium(rng):
    m = random_model(rng, n=40, kappa=0.97)
    U = rng.standard_normal((m.p, 30))
    X1, i1 = m.equilibrium(U)
    X2, i2 = m.equilibrium(U, method="anderson")
    assert i2.method == "anderson" and i2.converged
    np.testing.assert_allclose(X1, X2, atol=1e-7)


def test_one_dimensional_input_gives_one_dimensional_results(model, rng):
    u = rng.standard_normal(model.p)
    x, _ = model.equilibrium(u)
    y = model.predict(u)
    assert x.shape == (model.n,) and y.shape == (model.q,)
    np.testing.assert_allclose(y, model.predict(u[:, None])[:, 0])


def test_triangular_back_substitution_is_exact_for_paper_example():
    # Remark 2.5: triangular A with A_11 < -1 is well-posed for ReLU although PF(|A|) > 1
    A = np.array([[-2.0, 1.0, 0.5], [0.0, 0.5, -1.0], [0.0, 0.0, 0.9]])
    m = ImplicitModel(A=A, B=np.eye(3), C=np.ones((1, 3)), D=np.zeros((1, 3)))
    U = np.random.default_rng(0).standard_normal((3, 20))
    X, info = m.equilibrium(U)
    assert info.method == "exact" and info.iterations == 0
    # independent reference: the backward recursion of Remark 2.5, written out
    ref = np.zeros_like(U)
    for j in range(U.shape[1]):
        b = U[:, j]
        x = np.zeros(3)
        for i in (2, 1, 0):
            x[i] = max(b[i] + A[i, i + 1:] @ x[i + 1:], 0.0) / (1 - A[i, i])
        ref[:, j] = x
    np.testing.assert_allclose(X, ref, atol=1e-12)


def test_nonconvergence_warns_or_raises(rng):
    A = np.array([[0.0, 2.0], [2.0, 0.0]])  # Picard diverges for identity
    m = ImplicitModel(A=A, B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)), activation="identity")
    U = np.ones((2, 3))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _, info = m.equilibrium(U, max_iter=50)
    assert not info.converged
    with pytest.raises(EquilibriumError, match="did not converge"):
        m.equilibrium(U, max_iter=50, on_nonconvergence="raise")


def test_model_is_immutable(model):
    with pytest.raises(ValueError):
        model.A[0, 0] = 1.0
    with pytest.raises(AttributeError):
        model.A = np.zeros((2, 2))


def test_save_load_roundtrip(model, tmp_path, rng):
    path = model.save(tmp_path / "m.npz")
    loaded = ImplicitModel.load(path)
    U = rng.standard_normal((model.p, 7))
    np.testing.assert_array_equal(loaded.predict(U), model.predict(U))
    assert loaded.activation == model.activation


def test_load_refuses_bad_files(model, tmp_path):
    path = model.save(tmp_path / "m.npz")
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        ImplicitModel.load(tmp_path / "trunc.npz")
    np.savez(tmp_path / "foreign.npz", A=np.eye(2))
    with pytest.raises(ModelFileError, match="not a fenchel_idl model"):
        ImplicitModel.load(tmp_path / "foreign.npz")
    # tamper: change one array, keep the metadata
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["A"] = arrays["A"] * 1.01
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(ModelFileError, match="checksum"):
        ImplicitModel.load(tmp_path / "tampered.npz")
    meta = json.loads(bytes(arrays["metadata"]).decode())
    meta["version"] = 99
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(ModelFileError, match="version 99"):
        ImplicitModel.load(tmp_path / "future.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        ImplicitModel.load(tmp_path / "nothing.npz")
    # an object array would need pickle: refused, never executed
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())


def test_bad_input_errors():
    ok = dict(A=np.zeros((2, 2)), B=np.zeros((2, 3)), C=np.zeros((1, 2)), D=np.zeros((1, 3)))
    with pytest.raises(ShapeError, match=r"'A' must be a non-empty square matrix.*\(2, 3\)"):
        ImplicitModel(**{**ok, "A": np.zeros((2, 3))})
    with pytest.raises(ShapeError, match="'B' must have n = 2 rows"):
        ImplicitModel(**{**ok, "B": np.zeros((3, 3))})
    with pytest.raises(ShapeError, match="'D' must have shape"):
        ImplicitModel(**{**ok, "D": np.zeros((1, 2))})
    with pytest.raises(ValidationError, match="'C' must contain only finite values"):
        ImplicitModel(**{**ok, "C": np.array([[np.nan, 0.0]])})
    with pytest.raises(ValidationError, match="'activation' must be one of"):
        ImplicitModel(**ok, activation="gelu")
    with pytest.raises(InputTypeError, match="'A' must be a numeric array"):
        ImplicitModel(**{**ok, "A": [["a", "b"], ["c", "d"]]})
    m = ImplicitModel(**ok)
    with pytest.raises(ShapeError, match=r"'U' must have 3 rows"):
        m.predict(np.zeros((2, 5)))
    with pytest.raises(ValidationError, match="'U' must contain only finite"):
        m.predict(np.full((3, 2), np.inf))


# -- picard on wide states (blocks of columns) ---------------------------------------------------

def _plain_relu_fixed_point(A, b, tol=1e-15):
    """X = max(A X + b, 0) by a plain numpy loop on all columns at once, to ``tol``."""
    X = np.zeros_like(b)
    for _ in range(100000):
        Xn = np.maximum(A @ X + b, 0.0)
        if np.max(np.abs(Xn - X)) <= tol * max(1.0, np.max(np.abs(Xn))):
            return Xn
        X = Xn
    raise AssertionError("the reference did not converge")


@pytest.fixture
def wide_relu(rng):
    """n = 20 states, m = 5000 samples: several blocks of columns in picard."""
    from fenchel_idl.model.activations import get_activation

    n, m = 20, 5000
    A = rng.standard_normal((n, n))
    A *= 0.8 / np.abs(A).sum(axis=1, keepdims=True)  # ||A||_inf = 0.8: a contraction
    b = rng.standard_normal((n, m)) * np.linspace(0.1, 5.0, m)  # columns of varied scales
    return A, b, get_activation("relu")


def test_picard_on_column_blocks_matches_a_plain_fixed_point(wide_relu, rng):
    from fenchel_idl.model.equilibrium import picard

    A, b, phi = wide_relu
    ref = _plain_relu_fixed_point(A, b)
    tol = 1e-10
    X, iters, res, conv = picard(A, b, phi, tol=tol)
    assert conv and X.shape == b.shape
    scale = max(1.0, np.max(np.abs(ref)))
    # Picard's error is at most step * kappa / (1 - kappa) = 4 tol (relative)
    assert np.max(np.abs(X - ref)) <= 5 * tol * scale
    # the reported residual is that of the returned X, relative to max(1, max |X|)
    true_res = np.max(np.abs(X - np.maximum(A @ X + b, 0.0))) / max(1.0, np.max(np.abs(X)))
    assert res == pytest.approx(true_res, rel=1e-6, abs=1e-15) and res <= tol
    # a warm start near the answer gives the same equilibrium in fewer iterations
    X0 = ref + 1e-3 * rng.standard_normal(ref.shape)
    Xw, iters_w, _, conv_w = picard(A, b, phi, X0=X0, tol=tol)
    assert conv_w and iters_w < iters
    assert np.max(np.abs(Xw - ref)) <= 5 * tol * scale
    # float32 input iterates in float32 and lands within its own tolerance
    X32, _, _, conv32 = picard(A.astype(np.float32), b.astype(np.float32), phi, tol=1e-5)
    assert conv32 and X32.dtype == np.float32
    assert np.max(np.abs(X32 - ref)) <= 1e-4 * scale


def test_picard_reports_divergence_in_a_later_block(wide_relu):
    from fenchel_idl.model.equilibrium import picard

    A, b, phi = wide_relu
    b = b.copy()
    b[:, -1] = np.inf  # only the last column (last block) is non-finite
    X, _, res, conv = picard(A, b, phi, tol=1e-10, max_iter=50)
    assert not conv and res == float("inf")
    assert not np.all(np.isfinite(X[:, -1])) and np.all(np.isfinite(X[:, :100]))
