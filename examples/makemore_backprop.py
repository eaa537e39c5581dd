#!/usr/bin/env python
"""makemore part 4, "Becoming a Backprop Ninja", with needle instead of PyTorch.

A character-level MLP language model (Bengio et al. 2003) reads three
characters of a name and predicts the next one:

    C (27, 10) embedding -> W1, b1 (30, hidden) -> BatchNorm (bngain, bnbias)
    -> tanh -> W2, b2 (hidden, 27) -> softmax cross-entropy

and its backward pass is written out by hand, then checked against needle's
autograd:

  exercise 1  backpropagate through the forward pass broken into atomic steps,
              one hand-derived gradient per intermediate (dlogprobs ... dC)
  exercise 2  the cross-entropy backward fused into one expression:
              dlogits = (softmax(logits) - onehot(Y)) / n
  exercise 3  the BatchNorm backward fused into one expression:
              dhprebn = bngain*bnvar_inv/n * (n*dhpreact - sum(dhpreact)
                        - n/(n-1) * bnraw * sum(dhpreact*bnraw))
  exercise 4  train the network with those hand-written gradients only (no
              loss.backward()), calibrate BatchNorm on the training set,
              report the train/dev loss and sample names

The exit code is 0 when every comparison is approximately equal, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

import needle as ndl
from needle.manual import cmp, compare_table, default_tolerances
from needle.utils.cli import ArgumentParser, int_at_least

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NAMES = ROOT / "tests" / "data" / "names" / "names.txt"   # every 8th name of the full file

BLOCK_SIZE = 3    # characters of context
N_EMBD = 10       # dimensions of a character embedding
BN_EPS = 1e-5
DATA_SEED = 42    # the word shuffle of the lecture series (random.seed(42))
PARAM_NAMES = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")

# the order in which the lecture derives (and checks) the gradients of exercise 1
ATOMIC_ORDER = ("logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes",
                "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar",
                "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C")


# --- data --------------------------------------------------------------------------------

def default_names() -> tuple:
    """(path, where it comes from): $NEEDLE_DATA/names/names.txt when NEEDLE_DATA is set (the
    full 32,033 names), else the 4,005-name sample that ships with the repository."""
    data = os.environ.get("NEEDLE_DATA")
    if data:
        return Path(data) / "names" / "names.txt", "from NEEDLE_DATA"
    return SAMPLE_NAMES, "the 4,005-name sample shipped in tests/data; NEEDLE_DATA=DIR reads DIR/names/names.txt"


def load_words(path) -> list:
    """One lower-case name per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [w.strip() for w in f if w.strip()]


