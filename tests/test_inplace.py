"""In-place operations and item assignment, as PyTorch does them: the tensor's own buffer is
written (so views and `.data` aliases see it), autograd records them where PyTorch does (the
overwritten part of an assignment gets no gradient), and what needle's graph cannot follow is
refused with an error instead of a wrong gradient. Values and gradients against PyTorch (float64)."""
import numpy as np
import pytest
import torch

import needle as ndl

INDEXES = {
    "int": 1,
    "negative int": -1,
    "slice with step": slice(0, 4, 2),
    "None and ellipsis": (None, Ellipsis, 1),
    "int array": [3, 0],
    "range": range(1, 3),
    "bool mask": np.array([True, False, True, False]),
    "0-d tensor": "zero-d",
    "rows and columns": ([0, 2], [1, 2]),
    "slice then array": (slice(1, 3), [0, 2]),
}


def pair(array):
    return ndl.Tensor(array, dtype="float64", requires_grad=False), torch.tensor(array)


def torch_index(index):
    if isinstance(index, np.ndarray):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(torch_index(i) for i in index)
    return index


def needle_index(index):
    if isinstance(index, str):
        return ndl.Tensor(np.array(2), dtype="int64")
    return index


@pytest.mark.parametrize("name", list(INDEXES))
def test_item_assignment_matches_torch_for_every_index_kind(name):
    index = INDEXES[name]
    base = np.arange(12, dtype=np.float64).reshape(4, 3)
    x, t = pair(base)
    t_index = torch_index(2 if isinstance(index, str) else index)
    region = t[t_index]
    value = np.linspace(-1, 1, int(np.prod(region.shape))).reshape(region.shape) if region.ndim else 7.5
    x[needle_index(index)] = ndl.Tensor(np.asarray(value), dtype="float64") if region.ndim else value
    t[t_index] = torch.tensor(value) if region.ndim else value
    np.testing.assert_array_equal(x.numpy(), t.numpy())


def test_item_assignment_broadcasts_and_casts_the_value():
    x, t = pair(np.zeros((3, 4)))
    x[1:] = ndl.Tensor(np.array([1.0, 2.0, 3.0, 4.0]), dtype="float32")  # broadcast over rows, cast to float64
    t[1:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    assert x.dtype == "float64"
    ids = ndl.Tensor(np.zeros(3), dtype="int64")
    ids[0] = 2.9  # like torch: a float stored into int64 truncates
    assert ids.numpy().tolist() == [2, 0, 0]


def test_views_and_data_aliases_see_in_place_changes():
    x = ndl.Tensor(np.zeros((4, 3)), dtype="float64", requires_grad=False)
    view = x[1:3]
    x += 1.0
    np.testing.assert_array_equal(view.numpy(), np.ones((2, 3)))
    view *= 5.0  # writes through to x
    assert x.numpy()[1:3].min() == 5.0 and x.numpy()[0].max() == 1.0
    w = ndl.Tensor(np.ones(3), dtype="float64")
    w.data.add_(2.0)  # PyTorch's p.data.add_(...) moves p
    np.testing.assert_array_equal(w.numpy(), [3.0, 3.0, 3.0])
    w.data.sub_(ndl.Tensor(np.ones(3), dtype="float64"), alpha=0.5)
    np.testing.assert_array_equal(w.numpy(), [2.5, 2.5, 2.5])


@pytest.mark.parametrize("method, args", [("add_", (2.0,)), ("sub_", (0.5,)), ("mul_", (3.0,)), ("div_", (4.0,)),
                                          ("clamp_", (-0.5, 0.5)), ("fill_", (1.25,)), ("zero_", ())])
def test_in_place_methods_match_torch(method, args):
    data = np.random.RandomState(0).randn(5)
    x, t = pair(data)
    result = getattr(x, method)(*args)
    getattr(t, method)(*args)
    assert result is x
    np.testing.assert_array_equal(x.numpy(), t.numpy())


def test_add_with_alpha_and_a_tensor_operand():
    x, t = pair(np.arange(4.0))
    y = np.array([1.0, -1.0, 2.0, 0.5])
    x.add_(ndl.Tensor(y, dtype="float64"), alpha=-2.0)
    t.add_(torch.tensor(y), alpha=-2.0)
    np.testing.assert_array_equal(x.numpy(), t.numpy())


# --- autograd --------------------------------------------------------------------------------------

def test_assignment_into_a_fresh_tensor_is_differentiable_like_torch():
    w0, v0 = np.array([1.0, 2.0, -1.0]), np.array([0.5, -0.5, 3.0, 1.0])
    w, v = ndl.Tensor(w0, dtype="float64"), ndl.Tensor(v0, dtype="float64")
    tw, tv = torch.tensor(w0, requires_grad=True), torch.tensor(v0, requires_grad=True)
    h = ndl.init.zeros(4, 3, dtype="float64")
    th = torch.zeros(4, 3, dtype=torch.float64)
    h[1] = w * 2.0
    th[1] = tw * 2.0
    h[:, 0] = v.exp()
    th[:, 0] = tv.exp()
    ((h * h).sum() + h[1, 0] * 3.0).backward()
    ((th * th).sum() + th[1, 0] * 3.0).backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(v.grad.numpy(), tv.grad.numpy(), rtol=1e-14)


def test_the_overwritten_part_gets_no_gradient():
    a0 = np.arange(1.0, 7.0).reshape(2, 3)
    a, ta = ndl.Tensor(a0, dtype="float64"), torch.tensor(a0, requires_grad=True)
    x, tx = a * 2.0, ta * 2.0
    x[0, 1:] = 5.0
    tx[0, 1:] = 5.0
    (x * x).sum().backward()
    (tx * tx).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    assert a.grad.numpy()[0, 1:].tolist() == [0.0, 0.0]


def test_a_residual_added_in_place_like_torchvisions_resnet():
    x0, w0 = np.random.RandomState(1).randn(3, 4), np.random.RandomState(2).randn(4, 4)
    x, w = ndl.Tensor(x0, dtype="float64"), ndl.Tensor(w0, dtype="float64")
    tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    out, tout = x @ w, tx @ tw  # (torch refuses it after tanh, which saves its output; needle keeps a copy)
    out += x  # out += identity
    tout += tx
    out = out.relu()
    tout = tout.relu()
    (out * out).sum().backward()
    (tout * tout).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-13)


