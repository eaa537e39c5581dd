"""nanoGPT's shakespeare_char CPU run on needle and on PyTorch: time per iteration and final loss.

Both sides train the same GPT (4 layers, 4 heads, 128 wide, context 64, batch 12, no bias,
no dropout: nanoGPT's README CPU run) with the same schedule (AdamW lr 1e-3 with warm-up
and cosine decay to 1e-4, weight decay 0.1 on the matrices and embeddings, beta2 0.99,
gradients clipped to norm 1) on the same batches (drawn from numpy's generator with the
same seed; the models start from different random weights). needle runs its recipe
(`needle.train.gpt`: the compiled step); PyTorch runs a twin written here from nanoGPT's
published architecture (flash attention through F.scaled_dot_product_attention, as
nanoGPT uses on torch >= 2), eager, as nanoGPT's CPU run (`--compile=False`).

Each framework runs in a child process of its own with the same thread count; the
loss estimates every --eval-interval steps are left out of the time per iteration, as
in nanoGPT's own iteration timing, and the first --warmup iterations too (tracing and
compiling). Without PyTorch only needle's row is printed.

    python benchmarks/bench_nanogpt.py                         # the full run: 2000 iterations
    python benchmarks/bench_nanogpt.py --iters 200 --eval-interval 100   # a quick look
    python benchmarks/bench_nanogpt.py --text path/to/input.txt --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

RESULT = "RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEXT = os.path.join(ROOT, "python", "needle", "data", "text", "tinyshakespeare_full.txt")


def schedule(it: int, a) -> float:
    if it < a.warmup_iters:
        return a.lr * (it + 1) / (a.warmup_iters + 1)
    if it > a.lr_decay_iters:
        return a.min_lr
    ratio = (it - a.warmup_iters) / (a.lr_decay_iters - a.warmup_iters)
    return a.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (a.lr - a.min_lr)


def load(a):
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    vocabulary = sorted(set(text))
    index = {c: i for i, c in enumerate(vocabulary)}
    ids = np.array([index[c] for c in text], dtype=np.int64)
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(vocabulary)


def windows(data, a):
    offsets = np.random.randint(len(data) - a.block_size, size=(a.batch_size,))
    x = np.stack([data[i:i + a.block_size] for i in offsets])
    y = np.stack([data[i + 1:i + 1 + a.block_size] for i in offsets])
    return x, y


# --- the children --------------------------------------------------------------------------------

def run_needle(a) -> Dict:
    from types import SimpleNamespace

    import needle as ndl
    from needle.models import GPT
    from needle.train.gpt import GPTTask

    train, val, vocab = load(a)
    np.random.seed(a.seed)
    model = GPT(vocab, a.block_size, 4, 4, 128, dropout=0.0, bias=False)
    args = SimpleNamespace(batch_size=a.batch_size, block_size=a.block_size, iters=a.iters,
                           eval_interval=a.eval_interval, eval_iters=a.eval_iters, lr=a.lr, min_lr=a.min_lr,
                           warmup_iters=a.warmup_iters, lr_decay_iters=a.lr_decay_iters, grad_clip=1.0,
                           device=ndl.cpu())
    task = GPTTask(model, train, val, [], args, "gpt")
    opt = model.configure_optimizers(0.1, a.lr, (0.9, 0.99))
    times: List[float] = []
    losses = {}
    for interval in range(-(-a.iters // a.eval_interval)):
        task.set_epoch(interval)
        began = time.perf_counter()
        stats = task.train_epoch(opt)
        times.append((time.perf_counter() - began, stats.batches))
        losses = {"train": task.estimate_loss(train), "val": task.estimate_loss(val)}
    return {"times": times, **losses, "parameters": model.num_parameters()}


def run_torch(a) -> Dict:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF

    torch.set_num_threads(a.threads)

    class Block(tnn.Module):
        def __init__(self, n_embd, n_head):
            super().__init__()
            self.n_head = n_head
            self.ln_1, self.ln_2 = tnn.LayerNorm(n_embd, bias=False), tnn.LayerNorm(n_embd, bias=False)
            self.c_attn = tnn.Linear(n_embd, 3 * n_embd, bias=False)
            self.c_proj = tnn.Linear(n_embd, n_embd, bias=False)
            self.c_fc, self.m_proj = tnn.Linear(n_embd, 4 * n_embd, bias=False), tnn.Linear(4 * n_embd, n_embd,
                                                                                          bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
            return x + self.m_proj(TF.gelu(self.c_fc(self.ln_2(x))))

    class GPT(tnn.Module):
        def __init__(self, vocab, block, n_layer, n_head, n_embd):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(vocab, n_embd), tnn.Embedding(block, n_embd)
            self.h = tnn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)])
            self.ln_f = tnn.LayerNorm(n_embd, bias=False)
            self.lm_head = tnn.Linear(n_embd, vocab, bias=False)
            self.wte.weight = self.lm_head.weight
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("c_proj.weight", "m_proj.weight")) else 0.02
                    tnn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return TF.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    train, val, vocab = load(a)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    model = GPT(vocab, a.block_size, 4, 4, 128)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.99))

    def estimate(data):
        model.eval()
        with torch.no_grad():
            out = [model(*map(torch.from_numpy, windows(data, a))).item() for _ in range(a.eval_iters)]
        model.train()
        return float(np.mean(out))

    times, it, losses = [], 0, {}
    while it < a.iters:
        began = time.perf_counter()
        steps = min(a.eval_interval, a.iters - it)
        for _ in range(steps):
            for g in opt.param_groups:
                g["lr"] = schedule(it, a)
            x, y = map(torch.from_numpy, windows(train, a))
            loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            it += 1
        times.append((time.perf_counter() - began, steps))
        losses = {"train": estimate(train), "val": estimate(val)}
    parameters = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    return {"times": times, **losses, "parameters": parameters}


def child(variant: str, a) -> int:
    try:
        result = run_needle(a) if variant == "needle" else run_torch(a)
    except ImportError as err:
        print(RESULT + json.dumps({"error": f"{variant} unavailable: {err}"}))
        return 0
    print(RESULT + json.dumps(result))
    return 0


def ms_per_iteration(times, warmup: int) -> float:
    """Training time over the iterations after the first `warmup` (whole intervals: per-interval times)."""
    total, count, seen = 0.0, 0, 0
    for seconds, steps in times:
        if seen >= warmup:
            total, count = total + seconds, count + steps
        seen += steps
    return 1000 * total / max(count, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the text (default: the full tiny Shakespeare)")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--warmup-iters", type=int, default=100)
    parser.add_argument("--lr-decay-iters", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads of each framework")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", choices=["needle", "torch"], help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.child:
        return child(a.child, a)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads), NUMBA_NUM_THREADS=str(a.threads),
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")]))
    # OpenBLAS's idle threads sleep after 1.6 ms (needle/_openblas.py: the child loads numpy before needle)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
    rows = {}
    for variant in ("needle", "torch"):
        command = [sys.executable, os.path.abspath(__file__), "--child", variant] + (argv or sys.argv[1:])
        began = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - began
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
        if proc.returncode or not lines:
            print(f"{variant}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        result = json.loads(lines[-1][len(RESULT):])
        if "error" in result:
            print(result["error"])
            continue
        result["wall_seconds"] = wall
        result["ms_per_iteration"] = ms_per_iteration(result["times"], min(a.eval_interval, 10))
        rows[variant] = result
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"nanoGPT shakespeare_char, {a.iters} iterations, batch {a.batch_size} x {a.block_size}, {a.threads} "
          f"threads each, on {cpu}")
    print(f"{'':8s} {'parameters':>11s} {'ms/iter':>9s} {'wall s':>8s} {'train loss':>11s} {'val loss':>9s}")
    for variant, r in rows.items():
        print(f"{variant:8s} {r['parameters']:>11,d} {r['ms_per_iteration']:9.1f} {r['wall_seconds']:8.1f} "
              f"{r['train']:11.4f} {r['val']:9.4f}")
    if len(rows) == 2:
        ratio = rows["needle"]["ms_per_iteration"] / rows["torch"]["ms_per_iteration"]
        print(f"needle / torch: {ratio:.2f} (ms/iter), "
              f"{rows['needle']['wall_seconds'] / rows['torch']['wall_seconds']:.2f} (wall)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu, "args": vars(a), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
