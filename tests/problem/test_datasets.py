import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fenchel_idl import is_well_posed
from fenchel_idl.errors import DataNotFoundError, InputTypeError, ShapeError, ValidationError
from fenchel_idl.problem.datasets import (
    DATA_ENV,
    DATASET_NAMES,
    MAX_INFERRED_CLASSES,
    Dataset,
    cosine,
    cosine_function,
    cosine_grid,
    data_directories,
    digits,
    from_arrays,
    load,
    load_fashion_mnist,
    load_file,
    load_mnist,
    one_hot,
    read_idx,
    synthetic_from_implicit,
    synthetic_from_network,
    train_test_split,
)

# Published class counts of the canonical files (independent of this package).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def write_idx(path, array, type_byte=0x08, compress=True):
    """Plain IDX writer used as the test's reference: header, then big-endian data."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    array = np.asarray(array)
    payload = (bytes([0, 0, type_byte, array.ndim])
               + struct.pack(f">{array.ndim}I", *array.shape)
               + array.astype(dtypes[type_byte]).tobytes())
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def assert_one_hot(ds):
    assert ds.Y.shape == (ds.q, ds.m)
    np.testing.assert_array_equal(ds.Y.sum(axis=0), 1.0)
    np.testing.assert_array_equal(ds.Y, np.eye(ds.q)[ds.labels].T)


def same(a, b):
    return (np.array_equal(a.U, b.U) and np.array_equal(a.Y, b.Y)
            and (a.labels is None or np.array_equal(a.labels, b.labels)))


# -- cosine (section 7.1) --------------------------------------------------------------------

def test_cosine_function_matches_formula():
    u = np.linspace(-7, 7, 301).reshape(7, 43)
    ref = 5 * np.cos(np.pi * u) * np.exp(-np.abs(u) / 2)
    np.testing.assert_allclose(cosine_function(u), ref, rtol=0, atol=1e-14)
    assert cosine_function(u).shape == (7, 43)
    assert cosine_function(0.0) == 5.0


def test_cosine_layout_noise_bounds_and_function():
    ds = cosine(m=500, noise=0.7, seed=3)
    assert ds.U.shape == (1, 500) and ds.Y.shape == (1, 500)
    assert ds.X_rows.shape == (500, 1) and ds.y_rows.shape == (500,)
    assert ds.Y_rows.shape == (500, 1)
    assert ds.task == "regression" and ds.labels is None
    assert np.all(np.abs(ds.U) <= 5)
    w = ds.Y - 5 * np.cos(np.pi * ds.U) * np.exp(-np.abs(ds.U) / 2)
    assert np.all(np.abs(w) <= 0.7)
    assert ds.f is cosine_function
    np.testing.assert_allclose(ds.f(ds.U), ds.Y - w)


def test_cosine_noise_statistics_and_defaults():
    ds = cosine(m=40_000, seed=0)
    w = (ds.Y - cosine_function(ds.U)).ravel()
    assert abs(w.std() - 1 / np.sqrt(3)) < 0.01  # the paper's 0.57
    assert abs(w.mean()) < 0.02
    assert abs(ds.U.mean()) < 0.1 and abs(ds.U.std() - 10 / np.sqrt(12)) < 0.05
    assert cosine().m == 200
    noiseless = cosine(m=50, noise=0.0, seed=0)
    np.testing.assert_array_equal(noiseless.Y, cosine_function(noiseless.U))


def test_cosine_determinism_and_prefix():
    a, b, c = cosine(m=100, seed=7), cosine(m=100, seed=7), cosine(m=100, seed=8)
    assert same(a, b) and not np.array_equal(a.U, c.U)
    longer = cosine(m=150, seed=7)
    np.testing.assert_array_equal(longer.U[:, :100], a.U)
    np.testing.assert_array_equal(cosine(m=100, noise=0.1, seed=7).U, a.U)


def test_cosine_grid():
    g = cosine_grid()
    assert g.U.shape == (1, 1000)
    np.testing.assert_allclose(g.U[0], np.linspace(-5, 5, 1000))
    np.testing.assert_allclose(g.Y, 5 * np.cos(np.pi * g.U) * np.exp(-np.abs(g.U) / 2))
    assert cosine_grid(11).m == 11


# -- synthetic classification (section 7.2.1) ------------------------------------------------

@pytest.mark.parametrize("make", [synthetic_from_network, synthetic_from_implicit])
def test_synthetic_layout_one_hot_and_generator(make):
    ds = make(m=600, seed=1)
    assert ds.U.shape == (5, 600) and ds.Y.shape == (2, 600) and ds.labels.shape == (600,)
    assert ds.X_rows.shape == (600, 5) and ds.y_rows.shape == (600,)
    assert ds.task == "classification"
    assert_one_hot(ds)
    assert is_well_posed(ds.generator)
    scores = ds.generator.predict(ds.U)
    np.testing.assert_array_equal(np.argmax(scores, axis=0), ds.labels)


@pytest.mark.parametrize("make", [synthetic_from_network, synthetic_from_implicit])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_synthetic_classes_balanced(make, seed):
    ds = make(m=2000, seed=seed)
    assert 0.44 < ds.labels.mean() < 0.56
    assert abs(ds.U.mean()) < 0.1 and abs(ds.U.std() - 1) < 0.05


@pytest.mark.parametrize("make", [synthetic_from_network, synthetic_from_implicit])
def test_synthetic_determinism_and_prefix(make):
    a, b, c = make(m=300, seed=5), make(m=300, seed=5), make(m=300, seed=6)
    assert same(a, b)
    assert not np.array_equal(a.U, c.U) and not np.array_equal(a.labels, c.labels)
    np.testing.assert_array_equal(a.generator.A, b.generator.A)
    longer = make(m=500, seed=5)
    np.testing.assert_array_equal(longer.U[:, :300], a.U)
    np.testing.assert_array_equal(longer.labels[:300], a.labels)


def test_synthetic_implicit_norm_and_network_structure():
    ds = synthetic_from_implicit(m=10, seed=0, n=15, kappa=0.6)
    assert ds.generator.n == 15
    assert np.isclose(np.abs(ds.generator.A).sum(axis=1).max(), 0.6)
    assert not np.allclose(np.tril(ds.generator.A, -1), 0)  # a genuinely implicit A
    net = synthetic_from_network(m=10, seed=0, hidden=(7, 4, 3))
    assert net.generator.n == 14
    assert np.allclose(np.tril(net.generator.A), 0)  # feedforward: strictly triangular
    # the network generator equals a plain numpy forward pass up to the calibrated bias
    U = np.random.default_rng(0).standard_normal((5, 20))
    g = net.generator
    np.testing.assert_allclose(g.predict(U), g.C @ g.equilibrium(U)[0] + g.bias_y[:, None])


def test_synthetic_label_noise():
    clean = synthetic_from_network(m=4000, seed=2)
    noisy = synthetic_from_network(m=4000, seed=2, label_noise=0.2)
    np.testing.assert_array_equal(clean.U, noisy.U)
    flipped = np.mean(clean.labels != noisy.labels)
    assert abs(flipped - 0.2) < 0.03 and noisy.info["flipped"] == np.sum(
        clean.labels != noisy.labels)
    assert_one_hot(noisy)


# -- digits and splitting --------------------------------------------------------------------

def test_digits_matches_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = digits()
    assert ds.U.shape == (64, 1797) and ds.Y.shape == (10, 1797) and ds.images.shape == (
        1797, 8, 8)
    np.testing.assert_allclose(ds.X_rows, ref.data / 16)
    np.testing.assert_array_equal(ds.labels, ref.target)
    assert ds.U.min() == 0 and ds.U.max() == 1
    assert_one_hot(ds)


def test_digits_subset_stratified_and_seeded():
    full = digits()
    a, b, c = digits(n=200, seed=0), digits(n=200, seed=0), digits(n=200, seed=1)
    assert a.m == 200 and same(a, b) and not same(a, c)
    share = np.bincount(full.labels) / full.m
    assert np.all(np.abs(np.bincount(a.labels, minlength=10) - 200 * share) < 1)


def test_train_test_split_classification():
    ds = digits()
    train, test = train_test_split(ds, test_fraction=0.3, seed=4)
    assert test.m == round(0.3 * ds.m) and train.m + test.m == ds.m
    assert train.name == "digits-train" and test.name == "digits-test"
    # every sample lands in exactly one part: compare multisets of columns
    both = np.sort(np.concatenate([train.X_rows, test.X_rows]).view(
        [("", float)] * 64).ravel())
    ref = np.sort(ds.X_rows.copy().view([("", float)] * 64).ravel())
    np.testing.assert_array_equal(both, ref)
    share = np.bincount(ds.labels) / ds.m
    assert np.all(np.abs(np.bincount(test.labels, minlength=10) - test.m * share) < 1)
    assert_one_hot(train)
    again = train_test_split(ds, test_fraction=0.3, seed=4)[1]
    other = train_test_split(ds, test_fraction=0.3, seed=5)[1]
    assert same(test, again) and not same(test, other)


def test_train_test_split_regression_keeps_function():
    ds = cosine(m=101, seed=0)
    train, test = train_test_split(ds, 0.2, seed=0)
    assert (train.m, test.m) == (81, 20)
    assert train.f is cosine_function
    np.testing.assert_array_equal(np.sort(np.concatenate([train.U[0], test.U[0]])),
                                  np.sort(ds.U[0]))
    tiny_train, tiny_test = train_test_split(cosine(m=2), 0.01)
    assert (tiny_train.m, tiny_test.m) == (1, 1)


# -- IDX files -------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_known_content(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "imgs.idx", images, compress=compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    ints = np.array([-3, 70000, 5], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "ints.idx", ints, type_byte=0x0C, compress=compress))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)
    floats = np.array([[0.5, -1.25]])
    np.testing.assert_array_equal(
        read_idx(write_idx(tmp_path / "f.idx", floats, type_byte=0x0E, compress=compress)),
        floats)


def test_read_idx_corrupt_and_missing(tmp_path):
    good = gzip.decompress(write_idx(tmp_path / "g.gz", np.ones((2, 2), np.uint8)).read_bytes())
    cases = {
        "magic.gz": (b"\x01" + good[1:], "two zero bytes"),
        "type.gz": (good[:2] + b"\x42" + good[3:], "unknown type byte 0x42"),
        "short.gz": (good[:-1], "announces shape \\(2, 2\\)"),
        "long.gz": (good + b"\x00", "file holds 5"),
        "header.gz": (good[:6], "header with 2 dimensions"),
    }
    for name, (payload, msg) in cases.items():
        path = tmp_path / name
        path.write_bytes(gzip.compress(payload))
        with pytest.raises(ValidationError, match=msg) as err:
            read_idx(path)
        assert name in str(err.value)
    truncated = tmp_path / "trunc.gz"
    truncated.write_bytes(gzip.compress(good)[:-8])
    with pytest.raises(ValidationError, match="trunc.gz.*gzip stream"):
        read_idx(truncated)
    with pytest.raises(FileNotFoundError, match="nothing.gz"):
        read_idx(tmp_path / "nothing.gz")


def fake_mnist(base, n_train=12, n_test=6, side=4):
    """A tiny MNIST-shaped folder: image k has every pixel equal to 10 * k."""
    folder = base / "mnist"
    folder.mkdir(parents=True)
    for prefix, k in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(k, dtype=np.uint8) % 3
        imgs = (10 * np.arange(k, dtype=np.uint8))[:, None, None] * np.ones((side, side),
                                                                            np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_loader_on_small_files(tmp_path):
    fake_mnist(tmp_path)
    ds = load_mnist("test", data_dir=tmp_path)
    assert ds.U.shape == (16, 6) and ds.image_shape == (4, 4) and ds.name == "mnist-test"
    np.testing.assert_allclose(ds.U, np.ones((16, 1)) * (10 * np.arange(6) / 255))
    np.testing.assert_array_equal(ds.labels, np.arange(6) % 3)
    sub = load_mnist("train", n=6, seed=0, data_dir=tmp_path)
    np.testing.assert_array_equal(np.bincount(sub.labels, minlength=10)[:3], [2, 2, 2])
    np.testing.assert_allclose(sub.U[0] * 255 / 10 % 3, sub.labels)  # pixels follow labels


def test_loader_env_variable_and_missing_files(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "here")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "here"))
    assert data_directories()[0] == tmp_path / "here"
    ds = load_mnist("train")
    assert ds.m == 12 and ds.info["images"].startswith(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="(?s)not found in any of.*nowhere.*mnist"):
        load_mnist(data_dir=tmp_path / "nowhere")
    # nothing anywhere: the message lists the three places tried, in order
    from fenchel_idl.problem import datasets

    monkeypatch.setenv(DATA_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "__file__", str(tmp_path / "src" / "fenchel_idl" / "problem" / "x.py"))
    monkeypatch.chdir(tmp_path)
    places = [tmp_path / "empty", tmp_path / "src" / "problems" / "data",
              tmp_path / "problems" / "data"]
    assert data_directories() == places
    with pytest.raises(FileNotFoundError, match=f"(?s){DATA_ENV}") as err:
        load_mnist("test")
    text = str(err.value)
    positions = [text.index(str(place / "mnist")) for place in places]
    assert positions == sorted(positions)


def test_loader_rejects_inconsistent_files(tmp_path):
    folder = fake_mnist(tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValidationError, match="must hold 5 uint8 images"):
        load_mnist("test", data_dir=tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(6, 12, np.uint8))
    with pytest.raises(ValidationError, match="holds label 12"):
        load_mnist("test", data_dir=tmp_path)


# -- the shipped MNIST and Fashion-MNIST -----------------------------------------------------

def test_shipped_data_is_in_the_checkout():
    data = Path(__file__).resolve().parents[2] / "problems" / "data"
    for folder in ("mnist", "fashion-mnist"):
        for prefix in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                assert (data / folder / f"{prefix}-{kind}-ubyte.gz").is_file()
    assert "CC BY-SA 3.0" in (data / "README.md").read_text()


def test_mnist_test_split():
    ds = load_mnist("test")
    assert ds.U.shape == (784, 10_000) and ds.images.shape == (10_000, 28, 28)
    assert ds.U.min() == 0.0 and ds.U.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.labels), MNIST_TEST_COUNTS)
    assert ds.labels[0] == 7
    assert_one_hot(ds)
    assert not ds.U.flags.writeable


def test_mnist_train_full_and_subset():
    ds = load_mnist("train")
    assert ds.m == 60_000 and ds.labels[0] == 5
    np.testing.assert_array_equal(np.bincount(ds.labels), MNIST_TRAIN_COUNTS)
    sub = load_mnist("train", n=1000, seed=3)
    counts = np.bincount(sub.labels, minlength=10)
    assert counts.sum() == 1000
    assert np.all(np.abs(counts - 1000 * np.array(MNIST_TRAIN_COUNTS) / 60_000) < 1)
    # the subset is made of real training images, with their labels
    for j in range(3):
        hits = np.flatnonzero((ds.U == sub.U[:, [j]]).all(axis=0))
        assert hits.size >= 1 and np.all(ds.labels[hits] == sub.labels[j])
    assert same(sub, load_mnist("train", n=1000, seed=3))
    assert not same(sub, load_mnist("train", n=1000, seed=4))


def test_fashion_mnist_test_split():
    ds = load_fashion_mnist("test", n=500, seed=0)
    assert ds.U.shape == (784, 500) and ds.images.shape == (500, 28, 28)
    assert 0.0 <= ds.U.min() and ds.U.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(ds.labels), [50] * 10)
    assert ds.class_names[9] == "Ankle boot" and ds.name == "fashion_mnist-test"
    assert_one_hot(ds)


# -- dispatch and validation -----------------------------------------------------------------

def test_load_dispatch():
    assert set(DATASET_NAMES) >= {"cosine", "synthetic_network", "synthetic_implicit",
                                  "digits", "mnist", "fashion_mnist"}
    assert same(load("cosine", m=20, seed=2), cosine(m=20, seed=2))
    assert same(load("synthetic_implicit", m=30), synthetic_from_implicit(m=30))
    assert load("fashion-mnist", split="test", n=20).name == "fashion_mnist-test"
    assert load("MNIST", split="test", n=10).m == 10
    with pytest.raises(ValidationError, match="'name' must be one of .*'fashion_mnist'"):
        load("cifar10")
    with pytest.raises(ValidationError, match="does not take the option\\(s\\) \\['mm'\\]"):
        load("cosine", mm=3)
    with pytest.raises(InputTypeError, match="'name' must be a str"):
        load(3)


@pytest.mark.parametrize("call, error, msg", [
    (lambda: cosine(m=0), ValidationError, "'m' must be an integer in \\[1, inf\\]; got 0"),
    (lambda: cosine(m=2.5), InputTypeError, "'m' must be an integer"),
    (lambda: cosine(noise=-1), ValidationError, "'noise' must be in \\[0.0, inf\\]"),
    (lambda: cosine(seed=-1), ValidationError, "'seed' must be an integer in \\[0, inf\\]"),
    (lambda: cosine_grid(1), ValidationError, "'num' must be an integer in \\[2, inf\\]"),
    (lambda: synthetic_from_network(hidden=()), ValidationError, "at least one hidden"),
    (lambda: synthetic_from_network(hidden=(3, 0)), ValidationError, "'hidden\\[1\\]'"),
    (lambda: synthetic_from_network(label_noise=0.7), ValidationError, "'label_noise'"),
    (lambda: synthetic_from_implicit(kappa=1.0), ValidationError, "'kappa' must be in \\(0"),
    (lambda: synthetic_from_implicit(n=0), ValidationError, "'n' must be an integer"),
    (lambda: digits(n=1798), ValidationError, "'n' must be an integer in \\[1, 1797\\]"),
    (lambda: load_mnist("val"), ValidationError, "'split' must be one of \\['test', 'train'\\]"),
    (lambda: load_mnist("test", n=0), ValidationError, "'n' must be an integer in \\[1, 10000"),
    (lambda: load_mnist("test", n=10_001), ValidationError, "got 10001"),
    (lambda: train_test_split(cosine(m=5), 1.0), ValidationError, "'test_fraction'"),
    (lambda: train_test_split(cosine(m=1), 0.5), ValidationError, "at least 2 samples"),
    (lambda: train_test_split(np.zeros((2, 2))), InputTypeError, "must be a Dataset"),
    (lambda: one_hot([0, 3], 3), ValidationError, "must lie in \\[0, 3\\)"),
    (lambda: one_hot([0.5], 3), InputTypeError, "must be integers"),
])
def test_bad_arguments(call, error, msg):
    with pytest.raises(error, match=msg):
        call()


def test_dataset_record_validation_and_immutability():
    U, Y = np.zeros((2, 3)), np.zeros((1, 3))
    with pytest.raises(ShapeError, match="same number of columns"):
        Dataset(U=U, Y=np.zeros((1, 4)))
    with pytest.raises(ShapeError, match="'labels' must have shape \\(3,\\)"):
        Dataset(U=U, Y=np.zeros((2, 3)), labels=[0, 1])
    with pytest.raises(ValidationError, match="'labels' must lie in \\[0, 2\\)"):
        Dataset(U=U, Y=np.zeros((2, 3)), labels=[0, 1, 2])
    with pytest.raises(ValidationError, match="'image_shape'"):
        Dataset(U=U, Y=Y, image_shape=(3, 3))
    with pytest.raises(ValidationError, match="finite"):
        Dataset(U=np.full((2, 3), np.nan), Y=Y)
    with pytest.raises(ValidationError, match="holds no images"):
        Dataset(U=U, Y=Y).images
    ds = Dataset(U=U, Y=Y, name="toy", info={"a": 1})
    assert repr(ds) == "Dataset(name='toy', p=2, q=1, m=3, task='regression')"
    U[0, 0] = 5.0  # the record kept its own copy
    assert ds.U[0, 0] == 0.0 and not ds.U.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.U = U
    with pytest.raises(TypeError):
        ds.info["a"] = 2
    with pytest.raises(ValidationError, match="'indices' must lie in \\[0, 3\\)"):
        ds.subset([3])
    assert ds.subset([2, 0]).m == 2


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([1, 0, 1]), 2), [[0, 1, 0], [1, 0, 1]])
    assert one_hot(np.array([], dtype=int), 4).shape == (4, 0)


# -- your own data: from_arrays and load_file ------------------------------------------------

def _write_csv(path, header, table):
    lines = ([",".join(header)] if header else []) + [",".join(repr(float(v)) for v in row)
                                                      for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_file_csv_named_target_is_the_transposed_columns(tmp_path, rng):
    table = np.round(rng.normal(size=(7, 4)), 6)
    path = _write_csv(tmp_path / "d.csv", ["a", "y", "b", "c"], table)
    ds = load_file(path, target="y")
    np.testing.assert_array_equal(ds.U, table[:, [0, 2, 3]].T)
    np.testing.assert_array_equal(ds.Y, table[:, [1]].T)
    assert ds.task == "regression" and ds.labels is None and ds.name == "d"
    assert ds.info["inputs"] == ["a", "b", "c"] and ds.info["target"] == ["y"]
    several = load_file(path, target=["c", "a"], inputs=["b"])
    np.testing.assert_array_equal(several.Y, table[:, [3, 0]].T)
    np.testing.assert_array_equal(several.U, table[:, [2]].T)


def test_load_file_csv_index_target_without_header(tmp_path, rng):
    table = np.round(rng.normal(size=(5, 3)), 6)
    path = _write_csv(tmp_path / "plain.csv", None, table)
    for target in (1, -2):
        ds = load_file(path, target=target)
        np.testing.assert_array_equal(ds.U, table[:, [0, 2]].T)
        np.testing.assert_array_equal(ds.Y, table[:, [1]].T)
    assert load_file(path, target=1).info["inputs"] == [0, 2]
    with_header = load_file(_write_csv(tmp_path / "h.csv", ["a", "b", "c"], table), target=2)
    np.testing.assert_array_equal(with_header.Y, table[:, [2]].T)


def test_load_file_npz_and_npy(tmp_path, rng):
    X, y = rng.normal(size=(6, 3)), rng.normal(size=6)
    np.savez(tmp_path / "d.npz", X=X, y=y, inputs=2 * X, t=np.c_[y, -y])
    ds = load_file(tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.U, X.T)
    np.testing.assert_array_equal(ds.Y, y[None, :])
    named = load_file(tmp_path / "d.npz", inputs="inputs", target="t")
    np.testing.assert_array_equal(named.U, 2 * X.T)
    np.testing.assert_array_equal(named.Y, np.c_[y, -y].T)
    table = np.c_[X, y]
    np.save(tmp_path / "d.npy", table)
    arr = load_file(tmp_path / "d.npy", target=-1)
    np.testing.assert_array_equal(arr.U, X.T)
    np.testing.assert_array_equal(arr.Y, y[None, :])
    # the suffix is not needed when the format is stated
    (tmp_path / "d.npy").rename(tmp_path / "d.bin")
    np.testing.assert_array_equal(load_file(tmp_path / "d.bin", target=3, file_format="npy").U,
                                  X.T)


def test_task_inference_and_class_values(tmp_path, rng):
    X = rng.normal(size=(9, 2))
    values = np.array([3, 7, 3, 5, 7, 7, 3, 5, 5])
    ds = from_arrays(X, values)
    assert ds.task == "classification" and ds.class_names == ("3", "5", "7")
    np.testing.assert_array_equal(ds.labels, np.searchsorted([3, 5, 7], values))
    np.testing.assert_array_equal(ds.Y, np.eye(3)[ds.labels].T)
    assert ds.info["classes"] == [3, 5, 7]
    assert from_arrays(X, values, task="regression").task == "regression"
    assert from_arrays(X, values + 0.5).task == "regression"          # not integers
    assert from_arrays(X, np.c_[values, values]).task == "regression"  # several targets
    many = np.arange(MAX_INFERRED_CLASSES + 1)
    assert from_arrays(np.ones((many.size, 1)), many).task == "regression"
    assert from_arrays(np.ones((many.size - 1, 1)), many[:-1]).task == "classification"
    # a test set labelled with the training set's classes, even when one class is absent
    test = from_arrays(X[:2], [7, 5], classes=ds.info["classes"])
    np.testing.assert_array_equal(test.labels, [2, 1])
    assert test.q == 3
    with pytest.raises(ValidationError, match=r"class values \[4\].*classes \[3, 5, 7\]"):
        from_arrays(X[:1], [4], classes=[3, 5, 7])
    with pytest.raises(ValidationError, match=r"integer class labels.*0\.5"):
        from_arrays(X[:2], [1, 0.5], task="classification")
    with pytest.raises(ValidationError, match=r"one target column.*got 2"):
        from_arrays(X, np.c_[values, values], task="classification")
    with pytest.raises(ShapeError, match=r"same number of rows.*9 and 2"):
        from_arrays(X, [1, 2])


@pytest.mark.parametrize("text, kwargs, exc, match", [
    ("a,b,y\n1,2,3\n", {"target": "z"}, ValidationError,
     r"no column 'z' \('target'\); its columns are \['a', 'b', 'y'\]"),
    ("a,b,y\n1,2,3\n", {}, ValidationError, r"'target' is required.*\['a', 'b', 'y'\]"),
    ("a,b,y\n1,2,3\n", {"target": 3}, ValidationError, r"'target' column index 3.*3 columns"),
    ("a,b,y\n1,2,3\n", {"target": 1.5}, InputTypeError, r"'target' must be a column name"),
    ("a,b,y\n1,2,3\n", {"target": "y", "inputs": ["a", "y"]}, ValidationError,
     r"share the column\(s\) \['y'\]"),
    ("a,b,y\n1,2,3\n4,five,6\n", {"target": "y"}, ValidationError,
     r"column 'b' holds 'five' on line 3, which is not a number"),
    ("a,b,y\n1,2,3\n4,nan,6\n", {"target": "y"}, ValidationError,
     r"column 'b' holds nan on line 3; every value must be finite"),
    ("a,b,y\n1,2,3\n4,5\n", {"target": "y"}, ValidationError, r"line 3 has 2 fields.*3 col"),
    ("a,a,y\n1,2,3\n", {"target": "y"}, ValidationError, r"duplicate column names \['a'\]"),
    ("a,b,y\n", {"target": "y"}, ValidationError, r"header but no data rows"),
    ("1,2,3\n", {"target": "y"}, ValidationError, r"no column 'y'.*unnamed.*\[0, 3\)"),
    ("a,b,y\n1,2,3\n", {"target": "y", "task": "ordinal"}, ValidationError,
     r"'task' must be one of"),
])
def test_load_file_csv_bad_input(tmp_path, text, kwargs, exc, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(exc, match=match):
        load_file(path, **kwargs)


def test_load_file_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"existing CSV file.*nope\.csv.*not exist"):
        load_file(tmp_path / "nope.csv", target="y")
    with pytest.raises(ValidationError, match=r"'file_format' must be one of.*d\.dat"):
        load_file(tmp_path / "d.dat", target=0)
    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=np.ones(2))
    with pytest.raises(ValidationError, match=r"no array 'labels' \('target'\).*\['X', 'y'\]"):
        load_file(tmp_path / "d.npz", target="labels")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValidationError, match=r"junk\.npz.*cannot be read"):
        load_file(tmp_path / "junk.npz")
    np.save(tmp_path / "flat.npy", np.ones(4))
    with pytest.raises(ShapeError, match=r"one 2-D array.*\(4,\)"):
        load_file(tmp_path / "flat.npy", target=0)
