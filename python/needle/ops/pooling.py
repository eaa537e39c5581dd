"""2-D max and average pooling on NHWC arrays, and the window ops their gradients use.

Each pooling op reads every window through one strided view of the padded input
(ops/_windows.py, shared with conv) and reduces over the two window axes, so the
forward pass copies nothing but the padding. The gradients scatter back with col2im,
the same adjoint as conv's; they are written with two linear ops, Im2Col and Col2Im,
each the other's adjoint, so gradients of any order stay inside the family.

PyTorch's semantics (torch.nn.functional.max_pool2d / avg_pool2d with ceil_mode=False):
Ho = (H + 2 * padding - KH) // stride + 1, padding at most half the kernel; max pooling
pads with -inf and routes each window's gradient to its first maximal element (the last
nan of a window holding nans, as PyTorch's CPU kernel does); average pooling divides by
KH * KW (count_include_pad=True), or by the number of real cells in the window.
Layout here is NHWC (the ops layer's, as conv); needle.nn.functional takes NCHW.
"""
from __future__ import annotations

import math

from ..autograd import Tensor, TensorOp, array_api
from ._helpers import constant, require_tensor
from ._windows import check_geometry, out_size, pair, window_view
from ._windows import col2im as col2im_array
from .elementwise import where
from .shape import broadcast_to, reshape

__all__ = ["Im2Col", "Col2Im", "MaxPool2d", "AvgPool2d", "im2col", "col2im", "max_pool2d", "avg_pool2d"]


class _WindowOp(TensorOp):
    """Holds the window geometry as (h, w) pairs; stride None means the kernel size (PyTorch's default)."""

    what = "window op"

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel = pair(kernel_size, f"{self.what} kernel_size")
        self.stride = self.kernel if stride is None else pair(stride, f"{self.what} stride")
        self.padding = pair(padding, f"{self.what} padding")
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{self.what} needs kernel_size >= 1, stride >= 1 and padding >= 0, got "
                             f"kernel_size={kernel_size}, stride={stride}, padding={padding}")

    def _out_spatial(self, spatial) -> tuple:
        return tuple(out_size(s, k, st, p) for s, k, st, p in zip(spatial, self.kernel, self.stride, self.padding))

    def _check_input(self, a, pooling: bool) -> None:
        require_tensor(a, self.what)
        if a.ndim != 4:
            raise ValueError(f"{self.what} needs NHWC input of 4 dimensions, got shape {a.shape}")
        check_geometry(self.what, a.shape[1:3], self.kernel, self.stride, self.padding)
        if pooling:
            if a.dtype not in ("float32", "float64"):
                raise TypeError(f"{self.what} needs a float tensor, got dtype {a.dtype}")
            if any(2 * p > k for k, p in zip(self.kernel, self.padding)):
                raise ValueError(f"{self.what}: padding {self.padding} must be at most half the kernel size "
                                 f"{self.kernel} (PyTorch's rule)")


class Im2Col(_WindowOp):
    """Every window of the zero-padded input: (N, H, W, C) -> (N, Ho, Wo, KH, KW, C), a compact copy.

    Linear; its gradient is Col2Im. Edges: none (a copy).
    """

    what = "im2col"

    def check(self, a):
        self._check_input(a, pooling=False)

    def compute(self, a):
        return array_api.ascontiguousarray(window_view(a, self.kernel, self.stride, self.padding))

    def gradient(self, out_grad, node):
        shape = node.inputs[0].shape
        return Col2Im(shape, self.kernel, self.stride, self.padding)(out_grad)


class Col2Im(_WindowOp):
    """The adjoint of Im2Col: windows (N, Ho, Wo, KH, KW, C) summed back into `input_shape` (N, H, W, C),
    overlapping windows adding up and the padding dropped. Its gradient is Im2Col.

    Edges: IEEE sums (inf + -inf = nan where windows overlap).
    """

    what = "col2im"

    def __init__(self, input_shape, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)
        self.input_shape = tuple(input_shape)

    def check(self, cols):
        require_tensor(cols, self.what)
        n, h, w, c = self.input_shape
        expected = (n, *self._out_spatial((h, w)), *self.kernel, c)
        if cols.shape != expected:
            raise ValueError(f"col2im: windows of shape {cols.shape} do not fit input {self.input_shape} "
                             f"(expected {expected})")

    def compute(self, cols):
        return col2im_array(cols, self.input_shape, self.kernel, self.stride, self.padding)

    def gradient(self, out_grad, node):
        return Im2Col(self.kernel, self.stride, self.padding)(out_grad)


def _real_cells(input_shape, kernel, stride, padding, dtype, device):
    """(1, Ho, Wo, KH, KW, 1) array: 1 at the cells of each window inside the input, 0 on the padding."""
    _, h, w, _ = input_shape
    ones = array_api.full((1, h, w, 1), 1, dtype, device)
    return array_api.ascontiguousarray(window_view(ones, kernel, stride, padding))


def _spread(g: Tensor, kernel) -> Tensor:
    """(N, Ho, Wo, C) -> (N, Ho, Wo, KH, KW, C): each output's adjoint copied over its window."""
    n, ho, wo, c = g.shape
    return broadcast_to(reshape(g, (n, ho, wo, 1, 1, c)), (n, ho, wo, *kernel, c))


