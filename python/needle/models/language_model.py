"""Word/character language model: Embedding -> RNN/LSTM/Transformer -> Linear."""
from __future__ import annotations

from needle import nn


class LanguageModel(nn.Module):
    """x (seq_len, bs) of token ids -> logits (seq_len * bs, output_size), plus the sequence state.

    num_head and dim_head shape the Transformer's attention (seq_model='transformer' only).
    """

    def __init__(self, embedding_size, output_size, hidden_size, num_layers=1, seq_model="rnn", seq_len=40,
                 device=None, dtype="float32", num_head=8, dim_head=32):
        super().__init__()
        self.embedding = nn.Embedding(output_size, embedding_size, device=device, dtype=dtype)
        if seq_model == "rnn":
            self.seq_model = nn.RNN(embedding_size, hidden_size, num_layers, device=device, dtype=dtype)
            width = hidden_size
        elif seq_model == "lstm":
            self.seq_model = nn.LSTM(embedding_size, hidden_size, num_layers, device=device, dtype=dtype)
            width = hidden_size
        elif seq_model == "transformer":
            self.seq_model = nn.Transformer(embedding_size, hidden_size, num_layers, sequence_len=seq_len,
                                            num_head=num_head, dim_head=dim_head,
                                            batch_first=False, device=device, dtype=dtype)
            width = embedding_size
        else:
            raise ValueError(f"seq_model must be 'rnn', 'lstm' or 'transformer', got {seq_model!r}")
        self.width = width
        self.linear = nn.Linear(width, output_size, device=device, dtype=dtype)

    def forward(self, x, h=None):
        seq_len, bs = x.shape
        out, h = self.seq_model(self.embedding(x), h)
        return self.linear(out.reshape((seq_len * bs, self.width))), h
