"""Shape and layout ops: transpose/permute, reshape, broadcast, stack/split, cat and PyTorch's
split/chunk, flip, dilate, and PyTorch's view helpers (unsqueeze, squeeze, expand, narrow, roll).

None of them does arithmetic, so none has edges of its own: nan, +-inf and -0 are moved
as they are. Each one's gradient is the inverse rearrangement (broadcast's sums the
repeated entries back, where inf + -inf = nan).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp, array_api
from ..dtypes import result_dtype
from ._helpers import axis_index, inverse_permutation, normalize_axes, require_tensor, size_of, sum_to_shape
from .tuple_ops import make_tuple, tuple_get_item

__all__ = [
    "Transpose", "Permute", "Reshape", "BroadcastTo", "Stack", "Split", "Flip", "Dilate", "UnDilate",
    "Concatenate", "SplitSections", "Clone",
    "transpose", "permute", "reshape", "flatten", "broadcast_to", "stack", "split", "flip", "dilate", "undilate",
    "cat", "split_sections", "chunk", "unbind", "unsqueeze", "squeeze", "expand", "narrow", "roll", "clone",
]


class Transpose(TensorOp):
    """Swap two axes: `axes=(i, j)`, or the last two when `axes` is None.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes: Optional[tuple] = None):
        self.axes = axes

    def _pair(self, ndim: int) -> Tuple[int, int]:
        if self.axes is None:
            return ndim - 2, ndim - 1
        return tuple(self.axes)

    def check(self, a):
        require_tensor(a, "transpose")
        if self.axes is None:
            if a.ndim < 2:
                raise ValueError(f"transpose needs at least 2 dimensions, got shape {a.shape}")
        elif len(self.axes) != 2:
            raise ValueError(f"transpose swaps exactly two axes, got axes={self.axes}")
        else:
            for ax in self.axes:
                axis_index(ax, a.ndim, "transpose")

    def compute(self, a):
        return array_api.swapaxes(a, *self._pair(len(a.shape)))

    def gradient(self, out_grad, node):
        return Transpose(self.axes)(out_grad)


def transpose(a, axes=None):
    return Transpose(axes)(a)


class Permute(TensorOp):
    """General axis permutation: output axis i is input axis axes[i].

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes: tuple):
        self.axes = tuple(axes)

    def check(self, a):
        require_tensor(a, "permute")
        n = a.ndim
        if len(self.axes) != n or sorted(axis_index(x, n, "permute") for x in self.axes) != list(range(n)):
            raise ValueError(f"permute: {self.axes} is not a permutation of the axes of shape {a.shape}")

    def compute(self, a):
        return array_api.transpose(a, self.axes)

    def gradient(self, out_grad, node):
        return Permute(inverse_permutation(self.axes))(out_grad)


def permute(a, axes):
    return Permute(axes)(a)


class Reshape(TensorOp):
    """Row-major reshape; one entry of `shape` may be -1.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        require_tensor(a, "reshape")
        size = size_of(a.shape)
        shape = self.shape
        if -1 not in shape and size_of(shape) == size and (not shape or min(shape) >= 0):
            return  # the common case, in one pass
        known = size_of(d for d in self.shape if d != -1)
        unknown = self.shape.count(-1)
        ok = unknown <= 1 and all(d >= -1 for d in self.shape)
        ok = ok and (known == size if unknown == 0 else known > 0 and size % known == 0)
        if not ok:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} (size {size}) into {self.shape}")

    def compute(self, a):
        return array_api.reshape(array_api.ascontiguousarray(a), self.shape)

    def gradient(self, out_grad, node):
        return Reshape(node.inputs[0].shape)(out_grad)


def reshape(a, shape):
    return Reshape(shape)(a)


