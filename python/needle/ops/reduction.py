"""Reductions: sum, mean, max (with PyTorch's tie rules), argmax, and the log-sum-exp family
(logsumexp, logsoftmax, softmax), all numerically stable.

Edges (each op's docstring says more; tests/test_op_edges.py checks them against PyTorch):
* a nan is the maximum of whatever it is reduced with (the max kernels propagate it).
* `max` over one given axis sends the gradient to the first maximal element
  (`torch.max(dim)`), the first nan if there is one; over all axes or several axes
  it is split evenly among the ties, the nans being the ties of a nan maximum
  (`torch.max()`; `torch.amax` would give such a group nan gradients).
* `logsumexp` subtracts the maximum first, and a maximum of +-inf is replaced by 0, so
  a row of -inf gives -inf (not nan) and a row holding +inf gives +inf.
* log-softmax is `(a - m) - log(sum(exp(a - m)))`, never `a - lse`: the latter cancels
  to 0 for logits of 1e8 in float32. Like softmax, it is nan on a row that holds +inf
  or nan or is all -inf (PyTorch's, as a - m is then nan somewhere).
"""
from __future__ import annotations

import math

from ..autograd import Tensor, TensorOp, array_api
from ._helpers import (  # noqa: F401  (sum_to_shape: needle.ops re-exports it from here)
    axis_index,
    constant,
    inverse_permutation,
    normalize_axes,
    reduced_axes,
    require_tensor,
    size_of,
    sum_to_shape,
)
from .elementwise import exp, where
from .shape import broadcast_to, reshape

__all__ = ["Summation", "Max", "LogSumExp", "LogSoftmax", "Softmax", "summation", "mean", "max", "argmax",
           "logsumexp", "logsoftmax", "softmax", "sum_to_shape", "expand_reduced", "extremes"]


def expand_reduced(g: Tensor, shape: tuple, axes, keepdims: bool) -> Tensor:
    """Broadcast the result of a reduction over `axes` back to the input `shape`."""
    if not keepdims:
        reduced = reduced_axes(axes, len(shape), "reduce")
        g = reshape(g, tuple(1 if i in reduced else d for i, d in enumerate(shape)))
    return broadcast_to(g, shape)


