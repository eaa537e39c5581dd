"""Recording what the array layer does, for `needle.compile` to replay.

While a Recorder is active, every kernel call and every buffer allocation on every
enabled device goes through it: the kernels of each device are swapped for
recording wrappers in the device object (no cost at all when nothing records).
A call is appended to the recorder's program as `(kernel, args)` with every buffer
in `args` replaced by a `Slot`, so that the compiler can later tell temporaries
(dead once the step is over) from state that lives on (parameters, optimizer
state, gradients, outputs), plan memory, and rebind the calls to the buffers the
replay uses.

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
from typing import Any, Dict, List, Optional, Tuple

from ..dtypes import HostScalar

__all__ = ["Recorder", "Slot", "TraceError", "host_call", "validation", "constant_data", "is_recording",
           "active_recorder"]

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


def is_recording() -> bool:
    return _ACTIVE is not None


def active_recorder() -> Optional["Recorder"]:
    return _ACTIVE


def host_call(fn, *args):
    """fn(*args) now; while recording (outside validation), also a step of the program."""
    recorder = _ACTIVE
    if recorder is None or recorder.depth:
        return fn(*args)
    recorder.steps.append((fn, recorder.slots_of(args), "host"))
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
    """The program recorded so far: steps (kernel or host function, args with Slots, kind)
    and a Slot per buffer seen."""

    def __init__(self):
        self.steps: List[Tuple[Any, tuple, str]] = []
        self.depth = 0  # > 0 inside a host call or a validation: nothing is recorded
        self.constants = 0  # > 0 inside constant_data(): host data becomes a recorded constant
        self._slots: Dict[int, Slot] = {}
        self.slots: List[Slot] = []
        self.allocated: Dict[int, Any] = {}  # slot index -> device, for buffers made while recording
        self._installed: List[Tuple[Any, List[str]]] = []

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
            return (self.slot(arg[0]),) + arg[1:]
        return arg

    # --- installing the wrappers ------------------------------------------------------------
    def start(self, devices) -> None:
        global _ACTIVE
        if _ACTIVE is not None:
            raise TraceError("needle.compile: a compiled function was called while another is being traced")
        from .interface import REQUIRED_KERNELS

        for device in devices:
            names = [n for n in REQUIRED_KERNELS if n != "Array"]
            if hasattr(device.mod, "matmul_tiled"):
                names.append("matmul_tiled")
            for name in names:
                device.__dict__[name] = self._wrap(name, getattr(device.mod, name))
            device.__dict__["Array"] = self._wrap_alloc(device, device.mod.Array)
            self._installed.append((device, names + ["Array"]))
        _ACTIVE = self

    def stop(self) -> None:
        global _ACTIVE
        for device, names in self._installed:
            for name in names:
                device.__dict__.pop(name, None)  # the next look-up caches the plain kernel again
        self._installed = []
        if _ACTIVE is self:
            _ACTIVE = None

    def _wrap(self, name: str, kernel):
        recorder = self
        reads_back = name == "to_numpy"
        host_data = name == "from_numpy"

        def call(*args):
            if recorder.depth:
                return kernel(*_resolved(args))
            if reads_back:
                raise TraceError(
                    "needle.compile: the traced function reads tensor data into Python (.numpy(), .item(), "
                    f"float(...)) at {_user_frame()}; a replay cannot repeat what Python decides from it. "
                    "Move the read out of the compiled function, or run it without ndl.compile.")
            if host_data and not recorder.constants:
                raise TraceError(
                    "needle.compile: the traced function makes a tensor from host data (numpy arrays, lists, "
                    f"Python numbers: ndl.Tensor(...), an index list) at {_user_frame()}; a replay would reuse "
                    "the traced values. Pass it as a tensor argument, make it once outside the compiled "
                    "function, draw random numbers with ndl.randn/ndl.rand (drawn again on every replay), "
                    "or use a Python number directly in the arithmetic.")
            recorder.steps.append((kernel, recorder.slots_of(args), name))
            return kernel(*_resolved(args))

        call.__name__ = name
        return call

    def _wrap_alloc(self, device, array_class):
        recorder = self

        def allocate(size, dtype="float32"):
            buffer = array_class(size, dtype)
            if not recorder.depth:
                recorder.allocated[recorder.slot(buffer).index] = device
            return buffer

        return allocate


def _resolved(args: tuple) -> tuple:
    """HostScalars replaced by their current values (kernels take plain numbers)."""
    if any(isinstance(a, HostScalar) for a in args):
        return tuple(a.value if isinstance(a, HostScalar) else a for a in args)
    return args
