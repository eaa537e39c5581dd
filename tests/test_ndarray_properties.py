"""Property tests: random chains of NDArray views applied in parallel to numpy.

The numpy shadow is kept as a real numpy *view* of its own base wherever
NDArray makes a view, so strides (in elements), write-through of setitem and
buffer sharing can be compared step by step, not just final values. Every
storage dtype (float32, float64, int64, bool) is drawn on every device.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from needle import backend_ndarray as nd
from needle.dtypes import division_dtype, result_dtype

DEVICES = [nd.cpu(), nd.cpu_numpy()]
DTYPES = ["float32", "float64", "int64", "bool"]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_SIZE = 400  # elements; keeps broadcast chains small

device_st = st.sampled_from(DEVICES)
shape_st = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
dtype_st = st.sampled_from(DTYPES)


def elem_strides(a: np.ndarray):
    return tuple(s // a.itemsize for s in a.strides)


def random_array(data, shape, dtype="float32"):
    """Random values of a storage dtype: normals, small integers (ties likely) or booleans."""
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype).name
    if dtype == "int64":
        return rng.integers(-5, 6, size=shape).astype(np.int64)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    return rng.standard_normal(shape).astype(dtype)


def random_scalar(data, dtype: str):
    if dtype == "int64":
        return int(data.draw(st.integers(-10, 10), label="scalar"))
    if dtype == "bool":
        return bool(data.draw(st.booleans(), label="scalar"))
    return np.dtype(dtype).type(data.draw(st.floats(-10, 10, width=32), label="scalar"))


class Pair:
    """An NDArray and its numpy shadow, plus the bases they view."""

    def __init__(self, x: np.ndarray, device):
        self.a = nd.array(x, device=device, dtype=x.dtype.name)
        assert self.a.dtype == x.dtype.name
        self.x = x.copy()
        self.base_a, self.base_x = self.a, self.x

    def new_base(self, a, x):
        self.a, self.x = a, x
        self.base_a, self.base_x = a, x

    def check(self):
        assert self.a.shape == self.x.shape
        assert self.a.dtype == self.x.dtype.name
        np.testing.assert_array_equal(self.a.numpy(), self.x)
        assert self.a._handle.ptr() == self.base_a._handle.ptr()
        # the views describe the same memory layout as numpy's
        assert np.shares_memory(self.x, self.base_x) or self.x.size == 0
        if self.x.size:
            offset = (self.x.__array_interface__["data"][0] - self.base_x.__array_interface__["data"][0])
            assert self.a._offset == offset // self.x.itemsize
            # (numpy gives length-1 axes arbitrary strides, e.g. 0 after broadcast_to; they never matter)
            strides = zip(self.a.strides, elem_strides(self.x), self.x.shape)
            assert all(s == t for s, t, d in strides if d > 1), (self.a.strides, self.x.strides)
        np.testing.assert_array_equal(self.base_a.numpy(), self.base_x)


def factor_shape(data, size):
    """A random shape with product `size`."""
    factors = []
    n, p = size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    ndim = data.draw(st.integers(1, 4), label="reshape ndim")
    dims = [1] * ndim
    for f in data.draw(st.permutations(factors), label="factor order"):
        dims[data.draw(st.integers(0, ndim - 1), label="factor slot")] *= f
    return tuple(dims)


def draw_index(data, shape):
    idx = []
    for n in shape:
        if data.draw(st.booleans(), label="int index"):
            idx.append(data.draw(st.integers(-n, n - 1), label="int"))
        else:
            start = data.draw(st.one_of(st.none(), st.integers(0, n - 1)), label="start")
            lo = 1 if start is None else start + 1
            stop = data.draw(st.one_of(st.none(), st.integers(lo, n + 2), st.integers(-n, -1)), label="stop")
            if isinstance(stop, int) and stop < 0 and n + stop <= (start or 0):
                stop = None
            step = data.draw(st.one_of(st.none(), st.integers(1, 3)), label="step")
            idx.append(slice(start, stop, step))
    return tuple(idx)


def as_numpy_index(idx):
    return tuple(slice(i, i + 1 if i != -1 else None) if isinstance(i, int) else i for i in idx)


def apply_random_op(data, *pairs: Pair) -> str:
    """Draw one op and its arguments, then apply it to every pair (same layout on each device)."""
    a = pairs[0].a
    ops = ["reshape", "permute", "broadcast", "getitem", "flip", "pad", "setitem", "setitem_scalar", "compact"]
    op = data.draw(st.sampled_from(ops), label="op")
    if op == "reshape":
        shape = factor_shape(data, a.size)
        for pair in pairs:
            if not pair.a.is_compact():
                c = pair.a.compact()
                assert c.is_compact() and c._handle.ptr() != pair.a._handle.ptr()
                pair.new_base(c, pair.x.copy())
            pair.a, pair.x = pair.a.reshape(shape), pair.x.reshape(shape)
            assert pair.a.strides == nd.NDArray.compact_strides(shape)
    elif op == "permute":
        axes = tuple(data.draw(st.permutations(range(a.ndim)), label="axes"))
        for pair in pairs:
            pair.a, pair.x = pair.a.permute(axes), pair.x.transpose(axes)
    elif op == "broadcast":
        lead = data.draw(st.lists(st.integers(1, 3), max_size=2), label="lead")
        new = tuple(lead) + tuple(
            data.draw(st.integers(1, 3), label="grow") if d == 1 else d for d in a.shape
        )
        if math.prod(new) > MAX_SIZE:
            return op
        for pair in pairs:
            old = pair.a
            pair.a, pair.x = old.broadcast_to(new), np.broadcast_to(pair.x, new)
            grown = zip(pair.a.strides[len(lead):], new[len(lead):], old.shape)
            assert all(s == 0 for s, d, o in grown if o == 1 and d > 1)
            assert all(s == 0 for s in pair.a.strides[: len(lead)])
    elif op == "getitem":
        idx = draw_index(data, a.shape)
        for pair in pairs:
            pair.a, pair.x = pair.a[idx], pair.x[as_numpy_index(idx)]
    elif op == "flip":
        axes = tuple(sorted(data.draw(st.sets(st.integers(0, a.ndim - 1), min_size=1), label="flip axes")))
        for pair in pairs:
            before = pair.a.numpy()
            out = pair.a.flip(axes)
            np.testing.assert_array_equal(pair.a.numpy(), before)
            assert out.is_compact()
            pair.new_base(out, np.flip(pair.x, axes).copy())
    elif op == "pad":
        widths = tuple(
            (data.draw(st.integers(0, 2), label="left"), data.draw(st.integers(0, 2), label="right"))
            for _ in a.shape
        )
        if math.prod(d + l + r for d, (l, r) in zip(a.shape, widths)) > MAX_SIZE:
            return op
        for pair in pairs:
            before = pair.a.numpy()
            out = pair.a.pad(widths)
            np.testing.assert_array_equal(pair.a.numpy(), before)
            pair.new_base(out, np.ascontiguousarray(np.pad(pair.x, widths)))
    elif op in ("setitem", "setitem_scalar"):
        if not pairs[0].x.flags.writeable:
            return op  # a broadcast view: read-only in numpy, ill-defined where elements alias
        idx = draw_index(data, a.shape)
        shape = pairs[0].x[as_numpy_index(idx)].shape
        dtype = a.dtype
        if op == "setitem":
            vals = random_array(data, shape, dtype)
        else:
            vals = random_scalar(data, dtype)
        for pair in pairs:
            p = pair.a._handle.ptr()
            pair.a[idx] = nd.array(vals, device=pair.a.device, dtype=dtype) if op == "setitem" else vals
            pair.x[as_numpy_index(idx)] = vals
            assert pair.a._handle.ptr() == p == pair.base_a._handle.ptr()
    elif op == "compact":
        for pair in pairs:
            c = pair.a.compact()
            np.testing.assert_array_equal(c.numpy(), np.ascontiguousarray(pair.x))
            assert c.is_compact()
            assert (c is pair.a) == pair.a.is_compact()
            pair.new_base(c, pair.x.copy())
    return op


def random_pair(data, device=None):
    device = device or data.draw(device_st, label="device")
    shape = data.draw(shape_st, label="shape")
    return Pair(random_array(data, shape, data.draw(dtype_st, label="dtype")), device)


@SETTINGS
@given(st.data())
def test_random_view_chains_match_numpy(data):
    pair = random_pair(data)
    pair.check()
    for _ in range(data.draw(st.integers(1, 6), label="chain length")):
        apply_random_op(data, pair)
        pair.check()


@SETTINGS
@given(st.data())
def test_compact_equals_numpy_copy(data):
    pair = random_pair(data)
    for _ in range(data.draw(st.integers(1, 4), label="chain length")):
        apply_random_op(data, pair)
    before = pair.base_a.numpy()
    c = pair.a.compact()
    assert c.is_compact()
    expected = np.ascontiguousarray(pair.x)
    assert all(s == t for s, t, d in zip(c.strides, elem_strides(expected), c.shape) if d > 1)
    assert c.strides == nd.NDArray.compact_strides(c.shape)
    np.testing.assert_array_equal(c.numpy(), expected)
    np.testing.assert_array_equal(pair.base_a.numpy(), before)
    if not pair.a.is_compact():
        assert c._handle.ptr() != pair.a._handle.ptr()
        assert c._handle.size == c.size


def _view_of_shape(data, shape, device, dtype="float32"):
    """A non-compact NDArray (a permuted, sliced or broadcast view) with the given shape, and its values."""
    kind = data.draw(st.sampled_from(["compact", "permuted", "sliced", "broadcast"]), label="view kind")

    def make(x):
        return nd.array(x, device=device, dtype=dtype)

    if kind == "compact":
        x = random_array(data, shape, dtype)
        return make(x), x
    if kind == "permuted":
        axes = list(data.draw(st.permutations(range(len(shape))), label="perm"))
        inverse = list(np.argsort(axes))
        src = random_array(data, tuple(shape[i] for i in axes), dtype)  # src.transpose(inverse) has `shape`
        return make(src).permute(inverse), src.transpose(inverse)
    if kind == "sliced":
        src = random_array(data, tuple(2 * d + 1 for d in shape), dtype)
        idx = tuple(slice(1, 2 * d + 1, 2) for d in shape)
        return make(src)[idx], src[idx]
    src = random_array(data, tuple(1 if i % 2 else d for i, d in enumerate(shape)), dtype)
    return make(src).broadcast_to(shape), np.broadcast_to(src, shape)


BINARY = {  # (needle, numpy, promotion rule)
    "add": (lambda p, q: p + q, np.add, result_dtype),
    "sub": (lambda p, q: p - q, np.subtract, result_dtype),
    "mul": (lambda p, q: p * q, np.multiply, result_dtype),
    "div": (lambda p, q: p / q, np.true_divide, division_dtype),
    "maximum": (lambda p, q: p.maximum(q), np.maximum, result_dtype),
    "minimum": (lambda p, q: p.minimum(q), np.minimum, result_dtype),
    "eq": (lambda p, q: p == q, np.equal, None),
    "ne": (lambda p, q: p != q, np.not_equal, None),
    "ge": (lambda p, q: p >= q, np.greater_equal, None),
    "lt": (lambda p, q: p < q, np.less, None),
}
UNARY = {
    "exp": (lambda p: p.exp(), np.exp),
    "tanh": (lambda p: p.tanh(), np.tanh),
    "neg": (lambda p: -p, np.negative),
    "log_sq_plus_1": (lambda p: ((p * p) + 1).log(), lambda q: np.log(q * q + 1)),
    "pow2": (lambda p: p ** 2, lambda q: q**2),
    "radd": (lambda p: 1.5 + p, lambda q: np.float32(1.5) + q),
    "rsub": (lambda p: 1.5 - p, lambda q: np.float32(1.5) - q),
    "scalar_max": (lambda p: p.maximum(0.25), lambda q: np.maximum(q, np.float32(0.25))),
}


def _expected_binary(np_fn, rule, x, y):
    """numpy's answer with both operands first converted as PyTorch promotes them."""
    common = result_dtype(x.dtype.name, y.dtype.name)
    out = np_fn(x.astype(common), y.astype(common))
    return out if rule is None else out.astype(rule(x.dtype.name, y.dtype.name))


