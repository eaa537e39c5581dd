"""needle: a small deep learning framework with the CMU 10-414/714 needle API."""
from . import ops
from .ops import *  # noqa: F401,F403
from .autograd import (  # noqa: F401
    Op,
    Tensor,
    TensorOp,
    TensorTuple,
    TensorTupleOp,
    Value,
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from . import autograd, init  # noqa: F401
from . import data  # noqa: F401
from . import nn, optim  # noqa: F401
from .init import ones, zeros, zeros_like, ones_like  # noqa: F401
from .backend_selection import *  # noqa: F401,F403
from .backend_selection import BACKEND, array_api  # noqa: F401
from .tensor_functions import from_numpy  # noqa: F401
from .serialization import load, save  # noqa: F401
