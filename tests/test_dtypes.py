"""Dtypes end to end: storage, PyTorch's promotion, int64 labels and indices on the device,
bool masks, and the autograd rules that go with them (nd mode; tests/np_mode has the
numpy-mode counterparts)."""
import itertools

import numpy as np
import pytest
import torch

import needle as ndl
import needle.nn as nn
from needle import backend_ndarray as nd
from needle.dtypes import division_dtype, result_dtype

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]
DTYPES = ["float32", "float64", "int64", "bool"]
TORCH = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}


def sample(dtype, shape=(3, 4), seed=0):
    rng = np.random.RandomState(seed)
    if dtype == "bool":
        return rng.rand(*shape) < 0.5
    if dtype == "int64":
        return rng.randint(-4, 5, size=shape).astype(np.int64)
    return rng.randn(*shape).astype(dtype)


# --- promotion follows PyTorch --------------------------------------------------------------

@pytest.mark.parametrize("a, b", list(itertools.product(DTYPES, DTYPES)))
def test_tensor_tensor_promotion_matches_torch(a, b):
    expected = str(torch.result_type(torch.zeros(1, dtype=TORCH[a]), torch.zeros(1, dtype=TORCH[b]))).split(".")[1]
    assert result_dtype(a, b) == expected
    x, y = ndl.Tensor(sample(a), dtype=a), ndl.Tensor(sample(b, seed=1), dtype=b)
    if a == b == "bool":
        assert (x * y).dtype == "bool"
    else:
        assert (x + y).dtype == expected and (x * y).dtype == expected
    t = torch.tensor(sample(a)) / torch.tensor(sample(b, seed=1))
    assert division_dtype(a, b) == str(t.dtype).split(".")[1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [2, 0.5, np.float64(0.5), np.float32(0.5), True, np.int64(3)])
def test_tensor_scalar_promotion_matches_torch(dtype, scalar):
    expected = str((torch.zeros(2, dtype=TORCH[dtype]) * scalar).dtype).split(".")[1]
    assert result_dtype(dtype, scalar, b_is_scalar=True) == expected
    if dtype == "bool" and isinstance(scalar, (bool, np.bool_)):
        return
    t = ndl.Tensor(sample(dtype), dtype=dtype, requires_grad=False)
    assert (t * scalar).dtype == expected


def test_float32_with_numpy_float64_scalar_stays_float32():
    """NumPy 2 widens float32 * np.float64 to float64; PyTorch (and needle) keep float32."""
    x = ndl.Tensor(np.ones(3, np.float32))
    for out in (x * np.float64(2), x + np.float64(1), x / np.float64(3), np.float64(2) * x, x ** np.float64(2)):
        assert out.dtype == "float32"


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_gradient_has_each_inputs_dtype(device):
    a = ndl.Tensor(np.ones((2, 3)), device=device, dtype="float32")
    b = ndl.Tensor(np.full((2, 3), 2.0), device=device, dtype="float64")
    out = a * b
    assert out.dtype == "float64"
    out.sum().backward()
    assert a.grad.dtype == "float32" and b.grad.dtype == "float64"
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 2.0))


# --- what may require grad -------------------------------------------------------------------

def test_numbers_make_float_tensors_and_the_course_example_works():
    x = ndl.Tensor([6])
    assert x.dtype == "float32" and x.requires_grad
    (x * x).backward()
    assert float(x.grad.numpy()[0]) == 12.0
    assert ndl.Tensor([True, False]).dtype == "float32"
    assert ndl.Tensor(np.arange(3)).dtype == "float32"  # the course's nd-mode rule without dtype=


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integer_and_bool_tensors_never_require_grad(dtype):
    t = ndl.Tensor(sample(dtype), dtype=dtype)
    assert t.dtype == dtype and not t.requires_grad
    with pytest.raises(TypeError, match=dtype):
        ndl.Tensor(sample(dtype), dtype=dtype, requires_grad=True)
    with pytest.raises(TypeError, match=dtype):
        t.requires_grad = True
    with pytest.raises(TypeError, match=dtype):
        ndl.init.zeros(3, dtype=dtype, requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        t.sum().backward()


def test_comparisons_argmax_and_labels_have_integer_dtypes():
    x = ndl.Tensor(sample("float32"))
    for out in (x > 0, x <= 0.1, x.eq(x), x.ne(0)):
        assert out.dtype == "bool" and not out.requires_grad
    assert x.argmax(axis=1).dtype == "int64"
    np.testing.assert_array_equal(x.argmax(axis=1).numpy(), sample("float32").argmax(axis=1))
    X, y = np.random.randn(10, 3).astype(np.float32), np.arange(10, dtype=np.uint8)
    xb, yb = next(iter(ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=4)))
    assert xb.dtype == "float32" and yb.dtype == "int64" and not yb.requires_grad
    np.testing.assert_array_equal(yb.numpy(), [0, 1, 2, 3])


