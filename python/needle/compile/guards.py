"""Guards: what a recorded step read besides its tensor arguments, checked before each replay.

A recording is only the eager step's twin for the Python values it was traced with. Like
TorchDynamo, `ndl.compile` records what the traced call read and checks, before every
replay, that each of those values is still what it was; when one is not, the function is
traced again for the new values (a second trace, kept beside the first: `model.eval()`
then `model.train()` switches between two recordings). What is guarded:

* **attributes read during the trace** on Modules, Optimizers, parameter groups and the
  objects of user classes that the function's code reaches (found by swapping those
  classes' `__getattribute__` for the duration of the trace): a Python number, string, bool
  or None by value (`module.training`, `Dropout.p`, a user module's `self.scale`, a loss
  object's `self.weight`, an optimizer's `nonzero` terms), anything else by identity (a
  sub-module, a tensor, a function or list stored on it, and a small list's or dict's items);
* **tensors whose data existed before the trace** and that the trace read (parameters,
  buffers, optimizer state, a global tensor): the tensor must still hold the same buffer.
  A tensor that is gone or holds another buffer (`p.data = ...`, an optimizer's state
  replaced) makes the recording stale: it is dropped and the step traced again;
* **the globals and closure variables the code loads** -- of the compiled function, of the
  functions and methods it reaches in user code (not needle's, numpy's or the standard
  library's), and of the classes of the user's modules that ran: numbers by value, objects
  by identity.

Values that are meant to change every step are runtime inputs instead, never guards: a
learning rate, momentum, betas or eps (HostScalars in the optimizer's parameter groups),
random draws, Adam's step count. A Python number of your own that changes every step
should be one too: an `ndl.HostScalar` (read at each replay) or a tensor argument.
"""
from __future__ import annotations

import dis
import inspect
import os
import struct
import sysconfig
import types
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Literal, Optional, Tuple, Type

if TYPE_CHECKING:
    from ..autograd import Value

__all__ = ["Guard", "BufferGuard", "TraceReads", "StaticReads"]

_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_SHALLOW_LIMIT = 64  # containers up to this many items are guarded item by item
_MISSING = object()


