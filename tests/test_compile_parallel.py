"""ndl.compile on several cores: large calls run as row blocks on worker threads, fused loops
read broadcast operands through arrays of their own axes, and the replay still gives the
eager step's bits.

Each kernel kind that splits is run whole and split over the same buffers and compared
bit for bit (a reduction sums each kept row in the same order, an elementwise kernel
computes each element from the same operands); then whole compiled steps at sizes where
splitting happens are compared with the eager steps.
"""
import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.backend_ndarray import kernels_cpu
from needle.backend_ndarray.host_buffer import Array, read
from needle.compile import fusion_cpu, parallel_cpu
from train_step import train_step


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "2")


def buffer(values: np.ndarray) -> Array:
    return Array.wrap(np.ascontiguousarray(values).reshape(-1).copy())


def whole_and_split(name, args_of):
    """(out of the kernel run whole, out of its split launch), each on fresh output buffers."""
    whole_args, split_args = args_of(), args_of()
    getattr(kernels_cpu, name)(*whole_args)
    launch = parallel_cpu.split(name, getattr(kernels_cpu, name), split_args, kernels_cpu.prepare)
    assert launch is not None, f"{name} was not split"
    launch()
    return whole_args, split_args


R = np.random.RandomState(0)
X = R.randn(700, 1000).astype(np.float32)
Y = R.randn(700, 1000).astype(np.float32)
ROW = R.randn(1000).astype(np.float32)
BX, BY, BROW, BABS = buffer(X), buffer(Y), buffer(ROW), buffer(np.abs(Y))


