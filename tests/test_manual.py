"""needle.manual: hand-written backward passes and the gradient-comparison tools.

Every manual layer is run forward and backward with a random upstream gradient
(so the incoming adjoint is not all ones) and its gradients are compared with
needle's autograd on the same formula and with PyTorch's autograd. Parameters
are set to random non-standard values (not ones/zeros) so that a wrong
backward pass cannot hide behind a trivial initialisation.
"""
import importlib.util
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
from needle.autograd import TensorOp
from needle.manual import (
    CmpResult,
    ManualBatchNorm1d,
    ManualCrossEntropy,
    ManualEmbedding,
    ManualFlatten,
    ManualLinear,
    ManualSequential,
    ManualTanh,
    cmp,
    compare_table,
    gradcheck,
)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "manual_linear.py"
DTYPES = ["float32", "float64"]
# elementwise tolerance relative to the largest entry of the expected array
REL = {"float32": 2e-5, "float64": 1e-12}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def data(*shape, seed=0, scale=1.0, shift=0.0):
    """Test data from a private generator (never numpy's global RNG)."""
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


def arr(x):
    if isinstance(x, ndl.Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def close(actual, expected, dtype, scale=None):
    """Equal up to rounding: rtol, plus an atol relative to `scale` (default: the largest |expected|)."""
    actual, expected = arr(actual), arr(expected)
    assert actual.shape == expected.shape
    if scale is None:
        scale = max(float(np.max(np.abs(expected))), 1e-30) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=REL[dtype], atol=REL[dtype] * scale)


def nd(a, dtype, requires_grad=True):
    return ndl.Tensor(np.asarray(a), dtype=dtype, requires_grad=requires_grad)


def th(a, dtype, requires_grad=True):
    return torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[dtype], requires_grad=requires_grad)


def set_param(layer, name, value):
    setattr(layer, name, ndl.Tensor(value, dtype=layer.dtype, requires_grad=False))


