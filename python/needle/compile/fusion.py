"""Fusing chains of elementwise kernels into generated kernels (cpu: numba; cuda: numba.cuda).

A *group* is a run of consecutive recorded calls that are all elementwise (arithmetic,
comparisons, unary functions, dtype casts) on one device over one output shape, optionally
ending in stores into strided destinations (`ewise_setitem`, e.g. an optimizer writing a
parameter in place). A value made inside the group and used only there never touches
memory: it is a local variable of the generated loop. Values used after the group, or
that outlive the step, are written to their buffers as before. So a chain of k
kernels becomes one pass over memory instead of k, and one launch instead of k.

Growing groups and naming their values (`fuse_calls`, `_grow`, `_fuse`) is the same for
every device; what differs sits behind a small per-device *code generator*, looked up by
the recorded kernel's module (`_GENERATORS`): which calls it can fuse and the expression
of each, and the generated kernel (its loop, compilation, cache and launch).

cpu (`kernels_cpu`, this module): only operations whose fused form is bit-identical to
numpy's kernel are fused (the `exact` primitives), so a fused step gives exactly the eager step's
numbers. Each group is turned into Python source -- a loop over the elements doing the
chain's scalar operations in the recorded order -- compiled with numba
(`error_model="numpy"`: x / 0 gives inf, not an exception). The source is written under
the kernel cache folder (`NEEDLE_CACHE_DIR`, default `~/.cache/needle/kernels`) with
numba's disk cache on, so a second process with the same groups compiles nothing.
Scalars keep the dtype numpy would compute in (a Python float next to float32 data is a
float32), HostScalars are read at each run.

cuda (`kernels_cuda`, `fusion_cuda.py`): a `cuda.jit` kernel per group, applying the same
`_OPS` device functions as the eager kernels, so every elementwise operation fuses
(see that module's docstring for the loop, the cache and how it matches the eager step).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..backend_ndarray.host_buffer import out_view, read, strided_view
from ..backend_ndarray.recording import Slot
from ..dtypes import FLOAT_DTYPES, HostScalar
from ..primitives import EXPR_FUNCTIONS

__all__ = ["fuse_calls", "cache_dir", "FusedKernel"]

# Only the primitives whose fused form gives the same bits as numpy's kernel (`exact` in
# needle.primitives: one IEEE operation each; numba does not contract a * b + c into an FMA)
# are fused on the cpu. Transcendental functions (exp, log, tanh, pow, sigmoid) are left to
# numpy, whose SIMD versions can differ from numba's in the last bit -- so a fused step is
# bit-identical to the eager one, and a run resumed mid-way (which traces at other points)
# to an uninterrupted run. The generated module takes the expressions' functions from numpy.
_EXPR_IMPORTS = "from numpy import " + ", ".join(EXPR_FUNCTIONS) + "  # noqa: F401, A004\n"
_NUMBA_TYPE = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}


def cache_dir() -> str:
    """Where generated kernels (and numba's compiled code for them) are kept."""
    return os.environ.get("NEEDLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "needle",
                                                             "kernels")


# --- recognising fusable calls -----------------------------------------------------------------------

class _Node:
    """One elementwise call: its operation (in its device generator's terms), operands,
    output slot and dtypes."""

    __slots__ = ("expr", "operands", "out", "dtype", "scalar", "store", "gen")

    def __init__(self, expr, operands, out, dtype, scalar=None, store=None):
        self.expr, self.operands, self.out, self.dtype = expr, operands, out, dtype
        self.scalar = scalar  # (value, dtype of the operand it goes with) for scalar kernels
        self.store = store    # (slot, shape, strides, offset) for ewise_setitem
        self.gen = None       # the code generator of the call's device (set by _node)


# kernel module -> the module holding its device's code generator (`GENERATOR`), imported when
# a recording first uses that device. A device without an entry is simply never fused.
_GENERATORS: Dict[str, str] = {
    "needle.backend_ndarray.kernels_cpu": __name__,
    "needle.backend_ndarray.kernels_cuda": "needle.compile.fusion_cuda",
}


def _generator(fn):
    """The code generator for a recorded kernel's device, or None."""
    module = _GENERATORS.get(getattr(fn, "__module__", None) or "")
    return None if module is None else importlib.import_module(module).GENERATOR


def _node(call) -> Optional[Tuple[tuple, _Node]]:
    """(output shape, node) for a fusable call of any device, else None."""
    gen = _generator(call.fn)
    found = None if gen is None else gen.node(call)
    if found is not None:
        found[1].gen = gen
    return found


def _operand(arg) -> Optional[tuple]:
    """(slot, shape, strides, offset) of a recorded operand, strides None when it reads the
    buffer from its start in row-major order (compact)."""
    if isinstance(arg, tuple) and len(arg) == 4 and isinstance(arg[0], Slot):
        slot, shape, strides, offset = arg
        if strides is not None and tuple(strides) == _compact_strides(tuple(shape)):
            strides = None
        return slot, tuple(shape), strides, offset
    return None


def _compact_strides(shape: tuple) -> tuple:
    from ..backend_ndarray.ndarray import _compact_strides as strides_of

    return strides_of(shape)


def _cpu_node(call) -> Optional[Tuple[tuple, _Node]]:
    """(output shape, node) for a fusable call of the cpu device, else None."""
    from ..backend_ndarray import kernels_cpu

    fn, args = call.fn, call.args
    p, form = getattr(fn, "primitive", None), getattr(fn, "form", None)
    if p is not None:
        if not p.exact or (p.floating and args[-1].dtype not in FLOAT_DTYPES):
            return None
        if form == "ewise":
            a, b, out = _operand(args[0]), _operand(args[1]), args[2]
            if a is None or b is None or a[1] != b[1]:
                return None
            return a[1], _Node(p.expr, [a, b], out, out.dtype)
        if form in ("scalar", "reverse"):
            a, val, out = _operand(args[0]), args[1], args[2]
            if a is None:
                return None
            # numpy computes a Python scalar in the array's dtype, except in comparisons
            kind = _python_dtype(val) if p.dtype == "bool" else a[0].dtype
            expr = p.expr if form == "scalar" else p.expr.format(a="{b}", b="{a}")
            return a[1], _Node(expr, [a], out, out.dtype, scalar=(val, kind))
        if form == "unary":
            a, out = _operand(args[0]), args[1]
            return None if a is None else (a[1], _Node(p.expr, [a], out, out.dtype))
        return None
    if fn is kernels_cpu.compact and isinstance(args[0], Slot):
        a, out, shape, strides, offset = args
        return tuple(shape), _Node("{a}", [_operand((a, shape, strides, offset))], out, out.dtype)
    if fn is kernels_cpu.ewise_setitem and isinstance(args[0], Slot):
        a, out, shape, strides, offset = args
        return tuple(shape), _Node("{a}", [(a, tuple(shape), None, 0)], None, out.dtype,
                                   store=(out, tuple(shape), tuple(strides), offset))
    return None


def _python_dtype(value) -> str:
    value = value.value if isinstance(value, HostScalar) else value
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int64"
    return "float64"


# --- grouping -------------------------------------------------------------------------------------

def fuse_calls(calls: List[Any], outlives: set) -> List[Any]:
    """`calls` with every run of two or more fusable calls over one shape replaced by a fused call.

    `outlives` holds the indices of slots that must be in memory after the step (state,
    inputs, outputs); every other slot that only a group touches stays inside it.
    """
    from .program import Call

    uses: Dict[int, List[int]] = {}
    for i, call in enumerate(calls):
        for slot in call.slots():
            uses.setdefault(slot.index, []).append(i)
    out: List[Any] = []
    i = 0
    while i < len(calls):
        group, shape = _grow(calls, i)
        if len(group) >= 2:
            out.append(Call(*_fuse(group, shape, range(i, i + len(group)), uses, outlives), "fused"))
            i += len(group)
        else:
            out.append(calls[i])
            i += 1
    return out


def _grow(calls, start: int) -> Tuple[List[_Node], Optional[tuple]]:
    """The longest group starting at `start` (its nodes and shape).

    The generated loop runs each element's whole chain before the next element's (and on
    cuda, elements in parallel), so a buffer the group writes may only be read, or written
    again, through that same view: element i then touches only its own position. Another
    view of it (x[1:] = x[:-1] + 1) would see other elements' writes early."""
    first = _node(calls[start])
    if first is None:
        return [], None
    shape, node = first
    compact = (shape, None, 0)
    group: List[_Node] = []
    stored = set()
    made = set()
    reads: Dict[int, set] = {}   # buffer -> the views the group reads it through
    writes: Dict[int, tuple] = {}  # buffer -> the view the group writes it through
    for call in calls[start:]:
        found = first if not group else _node(call)
        if found is None or found[0] != shape or found[1].gen is not first[1].gen:
            break
        node = found[1]
        # a store followed by a read of the same buffer would need the store to have happened
        if any(o[0].index in stored for o in node.operands):
            break
        # a value made in the group exists one element at a time: it can only be read in step
        if any(o[0].index in made and (o[2] is not None or o[3] != 0) for o in node.operands):
            break
        targets = []
        if node.out is not None:
            targets.append((node.out.index, compact))
        if node.store is not None:
            out, sshape, sstrides, soffset = node.store
            strides = None if tuple(sstrides) == _compact_strides(sshape) else tuple(sstrides)
            targets.append((out.index, (sshape, strides, soffset)))
        if any(writes.get(b, view) != view or any(r != view for r in reads.get(b, ())) for b, view in targets):
            break
        for o in node.operands:
            if o[0].index not in made:
                reads.setdefault(o[0].index, set()).add(o[1:])
        for b, view in targets:
            writes[b] = view
        if node.out is not None:
            made.add(node.out.index)
        if node.store is not None:
            stored.add(node.store[0].index)
        group.append(node)
    return group, shape


def _fuse(nodes: List[_Node], shape: tuple, positions, uses, outlives) -> Tuple[Any, tuple]:
    """The group's fused kernel (from its device's generator) and its call arguments.

    The body is a list of lines `v<k> = <cast to the call's dtype>(<expression>)`, one per
    call in recorded order, reading memory as `in<j>[IDX]` (the generator decides how an
    element index reads each operand) and scalars as `s<j>`."""
    gen = nodes[0].gen
    last = max(positions)
    made = {}  # slot index -> local variable holding its value
    inputs: List[tuple] = []  # operands read from memory
    input_var: Dict[tuple, str] = {}
    scalars: List[Tuple[Any, str]] = []
    outputs: List[tuple] = []  # (operand to write, variable)
    lines = []
    for k, node in enumerate(nodes):
        names = []
        for o in node.operands:
            slot, oshape, strides, offset = o
            compact_read = strides is None and offset == 0
            if slot.index in made and compact_read:
                names.append(made[slot.index])
                continue
            key = (slot.index, oshape, strides, offset)
            if key not in input_var:
                input_var[key] = f"in{len(inputs)}"
                inputs.append(o)
            names.append(input_var[key] + "[IDX]")
        scalar = None
        if node.scalar is not None:
            scalar = f"s{len(scalars)}"
            scalars.append(node.scalar)
        value = f"v{k}"
        lines.append(f"{value} = {gen.cast(node.dtype, gen.expr(node, names, scalar))}")
        if node.store is not None:
            outputs.append((node.store, value))
            continue
        made[node.out.index] = value
        later = [p for p in uses.get(node.out.index, ()) if p > last]
        if later or node.out.index in outlives or (k == len(nodes) - 1 and not outputs):
            outputs.append(((node.out, shape, None, 0), value))
    kernel = gen.kernel(lines, inputs, [d for _, d in scalars], [o for o, _ in outputs], [v for _, v in outputs],
                        shape)
    args = tuple(inputs) + tuple(s for s, _ in scalars) + tuple(o for o, _ in outputs)
    return kernel, args


# --- the generated kernel ---------------------------------------------------------------------------

_COMPILED: Dict[str, Any] = {}


class _CpuGenerator:
    """The cpu device's code generator: numpy-exact operations, numba loops (see the module docstring)."""

    @staticmethod
    def node(call) -> Optional[Tuple[tuple, _Node]]:
        return _cpu_node(call)

    @staticmethod
    def expr(node: _Node, names: List[str], scalar: Optional[str]) -> str:
        fields = dict(zip("abc", names))
        if scalar is not None:
            fields["b"] = scalar
        return node.expr.format(**fields)

    @staticmethod
    def cast(dtype: str, expr: str) -> str:
        return f"{_NUMBA_TYPE[dtype]}({expr})"

    @staticmethod
    def kernel(lines, inputs, scalar_dtypes, outputs, out_vars, shape) -> "FusedKernel":
        kernel = FusedKernel(lines, len(inputs), len(scalar_dtypes), outputs, out_vars, shape)
        kernel.scalar_dtypes = list(scalar_dtypes)
        return kernel


GENERATOR = _CpuGenerator()


class FusedKernel:
    """A generated loop over the elements of one shape (see the module docstring)."""

    def __init__(self, lines, n_inputs, n_scalars, outputs, out_vars, shape):
        self.lines, self.n_inputs, self.n_scalars = lines, n_inputs, n_scalars
        self.out_vars, self.shape = out_vars, shape
        self.scalar_dtypes: List[str] = []
        self.__module__ = __name__
        self.__name__ = "fused"

    def source(self, flat: bool) -> str:
        """One flat loop when every array is contiguous, else one loop per axis (explicit nested
        loops compile to tighter code than np.ndindex for strided and broadcast reads)."""
        args = [f"in{i}" for i in range(self.n_inputs)] + [f"s{i}" for i in range(self.n_scalars)] + \
               [f"out{i}" for i in range(len(self.out_vars))]
        ndim = 1 if flat else max(len(self.shape), 1)
        index = ", ".join(f"i{d}" for d in range(ndim))
        body = [line.replace("[IDX]", f"[{index}]") for line in self.lines]
        body += [f"out{i}[{index}] = {v}" for i, v in enumerate(self.out_vars)]
        code = [f"def kernel({', '.join(args)}):"]
        for d in range(ndim):
            code.append("    " * (d + 1) + f"for i{d} in range(out0.shape[{d}]):")
        code += ["    " * (ndim + 1) + line for line in body]
        return "\n".join(code) + "\n"

    def __call__(self, *args):  # run unbound (a replay binds it once, see prepare)
        self.prepare(args)()

    def prepare(self, args: tuple):
        """A launch over fixed buffers: arrays of the group's shape, flat when every one is contiguous."""
        ni, ns = self.n_inputs, self.n_scalars
        arrays = [_view(o, self.shape) for o in args[:ni]]
        outs = [_view(o, self.shape) for o in args[ni + ns:]]
        flat = all(a.flags.c_contiguous for a in arrays + outs) or not self.shape
        if flat:
            arrays, outs = [a.reshape(-1) for a in arrays], [o.reshape(-1) for o in outs]
        fn = _compiled(self.source(flat))
        scalars = list(args[ni:ni + ns])
        casts = [getattr(np, "bool_" if d == "bool" else d) for d in self.scalar_dtypes]
        if any(isinstance(s, HostScalar) for s in scalars):
            def run():
                fn(*arrays, *[c(s.value if isinstance(s, HostScalar) else s) for c, s in zip(casts, scalars)], *outs)
            return run
        fixed = [c(s) for c, s in zip(casts, scalars)]
        return lambda: fn(*arrays, *fixed, *outs)


def _view(operand, shape) -> np.ndarray:
    buffer, oshape, strides, offset = operand
    if strides is None:
        return out_view(buffer, shape) if offset == 0 else read((buffer, shape, None, offset))
    return strided_view(buffer, shape, strides, offset)


def _compiled(source: str):
    """The numba function for `source`, from this process's cache, the disk cache, or compiled."""
    fn = _COMPILED.get(source)
    if fn is not None:
        return fn
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"fused_{digest}.py")
    if not os.path.exists(path):
        text = ("# generated by needle.compile.fusion; numba caches its machine code beside this file\n"
                "import numba\nimport numpy as np\n" + _EXPR_IMPORTS + "\n\n"
                "@numba.njit(cache=True, error_model='numpy', nogil=True)\n" + source)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a concurrent process sees the whole file or none
    name = f"needle_fused_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    fn = _COMPILED[source] = module.kernel
    return fn

