"""Common subexpression elimination on a recorded step: a buffer that the step fills again
with what another buffer already holds is not filled; its readers read the other one.

Autodiff recomputes what the forward pass already made: a convolution's weight gradient
pads its input again (a fill of zeros, then the interior) and builds the im2col matrix of
it again (ResNet9's first one: 600k elements, ~0.3 ms); attention's backward makes some
products of the forward again. In eager mode each op only sees its own inputs; the recorded
program sees both.

How (value numbering over buffers): every buffer has a *value*, a number for what it
holds. A state buffer (parameter, input, ...) starts as a value of its own; a temporary
starts as "not written yet" (the same for every temporary of its size and dtype: memory a
program never wrote holds nothing it may read). A call that writes a buffer gives it a
new value, the number of (the call's kernel and its arguments, with each buffer it reads
replaced by that buffer's current value and its output by the output's geometry, and the
output's previous value): two buffers get the same value exactly when the same calls wrote
them in the same order from equal inputs. Numbers compare by type and repr (0.0 and -0.0
differ), a HostScalar (read at each replay) or any other object equals nothing but itself.

A temporary B is then not computed when another buffer A holds B's final value from before
B's first reader on, to B's last reader (nothing writes A in between), and:

* every call writing B is a pure kernel (its output a function of its inputs: elementwise,
  compact, matmul, a reduction, a fill, ... -- not index_add_rows, which adds into its output)
  or a fused loop, writing B alone and not reading it;
* nobody reads B before its last write (its intermediate contents are read by nobody).

B's writes are dropped and its readers read A. A kernel gives the same bits for the same
inputs (the row blocks on several threads too), so the step computes the same numbers.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Set, Tuple

from ..backend_ndarray.interface import out_position
from ..backend_ndarray.recording import Call, Slot, View
from ..primitives import PRIMITIVES
from .guards import scalar_key

__all__ = ["eliminate_common_calls"]

# the kernels whose result is a function of their inputs alone: `out` is only written (not
# index_add_rows, which adds into it, nor an optimizer's update of its state)
_PURE = frozenset(name for p in PRIMITIVES for name in p.kernels) | {
    "compact", "matmul", "matmul_tiled", "reduce_sum", "reduce_max", "reduce_min", "ewise_where",
    "scalar_setitem", "ewise_setitem", "take_rows", "one_hot_rows"}


class _Unique:
    """An argument that never equals another (a HostScalar, an object without value equality)."""

    __slots__ = ()


def _constant(arg: Any) -> Hashable:
    if arg is None or isinstance(arg, (bool, int, float, str)):
        # type and bits: as values 0.0 and -0.0 (or 1, 1.0 and True) are equal, two nans are not
        return ("scalar", scalar_key(arg))
    if isinstance(arg, tuple):
        return ("tuple",) + tuple(_constant(a) for a in arg)
    return _Unique()  # hashes by identity: equal to nothing else


def _slot(arg: Any) -> Optional[Slot]:
    if isinstance(arg, Slot):
        return arg
    if isinstance(arg, View):
        return arg.slot
    return None


def _geometry(arg: Any) -> Hashable:
    return ("whole",) if isinstance(arg, Slot) else ("view", arg.shape, arg.strides, arg.offset)


def _outputs(call: Call) -> Optional[List[int]]:
    """The positions of the arguments `call` writes, for a pure kernel or a fused loop; None
    for any other call (a host call, an accumulating kernel: it may write anything it is given)."""
    if call.kind == "fused":  # fusion._fuse's arguments: inputs, scalars, then the outputs
        first = call.fn.n_inputs + len(call.fn.scalar_dtypes)
        return [i for i in range(first, len(call.args)) if _slot(call.args[i]) is not None]
    if call.kind == "kernel" and call.name in _PURE:
        position = out_position(str(call.name))
        if position is not None and position >= 0 and _slot(call.args[position]) is not None:
            return [position]
    return None


def _kernel_identity(call: Call) -> Hashable:
    if call.kind == "fused":
        identity = getattr(call.fn, "identity", None)
        return _Unique() if identity is None else ("fused", identity)
    if call.kind != "kernel":
        return _Unique()
    return (call.device.name, call.name, call.fn)


def eliminate_common_calls(calls: List[Call], state: Set[int]) -> List[Call]:
    """`calls` without the writes of the temporaries that another buffer already holds (see the
    module docstring), their readers reading that buffer; `state` holds the indices of the
    slots that outlive the step."""
    numbers: Dict[Hashable, int] = {}

    def number(key: Hashable) -> int:
        return numbers.setdefault(key, len(numbers))

    value: Dict[int, int] = {}             # slot index -> its current value
    history: List[Dict[int, int]] = []     # per call: the values it gave the slots it wrote
    reads_of: Dict[int, List[int]] = {}    # slot index -> positions of the calls reading it
    writes_of: Dict[int, List[int]] = {}   # slot index -> positions of the calls writing it
    impure: Set[int] = set()               # slots some call writes in a way we do not follow
    for i, call in enumerate(calls):
        outputs = _outputs(call)
        out_slots = set() if outputs is None else {_slot(call.args[k]).index for k in outputs}  # type: ignore[union-attr]
        key: List[Hashable] = [_kernel_identity(call)]
        for k, arg in enumerate(call.args):
            slot = _slot(arg)
            if outputs is not None and k in outputs:
                key.append(("out", _geometry(arg)))
            elif slot is not None:
                reads_of.setdefault(slot.index, []).append(i)
                current = value.get(slot.index)
                if current is None:
                    current = value[slot.index] = _initial(slot, state, number)
                key.append(("in", current, _geometry(arg)))
            else:
                key.append(_constant(arg))
        written: Dict[int, int] = {}
        if outputs is None:  # whatever it is given may change, in a way not followed
            for slot in call.slots():
                impure.add(slot.index)
                writes_of.setdefault(slot.index, []).append(i)
                written[slot.index] = value[slot.index] = number(("opaque", i, slot.index))
        else:
            if len(out_slots) != 1 or any(isinstance(k, _Unique) for k in key):
                impure.update(out_slots)
            call_key = tuple(key)
            for k in outputs:
                slot = _slot(call.args[k])
                assert slot is not None
                writes_of.setdefault(slot.index, []).append(i)
                previous = value.get(slot.index)
                if previous is None:
                    previous = _initial(slot, state, number)
                written[slot.index] = value[slot.index] = number((call_key, k, previous))
        history.append(written)
    return _drop_repeats(calls, state, history, reads_of, writes_of, impure)


def _initial(slot: Slot, state: Set[int], number) -> int:
    """A slot's value before the step: its own for state, "not written yet" for a temporary."""
    if slot.index in state:
        return number(("state", slot.index))
    return number(("unwritten", slot.size, slot.dtype))


