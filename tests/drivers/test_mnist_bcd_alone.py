"""A reduced MNIST job trained by BCD alone (mini-batch BCD, no gradient stage).

Slow (minutes): ``python -m pytest -m slow tests/drivers/test_mnist_bcd_alone.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fenchel_idl.apps.run import run_problem
from fenchel_idl.drivers.problem_file import load_data, load_problem

# 10,000 training images, the official 10,000 test images, n = 64, two epochs of the
# stochastic mini-batch steps of problems/mnist_bcd.toml (its lam, balls, batch size and line
# search), with a smaller readout budget and without [refine]
_JOB = """
name = "mnist_bcd_alone_reduced"
seed = 0
[data]
source = "mnist"
n = 10000
test_split = 10000
[model]
n = 64
activation = "relu"
kappa = 0.5
bias = true
[training]
loss = "cross_entropy"
lam = 0.1
standardize = false
bounds = { B = 40.0, C = 20.0, D = 20.0 }
[minibatch]
batch_size = 2000
epochs = 2
readout_iter = 2000
line_search = true
steps = "stochastic"
[solver]
on_failure = "warn"
"""

#: Test accuracy measured on this job (seed 0, 87 s on a loaded 2-core machine): 0.9147
#: (0.9149 with the Euclidean proximal term of the earlier W step; 0.9120 after one
#: epoch). The floor leaves room for BLAS rounding.
_FLOOR = 0.905
#: BCD's own gain in training accuracy over its random-feature start (measured: 0.9233 to
#: 0.9630, +0.040; +0.022 after one epoch): BCD trains, not only the readout, and a lost
#: epoch fails here.
_TRAIN_GAIN = 0.03


def _numpy_predictions(A, B, b, C, D, d, U):
    """Classes of y = C x + D u + d at x = max(A x + B u + b, 0), by Picard iteration in
    plain numpy (a contraction: ||A||_inf <= kappa < 1)."""
    X = np.zeros((A.shape[0], U.shape[1]))
    Z0 = B @ U + b[:, None]
    for _ in range(10000):
        Xn = np.maximum(A @ X + Z0, 0.0)
        if np.max(np.abs(Xn - X)) <= 1e-12 * max(1.0, np.max(np.abs(Xn))):
            X = Xn
            break
        X = Xn
    else:
        raise AssertionError("the Picard iteration did not converge")
    return np.argmax(C @ X + D @ U + d[:, None], axis=0)


@pytest.mark.slow
def test_bcd_alone_on_reduced_mnist_keeps_its_measured_accuracy(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(_JOB)
    result, summary = run_problem(path, None, progress=False)
    spec = load_problem(path)
    assert spec.refine is None  # BCD alone: no gradient stage
    _, test = load_data(spec)
    model = result.model
    # every block solve certified, and the readout of the returned model globally optimal
    assert result.history and all(r.certified for r in result.history)
    assert result.certificate.readout_certified
    assert np.abs(model.A).sum(axis=1).max() <= 0.5 * (1 + 1e-9)
    pred = _numpy_predictions(model.A, model.B, model.bias_x, model.C, model.D, model.bias_y,
                              test.U)
    np.testing.assert_array_equal(pred, np.argmax(model.predict(test.U), axis=0))
    accuracy = float(np.mean(pred == test.labels))
    assert accuracy == pytest.approx(summary["test"]["accuracy"], abs=1e-12)
    assert accuracy >= _FLOOR, accuracy
    gain = summary["train"]["accuracy"] - summary["start_train"]["accuracy"]
    assert gain >= _TRAIN_GAIN, gain

