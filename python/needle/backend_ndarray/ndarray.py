"""NDArray: an n-dimensional view (shape, strides, offset) over a flat device buffer.

Views (reshape, permute, broadcast_to, __getitem__) share the buffer and never
copy. Everything that computes goes through the device's kernel module, which
sees compact buffers (or one strided view for compact/setitem): a new device
is a new kernel module and nothing else.
"""
from __future__ import annotations

import builtins
import functools
import math
from typing import Iterable, Sequence

import numpy as np

from . import ndarray_backend_cpu, ndarray_backend_numpy

FLOAT_DTYPES = ("float32", "float64")


def prod(x: Iterable[int]) -> int:
    return math.prod(x)


@functools.lru_cache(maxsize=64)
def normalize_dtype(dtype) -> str:
    """Storage dtype name for a requested dtype: float64 when asked, else float32."""
    if dtype is None:
        return "float32"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None
    return name if name in FLOAT_DTYPES else "float32"


def _as_scalar(value) -> float:
    """A Python float from a number, numpy scalar or one-element array."""
    if isinstance(value, (int, float)):
        return value
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"expected an NDArray or a number, got {type(value).__name__}")
    return arr.item()


def _normalize_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def normalize_axes(axes, ndim: int) -> tuple[int, ...]:
    """Axes (int or sequence) as sorted non-negative ints; rejects duplicates."""
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"axes must be an int or a tuple of ints, got {axes!r}")
    axes = tuple(axes)
    if not axes:
        raise ValueError("an empty tuple of axes was given; pass axis=None to reduce every axis")
    out = tuple(sorted(_normalize_axis(a, ndim) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axes}")
    return out


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy's broadcasting rule; ValueError naming the shapes when it fails."""
    ndim = builtins.max(len(s) for s in shapes)
    result = []
    for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            shown = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(f"shapes {shown} cannot be broadcast together")
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


class BackendDevice:
    """A device: a name plus the kernel module that implements it."""

    def __init__(self, name: str, mod):
        self.name = name
        self.mod = mod

    def __eq__(self, other) -> bool:
        return isinstance(other, BackendDevice) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name + "()"

    def __getattr__(self, name):
        if name == "mod" or self.__dict__.get("mod") is None:
            raise AttributeError(f"device {self.__dict__.get('name')} has no kernel {name!r} (not enabled)")
        kernel = getattr(self.mod, name)
        self.__dict__[name] = kernel  # later look-ups skip __getattr__ (this is on every op's path)
        return kernel

    def enabled(self) -> bool:
        return self.mod is not None

    # factories (the RNG calls here are part of the contract: one numpy draw each)
    def randn(self, *shape, dtype="float32") -> "NDArray":
        return NDArray(np.random.randn(*shape), device=self, dtype=dtype)

    def rand(self, *shape, dtype="float32") -> "NDArray":
        return NDArray(np.random.rand(*shape), device=self, dtype=dtype)

    def one_hot(self, n: int, i, dtype="float32") -> "NDArray":
        idx = np.asarray(i)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
            raise ValueError(f"one_hot: class index {bad} is out of range for {n} classes")
        return NDArray(np.eye(n)[idx.astype(np.int64)], device=self, dtype=dtype)

    def empty(self, shape, dtype="float32") -> "NDArray":
        return NDArray.make(tuple(shape), device=self, dtype=normalize_dtype(dtype))

    def full(self, shape, fill_value, dtype="float32") -> "NDArray":
        arr = self.empty(shape, dtype)
        arr.fill(fill_value)
        return arr

    def zeros(self, *shape, dtype="float32") -> "NDArray":
        return self.full(shape, 0.0, dtype)

    def ones(self, *shape, dtype="float32") -> "NDArray":
        return self.full(shape, 1.0, dtype)


_CPU = BackendDevice("cpu", ndarray_backend_cpu)
_CPU_NUMPY = BackendDevice("cpu_numpy", ndarray_backend_numpy)
_CUDA = None


def cpu() -> BackendDevice:
    """The fast host device."""
    return _CPU


def cpu_numpy() -> BackendDevice:
    """The reference host device (plain numpy kernels)."""
    return _CPU_NUMPY


def cuda() -> BackendDevice:
    """The GPU device; `enabled()` is False when its kernels cannot run here."""
    global _CUDA
    if _CUDA is None:
        try:
            from . import ndarray_backend_cuda  # noqa: PLC0415

            mod = ndarray_backend_cuda if ndarray_backend_cuda.available() else None
        except ImportError:
            mod = None
        _CUDA = BackendDevice("cuda", mod)
    return _CUDA


def default_device() -> BackendDevice:
    return _CPU


def all_devices() -> list[BackendDevice]:
    return [cpu(), cuda(), cpu_numpy()]


class NDArray:
    """A strided n-dimensional array of float32 (or float64) on a device."""

    __array_ufunc__ = None  # numpy scalars defer to our reflected operators

    def __init__(self, other, device: BackendDevice | None = None, dtype=None):
        if isinstance(other, NDArray):
            device = other.device if device is None else device
            dtype = other.dtype if dtype is None else normalize_dtype(dtype)
            if device == other.device and dtype == other.dtype:
                self._init(other._copy())
            else:
                self._init(NDArray(other.numpy(), device=device, dtype=dtype))
            return
        device = default_device() if device is None else device
        _check_device(device)
        data = np.asarray(other, dtype=normalize_dtype(dtype), order="C")  # keeps 0-d shape ()
        array = NDArray.make(data.shape, device=device, dtype=data.dtype.name)
        device.from_numpy(data, array._handle)
        self._init(array)

    def _init(self, other: "NDArray") -> None:
        self._shape = other._shape
        self._strides = other._strides
        self._offset = other._offset
        self._device = other._device
        self._handle = other._handle
        self._compact = other._compact

    @staticmethod
    def compact_strides(shape: Sequence[int]) -> tuple[int, ...]:
        return _compact_strides(tuple(shape))

    @staticmethod
    def make(shape, strides=None, device=None, handle=None, offset=0, dtype="float32") -> "NDArray":
        """Wrap `handle` (or allocate a new buffer) with the given layout; no initialisation."""
        array = NDArray.__new__(NDArray)
        array._shape = shape = tuple(map(int, shape))
        array._strides = _compact_strides(shape) if strides is None else tuple(strides)
        array._offset = offset
        array._device = device = _CPU if device is None else device
        if handle is None:
            array._handle = device.Array(math.prod(shape), dtype=dtype)
            array._compact = strides is None  # a fresh buffer with default strides
        else:
            array._handle = handle
            array._compact = None  # worked out on first use
        return array

    # --- properties ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def strides(self) -> tuple[int, ...]:
        return self._strides

    @property
    def device(self) -> BackendDevice:
        return self._device

    @property
    def dtype(self) -> str:
        return self._handle.dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return prod(self._shape)

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d NDArray")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"NDArray({self.numpy()}, device={self.device}, dtype={self.dtype})"

    def __str__(self) -> str:
        return str(self.numpy())

    # --- conversion ---------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A numpy copy honouring shape, strides and offset."""
        return self._device.to_numpy(self._handle, self._shape, self._strides, self._offset)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def to(self, device: BackendDevice) -> "NDArray":
        if device == self._device:
            return self
        _check_device(device)
        return NDArray(self.numpy(), device=device, dtype=self.dtype)

    def astype(self, dtype) -> "NDArray":
        dtype = normalize_dtype(dtype)
        return self if dtype == self.dtype else NDArray(self, dtype=dtype)

    def fill(self, value) -> None:
        """Set every element of this view to `value`, in place."""
        self._device.scalar_setitem(
            self.size, _as_scalar(value), self._handle, self._shape, self._strides, self._offset
        )

    # --- layout -------------------------------------------------------------
    def is_compact(self) -> bool:
        compact = self._compact
        if compact is None:  # layouts never change, so the answer is kept
            compact = self._compact = (
                self._strides == _compact_strides(self._shape) and math.prod(self._shape) == self._handle.size
            )
        return compact

    def compact(self) -> "NDArray":
        return self if self.is_compact() else self._copy()

    def _copy(self) -> "NDArray":
        out = NDArray.make(self._shape, device=self._device, dtype=self.dtype)
        self._device.compact(self._handle, out._handle, self._shape, self._strides, self._offset)
        return out

    def as_strided(self, shape, strides) -> "NDArray":
        """A view of the same buffer and offset with the given shape and element strides."""
        if len(shape) != len(strides):
            raise ValueError(f"as_strided: shape {tuple(shape)} and strides {tuple(strides)} differ in length")
        return NDArray.make(shape, strides=strides, device=self._device, handle=self._handle, offset=self._offset)

    @property
    def flat(self) -> "NDArray":
        return self.reshape((self.size,))

    def reshape(self, new_shape) -> "NDArray":
        """View with a new shape (one entry may be -1); the array must be compact."""
        if isinstance(new_shape, (int, np.integer)):
            new_shape = (new_shape,)
        new_shape = _resolve_shape(tuple(int(d) for d in new_shape), self.size, self._shape)
        if not self.is_compact():
            raise ValueError(
                f"reshape of a non-compact array (shape {self._shape}, strides {self._strides}); call compact() first"
            )
        return NDArray.make(new_shape, device=self._device, handle=self._handle, offset=self._offset)

    def permute(self, new_axes) -> "NDArray":
        """View with axes reordered: axis i of the result is axis new_axes[i] of self."""
        axes = tuple(int(a) for a in new_axes)
        ndim = self.ndim
        if len(axes) != ndim or any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) != ndim:
            raise ValueError(f"permute: {axes} is not a permutation of the {ndim} axes of shape {self._shape}")
        axes = tuple(a % ndim for a in axes)
        return NDArray.make(
            tuple(self._shape[a] for a in axes),
            strides=tuple(self._strides[a] for a in axes),
            device=self._device,
            handle=self._handle,
            offset=self._offset,
        )

    def transpose(self, axes=None) -> "NDArray":
        """numpy's transpose: reverse the axes, or permute them by `axes`."""
        return self.permute(tuple(reversed(range(self.ndim))) if axes is None else axes)

    def swapaxes(self, axis1: int, axis2: int) -> "NDArray":
        order = list(range(self.ndim))
        i, j = _normalize_axis(axis1, self.ndim), _normalize_axis(axis2, self.ndim)
        order[i], order[j] = order[j], order[i]
        return self.permute(order)

    def broadcast_to(self, new_shape) -> "NDArray":
        """View with size-1 (or missing leading) axes repeated by a zero stride."""
        new_shape = tuple(int(d) for d in new_shape)
        lead = len(new_shape) - self.ndim
        if lead < 0 or any(s != 1 and s != n for s, n in zip(self._shape, new_shape[lead:])):
            raise ValueError(f"cannot broadcast an array of shape {self._shape} to shape {new_shape}")
        strides = (0,) * lead + tuple(
            0 if s == 1 and n != 1 else st for s, n, st in zip(self._shape, new_shape[lead:], self._strides)
        )
        return NDArray.make(new_shape, strides=strides, device=self._device, handle=self._handle, offset=self._offset)

    # --- indexing -----------------------------------------------------------
    def process_slice(self, sl: slice, dim: int) -> slice:
        """`sl` with explicit start, stop and positive step for axis `dim` (numpy semantics)."""
        if sl.step is not None and sl.step <= 0:
            raise ValueError(f"slice step must be positive, got {sl.step} on axis {dim}")
        start, stop, step = sl.indices(self._shape[dim])
        return slice(start, builtins.max(start, stop), step)

    def _expand_index(self, idxs) -> tuple:
        if not isinstance(idxs, tuple):
            idxs = (idxs,)
        if any(i is Ellipsis for i in idxs):
            at = next(k for k, i in enumerate(idxs) if i is Ellipsis)
            rest = idxs[:at] + idxs[at + 1 :]
            idxs = idxs[:at] + (slice(None),) * (self.ndim - len(rest)) + idxs[at + 1 :]
        if len(idxs) > self.ndim:
            raise IndexError(f"too many indices ({len(idxs)}) for an array of shape {self._shape}")
        idxs = idxs + (slice(None),) * (self.ndim - len(idxs))
        out = []
        for dim, idx in enumerate(idxs):
            if isinstance(idx, slice):
                out.append(self.process_slice(idx, dim))
            elif isinstance(idx, (int, np.integer)):
                n = self._shape[dim]
                if not -n <= idx < n:
                    raise IndexError(f"index {idx} is out of bounds for axis {dim} with size {n}")
                idx = int(idx) % n
                out.append(slice(idx, idx + 1, 1))
            else:
                raise TypeError(
                    f"NDArray indices must be ints or slices, got {type(idx).__name__} on axis {dim}"
                )
        return tuple(out)

    def __getitem__(self, idxs) -> "NDArray":
        """A view; integer indices keep their axis with length 1."""
        idxs = self._expand_index(idxs)
        shape, strides, offset = [], [], self._offset
        for sl, stride in zip(idxs, self._strides):
            shape.append(len(range(sl.start, sl.stop, sl.step)))
            strides.append(stride * sl.step)
            offset += sl.start * stride
        return NDArray.make(shape, strides=strides, device=self._device, handle=self._handle, offset=offset)

    def __setitem__(self, idxs, other) -> None:
        """Write `other` (array broadcastable to the view, or a scalar) into the view, in place."""
        view = self.__getitem__(idxs)
        if isinstance(other, np.ndarray) and other.ndim > 0:
            other = NDArray(other, device=self._device, dtype=self.dtype)
        if isinstance(other, NDArray):
            _check_same_device(self, other, "setitem")
            if other.shape != view.shape:
                if other.size == view.size:
                    other = other.compact().reshape(view.shape)
                else:
                    other = other.broadcast_to(view.shape)
            source = other.astype(self.dtype).compact()
            self._device.ewise_setitem(source._handle, self._handle, view._shape, view._strides, view._offset)
        else:
            self._device.scalar_setitem(
                view.size, _as_scalar(other), self._handle, view._shape, view._strides, view._offset
            )

    def take_rows(self, indices) -> "NDArray":
        """Rows of self (axis 0) picked by an integer array: result shape indices.shape + shape[1:]."""
        idx = _row_indices(indices, self._shape)
        row_size = prod(self._shape[1:])
        out = NDArray.make(idx.shape + self._shape[1:], device=self._device, dtype=self.dtype)
        self._device.take_rows(self.compact()._handle, idx.ravel(), out._handle, row_size)
        return out

    def index_add_rows(self, indices, values: "NDArray") -> None:
        """In place: self[indices[i]] += values[i] (axis 0); repeated indices accumulate."""
        if not self.is_compact():
            raise ValueError("index_add_rows needs a compact destination")
        idx = _row_indices(indices, self._shape)
        expected = idx.shape + self._shape[1:]
        if values.shape != expected:
            raise ValueError(f"index_add_rows: values of shape {values.shape}, expected {expected}")
        _check_same_device(self, values, "index_add_rows")
        self._device.index_add_rows(
            values.astype(self.dtype).compact()._handle, idx.ravel(), self._handle, prod(self._shape[1:])
        )

    # --- elementwise arithmetic ----------------------------------------------
    def _operand(self) -> tuple:
        """How kernels read this array: (handle, shape, strides, offset), strides None when compact.

        Elementwise, reduction and matmul kernels read strided views directly, so
        broadcasts, transposes and slices are never copied just to be read.
        """
        return self._handle, self._shape, None if self.is_compact() else self._strides, self._offset

    def _elementwise(self, other, ewise: str, scalar: str) -> "NDArray":
        if isinstance(other, NDArray):
            _check_same_device(self, other, ewise)
            if other._shape != self._shape:
                raise ValueError(
                    f"{ewise}: shapes {self._shape} and {other._shape} differ (broadcast explicitly first)"
                )
            a, b = _promote(self, other)
            out = NDArray.make(self._shape, device=self._device, dtype=a.dtype)
            getattr(self._device, ewise)(a._operand(), b._operand(), out._handle)
        else:
            out = NDArray.make(self._shape, device=self._device, dtype=self.dtype)
            getattr(self._device, scalar)(self._operand(), _as_scalar(other), out._handle)
        return out

    def _unary(self, kernel: str) -> "NDArray":
        out = NDArray.make(self._shape, device=self._device, dtype=self.dtype)
        getattr(self._device, kernel)(self._operand(), out._handle)
        return out

    def __add__(self, other):
        return self._elementwise(other, "ewise_add", "scalar_add")

    __radd__ = __add__

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __mul__(self, other):
        return self._elementwise(other, "ewise_mul", "scalar_mul")

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._elementwise(other, "ewise_div", "scalar_div")

    def __rtruediv__(self, other):
        return full(self._shape, _as_scalar(other), self.dtype, self._device) / self

    def __neg__(self):
        return self * (-1.0)

    def __pow__(self, other):
        return self._elementwise(other, "ewise_pow", "scalar_power")

    def maximum(self, other):
        return self._elementwise(other, "ewise_maximum", "scalar_maximum")

    # comparisons return float arrays of 0.0 / 1.0
    def __eq__(self, other):
        return self._elementwise(other, "ewise_eq", "scalar_eq")

    def __ge__(self, other):
        return self._elementwise(other, "ewise_ge", "scalar_ge")

    def __ne__(self, other):
        return 1 - (self == other)

    def __gt__(self, other):
        return (self >= other) - (self == other)

    def __lt__(self, other):
        return 1 - (self >= other)

    def __le__(self, other):
        return 1 - (self > other)

    __hash__ = None

    def log(self):
        return self._unary("ewise_log")

    def exp(self):
        return self._unary("ewise_exp")

    def tanh(self):
        return self._unary("ewise_tanh")

    # --- matmul ---------------------------------------------------------------
    def __matmul__(self, other: "NDArray") -> "NDArray":
        """numpy's matmul: 2-D, 1-D and batched operands with broadcast batch axes."""
        if not isinstance(other, NDArray):
            raise TypeError(f"matmul needs two NDArrays, got {type(other).__name__}")
        _check_same_device(self, other, "matmul")
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {self._shape} and {other._shape}")
        a = self.reshape_compact((1,) + self._shape) if self.ndim == 1 else self
        b = other.reshape_compact(other._shape + (1,)) if other.ndim == 1 else other
        (m, n), (n2, p) = a._shape[-2:], b._shape[-2:]
        if n != n2:
            raise ValueError(f"matmul: inner dimensions differ for shapes {self._shape} and {other._shape}")
        a, b = _promote(a, b)
        if b.ndim == 2:  # fold a's batch axes into its rows: one 2-D product
            lead = a._shape[:-2]
            rows = prod(lead) * m
            if lead:
                a = a.reshape_compact((rows, n))
            out = NDArray.make((rows, p), device=self._device, dtype=a.dtype)
            self._device.matmul(a._operand(), b._operand(), out._handle, rows, n, p)
            out = out.reshape(lead + (m, p))
        else:
            try:
                batch = broadcast_shapes(a._shape[:-2], b._shape[:-2])
            except ValueError:
                raise ValueError(
                    f"matmul: batch dimensions of {self._shape} and {other._shape} do not broadcast"
                ) from None
            a = a.broadcast_to(batch + (m, n)).reshape_compact((prod(batch), m, n))
            b = b.broadcast_to(batch + (n, p)).reshape_compact((prod(batch), n, p))
            out = NDArray.make(batch + (m, p), device=self._device, dtype=a.dtype)
            self._device.matmul(a._operand(), b._operand(), out._handle, m, n, p, batch=prod(batch))
        if self.ndim == 1:
            out = out.reshape(out._shape[:-2] + out._shape[-1:])
        if other.ndim == 1:
            out = out.reshape(out._shape[:-1])
        return out

    def reshape_compact(self, new_shape) -> "NDArray":
        """compact() then reshape(): a view when possible, a copy otherwise."""
        return self.compact().reshape(new_shape)

    # --- reductions -------------------------------------------------------------
    def _reduce(self, kernel: str, axis, keepdims: bool) -> "NDArray":
        if axis is None:
            axes = tuple(range(self.ndim))
        else:
            axes = normalize_axes(axis, self.ndim)
        kept = tuple(a for a in range(self.ndim) if a not in axes)
        reduce_size = prod(self._shape[a] for a in axes)
        if reduce_size == 0 and kernel != "reduce_sum":
            raise ValueError(f"{kernel}: cannot reduce a zero-size axis of shape {self._shape}")
        view = self.permute(kept + axes)  # reduced axes last; the kernel reads the view
        out_shape = tuple(self._shape[a] for a in kept)
        out = NDArray.make(out_shape, device=self._device, dtype=self.dtype)
        getattr(self._device, kernel)(view._operand(), out._handle, reduce_size)
        if keepdims:
            return out.reshape(tuple(1 if a in axes else d for a, d in enumerate(self._shape)))
        if axis is None:
            return out.reshape((1,))
        return out

    def sum(self, axis=None, keepdims: bool = False) -> "NDArray":
        return self._reduce("reduce_sum", axis, keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "NDArray":
        return self._reduce("reduce_max", axis, keepdims)

    def argmax(self, axis=None, keepdims: bool = False) -> "NDArray":
        """Index of the first maximum (as floats); over the flattened array if axis is None."""
        if axis is None:
            return self.reshape_compact((self.size,))._reduce("reduce_argmax", 0, False).reshape((1,))
        return self._reduce("reduce_argmax", _normalize_axis(axis, self.ndim), keepdims)

    # --- copies with new layout -----------------------------------------------------
    def flip(self, axes) -> "NDArray":
        """A compact copy with the listed axes reversed."""
        if axes is None:
            axes = tuple(range(self.ndim))
        elif not isinstance(axes, (tuple, list)) or axes:
            axes = normalize_axes(axes, self.ndim)  # an empty tuple flips nothing, like np.flip
        strides = list(self._strides)
        offset = self._offset
        for ax in axes:
            offset += (self._shape[ax] - 1) * strides[ax]
            strides[ax] = -strides[ax]
        view = NDArray.make(self._shape, strides=strides, device=self._device, handle=self._handle, offset=offset)
        return view._copy()

    def pad(self, axes) -> "NDArray":
        """A new array with (left, right) zeros added on each axis, like np.pad."""
        axes = tuple(tuple(int(x) for x in pair) for pair in axes)
        if len(axes) != self.ndim or any(len(p) != 2 or min(p) < 0 for p in axes):
            raise ValueError(f"pad needs one non-negative (left, right) pair per axis of shape {self._shape}, got {axes}")
        out = full(tuple(d + l + r for d, (l, r) in zip(self._shape, axes)), 0.0, self.dtype, self._device)
        out[tuple(slice(l, l + d) for d, (l, _) in zip(self._shape, axes))] = self
        return out


# --- helpers ---------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _compact_strides(shape: tuple) -> tuple:
    """Row-major element strides of `shape` (cached: every new array needs them)."""
    stride = 1
    res = []
    for d in reversed(shape):
        res.append(stride)
        stride *= d
    return tuple(reversed(res))


def _check_device(device) -> None:
    if not isinstance(device, BackendDevice):
        raise TypeError(f"expected a needle device, got {device!r}")
    if not device.enabled():
        raise RuntimeError(f"device {device} is not available on this machine")


def _check_same_device(a: NDArray, b: NDArray, what: str) -> None:
    if a._device is not b._device and a._device != b._device:
        raise ValueError(f"{what}: arrays are on different devices ({a._device} and {b._device}); move one with .to()")


def _promote(a: NDArray, b: NDArray) -> tuple[NDArray, NDArray]:
    """Mixed float32/float64 operands compute in float64, as in numpy and PyTorch."""
    if a.dtype == b.dtype:
        return a, b
    return a.astype("float64"), b.astype("float64")


def _resolve_shape(shape: tuple[int, ...], size: int, old_shape) -> tuple[int, ...]:
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one -1 is allowed, got {shape}")
    if -1 in shape:
        known = prod(d for d in shape if d != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape an array of shape {tuple(old_shape)} into {shape}")
        shape = tuple(size // known if d == -1 else d for d in shape)
    if any(d < 0 for d in shape) or prod(shape) != size:
        raise ValueError(f"cannot reshape an array of shape {tuple(old_shape)} (size {size}) into {shape}")
    return shape


def _row_indices(indices, shape) -> np.ndarray:
    if not shape:
        raise ValueError("cannot index rows of a 0-d array")
    idx = np.asarray(indices.numpy() if isinstance(indices, NDArray) else indices)
    if idx.dtype.kind == "f":
        if not np.all(idx == np.round(idx)):
            raise TypeError("row indices must be integers")
    elif idx.dtype.kind not in "iub":
        raise TypeError(f"row indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    n = shape[0]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
        raise IndexError(f"index {bad} is out of bounds for axis 0 with size {n}")
    return np.where(idx < 0, idx + n, idx)


# --- module-level functions (the `array_api` the ops call in nd mode) -------------

def array(a, dtype="float32", device=None) -> NDArray:
    if isinstance(a, NDArray) and dtype is None:
        return NDArray(a, device=device)
    return NDArray(a, device=device, dtype=dtype)


def empty(shape, dtype="float32", device=None) -> NDArray:
    device = default_device() if device is None else device
    return device.empty(shape, dtype)


def full(shape, fill_value, dtype="float32", device=None) -> NDArray:
    device = default_device() if device is None else device
    return device.full(shape, fill_value, dtype)


def zeros_like(a: NDArray) -> NDArray:
    return full(a.shape, 0.0, a.dtype, a.device)


def ones_like(a: NDArray) -> NDArray:
    return full(a.shape, 1.0, a.dtype, a.device)


def full_like(a: NDArray, fill_value) -> NDArray:
    return full(a.shape, fill_value, a.dtype, a.device)


def empty_like(a: NDArray) -> NDArray:
    return empty(a.shape, a.dtype, a.device)


def broadcast_to(a: NDArray, shape) -> NDArray:
    return a.broadcast_to(shape)


def reshape(a: NDArray, shape) -> NDArray:
    return a.reshape(shape)


def transpose(a: NDArray, axes=None) -> NDArray:
    return a.transpose(axes)


def swapaxes(a: NDArray, axis1: int, axis2: int) -> NDArray:
    return a.swapaxes(axis1, axis2)


def ascontiguousarray(a: NDArray) -> NDArray:
    return a.compact()


def maximum(a: NDArray, b) -> NDArray:
    return a.maximum(b)


def log(a: NDArray) -> NDArray:
    return a.log()


def exp(a: NDArray) -> NDArray:
    return a.exp()


def tanh(a: NDArray) -> NDArray:
    return a.tanh()


def matmul(a: NDArray, b: NDArray) -> NDArray:
    return a @ b


def sum(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:  # noqa: A001
    """Like numpy: reducing every axis without keepdims gives shape ()."""
    out = a.sum(axis=axis, keepdims=keepdims)
    return out.reshape(()) if axis is None and not keepdims else out


def max(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:  # noqa: A001
    """Like numpy: reducing every axis without keepdims gives shape ()."""
    out = a.max(axis=axis, keepdims=keepdims)
    return out.reshape(()) if axis is None and not keepdims else out


def argmax(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:
    out = a.argmax(axis=axis, keepdims=keepdims)
    return out.reshape(()) if axis is None else out


def flip(a: NDArray, axes) -> NDArray:
    return a.flip(axes)


def pad(a: NDArray, pad_width) -> NDArray:
    return a.pad(pad_width)


def stack(arrays: Sequence[NDArray], axis: int = 0) -> NDArray:
    """numpy's stack: equal shapes, new axis of length len(arrays) at `axis`."""
    if not arrays:
        raise ValueError("stack needs at least one array")
    shape = arrays[0].shape
    for k, arr in enumerate(arrays):
        if arr.shape != shape:
            raise ValueError(f"stack: array {k} has shape {arr.shape}, array 0 has shape {shape}")
        _check_same_device(arrays[0], arr, "stack")
    axis = _normalize_axis(axis, len(shape) + 1)
    out = empty(shape[:axis] + (len(arrays),) + shape[axis:], arrays[0].dtype, arrays[0].device)
    index = [slice(None)] * out.ndim
    for k, arr in enumerate(arrays):
        index[axis] = k
        out[tuple(index)] = arr
    return out


def unstack(a: NDArray, axis: int = 0) -> tuple[NDArray, ...]:
    """The slices of `a` along `axis`, that axis removed, each a compact array (numpy's unstack)."""
    axis = _normalize_axis(axis, a.ndim)
    shape = a.shape[:axis] + a.shape[axis + 1 :]
    index = [slice(None)] * a.ndim
    parts = []
    for k in range(a.shape[axis]):
        index[axis] = k
        parts.append(a[tuple(index)].compact().reshape(shape))
    return tuple(parts)


def as_strided(a: NDArray, shape, strides) -> NDArray:
    """View with element strides; the caller keeps it inside the buffer."""
    return a.as_strided(shape, strides)


def take_rows(a: NDArray, indices) -> NDArray:
    return a.take_rows(indices)


def index_add_rows(a: NDArray, indices, values: NDArray) -> None:
    a.index_add_rows(indices, values)


__all__ = [
    "NDArray", "BackendDevice", "cpu", "cpu_numpy", "cuda", "default_device", "all_devices",
    "array", "empty", "full", "zeros_like", "ones_like", "full_like", "empty_like",
    "broadcast_to", "reshape", "transpose", "swapaxes", "ascontiguousarray", "maximum", "log",
    "exp", "tanh", "matmul", "sum", "max", "argmax", "flip", "pad", "stack", "unstack",
    "as_strided", "take_rows", "index_add_rows", "prod", "broadcast_shapes", "normalize_dtype",
    "normalize_axes", "FLOAT_DTYPES",
]
