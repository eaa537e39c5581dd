"""Sums of matrix products computed as they are made: `out += a @ b` instead of a buffer per product.

Autodiff sums a weight's gradient over every use of the weight: an LSTM's input and hidden
weights get one product per time step (x_t^T @ dgates_t, 35 of 640 KB each for the benchmark's
lstm_lm), which the backward pass adds, left to right, when it reaches the weight:
((P1 + P2) + P3) + ... In the recording that is a matmul per product, each into a temporary of
its own, and at the end a chain of ewise_add calls. This pass computes each product where its
add was and adds it into the sum's buffer in the same call (the device's optional
`matmul_accumulate`, sgemm with beta = 1): the first product is written into the sum's buffer,
every later one added to it, in the chain's order. No product is written to memory and read
back, and the adds are gone.

Same values: out + (the product as sgemm sums it) is what the add computes from the product's
float32 value, as long as sgemm sums the whole inner dimension in one block;
`accumulates_exactly(a, b, m, n, p)` checks that for each layout once (random data, bit for bit),
and a chain with any product that fails it stays as it was. Float addition is commutative, so
which side of each add the product was on does not matter; the order of the adds is kept.

What is rewritten: a chain of ewise_add calls E1, ..., Ek on compact float32 buffers, where E1
adds two products and every later Ei adds one product to E(i-1)'s result; a product is the
output of a 2-D matmul call (float32, no batch) read by its add alone and written by nothing
else; each intermediate sum is read by the next add alone; the chain's result is neither read
nor written before Ek; and nothing writes a product's operands between its matmul and its add
(the matmul now runs there). The operands' buffers then live until the add instead of the
matmul, which the memory plan sees.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from ..backend_ndarray.interface import out_position
from ..backend_ndarray.recording import Call, Slot, View

__all__ = ["accumulate_products"]


def _is_whole(arg: Any, size: int) -> bool:
    """A compact view of all of a float32 buffer of `size` elements."""
    return isinstance(arg, View) and arg.strides is None and arg.offset == 0 and arg.slot.size == size \
        and arg.slot.dtype == "float32"


def _accesses(calls: List[Call]) -> Tuple[Dict[int, List[int]], Dict[int, List[int]]]:
    """(slot index -> positions of the calls reading it, -> positions of the calls writing it).
    A call that may write any of its buffers (a host call, a kernel outside the interface)
    counts as reading and writing each."""
    reads: Dict[int, List[int]] = {}
    writes: Dict[int, List[int]] = {}
    for position, call in enumerate(calls):
        out = out_position(call.name) if call.kind == "kernel" and call.name is not None else None
        for i, arg in enumerate(call.args):
            if not isinstance(arg, (Slot, View)):
                continue
            index = arg.index if isinstance(arg, Slot) else arg.slot.index
            if out is None or out == i:
                writes.setdefault(index, []).append(position)
            if out is None or out != i:
                reads.setdefault(index, []).append(position)
    return reads, writes


def accumulate_products(calls: List[Call], state: Set[int]) -> List[Call]:
    """The calls with each chain of added products rewritten (see the module docstring); `state`
    holds the slot indices of the buffers that outlive the step."""
    reads, writes = _accesses(calls)

    def product(view: Any, add: int, size: int) -> Optional[int]:
        """The position of the matmul whose output `view` is, if it is a product only `add` reads."""
        if not _is_whole(view, size):
            return None
        index = view.slot.index
        if index in state or reads.get(index) != [add] or len(writes.get(index, ())) != 1:
            return None
        position = writes[index][0]
        call = calls[position]
        if call.kind != "kernel" or call.name != "matmul" or len(call.args) not in (6, 7) or \
                (len(call.args) == 7 and call.args[6] != 1) or not isinstance(call.args[2], Slot) \
                or call.args[2].index != index or call.args[3] * call.args[5] != size:
            return None
        accumulate = getattr(call.device.mod, "accumulates_exactly", None)
        a, b = call.args[0], call.args[1]
        if accumulate is None or not isinstance(a, View) or not isinstance(b, View) or \
                a.slot.dtype != "float32" or b.slot.dtype != "float32" or \
                a.slot.index == b.slot.index:  # A @ A.T: numpy's matmul runs syrk for that
            return None
        return position

    def adds(position: int) -> Optional[Tuple[Any, Any, Slot, int]]:
        call = calls[position]
        if call.kind != "kernel" or call.name != "ewise_add" or not isinstance(call.args[2], Slot):
            return None
        out = call.args[2]
        if out.dtype != "float32":
            return None
        return call.args[0], call.args[1], out, out.size

    # chains: [(add positions, product positions in order, result slot)]
    chains: List[Tuple[List[int], List[int], Slot]] = []
    open_chain: Dict[int, int] = {}  # a chain's sum so far (slot index) -> the chain
    for position in range(len(calls)):
        found = adds(position)
        if found is None:
            continue
        x, y, out, size = found
        px, py = product(x, position, size), product(y, position, size)
        if px is not None and py is not None:
            chains.append(([position], [px, py], out))
            open_chain[out.index] = len(chains) - 1
            continue
        if px is not None:
            previous, extra = y, px
        elif py is not None:
            previous, extra = x, py
        else:
            continue
        if not _is_whole(previous, size):
            continue
        k = open_chain.pop(previous.slot.index, None)
        if k is None or previous.slot.index in state or reads.get(previous.slot.index) != [position] \
                or len(writes.get(previous.slot.index, ())) != 1:
            continue
        positions, products, _ = chains[k]
        chains[k] = (positions + [position], products + [extra], out)
        open_chain[out.index] = k

    replace: Dict[int, List[Call]] = {}
    drop: Set[int] = set()
    for add_positions, products, result in chains:
        plan = _plan(calls, add_positions, products, result, reads, writes)
        if plan is None:
            continue
        for position, new in plan.items():
            replace[position] = new
        drop.update(products)
    if not replace:
        return calls
    rewritten: List[Call] = []
    for position, call in enumerate(calls):
        if position in replace:
            rewritten.extend(replace[position])
        elif position not in drop:
            rewritten.append(call)
    return rewritten


def _plan(calls: List[Call], add_positions: List[int], products: List[int], result: Slot,
          reads: Dict[int, List[int]], writes: Dict[int, List[int]]) -> Optional[Dict[int, List[Call]]]:
    """{add position: the calls replacing it} for one chain, or None when it must stay."""
    last = add_positions[-1]
    if min(reads.get(result.index, [last]) + writes.get(result.index, [last])) < last:
        return None  # the result's buffer is in use before the chain ends
    # the k-th product runs where the add that consumes it was: the first two at the first add
    where = [add_positions[0]] + add_positions
    for product, position in zip(products, where):
        matmul = calls[product]
        a, b = matmul.args[0], matmul.args[1]
        for view in (a, b):
            if any(product < w <= position for w in writes.get(view.slot.index, ())):
                return None  # an operand changes before the add: the product must stay where it is
    for product in products[1:]:
        a, b, _, m, n, p = calls[product].args[:6]
        if not calls[product].device.mod.accumulates_exactly((a.shape, a.strides), (b.shape, b.strides), m, n, p):
            return None
    first = calls[products[0]]
    plan: Dict[int, List[Call]] = {}
    into = first.args[:2] + (result,) + tuple(first.args[3:6])
    plan[add_positions[0]] = [Call(first.fn, into, "kernel", "matmul", first.device)]
    for product, position in zip(products[1:], add_positions):
        call = calls[product]
        kernel = call.device.mod.matmul_accumulate
        plan.setdefault(position, []).append(
            Call(kernel, call.args[:2] + (result,) + tuple(call.args[3:6]), "kernel", "matmul_accumulate",
                 call.device))
    return plan

