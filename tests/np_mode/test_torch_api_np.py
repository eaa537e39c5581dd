"""PyTorch's creation functions, function forms and Tensor methods in numpy mode (tests/test_torch_api.py
has the full comparison with PyTorch in nd mode): values against numpy's own functions, gradients
against central finite differences in float64, random draws against numpy's generators."""
import math
import os

import numpy as np
import pytest
import torch

import needle as ndl

assert os.environ.get("NEEDLE_BACKEND") == "np", "run this folder with NEEDLE_BACKEND=np"

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def T(a, requires_grad=True):
    return ndl.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def finite_differences(f, x: ndl.Tensor, eps=1e-6) -> np.ndarray:
    """d sum(f(x) * w) / d x by central differences on x's array, w fixed."""
    w = np.random.RandomState(3).randn(*f(x).shape)
    data = x.realize_cached_data()
    grad = np.zeros(data.shape)
    for j in range(data.size):
        data.flat[j] += eps
        plus = float(np.sum(f(x).numpy() * w))
        data.flat[j] -= 2 * eps
        minus = float(np.sum(f(x).numpy() * w))
        data.flat[j] += eps
        grad.flat[j] = (plus - minus) / (2 * eps)
    out = f(x)
    out.backward(ndl.Tensor(w, dtype="float64"))
    return grad


FUNCTIONS = [
    ("sin", lambda x: x.sin(), np.sin), ("cos", lambda x: ndl.cos(x), np.cos), ("abs", lambda x: ndl.abs(x), np.abs),
    ("log10", lambda x: (x * x + 1).log10(), lambda a: np.log10(a * a + 1)),
    ("clamp", lambda x: x.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)),
    ("var", lambda x: x.var(1), lambda a: np.var(a, 1, ddof=1)), ("std", lambda x: ndl.std(x), lambda a: np.std(a, ddof=1)),
    ("tril", lambda x: x.tril(), np.tril), ("triu", lambda x: ndl.triu(x, 1), lambda a: np.triu(a, 1)),
    ("roll", lambda x: x.roll(1, 0), lambda a: np.roll(a, 1, 0)), ("roll flat", lambda x: ndl.roll(x, -2), lambda a: np.roll(a, -2)),
    ("cat", lambda x: ndl.cat([x, x * 2], 1), lambda a: np.concatenate([a, a * 2], 1)),
    ("stack", lambda x: ndl.stack([x, x], dim=2), lambda a: np.stack([a, a], 2)),
    ("split", lambda x: x.split(2, 1)[1], lambda a: a[:, 2:]), ("chunk", lambda x: x.chunk(2)[0], lambda a: a[:2]),
    ("narrow", lambda x: x.narrow(1, 1, 2), lambda a: a[:, 1:3]),
    ("expand", lambda x: x[:, :1].expand(-1, 3), lambda a: np.broadcast_to(a[:, :1], (3, 3))),
    ("masked_fill", lambda x: x.masked_fill(x > 0, 2.0), lambda a: np.where(a > 0, 2.0, a)),
    ("topk", lambda x: x.topk(2).values, lambda a: -np.sort(-a, 1)[:, :2]),
    ("sort", lambda x: x.sort(0).values, lambda a: np.sort(a, 0)),
    ("min", lambda x: x.min(dim=1).values, lambda a: a.min(1)), ("sum", lambda x: ndl.sum(x, dim=0), lambda a: a.sum(0)),
    ("gather", lambda x: x.gather(1, ndl.tensor([[2, 0], [1, 1], [0, 2]])),
     lambda a: np.take_along_axis(a, np.array([[2, 0], [1, 1], [0, 2]]), 1)),
]


@pytest.mark.parametrize("name, fn, reference", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_values_and_gradients(name, fn, reference):
    a = np.random.RandomState(0).randn(3, 3)
    x = T(a)
    np.testing.assert_allclose(fn(x).numpy(), reference(a), rtol=1e-12)
    expected = finite_differences(fn, x)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_dtype_objects_in_numpy_mode():
    x = ndl.Tensor([1.0, 2.0], dtype=ndl.float64)
    assert x.dtype is ndl.float64 and x.dtype == "float64" and x.dtype == np.float64
    assert x.realize_cached_data().dtype == np.float64 and ndl.zeros(2, dtype=ndl.long).dtype is ndl.int64
    assert ndl.device("cpu") is ndl.cpu() and not ndl.device("cuda").enabled() and ndl.cpu().type == "cpu"
    assert ndl.cuda.is_available() is False and ndl.cuda.device_count() == 0
    assert ndl.tensor([1, 2]).to(ndl.float32).dtype is ndl.float32 and x.type() == "torch.DoubleTensor"


def test_creation_in_numpy_mode():
    np.testing.assert_array_equal(ndl.full((2, 2), 3).numpy(), np.full((2, 2), 3))
    assert ndl.full((2,), 1.5).dtype == ndl.float32 and ndl.empty(3).shape == (3,)
    np.testing.assert_allclose(ndl.linspace(-1, 1, 9, dtype=ndl.float64).numpy(), np.linspace(-1, 1, 9), atol=1e-15)
    np.random.seed(4)
    draws = [ndl.randn(3).numpy(), ndl.randint(0, 5, (4,)).numpy(), ndl.randperm(5).numpy()]
    np.random.seed(4)
    np.testing.assert_array_equal(draws[0], np.random.randn(3).astype(np.float32))
    np.testing.assert_array_equal(draws[1], np.random.randint(0, 5, (4,)))
    np.testing.assert_array_equal(draws[2], np.random.permutation(5))
    g = ndl.Generator().manual_seed(7)
    a = ndl.rand(4, generator=g).numpy()
    np.testing.assert_array_equal(a, np.random.RandomState(7).rand(4).astype(np.float32))


def test_multinomial_sort_and_histograms_in_numpy_mode():
    g = ndl.Generator().manual_seed(1)
    s = ndl.multinomial(ndl.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]), 2, generator=g)
    assert s.dtype == ndl.int64 and s.shape == (2, 2)
    assert s.numpy()[0].tolist()[0] == 1 and set(s.numpy()[1].tolist()) == {0, 2}
    with pytest.raises(RuntimeError, match="< 0"):
        ndl.multinomial(ndl.tensor([1.0, -1.0]), 1)
    x = ndl.Tensor([1.0, math.nan, 3.0, 2.0], dtype="float64", requires_grad=False)
    assert x.argsort(descending=True).numpy().tolist() == [1, 2, 3, 0]
    assert x.topk(2).indices.numpy().tolist() == [1, 2]
    a = np.random.RandomState(2).randn(200)
    hist, edges = ndl.histogram(ndl.Tensor(a, dtype="float64"), 7)
    np.testing.assert_array_equal(hist.numpy(), np.histogram(a, 7)[0])
    np.testing.assert_allclose(edges.numpy(), np.histogram(a, 7)[1], rtol=1e-14)
    np.testing.assert_array_equal(ndl.histc(ndl.Tensor(a, dtype="float64"), 5, -1, 1).numpy(),
                                  torch.histc(torch.tensor(a), 5, -1, 1).numpy())


def test_reductions_and_comparisons_in_numpy_mode():
    a = np.array([[1.0, 0.0], [math.nan, 2.0]])
    x = T(a, requires_grad=False)
    assert x.all().item() is False and x.any(1).numpy().tolist() == [True, True]
    assert ndl.allclose(x, x, equal_nan=True) and not ndl.allclose(x, x)
    assert x.argmin(dim=1).numpy().tolist() == [1, 0] and list(range(ndl.tensor(2))) == [0, 1]
