"""OpenBLAS's idle threads sleep at once instead of spinning (set before numpy loads OpenBLAS).

After each multi-threaded call OpenBLAS keeps its helper threads spinning for 2**28 cycles
(about 0.1 s) by default, waiting for the next call. Between two matmuls of a training
step that is always: on a 2-core machine the spinning thread holds the second core, and
the replay's row blocks on that core (`needle.compile.parallel_cpu`) get a fraction of it
-- measured here, a split 2M-element exp ran no faster than the whole one after a matmul,
and 1.8x faster with the threads asleep. OPENBLAS_THREAD_TIMEOUT=4 (2**4 cycles, its
minimum) puts them to sleep right after each call, at the cost of a wake-up (a few
microseconds) on the next threaded call. PyTorch's OpenMP pool spins briefly too, then
sleeps.

OpenBLAS reads the variable once, when numpy first loads it, so this sets it only when
numpy is not imported yet and the variable is unset (a value of your own wins). Import
needle before numpy, or set OPENBLAS_THREAD_TIMEOUT=4 in the environment, to have it.
"""
import os
import sys

if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
