"""The op -> ONNX mapping, in one table (`OP_TABLE`, at the end of this file).

Each entry is `emit(ctx, node)`: it reads the node's op (its arguments), asks `ctx` for
the ONNX names of the node's inputs, appends ONNX nodes through `ctx.graph` and returns
the name of the result (a list of names for an op whose result is a tuple). `ctx` is
the exporter's `_Context` (exporter.py): `name(value, dtype)`, `names(tuple_value)`,
`dims(value)`, `dtype(value)`, `twin(node)`, `pair(shape1, shape2)`, `reshape(...)`,
`constant(...)` and `index_input(plan)`.

Ops without an entry (training-only or gradient ops: BatchNorm in training mode,
Dilate/UnDilate, ScatterItem, ConvWeightGrad, SparseTuple) are reported by name by the
exporter. ConvInputGrad, conv's adjoint, has one: it is F.conv_transpose2d's op.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union, cast

import numpy as np

from .. import ops
from .batch import Sym
from .graph import onnx_type

__all__ = ["OP_TABLE", "mapping_summary"]

_INT64_MAX = np.iinfo(np.int64).max


# --- helpers ---------------------------------------------------------------------------------

class Emitter(Protocol):
    """An entry of the table: `emit(ctx, node)` appends the node's ONNX nodes and returns the
    name of its result (a list of names for a tuple); `onnx` names the ONNX operators it writes."""

    onnx: str

    def __call__(self, ctx: Any, node: Any) -> Union[str, List[str]]: ...


def _writes(onnx: str) -> Callable[[Callable], Emitter]:
    """Decorator: an emitter, tagged with the ONNX operators it writes (for mapping_summary)."""
    def tag(emit: Callable) -> Emitter:
        emitter = cast(Emitter, emit)
        emitter.onnx = onnx
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
    """A tensor-scalar op: the scalar becomes a 0-d constant of the result's dtype."""
    @_writes(op_type)
    def emit(ctx, node):
        dtype = ctx.dtype(node)
        x = ctx.name(node.inputs[0], dtype)
        s = ctx.graph.constant(getattr(node.op, attribute), dtype)
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



@_writes("Where")
def _where(ctx, node):
    cond, a, b = node.inputs
    dtype = ctx.dtype(node)
    return ctx.graph.add("Where", [ctx.name(cond), ctx.name(a, dtype), ctx.name(b, dtype)])



@_writes("Cast")
def _cast(ctx, node):
    return ctx.graph.add("Cast", [ctx.name(node.inputs[0])], to=onnx_type(node.op.dtype))



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


# --- indexing --------------------------------------------------------------------------------

def _slice_bound(v1: int, size1: int, v2: Optional[int], size2: Optional[int], end: bool) -> int:
    """A slice bound valid at every batch size: the same number in both traces, or the
    same distance from the end (negative), or the end itself."""
    if v2 is None or size2 is None or v1 == v2:  # (size2 is None exactly when v2 is)
        return v1
    if end and v1 == size1 and v2 == size2:
        return _INT64_MAX
    if v1 - size1 == v2 - size2:
        return v1 - size1
    raise NotImplementedError(f"needle.onnx: a slice bound goes from {v1} to {v2} with the batch size: "
                              "export with dynamic_batch=False")


@_writes("Slice / Reshape / Gather (indices: the model input, or a constant)")
def _getitem(ctx, node):
    """tensor[index], as IndexPlan.gather does it: slices (Slice), ints and None (Reshape),
    then one index array (Gather on that axis; the indices are the model input the index
    came from, or a constant), or several (Gather of rows of the indexed axes, flattened)."""
    g = ctx.graph
    plan = node.op.plan
    twin = ctx.twin(node)
    plan2 = twin.op.plan if twin is not None else None
    x = ctx.name(node.inputs[0])
    starts, ends, axes, steps = [], [], [], []
    for axis, sl in enumerate(plan.basic):
        size = plan.input_shape[axis]
        sl2 = plan2.basic[axis] if plan2 is not None else None
        size2 = plan2.input_shape[axis] if plan2 is not None else None
        if sl == slice(0, size, 1) and (sl2 is None or sl2 == slice(0, size2, 1)):
            continue
        starts.append(_slice_bound(sl.start, size, None if sl2 is None else sl2.start, size2, end=False))
        ends.append(_slice_bound(sl.stop, size, None if sl2 is None else sl2.stop, size2, end=True))
        axes.append(axis)
        steps.append(sl.step)
    if axes:
        x = g.add("Slice", [x, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    sliced = ctx.pair(plan.sliced_shape, plan2.sliced_shape if plan2 is not None else None)
    view = ctx.pair(plan.view_shape, plan2.view_shape if plan2 is not None else None)
    if view != sliced:
        x = ctx.reshape(x, sliced, view)
    if not plan.advanced:
        return x
    source = ctx.index_input(plan)
    if len(plan.adv_dims) == 1:  # one index array: numpy puts its axes where the indexed axis was
        if source is not None:
            indices = ctx.name(source, "int64")
        else:
            indices = ctx.constant(plan.rows, plan2.rows if plan2 is not None else None, "indices")
        return g.add("Gather", [x, indices], axis=plan.perm[0])
    if source is not None or any(isinstance(view[p], Sym) for p in plan.perm[: len(plan.adv_dims)]):
        raise NotImplementedError("needle.onnx: GetItem with several index arrays can only be exported when "
                                  "they are constants and index axes of fixed size")
    x = g.add("Transpose", [x], perm=list(plan.perm))
    permuted = tuple(view[p] for p in plan.perm)
    rest = permuted[len(plan.adv_dims):]
    x = ctx.reshape(x, permuted, (int(np.prod(plan.adv_dims)),) + rest)
    x = g.add("Gather", [x, ctx.constant(plan.rows, plan2.rows if plan2 is not None else None, "rows")], axis=0)
    if plan.result_perm is not None:
        x = g.add("Transpose", [x], perm=list(plan.result_perm))
    return x



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
    ops.PowerScalar: _power_scalar,
    ops.ReLU: _unary("Relu"),
    ops.Where: _where,
    ops.Cast: _cast,
    # shape
    ops.Transpose: _transpose,
    ops.Permute: _permute,
    ops.Reshape: _reshape,
    ops.BroadcastTo: _broadcast_to,
    ops.Stack: _stack,
    ops.Split: _split,
    ops.Flip: _flip,
    # reductions
    ops.Summation: _summation,
    ops.Max: _max,
    ops.LogSumExp: _logsumexp,
    ops.LogSoftmax: _softmax_like("LogSoftmax"),
    ops.Softmax: _softmax_like("Softmax"),
    # products
    ops.MatMul: _binary("MatMul"),
    ops.Conv: _conv,
    ops.ConvInputGrad: _conv_input_grad,
    # indexing
    ops.GetItem: _getitem,
    # tuples
    ops.MakeTensorTuple: _make_tuple,
    ops.TupleGetItem: _tuple_get_item,
    ops.FusedAddScalars: _fused_add_scalars,
}


def mapping_summary() -> List[Tuple[str, str]]:
    """(needle op, ONNX ops) for every entry of the table: for documentation and reports."""
    return [(cls.__name__, emit.onnx) for cls, emit in OP_TABLE.items()]
