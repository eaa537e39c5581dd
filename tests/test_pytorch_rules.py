"""PyTorch habits that must not silently do something else in needle: optimizer parameter groups
and state dicts that carry their hyperparameters (a resumed custom loop continues exactly),
gradient accumulation as an explicit opt-in, and DistributedDataParallel averaging during
backward. Values are checked against PyTorch (float64, so the comparison does not depend on
the CPU's float32 kernels) or against an uninterrupted run."""
import numpy as np
import pytest
import torch

import needle as ndl
from mlp_twins import data, make_pair, needle_loss, torch_loss
from needle import nn, optim
from needle.distributed import DistributedDataParallel
from needle.optim import lr_scheduler


def assert_twins(model, twin, rtol=1e-10):
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.numpy().reshape(-1), (q.detach().numpy().T if q.ndim == 2 else
                                                           q.detach().numpy()).reshape(-1), rtol=rtol, atol=1e-13)


def groups_of(model):
    """nanoGPT's split: decay the matrices, not the biases."""
    params = model.parameters()
    return [p for p in params if p.ndim == 2 and p.shape[0] > 1], [p for p in params if p.shape[0] == 1]


# --- parameter groups ------------------------------------------------------------------------------

def test_adam_parameter_groups_match_torch():
    model, twin = make_pair()
    decay, plain = groups_of(model)
    t_decay = [twin[0].weight, twin[2].weight]
    t_plain = [twin[0].bias, twin[2].bias]
    opt = optim.Adam([{"params": decay, "weight_decay": 0.1}, {"params": plain, "lr": 0.05}], lr=0.01)
    opt_t = torch.optim.Adam([{"params": t_decay, "weight_decay": 0.1}, {"params": t_plain, "lr": 0.05}], lr=0.01)
    for i in range(5):
        x, y = data(i)
        opt.reset_grad()
        needle_loss(model, x, y).backward()
        opt.step()
        opt_t.zero_grad()
        torch_loss(twin, x, y).backward()
        opt_t.step()
    assert_twins(model, twin)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_adamw_groups_decay_only_where_asked_like_torch():
    model, twin = make_pair()
    decay, plain = groups_of(model)
    opt = optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}], lr=0.01)
    opt_t = torch.optim.AdamW([{"params": [twin[0].weight, twin[2].weight], "weight_decay": 0.1},
                               {"params": [twin[0].bias, twin[2].bias], "weight_decay": 0.0}], lr=0.01)
    for i in range(5):
        x, y = data(i)
        opt.reset_grad()
        needle_loss(model, x, y).backward()
        opt.step()
        opt_t.zero_grad()
        torch_loss(twin, x, y).backward()
        opt_t.step()
    assert_twins(model, twin)


def test_a_scheduler_scales_every_group_from_its_own_base_rate_like_torch():
    model, twin = make_pair()
    decay, plain = groups_of(model)
    opt = optim.SGD([{"params": decay}, {"params": plain, "lr": 0.5}], lr=0.1)
    opt_t = torch.optim.SGD([{"params": [twin[0].weight]}, {"params": [twin[0].bias], "lr": 0.5}], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    sched_t = torch.optim.lr_scheduler.StepLR(opt_t, step_size=2, gamma=0.5)
    for _ in range(5):
        opt_t.step()
        sched.step()
        sched_t.step()
        assert sched.get_last_lr() == pytest.approx(sched_t.get_last_lr(), rel=1e-15)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in opt_t.param_groups])


def test_the_course_attributes_read_and_set_every_group():
    model, _ = make_pair()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.1, 0.9, 0.01)
    opt.momentum = 0.5
    assert opt.param_groups[0]["momentum"] == 0.5
    decay, plain = groups_of(model)
    two = optim.Adam([{"params": decay}, {"params": plain, "lr": 0.5}], lr=0.1)
    with pytest.raises(AttributeError, match="different values"):
        _ = two.lr
    two.lr = 0.2
    assert [g["lr"] for g in two.param_groups] == [0.2, 0.2] and two.lr == 0.2
    two.beta1 = 0.8
    assert [g["betas"] for g in two.param_groups] == [(0.8, 0.999), (0.8, 0.999)]


