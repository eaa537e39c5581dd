"""Device `cpu_numpy`: the reference kernels, plain numpy written for clarity.

Each kernel computes its result as a numpy expression and writes it into the
compact `out`; the elementwise ones apply the reference of their row of
`needle.primitives`. The fast `cpu` device implements the same interface
(`interface.py`) with in-place ufuncs; tests compare the two.
"""
import numpy as np

from .host_buffer import (  # noqa: F401  (kernels of the interface, and the cache's: ndl.cpu().empty_cache())
    Array,
    cache_info,
    class_ids,
    empty_cache,
    fill,
    from_numpy,
    matmul_operands,
    read,
    reduction_blocks,
    rows_index,
    strided_view,
    to_numpy,
)
from .interface import elementwise_kernels

__device_name__ = "numpy"
__tile_size__ = 8


def _write(out, values) -> None:
    """Store `values` (cast to out's dtype) in the first elements of `out`."""
    flat = np.ravel(values)
    out.array[: flat.size] = flat


# --- strided gather / scatter -------------------------------------------------

def compact(a, out, shape, strides, offset):
    _write(out, strided_view(a, shape, strides, offset))


def ewise_setitem(a, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = a.array[: int(np.prod(shape))].reshape(shape)


def scalar_setitem(size, val, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = val


# --- elementwise primitives: one family per form, each row's numpy reference ---------------------

def _ewise(p):
    def kernel(a, b, out): _write(out, p.numpy(read(a), read(b)))
    return kernel


def _scalar(p):
    def kernel(a, val, out): _write(out, p.numpy(read(a), val))
    return kernel


def _reverse(p):
    def kernel(a, val, out): _write(out, p.numpy(val, read(a)))
    return kernel


def _unary(p):
    def kernel(a, out): _write(out, p.numpy(read(a)))
    return kernel


globals().update(elementwise_kernels(_ewise, _scalar, _reverse, _unary))


def ewise_where(cond, a, b, out):
    _write(out, np.where(read(cond), read(a), read(b)))


# --- matmul and reductions ----------------------------------------------------

def matmul(a, b, out, m, n, p, batch=1):
    """`batch` independent (m, n) @ (n, p) products on compact handles or operands (operands of
    one batch shape, any strides, read through it)."""
    x, y, _ = matmul_operands(a, b, m, n, p, batch)
    _write(out, x @ y)


def _blocks(a, reduce_size):
    x, first = reduction_blocks(a, reduce_size)
    return x, tuple(range(first, x.ndim))


def reduce_sum(a, out, reduce_size):
    """out[k] = sum of the k-th block of reduce_size elements (the trailing axes of a view)."""
    x, axes = _blocks(a, reduce_size)
    _write(out, x.sum(axis=axes, dtype=out.array.dtype))


def reduce_max(a, out, reduce_size):
    x, axes = _blocks(a, reduce_size)
    _write(out, x.max(axis=axes))


def reduce_min(a, out, reduce_size):
    x, axes = _blocks(a, reduce_size)
    _write(out, x.min(axis=axes))


def reduce_argmax(a, out, reduce_size):
    """Index of the first maximum in each block."""
    x, first = reduction_blocks(a, reduce_size)
    _write(out, x.reshape(x.shape[:first] + (-1,)).argmax(axis=-1))


# --- row gather / scatter-add (indexing with integer arrays) ------------------

def take_rows(a, indices, out, row_size):
    """out[i] = a[indices[i]] for rows of `row_size` elements."""
    rows = a.size // row_size if row_size else 0
    _write(out, a.array[: rows * row_size].reshape(rows, row_size)[rows_index(indices, rows)])


def index_add_rows(values, indices, out, row_size):
    """out[indices[i]] += values[i] row by row; repeated indices accumulate."""
    rows = out.size // row_size if row_size else 0
    idx = rows_index(indices, rows)
    np.add.at(out.array[: rows * row_size].reshape(rows, row_size), idx,
              values.array[: idx.size * row_size].reshape(idx.size, row_size))


def one_hot_rows(indices, out, n):
    """Row i: zeros with a 1 at class id i (no n x n identity is built)."""
    ids = class_ids(indices, n)
    rows = np.zeros((ids.size, n), dtype=out.array.dtype)
    rows[np.arange(ids.size), ids] = 1
    _write(out, rows)
