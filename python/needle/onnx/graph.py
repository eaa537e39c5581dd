"""An ONNX graph under construction: unique names, nodes, initializers, and the run-time
sizes that depend on the dynamic axes (see dynamic.py)."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import OPSET
from .dynamic import Dim, Monomial, Sym, all_ints

__all__ = ["GraphBuilder", "onnx_type", "OPSET", "IR_VERSION"]

# Opset 17 (ONNX 1.12, 2022): every operator used here has had its current form since
# 13-15 (ReduceSum with axes as an input, Shape with start/end, Split with a `split`
# input); onnxruntime has supported it since 1.14. IR version 8 is the one that
# opset 17 shipped with, so older runtimes read the files too.
IR_VERSION = 8

_ONNX_TYPES = {
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}


def onnx_type(dtype) -> int:
    """The ONNX element type of a needle/numpy dtype (float32, float64, int64, bool)."""
    name = np.dtype(str(dtype)).name
    if name not in _ONNX_TYPES:
        raise TypeError(f"needle.onnx: no ONNX element type for dtype {name}")
    return _ONNX_TYPES[name]


class GraphBuilder:
    """Collects nodes and initializers; hands out unique value names."""

    def __init__(self) -> None:
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        self._used: set = set()
        self._constants: Dict[Tuple, str] = {}
        self._sources: Dict[str, Tuple[str, int]] = {}  # symbol -> (input name, axis) its size is read from
        self._sizes: Dict[Dim, str] = {}
        self._shapes: Dict[Tuple[Dim, ...], str] = {}

    # --- names -------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A name not used yet, made from `hint`."""
        name, n = hint, 1
        while name in self._used:
            n += 1
            name = f"{hint}_{n}"
        self._used.add(name)
        return name

    def reserve(self, names: Sequence[str]) -> None:
        """Keep these exact names for the graph's inputs and outputs (others get suffixes)."""
        duplicates = sorted({n for n in names if list(names).count(n) > 1})
        if duplicates:
            raise ValueError(f"needle.onnx: input/output names used twice: {duplicates}")
        self._used.update(names)

    # --- graph inputs and outputs (names reserved first) ---------------------------------------
    def add_input(self, name: str, dtype, dims: Sequence[Dim], source: bool = True) -> str:
        """A graph input; with `source`, the first input holding a symbol alone on an axis is where
        that symbol's size is read from at run time."""
        self.inputs.append(helper.make_tensor_value_info(name, onnx_type(dtype), [_shown(d) for d in dims]))
        for axis, d in enumerate(dims):
            if source and isinstance(d, Sym) and len(d.terms) == 1 and d.terms[0][1] == 1 and len(d.terms[0][0]) == 1:
                self._sources.setdefault(d.terms[0][0][0], (name, axis))
        return name

    def default(self, name: str, array: np.ndarray) -> None:
        """The value of input `name` when it is not given (an initializer of the input's own name,
        ONNX's overridable initializer)."""
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d

    def add_output(self, value: str, name: str, dtype, dims: Sequence[Dim]) -> str:
        self.add("Identity", [value], out=name)  # outputs get their own names, even for an input or initializer
        self.outputs.append(helper.make_tensor_value_info(name, onnx_type(dtype), [_shown(d) for d in dims]))
        return name

    # --- nodes and data ----------------------------------------------------------------------
    @overload
    def add(self, op_type: str, inputs: Sequence[str], outputs: Literal[1] = 1, out: Optional[str] = None,
            **attributes: Any) -> str: ...

    @overload
    def add(self, op_type: str, inputs: Sequence[str], outputs: int, out: Optional[str] = None,
            **attributes: Any) -> Union[str, List[str]]: ...

    def add(self, op_type: str, inputs: Sequence[str], outputs: int = 1, out: Optional[str] = None,
            **attributes: Any) -> Union[str, List[str]]:
        """Append a node; returns its output name (a list when `outputs` > 1)."""
        names = [out] if out is not None else [self.fresh(f"{op_type}_out") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type), **attributes))
        return names[0] if outputs == 1 else names

    def initializer(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d
        return name

    def constant(self, value, dtype) -> str:
        """A small constant (a scalar, axes, a shape), shared by every node that uses the same one."""
        array = np.asarray(value, dtype=np.dtype(str(dtype)))
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.initializer(array, "const")
        return self._constants[key]

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 constant (axes, shapes, slice bounds)."""
        return self.constant(np.asarray(list(values), dtype=np.int64).reshape(-1), "int64")

    # --- sizes that depend on the dynamic axes --------------------------------------------------
    def size(self, dim: Dim) -> str:
        """A 1-D int64 tensor of one element: `dim`, computed from the inputs' shapes if it is a Sym."""
        if isinstance(dim, int):
            return self.ints([dim])
        if dim not in self._sizes:
            total: Optional[str] = None
            for monomial, k in dim.terms:
                term = self._product(monomial) if monomial else None
                if term is None:
                    term = self.ints([k])
                elif k != 1:
                    term = self.add("Mul", [term, self.ints([k])])
                total = term if total is None else self.add("Add", [total, term])
            assert total is not None  # (a Sym has terms)
            self._sizes[dim] = total
        return self._sizes[dim]

    def scalar_size(self, dim: Dim) -> str:
        """`dim` as a 0-d int64 tensor (a mean's count)."""
        return self.add("Reshape", [self.size(dim), self.ints([])])

    def _product(self, monomial: Monomial) -> str:
        """The run-time product of the symbols in `monomial` (a 1-element int64 tensor)."""
        key = Sym(((monomial, 1),))
        if key not in self._sizes:
            if len(monomial) == 1:
                symbol = monomial[0]
                if symbol not in self._sources:
                    raise ValueError(f"needle.onnx: a size depends on the dynamic axis {symbol!r}, but no "
                                     "input that is always given has it")
                source, axis = self._sources[symbol]
                self._sizes[key] = self.add("Shape", [source], start=axis, end=axis + 1)
            else:
                self._sizes[key] = self.add("Mul", [self._product(monomial[:-1]), self._product(monomial[-1:])])
        return self._sizes[key]

    def shape(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 shape tensor: constant runs as constants, batch sizes computed."""
        dims = tuple(dims)
        if all_ints(dims):
            return self.ints(dims)
        if dims not in self._shapes:
            pieces, run = [], []
            for d in dims:
                if isinstance(d, int):
                    run.append(d)
                    continue
                if run:
                    pieces.append(self.ints(run))
                    run = []
                pieces.append(self.size(d))
            if run:
                pieces.append(self.ints(run))
            self._shapes[dims] = pieces[0] if len(pieces) == 1 else self.add("Concat", pieces, axis=0)
        return self._shapes[dims]

    def model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="needle", ir_version=IR_VERSION)
        return model


def _shown(dim: Dim):
    """A dimension of a graph input/output: its size, or a name such as 'batch' / '20*batch' /
    'batch*sequence'."""
    return dim if isinstance(dim, int) else str(dim)
