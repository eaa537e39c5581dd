"""`ndl.compile`: trace a training (or evaluation) step once, then replay it as a flat program.

    @ndl.compile
    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

Each call is keyed by its *signature*: the shapes, dtypes and devices of its tensor
arguments (and which of them share memory), its other arguments' values, and grad mode.

* The first call of a signature runs eagerly: it creates what a step creates once
  (optimizer state).
* The second runs eagerly while the array layer records every kernel call
  (`needle.backend_ndarray.recording`) and the guards (`guards.py`) note what Python values
  the step read; `program.lower` turns the recording into a `Program` in named passes:
  classify the buffers, fuse chains of elementwise kernels into generated kernels
  (`fusion.py`; numba loops on the cpu device, cached on disk, `fusion_cpu.py`;
  numba.cuda kernels on the cuda device, `fusion_cuda.py`), plan the temporaries' memory
  by liveness, bind every call to its buffers.
* Later calls check the guards, copy the new inputs into the recorded input buffers and
  replay: no Tensor objects, no graph, no topological sort, no allocation. Parameters,
  buffers and optimizer state are updated in place exactly as the eager step would, and
  an argument the step writes in place (`x.copy_(...)`) is written back to the caller's tensor.

A replay gives the eager step's result or does not run. The rules:

1. **What the step read from outside is guarded** (TorchDynamo's design, see `guards.py`):
   the attributes it read on modules, optimizers and user objects (`model.eval()` /
   `train()` of any module that ran, however the step reached it; `Dropout.p`), the
   globals and closure variables its code loads (a global loss weight; a global tensor
   rebound to another object), and every tensor whose data it read (a parameter or an
   optimizer state replaced). When a guard fails the step is traced again for the new
   values; a recording that can never match again is dropped. At most `max_traces` traces
   (8, like torch.compile's cache limit) are made: past that, a RuntimeError names what
   kept changing.
2. **What changes every step is a runtime input, never a constant**: random draws
   (dropout masks are drawn afresh from numpy's global RNG on every replay, in the eager
   order), Adam's step count and bias corrections, and every optimizer hyperparameter
   (lr, momentum, betas, eps, weight decay: HostScalars in its parameter groups, so a
   scheduler or `opt.momentum = 0.95` reaches the replay). A number of your own that
   changes every step should be an `ndl.HostScalar` or a tensor argument: as a plain
   float it would trace again each time it changes.
3. **What a replay cannot repeat raises TraceError naming the line**: reading tensor data
   into Python (`if loss.numpy() > 1:`), building a tensor from host data inside the step
   (`ndl.Tensor(np.random.randn(3))`, an index list: pass it as an argument, make it
   outside, or draw it with `ndl.randn`), replacing a tensor's data (`p.data = ...`)
   instead of updating it in place (`p.copy_(...)`), returning something other than
   tensors, writing in place to an argument that shares memory with another argument.
4. Python side effects of the step are not repeated: appending to a list, printing,
   incrementing a counter attribute run during the eager and traced calls only (a counter
   the step reads is a guard, so such a step traces again and again and hits the limit).
5. A call on another device than the trace's is a ValueError.

We raise rather than fall back to eager, because a silent fallback would hide a step that
is many times slower than the user expects. In numpy mode (NEEDLE_BACKEND=np) there is
nothing to compile: the function runs eagerly.
"""
from __future__ import annotations

import functools
import gc
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from .. import autograd
from ..autograd import Tensor, Value, array_api, is_grad_enabled
from ..backend_ndarray.recording import Recorder, TraceError
from ..backend_selection import BACKEND
from .guards import StaticReads, TraceReads, scalar_key
from .program import Program, lower

__all__ = ["compile", "CompiledFunction", "TraceError"]


def compile(fn: Optional[Callable] = None, *, fuse: bool = True, max_traces: int = 8):  # noqa: A001  (PyTorch's name)
    """Compile `fn` (see the module docstring); also usable as `@ndl.compile(fuse=False)`.

    fuse=False replays the recorded kernels one by one, bit-identical to the eager step;
    fuse=True also fuses elementwise chains: bit-identical on the cpu device and under the
    CUDA simulator, within float rounding on a GPU (NVVM contracts a * b + c into an FMA).
    max_traces bounds how many times the function is traced (new signatures and guard
    failures together) before a RuntimeError says what keeps changing.
    """
    if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 1:
        raise ValueError(f"ndl.compile: max_traces must be an integer >= 1, got {max_traces!r}")
    if fn is None:
        return lambda f: CompiledFunction(f, fuse=fuse, max_traces=max_traces)
    return CompiledFunction(fn, fuse=fuse, max_traces=max_traces)


class _Trace:
    """One recording of the function: its call count (the first call runs eagerly, the second
    records), then the Program, its guards, and the structure of what it returns."""

    __slots__ = ("calls", "program", "devices", "guards", "structure", "grad_arguments")

    def __init__(self, devices: tuple):
        self.calls = 0
        self.program: Optional[Program] = None
        self.devices = devices
        self.guards: list = []
        self.structure = None
        self.grad_arguments: List[int] = []  # tensor arguments whose .grad the step sets (backward)

    def failure(self) -> Optional[str]:
        """Why this recording does not apply now (the first failing guard), or None."""
        for guard in self.guards:
            reason = guard.check()
            if reason is not None:
                return reason
        return None

    @property
    def dead(self) -> bool:
        return any(guard.dead for guard in self.guards)


