"""What every hand-differentiated layer shares.

A manual layer has `forward(x)`, which caches what the backward pass needs, and
`backward(grad_out)`, which computes the gradients by hand from that cache:
it stores each parameter's gradient in an attribute (`W_grad` for `W`, ...)
and returns the gradient of the input. Nothing is recorded for autograd: the
cached tensors are constants and the arithmetic runs under `ndl.no_grad()`.
Gradients are overwritten by every backward call, like needle's `backward()`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..autograd import Tensor


class ManualLayer:
    """Base class: `params` names the parameter attributes; each has a `<name>_grad` attribute."""

    params: tuple = ()
    dtype: Optional[str]  # set by each layer
    device: Any

    def __init__(self):
        self.training = True
        self._cache = None
        for name in self.params:
            setattr(self, name + "_grad", None)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def parameters(self) -> Dict[str, Tensor]:
        """{name: parameter tensor}."""
        return {name: getattr(self, name) for name in self.params if getattr(self, name) is not None}

    def gradients(self) -> Dict[str, Optional[Tensor]]:
        """{name: gradient from the last backward call (None before the first)}."""
        return {name: getattr(self, name + "_grad") for name in self.parameters()}

    def zero_grad(self) -> None:
        for name in self.params:
            setattr(self, name + "_grad", None)

    def train(self, mode: bool = True) -> "ManualLayer":
        self.training = bool(mode)
        return self

    def eval(self) -> "ManualLayer":
        return self.train(False)

    def _input(self, value, what: str) -> Tensor:
        """`value` as a tensor: needle Tensors keep their dtype; other arrays become
        `self.dtype` tensors on `self.device`."""
        from ._convert import as_tensor

        dtype = None if isinstance(value, Tensor) else self.dtype
        return as_tensor(value, dtype=dtype, device=self.device, what=f"{type(self).__name__} {what}")

    def _saved(self):
        """The forward cache; RuntimeError if backward comes before forward."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._cache

    def _check_grad_shape(self, grad: Tensor, expected: tuple) -> None:
        if tuple(grad.shape) != tuple(expected):
            raise ValueError(
                f"{type(self).__name__}.backward: grad_out has shape {tuple(grad.shape)}, "
                f"but forward produced shape {tuple(expected)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""
