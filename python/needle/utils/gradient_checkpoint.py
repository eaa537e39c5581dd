"""Gradient checkpointing: trade compute for memory by recomputing a block's activations in backward.

    from needle.utils import checkpoint

    for block in blocks:
        x = checkpoint(block, x)       # instead of x = block(x)

A plain forward keeps every intermediate activation of every block alive until
backward reaches it. `checkpoint(fn, *inputs)` runs fn under no_grad, so its
intermediates are freed as soon as they are used, and keeps only what it needs to run
fn again: the inputs (and the output, which the next block holds anyway). In backward
it re-runs fn with gradients on, on detached copies of the inputs, and backpropagates
the incoming gradient through that recomputed graph. Peak memory goes from all
blocks' activations to one block's plus the block boundaries; the price is a second
forward of each block (about a third more compute for a step).

Parameters. The parameters fn uses get their gradients through the checkpoint: they
are fn's own when fn is a Module (or a bound method of one); otherwise pass them as
`params=`. A tensor that requires grad and that fn reaches some other way is an error,
not a silently missing gradient. (How: docs/architecture.md, "Gradient checkpointing".)

Exactness. The recomputation is the same kernels on the same inputs, so activations,
and hence gradients, equal the plain run's bit for bit. Random draws are replayed:
numpy's global RNG state is saved before the forward, restored for the recomputation,
and put back afterwards where the main run left it, so dropout draws the same masks
twice and the rest of the run draws what it would have drawn without checkpointing.
Running statistics (BatchNorm) of a Module fn are restored after the recomputation, so
they are updated once per forward, as without checkpointing. The sums may differ in
the last bit only where a tensor is used both inside and outside fn (its partial
gradients are added in another order). All of this also holds inside `ndl.compile`:
the RNG bookkeeping runs as host calls that every replay repeats.

The gradient of a checkpoint is not itself differentiable (no gradients of gradients
through it): it is computed on detached copies.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, cast

import numpy as np

from ..autograd import Tensor, TensorOp, array_api, enable_grad, find_topo_sort, is_grad_enabled, no_grad
from ..nn.nn_basic import Module

__all__ = ["checkpoint", "Checkpoint"]


class Checkpoint(TensorOp):
    """fn(*inputs) without keeping its graph; node inputs are (*inputs, *params) (see the module docstring)."""

    def __init__(self, fn: Callable[..., Tensor], n_inputs: int, buffers: List[Tensor]):
        self.fn = fn
        self.n_inputs = n_inputs
        self.buffers = buffers
        self._forward_rng: Any = None  # numpy's RNG state as the forward found it
        self._main_rng: Any = None     # where the main run had left it, while the recomputation draws

    # host work: a compiled step repeats these on every replay, in this order
    def _save_rng(self) -> None:
        self._forward_rng = np.random.get_state()

    def _enter_rng(self) -> None:
        self._main_rng = np.random.get_state()
        np.random.set_state(self._forward_rng)

    def _leave_rng(self) -> None:
        np.random.set_state(self._main_rng)
        self._main_rng = None

    def compute(self, *arrays):
        array_api.host_call(self._save_rng)
        with no_grad():
            out = self.fn(*[Tensor.make_const(a) for a in arrays[:self.n_inputs]])
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: fn must return one Tensor, got {type(out).__name__}")
        return out.realize_cached_data()

    def gradient(self, out_grad: Tensor, node: Tensor):  # type: ignore[override]  # a TensorOp's node is a Tensor
        tensors = cast(List[Tensor], node.inputs)  # the Tensors it was called with
        inputs, params = tensors[:self.n_inputs], tensors[self.n_inputs:]
        leaves = [Tensor.make_const(x.realize_cached_data(), requires_grad=x.requires_grad) for x in inputs]
        out = self._recompute(leaves)
        _check_closed(out, leaves, params)
        kept = [p.grad for p in params]
        try:
            out.backward(out_grad.detach())
            return tuple(_detached(t.grad) for t in list(leaves) + list(params))
        finally:
            # the outer backward writes the parameters' .grad. And a leaf's .grad is a gradient
            # graph that reaches back to the leaf: left there, the cycle would keep the whole
            # recomputed block alive until Python's cycle collector runs
            for p, grad in zip(params, kept):
                p.grad = grad
            for leaf in leaves:
                leaf.grad = None

    def _recompute(self, leaves: List[Tensor]) -> Tensor:
        """fn(*leaves) with grad on, drawing the forward's random numbers, leaving buffers as they were."""
        saved = [array_api.array(b.realize_cached_data(), dtype=None) for b in self.buffers]
        array_api.host_call(self._enter_rng)
        try:
            with enable_grad():
                out = self.fn(*leaves)
        finally:
            array_api.host_call(self._leave_rng)
            for b, value in zip(self.buffers, saved):
                b.copy_(Tensor.make_const(value))
        return out


def _detached(grad: Optional[Tensor]) -> Optional[Tensor]:
    return None if grad is None else grad.detach()


def _check_closed(out: Tensor, leaves: Sequence[Tensor], params: Sequence[Tensor]) -> None:
    """Every tensor that requires grad and that out depends on is an input or a listed parameter."""
    known = {id(t) for t in leaves} | {id(p) for p in params}
    for node in find_topo_sort([out]):
        if node.op is None and node.requires_grad and id(node) not in known:
            shape = cast(Tensor, node).shape  # a leaf that requires grad is a Tensor
            raise ValueError(f"checkpoint: fn uses a tensor of shape {shape} that requires grad but is neither "
                             "an input nor one of the parameters; pass fn as a Module or list it in params=")


def _owner(fn) -> Optional[Module]:
    """The Module fn is, or whose bound method it is."""
    if isinstance(fn, Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, Module) else None


def checkpoint(fn: Callable[..., Tensor], *inputs: Tensor, params: Optional[Sequence[Tensor]] = None) -> Tensor:
    """fn(*inputs), keeping only the inputs for backward, which recomputes fn (see the module docstring).

    Args:
        fn: a Module, a bound method of one, or a function; returns one Tensor.
        inputs: Tensors (wrap other arguments into fn with functools.partial).
        params: the parameters fn uses; default: fn's Module's parameters, or none.

    The result and every gradient equal those of fn(*inputs) (bit for bit, dropout
    included). Under no_grad, or when nothing requires grad, it is just fn(*inputs).
    Raises TypeError for a non-Tensor input or output, ValueError (in backward) when fn
    uses a tensor that requires grad and is neither an input nor in params.
    """
    for x in inputs:
        if not isinstance(x, Tensor):
            raise TypeError(f"checkpoint: inputs must be Tensors, got {type(x).__name__}; bind other arguments "
                            "into fn (functools.partial)")
    owner = _owner(fn)
    if params is None:
        params = owner.parameters() if owner is not None else []
    params = list(params)
    if not is_grad_enabled() or not any(t.requires_grad for t in list(inputs) + params):
        return fn(*inputs)
    buffers = [] if owner is None else owner.buffers()
    return Checkpoint(fn, len(inputs), buffers)(*inputs, *params)
