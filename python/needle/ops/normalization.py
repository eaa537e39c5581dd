"""Batch normalisation as one op: the forward pass in a handful of array operations
instead of some twenty graph nodes, and a compact gradient (still built from Tensor
ops, so it can be differentiated again)."""
from __future__ import annotations

from ..autograd import TensorOp
from ..backend_selection import array_api
from .ops_mathematic import _require_tensor, summation


class BatchNorm(TensorOp):
    """Training-mode batch norm over axis 0: w * (x - mean) / sqrt(var + eps) + b.

    x (N, C); w and b hold C values (shape (C,) or (1, C)); mean and the biased
    variance are the batch's. After compute, `mean` and `var` (arrays of shape
    (C,)) hold the batch statistics, for the caller's running averages.
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps
        self.mean = None
        self.var = None

    def check(self, x, w, b):
        for t in (x, w, b):
            _require_tensor(t, "batch norm")
        if len(x.shape) != 2:
            raise ValueError(f"batch norm expects input of shape (N, C), got {x.shape}")
        channels = x.shape[1]
        for name, t in (("weight", w), ("bias", b)):
            if t.shape not in ((channels,), (1, channels)):
                raise ValueError(f"batch norm: {name} of shape {t.shape} for input of shape {x.shape}")

    def compute(self, x, w, b):
        n, channels = x.shape
        mean = array_api.sum(x, axis=0, keepdims=True) / n
        centered = x - array_api.broadcast_to(mean, x.shape)
        var = array_api.sum(centered * centered, axis=0, keepdims=True) / n
        normed = centered / array_api.broadcast_to((var + self.eps) ** 0.5, x.shape)
        self.mean = array_api.reshape(mean, (channels,))
        self.var = array_api.reshape(var, (channels,))
        w = array_api.broadcast_to(array_api.reshape(w, (1, channels)), x.shape)
        b = array_api.broadcast_to(array_api.reshape(b, (1, channels)), x.shape)
        return w * normed + b

    def gradient(self, out_grad, node):
        x, w, b = node.inputs
        n, channels = x.shape
        shape = x.shape
        # x_hat as an expression of x, so that this gradient is itself differentiable
        mean = summation(x, axes=(0,), keepdims=True) / n
        centered = x - mean.broadcast_to(shape)
        var = summation(centered * centered, axes=(0,), keepdims=True) / n
        inv_std = (var + self.eps) ** -0.5
        x_hat = centered * inv_std.broadcast_to(shape)
        g_sum = summation(out_grad, axes=(0,), keepdims=True)
        gx_sum = summation(out_grad * x_hat, axes=(0,), keepdims=True)
        scale = (w.reshape((1, channels)) * inv_std / n).broadcast_to(shape)
        grad_x = scale * (out_grad * n - g_sum.broadcast_to(shape) - x_hat * gx_sum.broadcast_to(shape))
        return grad_x, gx_sum.reshape(w.shape), g_sum.reshape(b.shape)


def batch_norm(x, weight, bias, eps: float = 1e-5):
    return BatchNorm(eps)(x, weight, bias)
