"""ManualFlatten: merge the axes after the first, e.g. (n, context, emb) -> (n, context * emb).

Reshaping moves no numbers, so its backward pass only reshapes the gradient back.
"""
from __future__ import annotations

from ..autograd import no_grad
from ._convert import as_tensor
from .base import ManualLayer


class ManualFlatten(ManualLayer):
    """(n, d1, d2, ...) -> (n, d1 * d2 * ...); inputs need at least one axis."""

    def __init__(self, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype = device, dtype

    @no_grad()
    def forward(self, x):
        x = self._input(x, "input")
        if x.ndim == 0:
            raise ValueError("ManualFlatten expects an input with a batch axis, got a 0-d tensor")
        self._cache = (tuple(x.shape), x.dtype, x.device)
        n = x.shape[0]
        rest = 1
        for d in x.shape[1:]:
            rest *= d
        return x.reshape((n, rest))

    @no_grad()
    def backward(self, grad_out):
        shape, dtype, device = self._saved()
        rest = 1
        for d in shape[1:]:
            rest *= d
        g = as_tensor(grad_out, dtype=dtype, device=device, what="ManualFlatten grad_out")
        self._check_grad_shape(g, (shape[0], rest))
        return g.reshape(shape)
