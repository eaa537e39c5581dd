"""Device `cpu_numpy`: the reference kernels, plain numpy written for clarity.

Every kernel reads compact flat buffers (or a strided view where its name says
so) and writes into a preallocated `out`. The fast `cpu` device implements the
same interface; tests compare the two.
"""
import numpy as np

from .host_buffer import Array, fill, from_numpy, strided_view, to_numpy  # noqa: F401

__device_name__ = "numpy"
__tile_size__ = 8


# --- strided gather / scatter -------------------------------------------------

def compact(a, out, shape, strides, offset):
    out.array[:] = strided_view(a, shape, strides, offset).ravel()


def ewise_setitem(a, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = a.array[: int(np.prod(shape))].reshape(shape)


def scalar_setitem(size, val, out, shape, strides, offset):
    strided_view(out, shape, strides, offset)[...] = val


# --- elementwise --------------------------------------------------------------

def ewise_add(a, b, out):
    out.array[:] = a.array + b.array


def scalar_add(a, val, out):
    out.array[:] = a.array + val


def ewise_mul(a, b, out):
    out.array[:] = a.array * b.array


def scalar_mul(a, val, out):
    out.array[:] = a.array * val


def ewise_div(a, b, out):
    out.array[:] = a.array / b.array


def scalar_div(a, val, out):
    out.array[:] = a.array / val


def ewise_pow(a, b, out):
    out.array[:] = a.array ** b.array


def scalar_power(a, val, out):
    out.array[:] = a.array ** val


def ewise_maximum(a, b, out):
    out.array[:] = np.maximum(a.array, b.array)


def scalar_maximum(a, val, out):
    out.array[:] = np.maximum(a.array, val)


def ewise_eq(a, b, out):
    out.array[:] = a.array == b.array


def scalar_eq(a, val, out):
    out.array[:] = a.array == val


def ewise_ge(a, b, out):
    out.array[:] = a.array >= b.array


def scalar_ge(a, val, out):
    out.array[:] = a.array >= val


def ewise_log(a, out):
    out.array[:] = np.log(a.array)


def ewise_exp(a, out):
    out.array[:] = np.exp(a.array)


def ewise_tanh(a, out):
    out.array[:] = np.tanh(a.array)


# --- matmul and reductions ----------------------------------------------------

def matmul(a, b, out, m, n, p, batch=1):
    """`batch` independent (m, n) @ (n, p) products on stacked compact buffers."""
    lhs = a.array[: batch * m * n].reshape(batch, m, n)
    rhs = b.array[: batch * n * p].reshape(batch, n, p)
    out.array[:] = (lhs @ rhs).ravel()


def reduce_sum(a, out, reduce_size):
    out.array[:] = a.array[: out.size * reduce_size].reshape(out.size, reduce_size).sum(axis=1)


def reduce_max(a, out, reduce_size):
    out.array[:] = a.array[: out.size * reduce_size].reshape(out.size, reduce_size).max(axis=1)


def reduce_argmax(a, out, reduce_size):
    """Index (as a float) of the first maximum in each block."""
    out.array[:] = a.array[: out.size * reduce_size].reshape(out.size, reduce_size).argmax(axis=1)


# --- row gather / scatter-add (indexing with integer arrays) ------------------

def take_rows(a, indices, out, row_size):
    """out[i] = a[indices[i]] for rows of `row_size` elements; indices is host int64."""
    out.array[:] = a.array.reshape(-1, row_size)[indices].ravel()


def index_add_rows(a, indices, out, row_size):
    """out[indices[i]] += a[i] row by row; repeated indices accumulate."""
    np.add.at(out.array.reshape(-1, row_size), indices, a.array.reshape(-1, row_size))
