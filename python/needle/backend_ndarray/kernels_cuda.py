"""Device `cuda`: the kernel interface (`interface.py`) on an NVIDIA GPU, with numba-cuda.

Data lives in device memory for the whole life of an array: kernels read their operands
there and write their results there, and only `to_numpy` (hence `NDArray.numpy()`) and
the index kernels' bounds checks (one number) copy anything back to the host.

How the module is organised
---------------------------
1. numba-cuda, the simulator, and `unavailable_reason()`.
2. Launch geometry: block shapes and grid caps (results never depend on them).
3. Buffers (`Array` over a numba device array), transfers, `__cuda_array_interface__`, DLPack.
4. The one strided-index helper (flat row-major index -> element offset of a view), and the
   host-side description of operands it reads.
5. Elementwise kernels, generated from a table of scalar device functions (one kernel per
   operation and operand count, compiled on first use and cached). Each public elementwise
   kernel carries `.op`/`.form`, from which needle.compile fuses chains of them into one
   generated kernel over the same device functions (needle/compile/fusion_cuda.py).
6. Layout kernels: compact, ewise_setitem, scalar_setitem (the same helper, gather or scatter).
7. Reductions over the trailing block of each output element: a shared-memory tree per row.
8. Matmul: shared-memory tiles and register blocks (lecture 12); cuBLAS through CuPy for large
   float products.
9. Gather / scatter on int64 indices, with the index kernels' bounds checks.

Every kernel loops grid-stride (`for i in range(first thread, n, all threads)`), so one
launch covers any size whatever the grid; on a GPU the grid is large enough for one thread
per element. Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, used by tests/cuda)
each CUDA thread is a Python thread, so the geometry there is a few small blocks: the
kernels and their edge handling are the same.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from .._packaging import install_hint
from ..dtypes import HostScalar
from ..primitives import PRIMITIVES, scalar_function
from . import host_buffer
from .interface import elementwise_kernels

# --- 1. numba-cuda and the simulator ---------------------------------------------------------

_IMPORT_ERROR = ""
try:
    if importlib.util.find_spec("numba_cuda") is None:  # numba's own built-in numba.cuda is deprecated
        raise ImportError("numba-cuda is not installed")
    import numba
    from numba import cuda
    from numba.cuda.core import config as _cuda_config
except ImportError as err:
    cuda = None  # type: ignore[assignment]  # numba-cuda is optional: the device reports it unavailable
    _IMPORT_ERROR = str(err)

SIMULATED: bool = cuda is not None and bool(_cuda_config.ENABLE_CUDASIM)

__device_name__ = "cuda"
__tile_size__ = 4  # the course's; matmul_tiled is the cpu device's extra, the tiles below are TILE


def unavailable_reason() -> str:
    """Empty when the device can run here, else a sentence naming what is missing."""
    if cuda is None:
        if "not installed" in _IMPORT_ERROR:
            return f"numba-cuda is not installed ({install_hint('cuda')})"
        return f"numba-cuda could not be imported ({_IMPORT_ERROR})"
    if not cuda.is_available():
        return "no CUDA GPU found (numba.cuda.is_available() is False)"
    return ""


def _device(fn):
    """A numba device function (the plain function where numba-cuda is missing: never launched)."""
    return cuda.jit(device=True)(fn) if cuda is not None else fn


# Math inside device functions. Under the simulator device code runs as Python, whose math
# module raises (log(0), sqrt(-1), exp(1000)) where CUDA returns -inf, nan and inf; numpy's
# functions on numpy scalars return what CUDA does.
_exp: Callable
_log: Callable
_log1p: Callable
_sqrt: Callable
_tanh: Callable
_sin: Callable
_cos: Callable
if SIMULATED:
    _exp, _log, _log1p, _sqrt, _tanh, _sin, _cos = np.exp, np.log, np.log1p, np.sqrt, np.tanh, np.sin, np.cos
else:
    _exp, _log, _log1p, _sqrt, _tanh, _sin, _cos = math.exp, math.log, math.log1p, math.sqrt, math.tanh, math.sin, \
        math.cos


# --- 2. launch geometry ----------------------------------------------------------------------

@dataclass
class Geometry:
    """How kernels are launched. Results never depend on it; tests change it to reach the
    grid-stride loops, several blocks per launch, and tile and block edges."""

    threads: int  # threads per block of the elementwise, layout and index kernels
    max_blocks: int  # grid cap: past it, each thread loops over more elements
    reduce_threads: int  # threads per reduction block (lanes x rows), a power of two
    min_lanes: int  # fewest threads reducing one row, a power of two
    tile: int  # matmul blocks are tile x tile threads...
    per_thread: int  # ...each computing per_thread x per_thread outputs
    depth: int  # matmul: inner-dimension elements per shared-memory slice
    cublas_min_work: int  # batch*m*n*p from which float products go to cuBLAS (when CuPy is installed)


GEOMETRY = (Geometry(threads=4, max_blocks=2, reduce_threads=8, min_lanes=2, tile=2, per_thread=4, depth=8,
                     cublas_min_work=1 << 18)
            if SIMULATED else
            Geometry(threads=256, max_blocks=65535, reduce_threads=256, min_lanes=32, tile=16, per_thread=4, depth=16,
                     cublas_min_work=1 << 18))


def launch(kernel, blocks, threads, *args) -> None:
    """Every launch goes through here (so a checker can see each kernel and its argument types)."""
    kernel[blocks, threads](*args)


def blocks(n: int, per_block: int) -> int:
    return max(1, min(-(-n // per_block), GEOMETRY.max_blocks))


# --- 3. buffers and transfers ----------------------------------------------------------------

class Array:
    """A flat buffer of `size` elements of one storage dtype in device memory (a numba device array)."""

    __slots__ = ("array", "size", "dtype", "__weakref__")  # weakly referenced by needle.compile

    def __init__(self, size: int, dtype: str = "float32"):
        self.array = cuda.device_array(size, dtype=np.dtype(dtype))
        self.size = size
        self.dtype = dtype

    def ptr(self) -> int:
        """Device address of the buffer: identical for every view of it."""
        return _pointer(self.array)

    @property
    def __cuda_array_interface__(self) -> dict:
        """The buffer as a flat array for CuPy, PyTorch and numba (no copy)."""
        return cuda_array_interface(self, (self.size,), None, 0)


def _pointer(array) -> int:
    if SIMULATED:  # the simulator's device memory is a numpy array in host memory
        return array.ctypes.data
    return array.__cuda_array_interface__["data"][0] or 0


def to_numpy(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    """Gather the view on the device, then copy that compact block to the host."""
    shape = tuple(shape)
    n = math.prod(shape)
    if n == 0:
        return np.empty(shape, dtype=a.dtype)
    if tuple(strides) == compact_strides(shape):  # a contiguous range: copy it as it is
        return a.array[offset:offset + n].copy_to_host().reshape(shape)
    block = Array(n, a.dtype)
    compact(a, block, shape, strides, offset)
    return block.array.copy_to_host().reshape(shape)


def from_numpy(a: Any, out: Array) -> None:
    """Copy the host array `a` (out.size elements, any shape) to the device, cast to out's dtype."""
    if out.size:
        out.array.copy_to_device(np.ascontiguousarray(np.asarray(a).reshape(-1), dtype=out.dtype))


