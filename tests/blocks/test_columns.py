"""The (B, D) column block (fenchel_idl.blocks.columns) against Clarabel through CVXPY, and
its exact zero columns against the zero-optimality condition of the group norm."""

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl.blocks.block_solvers import SolvePolicy, State, make_block_solvers
from fenchel_idl.blocks.columns import PolishedReadout, fast_bd_block
from fenchel_idl.blocks.routing import column_penalty, columns_apply
from fenchel_idl.blocks.first_order import ab_prox_weight
from fenchel_idl.problem.training_problem import TrainingProblem


def _setup(seed, w, bounds=None, loss="squared", noise_inputs=0):
    rng = np.random.default_rng(seed)
    p, m, n, q = 7, 90, 5, 2
    U = rng.standard_normal((p, m))
    if loss == "squared":
        Y = np.vstack([U[0] - U[1], np.maximum(U[2], 0.0)]) + 0.1 * rng.standard_normal((q, m))
    else:
        Y = (U[0] + 0.3 * rng.standard_normal(m) > 0).astype(int)
    pb = TrainingProblem(U, Y, n, loss=loss, penalties=[{"name": "feature_selection",
                                                         "weight": w}],
                         bounds=bounds or {"B": None, "C": 100.0, "D": None})
    scale = np.ones(p)
    scale[p - noise_inputs:] = 0.05  # small starting columns on the last inputs
    st = {"A": 0.1 * rng.standard_normal((n, n)) / n, "B": rng.standard_normal((n, p)) * scale,
          "b": 0.3 * rng.standard_normal(n), "C": rng.standard_normal((pb.q, n)),
          "D": 0.5 * rng.standard_normal((pb.q, p)) * scale, "d": np.zeros(pb.q)}
    st["X"] = np.maximum(st["A"] @ rng.random((n, m)) + st["B"] @ pb.U + st["b"][:, None],
                         0.0) + 0.05 * rng.random((n, m))
    st["lam"] = rng.uniform(1.0, 20.0, n)
    return pb, st


def _cvxpy_block(pb, st, states=True):
    """The block by Clarabel: same objective, proximal term and balls, written out anew."""
    m, n, p, q = pb.m, pb.n, pb.p, pb.q
    ones = np.ones((1, m))
    V = np.vstack([pb.U, ones])
    rho = ab_prox_weight(np.linalg.norm(V, 2) ** 2 / m)
    w = column_penalty(pb).weight
    lam = st["lam"]
    Dv, dv = cp.Variable((q, p)), cp.Variable(q)
    Yh = st["C"] @ st["X"] + Dv @ pb.U + cp.reshape(dv, (q, 1), order="F") @ ones
    if pb.loss.name == "squared":
        obj = 0.5 * cp.sum_squares(Yh - pb.Y) / m
    else:
        obj = (cp.sum(cp.log_sum_exp(Yh, axis=0)) - cp.sum(cp.multiply(pb.Y, Yh))) / m
    obj += 0.5 * rho * (cp.sum_squares(Dv - st["D"]) + cp.sum_squares(dv - st["d"]))
    cons = []
    if pb.bounds.D is not None:
        cons.append(cp.sum(cp.abs(Dv), axis=1) <= pb.bounds.D)
    if states:
        Bv, bv = cp.Variable((n, p)), cp.Variable(n)
        Z = st["A"] @ st["X"] + Bv @ pb.U + cp.reshape(bv, (n, 1), order="F") @ ones
        X = st["X"]
        obj += sum(lam[i] * (0.5 * cp.sum_squares(cp.pos(Z[i])) - X[i] @ Z[i])
                   for i in range(n)) / m
        obj += 0.5 * rho * (cp.sum(cp.multiply(lam[:, None], cp.square(Bv - st["B"])))
                            + lam @ cp.square(bv - st["b"]))
        obj += w * cp.sum(cp.norm(cp.vstack([Bv, Dv]), 2, axis=0))
        if pb.bounds.B is not None:
            cons += [cp.sum(cp.abs(Bv), axis=1) <= pb.bounds.B, cp.abs(bv) <= pb.bounds.B]
    else:
        obj += w * cp.sum(cp.norm(cp.vstack([st["B"], Dv]), 2, axis=0))
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    out = {"D": Dv.value, "obj": prob.value}
    if states:
        out["B"] = Bv.value
    return out


