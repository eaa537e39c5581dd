"""Compile every cuda kernel the suite launches to PTX with the real numba-cuda compiler, no GPU needed.

The simulator runs kernels as Python, so it cannot tell whether numba's type inference and
NVVM accept them. This script closes that gap where no GPU is at hand:

1. it runs tests/cuda under the simulator, recording each launch's kernel (the factory and its
   arguments) and the numba types of the launch arguments;
2. in a process without the simulator it builds each recorded kernel again -- with the GPU's
   launch geometry (reduction lanes, matmul tiles) as well as the simulator's -- and compiles
   it with `numba.cuda.compile_ptx` for compute capability 9.0.

It needs numba-cuda and a CUDA toolkit's NVVM (e.g. pip install "cuda-toolkit[nvvm]==13.*",
or numba-cuda's cu12/cu13 extras), not a driver or a GPU. numba-cuda asks the current device
for its compute capability while compiling device functions, so step 2 answers for it.

    PYTHONPATH=python python tests/cuda/compile_check.py
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (module, function) of every kernel factory; the kernels launched are rebuilt from the arguments
# recorded for them. needle.compile's fused kernels are built from their generated source.
FACTORIES = tuple(("needle.backend_ndarray.kernels_cuda", name) for name in
                  ("_map_kernel", "_scatter_kernel", "_reduce_kernel", "_matmul_kernel", "_index_kernel")) + (
    ("needle.compile.fusion_cuda", "_compiled"),)
CC = (9, 0)


class LaunchRecorder:
    """A pytest plugin (step 1): wraps the kernel factories and the launch point of kernels_cuda."""

    def __init__(self, path: str):
        self.path = path
        self.launches = set()

    def pytest_configure(self, config):
        import importlib

        import numba
        import numpy as np

        from needle.backend_ndarray import kernels_cuda as K

        def tagged(key, factory):
            def build(*args):
                kernel = factory(*args)
                kernel.needle_key = (key, args)
                return kernel
            return build

        for key in FACTORIES:
            module = importlib.import_module(key[0])
            setattr(module, key[1], tagged(key, getattr(module, key[1])))

        def argument_type(arg):
            if hasattr(arg, "copy_to_host"):  # a (simulated) device array: 1-D, C-contiguous
                return numba.typeof(np.empty(1, dtype=arg.dtype))
            return numba.typeof(arg)

        launch = K.launch

        def recording(kernel, blocks, threads, *args):
            self.launches.add((kernel.needle_key, tuple(argument_type(a) for a in args)))
            launch(kernel, blocks, threads, *args)

        K.launch = recording

    def pytest_unconfigure(self, config):
        with open(self.path, "wb") as f:
            pickle.dump(sorted(self.launches, key=repr), f)


def record(path: str) -> None:
    import pytest

    code = pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "cuda")], plugins=[LaunchRecorder(path)])
    sys.exit(int(code))


def _gpu_variants(name: str, args: tuple):
    """The factory arguments to compile: as recorded, and with the GPU's geometry."""
    yield args
    if name == "_reduce_kernel":
        op, dtype = args[:2]
        yield op, dtype, 32, 8
        yield op, dtype, 256, 1
    elif name == "_matmul_kernel":
        yield args[0], 16, 4, 16


def compile_all(path: str) -> int:
    import importlib

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    class _Device:  # what compile_device asks of the current device
        compute_capability = CC

    dispatcher.get_current_device = lambda: _Device()

    with open(path, "rb") as f:
        launches = pickle.load(f)
    compiled, failures = set(), []
    for ((module, name), args), types in launches:
        for variant in _gpu_variants(name, args):
            key = (name, variant, types)
            if key in compiled:
                continue
            compiled.add(key)
            kernel = getattr(importlib.import_module(module), name)(*variant)
            try:
                cuda.compile_ptx(kernel.py_func, types, cc=CC)
            except Exception as err:  # noqa: BLE001 (report every failure, then fail)
                failures.append(f"{name}{str(variant)[:300]} {types}: {type(err).__name__}: {err}")
                if len(failures) == 1:
                    print(failures[0][:3000], flush=True)
    print(f"{len(compiled)} kernel specialisations compiled to PTX for sm_{CC[0]}{CC[1]}; "
          f"{len(failures)} failed")
    for failure in failures:
        print(failure[:2000])
    return 1 if failures else 0


def main(args: list) -> int:
    """No arguments: both steps. `--record PATH` or `--compile PATH`: one step, the launches in PATH."""
    if len(args) == 2 and args[0] == "--record":
        record(args[1])
    if len(args) == 2 and args[0] == "--compile":
        return compile_all(args[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launches.pkl")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        step1 = subprocess.run([sys.executable, __file__, "--record", path], env=env, cwd=ROOT)
        if step1.returncode != 0:
            print("the simulated suite failed; fix it first")
            return step1.returncode
        return compile_all(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
