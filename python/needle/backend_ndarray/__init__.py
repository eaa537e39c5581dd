"""The NDArray layer: strided arrays over device buffers, found by device name.

* `device.py`     devices, the registry by name (cpu, cuda, cpu_numpy)
* `interface.py`  the kernel interface every device module implements
* `ndarray.py`    the NDArray class: views, promotion, kernel dispatch
* `functions.py`  the array functions ops call as `array_api.*` in nd mode
* `kernels_*.py`  one kernel module per device
"""
from ..dtypes import DTYPES, FLOAT_DTYPES  # noqa: F401
from .device import (  # noqa: F401
    BackendDevice,
    all_devices,
    cpu,
    cpu_numpy,
    cuda,
    default_device,
    get_device,
    register_device,
    registered_devices,
)
from .functions import *  # noqa: F401,F403
from .functions import __all__ as _functions
from .interface import REQUIRED_KERNELS, DeviceKernels, missing_kernels  # noqa: F401
from .ndarray import NDArray  # noqa: F401

__all__ = [
    "NDArray", "BackendDevice", "DeviceKernels", "REQUIRED_KERNELS", "missing_kernels", "register_device",
    "get_device", "registered_devices", "all_devices", "cpu", "cpu_numpy", "cuda", "default_device",
    "DTYPES", "FLOAT_DTYPES", *_functions,
]
