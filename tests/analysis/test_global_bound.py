"""The global lower bound (fenchel_idl.analysis.global_bound) against a brute force over (A, B, b)
with the exact readout, on one-state problems, and its refusals; the certificate's global gap
line."""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("pyscipopt")

from fenchel_idl import TrainingProblem, solve_bcd
from fenchel_idl.analysis.global_bound import GlobalBound, global_bound
from fenchel_idl.errors import InputTypeError, ResourceError, ValidationError
from fenchel_idl.problem import datasets


def _readout_losses(x, u, y, rC, rD):
    """The exact readout min over |C| <= rC, |D| <= rD, d free of 1/(2m) ||C x + D u + d - y||^2
    for each row of x (N, m): every active set (C and D free, or at one of their bounds) is
    solved by least squares and the feasible candidates' minimum kept. The convex problem's
    minimizer is one of these candidates, and every candidate is feasible, so this is exact."""
    N, m = x.shape
    one, U1 = np.ones((N, m)), np.broadcast_to(u, (N, m))
    best = np.full(N, np.inf)
    for c in (None, rC, -rC):
        for dd in (None, rD, -rD):
            target = y - (0.0 if c is None else c * x) - (0.0 if dd is None else dd * U1)
            cols, target = [one], np.broadcast_to(target, (N, m))
            if c is None:
                cols.append(x)
            if dd is None:
                cols.append(U1)
            V = np.stack(cols, axis=2)
            w = np.einsum("nkm,nm->nk", np.linalg.pinv(V), target)
            r = np.einsum("nmk,nk->nm", V, w) - target
            ok = np.ones(N, bool)
            k = 1
            if c is None:
                ok &= np.abs(w[:, k]) <= rC + 1e-12
                k += 1
            if dd is None:
                ok &= np.abs(w[:, k]) <= rD + 1e-12
            best = np.where(ok, np.minimum(best, 0.5 * np.sum(r * r, axis=1) / m), best)
    return best


def _brute_force(pb, num=61):
    """min over a grid of (a, B, b) of the exact readout loss; for n = 1 the equilibrium is
    x = max(0, B u + b) / (1 - a) (a < 1)."""
    rB, u, y = pb.bounds.B, pb.U[0], pb.Y[0]
    avals = np.linspace(-pb.kappa, pb.kappa, 7)
    g = np.linspace(-rB, rB, num)
    Bg, bg = np.meshgrid(g, g, indexing="ij")
    pre = np.maximum(0.0, Bg.ravel()[:, None] * u[None, :] + bg.ravel()[:, None])
    best = np.inf
    for a in avals:
        best = min(best, float(_readout_losses(pre / (1 - a), u, y, pb.bounds.C,
                                               pb.bounds.D).min()))
    return best


@pytest.mark.parametrize("bounds", [{"B": 2.0, "C": 3.0, "D": 5.0}, {"B": 1.0, "C": 0.5, "D": 0.3}])
def test_lower_bound_below_brute_force_and_gap_closes(bounds):
    ds = datasets.cosine(m=6, seed=3)
    pb = TrainingProblem(ds.U, ds.Y, n=1, kappa=0.5, bounds=bounds)
    brute = _brute_force(pb)
    res = global_bound(pb, time_limit=60.0, gap=1e-3)
    assert isinstance(res, GlobalBound)
    assert res.lower_bound <= brute + 1e-9  # never above the (grid) optimum
    assert res.gap <= 2e-3 and res.status in ("optimal", "gaplimit")
    assert res.lower_bound >= brute * (1 - 1e-2)  # the grid optimum is within 1% of the bound
    assert res.upper_bound <= brute * (1 + 2e-3)
    # the returned model's loss, recomputed from its raw-unit predictions
    pred = res.model.predict(pb.U_raw)
    loss = 0.5 * np.mean(((pred - pb.Y_raw) / pb.sd_y[:, None]) ** 2)
    assert loss == pytest.approx(res.upper_bound, rel=1e-6)
    assert res.nodes >= 1 and res.trace and "global gap" in str(res)


