"""Bad inputs fail early with the right exception type and a message naming the culprit.

Each case asserts the exception class and that the message names the offending
shapes, axes, devices or dtype, so a user can fix the call from the message alone.
(numpy-mode-only errors, such as backward() of an int tensor, are in tests/np_mode.)
"""
import re

import numpy as np
import pytest

import needle as ndl
from needle import backend_ndarray as nd


def T(*shape, device=None):
    return ndl.Tensor(np.random.randn(*shape), device=device)


def A(*shape, device=None):
    return nd.array(np.random.randn(*shape), device=device)


def shapes(*ss):
    """A regex matching every shape in `ss`, in that order, anywhere in the message."""
    return ".*".join(re.escape(str(tuple(s))) for s in ss)


CPU, CPU_NUMPY = ndl.cpu(), ndl.cpu_numpy()
DEVICES = r"cpu\(\).*cpu_numpy\(\)|cpu_numpy\(\).*cpu\(\)"


def _set_data_wrong_dtype():
    t = T(2, 2)
    t.data = ndl.Tensor(np.ones((2, 2)), dtype="float64")


def _setitem_wrong_device():
    a = A(2, 3)
    a[0, :] = A(1, 3, device=nd.cpu_numpy())


def _setitem_wrong_shape():
    a = A(2, 3)
    a[:, 0:2] = A(3)


