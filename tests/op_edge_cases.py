"""The edge sweep's table: every op, forward and backward, on the edges of its domain,
checked against PyTorch's expression evaluated in float64.

Shared by tests/test_op_edges.py (nd mode, devices cpu and cpu_numpy),
tests/np_mode/test_op_edges_np.py (numpy mode) and tests/cuda/test_cuda_op_edges.py. A case
is an op written once for both libraries, `fn(L, *inputs)` where `L` is `Needle` or `Torch`
(the few calls whose names differ); operators and methods the two share are used directly.

The expected values do not depend on the CPU. numpy and PyTorch pick their float32 SIMD
kernels per CPU (AVX2 on AMD EPYC, AVX-512 on Intel Xeon): exp, log, tanh, erf, GELU and
the order of a reduction's additions round differently on each, so a float32 PyTorch
result is one machine's rounding, not a reference. `reference` evaluates the PyTorch
expression in float64 on the case's input values (exactly representable in both dtypes),
with the gradient of sum(out * w), w a fixed random tensor; `run_case` then accepts a
needle value v of dtype d against the reference r when

    r rounded to d is nan or +-inf:  v is the same (nan where nan, inf of the same sign)
    otherwise:  |v - r_d| <= C * (u_d * (|r| + S) + eta_d * (1 + A))

with r_d the reference rounded to d, u_d its unit roundoff (2^-24 or 2^-53), eta_d its
smallest subnormal (the absolute error of a rounding below the normal range), and S the
value's condition under relative perturbations of the inputs,
sum_j |d r / d x_j| * |x_j| (see `reference` for how it is computed, and for A). For a
gradient, the inputs are x and w. C and the model are explained at `C`.

A case whose `note` is set is a deliberate difference from one PyTorch function: its
`torch_fn` is the PyTorch expression needle follows instead, and the note says why.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

import needle as ndl
import needle.nn.functional as NF

INF, NAN = float("inf"), float("nan")
DTYPES = ("float32", "float64")
U = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}  # unit roundoff: half the spacing of the numbers in [1, 2)
ETA = {d: float(np.finfo(d).smallest_subnormal) for d in DTYPES}  # the spacing below the normal range
# C, the number of roundings of size u (times the value's condition) a needle value may be off by.
# The model: each value needle computes is the exact formula at inputs perturbed by a few relative
# roundings, plus a few roundings of the result; first order, that moves the value by at most
# (|r| + S) u per rounding. C bounds the count:
# - numpy holds its float32 SIMD kernels (AVX2, AVX-512, SVML) to 3 ulp for exp, 4 for log, 2 for
#   tanh (numpy/_core/tests/data/umath-validation-set-*.csv), 8 u relative at most; needle's
#   composite ops chain two such steps and a few correctly rounded operations: 16 u.
# - a sum of n terms rounds at most n - 1 times whatever the order (pairwise or SIMD-lane
#   order): (n - 1) u sum |x_j| = (n - 1) u S. 16 covers that bound for the sums here up to 17
#   terms, and conv's 18 products in practice (roundings of either sign grow as root n).
# tests/test_op_edges.py checks both ways: the sweep holds with every exp, log, tanh, sigmoid
# and pow 4 ulp off at random and sums in random order, and fails with 32 ulp.
# The bound is u (|r| + S) with S computed, not a fixed rtol: where S is small (exp(0.5),
# max, a sum of same-signed terms) C u = 9.5e-7 relative is tighter than the 2e-6 this sweep
# held against PyTorch's float32, and where an op cancels (x - y near x = y, 1 + erf(x) near
# -1) it grows as float32 allows, on any CPU.
C = 16


def edges(dtype) -> np.ndarray:
    """Every edge value once, with a few ordinary values and the tails of exp/tanh/sigmoid."""
    denormal = np.finfo(dtype).smallest_normal / 8
    return np.array([0.0, -0.0, 1.0, -1.0, 2.0, -3.0, 0.5, -2.5, 20.0, -20.0, 100.0, -100.0, 1000.0, -1000.0,
                     INF, -INF, NAN, 1e8, -1e8, 1e-30, -1e-30, denormal, -denormal], dtype)


def pairs(dtype):
    """(x, y): every pair of edge values, for the binary ops."""
    e = edges(dtype)
    return [np.repeat(e, e.size), np.tile(e, e.size)]


ROWS = [  # reductions along axis 1 see one kind of edge per row
    [-INF, -INF, -INF, -INF],
    [1.0, INF, 2.0, 0.0],
    [INF, INF, 1.0, 0.0],
    [-INF, 1.0, -INF, 2.0],
    [INF, -INF, 0.0, 1.0],
    [1.0, NAN, 2.0, NAN],
    [3.0, 1.0, 3.0, 3.0],
    [1e8, 1e8, -1e8, 1e8],
    [-1e8, 1e8, 0.0, -1e8],
    [-0.0, 0.0, -1.0, -2.0],
    [1e-30, -1e-30, 0.0, -0.0],
    [0.5, -1.5, 2.0, 1.0],
]

WHOLE = {  # reductions over every axis see one edge per input
    "ties": [[3.0, 1.0], [3.0, 0.0]],
    "nan": [[NAN, 1.0], [2.0, NAN]],
    "+inf ties": [[INF, 1.0], [INF, -INF]],
    "all -inf": [[-INF, -INF], [-INF, -INF]],
    "signed zeros": [[-0.0, 0.0], [-1.0, -2.0]],
    "huge": [[1e8, -1e8], [1e8, 1e8]],
    "tiny": [[1e-30, 1e-30], [-1e-30, 0.0]],
}


def const(values):
    return lambda dtype: [np.array(values, dtype)]


def rows3(dtype):
    """ROWS as (rows, 2, 2): several axes reduced per row."""
    return [np.array(ROWS, dtype).reshape(-1, 2, 2)]


class _Fallback(type):
    """A name a side does not define is the library's own function of that name (ndl.ops.log1p,
    torch.log1p): a new op whose name is the same in both needs no entry here."""

    def __getattr__(cls, name):
        return getattr(cls.library, name)


class Needle(metaclass=_Fallback):
    """The calls whose names or conventions differ, needle's side."""

    library = ndl.ops

    F = NF  # needle.nn.functional has torch.nn.functional's signatures

    @staticmethod
    def pow(x, y):
        return x ** y

    @staticmethod
    def rdiv(s, x):
        return s / x

    @staticmethod
    def div(x, y):
        return x / y

    @staticmethod
    def gelu(x, approximate="none"):
        return NF.gelu(x, approximate=approximate)

    @staticmethod
    def tanh(x):
        return x.tanh()

    @staticmethod
    def sigmoid(x):
        return x.sigmoid()

    @staticmethod
    def erf(x):
        return ndl.ops.erf(x)

    @staticmethod
    def maximum(x, y):
        return ndl.ops.maximum(x, y)

    @staticmethod
    def where(c, x, y):
        return ndl.ops.where(c, x, y)

    @staticmethod
    def sum(x, axes=None):
        return ndl.ops.summation(x, axes)

    @staticmethod
    def mean(x, axes=None):
        return ndl.ops.mean(x, axes)

    @staticmethod
    def max(x, axes=None):
        return ndl.ops.max(x, axes)

    @staticmethod
    def min(x, axes=None):
        return x.min(axes=axes)

    @staticmethod
    def logsumexp(x, axes=None):
        return ndl.ops.logsumexp(x, axes)

    @staticmethod
    def logsoftmax(x, axis=-1):
        return ndl.ops.logsoftmax(x, axis)

    @staticmethod
    def softmax(x, axis=-1):
        return ndl.ops.softmax(x, axis)

    @staticmethod
    def transpose(x, i, j):
        return ndl.ops.transpose(x, (i, j))

    @staticmethod
    def conv(x, w, stride, padding):
        return ndl.ops.conv(x, w, stride=stride, padding=padding)

    @staticmethod
    def batch_norm(x, w, b):
        return ndl.ops.batch_norm(x, w, b, eps=1e-5)[0]

    @staticmethod
    def softmax_loss(z, y):
        return ndl.nn.SoftmaxLoss()(z, y)

    @staticmethod
    def cast(x, dtype):
        return ndl.ops.cast(x, dtype)

    @staticmethod
    def eq(x, y):
        return x.eq(y)

    @staticmethod
    def ne(x, y):
        return x.ne(y)

    @staticmethod
    def argmax(x, axis=None):
        return ndl.ops.argmax(x, axis)

    @staticmethod
    def permute(x, axes):
        return ndl.ops.permute(x, axes)

    @staticmethod
    def flip(x, axes):
        return ndl.ops.flip(x, axes)

    @staticmethod
    def stack(xs, axis):
        return ndl.ops.stack(xs, axis)

    @staticmethod
    def unbind(x, axis):
        return ndl.ops.split(x, axis)

    @staticmethod
    def dilate(x, axis, dilation):
        return ndl.ops.dilate(x, (axis,), dilation)

    @staticmethod
    def undilate(x, axis, dilation):
        return ndl.ops.undilate(x, (axis,), dilation)

    @staticmethod
    def add_scalars(x, c0, c1):
        return ndl.ops.fused_add_scalars(x, c0, c1)


