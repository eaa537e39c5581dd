"""The course apps: apps/mlp_resnet.py (hw2), apps/models.py (hw4), apps/simple_ml.py (hw1 + hw4).

The apps are imported the way the course's tests import them (apps/ and the repository
root on sys.path). Expected values come from the spec (parameter counts), from numpy
replays of the seeded RNG draws, from independent numpy / PyTorch re-computations on the
same weights, or from invariants -- never from needle's own output.
"""
import gzip
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

for _p in (str(ROOT), str(ROOT / "apps")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import mlp_resnet  # noqa: E402
from models import LanguageModel  # noqa: E402

import needle as ndl  # noqa: E402
import needle.nn as nn  # noqa: E402
from apps import simple_ml_numpy  # noqa: E402
from apps.models import ResNet9  # noqa: E402
from apps.simple_ml import (  # noqa: E402
    epoch_general_cifar10,
    epoch_general_ptb,
    evaluate_cifar10,
    evaluate_ptb,
    loss_err,
    nn_epoch,
    softmax_loss,
    train_cifar10,
    train_ptb,
)

DEVICE = ndl.cpu()


# ----------------------------------------------------------------------------- helpers

def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def read_mnist_raw(data, n):
    """The first n MNIST test images ((n, 784) uint8) and labels of a data source, read independently."""
    with gzip.open(data.mnist_images, "rb") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n].copy()
    with gzip.open(data.mnist_labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].copy()
    assert len(X) == len(y) == n, f"{data}: fewer than {n} MNIST test images"
    return X, y


def read_mnist(data, n):
    """First n MNIST test images (float32 in [0, 1], (n, 784)) and labels, read independently."""
    X, y = read_mnist_raw(data, n)
    return X.astype(np.float32) / 255, y


def write_idx_gz(path, magic, dims, payload: np.ndarray):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + payload.tobytes())


def np_lse(Z):
    Z = np.asarray(Z, dtype=np.float64)
    m = Z.max(axis=1, keepdims=True)
    return np.log(np.exp(Z - m).sum(axis=1)) + m[:, 0]


