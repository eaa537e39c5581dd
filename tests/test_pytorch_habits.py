"""PyTorch habits beside the course API: dim=/keepdim=, Tensor.size()/.to()/..., Module.to,
torch-style factories, AdamW and the learning-rate schedulers -- each checked against PyTorch."""
import math

import numpy as np
import pytest
import torch

import needle as ndl
from needle import nn, optim
from needle.optim import lr_scheduler


def pair(shape=(3, 4, 5), seed=0):
    a = np.random.RandomState(seed).randn(*shape)
    return ndl.Tensor(a, dtype="float64"), torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("name", ["sum", "mean"])
@pytest.mark.parametrize("dim, keepdim", [(1, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_and_mean_take_dim_and_keepdim(name, dim, keepdim):
    x, t = pair()
    out = getattr(x, name)(dim=dim, keepdim=keepdim)
    ref = getattr(t, name)(dim=dim, keepdim=keepdim)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12)
    w = np.random.RandomState(1).randn(*ref.shape)
    (out * ndl.Tensor(w, dtype="float64")).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    with pytest.raises(TypeError, match="not both"):
        getattr(x, name)(1, dim=1)


@pytest.mark.parametrize("keepdim", [False, True])
def test_max_with_dim_returns_values_and_indices_like_torch(keepdim):
    a = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    x, t = ndl.Tensor(a, dtype="float64"), torch.tensor(a, requires_grad=True)
    out = x.max(dim=1, keepdim=keepdim)
    ref = t.max(dim=1, keepdim=keepdim)
    values, indices = out
    np.testing.assert_array_equal(out.values.numpy(), ref.values.detach().numpy())
    np.testing.assert_array_equal(indices.numpy(), ref.indices.numpy())
    assert indices.dtype == "int64"
    values.sum().backward()
    ref.values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    np.testing.assert_array_equal(x.max().numpy(), t.max().detach().numpy())  # the course's form


def test_argmax_logsumexp_softmax_with_dim():
    x, t = pair()
    np.testing.assert_array_equal(x.argmax(dim=2, keepdim=True).numpy(), t.argmax(dim=2, keepdim=True).numpy())
    np.testing.assert_allclose(x.logsumexp(1, keepdim=True).numpy(), t.logsumexp(1, keepdim=True).detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(x.logsumexp((0, 2)).numpy(), t.logsumexp((0, 2)).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.softmax(1).numpy(), t.softmax(1).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.log_softmax(-1).numpy(), t.log_softmax(-1).detach().numpy(), rtol=1e-12)


def test_sizes_casts_and_devices():
    x, t = pair()
    assert x.size() == tuple(t.size()) and x.size(1) == t.size(1) == 4 and x.size(-1) == 5
    assert x.dim() == t.dim() == 3 and x.numel() == t.numel() == 60
    with pytest.raises(IndexError, match="dim 3"):
        x.size(3)
    assert x.float().dtype == "float32" and x.double().dtype == "float64"
    long = x.long()
    assert long.dtype == "int64" and not long.requires_grad
    np.testing.assert_array_equal(long.numpy(), t.long().numpy())  # truncation toward zero
    assert (x > 0).long().sum().item() == int((t > 0).sum())
    moved = x.to(ndl.cpu_numpy())
    assert moved.device == ndl.cpu_numpy() and moved.requires_grad and moved.is_leaf()
    assert x.to("cpu") is x and x.to("float64") is x
    both = x.to("cpu_numpy", "float32")
    assert both.device == ndl.cpu_numpy() and both.dtype == "float32"
    m = ndl.Tensor(np.ones((2, 3)))
    assert m.t().shape == (3, 2) and ndl.Tensor(np.ones(3)).t().shape == (3,)
    leaf = ndl.Tensor(np.ones(2), requires_grad=False)
    assert leaf.requires_grad_() is leaf and leaf.requires_grad
    # a cast stays differentiable: its gradient comes back in the input's dtype
    y = x.float()
    (y * 2).sum().backward()
    assert x.grad.dtype == "float64"
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 4, 5), 2.0))


