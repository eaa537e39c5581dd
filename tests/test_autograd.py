"""Autograd engine behaviour: requires_grad, detach, .data, no_grad, backward
semantics, memory (TENSOR_COUNTER), from_numpy and DLPack interop."""
import gc

import numpy as np
import pytest
import torch

import needle as ndl
from needle import ops

DEVICES = [pytest.param(ndl.cpu(), id="cpu"), pytest.param(ndl.cpu_numpy(), id="cpu_numpy")]


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def host_view(t):
    """A zero-copy numpy view of a tensor's memory (through DLPack)."""
    return np.from_dlpack(t)


# --- requires_grad ---------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_requires_grad_propagation(device):
    x = ndl.Tensor(randn(2, 3), device=device)
    c = ndl.Tensor(randn(2, 3, seed=1), device=device, requires_grad=False)
    d = ndl.Tensor(randn(2, 3, seed=2), device=device, requires_grad=False)
    assert x.requires_grad  # the default
    assert x.is_leaf() and x.op is None and x.inputs == []
    assert x.grad is None

    y = x * c
    assert y.requires_grad
    assert isinstance(y.op, ops.EWiseMul)
    assert y.inputs[0] is x and y.inputs[1] is c
    assert not y.is_leaf()

    z = ops.exp(c + d)
    assert not z.requires_grad
    # results that need no gradient are constant leaves: no graph is kept
    assert z.op is None and z.inputs == []
    np.testing.assert_allclose(z.numpy(), np.exp(c.numpy() + d.numpy()), rtol=1e-6)

    assert (z * y).requires_grad
    assert ops.summation(y).requires_grad

    # the attribute can be assigned
    c.requires_grad = True
    w = c * d
    assert w.requires_grad and w.op is not None
    w.sum().backward()
    np.testing.assert_allclose(c.grad.numpy(), d.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_from_tensor_shares_data(device):
    x = ndl.Tensor(randn(2, 3), device=device, dtype="float64")
    y = ndl.Tensor(x)
    assert np.shares_memory(host_view(x), host_view(y))
    assert y.is_leaf() and y.requires_grad and y.dtype == "float64" and y.device == device
    z = ndl.Tensor(x, dtype="float32")  # conversion copies
    assert z.dtype == "float32"
    assert not np.shares_memory(host_view(x), host_view(z))
    np.testing.assert_allclose(z.numpy(), x.numpy(), rtol=1e-6)
    other = ndl.cpu_numpy() if device == ndl.cpu() else ndl.cpu()
    w = ndl.Tensor(x, device=other)
    assert w.device == other
    np.testing.assert_array_equal(w.numpy(), x.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_constructor_copies_numpy_input(device):
    arr = randn(2, 3)
    x = ndl.Tensor(arr, device=device, dtype="float64")
    assert not np.shares_memory(host_view(x), arr)
    arr[0, 0] = 100.0
    assert x.numpy()[0, 0] != 100.0


def test_default_dtype_and_device():
    x = ndl.Tensor(np.arange(3))
    assert x.dtype == "float32"
    assert x.device == ndl.default_device()
    assert ndl.Tensor([1.0, 2.0], dtype=np.float64).dtype == "float64"


# --- detach and .data -----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_detach(device):
    a = randn(3, 4)
    x = ndl.Tensor(a, device=device, dtype="float64")
    y = ops.tanh(x)
    d = y.detach()
    assert d.is_leaf() and not d.requires_grad and d.op is None
    assert d.device == device and d.dtype == "float64"
    assert np.shares_memory(host_view(d), host_view(y))
    np.testing.assert_array_equal(d.numpy(), y.numpy())
    # no gradient flows through the detached branch
    (y * d).sum().backward()
    t = torch.tensor(a, requires_grad=True)
    ty = torch.tanh(t)
    (ty * ty.detach()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_data_getter(device):
    x = ndl.Tensor(randn(2, 2), device=device)
    y = x * 3
    d = y.data
    assert isinstance(d, ndl.Tensor)
    assert d.is_leaf() and not d.requires_grad
    assert np.shares_memory(host_view(d), host_view(y))
    z = d * 2 + 1
    assert not z.requires_grad and z.op is None


@pytest.mark.parametrize("device", DEVICES)
def test_data_setter(device):
    x = ndl.Tensor(randn(2, 3), device=device)
    y = x * 2
    old_y = y.numpy()
    new = randn(2, 3, seed=5)
    x.data = ndl.Tensor(new, device=device)
    np.testing.assert_allclose(x.numpy(), new, rtol=1e-6)
    assert x.requires_grad and x.is_leaf()
    # results computed before the assignment keep their values
    np.testing.assert_array_equal(y.numpy(), old_y)
    # new computations see the new data and still differentiate w.r.t. x
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * new, rtol=1e-6)
    # an update "through .data" builds no graph
    x.data = x.data - 0.1 * x.grad.data
    assert x.is_leaf() and x.op is None
    np.testing.assert_allclose(x.numpy(), new - 0.2 * new, rtol=1e-5)
    # the shape may change (a (n,) bias assigned to a (1, n) parameter)
    x.data = ndl.Tensor(np.ones(6), device=device)
    assert x.shape == (6,)


@pytest.mark.parametrize("device", DEVICES)
def test_data_setter_rejects_other_dtypes_and_non_tensors(device):
    x = ndl.Tensor(randn(2, 3), device=device, dtype="float32")
    with pytest.raises((TypeError, AssertionError)):
        x.data = ndl.Tensor(randn(2, 3), device=device, dtype="float64")
    with pytest.raises((TypeError, AssertionError)):
        x.data = randn(2, 3)
    np.testing.assert_allclose(x.numpy(), randn(2, 3), rtol=1e-6)


# --- no_grad ------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_no_grad_context(device):
    x = ndl.Tensor(randn(3), device=device)
    assert ndl.is_grad_enabled()
    with ndl.no_grad():
        assert not ndl.is_grad_enabled()
        y = ops.exp(x) * x
        assert not y.requires_grad and y.op is None
        np.testing.assert_allclose(y.numpy(), np.exp(x.numpy()) * x.numpy(), rtol=1e-6)
        with ndl.enable_grad():
            assert (x * x).requires_grad
        assert not (x * x).requires_grad
    assert ndl.is_grad_enabled()
    z = x * x
    assert z.requires_grad and z.op is not None


def test_no_grad_restores_after_exception():
    x = ndl.Tensor(randn(3))
    with pytest.raises(RuntimeError):
        with ndl.no_grad():
            raise RuntimeError("boom")
    assert ndl.is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_nested_and_set_grad_enabled():
    x = ndl.Tensor(randn(3))
    with ndl.no_grad():
        with ndl.no_grad():
            assert not (x * 2).requires_grad
        assert not (x * 2).requires_grad
    with ndl.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with ndl.set_grad_enabled(True):
        assert (x * 2).requires_grad
    assert ndl.is_grad_enabled()


def test_no_grad_decorator():
    x = ndl.Tensor(randn(3))

    @ndl.no_grad()
    def f(t, k=2.0):
        """docstring"""
        return ops.tanh(t) * k

    y = f(x, k=3.0)
    assert not y.requires_grad and y.op is None
    np.testing.assert_allclose(y.numpy(), np.tanh(x.numpy()) * 3.0, rtol=1e-6)
    assert f.__name__ == "f" and f.__doc__ == "docstring"
    assert ndl.is_grad_enabled()
    assert (x * 2).requires_grad


# --- backward -----------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_backward_overwrites(device):
    a = randn(2, 3)
    x = ndl.Tensor(a, device=device, dtype="float64")
    y = (x * x).sum()
    y.backward()
    first = x.grad.numpy()
    np.testing.assert_allclose(first, 2 * a)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), first)  # not 4 * a
    ops.exp(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(a))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_with_out_grad(device):
    a, b = randn(3, 4, seed=1), randn(4, 2, seed=2)
    g = randn(3, 2, seed=3)
    x, w = ndl.Tensor(a, device=device, dtype="float64"), ndl.Tensor(b, device=device, dtype="float64")
    out = ops.tanh(x @ w)
    out.backward(ndl.Tensor(g, device=device, dtype="float64"))
    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.tanh(tx @ tw).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(out.grad.numpy(), g)
    with pytest.raises(ValueError):
        out.backward(ndl.Tensor(np.ones((2, 3)), device=device, dtype="float64"))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_default_out_grad_is_ones(device):
    a = randn(2, 3)
    x = ndl.Tensor(a, device=device, dtype="float64")
    y = x * x  # not a scalar: backward() seeds with ones of y's shape
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * a)
    np.testing.assert_array_equal(y.grad.numpy(), np.ones((2, 3)))
    assert y.grad.dtype == "float64" and y.grad.device == device


