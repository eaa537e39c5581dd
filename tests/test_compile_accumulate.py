"""ndl.compile adds a sum of matrix products into one buffer as sgemm computes them
(compile/accumulate.py, the cpu device's matmul_accumulate) -- with the eager step's bits,
and only where that holds: the replay must equal the eager call, bit for bit."""
import numpy as np
import pytest

import needle as ndl
from needle.backend_ndarray import kernels_cpu
from needle.backend_ndarray.host_buffer import Array
from train_step import eager_and_compiled

R = np.random.RandomState(0)

pytestmark = pytest.mark.skipif(kernels_cpu._sgemm() is None, reason="numpy's BLAS is not its bundled OpenBLAS")


def tensor(*shape):
    return ndl.Tensor(R.randn(*shape).astype(np.float32), requires_grad=False)


def kernel_names(compiled):
    return [c.name for c in compiled.programs[0].calls if c.kind == "kernel"]


def replay(fn, *args, calls=3):
    eager = fn(*args).numpy().tobytes()
    compiled = ndl.compile(fn)
    for _ in range(calls):
        out = compiled(*args)
    return eager, out.numpy().tobytes(), compiled


def test_a_sum_of_products_is_accumulated_with_the_eager_bits():
    xs, gs = [tensor(20, 64) for _ in range(6)], [tensor(20, 96) for _ in range(6)]

    def f(*args):
        total = None
        for x, g in zip(args[:6], args[6:]):
            part = x.transpose() @ g  # (64, 20) @ (20, 96): a weight gradient's shape
            total = part if total is None else total + part
        return total

    eager, out, compiled = replay(f, *xs, *gs)
    assert out == eager
    names = kernel_names(compiled)
    assert names.count("matmul_accumulate") == 5 and names.count("matmul") == 1 and "ewise_add" not in names
    # new inputs: the replay computes them, not the traced values
    xs2, gs2 = [tensor(20, 64) for _ in range(6)], [tensor(20, 96) for _ in range(6)]
    assert compiled(*xs2, *gs2).numpy().tobytes() == f(*xs2, *gs2).numpy().tobytes()
    np.testing.assert_allclose(compiled(*xs2, *gs2).numpy(),
                               sum(x.numpy().T @ g.numpy() for x, g in zip(xs2, gs2)), rtol=1e-5, atol=1e-4)


def test_a_long_inner_dimension_keeps_the_products_and_adds():
    """sgemm sums a long inner dimension in blocks, adding each into the output: where the bits of
    product-then-add differ (here 64 x 1000 @ 1000 x 64), the chain stays as it was."""
    assert not kernels_cpu.accumulates_exactly(((64, 1000), None), ((1000, 64), None), 64, 1000, 64)
    a, b, c, d = tensor(64, 1000), tensor(1000, 64), tensor(64, 1000), tensor(1000, 64)
    eager, out, compiled = replay(lambda a, b, c, d: a @ b + c @ d, a, b, c, d)
    assert out == eager
    assert "matmul_accumulate" not in kernel_names(compiled)


def test_a_product_read_elsewhere_is_not_folded():
    a, b, c, d = tensor(16, 8), tensor(8, 24), tensor(16, 8), tensor(8, 24)

    def f(a, b, c, d):
        p = a @ b
        return (p + c @ d) * p  # p is read again after the add

    eager, out, compiled = replay(f, a, b, c, d)
    assert out == eager
    assert "matmul_accumulate" not in kernel_names(compiled)


def test_an_operand_written_between_the_product_and_its_add_keeps_the_product_in_place():
    """A product moved to its add would read the operand after the write: it stays."""
    a, b, c, d = tensor(16, 8), tensor(8, 24), tensor(16, 8), tensor(8, 24)

    def f(a, b, c, d):
        x = a + 0.0
        p = x @ b
        x[0:4, :] = 5.0  # x's buffer changes after the product that reads it
        q = c @ d
        return (p + q) + x.sum()

    eager, out, compiled = replay(f, a, b, c, d)
    assert out == eager
    assert "matmul_accumulate" not in kernel_names(compiled)


def test_a_compiled_lstm_step_equals_the_eager_step():
    """The benchmark's lstm_lm pattern: each LSTM weight's gradient is a sum over time steps."""
    from needle.models import LanguageModel

    def build():
        np.random.seed(4)
        model = LanguageModel(16, 30, 24, num_layers=2, seq_model="lstm")
        return model, ndl.optim.SGD(model.parameters(), lr=0.5)

    ids = ndl.Tensor(np.random.RandomState(1).randint(0, 30, (7, 5)), dtype="int64")
    y = ndl.Tensor(np.random.RandomState(2).randint(0, 30, 35), dtype="int64")
    eager, compiled = eager_and_compiled(build, ids, y, 4, fuse=True)
    assert eager == compiled


def test_accumulates_exactly_checks_the_layout():
    assert kernels_cpu.accumulates_exactly(((64, 20), (1, 64)), ((20, 96), None), 64, 20, 96)
    assert not kernels_cpu.accumulates_exactly(((64, 20), None), ((30, 96), None), 64, 20, 96)  # shapes
    assert not kernels_cpu.accumulates_exactly(((64, 20), (40, 2)), ((20, 96), None), 64, 20, 96)  # no BLAS layout
    assert not kernels_cpu.accumulates_exactly(((1, 20), None), ((20, 96), None), 1, 20, 96)  # numpy's gemv


def test_matmul_accumulate_adds_the_product_and_refuses_what_blas_cannot_read():
    a, b = R.randn(12, 5).astype(np.float32), R.randn(5, 7).astype(np.float32)
    start = R.randn(12 * 7).astype(np.float32)
    out = Array.wrap(start.copy())
    kernels_cpu.matmul_accumulate((Array.wrap(a.reshape(-1)), (12, 5), None, 0),
                                  (Array.wrap(b.reshape(-1)), (5, 7), None, 0), out, 12, 5, 7)
    np.testing.assert_allclose(out.array.reshape(12, 7), start.reshape(12, 7) + a @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="matmul_accumulate"):
        kernels_cpu.matmul_accumulate((Array.wrap(a.reshape(-1)), (6, 5), (10, 2), 0),
                                      (Array.wrap(b.reshape(-1)), (5, 7), None, 0), out, 6, 5, 7)
