"""Activation layers with PyTorch's semantics: Softmax, LogSoftmax, GELU, SiLU, LeakyReLU, Softplus.

Each is a thin module around its needle.nn.functional form (which documents the formula).
"""
from __future__ import annotations

from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module

__all__ = ["Softmax", "LogSoftmax", "GELU", "SiLU", "LeakyReLU", "Softplus"]


class Softmax(Module):
    """softmax along `dim` (any shape), as torch.nn.Softmax(dim); dim is required (PyTorch's
    implicit choice when it is omitted is deprecated)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)


class LogSoftmax(Module):
    """log_softmax along `dim` (any shape), as torch.nn.LogSoftmax(dim); dim is required."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim)


class GELU(Module):
    """torch.nn.GELU(approximate): 'none' (default) is the exact erf form, 'tanh' PyTorch's tanh
    approximation. Any shape."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)


class SiLU(Module):
    """x * sigmoid(x), as torch.nn.SiLU. Any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise, as torch.nn.LeakyReLU(negative_slope=0.01,
    inplace=False). Any shape. inplace=True writes the input's buffer and returns it (computed out
    of place where needle's autograd cannot rewire the input, see F.relu)."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope, self.inplace)


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold, as torch.nn.Softplus(beta=1.0,
    threshold=20.0) (F.softplus: stable on both sides of 0). Any shape."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)
