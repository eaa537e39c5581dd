"""Row sums inside the cpu device's fused loops (fusion_cpu, pairwise_cpu), bit for bit.

A `reduce_sum` over the last axis of a float chain ends a fused group: the loop sums each
row in numpy's pairwise order, so a compiled step must give exactly the eager step's bytes
(eager sums with `np.add.reduce`). The data mixes signs and magnitudes over many orders
(exp(6 * randn)), where any other summation order changes the last bits of most rows --
shown by `test_a_left_to_right_row_sum_would_fail_these_comparisons`, which puts a plain
left-to-right sum in the generated loops and sees the compiled results differ.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.compile.fusion_cpu import MAX_ROW
from needle.compile.pairwise_cpu import pairwise_sum, row_sum
from train_step import train_step

LENGTHS = list(range(1, 301)) + [511, 512, 1000, 1024, 4096, 10007]


def wide(rng, shape, dtype):
    """Mixed signs over many orders of magnitude: a wrong order shows in the last bits."""
    return (rng.randn(*shape) * np.exp(6 * rng.randn(*shape))).astype(dtype)


def numpy_rows(x: np.ndarray) -> np.ndarray:
    """What the eager cpu `reduce_sum` computes: numpy's add.reduce over the last axis."""
    return np.add.reduce(x, axis=(x.ndim - 1,))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_sum_is_numpys_add_reduce_bit_for_bit(dtype):
    rng = np.random.RandomState(0)
    for n in [0] + LENGTHS + [100_003]:
        x = wide(rng, (n,), dtype)
        assert np.asarray(row_sum(x), dtype).tobytes() == numpy_rows(x[None]).tobytes(), n
        if n >= 20:  # a part of a row, from an offset
            assert np.asarray(pairwise_sum(x, 3, n - 7), dtype).tobytes() == np.add.reduce(x[3:n - 4]).tobytes(), n


def test_row_sum_of_special_values_is_numpys():
    rows = [[-0.0], [-0.0] * 9, [np.inf, -np.inf] + [1.0] * 10, [np.nan] + [2.0] * 20, [np.inf] * 130,
            [3e38, 3e38, -3e38] * 50, [1e-45] * 77]
    for values in rows:
        for dtype in ("float32", "float64"):
            x = np.array(values, dtype)
            with np.errstate(all="ignore"):
                assert np.asarray(row_sum(x), dtype).tobytes() == numpy_rows(x[None]).tobytes(), values


def test_a_left_to_right_sum_differs_from_numpys_on_this_data():
    """The data discriminates: summed in another order, most rows change."""
    x = wide(np.random.RandomState(1), (256, 128), "float32")
    plain = np.cumsum(x, axis=1)[:, -1]  # left to right
    assert (plain != numpy_rows(x)).mean() > 0.5


def compiled_equals_eager(fn, *arrays, device=None):
    """(eager outputs, compiled outputs after 3 replays, the compiled function)."""
    device = device or ndl.cpu()
    tensors = [ndl.Tensor(a, device=device, requires_grad=False) for a in arrays]
    eager = [t.numpy() for t in fn(*tensors)]
    compiled = ndl.compile(fn)
    for _ in range(3):
        got = [t.numpy() for t in compiled(*tensors)]
    for e, g in zip(eager, got):
        assert e.dtype == g.dtype and e.shape == g.shape
        assert e.tobytes() == g.tobytes()
    return eager, got, compiled


def kinds(compiled) -> list:
    return [c.name if c.kind == "kernel" else c.kind for c in compiled.programs[0].calls]


def chain_sum(x, y):
    z = (x * y + x) * 2.0 - y
    return ndl.ops.summation(z, axes=(len(z.shape) - 1,)), z


