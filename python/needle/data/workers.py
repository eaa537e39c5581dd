"""Worker processes for ``DataLoader(num_workers > 0)``.

The main process decides everything about an epoch: the order (the same draws as with
``num_workers=0``), the batches, and one seed per batch. Workers only fetch: batch k goes to
worker ``k % num_workers`` as a task (the batch's indices and its seed); the worker seeds
numpy's global RNG and Python's ``random`` with the batch's seed, calls ``dataset[i]`` for
each index (or ``dataset[index_array]`` once for a dataset that declares batched indexing)
and sends the samples back. The main process collates them, in batch order. So:

* the batches come in the order of ``num_workers=0`` and hold the same samples;
* random transforms inside ``dataset[i]`` draw from a stream that depends only on the epoch's
  seed and the batch number, not on the number of workers or which worker ran the batch:
  under ``np.random.seed(s)`` an epoch is reproducible. (They do not draw the numbers the
  main process would draw with ``num_workers=0``; nothing parallel can.)
* ``collate_fn`` runs in the main process (PyTorch runs it in the workers: the batches are
  the same, only that work is not spread over the workers).

Processes are started with the ``spawn`` method by default, the safe one with numba, BLAS
thread pools and CUDA in the parent (``fork`` can deadlock on locks held by those threads);
``multiprocessing_context="fork"`` or ``"forkserver"`` (or a context object) choose another.
With spawn, the dataset and ``worker_init_fn`` travel by pickle, so their classes and
functions must be importable: define them in a module, or in a script guarded by
``if __name__ == "__main__":`` (the same rule as PyTorch on macOS and Windows). needle
Tensors inside the dataset or the samples travel as their values, dtype and device.

A worker that raises re-raises the same exception in the main process, from a RuntimeError
holding the worker's traceback; a worker that dies is reported (RuntimeError with its exit
code) instead of waiting forever; ``timeout`` > 0 bounds the wait for one batch.
"""
from __future__ import annotations

import io
import multiprocessing
import pickle
import queue
import random
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..autograd import Tensor
from ..backend_selection import NDArray, get_device

__all__ = ["WorkerInfo", "get_worker_info", "WorkerPool", "worker_context", "dumps", "loads"]


# --- needle Tensors across processes --------------------------------------------------------------

def _rebuild_tensor(array: np.ndarray, dtype: str, device: str, requires_grad: bool) -> Tensor:
    return Tensor(array, device=get_device(device), dtype=dtype, requires_grad=requires_grad)


def _rebuild_ndarray(array: np.ndarray, device: str) -> Any:
    return NDArray(array, device=get_device(device), dtype=str(array.dtype))


class _Pickler(pickle.Pickler):
    """pickle, with needle Tensors (and nd-mode NDArrays) sent as their values, dtype and device."""

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            return _rebuild_tensor, (obj.numpy(), str(obj.dtype), obj.device.name, bool(obj.requires_grad))
        if NDArray is not np.ndarray and isinstance(obj, NDArray):
            return _rebuild_ndarray, (obj.numpy(), obj.device.name)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """`obj` pickled, needle Tensors included (see _Pickler)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# --- inside a worker ------------------------------------------------------------------------------------

class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker (PyTorch's fields): ``id`` (0 ..
    num_workers - 1), ``num_workers``, ``seed`` (the seed the worker's RNGs got when it started;
    each batch then reseeds them, see the module docstring) and ``dataset`` (the worker's copy)."""

    def __init__(self, id: int, num_workers: int, seed: int, dataset: Any):  # noqa: A002  (PyTorch's name)
        self.id = id
        self.num_workers = num_workers
        self.seed = seed
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


_INFO: Optional[WorkerInfo] = None


def get_worker_info() -> Optional[WorkerInfo]:
    """Inside a DataLoader worker process, its WorkerInfo; None in the main process (PyTorch's)."""
    return _INFO


def _seed_all(seed: int) -> None:
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _error(where: str) -> Tuple[str, Optional[bytes]]:
    """The exception being handled, for the main process: (the worker's traceback, the pickled
    exception or None when it cannot be pickled)."""
    text = f"{where}:\n{traceback.format_exc()}"
    exc: Optional[bytes]
    try:
        exc = pickle.dumps(sys.exc_info()[1])
        pickle.loads(exc)
    except Exception:
        exc = None
    return text, exc


