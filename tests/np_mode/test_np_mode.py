"""needle with NEEDLE_BACKEND=np: arrays are numpy arrays and dtypes are preserved.

Collected only when NEEDLE_BACKEND=np (see tests/conftest.py); tests/test_numpy_mode.py
runs this folder in a subprocess with that variable set. Gradients are checked
against central finite differences in float64, by mutating the leaves' arrays in
place through `realize_cached_data().flat[j]` (the way the course's hw1 tests do).
"""
import os

import numpy as np
import pytest

import needle as ndl
from needle import autograd

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"


def T(*shape, positive=False, requires_grad=True):
    x = np.random.randn(*shape)
    if positive:
        x = np.abs(x) + 0.5
    return ndl.Tensor(x, requires_grad=requires_grad)


def numerical_grads(f, args, eps=1e-4):
    """d sum(f(*args)) / d arg, element by element, by central differences on the leaves' data."""
    grads = []
    for arg in args:
        data = arg.realize_cached_data()
        grad = np.zeros(data.shape)
        for j in range(data.size):
            data.flat[j] += eps
            plus = float(np.sum(f(*args).numpy()))
            data.flat[j] -= 2 * eps
            minus = float(np.sum(f(*args).numpy()))
            data.flat[j] += eps
            grad.flat[j] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


def gradient_check(f, *args, tol=1e-6):
    """Both the op's gradient_as_tuple and a full backward() agree with finite differences."""
    expected = numerical_grads(f, args)
    out = f(*args)
    if [id(x) for x in out.inputs] == [id(x) for x in args]:  # one op: check its own gradient too
        direct = [g.numpy() for g in out.op.gradient_as_tuple(ndl.Tensor(np.ones(out.shape)), out)]
        error = sum(np.linalg.norm(d - e) for d, e in zip(direct, expected))
        assert error < tol, (direct, expected)
    loss = f(*args).sum()
    loss.backward()
    for arg, e in zip(args, expected):
        assert arg.grad.shape == arg.shape
        assert arg.grad.dtype == np.float64
        assert np.linalg.norm(arg.grad.numpy() - e) < tol, (arg.grad.numpy(), e)


# --- backend and devices -------------------------------------------------------------------


def test_backend_is_numpy():
    assert ndl.BACKEND == "np"
    assert ndl.NDArray is np.ndarray
    # array_api is numpy plus the array functions ops call (needle.array_interface)
    assert ndl.array_api.float32 is np.float32 and ndl.array_api.random is np.random
    from needle.array_interface import missing_functions

    assert missing_functions(ndl.array_api) == []


def test_devices():
    dev = ndl.cpu()
    assert repr(dev) == "needle.cpu()"
    assert dev == ndl.cpu() and dev == ndl.default_device()
    assert hash(dev) == hash(ndl.cpu())
    assert dev.enabled()
    assert ndl.all_devices() == [dev]
    assert isinstance(dev, ndl.Device)
    assert T(2).device == dev


def test_device_factories_match_numpy():
    dev = ndl.cpu()
    np.random.seed(3)
    expected = np.random.randn(2, 3)
    np.random.seed(3)
    np.testing.assert_array_equal(dev.randn(2, 3), expected)
    np.random.seed(4)
    expected = np.random.rand(4)
    np.random.seed(4)
    np.testing.assert_array_equal(dev.rand(4), expected)
    idx = np.array([2, 0, 1])
    np.testing.assert_array_equal(dev.one_hot(3, idx), np.eye(3)[idx])
    np.testing.assert_array_equal(dev.full((2, 2), 1.5, dtype="float64"), np.full((2, 2), 1.5))
    assert dev.zeros(2, 3, dtype="float64").dtype == np.float64
    assert dev.ones(2).dtype == np.float32


# --- dtypes and storage ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype, stored", [(np.float64, np.float64), (np.float32, np.float32),
                                           (np.int64, np.int64), (np.bool_, np.bool_), (np.int32, np.int64),
                                           (np.uint8, np.int64), (np.float16, np.float32)])