@pytest.mark.parametrize("operand,reduce_size", [
    ((BX, (700, 1000), None, 0), 1000),                # rows of a matrix (numpy's pairwise sum)
    ((BX, (70, 10, 1000), None, 0), 10000),            # two trailing axes
    ((BX, (350, 1000), (2000, 1), 1000), 1000),        # every other row, from an offset
    ((BX, (700, 700), (1000, 1), 0), 700),             # rows of 700 in a buffer of rows of 1000
], ids=["rows", "two-axes", "strided", "padded"])
@pytest.mark.parametrize("name", ["reduce_sum", "reduce_max", "reduce_min"])
def test_a_split_reduction_gives_the_whole_reductions_bits(two_threads, name, operand, reduce_size):
    kept = int(np.prod(operand[1])) // reduce_size
    whole, split = whole_and_split(name, lambda: (operand, Array(kept), reduce_size))
    assert whole[1].array.tobytes() == split[1].array.tobytes()
    reduce = {"reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min}[name]
    expected = reduce(read(operand).reshape(kept, reduce_size), axis=1)
    np.testing.assert_allclose(split[1].array, expected, rtol=1e-5, atol=1e-4)


def test_a_split_reduction_of_float64_sums_like_numpy(two_threads):
    data = buffer(np.random.RandomState(3).rand(600, 517))
    whole, split = whole_and_split("reduce_sum", lambda: ((data, (600, 517), None, 0), Array(600, "float64"), 517))
    np.testing.assert_array_equal(split[1].array, data.array.reshape(600, 517).sum(axis=1))
    assert whole[1].array.tobytes() == split[1].array.tobytes()


@pytest.mark.parametrize("name,args_of", [
    ("ewise_add", lambda: ((BX, (700, 1000), None, 0), (BROW, (700, 1000), (0, 1), 0), Array(700_000))),
    ("ewise_mul", lambda: ((BX, (1000, 700), (1, 1000), 0), (BY, (1000, 700), (1, 1000), 0), Array(700_000))),
    ("ewise_exp", lambda: ((BX, (700, 1000), None, 0), Array(700_000))),
    ("ewise_sigmoid", lambda: ((BX, (700, 1000), None, 0), Array(700_000))),
    ("scalar_power", lambda: ((BABS, (700, 1000), None, 0), -0.5, Array(700_000))),
    ("scalar_rdiv", lambda: ((BX, (700, 1000), None, 0), 3.0, Array(700_000))),
    ("scalar_gt", lambda: ((BX, (700, 1000), None, 0), 0.5, Array(700_000, "bool"))),
    ("ewise_where", lambda: ((buffer(X > 0), (700, 1000), None, 0), (BX, (700, 1000), None, 0),
                             (BROW, (700, 1000), (0, 1), 0), Array(700_000))),
    ("compact", lambda: (BX, Array(700_000), (1000, 700), (1, 1000), 0)),
])
def test_a_split_elementwise_kernel_gives_the_whole_kernels_bits(two_threads, name, args_of):
    whole, split = whole_and_split(name, args_of)
    out = -1 if name != "compact" else 1
    assert whole[out].array.tobytes() == split[out].array.tobytes()


IMAGES = R.randn(32, 3, 33, 34).astype(np.float32)  # NCHW: read as an NHWC view
WINDOWS = buffer(R.randn(32, 16, 17, 3, 3, 8).astype(np.float32))


@pytest.mark.parametrize("name,args_of", [
    ("im2col", lambda: ((buffer(IMAGES), (32, 33, 34, 3), (3366, 34, 1, 1122), 0), Array(32 * 9 * 9 * 49 * 3),
                        (32, 9, 9, 7, 7, 3), (4, 4), (1, 1), (3, 3))),
    ("col2im", lambda: ((WINDOWS, (32, 16, 17, 3, 3, 8), None, 0),
                        Array(32 * 32 * 34 * 8), (32, 32, 34, 8), (3, 3), (2, 2), (1, 1), (1, 1))),
], ids=["im2col", "col2im"])
def test_split_window_copies_and_sums_give_the_whole_calls_bits(two_threads, name, args_of):
    """A convolution's im2col and col2im split by the images of the batch, each block reading and
    writing its own images."""
    whole, split = whole_and_split(name, args_of)
    assert whole[1].array.tobytes() == split[1].array.tobytes()


def test_a_split_store_writes_every_row_of_a_strided_destination(two_threads):
    def args_of():
        dest = buffer(np.zeros((700, 2000), np.float32))
        return (BX, dest, (700, 1000), (2000, 1), 500)
    whole, split = whole_and_split("ewise_setitem", args_of)
    np.testing.assert_array_equal(split[1].array.reshape(700, 2000)[:, 500:1500], X)
    assert whole[1].array.tobytes() == split[1].array.tobytes()


def test_what_is_not_split(two_threads, monkeypatch):
    small = ((BX, (100, 100), None, 0), Array(10_000))
    assert parallel_cpu.split("ewise_exp", kernels_cpu.ewise_exp, small, kernels_cpu.prepare) is None
    total = ((BX, (700, 1000), None, 0), Array(1), 700_000)  # one sum: its order would change
    assert parallel_cpu.split("reduce_sum", kernels_cpu.reduce_sum, total, kernels_cpu.prepare) is None
    # column sums (kept axis inside the reduced one in memory): measured slower split
    for columns in (((BX, (1000, 700), (1, 1000), 0), Array(1000), 700),
                    ((BX, (100, 10, 700), (1, 100, 1000), 0), Array(100), 7000)):
        assert parallel_cpu.split("reduce_sum", kernels_cpu.reduce_sum, columns, kernels_cpu.prepare) is None
    # an in-place update reading its output through another view: a block would see another's writes
    out = buffer(X)
    transposed = ((out, (1000, 700), (1, 1000), 0), (BY, (1000, 700), None, 0), out)
    assert parallel_cpu.split("ewise_add", kernels_cpu.ewise_add, transposed, kernels_cpu.prepare) is None
    # a destination whose rows overlap (stride 1 between rows of 1000)
    store = (BX, buffer(X), (700, 1000), (1, 1), 0)
    assert parallel_cpu.split("ewise_setitem", kernels_cpu.ewise_setitem, store, kernels_cpu.prepare) is None
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "1")
    big = ((BX, (700, 1000), None, 0), Array(700_000))
    assert parallel_cpu.split("ewise_exp", kernels_cpu.ewise_exp, big, kernels_cpu.prepare) is None


