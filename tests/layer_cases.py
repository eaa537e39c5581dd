"""The PyTorch-style layers' table: each needle.nn.functional function next to
torch.nn.functional's, forward and backward, on random shapes (windows that do not divide
the input, padding, ties, ignored targets, ...).

Shared by tests/test_layers_torch.py (nd mode, devices cpu and cpu_numpy) and
tests/np_mode/test_layers_np.py (numpy mode). needle.nn.functional has PyTorch's
signatures and layouts, so a case is written once, `fn(F, *inputs)`, and called with
either module. `run_case` compares the forward values and the gradients of sum(out * w),
w a fixed random tensor, for every float input, with PyTorch's computed in float64 on the
same values: PyTorch's float32 kernels round differently per CPU (AVX2, AVX-512), so a float32
run is held to rtol 1e-5 against the float64 result (its error uses at most a fifth of that
here, and as little with every needle kernel 4 ulp off or summing in another order).
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as TF

import needle as ndl
import needle.nn.functional as NF

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


@dataclass
class Case:
    name: str
    fn: Callable  # fn(F, *inputs), F = needle.nn.functional or torch.nn.functional
    inputs: Callable  # dtype -> list of numpy arrays; float ones are differentiated, int64 ones are targets/ids
    tol: Dict[str, dict] = field(default_factory=dict)  # per dtype, where TOL is too tight
    fixed: tuple = ()  # indices of float inputs that are not differentiated (running statistics)

    @property
    def id(self) -> str:
        return self.name


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def rand(*shape, key=0, scale=1.0):
    return lambda dtype: [(_rng(shape, key).standard_normal(shape) * scale).astype(dtype)]


def inputs(*makers):
    """Concatenate input makers: each a dtype -> list function."""
    return lambda dtype: [a for make in makers for a in make(dtype)]


def ints(values):
    return lambda dtype: [np.array(values, dtype=np.int64)]


def with_zeros(*shape):
    """Random values with every third one an exact zero (where relu and leaky_relu switch)."""
    def make(dtype):
        x = _rng(shape, "z").standard_normal(shape)
        x.flat[::3] = 0.0
        return [x.astype(dtype)]
    return make


def positive(*shape, key=0):
    return lambda dtype: [(np.abs(_rng(shape, key).standard_normal(shape)) + 0.5).astype(dtype)]


def ties(*shape):
    """Small whole numbers: most windows hold several equal maxima."""
    return lambda dtype: [np.round(_rng(shape, "ties").standard_normal(shape)).astype(dtype)]


def constant(*shape, value=2.0):
    return lambda dtype: [np.full(shape, value, dtype=dtype)]


def targets(shape, classes, ignore=None, ignore_index=-100, key=0):
    """int64 class ids; where `ignore` (a fraction) of them are replaced by ignore_index."""
    def make(dtype):
        rng = _rng(shape, classes, key)
        y = rng.integers(0, classes, size=shape)
        if ignore:
            y[rng.random(shape) < ignore] = ignore_index
        return [y.astype(np.int64)]
    return make


def probabilities(*shape, axis=1):
    def make(dtype):
        z = _rng(shape, "p").standard_normal(shape)
        e = np.exp(z)
        return [(e / e.sum(axis=axis, keepdims=True)).astype(dtype)]
    return make


# (N, Cin, H, W), (Cout, KH, KW), stride, padding: windows that do not divide, rectangular ones, padding
CONV2D = [((2, 3, 7, 6), (4, 3, 3), 1, 1), ((1, 2, 8, 5), (3, 3, 2), 2, (1, 0)), ((2, 1, 5, 5), (2, 5, 5), 1, 0),
          ((1, 2, 6, 7), (3, 2, 4), (2, 3), (1, 2)), ((3, 5, 6), (2, 3, 3), 2, 1),
          ((2, 2, 7, 6), (3, 2, 3), (2, 3), (1, 0))]  # the last: stride = kernel (patches), a remainder row
# (N, Cin, H, W), (Cout, KH, KW), stride, padding, dilation, groups: PyTorch's conv2d beyond the course's
CONV2D_MORE = [((2, 4, 7, 6), (6, 3, 3), 1, "same", 2, 2), ((1, 4, 8, 9), (4, 2, 4), 1, "same", 1, 4),
               ((4, 9, 7), (2, 3, 2), (2, 1), "valid", (2, 3), 2), ((2, 2, 6, 7), (4, 1, 3), 2, (1, 0), 1, 2)]
# (N, Cin, L), (Cout, K), stride, padding
CONV1D = [((2, 3, 10), (4, 3), 1, 1), ((1, 2, 9), (3, 4), 2, 2), ((3, 1, 5), (2, 5), 3, 0), ((2, 7), (3, 2), 1, 0),
          ((2, 2, 11), (2, 3), 4, 1)]
# (N, C, H, W), kernel, stride, padding
POOL = [((2, 3, 7, 6), 3, 2, 1), ((1, 2, 5, 5), 2, None, 0), ((2, 1, 8, 5), (3, 2), (2, 1), (1, 0)),
        ((1, 2, 9, 7), 4, 3, 2), ((3, 5, 5), 2, 1, 1), ((1, 1, 4, 4), 3, 1, 1)]
# (N, C, H, W), output_size
ADAPTIVE = [((2, 3, 7, 6), 1), ((2, 2, 7, 5), (3, 2)), ((1, 2, 5, 5), (None, 3)), ((1, 1, 4, 6), (5, 7)),
            ((2, 3, 8, 8), 4), ((3, 6, 5), (2, 4))]


def _conv2d_case(x, w, s, p, bias):
    n_cin = x[-3]
    weight = (w[0], n_cin) + w[1:]
    makers = [rand(*x, key="x"), rand(*weight, key="w", scale=0.3)] + ([rand(w[0], key="b")] if bias else [])
    fn = (lambda F, a, k, b: F.conv2d(a, k, b, s, p)) if bias else (lambda F, a, k: F.conv2d(a, k, stride=s, padding=p))
    return Case(f"conv2d{x}{weight}s{s}p{p}{'+b' if bias else ''}", fn, inputs(*makers))


def _conv2d_more_case(x, w, s, p, d, g, bias):
    weight = (w[0], x[-3] // g) + w[1:]
    makers = [rand(*x, key="x"), rand(*weight, key="w", scale=0.3)] + ([rand(w[0], key="b")] if bias else [])
    if bias:
        def fn(F, a, k, b):
            return F.conv2d(a, k, b, s, p, d, g)
    else:
        def fn(F, a, k):
            return F.conv2d(a, k, stride=s, padding=p, dilation=d, groups=g)
    return Case(f"conv2d{x}{weight}s{s}p{p}d{d}g{g}{'+b' if bias else ''}", fn, inputs(*makers))


def _conv1d_case(x, w, s, p, bias):
    weight = (w[0], x[-2], w[1])
    makers = [rand(*x, key="x"), rand(*weight, key="w", scale=0.3)] + ([rand(w[0], key="b")] if bias else [])
    fn = (lambda F, a, k, b: F.conv1d(a, k, b, s, p)) if bias else (lambda F, a, k: F.conv1d(a, k, stride=s, padding=p))
    return Case(f"conv1d{x}{weight}s{s}p{p}{'+b' if bias else ''}", fn, inputs(*makers))


def _ce(**kw):
    return lambda F, z, y: F.cross_entropy(z, y, **kw)


def unit(*shape, key=0):
    """Probabilities strictly inside (0, 1)."""
    return lambda dtype: [(0.02 + 0.96 * _rng(shape, key, "unit").random(shape)).astype(dtype)]


def bools(*shape, key=0, dead_row=None):
    """A random bool mask (about 60% True); with dead_row, that row (axis -2) all False."""
    def make(dtype):
        m = _rng(shape, key, "mask").random(shape) < 0.6
        if dead_row is not None:
            m[..., dead_row, :] = False
        return [m]
    return make


def float_mask(*shape, dead_row=None):
    """An additive mask: random values, some -inf; with dead_row, that row (axis -2) all -inf."""
    def make(dtype):
        rng = _rng(shape, "float mask")
        m = rng.standard_normal(shape)
        m[rng.random(shape) < 0.3] = -np.inf
        if dead_row is not None:
            m[..., dead_row, :] = -np.inf
        return [m.astype(dtype)]
    return make


# (N, Cin, H, W), (Cout / groups, KH, KW), stride, padding, output_padding, groups, dilation
CONV_T = [((2, 3, 4, 5), (4, 3, 3), 2, 1, 1, 1, 1), ((1, 4, 3, 4), (3, 2, 3), (2, 3), (0, 1), (1, 2), 2, 1),
          ((2, 2, 4, 3), (3, 3, 3), 1, 0, 1, 1, 2), ((3, 5, 4), (2, 2, 2), 2, 0, 0, 1, 1),
          ((1, 6, 3, 3), (1, 3, 2), 3, 1, (2, 1), 3, (1, 2)), ((2, 2, 5, 5), (2, 4, 4), 2, 2, 1, 2, 1)]


def _conv_t_case(x, w, s, p, op, g, d, bias):
    weight = (x[-3],) + w
    makers = [rand(*x, key="x"), rand(*weight, key="w", scale=0.3)] + ([rand(w[0] * g, key="b")] if bias else [])
    if bias:
        def fn(F, a, k, b):
            return F.conv_transpose2d(a, k, b, s, p, op, g, d)
    else:
        def fn(F, a, k):
            return F.conv_transpose2d(a, k, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
    return Case(f"conv_transpose2d{x}{weight}s{s}p{p}op{op}g{g}d{d}{'+b' if bias else ''}", fn, inputs(*makers))


def _sdpa(**kw):
    return lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, **kw)


def _sdpa_masked(**kw):
    return lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw)


PADS = [((2, 3, 4, 5), (1, 2), "constant"), ((2, 3, 4, 5), (2, -1, 0, 3), "constant"),
        ((3, 4, 5), (1, 1, 2, 0, -1, 1), "constant"), ((2, 3, 6), (2, 3), "reflect"), ((2, 3, 4, 5), (1, 3, 3, 1), "reflect"),
        ((1, 2, 3, 4, 5), (1, 1, 2, 2, 1, 0), "reflect"), ((3, 5), (4, 2), "replicate"),
        ((2, 2, 3, 4), (2, 0, 1, 3), "replicate"), ((2, 3, 6), (6, 2), "circular"),
        ((2, 2, 3, 4), (3, -1, 2, 3), "circular"), ((1, 2, 3, 3, 4), (1, 2, 0, 1, 3, 1), "circular")]


CASES = [
    # --- convolution
    *[_conv2d_case(x, w, s, p, bias) for (x, w, s, p), bias in zip(CONV2D, (True, False, True, True, False, True))],
    *[_conv2d_more_case(*case, bias) for case, bias in zip(CONV2D_MORE, (True, False, True, False))],
    *[_conv1d_case(x, w, s, p, bias) for (x, w, s, p), bias in zip(CONV1D, (True, False, True, True, False))],
    # --- pooling (random, many ties, constant input: the gradient goes to the first maximum)
    *[Case(f"max_pool2d{x}k{k}s{s}p{p}", lambda F, a, k=k, s=s, p=p: F.max_pool2d(a, k, s, p), rand(*x))
      for x, k, s, p in POOL],
    *[Case(f"max_pool2d{x}k{k}s{s}p{p}[ties]", lambda F, a, k=k, s=s, p=p: F.max_pool2d(a, k, s, p), ties(*x))
      for x, k, s, p in POOL[:4]],
    *[Case(f"max_pool2d{x}k{k}s{s}p{p}[constant]", lambda F, a, k=k, s=s, p=p: F.max_pool2d(a, k, s, p),
           constant(*x)) for x, k, s, p in POOL[::2]],
    *[Case(f"avg_pool2d{x}k{k}s{s}p{p}[{cip}]",
           lambda F, a, k=k, s=s, p=p, c=cip: F.avg_pool2d(a, k, s, p, count_include_pad=c), rand(*x))
      for x, k, s, p in POOL for cip in (True, False)],
    *[Case(f"adaptive_avg_pool2d{x}->{o}", lambda F, a, o=o: F.adaptive_avg_pool2d(a, o), rand(*x))
      for x, o in ADAPTIVE],
    # --- activations (inputs hold exact zeros: leaky_relu's gradient there is the slope)
    *[Case(f"{name}", fn, with_zeros(3, 4, 5)) for name, fn in (
        ("gelu", lambda F, a: F.gelu(a)),
        ("gelu[tanh]", lambda F, a: F.gelu(a, approximate="tanh")),
        ("silu", lambda F, a: F.silu(a)),
        ("relu", lambda F, a: F.relu(a)),
        ("tanh", lambda F, a: F.tanh(a)),
        ("sigmoid", lambda F, a: F.sigmoid(a)),
    )],
    Case("gelu[wide]", lambda F, a: F.gelu(a), rand(200, scale=6.0)),
    *[Case(f"leaky_relu({slope})", lambda F, a, s=slope: F.leaky_relu(a, s),
           lambda dtype: [np.array([-2.0, -0.5, 0.0, -0.0, 0.5, 3.0], dtype)]) for slope in (0.01, 0.2, -0.5)],
    Case("leaky_relu()", lambda F, a: F.leaky_relu(a), rand(4, 6)),
    *[Case(f"softmax(dim={d})", lambda F, a, d=d: F.softmax(a, d), rand(3, 4, 5)) for d in (0, 1, -1)],
    *[Case(f"log_softmax(dim={d})", lambda F, a, d=d: F.log_softmax(a, d), rand(3, 4, 5)) for d in (0, 2)],
    # --- linear layers and normalisation
    Case("linear", lambda F, a, w, b: F.linear(a, w, b), inputs(rand(4, 5), rand(3, 5, key=1), rand(3, key=2))),
    Case("linear[3d, no bias]", lambda F, a, w: F.linear(a, w), inputs(rand(2, 4, 5), rand(3, 5, key=1))),
    *[Case(f"layer_norm{shape}{ns}", lambda F, a, w, b, ns=ns: F.layer_norm(a, ns, w, b),
           inputs(rand(*shape), rand(*ns, key=1), rand(*ns, key=2))) for shape, ns in (((4, 5), (5,)),
                                                                                    ((2, 3, 4, 5), (4, 5)))],
    Case("layer_norm[no affine]", lambda F, a: F.layer_norm(a, (6,)), rand(3, 6)),
    *[Case(f"batch_norm{shape}[training]", lambda F, a, w, b: F.batch_norm(a, None, None, w, b, training=True),
           inputs(rand(*shape), rand(shape[1], key=1), rand(shape[1], key=2)))
      for shape in ((6, 3), (4, 3, 5), (2, 3, 4, 5))],
    Case("batch_norm[eval]", lambda F, a, m, v, w, b: F.batch_norm(a, m, v, w, b, training=False),
         inputs(rand(4, 3, 5), rand(3, key=1), positive(3, key=2), rand(3, key=3), rand(3, key=4)), fixed=(1, 2)),
    # --- losses
    *[Case(f"mse_loss[{r}]", lambda F, a, b, r=r: F.mse_loss(a, b, reduction=r), inputs(rand(3, 4), rand(3, 4, key=1)))
      for r in ("mean", "sum", "none")],
    *[Case(f"cross_entropy{shape}[{name}]", _ce(**kw), inputs(rand(*shape), targets(target, shape[1] if len(shape) > 1
                                                                                    else shape[0], **tk)))
      for shape, target, name, kw, tk in (
          ((5, 4), (5,), "plain", {}, {}),
          ((6, 4), (6,), "ignored", {}, dict(ignore=0.4)),
          ((6, 4), (6,), "smoothing", dict(label_smoothing=0.1), {}),
          ((8, 5), (8,), "smoothing+ignored", dict(label_smoothing=0.3), dict(ignore=0.4)),
          ((8, 5), (8,), "ignore_index=2", dict(ignore_index=2, label_smoothing=0.2), dict(ignore=0.3, ignore_index=2)),
          ((8, 5), (8,), "sum", dict(reduction="sum", label_smoothing=0.2), dict(ignore=0.3)),
          ((8, 5), (8,), "none", dict(reduction="none", label_smoothing=0.2), dict(ignore=0.3)),
          ((2, 3, 4, 2), (2, 4, 2), "K-dim", dict(label_smoothing=0.1), dict(ignore=0.3)),
          ((2, 3, 4), (2, 4), "K-dim none", dict(reduction="none"), dict(ignore=0.3)),
          ((4,), (), "unbatched", dict(label_smoothing=0.25), {}),
      )],
    Case("cross_entropy[all ignored]", _ce(label_smoothing=0.1), inputs(rand(3, 4), ints([-100, -100, -100]))),
    *[Case(f"cross_entropy{shape}[probabilities, {kw}]", lambda F, z, p, kw=kw: F.cross_entropy(z, p, **kw),
           inputs(rand(*shape), probabilities(*shape)))
      for shape, kw in (((5, 4), {}), ((2, 3, 4), dict(label_smoothing=0.2)), ((5, 4), dict(reduction="none")))],
    *[Case(f"cross_entropy{shape}[weight, {name}]", lambda F, z, y, w, kw=kw: F.cross_entropy(z, y, w, **kw),
           inputs(rand(*shape), targets(target, shape[1], ignore=0.3), positive(shape[1], key=3)), fixed=(2,))
      for shape, target, name, kw in (((8, 5), (8,), "mean", {}), ((8, 5), (8,), "smoothing", dict(label_smoothing=0.2)),
                                      ((2, 3, 4), (2, 4), "sum", dict(reduction="sum", label_smoothing=0.1)),
                                      ((6, 4), (6,), "none", dict(reduction="none")))],
    Case("cross_entropy[probabilities, weight]", lambda F, z, p, w: F.cross_entropy(z, p, w, label_smoothing=0.1),
         inputs(rand(5, 4), probabilities(5, 4), positive(4, key=3)), fixed=(2,)),
    *[Case(f"nll_loss{shape}[{name}]", fn, inputs(rand(*shape), targets(target, shape[1] if len(shape) > 1
                                                                           else shape[0], ignore=0.3, **tk)))
      for shape, target, name, fn, tk in (
          ((6, 4), (6,), "mean", lambda F, z, y: F.nll_loss(z, y), {}),
          ((6, 4), (6,), "sum", lambda F, z, y: F.nll_loss(z, y, reduction="sum"), {}),
          ((2, 3, 4, 2), (2, 4, 2), "K-dim none", lambda F, z, y: F.nll_loss(z, y, reduction="none"), {}),
          ((8, 5), (8,), "ignore_index=1", lambda F, z, y: F.nll_loss(z, y, ignore_index=1), dict(ignore_index=1)),
          ((4,), (), "unbatched", lambda F, z, y: F.nll_loss(z, y), {}),
      )],
    *[Case(f"nll_loss{shape}[weight, {r}]", lambda F, z, y, w, r=r: F.nll_loss(z, y, w, reduction=r),
           inputs(rand(*shape), targets(target, shape[1], ignore=0.3), positive(shape[1], key=4)), fixed=(2,))
      for shape, target, r in (((8, 5), (8,), "mean"), ((2, 3, 4), (2, 4), "sum"), ((6, 4), (6,), "none"))],
    *[Case(f"binary_cross_entropy{shape}[{r}]", lambda F, x, t, r=r: F.binary_cross_entropy(x, t, reduction=r),
           inputs(unit(*shape), unit(*shape, key=1))) for shape, r in (((4, 5), "mean"), ((3, 2, 2), "sum"),
                                                                       ((6,), "none"))],
    Case("binary_cross_entropy[weight]", lambda F, x, t, w: F.binary_cross_entropy(x, t, w),
         inputs(unit(4, 5), unit(4, 5, key=1), positive(5, key=2)), fixed=(2,)),
    Case("binary_cross_entropy[0/1 targets]", lambda F, x, t: F.binary_cross_entropy(x, t, reduction="sum"),
         inputs(unit(3, 4), lambda dtype: [(_rng("labels").random((3, 4)) < 0.5).astype(dtype)])),
    *[Case(f"binary_cross_entropy_with_logits[{name}]", fn, makers, fixed=fixed) for name, fn, makers, fixed in (
        ("mean", lambda F, z, t: F.binary_cross_entropy_with_logits(z, t), inputs(rand(4, 5), unit(4, 5)), ()),
        ("large logits, none", lambda F, z, t: F.binary_cross_entropy_with_logits(z, t, reduction="none"),
         inputs(rand(4, 5, scale=30.0), unit(4, 5)), ()),
        ("weight, sum", lambda F, z, t, w: F.binary_cross_entropy_with_logits(z, t, w, reduction="sum"),
         inputs(rand(3, 4), unit(3, 4), positive(3, 1, key=2)), (2,)),
        ("pos_weight", lambda F, z, t, p: F.binary_cross_entropy_with_logits(z, t, pos_weight=p),
         inputs(rand(2, 3, 4), unit(2, 3, 4), positive(4, key=3)), (2,)),
        ("pos_weight, weight, none",
         lambda F, z, t, w, p: F.binary_cross_entropy_with_logits(z, t, w, reduction="none", pos_weight=p),
         inputs(rand(3, 4, scale=10.0), unit(3, 4), positive(4, key=2), positive(4, key=3)), (2, 3)),
    )],
    # --- transposed convolution
    *[_conv_t_case(*case, bias) for case, bias in zip(CONV_T, (True, False, True, True, False, True))],
    # --- padding
    *[Case(f"pad{x}{p}{mode}", lambda F, a, p=p, mode=mode: F.pad(a, p, mode), rand(*x)) for x, p, mode in PADS],
    Case("pad[value]", lambda F, a: F.pad(a, (1, 2, 0, 1), value=-1.5), rand(2, 3, 4)),
    # --- activations with arguments
    *[Case(f"softplus{args}", lambda F, a, args=args: F.softplus(a, *args), rand(4, 6, scale=8.0))
      for args in ((), (2.0, 5.0), (0.5, 3.0))],
    # --- attention
    Case("sdpa", _sdpa(), inputs(rand(2, 3, 5, 4, key=1), rand(2, 3, 6, 4, key=2), rand(2, 3, 6, 2, key=3))),
    Case("sdpa[scale, 3-d]", _sdpa(scale=0.7), inputs(rand(2, 5, 4, key=1), rand(2, 6, 4, key=2), rand(2, 6, 3, key=3))),
    *[Case(f"sdpa[causal {q}x{k}]", _sdpa(is_causal=True),
           inputs(rand(2, 2, q, 4, key=1), rand(2, 2, k, 4, key=2), rand(2, 2, k, 3, key=3)))
      for q, k in ((5, 5), (4, 6), (6, 3))],
    Case("sdpa[bool mask, a query with no key]", _sdpa_masked(),
         inputs(rand(2, 3, 5, 4, key=1), rand(2, 3, 6, 4, key=2), rand(2, 3, 6, 2, key=3), bools(5, 6, dead_row=2))),
    Case("sdpa[bool mask broadcast over heads]", _sdpa_masked(scale=0.5),
         inputs(rand(2, 3, 5, 4, key=1), rand(2, 3, 6, 4, key=2), rand(2, 3, 6, 2, key=3), bools(2, 1, 5, 6))),
    Case("sdpa[float mask with -inf, a query with no key]", _sdpa_masked(),
         inputs(rand(2, 3, 5, 4, key=1), rand(2, 3, 6, 4, key=2), rand(2, 3, 6, 2, key=3), float_mask(3, 5, 6,
                                                                                                    dead_row=4))),
    Case("sdpa[gqa]", _sdpa(enable_gqa=True, is_causal=True),
         inputs(rand(2, 4, 5, 3, key=1), rand(2, 2, 5, 3, key=2), rand(2, 2, 5, 3, key=3))),
    # --- lookups
    Case("embedding", lambda F, i, w: F.embedding(i, w), inputs(ints([[0, 3, 3], [6, 1, 0]]), rand(7, 4))),
    *[Case(f"embedding[padding_idx={p}]", lambda F, i, w, p=p: F.embedding(i, w, padding_idx=p),
           inputs(ints([[0, 3, 3], [6, 1, 0]]), rand(7, 4))) for p in (3, -1, 0)],
]


def run_case(case: Case, dtype: str, device) -> None:
    """Compare the case's forward values and the gradients of sum(out * w) with PyTorch's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: intra-op threads would only contend with the other test workers
    try:
        _run_case(case, dtype, device)
    finally:
        torch.set_num_threads(threads)


