"""The scalar autodiff engine (micrograd / MiniTorch modules 0-1): floats that record how
they were computed, reverse-mode derivatives through that graph, a Module tree of
Scalar parameters, and a small classifier trained on the 2-D toy sets.

Imported on its own (`import needle.scalar`); `import needle` does not load it.
"""
from . import operators
from .autodiff import Context, backpropagate, central_difference, topological_sort
from .module import Linear, Module, Network, Parameter
from .optim import SGD
from .scalar import Scalar, ScalarHistory, derivative_check
from .scalar_functions import EQ, LT, Add, Exp, Inv, Log, Mul, Neg, Pow, ReLU, ScalarFunction, Sigmoid, Tanh
from .train import ScalarTrainResult, train_scalar_network

__all__ = [
    "operators", "Context", "backpropagate", "central_difference", "topological_sort",
    "Linear", "Module", "Network", "Parameter", "SGD", "Scalar", "ScalarHistory", "derivative_check",
    "ScalarFunction", "Add", "Mul", "Neg", "Inv", "Log", "Exp", "Sigmoid", "ReLU", "Tanh", "Pow", "LT", "EQ",
    "ScalarTrainResult", "train_scalar_network",
]
