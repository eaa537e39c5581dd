"""Tensor indexing with PyTorch/numpy semantics: ints, slices, None, Ellipsis and
integer arrays (gather). The gradient scatters back, adding repeated indices."""
from __future__ import annotations

import numpy

from ..autograd import NDArray, Tensor, TensorOp
from ..backend_selection import BACKEND, array_api
from . import array_helpers
from .ops_mathematic import inverse_permutation


def _as_index_array(idx):
    """Integer index arrays from Tensors, NDArrays, lists and ranges (None if not an array)."""
    if isinstance(idx, Tensor):
        idx = idx.numpy()
    elif BACKEND == "nd" and isinstance(idx, NDArray):
        idx = idx.numpy()
    elif isinstance(idx, (list, range)):
        idx = numpy.asarray(idx)
    if not isinstance(idx, numpy.ndarray):
        return None
    if idx.dtype.kind == "f":
        if not numpy.all(idx == numpy.round(idx)):
            raise TypeError("tensor indices must hold integers")
        idx = idx.astype(numpy.int64)
    elif idx.dtype.kind not in "iub":
        raise TypeError(f"tensor indices must be integers or booleans, got dtype {idx.dtype}")
    return idx


class IndexPlan:
    """How `tensor[index]` maps a tensor of `shape` to its result, worked out once.

    Basic indices (ints, slices, None) become a strided view; integer arrays are
    broadcast together, turned into one flat row index over the axes they index,
    and applied with a row gather (numpy's placement rule for the new axes).
    """

    def __init__(self, shape: tuple, index):
        self.input_shape = tuple(shape)
        entries = list(index) if isinstance(index, tuple) else [index]
        converted = []
        for entry in entries:
            arr = _as_index_array(entry)
            if arr is not None and arr.dtype.kind == "b":
                converted.extend(arr.nonzero())  # a mask indexes arr.ndim axes
            elif arr is not None:
                converted.append(arr)
            elif entry is None or entry is Ellipsis or isinstance(entry, slice):
                converted.append(entry)
            elif isinstance(entry, (int, numpy.integer)):
                converted.append(int(entry))
            else:
                raise TypeError(f"unsupported index of type {type(entry).__name__}")
        has_array = any(isinstance(e, numpy.ndarray) for e in converted)
        if has_array:  # like numpy, ints next to arrays index as 0-d arrays
            converted = [numpy.asarray(e) if isinstance(e, int) else e for e in converted]
        consumed = sum(1 for e in converted if e is not None and e is not Ellipsis)
        if consumed > len(shape):
            raise IndexError(f"too many indices ({consumed}) for a tensor of shape {self.input_shape}")
        ellipses = [i for i, e in enumerate(converted) if e is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if ellipses:
            converted[ellipses[0] : ellipses[0] + 1] = [slice(None)] * (len(shape) - consumed)
        converted += [slice(None)] * (len(shape) - sum(1 for e in converted if e is not None))

        basic, view_shape, adv_pos, adv_arrays, sliced_shape = [], [], [], [], []
        dim = 0
        for entry in converted:
            if entry is None:
                view_shape.append(1)
                continue
            size = shape[dim]
            if isinstance(entry, slice):
                if entry.step is not None and entry.step <= 0:
                    raise ValueError(f"slice step must be positive, got {entry.step} on axis {dim}")
                start, stop, step = entry.indices(size)
                sl = slice(start, max(start, stop), step)
                length = len(range(sl.start, sl.stop, sl.step))
                view_shape.append(length)
            elif isinstance(entry, int):
                if not -size <= entry < size:
                    raise IndexError(f"index {entry} is out of bounds for axis {dim} with size {size}")
                sl = slice(entry % size, entry % size + 1, 1)
                length = 1
            else:
                if entry.size and (entry.min() < -size or entry.max() >= size):
                    bad = entry[(entry < -size) | (entry >= size)].ravel()[0]
                    raise IndexError(f"index {bad} is out of bounds for axis {dim} with size {size}")
                sl = slice(0, size, 1)
                length = size
                adv_pos.append(len(view_shape))
                adv_arrays.append(numpy.where(entry < 0, entry + size, entry))
                view_shape.append(size)
            basic.append(sl)
            sliced_shape.append(length)
            dim += 1
        self.basic = tuple(basic)
        self.sliced_shape = tuple(sliced_shape)
        self.view_shape = tuple(view_shape)
        self.advanced = bool(adv_pos)
        if not self.advanced:
            self.output_shape = self.view_shape
            return
        try:
            arrays = numpy.broadcast_arrays(*adv_arrays)
        except ValueError:
            shapes = " and ".join(str(a.shape) for a in adv_arrays)
            raise IndexError(f"index arrays of shapes {shapes} cannot be broadcast together") from None
        adv_dims = tuple(view_shape[p] for p in adv_pos)
        rest = [p for p in range(len(view_shape)) if p not in adv_pos]
        self.perm = tuple(adv_pos) + tuple(rest)
        self.adv_dims = adv_dims
        self.rest_shape = tuple(view_shape[p] for p in rest)
        self.rows = numpy.asarray(numpy.ravel_multi_index(tuple(arrays), adv_dims))
        index_shape = self.rows.shape
        gathered = index_shape + self.rest_shape
        adjacent = adv_pos == list(range(adv_pos[0], adv_pos[0] + len(adv_pos)))
        if adjacent and adv_pos[0] > 0:  # new axes go where the indexed axes were
            k, p0 = len(index_shape), adv_pos[0]
            n_rest = len(self.rest_shape)
            self.result_perm = tuple(range(k, k + p0)) + tuple(range(k)) + tuple(range(k + p0, k + n_rest))
            self.output_shape = tuple(gathered[i] for i in self.result_perm)
        else:
            self.result_perm = None
            self.output_shape = gathered

    def gather(self, a):
        """tensor[index] on backend data."""
        v = a[self.basic]
        if self.view_shape != self.sliced_shape or self.advanced:
            v = array_api.reshape(array_api.ascontiguousarray(v), self.view_shape)
        if not self.advanced:
            return v
        v = array_api.transpose(v, self.perm)
        v = array_api.reshape(array_api.ascontiguousarray(v), (int(numpy.prod(self.adv_dims)),) + self.rest_shape)
        out = array_helpers.take_rows(v, self.rows)
        if self.result_perm is not None:
            out = array_api.transpose(out, self.result_perm)
        return out

    def scatter(self, g):
        """The adjoint of gather: zeros of the input shape with g added at the indexed places."""
        if self.advanced:
            if self.result_perm is not None:
                g = array_api.transpose(g, inverse_permutation(self.result_perm))
            g = array_api.reshape(array_api.ascontiguousarray(g), (self.rows.size,) + self.rest_shape)
            buf = array_helpers.zeros((int(numpy.prod(self.adv_dims)),) + self.rest_shape, like=g)
            array_helpers.index_add_rows(buf, self.rows.ravel(), g)
            g = array_api.transpose(array_api.reshape(buf, self.adv_dims + self.rest_shape), inverse_permutation(self.perm))
        g = array_api.reshape(array_api.ascontiguousarray(g), self.sliced_shape)
        out = array_helpers.zeros(self.input_shape, like=g)
        out[self.basic] = g
        return out


class GetItem(TensorOp):
    """tensor[index]; the gradient scatters into zeros (repeated indices add up)."""

    def __init__(self, plan: IndexPlan):
        self.plan = plan

    def check(self, a):
        if a.shape != self.plan.input_shape:
            raise ValueError(f"index plan made for shape {self.plan.input_shape}, applied to {a.shape}")

    def compute(self, a):
        return self.plan.gather(a)

    def gradient(self, out_grad, node):
        return ScatterItem(self.plan)(out_grad)


class ScatterItem(TensorOp):
    """The adjoint of GetItem: a tensor of the indexed shape with `g` added at the index."""

    def __init__(self, plan: IndexPlan):
        self.plan = plan

    def check(self, g):
        if g.shape != self.plan.output_shape:
            raise ValueError(f"scatter expects shape {self.plan.output_shape}, got {g.shape}")

    def compute(self, g):
        return self.plan.scatter(g)

    def gradient(self, out_grad, node):
        return GetItem(self.plan)(out_grad)


def getitem(a: Tensor, index) -> Tensor:
    return GetItem(IndexPlan(a.shape, index))(a)
