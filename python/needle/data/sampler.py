"""DistributedSampler: each rank's share of an epoch, for data-parallel training.

Every rank computes the same ordering of the whole dataset -- a permutation drawn from
its own generator, `np.random.RandomState(seed + epoch)`, so it depends on the seed and
the epoch only, never on a rank's global RNG -- and takes every world_size-th index of
it starting at its rank. The shards are disjoint and together cover the dataset.

The remainder (PyTorch's rule): when the dataset size n is not a multiple of the world
size, the ordering is padded by repeating its first indices until every rank has
ceil(n / world_size) samples, so a few samples count twice per epoch. With
drop_last=True the tail of the ordering is dropped instead: every rank gets
floor(n / world_size) samples and a few samples are skipped each epoch.

Equal shard sizes are what keep the ranks in step: every rank makes the same number
of batches, of the same sizes, so every rank joins every gradient allreduce.

This class takes the world size and the rank as arguments; `needle.distributed`'s
DistributedSampler is the same class with both defaulting to the MPI job's.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices of this rank's shard of `dataset` for the current epoch (see the module docstring).

    Args:
        dataset: anything with len() (or the size itself, an int).
        num_replicas, rank: the world size and this rank (needle.distributed.DistributedSampler
            reads them from the MPI job).
        shuffle: a new seed-derived order every epoch; False keeps 0..n-1 in order.
        seed: the same on every rank.
        drop_last: drop the tail instead of padding it.

    Raises ValueError when there are more ranks than samples to give each one
    (num_replicas > n): a rank without data would wait forever in the first allreduce.
    Call `set_epoch(epoch)` before each epoch, as with PyTorch's.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        size = dataset if isinstance(dataset, (int, np.integer)) else len(dataset)
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be at least 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank} is outside [0, {num_replicas})")
        if num_replicas > size:
            raise ValueError(f"DistributedSampler: {num_replicas} ranks but only {size} sample(s) to share: every "
                             f"rank needs at least one; use at most {size} rank(s), or more data")
        self.size = int(size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.num_samples = self.size // self.num_replicas if drop_last else -(-self.size // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the ordering of `epoch` (0-based) from now on."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (int64, num_samples of them)."""
        if self.shuffle:
            order = np.random.RandomState(self.seed + self.epoch).permutation(self.size)
        else:
            order = np.arange(self.size)
        if self.total_size > self.size:  # pad with the first indices, repeated as often as needed
            order = np.concatenate([order, np.resize(order, self.total_size - self.size)])
        order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
