"""The batched solvers' certificate pieces (fenchel_idl.blocks.first_order) against brute force."""

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import ImplicitModel
from fenchel_idl.blocks.first_order import _min_norm_l1
from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.problem import penalties as pen_mod
from fenchel_idl.problem.training_problem import Bounds, TrainingProblem


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


# ---- the first-order (A, B) block with a penalty, against the CVXPY block ----------------
def _penalized_setup(pen, seed=0, n=6, **kw):
    from fenchel_idl.blocks.first_order import ab_prox_weight
    from fenchel_idl.model.activations import state_lipschitz
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((4, 60))
    pb = TrainingProblem(U, np.sin(U[:1] + U[1:2]), n=n, kappa=0.5, penalties=[pen], **kw)
    X = np.maximum(rng.standard_normal((n, pb.m)), 0.0)
    lam = rng.uniform(3.0, 150.0, n)  # a spread of lam, as after a few stages
    C, D = rng.standard_normal((1, n)), rng.standard_normal((1, pb.p)) * np.r_[0, 1, 1, 1]
    W0 = rng.standard_normal((n, n + pb.p + 1)) * 0.3
    V = np.vstack([X, pb.U, np.ones((1, pb.m))])
    rho = ab_prox_weight(np.linalg.norm(V, 2) ** 2 / pb.m)
    return pb, X, lam, C, D, W0, V, rho, state_lipschitz(pb.activation, n)


@pytest.mark.parametrize("pen", [
    pytest.param(p, id=p.name + "-" + str(p.to_dict().get("of", p.to_dict().get("on", ""))))
    for p in (pen_mod.L1(0.05, on="AB"), pen_mod.RowNorms(0.05, of="AB"),
              pen_mod.ColumnNorms(0.05), pen_mod.ColumnNorms(0.05, of="AC"),
              pen_mod.FeatureSelection(0.05), pen_mod.Nuclear(0.1))])
@pytest.mark.parametrize("seed", [0, 1])
def test_penalized_ab_block_reaches_the_clarabel_objective(pen, seed):
    """The named penalty's fast (A, B) block and the generic CVXPY block (Clarabel) of the
    same penalized problem reach one objective: FISTA's is certified, never above
    Clarabel's by more than its own certified gap (plus Clarabel's tolerance), and the
    difference is within the block tolerance."""
    _check_penalized_ab_against_cvxpy(pen, seed)


@pytest.mark.parametrize("ball", [None, 0.05])
def test_feature_selection_ab_block_with_and_without_b_balls(ball):
    """Feature selection reads B alone in the (A, B) block, whose prox then runs on B only:
    the penalty's prox exactly without B's balls, Dykstra with them. With balls of 0.05 on
    B's rows (active: without them the solution's rows reach 0.16) and without any, the block
    reaches the CVXPY block's objective."""
    pen = pen_mod.FeatureSelection(0.05)
    B = _check_penalized_ab_against_cvxpy(pen, 2, bounds=Bounds(B=ball))
    if ball is not None:
        assert np.isclose(np.abs(B).sum(axis=1).max(), ball, rtol=1e-9)


def _check_penalized_ab_against_cvxpy(pen, seed, **kw):
    from fenchel_idl.blocks.cvxpy_blocks import Blocks
    from fenchel_idl.blocks.first_order import fast_ab_penalized
    from fenchel_idl.blocks.solvers import solve_certified
    pb, X, lam, C, D, W0, V, rho, gammas = _penalized_setup(pen, seed, **kw)
    tol = 1e-7
    A, B, b, info = fast_ab_penalized(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0, tol=tol,
                                      rho=rho)
    cone = "sdp" if pen.name == "nuclear" else "socp"
    # the reference is the chain's first certified solve (Clarabel can stop short of its
    # tolerance on this block, "almost solved", and ECOS then certifies it)
    A2, B2, b2, ref = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, cone, None, "fallback", 1e-7)[-1],
        W0, rho)
    assert ref.certified

    # proximal weights in training units: rho max(lam) on every row, as with any penalty
    # on A or B (without one, rho lam_i)
    c = rho * np.full(pb.n, lam.max())

    def F(A, B, b):  # the lam-weighted block objective, in numpy
        W = np.hstack([A, B, b[:, None]])
        Zp = np.maximum(W @ V, 0.0)
        rows = (0.5 * (Zp ** 2).sum(1) - (W * (X @ V.T)).sum(1)) / pb.m
        return float(lam @ rows + 0.5 * c @ ((W - W0) ** 2).sum(1)) \
            + pen.value({"A": A, "B": B, "C": C, "D": D})

    assert info.certified
    for M, r in ((A, pb.kappa / gammas), (B, pb.bounds.B)):
        if r is not None:
            assert np.all(np.abs(M).sum(axis=1) <= r * (1 + 1e-12))
    f1, f2 = F(A, B, b), F(A2, B2, b2)
    scale = max(1.0, abs(f2))
    assert f1 - f2 <= 1e-7 * scale
    assert abs(f1 - f2) <= 1e-6 * scale
    return B