# --- ManualLinear ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("lead", [(7,), (1,), (3, 5), (2, 3, 1)], ids=["odd-batch", "batch1", "3d", "4d"])
def test_linear_matches_autograd_and_torch(lead, bias, dtype):
    D, E = 5, 4
    layer = ManualLinear(D, E, bias=bias, dtype=dtype)
    set_param(layer, "W", data(D, E, seed=1))
    if bias:
        set_param(layer, "b", data(E, seed=2))
    x, g = data(*lead, D, seed=3), data(*lead, E, seed=4)

    y = layer.forward(x)
    expected_y = x @ layer.W.numpy() + (layer.b.numpy() if bias else 0)
    close(y, expected_y, dtype)
    dx = layer.backward(g)

    # needle autograd
    xn, Wn = nd(x, dtype), nd(layer.W.numpy(), dtype)
    bn = nd(layer.b.numpy(), dtype) if bias else None
    yn = xn @ Wn + bn if bias else xn @ Wn
    (yn * nd(g, dtype, False)).sum().backward()
    # torch autograd
    xt, Wt = th(x, dtype), th(layer.W.numpy(), dtype)
    bt = th(layer.b.numpy(), dtype) if bias else None
    yt = xt @ Wt + bt if bias else xt @ Wt
    yt.backward(th(g, dtype, False))

    for ref_x, ref_W in [(xn.grad, Wn.grad), (xt.grad, Wt.grad)]:
        close(dx, ref_x, dtype)
        close(layer.W_grad, ref_W, dtype)
    if bias:
        close(layer.b_grad, bn.grad, dtype)
        close(layer.b_grad, bt.grad, dtype)
    assert dx.shape == x.shape and layer.W_grad.shape == (D, E)
    assert (layer.b_grad is None) == (not bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_a0_loss_sum_of_squares(dtype):
    """The A0 demo: Y = X @ W with X (B, H, D), loss = (Y**2).sum(), upstream gradient 2Y."""
    B, H, D, E = 3, 5, 6, 4
    layer = ManualLinear(D, E, dtype=dtype)
    x = data(B, H, D, seed=7)
    y = layer.forward(x)
    dx = layer.backward(2 * y)
    xt, Wt = th(x, dtype), th(layer.W.numpy(), dtype)
    ((xt @ Wt) ** 2).sum().backward()
    close(dx, xt.grad, dtype)
    close(layer.W_grad, Wt.grad, dtype)


def test_linear_accepts_needle_tensors_and_overwrites_gradients():
    layer = ManualLinear(3, 2, dtype="float64")
    x = nd(data(4, 3, seed=1), "float64")
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    first = layer.W_grad.numpy()
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    np.testing.assert_array_equal(layer.W_grad.numpy(), first)  # overwritten, not accumulated
    assert x.grad is None  # the manual pass never touches autograd
    assert not layer.W_grad.requires_grad


def test_linear_bad_inputs():
    layer = ManualLinear(5, 3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\).*\(2, 4\)"):
        layer.forward(np.ones((2, 4)))
    layer.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        layer.backward(np.ones((2, 4)))
    with pytest.raises(TypeError, match="float64"):
        layer.forward(ndl.Tensor(np.ones((2, 5)), dtype="float64"))


# --- ManualTanh ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3), (1, 4), (2, 3, 5)])
def test_tanh_matches_autograd_and_torch(shape, dtype):
    x, g = data(*shape, seed=1, scale=1.5), data(*shape, seed=2)
    layer = ManualTanh(dtype=dtype)
    y = layer.forward(nd(x, dtype, requires_grad=False))
    dx = layer.backward(g)
    close(y, np.tanh(x), dtype)

    xn = nd(x, dtype)
    (ndl.ops.tanh(xn) * nd(g, dtype, False)).sum().backward()
    xt = th(x, dtype)
    torch.tanh(xt).backward(th(g, dtype, False))
    close(dx, xn.grad, dtype)
    close(dx, xt.grad, dtype)
    assert y.dtype == dtype and dx.dtype == dtype


# --- ManualBatchNorm1d ------------------------------------------------------------------------


def unfused_batchnorm(x, gain, bias, eps, lib):
    """makemore's step-by-step batchnorm (Bessel's correction), for needle or torch tensors."""
    n = x.shape[0]
    if lib == "torch":
        mean = x.sum(0, keepdim=True) / n
        diff = x - mean
        var = (diff ** 2).sum(0, keepdim=True) / (n - 1)
    else:
        mean = x.sum((0,), keepdims=True) / n
        diff = x - mean
        var = (diff ** 2).sum((0,), keepdims=True) / (n - 1)
    xhat = diff * (var + eps) ** -0.5
    return gain * xhat + bias


def random_bn(dim, dtype, seed=0):
    layer = ManualBatchNorm1d(dim, dtype=dtype)
    set_param(layer, "gain", data(dim, seed=seed, scale=0.1, shift=1.0))
    set_param(layer, "bias", data(dim, seed=seed + 1, scale=0.1))
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [3, 7, 32])
def test_batchnorm_fused_backward_matches_unfused_autograd(n, dtype):
    dim = 5
    layer = random_bn(dim, dtype)
    x, g = data(n, dim, seed=3, scale=2.0, shift=0.5), data(n, dim, seed=4)
    y = layer.forward(x)
    dx = layer.backward(g)

    # forward: normalised with the unbiased (n-1) variance
    expected = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + layer.eps) * layer.gain.numpy() + layer.bias.numpy()
    close(y, expected, dtype)

    xn, gn, bn = nd(x, dtype), nd(layer.gain.numpy(), dtype), nd(layer.bias.numpy(), dtype)
    (unfused_batchnorm(xn, gn, bn, layer.eps, "needle") * nd(g, dtype, False)).sum().backward()
    xt, gt, bt = th(x, dtype), th(layer.gain.numpy(), dtype), th(layer.bias.numpy(), dtype)
    unfused_batchnorm(xt, gt, bt, layer.eps, "torch").backward(th(g, dtype, False))

    for ref_x, ref_gain, ref_bias in [(xn.grad, gn.grad, bn.grad), (xt.grad, gt.grad, bt.grad)]:
        close(dx, ref_x, dtype)
        close(layer.gain_grad, ref_gain, dtype)
        close(layer.bias_grad, ref_bias, dtype)


