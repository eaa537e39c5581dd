"""One ScalarFunction per Scalar operation (MiniTorch's scalar_functions.py): `forward`
computes the value from floats, `backward` returns d_output times the local derivative
for each input, both written with the float functions of `operators.py`.

Subtraction and division are compositions (a + (-b), a * (1/b)), as in MiniTorch.
"""
from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple, Union

from . import operators
from . import scalar as _scalar  # Scalar itself; a module import so either file may load first
from .autodiff import Context

__all__ = [
    "ScalarFunction", "Add", "Mul", "Neg", "Inv", "Log", "Exp", "Sigmoid", "ReLU", "Tanh", "Pow", "LT", "EQ",
]

Derivatives = Union[float, Tuple[float, ...]]


class ScalarFunction:
    """Base class of the Scalar operations. Subclasses define

    * ``forward(ctx, *xs: float) -> float``: the value; may ``ctx.save_for_backward(...)``
    * ``backward(ctx, d: float) -> float | tuple``: d times the partial derivative of the
      output with respect to each input, in input order.

    ``apply(*values)`` runs forward on Scalars or numbers and returns a Scalar. A Python
    number becomes a constant Scalar input. The result records this function, its Context
    and its inputs when any input is a variable, and is a constant otherwise.
    """

    @staticmethod
    def forward(ctx: Context, *inputs: Any, **kwargs: Any) -> float:  # each function names its own operands
        raise NotImplementedError()

    @staticmethod
    def backward(ctx: Context, d_output: float) -> Derivatives:
        raise NotImplementedError()

    @classmethod
    def apply(cls, *values: Any) -> "_scalar.Scalar":
        """forward on the values of `values` (Scalars or real numbers), as a Scalar."""
        Scalar = _scalar.Scalar
        inputs, raw, track = [], [], False
        for v in values:
            if not isinstance(v, Scalar):
                v = Scalar(v, None)  # a constant; TypeError for non-numbers
            elif v.history is not None:
                track = True
            inputs.append(v)
            raw.append(v.data)
        ctx = Context()
        out = cls.forward(ctx, *raw)
        if type(out) is not float:
            out = float(out)
        if track:
            return Scalar._from_function(out, cls, ctx, tuple(inputs))
        return Scalar(out, None)

    @classmethod
    def chain_rule(cls, ctx: Context, inputs: Sequence[Any], d_output: float) -> List[Tuple[Any, float]]:
        """(input, derivative) for every input, constants included, in input order."""
        derivs = cls.backward(ctx, d_output)
        if not isinstance(derivs, tuple):
            derivs = (derivs,)
        if len(derivs) != len(inputs):
            raise RuntimeError(f"{cls.__name__}.backward returned {len(derivs)} derivative(s) "
                               f"for {len(inputs)} input(s)")
        return list(zip(inputs, derivs))


class Add(ScalarFunction):
    """x + y"""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        return operators.add(x, y)

    @staticmethod
    def backward(ctx: Context, d: float) -> Tuple[float, float]:
        return d, d


class Mul(ScalarFunction):
    """x * y"""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        ctx.save_for_backward(x, y)
        return operators.mul(x, y)

    @staticmethod
    def backward(ctx: Context, d: float) -> Tuple[float, float]:
        x, y = ctx.saved_values
        return operators.mul(d, y), operators.mul(d, x)


class Neg(ScalarFunction):
    """-x"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        return operators.neg(x)

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        return operators.neg(d)


class Inv(ScalarFunction):
    """1 / x"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        ctx.save_for_backward(x)
        return operators.inv(x)

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (x,) = ctx.saved_values
        return operators.inv_back(x, d)


class Log(ScalarFunction):
    """log x (x > 0)"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        ctx.save_for_backward(x)
        return operators.log(x)

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (x,) = ctx.saved_values
        return operators.log_back(x, d)


class Exp(ScalarFunction):
    """e^x"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        out = operators.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (out,) = ctx.saved_values  # (e^x)' = e^x: reuse the value instead of exp_back's recomputation
        return operators.mul(d, out)


class Sigmoid(ScalarFunction):
    """1 / (1 + e^-x)"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        out = operators.sigmoid(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (s,) = ctx.saved_values  # sigmoid' = s (1 - s), from the saved output
        return d * s * (1.0 - s)


class ReLU(ScalarFunction):
    """max(x, 0)"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        ctx.save_for_backward(x)
        return operators.relu(x)

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (x,) = ctx.saved_values
        return operators.relu_back(x, d)


class Tanh(ScalarFunction):
    """tanh x"""

    @staticmethod
    def forward(ctx: Context, x: float) -> float:
        out = operators.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, d: float) -> float:
        (t,) = ctx.saved_values  # tanh' = 1 - t^2, from the saved output
        return d * (1.0 - t * t)


class Pow(ScalarFunction):
    """x ** y, real-valued only.

    d/dx = y x^(y-1); d/dy = x^y log x, which needs x > 0: `apply` therefore refuses a
    base <= 0 when the exponent requires a gradient. A negative base needs an integer
    exponent (anything else has no real value).
    """

    @classmethod
    def apply(cls, x, y) -> "_scalar.Scalar":
        if isinstance(y, _scalar.Scalar) and y.requires_grad:
            base = x.data if isinstance(x, _scalar.Scalar) else x
            if not base > 0:
                raise ValueError(f"x ** y with an exponent that requires a gradient needs x > 0 "
                                 f"(d/dy = x**y * log(x)), got x={base!r}")
        return super().apply(x, y)

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        if x < 0 and not float(y).is_integer():
            raise ValueError(f"x ** y has no real value for x={x!r} < 0 and non-integer y={y!r}")
        if x == 0 and y < 0:
            raise ValueError(f"x ** y is undefined for x=0 and y={y!r} < 0")
        try:
            out = math.pow(x, y)
        except OverflowError:
            raise OverflowError(f"{x!r} ** {y!r} overflows a float") from None
        ctx.save_for_backward(x, y, out)
        return out

    @staticmethod
    def backward(ctx: Context, d: float) -> Tuple[float, float]:
        x, y, out = ctx.saved_values
        if y == 0:
            dx = 0.0  # x ** 0 == 1 everywhere
        elif x == 0 and y < 1:
            raise ValueError(f"the derivative of x ** y is infinite at x=0 for y={y!r} < 1")
        else:
            dx = d * y * math.pow(x, y - 1)
        dy = d * out * math.log(x) if x > 0 else 0.0  # only used when y requires a gradient (then x > 0)
        return dx, dy


class LT(ScalarFunction):
    """1.0 if x < y else 0.0; piecewise constant, so both derivatives are 0."""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        return operators.lt(x, y)

    @staticmethod
    def backward(ctx: Context, d: float) -> Tuple[float, float]:
        return 0.0, 0.0


class EQ(ScalarFunction):
    """1.0 if x == y else 0.0; both derivatives are 0."""

    @staticmethod
    def forward(ctx: Context, x: float, y: float) -> float:
        return operators.eq(x, y)

    @staticmethod
    def backward(ctx: Context, d: float) -> Tuple[float, float]:
        return 0.0, 0.0

