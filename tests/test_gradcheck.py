"""Gradients against central finite differences, in float64, on both devices.

For every differentiable op we check `backward()` and the op's own
`gradient_as_tuple(out_grad, node)` against a numerical gradient of
loss = sum(out * W) with a random weight W.
"""
import numpy as np
import pytest

import needle as ndl
from needle import ops

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]
EPS = 1e-6
TOL = dict(rtol=1e-6, atol=1e-7)


def rng(seed):
    return np.random.default_rng(seed)


def randn(*shape, seed=0):
    return rng(seed).standard_normal(shape)


def positive(*shape, seed=0):
    return rng(seed).uniform(0.5, 2.0, size=shape)


def away_from_zero(*shape, seed=0):
    """Normal samples with |x| >= 0.1, so kinks (relu) are far from every x +- EPS."""
    a = randn(*shape, seed=seed)
    return np.where(np.abs(a) < 0.1, np.sign(a + 1e-12) * 0.1 + a, a)


def distinct(*shape, seed=0):
    """A permutation of well separated values, so max has a unique, stable argmax."""
    n = int(np.prod(shape))
    return (rng(seed).permutation(n).reshape(shape) - n / 2) * 0.1


def tensors(arrays, device):
    return [ndl.Tensor(a, device=device, dtype="float64") for a in arrays]


def numeric_grad(fn, arrays, w, device, eps=EPS):
    """Central differences of sum(fn(*arrays) * w), one element of one input at a time."""

    def loss(arrs):
        return float(np.sum(fn(*tensors(arrs, device)).numpy() * w))

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros_like(a)
        for j in range(a.size):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[i].flat[j] += eps
            minus[i].flat[j] -= eps
            g.flat[j] = (loss(plus) - loss(minus)) / (2 * eps)
        grads.append(g)
    return grads


