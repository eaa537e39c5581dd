"""Losses with PyTorch's semantics: MSELoss and CrossEntropyLoss (see needle.nn.functional)."""
from __future__ import annotations

from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module

__all__ = ["MSELoss", "CrossEntropyLoss"]


class MSELoss(Module):
    """mean((input - target)^2), as torch.nn.MSELoss; reduction 'mean' (default), 'sum' or 'none'.
    input and target of one shape (ValueError otherwise)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = F._reduction(reduction, "MSELoss")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss without class weights: logits (N, C), (N, C, d1, ...) or (C,);
    int64 class targets (N,), (N, d1, ...) or () (or float probabilities of the logits' shape).

    ignore_index (default -100) marks targets that contribute nothing and are not counted by
    the mean; label_smoothing e mixes each target with the uniform distribution,
    (1 - e) * nll + (e / C) * sum_c -log p[c]; reduction 'mean' (over the targets not
    ignored), 'sum' or 'none'. See needle.nn.functional.cross_entropy.
    """

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = ignore_index
        self.reduction = F._reduction(reduction, "CrossEntropyLoss")
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)