def np_err_loss(logits, y):
    """(error rate, mean per-sample softmax loss) computed in float64 numpy."""
    y = np.asarray(y).astype(np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    losses = np_lse(logits) - logits[np.arange(len(y)), y]
    return float(np.mean(logits.argmax(axis=1) != y)), float(losses.mean())


def classes_data(n, shape, k, seed, noise=0.6):
    """A learnable synthetic set: one random pattern per class plus Gaussian noise."""
    rng = np.random.RandomState(seed)
    patterns = rng.randn(k, *shape)
    y = rng.randint(0, k, size=n)
    X = patterns[y] + noise * rng.randn(n, *shape)
    return X.astype(np.float32), y


def snapshot(model):
    return [p.numpy().copy() for p in model.parameters()]


# ============================================================================ hw2 mlp_resnet

def linear_count(i, o):
    return i * o + o


def block_count(dim, hidden, norm_params_per_feature=2):
    return linear_count(dim, hidden) + linear_count(hidden, dim) + norm_params_per_feature * (hidden + dim)


@pytest.mark.parametrize("args, norm, expected", [
    ((15, 2), nn.BatchNorm1d, 111),
    ((784, 100), nn.LayerNorm1d, 159452),
])
def test_residual_block_parameter_count(args, norm, expected):
    block = mlp_resnet.ResidualBlock(*args, norm=norm)
    assert n_params(block) == expected == block_count(*args)


@pytest.mark.parametrize("args, norm, expected", [
    ((150, 100, 5, 10), nn.LayerNorm1d, 68360),
    ((10, 100, 1, 100), nn.BatchNorm1d, 21650),
])
def test_mlp_resnet_parameter_count(args, norm, expected):
    dim, hidden, blocks, classes = args
    model = mlp_resnet.MLPResNet(dim, hidden, blocks, classes, norm=norm)
    formula = linear_count(dim, hidden) + blocks * block_count(hidden, hidden // 2) + linear_count(hidden, classes)
    assert n_params(model) == expected == formula


def test_residual_block_structure():
    block = mlp_resnet.ResidualBlock(12, 5, norm=nn.LayerNorm1d, drop_prob=0.3)
    assert isinstance(block, nn.Sequential)
    assert [type(m) for m in block.modules] == [nn.Residual, nn.ReLU]
    inner = block.modules[0].fn
    assert [type(m) for m in inner.modules] == [nn.Linear, nn.LayerNorm1d, nn.ReLU, nn.Dropout, nn.Linear,
                                                nn.LayerNorm1d]
    lin1, norm1, _, drop, lin2, norm2 = inner.modules
    assert (lin1.in_features, lin1.out_features, lin2.in_features, lin2.out_features) == (12, 5, 5, 12)
    assert (norm1.dim, norm2.dim) == (5, 12)
    assert drop.p == 0.3


def test_mlp_resnet_structure():
    model = mlp_resnet.MLPResNet(20, 8, num_blocks=2, num_classes=4, norm=nn.BatchNorm1d, drop_prob=0.2)
    mods = model.modules
    assert [type(m) for m in mods] == [nn.Linear, nn.ReLU, nn.Sequential, nn.Sequential, nn.Linear]
    assert (mods[0].in_features, mods[0].out_features) == (20, 8)
    assert (mods[-1].in_features, mods[-1].out_features) == (8, 4)
    for blk in mods[2:4]:
        lin1, bn1, _, drop, lin2, bn2 = blk.modules[0].fn.modules
        assert (lin1.in_features, lin1.out_features) == (8, 4)  # hidden_dim // 2
        assert isinstance(bn1, nn.BatchNorm1d) and isinstance(bn2, nn.BatchNorm1d)
        assert drop.p == 0.2


def test_mlp_resnet_rng_draw_order():
    """Every Linear draws weight (in, out) then bias (out, 1) with bound sqrt(6/fan_in), in forward order."""
    dim, hidden, blocks, classes = 9, 6, 2, 4
    np.random.seed(11)
    model = mlp_resnet.MLPResNet(dim, hidden, blocks, classes)
    np.random.seed(11)
    expected = []
    shapes = [(dim, hidden)] + [(hidden, hidden // 2), (hidden // 2, hidden)] * blocks + [(hidden, classes)]
    for i, o in shapes:
        b = math.sqrt(6 / i)
        w = np.random.rand(i, o) * 2 * b - b
        bb = math.sqrt(6 / o)
        bias = (np.random.rand(o, 1) * 2 * bb - bb).reshape(1, o)
        expected.append((w, bias))
    linears = [model.modules[0]] + [m for blk in model.modules[2:2 + blocks]
                                    for m in blk.modules[0].fn.modules if isinstance(m, nn.Linear)] + [model.modules[-1]]
    assert len(linears) == len(expected)
    for lin, (w, bias) in zip(linears, expected):
        np.testing.assert_allclose(lin.weight.numpy(), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lin.bias.numpy().reshape(1, -1), bias, rtol=1e-5, atol=1e-6)
    # and the first parameter is the first Linear's weight
    np.testing.assert_allclose(model.parameters()[0].numpy(), expected[0][0], rtol=1e-5, atol=1e-6)


def np_layernorm(x, w, b, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return w.reshape(1, -1) * (x - mu) / np.sqrt(var + eps) + b.reshape(1, -1)


def test_mlp_resnet_forward_matches_numpy():
    """LayerNorm, no dropout: the forward is a deterministic function we can write in numpy."""
    np.random.seed(2)
    model = mlp_resnet.MLPResNet(7, 10, num_blocks=2, num_classes=3, norm=nn.LayerNorm1d, drop_prob=0.0)
    X = np.random.RandomState(5).randn(6, 7).astype(np.float32)
    out = model(ndl.Tensor(X, device=DEVICE)).numpy()

    def lin(m, x):
        return x @ m.weight.numpy().astype(np.float64) + m.bias.numpy().reshape(1, -1)

    def ln(m, x):
        return np_layernorm(x, m.weight.numpy(), m.bias.numpy())

    x = np.maximum(lin(model.modules[0], X.astype(np.float64)), 0)
    for blk in model.modules[2:4]:
        l1, n1, _, _, l2, n2 = blk.modules[0].fn.modules
        y = ln(n2, lin(l2, np.maximum(ln(n1, lin(l1, x)), 0)))
        x = np.maximum(x + y, 0)
    ref = lin(model.modules[-1], x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def _loader(X, y, batch_size, shuffle=False):
    return ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size, shuffle=shuffle, device=DEVICE)


def test_epoch_eval_matches_independent_evaluation():
    X, y = classes_data(250, (4, 5), 5, seed=3)           # 3-D samples: epoch must flatten them
    np.random.seed(1)
    model = mlp_resnet.MLPResNet(20, 16, num_blocks=2, num_classes=5, norm=nn.BatchNorm1d)
    # move the BatchNorm running statistics away from 0/1 first
    mlp_resnet.epoch(_loader(X, y, 50, shuffle=True), model, ndl.optim.Adam(model.parameters(), lr=0.01))
    assert model.training
    model.train()                                       # epoch() must switch to eval mode itself
    err, loss = mlp_resnet.epoch(_loader(X, y, 64), model)   # 64, 64, 64, 58: a short last batch
    assert not model.training
    logits = model(ndl.Tensor(X.reshape(250, 20), device=DEVICE)).numpy()   # eval mode: row-wise
    ref_err, ref_loss = np_err_loss(logits, y)
    assert 0.0 <= err <= 1.0
    assert err == pytest.approx(ref_err, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_epoch_training_mode_with_zero_lr_reports_the_same_numbers():
    """LayerNorm and p=0 make train and eval forwards equal; with lr 0 nothing moves, so the
    (sample-weighted) training statistics equal an evaluation of the unchanged model."""
    X, y = classes_data(130, (12,), 4, seed=4)
    np.random.seed(2)
    model = mlp_resnet.MLPResNet(12, 10, num_blocks=1, num_classes=4, norm=nn.LayerNorm1d, drop_prob=0.0)
    before = snapshot(model)
    model.eval()
    err, loss = mlp_resnet.epoch(_loader(X, y, 32, shuffle=True), model, ndl.optim.SGD(model.parameters(), lr=0.0))
    assert model.training
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)
    ref_err, ref_loss = np_err_loss(model(ndl.Tensor(X, device=DEVICE)).numpy(), y)
    assert err == pytest.approx(ref_err, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_epoch_training_lowers_the_loss():
    X, y = classes_data(200, (16,), 4, seed=5)
    np.random.seed(3)
    model = mlp_resnet.MLPResNet(16, 32, num_blocks=1, num_classes=4)
    eval_loader, train_loader = _loader(X, y, 50), _loader(X, y, 25, shuffle=True)
    err0, loss0 = mlp_resnet.epoch(eval_loader, model)
    opt = ndl.optim.Adam(model.parameters(), lr=0.01)
    train_losses = [mlp_resnet.epoch(train_loader, model, opt)[1] for _ in range(4)]
    err1, loss1 = mlp_resnet.epoch(eval_loader, model)
    assert train_losses[-1] < train_losses[0]
    assert loss1 < 0.5 * loss0
    assert err1 < err0 and err1 < 0.2


def test_train_mnist_on_the_test_split(tmp_path, data):
    # the first 500 test images (all of the sample) pose as both splits: the same work on the full file
    X, y = read_mnist_raw(data, 500)
    for split in ("t10k", "train"):
        write_idx_gz(tmp_path / f"{split}-images-idx3-ubyte.gz", 2051, (len(X), 28, 28), X)
        write_idx_gz(tmp_path / f"{split}-labels-idx1-ubyte.gz", 2049, (len(y),), y)
    result = mlp_resnet.train_mnist(batch_size=25, epochs=2, lr=0.01, hidden_dim=16, data_dir=str(tmp_path))
    assert len(result) == 4
    train_err, train_loss, test_err, test_loss = result
    for e in (train_err, test_err):
        assert 0.0 <= e <= 1.0
    for lo in (train_loss, test_loss):
        assert np.isfinite(lo) and lo > 0
    # 40 Adam steps over 500 digits learn something: well below chance (0.9 error, loss ln 10)
    assert test_err < 0.6 and test_loss < 0.8 * math.log(10)


def test_train_mnist_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        mlp_resnet.train_mnist(epochs=1, hidden_dim=8, data_dir=str(tmp_path / "nope"))


# ============================================================================ hw4 models

def test_resnet9_parameter_count_and_shape():
    np.random.seed(0)
    model = ResNet9(device=DEVICE)
    assert n_params(model) == 431946
    x = ndl.Tensor(np.random.RandomState(0).randn(2, 3, 32, 32).astype(np.float32), device=DEVICE)
    out = model(x)
    assert out.shape == (2, 10)
    assert np.isfinite(out.numpy()).all()


def torch_resnet9():
    """ResNet9 written from the spec in PyTorch (float64)."""
    T = torch.nn

    def cbn(a, b, k, s):
        return [T.Conv2d(a, b, k, s, padding=k // 2), T.BatchNorm2d(b), T.ReLU()]

    class Res(T.Module):
        def __init__(self, *mods):
            super().__init__()
            self.fn = T.Sequential(*mods)

        def forward(self, x):
            return self.fn(x) + x

    return T.Sequential(
        *cbn(3, 16, 7, 4), *cbn(16, 32, 3, 2),
        Res(*cbn(32, 32, 3, 1), *cbn(32, 32, 3, 1)),
        *cbn(32, 64, 3, 2), *cbn(64, 128, 3, 2),
        Res(*cbn(128, 128, 3, 1), *cbn(128, 128, 3, 1)),
        T.Flatten(), T.Linear(128, 128), T.ReLU(), T.Linear(128, 10),
    ).double()


def copy_into_torch(needle_params, torch_model):
    """Copy needle parameters (creation order) into the torch model's parameters (same order)."""
    tparams = list(torch_model.parameters())
    assert len(tparams) == len(needle_params)
    with torch.no_grad():
        for tp, p in zip(tparams, needle_params):
            a = p.numpy().astype(np.float64)
            if tp.dim() == 4:            # needle conv (k, k, in, out) -> torch (out, in, k, k)
                a = a.transpose(3, 2, 0, 1)
            elif tp.dim() == 2:          # needle linear (in, out) -> torch (out, in)
                a = a.T
            else:
                a = a.reshape(-1)
            assert tuple(a.shape) == tuple(tp.shape)
            tp.copy_(torch.from_numpy(np.ascontiguousarray(a)))


@pytest.mark.parametrize("training", [False, True])
def test_resnet9_forward_matches_torch(training):
    np.random.seed(1)
    model = ResNet9(device=DEVICE)
    ref = torch_resnet9()
    copy_into_torch(model.parameters(), ref)
    x = np.random.RandomState(2).rand(8, 3, 32, 32).astype(np.float32)
    model.train() if training else model.eval()
    ref.train(training)
    out = model(ndl.Tensor(x, device=DEVICE)).numpy()
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


LM_VOCAB, LM_EMB, LM_HIDDEN = 23, 6, 5


@pytest.mark.parametrize("seq_model", ["rnn", "lstm", "transformer"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_language_model_shapes_and_grads(seq_model, num_layers):
    seq_len, bs = 7, 3
    np.random.seed(0)
    model = LanguageModel(LM_EMB, LM_VOCAB, LM_HIDDEN, num_layers=num_layers, seq_model=seq_model,
                          seq_len=seq_len, device=DEVICE)
    x = ndl.Tensor(np.random.randint(0, LM_VOCAB, (seq_len, bs)).astype(np.float32), device=DEVICE)
    out, h = model(x)
    assert out.shape == (seq_len * bs, LM_VOCAB)
    if seq_model == "rnn":
        assert h.shape == (num_layers, bs, LM_HIDDEN)
    elif seq_model == "lstm":
        assert isinstance(h, tuple) and len(h) == 2
        assert h[0].shape == h[1].shape == (num_layers, bs, LM_HIDDEN)
    else:
        assert h.shape == (seq_len, bs, LM_EMB)
    # the state can be fed back in
    out2, _ = model(x, h if seq_model != "transformer" else None)
    assert out2.shape == out.shape
    out.backward()
    params = model.parameters()
    assert params
    for p in params:
        assert p.grad is not None
        assert p.grad.shape == p.shape


def torch_lm(model, kind):
    """embedding -> torch.nn.RNN/LSTM -> linear with the needle model's weights (float64)."""
    emb_w = torch.from_numpy(model.embedding.weight.numpy().astype(np.float64))
    cells = model.seq_model.rnn_cells if kind == "rnn" else model.seq_model.lstm_cells
    E, H = emb_w.shape[1], cells[0].hidden_size
    seq = (torch.nn.RNN if kind == "rnn" else torch.nn.LSTM)(E, H, num_layers=len(cells)).double()
    with torch.no_grad():
        for k, cell in enumerate(cells):
            getattr(seq, f"weight_ih_l{k}").copy_(torch.from_numpy(cell.W_ih.numpy().T.astype(np.float64)))
            getattr(seq, f"weight_hh_l{k}").copy_(torch.from_numpy(cell.W_hh.numpy().T.astype(np.float64)))
            getattr(seq, f"bias_ih_l{k}").copy_(torch.from_numpy(cell.bias_ih.numpy().reshape(-1).astype(np.float64)))
            getattr(seq, f"bias_hh_l{k}").copy_(torch.from_numpy(cell.bias_hh.numpy().reshape(-1).astype(np.float64)))
    lin_w = torch.from_numpy(model.linear.weight.numpy().astype(np.float64))
    lin_b = torch.from_numpy(model.linear.bias.numpy().reshape(-1).astype(np.float64))
    emb_w.requires_grad_(True)
    lin_w.requires_grad_(True)
    lin_b.requires_grad_(True)

    def forward(x_ids, h=None):
        x = torch.as_tensor(np.asarray(x_ids)).long()
        e = emb_w[x]
        out, h = seq(e, h)
        return out.reshape(-1, H) @ lin_w + lin_b, h

    return forward, seq, (emb_w, lin_w, lin_b)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_language_model_matches_torch(kind):
    seq_len, bs, layers = 6, 4, 2
    np.random.seed(3)
    model = LanguageModel(LM_EMB, LM_VOCAB, LM_HIDDEN, num_layers=layers, seq_model=kind, device=DEVICE)
    rs = np.random.RandomState(4)
    ids = rs.randint(0, LM_VOCAB, (seq_len, bs))
    h0 = rs.randn(layers, bs, LM_HIDDEN).astype(np.float32) * 0.5
    c0 = rs.randn(layers, bs, LM_HIDDEN).astype(np.float32) * 0.5
    forward, seq, (emb_w, lin_w, lin_b) = torch_lm(model, kind)

    t = lambda a: ndl.Tensor(a, device=DEVICE)  # noqa: E731
    nh = t(h0) if kind == "rnn" else (t(h0), t(c0))
    th = torch.from_numpy(h0.astype(np.float64))
    th = th if kind == "rnn" else (th, torch.from_numpy(c0.astype(np.float64)))

    out, h = model(t(ids.astype(np.float32)), nh)
    ref, ref_h = forward(ids, th)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    if kind == "rnn":
        np.testing.assert_allclose(h.numpy(), ref_h.detach().numpy(), rtol=1e-4, atol=1e-5)
    else:
        for a, b in zip(h, ref_h):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)

    # gradients of sum(logits) (what a non-scalar backward with ones computes)
    out.backward()
    ref.sum().backward()
    np.testing.assert_allclose(model.embedding.weight.grad.numpy(), emb_w.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.linear.weight.grad.numpy(), lin_w.grad.numpy(), rtol=1e-4, atol=1e-4)
    cells = model.seq_model.rnn_cells if kind == "rnn" else model.seq_model.lstm_cells
    for k, cell in enumerate(cells):
        np.testing.assert_allclose(cell.W_ih.grad.numpy(), getattr(seq, f"weight_ih_l{k}").grad.numpy().T,
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cell.W_hh.grad.numpy(), getattr(seq, f"weight_hh_l{k}").grad.numpy().T,
                                   rtol=1e-4, atol=1e-4)


def test_language_model_rejects_unknown_kind():
    with pytest.raises(ValueError):
        LanguageModel(4, 10, 5, seq_model="gru")


# ============================================================================ hw1 simple_ml

def one_hot(y, k):
    return np.eye(k, dtype=np.float32)[y]


def test_softmax_loss_value_and_gradient():
    rs = np.random.RandomState(0)
    Z = rs.randn(9, 6).astype(np.float32) * 3
    y = rs.randint(0, 6, 9)
    Zt = ndl.Tensor(Z, device=DEVICE)
    loss = softmax_loss(Zt, ndl.Tensor(one_hot(y, 6), device=DEVICE))
    assert loss.shape in ((), (1,))
    ref = np.mean(np_lse(Z) - Z[np.arange(9), y])
    assert float(loss.numpy()) == pytest.approx(ref, rel=1e-5)
    loss.backward()
    S = np.exp(Z - Z.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    np.testing.assert_allclose(Zt.grad.numpy(), (S - one_hot(y, 6)) / 9, rtol=1e-4, atol=1e-6)


def test_softmax_loss_zero_logits_and_large_logits():
    Y = ndl.Tensor(one_hot(np.array([0, 3, 9]), 10), device=DEVICE)
    zero = softmax_loss(ndl.Tensor(np.zeros((3, 10), np.float32), device=DEVICE), Y)
    assert float(zero.numpy()) == pytest.approx(math.log(10), rel=1e-6)
    # shifting every logit by the same large constant leaves the loss unchanged (stable log-sum-exp)
    Z = np.random.RandomState(1).randn(3, 10).astype(np.float32)
    big = softmax_loss(ndl.Tensor(Z + 1000, device=DEVICE), Y)
    ref = np.mean(np_lse(Z) - Z[np.arange(3), [0, 3, 9]])
    assert np.isfinite(big.numpy())
    assert float(big.numpy()) == pytest.approx(ref, abs=2e-3)


@pytest.mark.parametrize("batch", [100, 64])
def test_nn_epoch_matches_numpy_version(batch, data):
    X, y = read_mnist(data, 330)                    # 330 rows: a short last minibatch either way
    rs = np.random.RandomState(0)
    W1 = (rs.randn(784, 20) / np.sqrt(20)).astype(np.float32)
    W2 = (rs.randn(20, 10) / np.sqrt(10)).astype(np.float32)
    W1t, W2t = ndl.Tensor(W1, device=DEVICE), ndl.Tensor(W2, device=DEVICE)
    new1, new2 = nn_epoch(X, y, W1t, W2t, lr=0.2, batch=batch)
    W1n, W2n = W1.copy(), W2.copy()
    simple_ml_numpy.nn_epoch(X, y, W1n, W2n, lr=0.2, batch=batch)
    assert not np.allclose(W1n, W1)           # the reference really moved
    np.testing.assert_allclose(new1.numpy(), W1n, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new2.numpy(), W2n, rtol=1e-4, atol=1e-5)
    # the inputs are left alone; the results are fresh leaves
    np.testing.assert_array_equal(W1t.numpy(), W1)
    assert new1.op is None and new2.op is None


def test_loss_err_matches_numpy():
    rs = np.random.RandomState(2)
    h = rs.randn(40, 10).astype(np.float32)
    y = rs.randint(0, 10, 40).astype(np.uint8)
    loss, err = loss_err(ndl.Tensor(h, device=DEVICE), y)
    ref_err, ref_loss = np_err_loss(h, y)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert float(err) == pytest.approx(ref_err)


# ============================================================================ hw4 cifar loops

def small_cnn():
    return nn.Sequential(nn.Conv(3, 4, 3, stride=2, device=DEVICE), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 4, device=DEVICE))


def image_data(n=96, seed=7):
    return classes_data(n, (3, 8, 8), 4, seed=seed, noise=0.8)


def test_evaluate_cifar10_matches_independent_evaluation():
    X, y = image_data()
    np.random.seed(0)
    model = small_cnn()
    model.train()
    acc, loss = evaluate_cifar10(model, _loader(X, y, 40))      # 40, 40, 16
    assert not model.training
    logits = model(ndl.Tensor(X, device=DEVICE)).numpy()
    ref_err, ref_loss = np_err_loss(logits, y)
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx(1 - ref_err, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    # epoch_general_cifar10 without an optimizer is the same evaluation
    acc2, loss2 = epoch_general_cifar10(_loader(X, y, 40), model)
    assert (acc2, loss2) == pytest.approx((acc, loss))


def test_train_cifar10_improves():
    X, y = image_data()
    np.random.seed(0)
    model = small_cnn()
    eval_loader = _loader(X, y, 48)
    acc0, loss0 = evaluate_cifar10(model, eval_loader)
    accs, losses = [], []
    for _ in range(3):
        a, lo = train_cifar10(model, _loader(X, y, 16, shuffle=True), n_epochs=1, lr=0.01)
        assert model.training
        assert 0.0 <= a <= 1.0
        accs.append(a)
        losses.append(lo)
    acc1, loss1 = evaluate_cifar10(model, eval_loader)
    assert losses[-1] < losses[0]
    assert loss1 < 0.5 * loss0
    assert acc1 > max(acc0, 0.8)


def test_train_cifar10_with_zero_lr_reports_the_evaluation():
    """No BatchNorm or dropout in small_cnn: training with lr 0 reports eval-equal numbers."""
    X, y = image_data(50)
    np.random.seed(1)
    model = small_cnn()
    before = snapshot(model)
    acc, loss = train_cifar10(model, _loader(X, y, 16, shuffle=True), n_epochs=2, optimizer=ndl.optim.SGD,
                              lr=0.0, weight_decay=0.0)
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)
    ref_err, ref_loss = np_err_loss(model(ndl.Tensor(X, device=DEVICE)).numpy(), y)
    assert acc == pytest.approx(1 - ref_err, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_train_cifar10_resnet9_runs():
    rs = np.random.RandomState(3)
    X = rs.rand(8, 3, 32, 32).astype(np.float32)
    y = rs.randint(0, 10, 8)
    np.random.seed(0)
    model = ResNet9(device=DEVICE)
    before = snapshot(model)
    acc, loss = train_cifar10(model, _loader(X, y, 4, shuffle=True), n_epochs=1, lr=0.001)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss) and loss > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, snapshot(model)))
    acc_e, loss_e = evaluate_cifar10(model, _loader(X, y, 4))
    assert 0.0 <= acc_e <= 1.0 and np.isfinite(loss_e)


# ============================================================================ hw4 ptb loops

PTB_BS, PTB_SEQ = 4, 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data):
    lines = data.shakespeare.read_text(encoding="utf-8").splitlines(keepends=True)
    d = tmp_path_factory.mktemp("ptb")
    (d / "train.txt").write_text("".join(lines[:20]), encoding="utf-8")
    (d / "test.txt").write_text("".join(lines[20:40]), encoding="utf-8")
    return ndl.data.Corpus(str(d))


def ptb_data(corpus, which="train"):
    return ndl.data.batchify(getattr(corpus, which), PTB_BS, DEVICE, "float32")


def torch_evaluate(model, kind, data, seq_len):
    """(accuracy, mean per-token loss) with the hidden state carried across windows."""
    forward, _, _ = torch_lm(model, kind)
    h, total, correct, count = None, 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, data.shape[0] - 1, seq_len):
            L = min(seq_len, data.shape[0] - 1 - i)
            x = data[i:i + L].astype(np.int64)
            y = torch.from_numpy(data[i + 1:i + 1 + L].flatten().astype(np.int64))
            logits, h = forward(x, h)
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    return correct / count, total / count


def make_lm(corpus, kind, seed=0):
    np.random.seed(seed)
    return LanguageModel(12, len(corpus.dictionary), 10, num_layers=2, seq_model=kind, device=DEVICE)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_evaluate_ptb_matches_torch(corpus, kind):
    data = ptb_data(corpus)
    model = make_lm(corpus, kind)
    model.train()
    acc, loss = evaluate_ptb(model, data, seq_len=PTB_SEQ, device=DEVICE)
    assert not model.training
    ref_acc, ref_loss = torch_evaluate(model, kind, data, PTB_SEQ)
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx(ref_acc, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_train_ptb_with_zero_lr_reports_the_evaluation(corpus, kind):
    data = ptb_data(corpus)
    model = make_lm(corpus, kind, seed=1)
    before = snapshot(model)
    acc, loss = train_ptb(model, data, seq_len=PTB_SEQ, n_epochs=1, lr=0.0, device=DEVICE)
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)
    ref_acc, ref_loss = torch_evaluate(model, kind, data, PTB_SEQ)
    assert acc == pytest.approx(ref_acc, abs=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_train_ptb_lowers_the_loss(corpus, kind):
    data = ptb_data(corpus)
    model = make_lm(corpus, kind, seed=2)
    acc0, loss0 = evaluate_ptb(model, data, seq_len=PTB_SEQ, device=DEVICE)
    losses = []
    for _ in range(3):
        acc, loss = train_ptb(model, data, seq_len=PTB_SEQ, n_epochs=2, optimizer=ndl.optim.Adam, lr=0.02,
                              device=DEVICE)
        assert model.training and 0.0 <= acc <= 1.0 and np.isfinite(loss)
        losses.append(loss)
    assert losses[-1] < losses[0]
    acc1, loss1 = evaluate_ptb(model, data, seq_len=PTB_SEQ, device=DEVICE)
    assert loss1 < loss0 - 0.5
    assert acc1 > acc0
    # and the evaluation of the trained model is still what torch computes
    ref_acc, ref_loss = torch_evaluate(model, kind, data, PTB_SEQ)
    assert acc1 == pytest.approx(ref_acc, abs=1e-12)
    assert loss1 == pytest.approx(ref_loss, rel=1e-4)


def test_epoch_general_ptb_carries_state(corpus):
    """Evaluating window by window with the state reset each time gives different numbers
    than carrying it; epoch_general_ptb must carry it (and agree with the carried reference)."""
    data = ptb_data(corpus)
    model = make_lm(corpus, "lstm", seed=4)
    acc, loss = epoch_general_ptb(data, model, seq_len=PTB_SEQ, device=DEVICE)
    forward, _, _ = torch_lm(model, "lstm")
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, data.shape[0] - 1, PTB_SEQ):
            L = min(PTB_SEQ, data.shape[0] - 1 - i)
            logits, _ = forward(data[i:i + L].astype(np.int64), None)
            y = torch.from_numpy(data[i + 1:i + 1 + L].flatten().astype(np.int64))
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            count += len(y)
    reset_loss = total / count
    assert abs(reset_loss - loss) > 1e-4
    assert loss == pytest.approx(torch_evaluate(model, "lstm", data, PTB_SEQ)[1], rel=1e-5)
