"""Softmax's and LogSoftmax's gradients as one op each (ops.SoftmaxGrad, ops.LogSoftmaxGrad): the
bits of the Tensor-op formulas they replace, and second derivatives against PyTorch."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle import ops
from needle.ops.reduction import _logsoftmax_gradient, _softmax_gradient

CASES = [("softmax", ops.SoftmaxGrad, _softmax_gradient), ("logsoftmax", ops.LogSoftmaxGrad, _logsoftmax_gradient)]


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name, op, formula", CASES, ids=[c[0] for c in CASES])
def test_the_op_has_the_bits_of_the_tensor_op_formula(device, dtype, axis, name, op, formula):
    rng = np.random.RandomState(1)
    logits = rng.randn(4, 6, 5).astype(dtype) * 4
    logits[0, 0, :2] = [-np.inf, 50.0]
    g = ndl.Tensor(rng.randn(4, 6, 5).astype(dtype), device=device, dtype=dtype)
    x = ndl.Tensor(logits, device=device, dtype=dtype)
    y = (ops.softmax if name == "softmax" else ops.logsoftmax)(x, axis=axis)
    got = op(axis)(g, y.detach()).numpy()
    want = formula(g, y.detach(), axis).numpy()
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("name", ["softmax", "logsoftmax"])
def test_second_derivatives_match_pytorch(name):
    rng = np.random.RandomState(2)
    xn, un, vn = rng.randn(3, 5), rng.randn(3, 5), rng.randn(3, 5)
    x = ndl.Tensor(xn, dtype="float64")
    y = (ops.softmax if name == "softmax" else ops.logsoftmax)(x, axis=1)
    (y * ndl.Tensor(un, dtype="float64", requires_grad=False)).sum().backward()
    grad = x.grad
    assert type(grad.op).__name__ == ("SoftmaxGrad" if name == "softmax" else "LogSoftmaxGrad")
    (grad * grad * ndl.Tensor(vn, dtype="float64", requires_grad=False)).sum().backward()

    tx = torch.tensor(xn, requires_grad=True)
    ty = (torch.softmax if name == "softmax" else torch.log_softmax)(tx, 1)
    (tg,) = torch.autograd.grad((ty * torch.tensor(un)).sum(), (tx,), create_graph=True)
    np.testing.assert_allclose(grad.numpy(), tg.detach().numpy(), rtol=1e-12, atol=1e-15)
    (second,) = torch.autograd.grad((tg * tg * torch.tensor(vn)).sum(), (tx,))
    np.testing.assert_allclose(x.grad.numpy(), second.numpy(), rtol=1e-10, atol=1e-13)


def test_shapes_that_differ_are_refused():
    with pytest.raises(ValueError, match=r"softmax gradient: shapes \(2, 3\) and \(3, 2\) differ"):
        ops.SoftmaxGrad(-1)(ndl.Tensor(np.zeros((2, 3))), ndl.Tensor(np.zeros((3, 2))))