def test_dtype_is_preserved_as_a_storage_dtype(dtype, stored):
    x = (np.random.randn(3, 2) * 3).astype(dtype)
    t = ndl.Tensor(x)
    assert t.dtype == stored
    assert isinstance(t.cached_data, np.ndarray)
    np.testing.assert_array_equal(t.numpy(), x)


def test_dtype_argument_accepts_numpy_types_and_strings():
    x = np.random.randn(2, 3)
    for spec in [np.float32, "float32", np.dtype("float32")]:
        t = ndl.Tensor(x, dtype=spec)
        assert t.dtype == np.float32 and t.dtype == "float32"
        np.testing.assert_array_equal(t.numpy(), x.astype(np.float32))
    # numbers make float tensors (the course's ndl.Tensor([6]) must be differentiable)
    assert ndl.Tensor([1, 2, 3]).dtype == np.float32
    assert ndl.Tensor([1.0, 2.0]).dtype == np.float64  # numpy's own inference for Python floats
    assert ndl.Tensor([1, 2], dtype="int64").dtype == np.int64


def test_tensor_copies_numpy_input_and_shares_tensor_input():
    x = np.random.randn(3)
    t = ndl.Tensor(x)
    x[0] = 100.0
    assert t.numpy()[0] != 100.0
    u = ndl.Tensor(t)
    assert u.cached_data is t.cached_data
    v = ndl.Tensor(t, dtype=np.float32)
    assert v.dtype == np.float32 and v.cached_data is not t.cached_data


def test_op_results_follow_pytorch_promotion():
    f64, f32 = T(2, 2), ndl.Tensor(np.ones((2, 2), dtype=np.float32))
    i64 = ndl.Tensor(np.arange(4).reshape(2, 2))
    assert (f64 * f64).dtype == np.float64
    assert (f64 + f32).dtype == np.float64
    assert (f32 @ f32).dtype == np.float32
    assert (f32 * np.float64(2)).dtype == np.float32  # NumPy 2 alone would give float64
    assert (i64 + i64).dtype == np.int64
    assert (i64 * 2).dtype == np.int64
    assert (i64 + 1).dtype == np.int64
    assert (i64 * 0.5).dtype == np.float32
    assert (i64 + f32).dtype == np.float32
    assert i64.sum().dtype == np.int64
    assert (i64 / 2).dtype == np.float32  # torch: integer true division gives the default float
    assert ndl.exp(f32).dtype == np.float32 and ndl.relu(f32).dtype == np.float32
    assert ndl.logsumexp(f64, axes=(1,)).dtype == np.float64


def test_cached_data_is_always_a_numpy_array():
    a = T(3, 4)
    results = [a, a + 1, a * a, a.sum(), a.sum(axes=0), ndl.logsumexp(a), a.max(), (a.sum() / 2),
               ndl.reshape(a, (12,)), ndl.split(ndl.reshape(a, (12,)), 0)[3]]
    for r in results:
        assert isinstance(r.cached_data, np.ndarray), type(r.cached_data)
        assert isinstance(r.realize_cached_data(), ndl.NDArray)
    assert a.sum().shape == () and a.sum().cached_data.dtype == np.float64
    a.sum().backward()
    assert isinstance(a.grad.cached_data, np.ndarray)
    np.testing.assert_array_equal(a.grad.numpy(), np.ones((3, 4)))


def test_backward_of_an_int_tensor_raises_type_error():
    t = ndl.Tensor(np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="int64"):
        (t * 2).sum().backward()
    with pytest.raises(TypeError, match="bool"):
        ndl.Tensor(np.array([True, False])).backward()


def test_int_leaf_in_a_float_graph_gets_no_gradient():
    t = ndl.Tensor(np.array([1, 2, 3]))  # a numpy int array keeps its (integer) dtype
    assert t.dtype == np.int64 and not t.requires_grad
    w = ndl.Tensor(np.array([0.5, 1.5, 2.5]))
    (t * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.array([1.0, 2.0, 3.0]))
    assert t.grad is None
    with pytest.raises(TypeError, match="int64"):
        ndl.Tensor(np.array([1, 2, 3]), requires_grad=True)


