"""The layers PyTorch code copies need (nanoGPT, makemore, minGPT, the official MNIST, word-LM,
DCGAN and VAE examples), as modules, against their torch.nn twins in float64: LayerNorm,
GRU/GRUCell, RNN/LSTM/GRU with batch_first and dropout, ConvTranspose2d, the losses NLLLoss,
BCELoss, BCEWithLogitsLoss and CrossEntropyLoss(weight), ReLU/LeakyReLU(inplace=True),
Softplus, Dropout2d, Embedding(padding_idx), scaled_dot_product_attention's dropout.

Each module gets the torch twin's weights (a torch state dict loaded as it is where the layout
is PyTorch's, needle.interop for the recurrent layers' course layout); forward values, the
input's gradient and every parameter's gradient are compared. The functional forms are in the
table of tests/layer_cases.py (both devices, numpy mode); ONNX export in tests/test_onnx.py.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import needle as ndl
import needle.nn as nn
import needle.nn.functional as F
from needle import interop
from torch_compare import close, nd, rand, th

torch.set_num_threads(1)


def torch_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def backward_both(out, tout, seed=9):
    """sum(out * w) backward on both sides, w random."""
    w = rand(*tout.shape, seed=seed)
    (out * nd(w, requires_grad=False)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()


# --------------------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("shape,kw", [((5,), {}), ((3, 4), {}), ((4,), dict(bias=False)),
                                      ((4,), dict(elementwise_affine=False)), (6, dict(eps=1e-3))], ids=str)
def test_layer_norm_matches_torch_and_loads_its_state_dict(shape, kw):
    layer = nn.LayerNorm(shape, dtype="float64", **kw)
    ref = torch.nn.LayerNorm(shape, dtype=torch.float64, **kw)
    assert set(layer.state_dict()) == set(ref.state_dict())
    for name, p in layer.named_parameters():  # PyTorch's initial values: ones and zeros
        close(p, dict(ref.named_parameters())[name])
    with torch.no_grad():  # random affine parameters, then loaded as they are
        for p in ref.parameters():
            p.copy_(torch.tensor(rand(*p.shape, seed=p.numel())))
    layer.load_state_dict(torch_state(ref))
    normalized = (shape,) if isinstance(shape, int) else shape
    a = rand(2, 3, *normalized, seed=1)
    x, tx = nd(a), th(a)
    out, tout = layer(x), ref(tx)
    close(out, tout)
    backward_both(out, tout)
    close(x.grad, tx.grad)
    for name, p in layer.named_parameters():
        close(p.grad, dict(ref.named_parameters())[name].grad)


def test_layer_norm_float32_default_and_course_layer_norm1d_unchanged():
    layer = nn.LayerNorm(8)
    assert layer.weight.dtype == "float32" and layer.normalized_shape == (8,)
    assert nn.LayerNorm1d(8).dim == 8  # the course's, beside it


# --------------------------------------------------------------------------- GRU

def _gru_from_torch(cell_or_stack, ref):
    interop.from_torch(cell_or_stack, ref)  # W_ih = weight_ih.T, gates r, z, n
    return cell_or_stack


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_gru_cell_matches_torch(bias, with_state):
    ref = torch.nn.GRUCell(3, 5, bias=bias, dtype=torch.float64)
    cell = _gru_from_torch(nn.GRUCell(3, 5, bias=bias, dtype="float64"), ref)
    a, h = rand(4, 3, seed=1), rand(4, 5, seed=2)
    x, tx = nd(a), th(a)
    hs = (nd(h), th(h)) if with_state else (None, None)
    out, tout = cell(x, hs[0]), ref(tx, hs[1])
    close(out, tout)
    backward_both(out, tout)
    close(x.grad, tx.grad)
    if with_state:
        close(hs[0].grad, hs[1].grad)
    for name, t in (("W_ih", "weight_ih"), ("W_hh", "weight_hh")):
        close(getattr(cell, name).grad, getattr(ref, t).grad.T)
    if bias:
        close(cell.bias_ih.grad, ref.bias_ih.grad)
        close(cell.bias_hh.grad, ref.bias_hh.grad)


@pytest.mark.parametrize("num_layers,batch_first,with_state,bias", [
    (1, False, False, True), (2, False, True, True), (2, True, True, False), (3, True, False, True)])
def test_gru_matches_torch(num_layers, batch_first, with_state, bias):
    ref = torch.nn.GRU(3, 4, num_layers=num_layers, bias=bias, batch_first=batch_first, dtype=torch.float64)
    gru = _gru_from_torch(nn.GRU(3, 4, num_layers, bias, dtype="float64", batch_first=batch_first), ref)
    a = rand(*((2, 6, 3) if batch_first else (6, 2, 3)), seed=3)
    h = rand(num_layers, 2, 4, seed=4)
    x, tx = nd(a), th(a)
    hs = (nd(h), th(h)) if with_state else (None, None)
    (out, h_n), (tout, th_n) = gru(x, hs[0]), ref(tx, hs[1])
    close(out, tout)
    close(h_n, th_n)
    w = rand(*tout.shape, seed=5)
    (out * nd(w, requires_grad=False)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    close(x.grad, tx.grad)
    if with_state:
        close(hs[0].grad, hs[1].grad)
    torch_grads = {k: v.grad.numpy() for k, v in ref.named_parameters()}
    for layer, cell in enumerate(gru.gru_cells):
        close(cell.W_ih.grad, torch_grads[f"weight_ih_l{layer}"].T)
        close(cell.W_hh.grad, torch_grads[f"weight_hh_l{layer}"].T)
        if bias:
            close(cell.bias_ih.grad, torch_grads[f"bias_ih_l{layer}"])
            close(cell.bias_hh.grad, torch_grads[f"bias_hh_l{layer}"])


def test_gru_state_dict_round_trip_through_interop():
    np.random.seed(3)
    gru = nn.GRU(3, 4, 2, dtype="float64")
    ref = torch.nn.GRU(3, 4, 2, dtype=torch.float64)
    interop.to_torch(gru, ref)
    assert set(interop.to_torch(gru)) == set(ref.state_dict())
    a = rand(5, 2, 3, seed=6)
    close(gru(nd(a))[0], ref(th(a))[0])
    back = nn.GRU(3, 4, 2, dtype="float64")
    interop.from_torch(back, ref.state_dict())
    for p, q in zip(back.parameters(), gru.parameters()):
        close(p, q, rtol=0, atol=0)


def test_gru_initialisation_draws_the_course_way():
    """U(-b, b), b = sqrt(1 / H), W_ih (in, 3H), W_hh (H, 3H), bias_ih, bias_hh (3H,), drawn in
    that order from numpy's global RNG (LSTMCell's rule)."""
    np.random.seed(11)
    cell = nn.GRUCell(3, 4, dtype="float64")
    np.random.seed(11)
    for name, shape in (("W_ih", (3, 12)), ("W_hh", (4, 12)), ("bias_ih", (12,)), ("bias_hh", (12,))):
        draw = np.random.rand(*shape).astype(np.float32)  # init.rand draws in float32
        close(getattr(cell, name), draw * np.float32(1.0) - np.float32(0.5), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_rnn_and_lstm_batch_first_match_torch(kind):
    ref = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True, dtype=torch.float64)
    layer = getattr(nn, kind)(3, 4, 2, dtype="float64", batch_first=True)
    interop.from_torch(layer, ref)
    a = rand(2, 5, 3, seed=7)
    x, tx = nd(a), th(a)
    out, tout = layer(x)[0], ref(tx)[0]
    assert out.shape == (2, 5, 4)
    close(out, tout)
    backward_both(out, tout)
    close(x.grad, tx.grad)


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_every_parameter_gradient_matches_torch(bias):
    """Three layers over 7 steps with given states: the input projection of each layer runs over
    the whole sequence at once (one matmul, its gradient one matmul per operand), so every
    weight's and bias's gradient, and those of the input and of both initial states, are
    compared with PyTorch's."""
    ref = torch.nn.LSTM(3, 4, num_layers=3, bias=bias, dtype=torch.float64)
    layer = nn.LSTM(3, 4, 3, bias=bias, dtype="float64")
    interop.from_torch(layer, ref)
    a, h, c = rand(7, 2, 3, seed=21), rand(3, 2, 4, seed=22), rand(3, 2, 4, seed=23)
    x, h0, c0 = nd(a), nd(h), nd(c)
    tx, th0, tc0 = th(a), th(h), th(c)
    (out, (h_n, c_n)), (tout, (th_n, tc_n)) = layer(x, (h0, c0)), ref(tx, (th0, tc0))
    close(out, tout)
    close(h_n, th_n)
    close(c_n, tc_n)
    w = rand(2, 4, seed=24)
    loss = (out * nd(rand(7, 2, 4, seed=25), requires_grad=False)).sum() + (c_n[2] * nd(w, requires_grad=False)).sum()
    tloss = (tout * torch.tensor(rand(7, 2, 4, seed=25))).sum() + (tc_n[2] * torch.tensor(w)).sum()
    loss.backward()
    tloss.backward()
    for ours, theirs in ((x, tx), (h0, th0), (c0, tc0)):
        close(ours.grad, theirs.grad)
    grads = dict(ref.named_parameters())
    for k, cell in enumerate(layer.lstm_cells):
        close(cell.W_ih.grad, grads[f"weight_ih_l{k}"].grad.T)
        close(cell.W_hh.grad, grads[f"weight_hh_l{k}"].grad.T)
        if bias:
            close(cell.bias_ih.grad, grads[f"bias_ih_l{k}"].grad)
            close(cell.bias_hh.grad, grads[f"bias_hh_l{k}"].grad)