def _run_case(case: Case, dtype: str, device) -> None:
    arrays = case.inputs(dtype)
    grads = [a.dtype.kind == "f" and k not in case.fixed for k, a in enumerate(arrays)]
    # PyTorch in float64 on the same values: its float32 kernels (and their summation order)
    # differ between CPUs, so only the float64 result is a reference
    t_in = [torch.tensor(a.astype(np.float64) if a.dtype.kind == "f" else a, requires_grad=g)
            for a, g in zip(arrays, grads)]
    n_in = [ndl.Tensor(a, device=device, dtype=a.dtype.name, requires_grad=g) for a, g in zip(arrays, grads)]
    with warnings.catch_warnings():  # torch notes that 'same' padding of an even kernel copies the input
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel", UserWarning)
        t_out = case.fn(TF, *t_in)
    n_out = case.fn(NF, *n_in)
    expected = t_out.detach().numpy()
    assert n_out.dtype == dtype and expected.dtype == np.float64, (n_out.dtype, expected.dtype)
    tol = dict(TOL[dtype], **case.tol.get(dtype, {}))
    np.testing.assert_allclose(n_out.numpy(), expected, err_msg="forward", **tol)
    w = _rng(case.id, "w").standard_normal(t_out.shape).astype(dtype)
    t_out.backward(torch.tensor(w, dtype=torch.float64))
    n_out.backward(ndl.Tensor(w, device=device, dtype=dtype))
    for k, (n, t, g) in enumerate(zip(n_in, t_in, grads)):
        if g:
            assert n.grad is not None and n.grad.shape == n.shape, k
            np.testing.assert_allclose(n.grad.numpy(), t.grad.numpy(), err_msg=f"gradient of input {k}", **tol)