def test_init_dtypes():
    assert ndl.init.randn(3, 2).dtype == np.float32
    assert ndl.init.rand(3, dtype="float64").dtype == np.float64
    assert ndl.init.zeros(2, dtype="float64").dtype == np.float64
    assert ndl.init.ones(2, 2).dtype == np.float32
    assert ndl.init.randb(4, p=0.5).dtype == np.bool_
    labels = np.array([3, 0, 2])
    oh = ndl.init.one_hot(4, ndl.Tensor(labels), dtype="float64")
    assert oh.dtype == np.float64
    np.testing.assert_array_equal(oh.numpy(), np.eye(4)[labels])


def test_data_setter_and_detach():
    a = T(2, 3)
    b = a.detach()
    assert b.cached_data is a.cached_data and not b.requires_grad and b.op is None
    a.data = ndl.Tensor(np.ones(3))  # shape may change, dtype must not
    assert a.shape == (3,)
    with pytest.raises(TypeError, match="float32"):
        a.data = ndl.Tensor(np.ones(3, dtype=np.float32))


# --- forward values in float64 ---------------------------------------------------------------

FORWARD = [
    ("add", lambda a, b: a + b, lambda x, y: x + y),
    ("sub", lambda a, b: a - b, lambda x, y: x - y),
    ("mul", lambda a, b: a * b, lambda x, y: x * y),
    ("div", lambda a, b: a / b, lambda x, y: x / y),
    ("pow", lambda a, b: ndl.power(a, b), lambda x, y: x**y),
    ("add_scalar", lambda a, b: ndl.add_scalar(a, 1.7), lambda x, y: x + 1.7),
    ("mul_scalar", lambda a, b: ndl.mul_scalar(a, -0.3), lambda x, y: x * -0.3),
    ("div_scalar", lambda a, b: ndl.divide_scalar(a, 3.0), lambda x, y: x / 3.0),
    ("power_scalar", lambda a, b: ndl.power_scalar(a, 1.5), lambda x, y: x**1.5),
    ("rsub", lambda a, b: 2.0 - a, lambda x, y: 2.0 - x),
    ("rdiv", lambda a, b: 2.0 / a, lambda x, y: 2.0 / x),
    ("negate", lambda a, b: -a, lambda x, y: -x),
    ("log", lambda a, b: ndl.log(a), np.log),
    ("exp", lambda a, b: ndl.exp(a), np.exp),
    ("tanh", lambda a, b: ndl.tanh(a), np.tanh),
    ("relu", lambda a, b: ndl.relu(a - 1.0), lambda x, y: np.maximum(x - 1.0, 0)),
    ("sigmoid", lambda a, b: a.sigmoid(), lambda x, y: 1 / (1 + np.exp(-x))),
    ("transpose", lambda a, b: ndl.transpose(a), lambda x, y: np.swapaxes(x, -1, -2)),
    ("matmul", lambda a, b: a @ ndl.transpose(b), lambda x, y: x @ y.T),
    ("summation", lambda a, b: ndl.summation(a, axes=1), lambda x, y: x.sum(axis=1)),
    ("summation_all", lambda a, b: ndl.summation(a), lambda x, y: x.sum()),
    ("logsumexp", lambda a, b: ndl.logsumexp(a, axes=(1,)), lambda x, y: np.log(np.exp(x).sum(axis=1))),
    ("logsoftmax", lambda a, b: ndl.logsoftmax(a), lambda x, y: x - np.log(np.exp(x).sum(axis=1, keepdims=True))),
    ("max", lambda a, b: a.max(axes=0), lambda x, y: x.max(axis=0)),
    ("flip", lambda a, b: ndl.flip(a, (0, 1)), lambda x, y: np.flip(x, (0, 1))),
    ("stack", lambda a, b: ndl.stack([a, b], 1), lambda x, y: np.stack([x, y], 1)),
]


