"""PyTorch's creation functions, torch.* function forms and Tensor methods on needle, each checked
against PyTorch: values, dtypes, shapes, gradients (in float64, where float32 rounding could depend
on the CPU), errors; random functions for their shapes, dtypes, distributions and reproducibility
(numpy's global seed, ndl.Generator), also inside a compiled step."""
import math
import pickle

import numpy as np
import pytest
import torch

import needle as ndl

# numpy warns of the infs and nans some inputs hold on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}


def pair(a, requires_grad=None):
    """The same data in needle and PyTorch (float64 stays float64; floats require grad)."""
    a = np.asarray(a)
    floating = a.dtype.kind == "f"
    grad = floating if requires_grad is None else requires_grad
    x = ndl.Tensor(a, dtype=a.dtype.name if a.dtype.kind != "i" else "int64", requires_grad=grad)
    t = torch.tensor(a, requires_grad=grad)
    return x, t


def same(ours, theirs, exact=False, rtol=1e-12):
    """Values, shape and dtype of a needle result equal a PyTorch one."""
    if isinstance(theirs, torch.Tensor):
        assert tuple(ours.shape) == tuple(theirs.shape), (ours.shape, theirs.shape)
        assert ours.dtype == {v: k for k, v in TORCH_DTYPES.items()}[theirs.dtype], (ours.dtype, theirs.dtype)
        theirs = theirs.detach().numpy()
    if exact:
        np.testing.assert_array_equal(ours.numpy(), theirs)
    else:
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=rtol, atol=1e-300, equal_nan=True)


def grads_agree(ours_out, theirs_out, ours_in, theirs_in, rtol=1e-12):
    """The gradients of sum(out * w), w random, agree with PyTorch's."""
    w = np.random.RandomState(9).randn(*theirs_out.shape)
    (ours_out * ndl.Tensor(w, dtype=ndl.array_api.dtype_name(ours_out.dtype))).sum().backward()
    (theirs_out * torch.tensor(w, dtype=theirs_out.dtype)).sum().backward()
    for x, t in zip(ours_in, theirs_in):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=1e-300, equal_nan=True)


def data(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape)


# --- dtypes ------------------------------------------------------------------------------------------

def test_dtype_objects_are_their_names_and_compare_like_torch_dtypes():
    assert ndl.float32 == "float32" and ndl.float64 == "float64" and ndl.int64 == "int64" and ndl.bool == "bool"
    assert ndl.float is ndl.float32 and ndl.double is ndl.float64 and ndl.long is ndl.int64
    assert ndl.int32 is ndl.int64 and ndl.int is ndl.int64  # stored as int64 (documented)
    assert ndl.float32 != ndl.float64 and ndl.float32 != "float64"
    assert repr(ndl.float32) == "needle.float32" and f"{ndl.long}" == "int64"
    assert ndl.float32 == np.float32 and np.float32 == ndl.float32 and ndl.float32 == np.dtype("float32")
    assert np.dtype(ndl.float64) == np.float64 and ndl.float64 != np.float32 and ndl.float32 != None  # noqa: E711
    assert hash(ndl.float32) == hash("float32") and {"float32": 1}[ndl.float32] == 1
    assert pickle.loads(pickle.dumps(ndl.int64)) is ndl.int64
    assert ndl.float32.is_floating_point and not ndl.long.is_floating_point and ndl.float64.itemsize == 8
    assert isinstance(ndl.float32, ndl.dtype)
    with pytest.raises(TypeError, match="unknown dtype"):
        ndl.dtype("complex64")


@pytest.mark.parametrize("name", ["float32", "float64", "int64", "bool"])
def test_tensor_dtype_is_the_dtype_object_everywhere_a_name_was_taken(name):
    d = getattr(ndl, name)
    x = ndl.Tensor([1, 0, 1], dtype=d, requires_grad=False)
    assert x.dtype is d and x.dtype == name and x.dtype == np.dtype(name)
    for made in (ndl.zeros(2, dtype=d), ndl.ones(2, 3, dtype=d), ndl.full((2,), 1, dtype=d), ndl.empty(2, dtype=d),
                 ndl.tensor([1, 2], dtype=d), ndl.Tensor([1.0], requires_grad=False).to(d),
                 ndl.Tensor([1.0], requires_grad=False).type(d), ndl.arange(3, dtype=d), ndl.zeros_like(x)):
        assert made.dtype is d, (made, made.dtype)
    assert ndl.tensor([1, 2], dtype=ndl.int32).dtype is ndl.int64


def test_dtypes_of_results_follow_torch():
    for make in (lambda L: L.tensor([1, 2]), lambda L: L.tensor([1.5]), lambda L: L.tensor([True]),
                 lambda L: L.full((2,), 3), lambda L: L.full((2,), 3.0), lambda L: L.full((2,), False),
                 lambda L: L.randint(0, 4, (3,)), lambda L: L.randperm(3), lambda L: L.linspace(0, 1, 3),
                 lambda L: L.tensor([3, 1]).argmin(), lambda L: L.tensor([1.0, 2.0]).topk(1).indices,
                 lambda L: L.tensor([1.0, 2.0]).all(), lambda L: L.tensor([1.0, 2.0]).any(),
                 lambda L: L.multinomial(L.tensor([0.5, 0.5]), 1)):
        ours, theirs = make(ndl), make(torch)
        assert ours.dtype == {v: k for k, v in TORCH_DTYPES.items()}[theirs.dtype]


# --- devices -------------------------------------------------------------------------------------------

def test_device_names_like_torch_device():
    assert ndl.device("cpu") is ndl.cpu() and ndl.device("cpu_numpy") == ndl.cpu_numpy()
    assert ndl.device("cuda") == ndl.cuda() and ndl.device("cuda:0") == ndl.cuda() and ndl.device("cuda", 0) == ndl.cuda()
    assert ndl.device(ndl.cpu()) is ndl.cpu() and ndl.cpu().type == "cpu" and ndl.cuda().type == "cuda"
    assert isinstance(ndl.cpu(), ndl.device) and not isinstance("cpu", ndl.device)
    with pytest.raises(ValueError, match="'tpu'"):
        ndl.device("tpu")
    with pytest.raises(ValueError, match="index 0"):
        ndl.device("cuda:1")
    with pytest.raises(TypeError, match="device"):
        ndl.device(0)


