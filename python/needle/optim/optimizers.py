"""Optimizers: the course's SGD and Adam, and PyTorch's AdamW, RMSprop, Adagrad and Adadelta, with
PyTorch's parameter groups.

Updates run outside the graph (no_grad) and write into each parameter's own buffer with
`Tensor.copy_`, so no graph survives a step and the buffers never move (which the compiled
step relies on). Optimizer state (SGD's u, Adam's m and v) is updated in place the same way.

Hyperparameters live in `param_groups` (PyTorch's: a list of dicts, each with its "params"
and its own lr, momentum, weight_decay, betas, eps), and for the course's single group
also as attributes (`opt.lr`, `opt.momentum`, `opt.beta1`, ...; setting one sets it in
every group). Every number an update uses is a HostScalar underneath: setting
`group["lr"]`, `opt.momentum` or `opt.beta2` between steps reaches a compiled step
(`ndl.compile`) as a runtime input, like the learning rate a scheduler sets. Only whether
a term is there at all (momentum or weight decay zero or not) decides which operations
run; a compiled step checks that before each replay and traces again when it changed.

Every optimizer here updates each parameter with one fused call (`array_api.sgd_step`,
`adam_step`, `rmsprop_step`, `adagrad_step`, `adadelta_step`: one numba loop per parameter on
the cpu device, the op sequence in the array layer elsewhere, one recorded call in a compiled
step) that gives the bits of its op-by-op update (only a nan result's sign bit may differ on
the cpu); `fused=False` (PyTorch's flag) runs the ops instead. A parameter whose gradient or
state differs in dtype or shape takes the op-by-op update either way.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, cast

from .. import init, ops
from ..autograd import Tensor, _note_write, array_api, no_grad
from ..dtypes import HostScalar
from ..nn.utils import clip_grad_norm_

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "ParamGroup"]

# (low, high, high_open) of each hyperparameter's valid range
_RANGES: Dict[str, Tuple[float, float, bool]] = {
    "lr": (0.0, math.inf, True), "momentum": (0.0, 1.0, True), "weight_decay": (0.0, math.inf, True),
    "eps": (0.0, math.inf, True), "beta1": (0.0, 1.0, True), "beta2": (0.0, 1.0, True),
    "dampening": (0.0, 1.0, False), "alpha": (0.0, 1.0, False), "rho": (0.0, 1.0, False),
    "lr_decay": (0.0, math.inf, True), "initial_accumulator_value": (0.0, math.inf, True),
}
# hyperparameters that are True or False; the true ones are terms (they decide what an update runs)
_FLAGS = ("nesterov", "centered")
_FLOATS = ("float32", "float64")  # the dtypes of parameters the fused updates take


class ParamGroup(dict):
    """One entry of `Optimizer.param_groups`: {"params": [...], "lr": ..., ...}, PyTorch's.

    Setting a hyperparameter (`group["lr"] = 0.01`) checks its range and updates the
    HostScalars the updates read (`group.scalars`, including derived ones such as
    1 - momentum), so a compiled step follows it. `group.terms` names the terms that are
    present (momentum, weight decay, PyTorch's momentum rule, Nesterov, RMSprop's centered): a plain value,
    which decides what operations an update runs, checked by a compiled step before each replay.
    """

    def __init__(self, owner: str, params: List[Tensor], hyper: Dict[str, Any],
                 derive: Callable[[Dict[str, Any]], Dict[str, float]]):
        super().__init__()
        self._owner = owner
        self._derive = derive
        self.scalars: Dict[str, HostScalar] = {}
        self.terms: frozenset = frozenset()
        dict.__setitem__(self, "params", params)
        for key, value in hyper.items():
            dict.__setitem__(self, key, _checked(owner, key, value))
        self._refresh()

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "params":
            raise ValueError(f"{self._owner}: a parameter group's params are fixed once the optimizer is built")
        dict.__setitem__(self, key, _checked(self._owner, key, value))
        self._refresh()

    def update(self, *args, **kwargs) -> None:  # dict.update would bypass the checks
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def _refresh(self) -> None:
        for name, value in self._derive(self).items():
            scalar = self.scalars.get(name)
            if scalar is None:
                self.scalars[name] = HostScalar(value)
            else:
                scalar.value = value  # in place: a compiled step holds this object
        terms = {k for k in ("momentum", "weight_decay") + _FLAGS if self.get(k)}
        if self.get("dampening") is not None:
            terms.add("torch_momentum")
        self.terms = frozenset(terms)

    def hyperparameters(self) -> Dict[str, Any]:
        """Everything but the params, as plain values."""
        return {k: v for k, v in self.items() if k != "params"}


def _checked(owner: str, key: str, value: Any) -> Any:
    """value, after checking it is a number in the hyperparameter's range (betas: a pair)."""
    if key == "betas":
        beta1, beta2 = _betas(owner, value)
        return (_checked(owner, "beta1", beta1), _checked(owner, "beta2", beta2))
    if key == "dampening" and value is None:  # the course's momentum rule
        return None
    if key in _FLAGS:
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {key} must be True or False, got {value!r}")
        return value
    if key in _RANGES:
        low, high, high_open = _RANGES[key]
        _check_range(owner, key, value, low, high, high_open)
        return float(value) if not isinstance(value, bool) else value
    return value


