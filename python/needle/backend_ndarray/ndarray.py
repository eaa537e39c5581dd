"""NDArray: an n-dimensional view (shape, strides, offset) over a flat device buffer.

Views (reshape, permute, broadcast_to, slicing) share the buffer and never copy.
Everything that computes goes through the device's kernels (`interface.py`),
which read strided views in place and write compact results. Arrays hold one of
the storage dtypes of `needle.dtypes` (float32 by default); binary operations
broadcast like numpy and promote like PyTorch (`needle.dtypes.result_dtype`).
"""
from __future__ import annotations

import builtins
import functools
import math
import operator
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ..dtypes import DEFAULT_FLOAT, FLOAT_DTYPES, HostScalar, division_dtype, result_dtype, scalar_kind, storage_dtype
from ..primitives import PRIMITIVES, Primitive
from . import recording
from .device import BackendDevice, check_enabled, default_device

__all__ = ["NDArray", "prod", "broadcast_shapes", "normalize_axes"]


def prod(x) -> int:
    return math.prod(x)


def _as_scalar(value):
    """A Python number from a number, numpy scalar or one-element numpy array."""
    if isinstance(value, (int, float)):
        return value
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"expected an NDArray or a number, got {type(value).__name__}")
    return arr.item()


def _scalar_of_kind(value, dtype: str):
    """`value` as the Python type of dtype's kind (the kernels' scalar argument)."""
    if dtype in FLOAT_DTYPES:
        return float(value)
    return int(value) if dtype == "int64" else bool(value)


def _normalize_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
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


@functools.lru_cache(maxsize=1024)
def _broadcast_shapes(*shapes) -> tuple[int, ...]:
    ndim = builtins.max(len(s) for s in shapes)
    result = []
    for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            shown = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(f"shapes {shown} cannot be broadcast together")
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy's broadcasting rule; ValueError naming the shapes when it fails."""
    return _broadcast_shapes(*(tuple(s) for s in shapes))


def _check_real(data) -> None:
    """Refuse what needle cannot store instead of letting numpy drop parts of it (complex
    numbers lose their imaginary part in a cast to float, with only a warning)."""
    kind = getattr(getattr(data, "dtype", None), "kind", None)
    if kind is None and isinstance(data, (list, tuple, complex)):
        kind = np.asarray(data).dtype.kind
    if kind in ("c", "O", "U", "S", "M", "m", "V"):
        found = getattr(data, "dtype", None) or np.asarray(data).dtype
        raise TypeError(f"cannot store data of dtype {found}: needle stores float32, float64, int64 and bool")