class CompiledFunction:
    """A function with its traces, several per signature (see `needle.compile`)."""

    __name__: str  # the function's, like its other attributes (functools.update_wrapper)

    def __init__(self, fn: Callable, *, fuse: bool = True, max_traces: int = 8):
        if not callable(fn):  # refused here, not at the first call deep inside the tracer
            raise TypeError(f"ndl.compile expects a function to compile, got {type(fn).__name__} {fn!r:.60}")
        self.fn = fn
        self.fuse = fuse
        self.max_traces = max_traces
        self._traces: Dict[tuple, List[_Trace]] = {}
        self._arity: Optional[int] = None
        self._made = 0  # traces made since the last reset, for the limit
        self._why: List[str] = []  # why each trace after the first was made
        functools.update_wrapper(self, fn)

    def reset(self) -> None:
        """Forget every trace (the next calls trace again) and the count toward max_traces."""
        self._traces.clear()
        self._made = 0
        self._why = []

    @property
    def programs(self) -> List[Program]:
        return [t.program for traces in self._traces.values() for t in traces if t.program is not None]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if BACKEND != "nd":
            return self.fn(*args, **kwargs)
        arity = len(args) + len(kwargs)
        if self._arity is None:
            self._arity = arity
        elif arity != self._arity:
            raise TypeError(f"{self.__name__} was compiled for calls with {self._arity} arguments, "
                            f"called with {arity}; compile another function for the other form")
        tensors: List[Tensor] = []
        key: tuple = (_signature(args, tensors), _signature(kwargs, tensors), is_grad_enabled())
        key += (_aliasing(tensors),)
        traces = self._traces.get(key)
        if traces is None:
            self._check_devices(tensors)
            traces = self._traces[key] = []
        pending, reasons = None, []
        for trace in list(traces):
            if trace.program is None:
                pending = trace
                continue
            reason = trace.failure()
            if reason is None:
                return self._replay(trace, tensors)
            if trace.dead:  # what it recorded is gone for good
                traces.remove(trace)
            reasons.append(reason)
        if pending is None:
            pending = self._new_trace(tensors, reasons or ["a new signature: " + _describe(key)])
            traces.append(pending)
        pending.calls += 1
        if pending.calls == 1:
            return self.fn(*args, **kwargs)
        return self._trace(pending, args, kwargs, tensors)

    def _new_trace(self, tensors: List[Tensor], reasons: List[str]) -> _Trace:
        if self._made >= self.max_traces:
            seen = "; ".join(dict.fromkeys(self._why[-4:] + reasons[:1]))
            raise RuntimeError(
                f"{self.__name__} has been traced {self._made} times (max_traces={self.max_traces}) and needs another "
                f"trace: {reasons[0]}. What changed between calls: {seen}. A value that changes every step should be "
                "a runtime input (an ndl.HostScalar, a tensor argument, a tensor updated in place with copy_); "
                "otherwise raise max_traces, or call .reset() after an intended change.")
        if self._made:
            self._why.append(reasons[0])
        self._made += 1
        return _Trace(tuple(t.device for t in tensors))

    def _replay(self, trace: _Trace, tensors: List[Tensor]):
        program = cast(Program, trace.program)  # only traces with a program are replayed
        outputs = program.replay([t.realize_cached_data() for t in tensors])
        return _rebuild(trace.structure, [Tensor.make_const(o) for o in _set_argument_grads(trace, tensors, outputs)])

    def _check_devices(self, tensors) -> None:
        devices = tuple(t.device for t in tensors)
        for traces in self._traces.values():
            for trace in traces:
                if trace.devices and trace.devices != devices and len(trace.devices) == len(devices):
                    raise ValueError(f"{self.__name__} was traced with tensors on {_names(trace.devices)} and is now "
                                     f"called with tensors on {_names(devices)}; move them with .to(), or compile a "
                                     "second function for the other device")

    # --- tracing ------------------------------------------------------------------------------
    def _trace(self, trace: _Trace, args, kwargs, tensors: List[Tensor]):
        from ..backend_selection import all_devices
        from ..nn.nn_basic import Module
        from ..optim.optimizers import Optimizer, ParamGroup

        # each tensor argument gets a buffer of its own, which the replays copy new inputs into
        inputs = [Tensor.make_const(array_api.array(t.realize_cached_data(), dtype=None),
                                    requires_grad=t.requires_grad) for t in tensors]
        swap = dict(zip(map(id, tensors), inputs))
        t_args, t_kwargs = _substitute(args, swap), _substitute(kwargs, swap)
        input_buffers = [x.realize_cached_data()._handle for x in inputs]
        own_inputs = set(map(id, input_buffers))
        static = StaticReads(skip=(Tensor, Module, Optimizer)).function(self.fn)
        recorder = Recorder()

        def preexisting(handle) -> bool:
            if id(handle) in own_inputs:
                return False
            slot = recorder.find(handle)
            return slot is None or slot.index not in recorder.allocated

        reads = TraceReads([Module, Optimizer, ParamGroup] + static.classes, Value,
                           counts=lambda: recorder.depth == 0, preexisting=preexisting)
        recorder.start([d for d in all_devices() if d.enabled()])
        autograd.LEAF_GRAD_GRAPHS = False
        autograd.RECORDING_ERROR = TraceError
        try:
            with reads:
                result = self.fn(*t_args, **t_kwargs)
        finally:
            autograd.LEAF_GRAD_GRAPHS = True
            autograd.RECORDING_ERROR = RuntimeError
            recorder.stop()
        structure, out_tensors = _flatten(result, self.__name__)
        out_arrays = [t.realize_cached_data() for t in out_tensors]
        # a backward inside the step sets the .grad of tensor arguments (their stand-ins here): the
        # gradients are outputs too, and every call gives them to the caller's tensors
        trace.grad_arguments = [k for k, x in enumerate(inputs) if x.grad is not None]
        out_arrays += [inputs[k].grad.realize_cached_data() for k in trace.grad_arguments]
        del result, out_tensors, t_args, t_kwargs, swap
        gc.collect()  # cycles among the step's temporaries must not pass for state
        _check_no_rebinding(recorder)
        program = lower(recorder, input_buffers, [t.device for t in inputs], out_arrays, fuse=self.fuse)
        _check_aliased_writes(self.__name__, program, tensors)
        for obj in reads.objects():
            static.cls(type(obj))  # the globals their methods load
        trace.program = program
        trace.structure = structure
        trace.guards = static.guards + reads.guards()
        # the traced call wrote its in-place updates of arguments into the copies: pass them on
        program.write_back([x.realize_cached_data() for x in inputs], [t.realize_cached_data() for t in tensors])
        outputs = _set_argument_grads(trace, tensors, [a._copy() for a in out_arrays])
        return _rebuild(structure, [Tensor.make_const(a) for a in outputs])


