"""Loss ops: binary cross-entropy on probabilities, whose gradient is PyTorch's own formula rather
than the chain rule through its forward, and the negative log-likelihood of picked classes (the
course's SoftmaxLoss after its log-softmax), one op and one gradient op instead of seven nodes.

PyTorch clamps binary_cross_entropy's logarithms at -100 (so a probability of exactly 0 or 1
gives a finite loss) and defines its gradient as w (x - t) / max(x (1 - x), 1e-12), which stays
finite and points the right way at the clamped ends, where the chain rule through the clamp
would give 0 (or 0 / 0). Composing existing ops cannot express that, so it is one op, its
forward made of array functions (every device, numpy mode) and its gradient of Tensor ops
(differentiable again).
"""
from __future__ import annotations

from ..autograd import TensorOp, array_api, vjp
from ._helpers import require_tensor, same_shape
from .elementwise import log, log1p, maximum, where
from .indexing import one_hot
from .shape import broadcast_to

__all__ = ["BinaryCrossEntropy", "binary_cross_entropy", "NLLLoss", "NLLLossGrad", "nll_loss", "LogSoftmaxNLLLoss",
           "LogSoftmaxNLLGrad", "logsoftmax_nll_loss"]

LOG_CLAMP = -100.0  # PyTorch's lower bound on binary_cross_entropy's logarithms
# PyTorch's lower bound on x (1 - x) in the gradient: its 1e-12, which it rounds to float32 in
# float64 too (x = 0, t = 1 gives -1.000000004e12, not -1e12)
EPSILON = 9.999999960041972e-13


class BinaryCrossEntropy(TensorOp):
    """-(t max(log x, -100) + (1 - t) max(log1p(-x), -100)) elementwise, x a probability and t
    its target (PyTorch's binary_cross_entropy with reduction='none', no weight).

    Gradients (PyTorch's): x: g (x - t) / max(x (1 - x), 1e-12 rounded to float32); t: g (log1p(-x) - log x)
    (unclamped: +-inf at x = 0 or 1, as PyTorch's).

    Edges: x = 0 or 1 give the clamped 100 (or 0 where the target's weight there is 0); a
    nan x or t gives nan. Values outside [0, 1] are the caller's to refuse (F.binary_cross_entropy
    does, as PyTorch).
    """

    def check(self, x, t):
        require_tensor(x, "binary_cross_entropy")
        same_shape(x, t, "binary_cross_entropy")

    def compute(self, x, t):
        log_x = array_api.maximum(array_api.log(x), LOG_CLAMP)
        log_not_x = array_api.maximum(array_api.log1p(array_api.negative(x)), LOG_CLAMP)
        # (t - 1) log(1 - x) - t log(x), PyTorch's arrangement
        return array_api.subtract(array_api.multiply(array_api.subtract(t, 1), log_not_x),
                                  array_api.multiply(t, log_x))

    def gradient(self, out_grad, node):
        x, t = node.inputs
        grad_x = out_grad * (x - t) / maximum((1 - x) * x, EPSILON) if x.requires_grad else None
        grad_t = out_grad * (log1p(-x) - log(x)) if t.requires_grad else None
        return grad_x, grad_t


def binary_cross_entropy(x, t):
    """BinaryCrossEntropy()(x, t): the elementwise loss of probabilities x against targets t."""
    return BinaryCrossEntropy()(x, t)


class NLLLoss(TensorOp):
    """-sum(log_probs[i, labels[i]]) / B: the mean negative log-likelihood of the labelled classes, from
    log_probs (B, k) and B class ids (int64, or floats holding whole numbers, as one_hot takes):
    PyTorch's nll_loss (reduction 'mean', no weights); the course's SoftmaxLoss is this after
    logsoftmax. Shape (). ValueError names a class id outside [0, k).

    The value is that of the Tensor ops -summation(where(one_hot(labels), log_probs, 0)) / B, bit for
    bit: the sum is numpy's over the (B, k) array, which the cpu's nll_loss kernel adds up from
    the B picked elements alone. Gradient: NLLLossGrad, one node (the Tensor ops take five).
    """

    def check(self, log_probs, labels):
        require_tensor(log_probs, "nll_loss")
        require_tensor(labels, "nll_loss")
        if len(log_probs.shape) != 2:
            raise ValueError(f"nll_loss expects log-probabilities of shape (batch, classes), got {log_probs.shape}")
        if tuple(labels.shape) != tuple(log_probs.shape[:1]):
            raise ValueError(f"nll_loss: labels of shape {tuple(labels.shape)} for log-probabilities of shape "
                             f"{tuple(log_probs.shape)}")
        if labels.device != log_probs.device:
            raise ValueError(f"nll_loss: labels on {labels.device}, log-probabilities on {log_probs.device}")

    def compute(self, log_probs, labels):
        loss = array_api.device_nll_loss(log_probs, labels)  # the same bits from B elements, or None
        if loss is not None:
            return loss
        batch, classes = log_probs.shape
        mask = array_api.one_hot(classes, labels, dtype="bool", device=array_api.device_of(log_probs))
        total = array_api.sum(array_api.where(mask, log_probs, 0.0))
        return array_api.divide(array_api.negative(total), batch)

    def gradient(self, out_grad, node):
        log_probs, labels = node.inputs
        return NLLLossGrad(tuple(log_probs.shape))(out_grad, labels), None


def _nll_gradient(g, labels, shape: tuple):
    """NLLLoss's gradient as the Tensor ops of its forward's chain rule: where(one_hot(labels), -(g / B), 0)."""
    batch, classes = shape
    return where(one_hot(labels, classes, dtype="bool"), broadcast_to(-(g / batch), shape), 0.0)


