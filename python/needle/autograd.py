"""Reverse-mode automatic differentiation: Value, Tensor, TensorTuple and Op.

Every Tensor records the op that made it and its inputs; `backward()` walks
that graph in reverse topological order and asks each op for the gradient of
the inputs that require one. Gradients are themselves built from Tensor ops,
so a gradient can be differentiated again.

This module talks to the array layer only through `array_api` (the functions of
`needle.array_interface`) and the arrays' shape/dtype attributes: it never knows
which backend is in use.
"""
from __future__ import annotations

import builtins
import functools
import gc
import math
import operator
import weakref
from typing import Any, Callable, Iterable, List, Literal, Optional, Sequence, Tuple, Union, cast

from .backend_selection import (  # noqa: F401
    Device,
    NDArray,
    array_api,
    as_device,
    cpu,
    default_device,
    get_device,
    registered_devices,
)
from .dtypes import as_dtype, python_scalar
from .dtypes import dtype as DType

__all__ = ["Op", "TensorOp", "TensorTupleOp", "Value", "Tensor", "TensorTuple", "find_topo_sort",
           "compute_gradient_of_variables", "sum_node_list", "no_grad", "enable_grad", "set_grad_enabled",
           "inference_mode",
           "is_grad_enabled", "LAZY_MODE", "TENSOR_COUNTER", "array_api", "NDArray", "queue_callback",
           "RemovableHandle", "recording_every_op", "vjp", "Partials"]

LAZY_MODE = False
TENSOR_COUNTER = 0
_GRAD_ENABLED = True
# leaves that require grad get their gradient as a differentiable graph (gradients of
# gradients, as the course's tests use); a compiled step turns this off, like PyTorch's
# create_graph=False, so the step's temporaries die with it
LEAF_GRAD_GRAPHS = True
# what a recording refuses with (needle.compile sets its TraceError while it records a step)
RECORDING_ERROR: type = RuntimeError
# while set (recording_every_op, for needle.onnx's capture), every op keeps its node, whether or
# not its result requires grad: comparisons, integer index arithmetic and functions of constants
# stay in the graph instead of becoming constant leaves
_RECORD_EVERY_OP = False


# --- grad mode --------------------------------------------------------------------

def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = _GRAD_ENABLED  # the mode to restore; set again by __enter__

    def __enter__(self):
        global _GRAD_ENABLED
        self.prev = _GRAD_ENABLED
        _GRAD_ENABLED = self.mode
        return self

    def __exit__(self, *exc) -> Literal[False]:
        global _GRAD_ENABLED
        _GRAD_ENABLED = self.prev
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(self.mode):
                return func(*args, **kwargs)

        return wrapper


class no_grad(set_grad_enabled):
    """Results computed inside do not record a graph and do not require grad."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


class recording_every_op:
    """Context manager: every op's result keeps its op and inputs (a graph node), also where it
    needs no gradient (a comparison, an int64 index computation, an op on constants), so that
    the graph from the outputs back to the inputs is the whole forward computation. For
    needle.onnx's capture; a node that needs no gradient still has requires_grad False, and
    backward never visits it. An in-place update that is not recorded for autograd turns such
    a node into a constant leaf holding its new value. Not thread-safe (a module flag)."""

    def __enter__(self) -> "recording_every_op":
        global _RECORD_EVERY_OP
        self.prev = _RECORD_EVERY_OP
        _RECORD_EVERY_OP = True
        return self

    def __exit__(self, *exc) -> Literal[False]:
        global _RECORD_EVERY_OP
        _RECORD_EVERY_OP = self.prev
        return False


class inference_mode(set_grad_enabled):
    """PyTorch's inference_mode (context manager and decorator): inside, nothing records a graph,
    as under no_grad (needle has no separate inference tensors); inference_mode(False) turns
    recording on."""

    def __new__(cls, mode=True):
        if callable(mode):  # @ndl.inference_mode without parentheses, as PyTorch allows
            return cls()(mode)
        return super().__new__(cls)

    def __init__(self, mode: bool = True):
        super().__init__(not mode)


# --- ops ------------------------------------------------------------------------------

class Op:
    """An operator: `compute` on backend arrays, `gradient` on Tensors. Ops keep no state
    between calls: everything a gradient needs is in the node (its inputs and output)."""

    # computed when the node is made; False for bookkeeping ops whose data is
    # usually never read (their node computes on first realize_cached_data())
    eager = True

    def __call__(self, *args):
        raise NotImplementedError()

    def check(self, *args: "Value") -> None:
        """Raise ValueError/TypeError, naming shapes/axes, if the inputs are invalid."""

    def compute(self, *args: Tuple[NDArray]):
        raise NotImplementedError()

    def gradient(self, out_grad: "Value", node: "Value") -> Union["Value", Tuple["Value"]]:
        """Partial adjoint for each input, given the adjoint of the output. An op may return
        None for an input that does not require grad, to skip computing it."""
        raise NotImplementedError()

    def gradient_as_tuple(self, out_grad: "Value", node: "Value") -> Tuple["Value"]:
        output = self.gradient(out_grad, node)
        if isinstance(output, tuple):
            return output
        if isinstance(output, list):
            return tuple(output)
        return (output,)


class TensorOp(Op):
    """An op whose output is a single Tensor."""

    def __call__(self, *args):
        # Tensor.make_from_op, inline (one frame less on every op)
        self.check(*args)
        return Tensor._from_checked_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a TensorTuple."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


# --- values -------------------------------------------------------------------------

class Value:
    """A node of the computation graph."""

    op: Optional[Op]
    inputs: List["Value"]
    cached_data: NDArray
    grad: Optional["Value"]
    _requires_grad: bool  # read directly on the path of every op (Tensor checks what is set)
    num_outputs = 1
    # set on graph nodes and their inputs only (the class defaults stand for "unset": reading an
    # instance's __dict__ would make Python build one, on the path of every op): see _link
    _epoch: int = -1  # -1: not a graph node
    _consumed: bool = False
    _grad_hooks: Union[Tuple, List] = ()  # a leaf's post-accumulate-grad hooks
    _first_order_grad: bool = False  # a leaf's .grad made while a compiled step records (a value, not a graph)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self._requires_grad = bool(value)

    def realize_cached_data(self):
        if self.cached_data is None:
            self.cached_data = self.op.compute(*[x.realize_cached_data() for x in self.inputs])
        return self.cached_data

    def is_leaf(self) -> bool:
        return self.op is None

    def detach(self) -> "Value":
        """A constant leaf sharing this value's data (Tensor and TensorTuple define it)."""
        raise NotImplementedError()

    def __del__(self):
        global TENSOR_COUNTER
        TENSOR_COUNTER -= 1

    def _init(self, op, inputs, cached_data=None, requires_grad=None, *, num_outputs: int = 1):
        global TENSOR_COUNTER
        TENSOR_COUNTER += 1
        if requires_grad is None:
            requires_grad = _GRAD_ENABLED and any(x._requires_grad for x in inputs)
        self.op = op
        self.inputs = inputs
        if num_outputs != 1:
            self.num_outputs = num_outputs
        self.cached_data = cached_data
        if requires_grad:
            self.requires_grad = True  # through the property: Tensor checks the dtype
        else:
            self._requires_grad = False
        self.grad = None

    @classmethod
    def make_const(cls, data, *, requires_grad: bool = False):
        if isinstance(data, Value):
            data = data.realize_cached_data()
        value = cls.__new__(cls)
        value._init(None, [], data, requires_grad)
        return value

    @classmethod
    def make_from_op(cls, op: Op, inputs: List["Value"]):
        """The result of `op` on `inputs`: its check, then (eagerly) its compute; a graph node
        when an input requires grad and gradients are recorded, else a constant leaf."""
        op.check(*inputs)
        return cls._from_checked_op(op, inputs)

    @classmethod
    def _from_checked_op(cls, op: Op, inputs):
        """make_from_op after the op's check: for callers that have just checked the same
        (the elementwise functions' types and shapes), so that no op pays for it twice."""
        requires_grad = False
        if _GRAD_ENABLED:
            for x in inputs:
                if x._requires_grad:
                    requires_grad = True
                    break
        if LAZY_MODE or not op.eager:
            value = cls.__new__(cls)
            value._init(op, list(inputs), None, requires_grad)
            if requires_grad:
                _link(value, inputs)
            return value
        # the inputs' data, without a list for the usual one or two inputs (every op's path)
        n = len(inputs)
        if n == 2:
            a, b = inputs
            a_data, b_data = a.cached_data, b.cached_data
            if a_data is None or b_data is None or Value.realize_cached_data is not _PLAIN_REALIZE:
                # computed on first use (lazy), or a compiled step's guards watching the reads
                a_data, b_data = a.realize_cached_data(), b.realize_cached_data()
            data = op.compute(a_data, b_data)
        elif n == 1:
            data = op.compute(inputs[0].realize_cached_data())
        else:
            data = op.compute(*[x.realize_cached_data() for x in inputs])
        value = cls.__new__(cls)
        # through _init (ndl.compile's guards watch it for the values a step creates), with
        # requires_grad set after: a floating result needs no second dtype check
        if requires_grad:
            if isinstance(data, tuple) or _FLOATING.get(data.dtype) or _is_floating(data.dtype):
                if Value._init is _PLAIN_INIT:
                    # _init's assignments, inline (in its order), on the path of every op
                    global TENSOR_COUNTER
                    TENSOR_COUNTER += 1
                    value.op = op
                    value.inputs = list(inputs)
                    value.cached_data = data
                    value._requires_grad = True
                    value.grad = None
                else:  # ndl.compile's guards watch _init for the values a step creates
                    value._init(op, list(inputs), data, False)
                    value._requires_grad = True
                value._epoch = _EPOCH
                for x in inputs:
                    x._consumed = True
                return value
            # an integer or bool result (a cast, a comparison) has no gradient
        if _RECORD_EVERY_OP:  # kept as a node that needs no gradient (see recording_every_op)
            value._init(op, list(inputs), data, False)
        else:
            # a result that needs no gradient is a constant leaf: no graph node is kept
            value._init(None, [], data, False)
        return value