def test_the_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert parallel_cpu.threads() == 3
    monkeypatch.delenv("NEEDLE_NUM_THREADS")
    assert parallel_cpu.threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    assert parallel_cpu.threads() >= 1
    assert parallel_cpu.row_blocks(10, 1 << 20)[-1][1] == 10
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    blocks = parallel_cpu.row_blocks(10, 1 << 20)
    assert len(blocks) == 4 and blocks[0][0] == 0 and blocks[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert parallel_cpu.row_blocks(10, 1000) == [(0, 10)]  # too small to pay


def test_an_error_in_a_block_reaches_the_caller(two_threads):
    ran = []

    def fails():
        raise ValueError("block 2 failed")

    launch = parallel_cpu.run_blocks([lambda: ran.append(1), fails])
    with pytest.raises(ValueError, match="block 2 failed"):
        launch()
    assert ran == [1]
    launch = parallel_cpu.run_blocks([lambda: ran.append(2), lambda: ran.append(3), lambda: ran.append(4)])
    launch()
    assert sorted(ran) == [1, 2, 3, 4]


# --- batched matmuls ---------------------------------------------------------------------------------

def _batched(layout: str):
    """(a, b) operands of 128 products (64, 32) @ (32, 64) in the layouts a replay sees."""
    r = np.random.RandomState(8)
    if layout == "compact":
        return (buffer(r.randn(128, 64, 32)), (128, 64, 32), None, 0), (buffer(r.randn(128, 32, 64)), (128, 32, 64),
                                                                            None, 0)
    if layout == "transposed-b":  # attention's q @ k^T: b read through a transposed view
        return (buffer(r.randn(128, 64, 32)), (128, 64, 32), None, 0), (buffer(r.randn(128, 64, 32)), (128, 32, 64),
                                                                            (2048, 1, 32), 0)
    if layout == "broadcast-a":  # one matrix against a batch: a's batch stride is 0
        return (buffer(r.randn(64, 32)), (128, 64, 32), (0, 32, 1), 0), (buffer(r.randn(128, 32, 64)), (128, 32, 64),
                                                                             None, 0)
    # both operands from an offset into a larger buffer
    return (buffer(r.randn(7 + 128 * 64 * 32)), (128, 64, 32), None, 7), (buffer(r.randn(5 + 128 * 32 * 64)),
                                                                            (128, 32, 64), None, 5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["compact", "transposed-b", "broadcast-a", "offset"])
def test_a_split_batched_matmul_gives_the_whole_products_bits(two_threads, layout, dtype):
    """Each block makes numpy's sgemm/dgemm calls on the same matrices, so the same bits."""
    a, b = _batched(layout)
    a = (buffer(a[0].array.astype(dtype)),) + a[1:]
    b = (buffer(b[0].array.astype(dtype)),) + b[1:]
    whole, split = whole_and_split("matmul", lambda: (a, b, Array(128 * 64 * 64, dtype), 64, 32, 64, 128))
    assert whole[2].array.tobytes() == split[2].array.tobytes()
    expected = np.matmul(read(a).astype(np.float64), read(b).astype(np.float64))
    np.testing.assert_allclose(split[2].array.reshape(128, 64, 64), expected, rtol=1e-4, atol=1e-4)


def test_which_matmuls_are_not_split(two_threads, monkeypatch):
    r = np.random.RandomState(9)
    two_d = ((buffer(r.randn(2048, 128)), (2048, 128), None, 0), (buffer(r.randn(128, 128)), (128, 128), None, 0),
             Array(2048 * 128), 2048, 128, 128)
    large = ((buffer(r.randn(16, 128, 64)), (16, 128, 64), None, 0), (buffer(r.randn(16, 64, 64)), (16, 64, 64),
                                                                         None, 0), Array(16 * 128 * 64), 128, 64, 64, 16)
    small = ((buffer(r.randn(64, 8, 8)), (64, 8, 8), None, 0), (buffer(r.randn(64, 8, 8)), (64, 8, 8), None, 0),
             Array(64 * 64), 8, 8, 8, 64)
    # a 2-D product: OpenBLAS threads it; matrices OpenBLAS threads (128 * 64 * 64 multiply-adds
    # each); too little work in all
    for args in (two_d, large, small):
        assert parallel_cpu.split("matmul", kernels_cpu.matmul, args, kernels_cpu.prepare) is None
    a, b = _batched("compact")
    args = (a, b, Array(128 * 64 * 64), 64, 32, 64, 128)
    assert parallel_cpu.split("matmul", kernels_cpu.matmul, args, kernels_cpu.prepare) is not None
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "1")
    assert parallel_cpu.split("matmul", kernels_cpu.matmul, args, kernels_cpu.prepare) is None


