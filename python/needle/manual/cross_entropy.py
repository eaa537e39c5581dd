"""ManualCrossEntropy: mean softmax cross-entropy of integer labels, with its fused backward.

Forward (stable: the row maximum is subtracted before exponentiating):
    logp = logits - max - log(sum(exp(logits - max)))
    loss = -mean_i logp[i, target_i]
Backward: the gradient of the mean loss with respect to the logits is
    (softmax(logits) - one_hot(targets)) / n
scaled by the upstream gradient of the loss (1.0 when the loss is the output).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, no_grad
from ..ops import exp, log
from ._convert import as_index_array, to_numpy
from .base import ManualLayer


class ManualCrossEntropy(ManualLayer):
    """forward(logits (n, k), targets (n,) ints in [0, k)) -> 0-d loss tensor; backward(grad=1.0) -> (n, k)."""

    def __init__(self, device=None, dtype="float32"):
        super().__init__()
        self.device, self.dtype = device, dtype

    @no_grad()
    def forward(self, logits, targets):
        logits = self._input(logits, "logits")
        if logits.ndim != 2 or 0 in logits.shape:
            raise ValueError(f"ManualCrossEntropy expects logits of shape (n, classes) with n, classes > 0, "
                             f"got {tuple(logits.shape)}")
        n, k = logits.shape
        labels = as_index_array(targets, size=k, what="ManualCrossEntropy targets: labels")
        if labels.shape != (n,):
            raise ValueError(f"ManualCrossEntropy: targets have shape {labels.shape}, expected ({n},) "
                             f"for logits of shape {(n, k)}")
        shifted = logits - logits.max((1,), keepdims=True)
        logp = shifted - log(exp(shifted).sum((1,), keepdims=True))
        loss = -logp[np.arange(n), labels].sum() / n
        self._cache = (exp(logp), labels)
        return loss

    @no_grad()
    def backward(self, grad=1.0):
        probs, labels = self._saved()
        n, k = probs.shape
        scale = to_numpy(grad, "ManualCrossEntropy grad")
        if scale.size != 1:
            raise ValueError(f"ManualCrossEntropy.backward: grad must be a scalar, got shape {scale.shape}")
        one_hot = Tensor(np.eye(k)[labels], dtype=probs.dtype, device=probs.device, requires_grad=False)
        return (probs - one_hot) * (float(scale.reshape(())) / n)
