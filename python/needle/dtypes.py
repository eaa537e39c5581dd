"""The dtypes needle stores and the promotion rule between them (PyTorch's).

Four storage dtypes, the same on every device and in numpy mode: float32 (the
default), float64, int64 and bool. Other numpy dtypes are stored as the nearest
of these: every integer (and unsigned) type as int64, float16 as float32.

Promotion (`result_dtype`), as in PyTorch:

* array with array: the higher kind wins (bool < int < float); within a kind, the
  wider type (float32 with float64 gives float64);
* array with a scalar (a Python or numpy number): the scalar is "weak" -- it never
  widens the array's dtype within its kind (float32 * np.float64(2) stays float32,
  unlike NumPy 2), and only lifts the kind: an int64 array times 0.5 is float32,
  a bool array plus 1 is int64;
* true division of integers or bools gives float32.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["DTYPES", "FLOAT_DTYPES", "DEFAULT_FLOAT", "dtype_name", "storage_dtype", "is_floating",
           "result_dtype", "division_dtype", "scalar_kind", "scalar_dtype", "python_scalar", "largest", "HostScalar",
           "dtype", "as_dtype", "float32", "float64", "int64", "bool_", "DTYPE_ALIASES"]

DTYPES = ("float32", "float64", "int64", "bool")
FLOAT_DTYPES = ("float32", "float64")
DEFAULT_FLOAT = "float32"

_KIND_RANK = {"b": 0, "i": 1, "f": 2}
_KIND_DEFAULT = {"b": "bool", "i": "int64", "f": DEFAULT_FLOAT}
_NAME_CACHE: dict = {}


def dtype_name(dtype: Any) -> str:
    """The storage dtype name for any spelling ("float32", np.float32, np.dtype('int32'), ...).

    Raises TypeError for what cannot be stored (complex, strings, objects).
    """
    if isinstance(dtype, str):
        # a plain str for the look-up: an `ndl.dtype` key would compare through its Python __eq__
        dtype = str.__str__(dtype)
    try:
        return _NAME_CACHE[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable spelling
        pass
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}; needle stores {', '.join(DTYPES)}") from None
    kind = np_dtype.kind
    if kind == "u":
        kind = "i"
    if kind not in _KIND_RANK:
        raise TypeError(f"dtype {np_dtype} cannot be stored; needle stores {', '.join(DTYPES)}")
    name = np_dtype.name if np_dtype.name in DTYPES else _KIND_DEFAULT[kind]
    try:
        _NAME_CACHE[dtype] = name
    except TypeError:
        pass
    return name


class dtype(str):
    """A storage dtype as PyTorch spells it: `ndl.float32`, `ndl.float64`, `ndl.int64`, `ndl.bool`
    (and the aliases `ndl.float`, `ndl.double`, `ndl.long`, `ndl.int32`, `ndl.int`; see
    `DTYPE_ALIASES`).

    An instance is the string of its name (`ndl.float32 == "float32"`, same hash), so it goes
    wherever a dtype name goes -- `Tensor(..., dtype=ndl.float64)`, `.to(ndl.long)`, the
    factories, `np.dtype(ndl.float32)` -- and `Tensor.dtype` returns one, so
    `x.dtype == ndl.float32` and `x.dtype == "float32"` both hold. It also compares equal to
    the numpy dtype of the same name (`np.float32`, `np.dtype("float32")`), and has
    `is_floating_point` and `itemsize` like torch.dtype, `kind` and `name` like numpy's.
    There is one instance per storage dtype: `as_dtype(name)` returns it.
    """

    __slots__ = ()

    def __new__(cls, name: str) -> "dtype":
        if name not in DTYPES:
            raise TypeError(f"unknown dtype {name!r}; needle stores {', '.join(DTYPES)}")
        return super().__new__(cls, name)

    @property
    def name(self) -> str:
        return str.__str__(self)

    @property
    def is_floating_point(self) -> bool:
        return self in FLOAT_DTYPES

    @property
    def is_signed(self) -> bool:
        return self != "bool"

    @property
    def itemsize(self) -> int:
        return np.dtype(self.name).itemsize

    @property
    def kind(self) -> str:
        return np.dtype(self.name).kind

    def __repr__(self) -> str:
        return f"needle.{self.name}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return str.__eq__(self, other)
        if isinstance(other, np.dtype) or (isinstance(other, type) and issubclass(other, np.generic)):
            return np.dtype(other).name == self.name
        return NotImplemented

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__

    def __reduce__(self):
        return as_dtype, (self.name,)


float32 = dtype("float32")
float64 = dtype("float64")
int64 = dtype("int64")
bool_ = dtype("bool")
_BY_NAME = {d.name: d for d in (float32, float64, int64, bool_)}

# PyTorch's names for needle's dtypes. int32 (and torch.int) is stored as int64, as every
# integer type is, so ndl.int32 *is* ndl.int64: a tensor made with dtype=ndl.int32 has dtype
# ndl.int64 and compares equal to both.
DTYPE_ALIASES = {"float32": float32, "float": float32, "float64": float64, "double": float64,
                 "int64": int64, "long": int64, "int32": int64, "int": int64, "bool": bool_}


def as_dtype(value: Any) -> dtype:
    """The `dtype` instance for any spelling of a storage dtype (a name, a numpy dtype or
    type, an `ndl.*` dtype); TypeError for what cannot be stored."""
    found = _BY_NAME.get(str.__str__(value)) if isinstance(value, str) else None
    return found if found is not None else _BY_NAME[dtype_name(value)]


def storage_dtype(dtype: Any, default: str = DEFAULT_FLOAT) -> str:
    """`dtype_name(dtype)`, or `default` when dtype is None."""
    return default if dtype is None else dtype_name(dtype)


def is_floating(dtype: Any) -> bool:
    return dtype_name(dtype) in FLOAT_DTYPES


def _kind(name: str) -> str:
    return "b" if name == "bool" else "i" if name == "int64" else "f"


_PY_KIND = {float: "f", int: "i", bool: "b"}


class HostScalar:
    """A scalar whose value is read each time a kernel that uses it runs.

    Ops accept it wherever they accept a number. Eagerly it is just its current value;
    in a compiled step (needle.compile) it stays a runtime input of the recorded program
    instead of a constant baked in at trace time -- how a learning rate changed by a
    scheduler, or Adam's bias corrections, reach a replayed step.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"HostScalar({self.value!r})"