def _is_value(value: Any) -> bool:
    """True for values guarded by equality: Python scalars and tuples/frozensets of them."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, frozenset)) and len(value) <= _SHALLOW_LIMIT:
        return all(_is_value(v) for v in value)
    return False


def scalar_key(value: Any) -> Any:
    """A Python number as a hashable key that is equal only for the same type and bits: 1, 1.0
    and True differ, and so do 0.0 and -0.0 and nans of other signs or payloads (== would call
    the first ones equal and no nan equal to itself); other values as they are."""
    if isinstance(value, float):
        return (type(value).__name__, struct.pack("<d", value))
    if isinstance(value, (bool, int)):
        return (type(value).__name__, int(value))
    return value


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (float, int)):
        return scalar_key(a) == scalar_key(b)
    return a == b


class _Expect:
    """What a guarded value must be: equal to a Python value, or the very same object (and, for a
    small list, tuple or dict, the same items). Objects are held weakly where they can be, so a
    guard never keeps a replaced object alive; a dead reference can never match again."""

    __slots__ = ("kind", "value", "items")

    def __init__(self, value: Any):
        self.items = None
        if _is_value(value):
            self.kind, self.value = "value", value
            return
        try:
            self.kind, self.value = "weak", weakref.ref(value)
        except TypeError:
            self.kind, self.value = "strong", value
        if type(value) in (list, tuple, dict) and len(value) <= _SHALLOW_LIMIT:  # not subclasses
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            self.items = [(k, _Expect(v)) for k, v in pairs]

    @property
    def dead(self) -> bool:
        return self.kind == "weak" and self.value() is None

    def matches(self, current: Any) -> bool:
        if self.kind == "value":
            return _same_value(self.value, current)
        expected = self.value() if self.kind == "weak" else self.value
        if current is not expected:
            return False
        if self.items is not None:
            if len(current) != len(self.items):
                return False
            for key, item in self.items:
                if isinstance(current, dict):
                    if key not in current or not item.matches(current[key]):
                        return False
                elif not item.matches(current[key]):
                    return False
        return True

    def describe(self) -> str:
        if self.kind == "value":
            return repr(self.value)
        target = self.value() if self.kind == "weak" else self.value
        return "a replaced object" if target is None else f"the {type(target).__name__} it was"


class Guard:
    """One checked read: `check()` is None while it holds, else why not. `dead` guards can never
    hold again (what they watch is gone), so their recording is dropped."""

    __slots__ = ("what", "_read", "expect")

    def __init__(self, what: str, read: Callable[[], Any], value: Any):
        self.what, self._read, self.expect = what, read, _Expect(value)

    @property
    def dead(self) -> bool:
        return self.expect.dead

    def check(self) -> Optional[str]:
        try:
            current = self._read()
        except Exception:  # the attribute or global is gone
            current = _MISSING
        if self.expect.matches(current):
            return None
        shown = "missing" if current is _MISSING else repr(current) if _is_value(current) else \
            f"another {type(current).__name__}"
        return f"{self.what} was {self.expect.describe()} when traced, now {shown}"


class BufferGuard:
    """A tensor read by the trace whose data existed before it: it must still hold that buffer."""

    __slots__ = ("what", "tensor", "handle")

    def __init__(self, what: str, tensor, handle):
        self.what, self.tensor, self.handle = what, weakref.ref(tensor), weakref.ref(handle)

    @property
    def dead(self) -> bool:
        tensor, handle = self.tensor(), self.handle()
        if tensor is None or handle is None:
            return True
        data = tensor.cached_data
        return data is None or getattr(data, "_handle", None) is not handle

    def check(self) -> Optional[str]:
        if not self.dead:
            return None
        return (f"{self.what} was replaced after tracing (its data now lives in another buffer, or the tensor is "
                "gone)")


# --- reads during the trace -------------------------------------------------------------------

def _attribute(obj, name: str):
    ref = _weak(obj)
    return lambda: getattr(ref(), name)


def _weak(obj):
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


class TraceReads:
    """Collects, while a step is traced, the attributes and tensors it reads (see the module
    docstring); `guards()` turns them into the checks a replay makes. Use as a context manager
    around the traced call; `recording` says whether a read counts (not inside host calls)."""

    def __init__(self, classes: Iterable[type], value_class: Type[Value], counts: Callable[[], bool],
                 preexisting: Callable[[Any], bool]):
        self._classes = tuple(classes)
        self._value_class = value_class
        self._counts = counts
        self._preexisting = preexisting
        self._attrs: Dict[Tuple[int, str], Guard] = {}
        self._objects: Dict[int, Any] = {}  # id -> object whose attributes were read (kept for the class scan)
        self._tensors: Dict[int, BufferGuard] = {}
        self._created: "weakref.WeakSet" = weakref.WeakSet()
        self._saved: List[Tuple[type, str, Any]] = []

    # patched in for the trace only, so eager code pays nothing
    def __enter__(self) -> "TraceReads":
        reads = self

        def watching(plain):
            def getattribute(obj, name):
                value = plain(obj, name)
                if name[:2] != "__" and reads._counts():
                    reads._note_attribute(obj, name, value)
                return value
            return getattribute

        plains = [(cls, cls.__getattribute__) for cls in self._classes]  # before any is patched
        for cls, plain in plains:
            self._patch(cls, "__getattribute__", watching(plain))
        value_class = self._value_class
        plain_realize = value_class.realize_cached_data
        plain_init = value_class._init

        def realize_cached_data(value):
            data = plain_realize(value)
            if reads._counts():
                reads._note_tensor(value, data)
            return data

        def init(value, *args, **kwargs):
            reads._created.add(value)
            return plain_init(value, *args, **kwargs)

        self._patch(value_class, "realize_cached_data", realize_cached_data)
        self._patch(value_class, "_init", init)
        return self

    def __exit__(self, *exc) -> Literal[False]:
        for cls, name, old in reversed(self._saved):
            if old is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, old)
        self._saved = []
        return False

    def _patch(self, cls: type, name: str, fn) -> None:
        self._saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
        setattr(cls, name, fn)

    def _note_attribute(self, obj, name: str, value) -> None:
        key = (id(obj), name)
        if key in self._attrs:
            return
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            own = {}
        if name not in own and not _is_value(value):
            return  # methods and other class attributes: fixed by the object's class
        self._objects[id(obj)] = obj
        self._attrs[key] = Guard(f"{type(obj).__name__}.{name}", _attribute(obj, name), value)

    def _note_tensor(self, tensor, data) -> None:
        handle = getattr(data, "_handle", None)
        if handle is None or id(tensor) in self._tensors or tensor in self._created:
            return
        if self._preexisting(handle):
            shape = getattr(data, "shape", "?")
            self._tensors[id(tensor)] = BufferGuard(f"a tensor of shape {tuple(shape)} read by the step",
                                                    tensor, handle)

    def guards(self) -> list:
        return list(self._attrs.values()) + list(self._tensors.values())

    def objects(self) -> list:
        return list(self._objects.values())


# --- globals and closures -------------------------------------------------------------------------

_LIBRARY_ROOTS = tuple(os.path.realpath(p) + os.sep for p in {
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # needle itself
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
})


def _is_user_code(code: types.CodeType) -> bool:
    filename = code.co_filename
    if filename.startswith("<") and not filename.startswith("<ipython"):
        return filename != "<frozen>" and not filename.startswith("<frozen")
    return not os.path.realpath(filename).startswith(_LIBRARY_ROOTS)


def _global_names(code: types.CodeType, seen: set) -> set:
    """The global names the code (and the functions, lambdas and comprehensions inside it) loads:
    LOAD_GLOBAL/LOAD_NAME only, so that `opt.step()` does not guard a global named `step`."""
    if id(code) in seen:
        return set()
    seen.add(id(code))
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const, seen)
    return names


def _global_reader(namespace: dict, name: str):
    return lambda: namespace[name]


def _cell_reader(cell):
    return lambda: cell.cell_contents


class StaticReads:
    """What the code of a compiled function reaches, found before it is traced: guards on the
    globals and closure variables that it and the user code it reaches load (numbers by value,
    objects by identity), and the user classes whose instances it reaches (their attribute reads
    are then watched during the trace, like a Module's). Objects of the `skip` classes (tensors,
    modules, optimizers) are watched where they are read, not explored."""

    def __init__(self, skip: Tuple[type, ...] = ()):
        self.guards: List[Guard] = []
        self.classes: List[type] = []
        self._skip = skip
        self._seen_funcs: set = set()
        self._seen_codes: set = set()
        self._seen_objects: set = set()
        self._seen_globals: set = set()

    def function(self, func) -> "StaticReads":
        func = inspect.unwrap(func)
        if isinstance(func, types.MethodType):
            self.explore(func.__self__)
            func = func.__func__
        code = getattr(func, "__code__", None)
        if code is None or id(func) in self._seen_funcs or not _is_user_code(code):
            return self
        self._seen_funcs.add(id(func))
        namespace = func.__globals__
        for name in sorted(_global_names(code, self._seen_codes)):
            if name not in namespace or (id(namespace), name) in self._seen_globals:
                continue
            self._seen_globals.add((id(namespace), name))
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                continue  # an imported module
            self.guards.append(Guard(f"global {name!r} ({namespace.get('__name__', '?')})",
                                     _global_reader(namespace, name), value))
            self.explore(value)
        for var, cell in zip(code.co_freevars, func.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            self.guards.append(Guard(f"closure variable {var!r} of {func.__qualname__}", _cell_reader(cell), value))
            self.explore(value)
        return self

    def explore(self, value) -> None:
        if _is_value(value) or id(value) in self._seen_objects:
            return
        self._seen_objects.add(id(value))
        if isinstance(value, (types.FunctionType, types.MethodType)):
            self.function(value)
        elif type(value) in (list, tuple) and len(value) <= _SHALLOW_LIMIT:
            for item in value:
                self.explore(item)
        elif type(value) is dict and len(value) <= _SHALLOW_LIMIT:
            for item in value.values():
                self.explore(item)
        elif isinstance(value, self._skip):
            self.cls(type(value))
        elif _is_user_instance(value):
            self.cls(type(value))
            if type(value) not in self.classes:
                self.classes.append(type(value))
            for item in vars(value).values():
                self.explore(item)
        elif callable(value) and not isinstance(value, type):
            call = vars(type(value)).get("__call__")  # a user class's own __call__
            if isinstance(call, types.FunctionType):
                self.function(call)

    def cls(self, klass: type) -> None:
        """The globals of a class's methods (and its bases')."""
        for k in klass.__mro__:
            if id(k) in self._seen_objects:
                continue
            self._seen_objects.add(id(k))
            for attr in vars(k).values():
                if isinstance(attr, (staticmethod, classmethod)):
                    attr = attr.__func__
                elif isinstance(attr, property):
                    for accessor in (attr.fget, attr.fset):
                        if accessor is not None:
                            self.function(accessor)
                    continue
                if isinstance(attr, types.FunctionType):
                    self.function(attr)


def _is_user_instance(value) -> bool:
    """An instance of a class defined in user code (with a __dict__)."""
    cls = type(value)
    if cls.__module__ in ("builtins", "__builtin__") or not hasattr(value, "__dict__"):
        return False
    if isinstance(value, (type, types.ModuleType)):
        return False
    for attr in vars(cls).values():
        code = getattr(attr, "__code__", None)
        if code is not None:
            return _is_user_code(code)
    module = inspect.getmodule(cls)
    path = getattr(module, "__file__", None)
    return path is not None and not os.path.realpath(path).startswith(_LIBRARY_ROOTS)

