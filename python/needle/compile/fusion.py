"""Fusing chains of elementwise kernels into generated kernels: the device-independent part.

A *group* is a run of consecutive recorded calls that are all elementwise (arithmetic,
comparisons, unary functions, dtype casts) on one device over one output shape, optionally
ending in stores into strided destinations (`ewise_setitem`, e.g. an optimizer writing a
parameter in place), or ending in a row reduction of its last value over the trailing axis
(where a device's generator can reproduce the eager kernel's bits: the cpu's reduce_sum/max/min,
see `fusion_cpu`). A group grows past calls it does not touch (`_hoistable`: a constant
fill, attention's causal mask built between the logits' scaling and the masked softmax),
which then run before it. A value made inside the group and used only there never touches
memory: it is a local variable of the generated loop. Values used after the group, or
that outlive the step, are written to their buffers as before. So a chain of k
kernels becomes one pass over memory instead of k, and one launch instead of k.

Growing groups and naming their values (`fuse_calls`, `_grow`, `_fuse`) is the same for
every device; what differs sits behind a per-device *code generator* (`GENERATORS`, by
device name): which calls it can fuse (`node`), the expression of each (`expr`, `cast`),
and the generated kernel (`kernel`: its loop, compilation, cache and launch). The cpu's is
`fusion_cpu.py` (numba loops, only the operations whose fused form gives numpy's bits),
the cuda device's `fusion_cuda.py` (numba.cuda kernels).
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Dict, List, Optional, Tuple, cast, overload

from ..backend_ndarray.recording import Call, Slot, View

__all__ = ["fuse_calls", "Node", "operand", "GENERATORS"]


# --- recognising fusable calls -----------------------------------------------------------------------

class Node:
    """One elementwise call: its operation (in its device generator's terms), operands (Views),
    output slot and dtypes."""

    __slots__ = ("expr", "operands", "out", "dtype", "scalar", "store", "reduce", "gen")

    def __init__(self, expr, operands: List[View], out: Optional[Slot], dtype: str, scalar=None,
                 store: Optional[View] = None, reduce: Optional[str] = None):
        self.expr, self.operands, self.out, self.dtype = expr, operands, out, dtype
        self.scalar = scalar  # (value, dtype of the operand it goes with) for scalar kernels
        self.store = store    # the destination view of an ewise_setitem
        # "sum", "max" or "min" for a reduction of `expr` over the group shape's last axis into
        # `out` (the kept shape): it ends the group
        self.reduce = reduce
        self.gen: Any = None  # the code generator of the call's device (set by _node)


# device name -> the module holding its code generator (`GENERATOR`), imported when a
# recording first uses that device. A device without an entry is simply never fused.
GENERATORS: Dict[str, str] = {
    "cpu": "needle.compile.fusion_cpu",
    "cuda": "needle.compile.fusion_cuda",
}


def _generator(call: Call):
    """The code generator for a recorded kernel's device, or None."""
    if call.kind != "kernel":
        return None
    module = GENERATORS.get(call.device.name)
    return None if module is None else importlib.import_module(module).GENERATOR


def _node(call: Call) -> Optional[Tuple[tuple, Node]]:
    """(output shape, node) for a fusable call of any device, else None."""
    gen = _generator(call)
    found = None if gen is None else gen.node(call)
    if found is not None:
        found[1].gen = gen
    return found


@overload
def operand(arg: View) -> View: ...


@overload
def operand(arg: Any) -> Optional[View]: ...


def operand(arg: Any) -> Optional[View]:
    """A recorded operand as a View with strides None when it reads the buffer from its start in
    row-major order (compact); None for anything else."""
    if isinstance(arg, View):
        strides = arg.strides
        if strides is not None and tuple(strides) == _compact_strides(tuple(arg.shape)):
            strides = None
        return View(arg.slot, tuple(arg.shape), strides, arg.offset)
    return None


def _compact_strides(shape: tuple) -> tuple:
    from ..backend_ndarray.ndarray import _compact_strides as strides_of

    return strides_of(shape)


# --- grouping -------------------------------------------------------------------------------------

def fuse_calls(calls: List[Any], outlives: set) -> List[Any]:
    """`calls` with every run of two or more fusable calls over one shape replaced by a fused call.

    `outlives` holds the indices of slots that must be in memory after the step (state,
    inputs, outputs); every other slot that only a group touches stays inside it.
    """
    uses: Dict[int, List[int]] = {}
    for i, call in enumerate(calls):
        for slot in call.slots():
            uses.setdefault(slot.index, []).append(i)
    return _fused(calls, list(range(len(calls))), uses, outlives)


def _fused(calls: List[Any], order: List[int], uses: Dict[int, List[int]], outlives: set) -> List[Any]:
    """The calls at positions `order` (ascending) with their groups fused; the calls a group grew
    past run before it, fused among themselves the same way."""
    out: List[Any] = []
    place = {position: k for k, position in enumerate(order)}
    k = 0
    while k < len(order):
        group, shape, positions, hoisted = _grow(calls, order, k)
        # (a group has a shape); a reduction alone is a group too: the generated row sum is faster
        # than numpy's reduce over short rows, with its bits
        if (len(group) >= 2 or (group and group[0].reduce is not None)) and shape is not None:
            kernel, args = _fuse(group, shape, positions, uses, outlives)
            out.extend(_fused(calls, hoisted, uses, outlives))
            out.append(Call(kernel, args, "fused"))
            k = place[max(positions + hoisted)] + 1
        else:
            out.append(calls[order[k]])
            k += 1
    return out


# the most calls one group grows past (`_hoistable`): the look-ahead of every _grow, kept short
MAX_HOISTED = 8


def _hoistable(call, touched: set) -> bool:
    """A device kernel call that touches no buffer the group has read or written so far: it can
    run before the group, which then grows past it, with the same values (it reads nothing the
    group writes and writes nothing the group reads or writes). Such calls sit between a chain's
    links: the 0 filled for where(mask, x, 0), or attention's causal mask, built between the
    logits' scaling and the masked softmax."""
    return call.kind == "kernel" and all(slot.index not in touched for slot in call.slots())


def _grow(calls, order: List[int], k: int) -> Tuple[List[Node], Optional[tuple], List[int], List[int]]:
    """The longest group starting at position order[k], growing over the positions after it in
    `order`: its nodes, shape, the positions of its calls, and the positions of the calls it grew
    past (`_hoistable`, run before it).

    The generated loop runs each element's whole chain before the next element's (and on
    cuda, elements in parallel), so a buffer the group writes may only be read, or written
    again, through that same view: element i then touches only its own position. Another
    view of it (x[1:] = x[:-1] + 1) would see other elements' writes early."""
    start = order[k]
    first = _node(calls[start])
    if first is None:
        return [], None, [], []
    shape, node = first
    compact = (shape, None, 0)
    group: List[Node] = []
    stored: set = set()
    made: set = set()
    reads: Dict[int, set] = {}   # buffer -> the views the group reads it through
    writes: Dict[int, tuple] = {}  # buffer -> the view the group writes it through
    positions: List[int] = []
    hoisted: List[int] = []
    for position in order[k:]:
        call = calls[position]
        found = first if not group else _node(call)
        if found is not None and found[0] != shape and _same_rows(found, shape):
            found = (shape, found[1])  # the chain's rows, read through another compact shape
            found[1].operands = [View(o[0], shape, None, o[3]) for o in found[1].operands]
        if (found is None or found[0] != shape) and len(hoisted) < MAX_HOISTED \
                and _hoistable(call, set(reads) | set(writes) | made | stored):
            hoisted.append(position)
            continue
        if found is None or found[0] != shape or found[1].gen is not first[1].gen:
            break
        node = found[1]
        # a store followed by a read of the same buffer would need the store to have happened
        if any(o[0].index in stored for o in node.operands):
            break
        # a value made in the group exists one element at a time: it can only be read in step
        if any(o[0].index in made and (o[2] is not None or o[3] != 0) for o in node.operands):
            break
        targets: List[Tuple[int, tuple]] = []
        if node.out is not None:
            targets.append((node.out.index, compact if node.reduce is None else (shape[:-1], None, 0)))
        if node.store is not None:
            out, sshape, sstrides, soffset = node.store
            if sstrides is not None and _overlaps_itself(sshape, sstrides):
                break  # (y += b on a broadcast y) several elements land on one: numpy's order decides
            strides = None if sstrides is None or tuple(sstrides) == _compact_strides(sshape) else tuple(sstrides)
            targets.append((out.index, (sshape, strides, soffset)))
        if any(writes.get(b, view) != view or any(r != view for r in reads.get(b, ())) for b, view in targets):
            break
        for o in node.operands:
            if o[0].index not in made:
                reads.setdefault(o[0].index, set()).add(o[1:])
        for b, view in targets:
            writes[b] = view
        if node.out is not None:
            made.add(node.out.index)
        if node.store is not None:
            stored.add(node.store[0].index)
        group.append(node)
        positions.append(position)
        if node.reduce is not None:  # its value is a row's: nothing after it can use it in step
            break
    while hoisted and hoisted[-1] > positions[-1]:  # fills after the group's last call stay where they are
        hoisted.pop()
    return group, shape, positions, hoisted


def _overlaps_itself(shape, strides) -> bool:
    """Whether a view may reach one element of memory through two indices (a broadcast's zero
    stride, or strides too small for the axes inside them); False only when it surely cannot."""
    axes = sorted((abs(st), n) for n, st in zip(shape, strides) if n > 1)
    reach = 0  # the farthest element the inner axes reach from an element
    for stride, n in axes:
        if stride <= reach:
            return True
        reach += stride * (n - 1)
    return False


def _in_memory(o: View, made: Dict[int, str], input_var: Dict[tuple, str], outputs: List[tuple],
               shape: tuple) -> Tuple[str, int]:
    """Where a max/min's reduced values are after the loop, for the rare rows handed to numpy:
    ("in", j) for an input read from memory, else ("out", k) for the output holding the value made
    in the loop (stored for this if nothing else needed it: the unfused step wrote it too)."""
    if o[0].index in made and o[2] is None and o[3] == 0:
        var = made[o[0].index]
        for k, (view, v) in enumerate(outputs):
            if v == var and view[0].index == o[0].index:
                return "out", k
        outputs.append((View(o[0], shape, None, 0), var))
        return "out", len(outputs) - 1
    return "in", int(input_var[(o[0].index, o[1], o[2], o[3])][2:])


def _same_rows(found: Tuple[tuple, Node], shape: tuple) -> bool:
    """A reduction over the last axis of a compact operand whose shape is not the group's but has
    the same rows (LayerNorm's sum over the (B*T, C) view of a (B, T, C) chain): the same sums."""
    oshape, node = found
    return node.reduce is not None and len(oshape) > 0 and len(shape) > 0 and oshape[-1] == shape[-1] and \
        math.prod(oshape) == math.prod(shape) and all(o[2] is None for o in node.operands)


def _fuse(nodes: List[Node], shape: tuple, positions, uses, outlives) -> Tuple[Any, tuple]:
    """The group's fused kernel (from its device's generator) and its call arguments.

    The body is a list of lines `v<k> = <cast to the call's dtype>(<expression>)`, one per
    call in recorded order, reading memory as `in<j>[IDX]` (the generator decides how an
    element index reads each operand) and scalars as `s<j>`."""
    gen = nodes[0].gen
    first, members = min(positions), set(positions)
    made: Dict[int, str] = {}  # slot index -> local variable holding its value
    inputs: List[tuple] = []  # operands read from memory
    input_var: Dict[tuple, str] = {}
    scalars: List[Tuple[Any, str]] = []
    outputs: List[tuple] = []  # (operand to write, variable)
    reduction: Optional[tuple] = None  # (operation, output operand of the kept shape, variable)
    lines = []
    for k, node in enumerate(nodes):
        names = []
        for o in node.operands:
            slot, oshape, strides, offset = o
            compact_read = strides is None and offset == 0
            if slot.index in made and compact_read:
                names.append(made[slot.index])
                continue
            key = (slot.index, oshape, strides, offset)
            if key not in input_var:
                input_var[key] = f"in{len(inputs)}"
                inputs.append(o)
            names.append(input_var[key] + "[IDX]")
        scalar = None
        if node.scalar is not None:
            scalar = f"s{len(scalars)}"
            scalars.append(node.scalar)
        value = f"v{k}"
        lines.append(f"{value} = {gen.cast(node.dtype, gen.expr(node, names, scalar))}")
        if node.store is not None:
            outputs.append((node.store, value))
            continue
        if node.reduce is not None:
            reduction = (node.reduce, View(cast(Slot, node.out), shape[:-1], None, 0), value,
                         None if node.reduce == "sum" else _in_memory(node.operands[0], made, input_var, outputs,
                                                                      shape))
            continue
        out = cast(Slot, node.out)  # a node that stores nothing has an output
        made[out.index] = value
        # read by a call outside the group after the group began: after its last call, or -- for
        # a group of calls another group grew past -- by that group's calls between its own
        later = [p for p in uses.get(out.index, ()) if p > first and p not in members]
        if later or out.index in outlives or (k == len(nodes) - 1 and not outputs):
            outputs.append((View(out, shape, None, 0), value))
    # a reduction's result is the last argument, its generator told by `reduce` (op, variable,
    # dtype, where the reduced values are in memory after the loop: ("in"/"out", position) or None)
    extra = {} if reduction is None else {"reduce": (reduction[0], reduction[2], nodes[-1].dtype, reduction[3])}
    kernel = gen.kernel(lines, inputs, [d for _, d in scalars], [o for o, _ in outputs], [v for _, v in outputs],
                        shape, **extra)
    args = tuple(inputs) + tuple(s for s, _ in scalars) + tuple(o for o, _ in outputs)
    if reduction is not None:
        args += (reduction[1],)
    return kernel, args
