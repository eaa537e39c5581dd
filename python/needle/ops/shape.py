"""Shape and layout ops: transpose/permute, reshape, broadcast, stack/split, flip, dilate.

None of them does arithmetic, so none has edges of its own: nan, +-inf and -0 are moved
as they are. Each one's gradient is the inverse rearrangement (broadcast's sums the
repeated entries back, where inf + -inf = nan).
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..autograd import TensorOp, TensorTuple, TensorTupleOp, array_api
from ._helpers import axis_index, inverse_permutation, normalize_axes, require_tensor, size_of, sum_to_shape
from .tuple_ops import make_tuple

__all__ = [
    "Transpose", "Permute", "Reshape", "BroadcastTo", "Stack", "Split", "Flip", "Dilate", "UnDilate",
    "transpose", "permute", "reshape", "flatten", "broadcast_to", "stack", "split", "flip", "dilate", "undilate",
]


class Transpose(TensorOp):
    """Swap two axes: `axes=(i, j)`, or the last two when `axes` is None.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes: Optional[tuple] = None):
        self.axes = axes

    def _pair(self, ndim: int) -> Tuple[int, int]:
        if self.axes is None:
            return ndim - 2, ndim - 1
        return tuple(self.axes)

    def check(self, a):
        require_tensor(a, "transpose")
        if self.axes is None:
            if a.ndim < 2:
                raise ValueError(f"transpose needs at least 2 dimensions, got shape {a.shape}")
        elif len(self.axes) != 2:
            raise ValueError(f"transpose swaps exactly two axes, got axes={self.axes}")
        else:
            for ax in self.axes:
                axis_index(ax, a.ndim, "transpose")

    def compute(self, a):
        return array_api.swapaxes(a, *self._pair(len(a.shape)))

    def gradient(self, out_grad, node):
        return Transpose(self.axes)(out_grad)


def transpose(a, axes=None):
    return Transpose(axes)(a)


class Permute(TensorOp):
    """General axis permutation: output axis i is input axis axes[i].

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes: tuple):
        self.axes = tuple(axes)

    def check(self, a):
        require_tensor(a, "permute")
        n = a.ndim
        if len(self.axes) != n or sorted(axis_index(x, n, "permute") for x in self.axes) != list(range(n)):
            raise ValueError(f"permute: {self.axes} is not a permutation of the axes of shape {a.shape}")

    def compute(self, a):
        return array_api.transpose(a, self.axes)

    def gradient(self, out_grad, node):
        return Permute(inverse_permutation(self.axes))(out_grad)


def permute(a, axes):
    return Permute(axes)(a)


class Reshape(TensorOp):
    """Row-major reshape; one entry of `shape` may be -1.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        require_tensor(a, "reshape")
        size = size_of(a.shape)
        known = size_of(d for d in self.shape if d != -1)
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
    start, end = axis_index(start_dim, len(shape), "flatten"), axis_index(end_dim, len(shape), "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(a, shape[:start] + (size_of(shape[start : end + 1]),) + shape[end + 1 :])


class BroadcastTo(TensorOp):
    """numpy broadcasting, including new leading axes; the gradient sums the copies back.

    Edges: values are copied as they are; the summed gradient follows IEEE (inf + -inf = nan).
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        require_tensor(a, "broadcast_to")
        lead = len(self.shape) - a.ndim
        if lead < 0 or any(s != 1 and s != n for s, n in zip(a.shape, self.shape[lead:])):
            raise ValueError(f"cannot broadcast a tensor of shape {a.shape} to shape {self.shape}")

    def compute(self, a):
        return array_api.broadcast_to(a, self.shape)

    def gradient(self, out_grad, node):
        return sum_to_shape(out_grad, node.inputs[0].shape)


def broadcast_to(a, shape):
    return BroadcastTo(shape)(a)


class Stack(TensorOp):
    """Join equal-shaped tensors along a new axis `axis`; the input is one TensorTuple.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, args):
        if not isinstance(args, TensorTuple):
            raise TypeError(f"Stack expects a TensorTuple, got {type(args).__name__}")
        shapes = [tuple(x.shape) for x in args.realize_cached_data()]
        if not shapes:
            raise ValueError("stack needs at least one tensor")
        for k, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(f"stack: tensor {k} has shape {shape}, tensor 0 has shape {shapes[0]}")
        axis_index(self.axis, len(shapes[0]) + 1, "stack")

    def compute(self, args):
        return array_api.stack(args, axis=self.axis)

    def gradient(self, out_grad, node):
        return split(out_grad, self.axis)


