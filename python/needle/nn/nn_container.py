"""PyTorch's containers: ModuleList, ModuleDict, ParameterList, ParameterDict.

Each is a Module holding its items in one attribute (a list or a dict) whose items it
names directly, as PyTorch does: a ModuleList stored as `self.layers` gives the
state_dict keys `layers.0.weight`, `layers.1.weight`, ...; a ModuleDict's keys are its
items' names (`blocks.attn.weight`). Items are reachable by parameters(),
named_modules(), state_dict(), train()/eval(), apply() and .to() like any attribute.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union, cast

from needle.autograd import Tensor

from .nn_basic import Module, Parameter, _check_name, _child_lines, _collect, _module_arg, _position, _tree_repr

__all__ = ["ModuleList", "ModuleDict", "ParameterList", "ParameterDict"]


class _Indexed(Module):
    """The list behind ModuleList and ParameterList: items in `self._items`, named 0, 1, ..."""

    def __init__(self) -> None:
        super().__init__()
        self._items: List[Any] = []

    def _members(self) -> Iterator[Tuple[str, str, Any]]:
        for attr, value in self.__dict__.items():
            if attr == "_items":
                for i, item in enumerate(value):
                    for name, found in _collect(item, str(i)):
                        yield attr, name, found
            else:
                for name, found in _collect(value, attr):
                    yield attr, name, found

    def _item(self, value: Any) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return cast(Any, type(self))(self._items[index])
        return self._items[_position(index, len(self), type(self).__name__)]

    def __setitem__(self, index: int, value: Any) -> None:
        self._items[_position(index, len(self), type(self).__name__)] = self._item(value)

    def __delitem__(self, index: Union[int, slice]) -> None:
        if isinstance(index, slice):
            del self._items[index]
        else:
            del self._items[_position(index, len(self), type(self).__name__)]

    def append(self, value: Any) -> Any:
        """Add an item at the end; returns self."""
        self._items.append(self._item(value))
        return self

    def extend(self, values: Iterable[Any]) -> Any:
        """Append every item of an iterable; returns self. TypeError for a non-iterable."""
        if not hasattr(values, "__iter__"):
            raise TypeError(f"{type(self).__name__}.extend should be called with an iterable, got "
                            f"{type(values).__name__}")
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values: Iterable[Any]) -> Any:
        return self.extend(values)

    def __add__(self, other: Iterable[Any]) -> Any:
        return cast(Any, type(self))(list(self._items) + list(other))


class ModuleList(_Indexed):
    """PyTorch's ModuleList: a list of modules that the module holding it registers (state_dict
    keys `name.0.weight`), indexable (`layers[i]`, negative too; a slice is a ModuleList),
    with len, iteration, `in`, append, extend, insert, pop, `del`, `+` and `+=`. Not callable
    (no forward): loop over it. TypeError for an item that is not a Module; IndexError out
    of range. repr groups runs of identical layers, `(0-2): 3 x Linear(...)`, as PyTorch's.
    """

    def __init__(self, modules: Optional[Iterable[Module]] = None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _item(self, value: Any) -> Module:
        return _module_arg("ModuleList", value)

    def insert(self, index: int, module: Module) -> None:
        """Put a module before position index (list.insert's rule for any index)."""
        self._items.insert(index, self._item(module))

    def pop(self, index: int = -1) -> Module:
        """Remove and return the module at index (the last by default)."""
        return self._items.pop(_position(index, len(self), "ModuleList"))

    def __contains__(self, module: Any) -> bool:
        return any(m is module for m in self._items)

    def __repr__(self) -> str:
        lines, i = [], 0
        shown = [repr(m) for m in self._items]
        while i < len(shown):  # a run of layers printed alike is one line, PyTorch's format
            j = i
            while j + 1 < len(shown) and shown[j + 1] == shown[i]:
                j += 1
            label = str(i) if i == j else f"{i}-{j}"
            count = "" if i == j else f"{j - i + 1} x "
            lines.append(f"({label}): {count}" + "\n  ".join(shown[i].split("\n")))
            i = j + 1
        others = [(n, m) for n, m in self._direct_children() if not n.split(".")[0].isdigit()]
        return _tree_repr(type(self).__name__, self.extra_repr(), lines + _child_lines(others))


class _Keyed(Module):
    """The dict behind ModuleDict and ParameterDict: items in `self._dict`, named by key."""

    def __init__(self) -> None:
        super().__init__()
        self._dict: Dict[str, Any] = {}

    def _members(self) -> Iterator[Tuple[str, str, Any]]:
        for attr, value in self.__dict__.items():
            if attr == "_dict":
                for key, item in value.items():
                    for name, found in _collect(item, key):
                        yield attr, name, found
            else:
                for name, found in _collect(value, attr):
                    yield attr, name, found

    def _item(self, value: Any) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: the items are attributes too (PyTorch's
        # `self.transformer.wte` on a ModuleDict)
        items = self.__dict__.get("_dict")
        if items is not None and name in items:
            return items[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __setitem__(self, key: str, value: Any) -> None:
        _check_name("item", key)
        self._dict[key] = self._item(value)

    def __delitem__(self, key: str) -> None:
        del self._dict[key]

    def __len__(self) -> int:
        return len(self._dict)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._dict))

    def __contains__(self, key: Any) -> bool:
        return key in self._dict

    def keys(self) -> List[str]:
        return list(self._dict.keys())

    def values(self) -> List[Any]:
        return list(self._dict.values())

    def items(self) -> List[Tuple[str, Any]]:
        return list(self._dict.items())

    def pop(self, key: str) -> Any:
        """Remove the item `key` and return it (KeyError if absent)."""
        return self._dict.pop(key)

    def clear(self) -> None:
        self._dict.clear()

    def update(self, values: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> None:
        """Add or replace items from a mapping or an iterable of (key, value) pairs (PyTorch's
        update). TypeError for anything else or a pair that is not one."""
        if isinstance(values, Mapping):
            pairs = list(values.items())
        elif hasattr(values, "__iter__"):
            pairs = []
            for j, pair in enumerate(values):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(f"{type(self).__name__}.update: element #{j} should be a (key, value) pair, got "
                                    f"{pair!r}")
                pairs.append((pair[0], pair[1]))
        else:
            raise TypeError(f"{type(self).__name__}.update should be called with a mapping or an iterable of "
                            f"(key, value) pairs, got {type(values).__name__}")
        for key, value in pairs:
            self[key] = value


class ModuleDict(_Keyed):
    """PyTorch's ModuleDict: modules by string key, registered under their keys (state_dict
    `name.key.weight`), in insertion order; `md[key]`, `md.key` (an attribute, as PyTorch's:
    nanoGPT's `self.transformer.wte`), `in`, len, iteration over keys, keys/values/items,
    pop, clear, update. TypeError for a value that is not a Module or a key that is not a
    string; KeyError for an empty or dotted key."""

    def __init__(self, modules: Optional[Union[Mapping[str, Module], Iterable[Tuple[str, Module]]]] = None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def _item(self, value: Any) -> Module:
        return _module_arg("ModuleDict", value)


def _as_parameter(value: Any) -> Any:
    """PyTorch's ParameterList/Dict rule: a plain tensor becomes a Parameter (over the same
    data); anything else (a Parameter, None, other objects) is kept as it is."""
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        kind = "Parameter containing" if isinstance(value, Parameter) else "Tensor"
        size = "x".join(str(d) for d in value.shape)
        return f"{kind}: [needle.{value.dtype} of size {size}]"
    return f"Object of type: {type(value).__name__}"


class ParameterList(_Indexed):
    """PyTorch's ParameterList: parameters named 0, 1, ... (state_dict `name.0`); a plain Tensor
    given to it becomes a Parameter, as in PyTorch. The list API of ModuleList."""

    def __init__(self, values: Optional[Iterable[Any]] = None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def _item(self, value: Any) -> Any:
        return _as_parameter(value)

    def extra_repr(self) -> str:
        return "\n".join(f"  ({i}): {_describe(v)}" for i, v in enumerate(self._items))


class ParameterDict(_Keyed):
    """PyTorch's ParameterDict: parameters by string key (state_dict `name.key`), `pd[key]` and
    `pd.key`; a plain Tensor becomes a Parameter. The dict API of ModuleDict."""

    def __init__(self, parameters: Optional[Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]] = None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def _item(self, value: Any) -> Any:
        return _as_parameter(value)

    def extra_repr(self) -> str:
        return "\n".join(f"  ({k}): {_describe(v)}" for k, v in self._dict.items())