def scalar_kind(value: Any) -> str:
    """'b', 'i' or 'f' for a Python/numpy scalar (or a HostScalar); TypeError for anything else."""
    if isinstance(value, HostScalar):
        value = value.value
    kind = _PY_KIND.get(type(value))  # Python's own numbers, without the ABC checks below
    if kind is not None:
        return kind
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, (numbers.Integral, np.integer)):
        return "i"
    if isinstance(value, (numbers.Real, np.floating)):
        return "f"
    raise TypeError(f"expected a real number, got {type(value).__name__}")


def scalar_dtype(value: Any) -> str:
    """The dtype a lone scalar is stored as: bool, int64 or float32."""
    return _KIND_DEFAULT[scalar_kind(value)]


def python_scalar(value: Any):
    """`value` as a Python number if it is one: a Python or numpy real scalar, or a one-element
    numpy array (the course passes those as scalars); a HostScalar as it is; None otherwise."""
    if isinstance(value, (bool, int, float, HostScalar)):
        return value
    if isinstance(value, (np.generic, np.ndarray)) and value.size == 1 and value.dtype.kind in "biuf":
        return value.item()
    return None


def largest(dtype: Any) -> float:
    """The largest finite value of a float dtype (np.finfo(dtype).max)."""
    return float(np.finfo(dtype_name(dtype)).max)


def result_dtype(a: str, b: Any, *, b_is_scalar: bool = False) -> str:
    """The dtype of a binary elementwise result between an array of dtype `a` and `b`
    (another array's dtype name, or a scalar when `b_is_scalar`)."""
    if b_is_scalar:
        kind = scalar_kind(b)
        if _KIND_RANK[kind] <= _KIND_RANK[_kind(a)]:
            return a
        return _KIND_DEFAULT[kind]
    if a == b:
        return a
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return a if _KIND_RANK[ka] > _KIND_RANK[kb] else b
    return "float64"  # the only kind with two widths


def division_dtype(a: str, b: Any, *, b_is_scalar: bool = False) -> str:
    """True division: like result_dtype, but integers and bools divide into float32."""
    out = result_dtype(a, b, b_is_scalar=b_is_scalar)
    return out if out in FLOAT_DTYPES else DEFAULT_FLOAT
