"""Running a replayed cpu launch on several cores: the same work, split into row blocks.

The cpu device's kernels are numpy calls and numba loops, each on one core; a compiled step
on a machine with more cores can run the large ones as row blocks in parallel. Every block
does exactly what the whole call does to its rows -- an elementwise kernel computes each
element from the same operands, a reduction over trailing axes sums each kept row in the
same order (numpy's pairwise sum of that row), a copy moves the same values -- so the
result is the same bits as the unsplit call, on any number of threads.

What splits: the primitives' elementwise kernels, `ewise_where`, `compact`,
`ewise_setitem`, `reduce_sum/max/min` over trailing axes with kept rows, the optimizers'
fused updates (`sgd_step`, `adam_step`, ..., by element ranges), and the fused kernels of
`fusion_cpu` (through `run_blocks`). A call is split only when it is large
enough to pay for the hand-off (`MIN_ELEMENTS`), its output has rows to split, and no
block could see another block's writes (an input sharing the output's buffer through
another view, or output blocks whose memory ranges overlap, keep the call whole).

The workers are daemon threads, started at the first split; numpy's loops and the numba
kernels (`nogil=True`) release the GIL, so the blocks run at once. The number of threads
is NEEDLE_NUM_THREADS, else OMP_NUM_THREADS (what PyTorch's intra-op pool reads), else the
cores this process may run on.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..backend_ndarray.host_buffer import Array

__all__ = ["threads", "run_blocks", "split", "row_blocks", "blocks_of", "MIN_ELEMENTS"]

# below this many elements (about 0.1 ms of elementwise work) the hand-off to a worker, a
# thread wake-up when it sleeps, eats what splitting saves: measured on 2 cores, splitting
# the 65,536-element calls of resnet9 made its step slower, the 262,144-element ones of gpt
# and the 7M-element ones of lstm_lm faster
MIN_ELEMENTS = 1 << 18


def threads() -> int:
    """How many threads a split launch uses (see the module docstring)."""
    for name in ("NEEDLE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Task:
    """One block of one run: claimed by whichever thread gets to it first."""

    __slots__ = ("fn", "claim", "done", "error")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.claim = threading.Lock()
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker that ran it
        self.error: Optional[BaseException] = None


def _work(tasks: "queue.SimpleQueue[_Task]") -> None:
    while True:
        task = tasks.get()
        if not task.claim.acquire(blocking=False):
            continue  # the caller ran it already
        try:
            task.fn()
        except BaseException as err:  # handed to the caller, which raises it
            task.error = err
        task.done.release()


_QUEUES: List["queue.SimpleQueue[_Task]"] = []
_LOCK = threading.Lock()


def _queues(n: int) -> List["queue.SimpleQueue[_Task]"]:
    with _LOCK:
        while len(_QUEUES) < n:
            tasks: "queue.SimpleQueue[_Task]" = queue.SimpleQueue()
            threading.Thread(target=_work, args=(tasks,), daemon=True, name="needle-compile-worker").start()
            _QUEUES.append(tasks)
        return _QUEUES[:n]


def run_blocks(blocks: Sequence[Callable[[], Any]]) -> Callable[[], None]:
    """A launch running `blocks` at once: the first on the calling thread, each other one on a
    worker thread -- unless the caller, done with its own, finds it not started yet (a worker
    not scheduled on a busy machine) and runs it itself. So a split call never waits for a
    thread that is not running, and is at worst as slow as the whole call."""
    first, rest = blocks[0], list(blocks[1:])
    if not rest:
        def run_one() -> None:
            first()
        return run_one
    queues = _queues(len(rest))

    def run() -> None:
        tasks = [_Task(block) for block in rest]
        for tasks_of, task in zip(queues, tasks):
            tasks_of.put(task)
        error: Optional[BaseException] = None
        try:
            first()
        except BaseException as err:
            error = err
        for task in tasks:
            if task.claim.acquire(blocking=False):  # no worker got to it: run it here
                try:
                    task.fn()
                except BaseException as err:
                    error = error or err
            else:
                task.done.acquire()
                error = error or task.error
        if error is not None:
            raise error
    return run


def row_blocks(rows: int, elements: int) -> List[Tuple[int, int]]:
    """[(lo, hi), ...]: `rows` rows of a call over `elements` elements in as many blocks as
    there are threads (one block when the call is too small to pay)."""
    n = min(threads(), rows, elements // (MIN_ELEMENTS // 2) if elements >= MIN_ELEMENTS else 1)
    if n < 2:
        return [(0, rows)]
    bounds = [rows * k // n for k in range(n + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


# --- splitting a kernel call by its arguments ----------------------------------------------------------

def _is_operand(arg) -> bool:
    return isinstance(arg, tuple) and len(arg) == 4 and isinstance(arg[0], Array)


def _operand_rows(operand, lo: int, hi: int):
    handle, shape, strides, offset = operand
    step = math.prod(shape[1:]) if strides is None else strides[0]
    return (handle, (hi - lo,) + tuple(shape[1:]), strides, offset + lo * step)


def _buffer_rows(buffer: Array, shape: tuple, lo: int, hi: int) -> Array:
    """Rows lo:hi of a compact buffer holding `shape`, as a buffer of its own (a view)."""
    row = math.prod(shape[1:])
    return Array.wrap(buffer.array[lo * row:hi * row])


def _strided_rows(shape, strides, offset, lo: int, hi: int):
    return (hi - lo,) + tuple(shape[1:]), strides, offset + lo * strides[0]


def _reads_output_otherwise(operands, out: Array, out_view: tuple) -> bool:
    """Some operand reads the output's buffer through another view than the one written."""
    return any(op[0] is out and (tuple(op[1]), op[2], op[3]) != out_view for op in operands)


