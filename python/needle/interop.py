"""Weights to and from PyTorch: `from_torch(module, state_dict)` and `to_torch(module)`.

needle and PyTorch name and lay out the same layers differently:

| needle                                   | PyTorch                                          |
|------------------------------------------|--------------------------------------------------|
| Linear weight (in, out), bias (1, out)   | weight (out, in), bias (out,)                    |
| Conv weight (k, k, in, out) (NHWC ops)   | Conv2d weight (out, in, k, k)                    |
| Conv2d / Conv1d weight, bias             | the same layout (out, in/groups, kH, kW), (out,) |
| ConvTranspose2d weight, bias             | the same layout (in, out/groups, kH, kW), (out,) |
| LSTM/RNN `lstm_cells.l.W_ih` (in, 4H)... | `weight_ih_l{l}` (4H, in), `weight_hh_l{l}`, ...  |
| GRU `gru_cells.l.W_ih` (in, 3H), r z n   | `weight_ih_l{l}` (3H, in), gates r, z, n, ...    |
| LSTMCell/RNNCell/GRUCell `W_ih` (in, 4H) | `weight_ih` (4H, in), `weight_hh`, ...           |
| LayerNorm weight, bias (normalized_shape)| the same                                         |
| BatchNorm1d/2d (no step counter)         | + `num_batches_tracked`                          |
| AttentionLayer q/k/v/out projections     | `attn.in_proj_weight` (3E, E), `attn.out_proj.weight` (E, E) |

Names follow the module tree: a layer at attribute path `a.b` in needle is `a.b` in the
PyTorch twin (a Sequential's or ModuleList's layers are `0`, `1`, ... in both), as
state_dict() names it. Embedding, LayerNorm1d and plain tensors keep their names and
layouts. An AttentionLayer's PyTorch twin holds its three LayerNorms under the
same names and a `torch.nn.MultiheadAttention(E, heads, bias=False)` called `attn`
(needs num_head * dim_head == E, as PyTorch's does).

A module may declare weights that one tensor serves under several torch keys with a
`tied_weights()` method ({torch key: tensor}; GPT's `lm_head.weight` is its token
embedding): `to_torch` writes every key, `from_torch` requires them equal. A state dict
saved from a `torch.compile`d module (keys prefixed `_orig_mod.`) loads as the module's.

PyTorch is only needed to produce torch tensors (`to_torch`); `from_torch` takes a dict of
torch tensors (or anything with `.detach().cpu().numpy()` / numpy arrays), the path of
a safetensors file written by `safetensors.torch`, or a torch module. Every key and shape
is checked before anything changes; a mismatch names the key and both shapes.

Convolutions compute with settings that weights do not show. Given a torch *module* (to
`from_torch`, or as `twin` to `to_torch`), every needle Conv, Conv2d, Conv1d and
ConvTranspose2d is checked against the torch module at its path: the class (Conv2d for Conv
and Conv2d, Conv1d for Conv1d, ConvTranspose2d for ConvTranspose2d), kernel size, stride, the
padding each side gets (torch's 'same' and needle's k // 2 agree for odd kernels), dilation,
groups, padding mode and (transposed) output_padding must be the ones the needle module
computes with, or a ValueError names the module, the torch setting and the needle one. The
course's nn.Conv is same-padded (k // 2), stride-only, so it takes exactly the torch
Conv2d(in, out, k, stride, padding=k // 2). Given only a state dict or a file, shapes
are all that can be checked: a Conv2d with another padding, stride or dilation (or a
ConvTranspose2d with a square weight) loads silently and computes something else.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._packaging import install_hint
from .autograd import Tensor, no_grad
from .nn import functional as F
from .nn.nn_basic import BatchNorm1d, LayerNorm1d, Linear, Module, Parameter
from .nn.nn_conv import Conv, Conv1d, Conv2d, ConvTranspose2d
from .nn.nn_sequence import GRU, LSTM, RNN, Embedding, GRUCell, LSTMCell, RNNCell
from .nn.nn_transformer import AttentionLayer

__all__ = ["from_torch", "to_torch", "torch_state_dict_arrays"]

_COMPILED_PREFIX = "_orig_mod."  # what torch.compile's OptimizedModule puts before every key

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


def _same_layout(m) -> List[Pair]:
    pairs = [_same(m.weight, "weight")]
    if m.bias is not None:
        pairs.append(_same(m.bias, "bias"))
    return pairs


def _cell(cell, suffix: str) -> List[Pair]:
    pairs = [_transposed(cell.W_ih, "weight_ih" + suffix), _transposed(cell.W_hh, "weight_hh" + suffix)]
    if cell.bias_ih is not None:
        pairs += [_same(cell.bias_ih, "bias_ih" + suffix), _same(cell.bias_hh, "bias_hh" + suffix)]
    return pairs


def _recurrent(m) -> List[Pair]:
    cells = m.lstm_cells if isinstance(m, LSTM) else m.gru_cells if isinstance(m, GRU) else m.rnn_cells
    return [p for layer, cell in enumerate(cells) for p in _cell(cell, f"_l{layer}")]


def _batch_norm(m: BatchNorm1d) -> List[Pair]:
    # PyTorch counts batches; needle's momentum update does not need the count
    counter: Pair = ("num_batches_tracked", [], lambda a: np.zeros((), np.int64), lambda a: [])
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
    (Linear, _linear), (Conv, _conv), (Conv2d, _same_layout), (Conv1d, _same_layout), (ConvTranspose2d, _same_layout),
    (LSTM, _recurrent), (RNN, _recurrent), (GRU, _recurrent),
    (LSTMCell, lambda m: _cell(m, "")), (RNNCell, lambda m: _cell(m, "")), (GRUCell, lambda m: _cell(m, "")),
    (BatchNorm1d, _batch_norm),
    (LayerNorm1d, lambda m: [_same(m.weight, "weight"), _same(m.bias, "bias")]),
    (Embedding, lambda m: [_same(m.weight, "weight")]), (AttentionLayer, _attention),
]


def _converter(module):
    for cls, make in _CONVERTERS:  # BatchNorm2d is a BatchNorm1d: subclasses share their base's
        if isinstance(module, cls):
            return make
    return None


def _pairs(module: Module, converted: Optional[List[Tuple[str, Module]]] = None) -> List[Pair]:
    """Every (torch key, needle tensors, converters) of a module, keys with their full prefix;
    the modules with a converter are appended to `converted` as (path, module) if given."""
    out: List[Pair] = []

    def walk(value: Module, prefix: str) -> None:
        make = _converter(value)
        if make is not None:
            if converted is not None:
                converted.append((prefix[:-1], value))
            for key, tensors, forward, backward in make(value):
                out.append((prefix + key, tensors, forward, backward))
            return
        # the module's own naming: a Sequential's or ModuleList's layers are 0, 1, ... as in PyTorch
        for attr, name, item in value._members():
            if isinstance(item, Module):
                walk(item, prefix + name + ".")
            elif value._persistent(attr) or isinstance(item, Parameter):  # state_dict's entries only
                out.append(_same(item, prefix + name))

    walk(module, "")
    tied = getattr(module, "tied_weights", None)  # e.g. GPT: {"lm_head.weight": the token embedding}
    if callable(tied):
        out += [_same(t, key) for key, t in tied().items()]
    return [p for p in out if not p[0].endswith(".") and p[0]]


# --- convolution settings: what a torch module computes with, next to the needle module's ----

def _sides_1d(padding, kernel: int, dilation: int) -> Tuple[int, int]:
    """conv1d's padding (an int, (p,), 'valid' or 'same') as (before, after), PyTorch's rule."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = dilation * (kernel - 1)
        return total // 2, total - total // 2
    (p,) = F._ints(padding, 1, "padding")
    return p, p


