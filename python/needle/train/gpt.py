"""The `gpt` recipe of `needle train`: nanoGPT's character-level run on tiny Shakespeare.

The data and the schedule are nanoGPT's (its shakespeare_char preparation and train.py):
a character vocabulary from the whole text, the first 90% for training and the last 10%
for validation, batches of `batch_size` windows of `block_size` characters at random
offsets (numpy's global generator, seeded), AdamW with weight decay on the matrices and
embeddings only, a linear warm-up then a cosine decay of the rate to `min_lr`, gradients
clipped by their global norm, and a loss estimate on `eval_iters` batches of each split
every `eval_interval` iterations. The trainer's "epochs" are those intervals: a checkpoint
is written after each, and a resumed run continues bit-exactly from it.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..autograd import Tensor, no_grad
from ..compile import compile as compile_step
from ..models import GPT
from .epoch import EpochStats

__all__ = ["GPTTask", "gpt_lr", "read_text", "build_gpt_task"]


def gpt_lr(it: int, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """nanoGPT's schedule: lr * (it + 1) / (warmup_iters + 1) during the warm-up, then a cosine from
    lr down to min_lr at lr_decay_iters, and min_lr after."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def read_text(path: str, limit: Optional[int] = None) -> str:
    """The UTF-8 text of `path` (its first `limit` characters); ValueError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"--text {path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                         f"{err.start} is not valid UTF-8); give a text file") from None
    return text[:limit] if limit else text


class GPTTask:
    """A GPT, its character data and nanoGPT's schedule, for needle.train.loop.fit."""

    def __init__(self, model: GPT, train_data: np.ndarray, val_data: np.ndarray, vocabulary: List[str], args,
                 description: str):
        self.model = model
        self.train_data, self.val_data = train_data, val_data
        self.vocabulary = vocabulary
        self.batch_size, self.block_size = args.batch_size, args.block_size
        self.iters, self.eval_interval, self.eval_iters = args.iters, args.eval_interval, args.eval_iters
        self.lr, self.min_lr = args.lr, args.min_lr
        self.warmup_iters, self.lr_decay_iters = args.warmup_iters, args.lr_decay_iters
        self.grad_clip = args.grad_clip
        self.device = args.device
        self.description = description
        self.compiled = True
        self.reports_accuracy = False  # a language model's progress shows its loss only
        self.iteration = 0  # optimizer steps done, across resumes
        self.tokens = 0  # tokens trained on in this process
        self.train_seconds = 0.0
        self._steps: Dict[Any, Callable] = {}

    @property
    def train_batches(self) -> int:
        """Iterations in the interval that set_epoch chose (the trainer's progress bar counts them)."""
        return min(self.eval_interval, self.iters - self.iteration)

    def set_epoch(self, epoch: int) -> None:
        self.iteration = epoch * self.eval_interval

    def checkpoint_info(self) -> Dict[str, Any]:
        """What `needle sample` needs besides the weights."""
        return {"vocabulary": self.vocabulary, "gpt": dict(self.model.config)}

    # --- data ----------------------------------------------------------------------------------
    def batch(self, data: np.ndarray):
        """batch_size random windows: ids (B, T) and the next characters as targets (B, T)."""
        offsets = np.random.randint(len(data) - self.block_size, size=(self.batch_size,))
        x = np.stack([data[i:i + self.block_size] for i in offsets])
        y = np.stack([data[i + 1:i + 1 + self.block_size] for i in offsets])
        return (Tensor(x, device=self.device, dtype="int64", requires_grad=False),
                Tensor(y, device=self.device, dtype="int64", requires_grad=False))

    # --- steps --------------------------------------------------------------------------------------
    def _step(self, opt):
        key = ("train", id(opt))
        step = self._steps.get(key)
        if step is None:
            model, clip = self.model, self.grad_clip

            def train_step(x: Tensor, y: Tensor) -> Tensor:
                opt.reset_grad()
                _, loss = model(x, y)
                loss.backward()
                if clip:
                    opt.clip_grad_norm(clip)
                opt.step()
                return loss

            step = self._steps[key] = compile_step(train_step) if self.compiled else train_step
        return step

    def _eval_step(self):
        step = self._steps.get("eval")
        if step is None:
            model = self.model

            def eval_step(x: Tensor, y: Tensor) -> Tensor:
                return model(x, y)[1]

            step = self._steps["eval"] = compile_step(eval_step) if self.compiled else eval_step
        return step

    def train_epoch(self, opt, on_batch: Optional[Callable[[EpochStats], None]] = None) -> EpochStats:
        """The next eval_interval iterations (fewer at the end), at nanoGPT's rate for each."""
        stats = EpochStats()
        self.model.train()
        step = self._step(opt)
        began = time.perf_counter()
        for _ in range(self.train_batches):
            rate = gpt_lr(self.iteration, self.lr, self.min_lr, self.warmup_iters, self.lr_decay_iters)
            for group in opt.param_groups:
                group["lr"] = rate
            x, y = self.batch(self.train_data)
            loss = step(x, y)
            stats.batches += 1
            stats.loss_sum += float(loss.numpy()) * x.shape[0]
            stats.count += x.shape[0]
            self.iteration += 1
            self.tokens += self.batch_size * self.block_size
            if on_batch is not None:
                on_batch(stats)
        self.train_seconds += time.perf_counter() - began
        return stats

    def estimate_loss(self, data: np.ndarray) -> float:
        """The mean loss over eval_iters random batches of `data`, in eval mode (nanoGPT's estimate_loss)."""
        self.model.eval()
        step = self._eval_step()
        try:
            with no_grad():
                losses = [float(step(*self.batch(data)).numpy()) for _ in range(self.eval_iters)]
        finally:
            self.model.train()
        return float(np.mean(losses))

    def evaluate(self) -> EpochStats:
        """Validation loss (as test_loss) and, in `extra`, the train-split estimate and the
        iteration: the row nanoGPT prints every eval_interval."""
        train_loss = self.estimate_loss(self.train_data)
        val_loss = self.estimate_loss(self.val_data)
        stats = EpochStats(loss_sum=val_loss, count=1, batches=self.eval_iters)
        stats.extra = {"iter": self.iteration, "train_estimate": train_loss, "val_loss": val_loss,
                       "tokens_per_second": self.tokens / max(self.train_seconds, 1e-9)}
        return stats

    def log_line(self, row: Dict[str, Any], of: int) -> str:
        return (f"iter {row['iter']:5d}/{self.iters}  train loss {row['train_estimate']:.4f}  "
                f"val loss {row['val_loss']:.4f}  lr {row['lr']:.2e}  ({row['seconds']:.1f}s, "
                f"{row['tokens_per_second']:,.0f} tokens/s)")

    def sample(self, length: int, seed: int = 0, temperature: float = 1.0, top_k: Optional[int] = None,
               prompt: str = "\n") -> str:
        return sample_text(self.model, self.vocabulary, prompt, length, seed, temperature, top_k, self.device)


