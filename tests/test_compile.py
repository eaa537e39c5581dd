"""ndl.compile: a traced step replays exactly what the eager step does.

Every workload of the benchmark (at small sizes) runs 50 compiled steps next to 50
eager steps from the same seed: bit-identical losses and parameters without fusion,
within float rounding with it. Then each way a step can change between calls (shape,
train/eval, learning rate, random draws, running statistics) and each way of misusing
a compiled function.
"""
import tracemalloc

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.models import LanguageModel
from train_step import train_step

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]


# --- the workloads ------------------------------------------------------------------------------

def mlp(device):
    model = nn.Sequential(nn.Linear(12, 16, device=device), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(16, 16, device=device), nn.ReLU(), nn.Linear(16, 5, device=device))
    opt = ndl.optim.Adam(model.parameters(), lr=1e-2)
    data = lambda r: (ndl.Tensor(r.randn(8, 12).astype(np.float32), device=device, requires_grad=False),  # noqa: E731
                      ndl.Tensor(r.randint(0, 5, 8), dtype="int64", device=device))
    return model, opt, nn.SoftmaxLoss(), data


def makemore(device):
    class Makemore(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(27, 6, device=device)
            self.l1 = nn.Linear(18, 24, device=device)
            self.bn = nn.BatchNorm1d(24, device=device)
            self.l2 = nn.Linear(24, 27, device=device)

        def forward(self, x):
            h = self.emb(x).reshape((x.shape[0], 18))
            return self.l2(ndl.tanh(self.bn(self.l1(h))))

    model = Makemore()
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    data = lambda r: (ndl.Tensor(r.randint(0, 27, (10, 3)), dtype="int64", device=device),  # noqa: E731
                      ndl.Tensor(r.randint(0, 27, 10), dtype="int64", device=device))
    return model, opt, nn.SoftmaxLoss(), data


def cnn(device):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv(2, 4, 3, device=device)
            self.bn = nn.BatchNorm2d(4, device=device)
            self.c2 = nn.Conv(4, 4, 3, stride=2, device=device)
            self.head = nn.Linear(4 * 3 * 3, 3, device=device)

        def forward(self, x):
            x = ndl.relu(self.bn(self.c1(x)))
            x = ndl.relu(self.c2(x))
            return self.head(x.reshape((x.shape[0], 36)))

    model = Net()
    opt = ndl.optim.Adam(model.parameters(), lr=1e-2)
    data = lambda r: (ndl.Tensor(r.randn(4, 2, 6, 6).astype(np.float32), device=device,  # noqa: E731
                                 requires_grad=False),
                      ndl.Tensor(r.randint(0, 3, 4), dtype="int64", device=device))
    return model, opt, nn.SoftmaxLoss(), data


class _LM(nn.Module):
    """A language model with its recurrent state carried inside (so steps take (x, y) only)."""

    def __init__(self, kind, device):
        super().__init__()
        self.lm = LanguageModel(8, 11, 10, 2 if kind == "lstm" else 1, seq_model=kind, seq_len=5, device=device)

    def forward(self, x):
        return self.lm(x)[0]


def lstm_lm(device):
    model = _LM("lstm", device)
    opt = ndl.optim.SGD(model.parameters(), lr=0.5)
    data = lambda r: (ndl.Tensor(r.randint(0, 11, (5, 3)), dtype="int64", device=device),  # noqa: E731
                      ndl.Tensor(r.randint(0, 11, 15), dtype="int64", device=device))
    return model, opt, nn.SoftmaxLoss(), data


def gpt(device):
    model = _LM("transformer", device)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    data = lambda r: (ndl.Tensor(r.randint(0, 11, (5, 3)), dtype="int64", device=device),  # noqa: E731
                      ndl.Tensor(r.randint(0, 11, 15), dtype="int64", device=device))
    return model, opt, nn.SoftmaxLoss(), data


WORKLOADS = {"mlp": mlp, "makemore": makemore, "cnn": cnn, "lstm_lm": lstm_lm, "gpt": gpt}


def run(workload, device, steps, compiled, fuse=False, seed=0):
    np.random.seed(seed)
    model, opt, loss_fn, data = WORKLOADS[workload](device)
    step = train_step(model, opt, loss_fn)
    if compiled:
        step = ndl.compile(step, fuse=fuse)
    r = np.random.RandomState(seed + 1)
    batches = [data(r) for _ in range(3)]
    losses = [step(*batches[i % 3]).numpy() for i in range(steps)]
    return np.array(losses), [p.numpy() for p in model.parameters()], step


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fifty_compiled_steps_are_bit_identical_to_eager(workload, device):
    eager_losses, eager_params, _ = run(workload, device, 50, compiled=False)
    losses, params, step = run(workload, device, 50, compiled=True)
    assert len(step.programs) == 1  # traced once, replayed 48 times
    np.testing.assert_array_equal(losses, eager_losses)
    for p, q in zip(params, eager_params):
        np.testing.assert_array_equal(p, q)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fifty_fused_steps_are_bit_identical_to_eager(workload):
    """Fusion only takes operations whose fused form gives numpy's bits (the exact rows of needle.primitives)."""
    eager_losses, eager_params, _ = run(workload, ndl.cpu(), 50, compiled=False)
    losses, params, step = run(workload, ndl.cpu(), 50, compiled=True, fuse=True)
    unfused = run(workload, ndl.cpu(), 3, compiled=True)[2].programs[0]
    assert len(step.programs[0]) < len(unfused)  # something was fused
    np.testing.assert_array_equal(losses, eager_losses)
    for p, q in zip(params, eager_params):
        np.testing.assert_array_equal(p, q)


# --- what changes between steps ---------------------------------------------------------------------

def test_a_new_shape_traces_again_and_a_last_partial_batch_works():
    losses_eager, params_eager, _ = _partial_batches(compiled=False)
    losses, params, step = _partial_batches(compiled=True)
    np.testing.assert_array_equal(losses, losses_eager)
    for p, q in zip(params, params_eager):
        np.testing.assert_array_equal(p, q)
    assert len(step.programs) == 2  # batches of 8 and the last batches of 5


def _partial_batches(compiled):
    np.random.seed(3)
    model, opt, loss_fn, _ = mlp(ndl.cpu())
    step = train_step(model, opt, loss_fn)
    step = ndl.compile(step, fuse=False) if compiled else step
    r = np.random.RandomState(0)
    X, y = r.randn(21, 12).astype(np.float32), r.randint(0, 5, 21)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=8, shuffle=True)
    losses = [step(xb, yb).numpy() for _ in range(4) for xb, yb in loader]
    return np.array(losses), [p.numpy() for p in model.parameters()], step