# --- the worker pool --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spin", [True, False])
def test_a_worker_runs_each_posted_block_once_in_order(spin):
    """Spinning or sleeping between blocks, a worker runs what is posted to it, and the caller's
    wait returns once the block is done (its writes visible)."""
    worker = parallel_cpu._Worker(spin=spin)
    seen: list = []
    out = np.zeros(200)
    for k in range(200):
        task = parallel_cpu._Task(lambda k=k: (seen.append(k), out.__setitem__(k, k + 0.5)))
        worker.wait(task, worker.post(task))
        assert out[k] == k + 0.5
        if k % 3 == 0:
            parallel_cpu.park()  # a parked worker sleeps, and wakes for the next block
    assert seen == list(range(200))


def test_a_replayed_matmul_that_stays_whole_parks_the_workers_first(two_threads, monkeypatch):
    """Without the BLAS pool, OpenBLAS's own helpers need the core a spinning worker holds."""
    monkeypatch.setattr(parallel_cpu.blas_pool, "installed", lambda: False)
    ran = []
    launch = parallel_cpu.whole("matmul", lambda: ran.append(int(parallel_cpu._PARK[0])))
    before = int(parallel_cpu._PARK[0])
    launch()
    assert ran == [before + 1]
    other = lambda: None  # noqa: E731
    assert parallel_cpu.whole("ewise_add", other) is other
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "1")
    assert parallel_cpu.whole("matmul", other) is other


def test_with_the_blas_pool_a_whole_matmul_runs_as_it_is(two_threads, monkeypatch):
    """The workers run OpenBLAS's jobs themselves (blas_pool): nothing to park."""
    monkeypatch.setattr(parallel_cpu.blas_pool, "installed", lambda: True)
    launch = lambda: None  # noqa: E731
    assert parallel_cpu.whole("matmul", launch) is launch


def test_many_split_launches_give_the_serial_results(two_threads):
    """Random launches of numpy blocks of random sizes, run back to back, with blocks that the
    caller sometimes finishes first and sometimes the worker: every output as the serial run."""
    r = np.random.RandomState(10)
    xs = [r.randn(int(n)).astype(np.float32) for n in r.randint(1, 200_000, 40)]
    serial = [np.exp(x) for x in xs]
    outs = [np.empty_like(x) for x in xs]
    launches = []
    for x, out in zip(xs, outs):
        cut = r.randint(0, x.size + 1)
        launches.append(parallel_cpu.run_blocks([
            lambda x=x, out=out, cut=cut: np.exp(x[:cut], out=out[:cut]),
            lambda x=x, out=out, cut=cut: np.exp(x[cut:], out=out[cut:])]))
    for _ in range(5):
        for out in outs:
            out.fill(np.nan)
        for launch in launches:
            launch()
        for got, want in zip(outs, serial):
            assert got.tobytes() == want.tobytes()


def test_an_error_in_the_workers_block_reaches_the_caller_and_the_pool_goes_on(two_threads):
    import time

    def slow_failure():
        time.sleep(0.01)  # the worker has it by then
        raise KeyError("worker block")

    launch = parallel_cpu.run_blocks([lambda: time.sleep(0.02), slow_failure])
    for _ in range(3):
        with pytest.raises(KeyError, match="worker block"):
            launch()
    done: list = []
    parallel_cpu.run_blocks([lambda: done.append(0), lambda: done.append(1)])()
    assert sorted(done) == [0, 1]


