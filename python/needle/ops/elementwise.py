"""Elementwise, shape and matrix ops: each op's forward (`compute`, on backend
arrays) and gradient (built from Tensor ops, so it is differentiable too)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy

from ..autograd import NDArray, Tensor, TensorOp, Value  # noqa: F401
from ..backend_selection import BACKEND, array_api
from .ops_tuple import *  # noqa: F401,F403


# --- input checks shared by several ops ---------------------------------------------

def _require_tensor(x, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} expects Tensor inputs, got {type(x).__name__}")


def _same_shape(a, b, what: str) -> None:
    _require_tensor(a, what)
    _require_tensor(b, what)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes {a.shape} and {b.shape} differ")


def _axis(axis: int, ndim: int, what: str) -> int:
    if not isinstance(axis, (int, numpy.integer)):
        raise TypeError(f"{what}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what}: axis {axis} is out of range for {ndim} dimensions")
    return int(axis) % ndim


def normalize_axes(axes, ndim: int, what: str) -> Optional[Tuple[int, ...]]:
    """None, an int or a sequence of ints as a sorted tuple of non-negative axes."""
    if axes is None:
        return None
    if isinstance(axes, (int, numpy.integer)):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"{what}: axes must be None, an int or a tuple of ints, got {axes!r}")
    out = tuple(sorted(_axis(a, ndim, what) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated axis in {tuple(axes)}")
    return out


def _const_like(data, like: Tensor) -> Tensor:
    """A constant tensor from backend data, with `like`'s dtype."""
    if BACKEND == "np":
        data = numpy.asarray(data).astype(like.dtype, copy=False)
    return Tensor.make_const(data)


# --- elementwise arithmetic ------------------------------------------------------------

class EWiseAdd(TensorOp):
    def check(self, a, b):
        _same_shape(a, b, "add")

    def compute(self, a, b):
        return a + b

    def gradient(self, out_grad, node):
        return out_grad, out_grad


def add(a, b):
    return EWiseAdd()(a, b)


class AddScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a + self.scalar

    def gradient(self, out_grad, node):
        return out_grad


def add_scalar(a, scalar):
    return AddScalar(scalar)(a)


class EWiseMul(TensorOp):
    def check(self, a, b):
        _same_shape(a, b, "multiply")

    def compute(self, a, b):
        return a * b

    def gradient(self, out_grad, node):
        lhs, rhs = node.inputs
        return out_grad * rhs, out_grad * lhs


def multiply(a, b):
    return EWiseMul()(a, b)


class MulScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a * self.scalar

    def gradient(self, out_grad, node):
        return out_grad * self.scalar


def mul_scalar(a, scalar):
    return MulScalar(scalar)(a)


class EWisePow(TensorOp):
    """a ** b elementwise."""

    def check(self, a, b):
        _same_shape(a, b, "power")

    def compute(self, a, b):
        return a ** b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        # where a == 0, a ** b does not depend on b (b > 0): take ln 1 = 0 there
        # instead of 0 * ln 0 = nan, as PyTorch does
        log_a = log(a + _const_like(a.realize_cached_data() == 0, a))
        return out_grad * b * a ** (b - 1), out_grad * node * log_a


def power(a, b):
    return EWisePow()(a, b)


