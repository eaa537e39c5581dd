"""nn.Conv2d and F.conv2d against PyTorch: forward values and the gradients of input, weight
and bias over a grid of kernels, strides, paddings (ints, pairs, 'same', 'valid'),
dilations, groups (1, 2, depthwise), with and without bias, batched and unbatched, in
float32 and float64 on the cpu and cpu_numpy devices; the ops.conv family's uneven padding
and second derivatives; PyTorch's initialisation replayed from numpy's RNG; the padding
modes; bad input.

The reference is always torch in float64 on the same (rounded) inputs. The tolerance is
derived from the sums of |products| that make each entry: a sum of n products computed
in any order is within about n * eps * sum|products| of the exact value (eps of the dtype),
so `(n + 2) * eps * magnitude` cannot fail for a correct result in either library's
summation order, while a wrong tap, group or padding is off by a sizeable part of the
magnitude.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import needle as ndl
import needle.nn as nn
import needle.nn.functional as F
from needle import ops

torch.set_num_threads(1)

# torch notes that its 'same' padding of an even kernel copies the input: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]
DTYPES = ["float32", "float64"]

# name: (input shape, Cout, kernel_size, stride, padding, dilation, groups, bias); Cin = 4 throughout,
# unbatched inputs are (C, H, W). Every value of the grid (kernel 1 / 3 / (3, 5), stride 1 / 2 / (2, 1),
# padding 0 / 1 / (1, 2) / 'same' / 'valid', dilation 1 / 2, groups 1 / 2 / Cin, bias, batch) appears
# several times, next to different others; the even kernels check 'same''s uneven split.
GRID = {
    "k1": ((2, 4, 9, 11), 6, 1, 1, 0, 1, 1, True),
    "k3-p1-unbatched": ((4, 9, 11), 6, 3, 1, 1, 1, 1, False),
    "k3x5-s2x1-p1x2": ((2, 4, 9, 11), 6, (3, 5), (2, 1), (1, 2), 1, 1, True),
    "k3-s2-d2-g2": ((2, 4, 9, 11), 6, 3, 2, 0, 2, 2, True),
    "k3-same-depthwise": ((2, 4, 9, 11), 4, 3, 1, "same", 1, 4, True),
    "k3x5-same-d2-g2-unbatched": ((4, 9, 11), 6, (3, 5), 1, "same", 2, 2, False),
    "k3x5-s2x1-valid-d2": ((2, 4, 9, 11), 6, (3, 5), (2, 1), "valid", 2, 1, True),
    "k1-s2-p1-depthwise": ((2, 4, 9, 11), 8, 1, 2, 1, 1, 4, False),
    "k3-s2x1-p1x2-d2-depthwise-unbatched": ((4, 9, 11), 8, 3, (2, 1), (1, 2), 2, 4, True),
    "k3x5-s2-g2": ((2, 4, 9, 11), 6, (3, 5), 2, 0, 1, 2, True),
    "k3-valid-g2": ((2, 4, 9, 11), 6, 3, 1, "valid", 1, 2, False),
    "k3-s2x1-p1-unbatched": ((4, 9, 11), 6, 3, (2, 1), 1, 1, 1, True),
    "k1-same-d2": ((2, 4, 9, 11), 6, 1, 1, "same", 2, 1, True),
    "k2x4-same": ((2, 4, 9, 11), 6, (2, 4), 1, "same", 1, 1, True),  # totals 1 and 3: one more after
    "k4-same-g2-unbatched": ((4, 9, 11), 6, 4, 1, "same", 1, 2, True),
    "k2-same-d2-depthwise": ((2, 4, 9, 11), 4, 2, 1, "same", 2, 4, False),  # total 2: even again
    "k3x5-s2-p1x2-d2-g2": ((2, 4, 9, 11), 6, (3, 5), 2, (1, 2), 2, 2, True),
    "k3-s2x1-p1-d2-tight": ((1, 4, 5, 6), 6, 3, (2, 1), 1, 2, 1, True),  # the dilated kernel just fits
}


def _data(shape, seed, dtype):
    """Standard normal values rounded to `dtype`, returned as float64 (the values both libraries see)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype).astype(np.float64)