class Summation(TensorOp):
    """Sum over `axes` (None: all of them); reduced axes are dropped unless keepdims.

    Edges: IEEE (inf + -inf = nan, nan spreads); the gradient is the adjoint, broadcast.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        require_tensor(a, "summation")
        if self.axes is not None and isinstance(self.axes, (tuple, list)) and not self.axes:
            raise ValueError("summation: empty tuple of axes; pass None to sum every axis")
        normalize_axes(self.axes, a.ndim, "summation")

    def compute(self, a):
        return array_api.sum(a, axis=normalize_axes(self.axes, len(a.shape), "summation"), keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        return expand_reduced(out_grad, node.inputs[0].shape, self.axes, self.keepdims)


def summation(a, axes=None, keepdims: bool = False):
    return Summation(axes, keepdims)(a)


def mean(a, axes=None, keepdims: bool = False):
    """Average over `axes` (None: all), as the sum divided by the count (the sum's edges)."""
    count = size_of(a.shape[i] for i in reduced_axes(axes, a.ndim, "mean"))
    return summation(a, axes, keepdims=keepdims) / count


def _first_max_mask(data, axis: int, device):
    """Bool array, True at the first maximum along `axis`, built on the device."""
    ndim = len(data.shape)
    perm = tuple(i for i in range(ndim) if i != axis) + (axis,)
    moved = array_api.transpose(data, perm)
    first = array_api.argmax(moved, axis=ndim - 1)
    mask = array_api.one_hot(data.shape[axis], first, dtype="bool", device=device)
    return array_api.transpose(mask, inverse_permutation(perm))


class Max(TensorOp):
    """Maximum over `axes` (None: all).

    Edges: nan if the group holds a nan, -inf for a group of -inf. The gradient goes to
    the first maximum (the first nan) over one axis, and is split evenly among the ties
    (the nans) over several or all axes; +0 and -0 tie.
    """

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        require_tensor(a, "max")
        if any(a.shape[i] == 0 for i in reduced_axes(self.axes, a.ndim, "max")):
            raise ValueError(f"max: cannot reduce a zero-size axis of shape {a.shape}")

    def compute(self, a):
        return array_api.max(a, axis=normalize_axes(self.axes, len(a.shape), "max"), keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        data = a.realize_cached_data()
        g = expand_reduced(out_grad, a.shape, self.axes, self.keepdims)
        axes = normalize_axes(self.axes, a.ndim, "max")
        if axes is not None and len(axes) == 1:
            return where(constant(_first_max_mask(data, axes[0], a.device)), g, 0.0)
        kept = array_api.max(data, axis=axes, keepdims=True)
        # a nan is the max of its group (the max kernels propagate it), so the nans are its ties
        ties = array_api.add(array_api.equal(data, array_api.broadcast_to(kept, tuple(data.shape))),
                             array_api.not_equal(data, data))
        count = array_api.sum(ties, axis=axes, keepdims=True)
        share = constant(array_api.broadcast_to(count, tuple(data.shape)))
        return where(constant(ties), g / share, 0.0)


def max(a, axes=None, keepdims: bool = False):  # noqa: A001
    return Max(axes, keepdims)(a)


def argmax(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the first maximum along `axis` (of the flattened tensor if None), a constant;
    the first nan where there is one (torch.argmax's)."""
    if axis is not None:
        axis_index(axis, a.ndim, "argmax")
    return constant(array_api.argmax(a.realize_cached_data(), axis=axis, keepdims=keepdims))


def _safe_max(a, axes):
    """The max over `axes` (kept), with +-inf replaced by 0 so that a - max is never inf - inf."""
    m = array_api.max(a, axis=axes, keepdims=True)
    return array_api.where(array_api.equal(array_api.abs(m), math.inf), 0, m)


def _log_sum_exp(a, axes):
    """log(sum(exp(a - m))) + m over `axes` (None: all), kept dims."""
    m = _safe_max(a, axes)
    shifted = array_api.exp(array_api.subtract(a, array_api.broadcast_to(m, tuple(a.shape))))
    return array_api.add(array_api.log(array_api.sum(shifted, axis=axes, keepdims=True)), m)


class LogSumExp(TensorOp):
    """log(sum(exp(a), axes)); axes is None (all), an int or a tuple.

    Edges: exact for huge entries; a group of -inf gives -inf, one holding +inf gives +inf,
    nan spreads. The gradient exp(a - lse) is nan where a and lse are the same infinity
    (a group of -inf, the +inf entry), as in PyTorch.
    """

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        require_tensor(a, "logsumexp")
        normalize_axes(self.axes, a.ndim, "logsumexp")

    def compute(self, a):
        axes = normalize_axes(self.axes, len(a.shape), "logsumexp")
        out = _log_sum_exp(a, axes)
        kept = () if axes is None else tuple(d for i, d in enumerate(a.shape) if i not in axes)
        return array_api.reshape(out, kept)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        lse = expand_reduced(node, a.shape, self.axes, keepdims=False)
        return expand_reduced(out_grad, a.shape, self.axes, keepdims=False) * exp(a - lse)


def logsumexp(a, axes=None):
    return LogSumExp(axes=axes)(a)


class LogSoftmax(TensorOp):
    """(a - m) - log(sum(exp(a - m))) over `axis` (the last one, which is axis 1 for the
    course's 2-D input); m is the row maximum.

    Edges: exact for huge logits (1e8 in float32); -inf entries give -inf; a row holding
    +inf or nan, or all -inf, is nan (PyTorch's).
    """

    def __init__(self, axis: int = -1):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "logsoftmax")
        if a.ndim == 0:
            raise ValueError("logsoftmax needs at least one dimension")
        axis_index(self.axis, a.ndim, "logsoftmax")

    def compute(self, a):
        shape = tuple(a.shape)
        axes = (self.axis % len(shape),)
        shifted = array_api.subtract(a, array_api.broadcast_to(array_api.max(a, axis=axes, keepdims=True), shape))
        log_total = array_api.log(array_api.sum(array_api.exp(shifted), axis=axes, keepdims=True))
        return array_api.subtract(shifted, array_api.broadcast_to(log_total, shape))

    def gradient(self, out_grad, node):
        total = summation(out_grad, self.axis, keepdims=True).broadcast_to(out_grad.shape)
        return out_grad - exp(node) * total


def logsoftmax(a, axis: int = -1):
    return LogSoftmax(axis)(a)


class Softmax(TensorOp):
    """exp(a - m) / sum(exp(a - m)) over `axis`; gradient s * (g - sum(g * s)).

    Edges: exact for huge logits; -inf entries give 0; a row holding +inf or nan, or all
    -inf, is nan (PyTorch's).
    """

    def __init__(self, axis: int = -1):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "softmax")
        if a.ndim == 0:
            raise ValueError("softmax needs at least one dimension")
        axis_index(self.axis, a.ndim, "softmax")

    def compute(self, a):
        shape = tuple(a.shape)
        axes = (self.axis % len(shape),)
        e = array_api.exp(array_api.subtract(a, array_api.broadcast_to(array_api.max(a, axis=axes, keepdims=True),
                                                                       shape)))
        return array_api.divide(e, array_api.broadcast_to(array_api.sum(e, axis=axes, keepdims=True), shape))

    def gradient(self, out_grad, node):
        total = summation(out_grad * node, self.axis, keepdims=True).broadcast_to(out_grad.shape)
        return node * (out_grad - total)


def softmax(a, axis: int = -1):
    return Softmax(axis)(a)


def extremes(a: Tensor) -> tuple:
    """(min, max) of a non-empty tensor as Python numbers: an input check's read, allowed (and
    not recorded) inside a compiled step. Not differentiable."""
    if not a.shape or 0 in a.shape:
        data = a.realize_cached_data()
        if not a.shape:
            value = array_api.to_numpy(data).item()
            return value, value
        raise ValueError("extremes of an empty tensor")
    return array_api.extremes(a.realize_cached_data())
