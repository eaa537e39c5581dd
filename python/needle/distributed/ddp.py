"""DistributedDataParallel: one model replica per rank, gradients averaged during backward.

    ddp = DistributedDataParallel(model)      # every rank now holds rank 0's weights
    for X, y in loader:                       # each rank its own shard (DistributedSampler)
        opt.reset_grad()
        loss = loss_fn(ddp(X), y)
        loss.backward()                       # ... and .grad <- the mean over the ranks, in place
        opt.step()                            # same gradients, same step: replicas stay equal

As in PyTorch, `loss.backward()` averages the gradients itself, once the backward pass
has finished, so a PyTorch-style loop keeps the replicas identical with no extra call.
`ddp.sync_gradients()` stays for manual use and does nothing when the backward already
averaged; `with ddp.no_sync():` skips the averaging (for gradient accumulation, as in
PyTorch: the next backward outside it averages what was accumulated). Communication does
not overlap the backward pass (PyTorch's DDP starts each bucket's allreduce as soon as its
gradients are ready); on the CPUs needle runs on, both compete for the same cores anyway.

Gradients travel in buckets of up to `bucket_mb` MiB (25 by default, PyTorch's
bucket_cap_mb): a few large allreduces instead of one per parameter. The averaging also
runs inside a compiled step (`ndl.compile`), on every replay. (How: docs/architecture.md,
"Data-parallel training".)

BatchNorm: each rank normalises with the statistics of its own batch (PyTorch's DDP
without SyncBatchNorm), so a BatchNorm model trained on 2 ranks with batch b is not the
same as one trained on one process with batch 2b. The running statistics (and any
other buffer) are rank 0's: sync_gradients() broadcasts them after the gradients
(PyTorch broadcasts them before each forward), so after every step all ranks hold the
same model, parameters and buffers, and evaluate alike. Without BatchNorm (or other
per-batch statistics), K steps on R ranks with batch b give the parameters one process
gets on the same K global batches of R*b samples, up to float rounding.
"""
from __future__ import annotations

import contextlib
from typing import Any, List, Optional, Sequence

import numpy as np

from .. import autograd
from ..autograd import Tensor, array_api
from ..nn.nn_basic import Module
from .comm import Communicator, communicator

__all__ = ["DistributedDataParallel", "broadcast_from_rank0"]

DEFAULT_BUCKET_MB = 25.0


class _Bucket:
    """Tensors of one device and dtype that travel together, and the host buffer they are packed into."""

    def __init__(self, tensors: List[Tensor]):
        self.tensors = tensors
        self.sizes = tuple(int(np.prod(t.shape, dtype=np.int64)) for t in tensors)
        self.device = tensors[0].device
        self.flat = np.empty(sum(self.sizes), dtype=array_api.dtype_name(tensors[0].dtype))

    @property
    def nbytes(self) -> int:
        return self.flat.nbytes


def _buckets(tensors: Sequence[Tensor], cap_bytes: float) -> List[_Bucket]:
    """Consecutive runs of tensors of one (device, dtype), each run cut before it would pass
    `cap_bytes` (a tensor larger than the cap travels alone)."""
    groups: List[List[Tensor]] = []
    size = 0
    for t in tensors:
        key = (str(t.device), array_api.dtype_name(t.dtype))
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(key[1]).itemsize
        last = groups[-1] if groups else None
        if last is None or key != (str(last[0].device), array_api.dtype_name(last[0].dtype)) \
                or size + nbytes > cap_bytes:
            groups.append([t])
            size = nbytes
        else:
            last.append(t)
            size += nbytes
    return [_Bucket(g) for g in groups]


# --- moving bucket contents between device buffers and the host buffer ----------------------------

def _host_array(buffer) -> Optional[np.ndarray]:
    """A flat numpy view of a host buffer (numpy mode's array, or a cpu device's Array); None for device memory."""
    if isinstance(buffer, np.ndarray):
        return buffer.reshape(-1)
    array = getattr(buffer, "array", None)
    return array if isinstance(array, np.ndarray) else None


