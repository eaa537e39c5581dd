"""OpenBLAS's parallel jobs run on the replay's worker threads (`parallel_cpu`), not on its own.

Why: OpenBLAS keeps its own helper threads, and after each multi-threaded call a helper spins
for a while (OPENBLAS_THREAD_TIMEOUT, see needle/_openblas.py) waiting for the next one. On a
2-core machine that spinning helper holds the second core just when a compiled step splits
the elementwise loops that follow a matmul over both cores (`parallel_cpu`): the loop's
second block and the helper share a core. Measured on the 2-core benchmark machine (gpt,
compiled): with the helper spinning its fused loops took 36.6 ms per step, with it asleep
24.4 ms -- but a helper that sleeps at once pays a 20-40 us wake-up at every matmul, which
cost lstm_lm 15 ms and resnet9 3 ms. One pool for both kinds of work removes the trade: the
worker that finished a matmul's job is the one that runs the next loop's block.

How: OpenBLAS (0.3.27 and later) lets a program run its parallel jobs
(`openblas_set_threads_callback_function`): exec_blas hands the callback `numjobs` jobs, job
i being `dojob(i, jobdata + i * elsize, dojob_data)`, and expects them all done when it
returns. The callback here is a numba `cfunc`, so it runs without the GIL (numpy has let go
of it for the BLAS call). Job 0 runs on the calling thread; every other job goes to a
parallel_cpu worker that is spinning for work (`listen`), else to a sleeping one or to a
BLAS-only helper thread (`add_helper`, one per worker: it never spins), woken through its
futex, and only when every one of those is busy to a new thread (`pthread_create`).

On a machine shared with another busy process a spinning worker gets only its share of its
core, so a job handed to it can wait a whole time slice, while a thread woken from sleep runs
at once: a worker whose sched_yield lets another thread run sleeps instead of spinning on.
Measured on the 2-core gpt step beside a busy process: 900 ms per step before that rule, 180-230
after, OpenBLAS's own pool 172-185 (and 87 against 106 on the quiet machine).

Same values: OpenBLAS still decides the jobs (how many, which rows and columns of the
product each one computes, in which order each sums); only the threads that run them are
ours. So every product has the bits it has with OpenBLAS's own threads.

Three rules from OpenBLAS's code. All jobs of a call must run at once (the threaded level-3
kernels busy-wait on each other's packed panels: fewer threads than jobs would never end).
One call runs at a time (a job's thread number indexes OpenBLAS's per-thread status and
scratch buffers, which two calls at once would share): a process-wide lock, taken in the
callback. And those thread numbers must not be the ones of OpenBLAS's own helper threads:
its parallel LAPACK (getrf, under numpy's solve and inv) still hands work to them directly
(`exec_blas_async`, which skips the callback), and a pool job writing helper 0's status
lost that work (a solve running beside a matmul never returned). The pool's jobs take the
last entries of those tables (MAX_THREADS - numjobs, ...), the helpers use the first ones;
the pool is installed only where both fit (twice the thread count <= MAX_THREADS).

`install()` puts the callback into numpy's OpenBLAS; it is done once, at the first compiled
program that splits work over threads, and stays for the process. NEEDLE_BLAS_POOL=0 keeps
OpenBLAS's own threads. A forked child, which has none of the parent's worker threads, runs
every job but the first on threads of its own (the lock and the workers' states are reset in
the child, and the callback checks the process id).
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import sys
import threading
import warnings
from typing import Any, List, Optional

import numpy as np

from .._openblas import numpy_openblas, openblas_symbol

__all__ = ["install", "installed", "stats", "register_worker", "add_helper", "listener", "CELL_SIZE"]

# a worker's cell (parallel_cpu's int64 array): indices 0 and 8 are parallel_cpu's; the BLAS job
# fields sit on a cache line of their own
STATE, JOB_FN, JOB_THREAD, JOB_DATA, JOB_EXTRA, JOB_DONE_AT = 16, 17, 18, 19, 20, 21
CELL_SIZE = 24
IDLE, LISTENING, CLAIMED, READY, SLEEPING = 0, 1, 2, 3, 4
_SYS_FUTEX = {"x86_64": 202, "AMD64": 202, "aarch64": 98, "arm64": 98}
_FUTEX_WAIT, _FUTEX_WAKE = 128, 129  # FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE

MAX_WORKERS = 64

# process-wide state the callback reads by address: [0] the call lock, [8] the owner's pid,
# [9] calls run, [10] jobs that got a thread of their own, [16] how many workers, [24 + w]
# worker w's cell address
_SHARED = np.zeros(24 + MAX_WORKERS, np.int64)
_LOCK, _PID, _CALLS, _OWN_THREADS, _COUNT, _CELLS = 0, 8, 9, 10, 16, 24
# a job's record (8 int64, in the callback's array): fn, thread, data, extra, done, pthread id
R_FN, R_THREAD, R_DATA, R_EXTRA, R_DONE, R_TID = 0, 1, 2, 3, 4, 5


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.tried = False
        self.libraries: List[str] = []
        self.max_threads = 0  # OpenBLAS's MAX_THREADS: its per-thread tables have that many entries


_state = _State()
_install_lock = threading.Lock()
_worker_cells: List[np.ndarray] = []  # kept alive: the callback holds their addresses


def _setters() -> List[Any]:
    """[(path, setter, MAX_THREADS, its thread count now)]: the callback setters of numpy's own
    OpenBLAS (its wheels bundle scipy-openblas); [] for any other BLAS (MKL, Accelerate), an
    OpenBLAS older than 0.3.27, or one whose build does not say its MAX_THREADS."""
    setters = []
    for path, lib in numpy_openblas():
        setter = openblas_symbol(lib, "openblas_set_threads_callback_function")
        config = openblas_symbol(lib, "openblas_get_config")
        count = openblas_symbol(lib, "openblas_get_num_threads")
        if setter is None or config is None or count is None:
            continue
        setter.argtypes, setter.restype = [ctypes.c_void_p], None
        config.argtypes, config.restype = [], ctypes.c_char_p
        count.argtypes, count.restype = [], ctypes.c_int
        found = re.search(r"MAX_THREADS=(\d+)", (config() or b"").decode("ascii", "replace"))
        if found:
            setters.append((path, setter, int(found.group(1)), int(count())))
    return setters


@functools.lru_cache(maxsize=None)
def _parts() -> Any:
    """The numba pieces (compiled at the first install): the atomics, `listen`, the callback."""
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()

    @intrinsic
    def load_acquire(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.load_atomic(builder.inttoptr(args[0], i64.as_pointer()), "acquire", 8)
        return types.int64(types.int64), codegen

    @intrinsic
    def store_release(typingctx, address, value):
        def codegen(context, builder, signature, args):
            builder.store_atomic(args[1], builder.inttoptr(args[0], i64.as_pointer()), "release", 8)
            return context.get_dummy_value()
        return types.void(types.int64, types.int64), codegen

    @intrinsic
    def compare_exchange(typingctx, address, expected, new):
        def codegen(context, builder, signature, args):
            result = builder.cmpxchg(builder.inttoptr(args[0], i64.as_pointer()), args[1], args[2],
                                     "seq_cst", "seq_cst")
            return builder.extract_value(result, 1)
        return types.boolean(types.int64, types.int64, types.int64), codegen

    @intrinsic
    def run_job(typingctx, fn, thread, data, extra):
        """dojob(thread, (void *) data, extra): OpenBLAS's job function, called through its address."""
        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(ir.VoidType(), [i32, i8p, i32])
            builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                         [builder.trunc(args[1], i32), builder.inttoptr(args[2], i8p), builder.trunc(args[3], i32)])
            return context.get_dummy_value()
        return types.void(types.int64, types.int64, types.int64, types.int64), codegen

    @intrinsic
    def cycles(typingctx):
        """The CPU's cycle counter (rdtsc on x86)."""
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, []), "llvm.readcyclecounter")
            return builder.call(fn, [])
        return types.int64(), codegen

    @intrinsic
    def address_of(typingctx, pointer):
        def codegen(context, builder, signature, args):
            return builder.ptrtoint(args[0], i64)
        return types.int64(types.voidptr), codegen

    @intrinsic
    def pointer_to(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], i8p)
        return types.voidptr(types.int64), codegen

    libc = ctypes.CDLL(None)
    give_way = libc.sched_yield
    give_way.argtypes, give_way.restype = [], ctypes.c_int
    getpid = libc.getpid
    getpid.argtypes, getpid.restype = [], ctypes.c_int
    pthread_create = libc.pthread_create
    pthread_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    pthread_create.restype = ctypes.c_int
    pthread_detach = libc.pthread_detach
    pthread_detach.argtypes, pthread_detach.restype = [ctypes.c_ulong], ctypes.c_int

    futex = libc.syscall  # futex(2) through syscall(2): sleeping workers wait on their STATE word
    futex.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_int]
    futex.restype = ctypes.c_long
    sys_futex = _SYS_FUTEX[platform.machine()]

    @numba.njit(nogil=True)
    def wake(at):
        futex(sys_futex, pointer_to(at), _FUTEX_WAKE, 1, pointer_to(0), pointer_to(0), 0)

    @numba.njit(nogil=True)
    def hand_over(cell, fn, job, data, extra, done_at, sleeping):
        """Give a claimed worker its job (then wake it if it was asleep)."""
        store_release(cell + 8 * JOB_FN, fn)
        store_release(cell + 8 * JOB_THREAD, job)
        store_release(cell + 8 * JOB_DATA, data)
        store_release(cell + 8 * JOB_EXTRA, extra)
        store_release(cell + 8 * JOB_DONE_AT, done_at)
        store_release(cell + 8 * STATE, READY)
        if sleeping:
            wake(cell + 8 * STATE)

    shared = int(_SHARED.ctypes.data)
    slots = _state.max_threads

    @numba.cfunc(types.voidptr(types.voidptr))
    def job_thread(record):
        """A thread of its own for one job (no worker was free): run it, say done."""
        at = address_of(record)
        run_job(load_acquire(at + 8 * R_FN), load_acquire(at + 8 * R_THREAD), load_acquire(at + 8 * R_DATA),
                load_acquire(at + 8 * R_EXTRA))
        store_release(at + 8 * R_DONE, 1)
        return record

    job_thread_address = int(job_thread.address)  # type: ignore[arg-type]

    @numba.cfunc(types.void(types.int32, types.voidptr, types.int32, types.uint64, types.voidptr, types.int32))
    def callback(sync, dojob, numjobs, elsize, jobdata, extra):
        fn, data, extra64, size = address_of(dojob), address_of(jobdata), np.int64(extra), np.int64(elsize)
        # the thread number a job gets is the index of OpenBLAS's per-thread status and scratch
        # buffer it uses (what part of the product it computes is its queue entry's position):
        # the top ones, which OpenBLAS's own helper threads -- still used directly by its
        # parallel LAPACK (getrf's exec_blas_async) -- never touch
        base = np.int64(slots) - numjobs
        while not compare_exchange(shared + 8 * _LOCK, 0, 1):  # one call at a time
            give_way()
        store_release(shared + 8 * _CALLS, load_acquire(shared + 8 * _CALLS) + 1)
        workers = load_acquire(shared + 8 * _COUNT)
        if getpid() != load_acquire(shared + 8 * _PID):  # a forked child: the workers are the parent's
            workers = 0
        jobs = np.zeros((numjobs, 8), np.int64)  # a thread of its own reads its job here
        records = jobs.ctypes.data
        for job in range(1, numjobs):
            record = records + 64 * job
            store_release(record + 8 * R_FN, fn)
            store_release(record + 8 * R_THREAD, base + job)
            store_release(record + 8 * R_DATA, data + job * size)
            store_release(record + 8 * R_EXTRA, extra64)
            store_release(record + 8 * R_DONE, 0)
            placed = False
            for w in range(workers):  # a spinning worker first, else a sleeping one
                cell = load_acquire(shared + 8 * (_CELLS + w))
                if compare_exchange(cell + 8 * STATE, LISTENING, CLAIMED):
                    hand_over(cell, fn, base + job, data + job * size, extra64, record + 8 * R_DONE, False)
                    placed = True
                    break
            for w in range(workers):
                if placed:
                    break
                cell = load_acquire(shared + 8 * (_CELLS + w))
                if compare_exchange(cell + 8 * STATE, SLEEPING, CLAIMED):
                    hand_over(cell, fn, base + job, data + job * size, extra64, record + 8 * R_DONE, True)
                    placed = True
            while not placed:
                if pthread_create(pointer_to(record + 8 * R_TID), pointer_to(0), pointer_to(job_thread_address),
                                  pointer_to(record)) == 0:
                    pthread_detach(load_acquire(record + 8 * R_TID))
                    store_release(shared + 8 * _OWN_THREADS, load_acquire(shared + 8 * _OWN_THREADS) + 1)
                    placed = True
                else:  # out of threads for now: the job cannot run later than the others (they wait for it)
                    give_way()
        run_job(fn, base, data, extra64)
        for job in range(1, numjobs):
            while load_acquire(records + 64 * job + 8 * R_DONE) == 0:
                give_way()
        jobs[0, R_DONE] = 1  # a use of `jobs` after every job is done: numba frees it at its last use
        store_release(shared + 8 * _LOCK, 0)

    # a turn of the spin in which sched_yield took this long (in cycles) ran another thread: the
    # core is shared (another busy process), and a spinning worker gets only its share of it --
    # a job handed to it waits for its time slice, while a sleeping thread that a job wakes runs
    # at once. So a worker that sees this sleeps instead of spinning on. Measured on the 2-core
    # gpt step with a busy process beside it: 900 ms per step spinning, 180 with OpenBLAS's pool.
    shared_core = int(_cycles_per_second(cycles) * 20e-6)

    @numba.njit(nogil=True)
    def listen(cell, done, value, spins, blas_spins, settle):
        """A worker between blocks (parallel_cpu): mark Python block `done` finished (if > 0), then
        run the BLAS jobs handed to it until Python block `value` is posted (then return). It
        spins for `spins` turns (at least `blas_spins` after a job: another product usually
        follows soon), then sleeps until a job or a block wakes it (`post`)."""
        at = cell.ctypes.data
        compare_exchange(at + 8 * STATE, IDLE, LISTENING)  # (already so after `listening`: keep a job)
        if done > 0:
            store_release(at + 8 * 8, done)
        turns, budget = 0, spins
        while True:
            state = load_acquire(at + 8 * STATE)
            if state == READY:
                run_job(load_acquire(at + 8 * JOB_FN), load_acquire(at + 8 * JOB_THREAD),
                        load_acquire(at + 8 * JOB_DATA), load_acquire(at + 8 * JOB_EXTRA))
                done_at = load_acquire(at + 8 * JOB_DONE_AT)
                store_release(at + 8 * STATE, LISTENING)
                store_release(done_at, 1)
                turns, budget = 0, max(spins, blas_spins)
                continue
            if state != LISTENING:  # claimed: the job's fields are being written
                continue
            if load_acquire(at) >= value:
                if compare_exchange(at + 8 * STATE, LISTENING, IDLE):
                    for _ in range(settle):
                        give_way()
                    return True
                continue
            if turns < budget:
                before = cycles()
                give_way()
                if cycles() - before > shared_core:
                    budget = turns  # the core is shared: sleep rather than spin
                turns += 1
                continue
            if not compare_exchange(at + 8 * STATE, LISTENING, SLEEPING):
                continue
            if load_acquire(at) >= value:  # posted just before: `post` may have missed SLEEPING
                compare_exchange(at + 8 * STATE, SLEEPING, LISTENING)
                continue
            # returns at once unless STATE is still SLEEPING; whoever changes it wakes us
            futex(sys_futex, pointer_to(at + 8 * STATE), _FUTEX_WAIT, SLEEPING, pointer_to(0), pointer_to(0), 0)
            compare_exchange(at + 8 * STATE, SLEEPING, LISTENING)  # woken for a block (or spuriously)
            turns, budget = 0, spins

    @numba.njit(nogil=True)
    def listening(cell):
        """A worker done with its Python block takes jobs from now on, before it says the block is
        done: the caller's next call is often a matmul, and a worker not yet listening for it would
        send its job to a new thread (under load, a new thread waits a time slice to start)."""
        compare_exchange(cell.ctypes.data + 8 * STATE, IDLE, LISTENING)

    @numba.njit(nogil=True)
    def post(cell, number):
        """Python block `number` is posted to this worker: publish it, and wake the worker if asleep."""
        at = cell.ctypes.data
        store_release(at, number)
        if compare_exchange(at + 8 * STATE, SLEEPING, LISTENING):
            wake(at + 8 * STATE)

    cell = np.zeros(CELL_SIZE, np.int64)
    post(cell, 1)
    listening(cell)
    listen(cell, 0, 1, 0, 0, 0)  # compile them now
    return callback, listen, post, listening