def test_device_names_go_where_devices_do():
    x = ndl.Tensor([1.0, 2.0], device="cpu_numpy")
    assert x.device == ndl.cpu_numpy()
    for made in (ndl.zeros(2, device="cpu_numpy"), ndl.randn(2, device="cpu_numpy"), ndl.full((2,), 1, device="cpu_numpy"),
                 ndl.arange(3, device="cpu_numpy"), ndl.linspace(0, 1, 2, device="cpu_numpy"),
                 ndl.randint(3, (2,), device="cpu_numpy"), x.new_zeros(3), ndl.zeros_like(x, device="cpu_numpy")):
        assert made.device == ndl.cpu_numpy()
    y = x.to("cpu")
    assert y.device == ndl.cpu() and y.requires_grad and x.cpu().device == ndl.cpu()
    assert x.to("cpu_numpy:0") is x and x.to(ndl.float64, copy=False).dtype == "float64"
    z = ndl.zeros(2, dtype="int64")
    moved = x.to(z)  # a tensor's device and dtype
    assert moved.device == ndl.cpu() and moved.dtype == ndl.int64
    copied = x.to(x.device, copy=True)
    assert copied is not x and np.array_equal(copied.numpy(), x.numpy())


# --- creation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [3, 2.5, True, -1])
def test_full_and_full_like(value):
    same(ndl.full((2, 3), value), torch.full((2, 3), value), exact=True)
    same(ndl.full([4], value, dtype=ndl.float64), torch.full([4], value, dtype=torch.float64), exact=True)
    x, t = pair(data(2, 2))
    same(ndl.full_like(x, value), torch.full_like(t, value), exact=True)
    same(ndl.full_like(x, value, dtype=ndl.long), torch.full_like(t, value, dtype=torch.long), exact=True)
    assert ndl.full((2,), 1.0, requires_grad=True).requires_grad
    with pytest.raises(TypeError, match="fill_value"):
        ndl.full((2,), "a")
    with pytest.raises(ValueError, match="negative"):
        ndl.full((2, -1), 0.0)


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-3.5, 7.25, 11), (2, -2, 8), (1e-3, 1e3, 20), (5, 5, 3),
                                               (0, 1, 1), (0, 1, 0), (-1, 1, 101)])
def test_linspace_follows_torch(start, end, steps):
    for dtype in (ndl.float64, ndl.float32):
        ours = ndl.linspace(start, end, steps, dtype=dtype)
        theirs = torch.linspace(start, end, steps, dtype=TORCH_DTYPES[dtype])
        # PyTorch's vectorised loop rounds some middle values differently (on some CPUs): ulps of the range
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0,
                                   atol=4 * np.finfo(dtype).eps * max(abs(start), abs(end)))
        assert ours.shape == tuple(theirs.shape) and ours.dtype == dtype
        if steps:  # both ends are exact
            assert ours.numpy()[0] == theirs[0].item() and ours.numpy()[-1] == theirs[-1].item()
    same(ndl.linspace(0, 10, 5, dtype=ndl.long), torch.linspace(0, 10, 5, dtype=torch.long), exact=True)
    assert ndl.linspace(0, 1, 3).dtype == ndl.float32


def test_linspace_refuses_bad_steps_and_bounds():
    with pytest.raises(ValueError, match="steps"):
        ndl.linspace(0, 1, -1)
    with pytest.raises(ValueError, match="end"):
        ndl.linspace(0, math.inf, 3)


@pytest.mark.filterwarnings("ignore:std\\(\\)|var\\(\\):UserWarning")
def test_var_and_std_are_nan_without_degrees_of_freedom():
    x, t = pair(data(2, 3))
    same(x.var(0, correction=2), t.var(0, correction=2))
    same(ndl.std(x[:1], 0), torch.std(t[:1], 0))
    grads_agree(x.var(0, correction=2), t.var(0, correction=2), [x], [t])


def test_empty_has_the_shape_dtype_and_zeros():
    x = ndl.empty(2, 3, dtype=ndl.float64)
    assert x.shape == (2, 3) and x.dtype == ndl.float64 and not x.numpy().any()
    assert ndl.empty((4,)).shape == (4,)


# --- random functions ----------------------------------------------------------------------------------

def test_random_functions_draw_numpys_global_stream_in_the_course_order():
    np.random.seed(5)
    a, b, c, d = ndl.randn(3, 4), ndl.rand(2, 2), ndl.randint(2, 9, (5,)), ndl.randperm(6)
    np.random.seed(5)
    np.testing.assert_array_equal(a.numpy(), np.random.randn(3, 4).astype(np.float32))
    np.testing.assert_array_equal(b.numpy(), np.random.rand(2, 2).astype(np.float32))
    np.testing.assert_array_equal(c.numpy(), np.random.randint(2, 9, (5,)))
    np.testing.assert_array_equal(d.numpy(), np.random.permutation(6))
    np.random.seed(5)
    double = ndl.randn(3, 4, dtype=ndl.float64).numpy()
    np.random.seed(5)
    np.testing.assert_array_equal(double, np.random.randn(3, 4))  # drawn in double precision


