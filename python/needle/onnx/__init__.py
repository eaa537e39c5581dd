"""Export needle models to ONNX (opset 17), to run them in onnxruntime or any ONNX runtime.

    import needle.onnx
    needle.onnx.export(model, (x,), "model.onnx")          # x: (batch, features)
    needle.onnx.export(lm, (ids,), "lm.onnx", batch_axes=1)  # ids: (seq_len, batch)

Needs the `onnx` extra (`pip install "needle-dl[onnx]"`, or `pip install -e ".[onnx]"` in a clone);
needle itself imports without it.

The model runs forward once, in eval mode, and its autograd op graph becomes the ONNX
graph, op by op through one table of mappings. What cannot be replayed is refused with
an error rather than exported as something else: an op without a mapping, or a
constant computed from the input's data. (Why the op graph and not ndl.compile's
recording: docs/architecture.md.)

Modules, one idea each:
* `trace`      capture a forward call's op graph (eval mode, inputs and buffers as leaves)
* `batch`      which sizes are the batch: two traces at different batch sizes, compared
* `graph`      the ONNX graph under construction (names, initializers, batch-size tensors)
* `ops_table`  needle op -> ONNX nodes, one table
* `exporter`   the walk: leaves become inputs/initializers, nodes go through the table

(`needle export CHECKPOINT --out model.onnx`, a `needle train` checkpoint to ONNX, is
needle.train.export.)
"""
from __future__ import annotations

import importlib
from typing import Optional, Sequence, Union

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
           dynamic_batch: bool = True):
    """Write `model` as an ONNX model (opset 17) to `path` (atomically; None: only return it).

    model: a needle.nn.Module, run once in eval mode on `example_inputs` (a Tensor/numpy
    array, or a tuple of them: float inputs, or int64 ids that the model indexes with,
    e.g. through nn.Embedding). Parameters and buffers (BatchNorm running statistics)
    become initializers under their state_dict names; constants (a causal mask) too.
    Outputs are the model's tensors, flattened from nested tuples, in order.

    batch_axes: the batch axis of every input (an int), or one per input (None: no batch
    axis). With dynamic_batch, those axes are named "batch" and the model is traced a
    second time at batch + 1 to find every size that depends on it (batch.py); other
    sizes (a language model's seq_len, image sizes) are fixed by the example.

    Returns the onnx.ModelProto. Raises ImportError without the onnx package,
    UnmappedOpError (a NotImplementedError) naming an op that has no ONNX mapping, and
    ValueError when the graph cannot follow the batch size or a constant depends on
    the input's data.
    """
    require_onnx()
    from .exporter import export as _export

    return _export(model, example_inputs, path, input_names=input_names, output_names=output_names,
                   batch_axes=batch_axes, dynamic_batch=dynamic_batch)

