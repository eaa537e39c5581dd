"""Fused elementwise loops over transposed views (NCHW <-> NHWC): the loop runs in the memory
order that steps most arrays at unit stride (fusion_cpu._loop_order), every input is read
before a `where` chooses (no branch on the condition), and the result is the eager bits."""
import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.compile.fusion_cpu import FusedKernel, _canonical, _loop_order
from train_step import eager_and_compiled

R = np.random.RandomState(0)


def test_the_loop_follows_the_image_when_copying_nchw_into_a_padded_nhwc_buffer():
    image = R.randn(4, 3, 8, 8).astype(np.float32).transpose(0, 2, 3, 1)  # NHWC view of NCHW data
    padded = np.zeros((4, 10, 10, 3), np.float32)[:, 1:9, 1:9]
    order = _loop_order([0, 1, 2, 3], image.shape, [image], [padded])
    assert order == [0, 3, 1, 2]  # N, C, H, W: the image's memory order (its W at unit stride)
    inputs, outs, _ = _canonical(image.shape, [image], [padded])
    assert inputs[0].strides[-1] == 4 and outs[0].strides[-1] == 12


def test_the_group_order_stays_where_it_already_is_best_or_an_output_overlaps_an_input():
    a = R.randn(4, 8, 16).astype(np.float32)
    out = np.empty_like(a)
    assert _loop_order([0, 1, 2], a.shape, [a, a.transpose(0, 2, 1).copy().transpose(0, 2, 1)], [out]) == [0, 1, 2]
    buffer = R.randn(4, 16, 16).astype(np.float32)
    transposed = buffer.transpose(0, 2, 1)
    # writing buffer while reading its transpose: the element order decides what is read
    assert _loop_order([0, 1, 2], buffer.shape, [transposed, transposed], [buffer]) == [0, 1, 2]


def test_a_where_reads_both_operands_before_choosing():
    kernel = FusedKernel(["v0 = np.bool_(in0[IDX] <= s0)", "v1 = np.float32((in1[IDX] if v0 else in2[IDX]))"],
                         3, 1, [None], ["v1"], (4, 4))
    source = kernel.source(2, [None, (), None])
    body = source.splitlines()
    assert "r1 = in1[0]" in source and "(r1 if v0 else r2)" in source
    reads = [i for i, line in enumerate(body) if line.strip().startswith("r")]
    choice = next(i for i, line in enumerate(body) if "if v0 else" in line)
    assert reads and max(reads) < choice


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_compiled_conv_batchnorm_relu_step_on_transposed_views_gives_the_eager_bits(monkeypatch, threads):
    """Conv (NHWC inside, NCHW out), BatchNorm2d and ReLU: the groups read and write views
    transposed against each other, and relu's gradient is a where on a random sign."""
    monkeypatch.setenv("NEEDLE_NUM_THREADS", threads)
    x = ndl.Tensor(R.randn(16, 3, 12, 12).astype(np.float32))
    y = ndl.Tensor(R.randint(0, 5, 16), dtype="int64")

    def build():
        np.random.seed(1)
        model = nn.Sequential(nn.Conv(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                              nn.Conv(16, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
        return model, ndl.optim.Adam(model.parameters(), lr=1e-2)

    eager, compiled = eager_and_compiled(build, x, y, 4, fuse=True)
    assert eager == compiled


def test_a_where_over_transposed_views_compiled_equals_eager():
    a = ndl.Tensor(R.randn(8, 6, 5, 7).astype(np.float32))
    b = ndl.Tensor(R.randn(8, 7, 5, 6).astype(np.float32))

    def f(a, b):
        t = b.transpose((1, 3))  # (8, 6, 5, 7), strided
        return ndl.ops.maximum(a, 0.0) * t + (a * t).relu()

    compiled = ndl.compile(f, fuse=True)
    for _ in range(3):
        out = compiled(a, b)
    assert out.numpy().tobytes() == f(a, b).numpy().tobytes()
    assert any(c.kind == "fused" for c in compiled.programs[0].calls)
