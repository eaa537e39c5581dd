"""The array functions of the NDArray layer: what `needle.ops` calls as `array_api.*` in nd mode.

`needle.backend_numpy` defines the same functions, with the same semantics, on numpy
arrays (numpy mode); `needle.array_interface` lists them. Ops use these functions
and nothing else, so they never branch on the backend.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from .. import host_ops
from ..dtypes import FLOAT_DTYPES, HostScalar, dtype_name, is_floating, result_dtype, scalar_dtype, storage_dtype
from ..primitives import BY_NAME, PRIMITIVES, Primitive
from .device import BackendDevice, check_enabled, default_device
from .ndarray import (
    NDArray,
    _check_same_device,
    _compact_strides,
    _normalize_axis,
    broadcast_shapes,
    normalize_axes,
    prod,
)
from .recording import constant_data, host_call, is_recording, validation

__all__ = [
    "array", "arange", "empty", "full", "zeros", "zeros_like", "ones_like", "full_like", "empty_like", "astype",
    "device_of", "dtype_of", "to_numpy", "from_numpy_shared", "is_array", "dtype_name", "is_floating",
    *(p.function for p in PRIMITIVES), "where", "sum", "max", "min", "addmm", "argmax", "matmul",
    "broadcast_to", "reshape", "transpose", "swapaxes", "ascontiguousarray", "as_strided", "element_strides",
    "flip", "pad", "stack", "unstack", "getitem", "setitem", "take_rows", "index_add_rows", "one_hot",
    "nonzero", "index_mask_shape", "as_index", "wrap_index", "extremes", "check_data", "check_extremes", "check_ids",
    "prod", "broadcast_shapes",
    "device_col2im", "device_im2col", "device_lstm_gates", "device_lstm_gates_backward", "threshold_backward",
    "tanh_backward",
    "device_batch_norm",
    "device_batch_norm_backward", "device_nll_loss", "device_nll_loss_backward", "device_layer_norm",
    "device_layer_norm_backward", "device_softmax", "device_softmax_backward", "device_log_softmax",
    "device_log_softmax_backward", "device_log_softmax_nll_backward",
    "device_add_n",
    "normalize_axes", "host_call",
    "is_recording", "validation", "constant_data", "storage", "owns_storage", "random_draw", "multinomial", "argsort",
    "sgd_step", "sgd_step_many", "adam_step", "rmsprop_step", "adagrad_step", "adadelta_step",
]


def is_array(a) -> bool:
    return isinstance(a, NDArray)


# --- creation -------------------------------------------------------------------------

def array(a, dtype="float32", device=None) -> NDArray:
    """A copy of `a` on `device`; dtype None keeps an NDArray's dtype, else float32 (the course's rule)."""
    if isinstance(a, NDArray) and dtype is None:
        return NDArray(a, device=device)
    return NDArray(a, device=device, dtype=dtype)


def empty(shape, dtype="float32", device=None) -> NDArray:
    device = default_device() if device is None else device
    return device.empty(shape, dtype)


def full(shape, fill_value, dtype="float32", device=None) -> NDArray:
    device = default_device() if device is None else device
    return device.full(shape, fill_value, dtype)


def zeros(shape, dtype="float32", device=None) -> NDArray:
    return full(shape, 0, dtype, device)


def arange(start, stop=None, step=1, dtype="int64", device=None) -> NDArray:
    """numpy's arange on the device (int64 by default)."""
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    with constant_data():  # a function of the bounds: a constant of a compiled step
        return NDArray(values, device=device, dtype=dtype)


def zeros_like(a: NDArray) -> NDArray:
    return full(a.shape, 0, a.dtype, a.device)


def ones_like(a: NDArray) -> NDArray:
    return full(a.shape, 1, a.dtype, a.device)


def full_like(a: NDArray, fill_value) -> NDArray:
    return full(a.shape, fill_value, a.dtype, a.device)


def empty_like(a: NDArray) -> NDArray:
    return empty(a.shape, a.dtype, a.device)


def astype(a: NDArray, dtype) -> NDArray:
    return a.astype(dtype)


def device_of(a: NDArray) -> BackendDevice:
    return a.device


def dtype_of(a: NDArray) -> str:
    return a.dtype


def to_numpy(a: NDArray) -> np.ndarray:
    return a.numpy()


def from_numpy_shared(x: np.ndarray, device=None):
    """An NDArray over the memory of a C-contiguous numpy array of a storage dtype (no copy),
    or None where that is impossible (another dtype or layout, or device memory)."""
    from .host_buffer import Array

    device = default_device() if device is None else device
    check_enabled(device)
    if x.dtype.name != storage_dtype(x.dtype) or not x.flags.c_contiguous or device.Array is not Array:
        return None
    return NDArray.make(x.shape, device=device, handle=Array.wrap(x.reshape(-1)))


# --- elementwise (arrays or scalars; broadcasting; PyTorch's promotion) --------------------------

def _lhs(a, b):
    """(array, other, swapped): the NDArray operand first, so `2 - x` works like `x.__rsub__(2)`."""
    if isinstance(a, NDArray):
        return a, b, False
    if isinstance(b, NDArray):
        return b, a, True
    raise TypeError(f"expected at least one NDArray operand, got {type(a).__name__} and {type(b).__name__}")


def _primitive_function(p: Primitive) -> Callable[..., NDArray]:
    """array_api.<p.function>: a method of the NDArray operand; a scalar on the left takes the
    reflected kernel (2 - x), or the swapped primitive's (2 < x is x > 2)."""
    function: Callable[..., NDArray]  # unary or binary
    if p.arity == 1:
        method = p.methods[0]
        unary = getattr(NDArray, method)

        def function(a):
            return unary(a) if isinstance(a, NDArray) else getattr(a, method)()
    else:
        method = p.methods[0]
        reflected = "__r" + method[2:] if p.reflected else (
            BY_NAME[p.swapped].methods[0] if p.swapped else None)

        bound = getattr(NDArray, method)

        def other_first(a, b):
            x, y, swapped = _lhs(a, b)
            if swapped and reflected is None:
                raise TypeError(f"{p.function}: the array operand must come first")
            return getattr(x, reflected if swapped else method)(y)

        direct = getattr(bound, "_binary_args", None)
        if direct is not None:  # the method only calls _binary: so does this, one frame less
            ewise, scalar, rule, out_dtype, cast = direct
            binary = NDArray._binary

            def function(a, b):
                if isinstance(a, NDArray):
                    return binary(a, b, ewise, scalar, rule, out_dtype, cast)
                return other_first(a, b)
        else:
            def function(a, b):
                return bound(a, b) if isinstance(a, NDArray) else other_first(a, b)
    function.__name__ = function.__qualname__ = p.function
    function.__doc__ = f"Elementwise {p.function} of arrays or an array and a scalar (broadcast, promoted)."
    return function


globals().update({p.function: _primitive_function(p) for p in PRIMITIVES})


