"""ManualTanh: y = tanh(x); the backward pass reuses the output, dL/dx = g * (1 - y^2)."""
from __future__ import annotations

from ..autograd import no_grad
from ..ops import tanh
from ._convert import as_tensor
from .base import ManualLayer


class ManualTanh(ManualLayer):
    """Elementwise tanh for inputs of any shape.

    needle Tensors keep their dtype and device; other inputs (numpy arrays, ...)
    become `dtype` tensors on `device`.
    """

    def __init__(self, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype = device, dtype

    @no_grad()
    def forward(self, x):
        y = tanh(self._input(x, "input"))
        self._cache = y
        return y

    @no_grad()
    def backward(self, grad_out):
        y = self._saved()
        g = as_tensor(grad_out, dtype=y.dtype, device=y.device, what="ManualTanh grad_out")
        self._check_grad_shape(g, y.shape)
        return g * (1 - y * y)
