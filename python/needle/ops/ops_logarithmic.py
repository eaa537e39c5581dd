"""Numerically stable log-sum-exp and log-softmax."""
from __future__ import annotations

from ..autograd import TensorOp
from ..backend_selection import array_api
from .ops_mathematic import _axis, _require_tensor, exp, expand_reduced, normalize_axes, summation


def _stable_logsumexp(a, axes, keepdims: bool):
    """log(sum(exp(a - m))) + m with m the max over `axes`, on backend arrays."""
    m = array_api.max(a, axis=axes, keepdims=True)
    shifted = array_api.exp(a - array_api.broadcast_to(m, a.shape))
    out = array_api.log(array_api.sum(shifted, axis=axes, keepdims=True)) + m
    if keepdims:
        return out
    shape = tuple(d for i, d in enumerate(a.shape) if axes is not None and i not in axes)
    return array_api.reshape(out, shape)


class LogSumExp(TensorOp):
    """log(sum(exp(a), axes)); axes is None (all), an int or a tuple."""

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        _require_tensor(a, "logsumexp")
        normalize_axes(self.axes, a.ndim, "logsumexp")

    def compute(self, a):
        return _stable_logsumexp(a, normalize_axes(self.axes, a.ndim, "logsumexp"), keepdims=False)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        lse = expand_reduced(node, a.shape, self.axes, keepdims=False)
        return expand_reduced(out_grad, a.shape, self.axes, keepdims=False) * exp(a - lse)


def logsumexp(a, axes=None):
    return LogSumExp(axes=axes)(a)


class LogSoftmax(TensorOp):
    """a - logsumexp(a) over `axis` (the last one, which is axis 1 for the course's 2-D input)."""

    def __init__(self, axis: int = -1):
        self.axis = axis

    def check(self, a):
        _require_tensor(a, "logsoftmax")
        if a.ndim == 0:
            raise ValueError("logsoftmax needs at least one dimension")
        _axis(self.axis, a.ndim, "logsoftmax")

    def compute(self, a):
        axes = (self.axis % a.ndim,)
        return a - array_api.broadcast_to(_stable_logsumexp(a, axes, keepdims=True), a.shape)

    def gradient(self, out_grad, node):
        total = summation(out_grad, self.axis, keepdims=True).broadcast_to(out_grad.shape)
        return out_grad - exp(node) * total


def logsoftmax(a, axis: int = -1):
    return LogSoftmax(axis)(a)
