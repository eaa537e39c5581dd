"""`Scalar`: one float that remembers how it was computed (MiniTorch module 1).

A Scalar made by an operation records the ScalarFunction, its Context and its input
Scalars; `backward()` walks that graph in topological order and adds d(output)/d(leaf)
to the `.derivative` of every leaf that requires a gradient. As in MiniTorch, leaves
accumulate across backward calls: reset them with `zero_grad()` (or `derivative = None`).

Python numbers mixed into an expression become constants (requires_grad=False), and an
operation whose inputs are all constants records no graph at all.
"""
from __future__ import annotations

import itertools
import numbers
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from . import scalar_functions as F
from .autodiff import Context, backpropagate, central_difference

__all__ = ["Scalar", "ScalarHistory", "derivative_check", "central_difference"]

_ids = itertools.count()


class ScalarHistory(NamedTuple):
    """How a Scalar was made: MiniTorch's (last_fn, ctx, inputs); all None/() for a leaf."""

    last_fn: Optional[type]
    ctx: Optional[Context]
    inputs: Tuple["Scalar", ...]


def _as_float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real):  # int, bool, numpy scalars
        return float(value)
    raise TypeError(f"Scalar needs a real number, got {type(value).__name__} {value!r}")


class Scalar:
    """A float in a differentiable computation.

    Attributes: `data` (the float), `derivative` (accumulated d(output)/d(self) on leaves,
    None before any backward), `requires_grad`, `name`, `unique_id`, and the history
    `last_fn` / `ctx` / `inputs` (empty for leaves).
    """

    __slots__ = ("data", "derivative", "requires_grad", "name", "unique_id", "last_fn", "ctx", "inputs")

    def __init__(self, value: Any, *, requires_grad: bool = True, name: Optional[str] = None):
        self.data = _as_float(value.data if isinstance(value, Scalar) else value)
        self.derivative: Optional[float] = None
        self.requires_grad = bool(requires_grad)
        self.unique_id = next(_ids)
        self.name = name
        self.last_fn = None
        self.ctx = None
        self.inputs: Tuple[Scalar, ...] = ()

    @classmethod
    def _from_function(cls, value: float, fn: type, ctx: Context, inputs: Tuple["Scalar", ...]) -> "Scalar":
        out = object.__new__(cls)  # the hot path of every operation: set the slots directly
        out.data = value
        out.derivative = None
        out.requires_grad = True
        out.name = None
        out.unique_id = next(_ids)
        out.last_fn, out.ctx, out.inputs = fn, ctx, inputs
        return out

    # ------------------------------------------------------------------ graph
    @property
    def history(self) -> ScalarHistory:
        return ScalarHistory(self.last_fn, self.ctx, self.inputs)

    @property
    def parents(self) -> Tuple["Scalar", ...]:
        """The Scalars this one was computed from (empty for a leaf)."""
        return self.inputs

    def is_leaf(self) -> bool:
        """True when made directly, not by an operation."""
        return self.last_fn is None

    def is_constant(self) -> bool:
        """True when no gradient flows to or through this Scalar."""
        return not self.requires_grad

    def requires_grad_(self, flag: bool = True) -> "Scalar":
        """Turn gradient tracking on or off for a leaf; returns self."""
        if not self.is_leaf():
            raise RuntimeError("requires_grad_ can only change a leaf Scalar; this one was made by "
                               f"{self.last_fn.__name__}")
        self.requires_grad = bool(flag)
        return self

    def chain_rule(self, d_output: float) -> List[Tuple["Scalar", float]]:
        """(parent, d_output * d(self)/d(parent)) for every parent that requires a gradient."""
        if self.last_fn is None:
            raise RuntimeError(f"chain_rule called on the leaf {self!r}, which has no inputs")
        return self.last_fn.chain_rule(self.ctx, self.inputs, d_output)

    def accumulate_derivative(self, d: float) -> None:
        """Add d to `.derivative` (leaves only)."""
        if not self.is_leaf():
            raise RuntimeError(f"only leaves accumulate derivatives; {self!r} was made by {self.last_fn.__name__}")
        self.derivative = d if self.derivative is None else self.derivative + d

    def zero_grad(self) -> None:
        """Forget the accumulated derivative (sets it to None)."""
        self.derivative = None

    def backward(self, d_output: float = 1.0) -> None:
        """Add d_output * d(self)/d(leaf) to the `.derivative` of every leaf that requires a
        gradient and that self depends on. The graph is kept, so calling it again adds again."""
        if not self.requires_grad:
            raise RuntimeError(f"backward() on {self!r}, which depends on no Scalar with requires_grad=True")
        backpropagate(self, _as_float(d_output.data if isinstance(d_output, Scalar) else d_output))

    # ------------------------------------------------------------------ conversions
    def item(self) -> float:
        return self.data

    def __float__(self) -> float:
        return self.data

    def __bool__(self) -> bool:
        return bool(self.data)

    def __repr__(self) -> str:
        return f"Scalar({self.data!r})"

    __hash__ = object.__hash__  # defining __eq__ would otherwise remove hashing

    # ------------------------------------------------------------------ operators
    # Each returns NotImplemented for operands that are neither Scalars nor real numbers,
    # so Python raises its usual TypeError naming both types.
    def __add__(self, b):
        return F.Add.apply(self, b) if _operand(b) else NotImplemented

    def __radd__(self, b):
        return F.Add.apply(b, self) if _operand(b) else NotImplemented

    def __sub__(self, b):
        return F.Add.apply(self, F.Neg.apply(b)) if _operand(b) else NotImplemented

    def __rsub__(self, b):
        return F.Add.apply(b, F.Neg.apply(self)) if _operand(b) else NotImplemented

    def __mul__(self, b):
        return F.Mul.apply(self, b) if _operand(b) else NotImplemented

    def __rmul__(self, b):
        return F.Mul.apply(b, self) if _operand(b) else NotImplemented

    def __truediv__(self, b):
        return F.Mul.apply(self, F.Inv.apply(b)) if _operand(b) else NotImplemented

    def __rtruediv__(self, b):
        return F.Mul.apply(b, F.Inv.apply(self)) if _operand(b) else NotImplemented

    def __pow__(self, b):
        return F.Pow.apply(self, b) if _operand(b) else NotImplemented

    def __rpow__(self, b):
        return F.Pow.apply(b, self) if _operand(b) else NotImplemented

    def __neg__(self):
        return F.Neg.apply(self)

    def __lt__(self, b):
        return F.LT.apply(self, b) if _operand(b) else NotImplemented

    def __gt__(self, b):
        return F.LT.apply(b, self) if _operand(b) else NotImplemented

    def __eq__(self, b):  # type: ignore[override]
        return F.EQ.apply(self, b) if _operand(b) else NotImplemented

    # ------------------------------------------------------------------ functions
    def log(self) -> "Scalar":
        return F.Log.apply(self)

    def exp(self) -> "Scalar":
        return F.Exp.apply(self)

    def sigmoid(self) -> "Scalar":
        return F.Sigmoid.apply(self)

    def relu(self) -> "Scalar":
        return F.ReLU.apply(self)

    def tanh(self) -> "Scalar":
        return F.Tanh.apply(self)


