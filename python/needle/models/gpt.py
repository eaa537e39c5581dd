"""A GPT of nanoGPT's shape (Karpathy's nanoGPT, after GPT-2): the model people train on tiny
Shakespeare, with nanoGPT's configuration fields, module names and initialisation.

    model = GPT(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    logits, loss = model(idx, targets)          # idx, targets: (B, T) int64
    out = model.generate(idx, 200, temperature=0.8, top_k=200)

Architecture (GPT-2's, as nanoGPT builds it): token and learned position embeddings,
dropout, `n_layer` pre-LayerNorm blocks -- x + attn(ln_1(x)), then x + mlp(ln_2(x)), with
causal self-attention from one fused query/key/value projection `c_attn` and an output
projection `c_proj`, and an MLP `c_fc` (4 n_embd) -> GELU -> `c_proj` -- a final LayerNorm,
and a head tied to the token embedding: logits = x @ wte.weight^T, one tensor for both (one
gradient, one optimizer state). The attributes follow nanoGPT's names, so the state_dict
keys are nanoGPT's (`transformer.h.0.attn.c_attn.weight`, ...); `needle.interop` converts the
course Linear's (in, out) weights to PyTorch's (out, in) layout and back.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import init, nn, ops
from ..autograd import Tensor, no_grad
from ..nn import functional as F

__all__ = ["GPT", "GPTConfig"]


class GPTConfig(dict):
    """nanoGPT's GPTConfig fields, as a dict (what checkpoints store as the model's arguments)."""

    FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with an optional bias (nanoGPT's: PyTorch's before 2.1 had no
    bias=False)."""

    def __init__(self, dim: int, bias: bool = True, device=None, dtype: str = "float32"):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(init.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(init.zeros(dim, device=device, dtype=dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, eps=1e-5)


def _linear(fan_in: int, fan_out: int, bias: bool, std: float, device, dtype) -> nn.Linear:
    """A course Linear (weight (in, out)) re-initialised as GPT-2's: N(0, std) weights, zero bias."""
    layer = nn.Linear(fan_in, fan_out, bias=bias, device=device, dtype=dtype)
    layer.weight = nn.Parameter(init.randn(fan_in, fan_out, std=std, device=device, dtype=dtype))
    if bias:
        layer.bias = nn.Parameter(init.zeros(1, fan_out, device=device, dtype=dtype))
    return layer


class _Constants:
    """Constants of the model's shape: the causal mask (block_size, block_size), true on and below
    the diagonal, and the position ids 0..T-1 per length T. Held outside the module tree (not
    buffers): they are not part of the state_dict, as in nanoGPT."""

    def __init__(self, block_size: int, device):
        self.device = device
        self.mask = Tensor(np.tril(np.ones((block_size, block_size), dtype=bool)), device=device, dtype="bool",
                           requires_grad=False)
        self._positions: Dict[int, Tensor] = {}

    def positions(self, T: int) -> Tensor:
        found = self._positions.get(T)
        if found is None:
            found = self._positions[T] = Tensor(np.arange(T), device=self.device, dtype="int64",
                                                requires_grad=False)
        return found


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over x (B, T, C) with n_head heads of C / n_head."""

    def __init__(self, n_embd: int, n_head: int, n_layer: int, block_size: int, dropout: float, bias: bool,
                 device=None, dtype: str = "float32"):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout
        self.c_attn = _linear(n_embd, 3 * n_embd, bias, 0.02, device, dtype)
        self.c_proj = _linear(n_embd, n_embd, bias, 0.02 / math.sqrt(2 * n_layer), device, dtype)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self._constants = _Constants(block_size, device)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.c_attn(x)
        # (B, T, 3C) -> three (B, H, T, D); split (nanoGPT's qkv.split) gives qkv's gradient as one
        # concatenation, where three slices gave three zero-filled copies added up
        q, k, v = (part.reshape((B, T, H, D)).permute((0, 2, 1, 3)) for part in qkv.split(C, dim=2))
        att = (q @ k.transpose()) * (1.0 / math.sqrt(D))
        mask = self._constants.mask[:T, :T].reshape((1, 1, T, T)).broadcast_to(att.shape)
        att = ops.softmax(ops.where(mask, att, -math.inf), axis=3)
        att = self.attn_dropout(att)
        y = (att @ v).permute((0, 2, 1, 3)).reshape((B, T, C))
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_fc (4 C) -> GELU (exact, PyTorch's default) -> c_proj -> dropout."""

    def __init__(self, n_embd: int, n_layer: int, dropout: float, bias: bool, device=None, dtype: str = "float32"):
        super().__init__()
        self.c_fc = _linear(n_embd, 4 * n_embd, bias, 0.02, device, dtype)
        self.c_proj = _linear(4 * n_embd, n_embd, bias, 0.02 / math.sqrt(2 * n_layer), device, dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd: int, n_head: int, n_layer: int, block_size: int, dropout: float, bias: bool,
                 device=None, dtype: str = "float32"):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias, device, dtype)
        self.attn = CausalSelfAttention(n_embd, n_head, n_layer, block_size, dropout, bias, device, dtype)
        self.ln_2 = LayerNorm(n_embd, bias, device, dtype)
        self.mlp = MLP(n_embd, n_layer, dropout, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT (see the module docstring).

    Args (nanoGPT's config fields): vocab_size, block_size (the longest context), n_layer,
    n_head, n_embd (divisible by n_head), dropout (0.0 for pretraining small models, as
    nanoGPT's shakespeare-char uses 0.2), bias (in the Linears and LayerNorms).
    Parameters are drawn from numpy's global generator in module order: wte, wpe, then each
    block's c_attn, c_proj, c_fc, c_proj.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float = 0.0, bias: bool = True, device=None, dtype: str = "float32"):
        super().__init__()
        for name, value, low in (("vocab_size", vocab_size, 1), ("block_size", block_size, 1),
                                 ("n_layer", n_layer, 1), ("n_head", n_head, 1), ("n_embd", n_embd, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"GPT: {name} must be an integer >= {low}, got {value!r}")
        if n_embd % n_head:
            raise ValueError(f"GPT: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GPT: dropout must be in [0, 1), got {dropout!r}")
        self.config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                                n_embd=n_embd, dropout=dropout, bias=bias)
        self.block_size = block_size
        wte = nn.Embedding(vocab_size, n_embd, device=device, dtype=dtype)
        wte.weight = nn.Parameter(init.randn(vocab_size, n_embd, std=0.02, device=device, dtype=dtype))
        wpe = nn.Embedding(block_size, n_embd, device=device, dtype=dtype)
        wpe.weight = nn.Parameter(init.randn(block_size, n_embd, std=0.02, device=device, dtype=dtype))
        self.transformer = nn.ModuleDict({
            "wte": wte,
            "wpe": wpe,
            "drop": nn.Dropout(dropout),
            "h": nn.ModuleList([Block(n_embd, n_head, n_layer, block_size, dropout, bias, device, dtype)
                                for _ in range(n_layer)]),
            "ln_f": LayerNorm(n_embd, bias, device, dtype),
        })
        self._constants = _Constants(block_size, device)

    def to(self, *args, device=None, dtype=None) -> "GPT":
        """Module.to, and the shape constants (causal mask, position ids) follow to the device."""
        super().to(*args, device=device, dtype=dtype)
        where = self.transformer["wte"].weight.device
        constants = _Constants(self.block_size, where)
        for block in self.transformer["h"]:
            block.attn._constants = constants
        self._constants = constants
        return self

    def tied_weights(self) -> Dict[str, Tensor]:
        """{nanoGPT key: tensor} of the weights shared under another name: the head is the token
        embedding (needle.interop writes and checks `lm_head.weight` from it)."""
        return {"lm_head.weight": self.transformer["wte"].weight}

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """idx (B, T) int64 token ids, T <= block_size -> (logits (B, T, vocab_size), the mean
        cross-entropy against targets (B, T) or None). ValueError for a context that is too long."""
        if idx.ndim != 2:
            raise ValueError(f"GPT: idx must be (B, T) token ids, got shape {idx.shape}")
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"GPT: a sequence of length {T} is longer than block_size {self.block_size}")
        t = self.transformer
        x = F.embedding(idx, t["wte"].weight) + F.embedding(self._constants.positions(T), t["wpe"].weight) \
            .reshape((1, T, self.config["n_embd"])).broadcast_to((B, T, self.config["n_embd"]))
        x = t["drop"](x)
        for block in t["h"]:
            x = block(x)
        x = t["ln_f"](x)
        logits = x @ t["wte"].weight.transpose()
        if targets is None:
            return logits, None
        if tuple(targets.shape) != (B, T):
            raise ValueError(f"GPT: targets must have idx's shape {(B, T)}, got {targets.shape}")
        V = self.config["vocab_size"]
        return logits, F.cross_entropy(logits.reshape((B * T, V)), targets.reshape((B * T,)))

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count (nanoGPT's get_num_params: position embeddings left out by default;
        the token embedding counts once, as the head shares it)."""
        count = sum(int(np.prod(p.shape)) for p in self.parameters())
        if non_embedding:
            count -= int(np.prod(self.transformer["wpe"].weight.shape))
        return count

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: Tuple[float, float] = (0.9, 0.95)):
        """AdamW with nanoGPT's two groups: weight decay on the matrices and embeddings, none on
        biases and LayerNorm weights."""
        from ..optim import AdamW

        decay: List[Tensor] = []
        no_decay: List[Tensor] = []
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            (no_decay if leaf == "bias" or ".ln_" in f".{name}" or name.startswith("transformer.ln_f") else
             decay).append(p)
        return AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                     lr=learning_rate, betas=betas)

    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None) -> Tensor:
        """idx (B, T) int64 extended by max_new_tokens sampled tokens: each step runs the model on
        the last block_size tokens, divides the last position's logits by temperature, keeps the
        top_k largest (others -inf) and draws from the softmax with numpy's global generator (a
        seed reproduces the text; top_k=1 is greedy). Runs in eval mode under no_grad."""
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 0):
            raise ValueError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if not temperature > 0:
            raise ValueError(f"generate: temperature must be > 0, got {temperature!r}")
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"generate: top_k must be an integer >= 1 or None, got {top_k!r}")
        was_training = self.training
        self.eval()
        tokens = idx.numpy().astype(np.int64)
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    context = Tensor(tokens[:, -self.block_size:], device=idx.device, dtype="int64",
                                     requires_grad=False)
                    logits, _ = self(context)
                    last = logits[:, -1, :].numpy().astype(np.float64) / temperature
                    tokens = np.concatenate([tokens, _sample(last, top_k)[:, None]], axis=1)
        finally:
            self.train() if was_training else self.eval()
        return Tensor(tokens, device=idx.device, dtype="int64", requires_grad=False)


def _sample(logits: np.ndarray, top_k: Optional[int]) -> np.ndarray:
    """One token per row of (B, V) logits: top-k filtered softmax, drawn with numpy's global RNG."""
    if top_k is not None and top_k < logits.shape[1]:
        kth = np.sort(logits, axis=1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    return np.array([np.random.choice(probs.shape[1], p=row) for row in probs], dtype=np.int64)

