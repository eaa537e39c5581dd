"""Loss ops whose gradient is PyTorch's own formula rather than the chain rule through their
forward: binary cross-entropy on probabilities.

PyTorch clamps binary_cross_entropy's logarithms at -100 (so a probability of exactly 0 or 1
gives a finite loss) and defines its gradient as w (x - t) / max(x (1 - x), 1e-12), which stays
finite and points the right way at the clamped ends, where the chain rule through the clamp
would give 0 (or 0 / 0). Composing existing ops cannot express that, so it is one op, its
forward made of array functions (every device, numpy mode) and its gradient of Tensor ops
(differentiable again).
"""
from __future__ import annotations

from ..autograd import TensorOp, array_api
from ._helpers import require_tensor, same_shape
from .elementwise import log, log1p, maximum

__all__ = ["BinaryCrossEntropy", "binary_cross_entropy"]

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