@pytest.mark.parametrize("make, message", [
    (lambda m: optim.SGD([{"params": m.parameters()}, {"params": m.parameters()[:1]}]), "more than one parameter group"),
    (lambda m: optim.SGD([{"lr": 0.1}]), "has no 'params'"),
    (lambda m: optim.SGD([{"params": m.parameters(), "momentum": 1.5}]), r"momentum must be in \[0, 1\)"),
    (lambda m: optim.SGD([m.parameters()[0], {"params": m.parameters()[1:]}]), "mixes Tensors and"),
    (lambda m: optim.Adam(m.parameters()[0]), "got a Tensor"),
])
def test_bad_parameter_groups_are_refused(make, message):
    model, _ = make_pair()
    with pytest.raises((ValueError, TypeError), match=message):
        make(model)


def test_setting_a_group_hyperparameter_out_of_range_is_refused():
    model, _ = make_pair()
    opt = optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"Adam: beta2 must be in \[0, 1\), got 1.5"):
        opt.param_groups[0]["betas"] = (0.9, 1.5)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.param_groups[0]["lr"] = -1.0
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.lr == 0.01


# --- state dicts carry the hyperparameters ------------------------------------------------------------

@pytest.mark.parametrize("make, other", [
    (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01), lambda ps: optim.SGD(ps)),
    (lambda ps: optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01), lambda ps: optim.Adam(ps)),
    (lambda ps: optim.AdamW(ps, lr=0.02, weight_decay=0.2), lambda ps: optim.AdamW(ps)),
], ids=["SGD", "Adam", "AdamW"])
def test_a_custom_loop_resumed_from_a_state_dict_continues_exactly(make, other):
    def steps(model, opt, seeds):
        for i in seeds:
            x, y = data(i)
            opt.reset_grad()
            needle_loss(model, x, y).backward()
            opt.step()

    model, _ = make_pair()
    opt = make(model.parameters())
    steps(model, opt, range(3))
    # the model's state_dict shares its memory (PyTorch's rule, where this would be copy.deepcopy): copies
    model_state, opt_state = {k: v.numpy() for k, v in model.state_dict().items()}, opt.state_dict()
    steps(model, opt, range(3, 6))
    # a new process: the optimizer built with other hyperparameters, then everything loaded
    resumed, _ = make_pair(seed=1)
    resumed_opt = other(resumed.parameters())
    resumed.load_state_dict(model_state)
    resumed_opt.load_state_dict(opt_state)
    assert resumed_opt.param_groups[0].hyperparameters() == opt.param_groups[0].hyperparameters()
    steps(resumed, resumed_opt, range(3, 6))
    for p, q in zip(model.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_a_state_dict_has_torchs_layout_and_names_for_the_hyperparameters():
    model, twin = make_pair()
    opt = optim.Adam(model.parameters(), lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    opt_t = torch.optim.Adam(twin.parameters(), lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    for o, loss in ((opt, lambda: needle_loss(model, *data(0))), (opt_t, lambda: torch_loss(twin, *data(0)))):
        loss().backward()
        o.step()
    ours, theirs = opt.state_dict(), opt_t.state_dict()
    assert set(ours) >= {"state", "param_groups"}
    assert sorted(ours["state"]) == sorted(theirs["state"])
    (group,), (group_t,) = ours["param_groups"], theirs["param_groups"]
    assert group["params"] == group_t["params"]
    for key, value in group.items():
        assert group_t[key] == value, key  # every hyperparameter we store is torch's, by name and value


def test_loading_a_state_dict_for_other_parameters_is_refused_before_any_change():
    model, _ = make_pair()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.reset_grad()
    needle_loss(model, *data(0)).backward()
    opt.step()
    state = opt.state_dict()
    small = optim.SGD(model.parameters()[:2], lr=0.3)
    with pytest.raises(ValueError, match="parameter group 0 has 4 parameters in the state, 2 here"):
        small.load_state_dict(state)
    state["state"][0]["u"] = ndl.Tensor(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"state 'u' of parameter 0 has shape \(2, 2\)"):
        opt.load_state_dict(state)
    assert opt.lr == 0.1 and small.lr == 0.3


def test_the_flat_state_dict_of_older_checkpoints_still_loads():
    model, _ = make_pair()
    opt = optim.Adam(model.parameters())
    old = {f"{name}.{i}": ndl.Tensor(np.full(p.shape, 0.5), dtype="float64")
           for name in ("m", "v") for i, p in enumerate(model.parameters())}
    old["t"] = 4
    opt.load_state_dict(old)
    assert opt.t == 4 and float(opt.m[model.parameters()[1]].numpy().ravel()[0]) == 0.5


# --- gradient accumulation, as an explicit opt-in ------------------------------------------------------

def test_backward_overwrites_by_default_and_accumulates_on_request_like_torch():
    model, twin = make_pair()
    micro = [data(i) for i in range(3)]
    for x, y in micro:
        needle_loss(model, x, y).backward(accumulate=True)
        torch_loss(twin, x, y).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        expected = q.grad.numpy().T if q.ndim == 2 else q.grad.numpy()
        np.testing.assert_allclose(p.grad.numpy().reshape(-1), expected.reshape(-1), rtol=1e-12)
    grad = model.parameters()[0].grad
    needle_loss(model, *micro[0]).backward(accumulate=True)
    assert model.parameters()[0].grad is grad  # added in place, into the buffer the leaf owns
    needle_loss(model, *micro[0]).backward()  # the course's rule: overwrite
    twin.zero_grad()
    torch_loss(twin, *micro[0]).backward()
    np.testing.assert_allclose(model.parameters()[0].grad.numpy(), twin[0].weight.grad.numpy().T, rtol=1e-12)


def test_accumulating_into_a_gradient_shared_by_two_leaves_leaves_the_other_alone():
    a = ndl.Tensor(np.ones(3), dtype="float64")
    b = ndl.Tensor(np.ones(3), dtype="float64")
    (a + b).sum().backward()  # both get the same gradient tensor
    (a * 3).sum().backward(accumulate=True)
    np.testing.assert_array_equal(a.grad.numpy(), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0, 1.0])


def test_accumulation_over_micro_batches_inside_a_compiled_step_equals_eager():
    models = [make_pair()[0] for _ in range(2)]
    opts = [optim.SGD(m.parameters(), lr=0.1) for m in models]
    micro = [tuple(ndl.Tensor(a, dtype="float64", requires_grad=False) for a in data(i)) for i in range(3)]

    def make_step(model, opt):
        def step(x0, y0, x1, y1, x2, y2):
            opt.reset_grad()
            for x, y in ((x0, y0), (x1, y1), (x2, y2)):
                (((model(x) - y) ** 2).sum() / 6).backward(accumulate=True)
            opt.step()
            return model.parameters()[0] * 1.0
        return step

    compiled, eager = ndl.compile(make_step(models[0], opts[0])), make_step(models[1], opts[1])
    args = [t for pair in micro for t in pair]
    for _ in range(4):
        np.testing.assert_array_equal(compiled(*args).numpy(), eager(*args).numpy())


# --- DistributedDataParallel averages during backward ---------------------------------------------------

class TwoRanks:
    """Rank 0 of two; the other rank's gradients are 3 times this rank's. Counts allreduces."""
    rank, size = 0, 2

    def __init__(self):
        self.allreduced = 0

    def allreduce_sum_(self, buffer):
        self.allreduced += 1
        buffer *= 4.0

    def broadcast_(self, buffer, root=0):
        pass


def ddp_and_local_grads():
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    comm = TwoRanks()
    ddp = DistributedDataParallel(model, comm=comm)
    x = ndl.Tensor(np.random.randn(3, 4).astype(np.float32), requires_grad=False)
    with ddp.no_sync():
        (ddp(x) ** 2).sum().backward()
    local = [p.grad.numpy() for p in model.parameters()]
    return model, ddp, comm, x, local


def test_ddp_backward_averages_without_a_call_and_an_extra_sync_changes_nothing():
    model, ddp, comm, x, local = ddp_and_local_grads()
    assert comm.allreduced == 0  # inside no_sync: this rank's own gradients
    (ddp(x) ** 2).sum().backward()
    assert comm.allreduced == 1
    for g, p in zip(local, model.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), g * 2)  # the mean of g and 3 g
    ddp.sync_gradients()  # already averaged: nothing happens
    assert comm.allreduced == 1
    for g, p in zip(local, model.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), g * 2)


