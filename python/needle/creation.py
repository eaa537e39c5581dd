"""Tensors made from other libraries' arrays."""
from __future__ import annotations

from .autograd import Tensor, array_api, default_device

__all__ = ["from_numpy"]


def from_numpy(array, *, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor sharing memory with a C-contiguous numpy array of a storage dtype (float32,
    float64, int64, bool) on a host device, like torch.from_numpy; anything else is copied,
    keeping its kind (int32 and uint8 become int64, float16 float32)."""
    if not (hasattr(array, "__array_interface__") and hasattr(array, "flags")):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    device = default_device() if device is None else device
    shared = array_api.from_numpy_shared(array, device)
    if shared is None:
        return Tensor(array, device=device, dtype=array_api.dtype_name(array.dtype), requires_grad=requires_grad)
    if requires_grad and not array_api.is_floating(shared.dtype):
        raise TypeError(f"only floating-point tensors can require grad; this array has dtype {array.dtype}")
    return Tensor.make_const(shared, requires_grad=requires_grad)
