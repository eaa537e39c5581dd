"""`export`: trace a model (at several sizes of its dynamic axes), walk its op graph, write ONNX."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np
import onnx

from ..autograd import Tensor, TensorTuple, Value, array_api
from ..nn.nn_basic import Module
from ..serialization import atomic_write_bytes
from . import UnmappedOpError
from .dynamic import Dim, Points, Sym, TraceMismatch, all_ints, pair_traces, squeeze_dynamic_axes
from .graph import GraphBuilder, onnx_type
from .ops_table import OP_TABLE
from .trace import Trace, as_input_tensor, capture

__all__ = ["export"]

DynamicAxes = Mapping[str, Union[Mapping[int, str], Sequence[int]]]


class _Context:
    """What an op's mapping (ops_table.py) works with: the graph under construction, the
    ONNX names of the values emitted so far, and their sizes (ints, or Syms of the dynamic axes)."""

    def __init__(self, graph: GraphBuilder, trace: Trace, versions: Dict[int, List[Value]], points: Points):
        self.graph = graph
        self.trace = trace
        self.points = points
        self._versions = versions
        self._names: Dict[int, Union[str, List[str]]] = {}
        self._casts: Dict[Tuple[str, str], str] = {}
        self._inputs = {id(t): t for t in trace.inputs}

    # --- values ----------------------------------------------------------------------------
    def name(self, value: Tensor, dtype: Optional[str] = None) -> str:
        """The ONNX name of a tensor value, converted to `dtype` (Cast) if it has another."""
        name = self._names[id(value)]
        if isinstance(name, list):
            raise TypeError("needle.onnx: a tuple was used where a tensor was expected")
        if dtype is not None and self.dtype(value) != dtype:
            key = (name, dtype)
            if key not in self._casts:
                self._casts[key] = self.graph.add("Cast", [name], to=onnx_type(dtype))
            name = self._casts[key]
        return name

    def names(self, value: Value) -> List[str]:
        """The ONNX names of the elements of a tuple value."""
        names = self._names[id(value)]
        if not isinstance(names, list):
            raise TypeError("needle.onnx: a tensor was used where a tuple was expected")
        return names

    def has(self, value: Value) -> bool:
        """Whether the value is in the graph already (an input, or emitted)."""
        return id(value) in self._names

    def dtype(self, value: Tensor) -> str:
        return np.dtype(str(value.dtype)).name

    def versions(self, node: Value) -> List[Value]:
        """The node in every trace (this one first; only itself for an export without dynamic axes)."""
        return self._versions.get(id(node), [node])

    def fit(self, values: Sequence[Optional[int]], what: str = "a size") -> Dim:
        """The int or Sym taking values[i] in trace i (see dynamic.Points.fit)."""
        return self.points.fit(values, what)

    def shape(self, shapes: Sequence[Sequence[int]], what: str = "a value") -> Tuple[Dim, ...]:
        """The sizes of a value whose shape is shapes[i] in trace i."""
        return self.points.shape(shapes, what)

    def dims(self, value: Tensor) -> Tuple[Dim, ...]:
        """The sizes of a tensor value: ints, and Syms for the ones that follow the dynamic axes."""
        what = type(value.op).__name__ + "'s result" if value.op is not None else "a constant"
        return self.shape([cast(Tensor, v).shape for v in self.versions(value)], what)

    # --- building blocks for the mappings ------------------------------------------------------
    def constant(self, arrays: Sequence[Any], hint: str) -> str:
        """An initializer for a constant (arrays[i]: its numpy or backend data in trace i); a
        constant that repeats along the dynamic axes is stored once and expanded at run time, and
        a 1-D 0, 1, ..., n - 1 whose length follows them (position ids) is computed (CumSum).
        Raises ValueError if it varies along them otherwise, or between the traces."""
        data = [_as_numpy(a) for a in arrays]
        dims = self.shape([a.shape for a in data], f"a constant of shape {data[0].shape}")
        stored = squeeze_dynamic_axes(data, dims)
        if stored is None:
            if len(dims) == 1 and isinstance(dims[0], Sym) and all(
                    np.array_equal(a, np.arange(a.shape[0])) for a in data):  # position ids: 0, 1, ..., n - 1
                g = self.graph
                # CumSum of ones, less 1 (an ONNX Range feeding a Gather is rewritten by onnxruntime
                # 1.2x's GatherToSliceFusion into a Slice that fails at run time)
                ones = g.add("Expand", [g.ints([1]), g.size(dims[0])])
                ids = g.add("Sub", [g.add("CumSum", [ones, g.constant(0, "int64")]), g.ints([1])])
                return ids if data[0].dtype == np.int64 else g.add("Cast", [ids], to=onnx_type(data[0].dtype))
            raise ValueError(_constant_error(data[0].shape, dims, self.points))
        name = self.graph.initializer(stored, hint)
        if not all_ints(dims):
            name = self.graph.add("Expand", [name, self.graph.shape(dims)])
        return name

    def scalar(self, node: Value, dtype: str, attribute: str = "scalar") -> str:
        """A 0-d tensor of `dtype`: the op's scalar argument, a constant where it is the same in
        every trace, else computed from the sizes it follows (a mean's count: dynamic.Points.fit)."""
        values = [getattr(v.op, attribute) for v in self.versions(node)]
        if all(v == values[0] for v in values):
            return self.graph.constant(values[0], dtype)
        dim = self.fit([int(v) for v in values], f"the {attribute} of {type(node.op).__name__}")
        count = self.graph.scalar_size(dim)
        return self.graph.add("Cast", [count], to=onnx_type(dtype))

    def reshape(self, x: str, in_dims: Sequence[Dim], out_dims: Sequence[Dim]) -> str:
        """Reshape that works at every size: a dynamic size kept in place is written 0
        (ONNX: copy the input's), a single other one -1, several are computed."""
        if all_ints(out_dims):
            zeros: Dict[str, Any] = {"allowzero": 1} if 0 in out_dims else {}  # a literal 0 is a size, not "copy"
            return self.graph.add("Reshape", [x, self.graph.ints(out_dims)], **zeros)
        if 0 in out_dims:
            raise NotImplementedError("needle.onnx: a reshape to a zero size next to a dynamic size")
        spec = [0 if not isinstance(d, int) and i < len(in_dims) and in_dims[i] == d else d
                for i, d in enumerate(out_dims)]
        unknown = [d for d in spec if not isinstance(d, int)]
        if len(unknown) == 1:
            return self.graph.add("Reshape", [x, self.graph.ints([d if isinstance(d, int) else -1 for d in spec])])
        if all_ints(spec):  # (no unknown)
            return self.graph.add("Reshape", [x, self.graph.ints(spec)])
        return self.graph.add("Reshape", [x, self.graph.shape(out_dims)])

    def index_source(self, plan) -> Optional[Tensor]:
        """The graph value (a model input, or a node such as ids the model computed) that an
        IndexPlan's index array was made from, if it was one; None for a constant index."""
        _, index = self.trace.index_sources.get(id(plan), (None, None))
        entries = index if isinstance(index, tuple) else (index,)
        found = [e for e in entries if isinstance(e, Tensor) and (e.op is not None or id(e) in self._inputs)]
        return found[0] if found else None

    # --- the walk ------------------------------------------------------------------------------
    def emit_leaf(self, leaf: Value) -> None:
        if id(leaf) in self._names:  # a graph input, added up front
            return
        alias = self.trace.aliases.get(id(leaf))
        if alias is not None:  # a detached copy of a graph value: the same data
            self._names[id(leaf)] = self._names[id(alias)]
            return
        tensor = cast(Tensor, leaf)  # a named leaf is a parameter or buffer; a tuple is refused below
        name = self.trace.names.get(id(leaf))
        if name is not None:  # a parameter or buffer: an initializer under its state_dict name
            self._names[id(leaf)] = self.graph.initializer(tensor.numpy(), name)
            return
        if isinstance(leaf, TensorTuple):
            raise NotImplementedError("needle.onnx: a constant tuple of tensors in the graph")
        self._names[id(leaf)] = self.constant([cast(Tensor, v).numpy() for v in self.versions(leaf)], "const")

    def emit_node(self, node: Value) -> None:
        emit = OP_TABLE.get(type(node.op))
        if emit is None:
            cls = type(node.op)
            raise UnmappedOpError(f"needle.onnx: no ONNX mapping for op {cls.__name__} "
                                  f"({cls.__module__}.{cls.__qualname__})")
        self._names[id(node)] = emit(self, node)

    def bind(self, value: Value, name: str) -> None:
        self._names[id(value)] = name


def _constant_error(shape: tuple, dims: Sequence[Dim], points: Points) -> str:
    dynamic = sorted({s for d in dims if isinstance(d, Sym) for s in d.symbols})
    text = (f"needle.onnx: a constant of shape {tuple(shape)} depends on the input's data: it was computed "
            "outside the op graph (.numpy(), a tensor made from the input's values), which an ONNX graph cannot "
            "reproduce")
    others = [s for s in dynamic if s != "batch"]
    if others:
        text += (f"; or it is a table made for the size of the dynamic axis {', '.join(map(repr, others))} "
                 "(position ids, a mask): slice it from a fixed-size tensor ([:T]) so that the graph can follow "
                 "the size")
    return text


# --- inputs: nested tuples, names, dynamic axes ------------------------------------------------------

def _flatten_inputs(example) -> Tuple[List[Any], Callable[[List[Any]], List[Any]]]:
    """(the example's leaves, in order; a function arranging leaves like the example's arguments).
    The example is a Tensor/array, or a tuple of them and of nested tuples/lists of them."""
    items = [example] if isinstance(example, (Tensor, np.ndarray)) else list(example)

    def leaves(item) -> List[Any]:
        if isinstance(item, (tuple, list)):
            return [x for sub in item for x in leaves(sub)]
        return [item]

    def arrange(flat: List[Any]) -> List[Any]:
        position = iter(range(len(flat)))

        def build(item):
            if isinstance(item, (tuple, list)):
                return type(item)(build(sub) for sub in item)
            return flat[next(position)]

        return [build(item) for item in items]

    return leaves(items), arrange


def _numpy(value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"needle.onnx: an example input is a {type(value).__name__}; give Tensors or numpy arrays "
                    "(in nested tuples)")


def _as_numpy(array) -> np.ndarray:
    """A numpy copy of numpy or backend data (an IndexPlan's rows are backend arrays)."""
    return array if isinstance(array, np.ndarray) else np.asarray(array_api.to_numpy(array))


def _check_names(dynamic_axes: Optional[DynamicAxes], inputs: List[str], outputs: List[str]) -> None:
    unknown = [k for k in (dynamic_axes or {}) if k not in inputs and k not in outputs]
    if unknown:
        raise ValueError(f"needle.onnx: dynamic_axes names {unknown}, which are not inputs {inputs} "
                         f"(or outputs {outputs})")


def _symbols(arrays: List[np.ndarray], names: List[str], batch_axes, dynamic_batch: bool,
             dynamic_axes: Optional[DynamicAxes], output_names: Optional[Sequence[str]]) -> List[Dict[int, str]]:
    """For each input, {axis: the name of its dynamic size}."""
    if dynamic_axes is None:
        if not dynamic_batch or batch_axes is None:
            return [{} for _ in arrays]
        batch = [batch_axes] * len(arrays) if isinstance(batch_axes, int) else list(batch_axes)
        if len(batch) != len(arrays):
            raise ValueError(f"needle.onnx: {len(batch)} batch axes for {len(arrays)} inputs")
        result: List[Dict[int, str]] = []
        for array, axis in zip(arrays, batch):
            if axis is not None and not -array.ndim <= axis < array.ndim:
                raise ValueError(f"needle.onnx: batch axis {axis} for an input of shape {array.shape}")
            result.append({} if axis is None else {axis % array.ndim: "batch"})
        return result
    if output_names is not None:
        _check_names(dynamic_axes, names, list(output_names))
    result = []
    for array, name in zip(arrays, names):
        entry = dynamic_axes.get(name, {})
        named = dict(entry) if isinstance(entry, Mapping) else {a: f"{name}_dynamic_axis_{a}" for a in entry}
        axes: Dict[int, str] = {}
        for axis, symbol in named.items():
            if not isinstance(axis, int) or not -array.ndim <= axis < array.ndim:
                raise ValueError(f"needle.onnx: dynamic axis {axis!r} of input {name!r} of shape {array.shape}")
            if not isinstance(symbol, str) or not symbol.isidentifier():
                raise ValueError(f"needle.onnx: the dynamic axis {axis} of input {name!r} needs a name that is an "
                                 f"identifier, got {symbol!r}")
            axes[axis % array.ndim] = symbol
        result.append(axes)
    return result


def _resized(arrays: List[np.ndarray], symbols: List[Dict[int, str]], sizes: Dict[str, int]) -> List[np.ndarray]:
    """The inputs with each dynamic axis at its size in `sizes`: their rows along it, shifted by
    one and repeated cyclically (other data, the same value range: ids stay valid ids)."""
    out = []
    for array, axes in zip(arrays, symbols):
        for axis, symbol in axes.items():
            n = array.shape[axis]
            array = np.take(array, [(i + 1) % n for i in range(sizes[symbol])], axis=axis)
        out.append(array)
    return out


def _traces(model: Module, arrays: List[np.ndarray], symbols: List[Dict[int, str]], arrange) \
        -> Tuple[List[Trace], Points, List[List[Tensor]]]:
    """The traces at the example's sizes and around them (dynamic.Points), their points, and
    each trace's input leaves."""
    base: Dict[str, int] = {}
    for array, axes in zip(arrays, symbols):
        for axis, symbol in axes.items():
            if base.setdefault(symbol, array.shape[axis]) != array.shape[axis]:
                raise ValueError(f"needle.onnx: the inputs' {symbol!r} axes have different sizes "
                                 f"{sorted({base[symbol], array.shape[axis]})}")
    names = list(base)

    done: Dict[Tuple[int, ...], Tuple[Trace, List[Tensor]]] = {}

    def run(sizes: Dict[str, int]) -> Tuple[Trace, List[Tensor]]:
        key = tuple(sizes[n] for n in names)
        if key not in done:
            leaves = [as_input_tensor(x) for x in _resized(arrays, symbols, sizes)]
            done[key] = capture(model, leaves, arrange(leaves)), leaves
        return done[key]

    first, leaves = run(base)
    if not names:
        return [first], Points([], [], []), [leaves]
    steps = []
    for name in names:  # +1 along each axis, or -1 where the model refuses a larger size (GPT's block_size)
        error = ""
        for step in (1, -1):
            if base[name] + step < 1:
                continue
            try:
                run({**base, name: base[name] + step})
            except Exception as err:  # noqa: BLE001 -- whatever stops the model at that size
                error = error or f"{type(err).__name__}: {err}"
                continue
            steps.append(step)
            break
        else:
            raise ValueError(f"needle.onnx: the model does not run with {name}={base[name] + 1} ({error}); give "
                             "that axis a fixed size (dynamic_batch=False, or leave it out of dynamic_axes)")
    points = Points(names, [base[n] for n in names], steps)
    try:  # the check point, two steps away: where the model runs there
        run(points.sizes(len(points.values) - 1)) if len(points.values) > 2 ** len(names) else None
    except Exception:  # noqa: BLE001 -- e.g. past GPT's block_size: the sizes are then fitted unchecked
        points = Points(names, [base[n] for n in names], steps, check=False)
    traces, all_leaves = [], []
    for k in range(len(points.values)):
        try:
            trace, leaves = run(points.sizes(k))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"needle.onnx: the model does not run at {points.describe(k)} ({type(err).__name__}: "
                             f"{err}); give those axes a fixed size") from err
        traces.append(trace)
        all_leaves.append(leaves)
    return traces, points, all_leaves


