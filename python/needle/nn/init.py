"""PyTorch's in-place initialisers, `torch.nn.init` as `needle.nn.init`.

Each function writes into the tensor it is given, under no_grad, and returns it:
`nn.init.normal_(layer.weight, std=0.02)`. Random ones draw from numpy's global RNG (one
draw per call, recorded like ndl.randn, so `ndl.manual_seed` / `np.random.seed` make them
repeatable and a compiled step draws fresh numbers on every replay); the numbers differ
from PyTorch's, the distributions are PyTorch's.

This module is not the course's `needle.init` (`init.kaiming_uniform(fan_in, fan_out)`,
which builds new tensors and whose exact draws the course's tests check); that one is
unchanged.

**Layout.** The fan-based initialisers (xavier_*, kaiming_*) read fan_in and fan_out
from the shape as PyTorch does, assuming PyTorch's weight layout (out, in, *kernel):
fan_in = shape[1] * prod(kernel), fan_out = shape[0] * prod(kernel). needle's Conv1d,
Conv2d and Embedding use that layout. The course's layers do not: `nn.Linear.weight` and
the RNN/LSTM cells' `W_ih`/`W_hh` are (in, out), and `nn.Conv.weight` is
(k, k, in, out). The rule:

* a 2-D (in, out) weight (nn.Linear, cells): fan_in and fan_out are swapped, so pass the
  other mode -- `kaiming_uniform_(linear.weight, mode="fan_out")` is PyTorch's
  `kaiming_uniform_(weight)` (mode="fan_in") of the transposed weight. xavier_* is
  symmetric in the fans and needs nothing;
* any other layout (the course's Conv): compute the bound yourself and call uniform_ or
  normal_ (bound = gain * sqrt(3 / fan) for kaiming_uniform_).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple

from needle import init as _factories
from needle import ops
from needle.autograd import Tensor, array_api, no_grad

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table): 1 for linear, the conv
    layers and sigmoid; 5/3 for tanh; sqrt(2) for relu; sqrt(2 / (1 + slope^2)) for
    leaky_relu (param = negative slope, 0.01 by default); 3/4 for selu.

    ValueError for another nonlinearity or a slope that is not a number."""
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, numbers.Real):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _tensor(tensor: Any, what: str, floating: bool = True) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init.{what} expects a needle Tensor, got {type(tensor).__name__}")
    if floating and not array_api.is_floating(tensor.dtype):
        raise TypeError(f"nn.init.{what} needs a floating-point tensor, got dtype {tensor.dtype}")
    return tensor


def _no_generator(generator: Any, what: str) -> None:
    if generator is not None:
        raise TypeError(f"nn.init.{what}: needle draws from numpy's global RNG (seed it with ndl.manual_seed or "
                        "np.random.seed); generator= is not supported")


def _write(tensor: Tensor, values: Tensor) -> Tensor:
    """tensor <- values in place (its own buffer: views and holders see it), outside the graph."""
    with no_grad():
        tensor.copy_(values)
    return tensor


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> Tuple[int, int]:
    """(fan_in, fan_out) of a weight in PyTorch's layout (out, in, *kernel): (in * k, out * k)
    with k the product of the kernel sizes (see the module docstring for needle's (in, out)
    layers). ValueError for fewer than 2 dimensions. PyTorch's private helper of that name,
    which copied code calls."""
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions "
                         f"(got shape {shape})")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower() if isinstance(mode, str) else mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _empty(tensor: Tensor) -> bool:
    return math.prod(tensor.shape) == 0


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with U(a, b) in place; returns the tensor (torch.nn.init.uniform_). One
    np.random.rand of the tensor's shape. TypeError for a non-float tensor."""
    _tensor(tensor, "uniform_")
    _no_generator(generator, "uniform_")
    if _empty(tensor):
        return tensor
    return _write(tensor, _factories.rand(*tensor.shape, low=a, high=b, device=tensor.device, dtype=tensor.dtype))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
    """Fill with N(mean, std^2) in place; returns the tensor (torch.nn.init.normal_). One
    np.random.randn of the tensor's shape. TypeError for a non-float tensor."""
    _tensor(tensor, "normal_")
    _no_generator(generator, "normal_")
    if _empty(tensor):
        return tensor
    return _write(tensor, _factories.randn(*tensor.shape, mean=mean, std=std, device=tensor.device,
                                           dtype=tensor.dtype))


