"""Dataset and DataLoader.

The DataLoader's ordering is part of the contract (tests compare against golden
batches): without shuffling the batches are consecutive slices of
``np.arange(n)``; with shuffling every ``__iter__`` (every epoch) draws exactly
one ``np.random.permutation(len(dataset))`` from numpy's global generator and
splits it the same way.

Two kinds of dataset, told apart by a declaration, never by probing:

* batched (the course's datasets: NDArrayDataset, MNIST, CIFAR-10): the class
  declares ``batched_indexing = True``, promising that ``dataset[index_array]``
  returns the whole batch as a tuple of per-field arrays. The loader makes one
  ``dataset[idx]`` call per batch and returns ``tuple(Tensor(part) for part in
  dataset[idx])`` (the course's batch format).
* per sample (PyTorch's map-style datasets, and everything that does not declare
  batched indexing): ``dataset[i]`` returns ONE sample; the loader fetches the
  batch's samples one by one, in order, and merges them with ``collate_fn``
  (default: :func:`~needle.data.collate.default_collate`'s rules).

Per-sample fetching is right for every dataset whose ``dataset[i]`` is one sample,
batched fetching only for those written for it, so batched is the opt-in.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional

import numpy as np

from ..autograd import Tensor
from .collate import collate_samples, default_collate


class Dataset:
    """An abstract dataset: subclasses implement ``__getitem__`` and ``__len__``.

    ``transforms`` is an optional list of callables applied, in list order, by
    ``apply_transforms`` (datasets call it on each image they return).

    ``batched_indexing`` (class attribute, default False) tells the DataLoader how to
    fetch: False, ``dataset[i]`` returns one sample (PyTorch's map-style dataset) and
    the loader collates the samples of a batch; True, ``dataset[index_array]`` returns
    the whole batch as a tuple of arrays whose first axis has one entry per index (the
    course's datasets). The declaration belongs to the ``__getitem__`` it describes: a
    subclass that overrides ``__getitem__`` is fetched per sample unless it declares
    ``batched_indexing = True`` again (see :func:`uses_batched_indexing`).
    """

    batched_indexing: bool = False

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


def uses_batched_indexing(dataset) -> bool:
    """Whether the DataLoader fetches a batch of ``dataset`` with one ``dataset[index_array]``.

    Read from the class, walking its MRO from the most derived class: the first class
    that declares ``batched_indexing`` decides, unless a class defining ``__getitem__``
    comes first -- then the answer is False. So a subclass that overrides a batched
    dataset's ``__getitem__`` (say, to return one augmented sample) is not silently
    handed index arrays, while a subclass that only changes ``__init__`` stays batched.
    Objects that are not needle Datasets (lists, numpy arrays, PyTorch-style datasets)
    are fetched per sample unless their class declares the attribute.
    """
    for klass in type(dataset).__mro__:
        attrs = vars(klass)
        if "batched_indexing" in attrs:
            return bool(attrs["batched_indexing"])
        if "__getitem__" in attrs:
            return False
    return False


def _split_ordering(indices: np.ndarray, batch_size: int, drop_last: bool = False) -> List[np.ndarray]:
    """Consecutive batches of ``batch_size`` indices; the last one is smaller, or dropped
    with ``drop_last``."""
    n = len(indices)
    if n == 0:
        return []
    batches = np.array_split(indices, range(batch_size, n, batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class DataLoader:
    """Iterates over a dataset in batches of Tensors.

    Args:
        dataset: an object with ``__len__`` and ``__getitem__``. A needle
            :class:`Dataset` that declares ``batched_indexing = True`` (NDArrayDataset,
            MNISTDataset, CIFAR10Dataset) is indexed with one integer index array per
            batch; any other dataset with an integer index per sample (PyTorch's
            map-style datasets, lists, numpy arrays). See :func:`uses_batched_indexing`.
        batch_size: number of samples per batch (the last batch may be smaller).
        shuffle: draw a new random order at the start of every epoch (every ``iter()``).
        device, dtype: where the batch Tensors go and their dtype. Batched datasets
            (the course's rule): every part becomes ``Tensor(part, device, dtype)``,
            except that without a dtype integer arrays (labels) become int64 and the rest
            float32 in nd mode / keep the data's dtype in numpy mode. Collated samples:
            floating data becomes ``dtype`` or float32, integers int64, bools bool,
            needle Tensors keep their dtype; all on ``device`` (None: the default device,
            a Tensor sample's own device).
        sampler: where the indices come from instead (e.g. a
            :class:`~needle.data.DistributedSampler`): anything with ``__len__`` and
            ``__iter__`` over indices, read in ``__init__`` (for ``ordering``) and once
            per ``iter()``, in its order. Draws nothing from numpy's global RNG;
            excludes shuffle.
        collate_fn: PyTorch's: called with the list of samples of a batch (fetched one
            by one, whatever the dataset declares) and its result returned as the batch,
            untouched (``device``/``dtype`` do not apply). None uses the default rules
            (:func:`~needle.data.default_collate` with the loader's device and dtype);
            passing ``default_collate`` itself also applies them.
        drop_last: PyTorch's: drop the last batch of an epoch when it is smaller than
            ``batch_size``.

    Batches: ``tuple(Tensor(part) for part in dataset[idx])`` for a batched dataset (the
    course's format); for per-sample datasets the collated samples (a tuple sample gives
    a tuple of batched Tensors, a dict a dict, a single array or Tensor one Tensor; see
    :mod:`needle.data.collate`).

    Iteration: ``iter(loader)`` returns a new, independent iterator each time, which
    draws its order at creation (with shuffle, exactly one
    ``np.random.permutation(len(dataset))``; with a sampler, one read of it) and stores
    it as its own ``ordering`` -- so ``zip(loader, loader)``, nested loops and a
    ``next(iter(loader))`` peek never disturb an epoch in progress. ``loader.ordering``
    is the order of the latest ``iter()`` (before any, the unshuffled order).
    ``next(loader)`` continues the most recent iterator, starting one if there is none.

    Raises:
        TypeError: batch_size not an integer (``None``, PyTorch's unbatched mode, is not
            supported), a dataset without ``__len__``/``__getitem__``, a collate_fn that
            is not callable; while iterating, a batched dataset whose ``dataset[idx]`` is
            not a tuple/list, and the collate errors (see :func:`default_collate`).
        ValueError: batch_size < 1, both shuffle and a sampler; while iterating, a
            batched part whose first axis does not have one entry per index.
    """

    dataset: Dataset
    batch_size: int
    sampler: Any
    shuffle: bool
    device: Any
    dtype: Optional[str]
    collate_fn: Optional[Callable]
    drop_last: bool
    ordering: List[np.ndarray]

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype=None, sampler=None, *, collate_fn: Optional[Callable] = None,
                 drop_last: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            extra = " (PyTorch's batch_size=None, unbatched samples, is not supported)" if batch_size is None else ""
            raise TypeError(f"DataLoader batch_size must be a positive integer, got {batch_size!r}{extra}")
        if batch_size < 1:
            raise ValueError(f"DataLoader batch_size must be at least 1, got {batch_size}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset).__name__}"
            )
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle=True or a sampler, not both (the sampler decides the order)")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader collate_fn must be callable or None, got {type(collate_fn).__name__}")
        self.dataset = dataset
        self.sampler = sampler
        self.shuffle = bool(shuffle)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.collate_fn = collate_fn
        self.drop_last = bool(drop_last)
        # consecutive batches; with shuffle=True (or a sampler) every __iter__ replaces it
        self.ordering = self._split(self._sampled() if sampler is not None else np.arange(len(dataset)))
        self._latest: Optional[_DataLoaderIter] = None

    def _split(self, indices: np.ndarray) -> List[np.ndarray]:
        return _split_ordering(indices, self.batch_size, self.drop_last)

    def _sampled(self) -> np.ndarray:
        return np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))

    def __iter__(self) -> "_DataLoaderIter":
        """A new iterator over one epoch, with its own order (drawn here; see the class doc)."""
        if self.sampler is not None:
            self.ordering = self._split(self._sampled())
        elif self.shuffle:
            self.ordering = self._split(np.random.permutation(len(self.dataset)))
        batched = self.collate_fn is None and uses_batched_indexing(self.dataset)
        self._latest = _DataLoaderIter(self.ordering, self._fetch_batch if batched else self._fetch_samples)
        return self._latest

    def __next__(self):
        """The next batch of the most recent iterator (a new one, drawing its order, if none)."""
        if self._latest is None:
            iter(self)
        return next(self._latest)

    def _fetch_batch(self, idx: np.ndarray) -> tuple:
        """One ``dataset[idx]`` call, in the course's batch format."""
        parts = self.dataset[idx]
        name = type(self.dataset).__name__
        if not isinstance(parts, (tuple, list)):
            raise TypeError(
                f"{name} declares batched_indexing, so dataset[index_array] must return a tuple of batched "
                f"arrays, one per field, but it returned {type(parts).__name__}; declare batched_indexing = False "
                f"if dataset[i] returns one sample")
        for k, part in enumerate(parts):
            shape = tuple(part.shape) if hasattr(part, "shape") else np.shape(part)
            if not shape or shape[0] != len(idx):
                raise ValueError(
                    f"{name} declares batched_indexing, so dataset[index_array] must return batches with one "
                    f"entry per index along axis 0, but for {len(idx)} indices part {k} has shape {shape}; "
                    f"declare batched_indexing = False if dataset[i] returns one sample")
        return tuple(self._tensor(part) for part in parts)

    def _fetch_samples(self, idx: np.ndarray):
        """``dataset[i]`` for each index in order, merged by the collate function."""
        indices = idx.tolist()
        samples = [self.dataset[i] for i in indices]
        if self.collate_fn is None or self.collate_fn is default_collate:
            return collate_samples(samples, device=self.device, dtype=self.dtype, indices=indices)
        return self.collate_fn(samples)

    def _tensor(self, part) -> Tensor:
        """A batch component as a Tensor: integer arrays (labels) as int64, the rest with the
        loader's dtype (float32 by default in nd mode, the data's own in numpy mode)."""
        if self.dtype is None and getattr(getattr(part, "dtype", None), "kind", "f") in "iu":
            return Tensor(part, device=self.device, dtype="int64")
        return Tensor(part, device=self.device, dtype=self.dtype)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return len(self.ordering)


class _DataLoaderIter:
    """One pass over a DataLoader: its own ``ordering`` (a list of index arrays) and cursor."""

    def __init__(self, ordering: List[np.ndarray], fetch: Callable[[np.ndarray], object]):
        self.ordering = ordering
        self._fetch = fetch
        self._next = 0

    def __iter__(self) -> "_DataLoaderIter":
        return self

    def __next__(self):
        if self._next >= len(self.ordering):
            raise StopIteration
        idx = self.ordering[self._next]
        self._next += 1
        return self._fetch(idx)

    def __len__(self) -> int:
        """Number of batches of the whole pass (as PyTorch's loader iterators)."""
        return len(self.ordering)
