"""The PyTorch-style layers (needle.nn.functional and the modules around it) against PyTorch.

* the functional table (tests/layer_cases.py): forward and backward of every function on
  random shapes, in float64 (rtol 1e-10) and float32 (rtol 1e-5, against PyTorch in float64),
  on both nd-mode devices;
* the modules: each against its torch.nn twin holding the same weights, and Conv1d's
  initialisation (PyTorch's bound, numpy's RNG replayed);
* what the table cannot show: batch_norm's running statistics, one_hot, dropout, erf's
  accuracy over a wide range, the im2col / col2im adjoint pair;
* bad input: one ValueError or TypeError per wrong rank, channel count, kernel, stride,
  padding and flag, naming the shapes.
Second derivatives of these layers are in tests/test_higher_order.py, their edges (nan,
inf) in tests/op_edge_cases.py.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import needle as ndl
import needle.nn as nn
import needle.nn.functional as F
from layer_cases import CASES, run_case
from needle import ops
from torch_compare import close, nd, rand, th

torch.set_num_threads(1)

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]

# numpy warns of the 0 / 0 of a mean over no targets (PyTorch's nan), on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# --------------------------------------------------------------------------- the functional table

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_functional_matches_torch(case, dtype, device):
    run_case(case, dtype, device)


def test_functional_is_importable_both_ways():
    import needle.nn.functional as G

    assert nn.functional is G is F
    assert all(callable(getattr(F, name)) for name in F.__all__)


# --------------------------------------------------------------------------- modules

def _torch_conv1d(needle_layer, bias):
    ref = torch.nn.Conv1d(needle_layer.in_channels, needle_layer.out_channels, needle_layer.kernel_size,
                          stride=needle_layer.stride, padding=needle_layer.padding, bias=bias, dtype=torch.float64)
    ref.load_state_dict({k: torch.tensor(v.numpy()) for k, v in needle_layer.state_dict().items()})
    return ref


MODULES = [  # (needle module, torch module, input shape); the torch twin gets the needle weights
    (lambda: nn.MaxPool2d(3, 2, 1), lambda m: torch.nn.MaxPool2d(3, 2, 1), (2, 3, 7, 6)),
    (lambda: nn.MaxPool2d((2, 3)), lambda m: torch.nn.MaxPool2d((2, 3)), (1, 2, 5, 8)),
    (lambda: nn.AvgPool2d(3, 2, 1), lambda m: torch.nn.AvgPool2d(3, 2, 1), (2, 3, 7, 6)),
    (lambda: nn.AvgPool2d(4, 3, 2, count_include_pad=False),
     lambda m: torch.nn.AvgPool2d(4, 3, 2, count_include_pad=False), (1, 2, 9, 7)),
    (lambda: nn.AdaptiveAvgPool2d(1), lambda m: torch.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 7)),
    (lambda: nn.AdaptiveAvgPool2d((3, None)), lambda m: torch.nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5)),
    (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), lambda m: _torch_conv1d(m, True), (2, 3, 10)),
    (lambda: nn.Conv1d(2, 3, 4, bias=False), lambda m: _torch_conv1d(m, False), (2, 9)),
    (lambda: nn.Softmax(1), lambda m: torch.nn.Softmax(1), (3, 4, 2)),
    (lambda: nn.LogSoftmax(-1), lambda m: torch.nn.LogSoftmax(-1), (3, 4, 2)),
    (lambda: nn.GELU(), lambda m: torch.nn.GELU(), (3, 5)),
    (lambda: nn.GELU("tanh"), lambda m: torch.nn.GELU("tanh"), (3, 5)),
    (lambda: nn.SiLU(), lambda m: torch.nn.SiLU(), (3, 5)),
    (lambda: nn.LeakyReLU(), lambda m: torch.nn.LeakyReLU(), (3, 5)),
    (lambda: nn.LeakyReLU(0.3), lambda m: torch.nn.LeakyReLU(0.3), (3, 5)),
]


MODULE_IDS = ["MaxPool2d", "MaxPool2d(rect)", "AvgPool2d", "AvgPool2d(no pad count)", "AdaptiveAvgPool2d(1)",
              "AdaptiveAvgPool2d((3, None))", "Conv1d", "Conv1d(unbatched, no bias)", "Softmax", "LogSoftmax", "GELU",
              "GELU(tanh)", "SiLU", "LeakyReLU", "LeakyReLU(0.3)"]


@pytest.mark.parametrize("make,make_ref,shape", MODULES, ids=MODULE_IDS)
def test_module_matches_torch(make, make_ref, shape):
    layer = make()
    if hasattr(layer, "weight"):  # float64 weights, so both sides compute in float64
        layer.weight = nn.Parameter(layer.weight.numpy().astype(np.float64), dtype="float64")
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.numpy().astype(np.float64), dtype="float64")
    ref = make_ref(layer)
    a = rand(*shape, seed=1)
    x, tx = nd(a), th(a)
    out, tout = layer(x), ref(tx)
    close(out, tout)
    w = rand(*tout.shape, seed=2)
    (out * nd(w, requires_grad=False)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    close(x.grad, tx.grad)
    for name, p in layer.named_parameters():
        close(p.grad, dict(ref.named_parameters())[name].grad)


@pytest.mark.parametrize("kw", [{}, dict(ignore_index=1, label_smoothing=0.2), dict(reduction="sum"),
                                dict(reduction="none", label_smoothing=0.1)], ids=str)
def test_cross_entropy_loss_module(kw):
    z = rand(6, 4, seed=3)
    y = np.array([0, 3, 1, -100, 2, 1]) if "ignore_index" not in kw else np.array([0, 3, 1, 1, 2, 1])
    loss = nn.CrossEntropyLoss(**kw)(nd(z), ndl.Tensor(y, dtype="int64"))
    ref = torch.nn.CrossEntropyLoss(**kw)(th(z), torch.tensor(y))
    close(loss, ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_module(reduction):
    a, b = rand(3, 4, seed=4), rand(3, 4, seed=5)
    x, tx = nd(a), th(a)
    out, ref = nn.MSELoss(reduction)(x, nd(b)), torch.nn.MSELoss(reduction=reduction)(tx, th(b))
    close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    close(x.grad, tx.grad)


def test_conv1d_initialisation_is_torchs_bound_from_numpys_rng():
    """U(-b, b), b = 1 / sqrt(Cin * K) for weight and bias (torch's kaiming_uniform(a=sqrt(5))),
    drawn weight first from numpy's global RNG; the weight has torch's layout (Cout, Cin, K)."""
    np.random.seed(7)
    layer = nn.Conv1d(3, 5, 4)
    bound = 1 / math.sqrt(3 * 4)
    np.random.seed(7)
    weight = np.random.rand(5, 3, 4) * 2 * bound - bound
    bias = np.random.rand(5) * 2 * bound - bound
    close(layer.weight, weight.astype(np.float32), rtol=1e-6, atol=1e-7)
    close(layer.bias, bias.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert layer.weight.dtype == "float32"
    ref = torch.nn.Conv1d(3, 5, 4)
    assert tuple(ref.weight.shape) == layer.weight.shape
    # torch's bound is the same: sqrt(6 / ((1 + a^2) fan_in)) with a = sqrt(5)
    assert math.isclose(math.sqrt(6 / ((1 + 5) * 12)), bound)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})  # loads as it is
    close(layer(nd(rand(2, 3, 8), "float32")), ref(torch.tensor(rand(2, 3, 8), dtype=torch.float32)),
          rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- beyond the table

@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 2)])
def test_batch_norm_updates_running_statistics_like_torch(shape):
    """Training updates the running mean with the batch mean and the running variance with
    the *unbiased* batch variance (PyTorch's), in place."""
    a = rand(*shape, seed=6)
    mean, var = nd(rand(3, seed=7), requires_grad=False), nd(np.abs(rand(3, seed=8)) + 1, requires_grad=False)
    tmean, tvar = torch.tensor(mean.numpy()), torch.tensor(var.numpy())
    out = F.batch_norm(nd(a), mean, var, training=True, momentum=0.3)
    ref = TF.batch_norm(th(a), tmean, tvar, training=True, momentum=0.3)
    close(out, ref)
    close(mean, tmean)
    close(var, tvar)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 2)])