def test_lstm_calls_a_subclassed_cell_at_every_step():
    """A cell class with its own forward is still called once per step and layer (the course's
    unrolling), not bypassed by the whole-sequence input projection."""
    calls = []

    class CountingCell(nn.LSTMCell):
        def forward(self, X, h=None):
            calls.append(X.shape)
            h_t, c_t = super().forward(X, h)
            return h_t * 0.5, c_t

    layer = nn.LSTM(3, 4, 2, dtype="float64")
    plain = nn.LSTM(3, 4, 2, dtype="float64")
    for k, cell in enumerate(layer.lstm_cells):
        counting = CountingCell(3 if k == 0 else 4, 4, dtype="float64")
        for name in ("W_ih", "W_hh", "bias_ih", "bias_hh"):
            setattr(counting, name, getattr(cell, name))
            setattr(plain.lstm_cells[k], name, getattr(cell, name))
        layer.lstm_cells[k] = counting
    x = nd(rand(5, 2, 3, seed=26))
    out, (h_n, _) = layer(x)
    assert calls == [(2, 3), (2, 4)] * 5
    assert not np.allclose(out.numpy(), plain(x)[0].numpy())
    close(h_n[1], out[4])


def test_lstm_dropout_draws_one_mask_per_layer():
    """In training, dropout draws one Bernoulli mask of the layer's whole (seq_len, batch, H)
    input from numpy's global RNG, layer after layer (PyTorch's LSTM drops each layer's output
    as a whole too): the outputs equal the layers run one by one with those masks."""
    p = 0.4
    layer = nn.LSTM(3, 4, 3, dtype="float64", dropout=p)
    a = rand(6, 2, 3, seed=27)
    np.random.seed(5)
    out = layer(nd(a))[0]
    np.random.seed(5)
    x = nd(a)
    for k, cell in enumerate(layer.lstm_cells):
        if k:
            keep = (np.random.rand(6, 2, 4) <= 1 - p).astype(np.float64)
            x = x * nd(keep, requires_grad=False) / (1 - p)
        steps = []
        state = None
        for x_t in ndl.ops.split(x, 0):
            state = cell(x_t, state)
            steps.append(state[0])
        x = ndl.ops.stack(steps, 0)
    close(out, x)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_between_layers_like_torch(kind):
    """p = 1 drops every input of the layers above the first, in both libraries (a deterministic
    comparison); evaluation ignores dropout; the first layer never sees it."""
    ref = getattr(torch.nn, kind)(3, 4, num_layers=3, dropout=1.0, dtype=torch.float64)
    layer = getattr(nn, kind)(3, 4, 3, dtype="float64", dropout=1.0)
    interop.from_torch(layer, ref)
    a = rand(5, 2, 3, seed=8)
    for train in (True, False):
        layer.train() if train else layer.eval()
        ref.train(train)
        (out, state), (tout, tstate) = layer(nd(a)), ref(th(a))
        close(out, tout)
        close(state[0] if kind == "LSTM" else state, tstate[0] if kind == "LSTM" else tstate)
    partial = getattr(nn, kind)(3, 4, 2, dtype="float64", dropout=0.5)
    h_eval = partial.eval()(nd(a))[1]
    np.random.seed(0)
    h_train = partial.train()(nd(a))[1]
    first = (lambda s: s[0][0]) if kind == "LSTM" else (lambda s: s[0])
    top = (lambda s: s[0][1]) if kind == "LSTM" else (lambda s: s[1])
    close(first(h_train), first(h_eval), rtol=0, atol=0)  # layer 0's input is never dropped
    assert not np.allclose(top(h_train).numpy(), top(h_eval).numpy())


