"""The eager path's shortcuts keep the semantics they shortcut: the host buffer cache reuses
memory only when nothing refers to it, the array layer's own constructor and cached views give
the values numpy gives, reductions over every axis keep numpy's shapes and bits, and the
untracked copy_ and x[()] = y write what the general path writes. Nothing here times anything."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle.backend_ndarray import host_buffer
from needle.backend_ndarray.ndarray import NDArray

LARGE = host_buffer.CACHE_MIN_ELEMENTS  # the smallest buffer the cache keeps


@pytest.fixture
def cache():
    """A cache that starts empty and is emptied again afterwards."""
    assert host_buffer._cache["limit"] > 0, "the cache is off in this environment (NEEDLE_CPU_CACHE_MB=0)"
    host_buffer.empty_cache()
    yield host_buffer
    host_buffer.empty_cache()


def _address(nd: NDArray) -> int:
    return nd._handle.ptr()


def test_a_dead_large_buffer_is_reused_by_the_next_of_its_size_and_dtype(cache):
    a = NDArray(np.arange(LARGE, dtype=np.float32), device=ndl.cpu())
    address = _address(a)
    del a
    assert cache.cache_info()["buffers"] == 1
    b = NDArray(np.full(LARGE, 2.0, dtype=np.float32), device=ndl.cpu())
    assert _address(b) == address and cache.cache_info()["buffers"] == 0
    np.testing.assert_array_equal(b.numpy(), np.full(LARGE, 2.0, dtype=np.float32))  # the new contents only


def test_other_sizes_and_dtypes_do_not_take_a_cached_buffer(cache):
    a = NDArray(np.zeros(LARGE, dtype=np.float32), device=ndl.cpu())
    address = _address(a)
    del a
    other_size = NDArray(np.zeros(LARGE + 1, dtype=np.float32), device=ndl.cpu())
    other_dtype = NDArray(np.zeros(LARGE, dtype=np.float64), device=ndl.cpu(), dtype="float64")
    assert address not in (_address(other_size), _address(other_dtype))
    assert cache.cache_info()["buffers"] == 1


def test_small_buffers_are_not_cached(cache):
    a = NDArray(np.zeros(LARGE - 1, dtype=np.float32), device=ndl.cpu())
    del a
    assert cache.cache_info() == dict(bytes=0, limit=cache._cache["limit"], buffers=0)


def test_memory_a_numpy_view_still_shows_is_never_reused(cache):
    """A host view (DLPack, np.from_dlpack) of a dead array's buffer keeps the memory its own."""
    t = ndl.Tensor(np.arange(LARGE, dtype=np.float32), requires_grad=False)
    view = np.from_dlpack(t)
    del t
    assert cache.cache_info()["buffers"] == 0
    for _ in range(3):  # allocations of the same size must not write into the view's memory
        NDArray(np.full(LARGE, -1.0, dtype=np.float32), device=ndl.cpu())
    np.testing.assert_array_equal(view, np.arange(LARGE, dtype=np.float32))


def test_wrapped_numpy_memory_is_never_taken_into_the_cache(cache):
    """ndl.from_numpy shares the caller's array: when the tensor dies the memory stays the caller's."""
    source = np.arange(LARGE, dtype=np.float32)
    t = ndl.from_numpy(source)
    del t
    assert cache.cache_info()["buffers"] == 0
    b = NDArray(np.zeros(LARGE, dtype=np.float32), device=ndl.cpu())
    assert _address(b) != source.ctypes.data
    np.testing.assert_array_equal(source, np.arange(LARGE, dtype=np.float32))


def test_the_cache_keeps_at_most_its_limit_and_empty_cache_releases_it(cache, monkeypatch):
    nbytes = LARGE * 4
    monkeypatch.setitem(cache._cache, "limit", 2 * nbytes)
    arrays = [NDArray(np.zeros(LARGE, dtype=np.float32), device=ndl.cpu()) for _ in range(3)]
    del arrays
    assert cache.cache_info()["buffers"] == 2 and cache.cache_info()["bytes"] == 2 * nbytes
    assert ndl.cpu().empty_cache() == 2 * nbytes  # the device's own spelling
    assert cache.cache_info()["buffers"] == 0 and cache.cache_info()["bytes"] == 0


def test_a_limit_of_zero_turns_the_cache_off(cache, monkeypatch):
    monkeypatch.setitem(cache._cache, "limit", 0)
    a = NDArray(np.zeros(LARGE, dtype=np.float32), device=ndl.cpu())
    del a
    assert cache.cache_info()["buffers"] == 0


def test_a_training_loop_on_cached_buffers_matches_numpy(cache):
    """Many steps of large elementwise work, every temporary from the cache, against numpy in float64."""
    rng = np.random.RandomState(0)
    x_np = rng.randn(LARGE * 2).astype(np.float32)
    w_np = rng.randn(LARGE * 2).astype(np.float32)
    x = ndl.Tensor(x_np, requires_grad=False)
    w = ndl.Tensor(w_np, requires_grad=True)
    for _ in range(4):
        loss = ((w * x + 1.0) * w).sum()
        loss.backward()
        grad = 2 * w_np.astype(np.float64) * x_np + 1.0
        np.testing.assert_allclose(w.grad.numpy(), grad, rtol=1e-6, atol=1e-6)
        expected = ((w_np.astype(np.float64) * x_np + 1.0) * w_np).sum()
        np.testing.assert_allclose(float(loss.numpy()), expected, rtol=1e-4)
    assert cache.cache_info()["buffers"] > 0  # the loop did run on reused buffers


# --- the array layer's shortcuts -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (1,), (4,), (2, 3), (2, 1, 3), (0, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_sum_max_min_of_every_axis_have_numpy_shapes_dtypes_and_values(shape, dtype):
    x = (np.arange(int(np.prod(shape))) % 5 - 2).reshape(shape).astype(dtype)
    a = NDArray(x, device=ndl.cpu(), dtype=dtype)
    out = ndl.array_api.sum(a)
    expected = x.sum(dtype="int64" if dtype in ("int64", "bool") else dtype)
    assert out.shape == () and out.dtype == str(expected.dtype)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert a.sum().shape == (1,)  # the course's NDArray.sum keeps a length-1 axis
    assert a.sum(keepdims=True).shape == (1,) * len(shape)
    if x.size:
        for name in ("max", "min"):
            got = getattr(ndl.array_api, name)(a)
            assert got.shape == () and got.dtype == dtype
            np.testing.assert_array_equal(got.numpy(), getattr(np, name)(x))


def test_sum_of_every_axis_gives_numpy_bits_on_a_large_array():
    """np.add.reduce is np.sum's own call: the same pairwise summation, the same float32 bits."""
    x = np.random.RandomState(1).randn(3, 1000).astype(np.float32)
    a = NDArray(x, device=ndl.cpu())
    assert ndl.array_api.sum(a).numpy().tobytes() == np.sum(x).tobytes()
    assert ndl.array_api.sum(a, axis=1).numpy().tobytes() == np.sum(x, axis=1).tobytes()


