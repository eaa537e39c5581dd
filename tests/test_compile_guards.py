"""ndl.compile never replays a stale recording: each way a step's inputs from outside can change
between calls gives the eager step's result on every call, or a clear error at the call.

Most tests run two identical setups in lockstep, one compiled and one eager, make the same
change to both between calls, and require bit-identical results (the cpu device's fused
kernels give numpy's bits, so the compiled step is the eager step's exact twin).
"""
import numpy as np
import pytest

import needle as ndl
from needle import nn

# --- the model and the lockstep harness ----------------------------------------------------------

def make_model():
    """Every per-mode behaviour: BatchNorm (batch vs running statistics, which move in training)
    and Dropout (masks in training only)."""
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def twins(factory=make_model):
    """Two identical instances (same seed)."""
    made = []
    for _ in range(2):
        np.random.seed(0)
        made.append(factory())
    return made


def batch(seed=1, n=5):
    r = np.random.RandomState(seed)
    return (ndl.Tensor(r.randn(n, 6).astype(np.float32), requires_grad=False),
            ndl.Tensor(r.randint(0, 3, n), dtype="int64"))


def train_on(model, opt, x, y):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss


def same(compiled_call, eager_call, seed):
    """Run both with the same global RNG state (dropout masks); their results must be equal."""
    np.random.seed(seed)
    got = compiled_call()
    np.random.seed(seed)
    want = eager_call()
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    return got


def assert_same_state(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=name)


MODES = ["train", "train", "train", "eval", "eval", "eval", "train", "train", "eval", "train"]


def run_modes(compiled_call, eager_call, models):
    """Switch train/eval on every model between calls, as MODES says."""
    for i, mode in enumerate(MODES):
        for m in models:
            m.train() if mode == "train" else m.eval()
        same(compiled_call, eager_call, seed=100 + i)


# --- (a) train()/eval() however the step reaches the module ---------------------------------------

def step_with_model_argument(model, opt, x, y):
    return train_on(model, opt, x, y)


def test_a_model_passed_as_an_argument_follows_eval_and_train():
    (a, b), (x, y) = twins(), batch()
    opt_a, opt_b = ndl.optim.SGD(a.parameters(), lr=0.1), ndl.optim.SGD(b.parameters(), lr=0.1)
    step = ndl.compile(step_with_model_argument)
    run_modes(lambda: step(a, opt_a, x, y), lambda: step_with_model_argument(b, opt_b, x, y), [a, b])
    assert_same_state(a, b)
    assert len(step.programs) == 2  # one recording per mode, each replayed when its mode comes back


def test_a_model_in_the_closure_follows_eval_and_train():
    (a, b), (x, y) = twins(), batch()

    def make_step(model):
        opt = ndl.optim.Adam(model.parameters(), lr=0.01)
        return lambda x, y: train_on(model, opt, x, y)

    step, eager = ndl.compile(make_step(a)), make_step(b)
    run_modes(lambda: step(x, y), lambda: eager(x, y), [a, b])
    assert_same_state(a, b)


GLOBAL_A = GLOBAL_B = OPT_A = OPT_B = None


def global_step_a(x, y):
    return train_on(GLOBAL_A, OPT_A, x, y)


def global_step_b(x, y):
    return train_on(GLOBAL_B, OPT_B, x, y)


def test_a_model_in_a_global_follows_eval_and_train():
    global GLOBAL_A, GLOBAL_B, OPT_A, OPT_B
    (GLOBAL_A, GLOBAL_B), (x, y) = twins(), batch()
    OPT_A, OPT_B = (ndl.optim.SGD(m.parameters(), lr=0.1, momentum=0.5) for m in (GLOBAL_A, GLOBAL_B))
    step = ndl.compile(global_step_a)
    run_modes(lambda: step(x, y), lambda: global_step_b(x, y), [GLOBAL_A, GLOBAL_B])
    assert_same_state(GLOBAL_A, GLOBAL_B)


