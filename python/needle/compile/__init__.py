"""`ndl.compile`: trace a training (or evaluation) step once, then replay it as a flat program.

    @ndl.compile
    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

Each call is keyed by its *signature*: the shapes, dtypes and devices of its tensor
arguments, its other arguments' values, grad mode, and the train/eval flags of every
module the function can reach (through its closure, its globals and its arguments).

* The first call of a signature runs eagerly: it creates what a step creates once
  (optimizer state).
* The second runs eagerly while the array layer records every kernel call
  (`needle.backend_ndarray.recording`); the recording becomes a `Program` whose
  temporaries are planned by liveness (`program.py`), with chains of elementwise
  kernels fused into generated kernels (`fusion.py`): numba loops on the cpu device
  (cached on disk), numba.cuda kernels on the cuda device (`fusion_cuda.py`).
* Later calls copy the new inputs into the recorded input buffers and replay: no
  Tensor objects, no graph, no topological sort, no allocation. Parameters, buffers
  and optimizer state are updated in place exactly as the eager step would.

What changes between steps stays a runtime input, never a constant: random draws
(dropout masks are drawn afresh from numpy's global RNG on every replay, in the
eager order, so a seeded compiled run reproduces itself and the eager run),
Adam's step count and bias corrections and a learning rate changed by a scheduler
(HostScalars read at each replay), the batch size of a last partial batch (a new
signature: traced anew).

What cannot be traced raises `TraceError` naming the line: reading tensor data into
Python inside the step (`if loss.numpy() > 1:` -- the replay cannot repeat what
Python decided), replacing a tensor's data (`p.data = ...`) instead of updating it
in place (`p.copy_(...)`), returning something other than tensors. A parameter
replaced after tracing, or a call on another device than the trace's, is a
RuntimeError / ValueError. We raise rather than fall back to eager, because a
silent fallback would hide a step that is many times slower than the user expects.
In numpy mode (NEEDLE_BACKEND=np) there is nothing to compile: the function runs eagerly.
"""
from __future__ import annotations

import functools
import gc
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import autograd
from ..autograd import Tensor, array_api, is_grad_enabled
from ..backend_ndarray.recording import Recorder, TraceError
from ..backend_selection import BACKEND
from .program import Program, build

__all__ = ["compile", "CompiledFunction", "TraceError"]


def compile(fn: Optional[Callable] = None, *, fuse: bool = True):  # noqa: A001  (PyTorch's name)
    """Compile `fn` (see the module docstring); also usable as `@ndl.compile(fuse=False)`.

    fuse=False replays the recorded kernels one by one, bit-identical to the eager step;
    fuse=True also fuses elementwise chains: bit-identical on the cpu device and under the
    CUDA simulator, within float rounding on a GPU (NVVM contracts a * b + c into an FMA).
    """
    if fn is None:
        return lambda f: CompiledFunction(f, fuse=fuse)
    return CompiledFunction(fn, fuse=fuse)


class _Trace:
    __slots__ = ("calls", "program", "devices", "guards", "structure")

    def __init__(self):
        self.calls = 0
        self.program: Optional[Program] = None
        self.devices: tuple = ()
        self.guards: List[Tuple[Any, Any, str]] = []