def _pack(bucket: _Bucket, device, buffers: tuple) -> None:
    offset = 0
    for buffer, n in zip(buffers, bucket.sizes):
        host = _host_array(buffer)
        bucket.flat[offset:offset + n] = host[:n] if host is not None else device.to_numpy(buffer, (n,), (1,), 0)
        offset += n


def _unpack(bucket: _Bucket, device, buffers: tuple) -> None:
    offset = 0
    for buffer, n in zip(buffers, bucket.sizes):
        host = _host_array(buffer)
        if host is not None:
            host[:n] = bucket.flat[offset:offset + n]
        else:
            device.from_numpy(bucket.flat[offset:offset + n], buffer)
        offset += n


def _allreduce_mean(comm: Communicator, bucket: _Bucket, device, *buffers) -> None:
    """buffers <- their mean over the ranks (one Allreduce). A host call: replayed by ndl.compile."""
    _pack(bucket, device, buffers)
    comm.allreduce_sum_(bucket.flat)
    np.divide(bucket.flat, comm.size, out=bucket.flat)
    _unpack(bucket, device, buffers)


def _broadcast(comm: Communicator, bucket: _Bucket, device, *buffers) -> None:
    """buffers <- rank 0's (one Bcast). A host call: replayed by ndl.compile."""
    if comm.rank == 0:
        _pack(bucket, device, buffers)
    comm.broadcast_(bucket.flat, root=0)
    if comm.rank != 0:
        _unpack(bucket, device, buffers)


def _buffer_of(data) -> Any:
    """What a host call gets for an array: an NDArray's buffer (which ndl.compile records as a
    slot), or numpy mode's array itself."""
    return getattr(data, "_handle", data)


def _compact_writable(data):
    """`data` when it is compact and owns its buffer whole (so writing the buffer writes exactly
    this array), else a compact copy."""
    if hasattr(data, "_handle"):
        return data.compact()
    if data.flags.c_contiguous and data.flags.writeable:
        return data
    return np.array(data, order="C")


def broadcast_from_rank0(tensors: Sequence[Tensor], comm: Optional[Communicator] = None,
                      bucket_mb: float = DEFAULT_BUCKET_MB) -> None:
    """Copy rank 0's values into `tensors` on every rank, in place (same shapes everywhere)."""
    comm = communicator() if comm is None else comm
    if comm.size == 1:
        return
    for bucket in _buckets(list(tensors), bucket_mb * 2 ** 20):
        datas = [_compact_writable(t.realize_cached_data()) for t in bucket.tensors]
        _broadcast(comm, bucket, bucket.device, *[_buffer_of(d) for d in datas])
        if comm.rank != 0:
            for t, d in zip(bucket.tensors, datas):
                if d is not t.realize_cached_data():  # a copy was written: put it in place
                    with autograd.no_grad():
                        t.copy_(Tensor.make_const(d))


class _Plan:
    """DDP's bookkeeping, in an object Module's tensor walk does not enter (its tensors would
    otherwise show up twice in state_dict)."""

    def __init__(self, params: Sequence[Tensor], buffers: Sequence[Tensor], cap_bytes: float):
        self.params = params
        self.buffers = buffers
        self.grad_buckets = _buckets(params, cap_bytes)
        self.averaged: tuple = ()  # the .grad tensors the last averaging wrote
        self.buffer_buckets = _buckets(buffers, cap_bytes)


