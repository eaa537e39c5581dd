"""Unit tests for the NDArray layer (needle.backend_ndarray) on both host devices.

Every value is checked against numpy computing the same thing; layout facts
(strides in elements, shared buffers, compactness) against the spec (§4).
"""
import numpy as np
import pytest

from needle import backend_ndarray as nd

DEVICES = [nd.cpu(), nd.cpu_numpy()]
DEVICE_IDS = ["cpu", "cpu_numpy"]


@pytest.fixture(params=DEVICES, ids=DEVICE_IDS)
def device(request):
    return request.param


def rand(*shape, dtype=np.float32):
    return np.asarray(np.random.randn(*shape), dtype=dtype)


def elem_strides(a: np.ndarray):
    return tuple(s // a.itemsize for s in a.strides)


def ptr(a):
    return a._handle.ptr()


def check(nd_arr, np_arr, rtol=1e-5, atol=1e-6):
    """Same shape and (nearly) the same values."""
    assert isinstance(nd_arr, nd.NDArray)
    assert nd_arr.shape == np_arr.shape
    np.testing.assert_allclose(nd_arr.numpy(), np_arr, rtol=rtol, atol=atol)


# --- devices -----------------------------------------------------------------------------


def test_device_names_and_repr():
    assert str(nd.cpu()) == "cpu()" and repr(nd.cpu()) == "cpu()"
    assert str(nd.cpu_numpy()) == "cpu_numpy()"
    assert str(nd.cuda()) == "cuda()"
    assert nd.cpu().name == "cpu" and nd.cpu_numpy().name == "cpu_numpy"


def test_cuda_is_disabled_and_does_not_raise():
    dev = nd.cuda()
    assert dev.enabled() is False
    assert dev.name == "cuda"
    assert not hasattr(dev, "matmul_tiled")


def test_device_equality_and_hash():
    assert nd.cpu() == nd.cpu()
    assert nd.cpu_numpy() == nd.cpu_numpy()
    assert nd.cpu() != nd.cpu_numpy()
    assert nd.cpu() != "cpu" and nd.cpu() != None  # noqa: E711  (no exception either)
    assert nd.BackendDevice("cpu", None) == nd.cpu()
    assert hash(nd.cpu()) == hash(nd.BackendDevice("cpu", nd.cpu().mod))
    assert len({nd.cpu(), nd.cpu(), nd.cpu_numpy()}) == 2


def test_all_and_default_devices():
    assert nd.all_devices() == [nd.cpu(), nd.cuda(), nd.cpu_numpy()]
    assert nd.default_device() in (nd.cpu(), nd.cpu_numpy())
    assert nd.array(np.ones(2)).device == nd.default_device()


def test_device_delegates_to_kernel_module():
    assert hasattr(nd.cpu(), "matmul_tiled")
    assert nd.cpu().__tile_size__ == 8
    assert nd.cpu().__device_name__ == "cpu"
    assert nd.cpu_numpy().__device_name__ == "numpy"
    for dev in DEVICES:
        assert dev.enabled()
        for name in ["Array", "to_numpy", "from_numpy", "fill", "compact", "ewise_setitem",
                     "scalar_setitem", "ewise_add", "scalar_add", "ewise_mul", "scalar_mul",
                     "ewise_div", "scalar_div", "scalar_power", "ewise_maximum", "scalar_maximum",
                     "ewise_eq", "scalar_eq", "ewise_ge", "scalar_ge", "ewise_log", "ewise_exp",
                     "ewise_tanh", "matmul", "reduce_max", "reduce_sum"]:
            assert callable(getattr(dev, name)), name


def test_kernel_array_buffer(device):
    buf = device.Array(7)
    assert buf.size == 7
    assert isinstance(buf.ptr(), int) and buf.ptr() != 0
    assert buf.ptr() == buf.ptr()
    assert device.Array(7).ptr() != buf.ptr()


def test_device_randn_and_rand_use_numpy_global_rng(device):
    np.random.seed(5)
    expected = np.random.randn(3, 4)
    np.random.seed(5)
    got = device.randn(3, 4)
    assert got.device == device and got.dtype == "float32"
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.random.seed(6)
    expected = np.random.rand(2, 5)
    np.random.seed(6)
    np.testing.assert_allclose(device.rand(2, 5).numpy(), expected, rtol=1e-6)


def test_device_one_hot_full_empty(device):
    idx = np.array([[0, 3], [2, 2], [1, 0]])
    oh = device.one_hot(4, idx)
    check(oh, np.eye(4)[idx])
    f = device.full((2, 3), 2.5)
    check(f, np.full((2, 3), 2.5))
    e = device.empty((4, 2))
    assert e.shape == (4, 2) and e.device == device and e.is_compact()


# --- construction and conversion ------------------------------------------------------------


def test_from_numpy_is_a_float32_copy(device):
    src = np.random.randn(3, 4)  # float64 input
    a = nd.array(src, device=device)
    assert a.dtype == "float32" and a.numpy().dtype == np.float32
    assert a.device == device
    assert a.shape == (3, 4) and a.ndim == 2 and a.size == 12 and len(a) == 3
    assert a.strides == (4, 1)
    np.testing.assert_allclose(a.numpy(), src.astype(np.float32))
    src[0, 0] = 100.0  # the NDArray holds its own copy
    assert a.numpy()[0, 0] != 100.0


def test_from_non_contiguous_numpy(device):
    src = rand(4, 6)[::2, ::-1].T
    check(nd.array(src, device=device), src)


def test_from_lists_ints_and_bools_become_float32(device):
    """Without dtype=, anything that is not an NDArray is stored as float32 (the course's rule)."""
    check(nd.NDArray([[1, 2], [3, 4]], device=device), np.array([[1, 2], [3, 4]], dtype=np.float32))
    ints = nd.array(np.arange(6).reshape(2, 3), device=device)
    assert ints.dtype == "float32"
    check(ints, np.arange(6).reshape(2, 3).astype(np.float32))
    bools = nd.array(np.array([True, False, True]), device=device)
    assert bools.dtype == "float32"
    check(bools, np.array([1.0, 0.0, 1.0]))


def test_int64_and_bool_storage_when_asked(device):
    ints = nd.array(np.arange(6).reshape(2, 3), dtype="int64", device=device)
    assert ints.dtype == "int64"
    np.testing.assert_array_equal(ints.numpy(), np.arange(6).reshape(2, 3))
    assert ints.numpy().dtype == np.int64
    big = nd.array(np.array([2**53 + 1, -(2**62)]), dtype="int64", device=device)
    assert big.numpy().tolist() == [2**53 + 1, -(2**62)]  # no trip through float
    bools = nd.array(np.array([True, False, True]), dtype="bool", device=device)
    assert bools.dtype == "bool" and bools.numpy().dtype == np.bool_
    np.testing.assert_array_equal(bools.numpy(), [True, False, True])
    for spec in [np.int32, np.uint8, "int16"]:  # every integer type is stored as int64
        assert nd.array(np.ones(2), dtype=spec, device=device).dtype == "int64"


def test_zero_dim_array_keeps_shape(device):
    a = nd.array(np.array(2.5), device=device)
    assert a.shape == () and a.ndim == 0 and a.size == 1 and a.strides == ()
    assert a.numpy().shape == () and float(a.numpy()) == 2.5
    check(a + 1, np.array(3.5))
    check(nd.array(1.5, device=device), np.array(1.5))
    check(a.sum(), np.array([2.5]))
    check(nd.sum(a), np.array(2.5))


def test_numpy_returns_a_copy(device):
    a = nd.array(np.ones((2, 2)), device=device)
    out = a.numpy()
    out[0, 0] = 7.0
    assert a.numpy()[0, 0] == 1.0


def test_array_protocol(device):
    src = rand(2, 3)
    a = nd.array(src, device=device)
    np.testing.assert_allclose(np.asarray(a), src)
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), src.astype(np.float64))


