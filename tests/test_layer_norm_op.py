"""ops.LayerNorm and LayerNormGrad against the Tensor ops they replace (bit for bit, x's adjoint
beside a residual branch's included), PyTorch's layer_norm (values, gradients, second
derivatives), and the cpu kernels against the array sequences."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle import ops
from needle.autograd import array_api
from needle.ops.normalization import layer_norm_formula

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]


def _canonical(a: np.ndarray) -> bytes:
    """The bytes of a, every nan as numpy's (a nan's sign bit depends on which operand an
    instruction propagates)."""
    return np.where(np.isnan(a), np.nan, a).astype(a.dtype).tobytes()


def _residual_step(use_op, data, weight, bias, adjoint, mix, device, dtype):
    """h = 1.5 x; y = h + LayerNorm(h) * mix; backward of sum(y * adjoint): (out, x.grad, w.grad, b.grad)."""
    x = ndl.Tensor(data, device=device, dtype=dtype)
    w, b = (ndl.Tensor(v, device=device, dtype=dtype) for v in (weight, bias))
    h = x * 1.5  # x's adjoint gathers the residual branch's partial and the norm's
    out = ops.tuple_get_item(ops.LayerNorm(1e-5)(h, w, b), 0) if use_op else layer_norm_formula(h, w, b, 1e-5)[0]
    y = h + out * ndl.Tensor(mix, device=device, dtype=dtype)
    (y * ndl.Tensor(adjoint, device=device, dtype=dtype)).sum().backward()
    return [_canonical(t.numpy()) for t in (out, x.grad, w.grad, b.grad)]


def _inputs(shape, special):
    rng = np.random.RandomState(sum(shape))
    data = rng.randn(*shape) * 3 + 1
    if special:
        rows = data.reshape(-1, shape[-1])
        rows[0] = -0.0
        rows[-1] = 1e8  # a constant row: variance 0
        if rows.shape[0] > 2:
            rows[1, 0], rows[2, -1] = np.inf, np.nan
    return data, rng.randn(shape[-1]), rng.randn(shape[-1]), rng.randn(*shape), rng.randn(*shape)


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(32, 64, 128), (7, 5), (3, 384), (2, 3, 200), (4, 1), (6, 129)])
@pytest.mark.parametrize("special", [False, True])
def test_the_op_has_the_bits_of_the_tensor_ops_it_replaces(device, dtype, shape, special):
    """Output and every gradient, bit for bit, for rows summed in one block (d <= 128) and halved
    (numpy's pairwise sum), with -0.0, constant, inf and nan rows (but for a nan's sign)."""
    args = _inputs(shape, special)
    assert _residual_step(True, *args, device, dtype) == _residual_step(False, *args, device, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_cpu_kernels_give_the_bits_of_the_array_sequence(monkeypatch, dtype):
    device = ndl.cpu()
    calls = []
    for name in ("layer_norm", "layer_norm_backward"):
        kernel = getattr(device.mod, name)
        monkeypatch.setattr(device, name, lambda *a, kernel=kernel, name=name: (calls.append(name), kernel(*a)))
    args = _inputs((16, 8, 136), special=True)
    fused = _residual_step(True, *args, device, dtype)
    assert calls == ["layer_norm", "layer_norm_backward"]
    monkeypatch.setattr(array_api, "device_layer_norm", lambda *a: None)
    monkeypatch.setattr(array_api, "device_layer_norm_backward", lambda *a: None)
    assert _residual_step(True, *args, device, dtype) == fused
    assert calls == ["layer_norm", "layer_norm_backward"]


def test_strided_adjoints_and_inputs_take_the_array_sequence():
    """The kernels read compact arrays only: a transposed input or adjoint runs the sequence, whose
    bits the cpu_numpy device's (kernel-less) run gives."""
    rng = np.random.RandomState(3)
    data, grad, weight, bias = rng.randn(40, 30), rng.randn(40, 30), rng.randn(30), rng.randn(30)

    def run(device):
        x = ndl.Tensor(np.ascontiguousarray(data.T), device=device, dtype="float32").transpose()
        w, b = (ndl.Tensor(v, device=device, dtype="float32") for v in (weight, bias))
        out = ops.tuple_get_item(ops.LayerNorm(1e-5)(x, w, b), 0)
        g = ndl.Tensor(np.ascontiguousarray(grad.T), device=device, dtype="float32").transpose()
        out.backward(g)
        return [t.numpy().tobytes() for t in (out, x.grad, w.grad, b.grad)]

    assert run(ndl.cpu()) == run(ndl.cpu_numpy())


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_values_gradients_and_second_derivatives_match_pytorch(device):
    rng = np.random.RandomState(5)
    data, weight, bias, v, u = rng.randn(3, 4, 6), rng.randn(6), rng.randn(6), rng.randn(3, 4, 6), rng.randn(3, 4, 6)
    x, w, b = (ndl.Tensor(a, device=device, dtype="float64") for a in (data, weight, bias))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (data, weight, bias))
    out = ndl.nn.functional.layer_norm(x, 6, w, b, 1e-5)
    t_out = torch.nn.functional.layer_norm(tx, (6,), tw, tb, 1e-5)
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    (out * ndl.Tensor(v, device=device, dtype="float64")).sum().backward()
    gx, gw = x.grad, w.grad
    t_gx, t_gw, t_gb = torch.autograd.grad((t_out * torch.tensor(v)).sum(), (tx, tw, tb), create_graph=True)
    for mine, ref in ((gx, t_gx), (gw, t_gw), (b.grad, t_gb)):
        np.testing.assert_allclose(mine.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    ((gx * ndl.Tensor(u, device=device, dtype="float64")).sum() + (gw * gw).sum()).backward()
    second = torch.autograd.grad((t_gx * torch.tensor(u)).sum() + (t_gw * t_gw).sum(), (tx, tw))
    np.testing.assert_allclose(x.grad.numpy(), second[0].numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(w.grad.numpy(), second[1].numpy(), rtol=1e-8, atol=1e-10)


def test_the_gradient_is_one_node_and_the_statistics_have_gradients_too():
    """Only the output used: one LayerNormGrad node. The mean and variance used as well: the
    gradient of the Tensor-op formula (PyTorch's for the same expression)."""
    rng = np.random.RandomState(6)
    data, weight, bias = rng.randn(5, 7), rng.randn(7), rng.randn(7)
    x, w, b = (ndl.Tensor(a, dtype="float64") for a in (data, weight, bias))
    out, mean, var = ops.layer_norm(x, w, b).tuple()
    out.sum().backward()
    assert type(x.grad.op).__name__ == "EWiseAdd"  # grad_c + broadcast grad_mean, the walk's sum
    ((out * out).sum() + (mean * 3).sum() + (var * var).sum()).backward()
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (data, weight, bias))
    t_mean = tx.mean(-1, keepdim=True)
    t_var = ((tx - t_mean) ** 2).mean(-1, keepdim=True)
    t_out = (tx - t_mean) / torch.sqrt(t_var + 1e-5) * tw + tb
    ((t_out * t_out).sum() + (t_mean * 3).sum() + (t_var * t_var).sum()).backward()
    for mine, ref in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(mine.grad.numpy(), ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_bad_shapes_are_refused_naming_them():
    x = ndl.Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"weight \(4,\) and bias \(3,\) for input of shape \(2, 3\)"):
        ops.layer_norm(x, ndl.Tensor(np.ones(4)), ndl.Tensor(np.zeros(3)))
    with pytest.raises(ValueError, match=r"layer_norm gradient: adjoint of shape \(3, 2\)"):
        ops.LayerNormGrad(1e-5)(ndl.Tensor(np.zeros((3, 2))), x, ndl.Tensor(np.ones(3)),
                                ops.layer_norm(x, ndl.Tensor(np.ones(3)), ndl.Tensor(np.zeros(3))))


def test_without_weight_or_over_two_axes_layer_norm_keeps_the_tensor_ops_and_matches_pytorch():
    rng = np.random.RandomState(7)
    data = rng.randn(3, 4, 5)
    for shape, weight in (((5,), None), ((4, 5), rng.randn(4, 5))):
        x = ndl.Tensor(data, dtype="float64")
        w = None if weight is None else ndl.Tensor(weight, dtype="float64")
        out = ndl.nn.functional.layer_norm(x, shape, w, None)
        expected = torch.nn.functional.layer_norm(torch.tensor(data), shape,
                                                  None if weight is None else torch.tensor(weight))
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
        assert "LayerNorm" not in {type(n.op).__name__ for n in ndl.autograd.find_topo_sort([out])}


def test_a_compiled_step_replays_the_norms_array_sequence_with_the_eager_bits():
    rng = np.random.RandomState(8)
    norm = ndl.nn.LayerNorm1d(96)
    params = norm.parameters()

    def step(x):
        (norm(x) * x).sum().backward()
        return params[0].grad + params[1].grad

    compiled = ndl.compile(step)
    for _ in range(4):  # eager, traced, replayed twice
        x = ndl.Tensor(rng.randn(24, 96).astype(np.float32), requires_grad=False)
        assert compiled(x).numpy().tobytes() == step(x).numpy().tobytes()


@pytest.mark.parametrize("which", ["layer_norm", "batch_norm"])
def test_a_zero_denominator_gives_nan_as_the_array_sequence_does(which):
    """eps = 0 (or one that rounds to 0 in float32) on a constant row or column divides 0 by 0:
    the cpu kernels give nan there, forward and backward, as the kernel-less sequence does (they
    are compiled with numpy's error model, not Python's ZeroDivisionError)."""
    def run(device):
        if which == "layer_norm":
            x = ndl.Tensor(np.array([[7.0] * 4, [1.0, 2.0, 3.0, 5.0]]), device=device, dtype="float32")
            w, b = ndl.Tensor(np.ones(4), device=device, dtype="float32"), ndl.Tensor(np.zeros(4), device=device,
                                                                                      dtype="float32")
            out = ops.tuple_get_item(ops.LayerNorm(1e-50)(x, w, b), 0)
        else:
            x = ndl.Tensor(np.array([[3.0, 1.0], [3.0, 2.0], [3.0, 5.0]]), device=device, dtype="float32")
            w, b = ndl.Tensor(np.ones(2), device=device, dtype="float32"), ndl.Tensor(np.zeros(2), device=device,
                                                                                      dtype="float32")
            out = ops.tuple_get_item(ops.BatchNorm(0.0)(x, w, b), 0)
        out.backward(ndl.Tensor(np.arange(np.prod(x.shape)).reshape(x.shape), device=device, dtype="float32"))
        return [_canonical(t.numpy()) for t in (out, x.grad, w.grad, b.grad)]

    with np.errstate(all="ignore"):
        got, want = run(ndl.cpu()), run(ndl.cpu_numpy())
    assert got == want
    assert np.isnan(np.frombuffer(got[0], np.float32)).any()


@pytest.mark.parametrize("tied", ["x w b", "x x b", "x w x", "x x x"])
def test_a_tensor_that_is_the_input_and_the_weight_or_bias_gets_the_formulas_bits(tied):
    """One tensor passed as x and as the weight and/or bias: the op's gradient is then the formula's
    adjoint (found by a review helper: the op's partials came in another order), and F.layer_norm
    keeps the Tensor ops for such a call."""
    rng = np.random.RandomState(9)
    values = {name: rng.randn(130) for name in "xwb"}

    def run(use_op):
        tensors = {name: ndl.Tensor(values[name], dtype="float64") for name in "xwb"}
        x, w, b = (tensors[name] for name in tied.split())
        out = ops.tuple_get_item(ops.layer_norm(x, w, b), 0) if use_op else layer_norm_formula(x, w, b, 1e-5)[0]
        (out * out * out).sum().backward()
        return [t.grad.numpy().tobytes() for t in tensors.values() if t.grad is not None]

    assert run(True) == run(False)
    v = ndl.Tensor(values["x"], dtype="float64")
    nodes = ndl.autograd.find_topo_sort([ndl.nn.functional.layer_norm(v, 130, v, ndl.Tensor(values["b"]))])
    assert "LayerNorm" not in {type(n.op).__name__ for n in nodes}
