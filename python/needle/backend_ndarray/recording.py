"""Recording what the array layer does, for `needle.compile` to replay.

NDArray runs every kernel through `device.call(name, *args)` and allocates through
`device.allocate(size, dtype)`; while a Recorder is active it is each enabled device's
`recorder`, and those two methods hand the call to it. A call is appended to the
recorder's program as a `Call` with every buffer in its arguments replaced by a `Slot`
(a strided operand by a `View` of one), so that the compiler can later tell
temporaries (dead once the step is over) from state that lives on (parameters,
optimizer state, gradients, outputs), plan memory, and rebind the calls to the
buffers the replay uses.

Moving host data to a device (`from_numpy`) is refused too (TraceError naming the line):
the replay would reuse the traced numbers, whatever the Python code would make next time.

Host-side work that must happen again on every replay -- drawing random numbers,
advancing an optimizer's step count -- goes through `host_call(fn, *args)`: run
now, and recorded as one step of the program (the kernels it calls inside are not
recorded separately). Reading device data back to Python is refused while
recording (TraceError naming the user's line), because the replay cannot repeat
what Python decided from it; the library's own input checks read under
`validation()`, which is neither refused nor recorded.
"""
from __future__ import annotations

import contextlib
import os
import traceback
import weakref
from typing import Any, Dict, List, NamedTuple, Optional

from ..dtypes import HostScalar

__all__ = ["Recorder", "Slot", "View", "Call", "TraceError", "host_call", "validation", "constant_data",
           "is_recording", "active_recorder"]

_ACTIVE: Optional["Recorder"] = None
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TraceError(RuntimeError):
    """The traced function did something a replay cannot repeat."""


class Slot:
    """A buffer as the program knows it: an index, its size and dtype, and the buffer
    itself while it lives (a weak reference: the program must not keep temporaries alive)."""

    __slots__ = ("index", "size", "dtype", "ref", "__weakref__")

    def __init__(self, index: int, buffer):
        self.index = index
        self.size = buffer.size
        self.dtype = buffer.dtype
        self.ref = weakref.ref(buffer)

    def __repr__(self) -> str:
        return f"Slot({self.index}, {self.size}x{self.dtype})"


class View(NamedTuple):
    """A strided operand of a recorded call: a view (shape, strides in elements or None for the
    compact buffer, offset) of the buffer behind `slot` (the interface's operand tuple)."""

    slot: Slot
    shape: tuple
    strides: Optional[tuple]
    offset: int


class Call:
    """One step of a recording: `fn(*args)` with Slots and Views for buffers.

    kind: "kernel" (a device kernel: `name` is its interface name, `device` its device),
    "host" (a host_call, repeated on every replay) or "fused" (a generated kernel for a
    group of elementwise calls, made by the compiler).
    """

    __slots__ = ("fn", "args", "kind", "name", "device")

    def __init__(self, fn, args: tuple, kind: str, name: Optional[str] = None, device=None):
        self.fn, self.args, self.kind, self.name, self.device = fn, args, kind, name, device

    def slots(self):
        for a in self.args:
            if isinstance(a, Slot):
                yield a
            elif isinstance(a, View):
                yield a.slot

    def __repr__(self) -> str:
        return f"Call({self.name or self.kind}, {self.args})"


def is_recording() -> bool:
    return _ACTIVE is not None


def active_recorder() -> Optional["Recorder"]:
    return _ACTIVE


def host_call(fn, *args):
    """fn(*args) now; while recording (outside validation), also a step of the program."""
    recorder = _ACTIVE
    if recorder is None or recorder.depth:
        return fn(*args)
    recorder.steps.append(Call(fn, recorder.slots_of(args), "host"))
    recorder.depth += 1
    try:
        return fn(*args)
    finally:
        recorder.depth -= 1


@contextlib.contextmanager
def validation():
    """Input checks that read device data (an index's bounds): allowed, never recorded."""
    recorder = _ACTIVE
    if recorder is None:
        yield
        return
    recorder.depth += 1
    try:
        yield
    finally:
        recorder.depth -= 1