def _cycles_per_second(cycles: Any) -> float:
    """The cycle counter's rate, measured over 20 ms."""
    import time

    import numba

    read = numba.njit(nogil=True)(lambda: cycles())
    read()
    start, clock = read(), time.perf_counter()
    time.sleep(0.02)
    return max((read() - start) / max(time.perf_counter() - clock, 1e-9), 1e6)


def listener() -> Optional[Any]:
    """(listen, post, listening) (see _parts) once the pool is installed, else None."""
    return _parts()[1:] if _state.installed else None


def register_worker(cell: np.ndarray) -> None:
    """Make a worker's cell (CELL_SIZE int64) one the callback may hand jobs to."""
    if cell.dtype != np.int64 or cell.size < CELL_SIZE:
        raise ValueError(f"a worker cell is {CELL_SIZE} int64, got {cell.size} {cell.dtype}")
    with _install_lock:
        count = int(_SHARED[_COUNT])
        if count >= MAX_WORKERS:
            return  # its jobs would get threads of their own
        _worker_cells.append(cell)
        _SHARED[_CELLS + count] = cell.ctypes.data
        _SHARED[_COUNT] = count + 1


def add_helper() -> None:
    """One more thread that only runs BLAS jobs: it sleeps on its futex until a job wakes it (no
    spinning: the workers' core stays theirs). The callback gives it a job when no worker is
    waiting in `listen` -- one busy with a block, or still getting the GIL for one the caller
    already ran -- where a new thread would do: under load a woken thread runs at once, a new
    one only after the running thread's time slice (measured with a busy process beside the
    2-core gpt step: 870 ms per step with new threads, as OpenBLAS's own pool with helpers)."""
    if not _state.installed:
        return
    listen = _parts()[1]
    cell = np.zeros(CELL_SIZE, np.int64)
    register_worker(cell)
    threading.Thread(target=listen, args=(cell, 0, 1 << 62, 0, 0, 0), daemon=True,
                     name="needle-blas-helper").start()