def test_a_generator_reproduces_its_draws_and_leaves_the_global_stream_alone():
    g = ndl.Generator()
    assert g.initial_seed() == torch.Generator().initial_seed() == 67280421310721
    assert g.manual_seed(11) is g and g.initial_seed() == 11
    first = [ndl.randn(4, generator=g), ndl.rand(3, generator=g), ndl.randint(10, (6,), generator=g),
             ndl.randperm(5, generator=g), ndl.multinomial(ndl.tensor([0.2, 0.3, 0.5]), 2, generator=g)]
    g.manual_seed(11)
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    again = [ndl.randn(4, generator=g), ndl.rand(3, generator=g), ndl.randint(10, (6,), generator=g),
             ndl.randperm(5, generator=g), ndl.multinomial(ndl.tensor([0.2, 0.3, 0.5]), 2, generator=g)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global stream did not move
    assert np.random.randn() == np.random.RandomState(0).randn()
    # seeded like the global generator: the same numbers as after ndl.manual_seed(s)
    ndl.manual_seed(123)
    np.testing.assert_array_equal(ndl.randn(5).numpy(), ndl.randn(5, generator=ndl.Generator().manual_seed(123)).numpy())
    state = g.get_state()
    x = ndl.rand(3, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(ndl.rand(3, generator=g).numpy(), x.numpy())
    assert ndl.Generator().manual_seed(2 ** 40).initial_seed() == 2 ** 40  # 64-bit seeds
    with pytest.raises(TypeError, match="generator"):
        ndl.randn(2, generator=np.random.RandomState(0))
    with pytest.raises(TypeError, match="int"):
        g.manual_seed(1.5)


def test_like_functions_take_shape_dtype_and_device():
    x = ndl.Tensor(np.zeros((2, 3)), dtype="float64", device=ndl.cpu_numpy())
    for made in (ndl.randn_like(x), ndl.rand_like(x), ndl.randint_like(x, 5), ndl.full_like(x, 2)):
        assert made.shape == (2, 3) and made.dtype == ndl.float64 and made.device == ndl.cpu_numpy()
    assert ndl.rand_like(x, dtype=ndl.float32).dtype == ndl.float32
    g = ndl.Generator().manual_seed(4)
    a = ndl.randn_like(x, generator=g).numpy()
    np.testing.assert_array_equal(a, np.random.RandomState(4).randn(2, 3))
    low = ndl.randint_like(ndl.zeros(100, dtype=ndl.long), 3, 5).numpy()
    assert set(low.tolist()) == {3, 4}


def test_random_distributions_and_ranges():
    np.random.seed(0)
    n = ndl.randn(20000, dtype=ndl.float64).numpy()
    assert abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03
    u = ndl.rand(20000).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    r = ndl.randint(-3, 4, (7000,))
    assert r.dtype == ndl.int64 and set(r.numpy().tolist()) == set(range(-3, 4))
    assert abs(np.bincount(r.numpy() + 3).std() / 1000) < 0.1
    assert ndl.randint(5, size=(2, 3)).shape == (2, 3) and ndl.randint(low=1, high=2, size=(2,)).numpy().tolist() == [1, 1]
    p = ndl.randperm(50)
    assert sorted(p.numpy().tolist()) == list(range(50)) and p.dtype == ndl.int64
    assert ndl.randperm(0).shape == (0,) and ndl.randn(0, 3).shape == (0, 3)
    assert ndl.randn(2, requires_grad=True).requires_grad and ndl.randn((2, 3)).shape == (2, 3)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ndl.randint(5, 5, (2,)), ValueError, "smaller than high"),
    (lambda: ndl.randint(5), TypeError, "size"),
    (lambda: ndl.randint(1, 5, 3), TypeError, "size"),
    (lambda: ndl.randperm(-1), ValueError, "non-negative"),
    (lambda: ndl.randperm(2.5), TypeError, "int"),
    (lambda: ndl.randn(2, -1), ValueError, "negative"),
    (lambda: ndl.randint(3, (2,), requires_grad=True), TypeError, "floating"),
])
def test_random_functions_refuse_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_multinomial_with_replacement_follows_the_weights():
    np.random.seed(1)
    w = ndl.tensor([[0.0, 1.0, 3.0, 0.0], [5.0, 0.0, 0.0, 5.0]], dtype=ndl.float64)
    s = ndl.multinomial(w, 20000, replacement=True)
    assert s.shape == (2, 20000) and s.dtype == ndl.int64
    counts = [np.bincount(row, minlength=4) / 20000 for row in s.numpy()]
    np.testing.assert_allclose(counts[0], [0, 0.25, 0.75, 0], atol=0.015)
    np.testing.assert_allclose(counts[1], [0.5, 0, 0, 0.5], atol=0.015)
    one = ndl.multinomial(ndl.tensor([0.1, 0.9]), 3, True)
    assert one.shape == (3,) and set(one.numpy().tolist()) <= {0, 1}


def test_multinomial_without_replacement_draws_each_category_once_in_weighted_order():
    np.random.seed(2)
    w = ndl.tensor([0.0, 10.0, 3.0, 0.0])
    for _ in range(20):  # the two positive categories first, then the zero ones in index order (PyTorch's)
        row = ndl.multinomial(w, 4).numpy().tolist()
        assert sorted(row[:2]) == [1, 2] and row[2:] == [0, 3]
    firsts = [ndl.multinomial(ndl.tensor([1.0, 3.0]), 2).numpy()[0] for _ in range(4000)]
    assert abs(np.mean(firsts) - 0.75) < 0.03  # the first draw is proportional to the weights
    rows = ndl.multinomial(ndl.rand(50, 6) + 0.01, 6).numpy()
    assert all(sorted(r) == list(range(6)) for r in rows.tolist())


@pytest.mark.parametrize("weights, k, replacement, error, match", [
    ([1.0, -1.0], 1, False, RuntimeError, "< 0"),
    ([1.0, math.nan], 1, True, RuntimeError, "nan"),
    ([1.0, math.inf], 1, True, RuntimeError, "inf"),
    ([[1.0, 1.0], [0.0, 0.0]], 1, True, RuntimeError, "row 1"),
    ([1.0, 2.0], 3, False, ValueError, "without replacement"),
    ([1.0, 2.0], 0, True, ValueError, "num_samples"),
    ([[[1.0]]], 1, True, ValueError, "1-D or 2-D"),
])
def test_multinomial_errors(weights, k, replacement, error, match):
    with pytest.raises(error, match=match):
        ndl.multinomial(ndl.tensor(weights), k, replacement)


def test_multinomial_refuses_integer_weights():
    with pytest.raises(TypeError, match="floating"):
        ndl.multinomial(ndl.tensor([1, 2]), 1)


