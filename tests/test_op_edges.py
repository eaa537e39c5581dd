"""Every op at the edges of its domain (0, -0, +-inf, nan, +-1e8, tiny and denormal values,
negative bases, exponent 0), forward and backward, against PyTorch's expression in float64,
in float32 and float64 on both nd-mode devices. The table and the tolerance are
tests/op_edge_cases.py.

After the sweep, the sweep's own checks: its reference helpers are PyTorch's autograd, its
tolerance still fails on wrong values, and it holds for another CPU's float32 rounding."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
import op_edge_cases as edge
from needle.backend_ndarray import kernels_cpu_numpy
from needle.backend_ndarray.device import BackendDevice
from needle.backend_ndarray.host_buffer import read
from op_edge_cases import CASES, DTYPES, Torch, edges, pairs, run_case

# numpy warns of the infs and nans these inputs make on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=["cpu", "cpu_numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_edges(case, dtype, device):
    run_case(case, dtype, device)


# --- the reference's helpers are PyTorch's autograd --------------------------------------------

def _value_and_grads(fn, *arrays):
    """fn's float64 values and the gradients of sum(out * w) for the float64 tensors `arrays`."""
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*xs)
    w = torch.tensor(np.random.default_rng(0).standard_normal(out.shape))
    grads = torch.autograd.grad(out, xs, w)
    return [out.detach().numpy()] + [g.numpy() for g in grads]


def _same(ours, theirs, **tol):
    for a, b in zip(ours, theirs):
        if tol:
            np.testing.assert_allclose(a, b, equal_nan=True, **tol)
        else:
            np.testing.assert_array_equal(a, b)  # nan where nan, the same bits elsewhere


@pytest.mark.parametrize("exponent", [0, 0.0, 1, 2, 3, -1, -2, -3, 0.5, -0.5, 1.5, -1.5, 1e8, -1e8, edge.INF, edge.NAN])
def test_reference_pow_is_torch_pow_in_float64(exponent):
    """In float64 `Torch.stored` rounds nothing, so Torch.pow must be PyTorch's own, and rdiv
    PyTorch's s / x (whose gradient is -g * (1 / x)^2 where ours is g * s * -x^-2: an ulp apart)."""
    assert Torch.dtype == "float64" and Torch.perturbations is None
    x = edges("float64")
    _same(_value_and_grads(lambda t: Torch.pow(t, exponent), x), _value_and_grads(lambda t: t ** exponent, x))
    _same(_value_and_grads(lambda t: Torch.rdiv(exponent, t), x), _value_and_grads(lambda t: exponent / t, x),
          rtol=1e-15)


def test_reference_helpers_are_torch_in_float64():
    x, y = pairs("float64")
    _same(_value_and_grads(Torch.pow, x, y), _value_and_grads(torch.pow, x, y))
    _same(_value_and_grads(Torch.div, x, y), _value_and_grads(torch.div, x, y))
    e = edges("float64")
    _same(_value_and_grads(Torch.tanh, e), _value_and_grads(torch.tanh, e), rtol=1e-14)  # its kernel fuses 1 - t t
    for approximate in ("none", "tanh"):  # the documented formula, F.gelu's rounding
        _same(_value_and_grads(lambda t: Torch.gelu(t, approximate), e),
              _value_and_grads(lambda t: F.gelu(t, approximate=approximate), e), rtol=1e-14, atol=1e-16)
    # sigmoid: PyTorch's s * (1 - s) is exact enough where 1 - s does not cancel
    mid = np.linspace(-4, 4, 33)
    _same(_value_and_grads(Torch.sigmoid, mid), _value_and_grads(torch.sigmoid, mid), rtol=1e-14)
    x, w, b = (np.random.default_rng(k).standard_normal(shape) for k, shape in ((0, (6, 5)), (1, 5), (2, 5)))
    _same(_value_and_grads(edge._batch_norm_unfused, x, w, b),
          _value_and_grads(lambda *t: F.batch_norm(t[0], None, None, t[1], t[2], training=True, eps=1e-5), x, w, b),
          rtol=1e-12, atol=1e-14)


