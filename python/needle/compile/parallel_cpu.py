"""Running a replayed cpu launch on several cores: the same work, split into row blocks.

The cpu device's kernels are numpy calls and numba loops, each on one core; a compiled step
on a machine with more cores can run the large ones as row blocks in parallel. Every block
does exactly what the whole call does to its rows -- an elementwise kernel computes each
element from the same operands, a reduction over trailing axes sums each kept row in the
same order (numpy's pairwise sum of that row), a copy moves the same values -- so the
result is the same bits as the unsplit call, on any number of threads.

What splits: the primitives' elementwise kernels, `ewise_where`, `compact`, `ewise_setitem`,
`im2col` and `col2im` (by images of the batch), `reduce_sum/max/min` over trailing axes with kept
rows (not column sums: `_reads_across_rows`), the optimizers' fused updates (`sgd_step`,
`adam_step`, ..., by element ranges), the fused kernels of `fusion_cpu` (through `run_blocks`), and
batched matmuls whose matrices OpenBLAS runs on one thread (blocks of the batch: the same sgemm
call per matrix, so the same bits; `MATMUL_THREADED`). A call is split only when it is large enough
to pay for the hand-off (`MIN_ELEMENTS`, `MATMUL_MIN_WORK`), its output has rows to split, and no
block could see another block's writes (an input sharing the output's buffer through another view,
or output blocks whose memory ranges overlap, keep the call whole).

Measured and not done: splitting eager calls the same way (numpy's kernels of 262k elements
and more, run from NDArray): gpt's eager step 241 -> 273-280 ms, resnet9's 26 -> 33-35 ms
on the 2-core machine -- the hand-offs and OpenBLAS's spinning helper thread (see
needle/_openblas.py) cost more than the second core gave.

The workers are daemon threads, started at the first split; numpy's loops, BLAS and the numba
kernels (`nogil=True`) release the GIL, so the blocks run at once. Between blocks a worker
spins for a while without the GIL instead of sleeping (see "waiting without the GIL" below).
The first worker installs `blas_pool`: from then on the workers also run OpenBLAS's jobs
while they wait, and sleep on a futex that a job or a posted block wakes. Without the pool
(NEEDLE_BLAS_POOL=0, another BLAS), a replayed matmul that stays whole first sends spinning
workers to sleep (`whole`), so OpenBLAS's own threads find the cores free. The number of
threads is NEEDLE_NUM_THREADS, else OMP_NUM_THREADS (what PyTorch's intra-op pool reads), else
the cores this process may run on;
NEEDLE_NUM_THREADS=1 replays every call whole on the calling thread, as before.

Not done here, measured: independent calls of the program at once on two threads (inter-op
parallelism). Each launch is a Python call that needs the GIL, and on the 2-core VM every GIL
hand-off to a sleeping thread cost a 20-40 us wake-up; most calls of the workloads take less.
"""
from __future__ import annotations

import functools
import math
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backend_ndarray.host_buffer import Array
from . import blas_pool

__all__ = ["threads", "run_blocks", "split", "whole", "row_blocks", "blocks_of", "park", "faster_of", "MIN_ELEMENTS",
           "TRY_ELEMENTS"]

# below this many elements (about 0.1 ms of elementwise work) the hand-off to a worker eats
# what splitting saves: measured on 2 cores, splitting the 65,536-element calls of resnet9 made
# its step slower, the 262,144-element ones of gpt and the 7M-element ones of lstm_lm faster.
# Re-measured with the spinning workers (an exp split in two, min of 25 interleaved rounds on a
# loaded machine): 65,536 elements 26.4 us whole / 27.1 split, 131,072 53.7 / 52.4 (even),
# 262,144 118 / 84, 1M 540 / 343 -- so the threshold stays; row reductions and copies gained
# less than exp at the same sizes
MIN_ELEMENTS = 1 << 18
# from this many elements up to MIN_ELEMENTS a call may or may not pay for splitting, by what it
# computes per element (a copy: not; a GELU, a row maximum through numpy's order, an exp-and-sum:
# yes), so the replay times it both ways and keeps the faster (`faster_of`). nanoGPT's replayed
# step (attention's 196,608-element softmax calls): 36.6 -> 35.3 ms on the 2-core Xeon.
TRY_ELEMENTS = MIN_ELEMENTS // 4
# runs of each way in the first replays: the first of each untimed (its page faults, a worker's
# first wake-up), the rest timed, the faster by its best time kept
TRIALS = 3
# a split must beat the whole call by this factor to be kept (a tie stays on one thread)
SPLIT_MARGIN = 0.9
# kinds of call whose measured break-even differs from MIN_ELEMENTS (name -> elements)
MIN_BY_KIND: Dict[str, int] = {}

