"""The torch module of an implicit model: forward values and implicit gradients against
fenchel_idl's own (drivers/gradients.py) and finite differences, an exact round trip, and
training inside a torch network."""

import subprocess
import sys

import numpy as np
import pytest

import fenchel_idl as fi
from fenchel_idl.analysis.torch_interop import _classes, from_torch, to_torch
from fenchel_idl.drivers.gradients import loss_gradients
from fenchel_idl.errors import InputTypeError, ValidationError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _model(activation="relu", n=6, p=3, q=2, seed=0, kappa=0.6):
    """A random well-posed model with a full (non-triangular) A."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    return fi.ImplicitModel(A, rng.normal(size=(n, p)), rng.normal(size=(q, n)),
                            rng.normal(size=(q, p)), activation, rng.normal(size=n),
                            rng.normal(size=q))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_forward_equals_predict(activation):
    model = _model(activation)
    U = np.random.default_rng(1).normal(size=(3, 40))
    layer = to_torch(model)
    out = layer(torch.as_tensor(U.T)).detach().numpy()
    np.testing.assert_allclose(out, model.predict(U, tol=1e-13).T, rtol=0, atol=1e-9)
    X = layer.equilibrium(torch.as_tensor(U.T)).detach().numpy()
    np.testing.assert_allclose(X, model.equilibrium(U, tol=1e-13)[0].T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_equal_fenchel_idl_gradients(activation):
    model = _model(activation, seed=2)
    rng = np.random.default_rng(3)
    U, Y = rng.normal(size=(3, 30)), rng.normal(size=(2, 30))
    layer = to_torch(model)
    Ut = torch.as_tensor(U.T).requires_grad_(True)
    Yhat = layer(Ut)
    loss = 0.5 * ((Yhat - torch.as_tensor(Y.T)) ** 2).sum() / U.shape[1]
    loss.backward()
    ref = loss_gradients(model, U, Y, "squared", tol=1e-13)
    # the reference solves its equilibrium to fenchel_idl's default tolerance 1e-9
    assert float(loss.detach()) == pytest.approx(ref.loss, rel=1e-8)
    for name, ours in (("A", ref.A), ("B", ref.B), ("C", ref.C), ("D", ref.D),
                       ("bias_x", ref.bias_x), ("bias_y", ref.bias_y)):
        np.testing.assert_allclose(getattr(layer, name).grad.numpy(), ours, rtol=1e-7,
                                   atol=1e-9, err_msg=name)
    np.testing.assert_allclose(Ut.grad.numpy().T, ref.U, rtol=1e-7, atol=1e-9)


def test_gradients_match_finite_differences():
    """torch.autograd.gradcheck: central differences of the forward (each a fresh
    equilibrium solve) against the implicit backward, for U and every parameter."""
    model = _model("tanh", n=4, p=2, q=2, seed=4)
    layer = to_torch(model, tol=1e-13)
    U = torch.as_tensor(np.random.default_rng(5).normal(size=(5, 2))).requires_grad_(True)
    params = [layer.A, layer.B, layer.C, layer.D, layer.bias_x, layer.bias_y]
    eq, _ = _classes()

    def g(U, A, B, C, D, bx, by):  # the layer's forward with its parameters as arguments
        X = eq.apply(U, A, B, bx, layer)
        return X @ C.T + U @ D.T + by

    inputs = (U,) + tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(g, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_round_trip_is_exact():
    for model in (_model("relu"), _model("sigmoid", seed=7),
                  fi.from_layers([np.ones((3, 2)), np.ones((4, 3)), np.ones((1, 4))])):
        back = from_torch(to_torch(model))
        for name in ("A", "B", "C", "D", "bias_x", "bias_y"):
            assert np.array_equal(getattr(back, name), getattr(model, name)), name
        assert back.activation == model.activation


def test_trains_inside_a_torch_network_with_a_torch_optimizer():
    rng = np.random.default_rng(6)
    torch.manual_seed(6)  # the Linear layer's initial weights come from torch's own generator
    U = torch.as_tensor(rng.normal(size=(64, 3)))
    target = torch.sin(U.sum(dim=1, keepdim=True))
    # with A's row sums at 0.9 a fixed-point tolerance t leaves an error of about 10 t, so the
    # layer and the reference both solve far below the 1e-9 the comparison asks for
    layer = to_torch(_model("relu", n=8, p=4, q=1, seed=8), tol=1e-12)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4).double(), layer)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((net(U) - target) ** 2).mean()
        loss.backward()
        opt.step()
        layer.project_(0.9)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    trained = from_torch(layer)
    assert np.abs(trained.A).sum(axis=1).max() <= 0.9 + 1e-12
    hidden = net[0](U).detach().numpy()
    np.testing.assert_allclose(trained.predict(hidden.T, tol=1e-13).T, net(U).detach().numpy(),
                               rtol=0, atol=1e-9)


def test_errors():
    with pytest.raises(InputTypeError, match="'model' must be an ImplicitModel"):
        to_torch("relu")
    with pytest.raises(ValidationError, match="componentwise"):
        to_torch(_model("softmax"))
    with pytest.raises(ValidationError, match="dtype"):
        to_torch(_model(), dtype="float16")
    with pytest.raises(InputTypeError, match="made by fenchel_idl.to_torch"):
        from_torch(torch.nn.Linear(2, 2))


def test_float32_module():
    model = _model("relu")
    layer = to_torch(model, dtype="float32")
    U = np.random.default_rng(9).normal(size=(3, 10))
    out = layer(torch.as_tensor(U.T, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), model.predict(U).T, rtol=1e-5, atol=1e-5)


def test_the_package_never_imports_torch():
    code = ("import sys, fenchel_idl, fenchel_idl.analysis, fenchel_idl.apps.cli;"
            "import fenchel_idl.analysis.torch_interop;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
