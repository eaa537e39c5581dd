"""The LSTM cell's pointwise part as one op (ops.LSTMGates) and its gradient op: the bits of the
Tensor-op formula it replaces, first and second derivatives against it and against PyTorch; and
a layer's recurrence as one op (ops.lstm_layer), against the cell stepped in a loop and, for
second derivatives through nn.LSTM, against PyTorch."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle import interop, ops
from needle.ops.lstm import _gates

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]


def _run(make_states, zn, cn, un, vn, wn, which, device, dtype):
    """Forward, backward of <h, u> and/or <c, v>, then backward of <z.grad, w>: the arrays."""
    z = ndl.Tensor(zn, device=device, dtype=dtype)
    c0 = ndl.Tensor(cn, device=device, dtype=dtype)
    h, c = make_states(z, c0)
    u, v, w = (ndl.Tensor(a, device=device, dtype=dtype, requires_grad=False) for a in (un, vn, wn))
    terms = {"h": [(h * u).sum()], "c": [(c * v).sum()], "both": [(h * u).sum(), (c * v).sum()]}[which]
    (terms[0] + terms[1] if len(terms) == 2 else terms[0]).backward()
    first = [h.numpy(), c.numpy(), z.grad.numpy(), c0.grad.numpy()]
    (z.grad * w).sum().backward()
    return first, [z.grad.numpy(), c0.grad.numpy()]


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", ["both", "h", "c"])
def test_the_op_has_the_bits_of_the_tensor_op_formula(device, dtype, which):
    rng = np.random.RandomState(0)
    b, hidden = 5, 7
    zn = (rng.randn(b, 4 * hidden) * 3).astype(dtype)
    zn[0, :4] = [40.0, -40.0, np.inf, -np.inf]  # saturated gates
    cn, un, vn = (rng.randn(b, hidden).astype(dtype) for _ in range(3))
    wn = rng.randn(b, 4 * hidden).astype(dtype)
    fast = _run(ops.lstm_gates, zn, cn, un, vn, wn, which, device, dtype)
    reference = _run(_gates, zn, cn, un, vn, wn, which, device, dtype)
    for mine, ref in zip(fast[0] + fast[1], reference[0] + reference[1]):
        assert mine.dtype == ref.dtype and mine.tobytes() == ref.tobytes()


def test_the_gradient_is_one_node_and_second_derivatives_match_pytorch():
    rng = np.random.RandomState(2)
    b, hidden = 3, 4
    zn, wn = rng.randn(b, 4 * hidden), rng.randn(b, 4 * hidden)
    cn, un, vn = rng.randn(b, hidden), rng.randn(b, hidden), rng.randn(b, hidden)
    z, c0 = ndl.Tensor(zn, dtype="float64"), ndl.Tensor(cn, dtype="float64")
    h, c = ops.lstm_gates(z, c0)
    ((h * ndl.Tensor(un, dtype="float64")).sum() + (c * ndl.Tensor(vn, dtype="float64")).sum()).backward()
    assert type(z.grad.inputs[0].op).__name__ == "LSTMGatesGrad"
    first = (z.grad.numpy(), c0.grad.numpy())
    (z.grad * ndl.Tensor(wn, dtype="float64")).sum().backward()

    tz, tc0 = torch.tensor(zn, requires_grad=True), torch.tensor(cn, requires_grad=True)
    i, f, g, o = tz.reshape(b, 4, hidden).unbind(1)
    tc = torch.sigmoid(f) * tc0 + torch.sigmoid(i) * torch.tanh(g)
    th = torch.sigmoid(o) * torch.tanh(tc)
    gz, gc0 = torch.autograd.grad((th * torch.tensor(un)).sum() + (tc * torch.tensor(vn)).sum(), (tz, tc0),
                                  create_graph=True)
    np.testing.assert_allclose(first[0], gz.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(first[1], gc0.detach().numpy(), rtol=1e-12, atol=1e-14)
    second = torch.autograd.grad((gz * torch.tensor(wn)).sum(), (tz, tc0))
    np.testing.assert_allclose(z.grad.numpy(), second[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c0.grad.numpy(), second[1].numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("z_shape, c_shape", [((2, 12), (2, 4)), ((2, 16), (3, 4)), ((2, 16), (2, 4, 1))])
def test_shapes_that_do_not_fit_are_refused_with_both_shapes(z_shape, c_shape):
    z, c0 = ndl.Tensor(np.zeros(z_shape)), ndl.Tensor(np.zeros(c_shape))
    with pytest.raises(ValueError, match=r"z of shape .* and c0 of shape"):
        ops.lstm_gates(z, c0)


def test_an_lstm_trained_a_few_steps_matches_pytorch():
    """nn.LSTM (2 layers) through the op: losses and weight gradients of a few SGD steps next to
    torch.nn.LSTM with the same weights."""
    rng = np.random.RandomState(4)
    seq, batch, inputs, hidden = 6, 3, 5, 4
    model = ndl.nn.LSTM(inputs, hidden, num_layers=2)
    ref = torch.nn.LSTM(inputs, hidden, num_layers=2)
    with torch.no_grad():
        for layer, cell in enumerate(model.lstm_cells):
            getattr(ref, f"weight_ih_l{layer}").copy_(torch.tensor(cell.W_ih.numpy().T))
            getattr(ref, f"weight_hh_l{layer}").copy_(torch.tensor(cell.W_hh.numpy().T))
            getattr(ref, f"bias_ih_l{layer}").copy_(torch.tensor(cell.bias_ih.numpy()))
            getattr(ref, f"bias_hh_l{layer}").copy_(torch.tensor(cell.bias_hh.numpy()))
    opt = ndl.optim.SGD(model.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(3):
        x = rng.randn(seq, batch, inputs).astype(np.float32)
        target = rng.randn(seq, batch, hidden).astype(np.float32)
        out, _ = model(ndl.Tensor(x))
        loss = ((out - ndl.Tensor(target)) ** 2).sum()
        opt.reset_grad()
        loss.backward()
        opt.step()
        ref_out, _ = ref(torch.tensor(x))
        ref_loss = ((ref_out - torch.tensor(target)) ** 2).sum()
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        np.testing.assert_allclose(loss.numpy(), ref_loss.item(), rtol=1e-5)
    for layer, cell in enumerate(model.lstm_cells):
        np.testing.assert_allclose(cell.W_hh.numpy(), getattr(ref, f"weight_hh_l{layer}").detach().numpy().T,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_strided_gates_and_state_give_the_bits_of_compact_ones(device):
    """z as a column slice of a wider projection (one matmul for two directions) or a transposed
    view, c0 transposed: the op reads them as they are, with the compact inputs' bits."""
    rng = np.random.RandomState(6)
    b, hidden = 3, 4
    wide = rng.randn(b, 8 * hidden).astype(np.float32)
    cn = rng.randn(b, hidden).astype(np.float32)
    un = rng.randn(b, hidden).astype(np.float32)

    def run(z_of, c_of):
        source = ndl.Tensor(wide, device=device)
        c_source = ndl.Tensor(cn.T.copy(), device=device)
        h, c = ops.lstm_gates(z_of(source), c_of(c_source))
        ((h * ndl.Tensor(un, device=device, requires_grad=False)).sum() + c.sum()).backward()
        return [h.numpy(), c.numpy(), source.grad.numpy(), c_source.grad.numpy()]

    compact = run(lambda s: s[:, : 4 * hidden] * 1.0, lambda c: c.transpose() * 1.0)
    sliced = run(lambda s: s[:, : 4 * hidden], lambda c: c.transpose())
    for got, want in zip(sliced, compact):
        assert got.tobytes() == want.tobytes()
    transposed = ndl.Tensor(np.ascontiguousarray(wide[:, : 4 * hidden].T), device=device)
    h, c = ops.lstm_gates(transposed.transpose(), ndl.Tensor(cn, device=device))
    assert h.numpy().tobytes() == compact[0].tobytes() and c.numpy().tobytes() == compact[1].tobytes()


