"""The fused BatchNorm op against PyTorch: values, gradients, and gradients of gradients."""
import numpy as np
import pytest
import torch

import needle as ndl

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]


def _inputs(n, c, seed, dtype="float64", device=None):
    rng = np.random.RandomState(seed)
    x, w, b = rng.randn(n, c) * 2 + 1, rng.randn(c), rng.randn(c)
    needle = [ndl.Tensor(a, dtype=dtype, device=device) for a in (x, w, b)]
    reference = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    return needle, reference


def _torch_batch_norm(x, w, b, eps):
    return torch.nn.functional.batch_norm(x, None, None, w, b, training=True, eps=eps)


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("n,c", [(5, 3), (2, 1), (32, 16)])
def test_values_gradients_and_batch_statistics(device, n, c):
    (x, w, b), (tx, tw, tb) = _inputs(n, c, seed=n * c, device=device)
    stats = ndl.ops.BatchNorm(1e-5)(x, w, b)  # stateless: the statistics are outputs
    assert isinstance(stats, ndl.TensorTuple) and len(stats) == 3
    out, mean, var = ndl.ops.batch_norm(x, w, b, 1e-5)
    expected = _torch_batch_norm(tx, tw, tb, 1e-5)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats[0].numpy(), out.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(mean.numpy(), tx.detach().numpy().mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), tx.detach().numpy().var(axis=0), rtol=1e-12, atol=1e-12)
    weight = np.random.RandomState(7).randn(n, c)
    (out * ndl.Tensor(weight, dtype="float64", device=device)).sum().backward()
    (expected * torch.tensor(weight)).sum().backward()
    for mine, ref in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(mine.grad.numpy(), ref.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_second_derivatives_match_pytorch():
    (x, w, b), (tx, tw, tb) = _inputs(6, 4, seed=3)
    v = np.random.RandomState(5).randn(6, 4)
    out, _, _ = ndl.ops.batch_norm(x, w, b)
    (out * ndl.Tensor(v, dtype="float64")).sum().backward()
    gx, gw = x.grad, w.grad
    u = np.random.RandomState(6).randn(6, 4)
    ((gx * ndl.Tensor(u, dtype="float64")).sum() + gw.sum()).backward()

    t_out = _torch_batch_norm(tx, tw, tb, 1e-5)
    t_gx, t_gw = torch.autograd.grad((t_out * torch.tensor(v)).sum(), (tx, tw), create_graph=True)
    second = torch.autograd.grad((t_gx * torch.tensor(u)).sum() + t_gw.sum(), (tx, tw))
    np.testing.assert_allclose(x.grad.numpy(), second[0].numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(w.grad.numpy(), second[1].numpy(), rtol=1e-7, atol=1e-9)


def test_weight_and_bias_may_be_rows():
    (x, w, b), (tx, tw, tb) = _inputs(5, 3, seed=1)
    w_row, b_row = w.reshape((1, 3)).detach(), b.reshape((1, 3)).detach()
    w_row.requires_grad = b_row.requires_grad = True
    out, _, _ = ndl.ops.batch_norm(x, w_row, b_row)
    out.sum().backward()
    _torch_batch_norm(tx, tw, tb, 1e-5).sum().backward()
    assert w_row.grad.shape == (1, 3) and b_row.grad.shape == (1, 3)
    np.testing.assert_allclose(w_row.grad.numpy().ravel(), tw.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shapes", [((4, 3, 2), (3,), (3,)), ((4, 3), (4,), (3,)), ((4, 3), (3,), (2, 3))])
def test_bad_shapes_name_the_shapes(shapes):
    x, w, b = (ndl.Tensor(np.ones(s)) for s in shapes)
    with pytest.raises(ValueError, match=r"\(4, 3"):
        ndl.ops.batch_norm(x, w, b)


def test_gradients_through_the_statistics_match_pytorch():
    """The batch mean and variance are differentiable outputs too."""
    (x, w, b), (tx, tw, tb) = _inputs(7, 3, seed=11)
    out, mean, var = ndl.ops.batch_norm(x, w, b, 1e-5)
    u, p, q = (np.random.RandomState(s).randn(*shape) for s, shape in ((1, (7, 3)), (2, (3,)), (3, (3,))))
    loss = (out * ndl.Tensor(u, dtype="float64")).sum() + (mean * ndl.Tensor(p, dtype="float64")).sum() \
        + (var * ndl.Tensor(q, dtype="float64")).sum()
    loss.backward()
    t_out = _torch_batch_norm(tx, tw, tb, 1e-5)
    t_loss = (t_out * torch.tensor(u)).sum() + (tx.mean(0) * torch.tensor(p)).sum() \
        + (tx.var(0, unbiased=False) * torch.tensor(q)).sum()
    t_loss.backward()
    for mine, ref in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(mine.grad.numpy(), ref.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("w_shape", [(16,), (1, 16)])
def test_the_array_level_gradient_has_the_bits_of_the_tensor_op_formula(device, w_shape):
    """BatchNormGrad computes at the array level what _output_gradient computes as Tensor ops, from
    the forward pass's statistics: the same float32 operations in the same order, so the same bits."""
    from needle.ops.normalization import BatchNormGrad, _output_gradient
    rng = np.random.RandomState(4)
    x, g = (ndl.Tensor(rng.randn(32, 16).astype(np.float32) * 3 + 1, device=device) for _ in range(2))
    w, b = (ndl.Tensor(rng.randn(*w_shape).astype(np.float32), device=device) for _ in range(2))
    stats = ndl.ops.BatchNorm(1e-5)(x, w, b)
    fast = BatchNormGrad(1e-5, w_shape, w_shape)(g, x, w, stats)
    reference = _output_gradient(g, x, w, 1e-5, w_shape)
    for mine, ref in zip(fast.tuple(), reference):
        assert mine.shape == ref.shape
        assert mine.numpy().tobytes() == ref.numpy().tobytes()


def test_the_gradient_is_one_node_and_its_third_derivative_matches_pytorch():
    """First-order backward runs one BatchNormGrad node; differentiating it goes through autograd.vjp
    of the Tensor-op formula, which is itself differentiable (third derivatives)."""
    (x, w, b), (tx, tw, tb) = _inputs(6, 4, seed=8)
    v, u = (np.random.RandomState(s).randn(6, 4) for s in (1, 2))
    out, _, _ = ndl.ops.batch_norm(x, w, b)
    (out * ndl.Tensor(v, dtype="float64")).sum().backward()
    gx = x.grad
    assert type(gx.op).__name__ == "TupleGetItem" and type(gx.inputs[0].op).__name__ == "BatchNormGrad"
    (gx * ndl.Tensor(u, dtype="float64")).sum().backward()
    (x.grad * x.grad).sum().backward()  # a function of the second derivative, differentiated again

    # PyTorch's batch_norm as its formula: the third derivative of F.batch_norm itself (torch 2.13)
    # disagrees with that of the same formula written out, which the second derivatives agree on
    mean = tx.mean(0, keepdim=True)
    t_out = (tx - mean) / torch.sqrt(((tx - mean) ** 2).mean(0, keepdim=True) + 1e-5) * tw + tb
    (t_gx,) = torch.autograd.grad((t_out * torch.tensor(v)).sum(), (tx,), create_graph=True)
    (t_second,) = torch.autograd.grad((t_gx * torch.tensor(u)).sum(), (tx,), create_graph=True)
    third = torch.autograd.grad((t_second * t_second).sum(), (tx, tw))
    np.testing.assert_allclose(x.grad.numpy(), third[0].numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(w.grad.numpy(), third[1].numpy(), rtol=1e-7, atol=1e-9)


def _special_columns(x: np.ndarray) -> np.ndarray:
    """x with a column of -0.0, a constant column of 1e8, a column holding inf and one holding nan."""
    x = x.copy()
    x[:, 0] = -0.0
    x[:, 1] = 1e8
    if x.shape[1] > 3:
        x[0, 2] = np.inf
        x[-1, 3] = np.nan
    return x


def _forward_and_gradient(x, w, b, g):
    """BatchNorm's three outputs and BatchNormGrad's three outputs (the statistics detached) as bytes,
    every nan as numpy's (a nan's sign bit depends on which operand an instruction propagates)."""
    from needle.ops.normalization import BatchNormGrad
    stats = ndl.ops.BatchNorm(1e-5)(x, w, b)
    grads = BatchNormGrad(1e-5, tuple(w.shape), tuple(b.shape))(g, x, w, stats)
    outputs = [t.numpy() for t in (*stats.tuple(), *grads.tuple())]
    return [np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes() for a in outputs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,c", [(32, 64), (2, 4), (1, 5), (4096, 16), (5000, 2), (7, 3)])
def test_the_cpu_kernels_give_the_bits_of_the_array_sequence(monkeypatch, dtype, n, c):
    """The cpu's batch_norm and batch_norm_backward kernels (3 and 2 passes) against the array-level
    sequences BatchNorm and BatchNormGrad run without them: the same bits (but for a nan's sign), with
    -0.0, inf, nan and constant columns, below and above the size where the sequence's column sums
    change loops."""
    from needle.autograd import array_api
    rng = np.random.RandomState(n + c)
    data = _special_columns(rng.randn(n, c) * 3 + 1)
    device = ndl.cpu()
    x, g = ndl.Tensor(data, dtype=dtype, device=device), ndl.Tensor(rng.randn(n, c), dtype=dtype, device=device)
    w, b = (ndl.Tensor(rng.randn(c), dtype=dtype, device=device) for _ in range(2))
    calls = []
    for name in ("batch_norm", "batch_norm_backward"):
        kernel = getattr(device.mod, name)
        monkeypatch.setattr(device, name, lambda *a, kernel=kernel, name=name: (calls.append(name), kernel(*a)))
    fused = _forward_and_gradient(x, w, b, g)
    assert calls == ["batch_norm", "batch_norm_backward"]
    monkeypatch.setattr(array_api, "device_batch_norm", lambda *a: None)
    monkeypatch.setattr(array_api, "device_batch_norm_backward", lambda *a: None)
    assert fused == _forward_and_gradient(x, w, b, g)
    assert calls == ["batch_norm", "batch_norm_backward"]


@pytest.mark.parametrize("case", ["one channel", "transposed adjoint", "broadcast adjoint", "strided input"])
def test_layouts_whose_sums_numpy_orders_otherwise_take_the_array_sequence(monkeypatch, case):
    """A sum over axis 0 is numpy's row-by-row order only for a compact (N, C) array with C >= 2: one
    channel (numpy sums the column pairwise) or an adjoint or input laid out otherwise runs the
    array sequence, whose bits the cpu_numpy device's (kernel-less) run gives."""
    from needle.autograd import array_api as functions
    rng = np.random.RandomState(11)
    n, c = (6000, 1) if case == "one channel" else (3000, 4)
    data, grad, weight, bias = rng.randn(n, c) * 3 + 1, rng.randn(n, c), rng.randn(c), rng.randn(c)
    used = []
    real = functions.device_batch_norm_backward, functions.device_batch_norm
    monkeypatch.setattr(functions, "device_batch_norm", lambda *a: used.append("forward") or real[1](*a))
    monkeypatch.setattr(functions, "device_batch_norm_backward", lambda *a: used.append("backward") or real[0](*a))

    def run(device):
        x = ndl.Tensor(data, dtype="float32", device=device)
        if case == "strided input":
            x = ndl.Tensor(np.ascontiguousarray(data.T), dtype="float32", device=device).transpose()
        if case == "transposed adjoint":
            g = ndl.Tensor(np.ascontiguousarray(grad.T), dtype="float32", device=device).transpose()
        elif case == "broadcast adjoint":
            g = ndl.Tensor(grad[:1], dtype="float32", device=device).broadcast_to((n, c))
        else:
            g = ndl.Tensor(grad, dtype="float32", device=device)
        w, b = (ndl.Tensor(a, dtype="float32", device=device) for a in (weight, bias))
        return _forward_and_gradient(x, w, b, g)

    assert run(ndl.cpu()) == run(ndl.cpu_numpy())
    assert used  # the checks ran on the cpu