def test_batchnorm_backward_uses_bessels_correction():
    """The fused formula differs from the gradient of the biased (divide by n) batchnorm."""
    n, dim = 6, 3
    layer = random_bn(dim, "float64")
    x, g = data(n, dim, seed=5), data(n, dim, seed=6)
    layer.forward(x)
    dx = layer.backward(g).numpy()
    xt, gt = th(x, "float64"), th(layer.gain.numpy(), "float64")
    diff = xt - xt.mean(0, keepdim=True)
    biased = gt * diff / torch.sqrt((diff ** 2).mean(0, keepdim=True) + layer.eps)
    biased.backward(th(g, "float64", False))
    assert not np.allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-6)


def test_batchnorm_running_stats_and_eval_mode():
    n, dim, m = 9, 4, 0.1
    layer = random_bn(dim, "float64")
    x = data(n, dim, seed=7, scale=3.0, shift=2.0)
    layer.forward(x)
    close(layer.running_mean, m * x.mean(0), "float64")
    close(layer.running_var, (1 - m) + m * x.var(0, ddof=1), "float64")

    layer.eval()
    x2, g = data(1, dim, seed=8), data(1, dim, seed=9)  # one row is fine in eval mode
    y = layer.forward(x2)
    dx = layer.backward(g)
    xn, gn, bn = nd(x2, "float64"), nd(layer.gain.numpy(), "float64"), nd(layer.bias.numpy(), "float64")
    mean, var = nd(layer.running_mean.numpy(), "float64", False), nd(layer.running_var.numpy(), "float64", False)
    yn = gn * (xn - mean) * (var + layer.eps) ** -0.5 + bn
    (yn * nd(g, "float64", False)).sum().backward()
    close(y, yn, "float64")
    close(dx, xn.grad, "float64")
    close(layer.gain_grad, gn.grad, "float64")
    close(layer.bias_grad, bn.grad, "float64")


def test_batchnorm_bad_inputs():
    layer = ManualBatchNorm1d(4)
    with pytest.raises(ValueError, match=r"\(n, 4\).*\(3, 5\)"):
        layer.forward(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"n-1.*\(1, 4\)"):
        layer.forward(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"\(n, 4\).*\(2, 3, 4\)"):
        layer.forward(np.ones((2, 3, 4)))


# --- ManualCrossEntropy -------------------------------------------------------------------------


def labels(n, k, seed=0):
    return np.random.default_rng(seed).integers(0, k, size=n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 3), (7, 5), (32, 27)])
def test_cross_entropy_matches_torch_and_autograd(n, k, dtype):
    z, y = data(n, k, seed=1, scale=3.0), labels(n, k, seed=2)
    ce = ManualCrossEntropy()
    loss = ce.forward(nd(z, dtype, requires_grad=False), y)
    dz = ce.backward()

    zt = th(z, dtype)
    loss_t = F.cross_entropy(zt, torch.tensor(y))
    loss_t.backward()
    assert loss.shape == ()
    close(loss, loss_t, dtype)
    close(dz, zt.grad, dtype)

    zn = nd(z, dtype)
    loss_n = (ndl.logsumexp(zn, (1,)) - zn[np.arange(n), y]).sum() / n
    loss_n.backward()
    close(loss, loss_n, dtype)
    close(dz, zn.grad, dtype)


