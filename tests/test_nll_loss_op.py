"""ops.NLLLoss (the course's SoftmaxLoss after its log-softmax) and its gradient op: PyTorch's nll_loss
values and derivatives, and the bits of the seven Tensor ops it replaces, with and without the cpu's
kernels (which read only the B picked elements of a (B, k) array)."""
import numpy as np
import pytest
import torch

import needle as ndl
from needle import ops

DEVICES = [ndl.cpu(), ndl.cpu_numpy()]


def _composite(log_probs, labels):
    """The loss as SoftmaxLoss wrote it before the op: -summation(where(one_hot, log_probs, 0)) / B."""
    batch, classes = log_probs.shape
    mask = ndl.init.one_hot(classes, labels, device=log_probs.device, dtype="bool")
    return -ops.summation(ops.where(mask, log_probs, 0.0)) / batch


def _bits(t):
    return t.numpy().tobytes()


def _loss_and_gradient(loss_fn, data, labels, device, dtype, seed_grad=None):
    x = ndl.Tensor(data, device=device, dtype=dtype)
    y = ndl.Tensor(labels, device=device, dtype="int64", requires_grad=False)
    loss = loss_fn(x, y)
    loss.backward(None if seed_grad is None else ndl.Tensor(seed_grad, device=device, dtype=dtype))
    return loss, x.grad


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch, classes", [(32, 27), (1, 1), (5, 3), (7, 128), (300, 17), (64, 4099), (3, 300001)])
def test_the_op_has_the_bits_of_the_tensor_ops_it_replaces(device, dtype, batch, classes):
    """Loss and gradient, bit for bit, over shapes that put the picked elements in numpy's pairwise
    sum's short runs (< 8), single blocks (<= 128) and halved runs, with -0.0, inf and huge values."""
    rng = np.random.RandomState(batch + classes)
    data = rng.randn(batch, classes) * 10.0 ** rng.randint(-3, 4)
    labels = rng.randint(0, classes, batch)
    data[0, labels[0]] = -0.0
    if batch > 2:
        data[1, labels[1]], data[2, labels[2]] = -np.inf, 1e30
    for seed_grad in (None, np.array(-0.0), np.array(3.7)):
        mine = _loss_and_gradient(ops.nll_loss, data, labels, device, dtype, seed_grad)
        reference = _loss_and_gradient(_composite, data, labels, device, dtype, seed_grad)
        assert mine[0].shape == reference[0].shape == ()
        assert _bits(mine[0]) == _bits(reference[0]) and _bits(mine[1]) == _bits(reference[1])


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_softmax_loss_matches_pytorchs_cross_entropy_with_float_labels_and_labels_on_another_device(device):
    rng = np.random.RandomState(0)
    logits, labels = rng.randn(6, 5), rng.randint(0, 5, 6)
    other = ndl.cpu_numpy() if device == ndl.cpu() else ndl.cpu()
    for y in (ndl.Tensor(labels.astype(np.float32), device=device),  # the course's float labels
              ndl.Tensor(labels, device=other, dtype="int64")):
        x = ndl.Tensor(logits, device=device, dtype="float64")
        loss = ndl.nn.SoftmaxLoss()(x, y)
        loss.backward()
        tx = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(tx, torch.tensor(labels))
        expected.backward()
        np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_second_derivatives_match_pytorch():
    """NLLLossGrad differentiates its Tensor-op form (autograd.vjp): through log-softmax, a function
    of the gradient differentiated again, as torch.autograd.grad with create_graph."""
    rng = np.random.RandomState(1)
    logits, labels, weight = rng.randn(4, 6), rng.randint(0, 6, 4), rng.randn(4, 6)
    x = ndl.Tensor(logits, dtype="float64")
    loss = ops.nll_loss(ops.logsoftmax(x, axis=1), ndl.Tensor(labels, dtype="int64", requires_grad=False))
    loss.backward()  # the course's backward builds the gradient's graph (create_graph=True)
    grad = x.grad
    (grad * ndl.Tensor(weight, dtype="float64")).sum().backward()

    tx = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.functional.nll_loss(torch.log_softmax(tx, 1), torch.tensor(labels))
    (t_grad,) = torch.autograd.grad(t_loss, (tx,), create_graph=True)
    np.testing.assert_allclose(grad.numpy(), t_grad.detach().numpy(), rtol=1e-12, atol=1e-15)
    (t_second,) = torch.autograd.grad((t_grad * torch.tensor(weight)).sum(), (tx,))
    np.testing.assert_allclose(x.grad.numpy(), t_second.numpy(), rtol=1e-10, atol=1e-14)


