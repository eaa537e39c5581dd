"""Stochastic gradient descent over Parameters that hold Scalars (MiniTorch's scalar SGD)."""
from __future__ import annotations

import numbers
from typing import Iterable

from .module import Parameter
from .scalar import Scalar

__all__ = ["SGD"]


class SGD:
    """value <- value - lr * derivative, for every Parameter whose Scalar has a derivative.

    A step gives each Parameter a fresh leaf Scalar (as MiniTorch does), so a graph built
    before the step still sees the values it was built from.
    """

    def __init__(self, parameters: Iterable[Parameter], lr: float = 1.0):
        self.parameters = list(parameters)
        for i, p in enumerate(self.parameters):
            if not isinstance(p, Parameter) or not isinstance(p.value, Scalar):
                raise TypeError(f"SGD: parameter {i} must be a Parameter holding a Scalar, got {p!r}")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"SGD: lr must be a positive number, got {lr!r}")
        self.lr: float = float(lr)

    def zero_grad(self) -> None:
        """Forget every parameter's accumulated derivative."""
        for p in self.parameters:
            p.value.zero_grad()

    def step(self) -> None:
        for p in self.parameters:
            d = p.value.derivative
            if d is not None:
                p.update(Scalar(p.value.data - self.lr * d))
