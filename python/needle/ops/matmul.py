"""Matrix multiplication with numpy's `@` semantics (1-D operands, broadcast batch axes)."""
from __future__ import annotations

from ..autograd import TensorOp, array_api
from ._helpers import require_tensor, sum_to_shape
from .shape import reshape, transpose

__all__ = ["MatMul", "matmul"]


class MatMul(TensorOp):
    """numpy `@` on operands of at least 2 dimensions, broadcasting batch axes.

    Gradients: g @ b^T and a^T @ g, each summed over the batch axes its operand was
    broadcast along; only the operands that require grad get one.

    Edges: IEEE sums of products, as BLAS gives them (inf * 0 = nan, inf - inf = nan): an
    inf or nan entry of a reaches its row of the result (and b's gradient), like PyTorch.
    """

    def check(self, a, b):
        require_tensor(a, "matmul")
        require_tensor(b, "matmul")
        a_shape, b_shape = a.shape, b.shape
        if len(a_shape) < 2 or len(b_shape) < 2:
            raise ValueError(f"MatMul needs operands of at least 2 dimensions, got {a_shape} and {b_shape}")
        if a_shape[-1] != b_shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ for shapes {a_shape} and {b_shape}")
        if len(a_shape) > 2 or len(b_shape) > 2:
            try:
                array_api.broadcast_shapes(a_shape[:-2], b_shape[:-2])
            except ValueError:
                raise ValueError(f"matmul: batch dimensions of {a_shape} and {b_shape} do not broadcast") from None

    def compute(self, a, b):
        return array_api.matmul(a, b)

    def gradient(self, out_grad, node):
        a, b = node.inputs
        grad_a = grad_b = None
        if a.requires_grad:
            grad_a = sum_to_shape(out_grad @ transpose(b), a.shape)
        if b.requires_grad:
            if b.ndim == 2 and a.ndim > 2:  # fold a's batch axes into one product
                k = a.shape[-1]
                grad_b = transpose(reshape(a, (-1, k))) @ reshape(out_grad, (-1, b.shape[-1]))
            else:
                grad_b = sum_to_shape(transpose(a) @ out_grad, b.shape)
        return grad_a, grad_b


def matmul(a, b):
    """a @ b; 1-D operands are promoted like numpy (a row/column) and squeezed back."""
    require_tensor(a, "matmul")
    require_tensor(b, "matmul")
    if a.ndim >= 2 and b.ndim >= 2:
        return MatMul()(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
        raise ValueError(f"matmul: inner dimensions differ for shapes {a.shape} and {b.shape}")
    lhs = reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    rhs = reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    out = MatMul()(lhs, rhs)
    shape = out.shape
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return reshape(out, shape)