def test_the_gradient_of_the_loss_with_respect_to_its_adjoint_is_differentiable():
    """NLLLossGrad's own gradient (with respect to the loss's adjoint g): d/dg of <grad(g), v>
    is -v[i, label_i] summed / B."""
    rng = np.random.RandomState(2)
    labels, v = rng.randint(0, 5, 3), rng.randn(3, 5)
    g = ndl.Tensor(np.array(2.0), dtype="float64")
    dense = ops.NLLLossGrad((3, 5))(g, ndl.Tensor(labels, dtype="int64", requires_grad=False))
    (dense * ndl.Tensor(v, dtype="float64")).sum().backward()
    np.testing.assert_allclose(g.grad.numpy(), -v[np.arange(3), labels].sum() / 3, rtol=1e-14)
    np.testing.assert_allclose(dense.numpy()[np.arange(3), labels], -2.0 / 3)


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_bad_labels_and_shapes_are_refused_naming_them(device):
    x = ndl.Tensor(np.zeros((3, 4)), device=device)
    with pytest.raises(ValueError, match="class index 4 is out of range for 4 classes"):
        ops.nll_loss(x, ndl.Tensor(np.array([0, 4, 1]), device=device, dtype="int64"))
    with pytest.raises(ValueError, match="class index -1"):
        ndl.nn.SoftmaxLoss()(x, ndl.Tensor(np.array([0, -1, 1]), device=device, dtype="int64"))
    with pytest.raises(ValueError, match=r"labels of shape \(2,\) for log-probabilities of shape \(3, 4\)"):
        ops.nll_loss(x, ndl.Tensor(np.array([0, 1]), device=device, dtype="int64"))
    with pytest.raises(ValueError, match=r"shape \(batch, classes\), got \(4,\)"):
        ops.nll_loss(ndl.Tensor(np.zeros(4), device=device), ndl.Tensor(np.array([0]), device=device, dtype="int64"))
    other = ndl.cpu_numpy() if device == ndl.cpu() else ndl.cpu()
    with pytest.raises(ValueError, match="labels on"):
        ops.nll_loss(x, ndl.Tensor(np.array([0, 1, 2]), device=other, dtype="int64"))


def test_a_compiled_step_records_the_losss_kernels_and_replays_the_eager_bits():
    """A compiled step records the cpu's nll_loss call, and no (B, k) rows of NLLLossGrad (SoftmaxLoss
    takes its gradient to the logits in one op); the replays on new logits and labels give what
    the eager step gives, and a label out of range in a replay is refused naming it."""
    rng = np.random.RandomState(3)

    def step(x, y):
        loss = ndl.nn.SoftmaxLoss()(x, y)
        loss.backward()
        return loss, x.grad

    compiled = ndl.compile(step)
    for _ in range(4):  # eager, traced, replayed twice
        logits, labels = rng.randn(16, 300).astype(np.float32), rng.randint(0, 300, 16)
        args = (ndl.Tensor(logits), ndl.Tensor(labels, dtype="int64", requires_grad=False))
        assert [_bits(t) for t in compiled(*args)] == [_bits(t) for t in step(*args)]
    names = [call.name for call in compiled.programs[0].calls]
    assert "nll_loss" in names and "nll_loss_backward" not in names
    labels[3] = 300
    with pytest.raises((IndexError, ValueError), match="class index 300 is out of range for 300 classes"):
        compiled(ndl.Tensor(logits), ndl.Tensor(labels, dtype="int64", requires_grad=False))


def test_softmax_loss_takes_labels_as_a_numpy_array_or_a_list():
    """Labels that are not a Tensor (a numpy array, as the course's loops pass them, or a list) become
    one on the logits' device (found by a review helper: numpy 2 arrays have a .device)."""
    logits = np.random.RandomState(0).randn(4, 3)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor([0, 1, 2, 1])).item()
    for labels in (np.array([0, 1, 2, 1]), [0, 1, 2, 1], np.array([0.0, 1.0, 2.0, 1.0], np.float32)):
        for device in DEVICES:
            loss = ndl.nn.SoftmaxLoss()(ndl.Tensor(logits, device=device, dtype="float64"), labels)
            np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def _two_ops(logits, labels):
    """SoftmaxLoss as two ops, each with its own gradient: LogSoftmaxGrad on NLLLossGrad's (B, k) rows."""
    return ops.nll_loss(ops.logsoftmax(logits, axis=1), labels)


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch, classes", [(32, 27), (1, 1), (5, 3), (7, 128), (64, 4099)])
def test_softmax_losss_one_gradient_op_has_the_bits_of_the_two_ops(device, dtype, batch, classes):
    """LogSoftmaxNLLGrad (SoftmaxLoss's gradient, straight to the logits) against LogSoftmaxGrad on
    NLLLossGrad's rows: the same loss and gradient bits, with the adjoint 1, -0.0 (its rows' sums
    become +0.0), 0.0 and negative; -inf and huge logits; the cpu's kernel and numpy mode's sequence."""
    rng = np.random.RandomState(batch * classes)
    data = rng.randn(batch, classes) * 10.0 ** rng.randint(-3, 4)
    labels = rng.randint(0, classes, batch)
    if batch > 2 and classes > 2:
        data[1, (labels[1] + 1) % classes], data[2, labels[2]] = -np.inf, 1e30
    for seed_grad in (None, np.array(-0.0), np.array(0.0), np.array(-3.7)):
        mine = _loss_and_gradient(ndl.nn.SoftmaxLoss(), data, labels, device, dtype, seed_grad)
        reference = _loss_and_gradient(_two_ops, data, labels, device, dtype, seed_grad)
        assert _bits(mine[0]) == _bits(reference[0]) and _bits(mine[1]) == _bits(reference[1])


