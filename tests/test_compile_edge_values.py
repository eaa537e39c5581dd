"""ndl.compile on values that compare equal in Python but are other bits (1, 1.0 and True;
0.0 and -0.0; nans of either sign), on in-place writes that overlap themselves, on numpy's
scalar dtypes in comparisons, and on tensors that share memory from outside: each replay gives
the eager call's bits, or the trace refuses with a clear error. (Found by trying to break the
compiler as a user would.)"""
import numpy as np
import pytest

import needle as ndl
from needle.backend_ndarray.recording import TraceError

R = np.random.RandomState(0)


def const(values, dtype="float32"):
    return ndl.Tensor(np.asarray(values, dtype=dtype), dtype=dtype, requires_grad=False)


def bits(t):
    return (t.numpy().tobytes(), str(t.numpy().dtype))


@pytest.mark.parametrize("fuse", [False, True])
def test_nans_of_either_sign_are_different_scalars(fuse):
    x = const(np.zeros((1, 3)))
    w = const(np.ones((3, 1)))

    def f(x):
        return (x + float("nan")) @ w, (x + float("-nan")) @ w

    compiled = ndl.compile(f, fuse=fuse)
    for _ in range(3):
        got, expected = compiled(x), f(x)
        assert [bits(t) for t in got] == [bits(t) for t in expected]
    assert [bool(np.signbit(t.numpy()).all()) for t in got] == [False, True]


def test_scalar_arguments_trace_by_type_and_bits():
    """1, 1.0 and True, and 0.0 and -0.0, are other calls: each replays its own trace."""
    def f(x, s):
        return x * s

    compiled = ndl.compile(f)
    x = const([-3, 4], "int64")
    y = const([-1.0, 2.0])
    for s in [1, 1, 1, 1.0, 1.0, 1.0, True, True, True]:
        assert bits(compiled(x, s)) == bits(f(x, s))
    for s in [0.0, 0.0, 0.0, -0.0, -0.0, -0.0, 0.0]:
        assert bits(compiled(y, s)) == bits(f(y, s))


def test_a_fresh_nan_argument_each_call_reuses_one_trace():
    compiled = ndl.compile(lambda x, s: x + s)
    x = const([1.0, 2.0])
    for _ in range(12):  # more than max_traces: every call is the same signature
        assert np.isnan(compiled(x, float("nan")).numpy()).all()


def test_a_global_rebound_from_zero_to_negative_zero_is_seen_by_the_guard():
    scale = {"c": 0.0}

    def f(x):
        return x * scale["c"]

    namespace = {"scale": 0.0}
    exec("def g(x):\n    return x * scale\n", namespace)
    g = namespace["g"]
    compiled_f, compiled_g = ndl.compile(f), ndl.compile(g)
    x = const([-1.0, 2.0])
    for c in [0.0, 0.0, 0.0, -0.0, float("nan"), -float("nan"), 0.0]:
        scale["c"] = namespace["scale"] = c
        assert bits(compiled_f(x)) == bits(f(x))
        assert bits(compiled_g(x)) == bits(g(x))


@pytest.mark.parametrize("array,scalar", [
    ([0.1, 0.2], 0.1),                 # float32 data: the scalar is float32(0.1) (NEP 50), not 0.1
    ([0.30000001, 0.3], 0.3),
    ([16777216.0, 16777218.0], 16777217),
    ([0, 1, 2], 0.5),                  # integers next to a float: compared as float64
    ([-2, 5], 3),
    ([True, False], 1),
    ([True, False], True),
])
@pytest.mark.parametrize("fuse", [False, True])
def test_comparisons_with_a_python_scalar_use_numpys_dtype(array, scalar, fuse):
    dtype = {float: "float32", int: "int64", bool: "bool"}[type(array[0])]
    x = const(array, dtype)

    def f(x):
        y = x * 1 if dtype != "bool" else x  # a chain, so the comparison is fused
        return y > scalar, y <= scalar, y >= scalar  # (== is identity, as in the course)

    compiled = ndl.compile(f, fuse=fuse)
    for _ in range(3):
        assert [bits(t) for t in compiled(x)] == [bits(t) for t in f(x)]
    expected = np.asarray(array, dtype) > scalar
    np.testing.assert_array_equal(compiled(x)[0].numpy(), expected)


@pytest.mark.parametrize("fuse", [False, True])
def test_an_in_place_add_into_a_broadcast_view_keeps_numpys_order(fuse):
    """y += b with y = x broadcast to 3 rows: three rows write the same two elements."""
    b = const([[1, 2], [10, 20], [100, 200]])

    def f(x, b):
        x.broadcast_to((3, 2)).__iadd__(b)
        return x + 0

    compiled = ndl.compile(f, fuse=fuse)
    for _ in range(3):
        eager, replayed = f(const([0.0, 0.0]), b), compiled(const([0.0, 0.0]), b)
        assert bits(replayed) == bits(eager)


def test_tensors_sharing_memory_from_outside_are_refused_when_one_is_written():
    memory = np.arange(6, dtype=np.float32)
    first, second = ndl.from_numpy(memory[:-1]), ndl.from_numpy(memory[1:])

    def f(x):
        second.copy_(first * 2 + x)
        return second + 0

    compiled = ndl.compile(f)
    x = const(np.zeros(5))
    compiled(x)  # the first call runs eagerly
    with pytest.raises(TraceError, match="share memory"):
        compiled(x)


def test_tensors_sharing_memory_that_are_only_read_compile():
    memory = np.arange(6, dtype=np.float32)
    first, second = ndl.from_numpy(memory[:-1]), ndl.from_numpy(memory[1:])

    def f(x):
        return first * 2 + second + x

    compiled = ndl.compile(f)
    x = const(np.ones(5))
    for _ in range(3):
        assert bits(compiled(x)) == bits(f(x))


def test_a_fused_negation_may_differ_from_eager_only_in_a_nans_sign():
    """The documented exception: LLVM folds -(x * s) into x * (-s), and the sign of a nan that an
    arithmetic operation returns is IEEE's to leave open; every other bit is the eager one."""
    x = const([np.nan, -np.nan, 1.0, -0.0, np.inf])

    def f(x):
        return -(x * 1.0)

    compiled = ndl.compile(f, fuse=True)
    for _ in range(3):
        got, expected = compiled(x).numpy(), f(x).numpy()
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == expected[~nan].tobytes()
