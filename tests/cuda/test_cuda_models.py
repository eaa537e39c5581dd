"""A few training steps of small models on cuda against the same steps on the cpu device.

Each model is built twice from the same numpy seed (the initializers draw from it), once per
device, and trained on the same batches; every step's loss and the final parameters must
agree. The models are tiny: the simulator runs each CUDA thread as a Python thread.

The optimizers are SGD where a parameter's true gradient is zero (a conv bias before batch
norm, attention's key bias): Adam would scale each device's rounding noise there up to full
steps of opposite signs.
"""
import numpy as np
import pytest

import needle as ndl
from needle import nn, optim
from needle.models import MLP, LanguageModel

CPU, CUDA = ndl.cpu(), ndl.cuda()
TOL = dict(rtol=2e-4, atol=2e-5)


def _train(build, batches, loss_of, device, make_opt, steps):
    np.random.seed(0)
    model = build(device)
    model.train()
    opt = make_opt(model.parameters())
    losses = []
    for x, y in batches[:steps]:
        opt.reset_grad()
        loss = loss_of(model, ndl.Tensor(x, device=device, dtype=x.dtype.name, requires_grad=False),
                       ndl.Tensor(y, device=device, dtype=y.dtype.name, requires_grad=False))
        loss.backward()
        opt.step()
        losses.append(loss.numpy())
    return np.array(losses), [p.numpy() for p in model.parameters()], model


def _compare(build, batches, loss_of, make_opt, steps=2):
    want_losses, want_params, _ = _train(build, batches, loss_of, CPU, make_opt, steps)
    got_losses, got_params, model = _train(build, batches, loss_of, CUDA, make_opt, steps)
    assert all(p.device == CUDA for p in model.parameters())
    np.testing.assert_allclose(got_losses, want_losses, err_msg="losses", **TOL)
    for k, (g, w) in enumerate(zip(got_params, want_params)):
        np.testing.assert_allclose(g, w, err_msg=f"parameter {k}", **TOL)


def _classify(model, x, y):
    return nn.SoftmaxLoss()(model(x), y)


def _batches(rng, n, x_shape, classes):
    return [(rng.standard_normal(x_shape).astype("float32"), rng.integers(0, classes, size=x_shape[0]))
            for _ in range(n)]


def test_mlp_trains_as_on_the_cpu():
    rng = np.random.default_rng(0)
    _compare(lambda d: MLP(8, [16, 16], 4, device=d), _batches(rng, 3, (6, 8), 4), _classify,
             lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), steps=3)


class _TinyResNet(nn.Module):
    """ResNet9's pieces at toy size: conv-batchnorm-relu blocks, a residual, a strided conv."""

    def __init__(self, device):
        super().__init__()

        def block(cin, cout, k, stride=1):
            return nn.Sequential(nn.Conv(cin, cout, k, stride=stride, device=device),
                                 nn.BatchNorm2d(cout, device=device), nn.ReLU())

        self.body = nn.Sequential(block(3, 4, 3), nn.Residual(block(4, 4, 3)), block(4, 4, 3, stride=2), nn.Flatten(),
                                  nn.Linear(4 * 3 * 3, 3, device=device))

    def forward(self, x):
        return self.body(x)


def test_conv_batchnorm_residual_net_trains_as_on_the_cpu():
    rng = np.random.default_rng(1)
    _compare(_TinyResNet, _batches(rng, 2, (2, 3, 6, 6), 3), _classify, lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))


def _language_loss(model, x, y):
    logits, _ = model(x)
    return nn.SoftmaxLoss()(logits, y.reshape((y.shape[0] * y.shape[1],)))


def _token_batches(rng, n, seq_len, bs, vocab):
    return [(rng.integers(0, vocab, size=(seq_len, bs)).astype("float32"),
             rng.integers(0, vocab, size=(seq_len, bs))) for _ in range(n)]


def test_lstm_language_model_trains_as_on_the_cpu():
    rng = np.random.default_rng(2)
    _compare(lambda d: LanguageModel(4, 7, 5, num_layers=1, seq_model="lstm", device=d),
             _token_batches(rng, 2, 3, 2, 7), _language_loss, lambda ps: optim.SGD(ps, lr=0.5))


class _TinyTransformerLM(nn.Module):
    def __init__(self, device, vocab=7, width=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width, device=device)
        self.transformer = nn.Transformer(width, 8, 1, num_head=2, dim_head=4, sequence_len=4, device=device)
        self.linear = nn.Linear(width, vocab, device=device)
        self.width = width

    def forward(self, x, h=None):
        seq_len, bs = x.shape
        out, _ = self.transformer(self.embedding(x))
        return self.linear(out.reshape((seq_len * bs, self.width))), None


def test_transformer_language_model_trains_as_on_the_cpu():
    rng = np.random.default_rng(3)
    _compare(_TinyTransformerLM, _token_batches(rng, 2, 3, 2, 7), _language_loss,
             lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))


@pytest.mark.parametrize("dtype", ["float64"])
def test_float64_mlp_trains_as_on_the_cpu(dtype):
    rng = np.random.default_rng(4)
    batches = [(x.astype(dtype), y) for x, y in _batches(rng, 2, (5, 3), 2)]
    _compare(lambda d: MLP(3, [4], 2, device=d, dtype=dtype), batches, _classify, lambda ps: optim.Adam(ps, lr=0.1))


@pytest.mark.parametrize("make_opt", [
    lambda ps, fused: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, fused=fused),
    lambda ps, fused: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, fused=fused),
    lambda ps, fused: optim.Adam(ps, lr=0.1, weight_decay=0.01, fused=fused),
    lambda ps, fused: optim.AdamW(ps, lr=0.1, fused=fused),
    lambda ps, fused: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True, weight_decay=0.1, fused=fused),
    lambda ps, fused: optim.Adagrad(ps, lr=0.1, weight_decay=0.1, fused=fused),
    lambda ps, fused: optim.Adadelta(ps, weight_decay=0.1, fused=fused),
], ids=["sgd", "sgd-nesterov", "adam", "adamw", "rmsprop", "adagrad", "adadelta"])
def test_fused_optimizer_updates_give_the_op_by_op_bits(make_opt):
    """array_api.sgd_step, adam_step, ... on cuda (the op sequence, in the array layer) vs fused=False."""
    rng = np.random.default_rng(0)
    batches = _batches(rng, 2, (6, 3), 2)
    finals = []
    for fused in (None, False):
        np.random.seed(0)
        model = MLP(3, [4], 2, device=CUDA)
        opt = make_opt(model.parameters(), fused)
        for x, y in batches:
            x, y = ndl.Tensor(x, device=CUDA, requires_grad=False), ndl.Tensor(y, device=CUDA, dtype="int64")
            opt.reset_grad()
            _classify(model, x, y).backward()
            opt.step()
        finals.append([p.numpy() for p in model.parameters()])
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)
