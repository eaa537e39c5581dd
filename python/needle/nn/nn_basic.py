"""Module machinery and the basic layers (Linear, normalisation, dropout, losses)."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, TypeVar, Union, cast

from needle import init, ops
from needle.autograd import Tensor, array_api, no_grad, registered_devices

from . import functional as F

__all__ = ["Parameter", "Module", "Identity", "Linear", "Flatten", "ReLU", "Tanh", "Sequential", "SoftmaxLoss",
           "BatchNorm1d", "BatchNorm2d", "LayerNorm1d", "LayerNorm", "Dropout", "Dropout2d", "Residual",
           "IncompatibleKeys", "StateDictError"]

T = TypeVar("T")


class Parameter(Tensor):
    """A tensor that `Module.parameters()` collects. Changing one in place while gradients are
    recorded is refused (PyTorch's rule): update it under `ndl.no_grad()` or through `.data`."""

    _refuses_inplace = True


class Listing(List[T]):
    """What parameters(), named_parameters(), buffers(), modules(), children() and their kin
    return: a list -- the course indexes `model.parameters()[0]` and adds the lists -- that is
    also an iterator under next(), as PyTorch's generators are: `next(model.parameters())`
    gives the first parameter, the next call the second. next() keeps a cursor of its own; a
    for loop (or list()) always walks the whole list from the start."""

    def __next__(self) -> T:
        i = self.__dict__.get("_cursor", 0)
        if i >= len(self):
            raise StopIteration
        self._cursor = i + 1
        return self[i]


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What Module.load_state_dict returns (PyTorch's named tuple): the module's state_dict keys
    the state lacked and the state's keys the module does not have."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class StateDictError(RuntimeError, ValueError):
    """load_state_dict's error: a RuntimeError as PyTorch's, and a ValueError as needle's
    other bad-argument errors (both `except` clauses catch it)."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _collect(value: Any, name: str) -> Iterator[Tuple[str, Any]]:
    """(name, item) for every Tensor and Module in value, entering dicts, lists and tuples (not
    modules): `name` for value itself, `name.key` / `name.i` for the items of a container."""
    if isinstance(value, (Tensor, Module)):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _collect(item, _join(name, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _collect(item, _join(name, str(i)))


def _check_name(kind: str, name: Any) -> None:
    """PyTorch's checks on the name given to register_buffer/register_parameter/add_module."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if not name:
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got {name!r}')


class Module:
    """Base class of every layer and model, with the course's discovery and PyTorch's API.

    Sub-modules and tensors are found from the attributes, in attribute-assignment order
    (the course's rule), entering dicts, lists and tuples: no registration is needed, and
    a Python list of modules (the course's `RNN.rnn_cells`) works like a ModuleList. A
    `Parameter` attribute is a parameter; any other Tensor attribute is a buffer (saved in
    state_dict unless registered with `register_buffer(name, t, persistent=False)`).

    Names follow the attribute path, `a.b.0.weight`, as PyTorch's; a Sequential, ModuleList,
    ModuleDict, ParameterList or ParameterDict names its items directly (`0`, `1`, or the
    dict's keys). One difference from PyTorch: its lists go in attribute order, where
    PyTorch lists a module's own parameters (and, in state_dict, its buffers) before its
    children's; they agree whenever a module does not hold tensors after sub-modules.
    """

    def __init__(self):
        self.training = True

    # --- the walk --------------------------------------------------------------------------
    def _members(self) -> Iterator[Tuple[str, str, Any]]:
        """(attribute, name, item) for every Tensor and Module this module holds directly, in
        attribute order; `name` is relative to this module. Containers override it to name
        their items without the attribute."""
        for attr, value in self.__dict__.items():
            for name, item in _collect(value, attr):
                yield attr, name, item

    def _persistent(self, attr: str) -> bool:
        return attr not in self.__dict__.get("_non_persistent_buffers_set", ())

    def _walk_tensors(self, prefix: str, path: Set[int]) -> Iterator[Tuple[str, Tensor, bool]]:
        """(full name, tensor, goes into state_dict) for every tensor of the tree, in attribute
        order, every name of a tensor held several times; a module that holds one of its own
        ancestors is not entered twice on one path."""
        path.add(id(self))
        for attr, name, item in self._members():
            full = _join(prefix, name)
            if isinstance(item, Module):
                if id(item) not in path:
                    yield from item._walk_tensors(full, path)
            else:
                yield full, item, isinstance(item, Parameter) or self._persistent(attr)
        path.discard(id(self))

    def _direct_children(self) -> Iterator[Tuple[str, "Module"]]:
        for _, name, item in self._members():
            if isinstance(item, Module) and item is not self:
                yield name, item

    # --- parameters, buffers, tensors ----------------------------------------------------
    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Listing[Tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, in attribute order (the course's), names prefixed
        by `prefix` (PyTorch's). A Parameter held under several names (tied weights) is listed
        once, under its first name, unless remove_duplicate=False: an optimizer must not update
        it twice per step. recurse=False lists this module's own parameters only."""
        named = self._named(prefix, recurse, remove_duplicate, lambda t: isinstance(t, Parameter))
        return cast(Listing[Tuple[str, Parameter]], named)

    def parameters(self, recurse: bool = True) -> Listing[Parameter]:
        """Every Parameter of this module and its children (named_parameters' order, each once):
        a list the course indexes, which next() also walks (see Listing)."""
        return Listing(t for _, t in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Listing[Tuple[str, Tensor]]:
        """(dotted name, tensor) for every tensor of this module and its children that is not a
        Parameter (BatchNorm's running statistics, registered buffers persistent or not, any
        other Tensor attribute), in attribute order, as PyTorch's named_buffers: a tensor held
        under several names is listed once, under its first name, unless remove_duplicate=False."""
        return self._named(prefix, recurse, remove_duplicate, lambda t: not isinstance(t, Parameter))

    def buffers(self, recurse: bool = True) -> Listing[Tensor]:
        """The tensors of named_buffers()."""
        return Listing(t for _, t in self.named_buffers(recurse=recurse))

    def named_tensors(self) -> Listing[Tuple[str, Tensor]]:
        """(dotted name, tensor) for every tensor of this module and its children, parameters and
        buffers (non-persistent ones too), in attribute order; a tensor held under several
        names is listed under each. state_dict() is this without the non-persistent buffers."""
        return Listing((name, t) for name, t, _ in self._walk_tensors("", set()))

    def _named(self, prefix: str, recurse: bool, remove_duplicate: bool,
               keep: Callable[[Tensor], bool]) -> Listing[Tuple[str, Tensor]]:
        if recurse:
            entries: Iterable[Tuple[str, Tensor]] = ((n, t) for n, t, _ in self._walk_tensors(prefix, set()))
        else:
            entries = ((_join(prefix, n), t) for _, n, t in self._members() if isinstance(t, Tensor))
        seen: Set[int] = set()
        out: Listing[Tuple[str, Tensor]] = Listing()
        for name, t in entries:
            if not keep(t) or (remove_duplicate and id(t) in seen):
                continue
            seen.add(id(t))
            out.append((name, t))
        return out

    def register_buffer(self, name: str, tensor: Optional[Tensor], persistent: bool = True) -> None:
        """Hold `tensor` as the buffer `name` (an attribute), PyTorch's register_buffer. Any
        non-Parameter Tensor attribute is a buffer in needle already; what registration adds is
        persistent=False, which leaves it out of state_dict (and of load_state_dict's keys)
        while .to() still moves it. None is allowed (nothing is saved).

        Raises TypeError for a name that is not a string or a value that is not a Tensor or
        None; KeyError for an empty or dotted name, or one already taken by a parameter or by
        another attribute that is not a buffer."""
        _check_name("buffer", name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} object to buffer {name!r} (a needle Tensor or "
                            "None required)")
        if name in self.__dict__:
            current = self.__dict__[name]
            if isinstance(current, Parameter):
                raise KeyError(f"attribute {name!r} is a parameter already")
            if current is not None and not isinstance(current, Tensor):
                raise KeyError(f"attribute {name!r} already exists")
        elif hasattr(type(self), name):
            raise KeyError(f"attribute {name!r} already exists")
        hidden = self.__dict__.setdefault("_non_persistent_buffers_set", set())
        if persistent:
            hidden.discard(name)
        else:
            hidden.add(name)
        setattr(self, name, tensor)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Hold `param` (a Parameter, or None) as the attribute `name`, PyTorch's
        register_parameter. TypeError for another value (a plain Tensor would be a buffer:
        wrap it in nn.Parameter); KeyError as register_buffer."""
        _check_name("parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} object to parameter {name!r} (needle.nn.Parameter "
                            "or None required)")
        current = self.__dict__.get(name, None)
        if (name in self.__dict__ and current is not None and not isinstance(current, Parameter)) \
                or (name not in self.__dict__ and hasattr(type(self), name)):
            raise KeyError(f"attribute {name!r} already exists")
        setattr(self, name, param)

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        """Hold `module` (a Module, or None) as the attribute `name` (PyTorch's add_module and
        register_module). TypeError for another value, KeyError as register_buffer."""
        _check_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a needle.nn.Module")
        if name not in self.__dict__ and hasattr(type(self), name):
            raise KeyError(f"attribute {name!r} already exists")
        setattr(self, name, module)

    register_module = add_module

    def get_submodule(self, target: str) -> "Module":
        """The module at dotted path `target` ('' is this module), PyTorch's get_submodule:
        `model.get_submodule("encoder.layers.0")`. AttributeError naming the first step that
        does not lead to a module."""
        if target == "":
            return self
        module = self
        done: List[str] = []
        atoms = target.split(".")
        while atoms:
            children = dict(module._direct_children())
            # a child held in a plain list or dict has a dotted name of its own ('cells.0')
            for size in range(len(atoms), 0, -1):
                name = ".".join(atoms[:size])
                if name in children:
                    module, done, atoms = children[name], done + atoms[:size], atoms[size:]
                    break
            else:
                where = ".".join(done) or "the root"
                raise AttributeError(f"{type(module).__name__} (at {where}) has no submodule {atoms[0]!r} "
                                     f"(looking for {target!r})")
        return module

    def get_parameter(self, target: str) -> Parameter:
        """The Parameter at dotted path `target` (PyTorch's get_parameter); AttributeError if
        there is none."""
        for name, p in self.named_parameters(remove_duplicate=False):
            if name == target:
                return p
        raise AttributeError(f"{type(self).__name__} has no parameter {target!r}")

    def get_buffer(self, target: str) -> Tensor:
        """The buffer at dotted path `target` (PyTorch's get_buffer); AttributeError if none."""
        for name, t in self.named_buffers(remove_duplicate=False):
            if name == target:
                return t
        raise AttributeError(f"{type(self).__name__} has no buffer {target!r}")

    # --- the module tree -----------------------------------------------------------------
    def named_children(self) -> Listing[Tuple[str, "Module"]]:
        """(name, module) for each direct sub-module, each once (PyTorch's named_children)."""
        seen: Set[int] = set()
        out: Listing[Tuple[str, Module]] = Listing()
        for name, m in self._direct_children():
            if id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
        return out

    def children(self) -> Listing["Module"]:
        """The direct sub-modules (PyTorch's children)."""
        return Listing(m for _, m in self.named_children())

    def named_modules(self, memo: Optional[Set["Module"]] = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Listing[Tuple[str, "Module"]]:
        """(dotted name, module) for this module (named `prefix`, '' by default) and every
        module below it, depth first in attribute order, as PyTorch's named_modules; a module
        reached twice is listed once unless remove_duplicate=False."""
        out: Listing[Tuple[str, Module]] = Listing()
        seen: Set[int] = set() if memo is None else {id(m) for m in memo}
        path: Set[int] = set()

        def visit(module: Module, name: str) -> None:
            if remove_duplicate:
                if id(module) in seen:
                    return
                seen.add(id(module))
            out.append((name, module))
            path.add(id(module))
            for child_name, child in module._direct_children():
                if id(child) not in path:
                    visit(child, _join(name, child_name))
            path.discard(id(module))

        visit(self, prefix)
        if memo is not None:
            memo.update(m for _, m in out)
        return out

    def modules(self) -> Listing["Module"]:
        """This module and every module below it, each once (PyTorch's modules()). On a
        Sequential `modules` is the course's tuple of layers, which can be called the same
        way: `seq.modules()` (see Sequential)."""
        return Listing(m for _, m in self.named_modules())

    def _children(self) -> List["Module"]:
        """Every module below this one, each once (the course's helper)."""
        return [m for _, m in self.named_modules()][1:]

    def apply(self: "M", fn: Callable[["Module"], Any]) -> "M":
        """fn(module) for every child's tree first, then fn(self); returns self (PyTorch's apply:
        `model.apply(init_weights)`)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def train(self: "M", mode: bool = True) -> "M":
        """Training mode on (or, mode=False, off) for this module and every module below it;
        returns self. ValueError if mode is not a bool (PyTorch's check)."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be a bool, got {mode!r}")
        self.training = mode
        for child in self.children():  # through train(), so a subclass's own train() runs too
            child.train(mode)
        return self

    def eval(self: "M") -> "M":
        """train(False)."""
        return self.train(False)

    # --- state ----------------------------------------------------------------------------
    def state_dict(self, destination: Optional[Dict[str, Tensor]] = None, prefix: str = "",
                   keep_vars: bool = False) -> Dict[str, Tensor]:
        """Parameters and persistent buffers (e.g. BatchNorm's running statistics) by dotted
        name, in attribute order, every name of a tied tensor: an OrderedDict, as PyTorch's.

        Each entry shares memory with the module's tensor (PyTorch's rule): a detached tensor
        over the same buffer, so `sd[k].copy_(w)` loads a weight and training on changes the
        dict's values too. Take copies (`{k: v.numpy() ...}`) to keep a snapshot. keep_vars=True
        gives the Parameters themselves; `prefix` is put before every key.
        """
        out: Dict[str, Tensor] = OrderedDict() if destination is None else destination
        for name, t, saved in self._walk_tensors(prefix.rstrip("."), set()):
            if saved:
                out[name] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy tensors (or numpy arrays) in by name, in place: whatever holds the module's
        tensors (an optimizer, a compiled step) sees the new values; values are cast to each
        tensor's dtype and moved to its device. Returns (missing_keys, unexpected_keys), the
        named tuple of PyTorch's.

        Every key and shape is checked before anything changes (PyTorch copies the good
        entries before raising): StateDictError (a RuntimeError and a ValueError) for a shape
        that differs, and with strict=True for missing or unexpected keys, naming them."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict expects a dict of tensors, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        updates = []
        for name, value in state_dict.items():
            if name not in own:
                continue
            target = own[name]
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(target.shape):
                errors.append(f"size mismatch for {name}: copying a param with shape {shape} from checkpoint, the "
                              f"shape in current model is {tuple(target.shape)}.")
                continue
            updates.append((target, value))
        if errors:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                                 + "\n\t".join(errors))
        with no_grad():  # in place: anything holding the tensor (an optimizer, a compiled step) sees it
            for target, value in updates:
                if isinstance(value, Tensor) and value.device == target.device:
                    target.copy_(value)  # casts; straight from a tensor's own memory
                else:
                    target.copy_(Tensor(value, device=target.device, dtype=target.dtype, requires_grad=False))
        return IncompatibleKeys(missing, unexpected)

    # --- calling and printing -----------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required \"forward\" function")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The settings repr() shows inside the parentheses (PyTorch's hook): '' here; each
        layer returns its own, e.g. Linear's 'in_features=2, out_features=3, bias=True'."""
        return ""

    def __repr__(self) -> str:
        """The module tree, PyTorch's format: `Name(extra)` for a module without children,
        otherwise the extra settings and one `(name): child` line per child, indented."""
        return _tree_repr(type(self).__name__, self.extra_repr(), _child_lines(self._direct_children()))

    # --- PyTorch habits -------------------------------------------------------------------
    def to(self: "M", *args, device=None, dtype=None) -> "M":
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

    def float(self: "M") -> "M":
        """Floating tensors to float32 (PyTorch's Module.float)."""
        return self.to(dtype="float32")

    def double(self: "M") -> "M":
        """Floating tensors to float64 (PyTorch's Module.double)."""
        return self.to(dtype="float64")

    def half(self: "M") -> "M":
        """PyTorch's Module.half: needle stores no float16 (float32, float64, int64 and bool
        only), so this raises TypeError instead of silently keeping float32."""
        raise TypeError("Module.half(): needle has no float16 storage (its floating dtypes are float32 and "
                        "float64); use .float() or .double()")

    def cpu(self: "M") -> "M":
        """Every tensor to the cpu device (PyTorch's Module.cpu)."""
        return self.to("cpu")

    def cuda(self: "M", device: Any = None) -> "M":
        """Every tensor to the cuda device (PyTorch's Module.cuda; one GPU, so no index)."""
        return self.to("cuda" if device is None or isinstance(device, int) else device)

    def requires_grad_(self: "M", requires_grad: bool = True) -> "M":
        """Set requires_grad on every parameter (freezing or unfreezing them); returns self
        (PyTorch's Module.requires_grad_)."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (PyTorch's Module.zero_grad): .grad = None, or
        with set_to_none=False zeros. Zeros are written in place into a gradient that owns its
        buffer (after backward(accumulate=True) or an earlier zero_grad(set_to_none=False),
        so a compiled step holding it sees them); a gradient the course's backward may share
        between leaves (the same tensor handed to both inputs of an add) becomes zeros of its
        own instead, so zeroing one cannot write into another."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
                continue
            g = p.grad
            if getattr(g, "_owns_grad", False) and g.op is None:
                with no_grad():
                    g.zero_()
            else:
                fresh = init.zeros(*g.shape, device=g.device, dtype=g.dtype)
                fresh._owns_grad = True
                p.grad = fresh


M = TypeVar("M", bound=Module)


def _indent(text: str, spaces: int) -> str:
    """Every line of text but the first indented by `spaces`."""
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


def _child_lines(children: Iterable[Tuple[str, Module]]) -> List[str]:
    return [f"({name}): {_indent(repr(child), 2)}" for name, child in children]


def _tree_repr(name: str, extra: str, child_lines: List[str]) -> str:
    lines = (extra.split("\n") if extra else []) + child_lines
    if not lines:
        return name + "()"
    if not child_lines and len(lines) == 1:
        return f"{name}({lines[0]})"
    return name + "(\n  " + "\n  ".join(lines) + "\n)"


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

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, X: Tensor) -> Tensor:
        if not X.shape or X.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) expects inputs of shape (..., {self.in_features}), "
                f"got {X.shape}"
            )
        if self.bias is not None and len(X.shape) >= 2:
            # X @ weight + bias as one op (PyTorch's addmm; the same values as the two ops)
            return ops.addmm(self.bias, X, self.weight)
        out = X @ self.weight  # a 1-D X (in,) gives (out,), as PyTorch's Linear
        if self.bias is not None:
            out = out + self.bias.reshape(out.shape[-1:]).broadcast_to(out.shape)  # the course's (1, out) too
        return out


class Flatten(Module):
    """(B, X0, X1, ...) -> (B, X0 * X1 * ...): PyTorch's Flatten(start_dim=1, end_dim=-1)."""

    def extra_repr(self) -> str:
        return "start_dim=1, end_dim=-1"

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


class _Layers(tuple):
    """Sequential.modules: the course's tuple of layers (indexed, iterated, compared as a tuple)
    that can also be called as PyTorch's `modules()` method, giving the Sequential and every
    module below it."""

    _owner: Optional["Sequential"]

    def __new__(cls, items: Iterable[Module] = (), owner: Optional["Sequential"] = None) -> "_Layers":
        layers = super().__new__(cls, items)
        layers._owner = owner
        return layers

    def __call__(self) -> Listing[Module]:
        owner = self.__dict__.get("_owner")
        if owner is None:
            raise TypeError("these layers belong to no Sequential; call modules() on a module")
        return Module.modules(owner)


class Sequential(Module):
    """The layers applied in order: Sequential(a, b, c)(x) = c(b(a(x))) (the course's and
    PyTorch's). Sequential(OrderedDict(name=module, ...)) names the layers (PyTorch's form:
    `seq.name` is the layer); otherwise they are named 0, 1, ... as in PyTorch's state_dict
    keys (`0.weight`).

    `seq.modules` is the course's tuple of layers (the course's tests index
    `seq.modules[i]`), so Sequential cannot also have PyTorch's `modules()` *method*; the
    tuple is callable instead: `seq.modules()` gives what Module.modules() gives (the
    Sequential and every module below it), `seq.modules[i]` and `len(seq.modules)` the
    layers. PyTorch's container API works on the Sequential itself: `seq[i]`, `seq[a:b]`
    (a Sequential keeping the layers' names, as PyTorch's), `len(seq)`, iteration,
    `append`, `extend`, `insert`, `pop`, `del seq[i]` (renumbers, as PyTorch), `+`.
    TypeError for a layer that is not a Module.
    """

    modules: Tuple[Module, ...]  # type: ignore[assignment]  # the course's tuple where PyTorch has a method

    def __init__(self, *modules: Any):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            names = tuple(modules[0].keys())
            layers = tuple(modules[0].values())
            for name in names:
                _check_name("module", name)
        else:
            names, layers = None, modules
        self._set(tuple(_module_arg("Sequential", m) for m in layers), names)

    def _set(self, layers: Tuple[Module, ...], names: Optional[Tuple[str, ...]]) -> None:
        self.modules = layers
        self._names = names

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "modules" and type(value) is tuple:  # noqa: E721  (the course may assign a plain tuple)
            value = _Layers(value, self)
            self.__dict__["_names"] = None  # the old names fit the old layers
        object.__setattr__(self, name, value)

    def _keys(self) -> Tuple[str, ...]:
        names = self.__dict__.get("_names")
        layers = self.__dict__.get("modules", ())
        if names is not None and len(names) == len(layers):
            return names
        return tuple(str(i) for i in range(len(layers)))

    def _members(self) -> Iterator[Tuple[str, str, Any]]:
        for attr, value in self.__dict__.items():
            if attr == "modules" and isinstance(value, (tuple, list)):
                for key, layer in zip(self._keys(), value):
                    for name, item in _collect(layer, key):
                        yield attr, name, item
            else:
                for name, item in _collect(value, attr):
                    yield attr, name, item

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a layer named through an OrderedDict
        names = self.__dict__.get("_names")
        if names and name in names and len(names) == len(self.__dict__.get("modules", ())):
            return self.__dict__["modules"][names.index(name)]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def forward(self, x: Tensor) -> Tensor:
        for module in self.modules:
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules)

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return Sequential(OrderedDict(zip(self._keys()[index], self.modules[index])))
        return self.modules[_position(index, len(self), "Sequential")]

    def __setitem__(self, index: int, module: Module) -> None:
        layers = list(self.modules)
        layers[_position(index, len(self), "Sequential")] = _module_arg("Sequential", module)
        self._set(tuple(layers), self._keys())

    def __delitem__(self, index: Union[int, slice]) -> None:
        layers = list(self.modules)
        if isinstance(index, slice):
            del layers[index]
        else:
            del layers[_position(index, len(self), "Sequential")]
        self._set(tuple(layers), None)  # renumbered 0, 1, ..., as PyTorch does

    def append(self, module: Module) -> "Sequential":
        """Add a layer at the end (named len(self), PyTorch's rule); returns self."""
        self._set(self.modules + (_module_arg("Sequential.append", module),), self._keys() + (str(len(self)),))
        return self

    def extend(self, modules: Iterable[Module]) -> "Sequential":
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> "Sequential":
        """Put a layer before position index (negative counts from the end); the layers are
        renumbered. IndexError outside [-len, len]."""
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index} is out of range for {n} layers")
        index = index + n if index < 0 else index
        layers = list(self.modules)
        layers.insert(index, _module_arg("Sequential.insert", module))
        self._set(tuple(layers), None)
        return self

    def pop(self, index: Union[int, slice]) -> Any:
        """Remove and return the layer at index (del renumbers the rest)."""
        layer = self[index]
        del self[index]
        return layer

    def __add__(self, other: "Sequential") -> "Sequential":
        if not isinstance(other, Sequential):
            raise TypeError(f"can only add a Sequential to a Sequential, got {type(other).__name__}")
        return Sequential(*self.modules, *other.modules)

    def __iadd__(self, other: "Sequential") -> "Sequential":
        return self.extend(other)


def _module_arg(what: str, module: Any) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"{what}: {type(module).__name__} is not a needle.nn.Module")
    return module


def _position(index: Any, n: int, what: str) -> int:
    """index as a position in [0, n): IndexError outside, TypeError for a non-integer."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{what} indices must be integers or slices, not {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"{what}: index {index} is out of range for {n} items")
    return index + n if index < 0 else index


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
        if not isinstance(y, Tensor):  # labels as a numpy array or a list
            y = Tensor(y, device=logits.device, requires_grad=False)
        if tuple(y.shape) != logits.shape[:1]:
            raise ValueError(f"SoftmaxLoss: labels of shape {tuple(y.shape)} for logits of shape {logits.shape}")
        if y.device != logits.device:
            y = Tensor(y.realize_cached_data(), device=logits.device, requires_grad=False)
        # -summation(where(one_hot(y), logsoftmax(logits), 0)) / batch, as one op (ops.NLLLoss) whose
        # gradient goes to the logits in one op too (ops.LogSoftmaxNLLLoss)
        return ops.logsoftmax_nll_loss(logits, y)


class BatchNorm1d(Module):
    """Normalise each feature over the batch; x (N, dim) (needle.nn.functional.batch_norm).

    The course's running statistics: running <- (1 - momentum) running + momentum batch,
    with the batch's *biased* variance (PyTorch's BatchNorm1d/2d use the unbiased one, n / (n - 1)
    times it: pass unbiased_running_var=True, or set the attribute, for PyTorch's running_var;
    the normalization itself uses the biased variance in both).
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32", *,
                 unbiased_running_var: bool = False):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.momentum = momentum
        self.unbiased_running_var = unbiased_running_var
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}, affine=True, bias=True, track_running_stats=True"

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}({self.dim}) expects input of shape (N, {self.dim}), got {x.shape}")
        return self._normalize(x)

    def _normalize(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=self.training,
                            momentum=self.momentum, eps=self.eps,
                            unbiased_running_var=getattr(self, "unbiased_running_var", False))


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

    def extra_repr(self) -> str:
        return f"({self.dim},), eps={self.eps}, elementwise_affine=True, bias=True"

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

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

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

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

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