@SETTINGS
@given(st.data())
def test_elementwise_on_random_views(data):
    device = data.draw(device_st, label="device")
    shape = data.draw(shape_st, label="shape")
    dtypes = [data.draw(dtype_st, label="dtype a"), data.draw(dtype_st, label="dtype b")]
    if data.draw(st.booleans(), label="broadcast b"):  # b broadcasts against a from a smaller shape
        b_shape = tuple(1 if data.draw(st.booleans(), label="keep") else d for d in shape)[1:]
    else:
        b_shape = shape
    a, x = _view_of_shape(data, shape, device, dtypes[0])
    b, y = _view_of_shape(data, b_shape, device, dtypes[1])
    name = data.draw(st.sampled_from(sorted(BINARY)), label="binary")
    nd_fn, np_fn, rule = BINARY[name]
    if name == "sub" and dtypes == ["bool", "bool"]:
        with pytest.raises(TypeError, match="bool"):
            nd_fn(a, b)
        return
    if name == "div":
        y = np.where(np.abs(y.astype(np.float64)) < 0.1, y.dtype.type(1), y)
        b = nd.array(y, device=device, dtype=dtypes[1])
    out = nd_fn(a, b)
    expected = _expected_binary(np_fn, rule, x, y)
    assert out.is_compact() and out.shape == expected.shape
    assert out.dtype == expected.dtype.name, (name, dtypes, out.dtype)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.numpy(), x)  # inputs are never modified
    if dtypes[0] in ("float32", "float64"):
        uname = data.draw(st.sampled_from(sorted(UNARY)), label="unary")
        nd_u, np_u = UNARY[uname]
        np.testing.assert_allclose(nd_u(a).numpy(), np_u(x), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(st.data())
def test_elementwise_with_scalars_keeps_the_array_dtype_within_its_kind(data):
    device = data.draw(device_st, label="device")
    dtype = data.draw(dtype_st, label="dtype")
    a, x = _view_of_shape(data, data.draw(shape_st, label="shape"), device, dtype)
    scalar = data.draw(st.sampled_from([2, 0.5, np.float64(0.5), True]), label="scalar")
    kind = "b" if isinstance(scalar, bool) else "i" if isinstance(scalar, int) else "f"
    expected_dtype = result_dtype(dtype, scalar, b_is_scalar=True)
    assert expected_dtype == (dtype if "bif".index(kind) <= "bif".index(np.dtype(dtype).kind) else
                              {"i": "int64", "f": "float32"}[kind])
    if dtype == "bool" and kind == "b":
        return
    out = a * scalar
    assert out.dtype == expected_dtype
    np.testing.assert_allclose(out.numpy(), x.astype(expected_dtype) * np.dtype(expected_dtype).type(scalar),
                               rtol=1e-6)
    assert (a > scalar).dtype == "bool"
    np.testing.assert_array_equal((a > scalar).numpy(), x > scalar)


@SETTINGS
@given(st.data())
def test_reductions_on_random_views(data):
    device = data.draw(device_st, label="device")
    shape = data.draw(shape_st, label="shape")
    dtype = data.draw(dtype_st, label="dtype")
    a, x = _view_of_shape(data, shape, device, dtype)
    axes = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                               st.sets(st.integers(0, len(shape) - 1), min_size=1).map(tuple)), label="axes")
    keepdims = data.draw(st.booleans(), label="keepdims")
    for name in ["sum", "max", "min"]:
        out = getattr(nd, name)(a, axis=axes, keepdims=keepdims)
        expected = getattr(np, name)(x, axis=axes, keepdims=keepdims)
        if name == "sum" and dtype in ("bool", "int64"):
            expected = expected.astype(np.int64)  # bool and int64 sum into int64, as in PyTorch
        assert out.shape == expected.shape and out.dtype == expected.dtype.name
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    if not isinstance(axes, tuple):
        out = nd.argmax(a, axis=axes, keepdims=keepdims) if axes is not None else nd.argmax(a)
        expected = np.argmax(x, axis=axes, keepdims=keepdims and axes is not None)
        assert out.dtype == "int64"
        np.testing.assert_array_equal(out.numpy(), expected)


