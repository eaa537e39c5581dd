"""MiniTorch module 0: the elementary functions on Python floats, their derivative
("_back") forms, and the functional list helpers map / zipWith / reduce.

Every Scalar op in `scalar.py` computes its value and its local derivative with these
functions, so the math lives in exactly one place.

Design decisions:

* `log` has no epsilon guard. MiniTorch computes log(x + 1e-6), which silently turns
  log(0) into -13.8 and makes `log` disagree with `log_back(x, d) = d / x`. Here
  log(x) for x <= 0 raises ValueError naming x, and callers that may reach 0
  (e.g. a cross-entropy) must keep their argument positive themselves.
* `exp` raises OverflowError naming x instead of Python's bare "math range error".
* `inv(0)` raises ValueError naming the value instead of returning inf.
* Comparisons (`lt`, `eq`) return 1.0 / 0.0, so they compose with the arithmetic.

Some names (`id`, `max`, `map`, `sum`) shadow builtins on purpose, as in MiniTorch;
this module never uses the builtins after defining them.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, List

__all__ = [
    "mul", "id", "add", "neg", "lt", "eq", "max", "is_close", "sigmoid", "relu", "log", "exp",
    "inv", "tanh", "log_back", "inv_back", "relu_back", "sigmoid_back", "exp_back", "tanh_back",
    "map", "zipWith", "reduce", "negList", "addLists", "sum", "prod",
]

# ---------------------------------------------------------------------------- elementary


def mul(x: float, y: float) -> float:
    """x * y"""
    return x * y


def id(x: float) -> float:  # noqa: A001 - MiniTorch's name
    """The identity: x"""
    return x


def add(x: float, y: float) -> float:
    """x + y"""
    return x + y


def neg(x: float) -> float:
    """-x"""
    return -x


def lt(x: float, y: float) -> float:
    """1.0 if x < y else 0.0"""
    return 1.0 if x < y else 0.0


def eq(x: float, y: float) -> float:
    """1.0 if x == y else 0.0"""
    return 1.0 if x == y else 0.0


def max(x: float, y: float) -> float:  # noqa: A001 - MiniTorch's name
    """The larger of x and y (x when they are equal)."""
    return x if x >= y else y


def is_close(x: float, y: float) -> float:
    """1.0 if |x - y| < 1e-2 else 0.0 (MiniTorch's loose tolerance)."""
    return 1.0 if abs(x - y) < 1e-2 else 0.0


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), computed without overflow for any finite x.

    For x >= 0 the formula above only ever exponentiates a non-positive number; for
    x < 0 the equal form e^x / (1 + e^x) does the same, so neither branch can overflow.
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def relu(x: float) -> float:
    """x if x > 0 else 0.0"""
    return x if x > 0 else 0.0


def log(x: float) -> float:
    """Natural logarithm; ValueError for x <= 0 (no epsilon guard, see the module notes)."""
    if not x > 0:  # also catches nan
        raise ValueError(f"log is defined for x > 0 only, got x={x!r}")
    return math.log(x)


def exp(x: float) -> float:
    """e^x; OverflowError naming x when the result exceeds the float range (x > ~709.78)."""
    try:
        return math.exp(x)
    except OverflowError:
        raise OverflowError(f"exp({x!r}) overflows a float (x must be at most ~709.78)") from None


def inv(x: float) -> float:
    """1 / x; ValueError for x == 0."""
    if x == 0:
        raise ValueError(f"inv (1/x) is undefined at x={x!r}")
    return 1.0 / x


def tanh(x: float) -> float:
    """Hyperbolic tangent (saturates to +-1, never overflows)."""
    return math.tanh(x)


# ---------------------------------------------------------------------------- derivatives
# Each `f_back(x, d)` is d * f'(x): the chain rule applied to an incoming derivative d.


def log_back(x: float, d: float) -> float:
    """d * (log x)' = d / x; ValueError for x <= 0, where log is undefined."""
    if not x > 0:
        raise ValueError(f"log_back: log is defined for x > 0 only, got x={x!r}")
    return d / x


def inv_back(x: float, d: float) -> float:
    """d * (1/x)' = -d / x^2; ValueError for x == 0."""
    if x == 0:
        raise ValueError(f"inv_back: the derivative of 1/x is undefined at x={x!r}")
    return -d / (x * x)


def relu_back(x: float, d: float) -> float:
    """d * relu'(x) = d if x > 0 else 0 (the subgradient 0 is used at the kink x = 0)."""
    return d if x > 0 else 0.0


def sigmoid_back(x: float, d: float) -> float:
    """d * sigmoid'(x) = d * s * (1 - s) with s = sigmoid(x)."""
    s = sigmoid(x)
    return d * s * (1.0 - s)


def exp_back(x: float, d: float) -> float:
    """d * (e^x)' = d * e^x"""
    return d * exp(x)


def tanh_back(x: float, d: float) -> float:
    """d * tanh'(x) = d * (1 - tanh(x)^2)"""
    t = math.tanh(x)
    return d * (1.0 - t * t)


# ---------------------------------------------------------------------------- higher order


def map(fn: Callable[[float], float]) -> Callable[[Iterable[float]], List[float]]:  # noqa: A001
    """Lift a one-argument function to lists: map(fn)(ls) == [fn(x) for x in ls]."""

    def apply(ls: Iterable[float]) -> List[float]:
        return [fn(x) for x in ls]

    return apply


def zipWith(fn: Callable[[float, float], float]) -> Callable[[Iterable[float], Iterable[float]], List[float]]:
    """Lift a two-argument function to pairs of lists of equal length:
    zipWith(fn)(ls1, ls2) == [fn(x, y) for x, y in zip(ls1, ls2)].

    Lists of different lengths raise ValueError naming both lengths (never a silent
    truncation, which is what zip alone would do)."""

    def apply(ls1: Iterable[float], ls2: Iterable[float]) -> List[float]:
        ls1, ls2 = list(ls1), list(ls2)
        if len(ls1) != len(ls2):
            raise ValueError(f"zipWith needs lists of equal length, got lengths {len(ls1)} and {len(ls2)}")
        return [fn(x, y) for x, y in zip(ls1, ls2)]

    return apply


def reduce(fn: Callable[[float, float], float], start: float) -> Callable[[Iterable[float]], float]:
    """Fold a list from the left: reduce(fn, start)([x1, x2, ..., xn]) ==
    fn(...fn(fn(start, x1), x2)..., xn); the empty list gives `start`."""

    def apply(ls: Iterable[float]) -> float:
        acc = start
        for x in ls:
            acc = fn(acc, x)
        return acc

    return apply


def negList(ls: Iterable[float]) -> List[float]:
    """Negate every element."""
    return map(neg)(ls)


def addLists(ls1: Iterable[float], ls2: Iterable[float]) -> List[float]:
    """Element-wise sum of two lists of equal length (ValueError otherwise)."""
    return zipWith(add)(ls1, ls2)


def sum(ls: Iterable[float]) -> float:  # noqa: A001 - MiniTorch's name
    """Sum of a list (0.0 for the empty list)."""
    return reduce(add, 0.0)(ls)


def prod(ls: Iterable[float]) -> float:
    """Product of a list (1.0 for the empty list)."""
    return reduce(mul, 1.0)(ls)
