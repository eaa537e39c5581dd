"""2-D convolution (cross-correlation) on NHWC inputs with (KH, KW, Cin / groups, Cout) kernels.

Three ops, each the adjoint of the others, so gradients of any order stay
inside the family:

* Conv(a, b):             out = im2col(a) @ b
* ConvInputGrad(g, b):    d<out, g>/da = col2im(g @ b^T)
* ConvWeightGrad(a, g):   d<out, g>/db = im2col(a)^T @ g

im2col reads every window through one strided view (no Python loop over
positions); col2im adds the KH*KW kernel offsets back one strided slice at a time.

All three take the same geometry: stride and dilation (ints or (h, w) pairs), padding
(an int, an (h, w) pair padding both sides alike, or ((top, bottom), (left, right))) and
groups. With groups G the channels split into G equal blocks; output channel o reads
input block o // (Cout / G), and the products are one batched matmul over the blocks
(the windows viewed block first, no Python loop over groups). PyTorch's conv2d geometry
(torch.nn.functional.conv2d), with the course's NHWC layout.
"""
from __future__ import annotations

from ..autograd import TensorOp, array_api
from ._helpers import require_tensor
from ._windows import col2im, grouped_window_view, out_size, pair, sides, window_view

__all__ = ["Conv", "ConvInputGrad", "ConvWeightGrad", "conv"]