def build_vocab(words) -> tuple:
    """(stoi, itos): '.' (start/end of a name) is 0, the letters follow in sorted order."""
    chars = sorted(set("".join(words)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    itos = {i: s for s, i in stoi.items()}
    return stoi, itos


def build_dataset(words, stoi, block_size: int = BLOCK_SIZE) -> tuple:
    """X (N, block_size) int64 contexts and Y (N,) int64 next characters.

    "emma" gives ... -> e, ..e -> m, .em -> m, emm -> a, mma -> '.'.
    """
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    X = np.array(X, dtype=np.int64).reshape(-1, block_size)
    return X, np.array(Y, dtype=np.int64)


def split_words(words, seed: int = DATA_SEED) -> tuple:
    """Shuffle (seeded) and cut 80% / 10% / 10% of the names into train / dev / test.

    The cut is made on names, not on contexts, so no name has contexts in two
    splits; each split then holds about 80/10/10% of the contexts too.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def make_splits(words, stoi, seed: int = DATA_SEED, block_size: int = BLOCK_SIZE) -> dict:
    """{'train': (X, Y), 'dev': (X, Y), 'test': (X, Y)}."""
    return {name: build_dataset(part, stoi, block_size)
            for name, part in zip(("train", "dev", "test"), split_words(words, seed))}


# --- parameters and the atomic forward pass ---------------------------------------------

def init_params(rng, vocab_size: int, n_hidden: int, dtype: str, requires_grad: bool = True,
                n_embd: int = N_EMBD, block_size: int = BLOCK_SIZE) -> dict:
    """The lecture's initialisation: small but non-zero everywhere, so that a wrong
    gradient cannot hide behind zeros (b1 is useless next to BatchNorm, kept for the exercise)."""
    fan_in = n_embd * block_size
    arrays = {
        "C": rng.standard_normal((vocab_size, n_embd)),
        "W1": rng.standard_normal((fan_in, n_hidden)) * (5 / 3) / fan_in ** 0.5,  # tanh gain / sqrt(fan_in)
        "b1": rng.standard_normal(n_hidden) * 0.1,
        "W2": rng.standard_normal((n_hidden, vocab_size)) * 0.1,
        "b2": rng.standard_normal(vocab_size) * 0.1,
        "bngain": rng.standard_normal((1, n_hidden)) * 0.1 + 1.0,
        "bnbias": rng.standard_normal((1, n_hidden)) * 0.1,
    }
    return {k: ndl.Tensor(v, dtype=dtype, requires_grad=requires_grad) for k, v in arrays.items()}


def atomic_forward(P: dict, Xb: np.ndarray, Yb: np.ndarray) -> dict:
    """The forward pass in the small steps of exercise 1; every intermediate is kept
    (needle's backward() fills the .grad of each of them)."""
    n = Xb.shape[0]
    T = {}
    T["emb"] = P["C"][Xb]                                      # (n, 3, 10)
    T["embcat"] = T["emb"].view(n, -1)                         # (n, 30)
    T["hprebn"] = T["embcat"] @ P["W1"] + P["b1"]              # (n, hidden)
    # BatchNorm
    T["bnmeani"] = 1 / n * T["hprebn"].sum(0, keepdims=True)
    T["bndiff"] = T["hprebn"] - T["bnmeani"]
    T["bndiff2"] = T["bndiff"] ** 2
    T["bnvar"] = 1 / (n - 1) * T["bndiff2"].sum(0, keepdims=True)  # Bessel's correction: n-1
    T["bnvar_inv"] = (T["bnvar"] + BN_EPS) ** -0.5
    T["bnraw"] = T["bndiff"] * T["bnvar_inv"]
    T["hpreact"] = P["bngain"] * T["bnraw"] + P["bnbias"]
    T["h"] = T["hpreact"].tanh()
    T["logits"] = T["h"] @ P["W2"] + P["b2"]                   # (n, 27)
    # cross-entropy, one step at a time
    T["logit_maxes"] = T["logits"].max(1, keepdim=True).values
    T["norm_logits"] = T["logits"] - T["logit_maxes"]          # subtract the max for numerical stability
    T["counts"] = T["norm_logits"].exp()
    T["counts_sum"] = T["counts"].sum(1, keepdims=True)
    T["counts_sum_inv"] = T["counts_sum"] ** -1
    T["probs"] = T["counts"] * T["counts_sum_inv"]
    T["logprobs"] = T["probs"].log()
    T["loss"] = -T["logprobs"][range(n), Yb].mean()
    return T


def onehot(idx: np.ndarray, k: int, dtype: str, scale: float = 1.0) -> ndl.Tensor:
    """A constant (len(idx), k) tensor with `scale` at (i, idx[i]) and 0 elsewhere."""
    return ndl.Tensor(np.eye(k)[np.asarray(idx).ravel()] * scale, dtype=dtype, requires_grad=False)


def embedding_backward(demb: ndl.Tensor, Xb: np.ndarray, vocab_size: int) -> ndl.Tensor:
    """dC: every row of demb goes back to the row of C it was read from, and rows read
    several times add up. As a product: onehot(Xb)^T @ demb, shape (vocab, n_embd)."""
    rows = demb.reshape(Xb.size, demb.shape[-1])
    selector = ndl.Tensor(np.eye(vocab_size)[:, Xb.ravel()], dtype=demb.dtype, requires_grad=False)
    return selector @ rows


# --- exercise 1: the atomic backward pass ----------------------------------------------------

@ndl.no_grad()
def atomic_backward(P: dict, T: dict, Xb: np.ndarray, Yb: np.ndarray) -> dict:
    """Every gradient of exercise 1, derived by hand, in needle ops on detached data.
    Returns {variable name: dloss/dvariable}."""
    P = {k: v.detach() for k, v in P.items()}
    T = {k: v.detach() for k, v in T.items()}
    n, vocab_size = T["logits"].shape
    dtype = T["logits"].dtype
    d = {}
    # loss = -mean_i logprobs[i, Yb[i]]: only the picked entries matter, each with weight -1/n
    d["logprobs"] = onehot(Yb, vocab_size, dtype, scale=-1.0 / n)
    d["probs"] = T["probs"] ** -1 * d["logprobs"]                       # d log(x) = 1/x
    # probs = counts * counts_sum_inv: counts_sum_inv (n, 1) was broadcast, so sum over the row
    d["counts_sum_inv"] = (T["counts"] * d["probs"]).sum(1, keepdims=True)
    dcounts = T["counts_sum_inv"] * d["probs"]                          # first branch into counts
    d["counts_sum"] = -(T["counts_sum"] ** -2) * d["counts_sum_inv"]    # d x^-1 = -x^-2
    # counts_sum = counts.sum(1): each count gets the whole (n, 1) gradient of its row
    d["counts"] = dcounts + d["counts_sum"].broadcast_to(dcounts.shape)
    d["norm_logits"] = T["counts"] * d["counts"]                        # d exp(x) = exp(x)
    # norm_logits = logits - logit_maxes: logit_maxes was broadcast, so sum with a minus sign
    d["logit_maxes"] = -d["norm_logits"].sum(1, keepdims=True)
    # logits feeds norm_logits directly, and the max, which routes to the first argmax of each row
    argmax = T["logits"].argmax(1).numpy().astype(np.int64)  # the first maximum, as Max routes it
    d["logits"] = d["norm_logits"] + onehot(argmax, vocab_size, dtype) * d["logit_maxes"]
    # logits = h @ W2 + b2
    d["h"] = d["logits"] @ P["W2"].T
    d["W2"] = T["h"].T @ d["logits"]
    d["b2"] = d["logits"].sum(0)
    d["hpreact"] = (1.0 - T["h"] ** 2) * d["h"]                         # d tanh = 1 - tanh^2
    # hpreact = bngain * bnraw + bnbias: bngain and bnbias (1, hidden) were broadcast
    d["bngain"] = (T["bnraw"] * d["hpreact"]).sum(0, keepdims=True)
    d["bnbias"] = d["hpreact"].sum(0, keepdims=True)
    d["bnraw"] = P["bngain"] * d["hpreact"]
    # bnraw = bndiff * bnvar_inv
    d["bnvar_inv"] = (T["bndiff"] * d["bnraw"]).sum(0, keepdims=True)
    dbndiff = T["bnvar_inv"] * d["bnraw"]                               # first branch into bndiff
    d["bnvar"] = -0.5 * (T["bnvar"] + BN_EPS) ** -1.5 * d["bnvar_inv"]
    d["bndiff2"] = d["bnvar"].broadcast_to(T["bndiff2"].shape) * (1.0 / (n - 1))
    d["bndiff"] = dbndiff + 2 * T["bndiff"] * d["bndiff2"]              # second branch, through the square
    # bndiff = hprebn - bnmeani; bnmeani = hprebn.sum(0) / n
    d["bnmeani"] = -d["bndiff"].sum(0, keepdims=True)
    d["hprebn"] = d["bndiff"] + d["bnmeani"].broadcast_to(d["bndiff"].shape) * (1.0 / n)
    # hprebn = embcat @ W1 + b1
    d["embcat"] = d["hprebn"] @ P["W1"].T
    d["W1"] = T["embcat"].T @ d["hprebn"]
    d["b1"] = d["hprebn"].sum(0)
    d["emb"] = d["embcat"].view(T["emb"].shape)
    d["C"] = embedding_backward(d["emb"], Xb, vocab_size)
    return d


# --- exercises 2 and 3: fused backward passes ----------------------------------------------

def softmax(logits: ndl.Tensor) -> ndl.Tensor:
    counts = (logits - logits.max(1, keepdim=True).values).exp()
    return counts / counts.sum(1, keepdims=True)


def cross_entropy(logits: ndl.Tensor, Y: np.ndarray) -> ndl.Tensor:
    """Mean negative log-likelihood of the labels Y (F.cross_entropy)."""
    logp = ndl.ops.logsoftmax(logits, axis=1)
    return -logp[range(logits.shape[0]), Y].mean()


@ndl.no_grad()
def cross_entropy_backward(logits: ndl.Tensor, Yb: np.ndarray) -> ndl.Tensor:
    """dloss/dlogits of the mean cross-entropy: (softmax(logits) - onehot(Yb)) / n."""
    n, k = logits.shape
    return (softmax(logits.detach()) - onehot(Yb, k, logits.dtype)) * (1.0 / n)


def batchnorm_forward(hprebn, bngain, bnbias) -> ndl.Tensor:
    """Training-mode BatchNorm in one expression (Bessel-corrected variance)."""
    n = hprebn.shape[0]
    mean = hprebn.mean(0, keepdims=True)
    var = ((hprebn - mean) ** 2).sum(0, keepdims=True) / (n - 1)
    return bngain * (hprebn - mean) / (var + BN_EPS).sqrt() + bnbias


@ndl.no_grad()
def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv) -> ndl.Tensor:
    """dloss/dhprebn through the whole BatchNorm (mean, Bessel variance, normalisation, affine)."""
    dhpreact, bngain, bnraw, bnvar_inv = (t.detach() for t in (dhpreact, bngain, bnraw, bnvar_inv))
    n = dhpreact.shape[0]
    return bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0, keepdims=True)
                                     - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdims=True))