def test_batch_norm_course_rule_keeps_the_biased_variance(shape):
    """unbiased_running_var=False (the course's BatchNorm1d): the running variance moves toward
    the *biased* batch variance; nn.BatchNorm1d/2d are that function."""
    a = rand(*shape, seed=9)
    axes = (0,) + tuple(range(2, len(shape)))
    start_mean, start_var = rand(3, seed=10), np.abs(rand(3, seed=11)) + 1
    mean, var = nd(start_mean, requires_grad=False), nd(start_var, requires_grad=False)
    F.batch_norm(nd(a), mean, var, training=True, momentum=0.3, unbiased_running_var=False)
    np.testing.assert_allclose(mean.numpy(), 0.7 * start_mean + 0.3 * a.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), 0.7 * start_var + 0.3 * a.var(axis=axes), rtol=1e-12)  # ddof=0
    layer = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, momentum=0.3, dtype="float64")
    out = layer(nd(a))
    np.testing.assert_allclose(layer.running_var.numpy(), 0.7 + 0.3 * a.var(axis=axes), rtol=1e-12)
    expected = (a - a.mean(axis=axes, keepdims=True)) / np.sqrt(a.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 2)])
def test_batch_norm_modules_take_pytorchs_unbiased_running_variance_when_asked(shape):
    """BatchNorm1d/2d(unbiased_running_var=True) (or the attribute set later) keep the running
    statistics torch.nn.BatchNorm1d/2d keep, over several training steps; outputs as torch's."""
    torch_layer = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3, momentum=0.3).double()
    ours = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, momentum=0.3, dtype="float64",
                                                                    unbiased_running_var=True)
    later = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, momentum=0.3, dtype="float64")
    later.unbiased_running_var = True
    for seed in range(3):
        a = rand(*shape, seed=20 + seed)
        ref = torch_layer(torch.tensor(a))
        for layer in (ours, later):
            np.testing.assert_allclose(layer(nd(a)).numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(layer.running_var.numpy(), torch_layer.running_var.numpy(), rtol=1e-12)
            np.testing.assert_allclose(layer.running_mean.numpy(), torch_layer.running_mean.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3, unbiased_running_var=True)(nd(rand(1, 3, seed=1)))


def test_batch_norm_of_one_row_needs_the_course_rule():
    """One value per channel has no unbiased variance (PyTorch refuses it); the biased one is 0."""
    row = nd(rand(1, 3, seed=12))
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(row, None, None, training=True)
    var = nd(np.ones(3), requires_grad=False)
    out = F.batch_norm(row, None, var, training=True, momentum=0.5, unbiased_running_var=False)
    np.testing.assert_array_equal(out.numpy(), np.zeros((1, 3)))  # x - mean is 0: only the bias (0) is left
    np.testing.assert_allclose(var.numpy(), np.full(3, 0.5), rtol=0)


def test_one_hot_like_torch():
    y = np.array([[0, 3], [2, 2]])
    for kw in ({}, dict(num_classes=6)):
        out, ref = F.one_hot(ndl.Tensor(y, dtype="int64"), **kw), TF.one_hot(torch.tensor(y), **kw)
        assert out.dtype == "int64"
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_array_equal(F.one_hot(ndl.Tensor(np.array(2), dtype="int64")).numpy(), [0, 0, 1])


def test_dropout():
    x = nd(np.ones((200, 50)), "float32")
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0)
    kept = F.dropout(x, 0.25).numpy()
    assert set(np.unique(kept)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((kept == 0).mean() - 0.25) < 0.03


def test_erf_matches_torch_over_a_wide_range():
    a = np.concatenate([np.linspace(-7, 7, 5001), [0.0, -0.0, 0.46875, -0.46875, 4.0, -4.0, 8.0, 30.0, 1e-300,
                                                   np.inf, -np.inf, np.nan]])
    # PyTorch in float64 is the reference for both dtypes (its float32 erf and exp round per
    # CPU); the float64 tolerance, 2-4 ulp, holds two float64 implementations of 1 ulp each
    for dtype, tol in (("float64", dict(rtol=4e-16, atol=3e-16)), ("float32", dict(rtol=3e-7, atol=2e-7))):
        x = ndl.Tensor(a, dtype=dtype, requires_grad=True)
        t = torch.tensor(a.astype(dtype).astype(np.float64), requires_grad=True)
        y, ty = ops.erf(x), torch.erf(t)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
        y.sum().backward()
        ty.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), **tol)
    assert np.signbit(ops.erf(ndl.Tensor([-0.0], dtype="float64")).numpy()[0])


