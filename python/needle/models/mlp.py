"""A plain multi-layer perceptron."""
from __future__ import annotations

from typing import Sequence

from needle import nn


def MLP(in_features: int, hidden: Sequence[int], out_features: int, device=None, dtype="float32") -> nn.Sequential:
    """Linear-ReLU blocks of the given hidden widths, then a final Linear."""
    layers = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h, device=device, dtype=dtype), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features, device=device, dtype=dtype))
    return nn.Sequential(*layers)