def _torch_conv(x, w, b, stride, padding, dilation, groups):
    return TF.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _within(got, ref, magnitude, terms, dtype, what):
    """|got - ref| <= (terms + 2) * eps * magnitude entrywise (see the module docstring)."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    eps = np.finfo(dtype).eps
    bound = (terms + 2) * eps * magnitude + np.finfo(dtype).tiny
    excess = np.abs(got - ref) - bound
    assert int((excess > 0).sum()) == 0, (f"{what}: {int((excess > 0).sum())} entries off by more than the bound, worst "
                                 f"|diff| {np.abs(got - ref).max()} with bound {bound.flat[np.argmax(excess)]}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(GRID))
def test_conv2d_matches_torch(name, dtype, device):
    shape, cout, kernel, stride, padding, dilation, groups, bias = GRID[name]
    cin = shape[-3]
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    seed = sorted(GRID).index(name)
    a = _data(shape, 3 * seed, dtype)
    wa = _data((cout, cin // groups) + k, 3 * seed + 1, dtype) * 0.5
    ba = _data((cout,), 3 * seed + 2, dtype) if bias else None
    args = (stride, padding, dilation, groups)

    x = ndl.Tensor(a, device=device, dtype=dtype, requires_grad=True)
    w = ndl.Tensor(wa, device=device, dtype=dtype, requires_grad=True)
    b = ndl.Tensor(ba, device=device, dtype=dtype, requires_grad=True) if bias else None
    out = F.conv2d(x, w, b, *args)
    assert out.dtype == dtype

    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(wa, requires_grad=True)
    tb = torch.tensor(ba, requires_grad=True) if bias else None
    ref = _torch_conv(tx, tw, tb, *args)
    assert out.shape == tuple(ref.shape)

    ga = _data(ref.shape, 100 + seed, dtype)
    out.backward(ndl.Tensor(ga, device=device, dtype=dtype))
    ref.backward(torch.tensor(ga))

    # magnitudes: the same sums with every factor replaced by its absolute value
    absx, absw, absg = torch.tensor(np.abs(a)), torch.tensor(np.abs(wa)), torch.tensor(np.abs(ga))
    mag_out = _torch_conv(absx, absw, torch.tensor(np.abs(ba)) if bias else None, *args).numpy()
    probe_x = torch.zeros(a.shape, dtype=torch.float64, requires_grad=True)
    probe_w = torch.zeros(wa.shape, dtype=torch.float64, requires_grad=True)
    (mag_x,) = torch.autograd.grad((_torch_conv(probe_x, absw, None, *args) * absg).sum(), probe_x)
    (mag_w,) = torch.autograd.grad((_torch_conv(absx, probe_w, None, *args) * absg).sum(), probe_w)
    spatial = int(np.prod(ref.shape[-2:])) * (1 if len(shape) == 3 else shape[0])
    taps = k[0] * k[1]

    _within(out.numpy(), ref.detach().numpy(), mag_out, taps * cin // groups + 1, dtype, "forward")
    _within(x.grad.numpy(), tx.grad.numpy(), mag_x.numpy(), taps * cout // groups, dtype, "input gradient")
    _within(w.grad.numpy(), tw.grad.numpy(), mag_w.numpy(), spatial, dtype, "weight gradient")
    if bias:
        mag_b = absg.sum(dim=tuple(d for d in range(absg.ndim) if d != absg.ndim - 3)).numpy()
        _within(b.grad.numpy(), tb.grad.numpy(), mag_b, spatial, dtype, "bias gradient")


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_bound_catches_a_wrong_convolution(dtype):
    """The tolerance is no blanket: torch's result with the kernel flipped, the rows shifted by one
    or two output channels swapped is far outside it."""
    a, k = _data((2, 4, 9, 11), 0, dtype), _data((6, 2, 3, 3), 1, dtype)
    x, w = torch.tensor(a), torch.tensor(k)
    ref = TF.conv2d(x, w, groups=2, padding=1).numpy()
    mag = TF.conv2d(x.abs(), w.abs(), groups=2, padding=1).numpy()
    wrong = [TF.conv2d(x, w.flip(-1), groups=2, padding=1).numpy(),
             TF.conv2d(x, w, groups=2, padding=(2, 1)).numpy()[:, :, :-2],  # shifted down a row
             TF.conv2d(x, w[torch.tensor([1, 0, 2, 3, 4, 5])], groups=2, padding=1).numpy()]
    for other in wrong:
        with pytest.raises(AssertionError, match="off by more than the bound"):
            _within(other, ref, mag, 3 * 3 * 2 + 1, dtype, "forward")
    _within(ref.astype(dtype), ref, mag, 3 * 3 * 2 + 1, dtype, "forward")  # rounding to dtype is within


def test_the_grid_covers_every_setting():
    """Each value the grid promises appears in it (a guard against editing it away)."""
    values = {field: {repr(case[i]) for case in GRID.values()} for i, field in
              [(2, "kernel"), (3, "stride"), (4, "padding"), (5, "dilation"), (6, "groups"), (7, "bias")]}
    assert {"1", "3", "(3, 5)"} <= values["kernel"]
    assert {"1", "2", "(2, 1)"} <= values["stride"]
    assert {"0", "1", "(1, 2)", "'same'", "'valid'"} <= values["padding"]
    assert {"1", "2"} <= values["dilation"] and {"1", "2", "4"} <= values["groups"]
    assert values["bias"] == {"True", "False"}
    assert {len(case[0]) for case in GRID.values()} == {3, 4}


# --------------------------------------------------------------------------- the op family

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pads,stride,dilation,groups", [
    (((0, 1), (2, 0)), 1, 1, 1), (((1, 2), (0, 3)), (2, 1), (2, 1), 2), (((2, 1), (1, 1)), 2, 2, 4)], ids=str)
def test_op_uneven_padding_is_torchs_pad_then_conv(pads, stride, dilation, groups, device):
    """ops.conv's ((top, bottom), (left, right)) padding on NHWC with a (KH, KW, Cin/G, Cout) kernel."""
    a, k = np.random.default_rng(1).standard_normal((2, 7, 8, 4)), np.random.default_rng(2).standard_normal(
        (3, 2, 4 // groups, 4))
    x, w = ndl.Tensor(a, device=device, dtype="float64"), ndl.Tensor(k, device=device, dtype="float64")
    out = ops.conv(x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    (top, bottom), (left, right) = pads
    tx, tk = torch.tensor(a, requires_grad=True), torch.tensor(k, requires_grad=True)
    padded = TF.pad(tx.permute(0, 3, 1, 2), (left, right, top, bottom))
    ref = TF.conv2d(padded, tk.permute(3, 2, 0, 1), stride=stride, dilation=dilation, groups=groups).permute(0, 2, 3, 1)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(3).standard_normal(ref.shape)
    out.backward(ndl.Tensor(g, device=device, dtype="float64"))
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tk.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, dilation=2, groups=2),
                                dict(stride=1, padding="same", dilation=(2, 1), groups=4),
                                dict(stride=(1, 2), padding=(0, 2), dilation=1, groups=1)], ids=str)