def test_recurrent_dropout_arguments():
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(3, 4, dropout=0.2)
    with pytest.raises(ValueError, match="dropout"):
        nn.LSTM(3, 4, 2, dropout=1.5)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, input_size\)"):
        nn.GRU(3, 4, batch_first=True)(nd(rand(2, 5, 2)))
    with pytest.raises(ValueError, match="h0 should have shape"):
        nn.GRU(3, 4, 2)(nd(rand(5, 2, 3)), nd(rand(1, 2, 4)))
    with pytest.raises(ValueError, match="GRUCell expects input"):
        nn.GRUCell(3, 4)(nd(rand(2, 4), "float32"))


# --------------------------------------------------------------------------- ConvTranspose2d

CONV_T_MODULES = [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=2, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), groups=2, bias=False),
    dict(in_channels=3, out_channels=3, kernel_size=3, stride=1, dilation=2, output_padding=1),
    dict(in_channels=2, out_channels=4, kernel_size=4, stride=2, padding=1),  # DCGAN's up-sampling block
]


@pytest.mark.parametrize("kw", CONV_T_MODULES, ids=str)
def test_conv_transpose2d_matches_torch_and_loads_its_state_dict(kw):
    np.random.seed(1)
    layer = nn.ConvTranspose2d(dtype="float64", **kw)
    ref = torch.nn.ConvTranspose2d(dtype=torch.float64, **kw)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    layer.load_state_dict(torch_state(ref))  # PyTorch's layout: loads as it is
    a = rand(2, kw["in_channels"], 5, 4, seed=2)
    x, tx = nd(a), th(a)
    out, tout = layer(x), ref(tx)
    close(out, tout)
    backward_both(out, tout)
    close(x.grad, tx.grad)
    for name, p in layer.named_parameters():
        close(p.grad, dict(ref.named_parameters())[name].grad)
    close(layer(x[0]), ref(tx[0]))  # unbatched (Cin, H, W)