class NDArray:
    """A strided n-dimensional array of one storage dtype on a device."""

    _shape: tuple[int, ...]
    _strides: tuple[int, ...]  # in elements
    _offset: int
    _device: BackendDevice
    _handle: Any  # the device's buffer
    _compact: Optional[bool]  # None: worked out on first use

    # slots: every op makes one or more arrays, and slotted ones are quicker to make, read and free
    __slots__ = ("_shape", "_strides", "_offset", "_device", "_handle", "_compact", "__weakref__")

    __array_ufunc__ = None  # numpy scalars defer to our reflected operators

    def __init__(self, other, device: BackendDevice | None = None, dtype=None):
        """A copy of `other` (an NDArray, numpy array or nested list) on `device`.

        dtype None keeps an NDArray's dtype and stores anything else as float32 (the
        course's rule); pass dtype to store float64, int64 or bool.
        """
        if isinstance(other, NDArray):
            device = other.device if device is None else device
            dtype = other.dtype if dtype is None else storage_dtype(dtype)
            if device == other.device:
                self._init(other._copy(dtype))
            else:
                self._init(NDArray(other.numpy(), device=device, dtype=dtype))
            return
        device = default_device() if device is None else device
        check_enabled(device)
        _check_real(other)
        data = np.asarray(other, dtype=storage_dtype(dtype), order="C")  # keeps 0-d shape ()
        array = NDArray.make(data.shape, device=device, dtype=data.dtype.name)
        if data.size:
            device.call("from_numpy", data, array._handle)
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
        """Wrap `handle` (or allocate a new buffer of `dtype`) with the given layout; no initialisation."""
        shape = tuple(map(int, shape))
        device = default_device() if device is None else device
        if handle is None:
            if strides is None:
                return _fresh(shape, device, dtype)
            return _new(shape, tuple(strides), device, device.allocate(math.prod(shape), dtype), offset, False)
        return _new(shape, _compact_strides(shape) if strides is None else tuple(strides), device, handle, offset,
                    None)  # compactness worked out on first use

    # --- properties ---------------------------------------------------------
    if TYPE_CHECKING:
        @property
        def shape(self) -> tuple[int, ...]: ...

        @property
        def strides(self) -> tuple[int, ...]: ...  # in elements

        @property
        def device(self) -> BackendDevice: ...

        @property
        def dtype(self) -> str: ...  # the storage dtype's name
    else:
        # read on the path of every op: getters made by operator.attrgetter run without a Python frame
        shape = property(operator.attrgetter("_shape"), doc="The shape, a tuple of ints.")
        strides = property(operator.attrgetter("_strides"), doc="The strides, in elements.")
        device = property(operator.attrgetter("_device"), doc="The device holding the buffer.")
        dtype = property(operator.attrgetter("_handle.dtype"), doc="The storage dtype's name (\"float32\", ...).")

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
        return self._device.call("to_numpy", self._handle, self._shape, self._strides, self._offset)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def _host_view(self) -> np.ndarray:
        """A numpy view (no copy) of a host array; TypeError for device memory."""
        from .host_buffer import Array, strided_view

        if not isinstance(self._handle, Array):
            raise TypeError(f"a numpy view needs host memory; this array is on {self._device}")
        return strided_view(self._handle, self._shape, self._strides, self._offset)

    def __dlpack__(self, *args, **kwargs):
        """DLPack export without a copy (torch.from_dlpack, np.from_dlpack); a device module
        with memory of its own exports it (cuda: through CuPy, else a TypeError naming the
        alternative)."""
        export = getattr(self._device.mod, "dlpack", None)
        if export is not None:
            return export(self._handle, self._shape, self._strides, self._offset, *args, **kwargs)
        return self._host_view().__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        where = getattr(self._device.mod, "dlpack_device", None)
        return where(self._handle) if where is not None else self._host_view().__dlpack_device__()

    @property
    def __cuda_array_interface__(self) -> dict:
        """The CUDA Array Interface of a GPU array (zero-copy for CuPy, PyTorch, numba);
        AttributeError for arrays in host memory."""
        describe = getattr(self._device.mod, "cuda_array_interface", None)
        if describe is None:
            raise AttributeError(f"__cuda_array_interface__: this array is in host memory ({self._device})")
        compact = self._strides == _compact_strides(self._shape)
        return describe(self._handle, self._shape, None if compact else self._strides, self._offset)

    def to(self, device: BackendDevice) -> "NDArray":
        """This array on `device`: itself when it is there already, else a copy through the host."""
        if device == self._device:
            return self
        check_enabled(device)
        return NDArray(self.numpy(), device=device, dtype=self.dtype)

    def astype(self, dtype) -> "NDArray":
        """This array converted to `dtype` (itself when it already has it)."""
        dtype = storage_dtype(dtype)
        return self if dtype == self.dtype else self._copy(dtype)

    def fill(self, value) -> None:
        """Set every element of this view to `value`, in place."""
        val = _scalar_of_kind(_as_scalar(value), self.dtype)
        device = self._device
        if device.recorder is None and self.is_compact():
            device.fill(self._handle, val)  # the whole buffer: the interface's own kernel for it
            return
        device.call("scalar_setitem", self.size, val, self._handle, self._shape, self._strides, self._offset)

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

    def _copy(self, dtype: str | None = None) -> "NDArray":
        out = _fresh(self._shape, self._device, self._handle.dtype if dtype is None else dtype)
        if out._handle.size:
            self._device.call("compact", self._handle, out._handle, self._shape, self._strides, self._offset)
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
        shape = tuple(map(int, new_shape))
        size = math.prod(self._shape)
        if -1 in shape or math.prod(shape) != size or (shape and builtins.min(shape) < 0):
            shape = _resolve_shape(shape, size, self._shape)
        if not self.is_compact():
            raise ValueError(
                f"reshape of a non-compact array (shape {self._shape}, strides {self._strides}); call compact() first"
            )
        return _new(shape, _compact_strides(shape), self._device, self._handle, self._offset, True)

    def permute(self, new_axes) -> "NDArray":
        """View with axes reordered: axis i of the result is axis new_axes[i] of self."""
        axes = new_axes if type(new_axes) is tuple and _all_ints(new_axes) else tuple(map(int, new_axes))
        ndim = len(self._shape)
        if not _is_permutation(axes, ndim):
            raise ValueError(f"permute: {axes} is not a permutation of the {ndim} axes of shape {self._shape}")
        shape, strides = self._shape, self._strides
        return _new(tuple([shape[a] for a in axes]), tuple([strides[a] for a in axes]), self._device, self._handle,
                    self._offset, None)

    def transpose(self, axes=None) -> "NDArray":
        """numpy's transpose: reverse the axes, or permute them by `axes`."""
        return self.permute(tuple(reversed(range(self.ndim))) if axes is None else axes)

    def swapaxes(self, axis1: int, axis2: int) -> "NDArray":
        if len(self._shape) == 2 and axis1 in (-2, 0) and axis2 in (-1, 1):  # a matrix's transpose (every
            # matmul gradient takes one): the view without permute's checks
            (rows, cols), (s0, s1) = self._shape, self._strides
            return _new((cols, rows), (s1, s0), self._device, self._handle, self._offset, None)
        order = list(range(self.ndim))
        i, j = _normalize_axis(axis1, self.ndim), _normalize_axis(axis2, self.ndim)
        order[i], order[j] = order[j], order[i]
        return self.permute(order)

    def broadcast_to(self, new_shape) -> "NDArray":
        """View with size-1 (or missing leading) axes repeated by a zero stride."""
        new_shape = tuple(map(int, new_shape))
        if new_shape == self._shape:
            return self
        strides = _broadcast_strides(self._shape, self._strides, new_shape)
        if strides is None:
            raise ValueError(f"cannot broadcast an array of shape {self._shape} to shape {new_shape}")
        return _new(new_shape, strides, self._device, self._handle, self._offset, None)

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
        """A view; integer indices keep their axis with length 1 (the course's rule)."""
        if type(idxs) is tuple and len(idxs) == len(self._shape):
            view = self._basic_view(idxs)
            if view is not None:
                return view
        idxs = self._expand_index(idxs)
        shape, strides, offset = [], [], self._offset
        for sl, stride in zip(idxs, self._strides):
            shape.append(len(range(sl.start, sl.stop, sl.step)))
            strides.append(stride * sl.step)
            offset += sl.start * stride
        return NDArray.make(shape, strides=strides, device=self._device, handle=self._handle, offset=offset)

    def _basic_view(self, idxs: tuple) -> Optional["NDArray"]:
        """__getitem__ for one plain int or slice (positive step) per axis, in range, worked out in
        one pass (the view _expand_index's normalised slices give); None for anything else, which
        the general path handles (and refuses with its messages)."""
        shape, strides, offset = [], [], self._offset
        for idx, n, stride in zip(idxs, self._shape, self._strides):
            if type(idx) is slice:
                step = idx.step
                if step is not None and (type(step) is not int or step <= 0):
                    return None
                start, stop, step = idx.indices(n)
                shape.append(len(range(start, stop, step)) if stop > start else 0)
                strides.append(stride * step)
                offset += start * stride
            elif type(idx) is int and -n <= idx < n:
                shape.append(1)
                strides.append(stride)
                offset += (idx % n) * stride
            else:
                return None
        return _new(tuple(shape), tuple(strides), self._device, self._handle, offset, None)

    def __setitem__(self, idxs, other) -> None:
        """Write `other` (array broadcastable to the view, or a scalar) into the view, in place."""
        view = self if idxs == () else self.__getitem__(idxs)  # x[()] is all of x, as in numpy
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
            self._device.call("ewise_setitem", source._handle, self._handle, view._shape, view._strides, view._offset)
        else:
            self._device.call("scalar_setitem",
                view.size, _scalar_of_kind(_as_scalar(other), self.dtype), self._handle, view._shape,
                view._strides, view._offset,
            )

    def _index_operand(self, indices) -> "NDArray":
        """Integer indices (NDArray or numpy/list) as an int64 operand on this device."""
        if not isinstance(indices, NDArray):
            idx = np.asarray(indices)
            if idx.dtype.kind not in "iu" and not (idx.dtype.kind == "f" and np.all(idx == np.round(idx))):
                raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
            indices = NDArray(idx, device=self._device, dtype="int64")
        else:
            _check_same_device(self, indices, "indexing")
            if indices.dtype == "bool":
                raise TypeError("a bool array is a mask, not row indices")
            indices = indices.astype("int64")
        return indices

    def take_rows(self, indices) -> "NDArray":
        """Rows of self (axis 0) picked by integer indices: result shape indices.shape + shape[1:].

        Negative indices count from the end; IndexError outside [-rows, rows).
        """
        if not self._shape:
            raise ValueError("cannot index rows of a 0-d array")
        idx = self._index_operand(indices)
        row_size = prod(self._shape[1:])
        out = NDArray.make(idx.shape + self._shape[1:], device=self._device, dtype=self.dtype)
        if out.size or idx.size:
            self._device.call("take_rows", self.compact()._handle, idx._operand(), out._handle, row_size)
        return out

    def index_add_rows(self, indices, values: "NDArray") -> None:
        """In place: self[indices[i]] += values[i] (axis 0); repeated indices accumulate."""
        if not self.is_compact():
            raise ValueError("index_add_rows needs a compact destination")
        idx = self._index_operand(indices)
        expected = idx.shape + self._shape[1:]
        if values.shape != expected:
            raise ValueError(f"index_add_rows: values of shape {values.shape}, expected {expected}")
        _check_same_device(self, values, "index_add_rows")
        if idx.size:
            self._device.call("index_add_rows",
                values.astype(self.dtype).compact()._handle, idx._operand(), self._handle, prod(self._shape[1:])
            )

    # --- elementwise arithmetic ----------------------------------------------
    def _operand(self) -> tuple:
        """How kernels read this array: (handle, shape, strides, offset), strides None when compact.

        Elementwise, reduction and matmul kernels read strided views directly, so
        broadcasts, transposes and slices are never copied just to be read.
        """
        compact = self._compact
        if compact is None:
            compact = self.is_compact()
        return self._handle, self._shape, None if compact else self._strides, self._offset

    def _binary(self, other, ewise: str, scalar: str, rule=result_dtype, out_dtype: str | None = None,
                cast: bool = True) -> "NDArray":
        """self (op) other for an NDArray or scalar `other`, broadcasting and promoting.

        `rule` gives the dtype both operands are converted to; `out_dtype` overrides the
        result's (bool for comparisons). With cast=False a scalar is passed as it is
        (comparisons of an int array with 0.5 need no float copy of the array).
        """
        device = self._device
        if isinstance(other, NDArray):
            if other._device is not device:
                _check_same_device(self, other, ewise)
            a_dtype, b_dtype = self._handle.dtype, other._handle.dtype
            dtype = a_dtype if a_dtype == b_dtype and rule is result_dtype else rule(a_dtype, b_dtype)
            a = self if a_dtype == dtype else self.astype(dtype)
            b = other if b_dtype == dtype else other.astype(dtype)
            shape = a._shape
            if shape != b._shape:
                shape = broadcast_shapes(shape, b._shape)
                a, b = a.broadcast_to(shape), b.broadcast_to(shape)
            out = _fresh(shape, device, out_dtype or dtype)
            if out._handle.size:
                # _operand() of both, inline: a compact operand is read without its strides
                compact = a._compact
                a_compact = a.is_compact() if compact is None else compact
                compact = b._compact
                b_compact = b.is_compact() if compact is None else compact
                if device.recorder is None:  # device.call's own test, without its frame
                    if a_compact and b_compact:
                        # two whole buffers of one shape: the kernel reads them as they are (an
                        # operand form of the interface; elementwise, so the layout of the
                        # reading does not change a bit)
                        getattr(device, ewise)(a._handle, b._handle, out._handle)
                    else:
                        getattr(device, ewise)((a._handle, shape, None if a_compact else a._strides, a._offset),
                                               (b._handle, shape, None if b_compact else b._strides, b._offset),
                                               out._handle)
                else:
                    device.call(ewise, (a._handle, shape, None if a_compact else a._strides, a._offset),
                                (b._handle, shape, None if b_compact else b._strides, b._offset), out._handle)
            return out
        if isinstance(other, HostScalar):  # a runtime input of a compiled step: passed on as it is
            dtype = rule(self.dtype, other.value, b_is_scalar=True)
            arg = other if recording.is_recording() else other.value
        else:
            value = other if type(other) is float or type(other) is int else _as_scalar(other)
            dtype = rule(self._handle.dtype, value, b_is_scalar=True)
            arg = value if not cast else _scalar_of_kind(value, dtype)
        a = self if self._handle.dtype == dtype or not cast else self.astype(dtype)
        out = _fresh(self._shape, device, out_dtype or dtype)
        if out._handle.size:
            if device.recorder is None:
                getattr(device, scalar)(a._eager_operand(), arg, out._handle)
            else:
                device.call(scalar, a._operand(), arg, out._handle)
        return out

    def _eager_operand(self):
        """_operand() for an eager kernel call (no recorder): a compact array is passed as its
        buffer alone, which elementwise kernels read as it is (same values, less to unpack)."""
        compact = self._compact
        if compact is None:
            compact = self.is_compact()
        if compact:
            return self._handle
        return self._handle, self._shape, self._strides, self._offset

    def _unary(self, kernel: str, floating: bool = False) -> "NDArray":
        """A kernel of one operand; `floating` functions turn int/bool input into float32 first."""
        a = self.astype(DEFAULT_FLOAT) if floating and self._handle.dtype not in FLOAT_DTYPES else self
        device = self._device
        out = _fresh(self._shape, device, a._handle.dtype)
        if out._handle.size:
            if device.recorder is None:
                getattr(device, kernel)(a._eager_operand(), out._handle)
            else:
                device.call(kernel, a._operand(), out._handle)
        return out

    # The arithmetic, comparison and math methods (__add__, __rsub__, maximum, __lt__, exp,
    # sigmoid, ...) are made from the rows of needle.primitives below the class.
    __hash__ = None  # type: ignore[assignment]  # unhashable, like numpy's arrays (== is elementwise)

    # --- matmul ---------------------------------------------------------------
    def __matmul__(self, other: "NDArray") -> "NDArray":
        """numpy's matmul: 2-D, 1-D and batched operands with broadcast batch axes."""
        if not isinstance(other, NDArray):
            raise TypeError(f"matmul needs two NDArrays, got {type(other).__name__}")
        _check_same_device(self, other, "matmul")
        if len(self._shape) == 2 and len(other._shape) == 2 and self._handle.dtype == other._handle.dtype:
            # two matrices of one dtype (most products): what the general path below does for them,
            # without its reshapes and casts
            (m, n), (n2, p) = self._shape, other._shape
            if n == n2 and n:
                device = self._device
                out = _fresh((m, p), device, self._handle.dtype)
                if m and p:
                    if device.recorder is None:
                        device.matmul(self._operand(), other._operand(), out._handle, m, n, p)
                    else:
                        device.call("matmul", self._operand(), other._operand(), out._handle, m, n, p)
                return out
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {self._shape} and {other._shape}")
        a = self.reshape_compact((1,) + self._shape) if self.ndim == 1 else self
        b = other.reshape_compact(other._shape + (1,)) if other.ndim == 1 else other
        (m, n), (n2, p) = a._shape[-2:], b._shape[-2:]
        if n != n2:
            raise ValueError(f"matmul: inner dimensions differ for shapes {self._shape} and {other._shape}")
        dtype = result_dtype(a.dtype, b.dtype)
        a, b = a.astype(dtype), b.astype(dtype)
        if b.ndim == 2:  # fold a's batch axes into its rows: one 2-D product
            lead = a._shape[:-2]
            rows = prod(lead) * m
            if lead:
                a = a.reshape_compact((rows, n))
            out = NDArray.make((rows, p), device=self._device, dtype=dtype)
            if out.size:
                self._device.call("matmul", a._operand(), b._operand(), out._handle, rows, n, p)
            out = out.reshape(lead + (m, p))
        else:
            try:
                batch = broadcast_shapes(a._shape[:-2], b._shape[:-2])
            except ValueError:
                raise ValueError(
                    f"matmul: batch dimensions of {self._shape} and {other._shape} do not broadcast"
                ) from None
            a, b = a.broadcast_to(batch + (m, n)), b.broadcast_to(batch + (n, p))
            # BLAS reads a transposed or strided matrix in place, batch axes at any stride
            # (attention's heads, a broadcast weight), so only other layouts are copied -- and
            # one buffer read twice (numpy's matmul would run syrk on A @ A.T), and a transposed
            # b after a row-major a: OpenBLAS's small-matrix kernel for that pair ran attention's
            # q @ k^T (64x32 @ 32x64) at half the speed of the copy and the row-major pair.
            if a._handle is b._handle or not a._blas_matrices():
                a = a.compact()
            if not b._blas_matrices() or (b._strides[-1] != 1 and a._strides[-1] == 1):
                b = b.compact()
            out = NDArray.make(batch + (m, p), device=self._device, dtype=dtype)
            if out.size:
                self._device.call("matmul", a._operand(), b._operand(), out._handle, m, n, p, prod(batch))
        if out.size and n == 0:  # an empty inner dimension sums nothing
            out.fill(0)
        if self.ndim == 1:
            out = out.reshape(out._shape[:-2] + out._shape[-1:])
        if other.ndim == 1:
            out = out.reshape(out._shape[:-1])
        return out

    def _blas_matrices(self) -> bool:
        """Whether BLAS reads each matrix (the last two axes) of this view in place: one axis at
        unit stride, the other at a stride of at least the first's length (numpy's test before
        it calls gemm), and no negative stride anywhere."""
        if self.is_compact():
            return True
        rows, cols = self._shape[-2:]
        row_stride, col_stride = self._strides[-2:]
        if min(self._strides) < 0:
            return False
        return (col_stride == 1 and row_stride >= cols) or (row_stride == 1 and col_stride >= rows)

    def reshape_compact(self, new_shape) -> "NDArray":
        """compact() then reshape(): a view when possible, a copy otherwise."""
        return self.compact().reshape(new_shape)

    # --- reductions -------------------------------------------------------------
    def _reduce(self, kernel: str, axis, keepdims: bool, out_dtype: str, whole: tuple = (1,)) -> "NDArray":
        """Reduce `axis` (None: every axis) with `kernel` into a new array of `out_dtype`; with
        axis None and no keepdims the result has shape `whole` (the course's NDArray gives (1,),
        array_api's functions numpy's ())."""
        shape = self._shape
        ndim = len(shape)
        device = self._device
        if axis is None:
            reduce_size = math.prod(shape)
            if reduce_size == 0 and kernel != "reduce_sum":
                raise ValueError(f"{kernel}: cannot reduce a zero-size axis of shape {self._shape}")
            # the result made in its final shape (one element either way)
            out = _fresh((1,) * ndim if keepdims else whole, device, out_dtype)
            if reduce_size == 0:
                out.fill(0)
            elif device.recorder is None:
                # every axis reduced, in order: the kernel reads the array as it is (a compact one
                # as its whole buffer, one block of reduce_size elements)
                getattr(device, kernel)(self._eager_operand(), out._handle, reduce_size)
            else:
                device.call(kernel, self._operand(), out._handle, reduce_size)
            return out
        if type(axis) is int or (type(axis) is tuple and _all_ints(axis)):
            # the usual forms: the plan is kept (errors are not)
            order, out_shape, reduce_size, kept_shape = _reduce_plan(shape, axis)
        else:
            order, out_shape, reduce_size, kept_shape = _reduce_plan.__wrapped__(shape, axis)
        # reduced axes last; the kernel reads the view
        view = self if order is None else self.permute(order)
        if reduce_size == 0 and kernel != "reduce_sum":
            raise ValueError(f"{kernel}: cannot reduce a zero-size axis of shape {self._shape}")
        out = _fresh(out_shape, device, out_dtype)
        if reduce_size == 0:
            out.fill(0)
        elif out._handle.size:
            if device.recorder is None:
                getattr(device, kernel)(view._operand(), out._handle, reduce_size)
            else:
                device.call(kernel, view._operand(), out._handle, reduce_size)
        if keepdims:
            return out._reshaped(kept_shape)
        return out

    def _reshaped(self, shape: tuple) -> "NDArray":
        """A view of this fresh compact array with `shape` of the same size (no checks: internal)."""
        return _new(shape, _compact_strides(shape), self._device, self._handle, self._offset, self._compact)

    def sum(self, axis=None, keepdims: bool = False) -> "NDArray":
        """Sum over `axis` (None: all, giving shape (1,)); bool and int64 sum into int64."""
        return self._reduce("reduce_sum", axis, keepdims, self.dtype if self.dtype in FLOAT_DTYPES else "int64")

    def max(self, axis=None, keepdims: bool = False) -> "NDArray":
        return self._reduce("reduce_max", axis, keepdims, self.dtype)

    def min(self, axis=None, keepdims: bool = False) -> "NDArray":
        return self._reduce("reduce_min", axis, keepdims, self.dtype)

    def argmax(self, axis=None, keepdims: bool = False) -> "NDArray":
        """Index (int64) of the first maximum; over the flattened array if axis is None."""
        if axis is None:
            return self.reshape_compact((self.size,))._reduce("reduce_argmax", 0, False, "int64").reshape((1,))
        return self._reduce("reduce_argmax", _normalize_axis(axis, self.ndim), keepdims, "int64")

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
            raise ValueError(f"pad needs one non-negative (left, right) pair per axis of shape {self._shape}, "
                             f"got {axes}")
        out = self._device.full(tuple(d + l + r for d, (l, r) in zip(self._shape, axes)), 0, self.dtype)
        out[tuple(slice(l, l + d) for d, (l, _) in zip(self._shape, axes))] = self
        return out


