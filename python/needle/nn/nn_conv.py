"""Convolution layers: the course's Conv (2-D, NCHW, 'same' padding) and PyTorch's Conv1d (NCL)."""
from __future__ import annotations

import math

from needle import init, ops
from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module, Parameter

__all__ = ["Conv", "Conv1d"]


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


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

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(f"Conv1d({self.in_channels}, {self.out_channels}, {self.kernel_size}) expects input of "
                             f"shape (N, {self.in_channels}, L) or ({self.in_channels}, L), got {x.shape}")
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding)