def flatten(a, start_dim: int = 0, end_dim: int = -1):
    """Merge axes start_dim..end_dim into one (PyTorch's flatten)."""
    shape = a.shape
    if not shape:
        return reshape(a, (1,))
    start, end = axis_index(start_dim, len(shape), "flatten"), axis_index(end_dim, len(shape), "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(a, shape[:start] + (size_of(shape[start : end + 1]),) + shape[end + 1 :])


class BroadcastTo(TensorOp):
    """numpy broadcasting, including new leading axes; the gradient sums the copies back.

    Edges: values are copied as they are; the summed gradient follows IEEE (inf + -inf = nan).
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, shape):
        self.shape = tuple(shape)

    def check(self, a):
        require_tensor(a, "broadcast_to")
        shape = a.shape
        if shape != self.shape and not _broadcastable(shape, self.shape):
            raise ValueError(f"cannot broadcast a tensor of shape {a.shape} to shape {self.shape}")

    def compute(self, a):
        return array_api.broadcast_to(a, self.shape)

    def gradient(self, out_grad, node):
        return sum_to_shape(out_grad, node.inputs[0].shape)


def broadcast_to(a, shape):
    return BroadcastTo(shape)(a)


@functools.lru_cache(maxsize=1024)
def _broadcastable(shape: tuple, target: tuple) -> bool:
    """Whether numpy's rule broadcasts `shape` to `target` (kept: broadcasts repeat every step)."""
    lead = len(target) - len(shape)
    return lead >= 0 and all(s == 1 or s == n for s, n in zip(shape, target[lead:]))


class Stack(TensorOp):
    """Join equal-shaped tensors along a new axis `axis`; the input is one TensorTuple.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, args):
        if not isinstance(args, TensorTuple):
            raise TypeError(f"Stack expects a TensorTuple, got {type(args).__name__}")
        shapes = [tuple(x.shape) for x in args.realize_cached_data()]
        if not shapes:
            raise ValueError("stack needs at least one tensor")
        for k, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(f"stack: tensor {k} has shape {shape}, tensor 0 has shape {shapes[0]}")
        axis_index(self.axis, len(shapes[0]) + 1, "stack")

    def compute(self, args):
        return array_api.stack(args, axis=self.axis)

    def gradient(self, out_grad, node):
        return split(out_grad, self.axis)


def stack(args, axis: Optional[int] = None, *, dim: Optional[int] = None):
    """Join equal-shaped tensors along a new axis: the course's `stack(args, axis)` and
    PyTorch's `stack(tensors, dim=0)` (give one of axis and dim; 0 when neither)."""
    if dim is not None and axis is not None:
        raise TypeError("stack: give axis or dim, not both")
    axis = dim if dim is not None else 0 if axis is None else axis
    return Stack(axis)(make_tuple(*args))


class Split(TensorTupleOp):
    """The slices of a tensor along `axis`, with that axis removed (inverse of Stack).

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient; slices
    that get no gradient count as exact zeros.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, a):
        require_tensor(a, "split")
        axis_index(self.axis, a.ndim, "split")

    def compute(self, a):
        return tuple(array_api.unstack(a, axis=self.axis))

    def gradient(self, out_grad, node):
        return stack(list(out_grad), self.axis)


def split(a, axis: int):
    """The course's split: the slices along `axis`, that axis removed (PyTorch's unbind, as a
    TensorTuple). PyTorch's chunking split is `Tensor.split` / `split_sections`."""
    return Split(axis)(a)


def unbind(a, dim: int = 0) -> tuple:
    """The slices along `dim`, that axis removed, as a tuple of tensors (torch.unbind)."""
    return tuple(Split(dim)(a))


