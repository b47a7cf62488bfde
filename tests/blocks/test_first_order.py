"""The batched solvers' certificate pieces (fenchel_idl.blocks.first_order) against brute force."""

import numpy as np
import pytest

from fenchel_idl.blocks.first_order import _min_norm_l1


def _brute(g, w, radius):
    """min over a fine grid of mu >= 0 of the residual, per row (the definition)."""
    sgn = np.sign(w)
    on = np.isclose(np.abs(w).sum(axis=1), radius, rtol=1e-12, atol=0)
    out = np.sum(g * g, axis=1)
    for i in np.flatnonzero(on):
        supp = sgn[i] != 0

        def f(mu, i=i, supp=supp):
            mu = np.atleast_1d(mu)[:, None]
            r = np.where(supp, g[i] + mu * sgn[i],
                         np.sign(g[i]) * np.maximum(np.abs(g[i]) - mu, 0.0))
            return np.sum(r * r, axis=1)

        mus = np.linspace(0.0, 2 * np.abs(g[i]).max() + 1.0, 20001)
        vals = f(mus)
        at = int(np.argmin(vals))
        lo, hi = mus[max(at - 1, 0)], mus[min(at + 1, mus.size - 1)]
        for _ in range(200):  # ternary search in the best cells (f is convex)
            a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            if f(a)[0] < f(b)[0]:
                hi = b
            else:
                lo = a
        out[i] = min(vals[at], f(0.5 * (lo + hi))[0])
    return out


@pytest.mark.parametrize("k, density", [(6, 0.5), (30, 0.2), (30, 1.0), (1, 1.0)])
def test_min_norm_subgradient_of_the_l1_ball_equals_brute_force(rng, k, density):
    rows = 40
    w = rng.standard_normal((rows, k)) * (rng.uniform(size=(rows, k)) < density)
    w[w.sum(axis=1) == 0, 0] = 1.0  # every row has a support
    radius = np.abs(w).sum(axis=1)
    radius[::3] *= 2.0  # a third of the rows strictly inside their ball
    g = rng.standard_normal((rows, k)) * rng.choice([0.01, 1.0, 100.0], size=(rows, 1))
    got = _min_norm_l1(g, w, radius)
    want = _brute(g, w, radius)
    # the closed form is the minimum found by search, to rounding
    scale = np.abs(g).max(axis=1) ** 2
    assert np.all(np.abs(got - want) <= 1e-9 * np.maximum(want, 0) + 1e-13 * scale)
    inside = np.arange(rows) % 3 == 0
    np.testing.assert_array_equal(got[inside], np.sum(g[inside] ** 2, axis=1))


def test_min_norm_is_zero_at_a_kkt_point(rng):
    """g = -mu s on the support and |g| <= mu off it: 0 is in g + N(w)."""
    w = np.array([[0.5, -0.5, 0.0, 0.0]])
    g = np.array([[-2.0, 2.0, 1.5, -0.3]])
    assert _min_norm_l1(g, w, np.array([1.0]))[0] == pytest.approx(0.0, abs=1e-24)