def test_module_to_and_zero_grad():
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    params = model.parameters()
    assert model.to(ndl.cpu_numpy()) is model
    assert all(p is q for p, q in zip(params, model.parameters()))  # the optimizer's parameters still
    assert all(t.device == ndl.cpu_numpy() for t in model.state_dict().values())
    model.to("float64")
    assert all(t.dtype == "float64" for t in model.state_dict().values())
    x = ndl.Tensor(np.random.randn(5, 3), dtype="float64", device=ndl.cpu_numpy())
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model(x).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_named_buffers_and_named_tensors():
    """named_buffers()/buffers(): the tensors that are not Parameters, a shared one once (PyTorch's
    default); named_tensors(): parameters and buffers, every name, the state dict's entries."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(2)
            self.alias = self.norm.running_mean  # the same tensor under a second name

    model = nn.Sequential(nn.Linear(3, 2), Tied())
    bn = model.modules[1].norm
    names = [name for name, _ in model.named_buffers()]
    assert names == ["1.norm.running_mean", "1.norm.running_var"]
    buffers = model.buffers()
    assert len(buffers) == 2 and buffers[0] is bn.running_mean and buffers[1] is bn.running_var
    everything = model.named_buffers(remove_duplicate=False)
    assert [name for name, _ in everything] == names + ["1.alias"] and everything[2][1] is bn.running_mean
    assert not any(isinstance(t, nn.Parameter) for t in model.buffers())

    tensors = model.named_tensors()
    assert [name for name, _ in tensors] == list(model.state_dict())
    assert [name for name, _ in tensors] == ["0.weight", "0.bias", "1.norm.weight",
                                             "1.norm.bias", "1.norm.running_mean",
                                             "1.norm.running_var", "1.alias"]
    by_name = dict(tensors)
    assert by_name["0.weight"] is model.modules[0].weight and by_name["1.alias"] is bn.running_mean


def test_torch_style_factories_infer_dtypes_like_torch():
    for data in ([1, 2], [1.5, 2], [True, False], [[1, 2], [3, 4]], np.zeros(2), np.zeros(2, np.float32),
                 np.arange(3)):
        expected = str(torch.tensor(data).dtype).split(".")[1]
        t = ndl.tensor(data)
        assert t.dtype == expected and not t.requires_grad, data
        np.testing.assert_array_equal(t.numpy(), torch.tensor(data).numpy())
    for args in [(5,), (2, 7), (0.0, 1.0, 0.25), (1, 10, 3)]:
        np.testing.assert_allclose(ndl.arange(*args).numpy(), torch.arange(*args).numpy())
        assert ndl.arange(*args).dtype == str(torch.arange(*args).dtype).split(".")[1]
    assert ndl.zeros(2, 3).shape == (2, 3) and ndl.ones(4).numpy().tolist() == [1, 1, 1, 1]
    ndl.manual_seed(123)
    a = ndl.randn(2, 3)
    ndl.manual_seed(123)
    b = ndl.randn((2, 3))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == (2, 3) and a.dtype == "float32" and not a.requires_grad


def _torch_and_needle_params(seed=0):
    rng = np.random.RandomState(seed)
    shapes = [(4, 3), (3,), (2, 2)]
    values = [rng.randn(*s) for s in shapes]
    ours = [nn.Parameter(ndl.Tensor(v, dtype="float64")) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    return ours, theirs, rng


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adamw_matches_torch_over_twenty_steps(weight_decay):
    ours, theirs, rng = _torch_and_needle_params()
    opt = optim.AdamW(ours, lr=0.01, betas=(0.8, 0.95), eps=1e-7, weight_decay=weight_decay)
    ref = torch.optim.AdamW(theirs, lr=0.01, betas=(0.8, 0.95), eps=1e-7, weight_decay=weight_decay)
    for _ in range(20):
        grads = [rng.randn(*p.shape) for p in ours]
        for p, t, g in zip(ours, theirs, grads):
            p.grad = ndl.Tensor(g, dtype="float64", requires_grad=False)
            t.grad = torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-10)


def test_adamw_in_a_compiled_step_follows_the_learning_rate():
    def run(compiled):
        np.random.seed(0)
        model = nn.Linear(3, 2)
        opt = optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)

        def step(x):
            opt.reset_grad()
            loss = (model(x) ** 2).sum()
            loss.backward()
            opt.step()
            return loss

        step = ndl.compile(step) if compiled else step
        x = ndl.Tensor(np.ones((4, 3)), requires_grad=False)
        for i in range(6):
            opt.lr = 0.05 / (i + 1)
            step(x)
        return [p.numpy() for p in model.parameters()]

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


SCHEDULERS = {
    "step": (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "exponential": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    "lambda": (lambda o: lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
               lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e))),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_follow_torchs_step_semantics(name):
    ours, theirs, _ = _torch_and_needle_params()
    opt, ref = optim.SGD(ours, lr=0.2), torch.optim.SGD(theirs, lr=0.2)
    sched, ref_sched = SCHEDULERS[name][0](opt), SCHEDULERS[name][1](ref)
    seen, expected = [], []
    for _ in range(12):
        seen.append(opt.lr)
        expected.append(ref.param_groups[0]["lr"])
        assert sched.get_last_lr() == pytest.approx(ref_sched.get_last_lr(), rel=1e-12)
        sched.step()
        ref_sched.step()
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    state = sched.state_dict()
    fresh = SCHEDULERS[name][0](optim.SGD(ours, lr=0.2))
    fresh.load_state_dict(state)
    assert fresh.optimizer.lr == opt.lr and fresh.last_epoch == 12


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.1), r"SGD: lr must be >= 0, got -0.1"),
    (lambda p: optim.SGD(p, lr=float("nan")), "lr"),
    (lambda p: optim.SGD(p, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda p: optim.SGD(p, weight_decay=-1), "weight_decay must be >= 0"),
    (lambda p: optim.Adam(p, lr=-1e-3), "Adam: lr"),
    (lambda p: optim.Adam(p, beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (lambda p: optim.Adam(p, beta2=-0.1), "beta2"),
    (lambda p: optim.Adam(p, weight_decay=-0.01), "weight_decay"),
    (lambda p: optim.AdamW(p, betas=(0.9, 1.5)), "beta2"),
    (lambda p: optim.AdamW(p, weight_decay=-0.01), "AdamW: weight_decay"),
])
def test_optimizers_refuse_nonsense(make, message):
    params = [nn.Parameter(ndl.Tensor(np.ones(2)))]
    with pytest.raises(ValueError, match=message):
        make(params)


def test_a_negative_learning_rate_set_later_is_refused():
    opt = optim.SGD([nn.Parameter(ndl.Tensor(np.ones(2)))], lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -1
    assert opt.lr == 0.1
    assert math.isclose(opt.lr, 0.1)
