"""The LSTM cell's pointwise part as one op: gate pre-activations and the cell state in, the new
hidden and cell states out (PyTorch's fused LSTM cell does the same part in one kernel).

Written as Tensor ops (`_gates`, what nn.LSTMCell ran before) one time step of one layer is 15
graph nodes forward and some 45 backward, each a separate pass over a (batch, hidden) array and
a node of the backward walk; a 35-step, 2-layer language model makes 4,000 of them per step.
LSTMGates and its gradient LSTMGatesGrad run the same array operations in the same order
(the same bits) as one node each. A second derivative differentiates the Tensor-op form through
autograd.vjp, so the fast op and the formula cannot disagree.

LSTMLayer goes one step further, as PyTorch's LSTM does: the recurrence of a whole layer over
the sequence is one op (nn.LSTM's layers run through it), and its gradient LSTMLayerGrad walks
the steps backwards at the array level, then gets the recurrent weight's gradient as one matmul
over all steps instead of one per step and their sum.
"""
from __future__ import annotations

from typing import Tuple

from ..autograd import TensorTupleOp, array_api, vjp
from ._helpers import require_tensor
from .elementwise import sigmoid, tanh
from .shape import split, stack
from .tuple_ops import entries_by_position, tuple_get_item

__all__ = ["LSTMGates", "LSTMGatesGrad", "lstm_gates", "LSTMLayer", "LSTMLayerGrad", "lstm_layer"]


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


def _cell(z, c0):
    """LSTMGates on arrays: (h, c) by the device's lstm_gates kernel where it applies (the same
    operations in the same order), else the array sequence."""
    fused = array_api.device_lstm_gates(z, c0)
    if fused is not None:
        return fused
    (i, f, g, o), _ = _activations(z, c0.shape[1])
    c = array_api.add(array_api.multiply(f, c0), array_api.multiply(i, g))
    return array_api.multiply(o, array_api.tanh(c)), c


def _cell_backward(gh, gc, z, c0, c):
    """LSTMGatesGrad on arrays: (grad_z, grad_c0) from the adjoints gh, gc of h and c (None for one
    that is zero, not both), z, c0 and the forward pass's c."""
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
        return _cell(z, c0)

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
        return _cell_backward(gh, gc, z, c0, c)

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


# --- a whole layer over the sequence ----------------------------------------------------------

def _layer(xw, h0, c0, W_hh, b_hh=None):
    """LSTMLayer as Tensor ops, the recurrence unrolled: (hs, cs, zs), each step's z = xw_t +
    h W_hh (+ b_hh) then _gates (what its gradient differentiates for second derivatives)."""
    batch, width = xw.shape[1], xw.shape[2]
    bias = None if b_hh is None else b_hh.reshape((1, width)).broadcast_to((batch, width))
    h, c = h0, c0
    hs, cs, zs = [], [], []
    for xw_t in split(xw, 0):
        z = xw_t + h @ W_hh
        if bias is not None:
            z = z + bias
        h, c = _gates(z, c)
        hs.append(h)
        cs.append(c)
        zs.append(z)
    return stack(hs, 0), stack(cs, 0), stack(zs, 0)