def test_train_and_eval_switches_are_part_of_the_signature():
    np.random.seed(0)
    model, opt, loss_fn, data = mlp(ndl.cpu())
    forward = ndl.compile(lambda x: model(x), fuse=False)
    x, _ = data(np.random.RandomState(1))
    with ndl.no_grad():
        model.eval()
        eval_outs = [forward(x).numpy() for _ in range(3)]
        model.train()
        train_outs = [forward(x).numpy() for _ in range(3)]
        model.eval()
        again = forward(x).numpy()
    assert all(np.array_equal(o, eval_outs[0]) for o in eval_outs)  # no dropout in eval mode
    assert not np.array_equal(train_outs[1], train_outs[2])  # fresh dropout masks on each replay
    np.testing.assert_array_equal(again, eval_outs[0])
    assert len(forward.programs) == 2


def test_a_scheduled_learning_rate_reaches_the_replay():
    def go(compiled):
        np.random.seed(0)
        model, opt, loss_fn, data = mlp(ndl.cpu())
        step = train_step(model, opt, loss_fn)
        step = ndl.compile(step, fuse=False) if compiled else step
        batch = data(np.random.RandomState(2))
        losses = []
        for i in range(8):
            opt.lr = 0.05 * 0.5 ** (i // 2)  # as a step scheduler would
            losses.append(step(*batch).numpy())
        return np.array(losses), [p.numpy() for p in model.parameters()]

    (l1, p1), (l2, p2) = go(False), go(True)
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


def test_a_seeded_compiled_run_reproduces_itself_and_draws_fresh_masks():
    first = run("mlp", ndl.cpu(), 12, compiled=True, seed=7)[0]
    second = run("mlp", ndl.cpu(), 12, compiled=True, seed=7)[0]
    other = run("mlp", ndl.cpu(), 12, compiled=True, seed=8)[0]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_batchnorm_running_statistics_are_updated_by_the_replay():
    np.random.seed(0)
    model, opt, loss_fn, data = makemore(ndl.cpu())
    step = ndl.compile(train_step(model, opt, loss_fn), fuse=False)
    batch = data(np.random.RandomState(4))
    means = []
    for _ in range(5):
        step(*batch)
        means.append(model.bn.running_mean.numpy().copy())
    assert all(not np.array_equal(a, b) for a, b in zip(means, means[1:]))  # moves on every replay
    np.random.seed(0)
    twin, opt2, _, _ = makemore(ndl.cpu())
    plain = train_step(twin, opt2, loss_fn)
    for _ in range(5):
        plain(*batch)
    np.testing.assert_array_equal(model.bn.running_var.numpy(), twin.bn.running_var.numpy())


def test_forward_only_under_no_grad():
    np.random.seed(0)
    model, _, _, data = lstm_lm(ndl.cpu())
    model.eval()
    x, _ = data(np.random.RandomState(1))
    evaluate = ndl.compile(lambda x: model(x), fuse=False)
    with ndl.no_grad():
        outs = [evaluate(x) for _ in range(4)]
        expected = model(x).numpy()
    for o in outs:
        np.testing.assert_array_equal(o.numpy(), expected)
        assert not o.requires_grad
    assert len(evaluate.programs) == 1


def test_the_memory_plan_reuses_temporaries():
    """The replay's temporaries take no more memory than the eager step's peak."""
    np.random.seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(6)], nn.Linear(64, 4))
    opt = ndl.optim.SGD(model.parameters(), lr=0.01)
    step = train_step(model, opt, nn.SoftmaxLoss())
    x = ndl.Tensor(np.random.randn(128, 64).astype(np.float32), requires_grad=False)
    y = ndl.Tensor(np.random.randint(0, 4, 128), dtype="int64")
    step(x, y)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    step(x, y)
    eager_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    compiled = ndl.compile(step, fuse=False)
    for _ in range(3):
        compiled(x, y)
    program = compiled.programs[0]
    assert 0 < program.temporary_bytes <= eager_peak
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    compiled(x, y)
    replay_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert replay_peak < 0.1 * eager_peak  # no allocation but the output's copy