def _check_range(who: str, name: str, value, low: float, high: float, high_open: bool) -> None:
    """ValueError naming the optimizer, the argument and the value unless low <= value < (or <=) high."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            if isinstance(value, bool) or isinstance(value, str):
                raise TypeError
            value = float(value)  # a numpy scalar or a 0-d array
        except (TypeError, ValueError):
            raise TypeError(f"{who}: {name} must be a number, got {value!r}") from None
    number = float(value)
    inside = low <= number and (number < high if high_open else number <= high) and not math.isnan(number)
    if not inside:
        shown = f"[{low:g}, {high:g}{')' if high_open else ']'}" if high != math.inf else f">= {low:g}"
        raise ValueError(f"{who}: {name} must be {'in ' if high != math.inf else ''}{shown}, got {value!r}")


def _betas(who: str, betas) -> tuple:
    """PyTorch's betas=(beta1, beta2), checked to be a pair."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}") from None
    return beta1, beta2


def _group_hyper(name: str):
    """A course-style attribute (`opt.lr`) over the parameter groups: read from them (they must
    agree), set in every group."""

    def get(self):
        values = {repr(g[name]) for g in self.param_groups}
        if len(values) > 1:
            raise AttributeError(f"{type(self).__name__}.{name}: the parameter groups have different values "
                                 f"({', '.join(sorted(values))}); read param_groups[i][{name!r}]")
        return self.param_groups[0][name]

    def set(self, value):
        _checked(type(self).__name__, name, value)  # checked once, before any group changes
        groups = self.__dict__.get("param_groups")
        if groups is None:  # a subclass setting it before Optimizer.__init__: a default for the groups
            self.__dict__.setdefault("defaults", {})[name] = value
            return
        for group in groups:
            group[name] = value

    return property(get, set, doc=f"The {name} of every parameter group (set: all of them).")


def _group_beta(index: int):
    def get(self):
        return _group_hyper("betas").fget(self)[index]

    def set(self, value):
        _checked(type(self).__name__, f"beta{index + 1}", value)
        for group in self.param_groups:
            betas = list(group["betas"])
            betas[index] = value
            group["betas"] = tuple(betas)

    return property(get, set, doc=f"beta{index + 1} of every parameter group (set: all of them).")


