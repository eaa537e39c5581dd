"""Reductions: sum, mean, max (with PyTorch's tie rules), argmax, and the log-sum-exp family
(logsumexp, logsoftmax, softmax), all numerically stable.

Edges (each op's docstring says more; tests/test_op_edges.py checks them against PyTorch):
* a nan is the maximum of whatever it is reduced with (the max kernels propagate it).
* `max` over one given axis sends the gradient to the first maximal element
  (`torch.max(dim)`), the first nan if there is one; over all axes or several axes
  it is split evenly among the ties, the nans being the ties of a nan maximum
  (`torch.max()`; `torch.amax` would give such a group nan gradients).
* `logsumexp` subtracts the maximum first, and a maximum of +-inf is replaced by 0, so
  a row of -inf gives -inf (not nan) and a row holding +inf gives +inf.
* log-softmax is `(a - m) - log(sum(exp(a - m)))`, never `a - lse`: the latter cancels
  to 0 for logits of 1e8 in float32. Like softmax, it is nan on a row that holds +inf
  or nan or is all -inf (PyTorch's, as a - m is then nan somewhere).
"""
from __future__ import annotations

import builtins
import math
from typing import Any, Callable, Optional

from ..autograd import MaxResult, Tensor, TensorOp, array_api, vjp
from ._helpers import (  # noqa: F401  (sum_to_shape: needle.ops re-exports it from here)
    axis_index,
    constant,
    inverse_permutation,
    normalize_axes,
    reduced_axes,
    require_tensor,
    same_shape,
    size_of,
    sum_to_shape,
)
from .elementwise import exp, where
from .elementwise import not_equal as ops_not_equal
from .indexing import IndexPlan, ScatterItem
from .shape import broadcast_to, reshape

# The elementwise array functions (array_api.add, ...) are installed from needle.primitives' table at
# import, where a type checker cannot see them: type-checked (annotated) functions call them through
# this alias.
_ew: Any = array_api

__all__ = ["Summation", "Max", "LogSumExp", "LogSoftmax", "LogSoftmaxGrad", "Softmax", "SoftmaxGrad", "summation",
           "mean", "max", "argmax",
           "logsumexp", "logsoftmax", "softmax", "sum_to_shape", "expand_reduced", "extremes", "check_extremes",
           "check_ids",
           "minimum_of", "argmin", "Variance", "var", "std", "all_of", "any_of", "argsort", "sort", "topk", "gather",
           "histc", "histogram", "SortResult", "HistogramResult"]


def expand_reduced(g: Tensor, shape: tuple, axes, keepdims: bool) -> Tensor:
    """Broadcast the result of a reduction over `axes` back to the input `shape`."""
    if not keepdims and g.shape == ():  # every axis reduced: broadcasting adds them back by itself
        return broadcast_to(g, shape)
    if not keepdims:
        reduced = reduced_axes(axes, len(shape), "reduce")
        g = reshape(g, tuple(1 if i in reduced else d for i, d in enumerate(shape)))
    return broadcast_to(g, shape)


