"""The epoch loop behind `needle train`: progress bars, per-epoch metrics,
atomic checkpoints after every epoch, bit-exact resume, and a summary."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from .checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint

CHECKPOINT_FILE = "last.safetensors"


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr, dynamic_ncols=True)


def fit(task, optimizer, epochs: int, *, config: Dict[str, Any], checkpoint_dir: Optional[str] = None,
        resume: bool = False, progress: bool = True, log: Optional[Callable[[str], None]] = None,
        lr_decay: float = 1.0) -> Dict[str, Any]:
    """Train `task` for `epochs` epochs in all (fewer when resuming); returns the run summary.

    Epoch e (from 0) runs at learning rate lr * lr_decay**e, like PyTorch's ExponentialLR.
    """
    base_lr = optimizer.lr
    if log is None:
        def log(line: str) -> None:
            print(line, flush=True)  # one line per epoch, visible at once even through a pipe
    history: List[Dict[str, float]] = []
    start = 0
    checkpoint = os.path.join(checkpoint_dir, CHECKPOINT_FILE) if checkpoint_dir else None
    if resume:
        if checkpoint is None:
            raise ValueError("--resume needs --checkpoint DIR")
        # compare the settings before restoring anything: a model of another shape would
        # otherwise fail inside load_state_dict with a less helpful message
        saved = read_checkpoint_meta(checkpoint)["info"]["config"]
        different = {k: (saved.get(k), v) for k, v in config.items() if k in saved and saved[k] != v
                     and k not in ("epochs", "no_progress", "checkpoint", "resume", "plot", "summary", "sample")}
        if different:
            raise ValueError(f"checkpoint {checkpoint} was made with other settings: {different}")
        meta = load_checkpoint(checkpoint, task.model, optimizer)
        start, history = meta["epoch"], meta["info"]["history"]
        log(f"resumed from {checkpoint} after epoch {start}")
    if checkpoint_dir:
        os.makedirs(checkpoint_dir, exist_ok=True)
    for epoch in range(start, epochs):
        optimizer.lr = base_lr * lr_decay ** epoch
        began = time.perf_counter()
        bar = _progress(task.train_batches, f"epoch {epoch + 1}/{epochs}", progress)

        def on_batch(stats):
            bar.update(1)
            bar.set_postfix(loss=f"{stats.mean_loss:.4f}", acc=f"{stats.accuracy:.3f}", refresh=False)

        train = task.train_epoch(optimizer, on_batch=on_batch)
        bar.close()
        train_seconds = time.perf_counter() - began
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
        history.append(row)
        log(f"epoch {epoch + 1:3d}/{epochs}  train loss {train.mean_loss:.4f} acc {train.accuracy:.4f}  "
            f"test loss {test.mean_loss:.4f} acc {test.accuracy:.4f}  ({row['seconds']:.1f}s)")
        if checkpoint:
            save_checkpoint(checkpoint, task.model, optimizer, epoch + 1, {"history": history, "config": config})
    last = history[-1] if history else {}
    return {
        "model": task.description,
        "epochs": len(history),
        "final": {k: v for k, v in last.items() if k != "epoch"},
        "history": history,
        "checkpoint": checkpoint,
    }