@pytest.mark.parametrize("device", DEVICES)
def test_im2col_and_col2im_are_adjoint(device):
    """<im2col(x), c> == <x, col2im(c)>: the pair the pooling gradients are written with."""
    x, c = rand(2, 7, 6, 3, seed=9), rand(2, 4, 3, 3, 2, 3, seed=10)
    windows = ops.im2col(ndl.Tensor(x, device=device, dtype="float64"), (3, 2), 2, (1, 0))
    folded = ops.col2im(ndl.Tensor(c, device=device, dtype="float64"), x.shape, (3, 2), 2, (1, 0))
    assert windows.shape == c.shape and folded.shape == x.shape
    assert math.isclose(float((windows.numpy() * c).sum()), float((x * folded.numpy()).sum()), rel_tol=1e-12)


def test_course_conv_is_unchanged():
    """nn.Conv stays the course's: 'same' padding k // 2 and a (k, k, in, out) weight."""
    layer = nn.Conv(3, 4, 5, stride=2)
    assert layer.padding == 2 and layer.weight.shape == (5, 5, 3, 4)
    assert layer(nd(rand(1, 3, 9, 9), "float32")).shape == (1, 4, 5, 5)


def test_new_layers_compile_to_the_eager_numbers():
    """A training step through Conv1d, GELU, the three poolings and CrossEntropyLoss (ignored target,
    label smoothing) replays bit-identically under ndl.compile: the layers' host work (window
    geometry, masks, the targets' range check) is recordable."""
    def run(compiled):
        np.random.seed(0)
        conv, head = nn.Conv1d(2, 4, 3, padding=1), nn.Linear(12, 3)
        layers = [nn.GELU(), nn.MaxPool2d((1, 2), padding=(0, 1)),
                  nn.AvgPool2d((1, 3), 1, (0, 1), count_include_pad=False), nn.AdaptiveAvgPool2d((1, 3))]
        params = conv.parameters() + head.parameters()
        opt, loss_fn = ndl.optim.Adam(params, lr=1e-2), nn.CrossEntropyLoss(label_smoothing=0.1)

        def step(x, y):
            opt.reset_grad()
            h = layers[0](conv(x)).reshape((4, 4, 1, 9))
            for layer in layers[1:]:
                h = layer(h)
            loss = loss_fn(head(h.reshape((4, 12))), y)
            loss.backward()
            opt.step()
            return loss

        step = ndl.compile(step, fuse=False) if compiled else step
        r = np.random.RandomState(1)
        batches = [(ndl.Tensor(r.randn(4, 2, 9).astype(np.float32), requires_grad=False),
                    ndl.Tensor(np.array([0, 2, -100, 1]), dtype="int64")) for _ in range(3)]
        return np.array([step(*batches[i % 3]).numpy() for i in range(12)])

    eager = run(False)
    np.testing.assert_array_equal(run(True), eager)
    assert eager[-1] < eager[0]