class Concatenate(TensorOp):
    """Join tensors of one dtype along an existing axis `axis` (torch.cat); the input is one
    TensorTuple and every shape equal but along `axis`. The gradient splits the adjoint back.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int):
        self.axis = axis

    def check(self, args):
        if not isinstance(args, TensorTuple):
            raise TypeError(f"Concatenate expects a TensorTuple, got {type(args).__name__}")
        arrays = args.realize_cached_data()
        if not arrays:
            raise ValueError("cat needs at least one tensor")
        first = tuple(arrays[0].shape)
        if not first:
            raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
        axis = axis_index(self.axis, len(first), "cat")
        for k, x in enumerate(arrays):
            shape = tuple(x.shape)
            if len(shape) != len(first) or shape[:axis] + shape[axis + 1:] != first[:axis] + first[axis + 1:]:
                raise ValueError(f"cat: tensor {k} has shape {shape}, tensor 0 has shape {first}; they must be equal "
                                 f"but along axis {axis}")

    def compute(self, args):
        axis = self.axis % len(args[0].shape)
        shape = list(args[0].shape)
        shape[axis] = sum(x.shape[axis] for x in args)
        out = array_api.empty(tuple(shape), array_api.dtype_of(args[0]), array_api.device_of(args[0]))
        index = [slice(None)] * len(shape)
        start = 0
        for x in args:
            index[axis] = slice(start, start + x.shape[axis])
            start += x.shape[axis]
            if x.shape[axis]:
                array_api.setitem(out, tuple(index), x)
        return out

    def gradient(self, out_grad, node):
        sizes = [x.shape[self.axis] for x in node.inputs[0].realize_cached_data()]
        return SplitSections(self.axis, sizes)(out_grad)


class SplitSections(TensorTupleOp):
    """Consecutive pieces of `sizes` elements along `axis` (torch.split with a list of sizes;
    the inverse of Concatenate); each piece is a compact copy.

    Edges: none; values are only moved; pieces that get no gradient count as exact zeros.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axis: int, sizes: Sequence[int]):
        self.axis = axis
        self.sizes = tuple(int(n) for n in sizes)

    def check(self, a):
        require_tensor(a, "split")
        axis = axis_index(self.axis, a.ndim, "split")
        if sum(self.sizes) != a.shape[axis] or any(n < 0 for n in self.sizes):
            raise ValueError(f"split: sizes {list(self.sizes)} must be non-negative and add up to {a.shape[axis]}, "
                             f"the size of axis {axis} of a tensor of shape {a.shape}")

    def compute(self, a):
        axis = self.axis % len(a.shape)
        index = [slice(None)] * len(a.shape)
        parts, start = [], 0
        for n in self.sizes:
            index[axis] = slice(start, start + n)
            start += n
            parts.append(array_api.ascontiguousarray(array_api.getitem(a, tuple(index))))
        return tuple(parts)

    def gradient(self, out_grad, node):
        return Concatenate(self.axis)(out_grad)


def cat(tensors: Sequence[Tensor], dim: int = 0, *, axis: Optional[int] = None) -> Tensor:
    """The tensors joined along `dim` (torch.cat; `axis=` is numpy's name for it). Every shape is
    equal but along dim; a 1-D tensor of shape (0,) is skipped, as in PyTorch. The dtypes
    promote (an int64 tensor with a float32 one gives float32). ValueError names the first
    tensor whose shape differs; differentiable for every input."""
    if axis is not None:
        dim = axis
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"cat expects a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    for k, t in enumerate(tensors):
        require_tensor(t, f"cat (tensor {k})")
        if t.device != tensors[0].device:
            raise ValueError(f"cat: tensor {k} is on {t.device}, tensor 0 on {tensors[0].device}")
    kept = [t for t in tensors if tuple(t.shape) != (0,)] or [tensors[0]]
    dtype = array_api.dtype_name(kept[0].dtype)
    for t in kept[1:]:
        dtype = result_dtype(dtype, array_api.dtype_name(t.dtype))
    kept = [t if array_api.dtype_name(t.dtype) == dtype else t.to(dtype) for t in kept]
    return Concatenate(dim)(make_tuple(*kept))