class NLLLossGrad(TensorOp):
    """NLLLoss's gradient for log_probs of `shape` (B, k), from its adjoint g (shape ()) and the labels:
    -(g / B) at [i, labels[i]], 0 elsewhere -- `_nll_gradient`'s bits, one pass (the cpu's
    nll_loss_backward kernel) instead of a one-hot mask and a select. Its own gradient differentiates
    `_nll_gradient` (autograd.vjp)."""

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def check(self, g, labels):
        if tuple(g.shape) != ():
            raise ValueError(f"nll_loss gradient: the adjoint has shape {tuple(g.shape)}, expected ()")

    def compute(self, g, labels):
        dense = array_api.device_nll_loss_backward(labels, g, self.shape)
        if dense is not None:
            return dense
        batch, classes = self.shape
        value = array_api.negative(array_api.divide(g, batch))
        mask = array_api.one_hot(classes, labels, dtype="bool", device=array_api.device_of(g))
        return array_api.where(mask, array_api.broadcast_to(value, self.shape), 0.0)

    def gradient(self, out_grad, node):
        g, labels = node.inputs
        shape = self.shape
        (grad_g,) = vjp(lambda g: _nll_gradient(g, labels, shape), (g,), (out_grad,))
        return grad_g, None


class LogSoftmaxNLLLoss(NLLLoss):
    """nll_loss(y, labels) for y = logsoftmax(logits) over the last axis (B, k), the logits given
    as a third input: the value is NLLLoss's of y, bit for bit, and the gradient goes straight to
    the logits (LogSoftmaxNLLGrad, the composition's gradient in one op), not through y. y gets no
    adjoint, so LogSoftmax's gradient is not taken, and NLLLossGrad's (B, k) rows are never made.
    Built by `logsoftmax_nll_loss` (the course's SoftmaxLoss)."""

    def check(self, log_probs, labels, logits):
        super().check(log_probs, labels)
        if tuple(logits.shape) != tuple(log_probs.shape):
            raise ValueError(f"logsoftmax_nll_loss: logits of shape {tuple(logits.shape)} for log-probabilities "
                             f"of shape {tuple(log_probs.shape)}")

    def compute(self, log_probs, labels, logits):
        return super().compute(log_probs, labels)

    def gradient(self, out_grad, node):
        log_probs, labels, _ = node.inputs
        return None, None, LogSoftmaxNLLGrad()(out_grad, labels, log_probs)


class LogSoftmaxNLLGrad(TensorOp):
    """The gradient of nll_loss(logsoftmax(x)) with respect to x (B, k), from the loss's adjoint g
    (shape ()), the labels and y = logsoftmax(x): LogSoftmaxGrad applied to NLLLossGrad's rows,
    bit for bit (but for a nan's sign, with a nan adjoint), without those rows.

    Why it is the same: an NLLLossGrad row is v = -(g / B) at the label and zeros elsewhere, so its
    sum (numpy's, the row kernel's) is v + 0 whatever k and the label's place (the zeros change
    nothing but a -0.0, which becomes 0.0), and LogSoftmaxGrad's g + e, e = exp(y) * (-(v + 0)),
    is v + e at the label and 0 + e elsewhere. Computed that way, a (B, k) array of zeros is
    neither written, summed nor read: for the LSTM language model of benchmarks/ (700 x 10,000
    logits) three passes over 28 MB less per step. Its own gradient differentiates the Tensor-op
    composition (autograd.vjp), so higher derivatives are those of the two ops.
    """

    def check(self, g, labels, y):
        if tuple(g.shape) != ():
            raise ValueError(f"nll_loss gradient: the adjoint has shape {tuple(g.shape)}, expected ()")
        if len(y.shape) != 2 or tuple(labels.shape) != tuple(y.shape[:1]):
            raise ValueError(f"logsoftmax_nll_loss gradient: labels of shape {tuple(labels.shape)} for "
                             f"log-probabilities of shape {tuple(y.shape)}")

    def compute(self, g, labels, y):
        fused = array_api.device_log_softmax_nll_backward(g, labels, y)  # one pass over y, or None
        if fused is not None:
            return fused
        shape = tuple(y.shape)
        batch, classes = shape
        # the mask first: the exp, product, sums and select then follow one another (a compiled
        # step fuses them into one pass over y)
        mask = array_api.one_hot(classes, labels, dtype="bool", device=array_api.device_of(y))
        value = array_api.negative(array_api.divide(g, batch))
        negative_total = array_api.negative(array_api.add(value, 0.0))  # the rows' sums: value + 0
        e = array_api.multiply(array_api.exp(y), array_api.broadcast_to(negative_total, shape))
        return array_api.add(e, array_api.where(mask, array_api.broadcast_to(value, shape), 0.0))

    def gradient(self, out_grad, node):
        from .reduction import _logsoftmax_gradient

        g, labels, y = node.inputs
        shape = tuple(y.shape)
        grad_g, grad_y = vjp(lambda g, y: _logsoftmax_gradient(_nll_gradient(g, labels, shape), y, 1), (g, y),
                             (out_grad,))
        return grad_g, None, grad_y


def logsoftmax_nll_loss(logits, labels):
    """nll_loss(logsoftmax(logits, axis=1), labels) with the gradient of the pair in one op
    (LogSoftmaxNLLLoss): the same value and gradient bits; logits (B, k), B class ids. The course's
    SoftmaxLoss."""
    from .reduction import logsoftmax

    return LogSoftmaxNLLLoss()(logsoftmax(logits, axis=1), labels, logits)


def nll_loss(log_probs, labels):
    """NLLLoss()(log_probs, labels): -mean over the batch of log_probs[i, labels[i]]; log_probs (B, k)."""
    return NLLLoss()(log_probs, labels)
