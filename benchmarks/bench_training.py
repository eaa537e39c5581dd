"""Training-step speed of needle, eager and compiled, next to PyTorch CPU.

Times full training steps (forward, loss, backward, optimizer step) of five
workloads in three variants: needle eager, needle compiled (`ndl.compile`, fused)
and PyTorch. Both frameworks build the same architecture (the parameter counts
are printed and must agree) and get the same number of threads.

How it measures, and why:

* Every (variant, workload) pair runs in a child process of its own: PyTorch's
  OpenMP threads keep spinning after its last op and would slow down whatever runs
  next in the same process, and each child starts from the same cold state.
* The variants run round-robin (the order rotates every round), and the run is
  repeated for --rounds; a background load drifting over the run then hits every
  variant alike. Reported: the median over rounds of each child's median ms/step.
* Warm-up steps come first. needle compiled needs three (an eager call, the
  traced call, the first replay) and a cold kernel cache makes the trace compile
  numba kernels, so --warmup is at least 3.
* OPENBLAS_THREAD_TIMEOUT=22 unless set: OpenBLAS's helper threads sleep 1.6 ms after a call
  instead of spinning for 0.1 s on the core that a compiled step's row blocks run on
  (python/needle/_openblas.py); PyTorch's pool does not use OpenBLAS on x86.
* Memory: RSS read in the child from /proc/self/status. "peak" is the highest RSS
  during the timed steps (the high-water mark is reset after warm-up, so one-off
  costs such as tracing or compiling kernels are left out); "+growth" is that peak
  minus the RSS after building the model, optimizer and batch (the libraries are
  imported before), i.e. what training needs on top of the model: gradients,
  optimizer state, activations; for needle compiled also the program's buffers
  and the memory numba keeps for its JIT-compiled kernels. Where /proc is
  missing, the peak is ru_maxrss, warm-up included.
* --micro times single ops (forward, a sum, backward) in the same three variants,
  to see where a workload's time goes, and the per-op overhead: `((a + b) * a).sum()`
  on 4 elements, whose time is all framework overhead, per op (3 ops), forward alone
  and forward + backward, needle eager vs PyTorch (the least of several repeats of the
  mean over many calls: the overhead at its least disturbed by other load).
* Every table comes with the machine: the CPU model and its widest SIMD extension
  (AVX2, AVX-512, from /proc/cpuinfo's flags), the BLAS numpy uses (threadpoolctl's
  view when it is installed, else numpy.show_config) and the thread settings.

    python benchmarks/bench_training.py                      # every workload, 3 rounds
    python benchmarks/bench_training.py mlp gpt --rounds 1 --json out.json
    python benchmarks/bench_training.py --micro              # single ops, forward + backward
    python benchmarks/bench_training.py --tiny --rounds 1    # tiny sizes: a smoke test
    python benchmarks/bench_training.py --device cuda        # on a GPU, next to PyTorch CUDA

Without PyTorch, only the needle columns are filled (the torch child says why).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

VARIANTS = ("needle_eager", "needle_compiled", "torch")
RESULT = "RESULT "  # prefix of the child's result line on stdout (anything else there is ignored)


# --- needle models ------------------------------------------------------------------------
# needle is imported inside the builders, like PyTorch: a child imports only what it times.

def needle_mlp(s):
    from needle.models import MLP
    return MLP(s["features"], [s["hidden"], s["hidden"]], s["classes"])


def needle_makemore(s):
    from needle import nn

    class Makemore(nn.Module):
        """Embedding -> flatten (batch, context * emb) -> Linear -> BatchNorm1d -> tanh -> Linear."""

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(s["vocab"], s["emb"])
            self.net = nn.Sequential(nn.Linear(s["context"] * s["emb"], s["hidden"]), nn.BatchNorm1d(s["hidden"]),
                                     nn.Tanh(), nn.Linear(s["hidden"], s["vocab"]))

        def forward(self, x):
            return self.net(self.emb(x).reshape((x.shape[0], s["context"] * s["emb"])))

    return Makemore()


def needle_resnet9(s):
    from needle.models import ResNet9
    return ResNet9()


def needle_lstm_lm(s):
    from needle.models import LanguageModel
    return LanguageModel(s["emb"], s["vocab"], s["hidden"], s["layers"], seq_model="lstm", seq_len=s["seq"])


def needle_gpt(s):
    from needle.models import LanguageModel
    return LanguageModel(s["d"], s["vocab"], s["mlp"], s["layers"], seq_model="transformer", seq_len=s["seq"],
                         num_head=s["heads"], dim_head=s["d"] // s["heads"])


# --- PyTorch twins --------------------------------------------------------------------------

def torch_mlp(s):
    from torch import nn
    return nn.Sequential(nn.Linear(s["features"], s["hidden"]), nn.ReLU(), nn.Linear(s["hidden"], s["hidden"]),
                         nn.ReLU(), nn.Linear(s["hidden"], s["classes"]))


def torch_makemore(s):
    from torch import nn
    return nn.Sequential(nn.Embedding(s["vocab"], s["emb"]), nn.Flatten(),
                         nn.Linear(s["context"] * s["emb"], s["hidden"]), nn.BatchNorm1d(s["hidden"]), nn.Tanh(),
                         nn.Linear(s["hidden"], s["vocab"]))


def torch_resnet9(s):
    """needle.models.ResNet9: ConvBN = Conv2d('same' padding k // 2, with bias), BatchNorm2d, ReLU."""
    from torch import nn

    def cbn(a, b, k, stride):
        return nn.Sequential(nn.Conv2d(a, b, k, stride, padding=k // 2), nn.BatchNorm2d(b), nn.ReLU())

    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    return nn.Sequential(
        cbn(3, 16, 7, 4), cbn(16, 32, 3, 2),
        Residual(nn.Sequential(cbn(32, 32, 3, 1), cbn(32, 32, 3, 1))),
        cbn(32, 64, 3, 2), cbn(64, 128, 3, 2),
        Residual(nn.Sequential(cbn(128, 128, 3, 1), cbn(128, 128, 3, 1))),
        nn.Flatten(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def torch_lstm_lm(s):
    """needle's LanguageModel(seq_model='lstm'): (seq, batch) ids -> logits (seq * batch, vocab)."""
    from torch import nn

    class LSTMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(s["vocab"], s["emb"])
            self.lstm = nn.LSTM(s["emb"], s["hidden"], s["layers"])
            self.linear = nn.Linear(s["hidden"], s["vocab"])

        def forward(self, x):
            out, _ = self.lstm(self.embedding(x))
            return self.linear(out.reshape(-1, s["hidden"]))

    return LSTMLM()


def torch_gpt(s):
    """needle's LanguageModel(seq_model='transformer') op for op (python/needle/nn/nn_transformer.py):
    a learned positional embedding, pre-norm layers whose attention normalises q, k and v with
    three LayerNorms and projects them without bias, a causal mask of -max_float32 added to
    the logits, x + attention(x) then x + MLP(LayerNorm(x)), no final norm. Attention is
    written out (not F.scaled_dot_product_attention) so both sides do the same ops."""
    import torch
    from torch import nn

    d, heads = s["d"], s["heads"]
    dim_head = d // heads

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.prenorm_q, self.prenorm_k, self.prenorm_v = (nn.LayerNorm(d) for _ in range(3))
            self.q, self.k, self.v, self.out = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.linear1, self.linear2 = nn.Linear(d, s["mlp"]), nn.Linear(s["mlp"], d)
            self.norm = nn.LayerNorm(d)  # parameters in needle's order, for comparing the two
            mask = torch.full((s["seq"], s["seq"]), -torch.finfo(torch.float32).max).triu(1)
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x):  # (B, T, d)
            batch, length, _ = x.shape

            def split(norm, projection):
                return projection(norm(x)).reshape(batch, length, heads, dim_head).transpose(1, 2)

            q, k, v = split(self.prenorm_q, self.q), split(self.prenorm_k, self.k), split(self.prenorm_v, self.v)
            logits = q @ k.transpose(-1, -2) / math.sqrt(dim_head) + self.mask[:length, :length]
            attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, d)
            x = x + self.out(attended)
            return x + self.linear2(self.linear1(self.norm(x)).relu())

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(s["vocab"], d)
            self.positional_embedding = nn.Embedding(s["seq"], d)
            self.layers = nn.Sequential(*[Layer() for _ in range(s["layers"])])
            self.linear = nn.Linear(d, s["vocab"])

        def forward(self, ids):  # (T, B) -> logits (T * B, vocab)
            length = ids.shape[0]
            x = self.embedding(ids).transpose(0, 1) + self.positional_embedding(torch.arange(length))
            return self.linear(self.layers(x).transpose(0, 1).reshape(-1, d))

    return GPT()


# --- the workloads ------------------------------------------------------------------------------

def classify_batch(s, rng):
    if "image" in s:
        x = rng.rand(s["batch"], 3, s["image"], s["image"]).astype(np.float32)
    else:
        x = rng.rand(s["batch"], s["features"]).astype(np.float32)
    return x, rng.randint(0, s["classes"], s["batch"]).astype(np.int64)


def context_batch(s, rng):
    """makemore: `context` previous characters -> the next one."""
    return (rng.randint(0, s["vocab"], (s["batch"], s["context"])).astype(np.int64),
            rng.randint(0, s["vocab"], s["batch"]).astype(np.int64))


def sequence_batch(s, rng):
    """Language models: ids (seq, batch) -> next ids, flattened like the logits (seq * batch,)."""
    return (rng.randint(0, s["vocab"], (s["seq"], s["batch"])).astype(np.int64),
            rng.randint(0, s["vocab"], s["seq"] * s["batch"]).astype(np.int64))


@dataclass(frozen=True)
class Workload:
    description: str
    sizes: dict            # keyword sizes for the builders
    tiny: dict             # replaces some sizes under --tiny
    needle: Callable       # sizes -> needle Module: batch x -> logits (N, classes) (or (logits, state))
    torch: Callable        # sizes -> torch Module, the same architecture
    batch: Callable        # (sizes, RandomState) -> (x, y) numpy arrays
    optimizer: str         # "adam" (lr 1e-3) or "sgd" (lr 0.1, no momentum)


WORKLOADS: Dict[str, Workload] = {
    "mlp": Workload("Linear 784-512-512-10, ReLU, batch 128, Adam",
                    dict(features=784, hidden=512, classes=10, batch=128), dict(features=32, hidden=16, batch=8),
                    needle_mlp, torch_mlp, classify_batch, "adam"),
    "makemore": Workload("Embedding(27,10) x3, Linear 30-64, BatchNorm1d, tanh, Linear 64-27, batch 32, SGD",
                         dict(vocab=27, emb=10, context=3, hidden=64, batch=32), dict(hidden=16, batch=8),
                         needle_makemore, torch_makemore, context_batch, "sgd"),
    "resnet9": Workload("the course's ResNet9, 3x32x32, batch 64, Adam",
                        dict(image=32, classes=10, batch=64), dict(batch=2),
                        needle_resnet9, torch_resnet9, classify_batch, "adam"),
    "lstm_lm": Workload("Embedding(10000,200), 2-layer LSTM(200,200), Linear 200-10000, seq 35, batch 20, SGD",
                        dict(vocab=10000, emb=200, hidden=200, layers=2, seq=35, batch=20),
                        dict(vocab=50, emb=8, hidden=8, seq=4, batch=2),
                        needle_lstm_lm, torch_lstm_lm, sequence_batch, "sgd"),
    "gpt": Workload("char Transformer: vocab 65, 4 layers, d 128, 4 heads, MLP 512, seq 64 causal, batch 32, Adam",
                    dict(vocab=65, d=128, layers=4, heads=4, mlp=512, seq=64, batch=32),
                    dict(d=16, layers=1, heads=2, mlp=32, seq=8, batch=2),
                    needle_gpt, torch_gpt, sequence_batch, "adam"),
}


def sizes_of(workload: Workload, tiny: bool) -> dict:
    return {**workload.sizes, **(workload.tiny if tiny else {})}


def describe(workload: Workload, tiny: bool) -> str:
    """The workload's description; under --tiny, followed by the sizes that replace its own
    (the description gives the full sizes, which a tiny run does not train)."""
    if not tiny:
        return workload.description
    return f"{workload.description} (--tiny sizes: {', '.join(f'{k} {v}' for k, v in workload.tiny.items())})"


# --- single ops (--micro) -------------------------------------------------------------------
# Each op: its inputs (float ones get gradients), a needle function and a torch function of
# them (a module's parameters get gradients too). Both sides time the same thing: the op, a
# sum to a scalar, and the backward pass.

@dataclass(frozen=True)
class MicroOp:
    name: str
    size: str
    inputs: Callable       # (RandomState, tiny) -> list of numpy arrays
    needle: Callable       # () -> function of needle tensors (a module is built here)
    torch: Callable        # () -> function of torch tensors


def floats(*shapes, tiny=None):
    """An inputs maker: standard normal float32 arrays of `shapes` (of `tiny` under --tiny)."""
    return lambda rng, use_tiny: [rng.randn(*s).astype(np.float32) for s in (tiny if use_tiny else shapes)]


def logits_labels(rows, classes):
    return lambda rng, tiny: [rng.randn(8 if tiny else rows, classes).astype(np.float32),
                              rng.randint(0, classes, 8 if tiny else rows).astype(np.int64)]


def ids(shape, vocab):
    return lambda rng, tiny: [rng.randint(0, vocab, shape).astype(np.int64)]


def needle_lstm_cell():
    from needle import nn

    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(200, 200)

        def forward(self, x, h, c):
            h, c = self.cell(x, (h, c))
            return h + c  # one tensor to sum, on both sides

    return Cell()


def torch_lstm_cell():
    from torch import nn

    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(200, 200)

        def forward(self, x, h, c):
            h, c = self.cell(x, (h, c))
            return h + c

    return Cell()


def _n():
    import needle
    return needle


def _t():
    import torch
    return torch


SMALL = [(8, 8), (8, 8)]
MICRO_OPS: List[MicroOp] = [
    MicroOp("matmul", "128x128 @ 128x128", floats((128, 128), (128, 128), tiny=SMALL),
            lambda: lambda a, b: a @ b, lambda: lambda a, b: a @ b),
    MicroOp("matmul", "512x512 @ 512x512", floats((512, 512), (512, 512), tiny=SMALL),
            lambda: lambda a, b: a @ b, lambda: lambda a, b: a @ b),
    MicroOp("add", "128x128", floats((128, 128), (128, 128), tiny=SMALL),
            lambda: lambda a, b: a + b, lambda: lambda a, b: a + b),
    MicroOp("add", "1024x1024", floats((1024, 1024), (1024, 1024), tiny=SMALL),
            lambda: lambda a, b: a + b, lambda: lambda a, b: a + b),
    MicroOp("mul", "1024x1024", floats((1024, 1024), (1024, 1024), tiny=SMALL),
            lambda: lambda a, b: a * b, lambda: lambda a, b: a * b),
    MicroOp("relu", "1024x1024", floats((1024, 1024), tiny=SMALL[:1]), lambda: _n().relu, lambda: _t().relu),
    MicroOp("logsumexp", "700x10000, axis 1", floats((700, 10000), tiny=[(8, 100)]),
            lambda: lambda a: _n().logsumexp(a, axes=(1,)), lambda: lambda a: a.logsumexp(1)),
    MicroOp("softmax loss", "128x10", logits_labels(128, 10),
            lambda: _n().nn.SoftmaxLoss(), lambda: _t().nn.functional.cross_entropy),
    MicroOp("softmax loss", "700x10000", logits_labels(700, 10000),
            lambda: _n().nn.SoftmaxLoss(), lambda: _t().nn.functional.cross_entropy),
    MicroOp("conv 3x3", "64x16x32x32, 16 -> 16", floats((64, 16, 32, 32), tiny=[(2, 16, 8, 8)]),
            lambda: _n().nn.Conv(16, 16, 3), lambda: _t().nn.Conv2d(16, 16, 3, padding=1)),
    MicroOp("LSTM cell", "batch 20, 200 -> 200", floats((20, 200), (20, 200), (20, 200), tiny=[(2, 200)] * 3),
            needle_lstm_cell, torch_lstm_cell),
    MicroOp("layernorm", "2048x128", floats((2048, 128), tiny=[(8, 128)]),
            lambda: _n().nn.LayerNorm1d(128), lambda: _t().nn.LayerNorm(128)),
    MicroOp("embedding", "35x20 ids, 10000x200", ids((35, 20), 10000),
            lambda: _n().nn.Embedding(10000, 200), lambda: _t().nn.Embedding(10000, 200)),
]


# --- the machine: CPU, SIMD, BLAS, threads --------------------------------------------------------

# the widest vector extension first: its /proc/cpuinfo flag and the name printed
_SIMD_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
               ("sve", "SVE"), ("asimd", "NEON"))


def simd_level(flags) -> str:
    """The widest SIMD extension among /proc/cpuinfo's `flags` (x86) or `Features` (ARM)."""
    flags = set(flags)
    return next((name for flag, name in _SIMD_FLAGS if flag in flags), "unknown")


def parse_cpuinfo(text: str) -> dict:
    """(model, SIMD level) from the text of /proc/cpuinfo: the first processor's entries."""
    model, flags = None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
    return dict(cpu=model, simd=simd_level(flags))


def blas_info() -> str:
    """The BLAS behind numpy: threadpoolctl's report when it is installed (library, version,
    threads, the kernels' architecture), else the bundled OpenBLAS's own report as it runs
    (needle._openblas.runtime_info: the core whose kernels it picked), else numpy's build
    configuration (which names the build machine's core, not this one's)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        found = [f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('num_threads')} threads"
                 f"{', ' + pool['architecture'] if pool.get('architecture') else ''})"
                 for pool in threadpool_info() if pool.get("user_api") == "blas"]
        if found:
            return "; ".join(found)
    from needle._openblas import runtime_info

    running = runtime_info()
    if running:
        return "; ".join(running)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # numpy before 1.25 prints its configuration instead  # noqa: BLE001
        return "unknown (numpy.show_config has no dict form here)"
    config = blas.get("openblas configuration", "")
    return " ".join(part for part in (blas.get("name"), blas.get("version"), f"[{config}]" if config else "")
                    if part)


def machine_info(threads: int) -> dict:
    """What the numbers depend on besides the code: CPU, SIMD, BLAS, threads."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = parse_cpuinfo(f.read())
    except OSError:
        cpu = dict(cpu=None, simd="unknown")
    return dict(cpu=cpu["cpu"] or platform.processor() or platform.machine(), simd=cpu["simd"],
                cores=os.cpu_count(), blas=blas_info(), numpy=np.__version__, threads=threads,
                thread_env={key: str(threads) for key in _THREAD_ENV})


def print_machine(info: dict) -> None:
    print(f"machine: {info['cpu']}, {info['simd']}, {info['cores']} cores; numpy {info['numpy']}, BLAS "
          f"{info['blas']}")
    print(f"threads: {info['threads']} per framework ("
          + ", ".join(f"{k}={v}" for k, v in info["thread_env"].items()) + ", torch.set_num_threads)")


# --- per-op overhead (--micro) ------------------------------------------------------------------

OVERHEAD_EXPR = "((a + b) * a).sum()"  # on 4 elements: no arithmetic to speak of, all overhead
OVERHEAD_OPS = 3


def overhead_steps(variant: str):
    """(forward, forward + backward, (a, b)) of OVERHEAD_EXPR for needle eager or torch, with
    a = 0, 1, 2, 3 and b = 1 (float32, both requiring grad)."""
    if variant == "torch":
        import torch
        a = torch.arange(4, dtype=torch.float32).requires_grad_()
        b = torch.ones(4).requires_grad_()

        def forward_backward():
            a.grad = b.grad = None  # PyTorch accumulates; needle's backward overwrites
            ((a + b) * a).sum().backward()
    else:
        import needle as ndl
        a = ndl.Tensor(np.arange(4, dtype=np.float32), requires_grad=True)
        b = ndl.Tensor(np.ones(4, dtype=np.float32), requires_grad=True)

        def forward_backward():
            ((a + b) * a).sum().backward()

    def forward():
        return ((a + b) * a).sum()

    return forward, forward_backward, (a, b)


def per_op_us(fn, calls: int, repeats: int) -> float:
    """Microseconds per op of `fn` (OVERHEAD_OPS ops): the least over `repeats` of the mean
    over `calls` calls (other load only ever adds time)."""
    for _ in range(max(1, calls // 10)):
        fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best / OVERHEAD_OPS * 1e6


# --- the timing child ---------------------------------------------------------------------------

def _rss_mb(field: str) -> Optional[float]:
    """VmRSS / VmHWM of this process in MB, None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux: clear_refs 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _needle_step(workload, s, x, y, compiled, device="cpu"):
    import needle as ndl
    from needle import nn
    if compiled:
        import numba  # noqa: F401  (the trace imports it: count the library in the baseline, as torch's)

    dev = ndl.get_device(device)
    model = workload.needle(s).to(dev)
    params = model.parameters()
    opt = ndl.optim.Adam(params, lr=1e-3) if workload.optimizer == "adam" else ndl.optim.SGD(params, lr=0.1)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(x, dtype=str(x.dtype), device=dev, requires_grad=False)
    y = ndl.Tensor(y, dtype="int64", device=dev, requires_grad=False)

    def train_step(x, y):
        opt.reset_grad()
        logits = model(x)
        if isinstance(logits, tuple):  # LanguageModel returns (logits, state)
            logits = logits[0]
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return loss

    step = ndl.compile(train_step, fuse=True) if compiled else train_step
    return (lambda: step(x, y)), sum(math.prod(p.shape) for p in params)


def _torch_step(workload, s, x, y, device="cpu"):
    import torch
    model = workload.torch(s).to(device)
    opt = (torch.optim.Adam(model.parameters(), lr=1e-3) if workload.optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def train_step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return train_step, sum(p.numel() for p in model.parameters())


def _timed(step, steps: int, sync: Callable[[], None] = lambda: None):
    """(median ms of `step()`, the last call's result). CPU work is synchronous in both
    frameworks, so the clock around the call sees all of it; GPU kernels run asynchronously,
    so on cuda the clock stops after `sync()` (the device's synchronize)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        result = step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, result


def _synchronize(variant: str, device: str) -> Callable[[], None]:
    """What waits for the device's queued kernels (nothing on the CPU)."""
    if device != "cuda":
        return lambda: None
    if variant == "torch":
        import torch
        return torch.cuda.synchronize
    from numba import cuda
    return cuda.synchronize


def child_workload(variant: str, name: str, args) -> dict:
    workload = WORKLOADS[name]
    s = sizes_of(workload, args.tiny)
    np.random.seed(0)  # needle's initialisers draw from numpy's global RNG
    x, y = workload.batch(s, np.random.RandomState(0))
    if variant == "torch":
        import torch
        torch.manual_seed(0)
        step, params = _torch_step(workload, s, x, y, args.device)
    else:
        step, params = _needle_step(workload, s, x, y, compiled=variant == "needle_compiled", device=args.device)
    sync = _synchronize(variant, args.device)
    rss_built = _rss_mb("VmRSS")
    for _ in range(args.warmup):
        step()
    sync()
    exact_peak = rss_built is not None and _reset_peak_rss()
    ms, loss = _timed(step, args.steps, sync)
    peak = _rss_mb("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(ms=ms, params=params, framework=_framework(variant), loss=loss.item(), peak_mb=peak,
                growth_mb=None if rss_built is None else peak - rss_built, peak_includes_warmup=not exact_peak)


def _needle_micro(op: MicroOp, arrays, compiled: bool):
    import needle as ndl
    fn = op.needle()
    params = fn.parameters() if isinstance(fn, ndl.nn.Module) else []
    inputs = [ndl.Tensor(a, dtype=str(a.dtype), requires_grad=a.dtype == np.float32) for a in arrays]

    def forward_backward(*inputs):
        loss = ndl.summation(fn(*inputs))
        loss.backward()  # overwrites .grad
        # the gradients are returned, so a compiled program cannot drop them as unused
        return [loss] + [t.grad for t in inputs if t.requires_grad] + [p.grad for p in params]

    run = ndl.compile(forward_backward) if compiled else forward_backward
    return lambda: run(*inputs)


def _torch_micro(op: MicroOp, arrays):
    import torch
    fn = op.torch()
    inputs = [torch.from_numpy(a).requires_grad_(a.dtype == np.float32) for a in arrays]
    leaves = [t for t in inputs if t.requires_grad]
    leaves += list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []

    def forward_backward():
        for t in leaves:
            t.grad = None  # PyTorch accumulates into .grad; needle overwrites it
        fn(*inputs).sum().backward()
        return [t.grad for t in leaves]

    return forward_backward


def child_micro(variant: str, args) -> dict:
    """Median microseconds of forward + sum + backward of every op of MICRO_OPS."""
    rows = []
    for op in MICRO_OPS:
        np.random.seed(0)
        arrays = op.inputs(np.random.RandomState(0), args.tiny)
        if variant == "torch":
            step = _torch_micro(op, arrays)
        else:
            step = _needle_micro(op, arrays, compiled=variant == "needle_compiled")
        for _ in range(args.warmup):
            step()
        rows.append(dict(op=op.name, size=op.size, us=_timed(step, args.steps)[0] * 1e3))
    overhead = None
    if variant != "needle_compiled":  # the row compares eager needle with PyTorch
        forward, forward_backward, _ = overhead_steps(variant)
        calls, repeats = (20, 3) if args.tiny else (500, 15)
        overhead = dict(forward=per_op_us(forward, calls, repeats),
                        forward_backward=per_op_us(forward_backward, calls, repeats))
    return dict(rows=rows, overhead=overhead, framework=_framework(variant))


def _framework(variant: str) -> str:
    if variant == "torch":
        import torch
        return f"torch {torch.__version__}"
    return "needle"


def child(variant: str, name: str, args) -> dict:
    if variant == "torch":
        try:
            import torch
        except ImportError as err:
            note = f"PyTorch is not installed ({err}): only needle is timed; pip install -e '.[dev]' for the comparison"
            print(note, file=sys.stderr)
            return dict(unavailable=note)
        if args.device == "cuda" and not torch.cuda.is_available():
            note = f"PyTorch {torch.__version__} has no CUDA device here: only needle is timed"
            print(note, file=sys.stderr)
            return dict(unavailable=note)
        torch.set_num_threads(args.threads)  # the environment's OMP_NUM_THREADS too, but say it outright
    return child_micro(variant, args) if name == "micro" else child_workload(variant, name, args)


# --- the parent: schedule children, print the tables ------------------------------------------

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run_child(variant: str, name: str, args) -> dict:
    # one thread count for every library either framework may use, set before they load
    env = dict(os.environ, **{key: str(args.threads) for key in _THREAD_ENV})
    # OpenBLAS's idle threads sleep after 1.6 ms, not 0.1 s, freeing the core a compiled step's
    # row blocks use (needle/_openblas.py; set here because the child loads numpy before needle)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, name, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device] + \
              (["--tiny"] if args.tiny else [])
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} on {name} failed (exit {result.returncode}):\n{result.stderr}")
    return json.loads(lines[-1][len(RESULT):])


def schedule(names: List[str], args) -> Dict[str, Dict[str, List[dict]]]:
    """results[name][variant] = one child's result per round; variants round-robin."""
    results = {name: {v: [] for v in VARIANTS} for name in names}
    variants = list(VARIANTS)
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]  # no variant always goes first
        for name in names:
            for variant in order:
                if variant not in variants:
                    continue
                res = run_child(variant, name, args)
                if "unavailable" in res:
                    print(res["unavailable"], file=sys.stderr)
                    variants.remove(variant)
                    continue
                results[name][variant].append(res)
                if name != "micro":
                    _check_sizes(name, results[name])
                print(f"  round {r + 1}/{args.rounds}  {name:9s} {variant:16s} "
                      + (f"{res['ms']:9.2f} ms/step" if "ms" in res else "done"), file=sys.stderr, flush=True)
    return results


def _check_sizes(name: str, by_variant: Dict[str, List[dict]]) -> None:
    """The twins must be the same size: fail at the first child that disagrees."""
    counts = {variant: runs[0]["params"] for variant, runs in by_variant.items() if runs}
    if len(set(counts.values())) > 1:
        raise AssertionError(f"{name}: the needle and torch models differ in size: {counts} parameters")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec):
    """format(value, spec), or a dash of the same width for a missing value."""
    return "-".rjust(int(spec.split(".")[0] or 0)) if value is None else format(value, spec)


def _ratio(a, b):
    return None if a is None or b is None else a / b


def workload_rows(results, tiny: bool = False) -> List[dict]:
    rows = []
    for name, by_variant in results.items():
        row = dict(workload=name, description=describe(WORKLOADS[name], tiny), ms={}, rounds_ms={}, memory_mb={},
                   params={})
        for variant, runs in by_variant.items():
            if not runs:
                continue
            row["rounds_ms"][variant] = [run["ms"] for run in runs]
            row["ms"][variant] = _median(row["rounds_ms"][variant])
            row["memory_mb"][variant] = dict(peak=_median([run["peak_mb"] for run in runs]),
                                             growth=_median([run["growth_mb"] for run in runs]),
                                             includes_warmup=runs[0]["peak_includes_warmup"])
            row["params"]["torch" if variant == "torch" else "needle"] = runs[0]["params"]
        torch_ms = row["ms"].get("torch")
        row["ratio"] = {"eager": _ratio(row["ms"].get("needle_eager"), torch_ms),
                        "compiled": _ratio(row["ms"].get("needle_compiled"), torch_ms)}
        rows.append(row)
    return rows


def print_workloads(rows, frameworks, args) -> None:
    print(f"ms per training step: {' vs '.join(frameworks)}; {args.threads} threads each on "
          f"{os.cpu_count()} cores; median over {args.rounds} round(s) of each child's median of {args.steps} "
          f"steps after {args.warmup} warm-up{' (--tiny sizes)' if args.tiny else ''}")
    header = (f"{'workload':9s} {'params':>9s} {'eager':>9s} {'compiled':>9s} {'torch':>9s} {'eager/':>7s} "
              f"{'compiled/':>9s}   {'peak RSS MB (+growth)':^38s}")
    print(header)
    print(f"{'':9s} {'':>9s} {'ms':>9s} {'ms':>9s} {'ms':>9s} {'torch':>7s} {'torch':>9s}   "
          f"{'eager':>12s} {'compiled':>12s} {'torch':>12s}")
    for row in rows:
        params = next(iter(row["params"].values()))  # one count: the sides were checked equal
        memory = []
        for variant in VARIANTS:
            m = row["memory_mb"].get(variant)
            memory.append("-" if m is None else f"{m['peak']:.0f} (+{_fmt(m['growth'], '.0f')})")
        print(f"{row['workload']:9s} {params:9,d} {_fmt(row['ms'].get('needle_eager'), '9.2f')} "
              f"{_fmt(row['ms'].get('needle_compiled'), '9.2f')} {_fmt(row['ms'].get('torch'), '9.2f')} "
              f"{_fmt(row['ratio']['eager'], '7.2f')} {_fmt(row['ratio']['compiled'], '9.2f')}   "
              f"{memory[0]:>12s} {memory[1]:>12s} {memory[2]:>12s}")
    print("eager/torch, compiled/torch: needle's time over PyTorch's (below 1: needle is faster).\n"
          "peak RSS: the most the child held during the timed steps; +growth: over its RSS after building model,\n"
          "optimizer and batch (for compiled: the program's buffers and numba's JIT-compiled kernels too).")
    if not any("torch" in row["ms"] for row in rows):
        print("(no PyTorch results here: needle columns only)")
    if any(m["includes_warmup"] for row in rows for m in row["memory_mb"].values()):
        print("(no /proc/self/clear_refs here: peaks include the warm-up steps)")
    for row in rows:
        counts = ", ".join(f"{side} {n:,}" for side, n in row["params"].items())
        print(f"  {row['workload']:9s} {row['description']}; parameters: {counts}")


def micro_rows(results, tiny: bool) -> List[dict]:
    by_variant = results["micro"]
    rows = []
    for i, op in enumerate(MICRO_OPS):
        us = {variant: _median([run["rows"][i]["us"] for run in runs]) for variant, runs in by_variant.items() if runs}
        rows.append(dict(op=op.name, size="tiny" if tiny else op.size, us=us,
                         ratio={"eager": _ratio(us.get("needle_eager"), us.get("torch")),
                                "compiled": _ratio(us.get("needle_compiled"), us.get("torch"))}))
    return rows


def overhead_rows(results) -> Dict[str, Optional[dict]]:
    """Per-op overhead by variant (median over rounds), and eager/torch ratios."""
    out: Dict[str, Optional[dict]] = {}
    for variant, runs in results["micro"].items():
        found = [run["overhead"] for run in runs if run.get("overhead")]
        out[variant] = {key: _median([o[key] for o in found]) for key in ("forward", "forward_backward")} \
            if found else None
    eager, torch = out.get("needle_eager"), out.get("torch")
    out["eager/torch"] = {key: _ratio(eager[key], torch[key]) for key in ("forward", "forward_backward")} \
        if eager and torch else None
    return out


def print_overhead(overhead: Dict[str, Optional[dict]]) -> None:
    print(f"\nper-op overhead: {OVERHEAD_EXPR} on 4 elements, microseconds per op ({OVERHEAD_OPS} ops); "
          "least of the repeats")
    print(f"{'':14s} {'forward':>10s} {'fwd+bwd':>10s}")
    for name in ("needle_eager", "torch", "eager/torch"):
        row = overhead.get(name)
        if row is not None:
            spec = "10.2f" if name == "eager/torch" else "10.1f"
            print(f"{name:14s} {_fmt(row['forward'], spec)} {_fmt(row['forward_backward'], spec)}")


def print_micro(rows, frameworks, args) -> None:
    print(f"microseconds per forward + sum + backward of one op: {' vs '.join(frameworks)}; "
          f"{args.threads} threads each; median over "
          f"{args.rounds} round(s) of each child's median of {args.steps} calls"
          f"{' (--tiny sizes)' if args.tiny else ''}")
    print(f"{'op':13s} {'size':22s} {'eager us':>10s} {'compiled us':>12s} {'torch us':>10s} {'eager/torch':>12s} "
          f"{'compiled/torch':>15s}")
    for row in rows:
        us = row["us"]
        print(f"{row['op']:13s} {row['size']:22s} {_fmt(us.get('needle_eager'), '10.1f')} "
              f"{_fmt(us.get('needle_compiled'), '12.1f')} {_fmt(us.get('torch'), '10.1f')} "
              f"{_fmt(row['ratio']['eager'], '12.2f')} {_fmt(row['ratio']['compiled'], '15.2f')}")


def write_json(path: str, data: dict) -> None:
    """Write atomically (a temporary file beside it, then a rename): never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="WORKLOAD",
                        help=f"workloads to run, default all: {', '.join(WORKLOADS)}")
    parser.add_argument("--steps", type=int, help="timed steps per child (default 20; --micro: 50 calls; --tiny: 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first, at least 3 (default 5; --tiny: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions of every child (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both frameworks (OMP/OpenBLAS/MKL/numba, torch.set_num_threads); "
                             "default: the machine's core count")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes of everything, a few steps: a smoke test")
    parser.add_argument("--micro", action="store_true",
                        help="instead of the workloads, time single ops (forward + backward) at a few sizes")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where both frameworks compute (default cpu); cuda needs a GPU, numba-cuda "
                             "and a CUDA build of PyTorch for the torch column")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", metavar="VARIANT", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.tiny else 50 if args.micro else 20
    if args.warmup is None:
        args.warmup = 3 if args.tiny else 5
    if args.warmup < 3:
        parser.error("--warmup must be at least 3: a compiled step runs eagerly, then traces, then replays")
    if min(args.steps, args.rounds, args.threads) < 1:
        parser.error("--steps, --rounds and --threads must be at least 1")

    if args.child:
        print(RESULT + json.dumps(child(args.child, args.names[0], args)))
        return 0
    if args.micro and args.names:
        parser.error("--micro times its own list of ops: name no workloads")
    if args.micro and args.device != "cpu":
        parser.error("--micro times single ops on the cpu only; drop --device")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: the folder {os.path.dirname(os.path.abspath(args.json))} does not exist")
    unknown = [n for n in args.names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    if args.device == "cuda":
        import needle as ndl
        if not ndl.cuda().enabled():
            parser.error(f"--device cuda: the cuda device is unavailable here: {ndl.cuda().why_unavailable}")
    results = schedule(["micro"] if args.micro else args.names or list(WORKLOADS), args)
    frameworks = sorted({run["framework"] for by_variant in results.values() for runs in by_variant.values()
                         for run in runs})
    machine = machine_info(args.threads)
    print_machine(machine)
    if args.micro:
        rows = micro_rows(results, args.tiny)
        print_micro(rows, frameworks, args)
        overhead = overhead_rows(results)
        print_overhead(overhead)
        output = dict(micro=rows, overhead=overhead)
    else:
        rows = workload_rows(results, args.tiny)
        print_workloads(rows, frameworks, args)
        output = dict(workloads=rows)
    if args.json:
        config = dict(steps=args.steps, warmup=args.warmup, rounds=args.rounds, threads=args.threads,
                      cores=os.cpu_count(), device=args.device, tiny=args.tiny, frameworks=frameworks)
        write_json(args.json, dict(config=config, machine=machine, **output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