def _conv_settings(m) -> Tuple[str, Dict[str, Any]]:
    """(the torch class to expect, the settings) of a needle conv module, in torch's terms:
    kernel_size, stride, dilation as tuples, padding as (before, after) per axis, groups,
    padding_mode."""
    if isinstance(m, Conv):  # the course's: same-padded k // 2, square, stride only
        k, s, p = m.kernel_size, m.stride, m.padding
        return "Conv2d", dict(kernel_size=(k, k), stride=(s, s), padding=((p, p), (p, p)), dilation=(1, 1),
                              groups=1, padding_mode="zeros")
    if isinstance(m, Conv2d):
        pads = F._conv2d_pads(m.padding, m.kernel_size, m.stride, m.dilation, "Conv2d")
        return "Conv2d", dict(kernel_size=m.kernel_size, stride=m.stride, padding=pads, dilation=m.dilation,
                              groups=m.groups, padding_mode=m.padding_mode)
    if isinstance(m, ConvTranspose2d):
        return "ConvTranspose2d", dict(kernel_size=m.kernel_size, stride=m.stride,
                                       padding=tuple((p, p) for p in m.padding), dilation=m.dilation,
                                       groups=m.groups, padding_mode=m.padding_mode,
                                       output_padding=m.output_padding)
    return "Conv1d", dict(kernel_size=(m.kernel_size,), stride=(m.stride,), padding=((m.padding, m.padding),),
                          dilation=(1,), groups=1, padding_mode="zeros")


