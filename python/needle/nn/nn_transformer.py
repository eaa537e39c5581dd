"""Multi-head self-attention and a pre-norm Transformer (decoder-style, optional causal mask)."""
from __future__ import annotations

import math
from typing import Optional

from needle import init, ops
from needle.autograd import Tensor
from needle.dtypes import largest

from .nn_basic import Dropout, LayerNorm1d, Linear, Module, ReLU, Sequential
from .nn_sequence import Embedding

__all__ = ["MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer"]


class MultiHeadAttention(Module):
    """softmax(q k^T / sqrt(D) + mask) v over inputs of shape (B, heads, T, D).

    `forward` returns (result (B, heads, Tq, D), probs (B, heads, Tq, Tk)); probs
    is taken after dropout.
    """

    def __init__(self, *, dropout=0.0, causal=False, device=None, dtype="float32"):
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.causal = causal
        self.dropout = Dropout(dropout)

    def create_causal_mask(self, i: int, j: int, device) -> Tensor:
        """(1, 1, i, j): -max_float32 where key c is after query r (c > r + j - i), else 0."""
        rows = init.arange(i, device=device).reshape((i, 1)).broadcast_to((i, j))
        cols = init.arange(j, device=device).reshape((1, j)).broadcast_to((i, j))
        future = cols > rows + (j - i)
        mask = ops.where(future, -largest("float32"), 0.0)
        return ops.cast(mask, self.dtype).reshape((1, 1, i, j))

    def matmul(self, a: Tensor, b_transpose: Tensor) -> Tensor:
        """a @ b_transpose^T over all leading axes."""
        return a @ ops.transpose(b_transpose)

    def softmax(self, logit: Tensor) -> Tensor:
        """Softmax over the last axis (the row max subtracted first)."""
        return ops.softmax(logit, axis=-1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor):
        if len(q.shape) != 4 or len(k.shape) != 4 or len(v.shape) != 4:
            raise ValueError(f"MultiHeadAttention expects (B, heads, T, D) inputs, got {q.shape}, {k.shape}, {v.shape}")
        if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
            raise ValueError(f"MultiHeadAttention: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
        _, _, queries_len, q_dim = q.shape
        keys_len = k.shape[2]
        logits = self.matmul(q, k) / math.sqrt(q_dim)
        if self.causal:
            mask = self.create_causal_mask(queries_len, keys_len, q.device)
            logits = logits + mask.broadcast_to(logits.shape)
        probs = self.dropout(self.softmax(logits))
        result = self.matmul(probs, ops.transpose(v))
        return result, probs


class AttentionLayer(Module):
    """Pre-norm multi-head attention with bias-free projections; inputs (B, T, features)."""

    def __init__(self, q_features, num_head, dim_head, *, k_features=None, v_features=None,
                 out_features=None, dropout=0.0, causal=True, device=None, dtype="float32"):
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.q_features = q_features
        self.k_features = q_features if k_features is None else k_features
        self.v_features = q_features if v_features is None else v_features
        self.out_features = q_features if out_features is None else out_features
        self.num_head = num_head
        self.dim_head = dim_head
        inner = num_head * dim_head
        self.prenorm_q = LayerNorm1d(self.q_features, device=device, dtype=dtype)
        self.prenorm_k = LayerNorm1d(self.k_features, device=device, dtype=dtype)
        self.prenorm_v = LayerNorm1d(self.v_features, device=device, dtype=dtype)
        self.q_projection = Linear(self.q_features, inner, bias=False, device=device, dtype=dtype)
        self.k_projection = Linear(self.k_features, inner, bias=False, device=device, dtype=dtype)
        self.v_projection = Linear(self.v_features, inner, bias=False, device=device, dtype=dtype)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, device=device, dtype=dtype)
        self.out_projection = Linear(inner, self.out_features, bias=False, device=device, dtype=dtype)

    def _heads(self, x: Tensor, norm: Module, projection: Module) -> Tensor:
        """(B, T, F) -> normalised, projected and split into heads: (B, heads, T, dim_head)."""
        batch, length, features = x.shape
        y = projection(norm(x.reshape((batch * length, features))))
        return y.reshape((batch, length, self.num_head, self.dim_head)).transpose((1, 2))

    def forward(self, q: Tensor, k: Optional[Tensor] = None, v: Optional[Tensor] = None) -> Tensor:
        k = q if k is None else k
        v = q if v is None else v
        for name, x, features in (("q", q, self.q_features), ("k", k, self.k_features), ("v", v, self.v_features)):
            if len(x.shape) != 3 or x.shape[2] != features:
                raise ValueError(f"AttentionLayer: {name} should have shape (B, T, {features}), got {x.shape}")
        batch, queries_len, _ = q.shape
        x, _ = self.attn(
            self._heads(q, self.prenorm_q, self.q_projection),
            self._heads(k, self.prenorm_k, self.k_projection),
            self._heads(v, self.prenorm_v, self.v_projection),
        )
        x = x.transpose((1, 2)).reshape((batch * queries_len, self.num_head * self.dim_head))
        return self.out_projection(x).reshape((batch, queries_len, self.out_features))


class TransformerLayer(Module):
    """x + attention(x), then x + MLP(LayerNorm(x)); dropout after attention and in the MLP."""

    def __init__(self, q_features, num_head, dim_head, hidden_size, *, dropout=0.0, causal=True,
                 device=None, dtype="float32"):
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.attention = AttentionLayer(q_features, num_head, dim_head, dropout=dropout, causal=causal,
                                        device=device, dtype=dtype)
        self.linear1 = Linear(q_features, hidden_size, device=device, dtype=dtype)
        self.linear2 = Linear(hidden_size, q_features, device=device, dtype=dtype)
        self.norm = LayerNorm1d(q_features, device=device, dtype=dtype)
        self.relu = ReLU()
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(x))
        y = self.dropout(self.relu(self.linear1(self.norm(x))))
        return x + self.dropout(self.linear2(y))


class Transformer(Module):
    """Learned positional embedding, then `num_layers` TransformerLayers; no final norm.

    x is (T, B, D), or (B, T, D) with batch_first; returns (output, zeros_like(output)).
    """

    def __init__(self, embedding_size, hidden_size, num_layers, *, num_head=8, dim_head=32, dropout=0.0,
                 causal=True, device=None, dtype="float32", batch_first=False, sequence_len=2048):
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.batch_first = batch_first
        self.embedding_size = embedding_size
        self.sequence_len = sequence_len
        self.positional_embedding = Embedding(sequence_len, embedding_size, device=device, dtype=dtype)
        self.layers = Sequential(*[
            TransformerLayer(embedding_size, num_head, dim_head, hidden_size, dropout=dropout, causal=causal,
                             device=device, dtype=dtype)
            for _ in range(num_layers)
        ])

    def forward(self, x: Tensor, h=None):
        if len(x.shape) != 3 or x.shape[2] != self.embedding_size:
            raise ValueError(f"Transformer expects input of width {self.embedding_size}, got shape {x.shape}")
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        batch, length, _ = x.shape
        if length > self.sequence_len:
            raise ValueError(f"Transformer: sequence of length {length} exceeds sequence_len={self.sequence_len}")
        positions = init.arange(length, device=x.device).reshape((length, 1)).broadcast_to((length, batch))
        pos = self.positional_embedding(positions)
        x = self.layers(x + ops.transpose(pos, (0, 1)))
        if not self.batch_first:
            x = ops.transpose(x, (0, 1))
        return x, init.zeros_like(x)