def _block_value(pb, st, B, b, D, d, states=True):
    """The block objective at a point, by numpy (the terms the block keeps)."""
    m = pb.m
    V = np.vstack([pb.U, np.ones((1, m))])
    rho = ab_prox_weight(np.linalg.norm(V, 2) ** 2 / m)
    lam = st["lam"]
    val = pb.loss.value(pb.Y, st["C"] @ st["X"] + D @ pb.U + d[:, None])
    val += 0.5 * rho * (np.sum((D - st["D"]) ** 2) + np.sum((d - st["d"]) ** 2))
    if states:
        Z = st["A"] @ st["X"] + B @ pb.U + b[:, None]
        val += float(lam @ (0.5 * np.sum(np.maximum(Z, 0) ** 2, axis=1)
                            - np.sum(st["X"] * Z, axis=1))) / m
        val += 0.5 * rho * (float(lam @ np.sum((B - st["B"]) ** 2, axis=1))
                            + float(lam @ (b - st["b"]) ** 2))
    return val + column_penalty(pb).weight * np.linalg.norm(np.vstack([B, D]), axis=0).sum()


def _solve(pb, st, states=True, tol=1e-9):
    return fast_bd_block(pb, st["A"], st["B"], st["b"], st["C"], st["D"], st["d"], st["X"],
                         st["lam"], column_penalty(pb), states=states, tol=tol)


@pytest.mark.parametrize("seed, w, bounds, loss", [
    (0, 0.02, None, "squared"),
    (1, 0.2, None, "squared"),
    (2, 0.05, {"B": 1.0, "C": 100.0, "D": 0.8}, "squared"),
    (3, 0.05, None, "cross_entropy"),
])
def test_block_matches_clarabel_within_its_certified_gap(seed, w, bounds, loss):
    pb, st = _setup(seed, w, bounds, loss)
    B, b, D, d, info = _solve(pb, st)
    ref = _cvxpy_block(pb, st)
    ours = _block_value(pb, st, B, b, D, d)
    assert info.certified
    # the block's own objective is the numpy value at its point, and the certified gap is
    # a true upper bound on its distance to Clarabel's optimum (Clarabel's own error 1e-9)
    assert info.objective == pytest.approx(ours, rel=1e-10, abs=1e-10)
    assert ours - ref["obj"] <= info.abs_gap + 1e-8
    assert ours >= ref["obj"] - 1e-8
    if bounds is not None:  # the point is feasible
        assert np.all(np.abs(B).sum(axis=1) <= bounds["B"] + 1e-12)
        assert np.all(np.abs(D).sum(axis=1) <= bounds["D"] + 1e-12)
        assert np.all(np.abs(b) <= bounds["B"] + 1e-12)
    np.testing.assert_allclose(B, ref["B"], atol=2e-3)


def _zero_condition(pb, st, B, b, D, d):
    """Norm of the smooth part's gradient w.r.t. each column of (B; D), at that column set
    to zero and the others at the given point (by numpy, no ball active)."""
    m = pb.m
    V = np.vstack([pb.U, np.ones((1, m))])
    rho = ab_prox_weight(np.linalg.norm(V, 2) ** 2 / m)
    lam = st["lam"]
    out = np.empty(pb.p)
    for j in range(pb.p):
        B0, D0 = B.copy(), D.copy()
        B0[:, j], D0[:, j] = 0.0, 0.0
        Z = st["A"] @ st["X"] + B0 @ pb.U + b[:, None]
        gB = lam[:, None] * ((np.maximum(Z, 0) - st["X"]) @ pb.U[j][:, None]) / m
        gB += rho * lam[:, None] * (B0[:, [j]] - st["B"][:, [j]])
        Yh = st["C"] @ st["X"] + D0 @ pb.U + d[:, None]
        gD = pb.loss.grad(pb.Y, Yh) @ pb.U[j][:, None] + rho * (D0[:, [j]] - st["D"][:, [j]])
        out[j] = np.linalg.norm(np.vstack([gB, gD]))
    return out


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_exact_zero_columns_where_zero_is_optimal(seed):
    pb, st = _setup(seed, 0.0, noise_inputs=3)
    # a weight between the columns' zero-optimality thresholds, so that some columns are
    # zero and some not; the thresholds at the unpenalized-ish solution guide the choice
    B, b, D, d, _ = fast_bd_block(pb, st["A"], st["B"], st["b"], st["C"], st["D"], st["d"],
                                  st["X"], st["lam"], column_penalty(pb).__class__(1e-4),
                                  tol=1e-9)
    thr = np.sort(_zero_condition(pb, st, B, b, D, d))
    w = float(np.sqrt(thr[2] * thr[3]))
    pb, st = _setup(seed, w, noise_inputs=3)
    B, b, D, d, info = _solve(pb, st)
    assert info.certified
    cols = np.linalg.norm(np.vstack([B, D]), axis=0)
    ref = _cvxpy_block(pb, st)
    ref_cols = np.linalg.norm(np.vstack([ref["B"], ref["D"]]), axis=0)
    g = _zero_condition(pb, st, B, b, D, d)
    clear_zero = g < 0.98 * w
    clear_nonzero = g > 1.02 * w
    assert clear_zero.any() and clear_nonzero.any()
    assert np.all(cols[clear_zero] == 0.0)          # exact zeros, no tolerance
    assert np.all(cols[clear_nonzero] > 0.0)
    # Clarabel agrees (its zeros are only near zero)
    assert np.all(ref_cols[clear_zero] < 1e-6)
    assert np.all(ref_cols[clear_nonzero] > 1e-6)