@SETTINGS
@given(st.data())
def test_matmul_random_shapes(data):
    device = data.draw(device_st, label="device")
    m, n, p = (data.draw(st.integers(1, 20), label=k) for k in "mnp")
    batch = data.draw(st.lists(st.integers(1, 3), max_size=2), label="batch")
    b_batch = data.draw(st.sampled_from(["same", "none", "ones"]), label="b batch")
    b_shape = {"same": tuple(batch), "none": (), "ones": tuple(1 for _ in batch)}[b_batch]
    a, x = _view_of_shape(data, tuple(batch) + (m, n), device)
    b, y = _view_of_shape(data, b_shape + (n, p), device)
    np.testing.assert_allclose((a @ b).numpy(), x @ y, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(st.data())
def test_cpu_and_cpu_numpy_agree(data):
    shape = data.draw(shape_st, label="shape")
    x = random_array(data, shape)  # float32: the arithmetic below is compared bit for bit
    pairs = [Pair(x, dev) for dev in DEVICES]
    for _ in range(data.draw(st.integers(1, 5), label="chain length")):
        apply_random_op(data, *pairs)
        for pair in pairs:
            pair.check()
    first, second = (pair.a for pair in pairs)
    assert first.device == nd.cpu() and second.device == nd.cpu_numpy()
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert first.strides == second.strides and first.shape == second.shape
    assert first._offset == second._offset
    np.testing.assert_allclose(first.sum(axis=0).numpy(), second.sum(axis=0).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(first.max().numpy(), second.max().numpy())
    np.testing.assert_array_equal(first.argmax(axis=-1).numpy(), second.argmax(axis=-1).numpy())
    np.testing.assert_allclose(first.exp().numpy(), second.exp().numpy(), rtol=1e-6)
    np.testing.assert_array_equal((first * 2 + 1).numpy(), (second * 2 + 1).numpy())
    np.testing.assert_array_equal(first.maximum(0).numpy(), second.maximum(0).numpy())
    if first.ndim >= 2:
        lhs = first.reshape_compact((-1, first.shape[-1]))
        rhs = second.reshape_compact((-1, second.shape[-1]))
        np.testing.assert_allclose((lhs @ lhs.permute((1, 0))).numpy(), (rhs @ rhs.permute((1, 0))).numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES, ids=["cpu", "cpu_numpy"])
@SETTINGS
@given(data=st.data())
def test_setitem_through_random_views_reaches_the_base(device, data):
    shape = data.draw(shape_st, label="shape")
    pair = Pair(random_array(data, shape, data.draw(dtype_st, label="dtype")), device)
    p = pair.a._handle.ptr()
    for _ in range(data.draw(st.integers(0, 2), label="views")):
        kind = data.draw(st.sampled_from(["permute", "getitem"]), label="view op")
        if kind == "permute":
            axes = tuple(data.draw(st.permutations(range(pair.a.ndim)), label="axes"))
            pair.a, pair.x = pair.a.permute(axes), pair.x.transpose(axes)
        else:
            idx = draw_index(data, pair.a.shape)
            pair.a, pair.x = pair.a[idx], pair.x[as_numpy_index(idx)]
    idx = draw_index(data, pair.a.shape)
    target = pair.x[as_numpy_index(idx)]
    vals = random_array(data, target.shape, data.draw(dtype_st, label="value dtype"))
    pair.a[idx] = nd.array(vals, device=device, dtype=vals.dtype.name)  # cast to the destination's dtype
    target[...] = vals.astype(target.dtype)
    assert pair.base_a._handle.ptr() == p
    np.testing.assert_array_equal(pair.base_a.numpy(), pair.base_x)
    np.testing.assert_array_equal(pair.a.numpy(), pair.x)