# --- fused loops ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,strides", [
    ((4, 1, 6), ((6, 0, 1), (0, 0, 1), (1, 0, 4))),      # a size-1 axis, a bias row, a transposed read
    ((3, 5, 7), ((35, 7, 1), (0, 1, 0), (0, 0, 0))),      # a middle-axis broadcast, one value everywhere
    ((2, 3), ((3, 1), (3, 1), (3, 1))),                   # all compact: one flat loop
    ((), ((), (), ())),                                   # one element
])
def test_a_fused_loop_reads_broadcast_and_strided_operands_like_numpy(shape, strides):
    r = np.random.RandomState(1)
    base = [r.randn(256).astype(np.float32) for _ in range(3)]
    arrays = [np.lib.stride_tricks.as_strided(b, shape, [4 * s for s in st]) for b, st in zip(base, strides)]
    out = np.empty(shape, np.float32)
    merged_in, merged_out, indices = fusion_cpu._canonical(shape, arrays, [out])
    # the canonical form has the same elements: write its output, compare with numpy
    kernel = fusion_cpu.FusedKernel(["v0 = np.float32(in0[IDX] * in1[IDX])", "v1 = np.float32(v0 - in2[IDX])"],
                                    3, 0, [None], ["v1"], shape)
    fn = fusion_cpu._compiled(kernel.source(merged_out[0].ndim, indices))
    fn(*merged_in, *merged_out)
    np.testing.assert_array_equal(out, arrays[0] * arrays[1] - arrays[2])
    assert merged_out[0].ndim <= max(len(shape), 1)
    if shape == (2, 3):
        assert merged_out[0].ndim == 1 and indices == [None, None, None]


# --- whole steps ------------------------------------------------------------------------------------

def _mlp_steps(compiled: bool, steps: int = 6):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    step = train_step(model, opt, nn.SoftmaxLoss())
    if compiled:
        step = ndl.compile(step)
    r = np.random.RandomState(1)
    x = ndl.Tensor(r.randn(512, 256).astype(np.float32), requires_grad=False)  # (512, 512) activations split
    y = ndl.Tensor(r.randint(0, 10, 512), dtype="int64")
    losses = [step(x, y).numpy() for _ in range(steps)]
    return np.array(losses), [p.numpy() for p in model.parameters()], step


def test_a_compiled_step_on_two_threads_is_bit_identical_to_eager(two_threads, monkeypatch):
    calls = []
    real = parallel_cpu.run_blocks
    monkeypatch.setattr(parallel_cpu, "run_blocks", lambda blocks: calls.append(len(blocks)) or real(blocks))
    eager_losses, eager_params, _ = _mlp_steps(False)
    losses, params, step = _mlp_steps(True)
    assert calls and all(n == 2 for n in calls)  # large calls (fused and numpy ones) were split
    np.testing.assert_array_equal(losses, eager_losses)
    for p, q in zip(params, eager_params):
        np.testing.assert_array_equal(p, q)


def _language_model_steps(compiled: bool, seed: int, ids_shape: tuple, vocab: int, width: int, hidden: int,
                          **model_kwargs):
    """(losses, parameters) after 4 Adam steps of a one-layer LanguageModel on random ids of
    `ids_shape` (seq_len, batch), eager or compiled."""
    from needle.models import LanguageModel

    np.random.seed(0)
    model = LanguageModel(width, vocab, hidden, 1, seq_len=ids_shape[0], **model_kwargs)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    step = train_step(model, opt, nn.SoftmaxLoss())
    step = ndl.compile(step) if compiled else step
    r = np.random.RandomState(seed)
    x = ndl.Tensor(r.randint(0, vocab, ids_shape), dtype="int64")
    y = ndl.Tensor(r.randint(0, vocab, int(np.prod(ids_shape))), dtype="int64")
    return [step(x, y).numpy() for _ in range(4)], [p.numpy() for p in model.parameters()]


