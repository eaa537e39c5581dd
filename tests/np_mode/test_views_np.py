"""Basic indexing gives views in numpy mode too (ints, slices, None, Ellipsis: PyTorch's rule), the
in-place check sees them (numpy's as_strided views included), and contiguous() copies row-major."""
import os

import numpy as np
import pytest

import needle as ndl

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"


@pytest.mark.parametrize("index", [0, -1, (slice(None), 1), (None, 1, Ellipsis), (1, slice(0, 3, 2))])
def test_basic_index_results_write_the_tensor(index):
    x = ndl.tensor(np.arange(12.0).reshape(3, 4))
    expected = np.arange(12.0).reshape(3, 4)
    expected[index] = 7.0
    x[index].fill_(7.0)
    np.testing.assert_array_equal(x.numpy(), expected)
    y = ndl.tensor(np.arange(12.0).reshape(3, 4))
    y[index].add_(1.0)
    expected = np.arange(12.0).reshape(3, 4)
    expected[index] += 1.0
    np.testing.assert_array_equal(y.numpy(), expected)


def test_index_arrays_still_copy():
    x = ndl.tensor(np.zeros((3, 2)))
    x[[0, 2]].fill_(5.0)
    np.testing.assert_array_equal(x.numpy(), np.zeros((3, 2)))


@pytest.mark.parametrize("index", [0, (slice(None), 1)])
def test_changing_a_view_of_a_tensor_that_records_gradients_raises_and_leaves_it(index):
    y = ndl.ones(3, 4, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="view of part of another tensor"):
        y[index] += 1.0
    np.testing.assert_array_equal(y.numpy(), np.full((3, 4), 2.0))


def test_contiguous_of_a_transposed_tensor_is_row_major():
    x = ndl.tensor(np.arange(6.0).reshape(2, 3)).transpose(0, 1)
    c = x.contiguous()
    assert c.is_contiguous() and c.numpy().flags.c_contiguous
    np.testing.assert_array_equal(c.numpy(), np.arange(6.0).reshape(2, 3).T)