class Torch(metaclass=_Fallback):
    """The same calls in PyTorch, evaluated in float64 by `reference`."""

    library = torch

    F = F
    dtype = "float64"  # the test's dtype, while `reference` evaluates a case
    perturbations: Optional[list] = None  # while `reference` runs: (leaf, kind) of each marked intermediate

    @staticmethod
    def stored(v):
        """v as the test's dtype holds it: an intermediate that needle's formula (and PyTorch's)
        keeps in the tensor's dtype, where that rounding decides the result (1e8 - 1 is 1e8 in
        float32, 1 / 1e-39 overflows). The derivative passes through unchanged; the rounding
        joins the tolerance as `intermediate`'s does."""
        if isinstance(v, (int, float)):  # a Python number: PyTorch's scalar path
            return type(v)(np.array(v, Torch.dtype))
        step = (v.detach().to(getattr(torch, Torch.dtype)).to(v.dtype) - v.detach())
        return Torch.intermediate(v + torch.where(torch.isnan(step), 0.0, step))  # inf - inf: already inf

    @staticmethod
    def intermediate(v):
        """v, marked as an intermediate whose rounding the rest of the formula amplifies (1 + erf(x)
        cancels near -1; x * sigmoid(x) scales a subnormal sigmoid by x = -100): `reference` adds
        the sensitivity of the result to a relative perturbation of v to S, and to an absolute one
        (a subnormal's rounding) to A."""
        if Torch.perturbations is None:
            return v
        relative, absolute = torch.zeros_like(v, requires_grad=True), torch.zeros_like(v, requires_grad=True)
        Torch.perturbations += [(relative, "relative"), (absolute, "absolute")]
        finite = torch.isfinite(v)
        return torch.where(finite, torch.where(finite, v, 0.0) * (1 + relative) + absolute, v)

    @staticmethod
    def pow(x, y):
        """x ** y (y a tensor or a number, PyTorch's two paths) with the gradient needle and PyTorch
        write, y * x ** (y - 1) and x ** y * ln x, their intermediates in the tensor's dtype."""
        return Torch.stored(_Pow.apply(x, y))

    @staticmethod
    def tanh(x):
        """tanh, with its value marked in the gradient g * (1 - t * t) (PyTorch's and needle's): for
        |x| >= 1, 1 - t * t cancels, so t's rounding (a 2-ulp float32 tanh on one CPU, 1 on
        another) is amplified by 2 t^2 / (1 - t^2)."""
        return _Tanh.apply(x)

    @staticmethod
    def sigmoid(x):
        """sigmoid as needle computes it, accurate in both tails (see SIGMOID_NOTE), its value marked
        as an intermediate: silu multiplies it by x, so a subnormal sigmoid(-100) is off by up to
        half its spacing times 100."""
        return Torch.intermediate(_Sigmoid.apply(x))

    @staticmethod
    def rdiv(s, x):
        """s / x for a number s: needle's reverse_divide and PyTorch's __rtruediv__ are s * x ** -1,
        so 0 / x is nan where 1 / x overflows (float32 |x| < 2.9e-39)."""
        return s * Torch.pow(x, -1.0)

    @staticmethod
    def div(x, y):
        """x / y; the gradient for y is -g * (x / y / y) in the tensor's dtype, as needle's and PyTorch's."""
        return _Div.apply(x, y)

    @staticmethod
    def gelu(x, approximate="none"):
        """PyTorch's two GELU formulas (torch.nn.GELU's documentation), with the erf or tanh term
        marked: for x < 0, 1 + erf(x / sqrt 2) cancels, so erf's rounding near -1 (absolute, not
        relative to the result) is amplified by x / 2."""
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
            return 0.5 * x * (1 + Torch.intermediate(Torch.tanh(inner)))
        return 0.5 * x * (1 + Torch.intermediate(torch.erf(x * (1 / math.sqrt(2)))))

    @staticmethod
    def erf(x):
        return torch.erf(x)

    @staticmethod
    def maximum(x, y):
        if not isinstance(y, torch.Tensor):  # torch.clamp_min would not split ties
            y = torch.tensor(y, dtype=x.dtype)
        return torch.maximum(x, y)

    @staticmethod
    def where(c, x, y):
        return torch.where(c, x, y)

    @staticmethod
    def sum(x, axes=None):
        return x.sum() if axes is None else x.sum(axes)

    @staticmethod
    def mean(x, axes=None):
        return x.mean() if axes is None else x.mean(axes)

    @staticmethod
    def max(x, axes=None):
        return x.max() if axes is None else x.max(axes[0]).values if len(axes) == 1 else torch.amax(x, axes)

    @staticmethod
    def min(x, axes=None):
        return x.min() if axes is None else x.min(axes[0]).values

    @staticmethod
    def logsumexp(x, axes=None):
        return torch.logsumexp(x, tuple(range(x.ndim)) if axes is None else axes)

    @staticmethod
    def logsoftmax(x, axis=-1):
        return torch.log_softmax(x, axis)

    @staticmethod
    def softmax(x, axis=-1):
        return torch.softmax(x, axis)

    @staticmethod
    def transpose(x, i, j):
        return x.transpose(i, j)

    @staticmethod
    def conv(x, w, stride, padding):
        """needle's NHWC input and (KH, KW, Cin, Cout) kernel through conv2d's NCHW."""
        out = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=stride, padding=padding)
        return out.permute(0, 2, 3, 1)

    @staticmethod
    def batch_norm(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)

    @staticmethod
    def softmax_loss(z, y):
        return F.cross_entropy(z, y)

    @staticmethod
    def cast(x, dtype):
        return x.to(getattr(torch, dtype))

    @staticmethod
    def eq(x, y):
        return torch.eq(x, y)

    @staticmethod
    def ne(x, y):
        return torch.ne(x, y)

    @staticmethod
    def argmax(x, axis=None):
        return torch.argmax(x, axis)

    @staticmethod
    def permute(x, axes):
        return x.permute(*axes)

    @staticmethod
    def flip(x, axes):
        return torch.flip(x, axes)

    @staticmethod
    def stack(xs, axis):
        return torch.stack(xs, axis)

    @staticmethod
    def unbind(x, axis):
        return torch.unbind(x, axis)

    @staticmethod
    def dilate(x, axis, dilation):
        """`dilation` zeros after each entry along `axis`, written into zeros (as needle's dilate)."""
        shape = list(x.shape)
        shape[axis] *= dilation + 1
        out = torch.zeros(shape, dtype=x.dtype)
        out[(slice(None),) * axis + (slice(None, None, dilation + 1),)] = x
        return out

    @staticmethod
    def undilate(x, axis, dilation):
        return x[(slice(None),) * axis + (slice(None, None, dilation + 1),)]

    @staticmethod
    def add_scalars(x, c0, c1):
        return x + c0, x + c1


