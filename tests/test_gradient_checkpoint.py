"""needle.utils.checkpoint: gradients equal the plain run's bit for bit (dropout, BatchNorm, Transformer
layers, inside ndl.compile), the RNG ends where the plain run leaves it, and misuse is refused."""
import functools

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.models.mlp_resnet import ResidualBlock
from needle.utils import checkpoint


def residual_stack(blocks=3, dim=16, drop=0.3):
    np.random.seed(0)
    return [ResidualBlock(dim, dim // 2, drop_prob=drop) for _ in range(blocks)] + [nn.Linear(dim, 4)]


def transformer_stack(layers=2):
    np.random.seed(0)
    return [nn.TransformerLayer(16, 2, 8, 32, dropout=0.2) for _ in range(layers)]


def run_mlp(use_checkpoint, blocks=None):
    """Loss, every parameter's gradient, the data's gradient, the BatchNorm running means, and
    the next number numpy's RNG gives, after one forward + backward of an MLPResNet-style stack."""
    blocks = residual_stack() if blocks is None else blocks
    np.random.seed(1)
    X = ndl.Tensor(np.random.randn(10, 16).astype(np.float32))
    y = ndl.Tensor(np.random.randint(0, 4, 10), dtype="int64")
    h = X
    for block in blocks[:-1]:
        h = checkpoint(block, h) if use_checkpoint else block(h)
    loss = nn.SoftmaxLoss()(blocks[-1](h), y)
    loss.backward()
    params = [p for b in blocks for p in b.parameters()]
    running = [t.numpy() for b in blocks for name, t in b.state_dict().items() if "running" in name]
    return loss.numpy(), [p.grad.numpy() for p in params], X.grad.numpy(), running, np.random.rand()


def assert_same(plain, checkpointed):
    loss, grads, x_grad, running, next_draw = plain
    loss2, grads2, x_grad2, running2, next_draw2 = checkpointed
    assert loss.tobytes() == loss2.tobytes()
    assert len(grads) == len(grads2) > 0
    for g, g2 in zip(grads, grads2):
        np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(x_grad, x_grad2)
    for r, r2 in zip(running, running2):
        np.testing.assert_array_equal(r, r2)
    assert next_draw == next_draw2


def test_mlp_blocks_with_dropout_and_batchnorm_bit_exact():
    plain, checkpointed = run_mlp(False), run_mlp(True)
    assert_same(plain, checkpointed)
    # the dropout masks matter: without replaying the RNG the recomputation would differ
    assert np.abs(plain[1][0]).sum() > 0


def test_batchnorm_running_statistics_updated_once():
    blocks = residual_stack(blocks=1)
    bn = blocks[0].modules[0].fn.modules[1]
    before = bn.running_mean.numpy()
    run_mlp(True, blocks)
    once = bn.running_mean.numpy()
    fresh = residual_stack(blocks=1)
    run_mlp(False, fresh)
    np.testing.assert_array_equal(once, fresh[0].modules[0].fn.modules[1].running_mean.numpy())
    assert not np.array_equal(before, once)


def run_transformer(use_checkpoint, compiled=False, steps=3):
    """Three SGD steps on a 2-layer Transformer stack (dropout 0.2): losses, parameters, next draw."""
    layers = transformer_stack()
    params = [p for layer in layers for p in layer.parameters()]
    opt = ndl.optim.SGD(params, lr=0.1)

    def step(x):
        opt.reset_grad()
        h = x
        for layer in layers:
            h = checkpoint(layer, h) if use_checkpoint else layer(h)
        loss = (h * h).mean()
        loss.backward()
        opt.step()
        return loss

    if compiled:
        step = ndl.compile(step, fuse=False)
    np.random.seed(1)
    losses = [step(ndl.Tensor(np.random.randn(3, 5, 16).astype(np.float32))).numpy() for _ in range(steps)]
    return losses, [p.numpy() for p in params], np.random.rand()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_transformer_layers_bit_exact(compiled):
    plain = run_transformer(False)
    checkpointed = run_transformer(True, compiled=compiled)
    assert [x.tobytes() for x in plain[0]] == [x.tobytes() for x in checkpointed[0]]
    for p, p2 in zip(plain[1], checkpointed[1]):
        np.testing.assert_array_equal(p, p2)
    assert plain[2] == checkpointed[2]


def test_transformer_layer_gradients_bit_exact():
    def grads(use_checkpoint):
        layer = transformer_stack(layers=1)[0]
        np.random.seed(3)
        x = ndl.Tensor(np.random.randn(2, 4, 16).astype(np.float32))
        out = checkpoint(layer, x) if use_checkpoint else layer(x)
        (out * out).sum().backward()
        return [p.grad.numpy() for p in layer.parameters()] + [x.grad.numpy()]

    for g, g2 in zip(grads(False), grads(True)):
        np.testing.assert_array_equal(g, g2)


def test_function_with_explicit_params_and_several_inputs():
    np.random.seed(0)
    w = nn.Parameter(np.random.randn(5, 5).astype(np.float32))

    def fn(a, b):
        return ndl.ops.tanh(a @ w) * b

    def grads(use_checkpoint):
        np.random.seed(1)
        a = ndl.Tensor(np.random.randn(3, 5).astype(np.float32))
        b = ndl.Tensor(np.random.randn(3, 5).astype(np.float32))
        out = checkpoint(fn, a, b, params=[w]) if use_checkpoint else fn(a, b)
        out.sum().backward()
        return a.grad.numpy(), b.grad.numpy(), w.grad.numpy()

    for g, g2 in zip(grads(False), grads(True)):
        np.testing.assert_array_equal(g, g2)


def test_parameter_reached_but_not_listed_is_an_error():
    w = nn.Parameter(np.ones((2, 2), np.float32))
    x = ndl.Tensor(np.ones((1, 2), np.float32))
    out = checkpoint(lambda a: a @ w, x)
    with pytest.raises(ValueError, match="neither an input nor one of the parameters"):
        out.sum().backward()


def test_under_no_grad_it_is_a_plain_call():
    layer = nn.Linear(3, 2)
    x = ndl.Tensor(np.ones((1, 3), np.float32))
    with ndl.no_grad():
        out = checkpoint(layer, x)
    assert out.op is None and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), layer(x).numpy())


def test_inputs_and_output_must_be_tensors():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="inputs must be Tensors"):
        checkpoint(layer, np.ones((1, 3)))
    with pytest.raises(TypeError, match="one Tensor"):
        checkpoint(lambda x: (x, x), ndl.Tensor(np.ones((1, 3), np.float32)))
    # extra arguments go in through functools.partial
    x = ndl.Tensor(np.ones((2, 3), np.float32))
    out = checkpoint(functools.partial(ndl.ops.summation, axes=(1,)), x)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3), np.float32))


def test_graph_keeps_only_the_inputs_and_parameters():
    """What makes it save memory: the output's node holds the block's input and parameters, no activation."""
    block = residual_stack(blocks=1)[0]
    x = ndl.Tensor(np.ones((4, 16), np.float32))
    out = checkpoint(block, x)
    assert [id(t) for t in out.inputs] == [id(x)] + [id(p) for p in block.parameters()]
    assert all(t.op is None for t in out.inputs)
    plain = block(x)
    assert len(ndl.autograd.find_topo_sort([plain])) > len(ndl.autograd.find_topo_sort([out])) + 10
