"""needle: a small deep learning framework with the CMU 10-414/714 needle API."""
from . import autograd, data, init, nn, ops, optim  # noqa: E402
from .autograd import (
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
from .backend_selection import (  # noqa: F401
    BACKEND,
    Device,
    NDArray,
    all_devices,
    array_api,
    cpu,
    cpu_numpy,
    cuda,
    default_device,
    get_device,
    registered_devices,
)
from .compile import TraceError, compile  # noqa: E402,A004
from .creation import arange, from_numpy, manual_seed, rand, randn, tensor  # noqa: E402
from .dtypes import DTYPES, HostScalar  # noqa: E402
from .init import ones, ones_like, zeros, zeros_like  # noqa: E402
from .ops import *  # noqa: F401,F403  (the course re-exports every op at the top level)
from .ops import __all__ as _ops_all
from .serialization import load, save  # noqa: E402

__all__ = sorted(set(_ops_all) | {
    "autograd", "ops", "init", "data", "nn", "optim", "Op", "Tensor", "TensorOp", "TensorTuple", "TensorTupleOp",
    "Value", "NDArray", "Device", "BACKEND", "array_api", "cpu", "default_device", "all_devices", "get_device",
    "registered_devices", "enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled", "ones", "zeros",
    "ones_like", "zeros_like", "from_numpy", "tensor", "randn", "rand", "arange", "manual_seed", "load", "save",
    "DTYPES", "cpu_numpy", "cuda", "compile",
    "TraceError", "HostScalar",
})
