"""Where a compiled training step's time goes: each launch of the replayed program, timed.

Builds one workload of `bench_training.py` (same model, batch and optimizer), compiles its
training step with `ndl.compile(fuse=True)`, runs warm-up steps (the eager call, the traced
call, replays), then replays the program launch by launch and sums the time of each call
kind (`matmul`, `fused` loops, `reduce_sum`, `compact`, the optimizers' `adam_step`, ...).
The launches are timed one by one, so the sum is a little above the step's time, and calls
that overlap nothing here run as they would in the step.

    python benchmarks/profile_compiled.py gpt                 # one thread, 5 steps
    python benchmarks/profile_compiled.py lstm_lm --threads 2 --steps 3 --top 12

--threads sets OMP/OPENBLAS/NUMBA/NEEDLE_NUM_THREADS before numpy is imported (default 1:
the CPU time of each kind, undisturbed by the second core's hand-offs).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from typing import Any, Dict, List, Tuple

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "NEEDLE_NUM_THREADS")


def call_kind(call: Any) -> str:
    """A recorded call's kind: the kernel's name, or 'fused' / 'host' for generated and host calls."""
    if call.kind == "kernel" and call.name is not None:
        return call.name
    return call.kind


def profile(name: str, steps: int, warmup: int = 4) -> Tuple[float, int, Dict[str, float], Dict[str, int]]:
    """(ms per step, program calls, ms per step by call kind, launches per step by call kind)
    for workload `name` of bench_training.py. ValueError for an unknown workload."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_training as bt
    import numpy as np

    import needle as ndl

    if name not in bt.WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {list(bt.WORKLOADS)}")
    workload = bt.WORKLOADS[name]
    sizes = bt.sizes_of(workload, False)
    np.random.seed(0)
    x, y = workload.batch(sizes, np.random.RandomState(0))
    compiled: List[Any] = []
    original = ndl.compile

    def keep(fn, **kwargs):
        compiled.append(original(fn, **kwargs))
        return compiled[-1]

    ndl.compile = keep  # the step is built inside bench_training: keep its CompiledFunction
    try:
        step, _ = bt._needle_step(workload, sizes, x, y, compiled=True)
    finally:
        ndl.compile = original
    for _ in range(max(3, warmup)):
        step()
    program = compiled[0].programs[0]
    kinds = [call_kind(call) for call in program.calls]
    seconds: Dict[str, float] = collections.Counter()
    launches: Dict[str, int] = collections.Counter()
    clock = time.perf_counter
    total = 0.0
    for _ in range(steps):
        start = clock()
        for kind, run in zip(kinds, program.runs):
            t = clock()
            run()
            seconds[kind] += clock() - t
            launches[kind] += 1
        total += clock() - start
    per_step = {k: v / steps * 1e3 for k, v in seconds.items()}
    counts = {k: v // steps for k, v in launches.items()}
    return total / steps * 1e3, len(program.runs), per_step, counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", metavar="WORKLOAD", help="a workload of bench_training.py (mlp, gpt, ...)")
    parser.add_argument("--steps", type=int, default=5, help="replayed steps timed (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="threads for BLAS, numba and needle (default 1)")
    parser.add_argument("--top", type=int, default=20, help="call kinds listed (default 20)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or args.top < 1:
        parser.error("--steps, --threads and --top must be at least 1")
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(args.threads)
    import needle  # noqa: F401  (before numpy: needle's OpenBLAS setting, as in bench_training)

    try:
        ms, calls, per_kind, counts = profile(args.name, args.steps)
    except ValueError as err:
        parser.error(str(err))
    print(f"{args.name}: {ms:.1f} ms per replayed step, {calls} launches, {args.threads} thread(s)")
    for kind, value in sorted(per_kind.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {kind:24s} {value:10.4f} ms  x{counts[kind]}")


if __name__ == "__main__":
    main()
