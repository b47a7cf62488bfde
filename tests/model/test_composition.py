import numpy as np
import pytest

from fenchel_idl import cascade, concat, feedback, is_well_posed, parallel, well_posedness
from fenchel_idl.errors import ShapeError
from tests.helpers import random_model


def test_cascade_predicts_the_two_models_in_turn(rng):
    m1 = random_model(rng, n=6, p=4, q=3, activation="relu")
    m2 = random_model(rng, n=5, p=3, q=2, activation="tanh")
    c = cascade(m1, m2)
    U = rng.standard_normal((4, 30))
    np.testing.assert_allclose(c.predict(U), m2.predict(m1.predict(U)), atol=1e-8)
    assert is_well_posed(c)


def test_parallel_and_concat(rng):
    m1 = random_model(rng, n=6, p=4, q=2)
    m2 = random_model(rng, n=3, p=5, q=2, activation="sigmoid")
    U1, U2 = rng.standard_normal((4, 10)), rng.standard_normal((5, 10))
    par = parallel(m1, m2)
    np.testing.assert_allclose(par.predict(np.vstack([U1, U2])),
                               m1.predict(U1) + m2.predict(U2), atol=1e-8)
    m3 = random_model(rng, n=4, p=4, q=1)
    cat = concat(m1, m3)
    np.testing.assert_allclose(cat.predict(U1), np.vstack([m1.predict(U1), m3.predict(U1)]),
                               atol=1e-8)
    with pytest.raises(ShapeError, match="equal input sizes"):
        concat(m1, m2)


def test_feedback_solves_the_loop(rng):
    m1 = random_model(rng, n=5, p=2, q=3, kappa=0.3)
    m2 = random_model(rng, n=4, p=3, q=2, kappa=0.3)
    m1 = m1.replace(B=0.2 * m1.B, C=0.2 * m1.C, D=0.1 * m1.D)
    m2 = m2.replace(B=0.2 * m2.B, C=0.2 * m2.C, D=0.1 * m2.D)
    fb = feedback(m1, m2)
    assert well_posedness(fb).well_posed
    u = rng.standard_normal((2, 6))
    y = fb.predict(u, tol=1e-13)
    # independent check: iterate the loop between the two models until it settles
    y1 = np.zeros((3, 6))
    for _ in range(500):
        y2 = m2.predict(y1, tol=1e-13)
        y1 = m1.predict(u + y2, tol=1e-13)
    np.testing.assert_allclose(y, y1, atol=1e-8)