class PowerScalar(TensorOp):
    """a ** scalar; the scalar may be any real number."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a ** self.scalar

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        if self.scalar == 0:  # a ** 0 is constant; 0 * a ** -1 would be nan at a = 0
            from ..init import zeros_like

            return zeros_like(a)
        return out_grad * self.scalar * a ** (self.scalar - 1)


def power_scalar(a, scalar):
    return PowerScalar(scalar)(a)


def sqrt(a):
    return PowerScalar(0.5)(a)


class EWiseDiv(TensorOp):
    def check(self, a, b):
        _same_shape(a, b, "divide")

    def compute(self, a, b):
        return a / b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return out_grad / b, -out_grad * a / (b * b)


def divide(a, b):
    return EWiseDiv()(a, b)


class DivScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return a / self.scalar

    def gradient(self, out_grad, node):
        return out_grad / self.scalar


def divide_scalar(a, scalar):
    return DivScalar(scalar)(a)


class Negate(TensorOp):
    def compute(self, a):
        return -a

    def gradient(self, out_grad, node):
        return -out_grad


def negate(a):
    return Negate()(a)


class Log(TensorOp):
    def compute(self, a):
        return array_api.log(a)

    def gradient(self, out_grad, node):
        return out_grad / node.inputs[0]


def log(a):
    return Log()(a)


class Exp(TensorOp):
    def compute(self, a):
        return array_api.exp(a)

    def gradient(self, out_grad, node):
        return out_grad * node


def exp(a):
    return Exp()(a)


class ReLU(TensorOp):
    def compute(self, a):
        return array_api.maximum(a, 0)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        return out_grad * _const_like(a.realize_cached_data() > 0, a)


def relu(a):
    return ReLU()(a)


class Tanh(TensorOp):
    def compute(self, a):
        return array_api.tanh(a)

    def gradient(self, out_grad, node):
        return out_grad * (1 - node * node)


def tanh(a):
    return Tanh()(a)


class Sigmoid(TensorOp):
    """1 / (1 + exp(-a)), computed as (1 + tanh(a/2)) / 2 so it never overflows."""

    def compute(self, a):
        return (array_api.tanh(a * 0.5) + 1) * 0.5

    def gradient(self, out_grad, node):
        return out_grad * node * (1 - node)


def sigmoid(a):
    return Sigmoid()(a)


# --- shape ops -----------------------------------------------------------------------

class Transpose(TensorOp):
    """Swap two axes: `axes=(i, j)`, or the last two when `axes` is None."""

    def __init__(self, axes: Optional[tuple] = None):
        self.axes = axes

    def _pair(self, ndim: int) -> Tuple[int, int]:
        if self.axes is None:
            return ndim - 2, ndim - 1
        return tuple(self.axes)

    def check(self, a):
        _require_tensor(a, "transpose")
        if self.axes is None:
            if a.ndim < 2:
                raise ValueError(f"transpose needs at least 2 dimensions, got shape {a.shape}")
        elif len(self.axes) != 2:
            raise ValueError(f"transpose swaps exactly two axes, got axes={self.axes}")
        else:
            for ax in self.axes:
                _axis(ax, a.ndim, "transpose")

    def compute(self, a):
        return array_api.swapaxes(a, *self._pair(a.ndim))

    def gradient(self, out_grad, node):
        return Transpose(self.axes)(out_grad)


def transpose(a, axes=None):
    return Transpose(axes)(a)


class Permute(TensorOp):
    """General axis permutation: output axis i is input axis axes[i]."""

    def __init__(self, axes: tuple):
        self.axes = tuple(axes)

    def check(self, a):
        _require_tensor(a, "permute")
        n = a.ndim
        if len(self.axes) != n or sorted(_axis(x, n, "permute") for x in self.axes) != list(range(n)):
            raise ValueError(f"permute: {self.axes} is not a permutation of the axes of shape {a.shape}")

    def compute(self, a):
        return array_api.transpose(a, self.axes)

    def gradient(self, out_grad, node):
        return Permute(inverse_permutation(self.axes))(out_grad)


def inverse_permutation(perm) -> tuple:
    """The permutation that undoes `perm` (negative axes allowed)."""
    n = len(perm)
    inverse = [0] * n
    for i, ax in enumerate(perm):
        inverse[ax % n] = i
    return tuple(inverse)


def permute(a, axes):
    return Permute(axes)(a)


class Reshape(TensorOp):
    """Row-major reshape; one entry of `shape` may be -1."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        _require_tensor(a, "reshape")
        size = int(numpy.prod(a.shape))
        known = int(numpy.prod([d for d in self.shape if d != -1]))
        unknown = self.shape.count(-1)
        ok = unknown <= 1 and all(d >= -1 for d in self.shape)
        ok = ok and (known == size if unknown == 0 else known > 0 and size % known == 0)
        if not ok:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} (size {size}) into {self.shape}")

    def compute(self, a):
        return array_api.reshape(array_api.ascontiguousarray(a), self.shape)

    def gradient(self, out_grad, node):
        return Reshape(node.inputs[0].shape)(out_grad)


def reshape(a, shape):
    return Reshape(shape)(a)


