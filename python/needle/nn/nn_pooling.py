"""Pooling layers with PyTorch's semantics on NCHW input: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.

Thin modules around needle.nn.functional (which moves the input to NHWC for the pooling ops
of needle.ops.pooling: one strided window view, a reduction, and col2im for the gradient).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from needle.autograd import Tensor

from . import functional as F
from .nn_basic import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]

IntOrPair = Union[int, Tuple[int, int]]


class _Pool2d(Module):
    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0):
        super().__init__()
        name = type(self).__name__
        kernel = F._ints(kernel_size, 2, f"{name} kernel_size")
        strides = kernel if stride is None else F._ints(stride, 2, f"{name} stride")
        pads = F._ints(padding, 2, f"{name} padding")
        if min(kernel) < 1 or min(strides) < 1 or min(pads) < 0:
            raise ValueError(f"{name} needs kernel_size >= 1, stride >= 1 and padding >= 0, got "
                             f"kernel_size={kernel_size}, stride={stride}, padding={padding}")
        if any(2 * p > k for k, p in zip(kernel, pads)):
            raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel_size}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride  # PyTorch's default: the kernel size
        self.padding = padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """torch.nn.MaxPool2d(kernel_size, stride=None, padding=0) with ceil_mode=False:
    (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo), Ho = (H + 2 padding - KH) // stride + 1.
    Padding (with -inf) at most half the kernel. The gradient goes to each window's first
    maximal element, as PyTorch's."""

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dilation=1, ceil_mode=False"

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, count_include_pad=True) with
    ceil_mode=False: (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo); zero padding counts in the
    divisor KH * KW unless count_include_pad=False."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d(output_size), any output size (an int, or a pair whose None
    entry keeps the input's size): (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo) with PyTorch's
    windows [floor(i H / Ho), ceil((i + 1) H / Ho)). AdaptiveAvgPool2d(1) is global average
    pooling."""

    def __init__(self, output_size: Union[int, None, Tuple[Optional[int], Optional[int]]]):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)
