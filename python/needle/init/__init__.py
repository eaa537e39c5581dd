"""Tensor factories and weight initialisers (each draws from numpy's global RNG once)."""
from .init_basic import *  # noqa: F401,F403
from .init_initializers import *  # noqa: F401,F403
