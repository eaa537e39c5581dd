"""Property tests: random chains of NDArray views applied in parallel to numpy.

The numpy shadow is kept as a real numpy *view* of its own base wherever
NDArray makes a view, so strides (in elements), write-through of setitem and
buffer sharing can be compared step by step, not just final values.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from needle import backend_ndarray as nd

DEVICES = [nd.cpu(), nd.cpu_numpy()]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_SIZE = 400  # elements; keeps broadcast chains small

device_st = st.sampled_from(DEVICES)
shape_st = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


def elem_strides(a: np.ndarray):
    return tuple(s // a.itemsize for s in a.strides)


def random_array(data, shape, dtype=np.float32):
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class Pair:
    """An NDArray and its numpy shadow, plus the bases they view."""

    def __init__(self, x: np.ndarray, device):
        self.a = nd.array(x, device=device)
        self.x = x.copy()
        self.base_a, self.base_x = self.a, self.x

    def new_base(self, a, x):
        self.a, self.x = a, x
        self.base_a, self.base_x = a, x

    def check(self):
        assert self.a.shape == self.x.shape
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
        if op == "setitem":
            vals = random_array(data, shape)
        else:
            vals = np.float32(data.draw(st.floats(-10, 10, width=32), label="scalar"))
        for pair in pairs:
            p = pair.a._handle.ptr()
            pair.a[idx] = nd.array(vals, device=pair.a.device) if op == "setitem" else vals
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
    return Pair(random_array(data, shape), device)


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


def _view_of_shape(data, shape, device):
    """A non-compact NDArray (a permuted, sliced or broadcast view) with the given shape, and its values."""
    kind = data.draw(st.sampled_from(["compact", "permuted", "sliced", "broadcast"]), label="view kind")
    if kind == "compact":
        x = random_array(data, shape)
        return nd.array(x, device=device), x
    if kind == "permuted":
        axes = list(data.draw(st.permutations(range(len(shape))), label="perm"))
        inverse = list(np.argsort(axes))
        src = random_array(data, tuple(shape[i] for i in axes))  # src.transpose(inverse) has `shape`
        return nd.array(src, device=device).permute(inverse), src.transpose(inverse)
    if kind == "sliced":
        src = random_array(data, tuple(2 * d + 1 for d in shape))
        idx = tuple(slice(1, 2 * d + 1, 2) for d in shape)
        return nd.array(src, device=device)[idx], src[idx]
    src = random_array(data, tuple(1 if i % 2 else d for i, d in enumerate(shape)))
    return nd.array(src, device=device).broadcast_to(shape), np.broadcast_to(src, shape)


BINARY = {
    "add": (lambda p, q: p + q, lambda p, q: p + q),
    "sub": (lambda p, q: p - q, lambda p, q: p - q),
    "mul": (lambda p, q: p * q, lambda p, q: p * q),
    "div": (lambda p, q: p / q, lambda p, q: p / q),
    "maximum": (lambda p, q: p.maximum(q), np.maximum),
    "eq": (lambda p, q: p == q, lambda p, q: (p == q).astype(np.float32)),
    "ge": (lambda p, q: p >= q, lambda p, q: (p >= q).astype(np.float32)),
    "lt": (lambda p, q: p < q, lambda p, q: (p < q).astype(np.float32)),
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


@SETTINGS
@given(st.data())
def test_elementwise_on_random_views(data):
    device = data.draw(device_st, label="device")
    shape = data.draw(shape_st, label="shape")
    a, x = _view_of_shape(data, shape, device)
    b, y = _view_of_shape(data, shape, device)
    name = data.draw(st.sampled_from(sorted(BINARY)), label="binary")
    nd_fn, np_fn = BINARY[name]
    if name == "div":
        y = np.where(np.abs(y) < 0.1, np.float32(0.5), y)
        b = nd.array(y, device=device)
    out = nd_fn(a, b)
    assert out.is_compact()
    np.testing.assert_allclose(out.numpy(), np_fn(x, y), rtol=1e-6, atol=1e-6)
    uname = data.draw(st.sampled_from(sorted(UNARY)), label="unary")
    nd_u, np_u = UNARY[uname]
    np.testing.assert_allclose(nd_u(a).numpy(), np_u(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.numpy(), x)  # inputs are never modified


@SETTINGS
@given(st.data())
def test_reductions_on_random_views(data):
    device = data.draw(device_st, label="device")
    shape = data.draw(shape_st, label="shape")
    a, x = _view_of_shape(data, shape, device)
    axes = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                               st.sets(st.integers(0, len(shape) - 1), min_size=1).map(tuple)), label="axes")
    keepdims = data.draw(st.booleans(), label="keepdims")
    for name in ["sum", "max"]:
        out = getattr(nd, name)(a, axis=axes, keepdims=keepdims)
        expected = getattr(np, name)(x, axis=axes, keepdims=keepdims)
        assert out.shape == expected.shape
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    if not isinstance(axes, tuple):
        out = nd.argmax(a, axis=axes, keepdims=keepdims) if axes is not None else nd.argmax(a)
        expected = np.argmax(x, axis=axes, keepdims=keepdims and axes is not None)
        np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


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
    x = random_array(data, shape)
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
    pair = Pair(random_array(data, shape), device)
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
    vals = random_array(data, target.shape)
    pair.a[idx] = nd.array(vals, device=device)
    target[...] = vals
    assert pair.base_a._handle.ptr() == p
    np.testing.assert_array_equal(pair.base_a.numpy(), pair.base_x)
    np.testing.assert_array_equal(pair.a.numpy(), pair.x)
