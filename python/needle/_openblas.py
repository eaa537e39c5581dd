"""OpenBLAS's idle threads sleep after 1.6 ms instead of 0.1 s (set before numpy loads OpenBLAS).

After each multi-threaded call OpenBLAS keeps its helper threads spinning for 2**28 cycles
(about 0.1 s) by default, waiting for the next call. Between two matmuls of a training
step that is always: on a 2-core machine the spinning thread holds the second core, and
the replay's row blocks on that core (`needle.compile.parallel_cpu`) get a fraction of it
-- measured here, a split 2M-element exp ran no faster than the whole one after a matmul,
and 1.8x faster with the threads asleep. OPENBLAS_THREAD_TIMEOUT=22 (2**22 cycles, about
1.6 ms) lets them spin through back-to-back matmuls (a convolution's, an eager LSTM's small
per-step products) and then sleep, so the elementwise work that follows has the core.
Measured on the 2-core benchmark machine, compiled, ms per step: lstm_lm 145 with the
default, 124 with 22, 120 with 18; resnet9 11.3, 10.7, 13.5 (with 18 its many matmuls pay
a wake-up each). PyTorch's OpenMP pool also spins briefly, then sleeps.

A compiled program that splits work over threads then replaces those helpers altogether:
needle/compile/blas_pool.py runs OpenBLAS's jobs on the program's own workers, so this
setting matters for eager code and with NEEDLE_BLAS_POOL=0.

OpenBLAS reads the variable once, when numpy first loads it, so this sets it only when
numpy is not imported yet and the variable is unset (a value of your own wins). Import
needle before numpy, or set OPENBLAS_THREAD_TIMEOUT=22 in the environment, to have it.
"""
import functools
import glob
import os
import sys
from typing import Any, List, Tuple

if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")


@functools.lru_cache(maxsize=None)
def numpy_openblas() -> Tuple[Tuple[str, Any], ...]:
    """((path, ctypes library), ...) of the OpenBLAS that numpy's wheels bundle (scipy-openblas,
    in numpy.libs on Linux, numpy/.dylibs on macOS); () for a numpy built on another BLAS. For
    the entry points numpy does not expose: the threads callback (compile/blas_pool.py) and
    sgemm with beta = 1 (kernels_cpu.matmul_accumulate)."""
    import ctypes

    import numpy as np

    here = os.path.dirname(os.path.abspath(np.__file__))
    found: List[Tuple[str, Any]] = []
    for path in sorted(glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*"))
                       + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))):
        path = os.path.realpath(path)
        try:
            found.append((path, ctypes.CDLL(path)))
        except OSError:
            continue
    return tuple(found)


# the names scipy-openblas gives OpenBLAS's entry points: scipy_<name>64_ in the ILP64 build numpy's
# wheels bundle, scipy_<name> in the 32-bit one; an OpenBLAS of its own keeps <name>
_SYMBOL_FORMS = (("scipy_", "64_"), ("scipy_", ""), ("", ""))


def openblas_symbol(lib: Any, name: str) -> Any:
    """OpenBLAS's entry point `name` (e.g. "openblas_get_config") in `lib` under the first of its
    names there (`_SYMBOL_FORMS`), or None."""
    for prefix, suffix in _SYMBOL_FORMS:
        fn = getattr(lib, f"{prefix}{name}{suffix}", None)
        if fn is not None:
            return fn
    return None


def runtime_info() -> List[str]:
    """For each OpenBLAS numpy bundles: its configuration as it runs now, with its thread count
    ("OpenBLAS 0.3.31 ... DYNAMIC_ARCH ... SkylakeX ... (2 threads)"). numpy.show_config() gives
    the build's string instead, which names the build machine's core: a DYNAMIC_ARCH build picks
    its kernels when it loads, and one built on "Haswell" runs SkylakeX's on an AVX-512 machine."""
    import ctypes

    found = []
    for _, lib in numpy_openblas():
        config = openblas_symbol(lib, "openblas_get_config")
        if config is None:
            continue
        config.restype, config.argtypes = ctypes.c_char_p, []
        text = " ".join(config().decode(errors="replace").split())
        threads = openblas_symbol(lib, "openblas_get_num_threads")
        if threads is not None:
            threads.restype, threads.argtypes = ctypes.c_int, []
            text += f" ({threads()} threads)"
        found.append(text)
    return found
