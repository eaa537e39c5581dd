"""Tensors made from other libraries' arrays, and PyTorch-style factories (tensor, randn, arange, ...)."""
from __future__ import annotations

from .autograd import Tensor, array_api, default_device

__all__ = ["from_numpy", "tensor", "randn", "rand", "arange", "manual_seed"]


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


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor from data, PyTorch's way (torch.tensor): the dtype is inferred -- Python ints
    give int64, floats float32, bools bool, a numpy array keeps its (storage) dtype -- and
    requires_grad is False unless asked. (`ndl.Tensor(...)`, the course's constructor, makes
    float tensors that require grad.)"""
    if dtype is None:
        dtype = _inferred_dtype(data)
    return Tensor(data, device=device, dtype=dtype, requires_grad=requires_grad)


def _inferred_dtype(data) -> str:
    if isinstance(data, Tensor):
        return array_api.dtype_name(data.dtype)
    kind = getattr(getattr(data, "dtype", None), "kind", None)
    if kind is not None:  # a numpy array or scalar
        return array_api.dtype_name(data.dtype)
    values = list(_flat(data))
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int) for v in values):
        return "int64"
    return "float32"


def _flat(data):
    if isinstance(data, (list, tuple)):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def randn(*shape, dtype="float32", device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples (one np.random.randn draw), PyTorch's torch.randn."""
    from .init import randn as init_randn

    return init_randn(*_shape(shape), device=device, dtype=dtype, requires_grad=requires_grad)


def rand(*shape, dtype="float32", device=None, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples (one np.random.rand draw), PyTorch's torch.rand."""
    from .init import rand as init_rand

    return init_rand(*_shape(shape), device=device, dtype=dtype, requires_grad=requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """start, start + step, ... up to `end` (exclusive), like torch.arange: int64 unless a bound
    or the step is a float (then float32), or dtype says."""
    if dtype is None:
        dtype = "float32" if any(isinstance(v, float) for v in (start, end, step)) else "int64"
    from .init import arange as init_arange

    return init_arange(start, end, step, device=device, dtype=dtype, requires_grad=requires_grad)


def manual_seed(seed: int) -> None:
    """Seed every random draw needle makes (numpy's global generator, the course's RNG)."""
    import numpy

    numpy.random.seed(seed)


def _shape(shape: tuple) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
