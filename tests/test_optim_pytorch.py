"""RMSprop, Adagrad and Adadelta against torch.optim, and PyTorch's zero_grad(set_to_none=...).

Every comparison runs a float64 needle model and its PyTorch twin (the same weights) for
several steps with two parameter groups (weights decayed, biases at another learning rate)
and checks the parameters and the optimizer state after every step, so the comparison does
not depend on the CPU's float32 kernels. The compiled step is checked in
tests/test_compile_guards.py (hyperparameters changed between replays).
"""
import numpy as np
import pytest
import torch

import needle as ndl
from mlp_twins import as_torch, make_pair, needle_loss, torch_loss
from mlp_twins import data as batch
from needle import nn, optim

torch.set_num_threads(1)


def groups(params, group_kw):
    """Weights in group 0 (with group_kw), biases in group 1 (the optimizer's defaults)."""
    weights, biases = params[0::2], params[1::2]
    return [dict(params=weights, **group_kw), dict(params=biases)]


def assert_close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=what)


def check_twins(model, twin, opt, opt_t):
    for i, (p, q) in enumerate(zip(model.parameters(), twin.parameters())):
        assert_close(as_torch(p.numpy(), q), q.detach().numpy(), f"parameter {i}")
    params_t = [q for group in opt_t.param_groups for q in group["params"]]  # state_dict's numbering
    for i, q in enumerate(params_t):
        mine = opt.state_dict()["state"].get(i, {})
        theirs = {k: v for k, v in opt_t.state[q].items() if k != "step"}
        assert sorted(mine) == sorted(theirs), i  # PyTorch's state names, the same entries
        for name, value in theirs.items():
            assert_close(as_torch(mine[name].numpy(), q), value.numpy(), f"state {name!r} of parameter {i}")


def train_both(model, twin, opt, opt_t, steps, start=0):
    for i in range(start, start + steps):
        x, y = batch(i)
        opt.zero_grad()
        needle_loss(model, x, y).backward()
        opt.step()
        opt_t.zero_grad()
        torch_loss(twin, x, y).backward()
        opt_t.step()
        check_twins(model, twin, opt, opt_t)


CASES = [
    ("RMSprop", {}, {}),
    ("RMSprop", dict(lr=0.02, alpha=0.9, eps=1e-6, momentum=0.8), dict(weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True), dict(weight_decay=0.05, lr=0.03)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.02), dict(alpha=0.8)),
    ("Adagrad", {}, {}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-8), dict(weight_decay=0.02)),
    ("Adadelta", {}, {}),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5), dict(weight_decay=0.03, rho=0.95)),
]
IDS = ["rmsprop", "rmsprop-momentum", "rmsprop-centered", "rmsprop-centered-momentum", "adagrad",
       "adagrad-decay", "adadelta", "adadelta-groups"]


@pytest.mark.parametrize("name, kw, group_kw", CASES, ids=IDS)
def test_matches_torch_over_several_steps_with_parameter_groups(name, kw, group_kw):
    model, twin = make_pair()
    opt = getattr(optim, name)(groups(model.parameters(), group_kw), **kw)
    opt_t = getattr(torch.optim, name)(groups(list(twin.parameters()), group_kw), **kw)
    train_both(model, twin, opt, opt_t, 6)
    for group, group_t in zip(opt.state_dict()["param_groups"], opt_t.state_dict()["param_groups"]):
        for key, value in group.items():
            assert group_t[key] == value, key  # every hyperparameter we keep is torch's, by name and value


@pytest.mark.parametrize("name, kw, changes", [
    ("RMSprop", dict(momentum=0.5), dict(lr=0.05, alpha=0.8, momentum=0.9, weight_decay=0.1)),
    ("Adagrad", {}, dict(lr=0.2, lr_decay=0.1, eps=1e-3)),
    ("Adadelta", {}, dict(lr=0.3, rho=0.5, weight_decay=0.2)),
], ids=["RMSprop", "Adagrad", "Adadelta"])
def test_group_hyperparameters_changed_between_steps_follow_torch(name, kw, changes):
    model, twin = make_pair()
    opt = getattr(optim, name)(model.parameters(), **kw)
    opt_t = getattr(torch.optim, name)(twin.parameters(), **kw)
    train_both(model, twin, opt, opt_t, 2)
    for key, value in changes.items():
        opt.param_groups[0][key] = value
        opt_t.param_groups[0][key] = value
        train_both(model, twin, opt, opt_t, 2, start=10)