# erfinv for the inverse normal CDF: M. Giles, "Approximating the erfinv function" (GPU Computing
# Gems, 2011), the single-precision polynomials in w = -log((1 - x)(1 + x)); about 1e-7 relative
# error, plenty for initial weights
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _horner(coefficients: Tuple[float, ...], w: Tensor) -> Tensor:
    p = w * 0.0 + coefficients[0]
    for c in coefficients[1:]:
        p = p * w + c
    return p


def _erfinv(x: Tensor) -> Tensor:
    """erfinv of x in (-1, 1), elementwise, from array functions (no kernel of its own)."""
    w = -ops.log((1.0 - x) * (1.0 + x))
    central = _horner(_ERFINV_CENTRAL, w - 2.5)
    tail = _horner(_ERFINV_TAIL, ops.sqrt(ops.maximum(w, 5.0)) - 3.0)
    return ops.where(w < 5.0, central, tail) * x


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: Any = None) -> Tensor:
    """Fill with N(mean, std^2) truncated to [a, b] (absolute bounds, PyTorch's meaning), in
    place; returns the tensor (torch.nn.init.trunc_normal_). Drawn by inverting the normal
    CDF of one U(cdf(a), cdf(b)) draw (np.random.rand), PyTorch's method, then clamped to
    [a, b]. ValueError unless a < b and std > 0; TypeError for a non-float tensor."""
    _tensor(tensor, "trunc_normal_")
    _no_generator(generator, "trunc_normal_")
    if not a < b or not std > 0:
        raise ValueError(f"nn.init.trunc_normal_ needs a < b and std > 0, got a={a}, b={b}, std={std}")
    if _empty(tensor):
        return tensor

    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    low, high = 2 * cdf((a - mean) / std) - 1, 2 * cdf((b - mean) / std) - 1
    with no_grad():
        u = _factories.rand(*tensor.shape, low=low, high=high, device=tensor.device, dtype=tensor.dtype)
        # keep the argument inside (-1, 1), where erfinv is finite
        tiny = 1e-7 if array_api.dtype_name(tensor.dtype) == "float32" else 1e-15
        u = ops.where(u < -1.0 + tiny, -1.0 + tiny, ops.where(u > 1.0 - tiny, 1.0 - tiny, u))
        x = _erfinv(u) * (std * math.sqrt(2.0)) + mean
        x = ops.where(x < a, a, ops.where(x > b, b, x))
    return _write(tensor, x)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Every element <- val, in place; returns the tensor (torch.nn.init.constant_)."""
    _tensor(tensor, "constant_", floating=False)
    with no_grad():
        tensor.fill_(val)
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    """Every element <- 1, in place (torch.nn.init.ones_)."""
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    """Every element <- 0, in place (torch.nn.init.zeros_)."""
    return constant_(tensor, 0.0)


def eye_(tensor: Tensor) -> Tensor:
    """A 2-D tensor <- the identity (ones on the diagonal of a rectangle too), in place
    (torch.nn.init.eye_). ValueError for another number of dimensions."""
    _tensor(tensor, "eye_", floating=False)
    if tensor.ndim != 2:
        raise ValueError(f"nn.init.eye_: only tensors with 2 dimensions are supported, got shape {tensor.shape}")
    rows, cols = tensor.shape
    r = _factories.arange(rows, device=tensor.device).reshape((rows, 1)).broadcast_to((rows, cols))
    c = _factories.arange(cols, device=tensor.device).reshape((1, cols)).broadcast_to((rows, cols))
    return _write(tensor, ops.cast(r.eq(c), array_api.dtype_name(tensor.dtype)))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)), in place (Glorot;
    torch.nn.init.xavier_uniform_). Fans from PyTorch's layout (the module docstring);
    symmetric in them, so (in, out) weights need nothing. ValueError below 2 dimensions."""
    _tensor(tensor, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: Any = None) -> Tensor:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)), in place
    (torch.nn.init.xavier_normal_). ValueError below 2 dimensions."""
    _tensor(tensor, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: Any = None) -> Tensor:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity,
    a), fan = fan_in or fan_out (`mode`), in place (He; torch.nn.init.kaiming_uniform_). Fans
    from PyTorch's layout (out, in, *kernel): for needle's (in, out) nn.Linear weight pass
    the other mode (module docstring). ValueError for another mode, an unknown nonlinearity
    or fewer than 2 dimensions."""
    _tensor(tensor, "kaiming_uniform_")
    if _empty(tensor):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: Any = None) -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan), in place (torch.nn.init.kaiming_normal_); the
    arguments and the layout rule of kaiming_uniform_."""
    _tensor(tensor, "kaiming_normal_")
    if _empty(tensor):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)