def where(cond: NDArray, a, b) -> NDArray:
    """Elementwise `a if cond else b`; a and b are arrays or scalars, all three broadcast."""
    if not isinstance(cond, NDArray) or cond.dtype != "bool":
        raise TypeError("where: the condition must be a bool NDArray")
    device = cond.device
    if isinstance(a, NDArray) and isinstance(b, NDArray):
        dtype = result_dtype(a.dtype, b.dtype)
    elif isinstance(a, NDArray) or isinstance(b, NDArray):
        arr, scalar = (a, b) if isinstance(a, NDArray) else (b, a)
        dtype = result_dtype(arr.dtype, scalar, b_is_scalar=True)
    else:
        dtype = result_dtype(scalar_dtype(a), b, b_is_scalar=True)
    operands = []
    for v in (a, b):
        if isinstance(v, NDArray):
            _check_same_device(cond, v, "where")
            operands.append(v.astype(dtype))
        else:  # a scalar: a one-element buffer read through zero strides
            operands.append(full((), v, dtype, device))
    shape = broadcast_shapes(cond.shape, operands[0].shape, operands[1].shape)
    out = NDArray.make(shape, device=device, dtype=dtype)
    if out.size:
        device.call("ewise_where", *(v.broadcast_to(shape)._operand() for v in (cond, *operands)), out._handle)
    return out


# --- reductions ------------------------------------------------------------------------------