class MaxPool2d(_WindowOp):
    """Max over each KH x KW window: (N, H, W, C) -> (N, Ho, Wo, C), float input, padding with -inf.

    Gradient: each window's adjoint goes to one cell, PyTorch's choice: the first maximal
    real cell (row-major in the window; padding never wins, even in a window of -inf),
    and the last nan of a window that holds nans; overlapping windows add up (col2im).

    Edges: a window holding a nan gives nan (torch's); a window of -inf gives -inf.
    """

    what = "max_pool2d"

    def check(self, a):
        self._check_input(a, pooling=True)

    def compute(self, a):
        windows = window_view(a, self.kernel, self.stride, self.padding, fill=-math.inf)
        return array_api.max(windows, axis=(3, 4))

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        mask = constant(self._winner_mask(a.realize_cached_data()))
        routed = where(mask, _spread(out_grad, self.kernel), 0.0)
        return Col2Im(a.shape, self.kernel, self.stride, self.padding)(routed)

    def _winner_mask(self, data):
        """Bool (N, Ho, Wo, KH, KW, C): True at the one cell of each window that receives its gradient.

        The winner is the argmax of a key: 2 + position for a nan (so the last nan wins),
        1 for a real cell equal to the window's maximum, 0 otherwise (argmax takes the first).
        """
        kh, kw = self.kernel
        dtype, device = array_api.dtype_of(data), array_api.device_of(data)
        windows = array_api.ascontiguousarray(window_view(data, self.kernel, self.stride, self.padding,
                                                          fill=-math.inf))
        n, ho, wo, _, _, c = windows.shape
        shape = (n, ho, wo, kh * kw, c)
        windows = array_api.reshape(windows, shape)
        top = array_api.broadcast_to(array_api.max(windows, axis=3, keepdims=True), shape)
        real = _real_cells(tuple(data.shape), self.kernel, self.stride, self.padding, dtype, device)
        real = array_api.broadcast_to(array_api.reshape(real, (1, ho, wo, kh * kw, 1)), shape)
        position = array_api.arange(kh * kw, dtype=dtype, device=device)
        position = array_api.broadcast_to(array_api.reshape(position, (1, 1, 1, kh * kw, 1)), shape)
        is_top = array_api.multiply(array_api.astype(array_api.equal(windows, top), dtype), real)
        key = array_api.where(array_api.not_equal(windows, windows), array_api.add(position, 2.0), is_top)
        first = array_api.argmax(key, axis=3)  # (N, Ho, Wo, C)
        mask = array_api.one_hot(kh * kw, first, dtype="bool", device=device)  # (N, Ho, Wo, C, KH*KW)
        mask = array_api.ascontiguousarray(array_api.transpose(mask, (0, 1, 2, 4, 3)))
        return array_api.reshape(mask, (n, ho, wo, kh, kw, c))


class AvgPool2d(_WindowOp):
    """Mean over each KH x KW window: (N, H, W, C) -> (N, Ho, Wo, C), float input, zero padding.

    count_include_pad=True (PyTorch's default) divides by KH * KW; False divides by the
    number of real (unpadded) cells of the window. Gradient: each output's adjoint spread
    evenly over its window (the same divisor), overlapping windows adding up (col2im).

    Edges: IEEE sums (a nan or inf reaches every window that covers it).
    """

    what = "avg_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def check(self, a):
        self._check_input(a, pooling=True)

    def _divisor(self, shape, dtype, device):
        """KH * KW, or the (1, Ho, Wo, 1) array of real cells per window."""
        if self.count_include_pad or not any(self.padding):
            return self.kernel[0] * self.kernel[1]
        real = _real_cells(shape, self.kernel, self.stride, self.padding, dtype, device)
        return array_api.sum(real, axis=(3, 4))

    def compute(self, a):
        windows = window_view(a, self.kernel, self.stride, self.padding)
        total = array_api.sum(windows, axis=(3, 4))
        divisor = self._divisor(tuple(a.shape), array_api.dtype_of(a), array_api.device_of(a))
        if not isinstance(divisor, int):
            divisor = array_api.broadcast_to(divisor, tuple(total.shape))
        return array_api.divide(total, divisor)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        divisor = self._divisor(a.shape, a.dtype, a.device)
        if isinstance(divisor, int):
            share = out_grad / divisor
        else:
            share = out_grad / constant(array_api.broadcast_to(divisor, out_grad.shape))
        return Col2Im(a.shape, self.kernel, self.stride, self.padding)(_spread(share, self.kernel))


def im2col(a, kernel_size, stride=None, padding=0):
    """Im2Col: (N, H, W, C) -> windows (N, Ho, Wo, KH, KW, C)."""
    return Im2Col(kernel_size, stride, padding)(a)


def col2im(cols, input_shape, kernel_size, stride=None, padding=0):
    """Col2Im: windows (N, Ho, Wo, KH, KW, C) summed back into input_shape (N, H, W, C)."""
    return Col2Im(input_shape, kernel_size, stride, padding)(cols)


def max_pool2d(a, kernel_size, stride=None, padding=0):
    """MaxPool2d on NHWC input; stride defaults to kernel_size."""
    return MaxPool2d(kernel_size, stride, padding)(a)


def avg_pool2d(a, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
    """AvgPool2d on NHWC input; stride defaults to kernel_size."""
    return AvgPool2d(kernel_size, stride, padding, count_include_pad)(a)