def test_strided_views_read_what_numpy_reads():
    """Flips (negative strides), broadcasts (zero strides), transposes and offsets."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = NDArray(x, device=ndl.cpu())
    np.testing.assert_array_equal(a.flip((1, 2)).numpy(), x[:, ::-1, ::-1])
    np.testing.assert_array_equal(a[:, 1:, 1:3].numpy(), x[:, 1:, 1:3])
    np.testing.assert_array_equal(a.permute((2, 0, 1)).numpy(), x.transpose(2, 0, 1))
    np.testing.assert_array_equal((a[:, :1, :] + a).numpy(), x[:, :1, :] + x)
    np.testing.assert_array_equal(a[1:, :, :].broadcast_to((3, 1, 3, 4)).numpy(), np.broadcast_to(x[1:], (3, 1, 3, 4)))


def test_a_cached_view_never_pairs_one_shape_with_another():
    """The buffer keeps the view of its last shape: reading it with another shape gets its own."""
    a = NDArray(np.arange(6, dtype=np.float32), device=ndl.cpu())
    for shape in [(2, 3), (3, 2), (6,), (2, 3)]:
        b = a.reshape(shape)
        np.testing.assert_array_equal((b + 0).numpy(), np.arange(6, dtype=np.float32).reshape(shape))


def test_reshape_and_permute_still_refuse_what_they_refused():
    a = NDArray(np.zeros((2, 3), dtype=np.float32), device=ndl.cpu())
    with pytest.raises(ValueError, match=r"cannot reshape an array of shape \(2, 3\)"):
        a.reshape((4, 2))
    with pytest.raises(ValueError, match="cannot reshape"):
        a.reshape((-2, -3))  # the size matches, the entries do not
    with pytest.raises(ValueError, match="only one -1"):
        a.reshape((-1, -1))
    assert a.reshape((3, -1)).shape == (3, 2)
    with pytest.raises(ValueError, match="not a permutation"):
        a.permute((0, 0))
    with pytest.raises(ValueError, match="not a permutation"):
        a.permute((0, 2))
    assert a.permute((-1, 0)).shape == (3, 2)
    with pytest.raises(ValueError, match="non-compact"):
        a.permute((1, 0)).reshape((6,))


def test_setitem_with_an_empty_index_writes_the_whole_array():
    """x[()] = y: all of x, as numpy's (what copy_ uses)."""
    a = NDArray(np.zeros((2, 3), dtype=np.float32), device=ndl.cpu())
    a[()] = NDArray(np.arange(6, dtype=np.float32).reshape(2, 3), device=ndl.cpu())
    np.testing.assert_array_equal(a.numpy(), np.arange(6).reshape(2, 3))
    a[()] = 7
    np.testing.assert_array_equal(a.numpy(), np.full((2, 3), 7.0))
    a[()] = NDArray(np.array([1.0, 2.0, 3.0], dtype=np.float32), device=ndl.cpu())  # broadcast
    np.testing.assert_array_equal(a.numpy(), np.tile([1.0, 2.0, 3.0], (2, 1)))


# --- the Tensor layer's shortcuts ----------------------------------------------------------------------

def test_untracked_copy_writes_in_place_and_is_seen_by_the_in_place_check():
    """copy_ outside the graph writes the tensor's own buffer (views see it) and stamps it, so a
    graph node that read the old value refuses to backpropagate."""
    w = ndl.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    x = ndl.Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=False)
    buffer = x.realize_cached_data()._handle
    y = (w * x).sum()
    with ndl.no_grad():
        x.copy_(ndl.Tensor(np.array([4.0, 5.0, 6.0], dtype=np.float32), requires_grad=False))
    assert x.realize_cached_data()._handle is buffer
    np.testing.assert_array_equal(x.numpy(), [4.0, 5.0, 6.0])
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        y.backward()


def test_copy_with_another_dtype_or_shape_still_casts_and_broadcasts():
    t = ndl.Tensor(np.zeros((2, 3), dtype=np.float32), requires_grad=False)
    t.copy_(ndl.Tensor(np.array([1.5, 2.5, 3.5]), dtype="float64", requires_grad=False))
    assert t.dtype == ndl.float32
    np.testing.assert_array_equal(t.numpy(), np.tile([1.5, 2.5, 3.5], (2, 1)))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        t.copy_(ndl.Tensor(np.zeros(4, dtype=np.float32), requires_grad=False))


def test_elementwise_functions_still_refuse_what_they_refused():
    a = ndl.Tensor(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"cannot be broadcast"):
        a + ndl.Tensor(np.zeros((4,), dtype=np.float32))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(3,\) differ"):
        ndl.ops.EWiseAdd()(a, ndl.Tensor(np.zeros((3,), dtype=np.float32)))
    with pytest.raises(TypeError, match="multiply"):
        a * "x"


def test_a_result_of_integer_dtype_records_no_graph_and_make_const_checks_requires_grad():
    a = ndl.Tensor(np.array([1.5, 2.5], dtype=np.float32), requires_grad=True)
    cast = a.to(ndl.int64)
    assert not cast.requires_grad and cast.is_leaf()
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        ndl.Tensor.make_const(cast.realize_cached_data(), requires_grad=True)
    y = a * 2.0
    assert y.requires_grad and y.inputs == [a] and not y.is_leaf()
    with ndl.no_grad():
        z = a * 2.0
    assert not z.requires_grad and z.is_leaf() and z.inputs == []


def test_a_compiled_step_replays_what_the_eager_step_computes_with_cached_buffers(cache):
    """The compiled path records allocations from the cache like any other: replays match eager."""
    rng = np.random.RandomState(0)
    x = ndl.Tensor(rng.randn(LARGE).astype(np.float32), requires_grad=False)
    w = ndl.Tensor(rng.randn(LARGE).astype(np.float32), requires_grad=True)

    def step(x):
        loss = ((w * x) * w + x).sum()
        loss.backward()
        return loss, w.grad

    eager = [t.numpy() for t in step(x)]
    compiled = ndl.compile(step)
    for _ in range(4):
        out = [t.numpy() for t in compiled(x)]
        for got, want in zip(out, eager):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=str)
def test_power_half_is_the_correctly_rounded_square_root_with_pytorchs_edges(device):
    """x ** 0.5 is sqrt (PowerScalar's documented edge, PyTorch's kernel for 0.5): -0 stays -0 and
    -inf is nan as in PyTorch, and the bits are IEEE's correctly rounded square root (libm's pow
    may differ in the last bit, and is 5x slower). PyTorch's vectorised sqrt itself is within
    one ulp of it."""
    torch = pytest.importorskip("torch")
    edges = np.array([-0.0, 0.0, -np.inf, np.inf, np.nan, -1.0, 1e-45, 3.4e38], dtype=np.float32)
    x = np.concatenate([edges, np.random.RandomState(0).rand(10000).astype(np.float32) * 1e3])
    got = (ndl.Tensor(x, device=device) ** 0.5).numpy()
    with np.errstate(invalid="ignore"):
        assert got.tobytes() == np.sqrt(x).tobytes()
    want = torch.sqrt(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=2.4e-7)  # nan where torch has nan
    assert np.signbit(got[:2]).tolist() == np.signbit(want[:2]).tolist() == [True, False]
    runtime = ndl.HostScalar(0.5)  # a runtime exponent (an optimizer's) takes the same kernel
    assert (ndl.Tensor(x, device=device) ** runtime).numpy().tobytes() == got.tobytes()