def encode(vocabulary: List[str], text: str) -> List[int]:
    """Character ids of `text`; ValueError naming the first character outside the vocabulary."""
    index = {c: i for i, c in enumerate(vocabulary)}
    missing = [c for c in text if c not in index]
    if missing:
        raise ValueError(f"--prompt: the character {missing[0]!r} is not in the model's vocabulary")
    return [index[c] for c in text]


def sample_text(model: GPT, vocabulary: List[str], prompt: str, length: int, seed: int, temperature: float,
                top_k: Optional[int], device=None) -> str:
    """`prompt` and `length` characters sampled after it (numpy's generator seeded with `seed`)."""
    ids = encode(vocabulary, prompt) if prompt else [0]
    np.random.seed(seed)
    out = model.generate(Tensor(np.array([ids]), device=device, dtype="int64", requires_grad=False), length,
                         temperature=temperature, top_k=top_k)
    return "".join(vocabulary[i] for i in out.numpy()[0].tolist())[0 if prompt else 1:]


def build_gpt_task(args) -> GPTTask:
    """The gpt recipe's task from parsed arguments (see the module docstring)."""
    text = read_text(args.text, args.limit)
    vocabulary = sorted(set(text))
    ids = np.array(encode(vocabulary, text), dtype=np.int64)
    cut = int(len(ids) * 0.9)
    train, val = ids[:cut], ids[cut:]
    shortest = min(len(train), len(val))
    if shortest <= args.block_size:
        split = "validation" if len(val) < len(train) else "training"
        raise ValueError(f"--block-size {args.block_size}: the text's {split} split holds {shortest} characters "
                         f"({len(ids)} in all, 90%/10%), not more than one block; give a longer --text or a smaller "
                         "--block-size")
    model = GPT(len(vocabulary), args.block_size, args.n_layer, args.n_head, args.n_embd, dropout=args.dropout,
                bias=args.bias, device=args.device)
    description = (f"GPT(vocab {len(vocabulary)}, block {args.block_size}, {args.n_layer} layers, {args.n_head} "
                   f"heads, {args.n_embd} wide) on {args.text}")
    return GPTTask(model, train, val, vocabulary, args, description)
