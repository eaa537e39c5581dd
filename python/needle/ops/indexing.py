"""Tensor indexing with PyTorch/numpy semantics: ints, slices, None, Ellipsis, integer
arrays and bool masks (gather). The gradient scatters back, adding repeated indices.

Index arrays stay on the tensor's device as int64: a row gather (`take_rows`) reads
them there and the gradient is a scatter-add (`index_add_rows`); only the extremes of
each index array are read back to check the bounds. A bool mask is turned into the
integer positions of its true elements (how many there are is data, so that count
is read on the host, as in every framework).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

from ..autograd import Tensor, TensorOp, array_api
from ..dtypes import python_scalar, storage_dtype
from ._helpers import inverse_permutation, size_of

__all__ = ["IndexPlan", "GetItem", "ScatterItem", "SetItem", "OneHot", "getitem", "setitem", "one_hot"]


def _is_array_like(entry) -> bool:
    """Tensors, arrays (of any library) with at least one axis, lists and ranges; a 0-d array
    is a scalar index."""
    if isinstance(entry, (Tensor, list, range)) or array_api.is_array(entry):
        return True
    shape = getattr(entry, "shape", None)
    return shape is not None and hasattr(entry, "dtype") and (len(shape) > 0 or python_scalar(entry) is None)


class IndexPlan:
    """How `tensor[index]` maps a tensor of `shape` to its result, worked out once.

    Basic indices (ints, slices, None) become a strided view; integer arrays are
    broadcast together, turned into one flat row index over the axes they index,
    and applied with a row gather (numpy's placement rule for the new axes).
    """

    def __init__(self, shape: tuple, index, device=None, *, rows_in_range: bool = False):
        """rows_in_range: `index` is an int64 Tensor of row ids its caller has checked to lie in
        [0, shape[0]) (an embedding's lookup): the plan of table[ids] is made without checking them
        again (what the general path works out for that index)."""
        self.input_shape = tuple(shape)
        if rows_in_range and isinstance(index, Tensor) and index.dtype == "int64" and len(self.input_shape) >= 1:
            self._table_rows(index.realize_cached_data())
            return
        entries = list(index) if isinstance(index, tuple) else [index]
        converted: list = []  # ints, slices, None, Ellipsis, or ("array", int64 array) per indexed axis
        for entry in entries:
            if isinstance(entry, Tensor):
                entry = entry.realize_cached_data()
            if entry is None or entry is Ellipsis or isinstance(entry, slice):
                converted.append(entry)
            elif _is_array_like(entry) and not isinstance(entry, bool):
                # a bool mask indexes as many axes as it has, and must match their sizes
                mask = array_api.index_mask_shape(entry)
                arrays = array_api.as_index(entry, device)
                converted.extend(("array", arr, mask if k == 0 else None) for k, arr in enumerate(arrays))
            elif python_scalar(entry) is not None and not isinstance(python_scalar(entry), float):
                converted.append(int(python_scalar(entry)))
            else:
                raise TypeError(f"unsupported index of type {type(entry).__name__}")
        has_array = any(isinstance(e, tuple) for e in converted)
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
        layout: List[Optional[int]] = []  # each view axis: the sliced axis it is, or None for a new one
        dim = 0
        for entry in converted:
            if entry is None:
                view_shape.append(1)
                layout.append(None)
                continue
            size = shape[dim]
            if isinstance(entry, slice):
                if entry.step is not None and entry.step <= 0:
                    raise ValueError(f"slice step must be positive, got {entry.step} on axis {dim}")
                start, stop, step = entry.indices(size)
                sl = slice(start, max(start, stop), step)
                length = len(range(sl.start, sl.stop, sl.step))
                view_shape.append(length)
                layout.append(dim)
            elif isinstance(entry, int) and not has_array:
                if not -size <= entry < size:
                    raise IndexError(f"index {entry} is out of bounds for axis {dim} with size {size}")
                sl = slice(entry % size, entry % size + 1, 1)
                length = 1
            else:  # an index array, or (like numpy) an int next to index arrays, as a 0-d one
                if isinstance(entry, int):
                    entry = ("array", array_api.as_index(entry, device)[0], None)
                mask = entry[2]
                if mask is not None and tuple(shape[dim:dim + len(mask)]) != tuple(mask):
                    axes = f"axis {dim}" if len(mask) == 1 else f"axes {dim}..{dim + len(mask) - 1}"
                    raise IndexError(f"boolean index of shape {tuple(mask)} does not match {axes} of a tensor "
                                     f"of shape {self.input_shape}")
                wrapped = array_api.wrap_index(entry[1], size, dim)
                sl = slice(0, size, 1)
                length = size
                adv_pos.append(len(view_shape))
                adv_arrays.append(wrapped)
                view_shape.append(size)
            basic.append(sl)
            sliced_shape.append(length)
            dim += 1
        self.basic = tuple(basic)
        self.layout = tuple(layout)
        self.sliced_shape = tuple(sliced_shape)
        self.view_shape = tuple(view_shape)
        self.advanced = bool(adv_pos)
        if not self.advanced:
            self.output_shape = self.view_shape
            return
        try:
            index_shape = tuple(array_api.broadcast_shapes(*[tuple(a.shape) for a in adv_arrays]))
        except ValueError:
            shapes = " and ".join(str(tuple(a.shape)) for a in adv_arrays)
            raise IndexError(f"index arrays of shapes {shapes} cannot be broadcast together") from None
        adv_dims = tuple(view_shape[p] for p in adv_pos)
        rest = [p for p in range(len(view_shape)) if p not in adv_pos]
        self.perm = tuple(adv_pos) + tuple(rest)
        self.adv_dims = adv_dims
        self.rest_shape = tuple(view_shape[p] for p in rest)
        self.rows = self._flat_rows(adv_arrays, adv_dims, index_shape)
        # the leading axes indexed by arrays and the rest whole (an embedding's weight[ids]): the
        # gather is a row take from the array itself, no slicing or transposing views in between
        self.rows_only = self.sliced_shape == self.input_shape == self.view_shape and \
            self.perm == tuple(range(len(self.perm)))
        gathered = index_shape + self.rest_shape
        self.result_perm: Optional[Tuple[int, ...]]
        adjacent = adv_pos == list(range(adv_pos[0], adv_pos[0] + len(adv_pos)))
        if adjacent and adv_pos[0] > 0:  # new axes go where the indexed axes were
            k, p0 = len(index_shape), adv_pos[0]
            n_rest = len(self.rest_shape)
            self.result_perm = tuple(range(k, k + p0)) + tuple(range(k)) + tuple(range(k + p0, k + n_rest))
            self.output_shape = tuple(gathered[i] for i in self.result_perm)
        else:
            self.result_perm = None
            self.output_shape = gathered

    def _table_rows(self, ids) -> None:
        """The attributes the general path gives table[ids] (one index array on axis 0, the other
        axes whole slices): the ids themselves are the flat rows."""
        shape = self.input_shape
        self.basic = tuple(slice(0, n, 1) for n in shape)
        self.layout = tuple(range(1, len(shape)))
        self.sliced_shape = self.view_shape = shape
        self.advanced = True
        self.perm = tuple(range(len(shape)))
        self.adv_dims = shape[:1]
        self.rest_shape = shape[1:]
        self.rows = array_api.ascontiguousarray(ids)
        self.rows_only = True
        self.result_perm = None
        self.output_shape = tuple(ids.shape) + self.rest_shape

    @staticmethod
    def _flat_rows(arrays, dims, index_shape):
        """Row-major flat positions sum_k idx_k * stride_k over the indexed axes (on the device)."""
        rows = None
        stride = 1
        for idx, dim in zip(reversed(arrays), reversed(dims)):
            term = array_api.multiply(array_api.broadcast_to(idx, index_shape), stride) if stride != 1 \
                else array_api.broadcast_to(idx, index_shape)
            rows = term if rows is None else array_api.add(rows, term)
            stride *= dim
        return array_api.ascontiguousarray(rows)

    def gather(self, a):
        """tensor[index] on backend data. Ints, slices, None and Ellipsis give a view of `a`'s
        buffer (PyTorch's basic indexing: x[0].add_(1) writes x); index arrays a copy."""
        if self.advanced and self.rows_only:
            out = array_api.take_rows(array_api.reshape(array_api.ascontiguousarray(a), (size_of(self.adv_dims),)
                                                        + self.rest_shape), self.rows)
            return out if self.result_perm is None else array_api.transpose(out, self.result_perm)
        v = array_api.getitem(a, self.basic)
        if not self.advanced:
            if self.view_shape == self.sliced_shape:
                return v
            strides = array_api.element_strides(v)  # an int's axis is dropped, a new axis has size 1
            return array_api.as_strided(v, self.view_shape, tuple(0 if j is None else strides[j] for j in self.layout))
        v = array_api.reshape(array_api.ascontiguousarray(v), self.view_shape)
        v = array_api.transpose(v, self.perm)
        v = array_api.reshape(array_api.ascontiguousarray(v), (size_of(self.adv_dims),) + self.rest_shape)
        out = array_api.take_rows(v, self.rows)
        if self.result_perm is not None:
            out = array_api.transpose(out, self.result_perm)
        return out

    def put(self, a, v):
        """A copy of `a` with the indexed places set to `v` (of the output shape). Repeated
        indices are refused: which value would win is undefined (PyTorch says so too)."""
        out = array_api.array(a, dtype=None)
        if not self.advanced:
            array_api.setitem(out, self.basic, array_api.reshape(array_api.ascontiguousarray(v), self.sliced_shape))
            return out
        count = self.scatter(array_api.full(self.output_shape, 1, "int64", array_api.device_of(a)))
        # on every replay of a compiled step too (a replay would add the repeated values up)
        array_api.check_data(_each_position_once, (array_api.max(count),))
        return array_api.where(array_api.greater(count, 0), self.scatter(v), out)

    def scatter(self, g):
        """The adjoint of gather: zeros of the input shape with g added at the indexed places."""
        dtype, device = array_api.dtype_of(g), array_api.device_of(g)
        if self.advanced:
            if self.result_perm is not None:
                g = array_api.transpose(g, inverse_permutation(self.result_perm))
            g = array_api.reshape(array_api.ascontiguousarray(g), (size_of(self.rows.shape),) + self.rest_shape)
            buf = array_api.zeros((size_of(self.adv_dims),) + self.rest_shape, dtype, device)
            array_api.index_add_rows(buf, array_api.reshape(self.rows, (-1,)), g)
            if self.rows_only:  # weight[ids]: the rows added into are the result
                return array_api.reshape(buf, self.input_shape)
            g = array_api.transpose(array_api.reshape(buf, self.adv_dims + self.rest_shape),
                                    inverse_permutation(self.perm))
        g = array_api.reshape(array_api.ascontiguousarray(g), self.sliced_shape)
        out = array_api.zeros(self.input_shape, dtype, device)
        array_api.setitem(out, self.basic, g)
        return out


def _each_position_once(most) -> None:
    """IndexError when a position is indexed more than once (`most`: the largest count)."""
    if most.item() > 1:
        raise IndexError("x[index] = value with an index that repeats a position: which value would be "
                         "kept is undefined (PyTorch says so too); index each position once")


class GetItem(TensorOp):
    """tensor[index]; the gradient scatters into zeros (repeated indices add up).

    Edges: values are copied as they are; entries not indexed get an exact 0 gradient,
    repeated ones the IEEE sum of theirs (inf + -inf = nan).
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

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
    """The adjoint of GetItem: a tensor of the indexed shape with `g` added at the index.

    Edges: repeated indices add up by IEEE rules; places not indexed are exact zeros.
    """

    reads_values = False  # its gradient needs no input value (autograd's in-place check)

    def __init__(self, plan: IndexPlan):
        self.plan = plan

    def check(self, g):
        if g.shape != self.plan.output_shape:
            raise ValueError(f"scatter expects shape {self.plan.output_shape}, got {g.shape}")

    def compute(self, g):
        return self.plan.scatter(g)

    def gradient(self, out_grad, node):
        return GetItem(self.plan)(out_grad)


class SetItem(TensorOp):
    """A copy of `a` with a[index] set to `value` (already of the indexed shape and a's dtype):
    the out-of-place form of item assignment, which `Tensor.__setitem__` writes back in place.
    The gradient: out_grad for `a` with the overwritten places zeroed, out_grad[index] for `value`.
    """

    reads_values = False  # the gradient needs no input value

    def __init__(self, plan: IndexPlan):
        self.plan = plan

    def check(self, a, value):
        if a.shape != self.plan.input_shape or value.shape != self.plan.output_shape:
            raise ValueError(f"setitem: expected shapes {self.plan.input_shape} and {self.plan.output_shape}, "
                             f"got {a.shape} and {value.shape}")

    def compute(self, a, value):
        return self.plan.put(a, value)

    def gradient(self, out_grad, node):
        zeros = Tensor.make_const(array_api.zeros(self.plan.output_shape, array_api.dtype_of(
            out_grad.realize_cached_data()), out_grad.device))
        return SetItem(self.plan)(out_grad, zeros), GetItem(self.plan)(out_grad)


class OneHot(TensorOp):
    """Rows of the n x n identity picked by class ids: ids (any shape; int64, or floats holding
    whole numbers) -> ids.shape + (n,) of `dtype`, on the ids' device (array_api.one_hot).

    No gradient (the ids are indices): in eager mode the result is a constant, while a capture for
    export keeps it as a node (ONNX OneHot). ValueError names an id outside [0, n).
    """

    def __init__(self, n: int, dtype: str):
        self.n = int(n)
        self.dtype = storage_dtype(dtype)

    def compute(self, ids):
        return array_api.one_hot(self.n, ids, dtype=self.dtype, device=array_api.device_of(ids))

    def gradient(self, out_grad, node):
        raise RuntimeError("OneHot: class ids have no gradient")  # never requires grad: the ids are not floats


def one_hot(ids: Tensor, n: int, dtype: str = "float32") -> Tensor:
    """OneHot(n, dtype)(ids): ids.shape + (n,) one-hot rows on the ids' device."""
    return OneHot(n, dtype)(ids)


def getitem(a: Tensor, index) -> Tensor:
    return GetItem(index_plan(a, index))(a)


def index_plan(a: Tensor, index) -> IndexPlan:
    """IndexPlan(a.shape, index, a.device); a plan of ints, slices, None and Ellipsis only needs
    no device and is kept per (shape, index) (a step indexes the same way every time)."""
    key = _basic_key(index)
    if key is None:
        return IndexPlan(a.shape, index, a.device)
    return _basic_plan(tuple(a.shape), key)


def _basic_key(index) -> Optional[tuple]:
    """A hashable form of an index made of plain ints, slices of ints or None, None and Ellipsis;
    None for any other index (bools, floats and numpy integers keep their own checks)."""
    key: list = []
    for entry in (index if type(index) is tuple else (index,)):
        kind = type(entry)
        if kind is int or entry is None or entry is Ellipsis:
            key.append(entry)
        elif kind is slice:
            bounds = (entry.start, entry.stop, entry.step)
            for bound in bounds:
                if bound is not None and type(bound) is not int:
                    return None
            key.append(bounds)
        else:
            return None
    return tuple(key)


@functools.lru_cache(maxsize=1024)
def _basic_plan(shape: tuple, key: tuple) -> IndexPlan:
    return IndexPlan(shape, tuple(slice(*entry) if type(entry) is tuple else entry for entry in key))


def setitem(a: Tensor, index, value) -> Tensor:
    """`a` with a[index] = value, out of place (value: a Tensor or number, broadcast to the indexed
    shape and cast to a's dtype)."""
    from .elementwise import cast
    from .shape import broadcast_to

    plan = index_plan(a, index)
    dtype = array_api.dtype_name(a.dtype)
    if not isinstance(value, Tensor) and python_scalar(value) is not None:  # on the device: no host data
        value = Tensor.make_const(array_api.full(plan.output_shape, python_scalar(value), dtype, a.device))
    elif not isinstance(value, Tensor):
        if python_scalar(value) is None and not array_api.is_array(value) and not hasattr(value, "__array__") \
                and not isinstance(value, (list, tuple)):
            raise TypeError(f"x[index] = value: value must be a Tensor, an array or a number, got "
                            f"{type(value).__name__}")
        value = Tensor(value, device=a.device, dtype=dtype, requires_grad=False)
    elif value.device != a.device:
        raise ValueError(f"x[index] = value: value is on {value.device}, x on {a.device}")
    if array_api.dtype_name(value.dtype) != dtype:
        value = cast(value, dtype)
    if tuple(value.shape) != plan.output_shape:
        try:
            value = broadcast_to(value, plan.output_shape)
        except ValueError:
            raise ValueError(f"x[index] = value: a value of shape {tuple(value.shape)} cannot be broadcast to the "
                             f"indexed shape {plan.output_shape}") from None
    return SetItem(plan)(a, value)
