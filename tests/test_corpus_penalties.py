"""The validation corpus of declared penalties (issue 23 section 5, issue 24).

Entries follow :mod:`tests.test_validation_corpus`: ``(call, expected error, regex on the
message)``. The classes: a user's penalty callable that raises (reported as raising, with
its message, never as "not convex"); a penalty or constraint that uses a ``cp.Parameter``
(refused when the problem is built, not later in ``solve_bcd``); ``block_solver='fista'``
with a penalty that has no first-order (A, B) block.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest

from fenchel_idl import FenchelIDLError, TrainingProblem
from fenchel_idl.drivers import solve_bcd
from fenchel_idl.errors import NotConvexError, ValidationError
from fenchel_idl.problem.penalties import Custom, LipschitzBound, Nuclear

RNG = np.random.default_rng(0)
U20 = RNG.standard_normal((2, 20))
Y20 = np.sin(U20[:1])


def _tp(**kw):
    return TrainingProblem(U20, Y20, n=3, **kw)


def _wrong_arity(A, B):
    return cp.norm1(A)


def _type_error(A, B, C, D):
    return math.sqrt(cp.sum_squares(A))  # a numeric habit: math on a CVXPY expression


def _parameter_weight():
    w = cp.Parameter(nonneg=True, name="w", value=1e-3)
    return lambda A, B, C, D: w * cp.norm1(A)


def _parameter_in_constraint():
    lo = cp.Parameter(name="lo", value=0.0)
    return lambda A, B, C, D: [C >= lo]


def case(id, call, exc, match):
    return pytest.param(call, exc, match, id=id)


CASES = [
    case("penalty-callable-wrong-arity", lambda: _tp(penalties=[_wrong_arity]),
         ValidationError, r"callable '_wrong_arity' could not be built.*raised TypeError: "
                          r"_wrong_arity\(\) takes 2 positional arguments"),
    case("penalty-callable-type-error", lambda: _tp(penalties=[_type_error]),
         ValidationError, r"callable '_type_error'.*raised TypeError: must be real number"),
    case("constraint-callable-raises", lambda: _tp(constraints=[lambda A, B, C, D: 1 / 0]),
         ValidationError, r"could not be built.*raised ZeroDivisionError: division by zero"),
    case("custom-raises-keeps-label", lambda: _tp(penalties=[
        Custom(fn=_type_error, label="mine")]),
         ValidationError, r"'mine' \(_type_error\).*raised TypeError"),
    case("penalty-parameter", lambda: _tp(penalties=[_parameter_weight()]),
         ValidationError, r"uses the cp.Parameter\(s\) \['w'\].*param.value"),
    case("constraint-parameter", lambda: _tp(constraints=[_parameter_in_constraint()]),
         ValidationError, r"cp.Parameter\(s\) \['lo'\]"),
    case("fista-with-two-penalties-on-a",
         lambda: solve_bcd(_tp(penalties=[LipschitzBound(1e-3), Nuclear(1e-3)]),
                           block_solver="fista", max_sweeps=1),
         ValidationError, r"'block_solver'='fista' needs.*one penalty on A or B"),
]


@pytest.mark.parametrize("call, exc, match", CASES)
def test_bad_penalty_raises_a_clear_package_error(call, exc, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match) as info:
            call()
    assert isinstance(info.value, FenchelIDLError)


@pytest.mark.parametrize("fn", [_wrong_arity, _type_error])
def test_a_raising_callable_is_not_reported_as_not_convex(fn):
    with pytest.raises(ValidationError) as info:
        _tp(penalties=[fn])
    assert not isinstance(info.value, NotConvexError)
    assert "not convex" not in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)  # the user's own error is chained


def test_a_parameter_penalty_is_refused_before_any_solve():
    """Refused in the constructor, so solve_bcd is never reached (it failed there)."""
    with pytest.raises(ValidationError, match="cp.Parameter"):
        _tp(penalties=[_parameter_weight()])
    # the same penalty with the value passed as a number is accepted and trains
    res = solve_bcd(_tp(penalties=[lambda A, B, C, D: 1e-3 * cp.norm1(A)]), max_sweeps=1)
    assert np.isfinite(res.history[-1].objective)