class Holder(nn.Module):
    """Sub-modules kept in a plain list and a dict: switched below through the inner modules only."""

    def __init__(self):
        super().__init__()
        self.blocks = [make_model()]
        self.heads = {"out": nn.Dropout(0.3)}

    def forward(self, x):
        return self.heads["out"](self.blocks[0](x))


def test_modules_in_list_and_dict_attributes_follow_eval_and_train():
    (a, b), (x, y) = twins(Holder), batch()
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y))
    inner = [a.blocks[0], b.blocks[0], a.heads["out"], b.heads["out"]]  # never through a/b themselves
    run_modes(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), inner)
    assert_same_state(a.blocks[0], b.blocks[0])


class Trainer:
    """A plain object holding the model and its optimizer; its bound method is compiled."""

    def __init__(self, model):
        self.model = model
        self.opt = ndl.optim.Adam(model.parameters(), lr=0.01)

    def step(self, x, y):
        return train_on(self.model, self.opt, x, y)


def test_a_model_reached_through_an_object_and_its_optimizer_follows_eval_and_train():
    (a, b), (x, y) = twins(), batch()
    ta, tb = Trainer(a), Trainer(b)
    step = ndl.compile(ta.step)
    run_modes(lambda: step(x, y), lambda: tb.step(x, y), [a, b])
    assert_same_state(a, b)


def test_eval_forward_under_no_grad_stops_dropout_and_running_statistics():
    (a, b), (x, _) = twins(), batch()
    forward = ndl.compile(lambda model, x: model(x))
    with ndl.no_grad():
        for _ in range(3):
            same(lambda: forward(a, x), lambda: b(x), seed=3)
        a.eval(), b.eval()
        before = a.modules[1].running_mean.numpy().copy()
        outs = [same(lambda: forward(a, x), lambda: b(x), seed=s).numpy() for s in range(3)]
    np.testing.assert_array_equal(a.modules[1].running_mean.numpy(), before)  # not moved in eval mode
    assert all(np.array_equal(o, outs[0]) for o in outs)  # no dropout in eval mode


def test_a_module_attribute_changed_after_tracing_is_followed():
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y))
    for i, p in enumerate([0.5, 0.5, 0.5, 0.1, 0.1, 0.9]):
        a.modules[3].p = b.modules[3].p = p
        same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=i)


# --- (b) Python values read from outside -------------------------------------------------------------

LOSS_WEIGHT = 1.0
SHIFT = None


def weighted_step(model, opt, x, y):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x) + SHIFT, y) * LOSS_WEIGHT
    loss.backward()
    opt.step()
    return loss


def test_an_annealed_global_loss_weight_and_a_rebound_global_tensor_are_followed():
    global LOSS_WEIGHT, SHIFT
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]
    step = ndl.compile(weighted_step)
    SHIFT = ndl.Tensor(np.zeros(3, np.float32), requires_grad=False)
    for i in range(6):
        LOSS_WEIGHT = 1.0 - 0.1 * (i // 2)  # changes every second call
        if i == 4:
            SHIFT = ndl.Tensor(np.array([1.0, -2.0, 0.5], np.float32), requires_grad=False)  # another object
        same(lambda: step(a, opts[0], x, y), lambda: weighted_step(b, opts[1], x, y), seed=i)
    assert_same_state(a, b)


def test_a_global_that_changes_every_call_hits_the_trace_limit_with_its_name():
    global LOSS_WEIGHT, SHIFT
    (a, _), (x, y) = twins(), batch()
    opt = ndl.optim.SGD(a.parameters(), lr=0.1)
    SHIFT = ndl.Tensor(np.zeros(3, np.float32), requires_grad=False)
    step = ndl.compile(weighted_step, max_traces=3)
    with pytest.raises(RuntimeError, match=r"traced 3 times \(max_traces=3\).*global 'LOSS_WEIGHT'.*HostScalar"):
        for i in range(20):
            LOSS_WEIGHT = 1.0 / (i + 1)
            step(a, opt, x, y)
    step.reset()  # an intended change: trace afresh
    step(a, opt, x, y)


HOST_WEIGHT = ndl.HostScalar(1.0)


def host_weighted_step(model, opt, x, y):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x), y) * HOST_WEIGHT
    loss.backward()
    opt.step()
    return loss