def test_cross_entropy_is_numerically_stable():
    z = data(6, 4, seed=3) * 50 + 1e4  # exp would overflow without the max shift
    y = labels(6, 4, seed=4)
    ce = ManualCrossEntropy()
    loss = ce.forward(nd(z, "float64", False), y)
    dz = ce.backward()
    zt = th(z, "float64")
    loss_t = F.cross_entropy(zt, torch.tensor(y))
    loss_t.backward()
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(dz.numpy()))
    close(loss, loss_t, "float64")
    close(dz, zt.grad, "float64")


def test_cross_entropy_upstream_gradient_and_target_types():
    z, y = data(5, 3, seed=5), labels(5, 3, seed=6)
    zt = th(z, "float64")
    (2.5 * F.cross_entropy(zt, torch.tensor(y))).backward()
    for targets in [y, list(y), ndl.Tensor(y.astype(np.float64), dtype="float64"), torch.tensor(y)]:
        ce = ManualCrossEntropy(dtype="float64")
        ce.forward(z, targets)
        close(ce.backward(2.5), zt.grad, "float64")
        close(ce.backward(nd(2.5, "float64", False)), zt.grad, "float64")


def test_cross_entropy_bad_inputs():
    ce = ManualCrossEntropy()
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[4, 7\].*0\.\.3"):
        ce.forward(z, [0, 4, 7])
    with pytest.raises(ValueError, match=r"\[-1\]"):
        ce.forward(z, [0, -1, 2])
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        ce.forward(z, [0, 1])
    with pytest.raises(ValueError, match="integers"):
        ce.forward(z, [0.5, 1, 2])
    with pytest.raises(ValueError, match=r"\(4,\)"):
        ce.forward(np.zeros(4), [0])
    with pytest.raises(RuntimeError, match="before forward"):
        ManualCrossEntropy().backward()


# --- ManualEmbedding -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids_shape", [(9,), (4, 5), (2, 3, 2)])
def test_embedding_scatter_adds_repeated_ids(ids_shape, dtype):
    num, dim = 6, 3
    ids = np.random.default_rng(1).integers(0, num, size=ids_shape)
    ids.flat[:3] = 2  # at least three uses of row 2
    g = data(*ids_shape, dim, seed=2)
    emb = ManualEmbedding(num, dim, dtype=dtype)
    out = emb.forward(ids)
    assert emb.backward(g) is None  # integer ids have no gradient
    close(out, emb.weight.numpy()[ids], dtype)

    Wn = nd(emb.weight.numpy(), dtype)
    (Wn[ids] * nd(g, dtype, False)).sum().backward()
    Wt = th(emb.weight.numpy(), dtype)
    F.embedding(torch.tensor(ids), Wt).backward(th(g, dtype, False))
    close(emb.weight_grad, Wn.grad, dtype)
    close(emb.weight_grad, Wt.grad, dtype)
    unused = np.setdiff1d(np.arange(num), ids)
    assert np.all(emb.weight_grad.numpy()[unused] == 0)