def test_random_draws_in_a_compiled_step_are_fresh_on_every_replay_and_match_the_eager_run():
    g = ndl.Generator()

    def step(x):
        noise = ndl.randn(*x.shape, generator=g)
        picks = ndl.multinomial(x * x + 0.1, 2)
        values, indices = (x + noise).topk(2)
        return x + noise + ndl.rand(*x.shape), picks, values, indices, ndl.randint(0, 5, (3,)), ndl.randperm(4)

    x = ndl.Tensor(data(3, 4).astype(np.float32), requires_grad=False)

    def run(fn):
        np.random.seed(0)
        g.manual_seed(1)
        return [[o.numpy() for o in fn(x)] for _ in range(5)]

    eager, compiled = run(step), run(ndl.compile(step))
    for a, b in zip(eager, compiled):
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    assert not np.array_equal(compiled[2][0], compiled[4][0])  # replays draw afresh


# --- inference_mode ---------------------------------------------------------------------------------------

def test_inference_mode_is_a_context_and_a_decorator():
    x = ndl.Tensor([1.0, 2.0])
    with ndl.inference_mode():
        assert not (x * 2).requires_grad
        with ndl.inference_mode(False):
            assert (x * 2).requires_grad
    assert (x * 2).requires_grad

    @ndl.inference_mode()
    def f(t):
        return t * 2

    @ndl.inference_mode
    def g(t):
        return t * 3

    assert not f(x).requires_grad and not g(x).requires_grad and ndl.is_grad_enabled()


# --- function forms and methods against PyTorch -------------------------------------------------------------

UNARY = [
    ("abs", lambda L, x: L.abs(x)), ("abs method", lambda L, x: x.abs()),
    ("sin", lambda L, x: L.sin(x)), ("cos", lambda L, x: L.cos(x)), ("sin method", lambda L, x: x.sin().cos()),
    ("log10", lambda L, x: L.log10(x.abs() + 0.5)), ("log10 method", lambda L, x: (x * x + 1).log10()),
    ("exp", lambda L, x: L.exp(x)), ("log", lambda L, x: L.log(x.abs())), ("tanh", lambda L, x: L.tanh(x)),
    ("sqrt", lambda L, x: L.sqrt(x.abs())), ("sigmoid", lambda L, x: L.sigmoid(x)),
    ("pow", lambda L, x: L.pow(x, 3)), ("pow tensor", lambda L, x: L.pow(x.abs(), x)),
    ("pow number base", lambda L, x: L.pow(2.0, x)), ("pow method", lambda L, x: x.pow(2)),
    ("clamp", lambda L, x: L.clamp(x, -0.5, 0.7)), ("clamp min", lambda L, x: x.clamp(min=0.1)),
    ("clamp max", lambda L, x: x.clamp(max=-0.2)), ("clip", lambda L, x: L.clip(x, -1, 1)),
    ("clamp tensor bounds", lambda L, x: x.clamp(x * 0 - 0.3, x * 0 + 0.4)),
    ("softmax", lambda L, x: L.softmax(x, dim=1)), ("log_softmax", lambda L, x: L.log_softmax(x, 0)),
    ("sum", lambda L, x: L.sum(x)), ("sum dim", lambda L, x: L.sum(x, dim=1, keepdim=True)),
    ("sum positional", lambda L, x: L.sum(x, (0, 2))), ("mean dim", lambda L, x: L.mean(x, dim=-1)),
    ("mean", lambda L, x: L.mean(x)), ("max all", lambda L, x: L.max(x)), ("min all", lambda L, x: L.min(x)),
    ("min method", lambda L, x: x.min()),
    ("min dim values", lambda L, x: x.min(dim=1).values), ("min dim keepdim", lambda L, x: x.min(dim=0, keepdim=True)[0]),
    ("max dim function", lambda L, x: L.max(x, dim=2).values), ("min dim function", lambda L, x: L.min(x, dim=2)[0]),
    ("minimum", lambda L, x: L.minimum(x, x * -1)), ("max two tensors", lambda L, x: L.max(x, x * 0.5)),
    ("min two tensors", lambda L, x: L.min(x, x * 0.5)),
    ("var", lambda L, x: x.var()), ("var dim", lambda L, x: x.var(1)), ("var unbiased False", lambda L, x: x.var(1, False)),
    ("var keepdim", lambda L, x: x.var((0, 2), keepdim=True)), ("var correction", lambda L, x: L.var(x, 2, correction=0)),
    ("var old positional", lambda L, x: x.var(False)),
    ("std", lambda L, x: L.std(x)), ("std dim", lambda L, x: x.std(dim=2, keepdim=True)),
    ("std correction", lambda L, x: x.std(2, correction=2)),
    ("tril", lambda L, x: L.tril(x)), ("triu", lambda L, x: L.triu(x, 1)), ("tril method", lambda L, x: x.tril(-1)),
    ("triu method", lambda L, x: x.triu(diagonal=-1)),
    ("roll", lambda L, x: L.roll(x, 2)), ("roll dims", lambda L, x: L.roll(x, (1, -2), (0, 2))),
    ("roll method", lambda L, x: x.roll(-1, 1)),
    ("cat", lambda L, x: L.cat([x, x * 2, x[:1]], 0)), ("cat dim", lambda L, x: L.cat((x, x), dim=-1)),
    ("cat one", lambda L, x: L.cat([x], 1) * 2),
    ("stack dim", lambda L, x: L.stack([x, x * 3], dim=1)), ("stack default", lambda L, x: L.stack([x, x])),
    ("split", lambda L, x: x.split(2, dim=2)[1]), ("split sizes", lambda L, x: x.split([1, 3], 2)[1] * 2),
    ("split all used", lambda L, x: x.split(1)[0] + x.split(1)[1]),
    ("chunk", lambda L, x: x.chunk(3, 2)[0]), ("chunk function", lambda L, x: L.chunk(x, 2, 1)[-1]),
    ("unbind", lambda L, x: L.unbind(x, 1)[2]), ("unbind method", lambda L, x: x.unbind()[1]),
    ("unsqueeze", lambda L, x: x.unsqueeze(1)), ("unsqueeze end", lambda L, x: L.unsqueeze(x, -1)),
    ("squeeze", lambda L, x: x[:1].squeeze()), ("squeeze dim", lambda L, x: x[:, :1].squeeze(1)),
    ("squeeze other dim", lambda L, x: x.squeeze(0)), ("squeeze tuple", lambda L, x: x[:1, :1].squeeze((0, 1))),
    ("expand", lambda L, x: x[:, :1].expand(-1, 3, -1)), ("expand new", lambda L, x: x.expand(2, *x.shape)),
    ("expand tuple", lambda L, x: x[:1].expand((2, 3, 4))), ("expand_as", lambda L, x: x[:1].expand_as(x)),
    ("narrow", lambda L, x: x.narrow(1, 1, 2)), ("narrow negative", lambda L, x: L.narrow(x, 2, -2, 2)),
    ("clone", lambda L, x: x.clone() * 1), ("clone function", lambda L, x: L.clone(x)),
    ("contiguous", lambda L, x: x.contiguous()), ("contiguous broadcast", lambda L, x: x[:1].expand(2, 3, 4).contiguous()),
    ("view_as", lambda L, x: x.view_as(x.reshape(4, 6))), ("reshape_as", lambda L, x: x.reshape_as(x.reshape(6, 4))),
    ("masked_fill", lambda L, x: x.masked_fill(x > 0.3, -1.5)), ("masked_fill inf", lambda L, x: L.masked_fill(x, x < 0, -math.inf)),
    ("masked_fill broadcast mask", lambda L, x: x.masked_fill(x[:1] > 0, 0.0)),
    ("topk", lambda L, x: L.topk(x, 2).values), ("topk smallest", lambda L, x: x.topk(3, dim=1, largest=False)[0]),
    ("topk dim 0", lambda L, x: x.topk(1, 0).values), ("sort", lambda L, x: L.sort(x, dim=1).values),
    ("sort descending", lambda L, x: x.sort(descending=True)[0]),
    ("gather", lambda L, x: L.gather(x, 2, L.tensor([[[0, 3], [1, 1], [2, 0]], [[3, 3], [0, 1], [2, 2]]]))),
    ("gather method", lambda L, x: x.gather(0, L.tensor([[[1, 0, 1, 0]]]))),
]


