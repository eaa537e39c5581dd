"""Sliding windows over NHWC arrays, shared by convolution (ops/conv.py) and pooling
(ops/pooling.py): sizes, the strided window view (im2col without the copy) and its
adjoint, col2im. Private to needle.ops; every function works on backend arrays through
`array_api`, so both backends and every device get the same code.

Kernel sizes, strides and paddings are (height, width) pairs here; `pair` turns the
int-or-pair arguments of the public ops into them.
"""
from __future__ import annotations

from typing import Tuple

from ..autograd import array_api

Pair = Tuple[int, int]


def pair(value, name: str) -> Pair:
    """An int or a sequence of two ints as an (h, w) pair of ints; TypeError otherwise."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    if not all(isinstance(v, int) or (hasattr(v, "__index__") and not isinstance(v, float)) for v in items) \
            or any(isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Window positions along one axis: (size + 2 * padding - kernel) // stride + 1 (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_geometry(what: str, spatial: Pair, kernel: Pair, stride: Pair, padding: Pair) -> None:
    """ValueError unless kernel >= 1, stride >= 1, padding >= 0 and the kernel fits the padded input."""
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{what} needs kernel_size >= 1, stride >= 1 and padding >= 0, got kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}")
    if any(s + 2 * p < k for s, k, p in zip(spatial, kernel, padding)):
        raise ValueError(f"{what}: kernel {kernel} is larger than the padded input {spatial} (padding {padding})")


def pad_hw(a, padding: Pair, fill=0.0):
    """(N, H, W, C) padded by padding[0] rows and padding[1] columns on each side with `fill`."""
    ph, pw = padding
    if not (ph or pw):
        return a
    if fill == 0:
        return array_api.pad(a, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, h, w, c = a.shape
    out = array_api.full((n, h + 2 * ph, w + 2 * pw, c), fill, array_api.dtype_of(a), array_api.device_of(a))
    array_api.setitem(out, (slice(None), slice(ph, ph + h), slice(pw, pw + w), slice(None)), a)
    return out


def window_view(a, kernel: Pair, stride: Pair, padding: Pair, fill=0.0):
    """Every window of the padded (N, H, W, C) array as a strided view (N, Ho, Wo, KH, KW, C).

    No copy beyond the padding: entry [n, i, j, u, v, c] is a_pad[n, i*sh + u, j*sw + v, c].
    Padded cells hold `fill` (0 for convolution and average pooling, -inf for max pooling).
    """
    a = array_api.ascontiguousarray(pad_hw(a, padding, fill))
    n, h, w, c = a.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_n, s_h, s_w, s_c = array_api.element_strides(a)
    return array_api.as_strided(a, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))


def col2im(cols, input_shape, kernel: Pair, stride: Pair, padding: Pair):
    """The adjoint of window_view (zero fill): windows (N, Ho, Wo, KH, KW, C) summed back into
    (N, H, W, C), overlapping windows adding up and the padding dropped.

    One strided slice per kernel offset (KH * KW of them), never a loop over windows; windows
    that tile the input without overlap (stride == kernel: most pooling, global pooling's one
    window) are written back in a single pass instead.
    """
    n, h, w, c = input_shape
    _, ho, wo = cols.shape[:3]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out = array_api.zeros((n, h + 2 * ph, w + 2 * pw, c), array_api.dtype_of(cols), array_api.device_of(cols))
    if (sh, sw) == (kh, kw):
        # (N, Ho, Wo, KH, KW, C) -> (N, Ho, KH, Wo, KW, C) is the top-left Ho*KH x Wo*KW block, in order
        tiles = array_api.ascontiguousarray(array_api.transpose(cols, (0, 1, 3, 2, 4, 5)))
        block = (slice(None), slice(0, ho * kh), slice(0, wo * kw), slice(None))
        array_api.setitem(out, block, array_api.reshape(tiles, (n, ho * kh, wo * kw, c)))
        kh = kw = 0  # nothing left to add
    for u in range(kh):
        for v in range(kw):
            rows = slice(u, u + sh * (ho - 1) + 1, sh)
            columns = slice(v, v + sw * (wo - 1) + 1, sw)
            piece = array_api.getitem(cols, (slice(None),) * 3 + (slice(u, u + 1), slice(v, v + 1), slice(None)))
            piece = array_api.reshape(array_api.ascontiguousarray(piece), (n, ho, wo, c))
            region = (slice(None), rows, columns, slice(None))
            array_api.setitem(out, region, array_api.add(array_api.getitem(out, region), piece))
    if ph or pw:
        out = array_api.getitem(out, (slice(None), slice(ph, ph + h), slice(pw, pw + w), slice(None)))
    return array_api.ascontiguousarray(out)
