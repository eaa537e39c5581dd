"""PyTorch's torch.* function forms of Tensor methods: `ndl.sum(x, dim=1)` is `x.sum(dim=1)`,
`ndl.min(x, dim=0)` is `x.min(dim=0)`, and so on, so each function and its method agree.

The names that are Python builtins (sum, min, max, abs, pow, all, any) are exported as
`ndl.sum`, ... but kept out of `from needle import *`, which would otherwise shadow the
builtins. max and min follow PyTorch: one axis, positional or `dim=` (`ndl.max(x, 1)`),
gives (values, indices); the course's `axes=` keyword (an int or a tuple) gives the values;
a tensor as the second argument gives the elementwise maximum or minimum.
"""
from __future__ import annotations

from typing import Optional

from . import ops
from .autograd import Tensor, array_api

__all__ = ["sum", "mean", "max", "min", "all", "any", "abs", "pow", "clamp", "clip", "softmax", "log_softmax",
           "var", "std", "argmax", "argmin", "allclose", "minimum", "numel", "is_tensor", "is_floating_point"]


def _tensor(x, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} expects a Tensor, got {type(x).__name__}")
    return x


def _cast(x: Tensor, dtype) -> Tensor:
    return x if dtype is None else x.to(dtype)


def sum(input: Tensor, *args, dtype=None, **kwargs) -> Tensor:  # noqa: A001,A002
    """torch.sum(input, dim=None, keepdim=False, *, dtype=None): `input.sum(...)` (the course's
    axes=/keepdims= work too), cast to dtype first when given."""
    return _cast(_tensor(input, "sum"), dtype).sum(*args, **kwargs)


def mean(input: Tensor, *args, dtype=None, **kwargs) -> Tensor:  # noqa: A002
    """torch.mean(input, dim=None, keepdim=False, *, dtype=None): `input.mean(...)`."""
    return _cast(_tensor(input, "mean"), dtype).mean(*args, **kwargs)


def max(input: Tensor, *args, **kwargs):  # noqa: A001,A002
    """`input.max(...)` (see Tensor.max): values over all axes or axes=, (values, indices) over one
    positional or dim= axis, the elementwise maximum with a tensor (torch.max(a, b))."""
    return _tensor(input, "max").max(*args, **kwargs)


def min(input: Tensor, *args, **kwargs):  # noqa: A001,A002
    """`input.min(...)`, in max's forms; with a tensor as the second argument the elementwise minimum."""
    return _tensor(input, "min").min(*args, **kwargs)


def minimum(input: Tensor, other) -> Tensor:  # noqa: A002
    """Elementwise minimum (torch.minimum), as -maximum(-a, -b): nan wins, ties split the gradient."""
    return -ops.maximum(-_tensor(input, "minimum"), -other)


def all(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001,A002
    """torch.all: `input.all(dim, keepdim)`, a bool tensor."""
    return _tensor(input, "all").all(dim, keepdim)


def any(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001,A002
    """torch.any: `input.any(dim, keepdim)`, a bool tensor."""
    return _tensor(input, "any").any(dim, keepdim)


def abs(input: Tensor) -> Tensor:  # noqa: A001,A002
    """torch.abs: `input.abs()`."""
    return ops.absolute(_tensor(input, "abs"))


def pow(input, exponent) -> Tensor:  # noqa: A001,A002
    """torch.pow: input ** exponent, either of them a number (not both)."""
    if isinstance(input, Tensor):
        return ops.power(input, exponent)
    return ops.reverse_power(_tensor(exponent, "pow"), input)


def clamp(input: Tensor, min=None, max=None) -> Tensor:  # noqa: A002
    """torch.clamp: `input.clamp(min, max)`."""
    return ops.clamp(_tensor(input, "clamp"), min, max)


clip = clamp


def softmax(input: Tensor, dim: int = -1, dtype=None) -> Tensor:  # noqa: A002
    """torch.softmax(input, dim, dtype=None) (and the course's softmax(a, axis))."""
    return ops.softmax(_cast(_tensor(input, "softmax"), dtype), dim)


def log_softmax(input: Tensor, dim: int = -1, dtype=None) -> Tensor:  # noqa: A002
    """torch.log_softmax(input, dim, dtype=None) (the course's logsoftmax)."""
    return ops.logsoftmax(_cast(_tensor(input, "log_softmax"), dtype), dim)


def var(input: Tensor, dim=None, unbiased: Optional[bool] = None, keepdim: bool = False, *,  # noqa: A002
        correction=None) -> Tensor:
    """torch.var: `input.var(...)`."""
    return _tensor(input, "var").var(dim, unbiased, keepdim, correction=correction)


def std(input: Tensor, dim=None, unbiased: Optional[bool] = None, keepdim: bool = False, *,  # noqa: A002
        correction=None) -> Tensor:
    """torch.std: `input.std(...)`."""
    return _tensor(input, "std").std(dim, unbiased, keepdim, correction=correction)


def argmax(input: Tensor, *args, **kwargs) -> Tensor:  # noqa: A002
    """torch.argmax(input, dim=None, keepdim=False) (the course's axis= works too)."""
    return _tensor(input, "argmax").argmax(*args, **kwargs)


def argmin(input: Tensor, *args, **kwargs) -> Tensor:  # noqa: A002
    """torch.argmin(input, dim=None, keepdim=False)."""
    return _tensor(input, "argmin").argmin(*args, **kwargs)


def allclose(input: Tensor, other: Tensor, rtol: float = 1e-05, atol: float = 1e-08,  # noqa: A002
             equal_nan: bool = False) -> bool:
    """Whether every element is close (see ops.isclose) -- torch.allclose; a Python bool, so it
    reads the result (not inside ndl.compile)."""
    return bool(ops.isclose(input, other, rtol, atol, equal_nan).all().item())


def numel(input: Tensor) -> int:  # noqa: A002
    return _tensor(input, "numel").numel()


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def is_floating_point(input: Tensor) -> bool:  # noqa: A002
    return array_api.is_floating(_tensor(input, "is_floating_point").dtype)
