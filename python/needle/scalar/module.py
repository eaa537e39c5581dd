"""MiniTorch's Module / Parameter tree, and the Scalar layers built on it.

A `Module` registers, on attribute assignment, every `Parameter` and every sub-`Module`
it is given (MiniTorch's `__setattr__`), so the tree can be walked without looking at
other attributes:

* `modules()` / `children()`: the direct sub-modules (MiniTorch's `modules()` meaning;
  `children()` is PyTorch's name for the same list); `named_modules()` walks the whole
  tree with dotted names.
* `named_parameters()`: (dotted name, Parameter) for this module's own parameters first,
  in assignment order, then each sub-module's, sub-modules in assignment order (the order
  of MiniTorch and PyTorch). A Parameter shared by two modules is listed once, under its
  first name, so an optimizer updates it once.
* `train()` / `eval()`: set `training` on the whole tree.

`Linear` and `Network` are MiniTorch's scalar layers: every weight is one Scalar.
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .scalar import Scalar

__all__ = ["Module", "Parameter", "Linear", "Network"]

RNG = Union[random.Random, int, None]


class Parameter:
    """A trainable value held by a Module (MiniTorch's Parameter).

    As in MiniTorch, a value that has a `requires_grad_` method (a Scalar, or any tensor
    type with one) gets `requires_grad_(True)` and, when the parameter is named, the parameter's name, both at
    construction and on `update(x)` (what an optimizer step does). A Scalar must be one no
    function made: a leaf or a constant.
    """

    def __init__(self, x: Any = None, name: Optional[str] = None) -> None:
        self.name = name
        self.value: Any = None  # a Scalar, or any value with requires_grad_
        self.update(x)

    def update(self, x: Any) -> None:
        """Hold x from now on, marked as needing a derivative when it can be."""
        # a constant can become a parameter, but a function's output would cut its graph
        if isinstance(x, Scalar) and x.last_fn is not None:
            raise ValueError(f"a Parameter must hold a leaf Scalar, got one made by {x.last_fn.__name__}; "
                             f"wrap its value instead: Scalar({x.data!r})")
        if hasattr(x, "requires_grad_"):
            x.requires_grad_(True)
            if self.name is not None:
                try:
                    x.name = self.name
                except AttributeError:  # the name is a label only; a value without one still trains
                    pass
        self.value = x

    def __repr__(self) -> str:
        return f"Parameter({self.value!r})" if self.name is None else f"Parameter({self.name}={self.value!r})"


class Module:
    """Base class of the model tree. Subclasses call `super().__init__()` first, assign
    their Parameters and sub-Modules as attributes, and define `forward`."""

    def __init__(self) -> None:
        self.__dict__["_modules"] = {}
        self.__dict__["_parameters"] = {}
        self.__dict__["training"] = True

    # ------------------------------------------------------------------ registration
    def _registries(self) -> Tuple[Dict[str, "Module"], Dict[str, Parameter]]:
        d = self.__dict__
        if "_modules" not in d:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() in __init__ before "
                                 f"assigning attributes")
        return d["_modules"], d["_parameters"]

    def __setattr__(self, key: str, value: Any) -> None:
        modules, parameters = self._registries()
        modules.pop(key, None)
        parameters.pop(key, None)
        self.__dict__.pop(key, None)
        if isinstance(value, Parameter):
            parameters[key] = value
        elif isinstance(value, Module):
            modules[key] = value
        else:
            object.__setattr__(self, key, value)

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        d = self.__dict__
        if key in d.get("_parameters", {}):
            return d["_parameters"][key]
        if key in d.get("_modules", {}):
            return d["_modules"][key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __delattr__(self, key: str) -> None:
        modules, parameters = self._registries()
        if key in modules:
            del modules[key]
        elif key in parameters:
            del parameters[key]
        else:
            object.__delattr__(self, key)

    def add_parameter(self, k: str, v: Any) -> Parameter:
        """Register `v` as the parameter `k` (it becomes the attribute `self.k`); returns it."""
        if not isinstance(k, str) or not k.isidentifier():
            raise ValueError(f"parameter names must be identifiers, got {k!r}")
        p = v if isinstance(v, Parameter) else Parameter(v, k)
        if p.name is None:
            p.name = k
        self.__setattr__(k, p)
        return p

    # ------------------------------------------------------------------ the tree
    def modules(self) -> List["Module"]:
        """The direct sub-modules, in assignment order."""
        return list(self._registries()[0].values())

    children = modules

    def named_modules(self) -> List[Tuple[str, "Module"]]:
        """(dotted name, module) for every descendant, depth first, in assignment order."""
        named = []
        for name, m in self._registries()[0].items():
            named.append((name, m))
            named.extend((f"{name}.{sub}", mm) for sub, mm in m.named_modules())
        return named

    def named_parameters(self) -> List[Tuple[str, Parameter]]:
        """(dotted name, Parameter) for the whole tree: own parameters first, then each
        sub-module's; a shared Parameter appears once, under its first name."""
        named, seen = [], set()

        def visit(module: "Module", prefix: str) -> None:
            modules, parameters = module._registries()
            for name, p in parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    named.append((prefix + name, p))
            for name, m in modules.items():
                visit(m, f"{prefix}{name}.")

        visit(self, "")
        return named

    def parameters(self) -> List[Parameter]:
        """Every Parameter of the tree, in `named_parameters()` order."""
        return [p for _, p in self.named_parameters()]

    def train(self) -> "Module":
        """Set `training = True` on this module and all its descendants."""
        return self._set_training(True)

    def eval(self) -> "Module":
        """Set `training = False` on this module and all its descendants."""
        return self._set_training(False)

    def _set_training(self, mode: bool) -> "Module":
        self.__dict__["training"] = mode
        for m in self.modules():
            m._set_training(mode)
        return self

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, m in self._registries()[0].items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return f"{type(self).__name__}()"
        return "\n".join(lines) + "\n)"


def _rng(rng: RNG) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, int):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random, an int seed or None, got {type(rng).__name__}")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


