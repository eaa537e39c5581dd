"""2-D convolution (cross-correlation) on NHWC inputs with KKIO kernels."""
from __future__ import annotations

from ..autograd import TensorOp
from ..backend_selection import array_api
from . import array_helpers
from .ops_layout import dilate, flip
from .ops_mathematic import _require_tensor, transpose


class Conv(TensorOp):
    """out[n,i,j,o] = sum_{u,v,c} a_pad[n, i*stride+u, j*stride+v, c] * b[u,v,c,o].

    a: (N, H, W, Cin), b: (KH, KW, Cin, Cout) -> (N, Ho, Wo, Cout) with
    Ho = (H + 2*padding - KH) // stride + 1 (the course uses square kernels; the
    gradient needs rectangular ones when H != W).
    """

    def __init__(self, stride: int = 1, padding: int = 0):
        if stride < 1 or padding < 0:
            raise ValueError(f"conv needs stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
        self.stride = stride
        self.padding = padding

    def check(self, a, b):
        _require_tensor(a, "conv")
        _require_tensor(b, "conv")
        if a.ndim != 4 or b.ndim != 4:
            raise ValueError(f"conv needs an NHWC input and a KKIO kernel, got shapes {a.shape} and {b.shape}")
        kh, kw, cin, _ = b.shape
        if a.shape[3] != cin:
            raise ValueError(f"conv: input has {a.shape[3]} channels (shape {a.shape}), kernel expects {cin} (shape {b.shape})")
        if a.shape[1] + 2 * self.padding < kh or a.shape[2] + 2 * self.padding < kw:
            raise ValueError(f"conv: kernel {kh}x{kw} is larger than the padded input {a.shape} (padding {self.padding})")

    def compute(self, a, b):
        p, s = self.padding, self.stride
        if p:
            a = array_api.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
        a = array_api.ascontiguousarray(a)
        n, h, w, cin = a.shape
        kh, kw, _, cout = b.shape
        ho, wo = (h - kh) // s + 1, (w - kw) // s + 1
        sn, sh, sw, sc = array_helpers.element_strides(a)
        # im2col: every window as a row, read through a strided view, then one matmul
        windows = array_helpers.strided(a, (n, ho, wo, kh, kw, cin), (sn, sh * s, sw * s, sh, sw, sc))
        cols = array_api.reshape(array_api.ascontiguousarray(windows), (n * ho * wo, kh * kw * cin))
        kernel = array_api.reshape(array_api.ascontiguousarray(b), (kh * kw * cin, cout))
        return array_api.reshape(cols @ kernel, (n, ho, wo, cout))

    def gradient(self, out_grad, node):
        a, b = node.inputs
        p, s = self.padding, self.stride
        kh, kw = b.shape[:2]
        grad = out_grad
        if s > 1:
            # undo the stride: zeros between outputs, trimmed so that the r rows/columns
            # the forward pass skipped at the end are covered exactly
            rh = (a.shape[1] + 2 * p - kh) % s
            rw = (a.shape[2] + 2 * p - kw) % s
            ho, wo = out_grad.shape[1:3]
            grad = dilate(grad, (1, 2), s - 1)[:, : (ho - 1) * s + 1 + rh, : (wo - 1) * s + 1 + rw, :]
        # input: full correlation with the flipped kernel (in/out channels swapped),
        # padded by K-1 and trimmed by the forward padding p on each side
        kernel_t = transpose(flip(b, (0, 1)), (2, 3))
        qh, qw = kh - 1 - p, kw - 1 - p
        pad = max(qh, qw, 0)
        grad_a = _crop(conv(grad, kernel_t, padding=pad), pad - qh, pad - qw)
        # weight: correlate the input (channels as batch) with the output gradient
        a_t = transpose(a, (0, 3))  # (Cin, H, W, N)
        grad_t = transpose(transpose(grad, (0, 1)), (1, 2))  # (Ho', Wo', N, Cout)
        grad_b = conv(a_t, grad_t, padding=p)  # (Cin, KH, KW, Cout)
        grad_b = transpose(transpose(grad_b, (0, 1)), (1, 2))  # (KH, KW, Cin, Cout)
        return grad_a, grad_b


def _crop(x, ch: int, cw: int):
    """Drop ch rows and cw columns from both sides of the spatial axes of NHWC x."""
    if ch == 0 and cw == 0:
        return x
    return x[:, ch : x.shape[1] - ch, cw : x.shape[2] - cw, :]


def conv(a, b, stride: int = 1, padding: int = 1):
    return Conv(stride, padding)(a, b)