def flatten(a, start_dim: int = 0, end_dim: int = -1):
    """Merge axes start_dim..end_dim into one (PyTorch's flatten)."""
    shape = a.shape
    if not shape:
        return reshape(a, (1,))
    start, end = _axis(start_dim, len(shape), "flatten"), _axis(end_dim, len(shape), "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = int(numpy.prod(shape[start : end + 1]))
    return reshape(a, shape[:start] + (merged,) + shape[end + 1 :])


def sum_to_shape(x: Tensor, shape: tuple) -> Tensor:
    """Undo broadcasting: sum x over the axes that broadcasting to x.shape created."""
    if x.shape == tuple(shape):
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    if axes:
        x = summation(x, axes)
    return reshape(x, shape)


class BroadcastTo(TensorOp):
    """numpy broadcasting, including new leading axes."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        _require_tensor(a, "broadcast_to")
        lead = len(self.shape) - a.ndim
        if lead < 0 or any(s != 1 and s != n for s, n in zip(a.shape, self.shape[lead:])):
            raise ValueError(f"cannot broadcast a tensor of shape {a.shape} to shape {self.shape}")

    def compute(self, a):
        return array_api.broadcast_to(a, self.shape)

    def gradient(self, out_grad, node):
        return sum_to_shape(out_grad, node.inputs[0].shape)


def broadcast_to(a, shape):
    return BroadcastTo(shape)(a)


class Summation(TensorOp):
    """Sum over `axes` (None: all of them); reduced axes are dropped unless keepdims."""

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        _require_tensor(a, "summation")
        if self.axes is not None and isinstance(self.axes, (tuple, list)) and not self.axes:
            raise ValueError("summation: empty tuple of axes; pass None to sum every axis")
        normalize_axes(self.axes, a.ndim, "summation")

    def compute(self, a):
        axes = normalize_axes(self.axes, a.ndim, "summation")
        return array_api.sum(a, axis=axes, keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        return expand_reduced(out_grad, node.inputs[0].shape, self.axes, self.keepdims)


def summation(a, axes=None, keepdims: bool = False):
    return Summation(axes, keepdims)(a)


def expand_reduced(g: Tensor, shape: tuple, axes, keepdims: bool) -> Tensor:
    """Broadcast the result of a reduction over `axes` back to the input `shape`."""
    if not keepdims:
        reduced = normalize_axes(axes, len(shape), "reduce")
        reduced = range(len(shape)) if reduced is None else reduced
        kept = tuple(1 if i in reduced else d for i, d in enumerate(shape))
        g = reshape(g, kept)
    return broadcast_to(g, shape)


# --- matrix multiplication ---------------------------------------------------------------

class MatMul(TensorOp):
    """numpy `@` on operands of at least 2 dimensions, broadcasting batch axes."""

    def check(self, a, b):
        _require_tensor(a, "matmul")
        _require_tensor(b, "matmul")
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"MatMul needs operands of at least 2 dimensions, got {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ for shapes {a.shape} and {b.shape}")
        try:
            numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None

    def compute(self, a, b):
        return a @ b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        grad_a = sum_to_shape(out_grad @ transpose(b), a.shape)
        if b.ndim == 2 and a.ndim > 2:  # fold a's batch axes into one product
            k = a.shape[-1]
            grad_b = transpose(reshape(a, (-1, k))) @ reshape(out_grad, (-1, b.shape[-1]))
        else:
            grad_b = sum_to_shape(transpose(a) @ out_grad, b.shape)
        return grad_a, grad_b


def matmul(a, b):
    """a @ b; 1-D operands are promoted like numpy (a row/column) and squeezed back."""
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


# --- comparisons (constant results, no gradient) ----------------------------------------

_COMPARE = {
    "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y,
    "gt": lambda x, y: x > y,
    "ge": lambda x, y: x >= y,
    "eq": lambda x, y: x == y,
    "ne": lambda x, y: x != y,
}


def compare(a: Tensor, b, kind: str) -> Tensor:
    """Elementwise comparison as a constant 0/1 tensor of a's dtype (broadcasting)."""
    lhs = a.realize_cached_data()
    if isinstance(b, Tensor):
        shape = tuple(numpy.broadcast_shapes(a.shape, b.shape)) if a.shape != b.shape else a.shape
        rhs = b.realize_cached_data()
        if a.shape != shape:
            lhs = array_api.broadcast_to(lhs, shape)
        if b.shape != shape:
            rhs = array_api.broadcast_to(rhs, shape)
    else:
        rhs = b
    return _const_like(_COMPARE[kind](lhs, rhs), a)
