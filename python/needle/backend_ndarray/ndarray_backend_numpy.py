"""Device `cpu_numpy`: the reference kernels, plain numpy written for clarity.

Kernels write into a preallocated compact `out`. Elementwise, reduction and
matmul kernels read their inputs as operands (handle, shape, strides, offset)
through `read`, so strided views are not copied first. The fast `cpu` device
implements the same interface; tests compare the two.
"""
import numpy as np

from .host_buffer import Array, fill, from_numpy, read, reduction_blocks, strided_view, to_numpy  # noqa: F401

__device_name__ = "numpy"
__tile_size__ = 8


def _write(out, values) -> None:
    out.array[:] = np.ravel(values)


# --- strided gather / scatter -------------------------------------------------

def compact(a, out, shape, strides, offset):
    out.array[:] = strided_view(a, shape, strides, offset).ravel()


def ewise_setitem(a, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = a.array[: int(np.prod(shape))].reshape(shape)


def scalar_setitem(size, val, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = val


# --- elementwise (operands are views) --------------------------------------------

def ewise_add(a, b, out):
    _write(out, read(a) + read(b))


def scalar_add(a, val, out):
    _write(out, read(a) + val)


def ewise_mul(a, b, out):
    _write(out, read(a) * read(b))


def scalar_mul(a, val, out):
    _write(out, read(a) * val)


def ewise_div(a, b, out):
    _write(out, read(a) / read(b))


def scalar_div(a, val, out):
    _write(out, read(a) / val)


def ewise_pow(a, b, out):
    _write(out, read(a) ** read(b))


def scalar_power(a, val, out):
    _write(out, read(a) ** val)


def ewise_maximum(a, b, out):
    _write(out, np.maximum(read(a), read(b)))


def scalar_maximum(a, val, out):
    _write(out, np.maximum(read(a), val))


def ewise_eq(a, b, out):
    _write(out, read(a) == read(b))


def scalar_eq(a, val, out):
    _write(out, read(a) == val)


def ewise_ge(a, b, out):
    _write(out, read(a) >= read(b))


def scalar_ge(a, val, out):
    _write(out, read(a) >= val)


def ewise_log(a, out):
    _write(out, np.log(read(a)))


def ewise_exp(a, out):
    _write(out, np.exp(read(a)))


def ewise_tanh(a, out):
    _write(out, np.tanh(read(a)))


# --- matmul and reductions ----------------------------------------------------

def matmul(a, b, out, m, n, p, batch=1):
    """`batch` independent (m, n) @ (n, p) products on compact handles or operands."""
    _write(out, read(a).reshape(batch, m, n) @ read(b).reshape(batch, n, p))


def reduce_sum(a, out, reduce_size):
    """out[k] = sum of the k-th block of reduce_size elements (the trailing axes of a view)."""
    x, first = reduction_blocks(a, reduce_size)
    _write(out, x.sum(axis=tuple(range(first, x.ndim))))


def reduce_max(a, out, reduce_size):
    x, first = reduction_blocks(a, reduce_size)
    _write(out, x.max(axis=tuple(range(first, x.ndim))))


def reduce_argmax(a, out, reduce_size):
    """Index (as a float) of the first maximum in each block."""
    x, first = reduction_blocks(a, reduce_size)
    _write(out, x.reshape(x.shape[:first] + (-1,)).argmax(axis=-1))


# --- row gather / scatter-add (indexing with integer arrays) ------------------

def take_rows(a, indices, out, row_size):
    """out[i] = a[indices[i]] for rows of `row_size` elements; indices is host int64."""
    out.array[:] = a.array.reshape(-1, row_size)[indices].ravel()


def index_add_rows(a, indices, out, row_size):
    """out[indices[i]] += a[i] row by row; repeated indices accumulate."""
    np.add.at(out.array.reshape(-1, row_size), indices, a.array.reshape(-1, row_size))
