"""Training-step speed of needle next to PyTorch CPU, measured in one process.

Each workload builds the same architecture in both frameworks, feeds both the
same batch, and times full training steps (forward, loss, backward, Adam step)
after a few warm-up steps. Reported: milliseconds per step and the ratio
needle / PyTorch (below 1 means needle is faster).

    python benchmarks/bench_training.py                 # every workload
    python benchmarks/bench_training.py mlp lstm --steps 50 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import torch
except ImportError:  # the benchmark compares with PyTorch: it is a dev dependency
    sys.exit("benchmarks need PyTorch: pip install -e '.[dev]'")

import needle as ndl
from needle import nn
from needle.models import LanguageModel, MLPResNet, SmallCNN

torch_nn = torch.nn


# --- PyTorch twins of needle's models -------------------------------------------------

class TorchMLPResNet(torch_nn.Module):
    def __init__(self, dim, hidden, blocks, classes):
        super().__init__()

        def block():
            inner = torch_nn.Sequential(
                torch_nn.Linear(hidden, hidden // 2), torch_nn.BatchNorm1d(hidden // 2), torch_nn.ReLU(),
                torch_nn.Dropout(0.1), torch_nn.Linear(hidden // 2, hidden), torch_nn.BatchNorm1d(hidden))
            return inner

        self.stem = torch_nn.Sequential(torch_nn.Linear(dim, hidden), torch_nn.ReLU())
        self.blocks = torch_nn.ModuleList([block() for _ in range(blocks)])
        self.head = torch_nn.Linear(hidden, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x)


def torch_small_cnn():
    def cbn(a, b, s):
        return [torch_nn.Conv2d(a, b, 3, s, 1), torch_nn.BatchNorm2d(b), torch_nn.ReLU()]

    return torch_nn.Sequential(*cbn(1, 16, 1), *cbn(16, 32, 2), *cbn(32, 32, 1), *cbn(32, 64, 2),
                               torch_nn.Flatten(), torch_nn.Linear(64 * 7 * 7, 128), torch_nn.ReLU(),
                               torch_nn.Linear(128, 10))


class TorchLM(torch_nn.Module):
    def __init__(self, vocab, emb, hidden, layers):
        super().__init__()
        self.embedding = torch_nn.Embedding(vocab, emb)
        self.lstm = torch_nn.LSTM(emb, hidden, layers)
        self.linear = torch_nn.Linear(hidden, vocab)

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))
        return self.linear(out.reshape(-1, out.shape[-1]))


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
            torch=lambda: TorchMLPResNet(784, 100, 3, 10),
            x=mlp_x, y=mlp_y, torch_x=lambda: torch.tensor(mlp_x)),
        "cnn": dict(
            description="SmallCNN on 28x28, batch 100",
            needle=lambda: SmallCNN(device=device),
            torch=torch_small_cnn,
            x=img_x, y=mlp_y, torch_x=lambda: torch.tensor(img_x)),
        "lstm": dict(
            description="LSTM language model (vocab 65, emb 64, hidden 128), seq 32 x batch 32",
            needle=lambda: _LMAdapter(LanguageModel(64, 65, 128, 1, "lstm", device=device)),
            torch=lambda: TorchLM(65, 64, 128, 1),
            x=tokens.astype(np.float32), y=targets, torch_x=lambda: torch.tensor(tokens)),
    }


class _LMAdapter(nn.Module):
    """LanguageModel returns (logits, state): keep the logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


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

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.numpy()
    return (time.perf_counter() - start) / steps


def time_torch(spec, steps, warmup):
    torch.manual_seed(0)
    model = spec["torch"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = spec["torch_x"]()
    y = torch.tensor(spec["y"])

    def step():
        loss = torch_nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="workloads to run (default: all)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cpu_numpy"], default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: PyTorch's own choice")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = getattr(ndl, args.device)()
    specs = workloads(device)
    names = args.names or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(specs)}")
    print(f"needle {args.device} vs PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores, {args.steps} steps after {args.warmup} warm-up")
    print(f"{'workload':8s} {'needle ms':>10s} {'torch ms':>10s} {'ratio':>7s}  description")
    rows = []
    for name in names:
        spec = specs[name]
        t_needle = time_needle(spec, args.steps, args.warmup, device)
        t_torch = time_torch(spec, args.steps, args.warmup)
        row = {"workload": name, "needle_ms": t_needle * 1e3, "torch_ms": t_torch * 1e3,
               "ratio": t_needle / t_torch, "description": spec["description"]}
        rows.append(row)
        print(f"{name:8s} {row['needle_ms']:10.2f} {row['torch_ms']:10.2f} {row['ratio']:7.2f}  {spec['description']}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
