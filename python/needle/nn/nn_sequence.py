"""Recurrent layers (RNN, LSTM, GRU), their cells, and Embedding.

The course's layout: weights multiply from the right, `W_ih (input, gates * H)` and
`W_hh (H, gates * H)`, and sequences come first, (seq_len, batch, features). The gates are
consecutive blocks of H columns in PyTorch's order (LSTM i, f, g, o; GRU r, z, n), so a
PyTorch weight `weight_ih_l0 (gates * H, input)` is W_ih transposed (needle.interop maps the
names and layouts). Beyond the course, as PyTorch's: `batch_first=True` takes and returns
(batch, seq_len, features) (the states stay (num_layers, batch, H)), and `dropout=p` drops the
outputs of every layer but the last, in training mode only, before the next layer reads them.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, List, Optional, Tuple, Union

from needle import init, ops
from needle.autograd import Tensor, no_grad

from . import functional as F
from .nn_basic import Module, Parameter

__all__ = ["Sigmoid", "RNNCell", "RNN", "LSTMCell", "LSTM", "GRUCell", "GRU", "Embedding"]


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


def _check_sizes(module: Module, input_size, hidden_size) -> None:
    """ValueError unless hidden_size is a whole number >= 1 and input_size one >= 0 (PyTorch's rule)."""
    for name, size, least in (("input_size", input_size, 0), ("hidden_size", hidden_size, 1)):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < least:
            raise ValueError(f"{type(module).__name__}: {name} should be a whole number >= {least}, got {size!r}")


def _stack_options(module: Any, num_layers: int, batch_first: bool, dropout: float) -> None:
    """Check and keep PyTorch's batch_first and dropout (a ValueError for dropout outside [0, 1];
    a warning, as PyTorch's, for dropout on a single layer, where it does nothing); a ValueError
    for num_layers that is not a whole number >= 1, as PyTorch's."""
    name = type(module).__name__
    if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers < 1:
        raise ValueError(f"{name}: num_layers should be a whole number >= 1, got {num_layers!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"{name}: dropout should be a number in [0, 1] (the probability of an element being "
                         f"zeroed), got {dropout!r}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(f"{name}: dropout={dropout} with num_layers=1 does nothing: it acts between stacked "
                      "layers only (PyTorch warns too)", UserWarning, stacklevel=3)
    module.batch_first = bool(batch_first)
    module.dropout = float(dropout)


def _sequence_input(module, X: Tensor) -> Tensor:
    """X checked and made sequence-first: (seq_len, batch, input_size), from (batch, seq_len,
    input_size) when module.batch_first."""
    layout = "(batch, seq_len, input_size)" if module.batch_first else "(seq_len, batch, input_size)"
    _check_input(module, X, 3, module.input_size, layout)
    return ops.permute(X, (1, 0, 2)) if module.batch_first else X


def _sequence_output(module, outputs: List[Tensor]) -> Tensor:
    """The last layer's states over time, (seq_len, batch, H), or (batch, seq_len, H) for batch_first."""
    return ops.stack(outputs, 1 if module.batch_first else 0)


def _sequence_layout(module, states: Tensor) -> Tensor:
    """The last layer's states (seq_len, batch, H) as one tensor, (batch, seq_len, H) (a permuted
    view) for batch_first."""
    return ops.permute(states, (1, 0, 2)) if module.batch_first else states


def _between_layers(module, x: Tensor, layer: int) -> Tensor:
    """The input of stacked layer `layer`: the previous layer's output with dropout (training only)."""
    if layer and module.dropout > 0 and module.training:
        return F.dropout(x, module.dropout)
    return x


class RNNCell(Module):
    """h' = f(X W_ih + b_ih + h W_hh + b_hh), f = tanh or relu; X (bs, input), h (bs, hidden)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype="float32"):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        _check_sizes(self, input_size, hidden_size)
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
    """Multi-layer Elman RNN. X (seq_len, bs, input) (or (bs, seq_len, input) with batch_first),
    h0 (num_layers, bs, hidden) or None.

    Returns (output (seq_len, bs, hidden) of the last layer (batch first with batch_first),
    h_n (num_layers, bs, hidden)). dropout: between stacked layers, in training (module docstring).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh", device=None,
                 dtype="float32", *, batch_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        _stack_options(self, num_layers, batch_first, dropout)
        self.rnn_cells = [
            RNNCell(input_size if layer == 0 else hidden_size, hidden_size, bias, nonlinearity, device, dtype)
            for layer in range(num_layers)
        ]

    def extra_repr(self) -> str:
        return _stack_repr(self, self.rnn_cells)

    def forward(self, X: Tensor, h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return _unroll_single_state(self, self.rnn_cells, X, h0)


class LSTMCell(Module):
    """One LSTM step with PyTorch's gate order (i, f, g, o); h = (h0, c0) or None."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        _check_sizes(self, input_size, hidden_size)
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
        h0, c0 = self._states(X, h, shape[0])
        if self.bias_ih is not None:
            z = z + _bias(self.bias_ih, shape)
        z = z + h0 @ self.W_hh
        if self.bias_hh is not None:
            z = z + _bias(self.bias_hh, shape)
        # i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of z's column blocks; c = f c0 + i g;
        # h = o tanh(c): one op and one gradient op (ops.lstm), as PyTorch's fused cell
        return ops.lstm_gates(z, c0)

    def _states(self, X: Tensor, h, batch: int) -> Tuple[Tensor, Tensor]:
        """(h0, c0), each (batch, H) (ValueError naming the one that is not), zeros of X's device
        and dtype for h = None: W_hh still takes part then (and gets a zero gradient)."""
        state_shape = (batch, self.hidden_size)
        if h is None:
            h = (init.zeros(*state_shape, device=X.device, dtype=X.dtype),
                 init.zeros(*state_shape, device=X.device, dtype=X.dtype))
        h0, c0 = h
        _check_state(self, "h0", h0, state_shape)
        _check_state(self, "c0", c0, state_shape)
        return h0, c0

    def forward_sequence(self, X: Tensor, h=None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """forward over a whole sequence X (seq_len, batch, input_size) from h = (h0, c0) or None:
        (every step's h (seq_len, batch, H), (h_n, c_n)); step t is forward(X[t], state of step
        t - 1), the same operations in the same order.

        Why not forward in a loop: X W_ih + b_ih does not depend on the state, so it is one matmul
        over all seq_len * batch rows (PyTorch's LSTM does the same), its gradient two matmuls and
        one column sum instead of seq_len of each; the recurrence is one op (ops.lstm_layer), whose
        gradient gets W_hh's as one matmul too."""
        _check_input(self, X, 3, self.input_size, "(seq_len, batch, input_size)")
        seq_len, batch = X.shape[0], X.shape[1]
        h0, c0 = self._states(X, h, batch)
        xw = X.reshape((seq_len * batch, self.input_size)) @ self.W_ih
        if self.bias_ih is not None:
            xw = xw + _bias(self.bias_ih, xw.shape)
        hs, cs = ops.lstm_layer(xw.reshape((seq_len, batch, xw.shape[1])), h0, c0, self.W_hh, self.bias_hh)
        return hs, (hs[seq_len - 1], cs[seq_len - 1])


class LSTM(Module):
    """Multi-layer LSTM. X (seq_len, bs, input) (or (bs, seq_len, input) with batch_first);
    h = (h0, c0), each (num_layers, bs, hidden), or None.

    Returns (output (seq_len, bs, hidden) (batch first with batch_first), (h_n, c_n)). dropout:
    between stacked layers, in training (module docstring).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None, dtype="float32", *,
                 batch_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        _stack_options(self, num_layers, batch_first, dropout)
        self.lstm_cells = [
            LSTMCell(input_size if layer == 0 else hidden_size, hidden_size, bias, device, dtype)
            for layer in range(num_layers)
        ]

    def extra_repr(self) -> str:
        return _stack_repr(self, self.lstm_cells)

    def forward(self, X: Tensor, h=None):
        X = _sequence_input(self, X)
        hs: List[Optional[Tensor]]
        cs: List[Optional[Tensor]]
        if h is None:
            hs, cs = [None] * self.num_layers, [None] * self.num_layers
        else:
            if not isinstance(h, (tuple, list)) or len(h) != 2 or not all(isinstance(t, Tensor) for t in h):
                raise ValueError(f"LSTM: h should be (h0, c0), two tensors of shape (num_layers, batch, hidden), or "
                                 f"None, got {type(h).__name__}" + (f" of {[type(t).__name__ for t in h]}"
                                                                     if isinstance(h, (tuple, list)) else ""))
            state_shape = (self.num_layers, X.shape[1], self.hidden_size)
            _check_state(self, "h0", h[0], state_shape)
            _check_state(self, "c0", h[1], state_shape)
            hs, cs = list(ops.split(h[0], 0)), list(ops.split(h[1], 0))
        if not all(type(cell).forward is LSTMCell.forward for cell in self.lstm_cells):
            return self._forward_by_steps(X, hs, cs)
        # layer by layer, each over the whole sequence (LSTMCell.forward_sequence: one input
        # matmul per layer); dropout draws one mask per layer, as PyTorch's LSTM
        layer_output = X
        for layer, cell in enumerate(self.lstm_cells):
            layer_input = _between_layers(self, layer_output, layer)
            layer_output, (hs[layer], cs[layer]) = cell.forward_sequence(
                layer_input, (hs[layer], cs[layer]) if hs[layer] is not None else None)
        return _sequence_layout(self, layer_output), (ops.stack(hs, 0), ops.stack(cs, 0))

    def _forward_by_steps(self, X: Tensor, hs: list, cs: list):
        """forward for cells whose own forward is not LSTMCell's (a subclass's): each cell is
        called at each time step, as the course's LSTM does."""
        outputs = []
        for x_t in ops.split(X, 0):
            for layer, cell in enumerate(self.lstm_cells):
                x_t = _between_layers(self, x_t, layer)
                hs[layer], cs[layer] = cell(x_t, (hs[layer], cs[layer]) if hs[layer] is not None else None)
                x_t = hs[layer]
            outputs.append(x_t)
        return _sequence_output(self, outputs), (ops.stack(hs, 0), ops.stack(cs, 0))


class GRUCell(Module):
    """One GRU step, PyTorch's formulas and gate order (r, z, n):

        r = sigmoid(X W_ir + b_ir + h W_hr + b_hr)
        z = sigmoid(X W_iz + b_iz + h W_hz + b_hz)
        n = tanh(X W_in + b_in + r * (h W_hn + b_hn))
        h' = (1 - z) * n + z * h

    In the course's layout, as LSTMCell: W_ih (input, 3H) and W_hh (H, 3H) hold the r, z, n
    blocks of H columns in that order, bias_ih and bias_hh (3H,) (None with bias=False): PyTorch's
    weight_ih is W_ih transposed. Init: each U(-b, b), b = sqrt(1 / H), drawn in the order W_ih,
    W_hh, bias_ih, bias_hh (init.rand, numpy's global RNG). X (bs, input), h (bs, H) or None
    (zeros). ValueError for shapes that do not fit.
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        _check_sizes(self, input_size, hidden_size)
        bound = math.sqrt(1.0 / hidden_size)
        width = 3 * hidden_size
        self.W_ih = _uniform(input_size, width, bound=bound, device=device, dtype=dtype)
        self.W_hh = _uniform(hidden_size, width, bound=bound, device=device, dtype=dtype)
        self.bias_ih = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None
        self.bias_hh = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None

    def forward(self, X: Tensor, h: Optional[Tensor] = None) -> Tensor:
        _check_input(self, X, 2, self.input_size, "(batch, input_size)")
        gi = X @ self.W_ih
        shape = gi.shape
        state_shape = (shape[0], self.hidden_size)
        if h is None:  # a missing state is zeros; W_hh still takes part (and gets a zero gradient)
            h = init.zeros(*state_shape, device=X.device, dtype=X.dtype)
        _check_state(self, "h", h, state_shape)
        if self.bias_ih is not None:
            gi = gi + _bias(self.bias_ih, shape)
        gh = h @ self.W_hh
        if self.bias_hh is not None:
            gh = gh + _bias(self.bias_hh, shape)
        i_r, i_z, i_n = ops.split(gi.reshape((shape[0], 3, self.hidden_size)), 1)
        h_r, h_z, h_n = ops.split(gh.reshape((shape[0], 3, self.hidden_size)), 1)
        r, z = ops.sigmoid(i_r + h_r), ops.sigmoid(i_z + h_z)
        n = ops.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h


class GRU(Module):
    """Multi-layer GRU (torch.nn.GRU's formulas, see GRUCell), in the course's layout and order of
    arguments like LSTM: GRU(input_size, hidden_size, num_layers=1, bias=True, device, dtype, *,
    batch_first=False, dropout=0.0). Attribute `gru_cells` (one GRUCell per layer; PyTorch's
    `weight_ih_l{k}` is gru_cells[k].W_ih transposed, needle.interop maps them).

    X (seq_len, bs, input) (or (bs, seq_len, input) with batch_first), h0 (num_layers, bs, H) or
    None. Returns (output (seq_len, bs, H) of the last layer (batch first with batch_first),
    h_n (num_layers, bs, H)). dropout: between stacked layers, in training (module docstring).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None, dtype="float32", *,
                 batch_first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        _stack_options(self, num_layers, batch_first, dropout)
        self.gru_cells = [
            GRUCell(input_size if layer == 0 else hidden_size, hidden_size, bias, device, dtype)
            for layer in range(num_layers)
        ]

    def forward(self, X: Tensor, h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return _unroll_single_state(self, self.gru_cells, X, h0)


def _unroll_single_state(module: Union[RNN, GRU], cells, X: Tensor, h0: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """RNN's and GRU's forward: the stacked cells over the sequence, one hidden state per layer;
    returns (outputs of the last layer, final states (num_layers, batch, hidden))."""
    X = _sequence_input(module, X)
    num_layers = module.num_layers
    if h0 is not None:
        _check_state(module, "h0", h0, (num_layers, X.shape[1], module.hidden_size))
    states: List[Optional[Tensor]] = list(ops.split(h0, 0)) if h0 is not None else [None] * num_layers
    outputs = []
    for x_t in ops.split(X, 0):
        for layer, cell in enumerate(cells):
            states[layer] = x_t = cell(_between_layers(module, x_t, layer), states[layer])
        outputs.append(x_t)
    return _sequence_output(module, outputs), ops.stack(states, 0)


class Embedding(Module):
    """Lookup table: ids (seq_len, bs) -> vectors (seq_len, bs, embedding_dim); weight ~ N(0, 1).

    padding_idx (keyword, PyTorch's): that row starts as zeros and gets no gradient (its value is
    still looked up); a negative one counts from the end. F.embedding's lookup.
    """

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32", *,
                 padding_idx: Optional[int] = None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = F._padding_index(padding_idx, num_embeddings, f"Embedding({num_embeddings}, "
                                                                          f"{embedding_dim})")
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype))
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

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
        # also a 0-d id, float ids that are not whole, and again at each replay of a compiled step
        ops.check_ids(x, self.num_embeddings, f"Embedding({self.num_embeddings}, {self.embedding_dim})")
        return F._lookup(x, self.weight, getattr(self, "padding_idx", None))
