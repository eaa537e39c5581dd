"""needle.optim against independent numpy implementations of the course's formulas (spec §7),
and Adam / plain SGD / gradient clipping against PyTorch.

Gradients for the numpy references come from PyTorch autograd on a float64 copy of the
model, so the reference trajectory is computed without needle.
"""
import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import needle as ndl
import needle.nn as nn
import needle.optim as optim

torch.set_num_threads(1)

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


X_NP = data(12, 5, seed=1)
Y_NP = np.random.default_rng(2).integers(0, 3, size=12)


def make_model(dtype="float64"):
    np.random.seed(0)
    return nn.Sequential(nn.Linear(5, 7, dtype=dtype), nn.ReLU(), nn.Linear(7, 3, dtype=dtype))


def needle_loss(model, dtype="float64"):
    X = ndl.Tensor(X_NP, dtype=dtype, requires_grad=False)
    y = ndl.Tensor(Y_NP.astype(np.float32), requires_grad=False)
    return nn.SoftmaxLoss()(model(X), y)


def torch_loss(params):
    W1, b1, W2, b2 = params
    out = torch.relu(torch.tensor(X_NP) @ W1 + b1) @ W2 + b2
    return F.cross_entropy(out, torch.tensor(Y_NP))


def torch_grads(params_np):
    """d loss / d params at the given float64 parameter values, by PyTorch autograd."""
    ts = [torch.tensor(p, requires_grad=True) for p in params_np]
    torch_loss(ts).backward()
    return [t.grad.numpy() for t in ts]


def np_sgd(params, grads, state, lr, momentum, wd):
    out = []
    for i, (theta, g) in enumerate(zip(params, grads)):
        d = g + wd * theta
        u = momentum * state.get(i, np.zeros_like(theta)) + (1 - momentum) * d
        state[i] = u
        out.append(theta - lr * u)
    return out


def np_adam(params, grads, state, t, lr, b1, b2, eps, wd):
    out = []
    for i, (theta, g) in enumerate(zip(params, grads)):
        d = g + wd * theta
        m = b1 * state.get(("m", i), np.zeros_like(theta)) + (1 - b1) * d
        v = b2 * state.get(("v", i), np.zeros_like(theta)) + (1 - b2) * d * d
        state[("m", i)], state[("v", i)] = m, v
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        out.append(theta - lr * m_hat / (np.sqrt(v_hat) + eps))
    return out


def run_needle_step(model, opt, dtype):
    opt.reset_grad()
    needle_loss(model, dtype).backward()
    opt.step()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)],
    ids=["plain", "momentum", "weight_decay", "both"],
)
def test_sgd_matches_numpy_formula(dtype, momentum, wd):
    model = make_model(dtype)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=wd)
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.1, momentum, wd)
    params = [p.numpy().astype(np.float64) for p in model.parameters()]
    params = [params[0], params[1].reshape(-1), params[2], params[3].reshape(-1)]
    state = {}
    for _ in range(5):
        run_needle_step(model, opt, dtype)
        params = np_sgd(params, torch_grads(params), state, 0.1, momentum, wd)
        for p, ref in zip(model.parameters(), params):
            assert p.dtype == dtype and p.is_leaf() and p.requires_grad
            np.testing.assert_allclose(p.numpy().reshape(ref.shape), ref, **TOL[dtype])
    if momentum:
        # the stored momentum is the dampened running average
        for p, (_, u) in zip(model.parameters(), sorted(state.items())):
            np.testing.assert_allclose(opt.u[p].numpy().reshape(u.shape), u, **TOL[dtype])
            assert opt.u[p].is_leaf() and not opt.u[p].requires_grad  # state holds no graph


def test_sgd_first_momentum_step_is_dampened():
    """u starts at 0, so the first step moves by lr * (1 - momentum) * grad (unlike PyTorch)."""
    p = nn.Parameter(ndl.Tensor(np.array([1.0, -2.0]), dtype="float64"))
    p.grad = ndl.Tensor(np.array([0.5, 4.0]), dtype="float64")
    optim.SGD([p], lr=0.1, momentum=0.9).step()
    np.testing.assert_allclose(p.numpy(), np.array([1.0, -2.0]) - 0.1 * 0.1 * np.array([0.5, 4.0]), rtol=1e-12)


