"""Module machinery and the basic layers (Linear, normalisation, dropout, losses)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from needle import init, ops
from needle.autograd import Tensor, array_api, no_grad, registered_devices

from . import functional as F

__all__ = ["Parameter", "Module", "Identity", "Linear", "Flatten", "ReLU", "Tanh", "Sequential", "SoftmaxLoss",
           "BatchNorm1d", "BatchNorm2d", "LayerNorm1d", "LayerNorm", "Dropout", "Dropout2d", "Residual"]


class Parameter(Tensor):
    """A tensor that `Module.parameters()` collects. Changing one in place while gradients are
    recorded is refused (PyTorch's rule): update it under `ndl.no_grad()` or through `.data`."""

    _refuses_inplace = True


def _named_tensors(value: Any, prefix: str) -> Iterator[Tuple[str, Tensor]]:
    """(dotted name, tensor) for every Tensor reachable through modules, dicts and lists."""
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Module):
        yield from _named_tensors(value.__dict__, prefix)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_tensors(item, f"{prefix}.{i}" if prefix else str(i))


def _snapshot(t: Tensor) -> Tensor:
    """A constant copy of t's data (same device and dtype)."""
    return Tensor.make_const(array_api.array(t.realize_cached_data(), dtype=None))


def _named_params(value: object) -> List[Tuple[str, Tensor]]:
    """(name, Parameter) pairs; a Parameter shared by several modules is listed once, under its first name
    (otherwise an optimizer would update a tied weight once per occurrence)."""
    seen = set()
    named = []
    for name, t in _named_tensors(value, ""):
        if isinstance(t, Parameter) and id(t) not in seen:
            seen.add(id(t))
            named.append((name, t))
    return named


def _unpack_params(value: object) -> List[Tensor]:
    return [t for _, t in _named_params(value)]


def _child_modules(value: object) -> List["Module"]:
    if isinstance(value, Module):
        return [value] + _child_modules(value.__dict__)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [m for item in value for m in _child_modules(item)]
    return []


class Module:
    """Base class: sub-modules and Parameters are found from the attributes, in assignment order."""

    def __init__(self):
        self.training = True

    def parameters(self) -> List[Tensor]:
        """Every Parameter of this module and its children."""
        return _unpack_params(self.__dict__)

    def named_parameters(self) -> List[Tuple[str, Tensor]]:
        """(dotted name, Parameter) pairs; a shared Parameter once, under its first name."""
        return _named_params(self.__dict__)

    def named_buffers(self, remove_duplicate: bool = True) -> List[Tuple[str, Tensor]]:
        """(dotted name, tensor) for every tensor of this module and its children that is not a
        Parameter (BatchNorm's running statistics, ...), in attribute order, as PyTorch's
        named_buffers: a tensor held under several names is listed once, under its first
        name, unless remove_duplicate=False. Any Tensor attribute counts (no registration)."""
        seen = set()
        named = []
        for name, t in self.named_tensors():
            if isinstance(t, Parameter) or (remove_duplicate and id(t) in seen):
                continue
            seen.add(id(t))
            named.append((name, t))
        return named

    def buffers(self) -> List[Tensor]:
        """The tensors of named_buffers()."""
        return [t for _, t in self.named_buffers()]

    def named_tensors(self) -> List[Tuple[str, Tensor]]:
        """(dotted name, tensor) for every tensor of this module and its children, parameters and
        buffers, in attribute order: the entries of state_dict(). A tensor held under several
        names is listed under each."""
        return list(_named_tensors(self.__dict__, ""))

    def _children(self) -> List["Module"]:
        return _child_modules(self.__dict__)

    def eval(self) -> "Module":
        self.training = False
        for m in self._children():
            m.training = False
        return self

    def train(self) -> "Module":
        self.training = True
        for m in self._children():
            m.training = True
        return self

    def state_dict(self) -> Dict[str, Tensor]:
        """Parameters and other tensors (e.g. BatchNorm running statistics), by dotted name.

        A snapshot: each entry is a copy, so training on (which updates the parameters in
        place) does not change a state dict taken earlier (PyTorch's entries alias instead).
        """
        return {name: _snapshot(t) for name, t in self.named_tensors()}

    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        """Copy tensors in by name. Every key and shape is checked before anything changes."""
        own = dict(self.named_tensors())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError("load_state_dict: " + "; ".join(parts))
        updates = []
        for name, value in state.items():
            if name not in own:
                continue
            target = own[name]
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(target.shape):
                raise ValueError(
                    f"load_state_dict: {name!r} has shape {shape} in the state, {tuple(target.shape)} in the module"
                )
            updates.append((target, Tensor(value, device=target.device, dtype=target.dtype, requires_grad=False)))
        with no_grad():  # in place: anything holding the tensor (an optimizer, a compiled step) sees it
            for target, new in updates:
                target.copy_(new)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- PyTorch habits -------------------------------------------------------------------
    def to(self, *args, device=None, dtype=None) -> "Module":
        """Move every parameter and buffer to `device` and/or cast the floating ones to `dtype`,
        in place (the Parameter objects stay the same, so an optimizer built before still holds
        them); returns self. Each positional argument is a device (or its name) or a dtype.
        Like PyTorch's Module.to."""
        for arg in args:
            if hasattr(arg, "enabled") or isinstance(arg, str) and arg in registered_devices():
                device = arg
            else:
                dtype = arg
        for _, t in self.named_tensors():
            moved = t.to(device=device, dtype=dtype if array_api.is_floating(t.dtype) else None)
            if moved is not t:
                # the tensor itself takes the new data: dtype may change, unlike through .data
                t.cached_data = moved.realize_cached_data()
        return self

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (PyTorch's Module.zero_grad, set_to_none=True)."""
        for p in self.parameters():
            p.grad = None


class Identity(Module):
    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight + bias; weight (in, out), bias (1, out); x (..., in)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, device=device, dtype=dtype))
        self.bias = None
        if bias:
            b = init.kaiming_uniform(out_features, 1, device=device, dtype=dtype)
            self.bias = Parameter(b.reshape((1, out_features)).detach())

    def forward(self, X: Tensor) -> Tensor:
        if not X.shape or X.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) expects inputs of shape (..., {self.in_features}), "
                f"got {X.shape}"
            )
        out = X @ self.weight
        if self.bias is not None:
            out = out + self.bias.broadcast_to(out.shape)
        return out