# --- helpers ---------------------------------------------------------------------

_object_new = object.__new__


def _new(shape: tuple, strides: tuple, device: BackendDevice, handle, offset: int, compact) -> NDArray:
    """An NDArray with exactly this layout (ints in tuples, not checked): the array layer's
    own constructor, on the path of every op."""
    array = _object_new(NDArray)
    array._shape = shape
    array._strides = strides
    array._offset = offset
    array._device = device
    array._handle = handle
    array._compact = compact
    return array


def _fresh(shape: tuple, device: BackendDevice, dtype: str) -> NDArray:
    """A new compact array of `shape` (a tuple of ints) and `dtype` on `device`, uninitialised."""
    array = _object_new(NDArray)
    array._shape = shape
    array._strides = _compact_strides(shape)
    array._offset = 0
    array._device = device
    # device.allocate, inline without a recorder (this is on the path of every op)
    array._handle = device.Array(math.prod(shape), dtype) if device.recorder is None else \
        device.allocate(math.prod(shape), dtype)
    array._compact = True
    return array


@functools.lru_cache(maxsize=1024)
def _broadcast_strides(shape: tuple, strides: tuple, new_shape: tuple) -> Optional[tuple]:
    """The strides of `shape` (with `strides`) broadcast to `new_shape` (0 on every repeated axis),
    None when numpy's rule does not allow it (kept: a step broadcasts the same shapes again)."""
    lead = len(new_shape) - len(shape)
    if lead < 0 or any(s != 1 and s != n for s, n in zip(shape, new_shape[lead:])):
        return None
    return (0,) * lead + tuple(0 if s == 1 and n != 1 else st for s, n, st in zip(shape, new_shape[lead:], strides))


