"""A recorded step as a flat program: calls over planned buffers, replayed without Python objects.

`lower` turns a finished recording into a Program in five passes, read top to bottom:

1. `classify`: the buffers into *state* -- still alive once the traced call is over and its
   outputs are detached (parameters, optimizer state, gradients, running statistics,
   inputs, outputs), kept as they are -- and *temporaries* (dead by then); the inputs and
   outputs found among them; the inputs the step writes in place;
2. `accumulate_products` (accumulate.py): a sum of matrix products (a weight's gradient over
   the time steps of an LSTM) adds each product into the sum as sgemm computes it, where
   that gives the same bits; then `fuse_calls` (fusion.py, optional): chains of elementwise
   kernels become generated ones -- after a first `eliminate_common_calls`, while each call
   still writes one buffer (three LayerNorms of one input then compute its statistics once);
3. `eliminate_common_calls` (dedupe.py): a temporary that the step fills again with what
   another buffer already holds (the padding and im2col a convolution's weight gradient makes
   again) is not filled, its readers read the other buffer (after fusion: a chain fused into
   a loop costs nothing to compute again, where reading it back from memory would), unless
   the longer-lived buffers make the memory plan more than an eighth larger;
4. `plan_memory`: the temporaries' memory by liveness: walking the calls in order, a
   temporary takes a free buffer of its exact size and dtype (or a new one) at its first use
   and gives it back after its last, so the replay never holds more than the eager step held;
5. `bind`: every call to its buffers, once, as a zero-argument launch.

A replay copies the new inputs into the input buffers, runs the launches, writes the inputs
the step updated in place back to the caller's arrays and copies the outputs out.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, cast

from ..backend_ndarray.interface import out_position
from ..backend_ndarray.recording import Call, Recorder, Slot, TraceError, View
from ..dtypes import HostScalar
from .accumulate import accumulate_products
from .dedupe import eliminate_common_calls

__all__ = ["Program", "lower", "classify", "plan_memory", "bind"]


# --- 1. classify ------------------------------------------------------------------------------------

class Classified(NamedTuple):
    state: Dict[int, Any]                        # slot index -> buffer kept as it is
    temporaries: Dict[int, Tuple[Slot, Any]]     # slot index -> (slot, device): planned afresh
    inputs: List[Tuple[Optional[int], Any]]      # (slot index or None if unused, device) per argument
    outputs: List[Tuple[int, tuple]]             # (slot index, (shape, strides, offset, dtype, device))
    written_inputs: Tuple[int, ...]              # positions of the arguments the step writes in place


def classify(recorder: Recorder, input_buffers: List[Any], input_devices: List[Any],
             output_arrays: List[Any]) -> Classified:
    """State, temporaries, inputs and outputs of a finished recording. `input_buffers` and
    `output_arrays` are held by the caller (so they count as state)."""
    state: Dict[int, Any] = {}
    temporaries: Dict[int, Tuple[Slot, Any]] = {}
    slot: Optional[Slot]
    for slot in recorder.slots:
        buffer = slot.ref()
        if buffer is not None:
            state[slot.index] = buffer
        else:
            device = recorder.allocated.get(slot.index)
            if device is None:  # cannot happen: only buffers made while recording can be gone
                raise RuntimeError(f"needle.compile: {slot} vanished although it existed before the trace")
            temporaries[slot.index] = (slot, device)
    inputs: List[Tuple[Optional[int], Any]] = []
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
    _refuse_aliases(state, written)
    written_inputs = tuple(k for k, (index, _) in enumerate(inputs) if index is not None and index in written)
    return Classified(state, temporaries, inputs, outputs, written_inputs)


def _refuse_aliases(state: Dict[int, Any], written: set) -> None:
    """TraceError when two buffers of the step share memory and the step writes one of them.

    A program knows a buffer by its slot, so it takes two buffers for two separate memories:
    its fused loops, shared work and memory plan could then read one after the other was
    written, or before, unlike the eager step. Two tensors over one memory come from outside
    (ndl.from_numpy or DLPack on overlapping numpy arrays; a tensor's own views share its buffer
    and are known to be one)."""
    spans = []
    for index, buffer in state.items():
        nbytes = buffer.size * _itemsize(buffer.dtype)
        if nbytes:
            start = buffer.ptr()
            spans.append((start, start + nbytes, index))
    spans.sort()
    active: List[Tuple[int, int]] = []  # (end, slot index) of the spans begun so far
    for start, end, index in spans:
        active = [(e, i) for e, i in active if e > start]
        if any(index in written or i in written for _, i in active):
            raise TraceError(
                "needle.compile: two tensors the step uses share memory as separate buffers (made by "
                "ndl.from_numpy or DLPack over overlapping numpy arrays) and the step writes one of them; a "
                "replay could not keep the eager order of their reads and writes. Copy one of them first "
                "(ndl.Tensor(array) copies), or make both views of one tensor (slices of it)")
        active.append((end, index))


def _written_slots(calls: List[Call]) -> set:
    """The slot indices some call writes: a kernel's `out` argument, any buffer of a host call."""
    written = set()
    for call in calls:
        position = out_position(call.name) if call.kind == "kernel" and call.name is not None else None
        if position == -1:
            continue
        for i, arg in enumerate(call.args):
            if position is not None and i != position:
                continue
            if isinstance(arg, Slot):
                written.add(arg.index)
            elif isinstance(arg, View):
                written.add(arg.slot.index)
    return written


