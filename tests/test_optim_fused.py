"""The optimizers' fused updates (`array_api.sgd_step` / `adam_step`, one kernel call per
parameter on the cpu device) against the op-by-op update they replace (`fused=False`):
the same bits for parameters and state, eager and compiled, on every device we run here.

The op-by-op path is the reference because the course's tests compare its values; that it
is right is checked elsewhere (tests/test_optim.py against numpy formulas,
tests/test_optim_pytorch.py against torch.optim, both now running the fused path)."""
import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
import needle.optim as optim
from needle import array_api

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]

CONFIGS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, dict(lr=0.1, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, dampening=0.0)),  # PyTorch's rule without momentum: no buffer
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01)),  # PyTorch's momentum
    (optim.SGD, dict(lr=0.1, momentum=0.8, dampening=0.3)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.0)),
    (optim.RMSprop, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, weight_decay=0.1, centered=True)),
    (optim.RMSprop, dict(lr=0.01, centered=True)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    (optim.Adagrad, dict(lr=0.05)),
    (optim.Adagrad, dict(lr=0.05, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5)),
    (optim.Adadelta, dict(lr=1.0)),
    (optim.Adadelta, dict(lr=1.0, weight_decay=0.1)),
]
IDS = ["sgd", "sgd-momentum", "sgd-wd", "sgd-momentum-wd", "sgd-torch", "sgd-torch-momentum-wd",
       "sgd-dampening", "sgd-nesterov-wd", "adam", "adam-wd", "adamw", "adamw-no-wd",
       "rmsprop", "rmsprop-centered-momentum-wd", "rmsprop-centered", "rmsprop-momentum",
       "adagrad", "adagrad-decay-wd-initial", "adadelta", "adadelta-wd"]
KERNEL = {optim.SGD: "sgd_step", optim.Adam: "adam_step", optim.AdamW: "adam_step", optim.RMSprop: "rmsprop_step",
          optim.Adagrad: "adagrad_step", optim.Adadelta: "adadelta_step"}


def make_model(dtype, device, seed=0):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(5, 7, dtype=dtype, device=device), nn.ReLU(),
                         nn.Linear(7, 3, dtype=dtype, device=device))


def batch(dtype, device, seed=1):
    rng = np.random.RandomState(seed)
    x = ndl.Tensor(rng.randn(12, 5), dtype=dtype, device=device, requires_grad=False)
    y = ndl.Tensor(rng.randint(0, 3, size=12), dtype="int64", device=device, requires_grad=False)
    return x, y


def train_step(model, opt, x, y):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss


def state_of(opt):
    """Every per-parameter state tensor of the optimizer, as numpy arrays in parameter order."""
    out = []
    for name in type(opt)._per_param_state:
        store = getattr(opt, name)
        out += [store[p].numpy() for p in opt.params if p in store]
    return out


def assert_bits(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8))  # bits


def trained(cls, kw, fused, dtype, device, steps=5):
    model = make_model(dtype, device)
    opt = cls(model.parameters(), fused=fused, **kw)
    x, y = batch(dtype, device)
    for _ in range(steps):
        train_step(model, opt, x, y)
    return [p.numpy() for p in model.parameters()], state_of(opt), opt


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, kw", CONFIGS, ids=IDS)
def test_fused_update_gives_the_op_by_op_bits(cls, kw, dtype, device):
    params, state, opt = trained(cls, kw, None, dtype, device)
    params_ref, state_ref, opt_ref = trained(cls, kw, False, dtype, device)
    assert_bits(params, params_ref)
    assert_bits(state, state_ref)
    assert getattr(opt, "t", None) == getattr(opt_ref, "t", None)
    no_state = cls is optim.SGD and kw.get("dampening") == 0.0 and not kw.get("momentum")  # PyTorch's plain SGD
    assert len(state) == len(state_ref) and (len(state) == 0) == no_state


