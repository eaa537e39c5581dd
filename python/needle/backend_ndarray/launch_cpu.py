"""Prepared launches of the host kernels, for replaying a compiled step.

A replayed call always sees the same buffers, so the numpy views a kernel would build
on every call (its operands, its output) can be built once. `prepare(name, args)`
returns a zero-argument callable doing exactly what `kernel(*args)` does, minus that
set-up, or None for kernels that gain nothing (they then run as they are). HostScalar
arguments are read when the launch runs.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import numpy as np

from ..dtypes import HostScalar
from .host_buffer import out_view, read, reduction_blocks, strided_view

__all__ = ["prepare"]

_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "pow": np.power,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum, "eq": np.equal, "ne": np.not_equal,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
}
_REVERSED = {"rsub": np.subtract, "rdiv": np.true_divide, "rpower": np.power}
_UNARY = {"neg": np.negative, "abs": np.abs, "log": np.log, "exp": np.exp, "tanh": np.tanh, "sqrt": np.sqrt}
_REDUCE = {"reduce_sum": np.add, "reduce_max": np.maximum, "reduce_min": np.minimum}


def _with_scalar(fn, x, val, o, reverse: bool) -> Callable[[], None]:
    if isinstance(val, HostScalar):
        if reverse:
            return lambda: fn(val.value, x, out=o, casting="unsafe")
        return lambda: fn(x, val.value, out=o, casting="unsafe")
    if reverse:
        return functools.partial(fn, val, x, out=o, casting="unsafe")
    return functools.partial(fn, x, val, out=o, casting="unsafe")


def _sigmoid(x, y):
    def run():
        np.negative(x, out=y)
        np.logaddexp(0, y, out=y)
        np.negative(y, out=y)
        np.exp(y, out=y)
    return run


def _where(c, a, b, y):
    def run():
        np.copyto(y, b, casting="unsafe")
        np.copyto(y, a, casting="unsafe", where=c)
    return run


def prepare(name: str, args: tuple) -> Optional[Callable[[], None]]:
    """A launch of kernel `name` on fixed `args`, or None to run the kernel itself."""
    if name.startswith("ewise_"):
        op = name[len("ewise_"):]
        if op in _BINARY:
            a, b, out = args
            x = read(a)
            return functools.partial(_BINARY[op], x, read(b), out=out_view(out, x.shape), casting="unsafe")
        if op in _UNARY:
            a, out = args
            x = read(a)
            return functools.partial(_UNARY[op], x, out=out_view(out, x.shape))
        if op == "sigmoid":
            a, out = args
            x = read(a)
            return _sigmoid(x, out_view(out, x.shape))
        if op == "where":
            cond, a, b, out = args
            c = read(cond)
            return _where(c, read(a), read(b), out_view(out, c.shape))
        if op == "setitem":
            a, out, shape, strides, offset = args
            return functools.partial(np.copyto, strided_view(out, shape, strides, offset), out_view(a, shape),
                                     casting="unsafe")
        return None
    if name.startswith("scalar_"):
        op = name[len("scalar_"):]
        if op == "setitem":
            size, val, out, shape, strides, offset = args
            view = strided_view(out, shape, strides, offset)
            if isinstance(val, HostScalar):
                return lambda: view.fill(val.value)
            return functools.partial(view.fill, val)
        a, val, out = args
        x = read(a)
        o = out_view(out, x.shape)
        if op in _BINARY:
            return _with_scalar(_BINARY[op], x, val, o, reverse=False)
        if op in _REVERSED:
            return _with_scalar(_REVERSED[op], x, val, o, reverse=True)
        return None
    if name == "compact":
        a, out, shape, strides, offset = args
        return functools.partial(np.copyto, out_view(out, shape), strided_view(a, shape, strides, offset),
                                 casting="unsafe")
    if name == "matmul":
        a, b, out, m, n, p, *rest = args
        batch = rest[0] if rest else 1
        return functools.partial(np.matmul, read(a).reshape(batch, m, n), read(b).reshape(batch, n, p),
                                 out=out_view(out, (batch, m, p)))
    if name in _REDUCE:
        a, out, reduce_size = args
        x, first = reduction_blocks(a, reduce_size)
        dest = out_view(out, x.shape[:first])
        axes = tuple(range(first, x.ndim))
        return functools.partial(_REDUCE[name].reduce, x, axis=axes, out=dest, dtype=dest.dtype)
    return None