class _Pow(torch.autograd.Function):
    """x ** y, PyTorch's edges; its backward is PyTorch's (pow_backward_self and _exponent: 0 where
    y == 0, and for y where x == 0 <= y) with the exponent y - 1 and the power x ** (y - 1) as
    the tensor's dtype holds them. In float64 it is torch.pow's autograd exactly
    (tests/test_op_edges.py checks)."""

    @staticmethod
    def forward(ctx, x, y):
        out = torch.pow(x, y)
        ctx.y = y if not isinstance(y, torch.Tensor) else None
        ctx.save_for_backward(x, out, *([y] if isinstance(y, torch.Tensor) else []))
        return out

    @staticmethod
    def backward(ctx, g):
        x, out, *rest = ctx.saved_tensors
        y = rest[0] if rest else ctx.y
        grad_x = g * (y * Torch.stored(torch.pow(x, Torch.stored(y - 1))))
        grad_x = torch.where(torch.as_tensor(y == 0), 0.0, grad_x)
        grad_y = None
        if rest and ctx.needs_input_grad[1]:
            grad_y = torch.where((x == 0) & (y >= 0), 0.0, g * (out * torch.log(x)))
        return grad_x, grad_y


class _Tanh(torch.autograd.Function):
    """torch.tanh, whose backward is PyTorch's tanh_backward, g * (1 - t * t), t marked (`Torch.tanh`)."""

    @staticmethod
    def forward(ctx, x):
        t = torch.tanh(x)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        t = Torch.intermediate(t)
        return g * (1 - t * t)


class _Sigmoid(torch.autograd.Function):
    """exp(logsigmoid(x)), with the gradient sigmoid(x) * sigmoid(-x) (PyTorch's s * (1 - s) cancels
    to 0 above x = 37 even in float64), the sigmoid in it marked as in `Torch.sigmoid`."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(F.logsigmoid(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (Torch.sigmoid(x) * _Sigmoid.apply(-x))


class _Div(torch.autograd.Function):
    """x / y; its backward is PyTorch's (g / y, and -g * (x / y / y)) with the quotients as the
    tensor's dtype holds them. In float64 it is torch.div's autograd exactly (checked)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x / y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g / y, -g * Torch.stored(Torch.stored(x / y) / y)


@dataclass
class Case:
    op: str
    edge: str
    fn: Callable  # fn(L, *inputs), L = Needle or Torch
    inputs: Callable  # dtype -> list of numpy arrays; float ones are differentiated
    c: float = C  # the tolerance's constant, where C does not fit (with the reason in `why`)
    why: str = ""
    note: str = ""  # a deliberate difference from PyTorch, one line
    torch_fn: Optional[Callable] = None  # with `note`: torch_fn(*inputs), what needle follows instead
    tie: Optional[Callable] = None  # tie(arrays): per input, labels of entries perturbed as one (see `reference`)

    @property
    def id(self) -> str:
        return f"{self.op}[{self.edge}]"