def test_a_host_scalar_weight_is_a_runtime_input_not_a_retrace():
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]
    step = ndl.compile(host_weighted_step, max_traces=1)
    for i in range(10):
        HOST_WEIGHT.value = 1.0 / (i + 1)
        same(lambda: step(a, opts[0], x, y), lambda: host_weighted_step(b, opts[1], x, y), seed=i)
    assert len(step.programs) == 1


def test_a_closure_float_changed_between_calls_is_followed():
    (a, b), (x, y) = twins(), batch()

    def make_step(model):
        opt = ndl.optim.SGD(model.parameters(), lr=0.1)
        scale = 1.0

        def step(x, y):
            opt.reset_grad()
            loss = nn.SoftmaxLoss()(model(x) * scale, y)
            loss.backward()
            opt.step()
            return loss

        def set_scale(value):
            nonlocal scale
            scale = value

        return step, set_scale

    (step_a, set_a), (step_b, set_b) = make_step(a), make_step(b)
    step = ndl.compile(step_a)
    for i, value in enumerate([1.0, 1.0, 1.0, 2.0, 2.0, 0.5, 0.5]):
        set_a(value), set_b(value)
        same(lambda: step(x, y), lambda: step_b(x, y), seed=i)


class WeightedLoss:
    """A loss object of the user's (not a Module) whose weight is set between calls."""

    def __init__(self):
        self.weight = 1.0

    def __call__(self, logits, y):
        return nn.SoftmaxLoss()(logits, y) * self.weight


def test_an_attribute_of_a_plain_user_object_is_followed():
    (a, b), (x, y) = twins(), batch()
    losses = [WeightedLoss(), WeightedLoss()]
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1) for m in (a, b)]

    def make_step(model, opt, loss_fn):
        def step(x, y):
            opt.reset_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    step, eager = ndl.compile(make_step(a, opts[0], losses[0])), make_step(b, opts[1], losses[1])
    for i, w in enumerate([1.0, 1.0, 1.0, 3.0, 3.0]):
        losses[0].weight = losses[1].weight = w
        same(lambda: step(x, y), lambda: eager(x, y), seed=i)


STEP = 0  # a loop counter at module level, named like the optimizer's method


def optimizer_step_only(model, opt, x, y):
    return train_on(model, opt, x, y)  # calls opt.step(): an attribute, not the global STEP


def test_an_attribute_named_like_a_changing_global_is_no_guard():
    global STEP
    (a, _), (x, y) = twins(), batch()
    opt = ndl.optim.SGD(a.parameters(), lr=0.1)
    step = ndl.compile(optimizer_step_only, max_traces=1)
    for STEP in range(6):  # noqa: B007  (rebinding the module-level STEP is the point)
        step(a, opt, x, y)


# --- (c) tensors built inside the step from host data ----------------------------------------------

def test_a_tensor_made_from_numpy_inside_the_step_is_a_trace_error_naming_the_line():
    (a, _), (x, _) = twins(), batch()

    def noisy(x):
        return a(x + ndl.Tensor(np.random.randn(5, 6).astype(np.float32)))

    step = ndl.compile(noisy)
    step(x)  # the eager call
    with pytest.raises(ndl.TraceError, match=r"test_compile_guards.py:\d+: return a\(x \+ ndl.Tensor\(np.random"):
        step(x)


def test_an_index_list_inside_the_step_is_a_trace_error():
    (_, _), (x, _) = twins(), batch()
    step = ndl.compile(lambda x: x[[0, 2]] * 2)
    step(x)
    with pytest.raises(ndl.TraceError, match="host data"):
        step(x)


