"""The refinement benchmark (fenchel_idl.apps.bench_refine) against its numpy re-derivation."""

import sys

import numpy as np
import pytest


def test_refine_equals_a_plain_numpy_loop_and_benchmarks_run():
    """The benchmark's inline numpy re-derivation (same fixed points, same Adam, same
    projection) ends at the same parameters as refine(): an independent reference."""
    from fenchel_idl.apps.bench_refine import (
        bench_projection,
        bench_refine_epoch,
        cosine_experiment,
    )

    out = bench_refine_epoch(repeats=1, epochs=2)
    assert out["max_param_difference"] < 1e-10
    assert out["ratio"] > 0
    proj = bench_projection(n=20, repeats=2)
    assert proj["max_difference"] < 1e-12 and proj["ratio"] > 0
    exp = cosine_experiment(epochs=2)
    assert exp["epochs"] == 2 and exp["norm_A"] <= 0.5
    assert exp["train_rmse"] < exp["initial_train_rmse"]


def test_float32_epoch_matches_the_float32_numpy_loop_and_mnist_section_prints():
    from fenchel_idl.apps.bench_refine import bench_refine_epoch, mnist_section

    out = bench_refine_epoch(repeats=1, epochs=2, dtype="float32")
    # the same float32 arithmetic in both loops: equal up to float32 rounding
    assert out["max_param_difference"] < 1e-4 and out["ratio"] > 0
    assert out["dtype"] == "float32"
    fake = {d: {**out, "dtype": d} for d in ("float64", "float32")}
    text = mnist_section({**fake, "speedup": 1.0})
    assert "| float32 |" in text and f"{out['ratio']:.2f}" in text


def _small_mnist(monkeypatch):
    """datasets.load_mnist replaced by 300 random 'images' of 30 pixels, 10 classes."""
    from fenchel_idl.problem import datasets

    def loader(split="train", n=None, seed=0):
        rng = np.random.default_rng(seed)
        m = 300 if n is None else n
        labels = rng.integers(0, 10, m)
        return datasets.Dataset(U=rng.uniform(0, 1, (30, m)), Y=datasets.one_hot(labels, 10),
                                labels=labels, name=f"fake-{split}")

    monkeypatch.setattr(datasets, "load_mnist", loader)


def test_parity_bench_without_torchidl_times_refine_against_the_numpy_loop(monkeypatch, capsys):
    from fenchel_idl.apps.bench_refine import bench_parity, main, parity_section

    _small_mnist(monkeypatch)
    monkeypatch.setitem(sys.modules, "torchidl", None)  # not importable
    out = bench_parity(epochs=2, n=8, batch_size=16)
    assert out["torchidl_epoch_seconds"] is None and out["ratio_torchidl"] is None
    assert out["refine_epoch_seconds"] > 0 and out["numpy_epoch_seconds"] > 0
    assert out["ratio_numpy"] == pytest.approx(
        out["refine_epoch_seconds"] / out["numpy_epoch_seconds"])
    assert out["m"] == 300 and out["epochs"] == 2
    assert out["final_objective"] < out["initial_objective"]
    text = parity_section(out)
    assert "not importable" in text and f"{out['ratio_numpy']:.2f}" in text
    assert main(["--parity", "--mnist", "120", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "m = 120" in printed and "plain float32 numpy loop" in printed


@pytest.mark.torch
def test_parity_bench_times_a_torchidl_module_found_on_the_given_path(monkeypatch, tmp_path):
    """A stand-in 'torchidl' package on the path (same constructor and call as torchidl's
    ImplicitModel) is trained by the benchmark's torch loop."""
    pytest.importorskip("torch")
    from fenchel_idl.apps.bench_refine import bench_parity

    _small_mnist(monkeypatch)
    pkg = tmp_path / "torchidl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "class ImplicitModel(torch.nn.Module):\n"
        "    def __init__(self, p, q, n, kappa=0.99, mitr=300, grad_mitr=300, tol=3e-6,\n"
        "                 grad_tol=3e-6):\n"
        "        super().__init__()\n"
        "        self.calls = 0\n"
        "        self.inner = torch.nn.Sequential(torch.nn.Linear(p, n), torch.nn.ReLU(),\n"
        "                                         torch.nn.Linear(n, q))\n"
        "    def forward(self, U):\n"
        "        return self.inner(U)\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        out = bench_parity(epochs=1, n=8, batch_size=16, torchidl=tmp_path)
    finally:
        sys.modules.pop("torchidl", None)
    assert out["torchidl_epoch_seconds"] > 0
    assert out["ratio_torchidl"] == pytest.approx(
        out["refine_epoch_seconds"] / out["torchidl_epoch_seconds"])
