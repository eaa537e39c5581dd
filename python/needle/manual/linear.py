"""ManualLinear: y = x @ W (+ b) with a hand-written backward pass.

For x of shape (..., in) flattened to rows X (N, in) and the upstream gradient
flattened to G (N, out):
    dL/dW = X^T G          (the sum over every leading position of x_i^T g_i)
    dL/dx = G W^T          (reshaped back to x's shape)
    dL/db = sum of G's rows
"""
from __future__ import annotations

import math

import numpy as np

from .. import init
from ..autograd import no_grad
from ._convert import as_tensor
from .base import ManualLayer


class ManualLinear(ManualLayer):
    """W has shape (in_dim, out_dim), b (if bias) shape (out_dim,); inputs (..., in_dim).

    W starts as N(0, 1/in_dim) and b as zeros, drawn from numpy's global RNG.
    """

    params = ("W", "b")

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False, device=None, dtype="float32"):
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"ManualLinear needs positive sizes, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.W = init.randn(in_dim, out_dim, std=1.0 / math.sqrt(in_dim), device=device, dtype=dtype)
        self.b = init.zeros(out_dim, device=device, dtype=dtype) if bias else None
        self.device, self.dtype = self.W.device, self.W.dtype

    def extra_repr(self) -> str:
        return f"{self.in_dim}, {self.out_dim}, bias={self.b is not None}, dtype={self.dtype}"

    @no_grad()
    def forward(self, x):
        x = as_tensor(x, dtype=self.dtype, device=self.device, what="ManualLinear input")
        if x.ndim == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"ManualLinear({self.in_dim}, {self.out_dim}) expects inputs of shape (..., {self.in_dim}), "
                f"got {tuple(x.shape)}"
            )
        lead = tuple(x.shape[:-1])
        rows = x.reshape((int(np.prod(lead)), self.in_dim))
        y = rows @ self.W
        if self.b is not None:
            y = y + self.b
        self._cache = (rows, lead)
        return y.reshape(lead + (self.out_dim,))

    @no_grad()
    def backward(self, grad_out):
        rows, lead = self._saved()
        g = as_tensor(grad_out, dtype=self.dtype, device=self.device, what="ManualLinear grad_out")
        self._check_grad_shape(g, lead + (self.out_dim,))
        g = g.reshape((rows.shape[0], self.out_dim))
        self.W_grad = rows.T @ g
        if self.b is not None:
            self.b_grad = g.sum((0,))
        return (g @ self.W.T).reshape(lead + (self.in_dim,))