@pytest.mark.parametrize("name, fn", UNARY, ids=[u[0] for u in UNARY])
def test_functions_and_methods_match_torch_in_value_and_gradient(name, fn):
    x, t = pair(data(2, 3, 4))
    ours, theirs = fn(ndl, x), fn(torch, t)
    same(ours, theirs)
    grads_agree(ours, theirs, [x], [t])


def test_integer_and_index_results_match_torch():
    a = data(3, 5)
    a[1, 0] = a[1, 2] = -5.0  # a tie for the minimum of row 1
    x, t = pair(a, requires_grad=False)
    same(x.argmin(), t.argmin(), exact=True)
    same(ndl.argmin(x, dim=1), torch.argmin(t, dim=1), exact=True)
    same(x.argmin(dim=0, keepdim=True), t.argmin(dim=0, keepdim=True), exact=True)
    same(ndl.argmax(x, dim=1, keepdim=True), torch.argmax(t, dim=1, keepdim=True), exact=True)
    same(x.min(dim=1).indices, t.min(dim=1).indices, exact=True)
    same(x.topk(2).indices, t.topk(2).indices, exact=True)
    same(x.topk(2, 0, largest=False).indices, t.topk(2, 0, largest=False).indices, exact=True)
    same(x.sort(0).indices, t.sort(dim=0, stable=True).indices, exact=True)
    same(ndl.argsort(x, descending=True), torch.argsort(t, descending=True, stable=True), exact=True)
    i, j = pair(np.array([[3, 1, 2], [0, 0, 5]]))
    same(i.min(), j.min(), exact=True)
    same(i.min(dim=1).values, j.min(dim=1).values, exact=True)
    same(ndl.sum(i, dim=0), torch.sum(j, dim=0), exact=True)
    same(i.clamp(1, 2), j.clamp(1, 2), exact=True)
    same(ndl.abs(-i), torch.abs(-j), exact=True)
    same(i.tril(), j.tril(), exact=True)
    same(i.masked_fill(i > 1, 9), j.masked_fill(j > 1, 9), exact=True)
    same(i.masked_fill(i > 1, 1.9), j.masked_fill(j > 1, 1.9), exact=True)  # truncated into the int tensor
    same(ndl.cat([i, i.float()], 1), torch.cat([j, j.float()], 1), exact=True)  # promoted
    same(i.sort(descending=True).values, j.sort(descending=True).values, exact=True)
    b, c = pair(np.array([[True, False], [True, True]]))
    same(b.min(), c.min(), exact=True)
    same(b.min(dim=0).values, c.min(dim=0).values, exact=True)
    same(b.tril(), c.tril(), exact=True)


def test_max_and_min_take_pytorchs_positional_dim():
    """x.max(1) and ndl.max(x, 1, True) are PyTorch's (values, indices); the course's axes=
    keyword still gives the values; a tensor argument gives the elementwise extreme."""
    x, t = pair(data(3, 5), requires_grad=False)
    for ours, theirs in ((x.max(1), t.max(1)), (x.min(0, True), t.min(0, True)),
                         (ndl.max(x, 1, True), torch.max(t, 1, True)), (ndl.min(x, -1), torch.min(t, -1))):
        values, indices = ours
        same(values, theirs.values)
        same(indices, theirs.indices, exact=True)
        same(ours.values, theirs[0])
    same(x.max(axes=1), t.amax(1))
    same(x.min(axes=(0, 1), keepdims=True), t.amin((0, 1), keepdim=True))
    same(x.max((0, 1)), t.amax((0, 1)))
    same(x.max(x * 0.5), torch.max(t, t * 0.5))
    same(ndl.min(x, x * 0.5), torch.min(t, t * 0.5))
    with pytest.raises(TypeError, match="axis is given twice"):
        x.max(1, dim=0)
    with pytest.raises(TypeError, match="one axis"):
        x.min(dim=(0, 1))


def test_sort_topk_and_argmin_treat_nan_as_torch_does():
    x, t = pair(np.array([1.0, math.nan, math.inf, 2.0, -math.inf, 3.0]), requires_grad=False)
    for ours, theirs in ((x.sort(), t.sort(stable=True)), (x.sort(descending=True), t.sort(descending=True, stable=True)),
                         (x.topk(3), t.topk(3)), (x.topk(2, largest=False), t.topk(2, largest=False))):
        same(ours.values, theirs.values, exact=True)
        same(ours.indices, theirs.indices, exact=True)
    same(x.argmin(), t.argmin(), exact=True)
    same(x.min(), t.min(), exact=True)


