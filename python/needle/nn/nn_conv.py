"""2-D convolution layer on NCHW tensors."""
from __future__ import annotations

import math

from needle import init, ops
from needle.autograd import Tensor

from .nn_basic import Module, Parameter

__all__ = ["Conv"]


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