def _all_ints(items: tuple) -> bool:
    """Whether every item is exactly an int (bools, floats and numpy integers compare and hash
    equal to ints, but are checked differently): such a tuple can key a cache."""
    for item in items:
        if type(item) is not int:
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _reduce_plan(shape: tuple, axis) -> tuple:
    """How _reduce reduces `axis` (not None) of `shape`: (the permutation putting the reduced axes
    last, None when they are already; the kept shape; the reduced size; the kept shape with
    the reduced axes as 1s, for keepdims)."""
    ndim = len(shape)
    axes = normalize_axes(axis, ndim)
    kept = tuple(a for a in range(ndim) if a not in axes)
    order = kept + axes
    return (None if order == tuple(range(ndim)) else order, tuple(shape[a] for a in kept),
            prod(shape[a] for a in axes), tuple(1 if a in axes else d for a, d in enumerate(shape)))


@functools.lru_cache(maxsize=1024)
def _is_permutation(axes: tuple, ndim: int) -> bool:
    """Whether the ints `axes` name each of ndim axes once (negative ones counting from the end);
    kept: a step permutes with the same orders again."""
    if len(axes) != ndim or (ndim and (builtins.min(axes) < -ndim or builtins.max(axes) >= ndim)):
        return False
    return len({a % ndim for a in axes}) == ndim