# --- exercise 4: the whole network, trained with hand-written gradients ----------------------

class ManualMLP:
    """The exercise-4 network: a compact forward pass and its fused manual backward pass.

    Everything runs under ndl.no_grad() on constant tensors, so no graph is built:
    each op is one kernel call. Constant arrays (identity matrices for the one-hot
    selections) are made once and reused.
    """

    def __init__(self, params: dict):
        self.P = {k: v.detach() for k, v in params.items()}
        self.vocab_size = self.P["C"].shape[0]
        self.dtype = self.P["C"].dtype
        self._eye = np.eye(self.vocab_size, dtype=self.dtype)
        self.bnmean = self.bnvar = None

    def _const(self, array) -> ndl.Tensor:
        return ndl.Tensor(array, dtype=self.dtype, requires_grad=False)

    @ndl.no_grad()
    def forward(self, Xb: np.ndarray) -> dict:
        """Training-mode forward pass; returns what the backward pass needs."""
        P, n = self.P, Xb.shape[0]
        embcat = P["C"][Xb].reshape(n, -1)
        hprebn = embcat @ P["W1"] + P["b1"]
        bndiff = hprebn + hprebn.sum(0, keepdims=True) * (-1.0 / n)
        bnvar = (bndiff * bndiff).sum(0, keepdims=True) * (1.0 / (n - 1))
        bnvar_inv = (bnvar + BN_EPS) ** -0.5
        bnraw = bndiff * bnvar_inv
        h = (P["bngain"] * bnraw + P["bnbias"]).tanh()
        logits = h @ P["W2"] + P["b2"]
        counts = (logits + (-logits.max(1, keepdim=True).values)).exp()
        probs = counts * counts.sum(1, keepdims=True) ** -1
        return {"embcat": embcat, "bnraw": bnraw, "bnvar_inv": bnvar_inv, "h": h, "probs": probs}

    @staticmethod
    @ndl.no_grad()
    def loss_from(cache: dict, Yb: np.ndarray) -> float:
        """The mean cross-entropy of the batch the cache was made from."""
        return -cache["probs"][range(len(Yb)), Yb].log().mean().item()

    @ndl.no_grad()
    def backward(self, cache: dict, Xb: np.ndarray, Yb: np.ndarray) -> dict:
        """All parameter gradients: fused cross-entropy, fused BatchNorm, the rest by hand."""
        P, n = self.P, Xb.shape[0]
        embcat, bnraw, bnvar_inv, h, probs = (cache[k] for k in ("embcat", "bnraw", "bnvar_inv", "h", "probs"))
        # cross-entropy: (probs - onehot) / n
        dlogits = probs * (1.0 / n) + self._const(self._eye[Yb] * (-1.0 / n))
        # second linear layer
        dh = dlogits @ P["W2"].T
        dW2 = h.T @ dlogits
        db2 = dlogits.sum(0)
        # tanh
        dhpreact = (1.0 - h * h) * dh
        # BatchNorm, fused
        dbngain = (bnraw * dhpreact).sum(0, keepdims=True)
        dbnbias = dhpreact.sum(0, keepdims=True)
        dhprebn = (P["bngain"] * bnvar_inv * (1.0 / n)) * (
            n * dhpreact + (-dbnbias) + bnraw * (dbngain * (-n / (n - 1))))
        # first linear layer
        dembcat = dhprebn @ P["W1"].T
        dW1 = embcat.T @ dhprebn
        db1 = dhprebn.sum(0)
        # embedding: scatter-add the rows back into the table
        dC = self._const(self._eye[:, Xb.ravel()]) @ dembcat.reshape(Xb.size, -1)
        return {"C": dC, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "bngain": dbngain, "bnbias": dbnbias}

    @ndl.no_grad()
    def step(self, grads: dict, lr: float) -> None:
        for k, g in grads.items():
            self.P[k] = self.P[k] + g * (-lr)

    @ndl.no_grad()
    def calibrate(self, X: np.ndarray) -> None:
        """BatchNorm statistics over a whole split, since the training loop kept no running
        mean/var: the mean and the Bessel-corrected variance of hprebn over every row of X."""
        hprebn = self._hprebn(X)
        self.bnmean = hprebn.mean(0, keepdims=True)
        self.bnvar = ((hprebn - self.bnmean) ** 2).sum(0, keepdims=True) * (1.0 / (X.shape[0] - 1))

    def _hprebn(self, X: np.ndarray) -> ndl.Tensor:
        P = self.P
        return P["C"][X].reshape(X.shape[0], -1) @ P["W1"] + P["b1"]

    @ndl.no_grad()
    def eval_logits(self, X: np.ndarray) -> ndl.Tensor:
        """Inference: BatchNorm with the calibrated statistics."""
        if self.bnmean is None:
            raise RuntimeError("calibrate() the BatchNorm statistics before evaluating")
        P = self.P
        hpreact = P["bngain"] * (self._hprebn(X) - self.bnmean) * (self.bnvar + BN_EPS) ** -0.5 + P["bnbias"]
        return hpreact.tanh() @ P["W2"] + P["b2"]

    @ndl.no_grad()
    def split_loss(self, X: np.ndarray, Y: np.ndarray, chunk: int = 65536) -> float:
        total = 0.0
        for i in range(0, len(X), chunk):
            xb, yb = X[i:i + chunk], Y[i:i + chunk]
            total += float(cross_entropy(self.eval_logits(xb), yb).numpy()) * len(xb)
        return total / len(X)

    @ndl.no_grad()
    def sample(self, rng, itos: dict, count: int) -> list:
        """`count` names, one character at a time from the model's next-character distribution."""
        names = []
        for _ in range(count):
            out, context = [], [0] * BLOCK_SIZE
            while True:
                p = softmax(self.eval_logits(np.array([context]))).numpy()[0].astype(np.float64)
                ix = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")),
                         self.vocab_size - 1)
                context = context[1:] + [ix]
                if ix == 0:
                    break
                out.append(itos[ix])
            names.append("".join(out))
        return names


