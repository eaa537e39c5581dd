"""Convolution layers: the course's Conv (2-D, NCHW, 'same' padding) and PyTorch's Conv1d (NCL),
Conv2d and ConvTranspose2d (NCHW, PyTorch's signatures, weight layouts and initialisation)."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

from needle import init, ops
from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module, Parameter

__all__ = ["Conv", "Conv1d", "Conv2d", "ConvTranspose2d"]


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _conv_repr(in_channels: int, out_channels: int, kernel: Any, stride: Any, padding: Any, dilation: Any,
               groups: int, bias: bool, padding_mode: str) -> str:
    """PyTorch's Conv extra_repr: the settings that differ from the defaults are shown."""
    n = len(kernel)
    text = f"{in_channels}, {out_channels}, kernel_size={kernel}, stride={stride}"
    if padding != (0,) * n:
        text += f", padding={padding}"
    if dilation != (1,) * n:
        text += f", dilation={dilation}"
    if groups != 1:
        text += f", groups={groups}"
    if not bias:
        text += ", bias=False"
    if padding_mode != "zeros":
        text += f", padding_mode={padding_mode}"
    return text


class Conv(Module):
    """Conv2d with 'same' padding (kernel_size // 2), square kernels; input and output NCHW.

    Matches torch.nn.Conv2d(in, out, k, stride, padding=k // 2) with its weight
    permuted (3, 2, 0, 1) into needle's (k, k, in, out) layout.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _first(kernel_size)
        self.stride = _first(stride)
        self.padding = self.kernel_size // 2
        k = self.kernel_size
        self.weight = Parameter(
            init.kaiming_uniform(
                in_channels * k * k, out_channels * k * k, shape=(k, k, in_channels, out_channels),
                device=device, dtype=dtype,
            )
        )
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt(in_channels * k * k)
            self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return _conv_repr(self.in_channels, self.out_channels, (k, k), (s, s), (p, p), (1, 1), 1,
                          self.bias is not None, "zeros")

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv({self.in_channels}, {self.out_channels}, {self.kernel_size}) expects input of shape "
                f"(N, {self.in_channels}, H, W), got {x.shape}"
            )
        nhwc = x.transpose((1, 2)).transpose((2, 3))
        out = ops.conv(nhwc, self.weight, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            out = out + self.bias.reshape((1, 1, 1, self.out_channels)).broadcast_to(out.shape)
        return out.transpose((2, 3)).transpose((1, 2))


class Conv1d(Module):
    """torch.nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
    (N, Cin, L) or (Cin, L) -> (N, Cout, Lo), Lo = (L + 2 padding - K) // stride + 1, zero padding.

    The weight is stored in PyTorch's layout (Cout, Cin, K), so a torch Conv1d's state dict
    loads as it is; the bias is (Cout,). Both are initialised as PyTorch's: U(-b, b) with
    b = 1 / sqrt(Cin * K) (kaiming_uniform with a = sqrt(5) gives exactly that bound), the
    weight drawn first, through init.rand (numpy's global RNG). Runs as a 2-D convolution of
    height 1 (see F.conv1d). No groups or dilation; kernel_size, stride and padding are ints
    (or 1-tuples).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 device=None, dtype: str = "float32"):
        super().__init__()
        (k,) = F._ints(kernel_size, 1, "Conv1d kernel_size")
        (s,) = F._ints(stride, 1, "Conv1d stride")
        (p,) = F._ints(padding, 1, "Conv1d padding")
        if in_channels < 1 or out_channels < 1 or k < 1 or s < 1 or p < 0:
            raise ValueError(f"Conv1d needs channels >= 1, kernel_size >= 1, stride >= 1 and padding >= 0, got "
                             f"in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size}, "
                             f"stride={stride}, padding={padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = k, s, p
        bound = 1.0 / math.sqrt(in_channels * k)
        self.weight = Parameter(init.rand(out_channels, in_channels, k, low=-bound, high=bound, device=device,
                                          dtype=dtype))
        self.bias = None
        if bias:
            self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return _conv_repr(self.in_channels, self.out_channels, (self.kernel_size,), (self.stride,), (self.padding,),
                          (1,), 1, self.bias is not None, "zeros")

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(f"Conv1d({self.in_channels}, {self.out_channels}, {self.kernel_size}) expects input of "
                             f"shape (N, {self.in_channels}, L) or ({self.in_channels}, L), got {x.shape}")
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding)