def _operand(b: Any) -> bool:
    return isinstance(b, (Scalar, numbers.Real))


def derivative_check(f: Callable[..., Scalar], *scalars: Any, rtol: float = 1e-4, atol: float = 1e-6,
                     epsilon: float = 1e-6) -> List[Tuple[float, float]]:
    """Check backward() against central differences for every argument of f.

    f is called on fresh leaf copies of `scalars` (Scalars or numbers; the originals'
    derivatives are left alone), its output is back-propagated, and each argument's
    derivative is compared with `central_difference(f, ..., arg=i)`: they must satisfy
    |backward - numeric| <= atol + rtol * |numeric|. A mismatch raises AssertionError
    naming the argument, its value and both derivatives. Returns the (backward, numeric)
    pairs, in argument order.
    """
    if not scalars:
        raise ValueError("derivative_check needs at least one argument for f")
    values = [_as_float(s.data if isinstance(s, Scalar) else s) for s in scalars]
    leaves = [Scalar(v, name=f"arg{i}") for i, v in enumerate(values)]
    out = f(*leaves)
    if not isinstance(out, Scalar):
        raise TypeError(f"derivative_check: f must return a Scalar, got {type(out).__name__}")
    if out.requires_grad:
        out.backward()
    results = []
    for i, leaf in enumerate(leaves):
        backward = leaf.derivative if leaf.derivative is not None else 0.0
        numeric = central_difference(f, *leaves, arg=i, epsilon=epsilon)
        if not abs(backward - numeric) <= atol + rtol * abs(numeric):
            raise AssertionError(
                f"derivative_check: argument {i} (value {values[i]!r}): backward() gives {backward!r}, "
                f"central difference gives {numeric!r}")
        results.append((backward, numeric))
    return results

