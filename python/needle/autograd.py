"""Reverse-mode automatic differentiation: Value, Tensor, TensorTuple and Op.

Every Tensor records the op that made it and its inputs; `backward()` walks
that graph in reverse topological order and asks each op for the gradient of
its inputs. Gradients are themselves built from Tensor ops, so a gradient can
be differentiated again.
"""
from __future__ import annotations

import functools
import operator
from typing import Iterable, List, Optional, Tuple, Union

import numpy

from .backend_selection import BACKEND, Device, NDArray, array_api, cpu, default_device  # noqa: F401

LAZY_MODE = False
TENSOR_COUNTER = 0
_GRAD_ENABLED = True


# --- grad mode --------------------------------------------------------------------

def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = None

    def __enter__(self):
        global _GRAD_ENABLED
        self.prev = _GRAD_ENABLED
        _GRAD_ENABLED = self.mode
        return self

    def __exit__(self, *exc) -> bool:
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


# --- ops ------------------------------------------------------------------------------

class Op:
    """An operator: `compute` on backend arrays, `gradient` on Tensors."""

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
        """Partial adjoint for each input, given the adjoint of the output."""
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
        return Tensor.make_from_op(self, args)


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
    requires_grad: bool

    def realize_cached_data(self):
        if self.cached_data is None:
            self.cached_data = _compute(self.op, self.inputs)
        return self.cached_data

    def is_leaf(self) -> bool:
        return self.op is None

    def __del__(self):
        global TENSOR_COUNTER
        TENSOR_COUNTER -= 1

    def _init(self, op, inputs, *, num_outputs: int = 1, cached_data=None, requires_grad=None):
        global TENSOR_COUNTER
        TENSOR_COUNTER += 1
        if requires_grad is None:
            requires_grad = _GRAD_ENABLED and any(x.requires_grad for x in inputs)
        self.op = op
        self.inputs = inputs
        self.num_outputs = num_outputs
        self.cached_data = cached_data
        self.requires_grad = requires_grad
        self.grad = None

    @classmethod
    def make_const(cls, data, *, requires_grad: bool = False):
        if isinstance(data, Value):
            data = data.realize_cached_data()
        value = cls.__new__(cls)
        value._init(None, [], cached_data=data, requires_grad=requires_grad)
        return value

    @classmethod
    def make_from_op(cls, op: Op, inputs: List["Value"]):
        op.check(*inputs)
        requires_grad = _GRAD_ENABLED and any(x.requires_grad for x in inputs)
        if LAZY_MODE or not op.eager:
            value = cls.__new__(cls)
            value._init(op, list(inputs), requires_grad=requires_grad)
            return value
        if not requires_grad:
            # a result that needs no gradient is a constant leaf: no graph node is kept
            return cls.make_const(_compute(op, inputs))
        value = cls.__new__(cls)
        value._init(op, list(inputs), cached_data=_compute(op, inputs), requires_grad=True)
        return value


def _compute(op: Op, inputs: List[Value]):
    data = op.compute(*[x.realize_cached_data() for x in inputs])
    if isinstance(data, numpy.generic):  # np mode: numpy returns scalars for 0-d results
        data = numpy.asarray(data)
    return data


