"""Device `cpu`: the fast host kernels (the interface is in `interface.py`).

Every kernel writes straight into its output buffer (numpy ufuncs with `out=`,
BLAS for matmul) and reads strided operands in place, so a call costs one pass
over memory and no temporaries.

The elementwise kernels are made by family from the rows of `needle.primitives` (each
row's ufunc writing in place, or its own in-place form) and tagged with their row and
form (`kernel.primitive`, `kernel.form`), which is how the compiler's fusion knows what a
kernel computes. `prepare(name, args)` gives a replayed call (needle.compile) its
launch: the same numpy call with its views built once, since a replay always sees the
same buffers.
"""
import functools
import math
from typing import Callable, cast

import numba
import numpy as np

from ..dtypes import HostScalar
from ..primitives import BY_NAME
from .host_buffer import (  # noqa: F401  (kernels of the interface, and the cache's: ndl.cpu().empty_cache())
    Array,
    cache_info,
    class_ids,
    empty_cache,
    fill,
    from_numpy,
    matmul_operands,
    out_view,
    read,
    reduction_blocks,
    rows_index,
    strided_view,
    to_numpy,
)
from .interface import elementwise_kernels

__device_name__ = "cpu"
__tile_size__ = 8


def compact(a, out, shape, strides, offset):
    np.copyto(out_view(out, shape), strided_view(a, shape, strides, offset), casting="unsafe")


def ewise_setitem(a, out, shape, strides, offset):
    np.copyto(strided_view(out, shape, strides, offset), out_view(a, shape), casting="unsafe")


def scalar_setitem(size, val, out, shape, strides, offset):
    strided_view(out, shape, strides, offset).fill(val)


# --- elementwise primitives: one family per form (the table's ufunc, in place) ---------------------

def _ewise(p):
    if p.ufunc is None:
        def kernel(a, b, out):
            x = read(a)
            np.copyto(out_view(out, x.shape), p.numpy(x, read(b)), casting="unsafe")
    else:
        ufunc = p.ufunc

        def kernel(a, b, out):
            if isinstance(a, Array) and isinstance(b, Array):
                # two whole buffers (of out's size): the flat arrays themselves, no views to build
                ufunc(a.array, b.array, out=out.array, casting="unsafe")
                return
            x = read(a)
            ufunc(x, read(b), out=out_view(out, x.shape), casting="unsafe")
    return kernel


def _scalar(p):
    if p.scalar_into is not None:
        def kernel(a, val, out):
            x = read(a)
            p.scalar_into(x, val, out_view(out, x.shape))
    elif p.ufunc is None:
        def kernel(a, val, out):
            x = read(a)
            np.copyto(out_view(out, x.shape), p.numpy(x, val), casting="unsafe")
    else:
        ufunc = p.ufunc

        def kernel(a, val, out):
            if isinstance(a, Array):  # a whole buffer (of out's size): the flat arrays themselves
                ufunc(a.array, val, out=out.array, casting="unsafe")
                return
            x = read(a)
            ufunc(x, val, out=out_view(out, x.shape), casting="unsafe")
    return kernel


def _reverse(p):
    def kernel(a, val, out):
        x = read(a)
        if p.ufunc is None:
            np.copyto(out_view(out, x.shape), p.numpy(val, x), casting="unsafe")
        else:
            p.ufunc(val, x, out=out_view(out, x.shape), casting="unsafe")
    return kernel


def _unary(p):
    own = _PREPARE_INTO.get(p.name)
    if own is not None:  # this device's form, built and run at once
        def kernel(a, out):
            x = read(a)
            own(x, out_view(out, x.shape))()
    elif p.into is not None:
        def kernel(a, out):
            x = read(a)
            p.into(x, out_view(out, x.shape))
    elif p.ufunc is None:
        def kernel(a, out):
            x = read(a)
            np.copyto(out_view(out, x.shape), p.numpy(x), casting="unsafe")
    else:
        def kernel(a, out):
            x = read(a)
            p.ufunc(x, out=out_view(out, x.shape))
    return kernel


# --- the cpu device's own forms of primitives' numpy recipes (the same operations, fewer passes) -----

_SIGMOID_RECIPE = cast(Callable[[np.ndarray, np.ndarray], None], BY_NAME["sigmoid"].into)


def _prepare_sigmoid(x, out):
    """The launch of needle.primitives' sigmoid (1 / (1 + e) for x >= 0, e / (1 + e) below,
    e = exp(-|x|)) into `out`, its checks and flat views made once (a replay builds it once, an
    eager call builds and runs it). Three passes instead of six numpy calls and a temporary:
    -|x| and the select, add and divide are compiled loops doing the same IEEE operations, the
    exp stays numpy's (its SIMD exp gives the bits), so the bits are the recipe's. A 20 x 800
    LSTM gate: 80 us -> 26. Strided or overlapping operands take the recipe."""
    if not (x.flags.c_contiguous and out.flags.c_contiguous and x.dtype == out.dtype and x.dtype.kind == "f") \
            or np.may_share_memory(x, out):
        return functools.partial(_SIGMOID_RECIPE, x, out)
    flat_x, flat_out, one = x.reshape(-1), out.reshape(-1), out.dtype.type(1)

    def run() -> None:
        _negative_abs(flat_x, flat_out)
        np.exp(flat_out, out=flat_out)
        _sigmoid_from_exp(flat_x, flat_out, one)
    return run


@numba.njit(cache=True, nogil=True)
def _negative_abs(x, out):
    for i in range(x.size):
        out[i] = -abs(x[i])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sigmoid_of(x, e, one):
    """sigmoid(x) from e = exp(-|x|) (the cpu sigmoid's operations; the LSTM kernels call it too)."""
    return (one if x >= 0 else e) / (e + one)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_from_exp(x, e, one):
    """e holds exp(-|x|): e becomes (1 if x >= 0 else e) / (e + 1), numpy's where/add/divide."""
    for i in range(x.size):
        e[i] = _sigmoid_of(x[i], e[i], one)


# primitive name -> the launch of this device's own form of its `into` on fixed arrays
_PREPARE_INTO = {"sigmoid": _prepare_sigmoid}


globals().update(elementwise_kernels(_ewise, _scalar, _reverse, _unary))


def _where_into(c, a, b, y):
    """y = a where c else b. Large contiguous cases take a bitwise select over the values'
    bits (exact, nan payloads included, and ~15x faster than numpy's masked copy, whose
    branches mispredict on random masks); the rest take numpy's masked copy."""
    if y.size >= 1024 and c.flags.c_contiguous and y.flags.c_contiguous and a.dtype == b.dtype == y.dtype:
        lhs, rhs = _select_operand(a), _select_operand(b)
        if lhs is not None and rhs is not None:
            bits = _BITS[y.dtype.itemsize]
            _bitwise_select(c.reshape(-1).view(np.uint8), lhs.view(bits), rhs.view(bits), y.reshape(-1).view(bits))
            return
    np.copyto(y, b, casting="unsafe")
    np.copyto(y, a, casting="unsafe", where=c)


_BITS = {1: np.uint8, 4: np.uint32, 8: np.uint64}