@pytest.mark.parametrize("value, limit", [("0", 0), ("1.5", 3 << 19), ("64", 64 << 20)])
def test_the_cache_limit_comes_from_the_environment(monkeypatch, value, limit):
    monkeypatch.setenv("NEEDLE_CPU_CACHE_MB", value)
    assert host_buffer._limit_from_environment() == limit


@pytest.mark.parametrize("value", ["lots", "-1", "nan"])
def test_a_bad_cache_limit_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("NEEDLE_CPU_CACHE_MB", value)
    with pytest.raises(ValueError, match=f"NEEDLE_CPU_CACHE_MB must be a number of megabytes >= 0.*{value}"):
        host_buffer._limit_from_environment()


# --- the eager per-op shortcuts: whole buffers read as they are, kept reduction plans ----------------

def _strided_copy(x: np.ndarray) -> NDArray:
    """An NDArray holding x's values as a non-compact view (every other column of a wider array)."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    wide[..., ::2] = x
    view = NDArray(wide, device=ndl.cpu(), dtype=str(x.dtype))[..., ::2]
    assert not view.is_compact()
    return view


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "maximum", "power", "less", "equal"])
def test_binary_kernels_on_whole_buffers_give_the_bits_of_strided_operands_and_numpy(name):
    """A compact operand is passed to the kernel as its bare buffer (read flat); the result has the
    bits of the same function on strided views of the same values, and numpy's."""
    rng = np.random.RandomState(2)
    x = rng.randn(3, 5, 7).astype(np.float32)
    if name == "power":  # a positive base: real powers
        x = np.abs(x)
    y = (rng.rand(3, 5, 7) + 0.5).astype(np.float32)
    function = getattr(ndl.array_api, name)
    compact = function(NDArray(x, device=ndl.cpu()), NDArray(y, device=ndl.cpu()))
    strided = function(_strided_copy(x), _strided_copy(y))
    assert compact.shape == strided.shape == (3, 5, 7)
    assert compact.numpy().tobytes() == strided.numpy().tobytes() == getattr(np, name)(x, y).tobytes()


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "sqrt", "negative", "abs"])
def test_unary_and_scalar_kernels_on_whole_buffers_give_the_bits_of_strided_operands(name):
    x = (np.random.RandomState(3).rand(4, 6, 5) * 3 + 0.1).astype(np.float32)
    function = getattr(ndl.array_api, name)
    compact, strided = function(NDArray(x, device=ndl.cpu())), function(_strided_copy(x))
    assert compact.shape == (4, 6, 5) and compact.numpy().tobytes() == strided.numpy().tobytes()
    for scalar_function, s in ((ndl.array_api.multiply, 1.7), (ndl.array_api.divide, 3.0), (ndl.array_api.add, -2)):
        got = scalar_function(NDArray(x, device=ndl.cpu()), s)
        assert got.numpy().tobytes() == scalar_function(_strided_copy(x), s).numpy().tobytes()
        assert got.numpy().tobytes() == {ndl.array_api.multiply: np.multiply, ndl.array_api.divide: np.divide,
                                         ndl.array_api.add: np.add}[scalar_function](x, np.float32(s)).tobytes()


@pytest.mark.parametrize("shape", [(7,), (3, 1000), (5, 4, 3, 2)])
@pytest.mark.parametrize("kernel", ["sum", "max", "min"])
def test_a_reduction_of_every_axis_reads_a_compact_array_flat_with_numpys_bits(shape, kernel):
    """The whole buffer reduced in one 1-D reduction: numpy's bits for the n-d array, compact or
    strided, with keepdims giving a 1 per axis."""
    x = np.random.RandomState(4).randn(*shape).astype(np.float32)
    expected = getattr(np, kernel)(x)
    for a in (NDArray(x, device=ndl.cpu()), _strided_copy(x)):
        got = getattr(ndl.array_api, kernel)(a)
        assert got.shape == () and got.numpy().tobytes() == expected.tobytes()
        kept = getattr(ndl.array_api, kernel)(a, keepdims=True)
        assert kept.shape == (1,) * len(shape) and kept.numpy().tobytes() == expected.tobytes()


def test_kept_reduction_plans_give_each_axes_form_its_own_answer_and_errors():
    """Axes given as plain ints are normalised once per (axes, ndim) and kept; a bool or a float,
    which compare equal to an int, still get their own error after the int's plan is kept."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = ndl.Tensor(x, requires_grad=False)
    a = NDArray(x, device=ndl.cpu())
    for axes in [(1,), 1, (0, 2), (-1,), np.int64(1), [0, 2]]:
        want = x.sum(axis=tuple(axes) if isinstance(axes, list) else axes)
        np.testing.assert_array_equal(t.sum(axes=axes).numpy(), want)
        np.testing.assert_array_equal(ndl.array_api.sum(a, axis=axes).numpy(), want)
        np.testing.assert_array_equal(ndl.array_api.sum(a, axis=axes, keepdims=True).numpy(),
                                      x.sum(axis=tuple(axes) if isinstance(axes, list) else axes, keepdims=True))
    for bad in [(True,), (1.0,), True]:
        with pytest.raises(TypeError, match="axis must be an int"):
            t.sum(axes=bad)
        with pytest.raises(TypeError, match="axis must be an int"):
            ndl.array_api.sum(a, axis=bad)
    with pytest.raises(ValueError, match="out of range"):
        t.sum(axes=(3,))
    with pytest.raises(ValueError, match="repeated axis"):
        ndl.array_api.sum(a, axis=(1, -2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_product_of_two_matrices_gives_the_bits_of_the_general_path_and_numpy(dtype):
    """Two matrices skip the general path's reshapes; the kernel, its operands (transposed views
    read in place) and so the bits are the same as a batch of one through the general path."""
    rng = np.random.RandomState(5)
    x, y = rng.randn(6, 9).astype(dtype), rng.randn(7, 9).astype(dtype)
    a, b = NDArray(x, device=ndl.cpu(), dtype=dtype), NDArray(y, device=ndl.cpu(), dtype=dtype).permute((1, 0))
    two_d = a @ b
    batched = a.reshape((1, 6, 9)) @ b.broadcast_to((1, 9, 7))
    assert two_d.shape == (6, 7) and two_d.dtype == dtype
    assert two_d.numpy().tobytes() == batched.numpy().reshape(6, 7).tobytes() == np.matmul(x, y.T).tobytes()
    empty = NDArray(np.zeros((3, 0), dtype=dtype), device=ndl.cpu(), dtype=dtype) @ \
        NDArray(np.zeros((0, 2), dtype=dtype), device=ndl.cpu(), dtype=dtype)
    np.testing.assert_array_equal(empty.numpy(), np.zeros((3, 2)))  # an empty inner dimension sums nothing
    with pytest.raises(ValueError, match="inner dimensions differ"):
        a @ a


def test_kept_index_plans_give_each_index_form_its_own_answer_and_errors():
    """Plans of ints, slices, None and Ellipsis are kept per (shape, index); bools, floats and
    numpy integers (equal to ints as keys) are planned each time, with their own checks."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = ndl.Tensor(x, requires_grad=True)
    for index in [1, (1,), (slice(None), slice(1, 3)), (Ellipsis, 2), (None, 0, slice(None, None, 2)), (-1, -2),
                  np.int64(1), (0, [2, 0])]:
        for _ in range(2):  # planned, then from the kept plan
            np.testing.assert_array_equal(t[index].numpy(), x[index])
    (t[1, 1:] * 2.0).sum().backward()
    want = np.zeros_like(x)
    want[1, 1:] = 2.0
    np.testing.assert_array_equal(t.grad.numpy(), want)
    with pytest.raises(IndexError, match="out of bounds"):
        t[2]
    with pytest.raises(TypeError, match="unsupported index of type float"):
        t[1.0]
    with pytest.raises(ValueError, match="slice step must be positive"):
        t[::-1]


