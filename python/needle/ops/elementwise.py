"""Elementwise ops: arithmetic, math functions, comparisons, `where` and dtype casts.

Each op's forward (`compute`, on backend arrays through `array_api`) and gradient
(built from Tensor ops, so it is differentiable too) are side by side. The op
functions (`add`, `multiply`, ...) take Tensors or scalars, broadcast Tensors like
numpy (each input's gradient is summed back to its own shape by BroadcastTo) and
promote dtypes like PyTorch (`needle.dtypes`).

Edges follow PyTorch (tests/test_op_edges.py sweeps every op there, forward and backward,
from the table in tests/op_edge_cases.py); each op's docstring says what it does at its own:
* values are IEEE arithmetic's: x / 0 = +-inf, 0 / 0 = inf - inf = 0 * inf = nan, nan spreads;
* a gradient is the local derivative times the adjoint, the derivative formed first, and
  a formula that would under- or overflow on the way (b * b in a / b**2, 1 - s in the
  sigmoid's) is written so that it does not;
* a gradient that is 0 by definition (a ** 0, the branch `where` did not take, the loser
  of a max) is exactly 0, while a nan input passes its gradient on (a nan wins a max and
  is not <= 0 for relu), as PyTorch's masks do.
Two deliberate differences: sigmoid stays accurate in both tails, where PyTorch's
formulas underflow (see Sigmoid), and a float32 tensor ** s rounds s to float32, which
PyTorch does for some elements only (see PowerScalar).
"""
from __future__ import annotations

import math
from typing import Any

from ..autograd import Tensor, TensorOp, array_api, vjp
from ..dtypes import python_scalar, result_dtype
from ._helpers import constant, require_tensor, same_shape
from .shape import broadcast_to

# The elementwise array functions (array_api.add, ...) are installed from needle.primitives' table at
# import, where a type checker cannot see them: type-checked (annotated) functions call them through
# this alias.
_ew: Any = array_api

__all__ = [
    "EWiseAdd", "AddN", "add_n", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar", "RPowerScalar",
    "EWiseDiv",
    "DivScalar", "Negate", "Log", "Log1p", "log1p", "Exp", "ReLU", "ThresholdBackward", "TanhBackward", "Tanh",
    "Sigmoid", "Sqrt",
    "Maximum",
    "MaximumScalar", "Where", "Equal", "EqualScalar", "NotEqual", "NotEqualScalar", "Less", "LessScalar",
    "LessEqual", "LessEqualScalar", "Greater", "GreaterScalar", "GreaterEqual", "GreaterEqualScalar",
    "Cast", "add", "add_scalar", "subtract", "reverse_subtract", "multiply", "mul_scalar", "divide",
    "divide_scalar", "reverse_divide", "power", "power_scalar", "reverse_power", "negate", "log", "exp", "relu",
    "tanh", "sigmoid", "sqrt", "maximum", "where", "cast", "less", "less_equal", "greater", "greater_equal",
    "equal", "not_equal", "broadcast_tensors",
    "Sin", "Cos", "Abs", "Clamp", "ClampTensor", "Triangle",
    "sin", "cos", "absolute", "log10", "clamp", "masked_fill", "tril",
    "triu", "isclose",
]


# --- arithmetic ------------------------------------------------------------------------------

class EWiseAdd(TensorOp):
    """a + b. Edges: IEEE (inf + -inf = nan); the gradient passes through unchanged."""

    primitive = "add"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def check(self, a, b):
        same_shape(a, b, "add")

    def compute(self, a, b):
        return array_api.add(a, b)

    def gradient(self, out_grad, node):
        return out_grad, out_grad


class AddN(TensorOp):
    """((x0 + x1) + x2) + ... of tensors of one shape and dtype: the left fold of EWiseAdds that
    backward adds a node's partial adjoints with, as one node (an LSTM weight gathers one partial
    per time step: 35 of 640 kB each). On the cpu one pass over the inputs (the device's add_n
    kernel: each element's additions in the fold's order, so the same bits) instead of a fresh
    array per addition; elsewhere, and while a compiled step records (its matmul_accumulate takes
    the fold), the fold itself. The gradient passes through unchanged to every input."""

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def check(self, *xs):
        if len(xs) < 2:
            raise ValueError(f"add_n needs at least two tensors, got {len(xs)}")
        for x in xs[1:]:
            same_shape(xs[0], x, "add_n")

    def compute(self, *xs):
        fused = array_api.device_add_n(xs)  # one pass, or None
        if fused is not None:
            return fused
        total = array_api.add(xs[0], xs[1])
        for x in xs[2:]:
            total = array_api.add(total, x)
        return total

    def gradient(self, out_grad, node):
        return (out_grad,) * len(node.inputs)