def test_ndarray_copy_constructor_and_to(device):
    src = rand(3, 2)
    a = nd.array(src, device=device)
    b = nd.NDArray(a)
    assert ptr(b) != ptr(a) and b.device == device
    check(b, src)
    other = nd.cpu_numpy() if device == nd.cpu() else nd.cpu()
    c = a.to(other)
    assert c.device == other and ptr(c) != ptr(a)
    check(c, src)
    assert a.to(device) is a
    d = nd.NDArray(a, device=other)
    assert d.device == other
    check(d, src)


def test_copy_of_a_view_only_copies_the_view(device):
    src = rand(4, 5)
    a = nd.array(src, device=device)
    b = nd.NDArray(a[1:3, ::2])
    assert b.is_compact() and ptr(b) != ptr(a)
    check(b, src[1:3, ::2])


def test_repr_and_str_show_values(device):
    a = nd.array(np.array([[1.5, -2.0]]), device=device)
    assert str(a) == str(np.array([[1.5, -2.0]], dtype=np.float32))
    assert "1.5" in repr(a) and str(device) in repr(a)


def test_fill_in_place(device):
    a = nd.array(rand(3, 3), device=device)
    p = ptr(a)
    a.fill(4.0)
    assert ptr(a) == p
    check(a, np.full((3, 3), 4.0))
    # filling a view writes through to the base only inside the view
    a[1:, 1:].fill(-1.0)
    expected = np.full((3, 3), 4.0)
    expected[1:, 1:] = -1.0
    check(a, expected)


def test_make_and_compact_strides(device):
    for shape in [(), (5,), (2, 3), (4, 1, 3), (2, 3, 4, 5)]:
        assert nd.NDArray.compact_strides(shape) == elem_strides(np.empty(shape, dtype=np.float32))
    a = nd.NDArray.make((2, 3), device=device)
    assert a.shape == (2, 3) and a.strides == (3, 1) and a._offset == 0 and a.device == device
    assert a._handle.size == 6
    b = nd.NDArray.make((3,), strides=(2,), device=device, handle=a._handle, offset=1)
    assert ptr(b) == ptr(a)
    a.fill(0.0)
    a[0, 1] = 1.0
    a[1, 0] = 2.0
    a[1, 2] = 3.0
    check(b, np.array([1.0, 2.0, 3.0]))


# --- dtypes --------------------------------------------------------------------------------


def test_float64_storage_keeps_precision(device):
    src = np.array([1.0 + 1e-12, 2.0, 3.0])
    a = nd.array(src, dtype="float64", device=device)
    assert a.dtype == "float64"
    assert a.numpy().dtype == np.float64
    assert a.numpy()[0] == src[0]  # would round to 1.0 in float32
    np.testing.assert_array_equal((a * 2).numpy(), src * 2)
    assert (a + a).dtype == "float64" and a.sum().dtype == "float64" and a.exp().dtype == "float64"
    assert a[1:].dtype == "float64" and a.reshape((3, 1)).dtype == "float64"


def test_float64_from_numpy_dtype_objects(device):
    for spec in [np.float64, np.dtype("float64"), "float64"]:
        assert nd.array(np.ones(2), dtype=spec, device=device).dtype == "float64"
    for spec in [None, np.float32, "float32", np.float16]:
        assert nd.array(np.ones(2), dtype=spec, device=device).dtype == "float32"


