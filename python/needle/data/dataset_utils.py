"""PyTorch's dataset helpers: TensorDataset, Subset and random_split (torch.utils.data's).

All three are map-style, per-sample datasets: ``dataset[i]`` is one sample, and a
DataLoader fetches a batch sample by sample and collates it (see :mod:`needle.data.collate`).
ConcatDataset is in :mod:`needle.data.data_basic`, beside ``Dataset.__add__``, which makes one.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, List, Sequence, Tuple, Union

from ..autograd import Tensor
from ._rng import Draws
from .data_basic import Dataset

__all__ = ["TensorDataset", "Subset", "random_split"]


class TensorDataset(Dataset):
    """Samples are slices of needle Tensors along axis 0 (PyTorch's TensorDataset).

    ``dataset[i]`` is ``tuple(t[i] for t in tensors)``: one Tensor per given tensor, of shape
    ``t.shape[1:]`` (a 0-d Tensor for a 1-D one, e.g. a label), with the tensor's dtype and
    device. A batch from the DataLoader is a tuple of Tensors of shape ``(B, *t.shape[1:])``
    keeping each tensor's dtype, as torch's loader gives. The class declares batched indexing
    (``dataset[index_array]`` is ``tuple(t[index_array] for t in tensors)``), so the loader
    gathers a batch with one index per tensor instead of stacking B samples: the same batch,
    without a Tensor per sample. A ``collate_fn`` still receives the samples one by one.

    Raises:
        TypeError: an argument that is not a needle Tensor (numpy arrays: use NDArrayDataset).
        ValueError: no tensors, a 0-d tensor, or tensors whose first dimensions differ.
    """

    batched_indexing = True

    def __init__(self, *tensors: Tensor):
        super().__init__()
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for k, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                extra = "; for numpy arrays use NDArrayDataset" if hasattr(t, "__array__") else ""
                raise TypeError(f"TensorDataset: argument {k} is a {type(t).__name__}, not a needle Tensor{extra}")
            if not t.shape:
                raise ValueError(f"TensorDataset: tensor {k} is 0-d; every tensor needs a first dimension to index")
        sizes = [t.shape[0] for t in tensors]
        if any(size != sizes[0] for size in sizes):
            raise ValueError(f"TensorDataset: the tensors' first dimensions differ (size mismatch): {sizes}")
        self.tensors: Tuple[Tensor, ...] = tuple(tensors)

    def __getitem__(self, index) -> Tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order (PyTorch's Subset):
    ``subset[i]`` is ``dataset[indices[i]]``; a list index gives ``dataset[[indices[j] for j in
    index]]``, as in PyTorch. ``len()`` is ``len(indices)``. Attributes ``dataset``, ``indices``.

    Raises TypeError when indices has no len() or cannot be indexed.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]):
        super().__init__()
        if not hasattr(indices, "__len__") or not hasattr(indices, "__getitem__"):
            raise TypeError(f"Subset: indices must be a sequence of integers, got {type(indices).__name__}")
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, index) -> Any:
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def _split_lengths(n: int, lengths: Sequence[Union[int, float]]) -> List[int]:
    """The sizes of the splits: counts as given, or fractions turned into counts the way
    PyTorch does (floor of n * fraction, then one more for the first splits, round-robin,
    until they add up to n)."""
    values = list(lengths)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"random_split: lengths[{i}] must be a number, got {value!r}")
    total = sum(values)
    if values and math.isclose(total, 1) and total <= 1:
        for i, fraction in enumerate(values):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: the fraction at index {i} is not between 0 and 1: {fraction!r}")
        counts = [int(math.floor(n * fraction)) for fraction in values]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"random_split: the split at index {i} is empty (fraction {values[i]!r} of "
                              f"{n} samples)", stacklevel=3)
        return counts
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"random_split: lengths must be non-negative integers or fractions that sum to 1, "
                             f"got lengths[{i}] = {value!r}")
    if total != n:
        raise ValueError(f"random_split: the lengths add up to {total}, but the dataset has {n} samples "
                         "(they must be equal, or be fractions that sum to 1)")
    return [int(v) for v in values]


def random_split(dataset: Any, lengths: Sequence[Union[int, float]], generator: Any = None) -> List[Subset]:
    """Split `dataset` into non-overlapping random Subsets of the given lengths (PyTorch's).

    Args:
        dataset: anything with len() and per-sample indexing.
        lengths: sizes that add up to len(dataset), or fractions that sum to 1 (each split gets
            floor(n * fraction) samples, and the remainder goes one by one to the first
            splits, as in PyTorch; an empty split gives a warning).
        generator: None (numpy's global RNG) or a numpy Generator/RandomState (or an object
            holding one); one ``permutation(n)`` draw.

    Returns:
        One Subset per length; together their indices are a permutation of 0..n-1.

    Raises:
        ValueError: counts that do not add up to len(dataset), negative counts, a fraction
            outside [0, 1].
        TypeError: a length that is not a number, a bad generator, a dataset without len().
    """
    draws = Draws(generator, "random_split")
    if not hasattr(dataset, "__len__"):
        raise TypeError(f"random_split needs a dataset with __len__, got {type(dataset).__name__}")
    counts = _split_lengths(len(dataset), lengths)
    order = draws.permutation(sum(counts)).tolist()
    subsets, start = [], 0
    for count in counts:
        subsets.append(Subset(dataset, order[start:start + count]))
        start += count
    return subsets
