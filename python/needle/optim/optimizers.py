"""Optimizers. Updates run outside the graph (no_grad) and write into each parameter's own
buffer with `Tensor.copy_`, so no graph survives a step and the buffers never move (which
the compiled step relies on). Optimizer state (SGD's u, Adam's m and v) is updated in place
the same way.
"""
from __future__ import annotations

import math
from typing import Dict, List

from .. import init, ops
from ..autograd import Tensor, array_api, no_grad
from ..dtypes import HostScalar

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


class Optimizer:
    # names of the per-parameter state dicts and of the scalar state, for state_dict()
    _per_param_state: tuple = ()
    _scalar_state: tuple = ()

    def __init__(self, params: List[Tensor]):
        self.params = list(params)

    # The learning rate is a HostScalar: each update reads its current value, so a compiled
    # step (needle.compile) follows a scheduler's changes instead of freezing the traced rate.
    @property
    def lr(self) -> float:
        return self._lr.value

    @lr.setter
    def lr(self, value: float) -> None:
        _check_range(type(self).__name__, "lr", value, 0.0, math.inf, high_open=True)
        if "_lr" in self.__dict__:
            self._lr.value = value
        else:
            self._lr = HostScalar(value)

    def state_dict(self) -> Dict[str, object]:
        """Per-parameter state as {"<name>.<param index>": Tensor} plus scalars by name."""
        state: Dict[str, object] = {name: getattr(self, name) for name in self._scalar_state}
        index = {p: i for i, p in enumerate(self.params)}
        for name in self._per_param_state:
            for p, value in getattr(self, name).items():
                state[f"{name}.{index[p]}"] = Tensor.make_const(array_api.array(value.realize_cached_data(), dtype=None))
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore what state_dict() returned, for the same parameter list; checked before any change."""
        per_param = {name: {} for name in self._per_param_state}
        for key, value in state.items():
            if key in self._scalar_state:
                continue
            name, _, i = key.rpartition(".")
            if name not in per_param or not i.isdigit() or int(i) >= len(self.params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected key {key!r}")
            p = self.params[int(i)]
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} has shape {shape}, "
                                 f"parameter {i} has shape {tuple(p.shape)}")
            per_param[name][p] = Tensor(value, device=p.device, dtype=p.dtype, requires_grad=False)
        missing = [name for name in self._scalar_state if name not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing {missing}")
        for name in self._scalar_state:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name, values in per_param.items():
            setattr(self, name, values)

    def step(self) -> None:
        raise NotImplementedError()

    def reset_grad(self) -> None:
        for p in self.params:
            p.grad = None

    zero_grad = reset_grad

    def clip_grad_norm(self, max_norm: float = 0.25) -> Tensor:
        """Scale all gradients so their joint L2 norm is at most max_norm; returns the norm before
        (a 0-d tensor). Computed on the device -- min(1, max_norm / (norm + 1e-6)) multiplies
        every gradient -- so it reads nothing back and works inside a compiled step."""
        with no_grad():
            grads = [p.grad.data for p in self.params if p.grad is not None]
            if not grads:
                return init.zeros(device=self.params[0].device if self.params else None)
            total = sum(((g * g).sum() for g in grads[1:]), (grads[0] * grads[0]).sum()) ** 0.5
            ratio = max_norm / (total + 1e-6)
            scale = ops.where(ratio < 1.0, ratio, 1.0)
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad.data * scale.broadcast_to(p.grad.shape)
        return total

    @staticmethod
    def _grad(p: Tensor, weight_decay: float) -> Tensor:
        """grad + weight_decay * theta (L2-style decay, the course's), detached."""
        grad = p.grad.data
        return grad + p.data * weight_decay if weight_decay else grad

    @staticmethod
    def _state(store: Dict[Tensor, Tensor], p: Tensor) -> Tensor:
        """p's entry in a state dict, created as zeros (which the first update reproduces exactly:
        beta * 0 + x is x)."""
        state = store.get(p)
        if state is None:
            state = store[p] = init.zeros(*p.shape, device=p.device, dtype=p.dtype)
        return state


def _check_range(who: str, name: str, value, low: float, high: float, high_open: bool) -> None:
    """ValueError naming the optimizer, the argument and the value unless low <= value < (or <=) high."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: {name} must be a number, got {value!r}") from None
    inside = low <= number and (number < high if high_open else number <= high) and not math.isnan(number)
    if not inside:
        shown = f"[{low:g}, {high:g}{')' if high_open else ']'}" if high != math.inf else f">= {low:g}"
        raise ValueError(f"{who}: {name} must be {'in ' if high != math.inf else ''}{shown}, got {value!r}")


class SGD(Optimizer):
    """theta -= lr * u with u = momentum * u + (1 - momentum) * (grad + weight_decay * theta)."""

    _per_param_state = ("u",)

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        _check_range("SGD", "momentum", momentum, 0.0, 1.0, high_open=True)
        _check_range("SGD", "weight_decay", weight_decay, 0.0, math.inf, high_open=True)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.u: Dict[Tensor, Tensor] = {}

    def step(self) -> None:
        with no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                d = self._grad(p, self.weight_decay)
                u = self._state(self.u, p)
                if self.momentum:
                    u.copy_(u * self.momentum + d * (1 - self.momentum))
                else:
                    u.copy_(d)
                p.copy_(p.data - u * self._lr)


def _betas(who: str, betas) -> tuple:
    """PyTorch's betas=(beta1, beta2), checked to be a pair."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}") from None
    return beta1, beta2


class Adam(Optimizer):
    """Adam with bias correction and L2-style weight decay (added to the gradient), the course's:
    m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2, theta -= lr m_hat / (sqrt(v_hat) + eps).
    `betas=(b1, b2)` is PyTorch's spelling of beta1/beta2 (the course's defaults stay: lr 0.01)."""

    _per_param_state = ("m", "v")
    _scalar_state = ("t",)

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, *, betas=None):
        if betas is not None:
            beta1, beta2 = _betas(type(self).__name__, betas)
        super().__init__(params)
        who = type(self).__name__
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            _check_range(who, name, value, 0.0, 1.0, high_open=True)
        _check_range(who, "eps", eps, 0.0, math.inf, high_open=True)
        _check_range(who, "weight_decay", weight_decay, 0.0, math.inf, high_open=True)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m: Dict[Tensor, Tensor] = {}
        self.v: Dict[Tensor, Tensor] = {}
        # 1 - beta ** t, updated by _advance: runtime inputs of a compiled step, not constants
        self._bias1, self._bias2 = HostScalar(1.0), HostScalar(1.0)

    def _advance(self) -> None:
        """t += 1 and the bias corrections that go with it (replayed by a compiled step)."""
        self.t += 1
        self._bias1.value = 1 - self.beta1 ** self.t
        self._bias2.value = 1 - self.beta2 ** self.t

    def step(self) -> None:
        array_api.host_call(self._advance)
        b1, b2 = self.beta1, self.beta2
        with no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                d = self._grad(p, self.weight_decay)
                m, v = self._state(self.m, p), self._state(self.v, p)
                m.copy_(m * b1 + d * (1 - b1))
                v.copy_(v * b2 + d * d * (1 - b2))
                m_hat = m / self._bias1
                v_hat = v / self._bias2
                p.copy_(p.data - m_hat * self._lr / (v_hat ** 0.5 + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's torch.optim.AdamW):
    theta -= lr * weight_decay * theta, then the Adam step on the plain gradient.

    Defaults as PyTorch's: lr 1e-3, betas (0.9, 0.999) (`betas=` or beta1/beta2), eps 1e-8,
    weight_decay 0.01.
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, *, betas=None):
        if betas is not None:
            beta1, beta2 = _betas("AdamW", betas)
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=0.0)
        _check_range("AdamW", "weight_decay", weight_decay, 0.0, math.inf, high_open=True)
        self.decoupled_weight_decay = weight_decay
        self._decay = HostScalar(1.0)  # 1 - lr * weight_decay, a runtime input of a compiled step

    def _update_decay(self) -> None:
        self._decay.value = 1 - self.lr * self.decoupled_weight_decay

    def step(self) -> None:
        if self.decoupled_weight_decay:
            array_api.host_call(self._update_decay)
            with no_grad():
                for p in self.params:
                    if p.grad is not None:
                        p.copy_(p.data * self._decay)
        super().step()
