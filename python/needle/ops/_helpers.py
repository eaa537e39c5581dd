"""Checks and small helpers shared by the op modules (private to needle.ops)."""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

from ..autograd import Tensor


def require_tensor(x, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} expects Tensor inputs, got {type(x).__name__}")


def same_shape(a, b, what: str) -> None:
    require_tensor(a, what)
    require_tensor(b, what)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes {a.shape} and {b.shape} differ")


def axis_index(axis: int, ndim: int, what: str) -> int:
    """`axis` as a non-negative int; TypeError/ValueError naming the op and the axis."""
    if not isinstance(axis, int) and not hasattr(axis, "__index__") or isinstance(axis, bool):
        raise TypeError(f"{what}: axis must be an int, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what}: axis {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def normalize_axes(axes, ndim: int, what: str) -> Optional[Tuple[int, ...]]:
    """None, an int or a sequence of ints as a sorted tuple of non-negative axes."""
    if axes is None:
        return None
    if type(axes) is int or (type(axes) is tuple and all_ints(axes)):
        return _normalized_axes(axes, ndim, what)  # the usual forms: the answer is kept (errors are not)
    return _normalize_axes(axes, ndim, what)


def all_ints(items: tuple) -> bool:
    """Whether every item is exactly an int (not a bool, float or numpy integer, which compare
    and hash equal to ints but are checked differently): such a tuple can key a cache."""
    for item in items:
        if type(item) is not int:
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _normalized_axes(axes, ndim: int, what: str) -> Optional[Tuple[int, ...]]:
    return _normalize_axes(axes, ndim, what)


def _normalize_axes(axes, ndim: int, what: str) -> Optional[Tuple[int, ...]]:
    if not isinstance(axes, (tuple, list)):
        if isinstance(axes, int) or hasattr(axes, "__index__"):
            axes = (axes,)
        else:
            raise TypeError(f"{what}: axes must be None, an int or a tuple of ints, got {axes!r}")
    out = tuple(sorted(axis_index(a, ndim, what) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated axis in {tuple(axes)}")
    return out


def reduced_axes(axes, ndim: int, what: str) -> Tuple[int, ...]:
    """The axes a reduction over `axes` removes (all of them for None)."""
    axes = normalize_axes(axes, ndim, what)
    return tuple(range(ndim)) if axes is None else axes


def inverse_permutation(perm) -> tuple:
    """The permutation that undoes `perm` (negative axes allowed)."""
    n = len(perm)
    inverse = [0] * n
    for i, ax in enumerate(perm):
        inverse[ax % n] = i
    return tuple(inverse)


def constant(data) -> Tensor:
    """A constant (no-grad) tensor around backend data."""
    return Tensor.make_const(data)


def size_of(shape) -> int:
    return math.prod(shape)


def sum_to_shape(x: Tensor, shape: tuple) -> Tensor:
    """Undo broadcasting: sum x over the axes that broadcasting to x.shape created.

    BroadcastTo's gradient (and matmul's for batched operands). Written with the Tensor
    methods `sum` and `reshape`, so that ops/shape.py needs no import of ops/reduction.py
    (which builds on shape.py).
    """
    shape = tuple(shape)
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    if axes and not lead and all(d == 1 or x.shape[i] == d for i, d in enumerate(shape)):
        return x.sum(axes, keepdims=True)  # already of `shape` (a (1, n) bias's gradient): one node, the same sum
    if axes:
        x = x.sum(axes)
    return x.reshape(shape)
