"""The epoch loop behind `needle train`: progress bars, per-epoch metrics,
atomic checkpoints after every epoch, bit-exact resume, and a summary.

A run that stops early never loses finished work: Ctrl-C and a non-finite
loss end it with an exception that says where it stopped and which checkpoint
is the last good one, and the history up to then is kept for the summary.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ..serialization import WriteError
from .checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint

CHECKPOINT_FILE = "last.safetensors"

# settings that may differ between a run and its resumption: they change what is shown or
# written, or how long the run goes on, never the numbers of the epochs already done
RESUMABLE_CHANGES = frozenset(
    {"epochs", "iters", "no_progress", "checkpoint", "resume", "overwrite", "plot", "summary", "sample", "no_compile"})


class TrainingStopped(Exception):
    """Training ended before its last epoch; `summary` holds the finished epochs."""

    def __init__(self, message: str, summary: Dict[str, Any]):
        super().__init__(message)
        self.summary = summary


class TrainingInterrupted(TrainingStopped):
    """Ctrl-C during training (KeyboardInterrupt); the last checkpoint is intact."""


class NonFiniteLoss(TrainingStopped):
    """A batch's loss was nan or inf; the run stopped at once (see the message for where)."""


class CheckpointWriteFailed(TrainingStopped):
    """The checkpoint after an epoch could not be written (the message names the file and why);
    the summary holds the epochs finished, that one included."""


def checkpoint_path(checkpoint_dir: Optional[str]) -> Optional[str]:
    """The checkpoint file a run with `--checkpoint checkpoint_dir` writes (None without one)."""
    return os.path.join(checkpoint_dir, CHECKPOINT_FILE) if checkpoint_dir else None