def _torch_conv_settings(t, dims: int) -> Dict[str, Any]:
    kernel, stride, dilation = tuple(t.kernel_size), tuple(t.stride), tuple(t.dilation)
    if getattr(t, "transposed", False):
        return dict(kernel_size=kernel, stride=stride, padding=tuple((p, p) for p in t.padding), dilation=dilation,
                    groups=t.groups, padding_mode=t.padding_mode, output_padding=tuple(t.output_padding))
    pads: Tuple[Tuple[int, int], ...]
    if dims == 2:
        pads = F._conv2d_pads(t.padding if isinstance(t.padding, str) else tuple(t.padding), kernel, stride,
                              dilation, "torch Conv2d")
    else:
        pads = (_sides_1d(t.padding if isinstance(t.padding, str) else tuple(t.padding), kernel[0], dilation[0]),)
    return dict(kernel_size=kernel, stride=stride, padding=pads, dilation=dilation, groups=t.groups,
                padding_mode=t.padding_mode)


def _check_conv_settings(converted: List[Tuple[str, Module]], torch_module, what: str) -> None:
    """ValueError unless every needle conv in `converted` computes with the settings of the torch
    module at its path (see the module docstring); paths the torch tree lacks are skipped (their
    keys are checked as keys)."""
    import torch

    twins = dict(torch_module.named_modules())
    for path, m in converted:
        if not isinstance(m, (Conv, Conv1d, Conv2d, ConvTranspose2d)) or path not in twins:
            continue
        t = twins[path]
        name = f"{what}: module {path or '(root)'!r} (needle {type(m).__name__})"
        cls, mine = _conv_settings(m)
        torch_cls = getattr(torch.nn, cls)
        if not isinstance(t, torch_cls):  # ConvTranspose2d is not a Conv2d
            raise ValueError(f"{name}: the torch module there is a {type(t).__name__}, needle computes a "
                             f"torch.nn.{cls}")
        theirs = _torch_conv_settings(t, 1 if cls == "Conv1d" else 2)
        for key, value in mine.items():
            if theirs[key] == value:
                continue
            if key != "padding":
                raise ValueError(f"{name}: the torch {type(t).__name__} has {key}={theirs[key]!r}, the needle module "
                                 f"computes with {key}={value!r}; loading it would change the output")
            course = " (nn.Conv is same-padded: kernel_size // 2 on each side)" if isinstance(m, Conv) else ""
            raise ValueError(f"{name}: the torch {type(t).__name__} has padding={t.padding!r}, i.e. (before, after) "
                             f"{theirs[key]} per axis, the needle module computes with {value}{course}; loading it "
                             "would change the output")


def _is_torch_module(value) -> bool:
    return hasattr(value, "state_dict") and hasattr(value, "named_modules") and callable(value.state_dict)


def torch_state_dict_arrays(module: Module, grads: bool = False) -> Dict[str, np.ndarray]:
    """The module's weights under PyTorch's names and layouts, as numpy arrays; with grads=True
    their `.grad`s instead, in the same names and layouts (to compare a training step with the
    PyTorch twin's, whose `named_parameters()` gives the same keys). ValueError names a key
    whose tensor has no gradient."""
    def arrays(key: str, tensors: List[Tensor]) -> List[np.ndarray]:
        if not grads:
            return [t.numpy() for t in tensors]
        out = []
        for t in tensors:
            if t.grad is None:
                raise ValueError(f"torch_state_dict_arrays: {key!r} has no gradient")
            out.append(t.grad.numpy())
        return out

    return {key: np.ascontiguousarray(forward(arrays(key, tensors)))
            for key, tensors, forward, _ in _pairs(module)
            if not grads or all(isinstance(t, Parameter) for t in tensors)}


