"""Collating single samples into a batch: needle's version of PyTorch's ``default_collate``.

A map-style dataset in PyTorch's style returns ONE sample from ``dataset[i]``; the
DataLoader fetches the samples of a batch one by one and merges them with a collate
function. The default one follows ``torch.utils.data.default_collate``:

* needle Tensors (and nd-mode NDArrays) are stacked along a new axis 0 and keep their
  dtype; the batch lives on the samples' device (or the loader's ``device=``);
* numpy arrays, numpy scalars and Python numbers are stacked along a new axis 0 into a
  Tensor (numbers give a 1-D Tensor of length B);
* a tuple or list is collated position by position and comes back as a tuple or list of
  batches (a namedtuple as the same namedtuple); a dict (any Mapping) key by key;
  nesting is followed recursively.

dtypes of numpy data and numbers (needle stores float32, float64, int64 and bool): bools
stay bool, every integer type becomes int64, and floating data becomes the loader's
``dtype=`` or float32. Two deliberate differences from PyTorch: float64 data (numpy
float64 arrays, Python floats) gives float32 by default, needle's default float, where
PyTorch keeps float64; and a plain tuple sample gives a tuple of batches (the course's
batch format ``X, y = batch``) where PyTorch returns a list.

Everything else is refused with an error that names the sample and the position inside
it: strings (a tensor cannot hold them -- pass a ``collate_fn`` that keeps them), None
and other objects, samples whose structure differs from the first sample's (another
type, another length, other dict keys), and arrays or tensors of unequal shapes.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, List, Optional

import numpy as np

from ..autograd import Tensor
from ..backend_selection import NDArray
from ..dtypes import DEFAULT_FLOAT

__all__ = ["default_collate"]

_TEXT = (str, bytes, bytearray)


def default_collate(batch: Sequence[Any]) -> Any:
    """Merge a list of B samples into one batch, as PyTorch's ``default_collate`` does.

    Args:
        batch: the samples, each a needle Tensor, a numpy array, a number, or a tuple,
            list or dict of these (nested to any depth); every sample must have the
            same structure and, position by position, the same shape.

    Returns:
        The samples' structure with every leaf replaced by a Tensor of shape
        ``(B, *leaf_shape)``: float data as float32, integers as int64, bools as bool,
        Tensors keeping their dtype and device; other leaves go on the default device.

    Raises:
        ValueError: an empty batch; samples of different lengths, dict keys or shapes.
        TypeError: a leaf that is not a Tensor, array or number (strings, None, objects),
            a non-numeric array dtype, or a sample whose type differs from the first's.

    Use it inside a custom ``collate_fn``; the DataLoader's own default collate also
    applies the loader's ``device=`` and ``dtype=`` (see :class:`DataLoader`).
    """
    if isinstance(batch, _TEXT) or not isinstance(batch, Sequence):
        raise TypeError(f"default_collate expects a list of samples, got {type(batch).__name__}")
    return collate_samples(list(batch))


def collate_samples(samples: List[Any], *, device=None, dtype=None,
                    indices: Optional[Sequence[int]] = None) -> Any:
    """:func:`default_collate` with the DataLoader's options.

    ``device`` (None: a Tensor sample's own device, the default device for the rest)
    receives every leaf; ``dtype`` (None: float32) is the dtype of floating numpy data and
    Python floats (integers stay int64, bools bool, Tensors keep theirs). ``indices``, the
    dataset indices the samples came from, name them in error messages (``dataset[17]``
    rather than ``sample 3``).
    """
    if not samples:
        raise ValueError("default_collate: the batch has no samples")
    return _Collate(device, dtype, indices).collate(samples, "")


def _kind(value) -> str:
    """Which rule collates ``value``: tensor, array (numpy data and numbers), text, mapping,
    sequence, or other."""
    if isinstance(value, Tensor) or (NDArray is not np.ndarray and isinstance(value, NDArray)):
        return "tensor"
    if isinstance(value, _TEXT):  # before numbers: np.str_ is also a numpy scalar
        return "text"
    if isinstance(value, (np.ndarray, np.generic, numbers.Number)):
        return "array"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, Sequence):
        return "sequence"
    return "other"


_KIND_WORDS = {"tensor": "a needle Tensor", "array": "a numpy array or number", "text": "a string",
               "mapping": "a dict", "sequence": "a tuple or list"}


def _describe(value) -> str:
    if value is None:
        return "None"
    return _KIND_WORDS.get(_kind(value), f"a {type(value).__name__}")


class _Names:
    """``names[k]``: how error messages call the batch's k-th sample."""

    def __init__(self, indices: Optional[Sequence[int]]):
        self.indices = indices

    def __getitem__(self, k: int) -> str:
        return f"sample {k}" if self.indices is None else f"dataset[{self.indices[k]}]"


class _Collate:
    def __init__(self, device, dtype, indices: Optional[Sequence[int]]):
        self.device = device
        self.dtype = dtype
        self.names = _Names(indices)

    def at(self, where: str) -> str:
        return f"at {where}" if where else "at the top level"

    def collate(self, samples: List[Any], where: str) -> Any:
        first = samples[0]
        kind = _kind(first)
        if kind in ("text", "other"):
            hint = ("a tensor cannot hold strings; pass a collate_fn that keeps them"
                    if kind == "text" else "pass a collate_fn that handles it")
            raise TypeError(
                f"default_collate: {self.names[0]} has {_describe(first)} {self.at(where)}; samples must be "
                f"needle Tensors, numpy arrays, numbers, or tuples/lists/dicts of them ({hint})")
        for k, s in enumerate(samples[1:], 1):
            if _kind(s) != kind:
                raise TypeError(
                    f"default_collate: {self.names[k]} has {_describe(s)} {self.at(where)} where "
                    f"{self.names[0]} has {_describe(first)}; every sample must have the same structure")
        return getattr(self, "_" + kind)(samples, where)

    def _mapping(self, samples: List[Mapping], where: str) -> Any:
        keys = list(samples[0].keys())
        for k, s in enumerate(samples[1:], 1):
            if set(s.keys()) != set(keys):
                missing = [key for key in keys if key not in s]
                extra = [key for key in s if key not in samples[0]]
                raise ValueError(
                    f"default_collate: {self.names[k]}'s dict {self.at(where)} has other keys than "
                    f"{self.names[0]}'s (missing {missing}, extra {extra}); every sample must have the same keys")
        out = {key: self.collate([s[key] for s in samples], f"{where}[{key!r}]") for key in keys}
        cls: type = type(samples[0])
        if cls is dict:
            return out
        try:
            return cls(out)
        except TypeError:  # a Mapping type that cannot be built from a dict
            return out

    def _sequence(self, samples: List[Sequence], where: str) -> Any:
        size = len(samples[0])
        for k, s in enumerate(samples[1:], 1):
            if len(s) != size:
                raise ValueError(
                    f"default_collate: {self.names[k]} has a {type(s).__name__} of length {len(s)} {self.at(where)} "
                    f"but {self.names[0]} has one of length {size}; every sample must have the same structure")
        parts = [self.collate([s[i] for s in samples], f"{where}[{i}]") for i in range(size)]
        cls: type = type(samples[0])
        if cls is tuple:
            return tuple(parts)
        if cls is list:
            return parts
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a namedtuple
            return cls(*parts)
        try:
            return cls(parts)
        except TypeError:  # a Sequence type that cannot be built from a list
            return parts

    def _check_shapes(self, shapes: List[tuple], where: str) -> None:
        for k, shape in enumerate(shapes[1:], 1):
            if shape != shapes[0]:
                raise ValueError(
                    f"default_collate: cannot stack the values {self.at(where)}: {self.names[0]} has shape {shapes[0]} "
                    f"but {self.names[k]} has shape {shape}; samples must have equal shapes "
                    f"(pad them in the dataset or in a collate_fn)")

    def _array(self, samples: List[Any], where: str) -> Tensor:
        arrays = [np.asarray(s) for s in samples]
        for k, a in enumerate(arrays):
            if a.dtype.kind not in "biuf":
                raise TypeError(
                    f"default_collate: {self.names[k]} has an array of dtype {a.dtype} {self.at(where)}; "
                    f"only bool, integer and floating data can be collated into a tensor")
        self._check_shapes([a.shape for a in arrays], where)
        stacked = np.stack(arrays)
        kind = stacked.dtype.kind
        dtype = "bool" if kind == "b" else "int64" if kind in "iu" else (self.dtype or DEFAULT_FLOAT)
        return Tensor(stacked, device=self.device, dtype=dtype)

    def _tensor(self, samples: List[Any], where: str) -> Tensor:
        self._check_shapes([tuple(s.shape) for s in samples], where)
        dtypes = [str(s.dtype) for s in samples]
        for k, d in enumerate(dtypes[1:], 1):
            if d != dtypes[0]:
                raise TypeError(
                    f"default_collate: {self.names[0]} has a {dtypes[0]} tensor {self.at(where)} but "
                    f"{self.names[k]} has a {d} one; samples must agree on dtype")
        device = self.device
        if device is None:
            devices = [s.device for s in samples]
            for k, d in enumerate(devices[1:], 1):
                if d != devices[0]:
                    raise ValueError(
                        f"default_collate: {self.names[0]}'s tensor {self.at(where)} is on {devices[0]} but "
                        f"{self.names[k]}'s is on {d}; samples must be on one device (or give the loader "
                        f"a device=)")
            device = devices[0]
        return Tensor(np.stack([s.numpy() for s in samples]), device=device, dtype=dtypes[0])