@pytest.mark.parametrize("weight", [10.0, 20.0])
def test_penalized_ab_block_has_exact_zero_groups(weight):
    """A column-norm penalty zeroes whole columns of A exactly (no threshold): the same
    columns that the Clarabel block brings below 1e-6."""
    from fenchel_idl.blocks.cvxpy_blocks import Blocks
    from fenchel_idl.blocks.first_order import fast_ab_penalized
    from fenchel_idl.blocks.solvers import solve_certified
    pen = pen_mod.ColumnNorms(weight)
    pb, X, lam, C, D, W0, _, rho, gammas = _penalized_setup(pen, 3)
    A, *_, info = fast_ab_penalized(pb, X, lam, gammas, pen, {"C": C, "D": D}, W0, rho=rho)
    A2, *_ = Blocks(pb).solve_ab(
        X, lam, C, D, lambda pr, nm: solve_certified(pr, nm, "socp", None, "raise", 1e-8)[-1],
        W0, rho)
    assert info.certified
    zero = np.all(A == 0.0, axis=0)
    assert 0 < zero.sum() < A.shape[1]
    np.testing.assert_array_equal(zero, np.linalg.norm(A2, axis=0) < 1e-6)


def _tiny_problem(**kw):
    rng = np.random.default_rng(5)
    U = rng.standard_normal((3, 40))
    return TrainingProblem(U, np.sin(U[:1]), n=4, **kw)


def test_routing_keeps_named_penalties_fast_and_says_which_block_is_generic():
    import warnings

    from fenchel_idl.blocks.block_solvers import (
        CvxpyAB,
        FirstOrderAB,
        FirstOrderX,
        LipschitzAB,
        SolvePolicy,
        make_block_solvers,
    )
    from fenchel_idl.errors import SolverWarning
    policy = SolvePolicy("socp")
    for pen in (pen_mod.L1(1e-3), pen_mod.Nuclear(1e-3), pen_mod.FeatureSelection(1e-3)):
        s = make_block_solvers(_tiny_problem(penalties=[pen]), policy)
        assert isinstance(s.X.primary, FirstOrderX) and isinstance(s.AB.primary, FirstOrderAB)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = make_block_solvers(_tiny_problem(penalties=[pen_mod.LipschitzBound(1e-3)]), policy)
    assert isinstance(s.X.primary, FirstOrderX) and isinstance(s.AB.primary, LipschitzAB)
    assert isinstance(s.AB.backup, CvxpyAB)
    msgs = [str(x.message) for x in w if issubclass(x.category, SolverWarning)]
    assert len(msgs) == 1 and "(C, D) block for 'lipschitz'" in msgs[0] and "(A, B)" not in msgs[0]
    with warnings.catch_warnings(record=True) as w:  # a constraint on C: only (C, D) generic
        warnings.simplefilter("always")
        s = make_block_solvers(_tiny_problem(constraints=[lambda A, B, C, D: [C >= 0]]), policy)
    assert isinstance(s.AB.primary, FirstOrderAB)
    msgs = [str(x.message) for x in w if issubclass(x.category, SolverWarning)]
    assert len(msgs) == 1 and "(C, D) block" in msgs[0] and "(A, B)" not in msgs[0]


def test_every_spelling_of_a_constraint_on_c_gives_one_answer():
    """A callable constraint, the same callable as Custom(reads=("C",)) and as a penalties
    entry give the same BCD objective (one routing: the (A, B) block does not read C)."""
    def fn(A, B, C, D):
        return [C >= 0]

    runs = [{"constraints": [fn]}, {"penalties": [pen_mod.Custom(fn=fn, reads=("C",))]},
            {"penalties": [fn]}]
    objs = []
    for kw in runs:
        res = solve_bcd(_tiny_problem(**kw), max_sweeps=2)
        objs.append(res.history[-1].objective)
        assert np.all(res.model.C >= -1e-7)
    assert max(objs) - min(objs) <= 1e-6 * max(1.0, abs(objs[0]))


def test_the_backtracking_readout_never_claims_a_gap_below_its_true_suboptimality():
    """On a problem with confident predictions (the case the backtracking is for), every
    stopping point's reported gap bounds its distance to the CVXPY optimum, and each
    iterate's objective comes from its own logits (no drift from the extrapolated ones)."""
    from scipy.special import logsumexp

    from fenchel_idl import TrainingProblem
    from fenchel_idl.blocks.first_order import fast_ce_readout, unpack_cd

    rng = np.random.default_rng(7)
    U = rng.standard_normal((4, 300))
    labels = np.argmax(np.vstack([U[0], U[1], -U[0] - U[1]]), axis=0)
    prob = TrainingProblem(U, labels, n=6, loss="cross_entropy", bounds={"C": 8.0, "D": 8.0})
    X = np.abs(rng.standard_normal((prob.n, prob.m)))
    K = cp.Variable((prob.q, prob.n + prob.p + 1))
    V = np.vstack([X, prob.U, np.ones((1, prob.m))])
    Z = K @ V
    obj = (cp.sum(cp.log_sum_exp(Z, axis=0)) - cp.sum(cp.multiply(prob.Y, Z))) / prob.m
    cons = [cp.sum(cp.abs(K[:, :prob.n]), axis=1) <= 8.0,
            cp.sum(cp.abs(K[:, prob.n:prob.n + prob.p]), axis=1) <= 8.0]
    opt = cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
    for iters in (5, 20, 80, 5000):
        Kf, info = fast_ce_readout(prob, X, tol=1e-9, max_iter=iters)
        C, D, d = unpack_cd(prob, Kf)
        Zf = C @ X + D @ prob.U + d[:, None]
        value = float(np.mean(logsumexp(Zf, axis=0) - np.sum(prob.Y * Zf, axis=0)))
        assert value == pytest.approx(info.objective, rel=1e-10)
        assert value - opt <= info.gap * max(1.0, abs(value)) + 1e-8
    assert info.certified
