"""The cuda device's code generator for fused elementwise groups (see `fusion.py`).

A group becomes one `cuda.jit` kernel: a grid-stride loop over the flat (row-major) element
index of the group's shape, like the eager kernels of `kernels_cuda`. Each input is read
directly at that index when it is compact, else through the device's strided-offset helper
(`_strided_offset`, over the shape collapsed as the eager kernels collapse it); values used
after the group or outliving the step are written the same way (compact outputs, strided
stores of `ewise_setitem`). Every operation is applied through the same `_OPS` device
functions the eager kernels call, and every value is cast to the dtype its eager kernel
would have stored, so any elementwise kernel can be fused -- transcendental ones too.
Scalars are typed as the eager kernel types them (`_typed_scalar`); HostScalars (Adam's bias
corrections, a scheduled learning rate) are read at each launch.

How close it is to the eager step: under numba's CUDA simulator (where tests/cuda run) a
fused step is bit-identical to the eager cuda step, since both evaluate the same Python
device functions on the same numpy scalar types. On a GPU, NVVM contracts a * b + c into one
FMA by default (libNVVM's -fma=1) once the multiply and the add sit in one kernel, so there a
fused step matches the eager cuda step within float rounding. (This module has been checked
by the simulator and by compiling its kernels to PTX -- tests/cuda/compile_check.py --
not by running on a GPU.)

Compiled kernels are cached in this process by their source: numba-cuda's dispatchers have no
disk cache of the kind the cpu generator uses (a generated file beside numba's cache), so a
new process compiles its groups again (once each, at the first replay).
"""
from __future__ import annotations

import hashlib
import linecache
import math
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import numpy as np

from ..backend_ndarray import kernels_cuda as K
from ..backend_ndarray.recording import View
from ..dtypes import HostScalar
from .fusion import Node, operand

__all__ = ["GENERATOR", "CudaFusedKernel"]

_CAST = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}
_READ = re.compile(r"in(\d+)\[IDX\]")


def _compact(operand: tuple) -> bool:
    """Whether an operand (slot, shape, strides, offset) is read or written at the flat index."""
    _, shape, strides, offset = operand
    return offset == 0 and (strides is None or tuple(strides) == K.compact_strides(tuple(shape)))


class _CudaGenerator:
    """Recognises kernels_cuda's elementwise kernels (by their tags: `.primitive`/`.form`, or
    `.op`/`.form` for its own) and builds kernels."""

    @staticmethod
    def node(call) -> Optional[Tuple[tuple, Node]]:
        """(output shape, node) for a fusable cuda call, else None; node.expr is an `_OPS` name."""
        fn, args = call.fn, call.args
        form, op = getattr(fn, "form", None), K.op_of(fn)
        if form == "reverse":
            form = "scalar"  # its op is the reflected one: f(a, val) = g(val, a)
        if form in ("ewise", "where"):
            operands = [operand(a) for a in args[:-1]]
            if any(o is None for o in operands):
                return None
            views = cast(List[View], operands)  # (none is None: checked above)
            if len({o[1] for o in views}) != 1:
                return None
            return views[0][1], Node(op, views, args[-1], args[-1].dtype)
        if form in ("scalar", "unary", "abs", "power"):
            a, out = operand(args[0]), args[-1]
            if a is None:
                return None
            dtype, scalar = a[0].dtype, None
            if form == "scalar":
                scalar = (args[1], dtype)
            elif form == "abs":
                op = K.abs_op(dtype)
            elif form == "power":
                if isinstance(args[1], HostScalar):  # the operation chosen depends on the value
                    return None
                op, typed = K.power_op(args[1], dtype)
                scalar = (args[1], dtype) if typed else None
            return a[1], Node(op, [a], out, out.dtype, scalar=scalar)
        if form == "compact" and not isinstance(args[0], tuple):
            a, out, shape, strides, offset = args
            return tuple(shape), Node(op, [operand(View(a, shape, strides, offset))], out, out.dtype)
        if form == "setitem" and not isinstance(args[0], tuple):
            a, out, shape, strides, offset = args
            return tuple(shape), Node(op, [View(a, tuple(shape), None, 0)], None, out.dtype,
                                      store=View(out, tuple(shape), tuple(strides), offset))
        return None

    @staticmethod
    def expr(node: Node, names: List[str], scalar: Optional[str]) -> str:
        # the eager kernels pass the scalar last: f(a, val) (reversed kernels have reversed ops)
        return f"op_{node.expr}({', '.join(names + ([scalar] if scalar else []))})"

    @staticmethod
    def cast(dtype: str, expr: str) -> str:
        # what the eager kernel's store into an array of `dtype` does to the value
        return f"{_CAST[dtype]}({expr})"

    @staticmethod
    def kernel(lines, inputs, scalar_dtypes, outputs, out_vars, shape) -> "CudaFusedKernel":
        return CudaFusedKernel(lines, inputs, scalar_dtypes, outputs, out_vars, shape)