class Summation(TensorOp):
    """Sum over `axes` (None: all of them); reduced axes are dropped unless keepdims.

    Edges: IEEE (inf + -inf = nan, nan spreads); the gradient is the adjoint, broadcast.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        if not isinstance(a, Tensor):
            require_tensor(a, "summation")
        axes = self.axes
        if axes is not None:
            if isinstance(axes, (tuple, list)) and not axes:
                raise ValueError("summation: empty tuple of axes; pass None to sum every axis")
            normalize_axes(axes, a.ndim, "summation")

    def compute(self, a):
        axes = self.axes
        return array_api.sum(a, None if axes is None else normalize_axes(axes, len(a.shape), "summation"),
                             self.keepdims)

    def gradient(self, out_grad, node):
        return expand_reduced(out_grad, node.inputs[0].shape, self.axes, self.keepdims)


def summation(a, axes=None, keepdims: bool = False):
    return Summation(axes, keepdims)(a)


def mean(a, axes=None, keepdims: bool = False):
    """Average over `axes` (None: all), as the sum divided by the count (the sum's edges)."""
    count = size_of(a.shape[i] for i in reduced_axes(axes, a.ndim, "mean"))
    return summation(a, axes, keepdims=keepdims) / count


def _first_max_mask(data, axis: int, device):
    """Bool array, True at the first maximum along `axis`, built on the device."""
    ndim = len(data.shape)
    perm = tuple(i for i in range(ndim) if i != axis) + (axis,)
    moved = array_api.transpose(data, perm)
    first = array_api.argmax(moved, axis=ndim - 1)
    mask = array_api.one_hot(data.shape[axis], first, dtype="bool", device=device)
    return array_api.transpose(mask, inverse_permutation(perm))


class Max(TensorOp):
    """Maximum over `axes` (None: all).

    Edges: nan if the group holds a nan, -inf for a group of -inf. The gradient goes to
    the first maximum (the first nan) over one axis, and is split evenly among the ties
    (the nans) over several or all axes; +0 and -0 tie.
    """

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def check(self, a):
        require_tensor(a, "max")
        if any(a.shape[i] == 0 for i in reduced_axes(self.axes, a.ndim, "max")):
            raise ValueError(f"max: cannot reduce a zero-size axis of shape {a.shape}")

    def compute(self, a):
        return array_api.max(a, axis=normalize_axes(self.axes, len(a.shape), "max"), keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        data = a.realize_cached_data()
        g = expand_reduced(out_grad, a.shape, self.axes, self.keepdims)
        axes = normalize_axes(self.axes, a.ndim, "max")
        if axes is not None and len(axes) == 1:
            return where(constant(_first_max_mask(data, axes[0], a.device)), g, 0.0)
        kept = array_api.max(data, axis=axes, keepdims=True)
        # a nan is the max of its group (the max kernels propagate it), so the nans are its ties
        ties = array_api.add(array_api.equal(data, array_api.broadcast_to(kept, tuple(data.shape))),
                             array_api.not_equal(data, data))
        count = array_api.sum(ties, axis=axes, keepdims=True)
        share = constant(array_api.broadcast_to(count, tuple(data.shape)))
        return where(constant(ties), g / share, 0.0)


def max(a, axes=None, keepdims: bool = False):  # noqa: A001
    return Max(axes, keepdims)(a)


class ArgExtreme(TensorOp):
    """int64 index of the first maximum (or minimum) along `axis` (of the flattened tensor if
    None); the first nan where there is one (torch.argmax / argmin). No gradient (indices): in
    eager mode the result is a constant, while a capture for export keeps it as a node."""

    def __init__(self, axis, keepdims: bool, largest: bool):
        self.axis, self.keepdims, self.largest = axis, keepdims, largest

    def compute(self, a):
        if not self.largest:  # the first minimum is the first maximum of -a (bool as int64: -True is refused)
            a = _ew.negative(array_api.astype(a, "int64") if array_api.dtype_name(a.dtype) == "bool" else a)
        return array_api.argmax(a, axis=self.axis, keepdims=self.keepdims)

    def gradient(self, out_grad, node):
        raise RuntimeError("argmax/argmin: indices have no gradient")  # int64: never requires grad


def argmax(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the first maximum along `axis` (of the flattened tensor if None), not
    differentiable; the first nan where there is one (torch.argmax's)."""
    require_tensor(a, "argmax")
    if axis is not None:
        axis_index(axis, a.ndim, "argmax")
    return ArgExtreme(axis, bool(keepdims), True)(a)


def _safe_max(a, axes):
    """The max over `axes` (kept), with +-inf replaced by 0 so that a - max is never inf - inf."""
    m = array_api.max(a, axis=axes, keepdims=True)
    return array_api.where(array_api.equal(array_api.abs(m), math.inf), 0, m)


def _log_sum_exp(a, axes):
    """log(sum(exp(a - m))) + m over `axes` (None: all), kept dims."""
    m = _safe_max(a, axes)
    shifted = array_api.exp(array_api.subtract(a, array_api.broadcast_to(m, tuple(a.shape))))
    return array_api.add(array_api.log(array_api.sum(shifted, axis=axes, keepdims=True)), m)


class LogSumExp(TensorOp):
    """log(sum(exp(a), axes)); axes is None (all), an int or a tuple.

    Edges: exact for huge entries; a group of -inf gives -inf, one holding +inf gives +inf,
    nan spreads. The gradient exp(a - lse) is nan where a and lse are the same infinity
    (a group of -inf, the +inf entry), as in PyTorch.
    """

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        require_tensor(a, "logsumexp")
        normalize_axes(self.axes, a.ndim, "logsumexp")

    def compute(self, a):
        axes = normalize_axes(self.axes, len(a.shape), "logsumexp")
        out = _log_sum_exp(a, axes)
        kept = () if axes is None else tuple(d for i, d in enumerate(a.shape) if i not in axes)
        return array_api.reshape(out, kept)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        lse = expand_reduced(node, a.shape, self.axes, keepdims=False)
        return expand_reduced(out_grad, a.shape, self.axes, keepdims=False) * exp(a - lse)


def logsumexp(a, axes=None):
    return LogSumExp(axes=axes)(a)


class LogSoftmax(TensorOp):
    """(a - m) - log(sum(exp(a - m))) over `axis` (the last one, which is axis 1 for the
    course's 2-D input); m is the row maximum.

    Edges: exact for huge logits (1e8 in float32); -inf entries give -inf; a row holding
    +inf or nan, or all -inf, is nan (PyTorch's).
    """

    def __init__(self, axis: int = -1):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "logsoftmax")
        if a.ndim == 0:
            raise ValueError("logsoftmax needs at least one dimension")
        axis_index(self.axis, a.ndim, "logsoftmax")

    def compute(self, a):
        fused = array_api.device_log_softmax(a, self.axis)  # the same operations in one kernel call, or None
        if fused is not None:
            return fused
        shape = tuple(a.shape)
        axes = (self.axis % len(shape),)
        shifted = array_api.subtract(a, array_api.broadcast_to(array_api.max(a, axis=axes, keepdims=True), shape))
        log_total = array_api.log(array_api.sum(array_api.exp(shifted), axis=axes, keepdims=True))
        return array_api.subtract(shifted, array_api.broadcast_to(log_total, shape))

    def gradient(self, out_grad, node):
        return LogSoftmaxGrad(self.axis)(out_grad, node)


def _logsoftmax_gradient(g, y, axis: int):
    """LogSoftmax's gradient as Tensor ops, given the adjoint g and the output y: g - exp(y) * sum(g)."""
    return g - exp(y) * summation(g, axis, keepdims=True).broadcast_to(g.shape)


class _RowGradient(TensorOp):
    """A softmax-like op's gradient over `axis` from the adjoint g and the op's output (one shape),
    one node at the array level (`compute`); its own gradient differentiates the Tensor-op form
    `formula(g, output, axis)` (autograd.vjp)."""

    what = ""  # the op's name, for the shape error
    formula: Callable[[Any, Any, int], Any]  # (g, output, axis) -> the gradient as Tensor ops

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, g, output):
        same_shape(g, output, f"{self.what} gradient")

    def gradient(self, out_grad, node):
        axis, formula = self.axis, self.formula
        return vjp(lambda g, output: formula(g, output, axis), node.inputs, (out_grad,))


class LogSoftmaxGrad(_RowGradient):
    """LogSoftmax's gradient g - exp(y) * sum(g over `axis`) from the adjoint g and the output y
    (one shape): `_logsoftmax_gradient`'s array operations in its order as one node, with the row
    sums negated before they are broadcast instead of after the product (IEEE -(a * b) is
    a * (-b): the same bits, but for a nan's sign) -- one pass less over the logits (700 x
    10,000 of them in the LSTM language model of benchmarks/). Its gradient differentiates the
    Tensor-op form (autograd.vjp)."""

    what = "logsoftmax"
    formula = staticmethod(_logsoftmax_gradient)

    def compute(self, g, y):
        fused = array_api.device_log_softmax_backward(g, y, self.axis)  # one kernel call, or None
        if fused is not None:
            return fused
        shape = tuple(g.shape)
        axes = (self.axis % len(shape),)
        total = array_api.sum(g, axes, True)
        # the row sums' negation first: the exp, product and sum then follow one another (a
        # compiled step fuses them into one pass over the logits)
        negative_total = array_api.broadcast_to(array_api.negative(total), shape)
        return array_api.add(g, array_api.multiply(array_api.exp(y), negative_total))


def logsoftmax(a, axis: int = -1):
    return LogSoftmax(axis)(a)


class Softmax(TensorOp):
    """exp(a - m) / sum(exp(a - m)) over `axis`; gradient s * (g - sum(g * s)).

    Edges: exact for huge logits; -inf entries give 0; a row holding +inf or nan, or all
    -inf, is nan (PyTorch's).
    """

    def __init__(self, axis: int = -1):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "softmax")
        if a.ndim == 0:
            raise ValueError("softmax needs at least one dimension")
        axis_index(self.axis, a.ndim, "softmax")

    def compute(self, a):
        fused = array_api.device_softmax(a, self.axis)  # the same bits in three passes, or None
        if fused is not None:
            return fused
        shape = tuple(a.shape)
        axes = (self.axis % len(shape),)
        e = array_api.exp(array_api.subtract(a, array_api.broadcast_to(array_api.max(a, axis=axes, keepdims=True),
                                                                       shape)))
        return array_api.divide(e, array_api.broadcast_to(array_api.sum(e, axis=axes, keepdims=True), shape))

    def gradient(self, out_grad, node):
        return SoftmaxGrad(self.axis)(out_grad, node)


def _softmax_gradient(g, s, axis: int):
    """Softmax's gradient as Tensor ops, given the adjoint g and the output s: s * (g - sum(g * s))."""
    return s * (g - summation(g * s, axis, keepdims=True).broadcast_to(g.shape))


class SoftmaxGrad(_RowGradient):
    """Softmax's gradient s * (g - sum(g * s over `axis`)) from the adjoint g and the output s
    (one shape): `_softmax_gradient`'s array operations in its order as one node, the row sums
    negated before they are broadcast (the same bits; the Tensor-op form negates a full array of
    broadcast rows). Its gradient differentiates the Tensor-op form (autograd.vjp)."""

    what = "softmax"
    formula = staticmethod(_softmax_gradient)

    def compute(self, g, s):
        fused = array_api.device_softmax_backward(g, s, self.axis)  # the same bits in one pass, or None
        if fused is not None:
            return fused
        shape = tuple(g.shape)
        axes = (self.axis % len(shape),)
        total = array_api.sum(array_api.multiply(g, s), axes, True)
        return array_api.multiply(s, array_api.add(g, array_api.broadcast_to(array_api.negative(total), shape)))


def softmax(a, axis: int = -1):
    return Softmax(axis)(a)


def extremes(a: Tensor) -> tuple:
    """(min, max) of a non-empty tensor as Python numbers: an input check's read, allowed (and
    not recorded) inside a compiled step. Not differentiable."""
    if not a.shape or 0 in a.shape:
        data = a.realize_cached_data()
        if not a.shape:
            value = array_api.to_numpy(data).item()
            return value, value
        raise ValueError("extremes of an empty tensor")
    return array_api.extremes(a.realize_cached_data())


def check_extremes(a: Tensor, check: Callable, *args) -> Any:
    """check(low, high, *args) with the min and max of a non-empty tensor (nan where it holds one):
    an input check that a compiled step repeats on every replay's data (array_api.check_extremes),
    where a check through `extremes` runs at the trace alone. Returns check's result."""
    return array_api.check_extremes(a.realize_cached_data(), check, *args)


def check_ids(ids: Tensor, n: Optional[int], what: str) -> None:
    """ValueError, prefixed with `what`, for the first of the ids (a Tensor of any shape) that is not
    a whole number or lies outside [0, n): an input check that a compiled step repeats on every
    replay's ids (array_api.check_ids), where a check through `extremes` runs at the trace alone."""
    array_api.check_ids(ids.realize_cached_data(), n, what)


# --- PyTorch's other reductions: min, argmin, var, std, all, any ---------------------------------
# Composites of the ops above (min is -max(-x), so it shares max's tie and nan rules), and
# constant results for the ones that are not differentiable (indices, truth values).

def _negatable(a: Tensor) -> Tensor:
    """a, with bool made int64 (negating a bool is refused)."""
    return a.to("int64") if array_api.dtype_name(a.dtype) == "bool" else a


builtin_max = builtins.max  # this module's max is the op


def minimum_of(a: Tensor, axes=None, keepdims: bool = False) -> Tensor:
    """The minimum over `axes` (None: all), as -max(-a): max's edges mirrored (a nan wins; the
    gradient goes to the first minimum over one axis, split among ties over several)."""
    require_tensor(a, "min")
    out = -max(-_negatable(a), axes, keepdims=keepdims)
    return out.to("bool") if array_api.dtype_name(a.dtype) == "bool" else out


def argmin(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the first minimum along `axis` (of the flattened tensor if None), not
    differentiable; the first nan where there is one (torch.argmin's)."""
    require_tensor(a, "argmin")
    if axis is not None:
        axis_index(axis, a.ndim, "argmin")
    return ArgExtreme(axis, bool(keepdims), False)(a)


class Variance(TensorOp):
    """sum((a - mean)^2) / max(0, N - correction) over `axes` (None: all).

    Edges: nan where the group holds a nan or an infinity, or when N <= correction (0 / 0).
    The gradient is g * 2 (a - mean) / (N - correction), PyTorch's formula (the mean's own
    path adds exactly 0 and is left out): +-inf for the finite entries of a group holding an
    infinity, nan for the infinity itself.
    """

    def __init__(self, axes=None, keepdims: bool = False, correction=1):
        self.axes, self.keepdims, self.correction = axes, keepdims, correction

    def _divisor(self, shape) -> float:
        count = size_of(shape[i] for i in reduced_axes(self.axes, len(shape), "var"))
        return builtin_max(0, count - self.correction)

    def check(self, a):
        require_tensor(a, "var")
        normalize_axes(self.axes, a.ndim, "var")

    def compute(self, a):
        axes = normalize_axes(self.axes, len(a.shape), "var")
        shape = tuple(a.shape)
        count = size_of(shape[i] for i in reduced_axes(self.axes, len(shape), "var"))
        centre = array_api.divide(array_api.sum(a, axis=axes, keepdims=True), count) if count else \
            array_api.full((), math.nan, array_api.dtype_of(a), array_api.device_of(a))
        deviation = array_api.subtract(a, array_api.broadcast_to(centre, shape))
        total = array_api.sum(array_api.multiply(deviation, deviation), axis=axes, keepdims=self.keepdims)
        return array_api.divide(total, self._divisor(shape))

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        divisor = self._divisor(a.shape)
        scale = 2.0 / divisor if divisor else math.inf
        centre = mean(a, self.axes, keepdims=True)
        return expand_reduced(out_grad, a.shape, self.axes, self.keepdims) * scale * (a - centre)


def var(a: Tensor, dim=None, keepdim: bool = False, *, correction=1) -> Tensor:
    """The variance over `dim` (None: all), sum((a - mean)^2) / max(0, N - correction) (torch.var;
    correction 1 is the unbiased estimate, 0 the population variance): nan when N <= correction.
    Differentiable (see Variance for the edges). TypeError for an integer or bool tensor
    (PyTorch's rule too)."""
    require_tensor(a, "var")
    if not array_api.is_floating(a.dtype):
        raise TypeError(f"var/std need a floating-point tensor, got dtype {a.dtype}")
    return Variance(dim, bool(keepdim), correction)(a)


def std(a: Tensor, dim=None, keepdim: bool = False, *, correction=1) -> Tensor:
    """sqrt(var(a, dim, keepdim, correction=...)) (torch.std)."""
    return var(a, dim, keepdim, correction=correction) ** 0.5


def _truth_count(a: Tensor, axes, keepdims: bool, nonzero: bool):
    data = a.realize_cached_data()
    hits = _ew.not_equal(data, 0) if nonzero else _ew.equal(data, 0)
    return array_api.sum(hits, axis=normalize_axes(axes, len(data.shape), "all/any"), keepdims=keepdims)


def all_of(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Whether every element over `dim` (None: all) is nonzero, a bool tensor (torch.all; nan counts
    as true, an empty reduction is True)."""
    require_tensor(a, "all")
    if size_of(a.shape) == 0:  # an empty reduction (the ops below would refuse it) is True
        return constant(_ew.equal(_truth_count(a, dim, keepdim, nonzero=False), 0))
    return minimum_of(_nonzero(a), dim, keepdims=bool(keepdim))


def any_of(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Whether some element over `dim` (None: all) is nonzero, a bool tensor (torch.any)."""
    require_tensor(a, "any")
    if size_of(a.shape) == 0:  # an empty reduction is False
        return constant(_ew.greater(_truth_count(a, dim, keepdim, nonzero=True), 0))
    return max(_nonzero(a).to("int64"), dim, keepdims=bool(keepdim)).to("bool")


def _nonzero(a: Tensor) -> Tensor:
    """a != 0 as a bool tensor (nan counts as nonzero), built from ops so that an export records it."""
    return a if array_api.dtype_name(a.dtype) == "bool" else ops_not_equal(a, 0)


# --- sorting: sort, argsort, topk, and gather (how they pick values) -----------------------------

# (values, indices) of sort and topk, like torch.return_types.sort / topk: the pair max and min return
SortResult = MaxResult


class Gather(TensorOp):
    """`out[i][j][k] = a[index[i][j][k]][j][k]` for axis 0, and so on (torch.gather); inputs (a,
    index). The gradient scatters into zeros (repeated indices add up); the index gets none.

    Edges: values are copied as they are (nan, +-inf, -0).
    """

    reads_values = False  # its gradient needs no value of a (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def plan(self, shape, index) -> IndexPlan:
        """The IndexPlan of a[grids]: the index along `axis`, aranges along the others."""
        device = array_api.device_of(index)
        grids = []
        for d, n in enumerate(index.shape):
            if d == self.axis:
                grids.append(index)
            else:
                grid_shape = tuple(n if k == d else 1 for k in range(len(index.shape)))
                grids.append(array_api.reshape(array_api.arange(n, device=device), grid_shape))
        return IndexPlan(tuple(shape), tuple(grids), device)

    def compute(self, a, index):
        return self.plan(a.shape, index).gather(a)

    def gradient(self, out_grad, node):
        a, index = node.inputs
        return ScatterItem(self.plan(a.shape, index.realize_cached_data()))(out_grad), None


def gather(a: Tensor, dim: int, index: Tensor) -> Tensor:
    """`out[i][j][k] = a[index[i][j][k]][j][k]` for dim 0, and so on (torch.gather): `index` is an
    int64 tensor of a's number of dimensions, no larger than a except along dim; the result has
    its shape. Differentiable with respect to a (repeated indices add up). IndexError for an
    index outside the axis."""
    require_tensor(a, "gather")
    require_tensor(index, "gather")
    if array_api.dtype_name(index.dtype) != "int64":
        raise TypeError(f"gather: the index must be an int64 tensor, got dtype {index.dtype}")
    if a.ndim == 0:
        raise ValueError("gather: the tensor has no dimensions to gather along")
    axis = axis_index(dim, a.ndim, "gather")
    if index.ndim != a.ndim:
        raise ValueError(f"gather: the index has {index.ndim} dimensions, the tensor {a.ndim} (shape {a.shape})")
    for d, (n, m) in enumerate(zip(index.shape, a.shape)):
        if d != axis and n > m:
            raise ValueError(f"gather: index of shape {index.shape} is larger than the tensor's {a.shape} "
                             f"along axis {d}")
    return Gather(axis)(a, index)


class Argsort(TensorOp):
    """int64 indices that sort along `axis` (torch.argsort, stable: equal elements keep their order;
    nan counts as the largest value). No gradient (indices): in eager mode a constant, in a capture
    for export a node (ONNX TopK)."""

    def __init__(self, axis: int, descending: bool):
        self.axis, self.descending = axis, descending

    def compute(self, a):
        return array_api.argsort(a, self.axis, self.descending)

    def gradient(self, out_grad, node):
        raise RuntimeError("argsort: indices have no gradient")  # int64: never requires grad


def argsort(a: Tensor, dim: int = -1, descending: bool = False) -> Tensor:
    """int64 indices that sort `a` along `dim` (torch.argsort, stable: equal elements keep their
    order; nan counts as the largest value). Computed on the host, where a compiled step sorts
    again on every replay; not differentiable."""
    require_tensor(a, "argsort")
    if a.ndim:
        dim = axis_index(dim, a.ndim, "argsort")
    return Argsort(dim, bool(descending))(a)


def sort(a: Tensor, dim: int = -1, descending: bool = False) -> SortResult:
    """(values, indices) sorted along `dim` (torch.sort, stable); values are differentiable."""
    indices = argsort(a, dim, descending)
    return SortResult(gather(a, dim, indices) if a.ndim else a, indices)


def topk(a: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> SortResult:  # noqa: A002
    """The k largest (or smallest) elements along `dim` and their int64 indices (torch.topk), in
    order (sorted=False gives the same order, which PyTorch leaves unspecified); nan counts as
    the largest value; among equal values the first comes first. Values are differentiable.
    ValueError when k is outside [0, size of dim]."""
    require_tensor(a, "topk")
    n = a.shape[axis_index(dim, a.ndim, "topk")] if a.ndim else 1
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= n:
        raise ValueError(f"topk: k = {k!r} is out of range for a dimension of size {n}")
    if a.ndim == 0:
        if k != 1:
            raise ValueError(f"topk: k = {k} for a 0-d tensor; only k = 1 is possible")
        return SortResult(a, argsort(a))
    order = argsort(a, dim, descending=largest)
    axis = axis_index(dim, a.ndim, "topk")
    if k != n:
        order = order[tuple(slice(0, k) if d == axis else slice(None) for d in range(a.ndim))]
    return SortResult(gather(a, axis, order), order)


# --- histograms (not differentiable: counts) --------------------------------------------------------

class HistogramResult(tuple):
    """(hist, bin_edges) of histogram, like torch.return_types.histogram."""

    def __new__(cls, hist, bin_edges):
        return super().__new__(cls, (hist, bin_edges))

    @property
    def hist(self):
        return self[0]

    @property
    def bin_edges(self):
        return self[1]


def linspace_data(start, end, steps: int, dtype: str, device):
    """`steps` evenly spaced values from start to end (numbers or 0-d arrays) as an array of
    `dtype`, by PyTorch's formula: step = (end - start) / (steps - 1), start + i * step for the
    first half and end - (steps - 1 - i) * step for the second, each in `dtype`'s arithmetic (so
    both ends are exact)."""
    def as_array(v):
        return array_api.astype(v, dtype) if array_api.is_array(v) else array_api.full((), v, dtype, device)

    lo, hi = as_array(start), as_array(end)
    i = array_api.astype(array_api.arange(steps, device=device), dtype)
    if steps == 1:
        return array_api.reshape(lo, (1,))
    step = _ew.divide(_ew.subtract(hi, lo), steps - 1)
    first = _ew.add(lo, _ew.multiply(step, i))
    second = _ew.subtract(hi, _ew.multiply(step, _ew.subtract(steps - 1, i)))
    return array_api.where(_ew.less(i, steps // 2), first, second)


def _float_input(a: Tensor, what: str) -> str:
    require_tensor(a, what)
    dtype = array_api.dtype_name(a.dtype)
    if dtype not in ("float32", "float64"):
        raise TypeError(f"{what} needs a floating-point tensor, got dtype {dtype} (PyTorch's rule too)")
    return dtype


def _data_range(x, what: str, widen: float):
    """The data's (min, max) as 0-d arrays, widened by `widen` on both sides when equal; the
    check that they are finite reads two numbers (an input check)."""
    if x.size == 0:
        raise ValueError(f"{what}: the range of an empty tensor is undefined; give it")
    lo, hi = array_api.min(x), array_api.max(x)
    array_api.check_data(_finite_range, (array_api.stack([lo, hi]),), what)  # on every replay too
    same = _ew.equal(lo, hi)
    return array_api.where(same, _ew.subtract(lo, widen), lo), array_api.where(same, _ew.add(hi, widen), hi)


def _finite_range(bounds, what: str) -> None:
    low, high = (float(v) for v in bounds)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{what}: the range of the data [{low}, {high}] is not finite")


def _bin_counts(x, weights, bins: int, lo, hi, edges, dtype: str, device):
    """The counts (or weight sums) of the bins of [lo, hi] (numbers or 0-d arrays): position
    (x - lo) * bins / (hi - lo) truncated, x == hi in the last bin, values outside [lo, hi]
    (nan too) left out; with `edges` (the bin edges) a position is moved by one where it
    disagrees with them (PyTorch's local search)."""
    inside = _ew.multiply(_ew.greater_equal(x, lo), _ew.less_equal(x, hi))
    pos = _ew.divide(_ew.multiply(_ew.subtract(x, lo), bins), _ew.subtract(hi, lo))
    pos = array_api.where(inside, pos, 0)
    index = _ew.minimum(_ew.maximum(array_api.astype(pos, "int64"), 0), bins - 1)
    if edges is not None:
        below = _ew.less(x, array_api.take_rows(edges, index))
        above = _ew.multiply(_ew.greater_equal(x, array_api.take_rows(edges, _ew.add(index, 1))),
                                   _ew.less(index, bins - 1))
        index = _ew.subtract(_ew.add(index, array_api.astype(above, "int64")),
                                   array_api.astype(below, "int64"))
        index = _ew.minimum(_ew.maximum(index, 0), bins - 1)
    values = array_api.astype(inside, dtype) if weights is None else array_api.where(inside, weights, 0)
    hist = array_api.zeros((bins,), dtype, device)
    if x.size:
        array_api.index_add_rows(hist, index, array_api.ascontiguousarray(values))
    return hist


def histc(a: Tensor, bins: int = 100, min=0, max=0) -> Tensor:  # noqa: A002  (PyTorch's names)
    """Counts of a's elements in `bins` equal bins over [min, max] (torch.histc), a float tensor of
    a's dtype; elements outside the range and nan are left out, max itself is in the last bin.
    min == max means the data's range (widened by 1 on each side when it is one value).
    TypeError for a non-float tensor, ValueError for bins < 1, max < min or a non-finite data range."""
    dtype = _float_input(a, "histc")
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"histc: bins must be a positive int, got {bins!r}")
    if max < min:
        raise ValueError(f"histc: max ({max}) must not be smaller than min ({min})")
    x = array_api.reshape(array_api.ascontiguousarray(a.realize_cached_data()), (-1,))
    lo, hi = (min, max) if min != max else _data_range(x, "histc", 1.0)
    if not array_api.is_array(lo):
        lo, hi = (array_api.full((), v, dtype, a.device) for v in (lo, hi))
    return constant(_bin_counts(x, None, bins, lo, hi, None, dtype, a.device))


def histogram(a: Tensor, bins, *, range=None, weight=None, density: bool = False) -> HistogramResult:  # noqa: A002
    """(hist, bin_edges) of a's elements (torch.histogram): `bins` equal bins over `range` (the
    data's min and max when None, widened by 0.5 on each side when they are equal), or the bins
    between consecutive edges of a 1-D tensor `bins` (increasing, a's dtype). Each element adds 1
    (or its `weight`, a tensor of a's shape) to its bin; the last bin holds its right edge;
    elements outside, and nan, are left out. density=True divides by the total and the bin
    widths. TypeError for a non-float tensor, ValueError for bad bins, range or weight."""
    dtype = _float_input(a, "histogram")
    x = array_api.reshape(array_api.ascontiguousarray(a.realize_cached_data()), (-1,))
    w = None
    if weight is not None:
        require_tensor(weight, "histogram weight")
        if tuple(weight.shape) != tuple(a.shape):
            raise ValueError(f"histogram: weight of shape {weight.shape} for an input of shape {a.shape}")
        w = array_api.astype(array_api.reshape(array_api.ascontiguousarray(weight.realize_cached_data()), (-1,)),
                             dtype)
    if isinstance(bins, Tensor):
        if bins.ndim != 1 or bins.shape[0] < 2:
            raise ValueError(f"histogram: bin edges must be a 1-D tensor of at least 2 edges, got shape {bins.shape}")
        if array_api.dtype_name(bins.dtype) != dtype:
            raise TypeError(f"histogram: the bin edges are {bins.dtype}, the input {dtype}; they must match")
        edges = bins.realize_cached_data()
        count = bins.shape[0] - 1
        # a position among unequal bins: how many inner edges are <= x
        inner = array_api.getitem(edges, (slice(1, count),))
        ge = _ew.greater_equal(array_api.reshape(x, (-1, 1)),
                                     array_api.reshape(array_api.ascontiguousarray(inner), (1, -1)))
        index = array_api.sum(ge, axis=(1,)) if count > 1 else array_api.zeros(x.shape, "int64", a.device)
        lo, hi = (array_api.reshape(array_api.ascontiguousarray(array_api.getitem(edges, (slice(k, k + 1),))), ())
                  for k in (0, count))
        inside = _ew.multiply(_ew.greater_equal(x, lo), _ew.less_equal(x, hi))
        values = array_api.astype(inside, dtype) if w is None else array_api.where(inside, w, 0)
        hist = array_api.zeros((count,), dtype, a.device)
        if x.size:
            array_api.index_add_rows(hist, array_api.ascontiguousarray(index), array_api.ascontiguousarray(values))
        edges = array_api.array(edges, dtype=None)
    else:
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(f"histogram: bins must be a positive int or a 1-D tensor of edges, got {bins!r}")
        if range is not None:
            low, high = (float(v) for v in range)
            if not (math.isfinite(low) and math.isfinite(high)) or high < low:
                raise ValueError(f"histogram: range {tuple(range)} must be finite with max >= min")
            if low == high:
                low, high = low - 0.5, high + 0.5
            lo, hi = (array_api.full((), v, dtype, a.device) for v in (low, high))
        else:
            lo, hi = _data_range(x, "histogram", 0.5)
        count = bins
        edges = linspace_data(lo, hi, bins + 1, dtype, a.device)
        hist = _bin_counts(x, w, bins, lo, hi, edges, dtype, a.device)
    if density:
        widths = _ew.subtract(array_api.getitem(edges, (slice(1, count + 1),)),
                                    array_api.getitem(edges, (slice(0, count),)))
        total = array_api.sum(hist)
        hist = _ew.divide(hist, _ew.multiply(widths, total))
    return HistogramResult(constant(hist), constant(edges))