def test_conv_transpose2d_output_size_like_torch():
    ref = torch.nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1, dtype=torch.float64)
    layer = nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1, dtype="float64")
    layer.load_state_dict(torch_state(ref))
    a = rand(1, 3, 4, 4, seed=3)
    for size in ((10, 10), (12, 11), [1, 2, 11, 12]):
        close(layer(nd(a), output_size=size), ref(th(a), output_size=size))
    with pytest.raises(ValueError, match="cannot be reached"):
        layer(nd(a), output_size=(13, 10))


def test_conv_transpose2d_initialisation_is_torchs_bound_from_numpys_rng():
    """U(-b, b), b = 1 / sqrt(fan_in) with PyTorch's fan_in of a transposed weight, its second
    axis: Cout / groups * KH * KW; weight (Cin, Cout / groups, KH, KW) drawn first, then the bias."""
    np.random.seed(5)
    layer = nn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    bound = 1 / math.sqrt(2 * 3 * 2)
    np.random.seed(5)
    close(layer.weight, (np.random.rand(6, 2, 3, 2) * 2 * bound - bound).astype(np.float32), rtol=1e-6, atol=1e-7)
    close(layer.bias, (np.random.rand(4) * 2 * bound - bound).astype(np.float32), rtol=1e-6, atol=1e-7)
    ref = torch.nn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    assert tuple(ref.weight.shape) == layer.weight.shape
    fan_in = torch.nn.init._calculate_fan_in_and_fan_out(ref.weight)[0]
    assert math.isclose(1 / math.sqrt(fan_in), bound)


def test_conv_transpose2d_settings_are_checked_against_a_torch_module():
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2)
    interop.from_torch(layer, torch.nn.ConvTranspose2d(2, 3, 3, stride=2))
    with pytest.raises(ValueError, match="output_padding"):
        interop.from_torch(layer, torch.nn.ConvTranspose2d(2, 3, 3, stride=2, output_padding=1))
    with pytest.raises(ValueError, match="is a Conv2d"):
        interop.from_torch(layer, torch.nn.Conv2d(2, 3, 3, stride=2))


# --------------------------------------------------------------------------- losses

def _weights(n, seed):
    return np.abs(rand(n, seed=seed)) + 0.5


LOSSES = [  # (needle loss, torch loss, input maker, target maker)
    (lambda: nn.NLLLoss(), lambda: torch.nn.NLLLoss(), lambda: rand(6, 4), lambda: np.array([0, 3, 1, -100, 2, 1])),
    (lambda: nn.NLLLoss(nd(_weights(4, 1), requires_grad=False), ignore_index=2, reduction="sum"),
     lambda: torch.nn.NLLLoss(torch.tensor(_weights(4, 1)), ignore_index=2, reduction="sum"),
     lambda: rand(6, 4), lambda: np.array([0, 3, 1, 2, 2, 1])),
    (lambda: nn.CrossEntropyLoss(nd(_weights(4, 2), requires_grad=False), label_smoothing=0.1),
     lambda: torch.nn.CrossEntropyLoss(torch.tensor(_weights(4, 2)), label_smoothing=0.1),
     lambda: rand(6, 4), lambda: np.array([0, 3, 1, -100, 2, 1])),
    (lambda: nn.BCELoss(), lambda: torch.nn.BCELoss(), lambda: 1 / (1 + np.exp(-rand(3, 4))),
     lambda: np.random.default_rng(1).random((3, 4))),
    (lambda: nn.BCELoss(nd(_weights(4, 3), requires_grad=False), reduction="none"),
     lambda: torch.nn.BCELoss(torch.tensor(_weights(4, 3)), reduction="none"), lambda: 1 / (1 + np.exp(-rand(3, 4))),
     lambda: (np.random.default_rng(1).random((3, 4)) < 0.5) * 1.0),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=nd(_weights(4, 4), requires_grad=False)),
     lambda: torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(_weights(4, 4))), lambda: rand(3, 4, scale=5),
     lambda: np.random.default_rng(1).random((3, 4))),
    (lambda: nn.BCEWithLogitsLoss(nd(_weights(3, 5).reshape(3, 1), requires_grad=False), reduction="sum"),
     lambda: torch.nn.BCEWithLogitsLoss(torch.tensor(_weights(3, 5).reshape(3, 1)), reduction="sum"),
     lambda: rand(3, 4, scale=5), lambda: (np.random.default_rng(1).random((3, 4)) < 0.5) * 1.0),
]