@pytest.mark.parametrize("fn,np_fn", [f[1:] for f in FORWARD], ids=[f[0] for f in FORWARD])
def test_forward_matches_numpy_in_float64(fn, np_fn):
    x = np.abs(np.random.randn(4, 5)) + 0.5
    y = np.abs(np.random.randn(4, 5)) + 0.5
    out = fn(ndl.Tensor(x), ndl.Tensor(y))
    expected = np_fn(x, y)
    assert out.dtype == np.float64
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_logsumexp_is_stable_for_huge_inputs():
    x = np.array([[1e10, 1e-10, -1e10], [1e10, 1e10, 0.0]])
    out = ndl.logsumexp(ndl.Tensor(x), axes=(1,)).numpy()
    shift = x.max(axis=1, keepdims=True)
    expected = np.log(np.exp(x - shift).sum(axis=1)) + shift[:, 0]
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_conv_forward_matches_a_direct_sum():
    x, w = np.random.randn(2, 6, 5, 3), np.random.randn(3, 3, 3, 4)
    for stride, padding in [(1, 0), (1, 1), (2, 1), (2, 0)]:
        out = ndl.conv(ndl.Tensor(x), ndl.Tensor(w), stride=stride, padding=padding).numpy()
        xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        ho = (xp.shape[1] - 3) // stride + 1
        wo = (xp.shape[2] - 3) // stride + 1
        expected = np.zeros((2, ho, wo, 4))
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
                expected[:, i, j, :] = np.einsum("nuvc,uvco->no", patch, w)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


# --- gradients vs finite differences ----------------------------------------------------------

GRADIENTS = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)]),
    ("multiply", lambda a, b: ndl.multiply(a, b), [(3, 4), (3, 4)]),
    ("divide", lambda a, b: ndl.divide(a, b), [(3, 4), (3, 4)]),
    ("power", lambda a, b: ndl.power(a, b), [(3, 4), (3, 4)]),
    ("add_scalar", lambda a: ndl.add_scalar(a, 2.0), [(3, 4)]),
    ("mul_scalar", lambda a: ndl.mul_scalar(a, 1.3), [(3, 4)]),
    ("divide_scalar", lambda a: ndl.divide_scalar(a, 0.7), [(3, 4)]),
    ("power_scalar", lambda a: ndl.power_scalar(a, 3), [(3, 4)]),
    ("power_scalar_negative", lambda a: ndl.power_scalar(a, -1.5), [(3, 4)]),
    ("negate", lambda a: ndl.negate(a), [(3, 4)]),
    ("log", lambda a: ndl.log(a), [(3, 4)]),
    ("exp", lambda a: ndl.exp(a), [(3, 4)]),
    ("tanh", lambda a: ndl.tanh(a), [(3, 4)]),
    ("relu", lambda a: ndl.relu(a - 1.1), [(3, 4)]),
    ("sigmoid", lambda a: a.sigmoid(), [(3, 4)]),
    ("transpose", lambda a: ndl.transpose(a, (0, 2)), [(2, 3, 4)]),
    ("transpose_default", lambda a: ndl.transpose(a), [(2, 3, 4)]),
    ("reshape", lambda a: ndl.reshape(a, (4, 6)), [(2, 3, 4)]),
    ("broadcast_to", lambda a: ndl.broadcast_to(a, (3, 2, 4)), [(2, 1)]),
    ("broadcast_to_lead", lambda a: ndl.broadcast_to(a, (3, 3, 3)), [(3,)]),
    ("summation", lambda a: ndl.summation(a, axes=(0, 2)), [(2, 3, 4)]),
    ("summation_int", lambda a: ndl.summation(a, axes=1), [(2, 3, 4)]),
    ("summation_all", lambda a: ndl.summation(a), [(2, 3)]),
    ("matmul", lambda a, b: ndl.matmul(a, b), [(3, 4), (4, 5)]),
    ("matmul_batched", lambda a, b: ndl.matmul(a, b), [(2, 3, 4), (2, 4, 2)]),
    ("matmul_bcast_right", lambda a, b: ndl.matmul(a, b), [(2, 2, 3, 4), (4, 3)]),
    ("matmul_bcast_left", lambda a, b: ndl.matmul(a, b), [(3, 4), (2, 2, 4, 3)]),
    ("logsumexp", lambda a: ndl.logsumexp(a, axes=(1,)), [(3, 4)]),
    ("logsumexp_all", lambda a: ndl.logsumexp(a), [(3, 4)]),
    ("logsumexp_two_axes", lambda a: ndl.logsumexp(a, axes=(0, 2)), [(2, 3, 4)]),
    ("logsoftmax", lambda a: ndl.logsoftmax(a), [(3, 5)]),
    ("max", lambda a: a.max(axes=1), [(3, 4)]),
    ("flip", lambda a: ndl.flip(a, (0, 1)), [(3, 4)]),
    ("dilate", lambda a: ndl.dilate(a, (0, 1), 1), [(2, 3)]),
    ("getitem", lambda a: a[1:, ::2], [(3, 4)]),
    ("stack", lambda a, b: ndl.stack([a, b], 1), [(2, 3), (2, 3)]),
    ("composite", lambda a, b: ndl.exp(ndl.logsumexp(a @ b, axes=(1,))) * 0.1, [(3, 4), (4, 2)]),
]


