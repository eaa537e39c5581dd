"""Tensors made from other libraries' arrays, and PyTorch-style factories (tensor, full, linspace,
and the random ones: randn, rand, randint, randperm, multinomial, ...).

The random factories draw from numpy's global generator (`ndl.manual_seed`, `np.random.seed`),
one draw per call, or from the `generator=` given (an `ndl.Generator`), which leaves the global
stream alone. Each draw is a host call of the array layer, so a compiled step (`ndl.compile`)
draws fresh numbers on every replay.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from .autograd import Tensor, array_api, as_device, default_device
from .dtypes import python_scalar, scalar_dtype
from .host_ops import Generator
from .ops.reduction import linspace_data

__all__ = ["from_numpy", "tensor", "randn", "rand", "arange", "manual_seed", "full", "full_like", "empty",
           "linspace", "randint", "randperm", "randn_like", "rand_like", "randint_like", "multinomial", "Generator"]


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


def _made(data, requires_grad: bool) -> Tensor:
    out = Tensor.make_const(data)
    if requires_grad:
        out.requires_grad = True  # TypeError for an integer or bool dtype
    return out


def _on(device):
    return default_device() if device is None else as_device(device)


def _random(method: str, shape: tuple, dtype, device, generator, requires_grad: bool, args: tuple = ()) -> Tensor:
    shape = tuple(int(n) for n in _shape(shape))
    if any(n < 0 for n in shape):
        raise ValueError(f"a shape cannot have negative sizes, got {shape}")
    data = array_api.random_draw(method, shape, array_api.dtype_name(dtype), _on(device), generator, args)
    return _made(data, requires_grad)


def randn(*shape, generator: Optional[Generator] = None, dtype="float32", device=None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples (torch.randn): one np.random.randn draw of `shape`, or one from
    `generator`, made in `dtype` (float64 keeps a double's precision)."""
    return _random("standard_normal", shape, dtype, device, generator, requires_grad)


