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