GENERATOR = _CudaGenerator()


class CudaFusedKernel:
    """A generated grid-stride kernel over the elements of one shape (see the module docstring)."""

    def __init__(self, lines: List[str], inputs: List[tuple], scalar_dtypes: List[str], outputs: List[tuple],
                 out_vars: List[str], shape: tuple):
        self.shape = shape
        self.n_inputs, self.scalar_dtypes = len(inputs), list(scalar_dtypes)
        # which operands go through the strided helper is fixed by the recording
        self.strided_in = [not _compact(o) for o in inputs]
        self.strided_out = [not _compact(o) for o in outputs]
        self.source = _source(lines, self.strided_in, len(scalar_dtypes), self.strided_out, out_vars)
        self.__module__ = __name__
        self.__name__ = "fused"

    @property
    def identity(self) -> tuple:
        """What the kernel computes: equal for two groups doing the same (compile/dedupe.py)."""
        return (self.source, self.shape, self.n_inputs, tuple(self.scalar_dtypes))

    def __call__(self, *args) -> None:  # run unbound (a replay binds it once, see prepare)
        self.prepare(args)()

    def prepare(self, args: tuple) -> Callable[[], None]:
        """A launch over fixed buffers: the argument list is built once; HostScalars are read
        at each launch, and the geometry too (tests change it)."""
        ni, ns = self.n_inputs, len(self.scalar_dtypes)
        n = math.prod(self.shape)
        if n == 0:
            return lambda: None
        operands = list(args[:ni]) + list(args[ni + ns:])
        strided = self.strided_in + self.strided_out
        views = [K.view_of(o) for o, s in zip(operands, strided) if s]
        # the strided operands' axes, merged where they all allow (as the eager kernels do)
        shape, strides = K.collapse(self.shape, *(v[2] for v in views)) if views else ((n,), [])
        strides = iter(strides)
        flat: List[list] = []
        for o, s in zip(operands, strided):
            flat.append([o[0].array, o[3], next(strides)] if s else [o[0].array])
        ins = [x for f in flat[:ni] for x in f]
        outs = [x for f in flat[ni:] for x in f]
        kernel = _compiled(self.source)
        scalars = list(args[ni:ni + ns])
        dtypes = self.scalar_dtypes

        def typed(vals):
            return [K.typed_scalar(K.scalar_value(v), d) for v, d in zip(vals, dtypes)]

        fixed = None if any(isinstance(s, HostScalar) for s in scalars) else typed(scalars)

        def run() -> None:
            threads = K.GEOMETRY.threads
            K.launch(kernel, K.blocks(n, threads), threads, n, shape, *ins,
                      *(fixed if fixed is not None else typed(scalars)), *outs)
        return run


def _source(lines: List[str], strided_in: List[bool], n_scalars: int, strided_out: List[bool],
            out_vars: List[str]) -> str:
    """The kernel's Python source; its name is derived from its body (stable across processes)."""
    def operand(name: str, strided: bool) -> List[str]:
        return [name, f"{name}_off", f"{name}_st"] if strided else [name]

    def read(match) -> str:
        j = int(match.group(1))
        return f"in{j}[at(i, shape, in{j}_st, in{j}_off)]" if strided_in[j] else f"in{j}[i]"

    params = ["n", "shape"]
    for j, s in enumerate(strided_in):
        params += operand(f"in{j}", s)
    params += [f"s{j}" for j in range(n_scalars)]
    for j, s in enumerate(strided_out):
        params += operand(f"out{j}", s)
    body = [_READ.sub(read, line) for line in lines]
    for j, (s, v) in enumerate(zip(strided_out, out_vars)):
        body.append(f"out{j}[at(i, shape, out{j}_st, out{j}_off)] = {v}" if s else f"out{j}[i] = {v}")
    text = "\n".join(["    for i in range(cuda.grid(1), n, cuda.gridsize(1)):"] + ["        " + b for b in body])
    name = "fused_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"def {name}({', '.join(params)}):\n{text}\n"


_COMPILED: Dict[str, Any] = {}


def _compiled(source: str):
    """The cuda.jit kernel for `source` (compiled once per process: see the module docstring).
    Called by module attribute, so tests/cuda/compile_check.py can record it as a kernel factory.

    Its globals are the device functions of the operations it names, the strided helper, numpy
    (the casts) and numba.cuda (the simulator swaps its own module in for that one)."""
    kernel = _COMPILED.get(source)
    if kernel is not None:
        return kernel
    name = source[4:source.index("(")]
    namespace = {"cuda": K.cuda, "np": np, "at": K.strided_offset}
    for op in set(re.findall(r"\bop_(\w+)\(", source)):
        namespace[f"op_{op}"] = K.device_op(op)
    filename = f"<needle {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # for tracebacks
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 (our own generated source)
    kernel = _COMPILED[source] = K.cuda.jit(namespace[name])
    return kernel

