"""The op -> ONNX mapping, in one table (`OP_TABLE`, at the end of this file).

Each entry is `emit(ctx, node)`: it reads the node's op (its arguments), asks `ctx` for
the ONNX names of the node's inputs, appends ONNX nodes through `ctx.graph` and returns
the name of the result (a list of names for an op whose result is a tuple). `ctx` is
the exporter's `_Context` (exporter.py): `name(value, dtype)`, `names(tuple_value)`,
`dims(value)`, `dtype(value)`, `versions(node)` (the node in each trace), `fit(values)` and
`shape(shapes)` (sizes that follow the dynamic axes, see dynamic.py), `reshape(...)`,
`constant(arrays, hint)` and `index_source(plan)`.

Ops without an entry (training-only or gradient ops: BatchNorm in training mode,
Dilate/UnDilate, ScatterItem, ConvWeightGrad, SparseTuple) are reported by name by the
exporter. ConvInputGrad, conv's adjoint, has one: it is F.conv_transpose2d's op.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union, cast

import numpy as np

from .. import ops
from .dynamic import Dim, Sym
from .graph import onnx_type

__all__ = ["OP_TABLE", "mapping_summary"]

_INT64_MAX = np.iinfo(np.int64).max


# --- helpers ---------------------------------------------------------------------------------

class Emitter(Protocol):
    """An entry of the table: `emit(ctx, node)` appends the node's ONNX nodes and returns the
    name of its result (a list of names for a tuple); `onnx` names the ONNX operators it writes;
    `sized` the op's arguments that it may compute from the sizes (ctx.scalar), which may then
    differ between the traces at other sizes of the dynamic axes (a mean's count)."""

    onnx: str
    sized: Tuple[str, ...]

    def __call__(self, ctx: Any, node: Any) -> Union[str, List[str]]: ...


def _writes(onnx: str, sized: Tuple[str, ...] = ()) -> Callable[[Callable], Emitter]:
    """Decorator: an emitter, tagged with the ONNX operators it writes (for mapping_summary) and
    the arguments it reads through ctx.scalar (`sized`)."""
    def tag(emit: Callable) -> Emitter:
        emitter = cast(Emitter, emit)
        emitter.onnx = onnx
        emitter.sized = sized
        return emitter
    return tag


def _axes(axes, ndim: int) -> List[int]:
    """None (every axis), an int or a sequence of ints, as sorted non-negative axes."""
    if axes is None:
        return list(range(ndim))
    if not isinstance(axes, (tuple, list)):
        axes = (axes,)
    return sorted(int(a) % ndim for a in axes)


def _unary(op_type: str) -> Emitter:
    @_writes(op_type)
    def emit(ctx, node):
        return ctx.graph.add(op_type, [ctx.name(node.inputs[0], ctx.dtype(node))])
    return emit


def _binary(op_type: str) -> Emitter:
    """Both operands converted to the result's dtype (needle promotes, ONNX does not)."""
    @_writes(op_type)
    def emit(ctx, node):
        dtype = ctx.dtype(node)
        return ctx.graph.add(op_type, [ctx.name(x, dtype) for x in node.inputs])
    return emit


def _with_scalar(op_type: str, *, scalar_first: bool = False, attribute: str = "scalar") -> Emitter:
    """A tensor-scalar op: the scalar becomes a 0-d constant of the result's dtype (or is computed
    from the sizes: ctx.scalar)."""
    @_writes(op_type, sized=(attribute,))
    def emit(ctx, node):
        dtype = ctx.dtype(node)
        x = ctx.name(node.inputs[0], dtype)
        s = ctx.scalar(node, dtype, attribute)
        return ctx.graph.add(op_type, [s, x] if scalar_first else [x, s])
    return emit


# --- elementwise -----------------------------------------------------------------------------

@_writes("Pow (Sqrt, Reciprocal, Mul for 0.5, -0.5, -1, 2)")
def _power_scalar(ctx, node):
    """a ** p. needle computes 0.5 as sqrt and -0.5 as 1 / sqrt (PowerScalar's docstring):
    so does the graph; 2 and -1 are exact as a * a and 1 / a."""
    p, dtype, g = node.op.scalar, ctx.dtype(node), ctx.graph
    x = ctx.name(node.inputs[0], dtype)
    if p == 0.5:
        return g.add("Sqrt", [x])
    if p == -0.5:
        return g.add("Reciprocal", [g.add("Sqrt", [x])])
    if p == 1:
        return g.add("Identity", [x])
    if p == 2:
        return g.add("Mul", [x, x])
    if p == -1:
        return g.add("Reciprocal", [x])
    return g.add("Pow", [x, g.constant(p, dtype)])



@_writes("Max + Min (a nan bound gives nan; low > high gives high, torch.clamp's)")
def _clamp(ctx, node):
    dtype, g = ctx.dtype(node), ctx.graph
    out = ctx.name(node.inputs[0], dtype)
    bounds = [node.op.low, node.op.high]
    return _clamp_by(g, out, [None if b is None else g.constant(b, dtype) for b in bounds], dtype)


@_writes("Max + Min with tensor bounds")
def _clamp_tensor(ctx, node):
    dtype = ctx.dtype(node)
    rest = [ctx.name(x, dtype) for x in node.inputs[1:]]
    low = rest.pop(0) if node.op.has_low else None
    high = rest.pop(0) if node.op.has_high else None
    return _clamp_by(ctx.graph, ctx.name(node.inputs[0], dtype), [low, high], dtype)


def _clamp_by(g, x: str, bounds, dtype: str) -> str:
    """min(max(x, low), high) as needle computes it; a nan on either side wins (Where on IsNaN, since
    ONNX leaves Max/Min of a nan to the runtime)."""
    low, high = bounds
    for name, op in ((low, "Max"), (high, "Min")):
        if name is None:
            continue
        picked = g.add(op, [x, name])
        if not dtype.startswith("float"):
            x = picked
            continue
        either_nan = g.add("Or", [g.add("IsNaN", [x]), g.add("IsNaN", [name])])
        x = g.add("Where", [either_nan, g.add("Add", [x, name]), picked])  # x + bound: nan where either is
    return x


@_writes("Identity")
def _clone(ctx, node):
    return ctx.graph.add("Identity", [ctx.name(node.inputs[0])])


@_writes("Trilu")
def _triangle(ctx, node):
    g = ctx.graph
    return g.add("Trilu", [ctx.name(node.inputs[0]), g.constant(node.op.diagonal, "int64")],
                 upper=int(not node.op.lower))


@_writes("Where")
def _where(ctx, node):
    cond, a, b = node.inputs
    dtype = ctx.dtype(node)
    return ctx.graph.add("Where", [ctx.name(cond), ctx.name(a, dtype), ctx.name(b, dtype)])



@_writes("Cast")
def _cast(ctx, node):
    return ctx.graph.add("Cast", [ctx.name(node.inputs[0])], to=onnx_type(node.op.dtype))



def _compare_dtype(ctx, node, ordering: bool) -> str:
    """The dtype a comparison's operands are compared in (needle's: the promotion of two tensors;
    a scalar is taken as it is, so an int or bool tensor meets a fractional scalar in float64,
    numpy's rule). ONNX orders numbers only: bool operands of <, <=, >, >= compare as int64."""
    from ..dtypes import result_dtype

    a = ctx.dtype(node.inputs[0])
    if len(node.inputs) == 2:
        dtype = result_dtype(a, ctx.dtype(node.inputs[1]))
    else:
        scalar = node.op.scalar
        if a in ("float32", "float64"):
            dtype = a
        elif isinstance(scalar, float) and not float(scalar).is_integer():
            dtype = "float64"
        elif isinstance(scalar, float):
            dtype = "float64" if a == "bool" else a
        elif a == "bool" and not isinstance(scalar, bool):
            dtype = "int64"
        else:
            dtype = a
    return "int64" if ordering and dtype == "bool" else dtype


def _comparison(op_type: str, negate: bool = False) -> Emitter:
    """a (op) b for two tensors or a tensor and `op.scalar`, both in one dtype (_compare_dtype);
    != is Not(Equal) (nan != nan is true, as in IEEE)."""
    @_writes(f"Not({op_type})" if negate else op_type, sized=("scalar",))
    def emit(ctx, node):
        g = ctx.graph
        dtype = _compare_dtype(ctx, node, ordering=op_type != "Equal")
        operands = [ctx.name(x, dtype) for x in node.inputs]
        if len(operands) == 1:
            operands.append(ctx.scalar(node, dtype))
        out = g.add(op_type, operands)
        return g.add("Not", [out]) if negate else out
    return emit


def log1p_nodes(g, x: str, dtype: str) -> str:
    """log(1 + x) to a few ulps, with no ONNX Log1p: u = 1 + x, then log(u) * x / (u - 1) where
    u - 1 is not 0 (the rounding of 1 + x cancels in the ratio: D. Goldberg, "What every computer
    scientist should know about floating-point arithmetic", 1991, theorem 4), and x itself where
    it is (|x| below half an ulp of 1) or where x is +inf. A plain Log(1 + x) would lose every digit
    below 1e-8 (float32): softplus and BCE-with-logits take log1p of exp(-|z|), down to 1e-30."""
    one, zero = g.constant(1, dtype), g.constant(0, dtype)
    u = g.add("Add", [x, one])
    d = g.add("Sub", [u, one])
    y = g.add("Mul", [g.add("Log", [u]), g.add("Div", [x, d])])
    y = g.add("Where", [g.add("Equal", [d, zero]), x, y])
    return g.add("Where", [g.add("IsInf", [x], detect_negative=0), x, y])


@_writes("Add, Sub, Log, Div, Mul, Equal, IsInf, Where (log1p to a few ulps)")
def _log1p(ctx, node):
    dtype = ctx.dtype(node)
    return log1p_nodes(ctx.graph, ctx.name(node.inputs[0], dtype), dtype)


@_writes("Log, Max, Neg, (log1p), Sub, Mul")
def _binary_cross_entropy(ctx, node):
    """BinaryCrossEntropy: (t - 1) max(log1p(-x), -100) - t max(log x, -100), as its compute."""
    g, dtype = ctx.graph, ctx.dtype(node)
    x, t = (ctx.name(v, dtype) for v in node.inputs)
    clamp, one = g.constant(-100.0, dtype), g.constant(1, dtype)
    log_x = g.add("Max", [g.add("Log", [x]), clamp])
    log_not_x = g.add("Max", [log1p_nodes(g, g.add("Neg", [x]), dtype), clamp])
    return g.add("Sub", [g.add("Mul", [g.add("Sub", [t, one]), log_not_x]), g.add("Mul", [t, log_x])])


@_writes("ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add")
def _layer_norm(ctx, node):
    """LayerNorm's (out, mean, var) over the last axis, as its formula: (x - mean) / sqrt(var + eps)
    * w + b with the means taken by ReduceMean (onnxruntime's LayerNormalization computes the
    variance in a way that loses digits: 2e-12 off in float64 where this is exact to 1e-12)."""
    x, w, b = node.inputs
    g, axis, dtype = ctx.graph, len(x.shape) - 1, ctx.dtype(x)
    data = ctx.name(x)
    mean = g.add("ReduceMean", [data], axes=[axis], keepdims=1)
    centered = g.add("Sub", [data, mean])
    var = g.add("ReduceMean", [g.add("Mul", [centered, centered])], axes=[axis], keepdims=1)
    std = g.add("Sqrt", [g.add("Add", [var, g.constant(float(node.op.eps), dtype)])])
    out = g.add("Add", [g.add("Mul", [g.add("Div", [centered, std]), ctx.name(w)]), ctx.name(b)])
    return [out, mean, var]


@_writes("Cast, NegativeLogLikelihoodLoss")
def _nll_loss(ctx, node):
    """NLLLoss: ONNX's NegativeLogLikelihoodLoss with reduction 'mean' (no weights: the sum over the
    batch divided by its size), on int64 class ids."""
    log_probs = ctx.name(node.inputs[0], ctx.dtype(node))
    return ctx.graph.add("NegativeLogLikelihoodLoss", [log_probs, ctx.name(node.inputs[1], "int64")], reduction="mean")


@_writes("Cast, OneHot, Cast")
def _one_hot(ctx, node):
    """OneHot on int64 ids (ids outside [0, n) are refused by needle; ONNX would wrap negative ones)
    with int64 values, cast to the op's dtype (onnxruntime's OneHot has few output types)."""
    g = ctx.graph
    ids = ctx.name(node.inputs[0], "int64")
    rows = g.add("OneHot", [ids, g.constant(node.op.n, "int64"), g.ints([0, 1])], axis=-1)
    return g.add("Cast", [rows], to=onnx_type(node.op.dtype))


# --- shape -----------------------------------------------------------------------------------

@_writes("Transpose")
def _transpose(ctx, node):
    ndim = len(node.inputs[0].shape)
    i, j = (ndim - 2, ndim - 1) if node.op.axes is None else node.op.axes  # None: the last two
    perm = list(range(ndim))
    perm[i % ndim], perm[j % ndim] = perm[j % ndim], perm[i % ndim]
    return ctx.graph.add("Transpose", [ctx.name(node.inputs[0])], perm=perm)



@_writes("Transpose")
def _permute(ctx, node):
    ndim = len(node.inputs[0].shape)
    return ctx.graph.add("Transpose", [ctx.name(node.inputs[0])], perm=[a % ndim for a in node.op.axes])



@_writes("Reshape (0 / -1 for batch sizes, else a shape computed from the input's)")
def _reshape(ctx, node):
    x = node.inputs[0]
    return ctx.reshape(ctx.name(x), ctx.dims(x), ctx.dims(node))



@_writes("Expand")
def _broadcast_to(ctx, node):
    return ctx.graph.add("Expand", [ctx.name(node.inputs[0]), ctx.graph.shape(ctx.dims(node))])



@_writes("Unsqueeze + Concat")
def _stack(ctx, node):
    axis = node.op.axis % len(node.shape)
    g = ctx.graph
    pieces = [g.add("Unsqueeze", [name, g.ints([axis])]) for name in ctx.names(node.inputs[0])]
    return g.add("Concat", pieces, axis=axis)



@_writes("Concat")
def _concatenate(ctx, node):
    dtype = ctx.dtype(node)
    return ctx.graph.add("Concat", [ctx.name(x, dtype) for x in node.inputs[0]], axis=node.op.axis % len(node.shape))


@_writes("Split")
def _split_sections(ctx, node):
    x = node.inputs[0]
    axis = node.op.axis % len(x.shape)
    if isinstance(ctx.dims(x)[axis], Sym):
        raise NotImplementedError("needle.onnx: split along a dynamic axis has sizes fixed at export: export with "
                                  "that axis static")
    g = ctx.graph
    if len(node.op.sizes) == 1:
        return [g.add("Identity", [ctx.name(x)])]
    return g.add("Split", [ctx.name(x), g.ints(list(node.op.sizes))], outputs=len(node.op.sizes), axis=axis)


@_writes("Split + Squeeze")
def _split(ctx, node):
    x = node.inputs[0]
    axis = node.op.axis % len(x.shape)
    dim = ctx.dims(x)[axis]
    if isinstance(dim, Sym):
        raise NotImplementedError("needle.onnx: Split along the batch axis gives as many outputs as the batch "
                                  "has rows: export with dynamic_batch=False")
    g = ctx.graph
    if dim == 1:
        parts = [ctx.name(x)]
    else:
        parts = g.add("Split", [ctx.name(x), g.ints([1] * dim)], outputs=dim, axis=axis)
    return [g.add("Squeeze", [p, g.ints([axis])]) for p in parts]



@_writes("Split + Sigmoid + Tanh + Mul + Add")
def _lstm_gates(ctx, node):
    """The LSTM cell's pointwise part (ops.LSTMGates)."""
    z, c0 = node.inputs
    return _emit_gates(ctx.graph, ctx.name(z), ctx.name(c0), c0.shape[1])


def _emit_gates(g, z: str, c0: str, hidden: int) -> List[str]:
    """z's four column blocks (input, forget, cell, output gates) through their activations, then
    c = f * c0 + i * g, h = o * tanh(c): [h, c]."""
    i, f, cell, o = g.add("Split", [z, g.ints([hidden] * 4)], outputs=4, axis=1)
    i, f, cell, o = g.add("Sigmoid", [i]), g.add("Sigmoid", [f]), g.add("Tanh", [cell]), g.add("Sigmoid", [o])
    c = g.add("Add", [g.add("Mul", [f, c0]), g.add("Mul", [i, cell])])
    return [g.add("Mul", [o, g.add("Tanh", [c])]), c]


@_writes("Split + Squeeze + MatMul + Add + Sigmoid + Tanh + Mul + Unsqueeze + Concat")
def _lstm_layer(ctx, node):
    """An LSTM layer's recurrence (ops.LSTMLayer), unrolled over its fixed number of steps: each
    step's z = xw_t + h W_hh (+ b_hh), then the cell; the outputs stacked along axis 0."""
    xw, h0, c0, w_hh = node.inputs[:4]
    steps = ctx.dims(xw)[0]
    if isinstance(steps, Sym):
        raise ValueError("needle.onnx: an RNN/LSTM/GRU unrolled over the sequence cannot follow a dynamic sequence "
                         "axis; export that axis at a fixed size")
    g = ctx.graph
    hidden = c0.shape[1]
    parts = g.add("Split", [ctx.name(xw), g.ints([1] * steps)], outputs=steps, axis=0) if steps > 1 \
        else [ctx.name(xw)]
    h, c = ctx.name(h0), ctx.name(c0)
    outputs: List[List[str]] = [[], [], []]
    for part in parts:
        z = g.add("Add", [g.add("Squeeze", [part, g.ints([0])]), g.add("MatMul", [h, ctx.name(w_hh)])])
        if len(node.inputs) == 5:
            z = g.add("Add", [z, ctx.name(node.inputs[4])])
        h, c = _emit_gates(g, z, c, hidden)
        for out, name in zip(outputs, (h, c, z)):
            out.append(g.add("Unsqueeze", [name, g.ints([0])]))
    return [g.add("Concat", names, axis=0) for names in outputs]


@_writes("Slice (step -1)")
def _flip(ctx, node):
    x = node.inputs[0]
    axes = _axes(node.op.axes, len(x.shape))
    g = ctx.graph
    n = len(axes)
    return g.add("Slice", [ctx.name(x), g.ints([-1] * n), g.ints([-_INT64_MAX] * n), g.ints(axes),
                           g.ints([-1] * n)])



# --- reductions ------------------------------------------------------------------------------

@_writes("ReduceSum")
def _summation(ctx, node):
    x = node.inputs[0]
    axes = _axes(node.op.axes, len(x.shape))
    keepdims = int(bool(node.op.keepdims))
    if not axes:  # a 0-d input: nothing to reduce
        return ctx.graph.add("Identity", [ctx.name(x)])
    return ctx.graph.add("ReduceSum", [ctx.name(x), ctx.graph.ints(axes)], keepdims=keepdims)



@_writes("ReduceMax")
def _max(ctx, node):
    x = node.inputs[0]
    axes = _axes(node.op.axes, len(x.shape))
    if not axes:
        return ctx.graph.add("Identity", [ctx.name(x)])
    return ctx.graph.add("ReduceMax", [ctx.name(x)], axes=axes, keepdims=int(bool(node.op.keepdims)))



@_writes("ReduceMean, Sub, Mul, ReduceSum, Div (the count from Shape)")
def _variance(ctx, node):
    """sum((x - mean)^2) / max(0, N - correction), N computed from the input's shape, so that it
    follows the dynamic axes."""
    x = node.inputs[0]
    axes = _axes(node.op.axes, len(x.shape))
    dtype, g = ctx.dtype(node), ctx.graph
    name = ctx.name(x, dtype)
    mean = g.add("ReduceMean", [name], axes=axes, keepdims=1)
    centred = g.add("Sub", [name, mean])
    squares = g.add("ReduceSum", [g.add("Mul", [centred, centred]), g.ints(axes)], keepdims=int(bool(node.op.keepdims)))
    count = g.add("ReduceProd", [g.add("Gather", [g.add("Shape", [name]), g.ints(axes)], axis=0)], keepdims=0)
    divisor = g.add("Max", [g.add("Sub", [g.add("Cast", [count], to=onnx_type(dtype)),
                                          g.constant(float(np.asarray(node.op.correction).reshape(())), dtype)]),
                           g.constant(0, dtype)])
    return g.add("Div", [squares, divisor])


@_writes("ArgMax / ArgMin (Reshape to 1-D first for the flattened form)")
def _arg_extreme(ctx, node):
    x, g = node.inputs[0], ctx.graph
    name = ctx.name(x)
    op_type = "ArgMax" if node.op.largest else "ArgMin"
    if node.op.axis is None:
        flat = g.add("Reshape", [name, g.ints([-1])])
        out = g.add(op_type, [flat], axis=0, keepdims=0)
        if node.op.keepdims:
            out = g.add("Reshape", [out, g.ints([1] * len(x.shape))])
        return out
    return g.add(op_type, [name], axis=node.op.axis % len(x.shape), keepdims=int(bool(node.op.keepdims)))


@_writes("TopK (k = the axis' size; its indices)")
def _argsort(ctx, node):
    x, g = node.inputs[0], ctx.graph
    if not x.shape:
        return g.add("Reshape", [g.constant(0, "int64"), g.ints([])])
    axis = node.op.axis % len(x.shape)
    dims = ctx.dims(x)
    k = g.add("Gather", [g.add("Shape", [ctx.name(x)]), g.ints([axis])], axis=0)
    if isinstance(dims[axis], int):
        k = g.ints([dims[axis]])
    _, indices = g.add("TopK", [ctx.name(x), k], outputs=2, axis=axis, largest=int(node.op.descending), sorted=1)
    return indices


@_writes("GatherElements")
def _gather(ctx, node):
    a, index = node.inputs
    return ctx.graph.add("GatherElements", [ctx.name(a), ctx.name(index, "int64")], axis=node.op.axis)


@_writes("ReduceLogSumExp")
def _logsumexp(ctx, node):
    x = node.inputs[0]
    axes = _axes(node.op.axes, len(x.shape))
    if not axes:
        return ctx.graph.add("Identity", [ctx.name(x)])
    return ctx.graph.add("ReduceLogSumExp", [ctx.name(x)], axes=axes, keepdims=0)



def _softmax_like(op_type: str) -> Emitter:
    @_writes(op_type)
    def emit(ctx, node):
        return ctx.graph.add(op_type, [ctx.name(node.inputs[0])], axis=node.op.axis % len(node.shape))
    return emit


# --- matmul and convolution ------------------------------------------------------------------

@_writes("Sum")
def _add_n(ctx, node):
    """AddN: ONNX's n-ary Sum (its order of additions is the runtime's)."""
    dtype = ctx.dtype(node)
    return ctx.graph.add("Sum", [ctx.name(x, dtype) for x in node.inputs])


@_writes("Transpose, MatMul")
def _matmul_transposed(ctx, node):
    """MatMulTransposed: the flagged operands' last two axes swapped (Transpose), then MatMul."""
    g, dtype = ctx.graph, ctx.dtype(node)
    names = []
    for x, swap in zip(node.inputs, (node.op.transpose_a, node.op.transpose_b)):
        name = ctx.name(x, dtype)
        if swap:
            perm = list(range(len(x.shape)))
            perm[-2], perm[-1] = perm[-1], perm[-2]
            name = g.add("Transpose", [name], perm=perm)
        names.append(name)
    return g.add("MatMul", names)


@_writes("MatMul + Add")
def _addmm(ctx, node):
    """AddMM (a Linear layer): bias + a @ b, the bias broadcast by Add's numpy rule."""
    bias, a, b = node.inputs
    g, dtype = ctx.graph, ctx.dtype(node)
    return g.add("Add", [g.add("MatMul", [ctx.name(a, dtype), ctx.name(b, dtype)]), ctx.name(bias, dtype)])


@_writes("Transpose + Conv + Transpose")
def _conv(ctx, node):
    """needle's conv is NHWC with (KH, KW, Cin/groups, Cout) kernels; ONNX's is NCHW with
    (Cout, Cin/groups, KH, KW): transposes around it (onnxruntime cancels them against the
    module's own). The op's geometry maps one to one: strides, dilations, group, and its
    ((top, bottom), (left, right)) padding as pads [top, left, bottom, right]."""
    a, b = node.inputs
    dtype, g, op = ctx.dtype(node), ctx.graph, node.op
    kh, kw = b.shape[:2]
    (top, bottom), (left, right) = op.pads
    x = g.add("Transpose", [ctx.name(a, dtype)], perm=[0, 3, 1, 2])
    w = g.add("Transpose", [ctx.name(b, dtype)], perm=[3, 2, 0, 1])
    y = g.add("Conv", [x, w], kernel_shape=[kh, kw], pads=[top, left, bottom, right], strides=list(op.strides),
              dilations=list(op.dilations), group=op.groups)
    return g.add("Transpose", [y], perm=[0, 2, 3, 1])


@_writes("Transpose + ConvTranspose + Transpose")
def _conv_input_grad(ctx, node):
    """ConvInputGrad(g, b), conv's adjoint (what F.conv_transpose2d runs), is ONNX's ConvTranspose:
    the (N, H, W, C) g as X in NCHW, the (KH, KW, Cout/groups, C) kernel as ONNX's (C,
    Cout/groups, KH, KW) weight, the same strides, dilations and group, its padding as the pads
    cut from the full output, and output_padding the rows/columns of the op's input_shape past
    what the windows reach (zeros, as ONNX's)."""
    g_in, b = node.inputs
    dtype, g, op = ctx.dtype(node), ctx.graph, node.op
    kh, kw = b.shape[:2]
    (top, bottom), (left, right) = op.pads
    full = [s * (n - 1) + d * (k - 1) + 1 for s, n, d, k in zip(op.strides, g_in.shape[1:3], op.dilations, (kh, kw))]
    extra = [size + before + after - reach for size, before, after, reach
             in zip(op.input_shape[1:3], (top, left), (bottom, right), full)]
    x = g.add("Transpose", [ctx.name(g_in, dtype)], perm=[0, 3, 1, 2])
    w = g.add("Transpose", [ctx.name(b, dtype)], perm=[3, 2, 0, 1])
    y = g.add("ConvTranspose", [x, w], kernel_shape=[kh, kw], pads=[top, left, bottom, right],
              strides=list(op.strides), dilations=list(op.dilations), group=op.groups, output_padding=extra)
    return g.add("Transpose", [y], perm=[0, 2, 3, 1])


def _pool(op_type: str) -> Emitter:
    """MaxPool2d / AvgPool2d on NHWC: transposes around ONNX's NCHW MaxPool / AveragePool with
    the op's kernel, strides and symmetric padding (max pooling's padding never wins, as ONNX's;
    average pooling's count_include_pad carries over)."""
    @_writes(f"Transpose + {op_type} + Transpose")
    def emit(ctx, node):
        g, op = ctx.graph, node.op
        (ph, pw) = op.padding
        extra = {"count_include_pad": int(op.count_include_pad)} if op_type == "AveragePool" else {}
        x = g.add("Transpose", [ctx.name(node.inputs[0])], perm=[0, 3, 1, 2])
        y = g.add(op_type, [x], kernel_shape=list(op.kernel), strides=list(op.stride), pads=[ph, pw, ph, pw],
                  **extra)
        return g.add("Transpose", [y], perm=[0, 2, 3, 1])
    return emit


# --- indexing --------------------------------------------------------------------------------

def _slice_bounds(ctx, bounds: List[Dim]) -> str:
    """A 1-D int64 tensor of slice bounds, those that follow the dynamic axes computed."""
    return ctx.graph.shape(bounds)


@_writes("Slice / Reshape / Gather (indices: a graph value -- a model input, ids it computed -- or a constant)")
def _getitem(ctx, node):
    """tensor[index], as IndexPlan.gather does it: slices (Slice; a bound that follows the dynamic
    axes, such as mask[:T, :T], computed from the inputs' shapes), ints and None (Reshape), then
    one index array (Gather on that axis; the indices are the graph value the index came from,
    or a constant), or several constant ones (Gather of rows of the indexed axes, flattened)."""
    g = ctx.graph
    plans = [version.op.plan for version in ctx.versions(node)]
    plan = plans[0]
    x = ctx.name(node.inputs[0])
    starts, ends, axes, steps = [], [], [], []
    for axis in range(len(plan.basic)):
        slices = [p.basic[axis] for p in plans]
        sizes = [p.input_shape[axis] for p in plans]
        if all(s == slice(0, size, 1) for s, size in zip(slices, sizes)):
            continue
        what = f"a slice bound of axis {axis} of a tensor of shape {plan.input_shape}"
        starts.append(ctx.fit([s.start for s in slices], what))
        to_end = all(s.stop == size for s, size in zip(slices, sizes))
        ends.append(_INT64_MAX if to_end else ctx.fit([s.stop for s in slices], what))
        axes.append(axis)
        steps.append(ctx.fit([s.step for s in slices], what))
    if axes:
        x = g.add("Slice", [x, _slice_bounds(ctx, starts), _slice_bounds(ctx, ends), g.ints(axes),
                            _slice_bounds(ctx, steps)])
    sliced = ctx.shape([p.sliced_shape for p in plans], "a slice")
    view = ctx.shape([p.view_shape for p in plans], "a slice")
    if view != sliced:
        x = ctx.reshape(x, sliced, view)
    if not plan.advanced:
        return x
    source = ctx.index_source(plan)
    if source is not None and ctx.dtype(source) == "bool":
        raise NotImplementedError("needle.onnx: a bool mask computed in the graph used as an index (the result's "
                                  "size depends on the data)")
    if len(plan.adv_dims) == 1:  # one index array: numpy puts its axes where the indexed axis was
        if source is not None:
            indices = ctx.name(source, "int64")
        else:
            indices = ctx.constant([p.rows for p in plans], "indices")
        return g.add("Gather", [x, indices], axis=plan.perm[0])
    if source is not None or any(isinstance(view[p], Sym) for p in plan.perm[: len(plan.adv_dims)]):
        raise NotImplementedError("needle.onnx: GetItem with several index arrays can only be exported when "
                                  "they are constants and index axes of fixed size")
    x = g.add("Transpose", [x], perm=list(plan.perm))
    permuted = tuple(view[p] for p in plan.perm)
    rest = permuted[len(plan.adv_dims):]
    x = ctx.reshape(x, permuted, (int(np.prod(plan.adv_dims)),) + rest)
    x = g.add("Gather", [x, ctx.constant([p.rows for p in plans], "rows")], axis=0)
    if plan.result_perm is not None:
        x = g.add("Transpose", [x], perm=list(plan.result_perm))
    return x



@_writes("Reshape, Pad, Where (slices of step 1)")
def _setitem(ctx, node):
    """a with a[slices] = value (what F.pad's constant mode does): the value, padded out to a's
    shape at the slices' place, replaces a where a padded block of ones says so. Index arrays
    and steps other than 1 are refused."""
    g = ctx.graph
    plans = [version.op.plan for version in ctx.versions(node)]
    plan = plans[0]
    if plan.advanced or any(sl.step != 1 for p in plans for sl in p.basic):
        raise NotImplementedError("needle.onnx: x[index] = value is exported for slices of step 1 (and ints) only")
    a, value = node.inputs
    dtype = ctx.dtype(node)
    v = ctx.reshape(ctx.name(value, dtype), ctx.dims(value), ctx.shape([p.sliced_shape for p in plans]))
    what = "a slice bound of x[index] = value"
    axes = range(len(plan.basic))
    before = [ctx.fit([p.basic[axis].start for p in plans], what) for axis in axes]
    after = [ctx.fit([p.input_shape[axis] - p.basic[axis].stop for p in plans], what) for axis in axes]
    pads = g.shape(before + after)
    padded = g.add("Pad", [v, pads, g.constant(0, dtype)])
    ones = g.add("Expand", [g.constant(1, "int64"), g.add("Shape", [v])])
    inside = g.add("Cast", [g.add("Pad", [ones, pads, g.constant(0, "int64")])], to=onnx_type("bool"))
    return g.add("Where", [inside, padded, ctx.name(a, dtype)])


# --- tuples ----------------------------------------------------------------------------------

@_writes("(no node: a list of names)")
def _make_tuple(ctx, node):
    return [ctx.name(x) for x in node.inputs]



@_writes("(no node: picks a name)")
def _tuple_get_item(ctx, node):
    return ctx.names(node.inputs[0])[node.op.index]



@_writes("Add, Add")
def _fused_add_scalars(ctx, node):
    g = ctx.graph
    dtype = ctx.dtype(node.inputs[0])
    x = ctx.name(node.inputs[0])
    return [g.add("Add", [x, g.constant(node.op.c0, dtype)]), g.add("Add", [x, g.constant(node.op.c1, dtype)])]



# --- the table -------------------------------------------------------------------------------

def _primitive(cls: Any) -> Optional[Emitter]:  # an op class whose `primitive` is a str
    """The emitter of an op that computes one primitive (its `primitive` names the row of
    needle.primitives, whose `onnx` is the operator; its `form` says "scalar" for a tensor and
    `op.scalar`, "reverse" for `op.base` and a tensor); None where the row has no ONNX operator."""
    from ..primitives import BY_NAME

    p = BY_NAME[cls.primitive]
    if p.onnx is None:
        return None
    form = getattr(cls, "form", None)
    if p.dtype == "bool":  # a comparison: its operands keep their dtype
        return _comparison(p.onnx)
    if p.arity == 1:
        return _unary(p.onnx)
    if form == "scalar":
        return _with_scalar(p.onnx)
    if form == "reverse":
        return _with_scalar(p.onnx, scalar_first=True, attribute="base")
    return _binary(p.onnx)


_PRIMITIVE_OPS = [getattr(ops, name) for name in ops.__all__
                  if isinstance(getattr(ops, name), type) and isinstance(getattr(getattr(ops, name), "primitive", None),
                                                                         str)]

OP_TABLE: Dict[type, Emitter] = {
    # elementwise: the ops that compute one primitive, then the rest
    **{cls: emit for cls in _PRIMITIVE_OPS for emit in [_primitive(cls)] if emit is not None},
    ops.NotEqual: _comparison("Equal", negate=True),
    ops.NotEqualScalar: _comparison("Equal", negate=True),
    ops.Log1p: _log1p,
    ops.Erf: _unary("Erf"),
    ops.PowerScalar: _power_scalar,
    ops.ReLU: _unary("Relu"),
    ops.Where: _where,
    ops.Clamp: _clamp,
    ops.Triangle: _triangle,
    ops.ClampTensor: _clamp_tensor,
    ops.Cast: _cast,
    # shape
    ops.Transpose: _transpose,
    ops.Permute: _permute,
    ops.Reshape: _reshape,
    ops.BroadcastTo: _broadcast_to,
    ops.Stack: _stack,
    ops.Split: _split,
    ops.LSTMGates: _lstm_gates,
    ops.LSTMLayer: _lstm_layer,
    ops.Concatenate: _concatenate,
    ops.SplitSections: _split_sections,
    ops.Clone: _clone,
    ops.Flip: _flip,
    # reductions
    ops.Summation: _summation,
    ops.Max: _max,
    ops.Variance: _variance,
    ops.ArgExtreme: _arg_extreme,
    ops.Argsort: _argsort,
    ops.Gather: _gather,
    ops.LogSumExp: _logsumexp,
    ops.LogSoftmax: _softmax_like("LogSoftmax"),
    ops.Softmax: _softmax_like("Softmax"),
    # products
    ops.MatMul: _binary("MatMul"),
    ops.AddMM: _addmm,
    ops.MatMulTransposed: _matmul_transposed,
    ops.AddN: _add_n,
    ops.Conv: _conv,
    ops.ConvInputGrad: _conv_input_grad,
    ops.MaxPool2d: _pool("MaxPool"),
    ops.AvgPool2d: _pool("AveragePool"),
    # losses
    ops.BinaryCrossEntropy: _binary_cross_entropy,
    # indexing
    ops.GetItem: _getitem,
    ops.OneHot: _one_hot,
    ops.NLLLoss: _nll_loss,
    ops.LogSoftmaxNLLLoss: _nll_loss,  # NLLLoss of its first input (the third, the logits, is for its gradient)
    ops.LayerNorm: _layer_norm,
    ops.SetItem: _setitem,
    # tuples
    ops.MakeTensorTuple: _make_tuple,
    ops.TupleGetItem: _tuple_get_item,
    ops.FusedAddScalars: _fused_add_scalars,
}


def mapping_summary() -> List[Tuple[str, str]]:
    """(needle op, ONNX ops) for every entry of the table: for documentation and reports."""
    return [(cls.__name__, emit.onnx) for cls, emit in OP_TABLE.items()]