def test_float64_matmul_and_reductions_are_double_precision(device):
    x = np.random.randn(20, 30)
    y = np.random.randn(30, 10)
    a = nd.array(x, dtype="float64", device=device)
    b = nd.array(y, dtype="float64", device=device)
    np.testing.assert_allclose((a @ b).numpy(), x @ y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.sum(axis=1).numpy(), x.sum(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a.max(axis=0).numpy(), x.max(axis=0))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "matmul", "eq", "ge"])
def test_float32_float64_promote_to_float64(device, op):
    x, y = np.random.randn(4, 4), np.random.randn(4, 4)
    a32 = nd.array(x, device=device)
    b64 = nd.array(y, dtype="float64", device=device)
    fn = {
        "add": lambda p, q: p + q,
        "sub": lambda p, q: p - q,
        "mul": lambda p, q: p * q,
        "div": lambda p, q: p / q,
        "maximum": lambda p, q: p.maximum(q) if isinstance(p, nd.NDArray) else np.maximum(p, q),
        "matmul": lambda p, q: p @ q,
        "eq": lambda p, q: p == q,
        "ge": lambda p, q: p >= q,
    }[op]
    for lhs, rhs, nl, nr in [(a32, b64, x.astype(np.float32), y), (b64, a32, y, x.astype(np.float32))]:
        out = fn(lhs, rhs)
        expected = fn(nl, nr)
        if op in ("eq", "ge"):  # compared in float64, the answer is bool
            assert out.dtype == "bool" and expected.dtype == np.bool_
        else:
            assert out.dtype == "float64"
            assert expected.dtype == np.float64  # numpy agrees on the promotion
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_scalar_ops_keep_the_array_dtype(device):
    a = nd.array(np.ones(3), device=device)
    assert (a + 1.5).dtype == "float32" and (a * np.float64(2)).dtype == "float32"
    b = nd.array(np.ones(3), dtype="float64", device=device)
    assert (b + 1).dtype == "float64" and (b ** 2).dtype == "float64"


def test_astype(device):
    src = np.random.randn(3, 2)
    a = nd.array(src, device=device)
    b = a.astype("float64")
    assert b.dtype == "float64" and a.dtype == "float32" and ptr(b) != ptr(a)
    np.testing.assert_array_equal(b.numpy(), src.astype(np.float32).astype(np.float64))
    c = b.astype(np.float32)
    assert c.dtype == "float32"
    np.testing.assert_array_equal(c.numpy(), src.astype(np.float32))
    assert a.astype("float32").dtype == "float32"


# --- views: reshape, permute, broadcast_to, getitem ------------------------------------------


@pytest.mark.parametrize(
    "shape,new_shape",
    [((12,), (3, 4)), ((3, 4), (2, 6)), ((2, 3, 4), (4, 6)), ((2, 3, 4), (24,)), ((6,), (1, 6, 1)),
     ((2, 3, 4), (2, -1)), ((4, 6), (-1,)), ((1,), ())],
)
def test_reshape_is_a_view_with_numpy_strides(device, shape, new_shape):
    src = rand(*shape)
    a = nd.array(src, device=device)
    b = a.reshape(new_shape)
    expected = src.reshape(new_shape)
    check(b, expected)
    assert b.strides == elem_strides(expected)
    assert ptr(b) == ptr(a)
    assert b.is_compact()


def test_reshape_accepts_an_int_and_list(device):
    a = nd.array(rand(2, 3), device=device)
    assert a.reshape(6).shape == (6,)
    assert a.reshape([3, 2]).shape == (3, 2)


def test_reshape_writes_through(device):
    a = nd.array(np.zeros((2, 3)), device=device)
    v = a.reshape((3, 2))
    v[2, 1] = 5.0
    expected = np.zeros((2, 3))
    expected[1, 2] = 5.0
    check(a, expected)


