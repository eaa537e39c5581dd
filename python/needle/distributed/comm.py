"""The process group: MPI through mpi4py, imported only when asked for.

`init()` joins the job that `mpiexec` started (or makes a one-process job when the
script was started without a launcher) and makes any uncaught exception end the
whole job at once: a rank that dies otherwise leaves the others waiting forever in
their next collective (MPI_Finalize at exit waits for them too), so the hook prints
the traceback and calls `MPI_Abort`, after which the launcher kills every rank and
exits with a non-zero status.

Everything else in `needle.distributed` talks to the job through `Communicator`, a
handful of collectives over numpy buffers and picklable objects, so that tests can
stand a fake one in for MPI.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, List, Optional

import numpy as np

from .._packaging import install_hint

__all__ = ["Communicator", "init", "is_initialized", "rank", "world_size", "communicator", "launched_by_mpi",
           "mpi_available", "MISSING_MPI", "abort"]

MISSING_MPI = (f"needle.distributed needs mpi4py and an MPI implementation: {install_hint('distributed')} "
               "(installs mpi4py and MPICH from PyPI)")

# variables that MPI launchers set in every process they start: MPICH's and Intel MPI's
# hydra (PMI_*), Open MPI (OMPI_*), PMIx-based launchers such as srun (PMIX_*), MVAPICH
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")

_COMM: Optional["Communicator"] = None


class Communicator:
    """The collectives needle uses, over an mpi4py communicator.

    Buffers are contiguous numpy arrays, reduced or broadcast in place; objects go
    through pickle (small things only: settings, optimizer scalars, RNG states).
    """

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()

    def allreduce_sum_(self, buffer: np.ndarray) -> None:
        """buffer <- the elementwise sum of every rank's buffer (same shape and dtype everywhere)."""
        self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)

    def broadcast_(self, buffer: np.ndarray, root: int = 0) -> None:
        """buffer <- root's buffer."""
        self.comm.Bcast(buffer, root=root)

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        """root's `value` on every rank."""
        return self.comm.bcast(value, root=root)

    def allgather_object(self, value: Any) -> List[Any]:
        """[rank 0's value, rank 1's value, ...] on every rank."""
        return self.comm.allgather(value)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, status: int = 1) -> None:
        """End every rank of the job now with `status` (never returns)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        # the launcher forwards this rank's output through a pipe and stops forwarding when it
        # kills the job: a moment's wait lets the last lines (the traceback) reach the user
        time.sleep(0.2)
        self.comm.Abort(status)
        # MPI_Abort asks the launcher to kill the job and returns at once (MPICH): leave before
        # this rank runs on into a collective that nobody else will join
        os._exit(status)


def mpi_available() -> bool:
    """Whether mpi4py can be imported (without initialising MPI)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mpi4py") is not None
    except (ImportError, ValueError):
        return False


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def init() -> "Communicator":
    """Join the MPI job (idempotent); returns the world communicator.

    A process started without a launcher becomes a job of one. Installs an excepthook
    that aborts the whole job when this rank raises (see the module docstring).
    Raises ImportError naming the install command (`pip install "needle-dl[distributed]"`, or
    `pip install -e ".[distributed]"` in a clone) when mpi4py is missing.
    """
    global _COMM
    if _COMM is not None:
        return _COMM
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(f"{MISSING_MPI} ({err})") from None
    _COMM = Communicator(MPI.COMM_WORLD)
    _install_excepthook(_COMM)
    return _COMM


def is_initialized() -> bool:
    return _COMM is not None


def communicator() -> "Communicator":
    """The communicator `init()` made; RuntimeError before it."""
    if _COMM is None:
        raise RuntimeError("needle.distributed: call needle.distributed.init() first")
    return _COMM


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (RuntimeError before init())."""
    return communicator().rank


def world_size() -> int:
    """How many processes the job has (RuntimeError before init())."""
    return communicator().size


def abort(status: int = 1) -> None:
    """End the whole job with `status` (never returns); a plain exit when init() was never called."""
    if _COMM is None:
        os._exit(status)
    _COMM.abort(status)


def _install_excepthook(comm: "Communicator") -> None:
    previous = sys.excepthook

    def abort_job(kind, value, tb):
        # report first: the abort kills this process before anything else is printed
        try:
            previous(kind, value, tb)
        except Exception:  # noqa: BLE001 -- a broken hook must not keep the job alive
            traceback.print_exception(kind, value, tb)
        if comm.size > 1:
            print(f"needle.distributed: rank {comm.rank} raised {kind.__name__}; aborting all "
                  f"{comm.size} ranks", file=sys.stderr)
        comm.abort(1)

    sys.excepthook = abort_job
