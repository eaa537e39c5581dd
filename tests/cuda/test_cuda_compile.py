"""ndl.compile on the cuda device: a replayed step, and a fused one, give the eager cuda step's numbers.

Under the simulator a fused cuda kernel evaluates the same `_OPS` device functions on the same
numpy scalar types as the eager kernels, so the comparisons are exact (on a GPU NVVM may
contract a * b + c into an FMA: see needle.compile.fusion_cuda). Shapes are tiny: every CUDA
thread is a Python thread here.
"""
import numpy as np

import needle as ndl
from needle import nn

CUDA = ndl.cuda()


def _mlp_run(mode, steps=4):
    """Losses and parameters after `steps` steps of a dropout MLP with Adam, the learning rate
    changed before every step as a scheduler would (a HostScalar read at each replay)."""
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 6, device=CUDA), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 3, device=CUDA))
    opt = ndl.optim.Adam(model.parameters(), lr=0.05)

    def step(x, y):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if mode != "eager":
        step = ndl.compile(step, fuse=(mode == "fused"))
    rng = np.random.RandomState(1)
    x = ndl.Tensor(rng.randn(3, 4).astype(np.float32), device=CUDA, requires_grad=False)
    y = ndl.Tensor(np.array([0, 2, 1]), dtype="int64", device=CUDA)
    np.random.seed(5)  # the dropout masks: drawn afresh at every replay, in the eager order
    losses = []
    for i in range(steps):
        opt.lr = 0.05 * 0.5 ** i
        losses.append(step(x, y).numpy())
    return np.array(losses), [p.numpy() for p in model.parameters()], step


def test_compiled_and_fused_training_steps_equal_the_eager_cuda_step():
    eager_losses, eager_params, _ = _mlp_run("eager")
    for mode in ("compiled", "fused"):
        losses, params, step = _mlp_run(mode)
        assert len(step.programs) == 1, mode
        np.testing.assert_array_equal(losses, eager_losses, err_msg=mode)
        for k, (p, q) in enumerate(zip(params, eager_params)):
            np.testing.assert_array_equal(p, q, err_msg=f"{mode}: parameter {k}")
        kinds = [c.kind for c in step.programs[0].calls]
        if mode == "compiled":
            assert "fused" not in kinds
            unfused = len(kinds)
        else:
            # the optimizer's update chains (Adam's moments, bias corrections, the parameter store)
            assert kinds.count("fused") >= 4 and len(kinds) < unfused * 0.6, kinds
    assert len(set(map(float, eager_losses))) == len(eager_losses)  # the steps did change something


def test_a_fused_group_reads_strided_and_broadcast_operands_and_stores_in_place():
    from needle.compile.fusion_cuda import CudaFusedKernel

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 5)).astype(np.float32)
    xs = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(3)]
    b = rng.standard_normal(5).astype(np.float32)

    def run(compiled):
        w = ndl.Tensor(w0, device=CUDA, requires_grad=False)

        def update(x, bias):
            # x read transposed, bias broadcast over rows: strided reads of one fused group
            y = ndl.exp(ndl.transpose(x) * 0.5) - ndl.broadcast_to(ndl.reshape(bias, (1, 5)), (3, 5))
            # a strided in-place store into w's own buffer, reading the same view
            data = w.realize_cached_data()
            data[:, 1:4] = data[:, 1:4] * 0.5 + y.realize_cached_data()[:, 1:4]
            return y

        if compiled:
            update = ndl.compile(update, fuse=True)
        handle = w.realize_cached_data()._handle
        outs = [update(ndl.Tensor(x, device=CUDA), ndl.Tensor(b, device=CUDA)).numpy() for x in xs]
        assert w.realize_cached_data()._handle is handle
        return outs, w.numpy(), update

    eager_outs, eager_w, _ = run(False)
    outs, w, update = run(True)
    for got, want in zip(outs, eager_outs):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(w, eager_w)
    want_w = w0.copy()
    for x in xs:  # and both are what numpy computes (float32 rounding apart)
        want_w[:, 1:4] = want_w[:, 1:4] * 0.5 + (np.exp(x.T * 0.5) - b)[:, 1:4]
    np.testing.assert_allclose(w, want_w, rtol=1e-6, atol=1e-6)
    fused = [c.fn for c in update.programs[0].calls if c.kind == "fused"]
    assert all(isinstance(k, CudaFusedKernel) for k in fused)
    assert any(any(k.strided_in) for k in fused)  # the transposed / broadcast reads
    assert any(any(k.strided_out) for k in fused)  # the store into w[:, 1:4]


def test_a_group_never_reads_a_buffer_it_stores_into_through_another_view():
    """data[1:] = data[:-1] * 2 + x: in one kernel, thread i + 1 could store before thread i
    reads; the store stays out of the group."""
    def run(compiled):
        w = ndl.Tensor(np.arange(6, dtype=np.float32), device=CUDA, requires_grad=False)

        def shift(x):
            data = w.realize_cached_data()
            data[1:] = data[:-1] * 2.0 + x.realize_cached_data()[1:]
            return x * 1.0

        if compiled:
            shift = ndl.compile(shift, fuse=True)
        for _ in range(3):
            shift(ndl.Tensor(np.ones(6, dtype=np.float32), device=CUDA))
        return w.numpy(), shift

    eager, _ = run(False)
    fused, shift = run(True)
    np.testing.assert_array_equal(fused, eager)
    np.testing.assert_array_equal(eager, [0, 1, 3, 7, 15, 23])
    assert [c.kind for c in shift.programs[0].calls].count("fused") == 1
