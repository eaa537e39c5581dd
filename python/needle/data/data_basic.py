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

PyTorch's other ways to order and fetch are there too: ``sampler=`` and ``batch_sampler=``
(:mod:`needle.data.sampler`) replace the order, ``generator=`` replaces the global RNG as
the shuffle's source, and ``num_workers > 0`` fetches in worker processes
(:mod:`needle.data.workers`) without changing the batches or their order.
"""
from __future__ import annotations

import bisect
import functools
import itertools
import numbers
import weakref
from typing import Any, Callable, Iterable, Iterator, List, Optional

import numpy as np

from ..autograd import Tensor
from ._rng import Draws
from .collate import collate_samples, default_collate
from .workers import WorkerPool, worker_context


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

    def __add__(self, other) -> "ConcatDataset":
        """``a + b``: the samples of a, then those of b (PyTorch's Dataset.__add__)."""
        return ConcatDataset([self, other])

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


class ConcatDataset(Dataset):
    """The samples of several datasets one after the other (PyTorch's ConcatDataset); also what
    ``dataset_a + dataset_b`` makes.

    ``concat[i]`` is the sample of the dataset that position i falls into; negative indices
    count from the end. Attributes ``datasets`` and ``cumulative_sizes`` (the running totals of
    the lengths), as in PyTorch. Fetched per sample by the DataLoader.

    Raises ValueError for no datasets, TypeError for one without len(), IndexError for an
    index outside [-len, len).
    """

    def __init__(self, datasets: Iterable):
        super().__init__()
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for k, d in enumerate(self.datasets):
            if not hasattr(d, "__len__") or not hasattr(d, "__getitem__"):
                raise TypeError(f"ConcatDataset: datasets[{k}] ({type(d).__name__}) has no __len__/__getitem__")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index) -> object:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"ConcatDataset indices must be integers, got {type(index).__name__}")
        n, index = len(self), int(index)
        if not -n <= index < n:
            raise IndexError(f"ConcatDataset index {index} is out of range for {n} samples")
        index = index + n if index < 0 else index
        which = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


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


def _index_array(batch, who: str) -> np.ndarray:
    """A batch of indices from a batch sampler as an int64 array (TypeError for non-integers)."""
    try:
        values = list(batch)
    except TypeError:
        raise TypeError(f"{who} must yield lists of indices, got {type(batch).__name__}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{who} must yield lists of integer indices, got {v!r} in {values!r}")
    return np.asarray(values, dtype=np.int64)