def test_a_parameter_changed_in_place_under_grad_is_refused_and_allowed_under_no_grad():
    lin = ndl.nn.Linear(3, 2)
    w = lin.weight
    with pytest.raises(RuntimeError, match="a parameter cannot be changed in place"):
        w -= 0.1
    with ndl.no_grad():
        w -= 0.1  # manual SGD, PyTorch-style
    w.data -= 0.1  # .data works with gradients on


def test_changing_a_tensor_already_used_by_the_graph_is_refused():
    a = ndl.Tensor(np.ones(3), dtype="float64")
    h = a * 2.0
    z = h + 5.0  # h is an input of z
    with pytest.raises(RuntimeError, match="already an input of an operation"):
        h.mul_(3.0)
    view = (a * 1.0)[1:]
    with pytest.raises(RuntimeError, match="a view of part of another tensor"):
        view += 1.0
    z.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0, 2.0])


def test_a_value_changed_through_data_after_use_makes_backward_raise_like_torch():
    x = ndl.Tensor(np.array([1.0, 2.0]), dtype="float64", requires_grad=False)
    w = ndl.Tensor(np.array([3.0, 4.0]), dtype="float64")
    y = (x * w).sum()
    x.data.mul_(2.0)  # the product's gradient reads x
    with pytest.raises(RuntimeError, match="changed by an in-place operation after it was used"):
        y.backward()
    tx, tw = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0], requires_grad=True)
    ty = (tx * tw).sum()
    tx.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward()


def test_an_add_whose_gradient_reads_nothing_survives_a_later_write():
    x = ndl.Tensor(np.array([1.0, 2.0]), dtype="float64", requires_grad=False)
    w = ndl.Tensor(np.array([3.0, 4.0]), dtype="float64")
    y = (x + w).sum()
    x.data.mul_(2.0)
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


# --- errors ----------------------------------------------------------------------------------------

def test_in_place_dtype_and_shape_rules_follow_torch():
    ids = ndl.Tensor(np.arange(3), dtype="int64")
    with pytest.raises(TypeError, match="float32, which cannot be stored in this int64 tensor"):
        ids += 0.5
    with pytest.raises(RuntimeError, match=r"result type Float can't be cast"):
        torch.arange(3).add_(0.5)
    x = ndl.Tensor(np.zeros(3), dtype="float32", requires_grad=False)
    x += ndl.Tensor(np.ones(3), dtype="float64", requires_grad=False)  # float64 into float32: cast, as torch
    assert x.dtype == "float32" and x.numpy().tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(RuntimeError, match=r"the result has shape \(2, 3\), this tensor \(3,\)"):
        x += ndl.Tensor(np.ones((2, 3)), requires_grad=False)


def test_bad_item_assignments_name_what_is_wrong():
    x = ndl.Tensor(np.zeros((4, 3)), requires_grad=False)
    with pytest.raises(ValueError, match=r"a value of shape \(2,\) cannot be broadcast to the indexed shape \(4,\)"):
        x[:, 0] = ndl.Tensor(np.ones(2), requires_grad=False)
    with pytest.raises(IndexError, match="repeats a position"):
        x[[1, 1]] = ndl.Tensor(np.ones((2, 3)), requires_grad=False)
    with pytest.raises(IndexError, match="out of bounds"):
        x[7] = 1.0
    with pytest.raises(TypeError, match="must be a Tensor, an array or a number"):
        x[0] = "a"
    with pytest.raises(ValueError, match="give min, max or both"):
        x.clamp_()


# --- inside ndl.compile: the caller's tensor is written on every call ----------------------------------

def test_plus_equals_and_item_assignment_on_an_argument_reach_the_caller_under_compile():
    def update(buf, x):
        buf += x
        buf[0] = buf[0] * 0.5
        return buf * 1.0

    step = ndl.compile(update)
    x = ndl.Tensor(np.arange(1.0, 5.0), dtype="float32", requires_grad=False)
    mine = ndl.Tensor(np.zeros(4), dtype="float32", requires_grad=False)
    eager = ndl.Tensor(np.zeros(4), dtype="float32", requires_grad=False)
    for _ in range(5):
        out = step(mine, x)
        update(eager, x)
        np.testing.assert_array_equal(mine.numpy(), eager.numpy())
        np.testing.assert_array_equal(out.numpy(), eager.numpy())
    assert len(step.programs) == 1


def test_clamp_in_place_is_differentiable_like_torch():
    a0 = np.array([-2.0, -0.5, 0.3, 1.5, 4.0])
    a, ta = ndl.Tensor(a0, dtype="float64"), torch.tensor(a0, requires_grad=True)
    x, tx = a * 2.0, ta * 2.0
    x.clamp_(-1.0, 2.0)
    tx.clamp_(-1.0, 2.0)
    (x * x).sum().backward()
    (tx * tx).sum().backward()
    np.testing.assert_array_equal(x.numpy(), tx.detach().numpy())
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-14)
