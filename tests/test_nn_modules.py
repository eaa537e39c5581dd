"""needle.nn modules against PyTorch (and numpy where the course's contract differs).

Every module is checked forward and backward: the loss is sum(out * W) for a random
W, so the incoming adjoint is not all ones, and input as well as parameter gradients
are compared with PyTorch's module holding the same (copied) weights.
Initialisation is checked by replaying numpy's global RNG (spec §5, §6, §10).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
import needle.init as init
import needle.nn as nn

torch.set_num_threads(1)

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]
DTYPES = ["float32", "float64"]
# float32 runs compare with PyTorch's float32 modules, whose kernels round differently per CPU;
# these layers' outputs and gradients are O(1), each library within ~1e-6 of the float64 value,
# so 1e-5 (relative and absolute) holds them with room: the largest |needle - torch| measured is
# a fifth of it (the Transformer layers), with PyTorch's AVX-512, AVX2 and scalar kernels alike
# (ATEN_CPU_CAPABILITY) and numpy's with and without AVX-512 (NPY_DISABLE_CPU_FEATURES).
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-9, atol=1e-10)}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def data(*shape, seed=0, scale=1.0):
    """Test data from a private generator: never touches numpy's global RNG."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale)


def nd(a, dtype="float32", device=None, requires_grad=True):
    return ndl.Tensor(np.asarray(a), device=device, dtype=dtype, requires_grad=requires_grad)


def th(a, dtype="float32", requires_grad=True):
    return torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[dtype], requires_grad=requires_grad)


def tp(param, dtype="float32", transpose=False):
    """A needle parameter as a torch Parameter (optionally transposed)."""
    a = param.numpy()
    if transpose:
        a = a.T
    return torch.nn.Parameter(torch.tensor(np.ascontiguousarray(a), dtype=TORCH_DTYPE[dtype]))


def close(actual, expected, dtype="float32", **kw):
    if isinstance(actual, ndl.Tensor):
        actual = actual.numpy()
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    tol = dict(TOL[dtype])
    tol.update(kw)
    assert np.shape(actual) == np.shape(expected)
    np.testing.assert_allclose(actual, expected, **tol)


def backward_both(out, ref, seed=123):
    """loss = sum(out * W) in both frameworks, with the same random W."""
    w = data(*out.shape, seed=seed)
    (out * nd(w, dtype=out.dtype, device=out.device, requires_grad=False)).sum().backward()
    (ref * torch.tensor(w, dtype=ref.dtype)).sum().backward()


# --------------------------------------------------------------------------- basic layers

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7)], ids=["2d", "3d"])
def test_linear_matches_torch(device, dtype, bias, shape):
    layer = nn.Linear(7, 6, bias=bias, device=device, dtype=dtype)
    assert layer.weight.shape == (7, 6)
    assert layer.weight.dtype == dtype and layer.weight.device == device
    if bias:
        assert layer.bias.shape == (1, 6)
    else:
        assert layer.bias is None
    ref = torch.nn.Linear(7, 6, bias=bias, dtype=TORCH_DTYPE[dtype])
    ref.weight = tp(layer.weight, dtype, transpose=True)
    if bias:
        ref.bias = torch.nn.Parameter(torch.tensor(layer.bias.numpy().reshape(6), dtype=TORCH_DTYPE[dtype]))
    x_np = data(*shape, seed=1)
    x, xt = nd(x_np, dtype, device), th(x_np, dtype)
    out, out_t = layer(x), ref(xt)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    close(layer.weight.grad, ref.weight.grad.T, dtype)
    if bias:
        close(layer.bias.grad, ref.bias.grad.reshape(1, 6), dtype)


def test_linear_reads_replaced_parameters_at_call_time():
    layer = nn.Linear(3, 2)
    w, b = data(3, 2, seed=1), data(2, seed=2)
    layer.weight = ndl.Tensor(w, dtype="float32")
    layer.bias = ndl.Tensor(b, dtype="float32")  # a (out,) bias must also broadcast
    x = data(4, 3, seed=3)
    close(layer(nd(x)), x @ w + b)