def sum(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:  # noqa: A001
    """NDArray.sum, but reducing every axis without keepdims gives shape () (numpy's)."""
    dtype = a._handle.dtype
    return a._reduce("reduce_sum", axis, keepdims, dtype if dtype in FLOAT_DTYPES else "int64", whole=())


def max(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:  # noqa: A001
    return a._reduce("reduce_max", axis, keepdims, a._handle.dtype, whole=())


def min(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:  # noqa: A001
    return a._reduce("reduce_min", axis, keepdims, a._handle.dtype, whole=())


def argmax(a: NDArray, axis=None, keepdims: bool = False) -> NDArray:
    out = a.argmax(axis=axis, keepdims=keepdims)
    return out.reshape(()) if axis is None else out


def matmul(a: NDArray, b: NDArray) -> NDArray:
    return a @ b


_ADDMM_MIN_OUTPUTS = 1 << 15


def addmm(bias: NDArray, a: NDArray, b: NDArray) -> NDArray:
    """bias + a @ b (PyTorch's addmm, as a Linear layer's forward): a (..., n), b (n, p), bias (p,)
    or (1, p) broadcast over the rows -- the bits of matmul then add. Where the device multiplies into
    existing values exactly (matmul_accumulate: sgemm with beta = 1, for float32 operands whose
    layout `accumulates_exactly` confirms, once per layout) the product is added to the bias rows
    as it is computed: one pass and one array fewer than the product and then the sum. Elsewhere,
    and while a compiled step records, the product and the add."""
    device = a.device
    if (device.recorder is None and hasattr(device.mod, "matmul_accumulate") and len(a.shape) >= 2
            and len(b.shape) == 2 and a.dtype == "float32" and b.dtype == "float32" and bias.dtype == "float32"
            and tuple(bias.shape) in ((b.shape[1],), (1, b.shape[1])) and a.shape[-1] == b.shape[0] and a.is_compact()
            and bias.device == device and b.device == device):
        (n, p), rows = b.shape, prod(a.shape[:-1])
        # (below some 32k outputs the sgemm call through ctypes costs more than the add it saves)
        if rows * p >= _ADDMM_MIN_OUTPUTS and n \
                and device.mod.accumulates_exactly(((rows, n), None), (b.shape, b.strides), rows, n, p):
            out = bias.broadcast_to((rows, p))._copy()  # the bias rows, in an array of their own
            device.matmul_accumulate(a._operand(), b._operand(), out._handle, rows, n, p)
            return out.reshape(tuple(a.shape[:-1]) + (p,))
    product = a @ b
    return add(product, broadcast_to(bias, product.shape))  # type: ignore[name-defined]  # noqa: F821


# --- layout ----------------------------------------------------------------------------------

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


def as_strided(a: NDArray, shape, strides) -> NDArray:
    """View with element strides; the caller keeps it inside the buffer."""
    return a.as_strided(shape, strides)


def element_strides(a: NDArray) -> tuple:
    return a.strides


def flip(a: NDArray, axes) -> NDArray:
    return a.flip(axes)


def pad(a: NDArray, pad_width) -> NDArray:
    return a.pad(pad_width)


def getitem(a: NDArray, index) -> NDArray:
    """A view by ints and slices; ints keep their axis (the NDArray rule; numpy mode drops it)."""
    return a[index]


def setitem(a: NDArray, index, value) -> None:
    a[index] = value


def storage(a: NDArray):
    """The buffer behind `a`, shared by all its views (weakly referenceable)."""
    return a._handle


def owns_storage(a: NDArray) -> bool:
    """True when `a` is its whole buffer (compact, from its first element): no other view of it
    can see a part of it that `a` does not."""
    return a.is_compact() and a._offset == 0 and a.size == a._handle.size


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
    dtype, device = arrays[0].dtype, arrays[0].device
    out = empty(shape[:axis] + (len(arrays),) + shape[axis:], dtype, device)
    # out[(:, ..., k)] = arr for each k, as that assignment does it, without working out the same
    # view from an index each time: the view keeps axis `axis` with length 1 at offset k * its stride
    view_shape = shape[:axis] + (1,) + shape[axis:]
    strides = out.strides
    for k, arr in enumerate(arrays):
        source = arr.astype(dtype).compact()
        device.call("ewise_setitem", source._handle, out._handle, view_shape, strides, k * strides[axis])
    return out


def unstack(a: NDArray, axis: int = 0) -> tuple:
    """The slices of `a` along `axis`, that axis removed, each a compact array (numpy's unstack)."""
    axis = _normalize_axis(axis, a.ndim)
    shape = a.shape[:axis] + a.shape[axis + 1 :]
    # a[(:, ..., k)] for each k, as indexing makes it: axis `axis` kept with length 1, the offset
    # moved by k of its strides
    view_shape = a.shape[:axis] + (1,) + a.shape[axis + 1:]
    strides, step = a.strides, a.strides[axis]
    parts = []
    for k in range(a.shape[axis]):
        view = NDArray.make(view_shape, strides=strides, device=a.device, handle=a._handle, offset=a._offset + k * step)
        parts.append(view.compact().reshape(shape))
    return tuple(parts)


# --- gather / scatter / one-hot on int64 indices --------------------------------------------

def take_rows(a: NDArray, indices) -> NDArray:
    """a[indices] along axis 0: shape indices.shape + a.shape[1:]."""
    return a.take_rows(indices)


def index_add_rows(out: NDArray, indices, values: NDArray) -> None:
    """In place: out[indices[i]] += values[i] along axis 0; repeats accumulate."""
    out.index_add_rows(indices, values)


def one_hot(n: int, indices, dtype="float32", device=None) -> NDArray:
    """Rows `indices` of the n x n identity: shape indices.shape + (n,), built on the device.

    `indices` is an NDArray or numpy array of class ids (any numeric dtype holding whole
    numbers); ValueError names the first id outside [0, n).
    """
    if isinstance(indices, NDArray):
        device = indices.device if device is None else device
        if indices.device != device:
            indices = indices.to(device)
    else:
        device = default_device() if device is None else device
        host = np.asarray(indices)
        if host.dtype.kind == "f":
            host_ops.check_ids(host, None, "one_hot")
        indices = NDArray(host, device=device, dtype="int64")
    idx = _whole_ids(indices)
    out = NDArray.make(idx.shape + (int(n),), device=device, dtype=storage_dtype(dtype))
    if idx.size:
        _call_on_class_ids(device, "one_hot_rows", idx._operand(), out._handle, int(n))
    return out


def _call_on_class_ids(device: BackendDevice, name: str, *args) -> None:
    """device.call(name, *args) for a kernel that reads class ids, its IndexError for an id out of
    range as one_hot's ValueError."""
    try:
        device.call(name, *args)
    except IndexError as err:
        raise ValueError(f"one_hot: {err}") from None


def nonzero(mask: NDArray) -> tuple:
    """The int64 indices of the true elements of a bool array, one array per axis (numpy's nonzero).

    How many there are is data, so it is read on the host; the result lives on mask's device.
    """
    if mask.dtype != "bool":
        raise TypeError(f"nonzero needs a bool array, got dtype {mask.dtype}")
    if is_recording():
        from .recording import TraceError

        raise TraceError("needle.compile: indexing with a bool mask gives a result whose size depends on the "
                         "data, which a replay cannot repeat; index with integer positions, or multiply by the mask")
    return tuple(NDArray(i, device=mask.device, dtype="int64") for i in np.nonzero(mask.numpy()))



# --- integer and mask indices for tensor indexing --------------------------------------------

def index_mask_shape(entry) -> Optional[tuple]:
    """The shape of an index entry that is a bool mask (NDArray, numpy array or list), else None."""
    if isinstance(entry, NDArray):
        return tuple(entry.shape) if entry.dtype == "bool" else None
    host = np.asarray(entry)
    return host.shape if host.dtype.kind == "b" else None


def as_index(entry, device=None) -> tuple:
    """An index entry (NDArray, numpy array, list or range) as int64 arrays on `device`: one
    array for integer indices, one per axis for a bool mask (numpy's nonzero). Float entries
    must hold whole numbers; TypeError for anything else."""
    if isinstance(entry, NDArray):
        device = entry.device if device is None else device
        if entry.device != device:
            entry = entry.to(device)
        if entry.dtype == "int64":
            return (entry,)
        if entry.dtype == "bool":
            return nonzero(entry)
        check_data(host_ops.check_whole_index, (entry,))  # on every replay too: the cast would truncate 1.5 to 1
        return (entry.astype("int64"),)
    host = np.asarray(entry)
    device = default_device() if device is None else device
    if host.dtype.kind == "b":
        return tuple(NDArray(i, device=device, dtype="int64") for i in np.nonzero(host))
    if host.dtype.kind == "f":
        host_ops.check_whole_index(host)
    elif host.dtype.kind not in "iu":
        raise TypeError(f"tensor indices must be integers or booleans, got dtype {host.dtype}")
    return (NDArray(host, device=device, dtype="int64"),)


def wrap_index(idx: NDArray, size: int, axis: int = 0) -> NDArray:
    """int64 indices into an axis of `size`, negatives counted from the end; IndexError naming
    the first one outside [-size, size). Only the extremes are read back to the host."""
    if idx.size == 0:
        return idx
    # checked on every replay of a compiled step (a replayed gather over several axes would read
    # an index past the end of one axis in the next row); a compiled step wraps whatever the
    # traced indices were, as a replay's may be negative
    if check_extremes(idx, _index_bounds, size, axis) or is_recording():
        # NDArray's operators are made from needle.primitives' rows, invisible to the checker
        return where(idx < 0, idx + size, idx)  # type: ignore[operator, arg-type]
    return idx


def _index_bounds(low: int, high: int, size: int, axis: int) -> bool:
    """IndexError for an index outside [-size, size); True when some index is negative."""
    if low < -size or high >= size:
        raise IndexError(f"index {low if low < -size else high} is out of bounds for axis {axis} with size {size}")
    return low < 0


def device_col2im(cols: NDArray, shape: tuple, kernel: tuple, stride: tuple, dilation: tuple,
                  top_left: tuple) -> Optional[NDArray]:
    """The windows `cols` (N, Ho, Wo, KH, KW, C) summed back into (N, H, W, C) = `shape` by the
    device's own col2im kernel (see interface.OptionalKernels), or None where the device has none
    (needle.ops._windows.col2im then runs its array-level sequence, with the same bits)."""
    device = cols.device
    if not hasattr(device.mod, "col2im"):
        return None
    out = NDArray.make(tuple(shape), device=device, dtype=cols.dtype)
    if out.size:
        device.call("col2im", cols._operand(), out._handle, tuple(shape), tuple(kernel), tuple(stride),
                    tuple(dilation), tuple(top_left))
    return out


def device_im2col(a: NDArray, kernel: tuple, stride: tuple, dilation: tuple, padding: tuple) -> Optional[NDArray]:
    """Every window of the (N, H, W, C) array `a` zero-padded by padding ((top, bottom), (left,
    right)), as a new compact (N, Ho, Wo, KH, KW, C) array, by the device's own im2col kernel (see
    interface.OptionalKernels; `a` is read in place, strided or not), or None where the device has
    none (needle.ops._windows then pads and compacts the window view: the same values)."""
    device = a.device
    if not hasattr(device.mod, "im2col") or len(a.shape) != 4:
        return None
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (top, bottom), (left, right) = padding
    n, h, w, c = a.shape
    ho, wo = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1
    out = NDArray.make((n, ho, wo, kh, kw, c), device=device, dtype=a.dtype)
    if out.size:
        device.call("im2col", a._operand(), out._handle, tuple(out.shape), (sh, sw), (dh, dw), (top, left))
    return out


def device_lstm_gates(z: NDArray, c0: NDArray) -> Optional[Tuple[NDArray, NDArray]]:
    """(h, c) (B, H each) of the LSTM cell from z (B, 4H) and c0 (B, H) by the device's own
    lstm_gates kernel (interface.OptionalKernels: the bits of needle.ops.lstm.LSTMGates' array
    sequence), or None where the device has none, the arrays are not dense (row-major, maybe a
    slab of a larger array: ops.lstm_layer's steps) non-empty float arrays of one dtype, or a
    compiled step is recording (its fusion takes the array sequence instead)."""
    if len(c0.shape) != 2 or z.shape != (c0.shape[0], 4 * c0.shape[1]) or not _dense_kernel_applies("lstm_gates",
                                                                                                     (c0, z)):
        return None
    h = NDArray.make(c0.shape, device=c0.device, dtype=c0.dtype)
    c = NDArray.make(c0.shape, device=c0.device, dtype=c0.dtype)
    c0.device.lstm_gates(z._operand(), c0._operand(), h._handle, c._handle, c0.shape[1])
    return h, c


def device_lstm_gates_backward(gh: Optional[NDArray], gc: Optional[NDArray], z: NDArray, c0: NDArray,
                               c: NDArray) -> Optional[Tuple[NDArray, NDArray]]:
    """(grad_z (B, 4H), grad_c0 (B, H)) of the LSTM cell from the adjoints gh, gc of h and c (None
    for one that did not reach it), z, c0 and the forward pass's c, by the device's own
    lstm_gates_backward kernel (interface.OptionalKernels: the bits of needle.ops.lstm.LSTMGatesGrad's
    array sequence), or None where it does not apply (as device_lstm_gates)."""
    states = [c0, c] + [x for x in (gh, gc) if x is not None]
    if len(c0.shape) != 2 or z.shape != (c0.shape[0], 4 * c0.shape[1]) \
            or any(x.shape != c0.shape for x in states) or not _dense_kernel_applies("lstm_gates_backward",
                                                                                   (*states, z)):
        return None
    device = c0.device
    batch, hidden = c0.shape
    grad_z = NDArray.make((batch, 4 * hidden), device=device, dtype=c0.dtype)
    grad_c0 = NDArray.make((batch, hidden), device=device, dtype=c0.dtype)
    spare = c0._operand()  # read in place of an adjoint that is not there (has_h/has_c say so)
    operands = [spare if x is None else x._operand() for x in (gh, gc, z, c0, c)]
    device.lstm_gates_backward(*operands, grad_z._handle, grad_c0._handle, hidden, gh is not None, gc is not None)
    return grad_z, grad_c0


def _kernel_available(name: str, x: NDArray) -> bool:
    """No compiled step recording (its fusion takes the array sequence), the device has the optional
    kernel `name`, and x is a non-empty float32/float64 array: what every optional kernel needs."""
    device = x.device
    return device.recorder is None and hasattr(device.mod, name) and x.size != 0 and x.dtype in ("float32", "float64")


def _dense_kernel_applies(name: str, data: Sequence[NDArray]) -> bool:
    """Whether the device's optional kernel `name` may read `data` as they are: no compiled step
    recording, the kernel there, every array non-empty, row-major without gaps (compact, or a
    slab of a larger array at some offset), of one float dtype, on one device."""
    x = data[0]
    if not _kernel_available(name, x):
        return False
    return all(a.dtype == x.dtype and a.device == x.device and a.strides == _compact_strides(a.shape) for a in data)


def _kernel_applies(name: str, data: Sequence[NDArray], sized: Sequence[Tuple[NDArray, int]] = ()) -> bool:
    """Whether the device's optional kernel `name` may run: no compiled step recording (its fusion
    takes the array sequence), the kernel there, the arrays of `data` compact, not empty, of one
    shape and float dtype, and each (array, size) of `sized` that many compact values of that dtype
    -- all on one device."""
    x = data[0]
    if not _kernel_available(name, x):
        return False
    device = x.device
    return all(a.shape == x.shape and a.is_compact() and a.dtype == x.dtype and a.device == device for a in data) \
        and all(a.size == size and a.is_compact() and a.dtype == x.dtype and a.device == device for a, size in sized)


def device_batch_norm(x: NDArray, w: NDArray, b: NDArray, eps: float) -> Optional[Tuple[NDArray, NDArray, NDArray]]:
    """(out (N, C), mean (C,), var (C,)) of training-mode batch norm over axis 0 by the device's
    own batch_norm kernel (interface.OptionalKernels: the bits of needle.ops.normalization.BatchNorm's
    array sequence, in three passes), or None where it does not apply (compact float (N, C) data,
    C >= 2, as a sum over axis 0 is then numpy's row-by-row order; see _kernel_applies): the op
    then runs that sequence."""
    channels = x.shape[1] if len(x.shape) == 2 else 0
    if channels < 2 or not _kernel_applies("batch_norm", (x,), ((w, channels), (b, channels))):
        return None
    out = NDArray.make(x.shape, device=x.device, dtype=x.dtype)
    mean = NDArray.make((channels,), device=x.device, dtype=x.dtype)
    var = NDArray.make((channels,), device=x.device, dtype=x.dtype)
    x.device.batch_norm(x._handle, w._handle, b._handle, out._handle, mean._handle, var._handle, eps)
    return out, mean, var


def device_batch_norm_backward(g: NDArray, x: NDArray, w: NDArray, mean: NDArray, var: NDArray,
                               eps: float) -> Optional[Tuple[NDArray, NDArray, NDArray]]:
    """(grad_x (N, C), grad_w (C,), grad_b (C,)) of batch norm given the adjoint g of its output,
    the batch mean and variance, by the device's own batch_norm_backward kernel (the bits of
    needle.ops.normalization.BatchNormGrad's array sequence, inv_std = (var + eps) ** -0.5
    included, in two passes), or None where it does not apply (as device_batch_norm)."""
    channels = x.shape[1] if len(x.shape) == 2 else 0
    if channels < 2 or not _kernel_applies("batch_norm_backward", (g, x),
                                           ((w, channels), (mean, channels), (var, channels))):
        return None
    grad_x = NDArray.make(x.shape, device=x.device, dtype=x.dtype)
    grad_w = NDArray.make((channels,), device=x.device, dtype=x.dtype)
    grad_b = NDArray.make((channels,), device=x.device, dtype=x.dtype)
    x.device.batch_norm_backward(g._handle, x._handle, w._handle, mean._handle, var._handle, eps, grad_x._handle,
                                 grad_w._handle, grad_b._handle)
    return grad_x, grad_w, grad_b


def device_layer_norm(x: NDArray, w: NDArray, b: NDArray, eps: float) -> Optional[Tuple[NDArray, NDArray, NDArray]]:
    """(out (x's shape), mean and var (x's shape with a last axis of 1)) of LayerNorm over the last
    axis by the device's own layer_norm kernel (interface.OptionalKernels: the bits of
    needle.ops.normalization.LayerNorm's array sequence, one pass per row), or None where it does
    not apply (see _kernel_applies): the op then runs that sequence."""
    d = x.shape[-1] if x.shape else 0
    if not d or not _kernel_applies("layer_norm", (x,), ((w, d), (b, d))):
        return None
    kept = tuple(x.shape[:-1]) + (1,)
    out = NDArray.make(x.shape, device=x.device, dtype=x.dtype)
    mean = NDArray.make(kept, device=x.device, dtype=x.dtype)
    var = NDArray.make(kept, device=x.device, dtype=x.dtype)
    x.device.layer_norm(x._handle, w._handle, b._handle, out._handle, mean._handle, var._handle, eps)
    return out, mean, var


def device_layer_norm_backward(g: NDArray, x: NDArray, w: NDArray, mean: NDArray, std: NDArray,
                               half_power: NDArray) -> Optional[Tuple[NDArray, NDArray, NDArray, NDArray]]:
    """(grad_c (x's shape), grad_mean (x's shape with a last axis of 1), grad_w, grad_b (d,)) of
    LayerNorm given the adjoint g of its output, per row the mean, std = (var + eps) ** 0.5 and
    half_power = (var + eps) ** -0.5 * 0.5, by the device's own layer_norm_backward kernel (the bits
    of needle.ops.normalization.LayerNormGrad's array sequence), or None where it does not apply."""
    d = x.shape[-1] if x.shape else 0
    rows = x.size // d if d else 0
    if not d or not _kernel_applies("layer_norm_backward", (g, x),
                                    ((w, d), (mean, rows), (std, rows), (half_power, rows))):
        return None
    grad_c = NDArray.make(x.shape, device=x.device, dtype=x.dtype)
    grad_mean = NDArray.make(tuple(x.shape[:-1]) + (1,), device=x.device, dtype=x.dtype)
    grad_w = NDArray.make((d,), device=x.device, dtype=x.dtype)
    grad_b = NDArray.make((d,), device=x.device, dtype=x.dtype)
    x.device.layer_norm_backward(g._handle, x._handle, w._handle, mean._handle, std._handle, half_power._handle,
                                 grad_c._handle, grad_mean._handle, grad_w._handle, grad_b._handle)
    return grad_c, grad_mean, grad_w, grad_b


def device_add_n(arrays: Sequence[NDArray]) -> Optional[NDArray]:
    """((a0 + a1) + a2) + ... of three or more compact float arrays of one shape and dtype in one
    pass (the device's add_n kernel: the left fold's bits), or None where it does not apply (fewer
    arrays, other layouts, no kernel, a compiled step recording): the caller folds."""
    if len(arrays) < 3 or not _kernel_applies("add_n", arrays):
        return None
    out = NDArray.make(arrays[0].shape, device=arrays[0].device, dtype=arrays[0].dtype)
    out.device.add_n([a._handle for a in arrays], out._handle)
    return out


def _row_kernel(name: str, arrays: Sequence[NDArray], axis: int) -> bool:
    """Whether the device's row kernel `name` applies: the rows along the last axis (`axis`), the
    arrays as _kernel_applies wants them."""
    ndim = len(arrays[0].shape)
    return ndim > 0 and axis % ndim == ndim - 1 and _kernel_applies(name, arrays)


def device_softmax(a: NDArray, axis: int) -> Optional[NDArray]:
    """softmax over the last axis: a minus its rows' maxima (the device's softmax_shift), numpy's
    exp of that (this layer's exp, as the sequence's), each row divided by its sum as numpy adds it
    (softmax_normalize, in place) -- the bits of needle.ops.reduction.Softmax's sequence in three
    passes; None where the kernels do not apply (see _row_kernel)."""
    if not _row_kernel("softmax_shift", (a,), axis):
        return None
    d = a.shape[-1]
    shifted = NDArray.make(a.shape, device=a.device, dtype=a.dtype)
    a.device.softmax_shift(a._handle, shifted._handle, d)
    e = globals()["exp"](shifted)  # this layer's exp (installed from needle.primitives' table)
    a.device.softmax_normalize(e._handle, e._handle, d)
    return e


def device_softmax_backward(g: NDArray, s: NDArray, axis: int) -> Optional[NDArray]:
    """s * (g + (-sum(g * s))) over the last axis by the device's softmax_backward kernel (one pass,
    SoftmaxGrad's bits), or None where it does not apply."""
    if not _row_kernel("softmax_backward", (g, s), axis):
        return None
    out = NDArray.make(g.shape, device=g.device, dtype=g.dtype)
    g.device.softmax_backward(g._handle, s._handle, out._handle, g.shape[-1])
    return out


def device_log_softmax(a: NDArray, axis: int) -> Optional[NDArray]:
    """log-softmax over the last axis by the device's log_softmax kernel (one call: the max, the
    shift, the exp, the row sums and the log of needle.ops.reduction.LogSoftmax's sequence, the
    same bits, without an array of this layer for each), or None where it does not apply (see
    _row_kernel)."""
    if not _row_kernel("log_softmax", (a,), axis):
        return None
    out = NDArray.make(a.shape, device=a.device, dtype=a.dtype)
    a.device.log_softmax(a._handle, out._handle, a.shape[-1])
    return out


def device_log_softmax_backward(g: NDArray, y: NDArray, axis: int) -> Optional[NDArray]:
    """g + exp(y) * (-sum(g)) over the last axis (the row sums of g) by the device's
    log_softmax_backward kernel (LogSoftmaxGrad's bits in one call), or None where it does not
    apply."""
    if not _row_kernel("log_softmax_backward", (g, y), axis):
        return None
    out = NDArray.make(g.shape, device=g.device, dtype=g.dtype)
    g.device.log_softmax_backward(g._handle, y._handle, out._handle, g.shape[-1])
    return out


def device_log_softmax_nll_backward(g: NDArray, ids: NDArray, y: NDArray) -> Optional[NDArray]:
    """The gradient of nll_loss(logsoftmax(x)) with respect to x, from NLLLoss's adjoint g (one
    element), the B class ids and the log-softmax y (B, k): where(one_hot(ids), v + e, e + 0) with
    v = -(g / B) and e = exp(y) * (-(v + 0)) -- LogSoftmaxGrad's bits on NLLLossGrad's one-hot rows
    (see needle.ops.loss.LogSoftmaxNLLGrad) -- by the device's log_softmax_nll_backward kernel in one
    pass over y, or None where it does not apply (the op then runs that array sequence)."""
    if len(y.shape) != 2 or g.size != 1 or g.dtype != y.dtype or g.device != y.device or ids.device != y.device \
            or not _kernel_applies("log_softmax_nll_backward", (y,)):
        return None
    rows, classes = y.shape
    idx = _class_ids(ids, rows)
    if idx is None:
        return None
    out = NDArray.make(y.shape, device=y.device, dtype=y.dtype)
    _call_on_class_ids(y.device, "log_softmax_nll_backward", idx._operand(), g._operand(), y._handle, out._handle,
                       classes)
    return out


def _class_ids(ids: NDArray, rows: int) -> Optional[NDArray]:
    """ids as B = `rows` int64 class ids (floats holding whole numbers converted, as one_hot does), or
    None for another shape."""
    if ids.shape != (rows,):
        return None
    return _whole_ids(ids)


def _whole_ids(ids: NDArray) -> NDArray:
    """Class ids as int64: float ids are checked to be whole numbers first (check_ids, on every
    replay of a compiled step), which the cast would not do (1.5 would be class 1). The range is
    the kernels' check (one_hot's message)."""
    if ids.dtype == "int64":
        return ids
    if is_floating(ids.dtype):
        check_ids(ids, None, "one_hot")
    return ids.astype("int64")


def device_nll_loss(log_probs: NDArray, ids: NDArray) -> Optional[NDArray]:
    """-(s) / B (shape ()), s the sum of where(one_hot(ids), log_probs, 0) over the (B, k) log_probs
    as numpy sums it, by the device's own nll_loss kernel (interface.OptionalKernels; the B picked
    elements only, with the bits of the whole sum, and the negation and division of
    needle.ops.loss.NLLLoss's sequence), or None where it has none, the arrays do not fit it or
    the dtype is not float32/64 (the op then runs its array sequence). ValueError names a class id
    outside [0, k), as one_hot's (an IndexError from a compiled step's replay, which records the
    kernel's call)."""
    device = log_probs.device
    if not hasattr(device.mod, "nll_loss") or len(log_probs.shape) != 2 \
            or log_probs.dtype not in ("float32", "float64") or not log_probs.is_compact() or ids.device != device:
        return None
    rows, classes = log_probs.shape
    idx = _class_ids(ids, rows)
    if idx is None or rows == 0 or classes == 0:
        return None
    out = NDArray.make((), device=device, dtype=log_probs.dtype)
    _call_on_class_ids(device, "nll_loss", log_probs._operand(), idx._operand(), out._handle, classes)
    return out


def device_nll_loss_backward(ids: NDArray, g: NDArray, shape: tuple) -> Optional[NDArray]:
    """(B, k) = `shape` zeros but -(g / B) at [i, ids[i]] (NLLLoss's gradient from its adjoint g,
    one element: what where(one_hot(ids), -(g / B), 0) gives), by the device's own
    nll_loss_backward kernel (a compiled step records its call), or None where it has none."""
    device = g.device
    if not hasattr(device.mod, "nll_loss_backward") or len(shape) != 2 \
            or g.size != 1 or ids.device != device or g.dtype not in ("float32", "float64"):
        return None
    rows, classes = shape
    idx = _class_ids(ids, rows)
    if idx is None or rows == 0 or classes == 0:
        return None
    out = NDArray.make(tuple(shape), device=device, dtype=g.dtype)
    _call_on_class_ids(device, "nll_loss_backward", idx._operand(), g._operand(), out._handle, classes)
    return out


def _dense(a: NDArray) -> bool:
    """Whether `a` is its whole buffer in some axis order: offset 0, and its strides, largest first,
    the row-major strides of its shape in that order (a permuted compact array)."""
    if a._offset != 0 or a.size != a._handle.size or a.size == 0:
        return False
    order = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    expected = 1
    for axis in reversed(order):
        if a.shape[axis] != 1 and a.strides[axis] != expected:
            return False
        expected *= a.shape[axis]
    return True


def threshold_backward(g: NDArray, x: NDArray, threshold: float = 0.0) -> NDArray:
    """where(x <= threshold, 0, g): ReLU's gradient g masked by its input x (one shape; a nan x
    passes g on, as PyTorch's threshold_backward). One pass by the device's own kernel where it
    has one (interface.OptionalKernels) and g, x are compact of one dtype; else the comparison
    and the select, which a compiled step records instead (its fusion joins them to their
    neighbours)."""
    device = g.device
    if (device.recorder is None and hasattr(device.mod, "threshold_backward") and g.shape == x.shape
            and g.dtype == x.dtype and g.strides == x.strides and (g.is_compact() or _dense(g))
            and (x.is_compact() or _dense(x))):
        # one layout over two whole buffers (compact, or an NCHW view of NHWC data as the
        # convolutions hand on): elementwise, so the flat buffers, and the result in that layout
        # too (the next transpose back to NHWC then needs no copy)
        out = NDArray.make(g.shape, device=device, dtype=g.dtype)
        if out.size:
            device.threshold_backward(g._handle, x._handle, out._handle, threshold)
        return out if g.is_compact() else out.as_strided(g.shape, g.strides)
    # NDArray's operators are made from needle.primitives' rows, invisible to the checker
    return where(x <= threshold, 0.0, g)  # type: ignore[operator, arg-type]


def tanh_backward(g: NDArray, t: NDArray) -> NDArray:
    """g * (1 - t * t): tanh's gradient from its output t (one shape), as the array operations
    g * ((-(t * t)) + 1) that the Tensor-op form runs. One pass by the device's own kernel where it
    has one (interface.OptionalKernels) and g, t are compact of one float dtype; else that sequence,
    which a compiled step records instead (its fusion joins it to its neighbours)."""
    device = g.device
    if (device.recorder is None and hasattr(device.mod, "tanh_backward") and g.shape == t.shape
            and g.dtype == t.dtype and g.dtype in ("float32", "float64") and g.is_compact() and t.is_compact()):
        out = NDArray.make(g.shape, device=device, dtype=g.dtype)
        if out.size:
            device.tanh_backward(g._handle, t._handle, out._handle)
        return out
    # the elementwise functions are installed from needle.primitives' rows, invisible to the checkers
    return multiply(g, add(negative(multiply(t, t)), 1))  # type: ignore[name-defined]  # noqa: F821


def extremes(a: NDArray) -> tuple:
    """(min, max) of a non-empty array as Python numbers: two values read back, under
    validation (an input check, allowed and not recorded inside a compiled step)."""
    with validation():
        return a.min().numpy()[0].item(), a.max().numpy()[0].item()


def check_data(check: Callable, arrays: Sequence[NDArray], *args) -> Any:
    """check(*hosts, *args), `hosts` numpy copies of `arrays` (on one device): an input check that
    reads the data (it raises for bad values; its result goes back to the caller).

    It runs as a host_call, so a compiled step runs it again on every replay, on that call's data:
    a check under `validation()` runs at the trace alone, and a replay with bad data would go on
    silently (a gather reading row -1 as the last row, a cast truncating 1.5 to 1, a loss of nan).
    What the caller decides from the result at the trace is fixed in the recording."""
    device = arrays[0].device
    return host_call(_check_data, check, device, args, *[_operand_of(a) for a in arrays])


def _check_data(check: Callable, device: BackendDevice, args: tuple, *operands: tuple) -> Any:
    return check(*[device.call("to_numpy", *operand) for operand in operands], *args)


def check_extremes(a: NDArray, check: Callable, *args) -> Any:
    """check(low, high, *args) with the min and max of a non-empty array as Python numbers (nan
    where a holds one): check_data on the two numbers, reduced on the device, so a compiled step
    checks every replay's data, reading two numbers back."""
    return check_data(_check_bounds, (stack([min(a), max(a)]),), check, *args)


def _check_bounds(bounds: np.ndarray, check: Callable, *args) -> Any:
    return check(bounds[0].item(), bounds[1].item(), *args)


def check_ids(ids: NDArray, n: Optional[int], what: str) -> None:
    """ValueError, prefixed with `what`, for the first id of `ids` (any shape) that is not a whole
    number (float ids: 1.5, nan, inf) or lies outside [0, n) (n None: the range is left to the
    kernel that reads the ids). check_data: a compiled step checks every replay's ids."""
    if ids.size:
        check_data(host_ops.check_ids, (ids,), None if n is None else int(n), what)


# --- host work on data: random draws, sampling, sort orders -------------------------------------
# Each runs on the host inside a host_call, reading its input buffer through a strided operand,
# so a compiled step draws and sorts afresh on every replay (needle.host_ops does the numpy part).

def _operand_of(a: NDArray) -> tuple:
    return (a._handle, a.shape, a.strides, a._offset)


def _fill_draw(device: BackendDevice, generator, method: str, args: tuple, shape: tuple, out) -> None:
    device.call("from_numpy", host_ops.draw(generator, method, shape, args), out)


def random_draw(method: str, shape, dtype="float32", device=None, generator=None, args: tuple = ()) -> NDArray:
    """An array of `shape` from one numpy draw (see host_ops.draw: random_sample, standard_normal,
    randint with args (low, high), permutation with args (n,)), from `generator` (an
    ndl.Generator) or numpy's global generator, cast to `dtype`."""
    device = default_device() if device is None else device
    check_enabled(device)
    out = NDArray.make(tuple(shape), device=device, dtype=storage_dtype(dtype))
    if out.size:
        host_call(_fill_draw, device, generator, method, tuple(args), tuple(shape), out._handle)
    return out


def _fill_multinomial(device: BackendDevice, generator, operand: tuple, num_samples: int, replacement: bool,
                      out) -> None:
    weights = device.call("to_numpy", *operand)
    samples = host_ops.multinomial(weights.reshape(-1, weights.shape[-1]), num_samples, replacement, generator)
    device.call("from_numpy", samples, out)


def multinomial(probs: NDArray, num_samples: int, replacement: bool = False, generator=None) -> NDArray:
    """int64 indices of shape probs.shape[:-1] + (num_samples,), drawn from each row of weights
    (see host_ops.multinomial; RuntimeError for weights that are no distribution)."""
    out = NDArray.make(tuple(probs.shape[:-1]) + (int(num_samples),), device=probs.device, dtype="int64")
    if out.size:
        host_call(_fill_multinomial, probs.device, generator, _operand_of(probs), int(num_samples),
                  bool(replacement), out._handle)
    return out


def _fill_argsort(device: BackendDevice, operand: tuple, axis: int, descending: bool, out) -> None:
    device.call("from_numpy", host_ops.sort_order(device.call("to_numpy", *operand), axis, descending), out)


def argsort(a: NDArray, axis: int = -1, descending: bool = False) -> NDArray:
    """int64 indices sorting `a` along `axis` (stable; nan as the largest value), computed on the host."""
    if a.ndim == 0:
        return full((), 0, "int64", a.device)
    axis = _normalize_axis(axis, a.ndim)
    out = NDArray.make(a.shape, device=a.device, dtype="int64")
    if out.size:
        host_call(_fill_argsort, a.device, _operand_of(a), axis, bool(descending), out._handle)
    return out



# --- fused optimizer updates ------------------------------------------------------------------

Hyper = Any  # a Python float, or a HostScalar (a compiled step reads it at each replay)


def _check_update(what: str, param: NDArray, *others: NDArray) -> None:
    """ValueError unless the parameter is floating and every other array (gradient, state) has
    its shape, dtype and device; TypeError for a non-NDArray."""
    shape, dtype, device = param._shape, param.dtype, param._device
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{what}: the parameter must be float32 or float64, got {dtype}")
    for name, a in zip(("grad", "state", "state", "state"), others):
        if type(a) is NDArray and a._shape == shape and a.dtype == dtype and a._device is device:
            continue
        if not isinstance(a, NDArray):
            raise TypeError(f"{what}: {name} must be an NDArray, got {type(a).__name__}")
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{what}: {name} has shape {a.shape} and dtype {a.dtype}, the parameter "
                             f"{shape} and {dtype}")
        _check_same_device(param, a, what)


def _hypers(values: tuple) -> list:
    """Hyperparameters as a kernel takes them: HostScalars while recording (read at each replay),
    else their values."""
    if is_recording():
        return list(values)
    return _hyper_values(values)


def _hyper_values(values) -> list:
    """HostScalars as their current values (what an eager kernel call takes)."""
    return [v.value if isinstance(v, HostScalar) else v for v in values]


def _sqrt(a: NDArray) -> Any:
    """array_api.sqrt (ops.sqrt's kernel), by name: the primitives' functions are made at import."""
    return globals()["sqrt"](a)


def _run_fused(name: str, device, arrays: tuple, hypers: tuple, flags: tuple) -> bool:
    """Run the device's fused kernel `name` if it has one (True), else False."""
    if not hasattr(device.mod, name):
        return False
    if device.recorder is None:  # device.call's eager branch, inline: once per parameter and step
        getattr(device, name)(*[a._operand() for a in arrays], *_hyper_values(hypers), *flags)
    else:
        device.call(name, *[a._operand() for a in arrays], *_hypers(hypers), *flags)
    return True


def sgd_step_many(params: Sequence[NDArray], grads: Sequence[NDArray], states: Sequence[NDArray], lr: Hyper,
                  momentum: Hyper, damping: Hyper, weight_decay: Hyper, l2: bool, mode: int, nesterov: bool) -> None:
    """sgd_step on each (param, grad, state) of the three equally long lists, in one kernel call where
    the device has sgd_step_many and no compiled step is recording (it records one sgd_step per
    parameter); the same updates in the same order, so the same bits. ValueError as sgd_step's."""
    if not params:
        return
    if len(params) != len(grads) or len(params) != len(states):
        raise ValueError(f"sgd_step_many: {len(params)} parameters, {len(grads)} gradients and {len(states)} states")
    device = params[0].device
    if not hasattr(device.mod, "sgd_step_many") or device.recorder is not None \
            or any(p.device != device for p in params):
        for p, g, u in zip(params, grads, states):
            sgd_step(p, g, u, lr, momentum, damping, weight_decay, l2, mode, nesterov)
        return
    for p, g, u in zip(params, grads, states):
        _check_update("sgd_step", p, g, u)
    device.sgd_step_many([p._operand() for p in params], [g._operand() for g in grads],
                         [u._operand() for u in states], *_hyper_values((lr, momentum, damping, weight_decay)),
                         l2, mode, nesterov)


def sgd_step(param: NDArray, grad: NDArray, u: NDArray, lr: Hyper, momentum: Hyper, damping: Hyper,
             weight_decay: Hyper, l2: bool, mode: int, nesterov: bool) -> None:
    """SGD's update of `param` (and its momentum buffer `u`) in place, in one pass where the
    device has the fused kernel (cpu), else as the op sequence; the same bits either way (but for the sign of a nan
    result, which the cpu loop may flip: see kernels_cpu):

        d = grad + param * weight_decay  (only when l2)
        mode 0: step = d                 (PyTorch's rule without momentum; u is not touched)
        mode 1: u = d; step = u          (the course's rule without momentum)
        mode 2: u = u * momentum + d * damping; step = d + u * momentum if nesterov else u
        param = param + -(step * lr)   (Tensor subtraction's form, a + -b)

    All arrays of param's shape, dtype (float32/float64) and device, else ValueError.
    """
    _check_update("sgd_step", param, grad, u)
    if _run_fused("sgd_step", param.device, (param, grad, u), (lr, momentum, damping, weight_decay),
                      (bool(l2), int(mode), bool(nesterov))):
        return
    d = grad + param * weight_decay if l2 else grad
    if mode == 0:
        step = d
    else:
        w = d if mode == 1 else u * momentum + d * damping
        u[()] = w
        step = d + w * momentum if nesterov else w
    param[()] = param + -(step * lr)  # Tensor subtraction's form (a + -b: nan's sign)


def adam_step(param: NDArray, grad: NDArray, m: NDArray, v: NDArray, lr: Hyper, beta1: Hyper, beta2: Hyper,
              one_minus_beta1: Hyper, one_minus_beta2: Hyper, bias1: Hyper, bias2: Hyper, eps: Hyper,
              weight_decay: Hyper, decay: Hyper, l2: bool, decoupled: bool) -> None:
    """Adam's update of `param` and its moments `m`, `v` in place, in one pass where the device
    has the fused kernel (cpu), else as the op sequence; the same bits either way (but for the sign of a nan
    result, which the cpu loop may flip: see kernels_cpu):

        x = param * decay                (only when decoupled: AdamW's 1 - lr * weight_decay)
        d = grad + x * weight_decay      (only when l2: Adam's weight decay)
        m = m * beta1 + d * one_minus_beta1; v = v * beta2 + d * d * one_minus_beta2
        param = x + -(m / bias1 * lr / ((v / bias2) ** 0.5 + eps))   (a + -b, as Tensor subtraction)

    All arrays of param's shape, dtype (float32/float64) and device, else ValueError.
    """
    _check_update("adam_step", param, grad, m, v)
    if _run_fused("adam_step", param.device, (param, grad, m, v),
                      (lr, beta1, beta2, one_minus_beta1, one_minus_beta2, bias1, bias2, eps, weight_decay, decay),
                      (bool(l2), bool(decoupled))):
        return
    x = param * decay if decoupled else param
    d: Any = grad + x * weight_decay if l2 else grad
    m[()] = m * beta1 + d * one_minus_beta1
    v[()] = v * beta2 + d * d * one_minus_beta2
    param[()] = x + -(m / bias1 * lr / ((v / bias2) ** 0.5 + eps))


def rmsprop_step(param: NDArray, grad: NDArray, v: NDArray, a: NDArray, b: NDArray, lr: Hyper, alpha: Hyper,
                 one_minus_alpha: Hyper, eps: Hyper, weight_decay: Hyper, momentum: Hyper, l2: bool, centered: bool,
                 use_momentum: bool) -> None:
    """RMSprop's update of `param` and its state in place, in one pass where the device has the
    fused kernel (cpu), else as the op sequence (the same bits, but for a nan's sign on cpu):

        d = grad + param * weight_decay  (only when l2)
        v = v * alpha + d * d * one_minus_alpha
        centered: a = a * alpha + d * one_minus_alpha; den = sqrt(v + -(a * a)) + eps
        else: den = sqrt(v) + eps
        use_momentum: b = b * momentum + d / den; param = param + -(b * lr)
        else: param = param + -(d / den * lr)

    a and b are only touched when used (pass param otherwise). Arrays of param's shape, dtype
    (float32/float64) and device, else ValueError.
    """
    _check_update("rmsprop_step", param, grad, v, a, b)
    if _run_fused("rmsprop_step", param.device, (param, grad, v, a, b),
                      (lr, alpha, one_minus_alpha, eps, weight_decay, momentum),
                      (bool(l2), bool(centered), bool(use_momentum))):
        return
    d: Any = grad + param * weight_decay if l2 else grad
    v[()] = v * alpha + d * d * one_minus_alpha
    if centered:
        a[()] = a * alpha + d * one_minus_alpha
        c: Any = a
        denominator = _sqrt(v + -(c * c)) + eps
    else:
        denominator = _sqrt(v) + eps
    if use_momentum:
        b[()] = b * momentum + d / denominator
        param[()] = param + -(b * lr)
    else:
        param[()] = param + -(d / denominator * lr)


def adagrad_step(param: NDArray, grad: NDArray, total: NDArray, clr: Hyper, eps: Hyper, weight_decay: Hyper,
                 l2: bool) -> None:
    """Adagrad's update in place, one pass where the device has the fused kernel (cpu), else the
    op sequence (the same bits, but for a nan's sign on cpu):

        d = grad + param * weight_decay  (only when l2)
        total = total + d * d; param = param + -(d / (sqrt(total) + eps) * clr)

    Arrays of param's shape, dtype (float32/float64) and device, else ValueError.
    """
    _check_update("adagrad_step", param, grad, total)
    if _run_fused("adagrad_step", param.device, (param, grad, total), (clr, eps, weight_decay), (bool(l2),)):
        return
    d: Any = grad + param * weight_decay if l2 else grad
    total[()] = total + d * d
    param[()] = param + -(d / (_sqrt(total) + eps) * clr)


def adadelta_step(param: NDArray, grad: NDArray, v: NDArray, u: NDArray, lr: Hyper, rho: Hyper,
                  one_minus_rho: Hyper, eps: Hyper, weight_decay: Hyper, l2: bool) -> None:
    """Adadelta's update in place, one pass where the device has the fused kernel (cpu), else the
    op sequence (the same bits, but for a nan's sign on cpu):

        d = grad + param * weight_decay  (only when l2)
        v = v * rho + d * d * one_minus_rho; delta = sqrt(u + eps) / sqrt(v + eps) * d
        u = u * rho + delta * delta * one_minus_rho; param = param + -(delta * lr)

    Arrays of param's shape, dtype (float32/float64) and device, else ValueError.
    """
    _check_update("adadelta_step", param, grad, v, u)
    if _run_fused("adadelta_step", param.device, (param, grad, v, u), (lr, rho, one_minus_rho, eps, weight_decay),
                      (bool(l2),)):
        return
    d: Any = grad + param * weight_decay if l2 else grad
    v[()] = v * rho + d * d * one_minus_rho
    delta = _sqrt(u + eps) / _sqrt(v + eps) * d
    u[()] = u * rho + delta * delta * one_minus_rho
    param[()] = param + -(delta * lr)
