"""The edge sweep's table: every op, forward and backward, on the edges of its domain,
next to its PyTorch counterpart.

Shared by tests/test_op_edges.py (nd mode, devices cpu and cpu_numpy) and
tests/np_mode/test_op_edges_np.py (numpy mode). A case is an op written once for both
libraries, `fn(L, *inputs)` where `L` is `Needle` or `Torch` (the few calls whose names
differ); operators and methods the two share are used directly. `run_case` compares the
forward values and the gradient of sum(out * w), w a fixed random tensor, with
PyTorch's: nan where PyTorch gives nan, inf of the same sign, `rtol` elsewhere.

A case whose `note` is set is a deliberate difference from one PyTorch function: its
`torch_fn` is the PyTorch expression needle follows instead, and the note says why.
"""
from __future__ import annotations

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
RTOL = {"float32": 2e-6, "float64": 1e-13}


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


class Needle:
    """The calls whose names or conventions differ, needle's side."""

    F = NF  # needle.nn.functional has torch.nn.functional's signatures

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


class Torch:
    """The same calls in PyTorch."""

    F = F

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


@dataclass
class Case:
    op: str
    edge: str
    fn: Callable  # fn(L, *inputs), L = Needle or Torch
    inputs: Callable  # dtype -> list of numpy arrays; float ones are differentiated
    rtol: Optional[dict] = None  # per dtype, where the default is too tight (with the reason in `why`)
    atol: Optional[dict] = None
    why: str = ""
    note: str = ""  # a deliberate difference from PyTorch, one line
    torch_fn: Optional[Callable] = None  # with `note`: torch_fn(*inputs), what needle follows instead

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
BATCH_NORM_NOTE = ("batch norm computes (x - mean) / sqrt(var + eps), exactly 0 for a constant column; PyTorch's CPU "
                   "kernel folds it into x * scale + shift, which for a column of 1e8 cancels to an error of 1e3")


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


def _where_inputs(dtype):
    x, y = pairs(dtype)
    return [np.arange(x.size) % 3 == 0, x, y]


unary = {
    "negate": lambda L, x: -x,
    "log": lambda L, x: x.log(),
    "exp": lambda L, x: x.exp(),
    "relu": lambda L, x: x.relu(),
    "tanh": lambda L, x: x.tanh(),
    "sqrt": lambda L, x: x.sqrt(),
}
binary = {
    "add": lambda L, x, y: x + y,
    "sub": lambda L, x, y: x - y,
    "mul": lambda L, x, y: x * y,
    "div": lambda L, x, y: x / y,
    "pow": lambda L, x, y: x ** y,
    "maximum": lambda L, x, y: L.maximum(x, y),
}
scalar = {  # (name, fn) for each scalar operand, edges included
    **{f"x + {s}": (lambda L, x, s=s: x + s) for s in (2.5, INF, NAN)},
    **{f"x - {s}": (lambda L, x, s=s: x - s) for s in (2.5, -INF)},
    **{f"{s} - x": (lambda L, x, s=s: s - x) for s in (2.5, 0.0, INF)},
    **{f"x * {s}": (lambda L, x, s=s: x * s) for s in (2.5, 0.0, -0.0, INF, 1e-30)},
    **{f"x / {s}": (lambda L, x, s=s: x / s) for s in (2.5, 0.0, -0.0, INF, 1e-30)},
    **{f"{s} / x": (lambda L, x, s=s: s / x) for s in (2.5, 0.0, -1.0, INF)},
    **{f"x ** {s}": (lambda L, x, s=s: x ** s)
       for s in (0, 0.0, 1, 2, 3, -1, -2, -3, 0.5, -0.5, 1.5, -1.5, INF, NAN)},
    **{f"{s} ** x": (lambda L, x, s=s: s ** x) for s in (0.0, -0.0, 1.0, 2.0, 0.5, -2.0, INF, NAN)},
    **{f"maximum(x, {s})": (lambda L, x, s=s: L.maximum(x, s)) for s in (0.0, 1.0, INF, -INF, NAN)},
}


