"""Data-parallel scaling: ms per training step of one global batch on 1 rank and on N ranks.

The workload is compute-bound on purpose: an MLP 784-1024-1024-10, global batch 512
(512 / ranks per rank), SGD, the step compiled with ndl.compile as `needle train` does.
Each rank count runs as its own `mpiexec -n R` job with OMP_NUM_THREADS=1 (one BLAS
thread per rank: with as many ranks as cores, more threads would only fight over them),
so the 1-rank figure is the same code without anyone to talk to. Reported: ms per step
(the slowest rank's mean over the timed steps), and the speedup over 1 rank. A last row
runs 1 rank with as many BLAS threads as there are cores: the single-process
alternative that also uses every core.

    python benchmarks/bench_distributed.py                  # 1 vs 2 ranks, 20 timed steps
    python benchmarks/bench_distributed.py --ranks 1 2 4 --steps 50 --no-compile --json out.json

Needs the distributed extra (pip install -e ".[distributed]"): mpiexec is looked for next
to this Python first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

SIZES = (784, 1024, 1024, 10)
GLOBAL_BATCH = 512


def worker(steps: int, warmup: int, compiled: bool) -> None:
    """One rank: time `steps` data-parallel steps after `warmup`; rank 0 prints a JSON line."""
    import needle as ndl
    from needle import distributed as dist
    from needle import nn
    from needle.models import MLP

    comm = dist.init()
    allreduce, waited = comm.allreduce_sum_, [0.0]

    def timed_allreduce(buffer):  # time in Allreduce: the transfer, and waiting for the slower rank
        began = time.perf_counter()
        allreduce(buffer)
        waited[0] += time.perf_counter() - began

    comm.allreduce_sum_ = timed_allreduce
    if GLOBAL_BATCH % comm.size:
        raise SystemExit(f"the global batch {GLOBAL_BATCH} does not split evenly over {comm.size} ranks")
    batch = GLOBAL_BATCH // comm.size
    np.random.seed(0)
    model = MLP(SIZES[0], list(SIZES[1:-1]), SIZES[-1])
    ddp = dist.DistributedDataParallel(model)
    opt = ndl.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.SoftmaxLoss()

    def step(X, y):
        opt.reset_grad()
        loss = loss_fn(ddp(X), y)
        loss.backward()
        ddp.sync_gradients()
        opt.step()
        return loss

    if compiled:
        step = ndl.compile(step)
    rng = np.random.RandomState(1 + comm.rank)  # each rank its own share of the global batch
    X = ndl.Tensor(rng.randn(batch, SIZES[0]).astype(np.float32))
    y = ndl.Tensor(rng.randint(0, SIZES[-1], batch), dtype="int64")
    for _ in range(warmup):
        step(X, y).numpy()
    comm.barrier()
    waited[0] = 0.0
    began = time.perf_counter()
    for _ in range(steps):
        loss = step(X, y)
    loss.numpy()
    seconds = comm.allgather_object((time.perf_counter() - began, waited[0]))
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "per_rank_batch": batch,
                          "ms_per_step": 1000 * max(s for s, _ in seconds) / steps,
                          "allreduce_ms_per_step": 1000 * max(w for _, w in seconds) / steps,
                          "buckets": ddp.buckets}), flush=True)


def mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec")
    if found is None:
        sys.exit('mpiexec not found: pip install -e ".[distributed]"')
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to time (default: 1 2)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (trace, compile; default 3)")
    parser.add_argument("--no-compile", action="store_true", help="eager steps instead of ndl.compile")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.warmup, not args.no_compile)
        return
    cores = os.cpu_count() or 1
    results = []
    print(f"MLP {'-'.join(map(str, SIZES))}, global batch {GLOBAL_BATCH}, {args.steps} steps, "
          f"{'eager' if args.no_compile else 'compiled'}, {cores} cores")
    for ranks, threads in [(r, 1) for r in args.ranks] + [(1, cores)]:
        command = [mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
                   "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--no-compile"] if args.no_compile
                                                                                else [])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{ranks} ranks failed:\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["blas_threads"] = threads
        result["speedup"] = results[0]["ms_per_step"] / result["ms_per_step"] if results else 1.0
        results.append(result)
        print(f"{ranks} rank(s) x {threads} BLAS thread(s), {result['per_rank_batch']:4d} samples each: "
              f"{result['ms_per_step']:8.1f} ms/step (allreduce {result['allreduce_ms_per_step']:5.1f})   "
              f"speedup {result['speedup']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