def fill(out: Array, val: Any) -> None:
    scalar_setitem(out.size, val, out, (out.size,), (1,), 0)


def cuda_array_interface(a: Array, shape: Sequence[int], strides: Optional[Sequence[int]], offset: int) -> dict:
    """The CUDA Array Interface (version 3) of a view of `a`; strides None when compact."""
    dtype = np.dtype(a.dtype)
    return {
        "shape": tuple(shape),
        "strides": None if strides is None else tuple(s * dtype.itemsize for s in strides),
        "typestr": dtype.str,
        "data": (a.ptr() + offset * dtype.itemsize, False),
        "version": 3,
        "stream": None,  # kernels run on the default stream, as numba's own device arrays say
    }


class _CudaView:
    """An object exposing a view of a buffer through the CUDA Array Interface; it keeps the
    buffer alive for as long as a consumer (CuPy, PyTorch) holds it."""

    def __init__(self, a: Array, shape, strides, offset):
        self.buffer = a
        self.__cuda_array_interface__ = cuda_array_interface(a, shape, strides, offset)


@functools.lru_cache(maxsize=None)
def _cupy():
    """CuPy when it is installed (it gives cuBLAS and DLPack export), else None."""
    if SIMULATED or importlib.util.find_spec("cupy") is None:
        return None
    import cupy

    return cupy


def dlpack(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int, *args, **kwargs):
    """A DLPack capsule of the view, without a copy (through CuPy: numba's device arrays export none)."""
    cupy = _cupy()
    if cupy is None:
        raise TypeError(
            "DLPack export of a cuda array needs CuPy (numba-cuda's device arrays have no __dlpack__); "
            "without it, share the array through __cuda_array_interface__, e.g. "
            "torch.as_tensor(x, device='cuda') or cupy.asarray(x)"
        )
    return cupy.asarray(_CudaView(a, shape, strides, offset)).__dlpack__(*args, **kwargs)


def dlpack_device(a: Array) -> Tuple[int, int]:
    """(kDLCUDA, device id): where the DLPack capsule's memory lives."""
    return 2, 0 if SIMULATED else cuda.get_current_device().id


# --- 4. the strided-index helper and operand layouts -------------------------------------------

