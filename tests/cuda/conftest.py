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
