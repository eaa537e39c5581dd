"""Weights to and from PyTorch (needle.interop): the same architecture built in both frameworks
gives the same outputs after converting either way."""
import copy

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import needle as ndl
from needle import interop, nn
from needle.models import MLP, ResNet9, SmallCNN

tnn = torch.nn


def _conv_bn(a, b, k, s):
    return tnn.Sequential(tnn.Conv2d(a, b, k, s, padding=k // 2), tnn.BatchNorm2d(b), tnn.ReLU())


class TorchResidual(tnn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class TorchResNet9(tnn.Module):
    def __init__(self):
        super().__init__()
        self.model = tnn.Sequential(
            _conv_bn(3, 16, 7, 4), _conv_bn(16, 32, 3, 2),
            TorchResidual(tnn.Sequential(_conv_bn(32, 32, 3, 1), _conv_bn(32, 32, 3, 1))),
            _conv_bn(32, 64, 3, 2), _conv_bn(64, 128, 3, 2),
            TorchResidual(tnn.Sequential(_conv_bn(128, 128, 3, 1), _conv_bn(128, 128, 3, 1))),
            tnn.Flatten(), tnn.Linear(128, 128), tnn.ReLU(), tnn.Linear(128, 10))

    def forward(self, x):
        return self.model(x)


class TorchAttention(tnn.Module):
    """The twin of needle's AttentionLayer: three pre-norms, bias-free projections, causal."""

    def __init__(self, features, heads):
        super().__init__()
        self.prenorm_q, self.prenorm_k, self.prenorm_v = (tnn.LayerNorm(features) for _ in range(3))
        self.attn = tnn.MultiheadAttention(features, heads, bias=False, batch_first=True)

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        out, _ = self.attn(self.prenorm_q(x), self.prenorm_k(x), self.prenorm_v(x), attn_mask=mask,
                           need_weights=False)
        return out


class TorchTransformerLayer(tnn.Module):
    def __init__(self, features, heads, hidden):
        super().__init__()
        self.attention = TorchAttention(features, heads)
        self.linear1, self.linear2 = tnn.Linear(features, hidden), tnn.Linear(hidden, features)
        self.norm = tnn.LayerNorm(features)

    def forward(self, x):
        x = x + self.attention(x)
        return x + self.linear2(torch.relu(self.linear1(self.norm(x))))


def mlp_pair():
    return MLP(6, [8, 5], 3), tnn.Sequential(tnn.Linear(6, 8), tnn.ReLU(), tnn.Linear(8, 5), tnn.ReLU(),
                                            tnn.Linear(5, 3)), np.random.RandomState(0).randn(4, 6)


def cnn_pair():
    twin = tnn.Sequential(_conv_bn(1, 16, 3, 1), _conv_bn(16, 32, 3, 2), _conv_bn(32, 32, 3, 1),
                          _conv_bn(32, 64, 3, 2), tnn.Flatten(), tnn.Linear(64 * 3 * 3, 128), tnn.ReLU(),
                          tnn.Linear(128, 10))
    return SmallCNN(1, 10, 12), twin, np.random.RandomState(1).randn(2, 1, 12, 12)


def resnet_pair():
    return ResNet9(), TorchResNet9(), np.random.RandomState(2).randn(2, 3, 32, 32)


class NeedleLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 7, num_layers=2)

    def forward(self, x):
        return self.lstm(x)[0]


class TorchLSTM(tnn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = tnn.LSTM(5, 7, num_layers=2)

    def forward(self, x):
        return self.lstm(x)[0]


def lstm_pair():
    return NeedleLSTM(), TorchLSTM(), np.random.RandomState(3).randn(6, 2, 5)


def transformer_pair():
    needle_layer = nn.TransformerLayer(16, 4, 4, 24, dropout=0.0, causal=True)
    return needle_layer, TorchTransformerLayer(16, 4, 24), np.random.RandomState(4).randn(2, 5, 16)


PAIRS = {"mlp": mlp_pair, "small_cnn": cnn_pair, "resnet9": resnet_pair, "lstm": lstm_pair,
         "transformer_layer": transformer_pair}


def _outputs(needle_model, torch_model, x):
    """needle's float32 outputs, and PyTorch's from the same weights and inputs evaluated in
    float64 (a copy): its float32 kernels round differently per CPU, the float64 result does not."""
    needle_model.eval()
    torch_model.eval()
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = copy.deepcopy(torch_model).double()(torch.tensor(x, dtype=torch.float64)).numpy()
    got = needle_model(ndl.Tensor(x, requires_grad=False)).numpy()
    return got, expected


def _randomise_statistics(torch_model):
    """Running statistics other than 0/1, so that converting them is checked too."""
    rng = np.random.RandomState(9)
    for m in torch_model.modules():
        if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
            m.running_mean.copy_(torch.tensor(rng.randn(*m.running_mean.shape)))
            m.running_var.copy_(torch.tensor(rng.rand(*m.running_var.shape) + 0.5))
        if isinstance(m, tnn.LayerNorm):
            with torch.no_grad():
                m.weight.copy_(torch.tensor(rng.randn(*m.weight.shape)))


@pytest.mark.parametrize("name", list(PAIRS))
def test_torch_weights_give_the_same_outputs_in_needle(name):
    torch.manual_seed(0)
    np.random.seed(0)
    needle_model, torch_model, x = PAIRS[name]()
    _randomise_statistics(torch_model)
    interop.from_torch(needle_model, torch_model.state_dict())
    got, expected = _outputs(needle_model, torch_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(PAIRS))
def test_needle_weights_give_the_same_outputs_in_torch(name):
    torch.manual_seed(1)
    np.random.seed(1)
    needle_model, torch_model, x = PAIRS[name]()
    state = interop.to_torch(needle_model)
    assert set(state) == set(torch_model.state_dict())
    torch_model.load_state_dict(state)  # strict: every name and shape as PyTorch's
    got, expected = _outputs(needle_model, torch_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # and back: the round trip reproduces needle's own weights exactly
    copy = PAIRS[name]()[0]
    interop.from_torch(copy, state)
    for a, b in zip(copy.state_dict().values(), needle_model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_safetensors_file_written_by_torch_loads(tmp_path):
    needle_model, torch_model, x = mlp_pair()
    path = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in torch_model.state_dict().items()}, str(path))
    interop.from_torch(needle_model, str(path))
    got, expected = _outputs(needle_model, torch_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_mismatches_name_the_key_and_both_shapes():
    needle_model, torch_model, _ = mlp_pair()
    state = torch_model.state_dict()
    before = needle_model.state_dict()
    bad = dict(state, **{"2.weight": torch.zeros(5, 9)})
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(5, 9\).*needs \(5, 8\)"):
        interop.from_torch(needle_model, bad)
    with pytest.raises(ValueError, match=r"missing keys \['4.bias'\]"):
        interop.from_torch(needle_model, {k: v for k, v in state.items() if k != "4.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        interop.from_torch(needle_model, dict(state, extra=torch.zeros(1)))
    for a, b in zip(before.values(), needle_model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # nothing changed on error
