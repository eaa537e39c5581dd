"""numpy's float32 exp, as a numba function the fused cpu loops can call: the same bits.

Why: np.exp is no numba operation (numba's exp calls the C library's expf, which differs from
numpy's in the last bit), so a fused loop used to end at every float32 exp and hand the
array to numpy: a softmax, log-softmax, sigmoid or GELU wrote its values out, numpy read them
back, and the loop after it read numpy's result again.

What numpy computes (numpy's `simd_exp_FLOAT`, loops_exponent_log.dispatch.c.src, the kernel
of its AVX2 + FMA3 and AVX-512F builds; it runs the same per-element steps for every stride,
so a value's result does not depend on where it sits in the array):
- nan -> nan (the quiet nan 0x7fc00000); x >= 88.72283935546875 -> inf; x <= -103.97208404541015625 -> 0;
- k = x * log2(e), rounded to an integer by adding and subtracting 1.5 * 2**23;
- r = fma(k, c2, fma(k, c1, x)) with Cody and Waite's two-part -ln 2 (c1 = -0.693145752,
  c2 = -1.42860677e-6; numpy's third step adds k * 0, which changes nothing);
- exp(r) = P(r) / Q(r), a degree-5 over a degree-2 polynomial in Horner form with FMAs;
- the result is that quotient times 2**k, rounded once (AVX-512's scalef; the AVX2 build adds k to
  the exponent, and divides by a power of two for results below 2**-125: the same value).
Here each step is the same IEEE operation in float32; the FMAs are LLVM's fma intrinsic (one
rounding, as the instruction), and the scaling is two multiplications by powers of two of which
the first is exact, so the result is rounded once.

numpy may change its kernel, and a machine without AVX2 + FMA3 runs the C library's expf
instead: `matches_numpy()` compares the two on a sweep of float32 values once per process, and
the fusion uses this function only where they agree (tests/test_compile_exp.py checks every
float32 value where they do).
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["exp_f32", "sigmoid_f32", "exp_f32_array", "matches_numpy", "probe_values", "FUSED_FORMS"]


@intrinsic
def _fma(typingctx, a, b, c):  # pragma: no cover - compiled by numba
    """a * b + c in float32 with one rounding (LLVM's llvm.fma.f32: the FMA instruction)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)
    return sig, codegen


@intrinsic
def _power_of_two(typingctx, k):  # pragma: no cover - compiled by numba
    """2.0 ** k as a float32 for an integer k in [-126, 127], built from its bits."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        biased = builder.add(args[0], ir.Constant(ir.IntType(32), 127))
        bits = builder.shl(biased, ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())
    return sig, codegen


# the fused float32 form of each primitive these functions reproduce (by Primitive.name)
FUSED_FORMS = {"exp": "exp_f32({a})", "sigmoid": "sigmoid_f32({a})"}

_XMAX = np.float32(88.72283935546875)
_XMIN = np.float32(-103.97208404541015625)
_LOG2E = np.float32(1.4426950408889634)
_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23
_C1 = np.float32(-6.93145752e-1)
_C2 = np.float32(-1.42860677e-6)
_P0, _P1, _P2 = np.float32(9.999999999980870924916e-01), np.float32(7.257664613233124478488e-01), \
    np.float32(2.473615434895520810817e-01)
_P3, _P4, _P5 = np.float32(5.114512081637298353406e-02), np.float32(6.757896990527504603057e-03), \
    np.float32(5.082762527590693718096e-04)
_Q0, _Q1, _Q2 = np.float32(1.0), np.float32(-2.742335390411667452936e-01), np.float32(2.159509375685829852307e-02)
_NAN = np.float32(np.nan)
_INF = np.float32(np.inf)
_ZERO = np.float32(0.0)


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")  # top / bottom never raises
def exp_f32(x):  # pragma: no cover - compiled by numba
    """numpy's float32 exp of the float32 x (see the module docstring). Written without branches
    (the special lanes computed on 0, then replaced, as numpy's kernel does), so a loop calling it
    vectorises."""
    nan, big, small = x != x, x >= _XMAX, x <= _XMIN
    y = _ZERO if nan | big | small else x
    k = y * _LOG2E
    k = (k + _MAGIC) - _MAGIC
    r = _fma(k, _C1, y)
    r = _fma(k, _C2, r)
    top = _fma(_P5, r, _P4)
    top = _fma(top, r, _P3)
    top = _fma(top, r, _P2)
    top = _fma(top, r, _P1)
    top = _fma(top, r, _P0)
    bottom = _fma(_Q2, r, _Q1)
    bottom = _fma(bottom, r, _Q0)
    # quotient * 2**k rounded once: 2**k1 with k1 in [-125, 127] scales exactly, 2**(k - k1) then
    # rounds where the result is below the normal range (k < -125) or overflows (k = 128)
    n = np.int32(k)
    n1 = min(max(n, np.int32(-125)), np.int32(127))
    value = ((top / bottom) * _power_of_two(n1)) * _power_of_two(n - n1)
    value = _NAN if nan else value
    value = _INF if big else value
    return _ZERO if small else value


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _exp_into(x, out):  # pragma: no cover - compiled by numba
    for i in range(x.size):
        out[i] = exp_f32(x[i])


def exp_f32_array(x: np.ndarray) -> np.ndarray:
    """exp_f32 over a float32 array (its flat copy's elements), for the checks."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    _exp_into(flat, out)
    return out.reshape(np.shape(x))


def probe_values() -> np.ndarray:
    """float32 values that exercise every branch and range: a sweep of bit patterns over all of
    float32 (every 257th, a stride that visits all low bits), every value around the overflow and
    underflow limits and over the range of results below the smallest normal (x in [-104, -87.3]),
    values near 0 and the special values."""
    sweep = np.arange(0, 2 ** 32, 257, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = []
    for limit in (_XMAX, _XMIN, np.float32(-87.33654)):
        bits = np.array([limit], np.float32).view(np.int32)[0]
        edges.append(np.arange(bits - 4096, bits + 4096, dtype=np.int64).astype(np.int32).view(np.float32))
    subnormal_results = np.linspace(-104.0, -87.3, 1 << 18, dtype=np.float32)
    small = np.linspace(-1e-3, 1e-3, 1 << 14, dtype=np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1.0, -1.0], np.float32)
    return np.concatenate([sweep, *edges, subnormal_results, small, special])


@functools.lru_cache(maxsize=None)
def matches_numpy() -> bool:
    """Whether exp_f32 gives np.exp's bits on probe_values() (about 17 million values, ~0.1 s):
    numpy's kernel is this build's, and this machine runs it."""
    x = probe_values()
    with np.errstate(all="ignore"):
        want = np.exp(x)
    return bool(np.array_equal(exp_f32_array(x).view(np.uint32), want.view(np.uint32)))


@numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def sigmoid_f32(x):  # pragma: no cover - compiled by numba
    """The cpu device's float32 sigmoid (needle.primitives._sigmoid_into) with exp_f32: e = exp(-|x|),
    then (1 if x >= 0 else e) / (e + 1), the same operations in the same order."""
    e = exp_f32(-abs(x))
    top = np.float32(1) if x >= 0 else e
    return top / (e + np.float32(1))