def test_random_draws_with_needles_factories_are_drawn_on_every_replay():
    (a, b), (x, _) = twins(), batch()

    def noisy(model, x):
        return model(x + ndl.randn(5, 6))

    step = ndl.compile(noisy)
    outs = [same(lambda: step(a, x), lambda: noisy(b, x), seed=s).numpy() for s in range(4)]
    assert not np.array_equal(outs[2], outs[3])  # fresh draws on each replay


# --- (d) optimizer hyperparameters are runtime inputs -----------------------------------------------

@pytest.mark.parametrize("make, changes", [
    (lambda ps: ndl.optim.SGD(ps, lr=0.1, momentum=0.5, weight_decay=0.01),
     [("momentum", 0.9), ("weight_decay", 0.1), ("lr", 0.05)]),
    (lambda ps: ndl.optim.Adam(ps, lr=0.01, weight_decay=0.01),
     [("beta1", 0.5), ("beta2", 0.9), ("eps", 1e-3), ("weight_decay", 0.2), ("lr", 0.1)]),
    (lambda ps: ndl.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
     [("beta1", 0.8), ("eps", 1e-4), ("weight_decay", 0.3)]),
    (lambda ps: ndl.optim.RMSprop(ps, lr=0.01, momentum=0.5, weight_decay=0.01, centered=True),
     [("alpha", 0.9), ("momentum", 0.8), ("eps", 1e-3), ("weight_decay", 0.1), ("lr", 0.05)]),
    (lambda ps: ndl.optim.Adagrad(ps, lr=0.05, weight_decay=0.01),
     [("lr_decay", 0.1), ("eps", 1e-3), ("weight_decay", 0.1), ("lr", 0.2)]),
    (lambda ps: ndl.optim.Adadelta(ps, weight_decay=0.01),
     [("rho", 0.5), ("eps", 1e-3), ("weight_decay", 0.1), ("lr", 0.3)]),
], ids=["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_optimizer_hyperparameters_changed_between_calls_reach_the_replay(make, changes):
    (a, b), (x, y) = twins(), batch()
    opts = [make(a.parameters()), make(b.parameters())]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y), max_traces=1)  # no retrace needed
    for i in range(3):
        same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=i)
    for j, (name, value) in enumerate(changes):
        for opt in opts:
            setattr(opt, name, value)
        for i in range(2):
            same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=10 * j + i)
    assert_same_state(a, b)


def test_param_group_entries_set_like_pytorch_reach_the_replay():
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.Adam(m.parameters(), lr=0.01) for m in (a, b)]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y), max_traces=1)
    for i in range(6):
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = 0.01 * (i + 1)
                group["betas"] = (0.9 - 0.1 * i, 0.999)
        same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=i)


def test_turning_momentum_on_after_tracing_traces_again():
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.SGD(m.parameters(), lr=0.1, momentum=0.0) for m in (a, b)]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y))
    for i in range(6):
        if i == 3:
            for opt in opts:
                opt.momentum = 0.9  # a term that was not there: another program
        same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=i)
    assert len(step.programs) == 2


# --- (e) in-place updates of arguments -------------------------------------------------------------

def test_an_argument_updated_in_place_reaches_the_callers_tensor_on_every_call():
    def ema(avg, x):
        avg.copy_(avg * 0.5 + x * 0.5)  # in place, as a running average would be
        return avg * 1.0

    step = ndl.compile(ema)
    x = ndl.Tensor(np.arange(4, dtype=np.float32), requires_grad=False)
    avg_c = ndl.Tensor(np.zeros(4, np.float32), requires_grad=False)
    avg_e = ndl.Tensor(np.zeros(4, np.float32), requires_grad=False)
    for _ in range(5):  # eager, traced, replays
        out = step(avg_c, x)
        ema(avg_e, x)
        np.testing.assert_array_equal(avg_c.numpy(), avg_e.numpy())
        np.testing.assert_array_equal(out.numpy(), avg_e.numpy())
    np.testing.assert_array_equal(avg_e.numpy(), np.arange(4) * (1 - 0.5 ** 5))