@pytest.mark.parametrize("device", DEVICES)
def test_leaves_and_intermediates_get_grad(device):
    a, b = randn(3, 4, seed=4), randn(4, seed=5)
    x, bias = ndl.Tensor(a, device=device, dtype="float64"), ndl.Tensor(b, device=device, dtype="float64")
    h = x + bias  # broadcast
    r = ops.relu(h)
    s = ops.logsumexp(r * h, (1,))
    loss = s.sum()
    loss.backward()
    tx, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    th = tx + tb
    tr = torch.relu(th)
    ts = torch.logsumexp(tr * th, 1)
    for t in (th, tr, ts):
        t.retain_grad()
    ts.sum().backward()
    for n, t in [(x, tx), (bias, tb), (h, th), (r, tr), (s, ts)]:
        assert n.grad is not None and n.grad.shape == n.shape
        np.testing.assert_allclose(n.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(loss.grad.numpy(), 1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_reused_node_accumulates_within_one_backward(device):
    a = randn(5)
    x = ndl.Tensor(a, device=device, dtype="float64")
    h = ops.tanh(x)
    y = (h * h * h + h + ops.exp(h) * x).sum()
    y.backward()
    t = torch.tensor(a, requires_grad=True)
    th = torch.tanh(t)
    (th * th * th + th + torch.exp(th) * t).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_inside_no_grad(device):
    """Gradients are still computed (like torch); they just do not record a graph."""
    a = randn(2, 3)
    x = ndl.Tensor(a, device=device, dtype="float64")
    y = (ops.exp(x) * x).sum()
    with ndl.no_grad():
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(a) * (1 + a), rtol=1e-12)
    assert not x.grad.requires_grad


def test_backward_rejects_non_tensor_out_grad():
    x = ndl.Tensor(randn(3))
    with pytest.raises(TypeError):
        (x * 2).backward(np.ones(3))


# --- memory ---------------------------------------------------------------------------

def test_tensor_counter_counts_live_values():
    gc.collect()
    start = ndl.autograd.TENSOR_COUNTER
    xs = [ndl.Tensor(np.ones(2)) for _ in range(5)]
    assert ndl.autograd.TENSOR_COUNTER == start + 5
    y = xs[0] * xs[1] + xs[2]
    assert ndl.autograd.TENSOR_COUNTER == start + 7
    del xs, y
    gc.collect()
    assert ndl.autograd.TENSOR_COUNTER == start


@pytest.mark.parametrize("device", DEVICES)
def test_training_loop_keeps_tensor_counter_flat(device):
    """1,000 forward/backward/update steps of a linear model must not keep graphs alive.

    Backward stores a differentiable .grad on every node, and an intermediate's
    gradient refers back to the node (a reference cycle), so the counter is read
    after a garbage collection.
    """
    r = np.random.default_rng(0)
    n, d = 16, 3
    xs = r.standard_normal((n, d))
    w_true = r.standard_normal((d, 1))
    ys = xs @ w_true + 0.5
    X = ndl.Tensor(xs, device=device, dtype="float64", requires_grad=False)
    Y = ndl.Tensor(ys, device=device, dtype="float64", requires_grad=False)
    W = ndl.Tensor(np.zeros((d, 1)), device=device, dtype="float64")
    b = ndl.Tensor(np.zeros(1), device=device, dtype="float64")
    lr = 0.1
    counts = {}
    first_loss = None
    for step in range(1, 1001):
        pred = X @ W + b
        loss = ((pred - Y) ** 2).sum() / n
        loss.backward()
        W.data = W.data - lr * W.grad.data
        b.data = b.data - lr * b.grad.data
        if first_loss is None:
            first_loss = loss.numpy().item()
        if step in (10, 1000):
            gc.collect()
            counts[step] = ndl.autograd.TENSOR_COUNTER
    assert abs(counts[1000] - counts[10]) < 10
    # and the model did learn: gradient descent reaches the exact linear fit
    assert loss.numpy().item() < 1e-8 < first_loss
    np.testing.assert_allclose(W.numpy(), w_true, atol=1e-4)
    np.testing.assert_allclose(b.numpy(), [0.5], atol=1e-4)


def test_graph_is_freed_after_use():
    gc.collect()
    start = ndl.autograd.TENSOR_COUNTER
    x = ndl.Tensor(randn(4, 4))
    for _ in range(20):
        y = ops.logsoftmax(ops.tanh(x @ x)).sum()
        y.backward()
    del y
    x.grad = None
    gc.collect()
    assert ndl.autograd.TENSOR_COUNTER == start + 1  # only x is left


# --- from_numpy -------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_numpy_shares_memory(dtype, device):
    arr = randn(3, 4).astype(dtype)
    t = ndl.from_numpy(arr, device=device)
    assert t.shape == (3, 4)
    assert t.dtype == np.dtype(dtype).name
    assert t.device == device
    assert not t.requires_grad
    assert np.shares_memory(host_view(t), arr)
    arr[1, 2] = 42.0
    arr[0] *= -1
    np.testing.assert_array_equal(t.numpy(), arr)
    # computations read the current memory
    np.testing.assert_allclose((t * 2).numpy(), arr * 2, rtol=1e-6)


def test_from_numpy_default_device_and_requires_grad():
    arr = randn(2, 3)
    t = ndl.from_numpy(arr, requires_grad=True)
    assert t.device == ndl.default_device()
    assert t.requires_grad
    (t * t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 2 * arr)


def test_from_numpy_copies_what_it_cannot_share():
    arr = randn(4, 3)
    view = arr.T  # not C-contiguous
    t = ndl.from_numpy(view)
    np.testing.assert_allclose(t.numpy(), view, rtol=1e-6)
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)  # int32 is stored as int64: a copy
    ti = ndl.from_numpy(ints)
    np.testing.assert_array_equal(ti.numpy(), ints)
    assert ti.dtype == "int64" and not ti.requires_grad
    ints[0, 0] = 99
    assert ti.numpy()[0, 0] == 0
    halves = np.ones(3, dtype=np.float16)
    assert ndl.from_numpy(halves).dtype == "float32"
    with pytest.raises(TypeError):
        ndl.from_numpy([1.0, 2.0])


