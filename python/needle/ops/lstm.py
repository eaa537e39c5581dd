"""The LSTM cell's pointwise part as one op: gate pre-activations and the cell state in, the new
hidden and cell states out (PyTorch's fused LSTM cell does the same part in one kernel).

Written as Tensor ops (`_gates`, what nn.LSTMCell ran before) one time step of one layer is 15
graph nodes forward and some 45 backward, each a separate pass over a (batch, hidden) array and
a node of the backward walk; a 35-step, 2-layer language model makes 4,000 of them per step.
LSTMGates and its gradient LSTMGatesGrad run the same array operations in the same order
(the same bits) as one node each. A second derivative differentiates the Tensor-op form through
autograd.vjp, so the fast op and the formula cannot disagree.
"""
from __future__ import annotations

from ..autograd import TensorTupleOp, array_api, vjp
from ._helpers import require_tensor
from .elementwise import sigmoid, tanh
from .shape import split
from .tuple_ops import entries_by_position, tuple_get_item

__all__ = ["LSTMGates", "LSTMGatesGrad", "lstm_gates"]


def _gates(z, c0):
    """(h, c) from z (B, 4H) and c0 (B, H) as Tensor ops: i, f, g, o = sigmoid, sigmoid, tanh,
    sigmoid of z's four column blocks (PyTorch's gate order), c = f * c0 + i * g, h = o * tanh(c)."""
    batch, hidden = c0.shape
    i, f, g, o = split(z.reshape((batch, 4, hidden)), 1)
    i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    c = f * c0 + i * g
    return o * tanh(c), c


def _activations(z, hidden):
    """i, f, g, o of z (B, 4H) on arrays, as _gates computes them (Split's slices, then the
    activations), and the four slices of z."""
    parts = array_api.unstack(array_api.reshape(array_api.ascontiguousarray(z), (z.shape[0], 4, hidden)), axis=1)
    return (array_api.sigmoid(parts[0]), array_api.sigmoid(parts[1]), array_api.tanh(parts[2]),
            array_api.sigmoid(parts[3])), parts


class LSTMGates(TensorTupleOp):
    """(h, c) = the LSTM cell's new states from the gate pre-activations z (B, 4H), blocks in
    PyTorch's order (input, forget, cell, output), and the previous cell state c0 (B, H):
    c = sigmoid(z_f) * c0 + sigmoid(z_i) * tanh(z_g), h = sigmoid(z_o) * tanh(c).

    Edges: those of sigmoid and tanh (saturating to 0/1 and +-1 for large |z|; nan in, nan out).
    On the cpu, compact inputs take the device's lstm_gates kernel (the same operations in the
    same order: the bits of the array sequence below).
    """

    def check(self, z, c0):
        require_tensor(z, "lstm_gates")
        require_tensor(c0, "lstm_gates")
        if len(c0.shape) != 2 or tuple(z.shape) != (c0.shape[0], 4 * c0.shape[1]):
            raise ValueError(f"lstm_gates: z of shape {z.shape} and c0 of shape {c0.shape} do not fit: z must be "
                             "(batch, 4 * hidden) for c0 (batch, hidden)")

    def compute(self, z, c0):
        fused = array_api.device_lstm_gates(z, c0)  # the same operations in one pass where the device has it
        if fused is not None:
            return fused
        (i, f, g, o), _ = _activations(z, c0.shape[1])
        c = array_api.add(array_api.multiply(f, c0), array_api.multiply(i, g))
        return array_api.multiply(o, array_api.tanh(c)), c

    def gradient(self, out_grad, node):
        z, c0 = node.inputs
        gh, gc = entries_by_position(out_grad, 2)
        adjoints = [a for a in (gh, gc) if a is not None]
        grad = LSTMGatesGrad(gh is not None, gc is not None)(*adjoints, z, c0, node)
        return tuple_get_item(grad, 0), (tuple_get_item(grad, 1) if c0.requires_grad else None)


class LSTMGatesGrad(TensorTupleOp):
    """LSTMGates' gradient: (grad_z (B, 4H), grad_c0 (B, H)) from the adjoints of h and c (those
    that reached the cell: `has_h`, `has_c` say which come first among the inputs), then z, c0
    and the forward LSTMGates node (its c, which tanh(c) is recomputed from).

    The array operations of the Tensor-op gradient of `_gates` in its order: the sigmoid's
    gradient s * sigmoid(-a), tanh's 1 + -(t * t), the adjoint of c as (adjoint from outside)
    + (the part through h), a gate's adjoint zero where none reached it. Exactly the bits of
    backward through `_gates` when c's adjoint from outside is one partial (its own next step:
    an addition of two terms is the same either way round); more partials are added by the
    walk before they reach this op. On the cpu it is the device's lstm_gates_backward kernel:
    numpy's exp and tanh, then the sigmoids and the arithmetic in one pass, the same operations
    in the same order (a nan result's sign is the one bit that may differ, as in a compiled
    step's fused loops)."""

    def __init__(self, has_h: bool, has_c: bool):
        self.has_h = has_h
        self.has_c = has_c

    def _adjoints(self, args) -> tuple:
        """(gh, gc) from the op's leading arguments, None for the one that is not there."""
        return args[0] if self.has_h else None, args[int(self.has_h)] if self.has_c else None

    def compute(self, *args):
        gh, gc = self._adjoints(args)
        z, c0, (_, c) = args[-3:]
        api = array_api
        fused = api.device_lstm_gates_backward(gh, gc, z, c0, c)  # the same operations, where the device has it
        if fused is not None:
            return fused
        (i, f, g, o), (z_i, z_f, _, z_o) = _activations(z, c0.shape[1])
        sig_neg_i, sig_neg_f = api.sigmoid(api.negative(z_i)), api.sigmoid(api.negative(z_f))
        grads = [None, None, None, None]  # i, f, g, o
        grad_c = gc
        if gh is not None:
            tanh_c = api.tanh(c)
            sig_neg_o = api.sigmoid(api.negative(z_o))
            grads[3] = api.multiply(api.multiply(gh, tanh_c), api.multiply(o, sig_neg_o))
            through_h = api.multiply(api.multiply(gh, o), api.add(api.negative(api.multiply(tanh_c, tanh_c)), 1))
            grad_c = through_h if grad_c is None else api.add(grad_c, through_h)
        else:
            grads[3] = api.zeros(c0.shape, api.dtype_of(z), api.device_of(z))
        grads[0] = api.multiply(api.multiply(grad_c, g), api.multiply(i, sig_neg_i))
        grads[2] = api.multiply(api.multiply(grad_c, i), api.add(api.negative(api.multiply(g, g)), 1))
        grads[1] = api.multiply(api.multiply(grad_c, c0), api.multiply(f, sig_neg_f))
        grad_z = api.reshape(api.stack(grads, axis=1), tuple(z.shape))
        return grad_z, api.multiply(grad_c, f)

    def gradient(self, out_grad, node):
        inputs = node.inputs[:-1]  # the adjoints, z and c0 (not the forward node: read for its value only)
        adjoints = self._adjoints

        def first_order(*args):
            z, c0 = args[-2:]
            return vjp(_gates, (z, c0), adjoints(args))

        return vjp(first_order, inputs, entries_by_position(out_grad, 2)) + (None,)


def lstm_gates(z, c0):
    """(h, c) = LSTMGates()(z, c0) as two Tensors (see LSTMGates)."""
    states = LSTMGates()(z, c0)
    return tuple_get_item(states, 0), tuple_get_item(states, 1)