def test_an_in_place_update_of_a_view_argument_writes_through_to_its_base():
    def bump(v):
        v.copy_(v + 1.0)
        return v * 1.0

    step = ndl.compile(bump)
    base_c = ndl.Tensor(np.zeros((4, 3), np.float32), requires_grad=False)
    base_e = ndl.Tensor(np.zeros((4, 3), np.float32), requires_grad=False)
    for _ in range(4):
        step(base_c[1:3])
        bump(base_e[1:3])
        np.testing.assert_array_equal(base_c.numpy(), base_e.numpy())
    assert base_c.numpy()[1:3].min() == 4.0 and base_c.numpy()[0].max() == 0.0


def test_writing_to_an_argument_that_shares_memory_with_another_is_refused():
    def add_into(a, b):
        a.copy_(a + b)
        return a * 1.0

    step = ndl.compile(add_into)
    t = ndl.Tensor(np.ones(3, np.float32), requires_grad=False)
    step(t, t)
    with pytest.raises(ndl.TraceError, match="shares memory with another argument"):
        step(t, t)


# --- (f) optimizer state replaced after tracing --------------------------------------------------------

@pytest.mark.parametrize("make", [lambda ps: ndl.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: ndl.optim.Adam(ps, lr=0.01)], ids=["SGD", "Adam"])
def test_rolling_back_with_load_state_dict_is_followed(make):
    (a, b), (x, y) = twins(), batch()
    opts = [make(a.parameters()), make(b.parameters())]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y))
    eager = lambda: train_on(b, opts[1], x, y)  # noqa: E731
    for i in range(3):
        same(lambda: step(x, y), eager, seed=i)
    # a model's state_dict shares its memory (PyTorch's rule): numpy copies keep the values of now
    saved = [({k: v.numpy() for k, v in m.state_dict().items()}, o.state_dict()) for m, o in zip((a, b), opts)]
    for i in range(3):
        same(lambda: step(x, y), eager, seed=10 + i)
    for (model_state, opt_state), m, o in zip(saved, (a, b), opts):
        m.load_state_dict(model_state)
        o.load_state_dict(opt_state)
    for i in range(3):
        same(lambda: step(x, y), eager, seed=20 + i)
    assert_same_state(a, b)
    assert len(step.programs) == 1  # loaded in place: the recording still applies


def test_a_fresh_optimizer_state_is_followed():
    (a, b), (x, y) = twins(), batch()
    opts = [ndl.optim.Adam(m.parameters(), lr=0.01) for m in (a, b)]
    step = ndl.compile(lambda x, y: train_on(a, opts[0], x, y))
    for i in range(6):
        if i == 3:
            for opt in opts:  # start the moments afresh
                opt.m, opt.v, opt.t = {}, {}, 0
        same(lambda: step(x, y), lambda: train_on(b, opts[1], x, y), seed=i)
    assert_same_state(a, b)


# --- input checks that read the data: repeated on every replay ------------------------------------

@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=["cpu", "cpu_numpy"])
def test_embedding_ids_are_checked_on_every_replay_not_only_at_the_trace(device):
    """A range check that reads the ids at the trace only would let a replayed row gather read id -1
    as the last row; the check is a host step of the program, so each call's ids are checked."""
    np.random.seed(0)
    emb = nn.Embedding(5, 3, device=device)
    step = ndl.compile(lambda ids: emb(ids).sum())
    eager = lambda ids: emb(ids).sum()  # noqa: E731
    for ids in ([1, 2], [3, 4], [0, 1]):
        t = ndl.Tensor(np.array(ids), device=device, dtype="int64")
        assert step(t).numpy().tobytes() == eager(t).numpy().tobytes()
    for bad, shown in (([-1, 0], "id -1 is out of range"), ([4, 5], "id 5 is out of range")):
        t = ndl.Tensor(np.array(bad), device=device, dtype="int64")
        with pytest.raises(ValueError, match=rf"Embedding\(5, 3\): {shown} \[0, 5\)"):
            eager(t)
        with pytest.raises(ValueError, match=rf"Embedding\(5, 3\): {shown} \[0, 5\)"):
            step(t)
    t = ndl.Tensor(np.array([2, 0]), device=device, dtype="int64")  # the program still runs after a refusal
    assert step(t).numpy().tobytes() == eager(t).numpy().tobytes()


