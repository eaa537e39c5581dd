"""`export`: trace a model (twice, for a dynamic batch), walk its op graph, write ONNX."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import onnx

from ..autograd import Tensor, TensorTuple, Value, array_api
from ..nn.nn_basic import Module
from ..serialization import atomic_write_bytes
from . import UnmappedOpError
from .batch import Dim, TraceMismatch, all_ints, pair_dims, pair_traces, squeeze_batch_axes
from .graph import GraphBuilder, onnx_type
from .ops_table import OP_TABLE
from .trace import Trace, as_input_tensor, capture

__all__ = ["export"]


class _Context:
    """What an op's mapping (ops_table.py) works with: the graph under construction, the
    ONNX names of the values emitted so far, and their sizes (constants or batch Syms)."""

    def __init__(self, graph: GraphBuilder, trace: Trace, twins: Optional[Dict[int, Value]],
                 batch: Tuple[int, int]):
        self.graph = graph
        self.trace = trace
        self._twins = twins
        self._batch = batch
        self._names: Dict[int, Union[str, List[str]]] = {}
        self._casts: Dict[Tuple[str, str], str] = {}
        self._inputs = {id(t): t for t in trace.inputs}
        self.indexed_inputs: set = set()  # ids of inputs read by a GetItem as its index

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

    def dtype(self, value: Tensor) -> str:
        return np.dtype(str(value.dtype)).name

    def twin(self, node: Value) -> Optional[Value]:
        """The same node in the trace at the other batch size (None for a fixed batch)."""
        return None if self._twins is None else self._twins[id(node)]

    def pair(self, shape1, shape2) -> Tuple[Dim, ...]:
        return pair_dims(shape1, shape2, self._batch)

    def dims(self, value: Tensor) -> Tuple[Dim, ...]:
        """The sizes of a tensor value: ints, and Syms for the ones that grow with the batch."""
        twin = cast(Optional[Tensor], self.twin(value))  # a tensor's twin is a tensor
        return self.pair(value.shape, twin.shape if twin is not None else None)

    # --- building blocks for the mappings ------------------------------------------------------
    def constant(self, array, twin_array, hint: str) -> str:
        """An initializer for a constant array (numpy or backend); a constant that repeats
        along the batch axes is stored once and expanded at run time."""
        a1 = _as_numpy(array)
        a2 = None if twin_array is None else _as_numpy(twin_array)
        dims = self.pair(a1.shape, None if a2 is None else a2.shape)
        stored = squeeze_batch_axes(a1, a2, dims)
        name = self.graph.initializer(stored, hint)
        if any(not isinstance(d, int) for d in dims):
            name = self.graph.add("Expand", [name, self.graph.shape(dims)])
        return name

    def reshape(self, x: str, in_dims: Sequence[Dim], out_dims: Sequence[Dim]) -> str:
        """Reshape that works at every batch size: a batch size kept in place is written 0
        (ONNX: copy the input's), a single other one -1, several are computed."""
        if all_ints(out_dims):
            zeros: Dict[str, Any] = {"allowzero": 1} if 0 in out_dims else {}  # a literal 0 is a size, not "copy"
            return self.graph.add("Reshape", [x, self.graph.ints(out_dims)], **zeros)
        if 0 in out_dims:
            raise NotImplementedError("needle.onnx: a reshape to a zero size next to a batch size")
        spec = [0 if not isinstance(d, int) and i < len(in_dims) and in_dims[i] == d else d
                for i, d in enumerate(out_dims)]
        unknown = [d for d in spec if not isinstance(d, int)]
        if len(unknown) == 1:
            return self.graph.add("Reshape", [x, self.graph.ints([d if isinstance(d, int) else -1 for d in spec])])
        if all_ints(spec):  # (no unknown)
            return self.graph.add("Reshape", [x, self.graph.ints(spec)])
        return self.graph.add("Reshape", [x, self.graph.shape(out_dims)])

    def index_input(self, plan) -> Optional[Tensor]:
        """The model input an IndexPlan's single index array was made from, if it was one."""
        _, index = self.trace.index_sources.get(id(plan), (None, None))
        entries = index if isinstance(index, tuple) else (index,)
        found = [e for e in entries if isinstance(e, Tensor) and id(e) in self._inputs]
        if found:
            self.indexed_inputs.add(id(found[0]))
            return found[0]
        return None

    # --- the walk ------------------------------------------------------------------------------
    def emit_leaf(self, leaf: Value) -> None:
        if id(leaf) in self._names:  # a graph input, added up front
            return
        tensor = cast(Tensor, leaf)  # a named leaf is a parameter or buffer; a tuple is refused below
        name = self.trace.names.get(id(leaf))
        if name is not None:  # a parameter or buffer: an initializer under its state_dict name
            self._names[id(leaf)] = self.graph.initializer(tensor.numpy(), name)
            return
        if isinstance(leaf, TensorTuple):
            raise NotImplementedError("needle.onnx: a constant tuple of tensors in the graph")
        twin = cast(Optional[Tensor], self.twin(leaf))
        self._names[id(leaf)] = self.constant(tensor.numpy(), twin.numpy() if twin is not None else None, "const")

    def emit_node(self, node: Value) -> None:
        emit = OP_TABLE.get(type(node.op))
        if emit is None:
            cls = type(node.op)
            raise UnmappedOpError(f"needle.onnx: no ONNX mapping for op {cls.__name__} "
                                  f"({cls.__module__}.{cls.__qualname__})")
        self._names[id(node)] = emit(self, node)

    def bind(self, value: Value, name: str) -> None:
        self._names[id(value)] = name


def _batch_axes(batch_axes, count: int) -> List[Optional[int]]:
    if batch_axes is None or isinstance(batch_axes, int):
        return [batch_axes] * count
    axes = list(batch_axes)
    if len(axes) != count:
        raise ValueError(f"needle.onnx: {len(axes)} batch axes for {count} inputs")
    return axes


def _other_batch(arrays: List[np.ndarray], axes: List[Optional[int]], size: int) -> List[np.ndarray]:
    """The inputs at batch `size`: their rows along the batch axis, shifted by one and
    repeated cyclically (other data, same value range: ids stay valid ids)."""
    out = []
    for array, axis in zip(arrays, axes):
        if axis is None:
            out.append(array)
            continue
        n = array.shape[axis]
        out.append(np.take(array, [(i + 1) % n for i in range(size)], axis=axis))
    return out


def _numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def _as_numpy(array) -> np.ndarray:
    """A numpy copy of numpy or backend data (an IndexPlan's rows are backend arrays)."""
    return array if isinstance(array, np.ndarray) else np.asarray(array_api.to_numpy(array))


def export(model: Module, example_inputs, path: Optional[str], *, input_names: Optional[Sequence[str]] = None,
           output_names: Optional[Sequence[str]] = None, batch_axes: Union[None, int, Sequence[Optional[int]]] = 0,
           dynamic_batch: bool = True) -> onnx.ModelProto:
    """See needle.onnx.export (the documented entry point)."""
    if isinstance(example_inputs, (Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    arrays = [_numpy(x) for x in example_inputs]
    axes = _batch_axes(batch_axes if dynamic_batch else None, len(arrays))
    for array, axis in zip(arrays, axes):
        if axis is not None and not -array.ndim <= axis < array.ndim:
            raise ValueError(f"needle.onnx: batch axis {axis} for an input of shape {array.shape}")
    axes = [None if a is None else a % arr.ndim for a, arr in zip(axes, arrays)]
    input_names = list(input_names) if input_names is not None else [f"input_{i}" for i in range(len(arrays))]
    if len(input_names) != len(arrays):
        raise ValueError(f"needle.onnx: {len(input_names)} input names for {len(arrays)} inputs")

    leaves = [as_input_tensor(x) for x in example_inputs]
    trace = capture(model, leaves)
    twins, batch = None, (0, 0)
    sizes = {arr.shape[a] for arr, a in zip(arrays, axes) if a is not None}
    if len(sizes) > 1:
        raise ValueError(f"needle.onnx: the inputs' batch axes have different sizes {sorted(sizes)}")
    if sizes:
        b1 = sizes.pop()
        b2 = b1 + 1
        try:
            second = capture(model, [as_input_tensor(x) for x in _other_batch(arrays, axes, b2)])
        except Exception as err:  # noqa: BLE001 -- whatever stops the model at another batch size
            raise ValueError(f"needle.onnx: the model does not run at batch size {b2} ({type(err).__name__}: "
                             f"{err}); export with dynamic_batch=False") from err
        batch = (b1, b2)
        try:
            twins = pair_traces(trace, second, batch)
        except TraceMismatch as err:
            hint = " (an example batch of 1 can hide broadcasts: use 2 or more)" if b1 == 1 else ""
            raise ValueError(f"needle.onnx: {err}; export with dynamic_batch=False{hint}") from None

    output_names = list(output_names) if output_names is not None else \
        [f"output_{i}" for i in range(len(trace.outputs))]
    if len(output_names) != len(trace.outputs):
        raise ValueError(f"needle.onnx: {len(output_names)} output names for the model's "
                         f"{len(trace.outputs)} outputs")
    graph = GraphBuilder()
    graph.reserve(input_names + output_names)
    ctx = _Context(graph, trace, twins, batch)
    for leaf, name, axis in zip(leaves, input_names, axes):
        ctx.bind(leaf, graph.add_input(name, leaf.dtype, ctx.dims(leaf), axis))
    for node in trace.nodes:
        if node.op is None:
            ctx.emit_leaf(node)
        else:
            ctx.emit_node(node)

    in_graph = {id(n) for n in trace.nodes} | ctx.indexed_inputs
    for leaf, name in zip(leaves, input_names):
        if id(leaf) not in in_graph:
            raise ValueError(f"needle.onnx: input {name!r} does not reach the outputs through the op graph "
                             "(unused, or read as data: .numpy(), a comparison, a tensor made from its values)")

    for value, name in zip(trace.outputs, output_names):
        graph.add_output(ctx.name(value), name, ctx.dtype(value), ctx.dims(value))

    proto = graph.model(type(model).__name__)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        atomic_write_bytes(str(path), proto.SerializeToString())
    return proto