# --------------------------------------------------------------------------- errors

def _x(*shape, dtype="float32"):
    return ndl.Tensor(np.zeros(shape), dtype=dtype)


def _ids(*values):
    return ndl.Tensor(np.array(values), dtype="int64")


ERRORS = [  # (call, exception, part of the message)
    (lambda: F.max_pool2d(_x(3, 4), 2), ValueError, r"\(N, C, H, W\)"),
    (lambda: F.max_pool2d(_x(1, 1, 4, 4), 5), ValueError, "larger than the padded input"),
    (lambda: F.max_pool2d(_x(1, 1, 4, 4), 3, padding=2), ValueError, "at most half"),
    (lambda: F.avg_pool2d(_x(1, 1, 4, 4), 2, stride=0), ValueError, "stride >= 1"),
    (lambda: F.avg_pool2d(_x(1, 1, 4, 4), 2, padding=-1), ValueError, "padding >= 0"),
    (lambda: F.max_pool2d(_x(1, 1, 4, 4, dtype="int64"), 2), TypeError, "float"),
    (lambda: nn.MaxPool2d(2, padding=3), ValueError, "at most half"),
    (lambda: nn.AvgPool2d(0), ValueError, "kernel_size >= 1"),
    (lambda: F.adaptive_avg_pool2d(_x(1, 4, 4), 0), ValueError, "positive"),
    (lambda: F.adaptive_avg_pool2d(_x(4, 4), 1), ValueError, r"\(N, C, H, W\)"),
    (lambda: F.conv2d(_x(1, 3, 5, 5), _x(4, 2, 3, 3)), ValueError, r"\(Cout, 3, KH, KW\)"),
    (lambda: F.conv2d(_x(1, 3, 2, 5), _x(4, 3, 3, 3)), ValueError, "larger than the padded input"),
    (lambda: F.conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), stride=0), ValueError, "stride >= 1"),
    (lambda: F.conv2d(_x(1, 3, 5, 5), _x(4, 3, 3, 3), _x(3)), ValueError, "bias of shape"),
    (lambda: F.conv1d(_x(1, 3, 5, 5), _x(4, 3, 3)), ValueError, r"\(N, C, L\)"),
    (lambda: F.conv1d(_x(2, 3, 5), _x(4, 2, 3)), ValueError, r"\(Cout, 3, K\)"),
    (lambda: F.conv1d(_x(2, 3, 2), _x(4, 3, 5), padding=1), ValueError, "larger than the padded input"),
    (lambda: F.conv1d(_x(2, 3, 5), _x(4, 3, 3), padding=-1), ValueError, "padding >= 0"),
    (lambda: nn.Conv1d(3, 4, 3)(_x(2, 2, 9)), ValueError, r"\(N, 3, L\)"),
    (lambda: nn.Conv1d(3, 4, 3, stride=0), ValueError, "stride >= 1"),
    (lambda: nn.Conv1d(3, 4, (3, 3)), TypeError, "kernel_size"),
    (lambda: F.linear(_x(2, 5), _x(5, 3)), ValueError, r"\(out, in\)"),
    (lambda: F.softmax(_x(2, 3), 2), ValueError, "out of range"),
    (lambda: F.gelu(_x(2, 3), approximate="erf"), ValueError, "approximate"),
    (lambda: nn.GELU("fast"), ValueError, "approximate"),
    (lambda: F.mse_loss(_x(2, 3), _x(3, 2)), ValueError, "differ"),
    (lambda: F.mse_loss(_x(2, 3), _x(2, 3), reduction="avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(_x(2, 3), _ids(0, 3)), ValueError, "out of range for 3 classes"),
    (lambda: F.cross_entropy(_x(2, 3), _ids(0, -1)), ValueError, "out of range"),
    (lambda: F.cross_entropy(_x(2, 3), _ids(0, 1, 2)), ValueError, r"expected \(2,\)"),
    (lambda: F.cross_entropy(_x(2, 3), _x(2)), ValueError, "probability targets"),
    (lambda: F.cross_entropy(_x(2, 3), _ids(0, 1), label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda: nn.CrossEntropyLoss(reduction="mean ")(_x(2, 3), _ids(0, 1)), ValueError, "reduction"),
    (lambda: F.batch_norm(_x(1, 3), None, None, training=True), ValueError, "more than one value"),
    (lambda: F.batch_norm(_x(4, 3), None, None), ValueError, "running_mean"),
    (lambda: F.batch_norm(_x(4, 3), _x(2), _x(3)), ValueError, "running_mean of shape"),
    (lambda: F.layer_norm(_x(4, 3), (4,)), ValueError, "normalized_shape"),
    (lambda: F.embedding(_ids(0, 7), _x(7, 2)), ValueError, "out of range"),
    (lambda: F.one_hot(_ids(0, 3), 3), ValueError, "out of range"),
    (lambda: F.dropout(_x(2), 1.5), ValueError, "probability"),
    (lambda: ops.max_pool2d(_x(1, 4, 4), 2), ValueError, "NHWC"),
    (lambda: ops.erf(_ids(1)), TypeError, "float"),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=range(len(ERRORS)))
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()
