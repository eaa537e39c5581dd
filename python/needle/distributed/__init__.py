"""Data-parallel training over MPI: one process (rank) per core or machine, one model replica each.

Install the engine with `pip install "needle-dl[distributed]"` (`pip install -e ".[distributed]"`
in a clone): mpi4py and MPICH, both from PyPI, so `mpiexec` lands next to the Python that
installed them. needle imports and runs without it; mpi4py is imported only by `init()`.

A training script::

    import needle as ndl
    from needle import distributed as dist

    dist.init()                                   # join the job mpiexec started
    model = build_model()                         # the same architecture on every rank
    ddp = dist.DistributedDataParallel(model)     # every rank now holds rank 0's weights
    sampler = dist.DistributedSampler(train_set, seed=0)
    loader = ndl.data.DataLoader(train_set, batch_size=64, sampler=sampler)   # 64 per rank
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                  # same shuffle on every rank, a new one per epoch
        for X, y in loader:
            opt.reset_grad()
            loss = loss_fn(ddp(X), y)
            loss.backward()
            ddp.sync_gradients()                  # mean of the ranks' gradients, in place
            opt.step()
        if dist.rank() == 0:
            ndl.save(model.state_dict(), "model.safetensors")

run as `mpiexec -n 2 python train.py`, or, for the recipes of `needle train`::

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m needle train mlp --distributed

With batch size b per rank and R ranks a step sees R*b samples; scale the learning
rate as you would for that batch. Set OMP_NUM_THREADS so that ranks times BLAS threads
does not exceed the cores (1 when there are as many ranks as cores), or the ranks'
thread pools fight over the cores.

Several machines: the same command, with MPI told where to start the ranks. MPICH's
launcher reads a hostfile, one machine per line with an optional rank count::

    # hosts
    node1:4
    node2:4

    mpiexec -f hosts -n 8 -genv OMP_NUM_THREADS 1 python -m needle train mlp --distributed

Every machine needs the same Python environment at the same path, the data at the
path the command names, and passwordless ssh from the first machine to the others
(hydra starts the remote ranks over ssh; `-launcher slurm` under SLURM). Only rank 0
reads a checkpoint to resume and writes checkpoints and summaries, so `--checkpoint`
need only exist on rank 0's machine. Open MPI's mpirun takes `--hostfile hosts` with
lines `node1 slots=4`.

Failures: a rank that raises aborts the whole job (`MPI_Abort` from an excepthook that
`init()` installs), and a rank that dies is noticed by the launcher, which kills the
others; either way mpiexec exits with a non-zero status instead of leaving the other
ranks waiting forever in their next allreduce.
"""
from .comm import (
           Communicator,
           abort,
           communicator,
           init,
           is_initialized,
           launched_by_mpi,
           mpi_available,
           rank,
           world_size,
)
from .ddp import DistributedDataParallel, broadcast_from_rank0
from .sampler import DistributedSampler

__all__ = ["init", "is_initialized", "rank", "world_size", "communicator", "abort", "launched_by_mpi",
           "mpi_available", "Communicator", "DistributedDataParallel", "DistributedSampler", "broadcast_from_rank0"]
