"""Sliding windows over NHWC arrays, shared by convolution (ops/conv.py) and pooling
(ops/pooling.py): sizes, the strided window view (im2col without the copy) and its
adjoint, col2im. Private to needle.ops; every function works on backend arrays through
`array_api`, so both backends and every device get the same code.

Kernel sizes, strides, dilations and paddings are (height, width) pairs here; `pair` turns
the int-or-pair arguments of the public ops into them. A padding may also be one (before,
after) pair per axis, ((top, bottom), (left, right)) (`sides` reads both forms): convolution's
'same' padding of an even kernel is uneven, as in PyTorch and ONNX.
"""
from __future__ import annotations

from typing import Tuple

from ..autograd import array_api

Pair = Tuple[int, int]
Sides = Tuple[Pair, Pair]


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


def sides(padding) -> Sides:
    """A padding pair (h, w) (each side of an axis padded alike) or ((top, bottom), (left, right))
    as ((top, bottom), (left, right))."""
    ph, pw = padding
    if isinstance(ph, (tuple, list)):
        return (int(ph[0]), int(ph[1])), (int(pw[0]), int(pw[1]))
    return (ph, ph), (pw, pw)


def out_size(size: int, kernel: int, stride: int, padding, dilation: int = 1) -> int:
    """Window positions along one axis (floor mode): (size + padding - span) // stride + 1 with
    span = dilation * (kernel - 1) + 1 and `padding` the same on both sides (an int) or
    (before, after)."""
    before, after = padding if isinstance(padding, (tuple, list)) else (padding, padding)
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def check_geometry(what: str, spatial: Pair, kernel: Pair, stride: Pair, padding: Pair) -> None:
    """ValueError unless kernel >= 1, stride >= 1, padding >= 0 and the kernel fits the padded input."""
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{what} needs kernel_size >= 1, stride >= 1 and padding >= 0, got kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}")
    if any(s + 2 * p < k for s, k, p in zip(spatial, kernel, padding)):
        raise ValueError(f"{what}: kernel {kernel} is larger than the padded input {spatial} (padding {padding})")


def pad_hw(a, padding, fill=0.0):
    """(N, H, W, C) padded with `fill`: padding (ph, pw) adds ph rows and pw columns on each side,
    ((top, bottom), (left, right)) says each side's count."""
    (top, bottom), (left, right) = sides(padding)
    if not (top or bottom or left or right):
        return a
    if fill == 0:
        return array_api.pad(a, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, c = a.shape
    out = array_api.full((n, h + top + bottom, w + left + right, c), fill, array_api.dtype_of(a),
                         array_api.device_of(a))
    array_api.setitem(out, (slice(None), slice(top, top + h), slice(left, left + w), slice(None)), a)
    return out


def _padded_windows(a, kernel: Pair, stride: Pair, padding, fill, dilation: Pair):
    """The padded compact array, its element strides and the window counts (Ho, Wo)."""
    a = array_api.ascontiguousarray(pad_hw(a, padding, fill))
    _, h, w, _ = a.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    counts = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    return a, array_api.element_strides(a), counts


def window_view(a, kernel: Pair, stride: Pair, padding, fill=0.0, dilation: Pair = (1, 1)):
    """Every window of the padded (N, H, W, C) array as a strided view (N, Ho, Wo, KH, KW, C).

    No copy beyond the padding: entry [n, i, j, u, v, c] is a_pad[n, i*sh + u*dh, j*sw + v*dw, c]
    (dilation (dh, dw) spaces the kernel's taps; (1, 1) for pooling). Padded cells hold `fill`
    (0 for convolution and average pooling, -inf for max pooling).
    """
    a, (s_n, s_h, s_w, s_c), (ho, wo) = _padded_windows(a, kernel, stride, padding, fill, dilation)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return array_api.as_strided(a, (a.shape[0], ho, wo, kh, kw, a.shape[3]),
                                (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))


def grouped_window_view(a, kernel: Pair, stride: Pair, padding, dilation: Pair, groups: int):
    """window_view (zero fill) with the channels split into `groups` equal blocks, the block
    first: a strided view (G, N, Ho, Wo, KH, KW, C // G), still without a copy; entry
    [g, n, i, j, u, v, c] is a_pad[n, i*sh + u*dh, j*sw + v*dw, g * (C // G) + c]."""
    a, (s_n, s_h, s_w, s_c), (ho, wo) = _padded_windows(a, kernel, stride, padding, 0.0, dilation)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    cg = a.shape[3] // groups
    return array_api.as_strided(a, (groups, a.shape[0], ho, wo, kh, kw, cg),
                                (s_c * cg, s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))


def col2im(cols, input_shape, kernel: Pair, stride: Pair, padding, dilation: Pair = (1, 1)):
    """The adjoint of window_view (zero fill): windows (N, Ho, Wo, KH, KW, C) summed back into
    (N, H, W, C), overlapping windows adding up and the padding dropped.

    One strided slice per kernel offset (KH * KW of them), never a loop over windows; windows
    that tile the input without overlap (stride == kernel, no dilation: most pooling, global
    pooling's one window) are written back in a single pass instead. A device with a col2im
    kernel of its own (the cpu: one pass, each element adding its windows in the same offset
    order, so the same bits) sums overlapping windows with it: the array-level way costs 2 * KH * KW
    passes over the padded input and some 40 array calls (eager ResNet9: 2.8 -> 0.5 ms a step).
    """
    n, h, w, c = input_shape
    _, ho, wo = cols.shape[:3]
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    (top, bottom), (left, right) = sides(padding)
    tiled = (sh, sw) == (kh, kw) and (dh, dw) == (1, 1)
    if not tiled:  # overlapping windows: the device's one-pass kernel where it has one (same bits)
        summed = array_api.device_col2im(cols, (n, h, w, c), (kh, kw), (sh, sw), (dh, dw), (top, left))
        if summed is not None:
            return summed
    out = array_api.zeros((n, h + top + bottom, w + left + right, c), array_api.dtype_of(cols),
                          array_api.device_of(cols))
    if tiled:
        # (N, Ho, Wo, KH, KW, C) -> (N, Ho, KH, Wo, KW, C) is the top-left Ho*KH x Wo*KW block, in order
        tiles = array_api.ascontiguousarray(array_api.transpose(cols, (0, 1, 3, 2, 4, 5)))
        block = (slice(None), slice(0, ho * kh), slice(0, wo * kw), slice(None))
        array_api.setitem(out, block, array_api.reshape(tiles, (n, ho * kh, wo * kw, c)))
        kh = kw = 0  # nothing left to add
    for u in range(kh):
        for v in range(kw):
            rows = slice(u * dh, u * dh + sh * (ho - 1) + 1, sh)
            columns = slice(v * dw, v * dw + sw * (wo - 1) + 1, sw)
            piece = array_api.getitem(cols, (slice(None),) * 3 + (slice(u, u + 1), slice(v, v + 1), slice(None)))
            # the (N, Ho, Wo, C) view of that offset's windows, read in place by the add (no copy)
            s_n, s_i, s_j, _, _, s_c = array_api.element_strides(piece)
            piece = array_api.as_strided(piece, (n, ho, wo, c), (s_n, s_i, s_j, s_c))
            region = (slice(None), rows, columns, slice(None))
            # array_api's elementwise functions are installed from needle.primitives' table
            array_api.setitem(out, region, array_api.add(array_api.getitem(out, region), piece))  # type: ignore[attr-defined]
    if top or bottom or left or right:
        out = array_api.getitem(out, (slice(None), slice(top, top + h), slice(left, left + w), slice(None)))
    return array_api.ascontiguousarray(out)