def add_n(tensors) -> Tensor:
    """The sum of a sequence of tensors of one shape, added left to right (AddN)."""
    return AddN()(*tensors)


class AddScalar(TensorOp):
    """a + scalar. Edges: IEEE, for an inf or nan scalar too; the gradient passes through unchanged."""

    primitive = "add"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "scalar"  # a tensor and self.scalar

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.add(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad


class EWiseMul(TensorOp):
    """a * b. Edges: IEEE (0 * inf = nan); the gradients g * b and g * a are nan where the
    other factor is nan and g * inf = +-inf where it is infinite, as in PyTorch."""

    primitive = "mul"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def check(self, a, b):
        same_shape(a, b, "multiply")

    def compute(self, a, b):
        return array_api.multiply(a, b)

    def gradient(self, out_grad, node):
        lhs, rhs = node.inputs
        return (out_grad * rhs if lhs.requires_grad else None,
                out_grad * lhs if rhs.requires_grad else None)


class MulScalar(TensorOp):
    """a * scalar. Edges: IEEE (an inf scalar makes 0 entries nan); the gradient is g * scalar."""

    primitive = "mul"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "scalar"  # a tensor and self.scalar

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.multiply(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad * self.scalar


class EWisePow(TensorOp):
    """a ** b elementwise.

    Edges: C's pow (a ** 0 = 1 and 1 ** b = 1 even for nan; a negative base is exact
    for integer-valued b and nan for others). The gradient for a is 0 where b == 0 (not
    0 * a ** -1 = nan at a = 0); the one for b is 0 where a == 0 and b >= 0 (not 0 * ln 0)
    and nan for a negative base (ln a), like PyTorch's.
    """

    primitive = "pow"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def check(self, a, b):
        same_shape(a, b, "power")

    def compute(self, a, b):
        return array_api.power(a, b)

    def gradient(self, out_grad, node):
        a, b = node.inputs
        grad_a = grad_b = None
        # the local derivative is formed before the adjoint multiplies it (PyTorch's order):
        # (g * b) * a**(b-1) would round b = 1e-40 to a float32 denormal first
        if a.requires_grad:
            grad_a = where(b.eq(0), 0.0, out_grad * (b * a ** (b - 1)))
        if b.requires_grad:
            zero_base = constant(array_api.multiply(
                array_api.equal(a.realize_cached_data(), 0), array_api.greater_equal(b.realize_cached_data(), 0)))
            grad_b = where(zero_base, 0.0, out_grad * (node * log(a)))
        return grad_a, grad_b


class PowerScalar(TensorOp):
    """a ** scalar, for any real scalar.

    Edges: 0.5 is sqrt and -0.5 its reciprocal (nan at -inf; +-0 gives +-0 and +-inf),
    as in PyTorch; other exponents follow C's pow. The gradient of a ** 0 is exactly 0
    (even at a = 0 and for an inf/nan adjoint); elsewhere it is scalar * a ** (scalar - 1),
    where a float32 input rounds scalar - 1 to float32 (numpy's rule; 1e8 - 1 is 1e8).
    """

    primitive = "pow"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "scalar"  # a tensor and self.scalar

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.power(a, self.scalar)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        if self.scalar == 0:  # a ** 0 is constant: zeros, even for an inf or nan adjoint
            return constant(array_api.zeros(a.shape, a.dtype, a.device))
        return out_grad * (a ** (self.scalar - 1) * self.scalar)


class RPowerScalar(TensorOp):
    """base ** a for a scalar base.

    Edges: C's pow (0 ** 0 = 1, 0 ** -1 = inf, 1 ** nan = 1); the gradient base ** a * ln(base)
    is 0 at base 0 where a >= 0 (PyTorch's rule) and nan for a negative base.
    """

    primitive = "pow"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "reverse"  # self.base and a tensor

    def __init__(self, base):
        self.base = base

    def compute(self, a):
        return array_api.power(self.base, a)

    def gradient(self, out_grad, node):
        base = self.base
        log_base = math.log(base) if base > 0 else -math.inf if base == 0 else math.nan
        grad = out_grad * (node * log_base)
        if base == 0:  # PyTorch's rule: no gradient where the result does not depend on a
            grad = where(node.inputs[0] >= 0, 0.0, grad)
        return grad


class EWiseDiv(TensorOp):
    """a / b. Edges: IEEE (x / 0 = +-inf, 0 / 0 = nan); the gradient for b is -g * (a / b / b),
    finite wherever that quotient is (a / (b * b) would be inf or nan for |b| < 1e-19 in float32)."""

    primitive = "div"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def check(self, a, b):
        same_shape(a, b, "divide")

    def compute(self, a, b):
        return array_api.divide(a, b)

    def gradient(self, out_grad, node):
        a, b = node.inputs
        # a / b / b, not a / (b * b): b * b under- or overflows long before the quotient does
        return (out_grad / b if a.requires_grad else None,
                -out_grad * (a / b / b) if b.requires_grad else None)


class DivScalar(TensorOp):
    """a / scalar. Edges: IEEE (a scalar 0 gives +-inf and nan); the gradient is g / scalar."""

    primitive = "div"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "scalar"  # a tensor and self.scalar

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.divide(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad / self.scalar


class Negate(TensorOp):
    """-a. Edges: exact everywhere (-0 for 0, nan stays nan); the gradient is -g."""

    primitive = "neg"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        return array_api.negative(a)

    def gradient(self, out_grad, node):
        return -out_grad


# --- math functions ------------------------------------------------------------------------------

class Log(TensorOp):
    """ln a. Edges: -inf at +-0, nan below 0; the gradient g / a is +-inf at +-0, like PyTorch."""

    primitive = "log"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.log(a)

    def gradient(self, out_grad, node):
        return out_grad / node.inputs[0]


class Log1p(TensorOp):
    """ln(1 + a), accurate where a is tiny (log1p(1e-10) is 1e-10; ln(1 + 1e-10) in float32 is 0).
    Edges: -inf at -1, nan below; the gradient g / (1 + a) is inf at -1, like PyTorch."""

    primitive = "log1p"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.log1p(a)

    def gradient(self, out_grad, node):
        return out_grad / (node.inputs[0] + 1)


def log1p(a) -> Tensor:
    return Log1p()(a)


class Exp(TensorOp):
    """exp a. Edges: inf above ~88.7 (float32) or ~709.8 (float64), denormals and then 0 at the
    bottom, 0 at -inf; the gradient is g * exp(a)."""

    primitive = "exp"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.exp(a)

    def gradient(self, out_grad, node):
        return out_grad * node


class Sin(TensorOp):
    """sin a. Edges: nan at +-inf and nan, -0 at -0; the gradient is g * cos(a) (nan at +-inf),
    as in PyTorch."""

    primitive = "sin"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.sin(a)

    def gradient(self, out_grad, node):
        return out_grad * cos(node.inputs[0])


class Cos(TensorOp):
    """cos a. Edges: nan at +-inf and nan; the gradient is g * -sin(a) (nan at +-inf), as in
    PyTorch."""

    primitive = "cos"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.cos(a)

    def gradient(self, out_grad, node):
        return out_grad * -sin(node.inputs[0])


class Abs(TensorOp):
    """|a|, for every dtype. Edges: +0 at -0, +inf at -inf, nan stays nan; the gradient is
    g * sign(a) with sign 0 at +-0 and at nan (PyTorch's sgn)."""

    primitive = "abs"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.abs(a)

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        dtype = array_api.dtype_name(array_api.dtype_of(a))
        sign = array_api.subtract(array_api.astype(array_api.greater(a, 0), dtype),
                                  array_api.astype(array_api.less(a, 0), dtype))
        return out_grad * constant(sign)


def sin(a) -> Tensor:
    """Elementwise sine (torch.sin)."""
    return Sin()(a)


def cos(a) -> Tensor:
    """Elementwise cosine (torch.cos)."""
    return Cos()(a)


def absolute(a) -> Tensor:
    """Elementwise |a| (torch.abs; `ndl.abs` at the top level), keeping a's dtype."""
    return Abs()(a)


_LN10 = math.log(10.0)


def log10(a) -> Tensor:
    """log base 10 (torch.log10), as ln(a) / ln(10): within an ulp or two of a correctly rounded
    log10 (ndl.log10(1000.) may be 2.9999999999999996), with log's edges."""
    return log(a) / _LN10


class Clamp(TensorOp):
    """min(max(a, low), high) with scalar bounds, either one None (torch.clamp).

    Edges: a nan input or a nan bound gives nan; low > high gives high everywhere. The gradient
    is g where low <= a <= high (the bounds themselves included) and 0 elsewhere, 0 at a nan
    input too (PyTorch's mask).
    """

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high

    def compute(self, a):
        if self.low is not None:
            a = array_api.maximum(a, self.low)
        if self.high is not None:
            a = array_api.minimum(a, self.high)
        return a

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        inside = None
        if self.low is not None:
            inside = array_api.greater_equal(a, self.low)
        if self.high is not None:
            below = array_api.less_equal(a, self.high)
            inside = below if inside is None else array_api.multiply(inside, below)
        return where(constant(inside), out_grad, 0.0)


class ClampTensor(TensorOp):
    """min(max(a, low), high) with tensor bounds of a's shape (`has_low`/`has_high` say which of them
    are the inputs after a). Edges: a nan input or bound gives nan; where low > high the result is
    high. Gradients (PyTorch's masks): to a where low <= a <= high, to low where a < low < high,
    to high where a > high or high < low; 0 elsewhere and at nan."""

    def __init__(self, has_low: bool, has_high: bool):
        self.has_low, self.has_high = has_low, has_high

    def _bounds(self, bounds):
        bounds = list(bounds)
        low = bounds.pop(0) if self.has_low else None
        high = bounds.pop(0) if self.has_high else None
        return low, high

    def compute(self, a, *bounds):
        low, high = self._bounds(bounds)
        if low is not None:
            a = array_api.maximum(a, low)
        if high is not None:
            a = array_api.minimum(a, high)
        return a

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        low, high = self._bounds(x.realize_cached_data() for x in node.inputs[1:])
        inside = None
        grads = []
        if low is not None:
            inside = array_api.greater_equal(a, low)
            below = array_api.less(a, low)
            if high is not None:
                below = array_api.multiply(below, array_api.less(low, high))
            grads.append(where(constant(below), out_grad, 0.0))
        if high is not None:
            within = array_api.less_equal(a, high)
            inside = within if inside is None else array_api.multiply(inside, within)
            above = array_api.greater(a, high)
            if low is not None:
                above = array_api.add(above, array_api.less(high, low))
            grads.append(where(constant(above), out_grad, 0.0))
        return (where(constant(inside), out_grad, 0.0), *grads)


def clamp(a: Tensor, min=None, max=None) -> Tensor:  # noqa: A002  (PyTorch's names)
    """a limited to [min, max] (torch.clamp): bounds are numbers or tensors (broadcast with a), one
    of them may be None; ValueError if both are. Number bounds make one Clamp op, tensor bounds a
    ClampTensor (whose docstrings have the edges and gradients)."""
    require_tensor(a, "clamp")
    if min is None and max is None:
        raise ValueError("clamp: give min, max or both")
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        low = None if min is None else _scalar(min, "clamp")
        high = None if max is None else _scalar(max, "clamp")
        return Clamp(low, high)(a)
    dtype = array_api.dtype_name(a.dtype)
    bounds = [b if isinstance(b, Tensor) else _as_tensor_on(b, a.device, dtype) for b in (min, max) if b is not None]
    for b in bounds:
        dtype = result_dtype(dtype, array_api.dtype_name(b.dtype))
    a, *bounds = broadcast_tensors(*(cast(x, dtype) for x in (a, *bounds)))
    return ClampTensor(min is not None, max is not None)(a, *bounds)


def masked_fill(a: Tensor, mask: Tensor, value) -> Tensor:
    """`a` with `value` where the bool `mask` (broadcast with a) is True, in a's dtype
    (torch.masked_fill: value a number or a 0-d tensor, an int tensor truncates a float value).
    Differentiable with respect to a (0 where filled) and to a 0-d tensor value.
    TypeError for a mask that is not bool, ValueError for a value tensor with dimensions."""
    require_tensor(a, "masked_fill")
    if not isinstance(mask, Tensor) or array_api.dtype_name(mask.dtype) != "bool":
        found = array_api.dtype_name(mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"masked_fill: the mask must be a bool tensor, got {found}")
    dtype = array_api.dtype_name(a.dtype)
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ValueError(f"masked_fill: the value must be a number or a 0-d tensor, got shape {value.shape}")
        value = cast(value, dtype)
    else:
        value = _scalar(value, "masked_fill")
        if dtype == "int64":
            value = int(value)
        elif dtype == "bool":
            value = bool(value)
    return where(mask, value, a)


class Triangle(TensorOp):
    """The lower (j - i <= diagonal) or upper (j - i >= diagonal) triangle of the last two axes,
    zeros elsewhere (torch.tril / torch.triu); the gradient is the same triangle of the adjoint.

    Edges: none; kept values (nan, +-inf, -0) are copied, the rest are exact zeros.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, diagonal: int, lower: bool):
        self.diagonal, self.lower = diagonal, lower

    def compute(self, a):
        rows, cols = a.shape[-2:]
        device = array_api.device_of(a)
        row = array_api.reshape(array_api.arange(rows, device=device), (rows, 1))
        col = array_api.reshape(array_api.arange(cols, device=device), (1, cols))
        offset = _ew.subtract(col, row)  # j - i, (rows, cols)
        keep = _ew.less_equal(offset, self.diagonal) if self.lower else _ew.greater_equal(offset, self.diagonal)
        zero = False if array_api.dtype_name(a.dtype) == "bool" else 0
        return array_api.where(array_api.broadcast_to(keep, tuple(a.shape)), a, zero)

    def gradient(self, out_grad, node):
        return Triangle(self.diagonal, self.lower)(out_grad)


def _triangle(a: Tensor, diagonal: int, lower: bool, what: str) -> Tensor:
    require_tensor(a, what)
    if a.ndim < 2:
        raise ValueError(f"{what}: the input must have at least 2 dimensions, got shape {a.shape}")
    if not isinstance(diagonal, int) or isinstance(diagonal, bool):
        raise TypeError(f"{what}: diagonal must be an int, got {diagonal!r}")
    return Triangle(diagonal, lower)(a)


def tril(a: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two axes, j - i <= diagonal, zeros above (torch.tril);
    differentiable (the gradient is tril of the adjoint). ValueError for fewer than 2 axes."""
    return _triangle(a, diagonal, True, "tril")


def triu(a: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two axes, j - i >= diagonal, zeros below (torch.triu)."""
    return _triangle(a, diagonal, False, "triu")


def isclose(a: Tensor, b: Tensor, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Tensor:
    """|a - b| <= atol + rtol * |b| elementwise, as a constant bool tensor (torch.isclose): equal
    values (infinities of one sign included) are close, an infinite difference never is, nan is
    close to nan only with equal_nan. a and b broadcast; TypeError when their dtypes differ
    (PyTorch's rule too)."""
    require_tensor(a, "isclose")
    require_tensor(b, "isclose")
    da, db = array_api.dtype_name(a.dtype), array_api.dtype_name(b.dtype)
    if da != db:
        raise TypeError(f"isclose: the dtypes differ ({da} and {db}); cast one first (PyTorch's rule too)")
    x, y = a.realize_cached_data(), b.realize_cached_data()
    if da not in ("float32", "float64"):
        x, y = array_api.astype(x, "float64"), array_api.astype(y, "float64")
    close = _ew.equal(x, y)
    error = _ew.abs(_ew.subtract(x, y))
    allowed = _ew.add(_ew.multiply(_ew.abs(y), rtol), atol)
    finite = _ew.equal(_ew.subtract(error, error), 0)
    close = _ew.add(close, _ew.multiply(finite, _ew.less_equal(error, allowed)))
    if equal_nan:
        close = _ew.add(close, _ew.multiply(_ew.not_equal(x, x), _ew.not_equal(y, y)))
    return constant(close)


class ReLU(TensorOp):
    """max(a, 0). Edges: nan stays nan; the gradient is 0 where a <= 0 (0 at 0 itself) and
    passes through a nan input, like PyTorch's.

    The gradient masks by the output, as PyTorch's relu does (threshold_backward on its result):
    max(a, 0) <= 0 exactly where a <= 0, and a nan stays nan, so the mask is the input's; but
    the input need not be kept for the backward (a compiled bias + ReLU stores one array, not two)."""

    def compute(self, a):
        return array_api.maximum(a, 0)

    def gradient(self, out_grad, node):
        return ThresholdBackward()(out_grad, node)


class ThresholdBackward(TensorOp):
    """ReLU's gradient: g where a > 0, else 0 (PyTorch's threshold_backward(g, a, 0)); g and a
    of one shape. The mask is a constant of a: a nan input, whose ReLU is nan, passes g on, and
    where() keeps a nan adjoint out of the zeros (g * mask would not). Its gradient is itself on
    the adjoint (and none for a). One op and, on the cpu, one pass (array_api.threshold_backward),
    where a mask and a select were three graph nodes and two passes."""

    reads_values = True

    def check(self, g, a):
        same_shape(g, a, "threshold_backward")

    def compute(self, g, a):
        return array_api.threshold_backward(g, a, 0)

    def gradient(self, out_grad, node):
        return ThresholdBackward()(out_grad, node.inputs[1]), None


class TanhBackward(TensorOp):
    """tanh's gradient g * (1 - t * t) from the adjoint g and tanh's output t (one shape; PyTorch's
    tanh_backward): the array operations of the Tensor-op form out_grad * (1 - t * t) in its order,
    the same bits, as one node and, on the cpu, one pass (array_api.tanh_backward), where the
    Tensor ops are four nodes and four passes. Its gradient differentiates that form (autograd.vjp),
    so second derivatives reach t and, through it, tanh's input."""

    def check(self, g, t):
        same_shape(g, t, "tanh_backward")

    def compute(self, g, t):
        return array_api.tanh_backward(g, t)

    def gradient(self, out_grad, node):
        return vjp(lambda g, t: g * (1 - t * t), node.inputs, (out_grad,))


class Tanh(TensorOp):
    """tanh a. Edges: +-1 from |a| ~ 9 (float32) on and at +-inf; the gradient g * (1 - t^2)
    is then 0, as in PyTorch."""

    primitive = "tanh"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.tanh(a)

    def gradient(self, out_grad, node):
        if out_grad.dtype != node.dtype or tuple(out_grad.shape) != tuple(node.shape):
            return out_grad * (1 - node * node)  # promotion or broadcasting: the Tensor ops' rules
        return TanhBackward()(out_grad, node)


class Sigmoid(TensorOp):
    """1 / (1 + exp(-a)), accurate in both tails (a kernel of its own on every device).

    Edges: 0 at -inf, 1 at +inf; sigmoid(-20) = 2.06e-9 and float32 sigmoid(-100) = 3.8e-44,
    a denormal; the gradient s * sigmoid(-a) keeps 2.06e-9 at a = 20. Deliberately unlike
    PyTorch, whose 1 / (1 + exp(-a)) gives 0 at -100 (float32) and whose s * (1 - s) gives 0
    above a ~ 17 (float32).
    """

    primitive = "sigmoid"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.sigmoid(a)

    def gradient(self, out_grad, node):
        # s * sigmoid(-a) is s * (1 - s) without its cancellation for a >> 0
        return out_grad * (node * sigmoid(-node.inputs[0]))


class Sqrt(TensorOp):
    """sqrt(a). Edges: nan below 0 and at -inf, -0 at -0; the gradient g / (2 sqrt a) is +-inf
    at +-0, like PyTorch."""

    primitive = "sqrt"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def compute(self, a):
        return array_api.sqrt(a)

    def gradient(self, out_grad, node):
        return out_grad / (node * 2)


class Maximum(TensorOp):
    """max(a, b) elementwise. Edges: nan if either is nan; where a == b each input gets half the
    gradient, and where either is nan both get all of it (PyTorch's rule)."""

    primitive = "maximum"  # its row of needle.primitives (the kernel it runs, its ONNX operator)

    def check(self, a, b):
        same_shape(a, b, "maximum")

    def compute(self, a, b):
        return array_api.maximum(a, b)

    def gradient(self, out_grad, node):
        # each input loses the gradient where it is the smaller one: a nan, which wins,
        # leaves both with the whole gradient (PyTorch's masks)
        a, b = (x.realize_cached_data() for x in node.inputs)
        tie = constant(array_api.equal(a, b))
        half = out_grad * 0.5
        return (where(tie, half, where(constant(array_api.less(a, b)), 0.0, out_grad)),
                where(tie, half, where(constant(array_api.greater(a, b)), 0.0, out_grad)))


class MaximumScalar(TensorOp):
    """max(a, scalar). Edges: half the gradient where a equals the scalar (as torch.maximum
    with a tensor); a nan input, or a nan scalar, passes all of it."""

    primitive = "maximum"  # its row of needle.primitives (the kernel it runs, its ONNX operator)
    form = "scalar"  # a tensor and self.scalar

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.maximum(a, self.scalar)

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        return where(constant(array_api.equal(a, self.scalar)), out_grad * 0.5,
                     where(constant(array_api.less(a, self.scalar)), 0.0, out_grad))


class Where(TensorOp):
    """cond ? a : b elementwise, for a bool `cond` (no gradient) and equal shapes.

    Edges: values are copied; the gradient of each branch is the adjoint where that
    branch was taken and exactly 0 elsewhere (an inf or nan in the other branch never
    leaks in).
    """

    def check(self, cond, a, b):
        require_tensor(cond, "where")
        same_shape(a, b, "where")
        if cond.shape != a.shape:
            raise ValueError(f"where: condition of shape {cond.shape} for values of shape {a.shape}")
        if array_api.dtype_name(cond.dtype) != "bool":
            raise TypeError(f"where: the condition must be a bool tensor, got dtype {cond.dtype}")

    def compute(self, cond, a, b):
        return array_api.where(cond, a, b)

    def gradient(self, out_grad, node):
        cond, a, b = node.inputs
        return (None, where(cond, out_grad, 0.0) if a.requires_grad else None,
                where(cond, 0.0, out_grad) if b.requires_grad else None)


class Cast(TensorOp):
    """The input converted to `dtype`; the gradient converts back to the input's dtype.

    Edges: float64 to float32 rounds to nearest, overflows to +-inf beyond 3.4e38 and
    underflows to denormals and +-0; nan, +-inf and -0 are kept.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, dtype):
        self.dtype = array_api.dtype_name(dtype)

    def compute(self, a):
        return array_api.astype(a, self.dtype)

    def gradient(self, out_grad, node):
        return cast(out_grad, node.inputs[0].dtype)


# --- the op functions: scalars, broadcasting, the operator mapping ------------------------------

def _scalar(value, what: str):
    s = python_scalar(value)
    if s is None:
        raise TypeError(f"{what}: cannot combine a Tensor with a {type(value).__name__}; wrap it in ndl.Tensor first")
    return s


def broadcast_tensors(*tensors: Tensor) -> list:
    """The tensors broadcast to their common shape; unchanged ones are returned as is."""
    shapes = [t.shape for t in tensors]
    first = shapes[0]
    for shape in shapes:
        if shape != first:
            break
    else:
        return list(tensors)
    target = array_api.broadcast_shapes(*shapes)
    return [t if shape == target else broadcast_to(t, target) for t, shape in zip(tensors, shapes)]


def _binary(a, b, tensor_op, scalar_op, what: str, commutes: bool = True):
    """`a (op) b` for Tensors and scalars; a scalar on the left only where the op commutes."""
    if not isinstance(a, Tensor):
        if commutes and isinstance(b, Tensor):
            a, b = b, a
        else:
            raise TypeError(f"{what} expects a Tensor first, got {type(a).__name__}")
    if isinstance(b, Tensor):
        a_data, b_data = a.cached_data, b.cached_data
        # the shapes from the data when both are computed (the op reads both through
        # realize_cached_data next, so nothing a compiled step's guards watch is missed)
        if a_data is None or b_data is None or a_data.shape != b_data.shape:
            if a.shape != b.shape:
                a, b = broadcast_tensors(a, b)
        # two Tensors of one shape now: what each of these ops' check (same_shape) would check again
        return Tensor._from_checked_op(tensor_op(), (a, b))
    return scalar_op(_scalar(b, what))(a)


def add(a, b) -> Tensor:
    """a + b: EWiseAdd for two tensors (broadcast), AddScalar for a scalar."""
    return _binary(a, b, EWiseAdd, AddScalar, "add")


def add_scalar(a, scalar) -> Tensor:
    return AddScalar(scalar)(a)


def subtract(a, b) -> Tensor:
    """a - b: EWiseAdd(a, Negate(b)) for tensors (two nodes, the course's mapping), AddScalar(-s)."""
    if isinstance(b, Tensor):
        return add(a, negate(b))
    return AddScalar(-_scalar(b, "subtract"))(a)


def reverse_subtract(a: Tensor, s) -> Tensor:
    """s - a for a scalar s."""
    return AddScalar(_scalar(s, "subtract"))(negate(a))


def multiply(a, b) -> Tensor:
    return _binary(a, b, EWiseMul, MulScalar, "multiply")


def mul_scalar(a, scalar) -> Tensor:
    return MulScalar(scalar)(a)


def divide(a, b) -> Tensor:
    return _binary(a, b, EWiseDiv, DivScalar, "divide", commutes=False)


def divide_scalar(a, scalar) -> Tensor:
    return DivScalar(scalar)(a)


def reverse_divide(a: Tensor, s) -> Tensor:
    """s / a for a scalar s, as s * a ** -1."""
    return MulScalar(_scalar(s, "divide"))(PowerScalar(-1)(a))


def power(a, b) -> Tensor:
    return _binary(a, b, EWisePow, PowerScalar, "power", commutes=False)


def power_scalar(a, scalar) -> Tensor:
    return PowerScalar(scalar)(a)


def reverse_power(a: Tensor, base) -> Tensor:
    """base ** a for a scalar base."""
    return RPowerScalar(_scalar(base, "power"))(a)


def negate(a) -> Tensor:
    return Negate()(a)


def log(a) -> Tensor:
    return Log()(a)


def exp(a) -> Tensor:
    return Exp()(a)


def relu(a) -> Tensor:
    return ReLU()(a)


def tanh(a) -> Tensor:
    return Tanh()(a)


def sigmoid(a) -> Tensor:
    return Sigmoid()(a)


def sqrt(a) -> Tensor:
    return Sqrt()(a)


def maximum(a, b) -> Tensor:
    """Elementwise max of two tensors (broadcast) or of a tensor and a scalar."""
    return _binary(a, b, Maximum, MaximumScalar, "maximum")


def cast(a: Tensor, dtype) -> Tensor:
    """a converted to `dtype` (itself when it already has it)."""
    if array_api.dtype_name(a.dtype) == array_api.dtype_name(dtype):
        return a
    return Cast(dtype)(a)


def _as_tensor_on(value, device, dtype) -> Tensor:
    """A scalar as a constant 0-d tensor of `dtype` on `device` (a Tensor is returned as is)."""
    if isinstance(value, Tensor):
        return value
    return constant(array_api.full((), _scalar(value, "where"), dtype, device))


def where(cond: Tensor, a, b) -> Tensor:
    """cond ? a : b elementwise; a and b are tensors or scalars; all three broadcast; the
    result's dtype is the promotion of a's and b's (PyTorch's torch.where)."""
    require_tensor(cond, "where")
    from ..dtypes import result_dtype, scalar_dtype

    ka, kb = (array_api.dtype_name(v.dtype) if isinstance(v, Tensor) else None for v in (a, b))
    if ka and kb:
        dtype = result_dtype(ka, kb)
    elif ka:
        dtype = result_dtype(ka, _scalar(b, "where"), b_is_scalar=True)
    elif kb:
        dtype = result_dtype(kb, _scalar(a, "where"), b_is_scalar=True)
    else:
        dtype = result_dtype(scalar_dtype(_scalar(a, "where")), _scalar(b, "where"), b_is_scalar=True)
    a, b = (cast(_as_tensor_on(v, cond.device, dtype), dtype) for v in (a, b))
    cond, a, b = broadcast_tensors(cond, a, b)
    return Where()(cond, a, b)


# --- comparisons: bool tensors, with no gradient ----------------------------------------------

class _Comparison(TensorOp):
    """a (op) b elementwise as a bool tensor (the `function` of `primitive`'s row, which also
    names its ONNX operator); nan compares unequal to everything, itself included (IEEE).

    Its result never requires grad (bool): in eager mode it is a constant, while a capture for
    export (autograd.recording_every_op) keeps it as a node, so a mask built by comparing a
    model's input is a graph node and not a constant."""

    function: str  # the array function (array_api.<function>, made from the primitive's row)
    reads_values = False

    def gradient(self, out_grad, node):
        raise RuntimeError(f"{type(self).__name__}: a comparison has no gradient")  # bool: never requires grad


class _TensorComparison(_Comparison):
    def check(self, a, b):
        same_shape(a, b, self.function)

    def compute(self, a, b):
        # array_api's elementwise functions are installed from needle.primitives' table: looked up by name
        return getattr(array_api, self.function)(a, b)


class _ScalarComparison(_Comparison):
    form = "scalar"  # a tensor and self.scalar

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return getattr(array_api, self.function)(a, self.scalar)


class Equal(_TensorComparison):
    """a == b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "eq", "equal"


class EqualScalar(_ScalarComparison):
    """a == scalar elementwise, a bool tensor."""

    primitive, function = "eq", "equal"


class NotEqual(_TensorComparison):
    """a != b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "ne", "not_equal"


class NotEqualScalar(_ScalarComparison):
    """a != scalar elementwise, a bool tensor."""

    primitive, function = "ne", "not_equal"


class Less(_TensorComparison):
    """a < b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "lt", "less"


class LessScalar(_ScalarComparison):
    """a < scalar elementwise, a bool tensor."""

    primitive, function = "lt", "less"


class LessEqual(_TensorComparison):
    """a <= b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "le", "less_equal"


class LessEqualScalar(_ScalarComparison):
    """a <= scalar elementwise, a bool tensor."""

    primitive, function = "le", "less_equal"


class Greater(_TensorComparison):
    """a > b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "gt", "greater"


class GreaterScalar(_ScalarComparison):
    """a > scalar elementwise, a bool tensor."""

    primitive, function = "gt", "greater"


class GreaterEqual(_TensorComparison):
    """a >= b elementwise (two tensors of one shape), a bool tensor."""

    primitive, function = "ge", "greater_equal"


class GreaterEqualScalar(_ScalarComparison):
    """a >= scalar elementwise, a bool tensor."""

    primitive, function = "ge", "greater_equal"


def _compare(tensor_op, scalar_op):
    name = tensor_op.function

    def compare(a: Tensor, b) -> Tensor:
        require_tensor(a, name)
        if isinstance(b, Tensor):
            if a.shape != b.shape:
                a, b = broadcast_tensors(a, b)
            return tensor_op()(a, b)
        return scalar_op(_scalar(b, name))(a)

    compare.__name__ = name
    compare.__doc__ = (f"Elementwise {name} of a tensor and a tensor (broadcasting) or a scalar, as a bool "
                       "tensor that needs no gradient; nan compares unequal to everything, itself included "
                       "(IEEE).")
    return compare


less = _compare(Less, LessScalar)
less_equal = _compare(LessEqual, LessEqualScalar)
greater = _compare(Greater, GreaterScalar)
greater_equal = _compare(GreaterEqual, GreaterEqualScalar)
equal = _compare(Equal, EqualScalar)
not_equal = _compare(NotEqual, NotEqualScalar)