CASES = [
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)]) for op, fn in unary.items()],
    *[Case(op, "edge pairs", fn, pairs) for op, fn in binary.items()],
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)]) for op, fn in scalar.items()],
    *[Case(f"x ** {s}", "edges", lambda L, x, s=s: x ** s, lambda dtype: [edges(dtype)], note=POW_NOTE,
           torch_fn=lambda x, s=s: x ** torch.tensor(s, dtype=x.dtype)) for s in (1e8, -1e8)],
    Case("sigmoid", "edges", lambda L, x: x.sigmoid(), lambda dtype: [edges(dtype)], note=SIGMOID_NOTE,
         torch_fn=lambda x: torch.exp(F.logsigmoid(x))),
    # where sigmoid is a normal number, log(sigmoid) is finite with a finite gradient
    Case("log(sigmoid)", "tails", lambda L, x: x.sigmoid().log(),
         const([-80.0, -20.0, -5.0, 0.0, 2.0, -INF, INF, NAN])),
    Case("where", "edge pairs", lambda L, c, x, y: L.where(c, x, y), _where_inputs),
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
    Case("fused_add_scalars", "inf scalars", lambda L, x: L.stack(list(L.add_scalars(x, INF, -1e8)), 0),
         lambda dtype: [edges(dtype)]),
    Case("dilate", "nan and inf", lambda L, x: L.dilate(x, 1, 2), const(ROWS)),
    Case("undilate", "nan and inf", lambda L, x: L.undilate(x, 0, 1), const(ROWS)),
    *[Case(f"cast to {target}", "overflow, underflow, rounding", lambda L, x, t=target: L.cast(x, t),
           lambda dtype, t=target: [(edges("float64") if dtype == t else np.array(
               [1e39, -1e39, 1e-46, -1e-46, 1.5e-45, 16777217.0, 0.1, 3.4028235e38, NAN, INF, -0.0])).astype(dtype)])
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
           lambda L, x, w, s=s, p=p: L.conv(x, w, s, p), _conv_inputs, atol={"float32": 1e-6, "float64": 1e-14},
           why="sums of products that cancel: the summation order's rounding is absolute, not relative")
      for s, p in ((1, 1), (2, 0))],
    *[Case("batch_norm", edge, lambda L, x, w, b: L.batch_norm(x, w, b), inputs,
           rtol={"float32": 1e-4, "float64": 1e-12}, atol={"float32": 1e-5, "float64": 1e-12},
           why="PyTorch's x * scale + shift rounds at 1e-5 of |x| * scale in float32, and the three terms of the "
           "gradient cancel")
      for edge, inputs in (("constant columns", _batch_norm_inputs(2.0, 0.0)),
                           ("nan", _batch_norm_inputs(2.0, nan=True)))],
    Case("batch_norm", "constant column of 1e8", lambda L, x, w, b: L.batch_norm(x, w, b),
         _batch_norm_inputs(1e8, 0.0), note=BATCH_NORM_NOTE, torch_fn=_batch_norm_unfused),
    Case("erf", "edges", lambda L, x: L.erf(x), lambda dtype: [edges(dtype)]),
    *[Case(op, "edges", fn, lambda dtype: [edges(dtype)], atol={"float32": 3e-7, "float64": 1e-300},
           why="x/2 (1 + erf(x / sqrt 2)) cancels for x < 0 (PyTorch's formula too): in float32 each side rounds "
           "1 + erf to its own 1e-7 (ours nearer the float64 value at x = -3); in float64 torch's exact gradient "
           "x * pdf at x = -20 is a denormal, reached by another rounding")
      for op, fn in (("gelu", lambda L, x: L.F.gelu(x)), ("gelu(tanh)", lambda L, x: L.F.gelu(x, approximate="tanh")))],
    Case("silu", "edges", lambda L, x: L.F.silu(x), lambda dtype: [edges(dtype)], note=SILU_NOTE,
         torch_fn=lambda x: x * torch.exp(F.logsigmoid(x))),
    Case("leaky_relu", "edges", lambda L, x: L.F.leaky_relu(x, 0.1), lambda dtype: [edges(dtype)]),
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


def _check(actual, expected, rtol, atol, what, inputs):
    try:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as error:
        expected = np.asarray(expected)
        if expected.shape and all(np.shape(x) == expected.shape for x in inputs):
            # an elementwise case: say which input values went wrong
            close = np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
            bad = [tuple(x[i].item() for x in inputs) + (actual[i].item(), expected[i].item())
                   for i in zip(*np.nonzero(~close))]
            raise AssertionError(f"{what}: (inputs..., needle, torch) {bad[:12]}") from error
        raise AssertionError(f"{what}: {error}") from None


def run_case(case: Case, dtype: str, device) -> None:
    """Compare the case's forward values and input gradients (of sum(out * w)) with PyTorch's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: intra-op threads would only contend with the other test workers
    try:
        _run_case(case, dtype, device)
    finally:
        torch.set_num_threads(threads)


def _run_case(case: Case, dtype: str, device) -> None:
    arrays = case.inputs(dtype)
    differentiated = [a.dtype.kind == "f" for a in arrays]
    t_in = [torch.tensor(a, requires_grad=d) for a, d in zip(arrays, differentiated)]
    t_out = case.torch_fn(*t_in) if case.torch_fn else case.fn(Torch, *t_in)
    n_in = [ndl.Tensor(a, device=device, dtype=a.dtype.name, requires_grad=d) for a, d in zip(arrays, differentiated)]
    n_out = case.fn(Needle, *n_in)
    expected = t_out.detach().numpy()
    assert ndl.array_api.dtype_name(n_out.dtype) == expected.dtype.name, (n_out.dtype, expected.dtype)
    if not t_out.dtype.is_floating_point:  # comparisons and argmax: values, no gradient
        np.testing.assert_array_equal(n_out.numpy(), expected)
        return

    w = _random(zlib.crc32(case.id.encode()), *t_out.shape).astype(expected.dtype)
    t_out.backward(torch.tensor(w))
    n_out.backward(ndl.Tensor(w, device=device, dtype=w.dtype.name))
    rtol, atol = (case.rtol or RTOL)[dtype], (case.atol or {}).get(dtype, 0.0)
    _check(n_out.numpy(), expected, rtol, atol, "forward", arrays)
    for k, (n, t, d) in enumerate(zip(n_in, t_in, differentiated)):
        if d:
            _check(n.grad.numpy(), t.grad.numpy(), rtol, atol, f"gradient of input {k}", arrays)