class CompiledFunction:
    """A function with its traces, one per signature (see `needle.compile`)."""

    def __init__(self, fn: Callable, *, fuse: bool = True):
        if not callable(fn):  # refused here, not at the first call deep inside the tracer
            raise TypeError(f"ndl.compile expects a function to compile, got {type(fn).__name__} {fn!r:.60}")
        self.fn = fn
        self.fuse = fuse
        self._traces: Dict[tuple, _Trace] = {}
        self._modules: Optional[list] = None
        self._arity: Optional[int] = None
        functools.update_wrapper(self, fn)

    def reset(self) -> None:
        """Forget every trace (the next calls trace again)."""
        self._traces.clear()
        self._modules = None

    @property
    def programs(self) -> List[Program]:
        return [t.program for t in self._traces.values() if t.program is not None]

    def __call__(self, *args, **kwargs):
        if BACKEND != "nd":
            return self.fn(*args, **kwargs)
        arity = len(args) + len(kwargs)
        if self._arity is None:
            self._arity = arity
        elif arity != self._arity:
            raise TypeError(f"{self.__name__} was compiled for calls with {self._arity} arguments, "
                            f"called with {arity}; compile another function for the other form")
        tensors: List[Tensor] = []
        key = (_signature(args, tensors), _signature(kwargs, tensors), is_grad_enabled(), self._flags())
        trace = self._traces.get(key)
        if trace is None:
            self._check_devices(key, tensors)
            trace = self._traces[key] = _Trace()
            trace.devices = tuple(t.device for t in tensors)
        if trace.program is not None:
            self._check_guards(trace)
            outputs = trace.program.replay([t.realize_cached_data() for t in tensors])
            return _rebuild(trace.structure, [Tensor.make_const(o) for o in outputs])
        trace.calls += 1
        if trace.calls == 1:
            return self.fn(*args, **kwargs)
        return self._trace(trace, args, kwargs, tensors)

    # --- signatures ----------------------------------------------------------------------
    def _flags(self) -> tuple:
        if self._modules is None:
            self._modules = _reachable_modules(self.fn)
        return tuple(m.training for m in self._modules)

    def _check_devices(self, key, tensors) -> None:
        devices = tuple(t.device for t in tensors)
        for other, trace in self._traces.items():
            if trace.devices and trace.devices != devices and len(trace.devices) == len(devices):
                raise ValueError(f"{self.__name__} was traced with tensors on {_names(trace.devices)} and is now "
                                 f"called with tensors on {_names(devices)}; move them with .to(), or compile a "
                                 "second function for the other device")

    def _check_guards(self, trace: _Trace) -> None:
        for ref, handle, name in trace.guards:
            tensor = ref()
            if tensor is not None and tensor.realize_cached_data()._handle is not handle():
                raise RuntimeError(
                    f"{self.__name__}: {name} was replaced after tracing (its data now lives in another buffer), "
                    "so the recorded step would keep using the old one. Update it in place (copy_, "
                    "load_state_dict), or call .reset() on the compiled function to trace it again.")

    # --- tracing ------------------------------------------------------------------------------
    def _trace(self, trace: _Trace, args, kwargs, tensors: List[Tensor]):
        from ..backend_selection import all_devices

        # each tensor argument gets a buffer of its own, which the replays copy new inputs into
        inputs = [Tensor.make_const(array_api.array(t.realize_cached_data(), dtype=None),
                                    requires_grad=t.requires_grad) for t in tensors]
        swap = dict(zip(map(id, tensors), inputs))
        t_args, t_kwargs = _substitute(args, swap), _substitute(kwargs, swap)
        input_buffers = [x.realize_cached_data()._handle for x in inputs]
        guards = self._guard_tensors()
        recorder = Recorder()
        recorder.start([d for d in all_devices() if d.enabled()])
        autograd.LEAF_GRAD_GRAPHS = False
        try:
            result = self.fn(*t_args, **t_kwargs)
        finally:
            autograd.LEAF_GRAD_GRAPHS = True
            recorder.stop()
        structure, out_tensors = _flatten(result, self.__name__)
        out_arrays = [t.realize_cached_data() for t in out_tensors]
        del result, out_tensors, t_args, t_kwargs, swap
        gc.collect()  # cycles among the step's temporaries must not pass for state
        _check_no_rebinding(recorder)
        trace.program = build(recorder, input_buffers, [t.device for t in inputs], out_arrays, fuse=self.fuse)
        trace.structure = structure
        trace.guards = guards
        return _rebuild(structure, [Tensor.make_const(a._copy()) for a in out_arrays])

    def _guard_tensors(self) -> list:
        import weakref

        from ..nn.nn_basic import _named_tensors

        guards = []
        for module in self._modules or []:
            for name, t in _named_tensors(module.__dict__, ""):
                if t.cached_data is not None and hasattr(t.cached_data, "_handle"):
                    # weak references both: holding a buffer would make a replaced one pass for state
                    guards.append((weakref.ref(t), weakref.ref(t.cached_data._handle),
                                   f"{type(module).__name__}.{name}"))
        return guards


