"""Elementwise ops: arithmetic, math functions, comparisons, `where` and dtype casts.

Each op's forward (`compute`, on backend arrays through `array_api`) and gradient
(built from Tensor ops, so it is differentiable too) are side by side. The op
functions (`add`, `multiply`, ...) take Tensors or scalars, broadcast Tensors like
numpy (each input's gradient is summed back to its own shape by BroadcastTo) and
promote dtypes like PyTorch (`needle.dtypes`).

Edges follow PyTorch (a test sweeps every op there, forward and backward):
* `a ** b`: the gradient for `a` is 0 where b == 0 (not 0 * a**-1 = nan at a = 0); the
  gradient for `b` is 0 where a == 0 and b >= 0 (not 0 * ln 0); negative bases with
  integer-valued exponents are exact; anything else negative ** fractional is nan.
* `s ** x` for a scalar s: 0 ** 0 = 1 and the gradient at s = 0, x >= 0 is 0.
* `sigmoid` is accurate in both tails (2.06e-9 at -20, so log(sigmoid) stays finite).
* `relu`'s gradient is 0 at 0 and where the input is negative, even for nan/inf adjoints.
* `maximum(a, b)` splits the gradient in half where a == b.
* `log` gives -inf at 0 and nan below; its gradient 1/a is inf at 0, like PyTorch.
"""
from __future__ import annotations

import math

from ..autograd import Tensor, TensorOp, array_api
from ..dtypes import python_scalar
from ._helpers import constant, require_tensor, same_shape

__all__ = [
    "EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar", "RPowerScalar", "EWiseDiv",
    "DivScalar", "Negate", "Log", "Exp", "ReLU", "Tanh", "Sigmoid", "Sqrt", "Maximum", "MaximumScalar", "Where",
    "Cast", "add", "add_scalar", "subtract", "reverse_subtract", "multiply", "mul_scalar", "divide",
    "divide_scalar", "reverse_divide", "power", "power_scalar", "reverse_power", "negate", "log", "exp", "relu",
    "tanh", "sigmoid", "sqrt", "maximum", "where", "cast", "less", "less_equal", "greater", "greater_equal",
    "equal", "not_equal", "broadcast_tensors",
]


# --- arithmetic ------------------------------------------------------------------------------

class EWiseAdd(TensorOp):
    def check(self, a, b):
        same_shape(a, b, "add")

    def compute(self, a, b):
        return array_api.add(a, b)

    def gradient(self, out_grad, node):
        return out_grad, out_grad


class AddScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.add(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad


class EWiseMul(TensorOp):
    def check(self, a, b):
        same_shape(a, b, "multiply")

    def compute(self, a, b):
        return array_api.multiply(a, b)

    def gradient(self, out_grad, node):
        lhs, rhs = node.inputs
        return (out_grad * rhs if lhs.requires_grad else None,
                out_grad * lhs if rhs.requires_grad else None)


class MulScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.multiply(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad * self.scalar


class EWisePow(TensorOp):
    """a ** b elementwise (edges: see the module docstring)."""

    def check(self, a, b):
        same_shape(a, b, "power")

    def compute(self, a, b):
        return array_api.power(a, b)

    def gradient(self, out_grad, node):
        a, b = node.inputs
        grad_a = grad_b = None
        if a.requires_grad:
            grad_a = where(b.eq(0), 0.0, out_grad * b * a ** (b - 1))
        if b.requires_grad:
            zero_base = constant(array_api.multiply(
                array_api.equal(a.realize_cached_data(), 0), array_api.greater_equal(b.realize_cached_data(), 0)))
            grad_b = where(zero_base, 0.0, out_grad * node * log(a))
        return grad_a, grad_b


class PowerScalar(TensorOp):
    """a ** scalar; the scalar may be any real number (the gradient is 0 for a ** 0)."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.power(a, self.scalar)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        if self.scalar == 0:  # a ** 0 is constant; 0 * a ** -1 would be nan at a = 0
            return out_grad * 0.0
        return out_grad * self.scalar * a ** (self.scalar - 1)


class RPowerScalar(TensorOp):
    """base ** a for a scalar base (0 ** 0 = 1; the gradient at base 0, a >= 0 is 0)."""

    def __init__(self, base):
        self.base = base

    def compute(self, a):
        return array_api.power(self.base, a)

    def gradient(self, out_grad, node):
        base = self.base
        log_base = math.log(base) if base > 0 else -math.inf if base == 0 else math.nan
        grad = out_grad * node * log_base
        if base == 0:  # PyTorch's rule: no gradient where the result does not depend on a
            grad = where(node.inputs[0] >= 0, 0.0, grad)
        return grad


class EWiseDiv(TensorOp):
    def check(self, a, b):
        same_shape(a, b, "divide")

    def compute(self, a, b):
        return array_api.divide(a, b)

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return (out_grad / b if a.requires_grad else None,
                -out_grad * a / (b * b) if b.requires_grad else None)


class DivScalar(TensorOp):
    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.divide(a, self.scalar)

    def gradient(self, out_grad, node):
        return out_grad / self.scalar


class Negate(TensorOp):
    def compute(self, a):
        return array_api.negative(a)

    def gradient(self, out_grad, node):
        return -out_grad


# --- math functions ------------------------------------------------------------------------------

class Log(TensorOp):
    def compute(self, a):
        return array_api.log(a)

    def gradient(self, out_grad, node):
        return out_grad / node.inputs[0]


class Exp(TensorOp):
    def compute(self, a):
        return array_api.exp(a)

    def gradient(self, out_grad, node):
        return out_grad * node


class ReLU(TensorOp):
    def compute(self, a):
        return array_api.maximum(a, 0)

    def gradient(self, out_grad, node):
        # the mask is a constant from the input's data; where() keeps a nan adjoint out of it
        return where(constant(array_api.greater(node.inputs[0].realize_cached_data(), 0)), out_grad, 0.0)


class Tanh(TensorOp):
    def compute(self, a):
        return array_api.tanh(a)

    def gradient(self, out_grad, node):
        return out_grad * (1 - node * node)


class Sigmoid(TensorOp):
    """1 / (1 + exp(-a)), accurate in both tails (a kernel of its own on every device)."""

    def compute(self, a):
        return array_api.sigmoid(a)

    def gradient(self, out_grad, node):
        return out_grad * node * (1 - node)


class Sqrt(TensorOp):
    """sqrt(a); nan below 0, and the gradient 1 / (2 sqrt a) is inf at 0, like PyTorch."""

    def compute(self, a):
        return array_api.sqrt(a)

    def gradient(self, out_grad, node):
        return out_grad / (node * 2)


class Maximum(TensorOp):
    """max(a, b) elementwise; where a == b each input gets half the gradient (PyTorch)."""

    def check(self, a, b):
        same_shape(a, b, "maximum")

    def compute(self, a, b):
        return array_api.maximum(a, b)

    def gradient(self, out_grad, node):
        a, b = (x.realize_cached_data() for x in node.inputs)
        tie = constant(array_api.equal(a, b))
        half = out_grad * 0.5
        return (where(tie, half, where(constant(array_api.greater(a, b)), out_grad, 0.0)),
                where(tie, half, where(constant(array_api.less(a, b)), out_grad, 0.0)))


class MaximumScalar(TensorOp):
    """max(a, scalar); half the gradient where a equals the scalar."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a):
        return array_api.maximum(a, self.scalar)

    def gradient(self, out_grad, node):
        a = node.inputs[0].realize_cached_data()
        return where(constant(array_api.equal(a, self.scalar)), out_grad * 0.5,
                     where(constant(array_api.greater(a, self.scalar)), out_grad, 0.0))


class Where(TensorOp):
    """cond ? a : b elementwise, for a bool `cond` (no gradient) and equal shapes.

    The gradient of each branch is the adjoint where that branch was taken and exactly
    0 elsewhere (an inf or nan in the other branch never leaks in).
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
    """The input converted to `dtype`; the gradient converts back to the input's dtype."""

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
    if all(s == shapes[0] for s in shapes):
        return list(tensors)
    target = array_api.broadcast_shapes(*shapes)
    from .shape import broadcast_to

    return [t if t.shape == target else broadcast_to(t, target) for t in tensors]


def _binary(a, b, tensor_op, scalar_op, what: str, commutes: bool = True):
    """`a (op) b` for Tensors and scalars; a scalar on the left only where the op commutes."""
    if not isinstance(a, Tensor):
        if commutes and isinstance(b, Tensor):
            a, b = b, a
        else:
            raise TypeError(f"{what} expects a Tensor first, got {type(a).__name__}")
    if isinstance(b, Tensor):
        if a.shape != b.shape:
            a, b = broadcast_tensors(a, b)
        return tensor_op()(a, b)
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

    kinds = [array_api.dtype_name(v.dtype) if isinstance(v, Tensor) else None for v in (a, b)]
    if kinds[0] and kinds[1]:
        dtype = result_dtype(kinds[0], kinds[1])
    elif kinds[0] or kinds[1]:
        dtype = result_dtype(kinds[0] or kinds[1], _scalar(b if kinds[0] else a, "where"), b_is_scalar=True)
    else:
        dtype = result_dtype(scalar_dtype(_scalar(a, "where")), _scalar(b, "where"), b_is_scalar=True)
    a, b = (cast(_as_tensor_on(v, cond.device, dtype), dtype) for v in (a, b))
    cond, a, b = broadcast_tensors(cond, a, b)
    return Where()(cond, a, b)


# --- comparisons: constant bool tensors ---------------------------------------------------------

def _compare(function):
    def compare(a: Tensor, b) -> Tensor:
        lhs = a.realize_cached_data()
        if isinstance(b, Tensor):
            rhs = b.realize_cached_data()
        else:
            rhs = _scalar(b, function.__name__)
        return constant(function(lhs, rhs))

    compare.__name__ = function.__name__
    compare.__doc__ = f"Elementwise {function.__name__} (broadcasting) as a constant bool tensor."
    return compare


less = _compare(array_api.less)
less_equal = _compare(array_api.less_equal)
greater = _compare(array_api.greater)
greater_equal = _compare(array_api.greater_equal)
equal = _compare(array_api.equal)
not_equal = _compare(array_api.not_equal)
