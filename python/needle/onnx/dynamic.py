"""Which sizes follow the dynamic axes: found by tracing the model at several sizes.

needle's ops hold concrete shapes (Reshape((seq_len * bs, width)), BroadcastTo((bs, n)),
a zero initial state of shape (bs, hidden), a mask sliced [:T, :T]). Written into the ONNX
graph as they are, they would fix every size. So the exporter traces the model at several
values of the dynamic axes (the batch, a sequence length: the *symbols*) and compares the
graphs node by node: a size (or a slice bound) that is the same in every trace is a
constant; one that changes is a polynomial of degree at most one in each symbol
(`c + k * batch + m * sequence + p * batch * sequence`: the sizes a reshape of (B, T, C) to
(B * T, C) makes), solved from the traces at the example's sizes and at one step away along
each symbol and each pair of them, and checked at one more point two steps away, where a size
such as T * T would betray itself. Such sizes are computed at run time from the inputs'
shapes.

The graphs must have the same structure at every point (the same ops, with the same
arguments), and their constants the same values (up to repetition along the dynamic axes, e.g.
a zero initial state of shape (layers, batch, hidden)): a constant whose values changed was
computed from the input's data outside the op graph, which ONNX cannot express.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeGuard, Union

import numpy as np

from ..autograd import Value
from .trace import Trace

__all__ = ["Sym", "Dim", "Points", "all_ints", "pair_traces", "squeeze_dynamic_axes", "TraceMismatch"]

Monomial = Tuple[str, ...]  # symbol names, sorted; () is the constant term


@dataclass(frozen=True)
class Sym:
    """A size that depends on the dynamic axes: the sum of `coefficient * product of symbols`
    over `terms` (sorted; the constant term, if any, has the empty monomial)."""

    terms: Tuple[Tuple[Monomial, int], ...]

    @staticmethod
    def of(name: str) -> "Sym":
        """The symbol itself (an input's dynamic axis)."""
        return Sym((((name,), 1),))

    @property
    def symbols(self) -> Tuple[str, ...]:
        return tuple(sorted({s for monomial, _ in self.terms for s in monomial}))

    def value(self, sizes: Dict[str, int]) -> int:
        """The size when each symbol has the value in `sizes`."""
        return sum(k * int(np.prod([sizes[s] for s in m], dtype=np.int64)) for m, k in self.terms)

    def __str__(self) -> str:
        text = ""
        for monomial, k in sorted(self.terms, key=lambda term: (-len(term[0]), term[0])):
            if not monomial:
                text += f"{k:+d}" if text else str(k)
                continue
            product = "*".join(monomial)
            piece = product if abs(k) == 1 else f"{abs(k)}*{product}"
            text += ("-" if k < 0 else "+" if text else "") + piece
        return text


Dim = Union[int, Sym]


def make_dim(terms: Dict[Monomial, int]) -> Dim:
    """The int or Sym with these coefficients (zero terms dropped)."""
    kept = tuple(sorted((m, int(k)) for m, k in terms.items() if k))
    if all(not m for m, _ in kept):
        return kept[0][1] if kept else 0
    return Sym(kept)


def all_ints(dims: Sequence[Dim]) -> TypeGuard[Sequence[int]]:
    """True when no size depends on a dynamic axis."""
    return all(isinstance(d, int) for d in dims)


class TraceMismatch(ValueError):
    """The model's graph is not the same at two sizes of the dynamic axes (the message says where)."""


class Points:
    """The sizes the model was traced at: point 0 is the example; then, for the 2^n - 1 other
    corners of the box spanned by the example's sizes and one step (`steps`, +1 or -1) along each
    of the n symbols, corner `mask` (bit j: symbol j moved); then a check point two steps away
    along every symbol, if the model runs there. An export without dynamic axes has point 0 only."""

    def __init__(self, names: Sequence[str], base: Sequence[int], steps: Sequence[int], check: bool = True):
        self.names = tuple(names)
        self.base = tuple(int(b) for b in base)
        self.steps = tuple(int(s) for s in steps)
        n = len(self.names)
        self.values: List[Tuple[int, ...]] = [
            tuple(b + (s if mask >> j & 1 else 0) for j, (b, s) in enumerate(zip(self.base, self.steps)))
            for mask in range(2 ** n)]
        if n and check and all(b + 2 * s >= 1 for b, s in zip(self.base, self.steps)):
            self.values.append(tuple(b + 2 * s for b, s in zip(self.base, self.steps)))

    def sizes(self, point: int) -> Dict[str, int]:
        return dict(zip(self.names, self.values[point]))

    def describe(self, point: int) -> str:
        return ", ".join(f"{name}={v}" for name, v in zip(self.names, self.values[point])) or "the example's sizes"

    def fit(self, values: Sequence[Optional[int]], what: str = "a size") -> Dim:
        """The int or Sym that takes `values[i]` at point i (None, a bound left out, only as a
        constant). Raises TraceMismatch if no polynomial of degree one in each symbol does."""
        if len(set(values)) == 1:
            first = values[0]
            if first is None:
                raise TraceMismatch(f"{what} is missing")
            return int(first)
        if any(v is None for v in values):
            raise TraceMismatch(f"{what} is {values[0]} at {self.describe(0)} but missing elsewhere")
        ints = [int(v) for v in values if v is not None]
        n = len(self.names)
        # f at the corners, as a multilinear polynomial in t_j = (x_j - base_j) / step_j (Moebius inversion)
        b = {mask: sum((-1) ** bin(mask ^ sub).count("1") * ints[sub] for sub in _subsets(mask))
             for mask in range(2 ** n)}
        terms: Dict[Monomial, int] = {}
        for mask, coefficient in b.items():
            if not coefficient:
                continue
            chosen = [j for j in range(n) if mask >> j & 1]
            sign = int(np.prod([self.steps[j] for j in chosen])) if chosen else 1  # 1 / step = step for +-1
            # prod_j (x_j - base_j) expanded: each subset of the chosen symbols keeps its x_j
            for kept in itertools.product((True, False), repeat=len(chosen)):
                monomial = tuple(sorted(self.names[j] for j, keep in zip(chosen, kept) if keep))
                factor = int(np.prod([-self.base[j] for j, keep in zip(chosen, kept) if not keep], dtype=np.int64))
                terms[monomial] = terms.get(monomial, 0) + coefficient * sign * factor
        dim = make_dim(terms)
        for point, value in enumerate(ints):
            got = dim if isinstance(dim, int) else dim.value(self.sizes(point))
            if got != value:
                where = "; ".join(map(self.describe, range(len(ints))))
                raise TraceMismatch(f"{what} takes the values {ints} at the traced sizes ({where}), which no "
                                    "polynomial of degree one in each dynamic axis gives (a size such as T * T)")
        return dim

    def shape(self, shapes: Sequence[Sequence[int]], what: str = "a value") -> Tuple[Dim, ...]:
        """The sizes of a value whose shape at point i is shapes[i]."""
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise TraceMismatch(f"{what} has shape {tuple(shapes[0])} at {self.describe(0)} and a different rank "
                                "elsewhere")
        return tuple(self.fit([s[axis] for s in shapes], f"axis {axis} of {what} of shape {tuple(shapes[0])}")
                     for axis in range(len(shapes[0])))


def _subsets(mask: int):
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


def _integral(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
        float(value).is_integer()


def _same_op(node1: Value, node2: Value, sized: Callable[[Any], Tuple[str, ...]]) -> bool:
    """Same op class and the same arguments, shapes and index plans aside (those are
    compared by the mappings, which read them through `Points.fit`), and the arguments that
    `sized(op)` names where they are whole numbers in both (a mean's count: the mapping
    computes them from the sizes)."""
    if type(node1.op) is not type(node2.op):
        return False
    if node1.op is None:
        return True
    attrs1, attrs2 = vars(node1.op), vars(node2.op)
    if attrs1.keys() != attrs2.keys():
        return False
    follows = sized(node1.op)
    for key, value in attrs1.items():
        if key in ("shape", "plan", "input_shape", "kernel_shape", "template"):
            continue
        if key in follows and _integral(value) and _integral(attrs2[key]):
            continue
        try:
            if bool(value != attrs2[key]):
                return False
        except (TypeError, ValueError):  # values that do not compare (arrays): treat as the same
            continue
    return True


def _where(points: Points, k: int) -> str:
    return points.describe(k)


def pair_traces(traces: Sequence[Trace], points: Points,
                sized: Callable[[Any], Tuple[str, ...]] = lambda op: ()) -> Dict[int, List[Value]]:
    """id(node of traces[0]) -> the same node in every trace, in order (traces[0]'s first).
    `sized(op)`: the names of the op's arguments that may follow the sizes (see _same_op).

    Raises TraceMismatch naming the first node that differs (another op, other arguments,
    other inputs, another number of nodes): the forward pass then depends on the sizes in a
    way that a single ONNX graph cannot follow.
    """
    first = traces[0]
    versions: Dict[int, List[Value]] = {id(t): [t] for t in first.inputs}
    for node in first.nodes:
        versions[id(node)] = [node]
    pos1 = first.position()
    inputs1 = {id(t): i for i, t in enumerate(first.inputs)}
    for k, other in enumerate(traces[1:], start=1):
        if len(first.nodes) != len(other.nodes) or len(first.outputs) != len(other.outputs):
            raise TraceMismatch(
                f"the model's op graph has {len(first.nodes)} nodes at {_where(points, 0)} and {len(other.nodes)} at "
                f"{_where(points, k)}: its computation is not the same at every size (a loop over a dynamic axis, "
                "such as an RNN/LSTM/GRU unrolled over the sequence, cannot follow that axis's size: export that "
                "axis at a fixed size)")
        pos2 = other.position()
        inputs2 = {id(t): i for i, t in enumerate(other.inputs)}
        for a, b in zip(first.inputs, other.inputs):
            versions[id(a)].append(b)
        for n1, n2 in zip(first.nodes, other.nodes):
            what = type(n1.op).__name__ if n1.op is not None else "leaf"
            same = _same_op(n1, n2, sized) and len(n1.inputs) == len(n2.inputs) and all(
                pos1[id(a)] == pos2[id(b)] for a, b in zip(n1.inputs, n2.inputs))
            if n1.op is None:  # a leaf: the same input, the same parameter, or a constant in both
                same = same and inputs1.get(id(n1)) == inputs2.get(id(n2))
                same = same and (id(n1) not in first.names or n1 is n2)
            if not same:
                raise TraceMismatch(f"the model's op graph differs between {_where(points, 0)} and "
                                    f"{_where(points, k)} at node {pos1[id(n1)]} ({what})")
            if id(n1) not in inputs1:
                versions[id(n1)].append(n2)
        for o1, o2 in zip(first.outputs, other.outputs):
            if versions[id(o1)][k] is not o2:
                raise TraceMismatch(f"the model's outputs differ between {_where(points, 0)} and {_where(points, k)}")
    return versions


def _uniform_along(array: np.ndarray, axis: int) -> bool:
    first = np.take(array, [0], axis=axis)
    return bool(np.array_equal(array, np.broadcast_to(first, array.shape), equal_nan=array.dtype.kind == "f"))


def squeeze_dynamic_axes(arrays: Sequence[np.ndarray], dims: Sequence[Dim]) -> Optional[np.ndarray]:
    """The constant `arrays[0]` (arrays[i]: the same constant at point i) with each axis whose size
    follows a dynamic axis cut to size 1, checked to be the same data at every point, cut the same
    way; None if it is not (the constant then varies along such an axis, or between the traces)."""
    axes = [i for i, d in enumerate(dims) if isinstance(d, Sym)]
    cut: List[np.ndarray] = []
    for array in arrays:
        if not all(_uniform_along(array, axis) for axis in axes):
            return None
        for axis in axes:
            array = np.take(array, [0], axis=axis)
        cut.append(array)
    first = cut[0]
    for other in cut[1:]:
        if other.shape != first.shape or not np.array_equal(other, first, equal_nan=first.dtype.kind == "f"):
            return None
    return first
