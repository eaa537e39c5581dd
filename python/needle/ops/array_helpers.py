"""The few array operations that numpy (np mode) and NDArray (nd mode) spell differently.

Ops call these instead of branching on the backend themselves.
"""
import numpy

from ..backend_selection import BACKEND, array_api


def zeros(shape, like):
    """Zeros of `shape` with the dtype (and device) of array `like`."""
    if BACKEND == "np":
        return numpy.zeros(shape, dtype=like.dtype)
    return array_api.full(shape, 0.0, like.dtype, like.device)


def strided(a, shape, strides):
    """View of compact array `a` with element strides (no copy, no bounds check)."""
    if BACKEND == "np":
        item = a.itemsize
        return numpy.lib.stride_tricks.as_strided(a, shape, tuple(s * item for s in strides))
    return a.as_strided(shape, strides)


def element_strides(a):
    if BACKEND == "np":
        return tuple(s // a.itemsize for s in a.strides)
    return a.strides


def take_rows(a, indices):
    """a[indices] along axis 0 (indices: host int64 array of any shape)."""
    if BACKEND == "np":
        return numpy.take(a, indices, axis=0)
    return a.take_rows(indices)


def index_add_rows(out, indices, values) -> None:
    """In place: out[indices[i]] += values[i] along axis 0; repeats accumulate."""
    if BACKEND == "np":
        numpy.add.at(out, indices, values)
    else:
        out.index_add_rows(indices, values)


def to_host(a) -> numpy.ndarray:
    return numpy.asarray(a) if BACKEND == "np" else a.numpy()
