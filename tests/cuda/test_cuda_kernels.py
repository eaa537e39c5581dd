"""Every kernel of the device interface on cuda against the reference kernels (cpu_numpy) on
the same inputs.

Each kernel runs for every storage dtype it takes, on operands that are compact, bare
buffers (the course's convention), transposed, broadcast (0 strides) and flipped (negative
strides and an offset), in shapes no block or tile divides (1, 3, 5, 17 elements; 1-element
axes). Reductions cover blocks of 1 element, of sizes that are not powers of two, and
longer than a reduction block; the index kernels cover repeated and negative indices and
their out-of-range errors. `CASES` records which test covers which kernel, and a test checks
that the interface's every kernel has one.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import NamedTuple, Optional

import numpy as np
import pytest

from needle.backend_ndarray import interface
from needle.backend_ndarray import kernels_cpu_numpy as REF
from needle.backend_ndarray import kernels_cuda as GPU
from needle.dtypes import HostScalar
from needle.primitives import PRIMITIVES

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # nan/inf on purpose

DTYPES = ("float32", "float64", "int64", "bool")
FLOATS = ("float32", "float64")
NUMBERS = ("float32", "float64", "int64")
SHAPES = [(1,), (17,), (3, 5), (1, 5, 1), (2, 3, 4)]
KINDS = ("compact", "bare", "transposed", "broadcast", "flipped")
PAIRS = [("compact", "compact"), ("bare", "bare"), ("transposed", "broadcast"), ("flipped", "compact"),
         ("broadcast", "flipped")]
TOL = {"float32": dict(rtol=2e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])

CASES: dict = {}  # kernel name -> names of the tests covering it


def covers(*names):
    def mark(test):
        for name in names:
            CASES.setdefault(name, []).append(test.__name__)
        return test
    return mark


# --- inputs -------------------------------------------------------------------------------

def sample(dtype: str, shape, rng, specials: bool = True, low: Optional[int] = None) -> np.ndarray:
    """Random values of a dtype: floats with some nan, +-inf and signed zeros; ints in [-5, 5]."""
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int64":
        return rng.integers(-5 if low is None else low, 6, size=shape).astype(np.int64)
    x = rng.standard_normal(shape) * 2
    if low is not None:
        x = np.abs(x) + low
    if specials:
        flat = x.reshape(-1)
        pick = rng.random(flat.size) < 0.15
        flat[pick] = rng.choice(SPECIALS, size=int(pick.sum()))
    return x.astype(dtype)


class Layout(NamedTuple):
    """A view of a flat host buffer `base`: what both devices get, and numpy's view of it."""
    kind: str
    base: np.ndarray
    shape: tuple
    strides: Optional[tuple]
    offset: int
    view: np.ndarray