# (id, callable, exception type, regex the message must match)
CASES = [
    # elementwise ops need equal shapes; the operators broadcast
    ("EWiseAdd shapes", lambda: ndl.ops.EWiseAdd()(T(2, 3), T(3, 2)), ValueError, shapes((2, 3), (3, 2))),
    ("EWiseAdd no implicit broadcast", lambda: ndl.ops.EWiseAdd()(T(2, 3), T(1, 3)), ValueError,
     shapes((2, 3), (1, 3))),
    ("EWiseMul shapes", lambda: ndl.ops.EWiseMul()(T(4, 3), T(3)), ValueError, shapes((4, 3), (3,))),
    ("EWiseDiv shapes", lambda: ndl.divide(T(2, 2), T(3,)), ValueError, shapes((2, 2), (3,))),
    ("EWiseDiv class shapes", lambda: ndl.ops.EWiseDiv()(T(2, 2), T(2, 1)), ValueError, shapes((2, 2), (2, 1))),
    ("EWisePow shapes", lambda: ndl.power(T(5), T(4)), ValueError, shapes((5,), (4,))),
    ("+ not broadcastable", lambda: T(2, 3) + T(4), ValueError, shapes((2, 3), (4,))),
    ("* not broadcastable", lambda: T(2, 3, 4) * T(3, 3), ValueError, shapes((2, 3, 4), (3, 3))),
    ("NDArray + shapes", lambda: A(2, 3) + A(3, 2), ValueError, shapes((2, 3), (3, 2))),
    ("NDArray maximum shapes", lambda: A(2, 3).maximum(A(2)), ValueError, shapes((2, 3), (2,))),
    # matmul
    ("matmul inner", lambda: T(2, 3) @ T(4, 5), ValueError, shapes((2, 3), (4, 5))),
    ("matmul inner batched", lambda: ndl.matmul(T(6, 5, 4), T(6, 3, 3)), ValueError,
     shapes((6, 5, 4), (6, 3, 3))),
    ("matmul 1-D inner", lambda: ndl.matmul(T(3), T(4)), ValueError, shapes((3,), (4,))),
    ("matmul batch dims", lambda: T(2, 2, 3) @ T(3, 3, 4), ValueError, shapes((2, 2, 3), (3, 3, 4))),
    ("NDArray matmul inner", lambda: A(2, 3) @ A(2, 3), ValueError, shapes((2, 3), (2, 3))),
    ("NDArray matmul batch", lambda: A(2, 2, 3) @ A(3, 3, 4), ValueError, shapes((2, 2, 3), (3, 3, 4))),
    ("NDArray matmul 0-d", lambda: A(3) @ nd.array(np.array(2.0)), ValueError, shapes((3,), ())),
    ("NDArray matmul scalar", lambda: A(3) @ 2, TypeError, "int"),
    # reshape / broadcast / stack
    ("reshape size", lambda: ndl.reshape(T(2, 3), (4, 2)), ValueError, shapes((2, 3), (4, 2))),
    ("reshape two -1", lambda: T(2, 3).reshape((-1, -1)), ValueError, shapes((2, 3), (-1, -1))),
    ("NDArray reshape size", lambda: A(2, 3).reshape((5,)), ValueError, shapes((2, 3), (5,))),
    ("NDArray reshape -1", lambda: A(2, 3).reshape((-1, 4)), ValueError, shapes((2, 3), (-1, 4))),
    ("NDArray reshape non-compact", lambda: A(2, 3).permute((1, 0)).reshape((6,)), ValueError,
     r"non-compact.*" + shapes((3, 2))),
    ("broadcast_to impossible", lambda: ndl.broadcast_to(T(2, 3), (4, 3, 2)), ValueError,
     shapes((2, 3), (4, 3, 2))),
    ("broadcast_to fewer dims", lambda: ndl.broadcast_to(T(2, 3), (3,)), ValueError, shapes((2, 3), (3,))),
    ("NDArray broadcast_to", lambda: A(2, 3).broadcast_to((2, 4)), ValueError, shapes((2, 3), (2, 4))),
    ("stack unequal shapes", lambda: ndl.stack([T(2, 3), T(2, 3), T(3, 2)], 0), ValueError,
     r"tensor 2.*" + shapes((3, 2), (2, 3))),
    ("NDArray stack unequal", lambda: nd.stack([A(2), A(3)]), ValueError, shapes((3,), (2,))),
    ("stack nothing", lambda: ndl.stack([], 0), ValueError, "at least one"),
    # axes out of range / malformed
    ("summation axis", lambda: ndl.summation(T(2, 3), axes=2), ValueError, r"axis 2.*2 dimensions"),
    ("summation axes tuple", lambda: T(2, 3).sum(axes=(0, 5)), ValueError, r"axis 5.*2 dimensions"),
    ("summation negative axis", lambda: ndl.summation(T(2, 3), axes=-3), ValueError, r"axis -3.*2 dimensions"),
    ("summation repeated axis", lambda: ndl.summation(T(2, 3), axes=(1, 1)), ValueError, r"repeated axis.*\(1, 1\)"),
    ("summation float axis", lambda: ndl.summation(T(2, 3), axes=1.5), TypeError, r"1\.5"),
    ("logsumexp axis", lambda: ndl.logsumexp(T(2, 3), axes=(3,)), ValueError, r"logsumexp.*axis 3.*2 dimensions"),
    ("max axis", lambda: T(2, 3).max(axes=4), ValueError, r"max.*axis 4.*2 dimensions"),
    ("transpose axis", lambda: ndl.transpose(T(2, 3), (0, 2)), ValueError, r"transpose.*axis 2.*2 dimensions"),
    ("transpose 1-D", lambda: ndl.transpose(T(3)), ValueError, shapes((3,))),
    ("transpose three axes", lambda: ndl.transpose(T(2, 3, 4), (0, 1, 2)), ValueError, re.escape("(0, 1, 2)")),
    ("split axis", lambda: ndl.split(T(2, 3), 2), ValueError, r"split.*axis 2.*2 dimensions"),
    ("split negative axis", lambda: ndl.split(T(2, 3), -3), ValueError, r"split.*axis -3.*2 dimensions"),
    ("stack axis", lambda: ndl.stack([T(2, 3), T(2, 3)], 3), ValueError, r"stack.*axis 3.*3 dimensions"),
    ("flip axis", lambda: ndl.flip(T(2, 3), (2,)), ValueError, r"flip.*axis 2.*2 dimensions"),
    ("logsoftmax 0-d", lambda: ndl.logsoftmax(ndl.Tensor(np.array(1.0))), ValueError, "dimension"),
    ("NDArray sum axis", lambda: A(2, 3).sum(axis=2), ValueError, r"axis 2.*2 dimensions"),
    ("NDArray max axis", lambda: A(2, 3).max(axis=(0, -3)), ValueError, r"axis -3.*2 dimensions"),
    ("NDArray sum empty axes", lambda: A(2, 3).sum(axis=()), ValueError, r"empty tuple of axes"),
    ("NDArray max float axis", lambda: A(2, 3).max(axis=0.5), TypeError, r"0\.5"),
    ("NDArray flip axis", lambda: A(2, 3).flip((5,)), ValueError, r"axis 5.*2 dimensions"),
    # permutations
    ("permute repeated", lambda: T(2, 3, 4).permute((0, 0, 1)), ValueError,
     re.escape("(0, 0, 1)") + ".*" + shapes((2, 3, 4))),
    ("permute short", lambda: ndl.ops.Permute((1, 0))(T(2, 3, 4)), ValueError, re.escape("(1, 0)")),
    ("NDArray permute", lambda: A(2, 3).permute((0, 2)), ValueError, re.escape("(0, 2)") + ".*" + shapes((2, 3))),
    ("NDArray permute short", lambda: A(2, 3).permute((0,)), ValueError, re.escape("(0,)")),
    # devices
    ("Tensor add devices", lambda: T(2, 3, device=CPU) + T(2, 3, device=CPU_NUMPY), ValueError, DEVICES),
    ("Tensor EWiseMul devices", lambda: ndl.ops.EWiseMul()(T(2, device=CPU_NUMPY), T(2, device=CPU)), ValueError,
     DEVICES),
    ("Tensor matmul devices", lambda: T(2, 3, device=CPU) @ T(3, 3, device=CPU_NUMPY), ValueError, DEVICES),
    ("Tensor stack devices", lambda: ndl.stack([T(2, device=CPU), T(2, device=CPU_NUMPY)], 0), ValueError, DEVICES),
    ("NDArray add devices", lambda: A(3, device=nd.cpu()) + A(3, device=nd.cpu_numpy()), ValueError, DEVICES),
    ("NDArray matmul devices", lambda: A(2, 2, device=nd.cpu_numpy()) @ A(2, 2, device=nd.cpu()), ValueError,
     DEVICES),
    ("NDArray setitem devices", _setitem_wrong_device, ValueError, DEVICES),
    ("backward out_grad device", lambda: (T(2, device=CPU) * 2).backward(T(2, device=CPU_NUMPY)), ValueError,
     DEVICES),
    ("cuda not available", lambda: ndl.Tensor(np.ones(2), device=ndl.cuda()), RuntimeError, r"cuda\(\)"),
    ("unknown device name", lambda: ndl.Tensor(np.ones(2), device="tpu"), ValueError, "'tpu'"),
    ("device given as a number", lambda: ndl.Tensor(np.ones(2), device=3), TypeError, "int"),
    ("NDArray.to a string", lambda: A(2).to("cpu"), TypeError, "'cpu'"),
    # indexing
    ("Tensor index", lambda: T(2, 3)[2], IndexError, r"index 2.*axis 0.*size 2"),
    ("Tensor index axis 1", lambda: T(2, 3)[0, -4], IndexError, r"index -4.*axis 1.*size 3"),
    ("Tensor index array", lambda: T(4, 3)[np.array([0, 4])], IndexError, r"index 4.*axis 0.*size 4"),
    ("Tensor too many indices", lambda: T(2, 3)[0, 0, 0], IndexError, r"too many indices.*" + shapes((2, 3))),
    ("NDArray index", lambda: A(2, 3)[0, 3], IndexError, r"index 3.*axis 1.*size 3"),
    ("NDArray too many indices", lambda: A(2, 3)[0, 0, 0], IndexError, r"too many.*" + shapes((2, 3))),
    ("NDArray float index", lambda: A(3)[1.5], TypeError, r"float.*axis 0"),
    ("NDArray take_rows", lambda: A(2, 3).take_rows([0, 5]), IndexError, r"index 5.*axis 0.*size 2"),
    ("TensorTuple index", lambda: ndl.make_tuple(T(2), T(2))[3], IndexError, r"index 3.*length 2"),
    ("NDArray negative step", lambda: A(2, 3)[:, ::-1], ValueError, r"step.*-1.*axis 1"),
    ("NDArray zero step", lambda: A(4)[::0], ValueError, r"step.*0.*axis 0"),
    ("Tensor negative step", lambda: T(2, 3)[::-2, :], ValueError, r"step.*-2.*axis 0"),
    # conv
    ("conv channels", lambda: ndl.conv(T(1, 5, 5, 3), T(3, 3, 4, 2)), ValueError,
     r"3 channels.*" + shapes((1, 5, 5, 3)) + r".*expects 4.*" + shapes((3, 3, 4, 2))),
    ("conv rank", lambda: ndl.conv(T(5, 5, 3), T(3, 3, 3, 2)), ValueError, shapes((5, 5, 3), (3, 3, 3, 2))),
    ("conv kernel too big", lambda: ndl.conv(T(1, 2, 2, 3), T(5, 5, 3, 2), padding=0), ValueError,
     r"5x5.*" + shapes((1, 2, 2, 3))),
    ("conv stride", lambda: ndl.conv(T(1, 4, 4, 1), T(3, 3, 1, 1), stride=0), ValueError, r"stride=0"),
    # backward
    ("backward out_grad shape", lambda: (T(2, 3) * 2).backward(T(3, 2)), ValueError, shapes((3, 2), (2, 3))),
    ("backward out_grad type", lambda: (T(2, 3) * 2).backward(np.ones((2, 3))), TypeError, "ndarray"),
    # dtypes
    ("Tensor unknown dtype", lambda: ndl.Tensor(np.ones(3), dtype="flot32"), TypeError, "flot32"),
    ("NDArray unknown dtype", lambda: nd.array(np.ones(3), dtype="banana"), TypeError, "banana"),
    ("NDArray astype unknown", lambda: A(3).astype("float33"), TypeError, "float33"),
    ("empty unknown dtype", lambda: nd.empty((2,), dtype="foo"), TypeError, "foo"),
    ("init.zeros unknown dtype", lambda: ndl.init.zeros(2, 2, dtype="halfprecision"), TypeError, "halfprecision"),
    ("Tensor.data dtype", _set_data_wrong_dtype, TypeError, "float64.*float32"),
    # one_hot
    ("one_hot label too big", lambda: ndl.init.one_hot(3, ndl.Tensor(np.array([0, 3]))), ValueError,
     r"index 3.*3 classes"),
    ("one_hot negative label", lambda: ndl.init.one_hot(4, ndl.Tensor(np.array([1, -1]))), ValueError,
     r"index -1.*4 classes"),
    ("device one_hot", lambda: nd.cpu().one_hot(10, np.array([[1, 12]])), ValueError, r"index 12.*10 classes"),
    # misc NDArray arguments
    ("NDArray pad pairs", lambda: A(2, 3).pad(((1, 1),)), ValueError, shapes((2, 3))),
    ("NDArray pad negative", lambda: A(2, 3).pad(((0, 0), (-1, 0))), ValueError, re.escape("(-1, 0)")),
    ("NDArray setitem shape", _setitem_wrong_shape, ValueError, shapes((3,), (2, 2))),
    ("NDArray + numpy array", lambda: A(2, 3) + np.ones((2, 3)), TypeError, "ndarray"),
    ("Tensor + numpy array", lambda: T(2, 3) + np.ones((2, 3)), TypeError, "ndarray"),
    ("NDArray index_add_rows", lambda: A(3, 2).index_add_rows([1], A(2, 2)), ValueError, shapes((2, 2), (1, 2))),
    ("as_strided lengths", lambda: nd.as_strided(A(6), (2, 3), (1,)), ValueError, shapes((2, 3), (1,))),
    ("dilation negative", lambda: ndl.dilate(T(2, 3), (0,), -1), ValueError, "-1"),
    ("TensorTuple add length", lambda: ndl.make_tuple(T(2), T(2)) + ndl.make_tuple(T(2)), ValueError, "length"),
]


