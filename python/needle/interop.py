"""Weights to and from PyTorch: `from_torch(module, state_dict)` and `to_torch(module)`.

needle and PyTorch name and lay out the same layers differently:

| needle                                   | PyTorch                                          |
|------------------------------------------|--------------------------------------------------|
| Sequential `modules.0.weight`            | `0.weight`                                       |
| Linear weight (in, out), bias (1, out)   | weight (out, in), bias (out,)                    |
| Conv weight (k, k, in, out) (NHWC ops)   | Conv2d weight (out, in, k, k)                    |
| LSTM/RNN `lstm_cells.l.W_ih` (in, 4H)... | `weight_ih_l{l}` (4H, in), `weight_hh_l{l}`, ...  |
| LSTMCell/RNNCell `W_ih` (in, 4H)         | `weight_ih` (4H, in), `weight_hh`, ...           |
| BatchNorm1d/2d (no step counter)         | + `num_batches_tracked`                          |
| AttentionLayer q/k/v/out projections     | `attn.in_proj_weight` (3E, E), `attn.out_proj.weight` (E, E) |

Names follow the module tree: a layer at attribute path `a.b` in needle is `a.b` in the
PyTorch twin, except that a Sequential's `modules` step disappears (PyTorch's Sequential
numbers its children directly). Embedding, LayerNorm1d and plain tensors keep their
names and layouts. An AttentionLayer's PyTorch twin holds its three LayerNorms under the
same names and a `torch.nn.MultiheadAttention(E, heads, bias=False)` called `attn`
(needs num_head * dim_head == E, as PyTorch's does).

PyTorch is only needed to produce torch tensors (`to_torch`); `from_torch` takes a dict of
torch tensors (or anything with `.detach().cpu().numpy()` / numpy arrays), or the path of
a safetensors file written by `safetensors.torch`. Every key and shape is checked before
anything changes; a mismatch names the key and both shapes.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from .autograd import Tensor
from .nn.nn_basic import BatchNorm1d, LayerNorm1d, Linear, Module, Sequential
from .nn.nn_conv import Conv
from .nn.nn_sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell
from .nn.nn_transformer import AttentionLayer

__all__ = ["from_torch", "to_torch", "torch_state_dict_arrays"]

# one entry of a layer's conversion: torch key suffix, the needle tensors it covers,
# needle arrays -> torch array, torch array -> needle arrays
Pair = Tuple[str, List[Tensor], Callable[[List[np.ndarray]], np.ndarray], Callable[[np.ndarray], List[np.ndarray]]]


def _same(t: Tensor, name: str) -> Pair:
    return name, [t], lambda a: a[0], lambda a: [a]


def _transposed(t: Tensor, name: str) -> Pair:
    return name, [t], lambda a: a[0].T, lambda a: [a.T]


def _flat_bias(t: Tensor, name: str) -> Pair:
    shape = t.shape
    return name, [t], lambda a: a[0].reshape(-1), lambda a: [a.reshape(shape)]


def _linear(m: Linear) -> List[Pair]:
    pairs = [_transposed(m.weight, "weight")]
    if m.bias is not None:
        pairs.append(_flat_bias(m.bias, "bias"))
    return pairs


def _conv(m: Conv) -> List[Pair]:
    pairs = [("weight", [m.weight], lambda a: a[0].transpose(3, 2, 0, 1), lambda a: [a.transpose(2, 3, 1, 0)])]
    if m.bias is not None:
        pairs.append(_flat_bias(m.bias, "bias"))
    return pairs


def _cell(cell, suffix: str) -> List[Pair]:
    pairs = [_transposed(cell.W_ih, "weight_ih" + suffix), _transposed(cell.W_hh, "weight_hh" + suffix)]
    if cell.bias_ih is not None:
        pairs += [_same(cell.bias_ih, "bias_ih" + suffix), _same(cell.bias_hh, "bias_hh" + suffix)]
    return pairs


def _recurrent(m) -> List[Pair]:
    cells = m.lstm_cells if isinstance(m, LSTM) else m.rnn_cells
    return [p for layer, cell in enumerate(cells) for p in _cell(cell, f"_l{layer}")]


def _batch_norm(m: BatchNorm1d) -> List[Pair]:
    # PyTorch counts batches; needle's momentum update does not need the count
    counter = ("num_batches_tracked", [], lambda a: np.zeros((), np.int64), lambda a: [])
    return [_same(m.weight, "weight"), _same(m.bias, "bias"), _same(m.running_mean, "running_mean"),
            _same(m.running_var, "running_var"), counter]


def _attention(m: AttentionLayer) -> List[Pair]:
    inner = m.num_head * m.dim_head
    if not (inner == m.q_features == m.k_features == m.v_features == m.out_features):
        raise ValueError(f"AttentionLayer with q/k/v/out features {m.q_features}/{m.k_features}/{m.v_features}/"
                         f"{m.out_features} and {m.num_head} heads of {m.dim_head} has no torch.nn."
                         "MultiheadAttention twin (that needs all of them equal to num_head * dim_head)")
    projections = [m.q_projection.weight, m.k_projection.weight, m.v_projection.weight]
    pairs = [("attn.in_proj_weight", projections, lambda a: np.concatenate([w.T for w in a], axis=0),
              lambda a: [w.T for w in np.split(a, 3, axis=0)]),
             _transposed(m.out_projection.weight, "attn.out_proj.weight")]
    for norm in ("prenorm_q", "prenorm_k", "prenorm_v"):
        layer = getattr(m, norm)
        pairs += [_same(layer.weight, f"{norm}.weight"), _same(layer.bias, f"{norm}.bias")]
    return pairs


_CONVERTERS: List[Tuple[type, Callable[[Any], List[Pair]]]] = [
    (Linear, _linear), (Conv, _conv), (LSTM, _recurrent), (RNN, _recurrent),
    (LSTMCell, lambda m: _cell(m, "")), (RNNCell, lambda m: _cell(m, "")), (BatchNorm1d, _batch_norm),
    (LayerNorm1d, lambda m: [_same(m.weight, "weight"), _same(m.bias, "bias")]),
    (Embedding, lambda m: [_same(m.weight, "weight")]), (AttentionLayer, _attention),
]


def _converter(module):
    for cls, make in _CONVERTERS:  # BatchNorm2d is a BatchNorm1d: subclasses share their base's
        if isinstance(module, cls):
            return make
    return None


def _pairs(module: Module) -> List[Pair]:
    """Every (torch key, needle tensors, converters) of a module, keys with their full prefix."""
    out: List[Pair] = []

    def walk(value, prefix: str):
        if isinstance(value, Module):
            make = _converter(value)
            if make is not None:
                for key, tensors, forward, backward in make(value):
                    out.append((prefix + key, tensors, forward, backward))
                return
            for name, item in value.__dict__.items():
                # a Sequential's children are numbered directly in PyTorch: no "modules." step
                step = "" if isinstance(value, Sequential) and name == "modules" else name + "."
                walk(item, prefix + step)
        elif isinstance(value, Tensor):
            out.append(_same(value, prefix[:-1]))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{prefix}{i}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")

    walk(module, "")
    return [p for p in out if not p[0].endswith(".") and p[0]]


def torch_state_dict_arrays(module: Module) -> Dict[str, np.ndarray]:
    """The module's weights under PyTorch's names and layouts, as numpy arrays."""
    return {key: np.ascontiguousarray(forward([t.numpy() for t in tensors]))
            for key, tensors, forward, _ in _pairs(module)}


def to_torch(module: Module) -> Dict[str, Any]:
    """A PyTorch state_dict (torch tensors) for the PyTorch twin of `module` (see the module
    docstring for names and layouts); load it with `twin.load_state_dict(...)`."""
    try:
        import torch
    except ImportError:
        raise ImportError("needle.interop.to_torch makes torch tensors: pip install torch") from None
    return {key: torch.from_numpy(array.copy()) for key, array in torch_state_dict_arrays(module).items()}


def _as_numpy(value, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if isinstance(value, Tensor):
        return value.numpy()
    raise TypeError(f"from_torch: {key!r} holds a {type(value).__name__}, not a tensor")


def from_torch(module: Module, state_dict, strict: bool = True) -> Module:
    """Load a PyTorch state_dict (a dict of torch tensors, or a safetensors file path) into the
    needle `module`, converting names and layouts; returns the module.

    Raises ValueError naming the key for a missing or unexpected key (strict) or a shape
    that does not fit (with the PyTorch shape and the one expected), before changing anything.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        from .serialization import read_safetensors

        state_dict = read_safetensors(str(state_dict))[0]
    arrays = {key: _as_numpy(value, key) for key, value in state_dict.items()}
    pairs = _pairs(module)
    expected = {key for key, *_ in pairs}
    missing = sorted(k for k in expected if k not in arrays and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in arrays if k not in expected)
    if strict and (missing or unexpected):
        parts = ([f"missing keys {missing}"] if missing else []) + ([f"unexpected keys {unexpected}"] if unexpected
                                                                     else [])
        raise ValueError("from_torch: " + "; ".join(parts))
    updates = []
    for key, tensors, forward, backward in pairs:
        if key not in arrays or not tensors:
            continue
        wanted = forward([np.zeros(t.shape, np.float32) for t in tensors]).shape
        if tuple(arrays[key].shape) != tuple(wanted):
            raise ValueError(f"from_torch: {key!r} has shape {tuple(arrays[key].shape)} in the state_dict, "
                             f"the needle module needs {tuple(wanted)}")
        for t, array in zip(tensors, backward(arrays[key])):
            updates.append((t, array))
    for t, array in updates:
        t.copy_(Tensor(np.ascontiguousarray(array), device=t.device, dtype=t.dtype, requires_grad=False))
    return module