def test_embedding_bad_ids():
    emb = ManualEmbedding(5, 2)
    with pytest.raises(ValueError, match=r"\[5, 9\].*0\.\.4"):
        emb.forward(np.array([[0, 5], [9, 1]]))
    with pytest.raises(ValueError, match="integers"):
        emb.forward(np.array([0.5, 1.0]))
    emb.forward(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        emb.backward(np.ones((2, 3)))


# --- a whole network: makemore's MLP, backpropagated by hand ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_makemore_mlp_manual_backward_matches_autograd_and_torch(dtype):
    vocab, block, n_emb, hidden, n = 11, 3, 4, 16, 13
    net = ManualSequential(
        ManualEmbedding(vocab, n_emb, dtype=dtype),
        ManualFlatten(dtype=dtype),
        ManualLinear(block * n_emb, hidden, bias=True, dtype=dtype),
        ManualBatchNorm1d(hidden, dtype=dtype),
        ManualTanh(dtype=dtype),
        ManualLinear(hidden, vocab, bias=True, dtype=dtype),
    )
    set_param(net[2], "b", data(hidden, seed=10, scale=0.1))
    set_param(net[3], "gain", data(hidden, seed=11, scale=0.1, shift=1.0))
    set_param(net[3], "bias", data(hidden, seed=12, scale=0.1))
    set_param(net[5], "b", data(vocab, seed=13, scale=0.1))
    X = np.random.default_rng(1).integers(0, vocab, size=(n, block))
    Y = labels(n, vocab, seed=2)

    ce = ManualCrossEntropy()
    loss = ce.forward(net.forward(X), Y)
    assert net.backward(ce.backward()) is None
    grads = net.gradients()
    params = {k: v.numpy() for k, v in net.parameters().items()}
    assert list(grads) == ["0.weight", "2.W", "2.b", "3.gain", "3.bias", "5.W", "5.b"]

    # needle autograd, step by step
    pn = {k: nd(v, dtype) for k, v in params.items()}
    h = pn["0.weight"][X].reshape((n, block * n_emb)) @ pn["2.W"] + pn["2.b"]
    h = ndl.ops.tanh(unfused_batchnorm(h, pn["3.gain"], pn["3.bias"], 1e-5, "needle"))
    logits = h @ pn["5.W"] + pn["5.b"]
    loss_n = (ndl.logsumexp(logits, (1,)) - logits[np.arange(n), Y]).sum() / n
    loss_n.backward()
    # torch autograd
    pt = {k: th(v, dtype) for k, v in params.items()}
    h = F.embedding(torch.tensor(X), pt["0.weight"]).view(n, -1) @ pt["2.W"] + pt["2.b"]
    h = torch.tanh(unfused_batchnorm(h, pt["3.gain"], pt["3.bias"], 1e-5, "torch"))
    loss_t = F.cross_entropy(h @ pt["5.W"] + pt["5.b"], torch.tensor(Y))
    loss_t.backward()

    close(loss, loss_n, dtype)
    close(loss, loss_t, dtype)
    # the bias before batchnorm has a zero gradient (batchnorm subtracts the mean), so every
    # gradient is judged against the scale of all of them, not just its own rounding noise
    scale = max(float(pt[k].grad.abs().max()) for k in grads)
    assert np.max(np.abs(pt["2.b"].grad.numpy())) < 10 * REL[dtype] * scale
    for name, grad in grads.items():
        close(grad, pn[name].grad, dtype, scale=scale)
        close(grad, pt[name].grad, dtype, scale=scale)
    results = compare_table([(k, grads[k], pt[k]) for k in grads], atol=REL[dtype] * scale, rtol=REL[dtype],
                            verbose=False)
    assert all(r.approximate for r in results)


def test_flatten_and_sequential_shapes():
    seq = ManualSequential(ManualFlatten(dtype="float64"), ManualLinear(6, 2, dtype="float64"))
    x = data(4, 2, 3, seed=1)
    y = seq(x)
    dx = seq.backward(np.ones((4, 2)))
    assert y.shape == (4, 2) and dx.shape == (4, 2, 3)
    np.testing.assert_allclose(dx.numpy(), np.broadcast_to(seq[1].W.numpy().sum(1).reshape(2, 3), (4, 2, 3)))
    seq.zero_grad()
    assert seq.gradients() == {"1.W": None}
    with pytest.raises(TypeError, match="layer 0"):
        ManualSequential(object())


# --- cmp ----------------------------------------------------------------------------------------------


def test_cmp_exact_and_approximate():
    a = data(4, 3, seed=1)
    same = cmp("same", a.copy(), a, verbose=False)
    assert same.exact and same.approximate and same.shape_ok and same.maxdiff == 0 and bool(same)

    ulp = np.nextafter(a, np.inf)  # one rounding step away: not exact, still approximate
    near = cmp("near", ulp, a, verbose=False)
    assert not near.exact and near.approximate
    assert near.maxdiff == pytest.approx(np.max(np.abs(ulp - a)))


def test_cmp_flags_a_wrong_gradient():
    """A batchnorm gradient with n instead of n-1 differs by a few percent: not approximate."""
    n = 32
    right = data(n, 5, seed=2)
    wrong = right * (n - 1) / n
    r = cmp("dx", wrong, right, verbose=False)
    assert not r.exact and not r.approximate and not bool(r)
    assert r.maxdiff == pytest.approx(np.max(np.abs(wrong - right)))


def test_cmp_tolerances():
    a = data(3, 3, seed=3)
    b = a.copy()
    b[1, 2] += 1e-3
    assert cmp("t", b, a, atol=2e-3, rtol=0, verbose=False).approximate
    assert not cmp("t", b, a, atol=5e-4, rtol=0, verbose=False).approximate
    # defaults follow the precision: a 1e-6 relative error passes in float32, not in float64
    a64 = 1 + np.abs(data(10, seed=4))
    assert cmp("t", (a64 * (1 + 1e-6)).astype(np.float32), a64.astype(np.float32), verbose=False).approximate
    assert not cmp("t", a64 * (1 + 1e-6), a64, verbose=False).approximate


def test_cmp_shape_mismatch_is_reported_not_raised():
    a = data(3, 4, seed=5)
    for manual in [a.T, a[:2], a.ravel()]:
        r = cmp("W", manual, a, verbose=False)
        assert not r.shape_ok and not r.exact and not r.approximate and math.isnan(r.maxdiff)
        assert r.manual_shape == manual.shape and r.reference_shape == (3, 4)
        assert str(manual.shape) in r.line() and "(3, 4)" in r.line()


def test_cmp_reads_needle_tensor_grad():
    x = nd(data(4, 3, seed=6), "float64")
    (x * x).sum().backward()
    twice = 2 * x.numpy()
    assert cmp("x", twice, x, verbose=False).approximate  # x's .grad is the reference
    assert not cmp("x", x.numpy(), x, verbose=False).approximate
    assert cmp("x.grad", twice, x.grad, verbose=False).approximate  # a gradient tensor is a value
    assert cmp("x value", x.numpy(), x, use_grad=False, verbose=False).exact
    const = nd(twice, "float64", requires_grad=False)  # outside any graph: its value
    assert cmp("const", twice, const, verbose=False).exact
    # manual side as needle Tensor and as backend array
    assert cmp("x", x.grad, x, verbose=False).exact
    assert cmp("x", x.grad.realize_cached_data(), x, verbose=False).exact


def test_cmp_reads_torch_tensor_grad():
    a = data(5, 2, seed=7)
    xt = th(a, "float64")
    (xt ** 3).sum().backward()
    manual = 3 * a ** 2
    assert cmp("x", manual, xt, verbose=False).approximate
    assert cmp("x", nd(manual, "float64", False), xt.grad, verbose=False).approximate
    assert cmp("x", manual, th(manual, "float64", requires_grad=False), verbose=False).exact
    assert cmp("x", torch.tensor(manual), xt, verbose=False).approximate  # torch as the manual side


def test_cmp_missing_gradient_names_the_variable():
    with pytest.raises(ValueError, match="'W1'.*no gradient"):
        cmp("W1", np.zeros((2, 2)), nd(np.zeros((2, 2)), "float64"), verbose=False)
    with pytest.raises(ValueError, match="'b1'.*no gradient"):
        cmp("b1", np.zeros(3), th(np.zeros(3), "float64"), verbose=False)
    leaf = th(np.ones(3), "float64")
    hidden = leaf * 2  # torch keeps no .grad for non-leaf tensors unless asked
    (hidden ** 2).sum().backward()
    with pytest.raises(ValueError, match="'hidden'.*retain_grad"):
        cmp("hidden", np.zeros(3), hidden, verbose=False)
    with pytest.raises(ValueError, match="'h'.*None"):
        cmp("h", None, np.zeros(3), verbose=False)


def test_cmp_prints_one_line_when_verbose(capsys):
    a = data(3, seed=8)
    r = cmp("logits", a + 1e-12, a)
    out = capsys.readouterr().out
    assert out == r.line() + "\n"
    m = re.fullmatch(r"logits\s+\| exact: (\w+)\s*\| approximate: (\w+)\s*\| maxdiff: (\S+)\n", out)
    assert m and m.group(1) == str(r.exact) and m.group(2) == str(r.approximate)
    assert float(m.group(3)) == pytest.approx(r.maxdiff, rel=1e-2)
    cmp("logits", a, a, verbose=False)
    assert capsys.readouterr().out == ""


# --- compare_table ---------------------------------------------------------------------------------------


def test_compare_table_rows():
    a, b = data(3, 4, seed=9), data(5, seed=10)
    premade = cmp("premade", b, b, verbose=False)
    buf = io.StringIO()
    results = compare_table(
        [("dW1", a, a), ("db1_wrong", b * 1.1, b), ("dshape", a.T, a), premade], file=buf
    )
    lines = buf.getvalue().rstrip("\n").split("\n")
    assert [r.name for r in results] == ["dW1", "db1_wrong", "dshape", "premade"]
    assert all(isinstance(r, CmpResult) for r in results)
    assert [(r.exact, r.approximate, r.shape_ok) for r in results] == [
        (True, True, True), (False, False, True), (False, False, False), (True, True, True)
    ]
    assert results[3] is premade
    header, rule, rows = lines[0], lines[1], lines[2:]
    assert [c.strip() for c in header.split("|")] == ["variable", "shape", "exact", "approximate", "maxdiff"]
    assert set(rule) <= {"-", "+"}
    assert [row.split("|")[0].strip() for row in rows] == ["dW1", "db1_wrong", "dshape", "premade"]
    bars = [[i for i, ch in enumerate(line) if ch == "|"] for line in [header] + rows]
    assert all(b == bars[0] for b in bars)  # aligned columns
    for row, r in zip(rows, results):
        cells = [c.strip() for c in row.split("|")]
        assert cells[2:4] == [str(r.exact), str(r.approximate)]
    assert "(4, 3) vs (3, 4)" in rows[2]


def test_compare_table_tolerances_and_quiet(capsys):
    a = data(4, seed=11)
    rows = [("x", a + 1e-3, a)]
    assert compare_table(rows, atol=1e-2, rtol=0)[0].approximate
    assert capsys.readouterr().out.count("\n") == 3
    assert not compare_table(rows, atol=1e-4, rtol=0, verbose=False)[0].approximate
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="triples"):
        compare_table([("x", a)])