def chain_sums(*pairs):
    """chain_sum of each (x, y) pair of the arguments: one step holding a group per pair."""
    return [s for x, y in zip(pairs[::2], pairs[1::2]) for s in chain_sum(x, y)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fused_row_sum_of_a_chain_is_the_eager_sum_for_every_length(dtype):
    rng = np.random.RandomState(2)
    arrays = [wide(rng, (3, n), dtype) for n in LENGTHS for _ in range(2)]
    eager, _, compiled = compiled_equals_eager(chain_sums, *arrays)
    for k, (x, y) in enumerate(zip(arrays[::2], arrays[1::2])):
        np.testing.assert_allclose(eager[2 * k], numpy_rows(((x * y + x) * 2 - y).astype(dtype)), rtol=1e-5)
    # every sum of up to MAX_ROW elements inside its loop; longer rows keep numpy's faster reduce
    assert kinds(compiled) == [k for n in LENGTHS for k in (["fused"] if n <= MAX_ROW else ["fused", "reduce_sum"])]


@pytest.mark.parametrize("shape", [(7,), (1, 1, 33), (2048, 128), (32, 4, 64, 64), (5, 1, 3, 17), (4, 300)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fused_row_sum_over_any_leading_shape(shape, dtype):
    rng = np.random.RandomState(3)
    x, y = wide(rng, shape, dtype), wide(rng, shape, dtype)
    _, _, compiled = compiled_equals_eager(chain_sum, x, y)
    assert kinds(compiled) == (["fused"] if shape[-1] <= MAX_ROW else ["fused", "reduce_sum"])


def test_a_fused_row_sum_with_broadcast_operands_nan_and_inf():
    """A per-row value broadcast along the row and a per-column one along the rows (LayerNorm's
    x - mean and x * weight), and rows holding nan and inf."""
    rng = np.random.RandomState(4)
    x = wide(rng, (64, 96), "float32")
    x[3, 5], x[7, :3], x[9, 10] = np.nan, np.inf, -np.inf
    x[9, 11] = np.inf
    mean = wide(rng, (64, 1), "float32")
    weight = wide(rng, (1, 96), "float32")

    def fn(x, mean, weight):
        d = (x - ndl.ops.broadcast_to(mean, x.shape)) * ndl.ops.broadcast_to(weight, x.shape)
        return ndl.ops.summation(d * d, axes=(1,)), ndl.ops.summation(x * 3.0 + 1.0, axes=(1,))

    with np.errstate(invalid="ignore"):  # inf - inf in the eager sum
        eager, _, compiled = compiled_equals_eager(fn, x, mean, weight)
    assert np.isnan(eager[0][3]) and np.isinf(eager[0][7]) and np.isnan(eager[1][9])
    assert "reduce_sum" not in kinds(compiled) and "fused" in kinds(compiled)


def test_the_sum_of_a_transposed_or_non_last_axis_stays_numpys():
    """Only rows numpy sums one by one are fused: a sum over the first axis keeps its kernel."""
    rng = np.random.RandomState(5)
    x = wide(rng, (40, 30), "float32")

    def fn(x):
        z = x * 2.0 + 1.0
        return ndl.ops.summation(z, axes=(0,)), ndl.ops.summation(z, axes=(0, 1))

    _, _, compiled = compiled_equals_eager(fn, x)
    assert kinds(compiled).count("reduce_sum") == 2


@pytest.mark.parametrize("dim", [8, 37, 128, 300])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_compiled_layernorm_training_step_is_the_eager_step_byte_for_byte(dim, dtype):
    """LayerNorm forward and backward (the mean, the variance and their gradients are row sums),
    softmax loss, SGD: losses, parameters and gradients equal to the byte."""
    def run(compiled):
        np.random.seed(0)
        model = nn.Sequential(nn.Linear(dim, dim, dtype=dtype), nn.LayerNorm1d(dim, dtype=dtype), nn.ReLU(),
                              nn.Linear(dim, 5, dtype=dtype), nn.LayerNorm1d(5, dtype=dtype))
        opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = train_step(model, opt, nn.SoftmaxLoss())
        step_fn = ndl.compile(step) if compiled else step
        rng = np.random.RandomState(1)
        losses = []
        for _ in range(4):
            x = ndl.Tensor(wide(rng, (16, dim), dtype), requires_grad=False)
            y = ndl.Tensor(rng.randint(0, 5, 16), dtype="int64")
            losses.append(step_fn(x, y).numpy())
        grads = [p.grad.numpy() for p in model.parameters()]
        return losses, [p.numpy() for p in model.parameters()], grads, step_fn

    eager, compiled = run(False), run(True)
    for e, c in zip(eager[:3], compiled[:3]):
        assert [a.tobytes() for a in e] == [a.tobytes() for a in c]
    calls = compiled[3].programs[0].calls
    assert any(c.kind == "fused" and getattr(c.fn, "reduce", None) for c in calls)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_compiled_softmax_forward_and_backward_is_the_eager_one(dtype):
    rng = np.random.RandomState(6)
    x0 = wide(rng, (8, 4, 33, 64), dtype) * 1e-3
    w0 = rng.randn(8, 4, 33, 64).astype(dtype)

    def fn(x, w):
        x = ndl.Tensor(x.realize_cached_data(), requires_grad=True)
        s = ndl.ops.softmax(x * 0.5 + 1.0, axis=-1)
        (s * w).sum().backward()
        return s, x.grad

    compiled_equals_eager(fn, x0, w0)


def test_a_fused_row_sum_split_over_threads_is_the_whole_sum(monkeypatch):
    """Large groups run as row blocks on two threads (parallel_cpu), each with its own row buffer."""
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "2")
    rng = np.random.RandomState(7)
    x, y = wide(rng, (4096, 128), "float32"), wide(rng, (4096, 128), "float32")
    _, _, compiled = compiled_equals_eager(chain_sum, x, y)
    assert kinds(compiled) == ["fused"]


WRONG_ORDER_SCRIPT = """
import numba, numpy as np, needle as ndl
from needle.compile import pairwise_cpu

@numba.njit
def plain(row):  # left to right: not numpy's order
    s = row.dtype.type(0)
    for v in row:
        s += v
    return s

pairwise_cpu.row_sum = plain  # what the generated module imports
rng = np.random.RandomState(2)
x = (rng.randn(64, 128) * np.exp(6 * rng.randn(64, 128))).astype(np.float32)
def f(t):
    return (ndl.ops.summation(t * 2.0, axes=(1,)),)
t = ndl.Tensor(x, requires_grad=False)
eager = f(t)[0].numpy()
c = ndl.compile(f)
got = [c(t)[0].numpy() for _ in range(3)][-1]  # the third call replays
print(int((eager != got).sum()), [k.kind for k in c.programs[0].calls])
"""


def test_a_left_to_right_row_sum_would_fail_these_comparisons(tmp_path):
    """With a plain loop in place of numpy's order, the compiled rows differ from the eager ones:
    the comparisons above can fail. (A fresh process and kernel cache, so nothing stays patched.)"""
    env = dict(os.environ, NEEDLE_CACHE_DIR=str(tmp_path / "kernels"))
    done = subprocess.run([sys.executable, "-c", WRONG_ORDER_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    differing, calls = done.stdout.split(maxsplit=1)
    assert "fused" in calls and int(differing) > 32  # most of the 64 rows


def test_a_row_sum_through_a_reshaped_view_of_the_chain_joins_its_loop():
    """LayerNorm sums a (B, T, C) chain through its (B*T, C) view: the same rows, one loop."""
    rng = np.random.RandomState(8)
    x, y = wide(rng, (4, 6, 40), "float32"), wide(rng, (4, 6, 40), "float32")

    def fn(x, y):
        z = x * y + y
        return ndl.ops.summation(ndl.ops.reshape(z, (24, 40)), axes=(1,)), z

    _, _, compiled = compiled_equals_eager(fn, x, y)
    assert kinds(compiled) == ["fused"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_lone_row_sum_runs_as_a_generated_row_sum(dtype):
    """A sum over the last axis with no chain before it (a matmul's output) runs the generated
    row sum too: faster than numpy's reduce over short rows, with its bits."""
    rng = np.random.RandomState(9)
    a, b = wide(rng, (64, 30), dtype), rng.randn(30, 100).astype(dtype)

    def fn(a, b):
        return (ndl.ops.summation(a @ b, axes=(1,)),)

    _, _, compiled = compiled_equals_eager(fn, a, b)
    assert kinds(compiled) == ["matmul", "fused"]


def row_reductions(x, y):
    """The sum, max and min over the last axis of a chain (NDArray level)."""
    z = (x * y * 2.0).realize_cached_data()
    last = (z.ndim - 1,)
    return [ndl.Tensor(r, requires_grad=False) for r in (z.sum(axis=last), z.max(axis=last), z.min(axis=last))]


def special_rows(rng, shape, dtype, nan_signs=1):
    """(x, y) whose chain x * y * 2 has rows of 0.0 and -0.0 mixed, rows with nans (of one sign,
    or of both with nan_signs=2), rows of -inf, rows holding inf and -inf, and ordinary rows."""
    x, y = wide(rng, shape, dtype), wide(rng, shape, dtype)
    rows, n = x.reshape(-1, shape[-1]), y.reshape(-1, shape[-1])
    rows[0::5], n[0::5] = 0.0, np.where(rng.rand(*n[0::5].shape) < 0.5, 1.0, -1.0)  # 0 * y * 2: +-0
    rows[1::5, ::3] = np.nan
    if nan_signs == 2:
        rows[1::5, 1::7] = -np.asarray(np.nan, dtype)
    rows[2::5], n[2::5] = -np.inf, 0.5
    rows[3::5, 0], rows[3::5, -1], n[3::5, 0], n[3::5, -1] = np.inf, -np.inf, 1.0, 1.0
    return x, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_row_sums_maxima_and_minima_of_signed_zeros_nans_and_infs_are_numpys_bits(dtype):
    """max/min: a row whose largest value is 0 (0.0 and -0.0 mixed) or that holds a nan is
    handed to numpy's reduce after the loop (its bits depend on numpy's order); others are
    computed in the loop."""
    rng = np.random.RandomState(10)
    sums = []
    for shape in [(10, 1), (10, 2), (10, 7), (10, 64), (20, 130), (5, 2, 300), (2050, 3)]:
        x, y = special_rows(rng, shape, dtype)
        with np.errstate(invalid="ignore"):
            eager, _, compiled = compiled_equals_eager(row_reductions, x, y)
        sums += list(eager[0].reshape(-1))
        if shape[-1] <= MAX_ROW:
            assert set(kinds(compiled)) == {"fused"}  # no reduce_sum, reduce_max or reduce_min left
    sums = np.array(sums)
    assert np.isnan(sums).any() and (sums == -np.inf).any() and (sums == 0).any()  # the cases came up


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_with_nans_of_both_signs_sums_to_nan(dtype):
    """Which of two different nans an addition returns is left open by IEEE 754 (x86 returns its
    first operand's, and numpy's compiled loop may add either way round): such a row's sum is a
    nan in both, its sign not promised. Every other row is the same bytes."""
    rng = np.random.RandomState(11)
    x, y = special_rows(rng, (20, 100), dtype, nan_signs=2)
    t = [ndl.Tensor(a, requires_grad=False) for a in (x, y)]
    with np.errstate(invalid="ignore"):
        eager = row_reductions(*t)[0].numpy()
        compiled = ndl.compile(row_reductions)
        got = [compiled(*t)[0].numpy() for _ in range(3)][-1]
    mixed = np.zeros(20, bool)
    mixed[1::5] = True
    assert np.isnan(eager[mixed]).all() and np.isnan(got[mixed]).all()
    assert eager[~mixed].tobytes() == got[~mixed].tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_row_maxima_and_minima_with_nans_of_both_signs_are_numpys_bits(dtype):
    """max and min hand a row with a nan to numpy: the same nan as eager, whatever its sign."""
    rng = np.random.RandomState(12)
    x, y = special_rows(rng, (40, 100), dtype, nan_signs=2)
    t = [ndl.Tensor(a, requires_grad=False) for a in (x, y)]
    with np.errstate(invalid="ignore"):
        eager = [r.numpy() for r in row_reductions(*t)[1:]]
        compiled = ndl.compile(row_reductions)
        got = [[r.numpy() for r in compiled(*t)[1:]] for _ in range(3)][-1]
    assert [e.tobytes() for e in eager] == [g.tobytes() for g in got]
    assert np.isnan(eager[0][1::5]).all()


def test_fused_row_maxima_split_over_threads_are_the_whole_ones(monkeypatch):
    """Row blocks on two threads, each listing and handing over its own rows."""
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "2")
    rng = np.random.RandomState(13)
    x, y = special_rows(rng, (4096, 128), "float32", nan_signs=2)
    with np.errstate(invalid="ignore"):
        _, _, compiled = compiled_equals_eager(lambda x, y: row_reductions(x, y)[1:], x, y)
    assert set(kinds(compiled)) == {"fused"}


@pytest.mark.parametrize("op", ["max", "min"])
def test_a_fused_max_of_a_chain_used_nowhere_else_keeps_its_values_for_numpys_rows(op):
    """The chain's values are stored by the loop (as the unfused step did) so that the rows left
    to numpy can be read back."""
    rng = np.random.RandomState(14)
    x, y = special_rows(rng, (50, 33), "float32", nan_signs=2)

    def fn(x, y):
        z = (x * y * 2.0).realize_cached_data()
        return (ndl.Tensor(getattr(z, op)(axis=(1,)), requires_grad=False),)

    with np.errstate(invalid="ignore"):
        _, _, compiled = compiled_equals_eager(fn, x, y)
    fused = compiled.programs[0].calls[0]
    assert fused.kind == "fused" and f"reduce_{op}" not in kinds(compiled)
    assert len(fused.fn.out_vars) == 1  # the chain's values, stored for numpy's rows
