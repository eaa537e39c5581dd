"""needle.nn.functional: the layers as functions, with PyTorch's signatures and semantics.

    import needle.nn.functional as F
    y = F.conv2d(x, w, b, stride=1, padding=1)   # as torch.nn.functional.conv2d(x, w, b, 1, 1)

Layouts are PyTorch's at this boundary: images NCHW, sequences NCL, and weights in
PyTorch's layout, so a torch state dict's tensors can be passed as they are:
linear's weight is (out, in), conv2d's (Cout, Cin, KH, KW), conv1d's (Cout, Cin, K).
(needle's own modules keep the course's layouts: nn.Linear stores (in, out) and nn.Conv
(K, K, Cin, Cout); nn.Conv1d stores PyTorch's (Cout, Cin, K).) Inside, images are moved
to NHWC, the layout of the ops (ops.conv, ops.max_pool2d, ...).

Every function is built from needle ops, so it is differentiable (to any order) on every
device and in numpy mode. Arguments that PyTorch takes after the tensors are keyword-only
here where a positional call could mean something else (torch's `weight`,
`size_average` and `reduce`, which needle does not offer). Bad shapes and flags raise
ValueError naming them; a non-float input to a float-only function raises TypeError.

Deliberate differences from PyTorch: softmax and log_softmax need `dim` (PyTorch's
implicit choice is deprecated); mse_loss does not broadcast mismatched shapes (PyTorch
warns and does); silu keeps sigmoid's accurate float32 tails; out-of-range class ids and
embedding ids raise ValueError (PyTorch: IndexError / RuntimeError); a conv2d, pad or
binary_cross_entropy argument PyTorch rejects with RuntimeError or NotImplementedError
raises ValueError. `inplace=True` (relu, leaky_relu, dropout, dropout2d) writes the input's
buffer, except where needle's autograd cannot move an already-consumed tensor: then the
result is computed out of place (see `_inplace`). Not offered: ceil_mode, dilation and
return_indices in pooling, groups, dilation and string paddings in conv1d (conv2d has them
all), embedding's max_norm, the `size_average`/`reduce` arguments of the losses.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Literal, Optional, Sequence, Tuple, Union, cast, overload

from needle import init, ops
from needle.autograd import Tensor, array_api

__all__ = [
    "softplus",
    "linear", "relu", "tanh", "sigmoid", "dropout", "batch_norm", "layer_norm", "conv2d", "conv1d", "max_pool2d",
    "avg_pool2d", "adaptive_avg_pool2d", "softmax", "log_softmax", "gelu", "silu", "leaky_relu", "mse_loss",
    "cross_entropy", "embedding", "one_hot",
    "dropout2d", "pad", "conv_transpose2d", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "scaled_dot_product_attention",
]

IntOrPair = Union[int, Tuple[int, int]]
IntOrInts = Union[int, Sequence[int]]  # an int or (h, w)
Padding2d = Union[str, int, Tuple[int, int]]
FLOATS = ("float32", "float64")
REDUCTIONS = ("mean", "sum", "none")


# --- checks ------------------------------------------------------------------------------------

def _tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a needle Tensor, got {type(x).__name__}")
    return x


def _float(x, name: str) -> Tensor:
    _tensor(x, name)
    if x.dtype not in FLOATS:
        raise TypeError(f"{name} needs a float tensor, got dtype {x.dtype}")
    return x


@overload
def _ints(value: Any, n: Literal[2], name: str) -> Tuple[int, int]: ...


@overload
def _ints(value: Any, n: int, name: str) -> Tuple[int, ...]: ...


def _ints(value: Any, n: int, name: str) -> Tuple[int, ...]:
    """An int, or a sequence of n ints, as a tuple of n ints (PyTorch's _pair / _single)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be an int or {n} ints, got {value!r}")
    return items


def _geometry(what: str, shape, spatial, kernel, stride, padding) -> None:
    """ValueError for stride < 1, padding < 0, a kernel < 1 or larger than the padded input,
    naming the input's shape in the caller's layout."""
    if min(stride) < 1 or min(padding) < 0 or min(kernel) < 1:
        raise ValueError(f"{what} needs kernel_size >= 1, stride >= 1 and padding >= 0, got kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}")
    if any(s + 2 * p < k for s, k, p in zip(spatial, kernel, padding)):
        raise ValueError(f"{what}: kernel {kernel} is larger than the padded input (input {shape}, padding {padding})")


def _reduction(reduction: str, what: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{what}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return ops.summation(loss) if reduction == "sum" else ops.mean(loss)


def _nchw(x: Tensor, what: str) -> Tuple[Tensor, bool]:
    """(N, C, H, W) input as NHWC, and whether it came unbatched as (C, H, W) (PyTorch accepts both)."""
    _float(x, what)
    if x.ndim not in (3, 4):
        raise ValueError(f"{what} expects input of shape (N, C, H, W) or (C, H, W), got {x.shape}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x.reshape((1,) + x.shape)
    return ops.permute(x, (0, 2, 3, 1)), unbatched


def _back_to_nchw(y: Tensor, unbatched: bool) -> Tensor:
    y = ops.permute(y, (0, 3, 1, 2))
    return y.reshape(y.shape[1:]) if unbatched else y


def _channel_bias(out: Tensor, bias: Optional[Tensor], axis: int, what: str) -> Tensor:
    """out + bias along the channel axis `axis` (bias of shape (C,))."""
    if bias is None:
        return out
    channels = out.shape[axis]
    if tuple(bias.shape) != (channels,):
        raise ValueError(f"{what}: bias of shape {bias.shape} for {channels} output channels")
    shape = [1] * out.ndim
    shape[axis] = channels
    return out + bias.reshape(tuple(shape)).broadcast_to(out.shape)


# --- linear layers and activations ---------------------------------------------------------------

def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """input @ weight^T + bias, PyTorch's layout: input (..., in), weight (out, in), bias (out,)."""
    _tensor(input, "linear")
    if weight.ndim != 2 or not input.shape or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} and weight of shape {weight.shape} "
                         f"(expected (..., in) and (out, in))")
    out = ops.matmul(input, ops.transpose(weight))
    return _channel_bias(out, bias, out.ndim - 1, "linear")


def _inplace(input: Tensor, fn: Callable[[Tensor], Tensor], inplace: bool, what: str, one_op: bool = False) -> Tensor:
    """fn(input); with inplace=True written into input's own buffer and returned as input itself
    (PyTorch's inplace=True), recorded for autograd like Tensor.copy_: input takes the result's
    place in the graph. A Parameter that requires grad is refused (RuntimeError, PyTorch's rule for
    a leaf). needle cannot move a tensor that an op has already taken as input (or a view of
    another tensor's memory) to a new place in the graph while gradients are recorded: then the
    result is computed out of place and returned, and input keeps its values, so code that uses
    the returned tensor (x = relu(x), nn.ReLU(inplace=True) in a Sequential) works either way."""
    if not inplace:
        return fn(input)
    try:
        tracked = input._inplace_begins(what)
    except RuntimeError:
        if input.op is None and getattr(type(input), "_refuses_inplace", False):
            raise
        return fn(input)
    return input._inplace_ends(what, fn(input._inplace_source(tracked)), tracked)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0) elementwise (gradient 0 at 0, as PyTorch); inplace=True writes the input (see _inplace)."""
    return _inplace(_tensor(input, "relu"), ops.relu, inplace, "relu", one_op=True)


def tanh(input: Tensor) -> Tensor:
    """tanh elementwise."""
    return ops.tanh(input)


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)) elementwise, accurate in both tails (ops.sigmoid)."""
    return ops.sigmoid(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU, PyTorch's two forms: 'none' (default) is exact, x/2 (1 + erf(x / sqrt 2)), with erf
    computed to float64 precision (ops.erf); 'tanh' is x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    The exact form costs some sixty elementwise passes (erf is a composition, see ops.special),
    the tanh form ten: prefer 'tanh' where eager speed on large activations matters."""
    _float(input, "gelu")
    if approximate == "none":
        return input * 0.5 * (ops.erf(input * (1 / math.sqrt(2))) + 1.0)
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2 / math.pi)
        return input * 0.5 * (ops.tanh(inner) + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x) (SiLU, a.k.a. swish). needle's sigmoid is accurate in its tails, so float32
    silu(-100) is -3.8e-42 where PyTorch's x / (1 + exp(-x)) gives -0."""
    _float(input, "silu")
    return input * ops.sigmoid(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x; the gradient at 0 is negative_slope (PyTorch's).
    inplace=True writes the input (see relu)."""
    _float(input, "leaky_relu")
    return _inplace(input, lambda x: ops.where(x > 0, x, x * negative_slope), inplace, "leaky_relu")


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold (PyTorch's). A composite: each
    side of 0 takes the form that neither overflows nor cancels, z + log1p(exp(-z)) above and
    log1p(exp(z)) below, on its own clamped input, so the gradient is sigmoid(beta x) everywhere,
    0.5 at 0 included."""
    _float(input, "softplus")
    z = input * beta if beta != 1 else input
    above = z > 0
    upper, lower = ops.where(above, z, 0.0), ops.where(above, 0.0, z)
    soft = ops.where(above, upper + ops.log1p(ops.exp(-upper)), ops.log1p(ops.exp(lower)))
    if beta != 1:
        soft = soft / beta
    return ops.where(z > threshold, input, soft)


def softmax(input: Tensor, dim: int) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim`, stabilised by the maximum."""
    return ops.softmax(_float(input, "softmax"), axis=dim)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """x - logsumexp(x) along `dim`, computed as (x - max) - log(sum(exp(x - max)))."""
    return ops.logsoftmax(_float(input, "log_softmax"), axis=dim)


def _masked(input: Tensor, mask_shape: Tuple[int, ...], p: float) -> Tensor:
    """input times a Bernoulli(1 - p) mask of mask_shape (broadcast), scaled by 1 / (1 - p)."""
    mask = init.randb(*mask_shape, p=1 - p, device=input.device, dtype=input.dtype)
    if tuple(mask_shape) != tuple(input.shape):
        mask = mask.broadcast_to(input.shape)
    return input * mask if p == 1 else input * mask / (1 - p)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Training: zero each element with probability p, scale the rest by 1/(1-p); identity otherwise.
    PyTorch's default training=True. Draws from numpy's global RNG, like nn.Dropout. inplace=True
    writes the input (see relu)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    return _inplace(input, lambda x: _masked(x, x.shape, p), inplace, "dropout")


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Channel dropout, PyTorch's dropout2d: in training, each channel of each sample (a whole
    (H, W) plane of (N, C, H, W) input) is zeroed with probability p and the others are scaled by
    1 / (1 - p); identity otherwise. A 3-D input is taken as (N, C, L), one mask entry per (n, c),
    as PyTorch 2 does (it warns that this will change). Draws one (N, C) mask from numpy's global
    RNG. ValueError for p outside [0, 1] or an input that is not 3-D or 4-D."""
    _tensor(input, "dropout2d")
    if not 0 <= p <= 1:
        raise ValueError(f"dropout2d probability must be in [0, 1], got {p}")
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d expects input of shape (N, C, H, W) or (N, C, L), got {input.shape}")
    if not training or p == 0:
        return input
    shape = input.shape[:2] + (1,) * (input.ndim - 2)
    return _inplace(input, lambda x: _masked(x, shape, p), inplace, "dropout2d")


# --- normalisation ---------------------------------------------------------------------------

def _channels_last(x: Tensor) -> Tuple[Tensor, tuple]:
    """(N, C, *) -> (N * prod(*), C), and the permuted shape to undo it with."""
    if x.ndim == 2:
        return x, x.shape
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    moved = ops.permute(x, perm)
    return moved.reshape((-1, x.shape[1])), moved.shape


def _channels_back(y: Tensor, moved_shape: tuple, ndim: int) -> Tensor:
    if ndim == 2:
        return y
    return ops.permute(y.reshape(moved_shape), (0, ndim - 1) + tuple(range(1, ndim - 1)))


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, unbiased_running_var: bool = True) -> Tensor:
    """Batch normalisation over the channel axis 1 of (N, C) or (N, C, *) input, as PyTorch's.

    Training: normalise with the batch's mean and biased variance, and update the running
    statistics in place (when given) as running <- (1 - momentum) running + momentum batch,
    with the batch's mean and its *unbiased* variance (PyTorch's rule; it needs more than one
    value per channel). unbiased_running_var=False keeps the biased variance instead (the
    course's BatchNorm1d, which nn.BatchNorm1d/2d follow; any batch size). Evaluation:
    normalise with the running statistics. weight and bias (C,) default to 1 and 0.
    """
    _float(input, "batch_norm")
    if input.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C) or (N, C, *), got {input.shape}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} of shape {t.shape} for input of shape {input.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    rows, moved = _channels_last(input)
    count = rows.shape[0]
    weight = init.ones(channels, device=input.device, dtype=input.dtype) if weight is None else weight
    bias = init.zeros(channels, device=input.device, dtype=input.dtype) if bias is None else bias
    if training:
        if count < 2 and unbiased_running_var:
            raise ValueError(f"batch_norm: training needs more than one value per channel, got input {input.shape}")
        out, mean, var = ops.batch_norm(rows, weight, bias, eps)
        batch_var = var.data * (count / (count - 1)) if unbiased_running_var else var.data
        for running, batch in ((running_mean, mean.data), (running_var, batch_var)):
            if running is not None:  # in place and outside the graph, in the running statistic's dtype
                # running * (1 - momentum) + batch * momentum: the array operations of those Tensor ops
                # (no graph is kept), three calls where the ops cost ~20 us a statistic in every step
                api: Any = array_api  # (its elementwise functions are installed at import, unseen by mypy)
                new = api.add(api.multiply(running.realize_cached_data(), 1 - momentum),
                              api.multiply(batch.realize_cached_data(), momentum))
                running.copy_(Tensor.make_const(new))
    else:
        shape = rows.shape
        # (evaluation has both running statistics: checked above)
        running_mean, running_var = cast(Tensor, running_mean), cast(Tensor, running_var)
        centered = rows - running_mean.reshape((1, channels)).broadcast_to(shape)
        normed = centered / ((running_var + eps) ** 0.5).reshape((1, channels)).broadcast_to(shape)
        out = normed * weight.reshape((1, channels)).broadcast_to(shape) + bias.reshape((1, channels)).broadcast_to(
            shape)
    return _channels_back(out, moved, input.ndim)


def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing `normalized_shape` axes (biased variance), then scale by weight
    and shift by bias (both of shape normalized_shape), as PyTorch's layer_norm."""
    _float(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing axes of input "
                         f"{input.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name} of shape {t.shape} for normalized_shape {shape}")
    if k == 1 and weight is not None and bias is not None and weight.dtype == bias.dtype == input.dtype \
            and weight.device == bias.device == input.device and input is not weight and input is not bias:
        # one op (its gradient one node), with the bits of the Tensor ops below (a tensor that is
        # both the input and the weight or bias would get its partial adjoints in another order)
        return ops.tuple_get_item(ops.LayerNorm(eps)(input, weight, bias), 0)
    return ops.layer_norm_formula(input, weight, bias, eps, k)[0]


# --- convolution and pooling -------------------------------------------------------------------

def _conv2d_pads(padding: Padding2d, kernel: Tuple[int, ...], stride: Tuple[int, ...],
                 dilation: Tuple[int, ...], what: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """conv2d's padding as ((top, bottom), (left, right)), PyTorch's rules: an int or (h, w) pads
    both sides alike, 'valid' is 0, 'same' keeps the size (stride 1 only) by padding
    dilation * (kernel - 1) in all, half of it (rounded down) before and the rest after."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{what}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
        if stride != (1, 1):
            raise ValueError(f"{what}: padding='same' is not supported for strided convolutions (stride={stride})")
        th, tw = (d * (k - 1) for k, d in zip(kernel, dilation))
        return (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
    ph, pw = _ints(padding, 2, f"{what} padding")
    return (ph, ph), (pw, pw)


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _mode_rows(size: int, before: int, after: int, mode: str, what: str, key: str = "padding_mode") -> list:
    """The source row of each of the size + before + after rows of a `mode` padding along one axis
    (PyTorch's F.pad modes 'reflect', 'replicate', 'circular'; before, after >= 0; the index
    arithmetic is host work on the geometry, never on the data)."""
    if mode == "reflect" and max(before, after) >= size:
        raise ValueError(f"{what}: {key}='reflect' needs padding < the input size, got padding "
                         f"({before}, {after}) for size {size}")
    if mode == "circular" and max(before, after) > size:
        raise ValueError(f"{what}: {key}='circular' needs padding <= the input size, got padding "
                         f"({before}, {after}) for size {size}")
    if mode == "replicate" and size < 1:
        raise ValueError(f"{what}: {key}='replicate' needs a non-empty axis to copy from")
    rows = []
    for i in range(-before, size + after):
        if mode == "reflect":
            rows.append(-i if i < 0 else (2 * (size - 1) - i if i >= size else i))
        elif mode == "replicate":
            rows.append(min(max(i, 0), size - 1))
        else:
            rows.append(i % size)
    return rows


def _gather_pad(input: Tensor, sides: Sequence[Tuple[int, int, int]], mode: str, what: str, key: str) -> Tensor:
    """input padded by (axis, before, after) in `mode` ('reflect', 'replicate' or 'circular'): rows
    gathered by index along each axis, so the gradient (GetItem's scatter-add) sums back into the
    rows they were copied from."""
    out = input
    for axis, before, after in sides:
        if before or after:
            # a negative side crops first, and the padding copies from what is left (PyTorch's order)
            start, kept = max(-before, 0), out.shape[axis] + min(before, 0) + min(after, 0)
            rows = [start + r for r in _mode_rows(kept, max(before, 0), max(after, 0), mode, what, key)]
            with array_api.constant_data():  # a function of the shape: a constant of a compiled step
                index = Tensor(rows, device=input.device, dtype="int64", requires_grad=False)
            out = out[(slice(None),) * axis + (index,)]
    return out


def _constant_pad(input: Tensor, sides: Sequence[Tuple[int, int, int]], value: float) -> Tensor:
    """input cropped by its negative sides (a slice), then written into a tensor full of `value`
    (ops.setitem: the gradient is out_grad at the input's place)."""
    crop: List[slice] = [slice(None)] * input.ndim
    grown = list(input.shape)
    place: List[slice] = [slice(None)] * input.ndim
    for axis, before, after in sides:
        size = input.shape[axis]
        start, stop = max(-before, 0), size - max(-after, 0)
        crop[axis] = slice(start, stop)
        kept = stop - start
        grown[axis] = kept + max(before, 0) + max(after, 0)
        place[axis] = slice(max(before, 0), max(before, 0) + kept)
    out = input
    if any(c != slice(None) for c in crop):
        out = input[tuple(crop)]
    if tuple(grown) == tuple(out.shape):
        return out
    full = init.constant(*grown, c=value, device=input.device, dtype=input.dtype)
    return ops.setitem(full, tuple(place), out)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: Optional[float] = None) -> Tensor:
    """torch.nn.functional.pad: `pad` holds (before, after) pairs for the last axes, the last axis
    first: (left, right) pads the last axis, (left, right, top, bottom) the last two, and so on
    (at most input.ndim pairs). A negative count crops that side.

    mode: 'constant' (the default) fills with `value` (None means 0; cast to the input's dtype);
    'reflect' mirrors about the edge (padding < the axis size), 'replicate' repeats the edge,
    'circular' wraps around (padding <= the axis size). The three non-constant modes pad the
    last 1, 2 or 3 axes of an input with one or two more axes than that (PyTorch's rule:
    (C, W) or (N, C, W) for 2 pad entries, ...) and take no value but 0.

    Differentiable in the input: the padded cells get no gradient; a cell copied several times
    (reflect, replicate, circular) sums the gradients of its copies. Raises ValueError for an odd
    length, too many pairs, an unknown mode, a value with a non-constant mode, a padding a mode
    cannot take, a crop past the axis' size; TypeError for non-int entries (PyTorch raises
    RuntimeError or NotImplementedError for some of these)."""
    _tensor(input, "pad")
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode must be one of {PAD_MODES}, got {mode!r}")
    if not isinstance(pad, (tuple, list)) or not all(isinstance(p, int) and not isinstance(p, bool) for p in pad):
        raise TypeError(f"pad: the padding must be a tuple of ints, got {pad!r}")
    if len(pad) % 2:
        raise ValueError(f"pad: the padding must hold (before, after) pairs, got an odd length {len(pad)}")
    pairs = len(pad) // 2
    if pairs > input.ndim:
        raise ValueError(f"pad: {pairs} (before, after) pairs for an input of {input.ndim} dimensions {input.shape}")
    sides = [(input.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]) for i in range(pairs)]
    for axis, before, after in sides:
        if input.shape[axis] + before + after < 0:
            raise ValueError(f"pad: padding ({before}, {after}) of axis {axis} (size {input.shape[axis]}) of input "
                             f"{input.shape} leaves a negative size")
    if mode == "constant":
        return _constant_pad(input, sides, 0.0 if value is None else value)
    if value is not None and value != 0:
        raise ValueError(f"pad: mode={mode!r} takes no value, got value={value!r}")
    if pairs not in (1, 2, 3) or input.ndim not in (pairs + 1, pairs + 2):
        raise ValueError(f"pad: mode={mode!r} pads the last 1, 2 or 3 axes of an input with one or two more axes; "
                         f"got {len(pad)} pad entries for input {input.shape}")
    return _gather_pad(input, sides, mode, "pad", "mode")


def _mode_pad(input: Tensor, pads, mode: str, what: str) -> Tensor:
    """(N, C, H, W) or (C, H, W) padded by ((top, bottom), (left, right)) in `mode` ('reflect',
    'replicate' or 'circular', as F.pad): Conv2d's padding_mode."""
    (top, bottom), (left, right) = pads
    sides = [(input.ndim - 2, top, bottom), (input.ndim - 1, left, right)]
    return _gather_pad(input, sides, mode, what, "padding_mode")


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrPair = 1,
           padding: Padding2d = 0, dilation: IntOrPair = 1, groups: int = 1) -> Tensor:
    """2-D cross-correlation, torch.nn.functional.conv2d: input (N, Cin, H, W) or unbatched
    (Cin, H, W), weight (Cout, Cin / groups, KH, KW), bias (Cout,) -> (N, Cout, Ho, Wo) (or
    (Cout, Ho, Wo)), Ho = (H + top + bottom - dilation * (KH - 1) - 1) // stride + 1.

    stride, dilation: ints or (h, w) pairs. padding: an int or (h, w) pair (zeros on both
    sides), 'valid' (none) or 'same' (output size = input size, stride 1 only; an odd total
    dilation * (K - 1) puts the extra row/column at the bottom/right, as PyTorch). groups:
    Cin and Cout split into that many blocks, output block g reading input block g only
    (groups = Cin: depthwise). Runs as ops.conv on NHWC with a (KH, KW, Cin / groups, Cout)
    kernel, so every gradient (any order) is the op family's.

    Raises ValueError (naming the shapes) for an input that is not 3-D or 4-D, a weight that
    does not fit it, channels not divisible by groups, a bias not (Cout,), a dilated kernel
    larger than the padded input, stride/dilation/groups < 1, padding < 0, a padding string
    other than 'valid'/'same' or 'same' with stride > 1; TypeError for non-int sizes or a
    non-float input.
    """
    x, unbatched = _nchw(input, "conv2d")
    cin = x.shape[3]
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"conv2d groups must be an int, got {groups!r}")
    stride, dilation = _ints(stride, 2, "conv2d stride"), _ints(dilation, 2, "conv2d dilation")
    if groups < 1 or min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"conv2d needs stride >= 1, dilation >= 1 and groups >= 1, got stride={stride}, "
                         f"dilation={dilation}, groups={groups}")
    if cin % groups:
        raise ValueError(f"conv2d: input of shape {input.shape} has {cin} channels, not divisible by groups={groups}")
    if weight.ndim != 4 or weight.shape[1] != cin // groups:
        grouped = f" with groups={groups}" if groups > 1 else ""
        raise ValueError(f"conv2d: weight of shape {weight.shape} for input of shape {input.shape}{grouped} "
                         f"(expected (Cout, {cin // groups}, KH, KW))")
    if weight.shape[0] % groups:
        raise ValueError(f"conv2d: weight of shape {weight.shape} has {weight.shape[0]} output channels, not "
                         f"divisible by groups={groups}")
    kernel = tuple(weight.shape[2:])
    pads = _conv2d_pads(padding, kernel, stride, dilation, "conv2d")
    if min(min(p) for p in pads) < 0 or min(kernel) < 1:
        raise ValueError(f"conv2d needs kernel_size >= 1 and padding >= 0, got kernel_size={kernel}, "
                         f"padding={padding}")
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if any(size + before + after < span for size, span, (before, after) in zip(x.shape[1:3], spans, pads)):
        dilated = f" (dilated to {spans})" if dilation != (1, 1) else ""
        raise ValueError(f"conv2d: kernel {kernel}{dilated} is larger than the padded input (input {input.shape}, "
                         f"padding {padding})")
    out = ops.conv(x, ops.permute(weight, (2, 3, 1, 0)), stride=stride, padding=pads, dilation=dilation,
                   groups=groups)
    return _channel_bias(_back_to_nchw(out, unbatched), bias, 0 if unbatched else 1, "conv2d")


def _transposed_sizes(what: str, spatial, kernel, stride, padding, output_padding, dilation) -> Tuple[int, int]:
    """conv_transpose2d's output size per axis: (H - 1) stride - 2 padding + dilation (K - 1) +
    output_padding + 1; ValueError where it is not positive."""
    sizes = [(h - 1) * s - 2 * p + d * (k - 1) + op + 1
             for h, k, s, p, op, d in zip(spatial, kernel, stride, padding, output_padding, dilation)]
    if min(sizes) < 1:
        raise ValueError(f"{what}: the output size {tuple(sizes)} is not positive (input {tuple(spatial)}, kernel "
                         f"{tuple(kernel)}, stride {stride}, padding {padding}, output_padding {output_padding}, "
                         f"dilation {dilation})")
    return sizes[0], sizes[1]


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrInts = 1,
                     padding: IntOrInts = 0, output_padding: IntOrInts = 0, groups: int = 1,
                     dilation: IntOrInts = 1) -> Tensor:
    """2-D transposed convolution, torch.nn.functional.conv_transpose2d (note PyTorch's argument
    order: groups before dilation): input (N, Cin, H, W) or unbatched (Cin, H, W), weight
    (Cin, Cout / groups, KH, KW) (PyTorch's layout), bias (Cout,) -> (N, Cout, Ho, Wo) with
    Ho = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1.

    It is the gradient of conv2d with respect to its input (each input pixel scatters
    weight-scaled copies of the kernel into the output, stride apart, and `padding` rows and
    columns are cut from each side), so it runs as ops.ConvInputGrad with the weight read as a
    conv2d weight: every gradient (any order) is the conv op family's. output_padding adds
    rows/columns at the bottom/right (those beyond the scattered windows are zeros); it must be
    smaller than stride or dilation (PyTorch's rule).

    Raises ValueError (naming the shapes) for an input that is not 3-D or 4-D, a weight that does
    not fit it, channels not divisible by groups, a bias not (Cout,), stride/dilation/groups < 1,
    padding/output_padding < 0, output_padding not below stride or dilation, or an output size
    that is not positive; TypeError for non-int sizes or a non-float input.
    """
    what = "conv_transpose2d"
    x, unbatched = _nchw(input, what)
    cin = x.shape[3]
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"{what} groups must be an int, got {groups!r}")
    strides, dilations = _ints(stride, 2, f"{what} stride"), _ints(dilation, 2, f"{what} dilation")
    pads_in, extras = _ints(padding, 2, f"{what} padding"), _ints(output_padding, 2, f"{what} output_padding")
    if groups < 1 or min(strides) < 1 or min(dilations) < 1 or min(pads_in) < 0 or min(extras) < 0:
        raise ValueError(f"{what} needs stride >= 1, dilation >= 1, groups >= 1, padding >= 0 and output_padding "
                         f">= 0, got stride={stride}, padding={padding}, output_padding={output_padding}, "
                         f"dilation={dilation}, groups={groups}")
    if any(op >= max(s, d) for op, s, d in zip(extras, strides, dilations)):
        raise ValueError(f"{what}: output_padding {extras} must be smaller than either stride {strides} or "
                         f"dilation {dilations}")
    if cin % groups:
        raise ValueError(f"{what}: input of shape {input.shape} has {cin} channels, not divisible by groups={groups}")
    if weight.ndim != 4 or weight.shape[0] != cin or min(weight.shape) < 1:
        raise ValueError(f"{what}: weight of shape {weight.shape} for input of shape {input.shape} "
                         f"(expected ({cin}, Cout / groups, KH, KW))")
    cout = weight.shape[1] * groups
    kernel = tuple(weight.shape[2:])
    sizes = _transposed_sizes(what, x.shape[1:3], kernel, strides, pads_in, extras, dilations)
    # As a conv2d's input gradient: that conv2d maps the (Ho, Wo) output to the (H, W) input with
    # padding (p, max(p - op, 0)) on each axis. Where op > p, the last op - p rows lie past every
    # window (zeros): still that conv2d's input while op - p < stride (its output size rounds
    # down), else (op >= stride, possible with dilation > stride) added after, as zeros.
    pads = tuple((p, max(p - op, 0)) for p, op in zip(pads_in, extras))
    extra = tuple(op - p if op - p >= s else 0 for p, op, s in zip(pads_in, extras, strides))
    shape = (x.shape[0], sizes[0] - extra[0], sizes[1] - extra[1], cout)
    out = ops.ConvInputGrad(shape, strides, pads, dilations, groups)(x, ops.permute(weight, (2, 3, 1, 0)))
    if any(extra):
        out = _constant_pad(out, [(1, 0, extra[0]), (2, 0, extra[1])], 0.0)
    return _channel_bias(_back_to_nchw(out, unbatched), bias, 0 if unbatched else 1, what)


def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: Union[int, Tuple[int]] = 1,
           padding: Union[int, Tuple[int]] = 0) -> Tensor:
    """1-D cross-correlation, PyTorch's conv1d: input (N, Cin, L) or (Cin, L), weight (Cout, Cin, K),
    bias (Cout,) -> (N, Cout, Lo), Lo = (L + 2 padding - K) // stride + 1. Zero padding; no groups
    or dilation. Runs as a 2-D conv of height 1 (the same im2col path): NHWC (N, 1, L, Cin) input,
    (1, K, Cin, Cout) kernel, stride (1, stride), padding (0, padding)."""
    _float(input, "conv1d")
    if input.ndim not in (2, 3):
        raise ValueError(f"conv1d expects input of shape (N, C, L) or (C, L), got {input.shape}")
    x = input.reshape((1,) + input.shape) if input.ndim == 2 else input
    n, cin, length = x.shape
    if weight.ndim != 3 or weight.shape[1] != cin:
        raise ValueError(f"conv1d: weight of shape {weight.shape} for input of shape {input.shape} "
                         f"(expected (Cout, {cin}, K))")
    (s,), (p,) = _ints(stride, 1, "conv1d stride"), _ints(padding, 1, "conv1d padding")
    _geometry("conv1d", input.shape, (length,), weight.shape[2:], (s,), (p,))
    cout, _, k = weight.shape
    rows = ops.permute(x, (0, 2, 1)).reshape((n, 1, length, cin))
    kernel = ops.permute(weight, (2, 1, 0)).reshape((1, k, cin, cout))
    out = ops.conv(rows, kernel, stride=(1, s), padding=(0, p))  # (N, 1, Lo, Cout)
    out = ops.permute(out.reshape((n, out.shape[2], cout)), (0, 2, 1))
    if input.ndim == 2:
        out = out.reshape(out.shape[1:])
    return _channel_bias(out, bias, out.ndim - 2, "conv1d")


def _pool_args(what: str, input: Tensor, kernel_size, stride, padding):
    kernel = _ints(kernel_size, 2, f"{what} kernel_size")
    stride = kernel if stride is None else _ints(stride, 2, f"{what} stride")
    padding = _ints(padding, 2, f"{what} padding")
    x, unbatched = _nchw(input, what)
    _geometry(what, input.shape, x.shape[1:3], kernel, stride, padding)
    if any(2 * p > k for k, p in zip(kernel, padding)):
        raise ValueError(f"{what}: padding {padding} must be at most half the kernel size {kernel} (PyTorch's rule)")
    return x, unbatched, kernel, stride, padding


def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0) -> Tensor:
    """Max over KH x KW windows, PyTorch's max_pool2d (ceil_mode=False): (N, C, H, W) or (C, H, W)
    -> (N, C, Ho, Wo), Ho = (H + 2 padding - KH) // stride + 1; stride defaults to kernel_size,
    padding (with -inf) at most half the kernel. The gradient goes to the first maximal element
    of each window (the last nan of a window with nans), as PyTorch's."""
    x, unbatched, kernel, stride, padding = _pool_args("max_pool2d", input, kernel_size, stride, padding)
    return _back_to_nchw(ops.max_pool2d(x, kernel, stride, padding), unbatched)


def avg_pool2d(input: Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               count_include_pad: bool = True) -> Tensor:
    """Mean over KH x KW windows, PyTorch's avg_pool2d (ceil_mode=False): (N, C, H, W) or (C, H, W)
    -> (N, C, Ho, Wo); zero padding, at most half the kernel; the divisor is KH * KW
    (count_include_pad=True, the default) or the window's number of unpadded cells."""
    x, unbatched, kernel, stride, padding = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return _back_to_nchw(ops.avg_pool2d(x, kernel, stride, padding, count_include_pad), unbatched)


def _adaptive_windows(size: int, out: int):
    """PyTorch's adaptive windows along one axis: window i is [floor(i size / out), ceil((i + 1) size / out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive_mean(x: Tensor, axis: int, out: int) -> Tensor:
    """Average `axis` of x over PyTorch's `out` adaptive windows (which may differ in length and overlap).

    The axis is moved first and gathered as (out, span, rest): row j of window i is element
    start_i + j, clamped into the axis, and masked off (by `where`, so a nan or inf there never
    reaches another window's mean) past the window's end.
    """
    size = x.shape[axis]
    windows = _adaptive_windows(size, out)
    span = max(end - start for start, end in windows)
    ids = [[min(start + j, size - 1) for j in range(span)] for start, _ in windows]
    inside = [[start + j < end for j in range(span)] for start, end in windows]
    lengths = [[float(end - start)] for start, end in windows]
    perm = (axis,) + tuple(i for i in range(x.ndim) if i != axis)
    moved = ops.permute(x, perm)
    rows = moved.reshape((size, -1))
    with array_api.constant_data():  # functions of the shapes: constants of a compiled step
        index = Tensor(ids, device=x.device, dtype="int64", requires_grad=False)
        mask = Tensor(inside, device=x.device, dtype="bool", requires_grad=False).reshape((out, span, 1))
        divisor = Tensor(lengths, device=x.device, dtype=x.dtype, requires_grad=False)
    gathered = rows[index]  # (out, span, rest)
    total = ops.summation(ops.where(mask.broadcast_to(gathered.shape), gathered, 0.0), axes=1)
    mean = total / divisor.broadcast_to(total.shape)
    back = ops.permute(mean.reshape((out,) + moved.shape[1:]), tuple(perm.index(i) for i in range(x.ndim)))
    return back


def adaptive_avg_pool2d(input: Tensor, output_size: Union[int, None, Tuple[Optional[int], Optional[int]]]) -> Tensor:
    """PyTorch's adaptive_avg_pool2d for any output size: (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo),
    output window i along H covering [floor(i H / Ho), ceil((i + 1) H / Ho)) (windows may differ in
    size and overlap); a None entry keeps the input's size. AdaptiveAvgPool2d(1) is global average
    pooling.

    When Ho divides H and Wo divides W the windows are avg_pool2d's with kernel = stride = H / Ho
    (one strided view); otherwise each axis is averaged in turn over its gathered windows
    (separable, no loop over windows). Either way a nan or inf reaches only the windows that
    hold it, as in PyTorch.
    """
    _float(input, "adaptive_avg_pool2d")
    if input.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d expects input of shape (N, C, H, W) or (C, H, W), got {input.shape}")
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    h, w = input.shape[-2:]
    if len(sizes) != 2 or not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in sizes):
        raise TypeError(f"adaptive_avg_pool2d: output_size must be an int, None or a pair of them, got {output_size!r}")
    ho, wo = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    if ho < 1 or wo < 1 or h < 1 or w < 1:
        raise ValueError(f"adaptive_avg_pool2d: output size {(ho, wo)} and input {input.shape} must be positive")
    if h % ho == 0 and w % wo == 0:
        kernel = (h // ho, w // wo)
        return avg_pool2d(input, kernel, kernel)
    out = input if ho == h else _adaptive_mean(input, input.ndim - 2, ho)
    return out if wo == w else _adaptive_mean(out, input.ndim - 1, wo)


# --- losses ----------------------------------------------------------------------------------

def mse_loss(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """(input - target)^2, averaged ('mean', the default), summed ('sum') or kept ('none').
    The shapes must match (PyTorch would broadcast with a warning)."""
    _float(input, "mse_loss")
    _reduction(reduction, "mse_loss")
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"mse_loss: input of shape {input.shape} and target of shape {target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction)


def _classes_last(input: Tensor) -> Tensor:
    """Logits (C,), (N, C) or (N, C, d1, ...) as rows (M, C)."""
    if input.ndim == 1:
        return input.reshape((1, input.shape[0]))
    rows, _ = _channels_last(input)
    return rows


def _class_weight(weight: Optional[Tensor], classes: int, input: Tensor, what: str) -> Optional[Tensor]:
    if weight is None:
        return None
    _tensor(weight, f"{what} weight")
    if tuple(weight.shape) != (classes,):
        raise ValueError(f"{what}: weight of shape {weight.shape} for {classes} classes (expected ({classes},))")
    return weight


def _class_ids(input: Tensor, target: Tensor, ignore_index: int, what: str):
    """Class-id targets of logits / log-probabilities input ((C,), (N, C) or (N, C, d1, ...)):
    (ids (M,) with ignored targets replaced by 0, kept (M,) bool, one-hot (M, C) bool, the
    targets' shape). TypeError for non-int64 targets; ValueError for a target shape that does not
    fit or an id outside [0, C) that is not ignore_index."""
    if target.dtype != "int64":
        raise TypeError(f"{what}: class targets must be int64, got {target.dtype}")
    classes = input.shape[0 if input.ndim == 1 else 1]
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if tuple(target.shape) != expected:
        raise ValueError(f"{what}: target of shape {target.shape} for input of shape {input.shape} "
                         f"(expected {expected})")
    ids = target.reshape((-1,))
    kept = ops.not_equal(ids, ignore_index)  # (M,) bool
    ids = ops.where(kept, ids, 0)
    if ids.shape[0]:
        low, high = ops.extremes(ids)
        if low < 0 or high >= classes:
            raise ValueError(f"{what}: target {low if low < 0 else high} is out of range for {classes} "
                             f"classes (ignore_index={ignore_index})")
    picked = init.one_hot(classes, ids, device=input.device, dtype="bool")
    return ids, kept, picked, expected


def _reduce_targets(loss: Tensor, kept: Tensor, counted: Optional[Tensor], reduction: str, shape) -> Tensor:
    """Per-target losses (M,) reduced: 'none' keeps the targets' shape, 'sum' sums, 'mean' divides
    the sum by the kept targets' count, or by their weights' sum where `counted` (M,) holds them."""
    if reduction == "none":
        return loss.reshape(shape)
    total = ops.summation(loss)
    if reduction == "sum":
        return total
    if counted is None:
        return total / ops.summation(ops.cast(kept, loss.dtype))
    return total / ops.summation(ops.where(kept, counted, 0.0))


def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """The negative log-likelihood loss, PyTorch's nll_loss: -weight[t] * input[t] for each target
    class t, input holding log-probabilities (C,), (N, C) or (N, C, d1, ...), target int64 class ids
    (), (N,) or (N, d1, ...).

    weight: per-class weights (C,) (default 1). A target equal to ignore_index contributes 0 and
    is not counted; any other must lie in [0, C) (ValueError; PyTorch: IndexError/RuntimeError).
    reduction 'mean' divides the sum by the sum of the counted targets' weights (nan when every
    target is ignored, as PyTorch), 'sum' sums, 'none' keeps the targets' shape.
    """
    _float(input, "nll_loss")
    _tensor(target, "nll_loss")
    _reduction(reduction, "nll_loss")
    if input.ndim == 0:
        raise ValueError("nll_loss: input must have a class axis, got a scalar")
    classes = input.shape[0 if input.ndim == 1 else 1]
    weight = _class_weight(weight, classes, input, "nll_loss")
    rows = _classes_last(input)  # (M, C)
    ids, kept, picked, shape = _class_ids(input, target, ignore_index, "nll_loss")
    loss = -ops.summation(ops.where(picked, rows, 0.0), axes=1)
    counted = None
    if weight is not None:
        counted = weight[ids]
        loss = loss * counted
    return _reduce_targets(ops.where(kept, loss, 0.0), kept, counted, reduction, shape)


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """PyTorch's cross_entropy: log_softmax over the class axis, then the negative log-likelihood
    of the targets.

    input: logits (N, C), (N, C, d1, ...) or (C,). target: int64 class ids (N,), (N, d1, ...) or
    (), or float class probabilities of input's shape. weight: per-class weights (C,) (default 1).

    Class ids: a target equal to `ignore_index` contributes 0 and is not counted; any other must
    lie in [0, C) (ValueError). With label_smoothing e, a target t's loss is
    (1 - e) * w[t] * -log p[t] + (e / C) * sum_c w[c] * -log p[c], and ignored targets contribute
    0 to both terms. 'mean' divides the sum by the sum of w[t] over the targets not ignored (their
    number without weights; nan if every target is ignored, as PyTorch); 'sum' sums; 'none'
    keeps the target's shape.
    Probabilities: loss = -sum_c w[c] t'[c] log p[c] with t' = (1 - e) t + e / C; 'mean' divides
    by the number of rows (N * d1 * ...).
    """
    _float(input, "cross_entropy")
    _tensor(target, "cross_entropy")
    _reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.ndim == 0:
        raise ValueError("cross_entropy: input must have a class axis, got a scalar")
    classes = input.shape[0 if input.ndim == 1 else 1]
    weight = _class_weight(weight, classes, input, "cross_entropy")
    logp = ops.logsoftmax(_classes_last(input), axis=1)  # (M, C)
    weighted = logp if weight is None else logp * weight.reshape((1, classes)).broadcast_to(logp.shape)
    if target.dtype in FLOATS:
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError(f"cross_entropy: probability targets of shape {target.shape} for input of shape "
                             f"{input.shape} (they must match)")
        probs = _classes_last(target)
        if label_smoothing > 0:
            probs = probs * (1 - label_smoothing) + label_smoothing / classes
        loss = -ops.summation(weighted * probs, axes=1)
        if reduction == "none":
            return loss.reshape(input.shape[:1] + input.shape[2:] if input.ndim > 1 else ())
        return _reduce(loss, reduction)
    if target.dtype != "int64":
        raise TypeError(f"cross_entropy: class targets must be int64 (or float probabilities), got {target.dtype}")
    ids, kept, picked, shape = _class_ids(input, target, ignore_index, "cross_entropy")
    loss = ops.where(kept, -ops.summation(ops.where(picked, weighted, 0.0), axes=1), 0.0)
    if label_smoothing > 0:  # only then: at e = 0, 0 * (a -inf logit's inf) would be nan
        smooth = ops.where(kept, -ops.summation(weighted, axes=1), 0.0)
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    return _reduce_targets(loss, kept, None if weight is None else weight[ids], reduction, shape)


def _same_target(input: Tensor, target: Tensor, what: str) -> None:
    _tensor(target, f"{what} target")
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"{what}: target of shape {target.shape} for input of shape {input.shape} (they must match)")
    if target.dtype != input.dtype:
        raise TypeError(f"{what}: target of dtype {target.dtype} for input of dtype {input.dtype} (they must match)")


def _broadcast_weight(weight: Optional[Tensor], shape: tuple, name: str, what: str) -> Optional[Tensor]:
    if weight is None:
        return None
    _tensor(weight, f"{what} {name}")
    try:
        full = array_api.broadcast_shapes(tuple(weight.shape), shape)
    except ValueError:
        full = None
    if full != tuple(shape):
        raise ValueError(f"{what}: {name} of shape {weight.shape} does not broadcast to the input's shape {shape}")
    return weight if tuple(weight.shape) == tuple(shape) else weight.broadcast_to(shape)


def _probabilities(low: float, high: float) -> None:
    if not (low >= 0 and high <= 1):
        raise ValueError(f"binary_cross_entropy: the input must hold probabilities in [0, 1], found "
                         f"{high if low >= 0 else low}")


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *,
                         reduction: str = "mean") -> Tensor:
    """PyTorch's binary_cross_entropy: -w (t log x + (1 - t) log(1 - x)) for probabilities x (any
    shape) and targets t of the same shape and dtype, each logarithm clamped at -100 (so x = 0 or 1
    gives a finite loss), then reduced ('mean', 'sum' or 'none'). weight broadcasts to the input.

    The gradient is PyTorch's: w (x - t) / max(x (1 - x), 1e-12) for x, w (log(1 - x) - log x)
    for t (ops.BinaryCrossEntropy). Raises ValueError for an input outside [0, 1] (or nan;
    PyTorch: RuntimeError), a target of another shape, a weight that does not broadcast; TypeError
    for a target of another dtype.
    """
    _float(input, "binary_cross_entropy")
    _reduction(reduction, "binary_cross_entropy")
    _same_target(input, target, "binary_cross_entropy")
    weight = _broadcast_weight(weight, input.shape, "weight", "binary_cross_entropy")
    if 0 not in input.shape:  # on every replay of a compiled step too (it would give nan)
        ops.check_extremes(input, _probabilities)
    loss = ops.binary_cross_entropy(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *,
                                     reduction: str = "mean", pos_weight: Optional[Tensor] = None) -> Tensor:
    """PyTorch's binary_cross_entropy_with_logits: binary cross-entropy of sigmoid(z) for logits z,
    w ((1 - t) z + l softplus(-z)) with l = 1 + (p - 1) t (PyTorch's formula), computed for z < 0
    as the same function l softplus(z) - p t z, so that each side is a sum of non-negative terms
    and softplus is log1p(exp(.)) of a non-positive number: nothing cancels or overflows (PyTorch's
    single form loses a well-classified example's loss in float32, z = -20, t = 0: 2.06e-9 there,
    0 in PyTorch), and the gradient with respect to t, -z + (p - 1) softplus(-z), is exact at
    z ~ 0 too. The gradient with respect to z is w ((1 - t) - l sigmoid(-z)), w (sigmoid(z) - t)
    without pos_weight. One edge differs: z = -inf with t > 0 gives inf here, nan in PyTorch
    (-inf + inf).

    target: of the input's shape and dtype (probabilities, or 0/1 labels). weight broadcasts to
    the input; pos_weight p (the positives' weight, usually one per class, (C,)) broadcasts to it
    too (PyTorch's broadcast along the last axis). reduction 'mean', 'sum' or 'none'. ValueError
    for shapes that do not fit, TypeError for a target of another dtype.
    """
    _float(input, "binary_cross_entropy_with_logits")
    _reduction(reduction, "binary_cross_entropy_with_logits")
    _same_target(input, target, "binary_cross_entropy_with_logits")
    weight = _broadcast_weight(weight, input.shape, "weight", "binary_cross_entropy_with_logits")
    pos_weight = _broadcast_weight(pos_weight, input.shape, "pos_weight", "binary_cross_entropy_with_logits")
    above = input >= 0  # each side computes on its own clamped input, so neither sees the other's inf
    upper, lower = ops.where(above, input, 0.0), ops.where(above, 0.0, input)
    if pos_weight is None:
        scale, positive = None, target
    else:
        scale, positive = (pos_weight - 1) * target + 1, target * pos_weight
    soft_upper, soft_lower = ops.log1p(ops.exp(-upper)), ops.log1p(ops.exp(lower))  # softplus(-|z|)
    if scale is not None:
        soft_upper, soft_lower = soft_upper * scale, soft_lower * scale
    loss = ops.where(above, (1 - target) * upper + soft_upper, soft_lower - positive * lower)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# --- attention -------------------------------------------------------------------------------

def _repeat_heads(t: Tensor, times: int) -> Tensor:
    """Each head (axis -3) repeated `times` times in place (repeat_interleave): k, v for GQA."""
    heads = t.shape[-3]
    with array_api.constant_data():
        index = Tensor([h // times for h in range(heads * times)], device=t.device, dtype="int64",
                       requires_grad=False)
    return t[(slice(None),) * (t.ndim - 3) + (index,)]


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(query key^T * scale + mask) value, torch.nn.functional.scaled_dot_product_attention:
    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); the leading axes
    broadcast (as matmul's). scale defaults to 1 / sqrt(E).

    attn_mask, broadcastable to (..., L, S): a bool mask says which keys a query attends to (True:
    takes part), a float mask is added to the scores. is_causal=True masks key j > query i
    (lower-triangular, aligned at the top left as PyTorch's, also for L != S); it cannot be
    combined with attn_mask. A query whose every key is masked out (every entry False or -inf)
    gets zeros and a zero gradient, as PyTorch 2's. dropout_p > 0 drops attention weights (always,
    as PyTorch's function, which has no training flag: pass 0.0 in evaluation), drawing from
    numpy's global RNG. enable_gqa=True lets key and value have fewer heads (axis -3) than query,
    a divisor of them, each repeated for its group of query heads.

    Raises ValueError naming the shapes for inputs that do not fit, a mask that does not broadcast,
    attn_mask with is_causal, dropout_p outside [0, 1]; TypeError for non-float inputs or a mask
    that is neither bool nor float (PyTorch raises RuntimeError for some of these).
    """
    what = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        _float(t, f"{what} {name}")
        if t.ndim < 2:
            raise ValueError(f"{what}: {name} must be (..., L, E), got {t.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{what}: query {query.shape}, key {key.shape} and value {value.shape} do not fit "
                         "(expected (..., L, E), (..., S, E), (..., S, Ev))")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{what}: dropout_p must be in [0, 1], got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{what}: give attn_mask or is_causal=True, not both (PyTorch's rule)")
    if enable_gqa and query.ndim >= 3 and key.ndim >= 3 and query.shape[-3] != key.shape[-3]:
        heads, groups = query.shape[-3], key.shape[-3]
        if heads % groups or value.shape[-3] != groups:
            raise ValueError(f"{what}: enable_gqa needs the query's heads ({heads}) to be a multiple of the key's "
                             f"and value's ({groups}, {value.shape[-3]})")
        key, value = _repeat_heads(key, heads // groups), _repeat_heads(value, heads // groups)
    length, keys = query.shape[-2], key.shape[-2]
    factor = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    try:
        scores = ops.matmul(query, ops.transpose(key)) * factor  # (..., L, S)
    except ValueError:
        raise ValueError(f"{what}: the leading axes of query {query.shape} and key {key.shape} do not "
                         "broadcast") from None
    dead = None  # the queries with no key left, where PyTorch gives zeros
    if is_causal:  # key j <= query i, built on the device (no L x S host list)
        rows = init.arange(length, device=query.device).reshape((length, 1))
        allowed = ops.less_equal(init.arange(keys, device=query.device).reshape((1, keys)), rows)
        scores = ops.where(allowed.broadcast_to(scores.shape), scores, -math.inf)
    elif attn_mask is not None:
        _tensor(attn_mask, f"{what} attn_mask")
        try:
            shape = array_api.broadcast_shapes(tuple(attn_mask.shape), tuple(scores.shape))
        except ValueError:
            shape = None
        if shape != tuple(scores.shape):
            raise ValueError(f"{what}: attn_mask of shape {attn_mask.shape} does not broadcast to the scores' "
                             f"shape {scores.shape} (..., L, S)")
        if attn_mask.dtype == "bool":
            mask = attn_mask.broadcast_to(scores.shape) if attn_mask.shape != scores.shape else attn_mask
            scores = ops.where(mask, scores, -math.inf)
            alive = ops.max(ops.cast(attn_mask, query.dtype), axes=-1, keepdims=True)
            dead = ops.equal(alive, 0.0)
        elif attn_mask.dtype in FLOATS:
            scores = scores + (attn_mask.broadcast_to(scores.shape) if attn_mask.shape != scores.shape
                               else attn_mask)
            dead = ops.equal(ops.max(attn_mask.detach(), axes=-1, keepdims=True), -math.inf)
        else:
            raise TypeError(f"{what}: attn_mask must be bool or float, got dtype {attn_mask.dtype}")
    if dead is not None:
        dead = dead.broadcast_to(scores.shape) if dead.shape != scores.shape else dead
        scores = ops.where(dead, 0.0, scores)
    weights = ops.softmax(scores, axis=-1)
    if dead is not None:
        weights = ops.where(dead, 0.0, weights)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return ops.matmul(weights, value)


# --- lookups ---------------------------------------------------------------------------------

def _padding_index(padding_idx: Optional[int], num_embeddings: int, what: str) -> Optional[int]:
    """padding_idx as a row in [0, num_embeddings) (a negative one counts from the end, PyTorch's
    rule); ValueError outside [-num_embeddings, num_embeddings)."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
        raise TypeError(f"{what}: padding_idx must be an int or None, got {padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{what}: padding_idx {padding_idx} must be within [-{num_embeddings}, {num_embeddings})")
    return padding_idx % num_embeddings


def _lookup(input: Tensor, weight: Tensor, padding_idx: Optional[int]) -> Tensor:
    """weight[input]; the rows looked up at padding_idx pass no gradient to weight (their value is
    kept: where(ids != padding_idx, rows, rows detached))."""
    # the ids were checked against weight's rows: the plan need not check them again
    rows = ops.GetItem(ops.IndexPlan(tuple(weight.shape), input, weight.device, rows_in_range=True))(weight)
    if padding_idx is None or not rows.requires_grad:
        return rows
    keep = ops.not_equal(input, padding_idx).reshape(tuple(input.shape) + (1,)).broadcast_to(rows.shape)
    return ops.where(keep, rows, rows.detach())


def embedding(input: Tensor, weight: Tensor, padding_idx: Optional[int] = None) -> Tensor:
    """Rows of weight (num_embeddings, dim) picked by the int64 ids in input (any shape):
    shape input.shape + (dim,); the gradient scatter-adds into weight, except at the row
    padding_idx (if given; negative counts from the end), which gets none (PyTorch's; its value
    is still what the row holds). ValueError for an id outside [0, num_embeddings) (PyTorch
    raises IndexError). max_norm and the other PyTorch options are not offered."""
    _tensor(input, "embedding")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    padding_idx = _padding_index(padding_idx, weight.shape[0], "embedding")
    ops.check_ids(input, weight.shape[0], "embedding")  # also a 0-d id, and again at each compiled replay
    return _lookup(input, weight, padding_idx)


class _InferredClasses:
    """one_hot's num_classes=-1: the ids' max + 1. A compiled step keeps the traced count (the
    result's shape), so each replay checks that its ids give that count too."""

    def __init__(self) -> None:
        self.traced: Optional[int] = None

    def __call__(self, low: int, high: int) -> int:
        n = int(high) + 1
        if self.traced is not None and n != self.traced:
            raise ValueError(f"one_hot: num_classes=-1 gave {self.traced} classes (the ids' max + 1) when the "
                             f"compiled step was traced, and this call's ids give {n}; pass num_classes")
        self.traced = n
        return n


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot rows: shape tensor.shape + (num_classes,); num_classes=-1 uses max + 1
    (PyTorch's). ValueError for a negative id or one >= num_classes."""
    _tensor(tensor, "one_hot")
    if tensor.dtype != "int64":
        raise TypeError(f"one_hot needs int64 class ids, got dtype {tensor.dtype}")
    if num_classes == -1:
        if 0 in tensor.shape:
            raise ValueError(f"one_hot: cannot infer num_classes from an empty tensor of shape {tensor.shape}")
        num_classes = ops.check_extremes(tensor, _InferredClasses())
    return init.one_hot(num_classes, tensor, device=tensor.device, dtype="int64")