def split_sections(a: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """PyTorch's torch.split: pieces of `split_size_or_sections` elements along `dim` (the last
    one smaller when the size does not divide), or of each size in a list of sizes, which must
    add up to the axis; a tuple of tensors. (`ndl.split` is the course's unbind.)
    ValueError for a size <= 0 on a non-empty axis or sizes that do not add up."""
    require_tensor(a, "split")
    axis = axis_index(dim, a.ndim, "split")
    n = a.shape[axis]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [int(s) for s in split_size_or_sections]
    else:
        step = int(split_size_or_sections)
        if step <= 0 and (n > 0 or step < 0):
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections} (axis {axis} has "
                             f"size {n})")
        sizes = [min(step, n - start) for start in range(0, n, step)] if n else [0]
    pieces = SplitSections(axis, sizes)(a)
    return tuple(tuple_get_item(pieces, i) for i in range(len(sizes)))


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple:
    """torch.chunk: `chunks` pieces along `dim`, each ceil(size / chunks) long (the last smaller,
    and fewer pieces when they run out). ValueError for chunks < 1."""
    require_tensor(a, "chunk")
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = a.shape[axis_index(dim, a.ndim, "chunk")]
    if n == 0:
        return split_sections(a, [0] * chunks, dim)
    return split_sections(a, -(-n // chunks), dim)


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    """A new axis of size 1 at position `dim` of the result, -ndim-1 <= dim <= ndim (torch.unsqueeze)."""
    require_tensor(a, "unsqueeze")
    position = axis_index(dim, a.ndim + 1, "unsqueeze")
    shape = tuple(a.shape)
    return reshape(a, shape[:position] + (1,) + shape[position:])


def squeeze(a: Tensor, dim=None) -> Tensor:
    """Without the axes of size 1 (torch.squeeze): all of them, or those of `dim` (an int or a
    tuple) that have size 1 -- a named axis of another size stays, as in PyTorch."""
    require_tensor(a, "squeeze")
    shape = tuple(a.shape)
    if dim is None:
        drop = {i for i, n in enumerate(shape) if n == 1}
    else:
        axes = dim if isinstance(dim, (tuple, list)) else (dim,)
        drop = {i for i in (axis_index(d, max(a.ndim, 1), "squeeze") for d in axes) if i < a.ndim and shape[i] == 1}
    if not drop:
        return a
    return reshape(a, tuple(n for i, n in enumerate(shape) if i not in drop))


def expand(a: Tensor, *sizes) -> Tensor:
    """`a` broadcast to `sizes` without copying (torch.Tensor.expand): -1 keeps an axis's size;
    new axes go in front (where -1 is refused). ValueError when an axis of size > 1 would change."""
    require_tensor(a, "expand")
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    sizes = tuple(int(n) for n in sizes)
    lead = len(sizes) - a.ndim
    if lead < 0:
        raise ValueError(f"expand: {len(sizes)} sizes {sizes} for a tensor of {a.ndim} dimensions, shape {a.shape}")
    sized = []
    for i, n in enumerate(sizes):
        if n == -1:
            if i < lead:
                raise ValueError(f"expand: size -1 is not allowed for the new leading axis {i} of {sizes}")
            n = a.shape[i - lead]
        elif n < 0:
            raise ValueError(f"expand: size {n} in {sizes}")
        sized.append(n)
    target = tuple(sized)
    if target == tuple(a.shape):
        return a
    for i, n in enumerate(a.shape):
        if n != 1 and target[lead + i] != n:
            raise ValueError(f"expand: the size of axis {lead + i} would change from {n} to {target[lead + i]} "
                             f"(only size-1 axes expand); shape {a.shape} to {target}")
    return broadcast_to(a, target)


def narrow(a: Tensor, dim: int, start: int, length: int) -> Tensor:
    """Elements start .. start + length - 1 along `dim` (torch.narrow; a negative start counts
    from the end). ValueError when the range leaves the axis."""
    require_tensor(a, "narrow")
    axis = axis_index(dim, a.ndim, "narrow")
    n = a.shape[axis]
    start, length = int(start), int(length)
    if start < 0:
        start += n
    if not 0 <= start <= n or length < 0 or start + length > n:
        raise ValueError(f"narrow: start {start} and length {length} do not fit axis {axis} of size {n}")
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + length)
    return a[tuple(index)]


def roll(a: Tensor, shifts, dims=None) -> Tensor:
    """Elements shifted by `shifts` along `dims`, wrapping around (torch.roll): with dims None the
    flattened tensor is rolled and the shape restored; otherwise shifts and dims are ints or
    tuples of one length. Differentiable (the gradient rolls back)."""
    require_tensor(a, "roll")
    if dims is None:
        if isinstance(shifts, (tuple, list)):
            if len(shifts) != 1:
                raise ValueError(f"roll: without dims, shifts must be one int, got {shifts}")
            shifts = shifts[0]
        return reshape(roll(reshape(a, (-1,)), shifts, 0), tuple(a.shape))
    shifts = tuple(shifts) if isinstance(shifts, (tuple, list)) else (shifts,)
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    if len(shifts) != len(dims):
        raise ValueError(f"roll: {len(shifts)} shifts {shifts} for {len(dims)} dims {dims}")
    out = a
    for shift, d in zip(shifts, dims):
        axis = axis_index(d, a.ndim, "roll")
        n = a.shape[axis]
        k = int(shift) % n if n else 0
        if k:
            out = cat([narrow(out, axis, n - k, k), narrow(out, axis, 0, n - k)], axis)
    return out


class Clone(TensorOp):
    """A copy of the input in a buffer of its own (torch.clone); the gradient passes through.

    Edges: none; values (nan, +-inf, -0) are copied as they are.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        return array_api.array(a, dtype=None)

    def gradient(self, out_grad, node):
        return out_grad


def clone(a: Tensor) -> Tensor:
    """A differentiable copy with a buffer of its own (torch.clone)."""
    require_tensor(a, "clone")
    return Clone()(a)


class Flip(TensorOp):
    """Reverse the order of elements along each of `axes`.

    Edges: none; values (nan, +-inf, -0) are only moved, and so is the gradient.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, axes=None):
        self.axes = axes

    def check(self, a):
        require_tensor(a, "flip")
        normalize_axes(self.axes, a.ndim, "flip")

    def compute(self, a):
        return array_api.flip(a, normalize_axes(self.axes, len(a.shape), "flip"))

    def gradient(self, out_grad, node):
        return flip(out_grad, self.axes)