@pytest.mark.parametrize("make,make_ref,make_input,make_target", LOSSES,
                         ids=["NLLLoss", "NLLLoss(weight, ignore_index, sum)", "CrossEntropyLoss(weight)", "BCELoss",
                              "BCELoss(weight, none)", "BCEWithLogitsLoss(pos_weight)", "BCEWithLogitsLoss(weight)"])
def test_loss_modules_match_torch(make, make_ref, make_input, make_target):
    loss_fn, ref = make(), make_ref()
    a, t = make_input(), make_target()
    integer = t.dtype.kind == "i"
    x, tx = nd(a), th(a)
    target = ndl.Tensor(t, dtype="int64") if integer else nd(t, requires_grad=False)
    out, tout = loss_fn(x, target), ref(tx, torch.tensor(t))
    close(out, tout)
    (out.sum() if out.shape else out).backward()
    (tout.sum() if tout.dim() else tout).backward()
    close(x.grad, tx.grad)
    assert set(loss_fn.state_dict()) == set(ref.state_dict())  # weight and pos_weight are buffers in both


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # numpy's log(0), on purpose
def test_bce_gradient_at_saturated_probabilities_is_torchs():
    """At x = 0 or 1 (a saturated float32 sigmoid), PyTorch's gradient (x - t) / max(x (1 - x),
    1e-12) still points the right way, where the chain rule through the clamped logarithm would
    give 0 or nan; the loss is the clamped 100."""
    x = np.array([0.0, 1.0, 1.0, 0.0, 1e-7, 0.5], np.float32)
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.25], np.float32)
    for dtype in ("float32", "float64"):
        nx, tx = nd(x.astype(dtype), dtype), torch.tensor(x.astype(dtype), requires_grad=True)
        out = F.binary_cross_entropy(nx, nd(t.astype(dtype), dtype, False), reduction="none")
        tout = TF.binary_cross_entropy(tx, torch.tensor(t.astype(dtype)), reduction="none")
        close(out, tout, rtol=1e-6, atol=0)
        out.sum().backward()
        tout.sum().backward()
        close(nx.grad, tx.grad, rtol=1e-6, atol=0)
        assert np.isfinite(nx.grad.numpy()).all() and nx.grad.numpy()[0] < -1e11 and nx.grad.numpy()[1] > 1e11


def test_bce_with_logits_keeps_the_loss_of_well_classified_examples_in_float32():
    z = nd(np.array([-20.0, 30.0, -1e4, 1e4]), "float32")
    t = nd(np.array([0.0, 1.0, 0.0, 1.0]), "float32", requires_grad=False)
    out = F.binary_cross_entropy_with_logits(z, t, reduction="none").numpy()
    np.testing.assert_allclose(out, np.log1p(np.exp(-np.array([20.0, 30.0, 1e4, 1e4]))), rtol=1e-6)


# --------------------------------------------------------------------------- in place, activations, dropout

@pytest.mark.parametrize("make,make_ref", [
    (lambda: nn.ReLU(inplace=True), lambda: torch.nn.ReLU(inplace=True)),
    (lambda: nn.LeakyReLU(0.2, inplace=True), lambda: torch.nn.LeakyReLU(0.2, inplace=True)),
    (lambda: nn.Dropout(0.0, inplace=True), lambda: torch.nn.Dropout(0.0, inplace=True)),
], ids=["ReLU", "LeakyReLU", "Dropout"])
def test_inplace_activation_writes_its_input_and_keeps_gradients(make, make_ref):
    a = rand(3, 4, seed=1)
    x, tx = nd(a), th(a)
    h, th_ = x * 1.5, tx * 1.5  # a computed tensor, as after a Linear or a BatchNorm
    out, tout = make()(h), make_ref()(th_)
    assert out is h and tout is th_
    close(h, th_)
    backward_both(out, tout)
    close(x.grad, tx.grad)
    with ndl.no_grad():  # no graph: only the buffer is written
        y = nd(a, requires_grad=False)
        assert make()(y) is y
        close(y, make_ref()(torch.tensor(a)))