@pytest.mark.parametrize(
    "module, fn",
    [(nn.ReLU, torch.relu), (nn.Tanh, torch.tanh), (nn.Sigmoid, torch.sigmoid), (nn.Identity, lambda t: t * 1)],
    ids=["relu", "tanh", "sigmoid", "identity"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_match_torch(module, fn, dtype):
    x_np = data(4, 5, 3, seed=4, scale=3.0)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, out_t = module()(x), fn(xt)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)


def test_flatten_matches_torch():
    x_np = data(3, 2, 4, 5, seed=5)
    x, xt = nd(x_np), th(x_np)
    out, out_t = nn.Flatten()(x), torch.flatten(xt, 1)
    assert out.shape == (3, 40)
    close(out, out_t)
    backward_both(out, out_t)
    close(x.grad, xt.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_and_residual_match_torch(dtype):
    l1, l2, l3 = (nn.Linear(6, 8, dtype=dtype), nn.Linear(8, 8, dtype=dtype), nn.Linear(8, 3, dtype=dtype))
    model = nn.Sequential(l1, nn.ReLU(), nn.Residual(nn.Sequential(l2, nn.Tanh())), l3)
    assert model.modules[0] is l1

    def tlin(layer):
        ref = torch.nn.Linear(layer.in_features, layer.out_features, dtype=TORCH_DTYPE[dtype])
        ref.weight = tp(layer.weight, dtype, transpose=True)
        ref.bias = torch.nn.Parameter(torch.tensor(layer.bias.numpy().reshape(-1), dtype=TORCH_DTYPE[dtype]))
        return ref

    t1, t2, t3 = tlin(l1), tlin(l2), tlin(l3)
    x_np = data(5, 6, seed=6)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out = model(x)
    h = torch.relu(t1(xt))
    out_t = t3(torch.tanh(t2(h)) + h)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    for layer, ref in ((l1, t1), (l2, t2), (l3, t3)):
        close(layer.weight.grad, ref.weight.grad.T, dtype)
        close(layer.bias.grad.reshape(-1), ref.bias.grad, dtype)


@pytest.mark.parametrize("label_dtype", ["float32", "int"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_matches_cross_entropy(dtype, label_dtype):
    logits_np = data(8, 5, seed=7, scale=3.0)
    y_np = np.array([0, 4, 2, 2, 1, 3, 0, 4])
    logits, lt = nd(logits_np, dtype), th(logits_np, dtype)
    y = ndl.Tensor(y_np.astype(np.float32) if label_dtype == "float32" else y_np, requires_grad=False)
    loss = nn.SoftmaxLoss()(logits, y)
    ref = F.cross_entropy(lt, torch.tensor(y_np))
    assert loss.shape == ()
    close(loss, ref, dtype)
    loss.backward()
    ref.backward()
    close(logits.grad, lt.grad, dtype)


# --------------------------------------------------------------------------- normalisation

def _bn_numpy_running(xs, axes, momentum=0.1):
    """Course running statistics: biased batch variance, starting from mean 0 / var 1."""
    mean = np.zeros(xs[0].shape[1])
    var = np.ones(xs[0].shape[1])
    for x in xs:
        mean = (1 - momentum) * mean + momentum * x.mean(axis=axes)
        var = (1 - momentum) * var + momentum * x.var(axis=axes)  # ddof=0: biased
    return mean, var


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_train_mode_matches_torch(device, dtype, kind):
    dim = 4
    if kind == "1d":
        bn, ref = nn.BatchNorm1d(dim, momentum=0.2, device=device, dtype=dtype), torch.nn.BatchNorm1d(dim, momentum=0.2)
        shape, axes = (6, dim), (0,)
    else:
        bn, ref = nn.BatchNorm2d(dim, momentum=0.2, device=device, dtype=dtype), torch.nn.BatchNorm2d(dim, momentum=0.2)
        shape, axes = (3, dim, 4, 5), (0, 2, 3)
    ref = ref.to(TORCH_DTYPE[dtype])
    np.testing.assert_array_equal(bn.weight.numpy(), np.ones(dim))
    np.testing.assert_array_equal(bn.bias.numpy(), np.zeros(dim))
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(dim))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(dim))
    # non-trivial affine parameters, set through .data as the course tests do
    w, b = data(dim, seed=8), data(dim, seed=9)
    bn.weight.data = ndl.Tensor(w, device=device, dtype=dtype)
    bn.bias.data = ndl.Tensor(b, device=device, dtype=dtype)
    ref.weight = torch.nn.Parameter(torch.tensor(w, dtype=TORCH_DTYPE[dtype]))
    ref.bias = torch.nn.Parameter(torch.tensor(b, dtype=TORCH_DTYPE[dtype]))

    xs_np = [data(*shape, seed=10 + i, scale=2.0) + 1.5 for i in range(2)]
    for x_np in xs_np:
        bn.weight.grad = bn.bias.grad = None
        ref.zero_grad()
        x, xt = nd(x_np, dtype, device), th(x_np, dtype)
        out, out_t = bn(x), ref(xt)
        close(out, out_t, dtype, atol=2e-5 if dtype == "float32" else 1e-10)
        backward_both(out, out_t)
        close(x.grad, xt.grad, dtype, atol=2e-5 if dtype == "float32" else 1e-10)
        close(bn.weight.grad, ref.weight.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)
        close(bn.bias.grad, ref.bias.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)

    mean_ref, var_ref = _bn_numpy_running(xs_np, axes, momentum=0.2)
    close(bn.running_mean, ref.running_mean, dtype)
    close(bn.running_mean, mean_ref, dtype)
    # the course's running_var uses the biased variance (PyTorch's the unbiased one)
    close(bn.running_var, var_ref, dtype)
    n = int(np.prod([shape[a] for a in axes]))
    torch_biased = 1.0
    for x_np in xs_np:
        unbiased = x_np.var(axis=axes, ddof=1)
        torch_biased = 0.8 * torch_biased + 0.2 * unbiased * (n - 1) / n
    close(bn.running_var, torch_biased, dtype)
    assert not np.allclose(bn.running_var.numpy(), ref.running_var.detach().numpy(), rtol=1e-3)
    assert bn.running_mean.dtype == dtype and bn.running_var.dtype == dtype
    assert len(bn.parameters()) == 2  # running statistics are not parameters


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_eval_mode_uses_running_stats(dtype, kind):
    dim = 3
    bn = (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(dim, dtype=dtype)
    ref = (torch.nn.BatchNorm1d if kind == "1d" else torch.nn.BatchNorm2d)(dim).to(TORCH_DTYPE[dtype])
    shape = (5, dim) if kind == "1d" else (2, dim, 3, 3)
    rm, rv = data(dim, seed=11), np.abs(data(dim, seed=12)) + 0.5
    w, b = data(dim, seed=13), data(dim, seed=14)
    bn.running_mean = ndl.Tensor(rm, dtype=dtype, requires_grad=False)
    bn.running_var = ndl.Tensor(rv, dtype=dtype, requires_grad=False)
    bn.weight.data = ndl.Tensor(w, dtype=dtype)
    bn.bias.data = ndl.Tensor(b, dtype=dtype)
    ref.running_mean = torch.tensor(rm, dtype=TORCH_DTYPE[dtype])
    ref.running_var = torch.tensor(rv, dtype=TORCH_DTYPE[dtype])
    ref.weight = torch.nn.Parameter(torch.tensor(w, dtype=TORCH_DTYPE[dtype]))
    ref.bias = torch.nn.Parameter(torch.tensor(b, dtype=TORCH_DTYPE[dtype]))
    bn.eval()
    ref.eval()
    x_np = data(*shape, seed=15)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, out_t = bn(x), ref(xt)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    close(bn.weight.grad, ref.weight.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)
    close(bn.bias.grad, ref.bias.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)
    # eval mode never updates the running statistics
    np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5)], ids=["2d", "3d"])
def test_layernorm_matches_torch(dtype, shape):
    ln = nn.LayerNorm1d(5, dtype=dtype)
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(5))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(5))
    w, b = data(5, seed=16), data(5, seed=17)
    ln.weight.data = ndl.Tensor(w, dtype=dtype)
    ln.bias.data = ndl.Tensor(b, dtype=dtype)
    ref = torch.nn.LayerNorm(5, eps=1e-5).to(TORCH_DTYPE[dtype])
    ref.weight = torch.nn.Parameter(torch.tensor(w, dtype=TORCH_DTYPE[dtype]))
    ref.bias = torch.nn.Parameter(torch.tensor(b, dtype=TORCH_DTYPE[dtype]))
    x_np = data(*shape, seed=18, scale=3.0) + 2.0
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, out_t = ln(x), ref(xt)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype, atol=2e-5 if dtype == "float32" else 1e-10)
    close(ln.weight.grad, ref.weight.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)
    close(ln.bias.grad, ref.bias.grad, dtype, atol=1e-4 if dtype == "float32" else 1e-10)


# --------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_replays_numpy_rng(p):
    drop = nn.Dropout(p)
    assert drop.p == p
    x_np = data(50, 40, seed=19)
    x = nd(x_np)
    np.random.seed(7)
    out = drop(x)
    after = np.random.rand()
    np.random.seed(7)
    mask = np.random.rand(50, 40) <= 1 - p
    assert np.random.rand() == after  # exactly one draw of the input's shape
    expected = x_np * mask / (1 - p)
    close(out, expected)
    zero_fraction = np.mean(out.numpy() == 0)
    assert abs(zero_fraction - p) < 0.05
    w = data(50, 40, seed=20)
    (out * nd(w, requires_grad=False)).sum().backward()
    close(x.grad, w * mask / (1 - p))


