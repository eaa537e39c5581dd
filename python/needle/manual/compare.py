"""Comparing a hand-computed gradient with a reference one (makemore's `cmp`).

`cmp` reports whether the two are exactly equal, approximately equal
(np.allclose) and how far apart they are at most. The reference can be the
variable itself (a needle or PyTorch tensor whose `.grad` holds the gradient)
or the gradient as an array.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ..autograd import Tensor
from ._convert import is_torch_tensor, to_numpy

# relative tolerance by precision; see default_tolerances
_RTOL = {8: 1e-7, 4: 1e-4, 2: 1e-2}


def default_tolerances(manual: np.ndarray, reference: np.ndarray) -> Tuple[float, float]:
    """(rtol, atol) used when cmp is not given them.

    rtol follows the coarser floating dtype of the two (float64: 1e-7, float32:
    1e-4, float16: 1e-2). atol is rtol times the largest |reference| entry: a
    gradient computed in a different order differs by rounding errors of the
    size of its largest terms, so entries that nearly cancel to zero are
    judged against the scale of the whole gradient, not against themselves.
    """
    sizes = [a.dtype.itemsize for a in (manual, reference) if a.dtype.kind == "f"]
    rtol = _RTOL.get(min(sizes), 1e-7) if sizes else 1e-7
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return rtol, rtol * scale if math.isfinite(scale) else 0.0


@dataclass(frozen=True)
class CmpResult:
    """The outcome of one comparison. `bool(result)` is `result.approximate`."""

    name: str
    exact: bool
    approximate: bool
    maxdiff: float  # nan when the shapes differ
    shape_ok: bool
    manual_shape: tuple
    reference_shape: tuple
    rtol: float
    atol: float

    def __bool__(self) -> bool:
        return self.approximate

    def shape_text(self) -> str:
        if self.shape_ok:
            return str(self.manual_shape)
        return f"{self.manual_shape} vs {self.reference_shape}"

    def line(self, width: int = 15) -> str:
        """`name | exact: False | approximate: True | maxdiff: 1.2e-09`, plus the shapes when they differ."""
        text = (f"{self.name:{width}s} | exact: {str(self.exact):5s} | approximate: {str(self.approximate):5s} "
                f"| maxdiff: {self.maxdiff:.3g}")
        if not self.shape_ok:
            text += f" | shape mismatch: manual {self.manual_shape}, reference {self.reference_shape}"
        return text


def _reference_array(name: str, reference, use_grad: Optional[bool]) -> np.ndarray:
    """The reference gradient: `.grad` of a variable, or the value of an array."""
    if isinstance(reference, Tensor):
        grad, wants_grad = reference.grad, reference.requires_grad and reference.is_leaf()
        kind = "needle tensor"
        hint = "run loss.backward() first"
    elif is_torch_tensor(reference):
        with warnings.catch_warnings():  # .grad of a non-leaf warns in torch
            warnings.simplefilter("ignore")
            grad = reference.grad
        wants_grad = bool(reference.requires_grad)
        kind = "torch tensor"
        hint = ("run loss.backward() first" if reference.is_leaf
                else "call .retain_grad() on it before loss.backward()")
    else:
        if use_grad:
            raise ValueError(f"cmp({name!r}): use_grad=True needs a needle or torch tensor as reference, "
                             f"got a {type(reference).__name__}")
        return to_numpy(reference, f"cmp({name!r}) reference")
    if use_grad is False:
        return to_numpy(reference, f"cmp({name!r}) reference")
    if grad is not None:
        return to_numpy(grad, f"cmp({name!r}) reference gradient")
    if use_grad or wants_grad:
        raise ValueError(f"cmp({name!r}): the reference {kind} has no gradient (.grad is None); {hint}, "
                         f"or pass the gradient array itself")
    # a tensor outside any graph (or a gradient tensor such as x.grad) is compared by value
    return to_numpy(reference, f"cmp({name!r}) reference")


def cmp(name: str, manual_grad, reference, *, atol: Optional[float] = None, rtol: Optional[float] = None,
        verbose: bool = True, use_grad: Optional[bool] = None, file=None) -> CmpResult:
    """Compare `manual_grad` with the reference gradient of variable `name`.

    manual_grad: the hand-computed gradient (needle Tensor, NDArray, numpy or torch array).
    reference: a needle or PyTorch tensor whose `.grad` is used when it has one; a
      tensor that requires grad but has no `.grad` is a ValueError. Anything else
      (numpy array, NDArray, a needle/torch tensor outside the graph, `x.grad`
      itself) is the gradient's value. `use_grad=True/False` forces either reading.
    atol, rtol: np.allclose tolerances; None picks `default_tolerances`.
    Returns a CmpResult; prints `result.line()` when verbose. Differing shapes give
    shape_ok=False, exact=approximate=False and maxdiff=nan (no exception).
    """
    if manual_grad is None:
        raise ValueError(f"cmp({name!r}): the manual gradient is None (was backward() called?)")
    m = to_numpy(manual_grad, f"cmp({name!r}) manual gradient")
    r = _reference_array(name, reference, use_grad)
    d_rtol, d_atol = default_tolerances(m, r) if r.shape == m.shape else (1e-7, 0.0)
    rtol = d_rtol if rtol is None else float(rtol)
    atol = d_atol if atol is None else float(atol)
    if m.shape != r.shape:
        result = CmpResult(str(name), False, False, math.nan, False, tuple(m.shape), tuple(r.shape), rtol, atol)
    else:
        exact = bool(np.array_equal(m, r))
        approximate = bool(np.allclose(m, r, rtol=rtol, atol=atol))
        diff = np.abs(m.astype(np.float64) - r.astype(np.float64))
        maxdiff = float(np.max(diff)) if diff.size else 0.0
        result = CmpResult(str(name), exact, approximate, maxdiff, True, tuple(m.shape), tuple(r.shape), rtol, atol)
    if verbose:
        print(result.line(), file=sys.stdout if file is None else file)
    return result


_HEADER = ("variable", "shape", "exact", "approximate", "maxdiff")


def compare_table(rows: Iterable, *, atol: Optional[float] = None, rtol: Optional[float] = None,
                  verbose: bool = True, file=None) -> List[CmpResult]:
    """Compare several gradients and print one aligned table row per variable.

    rows: (name, manual, reference) triples (compared with `cmp` and the given
    tolerances) and/or CmpResult objects. Returns the CmpResults in order.
    """
    results = []
    for row in rows:
        if isinstance(row, CmpResult):
            results.append(row)
            continue
        if not isinstance(row, (tuple, list)) or len(row) != 3:
            raise TypeError(f"compare_table: rows must be (name, manual, reference) triples or CmpResults, got {row!r}")
        name, manual, reference = row
        results.append(cmp(name, manual, reference, atol=atol, rtol=rtol, verbose=False))
    if verbose:
        print(format_table(results), file=sys.stdout if file is None else file)
    return results


def format_table(results: List[CmpResult]) -> str:
    """The table compare_table prints: a header, a rule, then one row per result."""
    cells = [_HEADER] + [
        (r.name, r.shape_text(), str(r.exact), str(r.approximate), f"{r.maxdiff:.3g}") for r in results
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
