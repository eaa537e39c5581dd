"""The cpu device's code generator for fused elementwise groups (see `fusion.py`).

Only operations whose fused form is bit-identical to numpy's kernel are fused (the `exact`
rows of needle.primitives), so a fused step gives exactly the eager step's numbers. Each
group is turned into Python source -- a loop over the elements doing the chain's scalar
operations in the recorded order -- compiled with numba (`error_model="numpy"`: x / 0
gives inf, not an exception). A reduction of a float chain's last value over a trailing
axis of up to MAX_ROW elements (`reduce_sum`, `reduce_max`, `reduce_min`) ends a group: the loop computes one row of
the chain into a small buffer and reduces it, so LayerNorm's mean and variance or a
softmax's max and denominator never write and re-read the rows they reduce. A sum adds in
numpy's pairwise order (`pairwise_cpu`): the eager step's bits, with one exception IEEE 754
leaves open -- a row holding nans of different signs or payloads sums to a nan in both, but
which of them may differ, as numpy's compiled loop may add either way round. The same holds
for a nan after a negation: LLVM folds -(x * s) into x * (-s) and p + (-q) into p - q, whose
nan result keeps the sign numpy's separate `negative` flipped (a nan's sign is the only bit
that may differ). A max or min
compares in the loop, except for the rows whose bits depend on numpy's SIMD order (largest
value 0 with 0.0 and -0.0 both there, or a nan): the loop lists them and numpy's reduce
redoes them from the values in memory (the chain's values are stored for it). The
generated source is written under the kernel cache folder
(`NEEDLE_CACHE_DIR`, default `~/.cache/needle/kernels`) with numba's disk cache on, so a
second process with the same groups compiles nothing. Scalars keep the dtype numpy would
compute in (a Python float next to float32 data is a float32), HostScalars are read at
each run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..backend_ndarray.host_buffer import out_view, read, strided_view
from ..backend_ndarray.recording import Call, Slot, View
from ..dtypes import FLOAT_DTYPES, HostScalar
from ..primitives import EXPR_FUNCTIONS
from . import exp_cpu, parallel_cpu
from .fusion import Node, operand

# the longest rows a fused loop reduces: numpy's reduce costs a fixed overhead per row, which a
# loop of our own saves on short rows (LayerNorm's 128, attention's 64: 46 vs 62 us summing
# 2048x128 float32 on one core), but over long rows its SIMD loops are several times faster
# (1000-element rows: 119 vs 48 us; 10000: 4.2 vs 1.3 ms)
MAX_ROW = 128

# the row reductions a fused loop ends in, by kernel name (see `_reduce_node`)
_REDUCTIONS = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}

__all__ = ["GENERATOR", "FusedKernel", "cache_dir"]

# numba does not contract a * b + c into an FMA, so one IEEE operation per exact primitive
# gives numpy's bits; transcendental functions (log, tanh, pow, float64 exp) are left to
# numpy, whose SIMD versions can differ from numba's in the last bit -- so a fused step is
# bit-identical to the eager one, and a run resumed mid-way (which traces at other points)
# to an uninterrupted run. float32 exp and sigmoid are fused through exp_cpu, which does numpy's
# float32 exp kernel's operations (where `exp_cpu.matches_numpy()` confirms the bits on this
# machine). The generated module takes the expressions' functions from numpy.
# maximum and minimum are numpy's on x86 (its SIMD loops and its scalar loop alike use the
# max/min instructions, then keep a nan of `a`): a nan in a, else a nan in b, else the larger
# (smaller), and on a tie -- -0.0 against 0.0 -- b. numba's np.maximum keeps a on a tie, which
# made a fused relu(-0.0) give -0.0 where numpy gives 0.0.
_NUMPY_MINMAX = ("\n@numba.njit(inline='always')\ndef maximum(a, b):\n    return a if (a != a) | (a > b) else b\n"
                 "\n@numba.njit(inline='always')\ndef minimum(a, b):\n    return a if (a != a) | (a < b) else b\n")
_EXPR_IMPORTS = "from numpy import " + ", ".join(f for f in EXPR_FUNCTIONS if f not in ("maximum", "minimum")) + \
    "  # noqa: F401, A004\n" + _NUMPY_MINMAX
_NUMBA_TYPE = {"float32": "np.float32", "float64": "np.float64", "int64": "np.int64", "bool": "np.bool_"}


def cache_dir() -> str:
    """Where generated kernels (and numba's compiled code for them) are kept."""
    return os.environ.get("NEEDLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "needle",
                                                             "kernels")


def _cpu_node(call: Call) -> Optional[Tuple[tuple, Node]]:
    """(output shape, node) for a fusable call of the cpu device, else None."""
    fn, args = call.fn, call.args
    p, form = getattr(fn, "primitive", None), getattr(fn, "form", None)
    if p is not None:
        numpy_exp = _numpy_exp_form(p, form, args)  # float32 exp / sigmoid, numpy's bits (exp_cpu)
        if numpy_exp is None and (not p.exact or (p.floating and args[-1].dtype not in FLOAT_DTYPES)):
            return None
        if form == "ewise":
            a, b, out = operand(args[0]), operand(args[1]), args[2]
            if a is None or b is None or a[1] != b[1]:
                return None
            return a[1], Node(p.expr, [a, b], out, out.dtype)
        if form in ("scalar", "reverse"):
            a, val, out = operand(args[0]), args[1], args[2]
            if a is None:
                return None
            kind = _weak_scalar_dtype(val, a[0].dtype)
            expr = p.expr if form == "scalar" else p.expr.format(a="{b}", b="{a}")
            return a[1], Node(expr, [a], out, out.dtype, scalar=(val, kind))
        if form == "unary":
            a, out = operand(args[0]), args[1]
            return None if a is None else (a[1], Node(numpy_exp or p.expr, [a], out, out.dtype))
        return None
    if call.name in _REDUCTIONS:
        return _reduce_node(call)
    if call.name == "ewise_where":  # a select copies one of two values: exact in any loop
        operands = [operand(a) for a in args[:3]]
        if any(o is None for o in operands) or len({o[1] for o in operands}) != 1:
            return None
        out = args[3]
        return operands[0][1], Node("({b} if {a} else {c})", operands, out, out.dtype)
    if call.name == "compact" and isinstance(args[0], Slot):
        a, out, shape, strides, offset = args
        return tuple(shape), Node("{a}", [operand(View(a, shape, strides, offset))], out, out.dtype)
    if call.name == "ewise_setitem" and isinstance(args[0], Slot):
        a, out, shape, strides, offset = args
        return tuple(shape), Node("{a}", [View(a, tuple(shape), None, 0)], None, out.dtype,
                                  store=View(out, tuple(shape), tuple(strides), offset))
    return None


def _numpy_exp_form(p, form, args) -> Optional[str]:
    """The fused expression of a float32 exp or sigmoid through exp_cpu (numpy's exp kernel, where
    `matches_numpy()` confirms it on this machine), else None."""
    if form != "unary" or p.name not in exp_cpu.FUSED_FORMS or args[-1].dtype != "float32":
        return None
    a = operand(args[0])
    if a is None or a[0].dtype != "float32" or not exp_cpu.matches_numpy():
        return None
    return exp_cpu.FUSED_FORMS[p.name]


def _reduce_node(call: Call) -> Optional[Tuple[tuple, Node]]:
    """A float reduction over the last axis of a contiguous operand (the rows numpy sums one
    by one in its pairwise order) as the node ending a group of that operand's shape."""
    a, out, reduce_size = call.args
    view = operand(a)
    if view is None or view.strides is not None or not view.shape or out.dtype not in FLOAT_DTYPES:
        return None
    if view.slot.dtype != out.dtype or reduce_size != view.shape[-1] or reduce_size > MAX_ROW:
        return None
    return tuple(view.shape), Node("{a}", [view], out, out.dtype, reduce=_REDUCTIONS[str(call.name)])


def _weak_scalar_dtype(value, array_dtype: str) -> str:
    """The dtype numpy 2 computes a Python scalar in next to an array of `array_dtype` (NEP 50: a
    Python number is "weak" and takes the array's kind where it fits): a float next to float32
    data is a float32 -- in a comparison too (x > 0.1 compares float32(0.1), not 0.1) -- next to
    integers or bools a float64; an int next to bools an int64; a bool takes the array's dtype."""
    kind = _python_dtype(value)
    if kind == "bool" or array_dtype == kind:
        return array_dtype
    if kind == "int64":
        return "int64" if array_dtype == "bool" else array_dtype
    return array_dtype if array_dtype in FLOAT_DTYPES else "float64"


def _python_dtype(value) -> str:
    value = value.value if isinstance(value, HostScalar) else value
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int64"
    return "float64"


# --- the generated kernel ---------------------------------------------------------------------------

_COMPILED: Dict[str, Any] = {}


class _CpuGenerator:
    """The cpu device's code generator: numpy-exact operations, numba loops (see the module docstring)."""

    @staticmethod
    def node(call) -> Optional[Tuple[tuple, Node]]:
        return _cpu_node(call)

    @staticmethod
    def expr(node: Node, names: List[str], scalar: Optional[str]) -> str:
        fields = dict(zip("abc", names))
        if scalar is not None:
            fields["b"] = scalar
        return node.expr.format(**fields)

    @staticmethod
    def cast(dtype: str, expr: str) -> str:
        return f"{_NUMBA_TYPE[dtype]}({expr})"

    @staticmethod
    def kernel(lines, inputs, scalar_dtypes, outputs, out_vars, shape, reduce=None) -> "FusedKernel":
        kernel = FusedKernel(lines, len(inputs), len(scalar_dtypes), outputs, out_vars, shape, reduce)
        kernel.scalar_dtypes = list(scalar_dtypes)
        return kernel


GENERATOR = _CpuGenerator()


class FusedKernel:
    """A generated loop over the elements of one shape (see the module docstring); with `reduce`
    ("sum", variable) it also sums that variable over each row of the last axis into the last
    argument (the kept shape)."""

    def __init__(self, lines, n_inputs, n_scalars, outputs, out_vars, shape, reduce=None) -> None:
        self.lines, self.n_inputs, self.n_scalars = lines, n_inputs, n_scalars
        self.out_vars, self.shape, self.reduce = out_vars, shape, reduce
        self.scalar_dtypes: List[str] = []
        self.__module__ = __name__
        self.__name__ = "fused"

    def source(self, ndim: int, indices: List[Optional[Tuple[int, ...]]]) -> str:
        """The loop nest over `ndim` axes (explicit nested loops compile to tighter code than
        np.ndindex). indices[j]: the axes input j is indexed by (None: all of them), so a
        broadcast operand is read through an array of its own axes, and the innermost loop
        reads every operand at unit or zero stride where the layout allows (numba vectorises it).
        A reduction's loop writes each row's values of its variable into `row` (a buffer of one
        row) and, after the row, the sum of `row` in numpy's order into `red` (the outer axes)."""
        args = [f"in{i}" for i in range(self.n_inputs)] + [f"s{i}" for i in range(self.n_scalars)] + \
               [f"out{i}" for i in range(len(self.out_vars))]
        full = ", ".join(f"i{d}" for d in range(ndim))

        # every input is read once, into a variable, before the chain: a read inside a `where`'s
        # branch would stay a branch (LLVM does not move a load out of one), and on a random
        # condition a branch mispredicts half the time (a where over a transposed 64x32x4x4
        # view: 140 us, 23 with the reads first). The same values, read from the same places.
        reads = []
        for j in sorted({int(m) for line in self.lines for m in _READ.findall(line)}):
            axes = indices[j]
            index = full if axes is None else ", ".join(f"i{d}" for d in axes) or "0"
            reads.append(f"r{j} = in{j}[{index}]")
        body = reads + [_READ.sub(lambda m: f"r{m.group(1)}", line) for line in self.lines]
        body += [f"out{i}[{full}] = {v}" for i, v in enumerate(self.out_vars)]
        bounds = [f"out0.shape[{d}]" for d in range(ndim)]
        after: List[str] = []
        if self.reduce is not None:
            op, var = self.reduce[:2]
            args += ["red", "row"]
            body.append(f"row[i{ndim - 1}] = {var}")
            bounds = [f"red.shape[{d}]" for d in range(ndim - 1)] + ["row.shape[0]"]
            kept = ", ".join(f"i{d}" for d in range(ndim - 1))
            if op == "sum":
                after = [f"red[{kept}] = row_sum(row)"]
            else:  # the rows whose bits only numpy knows (see pairwise_cpu.row_max) are listed in redo
                args.append("redo")
                after = [f"r, exact = row_{op}(row)", f"red[{kept}] = r", "if not exact:",
                         "    redo[count] = k", "    count += 1", "k += 1"]
        code = [f"def kernel({', '.join(args)}):"]
        counted = self.reduce is not None and self.reduce[0] != "sum"
        if counted:
            code += ["    count = 0", "    k = 0"]
        for d in range(ndim):
            code.append("    " * (d + 1) + f"for i{d} in range({bounds[d]}):")
        code += ["    " * (ndim + 1) + line for line in body]
        code += ["    " * ndim + line for line in after]
        if counted:
            code.append("    return count")
        return "\n".join(code) + "\n"

    @property
    def identity(self) -> tuple:
        """What the loop computes: equal for two groups doing the same (compile/dedupe.py)."""
        return (tuple(self.lines), self.n_inputs, self.n_scalars, tuple(self.out_vars), self.shape,
                repr(self.reduce), tuple(self.scalar_dtypes))

    def __call__(self, *args):  # run unbound (a replay binds it once, see prepare)
        self.prepare(args)()

    def prepare(self, args: tuple):
        """A launch over fixed buffers: the group's arrays in their simplest layout (`_canonical`),
        in row blocks on several threads when the group is large (`parallel_cpu`: each element is
        computed as before, each row summed as before, so the bits are the same)."""
        ni, ns = self.n_inputs, self.n_scalars
        arrays = [_view(o, self.shape) for o in args[:ni]]
        outs = [_view(o, self.shape) for o in args[ni + ns:ni + ns + len(self.out_vars)]]
        if self.reduce is not None:  # the kept rows, read as the group's shape with the last axis at stride 0
            kept = _view(args[-1], self.shape[:-1])
            outs.append(np.lib.stride_tricks.as_strided(kept, shape=self.shape, strides=kept.strides + (0,)))
        arrays, outs, indices = _canonical(self.shape, arrays, outs, reduce=self.reduce is not None)
        fn = _compiled(self.source(outs[0].ndim, indices))
        scalars = list(args[ni:ni + ns])
        casts = [getattr(np, "bool_" if d == "bool" else d) for d in self.scalar_dtypes]
        rows, size = outs[0].shape[0], outs[0].size
        if self.reduce is not None:  # the result of the rows: the outer axes only
            full = outs.pop()
            rows, size = full.shape[0], full.size
            outs.append(full[..., 0])
        disjoint = all(_rows_disjoint(o) for o in outs)
        blocks = parallel_cpu.row_blocks(rows, size) if disjoint else [(0, rows)]
        launch = self._launch_blocks(blocks, fn, arrays, outs, scalars, casts, indices)
        if len(blocks) == 1 and disjoint:  # maybe worth splitting: timed both ways in the first replays
            tried = parallel_cpu.row_blocks(rows, size, parallel_cpu.TRY_ELEMENTS)
            if len(tried) > 1:
                launch = parallel_cpu.faster_of(
                    launch, self._launch_blocks(tried, fn, arrays, outs, scalars, casts, indices))
        return launch

    def _launch_blocks(self, blocks, fn, arrays, outs, scalars, casts, indices):
        """The launch of the loop over these row blocks (several: at once, on worker threads)."""
        rowwise = [axes is None or 0 in axes for axes in indices]
        launches = []
        for lo, hi in blocks:
            block_in = parallel_cpu.blocks_of(arrays, rowwise, lo, hi) if len(blocks) > 1 else arrays
            block_out = [o[lo:hi] for o in outs] if len(blocks) > 1 else list(outs)
            if self.reduce is not None:  # each block its own row buffer
                block_out.append(np.empty(self.shape[-1], dtype=outs[-1].dtype))
            if self.reduce is None or self.reduce[0] == "sum":
                launches.append(_launch(fn, block_in, scalars, casts, block_out))
                continue
            red = block_out[-2]
            redo = np.empty(max(1, red.size), dtype=np.int64)  # the rows left to numpy
            where, position = self.reduce[3]
            values = (block_in if where == "in" else block_out)[position]
            launch = _launch(fn, block_in, scalars, casts, block_out + [redo])
            launches.append(_with_numpy_rows(launch, self.reduce[0], values, red, redo))
        return launches[0] if len(launches) == 1 else parallel_cpu.run_blocks(launches)


def _with_numpy_rows(launch, op: str, values: np.ndarray, red: np.ndarray, redo: np.ndarray):
    """The launch of a max/min loop, then numpy's reduce for the rows it listed in `redo`
    (a largest value of 0 or a nan: their bits depend on numpy's order), read back from memory
    (`values`: the group's shape, rows along the last axis)."""
    reduce = np.maximum.reduce if op == "max" else np.minimum.reduce

    def run() -> None:
        count = launch()
        if count:
            rows = np.unravel_index(redo[:count], red.shape)
            red[rows] = reduce(np.ascontiguousarray(values[rows]), axis=(1,))
    return run


def _launch(fn, arrays: List[np.ndarray], scalars: list, casts: list, outs: List[np.ndarray]):
    """fn on the arrays, the scalars (HostScalars read at each run) and the outputs (its result
    returned: a max/min loop's count of rows left to numpy)."""
    if any(isinstance(s, HostScalar) for s in scalars):
        def run():
            return fn(*arrays, *[c(s.value if isinstance(s, HostScalar) else s) for c, s in zip(casts, scalars)],
                      *outs)
        return run
    fixed = [c(s) for c, s in zip(casts, scalars)]
    return lambda: fn(*arrays, *fixed, *outs)


def _rows_disjoint(a: np.ndarray) -> bool:
    """Whether the rows (along axis 0) of an output occupy separate memory ranges, so row blocks
    written at once never write one element twice."""
    if a.ndim == 0 or a.shape[0] < 2:
        return False
    span = a.itemsize + sum((n - 1) * abs(s) for n, s in zip(a.shape[1:], a.strides[1:]))
    return abs(a.strides[0]) >= span


_READ = re.compile(r"in(\d+)\[IDX\]")


def _canonical(shape: tuple, arrays: List[np.ndarray], outs: List[np.ndarray], reduce: bool = False):
    """(inputs, outputs, indices): the same elements over the fewest loop axes. Axes of length 1
    go; neighbouring axes that every array steps through as one (stride of the outer = stride
    times length of the inner) merge, so contiguous arrays become one flat loop; an input's
    broadcast axes (stride 0) are dropped from its array and from its index (indices[j] lists
    the loop axes input j is read by; None: all). Each element is still computed by the same
    operations from the same values, so the result is the same bits. With `reduce`, the last
    axis (the rows reduced) stays an axis of its own, after at least one outer axis."""
    every = arrays + outs
    last = len(shape) - 1 if reduce else -1
    keep = [d for d, n in enumerate(shape) if n != 1 or d == last]
    if reduce and len(keep) == 1:  # one row: an outer axis of length 1
        every = [a[np.newaxis] for a in every]
        shape = (1,) + tuple(shape)
        keep = [0, len(shape) - 1]
    if not reduce:
        keep = _loop_order(keep, shape, arrays, outs)
    dims = [shape[d] for d in keep]
    strides = [[a.strides[d] for d in keep] for a in every]
    merged: List[int] = []
    merged_strides: List[List[int]] = [[] for _ in every]
    for k, n in enumerate(dims):
        if merged and not (reduce and k == len(dims) - 1) and all(st[k - 1] == st[k] * n for st in strides):
            merged[-1] *= n
            for m, st in zip(merged_strides, strides):
                m[-1] = st[k]
            continue
        merged.append(n)
        for m, st in zip(merged_strides, strides):
            m.append(st[k])
    if not merged:  # one element
        merged = [1]
        merged_strides = [[0] for _ in every]
    views = [np.lib.stride_tricks.as_strided(a, shape=tuple(merged), strides=tuple(st))
             for a, st in zip(every, merged_strides)]
    inputs: List[np.ndarray] = []
    indices: List[Optional[Tuple[int, ...]]] = []
    for a in views[:len(arrays)]:
        axes = tuple(d for d, st in enumerate(a.strides) if st != 0 or a.shape[d] == 1)
        if len(axes) == a.ndim:
            inputs.append(a)
            indices.append(None)
            continue
        # a view over its own axes; a value broadcast everywhere is a 1-element view read at 0
        own = np.lib.stride_tricks.as_strided(a, shape=tuple(a.shape[d] for d in axes) or (1,),
                                              strides=tuple(a.strides[d] for d in axes) or (0,))
        inputs.append(own)
        indices.append(axes)
    return inputs, views[len(arrays):], indices


# an output's unit-stride innermost axis counts more than an input's: a strided write costs
# more than a strided read (each one reads its cache line in, then writes it back)
_OUTPUT_WEIGHT = 1.5


def _loop_order(axes: List[int], shape: tuple, arrays: List[np.ndarray], outs: List[np.ndarray]) -> List[int]:
    """The order to loop over `axes` (outermost first) in an elementwise group: the group's
    own order, or the memory order of one of its arrays (axes by falling stride), whichever
    steps the most arrays through memory at unit stride in the innermost loop, outputs
    weighted _OUTPUT_WEIGHT and a loop shorter than 16 counted by its length / 16 (a loop of
    3 costs as much to run as it does work). A transpose between NCHW and NHWC views then reads
    or writes one side in order: a 64x3x32x32 image copied into a padded NHWC buffer took
    221 us in the group's order and 81 in the image's. Each element is computed as before,
    so any order gives the same bits -- unless an output overlaps an input it does not equal
    (then an element could be read after it was written), where the group's order stays."""
    if len(axes) < 2:
        return axes
    for o in outs:
        for a in arrays:
            if np.may_share_memory(o, a) and (o.__array_interface__["data"][0] != a.__array_interface__["data"][0]
                                              or o.strides != a.strides):
                return axes
    every = arrays + outs
    weights = [1.0] * len(arrays) + [_OUTPUT_WEIGHT] * len(outs)

    def score(order: List[int]) -> float:
        inner = order[-1]
        unit = sum(w for a, w in zip(every, weights) if abs(a.strides[inner]) == a.itemsize)
        return unit * min(shape[inner], 16) / 16

    best, best_score = axes, score(axes)
    for a in every:
        if any(a.strides[d] == 0 for d in axes):
            continue  # a broadcast array has no order of its own along the axes it repeats
        order = sorted(axes, key=lambda d: -abs(a.strides[d]))  # stable: ties keep the group's order
        value = score(order)
        if value > best_score:
            best, best_score = order, value
    return best


def _view(operand, shape) -> np.ndarray:
    buffer, oshape, strides, offset = operand
    if strides is None:
        return out_view(buffer, shape) if offset == 0 else read((buffer, shape, None, offset))
    return strided_view(buffer, shape, strides, offset)


_VERSIONS: Dict[str, str] = {}


def _source_version(module) -> str:
    """A digest of a helper module's source (the functions generated kernels call), for their names."""
    if module.__name__ not in _VERSIONS:
        with open(module.__file__, "rb") as f:
            _VERSIONS[module.__name__] = hashlib.sha256(f.read()).hexdigest()[:16]
    return _VERSIONS[module.__name__]


# LLVM's x86 pass that turns a conditional move back into a branch when one of its operands
# is a load ("cmov with a memory operand in a loop") makes a fused `where` (relu's gradient,
# a causal mask) branch on its condition in every loop that is not vectorised -- a strided
# or transposed operand's -- and a random condition mispredicts half the time: relu's
# gradient on an NHWC view of 64x16x8x8 took 265 us as a branch and 45 as a cmov. The option
# is LLVM's, for the whole process, and only changes that choice of instructions: no value.
_LLVM_OPTIONS = "-x86-cmov-converter=false"
_LLVM_SET: List[bool] = []


def _set_llvm_options() -> None:
    if not _LLVM_SET:
        import llvmlite.binding as llvm

        llvm.set_option("needle", _LLVM_OPTIONS)
        _LLVM_SET.append(True)


def _compiled(source: str):
    """The numba function for `source`, from this process's cache, the disk cache, or compiled."""
    fn = _COMPILED.get(source)
    if fn is not None:
        return fn
    _set_llvm_options()
    # numba's disk cache of a kernel knows its own file only: one calling row_sum is named after
    # pairwise_cpu's source too, so a changed row_sum is never run from a stale cache
    helpers = ""
    if "row_" in source:
        from . import pairwise_cpu

        helpers = "from needle.compile.pairwise_cpu import row_sum, row_max, row_min  " \
            f"# {_source_version(pairwise_cpu)}\n"
    if "_f32(" in source:  # numpy's float32 exp and the sigmoid made with it (exp_cpu), named the same way
        helpers += f"from needle.compile.exp_cpu import exp_f32, sigmoid_f32  # {_source_version(exp_cpu)}\n"
    text = ("# generated by needle.compile.fusion_cpu; numba caches its machine code beside this file\n"
            f"# compiled with LLVM option {_LLVM_OPTIONS}\n"
            "import numba\nimport numpy as np\n" + _EXPR_IMPORTS + helpers + "\n\n"
            "@numba.njit(cache=True, error_model='numpy', nogil=True)\n" + source)
    # the file is named after all of its text (the functions it defines and imports, the LLVM
    # options) and not the loop alone: a file cached by an older needle is never reused
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"fused_{digest}.py")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a concurrent process sees the whole file or none
    name = f"needle_fused_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"needle.compile: cannot load the generated kernel {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    fn = _COMPILED[source] = module.kernel
    return fn