class DistributedDataParallel(Module):
    """Data-parallel training of `module` over the ranks of the MPI job (see the module docstring).

    On construction every rank's parameters and buffers (BatchNorm running statistics,
    any tensor of the module that is not a Parameter) become rank 0's. Then, per step:
    `ddp(x)` runs the module; at the end of `loss.backward()` every parameter's .grad is
    replaced by its mean over the ranks and the buffers by rank 0's (or, inside
    `no_sync()`, left as they are until the next backward outside it). Works eagerly and
    inside `ndl.compile`.

    Args:
        module: the model; every rank must build the same architecture.
        bucket_mb: the largest bucket of gradients reduced in one Allreduce, in MiB.
        broadcast_buffers: sync_gradients() also copies rank 0's buffers to every rank.
        comm: the communicator (default: the one `needle.distributed.init()` made).

    `state_dict()` keys carry a "module." prefix (PyTorch's); save `ddp.module` for
    checkpoints that a single process loads as is.
    """

    def __init__(self, module: Module, *, bucket_mb: float = DEFAULT_BUCKET_MB, broadcast_buffers: bool = True,
                 comm: Optional[Communicator] = None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a needle.nn.Module, got {type(module).__name__}")
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {bucket_mb}")
        self.module = module
        self.training = module.training
        self.broadcast_buffers = broadcast_buffers
        self._comm = communicator() if comm is None else comm
        params = module.parameters()
        buffers = module.buffers()
        self._plan = _Plan(params, buffers, bucket_mb * 2 ** 20)
        broadcast_from_rank0(params + buffers, self._comm, bucket_mb)
        self._sync_enabled = True
        self._queued = False  # the averaging is queued for the end of the running backward
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_gradient)

    def _on_gradient(self, _param: Tensor) -> None:
        """A parameter's gradient is in: queue the averaging for the end of this backward pass."""
        if self._sync_enabled and not self._queued:
            self._queued = True
            autograd.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        self._queued = False
        self._average()

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside skip the averaging (PyTorch's DDP.no_sync): accumulate gradients
        locally (`backward(accumulate=True)`); the first backward outside averages them."""
        previous = self._sync_enabled
        self._sync_enabled = False
        try:
            yield
        finally:
            self._sync_enabled = previous

    @property
    def comm(self) -> Communicator:
        return self._comm

    @property
    def buckets(self) -> int:
        """How many Allreduce calls one sync_gradients() makes."""
        return len(self._plan.grad_buckets)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _broadcast_buffers(self) -> None:
        for bucket in self._plan.buffer_buckets:
            datas = [t.realize_cached_data() for t in bucket.tensors]
            for t, d in zip(bucket.tensors, datas):
                if _compact_writable(d) is not d:
                    raise RuntimeError(f"DistributedDataParallel: a buffer of shape {t.shape} is a strided view; "
                                       "buffers must own their memory to be broadcast in place")
            array_api.host_call(_broadcast, self._comm, bucket, bucket.device, *[_buffer_of(d) for d in datas])

    def sync_gradients(self) -> None:
        """Replace each parameter's .grad by its mean over the ranks, in place, and (with
        broadcast_buffers) every buffer by rank 0's. backward() does this itself; call it
        yourself only after a backward inside no_sync() (or gradients set by hand). Nothing
        happens when every .grad is still the tensor the last averaging wrote.

        A parameter without a gradient on some rank (unused in its forward) counts as zero
        there and gets the mean like the others, so every rank's optimizer takes the same step.
        """
        averaged = self._plan.averaged
        if len(averaged) == len(self._plan.params) and all(
                p.grad is g for p, g in zip(self._plan.params, averaged)):
            return
        self._average()

    def _average(self) -> None:
        if self._comm.size == 1:
            return
        for bucket in self._plan.grad_buckets:
            buffers = [_buffer_of(self._grad_data(p)) for p in bucket.tensors]
            array_api.host_call(_allreduce_mean, self._comm, bucket, bucket.device, *buffers)
        if self.broadcast_buffers:
            self._broadcast_buffers()
        self._plan.averaged = tuple(p.grad for p in self._plan.params)

    @staticmethod
    def _grad_data(p: Tensor):
        """p.grad's array, made compact (and p.grad replaced by it) if it was a strided view."""
        if p.grad is None:
            p.grad = Tensor.make_const(array_api.full(p.shape, 0, array_api.dtype_name(p.dtype), p.device))
        data = p.grad.realize_cached_data()
        compact = _compact_writable(data)
        if compact is not data:
            p.grad = Tensor.make_const(compact)
        return compact