def test_defaults_are_torchs():
    model, twin = make_pair()
    for name in ("RMSprop", "Adagrad", "Adadelta"):
        ours = getattr(optim, name)(model.parameters()).param_groups[0].hyperparameters()
        theirs = getattr(torch.optim, name)(twin.parameters()).defaults
        assert ours == {k: theirs[k] for k in ours}, name


@pytest.mark.parametrize("make, other", [
    (lambda ps: optim.RMSprop(ps, lr=0.02, momentum=0.7, centered=True), lambda ps: optim.RMSprop(ps)),
    (lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.2), lambda ps: optim.Adagrad(ps)),
    (lambda ps: optim.Adadelta(ps, rho=0.7, weight_decay=0.01), lambda ps: optim.Adadelta(ps)),
], ids=["RMSprop", "Adagrad", "Adadelta"])
def test_a_state_dict_resumes_exactly(make, other):
    def steps(model, opt, seeds):
        for i in seeds:
            opt.zero_grad()
            needle_loss(model, *batch(i)).backward()
            opt.step()

    model, _ = make_pair()
    opt = make(model.parameters())
    steps(model, opt, range(3))
    # PyTorch's state_dict shares the parameters' memory: keep copies, as a checkpoint file does
    model_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    steps(model, opt, range(3, 6))
    resumed, _ = make_pair(seed=1)
    resumed_opt = other(resumed.parameters())  # other hyperparameters, replaced by the loaded ones
    resumed.load_state_dict(model_state)
    resumed_opt.load_state_dict(opt_state)
    assert resumed_opt.param_groups[0].hyperparameters() == opt.param_groups[0].hyperparameters()
    steps(resumed, resumed_opt, range(3, 6))
    for p, q in zip(model.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_centered_is_a_structural_term_and_alpha_a_runtime_scalar():
    model, _ = make_pair()
    opt = optim.RMSprop(model.parameters(), momentum=0.9)
    assert opt.param_groups[0].terms == {"momentum"}
    opt.centered = True
    assert opt.param_groups[0].terms == {"momentum", "centered"}
    scalar = opt.param_groups[0].scalars["one_minus_alpha"]
    opt.alpha = 0.5
    assert opt.param_groups[0].scalars["one_minus_alpha"] is scalar and scalar.value == 0.5


@pytest.mark.parametrize("make, error, message", [
    (lambda ps: optim.RMSprop(ps, alpha=1.5), ValueError, r"RMSprop: alpha must be in \[0, 1\], got 1.5"),
    (lambda ps: optim.RMSprop(ps, eps=-1.0), ValueError, "RMSprop: eps must be >= 0"),
    (lambda ps: optim.RMSprop(ps, momentum=-0.1), ValueError, r"RMSprop: momentum must be in \[0, 1\)"),
    (lambda ps: optim.RMSprop(ps, centered=1), TypeError, "RMSprop: centered must be True or False"),
    (lambda ps: optim.RMSprop(ps, lr="0.1"), TypeError, "RMSprop: lr must be a number"),
    (lambda ps: optim.Adagrad(ps, lr_decay=-0.1), ValueError, "Adagrad: lr_decay must be >= 0"),
    (lambda ps: optim.Adagrad(ps, initial_accumulator_value=-1), ValueError,
     "Adagrad: initial_accumulator_value must be >= 0"),
    (lambda ps: optim.Adadelta(ps, rho=1.1), ValueError, r"Adadelta: rho must be in \[0, 1\], got 1.1"),
    (lambda ps: optim.Adadelta(ps, weight_decay=-1e-3), ValueError, "Adadelta: weight_decay must be >= 0"),
])
def test_bad_hyperparameters_are_refused(make, error, message):
    model, _ = make_pair()
    with pytest.raises(error, match=message):
        make(model.parameters())


def test_add_param_group_works_for_optimizers_with_a_step_count():
    model, twin = make_pair()
    params, params_t = model.parameters(), list(twin.parameters())
    for name in ("Adam", "Adagrad"):
        opt = getattr(optim, name)(params[:2], lr=0.01)
        opt_t = getattr(torch.optim, name)(params_t[:2], lr=0.01)
        opt.add_param_group({"params": params[2:], "lr": 0.05})
        opt_t.add_param_group({"params": params_t[2:], "lr": 0.05})
        assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
        with pytest.raises(ValueError, match="more than one parameter group"):
            opt.add_param_group({"params": params[:1]})
        assert len(opt.param_groups) == 2 and len(opt.params) == 4
    model, twin = make_pair()
    params, params_t = model.parameters(), list(twin.parameters())
    opt, opt_t = optim.Adagrad(params[:2], lr=0.1), torch.optim.Adagrad(params_t[:2], lr=0.1)
    opt.add_param_group({"params": params[2:], "lr_decay": 0.3})
    opt_t.add_param_group({"params": params_t[2:], "lr_decay": 0.3})
    train_both(model, twin, opt, opt_t, 4)


# --- zero_grad(set_to_none=...) -----------------------------------------------------------------------

def test_zero_grad_sets_to_none_by_default_like_torch():
    model, _ = make_pair()
    opt = optim.RMSprop(model.parameters())
    needle_loss(model, *batch(0)).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match="set_to_none must be True or False"):
        opt.zero_grad(set_to_none=None)