@pytest.mark.parametrize("which", ["both", "min", "max"])
def test_clamp_with_tensor_bounds_follows_torch_at_nan_and_crossed_bounds(which):
    nan = math.nan
    a = np.array([[nan, 0.0, 1.0, 2.0, 3.0, -1.0], [0.5, 1.5, 2.5, 1.0, 2.0, nan]])
    lo = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, nan], [2.0, 2.0, 2.0, 1.0, 1.0, 0.0]])  # some above hi
    hi = np.array([[2.0, 2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 2.0, 3.0]])
    (x, t), (xl, tl), (xh, th) = pair(a), pair(lo), pair(hi)
    kw = {"both": ({"min": xl, "max": xh}, {"min": tl, "max": th}), "min": ({"min": xl}, {"min": tl}),
          "max": ({"max": xh}, {"max": th})}[which]
    ours, theirs = x.clamp(**kw[0]), t.clamp(**kw[1])
    same(ours, theirs)
    grads_agree(ours, theirs, [x, *kw[0].values()], [t, *kw[1].values()])
    wide = ndl.clamp(ndl.zeros(3, dtype=ndl.float64), ndl.Tensor([[-1.0], [1.0]], dtype="float64"))  # broadcast
    assert wide.shape == (2, 3) and wide.numpy().tolist() == [[0.0] * 3, [1.0] * 3]


@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (0, True), ((0, 1), False), (-1, True)])
def test_all_and_any(dim, keepdim):
    a = np.array([[1.0, 0.0, math.nan], [2.0, 3.0, -1.0], [0.0, 0.0, 0.0]])
    x, t = pair(a, requires_grad=False)
    kw = {} if dim is None else {"dim": dim, "keepdim": keepdim}
    same(x.all(**kw), t.all(**kw), exact=True)
    same(ndl.any(x, **kw), torch.any(t, **kw), exact=True)
    assert ndl.all(ndl.zeros(0)).item() is True and ndl.any(ndl.zeros(0)).item() is False
    assert ndl.tensor([True, False]).any().item() and not ndl.tensor([True, False]).all().item()


def test_allclose_and_isclose():
    a = np.array([1.0, math.inf, -math.inf, math.nan, 1e-9, 100.0])
    for b in (a.copy(), a + np.array([1e-6, 0, 0, 0, 0, 1e-3]), a * 1.01, np.where(np.isnan(a), 1.0, a)):
        for equal_nan in (False, True):
            for kw in ({}, {"rtol": 1e-2}, {"atol": 1e-3, "rtol": 0.0}):
                ours = ndl.allclose(ndl.Tensor(a, dtype="float64"), ndl.Tensor(b, dtype="float64"), equal_nan=equal_nan, **kw)
                theirs = torch.allclose(torch.tensor(a), torch.tensor(b), equal_nan=equal_nan, **kw)
                assert ours is theirs
                same(ndl.isclose(ndl.Tensor(a, dtype="float64"), ndl.Tensor(b, dtype="float64"), equal_nan=equal_nan, **kw),
                     torch.isclose(torch.tensor(a), torch.tensor(b), equal_nan=equal_nan, **kw), exact=True)
    assert ndl.allclose(ndl.tensor([1, 2]), ndl.tensor([1, 2])) and not ndl.allclose(ndl.tensor([1, 2]), ndl.tensor([1, 3]))
    with pytest.raises(TypeError, match="dtypes differ"):
        ndl.allclose(ndl.tensor([1.0]), ndl.tensor([1.0], dtype=ndl.float64))


# --- histograms ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, bins, low, high", [
    ([1.0, 2.0, 1.0], 4, 0, 3),
    ([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, -1.0, math.nan], 3, 0, 3),
    ([1.0, 2.0, 5.0], 4, 2, 2),  # min == max: the data's range
    ([1.0, 1.0], 4, 0, 0),  # one value: widened by 1
    (list(np.random.RandomState(0).randn(500)), 10, -2, 2),
])
def test_histc_follows_torch(values, bins, low, high):
    for dtype in ("float64", "float32"):
        a = np.array(values, dtype=dtype)
        same(ndl.histc(ndl.Tensor(a, dtype=dtype), bins, low, high),
             torch.histc(torch.tensor(a), bins, low, high), exact=True)
        same(ndl.Tensor(a, dtype=dtype).histc(bins=bins, min=low, max=high),
             torch.tensor(a).histc(bins=bins, min=low, max=high), exact=True)


@pytest.mark.parametrize("kwargs", [{"bins": 4}, {"bins": 4, "range": (0.0, 3.0)}, {"bins": 3, "range": (1.0, 1.0)},
                                    {"bins": 5, "density": True}, {"bins": 4, "range": (0.0, 3.0), "weight": True},
                                    {"bins": 4, "range": (0.0, 3.0), "weight": True, "density": True}])
def test_histogram_follows_torch(kwargs):
    for a in (np.array([1.0, 2.0, 1.0, 0.0, 3.0, 2.5, 7.0, -1.0]), np.random.RandomState(1).randn(300)):
        w = np.random.RandomState(2).rand(*a.shape)
        ours_kw, theirs_kw = dict(kwargs), dict(kwargs)
        if kwargs.get("weight"):
            ours_kw["weight"], theirs_kw["weight"] = ndl.Tensor(w, dtype="float64"), torch.tensor(w)
        ours = ndl.histogram(ndl.Tensor(a, dtype="float64"), **ours_kw)
        theirs = torch.histogram(torch.tensor(a), **theirs_kw)
        same(ours.bin_edges, theirs.bin_edges, rtol=1e-15)
        same(ours.hist, theirs.hist, rtol=1e-12)