def test_stack_and_unstack_write_and_read_the_views_indexing_would():
    rng = np.random.RandomState(6)
    parts = [rng.randn(3, 4).astype(np.float32) for _ in range(3)]
    arrays = [NDArray(p, device=ndl.cpu()) for p in parts]
    arrays[1] = arrays[1].permute((1, 0)).permute((1, 0))  # a view, read as it is
    arrays[2] = NDArray(parts[2].astype(np.float64), device=ndl.cpu(), dtype="float64")  # cast to the first's dtype
    for axis in (0, 1, 2, -1):
        stacked = ndl.array_api.stack(arrays, axis)
        assert stacked.dtype == "float32"
        np.testing.assert_array_equal(stacked.numpy(), np.stack(parts, axis))
        for k, piece in enumerate(ndl.array_api.unstack(stacked, axis)):
            assert piece.is_compact() and piece.shape == (3, 4)
            np.testing.assert_array_equal(piece.numpy(), parts[k])
    view = NDArray(np.arange(24, dtype=np.float32).reshape(4, 6), device=ndl.cpu())[1:, 2:]  # an offset view
    for k, piece in enumerate(ndl.array_api.unstack(view, 1)):
        np.testing.assert_array_equal(piece.numpy(), np.arange(24, dtype=np.float32).reshape(4, 6)[1:, 2 + k])
    with pytest.raises(ValueError, match="stack: array 1 has shape"):
        ndl.array_api.stack([arrays[0], NDArray(np.zeros(3, dtype=np.float32), device=ndl.cpu())])


def test_broadcasting_keeps_its_shapes_and_errors():
    x = ndl.Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    r = ndl.Tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    for _ in range(2):
        out = x * r
        np.testing.assert_array_equal(out.numpy(), np.tile(np.arange(3, dtype=np.float32), (2, 1)))
    out.sum().backward()
    np.testing.assert_array_equal(r.grad.numpy(), [2.0, 2.0, 2.0])
    for bad in [(3, 2), (3,)]:
        with pytest.raises(ValueError, match=r"cannot broadcast a tensor of shape \(2, 3\)"):
            ndl.ops.broadcast_to(x, bad)
        with pytest.raises(ValueError, match=r"cannot broadcast an array of shape \(2, 3\)"):
            x.realize_cached_data().broadcast_to(bad)


@pytest.mark.parametrize("stride, padding", [((1, 1), (1, 1)), ((2, 2), (0, 0)), ((2, 1), (1, 0))])
def test_col2im_reads_each_offsets_windows_in_place_with_the_bits_of_the_same_sums(stride, padding):
    """col2im adds the windows of each kernel offset into the padded input in turn, the windows
    read as strided views; a numpy loop adding the same slices in the same order gives the same
    float32 bits."""
    from needle.ops import _windows

    rng = np.random.RandomState(7)
    n, h, w, c, (kh, kw) = 2, 6, 5, 3, (3, 3)
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = rng.randn(n, ho, wo, kh, kw, c).astype(np.float32)
    got = _windows.col2im(NDArray(cols, device=ndl.cpu()), (n, h, w, c), (kh, kw), stride, padding)
    want = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=np.float32)
    for u in range(kh):
        for v in range(kw):
            region = want[:, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw, :]
            region[...] = region + cols[:, :, :, u, v, :]
    assert got.numpy().tobytes() == np.ascontiguousarray(want[:, ph:ph + h, pw:pw + w, :]).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel, stride, dilation, padding, layout", [
    ((7, 7), (4, 4), (1, 1), ((3, 3), (3, 3)), "nhwc view of nchw"),  # ResNet9's first convolution
    ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), "compact"),
    ((3, 2), (2, 1), (2, 1), ((2, 0), (1, 3)), "compact"),  # dilation, uneven padding
    ((2, 2), (3, 3), (1, 1), ((0, 0), (0, 0)), "a slice"),  # windows skipping rows, a strided input
    ((5, 5), (1, 1), (1, 1), ((4, 4), (4, 4)), "compact"),  # windows wholly in the padding
])
def test_the_cpu_im2col_kernel_copies_what_the_padded_window_view_holds(dtype, kernel, stride, dilation, padding,
                                                                         layout):
    """The cpu's im2col kernel (one copy, read straight from the input) against the array layer's
    way: pad into a new array, then compact the strided window view. Also inside a compiled step,
    which records the kernel's call and replays it on new data."""
    from needle.autograd import array_api
    from needle.ops import _windows
    n, h, w, c = 2, 9, 8, 3

    def image(seed):
        data = np.random.RandomState(seed).randn(n, c, h, w + 2).astype(dtype)
        if layout == "nhwc view of nchw":
            return NDArray(data[..., :w].copy(), device=ndl.cpu()).permute((0, 2, 3, 1))
        if layout == "a slice":
            return NDArray(data.transpose(0, 2, 3, 1).copy(), device=ndl.cpu())[:, :, 1:w + 1, :]
        return NDArray(data[..., :w].transpose(0, 2, 3, 1).copy(), device=ndl.cpu())

    def reference(a):
        return _windows.window_view(a, kernel, stride, padding, dilation=dilation).numpy()

    a = image(1)
    got = array_api.device_im2col(a, kernel, stride, dilation, padding)
    assert got is not None and got.is_compact()
    assert got.numpy().tobytes() == np.ascontiguousarray(reference(a)).tobytes()

    def step(x):
        return ndl.Tensor(array_api.device_im2col(x.realize_cached_data(), kernel, stride, dilation, padding),
                          device=ndl.cpu(), requires_grad=False) * 1.0

    compiled = ndl.compile(step)
    for seed in (4, 5, 6):  # eager, traced, replayed
        x = image(seed)
        out = compiled(ndl.Tensor(x, device=ndl.cpu(), requires_grad=False))
        assert out.numpy().tobytes() == np.ascontiguousarray(reference(x)).tobytes()
    assert "im2col" in [call.name for call in compiled.programs[0].calls]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_cpu_col2im_kernel_gives_the_bits_of_the_array_level_sums(dtype):
    """The cpu device's col2im kernel (one pass) against the array layer's strided adds, which the
    cpu_numpy device (no such kernel) runs: the same bits over strides, dilations, uneven padding,
    kernels larger than the stride and windows that miss positions, with -0.0, inf and nan entries."""
    import itertools

    from needle.ops import _windows

    assert hasattr(ndl.cpu().mod, "col2im") and not hasattr(ndl.cpu_numpy().mod, "col2im")
    rng = np.random.RandomState(3)
    cases = 0
    for (n, h, w, c), kernel, stride, dilation, padding in itertools.product(
            [(2, 5, 6, 3), (1, 4, 4, 8)], [(3, 3), (2, 3)], [(1, 1), (2, 1), (3, 3)], [(1, 1), (2, 1)],
            [((1, 1), (1, 1)), ((0, 1), (2, 0)), ((0, 0), (0, 0))]):
        (kh, kw), (sh, sw), (dh, dw), ((top, bottom), (left, right)) = kernel, stride, dilation, padding
        ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        if ho <= 0 or wo <= 0 or (stride == kernel and dilation == (1, 1)):  # tiled windows: no adds
            continue
        cols = rng.randn(n, ho, wo, kh, kw, c).astype(dtype)
        cols[cols > 1.2] = -0.0
        cols.reshape(-1)[[3, 17]] = [np.inf, np.nan]
        got, want = (_windows.col2im(NDArray(cols, device=device), (n, h, w, c), kernel, stride, padding, dilation)
                     for device in (ndl.cpu(), ndl.cpu_numpy()))
        assert got.numpy().tobytes() == want.numpy().tobytes(), (kernel, stride, dilation, padding)
        cases += 1
    assert cases > 50


