"""The elementwise primitives: one row each, and everything else is made from the rows.

A primitive is an elementwise function with a kernel of its own on every device. Its row
says what it computes (a numpy reference, the scalar expression every generated kernel
uses), how it promotes dtypes, and how it is spelled in each place that names it. From
the table come:

* the device kernels of the interface (`ewise_<kernel>`, `scalar_<kernel>` and the
  reflected `scalar_<reflected>`; `interface.elementwise_kernels()`), which each device
  implements by family -- binary, scalar, reflected scalar, unary -- not one by one;
* `NDArray`'s methods and operators (`methods`) and the array functions ops call
  (`function`: `array_api.add`, ...), in nd mode and in numpy mode alike;
* the compiler's fused forms: `expr` is the scalar expression a fused kernel evaluates
  (numba on the cpu, numba.cuda on a GPU); on the cpu only `exact` rows are fused, those
  whose fused form gives numpy's bits;
* the ONNX operator an op computing the primitive exports to (`onnx`).

So a new primitive is a row here, an Op with its gradient (`needle.ops`, naming the row
in `primitive`), and a row of the edge sweep (tests/op_edge_cases.py). A function that
existing ops express (softplus, GELU, SiLU, clamp...) is a composite instead: an op or
function built from these, with no kernel of its own.

`expr` uses `{a}`, `{b}` for the operands and the functions `exp`, `log`, `log1p`, `sqrt`,
`tanh`, `sin`, `cos`, `abs`, `maximum` and `minimum` (numpy's rules on x86: a nan in `a` wins, then
a nan in `b`, and a tie -- -0.0 against 0.0 -- gives `b`), which
each code generator maps to its own (`EXPR_FUNCTIONS` names them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["Primitive", "PRIMITIVES", "BY_NAME", "BY_FUNCTION", "EXPR_FUNCTIONS", "kernel_names", "scalar_function"]

# the functions an `expr` may call; every code generator provides each of them
EXPR_FUNCTIONS = ("exp", "log", "log1p", "sqrt", "tanh", "sin", "cos", "abs", "maximum", "minimum")


@dataclass(frozen=True)
class Primitive:
    """One elementwise primitive (see the module docstring).

    name: the kernel suffix (`ewise_<name>`); function: `array_api.<function>`;
    arity: 1 or 2 operands; numpy: the reference on numpy arrays (and a scalar for the scalar
    forms), used by the cpu_numpy device and numpy mode; expr: the scalar expression;
    exact: the fused cpu form gives numpy's bits; ufunc: the numpy ufunc the cpu device
    calls in place (`out=`), else `into(x, out)` / `scalar_into(x, val, out)` do it, else
    the reference's result is copied in; dtype: "promote" (PyTorch's promotion),
    "division" (true division: integers give float32) or "bool" (a comparison);
    floating: integer and bool inputs are converted to float32 first; refuses_bool: bool
    operands are refused (numpy's rule for - and negation); scalar_kernel: the scalar
    kernel's suffix when it differs from name; reflected: the suffix of the kernel for
    `scalar op array`, None when the operation is symmetric; swapped: the primitive that
    computes the operands in the other order (for `2 < x`); methods: NDArray's spellings;
    onnx: the ONNX operator.
    """

    name: str
    function: str
    arity: int
    numpy: Callable
    expr: str
    exact: bool = False
    ufunc: Optional[np.ufunc] = None
    into: Optional[Callable] = None
    scalar_into: Optional[Callable] = None
    dtype: str = "promote"
    floating: bool = False
    refuses_bool: bool = False
    scalar_kernel: Optional[str] = None
    reflected: Optional[str] = None
    swapped: Optional[str] = None
    methods: Tuple[str, ...] = ()
    onnx: Optional[str] = None

    @property
    def kernels(self) -> Tuple[str, ...]:
        """The device kernels of this primitive, in the interface's naming."""
        if self.arity == 1:
            return (f"ewise_{self.name}",)
        names = [f"ewise_{self.name}", f"scalar_{self.scalar_kernel or self.name}"]
        if self.reflected:
            names.append(f"scalar_{self.reflected}")
        return tuple(names)


# --- the references that are not a single ufunc ----------------------------------------------------

def _power(x, y):
    """x ** y; a scalar exponent 0.5 is sqrt(x) and -0.5 is 1 / sqrt(x) (PyTorch's edges: -0 at
    -0, -inf at -0 for -0.5, nan at -inf; and the correctly rounded square root on every CPU,
    where libm's pow may differ in the last bit and takes five times as long)."""
    if np.ndim(y) == 0 and not isinstance(y, (bool, np.bool_)):
        if y == 0.5:
            return np.sqrt(x)
        if y == -0.5:
            return np.reciprocal(np.sqrt(x))
    return np.power(x, y)


def _power_into(x, val, out) -> None:
    if val == 0.5:
        np.sqrt(x, out=out, casting="unsafe")
    elif val == -0.5:
        np.sqrt(x, out=out)
        np.reciprocal(out, out=out)
    else:
        np.power(x, val, out=out, casting="unsafe")


def _sigmoid(x):
    """1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|): neither side overflows or
    cancels, so both tails are accurate (2.06e-9 at -20, not 0)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, x.dtype.type(1), e) / (1 + e)


def _sigmoid_into(x, out) -> None:
    """_sigmoid written into `out` with one exp (far cheaper than logaddexp) and no temporaries
    but the numerator."""
    np.abs(x, out=out)
    np.negative(out, out=out)
    np.exp(out, out=out)
    numerator = np.where(x >= 0, out.dtype.type(1), out)
    np.add(out, 1, out=out)
    np.divide(numerator, out, out=out)


_SIGMOID = "(1 / (1 + exp(-abs({a}))) if {a} >= 0 else exp(-abs({a})) / (1 + exp(-abs({a}))))"


def _binary(name, function, ufunc, expr, onnx, methods=(), **kw) -> Primitive:
    return Primitive(name, function, 2, kw.pop("numpy", ufunc), expr, ufunc=ufunc, onnx=onnx, methods=methods, **kw)


def _comparison(name, function, ufunc, symbol, swapped, onnx, method) -> Primitive:
    return _binary(name, function, ufunc, f"{{a}} {symbol} {{b}}", onnx, (method,), exact=True, dtype="bool",
                   swapped=swapped)


def _unary(name, function, ufunc, expr, onnx, exact=False, floating=True, **kw) -> Primitive:
    return Primitive(name, function, 1, kw.pop("numpy", ufunc), expr, exact=exact, ufunc=ufunc, floating=floating,
                     onnx=onnx, **kw)


PRIMITIVES: Tuple[Primitive, ...] = (
    _binary("add", "add", np.add, "{a} + {b}", "Add", ("__add__", "__radd__"), exact=True, swapped="add"),
    _binary("sub", "subtract", np.subtract, "{a} - {b}", "Sub", ("__sub__",), exact=True, reflected="rsub",
            refuses_bool=True),
    _binary("mul", "multiply", np.multiply, "{a} * {b}", "Mul", ("__mul__", "__rmul__"), exact=True, swapped="mul"),
    _binary("div", "divide", np.true_divide, "{a} / {b}", "Div", ("__truediv__",), exact=True, reflected="rdiv",
            dtype="division"),
    _binary("pow", "power", np.power, "{a} ** {b}", "Pow", ("__pow__",), numpy=_power, scalar_into=_power_into,
            scalar_kernel="power", reflected="rpower"),
    _binary("maximum", "maximum", np.maximum, "maximum({a}, {b})", "Max", ("maximum",), exact=True,
            swapped="maximum"),
    _binary("minimum", "minimum", np.minimum, "minimum({a}, {b})", "Min", ("minimum",), exact=True,
            swapped="minimum"),
    _comparison("eq", "equal", np.equal, "==", "eq", "Equal", "__eq__"),
    _comparison("ne", "not_equal", np.not_equal, "!=", "ne", None, "__ne__"),
    _comparison("lt", "less", np.less, "<", "gt", "Less", "__lt__"),
    _comparison("le", "less_equal", np.less_equal, "<=", "ge", "LessOrEqual", "__le__"),
    _comparison("gt", "greater", np.greater, ">", "lt", "Greater", "__gt__"),
    _comparison("ge", "greater_equal", np.greater_equal, ">=", "le", "GreaterOrEqual", "__ge__"),
    _unary("neg", "negative", np.negative, "-{a}", "Neg", exact=True, floating=False, refuses_bool=True,
           methods=("__neg__",)),
    _unary("abs", "abs", np.abs, "abs({a})", "Abs", exact=True, floating=False, methods=("abs",)),
    _unary("log", "log", np.log, "log({a})", "Log", methods=("log",)),
    _unary("exp", "exp", np.exp, "exp({a})", "Exp", methods=("exp",)),
    _unary("tanh", "tanh", np.tanh, "tanh({a})", "Tanh", methods=("tanh",)),
    _unary("sigmoid", "sigmoid", None, _SIGMOID, "Sigmoid", numpy=_sigmoid, into=_sigmoid_into,
           methods=("sigmoid",)),
    _unary("sqrt", "sqrt", np.sqrt, "sqrt({a})", "Sqrt", exact=True, methods=("sqrt",)),
    _unary("log1p", "log1p", np.log1p, "log1p({a})", None, methods=("log1p",)),
    _unary("sin", "sin", np.sin, "sin({a})", "Sin", methods=("sin",)),
    _unary("cos", "cos", np.cos, "cos({a})", "Cos", methods=("cos",)),
)

BY_NAME: Dict[str, Primitive] = {p.name: p for p in PRIMITIVES}
BY_FUNCTION: Dict[str, Primitive] = {p.function: p for p in PRIMITIVES}


def scalar_function(p: Primitive, namespace: Dict[str, Callable], reflected: bool = False) -> Callable:
    """p's `expr` as a Python function of the operands' elements (f(a, b), or with
    reflected=True f(a, b) = expr(b, a)), its functions taken from `namespace` (a code
    generator's EXPR_FUNCTIONS)."""
    args = ("a", "b")[:p.arity]
    body = p.expr.format(a="b", b="a") if reflected else p.expr.format(a="a", b="b")
    return eval(f"lambda {', '.join(args)}: {body}", dict(namespace))  # noqa: S307  (our own table's expressions)


def kernel_names() -> Tuple[str, ...]:
    """Every elementwise kernel a device implements, in table order."""
    return tuple(k for p in PRIMITIVES for k in p.kernels)