# --- the tolerance still fails on wrong values -------------------------------------------------

def _float_case(op_id):
    return next(case for case in CASES if case.id == op_id)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op_id", ["exp[edges]", "tanh[edges]", "summation(1,)[rows]", "softmax(1)[rows]",
                                   "matmul[inf and nan entries]", "conv(stride=1, padding=1)[nan and inf in the input]",
                                   "batch_norm[constant column of 1e8]", "gelu[edges]", "erf[edges]", "silu[edges]"])
def test_check_fails_on_wrong_values(op_id, dtype):
    """The reference rounded to the dtype passes; one value 1e-4 relative off, an inf of the
    wrong sign, a nan for an inf (PyTorch's AVX-512 GELU at +inf) or for a finite value, or a
    finite value for a nan fails."""
    case = _float_case(op_id)
    ref = edge.reference(case, dtype)
    values = [(ref.out, ref.out_scale)] + list(zip(ref.grads, ref.grad_scales))
    for expected, scale in values:
        tol, right = case.c * scale, expected.astype(dtype)
        edge.check(right, expected, tol, "right", [])
        finite = np.isfinite(right) & (right != 0)
        wrongs = []
        if finite.any():  # the best-conditioned value: a 1e-4 relative error there is the op's, not float32's
            i = np.unravel_index(np.argmin(np.where(finite, tol / np.abs(expected), np.inf)), right.shape)
            wrongs += [(i, right[i] * (1 + 1e-4)), (i, np.nan)]
        infs, nans = np.argwhere(np.isinf(right)), np.argwhere(np.isnan(right))
        wrongs += [(tuple(k), -right[tuple(k)]) for k in infs[:1]] + [(tuple(k), np.nan) for k in infs[:1]]
        wrongs += [(tuple(k), 0.0) for k in nans[:1]]
        assert wrongs or not right.size
        for index, value in wrongs:
            wrong = right.copy()
            wrong[index] = value
            with pytest.raises(AssertionError):
                edge.check(wrong, expected, tol, "wrong", [])


def test_tolerance_catches_small_errors_across_the_sweep():
    """A relative error of 1e-4 is out of tolerance at nearly every nonzero finite value of the
    sweep, forward and gradients, and at some value of every case but x ** +-1e8 (whose values
    are (+-1) ** +-1e8: an input rounding u moves them by a factor e^(1e8 u) = 400)."""
    for dtype, share in (("float32", 0.97), ("float64", 0.999)):
        caught = total = 0
        for case in CASES:
            ref = edge.reference(case, dtype)
            if ref.out_scale is None:
                continue
            n = m = 0
            for expected, scale in [(ref.out, ref.out_scale)] + list(zip(ref.grads, ref.grad_scales)):
                nonzero = np.isfinite(expected.astype(dtype)) & (expected != 0)
                n += np.sum(nonzero & (1e-4 * np.abs(expected) > case.c * scale))
                m += nonzero.sum()
            caught, total = caught + n, total + m
            assert n > 0 or m == 0 or case.op in ("x ** 100000000.0", "x ** -100000000.0"), (case.id, dtype)
        assert caught >= share * total, (dtype, caught, total)


# --- another CPU's rounding ----------------------------------------------------------------------

# Results numpy's float32/float64 kernels give exactly on every CPU (C99 Annex F, and numpy's
# special-value tests): where these hold the simulated kernels below do not move the result.
_EXACT = {
    "ewise_exp": lambda a: (a == 0) | ~np.isfinite(a),
    "ewise_log": lambda a: (a == 1) | ~np.isfinite(a) | (a <= 0),
    "ewise_tanh": lambda a: (a == 0) | ~np.isfinite(a),
    "ewise_sigmoid": lambda a: (a == 0) | ~np.isfinite(a),
    "ewise_sin": lambda a: (a == 0) | ~np.isfinite(a),
    "ewise_cos": lambda a: (a == 0) | ~np.isfinite(a),
    "ewise_pow": lambda a, b: (b == 0) | (a == 1),
    # numpy's a ** s for s in (-1, 0, 0.5, 1, 2) is reciprocal, ones, sqrt, a copy, square, and
    # needle's -0.5 is 1 / sqrt: correctly rounded IEEE operations
    "scalar_power": lambda a, s: (a == 1) | (s in (-1, 0, 0.5, -0.5, 1, 2)),
    "scalar_rpower": lambda a, s: (a == 0) | (s == 1),
}