@pytest.mark.parametrize("shape,axes", [((3, 4), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((2, 3, 4, 5), (3, 1, 0, 2)),
                                        ((2, 3, 4), (0, 1, 2)), ((4, 1, 3), (1, 2, 0))])
def test_permute_is_a_view_with_numpy_strides(device, shape, axes):
    src = rand(*shape)
    a = nd.array(src, device=device)
    b = a.permute(axes)
    expected = src.transpose(axes)
    check(b, expected)
    assert b.strides == elem_strides(expected)
    assert ptr(b) == ptr(a)
    assert b.is_compact() == (axes == tuple(range(len(axes))))


def test_permute_negative_axes_and_transpose(device):
    src = rand(2, 3, 4)
    a = nd.array(src, device=device)
    check(a.permute((-1, 0, 1)), src.transpose((2, 0, 1)))
    check(a.transpose(), src.transpose())
    check(a.transpose((1, 0, 2)), src.transpose((1, 0, 2)))
    check(a.swapaxes(0, 2), src.swapaxes(0, 2))
    check(nd.transpose(a, (2, 1, 0)), np.transpose(src, (2, 1, 0)))
    check(nd.swapaxes(a, -1, 0), np.swapaxes(src, -1, 0))


@pytest.mark.parametrize(
    "shape,new_shape",
    [((1, 3), (4, 3)), ((3, 1), (3, 5)), ((1,), (6,)), ((2, 1, 4), (2, 3, 4)), ((1, 1), (2, 3)),
     ((3,), (2, 3)), ((4, 1), (2, 4, 3)), ((2, 3), (2, 3)), ((), (2, 2))],
)
def test_broadcast_to_is_a_zero_stride_view(device, shape, new_shape):
    src = rand(*shape)
    a = nd.array(src, device=device)
    b = a.broadcast_to(new_shape)
    expected = np.broadcast_to(src, new_shape)
    check(b, expected)
    assert b.strides == elem_strides(expected)
    assert ptr(b) == ptr(a)
    check(nd.broadcast_to(a, list(new_shape)), expected)


def test_broadcast_view_sees_later_writes(device):
    a = nd.array(np.zeros((1, 3)), device=device)
    b = a.broadcast_to((4, 3))
    a[0, 1] = 2.0
    check(b, np.broadcast_to(np.array([[0.0, 2.0, 0.0]]), (4, 3)))


GETITEM_CASES = [
    (slice(None), slice(None)),
    (1, 2),
    (slice(1, 3), slice(2, 5)),
    (slice(None, None, 2), slice(1, None, 3)),
    (slice(0, 4, 3), 4),
    (-1, slice(None, -1)),
    (slice(2, 100), slice(-3, None)),
    (slice(3, 1), slice(None)),  # empty
    (slice(1, 4, 2), slice(0, 6, 5)),
]


@pytest.mark.parametrize("idx", GETITEM_CASES, ids=[str(i) for i in range(len(GETITEM_CASES))])
def test_getitem_views_match_numpy(device, idx):
    src = rand(4, 6)
    a = nd.array(src, device=device)
    v = a[idx]
    np_idx = tuple(slice(i, (i + 1) or None) if isinstance(i, int) else i for i in idx)
    expected = src[np_idx]
    check(v, expected)
    assert v.shape == expected.shape  # ints keep their axis
    if expected.size:
        assert v.strides == elem_strides(expected)
    assert ptr(v) == ptr(a)


def test_getitem_3d_strides_and_offset(device):
    src = rand(4, 5, 6)
    a = nd.array(src, device=device)
    v = a[1:3, 0, ::2]
    expected = src[1:3, 0:1, ::2]
    check(v, expected)
    assert v.strides == elem_strides(expected)
    assert v._offset == 1 * 30
    assert not v.is_compact()
    w = a[2, 3, 4]
    assert w.shape == (1, 1, 1)
    check(w, src[2:3, 3:4, 4:5])
    assert w._offset == 2 * 30 + 3 * 6 + 4


def test_getitem_fewer_indices_and_ellipsis(device):
    src = rand(3, 4, 5)
    a = nd.array(src, device=device)
    check(a[1], src[1:2])
    check(a[1:, 2], src[1:, 2:3])
    check(a[..., 1], src[..., 1:2])
    check(a[0, ..., 2:4], src[0:1, ..., 2:4])


def test_getitem_of_a_permuted_view(device):
    src = rand(3, 4, 5)
    a = nd.array(src, device=device).permute((2, 0, 1))
    v = a[1:4:2, 2, ::3]
    expected = src.transpose((2, 0, 1))[1:4:2, 2:3, ::3]
    check(v, expected)
    assert v.strides == elem_strides(expected)


def test_process_slice(device):
    a = nd.array(rand(5, 7), device=device)
    assert a.process_slice(slice(None), 1) == slice(0, 7, 1)
    assert a.process_slice(slice(1, None, 2), 0) == slice(1, 5, 2)
    assert a.process_slice(slice(None, -2), 1) == slice(0, 5, 1)
    assert a.process_slice(slice(-3, None), 1) == slice(4, 7, 1)  # numpy semantics for a negative start
    assert a.process_slice(slice(2, 100), 0) == slice(2, 5, 1)


def test_is_compact_and_compact(device):
    src = rand(4, 6)
    a = nd.array(src, device=device)
    assert a.is_compact() and a.compact() is a
    views = {
        "slice": (a[1:3, :], src[1:3, :]),
        "step": (a[:, ::2], src[:, ::2]),
        "permute": (a.permute((1, 0)), src.T),
        "broadcast": (a[0:1, :].broadcast_to((3, 6)), np.broadcast_to(src[0:1], (3, 6))),
        "last row": (a[3, :], src[3:4, :]),  # compact strides but an offset and a smaller extent
    }
    for name, (view, expected) in views.items():
        assert not view.is_compact(), name
        c = view.compact()
        assert c.is_compact(), name
        assert ptr(c) != ptr(a), name
        assert c.strides == nd.NDArray.compact_strides(c.shape), name
        check(c, np.ascontiguousarray(expected))
    check(a, src)  # compacting views left the base alone


def test_compact_six_dims(device):
    src = rand(2, 3, 2, 3, 2, 3)
    a = nd.array(src, device=device)
    axes = (5, 3, 1, 0, 2, 4)
    v = a.permute(axes)[:, 1:, :, ::2, :, 1]
    check(v.compact(), np.ascontiguousarray(src.transpose(axes)[:, 1:, :, ::2, :, 1:2]))


def test_as_strided(device):
    src = np.arange(10, dtype=np.float32)
    a = nd.array(src, device=device)
    v = nd.as_strided(a, (4, 3), (2, 1))
    assert ptr(v) == ptr(a)
    check(v, np.lib.stride_tricks.as_strided(src, (4, 3), (8, 4)))


# --- setitem ----------------------------------------------------------------------------------


def test_setitem_array_in_place(device):
    src = rand(4, 5)
    a = nd.array(src, device=device)
    p = ptr(a)
    vals = rand(2, 3)
    a[1:3, 2:5] = nd.array(vals, device=device)
    src[1:3, 2:5] = vals
    assert ptr(a) == p
    assert a.strides == (5, 1) and a.is_compact()
    check(a, src)


def test_setitem_scalar_in_place(device):
    src = rand(4, 5)
    a = nd.array(src, device=device)
    p = ptr(a)
    a[::2, 1] = -3.0
    src[::2, 1:2] = -3.0
    a[3, 4] = np.float64(9.0)
    src[3, 4] = 9.0
    assert ptr(a) == p
    check(a, src)


def test_setitem_from_non_compact_source(device):
    src = rand(3, 4)
    other = rand(4, 3)
    a = nd.array(src, device=device)
    b = nd.array(other, device=device)
    a[:, :] = b.permute((1, 0))
    check(a, other.T)
    a[0:2, 1:3] = b[::2, 1:]
    expected = other.T.copy()
    expected[0:2, 1:3] = other[::2, 1:]
    check(a, expected)
    check(b, other)


def test_setitem_into_a_permuted_view_writes_the_base(device):
    src = rand(3, 4)
    a = nd.array(src, device=device)
    t = a.permute((1, 0))
    vals = rand(2, 3)
    t[1:3, :] = nd.array(vals, device=device)
    src.T[1:3, :] = vals
    check(a, src)


def test_setitem_broadcasts_and_reshapes_source(device):
    a = nd.array(np.zeros((3, 4)), device=device)
    a[:, :] = nd.array(np.arange(4.0).reshape(1, 4), device=device)  # broadcast
    check(a, np.broadcast_to(np.arange(4.0), (3, 4)))
    a[1, :] = nd.array(np.full(4, 7.0), device=device)  # (4,) into a (1, 4) view
    expected = np.broadcast_to(np.arange(4.0), (3, 4)).copy()
    expected[1] = 7.0
    check(a, expected)
    a[2, :] = np.array([1.0, 2.0, 3.0, 4.0])  # numpy arrays are accepted too
    expected[2] = [1, 2, 3, 4]
    check(a, expected)


def test_setitem_float64_source_into_float32(device):
    a = nd.array(np.zeros(3), device=device)
    a[0:2] = nd.array(np.array([1.5, 2.5]), dtype="float64", device=device)
    assert a.dtype == "float32"
    check(a, np.array([1.5, 2.5, 0.0]))


def test_flat_plus_equals_modifies_in_place(device):
    """hw1-style finite differences: `arr.flat[j] += eps` on a fresh array."""
    src = rand(3, 4)
    a = nd.array(src, device=device)
    p = ptr(a)
    for j in [0, 5, 11]:
        a.flat[j] += 0.25
        src.flat[j] += np.float32(0.25)
    assert ptr(a) == p
    check(a, src)
    assert a.flat.shape == (12,) and ptr(a.flat) == p


# --- elementwise -------------------------------------------------------------------------------

BINARY = {
    "add": (lambda x, y: x + y, lambda x, y: x + y),
    "sub": (lambda x, y: x - y, lambda x, y: x - y),
    "mul": (lambda x, y: x * y, lambda x, y: x * y),
    "div": (lambda x, y: x / y, lambda x, y: x / y),
    "maximum": (lambda x, y: x.maximum(y), np.maximum),
    "nd.maximum": (lambda x, y: nd.maximum(x, y), np.maximum),
    "eq": (lambda x, y: x == y, lambda x, y: x == y),
    "ne": (lambda x, y: x != y, lambda x, y: x != y),
    "ge": (lambda x, y: x >= y, lambda x, y: x >= y),
    "gt": (lambda x, y: x > y, lambda x, y: x > y),
    "le": (lambda x, y: x <= y, lambda x, y: x <= y),
    "lt": (lambda x, y: x < y, lambda x, y: x < y),
}


def _operands():
    x = np.round(np.random.randn(3, 4, 5), 1).astype(np.float32)  # rounding makes ties likely
    y = np.round(np.random.randn(3, 4, 5), 1).astype(np.float32)
    y[0, 0] = x[0, 0]
    y[np.abs(y) < 0.05] = 0.5
    return x, y


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_ewise(device, name):
    nd_fn, np_fn = BINARY[name]
    x, y = _operands()
    a, b = nd.array(x, device=device), nd.array(y, device=device)
    out = nd_fn(a, b)
    expected = np_fn(x, y)
    assert out.is_compact() and out.dtype == ("bool" if expected.dtype == np.bool_ else "float32")
    check(out, expected)
    check(a, x)  # inputs untouched
    check(b, y)


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_scalar(device, name):
    nd_fn, np_fn = BINARY[name]
    x, _ = _operands()
    a = nd.array(x, device=device)
    for s in [0.5, -1, x.flat[3].item(), np.float32(2.0)]:
        check(nd_fn(a, s), np_fn(x, np.float32(s)))


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_on_non_compact_views(device, name):
    nd_fn, np_fn = BINARY[name]
    x, y = _operands()
    a = nd.array(x, device=device).permute((2, 0, 1))[1:, :, ::2]
    b = nd.array(np.ascontiguousarray(y.transpose((2, 0, 1))), device=device)[1:, :, ::2]
    expected = np_fn(x.transpose((2, 0, 1))[1:, :, ::2], y.transpose((2, 0, 1))[1:, :, ::2])
    check(nd_fn(a, b), expected)
    bc = nd.array(x[:1], device=device).broadcast_to((3, 4, 5))
    check(nd_fn(bc, nd.array(y, device=device)), np_fn(np.broadcast_to(x[:1], (3, 4, 5)), y))


def test_reflected_scalar_ops(device):
    x = np.random.rand(2, 3).astype(np.float32) + 0.5
    a = nd.array(x, device=device)
    check(2 + a, 2 + x)
    check(2 - a, 2 - x)
    check(3 * a, 3 * x)
    check(1 / a, 1 / x)
    check(np.float32(2) - a, 2 - x)  # numpy scalars defer to NDArray
    check(np.float64(3) * a, 3 * x)
    check(-a, -x)


def test_power_scalar(device):
    x = np.random.rand(3, 4).astype(np.float32) + 0.1
    a = nd.array(x, device=device)
    for p in [2, 3, 0.5, -1, 0, 1.5, np.int64(2)]:
        check(a ** p, x ** np.float32(p), rtol=1e-5)


@pytest.mark.parametrize("fn", ["log", "exp", "tanh"])
def test_unary(device, fn):
    x = np.random.rand(4, 5).astype(np.float32) + 0.1
    a = nd.array(x, device=device)
    expected = getattr(np, fn)(x)
    check(getattr(a, fn)(), expected)
    check(getattr(nd, fn)(a), expected)
    view = a.permute((1, 0))[::2]
    check(getattr(view, fn)(), getattr(np, fn)(x.T[::2]))


def test_comparisons_with_float64(device):
    x = np.array([1.0, 2.0, 3.0])
    a = nd.array(x, dtype="float64", device=device)
    check(a == 2.0, np.array([0.0, 1.0, 0.0]))
    check(a >= 2.0, np.array([0.0, 1.0, 1.0]))
    check(a < 2.0, np.array([1.0, 0.0, 0.0]))


# --- reductions ------------------------------------------------------------------------------

REDUCE_CASES = [((10,), 0), ((4, 5, 6), 0), ((4, 5, 6), 1), ((4, 5, 6), 2), ((4, 5, 6), -1),
                ((4, 5, 6), (0, 2)), ((4, 5, 6), (1,)), ((4, 5, 6), [2, 0]), ((3, 4), (0, 1)),
                ((2, 3, 4, 5), (1, 3))]


@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axis", REDUCE_CASES)
def test_reduce_axis(device, reduce, keepdims, shape, axis):
    x = rand(*shape)
    a = nd.array(x, device=device)
    out = getattr(a, reduce)(axis=axis, keepdims=keepdims)
    np_axis = tuple(axis) if isinstance(axis, list) else axis
    expected = getattr(np, reduce)(x, axis=np_axis, keepdims=keepdims)
    check(out, expected, rtol=1e-5, atol=1e-5)
    check(getattr(nd, reduce)(a, axis=axis, keepdims=keepdims), expected, rtol=1e-5, atol=1e-5)
    check(a, x)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_reduce_all(device, reduce):
    x = rand(3, 4, 5)
    a = nd.array(x, device=device)
    expected = getattr(np, reduce)(x)
    check(getattr(a, reduce)(), np.array([expected]), rtol=1e-5, atol=1e-5)  # method: shape (1,)
    check(getattr(nd, reduce)(a), np.array(expected), rtol=1e-5, atol=1e-5)  # function: shape ()
    check(getattr(a, reduce)(keepdims=True), getattr(np, reduce)(x, keepdims=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_reduce_non_compact(device, reduce):
    x = rand(4, 5, 6)
    v = nd.array(x, device=device).permute((2, 0, 1))[::2, 1:, :]
    xv = x.transpose((2, 0, 1))[::2, 1:, :]
    for axis in [0, 1, 2, (0, 2)]:
        check(getattr(v, reduce)(axis=axis), getattr(np, reduce)(xv, axis=axis), rtol=1e-5, atol=1e-5)
    bc = nd.array(x[:, :1], device=device).broadcast_to((4, 5, 6))
    check(getattr(bc, reduce)(axis=1), getattr(np, reduce)(np.broadcast_to(x[:, :1], (4, 5, 6)), axis=1),
          rtol=1e-5, atol=1e-5)


def test_argmax(device):
    x = np.round(rand(4, 5, 6), 0)  # ties: the first maximum wins, like numpy
    a = nd.array(x, device=device)
    for axis in [0, 1, 2, -1]:
        check(a.argmax(axis=axis), np.argmax(x, axis=axis).astype(np.float32))
        check(a.argmax(axis=axis, keepdims=True), np.argmax(x, axis=axis, keepdims=True).astype(np.float32))
    check(nd.argmax(a), np.array(np.argmax(x), dtype=np.float32))
    check(a.argmax(), np.array([np.argmax(x)], dtype=np.float32))
    check(a.permute((1, 2, 0)).argmax(axis=2), np.argmax(x.transpose((1, 2, 0)), axis=2).astype(np.float32))


def test_sum_of_empty_axis_is_zero(device):
    a = nd.array(np.zeros((0, 3)), device=device)
    check(a.sum(axis=0), np.zeros(3))
    check(a.sum(axis=1), np.zeros(0))


# --- matmul ----------------------------------------------------------------------------------

MATMUL_DIMS = [(16, 16, 16), (8, 8, 8), (1, 2, 3), (3, 4, 5), (5, 4, 3), (16, 16, 32), (64, 64, 64),
               (72, 72, 72), (72, 73, 74), (74, 73, 72), (128, 128, 128), (1, 1, 1), (7, 9, 15),
               (8, 16, 24), (9, 8, 8), (8, 9, 8), (8, 8, 9), (33, 1, 17)]


@pytest.mark.parametrize("m,n,p", MATMUL_DIMS)
def test_matmul_2d(device, m, n, p):
    x, y = rand(m, n), rand(n, p)
    a, b = nd.array(x, device=device), nd.array(y, device=device)
    out = a @ b
    assert out.shape == (m, p) and out.is_compact()
    check(out, x @ y, rtol=1e-4, atol=1e-4)
    check(nd.matmul(a, b), x @ y, rtol=1e-4, atol=1e-4)
    check(a, x)
    check(b, y)


@pytest.mark.parametrize("m,n,p", [(8, 8, 8), (16, 24, 8), (5, 7, 3)])
def test_matmul_non_compact_operands(device, m, n, p):
    x, y = rand(n, m), rand(p + 2, n)
    a = nd.array(x, device=device).permute((1, 0))
    b = nd.array(y, device=device)[1 : p + 1, :].permute((1, 0))
    check(a @ b, x.T @ y[1 : p + 1].T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "sa,sb",
    [((2, 3, 4), (2, 4, 5)), ((6, 6, 5, 4), (6, 6, 4, 3)), ((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)),
     ((3, 1, 2, 4), (5, 4, 3)), ((1, 3, 4), (7, 4, 2)), ((4,), (4, 3)), ((2, 3), (3,)), ((5,), (5,)),
     ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((2, 8, 8), (2, 8, 16))],
)
def test_matmul_batched_and_1d(device, sa, sb):
    x, y = rand(*sa), rand(*sb)
    out = nd.array(x, device=device) @ nd.array(y, device=device)
    check(out, np.asarray(x @ y), rtol=1e-4, atol=1e-4)


def _batched_view_case(case, device):
    """(a, b) NDArray views and their numpy twins for a batched product over one layout."""
    r = np.random.RandomState(3)
    x, y = r.randn(4, 6, 3 * 5).astype(np.float32), r.randn(4, 6, 3 * 5).astype(np.float32)
    a, b = nd.array(x, device=device), nd.array(y, device=device)
    heads = (4, 6, 3, 5)  # (B, T, H, d): attention splits its projection into heads
    if case == "heads":  # (B, H, T, d) @ (B, H, d, T): batch axes no single stride steps through
        return (a.reshape(heads).permute((0, 2, 1, 3)), b.reshape(heads).permute((0, 2, 3, 1)),
                x.reshape(heads).transpose(0, 2, 1, 3), y.reshape(heads).transpose(0, 2, 3, 1))
    if case == "heads-row-major-b":  # probabilities @ v: b's rows at the stride of all heads
        p = r.randn(4, 3, 6, 6).astype(np.float32)
        return (nd.array(p, device=device), b.reshape(heads).permute((0, 2, 1, 3)),
                p, y.reshape(heads).transpose(0, 2, 1, 3))
    if case == "transposed-a":  # p^T @ g, as attention's gradient of v
        p = r.randn(4, 3, 6, 6).astype(np.float32)
        return (nd.array(p, device=device).permute((0, 1, 3, 2)), b.reshape(heads).permute((0, 2, 1, 3)),
                p.transpose(0, 1, 3, 2), y.reshape(heads).transpose(0, 2, 1, 3))
    if case == "same-buffer":  # q @ q^T: one buffer read twice
        return (a.reshape(heads).permute((0, 2, 1, 3)), a.reshape(heads).permute((0, 2, 3, 1)),
                x.reshape(heads).transpose(0, 2, 1, 3), x.reshape(heads).transpose(0, 2, 3, 1))
    if case == "broadcast-batch":  # one matrix against every batch entry: batch stride 0
        w = r.randn(5, 7).astype(np.float32)
        return (a.reshape(heads).permute((0, 2, 1, 3)), nd.array(w, device=device).broadcast_to((4, 3, 5, 7)),
                x.reshape(heads).transpose(0, 2, 1, 3), np.broadcast_to(w, (4, 3, 5, 7)))
    assert case == "every-other-column"  # no unit stride in the matrix: copied first
    return a[:, :, ::2], b[:, :, :8].permute((0, 2, 1)), x[:, :, ::2], y[:, :, :8].transpose(0, 2, 1)


@pytest.mark.parametrize("case", ["heads", "heads-row-major-b", "transposed-a", "same-buffer", "broadcast-batch",
                                  "every-other-column"])
def test_matmul_batched_views(device, case):
    """Batched products of transposed, permuted, broadcast and strided views (read in place where
    BLAS can, copied where not) equal numpy's on the same values; the operands are untouched."""
    a, b, x, y = _batched_view_case(case, device)
    out = a @ b
    assert out.shape == np.matmul(x, y).shape and out.is_compact()
    check(out, np.matmul(x.astype(np.float64), y.astype(np.float64)), rtol=1e-5, atol=1e-5)
    check(a, x)
    check(b, y)


def _to_tiles(x, t):
    r, c = x.shape
    return np.ascontiguousarray(x.reshape(r // t, t, c // t, t).transpose(0, 2, 1, 3))


def _from_tiles(x):
    rt, ct, t, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(rt * t, ct * t)


@pytest.mark.parametrize("m,n,p", [(8, 8, 8), (16, 16, 16), (16, 24, 8), (8, 32, 16), (40, 16, 24), (64, 64, 64)])
def test_matmul_tiled_kernel(m, n, p):
    dev = nd.cpu()
    t = dev.__tile_size__
    x, y = rand(m, n), rand(n, p)
    a = nd.array(_to_tiles(x, t), device=dev)
    b = nd.array(_to_tiles(y, t), device=dev)
    out = nd.NDArray.make((m // t, p // t, t, t), device=dev)
    out.fill(12345.0)  # the kernel must overwrite whatever the buffer held
    dev.matmul_tiled(a._handle, b._handle, out._handle, m, n, p)
    np.testing.assert_allclose(_from_tiles(out.numpy()), x @ y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_from_tiles(a.numpy()), x)  # operands untouched


@pytest.mark.parametrize("m,n,p", [(3, 4, 5), (8, 8, 8)])
def test_matmul_kernel_directly(device, m, n, p):
    x, y = rand(m, n), rand(n, p)
    a, b = nd.array(x, device=device), nd.array(y, device=device)
    out = nd.NDArray.make((m, p), device=device)
    out.fill(np.nan)
    device.matmul(a._handle, b._handle, out._handle, m, n, p)
    np.testing.assert_allclose(out.numpy(), x @ y, rtol=1e-4, atol=1e-4)


# --- other kernels called directly ----------------------------------------------------------


def test_compact_kernel_with_negative_strides(device):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    a = nd.array(x, device=device)
    out = nd.NDArray.make((4, 3), device=device)
    # rows reversed, every second column: offset points at the last row
    device.compact(a._handle, out._handle, (4, 3), (-6, 2), 18)
    np.testing.assert_array_equal(out.numpy(), x[::-1, ::2])


def test_setitem_kernels(device):
    out = nd.array(np.zeros((3, 4)), device=device)
    src = nd.array(np.arange(4.0).reshape(2, 2), device=device)
    device.ewise_setitem(src._handle, out._handle, (2, 2), (4, 2), 1)
    expected = np.zeros((3, 4))
    expected[0:2, 1::2] = np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal(out.numpy(), expected)
    device.scalar_setitem(3, 9.0, out._handle, (3,), (4,), 0)
    expected[:, 0] = 9.0
    np.testing.assert_array_equal(out.numpy(), expected)


def test_reduce_kernels(device):
    x = rand(6)
    a = nd.array(x, device=device)
    out = nd.NDArray.make((2,), device=device)
    device.reduce_sum(a._handle, out._handle, 3)
    np.testing.assert_allclose(out.numpy(), x.reshape(2, 3).sum(axis=1), rtol=1e-6)
    device.reduce_max(a._handle, out._handle, 3)
    np.testing.assert_array_equal(out.numpy(), x.reshape(2, 3).max(axis=1))


def test_from_numpy_to_numpy_fill_kernels(device):
    buf = device.Array(6)
    device.from_numpy(np.arange(6, dtype=np.float64), buf)
    np.testing.assert_array_equal(device.to_numpy(buf, (2, 3), (1, 2), 0), np.arange(6.0).reshape(3, 2).T)
    device.fill(buf, 3.0)
    np.testing.assert_array_equal(device.to_numpy(buf, (6,), (1,), 0), np.full(6, 3.0))


# --- flip, pad -------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2), (-1,), 1, None, ()])
def test_flip(device, axes):
    x = rand(2, 3, 4)
    a = nd.array(x, device=device)
    out = a.flip(axes)
    expected = np.flip(x, axes)
    check(out, expected)
    assert out.is_compact() and ptr(out) != ptr(a)
    check(a, x)  # input unchanged
    check(nd.flip(a, axes), expected)


def test_flip_of_a_view(device):
    x = rand(4, 5)
    v = nd.array(x, device=device).permute((1, 0))[1:, ::2]
    check(v.flip((0, 1)), np.flip(x.T[1:, ::2], (0, 1)))


@pytest.mark.parametrize("widths", [((0, 0), (0, 0)), ((1, 1), (2, 2)), ((0, 3), (1, 0)), ((2, 0), (0, 0))])
def test_pad(device, widths):
    x = rand(3, 4)
    a = nd.array(x, device=device)
    out = a.pad(widths)
    check(out, np.pad(x, widths))
    assert out.is_compact() and ptr(out) != ptr(a)
    check(a, x)
    check(nd.pad(a, widths), np.pad(x, widths))


def test_pad_4d_of_a_view(device):
    x = rand(2, 3, 3, 2)
    v = nd.array(x, device=device).permute((0, 2, 1, 3))
    widths = ((0, 0), (1, 1), (2, 0), (0, 0))
    check(v.pad(widths), np.pad(x.transpose((0, 2, 1, 3)), widths))


# --- module-level helpers, rows, stack ----------------------------------------------------------


def test_full_empty_and_likes(device):
    check(nd.full((2, 3), 1.25, device=device), np.full((2, 3), 1.25))
    assert nd.full((2,), 1.0, dtype="float64", device=device).dtype == "float64"
    e = nd.empty((3, 2), device=device)
    assert e.shape == (3, 2) and e.device == device
    x = rand(2, 2)
    a = nd.array(x, device=device)
    check(nd.zeros_like(a), np.zeros((2, 2)))
    check(nd.ones_like(a), np.ones((2, 2)))
    check(nd.full_like(a, 4.0), np.full((2, 2), 4.0))
    assert nd.empty_like(a).shape == (2, 2)
    assert nd.prod([2, 3, 4]) == 24 and nd.prod([]) == 1


def test_module_reshape_and_broadcast_shapes(device):
    x = rand(2, 6)
    a = nd.array(x, device=device)
    check(nd.reshape(a, (3, 4)), x.reshape(3, 4))
    assert nd.broadcast_shapes((2, 1, 3), (4, 1)) == np.broadcast_shapes((2, 1, 3), (4, 1))
    assert nd.broadcast_shapes((), (3,)) == (3,)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack_and_unstack(device, axis):
    xs = [rand(3, 4) for _ in range(3)]
    arrays = [nd.array(x, device=device) for x in xs]
    out = nd.stack(arrays, axis=axis)
    expected = np.stack(xs, axis=axis)
    check(out, expected)
    parts = nd.unstack(out, axis=axis)
    assert len(parts) == 3
    for part, x in zip(parts, xs):
        check(part, x)


def test_take_rows(device):
    x = rand(5, 3)
    a = nd.array(x, device=device)
    idx = np.array([[4, 0], [2, 2], [-1, 1]])
    check(a.take_rows(idx), x[idx])
    check(nd.take_rows(a, [1, 3]), x[[1, 3]])
    check(a.take_rows(nd.array(np.array([0.0, 4.0]), device=device)), x[[0, 4]])
    check(a.permute((1, 0)).take_rows(np.array([2, 0])), x.T[[2, 0]])


def test_index_add_rows_accumulates_repeats(device):
    base = rand(4, 3)
    vals = rand(5, 3)
    idx = np.array([0, 3, 0, 1, 0])
    a = nd.array(base, device=device)
    p = ptr(a)
    a.index_add_rows(idx, nd.array(vals, device=device))
    expected = base.copy()
    np.add.at(expected, idx, vals)
    assert ptr(a) == p
    check(a, expected)
    nd.index_add_rows(a, [2], nd.array(vals[:1], device=device))
    expected[2] += vals[0]
    check(a, expected)