def test_histogram_with_bin_edges():
    a = np.array([1.0, 2.0, 1.0, 7.0, 0.0, 5.0, 4.999, -1.0, math.nan])
    edges = np.array([0.0, 1.0, 5.0, 6.0])
    ours = ndl.histogram(ndl.Tensor(a, dtype="float64"), ndl.Tensor(edges, dtype="float64"))
    theirs = torch.histogram(torch.tensor(a), torch.tensor(edges))
    same(ours.hist, theirs.hist, exact=True)
    same(ours.bin_edges, theirs.bin_edges, exact=True)
    one = ndl.histogram(ndl.Tensor(a, dtype="float64"), ndl.Tensor([0.0, 10.0], dtype="float64"), density=True)
    same(one[0], torch.histogram(torch.tensor(a), torch.tensor([0.0, 10.0], dtype=torch.float64), density=True)[0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: ndl.histc(ndl.tensor([1, 2]), 3), TypeError, "floating-point"),
    (lambda: ndl.histc(ndl.tensor([1.0]), 0), ValueError, "bins"),
    (lambda: ndl.histc(ndl.tensor([1.0]), 2, 3, 1), ValueError, "smaller than min"),
    (lambda: ndl.histc(ndl.tensor([1.0, math.nan]), 2), ValueError, "not finite"),
    (lambda: ndl.histc(ndl.zeros(0), 2), ValueError, "empty"),
    (lambda: ndl.histogram(ndl.tensor([1.0]), 2, range=(2.0, 1.0)), ValueError, "range"),
    (lambda: ndl.histogram(ndl.tensor([1.0]), ndl.tensor([1.0])), ValueError, "at least 2"),
    (lambda: ndl.histogram(ndl.tensor([1.0]), ndl.tensor([1.0, 2.0], dtype=ndl.float64)), TypeError, "must match"),
    (lambda: ndl.histogram(ndl.tensor([1.0]), 2, weight=ndl.tensor([1.0, 2.0])), ValueError, "weight"),
])
def test_histogram_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- split, chunk, cat: PyTorch's pieces -----------------------------------------------------------------

@pytest.mark.parametrize("n, arg", [(10, 3), (10, [2, 8]), (9, 3), (4, 5), (0, 2), (6, [0, 6, 0])])
def test_split_and_chunk_pieces_match_torch(n, arg):
    x, t = pair(np.arange(2 * n, dtype=np.float64).reshape(2, n))
    assert [tuple(p.shape) for p in x.split(arg, 1)] == [tuple(p.shape) for p in t.split(arg, 1)]
    for p, q in zip(x.split(arg, 1), t.split(arg, 1)):
        same(p, q, exact=True)
    if isinstance(arg, int):
        assert [tuple(p.shape) for p in x.chunk(arg, 1)] == [tuple(p.shape) for p in t.chunk(arg, 1)]
    assert isinstance(ndl.split(x, 0), ndl.TensorTuple) and len(ndl.split(x, 0)) == 2  # the course's unbind stays


def test_cat_skips_legacy_empty_tensors_and_keeps_the_graph():
    x, t = pair(data(2, 3))
    ours = ndl.cat([x, ndl.zeros(0, dtype=ndl.float64), x], 0)
    theirs = torch.cat([t, torch.zeros(0, dtype=torch.float64), t], 0)
    same(ours, theirs)
    grads_agree(ours, theirs, [x], [t])
    same(ndl.cat([x, x], axis=1), torch.cat([t, t], axis=1))


@pytest.mark.parametrize("call, error, match", [
    (lambda x: ndl.cat([x, x.reshape(3, 2)], 0), ValueError, "tensor 1 has shape"),
    (lambda x: ndl.cat([], 0), ValueError, "at least one"),
    (lambda x: ndl.cat(x, 0), TypeError, "list or tuple"),
    (lambda x: ndl.cat([x, x], 2), ValueError, "axis 2"),
    (lambda x: ndl.cat([x, x.to("cpu_numpy")]), ValueError, "cpu_numpy"),
    (lambda x: x.split(0), ValueError, "positive"),
    (lambda x: x.split([1, 2]), ValueError, "add up"),
    (lambda x: x.chunk(0), ValueError, "positive"),
    (lambda x: x.narrow(1, 2, 2), ValueError, "do not fit"),
    (lambda x: x.expand(3, 3), ValueError, "from 2 to 3"),
    (lambda x: x.expand(-1, 2, 3), ValueError, "-1"),
    (lambda x: x.expand(3), ValueError, "1 sizes"),
    (lambda x: x.unsqueeze(3), ValueError, "axis 3"),
    (lambda x: x.tril().sum(dim=0).tril(), ValueError, "at least 2 dimensions"),
    (lambda x: x.masked_fill(x, 0.0), TypeError, "bool"),
    (lambda x: x.masked_fill(x > 0, x), ValueError, "0-d"),
    (lambda x: x.topk(4), ValueError, "k = 4"),
    (lambda x: x.clamp(), ValueError, "min, max or both"),
    (lambda x: x.gather(1, ndl.tensor([[0.0]])), TypeError, "int64"),
    (lambda x: x.gather(1, ndl.tensor([0])), ValueError, "dimensions"),
    (lambda x: x.gather(1, ndl.tensor([[5]])), IndexError, "out of bounds"),
    (lambda x: x.var(correction=1, unbiased=True), TypeError, "not both"),
    (lambda x: ndl.tensor([1, 2]).var(), TypeError, "floating-point"),
    (lambda x: x.roll((1, 2), 0), ValueError, "shifts"),
    (lambda x: ndl.stack([x, x], 0, dim=1), TypeError, "not both"),
    (lambda x: x.type("torch.ComplexTensor"), TypeError, "unknown tensor type"),
])
def test_bad_arguments_raise_clear_errors(call, error, match):
    x = ndl.Tensor(data(2, 3), requires_grad=False)
    with pytest.raises(error, match=match):
        call(x)


# --- small methods -------------------------------------------------------------------------------------------

