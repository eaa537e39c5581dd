"""The numpy-mode array layer (NEEDLE_BACKEND=np): arrays are plain numpy arrays.

This module is `array_api` in numpy mode. It defines the same array functions as
`needle.backend_ndarray` (listed in `needle.array_interface`) with the same
semantics -- PyTorch's dtype promotion (float32 stays float32 next to a numpy
float64 scalar, which NumPy 2 would widen), int64 labels and indices, bool
comparisons -- so ops never branch on the backend. Any other name is numpy's
(`array_api.float32`, `array_api.random`, ...), as when array_api was numpy itself.

Dtypes are preserved (float64 stays float64), which is what the course's
finite-difference tests rely on; they are stored as one of `needle.dtypes.DTYPES`.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Sequence

import numpy as np

from . import host_ops
from .dtypes import (  # noqa: F401  (dtype_name and is_floating are array functions too)
    DEFAULT_FLOAT,
    FLOAT_DTYPES,
    HostScalar,
    division_dtype,
    dtype_name,
    is_floating,
    result_dtype,
    scalar_dtype,
    storage_dtype,
)
from .primitives import PRIMITIVES, Primitive

__all__ = ["Device", "CPUDevice", "UnavailableDevice", "cpu", "cuda", "cpu_numpy", "default_device", "all_devices",
           "get_device", "registered_devices"]


class Device:
    """Base class for numpy-mode devices."""

    name = ""

    @property
    def type(self) -> str:
        """The device's name (PyTorch's `device.type`)."""
        return self.name


class CPUDevice(Device):
    """The one numpy-mode device: host memory."""

    name = "cpu"

    def __repr__(self) -> str:
        return "needle.cpu()"

    def __hash__(self) -> int:
        return self.__repr__().__hash__()

    def __eq__(self, other) -> bool:
        return isinstance(other, CPUDevice)

    def enabled(self) -> bool:
        return True

    def zeros(self, *shape, dtype="float32"):
        return np.zeros(shape, dtype=storage_dtype(dtype))

    def ones(self, *shape, dtype="float32"):
        return np.ones(shape, dtype=storage_dtype(dtype))

    def randn(self, *shape):
        return np.random.randn(*shape)

    def rand(self, *shape):
        return np.random.rand(*shape)

    def one_hot(self, n, i, dtype="float32"):
        return one_hot(n, i, dtype=dtype, device=self)

    def empty(self, shape, dtype="float32"):
        return np.empty(shape, dtype=storage_dtype(dtype))

    def full(self, shape, fill_value, dtype="float32"):
        return np.full(shape, fill_value, dtype=storage_dtype(dtype))


class UnavailableDevice(Device):
    """A device of nd mode asked for in numpy mode: it exists, so code that names it runs,
    but `enabled()` is False (as for cuda without a GPU)."""

    def __init__(self, name: str):
        self.name = name
        self.why_unavailable = f"numpy mode (NEEDLE_BACKEND=np) has only the cpu device, not {name}"

    def __repr__(self) -> str:
        return f"needle.{self.name}()"

    def __eq__(self, other) -> bool:
        return isinstance(other, UnavailableDevice) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.__repr__())

    def enabled(self) -> bool:
        return False


_CPU = CPUDevice()
_CUDA = UnavailableDevice("cuda")
_CPU_NUMPY = UnavailableDevice("cpu_numpy")


def cpu() -> CPUDevice:
    return _CPU


def cuda() -> UnavailableDevice:
    return _CUDA


# torch.cuda.is_available() / device_count(): numpy mode has no GPU
cuda.is_available = lambda: False  # type: ignore[attr-defined]
cuda.device_count = lambda: 0  # type: ignore[attr-defined]


def cpu_numpy() -> UnavailableDevice:
    return _CPU_NUMPY


def default_device() -> CPUDevice:
    return _CPU


def all_devices() -> list:
    return [_CPU]


def registered_devices() -> list:
    return ["cpu"]


def get_device(name: str) -> CPUDevice:
    if name != "cpu":
        raise ValueError(f"unknown device {name!r} in numpy mode (NEEDLE_BACKEND=np); known devices: cpu")
    return _CPU


def __getattr__(name):
    """Everything else is numpy's, as when numpy itself was the numpy-mode array_api."""
    return getattr(np, name)