@_device
def strided_offset(i, shape, strides, offset):
    """Element offset of the i-th element (row-major) of the view (shape, strides, offset)."""
    if len(shape) == 1:
        return offset + i * strides[0]
    at = offset
    for d in range(len(shape) - 1, -1, -1):
        at += (i % shape[d]) * strides[d]
        i //= shape[d]
    return at


@functools.lru_cache(maxsize=4096)
def compact_strides(shape: tuple) -> tuple:
    stride, out = 1, []
    for n in reversed(shape):
        out.append(stride)
        stride *= n
    return tuple(reversed(out))


def view_of(operand, shape: Optional[tuple] = None) -> tuple:
    """(buffer, shape, strides, offset) of an operand; a bare buffer is read compact as `shape`
    (default: flat)."""
    if isinstance(operand, Array):
        shape = (operand.size,) if shape is None else tuple(shape)
        return operand, shape, compact_strides(shape), 0
    buf, shape, strides, offset = operand
    shape = tuple(shape)
    return buf, shape, compact_strides(shape) if strides is None else tuple(strides), offset


def _views(operands) -> tuple:
    """(shape, views) for operands of one shape; bare buffers take the shape of the first view."""
    shape = next((tuple(x[1]) for x in operands if not isinstance(x, Array)), None)
    views = [view_of(x, shape) for x in operands]
    return views[0][1], views


def collapse(shape: tuple, *strides: tuple) -> tuple:
    """(shape, [strides per operand]) with size-1 axes dropped and neighbouring axes that every
    operand steps through as one merged: less index arithmetic per element, and fewer
    compiled variants (one per number of axes)."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    if not dims:
        return (1,), [(0,)] * len(strides)
    merged = [dims[0]]
    for n, inner in dims[1:]:
        outer_n, outer = merged[-1]
        if all(o == s * n for o, s in zip(outer, inner)):
            merged[-1] = (outer_n * n, inner)
        else:
            merged.append((n, inner))
    return tuple(n for n, _ in merged), [tuple(st[k] for _, st in merged) for k in range(len(strides))]


def scalar_value(val):
    """A kernel's scalar argument: a compiled step's HostScalar is read now."""
    return val.value if isinstance(val, HostScalar) else val


def typed_scalar(val, dtype: str):
    """`val` in the operand's precision where numpy would cast it (a Python number next to a
    float array takes the array's float type), so kernels compute in float32 for float32 data."""
    if dtype in ("float32", "float64") and not isinstance(val, (bool, np.bool_)):
        return np.dtype(dtype).type(val)
    if dtype == "int64" and isinstance(val, (int, np.integer)) and not isinstance(val, bool):
        return np.int64(val)
    return val


# --- 5. elementwise kernels from a table of scalar functions -------------------------------------

def _maximum(x, y):
    return x if (x >= y or x != x) else y  # numpy's rule: nan wins, ties keep x


def _minimum(x, y):
    return x if (x <= y or x != x) else y


# the functions a primitive's `expr` calls, as device code calls them
_EXPR_FUNCTIONS = {"exp": _exp, "log": _log, "log1p": _log1p, "sqrt": _sqrt, "tanh": _tanh, "sin": _sin, "cos": _cos,
                   "abs": abs,
                   "maximum": _device(_maximum), "minimum": _device(_minimum)}

# name -> scalar function of the operands' elements (and, for scalar kernels, the scalar last):
# each primitive's expression (and its reflected form), and a few operations of the kernels below
_OPS = {
    "identity": lambda x: x,
    "rsqrt": lambda x: 1 / _sqrt(x),
    "square": lambda x: x * x,
    "reciprocal": lambda x: 1 / x,
    "where": lambda c, x, y: x if c else y,
}
for _p in PRIMITIVES:
    _OPS[_p.name] = scalar_function(_p, _EXPR_FUNCTIONS)
    if _p.reflected:
        _OPS[_p.reflected] = scalar_function(_p, _EXPR_FUNCTIONS, reflected=True)


@functools.lru_cache(maxsize=None)
def device_op(name: str):
    return _device(_OPS[name])


@functools.lru_cache(maxsize=None)
def _map_kernel(form: str, name: str):
    """The kernel applying operation `name` element by element; `form` is the operand count:
    "1" f(a), "1s" f(a, scalar), "2" f(a, b), "3" f(c, a, b). Each operand is read through
    the strided helper with its own strides over the common (collapsed) shape."""
    f = device_op(name)
    at = strided_offset

    kernel: Callable  # one signature per form
    if form == "1":
        def kernel(out, n, shape, a, a_off, a_st):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[i] = f(a[at(i, shape, a_st, a_off)])
    elif form == "1s":
        def kernel(out, n, shape, a, a_off, a_st, val):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[i] = f(a[at(i, shape, a_st, a_off)], val)
    elif form == "2":
        def kernel(out, n, shape, a, a_off, a_st, b, b_off, b_st):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[i] = f(a[at(i, shape, a_st, a_off)], b[at(i, shape, b_st, b_off)])
    else:
        def kernel(out, n, shape, c, c_off, c_st, a, a_off, a_st, b, b_off, b_st):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[i] = f(c[at(i, shape, c_st, c_off)], a[at(i, shape, a_st, a_off)], b[at(i, shape, b_st, b_off)])
    kernel.__name__ = f"map{form}_{name}"
    return cuda.jit(kernel)


