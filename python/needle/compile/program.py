"""A recorded step as a flat program: calls over planned buffers, replayed without Python objects.

From the recorder's steps (kernel or host function, args holding Slots) a Program:

1. sorts the buffers into *state* -- still alive once the traced call is over and its
   outputs are detached (parameters, optimizer state, gradients, running statistics,
   inputs, outputs), kept as they are -- and *temporaries* (dead by then);
2. plans the temporaries' memory by liveness: walking the steps in order, a temporary
   takes a free buffer of its exact size and dtype (or a new one) at its first use and
   gives it back after its last, so the replay never holds more than the eager step held;
3. binds every call to its buffers once (`bind` below), optionally after fusing chains of
   elementwise kernels into generated ones (`fusion.py`);
4. replays: copy the new inputs into the input buffers, run the calls, write the inputs the
   step updated in place back to the caller's arrays, copy the outputs out.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Dict, List, Optional, Tuple

from ..backend_ndarray.interface import out_position
from ..backend_ndarray.recording import Slot
from ..dtypes import HostScalar


class Call:
    """One step: a function and its arguments (Slots resolved to buffers at bind time)."""

    __slots__ = ("fn", "args", "kind")

    def __init__(self, fn, args: tuple, kind: str):
        self.fn, self.args, self.kind = fn, args, kind

    def slots(self):
        for a in self.args:
            if isinstance(a, Slot):
                yield a
            elif isinstance(a, tuple) and a and isinstance(a[0], Slot):
                yield a[0]

    def __repr__(self) -> str:
        return f"Call({self.kind}, {self.args})"


def _resolve(arg, buffers: Dict[int, Any]):
    if isinstance(arg, Slot):
        return buffers[arg.index]
    if isinstance(arg, tuple) and arg and isinstance(arg[0], Slot):
        return (buffers[arg[0].index],) + arg[1:]
    return arg


def bind(fn, args: tuple, kind: str = ""):
    """A zero-argument callable running fn(*args); HostScalars are read at each run.

    A kernel's device module may offer `prepare(name, args)`: a launch with its views built
    once (the buffers never change between replays).
    """
    if hasattr(fn, "prepare"):  # a fused kernel builds its own launch
        return fn.prepare(args)
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    prepare = getattr(module, "prepare", None)
    if prepare is not None and kind != "host":
        launch = prepare(kind, args)
        if launch is not None:
            return launch
    if any(isinstance(a, HostScalar) for a in args):
        def run():
            return fn(*(a.value if isinstance(a, HostScalar) else a for a in args))
        return run
    return functools.partial(fn, *args)


class Program:
    """The replayable form of one traced call (see the module docstring)."""

    def __init__(self, calls: List[Call], state: Dict[int, Any], temporaries: Dict[int, Tuple[Slot, Any]],
                 inputs: List[Tuple[Optional[int], Any]], outputs: List[Tuple[int, tuple]],
                 written_inputs: Tuple[int, ...] = ()):
        self.calls = calls
        self.inputs = inputs          # (slot index, device) per tensor argument (None: unused)
        self.written_inputs = written_inputs  # positions of the arguments the step writes in place
        self.outputs = outputs        # (slot index, (shape, strides, offset, dtype, device)) per output tensor
        self.buffers: Dict[int, Any] = dict(state)
        self.temporary_bytes = 0
        self._plan(temporaries)
        self.runs = [bind(c.fn, tuple(_resolve(a, self.buffers) for a in c.args), c.kind) for c in calls]

    # --- memory ----------------------------------------------------------------------------
    def _plan(self, temporaries: Dict[int, Tuple[Slot, Any]]) -> None:
        """Give each temporary a buffer, reusing one whose last use is over (exact size and dtype)."""
        first, last = {}, {}
        for i, call in enumerate(self.calls):
            for slot in call.slots():
                if slot.index in temporaries:
                    first.setdefault(slot.index, i)
                    last[slot.index] = i
        ending: Dict[int, List[int]] = {}
        for index, step in last.items():
            ending.setdefault(step, []).append(index)
        free: Dict[tuple, list] = {}
        for i, call in enumerate(self.calls):
            for slot in call.slots():
                index = slot.index
                if index in temporaries and first[index] == i:
                    _, device = temporaries[index]
                    key = (device, slot.dtype, slot.size)
                    pool = free.get(key)
                    if pool:
                        self.buffers[index] = pool.pop()
                    else:
                        self.buffers[index] = device.mod.Array(slot.size, slot.dtype)
                        self.temporary_bytes += slot.size * _itemsize(slot.dtype)
            # released after the call, so a call's output never shares memory with its inputs
            for index in ending.get(i, ()):
                _, device = temporaries[index]
                slot = temporaries[index][0]
                free.setdefault((device, slot.dtype, slot.size), []).append(self.buffers[index])

    # --- replay ------------------------------------------------------------------------------
    def replay(self, arrays: List[Any]) -> List[Any]:
        """Run the step on new input arrays (NDArrays, one per tensor argument); returns the
        output arrays (fresh copies: the next replay overwrites the program's buffers)."""
        from ..backend_ndarray.ndarray import NDArray

        for (index, device), new in zip(self.inputs, arrays):
            if index is None:
                continue
            target = self.buffers[index]
            if new._handle is not target:
                device.compact(new._handle, target, new.shape, new.strides, new._offset)
        for run in self.runs:
            run()
        self.write_back([self.buffers[self.inputs[k][0]] for k in self.written_inputs], arrays, positions=True)
        outputs = []
        for index, (shape, strides, offset, dtype, device) in self.outputs:
            view = NDArray.make(shape, strides=strides, device=device, handle=self.buffers[index], offset=offset)
            outputs.append(view._copy())
        return outputs

    def write_back(self, sources: List[Any], targets: List[Any], positions: bool = False) -> None:
        """Copy what the step wrote in place into its arguments back to the caller's arrays.
        sources: the written input buffers (positions=True) or every input NDArray (then the
        written ones are picked); targets: the caller's NDArrays, one per tensor argument."""
        for i, k in enumerate(self.written_inputs):
            source = sources[i] if positions else sources[k]._handle
            target = targets[k]
            if target._handle is source:
                continue
            device = self.inputs[k][1]
            device.ewise_setitem(source, target._handle, target.shape, target.strides, target._offset)

    def __len__(self) -> int:
        return len(self.runs)


@functools.lru_cache(maxsize=None)
def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def build(recorder, input_buffers: List[Any], input_devices: List[Any], output_arrays: List[Any],
          fuse: bool = False) -> Program:
    """A Program from a finished recording. `input_buffers`/`output_arrays` are held by the
    caller (so they count as state); every other buffer that is still alive is state too."""
    state: Dict[int, Any] = {}
    temporaries: Dict[int, Tuple[Slot, Any]] = {}
    for slot in recorder.slots:
        buffer = slot.ref()
        if buffer is not None:
            state[slot.index] = buffer
        else:
            device = recorder.allocated.get(slot.index)
            if device is None:  # cannot happen: only buffers made while recording can be gone
                raise RuntimeError(f"needle.compile: {slot} vanished although it existed before the trace")
            temporaries[slot.index] = (slot, device)
    inputs = []
    for buffer, device in zip(input_buffers, input_devices):
        slot = recorder.find(buffer)
        inputs.append((None if slot is None else slot.index, device))
    outputs = []
    for arr in output_arrays:
        slot = recorder.find(arr._handle)
        if slot is None:  # an output no kernel touched (e.g. an input returned as it is)
            slot = recorder.slot(arr._handle)
            state[slot.index] = arr._handle
        outputs.append((slot.index, (arr.shape, arr.strides, arr._offset, arr.dtype, arr.device)))
    written = _written_slots(recorder.steps)
    written_inputs = tuple(k for k, (index, _) in enumerate(inputs) if index is not None and index in written)
    calls = [Call(fn, args, kind) for fn, args, kind in recorder.steps]
    if fuse:
        from .fusion import fuse_calls

        calls = fuse_calls(calls, set(state))
    return Program(calls, state, temporaries, inputs, outputs, written_inputs)


def _written_slots(steps) -> set:
    """The slot indices some recorded step writes."""
    written = set()
    for _, args, kind in steps:
        position = None if kind == "host" else out_position(kind)
        if position == -1:
            continue
        for i, arg in enumerate(args):
            if position is not None and i != position:
                continue
            if isinstance(arg, Slot):
                written.add(arg.index)
            elif isinstance(arg, tuple) and arg and isinstance(arg[0], Slot):
                written.add(arg[0].index)
    return written