def test_a_compiled_step_still_guards_the_tensors_its_binary_ops_read():
    """A binary op reads its operands' data without realize_cached_data's frame, except while a
    compiled step traces (its guards replace that method to see every read): a tensor the step
    reads from outside, whose buffer is later replaced, is still caught."""
    w = ndl.Tensor(np.ones(3, dtype=np.float32), requires_grad=False)
    x = ndl.Tensor(np.arange(3, dtype=np.float32), requires_grad=False)
    step = ndl.compile(lambda x: x * w)
    for _ in range(3):
        np.testing.assert_array_equal(step(x).numpy(), np.arange(3, dtype=np.float32))
    w.data = ndl.Tensor(np.full(3, 2.0, dtype=np.float32), requires_grad=False)  # a new buffer
    np.testing.assert_array_equal(step(x).numpy(), np.arange(3, dtype=np.float32) * 2)


def test_basic_views_by_one_int_or_slice_per_axis_are_the_general_paths():
    """x[i, a:b:s, ...] with one plain int or slice per axis takes a one-pass view; every other index
    (numpy integers, bools, negative steps, out-of-range ints, Ellipsis) the general path, so each
    gives numpy's values (ints keeping their axis) and the general path's errors."""
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a = NDArray(x, device=ndl.cpu())
    for index in [(1, slice(None), slice(1, 4)), (slice(None, None, 2), -1, slice(3, 1)), (-3, slice(1, None, 3), 4),
                  (slice(-2, None), slice(None, -1), slice(None, None, 4)), (np.int64(1), slice(None), slice(2, 3))]:
        want = x[tuple(slice(i % n, i % n + 1) if isinstance(i, (int, np.integer)) else i
                       for i, n in zip(index, x.shape))]
        view = a[index]
        assert view.shape == want.shape
        np.testing.assert_array_equal(view.numpy(), want)
        b = NDArray(np.zeros_like(x), device=ndl.cpu())
        b[index] = 1.0
        expected = np.zeros_like(x)
        expected[tuple(slice(i % n, i % n + 1) if isinstance(i, (int, np.integer)) else i
                       for i, n in zip(index, x.shape))] = 1.0
        np.testing.assert_array_equal(b.numpy(), expected)
    np.testing.assert_array_equal(a[1:, 0][1, 0, 1:3].numpy(), x[2:3, 0:1, 1:3])  # a view of a view (its offset)
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        a[3, 0, 0]
    with pytest.raises(ValueError, match="slice step must be positive"):
        a[0, ::-1, 0]
    with pytest.raises(TypeError, match="indices must be ints or slices"):
        a[0, 0, 0.5]


def test_a_compiled_step_that_builds_graph_nodes_traces_once_and_replays_the_eager_bits():
    """Graph nodes are made with _init's assignments inline, except while a compiled step's guards
    watch _init: a step that builds nodes (views of a parameter among them) and backpropagates
    traces once and replays the eager step's bits."""
    rng = np.random.RandomState(8)
    w = ndl.Tensor(rng.randn(3, 2).astype(np.float32), requires_grad=True)
    x = ndl.Tensor(rng.randn(4, 3).astype(np.float32), requires_grad=False)

    def step(x):
        loss = ((x @ w) * (x @ w.reshape((3, 2)))).sum()
        loss.backward()
        return loss, w.grad

    eager = [t.numpy() for t in step(x)]
    compiled = ndl.compile(step)
    for _ in range(4):
        for got, want in zip(compiled(x), eager):
            assert got.numpy().tobytes() == want.tobytes()
    assert len(compiled.programs) == 1


def test_fill_sets_a_whole_buffer_or_only_its_view():
    """A compact array is filled through the device's fill kernel (its whole buffer), a view
    through scalar_setitem (only its elements); both cast the value to the array's kind."""
    a = NDArray(np.zeros((3, 4), dtype=np.float32), device=ndl.cpu())
    a.fill(2.5)
    np.testing.assert_array_equal(a.numpy(), np.full((3, 4), 2.5, dtype=np.float32))
    a[1:, 1:3].fill(-1)
    want = np.full((3, 4), 2.5, dtype=np.float32)
    want[1:, 1:3] = -1
    np.testing.assert_array_equal(a.numpy(), want)
    b = NDArray(np.zeros(5, dtype=np.int64), device=ndl.cpu(), dtype="int64")
    b.fill(3.0)
    assert b.numpy().dtype == np.int64 and b.numpy().tolist() == [3] * 5
    np.testing.assert_array_equal(ndl.array_api.full((2, 2), 7, "float64").numpy(), np.full((2, 2), 7.0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["compact", "transposed"])
def test_the_cpu_sigmoid_gives_the_reference_devices_bits(dtype, layout):
    """The cpu device's sigmoid (compiled -|x| and select/add/divide around numpy's exp) against
    cpu_numpy's numpy recipe: every bit, at the edges too (signed zeros, infinities, nans, the
    tails where exp underflows)."""
    x = (np.random.RandomState(3).randn(300, 70) * 30).astype(dtype)
    x.reshape(-1)[:10] = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-30, -1e-30, 104.0, -104.0]
    if layout == "transposed":
        x = x.T
    on_cpu = ndl.Tensor(x, device=ndl.cpu(), dtype=dtype).sigmoid().numpy()
    reference = ndl.Tensor(x, device=ndl.cpu_numpy(), dtype=dtype).sigmoid().numpy()
    assert on_cpu.tobytes() == reference.tobytes()
    assert np.isnan(on_cpu).sum() == 2  # only the two nans


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relus_gradient_kernel_gives_the_bits_of_the_mask_and_select(dtype):
    """ThresholdBackward on the cpu (one pass, the device's threshold_backward kernel) against the
    comparison and select the cpu_numpy device runs: 0 where the input is <= 0 (also -0.0 and
    -inf), the adjoint's own bits elsewhere (nan and inf adjoints, nan inputs passing g on);
    transposed operands take the select on the cpu too."""
    rng = np.random.RandomState(5)
    x = rng.randn(64, 33).astype(dtype)
    g = rng.randn(64, 33).astype(dtype)
    x.reshape(-1)[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45]
    g.reshape(-1)[6:10] = [np.nan, np.inf, -np.inf, -0.0]
    g.reshape(-1)[2] = 7.0
    results = []
    for device in (ndl.cpu(), ndl.cpu_numpy()):
        for transpose in (False, True):
            gt, xt = (ndl.Tensor(a.T.copy() if transpose else a, device=device, dtype=dtype) for a in (g, x))
            if transpose:
                gt, xt = gt.transpose(), xt.transpose()
            results.append(ndl.ops.ThresholdBackward()(gt, xt).numpy())
    want = np.where(x <= 0, np.zeros((), dtype), g)
    for got in results:
        assert got.dtype == np.dtype(dtype) and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("layout", ["nchw view of nhwc", "one operand compact", "strides differ", "a slice",
                                    "size-one axes", "overlapping"])