class DataLoader:
    """Iterates over a dataset in batches of Tensors.

    Args:
        dataset: an object with ``__len__`` and ``__getitem__``. A needle
            :class:`Dataset` that declares ``batched_indexing = True`` (NDArrayDataset,
            MNISTDataset, CIFAR10Dataset) is indexed with one integer index array per
            batch; any other dataset with an integer index per sample (PyTorch's
            map-style datasets, lists, numpy arrays). See :func:`uses_batched_indexing`.
        batch_size: number of samples per batch (the last batch may be smaller). With a
            ``batch_sampler`` leave it at 1 (or None); it becomes None, as in PyTorch.
        shuffle: draw a new random order at the start of every epoch (every ``iter()``):
            exactly one ``np.random.permutation(len(dataset))``, or ``permutation`` of
            ``generator`` when one is given.
        device, dtype: where the batch Tensors go and their dtype. Batched datasets
            (the course's rule): every part becomes ``Tensor(part, device, dtype)``,
            except that without a dtype integer arrays (labels) become int64 and the rest
            float32 in nd mode / keep the data's dtype in numpy mode, and that needle Tensor
            parts (TensorDataset's) keep their dtype. Collated samples:
            floating data becomes ``dtype`` or float32, integers int64, bools bool,
            needle Tensors keep their dtype; all on ``device`` (None: the default device,
            a Tensor sample's own device).
        sampler: where the indices come from instead (a :class:`RandomSampler`,
            :class:`SubsetRandomSampler`, :class:`DistributedSampler`, ...): anything with
            ``__iter__`` over integer indices, read once per ``iter()``, in its order (and for
            ``ordering`` before the first one). Excludes shuffle. ``len(loader)`` needs
            ``len(sampler)``.
        batch_sampler: PyTorch's: anything with ``__iter__`` over lists of integer indices,
            one list per batch (a :class:`BatchSampler`), read once per ``iter()``. Excludes
            batch_size, shuffle, sampler and drop_last.
        num_workers: 0 (default): everything in this process. > 0: that many worker
            processes fetch the samples (see :mod:`needle.data.workers`): the same batches in
            the same order as with 0, the order drawn here the same way; each epoch then
            draws one more number (from ``generator`` or numpy's global RNG) to seed the
            workers, and every batch is fetched with numpy's and Python's RNGs seeded from it
            and the batch number (random transforms are reproducible under
            ``np.random.seed``, whatever the number of workers). ``collate_fn`` runs here.
        collate_fn: PyTorch's: called with the list of samples of a batch (fetched one
            by one, whatever the dataset declares) and its result returned as the batch,
            untouched (``device``/``dtype`` do not apply). None uses the default rules
            (:func:`~needle.data.default_collate` with the loader's device and dtype);
            passing ``default_collate`` itself also applies them.
        pin_memory, pin_memory_device: accepted and ignored: batches are made on the loader's
            ``device`` directly (on the cpu there is nothing to pin; for cuda the copy happens
            when the batch Tensor is made).
        drop_last: PyTorch's: drop the last batch of an epoch when it is smaller than
            ``batch_size``.
        timeout: with workers, the most seconds to wait for one batch (0: no limit);
            RuntimeError when exceeded.
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker when it starts
            (after its RNGs are seeded); ``get_worker_info()`` works inside it.
        multiprocessing_context: the start method of the workers: None (spawn, the safe one
            with numba and BLAS threads in this process), "spawn", "fork", "forkserver", or a
            ``multiprocessing`` context.
        generator: None (numpy's global RNG) or a numpy Generator/RandomState (or an object
            holding one, see :mod:`needle.data._rng`): the source of the shuffle permutation
            and of the workers' seeds.
        prefetch_factor: with workers, batches requested ahead per worker (default 2); must
            be None without workers (PyTorch's rule).
        persistent_workers: keep the worker processes between epochs (they are stopped when
            the loader is garbage collected); needs num_workers > 0.
        in_order: accepted; batches always come in order.

    Batches: ``tuple(Tensor(part) for part in dataset[idx])`` for a batched dataset (the
    course's format); for per-sample datasets the collated samples (a tuple sample gives
    a tuple of batched Tensors, a dict a dict, a single array or Tensor one Tensor; see
    :mod:`needle.data.collate`).

    Iteration: ``iter(loader)`` returns a new, independent iterator each time, which
    draws its order at creation (with shuffle, exactly one
    ``np.random.permutation(len(dataset))``; with a sampler or batch sampler, one read of it)
    and stores it as its own ``ordering`` -- so ``zip(loader, loader)``, nested loops and a
    ``next(iter(loader))`` peek never disturb an epoch in progress. ``loader.ordering``
    is the order of the latest ``iter()`` (before any, the unshuffled order, or one read of
    the sampler). ``next(loader)`` continues the most recent iterator, starting one if there
    is none.

    Raises:
        TypeError: batch_size not an integer (``None``, PyTorch's unbatched mode, is not
            supported), a dataset without ``__len__``/``__getitem__``, a collate_fn or
            worker_init_fn that is not callable, a sampler or batch_sampler that is not
            iterable, non-integer num_workers or prefetch_factor, non-bool flags, a bad
            generator; with workers, a dataset or worker_init_fn that cannot be pickled;
            while iterating, a batched dataset whose ``dataset[idx]`` is not a tuple/list,
            and the collate errors (see :func:`default_collate`).
        ValueError: batch_size < 1, both shuffle and a sampler, a batch_sampler with
            batch_size/shuffle/sampler/drop_last, num_workers < 0, timeout < 0,
            prefetch_factor or persistent_workers without workers, prefetch_factor < 1; while
            iterating, a batched part whose first axis does not have one entry per index.
        RuntimeError: with workers, a worker that died or a batch that took longer than
            ``timeout``; an exception raised in a worker is re-raised as itself.
    """

    dataset: Dataset
    batch_size: Optional[int]
    sampler: Any
    batch_sampler: Any
    shuffle: bool
    device: Any
    dtype: Optional[str]
    collate_fn: Optional[Callable]
    drop_last: bool

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype=None, sampler: Any = None, *, batch_sampler: Any = None,
                 num_workers: int = 0, collate_fn: Optional[Callable] = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn: Optional[Callable[[int], None]] = None,
                 multiprocessing_context: Any = None, generator: Any = None, prefetch_factor: Optional[int] = None,
                 persistent_workers: bool = False, pin_memory_device: str = "", in_order: bool = True):
        if batch_sampler is not None:
            if (batch_size is not None and batch_size != 1) or shuffle or sampler is not None or drop_last:
                raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, sampler "
                                 "and drop_last (the batch sampler decides the batches)")
            if not hasattr(batch_sampler, "__iter__"):
                raise TypeError(f"DataLoader batch_sampler must be an iterable of index lists, got "
                                f"{type(batch_sampler).__name__}")
            batch_size = None
        elif isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            extra = " (PyTorch's batch_size=None, unbatched samples, is not supported)" if batch_size is None else ""
            raise TypeError(f"DataLoader batch_size must be a positive integer, got {batch_size!r}{extra}")
        elif batch_size < 1:
            raise ValueError(f"DataLoader batch_size must be at least 1, got {batch_size}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset).__name__}"
            )
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: pass shuffle=True or a sampler, not both (the sampler decides the order)")
        if sampler is not None and not hasattr(sampler, "__iter__"):
            raise TypeError(f"DataLoader sampler must be an iterable of indices, got {type(sampler).__name__}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader collate_fn must be callable or None, got {type(collate_fn).__name__}")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader worker_init_fn must be callable or None, got {type(worker_init_fn).__name__}")
        self._check_workers(num_workers, timeout, prefetch_factor, persistent_workers)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("pin_memory", pin_memory),
                           ("persistent_workers", persistent_workers), ("in_order", in_order)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"DataLoader {name} must be True or False, got {flag!r}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.shuffle = bool(shuffle)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.device = device
        self.dtype = dtype
        self.collate_fn = collate_fn
        self.drop_last = bool(drop_last)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.pin_memory_device = pin_memory_device
        self.timeout = float(timeout)
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self._context = worker_context(multiprocessing_context) if self.num_workers else None
        self.generator = generator
        self._draws = Draws(generator, "DataLoader")
        self.prefetch_factor = (2 if prefetch_factor is None else int(prefetch_factor)) if self.num_workers else None
        self.persistent_workers = bool(persistent_workers)
        self.in_order = bool(in_order)
        self._pool: Optional[WorkerPool] = None  # the persistent workers
        # consecutive batches, set here without a sampler (every __iter__ replaces it with shuffle);
        # a sampler's (or batch sampler's) ordering is read when first needed
        self._ordering: Optional[List[np.ndarray]] = None
        if sampler is None and batch_sampler is None:
            self._ordering = self._split(np.arange(len(dataset)))
        self._latest: Optional[Iterator] = None

    @staticmethod
    def _check_workers(num_workers, timeout, prefetch_factor, persistent_workers) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral):
            raise TypeError(f"DataLoader num_workers must be an integer, got {num_workers!r}")
        if num_workers < 0:
            raise ValueError(f"DataLoader num_workers must be >= 0 (0: load in this process), got {num_workers}")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"DataLoader timeout must be a number of seconds, got {timeout!r}")
        if timeout < 0:
            raise ValueError(f"DataLoader timeout must be >= 0 (0: no limit), got {timeout}")
        if prefetch_factor is not None:
            if num_workers == 0:
                raise ValueError("DataLoader: prefetch_factor only applies with worker processes; set num_workers > 0 "
                                 "or leave prefetch_factor None (PyTorch's rule)")
            if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, numbers.Integral):
                raise TypeError(f"DataLoader prefetch_factor must be a positive integer, got {prefetch_factor!r}")
            if prefetch_factor < 1:
                raise ValueError(f"DataLoader prefetch_factor must be at least 1, got {prefetch_factor}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers needs num_workers > 0")

    # --- the order of an epoch -------------------------------------------------------------------
    @property
    def ordering(self) -> List[np.ndarray]:
        """The batches (index arrays) of the latest ``iter()``; before any, the unshuffled order
        or one read of the sampler."""
        if self._ordering is None:
            self._ordering = self._draw_ordering()
        return self._ordering

    @ordering.setter
    def ordering(self, value: List[np.ndarray]) -> None:
        self._ordering = value

    def _split(self, indices: np.ndarray) -> List[np.ndarray]:
        assert self.batch_size is not None
        return _split_ordering(indices, self.batch_size, self.drop_last)

    def _sampled(self) -> np.ndarray:
        assert self.sampler is not None
        indices = list(self.sampler)
        for v in indices:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"DataLoader: the sampler must yield integer indices, got {v!r}")
        return np.asarray(indices, dtype=np.int64)

    def _draw_ordering(self) -> List[np.ndarray]:
        """The batches of a new epoch: the batch sampler's, the sampler's, a shuffle, or the
        fixed order."""
        if self.batch_sampler is not None:
            return [_index_array(batch, "DataLoader: the batch_sampler") for batch in self.batch_sampler]
        if self.sampler is not None:
            return self._split(self._sampled())
        if self.shuffle:
            return self._split(self._draws.permutation(len(self.dataset)))
        assert self._ordering is not None
        return self._ordering

    def __iter__(self) -> Iterator:
        """A new iterator over one epoch, with its own order (drawn here; see the class doc)."""
        self._ordering = self._draw_ordering()
        batched = self.collate_fn is None and uses_batched_indexing(self.dataset)
        convert = self._batch_from_parts if batched else self._collate
        if self.num_workers == 0 or not self._ordering:
            fetch = self._fetch_batch if batched else self._fetch_samples
            self._latest = _DataLoaderIter(self._ordering, fetch)
        else:
            self._latest = self._worker_iter(self._ordering, batched, convert)
        return self._latest

    def __next__(self):
        """The next batch of the most recent iterator (a new one, drawing its order, if none)."""
        if self._latest is None:
            iter(self)
        assert self._latest is not None
        return next(self._latest)

    # --- fetching in this process -------------------------------------------------------------------
    def _fetch_batch(self, idx: np.ndarray) -> tuple:
        """One ``dataset[idx]`` call, in the course's batch format."""
        return self._batch_from_parts(self.dataset[idx], idx)

    def _batch_from_parts(self, parts, idx: np.ndarray) -> tuple:
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
        return self._collate([self.dataset[i] for i in idx.tolist()], idx)

    def _collate(self, samples: list, idx: np.ndarray):
        if self.collate_fn is None or self.collate_fn is default_collate:
            return collate_samples(samples, device=self.device, dtype=self.dtype, indices=idx.tolist())
        return self.collate_fn(samples)

    def _tensor(self, part) -> Tensor:
        """A batch component as a Tensor: integer arrays (labels) as int64, the rest with the
        loader's dtype (float32 by default in nd mode, the data's own in numpy mode); a needle
        Tensor keeps its dtype and goes to the loader's device (collation's rule)."""
        if isinstance(part, Tensor):
            return Tensor(part, device=self.device)
        if self.dtype is None and getattr(getattr(part, "dtype", None), "kind", "f") in "iu":
            return Tensor(part, device=self.device, dtype="int64")
        return Tensor(part, device=self.device, dtype=self.dtype)

    # --- fetching in worker processes -------------------------------------------------------------
    def _worker_iter(self, ordering: List[np.ndarray], batched: bool, convert) -> "_WorkerLoaderIter":
        base = self._draws.seed()
        if self.persistent_workers:
            if self._pool is None or self._pool.closed:
                self._pool = self._start_pool(base)
                weakref.finalize(self, self._pool.shutdown)
            pool, owned = self._pool, False
        else:
            pool, owned = self._start_pool(base), True
        seeds = np.random.SeedSequence(base).generate_state(len(ordering))
        assert self.prefetch_factor is not None
        return _WorkerLoaderIter(ordering, pool, owned, seeds, batched, convert,
                                 self.prefetch_factor * self.num_workers, self.timeout)

    def _start_pool(self, seed: int) -> WorkerPool:
        return WorkerPool(self.dataset, self.worker_init_fn, self.num_workers, self._context, seed)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        if self.sampler is not None:
            if not hasattr(self.sampler, "__len__"):
                raise TypeError(f"len(DataLoader): the sampler ({type(self.sampler).__name__}) has no len()")
            assert self.batch_size is not None
            n = len(self.sampler)
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
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