def to_torch(module: Module, twin=None) -> Dict[str, Any]:
    """A PyTorch state_dict (torch tensors) for the PyTorch twin of `module` (see the module
    docstring for names and layouts); load it with `twin.load_state_dict(...)`.

    With `twin` (a torch module) the convolutions' settings are checked against it first (a
    ValueError names the first that differs, see the module docstring), and the state dict
    is loaded into it (strict); the state dict is returned either way.
    """
    try:
        import torch
    except ImportError:
        raise ImportError(f"needle.interop.to_torch makes torch tensors: {install_hint(package='torch')}") from None
    if twin is not None:
        if not _is_torch_module(twin):
            raise TypeError(f"to_torch: twin must be a torch module, got {type(twin).__name__}")
        converted: List[Tuple[str, Module]] = []
        _pairs(module, converted)
        _check_conv_settings(converted, twin, "to_torch")
    state = {key: torch.from_numpy(array.copy()) for key, array in torch_state_dict_arrays(module).items()}
    if twin is not None:
        twin.load_state_dict(state)
    return state


def _as_numpy(value, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if isinstance(value, Tensor):
        return value.numpy()
    raise TypeError(f"from_torch: {key!r} holds a {type(value).__name__}, not a tensor")


def from_torch(module: Module, state_dict, strict: bool = True) -> Module:
    """Load a PyTorch state_dict (a dict of torch tensors, a safetensors file path, or a torch
    module, whose state_dict is taken) into the needle `module`, converting names and layouts;
    returns the module.

    Raises ValueError naming the key for a missing or unexpected key (strict) or a shape
    that does not fit (with the PyTorch shape and the one expected), before changing anything.
    Given a torch module, also ValueError for a convolution whose settings (class, kernel,
    stride, padding, dilation, groups, padding_mode) differ from the needle module's, naming
    both; given a state dict or a file, only names and shapes can be checked.
    """
    converted: List[Tuple[str, Module]] = []
    if _is_torch_module(state_dict):
        _pairs(module, converted)
        _check_conv_settings(converted, state_dict, "from_torch")
        state_dict = state_dict.state_dict()
    if isinstance(state_dict, (str, os.PathLike)):
        from .serialization import read_safetensors

        state_dict = read_safetensors(str(state_dict))[0]
    arrays = {key: _as_numpy(value, key) for key, value in state_dict.items()}
    if arrays and all(key.startswith(_COMPILED_PREFIX) for key in arrays):  # saved from torch.compile's wrapper
        arrays = {key[len(_COMPILED_PREFIX):]: value for key, value in arrays.items()}
    pairs = _pairs(module)
    expected = {key for key, *_ in pairs}
    missing = sorted(k for k in expected if k not in arrays and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in arrays if k not in expected)
    if strict and (missing or unexpected):
        parts = ([f"missing keys {missing}"] if missing else []) + ([f"unexpected keys {unexpected}"] if unexpected
                                                                     else [])
        raise ValueError("from_torch: " + "; ".join(parts))
    updates: List[Tuple[Tensor, np.ndarray]] = []
    sources: Dict[int, str] = {}  # a tensor two keys load (a tied weight): both must agree
    for key, tensors, forward, backward in pairs:
        if key not in arrays or not tensors:
            continue
        wanted = forward([np.zeros(t.shape, np.float32) for t in tensors]).shape
        if tuple(arrays[key].shape) != tuple(wanted):
            raise ValueError(f"from_torch: {key!r} has shape {tuple(arrays[key].shape)} in the state_dict, "
                             f"the needle module needs {tuple(wanted)}")
        for t, array in zip(tensors, backward(arrays[key])):
            first = sources.setdefault(id(t), key)
            if first != key:
                earlier = next(a for u, a in updates if u is t)
                if not np.array_equal(earlier, array):
                    raise ValueError(f"from_torch: {key!r} and {first!r} differ, but the needle module ties them "
                                     "(one tensor for both)")
                continue
            updates.append((t, array))
    with no_grad():  # parameters are written in place, outside the graph
        for t, array in updates:
            t.copy_(Tensor(np.ascontiguousarray(array), device=t.device, dtype=t.dtype, requires_grad=False))
    return module