@functools.lru_cache(maxsize=4096)
def _compact_strides(shape: tuple) -> tuple:
    """Row-major element strides of `shape` (cached: every new array needs them)."""
    stride = 1
    res = []
    for d in reversed(shape):
        res.append(stride)
        stride *= d
    return tuple(reversed(res))


def _check_same_device(a: NDArray, b: NDArray, what: str) -> None:
    if a._device is not b._device and a._device != b._device:
        raise ValueError(f"{what}: arrays are on different devices ({a._device} and {b._device}); move one with .to()")


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


# --- the primitives' methods ------------------------------------------------------------------------

_RULES = {"promote": (result_dtype, None, True), "division": (division_dtype, None, True),
          "bool": (result_dtype, "bool", False)}


def _refuse_bool(p: Primitive, *operands) -> None:
    """numpy's rule for - and negation of bools, which have no arithmetic meaning."""
    def is_bool(x):
        return x.dtype == "bool" if isinstance(x, NDArray) else scalar_kind(_as_scalar(x)) == "b"

    if all(is_bool(x) for x in operands):
        if p.arity == 1:
            raise TypeError("negating a bool array is not supported; use == False for a logical not")
        raise TypeError("subtracting bool arrays is not supported; use != for a logical xor")


def _primitive_method(p: Primitive, scalar_kernel: str):
    ewise = f"ewise_{p.name}"
    method: Callable[..., NDArray]  # unary or binary
    refuses_bool, floating = p.refuses_bool, p.floating  # read once: the methods run on every op
    if p.arity == 1:
        def method(self):
            if refuses_bool:
                _refuse_bool(p, self)
            return self._unary(ewise, floating)
    else:
        rule, out_dtype, cast = _RULES[p.dtype]

        def method(self, other):
            if refuses_bool:
                _refuse_bool(p, self, other)
            return self._binary(other, ewise, scalar_kernel, rule, out_dtype, cast)
        if not refuses_bool:
            # what the method passes to _binary: array_api's function calls _binary with these itself
            method._binary_args = (ewise, scalar_kernel, rule, out_dtype, cast)  # type: ignore[attr-defined]
    method.__doc__ = f"Elementwise {p.function} (needle.primitives row {p.name!r})."
    return method


def _reflected_name(method: str) -> str:
    return "__r" + method[2:]  # __sub__ -> __rsub__


for _p in PRIMITIVES:
    for _name in _p.methods:
        setattr(NDArray, _name, _primitive_method(_p, f"scalar_{_p.scalar_kernel or _p.name}"))
    if _p.reflected:
        setattr(NDArray, _reflected_name(_p.methods[0]), _primitive_method(_p, f"scalar_{_p.reflected}"))
