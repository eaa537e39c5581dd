"""Every op, forward against numpy/PyTorch and backward against PyTorch autograd.

Each backward check uses a random output weight W: loss = sum(out * W), so the
incoming adjoint is not all ones. References are computed in float64.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
from needle import ops

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]
DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=1e-5, atol=1e-4), "float64": dict(rtol=1e-9, atol=1e-9)}


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=0):
    return rng(seed).standard_normal(shape)


def positive(*shape, seed=0, low=0.5, high=2.0):
    return rng(seed).uniform(low, high, size=shape)


def check(ndl_fn, torch_fn, arrays, device, dtype="float32", grad=True, tol=None):
    """Compare ndl_fn(*tensors) with torch_fn(*torch_tensors), values and gradients."""
    tol = TOL[dtype] if tol is None else tol
    xs = [ndl.Tensor(a, device=device, dtype=dtype) for a in arrays]
    ts = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]
    out = ndl_fn(*xs)
    ref = torch_fn(*ts)
    assert isinstance(out, ndl.Tensor)
    assert out.shape == tuple(ref.shape)
    assert out.device == device
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), **tol)
    if not grad:
        return xs, out
    w = rng(123).standard_normal(tuple(ref.shape))
    (out * ndl.Tensor(w, device=device, dtype=dtype)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    for x, t in zip(xs, ts):
        assert x.grad is not None
        assert x.grad.shape == x.shape
        assert x.grad.device == device
        assert x.grad.dtype == dtype
        expected = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        np.testing.assert_allclose(x.grad.numpy(), expected, **tol)
    return xs, out


# --- elementwise binary ops ---------------------------------------------------------------

SHAPES = [(1,), (5,), (3, 4), (1, 4), (2, 1, 3), (2, 3, 4)]

BINARY = {
    "add": (ops.add, torch.add, randn),
    "multiply": (ops.multiply, torch.mul, randn),
    "divide": (ops.divide, torch.div, positive),
    "power": (ops.power, torch.pow, positive),
    "EWiseAdd": (lambda a, b: ops.EWiseAdd()(a, b), torch.add, randn),
    "EWiseMul": (lambda a, b: ops.EWiseMul()(a, b), torch.mul, randn),
    "EWiseDiv": (lambda a, b: ops.EWiseDiv()(a, b), torch.div, positive),
    "EWisePow": (lambda a, b: ops.EWisePow()(a, b), torch.pow, positive),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_ops(name, shape, dtype, device):
    fn, tfn, gen = BINARY[name]
    check(fn, tfn, [gen(*shape, seed=1), gen(*shape, seed=2)], device, dtype)


def test_binary_op_classes_require_equal_shapes():
    a = ndl.Tensor(np.ones((3, 1)))
    b = ndl.Tensor(np.ones((3, 4)))
    for op in [ops.EWiseAdd(), ops.EWiseMul(), ops.EWiseDiv(), ops.EWisePow()]:
        with pytest.raises(ValueError):
            op(a, b)


# Tensor operators broadcast like numpy / PyTorch
BROADCAST_PAIRS = [
    ((3, 1), (1, 4)),
    ((2, 3, 4), (4,)),
    ((4,), (2, 3, 4)),
    ((2, 1, 4), (3, 1)),
    ((1,), (3, 2)),
    ((), (2, 3)),
    ((5, 1, 1), (1, 2, 1)),
]

OPERATORS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a ** b,
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("op", list(OPERATORS))
def test_tensor_operators_broadcast(op, shapes, device):
    fn = OPERATORS[op]
    gen = positive if op in ("/", "**") else randn
    a, b = gen(*shapes[0], seed=3), gen(*shapes[1], seed=4)
    check(fn, fn, [a, b], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_operator_broadcast_shape_error(device):
    a = ndl.Tensor(np.ones((3, 2)), device=device)
    b = ndl.Tensor(np.ones((4,)), device=device)
    with pytest.raises(ValueError):
        a + b


# --- scalar ops --------------------------------------------------------------------------

SCALAR_CASES = {
    "add_scalar": (lambda a: ops.add_scalar(a, 1.7), lambda t: t + 1.7, randn),
    "add_scalar_neg": (lambda a: ops.add_scalar(a, -3), lambda t: t - 3, randn),
    "mul_scalar": (lambda a: ops.mul_scalar(a, -2.5), lambda t: t * -2.5, randn),
    "mul_scalar_npfloat": (lambda a: ops.mul_scalar(a, np.float32(0.5)), lambda t: t * 0.5, randn),
    "divide_scalar": (lambda a: ops.divide_scalar(a, 4.0), lambda t: t / 4.0, randn),
    "divide_scalar_neg": (lambda a: ops.divide_scalar(a, -0.3), lambda t: t / -0.3, randn),
    "power_scalar_2": (lambda a: ops.power_scalar(a, 2), lambda t: t ** 2, randn),
    "power_scalar_3": (lambda a: ops.power_scalar(a, 3), lambda t: t ** 3, randn),
    "power_scalar_npint": (lambda a: ops.power_scalar(a, np.int64(3)), lambda t: t ** 3, randn),
    "power_scalar_0": (lambda a: ops.power_scalar(a, 0), lambda t: t ** 0, positive),
    "power_scalar_neg1": (lambda a: ops.power_scalar(a, -1), lambda t: t ** -1, positive),
    "power_scalar_half": (lambda a: ops.power_scalar(a, 0.5), lambda t: t ** 0.5, positive),
    "power_scalar_frac": (lambda a: ops.power_scalar(a, -1.5), lambda t: t ** -1.5, positive),
    "sqrt": (ops.sqrt, torch.sqrt, positive),
    "negate": (ops.negate, torch.neg, randn),
    "log": (ops.log, torch.log, positive),
    "exp": (ops.exp, torch.exp, randn),
    "relu": (ops.relu, torch.relu, randn),
    "tanh": (ops.tanh, torch.tanh, randn),
    "sigmoid": (ops.sigmoid, torch.sigmoid, randn),
    # Tensor operators with a scalar on either side
    "t+s": (lambda a: a + 2.0, lambda t: t + 2.0, randn),
    "s+t": (lambda a: 2.0 + a, lambda t: 2.0 + t, randn),
    "t-s": (lambda a: a - 2.0, lambda t: t - 2.0, randn),
    "s-t": (lambda a: 2.0 - a, lambda t: 2.0 - t, randn),
    "t*s": (lambda a: a * 3, lambda t: t * 3, randn),
    "s*t": (lambda a: 3 * a, lambda t: 3 * t, randn),
    "t/s": (lambda a: a / 3, lambda t: t / 3, randn),
    "s/t": (lambda a: 3 / a, lambda t: 3 / t, positive),
    "t**s": (lambda a: a ** 2.5, lambda t: t ** 2.5, positive),
    "s**t": (lambda a: 2.0 ** a, lambda t: 2.0 ** t, randn),
    "-t": (lambda a: -a, lambda t: -t, randn),
    "method_exp": (lambda a: a.exp(), torch.exp, randn),
    "method_log": (lambda a: a.log(), torch.log, positive),
    "method_tanh": (lambda a: a.tanh(), torch.tanh, randn),
    "method_relu": (lambda a: a.relu(), torch.relu, randn),
    "method_sigmoid": (lambda a: a.sigmoid(), torch.sigmoid, randn),
    "method_sqrt": (lambda a: a.sqrt(), torch.sqrt, positive),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (4,), (3, 5), (2, 1, 3)], ids=str)
@pytest.mark.parametrize("name", list(SCALAR_CASES))
def test_unary_and_scalar_ops(name, shape, dtype, device):
    fn, tfn, gen = SCALAR_CASES[name]
    check(fn, tfn, [gen(*shape, seed=5)], device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_unary_ops_on_0d_tensor(device):
    for fn, tfn, gen in [(ops.exp, torch.exp, randn), (ops.log, torch.log, positive), (ops.tanh, torch.tanh, randn)]:
        check(fn, tfn, [np.asarray(gen(1, seed=6)[0])], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_relu_gradient_at_zero_is_zero(device):
    a = np.array([-1.0, 0.0, 2.0, 0.0, -0.0])
    check(ops.relu, torch.relu, [a], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_sigmoid_large_inputs_are_finite(device):
    a = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    xs, out = check(ops.sigmoid, torch.sigmoid, [a], device, "float64")
    assert np.all(np.isfinite(out.numpy()))
    assert np.all(np.isfinite(xs[0].grad.numpy()))


NUMPY_SCALAR_CASES = {
    "np64*t": (lambda a: np.float64(2.5) * a, lambda t: 2.5 * t),
    "np32+t": (lambda a: np.float32(1.5) + a, lambda t: 1.5 + t),
    "np-t": (lambda a: np.float64(1.0) - a, lambda t: 1.0 - t),
    "np/t": (lambda a: np.float64(3.0) / a, lambda t: 3.0 / t),
    "np**t": (lambda a: np.float64(2.0) ** a, lambda t: 2.0 ** t),
    "npint*t": (lambda a: np.int64(3) * a, lambda t: 3 * t),
    "t*np": (lambda a: a * np.float64(2.5), lambda t: t * 2.5),
    "t**np": (lambda a: a ** np.float64(2.0), lambda t: t ** 2.0),
    "t*arr1": (lambda a: a * np.array([2.0]), lambda t: t * 2.0),
    "arr1*t": (lambda a: np.array([2.0]) * a, lambda t: 2.0 * t),
    "t+arr1": (lambda a: a + np.array([-1.0]), lambda t: t - 1.0),
    "t**arr1": (lambda a: a ** np.array([3.0]), lambda t: t ** 3.0),
    "t/arr1": (lambda a: a / np.array([4.0]), lambda t: t / 4.0),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(NUMPY_SCALAR_CASES))
def test_numpy_scalars_on_either_side(name, device):
    """numpy scalars (and shape-(1,) arrays) act like Python numbers, on either side."""
    fn, tfn = NUMPY_SCALAR_CASES[name]
    check(fn, tfn, [positive(2, 3, seed=5)], device, "float64")
    xs, out = check(fn, tfn, [positive(2, 3, seed=5)], device, "float32")
    assert isinstance(out, ndl.Tensor) and out.dtype == "float32"


def test_numpy_array_with_tensor_is_rejected():
    x = ndl.Tensor(np.ones((2, 3)))
    with pytest.raises(TypeError):
        np.ones((2, 3)) * x
    with pytest.raises(TypeError):
        x + np.ones((2, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_power_scalar_zero_exponent_at_zero(device):
    a = np.array([0.0, -1.5, 2.0, 0.0])
    xs, out = check(lambda x: ops.power_scalar(x, 0), lambda t: t ** 0, [a], device, "float64")
    assert np.all(np.isfinite(xs[0].grad.numpy()))


@pytest.mark.parametrize("device", DEVICES)
def test_power_with_zero_base(device):
    """d/db a**b is 0 where a == 0 (and b > 0): a**b does not depend on b there."""
    a = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.7]])
    b = np.array([[2.0, -1.0, 1.0], [0.5, 3.0, 2.0]])
    xs, out = check(lambda x, y: x ** y, torch.pow, [a, b], device, "float64")
    assert np.all(np.isfinite(xs[1].grad.numpy()))


# --- shape ops -----------------------------------------------------------------------------

TRANSPOSE_CASES = [
    ((3, 4), None),
    ((2, 3, 4), None),
    ((2, 3, 4), (0, 1)),
    ((2, 3, 4), (1, 2)),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (2, 0)),
    ((2, 1, 3, 4), (2, 3)),
    ((2, 1, 3, 4), None),
    ((2, 1, 3, 4), (0, 3)),
    ((2, 3, 4), (-1, 0)),
]


def _torch_transpose(axes):
    return lambda t: t.transpose(-2, -1) if axes is None else t.transpose(*axes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axes", TRANSPOSE_CASES, ids=str)
def test_transpose(shape, axes, device):
    check(lambda a: ops.transpose(a, axes), _torch_transpose(axes), [randn(*shape)], device)
    if axes is None:
        check(lambda a: a.transpose(), _torch_transpose(axes), [randn(*shape)], device)
    else:
        check(lambda a: a.transpose(axes), _torch_transpose(axes), [randn(*shape)], device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,perm", [
    ((3, 4), (1, 0)),
    ((2, 3, 4), (2, 0, 1)),
    ((2, 3, 4), (1, 2, 0)),
    ((2, 1, 3, 4), (3, 1, 0, 2)),
    ((2, 3, 4), (0, 1, 2)),
    ((2, 3, 4), (-1, 0, 1)),
], ids=str)
def test_permute(shape, perm, device):
    check(lambda a: ops.permute(a, perm), lambda t: t.permute(*perm), [randn(*shape)], device)
    check(lambda a: a.permute(*perm), lambda t: t.permute(*perm), [randn(*shape)], device)
    check(lambda a: a.permute(perm), lambda t: t.permute(*perm), [randn(*shape)], device)


RESHAPE_CASES = [
    ((1,), (1, 1, 1)),
    ((12,), (3, 4)),
    ((3, 4), (12,)),
    ((3, 4), (2, 6)),
    ((2, 3, 4), (4, -1)),
    ((2, 3, 4), (-1,)),
    ((2, 3, 4), (2, 1, 3, 1, 4)),
    ((1, 5, 1), (5,)),
    ((2, 3, 4), (3, 2, -1)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,new", RESHAPE_CASES, ids=str)
def test_reshape(shape, new, device):
    check(lambda a: ops.reshape(a, new), lambda t: t.reshape(new), [randn(*shape)], device)
    check(lambda a: a.reshape(new), lambda t: t.reshape(new), [randn(*shape)], device)
    check(lambda a: a.reshape(*new), lambda t: t.reshape(new), [randn(*shape)], device)
    check(lambda a: a.view(new), lambda t: t.reshape(new), [randn(*shape)], device)


@pytest.mark.parametrize("device", DEVICES)
def test_reshape_of_non_compact_input(device):
    # a transposed (strided) tensor must be reshaped in row-major order of its logical layout
    check(lambda a: ops.reshape(ops.transpose(a, (0, 2)), (4, 6)),
          lambda t: t.transpose(0, 2).reshape(4, 6), [randn(2, 3, 4)], device)
    check(lambda a: a.permute(1, 0).reshape(-1),
          lambda t: t.permute(1, 0).reshape(-1), [randn(3, 5)], device)
    check(lambda a: ops.broadcast_to(a, (3, 4)).reshape((2, 6)),
          lambda t: t.broadcast_to((3, 4)).reshape(2, 6), [randn(1, 4)], device)


@pytest.mark.parametrize("device", DEVICES)
def test_reshape_errors(device):
    a = ndl.Tensor(np.ones((2, 3)), device=device)
    for bad in [(4,), (-1, -1), (5, -1)]:
        with pytest.raises(ValueError):
            ops.reshape(a, bad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,start,end", [
    ((2, 3, 4), 0, -1),
    ((2, 3, 4), 1, -1),
    ((2, 3, 4), 0, 1),
    ((2, 3, 4, 5), 1, 2),
    ((2, 3, 4), 2, 2),
    ((5,), 0, -1),
], ids=str)
def test_flatten(shape, start, end, device):
    check(lambda a: ops.flatten(a, start, end), lambda t: torch.flatten(t, start, end), [randn(*shape)], device)
    check(lambda a: a.flatten(start, end), lambda t: t.flatten(start, end), [randn(*shape)], device)
    if (start, end) == (0, -1):
        check(lambda a: a.flatten(), lambda t: t.flatten(), [randn(*shape)], device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (5, 1), (1,), ()], ids=str)
def test_T(shape, device):
    check(lambda a: a.T, lambda t: t.T if t.ndim == 2 else t, [randn(*shape)], device)


BROADCAST_CASES = [
    ((1,), (3,)),
    ((3,), (3, 3, 3)),
    ((), (3, 3, 3)),
    ((1, 5), (1, 3, 5)),
    ((1, 5), (4, 5)),
    ((4, 1), (4, 5)),
    ((4, 1, 3), (2, 4, 5, 3)),
    ((2, 3), (2, 3)),
    ((1, 1), (2, 3)),
    ((2, 1, 1), (2, 3, 1)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,target", BROADCAST_CASES, ids=str)
def test_broadcast_to(shape, target, dtype, device):
    check(lambda a: ops.broadcast_to(a, target), lambda t: t.broadcast_to(target), [randn(*shape)], device, dtype)
    check(lambda a: a.broadcast_to(list(target)), lambda t: t.broadcast_to(target), [randn(*shape)], device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_broadcast_to_error(device):
    a = ndl.Tensor(np.ones((2, 3)), device=device)
    for bad in [(3, 3), (3,), (2, 3, 1)]:
        with pytest.raises(ValueError):
            ops.broadcast_to(a, bad)


SUM_CASES = [
    ((5,), None),
    ((5,), 0),
    ((3, 4), None),
    ((3, 4), 0),
    ((3, 4), 1),
    ((3, 4), -1),
    ((3, 4), (0, 1)),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (2, 0)),
    ((2, 3, 4), [1]),
    ((2, 1, 4), 1),
    ((1, 1, 1), None),
    ((2, 3, 1, 4), (1, 3)),
]


def _torch_axes(axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    return (axes,) if isinstance(axes, int) else tuple(axes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axes", SUM_CASES, ids=str)
def test_summation(shape, axes, keepdims, dtype, device):
    def tfn(t):
        return t.sum(dim=_torch_axes(axes, t.ndim), keepdim=keepdims)

    check(lambda a: ops.summation(a, axes, keepdims=keepdims), tfn, [randn(*shape)], device, dtype)
    check(lambda a: a.sum(axes, keepdims=keepdims), tfn, [randn(*shape)], device, dtype)
    if not keepdims:
        check(lambda a: ops.summation(a, axes=axes), tfn, [randn(*shape)], device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axes", SUM_CASES, ids=str)
def test_mean(shape, axes, keepdims, device):
    def tfn(t):
        return t.mean(dim=_torch_axes(axes, t.ndim), keepdim=keepdims)

    check(lambda a: ops.mean(a, axes, keepdims=keepdims), tfn, [randn(*shape)], device, "float64")
    check(lambda a: a.mean(axes, keepdims=keepdims), tfn, [randn(*shape)], device, "float64")


# --- max / argmax ------------------------------------------------------------------------

MAX_CASES = [
    ((5,), None),
    ((5,), 0),
    ((3, 4), None),
    ((3, 4), 0),
    ((3, 4), 1),
    ((3, 4), -1),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (1, 2)),
    ((2, 1, 4), 1),
    ((2, 3, 1, 4), (1, 3)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axes", MAX_CASES, ids=str)
def test_max_distinct_values(shape, axes, keepdims, dtype, device):
    """Without ties the max is differentiable; compare with torch.amax."""
    a = rng(7).permutation(int(np.prod(shape))).reshape(shape) / 3.0

    def tfn(t):
        return torch.amax(t, dim=_torch_axes(axes, t.ndim), keepdim=keepdims)

    check(lambda x: ops.max(x, axes, keepdims=keepdims), tfn, [a], device, dtype)
    check(lambda x: x.max(axes=axes, keepdims=keepdims), tfn, [a], device, dtype)


def _torch_max_grad(a, axes, keepdims, w):
    """PyTorch's gradient of sum(max(a) * w): torch.max(dim) for one given axis (all of w to the
    first maximum), torch.amax for several axes or all of them (split evenly among ties)."""
    t = torch.tensor(a, requires_grad=True)
    if axes is not None and (isinstance(axes, int) or len(axes) == 1):
        dim = axes if isinstance(axes, int) else axes[0]
        out = torch.max(t, dim=dim, keepdim=keepdims).values
    else:
        out = torch.amax(t, dim=_torch_axes(axes, t.ndim), keepdim=keepdims)
    (out * torch.tensor(w.reshape(out.shape))).sum().backward()
    return t.grad.numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,axes", MAX_CASES, ids=str)
def test_max_ties_gradient_follows_torch(shape, axes, keepdims, device):
    """One axis: the first maximal index gets the gradient; several or all axes: the ties share it."""
    a = rng(8).integers(0, 3, size=shape).astype(np.float64)  # many ties
    x = ndl.Tensor(a, device=device, dtype="float64")
    out = ops.max(x, axes, keepdims=keepdims)
    ref_keep = np.max(a, axis=None if axes is None else _torch_axes(axes, a.ndim), keepdims=True)
    ref = ref_keep if keepdims else ref_keep.reshape(np.max(a, axis=None if axes is None else _torch_axes(axes, a.ndim)).shape)
    np.testing.assert_array_equal(out.numpy().reshape(ref.shape), ref)
    assert out.shape == ref.shape
    w = randn(*ref.shape, seed=9)
    (out * ndl.Tensor(w, device=device, dtype="float64")).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), _torch_max_grad(a, axes, keepdims, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_max_tie_gradient_explicit(device):
    a = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [5.0, 1.0, 5.0, 5.0]])
    for dim in [0, 1]:
        x = ndl.Tensor(a, device=device, dtype="float64")
        t = torch.tensor(a, requires_grad=True)
        w = randn(a.shape[1 - dim], seed=10)
        (ops.max(x, dim) * ndl.Tensor(w, device=device, dtype="float64")).sum().backward()
        values = torch.amax(t, dim=dim)
        expected = np.zeros_like(a)
        first = np.argmax(a, axis=dim)  # numpy's argmax is the first occurrence
        for k, j in enumerate(first):
            if dim == 1:
                expected[k, j] = w[k]
            else:
                expected[j, k] = w[k]
        np.testing.assert_allclose(x.grad.numpy(), expected)
        np.testing.assert_allclose(ops.max(x, dim).numpy(), values.detach().numpy())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axis", [((7,), None), ((3, 4), None), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), -1), ((2, 3, 4), 1)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax(shape, axis, keepdims, device):
    a = rng(11).integers(0, 4, size=shape).astype(np.float64)  # ties: first index wins
    x = ndl.Tensor(a, device=device)
    out = x.argmax(axis, keepdims=keepdims)
    ref = np.argmax(a, axis=axis, keepdims=keepdims)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy().reshape(ref.shape), ref)
    out2 = ops.argmax(x, axis, keepdims=keepdims)
    np.testing.assert_array_equal(out2.numpy().reshape(ref.shape), ref)
    if axis is not None:
        assert out.shape == ref.shape


# --- matmul ----------------------------------------------------------------------------------

MATMUL_CASES = [
    ((1, 1), (1, 1)),
    ((3, 4), (4, 5)),
    ((5, 1), (1, 3)),
    ((1, 4), (4, 1)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((3, 2, 3, 4), (4, 2)),
    ((4, 3), (2, 2, 3, 2)),
    ((2, 1, 3, 4), (1, 5, 4, 2)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (2, 4, 5)),
    ((2, 2, 3, 4), (2, 2, 4, 5)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb", MATMUL_CASES, ids=str)
def test_matmul(sa, sb, dtype, device):
    arrays = [randn(*sa, seed=12), randn(*sb, seed=13)]
    check(lambda a, b: ops.matmul(a, b), torch.matmul, arrays, device, dtype)
    check(lambda a, b: a @ b, torch.matmul, arrays, device, dtype)
    check(lambda a, b: ops.MatMul()(a, b), torch.matmul, arrays, device, dtype)
    check(lambda a, b: a.matmul(b), torch.matmul, arrays, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sa,sb", [((4,), (4, 3)), ((5, 4), (4,)), ((4,), (4,)), ((2, 5, 4), (4,)), ((4,), (2, 4, 3)), ((1,), (1, 2))], ids=str)
def test_matmul_1d_helper(sa, sb, device):
    arrays = [randn(*sa, seed=14), randn(*sb, seed=15)]
    check(lambda a, b: ops.matmul(a, b), torch.matmul, arrays, device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_larger_float32(device):
    # sizes that are not multiples of any tile size
    check(ops.matmul, torch.matmul, [randn(17, 33, seed=16), randn(33, 9, seed=17)], device,
          "float32", tol=dict(rtol=1e-4, atol=1e-4))


def test_matmul_shape_errors():
    a = ndl.Tensor(np.ones((3, 4)))
    with pytest.raises(ValueError):
        ops.matmul(a, ndl.Tensor(np.ones((3, 4))))
    with pytest.raises(ValueError):
        ops.matmul(ndl.Tensor(np.ones((2, 3, 4))), ndl.Tensor(np.ones((3, 4, 2))))


# --- logsumexp / logsoftmax --------------------------------------------------------------

LSE_CASES = [
    ((5,), None),
    ((5,), 0),
    ((3, 4), None),
    ((3, 4), 0),
    ((3, 4), 1),
    ((3, 4), (0, 1)),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), -1),
    ((2, 1, 4), 1),
    ((1, 1, 3), (0, 1)),
    ((2, 3, 1, 4), (1, 3)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axes", LSE_CASES, ids=str)
def test_logsumexp(shape, axes, dtype, device):
    def tfn(t):
        return torch.logsumexp(t, dim=_torch_axes(axes, t.ndim))

    check(lambda a: ops.logsumexp(a, axes), tfn, [randn(*shape, seed=18) * 3], device, dtype)
    check(lambda a: ops.LogSumExp(axes=axes)(a), tfn, [randn(*shape, seed=18) * 3], device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("axes", [None, 0, 1, (0, 1)], ids=str)
def test_logsumexp_is_stable(axes, device):
    a = np.array([[1e10, 1e-10, -1e10], [3.0, 1e10, 1e10], [-1e10, -1e10, -1e10]])

    def tfn(t):
        return torch.logsumexp(t, dim=_torch_axes(axes, t.ndim))

    xs, out = check(lambda x: ops.logsumexp(x, axes), tfn, [a], device, "float64", tol=dict(rtol=1e-12, atol=1e-6))
    assert np.all(np.isfinite(out.numpy()))
    assert np.all(np.isfinite(xs[0].grad.numpy()))


@pytest.mark.parametrize("device", DEVICES)
def test_logsumexp_and_logsoftmax_with_minus_inf_entries(device):
    """Masked entries (-inf) contribute nothing and get zero gradient."""
    a = np.array([[0.5, -np.inf, 1.0], [2.0, 3.0, -np.inf]])
    xs, out = check(lambda x: ops.logsumexp(x, (1,)), lambda t: torch.logsumexp(t, 1), [a], device, "float64")
    assert np.all(np.isfinite(xs[0].grad.numpy()))
    # softmax = exp(logsoftmax) keeps the output finite
    xs, out = check(lambda x: ops.exp(ops.logsoftmax(x)), lambda t: torch.softmax(t, -1), [a], device, "float64")
    assert np.all(np.isfinite(xs[0].grad.numpy()))


LOGSOFTMAX_CASES = [((1, 1), -1), ((4, 5), -1), ((4, 5), 1), ((4, 5), 0), ((2, 3, 4), -1), ((2, 3, 4), 1), ((5,), 0), ((3, 1), 1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LOGSOFTMAX_CASES, ids=str)
def test_logsoftmax(shape, axis, dtype, device):
    a = randn(*shape, seed=19) * 3
    check(lambda x: ops.logsoftmax(x, axis), lambda t: torch.log_softmax(t, dim=axis), [a], device, dtype)
    check(lambda x: ops.LogSoftmax(axis)(x), lambda t: torch.log_softmax(t, dim=axis), [a], device, dtype)
    if axis in (-1, len(shape) - 1):
        check(ops.logsoftmax, lambda t: torch.log_softmax(t, dim=-1), [a], device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_logsoftmax_is_stable(device):
    a = randn(4, 6, seed=20) * 1e5
    xs, out = check(ops.logsoftmax, lambda t: torch.log_softmax(t, dim=-1), [a], device, "float64",
                    tol=dict(rtol=1e-9, atol=1e-6))
    assert np.all(np.isfinite(out.numpy()))


# --- tuple ops ---------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_make_tuple_and_get_item(device):
    arrays = [randn(3, 2, seed=21), randn(4, seed=22), randn(2, 2, seed=23)]
    xs = [ndl.Tensor(a, device=device, dtype="float64") for a in arrays]
    tup = ops.make_tuple(*xs)
    assert isinstance(tup, ndl.TensorTuple)
    assert len(tup) == 3
    for i, a in enumerate(arrays):
        # constant folding: the input itself comes back
        assert ops.tuple_get_item(tup, i) is xs[i]
        assert tup[i] is xs[i]
        np.testing.assert_array_equal(tup.tuple()[i].numpy(), a)
    # without folding, a TupleGetItem node; gradients flow through MakeTensorTuple
    items = [ops.TupleGetItem(i)(tup, fold_const=False) for i in range(3)]
    for item, a in zip(items, arrays):
        assert isinstance(item.op, ops.TupleGetItem)
        np.testing.assert_array_equal(item.numpy(), a)
    ws = [randn(*a.shape, seed=30 + i) for i, a in enumerate(arrays)]
    # use item 0 twice and item 2 not at all
    loss = (items[0] * ndl.Tensor(ws[0], device=device, dtype="float64")).sum() \
        + (items[1] * ndl.Tensor(ws[1], device=device, dtype="float64")).sum() \
        + (items[0] * items[0]).sum()
    loss.backward()
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    tloss = (ts[0] * torch.tensor(ws[0])).sum() + (ts[1] * torch.tensor(ws[1])).sum() + (ts[0] * ts[0]).sum()
    tloss.backward()
    np.testing.assert_allclose(xs[0].grad.numpy(), ts[0].grad.numpy())
    np.testing.assert_allclose(xs[1].grad.numpy(), ts[1].grad.numpy())
    np.testing.assert_allclose(xs[2].grad.numpy(), np.zeros_like(arrays[2]))
    assert xs[2].grad.shape == arrays[2].shape


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_tuple_add_and_iter(device):
    a = [randn(2, 3, seed=s) for s in (1, 2)]
    b = [randn(2, 3, seed=s) for s in (3, 4)]
    ta = ops.make_tuple(*[ndl.Tensor(x, device=device) for x in a])
    tb = ops.make_tuple(*[ndl.Tensor(x, device=device) for x in b])
    tsum = ta + tb
    assert isinstance(tsum, ndl.TensorTuple)
    parts = list(tsum)
    assert len(parts) == 2
    for p, x, y in zip(parts, a, b):
        np.testing.assert_allclose(p.numpy(), x + y, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        ta + ops.make_tuple(ndl.Tensor(a[0], device=device))
    assert ta[-1] is ta.tuple()[1]
    with pytest.raises(IndexError):
        ta[2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 1)], ids=str)
def test_fused_add_scalars(shape, device):
    a = randn(*shape, seed=24)
    x = ndl.Tensor(a, device=device, dtype="float64")
    pair = ops.fused_add_scalars(x, 1.5, -2.0)
    assert isinstance(pair, ndl.TensorTuple) and len(pair) == 2
    np.testing.assert_allclose(pair[0].numpy(), a + 1.5)
    np.testing.assert_allclose(pair[1].numpy(), a - 2.0)
    w0, w1 = randn(*shape, seed=25), randn(*shape, seed=26)
    loss = (pair[0] * ndl.Tensor(w0, device=device, dtype="float64")).sum() \
        + (pair[1] * pair[1] * ndl.Tensor(w1, device=device, dtype="float64")).sum()
    loss.backward()
    t = torch.tensor(a, requires_grad=True)
    ((t + 1.5) * torch.tensor(w0)).sum().add(((t - 2.0) ** 2 * torch.tensor(w1)).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    assert x.grad.shape == shape


# --- stack / split ----------------------------------------------------------------------

STACK_CASES = [((3,), 0, 2), ((3,), 1, 3), ((2, 3), 0, 4), ((2, 3), 1, 2), ((2, 3), 2, 3), ((2, 3), -1, 2), ((1, 2, 1), 2, 3), ((4,), 0, 1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axis,n", STACK_CASES, ids=str)
def test_stack(shape, axis, n, device):
    arrays = [randn(*shape, seed=40 + i) for i in range(n)]
    check(lambda *xs: ops.stack(list(xs), axis), lambda *ts: torch.stack(ts, dim=axis), arrays, device, "float64")
    check(lambda *xs: ops.stack(xs, axis), lambda *ts: torch.stack(ts, dim=axis), arrays, device, "float32")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axis", [((3,), 0), ((2, 3), 0), ((2, 3), 1), ((2, 3, 4), 2), ((2, 3, 4), -2), ((1, 3), 0), ((2, 1, 3), 1)], ids=str)
def test_split(shape, axis, device):
    a = randn(*shape, seed=50)
    x = ndl.Tensor(a, device=device, dtype="float64")
    t = torch.tensor(a, requires_grad=True)
    parts = ops.split(x, axis)
    tparts = torch.unbind(t, dim=axis)
    assert isinstance(parts, ndl.TensorTuple)
    assert len(parts) == len(tparts)
    loss, tloss = None, 0
    for i, (p, tp) in enumerate(zip(parts, tparts)):
        assert p.shape == tuple(tp.shape)
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy())
        if i % 2 == 0:  # leave every other part out of the loss
            w = randn(*tp.shape, seed=60 + i)
            term = (p * ndl.Tensor(w, device=device, dtype="float64")).sum()
            loss = term if loss is None else loss + term
            tloss = tloss + (tp * torch.tensor(w)).sum()
    loss.backward()
    tloss.backward()
    assert x.grad.shape == x.shape
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_stack_then_split_roundtrip_gradient(device):
    arrays = [randn(2, 3, seed=s) for s in range(3)]
    xs = [ndl.Tensor(a, device=device, dtype="float64") for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    parts = ops.split(ops.stack(xs, 1), 1)
    tparts = torch.unbind(torch.stack(ts, 1), 1)
    w = randn(2, 3, seed=9)
    (parts[1] * ndl.Tensor(w, device=device, dtype="float64") + parts[2] * parts[0]).sum().backward()
    (tparts[1] * torch.tensor(w) + tparts[2] * tparts[0]).sum().backward()
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())


def test_stack_shape_mismatch():
    with pytest.raises(ValueError):
        ops.stack([ndl.Tensor(np.ones(3)), ndl.Tensor(np.ones(4))], 0)


# --- flip / dilate / undilate ---------------------------------------------------------

FLIP_CASES = [((5,), (0,)), ((3, 4), (0,)), ((3, 4), (1,)), ((3, 4), (0, 1)), ((2, 3, 4), (0, 2)), ((2, 3, 4, 2), (1, 2)), ((1, 3), (0, 1)), ((2, 3), (-1,))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axes", FLIP_CASES, ids=str)
def test_flip(shape, axes, device):
    a = randn(*shape, seed=70)
    check(lambda x: ops.flip(x, axes), lambda t: torch.flip(t, axes), [a], device)
    xs, out = check(lambda x: ops.flip(x, axes), lambda t: torch.flip(t, axes), [a], device, "float64")
    np.testing.assert_array_equal(out.numpy(), np.flip(a, axes))


@pytest.mark.parametrize("device", DEVICES)
def test_flip_all_axes(device):
    check(lambda x: ops.flip(x, None), lambda t: torch.flip(t, (0, 1, 2)), [randn(2, 3, 4)], device)


@pytest.mark.parametrize("device", DEVICES)
def test_0d_tensors_through_shape_ops(device):
    s = np.asarray(1.3)
    check(lambda x: ops.stack([x, x * 2], 0), lambda t: torch.stack([t, t * 2], 0), [s], device, "float64")
    check(lambda x: ops.logsumexp(x), lambda t: torch.logsumexp(t, ()), [s], device, "float64")
    check(lambda x: ops.broadcast_to(x, (2, 3)) * ops.reshape(x, (1,)), lambda t: t.broadcast_to((2, 3)) * t.reshape(1), [s], device, "float64")
    check(lambda x: x[None, ...], lambda t: t[None, ...], [s], device, "float64")
    check(lambda x: ops.split(x, 0)[1], lambda t: torch.unbind(t, 0)[1], [np.arange(3.0)], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_flip_of_non_compact_input(device):
    check(lambda x: ops.flip(ops.transpose(x), (0,)), lambda t: torch.flip(t.transpose(0, 1), (0,)), [randn(3, 4)], device)


def _np_dilate(a, axes, d):
    shape = list(a.shape)
    present = [ax % a.ndim for ax in axes if -a.ndim <= ax < a.ndim]
    for ax in present:
        shape[ax] *= d + 1
    out = np.zeros(shape)
    out[tuple(slice(None, None, d + 1) if i in present else slice(None) for i in range(a.ndim))] = a
    return out


def _torch_dilate(axes, d):
    def f(t):
        present = [ax % t.ndim for ax in axes if -t.ndim <= ax < t.ndim]
        shape = [s * (d + 1) if i in present else s for i, s in enumerate(t.shape)]
        out = torch.zeros(shape, dtype=t.dtype)
        out[tuple(slice(None, None, d + 1) if i in present else slice(None) for i in range(t.ndim))] = t
        return out
    return f


def _torch_undilate(axes, d):
    def f(t):
        present = [ax % t.ndim for ax in axes if -t.ndim <= ax < t.ndim]
        return t[tuple(slice(None, None, d + 1) if i in present else slice(None) for i in range(t.ndim))]
    return f


DILATE_CASES = [
    ((2, 2), (0, 1), 1),
    ((2, 3), (0,), 2),
    ((2, 3), (1,), 1),
    ((3,), (0,), 0),
    ((2, 3, 2, 2), (1, 2), 1),
    ((2, 3, 2, 2), (1, 2), 2),
    ((2, 3), (0, 2), 1),  # axis 2 does not exist: ignored
    ((1, 1), (0, 1), 3),
    ((2, 3), (-1,), 1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axes,d", DILATE_CASES, ids=str)
def test_dilate(shape, axes, d, device):
    a = randn(*shape, seed=71)
    xs, out = check(lambda x: ops.dilate(x, axes, d), _torch_dilate(axes, d), [a], device, "float64")
    np.testing.assert_array_equal(out.numpy(), _np_dilate(a, axes, d))
    check(lambda x: ops.Dilate(axes, d)(x), _torch_dilate(axes, d), [a], device, "float32")


def test_dilate_course_example():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = ops.dilate(ndl.Tensor(a), (0, 1), 1).numpy()
    expected = np.zeros((4, 4))
    expected[::2, ::2] = a
    np.testing.assert_array_equal(out, expected)


UNDILATE_CASES = [
    ((4, 4), (0, 1), 1),
    ((6, 3), (0,), 2),
    ((5, 3), (0,), 1),  # length not a multiple of d+1
    ((2, 6), (1,), 1),
    ((3,), (0,), 0),
    ((2, 6, 4, 2), (1, 2), 1),
    ((2, 7, 5, 2), (1, 2), 2),
    ((4, 3), (0, 5), 1),
    ((2, 5), (-1,), 1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,axes,d", UNDILATE_CASES, ids=str)
def test_undilate(shape, axes, d, device):
    a = randn(*shape, seed=72)
    check(lambda x: ops.undilate(x, axes, d), _torch_undilate(axes, d), [a], device, "float64")
    check(lambda x: ops.UnDilate(axes, d)(x), _torch_undilate(axes, d), [a], device, "float32")


@pytest.mark.parametrize("device", DEVICES)
def test_undilate_inverts_dilate(device):
    a = randn(2, 3, 4, seed=73)
    x = ndl.Tensor(a, device=device, dtype="float64")
    np.testing.assert_array_equal(ops.undilate(ops.dilate(x, (0, 2), 2), (0, 2), 2).numpy(), a)


# --- convolution -----------------------------------------------------------------------

# (N, H, W, Cin, Cout, K, stride, padding); K may be (KH, KW)
CONV_CASES = [
    (2, 5, 5, 3, 4, 3, 1, 0),
    (2, 5, 5, 3, 4, 3, 1, 1),
    (1, 5, 5, 2, 2, 3, 1, 2),
    (1, 6, 6, 2, 3, 3, 2, 1),    # (6+2-3) % 2 = 1
    (1, 7, 7, 2, 3, 3, 2, 1),    # (7+2-3) % 2 = 0
    (1, 8, 8, 2, 3, 3, 2, 0),    # (8-3) % 2 = 1
    (2, 8, 6, 3, 2, 3, 2, 0),    # H != W
    (1, 6, 9, 2, 2, 3, 1, 1),    # H != W, stride 1
    (1, 9, 7, 2, 2, 3, 3, 1),    # (9+2-3) % 3 = 2, (7+2-3) % 3 = 0
    (1, 10, 8, 2, 2, 2, 3, 0),   # (10-2) % 3 = 2, (8-2) % 3 = 0
    (1, 11, 11, 3, 2, 3, 4, 1),  # (11+2-3) % 4 = 2
    (1, 8, 8, 2, 2, 3, 4, 1),    # (8+2-3) % 4 = 3 = stride - 1
    (2, 6, 5, 1, 1, 1, 1, 0),    # 1x1 kernel
    (1, 5, 6, 2, 1, 1, 2, 0),    # 1x1 kernel, stride 2
    (1, 5, 7, 2, 3, 5, 1, 2),
    (1, 4, 4, 2, 2, 4, 2, 2),    # even kernel
    (1, 3, 3, 2, 2, 3, 1, 0),    # 1x1 output
    (1, 3, 3, 2, 2, 3, 2, 0),    # 1x1 output with stride
    (1, 5, 5, 2, 2, 3, 1, 3),    # padding larger than K - 1
    (1, 6, 5, 2, 2, 2, 2, 3),    # padding larger than K - 1 with stride
    (3, 4, 4, 1, 3, 2, 1, 0),
    (1, 7, 6, 2, 3, (3, 2), 1, 1),  # rectangular kernel
    (1, 8, 7, 2, 2, (2, 3), 2, 0),  # rectangular kernel with stride
]


def _torch_conv(stride, padding):
    def f(x, w):
        return F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=stride, padding=padding).permute(0, 2, 3, 1)
    return f


def _conv_arrays(n, h, w, cin, cout, k, seed=80):
    kh, kw = (k, k) if isinstance(k, int) else k
    return [randn(n, h, w, cin, seed=seed), randn(kh, kw, cin, cout, seed=seed + 1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv(case, dtype, device):
    n, h, w, cin, cout, k, stride, padding = case
    arrays = _conv_arrays(n, h, w, cin, cout, k)
    check(lambda a, b: ops.conv(a, b, stride=stride, padding=padding), _torch_conv(stride, padding), arrays, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES[::4], ids=str)
def test_conv_op_class(case, device):
    n, h, w, cin, cout, k, stride, padding = case
    arrays = _conv_arrays(n, h, w, cin, cout, k, seed=85)
    check(lambda a, b: ops.Conv(stride, padding)(a, b), _torch_conv(stride, padding), arrays, device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_conv_default_padding(device):
    arrays = _conv_arrays(1, 5, 5, 2, 3, 3)
    # the helper defaults to padding 1, the op class to padding 0
    check(lambda a, b: ops.conv(a, b), _torch_conv(1, 1), arrays, device, "float64")
    check(lambda a, b: ops.Conv()(a, b), _torch_conv(1, 0), arrays, device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_conv_non_compact_inputs(device):
    a, b = randn(1, 5, 6, 2, seed=90), randn(3, 3, 2, 2, seed=91)
    # feed transposed views (swap H and W of the input; swap the kernel's spatial axes)
    check(lambda x, k: ops.conv(ops.transpose(x, (1, 2)), ops.transpose(k, (0, 1)), stride=2, padding=1),
          lambda x, k: _torch_conv(2, 1)(x.transpose(1, 2), k.transpose(0, 1)),
          [a, b], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_conv_shape_errors(device):
    a = ndl.Tensor(randn(1, 5, 5, 2), device=device)
    with pytest.raises(ValueError):
        ops.conv(a, ndl.Tensor(randn(3, 3, 3, 2), device=device))  # channel mismatch
    with pytest.raises(ValueError):
        ops.conv(a, ndl.Tensor(randn(7, 7, 2, 2), device=device), padding=0)  # kernel too large


# --- indexing ---------------------------------------------------------------------------

def _index_reference_grad(shape, index, w):
    """Gradient of sum(x[index] * w) w.r.t. x, by numpy: scatter-add w to the source positions."""
    positions = np.arange(int(np.prod(shape))).reshape(shape)[index]
    return np.bincount(np.ravel(positions), weights=np.ravel(w), minlength=int(np.prod(shape))).reshape(shape)


INDEX_CASES = [
    ((5, 4, 3), 2),
    ((5, 4, 3), -1),
    ((5, 4, 3), (1, 2)),
    ((5, 4, 3), (-1, -2, -3)),
    ((5, 4, 3), (4, 0, 2)),
    ((5, 4, 3), slice(1, 4)),
    ((5, 4, 3), slice(-3, None)),
    ((5, 4, 3), slice(None, -2)),
    ((5, 4, 3), (slice(None), slice(None, None, 2))),
    ((5, 4, 3), (slice(1, None, 3), slice(-3, -1), slice(None, None, 2))),
    ((5, 4, 3), (slice(-3, None), 1)),
    ((5, 4, 3), (slice(3, 1),)),  # empty slice
    ((5, 4, 3), (Ellipsis, 1)),
    ((5, 4, 3), (1, Ellipsis)),
    ((5, 4, 3), (Ellipsis,)),
    ((5, 4, 3), (None, 1, Ellipsis, None)),
    ((5, 4, 3), (1, None, slice(0, 2))),
    ((5, 4, 3), (None,)),
    ((5, 4, 3), (slice(None), None, -1)),
    ((7,), np.array([0, 2, 2, 6, 0, -1])),                          # gather with repeats
    ((6, 3), np.array([[0, 1], [1, 1], [5, 0]])),                   # 2-D index array
    ((6, 3), [4, 4, 4]),                                            # list index
    ((6, 3), (range(6), np.array([0, 2, 1, 1, 0, 2]))),              # x[range(n), y]
    ((6, 3), (np.arange(6), np.array([0, 2, 1, 1, 0, 2]))),
    ((6, 3), (np.array([1, 1, 3]), np.array([2, 2, 0]))),            # repeated pairs
    ((6, 3), (np.array([[0], [5]]), np.array([0, 2, 2]))),           # broadcast index arrays
    ((5, 4, 3), (slice(None), np.array([0, 2, 2]))),                 # slice then array
    ((5, 4, 3), (np.array([3, 0]), slice(1, 3))),                    # array then slice
    ((5, 4, 3), (slice(1, 4), np.array([0, 3, 3]), np.array([2, 0, 2]))),  # adjacent arrays after a slice
    ((5, 4, 3), (np.array([1, 0]), slice(1, 3), np.array([2, 0]))),  # separated arrays: new axes first
    ((5, 4, 3), (slice(None), np.array([[0], [1]]), np.array([0, 2, 1]))),
    ((5, 4, 3), (Ellipsis, np.array([2, 0, 2]))),
    ((5, 4, 3), (1, slice(None), np.array([0, 1, 1]))),              # int counts as an index array
    ((5, 4, 3), (np.array([4, -5]), 2)),
    ((5, 4, 3), (None, np.array([1, 1]), Ellipsis)),
    ((5, 4, 3), (np.array([0, 2]), None, np.array([1, 1]))),
    ((5, 4, 3), np.array([True, False, True, True, False])),         # boolean mask
    ((4, 3), np.array([[True, False, True], [False, False, True], [True, True, True], [False, False, False]])),
    ((5, 4, 3), (slice(None, None, 2), np.array([-1, 0]), slice(None, 2))),
]


def _index_id(case):
    shape, index = case
    return f"{shape}-{index!r}".replace("\n", "").replace(" ", "")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", INDEX_CASES, ids=[_index_id(c) for c in INDEX_CASES])
def test_getitem(case, dtype, device):
    shape, index = case
    a = randn(*shape, seed=100)
    x = ndl.Tensor(a, device=device, dtype=dtype)
    out = x[index]
    np_index = tuple(np.asarray(i) if isinstance(i, range) else i for i in index) if isinstance(index, tuple) else index
    ref = a[np_index]
    assert out.shape == ref.shape
    assert out.dtype == dtype and out.device == device
    np.testing.assert_allclose(out.numpy(), ref, **TOL[dtype])
    w = randn(*ref.shape, seed=101)
    (out * ndl.Tensor(w, device=device, dtype=dtype)).sum().backward()
    assert x.grad.shape == x.shape
    np.testing.assert_allclose(x.grad.numpy(), _index_reference_grad(shape, np_index, w), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_getitem_cross_entropy_pattern_vs_torch(device):
    n, c = 6, 4
    logits = randn(n, c, seed=102)
    y = rng(103).integers(0, c, size=n)
    y[1] = y[0]
    check(lambda z: ops.logsoftmax(z)[range(n), y], lambda t: torch.log_softmax(t, -1)[range(n), torch.tensor(y)],
          [logits], device, "float64")
    # label indices stored in a needle Tensor (float data holding integers)
    yt = ndl.Tensor(y.astype(np.float64), device=device, requires_grad=False)
    check(lambda z: z[np.arange(n), yt], lambda t: t[torch.arange(n), torch.tensor(y)], [logits], device, "float64")


@pytest.mark.parametrize("device", DEVICES)
def test_getitem_gather_repeated_vs_torch(device):
    idx = np.array([3, 1, 3, 3, 0])
    check(lambda z: z[idx], lambda t: t[torch.tensor(idx)], [randn(4, 3, seed=104)], device)
    check(lambda z: z[:, idx[:2]], lambda t: t[:, torch.tensor(idx[:2])], [randn(4, 5, seed=105)], device)
    check(lambda z: z[ndl.Tensor(idx, device=device)], lambda t: t[torch.tensor(idx)], [randn(4, 3, seed=106)], device)


@pytest.mark.parametrize("device", DEVICES)
def test_getitem_of_view_and_composed(device):
    check(lambda z: ops.transpose(z)[1:, np.array([0, 0, 2])],
          lambda t: t.transpose(0, 1)[1:, torch.tensor([0, 0, 2])], [randn(4, 3, seed=107)], device)
    check(lambda z: z[1][::2] * z[0][1::2],
          lambda t: t[1][::2] * t[0][1::2], [randn(2, 6, seed=108)], device)


@pytest.mark.parametrize("device", DEVICES)
def test_getitem_numpy_int_and_empty_index(device):
    a = randn(4, 3, seed=109)
    check(lambda z: z[np.int64(2)], lambda t: t[2], [a], device, "float64")
    check(lambda z: z[np.int32(-1), np.int64(0)], lambda t: t[-1, 0], [a], device, "float64")
    check(lambda z: z[np.array([], dtype=np.int64)], lambda t: t[torch.tensor([], dtype=torch.long)], [a], device, "float64")


def test_getitem_errors():
    x = ndl.Tensor(np.ones((3, 4)))
    with pytest.raises(IndexError):
        x[3]
    with pytest.raises(IndexError):
        x[0, 0, 0]
    with pytest.raises(IndexError):
        x[np.array([0, 4])]
    with pytest.raises(IndexError):
        x[..., 1, ...]
    with pytest.raises(IndexError):
        x[np.array([0, 1]), np.array([0, 1, 2])]


# --- comparisons ---------------------------------------------------------------------------

COMPARISONS = {
    "<": (lambda a, b: a < b, np.less),
    "<=": (lambda a, b: a <= b, np.less_equal),
    ">": (lambda a, b: a > b, np.greater),
    ">=": (lambda a, b: a >= b, np.greater_equal),
    "eq": (lambda a, b: a.eq(b), np.equal),
    "ne": (lambda a, b: a.ne(b), np.not_equal),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3), ())], ids=str)
@pytest.mark.parametrize("name", list(COMPARISONS))
def test_comparisons(name, shapes, dtype, device):
    fn, npfn = COMPARISONS[name]
    r = rng(110)
    a = r.integers(-2, 3, size=shapes[0]).astype(np.float64)
    b = r.integers(-2, 3, size=shapes[1]).astype(np.float64)
    x = ndl.Tensor(a, device=device, dtype=dtype)
    y = ndl.Tensor(b, device=device, dtype=dtype)
    out = fn(x, y)
    ref = npfn(a, b)
    assert out.shape == ref.shape
    assert not out.requires_grad
    assert out.dtype == "bool" and out.device == device
    np.testing.assert_array_equal(out.numpy(), ref)
    # with a Python scalar on the right
    out_s = fn(x, 1.0)
    assert out_s.dtype == "bool"
    np.testing.assert_array_equal(out_s.numpy(), npfn(a, 1.0))
    assert not out_s.requires_grad


def test_tensor_equality_is_identity():
    a = ndl.Tensor(np.ones(3))
    b = ndl.Tensor(np.ones(3))
    assert a == a and not (a == b)
    assert a != b
    assert len({a, b, a}) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_comparison_mask_in_graph(device):
    """A comparison result can be used as a constant mask; no gradient flows through it."""
    a = randn(3, 4, seed=111)
    check(lambda x: x * (x > 0.1) + (x <= 0.1) * x * x,
          lambda t: torch.where(t > 0.1, t, t * t), [a], device, "float64")


# --- zeros_like / ones_like ---------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (3, 4), (2, 1, 3)], ids=str)
def test_zeros_ones_like(shape, dtype, device):
    x = ndl.Tensor(randn(*shape), device=device, dtype=dtype)
    for fn, val in [(ndl.zeros_like, 0.0), (ndl.ones_like, 1.0)]:
        y = fn(x)
        assert y.shape == x.shape and y.dtype == dtype and y.device == device
        assert not y.requires_grad
        np.testing.assert_array_equal(y.numpy(), np.full(shape, val))
        assert fn(x, requires_grad=True).requires_grad


# --- composite expressions ---------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_composite_mlp_loss(device):
    """A small MLP with softmax cross-entropy, everything through needle ops."""
    n, d, h, c = 5, 4, 6, 3
    y = rng(120).integers(0, c, size=n)
    onehot = np.eye(c)[y]
    arrays = [randn(n, d, seed=121), randn(d, h, seed=122), randn(1, h, seed=123), randn(h, c, seed=124)]

    def nfn(x, w1, b1, w2):
        z = ops.relu(x @ w1 + b1) @ w2
        oh = ndl.Tensor(onehot, device=device, dtype="float64", requires_grad=False)
        return (ops.logsumexp(z, (1,)) - (z * oh).sum((1,))).sum() / n

    def tfn(x, w1, b1, w2):
        return F.cross_entropy(torch.relu(x @ w1 + b1) @ w2, torch.tensor(y))

    check(nfn, tfn, arrays, device, "float64")
