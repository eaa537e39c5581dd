"""Losses with PyTorch's semantics: MSELoss, CrossEntropyLoss, NLLLoss, BCELoss and
BCEWithLogitsLoss (each a thin module around its needle.nn.functional form).

PyTorch's arguments after the first are keyword-only here: PyTorch's second positional argument
is the deprecated `size_average`, which needle does not offer, so a positional call would mean
something else. Class and element weights are buffers under PyTorch's names (`weight`,
`pos_weight`), so they appear in the state dict as in PyTorch's.
"""
from __future__ import annotations

from typing import Optional

from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module

__all__ = ["MSELoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"]


class MSELoss(Module):
    """mean((input - target)^2), as torch.nn.MSELoss; reduction 'mean' (default), 'sum' or 'none'.
    input and target of one shape (ValueError otherwise)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = F._reduction(reduction, "MSELoss")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss(weight=None, *, ignore_index=-100, reduction='mean',
    label_smoothing=0.0): logits (N, C), (N, C, d1, ...) or (C,); int64 class targets (N,),
    (N, d1, ...) or () (or float probabilities of the logits' shape).

    weight: per-class weights (C,). ignore_index marks targets that contribute nothing and are
    not counted by the mean; label_smoothing e mixes each target with the uniform distribution,
    (1 - e) * nll + (e / C) * sum_c -log p[c]; reduction 'mean' (over the targets not ignored,
    weighted), 'sum' or 'none'. See needle.nn.functional.cross_entropy.
    """

    def __init__(self, weight: Optional[Tensor] = None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.weight = weight
        self.ignore_index = ignore_index
        self.reduction = F._reduction(reduction, "CrossEntropyLoss")
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class NLLLoss(Module):
    """torch.nn.NLLLoss(weight=None, *, ignore_index=-100, reduction='mean'): the negative
    log-likelihood of int64 class targets under log-probabilities (N, C), (N, C, d1, ...) or (C,)
    (e.g. a LogSoftmax's output); see needle.nn.functional.nll_loss."""

    def __init__(self, weight: Optional[Tensor] = None, *, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index
        self.reduction = F._reduction(reduction, "NLLLoss")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class BCELoss(Module):
    """torch.nn.BCELoss(weight=None, *, reduction='mean'): binary cross-entropy of probabilities
    (any shape, in [0, 1]) against targets of the same shape, logarithms clamped at -100; weight
    broadcasts to the input. See needle.nn.functional.binary_cross_entropy."""

    def __init__(self, weight: Optional[Tensor] = None, *, reduction: str = "mean"):
        super().__init__()
        self.weight = weight
        self.reduction = F._reduction(reduction, "BCELoss")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """torch.nn.BCEWithLogitsLoss(weight=None, *, reduction='mean', pos_weight=None): sigmoid and
    binary cross-entropy in one numerically stable form, on logits; pos_weight weighs the positive
    term (one per class, broadcast along the last axis). See
    needle.nn.functional.binary_cross_entropy_with_logits."""

    def __init__(self, weight: Optional[Tensor] = None, *, reduction: str = "mean",
                 pos_weight: Optional[Tensor] = None):
        super().__init__()
        self.weight = weight
        self.reduction = F._reduction(reduction, "BCEWithLogitsLoss")
        self.pos_weight = pos_weight

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