# --- running the exercises ---------------------------------------------------------------------

def _batch(rng, X, Y, batch_size: int) -> tuple:
    ix = rng.integers(0, X.shape[0], batch_size)
    return X[ix], Y[ix]


def compare_grad(name: str, manual, P: dict, T: dict):
    """cmp(name, manual, the variable), with one exception: b1.

    BatchNorm subtracts the batch mean of hprebn, so adding a constant to b1 changes
    nothing and dloss/db1 = dhprebn.sum(0) is exactly zero in exact arithmetic; both
    the manual and autograd values are rounding noise of the size of the entries of
    dhprebn that cancel. That scale, not the noise itself, sets b1's tolerance.
    """
    reference = P[name] if name in P else T[name]
    if name != "b1":
        return cmp(name, manual, reference, verbose=False)
    rtol, atol = default_tolerances(manual.numpy(), T["hprebn"].grad.numpy())
    return cmp(name, manual, reference, rtol=rtol, atol=atol, verbose=False)


def _rows(d: dict, T: dict, P: dict, names) -> list:
    return [compare_grad(k, d[k], P, T) for k in names]


def exercise1(P, T, Xb, Yb, quiet) -> list:
    print("\n== exercise 1: backprop through the atomic compute graph, by hand ==")
    d = atomic_backward(P, T, Xb, Yb)
    return compare_table(_rows(d, T, P, ATOMIC_ORDER), verbose=not quiet)