MAX_NOTE = ("max over several axes splits the gradient among the ties, and a nan max among the nans, as torch.max() "
            "does over all axes; torch.amax gives the whole group a nan gradient, an artefact of its == mask")
SIGMOID_NOTE = ("sigmoid is accurate in both tails: float32 sigmoid(-100) is 3.8e-44, not PyTorch's 0 (1 / (1 + "
                "exp(100)) overflows), and the gradient s * sigmoid(-x) does not cancel to 0 above x = 17 like "
                "s * (1 - s)")
POW_NOTE = ("a float32 tensor ** s rounds s to float32 (1e8 - 1 in the gradient is 1e8, an even power); PyTorch does "
            "that in its vectorised loop but keeps s in double for the last few elements, so its sign there depends "
            "on the element's position")
SILU_NOTE = "silu is x * sigmoid(x), so it keeps sigmoid's accurate tails: float32 silu(-100) is -3.8e-42, not 0"
BCE_LOGITS_NOTE = ("binary_cross_entropy_with_logits is (1 - t) z + softplus(-z) for z >= 0 and softplus(z) - t z "
                   "below, non-negative terms: float32 z = -20, t = 0 gives 2.06e-9 where PyTorch's one form cancels "
                   "to 0, and z = -inf, t > 0 gives inf where PyTorch's -inf + inf is nan")


def _bce_logits_both_sides(z, t):
    """PyTorch's binary_cross_entropy_with_logits written as needle computes it (see BCE_LOGITS_NOTE)."""
    above = z >= 0
    upper, lower = torch.where(above, z, torch.zeros_like(z)), torch.where(above, torch.zeros_like(z), z)
    return torch.where(above, (1 - t) * upper + torch.log1p(torch.exp(-upper)),
                       torch.log1p(torch.exp(lower)) - t * lower)
BATCH_NORM_NOTE = ("batch norm computes (x - mean) / sqrt(var + eps), exactly 0 for a constant column; PyTorch's CPU "
                   "kernel folds it into x * scale + shift, which for a column of 1e8 cancels to an error of 1e3 "
                   "(and of 1e-13 in float64 for a column of 2)")


def _group_max(x, axes):
    """torch.max() of each group of entries that a max over `axes` reduces together."""
    kept = [i for i in range(x.ndim) if i not in axes]
    groups = x.permute(*kept, *axes).reshape(-1, int(np.prod([x.shape[i] for i in axes])))
    return torch.stack([g.max() for g in groups]).reshape([x.shape[i] for i in kept])


def _batch_norm_unfused(x, w, b):
    mean = x.mean(0)
    return (x - mean) / torch.sqrt(((x - mean) ** 2).mean(0) + 1e-5) * w + b