class Optimizer:
    """Base class: `params` is an iterable of Tensors, or of dicts {"params": [...], hyperparameter:
    value} (PyTorch's parameter groups; a group's missing hyperparameters take the optimizer's
    defaults). `self.params` lists every parameter, `self.param_groups` the groups.

    Subclasses set `defaults` (hyperparameter -> value), `_per_param_state` (names of their
    dicts keyed by parameter) and `_scalar_state` (names of scalar state such as Adam's t).
    """

    _per_param_state: tuple = ()
    _scalar_state: tuple = ()

    def __init__(self, params, defaults: Optional[Dict[str, Any]] = None):
        who = type(self).__name__
        self.defaults = dict(self.__dict__.get("defaults", {}), **(defaults or {}))
        if isinstance(params, Tensor):
            raise TypeError(f"{who}: params must be an iterable of Tensors or of parameter-group dicts, got a Tensor; "
                            "pass model.parameters() or [tensor]")
        entries = list(params)
        if entries and all(isinstance(e, dict) for e in entries):
            groups = entries
        elif any(isinstance(e, dict) for e in entries):
            raise TypeError(f"{who}: params mixes Tensors and parameter-group dicts; pass one kind")
        else:
            groups = [{"params": entries}]
        self.param_groups: List[ParamGroup] = self._groups(groups, set())
        self.params: List[Tensor] = [p for g in self.param_groups for p in g["params"]]

    def _groups(self, groups: List[Dict[str, Any]], seen: set, first: int = 0) -> List[ParamGroup]:
        """ParamGroups for the dicts `groups` (numbered from `first` in errors), checked: Tensors
        only, none in two groups (`seen` holds the ids of parameters already in a group)."""
        who = type(self).__name__
        made = []
        for i, group in enumerate(groups, first):
            if "params" not in group:
                raise ValueError(f"{who}: parameter group {i} has no 'params'")
            members = group["params"]
            members = [members] if isinstance(members, Tensor) else list(members)
            for p in members:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{who}: parameter group {i} holds a {type(p).__name__}, not a Tensor")
                if id(p) in seen:
                    raise ValueError(f"{who}: a parameter appears in more than one parameter group (group {i})")
                seen.add(id(p))
            # like PyTorch, a group may carry keys of its own (a name, a scheduler's initial_lr)
            hyper = dict(self.defaults)
            hyper.update((k, v) for k, v in group.items() if k != "params")
            made.append(ParamGroup(who, members, hyper, self._runtime_scalars))
        return made

    def _runtime_scalars(self, group: Dict[str, Any]) -> Dict[str, float]:
        """The numbers an update reads, by name, from the group's hyperparameters (HostScalars)."""
        return {k: v for k, v in group.items() if k in _RANGES and v is not None}

    def add_param_group(self, group: Dict[str, Any]) -> None:
        """Add a parameter group (PyTorch's add_param_group); missing hyperparameters take the defaults.
        Raises TypeError for anything but a dict with 'params', ValueError for a parameter that is
        already in a group (nothing changes then)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}.add_param_group expects a dict with 'params'")
        added = self._groups([group], {id(p) for p in self.params}, first=len(self.param_groups))
        self.param_groups.extend(added)
        self.params.extend(added[0]["params"])

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """PyTorch's layout: {"state": {param index: {name: Tensor}}, "param_groups": [{hyperparameters,
        "params": [indices]}]}, plus scalar state (Adam's "t") by name. Tensors are copies."""
        index = {id(p): i for i, p in enumerate(self.params)}
        state: Dict[int, Dict[str, Tensor]] = {}
        for name in self._per_param_state:
            for p, value in getattr(self, name).items():
                copy = Tensor.make_const(array_api.array(value.realize_cached_data(), dtype=None))
                state.setdefault(index[id(p)], {})[name] = copy
        groups = [dict(g.hyperparameters(), params=[index[id(p)] for p in g["params"]]) for g in self.param_groups]
        out: Dict[str, Any] = {"state": dict(sorted(state.items())), "param_groups": groups}
        out.update({name: getattr(self, name) for name in self._scalar_state})
        return out

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what state_dict() returned (hyperparameters included), for the same parameters.

        Everything is checked before anything changes. Existing state tensors are written in
        place, so a compiled step that holds them follows the load. Also reads the flat
        layout of older needle checkpoints ({"u.0": Tensor, "t": 3}), which has no hyperparameters.
        """
        who = type(self).__name__
        if not isinstance(state, dict):
            raise TypeError(f"{who}.load_state_dict expects a dict, got {type(state).__name__}")
        per_param, groups = self._parse_state(state)
        missing = [name for name in self._scalar_state if name not in state]
        if missing:
            raise ValueError(f"{who}.load_state_dict: missing {missing}")
        if groups is not None:
            for saved in groups:
                for key, value in saved.items():
                    if key != "params":
                        _checked(who, key, value)
        # nothing can fail from here on
        if groups is not None:
            for group, saved in zip(self.param_groups, groups):
                group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
        for name in self._scalar_state:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name, values in per_param.items():
            store = getattr(self, name)
            for p in [p for p in store if p not in values]:
                del store[p]
            for p, value in values.items():
                own = store.get(p)
                if own is not None and own.shape == p.shape and own.dtype == p.dtype and own.device == p.device:
                    own.copy_(value)
                else:
                    store[p] = value

    def _parse_state(self, state: Dict[str, Any]):
        """({state name: {param: Tensor}}, saved param groups or None), checked against this optimizer."""
        who = type(self).__name__
        per_param: Dict[str, Dict[Tensor, Tensor]] = {name: {} for name in self._per_param_state}
        groups = None
        if "state" in state or "param_groups" in state:
            groups = state.get("param_groups")
            if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
                raise ValueError(f"{who}.load_state_dict: the state has "
                                 f"{len(groups) if isinstance(groups, (list, tuple)) else 'no'} parameter groups, "
                                 f"this optimizer {len(self.param_groups)}")
            for g, (group, saved) in enumerate(zip(self.param_groups, groups)):
                if len(saved.get("params", ())) != len(group["params"]):
                    raise ValueError(f"{who}.load_state_dict: parameter group {g} has {len(saved.get('params', ()))} "
                                     f"parameters in the state, {len(group['params'])} here")
            entries = []
            for key, values in dict(state.get("state", {})).items():
                if not isinstance(values, dict):
                    raise ValueError(f"{who}.load_state_dict: state[{key!r}] must be a dict of tensors")
                entries += [(key, name, value) for name, value in values.items()]
        else:  # the flat layout of older checkpoints
            entries = []
            for key, value in state.items():
                if key in self._scalar_state:
                    continue
                name, _, i = key.rpartition(".")
                entries.append((i, name, value))
        for i, name, value in entries:
            try:
                index = int(i)
            except (TypeError, ValueError):
                index = -1
            if name not in per_param or not 0 <= index < len(self.params):
                raise ValueError(f"{who}.load_state_dict: unexpected state {name!r} for parameter {i!r}")
            p = self.params[index]
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(p.shape):
                raise ValueError(f"{who}.load_state_dict: state {name!r} of parameter {index} has shape {shape}, "
                                 f"the parameter has shape {tuple(p.shape)}")
            per_param[name][p] = Tensor(value, device=p.device, dtype=p.dtype, requires_grad=False)
        return per_param, groups

    # --- steps ---------------------------------------------------------------------------------
    def step(self) -> None:
        raise NotImplementedError()

    def reset_grad(self) -> None:
        """Every parameter's `grad` <- None (the course's name)."""
        for p in self.params:
            p.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """PyTorch's zero_grad: `set_to_none=True` (the default) is `reset_grad()`; False leaves every
        existing gradient a zero tensor instead.

        With False, a gradient in a buffer of its own (one `backward(accumulate=True)` or an
        earlier `zero_grad(set_to_none=False)` made) is zeroed in place, so what holds it (a
        compiled step, a reference kept by the caller) sees zeros and the next accumulating
        backward adds into it. A gradient straight from a plain backward may share memory with
        other tensors (the `out_grad` given to backward, a broadcast view): it is not written
        to but replaced by a zero tensor of its own, which later calls then zero in place.
        Raises TypeError when set_to_none is not a bool.
        """
        if not isinstance(set_to_none, bool):
            raise TypeError(f"{type(self).__name__}.zero_grad: set_to_none must be True or False, "
                            f"got {set_to_none!r}")
        if set_to_none:
            self.reset_grad()
            return
        with no_grad():
            for p in self.params:
                grad = p.grad
                if grad is None:
                    continue
                if getattr(grad, "_owns_grad", False) and grad.op is None:
                    grad.zero_()
                else:
                    zero = init.zeros(*grad.shape, device=grad.device, dtype=grad.dtype)
                    zero._owns_grad = True
                    p.grad = zero

    def clip_grad_norm(self, max_norm: float = 0.25) -> Tensor:
        """Scale all gradients so their joint L2 norm is at most max_norm; returns the norm before
        (a 0-d tensor): needle.nn.utils.clip_grad_norm_ over this optimizer's parameters.
        Computed on the device -- min(1, max_norm / (norm + 1e-6)) multiplies every gradient --
        so it reads nothing back and works inside a compiled step."""
        return clip_grad_norm_(self.params, max_norm)

    @staticmethod
    def _grad(p: Tensor, group: ParamGroup) -> Tensor:
        """grad + weight_decay * theta (L2-style decay, the course's), detached."""
        grad = cast(Tensor, p.grad).data  # the steps skip parameters without a gradient
        if "weight_decay" in group.terms:
            return grad + p.data * group.scalars["weight_decay"]
        return grad

    @staticmethod
    def _state(store: Dict[Tensor, Tensor], p: Tensor) -> Tensor:
        """p's entry in a state dict, created as zeros (which the first update reproduces exactly:
        beta * 0 + x is x)."""
        state = store.get(p)
        if state is None:
            state = store[p] = init.zeros(*p.shape, device=p.device, dtype=p.dtype)
        return state

    fused: Optional[bool] = None

    def _fused_arrays(self, p: Tensor, *stores: Dict[Tensor, Tensor]) -> Optional[list]:
        """[p's array, its gradient's, its state's from each store (made as zeros when missing)]
        for one fused call (`array_api.sgd_step`, `adam_step`, ...), or None: when fused is False, or
        p is not floating, or its gradient or existing state differs in dtype or shape (a float64
        gradient of a float32 parameter, state loaded with another dtype: the op-by-op update
        then promotes and casts as the ops do)."""
        if self.fused is False:
            return None
        data = p.realize_cached_data()
        grad = cast(Tensor, p.grad).realize_cached_data()
        dtype, shape = data.dtype, data.shape
        if grad.dtype != dtype or grad.shape != shape or array_api.dtype_name(dtype) not in _FLOATS:
            return None
        arrays = [data, grad]
        for store in stores:
            state = store.get(p)
            if state is None:
                arrays.append(self._state(store, p).realize_cached_data())
                continue
            array = state.realize_cached_data()
            if array.dtype != dtype or array.shape != shape:
                return None
            arrays.append(array)
        return arrays

    lr = _group_hyper("lr")


class SGD(Optimizer):
    """The course's SGD: theta -= lr * u with u = momentum * u + (1 - momentum) * (grad +
    weight_decay * theta), a moving average starting from u = 0.

    PyTorch's rule is an opt-in: pass `dampening` (PyTorch's default is 0) and, if wanted,
    `nesterov=True`. Then, as torch.optim.SGD: g = grad + weight_decay * theta;
    u = g on the first step, else u = momentum * u + (1 - dampening) * g; theta -= lr * u
    (Nesterov: theta -= lr * (g + momentum * u)).

    fused (PyTorch's flag): None or True updates each parameter with one `array_api.sgd_step`
    call, False with the ops (the same bits; PyTorch's first momentum step, a copy of g,
    always takes the ops).
    """

    _per_param_state = ("u",)

    def __init__(self, params: Iterable, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 dampening: Optional[float] = None, nesterov: bool = False, *, fused: Optional[bool] = None):
        self.fused = fused
        if nesterov and (not momentum or dampening not in (None, 0, 0.0)):
            raise ValueError("SGD: nesterov needs a momentum and zero dampening (PyTorch's rule: dampening=0)")
        if nesterov and dampening is None:
            dampening = 0.0  # Nesterov momentum is PyTorch's rule
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening,
                                      nesterov=bool(nesterov)))
        self.u: Dict[Tensor, Tensor] = {}

    momentum = _group_hyper("momentum")
    weight_decay = _group_hyper("weight_decay")
    dampening = _group_hyper("dampening")
    nesterov = _group_hyper("nesterov")

    def _runtime_scalars(self, group):
        damping = 1 - group["momentum"] if group.get("dampening") is None else 1 - group["dampening"]
        return dict(super()._runtime_scalars(group), damping=damping)

    def step(self) -> None:
        with no_grad():
            for group in self.param_groups:
                terms = group.terms
                fused = []  # the parameters updated by one fused call for the group, in order
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    # (PyTorch's first momentum step copies the gradient: the ops do that)
                    first = "torch_momentum" in terms and "momentum" in terms and p not in self.u
                    arrays = None
                    if not first:
                        no_buffer = "torch_momentum" in terms and "momentum" not in terms
                        arrays = self._fused_arrays(p) if no_buffer else self._fused_arrays(p, self.u)
                    if arrays is None:
                        self._step(group, p, self._grad(p, group))
                    else:
                        fused.append(arrays)
                if fused:
                    self._fused_steps(group, fused)

    @staticmethod
    def _fused_steps(group: ParamGroup, batch: list) -> None:
        """`_fused_step` for each [param, grad(, u)] of `batch`, as one `array_api.sgd_step_many`
        call (each parameter's update touches its own arrays only: the same bits in any order)."""
        if len(batch) == 1:
            SGD._fused_step(group, batch[0])
            return
        s, terms = group.scalars, group.terms
        datas, grads = [a[0] for a in batch], [a[1] for a in batch]
        if len(batch[0]) == 2:
            buffers, mode = datas, 0
        else:
            buffers, mode = [a[2] for a in batch], 2 if "momentum" in terms else 1
        array_api.sgd_step_many(datas, grads, buffers, s["lr"], s["momentum"], s["damping"], s["weight_decay"],
                                "weight_decay" in terms, mode, "nesterov" in terms)
        for data, buffer in zip(datas, buffers):
            _note_write(data)
            if mode:
                _note_write(buffer)

    @staticmethod
    def _fused_step(group: ParamGroup, arrays: list) -> None:
        """The update of `_step` as one `array_api.sgd_step` call on [param, grad(, u)] (the same
        bits); without a buffer (PyTorch's rule, no momentum) u is the parameter, untouched."""
        s, terms = group.scalars, group.terms
        if len(arrays) == 2:
            data, grad = arrays
            buffer, mode = data, 0
        else:
            data, grad, buffer = arrays
            mode = 2 if "momentum" in terms else 1
        array_api.sgd_step(data, grad, buffer, s["lr"], s["momentum"], s["damping"], s["weight_decay"],
                           "weight_decay" in terms, mode, "nesterov" in terms)
        _note_write(data)
        if mode:
            _note_write(buffer)

    def _step(self, group: ParamGroup, p: Tensor, d: Tensor) -> None:
        """The op-by-op update of one parameter for the gradient `d` (weight decay included)."""
        s, terms = group.scalars, group.terms
        if "torch_momentum" in terms and "momentum" not in terms:  # PyTorch keeps no buffer
            p.copy_(p.data - d * s["lr"])
            return
        if "momentum" not in terms:  # the course's u = d
            u = self._state(self.u, p)
            u.copy_(d)
        elif "torch_momentum" in terms and p not in self.u:
            u = self.u[p] = Tensor.make_const(array_api.array(d.realize_cached_data(), dtype=None))
        else:
            u = self._state(self.u, p)
            u.copy_(u * s["momentum"] + d * s["damping"])
        step = d + u * s["momentum"] if "nesterov" in terms else u
        p.copy_(p.data - step * s["lr"])