def test_dropout_draws_every_training_forward():
    drop = nn.Dropout(0.5)
    x = nd(np.ones((4, 6)), requires_grad=False)
    np.random.seed(3)
    a, b = drop(x).numpy(), drop(x).numpy()
    np.random.seed(3)
    m1 = np.random.rand(4, 6) <= 0.5
    m2 = np.random.rand(4, 6) <= 0.5
    close(a, m1 * 2.0)
    close(b, m2 * 2.0)


def test_dropout_eval_is_identity_without_rng_draw():
    drop = nn.Dropout(0.5).eval()
    x_np = data(5, 7, seed=21)
    x = nd(x_np)
    np.random.seed(5)
    out = drop(x)
    next_draw = np.random.rand()
    np.random.seed(5)
    assert np.random.rand() == next_draw
    np.testing.assert_array_equal(out.numpy(), x.numpy())
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((5, 7)))


# --------------------------------------------------------------------------- convolution

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_torch(device, kernel, stride, bias):
    cin, cout = 3, 4
    conv = nn.Conv(cin, cout, kernel, stride=stride, bias=bias, device=device)
    assert conv.weight.shape == (kernel, kernel, cin, cout)
    assert conv.padding == kernel // 2
    ref = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
    ref.weight = torch.nn.Parameter(torch.tensor(conv.weight.numpy()).permute(3, 2, 0, 1).contiguous())
    if bias:
        assert conv.bias.shape == (cout,)
        ref.bias = tp(conv.bias)
    else:
        assert conv.bias is None
    x_np = data(2, cin, 9, 8, seed=22)
    x, xt = nd(x_np, device=device), th(x_np)
    out, out_t = conv(x), ref(xt)
    close(out, out_t, atol=1e-5)
    backward_both(out, out_t)
    close(x.grad, xt.grad, atol=1e-5)
    close(conv.weight.grad, ref.weight.grad.permute(2, 3, 1, 0), atol=1e-4)
    if bias:
        close(conv.bias.grad, ref.bias.grad, atol=1e-4)


def test_conv_accepts_tuple_kernel_and_stride():
    conv = nn.Conv(2, 3, (3, 3), stride=(2, 2))
    assert conv.kernel_size == 3 and conv.stride == 2 and conv.padding == 1
    assert conv(nd(data(1, 2, 6, 6))).shape == (1, 3, 3, 3)


# --------------------------------------------------------------------------- sequence models

def _copy_rnn_cell(cell, ref, layer=None, dtype="float32"):
    suffix = "" if layer is None else f"_l{layer}"
    setattr(ref, "weight_ih" + suffix, tp(cell.W_ih, dtype, transpose=True))
    setattr(ref, "weight_hh" + suffix, tp(cell.W_hh, dtype, transpose=True))
    if cell.bias_ih is not None:
        setattr(ref, "bias_ih" + suffix, tp(cell.bias_ih, dtype))
        setattr(ref, "bias_hh" + suffix, tp(cell.bias_hh, dtype))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init_hidden", [True, False])