def _select_operand(x):
    """x as a flat contiguous array, or as a 1-element array when it is one value broadcast
    (all strides 0, e.g. the 0 of relu's gradient), or None."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if all(s == 0 for s in x.strides):
        return np.ascontiguousarray(x.reshape(-1)[:1])
    return None


@numba.njit(cache=True, nogil=True)
def _bitwise_select(c, a, b, out):
    one_a, one_b = a.size == 1, b.size == 1
    for i in range(out.size):
        m = out.dtype.type(0) - out.dtype.type(c[i])  # all bits set where c is true (unsigned wrap)
        x = a[0] if one_a else a[i]
        z = b[0] if one_b else b[i]
        out[i] = (x & m) | (z & ~m)


def ewise_where(cond, a, b, out):
    c = read(cond)
    _where_into(c, read(a), read(b), out_view(out, c.shape))


def matmul(a, b, out, m, n, p, batch=1):
    """`batch` independent (m, n) @ (n, p) products, straight into `out` (BLAS reads transposes in
    place); operands of one batch shape (any strides) are read through it, without a copy."""
    x, y, lead = matmul_operands(a, b, m, n, p, batch)
    np.matmul(x, y, out=out_view(out, lead + (m, p)))


# --- out += a @ b as one BLAS call (needle.compile's accumulated products) ----------------------------
# A gradient summed over many products (an LSTM weight's, one product per time step) is, op by
# op, each product into a buffer of its own and then their sum. sgemm with beta = 1 adds a product
# to `out` as it computes it: each element is out + (its dot product, summed as sgemm sums it),
# which is what the separate add computes from the product's float32 value -- when sgemm sums the
# whole inner dimension in one block (for a long one it adds its blocks to `out` one by one).
# `accumulates_exactly` checks that for a geometry, once, on random data.

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@functools.lru_cache(maxsize=None)
def _sgemm():
    """numpy's own cblas_sgemm (the ILP64 scipy-openblas its wheels bundle), or None."""
    import ctypes

    from .._openblas import numpy_openblas

    for _, lib in numpy_openblas():
        fn = getattr(lib, "scipy_cblas_sgemm64_", None)
        if fn is None:
            continue
        i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64]
        fn.restype = None
        return fn
    return None


def _layout(shape, strides):
    """(transpose flag, leading dimension) with which BLAS reads a 2-D view in place (element
    strides, None for row-major), or None."""
    rows, cols = shape
    s0, s1 = strides if strides is not None else (cols, 1)
    if s1 == 1 and s0 >= max(cols, 1):
        return _NO_TRANS, s0
    if s0 == 1 and s1 >= max(rows, 1):
        return _TRANS, s1
    return None