# --- 3. memory plan ---------------------------------------------------------------------------------

def plan_memory(calls: List[Call], state: Dict[int, Any], temporaries: Dict[int, Tuple[Slot, Any]]):
    """(buffers: slot index -> buffer for every slot, bytes of temporary memory): each temporary
    takes a freed buffer of its exact size and dtype, or a new one."""
    assignment, made = _assign_memory(calls, temporaries)
    new = [device.mod.Array(size, dtype) for device, dtype, size in made]
    buffers: Dict[int, Any] = dict(state)
    for index, k in assignment.items():
        buffers[index] = new[k]
    return buffers, _bytes(made)


def _assign_memory(calls: List[Call], temporaries: Dict[int, Tuple[Slot, Any]]):
    """The plan without the memory: (temporary slot index -> number of its buffer, and for each
    buffer number its (device, dtype, size)), walking the calls in order."""
    first: Dict[int, int] = {}
    last: Dict[int, int] = {}
    for i, call in enumerate(calls):
        for slot in call.slots():
            if slot.index in temporaries:
                first.setdefault(slot.index, i)
                last[slot.index] = i
    ending: Dict[int, List[int]] = {}
    for index, step in last.items():
        ending.setdefault(step, []).append(index)
    assignment: Dict[int, int] = {}
    made: List[Tuple[Any, str, int]] = []
    free: Dict[tuple, list] = {}
    for i, call in enumerate(calls):
        for slot in call.slots():
            index = slot.index
            if index in temporaries and first[index] == i:
                _, device = temporaries[index]
                pool = free.get((device, slot.dtype, slot.size))
                if pool:
                    assignment[index] = pool.pop()
                else:
                    assignment[index] = len(made)
                    made.append((device, slot.dtype, slot.size))
        # released after the call, so a call's output never shares memory with its inputs
        for index in ending.get(i, ()):
            slot, device = temporaries[index]
            free.setdefault((device, slot.dtype, slot.size), []).append(assignment[index])
    return assignment, made


def _bytes(made: List[Tuple[Any, str, int]]) -> int:
    return sum(size * _itemsize(dtype) for _, dtype, size in made)


@functools.lru_cache(maxsize=None)
def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


# --- 4. binding -------------------------------------------------------------------------------------

def _resolve(arg, buffers: Dict[int, Any]):
    if isinstance(arg, Slot):
        return buffers[arg.index]
    if isinstance(arg, View):
        return (buffers[arg.slot.index], arg.shape, arg.strides, arg.offset)
    return arg