def test_inplace_relu_on_a_consumed_tensor_is_computed_out_of_place():
    """needle's graph cannot move a tensor an op has already read to a new place: relu(inplace=True)
    then returns a new tensor (the input keeps its values), with the right gradients."""
    a = rand(3, 4, seed=2)
    x, tx = nd(a), th(a)
    h, th_ = x * 2.0, tx * 2.0
    other, tother = h * 3.0, th_ * 3.0
    out = F.relu(h, inplace=True)
    assert out is not h
    close(h, 2 * a)
    tout = TF.relu(th_.clone())
    close(out, tout)
    (out.sum() + other.sum()).backward()
    (tout.sum() + tother.sum()).backward()
    close(x.grad, tx.grad)


def test_inplace_relu_refuses_a_parameter_that_requires_grad():
    with pytest.raises(RuntimeError, match="parameter"):
        F.relu(nn.Parameter(np.ones(3)), inplace=True)


@pytest.mark.parametrize("args", [(), (2.0,), (0.5, 3.0)])
def test_softplus_module_matches_torch(args):
    a = rand(4, 5, seed=3, scale=8)
    x, tx = nd(a), th(a)
    out, tout = nn.Softplus(*args)(x), torch.nn.Softplus(*args)(tx)
    close(out, tout)
    backward_both(out, tout)
    close(x.grad, tx.grad)


@pytest.mark.parametrize("shape", [(8, 50, 3, 3), (8, 50, 4)])
def test_dropout2d_zeroes_whole_channels(shape):
    np.random.seed(0)
    layer = nn.Dropout2d(0.3)
    out = layer(nd(np.ones(shape), "float32")).numpy()
    per_channel = out.reshape(shape[0], shape[1], -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # one value per (n, c)
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((per_channel[:, :, 0] == 0).mean() - 0.3) < 0.1
    x = nd(np.ones(shape), "float32")
    assert layer.eval()(x) is x and F.dropout2d(x, 0.0) is x
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.dropout2d(nd(np.ones((3, 4))), 0.5)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout2d(1.5)


def test_sdpa_dropout_draws_from_numpys_rng():
    q, k, v = (nd(rand(2, 3, 4, seed=s)) for s in (1, 2, 3))
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy(), 0.0)
    np.random.seed(4)
    first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    np.random.seed(4)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy(), first)
    assert not np.allclose(first, F.scaled_dot_product_attention(q, k, v).numpy())


# --------------------------------------------------------------------------- Embedding(padding_idx)

@pytest.mark.parametrize("padding_idx", [2, -1])
def test_embedding_padding_idx_like_torch(padding_idx):
    layer = nn.Embedding(6, 3, dtype="float64", padding_idx=padding_idx)
    ref = torch.nn.Embedding(6, 3, padding_idx=padding_idx, dtype=torch.float64)
    assert layer.padding_idx == ref.padding_idx
    np.testing.assert_array_equal(layer.weight.numpy()[ref.padding_idx], 0.0)  # starts as zeros
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(rand(6, 3, seed=1)))  # the padding row too: its value is still looked up
    layer.load_state_dict(torch_state(ref))
    ids = np.array([[0, 2, 5], [5, 5, 1]])
    out, tout = layer(ndl.Tensor(ids, dtype="int64")), ref(torch.tensor(ids))
    close(out, tout)
    backward_both(out, tout)
    close(layer.weight.grad, ref.weight.grad)
    assert not layer.weight.grad.numpy()[ref.padding_idx].any()


# --------------------------------------------------------------------------- compiled

