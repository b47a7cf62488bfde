"""The Table 1 command (fenchel_idl.apps.table1) end to end."""

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fenchel_idl.apps.table1 import main


def test_command_line_with_small_stand_in_data(tmp_path, monkeypatch):
    """The CLI end to end, with the 8x8 digits standing in for both image sets."""
    from fenchel_idl.problem import datasets

    X, y = load_digits(return_X_y=True)

    def loader(split="train", n=None, seed=0):
        idx = np.arange(0, 1000) if split == "train" else np.arange(1000, 1100)
        idx = idx[:n] if n is not None else idx
        return datasets.Dataset(U=X[idx].T / 16.0, Y=datasets.one_hot(y[idx], 10),
                                labels=y[idx], name=f"digits-{split}", image_shape=(8, 8))

    monkeypatch.setattr(datasets, "load_mnist", loader)
    monkeypatch.setattr(datasets, "load_fashion_mnist", loader)
    assert main(["--out", str(tmp_path), "--quick", "--n-test", "60"]) == 0
    text = (tmp_path / "attack_table.md").read_text()
    assert "| 0.1% (k = 1, 1) |" in text and "## LP attacks on MNIST" in text
    lp_rows = [ln for ln in text.splitlines() if "dense |" in ln or "sparse |" in ln]
    assert len(lp_rows) == 4  # one image per set in --quick mode, dense and sparse
    for row in lp_rows:  # 7 cells: bars inside a cell are escaped
        assert row.replace("\\|", "").count("|") == 8
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(f"{d}_{w}_attack.png" for d in ("mnist", "fashion_mnist")
                          for w in ("sensitivity", "lp_dense", "lp_sparse"))


@pytest.mark.slow
def test_command_line_quick_on_real_data(tmp_path):
    from fenchel_idl.problem import datasets

    try:
        datasets.load_mnist("test", n=10)
        datasets.load_fashion_mnist("test", n=10)
    except FileNotFoundError:
        pytest.skip("MNIST / Fashion-MNIST files not found (set FENCHEL_IDL_DATA)")
    assert main(["--out", str(tmp_path), "--quick"]) == 0
    assert (tmp_path / "attack_table.md").is_file()
    assert len(list(Path(tmp_path).glob("*.png"))) == 6
    assert os.path.getsize(tmp_path / "mnist_sensitivity_attack.png") > 1000