_PLAIN_REALIZE = Value.realize_cached_data  # (ndl.compile's guards replace it while they trace,
_PLAIN_INIT = Value._init  # and _init)

_FLOATING: dict = {}  # array dtype -> whether it is floating (the arrays' own dtype objects as keys)


def _is_floating(dtype) -> bool:
    found = _FLOATING.get(dtype)
    if found is None:
        found = _FLOATING[dtype] = array_api.is_floating(dtype)
    return found


# --- in-place updates -------------------------------------------------------------
# A graph node reads its inputs' values when backward asks it for a gradient, so an in-place
# write to a buffer after a node was made from it would change that gradient silently. Every
# in-place write is counted (_EPOCH) and stamped on its buffer; every graph node remembers the
# count when it was made, and backward refuses a node whose inputs' buffers were written since
# (PyTorch's version counter, by buffer). `_consumed` marks a tensor that a graph node holds as
# an input: it cannot take a new place in the graph itself (its consumers would follow it).
_EPOCH = 0
_WRITTEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # buffer -> _EPOCH of its last write


def _link(node: Value, inputs) -> None:
    node._epoch = _EPOCH
    for x in inputs:
        x._consumed = True


def _note_write(data) -> None:
    """Stamp the buffer behind `data` as written in place now."""
    global _EPOCH
    _EPOCH += 1
    try:
        _WRITTEN[array_api.storage(data)] = _EPOCH
    except TypeError:  # a buffer that cannot be weakly referenced: nothing to check against
        pass


def _check_unwritten(node: Value) -> None:
    """RuntimeError if a value this node's gradient reads was written in place after the node was made."""
    epoch = node._epoch
    if epoch < 0 or epoch == _EPOCH or not getattr(node.op, "reads_values", True):
        return
    for value in [node] + list(node.inputs):
        data = value.cached_data
        if data is None or isinstance(data, tuple):
            continue
        try:
            written = _WRITTEN.get(array_api.storage(data))
        except TypeError:
            continue
        if written is not None and written > epoch:
            raise RuntimeError(
                f"backward: a value needed for the gradient of {type(node.op).__name__} (a tensor of shape "
                f"{tuple(data.shape)}) was changed by an in-place operation after it was used (PyTorch's rule too). "
                "Use an out-of-place form (y = x + 1, not x.add_(1)), or make the change after backward().")