# --- bad use ----------------------------------------------------------------------------------------

def _compiled_mlp():
    np.random.seed(0)
    model, opt, loss_fn, data = mlp(ndl.cpu())
    step = ndl.compile(train_step(model, opt, loss_fn), fuse=False)
    batch = data(np.random.RandomState(1))
    for _ in range(3):
        step(*batch)
    return model, step, batch


def test_a_tensor_on_another_device_is_a_clear_error():
    _, step, (x, y) = _compiled_mlp()
    with pytest.raises(ValueError, match=r"traced with tensors on cpu\(\).*cpu_numpy\(\)"):
        step(ndl.Tensor(x.numpy(), device=ndl.cpu_numpy(), requires_grad=False),
             ndl.Tensor(y.numpy(), device=ndl.cpu_numpy(), dtype="int64"))


def test_another_number_of_arguments_is_a_clear_error():
    _, step, (x, y) = _compiled_mlp()
    with pytest.raises(TypeError, match="compiled for calls with 2 arguments, called with 3"):
        step(x, y, None)


def test_a_parameter_replaced_after_tracing_is_traced_again():
    pairs = []
    for compiled in (True, False):
        np.random.seed(0)
        model, opt, loss_fn, data = mlp(ndl.cpu())
        step = train_step(model, opt, loss_fn)
        pairs.append((model, ndl.compile(step, fuse=False) if compiled else step))
    batch = data(np.random.RandomState(1))

    def lockstep(seed):
        results = []
        for _, step in pairs:
            np.random.seed(seed)  # the same dropout masks for both
            results.append(step(*batch).numpy())
        np.testing.assert_array_equal(*results)

    for i in range(3):
        lockstep(i)
    for model, _ in pairs:  # a new buffer: the recording reads the old one
        model.modules[0].weight.data = ndl.Tensor(np.zeros((12, 16), np.float32))
    for i in range(3):
        lockstep(10 + i)
    assert len(pairs[0][1].programs) == 1  # the stale recording is gone


def test_reading_data_inside_the_step_names_the_line():
    np.random.seed(0)
    model, opt, loss_fn, data = mlp(ndl.cpu())

    def step(x, y):
        loss = loss_fn(model(x), y)
        if loss.numpy() > 100:  # data-dependent control flow
            return loss * 0
        return loss

    compiled = ndl.compile(step)
    batch = data(np.random.RandomState(1))
    compiled(*batch)
    with pytest.raises(ndl.TraceError, match=r"test_compile.py:\d+: if loss.numpy\(\) > 100"):
        compiled(*batch)


def test_returning_a_python_number_or_rebinding_data_is_refused():
    np.random.seed(0)
    model, opt, loss_fn, data = mlp(ndl.cpu())
    batch = data(np.random.RandomState(1))
    returns_number = ndl.compile(lambda x, y: (loss_fn(model(x), y), 3))
    returns_number(*batch)
    with pytest.raises(ndl.TraceError, match="returned a int"):
        returns_number(*batch)

    def course_style_update(x, y):
        loss = loss_fn(model(x), y)
        loss.backward()
        for p in model.parameters():
            p.data = p.data - 0.1 * p.grad.data  # rebinds instead of writing in place
        return loss

    rebinding = ndl.compile(course_style_update)
    rebinding(*batch)
    with pytest.raises(ndl.TraceError, match="copy_"):
        rebinding(*batch)