def export(model: Module, example_inputs, path: Optional[str], *, input_names: Optional[Sequence[str]] = None,
           output_names: Optional[Sequence[str]] = None, batch_axes: Union[None, int, Sequence[Optional[int]]] = 0,
           dynamic_batch: bool = True, dynamic_axes: Optional[DynamicAxes] = None,
           optional_inputs: Sequence[str] = ()) -> onnx.ModelProto:
    """See needle.onnx.export (the documented entry point)."""
    flat, arrange = _flatten_inputs(example_inputs)
    arrays = [_numpy(x) for x in flat]
    input_names = list(input_names) if input_names is not None else [f"input_{i}" for i in range(len(arrays))]
    if len(input_names) != len(arrays):
        raise ValueError(f"needle.onnx: {len(input_names)} input names for {len(arrays)} inputs")
    missing = [n for n in optional_inputs if n not in input_names]
    if missing:
        raise ValueError(f"needle.onnx: optional_inputs names {missing}, which are not inputs {input_names}")
    symbols = _symbols(arrays, input_names, batch_axes, dynamic_batch, dynamic_axes, output_names)

    traces, points, leaves = _traces(model, arrays, symbols, arrange)
    trace = traces[0]
    try:
        versions = pair_traces(traces, points, lambda op: getattr(OP_TABLE.get(type(op)), "sized", ()))
    except TraceMismatch as err:
        hint = " (an example size of 1 can hide broadcasts: use 2 or more)" if 1 in points.base else ""
        raise ValueError(f"needle.onnx: {err}; give the dynamic axes a fixed size (dynamic_batch=False, or fewer "
                         f"dynamic_axes){hint}") from None

    output_names = list(output_names) if output_names is not None else \
        [f"output_{i}" for i in range(len(trace.outputs))]
    if len(output_names) != len(trace.outputs):
        raise ValueError(f"needle.onnx: {len(output_names)} output names for the model's "
                         f"{len(trace.outputs)} outputs")
    _check_names(dynamic_axes, input_names, output_names)
    graph = GraphBuilder()
    graph.reserve(input_names + output_names)
    ctx = _Context(graph, trace, versions, points)
    try:
        _emit(ctx, graph, trace, leaves[0], input_names, set(optional_inputs))
        output_dims = [ctx.dims(value) for value in trace.outputs]
    except TraceMismatch as err:
        raise ValueError(f"needle.onnx: {err}; give the dynamic axes a fixed size") from None
    _check_output_axes(dynamic_axes, output_names, output_dims)
    for value, name, dims in zip(trace.outputs, output_names, output_dims):
        graph.add_output(ctx.name(value), name, ctx.dtype(value), dims)

    proto = graph.model(type(model).__name__)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        atomic_write_bytes(str(path), proto.SerializeToString())
    return proto


