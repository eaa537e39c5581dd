"""The flat host-memory buffer shared by the two CPU devices (cpu and cpu_numpy).

Both devices keep their data in a 1-D numpy array; they differ only in the
kernels they run on it. `strided_view` turns (shape, strides, offset), with
strides counted in elements and possibly negative, into a numpy view over the
buffer without copying.

Large buffers are cached (PyTorch's caching allocator, on the host): when a buffer of at
least `CACHE_MIN_ELEMENTS` elements dies and nothing else refers to its memory (no numpy
view, no DLPack capsule), its numpy array is kept, by size and dtype, and the next buffer
of that size and dtype reuses it. A new array of that size would be fresh pages from the
operating system, each one a page fault on first write: an eager training step frees and
reallocates the same sizes every step, and reusing them makes the mlp workload ~25% faster.
At most `NEEDLE_CPU_CACHE_MB` (environment, default 512; 0 turns the cache off) megabytes
are kept; `empty_cache()` (also `ndl.cpu().empty_cache()`) gives them back.
"""
import functools
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

CACHE_MIN_ELEMENTS = 1 << 14  # smaller arrays come from malloc's own free lists, already warm
_FREE: Dict[Tuple[int, str], List[np.ndarray]] = {}  # (size, dtype) -> cached arrays


def _limit_from_environment() -> int:
    """NEEDLE_CPU_CACHE_MB in bytes; ValueError naming the variable for anything but a number >= 0."""
    text = os.environ.get("NEEDLE_CPU_CACHE_MB", "512")
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:  # also refuses nan
        raise ValueError(f"NEEDLE_CPU_CACHE_MB must be a number of megabytes >= 0 (0: no cache), got {text!r}")
    return int(megabytes * (1 << 20))


_cache = {"bytes": 0, "limit": _limit_from_environment()}


class Array:
    """A flat buffer of `size` elements of one storage dtype (float32 unless asked otherwise).
    Contents are not initialised (a cached buffer holds what its last user left)."""

    # weakly referenced by needle.compile; `shaped` is (shape, view) of the last `shaped_view`,
    # one slot so that a thread switch can never pair one shape with another's view
    __slots__ = ("array", "size", "dtype", "shaped", "__weakref__")
    shaped: Optional[Tuple[tuple, np.ndarray]]

    def __init__(self, size: int, dtype: str = "float32"):
        if type(dtype) is not str:  # a numpy dtype: the cache's keys are names (a dtype hashes otherwise)
            dtype = np.dtype(dtype).name
        if size >= CACHE_MIN_ELEMENTS and _cache["limit"]:
            self.__class__ = _CachedArray  # same slots: gives its memory back when it dies
            self.array = _take(size, dtype)
        else:
            self.array = np.empty(size, dtype)
        self.size = size
        self.dtype = dtype  # a name like "float32"; numpy recomputes dtype.name on every access
        self.shaped = None

    @classmethod
    def wrap(cls, flat: np.ndarray) -> "Array":
        """A buffer over an existing 1-D numpy array (no copy; never cached: the memory is the caller's)."""
        buf = cls.__new__(cls)
        buf.array, buf.size, buf.dtype, buf.shaped = flat, flat.size, flat.dtype.name, None
        return buf

    def ptr(self) -> int:
        """Base address of the buffer: identical for every view of it."""
        return self.array.ctypes.data


class _CachedArray(Array):
    """A large buffer: its memory goes back to the cache when it dies, unless still referred to."""

    __slots__ = ()

    def __del__(self):
        try:
            _give_back(self)
        except Exception:  # noqa: BLE001  (interpreter shutdown: nothing to keep)
            pass


def _take(size: int, dtype: str) -> np.ndarray:
    """A cached array of `size` elements of `dtype`, or a new one."""
    free = _FREE.get((size, dtype))
    if free:
        try:
            array = free.pop()
        except IndexError:  # another thread took the last one
            pass
        else:
            _cache["bytes"] -= array.nbytes
            return array
    return np.empty(size, dtype=dtype)


def _give_back(buf: Array) -> None:
    array = buf.array
    buf.shaped = None  # our own view of it
    # references: the slot, `array` and getrefcount's argument; any view (numpy's `base`) or
    # DLPack capsule adds one, and then the memory is still in use
    if sys.getrefcount(array) > 3 or _cache["bytes"] + array.nbytes > _cache["limit"]:
        return
    _FREE.setdefault((buf.size, buf.dtype), []).append(array)
    _cache["bytes"] += array.nbytes


def empty_cache() -> int:
    """Give every cached buffer back (PyTorch's torch.cuda.empty_cache, for the host);
    returns the bytes released."""
    released = _cache["bytes"]
    _FREE.clear()
    _cache["bytes"] = 0
    return released


def cache_info() -> dict:
    """{"bytes": cached bytes, "limit": the most kept, "buffers": how many}."""
    return dict(bytes=_cache["bytes"], limit=_cache["limit"], buffers=sum(len(v) for v in list(_FREE.values())))


