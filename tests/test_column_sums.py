"""Sums over the rows of an array (a bias gradient, BatchNorm's statistics over N*H*W) run as one
compiled loop on the cpu device (kernels_cpu._column_sums), adding in numpy's order for that
layout: row after row into each sum, from 0.0. Every case here must give numpy's bits."""
import numpy as np
import pytest

import needle as ndl
from needle.backend_ndarray import kernels_cpu
from needle.backend_ndarray.ndarray import NDArray
from train_step import eager_and_compiled

R = np.random.RandomState(0)


def values(shape, dtype, kind):
    x = (R.randn(*shape) * R.choice([1e-3, 1.0, 1e4])).astype(dtype)
    if kind == "zeros":  # signed zeros: the sum of -0.0s starts from numpy's 0.0
        x[R.rand(*shape) < 0.6] = -0.0
    elif kind == "special":
        flat = x.reshape(-1)
        flat[R.randint(0, flat.size, 3)] = [np.inf, -np.inf, np.nan]
    return x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["normal", "zeros", "special"])
@pytest.mark.parametrize("rows,cols", [(1, 8192), (3, 4096), (8192, 2), (4096, 16), (1000, 33), (2048, 128),
                                       (129, 127), (20, 800)])
def test_a_sum_over_rows_gives_numpy_bits(dtype, kind, rows, cols):
    x = values((rows, cols), dtype, kind)
    got = NDArray(x, device=ndl.cpu(), dtype=dtype).sum(axis=0).numpy()
    assert got.tobytes() == np.sum(x, axis=0).tobytes()


@pytest.mark.parametrize("kind", ["normal", "zeros"])
def test_batchnorm_statistics_of_an_nhwc_array_viewed_nchw_give_numpy_bits(kind):
    """Sum over (N, H, W) of an NCHW view of NHWC data: the kept axis is C, of stride 1."""
    nhwc = values((16, 8, 8, 12), "float32", kind)
    a = NDArray(nhwc, device=ndl.cpu()).permute((0, 3, 1, 2))
    expected = np.sum(nhwc.transpose(0, 3, 1, 2), axis=(0, 2, 3))
    assert ndl.array_api.sum(a, axis=(0, 2, 3)).numpy().tobytes() == expected.tobytes()


def test_layouts_numpy_sums_otherwise_are_left_to_numpy():
    """The column loop only takes the layout whose order it knows."""
    def columns(x, first):
        dest = np.empty(x.shape[:first], x.dtype)
        return kernels_cpu._as_columns(x, first, dest)

    x = R.randn(4096, 16).astype(np.float32)
    assert columns(x.T, 1) is not None                      # rows of (4096, 16): the column loop
    assert columns(x, 1) is None                             # the reduced axis is the inner one: pairwise
    assert columns(x[:, :1].T, 1) is None                    # one sum: numpy sums that row pairwise
    assert columns(x[::-1].T, 1) is None                     # a negative stride
    assert columns(x.T.astype(np.int64), 1) is None          # not a float
    y = R.randn(8, 64, 16).astype(np.float32)
    assert columns(y.transpose(2, 0, 1), 1) is not None      # (N, H) rows merged into one axis
    assert columns(y.transpose(2, 1, 0), 1) is None          # reduced axes not in memory order


def test_a_compiled_step_with_bias_gradients_gives_the_eager_bits():
    from needle import nn

    def build():
        np.random.seed(2)
        model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))
        return model, ndl.optim.SGD(model.parameters(), lr=0.1)

    x = ndl.Tensor(R.randn(4096, 16).astype(np.float32))
    y = ndl.Tensor(R.randint(0, 8, 4096), dtype="int64")
    eager, compiled = eager_and_compiled(build, x, y, 4)
    assert eager == compiled
