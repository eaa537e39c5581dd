"""Ops that build or read tuples of tensors."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, cast

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp, Value, array_api

__all__ = ["MakeTensorTuple", "TupleGetItem", "SparseTuple", "FusedAddScalars", "make_tuple", "tuple_get_item",
           "add_tuples", "tuple_entries", "entries_by_position", "fused_add_scalars"]


class MakeTensorTuple(TensorTupleOp):
    """A tuple of its inputs. Edges: none (values are not touched)."""

    def compute(self, *args) -> tuple:
        return tuple(args)

    def gradient(self, out_grad, node):
        if not isinstance(out_grad, TensorTuple):
            raise TypeError(f"the gradient of a tuple must be a TensorTuple, got {type(out_grad).__name__}")
        return tuple(out_grad[i] for i in range(len(out_grad)))


def make_tuple(*args):
    return MakeTensorTuple()(*args)


class TupleGetItem(TensorOp):
    """Element `index` of a tuple. Edges: none; the other elements get exact 0 gradients."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, a: TensorTuple, fold_const: bool = True) -> Value:
        if not isinstance(a, TensorTuple):
            raise TypeError(f"tuple_get_item expects a TensorTuple, got {type(a).__name__}")
        if fold_const and isinstance(a.op, MakeTensorTuple):
            return a.inputs[self.index]
        if fold_const and isinstance(a.op, SparseTuple) and self.index in a.op.indices:
            return a.inputs[a.op.indices.index(self.index)]
        return Tensor.make_from_op(self, [a])

    def compute(self, a):
        return a[self.index]

    def gradient(self, out_grad, node):
        """out_grad at `index`, zeros elsewhere (kept sparse: see SparseTuple)."""
        return SparseTuple((self.index,), node.inputs[0].realize_cached_data())(out_grad)


def tuple_get_item(value, index: int):
    return TupleGetItem(index)(value)


class SparseTuple(TensorTupleOp):
    """A tuple holding its inputs at `indices` and zeros everywhere else.

    The gradient of one element of a tuple is such a tuple. Kept sparse, the n
    gradients of the n elements of a split add up in O(n) work instead of n full
    tuples of zeros added pairwise. `template` is the tuple's data, for the
    zeros' shapes; they are zero-stride views of one scalar, not allocations.
    Edges: none (the zeros are exact).
    """

    eager = False  # usually consumed by add_tuples / tuple_get_item without its data being read

    def __init__(self, indices: Sequence[int], template: tuple):
        self.indices = tuple(indices)
        self.template = template

    def compute(self, *values) -> tuple:
        given = dict(zip(self.indices, values))
        out = []
        for i, like in enumerate(self.template):
            if i in given:
                out.append(given[i])
            else:
                zero = array_api.full((), 0, array_api.dtype_of(like), array_api.device_of(like))
                out.append(array_api.broadcast_to(zero, tuple(like.shape)))
        return tuple(out)

    def gradient(self, out_grad, node):
        return tuple(out_grad[i] for i in self.indices)


def tuple_entries(t: TensorTuple) -> List[Tuple[int, Tensor]]:
    """(index, tensor) for the elements a tuple actually holds (a sparse tuple omits its zeros)."""
    elements = cast(List[Tensor], t.inputs)  # a tuple's inputs are its tensors
    if isinstance(t.op, SparseTuple):
        return list(zip(t.op.indices, elements))
    if isinstance(t.op, MakeTensorTuple):
        return list(enumerate(elements))
    return list(enumerate(t.tuple()))


def entries_by_position(t: TensorTuple, length: int) -> List[Optional[Tensor]]:
    """The elements a tuple actually holds at their positions, None where a sparse tuple has its
    zeros: a tuple adjoint as the cotangents of autograd.vjp."""
    elements: List[Optional[Tensor]] = [None] * length
    for k, element in tuple_entries(t):
        elements[k] = element
    return elements


def _length(t: TensorTuple) -> int:
    """A tuple's length, read from its structure where possible (without computing it)."""
    if isinstance(t.op, SparseTuple):
        return len(t.op.template)
    if isinstance(t.op, MakeTensorTuple):
        return len(t.inputs)
    return len(t)


def add_tuples(tuples: Sequence[TensorTuple]) -> TensorTuple:
    """Elementwise sum of equal-length tuples; elements a sparse tuple lacks count as zeros."""
    if not all(isinstance(t, TensorTuple) for t in tuples):
        raise ValueError("tuples can only be added to TensorTuples")
    length = _length(tuples[0])
    if any(_length(t) != length for t in tuples):
        raise ValueError(f"tuples of lengths {[_length(t) for t in tuples]} cannot be added")
    sums: Dict[int, Tensor] = {}
    for t in tuples:
        for i, value in tuple_entries(t):
            sums[i] = value if i not in sums else sums[i] + value
    if len(sums) == length:
        return MakeTensorTuple()(*[sums[i] for i in range(length)])
    indices = sorted(sums)
    template = next((t.op.template for t in tuples if isinstance(t.op, SparseTuple)), None)
    if template is None:
        template = tuples[0].realize_cached_data()
    return SparseTuple(indices, template)(*[sums[i] for i in indices])


class FusedAddScalars(TensorTupleOp):
    """(a + c0, a + c1) in one op. Edges: AddScalar's (IEEE, inf or nan scalars included)."""

    def __init__(self, c0: float, c1: float):
        self.c0 = c0
        self.c1 = c1

    def compute(self, a):
        return array_api.add(a, self.c0), array_api.add(a, self.c1)

    def gradient(self, out_grad, node):
        return out_grad[0] + out_grad[1]


def fused_add_scalars(x, c0, c1):
    return FusedAddScalars(c0, c1)(x)