def test_ddp_no_sync_accumulates_locally_and_the_next_backward_averages_the_sum():
    model, ddp, comm, x, local = ddp_and_local_grads()
    (ddp(x) ** 2).sum().backward(accumulate=True)  # outside no_sync: averages what was accumulated
    assert comm.allreduced == 1
    for g, p in zip(local, model.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), g * 2 * 2, rtol=1e-6)


def test_ddp_sync_after_grads_set_by_hand_averages_them():
    model, ddp, comm, x, local = ddp_and_local_grads()
    for p in model.parameters():
        p.grad = ndl.Tensor(np.ones(p.shape, np.float32), requires_grad=False)
    ddp.sync_gradients()
    assert comm.allreduced == 1
    for p in model.parameters():
        np.testing.assert_array_equal(p.grad.numpy(), np.full(p.shape, 2.0, np.float32))


# --- SGD: the course's momentum, and PyTorch's as an opt-in -------------------------------------------

@pytest.mark.parametrize("momentum, dampening, nesterov, wd", [
    (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 0.01), (0.8, 0.0, True, 0.01), (0.0, 0.0, False, 0.1)])
def test_sgd_with_dampening_follows_torchs_rule(momentum, dampening, nesterov, wd):
    model, twin = make_pair()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=momentum, weight_decay=wd, dampening=dampening,
                    nesterov=nesterov)
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=momentum, weight_decay=wd, dampening=dampening,
                            nesterov=nesterov)
    for i in range(5):
        x, y = data(i)
        opt.reset_grad()
        needle_loss(model, x, y).backward()
        opt.step()
        opt_t.zero_grad()
        torch_loss(twin, x, y).backward()
        opt_t.step()
    assert_twins(model, twin)