# --- gradcheck ---------------------------------------------------------------------------------------------


class Square(TensorOp):
    """x ** 2, with a correct or a deliberately wrong gradient (x instead of 2x)."""

    def __init__(self, wrong: bool):
        self.wrong = wrong

    def compute(self, a):
        return a * a

    def gradient(self, out_grad, node):
        x = node.inputs[0]
        return out_grad * x if self.wrong else out_grad * x * 2


def test_gradcheck_passes_on_correct_functions():
    x, W = nd(data(4, 3, seed=1), "float64"), nd(data(3, 2, seed=2), "float64")
    y = labels(4, 2, seed=3)
    assert gradcheck(lambda a, w: (ndl.ops.tanh(a @ w) ** 2).sum(), x, W)
    assert gradcheck(lambda z: (ndl.logsumexp(z, (1,)) - z[np.arange(4), y]).sum() / 4, x @ nd(np.eye(3), "float64"))
    assert gradcheck(lambda a: Square(wrong=False)(a).sum(), x)
    # arguments that need no gradient are passed through, unchecked
    const = nd(data(4, 3, seed=4), "float64", requires_grad=False)
    assert gradcheck(lambda a, c, k: (a * c).sum() * k, x, const, 3.0)
    # an input the output ignores has gradient zero
    assert gradcheck(lambda a, w: (a * a).sum(), x, W)
    assert x.grad is None and W.grad is None  # the caller's tensors are untouched