class Conv2d(Module):
    """torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
    groups=1, bias=True, padding_mode='zeros'): (N, Cin, H, W) or unbatched (Cin, H, W) ->
    (N, Cout, Ho, Wo) (or (Cout, Ho, Wo)), Ho = (H + top + bottom - dilation * (KH - 1) - 1)
    // stride + 1. Beside the course's nn.Conv ('same' padding, (k, k, in, out) weight), which
    stays as it is.

    kernel_size, stride, dilation: ints or (h, w) pairs (non-square allowed). padding: an int or
    (h, w) pair, or 'valid' / 'same' (PyTorch's rules: 'same' needs stride 1; an odd total
    dilation * (K - 1) puts the extra row/column at the bottom/right). groups: Cin and Cout
    split into that many blocks (groups = Cin: depthwise). padding_mode: 'zeros', or 'reflect',
    'replicate' and 'circular', which pad the input first as torch.nn.functional.pad does
    (PyTorch's Conv2d does the same).

    The weight is stored in PyTorch's layout (Cout, Cin / groups, KH, KW), so a torch Conv2d's
    state dict loads as it is; the bias is (Cout,). Both are initialised as PyTorch's:
    U(-b, b) with b = 1 / sqrt(fan_in), fan_in = Cin / groups * KH * KW (kaiming_uniform with
    a = sqrt(5) gives exactly that bound), the weight drawn first, then the bias, through
    init.rand (numpy's global RNG). forward is F.conv2d.

    Raises ValueError for channels < 1, in/out channels not divisible by groups, kernel,
    stride, dilation < 1 or padding < 0, an unknown padding string or padding_mode, 'same'
    with stride > 1; and, in forward, for an input that is not (N, Cin, H, W) / (Cin, H, W)
    or smaller than the dilated kernel after padding (naming the shapes). TypeError for
    sizes that are not ints or pairs of ints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1, padding: Union[str, int, Tuple[int, int]] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype: Optional[str] = None):
        super().__init__()
        name = f"Conv2d({in_channels}, {out_channels}, {kernel_size})"
        kernel = F._ints(kernel_size, 2, "Conv2d kernel_size")
        stride = F._ints(stride, 2, "Conv2d stride")
        dilation = F._ints(dilation, 2, "Conv2d dilation")
        for what, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: {what} must be an int, got {value!r}")
        if in_channels < 1 or out_channels < 1 or groups < 1 or min(kernel) < 1 or min(stride) < 1 \
                or min(dilation) < 1:
            raise ValueError(f"{name} needs channels, groups, kernel_size, stride and dilation >= 1, got "
                             f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}, "
                             f"kernel_size={kernel_size}, stride={stride}, dilation={dilation}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} and out_channels={out_channels} must both be "
                             f"divisible by groups={groups}")
        if padding_mode not in F.PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {F.PADDING_MODES}, got {padding_mode!r}")
        if not isinstance(padding, str):
            padding = F._ints(padding, 2, "Conv2d padding")
        pads = F._conv2d_pads(padding, kernel, stride, dilation, name)  # checks the strings and 'same'
        if min(min(p) for p in pads) < 0:
            raise ValueError(f"{name} needs padding >= 0, got padding={padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.groups, self.padding_mode = groups, padding_mode
        dtype = "float32" if dtype is None else dtype
        fan_in = in_channels // groups * kernel[0] * kernel[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(init.rand(out_channels, in_channels // groups, *kernel, low=-bound, high=bound,
                                          device=device, dtype=dtype))
        self.bias = None
        if bias:
            self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return _conv_repr(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                          self.dilation, self.groups, self.bias is not None, self.padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}, {self.kernel_size}) expects input "
                             f"of shape (N, {self.in_channels}, H, W) or ({self.in_channels}, H, W), got {shape}")
        if self.padding_mode == "zeros":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        pads = F._conv2d_pads(self.padding, self.kernel_size, self.stride, self.dilation, "Conv2d")
        padded = F._mode_pad(x, pads, self.padding_mode, f"Conv2d(padding_mode={self.padding_mode!r})")
        return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode='zeros'): (N, Cin, H, W) or
    unbatched (Cin, H, W) -> (N, Cout, Ho, Wo), Ho = (H - 1) stride - 2 padding
    + dilation (KH - 1) + output_padding + 1 (the gradient of a Conv2d with the same settings
    with respect to its input; F.conv_transpose2d).

    The weight is stored in PyTorch's layout (Cin, Cout / groups, KH, KW), so a torch
    ConvTranspose2d's state dict loads as it is; the bias is (Cout,). Both are initialised as
    PyTorch's: U(-b, b) with b = 1 / sqrt(fan_in), where PyTorch's fan_in of this weight is
    Cout / groups * KH * KW (its second axis), the weight drawn first, then the bias, through
    init.rand (numpy's global RNG). forward(x, output_size=None): output_size (the (Ho, Wo),
    optionally with N and C in front) picks the output_padding that gives that size, as
    PyTorch's (ValueError if none can).

    Raises ValueError for channels < 1, in/out channels not divisible by groups, kernel, stride,
    dilation < 1, padding or output_padding < 0, output_padding not smaller than stride or
    dilation, a padding_mode other than 'zeros' (PyTorch's only one); in forward, for an input
    that is not (N, Cin, H, W) / (Cin, H, W). TypeError for sizes that are not ints or pairs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1, padding: Union[int, Tuple[int, int]] = 0,
                 output_padding: Union[int, Tuple[int, int]] = 0, groups: int = 1, bias: bool = True,
                 dilation: Union[int, Tuple[int, int]] = 1, padding_mode: str = "zeros", device=None,
                 dtype: Optional[str] = None):
        super().__init__()
        name = f"ConvTranspose2d({in_channels}, {out_channels}, {kernel_size})"
        kernel = F._ints(kernel_size, 2, "ConvTranspose2d kernel_size")
        strides = F._ints(stride, 2, "ConvTranspose2d stride")
        pads = F._ints(padding, 2, "ConvTranspose2d padding")
        extras = F._ints(output_padding, 2, "ConvTranspose2d output_padding")
        dilations = F._ints(dilation, 2, "ConvTranspose2d dilation")
        for what, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: {what} must be an int, got {value!r}")
        if in_channels < 1 or out_channels < 1 or groups < 1 or min(kernel) < 1 or min(strides) < 1 \
                or min(dilations) < 1 or min(pads) < 0 or min(extras) < 0:
            raise ValueError(f"{name} needs channels, groups, kernel_size, stride and dilation >= 1 and padding, "
                             f"output_padding >= 0, got in_channels={in_channels}, out_channels={out_channels}, "
                             f"groups={groups}, kernel_size={kernel_size}, stride={stride}, padding={padding}, "
                             f"output_padding={output_padding}, dilation={dilation}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} and out_channels={out_channels} must both be "
                             f"divisible by groups={groups}")
        if any(op >= max(s, d) for op, s, d in zip(extras, strides, dilations)):
            raise ValueError(f"{name}: output_padding {extras} must be smaller than either stride {strides} "
                             f"or dilation {dilations}")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported (PyTorch's rule), got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size: Tuple[int, ...] = kernel
        self.stride: Tuple[int, ...] = strides
        self.padding: Tuple[int, ...] = pads
        self.dilation: Tuple[int, ...] = dilations
        self.output_padding: Tuple[int, ...] = extras
        self.groups, self.padding_mode = groups, padding_mode
        dtype = "float32" if dtype is None else dtype
        bound = 1.0 / math.sqrt(out_channels // groups * kernel[0] * kernel[1])
        self.weight = Parameter(init.rand(in_channels, out_channels // groups, *kernel, low=-bound, high=bound,
                                          device=device, dtype=dtype))
        self.bias = None
        if bias:
            self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device, dtype=dtype))

    def _output_padding(self, x: Tensor, output_size) -> Tuple[int, ...]:
        """The output_padding that makes the output (Ho, Wo) = output_size[-2:] (PyTorch's rule:
        any size from the smallest one up to stride - 1 more, or dilation - 1 more)."""
        if output_size is None:
            return self.output_padding
        sizes = tuple(output_size)
        if len(sizes) not in (2, x.ndim) or not all(isinstance(v, int) for v in sizes):
            raise ValueError(f"ConvTranspose2d: output_size must be (H, W) or the whole output shape, got "
                             f"{output_size!r}")
        sizes = sizes[-2:]
        smallest = F._transposed_sizes("ConvTranspose2d", x.shape[-2:], self.kernel_size, self.stride, self.padding,
                                       (0, 0), self.dilation)
        extras = tuple(want - low for want, low in zip(sizes, smallest))
        if any(not 0 <= p < max(s, d) for p, s, d in zip(extras, self.stride, self.dilation)):
            raise ValueError(f"ConvTranspose2d: output_size {tuple(output_size)} cannot be reached from input "
                             f"{x.shape}: the sizes between {smallest} and "
                             f"{tuple(low + max(s, d) - 1 for low, s, d in zip(smallest, self.stride, self.dilation))}"
                             " can")
        return extras

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ConvTranspose2d({self.in_channels}, {self.out_channels}, {self.kernel_size}) expects "
                             f"input of shape (N, {self.in_channels}, H, W) or ({self.in_channels}, H, W), got {shape}")
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(x, output_size), self.groups, self.dilation)