def layout(kind: str, shape: tuple, dtype: str, rng, **sample_args) -> Layout:
    """`shape` as a view of kind: compact / bare (a buffer read as it is), transposed (a
    buffer of the reversed shape, axes reversed), broadcast (a 1 on the first axis longer than
    1, strides 0 there), flipped (every axis reversed inside a larger buffer: negative strides
    and an offset)."""
    shape = tuple(shape)
    if kind in ("compact", "bare"):
        base = sample(dtype, shape, rng, **sample_args).reshape(-1)
        return Layout(kind, base, shape, None, 0, base.reshape(shape))
    if kind == "transposed":
        base = sample(dtype, shape[::-1], rng, **sample_args).reshape(-1)
        view = base.reshape(shape[::-1]).T
    elif kind == "broadcast":
        small = list(shape)
        axis = next((i for i, n in enumerate(shape) if n > 1), 0)
        small[axis] = 1
        base = sample(dtype, tuple(small), rng, **sample_args).reshape(-1)
        view = np.broadcast_to(base.reshape(small), shape)
    else:
        big = tuple(n + 1 for n in shape)
        base = sample(dtype, big, rng, **sample_args).reshape(-1)
        view = base.reshape(big)[tuple(slice(n, 0, -1) for n in shape)]
    item = base.itemsize
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // item
    return Layout(kind, base, shape, tuple(s // item for s in view.strides), offset, view)


def upload(mod, host: np.ndarray, dtype: Optional[str] = None):
    buf = mod.Array(host.size, dtype or host.dtype.name)
    mod.from_numpy(host, buf)
    return buf


def operand(mod, lay: Layout):
    buf = upload(mod, lay.base)
    return buf if lay.kind == "bare" else (buf, lay.shape, lay.strides, lay.offset)


def output(mod, n: int, dtype: str):
    """A fresh output buffer; cuda's starts from a pattern so an element left unwritten shows."""
    out = mod.Array(n, dtype)
    mod.from_numpy(np.full(n, 0 if mod is REF else 77 if dtype != "bool" else True), out)
    return out


def result(mod, buf, n: Optional[int] = None) -> np.ndarray:
    n = buf.size if n is None else n
    return mod.to_numpy(buf, (n,), (1,), 0)


def same(got: np.ndarray, want: np.ndarray, what="") -> None:
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    if got.dtype.name in TOL:
        np.testing.assert_allclose(got, want, equal_nan=True, err_msg=str(what), **TOL[got.dtype.name])
    else:
        np.testing.assert_array_equal(got, want, err_msg=str(what))


def run_both(kernel: str, make_args, n: int, out_dtype: str, what="") -> None:
    """Run `kernel` on both devices with make_args(mod) + (out,) + rest and compare the outputs."""
    outs = []
    for mod in (REF, GPU):
        args, rest = make_args(mod)
        out = output(mod, n, out_dtype)
        getattr(mod, kernel)(*args, out, *rest)
        outs.append(result(mod, out, n))
    same(outs[1], outs[0], (kernel, what))


# --- the interface -------------------------------------------------------------------------

def test_every_kernel_of_the_interface_has_a_case():
    assert interface.missing_kernels(GPU) == []
    assert sorted(set(interface.REQUIRED_KERNELS) - set(CASES)) == []


def test_kernels_take_the_interface_arguments():
    for name in interface.REQUIRED_KERNELS:
        assert tuple(inspect.signature(getattr(GPU, name)).parameters) == interface.kernel_parameters(name), name


# --- buffers and transfers ---------------------------------------------------------------------

@covers("Array", "from_numpy", "to_numpy")
@pytest.mark.parametrize("dtype", DTYPES)
def test_buffers_and_transfers(dtype):
    rng = np.random.default_rng(1)
    buf = GPU.Array(7, dtype)
    assert (buf.size, buf.dtype) == (7, dtype) and buf.ptr() == buf.ptr() != 0
    interface_ = buf.__cuda_array_interface__
    assert interface_["shape"] == (7,) and interface_["typestr"] == np.dtype(dtype).str
    assert interface_["data"][0] == buf.ptr()
    host = rng.standard_normal(7) * 3  # float64, cast on the way in
    GPU.from_numpy(host.reshape(7, 1), buf)
    same(GPU.to_numpy(buf, (7,), (1,), 0), host.astype(dtype))
    assert GPU.Array(0, dtype).size == 0
    for kind in KINDS[2:]:
        for shape in SHAPES:
            lay = layout(kind, shape, dtype, rng)
            got = GPU.to_numpy(upload(GPU, lay.base), lay.shape, lay.strides, lay.offset)
            same(got, REF.to_numpy(upload(REF, lay.base), lay.shape, lay.strides, lay.offset), (kind, shape))
            assert got.shape == lay.shape


@covers("fill")
@pytest.mark.parametrize("dtype", DTYPES)
def test_fill(dtype):
    for val in (0, 1, -2.5, True, float("nan")):
        if dtype not in FLOATS and isinstance(val, float) and not val.is_integer():
            continue  # a fraction or nan into an int or bool array is not a fill value
        outs = []
        for mod in (REF, GPU):
            out = output(mod, 13, dtype)
            mod.fill(out, val)
            outs.append(result(mod, out))
        same(outs[1], outs[0], val)


# --- layout ---------------------------------------------------------------------------------

@covers("compact")
@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_compact_casts_any_view(src, dst):
    rng = np.random.default_rng(2)
    for kind in ("compact", "transposed", "broadcast", "flipped"):
        for shape in SHAPES:
            # nan and inf have no int64 value (numpy and CUDA disagree on the garbage)
            lay = layout(kind, shape, src, rng, specials=dst != "int64")
            strides = lay.strides if lay.strides is not None else GPU.compact_strides(shape)
            run_both("compact", lambda mod: ((upload(mod, lay.base),), (shape, strides, lay.offset)),
                     math.prod(shape), dst, (kind, shape))


def _scatter_case(kernel: str, dtype: str, value_of):
    rng = np.random.default_rng(3)
    for kind in ("compact", "transposed", "flipped"):  # not broadcast: racing writes to one element
        for shape in SHAPES:
            lay = layout(kind, shape, dtype, rng)
            strides = lay.strides if lay.strides is not None else GPU.compact_strides(shape)
            source = sample(dtype, shape, rng).reshape(-1)
            outs = []
            for mod in (REF, GPU):
                out = upload(mod, lay.base)
                if kernel == "ewise_setitem":
                    mod.ewise_setitem(upload(mod, source), out, shape, strides, lay.offset)
                else:
                    mod.scalar_setitem(math.prod(shape), value_of(dtype), out, shape, strides, lay.offset)
                outs.append(result(mod, out))
            same(outs[1], outs[0], (kernel, kind, shape))


@covers("ewise_setitem")
@pytest.mark.parametrize("dtype", DTYPES)
def test_ewise_setitem(dtype):
    _scatter_case("ewise_setitem", dtype, None)


@covers("scalar_setitem")
@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_setitem(dtype):
    _scatter_case("scalar_setitem", dtype, lambda d: {"bool": True, "int64": -3}.get(d, 0.25))


# --- elementwise ------------------------------------------------------------------------------

BINARY = {"add": DTYPES, "sub": NUMBERS, "mul": DTYPES, "div": FLOATS, "pow": NUMBERS, "maximum": DTYPES,
          "minimum": DTYPES, "eq": DTYPES, "ne": DTYPES, "lt": DTYPES, "le": DTYPES, "gt": DTYPES, "ge": DTYPES}
COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


def _out_dtype(op: str, dtype: str) -> str:
    return "bool" if op in COMPARISONS else dtype


@covers(*(f"ewise_{op}" for op in BINARY))
@pytest.mark.parametrize("op, dtype", [(op, d) for op, ds in BINARY.items() for d in ds])
def test_ewise_binary(op, dtype):
    rng = np.random.default_rng(4)
    for shape in SHAPES:
        for kind_a, kind_b in PAIRS:
            a = layout(kind_a, shape, dtype, rng)
            b = layout(kind_b, shape, dtype, rng, low=0 if op == "pow" and dtype == "int64" else None)
            run_both(f"ewise_{op}", lambda mod: ((operand(mod, a), operand(mod, b)), ()), math.prod(shape),
                     _out_dtype(op, dtype), (shape, kind_a, kind_b))


SCALAR = {"add": DTYPES, "sub": NUMBERS, "rsub": NUMBERS, "mul": DTYPES, "div": FLOATS, "rdiv": FLOATS,
          "rpower": NUMBERS, "maximum": DTYPES, "minimum": DTYPES, "eq": DTYPES, "ne": DTYPES, "lt": DTYPES,
          "le": DTYPES, "gt": DTYPES, "ge": DTYPES}
SCALARS = {"float32": (0.75, -2.0, float("inf")), "float64": (0.75, -2.0, float("nan")), "int64": (2, -3),
           "bool": (True, False)}


@covers(*(f"scalar_{op}" for op in SCALAR))
@pytest.mark.parametrize("op, dtype", [(op, d) for op, ds in SCALAR.items() for d in ds])
def test_scalar_binary(op, dtype):
    rng = np.random.default_rng(5)
    values = SCALARS[dtype]
    if op in COMPARISONS and dtype == "int64":
        values += (0.5,)  # an int array against a float: compared as floats, as numpy does
    if op == "rpower":
        values = tuple(v for v in values if v == v and abs(v) != float("inf") and v != 0)
    for shape in SHAPES[1:4]:
        for kind in KINDS:
            a = layout(kind, shape, dtype, rng, low=0 if op == "rpower" and dtype == "int64" else None)
            for val in values:
                run_both(f"scalar_{op}", lambda mod: ((operand(mod, a), val), ()), math.prod(shape),
                         _out_dtype(op, dtype), (shape, kind, val))


@covers("scalar_power")
@pytest.mark.parametrize("dtype", NUMBERS)
def test_scalar_power_and_its_shortcuts(dtype):
    """Exponents with a shortcut (2, 0.5, -0.5, -1, 1) and without, on edges (-0, -inf, nan)."""
    rng = np.random.default_rng(6)
    exponents = (2, 3, 0, 1) if dtype == "int64" else (2.0, 0.5, -0.5, -1.0, 1.0, 3.0, 1.5, 0.0, -2.0)
    for kind in KINDS:
        a = layout(kind, (17,), dtype, rng, low=0 if dtype == "int64" else None)
        for val in exponents:
            run_both("scalar_power", lambda mod: ((operand(mod, a), val), ()), 17, dtype, (kind, val))
    # a compiled step's HostScalar exponent is read when the kernel runs
    a = layout("compact", (5,), dtype, rng, low=0 if dtype == "int64" else None)
    want = REF.Array(5, dtype)
    REF.scalar_power(operand(REF, a), 2, want)
    got = GPU.Array(5, dtype)
    GPU.scalar_power(operand(GPU, a), HostScalar(2), got)
    same(result(GPU, got), result(REF, want))


# every unary primitive of the table: float functions on floats, the others on numbers (abs on bools too)
UNARY = {p.name: FLOATS if p.floating else NUMBERS for p in PRIMITIVES if p.arity == 1}
UNARY["abs"] = DTYPES


@covers(*(f"ewise_{op}" for op in UNARY))
@pytest.mark.parametrize("op, dtype", [(op, d) for op, ds in UNARY.items() for d in ds])
def test_unary(op, dtype):
    rng = np.random.default_rng(7)
    for shape in SHAPES:
        for kind in KINDS:
            a = layout(kind, shape, dtype, rng)
            run_both(f"ewise_{op}", lambda mod: ((operand(mod, a),), ()), math.prod(shape), dtype, (shape, kind))


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_and_exp_at_their_edges(dtype):
    edges = np.array([0.0, -0.0, 20.0, -20.0, 100.0, -100.0, 1000.0, -1000.0, 88.0, -88.0, 1e-30, np.inf, -np.inf,
                      np.nan], dtype)
    for op in [op for op, dtypes in UNARY.items() if dtypes is FLOATS]:
        run_both(f"ewise_{op}", lambda mod: ((upload(mod, edges),), ()), edges.size, dtype, op)
    tail = GPU.Array(1, dtype)
    GPU.ewise_sigmoid(upload(GPU, np.array([-20.0], dtype)), tail)
    assert result(GPU, tail)[0] > 0  # 2.06e-9, not 1 - 1 = 0


@covers("ewise_where")
@pytest.mark.parametrize("dtype", DTYPES)
def test_where(dtype):
    rng = np.random.default_rng(8)
    for shape in SHAPES:
        for kind_c, (kind_a, kind_b) in zip(("compact", "bare", "broadcast", "flipped", "transposed"), PAIRS):
            c, a, b = layout(kind_c, shape, "bool", rng), layout(kind_a, shape, dtype, rng), layout(kind_b, shape,
                                                                                                  dtype, rng)
            run_both("ewise_where", lambda mod: ((operand(mod, c), operand(mod, a), operand(mod, b)), ()),
                     math.prod(shape), dtype, (shape, kind_c, kind_a, kind_b))


# --- reductions -------------------------------------------------------------------------------

# (shape, number of trailing axes reduced): blocks of 1, of a non-power of two, longer than
# a reduction block (the simulator's has 8 lanes, a GPU's 256), several axes at once
REDUCTIONS = [((5, 1), 1), ((3, 5), 1), ((2, 17), 1), ((1, 40), 1), ((3, 2, 3), 2), ((17,), 1), ((2, 300), 1),
              ((7, 3), 2)]


def _reduction_out_dtype(kernel: str, dtype: str) -> str:
    if kernel == "reduce_argmax":
        return "int64"
    if kernel == "reduce_sum" and dtype in ("int64", "bool"):
        return "int64"
    return dtype


@covers("reduce_sum", "reduce_max", "reduce_min", "reduce_argmax")
@pytest.mark.parametrize("kernel", ["reduce_sum", "reduce_max", "reduce_min", "reduce_argmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions(kernel, dtype):
    rng = np.random.default_rng(9)
    out_dtype = _reduction_out_dtype(kernel, dtype)
    for shape, axes in REDUCTIONS:
        reduce_size = math.prod(shape[len(shape) - axes:])
        kinds = ("bare", "transposed", "flipped", "broadcast") if reduce_size < 300 else ("compact",)
        for kind in kinds:
            a = layout(kind, shape, dtype, rng)
            run_both(kernel, lambda mod: ((operand(mod, a),), (reduce_size,)), math.prod(shape) // reduce_size,
                     out_dtype, (shape, axes, kind))


def test_argmax_picks_the_first_maximum_and_the_first_nan():
    rows = np.array([[1, 3, 3, 0], [np.nan, 1, np.nan, 5], [-np.inf] * 4, [2, np.nan, 9, 9], [0, -0.0, 0, -1]],
                    "float32")
    for kernel in ("reduce_argmax", "reduce_max", "reduce_min"):
        run_both(kernel, lambda mod: ((upload(mod, rows.reshape(-1)),), (4,)), 5,
                 "int64" if kernel == "reduce_argmax" else "float32", kernel)


# --- matmul -------------------------------------------------------------------------------------

def _matrix_layout(kind, batch, rows, cols, dtype, rng) -> Layout:
    shape = (rows, cols) if batch == 1 else (batch, rows, cols)
    if kind == "transposed" and batch > 1:  # the two matrix axes swapped, the batch axis kept
        base = sample(dtype, (batch, cols, rows), rng, specials=False).reshape(-1)
        view = base.reshape(batch, cols, rows).transpose(0, 2, 1)
        item = base.itemsize
        return Layout(kind, base, shape, tuple(s // item for s in view.strides), 0, view)
    return layout(kind, shape, dtype, rng, specials=False)


@covers("matmul")
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul(dtype):
    rng = np.random.default_rng(10)
    for m, n, p in [(1, 1, 1), (3, 5, 17), (5, 3, 1), (17, 4, 5), (4, 8, 4)]:
        for batch in (1, 3):
            for kind_a, kind_b in [("bare", "bare"), ("compact", "transposed"), ("transposed", "flipped")]:
                a = _matrix_layout(kind_a, batch, m, n, dtype, rng)
                b = _matrix_layout(kind_b, batch, n, p, dtype, rng)
                run_both("matmul", lambda mod: ((operand(mod, a), operand(mod, b)), (m, n, p, batch)),
                         batch * m * p, dtype, (m, n, p, batch, kind_a, kind_b))


@pytest.mark.skipif(GPU._cupy() is None, reason="CuPy is not installed (cuBLAS runs through it)")
@pytest.mark.parametrize("dtype", FLOATS)
def test_cublas_and_the_tiled_kernel_agree(dtype):
    rng = np.random.default_rng(11)
    for m, n, p, batch in [(33, 65, 17, 1), (64, 64, 64, 3), (5, 300, 7, 2)]:
        a = _matrix_layout("transposed", batch, m, n, dtype, rng)
        b = _matrix_layout("compact", batch, n, p, dtype, rng)
        outs = []
        for run in (GPU._matmul_tiled, GPU._matmul_cublas):
            out = GPU.Array(batch * m * p, dtype)
            run(GPU._matrix(operand(GPU, a), m, n), GPU._matrix(operand(GPU, b), n, p), out, m, n, p, batch)
            outs.append(result(GPU, out))
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4 if dtype == "float32" else 1e-12)


# --- gather / scatter on int64 indices -----------------------------------------------------------

INDEX_KINDS = ("compact", "bare", "flipped", "broadcast")  # broadcast: every index repeated


def _indices(kind, k, rows, rng, negative=True) -> Layout:
    lay = layout(kind, (k,), "int64", rng)
    low = -rows if negative else 0
    base = rng.integers(low, rows, size=lay.base.size).astype(np.int64)
    return lay._replace(base=base)


@covers("take_rows")
@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows(dtype):
    rng = np.random.default_rng(12)
    for rows, row_size, k in [(5, 3, 7), (1, 1, 3), (4, 17, 2), (6, 1, 1)]:
        table = sample(dtype, rows * row_size, rng)
        for kind in INDEX_KINDS:
            idx = _indices(kind, k, rows, rng)
            run_both("take_rows", lambda mod: ((upload(mod, table), operand(mod, idx)), (row_size,)),
                     k * row_size, dtype, (rows, row_size, kind))


@covers("index_add_rows")
@pytest.mark.parametrize("dtype", DTYPES)
def test_index_add_rows_accumulates_repeated_indices(dtype):
    rng = np.random.default_rng(13)
    for rows, row_size, k in [(5, 3, 9), (1, 1, 4), (4, 17, 6), (3, 2, 1)]:
        start = sample(dtype, rows * row_size, rng, specials=False)
        values = sample(dtype, k * row_size, rng, specials=False)
        for kind in INDEX_KINDS:
            idx = _indices(kind, k, rows, rng)
            outs = []
            for mod in (REF, GPU):
                out = upload(mod, start)
                mod.index_add_rows(upload(mod, values), operand(mod, idx), out, row_size)
                outs.append(result(mod, out))
            same(outs[1], outs[0], (rows, row_size, kind))


@covers("one_hot_rows")
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_rows(dtype):
    rng = np.random.default_rng(14)
    for n, k in [(1, 3), (5, 7), (17, 2)]:
        for kind in INDEX_KINDS:
            idx = _indices(kind, k, n, rng, negative=False)
            run_both("one_hot_rows", lambda mod: ((operand(mod, idx),), (n,)), k * n, dtype, (n, kind))


@pytest.mark.parametrize("bad", [[0, 5, 1], [-6, 2], [7, -9, 1, 5]])
def test_index_kernels_raise_the_reference_errors_before_writing(bad):
    rows, row_size = 5, 2
    table = np.arange(rows * row_size, dtype=np.float32)
    idx = np.array(bad, dtype=np.int64)
    for kernel in ("take_rows", "index_add_rows", "one_hot_rows"):
        messages = []
        for mod in (REF, GPU):
            out = upload(mod, table)
            with pytest.raises(IndexError) as err:
                if kernel == "take_rows":
                    mod.take_rows(upload(mod, table), upload(mod, idx), mod.Array(idx.size * row_size), row_size)
                elif kernel == "index_add_rows":
                    mod.index_add_rows(upload(mod, np.ones(idx.size * row_size, np.float32)), upload(mod, idx), out,
                                       row_size)
                else:
                    mod.one_hot_rows(upload(mod, idx), mod.Array(idx.size * rows), rows)
            messages.append(str(err.value))
            np.testing.assert_array_equal(result(mod, out), table)  # nothing written
        assert messages[1] == messages[0], kernel


# --- launch geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", [
    dict(threads=4, max_blocks=1, reduce_threads=4, min_lanes=4, tile=1, per_thread=3, depth=5),  # threads loop
    dict(threads=32, max_blocks=64, reduce_threads=16, min_lanes=1, tile=4, per_thread=1, depth=4),  # one per element
])
def test_results_do_not_depend_on_the_launch_geometry(geometry, monkeypatch):
    monkeypatch.setattr(GPU, "GEOMETRY", dataclasses.replace(GPU.GEOMETRY, **geometry))
    rng = np.random.default_rng(15)
    a = layout("flipped", (3, 5), "float32", rng)
    b = layout("broadcast", (3, 5), "float32", rng)
    run_both("ewise_mul", lambda mod: ((operand(mod, a), operand(mod, b)), ()), 15, "float32")
    run_both("reduce_sum", lambda mod: ((operand(mod, a),), (5,)), 3, "float32")
    run_both("reduce_argmax", lambda mod: ((operand(mod, a),), (15,)), 1, "int64")
    x = _matrix_layout("transposed", 2, 5, 3, "float32", rng)
    y = _matrix_layout("compact", 2, 3, 7, "float32", rng)
    run_both("matmul", lambda mod: ((operand(mod, x), operand(mod, y)), (5, 3, 7, 2)), 70, "float32")
    idx = _indices("compact", 9, 3, rng)
    table = sample("float32", 6, rng, specials=False)
    run_both("take_rows", lambda mod: ((upload(mod, table), operand(mod, idx)), (2,)), 18, "float32")