# name -> (fn on Tensors, input arrays). Each fn applies ONE op to the inputs so that
# `out.op.gradient_as_tuple(W, out)` gives the gradient for exactly these inputs.
CASES = {
    "add": (ops.add, lambda: [randn(3, 4, seed=1), randn(3, 4, seed=2)]),
    "add_scalar": (lambda a: ops.add_scalar(a, 2.5), lambda: [randn(3, 4, seed=1)]),
    "multiply": (ops.multiply, lambda: [randn(3, 4, seed=1), randn(3, 4, seed=2)]),
    "mul_scalar": (lambda a: ops.mul_scalar(a, -1.5), lambda: [randn(2, 3, seed=1)]),
    "power": (ops.power, lambda: [positive(3, 4, seed=1), randn(3, 4, seed=2)]),
    "power_scalar_3": (lambda a: ops.power_scalar(a, 3), lambda: [randn(3, 4, seed=1)]),
    "power_scalar_neg": (lambda a: ops.power_scalar(a, -2), lambda: [positive(3, 4, seed=1)]),
    "power_scalar_frac": (lambda a: ops.power_scalar(a, 0.7), lambda: [positive(3, 4, seed=1)]),
    "power_scalar_0": (lambda a: ops.power_scalar(a, 0), lambda: [positive(2, 3, seed=1)]),
    "sqrt": (ops.sqrt, lambda: [positive(3, 4, seed=1)]),
    "divide": (ops.divide, lambda: [randn(3, 4, seed=1), positive(3, 4, seed=2)]),
    "divide_scalar": (lambda a: ops.divide_scalar(a, 3.0), lambda: [randn(3, 4, seed=1)]),
    "negate": (ops.negate, lambda: [randn(3, 4, seed=1)]),
    "log": (ops.log, lambda: [positive(3, 4, seed=1)]),
    "exp": (ops.exp, lambda: [randn(3, 4, seed=1)]),
    "relu": (ops.relu, lambda: [away_from_zero(3, 4, seed=1)]),
    "tanh": (ops.tanh, lambda: [randn(3, 4, seed=1)]),
    "sigmoid": (ops.sigmoid, lambda: [randn(3, 4, seed=1) * 3]),
    "transpose_none": (lambda a: ops.transpose(a), lambda: [randn(2, 3, 4, seed=1)]),
    "transpose_02": (lambda a: ops.transpose(a, (0, 2)), lambda: [randn(2, 3, 4, seed=1)]),
    "permute": (lambda a: ops.permute(a, (2, 0, 1)), lambda: [randn(2, 3, 4, seed=1)]),
    "reshape": (lambda a: ops.reshape(a, (4, -1)), lambda: [randn(2, 3, 4, seed=1)]),
    "flatten": (lambda a: ops.flatten(a, 1), lambda: [randn(2, 3, 2, seed=1)]),
    "broadcast_to": (lambda a: ops.broadcast_to(a, (2, 3, 4)), lambda: [randn(3, 1, seed=1)]),
    "broadcast_to_scalar": (lambda a: ops.broadcast_to(a, (2, 3)), lambda: [randn(1, seed=1)]),
    "summation_all": (lambda a: ops.summation(a), lambda: [randn(3, 4, seed=1)]),
    "summation_axis": (lambda a: ops.summation(a, 1), lambda: [randn(2, 3, 4, seed=1)]),
    "summation_axes_keepdims": (lambda a: ops.summation(a, (0, 2), keepdims=True), lambda: [randn(2, 3, 4, seed=1)]),
    "matmul": (ops.matmul, lambda: [randn(3, 4, seed=1), randn(4, 2, seed=2)]),
    "matmul_batched": (ops.matmul, lambda: [randn(2, 3, 4, seed=1), randn(2, 4, 2, seed=2)]),
    "matmul_broadcast_rhs": (ops.matmul, lambda: [randn(2, 2, 3, 4, seed=1), randn(4, 2, seed=2)]),
    "matmul_broadcast_lhs": (ops.matmul, lambda: [randn(3, 4, seed=1), randn(2, 4, 2, seed=2)]),
    "matmul_broadcast_size1": (ops.matmul, lambda: [randn(2, 1, 2, 3, seed=1), randn(3, 3, 2, seed=2)]),
    "logsumexp_all": (lambda a: ops.logsumexp(a), lambda: [randn(3, 4, seed=1)]),
    "logsumexp_axis": (lambda a: ops.logsumexp(a, (1,)), lambda: [randn(3, 4, seed=1)]),
    "logsumexp_axes": (lambda a: ops.logsumexp(a, (0, 2)), lambda: [randn(2, 3, 4, seed=1)]),
    "logsoftmax": (ops.logsoftmax, lambda: [randn(3, 5, seed=1)]),
    "logsoftmax_axis0": (lambda a: ops.logsoftmax(a, 0), lambda: [randn(3, 4, seed=1)]),
    "flip": (lambda a: ops.flip(a, (0, 2)), lambda: [randn(2, 3, 4, seed=1)]),
    "dilate": (lambda a: ops.dilate(a, (0, 1), 2), lambda: [randn(2, 3, seed=1)]),
    "undilate": (lambda a: ops.undilate(a, (0, 1), 1), lambda: [randn(4, 5, seed=1)]),
    "max_all": (lambda a: ops.max(a), lambda: [distinct(3, 4, seed=1)]),
    "max_axis": (lambda a: ops.max(a, 1), lambda: [distinct(3, 4, seed=1)]),
    "max_axes_keepdims": (lambda a: ops.max(a, (0, 2), keepdims=True), lambda: [distinct(2, 3, 4, seed=1)]),
    "getitem_basic": (lambda a: a[1:, None, ::2], lambda: [randn(3, 5, seed=1)]),
    "getitem_int": (lambda a: a[-1, 2], lambda: [randn(3, 5, seed=1)]),
    "getitem_gather_repeats": (lambda a: a[np.array([0, 2, 2, 0, 2])], lambda: [randn(3, 2, seed=1)]),
    "getitem_pairs": (lambda a: a[range(4), np.array([1, 0, 1, 2])], lambda: [randn(4, 3, seed=1)]),
    "getitem_mixed": (lambda a: a[np.array([1, 1]), :, np.array([0, 2])], lambda: [randn(2, 3, 3, seed=1)]),
    "getitem_ellipsis": (lambda a: a[..., np.array([[1], [1]])], lambda: [randn(2, 3, 2, seed=1)]),
    "conv_s1_p0": (lambda a, b: ops.conv(a, b, stride=1, padding=0), lambda: [randn(2, 4, 4, 2, seed=1), randn(3, 3, 2, 3, seed=2)]),
    "conv_s1_p1": (lambda a, b: ops.conv(a, b, stride=1, padding=1), lambda: [randn(1, 4, 5, 2, seed=1), randn(3, 3, 2, 2, seed=2)]),
    "conv_s2_p1_r1": (lambda a, b: ops.conv(a, b, stride=2, padding=1), lambda: [randn(1, 6, 6, 2, seed=1), randn(3, 3, 2, 2, seed=2)]),
    "conv_s2_p1_r0": (lambda a, b: ops.conv(a, b, stride=2, padding=1), lambda: [randn(1, 5, 5, 2, seed=1), randn(3, 3, 2, 2, seed=2)]),
    "conv_s3_hw": (lambda a, b: ops.conv(a, b, stride=3, padding=0), lambda: [randn(1, 7, 6, 1, seed=1), randn(2, 2, 1, 2, seed=2)]),
    "conv_p_large": (lambda a, b: ops.conv(a, b, stride=2, padding=3), lambda: [randn(1, 3, 4, 1, seed=1), randn(2, 2, 1, 2, seed=2)]),
    "conv_1x1": (lambda a, b: ops.conv(a, b, stride=1, padding=0), lambda: [randn(2, 3, 3, 3, seed=1), randn(1, 1, 3, 2, seed=2)]),
}