def test_gradcheck_catches_a_wrong_gradient_and_names_it():
    a, b = nd(data(3, seed=5), "float64"), nd(data(2, 3, seed=6, shift=0.5), "float64")

    def f(p, q):
        return p.sum() + Square(wrong=True)(q).sum()

    with pytest.raises(AssertionError) as info:
        gradcheck(f, a, b)
    msg = str(info.value)
    assert "input 1" in msg and "input 0" not in msg
    m = re.search(r"element \((\d+), (\d+)\): analytical (\S+), numerical (\S+)", msg)
    assert m, msg
    i, j = int(m.group(1)), int(m.group(2))
    q = b.numpy()
    assert float(m.group(3)) == pytest.approx(q[i, j], rel=1e-4)  # what the wrong op claims
    assert float(m.group(4)) == pytest.approx(2 * q[i, j], rel=1e-4)  # the true derivative
    assert f"{q.size} of {q.size} elements" in msg
    assert gradcheck(f, a, b, raise_exception=False) is False


def test_gradcheck_bad_calls():
    x = nd(data(2, 2, seed=7), "float64")
    with pytest.raises(ValueError, match="scalar"):
        gradcheck(lambda a: a * 2, x)
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda a: a.sum(), nd(data(2, seed=8), "float64", requires_grad=False))
    with pytest.warns(UserWarning, match="float64"):
        gradcheck(lambda a: (a * a).sum(), nd(data(3, seed=9), "float32"), eps=1e-2, atol=1e-3, rtol=1e-2)