def test_relus_gradient_on_permuted_whole_buffers_runs_flat_and_keeps_the_layout(layout):
    """An NCHW view of NHWC data (what the convolutions hand on): g and x with one permuted layout
    over whole buffers go through the kernel flat and the result keeps that layout; other layouts
    take the select. The values are numpy's where(x <= 0, 0, g) in every case."""
    from needle.backend_ndarray import functions
    device = ndl.cpu()
    rng = np.random.RandomState(9)
    nhwc = (4, 5, 6, 3)
    x_data, g_data = rng.randn(*nhwc).astype(np.float32), rng.randn(*nhwc).astype(np.float32)
    x_data.reshape(-1)[:3] = [0.0, -0.0, np.nan]

    def nchw(a, permuted=True):
        if not permuted:
            return NDArray(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), device=device)
        return NDArray(a, device=device).permute((0, 3, 1, 2))

    g, x = nchw(g_data), nchw(x_data)
    if layout == "one operand compact":
        g = nchw(g_data, permuted=False)
    elif layout == "strides differ":
        x = NDArray(np.ascontiguousarray(x_data.transpose(0, 3, 2, 1)), device=device).permute((0, 1, 3, 2))
    elif layout == "a slice":
        g = NDArray(np.concatenate([g_data, g_data]), device=device).permute((0, 3, 1, 2))[:4]
    elif layout == "size-one axes":
        g = NDArray(g_data[:1, :, :1], device=device).permute((0, 3, 1, 2))
        x = NDArray(x_data[:1, :, :1], device=device).permute((0, 3, 1, 2))
    elif layout == "overlapping":  # as many elements as the buffer, but some read twice
        g, x = (NDArray(a.reshape(-1)[:360], device=device).as_strided((4, 3, 5, 6), (60, 1, 10, 3))
                for a in (g_data, x_data))
    assert g.shape == x.shape
    got = functions.threshold_backward(g, x)
    want = np.where(x.numpy() <= 0, np.float32(0), g.numpy())
    assert got.numpy().tobytes() == want.tobytes()
    flat = layout in ("nchw view of nhwc", "size-one axes")
    if flat:  # the kernel's output in g's layout
        assert got.strides == g.strides and not got.is_compact()
    else:  # the select's fresh array
        assert got.is_compact()


def test_relus_gradient_can_be_differentiated_again_as_pytorchs():
    """A Hessian-vector product through a ReLU network: the mask is a constant of the input, the
    adjoint passes through it again."""
    _assert_hessian_vector_product_is_pytorchs(ndl.ops.relu, torch.relu, np.random.RandomState(1))


def _assert_hessian_vector_product_is_pytorchs(activation, torch_activation, rng) -> None:
    """d/dw <d/dw sum(activation(x @ w) ** 3), v> against torch.autograd.grad with create_graph
    (float64, rtol 1e-12); x, w and v drawn from rng."""
    x_np, w_np, v_np = rng.randn(8, 5), rng.randn(5, 4), rng.randn(5, 4)
    x = ndl.Tensor(x_np, dtype="float64", requires_grad=False)
    w = ndl.Tensor(w_np, dtype="float64")
    (activation(x @ w) ** 3).sum().backward()
    (w.grad * ndl.Tensor(v_np, dtype="float64", requires_grad=False)).sum().backward()
    tw = torch.tensor(w_np, requires_grad=True)
    (g,) = torch.autograd.grad((torch_activation(torch.tensor(x_np) @ tw) ** 3).sum(), (tw,), create_graph=True)
    (hv,) = torch.autograd.grad((g * torch.tensor(v_np)).sum(), (tw,))
    np.testing.assert_allclose(w.grad.numpy(), hv.numpy(), rtol=1e-12)


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=str)
@pytest.mark.parametrize("shape, index", [
    ((27, 10), lambda r: (r.randint(0, 27, (32, 3)),)),                        # an embedding's weight[ids]
    ((6, 5, 4), lambda r: (r.randint(0, 6, 7), r.randint(0, 5, 7))),           # two leading index arrays
    ((6, 5, 4), lambda r: (slice(None), r.randint(0, 5, (2, 3)))),             # an array after a slice
    ((6, 5), lambda r: (r.randint(0, 6, 4), slice(1, 4))),                     # a partial slice after it
])
def test_row_gathers_and_their_scatter_adds_match_numpy(device, shape, index):
    """x[ids] whose leading axes are indexed and the rest whole is a row take from x itself, and its
    gradient the rows added into zeros; other index forms keep the general path. Values are numpy's
    x[index], gradients np.add.at's (repeated ids add up)."""
    rng = np.random.RandomState(4)
    data, idx = rng.randn(*shape), index(rng)
    x = ndl.Tensor(data, device=device, dtype="float64")
    tensor_index = tuple(i if isinstance(i, slice) else ndl.Tensor(i, device=device, dtype="int64") for i in idx)
    picked = x[tensor_index if len(tensor_index) > 1 else tensor_index[0]]
    np.testing.assert_array_equal(picked.numpy(), data[idx])
    weight = rng.randn(*picked.shape)
    (picked * ndl.Tensor(weight, device=device, dtype="float64")).sum().backward()
    expected = np.zeros(shape)
    np.add.at(expected, idx, weight)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