class LSTMLayer(TensorTupleOp):
    """One LSTM layer's recurrence over a sequence: (hs, cs, zs), each (T, B, H) but zs (T, B, 4H),
    from xw (T, B, 4H) = X_t W_ih + b_ih for every step t (one matmul over the whole sequence,
    outside this op), the initial states h0, c0 (B, H), W_hh (H, 4H) and, with `has_bias`, b_hh
    (4H,): step t's gates z_t = (xw_t + h_{t-1} W_hh) + b_hh, then (h_t, c_t) = LSTMGates(z_t,
    c_{t-1}). hs and cs hold every step's states (h_n = hs[T - 1], c_n = cs[T - 1]); zs is kept
    for the gradient (which recomputes the activations from it).

    The same array operations in the same order as LSTMCell's steps (the same values), as one
    graph node instead of some seven per step; PyTorch's LSTM also runs a layer as one op.
    ValueError for shapes that do not fit (named), or an empty sequence.
    """

    def __init__(self, has_bias: bool):
        self.has_bias = bool(has_bias)

    def check(self, xw, h0, c0, W_hh, *bias):
        for t in (xw, h0, c0, W_hh, *bias):
            require_tensor(t, "lstm_layer")
        if len(bias) != int(self.has_bias):
            raise TypeError(f"lstm_layer: expected {int(self.has_bias)} bias tensor(s), got {len(bias)}")
        if len(xw.shape) != 3 or xw.shape[0] == 0 or xw.shape[2] % 4:
            raise ValueError(f"lstm_layer: xw should be (seq_len >= 1, batch, 4 * hidden), got {xw.shape}")
        steps, batch, width = xw.shape
        state = (batch, width // 4)
        for name, t, shape in (("h0", h0, state), ("c0", c0, state), ("W_hh", W_hh, (width // 4, width)),
                               *((("bias_hh", b, (width,)) for b in bias))):
            if tuple(t.shape) != shape:
                raise ValueError(f"lstm_layer: {name} should have shape {shape} for xw of shape {xw.shape}, "
                                 f"got {t.shape}")

    def compute(self, xw, h0, c0, W_hh, *bias):
        api = array_api
        batch, width = xw.shape[1], xw.shape[2]
        b = api.broadcast_to(api.reshape(bias[0], (1, width)), (batch, width)) if bias else None
        h, c = h0, c0
        hs, cs, zs = [], [], []
        for xw_t in _steps(xw):
            z = api.add(xw_t, api.matmul(h, W_hh))
            if b is not None:
                z = api.add(z, b)
            h, c = _cell(z, c)
            hs.append(h)
            cs.append(c)
            zs.append(z)
        return api.stack(hs, 0), api.stack(cs, 0), api.stack(zs, 0)

    def gradient(self, out_grad, node):
        adjoints = entries_by_position(out_grad, 3)
        present = tuple(a is not None for a in adjoints)
        grads = LSTMLayerGrad(present, self.has_bias)(*[a for a in adjoints if a is not None], *node.inputs, node)
        return tuple(tuple_get_item(grads, k) if x.requires_grad else None for k, x in enumerate(node.inputs))


class LSTMLayerGrad(TensorTupleOp):
    """LSTMLayer's gradient: (grad_xw (T, B, 4H), grad_h0, grad_c0 (B, H), grad_W_hh (H, 4H)
    [, grad_b_hh (4H,)]) from the adjoints of hs, cs and zs that reached the layer (`present`
    says which come first among the inputs), then the layer's inputs and its forward node.

    Backwards over the steps: h_t's adjoint is its own (from hs) plus grad_z_{t+1} W_hh^T, c_t's
    its own plus the next step's grad_c, and LSTMGatesGrad's arithmetic gives grad_z_t and
    grad_c_{t-1} (the device's lstm_gates_backward kernel where it applies). Then W_hh's gradient
    is [h0; h_1 .. h_{T-1}]^T grad_Z, one matmul over the T * B rows, and b_hh's grad_Z's column
    sums (the per-step products' sum, in another order of additions: as PyTorch's, within
    float rounding of it). Its own gradient differentiates the Tensor-op form (_layer) through
    autograd.vjp.
    """

    def __init__(self, present: Tuple[bool, bool, bool], has_bias: bool):
        self.present = tuple(bool(p) for p in present)
        self.has_bias = bool(has_bias)

    def _adjoints(self, args) -> list:
        """The adjoints of (hs, cs, zs) from the op's leading arguments, None where absent."""
        given = iter(args[: sum(self.present)])
        return [next(given) if p else None for p in self.present]

    def compute(self, *args):
        api = array_api
        g_hs, g_cs, g_zs = (None if a is None else _steps(a) for a in self._adjoints(args))
        xw, h0, c0, W_hh = args[sum(self.present): sum(self.present) + 4]
        hs, cs, zs = args[-1]
        steps, batch, width = xw.shape
        hidden = width // 4
        c_steps, z_steps = _steps(cs), _steps(zs)
        # W_hh^T copied once for the T products grad_z W_hh^T: OpenBLAS runs a row-major (B, 4H) @
        # (4H, H) faster than the transposed view's NT product at small B (20 x 800 @ 800 x 200:
        # 62 against 83 us on 2 cores of the Intel Xeon AVX-512), the same sums in the same order
        w_t = api.ascontiguousarray(api.swapaxes(W_hh, -2, -1))
        grad_h = grad_c = None
        grad_zs = [None] * steps
        for t in reversed(range(steps)):
            gh = _plus(g_hs[t] if g_hs is not None else None, grad_h)
            gc = _plus(g_cs[t] if g_cs is not None else None, grad_c)
            c_prev = c0 if t == 0 else c_steps[t - 1]
            if gh is None and gc is None:
                grad_z = api.zeros((batch, width), api.dtype_of(xw), api.device_of(xw))
                grad_c = api.zeros((batch, hidden), api.dtype_of(xw), api.device_of(xw))
            else:
                grad_z, grad_c = _cell_backward(gh, gc, z_steps[t], c_prev, c_steps[t])
            if g_zs is not None:
                grad_z = api.add(grad_z, g_zs[t])
            grad_zs[t] = grad_z
            grad_h = api.matmul(grad_z, w_t)
        grad_xw = api.stack(grad_zs, 0)
        rows = steps * batch
        grad_rows = api.reshape(grad_xw, (rows, width))
        h_prev = api.reshape(api.stack([h0] + _steps(hs)[:-1], 0), (rows, hidden))
        grads = [grad_xw, grad_h, grad_c, api.matmul(api.swapaxes(h_prev, -2, -1), grad_rows)]
        if self.has_bias:
            grads.append(api.sum(grad_rows, (0,)))
        return tuple(grads)

    def gradient(self, out_grad, node):
        inputs = node.inputs[:-1]  # the adjoints and the layer's inputs (the forward node: read for its values)
        count, adjoints = sum(self.present), self._adjoints

        def first_order(*args):
            return vjp(_layer, args[count:], adjoints(args))

        return vjp(first_order, inputs, entries_by_position(out_grad, 4 + self.has_bias)) + (None,)


def _steps(x) -> list:
    """x[t] for each t of a (T, B, W) array, as views of it (made compact first if it is not):
    slices a step's kernels read in place, where unstack would copy every one."""
    api = array_api
    x = api.ascontiguousarray(x)
    steps, batch, width = x.shape
    return [api.as_strided(api.getitem(x, (slice(t, t + 1),)), (batch, width), (width, 1)) for t in range(steps)]


def _plus(a, b):
    """a + b on arrays where both are there, else the one that is (None for neither)."""
    if a is None or b is None:
        return b if a is None else a
    return array_api.add(a, b)


def lstm_layer(xw, h0, c0, W_hh, bias_hh=None):
    """(hs, cs) = LSTMLayer over the sequence (see LSTMLayer): every step's hidden and cell states,
    (T, B, H) each, from xw (T, B, 4H), h0, c0 (B, H), W_hh (H, 4H) and bias_hh (4H,) or None."""
    args = (xw, h0, c0, W_hh) + (() if bias_hh is None else (bias_hh,))
    out = LSTMLayer(bias_hh is not None)(*args)
    return tuple_get_item(out, 0), tuple_get_item(out, 1)
