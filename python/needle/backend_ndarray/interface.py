"""The device kernel interface: every function a device module provides, written once.

NDArray computes only through these kernels, so a new device is one module that
defines them all plus one `register_device` call (see `device.py`). A test checks
that every registered device module provides every kernel listed here.

Conventions shared by all kernels
---------------------------------
* A *buffer* is an instance of the module's `Array(size, dtype)`: `size` elements of
  one storage dtype ("float32", "float64", "int64" or "bool"), with `size`, `dtype` (the
  name) and `ptr()` (its base address, the same for every view of it).
* An *operand* is what a kernel reads: either a compact buffer, read from its first
  element (the course's kernels take these), or a tuple `(buffer, shape, strides,
  offset)` describing a strided view of a buffer, strides counted in elements and
  possibly zero (broadcast) or negative (flip); `strides` is None when the view is the
  compact buffer itself, reshaped.
* `out` is always a compact buffer the kernel overwrites from element 0; its dtype is
  the result's (NDArray has already promoted the inputs, see `needle.dtypes`).
* `shape`, `strides` and `offset` arguments describe a view in elements.
* Arguments are positional (a recorder replays them as a tuple).
* Kernels assume valid input, except the index kernels, which raise IndexError for an
  index outside the indexed axis (they are the only kernels whose input is data).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, Tuple

Operand = Any  # a compact buffer, or (buffer, shape, strides or None, offset)


class DeviceKernels(Protocol):
    """The functions (and two attributes) of a device module."""

    __device_name__: str  # "cpu", "numpy", "cuda"
    __tile_size__: int  # the tile edge of matmul_tiled (the course reads it on every device)

    # --- buffers and transfers ---------------------------------------------------------
    def Array(self, size: int, dtype: str = "float32") -> Any:
        """A new buffer of `size` elements of `dtype` (contents undefined)."""

    def to_numpy(self, a: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> Any:
        """A numpy copy (of a's dtype) of the strided view of buffer `a`."""

    def from_numpy(self, a: Any, out: Any) -> None:
        """Copy numpy array `a` (any shape, out.size elements) into `out`, cast to out's dtype."""

    def fill(self, out: Any, val: Any) -> None:
        """Set every element of `out` to the scalar `val`."""

    # --- layout ------------------------------------------------------------------------
    def compact(self, a: Any, out: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Gather the strided view of `a` into `out` in row-major order, cast to out's dtype
        (this is also how an array changes dtype)."""

    def ewise_setitem(self, a: Any, out: Any, shape: Sequence[int], strides: Sequence[int], offset: int) -> None:
        """Scatter compact `a` (prod(shape) elements, row-major) into the strided view of `out`."""

    def scalar_setitem(self, size: int, val: Any, out: Any, shape: Sequence[int], strides: Sequence[int],
                       offset: int) -> None:
        """Set every element of the strided view of `out` (`size` elements) to `val`."""

    # --- elementwise: a and b are operands of one shape, out compact of that shape ----------
    def ewise_add(self, a: Operand, b: Operand, out: Any) -> None: """out = a + b"""
    def ewise_sub(self, a: Operand, b: Operand, out: Any) -> None: """out = a - b"""
    def ewise_mul(self, a: Operand, b: Operand, out: Any) -> None: """out = a * b"""
    def ewise_div(self, a: Operand, b: Operand, out: Any) -> None: """out = a / b (float)"""
    def ewise_pow(self, a: Operand, b: Operand, out: Any) -> None: """out = a ** b"""
    def ewise_maximum(self, a: Operand, b: Operand, out: Any) -> None: """out = max(a, b), nan if either is"""
    def ewise_minimum(self, a: Operand, b: Operand, out: Any) -> None: """out = min(a, b), nan if either is"""
    def ewise_eq(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a == b"""
    def ewise_ne(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a != b"""
    def ewise_lt(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a < b"""
    def ewise_le(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a <= b"""
    def ewise_gt(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a > b"""
    def ewise_ge(self, a: Operand, b: Operand, out: Any) -> None: """out (bool) = a >= b"""

    # --- elementwise with a Python scalar `val` (already of the result's kind) ---------------
    def scalar_add(self, a: Operand, val: Any, out: Any) -> None: """out = a + val"""
    def scalar_sub(self, a: Operand, val: Any, out: Any) -> None: """out = a - val"""
    def scalar_rsub(self, a: Operand, val: Any, out: Any) -> None: """out = val - a"""
    def scalar_mul(self, a: Operand, val: Any, out: Any) -> None: """out = a * val"""
    def scalar_div(self, a: Operand, val: Any, out: Any) -> None: """out = a / val"""
    def scalar_rdiv(self, a: Operand, val: Any, out: Any) -> None: """out = val / a"""
    def scalar_power(self, a: Operand, val: Any, out: Any) -> None: """out = a ** val"""
    def scalar_rpower(self, a: Operand, val: Any, out: Any) -> None: """out = val ** a"""
    def scalar_maximum(self, a: Operand, val: Any, out: Any) -> None: """out = max(a, val)"""
    def scalar_minimum(self, a: Operand, val: Any, out: Any) -> None: """out = min(a, val)"""
    def scalar_eq(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a == val"""
    def scalar_ne(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a != val"""
    def scalar_lt(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a < val"""
    def scalar_le(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a <= val"""
    def scalar_gt(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a > val"""
    def scalar_ge(self, a: Operand, val: Any, out: Any) -> None: """out (bool) = a >= val"""

    # --- unary (out has a's dtype; the float functions get float operands) ---------------------
    def ewise_neg(self, a: Operand, out: Any) -> None: """out = -a"""
    def ewise_abs(self, a: Operand, out: Any) -> None: """out = |a|"""
    def ewise_log(self, a: Operand, out: Any) -> None: """out = ln a (-inf at 0, nan below)"""
    def ewise_exp(self, a: Operand, out: Any) -> None: """out = e ** a"""
    def ewise_tanh(self, a: Operand, out: Any) -> None: """out = tanh a"""
    def ewise_sigmoid(self, a: Operand, out: Any) -> None:
        """out = 1 / (1 + e ** -a), accurate in both tails (2.06e-9 at -20, not 0)"""
    def ewise_sqrt(self, a: Operand, out: Any) -> None: """out = sqrt a"""

    def ewise_where(self, cond: Operand, a: Operand, b: Operand, out: Any) -> None:
        """out = a where cond (bool) is true, else b; all three of out's shape"""

    # --- reductions over the trailing block of reduce_size elements of each output ---------
    def reduce_sum(self, a: Operand, out: Any, reduce_size: int) -> None:
        """out[k] = sum of block k (int64 out for bool/int64 input)"""
    def reduce_max(self, a: Operand, out: Any, reduce_size: int) -> None: """out[k] = max of block k"""
    def reduce_min(self, a: Operand, out: Any, reduce_size: int) -> None: """out[k] = min of block k"""
    def reduce_argmax(self, a: Operand, out: Any, reduce_size: int) -> None:
        """out[k] (int64) = position of the first maximum in block k"""

    # --- matrix products -----------------------------------------------------------------
    def matmul(self, a: Operand, b: Operand, out: Any, m: int, n: int, p: int, batch: int = 1) -> None:
        """`batch` products (m, n) @ (n, p) -> out (batch, m, p); operands may be transposed views"""

    # --- gather / scatter on int64 indices ---------------------------------------------------
    def take_rows(self, a: Any, indices: Operand, out: Any, row_size: int) -> None:
        """out[i] = a[indices[i]] for rows of `row_size` elements of compact `a`; negative
        indices count from the end; IndexError outside [-rows, rows)"""

    def index_add_rows(self, values: Any, indices: Operand, out: Any, row_size: int) -> None:
        """out[indices[i]] += values[i] (rows of row_size; repeated indices accumulate); in place"""

    def one_hot_rows(self, indices: Operand, out: Any, n: int) -> None:
        """out (k, n) = 0 except out[i, indices[i]] = 1; IndexError outside [0, n)"""


# The kernels every device module must define (matmul_tiled is the course's cpu extra).
REQUIRED_KERNELS: Tuple[str, ...] = tuple(
    name for name in DeviceKernels.__dict__
    if not name.startswith("_") and callable(DeviceKernels.__dict__[name])
)
REQUIRED_ATTRIBUTES: Tuple[str, ...] = ("__device_name__", "__tile_size__")


def missing_kernels(module: Any) -> list:
    """The names of the interface a device module lacks (empty when it is complete)."""
    return [name for name in REQUIRED_KERNELS + REQUIRED_ATTRIBUTES if not hasattr(module, name)]
