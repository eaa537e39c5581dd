"""Special functions composed of array functions: erf (for the exact GELU).

numpy has no erf, and a kernel would have to be written once per device; instead erf is
W. J. Cody's rational Chebyshev approximation (Math. Comp. 23, 1969; netlib specfun
CALERF), which is accurate to a couple of float64 ulps, evaluated with elementwise
array functions only, so it runs unchanged on every device and in numpy mode.
"""
from __future__ import annotations

import math

from ..autograd import TensorOp, array_api
from ._helpers import require_tensor
from .elementwise import exp

__all__ = ["Erf", "erf"]

# Cody's coefficients: erf(x) = x P(x^2) / Q(x^2) for |x| <= 0.46875 ...
_SMALL_NUM = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
              1.85777706184603153e-1)
_SMALL_DEN = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# ... erfc(y) = exp(-y^2) P(y) / Q(y) for 0.46875 < y <= 4 ...
_MID_NUM = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
            8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
            2.15311535474403846e-8)
_MID_DEN = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
            3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
# ... and erfc(y) = exp(-y^2) / y (1/sqrt(pi) + R(1/y^2)) for y > 4
_BIG_NUM = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
            6.58749161529837803e-4, 1.63153871373020978e-2)
_BIG_DEN = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
            2.33520497626869185e-3)
_SMALL_LIMIT, _MID_LIMIT, _BIG_LIMIT = 0.46875, 4.0, 8.0


def _ratio(t, num, den):
    """Cody's nested form of P(t) / Q(t): num has one more coefficient than den, stored first-to-last
    with the leading one at the end (the netlib order)."""
    top = array_api.multiply(t, num[-1])
    bottom = t
    for a, b in zip(num[:-2], den[:-1]):
        top = array_api.multiply(array_api.add(top, a), t)
        bottom = array_api.multiply(array_api.add(bottom, b), t)
    return array_api.divide(array_api.add(top, num[-2]), array_api.add(bottom, den[-1]))


def _erf_array(x):
    """erf of a float array, elementwise.

    Each range's formula is evaluated everywhere on its input clamped into (about) its range,
    and `where` picks one: a range not taken then never overflows (1/y^2 at 0, y^2 at 1e30)
    nor warns. Past y = 8 erfc is below 1e-27, so 1 - erfc(min(y, 8)) is exactly 1; a nan
    survives every clamp (maximum and minimum propagate it) and fails every comparison.
    """
    y = array_api.abs(x)
    s = array_api.maximum(array_api.minimum(x, 0.5), -0.5)
    small = array_api.multiply(s, _ratio(array_api.multiply(s, s), _SMALL_NUM, _SMALL_DEN))
    m = array_api.minimum(y, _MID_LIMIT)
    erfc = array_api.multiply(_ratio(m, _MID_NUM, _MID_DEN),
    array_api.exp(array_api.negative(array_api.multiply(m, m))))
    # each range is some thirty passes over the array, so the last one is skipped where it cannot
    # change the result: in float32, 1 - erfc(4) = 1 - 1.5e-8 already rounds to 1
    if array_api.dtype_name(array_api.dtype_of(x)) != "float32":
        b = array_api.minimum(array_api.maximum(y, _MID_LIMIT), _BIG_LIMIT)
        inverse = array_api.divide(1.0, array_api.multiply(b, b))
        tail = array_api.multiply(inverse, _ratio(inverse, _BIG_NUM, _BIG_DEN))
        big = array_api.multiply(array_api.divide(array_api.subtract(1 / math.sqrt(math.pi), tail), b),
                                 array_api.exp(array_api.negative(array_api.multiply(b, b))))
        erfc = array_api.where(array_api.less_equal(y, _MID_LIMIT), erfc, big)
    # erf = sign(x) (1 - erfc(|x|)); a nan fails x < 0 and stays nan through 1 - nan
    large = array_api.where(array_api.less(x, 0), array_api.subtract(erfc, 1.0), array_api.subtract(1.0, erfc))
    return array_api.where(array_api.less_equal(y, _SMALL_LIMIT), small, large)


class Erf(TensorOp):
    """The error function erf(a) = 2/sqrt(pi) * integral_0^a exp(-t^2) dt, elementwise (torch.erf).

    Float input only (float32 is computed in float32, float64 in float64). Gradient
    2/sqrt(pi) * exp(-a^2) * g.

    Edges: erf(+-inf) = +-1 with gradient 0, nan stays nan, erf(-0) = -0, as torch.erf.
    """

    def check(self, a):
        require_tensor(a, "erf")
        if a.dtype not in ("float32", "float64"):
            raise TypeError(f"erf needs a float tensor, got dtype {a.dtype}")

    def compute(self, a):
        return _erf_array(a)

    def gradient(self, out_grad, node):
        a = node.inputs[0]
        return out_grad * (exp(-(a * a)) * (2 / math.sqrt(math.pi)))


def erf(a):
    return Erf()(a)
