"""Xavier (Glorot) and Kaiming (He) initialisers, as in the course."""
import math
import numbers

from .init_basic import rand, randn

__all__ = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]


def _relu_gain(nonlinearity: str) -> float:
    if nonlinearity != "relu":
        raise AssertionError(f"only nonlinearity='relu' is supported, got {nonlinearity!r}")
    return math.sqrt(2.0)


def _check_fans(name: str, fan_in, fan_out) -> None:
    """Fans are layer widths: a zero or negative one would divide by zero or take a square
    root of a negative number deep inside the formula."""
    for label, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
        if not isinstance(fan, numbers.Integral) or isinstance(fan, bool) or fan < 1:
            raise ValueError(f"{name}: {label} must be a positive integer (a layer width), got {fan!r}")


def xavier_uniform(fan_in, fan_out, gain=1.0, **kwargs):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)); shape (fan_in, fan_out)."""
    _check_fans("xavier_uniform", fan_in, fan_out)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rand(fan_in, fan_out, low=-a, high=a, **kwargs)


def xavier_normal(fan_in, fan_out, gain=1.0, **kwargs):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)); shape (fan_in, fan_out)."""
    _check_fans("xavier_normal", fan_in, fan_out)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return randn(fan_in, fan_out, mean=0.0, std=std, **kwargs)


def kaiming_uniform(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """U(-b, b) with b = gain * sqrt(3 / fan_in); shape `shape` or (fan_in, fan_out)."""
    _check_fans("kaiming_uniform", fan_in, fan_out)
    bound = _relu_gain(nonlinearity) * math.sqrt(3.0 / fan_in)
    shape = (fan_in, fan_out) if shape is None else tuple(shape)
    return rand(*shape, low=-bound, high=bound, **kwargs)


def kaiming_normal(fan_in, fan_out, nonlinearity="relu", **kwargs):
    """N(0, std^2) with std = gain / sqrt(fan_in); shape (fan_in, fan_out)."""
    _check_fans("kaiming_normal", fan_in, fan_out)
    std = _relu_gain(nonlinearity) / math.sqrt(fan_in)
    return randn(fan_in, fan_out, mean=0.0, std=std, **kwargs)