class _WorkerLoaderIter(_DataLoaderIter):
    """One pass fetched by worker processes: up to `window` batches are requested ahead, batch k
    from worker k % num_workers with seed seeds[k]; results are collated here, in order. A pool
    the iterator owns (not persistent) is stopped when the pass ends or the iterator is
    garbage collected."""

    def __init__(self, ordering: List[np.ndarray], pool: WorkerPool, owned: bool, seeds: np.ndarray,
                 batched: bool, convert: Callable, window: int, timeout: float):
        super().__init__(ordering, convert)
        self._pool = pool
        self._tag = pool.open()
        self._seeds = seeds
        self._batched = batched
        self._window = window
        self._timeout = timeout
        self._submitted = 0
        self._finalizer = weakref.finalize(self, pool.shutdown if owned else functools.partial(pool.close, self._tag))

    def __next__(self):
        if self._next >= len(self.ordering):
            self._finalizer()
            raise StopIteration
        while self._submitted < min(len(self.ordering), self._next + self._window):
            k = self._submitted
            self._pool.submit(self._tag, k, self._seeds[k], self.ordering[k].tolist(), self._batched)
            self._submitted += 1
        k = self._next
        self._next += 1
        try:
            fetched = self._pool.result(self._tag, k, self._timeout)
        except BaseException:
            self._next = len(self.ordering)  # the pass ends here
            self._finalizer()
            raise
        return self._fetch(fetched, self.ordering[k])
