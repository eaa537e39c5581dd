"""gradcheck: needle's autograd gradients against central finite differences.

For a function f of needle Tensors returning a scalar, every input that
requires grad gets its analytical gradient from one backward pass, and its
numerical gradient element by element from
    (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)
computed in the inputs' own dtype. Use float64: with float32 inputs the
differences are dominated by rounding error unless eps is large.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..autograd import Tensor, enable_grad, no_grad


def _scalar(out, what: str) -> float:
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a needle Tensor, got {type(out).__name__} ({what})")
    if int(np.prod(out.shape)) != 1:
        raise ValueError(f"gradcheck: f must return a scalar (one element), got shape {tuple(out.shape)} ({what})")
    return float(out.numpy().reshape(()))


def gradcheck(f, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True) -> bool:
    """True when, for every input Tensor with requires_grad, each element satisfies
    |analytical - numerical| <= atol + rtol * |numerical|.

    Otherwise raises AssertionError naming the first failing input (its index
    among the arguments), its worst element (index, analytical and numerical
    values) and how many elements fail; with raise_exception=False returns False.
    Arguments that are not Tensors, or do not require grad, are passed to f as is.
    An input f does not depend on has analytical gradient zero.
    """
    if eps <= 0:
        raise ValueError(f"gradcheck: eps must be positive, got {eps}")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a needle Tensor with requires_grad=True")
    low = [i for i in checked if np.dtype(inputs[i].dtype) != np.float64]
    if low:
        warnings.warn(f"gradcheck: inputs {low} are not float64; finite differences in low precision are "
                      f"unreliable", stacklevel=2)

    # analytical: one backward pass through fresh leaves sharing the inputs' data
    leaves = [Tensor.make_const(x.realize_cached_data(), requires_grad=i in checked) if isinstance(x, Tensor) else x
              for i, x in enumerate(inputs)]
    with enable_grad():
        out = f(*leaves)
        _scalar(out, "at the inputs")
        out.backward()

    with no_grad():
        constants = [x.detach() if isinstance(x, Tensor) else x for x in leaves]
        for i in checked:
            x = inputs[i]
            grad = leaves[i].grad
            analytical = np.zeros(x.shape) if grad is None else grad.numpy().astype(np.float64)
            values = x.numpy().copy()
            numerical = np.zeros(values.shape, dtype=np.float64)

            def at(array):
                args = list(constants)
                args[i] = Tensor(array, dtype=x.dtype, device=x.device, requires_grad=False)
                return _scalar(f(*args), f"input {i} perturbed")

            for j in range(values.size):
                original = values.flat[j]
                values.flat[j] = original + eps
                plus = at(values)
                values.flat[j] = original - eps
                minus = at(values)
                values.flat[j] = original
                numerical.flat[j] = (plus - minus) / (2 * eps)

            excess = np.abs(analytical - numerical) - (atol + rtol * np.abs(numerical))
            bad = ~(excess <= 0)  # NaN counts as a failure
            if bad.any():
                if not raise_exception:
                    return False
                flat = int(np.argmax(np.where(np.isnan(excess), np.inf, excess)))
                idx = np.unravel_index(flat, values.shape) if values.shape else ()
                a, n = analytical.flat[flat], numerical.flat[flat]
                raise AssertionError(
                    f"gradcheck: gradient of input {i} (shape {tuple(values.shape)}, dtype {x.dtype}) is wrong at "
                    f"element {tuple(int(k) for k in idx)}: analytical {a:.6g}, numerical {n:.6g} "
                    f"(|difference| {abs(a - n):.3g} > atol + rtol*|numerical| = {atol + rtol * abs(n):.3g}); "
                    f"{int(bad.sum())} of {values.size} elements differ"
                )
    return True
