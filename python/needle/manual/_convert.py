"""Turning the things users hand us (needle Tensors, NDArrays, numpy arrays,
PyTorch tensors, Python numbers) into numpy arrays or detached needle Tensors.

PyTorch is recognised by duck typing, so nothing here imports it.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from ..backend_selection import NDArray
from ..dtypes import dtype_name as _dtype_name


def is_torch_tensor(value) -> bool:
    """True for torch.Tensor and its subclasses (nn.Parameter), without importing torch."""
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def to_numpy(value, what: str = "value") -> np.ndarray:
    """A numpy array holding `value` (a needle Tensor's data, never its .grad)."""
    if value is None:
        raise ValueError(f"{what} is None")
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, NDArray):  # nd backend (in np mode NDArray is np.ndarray, handled above)
        return value.numpy()
    if is_torch_tensor(value):
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    if isinstance(value, (numbers.Number, list, tuple, np.generic)):
        return np.asarray(value)
    raise TypeError(f"{what}: cannot read a {type(value).__name__} as an array")


def same_dtype(a, b) -> bool:
    return _dtype_name(a) == _dtype_name(b)


def as_tensor(value, *, dtype, device, what: str) -> Tensor:
    """A detached (constant) needle Tensor for `value`.

    A needle Tensor keeps its data (it must already have `dtype` when `dtype` is
    given); anything else is converted to `dtype` on `device`.
    """
    if isinstance(value, Tensor):
        if dtype is not None and not same_dtype(value.dtype, dtype):
            raise TypeError(f"{what}: expected dtype {_dtype_name(dtype)}, got a Tensor of dtype {value.dtype}")
        if device is not None and value.device != device:
            raise ValueError(f"{what}: expected a tensor on {device}, got one on {value.device}")
        return value.detach()
    array = to_numpy(value, what)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected numbers, got an array of dtype {array.dtype}")
    return Tensor(array, dtype="float32" if dtype is None else dtype, device=device, requires_grad=False)


def as_index_array(ids, *, size: int, what: str) -> np.ndarray:
    """Integer ids (any shape) as int64, each in [0, size); ValueError naming the bad ones."""
    if isinstance(ids, Tensor) or isinstance(ids, NDArray) or is_torch_tensor(ids):
        ids = to_numpy(ids, what)
    else:
        ids = np.asarray(ids)
    if ids.dtype.kind == "f":  # the course passes ids as float tensors
        if not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)):
            bad = ids[~np.isfinite(ids) | (ids != np.round(ids))].ravel()[:5]
            raise ValueError(f"{what} must be integers, got non-integer values {bad.tolist()}")
        ids = ids.astype(np.int64)
    elif ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    else:
        raise ValueError(f"{what} must be integers, got an array of dtype {ids.dtype}")
    out_of_range = (ids < 0) | (ids >= size)
    if out_of_range.any():
        bad = np.unique(ids[out_of_range])[:5].tolist()
        raise ValueError(f"{what} {bad} out of range: valid values are 0..{size - 1}")
    return ids
