"""PyTorch's gradient clipping, `torch.nn.utils` as `needle.nn.utils`:
clip_grad_norm_, clip_grad_value_, get_total_norm, clip_grads_with_norm_.

Everything is computed on the device, with no number read back into Python (except
with error_if_nonfinite=True, which must look at the norm), so the functions work inside
a compiled step (`ndl.compile`) as they do eagerly.

"In place" as PyTorch: a gradient that owns its buffer (after `backward(accumulate=True)`
or `zero_grad(set_to_none=False)`) is scaled or clamped in its own memory. The course's
backward may hand one gradient tensor to several parameters (both inputs of an add get
the same one); such a `.grad` is replaced by a scaled copy instead, so clipping one
parameter never rescales another's gradient twice.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Union, cast

from needle import init, ops
from needle.autograd import Tensor, array_api, no_grad

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]

Tensors = Union[Tensor, Iterable[Tensor]]


def _tensor_list(tensors: Any, what: str) -> List[Tensor]:
    """A single tensor or an iterable of them (a generator is read once) as a list."""
    if isinstance(tensors, Tensor):
        return [tensors]
    try:
        items = list(tensors)
    except TypeError:
        raise TypeError(f"{what} expects a tensor or an iterable of tensors, got {type(tensors).__name__}") from None
    for item in items:
        if not isinstance(item, Tensor):
            raise TypeError(f"{what} expects tensors, got a {type(item).__name__} among them")
    return items


def _order(norm_type: Any, what: str) -> float:
    """norm_type as a float: a positive number or inf ('inf' too). ValueError otherwise."""
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: norm_type must be a number or 'inf', got {norm_type!r}") from None
    if not p > 0:
        raise ValueError(f"{what}: norm_type must be positive (or inf), got {norm_type!r}")
    return p


def _abs(g: Tensor) -> Tensor:
    return ops.maximum(g, -g)


def get_total_norm(tensors: Tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach: Optional[bool] = None) -> Tensor:
    """The p-norm of all the tensors' elements together, a 0-d tensor on their device
    (torch.nn.utils.get_total_norm): (sum_t sum |t|^p)^(1/p), or max |t| for p = inf.
    0 when there are no tensors. error_if_nonfinite=True raises RuntimeError for a nan or
    infinite norm (reading it back: not inside ndl.compile). `foreach` is accepted and
    ignored."""
    items = _tensor_list(tensors, "get_total_norm")
    p = _order(norm_type, "get_total_norm")
    if not items:
        return init.zeros()
    with no_grad():
        gs = [g.detach() for g in items]
        if math.isinf(p):
            total = _abs(gs[0]).max()
            for g in gs[1:]:
                total = ops.maximum(total, _abs(g).max())
        else:
            def powered(g: Tensor) -> Tensor:
                if p == 2:
                    return (g * g).sum()
                if p == 1:
                    return _abs(g).sum()
                return (_abs(g) ** p).sum()

            total = powered(gs[0])
            for g in gs[1:]:
                total = total + powered(g)
            if p != 1:
                total = total ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(float(total.numpy())):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    return total


def _set_grad(p: Tensor, new: Tensor) -> None:
    """p.grad <- new: in its own buffer when the gradient owns one, else a new tensor."""
    g = p.grad
    if g is not None and getattr(g, "_owns_grad", False) and g.op is None:
        g.copy_(new)
    else:
        p.grad = new.detach()


def clip_grads_with_norm_(parameters: Tensors, max_norm: float, total_norm: Tensor,
                          foreach: Optional[bool] = None) -> None:
    """Multiply every gradient by min(1, max_norm / (total_norm + 1e-6)), computed on the
    device (torch.nn.utils.clip_grads_with_norm_). A nan norm makes the gradients nan, as in
    PyTorch. Parameters without .grad are skipped."""
    params = [p for p in _tensor_list(parameters, "clip_grads_with_norm_") if p.grad is not None]
    if not params:
        return
    with no_grad():
        coef = max_norm / (total_norm.detach() + 1e-6)
        coef = ops.where(coef > 1.0, 1.0, coef)  # clamp(max=1): nan stays nan
        for p in params:
            g = cast(Tensor, p.grad).detach()  # (params with a gradient only)
            scale = coef if array_api.dtype_name(coef.dtype) == array_api.dtype_name(g.dtype) \
                else ops.cast(coef, array_api.dtype_name(g.dtype))
            _set_grad(p, g * scale.broadcast_to(g.shape))


def clip_grad_norm_(parameters: Tensors, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Optional[bool] = None) -> Tensor:
    """Scale the gradients of `parameters` (a tensor or an iterable, a generator too) so that
    their joint norm_type-norm is at most max_norm; returns the norm before clipping, a 0-d
    tensor (torch.nn.utils.clip_grad_norm_). The scale is min(1, max_norm / (norm + 1e-6)),
    PyTorch's. ValueError for a norm_type that is not positive; see get_total_norm for
    error_if_nonfinite."""
    params = _tensor_list(parameters, "clip_grad_norm_")
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    clip_grads_with_norm_(params, max_norm, total)
    return total


def clip_grad_value_(parameters: Tensors, clip_value: float, foreach: Optional[bool] = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] (torch.nn.utils.clip_grad_value_);
    nan stays nan. Parameters without .grad are skipped."""
    c = float(clip_value)
    with no_grad():
        for p in _tensor_list(parameters, "clip_grad_value_"):
            if p.grad is None:
                continue
            g = ops.maximum(p.grad.detach(), -c)
            _set_grad(p, ops.where(g > c, c, g))
