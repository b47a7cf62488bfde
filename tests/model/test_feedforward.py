import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier, MLPRegressor

from fenchel_idl import from_layers, from_mlp, is_well_posed, well_posedness
from fenchel_idl.errors import ShapeError


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_from_mlp_regressor_matches_sklearn(activation, rng):
    X = rng.standard_normal((150, 5))
    y = np.sin(X).sum(axis=1)
    mlp = MLPRegressor(hidden_layer_sizes=(8, 6, 4), activation=activation, max_iter=300,
                       random_state=0).fit(X, y)
    m = from_mlp(mlp)
    Y, info = m.equilibrium(X.T)
    assert info.method == "exact"
    np.testing.assert_allclose(m.predict(X.T)[0], mlp.predict(X), atol=1e-8)
    rep = well_posedness(m)
    assert rep.well_posed and rep.pf_eigenvalue == 0.0


def test_from_mlp_classifier_logits_give_predict_proba(rng):
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    mlp = MLPClassifier(hidden_layer_sizes=(7, 5), max_iter=300, random_state=0).fit(X, y)
    logits = from_mlp(mlp).predict(X.T)
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    np.testing.assert_allclose(p.T, mlp.predict_proba(X), atol=1e-8)


def test_from_layers_structure_and_errors(rng):
    W = [rng.standard_normal((4, 3)), rng.standard_normal((5, 4)), rng.standard_normal((2, 5))]
    m = from_layers(W, activations=["relu", "tanh"])
    assert np.allclose(np.tril(m.A), 0)  # strictly upper triangular, as in (3.2)
    assert is_well_posed(m)
    u = rng.standard_normal(3)
    ref = W[2] @ np.tanh(W[1] @ np.maximum(W[0] @ u, 0))
    np.testing.assert_allclose(m.predict(u), ref, atol=1e-12)
    with pytest.raises(ShapeError, match="'weights\\[1\\]' must have 4 columns"):
        from_layers([W[0], rng.standard_normal((5, 3)), W[2]])