@pytest.mark.parametrize("fn,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_enough_cases():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


# --- the valid neighbours of the cases above do not raise ------------------------------------


def test_operators_broadcast_like_numpy():
    x, y = np.random.randn(2, 1, 3), np.random.randn(4, 1)
    a, b = ndl.Tensor(x), ndl.Tensor(y)
    for op in [lambda p, q: p + q, lambda p, q: p - q, lambda p, q: p * q, lambda p, q: p / q]:
        np.testing.assert_allclose(op(a, b).numpy(), op(x, y), rtol=1e-5, atol=1e-6)


def test_backward_without_out_grad_on_a_non_scalar_uses_ones():
    """The course's tests rely on this: y.backward() with y of any shape seeds with ones."""
    x = np.random.randn(3, 4)
    a = ndl.Tensor(x)
    (a * a).backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * x, rtol=1e-5)


def test_same_device_operations_are_fine():
    for dev in (CPU, CPU_NUMPY):
        a, b = T(2, 3, device=dev), T(3, 2, device=dev)
        assert (a @ b).device == dev
        out = ndl.stack([a, a], 0)
        assert out.device == dev and out.shape == (2, 2, 3)


def test_empty_flip_axes_is_identity():
    x = np.random.randn(2, 3)
    np.testing.assert_allclose(ndl.flip(ndl.Tensor(x), ()).numpy(), x, rtol=1e-6)
    np.testing.assert_allclose(nd.array(x).flip(()).numpy(), x, rtol=1e-6)