class TensorTuple(Value):
    """A tuple of tensors produced or consumed by one op (no nesting)."""

    def __len__(self) -> int:
        return len(self.realize_cached_data())

    def __getitem__(self, index: int) -> "Tensor":
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"TensorTuple index {index} out of range for length {n}")
        return _ops().tuple_get_item(self, index % n)

    def __iter__(self):
        return iter(self.tuple())

    def tuple(self) -> tuple:
        return tuple(self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return "needle.TensorTuple" + str(self.tuple())

    def __str__(self) -> str:
        return self.__repr__()

    def __add__(self, other: "TensorTuple") -> "TensorTuple":
        return _ops().add_tuples([self, other])

    def detach(self) -> "TensorTuple":
        return TensorTuple.make_const(self.realize_cached_data())


class Tensor(Value):
    """An n-dimensional array that records how it was computed."""

    grad: "Tensor"

    # numpy scalars and arrays on the left of an operator defer to our reflected
    # operators (np.float64(2) * t is MulScalar, not an object array of Tensors)
    __array_ufunc__ = None

    def __init__(self, array, *, device: Optional[Device] = None, dtype=None, requires_grad: bool = True, **kwargs):
        if isinstance(array, Tensor):
            device = array.device if device is None else device
            dtype = array.dtype if dtype is None else dtype
            if device == array.device and _dtype_name(dtype) == _dtype_name(array.dtype):
                cached_data = array.realize_cached_data()
            else:
                cached_data = Tensor._array_from_numpy(array.numpy(), device=device, dtype=dtype)
        else:
            device = default_device() if device is None else device
            cached_data = Tensor._array_from_numpy(array, device=device, dtype=dtype)
        self._init(None, [], cached_data=cached_data, requires_grad=requires_grad)

    @staticmethod
    def _array_from_numpy(numpy_array, device, dtype):
        if BACKEND == "np":
            if not isinstance(device, Device):
                raise TypeError(f"expected a numpy-mode device, got {device!r}")
            return numpy.array(numpy_array, dtype=dtype)
        return array_api.array(numpy_array, device=device, dtype=dtype)

    # --- data access ---------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor") -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data must be set to a Tensor, got {type(value).__name__}")
        if _dtype_name(value.dtype) != _dtype_name(self.dtype):
            raise TypeError(f"Tensor.data: dtype {value.dtype} does not match {self.dtype}")
        self.cached_data = value.realize_cached_data()

    def detach(self) -> "Tensor":
        """A new constant leaf sharing this tensor's data."""
        return Tensor.make_const(self.realize_cached_data())

    @property
    def shape(self) -> tuple:
        return self.realize_cached_data().shape

    @property
    def dtype(self):
        return self.realize_cached_data().dtype

    @property
    def device(self):
        if BACKEND == "np":
            return cpu()
        return self.realize_cached_data().device

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self) -> numpy.ndarray:
        data = self.realize_cached_data()
        if BACKEND == "np":
            return numpy.array(data)
        return data.numpy()

    def item(self) -> float:
        arr = self.numpy()
        if arr.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return arr.item()

    def __float__(self) -> float:
        return float(self.item())

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __dlpack__(self, *args, **kwargs):
        return _host_view(self.realize_cached_data()).__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return _host_view(self.realize_cached_data()).__dlpack_device__()

    def __repr__(self) -> str:
        return "needle.Tensor(" + str(self.realize_cached_data()) + ")"

    def __str__(self) -> str:
        return self.realize_cached_data().__str__()

    # --- autograd ----------------------------------------------------------------
    def backward(self, out_grad: Optional["Tensor"] = None) -> None:
        """Fill `.grad` of every tensor this one depends on (overwriting old values)."""
        if not _is_float(self.dtype):
            raise TypeError(f"backward() needs a floating-point tensor, got dtype {self.dtype}")
        if out_grad is None:
            out_grad = Tensor.make_const(self.device.ones(*self.shape, dtype=self.dtype))
        elif not isinstance(out_grad, Tensor):
            raise TypeError(f"out_grad must be a Tensor, got {type(out_grad).__name__}")
        elif out_grad.shape != self.shape:
            raise ValueError(f"backward: out_grad has shape {out_grad.shape}, the tensor has shape {self.shape}")
        elif out_grad.device != self.device:
            raise ValueError(f"backward: out_grad is on {out_grad.device}, the tensor is on {self.device}")
        compute_gradient_of_variables(self, out_grad)

    # --- operators (the mapping to ops is part of the contract) -----------------
    def __add__(self, other):
        return _binary(self, other, "EWiseAdd", "AddScalar")

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Tensor):
            return self + (-other)
        return _ops().AddScalar(-other)(self)

    def __rsub__(self, other):
        return _ops().AddScalar(other)(-self)

    def __mul__(self, other):
        return _binary(self, other, "EWiseMul", "MulScalar")

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _binary(self, other, "EWiseDiv", "DivScalar")

    def __rtruediv__(self, other):
        return _ops().MulScalar(other)(_ops().PowerScalar(-1)(self))

    def __pow__(self, other):
        return _binary(self, other, "EWisePow", "PowerScalar")

    def __rpow__(self, other):
        return _ops().Exp()(_ops().MulScalar(float(numpy.log(other)))(self))

    def __matmul__(self, other):
        return _ops().MatMul()(self, other)

    def __rmatmul__(self, other):
        return _ops().MatMul()(other, self)

    def __neg__(self):
        return _ops().Negate()(self)

    # comparisons give constant 0/1 tensors; == and != keep identity semantics
    def __lt__(self, other):
        return _ops().compare(self, other, "lt")

    def __le__(self, other):
        return _ops().compare(self, other, "le")

    def __gt__(self, other):
        return _ops().compare(self, other, "gt")

    def __ge__(self, other):
        return _ops().compare(self, other, "ge")

    def eq(self, other) -> "Tensor":
        return _ops().compare(self, other, "eq")

    def ne(self, other) -> "Tensor":
        return _ops().compare(self, other, "ne")

    def __getitem__(self, index) -> "Tensor":
        return _ops().getitem(self, index)

    # --- methods -------------------------------------------------------------------
    def matmul(self, other):
        return _ops().MatMul()(self, other)

    def sum(self, axes=None, keepdims: bool = False):
        return _ops().summation(self, axes, keepdims=keepdims)

    def mean(self, axes=None, keepdims: bool = False):
        return _ops().mean(self, axes, keepdims=keepdims)

    def max(self, axes=None, keepdims: bool = False):
        return _ops().max(self, axes, keepdims=keepdims)

    def argmax(self, axis=None, keepdims: bool = False):
        return _ops().argmax(self, axis, keepdims=keepdims)

    def broadcast_to(self, shape):
        return _ops().BroadcastTo(shape)(self)

    def reshape(self, *shape):
        return _ops().Reshape(_shape_arg(shape))(self)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        return _ops().flatten(self, start_dim, end_dim)

    def transpose(self, axes=None, *more):
        """Swap two axes (the last two when `axes` is None); `t.transpose(0, 1)` also works."""
        if more:
            axes = (axes,) + more
        return _ops().Transpose(axes)(self)

    def permute(self, *axes):
        return _ops().Permute(_shape_arg(axes))(self)

    @property
    def T(self):
        if self.ndim > 2:
            raise ValueError(f".T is for tensors of at most 2 dimensions, got shape {self.shape}; use permute")
        return self if self.ndim < 2 else _ops().Transpose()(self)

    def exp(self):
        return _ops().Exp()(self)

    def log(self):
        return _ops().Log()(self)

    def tanh(self):
        return _ops().Tanh()(self)

    def relu(self):
        return _ops().ReLU()(self)

    def sigmoid(self):
        return _ops().Sigmoid()(self)

    def sqrt(self):
        return _ops().sqrt(self)


