"""`Scalar`: one float that remembers how it was computed (MiniTorch module 1).

A Scalar made by an operation records the ScalarFunction, its Context and its input
Scalars; `backward()` walks that graph in topological order and adds d(output)/d(leaf)
to the `.derivative` of every leaf that requires a gradient. As in MiniTorch, leaves
accumulate across backward calls: reset them with `zero_grad()` (or `derivative = None`).

Python numbers mixed into an expression become constants (requires_grad=False), and an
operation whose inputs are all constants records no graph at all.

MiniTorch's view and needle's are one state: `history` is None for a constant, an empty
`ScalarHistory()` for a variable that is a leaf, and (last_fn, ctx, inputs) for a Scalar
made by a function; `requires_grad`, `last_fn`, `ctx` and `inputs` are read from it.
"""
from __future__ import annotations

import itertools
import numbers
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Type

from . import scalar_functions as F
from .autodiff import Context, backpropagate, central_difference

__all__ = ["Scalar", "ScalarHistory", "derivative_check", "central_difference"]

_ids = itertools.count()


class ScalarHistory(NamedTuple):
    """How a Scalar was made (MiniTorch's ScalarHistory): the ScalarFunction, the Context
    its forward filled, and its input Scalars. `ScalarHistory()` (every field empty) is
    the history of a variable that no function made: a leaf."""

    last_fn: Optional[Type[F.ScalarFunction]] = None
    ctx: Optional[Context] = None
    inputs: Sequence["Scalar"] = ()


_tuple_new = tuple.__new__
_LEAF = ScalarHistory()  # immutable, so every leaf can share it
_UNSET: Any = object()  # tells "no history given" apart from an explicit None (a constant)


def _as_float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real):  # int, bool, numpy scalars
        return float(value)
    raise TypeError(f"Scalar needs a real number, got {type(value).__name__} {value!r}")


class Scalar:
    """A float in a differentiable computation: `Scalar(v, back=ScalarHistory(), name=None)`
    as in MiniTorch.

    `back` is the history: the default (an empty ScalarHistory) makes a leaf variable,
    None makes a constant, and a ScalarHistory(fn, ctx, inputs) makes a Scalar that `fn`
    produced from `inputs`. needle's keyword `requires_grad` is the same choice said the
    other way: `requires_grad=False` makes a constant.

    Attributes: `data` (the float), `derivative` (accumulated d(output)/d(self) on leaves,
    None before any backward), `history`, `name`, `unique_id`; `requires_grad`, `last_fn`,
    `ctx`, `inputs` and `parents` are read from `history`.
    """

    __slots__ = ("data", "derivative", "history", "name", "unique_id")
    data: float
    derivative: Optional[float]
    history: Optional[ScalarHistory]
    name: Optional[str]
    unique_id: int

    def __init__(self, v: Any, back: Optional[ScalarHistory] = _UNSET, name: Optional[str] = None, *,
                 requires_grad: Optional[bool] = None):
        self.data = _as_float(v.data if isinstance(v, Scalar) else v)
        if back is _UNSET:
            back = None if requires_grad is not None and not requires_grad else _LEAF
        elif back is not None and not isinstance(back, ScalarHistory):
            raise TypeError(f"Scalar's second argument is its history, a ScalarHistory or None, got "
                            f"{type(back).__name__} {back!r}; pass a name as name=...")
        if requires_grad is not None and bool(requires_grad) != (back is not None):
            raise ValueError(f"Scalar(requires_grad={requires_grad!r}) contradicts its history {back!r}: "
                             f"a history of None is a constant, any ScalarHistory requires a gradient")
        self.history = back
        self.derivative = None
        self.unique_id = next(_ids)
        self.name = name

    @classmethod
    def _from_function(cls, value: float, fn: Type[F.ScalarFunction], ctx: Context,
                       inputs: Tuple["Scalar", ...]) -> "Scalar":
        out = object.__new__(cls)  # the hot path of every operation: set the slots directly
        out.data = value
        out.derivative = None
        out.history = _tuple_new(ScalarHistory, (fn, ctx, inputs))  # skips NamedTuple's slower __new__
        out.name = None
        out.unique_id = next(_ids)
        return out

    # ------------------------------------------------------------------ graph
    @property
    def requires_grad(self) -> bool:
        """True unless this Scalar is a constant (its history is None)."""
        return self.history is not None

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    @property
    def last_fn(self) -> Optional[Type[F.ScalarFunction]]:
        """The ScalarFunction that made this Scalar (None for leaves and constants)."""
        return None if self.history is None else self.history.last_fn

    @property
    def ctx(self) -> Optional[Context]:
        """The Context of the function that made this Scalar (None for leaves and constants)."""
        return None if self.history is None else self.history.ctx

    @property
    def inputs(self) -> Sequence["Scalar"]:
        """The Scalars this one was computed from (empty for leaves and constants)."""
        return () if self.history is None else self.history.inputs

    @property
    def parents(self) -> Sequence["Scalar"]:
        """The Scalars this one was computed from (empty for leaves and constants)."""
        return self.inputs

    def is_leaf(self) -> bool:
        """True for a variable no function made: history is an empty ScalarHistory."""
        return self.history is not None and self.history.last_fn is None

    def is_constant(self) -> bool:
        """True when no gradient flows to or through this Scalar (history is None)."""
        return self.history is None

    def requires_grad_(self, flag: bool = True) -> "Scalar":
        """Make this Scalar a leaf variable (flag True) or a constant (flag False); returns
        self. Only Scalars no function made can change."""
        if self.last_fn is not None:
            raise RuntimeError("requires_grad_ can only change a leaf or a constant Scalar; this one was made by "
                               f"{self.last_fn.__name__}")
        self.history = _LEAF if flag else None
        return self

    def chain_rule(self, d_output: float) -> List[Tuple["Scalar", float]]:
        """(input, d_output * d(self)/d(input)) for every input of the function that made
        this Scalar, constants included (backpropagate is what skips them)."""
        h = self.history
        if h is None or h.last_fn is None:
            kind = "constant" if h is None else "leaf"
            raise RuntimeError(f"chain_rule called on the {kind} {self!r}, which no function made")
        if h.ctx is None:
            raise RuntimeError(f"chain_rule: the history of {self!r} has no Context for "
                               f"{h.last_fn.__name__}.backward")
        return h.last_fn.chain_rule(h.ctx, h.inputs, d_output)

    def accumulate_derivative(self, d: float) -> None:
        """Add d to `.derivative` (leaves only)."""
        if not self.is_leaf():
            fn = self.last_fn  # None exactly for a constant, here
            made = "is a constant" if fn is None else f"was made by {fn.__name__}"
            raise RuntimeError(f"only leaves accumulate derivatives; {self!r} {made}")
        self.derivative = d if self.derivative is None else self.derivative + d

    def zero_grad(self) -> None:
        """Forget the accumulated derivative (sets it to None)."""
        self.derivative = None

    def backward(self, d_output: float = 1.0) -> None:
        """Add d_output * d(self)/d(leaf) to the `.derivative` of every leaf that requires a
        gradient and that self depends on. The graph is kept, so calling it again adds again."""
        if self.history is None:
            raise RuntimeError(f"backward() on the constant {self!r}, which depends on no Scalar with "
                               f"requires_grad=True")
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

    def __eq__(self, b):
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

