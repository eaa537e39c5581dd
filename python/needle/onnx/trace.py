"""Capture: the op graph of one forward call, with the model's inputs as its leaves.

needle records a graph node for every op whose result requires grad. So, in eval mode,
with the float inputs and every float tensor of the model (parameters *and* buffers
such as BatchNorm's running statistics) requiring grad, one forward call leaves the
whole computation behind as nodes: what the exporter walks. Whatever depends on none
of them (a causal mask, the LSTM's zero initial state) is computed eagerly and kept
as a constant leaf, which becomes an ONNX initializer.

An index tensor cannot require grad (it is int64), and GetItem keeps only the data of
its index (an IndexPlan). To know that an Embedding gathers the rows named by a model
input, the capture notes, for each IndexPlan made during the call, the index object it
was built from (see `_noting_index_sources`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..autograd import Tensor, TensorTuple, Value, array_api, enable_grad, find_topo_sort
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
    """The tensors of a model's result (a Tensor, or nested tuples/lists of them), in order."""
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, TensorTuple):
        return list(result.tuple())
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _flatten(item)]
    raise TypeError(f"needle.onnx: the model returned a {type(result).__name__}; "
                    "export needs a Tensor or (nested) tuples of Tensors")


def capture(model: Module, inputs: Sequence[Tensor]) -> Trace:
    """Run `model(*inputs)` once in eval mode and return its op graph.

    `inputs` are the leaves from `as_input_tensor`. Raises TypeError if the model returns
    something other than tensors.
    """
    sources: Dict[int, Tuple[IndexPlan, Any]] = {}
    with _recording(model), _noting_index_sources(sources):
        outputs = _flatten(model(*inputs))
    names: Dict[int, str] = {}
    for name, t in model.named_tensors():
        names.setdefault(id(t), name)  # a tied tensor keeps its first name, as state_dict lists it
    return Trace(list(inputs), outputs, find_topo_sort(outputs), sources, names)
