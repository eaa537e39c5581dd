"""2-D convolution (cross-correlation) on NHWC inputs with KKIO kernels.

Three ops, each the adjoint of the others, so gradients of any order stay
inside the family:

* Conv(a, b):             out = im2col(a) @ b
* ConvInputGrad(g, b):    d<out, g>/da = col2im(g @ b^T)
* ConvWeightGrad(a, g):   d<out, g>/db = im2col(a)^T @ g

im2col reads every window through one strided view (no Python loop over
positions); col2im adds the K*K kernel offsets back one strided slice at a time.
"""
from __future__ import annotations

from ..autograd import TensorOp, array_api
from ._helpers import require_tensor
from ._windows import col2im, out_size, pair, window_view

__all__ = ["Conv", "ConvInputGrad", "ConvWeightGrad", "conv"]


def _out_shape(input_shape, kernel_shape, stride, padding) -> tuple:
    """(N, Ho, Wo, Cout) of conv on an (N, H, W, Cin) input with a (KH, KW, Cin, Cout) kernel."""
    n, h, w, _ = input_shape
    kh, kw, _, cout = kernel_shape
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(padding, "padding")
    return n, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw), cout


def _im2col(a, kh: int, kw: int, stride, padding):
    """(N, H, W, C) -> rows of windows (N*Ho*Wo, kh*kw*C), and (N, Ho, Wo)."""
    windows = window_view(a, (kh, kw), pair(stride, "stride"), pair(padding, "padding"))
    n, ho, wo = windows.shape[:3]
    c = windows.shape[5]
    return array_api.reshape(array_api.ascontiguousarray(windows), (n * ho * wo, kh * kw * c)), (n, ho, wo)


def _col2im(cols, input_shape, kh: int, kw: int, stride, padding):
    """The adjoint of _im2col: windows (N, Ho, Wo, kh, kw, C) summed back into (N, H, W, C)."""
    return col2im(cols, input_shape, (kh, kw), pair(stride, "stride"), pair(padding, "padding"))


def _check_pair(a, b, what: str) -> None:
    require_tensor(a, what)
    require_tensor(b, what)
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"{what} needs 4-D operands, got shapes {a.shape} and {b.shape}")


class Conv(TensorOp):
    """out[n,i,j,o] = sum_{u,v,c} a_pad[n, i*stride+u, j*stride+v, c] * b[u,v,c,o].

    a: (N, H, W, Cin), b: (KH, KW, Cin, Cout) -> (N, Ho, Wo, Cout) with
    Ho = (H + 2*padding - KH) // stride + 1 (the course uses square kernels;
    rectangular ones work too). stride and padding are ints (the course's) or
    (height, width) pairs (nn.Conv1d runs as a conv of height 1 this way).

    Edges: IEEE sums of products: a nan or inf input reaches every output window that
    covers it (inf * 0 = nan, +inf + -inf = nan) and, through the gradient, every kernel
    entry that meets it; padding is exact zeros. As PyTorch's conv2d.
    """

    def __init__(self, stride=1, padding=0):
        if min(pair(stride, "conv stride")) < 1 or min(pair(padding, "conv padding")) < 0:
            raise ValueError(f"conv needs stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
        self.stride = stride
        self.padding = padding

    def check(self, a, b):
        _check_pair(a, b, "conv")
        kh, kw, cin, _ = b.shape
        if a.shape[3] != cin:
            raise ValueError(f"conv: input has {a.shape[3]} channels (shape {a.shape}), kernel expects {cin} (shape {b.shape})")
        ph, pw = pair(self.padding, "conv padding")
        if a.shape[1] + 2 * ph < kh or a.shape[2] + 2 * pw < kw:
            raise ValueError(f"conv: kernel {kh}x{kw} is larger than the padded input {a.shape} (padding {self.padding})")

    def compute(self, a, b):
        kh, kw, cin, cout = b.shape
        cols, (n, ho, wo) = _im2col(a, kh, kw, self.stride, self.padding)
        kernel = array_api.reshape(array_api.ascontiguousarray(b), (kh * kw * cin, cout))
        return array_api.reshape(array_api.matmul(cols, kernel), (n, ho, wo, cout))

    def gradient(self, out_grad, node):
        a, b = node.inputs
        s, p = self.stride, self.padding
        return (ConvInputGrad(a.shape, s, p)(out_grad, b) if a.requires_grad else None,
                ConvWeightGrad(b.shape, s, p)(a, out_grad) if b.requires_grad else None)


class ConvInputGrad(TensorOp):
    """The gradient of conv with respect to its input: col2im(g @ b^T), shape `input_shape`.

    Edges: Conv's (IEEE sums of products; overlapping windows add up).
    """

    def __init__(self, input_shape, stride, padding):
        self.input_shape = tuple(input_shape)
        self.stride = stride
        self.padding = padding

    def check(self, g, b):
        _check_pair(g, b, "conv input gradient")
        if b.shape[2] != self.input_shape[3] or g.shape != _out_shape(self.input_shape, b.shape, self.stride, self.padding):
            raise ValueError(f"conv input gradient: g {g.shape} and kernel {b.shape} do not fit input {self.input_shape}")

    def compute(self, g, b):
        kh, kw, cin, cout = b.shape
        n, ho, wo, _ = g.shape
        rows = array_api.reshape(array_api.ascontiguousarray(g), (n * ho * wo, cout))
        kernel = array_api.reshape(array_api.ascontiguousarray(b), (kh * kw * cin, cout))
        cols = array_api.reshape(array_api.matmul(rows, array_api.transpose(kernel, (1, 0))), (n, ho, wo, kh, kw, cin))
        return _col2im(cols, self.input_shape, kh, kw, self.stride, self.padding)

    def gradient(self, out_grad, node):
        g, b = node.inputs
        s, p = self.stride, self.padding
        return Conv(s, p)(out_grad, b), ConvWeightGrad(b.shape, s, p)(out_grad, g)


class ConvWeightGrad(TensorOp):
    """The gradient of conv with respect to its kernel: im2col(a)^T @ g, shape `kernel_shape`.

    Edges: Conv's (an inf or nan input entry reaches every kernel entry that meets it).
    """

    def __init__(self, kernel_shape, stride, padding):
        self.kernel_shape = tuple(kernel_shape)
        self.stride = stride
        self.padding = padding

    def check(self, a, g):
        _check_pair(a, g, "conv weight gradient")
        if a.shape[3] != self.kernel_shape[2] or g.shape != _out_shape(a.shape, self.kernel_shape, self.stride, self.padding):
            raise ValueError(f"conv weight gradient: input {a.shape} and g {g.shape} do not fit kernel {self.kernel_shape}")

    def compute(self, a, g):
        kh, kw, cin, cout = self.kernel_shape
        cols, (n, ho, wo) = _im2col(a, kh, kw, self.stride, self.padding)
        rows = array_api.reshape(array_api.ascontiguousarray(g), (n * ho * wo, cout))
        return array_api.reshape(array_api.matmul(array_api.transpose(cols, (1, 0)), rows), self.kernel_shape)

    def gradient(self, out_grad, node):
        a, g = node.inputs
        s, p = self.stride, self.padding
        return ConvInputGrad(a.shape, s, p)(g, out_grad), Conv(s, p)(a, out_grad)


def conv(a, b, stride=1, padding=1):
    """Conv(stride, padding)(a, b): NHWC input, (KH, KW, Cin, Cout) kernel; see Conv."""
    return Conv(stride, padding)(a, b)