def test_a_language_model_step_on_two_threads_is_bit_identical_to_eager(two_threads):
    def go(compiled, kind):  # logits (128, 2100): split
        return _language_model_steps(compiled, 2, (8, 16), 2100, 32, 64, seq_model=kind, num_head=2, dim_head=16)

    for kind in ("lstm", "transformer"):
        (l1, p1), (l2, p2) = go(False, kind), go(True, kind)
        np.testing.assert_array_equal(l1, l2)
        for a, b in zip(p1, p2):
            np.testing.assert_array_equal(a, b)


def test_a_transformer_step_with_split_attention_products_is_bit_identical_to_eager(two_threads, monkeypatch):
    """Attention's batched products (128 of (32, 32) @ (32, 32)) run as batch blocks on two threads
    in the replay: the losses and parameters are the eager step's bits."""
    split_matmuls = []
    real = parallel_cpu.split

    def spy(name, kernel, args, prepare):
        launch = real(name, kernel, args, prepare)
        if name == "matmul" and launch is not None:
            split_matmuls.append(args[-1])
        return launch
    monkeypatch.setattr(parallel_cpu, "split", spy)

    def go(compiled):
        return _language_model_steps(compiled, 3, (32, 32), 50, 64, 128, seq_model="transformer", num_head=4,
                                     dim_head=32)

    (l1, p1), (l2, p2) = go(False), go(True)
    assert split_matmuls and all(batch == 128 for batch in split_matmuls)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_products_of_head_views_replay_with_each_calls_values(monkeypatch, threads):
    """Attention's head views (B, H, T, d) of a (B, T, H * d) projection reach the batched
    products as they are (no copy before the call). The replay reads them through views built
    once: each call's new values come out bit for bit as eager computes them (a view that was
    really a copy, made at the first replay, would give that replay's numbers forever after)."""
    monkeypatch.setenv("NEEDLE_NUM_THREADS", threads)
    r = np.random.RandomState(6)
    w = ndl.Tensor(r.randn(64, 3 * 64).astype(np.float32) / 8)
    heads = (16, 32, 4, 16)

    def f(x):
        qkv = ndl.ops.reshape(x, (16 * 32, 64)) @ w
        q, k, v = (ndl.ops.permute(ndl.ops.reshape(t, heads), (0, 2, 1, 3))
                   for t in ndl.ops.split(ndl.ops.reshape(qkv, (16 * 32, 3, 64)), axis=1))
        scores = q @ ndl.ops.permute(k, (0, 1, 3, 2))  # (16, 4, 32, 32)
        return ndl.ops.permute(scores, (0, 1, 3, 2)) @ v  # a transposed batch times a head view

    compiled = ndl.compile(f)
    for _ in range(4):
        x = ndl.Tensor(r.randn(16, 32, 64).astype(np.float32))
        assert compiled(x).numpy().tobytes() == f(x).numpy().tobytes()
    products = [c for c in compiled.programs[0].calls if c.name == "matmul" and len(c.args) == 7]
    assert len(products) == 2 and all(c.args[0].strides is not None for c in products)  # read in place