@pytest.mark.parametrize("cls, kw", CONFIGS, ids=IDS)
def test_the_cpu_update_is_one_kernel_call_per_parameter(cls, kw, monkeypatch):
    """The fused path is the one taken by default (and fused=False takes the ops); SGD's is one
    call for the whole group (sgd_step_many), the others one per parameter."""
    device = ndl.cpu()
    name = "sgd_step_many" if cls is optim.SGD else KERNEL[cls]
    kernel = getattr(device, name)
    calls = []
    monkeypatch.setattr(device, name, lambda *args: calls.append(args) or kernel(*args))
    for fused, expected in [(None, 1), (True, 1), (False, 0)]:
        calls.clear()
        model = make_model("float32", device)
        opt = cls(model.parameters(), fused=fused, **kw)
        x, y = batch("float32", device)
        for _ in range(3):
            train_step(model, opt, x, y)
        group = opt.param_groups[0]
        first_step_copies = group.get("momentum") and group.get("dampening") is not None  # PyTorch's u = g first
        steps = 2 if first_step_copies else 3
        assert len(calls) == expected * steps * (1 if cls is optim.SGD else len(opt.params))


@pytest.mark.parametrize("cls, kw", [CONFIGS[k] for k in (3, 4, 7, 9, 10, 13, 15, 17, 19)],
                         ids=[IDS[k] for k in (3, 4, 7, 9, 10, 13, 15, 17, 19)])
def test_non_contiguous_parameters_and_gradients(cls, kw):
    """A parameter whose data is a transposed view and a gradient that is a strided view are
    read and written in place through their views."""
    def run(fused):
        rng = np.random.RandomState(0)
        base = ndl.Tensor(rng.randn(4, 6), requires_grad=False)
        p = nn.Parameter(ndl.Tensor(rng.randn(6, 4)))
        p.data = base.transpose()  # (6, 4), a view of base's buffer
        q = nn.Parameter(ndl.Tensor(rng.randn(3, 5)))
        opt = cls([p, q], fused=fused, **kw)
        assert not p.realize_cached_data().is_compact()
        for _ in range(4):
            gp = ndl.Tensor(rng.randn(4, 6), requires_grad=False).transpose()  # strided
            gq = ndl.Tensor(rng.randn(3, 10), requires_grad=False)[:, ::2]  # strided slice
            assert not gp.realize_cached_data().is_compact() and not gq.realize_cached_data().is_compact()
            p.grad, q.grad = gp, gq
            opt.step()
        return [p.numpy(), q.numpy(), base.numpy()], state_of(opt)

    (params, state), (params_ref, state_ref) = run(None), run(False)
    assert_bits(params, params_ref)
    assert_bits(state, state_ref)
    np.testing.assert_array_equal(params[2].T, params[0])  # written through the view, into base


@pytest.mark.parametrize("cls, kw", [CONFIGS[k] for k in (3, 9, 10, 13, 15, 19)],
                         ids=[IDS[k] for k in (3, 9, 10, 13, 15, 19)])
def test_parameters_without_gradients_and_of_other_dtypes(cls, kw):
    """A parameter without a gradient is left alone (no state made); a float32 parameter with a
    float64 gradient takes the op-by-op update (promotion and cast as the ops do); float64 beside
    float32 in one group."""
    def run(fused):
        rng = np.random.RandomState(0)
        a = nn.Parameter(ndl.Tensor(rng.randn(3, 4), dtype="float32"))
        b = nn.Parameter(ndl.Tensor(rng.randn(5), dtype="float64"))
        c = nn.Parameter(ndl.Tensor(rng.randn(2, 2), dtype="float32"))
        idle = nn.Parameter(ndl.Tensor(rng.randn(3), dtype="float32"))
        before = idle.numpy()
        opt = cls([a, b, c, idle], fused=fused, **kw)
        for _ in range(3):
            a.grad = ndl.Tensor(rng.randn(3, 4), dtype="float32", requires_grad=False)
            b.grad = ndl.Tensor(rng.randn(5), dtype="float64", requires_grad=False)
            c.grad = ndl.Tensor(rng.randn(2, 2), dtype="float64", requires_grad=False)
            opt.step()
        assert all(idle not in getattr(opt, name) for name in type(opt)._per_param_state)
        np.testing.assert_array_equal(idle.numpy(), before)
        return [a.numpy(), b.numpy(), c.numpy(), idle.numpy()], state_of(opt)

    (params, state), (params_ref, state_ref) = run(None), run(False)
    assert [p.dtype for p in params] == [np.float32, np.float64, np.float32, np.float32]
    assert_bits(params, params_ref)
    assert_bits(state, state_ref)