POSITIVE_INPUTS = {"divide", "power", "power_scalar_negative", "log"}


@pytest.mark.parametrize("fn,shapes", [g[1:] for g in GRADIENTS], ids=[g[0] for g in GRADIENTS])
def test_gradient_matches_finite_differences(request, fn, shapes):
    positive = request.node.callspec.id in POSITIVE_INPUTS
    args = [T(*s, positive=positive) for s in shapes]
    gradient_check(fn, *args)


def test_split_gradient():
    a = T(3, 4)
    parts = ndl.split(a, 1)
    assert isinstance(parts, ndl.TensorTuple) and len(parts) == 4
    loss = parts[0] * 2 + parts[3] * parts[1]
    loss.sum().backward()
    x = a.numpy()
    expected = np.zeros((3, 4))
    expected[:, 0] = 2
    expected[:, 1] = x[:, 3]
    expected[:, 3] = x[:, 1]
    np.testing.assert_allclose(a.grad.numpy(), expected, rtol=1e-12)


def test_conv_gradient_matches_finite_differences():
    x, w = T(1, 5, 4, 2), T(3, 3, 2, 2)
    for stride, padding in [(1, 1), (2, 0), (2, 1)]:
        gradient_check(lambda a, b: ndl.conv(a, b, stride=stride, padding=padding), x, w)


# --- graph structure and higher-order gradients --------------------------------------------------


def test_topo_sort_of_the_hw1_example():
    x, y = np.random.randn(1, 1), np.random.randn(1, 1)
    a, b = ndl.Tensor(x), ndl.Tensor(y)
    c = 3 * a * a + 4 * b * a - a
    order = autograd.find_topo_sort([c])
    assert len(order) == 9
    kinds = [type(n.op).__name__ if n.op is not None else "leaf" for n in order]
    assert kinds == ["leaf", "MulScalar", "EWiseMul", "leaf", "MulScalar", "EWiseMul", "EWiseAdd", "Negate",
                     "EWiseAdd"]
    assert order[0] is a and order[3] is b and order[-1] is c
    assert order[2].inputs == [order[1], a] and order[5].inputs == [order[4], a]
    assert order[6].inputs == [order[2], order[5]] and order[8].inputs == [order[6], order[7]]
    expected = [x, 3 * x, 3 * x * x, y, 4 * y, 4 * y * x, 3 * x * x + 4 * y * x, -x, 3 * x * x + 4 * y * x - x]
    for node, value in zip(order, expected):
        np.testing.assert_allclose(node.numpy(), value, rtol=1e-12)