class Linear(Module):
    """y_j = b_j + sum_i x_i w_ij with one Scalar per weight (parameters `weight_i_j`, `bias_j`).

    Weights and biases start uniform in [-1/sqrt(in_size), 1/sqrt(in_size)] (PyTorch's
    default range), drawn from `rng` (a random.Random, an int seed, or None for a fresh
    unseeded generator); the global `random` state is never used.
    """

    def __init__(self, in_size: int, out_size: int, rng: RNG = None):
        super().__init__()
        self.in_size = _positive_int(in_size, "Linear in_size")
        self.out_size = _positive_int(out_size, "Linear out_size")
        gen = _rng(rng)
        bound = 1.0 / math.sqrt(in_size)
        self.weights = [[self.add_parameter(f"weight_{i}_{j}", Scalar(gen.uniform(-bound, bound)))
                         for j in range(out_size)] for i in range(in_size)]
        self.bias = [self.add_parameter(f"bias_{j}", Scalar(gen.uniform(-bound, bound))) for j in range(out_size)]

    def forward(self, inputs: Sequence[Any]) -> List[Scalar]:
        inputs = list(inputs)
        if len(inputs) != self.in_size:
            raise ValueError(f"Linear({self.in_size}, {self.out_size}) expects {self.in_size} inputs, "
                             f"got {len(inputs)}")
        y = [b.value for b in self.bias]
        for x, row in zip(inputs, self.weights):
            for j, w in enumerate(row):
                y[j] = y[j] + w.value * x
        return y

    def __repr__(self) -> str:
        return f"Linear(in_size={self.in_size}, out_size={self.out_size})"


class Network(Module):
    """Binary classifier on 2-D points: Linear(2, hidden) -> relu -> Linear(hidden, 1) -> sigmoid.

    `forward(x)` is P(class 1 | x); `logit(x)` is the value before the sigmoid, which a
    numerically stable cross-entropy uses directly.
    """

    def __init__(self, hidden: int = 10, rng: RNG = None):
        super().__init__()
        gen = _rng(rng)
        self.layer1 = Linear(2, hidden, gen)
        self.layer2 = Linear(hidden, 1, gen)

    def logit(self, x: Sequence[Any]) -> Scalar:
        h = [v.relu() for v in self.layer1(x)]
        return self.layer2(h)[0]

    def forward(self, x: Sequence[Any]) -> Scalar:
        return self.logit(x).sigmoid()