def test_second_derivatives_match_torch(kw, device):
    """The gradients are themselves differentiable (ConvInputGrad / ConvWeightGrad carry the
    dilation, groups and uneven padding): the gradient of <grad_x, V> + <grad_w, U>."""
    rng = np.random.default_rng(5)
    a, k = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((4, 4 // kw["groups"], 2, 3))
    x, w = ndl.Tensor(a, device=device, dtype="float64"), ndl.Tensor(k, device=device, dtype="float64")
    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(k, requires_grad=True)
    out, ref = F.conv2d(x, w, **kw) ** 2, TF.conv2d(tx, tw, **kw) ** 2
    g = rng.standard_normal(ref.shape)
    out.backward(ndl.Tensor(g, device=device, dtype="float64"))
    gx, gw = x.grad, w.grad
    tgx, tgw = torch.autograd.grad((ref * torch.tensor(g)).sum(), (tx, tw), create_graph=True)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw.numpy(), tgw.detach().numpy(), rtol=1e-10, atol=1e-10)
    v, u = rng.standard_normal(a.shape), rng.standard_normal(k.shape)
    x.grad = w.grad = None
    ((gx * ndl.Tensor(v, device=device, dtype="float64")).sum()
     + (gw * ndl.Tensor(u, device=device, dtype="float64")).sum()).backward()
    sx, sw = torch.autograd.grad((tgx * torch.tensor(v)).sum() + (tgw * torch.tensor(u)).sum(), (tx, tw))
    np.testing.assert_allclose(x.grad.numpy(), sx.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(w.grad.numpy(), sw.numpy(), rtol=1e-9, atol=1e-9)


def test_finite_differences_of_a_grouped_dilated_conv():
    """The gradient against central differences too (not only torch), float64."""
    rng = np.random.default_rng(8)
    a, k = rng.standard_normal((1, 4, 6, 7)), rng.standard_normal((2, 2, 3, 2))
    g = rng.standard_normal((1, 2, 2, 8))  # Ho = 6 - 2 * (3 - 1), Wo = 7 + 2 - 1

    def loss(a_, k_):
        out = F.conv2d(ndl.Tensor(a_, dtype="float64"), ndl.Tensor(k_, dtype="float64"), stride=(1, 1),
                       padding=(0, 1), dilation=(2, 1), groups=2)
        return float((out.numpy() * g).sum())

    x, w = ndl.Tensor(a, dtype="float64"), ndl.Tensor(k, dtype="float64")
    out = F.conv2d(x, w, stride=1, padding=(0, 1), dilation=(2, 1), groups=2)
    assert out.shape == g.shape
    out.backward(ndl.Tensor(g, dtype="float64"))
    h = 1e-6
    for array, grad in ((a, x.grad.numpy()), (k, w.grad.numpy())):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            up, down = array.copy(), array.copy()
            up[i] += h
            down[i] -= h
            numeric[i] = (loss(up, k) - loss(down, k) if array is a else loss(a, up) - loss(a, down)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- the module

@pytest.mark.parametrize("kw,fan_in", [(dict(kernel_size=3), 4 * 9), (dict(kernel_size=(3, 5), groups=2), 2 * 15),
                                       (dict(kernel_size=(2, 1), groups=4, bias=False), 1 * 2)], ids=str)
def test_initialisation_is_torchs_bound_drawn_from_numpys_rng(kw, fan_in):
    """U(-b, b), b = 1 / sqrt(Cin / groups * KH * KW) for weight and bias (torch's
    kaiming_uniform(a=sqrt(5)) and its bias rule), drawn weight first, then the bias, from numpy's
    global RNG; the weight has torch's layout (Cout, Cin / groups, KH, KW)."""
    np.random.seed(11)
    layer = nn.Conv2d(4, 8, **kw)
    after = np.random.rand()  # the draw that follows the layer's
    groups, bias = kw.get("groups", 1), kw.get("bias", True)
    k = kw["kernel_size"] if isinstance(kw["kernel_size"], tuple) else (kw["kernel_size"],) * 2
    bound = 1 / math.sqrt(fan_in)
    np.random.seed(11)
    weight = np.random.rand(8, 4 // groups, *k) * 2 * bound - bound
    np.testing.assert_allclose(layer.weight.numpy(), weight.astype(np.float32), rtol=1e-6, atol=1e-7)
    if bias:
        np.testing.assert_allclose(layer.bias.numpy(), (np.random.rand(8) * 2 * bound - bound).astype(np.float32),
                                   rtol=1e-6, atol=1e-7)
    else:
        assert layer.bias is None and "bias" not in layer.state_dict()
    assert np.random.rand() == after  # nothing else drawn
    assert layer.weight.dtype == "float32" and layer.weight.shape == (8, 4 // groups) + k
    ref = torch.nn.Conv2d(4, 8, **kw)
    assert tuple(ref.weight.shape) == layer.weight.shape
    # torch's bound: gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)), a = sqrt(5)
    assert math.isclose(math.sqrt(2 / (1 + 5)) * math.sqrt(3 / fan_in), bound)
    assert math.isclose(ref.weight.shape[1] * ref.weight.shape[2] * ref.weight.shape[3], fan_in)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=(2, 1), padding="valid", dilation=2, groups=2),
    dict(kernel_size=4, padding="same", groups=4, bias=False),
    dict(kernel_size=3, padding=2, padding_mode="reflect"),
    dict(kernel_size=(2, 3), padding="same", padding_mode="circular", groups=2),
    dict(kernel_size=3, stride=2, padding=(1, 3), padding_mode="replicate"),
    dict(kernel_size=(3, 2), padding=(2, 1), dilation=(1, 2), padding_mode="reflect"),
], ids=str)
@pytest.mark.parametrize("batched", [True, False], ids=["NCHW", "CHW"])
def test_module_with_torchs_state_dict_gives_torchs_outputs_and_gradients(kw, batched):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(4, 8, dtype=torch.float64, **kw)
    layer = nn.Conv2d(4, 8, dtype="float64", **kw)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})  # loads as it is
    shape = (2, 4, 7, 9) if batched else (4, 7, 9)
    a = np.random.default_rng(4).standard_normal(shape)
    x, tx = ndl.Tensor(a, dtype="float64"), torch.tensor(a, requires_grad=True)
    out, tout = layer(x), ref(tx)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(5).standard_normal(tout.shape)
    out.backward(ndl.Tensor(g, dtype="float64"))
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(getattr(layer, name).grad.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_module_keeps_pytorchs_attributes_and_the_course_conv_is_untouched():
    layer = nn.Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), groups=2)
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 5), (2, 2), (1, 2), (2, 1))
    assert (layer.groups, layer.padding_mode, layer.in_channels, layer.out_channels) == (2, "zeros", 4, 6)
    assert nn.Conv2d(4, 6, 3, padding="same").padding == "same"
    assert "Conv2d" in nn.__all__ and nn.Conv2d is nn.nn_conv.Conv2d
    course = nn.Conv(3, 4, 5, stride=2)
    assert course.padding == 2 and course.weight.shape == (5, 5, 3, 4)
    params = [p.shape for p in nn.Conv2d(3, 5, 2, bias=False).parameters()]
    assert params == [(5, 3, 2, 2)]


