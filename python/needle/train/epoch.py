"""One pass over the data for classification and language modelling.

The course's training functions (apps/) and the `needle train` command both
run on these, so every loop reports the same sample-weighted statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .. import ops
from ..autograd import Tensor, no_grad, set_grad_enabled


@dataclass
class EpochStats:
    correct: int = 0
    loss_sum: float = 0.0
    count: int = 0
    batches: int = 0

    def add(self, logits: Tensor, y: Tensor, loss: Tensor) -> None:
        n = y.shape[0]
        self.batches += 1
        # on the device: two numbers come back, not the (batch, classes) logits
        self.correct += int(ops.summation(ops.equal(ops.argmax(logits, axis=1), y)).item())
        self.loss_sum += float(loss.item()) * n
        self.count += n

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.count, 1)


def classification_epoch(dataloader, model, loss_fn, opt=None, *, flatten: bool = False,
                         on_batch: Optional[Callable[[EpochStats], None]] = None) -> EpochStats:
    """Train (when `opt` is given) or evaluate `model` on every batch (X, y) of `dataloader`."""
    stats = EpochStats()
    model.train() if opt is not None else model.eval()
    with set_grad_enabled(opt is not None):
        for X, y in dataloader:
            if flatten:
                X = X.reshape((X.shape[0], -1))
            logits = model(X)
            loss = loss_fn(logits, y)
            if opt is not None:
                opt.reset_grad()
                loss.backward()
                opt.step()
            stats.add(logits, y, loss)
            if on_batch is not None:
                on_batch(stats)
    return stats


def _detach_state(h):
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(_detach_state(x) for x in h)
    return h.detach()


def language_model_epoch(data: np.ndarray, model, seq_len: int, loss_fn, opt=None, clip=None, device=None,
                         dtype="int64", on_batch: Optional[Callable[[EpochStats], None]] = None) -> EpochStats:
    """One pass over batchified token ids `data` (nbatch, bs) in windows of `seq_len`.

    The hidden state is carried from window to window, detached (truncated BPTT). Ids
    and targets are int64 tensors (the course's apps pass dtype="float32").
    """
    from ..data import get_batch

    stats = EpochStats()
    model.train() if opt is not None else model.eval()
    h = None
    with set_grad_enabled(opt is not None):
        for i in range(0, data.shape[0] - 1, seq_len):
            X, y = get_batch(data, i, seq_len, device=device, dtype=dtype)
            out, h = model(X, h)
            h = _detach_state(h)
            loss = loss_fn(out, y)
            if opt is not None:
                opt.reset_grad()
                loss.backward()
                if clip is not None:
                    opt.clip_grad_norm(clip)
                opt.step()
            stats.add(out, y, loss)
            if on_batch is not None:
                on_batch(stats)
    return stats


__all__ = ["EpochStats", "classification_epoch", "language_model_epoch", "no_grad"]
