"""The cuda device's suite, collected only where CUDA kernels can run: under numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1; tests/test_cuda_simulated.py runs this folder so) or on a
GPU when asked (NEEDLE_TEST_CUDA=1 python -m pytest tests/cuda).

Everything here compares the cuda device with the host devices (cpu_numpy, the reference
kernels, and cpu) or with PyTorch on the same inputs. Shapes are small: the simulator runs
every CUDA thread as a Python thread.
"""
import os
import sys

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("NEEDLE_TEST_CUDA") != "1":
    collect_ignore_glob = ["*"]  # asked for by path without the simulator or a GPU: nothing to run
else:
    import needle as ndl

    if not ndl.cuda().enabled():
        raise pytest.UsageError(f"tests/cuda needs the cuda device, which is unavailable: "
                                f"{ndl.cuda().why_unavailable}")

    # The simulator's block scheduler polls its threads while holding the GIL, so each
    # __syncthreads costs GIL hand-overs; a short switch interval makes them about 5x quicker.
    sys.setswitchinterval(1e-4)

    def _lock_shared_array_allocation() -> None:
        """numba-cuda 0.30's simulator creates a block's shared array in the first thread that
        asks for it, with an unlocked check-then-insert: two threads switching between the
        check and the insert get separate arrays, and the block's tree reduction reads the
        wrong partial results (seen on a loaded machine). Same lookup (the calling line),
        done under a lock."""
        import threading

        import numpy as np
        from numba.core import types
        from numba.cuda.simulator import kernelapi
        from numba.np import numpy_support

        original = kernelapi.FakeCUDAShared.array
        lock = threading.Lock()

        def array(self, shape, dtype, alignment=None):
            if shape == 0 or alignment is not None:  # dynamic shared memory: one buffer, no race
                return original(self, shape, dtype, alignment)
            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            caller = sys._getframe(1)
            key = (caller.f_code.co_filename, caller.f_lineno)
            with lock:
                res = self._allocations.get(key)
                if res is None:
                    res = self._allocations[key] = np.empty(shape, dtype)
            return res

        kernelapi.FakeCUDAShared.array = array

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        _lock_shared_array_allocation()
