"""Ops that build or read tuples of tensors."""
from __future__ import annotations

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp, Value  # noqa: F401


class MakeTensorTuple(TensorTupleOp):
    def compute(self, *args) -> tuple:
        return tuple(args)

    def gradient(self, out_grad, node):
        if not isinstance(out_grad, TensorTuple):
            raise TypeError(f"the gradient of a tuple must be a TensorTuple, got {type(out_grad).__name__}")
        return tuple(out_grad[i] for i in range(len(out_grad)))


def make_tuple(*args):
    return MakeTensorTuple()(*args)


class TupleGetItem(TensorOp):
    def __init__(self, index: int):
        self.index = index

    def __call__(self, a: TensorTuple, fold_const: bool = True) -> Value:
        if not isinstance(a, TensorTuple):
            raise TypeError(f"tuple_get_item expects a TensorTuple, got {type(a).__name__}")
        if fold_const and isinstance(a.op, MakeTensorTuple):
            return a.inputs[self.index]
        return Tensor.make_from_op(self, [a])

    def compute(self, a):
        return a[self.index]

    def gradient(self, out_grad, node):
        from ..init import zeros_like

        parts = [
            out_grad if i == self.index else zeros_like(value)
            for i, value in enumerate(node.inputs[0])
        ]
        return MakeTensorTuple()(*parts)


def tuple_get_item(value, index: int):
    return TupleGetItem(index)(value)


class FusedAddScalars(TensorTupleOp):
    """(a + c0, a + c1) in one op."""

    def __init__(self, c0: float, c1: float):
        self.c0 = c0
        self.c1 = c1

    def compute(self, a):
        return a + self.c0, a + self.c1

    def gradient(self, out_grad, node):
        return out_grad[0] + out_grad[1]


def fused_add_scalars(x, c0, c1):
    return FusedAddScalars(c0, c1)(x)