def _gemm_layout(x: np.ndarray):
    if x.strides[0] % 4 or x.strides[1] % 4:
        return None
    return _layout(x.shape, (x.strides[0] // 4, x.strides[1] // 4))


def _accumulate_launch(a, b, out, m, n, p):
    x, y, z = read(a).reshape(m, n), read(b).reshape(n, p), out_view(out, (m, p))
    sgemm, lx, ly = _sgemm(), _gemm_layout(x), _gemm_layout(y)
    if sgemm is None or lx is None or ly is None or x.dtype != np.float32 or y.dtype != np.float32:
        raise ValueError(f"matmul_accumulate: needs float32 operands BLAS reads in place and numpy's OpenBLAS, "
                         f"got {x.dtype} {x.strides} and {y.dtype} {y.strides}")
    args = (_ROW_MAJOR, lx[0], ly[0], m, p, n, 1.0, x.ctypes.data, lx[1], y.ctypes.data, ly[1], 1.0,
            z.ctypes.data, p)
    keep = (x, y, z)  # the views' memory, while the launch lives

    def launch() -> None:
        sgemm(*args)
        del_ = keep  # noqa: F841
    return launch


def matmul_accumulate(a, b, out, m, n, p):
    """out (m, p) += a (m, n) @ b (n, p), float32, in one sgemm call with beta = 1; operands may
    be transposed views. Gives matmul then ewise_add's bits where `accumulates_exactly` says so."""
    _accumulate_launch(a, b, out, m, n, p)()


def accumulates_exactly(a, b, m, n, p) -> bool:
    """Whether matmul_accumulate on float32 operands laid out as `a` and `b` ((shape, strides):
    element strides, None for row-major) gives, bit for bit, what `matmul` into a buffer of its
    own and then `ewise_add` to `out` give. Measured once per layout, on random data (a
    different summation would show in the bits)."""
    (shape_a, strides_a), (shape_b, strides_b) = a, b
    if tuple(shape_a) != (m, n) or tuple(shape_b) != (n, p) or min(m, n, p) < 2 or _sgemm() is None:
        return False
    layout_a, layout_b = _layout(shape_a, strides_a), _layout(shape_b, strides_b)
    if layout_a is None or layout_b is None:
        return False
    return _exact_layout(m, n, p, layout_a, layout_b)


@functools.lru_cache(maxsize=256)
def _exact_layout(m, n, p, layout_a, layout_b) -> bool:
    rng = np.random.RandomState(0)

    def operand(rows, cols, layout):
        trans, lead = layout
        flat = rng.randn((rows if trans == _NO_TRANS else cols) * lead).astype(np.float32)
        return (Array.wrap(flat), (rows, cols), (lead, 1) if trans == _NO_TRANS else (1, lead), 0)

    for _ in range(2):
        x, y = operand(m, n, layout_a), operand(n, p, layout_b)
        start = rng.randn(m * p).astype(np.float32)
        product = Array(m * p)
        matmul(x, y, product, m, n, p)
        expected = np.add(start, product.array)
        got = Array.wrap(start.copy())
        matmul_accumulate(x, y, got, m, n, p)
        if got.array.tobytes() != expected.tobytes():
            return False
    return True


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
    return x, tuple(range(first, x.ndim)), out_view(out, x.shape[:first])


# the ufuncs' reduce, which is what np.sum/np.max/np.min call for an ndarray (the same loop and
# summation order, so the same bits) without their Python-level dispatch

def _reduce_into(ufunc, a, out, reduce_size):
    if isinstance(a, Array) and a.size == reduce_size:
        # a whole buffer reduced to one element: the same 1-D reduction, into out's one element
        # kept as an axis (what a 0-d view of it would take, without building that view)
        ufunc.reduce(a.array, 0, None, out.array, True)
        return
    x, axes, dest = _reduced(a, out, reduce_size)
    # a sum over rows as the column loop below (building its view costs a few us: worth it from
    # about 8k elements)
    columns = _as_columns(x, len(x.shape) - len(axes), dest) if ufunc is np.add and x.size >= 8192 else None
    if columns is not None:
        _column_sums(*columns)
        return
    ufunc.reduce(x, axis=axes, out=dest)


def reduce_sum(a, out, reduce_size):
    if isinstance(a, Array) and a.size == reduce_size:  # _reduce_into's first case, inline (every loss)
        np.add.reduce(a.array, 0, None, out.array, True)
        return
    _reduce_into(np.add, a, out, reduce_size)


# --- column sums (a bias's gradient, BatchNorm's statistics): numpy's order, one loop ------------------
# Summing a (K, R) view whose kept axis has the smaller stride (the sum over the rows of an (R, K)
# array: a bias gradient, BatchNorm's mean over N*H*W of an NHWC array), numpy's reduce runs its
# inner loop along K, adding row after row into the K sums from 0.0 -- plain IEEE additions in row
# order, not its pairwise sum (which it uses when the reduced axis is the inner one) -- one call of
# its inner loop per row. The same additions in one compiled loop: 4096 rows of 16 channels take
# 16 us instead of 71, 2048 x 128 20 instead of 46 (float32, one core). A kept axis of one element
# leaves numpy with the reduced axis inside, summed pairwise: then numpy runs.

def _as_columns(x: np.ndarray, first: int, dest: np.ndarray):
    """(x as a (K, R) view, dest as (K,)) when summing x's axes first.. is numpy's row-by-row
    order over that view (above), else None."""
    if x.dtype != dest.dtype or x.dtype.kind != "f" or x.size == 0:
        return None
    kept = [(n, st) for n, st in zip(x.shape[:first], x.strides[:first]) if n != 1]
    reduced = [(n, st) for n, st in zip(x.shape[first:], x.strides[first:]) if n != 1]
    merged = []
    for axes in (kept, reduced):  # each part as one axis: C-order neighbours, or nothing
        if not axes:
            return None
        n, stride = axes[-1]
        for m, st in reversed(axes[:-1]):
            if st != stride * n:
                return None
            n *= m
        merged.append((n, stride))
    (k, sk), (r, sr) = merged
    if not 0 < sk < sr or not dest.flags.c_contiguous:  # (each part has an axis of 2 or more)
        return None
    return np.lib.stride_tricks.as_strided(x, (k, r), (sk, sr)), dest.reshape(k)


@numba.njit(cache=True, nogil=True)
def _column_sums(x, out):
    """out[k] = sum over r of x[k, r], added in r order from 0.0 (numpy's order for this layout)."""
    for k in range(x.shape[0]):
        out[k] = 0.0
    for r in range(x.shape[1]):
        for k in range(x.shape[0]):
            out[k] += x[k, r]


def reduce_max(a, out, reduce_size):
    _reduce_into(np.maximum, a, out, reduce_size)


def reduce_min(a, out, reduce_size):
    _reduce_into(np.minimum, a, out, reduce_size)


def reduce_argmax(a, out, reduce_size):
    x, _, dest = _reduced(a, out, reduce_size)
    dest[...] = np.argmax(x.reshape(dest.shape + (-1,)), axis=-1)


def take_rows(a, indices, out, row_size):
    rows = a.size // row_size if row_size else 0
    idx = rows_index(indices, rows)
    np.take(a.array[: rows * row_size].reshape(rows, row_size), idx, axis=0,
            out=out_view(out, (idx.size, row_size)))


def index_add_rows(values, indices, out, row_size):
    rows = out.size // row_size if row_size else 0
    idx = rows_index(indices, rows)
    table, rows_in = out.array[: rows * row_size].reshape(rows, row_size), out_view(values, (idx.size, row_size))
    if table.dtype == rows_in.dtype and table.dtype.kind == "f":
        _add_rows(table, idx, rows_in)
    else:
        np.add.at(table, idx, rows_in)


@numba.njit(cache=True, nogil=True)
def _add_rows(table, idx, values):
    """np.add.at(table, idx, values) for rows: the same additions in the same order (row idx[0]
    first), as one compiled loop instead of numpy's per-index dispatch."""
    for i in range(idx.size):
        row = idx[i]
        for j in range(table.shape[1]):
            table[row, j] += values[i, j]


def im2col(a, out, shape, stride, dilation, top_left):
    _im2col(read(a), out_view(out, tuple(shape)), stride[0], stride[1], dilation[0], dilation[1], top_left[0],
            top_left[1])


@numba.njit(cache=True, nogil=True)
def _im2col(x, cols, sh, sw, dh, dw, top, left):
    """cols[n, i, j, u, v, :] = x[n, i*sh + u*dh - top, j*sw + v*dw - left, :], 0 outside x: the padded
    window view copied, read straight from x (which may be strided: an NHWC view of NCHW data)."""
    h, w = x.shape[1], x.shape[2]
    ho, wo, kh, kw, c = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4], cols.shape[5]
    zero = cols.dtype.type(0)
    for n in range(cols.shape[0]):
        for i in range(ho):
            for j in range(wo):
                for u in range(kh):
                    r = i * sh + u * dh - top
                    for v in range(kw):
                        q = j * sw + v * dw - left
                        if 0 <= r < h and 0 <= q < w:
                            for k in range(c):
                                cols[n, i, j, u, v, k] = x[n, r, q, k]
                        else:
                            for k in range(c):
                                cols[n, i, j, u, v, k] = zero


def col2im(cols, out, shape, kernel, stride, dilation, top_left):
    n, h, w, c = shape
    _col2im(read(cols), out_view(out, (n, h, w, c)), kernel[0], kernel[1], stride[0], stride[1], dilation[0],
            dilation[1], top_left[0], top_left[1])


@numba.njit(cache=True, nogil=True)
def _col2im(cols, out, kh, kw, sh, sw, dh, dw, top, left):
    """Each output element gathers its windows' entries, adding them to 0 in kernel-offset order
    (u, then v): the order of the array layer's one strided add per offset, so the same bits."""
    ho, wo, c = cols.shape[1], cols.shape[2], cols.shape[5]
    for n in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                for k in range(c):
                    out[n, y, x, k] = 0
                for u in range(kh):
                    r = y + top - u * dh
                    if r < 0 or r % sh != 0 or r // sh >= ho:
                        continue
                    i = r // sh
                    for v in range(kw):
                        q = x + left - v * dw
                        if q < 0 or q % sw != 0 or q // sw >= wo:
                            continue
                        j = q // sw
                        for k in range(c):
                            out[n, y, x, k] += cols[n, i, j, u, v, k]


def add_n(arrays, out):
    """The left fold written into `out` in place (out = a0 + a1, then out += a2, ...): each element's
    additions in the fold's order, without a fresh array per addition -- for 35 of an LSTM weight's
    partial gradients (640 kB each) 1.0 ms where a new array a step took 2.1 (numpy's loops; a numba
    loop over a typed list of the arrays did not vectorise: 7.8)."""
    shape = (out.size,)
    total = out_view(out, shape)
    np.add(out_view(arrays[0], shape), out_view(arrays[1], shape), out=total)
    for a in arrays[2:]:
        np.add(total, out_view(a, shape), out=total)


def threshold_backward(g, x, out, threshold):
    gv = read(g).reshape(-1)
    _threshold_backward(gv, read(x).reshape(-1), out_view(out, gv.shape), threshold)


@numba.njit(cache=True, nogil=True)
def _threshold_backward(g, x, out, threshold):
    zero = out.dtype.type(0)
    for i in range(out.size):
        out[i] = zero if x[i] <= threshold else g[i]


def tanh_backward(g, t, out):
    gv = read(g).reshape(-1)
    _tanh_backward(gv, read(t).reshape(-1), out_view(out, gv.shape))


@numba.njit(cache=True, nogil=True)
def _tanh_backward(g, t, out):
    """g * (-(t * t) + 1): the multiply, negate, add and multiply of the sequence, in one pass."""
    one = out.dtype.type(1)
    for i in range(out.size):
        out[i] = g[i] * (-(t[i] * t[i]) + one)


# --- the LSTM cell's pointwise part (needle.ops.lstm): the bits of its array sequence in 2 passes ---
# The array sequence makes some 20 calls forward and 15 backward on (batch, hidden) arrays, each
# a few microseconds of Python on a language model's (20, 200). Here sigmoid(x) is computed as
# the cpu device's sigmoid does ((1 if x >= 0 else e) / (e + 1) with e = numpy's exp(-|x|), see
# _prepare_sigmoid; sigmoid(-x) uses the same e), tanh stays numpy's, and the rest is +, -, *,
# which IEEE rounds the same in any loop: the bits of the sequence (a nan's sign may differ).

def lstm_gates(z, c0, h, c, hidden):
    batch = h.size // hidden
    shape = (batch, hidden)
    z3 = read(z).reshape(batch, 4, hidden)
    e = _exps_of_negative_abs(z3)
    c_out, h_out = out_view(c, shape), out_view(h, shape)
    _lstm_cell_state(z3, e, np.tanh(z3[:, 2]), read(c0), c_out)
    _lstm_hidden_state(z3, e, np.tanh(c_out), h_out)


def lstm_gates_backward(gh, gc, z, c0, c, grad_z, grad_c0, hidden, has_h, has_c):
    batch = grad_c0.size // hidden
    shape = (batch, hidden)
    z3 = read(z).reshape(batch, 4, hidden)
    e = _exps_of_negative_abs(z3)
    c0_rows = read(c0)  # also read in place of an adjoint that is not there (has_h/has_c say so)
    _lstm_gates_backward(read(gh), read(gc), z3, e, np.tanh(z3[:, 2]), np.tanh(read(c)) if has_h else c0_rows,
                         c0_rows, out_view(grad_z, (batch, 4, hidden)), out_view(grad_c0, shape), has_h, has_c)


def _exps_of_negative_abs(z3):
    """exp(-|z|) by numpy's exp on a compact array, -|z| written by a compiled loop (the sigmoid's e)."""
    e = np.empty_like(z3)
    _negative_abs(z3.reshape(-1), e.reshape(-1))
    np.exp(e, out=e)
    return e


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lstm_cell_state(z3, e, tanh_g, c0, c):
    """c = sigmoid(z_f) * c0 + sigmoid(z_i) * tanh(z_g): LSTMGates.compute's multiply, multiply, add."""
    one = c.dtype.type(1)
    for b in range(c.shape[0]):
        for j in range(c.shape[1]):
            i = _sigmoid_of(z3[b, 0, j], e[b, 0, j], one)
            f = _sigmoid_of(z3[b, 1, j], e[b, 1, j], one)
            c[b, j] = f * c0[b, j] + i * tanh_g[b, j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lstm_hidden_state(z3, e, tanh_c, h):
    """h = sigmoid(z_o) * tanh(c)."""
    one = h.dtype.type(1)
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            h[b, j] = _sigmoid_of(z3[b, 3, j], e[b, 3, j], one) * tanh_c[b, j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _lstm_gates_backward(gh, gc, z3, e, tanh_g, tanh_c, c0, grad_z, grad_c0, has_h, has_c):
    """The element loops of LSTMGatesGrad.compute's array sequence: each value by the same float
    operations in the same order (numba contracts nothing into an FMA); sigmoid(-z) as the
    sigmoid of the negated value, from the same e. grad_c0 holds c's adjoint `a` until the last
    loop; a loop per gate, as one loop over all eleven arrays does not vectorise (3.5x slower)."""
    one = grad_c0.dtype.type(1)
    zero = grad_c0.dtype.type(0)
    batch, hidden = grad_c0.shape
    a = grad_c0
    if has_h:
        for b in range(batch):
            for j in range(hidden):
                z_o, e_o, t = z3[b, 3, j], e[b, 3, j], tanh_c[b, j]
                o = _sigmoid_of(z_o, e_o, one)
                through_h = (gh[b, j] * o) * (-(t * t) + one)
                a[b, j] = gc[b, j] + through_h if has_c else through_h
                grad_z[b, 3, j] = (gh[b, j] * t) * (o * _sigmoid_of(-z_o, e_o, one))
    else:
        for b in range(batch):
            for j in range(hidden):
                a[b, j] = gc[b, j]
                grad_z[b, 3, j] = zero
    for b in range(batch):
        for j in range(hidden):
            z_i, e_i = z3[b, 0, j], e[b, 0, j]
            grad_z[b, 0, j] = (a[b, j] * tanh_g[b, j]) * (_sigmoid_of(z_i, e_i, one) * _sigmoid_of(-z_i, e_i, one))
    for b in range(batch):
        for j in range(hidden):
            g = tanh_g[b, j]
            grad_z[b, 2, j] = (a[b, j] * _sigmoid_of(z3[b, 0, j], e[b, 0, j], one)) * (-(g * g) + one)
    for b in range(batch):
        for j in range(hidden):
            z_f, e_f = z3[b, 1, j], e[b, 1, j]
            f = _sigmoid_of(z_f, e_f, one)
            grad_z[b, 1, j] = (a[b, j] * c0[b, j]) * (f * _sigmoid_of(-z_f, e_f, one))
            a[b, j] = a[b, j] * f  # grad_c0


# --- BatchNorm over axis 0 of a compact (N, C) array: the array sequence's bits, in 3 + 2 passes ----
# needle.ops.normalization.BatchNorm / BatchNormGrad run some 15 array calls each: 14 and 10 passes
# over (N, C) data, and ~5 us of Python per call on makemore's (32, 64). Their sums over axis 0 of
# a compact (N, C) array with C >= 2 are numpy's row-by-row order from 0.0 (see _column_sums), and
# everything else is +, -, *, / and sqrt, which IEEE rounds the same in any loop (a nan's sign
# bit may differ: it depends on which operand an instruction propagates); the power
# (var + eps) ** -0.5 stays numpy's (the caller passes inv_std). Scalars come in the data's dtype.

def batch_norm(x, w, b, out, mean, var, eps):
    channels = mean.size
    rows = out.size // channels
    shape, row = (rows, channels), (channels,)
    kind = out.array.dtype.type
    _batch_norm(out_view(x, shape), out_view(w, row), out_view(b, row), out_view(out, shape), out_view(mean, row),
                out_view(var, row), kind(rows), kind(eps))


@numba.njit(cache=True, error_model="numpy", nogil=True)  # x / 0 is inf or nan, as numpy's
def _batch_norm(x, w, b, out, mean, var, n, eps):
    """mean = sum(x, 0) / n; var = sum((x - mean)^2, 0) / n; out = w * ((x - mean) / sqrt(var + eps)) + b,
    the sums from 0.0 adding rows in order; `out` holds the centred values between the passes."""
    rows, channels = x.shape
    zero = x.dtype.type(0)
    for j in range(channels):
        mean[j] = zero
        var[j] = zero
    for i in range(rows):
        for j in range(channels):
            mean[j] += x[i, j]
    for j in range(channels):
        mean[j] = mean[j] / n
    for i in range(rows):
        for j in range(channels):
            centered = x[i, j] - mean[j]
            out[i, j] = centered
            var[j] += centered * centered
    for j in range(channels):
        var[j] = var[j] / n
    denominator = np.empty_like(var)
    for j in range(channels):
        denominator[j] = np.sqrt(var[j] + eps)
    for i in range(rows):
        for j in range(channels):
            out[i, j] = w[j] * (out[i, j] / denominator[j]) + b[j]


def batch_norm_backward(g, x, w, mean, var, eps, grad_x, grad_w, grad_b):
    channels = mean.size
    rows = grad_x.size // channels
    shape = (rows, channels)
    row = (channels,)
    # inv_std = (var + eps) ** -0.5 as the array layer's add and power compute it (numpy's add,
    # then the correctly rounded sqrt and its reciprocal: needle.primitives' power of -0.5)
    inv_std = np.add(out_view(var, row), eps)
    np.sqrt(inv_std, out=inv_std)
    np.reciprocal(inv_std, out=inv_std)
    _batch_norm_backward(out_view(g, shape), out_view(x, shape), out_view(w, row), out_view(mean, row),
                         inv_std, out_view(grad_x, shape), out_view(grad_w, row),
                         out_view(grad_b, row), grad_x.array.dtype.type(rows))


@numba.njit(cache=True, error_model="numpy", nogil=True)  # x / 0 is inf or nan, as numpy's
def _batch_norm_backward(g, x, w, mean, inv_std, grad_x, grad_w, grad_b, n):
    """With x_hat = (x + (-mean)) * inv_std: grad_b = sum(g, 0), grad_w = sum(g * x_hat, 0) (from 0.0,
    rows in order), grad_x = ((w * inv_std) / n) * ((g * n + (-grad_b)) + x_hat * (-grad_w))."""
    rows, channels = g.shape
    zero = g.dtype.type(0)
    negative_mean = np.empty_like(mean)
    for j in range(channels):
        grad_w[j] = zero
        grad_b[j] = zero
        negative_mean[j] = -mean[j]
    for i in range(rows):
        for j in range(channels):
            grad_b[j] += g[i, j]
            grad_w[j] += g[i, j] * ((x[i, j] + negative_mean[j]) * inv_std[j])
    scale = np.empty_like(mean)
    negative_gw = np.empty_like(mean)
    negative_gb = np.empty_like(mean)
    for j in range(channels):
        scale[j] = (w[j] * inv_std[j]) / n
        negative_gw[j] = -grad_w[j]
        negative_gb[j] = -grad_b[j]
    for i in range(rows):
        for j in range(channels):
            x_hat = (x[i, j] + negative_mean[j]) * inv_std[j]
            grad_x[i, j] = scale[j] * ((g[i, j] * n + negative_gb[j]) + x_hat * negative_gw[j])


# --- the negative log-likelihood's picked sum and its gradient (SoftmaxLoss after its log-softmax) ------
# The loss is -sum(where(one_hot(ids), log_probs, 0)) / B: numpy sums the (B, k) array flat, pairwise
# (numpy's pairwise_sum: blocks of at most 128 elements summed with 8 accumulators, longer runs
# halved at a multiple of 8), and the result is 0.0 plus that. Where only B of the B * k elements are
# not zero, every block without a picked element sums to +0.0 and need not be read: the same
# additions, walked over the B picked elements only (700 x 10,000 logits: 0.3 ms instead of the
# select's and the sum's 7 ms).

def nll_loss(log_probs, ids, out, classes):
    idx = class_ids(ids, classes)
    x = read(log_probs).reshape(idx.size, classes)  # compact (the caller's check)
    total = np.full((), _picked_sum(x, idx, np.zeros(128, x.dtype)), x.dtype)
    # NLLLoss's negate, then divide by the batch (numpy's float division in the dtype, as the
    # array layer's scalar divide)
    np.divide(np.negative(total), idx.size, out=out.array[:1].reshape(()))


@numba.njit(cache=True, nogil=True)
def _picked_sum(x, ids, block):
    rows, classes = x.shape
    positions = np.empty(rows, np.int64)
    values = np.empty(rows, x.dtype)
    for i in range(rows):
        positions[i] = i * classes + ids[i]
        values[i] = x[i, ids[i]]
    zero = x.dtype.type(0)
    return zero + _pairwise_sparse(0, rows * classes, positions, values, 0, rows, block)


@numba.njit(cache=True, nogil=True)
def _pairwise_sparse(start, n, positions, values, first, last, block):
    """numpy's pairwise sum of the n elements from flat position `start` of an array that is zero but
    at positions[first:last] (sorted), which hold values[first:last]; `block` is 128 zeros, left so.
    numpy recurses (left half + right half); this walks the same tree with a stack of its own (a
    recursive numba function breaks when loaded from numba's cache)."""
    zero = block.dtype.type(0)
    depth = 128  # halving from below 2^63 elements ends far sooner
    f_start = np.empty(depth, np.int64)
    f_n = np.empty(depth, np.int64)
    f_first = np.empty(depth, np.int64)
    f_last = np.empty(depth, np.int64)
    f_middle = np.empty(depth, np.int64)
    f_state = np.empty(depth, np.int64)
    sums = np.empty(depth, block.dtype)
    frames = 1
    done = 0
    f_start[0], f_n[0], f_first[0], f_last[0], f_state[0] = start, n, first, last, 0
    while frames:
        top = frames - 1
        lo, size, a, b = f_start[top], f_n[top], f_first[top], f_last[top]
        half = size // 2
        half -= half % 8
        if f_state[top] == 0:
            if a == b or size <= 128:  # a leaf: zeros, or one block
                sums[done] = zero if a == b else _block_sum(lo, size, positions, values, a, b, block)
                done += 1
                frames -= 1
                continue
            middle = a
            while middle < b and positions[middle] < lo + half:
                middle += 1
            f_middle[top] = middle
            f_state[top] = 1
            f_start[frames], f_n[frames], f_first[frames], f_last[frames], f_state[frames] = lo, half, a, middle, 0
            frames += 1
        elif f_state[top] == 1:
            f_state[top] = 2
            f_start[frames], f_n[frames] = lo + half, size - half
            f_first[frames], f_last[frames], f_state[frames] = f_middle[top], b, 0
            frames += 1
        else:  # both halves summed: left + right
            done -= 1
            sums[done - 1] = sums[done - 1] + sums[done]
            frames -= 1
    return sums[0]


@numba.njit(cache=True, nogil=True)
def _block_sum(start, n, positions, values, first, last, block):
    """numpy's sum of one block of n <= 128 elements that are zero but at positions[first:last]:
    those scattered into `block` (zeros), summed as numpy does (_dense_block_sum), cleared again."""
    for t in range(first, last):
        block[positions[t] - start] = values[t]
    total = _dense_block_sum(block, 0, n)
    for t in range(first, last):
        block[positions[t] - start] = block.dtype.type(0)
    return total


@numba.njit(cache=True, nogil=True)
def _dense_block_sum(a, start, n):
    """numpy's pairwise_sum of a[start:start + n] for n <= 128: from -0.0 one by one below 8, else
    with 8 accumulators (the first 8 elements, then 8 at a time), combined as
    ((0+1)+(2+3))+((4+5)+(6+7)), then the remainder added one by one. The twin of
    needle.compile.pairwise_cpu's (which the generated fused loops call), kept here because numba's
    disk cache of a kernel is checked against its own file only: a kernel calling into another
    module would keep running an old copy after that module changed."""
    if n < 8:
        total = -a.dtype.type(0)  # numpy's start: adding -0.0 first changes no value
        for i in range(n):
            total += a[start + i]
        return total
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += a[start + i]
        i += 1
    return total


@numba.njit(cache=True, nogil=True)
def _row_sum(a):
    """What numpy's sum over a contiguous 1-D array gives: 0.0 plus its pairwise sum (halves at a
    multiple of 8 down to blocks of at most 128; the tree walked with a stack, not recursion, as in
    _pairwise_sparse)."""
    n = a.shape[0]
    zero = a.dtype.type(0)
    if n <= 128:
        return zero + _dense_block_sum(a, 0, n)
    depth = 128
    f_start = np.empty(depth, np.int64)
    f_n = np.empty(depth, np.int64)
    f_state = np.empty(depth, np.int64)
    sums = np.empty(depth, a.dtype)
    frames, done = 1, 0
    f_start[0], f_n[0], f_state[0] = 0, n, 0
    while frames:
        top = frames - 1
        lo, size = f_start[top], f_n[top]
        half = size // 2
        half -= half % 8
        if f_state[top] == 0:
            if size <= 128:
                sums[done] = _dense_block_sum(a, lo, size)
                done += 1
                frames -= 1
                continue
            f_state[top] = 1
            f_start[frames], f_n[frames], f_state[frames] = lo, half, 0
            frames += 1
        elif f_state[top] == 1:
            f_state[top] = 2
            f_start[frames], f_n[frames], f_state[frames] = lo + half, size - half, 0
            frames += 1
        else:
            done -= 1
            sums[done - 1] = sums[done - 1] + sums[done]
            frames -= 1
    return zero + sums[0]


# --- LayerNorm over the last axis of a compact (R, d) array: the array sequence's bits, one pass per row --
# needle.ops.normalization.LayerNorm's array sequence is 13 calls forward and LayerNormGrad's some 25
# (gpt's (2048, 128): ~1 and ~4 ms). The sums over the last axis are numpy's (0.0 plus the row's
# pairwise sum, _row_sum), the column sums for the weight and bias numpy's row-by-row order from 0.0;
# the rest is +, -, *, / and sqrt in the sequence's order. The power (var + eps) ** -0.5 of the
# gradient stays numpy's (the caller passes half of it). Scalars come in the data's dtype.

def layer_norm(x, w, b, out, mean, var, eps):
    rows = mean.size
    d = out.size // max(rows, 1)
    kind = out.array.dtype.type
    shape, row, column = (rows, d), (d,), (rows,)
    _layer_norm(out_view(x, shape), out_view(w, row), out_view(b, row), out_view(out, shape),
                out_view(mean, column), out_view(var, column), kind(d), kind(eps))


@numba.njit(cache=True, error_model="numpy", nogil=True)  # x / 0 is inf or nan, as numpy's
def _layer_norm(x, w, b, out, mean, var, d, eps):
    """mean = sum(x) / d, c = x + (-mean), var = sum(c * c) / d, out = ((c / sqrt(var + eps)) * w) + b per row."""
    rows, n = x.shape
    squares = np.empty(n, x.dtype)
    for i in range(rows):
        m = _row_sum(x[i]) / d
        negative = -m
        for j in range(n):
            c = x[i, j] + negative
            out[i, j] = c
            squares[j] = c * c
        v = _row_sum(squares) / d
        std = np.sqrt(v + eps)
        mean[i] = m
        var[i] = v
        for j in range(n):
            out[i, j] = ((out[i, j] / std) * w[j]) + b[j]


def layer_norm_backward(g, x, w, mean, std, half_power, grad_c, grad_mean, grad_w, grad_b):
    rows = mean.size
    d = grad_c.size // max(rows, 1)
    shape = (rows, d)
    kind = grad_c.array.dtype.type
    row, column = (d,), (rows,)
    _layer_norm_backward(out_view(g, shape), out_view(x, shape), out_view(w, row), out_view(mean, column),
                         out_view(std, column), out_view(half_power, column), out_view(grad_c, shape),
                         out_view(grad_mean, column), out_view(grad_w, row), out_view(grad_b, row), kind(d))


@numba.njit(cache=True, error_model="numpy", nogil=True)  # x / 0 is inf or nan, as numpy's
def _layer_norm_backward(g, x, w, mean, std, half_power, grad_c, grad_mean, grad_w, grad_b, d):
    """The Tensor-op gradient of the LayerNorm sequence, per row (s: std, c = x + (-mean)):
    p1 = (g * w) / s; the std's adjoint sum((-(g * w)) * ((c / s) / s)); the variance's
    (that * half_power) / d; grad_c = (p1 + var_adj * c) + var_adj * c (the three partials of c in the
    walk's order); grad_mean = sum(-grad_c) / d (the mean's adjoint over d, which x gets broadcast);
    grad_w = sum over rows of g * (c / s), grad_b of g (rows in order, from 0.0)."""
    rows, n = g.shape
    zero = g.dtype.type(0)
    scratch = np.empty(n, g.dtype)
    for j in range(n):
        grad_w[j] = zero
        grad_b[j] = zero
    for i in range(rows):
        s = std[i]
        negative = -mean[i]
        for j in range(n):
            c = x[i, j] + negative
            scaled = g[i, j] * w[j]
            normed = c / s
            grad_c[i, j] = scaled / s
            scratch[j] = (-scaled) * (normed / s)
            grad_w[j] += g[i, j] * normed
            grad_b[j] += g[i, j]
        var_adjoint = (_row_sum(scratch) * half_power[i]) / d
        for j in range(n):
            through_var = var_adjoint * (x[i, j] + negative)
            total = (grad_c[i, j] + through_var) + through_var
            grad_c[i, j] = total
            scratch[j] = -total
        grad_mean[i] = _row_sum(scratch) / d


# --- softmax and log-softmax over the last axis of compact (R, d) arrays: the sequences' bits ----------
# Softmax.compute is max, subtract, exp, sum and divide (five passes, two temporaries); with these the
# exp stays numpy's (its SIMD exp gives the bits) and the rest is two row loops: the maximum and the
# shift (a nan in a row makes its sum, so the whole row, nan whatever the maximum; a zero maximum's
# sign cannot show, exp(+-0) being 1), then the row sum as numpy adds it (_row_sum) and the division.
# The gradients s * (g + (-sum(g * s))) and g + exp(y) * (-sum(g)) are one row loop each.

def softmax_shift(x, out, d):
    rows = out.size // d
    _softmax_shift(out_view(x, (rows, d)), out_view(out, (rows, d)))


@numba.njit(cache=True, nogil=True)
def _softmax_shift(x, out):
    rows, n = x.shape
    for i in range(rows):
        m = x[i, 0]
        for j in range(1, n):
            if x[i, j] > m:
                m = x[i, j]
        for j in range(n):
            out[i, j] = x[i, j] - m


def softmax_normalize(e, out, d):
    rows = out.size // d
    _softmax_normalize(out_view(e, (rows, d)), out_view(out, (rows, d)))


@numba.njit(cache=True, error_model="numpy", nogil=True)  # x / 0 is inf or nan, as numpy's
def _softmax_normalize(e, out):
    for i in range(e.shape[0]):
        total = _row_sum(e[i])
        for j in range(e.shape[1]):
            out[i, j] = e[i, j] / total


def softmax_backward(g, s, out, d):
    rows = out.size // d
    shape = (rows, d)
    _softmax_backward(out_view(g, shape), out_view(s, shape), out_view(out, shape))


@numba.njit(cache=True, nogil=True)
def _softmax_backward(g, s, out):
    products = np.empty(g.shape[1], g.dtype)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            products[j] = g[i, j] * s[i, j]
        negative = -_row_sum(products)
        for j in range(g.shape[1]):
            out[i, j] = s[i, j] * (g[i, j] + negative)


def log_softmax(x, out, d):
    rows = out.size // d
    shape = (rows, d)
    a, o = out_view(x, shape), out_view(out, shape)
    # the array sequence's reductions (reduce_max, reduce_sum over the last axis: the ufuncs'
    # reduce), subtractions, exp and log, on numpy arrays: no array of this layer per step; the
    # exp goes to a buffer from the cache (a fresh one would be page faults on every call)
    np.subtract(a, np.maximum.reduce(a, axis=(1,), keepdims=True), out=o)
    exps = Array(rows * d, out.dtype)
    e = out_view(exps, shape)
    np.exp(o, out=e)
    np.subtract(o, np.log(np.add.reduce(e, axis=(1,), keepdims=True)), out=o)


def log_softmax_backward(g, y, out, d):
    rows = out.size // d
    shape = (rows, d)
    g_rows, o = out_view(g, shape), out_view(out, shape)
    total = np.add.reduce(g_rows, axis=(1,))
    np.exp(out_view(y, shape), out=o)
    _log_softmax_backward(g_rows, o, total, o)


@numba.njit(cache=True, nogil=True)
def _log_softmax_backward(g, e, total, out):
    for i in range(g.shape[0]):
        negative = -total[i]
        for j in range(g.shape[1]):
            out[i, j] = g[i, j] + e[i, j] * negative


def nll_loss_backward(ids, g, out, classes):
    idx = class_ids(ids, classes)
    grad = out_view(out, (idx.size, classes))
    grad.fill(0)
    grad[np.arange(idx.size), idx] = _nll_value(g, idx.size)


def _nll_value(g, batch: int):
    """NLLLossGrad's -(g / B): numpy's divide and negate in g's dtype, as the array layer's (the
    value both nll_loss_backward and log_softmax_nll_backward put at the labels)."""
    return np.negative(np.divide(read(g).reshape(()), batch))


def log_softmax_nll_backward(ids, g, y, out, classes):
    idx = class_ids(ids, classes)
    shape = (idx.size, classes)
    o = out_view(out, shape)
    # the rows' sums: numpy adds NLLLossGrad's value and zeros to value + 0
    value = _nll_value(g, idx.size)
    np.exp(out_view(y, shape), out=o)  # numpy's exp, as log_softmax_backward's
    _log_softmax_nll_backward(o, idx, value, np.negative(value + o.dtype.type(0)), o)


@numba.njit(cache=True, nogil=True)
def _log_softmax_nll_backward(e, idx, value, negative, out):
    zero = out.dtype.type(0)
    for i in range(e.shape[0]):
        target = idx[i]
        for j in range(e.shape[1]):
            x = e[i, j] * negative
            # the one-hot row's element plus x: value + x at the class, 0 + x (-0.0 becomes 0.0) elsewhere
            out[i, j] = value + x if j == target else x + zero


def one_hot_rows(indices, out, n):
    idx = class_ids(indices, n)
    dest = out_view(out, (idx.size, n))
    dest.fill(0)
    dest[np.arange(idx.size), idx] = 1



# --- prepared launches for a compiled step's replay ------------------------------------------------

_REDUCE_UFUNC = {"reduce_sum": np.add, "reduce_max": np.maximum, "reduce_min": np.minimum}


def _prepare_elementwise(p, form: str, args: tuple):
    """The launch of a primitive's kernel over fixed buffers (HostScalars read at each run)."""
    x = read(args[0])
    o = out_view(args[-1], x.shape)
    if form == "unary":
        if p.name in _PREPARE_INTO:
            return _PREPARE_INTO[p.name](x, o)
        if p.into is not None:
            return functools.partial(p.into, x, o)
        return functools.partial(p.ufunc, x, out=o) if p.ufunc is not None else None
    if form == "ewise":
        if p.ufunc is None:
            return None
        return functools.partial(p.ufunc, x, read(args[1]), out=o, casting="unsafe")
    val = args[1]
    if form == "scalar" and p.scalar_into is not None:
        if isinstance(val, HostScalar):
            return lambda: p.scalar_into(x, val.value, o)
        return functools.partial(p.scalar_into, x, val, o)
    if p.ufunc is None:
        return None
    if isinstance(val, HostScalar):
        if form == "scalar":
            return lambda: p.ufunc(x, val.value, out=o, casting="unsafe")
        return lambda: p.ufunc(val.value, x, out=o, casting="unsafe")
    first, second = (x, val) if form == "scalar" else (val, x)
    return functools.partial(p.ufunc, first, second, out=o, casting="unsafe")


def prepare(name: str, args: tuple):
    """A zero-argument launch doing what kernel `name` does on `args`, with its views built
    once, or None when the kernel gains nothing (it then runs as it is). HostScalar
    arguments are read when the launch runs."""
    kernel = globals().get(name)
    p, form = getattr(kernel, "primitive", None), getattr(kernel, "form", "")  # tagged together
    if p is not None:
        return _prepare_elementwise(p, form, args)
    if name == "ewise_where":
        cond, a, b, out = args
        c = read(cond)
        return functools.partial(_where_into, c, read(a), read(b), out_view(out, c.shape))
    if name == "compact":
        a, out, shape, strides, offset = args
        return functools.partial(np.copyto, out_view(out, shape), strided_view(a, shape, strides, offset),
                                 casting="unsafe")
    if name == "ewise_setitem":
        a, out, shape, strides, offset = args
        return functools.partial(np.copyto, strided_view(out, shape, strides, offset), out_view(a, shape),
                                 casting="unsafe")
    if name == "scalar_setitem" and not isinstance(args[1], HostScalar):
        size, val, out, shape, strides, offset = args
        return functools.partial(strided_view(out, shape, strides, offset).fill, val)
    if name == "matmul_accumulate":
        return _accumulate_launch(*args)
    if name == "matmul":
        a, b, out, m, n, p, *rest = args
        operands = matmul_operands(a, b, m, n, p, rest[0] if rest else 1, copy=False)
        if operands is None:
            return None
        x, y, lead = operands
        return functools.partial(np.matmul, x, y, out=out_view(out, lead + (m, p)))
    if name in _OPTIMIZER_LOOPS:
        return _prepare_optimizer(name, args)
    if name in _REDUCE_UFUNC:
        a, out, reduce_size = args
        x, first = reduction_blocks(a, reduce_size)
        dest = out_view(out, x.shape[:first])
        columns = _as_columns(x, first, dest) if name == "reduce_sum" else None
        if columns is not None:
            return functools.partial(_column_sums, *columns)
        return functools.partial(_REDUCE_UFUNC[name].reduce, x, axis=tuple(range(first, x.ndim)), out=dest,
                                 dtype=dest.dtype)
    return None


# --- fused optimizer updates (optional kernels of the interface: `OPTIONAL_KERNELS`) --------------
#
# One pass over a parameter, its gradient and its optimizer state doing, element by element,
# exactly the float operations the optimizer's op-by-op update does (same order, each rounded
# to the parameter's dtype: numba neither contracts a * b + c into an FMA nor reassociates
# without fastmath, and its sqrt and division are IEEE's, like numpy's; error_model="numpy"
# makes x / 0 inf or nan as in numpy, not an exception). One freedom IEEE 754 leaves: a nan's
# sign bit. The ops compute p - q as p + (-q) and LLVM folds that into p - q, so where the
# update is nan (a diverged step) the sign of that nan may differ from the ops'. The hyperparameters
# reach the loop as one small array of the parameter's dtype (`h`): each Python float rounded
# to that dtype, as numpy rounds a Python float next to a float32 array (NEP 50). So the bits
# are those of the op sequence.

@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sgd_loop(p, g, u, h, l2, mode, nesterov):
    lr, momentum, damping, weight_decay = h[0], h[1], h[2], h[3]
    for i in range(p.size):
        x = p[i]
        d = g[i]
        if l2:
            d = d + x * weight_decay
        if mode == 0:  # PyTorch's rule without momentum: no buffer
            step = d
        else:
            w = d if mode == 1 else u[i] * momentum + d * damping
            u[i] = w
            step = d + w * momentum if nesterov else w
        p[i] = x + -(step * lr)  # the ops' a - b


def sgd_step_many(params, grads, states, lr, momentum, damping, weight_decay, l2, mode, nesterov):
    """sgd_step on each (param, grad, state) in turn, in one compiled call where all of them are whole
    compact buffers of one dtype (a model's parameters, gradients and buffers); else one by one."""
    operands = params + grads + states
    dtype = params[0][0].array.dtype
    if not all(op[2] is None and op[3] == 0 and op[0].size == math.prod(op[1]) and op[0].array.dtype == dtype
               for op in operands):
        for p, g, u in zip(params, grads, states):
            sgd_step(p, g, u, lr, momentum, damping, weight_decay, l2, mode, nesterov)
        return
    arrays = [op[0].array for op in operands]
    n = len(params)
    _sgd_many(tuple(arrays[:n]), tuple(arrays[n:2 * n]), tuple(arrays[2 * n:]),
              np.array((lr, momentum, damping, weight_decay), dtype=dtype), l2, mode, nesterov)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sgd_many(ps, gs, us, h, l2, mode, nesterov):
    for k in range(len(ps)):
        _sgd_loop(ps[k], gs[k], us[k], h, l2, mode, nesterov)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _adam_loop(p, g, m, v, h, l2, decoupled):
    lr, beta1, beta2, one_minus_beta1, one_minus_beta2 = h[0], h[1], h[2], h[3], h[4]
    bias1, bias2, eps, weight_decay, decay = h[5], h[6], h[7], h[8], h[9]
    for i in range(p.size):
        x = p[i]
        if decoupled:  # AdamW: theta * (1 - lr * weight_decay) first
            x = x * decay
        d = g[i]
        if l2:  # Adam: weight decay added to the gradient
            d = d + x * weight_decay
        a = m[i] * beta1 + d * one_minus_beta1
        b = v[i] * beta2 + d * d * one_minus_beta2
        m[i] = a
        v[i] = b
        p[i] = x + -(a / bias1 * lr / (np.sqrt(b / bias2) + eps))


def _flat_operands(operands):
    """(flat arrays the loop works on, write-back pairs): a contiguous operand as a flat view,
    any other as a contiguous copy written back after the loop (same values, another layout)."""
    flat, back = [], []
    seen: dict = {}
    for op in operands:
        handle, shape, strides, offset = op
        if strides is None:  # compact: its elements from offset on, in order
            flat.append(handle.array[offset:offset + math.prod(shape)])
            continue
        key = (id(handle), tuple(shape), tuple(strides), offset)
        if key in seen:  # the same view again (the parameter standing in for unused state): one copy
            flat.append(seen[key])
            continue
        x = read(op)
        if x.flags.c_contiguous:
            flat.append(x.reshape(-1))
        else:
            copy = np.ascontiguousarray(x)
            flat.append(copy.reshape(-1))
            back.append((x, copy))
        seen[key] = flat[-1]
    return flat, back


def _run_update(loop, operands, scalars, flags) -> None:
    if all(op[2] is None and op[3] == 0 and op[0].size == math.prod(op[1]) for op in operands):
        # whole compact buffers (every parameter, gradient and state of a plain model): as they are
        loop(*[op[0].array for op in operands], np.array(scalars, dtype=operands[0][0].array.dtype), *flags)
        return
    arrays, back = _flat_operands(operands)
    loop(*arrays, np.array(scalars, dtype=arrays[0].dtype), *flags)
    for dest, copy in back:
        np.copyto(dest, copy)


def sgd_step(param, grad, u, lr, momentum, damping, weight_decay, l2, mode, nesterov):
    """SGD's update of one parameter in place (see `backend_ndarray.functions.sgd_step` for the
    arguments); u is written unless mode is 0."""
    _run_update(_sgd_loop, (param, grad, u), (lr, momentum, damping, weight_decay), (l2, mode, nesterov))


def adam_step(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, bias1, bias2, eps,
              weight_decay, decay, l2, decoupled):
    """Adam's (or AdamW's) update of one parameter and its moments in place (see
    `backend_ndarray.functions.adam_step` for the arguments)."""
    _run_update(_adam_loop, (param, grad, m, v), (lr, beta1, beta2, one_minus_beta1, one_minus_beta2, bias1, bias2,
                                                  eps, weight_decay, decay), (l2, decoupled))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _rmsprop_loop(p, g, v, a, b, h, l2, centered, momentum):
    lr, alpha, one_minus_alpha, eps, weight_decay, mu = h[0], h[1], h[2], h[3], h[4], h[5]
    for i in range(p.size):
        x = p[i]
        d = g[i]
        if l2:
            d = d + x * weight_decay
        s = v[i] * alpha + d * d * one_minus_alpha
        v[i] = s
        if centered:
            c = a[i] * alpha + d * one_minus_alpha
            a[i] = c
            denominator = np.sqrt(s + -(c * c)) + eps
        else:
            denominator = np.sqrt(s) + eps
        if momentum:
            w = b[i] * mu + d / denominator
            b[i] = w
            p[i] = x + -(w * lr)
        else:
            p[i] = x + -(d / denominator * lr)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _adagrad_loop(p, g, total, h, l2):
    clr, eps, weight_decay = h[0], h[1], h[2]
    for i in range(p.size):
        x = p[i]
        d = g[i]
        if l2:
            d = d + x * weight_decay
        t = total[i] + d * d
        total[i] = t
        p[i] = x + -(d / (np.sqrt(t) + eps) * clr)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _adadelta_loop(p, g, v, u, h, l2):
    lr, rho, one_minus_rho, eps, weight_decay = h[0], h[1], h[2], h[3], h[4]
    for i in range(p.size):
        x = p[i]
        d = g[i]
        if l2:
            d = d + x * weight_decay
        s = v[i] * rho + d * d * one_minus_rho
        v[i] = s
        delta = np.sqrt(u[i] + eps) / np.sqrt(s + eps) * d
        u[i] = u[i] * rho + delta * delta * one_minus_rho
        p[i] = x + -(delta * lr)


def rmsprop_step(param, grad, v, a, b, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, l2, centered,
                 use_momentum):
    """RMSprop's update in place (see `backend_ndarray.functions.rmsprop_step`)."""
    _run_update(_rmsprop_loop, (param, grad, v, a, b), (lr, alpha, one_minus_alpha, eps, weight_decay, momentum),
                (l2, centered, use_momentum))


def adagrad_step(param, grad, total, clr, eps, weight_decay, l2):
    """Adagrad's update in place (see `backend_ndarray.functions.adagrad_step`)."""
    _run_update(_adagrad_loop, (param, grad, total), (clr, eps, weight_decay), (l2,))


def adadelta_step(param, grad, v, u, lr, rho, one_minus_rho, eps, weight_decay, l2):
    """Adadelta's update in place (see `backend_ndarray.functions.adadelta_step`)."""
    _run_update(_adadelta_loop, (param, grad, v, u), (lr, rho, one_minus_rho, eps, weight_decay), (l2,))


# kernel name -> (loop, how many arrays lead its arguments, how many hyperparameters follow)
_OPTIMIZER_LOOPS: dict = {"sgd_step": (_sgd_loop, 3, 4), "adam_step": (_adam_loop, 4, 10),
                          "rmsprop_step": (_rmsprop_loop, 5, 6), "adagrad_step": (_adagrad_loop, 3, 3),
                          "adadelta_step": (_adadelta_loop, 4, 5)}


def _prepare_optimizer(name: str, args: tuple):
    """A fused optimizer update over fixed buffers: the flat views made once, the
    hyperparameters (HostScalars: lr, betas, bias corrections) read and rounded at each run;
    None unless every operand is contiguous."""
    loop, arrays, scalars = _OPTIMIZER_LOOPS[name]
    views = [read(a) for a in args[:arrays]]
    if not all(x.flags.c_contiguous for x in views):
        return None
    flat = [x.reshape(-1) for x in views]
    values, flags = args[arrays:arrays + scalars], args[arrays + scalars:]
    h = np.array([0.0 if isinstance(s, HostScalar) else s for s in values], dtype=flat[0].dtype)
    launch = functools.partial(loop, *flat, h, *flags)
    hosts = [(i, s) for i, s in enumerate(values) if isinstance(s, HostScalar)]
    if not hosts:
        return launch

    def run():
        for i, scalar in hosts:
            h[i] = scalar.value  # rounded to h's dtype as np.array rounds it
        launch()
    return run