def _random(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _conv_inputs(dtype):
    x = _random(1, 1, 5, 5, 2)
    x[0, 1, 2, 0], x[0, 3, 3, 1], x[0, 4, 0, 0] = NAN, INF, -INF
    return [x.astype(dtype), _random(2, 3, 3, 2, 3).astype(dtype)]


def _batch_norm_inputs(*constants, nan=False):
    def inputs(dtype):
        x = _random(3, 4, 5)
        x[:, : len(constants)] = constants  # constant columns: variance 0
        if nan:
            x[1, 4] = NAN
        return [x.astype(dtype), _random(4, 5).astype(dtype), _random(5, 5).astype(dtype)]

    return inputs


def _constant_columns(arrays):
    """batch_norm's ties: each column of x whose entries are equal is one label (the others one
    each). The sum of n equal values v is exact whatever the order when every k * v (k <= n) is
    representable, so the mean is v and x - mean is exactly 0: the column moves as a whole
    under rounding, and batch norm does not change when a column does (its terms cancel)."""
    x = arrays[0]
    labels = np.arange(x.size).reshape(x.shape)
    for j in range(x.shape[1]):
        v = x[0, j]
        if np.all(x[:, j] == v):
            k = np.arange(1, x.shape[0] + 1)
            assert np.all((k * v).astype(x.dtype) == k * v.astype(np.float64)), (j, v)  # exact sums
            labels[:, j] = -1 - j
    return [labels, None, None]


def _labelled(logits, labels):
    return lambda dtype: [np.array(logits, dtype), np.array(labels, np.int64)]


def _pool_inputs(dtype):
    """NCHW (1, 2, 5, 5): nan, +-inf, a corner of -inf (a window of -inf next to the -inf padding),
    and ties."""
    x = _random(6, 1, 2, 5, 5)
    x[0, 0, 1, 1], x[0, 0, 3, 3], x[0, 0, 4, 0] = NAN, INF, -INF
    x[0, 1, :2, :2] = -INF
    x[0, 1, 3:, 3:] = 2.0
    return [x.astype(dtype)]


def _bce_inputs(dtype):
    """Probabilities at and next to 0 and 1 (where the logarithms are clamped at -100 and the
    gradient's denominator at 1e-12), each against targets 0, 1 and 0.25."""
    tiny = np.finfo(dtype).smallest_normal / 8
    x = np.array([0.0, 1e-30, tiny, 1e-13, 0.3, 0.5, 0.999, 1.0], dtype)
    t = np.array([0.0, 1.0, 0.25], dtype)
    return [np.repeat(x, t.size), np.tile(t, x.size)]


def _bce_logits_inputs(dtype):
    e = edges(dtype)
    t = np.array([0.0, 1.0, 0.25], dtype)
    return [np.repeat(e, t.size), np.tile(t, e.size)]


def _where_inputs(dtype):
    x, y = pairs(dtype)
    return [np.arange(x.size) % 3 == 0, x, y]


def _masked_inputs(dtype):
    x = edges(dtype)
    return [np.arange(x.size) % 3 == 1, x]


def _gather_inputs(dtype):
    """ROWS and indices into their columns, repeated ones included (their gradients add up)."""
    x = np.array(ROWS, dtype)
    index = (np.arange(x.shape[0] * 3).reshape(-1, 3) * 7 % 5) % x.shape[1]
    index[0] = [2, 2, 2]
    return [x, index.astype(np.int64)]


unary = {
    "negate": lambda L, x: -x,
    "abs": lambda L, x: x.abs(),
    "sin": lambda L, x: x.sin(),
    "cos": lambda L, x: x.cos(),
    "log10": lambda L, x: x.log10(),
    "log": lambda L, x: x.log(),
    "log1p": lambda L, x: L.log1p(x),
    "exp": lambda L, x: x.exp(),
    "relu": lambda L, x: x.relu(),
    "tanh": lambda L, x: L.tanh(x),
    "sqrt": lambda L, x: x.sqrt(),
}
binary = {
    "add": lambda L, x, y: x + y,
    "sub": lambda L, x, y: x - y,
    "mul": lambda L, x, y: x * y,
    "div": lambda L, x, y: L.div(x, y),
    "pow": lambda L, x, y: L.pow(x, y),
    "maximum": lambda L, x, y: L.maximum(x, y),
}
scalar = {  # (name, fn) for each scalar operand, edges included
    **{f"x + {s}": (lambda L, x, s=s: x + s) for s in (2.5, INF, NAN)},
    **{f"x - {s}": (lambda L, x, s=s: x - s) for s in (2.5, -INF)},
    **{f"{s} - x": (lambda L, x, s=s: s - x) for s in (2.5, 0.0, INF)},
    **{f"x * {s}": (lambda L, x, s=s: x * s) for s in (2.5, 0.0, -0.0, INF, 1e-30)},
    **{f"x / {s}": (lambda L, x, s=s: x / s) for s in (2.5, 0.0, -0.0, INF, 1e-30)},
    **{f"{s} / x": (lambda L, x, s=s: L.rdiv(s, x)) for s in (2.5, 0.0, -1.0, INF)},
    **{f"x ** {s}": (lambda L, x, s=s: L.pow(x, s))
       for s in (0, 0.0, 1, 2, 3, -1, -2, -3, 0.5, -0.5, 1.5, -1.5, INF, NAN)},
    **{f"{s} ** x": (lambda L, x, s=s: s ** x) for s in (0.0, -0.0, 1.0, 2.0, 0.5, -2.0, INF, NAN)},
    **{f"maximum(x, {s})": (lambda L, x, s=s: L.maximum(x, s)) for s in (0.0, 1.0, INF, -INF, NAN)},
    **{f"clamp(x, {lo}, {hi})": (lambda L, x, lo=lo, hi=hi: x.clamp(lo, hi))
       for lo, hi in ((-1.0, 2.0), (0.0, None), (None, 1e8), (2.5, -1.0), (-INF, INF), (NAN, None))},
}


CASES = [
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)]) for op, fn in unary.items()],
    *[Case(op, "edge pairs", fn, pairs) for op, fn in binary.items()],
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)]) for op, fn in scalar.items()],
    *[Case(f"x ** {s}", "edges", lambda L, x, s=s: L.pow(x, s), lambda dtype: [edges(dtype)], note=POW_NOTE,
           torch_fn=lambda x, s=s: Torch.pow(x, s)) for s in (1e8, -1e8)],
    Case("sigmoid", "edges", lambda L, x: x.sigmoid(), lambda dtype: [edges(dtype)], note=SIGMOID_NOTE,
         torch_fn=Torch.sigmoid),
    # where sigmoid is a normal number, log(sigmoid) is finite with a finite gradient
    Case("log(sigmoid)", "tails", lambda L, x: L.sigmoid(x).log(),
         const([-80.0, -20.0, -5.0, 0.0, 2.0, -INF, INF, NAN])),
    Case("where", "edge pairs", lambda L, c, x, y: L.where(c, x, y), _where_inputs),
    Case("clamp(x, lo, hi)", "edge triples", lambda L, x, lo, hi: x.clamp(lo, hi),
         lambda dtype: [*pairs(dtype), np.roll(pairs(dtype)[1], 7)]),
    Case("clamp(x, max=hi)", "edge pairs", lambda L, x, hi: x.clamp(max=hi), pairs),
    *[Case(f"summation{axes}", "rows", lambda L, x, a=axes: L.sum(x, a), const(ROWS)) for axes in ((1,), (0,))],
    *[Case(f"mean{axes}", "rows", lambda L, x, a=axes: L.mean(x, a), const(ROWS)) for axes in ((1,), (0,))],
    *[Case(f"max{axes}", "rows", lambda L, x, a=axes: L.max(x, a), const(ROWS)) for axes in ((1,), (0,))],
    Case("max(1, 2)", "rows", lambda L, x: L.max(x, (1, 2)), rows3, note=MAX_NOTE,
         torch_fn=lambda x: _group_max(x, (1, 2))),
    *[Case(f"logsumexp{axes}", "rows", lambda L, x, a=axes: L.logsumexp(x, a), const(ROWS))
      for axes in ((1,), (0,))],
    Case("logsumexp(1, 2)", "rows", lambda L, x: L.logsumexp(x, (1, 2)), rows3),
    *[Case(f"logsoftmax({axis})", "rows", lambda L, x, a=axis: L.logsoftmax(x, a), const(ROWS)) for axis in (1, 0)],
    *[Case(f"softmax({axis})", "rows", lambda L, x, a=axis: L.softmax(x, a), const(ROWS)) for axis in (1, 0)],
    *[Case(op, edge, fn, const(values)) for edge, values in WHOLE.items() for op, fn in (
        ("summation()", lambda L, x: L.sum(x)),
        ("mean()", lambda L, x: L.mean(x)),
        ("max()", lambda L, x: L.max(x)),
        ("logsumexp()", lambda L, x: L.logsumexp(x)),
        ("min()", lambda L, x: L.min(x)),
        ("argmin()", lambda L, x: L.argmin(x)),
        ("var()", lambda L, x: x.var()),
    )],
    Case("matmul", "inf and nan entries", lambda L, a, b: a @ b, lambda dtype: [
        np.array([[INF, 1.0, 0.0, 2.0], [NAN, 0.0, 1.0, -1.0], [1.0, -INF, 2.0, 0.0], [1e8, 1e-30, -1.0, 0.5]],
                 dtype),
        np.array([[0.0, 1.0], [2.0, 0.0], [INF, -1.0], [1.0, 1e8]], dtype)]),
    Case("broadcast_to", "nan and inf", lambda L, x: x.broadcast_to((3, 4)), const([[NAN], [INF], [-0.0]])),
    Case("reshape", "nan and inf", lambda L, x: x.reshape((2, 3)), const([NAN, INF, -INF, 0.0, -0.0, 1e-30])),
    Case("transpose", "nan and inf", lambda L, x: L.transpose(x, 0, 1), const([[NAN, INF, 1.0], [-INF, 0.0, 2.0]])),
    Case("matmul", "batched, broadcast, nan", lambda L, a, b: a @ b, lambda dtype: [
        np.array([[[NAN, 1.0], [0.0, 2.0]], [[INF, 0.0], [1e-30, -INF]]], dtype),
        np.array([[0.0, 1.0, -1.0], [INF, 2.0, 1e8]], dtype)]),
    Case("permute", "nan and inf", lambda L, x: L.permute(x, (2, 0, 1)), rows3),
    Case("flip", "nan and inf", lambda L, x: L.flip(x, (0, 1)), const(ROWS)),
    Case("stack", "nan and inf", lambda L, x, y: L.stack([x, y], 1), pairs),
    Case("split", "one slice used", lambda L, x: L.unbind(x, 1)[1] * 2.0, const(ROWS)),
    Case("cat", "nan and inf", lambda L, x, y: L.cat([x, y, x], 0), pairs),
    Case("split (PyTorch's)", "one piece used", lambda L, x: x.split(3, 1)[1] * 2.0, const(ROWS)),
    Case("chunk", "two pieces used", lambda L, x: x.chunk(3, 0)[0] - x.chunk(3, 0)[2], const(ROWS)),
    Case("narrow", "nan and inf", lambda L, x: x.narrow(1, -3, 2), const(ROWS)),
    Case("roll", "nan and inf", lambda L, x: x.roll((2, -1), (0, 1)), const(ROWS)),
    Case("roll", "flattened", lambda L, x: x.roll(5), const(ROWS)),
    Case("expand", "nan and inf", lambda L, x: x.unsqueeze(0).expand(3, -1, -1), const(ROWS)),
    Case("clone", "nan and inf", lambda L, x: x.clone(), lambda dtype: [edges(dtype)]),
    *[Case(f"tril({d})", "nan and inf", lambda L, x, d=d: x.tril(d), const(ROWS)) for d in (0, -2, 1)],
    *[Case(f"triu({d})", "nan and inf", lambda L, x, d=d: x.triu(d), const(ROWS)) for d in (0, 2, -1)],
    Case("masked_fill", "edges", lambda L, m, x: x.masked_fill(m, -INF), _masked_inputs),
    Case("gather", "repeated indices", lambda L, x, i: L.gather(x, 1, i), _gather_inputs),
    *[Case(f"min{axes}", "rows", lambda L, x, a=axes: L.min(x, a), const(ROWS)) for axes in ((1,), (0,))],
    *[Case(f"argmin({axis})", "rows", lambda L, x, a=axis: L.argmin(x, a), const(ROWS)) for axis in (1, 0)],
    *[Case(f"var({dim}, correction={c})", "rows", lambda L, x, d=dim, c=c: x.var(d, correction=c), const(ROWS))
      for dim, c in ((1, 1), (0, 1), (1, 0))],
    Case("fused_add_scalars", "inf scalars", lambda L, x: L.stack(list(L.add_scalars(x, INF, -1e8)), 0),
         lambda dtype: [edges(dtype)]),
    Case("dilate", "nan and inf", lambda L, x: L.dilate(x, 1, 2), const(ROWS)),
    Case("undilate", "nan and inf", lambda L, x: L.undilate(x, 0, 1), const(ROWS)),
    *[Case(f"cast to {target}", "overflow, underflow, rounding", lambda L, x, t=target: L.cast(x, t),
           lambda dtype, t=target: [(edges("float64") if dtype == t else np.array(
               [1e39, -1e39, 1e-46, -1e-46, 1.5e-45, 16777217.0, 0.1, 3.4028235e38, NAN, INF, -0.0])).astype(dtype)],
           c=0, why="a conversion is correctly rounded (IEEE) on every CPU: exact")
      for target in DTYPES],
    *[Case(op, "edge pairs", fn, pairs) for op, fn in (
        ("less", lambda L, x, y: x < y), ("less_equal", lambda L, x, y: x <= y),
        ("greater", lambda L, x, y: x > y), ("greater_equal", lambda L, x, y: x >= y),
        ("equal", lambda L, x, y: L.eq(x, y)), ("not_equal", lambda L, x, y: L.ne(x, y)))],
    *[Case(f"argmax({axis})", "rows", lambda L, x, a=axis: L.argmax(x, a), const(ROWS)) for axis in (1, 0)],
    *[Case("argmax()", edge, lambda L, x: L.argmax(x), const(values)) for edge, values in WHOLE.items()],
    Case("getitem", "repeated indices", lambda L, x: x[[0, 0, 2, 4, 4, 4]], const([NAN, INF, -INF, 1e-30, 2.0])),
    Case("getitem", "repeated rows", lambda L, x: x[[2, 2, 0], 1:], const([[NAN, 1.0, 2.0], [3.0, INF, 4.0],
                                                                          [5.0, 6.0, -INF]])),
    *[Case(f"conv(stride={s}, padding={p})", "nan and inf in the input",
           lambda L, x, w, s=s, p=p: L.conv(x, w, s, p), _conv_inputs) for s, p in ((1, 1), (2, 0))],
    *[Case("batch_norm", edge, lambda L, x, w, b: L.batch_norm(x, w, b), inputs, note=BATCH_NORM_NOTE,
           torch_fn=_batch_norm_unfused, tie=_constant_columns)
      for edge, inputs in (("constant columns", _batch_norm_inputs(2.0, 0.0)),
                           ("nan", _batch_norm_inputs(2.0, nan=True)),
                           ("constant column of 1e8", _batch_norm_inputs(1e8, 0.0)))],
    Case("erf", "edges", lambda L, x: L.erf(x), lambda dtype: [edges(dtype)]),
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)])
      for op, fn in (("gelu", lambda L, x: L.gelu(x)), ("gelu(tanh)", lambda L, x: L.gelu(x, approximate="tanh")))],
    Case("silu", "edges", lambda L, x: L.F.silu(x), lambda dtype: [edges(dtype)], note=SILU_NOTE,
         torch_fn=lambda x: x * Torch.sigmoid(x)),
    *[Case(f"softplus{args}", "edges", lambda L, x, a=args: L.F.softplus(x, *a), lambda dtype: [edges(dtype)])
      for args in ((), (2.0,), (0.5, 5.0))],
    Case("leaky_relu", "edges", lambda L, x: L.F.leaky_relu(x, 0.1), lambda dtype: [edges(dtype)]),
    Case("binary_cross_entropy", "0 and 1, clamped logarithms",
         lambda L, x, t: L.F.binary_cross_entropy(x, t, reduction="none"), _bce_inputs),
    Case("binary_cross_entropy_with_logits", "edges",
         lambda L, z, t: L.F.binary_cross_entropy_with_logits(z, t, reduction="none"), _bce_logits_inputs,
         note=BCE_LOGITS_NOTE, torch_fn=_bce_logits_both_sides),
    *[Case(op, "nan, inf, -inf windows, ties", fn, _pool_inputs) for op, fn in (
        ("max_pool2d(3, 2, 1)", lambda L, x: L.F.max_pool2d(x, 3, 2, 1)),
        ("max_pool2d(2, 1, 1)", lambda L, x: L.F.max_pool2d(x, 2, 1, 1)),
        ("avg_pool2d(3, 2, 1)", lambda L, x: L.F.avg_pool2d(x, 3, 2, 1)),
        ("adaptive_avg_pool2d(2)", lambda L, x: L.F.adaptive_avg_pool2d(x, 2)),
    )],
    *[Case("SoftmaxLoss", edge, lambda L, z, y: L.softmax_loss(z, y), _labelled(z, y)) for edge, z, y in (
        ("huge logits", [[1e8, 1e8], [-1e8, 1e8], [1e8, -1e8]], [1, 0, 1]),
        ("-inf logits", [[0.0, -INF, 1.0], [-INF, 2.0, -INF]], [0, 1]),
        ("-inf at the label", [[-INF, 0.0, 1.0]], [0]),
        ("+inf logit", [[1.0, INF, 0.0], [0.0, 1.0, 2.0]], [1, 0]),
        ("nan logit", [[1.0, NAN, 0.0], [0.0, 1.0, 2.0]], [0, 2]),
    )],
]


