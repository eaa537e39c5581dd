"""DistributedSampler for the MPI job: needle.data's, with the world size and rank from `init()`."""
from __future__ import annotations

from typing import Optional

from ..data.sampler import DistributedSampler as _ShardSampler
from . import comm

__all__ = ["DistributedSampler"]


class DistributedSampler(_ShardSampler):
    """needle.data.DistributedSampler whose `num_replicas` and `rank` default to this
    process's MPI job (`world_size()` and `rank()`, so RuntimeError before `init()` when
    either is left out). Everything else is needle.data's: see needle.data.sampler.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = comm.world_size()
        if rank is None:
            rank = comm.rank()
        super().__init__(dataset, num_replicas, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