def _names(devices) -> str:
    return ", ".join(sorted({str(d) for d in devices}))


def _signature(value, tensors: list):
    """A hashable description of an argument; Tensors are collected in order."""
    if isinstance(value, Tensor):
        tensors.append(value)
        return ("T", value.shape, array_api.dtype_name(value.dtype), str(value.device), value.requires_grad)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(_signature(v, tensors) for v in value)
    if isinstance(value, dict):
        return ("dict",) + tuple((k, _signature(v, tensors)) for k, v in sorted(value.items()))
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("V", value)
    return ("O", id(value))


def _substitute(value, swap: dict):
    if isinstance(value, Tensor):
        return swap.get(id(value), value)
    if isinstance(value, tuple):
        return tuple(_substitute(v, swap) for v in value)
    if isinstance(value, list):
        return [_substitute(v, swap) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, swap) for k, v in value.items()}
    return value


def _flatten(value, name: str):
    """(structure, tensors) of what the traced function returned: Tensors in tuples, lists and
    dicts, or None. Anything else would be a constant of the trace: TraceError."""
    tensors: List[Tensor] = []

    def walk(v):
        if isinstance(v, Tensor):
            tensors.append(v)
            return ("T",)
        if v is None:
            return ("N",)
        if isinstance(v, (tuple, list)):
            return (type(v).__name__,) + tuple(walk(x) for x in v)
        if isinstance(v, dict):
            return ("dict",) + tuple((k, walk(x)) for k, x in v.items())
        raise TraceError(f"{name} returned a {type(v).__name__}; a compiled function returns tensors (in tuples, "
                         "lists or dicts) or None, since a Python value would be frozen at its traced value")

    return walk(value), tensors


def _rebuild(structure, tensors: List[Tensor]):
    it = iter(tensors)

    def build(s):
        kind = s[0]
        if kind == "T":
            return next(it)
        if kind == "N":
            return None
        if kind == "dict":
            return {k: build(x) for k, x in s[1:]}
        items = [build(x) for x in s[1:]]
        return tuple(items) if kind == "tuple" else items

    return build(structure)


def _check_no_rebinding(recorder: Recorder) -> None:
    """A buffer that existed before the trace, was used by it, and is gone afterwards was a
    tensor's data replaced (`t.data = ...`): the replay would keep reading the old buffer."""
    for slot in recorder.slots:
        if slot.ref() is None and slot.index not in recorder.allocated:
            raise TraceError(
                "needle.compile: the traced function replaced a tensor's data (Tensor.data = ...) instead of "
                "updating it in place; use tensor.copy_(new_value) so that the replay writes where it reads")


def _reachable_modules(fn) -> list:
    """Every Module the function can reach: through a bound method's object, its closure, the
    globals its code names, and (one level down) attributes of those objects."""
    from ..nn.nn_basic import Module
    from ..optim import Optimizer

    roots = []
    target = inspect.unwrap(fn)
    if inspect.ismethod(target):
        roots.append(target.__self__)
        target = target.__func__
    code = getattr(target, "__code__", None)
    if target.__closure__:
        for cell in target.__closure__:
            try:
                roots.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
    if code is not None:
        names = set(code.co_names)
        for const in code.co_consts:  # nested functions and comprehensions
            if hasattr(const, "co_names"):
                names.update(const.co_names)
        roots.extend(target.__globals__[n] for n in names if n in target.__globals__)
    found, seen = [], set()

    def add(obj, depth):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Module):
            for m in [obj] + obj._children():
                if id(m) not in seen or m is obj:
                    seen.add(id(m))
                    found.append(m)
        elif isinstance(obj, Optimizer):
            return
        elif depth < 1 and hasattr(obj, "__dict__") and not inspect.ismodule(obj) and not inspect.isclass(obj):
            for value in list(vars(obj).values()):
                add(value, depth + 1)

    for root in roots:
        add(root, 0)
    return found
