"""needle.scalar.operators: the float functions against `math` and their defining
identities, the `_back` forms against central differences, and the list helpers
against Python's builtins."""
import builtins
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needle.scalar import operators as ops

fast = settings(deadline=None, max_examples=60)

small = st.floats(-100, 100, allow_nan=False)
moderate = st.floats(-30, 30, allow_nan=False)
positive = st.floats(1e-3, 100, allow_nan=False)
EPS = 1e-6


def numeric_derivative(fn, x, eps=EPS):
    return (fn(x + eps) - fn(x - eps)) / (2 * eps)


# ---------------------------------------------------------------------------- elementary


@fast
@given(small, small)
def test_arithmetic_matches_python(x, y):
    assert ops.mul(x, y) == x * y
    assert ops.add(x, y) == x + y
    assert ops.neg(x) == -x
    assert ops.id(x) == x
    assert ops.max(x, y) == builtins.max(x, y)


@fast
@given(small, small)
def test_comparisons_are_one_or_zero(x, y):
    assert ops.lt(x, y) == (1.0 if x < y else 0.0)
    assert ops.lt(x, y) + ops.lt(y, x) + ops.eq(x, y) == 1.0  # exactly one of <, >, ==
    assert ops.eq(x, x) == 1.0
    assert ops.lt(x, x) == 0.0


@fast
@given(small, small, small)
def test_lt_is_transitive(a, b, c):
    if ops.lt(a, b) and ops.lt(b, c):
        assert ops.lt(a, c) == 1.0


@fast
@given(small, small, small)
def test_mul_distributes_over_add(x, y, z):
    assert ops.is_close(ops.mul(z, ops.add(x, y)), ops.add(ops.mul(z, x), ops.mul(z, y)))


def test_is_close_uses_a_tolerance_of_one_hundredth():
    assert ops.is_close(1.0, 1.0 + 0.5e-2) == 1.0
    assert ops.is_close(1.0, 1.0 - 0.5e-2) == 1.0
    assert ops.is_close(1.0, 1.0 + 2e-2) == 0.0
    assert ops.is_close(-3.0, 3.0) == 0.0


@fast
@given(moderate)
def test_sigmoid_matches_its_definition(x):
    assert math.isclose(ops.sigmoid(x), 1.0 / (1.0 + math.exp(-x)), rel_tol=1e-12, abs_tol=1e-300)
    assert math.isclose(ops.sigmoid(x), 0.5 * (1.0 + math.tanh(x / 2)), rel_tol=1e-9, abs_tol=1e-15)


@fast
@given(st.floats(-1e308, 1e308, allow_nan=False))
def test_sigmoid_is_a_probability_and_symmetric_for_any_float(x):
    s = ops.sigmoid(x)  # never overflows, however large |x| is
    assert 0.0 <= s <= 1.0
    assert math.isclose(1.0 - s, ops.sigmoid(-x), abs_tol=1e-15)


def test_sigmoid_saturates_without_overflow():
    assert ops.sigmoid(0.0) == 0.5
    assert ops.sigmoid(1000.0) == 1.0
    assert ops.sigmoid(-1000.0) == 0.0  # e^-1000 underflows: the exact value is below the smallest float
    assert ops.sigmoid(-700.0) == pytest.approx(math.exp(-700.0), rel=1e-12)


@fast
@given(small, small)
def test_sigmoid_is_monotone(x, y):
    if x < y:
        assert ops.sigmoid(x) <= ops.sigmoid(y)


@fast
@given(small)
def test_relu(x):
    assert ops.relu(x) == (x if x > 0 else 0.0)
    assert ops.relu(x) >= 0.0


@fast
@given(positive)
def test_log_matches_math_without_an_epsilon_shift(x):
    assert ops.log(x) == math.log(x)


@fast
@given(st.floats(-700, 700))
def test_exp_matches_math(x):
    assert ops.exp(x) == math.exp(x)
    assert math.isclose(ops.log(ops.exp(x)), x, rel_tol=1e-15, abs_tol=1e-12)


@fast
@given(small.filter(lambda v: abs(v) > 1e-6))
def test_inv_and_tanh(x):
    assert ops.inv(x) == 1.0 / x
    assert math.isclose(ops.mul(x, ops.inv(x)), 1.0, rel_tol=1e-15)
    assert ops.tanh(x) == math.tanh(x)


# ---------------------------------------------------------------------------- derivatives


