"""ManualSequential: chain manual layers; backward runs their backward passes in reverse order."""
from __future__ import annotations

from typing import Dict, Optional

from ..autograd import Tensor
from .base import ManualLayer


class ManualSequential(ManualLayer):
    """forward(x) feeds x through the layers in order; backward(g) returns the input gradient
    (None when the first layer has none, e.g. ManualEmbedding). Parameters and gradients are
    named "<index>.<name>", e.g. "0.W"."""

    def __init__(self, *layers: ManualLayer):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, ManualLayer):
                raise TypeError(f"ManualSequential: layer {i} is a {type(layer).__name__}, not a ManualLayer")
        self.layers = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> ManualLayer:
        return self.layers[i]

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        self._cache = True
        return x

    def backward(self, grad_out):
        self._saved()
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def parameters(self) -> Dict[str, Tensor]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.parameters().items()}

    def gradients(self) -> Dict[str, Optional[Tensor]]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.gradients().items()}

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def train(self, mode: bool = True) -> "ManualSequential":
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self