@dataclass
class Reference:
    """A case's float64 reference at one test dtype (see the module's docstring)."""

    dtype: str  # the output's dtype at the test's dtype, PyTorch's promotion
    out: np.ndarray  # float64, or the bool/int64 result of a comparison or argmax
    out_scale: Optional[np.ndarray] = None  # u (|r| + S) + eta (1 + A) per value: the tolerance is c times it
    w: Optional[np.ndarray] = None  # the weights of sum(out * w), in the output's dtype
    grads: tuple = ()  # per differentiated input, float64
    grad_scales: tuple = ()


_REFERENCES: dict = {}


def reference(case: Case, dtype: str) -> Reference:
    """The case's reference at `dtype`, computed once per process (each backend reuses it)."""
    key = (case.id, dtype)
    if key not in _REFERENCES:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny inputs: intra-op threads would only contend with the other test workers
        Torch.dtype = dtype
        try:
            _REFERENCES[key] = _reference(case, dtype)
        finally:
            Torch.dtype, Torch.perturbations = "float64", None
            torch.set_num_threads(threads)
    return _REFERENCES[key]


# How S (and A) are computed. The first-order change of a value r under relative perturbations
# e_j of the inputs (|e_j| <= u) is sum_j (d r / d x_j) x_j e_j, at most u * S. S comes from
# PyTorch's float64 autograd: the Jacobian of the output (one batched backward pass), and for
# the gradient g of sum(out * w) the Jacobian of g (double backward) with respect to x, and
# |d g / d w| |w| = the output Jacobian's entries times |w|. Autograd rather than finite
# perturbations: it is exact to first order, and it holds comparisons fixed, as rounding does
# (a tie of equal float32 values stays a tie, max's gradient stays split among them, a zero
# stays zero, where perturbing the inputs would jump across).
# - A term d r / d x_j * x_j that is not finite counts 0: the off-diagonal entries of a batched
#   backward pass through an op whose derivative is inf or nan somewhere are 0 * inf = nan
#   (structurally 0); an infinite input or a zero one is not moved by a relative rounding; a nan
#   derivative of a finite value (pow's d / dy at a negative base and integer y) is a direction
#   the float computation does not take. Nothing here loosens the check: a term wrongly dropped
#   can only make it fail.
# - `Torch.intermediate(v)` adds the same sensitivity for an intermediate v of the formula: the
#   relative one |d r / d v| |v| to S, and |d r / d v| to A (its rounding below the normal range
#   is absolute, eta).
# - `Case.tie(arrays)` labels entries perturbed as one (a constant column whose mean is exact in
#   any order): their terms add before the absolute value.
def _conditions(jacobians, wrt, ties, n):
    """S and A of n values: jacobians[k] = d values / d wrt[k] (n rows), wrt = inputs, then
    (leaf, kind) pairs of marked intermediates; ties[k] the labels of input k or None."""
    s = torch.zeros(n, dtype=torch.float64)
    a = torch.zeros(n, dtype=torch.float64)
    for j, x, tie in zip(jacobians, wrt, ties):
        if j is None:
            continue
        j = j.reshape(n, -1).to(torch.float64)
        if isinstance(x, tuple):  # a marked intermediate: relative (|v| folded into j) or absolute
            leaf, kind = x
            term = torch.where(torch.isfinite(j), j, 0.0).abs().sum(1)
            if kind == "relative":
                s += term
            else:
                a += term
            continue
        term = j * x.detach().reshape(1, -1).to(torch.float64)
        term = torch.where(torch.isfinite(term), term, 0.0)
        if tie is not None:  # sum each label's terms: a one-hot (entries x labels) product
            labels = torch.as_tensor(np.unique(tie.reshape(-1), return_inverse=True)[1].reshape(-1))
            term = term @ torch.nn.functional.one_hot(labels).to(torch.float64)
        s += term.abs().sum(1)
    return s, a