def _worker_loop(worker_id: int, num_workers: int, payload: bytes, seed: int, tasks: Any, results: Any) -> None:
    """A worker's life: rebuild the dataset, run worker_init_fn, then fetch tasks until None."""
    global _INFO
    failed = None
    try:
        _seed_all(seed)
        dataset, worker_init_fn = loads(payload)
        _INFO = WorkerInfo(worker_id, num_workers, seed, dataset)
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except BaseException:
        failed = _error(f"DataLoader worker {worker_id} failed while starting (rebuilding the dataset "
                        "or running worker_init_fn)")
    while True:
        try:
            task = tasks.get()
        except (EOFError, OSError, KeyboardInterrupt):  # the main process is gone
            return
        if task is None:
            return
        tag, k, batch_seed, indices, batched = task
        if failed is not None:
            results.put((tag, k, False, failed))
            continue
        try:
            _seed_all(int(batch_seed))
            assert _INFO is not None
            data = _INFO.dataset
            fetched = data[np.asarray(indices, dtype=np.int64)] if batched else [data[i] for i in indices]
            results.put((tag, k, True, dumps(fetched)))
        except BaseException:
            results.put((tag, k, False, _error(f"DataLoader worker {worker_id}, batch {k} (indices {indices})")))


# --- in the main process -------------------------------------------------------------------------------

_METHODS = ("spawn", "fork", "forkserver")


def worker_context(context: Any) -> Any:
    """The multiprocessing context for `context` (None: spawn; a start method's name; a context)."""
    if context is None:
        return multiprocessing.get_context("spawn")
    if isinstance(context, str):
        if context not in multiprocessing.get_all_start_methods():
            raise ValueError(f"DataLoader: multiprocessing_context must be one of "
                             f"{multiprocessing.get_all_start_methods()} or a multiprocessing context, "
                             f"got {context!r}")
        return multiprocessing.get_context(context)
    if hasattr(context, "Process") and hasattr(context, "Queue") and hasattr(context, "get_start_method"):
        return context
    raise TypeError(f"DataLoader: multiprocessing_context must be None, a start method's name ({', '.join(_METHODS)}) "
                    f"or a multiprocessing context, got {type(context).__name__}")


class _WorkerTraceback(RuntimeError):
    """The traceback of an exception raised in a worker process (the cause of the re-raised one)."""


class WorkerPool:
    """`num_workers` processes fetching batches of `dataset`; results are collected per tag (one
    tag per iterator), so several iterators can share persistent workers."""

    def __init__(self, dataset: Any, worker_init_fn: Optional[Callable[[int], None]], num_workers: int,
                 context: Any, seed: int, who: str = "DataLoader"):
        try:
            payload = dumps((dataset, worker_init_fn))
        except Exception as err:
            raise TypeError(
                f"{who}(num_workers={num_workers}): the dataset and worker_init_fn are sent to the worker processes "
                f"with pickle, and this failed: {err}. Define their classes and functions at module level (not "
                f"lambdas or local classes), or use num_workers=0") from err
        self.num_workers = num_workers
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(num_workers)]
        self.processes = [
            context.Process(target=_worker_loop, args=(w, num_workers, payload, (seed + w) % 2 ** 32, self.tasks[w],
                                                       self.results), daemon=True)
            for w in range(num_workers)]
        self._buffers: Dict[int, Dict[int, Tuple[bool, Any]]] = {}
        self._next_tag = 0
        self.closed = False
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.shutdown()
            raise

    def open(self) -> int:
        """A new tag for an iterator's tasks."""
        tag = self._next_tag
        self._next_tag += 1
        self._buffers[tag] = {}
        return tag

    def close(self, tag: int) -> None:
        """Forget a tag: its late results are dropped."""
        self._buffers.pop(tag, None)

    def submit(self, tag: int, k: int, seed: int, indices: List[int], batched: bool) -> None:
        self.tasks[k % self.num_workers].put((tag, k, int(seed), indices, batched))

    def result(self, tag: int, k: int, timeout: float) -> Any:
        """The fetched samples of task (tag, k), waiting for them; re-raises a worker's exception."""
        buffer = self._buffers[tag]
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while k not in buffer:
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    self.shutdown(grace=0.0)
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds waiting for batch {k} "
                                       "from its worker")
            try:
                got_tag, got_k, ok, payload = self.results.get(timeout=wait)
            except queue.Empty:
                self._check_alive()
                continue
            if got_tag in self._buffers:
                self._buffers[got_tag][got_k] = (ok, payload)
        ok, payload = buffer.pop(k)
        if ok:
            return loads(payload)
        text, exc = payload
        error = pickle.loads(exc) if exc is not None else RuntimeError(text.rstrip().rsplit("\n", 1)[-1])
        raise error from _WorkerTraceback(text)

    def _check_alive(self) -> None:
        for w, process in enumerate(self.processes):
            if not process.is_alive():
                code = process.exitcode
                self.shutdown(grace=0.0)
                raise RuntimeError(f"DataLoader worker {w} (pid {process.pid}) exited unexpectedly with exit code "
                                   f"{code}")

    def shutdown(self, grace: float = 1.0) -> None:
        """Stop the workers: idle ones finish on their own within `grace` seconds, the rest are
        terminated; then close the queues. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for tasks in self.tasks:
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + grace
        for process in self.processes:
            if process.pid is None:  # never started
                continue
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
        for q in self.tasks + [self.results]:
            q.cancel_join_thread()
            q.close()