def test_readout_polish_zeroes_d_where_b_is_zero_and_keeps_the_certificate(rng):
    pb, st = _setup(7, 0.08, noise_inputs=2)
    st["B"][:, -2:] = 0.0  # two inputs the states do not read
    st["D"][:, -2:] = 1e-9  # an interior-point readout's near-zeros
    _, _, D, d, info = _solve(pb, st, states=False)
    ref = _cvxpy_block(pb, st, states=False)
    ours = _block_value(pb, st, st["B"], st["b"], D, d, states=False)
    assert info.certified
    assert ref["obj"] - 1e-8 <= ours <= ref["obj"] + info.abs_gap + 1e-8
    Bs = st["B"]
    zero_d = np.flatnonzero(~np.any(D != 0.0, axis=0))
    # where D's column is exactly zero, B's is too (a nonzero B column makes the group norm
    # smooth in D), and Clarabel's D column is near zero
    assert np.all(~np.any(Bs[:, zero_d] != 0.0, axis=0))
    assert np.all(np.linalg.norm(ref["D"][:, zero_d], axis=0) < 1e-6)


def test_applies_only_to_one_feature_selection_penalty_on_b_and_d(rng):
    U, Y = rng.standard_normal((3, 20)), rng.standard_normal((1, 20))
    fs = {"name": "feature_selection", "weight": 0.1}
    assert columns_apply(TrainingProblem(U, Y, 2, penalties=[fs]))
    assert columns_apply(TrainingProblem(U, Y, 2, penalties=[fs, {"name": "l1", "on": "A"}]))
    assert not columns_apply(TrainingProblem(U, Y, 2, penalties=[fs, {"name": "l1",
                                                                       "on": "B"}]))
    assert not columns_apply(TrainingProblem(U, Y, 2))
    assert not columns_apply(TrainingProblem(U, Y, 2, activation="tanh", penalties=[fs]))


def test_polished_readout_reports_an_honest_gap():
    """PolishedReadout on a state whose readout is exact: the reported absolute gap bounds the
    distance of its objective to the Clarabel optimum of the penalized readout."""
    pb, st = _setup(8, 0.05, noise_inputs=2)
    s = State(A=st["A"], B=st["B"].copy(), b=st["b"], C=st["C"], D=st["D"], d=st["d"],
              X=st["X"], lam=st["lam"])
    s.B[:, -2:] = 0.0
    policy = SolvePolicy(pb.cone)
    solvers = make_block_solvers(pb, policy)
    polished = PolishedReadout(solvers.CD, pb)
    s1, info = polished.solve(s)
    assert info.certified
    # the penalized readout over (C, D, d) by CVXPY, written out anew
    q, n, p, m = pb.q, pb.n, pb.p, pb.m
    Cv, Dv, dv = cp.Variable((q, n)), cp.Variable((q, p)), cp.Variable(q)
    Yh = Cv @ s.X + Dv @ pb.U + cp.reshape(dv, (q, 1), order="F") @ np.ones((1, m))
    obj = 0.5 * cp.sum_squares(Yh - pb.Y) / m + 0.05 * cp.sum(
        cp.norm(cp.vstack([s.B, Dv]), 2, axis=0))
    cons = [cp.sum(cp.abs(Cv), axis=1) <= pb.bounds.C]
    opt = cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL", tol_gap_abs=1e-11,
                                                   tol_gap_rel=1e-11, tol_feas=1e-11)
    val = 0.5 * np.sum((s1.C @ s.X + s1.D @ pb.U + s1.d[:, None] - pb.Y) ** 2) / m \
        + 0.05 * np.linalg.norm(np.vstack([s.B, s1.D]), axis=0).sum()
    assert opt - 1e-8 <= val <= opt + info.abs_gap + 1e-8
    assert np.all(s1.D[:, -2:] == 0.0) or np.linalg.norm(s1.D[:, -2:]) > 1e-6
