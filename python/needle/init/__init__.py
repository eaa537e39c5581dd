"""Tensor factories and weight initialisers (each draws from numpy's global RNG once)."""
from .init_basic import arange, constant, one_hot, ones, ones_like, rand, randb, randn, zeros, zeros_like
from .init_initializers import kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform

__all__ = ["rand", "randn", "constant", "ones", "zeros", "randb", "one_hot", "zeros_like", "ones_like", "arange",
           "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