# --- a whole layer's recurrence: ops.lstm_layer ------------------------------------------------

def _layer_inputs(rng, steps, batch, hidden, inputs, dtype, device, bias=True):
    arrays = [rng.randn(steps, batch, 4 * hidden), rng.randn(batch, hidden), rng.randn(batch, hidden),
              rng.randn(hidden, 4 * hidden) * 0.5] + ([rng.randn(4 * hidden)] if bias else [])
    return [ndl.Tensor(a.astype(dtype), device=device, dtype=dtype) for a in arrays]


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("which", ["hs", "cs", "both", "zs"])
def test_the_layer_op_is_the_unrolled_recurrence(device, dtype, bias, which):
    """Forward: the bits of the cell stepped in a loop (the same operations). Backward: every
    input's gradient as autograd gets it through the unrolled steps (W_hh's and b_hh's summed in
    another order: to 1e-12 in float64, 1e-5 in float32), for adjoints reaching hs, cs (the last
    step only, as c_n), both, or the internal zs. On the cpu each step's kernels read slabs of
    the (T, B, W) arrays in place."""
    from needle.ops.lstm import LSTMLayer, _layer
    rng = np.random.RandomState(3)
    steps, batch, hidden = 5, 3, 4
    tolerance = 1e-12 if dtype == "float64" else 1e-5

    def run(layer):
        args = _layer_inputs(np.random.RandomState(4), steps, batch, hidden, 0, dtype, device, bias)
        hs, cs, zs = layer(*args)
        w_h = ndl.Tensor(rng_h, device=device, dtype=dtype, requires_grad=False)
        w_z = ndl.Tensor(rng_z, device=device, dtype=dtype, requires_grad=False)
        terms = {"hs": [(hs * w_h).sum()], "cs": [(cs[steps - 1] * w_h[0]).sum()],
                 "both": [(hs * w_h).sum(), (cs[steps - 1] * w_h[1]).sum()], "zs": [(zs * w_z).sum()]}[which]
        loss = terms[0] + terms[1] if len(terms) == 2 else terms[0]
        loss.backward()
        return [hs.numpy(), cs.numpy()], [a.grad.numpy() for a in args]

    rng_h, rng_z = rng.randn(steps, batch, hidden).astype(dtype), rng.randn(steps, batch, 4 * hidden).astype(dtype)

    def as_op(*args):
        out = LSTMLayer(bias)(*args)
        return tuple(ndl.ops.tuple_get_item(out, k) for k in range(3))

    (values, grads), (ref_values, ref_grads) = run(as_op), run(_layer)
    for got, want in zip(values, ref_values):
        assert got.tobytes() == want.tobytes()
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_the_layer_gradient_of_gradient_matches_pytorch():
    """Second derivatives through nn.LSTM (its layers are LSTMLayer ops): the gradient of
    <dL/dW_ih, v> for every parameter, against torch.autograd.grad with create_graph."""
    rng = np.random.RandomState(5)
    steps, batch, inputs, hidden = 4, 2, 3, 5
    model = ndl.nn.LSTM(inputs, hidden, num_layers=2, dtype="float64")
    ref = torch.nn.LSTM(inputs, hidden, num_layers=2, dtype=torch.float64)
    interop.to_torch(model, ref)  # needle's weights into the torch module
    x, w, v = rng.randn(steps, batch, inputs), rng.randn(steps, batch, hidden), rng.randn(hidden, 4 * hidden)
    out, _ = model(ndl.Tensor(x, dtype="float64"))
    (out * ndl.Tensor(w, dtype="float64", requires_grad=False)).sum().backward()
    first = model.lstm_cells[1].W_hh.grad
    (first * ndl.Tensor(v, dtype="float64", requires_grad=False)).sum().backward()

    tout, _ = ref(torch.tensor(x))
    (tfirst,) = torch.autograd.grad((tout * torch.tensor(w)).sum(), ref.weight_hh_l1, create_graph=True)
    np.testing.assert_allclose(first.numpy(), tfirst.detach().numpy().T, rtol=1e-10, atol=1e-12)
    second = torch.autograd.grad((tfirst * torch.tensor(v.T)).sum(), list(ref.parameters()), allow_unused=True)
    named = dict(zip([n for n, _ in ref.named_parameters()], second))
    for layer, cell in enumerate(model.lstm_cells):
        for mine, theirs, transpose in ((cell.W_ih, f"weight_ih_l{layer}", True),
                                        (cell.W_hh, f"weight_hh_l{layer}", True),
                                        (cell.bias_ih, f"bias_ih_l{layer}", False),
                                        (cell.bias_hh, f"bias_hh_l{layer}", False)):
            want = named[theirs]
            want = np.zeros(mine.shape) if want is None else (want.numpy().T if transpose else want.numpy())
            np.testing.assert_allclose(mine.grad.numpy(), want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("change, message", [
    (lambda a: [a[0].reshape((5, 3, 2, 8))] + a[1:], r"xw should be \(seq_len >= 1, batch, 4 \* hidden\)"),
    (lambda a: [a[0], a[1].reshape((4, 3))] + a[2:], r"h0 should have shape \(3, 4\)"),
    (lambda a: a[:3] + [a[3].transpose()] + a[4:], r"W_hh should have shape \(4, 16\)"),
    (lambda a: a[:4] + [a[4][:8]], r"bias_hh should have shape \(16,\)"),
])
def test_the_layer_refuses_shapes_that_do_not_fit(change, message):
    args = _layer_inputs(np.random.RandomState(0), 5, 3, 4, 0, "float32", ndl.cpu())
    with pytest.raises(ValueError, match=message):
        ops.lstm_layer(*change(args))
    with pytest.raises(ValueError, match="seq_len >= 1"):
        ops.lstm_layer(args[0][:0], *args[1:])