def check_resume(checkpoint: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """The metadata of `checkpoint` if it was made with the same settings as `config`.

    Raises FileNotFoundError if there is none, ValueError naming the settings that differ
    (a model of another shape would otherwise fail deep inside load_state_dict).
    """
    meta = read_checkpoint_meta(checkpoint)
    saved = meta["info"]["config"]
    different = {k: (saved.get(k), v) for k, v in config.items()
                 if k in saved and saved[k] != v and k not in RESUMABLE_CHANGES}
    if different:
        raise ValueError(f"checkpoint {checkpoint} was made with other settings: {different}")
    return meta


def _checkpoint_on_disk(checkpoint: Optional[str], saved_epoch: Optional[int]):
    """(description, epoch) of what the checkpoint file holds now, read back: Ctrl-C can land
    between the rename that publishes a new checkpoint and the line that notes it, so the
    file is the authority."""
    if checkpoint is None or not os.path.exists(checkpoint):
        return "none", None
    try:
        epoch = read_checkpoint_meta(checkpoint)["epoch"]
    except (ValueError, OSError):
        epoch = saved_epoch
    return (f"epoch {epoch} at {checkpoint}", epoch) if epoch is not None else ("none", None)


def _restore(task, checkpoint: str, optimizer, config: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint's metadata, after putting its state into the task's model, the optimizer and numpy's RNG."""
    restore = getattr(task, "restore", None)
    if restore is not None:
        return restore(checkpoint, optimizer, config)
    check_resume(checkpoint, config)
    return load_checkpoint(checkpoint, task.model, optimizer)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr, dynamic_ncols=True)


def fit(task, optimizer, epochs: int, *, config: Dict[str, Any], checkpoint_dir: Optional[str] = None,
        resume: bool = False, progress: bool = True, log: Optional[Callable[[str], None]] = None,
        lr_decay: float = 1.0) -> Dict[str, Any]:
    """Train `task` for `epochs` epochs in all (fewer when resuming); returns the run summary.

    Epoch e (from 0) runs at learning rate lr * lr_decay**e, like PyTorch's ExponentialLR.
    Raises TrainingInterrupted on Ctrl-C and NonFiniteLoss when a batch's loss is nan or
    inf; both carry the summary of the epochs finished before.

    Besides model, train_epoch, evaluate, train_batches and description, a task may
    define (as needle.train.distributed.DistributedTask does): `set_epoch(e)`, called
    before training epoch e; `restore(checkpoint, optimizer, config) -> metadata`, how a
    resumed run gets its state (default: check_resume and load_checkpoint);
    `writes_files` (default True; False: this process writes no checkpoint);
    `reports_accuracy` (default True; False: the progress bar shows the loss only);
    `log_line(row, epochs)`, its own line per epoch; `checkpoint_info()`, more to store in
    each checkpoint's info. evaluate() may return stats with an `extra` dict, added to the row.
    """
    base_lr = optimizer.lr
    if log is None:
        def log(line: str) -> None:
            print(line, flush=True)  # one line per epoch, visible at once even through a pipe
    history: List[Dict[str, float]] = []
    start = 0
    checkpoint = checkpoint_path(checkpoint_dir)
    writes = getattr(task, "writes_files", True)
    if resume:
        if checkpoint is None:
            raise ValueError("--resume needs --checkpoint DIR")
        meta = _restore(task, checkpoint, optimizer, config)
        start, history = meta["epoch"], meta["info"]["history"]
        log(f"resumed from {checkpoint} after epoch {start}")
        if start >= epochs:
            log(f"nothing left to train: the checkpoint already has {start} epochs and --epochs is {epochs} "
                "(it counts every epoch, the resumed ones included)")
    if checkpoint_dir and writes:
        os.makedirs(checkpoint_dir, exist_ok=True)
    saved_epoch = start if resume else None  # the epoch of the checkpoint this run last wrote

    def summary() -> Dict[str, Any]:
        last = history[-1] if history else {}
        return {
            "model": task.description,
            "epochs": len(history),
            "final": {k: v for k, v in last.items() if k != "epoch"},
            "history": history,
            "checkpoint": checkpoint,
        }

    epoch = start
    interrupt = _InterruptFlag()
    shows_accuracy = getattr(task, "reports_accuracy", True)
    try:
        for epoch in range(start, epochs):
            interrupt.check()
            optimizer.lr = base_lr * lr_decay ** epoch
            if hasattr(task, "set_epoch"):
                task.set_epoch(epoch)
            began = time.perf_counter()
            bar = _progress(task.train_batches, f"epoch {epoch + 1}/{epochs}", progress)

            def on_batch(stats):
                interrupt.check()
                if not math.isfinite(stats.loss_sum):
                    raise NonFiniteLoss(
                        f"the loss became {stats.loss_sum} at epoch {epoch + 1}, step {stats.batches}; "
                        f"training stopped: try a lower --lr (it was {optimizer.lr:g})", summary())
                bar.update(1)
                if shows_accuracy:
                    bar.set_postfix(loss=f"{stats.mean_loss:.4f}", acc=f"{stats.accuracy:.3f}", refresh=False)
                else:
                    bar.set_postfix(loss=f"{stats.mean_loss:.4f}", refresh=False)

            try:
                train = task.train_epoch(optimizer, on_batch=on_batch)
            finally:
                bar.close()
            train_seconds = time.perf_counter() - began
            interrupt.check()
            test = task.evaluate()
            row = {
                "epoch": epoch + 1,
                "lr": optimizer.lr,
                "train_loss": train.mean_loss,
                "train_accuracy": train.accuracy,
                "test_loss": test.mean_loss,
                "test_accuracy": test.accuracy,
                "train_seconds": train_seconds,
                "seconds": time.perf_counter() - began,
            }
            row.update(getattr(test, "extra", {}))  # what a task measures besides (the gpt recipe's iteration)
            history.append(row)
            if hasattr(task, "log_line"):
                log(task.log_line(row, epochs))
            else:
                log(f"epoch {epoch + 1:3d}/{epochs}  train loss {train.mean_loss:.4f} acc {train.accuracy:.4f}  "
                    f"test loss {test.mean_loss:.4f} acc {test.accuracy:.4f}  ({row['seconds']:.1f}s)")
            if checkpoint and writes:
                try:
                    info = {"history": history, "config": config}
                    if hasattr(task, "checkpoint_info"):  # what reading the model back needs (a vocabulary)
                        info.update(task.checkpoint_info())
                    save_checkpoint(checkpoint, task.model, optimizer, epoch + 1, info)
                except WriteError as err:
                    on_disk, _ = _checkpoint_on_disk(checkpoint, saved_epoch)
                    raise CheckpointWriteFailed(f"the checkpoint after epoch {epoch + 1} could not be written to "
                                                f"{checkpoint}: {err.strerror}; last checkpoint: {on_disk}",
                                                summary()) from None
                saved_epoch = epoch + 1
        interrupt.check()
    except KeyboardInterrupt:
        on_disk, disk_epoch = _checkpoint_on_disk(checkpoint, saved_epoch)
        # Ctrl-C after an epoch's checkpoint was written, before the next epoch began
        where = f"after epoch {epoch + 1}" if disk_epoch == epoch + 1 else f"during epoch {epoch + 1}"
        raise TrainingInterrupted(f"interrupted {where}; last checkpoint: {on_disk}", summary()) from None
    finally:
        interrupt.restore()
    return summary()


class _InterruptFlag:
    """Ctrl-C that cannot be lost. Python's own handler raises KeyboardInterrupt wherever the
    interpreter happens to be -- and one raised inside a destructor (a tensor's __del__) is
    printed and ignored, so training would go on. This handler only notes the request; the
    loop checks it after every batch and between phases and raises there. A second Ctrl-C
    before that raises at once."""

    def __init__(self):
        self.requested = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: keep Python's default behaviour
            self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
