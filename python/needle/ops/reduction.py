"""Reductions beyond summation: max (gradient to the argmax), mean, argmax."""
from __future__ import annotations

import numpy

from ..autograd import Tensor, TensorOp
from ..backend_selection import array_api
from . import array_helpers
from .ops_mathematic import (
    _axis, _const_like, _require_tensor, expand_reduced, inverse_permutation, normalize_axes, summation,
)


def _first_argmax_mask(data, axes, device):
    """1.0 at the first maximum of every slice reduced over `axes`, 0.0 elsewhere."""
    ndim = len(data.shape)
    axes = tuple(range(ndim)) if axes is None else axes
    kept = tuple(i for i in range(ndim) if i not in axes)
    perm = kept + axes
    kept_shape = tuple(data.shape[i] for i in kept)
    reduced_shape = tuple(data.shape[i] for i in axes)
    size = int(numpy.prod(reduced_shape))
    moved = array_api.reshape(array_api.ascontiguousarray(array_api.transpose(data, perm)), kept_shape + (size,))
    first = array_helpers.to_host(array_api.argmax(moved, axis=-1)).astype(numpy.int64)
    mask = device.one_hot(size, first, dtype=data.dtype)
    mask = array_api.reshape(mask, kept_shape + reduced_shape)
    return array_api.transpose(mask, inverse_permutation(perm))


class Max(TensorOp):
    """Maximum over `axes` (None: all). Like torch.max(dim), the gradient goes to the first maximum."""

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        _require_tensor(a, "max")
        axes = normalize_axes(self.axes, a.ndim, "max")
        shape = a.shape
        if any(shape[i] == 0 for i in (range(len(shape)) if axes is None else axes)):
            raise ValueError(f"max: cannot reduce a zero-size axis of shape {shape}")

    def compute(self, a):
        return array_api.max(a, axis=normalize_axes(self.axes, len(a.shape), "max"), keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        axes = normalize_axes(self.axes, a.ndim, "max")
        mask = _first_argmax_mask(a.realize_cached_data(), axes, a.device)
        return expand_reduced(out_grad, a.shape, self.axes, self.keepdims) * _const_like(mask, a)


def max(a, axes=None, keepdims: bool = False):  # noqa: A001
    return Max(axes, keepdims)(a)


def mean(a, axes=None, keepdims: bool = False):
    """Average over `axes` (None: all)."""
    axes_n = normalize_axes(axes, a.ndim, "mean")
    count = int(numpy.prod([a.shape[i] for i in (range(a.ndim) if axes_n is None else axes_n)]))
    return summation(a, axes, keepdims=keepdims) / count


def argmax(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Index of the first maximum along `axis` (of the flattened tensor if None), as a constant."""
    if axis is not None:
        _axis(axis, a.ndim, "argmax")
    return _const_like(array_api.argmax(a.realize_cached_data(), axis=axis, keepdims=keepdims), a)