# --- bool masks and int64 indices on the device ----------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_bool_mask_gathers_and_scatters_like_torch(device):
    a = np.arange(12, dtype=np.float64).reshape(3, 4) - 2.5
    x = ndl.Tensor(a, device=device, dtype="float64")
    picked = x[x > 3]
    t = torch.tensor(a, requires_grad=True)
    tp = t[t > 3]
    assert picked.shape == tuple(tp.shape) == (6,)
    np.testing.assert_array_equal(picked.numpy(), tp.detach().numpy())
    w = np.arange(6, dtype=np.float64)
    (picked * ndl.Tensor(w, device=device, dtype="float64")).sum().backward()
    (tp * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    # a mask over the first axis only, next to a slice
    rows = ndl.Tensor(np.array([True, False, True]), dtype="bool", device=device)
    np.testing.assert_array_equal(x[rows, 1:3].numpy(), a[[True, False, True], 1:3])


@pytest.mark.parametrize("device", DEVICES)
def test_int64_index_tensor_with_repeats_and_negatives(device):
    a = np.random.randn(5, 3)
    x = ndl.Tensor(a, device=device, dtype="float64")
    idx = ndl.Tensor(np.array([[4, -1], [0, 4]]), dtype="int64", device=device)
    out = x[idx]
    t = torch.tensor(a, requires_grad=True)
    ti = torch.tensor([[4, -1], [0, 4]])
    np.testing.assert_array_equal(out.numpy(), t[ti].detach().numpy())
    out.sum().backward()
    t[ti].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())  # row 4 gathered three times
    with pytest.raises(IndexError, match=r"index 5 .*axis 0.*size 5"):
        x[ndl.Tensor(np.array([1, 5]), dtype="int64", device=device)]
    with pytest.raises(TypeError, match="whole numbers"):
        x[ndl.Tensor(np.array([0.5]), device=device)]


class _HostReads:
    """Counts reads of device data back to numpy, and forbids dense identity matrices."""

    def __init__(self, monkeypatch):
        self.elements = 0
        real_numpy = nd.NDArray.numpy

        def counted(arr):
            self.elements += arr.size
            return real_numpy(arr)

        monkeypatch.setattr(nd.NDArray, "numpy", counted)

        def no_eye(*args, **kwargs):
            raise AssertionError("a dense identity matrix was built")

        monkeypatch.setattr(np, "eye", no_eye)
        monkeypatch.setattr(np, "identity", no_eye)


@pytest.mark.parametrize("device", DEVICES)
def test_one_hot_loss_embedding_and_max_stay_on_the_device(device, monkeypatch):
    """A language-model step with int64 ids and labels: no dense identity anywhere, and the
    only values read back are a handful of scalars (bounds checks, the loss), never the
    ids, labels or logits."""
    np.random.seed(0)
    vocab, width, seq, bs = 50, 8, 6, 4
    emb = nn.Embedding(vocab, width, device=device)
    lin = nn.Linear(width, vocab, device=device)
    ids = ndl.Tensor(np.random.randint(0, vocab, size=(seq, bs)), dtype="int64", device=device)
    labels = ndl.Tensor(np.random.randint(0, vocab, size=(seq * bs,)), dtype="int64", device=device)
    reads = _HostReads(monkeypatch)
    logits = lin(emb(ids).reshape((seq * bs, width)))
    loss = nn.SoftmaxLoss()(logits, labels) + ndl.ops.max(logits, axes=(1,)).sum() * 0.0
    loss.backward()
    one_hot = ndl.init.one_hot(vocab, labels, device=device)
    assert one_hot.shape == (seq * bs, vocab) and one_hot.dtype == "float32"
    value = loss.item()
    assert reads.elements <= 8, reads.elements
    monkeypatch.undo()
    # the numbers are right: PyTorch on the same weights, in float64 (a CPU-independent reference)
    tw = torch.tensor(emb.weight.numpy(), dtype=torch.float64, requires_grad=True)
    tl_w = torch.tensor(lin.weight.numpy(), dtype=torch.float64, requires_grad=True)
    tl_b = torch.tensor(lin.bias.numpy().reshape(-1), dtype=torch.float64, requires_grad=True)
    t_logits = tw[torch.tensor(ids.numpy())].reshape(seq * bs, width) @ tl_w + tl_b
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels.numpy()))
    t_loss.backward()
    np.testing.assert_allclose(value, t_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(emb.weight.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one_hot.numpy(), np.eye(vocab, dtype=np.float32)[labels.numpy()])


def test_one_hot_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="class index 7"):
        ndl.init.one_hot(5, ndl.Tensor(np.array([1, 7]), dtype="int64"))
    with pytest.raises(ValueError, match="id -1"):
        nn.Embedding(5, 2)(ndl.Tensor(np.array([[0], [-1]]), dtype="int64"))