def _drop_repeats(calls: List[Call], state: Set[int], history: List[Dict[int, int]],
                  reads_of: Dict[int, List[int]], writes_of: Dict[int, List[int]], impure: Set[int]) -> List[Call]:
    end = len(calls)
    # value -> [(slot index, position of the write that gave it, position of the slot's next write)]
    held: Dict[int, List[Tuple[int, int, int]]] = {}
    last: Dict[int, Tuple[int, int]] = {}  # slot index -> (its value, since)
    for i, written in enumerate(history):
        for index, v in written.items():
            if index in last:
                old, since = last[index]
                held.setdefault(old, []).append((index, since, i))
            last[index] = (v, i)
    for index, (v, since) in last.items():
        held.setdefault(v, []).append((index, since, end))
    slots: Dict[int, Slot] = {s.index: s for call in calls for s in call.slots()}
    drop: Set[int] = set()
    rename: Dict[int, Slot] = {}  # dropped slot -> the slot its readers read
    targets: Set[int] = set()     # slots read in place of a dropped one: never dropped themselves
    for index, writes in writes_of.items():
        if index in state or index in impure or index in targets:
            continue
        reads = reads_of.get(index, [])
        if not reads or reads[0] <= writes[-1]:
            continue  # unread, read between its writes, or read by a writer (an update in place)
        v = history[writes[-1]][index]
        for other, since, until in held.get(v, ()):
            if other == index or other in rename or since >= reads[0] or until <= reads[-1]:
                continue  # itself, dropped, or not holding the value through every read
            candidate = slots[other]
            if candidate.size != slots[index].size or candidate.dtype != slots[index].dtype:
                continue
            drop.update(writes)
            rename[index] = candidate
            targets.add(other)
            break
    if not rename:
        return calls
    return [_renamed(call, rename) for i, call in enumerate(calls) if i not in drop]


def _renamed(call: Call, rename: Dict[int, Slot]) -> Call:
    """`call` reading the kept slots instead of the dropped ones."""
    def swap(arg):
        if isinstance(arg, Slot) and arg.index in rename:
            return rename[arg.index]
        if isinstance(arg, View) and arg.slot.index in rename:
            return View(rename[arg.slot.index], arg.shape, arg.strides, arg.offset)
        return arg
    if not any(s.index in rename for s in call.slots()):
        return call
    return Call(call.fn, tuple(swap(a) for a in call.args), call.kind, call.name, call.device)
