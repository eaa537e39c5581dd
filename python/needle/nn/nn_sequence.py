"""Recurrent layers (RNN, LSTM), their cells, and Embedding."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

from needle import init, ops
from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module, Parameter

__all__ = ["Sigmoid", "RNNCell", "RNN", "LSTMCell", "LSTM", "Embedding"]


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise (needle.nn.functional.sigmoid)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


def _uniform(*shape, bound, device, dtype) -> Parameter:
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype))


def _bias(b: Optional[Tensor], shape) -> Optional[Tensor]:
    """A (width,) bias broadcast over the batch; None stays None."""
    return None if b is None else b.reshape((1, shape[1])).broadcast_to(shape)


def _check_input(module: Module, X: Tensor, ndim: int, features: int, layout: str) -> None:
    if len(X.shape) != ndim or X.shape[-1] != features:
        raise ValueError(f"{type(module).__name__} expects input of shape {layout} with {features} features, "
                         f"got {X.shape}")


def _stack_repr(module, cells) -> str:
    """PyTorch's RNN/LSTM extra_repr: sizes, then num_layers and bias where not the defaults."""
    text = f"{module.input_size}, {module.hidden_size}"
    if module.num_layers != 1:
        text += f", num_layers={module.num_layers}"
    if cells and cells[0].bias_ih is None:
        text += ", bias=False"
    return text


def _check_state(module: Module, name: str, h: Tensor, shape: tuple) -> None:
    if tuple(h.shape) != tuple(shape):
        raise ValueError(f"{type(module).__name__}: {name} should have shape {tuple(shape)}, got {h.shape}")