def test_a_compiled_step_through_the_new_layers_equals_the_eager_one():
    """Embedding(padding_idx), GRU (batch_first, dropout), LayerNorm, scaled_dot_product_attention
    (causal, dropout), ConvTranspose2d (also with zero rows added), ReLU and LeakyReLU (inplace),
    Dropout2d, F.pad (reflect, constant), NLLLoss, CrossEntropyLoss(weight), BCELoss and
    BCEWithLogitsLoss in one training step: ndl.compile replays it bit for bit (the dropout masks
    drawn afresh each step from numpy's RNG, as eagerly)."""
    def run(compiled):
        np.random.seed(0)
        emb, gru = nn.Embedding(7, 4, padding_idx=0), nn.GRU(4, 6, 2, batch_first=True, dropout=0.2)
        norm, up = nn.LayerNorm(6), nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
        dilated = nn.ConvTranspose2d(3, 1, 2, dilation=2, output_padding=1)  # output_padding >= stride: zero rows
        relu, drop, leaky = nn.ReLU(inplace=True), nn.Dropout2d(0.25), nn.LeakyReLU(0.1, inplace=True)
        modules = [emb, gru, norm, up, dilated]
        params = [p for m in modules for p in m.parameters()]
        opt = ndl.optim.Adam(params, lr=1e-2)
        nll, bce = nn.NLLLoss(ignore_index=0), nn.BCEWithLogitsLoss(pos_weight=ndl.Tensor([2.0] * 6, requires_grad=False))
        probs, weighted = nn.BCELoss(), nn.CrossEntropyLoss(ndl.Tensor([1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 1.0],
                                                                      requires_grad=False), label_smoothing=0.1)

        def step(ids, target, flags):
            opt.reset_grad()
            h, _ = gru(emb(ids))  # (B, T, 6)
            h = norm(h)
            heads = h.reshape((2, 5, 2, 3)).transpose((1, 2))  # (B, 2 heads, T, 3)
            att = F.scaled_dot_product_attention(heads, heads, heads, is_causal=True, dropout_p=0.1)
            img = relu(up(drop(att)))  # (B, 3, 10, 6)
            img = F.pad(img, (1, 1, 0, 0), mode="reflect")
            logits = img.sum(axes=(1, 2))  # (B, 8)
            loss = nll(F.log_softmax(logits[:, :7], dim=1), target) + weighted(logits, target)
            loss = loss + bce(h[:, -1, :], flags) + probs(ndl.ops.sigmoid(h[:, 0, :]), flags)
            extra = F.pad(leaky(dilated(img)), (2, 1, 1, 0), value=0.5)  # (B, 1, 14, 14)
            loss = loss + (extra * extra).mean()
            loss.backward()
            opt.step()
            return loss

        step = ndl.compile(step, fuse=False) if compiled else step
        r = np.random.RandomState(1)
        batches = [(ndl.Tensor(r.randint(0, 7, (2, 5)), dtype="int64"), ndl.Tensor(r.randint(0, 7, 2), dtype="int64"),
                    ndl.Tensor((r.rand(2, 6) < 0.5) * 1.0, dtype="float32", requires_grad=False)) for _ in range(3)]
        losses = np.array([step(*batches[i % 3]).numpy() for i in range(8)])
        if compiled:
            assert len(step.programs) == 1  # traced once, replayed from the third call on
        return losses

    eager = run(False)
    np.testing.assert_array_equal(run(True), eager)
    assert np.isfinite(eager).all()


# --------------------------------------------------------------------------- errors

def _x(*shape, dtype="float32"):
    return ndl.Tensor(np.zeros(shape), dtype=dtype)


def _ids(*values):
    return ndl.Tensor(np.array(values), dtype="int64")


