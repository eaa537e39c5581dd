"""One pass over the data for classification and language modelling.

The course's training functions (apps/) and the `needle train` command both
run on these, so every loop reports the same sample-weighted statistics.

Each batch runs as one step function -- forward, loss, accuracy count, and when
training backward and the optimizer step -- which is compiled with `ndl.compile`
by default (`compiled=False` runs it eagerly). Compiled steps are kept per (model,
loss, optimizer), so an epoch loop traces once, not once per epoch. `fuse=False`
(the default here, used by the course's apps) replays the recorded kernels one by
one, bit-identical to the eager loop; the CLI fuses elementwise chains.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np

from .. import ops
from ..autograd import Tensor, set_grad_enabled
from ..compile import compile as compile_step


@dataclass
class EpochStats:
    correct: int = 0
    loss_sum: float = 0.0
    count: int = 0
    batches: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)  # what a task measures besides, added to the log row

    def add(self, correct: Tensor, loss: Tensor, n: int) -> None:
        """One batch of `n` samples: its count of correct predictions and its mean loss."""
        self.batches += 1
        self.correct += int(correct.item())
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


def _correct(logits: Tensor, y: Tensor) -> Tensor:
    """How many rows' argmax equal their label, counted on the device."""
    return ops.summation(ops.equal(ops.argmax(logits, axis=1), y))


# the step functions, one per (model, what else it depends on): traced once, replayed every epoch
_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached_step(model, key: tuple, make: Callable, compiled: bool, fuse: bool):
    step = make()
    if not compiled:
        return step
    steps: Dict[tuple, Callable] = _STEPS.setdefault(model, {})
    full_key = key + (fuse,)
    if full_key not in steps:
        steps[full_key] = compile_step(step, fuse=fuse)
    return steps[full_key]


def classification_step(model, loss_fn, opt=None, flatten: bool = False, compiled: bool = True,
                        fuse: bool = False, sync: Optional[Callable[[], None]] = None) -> Callable:
    """step(X, y) -> (loss, correct): a training step when `opt` is given, else an evaluation.

    `sync` runs between backward and the optimizer step: data-parallel training passes
    DistributedDataParallel.sync_gradients (a compiled step replays it like the rest).
    """
    def make():
        def step(X, y):
            if flatten:
                X = X.reshape((X.shape[0], -1))
            logits = model(X)
            loss = loss_fn(logits, y)
            if opt is not None:
                opt.reset_grad()
                loss.backward()
                if sync is not None:
                    sync()
                opt.step()
            return loss, _correct(logits, y)
        return step

    return _cached_step(model, ("classification", id(loss_fn), id(opt), flatten, id(sync)), make, compiled, fuse)


def classification_epoch(dataloader, model, loss_fn, opt=None, *, flatten: bool = False,
                         on_batch: Optional[Callable[[EpochStats], None]] = None, compiled: bool = True,
                         fuse: bool = False, sync: Optional[Callable[[], None]] = None) -> EpochStats:
    """Train (when `opt` is given) or evaluate `model` on every batch (X, y) of `dataloader`
    (`sync`: see classification_step)."""
    stats = EpochStats()
    model.train() if opt is not None else model.eval()
    step = classification_step(model, loss_fn, opt, flatten, compiled, fuse, sync)
    with set_grad_enabled(opt is not None):
        for X, y in dataloader:
            loss, correct = step(X, y)
            stats.add(correct, loss, y.shape[0])
            if on_batch is not None:
                on_batch(stats)
    return stats


def language_model_step(model, loss_fn, opt=None, clip=None, compiled: bool = True, fuse: bool = False) -> Callable:
    """step(X, y, h) -> (loss, correct, h'): a training step when `opt` is given, else an evaluation.

    h' is the new recurrent state, detached (truncated BPTT carries it to the next window).
    """
    def make():
        def step(X, y, h):
            out, h = model(X, h)
            loss = loss_fn(out, y)
            if opt is not None:
                opt.reset_grad()
                loss.backward()
                if clip is not None:
                    opt.clip_grad_norm(clip)
                opt.step()
            return loss, _correct(out, y), _detach_state(h)
        return step

    return _cached_step(model, ("language_model", id(loss_fn), id(opt), clip), make, compiled, fuse)


def _detach_state(h):
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(_detach_state(x) for x in h)
    return h.detach()


def language_model_epoch(data: np.ndarray, model, seq_len: int, loss_fn, opt=None, clip=None, device=None,
                         dtype="int64", on_batch: Optional[Callable[[EpochStats], None]] = None,
                         compiled: bool = True, fuse: bool = False) -> EpochStats:
    """One pass over batchified token ids `data` (nbatch, bs) in windows of `seq_len`.

    The hidden state is carried from window to window, detached (truncated BPTT). Ids
    and targets are int64 tensors (the course's apps pass dtype="float32").
    """
    from ..data import get_batch

    stats = EpochStats()
    model.train() if opt is not None else model.eval()
    step = language_model_step(model, loss_fn, opt, clip, compiled, fuse)
    h = None
    with set_grad_enabled(opt is not None):
        for i in range(0, data.shape[0] - 1, seq_len):
            X, y = get_batch(data, i, seq_len, device=device, dtype=dtype)
            loss, correct, h = step(X, y, h)
            stats.add(correct, loss, y.shape[0])
            if on_batch is not None:
                on_batch(stats)
    return stats


__all__ = ["EpochStats", "classification_epoch", "classification_step", "language_model_epoch",
           "language_model_step"]
