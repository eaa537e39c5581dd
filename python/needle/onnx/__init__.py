"""Export needle models to ONNX (opset 17), to run them in onnxruntime or any ONNX runtime.

    import needle.onnx
    needle.onnx.export(model, (x,), "model.onnx")          # x: (batch, features)
    needle.onnx.export(lm, (ids,), "lm.onnx", batch_axes=1)  # ids: (seq_len, batch)
    needle.onnx.export(gpt, (idx,), "gpt.onnx", input_names=["idx"],
                       dynamic_axes={"idx": {0: "batch", 1: "sequence"}})

Needs the `onnx` extra (`pip install "needle-dl[onnx]"`, or `pip install -e ".[onnx]"` in a clone);
needle itself imports without it.

The model runs forward once, in eval mode, and its autograd op graph becomes the ONNX
graph, op by op through one table of mappings. What cannot be replayed is refused with
an error rather than exported as something else: an op without a mapping, or a
constant computed from the input's data. (Why the op graph and not ndl.compile's
recording: docs/architecture.md.)

Modules, one idea each:
* `trace`      capture a forward call's op graph (eval mode, every op recorded, inputs as leaves)
* `dynamic`    which sizes follow the dynamic axes: traces at several sizes, compared
* `graph`      the ONNX graph under construction (names, initializers, run-time sizes)
* `ops_table`  needle op -> ONNX nodes, one table
* `exporter`   the walk: leaves become inputs/initializers, nodes go through the table

(`needle export CHECKPOINT --out model.onnx`, a `needle train` checkpoint to ONNX, is
needle.train.export.)
"""
from __future__ import annotations

import importlib
from typing import Mapping, Optional, Sequence, Union

from .._packaging import install_hint

# the opset the exporter writes (see graph.py for why 17)
OPSET = 17

__all__ = ["export", "OPSET", "UnmappedOpError", "require_onnx"]


class UnmappedOpError(NotImplementedError):
    """The model uses an op that has no ONNX mapping (the message names it)."""


def require_onnx():
    """The onnx module; ImportError naming the extra to install if it is missing."""
    try:
        return importlib.import_module("onnx")
    except ImportError as err:
        raise ImportError(f"needle.onnx needs the onnx package: {install_hint('onnx')}") from err


def export(model, example_inputs, path: Optional[str], *, input_names: Optional[Sequence[str]] = None,
           output_names: Optional[Sequence[str]] = None, batch_axes: Union[None, int, Sequence[Optional[int]]] = 0,
           dynamic_batch: bool = True,
           dynamic_axes: Optional[Mapping[str, Union[Mapping[int, str], Sequence[int]]]] = None,
           optional_inputs: Sequence[str] = ()):
    """Write `model` as an ONNX model (opset 17) to `path` (atomically; None: only return it).

    model: a needle.nn.Module, run in eval mode on `example_inputs` (a Tensor/numpy array, or a
    tuple of them, which may nest tuples/lists as the model's arguments do, e.g. an LSTM's
    (x, (h0, c0)): float inputs, or int64 ids that the model indexes with, e.g. through
    nn.Embedding). Parameters and buffers (BatchNorm running statistics) become initializers
    under their state_dict names; constants (a causal mask) too. Outputs are the model's
    tensors, flattened from nested tuples, in order (None entries left out).

    Dynamic sizes: `dynamic_axes` (torch.onnx.export's form) maps an input's name to
    {axis: symbol name} (or a list of axes), e.g. {"idx": {0: "batch", 1: "sequence"}}; axes
    sharing a name share a size. Without it, `batch_axes` gives the batch axis of every input
    (an int), or one per input (None: no batch axis), named "batch" (dynamic_batch=False: none).
    Every other size is fixed by the example. The model is traced at the example's sizes and a
    step away along each dynamic axis, and at a check point two steps away (needle/onnx/
    dynamic.py), to find every size, slice bound and shape that follows them; those are computed
    at run time from the inputs' shapes. An output listed in dynamic_axes is checked to have
    exactly that size on that axis. A loop over a dynamic axis (an RNN unrolled over the
    sequence) cannot follow it: export that axis at a fixed size (the error says so).

    optional_inputs: names of inputs that may be left out at run time, their example value
    being the default (ONNX's overridable initializer); the example must repeat along the input's
    dynamic axes (a zero initial state), and is stored once and expanded.

    Returns the onnx.ModelProto. Raises ImportError without the onnx package,
    UnmappedOpError (a NotImplementedError) naming an op that has no ONNX mapping, and
    ValueError when the graph cannot follow the dynamic sizes or a constant depends on
    the input's data.
    """
    require_onnx()
    from .exporter import export as _export

    return _export(model, example_inputs, path, input_names=input_names, output_names=output_names,
                   batch_axes=batch_axes, dynamic_batch=dynamic_batch, dynamic_axes=dynamic_axes,
                   optional_inputs=optional_inputs)