# --- found by a new user trying to break things -----------------------------------------------

def test_truth_value_of_a_one_element_tensor_is_its_value():
    assert bool(ndl.Tensor([-1.0]) > 0) is False  # before: len() == 1, so always True
    assert bool(ndl.Tensor([0.0])) is False
    assert bool(ndl.Tensor([[2.0]])) is True
    x = ndl.Tensor(np.array([[1.0, -3.0]]))
    assert bool(x.sum() > 0) is False  # a 0-d result: before, "len() of a 0-d tensor"
    if x.sum() < 0:
        pass
    else:
        pytest.fail("x.sum() < 0 is true")


def test_truth_value_of_a_larger_tensor_is_ambiguous():
    with pytest.raises(RuntimeError, match=r"ambiguous.*\(2,\)|\(2,\).*ambiguous"):
        bool(ndl.Tensor([1.0, 2.0]) > 5)


def test_truth_value_inside_a_compiled_step_is_a_trace_error():
    w = ndl.Tensor([1.0], requires_grad=True)

    @ndl.compile
    def step(x):
        y = (x * w).sum()
        return y if y > 0 else -y

    x = ndl.Tensor([2.0])
    step(x)  # eager
    with pytest.raises(ndl.TraceError):
        step(x)  # traced: Python would freeze the branch


