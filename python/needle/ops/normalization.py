"""Batch and layer normalisation as one op each: the forward pass in a handful of array
operations instead of some twenty graph nodes, and the gradient as one op too (BatchNormGrad,
LayerNormGrad), whose own gradient differentiates the same formula written as Tensor ops
(autograd.vjp).

Stateless: the statistics are outputs of the op (a tuple), not state kept on it for the module
(or the gradient) to read afterwards.
"""
from __future__ import annotations

from ..autograd import Partials, TensorTupleOp, array_api, vjp
from ._helpers import require_tensor, size_of
from .reduction import summation
from .shape import broadcast_to
from .tuple_ops import entries_by_position, tuple_entries, tuple_get_item

__all__ = ["BatchNorm", "BatchNormGrad", "batch_norm", "LayerNorm", "LayerNormGrad", "layer_norm",
           "layer_norm_formula"]


class BatchNorm(TensorTupleOp):
    """Training-mode batch norm over axis 0: (w * (x - mean) / sqrt(var + eps) + b, mean, var).

    x (N, C); w and b hold C values (shape (C,) or (1, C)); mean and the biased
    variance (divide by N), both of shape (C,), are the batch's (for the caller's
    running averages). The gradient covers all three outputs.

    Edges: x - mean is normalised first, so a constant column (variance 0) gives exactly
    b, with a finite gradient (scaled by 1 / sqrt(eps)), even for a column of 1e8, where
    PyTorch's CPU kernel, computing x * scale + shift, is off by 1e3; a nan in a column
    makes that column's outputs and gradients nan.
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def check(self, x, w, b):
        for t in (x, w, b):
            require_tensor(t, "batch norm")
        if len(x.shape) != 2:
            raise ValueError(f"batch norm expects input of shape (N, C), got {x.shape}")
        channels = x.shape[1]
        for name, t in (("weight", w), ("bias", b)):
            if t.shape not in ((channels,), (1, channels)):
                raise ValueError(f"batch norm: {name} of shape {t.shape} for input of shape {x.shape}")

    def compute(self, x, w, b):
        fused = array_api.device_batch_norm(x, w, b, self.eps)  # the same bits in three passes, or None
        if fused is not None:
            return fused
        n, channels = x.shape
        shape = tuple(x.shape)
        mean = array_api.divide(array_api.sum(x, axis=0, keepdims=True), n)
        centered = array_api.subtract(x, array_api.broadcast_to(mean, shape))
        var = array_api.divide(array_api.sum(array_api.multiply(centered, centered), axis=0, keepdims=True), n)
        normed = array_api.divide(centered, array_api.broadcast_to(array_api.sqrt(array_api.add(var, self.eps)),
                                                                   shape))
        w = array_api.broadcast_to(array_api.reshape(w, (1, channels)), shape)
        b = array_api.broadcast_to(array_api.reshape(b, (1, channels)), shape)
        out = array_api.add(array_api.multiply(w, normed), b)
        return out, array_api.reshape(mean, (channels,)), array_api.reshape(var, (channels,))

    def gradient(self, out_grad, node):
        x, w, b = node.inputs
        grads = dict(tuple_entries(out_grad))
        if set(grads) == {0}:  # the usual case: the statistics were used detached (running averages)
            grad = BatchNormGrad(self.eps, tuple(w.shape), tuple(b.shape))(grads[0], x, w, node)
            return tuple_get_item(grad, 0), tuple_get_item(grad, 1), tuple_get_item(grad, 2)
        n, channels = x.shape
        shape = x.shape
        grad_x = grad_w = grad_b = None
        if grads.get(0) is not None:
            grad_x, grad_w, grad_b = _output_gradient(grads[0], x, w, self.eps, tuple(b.shape))
        # the statistics as outputs: d mean/dx = 1/n, d var/dx = 2 (x - mean) / n
        if grads.get(1) is not None:
            part = (grads[1].reshape((1, channels)) / n).broadcast_to(shape)
            grad_x = part if grad_x is None else grad_x + part
        if grads.get(2) is not None:
            centered = x - (summation(x, axes=(0,), keepdims=True) / n).broadcast_to(shape)
            part = centered * (grads[2].reshape((1, channels)) * (2.0 / n)).broadcast_to(shape)
            grad_x = part if grad_x is None else grad_x + part
        return grad_x, grad_w, grad_b


def _output_gradient(g, x, w, eps: float, bias_shape: tuple):
    """(grad_x, grad_w, grad_b) of BatchNorm's first output given its adjoint g, as Tensor ops:
    the reference BatchNormGrad computes at the array level, and what its own gradient
    differentiates. x_hat is rebuilt from x (not read from the forward pass) so that this is a
    function of x that can be differentiated again."""
    n, channels = x.shape
    shape = x.shape
    mean = summation(x, axes=(0,), keepdims=True) / n
    centered = x - mean.broadcast_to(shape)
    var = summation(centered * centered, axes=(0,), keepdims=True) / n
    inv_std = (var + eps) ** -0.5
    x_hat = centered * inv_std.broadcast_to(shape)
    g_sum = summation(g, axes=(0,), keepdims=True)
    gx_sum = summation(g * x_hat, axes=(0,), keepdims=True)
    scale = (w.reshape((1, channels)) * inv_std / n).broadcast_to(shape)
    grad_x = scale * (g * n - g_sum.broadcast_to(shape) - x_hat * gx_sum.broadcast_to(shape))
    return grad_x, gx_sum.reshape(w.shape), g_sum.reshape(bias_shape)


class BatchNormGrad(TensorTupleOp):
    """BatchNorm's gradient for (x, w, b) given the adjoint g of its output (N, C): the tuple
    (grad_x (N, C), grad_w, grad_b) in the shapes of w and b. Inputs: g, x, w and the forward
    BatchNorm node, whose batch mean and variance it reads instead of computing them again.

    Why an op: written as Tensor ops (`_output_gradient`) this gradient is some 25 graph nodes
    and 17 passes over (N, C) data; here it is 10 passes and one node, with the same bits (the
    same float operations in the same order: IEEE a - b is a + (-b), and -(a * b) is a * (-b)).
    Its own gradient (a second derivative) differentiates `_output_gradient` (autograd.vjp).
    """

    def __init__(self, eps: float, weight_shape: tuple, bias_shape: tuple):
        self.eps = eps
        self.weight_shape = tuple(weight_shape)
        self.bias_shape = tuple(bias_shape)

    def check(self, g, x, w, stats):
        if g.shape != x.shape or len(x.shape) != 2 or tuple(w.shape) != self.weight_shape:
            raise ValueError(f"batch norm gradient: g {g.shape}, x {x.shape} and weight {w.shape} do not fit "
                             f"(weight shape {self.weight_shape} expected)")

    def compute(self, g, x, w, stats):
        n, channels = x.shape
        shape = tuple(x.shape)
        api = array_api
        _, mean, var = stats
        fused = api.device_batch_norm_backward(g, x, w, mean, var, self.eps)  # the same bits in two passes, or None
        if fused is not None:
            grad_x, grad_w, grad_b = fused
            return (grad_x, grad_w if self.weight_shape == (channels,) else api.reshape(grad_w, self.weight_shape),
                    grad_b if self.bias_shape == (channels,) else api.reshape(grad_b, self.bias_shape))
        inv_std = api.power(api.add(api.reshape(var, (1, channels)), self.eps), -0.5)
        # the steps of _output_gradient, each on the same operands (the (1, C) rows broadcast)
        centered = api.add(x, api.broadcast_to(api.negative(api.reshape(mean, (1, channels))), shape))
        x_hat = api.multiply(centered, api.broadcast_to(inv_std, shape))
        g_sum = api.sum(g, (0,), True)
        gx_sum = api.sum(api.multiply(g, x_hat), (0,), True)
        scale = api.divide(api.multiply(api.reshape(w, (1, channels)), inv_std), n)
        inner = api.add(api.multiply(g, n), api.broadcast_to(api.negative(g_sum), shape))
        inner = api.add(inner, api.multiply(x_hat, api.broadcast_to(api.negative(gx_sum), shape)))
        grad_x = api.multiply(api.broadcast_to(scale, shape), inner)
        return grad_x, api.reshape(gx_sum, self.weight_shape), api.reshape(g_sum, self.bias_shape)

    def gradient(self, out_grad, node):
        g, x, w, _ = node.inputs
        eps, bias_shape = self.eps, self.bias_shape
        return vjp(lambda g, x, w: _output_gradient(g, x, w, eps, bias_shape), (g, x, w),
                   entries_by_position(out_grad, 3)) + (None,)


def batch_norm(x, weight, bias, eps: float = 1e-5):
    """(out, batch mean, biased batch variance): see BatchNorm."""
    stats = BatchNorm(eps)(x, weight, bias)
    return tuple_get_item(stats, 0), tuple_get_item(stats, 1), tuple_get_item(stats, 2)


# --- layer normalisation over the last axis ---------------------------------------------------------

def layer_norm_formula(x, w, b, eps: float, normalized_ndim: int = 1):
    """(out, mean, var) of LayerNorm over x's last `normalized_ndim` axes as Tensor ops: what
    F.layer_norm runs where the LayerNorm op does not apply (several axes, no weight or bias), the
    reference the op reproduces bit for bit, and what its gradient differentiates where the
    statistics are used. w and b (of the normalized shape) may be None."""
    shape = x.shape
    axes = tuple(range(len(shape) - normalized_ndim, len(shape)))
    normalized = tuple(shape[len(shape) - normalized_ndim:])
    lead = (1,) * (len(shape) - normalized_ndim)
    count = size_of(normalized)
    mean = summation(x, axes, keepdims=True) / count
    centered = x - mean.broadcast_to(shape)
    var = summation(centered * centered, axes, keepdims=True) / count
    out = centered / ((var + eps) ** 0.5).broadcast_to(shape)
    if w is not None:
        out = out * w.reshape(lead + normalized).broadcast_to(shape)
    if b is not None:
        out = out + b.reshape(lead + normalized).broadcast_to(shape)
    return out, mean, var


def _layer_norm_gradient(g, x, w, eps: float):
    """LayerNormGrad's outputs as Tensor ops (what its own gradient differentiates): the backward
    walk's steps through `layer_norm_formula` given the output's adjoint g, x's two partials kept
    apart (grad_c through x - mean, grad_mean through the mean's sum)."""
    d, shape = x.shape[-1], x.shape
    axes = (len(shape) - 1,)
    lead_axes = tuple(range(len(shape) - 1))
    mean = summation(x, axes, keepdims=True) / d
    centered = x - mean.broadcast_to(shape)
    var_eps = summation(centered * centered, axes, keepdims=True) / d + eps
    std = (var_eps ** 0.5).broadcast_to(shape)
    scaled = g * w.reshape((1,) * len(lead_axes) + (d,)).broadcast_to(shape)
    normed = centered / std
    std_adjoint = summation(-scaled * (normed / std), axes).reshape(var_eps.shape)
    var_adjoint = (std_adjoint * (var_eps ** -0.5 * 0.5) / d).broadcast_to(shape)
    through_var = var_adjoint * centered
    grad_c = scaled / std + through_var + through_var
    grad_mean = summation(-grad_c, axes).reshape(mean.shape) / d
    grad_w, grad_b = g * normed, g
    if lead_axes:
        grad_w, grad_b = summation(grad_w, lead_axes), summation(grad_b, lead_axes)
    return grad_c, grad_mean, grad_w.reshape(w.shape), grad_b.reshape(w.shape)


class LayerNorm(TensorTupleOp):
    """LayerNorm over the last axis: (w * (x - mean) / sqrt(var + eps) + b, mean, var) with the
    biased variance; x (..., d), w and b (d,), mean and var (..., 1) (PyTorch's layer_norm over
    one axis, the course's LayerNorm1d).

    The bits of `layer_norm_formula`'s Tensor ops (what F.layer_norm composed before), in one
    pass per row on the cpu (the device's layer_norm kernel) or its array sequence elsewhere. The
    gradient is one LayerNormGrad node where the statistics are not used, and x gets its two
    partial adjoints from it separately (autograd.Partials), in the order the Tensor ops' backward
    gives them: so x's adjoint is added up as it was, also beside a residual branch's. (A tensor that
    is x and also the weight or bias gets the formula's adjoint added up inside the op: the formula's
    walk would interleave its partials with those of its other uses; F.layer_norm keeps the Tensor
    ops for such a call.)
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def check(self, x, w, b):
        for t in (x, w, b):
            require_tensor(t, "layer_norm")
        if len(x.shape) < 1 or tuple(w.shape) != tuple(x.shape[-1:]) or tuple(b.shape) != tuple(w.shape):
            raise ValueError(f"layer_norm: weight {w.shape} and bias {b.shape} for input of shape {x.shape} "
                             f"(both ({x.shape[-1] if x.shape else '?'},) expected)")

    def compute(self, x, w, b):
        fused = array_api.device_layer_norm(x, w, b, self.eps)  # the same bits in one pass per row, or None
        if fused is not None:
            return fused
        api, shape = array_api, tuple(x.shape)
        d, axes, lead = shape[-1], (len(shape) - 1,), (1,) * (len(shape) - 1)
        mean = api.divide(api.sum(x, axes, True), d)
        centered = api.add(x, api.negative(api.broadcast_to(mean, shape)))
        var = api.divide(api.sum(api.multiply(centered, centered), axes, True), d)
        std = api.power(api.add(var, self.eps), 0.5)
        normed = api.divide(centered, api.broadcast_to(std, shape))
        out = api.add(api.multiply(normed, api.broadcast_to(api.reshape(w, lead + (d,)), shape)),
                      api.broadcast_to(api.reshape(b, lead + (d,)), shape))
        return out, mean, var

    def gradient(self, out_grad, node):
        x, w, b = node.inputs
        grads = dict(tuple_entries(out_grad))
        if set(grads) == {0} and x is not w and x is not b:  # the usual case: only the output is used
            grad = LayerNormGrad(self.eps)(grads[0], x, w, node)
            grad_c, grad_mean = tuple_get_item(grad, 0), tuple_get_item(grad, 1)
            return (Partials((grad_c, broadcast_to(grad_mean, x.shape))), tuple_get_item(grad, 2),
                    tuple_get_item(grad, 3))
        eps = self.eps
        return vjp(lambda x, w, b: layer_norm_formula(x, w, b, eps), (x, w, b), entries_by_position(out_grad, 3))


class LayerNormGrad(TensorTupleOp):
    """LayerNorm's gradient given the adjoint g of its output (x's shape): (grad_c (x's shape),
    grad_mean (x's shape with a last axis of 1), grad_w (d,), grad_b (d,)). Inputs: g, x, w and the
    forward LayerNorm node, whose mean and variance it reads. x's adjoint is grad_c plus grad_mean
    broadcast, which the walk adds as two partials (LayerNorm.gradient); with s = sqrt(var + eps),
    c = x + (-mean):

        p1 = (g * w) / s,  std_adj = sum((-(g * w)) * ((c / s) / s)),
        var_adj = (std_adj * ((var + eps) ** -0.5 * 0.5)) / d,
        grad_c = (p1 + var_adj * c) + var_adj * c,  grad_mean = sum(-grad_c) / d,
        grad_w = sum over rows of g * (c / s),  grad_b = sum over rows of g

    -- the backward walk's array operations through `layer_norm_formula`, in its order, so the same
    bits (one pass per row on the cpu: the device's layer_norm_backward kernel). Its own gradient
    differentiates `_layer_norm_gradient` (autograd.vjp).
    """

    def __init__(self, eps: float):
        self.eps = eps

    def check(self, g, x, w, stats):
        if tuple(g.shape) != tuple(x.shape):
            raise ValueError(f"layer_norm gradient: adjoint of shape {g.shape} for input of shape {x.shape}")

    def compute(self, g, x, w, stats):
        api, shape = array_api, tuple(x.shape)
        _, mean, var = stats
        var_eps = api.add(var, self.eps)
        std = api.power(var_eps, 0.5)
        half_power = api.multiply(api.power(var_eps, -0.5), 0.5)
        fused = api.device_layer_norm_backward(g, x, w, mean, std, half_power)  # one pass per row, or None
        if fused is not None:
            grad_c, grad_mean, grad_w, grad_b = fused
            return grad_c, grad_mean, api.reshape(grad_w, tuple(w.shape)), api.reshape(grad_b, tuple(w.shape))
        d, axes, lead_axes = shape[-1], (len(shape) - 1,), tuple(range(len(shape) - 1))
        centered = api.add(x, api.broadcast_to(api.negative(mean), shape))
        std_rows = api.broadcast_to(std, shape)
        scaled = api.multiply(g, api.broadcast_to(api.reshape(w, (1,) * len(lead_axes) + (d,)), shape))
        normed = api.divide(centered, std_rows)
        std_adjoint = api.reshape(api.sum(api.multiply(api.negative(scaled), api.divide(normed, std_rows)), axes),
                                  tuple(std.shape))
        var_adjoint = api.broadcast_to(api.divide(api.multiply(std_adjoint, half_power), d), shape)
        through_var = api.multiply(var_adjoint, centered)
        grad_c = api.add(api.add(api.divide(scaled, std_rows), through_var), through_var)
        grad_mean = api.divide(api.reshape(api.sum(api.negative(grad_c), axes), tuple(mean.shape)), d)
        grad_w, grad_b = api.multiply(g, normed), g
        if lead_axes:
            grad_w, grad_b = api.sum(grad_w, lead_axes), api.sum(grad_b, lead_axes)
        return grad_c, grad_mean, api.reshape(grad_w, tuple(w.shape)), api.reshape(grad_b, tuple(w.shape))

    def gradient(self, out_grad, node):
        g, x, w, _ = node.inputs
        eps = self.eps
        grad_g, grad_x, grad_w = vjp(lambda g, x, w: _layer_norm_gradient(g, x, w, eps), (g, x, w),
                                     entries_by_position(out_grad, 4))
        return grad_g, grad_x, grad_w, None


def layer_norm(x, weight, bias, eps: float = 1e-5):
    """LayerNorm(eps)(x, weight, bias): (out, mean, var) over x's last axis."""
    return LayerNorm(eps)(x, weight, bias)