def _jacobian(values, wrt):
    """d values / d wrt[k] for each k (None where unused), (values.numel(), *wrt[k].shape)."""
    n = values.numel()
    if not values.requires_grad:
        return [None] * len(wrt)
    rows = torch.eye(n, dtype=values.dtype).reshape(n, *values.shape)
    return list(torch.autograd.grad(values, wrt, rows, is_grads_batched=True, retain_graph=True, allow_unused=True))


def _scale(r, s, a, dtype):
    """u (|r| + S) + eta (1 + A), in the value's dtype's units."""
    with np.errstate(invalid="ignore", over="ignore"):
        return U[dtype] * (np.abs(r) + s) + ETA[dtype] * (1 + a)


def _reference(case: Case, dtype: str) -> Reference:
    arrays = case.inputs(dtype)
    fn = case.torch_fn or (lambda *t: case.fn(Torch, *t))
    with torch.no_grad():  # PyTorch's output dtype at the test's dtype (its values are not used)
        out_dtype = str(fn(*[torch.tensor(a) for a in arrays]).dtype).removeprefix("torch.")
    Torch.perturbations = []
    wide = [torch.tensor(a.astype(np.float64) if a.dtype.kind == "f" else a, requires_grad=a.dtype.kind == "f")
            for a in arrays]
    out = fn(*wide)
    if not out.dtype.is_floating_point:  # comparisons and argmax: values, no gradient
        return Reference(out_dtype, out.numpy())
    x = [t for t in wide if t.requires_grad]
    float_dtypes = [a.dtype.name for a in arrays if a.dtype.kind == "f"]
    ties = case.tie(arrays) if case.tie else [None] * len(arrays)
    ties = [tie for tie, a in zip(ties, arrays) if a.dtype.kind == "f"]
    n = out.numel()
    forward = list(Torch.perturbations)
    wrt = x + forward
    jacobian = _jacobian(out, x + [leaf for leaf, _ in forward])
    s, a = _conditions(jacobian, wrt, ties + [None] * len(forward), n)
    del Torch.perturbations[len(forward):]  # those the Jacobian's backward pass marked: not in any graph kept
    out_scale = _scale(out.detach().numpy().astype(np.float64), s.reshape(out.shape).numpy(),
                       a.reshape(out.shape).numpy(), out_dtype)

    w = _random(zlib.crc32(case.id.encode()), *out.shape).astype(out_dtype)
    grads = torch.autograd.grad(out, x, torch.tensor(w, dtype=out.dtype), create_graph=True, allow_unused=True)
    leaves = list(Torch.perturbations)  # the forward's, then those its backward marked
    out_jacobian = jacobian[: len(x)]
    ref_grads, grad_scales = [], []
    for k, (g, xk) in enumerate(zip(grads, x)):
        m = xk.numel()
        g = torch.zeros_like(xk) if g is None else g
        jacobians = _jacobian(g, x + [leaf for leaf, _ in leaves])
        s, a = _conditions(jacobians, x + leaves, ties + [None] * len(leaves), m)
        if out_jacobian[k] is not None:  # |d g / d w| |w|: the output's Jacobian, transposed
            term = out_jacobian[k].reshape(n, m).to(torch.float64) * torch.tensor(w, dtype=torch.float64).reshape(n, 1)
            s += torch.where(torch.isfinite(term), term, 0.0).abs().sum(0)
        ref_grads.append(g.detach().numpy().astype(np.float64))
        grad_scales.append(_scale(ref_grads[-1], s.reshape(xk.shape).numpy(), a.reshape(xk.shape).numpy(),
                                  float_dtypes[k]))
    return Reference(out_dtype, out.detach().numpy().astype(np.float64), out_scale, w,
                     tuple(ref_grads), tuple(grad_scales))