class RNNCell(Module):
    """h' = f(X W_ih + b_ih + h W_hh + b_hh), f = tanh or relu; X (bs, input), h (bs, hidden)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype="float32"):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        bound = math.sqrt(1.0 / hidden_size)
        self.W_ih = _uniform(input_size, hidden_size, bound=bound, device=device, dtype=dtype)
        self.W_hh = _uniform(hidden_size, hidden_size, bound=bound, device=device, dtype=dtype)
        self.bias_ih = _uniform(hidden_size, bound=bound, device=device, dtype=dtype) if bias else None
        self.bias_hh = _uniform(hidden_size, bound=bound, device=device, dtype=dtype) if bias else None

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias_ih is None:
            text += ", bias=False"
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text

    def forward(self, X: Tensor, h: Optional[Tensor] = None) -> Tensor:
        _check_input(self, X, 2, self.input_size, "(batch, input_size)")
        z = X @ self.W_ih
        shape = z.shape
        if self.bias_ih is not None:
            z = z + _bias(self.bias_ih, shape)
        if h is None:  # a missing state is zeros; W_hh still takes part (and gets a zero gradient)
            h = init.zeros(*shape, device=X.device, dtype=X.dtype)
        _check_state(self, "h", h, shape)
        z = z + h @ self.W_hh
        if self.bias_hh is not None:
            z = z + _bias(self.bias_hh, shape)
        return ops.tanh(z) if self.nonlinearity == "tanh" else ops.relu(z)


class RNN(Module):
    """Multi-layer Elman RNN. X (seq_len, bs, input), h0 (num_layers, bs, hidden) or None.

    Returns (output (seq_len, bs, hidden) of the last layer, h_n (num_layers, bs, hidden)).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh", device=None,
                 dtype="float32"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn_cells = [
            RNNCell(input_size if layer == 0 else hidden_size, hidden_size, bias, nonlinearity, device, dtype)
            for layer in range(num_layers)
        ]

    def extra_repr(self) -> str:
        return _stack_repr(self, self.rnn_cells)

    def forward(self, X: Tensor, h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        _check_input(self, X, 3, self.input_size, "(seq_len, batch, input_size)")
        if h0 is not None:
            _check_state(self, "h0", h0, (self.num_layers, X.shape[1], self.hidden_size))
        states: List[Optional[Tensor]] = list(ops.split(h0, 0)) if h0 is not None else [None] * self.num_layers
        outputs = []
        for x_t in ops.split(X, 0):
            for layer, cell in enumerate(self.rnn_cells):
                states[layer] = x_t = cell(x_t, states[layer])
            outputs.append(x_t)
        return ops.stack(outputs, 0), ops.stack(states, 0)


class LSTMCell(Module):
    """One LSTM step with PyTorch's gate order (i, f, g, o); h = (h0, c0) or None."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        bound = math.sqrt(1.0 / hidden_size)
        width = 4 * hidden_size
        self.W_ih = _uniform(input_size, width, bound=bound, device=device, dtype=dtype)
        self.W_hh = _uniform(hidden_size, width, bound=bound, device=device, dtype=dtype)
        self.bias_ih = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None
        self.bias_hh = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + (", bias=False" if self.bias_ih is None else "")

    def forward(self, X: Tensor, h=None) -> Tuple[Tensor, Tensor]:
        _check_input(self, X, 2, self.input_size, "(batch, input_size)")
        z = X @ self.W_ih
        shape = z.shape
        state_shape = (shape[0], self.hidden_size)
        if h is None:  # missing states are zeros; W_hh still takes part (and gets a zero gradient)
            h = (init.zeros(*state_shape, device=X.device, dtype=X.dtype),
                 init.zeros(*state_shape, device=X.device, dtype=X.dtype))
        h0, c0 = h
        _check_state(self, "h0", h0, state_shape)
        _check_state(self, "c0", c0, state_shape)
        if self.bias_ih is not None:
            z = z + _bias(self.bias_ih, shape)
        z = z + h0 @ self.W_hh
        if self.bias_hh is not None:
            z = z + _bias(self.bias_hh, shape)
        i, f, g, o = ops.split(z.reshape((shape[0], 4, self.hidden_size)), 1)
        i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
        c = f * c0 + i * g
        return o * ops.tanh(c), c


class LSTM(Module):
    """Multi-layer LSTM. X (seq_len, bs, input); h = (h0, c0), each (num_layers, bs, hidden), or None.

    Returns (output (seq_len, bs, hidden), (h_n, c_n)).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm_cells = [
            LSTMCell(input_size if layer == 0 else hidden_size, hidden_size, bias, device, dtype)
            for layer in range(num_layers)
        ]

    def extra_repr(self) -> str:
        return _stack_repr(self, self.lstm_cells)

    def forward(self, X: Tensor, h=None):
        _check_input(self, X, 3, self.input_size, "(seq_len, batch, input_size)")
        if h is None:
            hs, cs = [None] * self.num_layers, [None] * self.num_layers
        else:
            state_shape = (self.num_layers, X.shape[1], self.hidden_size)
            _check_state(self, "h0", h[0], state_shape)
            _check_state(self, "c0", h[1], state_shape)
            hs, cs = list(ops.split(h[0], 0)), list(ops.split(h[1], 0))
        outputs = []
        for x_t in ops.split(X, 0):
            for layer, cell in enumerate(self.lstm_cells):
                hs[layer], cs[layer] = cell(x_t, (hs[layer], cs[layer]) if hs[layer] is not None else None)
                x_t = hs[layer]
            outputs.append(x_t)
        return ops.stack(outputs, 0), (ops.stack(hs, 0), ops.stack(cs, 0))


class Embedding(Module):
    """Lookup table: ids (seq_len, bs) -> vectors (seq_len, bs, embedding_dim); weight ~ N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"

    def forward(self, x: Tensor) -> Tensor:
        """x: ids (int64, or floats holding whole numbers), any shape -> x.shape + (embedding_dim,).

        A row gather on the device (the same numbers as one_hot(x) @ weight, the course's
        formulation); its gradient scatter-adds. ValueError names an id outside [0, num_embeddings);
        TypeError for bool ids (a mask, not ids: PyTorch refuses them too).
        """
        if x.dtype == "bool":
            raise TypeError(f"Embedding({self.num_embeddings}, {self.embedding_dim}): ids must be int64 (or whole "
                            "floats), got a bool tensor")
        if x.shape and 0 not in x.shape:
            low, high = ops.extremes(x)  # two numbers read back, not the ids
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Embedding({self.num_embeddings}, {self.embedding_dim}): id {bad:g} is out of range "
                    f"[0, {self.num_embeddings})"
                )
        return self.weight[x]
