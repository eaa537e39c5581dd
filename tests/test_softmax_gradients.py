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


def _canonical(a: np.ndarray) -> bytes:
    """The bytes of a, every nan as numpy's (a nan's sign bit depends on which operand an
    instruction propagates)."""
    return np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes()


def _rows(shape, dtype, seed):
    """Logits with the rows attention and language models make: a causal mask's -inf entries, an
    all -inf row, +inf, nan, -0.0 and 0.0 as the maximum, huge values."""
    rng = np.random.RandomState(seed)
    x = (rng.randn(*shape) * 4).astype(dtype)
    rows = x.reshape(-1, shape[-1])
    d = shape[-1]
    for i in range(min(rows.shape[0], d)):
        rows[i, i + 1:] = -np.inf  # a causal mask
    if rows.shape[0] > d + 4 and d > 1:
        rows[d] = -np.inf
        rows[d + 1, 0] = np.inf
        rows[d + 2, -1] = np.nan
        rows[d + 3, :] = -rows[d + 3, :] ** 2
        rows[d + 3, 0] = -0.0  # the maximum is a zero
        rows[d + 4, 0] = 1e30
    return x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(8, 4, 64, 64), (70, 129), (40, 1), (3, 50, 300)])
def test_the_cpu_row_kernels_give_the_bits_of_the_array_sequences(monkeypatch, dtype, shape):
    """Softmax (softmax_shift, numpy's exp, softmax_normalize), LogSoftmax (log_softmax),
    SoftmaxGrad (softmax_backward) and LogSoftmaxGrad (log_softmax_backward) over the last axis against the sequences the ops run
    without the kernels: the same bits (but for a nan's sign), rows summed in one block and halved."""
    from needle.autograd import array_api
    device = ndl.cpu()
    x = ndl.Tensor(_rows(shape, dtype, 1), device=device, dtype=dtype)
    g = ndl.Tensor(np.random.RandomState(2).randn(*shape).astype(dtype), device=device, dtype=dtype)
    calls = []
    for name in ("softmax_shift", "log_softmax", "softmax_backward", "log_softmax_backward"):
        kernel = getattr(device.mod, name)
        monkeypatch.setattr(device, name, lambda *a, kernel=kernel, name=name: (calls.append(name), kernel(*a)))

    def run():
        s = ops.softmax(x, axis=-1).detach()
        y = ops.logsoftmax(x, axis=-1).detach()
        return [_canonical(t.numpy()) for t in (s, ops.SoftmaxGrad(-1)(g, s), ops.LogSoftmaxGrad(-1)(g, y))]

    fused = run()
    assert calls == ["softmax_shift", "log_softmax", "softmax_backward", "log_softmax_backward"]
    for name in ("device_softmax", "device_log_softmax", "device_softmax_backward", "device_log_softmax_backward"):
        monkeypatch.setattr(array_api, name, lambda *a: None)
    assert run() == fused


@pytest.mark.parametrize("case", ["axis 0", "transposed", "broadcast adjoint"])
def test_other_axes_and_layouts_take_the_array_sequences(case):
    """The row kernels read compact arrays along their last axis; other axes and layouts run the
    sequences, whose bits the cpu_numpy device's (kernel-less) run gives."""
    data = _rows((30, 20), "float32", 3)
    grad = np.random.RandomState(4).randn(30, 20).astype(np.float32)

    def run(device):
        axis = 0 if case == "axis 0" else -1
        x = ndl.Tensor(data, device=device)
        if case == "transposed":
            x = ndl.Tensor(np.ascontiguousarray(data.T), device=device).transpose()
        g = ndl.Tensor(grad[:1], device=device).broadcast_to((30, 20)) if case == "broadcast adjoint" \
            else ndl.Tensor(grad, device=device)
        s, y = ops.softmax(x, axis=axis).detach(), ops.logsoftmax(x, axis=axis).detach()
        return [_canonical(t.numpy()) for t in (s, ops.SoftmaxGrad(axis)(g, s), ops.LogSoftmaxGrad(axis)(g, y))]

    assert run(ndl.cpu()) == run(ndl.cpu_numpy())
