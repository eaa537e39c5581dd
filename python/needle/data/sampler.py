"""Samplers: the order in which a DataLoader visits a dataset (PyTorch's torch.utils.data samplers).

A sampler is anything with ``__iter__`` over dataset indices (and usually ``__len__``): pass
it as ``DataLoader(sampler=...)``; a batch sampler yields lists of indices, one per batch
(``DataLoader(batch_sampler=...)``). ``SequentialSampler``, ``RandomSampler``,
``SubsetRandomSampler``, ``WeightedRandomSampler`` and ``BatchSampler`` are PyTorch's, with
their arguments, lengths and errors. Random ones draw when iterated (one draw per ``iter()``)
from numpy's global RNG, or from ``generator=`` (see :mod:`needle.data._rng`: a numpy
Generator or RandomState, or an object holding one), never from torch's: the orders are
PyTorch's in distribution, not number for number.

DistributedSampler: each rank's share of an epoch, for data-parallel training.

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

import numbers
from typing import Any, Iterator, List, Optional, Sequence, Sized

import numpy as np

from ._rng import Draws

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler", "DistributedSampler"]


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0


class Sampler:
    """Base class of samplers (PyTorch's): subclasses implement ``__iter__`` over indices and,
    where the count is known, ``__len__``."""

    def __init__(self, data_source: Optional[Sized] = None):
        pass  # PyTorch's argument, accepted and unused (as in PyTorch)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1, in order (PyTorch's). Draws nothing."""

    def __init__(self, data_source: Sized):
        if not hasattr(data_source, "__len__"):
            raise TypeError(f"SequentialSampler needs a data_source with __len__, got {type(data_source).__name__}")
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """Random indices into `data_source` (PyTorch's RandomSampler).

    Args:
        data_source: anything with len(); its length is read at every ``iter()``.
        replacement: False (default): permutations -- ``num_samples`` indices made of
            ``num_samples // n`` whole permutations of 0..n-1 followed by the start of one more,
            so every index appears equally often up to one. True: ``num_samples`` independent
            uniform draws from 0..n-1.
        num_samples: how many indices per ``iter()`` (default len(data_source)).
        generator: None (numpy's global RNG) or a numpy Generator/RandomState (or an object
            holding one).

    Draws on every ``iter()``: without replacement and with num_samples == n it is exactly one
    ``permutation(n)`` -- with the global RNG the same draw as ``DataLoader(shuffle=True)``.

    Raises:
        TypeError: replacement is not a bool; a data_source without len(); a bad generator.
        ValueError: num_samples is not a positive integer (also when it defaults to the length
            of an empty data_source), as in PyTorch.
    """

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: Optional[int] = None,
                 generator: Any = None):
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement must be True or False, got {replacement!r}")
        if not hasattr(data_source, "__len__"):
            raise TypeError(f"RandomSampler needs a data_source with __len__, got {type(data_source).__name__}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        self._draws = Draws(generator, "RandomSampler")
        if not _positive_int(self.num_samples):
            raise ValueError(f"RandomSampler: num_samples must be a positive integer, got {self.num_samples!r}"
                             + (" (the data source is empty)" if num_samples is None else ""))

    @property
    def num_samples(self) -> int:
        """num_samples as given, or the data source's current length."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def indices(self) -> np.ndarray:
        """One draw of the sampler's indices (int64), as ``iter()`` makes."""
        n, count = len(self.data_source), int(self.num_samples)
        if n == 0:
            raise ValueError("RandomSampler: the data source is empty, there is nothing to sample")
        if self.replacement:
            return self._draws.integers(n, count)
        parts = [self._draws.permutation(n) for _ in range(count // n)]
        if count % n:
            parts.append(self._draws.permutation(n)[:count % n])
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(self.num_samples)


class SubsetRandomSampler(Sampler):
    """The given indices in a random order, a new one at every ``iter()`` (PyTorch's): one
    ``permutation(len(indices))`` draw from numpy's global RNG or `generator`.

    Raises TypeError for indices without len() or a bad generator."""

    def __init__(self, indices: Sequence[int], generator: Any = None):
        if not hasattr(indices, "__len__") or not hasattr(indices, "__getitem__"):
            raise TypeError(f"SubsetRandomSampler: indices must be a sequence of integers, got "
                            f"{type(indices).__name__}")
        self.indices = indices
        self.generator = generator
        self._draws = Draws(generator, "SubsetRandomSampler")

    def __iter__(self) -> Iterator[int]:
        order = self._draws.permutation(len(self.indices))
        return iter([int(self.indices[i]) for i in order])

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """`num_samples` indices into ``range(len(weights))``, index i drawn with probability
    proportional to weights[i] (PyTorch's): with replacement (default) independent draws,
    without it no index twice. One ``choice`` draw per ``iter()``.

    Raises:
        ValueError: weights not a 1-D sequence of finite non-negative numbers with a positive
            sum; num_samples not a positive integer; without replacement, num_samples larger
            than the number of non-zero weights; replacement not a bool (PyTorch's error types).
        TypeError: a bad generator.
    """

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True,
                 generator: Any = None):
        if not _positive_int(num_samples):
            raise ValueError(f"WeightedRandomSampler: num_samples must be a positive integer, got {num_samples!r}")
        if not isinstance(replacement, bool):
            raise ValueError(f"WeightedRandomSampler: replacement must be True or False, got {replacement!r}")
        w = np.asarray(weights, dtype=np.float64) if not hasattr(weights, "numpy") else \
            np.asarray(weights.numpy(), dtype=np.float64)
        if w.ndim != 1 or not len(w):
            raise ValueError(f"WeightedRandomSampler: weights must be a non-empty 1-D sequence, got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > np.count_nonzero(w):
            raise ValueError(f"WeightedRandomSampler: {num_samples} samples without replacement, but only "
                             f"{np.count_nonzero(w)} weights are non-zero")
        self.weights = w
        self.num_samples = int(num_samples)
        self.replacement = replacement
        self.generator = generator
        self._draws = Draws(generator, "WeightedRandomSampler")

    def __iter__(self) -> Iterator[int]:
        p = self.weights / self.weights.sum()
        return iter(self._draws.choice(len(p), self.num_samples, self.replacement, p).tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of `sampler` (any iterable of indices) into lists of `batch_size`,
    in order; the last list is shorter, or dropped with ``drop_last`` (PyTorch's).
    ``len()``: the number of batches (needs ``len(sampler)``).

    Raises ValueError for a batch_size that is not a positive integer or a drop_last that is
    not a bool (PyTorch's error types), TypeError for a sampler that is not iterable.
    """

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool):
        if not _positive_int(batch_size):
            raise ValueError(f"BatchSampler: batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"BatchSampler: drop_last must be True or False, got {drop_last!r}")
        if not hasattr(sampler, "__iter__"):
            raise TypeError(f"BatchSampler: sampler must be an iterable of indices, got {type(sampler).__name__}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[List[int]]:
        batch: List[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class DistributedSampler(Sampler):
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
