"""Conveniences for PyTorch users that build tensors from other libraries' arrays."""
import numpy

from .autograd import Tensor
from .backend_selection import BACKEND, default_device


def from_numpy(array: numpy.ndarray, *, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor sharing memory with a C-contiguous float32/float64 numpy array on a host device.

    Other dtypes (and non-contiguous arrays, or other devices) are copied, as
    float32 in nd mode.
    """
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    if BACKEND == "np":
        return Tensor.make_const(array, requires_grad=requires_grad)
    from .backend_ndarray import NDArray
    from .backend_ndarray.host_buffer import Array

    device = default_device() if device is None else device
    shareable = array.dtype.name in ("float32", "float64") and array.flags.c_contiguous
    if shareable and device.enabled() and device.Array is Array:
        handle = Array.wrap(array.reshape(-1))
        data = NDArray.make(array.shape, device=device, handle=handle)
        return Tensor.make_const(data, requires_grad=requires_grad)
    return Tensor(array, device=device, requires_grad=requires_grad)
