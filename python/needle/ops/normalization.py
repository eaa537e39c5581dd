"""Batch normalisation as one op: the forward pass in a handful of array operations
instead of some twenty graph nodes, and a compact gradient (still built from Tensor
ops, so it can be differentiated again).

Stateless: the batch statistics are outputs of the op (a tuple), not state kept on
it for the module to read afterwards.
"""
from __future__ import annotations

from ..autograd import TensorTupleOp, array_api
from ._helpers import require_tensor
from .reduction import summation
from .tuple_ops import tuple_entries, tuple_get_item

__all__ = ["BatchNorm", "batch_norm"]


class BatchNorm(TensorTupleOp):
    """Training-mode batch norm over axis 0: (w * (x - mean) / sqrt(var + eps) + b, mean, var).

    x (N, C); w and b hold C values (shape (C,) or (1, C)); mean and the biased
    variance (divide by N), both of shape (C,), are the batch's (for the caller's
    running averages). The gradient covers all three outputs.

    Edges: x - mean is normalised first, so a constant column (variance 0) gives exactly
    b, with a finite gradient (scaled by 1 / sqrt(eps)), even for a column of 1e8, where
    PyTorch's CPU kernel, computing x * scale + shift, is off by 1e3; a nan in a column
    makes that column's outputs and gradients nan.
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def check(self, x, w, b):
        for t in (x, w, b):
            require_tensor(t, "batch norm")
        if len(x.shape) != 2:
            raise ValueError(f"batch norm expects input of shape (N, C), got {x.shape}")
        channels = x.shape[1]
        for name, t in (("weight", w), ("bias", b)):
            if t.shape not in ((channels,), (1, channels)):
                raise ValueError(f"batch norm: {name} of shape {t.shape} for input of shape {x.shape}")

    def compute(self, x, w, b):
        n, channels = x.shape
        shape = tuple(x.shape)
        mean = array_api.divide(array_api.sum(x, axis=0, keepdims=True), n)
        centered = array_api.subtract(x, array_api.broadcast_to(mean, shape))
        var = array_api.divide(array_api.sum(array_api.multiply(centered, centered), axis=0, keepdims=True), n)
        normed = array_api.divide(centered, array_api.broadcast_to(array_api.sqrt(array_api.add(var, self.eps)),
                                                                   shape))
        w = array_api.broadcast_to(array_api.reshape(w, (1, channels)), shape)
        b = array_api.broadcast_to(array_api.reshape(b, (1, channels)), shape)
        out = array_api.add(array_api.multiply(w, normed), b)
        return out, array_api.reshape(mean, (channels,)), array_api.reshape(var, (channels,))

    def gradient(self, out_grad, node):
        x, w, b = node.inputs
        n, channels = x.shape
        shape = x.shape
        grads = dict(tuple_entries(out_grad))
        # x_hat as an expression of x, so that this gradient is itself differentiable
        mean = summation(x, axes=(0,), keepdims=True) / n
        centered = x - mean.broadcast_to(shape)
        var = summation(centered * centered, axes=(0,), keepdims=True) / n
        inv_std = (var + self.eps) ** -0.5
        x_hat = centered * inv_std.broadcast_to(shape)
        grad_x = grad_w = grad_b = None
        g = grads.get(0)
        if g is not None:
            g_sum = summation(g, axes=(0,), keepdims=True)
            gx_sum = summation(g * x_hat, axes=(0,), keepdims=True)
            scale = (w.reshape((1, channels)) * inv_std / n).broadcast_to(shape)
            grad_x = scale * (g * n - g_sum.broadcast_to(shape) - x_hat * gx_sum.broadcast_to(shape))
            grad_w, grad_b = gx_sum.reshape(w.shape), g_sum.reshape(b.shape)
        # the statistics as outputs: d mean/dx = 1/n, d var/dx = 2 (x - mean) / n
        if grads.get(1) is not None:
            part = (grads[1].reshape((1, channels)) / n).broadcast_to(shape)
            grad_x = part if grad_x is None else grad_x + part
        if grads.get(2) is not None:
            part = centered * (grads[2].reshape((1, channels)) * (2.0 / n)).broadcast_to(shape)
            grad_x = part if grad_x is None else grad_x + part
        return grad_x, grad_w, grad_b


def batch_norm(x, weight, bias, eps: float = 1e-5):
    """(out, batch mean, biased batch variance): see BatchNorm."""
    stats = BatchNorm(eps)(x, weight, bias)
    return tuple_get_item(stats, 0), tuple_get_item(stats, 1), tuple_get_item(stats, 2)