class _Geometry:
    """stride, padding, dilation and groups of a conv op, checked; the normalised forms are
    `strides` (h, w), `pads` ((top, bottom), (left, right)) and `dilations` (h, w)."""

    def __init__(self, stride, padding, dilation, groups, what: str = "conv"):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.strides = pair(stride, f"{what} stride")
        self.dilations = pair(dilation, f"{what} dilation")
        self.pads = _pads(padding, f"{what} padding")
        if isinstance(groups, bool) or not isinstance(groups, int):
            raise TypeError(f"{what} groups must be an int, got {groups!r}")
        if min(self.strides) < 1 or min(min(p) for p in self.pads) < 0 or min(self.dilations) < 1 or groups < 1:
            raise ValueError(f"{what} needs stride >= 1, padding >= 0, dilation >= 1 and groups >= 1, got "
                             f"stride={stride}, padding={padding}, dilation={dilation}, groups={groups}")

    def geometry(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups

    def out_shape(self, input_shape, kernel_shape) -> tuple:
        """(N, Ho, Wo, Cout) of this conv on an (N, H, W, Cin) input with a (KH, KW, Cin/G, Cout) kernel."""
        n, h, w, _ = input_shape
        kh, kw, _, cout = kernel_shape
        sizes = [out_size(size, k, s, sides_, d)
                 for size, k, s, sides_, d in zip((h, w), (kh, kw), self.strides, self.pads, self.dilations)]
        return (n, *sizes, cout)

    def windows(self, a, kh: int, kw: int):
        """im2col: the windows of a (N, H, W, C) as rows (N*Ho*Wo, KH*KW*C), or with groups G as
        (G, N*Ho*Wo, KH*KW*C/G), block by block; and (N, Ho, Wo)."""
        g = self.groups
        if g == 1:
            cols = array_api.device_im2col(a, (kh, kw), self.strides, self.dilations, sides(self.pads))
            if cols is not None:  # the device's one copy (no padded array in between)
                n, ho, wo = cols.shape[:3]
                return array_api.reshape(cols, (n * ho * wo, kh * kw * cols.shape[5])), (n, ho, wo)
            view = window_view(a, (kh, kw), self.strides, self.pads, dilation=self.dilations)
            n, ho, wo = view.shape[:3]
            return array_api.reshape(array_api.ascontiguousarray(view), (n * ho * wo, kh * kw * view.shape[5])), \
                (n, ho, wo)
        view = grouped_window_view(a, (kh, kw), self.strides, self.pads, self.dilations, g)
        n, ho, wo = view.shape[1:4]
        return array_api.reshape(array_api.ascontiguousarray(view), (g, n * ho * wo, kh * kw * view.shape[6])), \
            (n, ho, wo)

    def kernel_rows(self, b):
        """The (KH, KW, Cin/G, Cout) kernel as (KH*KW*Cin/G, Cout), or (G, KH*KW*Cin/G, Cout/G)."""
        kh, kw, cg, cout = b.shape
        rows = array_api.reshape(array_api.ascontiguousarray(b), (kh * kw * cg, cout))
        return rows if self.groups == 1 else self.split_columns(rows)

    def split_columns(self, rows):
        """(M, C) -> (G, M, C/G): the column blocks of each group."""
        m, c = rows.shape
        g = self.groups
        blocks = array_api.transpose(array_api.reshape(rows, (m, g, c // g)), (1, 0, 2))
        return array_api.ascontiguousarray(blocks)

    def join_columns(self, blocks):
        """(G, M, C/G) -> (M, C): split_columns undone."""
        g, m, cg = blocks.shape
        return array_api.reshape(array_api.ascontiguousarray(array_api.transpose(blocks, (1, 0, 2))), (m, g * cg))

    def describe(self) -> str:
        return f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}"


def _pads(padding, name: str):
    """An int, an (h, w) pair or ((top, bottom), (left, right)) as ((top, bottom), (left, right))."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (top, bottom), (left, right) = pair(tuple(padding[0]), name), pair(tuple(padding[1]), name)
        return (top, bottom), (left, right)
    return sides(pair(padding, name))


def _check_pair(a, b, what: str) -> None:
    require_tensor(a, what)
    require_tensor(b, what)
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"{what} needs 4-D operands, got shapes {a.shape} and {b.shape}")


def _check_fit(geo: _Geometry, input_shape, kernel_shape, what: str) -> None:
    """ValueError unless the (KH, KW, Cin/G, Cout) kernel fits the (N, H, W, Cin) input: channels,
    groups, and the dilated kernel inside the padded input."""
    kh, kw, cg, cout = kernel_shape
    g = geo.groups
    if input_shape[3] != cg * g:
        grouped = f" (groups={g}: {cg} per group)" if g > 1 else ""
        raise ValueError(f"{what}: input has {input_shape[3]} channels (shape {tuple(input_shape)}), kernel expects "
                         f"{cg * g} (shape {tuple(kernel_shape)}){grouped}")
    if cout % g:
        raise ValueError(f"{what}: {cout} output channels (kernel {tuple(kernel_shape)}) are not divisible by "
                         f"groups={g}")
    (top, bottom), (left, right) = geo.pads
    dh, dw = geo.dilations
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    if input_shape[1] + top + bottom < span[0] or input_shape[2] + left + right < span[1]:
        dilated = f" (dilated to {span[0]}x{span[1]})" if (dh, dw) != (1, 1) else ""
        raise ValueError(f"{what}: kernel {kh}x{kw}{dilated} is larger than the padded input {tuple(input_shape)} "
                         f"(padding {geo.padding})")


class Conv(_Geometry, TensorOp):
    """out[n,i,j,o] = sum_{u,v,c} a_pad[n, i*sh + u*dh, j*sw + v*dw, g*Cg + c] * b[u,v,c,o],
    g = o // (Cout / G), Cg = Cin / G.

    a: (N, H, W, Cin), b: (KH, KW, Cin / groups, Cout) -> (N, Ho, Wo, Cout) with
    Ho = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1. The course's op is
    Conv(stride, padding) with square kernels, ints and groups = dilation = 1; rectangular
    kernels, (h, w) pairs, uneven padding ((top, bottom), (left, right)), dilation and
    groups are PyTorch's conv2d's (nn.Conv1d runs as a conv of height 1, nn.Conv2d through
    F.conv2d). Raises ValueError for bad geometry, channels that do not fit or a kernel
    larger than the padded input, TypeError for a non-int stride/padding/dilation/groups.

    Edges: IEEE sums of products: a nan or inf input reaches every output window that
    covers it (inf * 0 = nan, +inf + -inf = nan) and, through the gradient, every kernel
    entry that meets it; padding is exact zeros. As PyTorch's conv2d.
    """

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        _Geometry.__init__(self, stride, padding, dilation, groups)

    def check(self, a, b):
        _check_pair(a, b, "conv")
        _check_fit(self, a.shape, b.shape, "conv")

    def compute(self, a, b):
        kh, kw, _, cout = b.shape
        cols, (n, ho, wo) = self.windows(a, kh, kw)
        out = array_api.matmul(cols, self.kernel_rows(b))
        if self.groups > 1:
            out = self.join_columns(out)
        return array_api.reshape(out, (n, ho, wo, cout))

    def gradient(self, out_grad, node):
        a, b = node.inputs
        geo = self.geometry()
        return (ConvInputGrad(a.shape, *geo)(out_grad, b) if a.requires_grad else None,
                ConvWeightGrad(b.shape, *geo)(a, out_grad) if b.requires_grad else None)


class ConvInputGrad(_Geometry, TensorOp):
    """The gradient of conv with respect to its input: col2im(g @ b^T), shape `input_shape`.

    Edges: Conv's (IEEE sums of products; overlapping windows add up).
    """

    def __init__(self, input_shape, stride, padding, dilation=1, groups=1):
        _Geometry.__init__(self, stride, padding, dilation, groups, "conv input gradient")
        self.input_shape = tuple(input_shape)

    def check(self, g, b):
        _check_pair(g, b, "conv input gradient")
        if b.shape[2] * self.groups != self.input_shape[3] or g.shape != self.out_shape(self.input_shape, b.shape):
            raise ValueError(f"conv input gradient: g {g.shape} and kernel {b.shape} do not fit input "
                             f"{self.input_shape} ({self.describe()})")

    def compute(self, g, b):
        kh, kw, cg, cout = b.shape
        n, ho, wo, _ = g.shape
        rows = array_api.reshape(array_api.ascontiguousarray(g), (n * ho * wo, cout))
        kernel = self.kernel_rows(b)
        if self.groups == 1:
            cols = array_api.matmul(rows, array_api.transpose(kernel, (1, 0)))
        else:  # (G, M, Cout/G) @ (G, Cout/G, K*Cg) -> (G, N, Ho, Wo, KH, KW, Cg) -> channels back in order
            blocks = array_api.matmul(self.split_columns(rows), array_api.transpose(kernel, (0, 2, 1)))
            blocks = array_api.reshape(blocks, (self.groups, n, ho, wo, kh, kw, cg))
            cols = array_api.ascontiguousarray(array_api.transpose(blocks, (1, 2, 3, 4, 5, 0, 6)))
        cols = array_api.reshape(cols, (n, ho, wo, kh, kw, cg * self.groups))
        return col2im(cols, self.input_shape, (kh, kw), self.strides, self.pads, self.dilations)

    def gradient(self, out_grad, node):
        g, b = node.inputs
        geo = self.geometry()
        return Conv(*geo)(out_grad, b), ConvWeightGrad(b.shape, *geo)(out_grad, g)


class ConvWeightGrad(_Geometry, TensorOp):
    """The gradient of conv with respect to its kernel: im2col(a)^T @ g, shape `kernel_shape`.

    Edges: Conv's (an inf or nan input entry reaches every kernel entry that meets it).
    """

    def __init__(self, kernel_shape, stride, padding, dilation=1, groups=1):
        _Geometry.__init__(self, stride, padding, dilation, groups, "conv weight gradient")
        self.kernel_shape = tuple(kernel_shape)

    def check(self, a, g):
        _check_pair(a, g, "conv weight gradient")
        if a.shape[3] != self.kernel_shape[2] * self.groups or g.shape != self.out_shape(a.shape, self.kernel_shape):
            raise ValueError(f"conv weight gradient: input {a.shape} and g {g.shape} do not fit kernel "
                             f"{self.kernel_shape} ({self.describe()})")

    def compute(self, a, g):
        kh, kw, _, cout = self.kernel_shape
        cols, (n, ho, wo) = self.windows(a, kh, kw)
        rows = array_api.reshape(array_api.ascontiguousarray(g), (n * ho * wo, cout))
        if self.groups == 1:
            return array_api.reshape(array_api.matmul(array_api.transpose(cols, (1, 0)), rows), self.kernel_shape)
        blocks = array_api.matmul(array_api.transpose(cols, (0, 2, 1)), self.split_columns(rows))  # (G, K*Cg, Cout/G)
        return array_api.reshape(self.join_columns(blocks), self.kernel_shape)

    def gradient(self, out_grad, node):
        a, g = node.inputs
        geo = self.geometry()
        return ConvInputGrad(a.shape, *geo)(g, out_grad), Conv(*geo)(a, out_grad)


def conv(a, b, stride=1, padding=1, dilation=1, groups=1):
    """Conv(stride, padding, dilation, groups)(a, b): NHWC input, (KH, KW, Cin / groups, Cout)
    kernel; see Conv."""
    return Conv(stride, padding, dilation, groups)(a, b)