def installed() -> bool:
    """Whether numpy's OpenBLAS runs its jobs here (see install)."""
    return _state.installed


def stats() -> dict:
    """{"calls": OpenBLAS calls whose jobs ran here, "own_threads": jobs that found no worker
    free and got a thread of their own, "workers": workers registered, "libraries": paths}."""
    return dict(calls=int(_SHARED[_CALLS]), own_threads=int(_SHARED[_OWN_THREADS]), workers=int(_SHARED[_COUNT]),
                libraries=list(_state.libraries))


def install() -> bool:
    """Run numpy's OpenBLAS jobs on this pool from now on (idempotent); False when it cannot
    (another BLAS, an OpenBLAS without the callback, NEEDLE_BLAS_POOL=0)."""
    if _state.tried:
        return _state.installed
    with _install_lock:
        if _state.tried:
            return _state.installed
        _state.tried = True
        if os.environ.get("NEEDLE_BLAS_POOL", "1").strip() == "0":
            return False
        setters = _setters() if sys.platform == "linux" and platform.machine() in _SYS_FUTEX else []
        if not setters:
            return False
        # OpenBLAS's helpers use the first entries of its per-thread tables and the pool's jobs the
        # last ones (see the callback): both must fit, with room for the helpers to grow
        wanted = max(max(count, 1) for _, _, _, count in setters)
        limit = min(max_threads for _, _, max_threads, _ in setters)
        if 2 * max(wanted, os.cpu_count() or 1) > limit:
            return False
        _state.max_threads = limit
        try:
            callback = _parts()[0]
        except Exception as err:  # noqa: BLE001  (no pool: OpenBLAS's own threads, as before)
            warnings.warn(f"needle: OpenBLAS's jobs stay on its own threads (the pool did not build: {err})",
                          RuntimeWarning, stacklevel=2)
            return False
        _SHARED[_PID] = os.getpid()
        for path, setter, _, _ in setters:
            setter(callback.address)
            _state.libraries.append(path)
        _state.installed = True
        return True


def _after_fork_in_child() -> None:
    # a fork taken while another thread held the call lock would leave it held for good; the
    # workers' threads do not exist here (the pid check sends every job to threads of its own)
    _SHARED[_LOCK] = 0
    for cell in _worker_cells:
        cell[STATE] = IDLE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