ERRORS = [  # (call, exception, part of the message)
    (lambda: nn.LayerNorm(0), ValueError, "normalized_shape"),
    (lambda: nn.LayerNorm((3, 4))(_x(2, 4, 3)), ValueError, "normalized_shape"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(2, 3, 3, 3)), ValueError, r"expected \(3, Cout / groups"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(3, 2, 3, 3), stride=2, output_padding=2), ValueError,
     "smaller than either stride"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(3, 2, 3, 3), groups=2), ValueError, "divisible by groups"),
    (lambda: F.conv_transpose2d(_x(1, 3, 1, 1), _x(3, 2, 1, 1), padding=1), ValueError, "not positive"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(3, 2, 3, 3), _x(3)), ValueError, "bias of shape"),
    (lambda: F.conv_transpose2d(_x(3, 4), _x(3, 2, 3, 3)), ValueError, r"\(N, C, H, W\)"),
    (lambda: nn.ConvTranspose2d(3, 2, 3, padding_mode="reflect"), ValueError, "padding_mode"),
    (lambda: nn.ConvTranspose2d(3, 2, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: nn.ConvTranspose2d(3, 2, 3)(_x(1, 2, 4, 4)), ValueError, r"\(N, 3, H, W\)"),
    (lambda: F.nll_loss(_x(2, 3), _ids(0, 3)), ValueError, "out of range for 3 classes"),
    (lambda: F.nll_loss(_x(2, 3), _ids(0, 1), _x(4)), ValueError, r"expected \(3,\)"),
    (lambda: F.nll_loss(_x(2, 3), _x(2)), TypeError, "int64"),
    (lambda: F.nll_loss(_x(2, 3), _ids(0, 1), reduction="avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(_x(2, 3), _ids(0, 1), _x(2)), ValueError, "weight of shape"),
    (lambda: F.binary_cross_entropy(_x(2, 3) + 1.5, _x(2, 3)), ValueError, r"probabilities in \[0, 1\]"),
    (lambda: F.binary_cross_entropy(_x(2, 3), _x(3, 2)), ValueError, "target of shape"),
    (lambda: F.binary_cross_entropy(_x(2, 3), _x(2, 3, dtype="float64")), TypeError, "dtype"),
    (lambda: F.binary_cross_entropy(_x(2, 3), _x(2, 3), _x(2)), ValueError, "weight of shape"),
    (lambda: F.binary_cross_entropy_with_logits(_x(2, 3), _x(2, 3), pos_weight=_x(2)), ValueError, "pos_weight"),
    (lambda: nn.BCELoss(reduction="all"), ValueError, "reduction"),
    (lambda: F.pad(_x(2, 3), (1,)), ValueError, "odd length"),
    (lambda: F.pad(_x(3), (1, 1, 1, 1)), ValueError, "pairs for an input of 1 dimensions"),
    (lambda: F.pad(_x(2, 3), (1, 1), mode="wrap"), ValueError, "mode"),
    (lambda: F.pad(_x(2, 3), (3, 0), mode="reflect"), ValueError, "needs padding < the input size"),
    (lambda: F.pad(_x(2, 3), (1, 4), mode="circular"), ValueError, "needs padding <= the input size"),
    (lambda: F.pad(_x(2, 3, 4, 5), (1, 1), mode="reflect"), ValueError, "last 1, 2 or 3 axes"),
    (lambda: F.pad(_x(2, 3), (1, 1), mode="replicate", value=2.0), ValueError, "takes no value"),
    (lambda: F.pad(_x(2, 3), (-2, -2)), ValueError, "negative size"),
    (lambda: F.pad(_x(2, 3), (1.5, 1)), TypeError, "tuple of ints"),
    (lambda: F.scaled_dot_product_attention(_x(2, 3, 4), _x(2, 5, 3), _x(2, 5, 4)), ValueError, "do not fit"),
    (lambda: F.scaled_dot_product_attention(_x(2, 3, 4), _x(2, 5, 4), _x(2, 5, 4), attn_mask=_x(3, 4)),
     ValueError, "does not broadcast"),
    (lambda: F.scaled_dot_product_attention(_x(2, 3, 4), _x(2, 5, 4), _x(2, 5, 4), attn_mask=_ids(1),
                                            is_causal=True), ValueError, "not both"),
    (lambda: F.scaled_dot_product_attention(_x(2, 3, 4), _x(2, 5, 4), _x(2, 5, 4), attn_mask=_ids(1)),
     TypeError, "bool or float"),
    (lambda: F.scaled_dot_product_attention(_x(1, 3, 2, 4), _x(1, 2, 5, 4), _x(1, 2, 5, 4), enable_gqa=True),
     ValueError, "multiple"),
    (lambda: F.scaled_dot_product_attention(_x(3, 4), _x(5, 4), _x(5, 4), dropout_p=2.0), ValueError, "dropout_p"),
    (lambda: F.embedding(_ids(0, 1), _x(4, 2), padding_idx=4), ValueError, "padding_idx"),
    (lambda: nn.Embedding(4, 2, padding_idx=-5), ValueError, "padding_idx"),
    (lambda: F.dropout2d(_x(2, 3, 4), p=-0.1), ValueError, "probability"),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=range(len(ERRORS)))
def test_bad_input_raises(call, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize("make, message", [
    (lambda: nn.LSTM(3, 0), "LSTMCell: hidden_size should be a whole number >= 1, got 0"),
    (lambda: nn.GRU(3, 2.5), "GRUCell: hidden_size should be a whole number >= 1, got 2.5"),
    (lambda: nn.RNN(-1, 2), "RNNCell: input_size should be a whole number >= 0, got -1"),
    (lambda: nn.LSTM(3, 2, 0), "LSTM: num_layers should be a whole number >= 1, got 0"),
    (lambda: nn.RNN(3, 2, 1.5), "RNN: num_layers should be a whole number >= 1, got 1.5"),
])
def test_recurrent_sizes_are_checked_when_the_module_is_built(make, message):
    """As PyTorch's: a size of 0 layers or a hidden size of 0 is refused at construction, with the
    argument named, not a ZeroDivisionError or a failure in the first forward."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_lstm_refuses_a_state_that_is_not_two_tensors():
    layer = nn.LSTM(3, 2)
    x, h0 = nd(rand(4, 1, 3)), nd(rand(1, 1, 2))
    with pytest.raises(ValueError, match=r"h should be \(h0, c0\).*NoneType"):
        layer(x, (h0, None))
    with pytest.raises(ValueError, match=r"h should be \(h0, c0\)"):
        layer(x, h0)