@pytest.mark.parametrize("mask", [np.array([True]), np.array([True, False, True])])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_bool_mask_must_match_the_axes_it_indexes(mask, as_tensor):
    a = ndl.Tensor(np.arange(6.0).reshape(2, 3))
    index = ndl.Tensor(mask, dtype="bool") if as_tensor else mask
    with pytest.raises(IndexError, match=r"boolean index of shape \(\d,\) does not match axis 0 .*\(2, 3\)"):
        a[index]


def test_bool_masks_gather_like_numpy():
    data = np.arange(6.0).reshape(2, 3)
    a = ndl.Tensor(data)
    for mask in (np.array([True, False]), np.array([[True, False, True], [False, True, False]])):
        np.testing.assert_array_equal(a[mask].numpy(), data[mask])
        np.testing.assert_array_equal(a[ndl.Tensor(mask, dtype="bool")].numpy(), data[mask])
    np.testing.assert_array_equal(a[:, np.array([True, False, True])].numpy(), data[:, [0, 2]])
    np.testing.assert_array_equal(a[np.array(1)].numpy(), data[1])  # a 0-d array is a scalar index


def test_embedding_refuses_bool_ids():
    emb = ndl.nn.Embedding(10, 4)
    with pytest.raises(TypeError, match="Embedding.*bool"):
        emb(ndl.Tensor(np.array([[True, False]]), dtype="bool"))


@pytest.mark.parametrize("make", [lambda d: ndl.zeros(2, device=d), lambda d: ndl.randn(2, device=d),
                                  lambda d: ndl.nn.Linear(3, 2, device=d), lambda d: d.empty((2,))],
                         ids=["zeros", "randn", "Linear", "empty"])
def test_factories_on_an_unavailable_device_say_why(make):
    dev = ndl.cuda()
    if dev.enabled():
        pytest.skip("a cuda device runs here (a GPU or the simulator): nothing is unavailable")
    with pytest.raises(RuntimeError, match=r"cuda\(\) is not available here: " + re.escape(dev.why_unavailable)):
        make(dev)


@pytest.mark.parametrize("sizes", [(0, 3), (3, 0), (-1, 3)])
def test_linear_with_a_width_below_one_names_it(sizes):
    with pytest.raises(ValueError, match=r"fan_(in|out) must be a positive integer.*got -?\d"):
        ndl.nn.Linear(*sizes)


def test_factories_take_a_shape_tuple_like_pytorch():
    assert ndl.zeros((2, 3)).shape == ndl.zeros(2, 3).shape == (2, 3)
    assert ndl.ones([2, 3]).shape == (2, 3)
    np.random.seed(0)
    a = ndl.init.rand((2, 2)).numpy()
    np.random.seed(0)
    np.testing.assert_array_equal(a, ndl.init.rand(2, 2).numpy())  # the same single draw


def test_adam_takes_pytorchs_betas():
    torch = pytest.importorskip("torch")
    w0 = np.random.randn(3, 2).astype(np.float32)
    w = ndl.nn.Parameter(ndl.Tensor(w0))
    tw = torch.nn.Parameter(torch.tensor(w0))
    opt = ndl.optim.Adam([w], lr=0.01, betas=(0.8, 0.95))
    topt = torch.optim.Adam([tw], lr=0.01, betas=(0.8, 0.95))
    for _ in range(5):
        opt.reset_grad()
        (w * w).sum().backward()
        opt.step()
        topt.zero_grad()
        (tw * tw).sum().backward()
        topt.step()
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="betas must be a pair"):
        ndl.optim.Adam([w], betas=0.9)


@pytest.mark.parametrize("data", [np.array([1 + 2j]), [1 + 2j], np.array(["a"])], ids=["complex", "list", "str"])
def test_data_needle_cannot_store_is_refused_naming_its_dtype(data):
    with pytest.raises(TypeError, match=r"cannot store data of dtype (complex128|<U1)"):
        ndl.Tensor(data)
