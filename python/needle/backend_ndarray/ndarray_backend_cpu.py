"""Device `cpu`: the fast host kernels.

Same interface as `ndarray_backend_numpy`, but every kernel writes straight
into its output buffer (numpy ufuncs with `out=`, BLAS for matmul) and reads
strided operands in place, so a call costs one pass over memory and no
temporaries.
"""
import math

import numpy as np

from .host_buffer import Array, fill, from_numpy, read, reduction_blocks, strided_view, to_numpy  # noqa: F401

__device_name__ = "cpu"
__tile_size__ = 8


def compact(a, out, shape, strides, offset):
    np.copyto(out.array.reshape(shape), strided_view(a, shape, strides, offset))


def ewise_setitem(a, out, shape, strides, offset):
    np.copyto(strided_view(out, shape, strides, offset), a.array[: math.prod(shape)].reshape(shape))


def scalar_setitem(size, val, out, shape, strides, offset):
    strided_view(out, shape, strides, offset).fill(val)


def _binary(ufunc):
    def ewise(a, b, out):
        x = read(a)
        ufunc(x, read(b), out=out.array.reshape(x.shape), casting="unsafe")

    def scalar(a, val, out):
        x = read(a)
        ufunc(x, val, out=out.array.reshape(x.shape), casting="unsafe")

    return ewise, scalar


def _unary(ufunc):
    def kernel(a, out):
        x = read(a)
        ufunc(x, out=out.array.reshape(x.shape))

    return kernel


ewise_add, scalar_add = _binary(np.add)
ewise_mul, scalar_mul = _binary(np.multiply)
ewise_div, scalar_div = _binary(np.divide)
ewise_pow, scalar_power = _binary(np.power)
ewise_maximum, scalar_maximum = _binary(np.maximum)
ewise_eq, scalar_eq = _binary(np.equal)
ewise_ge, scalar_ge = _binary(np.greater_equal)
ewise_log = _unary(np.log)
ewise_exp = _unary(np.exp)
ewise_tanh = _unary(np.tanh)


def matmul(a, b, out, m, n, p, batch=1):
    """`batch` independent (m, n) @ (n, p) products, straight into `out` (BLAS reads transposes in place)."""
    np.matmul(read(a).reshape(batch, m, n), read(b).reshape(batch, n, p),
              out=out.array[: batch * m * p].reshape(batch, m, p))


def matmul_tiled(a, b, out, m, n, p):
    """Block matmul on tile-major buffers: a is (m/T, n/T, T, T), b (n/T, p/T, T, T).

    Tile (i, j) of `out` is the sum over k of tile (i, k) of a times tile (k, j)
    of b; `out` is overwritten, whatever it held before.
    """
    t = __tile_size__
    lhs = a.array[: m * n].reshape(m // t, n // t, t, t)
    rhs = b.array[: n * p].reshape(n // t, p // t, t, t)
    np.einsum("iktu,kjuv->ijtv", lhs, rhs, out=out.array[: m * p].reshape(m // t, p // t, t, t))


def _reduced(a, out, reduce_size):
    """(operand as numpy, the trailing axes to reduce, out viewed with the kept shape)."""
    x, first = reduction_blocks(a, reduce_size)
    return x, tuple(range(first, x.ndim)), out.array.reshape(x.shape[:first])


def reduce_sum(a, out, reduce_size):
    x, axes, dest = _reduced(a, out, reduce_size)
    np.sum(x, axis=axes, out=dest)


def reduce_max(a, out, reduce_size):
    x, axes, dest = _reduced(a, out, reduce_size)
    np.max(x, axis=axes, out=dest)


def reduce_argmax(a, out, reduce_size):
    x, _, dest = _reduced(a, out, reduce_size)
    dest[...] = np.argmax(x.reshape(dest.shape + (-1,)), axis=-1)


def take_rows(a, indices, out, row_size):
    np.take(a.array.reshape(-1, row_size), indices, axis=0, out=out.array.reshape(-1, row_size))


def index_add_rows(a, indices, out, row_size):
    np.add.at(out.array.reshape(-1, row_size), indices, a.array.reshape(-1, row_size))