def stack(args, axis: int):
    return Stack(axis)(make_tuple(*args))


class Split(TensorTupleOp):
    """The slices of a tensor along `axis`, with that axis removed (inverse of Stack).

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient; slices
    that get no gradient count as exact zeros.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "split")
        axis_index(self.axis, a.ndim, "split")

    def compute(self, a):
        return tuple(array_api.unstack(a, axis=self.axis))

    def gradient(self, out_grad, node):
        return stack(list(out_grad), self.axis)


def split(a, axis: int):
    return Split(axis)(a)


class Flip(TensorOp):
    """Reverse the order of elements along each of `axes`.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        require_tensor(a, "flip")
        normalize_axes(self.axes, a.ndim, "flip")

    def compute(self, a):
        return array_api.flip(a, normalize_axes(self.axes, len(a.shape), "flip"))

    def gradient(self, out_grad, node):
        return flip(out_grad, self.axes)


def flip(a, axes):
    return Flip(axes)(a)


def _present_axes(axes, ndim: int) -> tuple:
    """The axes that exist in an array of `ndim` dimensions (others are ignored)."""
    return tuple(sorted({ax % ndim for ax in axes if -ndim <= ax < ndim}))


class _DilationOp(TensorOp):
    """Shared arguments of Dilate and UnDilate: the axes and the number of zeros between elements."""

    def __init__(self, axes: tuple, dilation: int):
        if dilation < 0:
            raise ValueError(f"dilation must be non-negative, got {dilation}")
        self.axes = tuple(axes)
        self.dilation = dilation


class Dilate(_DilationOp):
    """Insert `dilation` zeros after every element along each of `axes`.

    Edges: none; values are moved and the inserted entries are exact +0 (never nan).
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        d = self.dilation
        for ax in _present_axes(self.axes, len(a.shape)):
            if d == 0:
                break
            shape = tuple(a.shape)
            # a new length-1 axis after `ax`, padded to d+1, then merged into `ax`
            a = array_api.reshape(array_api.ascontiguousarray(a), shape[: ax + 1] + (1,) + shape[ax + 1 :])
            widths = [(0, 0)] * len(a.shape)
            widths[ax + 1] = (0, d)
            a = array_api.pad(a, widths)
            a = array_api.reshape(a, shape[:ax] + (shape[ax] * (d + 1),) + shape[ax + 1 :])
        return a

    def gradient(self, out_grad, node):
        return undilate(out_grad, self.axes, self.dilation)


def dilate(a, axes, dilation):
    return Dilate(axes, dilation)(a)


class UnDilate(_DilationOp):
    """Keep every (dilation+1)-th element along each of `axes`, starting at 0.

    Edges: none; the dropped entries get an exact 0 gradient, whatever they hold.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        ndim = len(a.shape)
        present = _present_axes(self.axes, ndim)
        step = self.dilation + 1
        return array_api.getitem(a, tuple(slice(None, None, step) if i in present else slice(None)
                                          for i in range(ndim)))

    def gradient(self, out_grad, node):
        grad = dilate(out_grad, self.axes, self.dilation)
        shape = node.inputs[0].shape
        if grad.shape != shape:  # the input's length was not a multiple of dilation + 1
            grad = grad[tuple(slice(0, n) for n in shape)]
        return grad


def undilate(a, axes, dilation):
    return UnDilate(axes, dilation)(a)