def exercise2(P, T, Xb, Yb, quiet) -> list:
    print("\n== exercise 2: cross-entropy backward in one expression ==")
    loss_fast = cross_entropy(T["logits"].detach(), Yb)
    if not quiet:
        print(f"loss_fast {loss_fast.item():.12f}  diff from the atomic loss: "
              f"{loss_fast.item() - T['loss'].item():.3g}")
    rows = [cmp("loss (fast)", loss_fast, T["loss"].detach(), verbose=False),
            cmp("logits", cross_entropy_backward(T["logits"], Yb), T["logits"], verbose=False)]
    return compare_table(rows, verbose=not quiet)


def exercise3(P, T, Xb, Yb, quiet) -> list:
    print("\n== exercise 3: BatchNorm backward in one expression ==")
    with ndl.no_grad():
        hpreact_fast = batchnorm_forward(T["hprebn"].detach(), P["bngain"].detach(), P["bnbias"].detach())
    if not quiet:
        diff = np.abs(hpreact_fast.numpy() - T["hpreact"].numpy()).max()
        print(f"hpreact_fast vs hpreact: max diff {diff:.3g}")
    # upstream gradient: autograd's dloss/dhpreact, so that only the BatchNorm formula is under test
    dhprebn = batchnorm_backward(T["hpreact"].grad, P["bngain"], T["bnraw"], T["bnvar_inv"])
    rows = [cmp("hpreact (fast)", hpreact_fast, T["hpreact"].detach(), verbose=False),
            cmp("hprebn", dhprebn, T["hprebn"], verbose=False)]
    return compare_table(rows, verbose=not quiet)