def check(actual: np.ndarray, expected: np.ndarray, tol, what: str, inputs) -> None:
    """needle's `actual` against the float64 `expected`: nan and +-inf exactly where `expected`
    rounded to actual's dtype is, |actual - rounded| <= tol elsewhere."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    rounded = expected.astype(actual.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        special = ~np.isfinite(rounded)
        same = (actual == rounded) | (np.isnan(actual) & np.isnan(rounded))
        close = np.abs(actual.astype(np.float64) - rounded.astype(np.float64)) <= tol
    wrong = ~np.where(special, same, close)
    if wrong.any():
        tol = np.broadcast_to(tol, expected.shape)
        indices = [i for i in np.ndindex(wrong.shape) if wrong[i]]
        if expected.shape and all(np.shape(x) == expected.shape for x in inputs):
            # an elementwise case: say which input values went wrong
            bad = [tuple(x[i].item() for x in inputs) + (actual[i].item(), expected[i].item(), tol[i].item())
                   for i in indices]
            raise AssertionError(f"{what}: (inputs..., needle, reference, tolerance) {bad[:12]}")
        bad = [(i, actual[i].item(), expected[i].item(), tol[i].item()) for i in indices]
        raise AssertionError(f"{what}: {int(wrong.sum())} of {wrong.size} values off; "
                             f"(index, needle, reference, tolerance) {bad[:12]}")


def run_case(case: Case, dtype: str, device) -> None:
    """Compare the case's forward values and input gradients (of sum(out * w)) with its reference."""
    ref = reference(case, dtype)
    arrays = case.inputs(dtype)
    differentiated = [a.dtype.kind == "f" for a in arrays]
    n_in = [ndl.Tensor(a, device=device, dtype=a.dtype.name, requires_grad=d) for a, d in zip(arrays, differentiated)]
    n_out = case.fn(Needle, *n_in)
    assert ndl.array_api.dtype_name(n_out.dtype) == ref.dtype, (n_out.dtype, ref.dtype)
    if ref.out_scale is None:  # comparisons and argmax: exact
        np.testing.assert_array_equal(n_out.numpy(), ref.out)
        return
    n_out.backward(ndl.Tensor(ref.w, device=device, dtype=ref.w.dtype.name))
    check(n_out.numpy(), ref.out, case.c * ref.out_scale, "forward", arrays)
    grads = [n.grad.numpy() for n, d in zip(n_in, differentiated) if d]
    for k, (grad, expected, scale) in enumerate(zip(grads, ref.grads, ref.grad_scales)):
        check(grad, expected, case.c * scale, f"gradient of float input {k}", arrays)
