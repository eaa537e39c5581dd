"""Optimizers. Updates run on detached data, so no graph survives a step."""
from __future__ import annotations

import math
from typing import Dict, List

from .autograd import Tensor


class Optimizer:
    # names of the per-parameter state dicts and of the scalar state, for state_dict()
    _per_param_state: tuple = ()
    _scalar_state: tuple = ()

    def __init__(self, params: List[Tensor]):
        self.params = list(params)

    def state_dict(self) -> Dict[str, object]:
        """Per-parameter state as {"<name>.<param index>": Tensor} plus scalars by name."""
        state: Dict[str, object] = {name: getattr(self, name) for name in self._scalar_state}
        index = {p: i for i, p in enumerate(self.params)}
        for name in self._per_param_state:
            for p, value in getattr(self, name).items():
                state[f"{name}.{index[p]}"] = value.detach()
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
            array = value.numpy() if isinstance(value, Tensor) else value
            if tuple(array.shape) != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} has shape {tuple(array.shape)}, "
                                 f"parameter {i} has shape {tuple(p.shape)}")
            per_param[name][p] = Tensor(array, device=p.device, dtype=p.dtype, requires_grad=False)
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

    def clip_grad_norm(self, max_norm: float = 0.25) -> float:
        """Scale all gradients so their joint L2 norm is at most max_norm; returns the norm before."""
        grads = [p.grad.data for p in self.params if p.grad is not None]
        total = math.sqrt(sum(float((g * g).sum().numpy()) for g in grads))
        scale = max_norm / (total + 1e-6)
        if scale < 1:
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad.data * scale
        return total

    @staticmethod
    def _update(p: Tensor, value) -> None:
        """Replace p's data by the array `value`, keeping p's dtype (numpy mode may promote)."""
        data = p.realize_cached_data()
        if value.dtype != data.dtype:
            value = value.astype(data.dtype)
        p.cached_data = value

    @staticmethod
    def _arrays(p: Tensor, weight_decay: float):
        """(theta, grad + weight_decay * theta) as backend arrays: the update never builds a graph."""
        theta = p.realize_cached_data()
        grad = p.grad.realize_cached_data()
        if weight_decay:
            grad = grad + theta * weight_decay
        return theta, grad


class SGD(Optimizer):
    """theta -= lr * u with u = momentum * u + (1 - momentum) * (grad + weight_decay * theta)."""

    _per_param_state = ("u",)

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.u: Dict[Tensor, Tensor] = {}

    def step(self) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            theta, u = self._arrays(p, self.weight_decay)
            if self.momentum:
                u = u * (1 - self.momentum)
                previous = self.u.get(p)
                if previous is not None:
                    u = previous.realize_cached_data() * self.momentum + u
            self.u[p] = Tensor.make_const(u)
            self._update(p, theta - u * self.lr)


class Adam(Optimizer):
    """Adam with bias correction and L2-style weight decay (added to the gradient)."""

    _per_param_state = ("m", "v")
    _scalar_state = ("t",)

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m: Dict[Tensor, Tensor] = {}
        self.v: Dict[Tensor, Tensor] = {}

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for p in self.params:
            if p.grad is None:
                continue
            theta, grad = self._arrays(p, self.weight_decay)
            m = grad * (1 - b1)
            v = grad * grad * (1 - b2)
            if p in self.m:
                m = self.m[p].realize_cached_data() * b1 + m
                v = self.v[p].realize_cached_data() * b2 + v
            self.m[p], self.v[p] = Tensor.make_const(m), Tensor.make_const(v)
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            self._update(p, theta - m_hat * self.lr / (v_hat ** 0.5 + self.eps))