# device name -> the module whose `split(name, kernel, args, prepare)` runs a large kernel call
# as row blocks on several threads (same bits) and whose `whole(name, launch)` gives the launch of
# a call that stays whole (a matmul first tells the spinning workers to sleep), imported when a
# program first binds a call of that device; a device without an entry runs every call whole
SPLITTERS: Dict[str, str] = {"cpu": "needle.compile.parallel_cpu"}


def _splitter(device_name: str):
    module = SPLITTERS.get(device_name)
    return None if module is None else importlib.import_module(module)


def bind(call: Call, buffers: Dict[int, Any]) -> Callable[[], Any]:
    """A zero-argument launch running `call` on its buffers; HostScalars are read at each run.

    A fused kernel builds its own launch (`prepare`); so may a kernel's device (the
    interface's optional `prepare(name, args)` hook: its views built once, since the buffers
    never change between replays), split into row blocks on several threads where the device
    has a splitter (`SPLITTERS`) and the call is large."""
    args = tuple(_resolve(a, buffers) for a in call.args)
    if call.kind == "fused":
        return call.fn.prepare(args)
    if call.kind == "kernel":
        prepare = getattr(call.device.mod, "prepare", None)
        launch = None
        if prepare is not None:
            splitter = _splitter(call.device.name)
            if splitter is not None:
                launch = splitter.split(call.name, call.fn, args, prepare)
            if launch is None:
                launch = prepare(call.name, args)
                if launch is not None and splitter is not None:
                    launch = splitter.whole(call.name, launch)
        if launch is not None:
            return launch
    fn = call.fn
    if any(isinstance(a, HostScalar) for a in args):
        def run():
            return fn(*(a.value if isinstance(a, HostScalar) else a for a in args))
        return run
    return functools.partial(fn, *args)


# --- the program ------------------------------------------------------------------------------------

class Program:
    """The replayable form of one traced call (see the module docstring)."""

    def __init__(self, calls: List[Call], runs: List[Callable], buffers: Dict[int, Any], classified: Classified,
                 temporary_bytes: int):
        self.calls = calls
        self.runs = runs
        self.buffers = buffers
        self.inputs = classified.inputs
        self.outputs = classified.outputs
        self.written_inputs = classified.written_inputs
        self.temporary_bytes = temporary_bytes

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
        # (an input written in place has a slot)
        written = [self.buffers[cast(int, self.inputs[k][0])] for k in self.written_inputs]
        self.write_back(written, arrays, positions=True)
        outputs = []
        for index, (shape, strides, offset, _dtype, device) in self.outputs:
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


def _deduplicated(calls: List[Call], classified: Classified) -> List[Call]:
    """`calls` after eliminate_common_calls where that keeps memory in bounds, else as they are."""
    deduplicated = eliminate_common_calls(calls, set(classified.state))
    if len(deduplicated) < len(calls):
        # a kept result lives on to its copy's last reader: taken when the plan grows by at most
        # an eighth (ResNet9 keeps its first im2col, 2.4 MB, from the forward pass to the weight
        # gradient: +0.01% here, as the copy's buffer is not needed), else memory wins
        with_copies = _bytes(_assign_memory(calls, classified.temporaries)[1])
        if _bytes(_assign_memory(deduplicated, classified.temporaries)[1]) <= with_copies * 9 // 8:
            return deduplicated
    return calls


def lower(recorder: Recorder, input_buffers: List[Any], input_devices: List[Any], output_arrays: List[Any],
          fuse: bool = False) -> Program:
    """A Program from a finished recording: the five passes of the module docstring."""
    classified = classify(recorder, input_buffers, input_devices, output_arrays)
    calls = accumulate_products(list(recorder.steps), set(classified.state))
    if fuse:
        from .fusion import fuse_calls

        # before fusion too: there each call writes one buffer, so a repeat inside what becomes a
        # group (the mean and variance of three LayerNorms of one input) is found and not computed
        calls = _deduplicated(calls, classified)
        calls = fuse_calls(calls, set(classified.state))
    calls = _deduplicated(calls, classified)
    buffers, temporary_bytes = plan_memory(calls, classified.state, classified.temporaries)
    runs = [bind(call, buffers) for call in calls]
    return Program(calls, runs, buffers, classified, temporary_bytes)