# --- the array functions (see needle.array_interface) -------------------------------------------

def _arr(x) -> np.ndarray:
    """numpy returns scalars for 0-d results; the array layer always hands out arrays."""
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def _stored(a: np.ndarray) -> str:
    return storage_dtype(a.dtype)


def is_array(a) -> bool:
    return isinstance(a, np.ndarray)


def array(a, dtype=None, device=None) -> np.ndarray:
    """A copy of `a`, in row-major order as the nd backend's copies (a transposed view's copy is
    contiguous: Tensor.contiguous relies on it); dtype None keeps a numpy array's dtype and makes
    Python ints/bools float32 (the course's "a tensor made from numbers is a float tensor")."""
    kind = np.asarray(a).dtype.kind
    if kind in ("c", "O", "U", "S", "M", "m", "V"):  # numpy would drop an imaginary part, or fail deep inside
        raise TypeError(f"cannot store data of dtype {np.asarray(a).dtype}: needle stores float32, float64, "
                        "int64 and bool")
    if dtype is not None:
        return np.array(a, dtype=storage_dtype(dtype), order="C")
    if isinstance(a, (np.ndarray, np.generic)):
        return np.array(a, dtype=_stored(np.asarray(a)), order="C")
    data = np.array(a)
    return data.astype(DEFAULT_FLOAT if data.dtype.kind not in "f" else storage_dtype(data.dtype), copy=False)


def empty(shape, dtype="float32", device=None) -> np.ndarray:
    return np.empty(shape, dtype=storage_dtype(dtype))


def full(shape, fill_value, dtype="float32", device=None) -> np.ndarray:
    return np.full(shape, fill_value, dtype=storage_dtype(dtype))


def zeros(shape, dtype="float32", device=None) -> np.ndarray:
    return np.zeros(shape, dtype=storage_dtype(dtype))


def arange(start, stop=None, step=1, dtype="int64", device=None) -> np.ndarray:
    """numpy's arange (int64 by default)."""
    values = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return values.astype(storage_dtype(dtype))


def zeros_like(a: np.ndarray) -> np.ndarray:
    return np.zeros(a.shape, dtype=a.dtype)


def ones_like(a: np.ndarray) -> np.ndarray:
    return np.ones(a.shape, dtype=a.dtype)


def full_like(a: np.ndarray, fill_value) -> np.ndarray:
    return np.full(a.shape, fill_value, dtype=a.dtype)


def empty_like(a: np.ndarray) -> np.ndarray:
    return np.empty(a.shape, dtype=a.dtype)


def astype(a: np.ndarray, dtype) -> np.ndarray:
    return a.astype(storage_dtype(dtype), copy=False)


def device_of(a) -> CPUDevice:
    return _CPU


def dtype_of(a: np.ndarray):
    return a.dtype


def to_numpy(a) -> np.ndarray:
    return np.array(a)


def from_numpy_shared(x: np.ndarray, device=None):
    """`x` itself when it has a storage dtype (numpy-mode data is numpy arrays), else None."""
    return x if x.dtype.name == _stored(x) else None


# --- elementwise -----------------------------------------------------------------------------

def _operands(a, b, rule=result_dtype):
    """(a, b, dtype) with both operands converted to the promoted dtype; scalars stay Python
    numbers of that kind (numpy then keeps the array's dtype, NEP 50)."""
    a_arr, b_arr = isinstance(a, np.ndarray), isinstance(b, np.ndarray)
    if a_arr and b_arr:
        dtype = rule(_stored(a), _stored(b))
    elif a_arr or b_arr:
        arr, scalar = (a, b) if a_arr else (b, a)
        dtype = rule(_stored(arr), _scalar(scalar), b_is_scalar=True)
    else:
        raise TypeError(f"expected at least one array operand, got {type(a).__name__} and {type(b).__name__}")
    return _convert(a, dtype), _convert(b, dtype), dtype


def _scalar(value):
    if isinstance(value, np.ndarray):  # a one-element array given as a scalar (hw1 does this)
        return value.item()
    if isinstance(value, HostScalar):  # numpy mode runs eagerly: its current value
        return value.value
    return value