_OPS = None


def _ops():
    """needle.ops, imported on first use (ops import this module)."""
    global _OPS
    if _OPS is None:
        from . import ops

        _OPS = ops
    return _OPS


def _binary(a: Tensor, b, ewise: str, scalar: str) -> Tensor:
    """`a (op) b` with numpy/PyTorch broadcasting between tensors."""
    ops = _ops()
    if isinstance(b, Tensor):
        if a.shape != b.shape:
            a, b = broadcast_tensors(a, b)
        return getattr(ops, ewise)()(a, b)
    if isinstance(b, numpy.ndarray) and b.size != 1 or BACKEND == "nd" and isinstance(b, NDArray):
        raise TypeError(f"cannot combine a Tensor with a {type(b).__name__}; wrap it in ndl.Tensor first")
    return getattr(ops, scalar)(b)(a)


def broadcast_tensors(*tensors: Tensor) -> list:
    """The tensors broadcast to their common shape; unchanged ones are returned as is."""
    shapes = [t.shape for t in tensors]
    if len(set(shapes)) == 1:
        return list(tensors)
    try:
        target = numpy.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"shapes {' and '.join(map(str, shapes))} cannot be broadcast together") from None
    return [t if t.shape == target else _ops().BroadcastTo(target)(t) for t in tensors]


def _shape_arg(shape: tuple) -> tuple:
    """Accept both f((2, 3)) and f(2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _dtype_name(dtype) -> str:
    if BACKEND == "nd":
        return array_api.normalize_dtype(dtype)
    return numpy.dtype(dtype).name


def _is_float(dtype) -> bool:
    return numpy.dtype(dtype).kind == "f"


def _host_view(data):
    """A numpy view (no copy) of backend data, for DLPack export."""
    if isinstance(data, numpy.ndarray):
        return data
    from .backend_ndarray.host_buffer import strided_view

    if not hasattr(data._handle, "array"):
        raise TypeError(f"DLPack export is only supported for host devices, not {data.device}")
    return strided_view(data._handle, data.shape, data.strides, data._offset)


# --- graph traversal and backward --------------------------------------------------

def find_topo_sort(node_list: Iterable[Value]) -> List[Value]:
    """Post-order DFS from each node (inputs left to right): inputs come before users."""
    visited = set()
    order = []
    for root in node_list:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root.inputs))]
        while stack:
            node, pending = stack[-1]
            for child in pending:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(child.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def compute_gradient_of_variables(output_tensor: Value, out_grad: Value) -> None:
    """Set `.grad` on every node `output_tensor` depends on, in reverse topological order.

    A leaf that requires grad gets the differentiable gradient graph as .grad (so it
    can be backpropagated again); every other node keeps the gradient's value only.
    The graph refers back to the forward nodes, so storing it on them would make
    reference cycles that hold each step's memory until Python's cycle collector
    happens to run.
    """
    partial_adjoints = {output_tensor: [out_grad]}
    for node in reversed(find_topo_sort([output_tensor])):
        partials = partial_adjoints.pop(node, None)
        if partials is None:
            continue
        grad = sum_node_list(partials)
        if node.op is None:
            node.grad = grad if node.requires_grad else grad.detach()
            continue
        node.grad = grad.detach()
        for inp, partial in zip(node.inputs, node.op.gradient_as_tuple(grad, node)):
            if partial is not None:
                partial_adjoints.setdefault(inp, []).append(partial)


def sum_node_list(node_list: List[Value]) -> Value:
    """Sum of the partial adjoints: a left fold with +; tuples are added elementwise in one go."""
    if isinstance(node_list[0], TensorTuple):
        return _ops().add_tuples(node_list)
    return functools.reduce(operator.add, node_list)
