"""Capture: the op graph of one forward call, with the model's inputs as its leaves.

The forward call runs in eval mode under autograd.recording_every_op: every op keeps its
graph node, also where its result needs no gradient (a comparison of the input, an int64
index computed from it, a slice of a constant mask), so the graph from the outputs back is
the whole computation, which the exporter walks. (Float parameters and buffers are made to
require grad as well, as a model's own code may branch on it.) Whatever is made without an
op (a tensor built from numpy data, a factory such as init.zeros) is a constant leaf, which
becomes an ONNX initializer.

GetItem keeps only the data of its index (an IndexPlan). To know that an Embedding gathers
the rows named by a model input, or by ids the graph computed, the capture notes, for each
IndexPlan made during the call, the index object it was built from (see
`_noting_index_sources`), and orders those index tensors before their GetItem.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..autograd import Tensor, TensorTuple, Value, _topo_sort, array_api, enable_grad, recording_every_op
from ..nn.nn_basic import Module
from ..ops.indexing import IndexPlan

__all__ = ["Trace", "capture", "as_input_tensor"]


@dataclass
class Trace:
    """One forward call: its input leaves, flattened outputs and every node they depend on."""

    inputs: List[Tensor]
    outputs: List[Tensor]
    nodes: List[Value]  # topological order, leaves included
    index_sources: Dict[int, Tuple[IndexPlan, Any]] = field(default_factory=dict)  # id(plan) -> (plan, index)
    names: Dict[int, str] = field(default_factory=dict)  # id(tensor) -> its state_dict name
    aliases: Dict[int, Value] = field(default_factory=dict)  # id(detached leaf) -> the value it copies

    def position(self) -> Dict[int, int]:
        """id(node) -> its index in `nodes`."""
        return {id(node): i for i, node in enumerate(self.nodes)}


def as_input_tensor(value) -> Tensor:
    """A fresh graph leaf holding `value` (a Tensor or numpy array, dtype kept); float
    leaves require grad, so that everything computed from them is recorded."""
    if isinstance(value, Tensor):
        data = value.realize_cached_data()
        leaf = Tensor.make_const(data)
    else:
        array = np.asarray(value)
        leaf = Tensor(array, dtype=array.dtype.name)
    leaf.requires_grad = array_api.is_floating(leaf.dtype)
    return leaf


@contextlib.contextmanager
def _noting_index_sources(sources: Dict[int, Tuple[IndexPlan, Any]]):
    """While active, every IndexPlan made notes the index it was built from in `sources`.

    The plan stores only the index's data; the exporter needs to know whether that data
    *is* a model input (an ONNX Gather reading the input) or a constant. Not thread-safe:
    the class is patched for the duration of one capture.
    """
    original = IndexPlan.__init__

    def init(plan: IndexPlan, shape: tuple, index: Any, *args: Any, **kwargs: Any) -> None:
        original(plan, shape, index, *args, **kwargs)
        sources[id(plan)] = (plan, index)  # the plan is kept, so its id stays unique

    # the class is patched on purpose (see above)
    IndexPlan.__init__ = init  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        IndexPlan.__init__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _recording(model: Module):
    """Eval mode, grad enabled, and the model's float tensors (buffers too) requiring grad;
    everything is put back afterwards."""
    modules = [model] + model._children()
    modes = [m.training for m in modules]
    tensors = [t for _, t in model.named_tensors()]
    flags = [t.requires_grad for t in tensors]
    model.eval()
    try:
        for t in tensors:
            if array_api.is_floating(t.dtype):
                t.requires_grad = True
        with enable_grad():
            yield
    finally:
        for t, flag in zip(tensors, flags):
            t.requires_grad = flag
        for m, mode in zip(modules, modes):
            m.training = mode


def _flatten(result) -> List[Tensor]:
    """The tensors of a model's result (a Tensor, or nested tuples/lists of them; None entries,
    such as GPT's loss without targets, are left out), in order."""
    if result is None:
        return []
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, TensorTuple):
        return list(result.tuple())
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _flatten(item)]
    raise TypeError(f"needle.onnx: the model returned a {type(result).__name__}; "
                    "export needs a Tensor or (nested) tuples of Tensors")


def _index_tensors(index: Any) -> List[Tensor]:
    entries = index if isinstance(index, tuple) else (index,)
    return [e for e in entries if isinstance(e, Tensor)]


def _topological(outputs: List[Tensor], sources: Dict[int, Tuple[IndexPlan, Any]], inputs: Sequence[Tensor],
                 names: Dict[int, str]) -> Tuple[List[Value], Dict[int, Value]]:
    """(the values the outputs depend on, in topological order; aliases: id(constant leaf) -> the
    graph value holding the very same data, of which the leaf is a detached copy).

    A value's dependencies are its inputs, then a GetItem's index tensors that are graph nodes
    or model inputs, then, for a leaf made by `detach()` of a graph value, that value (detach
    changes gradients only: in the forward graph the two are one)."""
    given = {id(t) for t in inputs}

    def index_children(node: Value) -> List[Value]:
        plan = getattr(node.op, "plan", None)
        if plan is None or id(plan) not in sources:
            return list(node.inputs)
        extra = [t for t in _index_tensors(sources[id(plan)][1]) if t.op is not None or id(t) in given]
        return list(node.inputs) + extra

    reachable = _topo_sort(outputs, index_children)
    owners: Dict[int, Value] = {}
    for value in reachable:
        data = value.cached_data
        if data is not None and not isinstance(data, tuple) and (
                value.op is not None or id(value) in given or id(value) in names):
            owners.setdefault(id(data), value)
    aliases: Dict[int, Value] = {}
    for value in reachable:
        if value.op is None and id(value) not in given and id(value) not in names:
            owner = owners.get(id(value.cached_data))
            if owner is not None and owner is not value:
                aliases[id(value)] = owner

    def children(node: Value) -> List[Value]:
        alias = aliases.get(id(node))
        return [alias] if alias is not None else index_children(node)

    return _topo_sort(outputs, children), aliases


def capture(model: Module, inputs: Sequence[Tensor], arguments: Optional[Sequence[Any]] = None) -> Trace:
    """Run the model once in eval mode and return its op graph.

    `inputs` are the leaves from `as_input_tensor`; the model is called as `model(*arguments)`
    (the leaves arranged in nested tuples), or `model(*inputs)`. Raises TypeError if the model
    returns something other than tensors.
    """
    sources: Dict[int, Tuple[IndexPlan, Any]] = {}
    with _recording(model), _noting_index_sources(sources), recording_every_op():
        outputs = _flatten(model(*(inputs if arguments is None else arguments)))
    names: Dict[int, str] = {}
    for name, t in model.named_tensors():
        names.setdefault(id(t), name)  # a tied tensor keeps its first name, as state_dict lists it
    nodes, aliases = _topological(outputs, sources, inputs, names)
    return Trace(list(inputs), outputs, nodes, sources, names, aliases)