@contextlib.contextmanager
def constant_data():
    """Host data that needle computes from the Python numbers of a call (arange's bounds, which
    a compiled step guards or takes from shapes): recorded as a constant, not refused."""
    recorder = _ACTIVE
    if recorder is None:
        yield
        return
    recorder.constants += 1
    try:
        yield
    finally:
        recorder.constants -= 1


def _user_frame() -> str:
    """'file:line: code' of the innermost frame outside the needle package."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE):
            return f"{frame.filename}:{frame.lineno}: {frame.line}"
    return "(inside needle)"


class Recorder:
    """The program recorded so far (`steps`, a list of Calls) and a Slot per buffer seen."""

    def __init__(self) -> None:
        self.steps: List[Call] = []
        self.depth = 0  # > 0 inside a host call or a validation: nothing is recorded
        self.constants = 0  # > 0 inside constant_data(): host data becomes a recorded constant
        self._slots: Dict[int, Slot] = {}
        self.slots: List[Slot] = []
        self.allocated: Dict[int, Any] = {}  # slot index -> device, for buffers made while recording
        self._devices: list = []

    # --- buffers -> slots ---------------------------------------------------------------
    def slot(self, buffer) -> Slot:
        found = self._slots.get(id(buffer))
        if found is None or found.ref() is not buffer:  # an id can come back after a buffer dies
            found = Slot(len(self.slots), buffer)
            self._slots[id(buffer)] = found
            self.slots.append(found)
        return found

    def find(self, buffer) -> Optional[Slot]:
        """The slot of a buffer the program used, or None."""
        found = self._slots.get(id(buffer))
        return found if found is not None and found.ref() is buffer else None

    def slots_of(self, args: tuple) -> tuple:
        return tuple(self._convert(a) for a in args)

    def _convert(self, arg):
        if hasattr(arg, "ptr") and hasattr(arg, "dtype") and hasattr(arg, "size"):
            return self.slot(arg)
        if isinstance(arg, tuple) and len(arg) == 4 and hasattr(arg[0], "ptr"):  # an operand
            return View(self.slot(arg[0]), *arg[1:])
        return arg

    # --- the devices' hook -------------------------------------------------------------------
    def start(self, devices) -> None:
        """Become the recorder of `devices` (see BackendDevice.call and allocate)."""
        global _ACTIVE
        if _ACTIVE is not None:
            raise TraceError("needle.compile: a compiled function was called while another is being traced")
        for device in devices:
            device.recorder = self
            self._devices.append(device)
        _ACTIVE = self

    def stop(self) -> None:
        global _ACTIVE
        for device in self._devices:
            device.recorder = None
        self._devices = []
        if _ACTIVE is self:
            _ACTIVE = None

    def call(self, device, name: str, args: tuple):
        """Run kernel `name` of `device` on args, recording it (outside host calls and validation)."""
        kernel = getattr(device.mod, name)
        if self.depth:
            return kernel(*_resolved(args))
        if name == "to_numpy":
            raise TraceError(
                "needle.compile: the traced function reads tensor data into Python (.numpy(), .item(), "
                f"float(...)) at {_user_frame()}; a replay cannot repeat what Python decides from it. "
                "Move the read out of the compiled function, or run it without ndl.compile.")
        if name == "from_numpy" and not self.constants:
            raise TraceError(
                "needle.compile: the traced function makes a tensor from host data (numpy arrays, lists, "
                f"Python numbers: ndl.Tensor(...), an index list) at {_user_frame()}; a replay would reuse "
                "the traced values. Pass it as a tensor argument, make it once outside the compiled "
                "function, draw random numbers with ndl.randn/ndl.rand (drawn again on every replay), "
                "or use a Python number directly in the arithmetic.")
        self.steps.append(Call(kernel, self.slots_of(args), "kernel", name, device))
        return kernel(*_resolved(args))

    def allocated_now(self, device, buffer) -> None:
        """A buffer `device` made: a temporary of the step unless something keeps it."""
        if not self.depth:
            self.allocated[self.slot(buffer).index] = device


def _resolved(args: tuple) -> tuple:
    """HostScalars replaced by their current values (kernels take plain numbers)."""
    if any(isinstance(a, HostScalar) for a in args):
        return tuple(a.value if isinstance(a, HostScalar) else a for a in args)
    return args