def exercise4(args, splits, itos, vocab_size) -> tuple:
    hidden = args.hidden if args.hidden is not None else 200
    print(f"\n== exercise 4: training with manual gradients only (hidden {hidden}, {args.train_dtype}) ==")
    rng = np.random.default_rng(args.seed)
    params = init_params(rng, vocab_size, hidden, args.train_dtype, requires_grad=False)
    model = ManualMLP(params)
    print(f"parameters: {sum(int(np.prod(p.shape)) for p in model.P.values())}")
    Xtr, Ytr = splits["train"]
    results = []
    steps, half = args.steps, args.steps // 2
    start = time.perf_counter()
    first_loss = last_loss = float("nan")
    for i in range(steps):
        Xb, Yb = _batch(rng, Xtr, Ytr, args.batch_size)
        cache = model.forward(Xb)
        grads = model.backward(cache, Xb, Yb)
        if i == 0:  # is it right? the first step's manual gradients against autograd's
            P = {k: ndl.Tensor(v, requires_grad=True) for k, v in model.P.items()}
            T = atomic_forward(P, Xb, Yb)
            T["loss"].backward()
            rows = [compare_grad(k, grads[k], P, T) for k in PARAM_NAMES]
            if not args.quiet:
                print("step 0: manual gradients vs needle autograd")
            results = compare_table(rows, verbose=not args.quiet)
            del P, T
        lr = 0.1 if i < half else 0.01  # step learning-rate decay
        model.step(grads, lr)
        if i % args.print_every == 0 or i == steps - 1:
            last_loss = model.loss_from(cache, Yb)  # the loss of this batch, before the update
            if i == 0:
                first_loss = last_loss
            if not args.quiet:
                rate = (i + 1) / (time.perf_counter() - start)
                print(f"{i:7d}/{steps:7d}: loss {last_loss:.4f}  lr {lr:g}  ({rate:.0f} steps/s)", flush=True)
    train_time = time.perf_counter() - start
    rate = steps / train_time if steps else float("nan")
    print(f"trained {steps} steps in {train_time:.1f} s ({rate:.0f} steps/s)")
    if steps == 0:
        return results, {}
    model.calibrate(Xtr)
    losses = {split: model.split_loss(*splits[split]) for split in ("train", "dev")}
    for split, value in losses.items():
        print(f"{split} loss {value:.4f}")
    names = model.sample(np.random.default_rng(args.seed + 10), itos, args.samples)
    print(f"{len(names)} samples:")
    for name in names:
        print(f"  {name}")
    info = {"first_loss": first_loss, "last_loss": last_loss, "train_time": train_time, "steps_per_s": rate,
            "samples": names, **losses}
    return results, info


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    names, where = default_names()
    p.add_argument("--names", type=Path, default=names, help=f"names.txt, one name per line ({where})")
    p.add_argument("--exercise", choices=["1", "2", "3", "4", "all"], default="all", help="which exercise to run")
    p.add_argument("--steps", type=int_at_least(0), default=200_000, help="exercise 4: training steps (lr 0.1, "
                   "0.01 after half)")
    p.add_argument("--batch-size", type=int_at_least(2), default=32,
                   help="minibatch size, at least 2 (BatchNorm divides by n-1)")
    p.add_argument("--seed", type=int_at_least(0), default=2147483647, help="seed of the parameters, batches "
                   "and samples")
    p.add_argument("--data-seed", type=int, default=DATA_SEED, help="seed of the train/dev/test shuffle")
    p.add_argument("--hidden", type=int_at_least(1), default=None, help="hidden units (default: 64 for "
                   "exercises 1-3, 200 for 4)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                   help="dtype of exercises 1-3 (the gradient comparisons)")
    p.add_argument("--train-dtype", choices=["float32", "float64"], default="float32",
                   help="dtype of exercise 4 (training)")
    p.add_argument("--samples", type=int_at_least(0), default=20, help="exercise 4: names to sample")
    p.add_argument("--print-every", type=int_at_least(1), default=10_000, help="exercise 4: print the loss "
                   "every this many steps")
    p.add_argument("--quiet", action="store_true", help="no comparison tables or progress lines")
    args = p.parse_args(argv)
    # --seed feeds numpy's default_rng (any int >= 0); --data-seed seeds random.Random: any int
    if not args.names.is_file():
        p.error(f"--names {args.names}: no such file")
    return args


def run(args: argparse.Namespace) -> dict:
    """Run the chosen exercises; returns {'results': {exercise: [CmpResult]}, 'training': {...},
    'ok': every comparison approximately equal, 'wall_time': seconds}."""
    start = time.perf_counter()
    words = load_words(args.names)
    stoi, itos = build_vocab(words)
    vocab_size = len(stoi)
    splits = make_splits(words, stoi, seed=args.data_seed)
    print(f"{len(words)} names, vocabulary {vocab_size}, contexts: "
          + ", ".join(f"{k} {v[0].shape}" for k, v in splits.items()))
    todo = ["1", "2", "3", "4"] if args.exercise == "all" else [args.exercise]
    results = {}
    if set(todo) & {"1", "2", "3"}:
        rng = np.random.default_rng(args.seed)
        hidden = args.hidden if args.hidden is not None else 64
        P = init_params(rng, vocab_size, hidden, args.dtype)
        Xb, Yb = _batch(rng, *splits["train"], args.batch_size)
        T = atomic_forward(P, Xb, Yb)
        T["loss"].backward()
        print(f"exercises 1-3: hidden {hidden}, batch {args.batch_size}, {args.dtype}, loss {T['loss'].item():.4f}")
        for ex, fn in (("1", exercise1), ("2", exercise2), ("3", exercise3)):
            if ex in todo:
                results[ex] = fn(P, T, Xb, Yb, args.quiet)
    training = {}
    if "4" in todo:
        results["4"], training = exercise4(args, splits, itos, vocab_size)
    ok = all(r.approximate for rows in results.values() for r in rows)
    return {"results": results, "training": training, "ok": ok, "wall_time": time.perf_counter() - start}


def print_summary(summary: dict) -> None:
    print("\n== summary ==")
    for ex, rows in summary["results"].items():
        bad = [r.name for r in rows if not r.approximate]
        print(f"exercise {ex}: {len(rows) - len(bad)}/{len(rows)} approximately equal"
              + (f"; NOT: {', '.join(bad)}" if bad else ""))
    info = summary["training"]
    if info:
        print(f"exercise 4: batch loss {info['first_loss']:.4f} -> {info['last_loss']:.4f}, "
              f"train {info['train']:.4f}, dev {info['dev']:.4f}, training {info['train_time']:.1f} s "
              f"({info['steps_per_s']:.0f} steps/s)")
    print(f"wall time {summary['wall_time']:.1f} s")
    print("all comparisons approximately equal" if summary["ok"] else "SOME COMPARISONS FAILED")


def main(argv=None) -> int:
    summary = run(parse_args(argv))
    print_summary(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