class Flatten(Module):
    """(B, X0, X1, ...) -> (B, X0 * X1 * ...)."""

    def forward(self, X):
        return X.reshape((X.shape[0], -1))


class ReLU(Module):
    """max(x, 0) elementwise (needle.nn.functional.relu), as torch.nn.ReLU(inplace=False):
    inplace=True writes the input's buffer and returns it (computed out of place where needle's
    autograd cannot rewire the input, see F.relu)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x, self.inplace)


class Tanh(Module):
    """tanh elementwise (needle.nn.functional.tanh)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        self.modules = modules

    def forward(self, x: Tensor) -> Tensor:
        for module in self.modules:
            x = module(x)
        return x


class SoftmaxLoss(Module):
    """Mean over the batch of -log_softmax(logits)[label]; logits (B, k), y (B,) class ids.

    y holds int64 labels (floats holding whole numbers work too, as in the course). The
    log-softmax is (z - m) - log(sum(exp(z - m))) with m the row maximum, so the loss and
    its gradient softmax - one_hot(y) stay exact when the logits are huge (logits
    [1e8, 1e8] give ln 2, where lse - z[y] would cancel to 0 in float32). The label's
    entry is selected with a mask made on the device, not multiplied by a one-hot row
    (0 * -inf would turn a masked-out logit into nan). Edges follow PyTorch's
    cross_entropy: a -inf logit is a class of probability 0, a row with +inf or nan is nan.
    """

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        if len(logits.shape) != 2:
            raise ValueError(f"SoftmaxLoss expects logits of shape (batch, classes), got {logits.shape}")
        if tuple(y.shape) != logits.shape[:1]:
            raise ValueError(f"SoftmaxLoss: labels of shape {tuple(y.shape)} for logits of shape {logits.shape}")
        batch, classes = logits.shape
        label = init.one_hot(classes, y, device=logits.device, dtype="bool")
        picked = ops.where(label, ops.logsoftmax(logits, axis=1), 0.0)
        return -ops.summation(picked) / batch


class BatchNorm1d(Module):
    """Normalise each feature over the batch; x (N, dim) (needle.nn.functional.batch_norm).

    The course's running statistics: running <- (1 - momentum) running + momentum batch,
    with the batch's *biased* variance (PyTorch's BatchNorm1d uses the unbiased one).
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.momentum = momentum
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}({self.dim}) expects input of shape (N, {self.dim}), got {x.shape}")
        return self._normalize(x)

    def _normalize(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=self.training,
                            momentum=self.momentum, eps=self.eps, unbiased_running_var=False)


class BatchNorm2d(BatchNorm1d):
    """BatchNorm over the channels of NCHW input (statistics over N, H and W)."""

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 4 or x.shape[1] != self.dim:
            raise ValueError(f"BatchNorm2d({self.dim}) expects input of shape (N, {self.dim}, H, W), got {x.shape}")
        return self._normalize(x)


class LayerNorm1d(Module):
    """Normalise each row over its last axis (biased variance); x (..., dim) (needle.nn.functional.layer_norm)."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if not x.shape or x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm1d({self.dim}) expects input of shape (..., {self.dim}), got {x.shape}")
        return F.layer_norm(x, self.dim, self.weight, self.bias, self.eps)


class LayerNorm(Module):
    """torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True): normalise
    over the last len(normalized_shape) axes (biased variance), then scale by `weight` (ones of
    normalized_shape) and shift by `bias` (zeros), PyTorch's names, shapes and initial values, so
    a torch LayerNorm's state dict loads as it is. elementwise_affine=False keeps neither,
    bias=False no bias. Input (..., *normalized_shape) (ValueError otherwise, from F.layer_norm).
    The course's LayerNorm1d(dim) stays beside it."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype: Optional[str] = None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty tuple of them, got "
                             f"{normalized_shape!r}")
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        dtype = "float32" if dtype is None else dtype
        self.weight = Parameter(init.ones(*shape, device=device, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(init.zeros(*shape, device=device, dtype=dtype)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Training: zero each element with probability p and scale the rest by 1/(1-p); identity in
    evaluation (needle.nn.functional.dropout, numpy's global RNG). inplace=True writes the input
    (PyTorch's flag, see F.relu)."""

    def __init__(self, p=0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.inplace)


class Dropout2d(Module):
    """torch.nn.Dropout2d(p=0.5, inplace=False): in training, zero whole channels ((H, W) planes of
    (N, C, H, W) input; a 3-D input is (N, C, L), as PyTorch 2 reads it) with probability p and
    scale the rest by 1/(1-p); identity in evaluation (F.dropout2d, numpy's global RNG)."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout2d probability must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout2d(x, self.p, self.training, self.inplace)


class Residual(Module):
    def __init__(self, fn: Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x