def test_zero_grad_without_none_then_accumulating_matches_torch_in_place():
    model, twin = make_pair()
    opt = optim.SGD(model.parameters(), lr=0.1)
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.1)
    needle_loss(model, *batch(0)).backward()
    torch_loss(twin, *batch(0)).backward()
    opt.zero_grad(set_to_none=False)
    opt_t.zero_grad(set_to_none=False)
    held = [p.grad for p in model.parameters()]
    for g, q in zip(held, twin.parameters()):
        np.testing.assert_array_equal(g.numpy(), np.zeros(g.shape))
        np.testing.assert_array_equal(q.grad.numpy(), 0)
    for step in range(2):
        for i in (1, 2):  # two micro-batches accumulated
            needle_loss(model, *batch(i + 10 * step)).backward(accumulate=True)
            torch_loss(twin, *batch(i + 10 * step)).backward()
        for p, g, q in zip(model.parameters(), held, twin.parameters()):
            assert p.grad is g  # accumulated into the buffer zero_grad left
            assert_close(as_torch(g.numpy(), q), q.grad.numpy(), "accumulated gradient")
        opt.step()
        opt_t.step()
        opt.zero_grad(set_to_none=False)
        opt_t.zero_grad(set_to_none=False)
        for p, g in zip(model.parameters(), held):
            assert p.grad is g  # zeroed in place: the same tensor
            np.testing.assert_array_equal(g.numpy(), np.zeros(g.shape))
    for p, q in zip(model.parameters(), twin.parameters()):
        assert_close(as_torch(p.numpy(), q), q.detach().numpy(), "parameter")


def test_zero_grad_without_none_never_writes_memory_it_does_not_own():
    w = ndl.Tensor(np.ones(3), dtype="float64", requires_grad=True)
    out_grad = ndl.Tensor(np.full(3, 2.0), dtype="float64")
    (w + 1.0).backward(out_grad)  # w.grad may be out_grad's own buffer
    optim.SGD([w]).zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(3))
    np.testing.assert_array_equal(out_grad.numpy(), np.full(3, 2.0))


def test_zero_grad_without_none_inside_a_compiled_step_equals_eager():
    def make():
        np.random.seed(3)
        return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))

    def step(model, opt, xs, ys):
        opt.zero_grad(set_to_none=False)
        for x, y in zip(xs, ys):
            nn.SoftmaxLoss()(model(x), y).backward(accumulate=True)
        opt.step()
        return model(xs[0]).sum()

    (a, b) = make(), make()
    opts = [optim.RMSprop(m.parameters(), lr=0.01, momentum=0.9) for m in (a, b)]
    compiled = ndl.compile(lambda xs0, xs1, y0, y1: step(a, opts[0], [xs0, xs1], [y0, y1]))
    r = np.random.RandomState(0)
    for _ in range(5):
        xs = [ndl.Tensor(r.randn(3, 4).astype(np.float32)) for _ in range(2)]
        ys = [ndl.Tensor(r.randint(0, 2, 3), dtype="int64") for _ in range(2)]
        got = compiled(*xs, *ys)
        want = step(b, opts[1], xs, ys)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
