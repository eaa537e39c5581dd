"""Ops that move data around without arithmetic: stack/split, flip, dilate/undilate."""
from __future__ import annotations

from ..autograd import TensorOp, TensorTuple, TensorTupleOp
from ..backend_selection import array_api
from .ops_mathematic import _axis, _require_tensor, normalize_axes
from .ops_tuple import make_tuple


class Stack(TensorOp):
    """Join equal-shaped tensors along a new axis `axis`; the input is one TensorTuple."""

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
        _axis(self.axis, len(shapes[0]) + 1, "stack")

    def compute(self, args):
        return array_api.stack(args, axis=self.axis)

    def gradient(self, out_grad, node):
        return split(out_grad, self.axis)


def stack(args, axis: int):
    return Stack(axis)(make_tuple(*args))


class Split(TensorTupleOp):
    """The slices of a tensor along `axis`, with that axis removed (inverse of Stack)."""

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, a):
        _require_tensor(a, "split")
        _axis(self.axis, a.ndim, "split")

    def compute(self, a):
        return tuple(array_api.unstack(a, axis=self.axis))

    def gradient(self, out_grad, node):
        return stack(list(out_grad), self.axis)


def split(a, axis: int):
    return Split(axis)(a)


class Flip(TensorOp):
    """Reverse the order of elements along each of `axes`."""

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        _require_tensor(a, "flip")
        normalize_axes(self.axes, a.ndim, "flip")

    def compute(self, a):
        return array_api.flip(a, normalize_axes(self.axes, a.ndim, "flip"))

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
    """Insert `dilation` zeros after every element along each of `axes`."""

    def compute(self, a):
        d = self.dilation
        for ax in _present_axes(self.axes, a.ndim):
            if d == 0:
                break
            shape = a.shape
            # a new length-1 axis after `ax`, padded to d+1, then merged into `ax`
            a = array_api.reshape(array_api.ascontiguousarray(a), shape[: ax + 1] + (1,) + shape[ax + 1 :])
            widths = [(0, 0)] * a.ndim
            widths[ax + 1] = (0, d)
            a = array_api.pad(a, widths)
            a = array_api.reshape(a, shape[:ax] + (shape[ax] * (d + 1),) + shape[ax + 1 :])
        return a

    def gradient(self, out_grad, node):
        return undilate(out_grad, self.axes, self.dilation)


def dilate(a, axes, dilation):
    return Dilate(axes, dilation)(a)


class UnDilate(_DilationOp):
    """Keep every (dilation+1)-th element along each of `axes`, starting at 0."""

    def compute(self, a):
        present = _present_axes(self.axes, a.ndim)
        step = self.dilation + 1
        return a[tuple(slice(None, None, step) if i in present else slice(None) for i in range(a.ndim))]

    def gradient(self, out_grad, node):
        grad = dilate(out_grad, self.axes, self.dilation)
        shape = node.inputs[0].shape
        if grad.shape != shape:  # the input's length was not a multiple of dilation + 1
            grad = grad[tuple(slice(0, n) for n in shape)]
        return grad


def undilate(a, axes, dilation):
    return UnDilate(axes, dilation)(a)