def test_tolist_index_nelement_and_type():
    x, t = pair(np.arange(6.0).reshape(2, 3))
    assert x.tolist() == t.tolist() and ndl.tensor(2.5).tolist() == 2.5 and ndl.tensor([[True]]).tolist() == [[True]]
    assert x.nelement() == t.nelement() == 6 == ndl.numel(x)
    n = ndl.tensor(3)
    assert list(range(n)) == [0, 1, 2] and ["a", "b", "c", "d"][n] == "d" and ["a", "b"][ndl.tensor([1])] == "b"
    with pytest.raises(TypeError, match="integer tensors of a single element"):
        range(ndl.tensor(2.0))
    with pytest.raises(TypeError, match="integer tensors of a single element"):
        [1, 2][ndl.tensor([0, 1])]
    assert x.type() == t.type() == "torch.DoubleTensor" and x.float().type() == "torch.FloatTensor"
    assert x.long().type() == "torch.LongTensor" and (x > 1).type() == "torch.BoolTensor"
    assert x.type(ndl.float32).dtype == ndl.float32 and x.type("torch.IntTensor").dtype == ndl.int64
    assert x.type("torch.FloatTensor").dtype == ndl.float32
    assert x.is_floating_point() and not ndl.is_floating_point(x.long()) and ndl.is_tensor(x) and not ndl.is_tensor(t)


def test_new_tensors_take_this_ones_dtype_and_device():
    x = ndl.Tensor(np.ones((2, 2)), dtype="float64", device=ndl.cpu_numpy())
    t = torch.ones((2, 2), dtype=torch.float64)
    for ours, theirs in ((x.new_zeros(3, 2), t.new_zeros(3, 2)), (x.new_ones((2,)), t.new_ones((2,))),
                         (x.new_full((2, 1), 7), t.new_full((2, 1), 7)), (x.new_tensor([1, 2]), t.new_tensor([1, 2])),
                         (x.new_zeros(2, dtype=ndl.long), t.new_zeros(2, dtype=torch.long)),
                         (x.new_empty(4).zero_(), t.new_empty(4).zero_())):
        same(ours, theirs, exact=True)
        assert ours.device == ndl.cpu_numpy() and not ours.requires_grad
    assert x.new_zeros(2, requires_grad=True).requires_grad
    source = ndl.Tensor([1.0, 2.0])
    copy = source.new_tensor(source)
    copy[0] = 5.0
    assert source.numpy()[0] == 1.0 and copy.dtype == ndl.float32  # a copy, detached
    with pytest.raises(TypeError, match="fill_value"):
        x.new_full((2,), None)


def test_contiguous_gives_a_buffer_of_its_own_where_the_data_is_a_broadcast():
    x = ndl.Tensor(np.arange(3.0), requires_grad=False)
    assert x.contiguous() is x and x.is_contiguous()
    wide = x.reshape(1, 3).expand(2, 3)
    assert not wide.is_contiguous()
    own = wide.contiguous()
    assert own.is_contiguous() and own.shape == (2, 3)
    own[0, 0] = 9.0
    assert x.numpy()[0] == 0.0 and own.numpy().tolist() == [[9.0, 1.0, 2.0], [0.0, 1.0, 2.0]]


def test_clone_is_a_copy_in_the_graph():
    x = ndl.Tensor([1.0, 2.0])
    y = x.clone()
    with ndl.no_grad():
        y[0] = 7.0
    assert x.numpy()[0] == 1.0
    z = x.clone()
    (z * 3).sum().backward()
    assert x.grad.numpy().tolist() == [3.0, 3.0]


def test_retain_grad_marks_non_leaves_whose_grad_backward_fills():
    x, t = pair(data(3))
    y, u = x * 2, t * 2
    assert y.retain_grad() is None and u.retain_grad() is None
    assert y.retains_grad and u.retains_grad and not x.retains_grad
    (y * y).sum().backward()
    (u * u).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), u.grad.numpy())
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    with pytest.raises(RuntimeError, match="does not require grad"):
        ndl.tensor([1.0]).retain_grad()


def test_masked_fill_in_place():
    x, t = pair(data(2, 3), requires_grad=False)
    assert x.masked_fill_(x > 0, 0.5) is x
    t.masked_fill_(t > 0, 0.5)
    same(x, t)
    a, b = pair(data(2, 3))
    y, u = a * 1, b * 1
    y.masked_fill_(a.detach() < 0, 0.0)
    u.masked_fill_(b.detach() < 0, 0.0)
    grads_agree(y, u, [a], [b])


def test_cuda_method_needs_the_device():
    x = ndl.Tensor([1.0])
    assert ndl.cuda.is_available() is ndl.cuda().enabled() and ndl.cuda.device_count() == int(ndl.cuda().enabled())
    device = ndl.device("cuda" if ndl.cuda.is_available() else "cpu")  # PyTorch's idiom
    assert ndl.zeros(2, device=device).device == device
    if ndl.cuda().enabled():
        assert x.cuda().device == ndl.cuda()
    else:
        with pytest.raises(RuntimeError, match="not available"):
            x.cuda()


# --- second-order gradients go through the new ops ----------------------------------------------------------

SECOND_ORDER = [
    ("sin", lambda L, x: x.sin()), ("cos", lambda L, x: L.cos(x)), ("abs", lambda L, x: x.abs() * x),
    ("var", lambda L, x: x.var(0)), ("std", lambda L, x: x.std(1)), ("topk", lambda L, x: x.topk(2, 0)[0] ** 2),
    ("cat", lambda L, x: L.cat([x, x * x], 0)), ("split", lambda L, x: x.split(1)[1] ** 3),
    ("clamp", lambda L, x: x.clamp(-0.5, 0.5) * x), ("min", lambda L, x: x.min(dim=1).values ** 2),
    ("roll", lambda L, x: L.roll(x * x, 1, 0)), ("masked_fill", lambda L, x: (x * x).masked_fill(x > 0, 1.0)),
]


@pytest.mark.parametrize("name, fn", SECOND_ORDER, ids=[s[0] for s in SECOND_ORDER])
def test_gradients_of_gradients_match_torch(name, fn):
    x, t = pair(data(3, 2))
    ours, theirs = fn(ndl, x), fn(torch, t)
    ours.sum().backward()
    first = x.grad
    (first * first).sum().backward()
    (g,) = torch.autograd.grad(theirs.sum(), t, create_graph=True)
    (gg,) = torch.autograd.grad((g * g).sum(), t, allow_unused=True)
    gg = torch.zeros_like(t) if gg is None else gg
    np.testing.assert_allclose(first.numpy(), g.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), gg.numpy(), rtol=1e-12, atol=1e-12)