@pytest.mark.parametrize("table, ids_shape", [((27, 10), (32, 3)), ((5, 4, 3), (7,)), ((6,), (2, 2))])
def test_an_embeddings_checked_ids_give_the_plan_the_general_path_works_out(table, ids_shape):
    """IndexPlan(..., rows_in_range=True), which an embedding's lookup makes after its own range
    check, has every attribute IndexPlan(shape, ids) computes, the row ids as the flat rows; ids that
    are not int64 take the general path."""
    from needle.ops.indexing import IndexPlan
    ids = ndl.Tensor(np.random.RandomState(0).randint(0, table[0], ids_shape), dtype="int64")
    fast, general = IndexPlan(table, ids, ndl.cpu(), rows_in_range=True), IndexPlan(table, ids, ndl.cpu())
    for name in ("input_shape", "basic", "layout", "sliced_shape", "view_shape", "advanced", "perm", "adv_dims",
                 "rest_shape", "rows_only", "result_perm", "output_shape"):
        assert getattr(fast, name) == getattr(general, name), name
    assert fast.rows.numpy().tobytes() == general.rows.numpy().tobytes()
    floats = ndl.Tensor(ids.numpy().astype(np.float32))
    assert IndexPlan(table, floats, ndl.cpu(), rows_in_range=True).rows.dtype == "int64"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cpu_kernels_row_sums_are_numpys_for_every_length(dtype):
    """kernels_cpu's numpy-ordered row sum (LayerNorm's and softmax's rows) and its sum of the labelled
    elements only (NLLLoss) against np.add.reduce, rows of every length 1..300 and longer ones, with
    -0.0 rows and values of mixed magnitude (a different order would show in the bits)."""
    from needle.backend_ndarray import kernels_cpu
    rng = np.random.RandomState(0)
    for n in list(range(1, 301)) + [1000, 4099, 10000]:
        row = (rng.randn(n) * 10.0 ** rng.randint(-4, 5, n)).astype(dtype)
        assert np.array(kernels_cpu._row_sum(row), dtype).tobytes() == np.add.reduce(row).tobytes(), n
        zeros = np.full(n, -0.0, dtype)
        assert np.array(kernels_cpu._row_sum(zeros), dtype).tobytes() == np.add.reduce(zeros).tobytes(), n
    for rows, classes in [(1, 1), (3, 5), (40, 7), (9, 300), (700, 1000), (5, 10003)]:
        x = (rng.randn(rows, classes) * 10.0 ** rng.randint(-4, 5, (rows, classes))).astype(dtype)
        ids = rng.randint(0, classes, rows)
        picked = np.where(np.arange(classes) == ids[:, None], x, dtype(0))
        got = kernels_cpu._picked_sum(x, ids, np.zeros(128, dtype))
        assert np.array(got, dtype).tobytes() == np.add.reduce(picked.reshape(-1)).tobytes(), (rows, classes)


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=str)
@pytest.mark.parametrize("shapes, flags", [
    (((5, 3), (4, 3)), (False, True)),            # g @ b^T
    (((3, 5), (3, 4)), (True, False)),            # a^T @ g
    (((2, 3, 5), (4, 5)), (False, True)),         # a batched g against a matrix
    (((2, 5, 3), (2, 5, 4)), (True, False)),
    (((3, 5), (4, 3)), (True, True)),
])
def test_a_product_of_transposed_operands_is_transpose_then_matmul(device, shapes, flags):
    """MatMulTransposed (MatMul's gradients as one node each): the bits of ops.transpose then @,
    and the gradients and second derivatives of that composition."""
    rng = np.random.RandomState(6)
    data = [rng.randn(*s) for s in shapes]
    for dtype in ("float32", "float64"):
        a, b = (ndl.Tensor(x, device=device, dtype=dtype) for x in data)
        fast = ndl.ops.MatMulTransposed(*flags)(a, b)
        ref = (ndl.ops.transpose(a) if flags[0] else a) @ (ndl.ops.transpose(b) if flags[1] else b)
        assert fast.numpy().tobytes() == ref.numpy().tobytes()
    a, b = (ndl.Tensor(x, device=device, dtype="float64") for x in data)
    ta, tb = (torch.tensor(x, requires_grad=True) for x in data)
    weight = rng.randn(*ndl.ops.MatMulTransposed(*flags)(a, b).shape)
    (ndl.ops.MatMulTransposed(*flags)(a, b) * ndl.Tensor(weight, device=device, dtype="float64")).sum().backward()
    t_out = (ta.transpose(-1, -2) if flags[0] else ta) @ (tb.transpose(-1, -2) if flags[1] else tb)
    t_ga, t_gb = torch.autograd.grad((t_out * torch.tensor(weight)).sum(), (ta, tb), create_graph=True)
    np.testing.assert_allclose(a.grad.numpy(), t_ga.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), t_gb.detach().numpy(), rtol=1e-12, atol=1e-12)
    ((a.grad * a.grad).sum() + (b.grad * 2).sum()).backward()
    second = torch.autograd.grad((t_ga * t_ga).sum() + (t_gb * 2).sum(), (ta, tb), allow_unused=True)
    np.testing.assert_allclose(b.grad.numpy(), second[1].numpy(), rtol=1e-12, atol=1e-12)


def test_a_product_of_transposed_operands_refuses_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"inner dimensions differ for shapes \(5, 3\) and \(4, 2\)"):
        ndl.ops.MatMulTransposed(False, True)(ndl.Tensor(np.zeros((5, 3))), ndl.Tensor(np.zeros((4, 2))))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ndl.ops.MatMulTransposed(True, False)(ndl.Tensor(np.zeros(3)), ndl.Tensor(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="batch dimensions"):
        ndl.ops.MatMulTransposed(False, True)(ndl.Tensor(np.zeros((2, 5, 3))), ndl.Tensor(np.zeros((3, 4, 3))))


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=["cpu", "cpu_numpy"])
def test_relus_gradient_reads_its_output_with_the_bits_of_the_input_mask(device):
    """ReLU's gradient masks by its output (PyTorch's threshold_backward(g, result, 0)), so a
    compiled step keeps only the output of a bias + ReLU: max(a, 0) <= 0 exactly where a <= 0
    (-0.0, 0, -inf, a denormal's sign), and a nan input's nan output passes g on as before."""
    rng = np.random.RandomState(11)
    x = rng.randn(40, 17).astype("float32")
    x.reshape(-1)[:7] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45]
    g = rng.randn(40, 17).astype("float32")
    g.reshape(-1)[7:10] = [np.nan, np.inf, -0.0]
    xt = ndl.Tensor(x, device=device, requires_grad=True)
    y = ndl.ops.relu(xt)
    y.backward(ndl.Tensor(g, device=device))
    want = np.where(x <= 0, np.float32(0), g)  # the input's mask: what the gradient always gave
    assert xt.grad.numpy().tobytes() == want.tobytes()
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(g))
    np.testing.assert_array_equal(xt.grad.numpy(), tx.grad.numpy())