class Adam(Optimizer):
    """Adam with bias correction and L2-style weight decay (added to the gradient), the course's:
    m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2, theta -= lr m_hat / (sqrt(v_hat) + eps).
    `betas=(b1, b2)` is PyTorch's spelling of beta1/beta2 (the course's defaults stay: lr 0.01).
    fused (PyTorch's flag): None or True updates each parameter with one `array_api.adam_step`
    call, False with the ops (the same bits)."""

    _per_param_state = ("m", "v")
    _scalar_state = ("t",)

    def __init__(self, params: Iterable, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, *, betas: Optional[tuple] = None,
                 fused: Optional[bool] = None):
        if betas is not None:
            beta1, beta2 = _betas(type(self).__name__, betas)
        self.fused = fused
        self.t = 0
        super().__init__(params, dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay))
        self.m: Dict[Tensor, Tensor] = {}
        self.v: Dict[Tensor, Tensor] = {}

    beta1 = _group_beta(0)
    beta2 = _group_beta(1)
    eps = _group_hyper("eps")
    weight_decay = _group_hyper("weight_decay")

    def _runtime_scalars(self, group):
        beta1, beta2 = group["betas"]
        return dict(super()._runtime_scalars(group), beta1=beta1, beta2=beta2, one_minus_beta1=1 - beta1,
                    one_minus_beta2=1 - beta2, bias1=1 - beta1 ** self.t, bias2=1 - beta2 ** self.t)

    def _advance(self) -> None:
        """t += 1 and the bias corrections 1 - beta ** t that go with it (replayed by a compiled step)."""
        self.t += 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            group.scalars["bias1"].value = 1 - beta1 ** self.t
            group.scalars["bias2"].value = 1 - beta2 ** self.t

    def step(self) -> None:
        array_api.host_call(self._advance)
        with no_grad():
            for group in self.param_groups:
                self._update(group)

    def _update(self, group: ParamGroup) -> None:
        for p in group["params"]:
            if p.grad is not None:
                arrays = self._fused_arrays(p, self.m, self.v)
                if arrays is None:
                    self._adam(p, self._grad(p, group), group.scalars)
                else:
                    self._fused_adam(group, arrays, l2="weight_decay" in group.terms, decoupled=False)

    @staticmethod
    def _fused_adam(group: ParamGroup, arrays: list, l2: bool, decoupled: bool) -> None:
        """`_adam` on [param, grad, m, v] (after AdamW's decay when decoupled, with Adam's weight
        decay added to the gradient when l2) as one `array_api.adam_step` call: the same bits."""
        s = group.scalars
        data, grad, m, v = arrays
        array_api.adam_step(data, grad, m, v, s["lr"], s["beta1"], s["beta2"], s["one_minus_beta1"],
                            s["one_minus_beta2"], s["bias1"], s["bias2"], s["eps"], s["weight_decay"],
                            s.get("decay", 1.0), l2, decoupled)
        for written in (data, m, v):
            _note_write(written)

    def _adam(self, p: Tensor, d: Tensor, s: Dict[str, HostScalar]) -> None:
        """The moments and the step of one parameter for the gradient `d`."""
        m, v = self._state(self.m, p), self._state(self.v, p)
        m.copy_(m * s["beta1"] + d * s["one_minus_beta1"])
        v.copy_(v * s["beta2"] + d * d * s["one_minus_beta2"])
        m_hat = m / s["bias1"]
        v_hat = v / s["bias2"]
        p.copy_(p.data - m_hat * s["lr"] / (v_hat ** 0.5 + s["eps"]))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's torch.optim.AdamW):
    theta -= lr * weight_decay * theta, then the Adam step on the plain gradient.

    Defaults as PyTorch's: lr 1e-3, betas (0.9, 0.999) (`betas=` or beta1/beta2), eps 1e-8,
    weight_decay 0.01. Parameter groups may set their own weight_decay (nanoGPT decays
    matrices and embeddings, not biases and norms).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01, *, betas: Optional[tuple] = None,
                 fused: Optional[bool] = None):
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, betas=betas,
                         fused=fused)

    @property
    def decoupled_weight_decay(self) -> float:
        return self.weight_decay

    def _runtime_scalars(self, group):
        return dict(super()._runtime_scalars(group), decay=1 - group["lr"] * group["weight_decay"])

    def _update(self, group: ParamGroup) -> None:
        decoupled = "weight_decay" in group.terms
        rest = []
        for p in group["params"]:
            if p.grad is not None:
                arrays = self._fused_arrays(p, self.m, self.v)
                if arrays is None:
                    rest.append(p)
                else:
                    self._fused_adam(group, arrays, l2=False, decoupled=decoupled)
        if decoupled:
            for p in rest:
                p.copy_(p.data * group.scalars["decay"])
        for p in rest:  # decoupled: the decay is not added to the gradient
            self._adam(p, cast(Tensor, p.grad).data, group.scalars)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; PyTorch's torch.optim.RMSprop, same defaults and formulas).

    Per step, for each parameter with a gradient:
    g = grad + weight_decay * theta; v = alpha * v + (1 - alpha) * g^2;
    centered: a = alpha * a + (1 - alpha) * g and the denominator is sqrt(v - a^2) + eps,
    else sqrt(v) + eps; with momentum: b = momentum * b + g / denominator and theta -= lr * b,
    else theta -= lr * g / denominator. v, a and b start at zero.

    Args: lr (>= 0), alpha in [0, 1], eps (>= 0), weight_decay (>= 0), momentum in [0, 1),
    centered (bool). Raises ValueError for a value out of range (PyTorch accepts alpha > 1
    and momentum >= 1, which make no sense) and TypeError for a non-number.
    State (PyTorch's names): square_avg (v), grad_avg (a, centered only), momentum_buffer
    (b, momentum only); dicts keyed by parameter, in state_dict() by parameter index.
    fused (PyTorch's flag): None or True, one `array_api.rmsprop_step` call per parameter;
    False, the ops (the same bits).
    """

    _per_param_state = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: Iterable, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 fused: Optional[bool] = None):
        self.fused = fused
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))
        self.square_avg: Dict[Tensor, Tensor] = {}
        self.momentum_buffer: Dict[Tensor, Tensor] = {}
        self.grad_avg: Dict[Tensor, Tensor] = {}

    alpha = _group_hyper("alpha")
    eps = _group_hyper("eps")
    weight_decay = _group_hyper("weight_decay")
    momentum = _group_hyper("momentum")
    centered = _group_hyper("centered")

    def _runtime_scalars(self, group):
        return dict(super()._runtime_scalars(group), one_minus_alpha=1 - group["alpha"])

    def step(self) -> None:
        with no_grad():
            for group in self.param_groups:
                s, terms = group.scalars, group.terms
                centered, momentum = "centered" in terms, "momentum" in terms
                stores = [self.square_avg] + [self.grad_avg] * centered + [self.momentum_buffer] * momentum
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    arrays = self._fused_arrays(p, *stores)
                    if arrays is None:
                        self._step(group, p, self._grad(p, group))
                        continue
                    data, grad, v = arrays[:3]
                    a = arrays[3] if centered else data
                    b = arrays[-1] if momentum else data
                    array_api.rmsprop_step(data, grad, v, a, b, s["lr"], s["alpha"], s["one_minus_alpha"], s["eps"],
                                           s["weight_decay"], s["momentum"], "weight_decay" in terms, centered,
                                           momentum)
                    for written in arrays[:1] + arrays[2:]:
                        _note_write(written)

    def _step(self, group: ParamGroup, p: Tensor, g: Tensor) -> None:
        """The op-by-op update of one parameter for the gradient `g` (weight decay included)."""
        s, terms = group.scalars, group.terms
        v = self._state(self.square_avg, p)
        v.copy_(v * s["alpha"] + g * g * s["one_minus_alpha"])
        if "centered" in terms:
            a = self._state(self.grad_avg, p)
            a.copy_(a * s["alpha"] + g * s["one_minus_alpha"])
            denominator = ops.sqrt(v - a * a) + s["eps"]
        else:
            denominator = ops.sqrt(v) + s["eps"]
        if "momentum" in terms:
            b = self._state(self.momentum_buffer, p)
            b.copy_(b * s["momentum"] + g / denominator)
            p.copy_(p.data - b * s["lr"])
        else:
            p.copy_(p.data - g / denominator * s["lr"])


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.; PyTorch's torch.optim.Adagrad, same defaults and formulas).

    Per step t (1, 2, ...), for each parameter with a gradient: g = grad + weight_decay * theta;
    sum += g^2; theta -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps). `sum` starts
    at initial_accumulator_value.

    Args: lr, lr_decay, weight_decay, initial_accumulator_value, eps (all >= 0). Raises
    ValueError for a negative value, TypeError for a non-number.
    State: `sum` (PyTorch's name), a dict keyed by parameter, and the step count `t`, one for
    the optimizer (PyTorch counts per parameter; they differ only for a parameter that
    misses steps without a gradient, and only when lr_decay is not zero).
    fused (PyTorch's flag): None or True, one `array_api.adagrad_step` call per parameter;
    False, the ops (the same bits).
    """

    _per_param_state = ("sum",)
    _scalar_state = ("t",)

    def __init__(self, params: Iterable, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, fused: Optional[bool] = None):
        self.fused = fused
        self.t = 0
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))
        self.sum: Dict[Tensor, Tensor] = {}

    lr_decay = _group_hyper("lr_decay")
    eps = _group_hyper("eps")
    weight_decay = _group_hyper("weight_decay")
    initial_accumulator_value = _group_hyper("initial_accumulator_value")

    def _runtime_scalars(self, group):
        return dict(super()._runtime_scalars(group), clr=self._clr(group))

    def _clr(self, group) -> float:
        """The step size of step t: lr / (1 + (t - 1) * lr_decay)."""
        return group["lr"] / (1 + max(self.t - 1, 0) * group["lr_decay"])

    def _advance(self) -> None:
        """t += 1 and each group's step size for it (replayed by a compiled step)."""
        self.t += 1
        for group in self.param_groups:
            group.scalars["clr"].value = self._clr(group)

    def step(self) -> None:
        array_api.host_call(self._advance)
        with no_grad():
            for group in self.param_groups:
                s = group.scalars
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    total = self.sum.get(p)
                    if total is None:
                        total = self.sum[p] = init.constant(*p.shape, c=group["initial_accumulator_value"],
                                                            device=p.device, dtype=p.dtype)
                    arrays = self._fused_arrays(p, self.sum)
                    if arrays is None:
                        g = self._grad(p, group)
                        total.copy_(total + g * g)
                        p.copy_(p.data - g / (ops.sqrt(total) + s["eps"]) * s["clr"])
                        continue
                    data, grad, state = arrays
                    array_api.adagrad_step(data, grad, state, s["clr"], s["eps"], s["weight_decay"],
                                           "weight_decay" in group.terms)
                    _note_write(data)
                    _note_write(state)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012; PyTorch's torch.optim.Adadelta, same defaults and formulas).

    Per step, for each parameter with a gradient: g = grad + weight_decay * theta;
    v = rho * v + (1 - rho) * g^2; delta = sqrt(u + eps) / sqrt(v + eps) * g;
    u = rho * u + (1 - rho) * delta^2; theta -= lr * delta. v and u start at zero.

    Args: lr (>= 0, default 1.0), rho in [0, 1], eps (>= 0), weight_decay (>= 0). Raises
    ValueError for a value out of range, TypeError for a non-number.
    State (PyTorch's names): square_avg (v) and acc_delta (u), dicts keyed by parameter.
    fused (PyTorch's flag): None or True, one `array_api.adadelta_step` call per parameter;
    False, the ops (the same bits).
    """

    _per_param_state = ("square_avg", "acc_delta")

    def __init__(self, params: Iterable, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, fused: Optional[bool] = None):
        self.fused = fused
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))
        self.square_avg: Dict[Tensor, Tensor] = {}
        self.acc_delta: Dict[Tensor, Tensor] = {}

    rho = _group_hyper("rho")
    eps = _group_hyper("eps")
    weight_decay = _group_hyper("weight_decay")

    def _runtime_scalars(self, group):
        return dict(super()._runtime_scalars(group), one_minus_rho=1 - group["rho"])

    def step(self) -> None:
        with no_grad():
            for group in self.param_groups:
                s = group.scalars
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    arrays = self._fused_arrays(p, self.square_avg, self.acc_delta)
                    if arrays is None:
                        self._step(group, p, self._grad(p, group))
                        continue
                    data, grad, v_data, u_data = arrays
                    array_api.adadelta_step(data, grad, v_data, u_data, s["lr"], s["rho"], s["one_minus_rho"],
                                            s["eps"], s["weight_decay"], "weight_decay" in group.terms)
                    for written in (data, v_data, u_data):
                        _note_write(written)

    def _step(self, group: ParamGroup, p: Tensor, g: Tensor) -> None:
        """The op-by-op update of one parameter for the gradient `g` (weight decay included)."""
        s = group.scalars
        v, u = self._state(self.square_avg, p), self._state(self.acc_delta, p)
        v.copy_(v * s["rho"] + g * g * s["one_minus_rho"])
        delta = ops.sqrt(u + s["eps"]) / ops.sqrt(v + s["eps"]) * g
        u.copy_(u * s["rho"] + delta * delta * s["one_minus_rho"])
        p.copy_(p.data - delta * s["lr"])