# composites: several ops in sequence (gradient_as_tuple not applicable to the inputs)
COMPOSITE_CASES = {
    "sub_broadcast": (lambda a, b: a - b, lambda: [randn(3, 4, seed=1), randn(4, seed=2)]),
    "div_broadcast": (lambda a, b: a / b, lambda: [randn(2, 3, seed=1), positive(2, 1, seed=2)]),
    "pow_broadcast": (lambda a, b: a ** b, lambda: [positive(3, 1, seed=1), randn(1, 2, seed=2)]),
    "rdiv_rsub_rpow": (lambda a: 2 / a + (1 - a) * (3 ** a), lambda: [positive(3, 2, seed=1)]),
    "mean": (lambda a: ops.mean(a, (0, 2)), lambda: [randn(2, 3, 4, seed=1)]),
    "matmul_1d": (lambda a, b: ops.matmul(a, b), lambda: [randn(4, seed=1), randn(2, 4, 3, seed=2)]),
    "matmul_vec": (lambda a, b: ops.matmul(a, b), lambda: [randn(3, 4, seed=1), randn(4, seed=2)]),
    "stack": (lambda a, b, c: ops.stack([a, b, c], 1), lambda: [randn(2, 3, seed=1), randn(2, 3, seed=2), randn(2, 3, seed=3)]),
    "split": (lambda a: ops.split(a, 1)[2] * ops.split(a, 1)[0], lambda: [randn(2, 3, 2, seed=1)]),
    "fused_add_scalars": (lambda a: ops.fused_add_scalars(a, 1.0, -0.5)[0] * ops.fused_add_scalars(a, 1.0, -0.5)[1],
                          lambda: [randn(3, 2, seed=1)]),
    "tuple_get_item": (lambda a, b: ops.TupleGetItem(1)(ops.make_tuple(a, b), fold_const=False)
                       * ops.TupleGetItem(0)(ops.make_tuple(a, b), fold_const=False), lambda: [randn(2, 3, seed=1), randn(2, 3, seed=2)]),
    "getitem_then_scatter": (lambda a: ops.exp(a[np.array([1, 1, 0])]).sum(0) * a[0], lambda: [randn(2, 3, seed=1)]),
    "max_of_expression": (lambda a: ops.max(ops.exp(a) * a, 0) * ops.max(a, 1, keepdims=True), lambda: [distinct(3, 3, seed=1) + 2.0]),
    "mlp_softmax": (lambda x, w, b: ops.logsoftmax(ops.tanh(x @ w + b)),
                    lambda: [randn(3, 4, seed=1), randn(4, 5, seed=2), randn(5, seed=3)]),
    "conv_relu_conv": (lambda a, b, c: ops.conv(ops.relu(ops.conv(a, b, stride=2, padding=1)), c, stride=1, padding=1),
                       lambda: [randn(1, 5, 5, 1, seed=1), randn(3, 3, 1, 2, seed=2), randn(2, 2, 2, 1, seed=3)]),
}


def _backward_check(fn, arrays, device):
    xs = tensors(arrays, device)
    out = fn(*xs)
    w = randn(*out.shape, seed=99)
    (out * ndl.Tensor(w, device=device, dtype="float64")).sum().backward()
    expected = numeric_grad(fn, arrays, w, device)
    for x, g in zip(xs, expected):
        assert x.grad is not None and x.grad.shape == x.shape
        assert x.grad.dtype == "float64"
        np.testing.assert_allclose(x.grad.numpy(), g, **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES) + list(COMPOSITE_CASES))