def test_from_numpy_shares_int64_and_bool():
    for arr in (np.arange(6).reshape(2, 3), np.array([True, False])):
        t = ndl.from_numpy(arr)
        assert t.dtype == arr.dtype.name
        arr.flat[0] = arr.flat[1]
        np.testing.assert_array_equal(t.numpy(), arr)  # same memory
    with pytest.raises(TypeError, match="int64"):
        ndl.from_numpy(np.arange(3), requires_grad=True)


# --- DLPack -------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dlpack_to_torch_shares_memory(dtype, device):
    a = randn(3, 4)
    x = ndl.Tensor(a, device=device, dtype=dtype)
    t = torch.from_dlpack(x)
    assert tuple(t.shape) == x.shape
    assert t.dtype == getattr(torch, dtype)
    np.testing.assert_array_equal(t.numpy(), x.numpy())
    # mutate through torch, observe in needle
    t[0, 1] = 100.0
    t.mul_(2)
    assert x.numpy()[0, 1] == 200.0
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    # and needle computations see it
    np.testing.assert_allclose(ops.summation(x).numpy(), t.sum().item(), rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_dlpack_to_numpy_shares_memory(device):
    x = ndl.Tensor(randn(2, 5), device=device, dtype="float64")
    a = np.from_dlpack(x)
    np.testing.assert_array_equal(a, x.numpy())
    a[1, :] = 7.0
    np.testing.assert_array_equal(x.numpy()[1], np.full(5, 7.0))


@pytest.mark.parametrize("device", DEVICES)
def test_dlpack_round_trip(device):
    a = randn(3, 2)
    x = ndl.Tensor(a, device=device, dtype="float64")
    t = torch.from_dlpack(x)
    back = ndl.from_numpy(t.numpy(), device=device)  # torch -> numpy -> needle, no copies
    assert np.shares_memory(host_view(back), host_view(x))
    t[2, 1] = -5.0
    assert x.numpy()[2, 1] == -5.0 and back.numpy()[2, 1] == -5.0
    # numpy round trip
    arr = randn(4).astype(np.float32)
    y = ndl.from_numpy(arr, device=device)
    arr2 = np.from_dlpack(y)
    assert np.shares_memory(arr, arr2)
    arr2[0] = 3.0
    assert arr[0] == 3.0 and y.numpy()[0] == 3.0
    # torch tensor -> needle through numpy, then back to torch
    src = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    z = ndl.from_numpy(src.numpy(), device=device)
    src[1, 1] = 50.0
    assert z.numpy()[1, 1] == 50.0
    again = torch.from_dlpack(z)
    again[0, 0] = -1.0
    assert src[0, 0].item() == -1.0


@pytest.mark.parametrize("device", DEVICES)
def test_dlpack_of_strided_views(device):
    a = randn(4, 6)
    x = ndl.Tensor(a, device=device, dtype="float64")
    cases = [
        (ops.transpose(x), a.T),
        (x[1:, ::2], a[1:, ::2]),
        (x[2], a[2]),
        (x[:, 3], a[:, 3]),
        (ops.broadcast_to(ndl.Tensor(a[:1], device=device, dtype="float64"), (3, 4, 6)), np.broadcast_to(a[:1], (3, 4, 6))),
        (ops.permute(ops.reshape(x, (2, 3, 4)), (2, 0, 1)), a.reshape(2, 3, 4).transpose(2, 0, 1)),
    ]
    for view, expected in cases:
        assert view.shape == expected.shape
        np.testing.assert_array_equal(torch.from_dlpack(view).numpy(), expected)
        np.testing.assert_array_equal(np.from_dlpack(view), expected)
    # a transposed view shares memory with the original
    tt = torch.from_dlpack(ops.transpose(x))
    tt[0, 3] = 99.0
    assert x.numpy()[3, 0] == 99.0


def test_dlpack_of_0d_tensor():
    x = ndl.Tensor(np.float64(2.5), dtype="float64")
    t = torch.from_dlpack(x)
    assert t.shape == () and t.item() == 2.5
    s = ops.summation(ndl.Tensor(np.arange(4.0), dtype="float64"))
    assert torch.from_dlpack(s).item() == 6.0


def test_the_cycle_collector_is_paused_during_the_walk_and_restored_after():
    """backward pauses Python's gc for the graph walk only: on again after it (also when the
    walk raises), and left off when the caller had turned it off."""
    seen = []

    class Probe(ndl.autograd.TensorOp):
        def compute(self, a):
            return a

        def gradient(self, out_grad, node):
            seen.append(gc.isenabled())
            if getattr(self, "fail", False):
                raise RuntimeError("gradient failed")
            return out_grad

    x = ndl.Tensor(np.ones(3, np.float32), requires_grad=True)
    assert gc.isenabled()
    (Probe()(x) * 2).sum().backward()
    assert seen == [False] and gc.isenabled()
    failing = Probe()
    failing.fail = True
    with pytest.raises(RuntimeError, match="gradient failed"):
        failing(x).sum().backward()
    assert gc.isenabled()
    gc.disable()
    try:
        Probe()(x).sum().backward()
        assert not gc.isenabled()
    finally:
        gc.enable()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(3, np.float32))


