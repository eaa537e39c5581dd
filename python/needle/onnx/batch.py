"""Which sizes are the batch: found by tracing the model at two batch sizes.

needle's ops hold concrete shapes (Reshape((seq_len * bs, width)), BroadcastTo((bs, n)),
a zero initial state of shape (bs, hidden)). Written into the ONNX graph as they are,
they would fix the batch size. So the exporter traces the model twice, at batch sizes
B1 and B2, and compares the two graphs node by node: a size that is the same in both
is a constant, one that changes is `k * batch + c` (k and c solved from the two
traces), computed at run time from the input's shape. The two graphs must have the
same structure, and their constants the same values (up to repetition along the
batch axes, e.g. a bias broadcast over the rows): a constant whose values changed was
computed from the input's data outside the op graph, which ONNX cannot express.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, TypeGuard, Union

import numpy as np

from ..autograd import Value
from .trace import Trace

__all__ = ["Sym", "Dim", "all_ints", "pair_dims", "pair_traces", "squeeze_batch_axes", "TraceMismatch"]


@dataclass(frozen=True)
class Sym:
    """A size that depends on the batch: k * batch + c."""

    k: int
    c: int = 0

    def __str__(self) -> str:
        text = "batch" if self.k == 1 else f"{self.k}*batch"
        return text if not self.c else f"{text}{self.c:+d}"


Dim = Union[int, Sym]


def all_ints(dims: Sequence[Dim]) -> TypeGuard[Sequence[int]]:
    """True when no size depends on the batch."""
    return all(isinstance(d, int) for d in dims)


class TraceMismatch(ValueError):
    """The model's graph is not the same at two batch sizes (the message says where)."""


def pair_dims(shape1: Sequence[int], shape2: Optional[Sequence[int]], batch: Tuple[int, int]) -> Tuple[Dim, ...]:
    """The sizes of `shape1` (traced at batch b1) as constants or Syms, given `shape2` (the
    same value at batch b2; None for an export with a fixed batch)."""
    if shape2 is None:
        return tuple(int(d) for d in shape1)
    if len(shape1) != len(shape2):
        raise TraceMismatch(f"a value has shape {tuple(shape1)} at batch {batch[0]} and {tuple(shape2)} "
                            f"at batch {batch[1]}")
    b1, b2 = batch
    dims: List[Dim] = []
    for d1, d2 in zip(shape1, shape2):
        if d1 == d2:
            dims.append(int(d1))
            continue
        k, rest = divmod(d2 - d1, b2 - b1)
        if rest or k <= 0:
            raise TraceMismatch(f"a size goes from {d1} to {d2} when the batch goes from {b1} to {b2}: "
                                "not a multiple of the batch")
        dims.append(Sym(int(k), int(d1 - k * b1)))
    return tuple(dims)


def _same_op(node1: Value, node2: Value) -> bool:
    """Same op class and the same arguments, shapes and index plans aside (those are
    compared by the mappings, which read them through `pair_dims`)."""
    if type(node1.op) is not type(node2.op):
        return False
    if node1.op is None:
        return True
    attrs1, attrs2 = vars(node1.op), vars(node2.op)
    if attrs1.keys() != attrs2.keys():
        return False
    for key, value in attrs1.items():
        if key in ("shape", "plan", "input_shape", "kernel_shape", "template"):
            continue
        try:
            if bool(value != attrs2[key]):
                return False
        except (TypeError, ValueError):  # values that do not compare (arrays): treat as the same
            continue
    return True


def pair_traces(first: Trace, second: Trace, batch: Tuple[int, int]) -> Dict[int, Value]:
    """id(node of `first`) -> the matching node of `second`.

    Raises TraceMismatch naming the first node that differs (another op, other arguments,
    other inputs): the forward pass then depends on the batch size in a way that a single
    ONNX graph cannot follow.
    """
    b1, b2 = batch
    if len(first.nodes) != len(second.nodes) or len(first.outputs) != len(second.outputs):
        raise TraceMismatch(f"the model's op graph has {len(first.nodes)} nodes at batch {b1} and "
                            f"{len(second.nodes)} at batch {b2}")
    pos1, pos2 = first.position(), second.position()
    inputs1 = {id(t): i for i, t in enumerate(first.inputs)}
    inputs2 = {id(t): i for i, t in enumerate(second.inputs)}
    twins: Dict[int, Value] = {id(a): b for a, b in zip(first.inputs, second.inputs)}  # used or not
    for n1, n2 in zip(first.nodes, second.nodes):
        what = type(n1.op).__name__ if n1.op is not None else "leaf"
        same = _same_op(n1, n2) and len(n1.inputs) == len(n2.inputs) and all(
            pos1[id(a)] == pos2[id(b)] for a, b in zip(n1.inputs, n2.inputs))
        if n1.op is None:  # a leaf: the same input, the same parameter, or a constant in both
            same = same and inputs1.get(id(n1)) == inputs2.get(id(n2))
            same = same and (id(n1) not in first.names or n1 is n2)
        if not same:
            raise TraceMismatch(f"the model's op graph differs between batch sizes {b1} and {b2} at node "
                                f"{pos1[id(n1)]} ({what})")
        twins[id(n1)] = n2
    for o1, o2 in zip(first.outputs, second.outputs):
        if twins.get(id(o1)) is not o2:
            raise TraceMismatch(f"the model's outputs differ between batch sizes {b1} and {b2}")
    return twins


def _uniform_along(array: np.ndarray, axis: int) -> bool:
    first = np.take(array, [0], axis=axis)
    return bool(np.array_equal(array, np.broadcast_to(first, array.shape), equal_nan=array.dtype.kind == "f"))


def squeeze_batch_axes(array1: np.ndarray, array2: Optional[np.ndarray], dims: Sequence[Dim]) -> np.ndarray:
    """`array1` with each batch-dependent axis cut to size 1, checked to be the same data
    as `array2` (the constant in the other trace), cut the same way.

    Raises ValueError if the constant varies along a batch axis or differs between the
    traces: it was then computed from the input's data outside the op graph.
    """
    if array2 is None:
        return array1
    axes = [i for i, d in enumerate(dims) if isinstance(d, Sym)]
    cut: List[Optional[np.ndarray]] = []
    for array in (array1, array2):
        if not all(_uniform_along(array, axis) for axis in axes):
            cut.append(None)
            continue
        for axis in axes:
            array = np.take(array, [0], axis=axis)
        cut.append(array)
    if cut[0] is None or cut[1] is None or cut[0].shape != cut[1].shape or not np.array_equal(
            cut[0], cut[1], equal_nan=cut[0].dtype.kind == "f"):
        raise ValueError(
            f"needle.onnx: a constant of shape {array1.shape} depends on the input's data: it was computed "
            "outside the op graph (a comparison, .numpy(), a tensor made from the input's values), "
            "which an ONNX graph cannot reproduce")
    return cut[0]