def test_backward_matches_finite_differences(name, device):
    fn, make = CASES.get(name) or COMPOSITE_CASES[name]
    _backward_check(fn, make(), device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_gradient_as_tuple(name, device):
    """Called directly, each op's gradient is one tensor per input, of the input's shape,
    equal to the numerical gradient."""
    fn, make = CASES[name]
    arrays = make()
    xs = tensors(arrays, device)
    out = fn(*xs)
    assert len(out.inputs) == len(xs)
    assert all(i is x for i, x in zip(out.inputs, xs))
    w = randn(*out.shape, seed=98)
    grads = out.op.gradient_as_tuple(ndl.Tensor(w, device=device, dtype="float64"), out)
    assert isinstance(grads, tuple)
    assert len(grads) == len(xs)
    expected = numeric_grad(fn, arrays, w, device)
    for g, x, e in zip(grads, xs, expected):
        assert isinstance(g, ndl.Tensor)
        assert g.shape == x.shape
        assert g.device == device
        np.testing.assert_allclose(g.numpy(), e, **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_as_tuple_stack_and_split(device):
    arrays = [randn(2, 3, seed=s) for s in range(3)]
    xs = tensors(arrays, device)
    # Stack: its single input is a TensorTuple, so its gradient is a TensorTuple
    out = ops.stack(xs, 1)
    w = randn(*out.shape, seed=7)
    (grad,) = out.op.gradient_as_tuple(ndl.Tensor(w, device=device, dtype="float64"), out)
    assert isinstance(grad, ndl.TensorTuple)
    parts = grad.tuple()
    assert len(parts) == 3
    expected = numeric_grad(lambda a, b, c: ops.stack([a, b, c], 1), arrays, w, device)
    for p, x, e in zip(parts, xs, expected):
        assert p.shape == x.shape
        np.testing.assert_allclose(p.numpy(), e, **TOL)

    # Split: a TensorTuple output; its gradient is one tensor of the input's shape
    x = ndl.Tensor(randn(2, 3, 4, seed=8), device=device, dtype="float64")
    tup = ops.split(x, 2)
    ws = [randn(2, 3, seed=10 + i) for i in range(4)]
    g_tuple = ops.make_tuple(*[ndl.Tensor(wi, device=device, dtype="float64") for wi in ws])
    grads = tup.op.gradient_as_tuple(g_tuple, tup)
    assert len(grads) == 1 and grads[0].shape == x.shape
    np.testing.assert_allclose(grads[0].numpy(), np.stack(ws, 2), **TOL)

    # MakeTensorTuple: one tensor per element
    tup = ops.make_tuple(*xs)
    grads = tup.op.gradient_as_tuple(ops.make_tuple(*[ndl.Tensor(wi[:, :3], device=device, dtype="float64") for wi in ws[:3]]), tup)
    assert len(grads) == 3
    for g, wi in zip(grads, ws):
        np.testing.assert_allclose(g.numpy(), wi[:, :3])

    # FusedAddScalars: the two adjoints add up
    y = ndl.Tensor(randn(2, 3, seed=20), device=device, dtype="float64")
    pair = ops.fused_add_scalars(y, 1.0, 2.0)
    grads = pair.op.gradient_as_tuple(ops.make_tuple(*[ndl.Tensor(wi[:, :3], device=device, dtype="float64") for wi in ws[:2]]), pair)
    assert len(grads) == 1 and grads[0].shape == y.shape
    np.testing.assert_allclose(grads[0].numpy(), ws[0][:, :3] + ws[1][:, :3])


@pytest.mark.parametrize("device", DEVICES)
def test_finite_differences_by_mutating_cached_data(device):
    """The course checks gradients by mutating `realize_cached_data()` of the leaves in
    place and re-running the forward pass; that must see the change (no caching)."""
    arrays = [randn(3, 4, seed=1), randn(4, 2, seed=2)]
    xs = tensors(arrays, device)

    def f():
        return (ops.tanh(xs[0] @ xs[1]) ** 2).sum()

    f().backward()
    for x, a in zip(xs, arrays):
        data = x.realize_cached_data()
        numeric = np.zeros(a.size)
        for j in range(a.size):
            base = a.flat[j]
            data.flat[j] = base + EPS
            fp = f().numpy()
            data.flat[j] = base - EPS
            fm = f().numpy()
            data.flat[j] = base
            numeric[j] = (fp - fm) / (2 * EPS)
        np.testing.assert_allclose(x.grad.numpy().ravel(), numeric, **TOL)