@functools.lru_cache(maxsize=4096)
def _row_major(shape: tuple) -> tuple:
    """Row-major element strides of `shape`."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def strided_view(a: Array, shape, strides, offset) -> np.ndarray:
    """A numpy view of `a` with the given element strides; never copies."""
    if not offset:
        shape, strides = tuple(shape), tuple(strides)
        if strides == _row_major(shape):  # the buffer's first elements in order: a plain view
            return shaped_view(a, shape)
    buf = a.array
    if 0 in shape:
        return np.empty(shape, dtype=buf.dtype)
    item = buf.itemsize
    # the ndarray constructor over the buffer: what as_strided builds, without its detour through
    # __array_interface__ (ten times the cost); numpy checks that the view stays inside the buffer
    return np.ndarray(tuple(shape), buf.dtype, buf, offset * item, tuple([s * item for s in strides]))


def shaped_view(a: Array, shape) -> np.ndarray:
    """The first prod(shape) elements of `a` viewed with `shape` (no copy).

    The view is kept on the buffer for the next call with the same shape: an array is
    usually written by one kernel and read by the next ones with the same shape, and
    building a numpy view costs as much as a small kernel does.
    """
    cached = a.shaped
    if cached is not None and cached[0] == shape:
        return cached[1]
    array = a.array
    if len(shape) == 1 and shape[0] == array.shape[0]:
        view = array  # all of a 1-D buffer is the buffer itself
    else:
        view = array[: math.prod(shape)].reshape(shape)
    a.shaped = (view.shape, view)
    return view


def read(operand) -> np.ndarray:
    """The numpy array a kernel reads: a compact handle (as the course's kernels take), or an
    operand (handle, shape, strides, offset) that NDArray passes to read strided views in place.

    NDArray passes strides=None for compact arrays: their buffer is used as is.
    """
    if isinstance(operand, Array):
        return operand.array
    handle, shape, strides, offset = operand
    if strides is None:
        if not offset:
            cached = handle.shaped  # shaped_view's look-up, inline: this is every kernel's first step
            if cached is not None and cached[0] == shape:
                return cached[1]
            return shaped_view(handle, shape)
        return handle.array[offset:offset + math.prod(shape)].reshape(shape)
    return strided_view(handle, shape, strides, offset)


def read_flat(operand) -> np.ndarray:
    """The operand's elements as a 1-D array (a view when it can be, else a copy)."""
    return read(operand).reshape(-1)


def out_view(out: Array, shape) -> np.ndarray:
    """The first prod(shape) elements of `out`, shaped: where a kernel writes its result."""
    cached = out.shaped
    if cached is not None and cached[0] == shape:
        return cached[1]
    return shaped_view(out, shape)


def matmul_operands(a, b, m: int, n: int, p: int, batch: int, copy: bool = True):
    """(x, y, lead): a batched product's operands as numpy arrays of shapes lead + (m, n) and
    lead + (n, p). Operands of one batch shape keep it (any strides: numpy's matmul loops over
    it); others are reshaped to (batch, ...), which copies a layout no view reaches -- with
    copy=False that gives None instead (a replay keeps these arrays: a copy would be read with
    its first values forever)."""
    x, y = read(a), read(b)
    if x.ndim > 3 and x.shape[:-2] == y.shape[:-2]:
        return x, y, x.shape[:-2]
    try:
        return (np.reshape(x, (batch, m, n), copy=None if copy else False),
                np.reshape(y, (batch, n, p), copy=None if copy else False), (batch,))
    except ValueError:
        return None


def reduction_blocks(operand, reduce_size: int):
    """(array, first): reduce axes first.. of `array`, the trailing axes whose sizes multiply
    to `reduce_size`. A compact handle is read as contiguous blocks of reduce_size elements."""
    x = read(operand)
    if isinstance(operand, Array):
        x = x[: x.size - x.size % reduce_size if reduce_size else 0].reshape(-1, reduce_size)
        return x, 1
    size, first = 1, x.ndim
    while first > 0 and size != reduce_size:
        first -= 1
        size *= x.shape[first]
    return x, first


def rows_index(indices, rows: int) -> np.ndarray:
    """Index operand -> flat int64 numpy indices in [0, rows); IndexError naming a bad one."""
    idx = read_flat(indices)
    if idx.size:
        low, high = idx.min(), idx.max()
        if low < -rows or high >= rows:
            bad = low if low < -rows else high
            raise IndexError(f"index {int(bad)} is out of bounds for axis 0 with size {rows}")
        if low < 0:
            idx = np.where(idx < 0, idx + rows, idx)
    return idx


def class_ids(indices, n: int) -> np.ndarray:
    """Flat class ids from an index operand, each in [0, n); IndexError naming the first bad one."""
    idx = read_flat(indices)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise IndexError(f"class index {int(bad)} is out of range for {n} classes")
    return idx


def to_numpy(a: Array, shape, strides, offset) -> np.ndarray:
    return strided_view(a, shape, strides, offset).copy()


def from_numpy(a: np.ndarray, out: Array) -> None:
    out.array[:] = np.asarray(a).ravel()


def fill(out: Array, val) -> None:
    out.array.fill(val)