def rand(*shape, generator: Optional[Generator] = None, dtype="float32", device=None,
         requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples (torch.rand): one np.random.rand draw of `shape`, or one from `generator`."""
    return _random("random_sample", shape, dtype, device, generator, requires_grad)


def randn_like(input: Tensor, *, generator: Optional[Generator] = None, dtype=None, device=None,  # noqa: A002
               requires_grad: bool = False) -> Tensor:
    """randn with input's shape, dtype and device unless given (torch.randn_like)."""
    return randn(*input.shape, generator=generator, dtype=input.dtype if dtype is None else dtype,
                 device=input.device if device is None else device, requires_grad=requires_grad)


def rand_like(input: Tensor, *, generator: Optional[Generator] = None, dtype=None, device=None,  # noqa: A002
              requires_grad: bool = False) -> Tensor:
    """rand with input's shape, dtype and device unless given (torch.rand_like)."""
    return rand(*input.shape, generator=generator, dtype=input.dtype if dtype is None else dtype,
                device=input.device if device is None else device, requires_grad=requires_grad)


def randint(*args, generator: Optional[Generator] = None, dtype="int64", device=None, requires_grad: bool = False,
            low: Optional[int] = None, high: Optional[int] = None, size: Optional[Sequence[int]] = None) -> Tensor:
    """Integers uniform in [low, high) of shape `size` (torch.randint): `randint(high, size)` or
    `randint(low, high, size)`; one np.random.randint(low, high, size) draw, or one from
    `generator`. int64 unless dtype says. ValueError for low >= high, TypeError for a missing
    or non-tuple size."""
    given = list(args)
    if size is None and given and isinstance(given[-1], (tuple, list)):
        size = given.pop()
    if len(given) == 2:
        low, high = given
    elif len(given) == 1:
        if high is None:
            high = given[0]
        else:
            low = given[0]
    elif given:
        raise TypeError(f"randint takes (high, size) or (low, high, size), got {len(args)} positional arguments")
    low = 0 if low is None else low
    if high is None or size is None:
        raise TypeError("randint needs high and size: randint(high, size) or randint(low, high, size)")
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint: size must be a tuple of ints, got {type(size).__name__}")
    low, high = int(low), int(high)
    if low >= high:
        raise ValueError(f"randint: low ({low}) must be smaller than high ({high})")
    return _random("randint", tuple(size), dtype, device, generator, requires_grad, (low, high))


def randint_like(input: Tensor, low: int = 0, high: Optional[int] = None, *,  # noqa: A002
                 generator: Optional[Generator] = None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """randint with input's shape (and dtype and device unless given); randint_like(x, high) or
    randint_like(x, low, high) (torch.randint_like)."""
    if high is None:
        low, high = 0, low
    return randint(low, high, tuple(input.shape), generator=generator,
                   dtype=input.dtype if dtype is None else dtype,
                   device=input.device if device is None else device, requires_grad=requires_grad)


def randperm(n: int, *, generator: Optional[Generator] = None, dtype="int64", device=None,
             requires_grad: bool = False) -> Tensor:
    """A random permutation of 0 .. n-1 (torch.randperm): one np.random.permutation(n) draw (or
    one from `generator`); int64 unless dtype says. ValueError for n < 0."""
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"randperm: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 0:
        raise ValueError(f"randperm: n must be non-negative, got {n}")
    return _random("permutation", (n,), dtype, device, generator, requires_grad, (n,))


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *,  # noqa: A002
                generator: Optional[Generator] = None) -> Tensor:
    """Indices (int64) sampled from each row of `input`, a 1-D or 2-D float tensor of non-negative
    weights that need not sum to 1 (torch.multinomial): shape (num_samples,) or
    (rows, num_samples), each row's samples in the order drawn; without replacement no index
    repeats within a row (categories of weight 0 come only after every other). One numpy draw
    per call (see needle.host_ops.multinomial for which), from numpy's global generator or
    `generator`. Not differentiable.

    Errors: TypeError for an integer or bool input; ValueError for input that is not 1-D or 2-D,
    num_samples < 1, or more samples than categories without replacement; RuntimeError (when the
    draw runs) for weights with inf, nan, a negative entry or a row summing to 0.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial expects a Tensor, got {type(input).__name__}")
    if not array_api.is_floating(input.dtype):
        raise TypeError(f"multinomial needs floating-point weights, got dtype {input.dtype}")
    if input.ndim not in (1, 2):
        raise ValueError(f"multinomial: the weights must be 1-D or 2-D, got shape {input.shape}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"multinomial: num_samples must be a positive int, got {num_samples!r}")
    n = input.shape[-1]
    if n == 0:
        raise ValueError("multinomial: the weights have no categories")
    if not replacement and num_samples > n:
        raise ValueError(f"multinomial: cannot draw {num_samples} samples from {n} categories without replacement")
    return Tensor.make_const(array_api.multinomial(input.realize_cached_data(), num_samples, bool(replacement),
                                                   generator))


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of `size` filled with fill_value (torch.full): dtype bool, int64 or float32 from
    the value's kind unless given."""
    value = python_scalar(fill_value)
    if value is None:
        raise TypeError(f"full: fill_value must be a number, got {type(fill_value).__name__}")
    dtype = scalar_dtype(value) if dtype is None else array_api.dtype_name(dtype)
    return _made(array_api.full(_size(size), value, dtype, _on(device)), requires_grad)


def full_like(input: Tensor, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:  # noqa: A002
    """full with input's shape, and its dtype and device unless given (torch.full_like)."""
    return full(tuple(input.shape), fill_value, dtype=input.dtype if dtype is None else dtype,
                device=input.device if device is None else device, requires_grad=requires_grad)


def empty(*size, dtype="float32", device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of `size` (torch.empty; needle fills it with zeros rather than hand out
    uninitialised memory)."""
    return _made(array_api.full(_size(size), 0, array_api.dtype_name(dtype), _on(device)), requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """`steps` evenly spaced values from start to end, both included (torch.linspace): float32
    unless dtype says, computed in that dtype by PyTorch's formula (start + i * step for the first
    half, end - (steps - 1 - i) * step for the second), so both ends are exact.
    ValueError for steps < 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative int, got {steps!r}")
    for name, v in (("start", start), ("end", end)):
        if python_scalar(v) is None or not math.isfinite(float(python_scalar(v))):
            raise ValueError(f"linspace: {name} must be a finite number, got {v!r}")
    dtype = "float32" if dtype is None else array_api.dtype_name(dtype)
    device = _on(device)
    work = dtype if array_api.is_floating(dtype) else "float64"
    if steps == 0:
        data = array_api.full((0,), 0, dtype, device)
    else:
        data = array_api.astype(linspace_data(python_scalar(start), python_scalar(end), steps, work, device), dtype)
    return _made(data, requires_grad)


def _size(size) -> tuple:
    shape = tuple(int(n) for n in _shape(size if isinstance(size, tuple) else (size,)))
    if any(n < 0 for n in shape):
        raise ValueError(f"a shape cannot have negative sizes, got {shape}")
    return shape


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