def test_a_step_after_reading_a_parameter_into_the_graph_is_refused_at_backward():
    """The fused update stamps the parameter as written in place, as copy_ did: a graph built
    before the step that needs the old value refuses its backward instead of using the new one."""
    p = nn.Parameter(ndl.Tensor(np.ones((2, 2), np.float32)))
    opt = optim.Adam([p])
    y = (p * p).sum()
    p.grad = ndl.Tensor(np.ones((2, 2), np.float32), requires_grad=False)
    opt.step()
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        y.backward()


@pytest.mark.parametrize("cls, kw", [CONFIGS[k] for k in (3, 5, 7, 9, 10, 11, 13, 15, 17, 19)],
                         ids=[IDS[k] for k in (3, 5, 7, 9, 10, 11, 13, 15, 17, 19)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_compiled_step_records_one_call_per_parameter_and_gives_the_eager_bits(cls, kw, dtype):
    """Compiled with the fused update vs eager op by op: the same parameters and state, with the
    learning rate and betas/momentum changed between replays through param_groups (HostScalars
    read at each replay, no new trace)."""
    device = ndl.cpu()
    models = [make_model(dtype, device) for _ in range(2)]
    opts = [cls(models[0].parameters(), **kw), cls(models[1].parameters(), fused=False, **kw)]
    x, y = batch(dtype, device)
    step = ndl.compile(lambda x, y: train_step(models[0], opts[0], x, y), max_traces=1)
    for i in range(6):
        if i >= 3:
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = kw["lr"] * (i - 1)
                    for name, value in [("betas", (0.9 - 0.05 * i, 0.999 - 0.001 * i)), ("alpha", 0.9 - 0.1 * i),
                                        ("rho", 0.8 - 0.1 * i), ("eps", 1e-3 * i), ("lr_decay", 0.05 * i)]:
                        if name in group:
                            group[name] = value
                    if group.get("momentum"):
                        group["momentum"] = 0.9 - 0.1 * (i - 2)
        loss = step(x, y)
        loss_ref = train_step(models[1], opts[1], x, y)
        assert_bits([loss.numpy()], [loss_ref.numpy()])
        assert_bits([p.numpy() for p in models[0].parameters()], [p.numpy() for p in models[1].parameters()])
        assert_bits(state_of(opts[0]), state_of(opts[1]))
    name = KERNEL[cls]
    calls = [c.name for c in step.programs[0].calls]
    assert calls.count(name) == len(opts[0].params)


# kernel -> (arrays, hyperparameters, flags) of its arguments
SIGNATURES = {"sgd_step": (3, 4, (True, 2, True)), "adam_step": (4, 10, (True, False)),
              "rmsprop_step": (5, 6, (True, True, True)), "adagrad_step": (3, 3, (True,)),
              "adadelta_step": (4, 5, (True,))}
HYPERS = [0.01, 0.9, 0.1, 1e-3, 0.1, 0.5, 0.2, 1e-8, 0.1, 0.999]


@pytest.mark.parametrize("function", list(SIGNATURES))
def test_the_array_functions_refuse_mismatched_arrays(function):
    fn = getattr(array_api, function)
    arrays, count, flags = SIGNATURES[function]
    scalars = HYPERS[:count]
    good = [array_api.zeros((2, 3)) for _ in range(arrays)]
    with pytest.raises(ValueError, match=r"grad has shape \(3, 2\) and dtype float32, the parameter \(2, 3\)"):
        fn(good[0], array_api.zeros((3, 2)), *good[2:], *scalars, *flags)
    with pytest.raises(ValueError, match="state has shape .* dtype float64"):
        fn(*good[:2], array_api.zeros((2, 3), dtype="float64"), *good[3:], *scalars, *flags)
    with pytest.raises(ValueError, match="parameter must be float32 or float64, got int64"):
        fn(*[array_api.zeros((2, 3), dtype="int64") for _ in range(arrays)], *scalars, *flags)
    with pytest.raises(ValueError, match="different devices"):
        fn(*good[:-1], array_api.zeros((2, 3), device=ndl.cpu_numpy()), *scalars, *flags)
    with pytest.raises(TypeError, match="state must be an NDArray, got list"):
        fn(*good[:-1], [0.0] * 6, *scalars, *flags)


# --- a compiled step on two threads: large updates run as element blocks, same bits -------------------

def _update_args(name, size, dtype, seed):
    from needle.backend_ndarray.host_buffer import Array

    rng = np.random.RandomState(seed)
    count, scalars, flags = SIGNATURES[name]
    arrays = [rng.randn(size).astype(dtype) for _ in range(count)]
    arrays[2:] = [np.abs(a) for a in arrays[2:]]  # state: running means of squares, sums
    operands = tuple((Array.wrap(a), (size // 8, 8), None, 0) for a in arrays)
    return operands + tuple(HYPERS[:scalars]) + flags


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SIGNATURES))
def test_a_large_update_splits_into_blocks_with_the_whole_calls_bits(name, dtype, monkeypatch):
    from needle.backend_ndarray import kernels_cpu
    from needle.backend_ndarray.host_buffer import Array
    from needle.compile import parallel_cpu

    monkeypatch.setenv("NEEDLE_NUM_THREADS", "2")
    size = parallel_cpu.MIN_ELEMENTS * 2
    whole, split = _update_args(name, size, dtype, 0), _update_args(name, size, dtype, 0)
    getattr(kernels_cpu, name)(*whole)
    launch = parallel_cpu.split(name, getattr(kernels_cpu, name), split, kernels_cpu.prepare)
    assert launch is not None
    launch()
    count = SIGNATURES[name][0]
    before = _update_args(name, size, dtype, 0)
    assert whole[0][0].array.tobytes() != before[0][0].array.tobytes()  # the parameter moved
    for a, b in zip(whole[:count], split[:count]):
        assert a[0].array.tobytes() == b[0].array.tobytes()
    # one buffer passed as two operands through views at different offsets is never split: a
    # block would read elements another block writes
    shared = Array.wrap(np.zeros(size + 8, dtype))
    clash = ((shared, split[0][1], None, 0), split[1], (shared, split[0][1], None, 8)) + split[3:]
    assert parallel_cpu.split(name, getattr(kernels_cpu, name), clash, kernels_cpu.prepare) is None
    clash = ((shared, split[0][1], None, 0), split[1], (shared, split[0][1], None, 0)) + split[3:]
    assert parallel_cpu.split(name, getattr(kernels_cpu, name), clash, kernels_cpu.prepare) is not None


@pytest.mark.parametrize("cls, kw", [CONFIGS[k] for k in (3, 9, 10, 13, 15, 19)],
                         ids=[IDS[k] for k in (3, 9, 10, 13, 15, 19)])
def test_a_compiled_step_on_two_threads_with_a_large_parameter(cls, kw, monkeypatch):
    monkeypatch.setenv("NEEDLE_NUM_THREADS", "2")
    device = ndl.cpu()

    def build():
        np.random.seed(0)
        return nn.Sequential(nn.Linear(600, 512, device=device), nn.ReLU(), nn.Linear(512, 3, device=device))

    models = [build(), build()]
    opts = [cls(models[0].parameters(), **kw), cls(models[1].parameters(), fused=False, **kw)]
    rng = np.random.RandomState(1)
    x = ndl.Tensor(rng.randn(4, 600), device=device, requires_grad=False)
    y = ndl.Tensor(rng.randint(0, 3, size=4), dtype="int64", device=device, requires_grad=False)
    step = ndl.compile(lambda x, y: train_step(models[0], opts[0], x, y))
    for _ in range(4):
        step(x, y)
        train_step(models[1], opts[1], x, y)
        assert_bits([p.numpy() for p in models[0].parameters()], [p.numpy() for p in models[1].parameters()])
        assert_bits(state_of(opts[0]), state_of(opts[1]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_over_zero_gives_nan_as_the_ops_do(dtype):
    """Adam with eps=0 and a gradient that is zero in places: 0 / (sqrt(0) + 0) is nan in numpy's
    arithmetic, and in the fused loop too (not a ZeroDivisionError); SGD with an infinite
    gradient gives inf the same way."""
    def run(fused):
        p = nn.Parameter(ndl.Tensor(np.array([1.0, 2.0, 3.0, 4.0]), dtype=dtype))
        q = nn.Parameter(ndl.Tensor(np.array([1.0, 2.0, 3.0, 4.0]), dtype=dtype))
        adam = optim.Adam([p], lr=0.1, eps=0.0, fused=fused)
        sgd = optim.SGD([q], lr=0.1, momentum=0.5, fused=fused)
        p.grad = ndl.Tensor(np.array([0.0, 1.0, 0.0, -2.0]), dtype=dtype, requires_grad=False)
        q.grad = ndl.Tensor(np.array([np.inf, -np.inf, 0.0, 1.0]), dtype=dtype, requires_grad=False)
        adam.step()
        sgd.step()
        return [p.numpy(), q.numpy()] + state_of(adam) + state_of(sgd)

    with np.errstate(all="ignore"):
        fused, ref = run(None), run(False)
    assert np.isnan(fused[0][[0, 2]]).all() and np.isfinite(fused[0][[1, 3]]).all()
    assert np.isinf(fused[1][:2]).all()
    for a, b in zip(fused, ref):
        # nan where the ops give nan (its sign bit may differ: LLVM folds the ops' a + -b into
        # a - b, which IEEE 754 leaves free to keep the nan's sign), every other value bit for bit
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        assert_bits([a[~np.isnan(a)]], [b[~np.isnan(b)]])


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad, optim.Adadelta])
def test_zero_dimensional_and_empty_parameters(cls):
    def run(fused):
        a = nn.Parameter(ndl.Tensor(np.array(1.5), dtype="float32"))
        b = nn.Parameter(ndl.Tensor(np.zeros((0, 3)), dtype="float32"))
        opt = cls([a, b], fused=fused, **({"momentum": 0.9} if cls is optim.SGD else {}))
        for k in range(3):
            a.grad = ndl.Tensor(np.array(0.25 * (k + 1)), dtype="float32", requires_grad=False)
            b.grad = ndl.Tensor(np.zeros((0, 3)), dtype="float32", requires_grad=False)
            opt.step()
        return [a.numpy(), b.numpy()] + state_of(opt)

    fused, ref = run(None), run(False)
    assert fused[0].shape == () and fused[1].shape == (0, 3) and fused[0] != 1.5
    assert_bits(fused, ref)


def test_one_sgd_call_for_a_group_of_mixed_dtypes_and_layouts_gives_the_op_by_op_bits():
    """sgd_step_many takes the group in one compiled call only where every array is a whole compact
    buffer of one dtype; a float64 parameter beside float32 ones, or a broadcast gradient, makes it
    update them one by one: the same bits as the ops either way. Lists of different lengths are
    refused."""
    def run(fused):
        rng = np.random.RandomState(3)
        params = [nn.Parameter(ndl.Tensor(rng.randn(*shape), dtype=dtype))
                  for shape, dtype in (((4, 3), "float32"), ((5,), "float64"), ((2, 2), "float32"))]
        opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01, fused=fused)
        for step in range(3):
            for k, p in enumerate(params):
                grad = rng.randn(*p.shape)
                p.grad = ndl.Tensor(grad[:1] if k == 2 and step == 1 else grad, dtype=p.dtype, requires_grad=False)
                if k == 2 and step == 1:
                    p.grad = p.grad.broadcast_to(p.shape)  # a strided gradient
            opt.step()
        return [p.numpy() for p in params] + state_of(opt)

    assert_bits(run(None), run(False))
    a = ndl.cpu().empty((2,))
    with pytest.raises(ValueError, match="sgd_step_many: 2 parameters, 1 gradients"):
        array_api.sgd_step_many([a, a], [a], [a, a], 0.1, 0.0, 1.0, 0.0, False, 1, False)