# --- autograd semantics --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_weights_get_a_gradient_without_an_initial_state(kind):
    """W_hh takes part in the first step with a zero state, so it gets a gradient, as in PyTorch."""
    np.random.seed(1)
    seq, bs, inp, hid = 4, 3, 5, 6
    x = np.random.randn(seq, bs, inp).astype(np.float32)
    model = (nn.RNN if kind == "rnn" else nn.LSTM)(inp, hid, num_layers=2)
    ref = (torch.nn.RNN if kind == "rnn" else torch.nn.LSTM)(inp, hid, num_layers=2).double()  # float64 reference
    cells = model.rnn_cells if kind == "rnn" else model.lstm_cells
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            getattr(ref, f"weight_ih_l{layer}").copy_(torch.tensor(cell.W_ih.numpy().T))
            getattr(ref, f"weight_hh_l{layer}").copy_(torch.tensor(cell.W_hh.numpy().T))
            getattr(ref, f"bias_ih_l{layer}").copy_(torch.tensor(cell.bias_ih.numpy()))
            getattr(ref, f"bias_hh_l{layer}").copy_(torch.tensor(cell.bias_hh.numpy()))
    out, _ = model(ndl.Tensor(x))
    out.sum().backward()
    t_out, _ = ref(torch.tensor(x, dtype=torch.float64))
    t_out.sum().backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    for layer, cell in enumerate(cells):
        assert cell.W_hh.grad is not None
        np.testing.assert_allclose(cell.W_hh.grad.numpy(), getattr(ref, f"weight_hh_l{layer}").grad.numpy().T,
                                   rtol=1e-4, atol=1e-5)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["add", "multiply", "divide", "power", "maximum"])
@pytest.mark.parametrize("shapes", [((1, 3), (3,)), ((2, 1, 4), (3, 1)), ((4,), ())])
def test_op_functions_broadcast_and_sum_gradients_back(device, name, shapes):
    rng = np.random.RandomState(3)
    a, b = np.asarray(rng.rand(*shapes[0]) + 0.5), np.asarray(rng.rand(*shapes[1]) + 0.5)
    x, y = (ndl.Tensor(v, device=device, dtype="float64") for v in (a, b))
    out = getattr(ndl, name)(x, y)
    tx, ty = (torch.tensor(v, requires_grad=True) for v in (a, b))
    t_out = {"add": torch.add, "multiply": torch.mul, "divide": torch.div, "power": torch.pow,
             "maximum": torch.maximum}[name](tx, ty)
    assert out.shape == tuple(t_out.shape)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12)
    w = rng.randn(*out.shape)
    (out * ndl.Tensor(w, device=device, dtype="float64")).sum().backward()
    (t_out * torch.tensor(w)).sum().backward()
    assert x.grad.shape == a.shape and y.grad.shape == b.shape
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_a_data_batch_gets_no_gradient():
    X = ndl.Tensor(np.random.randn(4, 3), requires_grad=False)
    W = ndl.Tensor(np.random.randn(3, 2))
    (X @ W).sum().backward()
    assert X.grad is None and W.grad is not None
    h = X @ W  # a node computed from the batch and the weight
    ndl.relu(h).sum().backward()
    assert X.grad is None