def _set_argument_grads(trace: _Trace, tensors: List[Tensor], outputs: list) -> list:
    """Give the gradients at the end of `outputs` to the tensor arguments whose .grad the step set
    (as the eager step's backward does); returns the function's own outputs."""
    n = len(outputs) - len(trace.grad_arguments)
    for k, grad in zip(trace.grad_arguments, outputs[n:]):
        tensors[k].grad = Tensor.make_const(grad)
    return outputs[:n]


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
        return ("V", scalar_key(value))  # by type and bits: 1.0 and 1, 0.0 and -0.0 trace apart
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
    """The function's result from its flattened structure and tensors, in order."""
    return _build(structure, iter(tensors))


def _build(s, it):
    # a module-level function: a nested one that calls itself is a reference cycle holding the
    # outputs until the garbage collector runs (a replay's large outputs then pile up)
    kind = s[0]
    if kind == "T":
        return next(it)
    if kind == "N":
        return None
    if kind == "dict":
        return {k: _build(x, it) for k, x in s[1:]}
    items = [_build(x, it) for x in s[1:]]
    return tuple(items) if kind == "tuple" else items


def _check_no_rebinding(recorder: Recorder) -> None:
    """A buffer that existed before the trace, was used by it, and is gone afterwards was a
    tensor's data replaced (`t.data = ...`): the replay would keep reading the old buffer."""
    for slot in recorder.slots:
        if slot.ref() is None and slot.index not in recorder.allocated:
            raise TraceError(
                "needle.compile: the traced function replaced a tensor's data (Tensor.data = ...) instead of "
                "updating it in place; use tensor.copy_(new_value) so that the replay writes where it reads")


def _aliasing(tensors: List[Tensor]) -> tuple:
    """Which tensor arguments share a buffer: for each, the position of the first one with the
    same buffer (a different pattern is a different signature)."""
    first: Dict[int, int] = {}
    pattern = []
    for i, t in enumerate(tensors):
        handle = getattr(t.realize_cached_data(), "_handle", None)
        pattern.append(first.setdefault(id(handle), i))
    return tuple(pattern)


def _check_aliased_writes(name: str, program: Program, tensors: List[Tensor]) -> None:
    """Arguments are traced as separate copies, so an in-place write to one that shares memory with
    another would not be seen through the other, as it is eagerly."""
    pattern = _aliasing(tensors)
    for k in program.written_inputs:
        if sum(1 for p in pattern if p == pattern[k]) > 1:
            raise TraceError(f"{name} writes in place to its tensor argument {k}, which shares memory with another "
                             "argument; a compiled step copies its arguments, so pass tensors that do not overlap")


def _describe(key: tuple) -> str:
    """A short description of a signature, for messages."""
    shapes = [f"{s[1]}" for s in _tensor_entries(key[:2])]
    return f"tensor shapes {', '.join(shapes) or 'none'}, grad mode {'on' if key[2] else 'off'}"


def _tensor_entries(value):
    if isinstance(value, tuple):
        if value and value[0] == "T":
            yield value
            return
        for v in value:
            yield from _tensor_entries(v)
