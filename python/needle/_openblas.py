"""OpenBLAS's idle threads sleep after 0.1 ms instead of 0.1 s (set before numpy loads OpenBLAS).

After each multi-threaded call OpenBLAS keeps its helper threads spinning for 2**28 cycles
(about 0.1 s) by default, waiting for the next call. Between two matmuls of a training
step that is always: on a 2-core machine the spinning thread holds the second core, and
the replay's row blocks on that core (`needle.compile.parallel_cpu`) get a fraction of it
-- measured here, a split 2M-element exp ran no faster than the whole one after a matmul,
and 1.8x faster with the threads asleep. OPENBLAS_THREAD_TIMEOUT=18 (2**18 cycles, about
0.1 ms) lets them spin just long enough for back-to-back matmuls (an eager LSTM's small
per-step products) and then sleep, so the elementwise work that follows has the core.
Measured on the 2-core benchmark machine (compiled lstm_lm, ms per step): 149 with the
default, 117-126 with 18, 131-137 with 4 (every threaded call then pays a wake-up).
PyTorch's OpenMP pool also spins briefly, then sleeps.

OpenBLAS reads the variable once, when numpy first loads it, so this sets it only when
numpy is not imported yet and the variable is unset (a value of your own wins). Import
needle before numpy, or set OPENBLAS_THREAD_TIMEOUT=18 in the environment, to have it.
"""
import os
import sys

if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")