class TensorTuple(Value):
    """A tuple of tensors produced or consumed by one op (no nesting)."""

    def __len__(self) -> int:
        return len(self.realize_cached_data())

    def __getitem__(self, index: int) -> "Tensor":
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"TensorTuple index {index} out of range for length {n}")
        return _ops.tuple_get_item(self, index % n)

    def __iter__(self):
        return iter(self.tuple())

    def tuple(self) -> tuple:
        return tuple(self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return "needle.TensorTuple" + str(self.tuple())

    def __str__(self) -> str:
        return self.__repr__()

    def __add__(self, other: "TensorTuple") -> "TensorTuple":
        return _ops.add_tuples([self, other])

    def detach(self) -> "TensorTuple":
        return TensorTuple.make_const(self.realize_cached_data())


def _kind_rank(dtype_name: str) -> int:
    return {"bool": 0, "int64": 1}.get(dtype_name, 2)


def _check_requires_grad(requires_grad: bool, dtype) -> None:
    if requires_grad and not array_api.is_floating(dtype):
        raise TypeError(f"only floating-point tensors can require grad; this tensor has dtype {dtype}")


class Tensor(Value):
    """An n-dimensional array that records how it was computed.

    `Tensor(array, device=None, dtype=None, requires_grad=None)`: a copy of `array` (a
    Tensor, NDArray, numpy array, list or number) on `device`. dtype None keeps a Tensor's
    or NDArray's dtype and otherwise gives float32 in nd mode (the course's rule; numpy
    mode keeps a numpy array's dtype and makes Python ints float). requires_grad None
    means True for floating-point data (the course's default) and False for int64/bool,
    which cannot require grad (TypeError if asked).
    """

    grad: Optional["Tensor"]  # None until a backward pass reaches it (PyTorch's)
    _retains_grad: builtins.bool = False  # set by retain_grad()

    # numpy scalars and arrays on the left of an operator defer to our reflected
    # operators (np.float64(2) * t is MulScalar, not an object array of Tensors)
    __array_ufunc__ = None

    def __init__(self, array, *, device: Optional[Device] = None, dtype=None, requires_grad: Optional[bool] = None,
                 **kwargs):
        device = as_device(device)
        if isinstance(array, Tensor):
            data = array.realize_cached_data()
            device = array.device if device is None else device
            dtype = array_api.dtype_name(array.dtype if dtype is None else dtype)
            if device != array.device:
                cached_data = array_api.array(array.numpy(), device=device, dtype=dtype)
            elif dtype != array_api.dtype_name(array.dtype):
                cached_data = array_api.astype(data, dtype)
            else:
                cached_data = data
        else:
            device = default_device() if device is None else device
            cached_data = array_api.array(array, device=device, dtype=dtype)
        if requires_grad is None:
            requires_grad = array_api.is_floating(cached_data.dtype)
        else:
            _check_requires_grad(requires_grad, cached_data.dtype)
        self._init(None, [], cached_data, bool(requires_grad))

    # --- data access ---------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor") -> None:
        """Replace this tensor's data (same dtype) in place of the graph: how optimizers update."""
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data must be set to a Tensor, got {type(value).__name__}")
        if array_api.dtype_name(value.dtype) != array_api.dtype_name(self.dtype):
            raise TypeError(f"Tensor.data: dtype {value.dtype} does not match {self.dtype}")
        self.cached_data = value.realize_cached_data()

    def copy_(self, value) -> "Tensor":
        """Write `value` (a Tensor or number; broadcast to this shape, cast to this dtype) into this
        tensor's own buffer, in place; returns self (PyTorch's `copy_`). Differentiable with
        respect to `value` when it requires grad (see `_inplace`); optimizers and state loading
        call it under no_grad, outside the graph."""
        if not isinstance(value, Tensor):
            if python_scalar(value) is None:
                raise TypeError(f"copy_ expects a Tensor or a number, got {type(value).__name__}")
            return self.fill_(value)
        if value.device != self.device:
            raise ValueError(f"copy_: the source is on {value.device}, this tensor on {self.device}")
        if not (_GRAD_ENABLED and (self._requires_grad or value._requires_grad)):
            data, new = self.realize_cached_data(), value.realize_cached_data()
            if new.dtype == data.dtype and new.shape == data.shape:
                # untracked, same dtype and shape (every optimizer update): what _inplace_ends does then
                if new is not data:
                    array_api.setitem(data, (), new)
                _note_write(data)
                return self
        tracked = self._inplace_begins("copy_", value)
        result = value if array_api.dtype_name(value.dtype) == array_api.dtype_name(self.dtype) \
            else _ops.cast(value, array_api.dtype_name(self.dtype))
        if tracked and result is value:
            result = value * 1.0  # a node of its own, which this tensor becomes
        if tuple(result.shape) != tuple(self.shape):
            try:
                result = _ops.broadcast_to(result, tuple(self.shape))
            except ValueError:
                raise ValueError(f"copy_: a source of shape {value.shape} cannot be broadcast to "
                                 f"{self.shape}") from None
        return self._inplace_ends("copy_", result, tracked, cast=False)

    # --- in place (PyTorch's forms; the operators +=, -=, *=, /= and item assignment use them) ---
    def _inplace_begins(self, what: str, *others) -> bool:
        """Whether the update is recorded for autograd (gradients are on and this tensor or an operand
        requires grad: then this tensor takes the result's place in the graph); raises where that
        cannot be done safely. Otherwise the update only writes the data."""
        tracked = _GRAD_ENABLED and (self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad
                                                                for o in others))
        if not tracked:
            return False
        if self.op is None and self.requires_grad and getattr(type(self), "_refuses_inplace", False):
            raise RuntimeError(f"{what}: a parameter cannot be changed in place while gradients are recorded "
                               "(PyTorch's rule too); do it under ndl.no_grad(), or on its .data")
        if self._consumed:
            raise RuntimeError(f"{what}: this tensor is already an input of an operation that records gradients; "
                               "changing it in place would change that operation's gradient (needle's graph links "
                               "tensors directly). Change it before using it, or write x = x + y instead of x += y")
        if not array_api.owns_storage(self.realize_cached_data()):
            raise RuntimeError(f"{what}: this tensor is a view of part of another tensor's memory; changing it in "
                               "place while gradients are recorded would change the other tensor behind its graph's "
                               "back. Build the result as a new tensor, or do it under ndl.no_grad()")
        return True

    def _inplace_source(self, tracked: bool) -> "Tensor":
        """What an update computes its result from: this tensor; or, when the update is recorded,
        its previous value as a node of its own (a copy of the data, the same op and inputs), so
        that no node the update makes refers to this tensor, which then takes the result's place."""
        if not tracked:
            return self
        previous = Tensor.__new__(Tensor)
        previous._init(self.op, self.inputs, array_api.array(self.realize_cached_data(), dtype=None),
                       self.requires_grad)
        previous._epoch = self._epoch if self._epoch >= 0 else _EPOCH
        return previous

    def _inplace_ends(self, what: str, result: "Tensor", tracked: bool, cast: bool = True) -> "Tensor":
        """Make this tensor hold `result` (computed out of place, from `_inplace_source`), writing its
        own buffer so that every view of the buffer sees the change. When recorded, this tensor
        takes result's place in the graph."""
        if tuple(result.shape) != tuple(self.shape):
            raise RuntimeError(f"{what}: the result has shape {tuple(result.shape)}, this tensor {tuple(self.shape)}; "
                               "an in-place operation cannot change a tensor's shape")
        mine, theirs = array_api.dtype_name(self.dtype), array_api.dtype_name(result.dtype)
        if cast and mine != theirs:
            if _kind_rank(theirs) > _kind_rank(mine):
                raise TypeError(f"{what}: the result is {theirs}, which cannot be stored in this {mine} tensor "
                                "(PyTorch's rule too)")
            result = _ops.cast(result, mine) if tracked else Tensor.make_const(array_api.astype(
                result.realize_cached_data(), mine))
        data = self.realize_cached_data()
        new = result.realize_cached_data()
        if new is not data:
            array_api.setitem(data, (), new)  # the whole array, as numpy's x[()] = y
        _note_write(data)
        if tracked:
            self.op = result.op  # None when the result is a constant: this tensor becomes one too
            self.inputs = list(result.inputs)
            self.requires_grad = result.requires_grad
            self._epoch = _EPOCH
            self._consumed = False
        elif _RECORD_EVERY_OP and self.op is not None:
            self.op, self.inputs = None, []  # its node no longer computes what it holds (recording_every_op)
        return self

    def _binary_(self, what: str, fn, other) -> "Tensor":
        tracked = self._inplace_begins(what, other)
        return self._inplace_ends(what, fn(self._inplace_source(tracked), other), tracked)

    def add_(self, other, *, alpha=1) -> "Tensor":
        """self += alpha * other, in place (PyTorch's add_)."""
        return self._binary_("add_", lambda a, b: a + (b * alpha if alpha != 1 else b), other)

    def sub_(self, other, *, alpha=1) -> "Tensor":
        """self -= alpha * other, in place."""
        return self._binary_("sub_", lambda a, b: a - (b * alpha if alpha != 1 else b), other)

    def mul_(self, other) -> "Tensor":
        return self._binary_("mul_", operator.mul, other)

    def div_(self, other) -> "Tensor":
        return self._binary_("div_", operator.truediv, other)

    def __iadd__(self, other):
        return self._binary_("+=", operator.add, other)

    def __isub__(self, other):
        return self._binary_("-=", operator.sub, other)

    def __imul__(self, other):
        return self._binary_("*=", operator.mul, other)

    def __itruediv__(self, other):
        return self._binary_("/=", operator.truediv, other)

    def clamp_(self, min=None, max=None) -> "Tensor":  # noqa: A002  (PyTorch's names)
        """Clamp to [min, max] in place."""
        if min is None and max is None:
            raise ValueError("clamp_: give min, max or both")
        tracked = self._inplace_begins("clamp_")
        result = self._inplace_source(tracked)
        # where(), not maximum(): at a bound the gradient passes whole (PyTorch's clamp), and nan stays nan
        if min is not None:
            result = _ops.where(result < min, min, result)
        if max is not None:
            result = _ops.where(result > max, max, result)
        return self._inplace_ends("clamp_", result, tracked)

    def fill_(self, value) -> "Tensor":
        """Every element <- value, in place (outside the graph: the result is a constant)."""
        if python_scalar(value) is None:
            if isinstance(value, Tensor) and math.prod(value.shape) == 1:
                value = value.item()
            else:
                raise TypeError(f"fill_ expects a number, got {type(value).__name__}")
        tracked = self._inplace_begins("fill_")
        full = Tensor.make_const(array_api.full(self.shape, value, array_api.dtype_name(self.dtype), self.device))
        self._inplace_ends("fill_", full, False)
        if tracked:  # a constant now: no gradient flows to what it was computed from
            self.op, self.inputs, self.requires_grad = None, [], False
        return self

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def __setitem__(self, index, value) -> None:
        """x[index] = value, in place, for every index getitem takes (value broadcast, cast to x's
        dtype). Recorded for autograd like PyTorch's: the overwritten part gets no gradient."""
        tracked = self._inplace_begins("x[index] = value", value)
        self._inplace_ends("x[index] = value", _ops.setitem(self._inplace_source(tracked), index, value), tracked)

    def detach(self) -> "Tensor":
        """A new constant leaf sharing this tensor's data."""
        return Tensor.make_const(self.realize_cached_data())

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self.cached_data is not None:
            _check_requires_grad(True, self.cached_data.dtype)
        self._requires_grad = bool(value)

    # through realize_cached_data, which ndl.compile's guards watch: a step that reads a tensor's
    # shape depends on that tensor
    @property
    def shape(self) -> tuple:
        return self.realize_cached_data().shape

    @property
    def dtype(self) -> DType:
        """The dtype, as an `ndl.dtype` (`ndl.float32`, ...): a string equal to its name, and
        equal to the numpy dtype of that name (see needle.dtypes.dtype)."""
        return as_dtype(self.realize_cached_data().dtype)

    @property
    def device(self):
        return array_api.device_of(self.realize_cached_data())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self):
        """A numpy copy of the data."""
        return array_api.to_numpy(self.realize_cached_data())

    def item(self):
        arr = self.numpy()
        if arr.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return arr.item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        """The truth of a one-element tensor (`if loss > 0:`), as numpy and PyTorch; without
        this, Python would fall back to len() and call any non-empty tensor true. Reads the
        data, so inside `ndl.compile` it is a TraceError like `.numpy()`."""
        size = math.prod(self.shape)
        if size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} ({size} elements) is "
                               "ambiguous; use .any() / .all() on its numpy(), or compare one element")
        return bool(self.item())

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __dlpack__(self, *args, **kwargs):
        return self.realize_cached_data().__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.realize_cached_data().__dlpack_device__()

    @property
    def __cuda_array_interface__(self) -> dict:
        """The data's CUDA Array Interface, for a tensor on a GPU (AttributeError otherwise)."""
        return self.realize_cached_data().__cuda_array_interface__

    def __repr__(self) -> str:
        return "needle.Tensor(" + str(self.realize_cached_data()) + ")"

    def __str__(self) -> str:
        return self.realize_cached_data().__str__()

    # --- autograd ----------------------------------------------------------------
    def backward(self, out_grad: Optional["Tensor"] = None, *, accumulate: bool = False,
                 create_graph: bool = True) -> None:
        """Fill `.grad` of every tensor this one depends on that requires grad.

        The course's rule: each backward overwrites `.grad`. `accumulate=True` is PyTorch's
        rule instead: a leaf's gradient is added to the `.grad` it has (in place, once the
        leaf owns its gradient buffer), for gradient accumulation over micro-batches.

        The course's `.grad` of a leaf is a graph that can be differentiated again (gradients
        of gradients), so the backward pass records every op it runs. `create_graph=False`
        (PyTorch's default, here an opt-in) records nothing: the same values, `.grad`
        constants that no backward can go through, and less time per op (an eager step of
        the 2-layer LSTM language model of benchmarks/ 290 -> 233 ms). Raises TypeError for a
        non-bool create_graph.
        """
        if not isinstance(create_graph, bool):
            raise TypeError(f"backward: create_graph must be True or False, got {create_graph!r}")
        if not LEAF_GRAD_GRAPHS and not self.requires_grad:
            # (a compiled step recording) x.grad.sum().backward(): the .grad here is a value, where
            # eager's would be a graph to go through; eager does nothing for a tensor that needs no
            # gradient, which a replay cannot tell apart
            _refuse_second_order()
        data = self.realize_cached_data()
        if not array_api.is_floating(data.dtype):
            raise TypeError(f"backward() needs a floating-point tensor, got dtype {self.dtype}")
        if out_grad is None:
            out_grad = Tensor.make_const(array_api.full(data.shape, 1, data.dtype, array_api.device_of(data)))
        elif not isinstance(out_grad, Tensor):
            raise TypeError(f"out_grad must be a Tensor, got {type(out_grad).__name__}")
        elif out_grad.shape != self.shape:
            raise ValueError(f"backward: out_grad has shape {out_grad.shape}, the tensor has shape {self.shape}")
        elif out_grad.device != self.device:
            raise ValueError(f"backward: out_grad is on {out_grad.device}, the tensor is on {self.device}")
        if create_graph:
            compute_gradient_of_variables(self, out_grad, accumulate=bool(accumulate))
        else:
            with no_grad():
                compute_gradient_of_variables(self, out_grad, accumulate=bool(accumulate))

    def register_post_accumulate_grad_hook(self, hook) -> "RemovableHandle":
        """Call `hook(tensor)` each time a backward has set this leaf's `.grad` (PyTorch's hook of
        the same name; DistributedDataParallel starts its gradient averaging from it). Returns a
        handle whose remove() unregisters it."""
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook expects a callable, got {type(hook).__name__}")
        if self.op is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        hooks = self._grad_hooks
        if not isinstance(hooks, list):
            hooks = self._grad_hooks = []
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    # --- operators (the mapping to ops is part of the contract: see needle.ops.elementwise) ---
    def __add__(self, other):
        return _ops.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return _ops.subtract(self, other)

    def __rsub__(self, other):
        return _ops.reverse_subtract(self, other)

    def __mul__(self, other):
        return _ops.multiply(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _ops.divide(self, other)

    def __rtruediv__(self, other):
        return _ops.reverse_divide(self, other)

    def __pow__(self, other):
        return _ops.power(self, other)

    def __rpow__(self, other):
        return _ops.reverse_power(self, other)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __neg__(self):
        return _ops.negate(self)

    # comparisons give constant bool tensors; == and != keep identity semantics (tensors are dict keys)
    def __lt__(self, other):
        return _ops.less(self, other)

    def __le__(self, other):
        return _ops.less_equal(self, other)

    def __gt__(self, other):
        return _ops.greater(self, other)

    def __ge__(self, other):
        return _ops.greater_equal(self, other)

    def eq(self, other) -> "Tensor":
        return _ops.equal(self, other)

    def ne(self, other) -> "Tensor":
        return _ops.not_equal(self, other)

    def __getitem__(self, index) -> "Tensor":
        return _ops.getitem(self, index)

    # --- methods -------------------------------------------------------------------
    def matmul(self, other):
        return _ops.matmul(self, other)

    # reductions take the course's axes=/keepdims= or PyTorch's dim=/keepdim= (one or the other)
    def sum(self, axes=None, keepdims: bool = False, *, dim=None, keepdim=None):
        if dim is not None or keepdim is not None:
            axes, keepdims = _dim_alias("sum", axes, keepdims, dim, keepdim)
        return _ops.Summation(axes, bool(keepdims))(self)

    def mean(self, axes=None, keepdims: bool = False, *, dim=None, keepdim=None):
        axes, keepdims = _dim_alias("mean", axes, keepdims, dim, keepdim)
        return _ops.mean(self, axes, keepdims=keepdims)

    def max(self, dim_or_axes=None, keepdims: bool = False, *, axes=None, dim=None, keepdim=None):
        """The maximum. Over every axis (no argument) or over `axes=` (an int or a tuple, the course's
        form): the values. Over one axis given positionally or as `dim=` (`x.max(1)`, PyTorch's
        torch.max(x, dim)): a (values, indices) named tuple, indices int64 (the first maximum).
        `x.max(other)` with a tensor: the elementwise maximum, as torch.max(x, other)."""
        return self._extreme("max", _ops.max, _ops.argmax, dim_or_axes, keepdims, axes, dim, keepdim)

    def argmax(self, axis=None, keepdims: bool = False, *, dim=None, keepdim=None):
        axis, keepdims = _dim_alias("argmax", axis, keepdims, dim, keepdim)
        return _ops.argmax(self, axis, keepdims=keepdims)

    def logsumexp(self, dim=None, keepdim: bool = False):
        """log(sum(exp(x))) over `dim` (PyTorch's torch.logsumexp(x, dim, keepdim))."""
        out = _ops.logsumexp(self, dim)
        if keepdim:
            reduced = range(self.ndim) if dim is None else [d % self.ndim for d in
                                                            (dim if isinstance(dim, (tuple, list)) else (dim,))]
            out = out.reshape(tuple(1 if i in reduced else n for i, n in enumerate(self.shape)))
        return out

    def softmax(self, dim: int = -1):
        return _ops.softmax(self, dim)

    def log_softmax(self, dim: int = -1):
        return _ops.logsoftmax(self, dim)

    # --- PyTorch habits: sizes, casts, devices ------------------------------------------
    def size(self, dim: Optional[int] = None):
        """The shape, or its entry `dim` (PyTorch's Tensor.size)."""
        if dim is None:
            return self.shape
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"size: dim {dim} is out of range for a tensor of shape {self.shape}")
        return self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def float(self) -> "Tensor":
        return _ops.cast(self, "float32")

    def double(self) -> "Tensor":
        return _ops.cast(self, "float64")

    def long(self) -> "Tensor":
        return _ops.cast(self, "int64")

    def bool(self) -> "Tensor":
        return _ops.cast(self, "bool")

    def to(self, *args, device=None, dtype=None, non_blocking: builtins.bool = False, copy: builtins.bool = False,
           memory_format=None) -> "Tensor":
        """This tensor on another device and/or with another dtype (PyTorch's Tensor.to): each
        positional argument is a device (or its name, "cuda:0" too), a dtype, or a tensor whose
        device and dtype to take. A cast stays in the graph (its gradient casts back); a move
        gives a new leaf (with the same requires_grad). Itself when nothing changes, unless
        copy=True. (non_blocking and memory_format are accepted and change nothing.)"""
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, Device) or hasattr(arg, "enabled") or _is_device_name(arg):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None:
            out = _ops.cast(out, dtype)
        device = as_device(device)
        if device is not None and device != out.device:
            moved = Tensor(out.detach(), device=device, requires_grad=False)
            moved.requires_grad = out.requires_grad
            out = moved
        if copy and out is self:
            out = _ops.clone(self)
        return out

    def requires_grad_(self, requires_grad: builtins.bool = True) -> "Tensor":
        """Set requires_grad in place and return self (PyTorch's)."""
        self.requires_grad = requires_grad
        return self

    def t(self) -> "Tensor":
        """The transpose of a tensor of at most 2 dimensions (PyTorch's Tensor.t)."""
        return self.T

    def broadcast_to(self, shape):
        return _ops.broadcast_to(self, shape)

    def reshape(self, *shape):
        return _ops.reshape(self, _shape_arg(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        return _ops.flatten(self, start_dim, end_dim)

    def transpose(self, axes=None, *more):
        """Swap two axes (the last two when `axes` is None); `t.transpose(0, 1)` also works."""
        if more:
            axes = (axes,) + more
        return _ops.transpose(self, axes)

    def permute(self, *axes):
        return _ops.permute(self, _shape_arg(axes))

    @property
    def T(self):
        if self.ndim > 2:
            raise ValueError(f".T is for tensors of at most 2 dimensions, got shape {self.shape}; use permute")
        return self if self.ndim < 2 else _ops.transpose(self)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def tanh(self):
        return _ops.tanh(self)

    def relu(self):
        return _ops.relu(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def sqrt(self):
        return _ops.sqrt(self)

    # --- more of PyTorch's Tensor methods (each the op function of the same name) -----------------
    def log1p(self) -> "Tensor":
        return _ops.log1p(self)

    def abs(self) -> "Tensor":
        """|x| (PyTorch's abs; the gradient is g * sign(x), 0 at 0)."""
        return _ops.absolute(self)

    def log10(self) -> "Tensor":
        return _ops.log10(self)

    def sin(self) -> "Tensor":
        return _ops.sin(self)

    def cos(self) -> "Tensor":
        return _ops.cos(self)

    def pow(self, exponent) -> "Tensor":
        """self ** exponent (a number or a tensor, broadcast)."""
        return _ops.power(self, exponent)

    def clamp(self, min=None, max=None) -> "Tensor":  # noqa: A002  (PyTorch's names)
        """Limited to [min, max] (PyTorch's clamp; see ops.clamp)."""
        return _ops.clamp(self, min, max)

    clip = clamp

    def masked_fill(self, mask: "Tensor", value) -> "Tensor":
        """value where the bool mask is True (PyTorch's masked_fill; see ops.masked_fill). Note that
        `mask == 0` is identity in needle (the course's rule): build masks with `.eq(0)`, `<`, ..."""
        return _ops.masked_fill(self, mask, value)

    def masked_fill_(self, mask: "Tensor", value) -> "Tensor":
        """masked_fill in place (PyTorch's masked_fill_); returns self."""
        tracked = self._inplace_begins("masked_fill_", value)
        source = self._inplace_source(tracked)
        return self._inplace_ends("masked_fill_", _ops.masked_fill(source, mask, value), tracked)

    def tril(self, diagonal: int = 0) -> "Tensor":
        return _ops.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> "Tensor":
        return _ops.triu(self, diagonal)

    def min(self, dim_or_axes=None, keepdims: builtins.bool = False, *, axes=None, dim=None, keepdim=None):
        """The minimum, in max's forms: values over every axis or over `axes=`; (values, indices)
        over one positional or `dim=` axis (torch.min(x, dim)); with a tensor, the elementwise minimum."""
        return self._extreme("min", _ops.minimum_of, _ops.argmin, dim_or_axes, keepdims, axes, dim, keepdim)

    def _extreme(self, what: str, reduce, arg, dim_or_axes, keepdims, axes, dim, keepdim):
        if isinstance(dim_or_axes, Tensor):
            if axes is not None or dim is not None:
                raise TypeError(f"{what}(other): the elementwise form takes no axes")
            return _ops.maximum(self, dim_or_axes) if what == "max" else -_ops.maximum(-self, -dim_or_axes)
        if dim_or_axes is not None:
            if axes is not None or dim is not None:
                raise TypeError(f"{what}: the axis is given twice (positionally and as axes= or dim=)")
            if isinstance(dim_or_axes, int) and not isinstance(dim_or_axes, builtins.bool):
                dim = dim_or_axes
            else:
                axes = dim_or_axes
        if keepdim is not None:
            keepdims = keepdim
        if dim is None:
            return reduce(self, axes, keepdims=bool(keepdims))
        if axes is not None:
            raise TypeError(f"{what}: give axes= or dim=, not both")
        if not isinstance(dim, int) or isinstance(dim, builtins.bool):
            raise TypeError(f"{what}: dim= is one axis (an int), got {dim!r}; use axes= for several")
        return MaxResult(reduce(self, (dim,), keepdims=bool(keepdims)), arg(self, dim, keepdims=bool(keepdims)))

    def argmin(self, axis=None, keepdims: builtins.bool = False, *, dim=None, keepdim=None):
        axis, keepdims = _dim_alias("argmin", axis, keepdims, dim, keepdim)
        return _ops.argmin(self, axis, keepdims=keepdims)

    def var(self, dim=None, unbiased: Optional[builtins.bool] = None, keepdim: builtins.bool = False, *,
            correction=None):
        """The variance over `dim` (None: all) with Bessel's correction unless unbiased=False or
        correction says otherwise (PyTorch's var; see ops.var)."""
        dim, correction = _variance_args("var", dim, unbiased, correction)
        return _ops.var(self, dim, keepdim, correction=correction)

    def std(self, dim=None, unbiased: Optional[builtins.bool] = None, keepdim: builtins.bool = False, *,
            correction=None):
        """The standard deviation: sqrt of var with the same arguments (PyTorch's std)."""
        dim, correction = _variance_args("std", dim, unbiased, correction)
        return _ops.std(self, dim, keepdim, correction=correction)

    def all(self, dim=None, keepdim: builtins.bool = False) -> "Tensor":
        """Whether every element (over dim) is nonzero: a bool tensor (PyTorch's all)."""
        return _ops.all_of(self, dim, keepdim)

    def any(self, dim=None, keepdim: builtins.bool = False) -> "Tensor":
        """Whether some element (over dim) is nonzero: a bool tensor (PyTorch's any)."""
        return _ops.any_of(self, dim, keepdim)

    def topk(self, k: int, dim: int = -1, largest: builtins.bool = True, sorted: builtins.bool = True):  # noqa: A002
        return _ops.topk(self, k, dim, largest, sorted)

    def sort(self, dim: int = -1, descending: builtins.bool = False):
        return _ops.sort(self, dim, descending)

    def argsort(self, dim: int = -1, descending: builtins.bool = False) -> "Tensor":
        return _ops.argsort(self, dim, descending)

    def gather(self, dim: int, index: "Tensor") -> "Tensor":
        return _ops.gather(self, dim, index)

    def roll(self, shifts, dims=None) -> "Tensor":
        return _ops.roll(self, shifts, dims)

    def histc(self, bins: int = 100, min=0, max=0) -> "Tensor":  # noqa: A002
        return _ops.histc(self, bins, min, max)

    # --- shapes, views and copies (PyTorch's) --------------------------------------------------------
    def split(self, split_size_or_sections, dim: int = 0) -> tuple:
        """PyTorch's Tensor.split: pieces of `split_size_or_sections` elements along dim, or of
        each size in a list (see ops.split_sections). The function ndl.split is the course's
        unbind; this method is PyTorch's chunking."""
        return _ops.split_sections(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple:
        return _ops.chunk(self, chunks, dim)

    def unbind(self, dim: int = 0) -> tuple:
        return _ops.unbind(self, dim)

    def unsqueeze(self, dim: int) -> "Tensor":
        return _ops.unsqueeze(self, dim)

    def squeeze(self, dim=None) -> "Tensor":
        return _ops.squeeze(self, dim)

    def expand(self, *sizes) -> "Tensor":
        """Broadcast to `sizes` (-1 keeps an axis; PyTorch's expand)."""
        return _ops.expand(self, *sizes)

    def expand_as(self, other: "Tensor") -> "Tensor":
        return _ops.expand(self, tuple(other.shape))

    def view_as(self, other: "Tensor") -> "Tensor":
        return self.reshape(tuple(other.shape))

    reshape_as = view_as

    def narrow(self, dim: int, start: int, length: int) -> "Tensor":
        return _ops.narrow(self, dim, start, length)

    def clone(self, *, memory_format=None) -> "Tensor":
        """A differentiable copy with a buffer of its own (PyTorch's clone)."""
        return _ops.clone(self)

    def contiguous(self, memory_format=None) -> "Tensor":
        """Itself when its data is laid out compactly in row-major order, else a differentiable
        compact copy (PyTorch's contiguous). Needle's ops read strided data as it is, so this is
        only needed where PyTorch code asks for it."""
        return self if self.is_contiguous() else _ops.clone(self)

    def is_contiguous(self, memory_format=None) -> builtins.bool:
        data = self.realize_cached_data()
        strides = array_api.element_strides(data)
        expected, step = [], 1
        for n in reversed(self.shape):
            expected.append(step)
            step *= n
        return all(n == 1 or a == b for n, a, b in zip(self.shape, strides, reversed(expected)))

    def nelement(self) -> int:
        return self.numel()

    def tolist(self):
        """The data as (nested) Python lists of numbers; a 0-d tensor gives a number."""
        return self.numpy().tolist()

    def __index__(self) -> int:
        """A one-element int64 (or bool) tensor as a Python int, so it can index a list or make a
        range (PyTorch's). TypeError for any other tensor."""
        if array_api.dtype_name(self.dtype) not in ("int64", "bool") or math.prod(self.shape) != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to an index; this one has "
                            f"dtype {self.dtype} and shape {self.shape}")
        return int(self.item())

    def is_floating_point(self) -> builtins.bool:
        return array_api.is_floating(self.dtype)

    def retain_grad(self) -> None:
        """PyTorch's retain_grad. Needle keeps the gradient of every tensor that requires grad
        after backward() (leaves and intermediate results alike, the course's rule), so this
        only marks the tensor: `retains_grad` becomes True for a non-leaf."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        self._retains_grad = True

    @property
    def retains_grad(self) -> builtins.bool:
        """True for a non-leaf on which retain_grad() was called (PyTorch's attribute); its .grad
        is filled by backward() either way."""
        return self.op is not None and self._retains_grad

    # --- new tensors like this one (PyTorch's new_*) -------------------------------------------------
    def _new(self, size, value, dtype, device, requires_grad: builtins.bool) -> "Tensor":
        dtype = array_api.dtype_name(self.dtype if dtype is None else dtype)
        device = self.device if device is None else as_device(device)
        data = array_api.full(_shape_arg(tuple(size)), value, dtype, device)
        out = Tensor.make_const(data)
        if requires_grad:
            out.requires_grad = True
        return out

    def new_zeros(self, *size, dtype=None, device=None, requires_grad: builtins.bool = False) -> "Tensor":
        """Zeros of `size`, with this tensor's dtype and device unless given (PyTorch's new_zeros)."""
        return self._new(size, 0, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad: builtins.bool = False) -> "Tensor":
        return self._new(size, 1, dtype, device, requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad: builtins.bool = False) -> "Tensor":
        """A tensor of `size` (filled with zeros: needle has no uninitialised memory to hand out)."""
        return self._new(size, 0, dtype, device, requires_grad)

    def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad: builtins.bool = False) -> "Tensor":
        if python_scalar(fill_value) is None:
            raise TypeError(f"new_full: fill_value must be a number, got {type(fill_value).__name__}")
        return self._new(size, python_scalar(fill_value), dtype, device, requires_grad)

    def new_tensor(self, data, *, dtype=None, device=None, requires_grad: builtins.bool = False) -> "Tensor":
        """A copy of `data` with this tensor's dtype and device unless given (PyTorch's new_tensor);
        a tensor given as data is copied and detached."""
        dtype = array_api.dtype_name(self.dtype if dtype is None else dtype)
        device = self.device if device is None else as_device(device)
        if isinstance(data, Tensor):
            data = array_api.array(data.realize_cached_data(), dtype=None)
        return Tensor(data, device=device, dtype=dtype, requires_grad=requires_grad)

    # --- dtypes and devices by PyTorch's names -------------------------------------------------------
    def type(self, dtype=None, non_blocking: builtins.bool = False):
        """Without an argument, the type's name as PyTorch spells it ("torch.FloatTensor",
        "torch.LongTensor", "torch.cuda.FloatTensor", ...), so code that compares it works.
        With a dtype (ndl.float64, "float64") or such a name ("torch.DoubleTensor"), the tensor
        cast to it (differentiable, like .to(dtype))."""
        if dtype is None:
            prefix = "torch.cuda." if getattr(self.device, "name", "") == "cuda" else "torch."
            return prefix + _TENSOR_TYPE_NAMES[array_api.dtype_name(self.dtype)]
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            name = dtype.rpartition(".")[2]
            if name not in _TENSOR_TYPES:
                raise TypeError(f"type: unknown tensor type {dtype!r}; known: {', '.join(sorted(_TENSOR_TYPES))}")
            dtype = _TENSOR_TYPES[name]
        return _ops.cast(self, dtype)

    def cpu(self) -> "Tensor":
        """This tensor on the cpu device (itself when it is there)."""
        return self.to(cpu())

    def cuda(self, device=None, non_blocking: builtins.bool = False) -> "Tensor":
        """This tensor on the cuda device (RuntimeError, from the device, where there is none)."""
        return self.to(as_device("cuda" if device is None else device if not isinstance(device, int)
                                 else f"cuda:{device}"))


class MaxResult(tuple):
    """(values, indices) of `Tensor.max(dim=...)`/`min`, like torch.return_types.max; also sort's and
    topk's (ops.SortResult)."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


_TENSOR_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor", "bool": "BoolTensor"}
# PyTorch's tensor type names and the storage dtype each gets (every integer type is int64, half float32)
_TENSOR_TYPES = {**{name: dtype for dtype, name in _TENSOR_TYPE_NAMES.items()}, "IntTensor": "int64",
                 "ShortTensor": "int64", "ByteTensor": "int64", "CharTensor": "int64", "HalfTensor": "float32"}


def _variance_args(what: str, dim, unbiased, correction) -> tuple:
    """(dim, correction) from PyTorch's spellings: var(dim, unbiased, keepdim), var(unbiased) and
    var(dim, correction=...)."""
    if isinstance(dim, bool):  # x.var(False): the old positional unbiased
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{what}: give unbiased or correction, not both")
    if correction is None:
        correction = 0 if unbiased is False else 1
    return dim, correction


def _is_device_name(arg) -> bool:
    """Whether `arg` is a device's name (PyTorch's "cuda:0" too) rather than a dtype's."""
    if not isinstance(arg, str) or isinstance(arg, DType):
        return False
    name = arg.partition(":")[0]
    return name in registered_devices() or name in ("cpu", "cuda", "cpu_numpy")


def _dim_alias(what: str, axes, keepdims: bool, dim, keepdim):
    """(axes, keepdims) from the course's names or PyTorch's; TypeError when both are given."""
    if dim is not None:
        if axes is not None:
            raise TypeError(f"{what}: give axes= or dim=, not both")
        axes = dim
    if keepdim is not None:
        keepdims = keepdim
    return axes, bool(keepdims)


def _shape_arg(shape: tuple) -> tuple:
    """Accept both f((2, 3)) and f(2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


# --- graph traversal and backward --------------------------------------------------

def find_topo_sort(node_list: Iterable[Value]) -> List[Value]:
    """Post-order DFS from each node (inputs left to right): inputs come before users."""
    return _topo_sort(node_list, lambda node: node.inputs)


def _topo_sort(node_list: Iterable[Value], children) -> List[Value]:
    visited = set()
    order = []
    for root in node_list:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(children(root)))]
        while stack:
            node, pending = stack[-1]
            for child in pending:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(children(child))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


class RemovableHandle:
    """What registering a hook returns: remove() unregisters it (PyTorch's handle)."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


_CALLBACKS: Optional[list] = None  # callbacks queued during the backward pass that is running


def queue_callback(fn) -> None:
    """Run `fn()` once the backward pass that is running now has finished (PyTorch's
    queue_callback of its execution engine): how a hook defers work until every gradient is in."""
    if _CALLBACKS is None:
        raise RuntimeError("queue_callback can only be called during a backward pass (from a gradient hook)")
    _CALLBACKS.append(fn)


def _accumulate(leaf: "Tensor", grad: "Tensor") -> None:
    """leaf.grad += grad (PyTorch's accumulation). The first time a leaf's gradient is accumulated
    it gets a buffer of its own (a backward may hand the same gradient to several leaves);
    later ones add into that buffer in place, so what holds .grad (a compiled step) sees it."""
    old = leaf.grad
    grad = grad.detach()
    if old is None:
        own = Tensor.make_const(array_api.array(grad.realize_cached_data(), dtype=None))
    elif getattr(old, "_owns_grad", False) and old.shape == grad.shape and old.dtype == grad.dtype:
        old.copy_(old.detach() + grad)
        return
    else:
        if tuple(old.shape) != tuple(grad.shape):
            raise RuntimeError(f"backward(accumulate=True): .grad has shape {tuple(old.shape)}, the new gradient "
                               f"{tuple(grad.shape)}")
        own = (old.detach() + grad).detach()
    own._owns_grad = True
    leaf.grad = own


def _refuse_second_order() -> None:
    """needle.compile's TraceError (RECORDING_ERROR) for a compiled step that differentiates a
    gradient again: it records the backward pass's arrays, and .grad inside it is a value, not a
    graph, so a replay would silently leave out the second-order terms eager gives."""
    raise RECORDING_ERROR("needle.compile: this step differentiates a gradient (a .grad used in what a later "
                          "backward() goes through: a gradient penalty, a Hessian-vector product), or calls backward() "
                          "on a tensor that needs no gradient; a compiled step records first-order gradients only. "
                          "Run this step eagerly (without ndl.compile).")


def compute_gradient_of_variables(output_tensor: Value, out_grad: Value, accumulate: bool = False) -> None:
    """Set `.grad` on every node `output_tensor` depends on that requires grad, in reverse
    topological order. Nodes that do not require grad (a data batch, constants) are not
    visited, and ops are asked only for what flows into nodes that do.

    A leaf that requires grad gets the differentiable gradient graph as .grad (so it
    can be backpropagated again); every other node keeps the gradient's value only.
    The graph refers back to the forward nodes, so storing it on them would make
    reference cycles that hold each step's memory until Python's cycle collector
    happens to run.
    """
    global _CALLBACKS
    outer, _CALLBACKS = _CALLBACKS, []
    # Python's cycle collector is paused for the walk (and turned back on after, if it was on):
    # the walk makes thousands of small objects that all live until it ends, so each of the
    # collector's passes during it (dozens per step, and a full one over every object every few
    # steps) traverses them and frees nothing. Measured on the eager lstm_lm step of benchmarks/:
    # 46 passes and 17 ms of collection per step, none of it freeing anything; 242 -> 229 ms.
    # Cycles made meanwhile wait for the next pass after the walk.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        _backward(output_tensor, out_grad, accumulate)
        while _CALLBACKS:  # a callback may queue another
            _CALLBACKS.pop(0)()
    finally:
        _CALLBACKS = outer
        if collecting:
            gc.enable()


def _grad_topo_sort(roots: Iterable[Value], stop: Iterable[Value] = ()) -> List[Value]:
    """_topo_sort(roots) over the inputs that require grad (the same order), written out: it
    runs on every backward. Nodes in `stop` are neither listed nor gone through (vjp's inputs)."""
    visited = set(stop)
    order = []
    for root in roots:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root.inputs))]
        while stack:
            node, pending = stack[-1]
            for child in pending:
                if child._requires_grad and child not in visited:
                    visited.add(child)
                    stack.append((child, iter(child.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _backward(output_tensor: Value, out_grad: Value, accumulate: bool) -> None:
    partial_adjoints = {output_tensor: [out_grad]}
    order = _grad_topo_sort((output_tensor,))
    if not LEAF_GRAD_GRAPHS:  # a compiled step recording: its .grad values are first-order only
        for node in order:
            if any(getattr(x, "_first_order_grad", False) for x in node.inputs):
                _refuse_second_order()
    for node in reversed(order):
        partials = partial_adjoints.pop(node, None)
        if partials is None:
            continue
        grad = partials[0] if len(partials) == 1 else sum_node_list(partials)
        op = node.op
        if op is None:
            if accumulate and node.requires_grad:
                # only Tensors are leaves that require grad
                _accumulate(cast(Tensor, node), cast(Tensor, grad))
            elif node.requires_grad and LEAF_GRAD_GRAPHS:
                node.grad = grad
            else:
                node.grad = grad.detach()
                if node.requires_grad:  # (a compiled step recording) a gradient that eager would keep differentiable
                    node.grad._first_order_grad = True
            for hook in node._grad_hooks:
                hook(node)
            continue
        if type(grad) is Tensor:  # grad.detach(), without its frames (every node of every backward)
            detached = Tensor.__new__(Tensor)
            detached._init(None, [], grad.realize_cached_data(), False)
            node.grad = detached
        else:
            node.grad = grad.detach()
        if node._epoch >= 0 and node._epoch != _EPOCH:
            _check_unwritten(node)
        _send_partials(node, grad, partial_adjoints)


class Partials(tuple):
    """Several partial adjoints of one input, which an op's gradient may return in that input's
    place: the walk files them one after another, as if separate consumers had sent them, so they
    are added to the input's other partials in that order. An op that does the work of a Tensor-op
    composite in which the input has several consumers (LayerNorm: x - mean and the mean's sum)
    gives its input the adjoints the composite would, in the composite's order, and so the same
    sum bit for bit."""


def _send_partials(node: Value, grad: Value, partial_adjoints: dict) -> None:
    """Ask node's op for the partial adjoints of its inputs (given the node's adjoint `grad`) and
    file each under its input in partial_adjoints (input -> list of partial adjoints); an op's
    Partials for an input are filed one by one."""
    partial_grads = cast(Op, node.op).gradient(grad, node)
    if not isinstance(partial_grads, tuple):
        partial_grads = tuple(partial_grads) if isinstance(partial_grads, list) else (partial_grads,)
    for inp, entry in zip(node.inputs, partial_grads):
        if entry is None or not inp._requires_grad:
            continue
        for partial in (entry if type(entry) is Partials else (entry,)):
            if isinstance(partial, Tensor) and isinstance(inp, Tensor) and \
                    _data(partial).dtype != _data(inp).dtype:
                # a float32 input of a float64 result gets a float32 gradient, as in PyTorch
                partial = _ops.cast(partial, inp.dtype)
            found = partial_adjoints.get(inp)
            if found is None:
                partial_adjoints[inp] = [partial]
            else:
                found.append(partial)


def vjp(function: Callable[..., Any], inputs: Sequence[Value],
        cotangents: Sequence[Optional[Value]]) -> Tuple[Optional[Value], ...]:
    """The adjoints of `inputs` for `function(*inputs)` (a Tensor or a tuple of them, None for
    an output that is zero), given
    the adjoints of its outputs (`cotangents`, one per output, None for zero): backward's walk
    over the graph that `function` builds, stopping at `inputs`, setting no `.grad`. None for an
    input no adjoint reaches. An input given more than once gets its whole adjoint at its first
    position and None at the others (torch.autograd.grad repeats it at each; here the results are
    partial adjoints that a caller may add up per input, as autograd does with an op's, and each
    must count once). In grad mode the adjoints are graph nodes (differentiable again).
    TypeError unless inputs and cotangents are tuples or lists; ValueError for a number of
    cotangents other than the number of outputs.

    For an op whose gradient is written at the array level for speed (BatchNormGrad): its own
    gradient is that of the Tensor-op composite it computes, `function`, so the fast op and the
    reference one cannot disagree on a second derivative. `function` must reach every Tensor it
    differentiates through `inputs` (a parameter it closes over gets no adjoint).
    """
    if not isinstance(inputs, (tuple, list)) or not isinstance(cotangents, (tuple, list)):
        raise TypeError(f"vjp: inputs and cotangents must be tuples or lists (cotangents: one per output), got "
                        f"{type(inputs).__name__} and {type(cotangents).__name__}")
    with enable_grad():
        outputs = function(*inputs)
    if not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    if len(outputs) != len(cotangents):
        raise ValueError(f"vjp: {len(cotangents)} cotangents for {len(outputs)} outputs")
    position: dict = {}
    for k, x in enumerate(inputs):
        position.setdefault(x, k)
    partial_adjoints: dict = {}
    for out, cotangent in zip(outputs, cotangents):
        if cotangent is not None and out is not None and out._requires_grad:
            partial_adjoints.setdefault(out, []).append(cotangent)
    # the nodes between the outputs and the inputs, in reverse topological order
    order = _grad_topo_sort([out for out in outputs if out is not None and out._requires_grad], position)
    for node in reversed(order):
        partials = partial_adjoints.pop(node, None)
        if partials is not None and node.op is not None:
            _send_partials(node, partials[0] if len(partials) == 1 else sum_node_list(partials), partial_adjoints)
    totals: dict = {}
    for x in position:
        partials = partial_adjoints.get(x)
        if partials:
            totals[x] = partials[0] if len(partials) == 1 else sum_node_list(partials)
    # an input given twice: its whole adjoint at its first position only, so that summing the
    # adjoints per input (autograd does so with an op's partial adjoints) counts it once
    return tuple(totals.get(x) if position[x] == k else None for k, x in enumerate(inputs))


def _data(value: Value):
    """value's data: its cached data, computed first for a lazy node."""
    data = value.cached_data
    return data if data is not None else value.realize_cached_data()


def sum_node_list(node_list: List[Value]) -> Value:
    """Sum of the partial adjoints: a left fold with + (three or more tensors of one shape and dtype
    as one AddN node, the fold's bits); tuples are added elementwise in one go."""
    if isinstance(node_list[0], TensorTuple):
        return _ops.add_tuples(cast(List[TensorTuple], node_list))
    first = cast(Tensor, node_list[0])
    if len(node_list) > 2 and all(type(x) is Tensor and x.shape == first.shape and x.dtype == first.dtype
                                  for x in node_list):
        return _ops.add_n(node_list)
    return functools.reduce(operator.add, node_list)


# The ops import this module for Tensor and Op, so the reference goes the other way at
# the end: by now every name the ops need from here exists.
from . import ops as _ops  # noqa: E402

# The commonest operators call their op function directly: Tensor.__add__ above calls
# _ops.add(self, other), which is what this does without the method's own frame (every + of
# every step). The methods above stay for the reader and the type checker.
for _name, _function in (("__add__", _ops.add), ("__radd__", _ops.add), ("__mul__", _ops.multiply),
                         ("__rmul__", _ops.multiply), ("__sub__", _ops.subtract), ("__truediv__", _ops.divide)):
    setattr(Tensor, _name, _function)