def _convert(v, dtype: str):
    if isinstance(v, np.ndarray):
        return v if v.dtype.name == dtype else v.astype(dtype)
    v = _scalar(v)
    return float(v) if dtype in FLOAT_DTYPES else int(v) if dtype == "int64" else bool(v)


def _floating(a: np.ndarray) -> np.ndarray:
    return a if a.dtype.kind == "f" else a.astype(DEFAULT_FLOAT)


def _primitive_function(p: Primitive) -> Callable[..., np.ndarray]:
    """array_api.<p.function> in numpy mode: the row's numpy reference, with needle's promotion."""
    function: Callable[..., np.ndarray]  # unary or binary
    if p.arity == 1:
        def function(a: np.ndarray) -> np.ndarray:
            if p.refuses_bool and a.dtype == np.bool_:
                raise TypeError("negating a bool array is not supported; use == False for a logical not")
            return _arr(p.numpy(_floating(a) if p.floating else a))
    elif p.dtype == "bool":
        def function(a, b) -> np.ndarray:
            a_arr, b_arr = isinstance(a, np.ndarray), isinstance(b, np.ndarray)
            if a_arr and b_arr:
                x, y, _ = _operands(a, b)
            else:  # a scalar compares as it is (an int array against 0.5 needs no float copy)
                x, y = (a, _scalar(b)) if a_arr else (_scalar(a), b)
            return _arr(p.numpy(x, y))
    else:
        rule = division_dtype if p.dtype == "division" else result_dtype

        def function(a, b) -> np.ndarray:
            x, y, dtype = _operands(a, b, rule)
            if p.refuses_bool and dtype == "bool":
                raise TypeError("subtracting bool arrays is not supported; use != for a logical xor")
            return _arr(p.numpy(x, y))
    function.__name__ = function.__qualname__ = p.function
    function.__doc__ = f"Elementwise {p.function} (needle.primitives row {p.name!r}), numpy mode."
    return function


globals().update({p.function: _primitive_function(p) for p in PRIMITIVES})


def where(cond: np.ndarray, a, b) -> np.ndarray:
    """Elementwise `a if cond else b`; a and b are arrays or scalars, all three broadcast."""
    if not isinstance(cond, np.ndarray) or cond.dtype != np.bool_:
        raise TypeError("where: the condition must be a bool array")
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y, dtype = _operands(a, b)
    else:
        dtype = result_dtype(scalar_dtype(a), b, b_is_scalar=True)
        x, y = _convert(a, dtype), _convert(b, dtype)
    return _arr(np.where(cond, x, y).astype(dtype, copy=False))


# --- reductions ------------------------------------------------------------------------------