def flip(a, axes):
    return Flip(axes)(a)


def _present_axes(axes, ndim: int) -> tuple:
    """The axes that exist in an array of `ndim` dimensions (others are ignored)."""
    return tuple(sorted({ax % ndim for ax in axes if -ndim <= ax < ndim}))


class _DilationOp(TensorOp):
    """Shared arguments of Dilate and UnDilate: the axes and the number of zeros between elements."""

    def __init__(self, axes: tuple, dilation: int):
        if dilation < 0:
            raise ValueError(f"dilation must be non-negative, got {dilation}")
        self.axes = tuple(axes)
        self.dilation = dilation


class Dilate(_DilationOp):
    """Insert `dilation` zeros after every element along each of `axes`.

    Edges: none; values are moved and the inserted entries are exact +0 (never nan).
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        d = self.dilation
        for ax in _present_axes(self.axes, len(a.shape)):
            if d == 0:
                break
            shape = tuple(a.shape)
            # a new length-1 axis after `ax`, padded to d+1, then merged into `ax`
            a = array_api.reshape(array_api.ascontiguousarray(a), shape[: ax + 1] + (1,) + shape[ax + 1 :])
            widths = [(0, 0)] * len(a.shape)
            widths[ax + 1] = (0, d)
            a = array_api.pad(a, widths)
            a = array_api.reshape(a, shape[:ax] + (shape[ax] * (d + 1),) + shape[ax + 1 :])
        return a

    def gradient(self, out_grad, node):
        return undilate(out_grad, self.axes, self.dilation)


def dilate(a, axes, dilation):
    return Dilate(axes, dilation)(a)


class UnDilate(_DilationOp):
    """Keep every (dilation+1)-th element along each of `axes`, starting at 0.

    Edges: none; the dropped entries get an exact 0 gradient, whatever they hold.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def compute(self, a):
        ndim = len(a.shape)
        present = _present_axes(self.axes, ndim)
        step = self.dilation + 1
        return array_api.getitem(a, tuple(slice(None, None, step) if i in present else slice(None)
                                          for i in range(ndim)))

    def gradient(self, out_grad, node):
        grad = dilate(out_grad, self.axes, self.dilation)
        shape = node.inputs[0].shape
        if grad.shape != shape:  # the input's length was not a multiple of dilation + 1
            grad = grad[tuple(slice(0, n) for n in shape)]
        return grad


def undilate(a, axes, dilation):
    return UnDilate(axes, dilation)(a)