# a batched matmul (attention's (B*H, T, hs) @ (B*H, hs, T)) is numpy calling sgemm once per
# matrix; OpenBLAS runs a product of at most this many multiply-adds on one thread (its
# GEMM_MULTITHREAD_THRESHOLD of 4 x 65536), so splitting the batch is the only way such a call
# uses a second core: each block makes the same sgemm calls on the same matrices (same bits).
# A larger product OpenBLAS threads itself, and stays whole.
MATMUL_THREADED = 4 * 65536
# the least multiply-adds of a batched matmul worth splitting
MATMUL_MIN_WORK = 1 << 22


def threads() -> int:
    """How many threads a split launch uses (see the module docstring)."""
    for name in ("NEEDLE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return _cores()


class _Task:
    """One block of one run: claimed by whichever thread gets to it first."""

    __slots__ = ("fn", "claim", "done", "error")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.claim = threading.Lock()
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker that ran it
        self.error: Optional[BaseException] = None


# --- waiting without the GIL ---------------------------------------------------------------------------
#
# A worker that sleeps between blocks costs a split call two thread wake-ups (the worker's, then
# the caller's when the block is done), and on a virtual machine each is 20-40 us (measured on
# the 2-core benchmark machine): more than a 256k-element block takes. So, like an OpenMP pool,
# a worker spins for a while (SPIN_SECONDS) after each block, waiting for the next one, and the
# caller spins while the worker finishes -- both in numba code that has let go of the GIL, so
# the spinning thread holds neither a core it is not on nor the interpreter. The flags are int64
# counters in a numpy array, read and written with atomic acquire/release operations (a plain
# load in a loop could be hoisted out of it by the compiler). Past the spin, both sides fall back
# to blocking (the queue, the task's lock), so nothing depends on the spinning: it only saves
# the wake-ups.

# how long a worker spins for the next block, and the caller for a worker's block, in seconds
SPIN_SECONDS = 2e-4
# after seeing a block posted, a worker waits this long before taking the GIL: the caller posts
# while holding it and lets go when its own block starts, a few microseconds later; taking the
# GIL while the caller still holds it puts the worker to sleep (a wake-up again)
SETTLE_SECONDS = 3e-6
# how long a worker that ran one of OpenBLAS's jobs (blas_pool) waits for the next before it
# sleeps: what OPENBLAS_THREAD_TIMEOUT=22 gives OpenBLAS's own helpers (needle/_openblas.py)
BLAS_SPIN_SECONDS = 1.6e-3

_POSTED, _DONE = 0, 8  # indices into a worker's cell (64 bytes apart: separate cache lines)

# bumped before each replayed matmul that OpenBLAS may thread (`park`): a spinning worker stops
# spinning and sleeps, so the core it was on is free for OpenBLAS's helper thread. Measured on
# the 2-core machine: a helper that has to share a core with a spinner (or any busy thread)
# makes a (128, 2048) @ (2048, 128) product 40-80x slower, as OpenBLAS's threads wait for each
# other a time slice at a time.
_PARK = np.zeros(16, np.int64)


def park() -> None:
    """Tell spinning workers to sleep: the next call (a matmul) wants every core for OpenBLAS."""
    _PARK[0] += 1


@functools.lru_cache(maxsize=None)
def _spinning() -> Any:
    """The numba spin functions (compiled at the first split): (wait, done_then_wait)."""
    import numba
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def load_acquire(typingctx, cell, index):
        def codegen(context, builder, signature, args):
            ptr = cgutils.get_item_pointer(context, builder, signature.args[0],
                                           context.make_array(signature.args[0])(context, builder, args[0]), [args[1]])
            return builder.load_atomic(ptr, "acquire", 8)
        return types.int64(cell, index), codegen

    @intrinsic
    def store_release(typingctx, cell, index, value):
        def codegen(context, builder, signature, args):
            ptr = cgutils.get_item_pointer(context, builder, signature.args[0],
                                           context.make_array(signature.args[0])(context, builder, args[0]), [args[1]])
            builder.store_atomic(args[2], ptr, "release", 8)
            return context.get_dummy_value()
        return types.void(cell, index, value), codegen

    give_way = _sched_yield()

    @numba.njit(nogil=True)
    def wait(cell, index, value, spins, settle):
        """Spin until cell[index] >= value (then `settle` more turns): True, or False after `spins`
        turns. Each turn yields the core to any other thread waiting for it (OpenBLAS's helpers)."""
        for _ in range(spins):
            if load_acquire(cell, index) >= value:
                for _ in range(settle):
                    give_way()
                return True
            give_way()
        return False

    @numba.njit(nogil=True)
    def done_then_wait(cell, done, value, park, parked, spins, settle):
        """Mark block `done` finished (the GIL already let go), then wait for block `value` as
        `wait` does -- or until `park[0]` is no longer `parked` (False: a matmul is starting)."""
        store_release(cell, 8, done)
        for _ in range(spins):
            if load_acquire(cell, 0) >= value:
                for _ in range(settle):
                    give_way()
                return True
            if load_acquire(park, 0) != parked:
                return False
            give_way()
        return False

    cell = np.zeros(16, np.int64)
    wait(cell, 0, 1, 1, 0)  # compile both now
    done_then_wait(cell, 0, 0, _PARK, 0, 1, 0)
    return wait, done_then_wait


def _sched_yield() -> Any:
    """libc's sched_yield as a ctypes function numba can call, or a numba no-op without one."""
    import ctypes

    import numba

    try:
        fn = ctypes.CDLL(None).sched_yield
    except (AttributeError, OSError):
        @numba.njit(nogil=True)
        def nothing() -> int:
            return 0
        return nothing
    fn.restype, fn.argtypes = ctypes.c_int, []
    return fn


@functools.lru_cache(maxsize=None)
def _turns_per_second() -> float:
    """How many turns of the spin loop make a second here (measured once)."""
    wait = _spinning()[0]
    cell = np.zeros(16, np.int64)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        wait(cell, 0, 1, 200_000, 0)
        best = min(best, time.perf_counter() - start)
    return 200_000 / max(best, 1e-9)


def _spins(seconds: float) -> int:
    return int(seconds * _turns_per_second())


class _Worker:
    """A daemon thread running the blocks posted to it, in order (and, once blas_pool is
    installed, OpenBLAS's jobs handed to it while it waits)."""

    def __init__(self, spin: bool) -> None:
        self.cell = np.zeros(blas_pool.CELL_SIZE, np.int64)
        self.tasks: "queue.SimpleQueue[_Task]" = queue.SimpleQueue()
        self.posted = 0
        self.lock = threading.Lock()  # posting: the queue's order is the counter's
        self.spin, self.settle = (_spins(SPIN_SECONDS), _spins(SETTLE_SECONDS)) if spin else (0, 0)
        self.pool = blas_pool.listener() if spin else None  # (listen, post, listening)
        if self.pool is not None:
            blas_pool.register_worker(self.cell)
        threading.Thread(target=self._work, daemon=True, name="needle-compile-worker").start()

    def post(self, task: _Task) -> int:
        """Queue `task`; its number in this worker's order."""
        with self.lock:
            self.tasks.put(task)
            self.posted += 1
            if self.pool is not None:
                self.pool[1](self.cell, self.posted)  # wakes the worker if it sleeps
            else:
                self.cell[_POSTED] = self.posted
            return self.posted

    def _work(self) -> None:
        if self.pool is not None:  # it waits (spinning, then asleep) in numba, running BLAS jobs
            listen = self.pool[0]
            blas_spin = _spins(BLAS_SPIN_SECONDS)

            def wait_first() -> None:
                listen(self.cell, 0, 1, self.spin, blas_spin, self.settle)

            def done_then_wait(done: int) -> None:
                listen(self.cell, done, done + 1, self.spin, blas_spin, self.settle)
        else:
            wait, done_then_wait_spinning = _spinning()

            def wait_first() -> None:
                wait(self.cell, _POSTED, 1, self.spin, self.settle)

            def done_then_wait(done: int) -> None:
                parked = int(_PARK[0])  # read before the caller can see this block done
                done_then_wait_spinning(self.cell, done, done + 1, _PARK, parked, self.spin, self.settle)
        taken = 0
        wait_first()
        while True:
            task = self.tasks.get()  # at once when the wait saw it posted
            taken += 1
            if task.claim.acquire(blocking=False):  # else the caller ran it already
                try:
                    task.fn()
                except BaseException as err:  # handed to the caller, which raises it
                    task.error = err
                if self.pool is not None:
                    self.pool[2](self.cell)  # listening for BLAS jobs before the caller goes on
                task.done.release()
            done_then_wait(taken)

    def wait(self, task: _Task, number: int) -> None:
        """Until the worker has finished `task` (its block `number`)."""
        if not (self.spin and _spinning()[0](self.cell, _DONE, number, self.spin, 0)):
            task.done.acquire()


_WORKERS: List[_Worker] = []
_LOCK = threading.Lock()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _workers(n: int) -> List[_Worker]:
    with _LOCK:
        while len(_WORKERS) < n:
            # spinning pays only with a core for each thread: more threads than cores would spin
            # on a core another thread needs
            spin = SPIN_SECONDS > 0 and threads() <= _cores()
            if spin and not _WORKERS:
                blas_pool.install()  # before the first worker starts: it then listens for jobs
            _WORKERS.append(_Worker(spin=spin))
            if spin:
                blas_pool.add_helper()  # for the jobs that find this worker busy
        return _WORKERS[:n]


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
    workers = _workers(len(rest))

    def run() -> None:
        posted = []
        for worker, block in zip(workers, rest):
            task = _Task(block)
            posted.append((worker, task, worker.post(task)))
        error: Optional[BaseException] = None
        try:
            first()
        except BaseException as err:
            error = err
        for worker, task, number in posted:
            if task.claim.acquire(blocking=False):  # no worker got to it: run it here
                try:
                    task.fn()
                except BaseException as err:
                    error = error or err
            else:
                worker.wait(task, number)
                error = error or task.error
        if error is not None:
            raise error
    return run


def faster_of(whole_launch: Callable[[], Any], split_launch: Callable[[], Any],
              clock: Callable[[], float] = time.perf_counter) -> Callable[[], Any]:
    """A launch that runs `whole_launch` or `split_launch` -- the same writes, the same bits --
    alternating between them in its first 2 * (TRIALS + 1) runs, timed, and then always the one
    with the better best time (the split only where it is SPLIT_MARGIN of the whole or less).
    Which one runs changes only the time a replay takes."""
    best = {True: math.inf, False: math.inf}  # split? -> best seconds
    runs = [0]
    chosen: List[Callable[[], Any]] = []

    def run() -> Any:
        if chosen:
            return chosen[0]()
        n = runs[0]
        runs[0] = n + 1
        is_split = n % 2 == 1
        start = clock()
        result = (split_launch if is_split else whole_launch)()
        if n >= 2:
            best[is_split] = min(best[is_split], clock() - start)
        if runs[0] == 2 * (TRIALS + 1):
            chosen.append(split_launch if best[True] <= SPLIT_MARGIN * best[False] else whole_launch)
        return result
    run.chosen = chosen  # type: ignore[attr-defined]  # for tests: [] until decided, then [the launch]
    return run


def row_blocks(rows: int, elements: int, least: Optional[int] = None) -> List[Tuple[int, int]]:
    """[(lo, hi), ...]: `rows` rows of a call over `elements` elements in as many blocks as
    there are threads (one block when the call is under `least` elements, MIN_ELEMENTS unless
    given: too small to pay)."""
    least = MIN_ELEMENTS if least is None else least
    n = min(threads(), rows, elements // (least // 2) if elements >= least else 1)
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
    if name == "matmul":
        a, b, out, m, n, p, *rest = args
        batch = rest[0] if rest else 1
        if batch < 2 or m * n * p > MATMUL_THREADED or not (_is_operand(a) and _is_operand(b)) \
                or a[0] is out or b[0] is out:
            return None
        lead = tuple(a[1][:-2])
        if not lead or lead != tuple(b[1][:-2]) or math.prod(lead) != batch:
            return None
        # blocks of the first batch axis (attention's heads are read through (B, H) in place)
        shape, inner = lead + (m, p), math.prod(lead[1:])
        return shape, lambda lo, hi: (_operand_rows(a, lo, hi), _operand_rows(b, lo, hi),
                                      _buffer_rows(out, shape, lo, hi), m, n, p, (hi - lo) * inner)
    if name in ("im2col", "col2im"):  # each image of the batch read and written on its own
        a, out, shape, *geometry = args
        if not _is_operand(a) or a[0] is out:
            return None
        shape = tuple(shape)
        return shape, lambda lo, hi: (_operand_rows(a, lo, hi), _buffer_rows(out, shape, lo, hi),
                                      (hi - lo,) + shape[1:], *geometry)
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
        if _reads_across_rows(shape, a[2], kept):
            return None
        kept_shape = shape[:kept]
        return shape, lambda lo, hi: (_operand_rows(a, lo, hi), _buffer_rows(out, kept_shape, lo, hi), reduce_size)
    return None


# the optimizers' fused updates (kernels_cpu.sgd_step/adam_step): name -> how many array operands lead
_OPTIMIZER_UPDATES = {"sgd_step": 3, "adam_step": 4, "rmsprop_step": 5, "adagrad_step": 3, "adadelta_step": 4}


def _reads_across_rows(shape: tuple, strides: Optional[tuple], kept: int) -> bool:
    """Whether a reduction's kept axes are laid out inside its reduced ones (a column sum: the
    bias gradient of a Linear layer, summing a (rows, features) gradient over rows). numpy then
    adds whole memory rows into the output, and blocks of kept rows would each stream every
    memory row for half its values: measured on 2 cores, such a split is about 2x slower than the
    whole call at every size from 256k to 7M elements, so it stays whole."""
    if strides is None or kept == len(shape):
        return False
    inner = min(abs(s) for n, s in zip(shape[kept:], strides[kept:]) if n > 1) if any(
        n > 1 for n in shape[kept:]) else 0
    return any(n > 1 and abs(s) < inner for n, s in zip(shape[:kept], strides[:kept]))


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
    if name == "matmul":  # the work is the multiply-adds
        m, n, p = args[3:6]
        blocks = row_blocks(shape[0], math.prod(shape[:-1]) * n * p, MATMUL_MIN_WORK)
    else:
        least = MIN_BY_KIND.get(name, MIN_ELEMENTS)
        blocks = row_blocks(shape[0], math.prod(shape), least)
        if len(blocks) < 2 and least > TRY_ELEMENTS:  # maybe worth it: timed both ways
            blocks = row_blocks(shape[0], math.prod(shape), TRY_ELEMENTS)
            if len(blocks) > 1:
                launch = prepare(name, args)
                return faster_of(_plain(kernel, args) if launch is None else launch,
                                 _split_launch(name, kernel, blocks, rows_of, prepare))
    if len(blocks) < 2:
        return None
    return _split_launch(name, kernel, blocks, rows_of, prepare)


def _split_launch(name: str, kernel, blocks, rows_of, prepare) -> Callable[[], None]:
    launches = []
    for lo, hi in blocks:
        block_args = rows_of(lo, hi)
        launch = prepare(name, block_args)
        if launch is None:
            launch = _plain(kernel, block_args)
        launches.append(launch)
    return run_blocks(launches)


def whole(name: str, launch: Callable[[], Any]) -> Callable[[], Any]:
    """The launch of a call that runs whole. For a matmul the workers are started first: with
    blas_pool installed they run OpenBLAS's jobs, and the launch is returned as it is; without
    it the launch parks the spinning workers first (`park`), so OpenBLAS's own helper threads
    find the cores free. Any other launch as it is."""
    if name not in ("matmul", "matmul_accumulate") or threads() < 2:
        return launch
    _workers(threads() - 1)
    if blas_pool.installed():  # the workers run OpenBLAS's jobs themselves: nothing to park
        return launch

    def parked() -> Any:
        _PARK[0] += 1
        return launch()
    return parked


def _plain(kernel, args: tuple) -> Callable[[], Any]:
    from ..dtypes import HostScalar

    if any(isinstance(a, HostScalar) for a in args):
        return lambda: kernel(*(a.value if isinstance(a, HostScalar) else a for a in args))
    return lambda: kernel(*args)


def blocks_of(arrays: List[np.ndarray], rowwise: List[bool], lo: int, hi: int) -> List[np.ndarray]:
    """Rows lo:hi of the arrays read or written by rows (rowwise), the others as they are."""
    return [a[lo:hi] if r else a for a, r in zip(arrays, rowwise)]
