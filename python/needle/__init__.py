"""needle: a small deep learning framework with the CMU 10-414/714 needle API."""
from . import (  # noqa: E402
    _openblas,  # noqa: F401  (first: OpenBLAS's idle threads sleep, see the module)
    autograd,
    data,
    functions,
    init,
    nn,
    ops,
    optim,
    utils,
)
from ._version import __version__  # the one source of the version (also `needle --version`, the wheel's)
from .autograd import (
    Op,
    Tensor,
    TensorOp,
    TensorTuple,
    TensorTupleOp,
    Value,
    enable_grad,
    inference_mode,
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
    device,
    get_device,
    registered_devices,
)
from .compile import TraceError, compile  # noqa: E402,A004
from .creation import (  # noqa: E402
    Generator,
    arange,
    empty,
    from_numpy,
    full,
    full_like,
    linspace,
    manual_seed,
    multinomial,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
)
from .dtypes import DTYPES, HostScalar, bool_, dtype, float32, float64, int64  # noqa: E402
from .init import ones, ones_like, zeros, zeros_like  # noqa: E402
from .ops import *  # noqa: F401,F403  (the course re-exports every op at the top level)
from .ops import __all__ as _ops_all
from .serialization import load, save  # noqa: E402

# PyTorch's function forms (needle.functions: ndl.sum, ndl.min, ndl.allclose, ...). They replace the
# ops' functions of the same name brought in above (ndl.max, mean, argmax, argmin, softmax, clamp),
# which they extend with PyTorch's dim= and keyword arguments.
globals().update({_name: getattr(functions, _name) for _name in functions.__all__})

# PyTorch's dtype names (see needle.dtypes.dtype); int32 and int are stored as int64, so they are int64
float, double, long, int32, int, bool = float32, float64, int64, int64, int64, bool_  # noqa: A001

__all__ = sorted(set(_ops_all) | {
    "autograd", "ops", "init", "data", "nn", "optim", "Op", "Tensor", "TensorOp", "TensorTuple", "TensorTupleOp",
    "Value", "NDArray", "Device", "BACKEND", "array_api", "cpu", "default_device", "all_devices", "get_device",
    "registered_devices", "enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled", "ones", "zeros",
    "ones_like", "zeros_like", "from_numpy", "tensor", "randn", "rand", "arange", "manual_seed", "load", "save",
    "DTYPES", "cpu_numpy", "cuda", "compile",
    "TraceError", "HostScalar",
    "inference_mode", "device", "Generator", "full", "full_like", "empty", "linspace", "randint", "randint_like",
    "randperm", "randn_like", "rand_like", "multinomial", "dtype", "float32", "float64", "int64", "double", "long",
    "int32", "allclose", "argmin", "clamp", "clip", "is_floating_point", "is_tensor", "log_softmax", "minimum",
    "numel", "std", "var",
    # not here: sum, min, all, any, abs, pow, float, int, bool -- ndl.sum etc. exist, but a star
    # import would shadow Python's builtins with them
})