def test_rnn_cell_matches_torch(nonlinearity, bias, init_hidden):
    cell = nn.RNNCell(5, 4, bias=bias, nonlinearity=nonlinearity)
    assert cell.W_ih.shape == (5, 4) and cell.W_hh.shape == (4, 4)
    if bias:
        assert cell.bias_ih.shape == (4,) and cell.bias_hh.shape == (4,)
    else:
        assert cell.bias_ih is None and cell.bias_hh is None
    ref = torch.nn.RNNCell(5, 4, bias=bias, nonlinearity=nonlinearity)
    _copy_rnn_cell(cell, ref)
    x_np, h_np = data(3, 5, seed=23), data(3, 4, seed=24)
    x, xt = nd(x_np), th(x_np)
    if init_hidden:
        h, ht = nd(h_np), th(h_np)
        out, out_t = cell(x, h), ref(xt, ht)
    else:
        out, out_t = cell(x), ref(xt)
    close(out, out_t)
    backward_both(out, out_t)
    close(x.grad, xt.grad)
    close(cell.W_ih.grad, ref.weight_ih.grad.T)
    if init_hidden:
        close(h.grad, ht.grad)
        close(cell.W_hh.grad, ref.weight_hh.grad.T)
    if bias:
        close(cell.bias_ih.grad, ref.bias_ih.grad)
        close(cell.bias_hh.grad, ref.bias_hh.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init_hidden", [True, False])
@pytest.mark.parametrize("seq_len", [1, 6])
def test_rnn_matches_torch(dtype, nonlinearity, num_layers, bias, init_hidden, seq_len):
    bs, n_in, hidden = 3, 5, 4
    model = nn.RNN(n_in, hidden, num_layers, bias, nonlinearity=nonlinearity, dtype=dtype)
    assert isinstance(model.rnn_cells, list) and len(model.rnn_cells) == num_layers
    assert model.rnn_cells[0].W_ih.shape == (n_in, hidden)
    if num_layers > 1:
        assert model.rnn_cells[1].W_ih.shape == (hidden, hidden)
    ref = torch.nn.RNN(n_in, hidden, num_layers, bias=bias, nonlinearity=nonlinearity).to(TORCH_DTYPE[dtype])
    for k, cell in enumerate(model.rnn_cells):
        _copy_rnn_cell(cell, ref, layer=k, dtype=dtype)
    x_np, h_np = data(seq_len, bs, n_in, seed=25), data(num_layers, bs, hidden, seed=26)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    if init_hidden:
        h0, h0t = nd(h_np, dtype), th(h_np, dtype)
        (out, h_n), (out_t, h_n_t) = model(x, h0), ref(xt, h0t)
    else:
        (out, h_n), (out_t, h_n_t) = model(x), ref(xt)
    close(out, out_t, dtype)
    close(h_n, h_n_t, dtype)
    # gradients through both the outputs and the final states
    w_out, w_h = data(*out.shape, seed=27), data(*h_n.shape, seed=28)
    ((out * nd(w_out, dtype, requires_grad=False)).sum() + (h_n * nd(w_h, dtype, requires_grad=False)).sum()).backward()
    ((out_t * torch.tensor(w_out, dtype=TORCH_DTYPE[dtype])).sum()
     + (h_n_t * torch.tensor(w_h, dtype=TORCH_DTYPE[dtype])).sum()).backward()
    close(x.grad, xt.grad, dtype)
    close(model.rnn_cells[0].W_ih.grad, ref.weight_ih_l0.grad.T, dtype)
    if init_hidden:
        close(h0.grad, h0t.grad, dtype)
    if bias:
        close(model.rnn_cells[-1].bias_hh.grad, getattr(ref, f"bias_hh_l{num_layers - 1}").grad, dtype)


def _copy_lstm_cell(cell, ref, layer=None, dtype="float32"):
    _copy_rnn_cell(cell, ref, layer, dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init_hidden", [True, False])
def test_lstm_cell_matches_torch(bias, init_hidden):
    cell = nn.LSTMCell(5, 4, bias=bias)
    assert cell.W_ih.shape == (5, 16) and cell.W_hh.shape == (4, 16)
    if bias:
        assert cell.bias_ih.shape == (16,) and cell.bias_hh.shape == (16,)
    else:
        assert cell.bias_ih is None
    ref = torch.nn.LSTMCell(5, 4, bias=bias)
    _copy_lstm_cell(cell, ref)
    x_np, h_np, c_np = data(3, 5, seed=29), data(3, 4, seed=30), data(3, 4, seed=31)
    x, xt = nd(x_np), th(x_np)
    if init_hidden:
        h0, c0, h0t, c0t = nd(h_np), nd(c_np), th(h_np), th(c_np)
        (h, c), (ht, ct) = cell(x, (h0, c0)), ref(xt, (h0t, c0t))
    else:
        (h, c), (ht, ct) = cell(x), ref(xt)
    close(h, ht)
    close(c, ct)
    w_h, w_c = data(3, 4, seed=32), data(3, 4, seed=33)
    ((h * nd(w_h, requires_grad=False)).sum() + (c * nd(w_c, requires_grad=False)).sum()).backward()
    ((ht * torch.tensor(w_h, dtype=torch.float32)).sum() + (ct * torch.tensor(w_c, dtype=torch.float32)).sum()).backward()
    close(x.grad, xt.grad)
    close(cell.W_ih.grad, ref.weight_ih.grad.T)
    if init_hidden:
        close(h0.grad, h0t.grad)
        close(c0.grad, c0t.grad)
        close(cell.W_hh.grad, ref.weight_hh.grad.T)
    if bias:
        close(cell.bias_ih.grad, ref.bias_ih.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init_hidden", [True, False])
@pytest.mark.parametrize("seq_len", [1, 6])
def test_lstm_matches_torch(dtype, num_layers, bias, init_hidden, seq_len):
    bs, n_in, hidden = 3, 5, 4
    model = nn.LSTM(n_in, hidden, num_layers, bias, dtype=dtype)
    assert isinstance(model.lstm_cells, list) and len(model.lstm_cells) == num_layers
    ref = torch.nn.LSTM(n_in, hidden, num_layers, bias=bias).to(TORCH_DTYPE[dtype])
    for k, cell in enumerate(model.lstm_cells):
        _copy_lstm_cell(cell, ref, layer=k, dtype=dtype)
    x_np = data(seq_len, bs, n_in, seed=34)
    h_np, c_np = data(num_layers, bs, hidden, seed=35), data(num_layers, bs, hidden, seed=36)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    if init_hidden:
        h0, c0, h0t, c0t = nd(h_np, dtype), nd(c_np, dtype), th(h_np, dtype), th(c_np, dtype)
        (out, (h_n, c_n)), (out_t, (h_n_t, c_n_t)) = model(x, (h0, c0)), ref(xt, (h0t, c0t))
    else:
        (out, (h_n, c_n)), (out_t, (h_n_t, c_n_t)) = model(x), ref(xt)
    close(out, out_t, dtype)
    close(h_n, h_n_t, dtype)
    close(c_n, c_n_t, dtype)
    w_out, w_c = data(*out.shape, seed=37), data(*c_n.shape, seed=38)
    ((out * nd(w_out, dtype, requires_grad=False)).sum() + (c_n * nd(w_c, dtype, requires_grad=False)).sum()).backward()
    ((out_t * torch.tensor(w_out, dtype=TORCH_DTYPE[dtype])).sum()
     + (c_n_t * torch.tensor(w_c, dtype=TORCH_DTYPE[dtype])).sum()).backward()
    close(x.grad, xt.grad, dtype)
    close(model.lstm_cells[0].W_ih.grad, ref.weight_ih_l0.grad.T, dtype)
    if init_hidden:
        close(h0.grad, h0t.grad, dtype)
        close(c0.grad, c0t.grad, dtype)


def test_rnn_output_sum_backward_like_course():
    """The course's check: output.sum().backward(), then layer 0's W_ih.grad (seq_len 13, 2 layers)."""
    model = nn.LSTM(6, 5, 2)
    ref = torch.nn.LSTM(6, 5, 2)
    for k, cell in enumerate(model.lstm_cells):
        _copy_lstm_cell(cell, ref, layer=k)
    x_np = data(13, 4, 6, seed=39)
    out, _ = model(nd(x_np))
    out_t, _ = ref(th(x_np))
    close(out, out_t)
    out.sum().backward()
    out_t.sum().backward()
    close(model.lstm_cells[0].W_ih.grad, ref.weight_ih_l0.grad.T, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_torch(dtype):
    emb = nn.Embedding(7, 4, dtype=dtype)
    assert emb.weight.shape == (7, 4)
    ref = torch.nn.Embedding(7, 4).to(TORCH_DTYPE[dtype])
    ref.weight = tp(emb.weight, dtype)
    ids = np.array([[0, 3, 3], [6, 3, 1], [0, 0, 5], [2, 6, 3]])  # (seq_len, bs), repeated ids
    out = emb(ndl.Tensor(ids.astype(np.float32), requires_grad=False))
    out_t = ref(torch.tensor(ids))
    assert out.shape == (4, 3, 4)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(emb.weight.grad, ref.weight.grad, dtype)
    # id 3 appears four times: its row's gradient accumulates, id 4 never appears
    np.testing.assert_array_equal(emb.weight.grad.numpy()[4], np.zeros(4))


def test_embedding_rejects_out_of_range_ids():
    emb = nn.Embedding(5, 3)
    for bad in (5, -1):
        with pytest.raises(ValueError, match=f"id {bad} "):
            emb(ndl.Tensor(np.array([[0, bad]], dtype=np.float32), requires_grad=False))


def test_embedding_checks_a_single_id_and_float_ids_too():
    """A 0-d id is checked like a batch of them (id -1 gave the last row; torch raises IndexError),
    and float ids must be whole numbers (1.5 is not an id)."""
    emb = nn.Embedding(5, 3)
    for bad in (5, -1):
        with pytest.raises(ValueError, match=rf"Embedding\(5, 3\): id {bad} is out of range"):
            emb(ndl.Tensor(np.array(bad), dtype="int64"))
        with pytest.raises(ValueError, match=rf"embedding: id {bad} is out of range"):
            nn.functional.embedding(ndl.Tensor(np.array(bad), dtype="int64"), emb.weight)
        with pytest.raises(IndexError):
            torch.nn.functional.embedding(torch.tensor(bad), torch.zeros(5, 3))
    for bad in (1.5, float("nan")):
        with pytest.raises(ValueError, match=r"Embedding\(5, 3\): id .* is not a whole number"):
            emb(ndl.Tensor(np.array([0.0, bad], dtype=np.float32)))
    np.testing.assert_array_equal(emb(ndl.Tensor(np.array(4), dtype="int64")).numpy(), emb.weight.numpy()[4])
    np.testing.assert_array_equal(emb(ndl.Tensor(np.array([4.0, 0.0]))).numpy(), emb.weight.numpy()[[4, 0]])


@pytest.mark.parametrize("seq_model", ["rnn", "lstm"])
def test_language_model_matches_torch(seq_model):
    from needle.models import LanguageModel

    seq_len, bs, vocab, emb_size, hidden = 4, 3, 9, 5, 6
    model = LanguageModel(emb_size, vocab, hidden, num_layers=2, seq_model=seq_model)
    emb = torch.nn.Embedding(vocab, emb_size)
    emb.weight = tp(model.embedding.weight)
    if seq_model == "rnn":
        seq = torch.nn.RNN(emb_size, hidden, 2)
        cells = model.seq_model.rnn_cells
    else:
        seq = torch.nn.LSTM(emb_size, hidden, 2)
        cells = model.seq_model.lstm_cells
    for k, cell in enumerate(cells):
        _copy_rnn_cell(cell, seq, layer=k)
    lin = torch.nn.Linear(hidden, vocab)
    lin.weight = tp(model.linear.weight, transpose=True)
    lin.bias = torch.nn.Parameter(torch.tensor(model.linear.bias.numpy().reshape(-1)))
    ids = np.random.default_rng(92).integers(0, vocab, size=(seq_len, bs))
    out, h = model(ndl.Tensor(ids.astype(np.float32), requires_grad=False))
    seq_out, h_t = seq(emb(torch.tensor(ids)))
    out_t = lin(seq_out.reshape(seq_len * bs, hidden))
    assert out.shape == (seq_len * bs, vocab)
    close(out, out_t)
    if seq_model == "rnn":
        close(h, h_t)
    else:
        close(h[0], h_t[0])
        close(h[1], h_t[1])
    backward_both(out, out_t)
    close(model.embedding.weight.grad, emb.weight.grad)
    close(cells[0].W_ih.grad, seq.weight_ih_l0.grad.T)


# --------------------------------------------------------------------------- transformer

F32_MAX = np.finfo(np.float32).max


def t_mask(tq, tk, dtype):
    return torch.triu(torch.ones(tq, tk, dtype=dtype), diagonal=tk - tq + 1) * -float(F32_MAX)


def t_mha(q, k, v, causal, keep=None, p=0.0):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        logits = logits + t_mask(q.shape[2], k.shape[2], q.dtype)
    probs = torch.softmax(logits, dim=-1)
    if keep is not None:
        probs = probs * torch.tensor(keep, dtype=q.dtype) / (1 - p)
    return probs @ v, probs


def t_layernorm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return w * (x - mean) / torch.sqrt(var + eps) + b


class TorchAttentionLayer:
    """Independent PyTorch re-implementation of spec §10.2 with needle's weights copied."""

    def __init__(self, layer, dtype):
        P = lambda t: tp(t, dtype)  # noqa: E731
        self.n = {name: (P(getattr(layer, name).weight), P(getattr(layer, name).bias))
                  for name in ("prenorm_q", "prenorm_k", "prenorm_v")}
        self.w = {name: P(getattr(layer, name).weight)
                  for name in ("q_projection", "k_projection", "v_projection", "out_projection")}
        self.heads, self.dim_head, self.causal = layer.num_head, layer.dim_head, layer.attn.causal

    def __call__(self, q, k=None, v=None, keep=None, p=0.0):
        k = q if k is None else k
        v = q if v is None else v
        B, Tq, _ = q.shape

        def heads(x, norm, proj):
            y = t_layernorm(x, *self.n[norm]) @ self.w[proj]
            return y.reshape(B, x.shape[1], self.heads, self.dim_head).transpose(1, 2)

        x, probs = t_mha(heads(q, "prenorm_q", "q_projection"), heads(k, "prenorm_k", "k_projection"),
                         heads(v, "prenorm_v", "v_projection"), self.causal, keep, p)
        x = x.transpose(1, 2).reshape(B, Tq, self.heads * self.dim_head)
        return x @ self.w["out_projection"]


class TorchTransformerLayer:
    """Spec §10.3: x + attn(x), then x + Linear2(ReLU(Linear1(LayerNorm(x))))."""

    def __init__(self, layer, dtype):
        P = lambda t: tp(t, dtype)  # noqa: E731
        self.attn = TorchAttentionLayer(layer.attention, dtype)
        self.w1, self.b1 = P(layer.linear1.weight), P(layer.linear1.bias)
        self.w2, self.b2 = P(layer.linear2.weight), P(layer.linear2.bias)
        self.nw, self.nb = P(layer.norm.weight), P(layer.norm.bias)

    def __call__(self, x, masks=None, p=0.0):
        scale = 1.0 / (1 - p)
        m = masks or [None] * 4
        drop = lambda t, k: t if m[k] is None else t * torch.tensor(m[k], dtype=t.dtype) * scale  # noqa: E731
        x = x + drop(self.attn(x, keep=m[0], p=p), 1)
        y = drop(torch.relu(t_layernorm(x, self.nw, self.nb) @ self.w1 + self.b1), 2)
        return x + drop(y @ self.w2 + self.b2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq, tk", [(5, 5), (3, 6)])
def test_multihead_attention_matches_torch(dtype, causal, tq, tk):
    B, H, D = 2, 3, 4
    attn = nn.MultiHeadAttention(dropout=0.0, causal=causal, dtype=dtype)
    assert attn.parameters() == []
    q_np, k_np, v_np = data(B, H, tq, D, seed=40), data(B, H, tk, D, seed=41), data(B, H, tk, D, seed=42)
    q, k, v = nd(q_np, dtype), nd(k_np, dtype), nd(v_np, dtype)
    qt, kt, vt = th(q_np, dtype), th(k_np, dtype), th(v_np, dtype)
    out, probs = attn(q, k, v)
    out_t, probs_t = t_mha(qt, kt, vt, causal)
    assert out.shape == (B, H, tq, D) and probs.shape == (B, H, tq, tk)
    close(out, out_t, dtype)
    close(probs, probs_t, dtype)
    if causal:
        upper = np.triu(np.ones((tq, tk), dtype=bool), tk - tq + 1)
        assert np.all(probs.numpy()[..., upper] == 0)
    backward_both(out, out_t)
    for a, b in ((q, qt), (k, kt), (v, vt)):
        close(a.grad, b.grad, dtype)


def test_multihead_attention_causal_mask_helper():
    attn = nn.MultiHeadAttention(causal=True)
    mask = attn.create_causal_mask(3, 5, ndl.cpu())
    mask = mask.numpy() if isinstance(mask, ndl.Tensor) else np.asarray(mask.numpy())
    expected = np.zeros((1, 1, 3, 5), dtype=np.float32)
    for r in range(3):
        for c in range(5):
            if c > r + 2:
                expected[0, 0, r, c] = -F32_MAX
    np.testing.assert_array_equal(mask, expected)


def test_multihead_attention_dropout_replays_rng():
    B, H, T, D, p = 2, 2, 4, 3, 0.3
    attn = nn.MultiHeadAttention(dropout=p, causal=True)
    q_np, k_np, v_np = data(B, H, T, D, seed=43), data(B, H, T, D, seed=44), data(B, H, T, D, seed=45)
    np.random.seed(11)
    out, probs = attn(nd(q_np), nd(k_np), nd(v_np))
    np.random.seed(11)
    keep = np.random.rand(B, H, T, T) <= 1 - p
    out_t, probs_t = t_mha(th(q_np), th(k_np), th(v_np), True, keep, p)
    close(probs, probs_t)
    close(out, out_t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_layer_matches_torch(dtype, causal):
    B, T, F_, H, Dh = 2, 5, 6, 2, 3
    np.random.seed(1)
    layer = nn.AttentionLayer(F_, H, Dh, dropout=0.0, causal=causal, dtype=dtype)
    # non-trivial layer norm parameters
    for i, name in enumerate(("prenorm_q", "prenorm_k", "prenorm_v")):
        norm = getattr(layer, name)
        norm.weight.data = ndl.Tensor(1 + 0.3 * data(F_, seed=50 + i), dtype=dtype)
        norm.bias.data = ndl.Tensor(0.3 * data(F_, seed=60 + i), dtype=dtype)
    ref = TorchAttentionLayer(layer, dtype)
    x_np = data(B, T, F_, seed=46)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, out_t = layer(x), ref(xt)
    assert out.shape == (B, T, F_)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    close(layer.q_projection.weight.grad, ref.w["q_projection"].grad, dtype)
    close(layer.out_projection.weight.grad, ref.w["out_projection"].grad, dtype)
    close(layer.prenorm_k.weight.grad, ref.n["prenorm_k"][0].grad, dtype)


def test_attention_layer_cross_attention_with_other_feature_sizes():
    B, Tq, Tk, H, Dh = 2, 3, 4, 2, 2
    layer = nn.AttentionLayer(5, H, Dh, k_features=6, v_features=7, out_features=3, causal=False)
    assert layer.q_projection.weight.shape == (5, 4)
    assert layer.k_projection.weight.shape == (6, 4)
    assert layer.v_projection.weight.shape == (7, 4)
    assert layer.out_projection.weight.shape == (4, 3)
    ref = TorchAttentionLayer(layer, "float32")
    q_np, k_np, v_np = data(B, Tq, 5, seed=47), data(B, Tk, 6, seed=48), data(B, Tk, 7, seed=49)
    out = layer(nd(q_np), nd(k_np), nd(v_np))
    out_t = ref(th(q_np), th(k_np), th(v_np))
    close(out, out_t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_transformer_layer_matches_torch(dtype, causal):
    B, T, F_, H, Dh, hidden = 2, 4, 6, 2, 3, 8
    layer = nn.TransformerLayer(F_, H, Dh, hidden, dropout=0.0, causal=causal, dtype=dtype)
    layer.norm.weight.data = ndl.Tensor(1 + 0.3 * data(F_, seed=70), dtype=dtype)
    layer.norm.bias.data = ndl.Tensor(0.3 * data(F_, seed=71), dtype=dtype)
    ref = TorchTransformerLayer(layer, dtype)
    x_np = data(B, T, F_, seed=72)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, out_t = layer(x), ref(xt)
    close(out, out_t, dtype)
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    close(layer.linear1.weight.grad, ref.w1.grad, dtype)
    close(layer.linear2.bias.grad.reshape(-1), ref.b2.grad.reshape(-1), dtype, atol=1e-4 if dtype == "float32" else 1e-10)
    close(layer.attention.v_projection.weight.grad, ref.attn.w["v_projection"].grad, dtype)


def test_transformer_layer_dropout_draw_order():
    """Attention-prob dropout, then after attention, after ReLU, after Linear2 (spec §10.3)."""
    B, T, F_, H, Dh, hidden, p = 2, 3, 4, 2, 2, 5, 0.2
    layer = nn.TransformerLayer(F_, H, Dh, hidden, dropout=p, causal=True)
    ref = TorchTransformerLayer(layer, "float32")
    x_np = data(B, T, F_, seed=73)
    np.random.seed(17)
    out = layer(nd(x_np))
    np.random.seed(17)
    masks = [np.random.rand(*s) <= 1 - p for s in ((B, H, T, T), (B, T, F_), (B, T, hidden), (B, T, F_))]
    close(out, ref(th(x_np), masks, p))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_transformer_matches_torch(dtype, batch_first, num_layers):
    B, T, D, hidden, H, Dh = 2, 5, 6, 8, 2, 3
    model = nn.Transformer(D, hidden, num_layers, num_head=H, dim_head=Dh, dropout=0.0, causal=True,
                           dtype=dtype, batch_first=batch_first, sequence_len=10)
    assert model.positional_embedding.weight.shape == (10, D)
    layers = [layer for layer in model.layers.modules] if hasattr(model.layers, "modules") else list(model.layers)
    assert len(layers) == num_layers
    refs = [TorchTransformerLayer(layer, dtype) for layer in layers]
    pos_w = tp(model.positional_embedding.weight, dtype)
    x_np = data(*((B, T, D) if batch_first else (T, B, D)), seed=74)
    x, xt = nd(x_np, dtype), th(x_np, dtype)
    out, h = model(x)
    y = xt if batch_first else xt.transpose(0, 1)
    y = y + pos_w[torch.arange(T)][None]
    for ref in refs:
        y = ref(y)
    out_t = y if batch_first else y.transpose(0, 1)
    assert out.shape == x.shape
    close(out, out_t, dtype)
    np.testing.assert_array_equal(h.numpy(), np.zeros(x.shape))
    backward_both(out, out_t)
    close(x.grad, xt.grad, dtype)
    close(model.positional_embedding.weight.grad, pos_w.grad, dtype)
    close(layers[0].attention.q_projection.weight.grad, refs[0].attn.w["q_projection"].grad, dtype)


# --------------------------------------------------------------------------- initialisation

def _uniform(shape, bound, seed_state=None):
    return np.random.rand(*shape) * 2 * bound - bound


def test_linear_init_rng_order():
    np.random.seed(42)
    layer = nn.Linear(5, 3)
    after = np.random.rand()
    np.random.seed(42)
    w = _uniform((5, 3), math.sqrt(6 / 5))
    b = _uniform((3, 1), math.sqrt(6 / 3)).reshape(1, 3)  # bias fan_in is out_features
    assert np.random.rand() == after
    close(layer.weight, w, rtol=1e-6, atol=1e-6)
    close(layer.bias, b, rtol=1e-6, atol=1e-6)
    assert layer.weight.is_leaf() and layer.bias.is_leaf()
    assert isinstance(layer.bias, nn.Parameter) and layer.bias.requires_grad


def test_linear_without_bias_draws_only_the_weight():
    np.random.seed(3)
    layer = nn.Linear(4, 6, bias=False)
    after = np.random.rand()
    np.random.seed(3)
    close(layer.weight, _uniform((4, 6), math.sqrt(6 / 4)), rtol=1e-6, atol=1e-6)
    assert np.random.rand() == after


def test_conv_init_rng_order():
    np.random.seed(4)
    conv = nn.Conv(3, 5, 3)
    after = np.random.rand()
    np.random.seed(4)
    w = _uniform((3, 3, 3, 5), math.sqrt(6 / 27))
    b = _uniform((5,), 1 / math.sqrt(27))
    assert np.random.rand() == after
    close(conv.weight, w, rtol=1e-6, atol=1e-6)
    close(conv.bias, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls, width", [(nn.RNNCell, 1), (nn.LSTMCell, 4)])
def test_recurrent_cell_init_rng_order(cls, width):
    np.random.seed(5)
    cell = cls(3, 4)
    np.random.seed(5)
    bound = math.sqrt(1 / 4)
    for name, shape in (("W_ih", (3, 4 * width)), ("W_hh", (4, 4 * width)),
                        ("bias_ih", (4 * width,)), ("bias_hh", (4 * width,))):
        close(getattr(cell, name), _uniform(shape, bound), rtol=1e-6, atol=1e-6)


def test_embedding_init_is_standard_normal():
    np.random.seed(6)
    emb = nn.Embedding(6, 3)
    np.random.seed(6)
    close(emb.weight, np.random.randn(6, 3), rtol=1e-6, atol=1e-6)


def test_attention_and_transformer_init_rng_order():
    np.random.seed(8)
    layer = nn.AttentionLayer(4, 2, 3, causal=True)
    after = np.random.rand()
    np.random.seed(8)
    for name in ("q_projection", "k_projection", "v_projection"):
        close(getattr(layer, name).weight, _uniform((4, 6), math.sqrt(6 / 4)), rtol=1e-6, atol=1e-6)
    close(layer.out_projection.weight, _uniform((6, 4), math.sqrt(6 / 6)), rtol=1e-6, atol=1e-6)
    assert np.random.rand() == after  # exactly four weight draws, no biases

    np.random.seed(9)
    model = nn.Transformer(4, 5, 1, num_head=2, dim_head=3, sequence_len=7)
    np.random.seed(9)
    close(model.positional_embedding.weight, np.random.randn(7, 4), rtol=1e-6, atol=1e-6)  # embedding first
    first = model.layers.modules[0]
    close(first.attention.q_projection.weight, _uniform((4, 6), math.sqrt(6 / 4)), rtol=1e-6, atol=1e-6)


def test_layers_without_random_init_draw_nothing():
    np.random.seed(13)
    expected = np.random.rand()
    np.random.seed(13)
    nn.BatchNorm1d(4), nn.BatchNorm2d(3), nn.LayerNorm1d(5), nn.Dropout(0.3), nn.ReLU(), nn.Flatten()
    nn.MultiHeadAttention(dropout=0.1, causal=True), nn.Sequential(nn.Tanh(), nn.Sigmoid())
    assert np.random.rand() == expected
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            nn.Dropout(bad)


def test_kaiming_uniform_with_shape_course_case():
    np.random.seed(0)
    w = init.kaiming_uniform(144, 72, shape=(3, 3, 16, 8))
    np.random.seed(0)
    bound = math.sqrt(2) * math.sqrt(3 / 144)
    expected = np.random.rand(3, 3, 16, 8) * 2 * bound - bound
    assert w.shape == (3, 3, 16, 8)
    close(w, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(w.numpy().sum(), expected.sum(), rtol=1e-4)


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"])
def test_initializer_distributions(name):
    fan_in, fan_out, gain = 60, 40, 1.5
    fn = getattr(init, name)
    kw = {"gain": gain} if name.startswith("xavier") else {}
    np.random.seed(10)
    w = fn(fan_in, fan_out, **kw).numpy()
    np.random.seed(10)
    if name == "xavier_uniform":
        bound = gain * math.sqrt(6 / (fan_in + fan_out))
        expected = np.random.rand(fan_in, fan_out) * 2 * bound - bound
    elif name == "kaiming_uniform":
        bound = math.sqrt(2) * math.sqrt(3 / fan_in)
        expected = np.random.rand(fan_in, fan_out) * 2 * bound - bound
    elif name == "xavier_normal":
        std = gain * math.sqrt(2 / (fan_in + fan_out))
        expected = np.random.randn(fan_in, fan_out) * std
    else:
        std = math.sqrt(2) / math.sqrt(fan_in)
        expected = np.random.randn(fan_in, fan_out) * std
    assert w.shape == (fan_in, fan_out) and w.dtype == np.float32
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-6)
    if name.endswith("uniform"):
        assert np.all(np.abs(w) <= bound) and np.abs(w).max() > 0.95 * bound
        assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    else:
        assert abs(w.std() - std) < 0.05 * std and abs(w.mean()) < 0.1 * std


def test_initializers_pass_dtype_and_requires_grad_and_reject_other_nonlinearities():
    w = init.kaiming_normal(3, 4, dtype="float64", requires_grad=True)
    assert w.dtype == "float64" and w.requires_grad
    with pytest.raises(AssertionError):
        init.kaiming_uniform(3, 4, nonlinearity="tanh")
    with pytest.raises(AssertionError):
        init.kaiming_normal(3, 4, nonlinearity="tanh")


def test_basic_factories_rng():
    np.random.seed(12)
    r = init.rand(3, 4, low=-2.0, high=3.0)
    n = init.randn(3, 4, mean=1.0, std=2.0)
    b = init.randb(3, 4, p=0.3)
    np.random.seed(12)
    close(r, np.random.rand(3, 4) * 5 - 2, rtol=1e-6, atol=1e-6)
    close(n, np.random.randn(3, 4) * 2 + 1, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b.numpy().astype(bool), np.random.rand(3, 4) <= 0.3)
    np.testing.assert_array_equal(init.constant(2, 3, c=2.5).numpy(), np.full((2, 3), 2.5))
    oh = init.one_hot(4, ndl.Tensor(np.array([[3.0, 0.0], [1.0, 1.0]]), requires_grad=False))
    np.testing.assert_array_equal(oh.numpy(), np.eye(4)[[[3, 0], [1, 1]]])


# --------------------------------------------------------------------------- module machinery

class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Parameter(ndl.Tensor(np.ones(2), dtype="float32"))
        self.seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Dropout(0.1), nn.Linear(3, 3)))
        self.table = {"lin": nn.Linear(3, 2), "stack": [nn.BatchNorm1d(2), nn.LayerNorm1d(2)]}
        self.plain = ndl.Tensor(np.zeros(2), dtype="float32")  # not a Parameter
        self.pair = (nn.Linear(2, 2, bias=False), nn.Dropout(0.2))
        self.last = nn.Parameter(ndl.Tensor(np.ones(1), dtype="float32"))


def test_parameters_in_assignment_order():
    net = _Net()
    lin_a, lin_b = net.seq.modules[0], net.seq.modules[2].modules[1]
    bn, ln = net.table["stack"]
    expected = [net.first, lin_a.weight, lin_a.bias, lin_b.weight, lin_b.bias,
                net.table["lin"].weight, net.table["lin"].bias, bn.weight, bn.bias, ln.weight, ln.bias,
                net.pair[0].weight, net.last]
    params = net.parameters()
    assert len(params) == len(expected)
    assert all(p is e for p, e in zip(params, expected))
    assert not any(p is net.plain or p is bn.running_mean for p in params)


def test_named_parameters_follow_attribute_paths():
    net = _Net()
    named = net.named_parameters()
    assert [name for name, _ in named] == [
        "first", "seq.0.weight", "seq.0.bias", "seq.2.1.weight",
        "seq.2.1.bias", "table.lin.weight", "table.lin.bias", "table.stack.0.weight",
        "table.stack.0.bias", "table.stack.1.weight", "table.stack.1.bias", "pair.0.weight", "last",
    ]
    assert all(t is p for (_, t), p in zip(named, net.parameters()))


def test_eval_and_train_propagate_into_nested_children():
    net = _Net()
    children = [net.seq, *net.seq.modules, *net.seq.modules[2].modules, net.table["lin"],
                *net.table["stack"], *net.pair]
    assert net.training and all(m.training for m in children)
    assert net.eval() is net
    assert not net.training and not any(m.training for m in children)
    net.train()
    assert net.training and all(m.training for m in children)
    # a nested Dropout stops drawing in eval mode
    net.eval()
    x = nd(np.ones((3, 2)))
    np.random.seed(0)
    net.seq(x)
    state = np.random.rand()
    np.random.seed(0)
    assert np.random.rand() == state


def test_shared_parameters_are_listed_once():
    """A module used twice (tied weights) must not be updated twice per optimizer step."""
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 2))
    params = model.parameters()
    assert len(params) == 4
    assert params[0] is shared.weight and params[1] is shared.bias
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "3.weight", "3.bias"]
    ref = torch.nn.Linear(3, 3)
    ref.weight = tp(shared.weight, transpose=True)
    ref.bias = torch.nn.Parameter(torch.tensor(shared.bias.numpy().reshape(3)))
    x_np = data(4, 3, seed=90)
    out = model.modules[2](model.modules[1](model.modules[0](nd(x_np))))
    out_t = ref(torch.relu(ref(th(x_np))))
    backward_both(out, out_t)
    close(shared.weight.grad, ref.weight.grad.T)  # gradients of both uses add up
    w_before = shared.weight.numpy().copy()
    ndl.optim.SGD(params, lr=0.1).step()
    close(shared.weight, w_before - 0.1 * ref.weight.grad.T.numpy())


def test_batchnorm_promotes_float64_input_like_other_layers():
    bn = nn.BatchNorm1d(3)  # float32 parameters and statistics
    x_np = data(6, 3, seed=91) * 2 + 1
    out = bn(nd(x_np, "float64"))
    assert out.dtype == "float64"
    close(out, (x_np - x_np.mean(0)) / np.sqrt(x_np.var(0) + 1e-5), "float64", rtol=1e-6, atol=1e-6)
    assert bn.running_mean.dtype == "float32" and bn.running_var.dtype == "float32"
    close(bn.running_mean, 0.1 * x_np.mean(0), rtol=1e-6, atol=1e-6)
    close(bn.running_var, 0.9 + 0.1 * x_np.var(0), rtol=1e-6, atol=1e-6)


def test_module_call_forwards_args_and_kwargs():
    class Two(nn.Module):
        def forward(self, a, b=0):
            return a + b

    assert Two()(1, b=2) == 3


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "module, shape, expected",
    [
        (lambda: nn.Linear(4, 3), (2, 5), "4"),
        (lambda: nn.Conv(3, 4, 3), (1, 2, 5, 5), "3"),
        (lambda: nn.RNNCell(4, 3), (2, 5), "4"),
        (lambda: nn.LSTMCell(4, 3), (2, 5), "4"),
        (lambda: nn.RNN(4, 3), (5, 2, 6), "4"),
        (lambda: nn.LSTM(4, 3), (5, 2, 6), "4"),
        (lambda: nn.BatchNorm1d(4), (2, 5), "4"),
        (lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), "3"),
        (lambda: nn.LayerNorm1d(4), (2, 5), "4"),
    ],
    ids=["linear", "conv", "rnn_cell", "lstm_cell", "rnn", "lstm", "bn1d", "bn2d", "ln"],
)
def test_wrong_feature_size_raises_value_error_naming_shapes(module, shape, expected):
    with pytest.raises(ValueError) as err:
        module()(nd(np.zeros(shape)))
    message = str(err.value)
    assert str(shape) in message
    assert expected in message.replace(str(shape), "")


@pytest.mark.parametrize("bad", [5, -1])
def test_softmax_loss_label_out_of_range(bad):
    logits = nd(data(3, 5, seed=80))
    with pytest.raises(ValueError, match=str(bad)):
        nn.SoftmaxLoss()(logits, ndl.Tensor(np.array([0.0, bad, 2.0]), requires_grad=False))
