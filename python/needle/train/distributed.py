"""`needle train --distributed`: a classification task trained data-parallel over the MPI job.

DistributedTask wraps the task a recipe built and offers what `needle.train.loop.fit`
asks of a task, so the epoch loop is the same with or without MPI:

* each epoch, every rank trains on its DistributedSampler shard (batch size per rank),
  through DistributedDataParallel, the gradient averaging compiled into the step;
* the epoch's training loss and accuracy are summed over the ranks before they are
  reported (they include the padding samples, see DistributedSampler);
* only rank 0 evaluates, prints, and writes checkpoints and summaries;
* resuming, rank 0 reads the checkpoint and every rank receives its state: the model,
  the optimizer state and numpy's RNG state (so dropout masks stay in step across ranks
  afterwards, as they were before: every rank seeds numpy alike and draws alike).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from ..data import DataLoader
from ..data.sampler import DistributedSampler
from ..distributed.comm import Communicator
from ..distributed.ddp import DistributedDataParallel, broadcast_from_rank0
from .checkpoint import join_optimizer_state, load_checkpoint, split_optimizer_state
from .epoch import EpochStats, classification_epoch
from .loop import check_resume

__all__ = ["DistributedTask", "shard_sampler"]


def shard_sampler(task, comm: Communicator, seed: int) -> DistributedSampler:
    """This rank's sampler for `task`'s training set (ValueError when the set has fewer samples than ranks)."""
    loader = task.train_loader
    return DistributedSampler(len(loader.dataset), comm.size, comm.rank, shuffle=loader.shuffle, seed=seed)


class DistributedTask:
    """A recipe's ClassificationTask, trained data-parallel (see the module docstring).

    Constructing it is a collective: every rank's model becomes rank 0's.
    """

    def __init__(self, task, sampler: DistributedSampler, comm: Communicator):
        if not hasattr(task, "train_loader"):
            raise TypeError(f"--distributed trains classification tasks, not {type(task).__name__}")
        self.task = task
        self.comm = comm
        self.sampler = sampler
        self.model = task.model  # checkpoints hold the plain model: a single process can load them
        loader = task.train_loader
        self.train_loader = DataLoader(loader.dataset, loader.batch_size, device=loader.device, dtype=loader.dtype,
                                       sampler=sampler)
        self.ddp = DistributedDataParallel(task.model, comm=comm)
        self._sync = self.ddp.sync_gradients  # one bound method: the compiled step is cached by its id
        self.description = f"{task.description}, data-parallel on {comm.size} ranks"
        self.writes_files = comm.rank == 0

    @property
    def compiled(self) -> bool:
        return self.task.compiled

    @compiled.setter
    def compiled(self, value: bool) -> None:
        self.task.compiled = value

    @property
    def train_batches(self) -> int:
        return len(self.train_loader.ordering)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def train_epoch(self, opt, on_batch: Optional[Callable] = None):
        local = classification_epoch(self.train_loader, self.ddp, self.task.loss_fn, opt, on_batch=on_batch,
                                     compiled=self.task.compiled, fuse=True, sync=self._sync)
        totals = np.array([local.correct, local.loss_sum, local.count], dtype=np.float64)
        self.comm.allreduce_sum_(totals)
        return EpochStats(correct=int(totals[0]), loss_sum=float(totals[1]), count=int(totals[2]),
                          batches=local.batches)

    def evaluate(self):
        # the other ranks hold the same weights and would compute the same numbers
        return self.task.evaluate() if self.comm.rank == 0 else EpochStats()

    def restore(self, checkpoint: str, optimizer, config: Dict[str, Any]) -> Dict[str, Any]:
        """Rank 0 reads `checkpoint`; every rank gets the model, optimizer and RNG state and the
        metadata. ValueError on every rank if rank 0 could not read it."""
        payload: Any = None
        if self.comm.rank == 0:
            try:
                check_resume(checkpoint, config)
                meta = load_checkpoint(checkpoint, self.model, optimizer)
                state = join_optimizer_state(*split_optimizer_state(optimizer.state_dict()))  # numpy, to send
                payload = ("ok", meta, state, np.random.get_state())
            except (ValueError, OSError) as err:
                payload = ("error", str(err))
        payload = self.comm.broadcast_object(payload)
        if payload[0] == "error":
            raise ValueError(payload[1])
        _, meta, state, rng = payload
        broadcast_from_rank0([*self.ddp._plan.params, *self.ddp._plan.buffers], self.comm)
        if self.comm.rank != 0:
            optimizer.load_state_dict(state)
            np.random.set_state(rng)
        return meta