def sum(a: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:  # noqa: A001
    """Bool and int64 arrays sum into int64, floats keep their dtype."""
    dtype = a.dtype if a.dtype.kind == "f" else np.int64
    return _arr(np.sum(a, axis=axis, keepdims=keepdims, dtype=dtype))


def max(a: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:  # noqa: A001
    return _arr(np.max(a, axis=axis, keepdims=keepdims))


def min(a: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:  # noqa: A001
    return _arr(np.min(a, axis=axis, keepdims=keepdims))


def argmax(a: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:
    return _arr(np.argmax(a, axis=axis, keepdims=keepdims).astype(np.int64, copy=False))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x, y, _ = _operands(a, b)
    return _arr(np.matmul(x, y))


# --- layout ----------------------------------------------------------------------------------

def broadcast_to(a: np.ndarray, shape) -> np.ndarray:
    return np.broadcast_to(a, tuple(shape))


def reshape(a: np.ndarray, shape) -> np.ndarray:
    return np.reshape(a, shape)


def transpose(a: np.ndarray, axes=None) -> np.ndarray:
    return np.transpose(a, axes)


def swapaxes(a: np.ndarray, axis1: int, axis2: int) -> np.ndarray:
    return np.swapaxes(a, axis1, axis2)


def ascontiguousarray(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def as_strided(a: np.ndarray, shape, strides) -> np.ndarray:
    """View with element strides (no copy, no bounds check)."""
    item = a.itemsize
    return np.lib.stride_tricks.as_strided(a, tuple(shape), tuple(s * item for s in strides))


def element_strides(a: np.ndarray) -> tuple:
    return tuple(s // a.itemsize for s in a.strides)


def flip(a: np.ndarray, axes) -> np.ndarray:
    return np.ascontiguousarray(np.flip(a, axes))


def pad(a: np.ndarray, pad_width) -> np.ndarray:
    return np.pad(a, pad_width)


def _keep_axes(a: np.ndarray, index) -> tuple:
    """Integer entries as length-1 slices: the NDArray rule that an int keeps its axis."""
    entries = index if isinstance(index, tuple) else (index,)
    out = []
    dim = 0
    for entry in entries:
        if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            i = int(entry) % a.shape[dim] if a.shape[dim] else int(entry)
            out.append(slice(i, i + 1))
        else:
            out.append(entry)
        if entry is not None:
            dim += 1
    return tuple(out)


def getitem(a: np.ndarray, index) -> np.ndarray:
    """A view by ints and slices; ints keep their axis (as in NDArray)."""
    return a[_keep_axes(a, index)]


def setitem(a: np.ndarray, index, value) -> None:
    a[_keep_axes(a, index)] = value


def storage(a: np.ndarray) -> np.ndarray:
    """The array owning the memory behind `a` (its last numpy base), shared by all its views. A view
    made by as_strided has numpy's stride-tricks wrapper as its base, which holds the array."""
    while True:
        base: object = a.base
        wrapped = getattr(base, "base", None)
        if not isinstance(base, np.ndarray) and isinstance(wrapped, np.ndarray):
            base = wrapped  # numpy.lib.stride_tricks' DummyArray
        if not isinstance(base, np.ndarray):
            return a
        a = base


def owns_storage(a: np.ndarray) -> bool:
    """True when `a` is all of its memory (C-contiguous, from its start)."""
    root = storage(a)
    return a.flags.c_contiguous and a.size == root.size and \
        a.__array_interface__["data"][0] == root.__array_interface__["data"][0]


def stack(arrays: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
    return np.stack(arrays, axis=axis)


def unstack(a: np.ndarray, axis: int = 0) -> tuple:
    moved = np.moveaxis(a, axis, 0)
    return tuple(np.ascontiguousarray(moved[k]) for k in range(moved.shape[0]))


# --- gather / scatter / one-hot ------------------------------------------------------------------

def _index_array(indices, rows: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype.kind == "b":
        raise TypeError("a bool array is a mask, not row indices")
    if idx.dtype.kind == "f":
        if not np.all(idx == np.round(idx)):
            raise TypeError("indices must be integers")
    elif idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < -rows or idx.max() >= rows):
        bad = idx[(idx < -rows) | (idx >= rows)].ravel()[0]
        raise IndexError(f"index {bad} is out of bounds for axis 0 with size {rows}")
    return idx


def take_rows(a: np.ndarray, indices) -> np.ndarray:
    """a[indices] along axis 0: shape indices.shape + a.shape[1:]."""
    if a.ndim == 0:
        raise ValueError("cannot index rows of a 0-d array")
    return np.take(a, _index_array(indices, a.shape[0]), axis=0)


def index_add_rows(out: np.ndarray, indices, values: np.ndarray) -> None:
    """In place: out[indices[i]] += values[i] along axis 0; repeats accumulate."""
    np.add.at(out, _index_array(indices, out.shape[0]), values)


def one_hot(n: int, indices, dtype="float32", device=None) -> np.ndarray:
    """Rows `indices` of the n x n identity: shape indices.shape + (n,)."""
    idx = np.asarray(indices)
    if idx.dtype.kind == "f":
        host_ops.check_ids(idx, None, "one_hot")  # 1.5 is no class (a cast would make it 1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
        raise ValueError(f"one_hot: class index {bad} is out of range for {n} classes")
    return np.eye(n, dtype=storage_dtype(dtype))[idx.astype(np.int64)]


def nonzero(mask: np.ndarray) -> tuple:
    if mask.dtype != np.bool_:
        raise TypeError(f"nonzero needs a bool array, got dtype {mask.dtype}")
    return tuple(i.astype(np.int64) for i in np.nonzero(mask))


def index_mask_shape(entry) -> Optional[tuple]:
    """The shape of an index entry that is a bool mask, else None."""
    host = np.asarray(entry)
    return host.shape if host.dtype.kind == "b" else None


def as_index(entry, device=None) -> tuple:
    """An index entry as int64 arrays: one for integer indices, one per axis for a bool mask."""
    host = np.asarray(entry)
    if host.dtype.kind == "b":
        return tuple(i.astype(np.int64) for i in np.nonzero(host))
    if host.dtype.kind == "f":
        host_ops.check_whole_index(host)
    elif host.dtype.kind not in "iu":
        raise TypeError(f"tensor indices must be integers or booleans, got dtype {host.dtype}")
    return (host.astype(np.int64),)


def wrap_index(idx: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    """int64 indices into an axis of `size`, negatives counted from the end; IndexError naming
    the first one outside [-size, size)."""
    if idx.size == 0:
        return idx
    bad = idx[(idx < -size) | (idx >= size)]
    if bad.size:
        raise IndexError(f"index {bad.ravel()[0]} is out of bounds for axis {axis} with size {size}")
    return np.where(idx < 0, idx + size, idx)


def device_col2im(cols: np.ndarray, shape: tuple, kernel: tuple, stride: tuple, dilation: tuple,
                  top_left: tuple) -> None:
    """None: numpy mode has no col2im kernel (needle.ops._windows.col2im runs its array-level way)."""
    return None


def device_im2col(a, kernel, stride, dilation, padding) -> None:
    """None: numpy mode has no im2col kernel (needle.ops._windows compacts the padded window view)."""
    return None


def device_lstm_gates(z, c0) -> None:
    """None: numpy mode has no fused LSTM cell kernel (LSTMGates runs its array sequence)."""
    return None


def device_lstm_gates_backward(gh, gc, z, c0, c) -> None:
    """None: numpy mode has no fused LSTM gradient kernel (LSTMGatesGrad runs its array sequence)."""
    return None


def device_batch_norm(x, w, b, eps) -> None:
    """None: numpy mode has no batch-norm kernel (BatchNorm runs its array sequence)."""
    return None


def device_batch_norm_backward(g, x, w, mean, var, eps) -> None:
    """None: numpy mode has no batch-norm gradient kernel (BatchNormGrad runs its array sequence)."""
    return None


def device_layer_norm(x, w, b, eps) -> None:
    """None: numpy mode has no layer-norm kernel (LayerNorm runs its array sequence)."""
    return None


def device_layer_norm_backward(g, x, w, mean, std, half_power) -> None:
    """None: numpy mode has no layer-norm gradient kernel (LayerNormGrad runs its array sequence)."""
    return None


def device_softmax(a, axis) -> None:
    """None: numpy mode has no softmax kernels (Softmax runs its array sequence)."""
    return None


def device_softmax_backward(g, s, axis) -> None:
    """None: numpy mode has no softmax gradient kernel (SoftmaxGrad runs its array sequence)."""
    return None


def device_log_softmax(a, axis) -> None:
    """None: numpy mode has no log-softmax kernel (LogSoftmax runs its array sequence)."""
    return None


def device_log_softmax_backward(g, y, axis) -> None:
    """None: numpy mode has no log-softmax gradient kernel (LogSoftmaxGrad runs its array sequence)."""
    return None


def device_log_softmax_nll_backward(g, ids, y) -> None:
    """None: numpy mode has no such kernel (LogSoftmaxNLLGrad runs its array sequence)."""
    return None


def device_add_n(arrays) -> None:
    """None: numpy mode has no n-ary add kernel (AddN folds)."""
    return None


def device_nll_loss(log_probs, ids) -> None:
    """None: numpy mode has no picked-sum kernel (NLLLoss runs its array sequence)."""
    return None


def device_nll_loss_backward(ids, g, shape) -> None:
    """None: numpy mode has no NLL gradient kernel (NLLLossGrad runs its array sequence)."""
    return None


def threshold_backward(g: np.ndarray, x: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """where(x <= threshold, 0, g): ReLU's gradient g masked by its input or output x (one mask)."""
    return where(np.less_equal(x, threshold), 0.0, g)


def addmm(bias: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bias + a @ b, bias broadcast over the rows: matmul, then add (the same bits)."""
    product = matmul(a, b)
    return add(product, broadcast_to(bias, product.shape))  # type: ignore[name-defined]  # noqa: F821


def tanh_backward(g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """g * (1 - t * t), tanh's gradient from its output t, as g * ((-(t * t)) + 1)."""
    # the elementwise functions are installed from needle.primitives' rows, invisible to the checkers
    return multiply(g, add(negative(multiply(t, t)), 1))  # type: ignore[name-defined]  # noqa: F821


def extremes(a: np.ndarray) -> tuple:
    """(min, max) of a non-empty array as Python numbers."""
    return a.min().item(), a.max().item()


def check_data(check, arrays, *args):
    """check(*arrays, *args): an input check that reads the data (needle.compile repeats it on every
    replay in nd mode; numpy mode records nothing)."""
    return check(*[np.asarray(a) for a in arrays], *args)


def check_extremes(a: np.ndarray, check, *args):
    """check(low, high, *args) with the min and max of a non-empty array as Python numbers."""
    return check(*extremes(a), *args)


def check_ids(ids: np.ndarray, n: Optional[int], what: str) -> None:
    """ValueError, prefixed with `what`, for the first id that is not a whole number or lies outside
    [0, n) (n None: not checked; host_ops.check_ids)."""
    host_ops.check_ids(ids, n, what)


def host_call(fn, *args):
    """fn(*args): numpy mode records nothing (needle.compile needs nd mode)."""
    return fn(*args)


def is_recording() -> bool:
    return False


@contextlib.contextmanager
def validation():
    yield


@contextlib.contextmanager
def constant_data():
    """Host data computed from shapes (recorded as a constant by needle.compile; nothing here)."""
    yield


def prod(x) -> int:
    return math.prod(x)


def broadcast_shapes(*shapes) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast together") from None



# --- host work on data: random draws, sampling, sort orders (needle.host_ops) ---------------------

def random_draw(method: str, shape, dtype="float32", device=None, generator=None, args: tuple = ()) -> np.ndarray:
    """An array of `shape` from one numpy draw (host_ops.draw), cast to `dtype`."""
    return np.asarray(host_ops.draw(generator, method, tuple(shape), tuple(args))).astype(storage_dtype(dtype))


def multinomial(probs: np.ndarray, num_samples: int, replacement: bool = False, generator=None) -> np.ndarray:
    """int64 indices of shape probs.shape[:-1] + (num_samples,) drawn from each row of weights."""
    if probs.size == 0 or num_samples == 0:
        return np.zeros(probs.shape[:-1] + (int(num_samples),), dtype=np.int64)
    samples = host_ops.multinomial(probs.reshape(-1, probs.shape[-1]), int(num_samples), bool(replacement), generator)
    return samples.reshape(probs.shape[:-1] + (int(num_samples),))


def argsort(a: np.ndarray, axis: int = -1, descending: bool = False) -> np.ndarray:
    """int64 indices sorting `a` along `axis` (stable; nan as the largest value)."""
    if a.ndim == 0:
        return np.zeros((), dtype=np.int64)
    return host_ops.sort_order(a, axis, bool(descending))


# --- fused optimizer updates: the op sequence (numpy mode runs eagerly, op by op) -------------------

def _check_update(what: str, param: np.ndarray, *others: np.ndarray) -> None:
    if param.dtype.name not in FLOAT_DTYPES:
        raise ValueError(f"{what}: the parameter must be float32 or float64, got {param.dtype.name}")
    for name, a in zip(("grad", "state", "state", "state"), others):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}: {name} must be an array, got {type(a).__name__}")
        if a.shape != param.shape or a.dtype != param.dtype:
            raise ValueError(f"{what}: {name} has shape {a.shape} and dtype {a.dtype.name}, the parameter "
                             f"{param.shape} and {param.dtype.name}")


def sgd_step(param: np.ndarray, grad: np.ndarray, u: np.ndarray, lr, momentum, damping, weight_decay, l2: bool,
             mode: int, nesterov: bool) -> None:
    """SGD's update in place (see `needle.backend_ndarray.functions.sgd_step`): the same numpy
    operations, in the same order, as the optimizer's op-by-op update."""
    _check_update("sgd_step", param, grad, u)
    lr, momentum, damping, weight_decay = (float(_scalar(s)) for s in (lr, momentum, damping, weight_decay))
    d = grad + param * weight_decay if l2 else grad
    if mode == 0:
        step = d
    else:
        w = d if mode == 1 else u * momentum + d * damping
        u[...] = w
        step = d + w * momentum if nesterov else w
    param[...] = param + -(step * lr)  # Tensor subtraction's form (a + -b: nan's sign)


def sgd_step_many(params, grads, states, lr, momentum, damping, weight_decay, l2: bool, mode: int,
                  nesterov: bool) -> None:
    """sgd_step on each (param, grad, state) in turn."""
    if len(params) != len(grads) or len(params) != len(states):
        raise ValueError(f"sgd_step_many: {len(params)} parameters, {len(grads)} gradients and {len(states)} states")
    for p, g, u in zip(params, grads, states):
        sgd_step(p, g, u, lr, momentum, damping, weight_decay, l2, mode, nesterov)


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, lr, beta1, beta2,
              one_minus_beta1, one_minus_beta2, bias1, bias2, eps, weight_decay, decay, l2: bool,
              decoupled: bool) -> None:
    """Adam's (AdamW's) update in place (see `needle.backend_ndarray.functions.adam_step`): the
    same numpy operations, in the same order, as the optimizer's op-by-op update."""
    _check_update("adam_step", param, grad, m, v)
    lr, beta1, beta2, c1, c2, bias1, bias2, eps, weight_decay, decay = (
        float(_scalar(s)) for s in (lr, beta1, beta2, one_minus_beta1, one_minus_beta2, bias1, bias2, eps,
                                    weight_decay, decay))
    x = param * decay if decoupled else param
    d = grad + x * weight_decay if l2 else grad
    m[...] = m * beta1 + d * c1
    v[...] = v * beta2 + d * d * c2
    param[...] = x + -(m / bias1 * lr / (np.sqrt(v / bias2) + eps))


def _floats(*values) -> list:
    return [float(_scalar(v)) for v in values]


def rmsprop_step(param: np.ndarray, grad: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray, lr, alpha,
                 one_minus_alpha, eps, weight_decay, momentum, l2: bool, centered: bool, use_momentum: bool) -> None:
    """RMSprop's update in place (see `needle.backend_ndarray.functions.rmsprop_step`): the op sequence."""
    _check_update("rmsprop_step", param, grad, v, a, b)
    lr, alpha, oma, eps, weight_decay, momentum = _floats(lr, alpha, one_minus_alpha, eps, weight_decay, momentum)
    d = grad + param * weight_decay if l2 else grad
    v[...] = v * alpha + d * d * oma
    if centered:
        a[...] = a * alpha + d * oma
        denominator = np.sqrt(v + -(a * a)) + eps
    else:
        denominator = np.sqrt(v) + eps
    if use_momentum:
        b[...] = b * momentum + d / denominator
        param[...] = param + -(b * lr)
    else:
        param[...] = param + -(d / denominator * lr)


def adagrad_step(param: np.ndarray, grad: np.ndarray, total: np.ndarray, clr, eps, weight_decay, l2: bool) -> None:
    """Adagrad's update in place (see `needle.backend_ndarray.functions.adagrad_step`): the op sequence."""
    _check_update("adagrad_step", param, grad, total)
    clr, eps, weight_decay = _floats(clr, eps, weight_decay)
    d = grad + param * weight_decay if l2 else grad
    total[...] = total + d * d
    param[...] = param + -(d / (np.sqrt(total) + eps) * clr)


def adadelta_step(param: np.ndarray, grad: np.ndarray, v: np.ndarray, u: np.ndarray, lr, rho, one_minus_rho, eps,
                  weight_decay, l2: bool) -> None:
    """Adadelta's update in place (see `needle.backend_ndarray.functions.adadelta_step`): the op sequence."""
    _check_update("adadelta_step", param, grad, v, u)
    lr, rho, omr, eps, weight_decay = _floats(lr, rho, one_minus_rho, eps, weight_decay)
    d = grad + param * weight_decay if l2 else grad
    v[...] = v * rho + d * d * omr
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * d
    u[...] = u * rho + delta * delta * omr
    param[...] = param + -(delta * lr)
