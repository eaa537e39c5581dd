"""The flat host-memory buffer shared by the two CPU devices (cpu and cpu_numpy).

Both devices keep their data in a 1-D numpy array; they differ only in the
kernels they run on it. `strided_view` turns (shape, strides, offset), with
strides counted in elements and possibly negative, into a numpy view over the
buffer without copying.
"""
import numpy as np


class Array:
    """A flat buffer of `size` elements (float32 unless asked otherwise)."""

    __slots__ = ("array", "size", "dtype")

    def __init__(self, size: int, dtype: str = "float32"):
        self.array = np.empty(size, dtype=dtype)
        self.size = size
        self.dtype = dtype  # a name like "float32"; numpy recomputes dtype.name on every access

    @classmethod
    def wrap(cls, flat: np.ndarray) -> "Array":
        """A buffer over an existing 1-D numpy array (no copy)."""
        buf = cls.__new__(cls)
        buf.array, buf.size, buf.dtype = flat, flat.size, flat.dtype.name
        return buf

    def ptr(self) -> int:
        """Base address of the buffer: identical for every view of it."""
        return self.array.ctypes.data


def strided_view(a: Array, shape, strides, offset) -> np.ndarray:
    """A numpy view of `a` with the given element strides; never copies."""
    buf = a.array
    if 0 in shape:
        return np.empty(shape, dtype=buf.dtype)
    item = buf.itemsize
    return np.lib.stride_tricks.as_strided(
        buf[offset:], shape=tuple(shape), strides=tuple(s * item for s in strides)
    )


def to_numpy(a: Array, shape, strides, offset) -> np.ndarray:
    return strided_view(a, shape, strides, offset).copy()


def from_numpy(a: np.ndarray, out: Array) -> None:
    out.array[:] = np.asarray(a).ravel()


def fill(out: Array, val) -> None:
    out.array.fill(val)
