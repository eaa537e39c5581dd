"""Training-step speed of needle next to PyTorch CPU, measured in one run.

Each workload builds the same architecture in both frameworks, feeds both the
same batch, and times full training steps (forward, loss, backward, Adam step)
after a few warm-up steps. Every (framework, workload) pair is timed in a fresh
child process: PyTorch's OpenMP threads keep spinning after its last op and
would otherwise slow down whatever runs next in the same process. Reported:
milliseconds per step and the ratio needle / PyTorch (below 1: needle is faster).

    python benchmarks/bench_training.py                 # every workload
    python benchmarks/bench_training.py mlp lstm --steps 50 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import needle as ndl
from needle import nn
from needle.models import LanguageModel, MLPResNet, SmallCNN


def _torch():
    """PyTorch, imported only where it runs: a needle measurement never loads it."""
    try:
        import torch
    except ImportError:  # the benchmark compares with PyTorch: it is a dev dependency
        sys.exit("benchmarks need PyTorch: pip install -e '.[dev]'")
    return torch


# --- PyTorch twins of needle's models -------------------------------------------------

def torch_mlp_resnet(dim, hidden, blocks, classes):
    tnn = _torch().nn

    class TorchMLPResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Linear(dim, hidden), tnn.ReLU())
            self.blocks = tnn.ModuleList([
                tnn.Sequential(tnn.Linear(hidden, hidden // 2), tnn.BatchNorm1d(hidden // 2), tnn.ReLU(),
                               tnn.Dropout(0.1), tnn.Linear(hidden // 2, hidden), tnn.BatchNorm1d(hidden))
                for _ in range(blocks)])
            self.head = tnn.Linear(hidden, classes)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = (x + block(x)).relu()
            return self.head(x)

    return TorchMLPResNet()


def torch_small_cnn():
    tnn = _torch().nn

    def cbn(a, b, s):
        return [tnn.Conv2d(a, b, 3, s, 1), tnn.BatchNorm2d(b), tnn.ReLU()]

    return tnn.Sequential(*cbn(1, 16, 1), *cbn(16, 32, 2), *cbn(32, 32, 1), *cbn(32, 64, 2),
                          tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10))


def torch_lstm_lm(vocab, emb, hidden, layers):
    tnn = _torch().nn

    class TorchLM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tnn.Embedding(vocab, emb)
            self.lstm = tnn.LSTM(emb, hidden, layers)
            self.linear = tnn.Linear(hidden, vocab)

        def forward(self, x):
            out, _ = self.lstm(self.embedding(x))
            return self.linear(out.reshape(-1, out.shape[-1]))

    return TorchLM()


# --- workloads: (needle model, torch model, inputs) ----------------------------------------

def workloads(device):
    rng = np.random.RandomState(0)
    mlp_x = rng.rand(100, 784).astype(np.float32)
    mlp_y = rng.randint(0, 10, 100)
    img_x = rng.rand(100, 1, 28, 28).astype(np.float32)
    tokens = rng.randint(0, 65, (32, 32))
    targets = rng.randint(0, 65, 32 * 32)
    return {
        "mlp": dict(
            description="MLPResNet(784, 100, 3 blocks), batch 100",
            needle=lambda: MLPResNet(784, 100, device=device),
            torch=lambda: torch_mlp_resnet(784, 100, 3, 10),
            x=mlp_x, y=mlp_y),
        "cnn": dict(
            description="SmallCNN on 28x28, batch 100",
            needle=lambda: SmallCNN(device=device),
            torch=torch_small_cnn,
            x=img_x, y=mlp_y),
        "lstm": dict(
            description="LSTM language model (vocab 65, emb 64, hidden 128), seq 32 x batch 32",
            needle=lambda: _LMAdapter(LanguageModel(64, 65, 128, 1, "lstm", device=device)),
            torch=lambda: torch_lstm_lm(65, 64, 128, 1),
            x=tokens.astype(np.float32), y=targets, torch_x=tokens),
    }


class _LMAdapter(nn.Module):
    """LanguageModel returns (logits, state): keep the logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def _seconds_per_step(step, steps: int, warmup: int) -> float:
    """Mean wall time of `step()` after `warmup` untimed calls; reading the last loss
    (`.item()`, for a needle or a torch tensor) waits for any pending work."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return (time.perf_counter() - start) / steps


def time_needle(spec, steps, warmup, device):
    np.random.seed(0)
    model = spec["needle"]()
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(spec["x"], device=device, requires_grad=False)
    y = ndl.Tensor(spec["y"], device=device, requires_grad=False)

    def step():
        loss = loss_fn(model(x), y)
        opt.reset_grad()
        loss.backward()
        opt.step()
        return loss

    return _seconds_per_step(step, steps, warmup)


def time_torch(spec, steps, warmup):
    torch = _torch()
    torch.manual_seed(0)
    model = spec["torch"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.tensor(spec.get("torch_x", spec["x"]))
    y = torch.tensor(spec["y"])

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return _seconds_per_step(step, steps, warmup)


def _worker(framework: str, name: str, steps: int, warmup: int, device_name: str, threads) -> float:
    """Seconds per step of one framework on one workload, measured in this process."""
    if threads and framework == "torch":
        _torch().set_num_threads(threads)
    device = getattr(ndl, device_name)()
    spec = workloads(device)[name]
    if framework == "needle":
        return time_needle(spec, steps, warmup, device)
    return time_torch(spec, steps, warmup)


def _measure(framework: str, name: str, args) -> float:
    command = [sys.executable, os.path.abspath(__file__), name, "--worker", framework, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", args.device]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{framework} on {name} failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workloads to run (default: all)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cpu_numpy"], default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: PyTorch's own choice")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--worker", choices=["needle", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    specs = workloads(None)
    names = args.names or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(specs)}")
    if args.worker:
        print(_worker(args.worker, names[0], args.steps, args.warmup, args.device, args.torch_threads))
        return 0
    torch = _torch()
    threads = args.torch_threads or torch.get_num_threads()
    print(f"needle {args.device} vs PyTorch {torch.__version__} CPU ({threads} threads), "
          f"{os.cpu_count()} cores, {args.steps} steps after {args.warmup} warm-up, one process per measurement")
    print(f"{'workload':8s} {'needle ms':>10s} {'torch ms':>10s} {'ratio':>7s}  description")
    rows = []
    for name in names:
        t_needle = _measure("needle", name, args)
        t_torch = _measure("torch", name, args)
        row = {"workload": name, "needle_ms": t_needle * 1e3, "torch_ms": t_torch * 1e3,
               "ratio": t_needle / t_torch, "description": specs[name]["description"]}
        rows.append(row)
        print(f"{name:8s} {row['needle_ms']:10.2f} {row['torch_ms']:10.2f} {row['ratio']:7.2f}  {row['description']}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
