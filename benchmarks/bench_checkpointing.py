"""Gradient checkpointing: peak memory and step time of a deep model with and without it.

Two deep stacks, each block checkpointed as a whole (`needle.utils.checkpoint(block, x)`):

* mlp          16 residual blocks Linear-ReLU-Linear-LayerNorm of width 256 (inner 512), batch 2048
* transformer  8 nn.TransformerLayer (dim 256, 8 heads, MLP 1024, dropout 0.1), batch 8 x 128 tokens

Each (model, checkpointing) pair runs in a fresh child process, eagerly (forward, loss,
backward, SGD step). Peak memory is what tracemalloc saw allocated at once during one
timed step, above what was allocated before it (numpy reports its buffers to
tracemalloc; model and optimizer state are already there, so the figure is the step's
activations and temporaries); the child's peak RSS is reported too. Time is the mean
of the timed steps (tracemalloc off).

    python benchmarks/bench_checkpointing.py                       # both models
    python benchmarks/bench_checkpointing.py mlp --steps 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

MODELS = ("mlp", "transformer")


def build(name: str):
    """(blocks, head, batch x, labels y, loss function)."""
    import needle as ndl
    from needle import nn

    np.random.seed(0)
    if name == "mlp":
        dim, inner, depth, batch = 256, 512, 16, 2048

        def block():
            return nn.Residual(nn.Sequential(nn.Linear(dim, inner), nn.ReLU(), nn.Linear(inner, dim),
                                             nn.LayerNorm1d(dim)))

        blocks = [block() for _ in range(depth)]
        head = nn.Linear(dim, 10)
        x = ndl.Tensor(np.random.randn(batch, dim).astype(np.float32), requires_grad=False)
        y = ndl.Tensor(np.random.randint(0, 10, batch), dtype="int64")

        def loss(h):
            return nn.SoftmaxLoss()(head(h), y)
    else:
        dim, depth, batch, length = 256, 8, 8, 128
        blocks = [nn.TransformerLayer(dim, 8, dim // 8, 4 * dim, dropout=0.1) for _ in range(depth)]
        head = nn.Linear(dim, 10)
        x = ndl.Tensor(np.random.randn(batch, length, dim).astype(np.float32), requires_grad=False)
        y = ndl.Tensor(np.random.randint(0, 10, batch * length), dtype="int64")

        def loss(h):
            return nn.SoftmaxLoss()(head(h.reshape((batch * length, dim))), y)
    return blocks, head, x, loss


def child(name: str, use_checkpoint: bool, steps: int) -> dict:
    import needle as ndl
    from needle.utils import checkpoint

    blocks, head, x, loss_fn = build(name)
    params = [p for b in blocks for p in b.parameters()] + head.parameters()
    opt = ndl.optim.SGD(params, lr=1e-3)

    def step():
        opt.reset_grad()
        h = x
        for block in blocks:
            h = checkpoint(block, h) if use_checkpoint else block(h)
        loss = loss_fn(h)
        loss.backward()
        opt.step()
        return float(loss.numpy())

    for _ in range(2):  # warm-up: optimizer state, and the first touch of the memory the steps reuse
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - began) / steps
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    step()
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return {"model": name, "checkpoint": use_checkpoint, "ms_per_step": 1000 * seconds,
            "peak_step_MiB": peak / 2 ** 20, "max_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(int(np.prod(p.shape)) for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default: 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "1", args.steps)))
        return
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    results = []
    for name in args.models or MODELS:
        rows = []
        for use in (False, True):
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, str(int(use)),
                                   "--steps", str(args.steps)], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{name} (checkpoint={use}) failed:\n{proc.stderr}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        plain, ckpt = rows
        print(f"{name}: {plain['parameters']:,} parameters")
        for row in rows:
            print(f"  checkpoint={str(row['checkpoint']):5s}  step peak {row['peak_step_MiB']:8.1f} MiB  "
                  f"max RSS {row['max_rss_MiB']:8.1f} MiB  {row['ms_per_step']:8.1f} ms/step")
        print(f"  memory saved: {1 - ckpt['peak_step_MiB'] / plain['peak_step_MiB']:.0%} of the step's peak; "
              f"time: {ckpt['ms_per_step'] / plain['ms_per_step']:.2f}x", flush=True)
        results += rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