def _emit(ctx: _Context, graph: GraphBuilder, trace: Trace, leaves: List[Tensor], input_names: List[str],
          optional: set) -> None:
    """The inputs (and defaults of the optional ones), then every node in order."""
    for leaf, name in zip(leaves, input_names):
        dims = ctx.dims(leaf)
        if name not in optional:
            ctx.bind(leaf, graph.add_input(name, leaf.dtype, dims))
            continue
        graph.add_input(name, leaf.dtype, dims, source=False)
        default = squeeze_dynamic_axes([_numpy(v) for v in ctx.versions(leaf)], dims)
        if default is None:
            raise ValueError(f"needle.onnx: the optional input {name!r} is its example value when it is not given, "
                             "so the example must repeat along its dynamic axes (such as a zero initial state)")
        graph.default(name, default)
        ctx.bind(leaf, name if all_ints(dims) else graph.add("Expand", [name, graph.shape(dims)]))
    for node in trace.nodes:
        if node.op is None:
            ctx.emit_leaf(node)
        else:
            ctx.emit_node(node)
    in_graph = {id(n) for n in trace.nodes}
    for leaf, name in zip(leaves, input_names):
        if id(leaf) not in in_graph:
            raise ValueError(f"needle.onnx: input {name!r} does not reach the outputs through the op graph "
                             "(unused, or read as data: .numpy(), a tensor made from its values)")


def _check_output_axes(dynamic_axes: Optional[DynamicAxes], output_names: List[str],
                       output_dims: List[Tuple[Dim, ...]]) -> None:
    """An output's entry in dynamic_axes must name what the graph computes: that axis is the symbol."""
    if not dynamic_axes:
        return
    for name, dims in zip(output_names, output_dims):
        entry = dynamic_axes.get(name)
        if entry is None:
            continue
        named = dict(entry) if isinstance(entry, Mapping) else {a: None for a in entry}
        for axis, symbol in named.items():
            if not isinstance(axis, int) or not -len(dims) <= axis < len(dims):
                raise ValueError(f"needle.onnx: dynamic axis {axis!r} of output {name!r} with {len(dims)} axes")
            dim = dims[axis]
            ok = isinstance(dim, Sym) if symbol is None else dim == Sym.of(symbol)
            if not ok:
                raise ValueError(f"needle.onnx: dynamic_axes says axis {axis} of output {name!r} is "
                                 f"{symbol or 'dynamic'}, but the graph computes it as {dim}")
