"""Where the data package's random draws come from: numpy's global RNG, or a given generator.

PyTorch's samplers, ``random_split`` and ``DataLoader`` take ``generator=`` (a
``torch.Generator``). needle's take:

* ``None``: numpy's global RNG (``np.random.permutation``, ``np.random.randint``, ...), which
  ``np.random.seed`` / ``ndl.manual_seed`` seed -- the course's source of randomness;
* a ``numpy.random.Generator`` or a ``numpy.random.RandomState``;
* any object holding one of these as an attribute (a needle ``Generator`` wrapping numpy's,
  for instance): the attribute is looked up at every draw, so reseeding the object by
  replacing its numpy generator is seen.

Anything else (a ``torch.Generator``, a seed number, Python's ``random.Random``) is refused
with a TypeError that says what is accepted.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

_NUMPY = (np.random.Generator, np.random.RandomState)


def _inner(generator: Any) -> Optional[Any]:
    """The numpy Generator/RandomState that `generator` is or holds (None if there is none)."""
    if isinstance(generator, _NUMPY):
        return generator
    slots = [name for klass in type(generator).__mro__ for name in getattr(klass, "__slots__", ())]
    values = list(getattr(generator, "__dict__", {}).values())
    values += [getattr(generator, name) for name in slots if isinstance(name, str) and hasattr(generator, name)]
    for value in values:
        if isinstance(value, _NUMPY):
            return value
    return None


def check_generator(generator: Any, who: str) -> None:
    """TypeError unless `generator` is None, a numpy Generator/RandomState, or holds one."""
    if generator is not None and _inner(generator) is None:
        raise TypeError(f"{who}: generator must be None (numpy's global RNG), a numpy.random.Generator or "
                        f"RandomState, or an object holding one (a needle Generator), got {type(generator).__name__}")


class Draws:
    """The random draws the data package makes, from `generator` (see the module docstring)."""

    def __init__(self, generator: Any, who: str):
        check_generator(generator, who)
        self.generator = generator
        self.who = who

    def _source(self) -> Any:
        if self.generator is None:
            return np.random  # the global RNG's functions, the course's draws
        inner = _inner(self.generator)
        if inner is None:  # the object no longer holds one
            check_generator(self.generator, self.who)
        return inner

    def permutation(self, n: int) -> np.ndarray:
        """A random permutation of 0..n-1 (int64): one ``permutation(n)`` call."""
        return np.asarray(self._source().permutation(n), dtype=np.int64)

    def integers(self, high: int, size: int) -> np.ndarray:
        """`size` integers drawn uniformly from [0, high) (int64)."""
        source = self._source()
        if isinstance(source, np.random.Generator):
            return source.integers(0, high, size=size, dtype=np.int64)
        return np.asarray(source.randint(0, high, size=size), dtype=np.int64)

    def choice(self, n: int, size: int, replace: bool, p: np.ndarray) -> np.ndarray:
        """`size` draws from 0..n-1 with probabilities `p`, with or without replacement (int64)."""
        return np.asarray(self._source().choice(n, size=size, replace=replace, p=p), dtype=np.int64)

    def seed(self) -> int:
        """A number in [0, 2**32) to seed worker processes with."""
        return int(self.integers(2 ** 32, 1)[0])