def test_float_labels_that_are_not_whole_are_refused_eager_and_on_every_replay():
    """Labels as float tensors (the course's default dtype) are taken when they hold whole numbers;
    1.5 is refused, not truncated to class 1, in eager code and in each replay of a compiled step."""
    logits = ndl.Tensor(np.random.RandomState(0).randn(2, 4).astype("float32"))
    loss = nn.SoftmaxLoss()
    step = ndl.compile(lambda y: loss(logits, y))
    for labels in ([1.0, 2.0], [0.0, 3.0]):
        y = ndl.Tensor(np.array(labels, dtype="float32"))
        assert step(y).numpy().tobytes() == loss(logits, y).numpy().tobytes()
    for bad in ([1.5, 2.0], [np.nan, 1.0], [np.inf, 0.0]):
        y = ndl.Tensor(np.array(bad, dtype="float32"))
        with pytest.raises(ValueError, match="one_hot: id .* is not a whole number"):
            loss(logits, y)
        with pytest.raises(ValueError, match="one_hot: id .* is not a whole number"):
            step(y)
    with pytest.raises(ValueError, match="one_hot: id 2.5 is not a whole number"):
        ndl.init.one_hot(4, ndl.Tensor(np.array([0.0, 2.5])))
    with pytest.raises(ValueError, match="one_hot: id 2.5 is not a whole number"):
        ndl.backend_ndarray.cpu().one_hot(4, np.array([0.0, 2.5]))


def replays_like_eager(fn, good, bad, error, match):
    """Compile `fn`, trace it on good[0] (argument tuples); its replays on each of `good` give the
    eager bits, and each of `bad` raises `error` matching `match`, eagerly and in a replay of the one
    traced program (a check that read the traced call's data only would let the replay go on with
    a wrong result)."""
    step = ndl.compile(fn)
    for args in good[:1] * 2 + good:  # an eager call, the trace, then replays
        assert step(*args).numpy().tobytes() == fn(*args).numpy().tobytes()
    for args in bad:
        with pytest.raises(error, match=match):
            fn(*args)
        with pytest.raises(error, match=match):
            step(*args)
    assert step(*good[0]).numpy().tobytes() == fn(*good[0]).numpy().tobytes()  # the program still runs
    assert len(step.programs) == 1  # the bad calls were replays, not traces


def floats(*values):
    return ndl.Tensor(np.array(values, dtype=np.float32), requires_grad=False)


def ids(*values, device=None):
    return ndl.Tensor(np.array(values), dtype="int64", device=device)


def test_binary_cross_entropy_refuses_inputs_outside_0_1_on_every_replay():
    """The [0, 1] check read the traced call's input only: a replay with 1.5 gave a loss of nan."""
    target = floats(0.0, 1.0)
    replays_like_eager(lambda p: nn.functional.binary_cross_entropy(p, target), [(floats(0.2, 0.7),)],
                       [(floats(1.5, 0.5),), (floats(-0.5, 0.5),), (floats(np.nan, 0.5),)], ValueError,
                       r"binary_cross_entropy: the input must hold probabilities in \[0, 1\], found (1.5|-0.5|nan)")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], found 1.5"):  # a 0-d input too (it gave nan)
        nn.functional.binary_cross_entropy(ndl.Tensor(np.float32(1.5)), ndl.Tensor(np.float32(1.0)))


@pytest.mark.parametrize("what", ["histc", "histogram"])
def test_a_histogram_of_the_data_range_refuses_a_range_that_is_not_finite_on_every_replay(what):
    """The finite-range check read the traced call's data only: a replay with inf counted every
    element into the first bin, one with nan counted nothing."""
    fn = (lambda a: ndl.ops.histc(a, bins=4)) if what == "histc" else (lambda a: ndl.ops.histogram(a, 4)[0])
    replays_like_eager(fn, [(floats(0, 1, 2, 3),), (floats(3, 1, 5, 2),)],
                       [(floats(0, 1, np.inf, 3),), (floats(0, np.nan, 2, 3),)], ValueError,
                       rf"{what}: the range of the data \[.*\] is not finite")