def another_cpu(seed: int, ulps: float = 4.0) -> BackendDevice:
    """cpu_numpy with another CPU's rounding, as far as numpy allows it to differ: each exp, log,
    tanh, sigmoid, sin, cos and pow result moved by up to `ulps` ulp (numpy's accuracy bound for its SIMD
    kernels, numpy/_core/tests/data/umath-validation-set-*.csv), and every sum and matmul
    accumulated in a random order (SIMD lanes and BLAS kernels pick their own)."""
    rng = np.random.default_rng(seed)
    mod = types.ModuleType("another_cpu")
    mod.__dict__.update({k: v for k, v in vars(kernels_cpu_numpy).items() if not k.startswith("__")})
    mod.__device_name__, mod.__tile_size__ = kernels_cpu_numpy.__device_name__, kernels_cpu_numpy.__tile_size__

    def moved(name):
        kernel, exact = getattr(kernels_cpu_numpy, name), _EXACT[name]

        def run(*args):
            kernel(*args)
            out = args[-1]
            y = out.array[: out.size]
            operands = [read(a).reshape(-1) if not np.isscalar(a) else a for a in args[:-1]]
            keep = np.broadcast_to(exact(*operands), y.shape) | ~np.isfinite(y) | (y == 0)
            step = np.spacing(np.abs(y)).astype(np.float64)
            y[...] = np.where(keep, y, (y + rng.uniform(-ulps, ulps, y.shape) * step).astype(y.dtype))
        return run

    for name in _EXACT:
        setattr(mod, name, moved(name))

    def reduce_sum(a, out, reduce_size):
        x, axes = kernels_cpu_numpy._blocks(a, reduce_size)
        x = x.reshape(x.shape[: x.ndim - len(axes)] + (-1,))
        total = np.zeros(x.shape[:-1], out.array.dtype)
        for k in rng.permutation(x.shape[-1]):
            total = (total + x[..., k]).astype(out.array.dtype)
        kernels_cpu_numpy._write(out, total)

    def matmul(a, b, out, m, n, p, batch=1):
        a, b = read(a).reshape(batch, m, n), read(b).reshape(batch, n, p)
        total = np.zeros((batch, m, p), a.dtype)
        for k in rng.permutation(n):
            total = (total + a[:, :, k, None] * b[:, None, k, :]).astype(a.dtype)
        kernels_cpu_numpy._write(out, total)

    mod.reduce_sum, mod.matmul = reduce_sum, matmul
    return BackendDevice("another_cpu", mod)


def _sweep(device, dtypes=DTYPES):
    failures = {}
    for case in CASES:
        for dtype in dtypes:
            try:
                run_case(case, dtype, device)
            except AssertionError as error:
                failures[case.id, dtype] = str(error)[:300]
    return failures


@pytest.mark.parametrize("seed", [1, 2])
def test_sweep_holds_for_another_cpus_rounding(seed):
    """The tolerance does not depend on this CPU's kernels: the whole sweep passes with each
    transcendental 4 ulp off at random and the sums in a random order."""
    device = another_cpu(seed)
    x = np.linspace(-3, 3, 61, dtype="float32")
    moved = ndl.Tensor(x, device=device).exp().numpy()
    assert not np.array_equal(moved, np.exp(x)) and np.allclose(moved, np.exp(x), rtol=5e-7)  # it does differ
    assert not _sweep(device)


def test_sweep_fails_for_inaccurate_kernels():
    """...and it is not so loose that kernels 8 times worse than numpy's bound would pass: with
    32 ulp, exp, log and tanh fail."""
    failures = _sweep(another_cpu(1, ulps=32), ["float32"])
    assert {"exp[edges]", "log[edges]", "tanh[edges]"} <= {op for op, _ in failures}, failures
