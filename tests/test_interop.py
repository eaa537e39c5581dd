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


# ----------------------------------------------------------------------------- convolutions

CONV2D_SETTINGS = [dict(kernel_size=3, padding=1), dict(kernel_size=(3, 5), stride=(2, 1), padding="valid",
                                                         dilation=2, groups=2),
                   dict(kernel_size=4, padding="same", groups=4, bias=False),
                   dict(kernel_size=3, padding=2, padding_mode="reflect")]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("kw", CONV2D_SETTINGS, ids=str)
@pytest.mark.parametrize("source", ["state_dict", "module"])
def test_torch_conv2d_loads_into_needle_conv2d_as_it_is(kw, source):
    """Same layout (Cout, Cin / groups, KH, KW): no permutation, torch's outputs."""
    torch.manual_seed(3)
    twin = tnn.Conv2d(4, 8, **kw)
    layer = nn.Conv2d(4, 8, **kw)
    interop.from_torch(layer, twin if source == "module" else twin.state_dict())
    np.testing.assert_array_equal(layer.weight.numpy(), twin.weight.detach().numpy())
    x = np.random.RandomState(5).randn(2, 4, 9, 10)
    got, expected = _outputs(layer, twin, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("kw", CONV2D_SETTINGS, ids=str)
def test_needle_conv2d_goes_to_torch_and_back(kw):
    np.random.seed(4)
    layer, twin = nn.Conv2d(4, 8, **kw), tnn.Conv2d(4, 8, **kw)
    state = interop.to_torch(layer, twin)  # checked, then loaded into the twin
    assert set(state) == set(twin.state_dict())
    np.testing.assert_array_equal(twin.weight.detach().numpy(), layer.weight.numpy())
    got, expected = _outputs(layer, twin, np.random.RandomState(6).randn(3, 4, 9, 10))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    copy = nn.Conv2d(4, 8, **kw)
    interop.from_torch(copy, state)
    for a, b in zip(copy.state_dict().values(), layer.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_whole_torch_models_load_through_their_modules():
    """A torch module (not its state dict) is accepted: ResNet9's same-padded Conv2d's pass the
    settings check of the course's nn.Conv, and the outputs are torch's."""
    torch.manual_seed(0)
    np.random.seed(0)
    needle_model, torch_model, x = resnet_pair()
    _randomise_statistics(torch_model)
    interop.from_torch(needle_model, torch_model)
    got, expected = _outputs(needle_model, torch_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cnn, twin, x = cnn_pair()
    interop.to_torch(cnn, twin)
    got, expected = _outputs(cnn, twin, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


REFUSED = [  # (needle module, torch module, what the message names)
    (lambda: nn.Conv(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3), r"torch Conv2d has padding=\(0, 0\).*\(\(0, 0\), \(0, 0\)\)"
     r".*computes with \(\(1, 1\), \(1, 1\)\) \(nn.Conv is same-padded"),
    (lambda: nn.Conv(3, 4, 3, stride=2), lambda: tnn.Conv2d(3, 4, 3, stride=1, padding=1),
     r"stride=\(1, 1\), the needle module computes with stride=\(2, 2\)"),
    (lambda: nn.Conv(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3, padding=1, dilation=2), r"dilation=\(2, 2\)"),
    (lambda: nn.Conv(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"),
     "padding_mode='circular', the needle module computes with padding_mode='zeros'"),
    (lambda: nn.Conv(4, 4, 4), lambda: tnn.Conv2d(4, 4, 4, padding="same"),
     r"padding='same', i.e. \(before, after\) \(\(1, 2\), \(1, 2\)\).*\(\(2, 2\), \(2, 2\)\)"),
    (lambda: nn.Conv(4, 4, 3), lambda: tnn.ConvTranspose2d(4, 4, 3, padding=1),
     "the torch module there is a ConvTranspose2d, needle computes a torch.nn.Conv2d"),
    (lambda: nn.Conv2d(4, 6, 3, groups=2), lambda: tnn.Conv2d(4, 6, 3), "groups=1, the needle module computes with "
                                                                        "groups=2"),
    (lambda: nn.Conv2d(4, 6, (3, 5), padding=(1, 2)), lambda: tnn.Conv2d(4, 6, (3, 5), padding=(2, 1)),
     r"padding=\(2, 1\)"),
    (lambda: nn.Conv2d(4, 6, 3, stride=(2, 1)), lambda: tnn.Conv2d(4, 6, 3, stride=2), r"stride=\(2, 2\)"),
    (lambda: nn.Conv2d(4, 6, 3, padding=1), lambda: tnn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
     "padding_mode='reflect'"),
    (lambda: nn.Conv2d(4, 6, 3), lambda: tnn.Conv1d(4, 6, 3), "a Conv1d, needle computes a torch.nn.Conv2d"),
    (lambda: nn.Conv1d(4, 6, 3), lambda: tnn.Conv1d(4, 6, 3, padding=1), r"padding=\(1,\)"),
    (lambda: nn.Conv1d(4, 6, 3), lambda: tnn.Conv1d(4, 6, 3, dilation=2), r"dilation=\(2,\)"),
]


@pytest.mark.parametrize("make,make_twin,match", REFUSED, ids=range(len(REFUSED)))
def test_a_conversion_that_would_change_the_output_is_refused(make, make_twin, match):
    """Given a torch module, its convolution settings must be the needle module's: the error
    names the module, torch's setting and needle's; nothing is loaded."""
    layer, twin = make(), make_twin()
    before = [t.numpy().copy() for t in layer.state_dict().values()]
    with pytest.raises(ValueError, match=rf"from_torch: module '\(root\)' \(needle {type(layer).__name__}\).*{match}"):
        interop.from_torch(layer, twin)
    for a, b in zip(before, layer.state_dict().values()):
        np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(ValueError, match=rf"to_torch: .*{match}"):
        interop.to_torch(layer, twin)


def test_refusals_name_the_path_inside_a_model():
    model = nn.Sequential(nn.Conv(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3, dilation=2)))
    twin = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.Sequential(tnn.Conv2d(4, 4, 3)))
    with pytest.raises(ValueError, match=r"module '2.0' \(needle Conv2d\): the torch Conv2d has dilation=\(1, 1\)"):
        interop.from_torch(model, twin)
    twin[2][0] = tnn.Conv2d(4, 4, 3, dilation=2)
    interop.from_torch(model, twin)  # now every setting agrees


def test_same_padding_of_an_odd_kernel_is_the_course_convs():
    """torch's padding='same' and nn.Conv's k // 2 agree for odd kernels at stride 1."""
    torch.manual_seed(2)
    twin, layer = tnn.Conv2d(3, 4, 5, padding="same"), nn.Conv(3, 4, 5)
    interop.from_torch(layer, twin)
    got, expected = _outputs(layer, twin, np.random.RandomState(7).randn(2, 3, 7, 6))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_gradients_in_torchs_names_and_layouts_match_the_twins():
    """torch_state_dict_arrays(m, grads=True): each parameter's .grad under the twin's key and layout
    (Linear transposed, biases flat, LSTM gates), equal to the torch twin's after the same backward."""
    torch.manual_seed(0)
    tm = torch.nn.ModuleDict({"fc": torch.nn.Linear(3, 4), "lstm": torch.nn.LSTM(4, 2)}).double()
    nm = nn.ModuleDict({"fc": nn.Linear(3, 4, dtype="float64"), "lstm": nn.LSTM(4, 2, dtype="float64")})
    interop.from_torch(nm, tm.state_dict())
    x = np.random.RandomState(1).randn(5, 2, 3)
    with pytest.raises(ValueError, match="'fc.weight' has no gradient"):
        interop.torch_state_dict_arrays(nm, grads=True)
    tm["lstm"](tm["fc"](torch.tensor(x)))[0].pow(2).sum().backward()
    nm["lstm"](nm["fc"](ndl.tensor(x)))[0].pow(2).sum().backward()
    grads = interop.torch_state_dict_arrays(nm, grads=True)
    assert set(grads) == {k for k, _ in tm.named_parameters()}
    for key, p in tm.named_parameters():
        np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-10, err_msg=key)
