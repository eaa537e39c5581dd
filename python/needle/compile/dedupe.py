"""Common subexpression elimination on a recorded step: a kernel call that repeats an earlier
one on the same unchanged inputs is dropped, and its result read from the earlier call's.

Autodiff recomputes what the forward pass already made: a convolution's weight gradient
builds the im2col matrix of its input again (ResNet9's first one: 600k elements, ~0.3 ms),
and the padded copy of the input with it. In eager mode each op only sees its own inputs;
the recorded program sees both calls, and the second is a copy of the first.

Call B is dropped for an earlier call A when:

* both are calls of one device to the same pure kernel (its output a function of its inputs
  alone: an elementwise kernel, compact, matmul, a reduction, a fill...) with the same arguments apart
  from their outputs (a buffer argument: the same buffer, or the same view of it; a number:
  the same value and type, so 0.0 and -0.0 differ; a HostScalar, read at each replay,
  or any other object: never the same);
* their outputs are whole buffers of one size and dtype, each written by that call only
  and nowhere else in the step (B's is also not state: parameters, gradients, outputs keep
  their own buffers);
* no call between them writes a buffer A reads.

Then every later use of B's output reads A's instead. A kernel gives the same bits for the
same inputs (the row blocks on several threads too), so the step computes the same numbers;
the memory plan (program.py) keeps A's output alive until B's last reader.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Set, cast

from ..backend_ndarray.interface import out_position
from ..backend_ndarray.recording import Call, Slot, View
from ..primitives import PRIMITIVES

__all__ = ["eliminate_common_calls"]


class _Unique:
    """An argument that never equals another (a HostScalar, an object without value equality)."""

    __slots__ = ()


def _key(arg: Any) -> Hashable:
    if isinstance(arg, Slot):
        return ("slot", arg.index)
    if isinstance(arg, View):
        return ("view", arg.slot.index, arg.shape, arg.strides, arg.offset)
    if arg is None or isinstance(arg, (bool, int, float, str)):
        # type and repr: 0.0 and -0.0 (or 1 and 1.0 and True) would be equal as values
        return (type(arg).__name__, repr(arg))
    if isinstance(arg, tuple):
        return ("tuple",) + tuple(_key(a) for a in arg)
    return _Unique()  # hashes by identity: equal to nothing else


def _writes(call: Call) -> Optional[Set[int]]:
    """The slot indices `call` writes (None: it may write any buffer it is given)."""
    if call.kind == "fused":  # fusion._fuse's arguments: inputs, scalars, then the outputs
        first = call.fn.n_inputs + len(call.fn.scalar_dtypes)
        return {a.index if isinstance(a, Slot) else a.slot.index for a in call.args[first:]
                if isinstance(a, (Slot, View))}
    if call.kind != "kernel" or call.name is None:
        return None
    position = out_position(call.name)
    if position is None:
        return None
    if position < 0:
        return set()
    arg = call.args[position]
    if isinstance(arg, Slot):
        return {arg.index}
    if isinstance(arg, View):
        return {arg.slot.index}
    return set()


def eliminate_common_calls(calls: List[Call], state: Set[int]) -> List[Call]:
    """`calls` without the kernel calls that repeat an earlier one (see the module docstring);
    `state` holds the indices of the slots that outlive the step."""
    writers: Dict[int, int] = {}  # slot index -> how many calls write it (a huge count: any call may)
    written_at: List[Optional[Set[int]]] = []
    for call in calls:
        writes = _writes(call)
        written_at.append(writes)
        touched = writes if writes is not None else {s.index for s in call.slots()}
        for index in touched:
            writers[index] = writers.get(index, 0) + (1 if writes is not None else 1 << 30)
    seen: Dict[Hashable, int] = {}       # key of a call -> its position among the kept calls
    kept: List[Call] = []
    kept_writes: List[Optional[Set[int]]] = []
    rename: Dict[int, Slot] = {}          # slot index of a dropped output -> the slot read instead
    for call, writes in zip(calls, written_at):
        if rename:
            call = _renamed(call, rename)
        key = _call_key(call, writes, writers)
        if key is not None:
            earlier = seen.get(key[0])
            out = key[1]
            if earlier is not None and out.index not in state and _unchanged(kept, kept_writes, earlier):
                first_out = kept[earlier].args[cast(int, out_position(str(call.name)))]
                if isinstance(first_out, Slot) and first_out.size == out.size and first_out.dtype == out.dtype:
                    rename[out.index] = first_out
                    continue
            seen[key[0]] = len(kept)
        kept.append(call)
        kept_writes.append(writes)
    return kept


# the kernels whose result is a function of their inputs alone: `out` is only written (not
# index_add_rows, which adds into it, nor an optimizer's update of its state)
_PURE = frozenset(name for p in PRIMITIVES for name in p.kernels) | {
    "compact", "matmul", "matmul_tiled", "reduce_sum", "reduce_max", "reduce_min", "ewise_where",
    "scalar_setitem", "take_rows", "one_hot_rows"}


def _call_key(call: Call, writes: Optional[Set[int]], writers: Dict[int, int]):
    """(the call's key without its output, its output Slot) for a call that may be deduplicated, else None."""
    if call.kind != "kernel" or call.name not in _PURE or writes is None or len(writes) != 1:
        return None
    position = cast(int, out_position(str(call.name)))  # a pure kernel has an `out`
    out = call.args[position]
    if not isinstance(out, Slot) or writers.get(out.index) != 1:
        return None
    rest = tuple(_key(a) for i, a in enumerate(call.args) if i != position)
    if any(isinstance(k, _Unique) for k in rest):
        return None
    return (call.device.name, call.name, call.fn, rest), out


def _unchanged(kept: List[Call], kept_writes: List[Optional[Set[int]]], earlier: int) -> bool:
    """Whether no call after kept[earlier] writes a buffer kept[earlier] reads."""
    call = kept[earlier]
    position = cast(int, out_position(str(call.name)))
    reads = {s.index for i, a in enumerate(call.args) if i != position
             for s in ([a] if isinstance(a, Slot) else [a.slot] if isinstance(a, View) else [])}
    for later, writes in zip(kept[earlier + 1:], kept_writes[earlier + 1:]):
        touched = writes if writes is not None else {s.index for s in later.slots()}
        if touched & reads:
            return False
    return True


def _renamed(call: Call, rename: Dict[int, Slot]) -> Call:
    """`call` reading the kept slots instead of the dropped ones."""
    def swap(arg):
        if isinstance(arg, Slot) and arg.index in rename:
            return rename[arg.index]
        if isinstance(arg, View) and arg.slot.index in rename:
            return View(rename[arg.slot.index], arg.shape, arg.strides, arg.offset)
        return arg
    if not any(isinstance(a, (Slot, View)) and (a.index if isinstance(a, Slot) else a.slot.index) in rename
               for a in call.args):
        return call
    return Call(call.fn, tuple(swap(a) for a in call.args), call.kind, call.name, call.device)
