"""Graph-level reverse-mode autodiff for Scalars (MiniTorch module 1's autodiff.py):
the Context a function saves values in, the topological order of a graph, the
backward pass that applies the chain rule in that order, and central differences.

The graph interface used here is MiniTorch's: a node has `unique_id`, `parents`,
`is_constant()`, `is_leaf()`, `chain_rule(d)` and `accumulate_derivative(d)`. Constants
take no part: they are never sorted, and the derivatives chain_rule gives them are dropped.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["Context", "topological_sort", "backpropagate", "central_difference"]


class Context:
    """What a ScalarFunction's forward stores for its backward (MiniTorch's Context)."""

    __slots__ = ("saved_values",)

    def __init__(self) -> None:
        self.saved_values: Tuple[Any, ...] = ()

    def save_for_backward(self, *values: Any) -> None:
        self.saved_values = values


def topological_sort(variable: Any) -> List[Any]:
    """The variables (non-constant nodes) `variable` depends on, output first: every node
    comes before all of its parents, and each node appears once. Leaves end a path.

    An iterative depth-first search (no recursion, so graphs of any depth work): a node is
    appended after all its parents have been, then the post-order is reversed.
    """
    if variable.is_constant():
        return []
    order: List[Any] = []
    visited = set()
    stack: List[Tuple[Any, bool]] = [(variable, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if node.unique_id in visited:
            continue
        visited.add(node.unique_id)
        stack.append((node, True))
        if node.is_leaf():
            continue
        for parent in node.parents:
            if not parent.is_constant() and parent.unique_id not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def backpropagate(variable: Any, deriv: float) -> None:
    """Push d(output)/d(variable) = `deriv` back through the graph: in topological order,
    each node's summed incoming derivative goes through its function's chain rule to its
    parents (constants skipped); leaves add what reaches them to their `.derivative`."""
    pending: Dict[int, float] = {variable.unique_id: deriv}
    for node in topological_sort(variable):
        d = pending.pop(node.unique_id, 0.0)
        if node.is_leaf():
            node.accumulate_derivative(d)
            continue
        for parent, d_parent in node.chain_rule(d):
            if parent.is_constant():
                continue
            key = parent.unique_id
            pending[key] = pending.get(key, 0.0) + d_parent


def _number(value: Any, what: str) -> float:
    if hasattr(value, "requires_grad") and hasattr(value, "data"):  # a Scalar
        return float(value.data)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} must be a real number or a Scalar, got {type(value).__name__}")


def central_difference(f: Callable[..., Any], *vals: Any, arg: int = 0, epsilon: float = 1e-6) -> float:
    """(f(..., x + eps, ...) - f(..., x - eps, ...)) / (2 eps), x being argument `arg`:
    a numerical estimate of the partial derivative of f with respect to that argument.

    `vals` may be floats (f receives floats) or Scalars (f receives constant Scalars
    holding the shifted values, so functions written with Scalar methods work too).
    f may return a float or a Scalar.
    """
    if not vals:
        raise ValueError("central_difference needs at least one value to differentiate at")
    if not isinstance(arg, numbers.Integral) or not 0 <= arg < len(vals):
        raise ValueError(f"central_difference: arg={arg!r} is out of range for {len(vals)} value(s)")
    if not epsilon > 0:
        raise ValueError(f"central_difference: epsilon must be positive, got {epsilon!r}")

    def shifted(delta: float) -> float:
        args = []
        for i, v in enumerate(vals):
            x = _number(v, f"central_difference value {i}")
            if i == arg:
                x += delta
            if hasattr(v, "requires_grad"):
                x = type(v)(x, requires_grad=False)
            args.append(x)
        return _number(f(*args), "the output of f")

    return (shifted(epsilon) - shifted(-epsilon)) / (2.0 * epsilon)