def _map(name: str, out: Array, operands: tuple, *scalar) -> None:
    """out[i] = op(operands at i [, scalar]) over the operands' common shape."""
    shape, views = _views(operands)
    n = math.prod(shape)
    if n == 0:
        return
    shape, strides = collapse(shape, *(v[2] for v in views))
    args = [x for v, st in zip(views, strides) for x in (v[0].array, v[3], st)]
    form = f"{len(operands)}{'s' if scalar else ''}"
    launch(_map_kernel(form, name), blocks(n, GEOMETRY.threads), GEOMETRY.threads, out.array, n, shape, *args,
            *scalar)


# --- the primitives' kernels, one family per form ---------------------------------------------------

def _ewise(p):
    def kernel(a: Any, b: Any, out: Array) -> None:
        _map(p.name, out, (a, b))
    return kernel


def _scalar(p):
    def kernel(a: Any, val: Any, out: Array) -> None:
        _map(p.name, out, (a,), typed_scalar(scalar_value(val), _dtype_of(a)))
    return kernel


def _reverse(p):
    def kernel(a: Any, val: Any, out: Array) -> None:
        _map(p.reflected, out, (a,), typed_scalar(scalar_value(val), _dtype_of(a)))
    return kernel


def _unary(p):
    def kernel(a: Any, out: Array) -> None:
        _map(p.name, out, (a,))
    return kernel


def _describe(kernel: Callable, op: Optional[str], form: str) -> Callable:
    """Tag one of the kernels below with what it computes, for needle.compile's fusion (the
    primitives' kernels carry `.primitive` and `.form`): `op` is the `_OPS` entry it applies
    (None where it depends on the operands: see `abs_op`, `power_op`), `form` how it takes
    its operands -- "abs", "power", "where" f(c, a, b), "compact", "setitem"."""
    kernel.op, kernel.form = op, form  # type: ignore[attr-defined]  # tags, read with getattr (op_of)
    return kernel


def op_of(kernel) -> Optional[str]:
    """The `_OPS` entry a tagged kernel applies (for fusion)."""
    p = getattr(kernel, "primitive", None)
    if p is not None:
        return p.reflected if kernel.form == "reverse" else p.name
    return getattr(kernel, "op", None)


def _dtype_of(operand) -> str:
    return operand.dtype if isinstance(operand, Array) else operand[0].dtype


globals().update(elementwise_kernels(_ewise, _scalar, _reverse, _unary))

# exponents computed by a cheaper (and exact) function than pow, as numpy does: 0.5 and -0.5
# also keep numpy's edges (sqrt(-0) = -0, sqrt(-inf) = nan)
_POWER_SHORTCUTS = {0.5: "sqrt", -0.5: "rsqrt", 2: "square", -1: "reciprocal", 1: "identity"}
_FLOAT_ONLY_SHORTCUTS = ("sqrt", "rsqrt", "reciprocal")


def power_op(val: Any, dtype: str) -> Tuple[str, tuple]:
    """(operation, scalar arguments) computing x ** val for x of `dtype`."""
    shortcut = _POWER_SHORTCUTS.get(val) if not isinstance(val, bool) else None
    if shortcut in _FLOAT_ONLY_SHORTCUTS and dtype not in ("float32", "float64"):
        shortcut = None
    if shortcut is not None:
        return shortcut, ()
    return "pow", (typed_scalar(val, dtype),)


def scalar_power(a: Any, val: Any, out: Array) -> None:
    """a ** val; -0.5 is 1 / sqrt(a), as 0.5 is sqrt(a) (PyTorch's edges: -inf at -0, nan at -inf)."""
    op, scalar = power_op(scalar_value(val), _dtype_of(a))
    _map(op, out, (a,), *scalar)


def abs_op(dtype: str) -> str:
    return "identity" if dtype == "bool" else "abs"  # |bool| is the bool


def ewise_abs(a: Any, out: Array) -> None:  # replaces the table's: |bool| is the bool itself
    _map(abs_op(_dtype_of(a)), out, (a,))


def ewise_where(cond: Any, a: Any, b: Any, out: Array) -> None:
    _map("where", out, (cond, a, b))


_describe(scalar_power, None, "power")
_describe(ewise_abs, None, "abs")
_describe(ewise_where, "where", "where")


# --- 6. layout: compact and setitem (the strided helper, gathering or scattering) ---------------

