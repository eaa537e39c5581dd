"""Matrix multiplication with numpy's `@` semantics (1-D operands, broadcast batch axes)."""
from __future__ import annotations

from typing import Optional

from ..autograd import Tensor, TensorOp, array_api, vjp
from ._helpers import require_tensor, sum_to_shape
from .shape import reshape, transpose

__all__ = ["MatMul", "MatMulTransposed", "matmul", "AddMM", "addmm"]


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
        return _product_gradients(out_grad, a, b, node.shape)


def _product_gradients(out_grad, a, b, product_shape: tuple):
    """(grad_a, grad_b) of a @ b (product_shape) given its adjoint, None for an operand that
    requires no grad: g @ b^T and a^T @ g, each summed over the batch axes its operand was
    broadcast along (a's batch axes folded into one product where b is a matrix)."""
    grad_a: Optional[Tensor] = None
    grad_b: Optional[Tensor] = None
    if len(a.shape) == 2 and len(b.shape) == 2 and out_grad.shape == product_shape:
        # two matrices and an adjoint of the product's shape: the products fit (the forward op's
        # check passed for a and b), so MatMulTransposed's own check would find nothing
        if a.requires_grad:
            grad_a = Tensor._from_checked_op(MatMulTransposed(False, True), (out_grad, b))  # g @ b^T
        if b.requires_grad:
            grad_b = Tensor._from_checked_op(MatMulTransposed(True, False), (a, out_grad))  # a^T @ g
        return grad_a, grad_b
    if a.requires_grad:
        grad_a = sum_to_shape(MatMulTransposed(False, True)(out_grad, b), a.shape)  # g @ b^T
    if b.requires_grad:
        if b.ndim == 2 and a.ndim > 2:  # fold a's batch axes into one product
            k = a.shape[-1]
            grad_b = MatMulTransposed(True, False)(reshape(a, (-1, k)), reshape(out_grad, (-1, b.shape[-1])))
        else:
            grad_b = sum_to_shape(MatMulTransposed(True, False)(a, out_grad), b.shape)  # a^T @ g
    return grad_a, grad_b


class MatMulTransposed(TensorOp):
    """a @ b with the last two axes of a (`transpose_a`) and/or b (`transpose_b`) swapped first:
    MatMul's gradients g @ b^T and a^T @ g as one node each, where transpose then @ are two. The
    swapped operand is the strided view the Transpose op would give, which BLAS reads in place:
    the same call, so the same bits. Its gradient differentiates transpose-then-matmul
    (autograd.vjp)."""

    def __init__(self, transpose_a: bool = False, transpose_b: bool = False):
        self.transpose_a = transpose_a
        self.transpose_b = transpose_b

    def _operands(self, a, b, swap):
        return (swap(a) if self.transpose_a else a), (swap(b) if self.transpose_b else b)

    def check(self, a, b):
        for t in (a, b):
            require_tensor(t, "matmul")
            if len(t.shape) < 2:
                raise ValueError(f"MatMulTransposed needs operands of at least 2 dimensions, got {a.shape} and "
                                 f"{b.shape}")
        k_a = a.shape[-2] if self.transpose_a else a.shape[-1]
        k_b = b.shape[-1] if self.transpose_b else b.shape[-2]
        if k_a != k_b:
            raise ValueError(f"matmul: inner dimensions differ for shapes {a.shape} and {b.shape} (transposed: "
                             f"{self.transpose_a}, {self.transpose_b})")
        if len(a.shape) > 2 or len(b.shape) > 2:
            try:
                array_api.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None

    def compute(self, a, b):
        return array_api.matmul(*self._operands(a, b, lambda x: array_api.swapaxes(x, -2, -1)))

    def gradient(self, out_grad, node):
        def product(a, b):
            return MatMul()(*self._operands(a, b, transpose))
        return vjp(product, node.inputs, (out_grad,))


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


class AddMM(TensorOp):
    """bias + a @ b, PyTorch's addmm as a Linear layer runs it: bias (p,) or (1, p) broadcast over the rows
    of a (..., n) @ b (n, p). The value is that of the two Tensor ops a @ b + bias.broadcast_to(...)
    bit for bit (array_api.addmm: on the cpu, float32, the product added to the bias rows inside
    the sgemm call where that is exact, one pass and one array fewer); so is the gradient, which
    is theirs: g @ b^T, a^T @ g (a's leading axes folded into its rows) and g summed to the bias's
    shape. One node instead of three forward.
    """

    def check(self, bias, a, b):
        for t in (bias, a, b):
            require_tensor(t, "addmm")
        if len(b.shape) != 2 or len(a.shape) < 2 or a.shape[-1] != b.shape[0] \
                or tuple(bias.shape) not in ((b.shape[1],), (1, b.shape[1])):
            raise ValueError(f"addmm: bias of shape {bias.shape}, a of shape {a.shape} and b of shape {b.shape} do "
                             "not fit: expected (p,) or (1, p) (the course's Linear bias), (..., n) and (n, p)")

    def compute(self, bias, a, b):
        return array_api.addmm(bias, a, b)

    def gradient(self, out_grad, node):
        bias, a, b = node.inputs
        grad_a, grad_b = _product_gradients(out_grad, a, b, node.shape)  # MatMul's
        return sum_to_shape(out_grad, bias.shape) if bias.requires_grad else None, grad_a, grad_b


def addmm(bias, a, b):
    """bias + a @ b with bias (p,) or (1, p) broadcast over the rows of a (..., n) @ b (n, p) (see AddMM)."""
    return AddMM()(bias, a, b)