def test_vjp_gives_the_adjoints_of_the_inputs_and_sets_no_grad():
    """autograd.vjp: backward's walk over what a function builds, stopped at its inputs, against
    torch.autograd.grad; no .grad is set anywhere, an input no adjoint reaches gets None."""
    from needle.autograd import vjp
    rng = np.random.RandomState(0)
    a_np, b_np, c_np, u_np, v_np = (rng.randn(3, 4) for _ in range(5))
    a, b, c = (ndl.Tensor(x, dtype="float64", requires_grad=True) for x in (a_np, b_np, c_np))
    h = a * b  # an input that is itself a graph node: the walk stops there, it does not go on to a and b

    def function(h, b, c):
        return ops.exp(h) * b + b * b, ops.summation(h * h, axes=(1,))

    u, v = ndl.Tensor(u_np, dtype="float64"), ndl.Tensor(v_np[:, 0], dtype="float64")
    adj_h, adj_b, adj_c = vjp(function, (h, b, c), (u, v))
    assert adj_c is None and a.grad is None and b.grad is None and h.grad is None

    th, tb = torch.tensor(a_np * b_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    outs = (torch.exp(th) * tb + tb * tb, (th * th).sum(1))
    want = torch.autograd.grad(outs, (th, tb), (torch.tensor(u_np), torch.tensor(v_np[:, 0])))
    np.testing.assert_allclose(adj_h.numpy(), want[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(adj_b.numpy(), want[1].numpy(), rtol=1e-12)
    # the adjoints are graph nodes: differentiate one again, through h back to a
    adj_h.sum().backward()
    ta = torch.tensor(a_np, requires_grad=True)
    th2 = ta * torch.tensor(b_np)
    (g,) = torch.autograd.grad((torch.exp(th2) * torch.tensor(b_np) * torch.tensor(u_np)).sum()
                               + ((th2 * th2).sum(1) * torch.tensor(v_np[:, 0])).sum(), (th2,), create_graph=True)
    (second,) = torch.autograd.grad(g.sum(), (ta,))
    np.testing.assert_allclose(a.grad.numpy(), second.numpy(), rtol=1e-12)


def test_vjp_of_an_output_that_is_an_input_and_a_cotangent_count_that_does_not_fit():
    from needle.autograd import vjp
    x = ndl.Tensor(np.arange(3.0), dtype="float64", requires_grad=True)
    u = ndl.Tensor(np.array([1.0, 2.0, 3.0]), dtype="float64")
    (adj,) = vjp(lambda x: x, (x,), (u,))
    assert adj is u
    (adj,) = vjp(lambda x: (x * 2, x), (x,), (u, None))
    np.testing.assert_array_equal(adj.numpy(), [2.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="2 cotangents for 1 outputs"):
        vjp(lambda x: x * 2, (x,), (u, u))
    with pytest.raises(TypeError, match="cotangents must be tuples or lists.*got tuple and Tensor"):
        vjp(lambda x: x * 2, (x,), u)


def test_vjp_of_an_input_given_twice_is_its_whole_adjoint_once():
    """d(x * x)/dx = 2x at x's first position, None at the second: adding the results per input
    (what autograd does with an op's partial adjoints) counts it once."""
    from needle.autograd import vjp
    x = ndl.Tensor(np.array([1.0, 2.0, 3.0]), dtype="float64")
    u = ndl.Tensor(np.ones(3), dtype="float64", requires_grad=False)
    first, second = vjp(lambda a, b: a * b, (x, x), (u,))
    tx = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad((tx * tx).sum(), (tx,))
    np.testing.assert_array_equal(first.numpy(), want.numpy())
    assert second is None


def test_one_adjoint_reaching_both_lstm_states_is_differentiated_once():
    """An op whose gradient uses vjp gets the same adjoint object for two of its inputs (h and c
    share one): second derivatives against PyTorch, so that it is neither lost nor doubled."""
    rng = np.random.RandomState(3)
    zn, cn = rng.randn(2, 12), rng.randn(2, 3)
    z, c0 = ndl.Tensor(zn, dtype="float64"), ndl.Tensor(cn, dtype="float64")
    h, c = ops.lstm_gates(z, c0)
    ((h + c) ** 2).sum().backward()
    (z.grad * z.grad).sum().backward()
    tz, tc0 = torch.tensor(zn, requires_grad=True), torch.tensor(cn, requires_grad=True)
    i, f, g, o = tz.reshape(2, 4, 3).unbind(1)
    tc = torch.sigmoid(f) * tc0 + torch.sigmoid(i) * torch.tanh(g)
    th = torch.sigmoid(o) * torch.tanh(tc)
    (gz,) = torch.autograd.grad(((th + tc) ** 2).sum(), (tz,), create_graph=True)
    (second,) = torch.autograd.grad((gz * gz).sum(), (tz,))
    np.testing.assert_allclose(z.grad.numpy(), second.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("as_partials", [True, False])
def test_partials_an_op_returns_for_one_input_are_added_one_by_one_in_their_order(as_partials):
    """autograd.Partials: the walk files an op's several partial adjoints of one input as if separate
    consumers had sent them. Here x's partial from x * 1 arrives first (1.0), then the op's 1e8 and
    -1e8: ((1 + 1e8) - 1e8) is 0 in float32, where the op's two added first (one partial) give 1."""
    from needle.autograd import Partials, TensorOp, array_api

    class TwoPartials(TensorOp):
        def compute(self, a):
            return array_api.multiply(a, 0.0)

        def gradient(self, out_grad, node):
            big = ndl.Tensor(np.full(node.shape, 1e8, np.float32), requires_grad=False)
            return (Partials((big, -big)) if as_partials else big + -big,)

    x = ndl.Tensor(np.ones(3, np.float32))
    (TwoPartials()(x).sum() + (x * 1.0).sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 0.0 if as_partials else 1.0, np.float32))


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=str)
@pytest.mark.parametrize("count", [3, 35])
def test_three_or_more_partial_adjoints_are_added_as_the_left_fold_in_one_node(device, count):
    """backward adds a node's partial adjoints with one AddN node (the cpu's add_n: in place, one
    pass per partial) with the bits of ((p0 + p1) + p2) + ..., inf, nan and -0.0 included; the
    gradient and a second derivative are PyTorch's."""
    rng = np.random.RandomState(count)
    parts = [rng.randn(6, 5).astype(np.float32) * 10.0 ** rng.randint(-6, 7) for _ in range(count)]
    parts[0][0, :3] = [np.inf, -0.0, np.nan]
    parts[1][0, :2] = [-np.inf, -0.0]
    tensors = [ndl.Tensor(p, device=device) for p in parts]
    fused = ndl.ops.add_n(tensors).numpy()
    fold = tensors[0] + tensors[1]
    for t in tensors[2:]:
        fold = fold + t
    assert np.where(np.isnan(fused), 0, fused).tobytes() == np.where(np.isnan(fold.numpy()), 0, fold.numpy()).tobytes()
    assert np.isnan(fused[0, 0]) and np.isnan(fused[0, 2])

    data = rng.randn(4, 3)
    weights = [rng.randn(4, 3) for _ in range(count)]
    x = ndl.Tensor(data, device=device, dtype="float64")
    loss = sum(((x * ndl.Tensor(w, device=device, dtype="float64")) ** 2).sum() for w in weights)
    loss.backward()
    grad = x.grad
    assert type(grad.op).__name__ == "AddN"
    (grad * grad).sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    t_loss = sum(((tx * torch.tensor(w)) ** 2).sum() for w in weights)
    (t_grad,) = torch.autograd.grad(t_loss, (tx,), create_graph=True)
    np.testing.assert_allclose(grad.numpy(), t_grad.detach().numpy(), rtol=1e-12)
    (t_second,) = torch.autograd.grad((t_grad * t_grad).sum(), (tx,))
    np.testing.assert_allclose(x.grad.numpy(), t_second.numpy(), rtol=1e-12)


def test_add_n_refuses_fewer_than_two_tensors_and_shapes_that_differ():
    with pytest.raises(ValueError, match="at least two"):
        ndl.ops.add_n([ndl.Tensor(np.zeros(2))])
    with pytest.raises(ValueError):
        ndl.ops.add_n([ndl.Tensor(np.zeros(2)), ndl.Tensor(np.zeros(2)), ndl.Tensor(np.zeros(3))])
