"""The batched solvers' certificate pieces (fenchel_idl.blocks.first_order) against brute force."""

import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.blocks.first_order import _min_norm_l1
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.problem.training_problem import TrainingProblem


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


def test_cross_entropy_readout_by_fista_is_the_clarabel_optimum(rng, monkeypatch):
    """The first-order cross-entropy readout of solve_bcd (no penalties) against the
    exponential-cone program written out here and solved by Clarabel, at the final (A, B).
    The problem (270 cones of 9 entries) is below the size where solve_bcd itself picks
    FISTA, so the test lowers that size to 0; at the default its readouts are Clarabel's."""
    import cvxpy as cp

    import fenchel_idl.blocks.first_order as fb

    U = rng.standard_normal((3, 90))
    labels = (U[0] * U[1] > 0).astype(int) + (U[2] > 0.8)
    prob = TrainingProblem(U, labels, n=5, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 3.0, "D": 2.0})
    assert fb.ce_program_size(prob) <= fb._CE_FISTA_MIN_SIZE
    small = solve_bcd(prob, max_sweeps=1, gap_tol=1e-7)
    assert {r.solver for r in small.history if r.block == "LS"} == {"CLARABEL"}
    monkeypatch.setattr(fb, "_CE_FISTA_MIN_SIZE", 0)
    res = solve_bcd(prob, max_sweeps=2, gap_tol=1e-7)
    cert = res.certificate
    assert cert.readout_certified and cert.blocks_certified
    assert {r.solver for r in res.history if r.block == "LS"} == {"FISTA"}
    A, B, b, C, D, d = prob.from_user_model(res.model)
    X = ImplicitModel(A, B, C, D, prob.activation, b, d).equilibrium(
        prob.U, tol=1e-12, max_iter=50000)[0]
    n, p, q, m = prob.n, prob.p, prob.q, prob.m
    Kv = cp.Variable((q, n + p + 1))
    Z = Kv @ np.vstack([X, prob.U, np.ones((1, m))])
    f = (cp.sum(cp.log_sum_exp(Z, axis=0)) - cp.sum(cp.multiply(prob.Y, Z))) / m
    ref = cp.Problem(cp.Minimize(f), [cp.sum(cp.abs(Kv[:, :n]), axis=1) <= 3.0,
                                      cp.sum(cp.abs(Kv[:, n:n + p]), axis=1) <= 2.0])
    ref.solve(solver="CLARABEL")
    assert ref.status == "optimal"
    assert ref.value - 1e-7 <= cert.true_loss <= ref.value + 2e-7


def test_uncertified_first_order_readout_falls_back_only_where_the_cones_fit(rng,
                                                                            monkeypatch):
    """fast_blocks.ce_readout, the one readout rule of solve_bcd and solve_bcd_minibatch: an
    uncertified FISTA readout (a 3-iteration budget) is reported, then replaced by the CVXPY
    block while the program has at most _CE_CVXPY_MAX_CONES cones; past that it is kept and
    solve_bcd's certificate says the readout is not certified, with FISTA's gap."""
    import fenchel_idl.blocks.first_order as fb

    U = rng.standard_normal((3, 60))
    labels = (U[0] > 0).astype(int) + (U[1] > 0.5)
    prob = TrainingProblem(U, labels, n=4, loss="cross_entropy", kappa=0.5, lam=5.0,
                           bounds={"C": 3.0, "D": 2.0})
    X = np.abs(rng.standard_normal((4, 60)))
    K0 = np.zeros((prob.q, prob.n + prob.p + 1))
    monkeypatch.setattr(fb, "_CE_FISTA_MIN_SIZE", 0)
    reported, cvxpy_calls = [], []

    def cvxpy_block():
        cvxpy_calls.append(1)
        return "C", "D", "d", "clarabel record"

    out = fb.ce_readout(prob, X, K0, cvxpy_block, reported.append, 1e-9, 3)
    assert out == ("C", "D", "d", "clarabel record") and len(cvxpy_calls) == 1
    assert len(reported) == 1 and not reported[0].certified and reported[0].solver == "FISTA"

    monkeypatch.setattr(fb, "_CE_CVXPY_MAX_CONES", prob.q * prob.m - 1)
    C, D, d, info = fb.ce_readout(prob, X, K0, cvxpy_block, reported.append, 1e-9, 3)
    assert len(cvxpy_calls) == 1 and len(reported) == 2
    assert info is reported[1] and not info.certified and info.gap > 1e-9
    assert np.abs(C).sum(axis=1).max() <= 3.0 + 1e-9
    assert np.abs(D).sum(axis=1).max() <= 2.0 + 1e-9
    assert C.shape == (prob.q, 4) and D.shape == (prob.q, 3) and d.shape == (prob.q,)

    monkeypatch.setattr(fb, "_CE_READOUT_ITER", 3)
    res = solve_bcd(prob, max_sweeps=1)
    assert not res.certificate.readout_certified
    assert any(e["solver"] == "FISTA" and not e["certified"] for e in res.certificate.solve_events)