def test_softmax_losss_gradient_op_without_the_cpu_kernel_has_the_same_bits(monkeypatch):
    """The op's array sequence (what a compiled step records, and devices without the kernel run)
    gives the kernel's bits."""
    rng = np.random.RandomState(5)
    data, labels = rng.randn(9, 300).astype(np.float32), rng.randint(0, 300, 9)
    for seed_grad in (None, np.array(-0.0, np.float32), np.array(2.5, np.float32)):
        kernel = _loss_and_gradient(ndl.nn.SoftmaxLoss(), data, labels, ndl.cpu(), "float32", seed_grad)
        with monkeypatch.context() as patch:
            patch.setattr(ndl.backend_ndarray.functions, "device_log_softmax_nll_backward", lambda *args: None)
            sequence = _loss_and_gradient(ndl.nn.SoftmaxLoss(), data, labels, ndl.cpu(), "float32", seed_grad)
        assert _bits(kernel[1]) == _bits(sequence[1])


@pytest.mark.parametrize("scale", [1.0, 0.0, -2.5])
def test_a_compiled_softmax_loss_step_replays_the_eager_bits_of_the_two_ops(scale):
    """Compiled, SoftmaxLoss's gradient is one fused pass over the log-softmax (no NLLLossGrad rows):
    every replay gives the bits of the eager two-op gradient, whatever the adjoint (scale)."""
    rng = np.random.RandomState(6)

    def step(x, y):
        (ndl.nn.SoftmaxLoss()(x, y) * scale).backward()
        return (x.grad,)

    compiled = ndl.compile(step)
    for _ in range(4):
        logits, labels = rng.randn(40, 700).astype(np.float32), rng.randint(0, 700, 40)
        x = ndl.Tensor(logits)
        (_two_ops(x, ndl.Tensor(labels, dtype="int64", requires_grad=False)) * scale).backward()
        (replayed,) = compiled(ndl.Tensor(logits), ndl.Tensor(labels, dtype="int64", requires_grad=False))
        assert _bits(replayed) == _bits(x.grad)
    assert "nll_loss_backward" not in [call.name for call in compiled.programs[0].calls]


def test_softmax_losss_second_derivatives_match_pytorch():
    """LogSoftmaxNLLGrad differentiates the two ops' gradient formulas (autograd.vjp)."""
    rng = np.random.RandomState(7)
    logits, labels, weight = rng.randn(4, 6), rng.randint(0, 6, 4), rng.randn(4, 6)
    x = ndl.Tensor(logits, dtype="float64")
    ndl.nn.SoftmaxLoss()(x, ndl.Tensor(labels, dtype="int64", requires_grad=False)).backward()
    grad = x.grad
    (grad * ndl.Tensor(weight, dtype="float64")).sum().backward()

    tx = torch.tensor(logits, requires_grad=True)
    (t_grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(tx, torch.tensor(labels)), (tx,),
                                    create_graph=True)
    np.testing.assert_allclose(grad.numpy(), t_grad.detach().numpy(), rtol=1e-12, atol=1e-15)
    (t_second,) = torch.autograd.grad((t_grad * torch.tensor(weight)).sum(), (tx,))
    np.testing.assert_allclose(x.grad.numpy(), t_second.numpy(), rtol=1e-10, atol=1e-14)


def test_the_one_op_refuses_logits_of_another_shape():
    log_probs = ops.logsoftmax(ndl.Tensor(np.zeros((3, 4))), axis=1)
    labels = ndl.Tensor(np.array([0, 1, 2]), dtype="int64", requires_grad=False)
    with pytest.raises(ValueError, match=r"logits of shape \(3, 5\) for log-probabilities of shape \(3, 4\)"):
        ops.LogSoftmaxNLLLoss()(log_probs, labels, ndl.Tensor(np.zeros((3, 5))))
    with pytest.raises(ValueError, match=r"the adjoint has shape \(2,\)"):
        ops.LogSoftmaxNLLGrad()(ndl.Tensor(np.zeros(2)), labels, log_probs)