def test_numpy_mode_runs_eagerly(tmp_path):
    import subprocess
    import sys

    code = ("import needle as ndl, numpy as np\n"
            "f = ndl.compile(lambda x: (x * 2).sum())\n"
            "print([float(f(ndl.Tensor(np.ones(3)))) for _ in range(3)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"NEEDLE_BACKEND": "np", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[6.0, 6.0, 6.0]"


# --- fusion --------------------------------------------------------------------------------------------

FUSED_SCRIPT = """
import numpy as np, needle as ndl
from needle import nn
from needle.compile import fusion_cpu
np.random.seed(0)
model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
opt = ndl.optim.Adam(model.parameters(), lr=0.01)
def step(x, y):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss
step = ndl.compile(step)
x = ndl.Tensor(np.random.randn(4, 6).astype(np.float32), requires_grad=False)
y = ndl.Tensor(np.array([0, 1, 2, 1]), dtype="int64")
losses = [float(step(x, y).numpy()) for _ in range(5)]
kernels = set(fusion_cpu._COMPILED.values())
print(len(kernels), sum(k.stats.cache_misses.get(s, 0) for k in kernels for s in k.signatures),
      sum(sum(k.stats.cache_hits.values()) for k in kernels), losses[-1])
"""


def test_fused_kernels_are_cached_on_disk_for_the_next_process(tmp_path):
    """A second process finds every generated kernel compiled already."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NEEDLE_CACHE_DIR=str(tmp_path / "kernels"))
    first, second = (subprocess.run([sys.executable, "-c", FUSED_SCRIPT], capture_output=True, text=True, env=env,
                                    timeout=300) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    kernels, misses, hits, loss = first.stdout.split()
    kernels2, misses2, hits2, loss2 = second.stdout.split()
    assert int(kernels) >= 2 and int(misses) == int(kernels) and int(hits) == 0  # compiled the first time
    assert kernels2 == kernels and int(misses2) == 0 and int(hits2) == int(kernels)  # all loaded, none compiled
    assert loss == loss2
    assert any(name.startswith("fused_") and name.endswith(".py") for name in os.listdir(tmp_path / "kernels"))


def test_a_fused_optimizer_update_writes_every_parameter_in_place():
    np.random.seed(0)
    model, opt, loss_fn, data = mlp(ndl.cpu())
    step = ndl.compile(train_step(model, opt, loss_fn))
    batch = data(np.random.RandomState(1))
    buffers = [p.realize_cached_data()._handle for p in model.parameters()]
    before = [p.numpy() for p in model.parameters()]
    for _ in range(4):
        step(*batch)
    kinds = [c.kind for c in step.programs[0].calls]
    assert "fused" in kinds and kinds.count("fused") < len(kinds)
    for p, buffer, old in zip(model.parameters(), buffers, before):
        assert p.realize_cached_data()._handle is buffer  # same buffer, new values
        assert not np.array_equal(p.numpy(), old)


def test_a_group_never_reads_a_buffer_it_stores_into_through_another_view():
    """data[1:] = data[:-1] * 2 + x: element i of the store is element i + 1 of the read, so a
    fused loop would read values it had already overwritten; the store stays out of the group."""
    def run(compiled):
        w = ndl.Tensor(np.arange(6, dtype=np.float32), device=ndl.cpu(), requires_grad=False)

        def shift(x):
            data = w.realize_cached_data()
            data[1:] = data[:-1] * 2.0 + x.realize_cached_data()[1:]
            return x * 1.0

        if compiled:
            shift = ndl.compile(shift, fuse=True)
        for _ in range(3):
            shift(ndl.Tensor(np.ones(6, dtype=np.float32), device=ndl.cpu()))
        return w.numpy(), shift

    eager, _ = run(False)
    fused, shift = run(True)
    np.testing.assert_array_equal(fused, eager)
    assert "fused" in [c.kind for c in shift.programs[0].calls]  # the rest of the chain still fuses


def _calls(compiled) -> list:
    return [c.name or c.kind for c in compiled.programs[0].calls]


def test_a_chain_fuses_past_independent_calls_recorded_between_its_links():
    """(x / 3) + mask with the mask (another shape, a causal mask as attention builds it) made
    between the two: the mask's calls run first and the division joins the masked add's loop
    -- the same bits as eager."""
    rng = np.random.RandomState(0)

    def masked(x):
        scaled = x / 3.0
        n = x.shape[-1]
        rows = ndl.init.arange(n, device=x.device)
        mask = ndl.ops.where(rows.reshape((n, 1)).broadcast_to((n, n)) < rows.reshape((1, n)).broadcast_to((n, n)),
                             -1e30, 0.0)
        return (scaled + mask.broadcast_to(x.shape)).exp().sum(axes=(2,))

    compiled = ndl.compile(masked)
    for _ in range(4):
        x = ndl.Tensor(rng.randn(6, 32, 32).astype(np.float32), device=ndl.cpu())
        np.testing.assert_array_equal(compiled(x).numpy(), masked(x).numpy())
    assert "scalar_div" not in _calls(compiled) and "fused" in _calls(compiled)


def test_a_value_the_chain_reads_from_the_calls_it_grew_past_is_written_to_memory():
    """c = y + 1 and d = z * 3 (another shape) sit between a chain's links; the chain reads c.
    Both run before the chain's loop, fused together, and c -- read by the chain only, which
    comes after that loop but before d's position -- must still be written (found by a review
    helper: the replays read a buffer that was never written)."""
    rng = np.random.RandomState(0)

    def step(x, y, z):
        a = x * 2.0
        c = y + 1.0
        b = a + c.reshape((1, 8)).broadcast_to((4, 8))
        d = z * 3.0
        return b * 2.0, d

    compiled = ndl.compile(step)
    for _ in range(5):
        args = [rng.randn(4, 8).astype(np.float32), rng.randn(8).astype(np.float32), rng.randn(8).astype(np.float32)]
        replayed = compiled(*[ndl.Tensor(a, device=ndl.cpu()) for a in args])
        eager = step(*[ndl.Tensor(a, device=ndl.cpu()) for a in args])
        assert [t.numpy().tobytes() for t in replayed] == [t.numpy().tobytes() for t in eager]
    assert _calls(compiled).count("fused") == 2


def test_a_call_that_writes_what_the_chain_reads_is_not_moved_before_it():
    """y = x * 2, then x's buffer overwritten through a (2, 4) view (calls of another shape, which
    the chain cannot take in), then y + 1: the write touches the chain's input, so it stays between
    the links (run first, it would make y from the new x)."""
    def step(x):
        y = x * 2.0
        data = x.realize_cached_data().reshape((2, 4))
        data[:] = data * 0.0 + 5.0
        return y + 1.0

    compiled = ndl.compile(step)
    for k in range(4):
        eager_in = ndl.Tensor(np.full(8, k, dtype=np.float32), device=ndl.cpu())
        traced_in = ndl.Tensor(np.full(8, k, dtype=np.float32), device=ndl.cpu())
        np.testing.assert_array_equal(compiled(traced_in).numpy(), step(eager_in).numpy())
        np.testing.assert_array_equal(traced_in.numpy(), eager_in.numpy())


@pytest.mark.parametrize("value", [5, "step", [lambda: 0]], ids=["int", "str", "list"])
def test_compile_refuses_a_non_callable_at_decoration_time(value):
    with pytest.raises(TypeError, match=f"ndl.compile expects a function to compile, got {type(value).__name__}"):
        ndl.compile(value)
    with pytest.raises(TypeError, match=type(value).__name__):
        ndl.compile(fuse=False)(value)


@pytest.mark.parametrize("form", ["backward of the gradient", "gradient penalty"])
def test_a_gradient_of_a_gradient_is_refused_not_replayed_first_order(form):
    """Eager .grad is a graph that can be differentiated again; a compiled step records
    first-order gradients only. A step that goes through a .grad with a later backward (or calls
    backward on a tensor that needs no gradient, which x.grad.sum() is there) raises TraceError
    when it is recorded, where it used to replay without the second-order terms."""
    def step(x):
        (x ** 3).sum().backward()
        if form == "backward of the gradient":
            x.grad.sum().backward()
        else:
            (x.grad * x).sum().backward()
        return x.grad * 1.0

    f = ndl.compile(step)
    x = np.array([1.0, 2.0, 3.0])
    eager = f(ndl.Tensor(x, dtype="float64", requires_grad=True)).numpy()  # the first call runs eagerly
    np.testing.assert_allclose(eager, 6 * x if form == "backward of the gradient" else 9 * x ** 2)
    with pytest.raises(ndl.TraceError, match="differentiates a gradient"):
        f(ndl.Tensor(x, dtype="float64", requires_grad=True))