@pytest.mark.parametrize("device", [ndl.cpu(), ndl.cpu_numpy()], ids=["cpu", "cpu_numpy"])
def test_index_arrays_are_wrapped_and_bounds_checked_on_every_replay(device):
    """Negative indices were wrapped only where the traced call had some, and the bounds checked at
    the trace only: with two index arrays (one flat row index 4 i + j) a replay read x[1, -1] as
    x[0, 3] and x[1, 4] as x[2, 0]; with a negative traced index, a replay's -4 was wrapped to -1."""
    x = ndl.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), device=device, requires_grad=False)
    i = ids(0, 1, device=device)
    replays_like_eager(lambda j: x[i, j], [(ids(1, 2, device=device),), (ids(3, -1, device=device),),
                                           (ids(-4, 0, device=device),)],
                       [(ids(1, 4, device=device),), (ids(-5, 0, device=device),)], IndexError,
                       r"index (4|-5) is out of bounds for axis 1 with size 4")
    replays_like_eager(lambda r: x[r], [(ids(0, -2, device=device),), (ids(2, 0, device=device),)],
                       [(ids(-4, 0, device=device),), (ids(0, 3, device=device),)], IndexError,
                       r"index (-4|3) is out of bounds for axis 0 with size 3")


def test_float_index_tensors_must_hold_whole_numbers_on_every_replay():
    """The whole-number check of a float index tensor read the traced call's index only: a replay
    with 1.5 took row 1 (the cast truncates)."""
    x = ndl.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4), requires_grad=False)
    replays_like_eager(lambda r: x[r], [(floats(0, 2),), (floats(1, 1),)],
                       [(floats(0, 1.5),), (floats(np.nan, 1),), (floats(np.inf, 1),)], TypeError,
                       "tensor indices must hold whole numbers")
    with pytest.raises(TypeError, match="tensor indices must hold whole numbers, got 2.5"):
        x[floats(0, 2.5)]


def test_setitem_refuses_a_repeated_position_on_every_replay():
    """The check that no position is set twice read the traced call's index only: a replay with
    index [1, 1] set row 1 to the sum of both values."""
    x = ndl.Tensor(np.zeros((3, 4), dtype=np.float32), requires_grad=False)
    v = ndl.Tensor(np.array([[1.0], [2.0]], dtype=np.float32) * np.ones((2, 4), dtype=np.float32))

    def put(r):
        y = x * 1.0
        y[r] = v
        return y
    replays_like_eager(put, [(ids(0, 2),), (ids(2, -3),)], [(ids(1, 1),), (ids(0, -3),)], IndexError,
                       "x\\[index\\] = value with an index that repeats a position")


def test_one_hot_with_inferred_classes_checks_each_replay_gives_the_traced_count():
    """num_classes=-1 takes max + 1 from the ids; a replay keeps the traced count (the result's
    shape), so ids [0, 1] after a trace with [0, 3] gave 4 columns where eager code gives 2: the
    replay refuses ids that give another count, naming the fix."""
    fn = lambda t: nn.functional.one_hot(t)  # noqa: E731
    step = ndl.compile(fn)
    for t in (ids(0, 3), ids(3, 1), ids(2, 3)):
        assert step(t).numpy().tobytes() == fn(t).numpy().tobytes()
    for t, n in ((ids(0, 1), 2), (ids(0, 5), 6)):
        assert fn(t).shape == (2, n)
        with pytest.raises(ValueError, match=rf"one_hot: num_classes=-1 gave 4 classes .* this call's ids give {n}; "
                                             "pass num_classes"):
            step(t)
    assert step(ids(3, 0)).numpy().tobytes() == fn(ids(3, 0)).numpy().tobytes()
    assert len(step.programs) == 1