def test_start_model_is_kept_when_nothing_better_and_gap_of():
    ds = datasets.cosine(m=5, seed=1)
    pb = TrainingProblem(ds.U, ds.Y, n=1, kappa=0.5, bounds={"B": 2.0, "C": 3.0, "D": 5.0})
    first = global_bound(pb, time_limit=30.0, gap=1e-3)
    again = global_bound(pb, time_limit=30.0, gap=1e-3, start=first.model, node_limit=1)
    assert again.upper_bound <= first.upper_bound * (1 + 1e-6)
    assert again.gap_of(2 * again.upper_bound) >= 0.5 - 1e-12
    assert set(again.to_dict()) >= {"lower_bound", "upper_bound", "gap", "status", "nodes"}


def test_refusals_name_the_sizes():
    ds = datasets.cosine(m=80, seed=0)
    with pytest.raises(ResourceError, match=r"n = 2, m = 80 \(n \* m = 160\)"):
        global_bound(TrainingProblem(ds.U, ds.Y, n=2))
    with pytest.raises(ResourceError, match="n = 4"):
        global_bound(TrainingProblem(ds.U[:, :10], ds.Y[:, :10], n=4))
    small = ds.U[:, :10], ds.Y[:, :10]
    with pytest.raises(ValidationError, match="'relu' activation"):
        global_bound(TrainingProblem(*small, n=1, activation="tanh"))
    with pytest.raises(ValidationError, match="without penalties"):
        global_bound(TrainingProblem(*small, n=1, penalties=[{"name": "l1", "weight": 1e-3,
                                                               "on": "A"}]))
    with pytest.raises(ValidationError, match="finite balls"):
        global_bound(TrainingProblem(*small, n=1, bounds={"C": None}))
    with pytest.raises(ValidationError, match="squared"):
        global_bound(TrainingProblem(small[0], (small[1] > 0).astype(int)[0], n=1,
                                     loss="cross_entropy"))
    with pytest.raises(InputTypeError, match="'start'"):
        global_bound(TrainingProblem(*small, n=1), start="bcd")
    with pytest.raises(ValidationError, match="time_limit"):
        global_bound(TrainingProblem(*small, n=1), time_limit=-1.0)


def test_certificate_global_gap_line_is_the_bounds_line(tmp_path):
    """A certificate carrying GlobalBound.to_dict() prints GlobalBound.line(true_loss) as its
    "global gap" line (the gap of the returned model, not of SCIP's best), a better model
    found by SCIP on a line of its own, and saves strict JSON; without it, no such line."""
    ds = datasets.cosine(m=6, seed=0)
    pb = TrainingProblem(ds.U, ds.Y, n=1, kappa=0.5, bounds={"B": 2.0, "C": 3.0, "D": 5.0})
    bcd = solve_bcd(pb, max_sweeps=3, progress=False, seed=0)
    res = global_bound(pb, time_limit=30.0, gap=1e-2, start=bcd)
    plain = bcd.certificate
    assert plain.global_bound is None and "global gap" not in str(plain)
    cert = dataclasses.replace(plain, global_bound=res.to_dict())
    loss = cert.true_loss
    line = "  global gap                   : " + res.line(loss)
    assert line in str(cert).splitlines()
    assert res.line(loss).startswith(f"{100 * (loss - res.lower_bound) / loss:.2f}% (true loss "
                                     f"{loss:.6g} >= global lower bound {res.lower_bound:.6g}")
    assert (res.upper_bound < loss * (1 - 1e-9)) == ("better model found by SCIP" in str(cert))
    saved = json.loads(cert.save(tmp_path / "c.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))
    assert saved["global_bound"]["lower_bound"] == res.lower_bound
    assert saved["global_bound"]["nodes"] == res.nodes
    assert len(saved["global_bound"]["trace"]) == len(res.trace)
    # a bound SCIP holds at its infinity (no incumbent yet) is null, not 1e20
    assert all(x is None or abs(x) < 1e20 for row in saved["global_bound"]["trace"] for x in row)