@functools.lru_cache(maxsize=None)
def _scatter_kernel(from_scalar: bool):
    """out[view element i] = a[i] (compact source) or = val: one thread per view element."""
    at = strided_offset
    if from_scalar:
        def kernel(out, n, shape, st, off, val):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[at(i, shape, st, off)] = val
    else:
        def kernel(out, n, shape, st, off, a):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                out[at(i, shape, st, off)] = a[i]
    kernel.__name__ = "scatter_scalar" if from_scalar else "scatter"
    return cuda.jit(kernel)


def compact(a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
    """Gather the strided view of `a` into `out` (cast to out's dtype): elementwise identity."""
    _map("identity", out, ((a, tuple(shape), tuple(strides), offset),))


def _scatter(out: Array, shape, strides, offset, source) -> None:
    n = math.prod(shape)
    if n == 0:
        return
    shape, (strides,) = collapse(tuple(shape), tuple(strides))
    launch(_scatter_kernel(not isinstance(source, Array)), blocks(n, GEOMETRY.threads), GEOMETRY.threads,
            out.array, n, shape, strides, offset, source.array if isinstance(source, Array) else source)


def ewise_setitem(a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
    """Scatter compact `a` into the strided view of `out`."""
    _scatter(out, shape, strides, offset, a)


_describe(compact, "identity", "compact")
_describe(ewise_setitem, "identity", "setitem")


def scalar_setitem(size: int, val: Any, out: Array, shape: Sequence[int], strides: Sequence[int],
                   offset: int) -> None:
    """Set every element of the strided view of `out` to `val`."""
    _scatter(out, shape, strides, offset, np.dtype(out.dtype).type(scalar_value(val)))


# --- 7. reductions: a shared-memory tree per row ------------------------------------------------

def _sum2(x, y):
    return x + y


_COMBINE = {"sum": _sum2, "max": _maximum, "min": _minimum}


def _replaces(v1, i1, v2, i2):
    """Whether (value v2 at i2) beats (v1 at i1) for argmax: nan first, then the larger value,
    then the earlier index -- a total order, so the tree may combine in any order."""
    if v1 != v1:
        return v2 != v2 and i2 < i1
    if v2 != v2:
        return True
    return v2 > v1 or (v2 == v1 and i2 < i1)


_replaces_device = _device(_replaces)


@functools.lru_cache(maxsize=None)
def _reduce_kernel(op: str, dtype: str, lanes: int, rows: int):
    """Blocks of (lanes x rows) threads reduce `rows` rows at a time: each lane folds a strided
    part of its row, then the lanes' partial results meet in a tree in shared memory.
    `dtype` is the accumulator's (the output's; the values' for argmax)."""
    at = strided_offset
    acc_type = numba.from_dtype(np.dtype(dtype))

    if op == "argmax":
        better = _replaces_device

        def kernel(out, nrows, size, shape, a, a_off, a_st, lowest):
            values = cuda.shared.array((rows, lanes), acc_type)
            where = cuda.shared.array((rows, lanes), numba.int64)
            lane, sub = cuda.threadIdx.x, cuda.threadIdx.y
            for group in range(cuda.blockIdx.x, (nrows + rows - 1) // rows, cuda.gridDim.x):
                row = group * rows + sub
                best, best_at = lowest, size  # loses to every element (index size is past the row)
                if row < nrows:
                    for j in range(lane, size, lanes):
                        v = a[at(row * size + j, shape, a_st, a_off)]
                        if better(best, best_at, v, j):
                            best, best_at = v, j
                values[sub, lane] = best
                where[sub, lane] = best_at
                cuda.syncthreads()
                half = lanes // 2
                while half > 0:
                    if lane < half and better(values[sub, lane], where[sub, lane], values[sub, lane + half],
                                              where[sub, lane + half]):
                        values[sub, lane] = values[sub, lane + half]
                        where[sub, lane] = where[sub, lane + half]
                    cuda.syncthreads()
                    half //= 2
                if lane == 0 and row < nrows:
                    out[row] = where[sub, 0]
                cuda.syncthreads()  # the next group reuses the shared arrays
    else:
        combine = _device(_COMBINE[op])

        def kernel(out, nrows, size, shape, a, a_off, a_st, init):
            partial = cuda.shared.array((rows, lanes), acc_type)
            lane, sub = cuda.threadIdx.x, cuda.threadIdx.y
            for group in range(cuda.blockIdx.x, (nrows + rows - 1) // rows, cuda.gridDim.x):
                row = group * rows + sub
                acc = init
                if row < nrows:
                    for j in range(lane, size, lanes):
                        acc = combine(acc, a[at(row * size + j, shape, a_st, a_off)])
                partial[sub, lane] = acc
                cuda.syncthreads()
                half = lanes // 2
                while half > 0:
                    if lane < half:
                        partial[sub, lane] = combine(partial[sub, lane], partial[sub, lane + half])
                    cuda.syncthreads()
                    half //= 2
                if lane == 0 and row < nrows:
                    out[row] = partial[sub, 0]
                cuda.syncthreads()  # the next group reuses the shared array
    kernel.__name__ = f"reduce_{op}_{dtype}_{lanes}x{rows}"
    return cuda.jit(kernel)


def _extreme(dtype: str, largest: bool):
    """The value no element beats in a max (largest=False) or min (largest=True) reduction."""
    if dtype == "bool":
        return np.bool_(largest)
    if dtype == "int64":
        info = np.iinfo(np.int64)
        return np.int64(info.max if largest else info.min)
    return np.dtype(dtype).type(np.inf if largest else -np.inf)


def _reduce(op: str, a: Any, out: Array, reduce_size: int) -> None:
    """Reduce each block of reduce_size elements (the operand's trailing axes) into one output."""
    if isinstance(a, Array):  # a compact buffer: contiguous blocks of reduce_size elements
        a = (a, (a.size - a.size % reduce_size if reduce_size else 0,), None, 0)
    buf, shape, strides, offset = view_of(a)
    nrows = math.prod(shape) // reduce_size if reduce_size else 0
    if nrows == 0:
        return
    shape, (strides,) = collapse(shape, strides)
    lanes = GEOMETRY.min_lanes
    while lanes < reduce_size and lanes < GEOMETRY.reduce_threads:
        lanes *= 2
    rows = max(1, GEOMETRY.reduce_threads // lanes)
    if op == "sum":
        acc_dtype, init = out.dtype, np.dtype(out.dtype).type(0)
    elif op == "argmax":
        acc_dtype, init = buf.dtype, _extreme(buf.dtype, largest=False)
    else:
        acc_dtype, init = out.dtype, _extreme(out.dtype, largest=(op == "min"))
    blocks = max(1, min(-(-nrows // rows), GEOMETRY.max_blocks))
    launch(_reduce_kernel(op, acc_dtype, lanes, rows), blocks, (lanes, rows), out.array, nrows, reduce_size,
            shape, buf.array, offset, strides, init)


def reduce_sum(a: Any, out: Array, reduce_size: int) -> None:
    """out[k] = sum of block k (int64 out for bool/int64 input)."""
    _reduce("sum", a, out, reduce_size)


def reduce_max(a: Any, out: Array, reduce_size: int) -> None:
    _reduce("max", a, out, reduce_size)


def reduce_min(a: Any, out: Array, reduce_size: int) -> None:
    _reduce("min", a, out, reduce_size)


def reduce_argmax(a: Any, out: Array, reduce_size: int) -> None:
    """out[k] = position of the first maximum in block k (the first nan if there is one)."""
    _reduce("argmax", a, out, reduce_size)


# --- 8. matmul: shared-memory tiles, or cuBLAS for large products --------------------------------

# accumulate in the output's type; bool products count in int64 (nonzero -> True on the store)
_ACCUMULATOR = {"float32": "float32", "float64": "float64", "int64": "int64", "bool": "int64"}


@functools.lru_cache(maxsize=None)
def _matmul_kernel(dtype: str, tile: int, per_thread: int, depth: int):
    """Lecture 12's matmul: shared-memory tiles, and a block of outputs per thread in registers.

    A block of tile x tile threads computes a square of S = tile * per_thread outputs of one
    product. It walks the inner dimension `depth` at a time: the threads copy an S x depth
    slice of A and a depth x S slice of B into shared memory together (zeros past the
    matrices' edges), then each thread adds the slices' products into its per_thread x
    per_thread outputs, held in registers and spaced `tile` apart (so neighbouring threads
    touch neighbouring elements). Blocks loop over the (batch, row block, column block) triples.
    """
    size = tile * per_thread
    acc_name = _ACCUMULATOR[dtype]
    acc_type = numba.from_dtype(np.dtype(acc_name))
    zero = np.dtype(acc_name).type(0)

    def kernel(out, batch, m, n, p, a, a_off, a_bs, a_rs, a_cs, b, b_off, b_bs, b_rs, b_cs):
        a_tile = cuda.shared.array((size, depth), acc_type)
        b_tile = cuda.shared.array((depth, size), acc_type)
        acc = cuda.local.array((per_thread, per_thread), acc_type)
        a_col = cuda.local.array(per_thread, acc_type)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row_blocks = (m + size - 1) // size
        col_blocks = (p + size - 1) // size
        for t in range(cuda.blockIdx.x, batch * row_blocks * col_blocks, cuda.gridDim.x):
            k = t // (row_blocks * col_blocks)
            row0 = (t // col_blocks) % row_blocks * size
            col0 = t % col_blocks * size
            a_at = a_off + k * a_bs
            b_at = b_off + k * b_bs
            for i in range(per_thread):
                for j in range(per_thread):
                    acc[i, j] = zero
            for start in range(0, n, depth):
                for r in range(ty, size, tile):
                    for c in range(tx, depth, tile):
                        if row0 + r < m and start + c < n:
                            a_tile[r, c] = a[a_at + (row0 + r) * a_rs + (start + c) * a_cs]
                        else:
                            a_tile[r, c] = zero
                for r in range(ty, depth, tile):
                    for c in range(tx, size, tile):
                        if start + r < n and col0 + c < p:
                            b_tile[r, c] = b[b_at + (start + r) * b_rs + (col0 + c) * b_cs]
                        else:
                            b_tile[r, c] = zero
                cuda.syncthreads()
                for d in range(depth):
                    for i in range(per_thread):
                        a_col[i] = a_tile[ty + i * tile, d]
                    for j in range(per_thread):
                        b_val = b_tile[d, tx + j * tile]
                        for i in range(per_thread):
                            acc[i, j] += a_col[i] * b_val
                cuda.syncthreads()  # before the next slice overwrites the tiles
            for i in range(per_thread):
                row = row0 + ty + i * tile
                for j in range(per_thread):
                    col = col0 + tx + j * tile
                    if row < m and col < p:
                        out[(k * m + row) * p + col] = acc[i, j]
    kernel.__name__ = f"matmul_tiled_{dtype}_{tile}x{per_thread}x{depth}"
    return cuda.jit(kernel)


def _matrix(operand, rows: int, cols: int) -> tuple:
    """(buffer, offset, batch stride, row stride, column stride) of a (batch,) rows x cols operand;
    a 2-D operand has batch stride 0."""
    if isinstance(operand, Array):
        return operand, 0, rows * cols, cols, 1
    buf, shape, strides, offset = view_of(operand)
    if len(strides) == 2:
        return buf, offset, 0, strides[0], strides[1]
    batch, (batch_strides,) = collapse(shape[:-2], strides[:-2])
    if len(batch) > 1:  # batch axes no single stride steps through (attention's heads): gathered
        gathered = Array(math.prod(shape), buf.dtype)
        compact(buf, gathered, shape, strides, offset)
        return gathered, 0, rows * cols, cols, 1
    return buf, offset, batch_strides[0], strides[-2], strides[-1]


def _matmul_tiled(a: tuple, b: tuple, out: Array, m: int, n: int, p: int, batch: int) -> None:
    g = GEOMETRY
    size = g.tile * g.per_thread
    blocks = batch * -(-m // size) * -(-p // size)
    launch(_matmul_kernel(out.dtype, g.tile, g.per_thread, g.depth), max(1, min(blocks, g.max_blocks)),
            (g.tile, g.tile), out.array, batch, m, n, p, a[0].array, *a[1:], b[0].array, *b[1:])


def _matmul_cublas(a: tuple, b: tuple, out: Array, m: int, n: int, p: int, batch: int) -> None:
    """cupy.matmul (cuBLAS) on zero-copy CuPy views of the same device memory."""
    cupy = _cupy()
    lhs = cupy.asarray(_CudaView(a[0], (batch, m, n), a[2:], a[1]))
    rhs = cupy.asarray(_CudaView(b[0], (batch, n, p), b[2:], b[1]))
    cupy.matmul(lhs, rhs, out=cupy.asarray(_CudaView(out, (batch, m, p), None, 0)))


def _use_cublas(a: tuple, b: tuple, out: Array, work: int) -> bool:
    return (_cupy() is not None and out.dtype in ("float32", "float64") and work >= GEOMETRY.cublas_min_work
            and min(a[1:] + b[1:]) >= 0)


def matmul(a: Any, b: Any, out: Array, m: int, n: int, p: int, batch: int = 1) -> None:
    """`batch` products (m, n) @ (n, p) -> out (batch, m, p); operands may be transposed views.
    Small products run the tiled kernel; large float ones cuBLAS, where CuPy is installed."""
    if batch * m * p == 0:
        return
    lhs, rhs = _matrix(a, m, n), _matrix(b, n, p)
    if _use_cublas(lhs, rhs, out, batch * m * n * p):
        _matmul_cublas(lhs, rhs, out, m, n, p, batch)
    else:
        _matmul_tiled(lhs, rhs, out, m, n, p, batch)


# --- 9. gather / scatter on int64 indices ------------------------------------------------------

@_device
def _row_element(e, row_size, rows, shape, idx, i_off, i_st):
    """Element e of the gathered rows (row e // row_size, column e % row_size) as a flat position
    in the full table: the row number comes from the strided index operand, negatives counted
    from the end."""
    i = e // row_size
    r = idx[strided_offset(i, shape, i_st, i_off)]
    if r < 0:
        r += rows
    return r * row_size + e - i * row_size


@functools.lru_cache(maxsize=None)
def _index_kernel(kind: str):
    """The index kernels, one thread per element of the rows they move:
    "outside":  flag[0] = the first position whose index lies outside [low, high)
    "take":     out[i, j] = a[idx[i], j]          (negative indices count from the end)
    "add":      out[idx[i], j] += values[i, j]    (atomic: repeated indices accumulate)
    "or":       the bool version of "add" (True wins; every writer stores the same value)
    "one_hot":  out[i, c] = (idx[i] == c)"""
    at = strided_offset
    table = _row_element
    kernel: Callable  # one signature per kind
    if kind == "outside":
        def kernel(flag, n, shape, idx, i_off, i_st, low, high):
            for i in range(cuda.grid(1), n, cuda.gridsize(1)):
                v = idx[at(i, shape, i_st, i_off)]
                if v < low or v >= high:
                    cuda.atomic.min(flag, 0, i)
    elif kind == "take":
        def kernel(out, total, row_size, rows, shape, idx, i_off, i_st, a):
            for e in range(cuda.grid(1), total, cuda.gridsize(1)):
                out[e] = a[table(e, row_size, rows, shape, idx, i_off, i_st)]
    elif kind == "add":
        def kernel(out, total, row_size, rows, shape, idx, i_off, i_st, values):
            for e in range(cuda.grid(1), total, cuda.gridsize(1)):
                cuda.atomic.add(out, table(e, row_size, rows, shape, idx, i_off, i_st), values[e])
    elif kind == "or":
        def kernel(out, total, row_size, rows, shape, idx, i_off, i_st, values):
            for e in range(cuda.grid(1), total, cuda.gridsize(1)):
                if values[e]:
                    out[table(e, row_size, rows, shape, idx, i_off, i_st)] = True
    else:
        def kernel(out, total, n, shape, idx, i_off, i_st):
            for e in range(cuda.grid(1), total, cuda.gridsize(1)):
                i = e // n
                out[e] = idx[at(i, shape, i_st, i_off)] == e - i * n
    kernel.__name__ = f"index_{kind}"
    return cuda.jit(kernel)


def _index_view(indices) -> tuple:
    """(n, collapsed shape, strides, buffer, offset) of an int64 index operand."""
    buf, shape, strides, offset = view_of(indices)
    n = math.prod(shape)
    shape, (strides,) = collapse(shape, strides)
    return n, shape, strides, buf, offset


def _check_indices(indices, low: int, high: int, host_check) -> tuple:
    """The index operand's view, after checking on the device that every index lies in
    [low, high) -- one number is read back. When one does not, `host_check` (the cpu
    kernels' own check) runs on a host copy of the indices and raises their IndexError."""
    n, shape, strides, buf, offset = view = _index_view(indices)
    if n == 0:
        return view
    flag = cuda.to_device(np.array([n], dtype=np.int64))
    launch(_index_kernel("outside"), blocks(n, GEOMETRY.threads), GEOMETRY.threads, flag, n, shape, buf.array,
            offset, strides, low, high)
    if int(flag.copy_to_host()[0]) < n:
        b, s, st, off = view_of(indices)
        host_check(host_buffer.Array.wrap(to_numpy(b, s, st, off).reshape(-1)))
        raise IndexError(f"an index is outside [{low}, {high})")  # (host_check raised already)
    return view


def _rows_kernel(kind: str, rows: int, indices, out: Array, row_size: int, source: Array) -> None:
    n, shape, strides, buf, offset = _check_indices(
        indices, -rows, rows, lambda host: host_buffer.rows_index(host, rows))
    total = n * row_size
    if total:
        launch(_index_kernel(kind), blocks(total, GEOMETRY.threads), GEOMETRY.threads, out.array, total, row_size,
                rows, shape, buf.array, offset, strides, source.array)


def take_rows(a: Array, indices: Any, out: Array, row_size: int) -> None:
    """out[i] = a[indices[i]] for rows of `row_size` elements of compact `a`; negative indices
    count from the end; IndexError outside [-rows, rows)."""
    _rows_kernel("take", a.size // row_size if row_size else 0, indices, out, row_size, a)


def index_add_rows(values: Array, indices: Any, out: Array, row_size: int) -> None:
    """out[indices[i]] += values[i] (rows of row_size; repeated indices accumulate); in place."""
    rows = out.size // row_size if row_size else 0
    _rows_kernel("or" if out.dtype == "bool" else "add", rows, indices, out, row_size, values)


def one_hot_rows(indices: Any, out: Array, n: int) -> None:
    """out (k, n) = 0 except out[i, indices[i]] = 1; IndexError outside [0, n)."""
    k, shape, strides, buf, offset = _check_indices(indices, 0, n, lambda host: host_buffer.class_ids(host, n))
    if k * n:
        launch(_index_kernel("one_hot"), blocks(k * n, GEOMETRY.threads), GEOMETRY.threads, out.array, k * n, n,
                shape, buf.array, offset, strides)