def test_relus_output_written_in_place_before_backward_is_refused_like_torch():
    """The gradient's mask now comes from ReLU's output: writing that output in place after the
    forward makes backward refuse (the in-place check covers a node's own value), as PyTorch,
    whose relu saves its result, does."""
    x = ndl.Tensor(np.array([-1.0, 2.0]), dtype="float64", requires_grad=True)
    y = ndl.ops.relu(x)
    loss = y.sum()  # a sum's gradient reads no value: only ReLU's reads y
    y.data.mul_(0.0)
    with pytest.raises(RuntimeError, match="changed by an in-place operation after it was used"):
        loss.backward()
    tx = torch.tensor([-1.0, 2.0], requires_grad=True)
    ty = torch.relu(tx)
    tloss = ty.sum()
    ty.mul_(0.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tloss.backward()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tanhs_gradient_kernel_gives_the_bits_of_the_tensor_op_form(dtype):
    """TanhBackward (one node; on the cpu one pass, the device's tanh_backward kernel) against
    numpy's g * ((-(t * t)) + 1), what the Tensor ops g * (1 - t * t) compute: the same bits on
    both devices, compact or transposed (the sequence), edge values included (saturated t = +-1,
    nan and inf adjoints, a signed zero), but for a nan's sign (which operand's nan an
    instruction passes on)."""

    def bits(a):
        return np.where(np.isnan(a), np.abs(a), a).tobytes()

    rng = np.random.RandomState(6)
    t = np.tanh(rng.randn(40, 17) * 3).astype(dtype)
    g = rng.randn(40, 17).astype(dtype)
    t.reshape(-1)[:4] = [1.0, -1.0, -0.0, np.nan]
    g.reshape(-1)[4:8] = [np.nan, np.inf, -np.inf, -0.0]
    want = g * (-(t * t) + np.ones((), dtype))
    for device in (ndl.cpu(), ndl.cpu_numpy()):
        for transpose in (False, True):
            gt, tt = (ndl.Tensor(a.T.copy() if transpose else a, device=device, dtype=dtype) for a in (g, t))
            if transpose:
                gt, tt = gt.transpose(), tt.transpose()
            got = ndl.ops.TanhBackward()(gt, tt).numpy()
            assert got.dtype == np.dtype(dtype) and bits(got) == bits(want)
    x = ndl.Tensor(rng.randn(6, 5).astype(dtype), dtype=dtype)
    (ndl.ops.tanh(x) * ndl.Tensor(g[:6, :5], dtype=dtype, requires_grad=False)).sum().backward()
    assert type(x.grad.op).__name__ == "TanhBackward"
    t_x = np.tanh(x.numpy())
    assert x.grad.numpy().tobytes() == (g[:6, :5] * (-(t_x * t_x) + np.ones((), dtype))).tobytes()


def test_tanhs_gradient_can_be_differentiated_again_as_pytorchs():
    """A Hessian-vector product through tanh: TanhBackward's gradient reaches both the adjoint and
    tanh's output (and through it the input); an adjoint of another dtype takes the Tensor ops."""
    rng = np.random.RandomState(2)
    _assert_hessian_vector_product_is_pytorchs(ndl.ops.tanh, torch.tanh, rng)
    y = ndl.Tensor(rng.randn(3).astype(np.float32))
    out = ndl.ops.tanh(y)
    out.backward(ndl.Tensor(np.ones(3), dtype="float64", requires_grad=False))
    np.testing.assert_allclose(y.grad.numpy(), 1 - np.tanh(y.numpy().astype(np.float64)) ** 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a_shape, p, bias_shape", [((5, 7), 3, (3,)), ((1, 7), 3, (1, 3)), ((2, 4, 7), 3, (1, 3)),
                                                     ((300, 7), 128, (128,)), ((3, 100, 7), 128, (1, 128)),
                                                     ((1, 7), 40000, (40000,))])
def test_addmm_has_the_bits_of_matmul_then_add_and_leaves_the_bias_alone(monkeypatch, dtype, a_shape, p, bias_shape):
    """ops.addmm (nn.Linear's forward): on the cpu in float32 the product is added to the bias rows
    inside sgemm where that is exact (and the output large enough to pay for the call); values and
    every gradient are those of a @ b + bias.broadcast_to(...) bit for bit, on both devices, and
    the bias's own buffer is not written (one row: its broadcast is the bias itself)."""
    from needle.backend_ndarray import functions
    rng = np.random.RandomState(len(a_shape) + a_shape[0])
    a_np, b_np = rng.randn(*a_shape).astype(dtype), rng.randn(7, p).astype(dtype)
    bias_np, g_np = rng.randn(*bias_shape).astype(dtype), rng.randn(*a_shape[:-1], p).astype(dtype)
    accumulated = []
    kernel = ndl.cpu().matmul_accumulate
    monkeypatch.setattr(ndl.cpu(), "matmul_accumulate", lambda *args: (accumulated.append(1), kernel(*args)))
    for device in (ndl.cpu(), ndl.cpu_numpy()):
        results = []
        for fused in (True, False):
            a, b, bias = (ndl.Tensor(x, device=device, dtype=dtype) for x in (a_np, b_np, bias_np))
            out = ndl.ops.addmm(bias, a, b) if fused else a @ b + bias.broadcast_to(a_shape[:-1] + (p,))
            out.backward(ndl.Tensor(g_np, device=device, dtype=dtype, requires_grad=False))
            results.append([t.numpy().tobytes() for t in (out, a.grad, b.grad, bias.grad)])
            assert bias.numpy().tobytes() == bias_np.tobytes()
        assert results[0] == results[1]
    # the sgemm-with-beta-1 path ran where it applies: float32, two rows or more (a one-row
    # product is no sgemm geometry accumulates_exactly vouches for), enough outputs
    rows = int(np.prod(a_shape[:-1]))
    assert bool(accumulated) == (dtype == "float32" and rows > 1 and rows * p >= functions._ADDMM_MIN_OUTPUTS)


def test_addmm_refuses_operands_that_do_not_fit_and_linear_uses_it():
    a, b = ndl.Tensor(np.ones((4, 5), np.float32)), ndl.Tensor(np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"addmm: bias of shape \(4,\)"):
        ndl.ops.addmm(ndl.Tensor(np.ones(4, np.float32)), a, b)
    with pytest.raises(ValueError, match="addmm"):
        ndl.ops.addmm(ndl.Tensor(np.ones(3, np.float32)), b, b)
    layer = ndl.nn.Linear(5, 3)
    assert type(layer(a).op).__name__ == "AddMM"
    assert type(ndl.nn.Linear(5, 3, bias=False)(a).op).__name__ == "MatMul"


def test_linear_takes_a_one_dimensional_input_as_pytorch():
    """x (in,) -> (out,), with the course's (1, out) bias as with PyTorch's (out,)."""
    layer = ndl.nn.Linear(4, 3, dtype="float64")
    ref = torch.nn.Linear(4, 3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.numpy().T))
        ref.bias.copy_(torch.tensor(layer.bias.numpy().reshape(-1)))
    x = np.random.RandomState(4).randn(4)
    out = layer(ndl.Tensor(x, dtype="float64"))
    assert out.shape == (3,)
    np.testing.assert_allclose(out.numpy(), ref(torch.tensor(x)).detach().numpy(), rtol=1e-12)