@fast
@given(st.floats(0.05, 50), st.floats(-10, 10))
def test_log_back_is_d_over_x(x, d):
    assert ops.log_back(x, d) == pytest.approx(d * numeric_derivative(math.log, x), rel=1e-5, abs=1e-8)
    assert ops.log_back(x, d) == pytest.approx(d / x, rel=1e-15)


@fast
@given(st.floats(0.05, 50).flatmap(lambda m: st.sampled_from([m, -m])), st.floats(-10, 10))
def test_inv_back_is_minus_d_over_x_squared(x, d):
    assert ops.inv_back(x, d) == pytest.approx(d * numeric_derivative(lambda v: 1.0 / v, x), rel=1e-5, abs=1e-8)
    assert ops.inv_back(x, d) == pytest.approx(-d / x ** 2, rel=1e-15)


@fast
@given(st.floats(-50, 50).filter(lambda v: abs(v) > 1e-3), st.floats(-10, 10))
def test_relu_back_away_from_the_kink(x, d):
    expected = d * numeric_derivative(lambda v: v if v > 0 else 0.0, x)
    assert ops.relu_back(x, d) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_relu_back_at_and_around_zero():
    assert ops.relu_back(0.0, 3.0) == 0.0  # the subgradient chosen at the kink
    assert ops.relu_back(1e-9, 3.0) == 3.0
    assert ops.relu_back(-1e-9, 3.0) == 0.0


@pytest.mark.parametrize("back, fn", [
    (ops.sigmoid_back, lambda v: 1.0 / (1.0 + math.exp(-v))),
    (ops.exp_back, math.exp),
    (ops.tanh_back, math.tanh),
])
@fast
@given(x=st.floats(-8, 8), d=st.floats(-10, 10))
def test_other_back_forms_match_central_differences(back, fn, x, d):
    assert back(x, d) == pytest.approx(d * numeric_derivative(fn, x), rel=1e-5, abs=1e-8)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0.0, -1.0, -1e-300, float("nan")])
def test_log_outside_its_domain_names_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        ops.log(bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        ops.log_back(bad, 1.0)


def test_inv_of_zero_names_the_value():
    with pytest.raises(ValueError, match=r"x=0\.0"):
        ops.inv(0.0)
    with pytest.raises(ValueError, match=r"x=0\.0"):
        ops.inv_back(0.0, 1.0)


def test_exp_overflow_names_the_value():
    with pytest.raises(OverflowError, match=r"exp\(1000\.0\)"):
        ops.exp(1000.0)


# ---------------------------------------------------------------------------- list helpers

float_lists = st.lists(st.floats(-100, 100), max_size=8)


@fast
@given(float_lists)
def test_map_and_neg_list(ls):
    assert ops.map(ops.neg)(ls) == [-x for x in ls]
    assert ops.negList(ls) == [-x for x in ls]
    assert ops.map(ops.relu)(iter(ls)) == [builtins.max(x, 0.0) for x in ls]  # any iterable


@fast
@given(st.integers(0, 8).flatmap(lambda n: st.tuples(*[st.lists(st.floats(-100, 100), min_size=n, max_size=n)] * 2)))
def test_zip_with_and_add_lists(pair):
    ls1, ls2 = pair
    assert ops.zipWith(ops.mul)(ls1, ls2) == [a * b for a, b in zip(ls1, ls2)]
    assert ops.addLists(ls1, ls2) == [a + b for a, b in zip(ls1, ls2)]


@fast
@given(float_lists)
def test_sum_and_prod(ls):
    assert ops.sum(ls) == pytest.approx(math.fsum(ls), abs=1e-9)
    assert ops.prod(ls) == pytest.approx(math.prod(ls), rel=1e-12)


def test_empty_reductions_return_the_start_value():
    assert ops.sum([]) == 0.0
    assert ops.prod([]) == 1.0
    assert ops.reduce(ops.max, -math.inf)([]) == -math.inf


@fast
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=8))
def test_reduce_folds_from_the_left(ls):
    assert ops.reduce(ops.max, -math.inf)(ls) == builtins.max(ls)
    # a non-commutative fold shows the order: ((start - x1) - x2) - ...
    expected = 0.5
    for x in ls:
        expected = expected - x
    assert ops.reduce(lambda acc, x: acc - x, 0.5)(ls) == expected


@pytest.mark.parametrize("helper", [ops.addLists, ops.zipWith(ops.add), ops.zipWith(ops.mul)])
def test_lists_of_different_lengths_name_both_lengths(helper):
    with pytest.raises(ValueError, match=r"\b3\b.*\b5\b"):
        helper([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])