# --- packaging and the example ------------------------------------------------------------------------------


def run_python(code):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_needle_does_not_import_manual_and_manual_needs_no_torch():
    r = run_python("import sys, needle; assert 'needle.manual' not in sys.modules")
    assert r.returncode == 0, r.stderr
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, needle.manual as m\n"
        "L = m.ManualLinear(3, 2); y = L.forward(np.ones((4, 3))); L.backward(np.ones((4, 2)))\n"
        "assert m.cmp('W', L.W_grad, L.W_grad.numpy(), verbose=False).exact\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr


def run_example(*args):
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=120)


def test_example_help():
    r = run_example("--help")
    assert r.returncode == 0
    for opt in ["--B", "--H", "--D", "--E", "--seed", "--dtype"]:
        assert opt in r.stdout


@pytest.mark.parametrize("args", [(), ("--B", "3", "--H", "5", "--D", "7", "--E", "2", "--seed", "4",
                                       "--dtype", "float64", "--bias")], ids=["defaults", "float64-bias"])
def test_example_runs_and_prints_the_table(args):
    r = run_example(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith(("dX", "dW", "db"))]
    names = [row.split("|")[0].strip() for row in rows]
    expected = ["dX  manual vs needle", "dW  manual vs needle", "dX  manual vs torch", "dW  manual vs torch"]
    if "--bias" in args:
        expected = expected[:2] + ["db  manual vs needle"] + expected[2:] + ["db  manual vs torch"]
    assert names == expected
    assert all(row.split("|")[3].strip() == "True" for row in rows)  # approximate column
    assert "variable" in r.stdout and "maxdiff" in r.stdout


def test_example_exit_code_reports_a_wrong_backward(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("manual_linear_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Buggy(ManualLinear):
        def backward(self, grad_out):
            dx = super().backward(grad_out)
            self.W_grad = self.W_grad * 1.01
            return dx

    assert module.main(["--B", "2", "--H", "3", "--D", "4", "--E", "3"]) == 0
    monkeypatch.setattr(module, "ManualLinear", Buggy)
    assert module.main(["--B", "2", "--H", "3", "--D", "4", "--E", "3"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