def test_float64_and_device():
    layer = nn.Conv2d(2, 3, 3, device=ndl.cpu_numpy(), dtype="float64")
    assert layer.weight.dtype == "float64" and layer.bias.dtype == "float64"
    assert layer.weight.device == ndl.cpu_numpy()
    out = layer(ndl.Tensor(np.ones((1, 2, 4, 4)), device=ndl.cpu_numpy(), dtype="float64"))
    assert out.shape == (1, 3, 2, 2) and out.dtype == "float64"


def test_a_training_step_compiles_to_the_eager_numbers():
    """Grouped, dilated, 'same' and reflect-padded convolutions replay bit-identically under ndl.compile."""
    def run(compiled):
        np.random.seed(0)
        convs = [nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect"),
                 nn.Conv2d(4, 4, (2, 3), stride=(2, 1), dilation=2, groups=4, padding=(1, 2))]
        head = nn.Linear(4 * 3 * 6, 3)
        params = [p for m in convs + [head] for p in m.parameters()]
        opt, loss_fn = ndl.optim.Adam(params, lr=1e-2), nn.CrossEntropyLoss()

        def step(x, y):
            opt.reset_grad()
            h = convs[1](convs[0](x).relu())
            loss = loss_fn(head(h.reshape((2, -1))), y)
            loss.backward()
            opt.step()
            return loss

        step = ndl.compile(step, fuse=False) if compiled else step
        r = np.random.RandomState(1)
        batches = [(ndl.Tensor(r.randn(2, 2, 6, 6).astype(np.float32), requires_grad=False),
                    ndl.Tensor(np.array([0, 2]), dtype="int64")) for _ in range(2)]
        return np.array([step(*batches[i % 2]).numpy() for i in range(8)])

    eager = run(False)
    np.testing.assert_array_equal(run(True), eager)
    assert eager[-1] < eager[0]


