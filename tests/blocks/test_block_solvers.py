"""The Fallback block solver: what it returns when its primary misses the certificate."""

from __future__ import annotations

import pytest

from fenchel_idl.blocks.block_solvers import BlockSolver, Fallback, SolvePolicy
from fenchel_idl.blocks.solvers import SolveInfo
from fenchel_idl.errors import SolverError, SolverWarning


def _info(certified: bool) -> SolveInfo:
    return SolveInfo(block="AB", solver="FISTA", status="optimal" if certified else
                     "optimal_inaccurate", objective=1.0, gap=1e-9 if certified else 4e-6,
                     kkt_residual=None, certified=certified, time=0.0, attempt=1,
                     note="" if certified else "gap bound 4e-06 above 1e-06")


class _Fixed(BlockSolver):
    block = "AB"

    def __init__(self, state, info):
        self.state, self.info, self.calls = state, info, 0

    def solve(self, s, **kw):
        self.calls += 1
        return self.state, self.info


class _Failing(BlockSolver):
    block = "AB"

    def solve(self, s, **kw):
        raise SolverError("block 'AB' could not be solved: MemoryError", status="solver_error")


def test_certified_primary_is_returned_without_the_backup():
    backup = _Fixed("backup point", _info(True))
    out = Fallback(_Fixed("primary point", _info(True)), backup, SolvePolicy("qp")).solve("s")
    assert out[0] == "primary point" and backup.calls == 0


def test_uncertified_primary_goes_to_the_backup():
    backup = _Fixed("backup point", _info(True))
    policy = SolvePolicy("qp")
    state, info = Fallback(_Fixed("primary point", _info(False)), backup, policy).solve("s")
    assert state == "backup point" and info.certified and backup.calls == 1
    assert len(policy.events) == 1 and policy.events[0]["solver"] == "FISTA"


def test_warn_keeps_the_uncertified_primary_when_the_backup_fails():
    policy = SolvePolicy("qp", on_failure="warn")
    with pytest.warns(SolverWarning, match="kept uncertified"):
        state, info = Fallback(_Fixed("primary point", _info(False)), _Failing(),
                               policy).solve("s")
    assert state == "primary point" and not info.certified


@pytest.mark.parametrize("on_failure", ["fallback", "raise"])
def test_other_policies_raise_when_nothing_certifies(on_failure):
    policy = SolvePolicy("qp", on_failure=on_failure)
    with pytest.raises(SolverError):
        Fallback(_Fixed("primary point", _info(False)), _Failing(), policy).solve("s")