def test_plain_sgd_matches_torch():
    model = make_model()
    params_t = [torch.tensor(p.numpy().reshape(-1) if i % 2 else p.numpy(), requires_grad=True)
                for i, p in enumerate(model.parameters())]
    opt = optim.SGD(model.parameters(), lr=0.05, weight_decay=0.02)
    opt_t = torch.optim.SGD(params_t, lr=0.05, weight_decay=0.02)
    for _ in range(4):
        run_needle_step(model, opt, "float64")
        opt_t.zero_grad()
        torch_loss(params_t).backward()
        opt_t.step()
        for p, t in zip(model.parameters(), params_t):
            np.testing.assert_allclose(p.numpy().reshape(t.shape), t.detach().numpy(), **TOL["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_numpy_formula(dtype, wd):
    model = make_model(dtype)
    kw = dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-6)
    opt = optim.Adam(model.parameters(), weight_decay=wd, **kw)
    assert opt.t == 0
    params = [p.numpy().astype(np.float64) for p in model.parameters()]
    params = [params[0], params[1].reshape(-1), params[2], params[3].reshape(-1)]
    state = {}
    for t in range(1, 6):
        run_needle_step(model, opt, dtype)
        assert opt.t == t
        params = np_adam(params, torch_grads(params), state, t, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], wd)
        for p, ref in zip(model.parameters(), params):
            assert p.dtype == dtype and p.is_leaf() and p.requires_grad
            np.testing.assert_allclose(p.numpy().reshape(ref.shape), ref, **TOL[dtype])
    # stored moments are the uncorrected ones
    for i, p in enumerate(model.parameters()):
        np.testing.assert_allclose(opt.m[p].numpy().reshape(-1), state[("m", i)].reshape(-1), **TOL[dtype])
        np.testing.assert_allclose(opt.v[p].numpy().reshape(-1), state[("v", i)].reshape(-1), **TOL[dtype])
        assert opt.m[p].is_leaf() and opt.v[p].is_leaf() and not opt.m[p].requires_grad


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_matches_torch(wd):
    model = make_model()
    params_t = [torch.tensor(p.numpy().reshape(-1) if i % 2 else p.numpy(), requires_grad=True)
                for i, p in enumerate(model.parameters())]
    opt = optim.Adam(model.parameters(), lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd)
    opt_t = torch.optim.Adam(params_t, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    for _ in range(6):
        run_needle_step(model, opt, "float64")
        opt_t.zero_grad()
        torch_loss(params_t).backward()
        opt_t.step()
        for p, t in zip(model.parameters(), params_t):
            np.testing.assert_allclose(p.numpy().reshape(t.shape), t.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_reset_grad_clears_every_gradient():
    model = make_model()
    opt = optim.Adam(model.parameters())
    needle_loss(model).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.reset_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("opt_cls, kw", [(optim.SGD, dict(momentum=0.9, weight_decay=0.1)),
                                         (optim.Adam, dict(weight_decay=0.1))], ids=["sgd", "adam"])
def test_step_never_mutates_the_gradient(opt_cls, kw):
    model = make_model("float32")
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    for _ in range(2):
        opt.reset_grad()
        needle_loss(model, "float32").backward()
        grads = [p.grad for p in model.parameters()]
        arrays = [g.realize_cached_data() for g in grads]
        before = [g.numpy().copy() for g in grads]
        opt.step()
        for p, g, a, b in zip(model.parameters(), grads, arrays, before):
            assert p.grad is g
            np.testing.assert_array_equal(g.numpy(), b)
            np.testing.assert_array_equal(a.numpy(), b)  # the array itself was not written to


@pytest.mark.parametrize("opt_cls, kw", [(optim.SGD, dict(momentum=0.9)), (optim.Adam, {})], ids=["sgd", "adam"])
def test_parameters_without_grad_are_skipped(opt_cls, kw):
    model = make_model()
    unused = nn.Parameter(ndl.Tensor(np.array([1.0, 2.0]), dtype="float64"))
    opt = opt_cls(model.parameters() + [unused], lr=0.1, weight_decay=0.1, **kw)
    for _ in range(2):
        run_needle_step(model, opt, "float64")
    assert unused.grad is None
    np.testing.assert_array_equal(unused.numpy(), [1.0, 2.0])
    state = opt.u if opt_cls is optim.SGD else opt.m
    assert unused not in state


@pytest.mark.parametrize("max_norm", [0.05, 1e3], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("opt_cls", [optim.SGD, optim.Adam], ids=["sgd", "adam"])
def test_clip_grad_norm_matches_torch(max_norm, opt_cls):
    grads = [data(3, 4, seed=3), data(4, seed=4), data(2, 2, seed=5)]
    params = [nn.Parameter(ndl.Tensor(np.zeros(g.shape), dtype="float64")) for g in grads]
    for p, g in zip(params, grads):
        p.grad = ndl.Tensor(g, dtype="float64", requires_grad=False)
    params_t = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(params_t, grads):
        t.grad = torch.tensor(g)
    total = opt_cls(params).clip_grad_norm(max_norm)
    total_t = torch.nn.utils.clip_grad_norm_(params_t, max_norm)
    np.testing.assert_allclose(float(total), total_t.item(), rtol=1e-12)
    for p, t in zip(params, params_t):
        assert p.grad.dtype == "float64"
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-15)
    if max_norm > 1:
        for p, g in zip(params, grads):
            np.testing.assert_array_equal(p.grad.numpy(), g)
    else:
        norm = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in params))
        assert norm <= max_norm


def test_clip_grad_norm_does_not_mutate_the_old_gradient_array():
    p = nn.Parameter(ndl.Tensor(np.zeros(3), dtype="float32"))
    g = ndl.Tensor(np.array([3.0, 4.0, 0.0]), dtype="float32", requires_grad=False)
    p.grad = g
    optim.SGD([p]).clip_grad_norm(1.0)
    np.testing.assert_array_equal(g.numpy(), [3.0, 4.0, 0.0])
    np.testing.assert_allclose(p.grad.numpy(), np.array([3.0, 4.0, 0.0]) / (5 + 1e-6), rtol=1e-6)


def _train_steps(model, opt, X, y, n):
    loss_fn = nn.SoftmaxLoss()
    for _ in range(n):
        opt.reset_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("opt_cls, kw", [(optim.Adam, dict(lr=0.01, weight_decay=0.001)),
                                         (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.001))],
                         ids=["adam", "sgd"])
def test_tensor_count_stays_flat_over_training(opt_cls, kw):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    opt = opt_cls(model.parameters(), **kw)
    X = ndl.Tensor(data(20, 10, seed=6), dtype="float32", requires_grad=False)
    y = ndl.Tensor(np.random.default_rng(7).integers(0, 3, size=20).astype(np.float32), requires_grad=False)
    _train_steps(model, opt, X, y, 3)
    gc.collect()
    start = ndl.autograd.TENSOR_COUNTER
    _train_steps(model, opt, X, y, 25)
    gc.collect()
    assert ndl.autograd.TENSOR_COUNTER == start
    # what stays alive is parameters, gradients, optimizer state and statistics: no graph
    assert start < 1000