# --------------------------------------------------------------------------- errors

def _x(*shape, dtype="float32"):
    return ndl.Tensor(np.zeros(shape), dtype=dtype)


ERRORS = [  # (call, exception, part of the message)
    (lambda: nn.Conv2d(3, 4, 3)(_x(2, 2, 5, 5)), ValueError, r"\(N, 3, H, W\) or \(3, H, W\), got \(2, 2, 5, 5\)"),
    (lambda: nn.Conv2d(3, 4, 3)(_x(3, 5, 5, 2)), ValueError, r"got \(3, 5, 5, 2\)"),
    (lambda: nn.Conv2d(3, 4, 3)(_x(5, 5)), ValueError, r"got \(5, 5\)"),
    (lambda: nn.Conv2d(3, 4, 3)(_x(1, 2, 3, 5, 5)), ValueError, r"got \(1, 2, 3, 5, 5\)"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels=3 and out_channels=4 must both be divisible by "
                                                       "groups=2"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError, "out_channels=3.*groups=2"),
    (lambda: nn.Conv2d(3, 4, 5)(_x(1, 3, 4, 9)), ValueError, r"kernel \(5, 5\) is larger than the padded input "
                                                             r"\(input \(1, 3, 4, 9\)"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=3)(_x(1, 3, 6, 9)), ValueError, r"dilated to \(7, 7\).*\(1, 3, 6, 9\)"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "'same' is not supported for strided"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, "invalid padding string 'full'"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, "padding >= 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode must be one of"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, dilation=0), ValueError, "dilation"),
    (lambda: nn.Conv2d(3, 4, 3, stride=(1, 0)), ValueError, "stride"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), TypeError, "kernel_size must be an int or 2 ints"),
    (lambda: nn.Conv2d(3, 4, 2.5), TypeError, "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, groups=1.0), TypeError, "groups must be an int"),
    (lambda: nn.Conv2d(3, 4, 3, padding=3, padding_mode="reflect")(_x(1, 3, 3, 8)), ValueError,
     r"'reflect' needs padding < the input size, got padding \(3, 3\) for size 3"),
    (lambda: nn.Conv2d(3, 4, 3, padding=4, padding_mode="circular")(_x(1, 3, 3, 8)), ValueError,
     "'circular' needs padding <= the input size"),
    (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), groups=2), ValueError,
     r"weight of shape \(6, 4, 3, 3\) for input of shape \(1, 4, 5, 5\) with groups=2 \(expected \(Cout, 2, KH, KW\)\)"),
    (lambda: F.conv2d(_x(1, 3, 5, 5), _x(6, 1, 3, 3), groups=2), ValueError,
     r"\(1, 3, 5, 5\) has 3 channels, not divisible by groups=2"),
    (lambda: F.conv2d(_x(1, 4, 5, 5), _x(5, 2, 3, 3), groups=2), ValueError, "5 output channels, not divisible"),
    (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), groups=0), ValueError, "groups >= 1"),
    (lambda: F.conv2d(_x(4, 5, 5), _x(6, 4, 3, 3), _x(4)), ValueError, r"bias of shape \(4,\) for 6 output"),
    (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), stride=2, padding="same"), ValueError, "strided"),
    (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), dilation=(1, 3)), ValueError,
     r"kernel \(3, 3\) \(dilated to \(3, 7\)\) is larger than the padded input"),
    (lambda: F.conv2d(_x(1, 4, 5, 5, dtype="int64"), _x(6, 4, 3, 3)), TypeError, "float"),
    (lambda: ops.conv(_x(1, 5, 5, 4), _x(3, 3, 2, 6), groups=3), ValueError,
     r"input has 4 channels \(shape \(1, 5, 5, 4\)\), kernel expects 6 .*groups=3"),
    (lambda: ops.conv(_x(1, 5, 5, 4), _x(3, 3, 2, 5), groups=2), ValueError, "5 output channels.*groups=2"),
    (lambda: ops.conv(_x(1, 5, 5, 4), _x(3, 3, 4, 5), dilation=0), ValueError, "dilation >= 1"),
    (lambda: ops.conv(_x(1, 5, 5, 4), _x(3, 3, 4, 5), padding=((1, -1), (0, 0))), ValueError, "padding >= 0"),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=range(len(ERRORS)))
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()
