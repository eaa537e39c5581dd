"""Tensor.backward(create_graph=False): PyTorch's default as an opt-in. The backward pass records
no graph of the gradients: the same values as the course's default, bit for bit, and `.grad`
constants; the course's `.grad` graphs (gradients of gradients) stay the default."""
import numpy as np
import pytest

import needle as ndl
from needle import nn


def grads_after_backward(create_graph, build, inputs):
    np.random.seed(0)
    model = build()
    out = model(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    (out * out).sum().backward(create_graph=create_graph)
    return [p.grad for p in model.parameters()]


MODELS = {
    "mlp+batchnorm": (lambda: nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)),
                      lambda r: [ndl.Tensor(r.randn(8, 6).astype(np.float32))]),
    "conv": (lambda: nn.Sequential(nn.Conv(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
             lambda r: [ndl.Tensor(r.randn(2, 3, 6, 6).astype(np.float32))]),
    "lstm": (lambda: nn.LSTM(5, 7, num_layers=2),
             lambda r: [ndl.Tensor(r.randn(4, 3, 5).astype(np.float32))]),
    "attention+layernorm": (lambda: nn.Sequential(nn.LayerNorm1d(8), nn.Linear(8, 8)),
                            lambda r: [ndl.Tensor(r.randn(5, 8).astype(np.float32))]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_gradients_are_the_same_bits_without_a_graph(name):
    build, make_inputs = MODELS[name]
    with_graph = grads_after_backward(True, build, make_inputs(np.random.RandomState(1)))
    without = grads_after_backward(False, build, make_inputs(np.random.RandomState(1)))
    assert [g.numpy().tobytes() for g in with_graph] == [g.numpy().tobytes() for g in without]
    assert all(g.requires_grad for g in with_graph)            # the course's graphs
    assert not any(g.requires_grad or g.op is not None for g in without)


def test_the_default_still_gives_gradients_of_gradients():
    x = ndl.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    (x * x * x).sum().backward()
    first = x.grad
    np.testing.assert_allclose(first.numpy(), [3.0, 12.0])
    first.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 12.0])  # d/dx sum(3 x^2) = 6 x


def test_accumulate_without_a_graph_adds_into_grad():
    x = ndl.Tensor(np.array([1.0, -2.0], np.float32), requires_grad=True)
    for _ in range(3):
        (x * x).sum().backward(accumulate=True, create_graph=False)
    np.testing.assert_array_equal(x.grad.numpy(), np.array([6.0, -12.0], np.float32))
    assert not x.grad.requires_grad


def test_grad_mode_is_restored_even_when_a_hook_raises():
    x = ndl.Tensor(np.ones(2, np.float32), requires_grad=True)

    def hook(_):
        raise RuntimeError("from the hook")

    x.register_post_accumulate_grad_hook(hook)
    with pytest.raises(RuntimeError, match="from the hook"):
        (x * 2).sum().backward(create_graph=False)
    assert ndl.is_grad_enabled()


@pytest.mark.parametrize("bad", [0, 1, None, "no"])
def test_create_graph_must_be_a_bool(bad):
    x = ndl.Tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="create_graph"):
        (x * 2).sum().backward(create_graph=bad)