def test_topo_sort_visits_shared_nodes_once_and_inputs_first():
    a = T(2, 2)
    b = ndl.exp(a)
    c = b @ b + b * a
    d = ndl.summation(c) + ndl.summation(b)
    order = autograd.find_topo_sort([d])
    assert len(order) == len(set(map(id, order)))
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for inp in node.inputs:
            assert position[id(inp)] < position[id(node)]
    assert order[0] is a and order[-1] is d


def test_backward_sets_every_grad_and_overwrites():
    x = np.random.randn(3)
    a = T(3)
    a.cached_data[...] = x
    b = a * a
    c = ndl.summation(b * 3)
    c.backward()
    np.testing.assert_allclose(a.grad.numpy(), 6 * x, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), np.full(3, 3.0), rtol=1e-12)
    np.testing.assert_allclose(c.grad.numpy(), 1.0)
    c.backward()  # a second call overwrites, it does not accumulate
    np.testing.assert_allclose(a.grad.numpy(), 6 * x, rtol=1e-12)


def test_gradient_of_gradient():
    """hw1: y = x2*x2 + x2*x3; after y.backward(), x2.grad.backward() gives d/dx (2*x2 + x3)."""
    x2, x3 = T(4), T(4)
    y = x2 * x2 + x2 * x3
    y.backward()
    grad_x2 = x2.grad
    grad_x3 = x3.grad
    np.testing.assert_allclose(grad_x2.numpy(), 2 * x2.numpy() + x3.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad_x3.numpy(), x2.numpy(), rtol=1e-12)
    grad_x2.backward()
    np.testing.assert_allclose(x2.grad.numpy(), np.full(4, 2.0), rtol=1e-12)
    np.testing.assert_allclose(x3.grad.numpy(), np.full(4, 1.0), rtol=1e-12)


def test_second_derivative_matches_finite_differences():
    """d/dx sum(f'(x)) for f = tanh(x) * x**3, checked against differences of the first derivative."""

    def first_derivative(t):
        t.grad = None
        (ndl.tanh(t) * t**3).sum().backward()
        return t.grad

    a = T(5)
    g = first_derivative(a)
    g.sum().backward()
    second = a.grad.numpy()
    expected = numerical_grads(lambda t: first_derivative(ndl.Tensor(t.numpy())), [a])[0]
    np.testing.assert_allclose(second, expected, rtol=1e-6, atol=1e-6)


# --- the same semantics as nd mode (tests/test_dtypes.py) ------------------------------------

@pytest.mark.parametrize("name", ["add", "multiply", "divide", "power", "maximum"])
@pytest.mark.parametrize("shapes", [((1, 3), (3,)), ((2, 1, 4), (3, 1)), ((4,), ())])
def test_op_functions_broadcast_and_sum_gradients_back(name, shapes):
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(3)
    a, b = np.asarray(rng.rand(*shapes[0]) + 0.5), np.asarray(rng.rand(*shapes[1]) + 0.5)
    x, y = ndl.Tensor(a), ndl.Tensor(b)
    out = getattr(ndl, name)(x, y)
    tx, ty = (torch.tensor(v, requires_grad=True) for v in (a, b))
    t_out = {"add": torch.add, "multiply": torch.mul, "divide": torch.div, "power": torch.pow,
             "maximum": torch.maximum}[name](tx, ty)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    t_out.sum().backward()
    assert x.grad.shape == a.shape and y.grad.shape == b.shape
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-10)


def test_bool_mask_and_int64_labels():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) - 2.5
    x = ndl.Tensor(a)
    mask = x > 3
    assert mask.dtype == np.bool_ and not mask.requires_grad
    picked = x[mask]
    np.testing.assert_array_equal(picked.numpy(), a[a > 3])
    picked.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), (a > 3).astype(np.float64))
    assert x.argmax(axis=1).dtype == np.int64
    logits = ndl.Tensor(np.array([[1e8, 1e8]], dtype=np.float32))
    loss = ndl.nn.SoftmaxLoss()(logits, ndl.Tensor(np.array([1]), dtype="int64"))
    loss.backward()
    np.testing.assert_allclose(loss.numpy(), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(logits.grad.numpy(), [[0.5, -0.5]], rtol=1e-6)