def test_sgd_default_is_the_courses_moving_average_not_torchs():
    model, twin = make_pair()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_t = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    first = model.parameters()[0].numpy().copy()
    x, y = data(0)
    needle_loss(model, x, y).backward()
    grad = model.parameters()[0].grad.numpy()
    opt.step()
    np.testing.assert_allclose(model.parameters()[0].numpy(), first - 0.05 * 0.1 * grad, rtol=1e-12)  # (1 - m) g
    torch_loss(twin, x, y).backward()
    opt_t.step()
    assert not np.allclose(model.parameters()[0].numpy(), twin[0].weight.detach().numpy().T)


def test_nesterov_without_torchs_dampening_is_refused():
    model, _ = make_pair()
    with pytest.raises(ValueError, match="nesterov needs a momentum and zero dampening"):
        optim.SGD(model.parameters(), momentum=0.9, dampening=0.5, nesterov=True)
    with pytest.raises(ValueError, match="nesterov needs a momentum"):
        optim.SGD(model.parameters(), nesterov=True)


def test_ddp_state_dict_holds_the_model_only_after_a_sync():
    model, ddp, comm, x, local = ddp_and_local_grads()
    (ddp(x) ** 2).sum().backward()
    assert sorted(ddp.state_dict()) == sorted("module." + k for k in model.state_dict())
