"""ManualBatchNorm1d: batch normalisation with Bessel's correction and a fused backward pass.

Forward, over a batch x of shape (n, dim) (statistics per feature):
    mean = sum(x) / n
    var  = sum((x - mean)^2) / (n - 1)          Bessel's correction, as in makemore
    xhat = (x - mean) / sqrt(var + eps)
    y    = gain * xhat + bias

Backward, with g = dL/dy, the whole chain through mean, var and xhat folded
into one expression:
    dL/dx    = gain / (n sqrt(var + eps)) * (n g - sum(g) - n/(n-1) xhat sum(g xhat))
    dL/dgain = sum(g xhat),   dL/dbias = sum(g)      (sums over the batch)

In eval mode the running statistics are constants and dL/dx = g gain / sqrt(running_var + eps).
"""
from __future__ import annotations

from .. import init
from ..autograd import no_grad
from ._convert import as_tensor
from .base import ManualLayer


class ManualBatchNorm1d(ManualLayer):
    """gain (dim,) starts at ones and bias (dim,) at zeros; running_mean / running_var
    (unbiased) are updated in training mode with `momentum`, like torch.nn.BatchNorm1d."""

    params = ("gain", "bias")

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1, device=None, dtype="float32"):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"ManualBatchNorm1d needs a positive dim, got {dim}")
        self.dim, self.eps, self.momentum = int(dim), float(eps), float(momentum)
        self.gain = init.ones(dim, device=device, dtype=dtype)
        self.bias = init.zeros(dim, device=device, dtype=dtype)
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)
        self.device, self.dtype = self.gain.device, self.gain.dtype

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}, dtype={self.dtype}"

    @no_grad()
    def forward(self, x):
        x = as_tensor(x, dtype=self.dtype, device=self.device, what="ManualBatchNorm1d input")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ManualBatchNorm1d({self.dim}) expects inputs of shape (n, {self.dim}), got "
                             f"{tuple(x.shape)}")
        n = x.shape[0]
        if self.training:
            if n < 2:
                raise ValueError(
                    f"ManualBatchNorm1d needs at least 2 rows in training mode (the variance divides by n-1), "
                    f"got input of shape {tuple(x.shape)}"
                )
            mean = x.sum((0,)) / n
            centered = x - mean
            var = (centered * centered).sum((0,)) / (n - 1)
            m = self.momentum
            self.running_mean = ((1 - m) * self.running_mean + m * mean).detach()
            self.running_var = ((1 - m) * self.running_var + m * var).detach()
        else:
            centered, var = x - self.running_mean, self.running_var
        inv_std = (var + self.eps) ** -0.5
        xhat = centered * inv_std
        self._cache = (xhat, inv_std, n, self.training)
        return self.gain * xhat + self.bias

    @no_grad()
    def backward(self, grad_out):
        xhat, inv_std, n, training = self._saved()
        g = as_tensor(grad_out, dtype=self.dtype, device=self.device, what="ManualBatchNorm1d grad_out")
        self._check_grad_shape(g, xhat.shape)
        g_sum = g.sum((0,))
        gx_sum = (g * xhat).sum((0,))
        self.gain_grad, self.bias_grad = gx_sum, g_sum
        if not training:
            return g * (self.gain * inv_std)
        return (self.gain * inv_std / n) * (n * g - g_sum - (n / (n - 1)) * xhat * gx_sum)