def _plan(name: str, kernel, args: tuple):
    """(rows, elements, rows -> args of the call on those rows) for a splittable call, or None."""
    form = getattr(kernel, "form", None)
    if getattr(kernel, "primitive", None) is not None and form in ("ewise", "scalar", "reverse", "unary"):
        count = 2 if form == "ewise" else 1
        operands, out = args[:count], args[-1]
        if not all(_is_operand(a) for a in operands) or not isinstance(out, Array):
            return None
        shape = tuple(operands[0][1])
        if any(tuple(a[1]) != shape for a in operands) or _reads_output_otherwise(operands, out, (shape, None, 0)):
            return None

        def rows_of(lo, hi):
            return tuple(_operand_rows(a, lo, hi) for a in operands) + args[count:-1] + \
                (_buffer_rows(out, shape, lo, hi),)
        return shape, rows_of
    if name == "ewise_where":
        operands, out = args[:3], args[3]
        if not all(_is_operand(a) for a in operands) or not isinstance(out, Array):
            return None
        shape = tuple(operands[0][1])
        if any(tuple(a[1]) != shape for a in operands) or _reads_output_otherwise(operands, out, (shape, None, 0)):
            return None
        return shape, lambda lo, hi: tuple(_operand_rows(a, lo, hi) for a in operands) + \
            (_buffer_rows(out, shape, lo, hi),)
    if name == "compact":
        a, out, shape, strides, offset = args
        if a is out or not isinstance(a, Array):
            return None
        shape = tuple(shape)
        return shape, lambda lo, hi: (a, _buffer_rows(out, shape, lo, hi)) + _strided_rows(shape, strides, offset,
                                                                                             lo, hi)
    if name == "ewise_setitem":
        a, out, shape, strides, offset = args
        shape, strides = tuple(shape), tuple(strides)
        if a is out or not isinstance(a, Array) or not _rows_disjoint(shape, strides):
            return None
        return shape, lambda lo, hi: (_buffer_rows(a, shape, lo, hi), out) + _strided_rows(shape, strides, offset,
                                                                                              lo, hi)
    if name in _OPTIMIZER_UPDATES:  # elementwise over compact operands of one size, read and written in place
        count = _OPTIMIZER_UPDATES[name]
        operands = args[:count]
        if not all(_is_operand(a) and a[2] is None for a in operands):
            return None
        size = math.prod(operands[0][1])
        offsets: dict = {}
        for a in operands:  # one buffer twice (SGD's no-buffer form passes the parameter as u): one view
            if math.prod(a[1]) != size or offsets.setdefault(id(a[0]), a[3]) != a[3]:
                return None
        return (size,), lambda lo, hi: tuple((a[0], (hi - lo,), None, a[3] + lo) for a in operands) + args[count:]
    if name in ("reduce_sum", "reduce_max", "reduce_min"):
        a, out, reduce_size = args
        if not _is_operand(a) or a[0] is out or reduce_size < 1:
            return None
        shape = tuple(a[1])
        kept, size = len(shape), 1
        while kept > 0 and size != reduce_size:
            kept -= 1
            size *= shape[kept]
        if kept == 0 or size != reduce_size:  # nothing kept (a total): its one sum is not split
            return None
        kept_shape = shape[:kept]
        return shape, lambda lo, hi: (_operand_rows(a, lo, hi), _buffer_rows(out, kept_shape, lo, hi), reduce_size)
    return None


# the optimizers' fused updates (kernels_cpu.sgd_step/adam_step): name -> how many array operands lead
_OPTIMIZER_UPDATES = {"sgd_step": 3, "adam_step": 4, "rmsprop_step": 5, "adagrad_step": 3, "adadelta_step": 4}


def _rows_disjoint(shape: tuple, strides: tuple) -> bool:
    """Whether the rows of a strided destination occupy separate memory ranges, so blocks of rows
    written at once never touch one element (true for any row-major layout, with the row
    stride at least the span of one row)."""
    if len(shape) == 0 or shape[0] < 2:
        return False
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(shape[1:], strides[1:]))
    return abs(strides[0]) >= span


def split(name: str, kernel, args: tuple, prepare: Callable[[str, tuple], Optional[Callable]]
          ) -> Optional[Callable[[], None]]:
    """A launch of kernel `name` on `args` running its row blocks on several threads (each block's
    launch made by the device's `prepare`), or None when the call stays whole."""
    plan = _plan(name, kernel, args)
    if plan is None:
        return None
    shape, rows_of = plan
    if not shape or threads() < 2:
        return None
    blocks = row_blocks(shape[0], math.prod(shape))
    if len(blocks) < 2:
        return None
    launches = []
    for lo, hi in blocks:
        block_args = rows_of(lo, hi)
        launch = prepare(name, block_args)
        if launch is None:
            launch = _plain(kernel, block_args)
        launches.append(launch)
    return run_blocks(launches)


def _plain(kernel, args: tuple) -> Callable[[], Any]:
    from ..dtypes import HostScalar

    if any(isinstance(a, HostScalar) for a in args):
        return lambda: kernel(*(a.value if isinstance(a, HostScalar) else a for a in args))
    return lambda: kernel(*args)


def blocks_of(arrays: List[np.ndarray], rowwise: List[bool], lo: int, hi: int) -> List[np.ndarray]:
    """Rows lo:hi of the arrays read or written by rows (rowwise), the others as they are."""
    return [a[lo:hi] if r else a for a, r in zip(arrays, rowwise)]
