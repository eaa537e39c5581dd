"""Dataset and DataLoader.

The DataLoader's ordering is part of the contract (tests compare against golden
batches): without shuffling the batches are consecutive slices of
``np.arange(n)``; with shuffling every ``__iter__`` (every epoch) draws exactly
one ``np.random.permutation(len(dataset))`` from numpy's global generator and
splits it the same way.
"""
from __future__ import annotations

import numbers
from typing import Iterator, List, Optional

import numpy as np

from ..autograd import Tensor


class Dataset:
    """An abstract dataset: subclasses implement ``__getitem__`` and ``__len__``.

    ``transforms`` is an optional list of callables applied, in list order, by
    ``apply_transforms`` (datasets call it on each image they return).
    """

    def __init__(self, transforms: Optional[List] = None):
        if transforms is not None:
            try:
                transforms = list(transforms)
            except TypeError:
                raise TypeError(
                    f"transforms must be a list of callables or None, got {type(transforms).__name__}"
                ) from None
            for t in transforms:
                if not callable(t):
                    raise TypeError(f"every transform must be callable, got {t!r}")
        self.transforms = transforms

    def __getitem__(self, index) -> object:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def apply_transforms(self, x):
        """``x`` passed through each transform in list order."""
        if self.transforms is not None:
            for tform in self.transforms:
                x = tform(x)
        return x

    @staticmethod
    def _per_image(images: np.ndarray, image_ndim: int, transform_one) -> np.ndarray:
        """`transform_one` applied to one image (``image_ndim`` axes) or to each image of a
        stack, in index order (so random transforms draw in that order)."""
        if images.ndim == image_ndim:
            return transform_one(images)
        return np.stack([transform_one(x) for x in images]) if len(images) else images


def _split_ordering(indices: np.ndarray, batch_size: int) -> List[np.ndarray]:
    """Consecutive batches of ``batch_size`` indices (the last one possibly smaller)."""
    n = len(indices)
    if n == 0:
        return []
    return np.array_split(indices, range(batch_size, n, batch_size))


class DataLoader:
    """Iterates over a dataset in batches of Tensors.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__`` accepting an
            integer index array (e.g. a :class:`Dataset`).
        batch_size: number of samples per batch (the last batch may be smaller).
        shuffle: draw a new random order at the start of every epoch.
        device, dtype: forwarded to every batch ``Tensor`` (defaults: the
            default device; integer arrays such as labels become int64 tensors,
            others float32 in nd mode / keep the data's dtype in np mode).
        sampler: where the indices come from instead (e.g. a
            :class:`~needle.data.DistributedSampler`): anything with
            ``__len__`` and ``__iter__`` over indices, read once per epoch, in
            its order. Draws nothing from numpy's global RNG; excludes shuffle.

    Each batch is ``tuple(Tensor(part) for part in dataset[idx])``.
    """

    dataset: Dataset
    batch_size: Optional[int]

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype=None, sampler=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"DataLoader batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader batch_size must be at least 1, got {batch_size}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset).__name__}"
            )
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle=True or a sampler, not both (the sampler decides the order)")
        self.dataset = dataset
        self.sampler = sampler
        self.shuffle = bool(shuffle)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        # consecutive batches; with shuffle=True this is replaced at every __iter__
        self.ordering = _split_ordering(self._sampled() if sampler is not None else np.arange(len(dataset)),
                                        self.batch_size)
        self._batch_index = 0

    def _sampled(self) -> np.ndarray:
        return np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))

    def __iter__(self) -> Iterator:
        if self.sampler is not None:
            self.ordering = _split_ordering(self._sampled(), self.batch_size)
        elif self.shuffle:
            self.ordering = _split_ordering(np.random.permutation(len(self.dataset)), self.batch_size)
        self._batch_index = 0
        return self

    def __next__(self):
        if self._batch_index >= len(self.ordering):
            raise StopIteration
        idx = self.ordering[self._batch_index]
        self._batch_index += 1
        return tuple(self._tensor(part) for part in self.dataset[idx])

    def _tensor(self, part) -> Tensor:
        """A batch component as a Tensor: integer arrays (labels) as int64, the rest with the
        loader's dtype (float32 by default in nd mode, the data's own in numpy mode)."""
        if self.dtype is None and getattr(getattr(part, "dtype", None), "kind", "f") in "iu":
            return Tensor(part, device=self.device, dtype="int64")
        return Tensor(part, device=self.device, dtype=self.dtype)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return len(self.ordering)
