"""Host-side work on numpy arrays that both array layers run: random draws (from numpy's global
generator or a `Generator`), multinomial sampling, sort orders, and the input checks of class
ids and float indices.

The array functions `random`, `multinomial` and `argsort` (`needle.array_interface`) call these
inside `host_call`, so a compiled step (`ndl.compile`) runs them again on every replay: a
replayed step draws fresh numbers and sorts the data of that step.

`Generator` is PyTorch's torch.Generator for needle: it owns a numpy RandomState, and every
random function takes it as `generator=`. Without one, draws come from numpy's global
generator (`np.random.seed`, `ndl.manual_seed`), in the course's order: one draw per call.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["Generator", "DEFAULT_SEED", "draw", "multinomial", "sort_order", "check_ids", "check_whole_index"]

DEFAULT_SEED = 67280421310721  # the seed of a new torch.Generator()


def _random_state(seed: int) -> np.random.RandomState:
    """A RandomState seeded with `seed` (any int of 64 bits, negative ones taken mod 2**64):
    for 0 <= seed < 2**32 exactly the state `np.random.seed(seed)` gives the global one."""
    seed %= 2 ** 64
    if seed < 2 ** 32:
        return np.random.RandomState(seed)
    return np.random.RandomState(np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32))


class Generator:
    """A random number generator of its own (PyTorch's torch.Generator): pass it as `generator=`
    to ndl.randn, rand, randint, randperm, multinomial, randn_like, rand_like. Draws from it
    leave numpy's global generator (and so the course's draw order) untouched.

    `Generator().manual_seed(s)` (returns the generator) draws exactly the numbers the global
    generator draws after `np.random.seed(s)` / `ndl.manual_seed(s)`, for 0 <= s < 2**32.
    A new Generator starts from PyTorch's default seed, 67280421310721 (not PyTorch's numbers:
    the bits come from numpy's Mersenne Twister). `get_state()` returns numpy's state tuple,
    which `set_state` takes back (PyTorch's are byte tensors). `device` is accepted for
    PyTorch's signature; the draws are made on the host and copied to the tensor's device.
    """

    def __init__(self, device: Any = "cpu"):
        self.device = device
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed: int) -> "Generator":
        """Seed the generator (an int of up to 64 bits); returns the generator itself."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
        seed = int(seed)
        if not -(2 ** 63) <= seed < 2 ** 64:
            raise ValueError(f"manual_seed: seed {seed} does not fit in 64 bits")
        self._seed = seed
        self.state = _random_state(seed)
        return self

    def initial_seed(self) -> int:
        """The seed last given to manual_seed (or seed())."""
        return self._seed

    def seed(self) -> int:
        """Seed from the operating system's entropy; returns the seed chosen."""
        chosen = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(chosen)
        return chosen

    def get_state(self) -> Any:
        """numpy's state tuple of the RandomState behind the generator."""
        return self.state.get_state()

    def set_state(self, state: Any) -> "Generator":
        self.state.set_state(state)
        return self

    def __repr__(self) -> str:
        return f"needle.Generator(initial_seed={self._seed})"


def _source(generator: Optional[Generator]):
    """Where draws come from: the generator's RandomState, or numpy's global one (looked up now,
    so np.random.seed between two replays of a compiled step is seen)."""
    if generator is None:
        return np.random
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be an ndl.Generator, got {type(generator).__name__}")
    return generator.state


def draw(generator: Optional[Generator], method: str, shape: Sequence[int], args: tuple = ()) -> np.ndarray:
    """One draw of `shape` numbers: `rng.<method>(*args, size=shape)` with rng the generator's
    RandomState or numpy's global generator. method is one of random_sample (= np.random.rand),
    standard_normal (= np.random.randn), randint (args: low, high) and permutation (args: n; shape
    ignored)."""
    rng = _source(generator)
    if method == "permutation":
        return np.asarray(rng.permutation(*args))
    if method not in ("random_sample", "standard_normal", "randint"):
        raise ValueError(f"unknown draw {method!r}")
    return np.asarray(getattr(rng, method)(*args, size=tuple(shape)))


def multinomial(weights: np.ndarray, num_samples: int, replacement: bool,
                generator: Optional[Generator] = None) -> np.ndarray:
    """Category indices (int64, rows x num_samples) drawn from each row of `weights` (rows x n,
    non-negative, finite, a positive sum; they need not sum to 1), as torch.multinomial.

    With replacement: one draw of rows x num_samples uniforms, each mapped through the row's
    cumulative distribution. Without: one draw of rows x n standard exponentials E, and the
    categories in increasing order of E / w -- the order in which sampling one at a time without
    replacement, proportionally to w, picks them (categories of weight 0 come last, in index
    order, as in PyTorch). RuntimeError for weights a distribution cannot have.
    """
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise RuntimeError("multinomial: the probabilities contain inf, nan or an element < 0")
    totals = w.sum(axis=1)
    if np.any(totals <= 0):
        row = int(np.argmax(totals <= 0))
        raise RuntimeError(f"multinomial: invalid distribution: row {row} has a sum of probabilities <= 0")
    rng = _source(generator)
    rows, n = w.shape
    if replacement:
        cdf = np.cumsum(w, axis=1)
        cdf /= cdf[:, -1:]
        u = np.asarray(rng.random_sample(size=(rows, num_samples)))
        out = np.empty((rows, num_samples), dtype=np.int64)
        for r in range(rows):
            out[r] = np.searchsorted(cdf[r], u[r], side="right")
        return np.minimum(out, n - 1)
    e = np.asarray(rng.standard_exponential(size=(rows, n)))
    with np.errstate(divide="ignore"):
        keys = e / w
    return np.argsort(keys, axis=1, kind="stable")[:, :num_samples].astype(np.int64)


def sort_order(a: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """int64 indices that sort `a` along `axis`, stable (equal elements keep their order, -0 ties
    with 0), nan after everything ascending and before everything descending (PyTorch's
    torch.sort / topk order: nan counts as the largest value)."""
    if not descending:
        return np.argsort(a, axis=axis, kind="stable").astype(np.int64)
    if a.dtype.kind == "f":
        flipped = -a  # nan stays nan: the first key puts the nans in front
        return np.lexsort((flipped, ~np.isnan(a)), axis=axis).astype(np.int64)
    return np.argsort(~a, axis=axis, kind="stable").astype(np.int64)  # ~x = -x - 1: no overflow


def _not_whole(flat: np.ndarray) -> Any:
    """The first of the (flat) values that is not a whole number (1.5, nan, inf), or None; an
    integer array holds none."""
    if flat.dtype.kind != "f":
        return None
    bad = ~np.isfinite(flat) | (flat != np.floor(flat))
    return flat[bad][0].item() if bad.any() else None


def check_whole_index(index: np.ndarray) -> None:
    """TypeError naming the first value of a float index (any shape) that is not a whole number
    (1.5, nan, inf): a float index stands for its int64 cast only when it holds whole numbers."""
    bad = _not_whole(np.asarray(index).reshape(-1))
    if bad is not None:
        raise TypeError(f"tensor indices must hold whole numbers, got {bad!r}")


def check_ids(ids: np.ndarray, n: Optional[int], what: str) -> None:
    """ValueError, prefixed with `what`, for the first of the ids (any shape) that is not a whole
    number (float ids: 1.5, nan, inf) or lies outside [0, n) (n None: the range is not checked)."""
    flat = np.asarray(ids).reshape(-1)
    bad = _not_whole(flat)
    if bad is not None:
        raise ValueError(f"{what}: id {bad!r} is not a whole number")
    if n is None or not flat.size or (flat.min() >= 0 and flat.max() < n):  # (the common case: two reads)
        return
    outside = (flat < 0) | (flat >= n)
    raise ValueError(f"{what}: id {flat[outside][0]:g} is out of range [0, {n})")