class _Clock:
    """A clock each launch advances by its own cost: timings without timing anything."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("split_cost,keeps", [(5.0, "split"), (9.5, "whole"), (20.0, "whole")])
def test_faster_of_alternates_then_keeps_the_faster_way(split_cost, keeps):
    """The first 2 * (TRIALS + 1) runs alternate whole and split, each run one of them; from then
    on the launch whose best timed run was faster (a split by SPLIT_MARGIN) runs alone."""
    clock, ran = _Clock(), []

    def launch(name, cost):
        def run():
            ran.append(name)
            clock.now += cost
            return name
        return run

    either = parallel_cpu.faster_of(launch("whole", 10.0), launch("split", split_cost), clock=clock)
    trials = 2 * (parallel_cpu.TRIALS + 1)
    results = [either() for _ in range(trials + 5)]
    assert ran == results and ran[:trials] == ["whole", "split"] * (parallel_cpu.TRIALS + 1)
    assert ran[trials:] == [keeps] * 5 and either.chosen


@pytest.mark.parametrize("shape", [(384, 512), (96, 2048)])
def test_calls_timed_both_ways_give_the_eager_bits_on_every_replay(two_threads, shape):
    """Between TRY_ELEMENTS and MIN_ELEMENTS a fused loop (a softmax's exp-and-sum, a row max)
    and a kernel call (the division) are timed whole and split in the first replays: every
    replay, whichever way it ran, gives the eager bits."""
    assert parallel_cpu.TRY_ELEMENTS <= shape[0] * shape[1] < parallel_cpu.MIN_ELEMENTS

    def f(x):
        shifted = x - ndl.ops.broadcast_to(ndl.ops.reshape(ndl.ops.max(x, axes=(1,)), (shape[0], 1)), shape)
        e = ndl.ops.exp(shifted)
        return e / ndl.ops.broadcast_to(ndl.ops.reshape(ndl.ops.summation(e, axes=(1,)), (shape[0], 1)), shape)

    r = np.random.RandomState(7)
    compiled = ndl.compile(f)
    for _ in range(2 * (parallel_cpu.TRIALS + 1) + 3):
        x = ndl.Tensor(r.randn(*shape).astype(np.float32))
        assert compiled(x).numpy().tobytes() == f(x).numpy().tobytes()
    timed = [run for run in compiled.programs[0].runs if hasattr(run, "chosen")]
    assert timed and all(run.chosen for run in timed)


def test_a_select_fuses_with_its_chain_and_keeps_every_bit():
    """where(x > 0, x * 2, y + 1) + 1: one fused loop; nan payloads, -0.0 and infinities
    come out of the select exactly as numpy's masked copy gives them."""
    def f(x, y):
        return ndl.where(x > 0, x * 2.0, y + 1.0) + 1.0

    r = np.random.RandomState(4)
    xs = r.randn(6, 7).astype(np.float32)
    ys = r.randn(6, 7).astype(np.float32)
    ys.view(np.uint32)[0, :3] = [0x7FC00123, 0xFFC00456, 0x80000000]  # nans with payloads, -0.0 - 1 + 1
    xs[1, :3] = [np.inf, -np.inf, -0.0]
    xs[0, :3] = -1.0  # the payload rows take y
    x, y = ndl.Tensor(xs), ndl.Tensor(ys)
    compiled = ndl.compile(f)
    results = [compiled(x, y).numpy() for _ in range(3)]
    expected = f(x, y).numpy()
    for got in results:
        assert got.tobytes() == expected.tobytes()
    calls = compiled.programs[0].calls
    assert [c.kind for c in calls] == ["fused"] and any(" if " in line for line in calls[0].fn.lines)


def test_a_group_grows_past_the_fill_of_a_constant_it_reads():
    """where(m, x * 3, 0.0) records x * 3, then the fill of the 0.0, then the select: the fill
    runs first and the product and the select become one loop, with the eager values."""
    from needle import ops

    def f(x, m):
        return ops.where(m, x * 3.0, 0.0)

    r = np.random.RandomState(5)
    x = ndl.Tensor(r.randn(4, 5).astype(np.float32))
    m = ndl.Tensor(r.rand(4, 5) > 0.5, dtype="bool")
    fused, plain = ndl.compile(f), ndl.compile(f, fuse=False)
    for _ in range(3):
        got, unfused = fused(x, m).numpy(), plain(x, m).numpy()
    assert [c.name for c in plain.programs[0].calls] == ["scalar_mul", "scalar_setitem", "ewise_where"]
    assert [c.kind for c in fused.programs[0].calls] == ["kernel", "fused"]
    assert got.tobytes() == unfused.tobytes() == f(x, m).numpy().tobytes()
    np.testing.assert_array_equal(got, np.where(m.numpy(), x.numpy() * np.float32(3), 0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_replayed_sigmoid_gives_the_eager_kernels_bits(dtype):
    """The replay's sigmoid (three passes: -|x| and the quotient in numba, numpy's exp between)
    against the eager kernel, nan, infinities, signed zeros and subnormals included."""
    from needle.primitives import _sigmoid_into

    x = (np.random.RandomState(6).randn(5000) * 30).astype(dtype)
    x[:8] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45]
    eager, replayed = Array(x.size, dtype), Array(x.size, dtype)
    _sigmoid_into(x, eager.array)
    launch = kernels_cpu.prepare("ewise_sigmoid", ((buffer(x), (50, 100), None, 0), replayed))
    launch()
    assert eager.array.tobytes() == replayed.array.tobytes()
    expected = 1 / (1 + np.exp(-x[8:].astype(np.float64)))
    tiny = np.finfo(dtype).tiny  # subnormal results (x below -87 in float32) keep fewer digits
    np.testing.assert_allclose(replayed.array[8:], expected, rtol=2e-6 if dtype == "float32" else 1e-14, atol=tiny)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_adding_rows_at_repeated_indices_sums_in_numpys_order(dtype):
    """The embedding gradient's kernel: rows added at indices that repeat (and negative ones),
    the same additions in the same order as np.add.at, so the same bits."""
    r = np.random.RandomState(7)
    values = (r.randn(600, 16) * np.exp(r.randn(600, 16) * 4)).astype(dtype)
    indices = r.randint(-9, 9, 600)
    table = r.randn(9, 16).astype(dtype)
    out = buffer(table)
    kernels_cpu.index_add_rows(buffer(values), (buffer(indices), (600,), None, 0), out, 16)
    expected = table.copy()
    np.add.at(expected, indices % 9, values)
    assert out.array.tobytes() == expected.reshape(-1).tobytes()
    with pytest.raises(IndexError, match="index 9 is out of bounds"):
        kernels_cpu.index_add_rows(buffer(values[:1]), (buffer(np.array([9])), (1,), None, 0), out, 16)


@pytest.mark.parametrize("first,preset,expected", [
    ("needle", None, "22"),         # needle first: OpenBLAS's idle threads will sleep soon
    ("needle", "30", "30"),         # a value of the user's wins
    ("numpy", None, "unset"),       # numpy already loaded OpenBLAS: too late, left alone
])
def test_importing_needle_first_lets_openblas_threads_sleep(first, preset, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    order = "import needle, numpy" if first == "needle" else "import numpy, needle"
    code = f"{order}; import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_maximum_and_minimum_break_ties_and_nans_as_numpy_does(dtype):
    """numpy's maximum/minimum on x86: a nan of a wins, then a nan of b, and a tie (-0.0 against
    0.0) gives b. Fused (after a multiply, so that they join a loop) they must give the same bits:
    relu(-0.0) is 0.0, maximum(0.0, -0.0) is -0.0."""
    values = np.array([-0.0, 0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, np.nan], dtype)
    uint = np.uint32 if dtype == "float32" else np.uint64
    nan_bits = (0x7FC00123, 0xFFC00456) if dtype == "float32" else (0x7FF8000000000123, 0xFFF8000000000456)
    values.view(uint)[6:] = nan_bits  # nans of both signs, with payloads
    a = np.repeat(values, len(values))
    b = np.tile(values, len(values))

    def f(x, y):
        return (ndl.ops.maximum(x * 1.0, y * 1.0), ndl.functions.minimum(x * 1.0, y * 1.0),
                ndl.ops.relu(x * 1.0), ndl.ops.maximum(x * 1.0, 0.0), (x * 1.0).clamp(0.0, 1.0))

    def bits(results):
        """Each result's bits; minimum (-maximum(-a, -b)) with its nans' sign bit cleared: LLVM
        folds the negations, so a nan's sign is the one bit it may change (fusion_cpu's docstring)."""
        out = [r.numpy().view(uint).copy() for r in results]
        out[1][np.isnan(results[1].numpy())] &= ~uint(1 << (8 * out[1].itemsize - 1))
        return [o.tobytes() for o in out]

    x, y = ndl.Tensor(a, dtype=dtype), ndl.Tensor(b, dtype=dtype)
    compiled = ndl.compile(f)
    expected = bits(f(x, y))
    assert ndl.ops.maximum(x, y).numpy().tobytes() == np.maximum(a, b).tobytes()  # eager is numpy's
    for _ in range(3):
        assert bits(compiled(x, y)) == expected
    assert any(c.kind == "fused" and any("maximum(" in line for line in c.fn.lines)
               for c in compiled.programs[0].calls)
