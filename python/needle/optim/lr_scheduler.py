"""Learning-rate schedulers with PyTorch's `step()` semantics (torch.optim.lr_scheduler).

A scheduler records the optimizer's learning rate at construction as `base_lr` and sets
the rate of epoch 0 right away (PyTorch's constructor does one step to epoch 0). Each
`step()` then advances one epoch and sets the rate for it: call it after each epoch's
optimizer steps, as in PyTorch. Each parameter group has its own base rate (`base_lrs`,
PyTorch's), scaled alike; `get_last_lr()` returns the rates set last, one per group.
`base_lr` is the first group's. The rate reaches the optimizer through its HostScalar,
so a compiled step follows it.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LambdaLR"]


class LRScheduler:
    """Base: subclasses give the rate of epoch `last_epoch` from `base_lr` (closed forms)."""

    def __init__(self, optimizer, last_epoch: int = -1):
        groups = getattr(optimizer, "param_groups", None)
        if not groups or any("lr" not in g for g in groups):
            raise TypeError(f"{type(self).__name__} needs a needle optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in groups]
        self.last_epoch = last_epoch
        self.step()

    @property
    def base_lr(self) -> float:
        return self.base_lrs[0]

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The rate at `epoch` of a group whose base rate is `base_lr` (subclasses: a closed form)."""
        raise NotImplementedError

    def _rates(self, epoch: int) -> List[float]:
        return [self.lr_at(epoch, base) for base in self.base_lrs]

    def step(self) -> None:
        self.last_epoch += 1
        self._last_lrs = self._rates(self.last_epoch)
        for group, rate in zip(self.optimizer.param_groups, self._last_lrs):
            group["lr"] = rate

    def get_last_lr(self) -> List[float]:
        return list(self._last_lrs)

    def state_dict(self) -> Dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch, "last_lrs": list(self._last_lrs)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "base_lr" in state:  # the one-group layout of older checkpoints
            state = {"base_lrs": [state["base_lr"]], "last_epoch": state["last_epoch"], "last_lrs": [state["last_lr"]]}
        groups = self.optimizer.param_groups
        if len(state["base_lrs"]) != len(groups) or len(state["last_lrs"]) != len(groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has {len(state['base_lrs'])} "
                             f"parameter groups, the optimizer {len(groups)}")
        self.base_lrs, self.last_epoch = list(state["base_lrs"]), state["last_epoch"]
        self._last_lrs = list(state["last_lrs"])
        for group, rate in zip(groups, self._last_lrs):
            group["lr"] = rate


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size), per group."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be at least 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2 (SGDR without restarts;
    PyTorch's closed form, which its recursive update follows up to rounding)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):  # noqa: N803
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be at least 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch)."""

    def __init__(self, optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1):
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.lr_lambda(epoch)
