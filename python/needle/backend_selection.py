"""Chooses the array layer once, at import, from NEEDLE_BACKEND ("nd" or "np").

Both layers export the same names: `array_api` (the module of array functions that
ops call, see `needle.array_interface`), `NDArray` (the array class), `Device`, and
the device functions. Nothing above this module knows which one was chosen.
"""
import os
from typing import TYPE_CHECKING

__all__ = ["BACKEND", "array_api", "NDArray", "Device", "cpu", "cpu_numpy", "cuda", "default_device",
           "all_devices", "get_device", "registered_devices"]

BACKEND = os.environ.get("NEEDLE_BACKEND", "nd")

# the type checker reads the nd branch (backend_numpy is checked as a module of its own)
if TYPE_CHECKING or BACKEND == "nd":
    from . import backend_ndarray as array_api
    from .backend_ndarray import BackendDevice as Device  # noqa: F401
    from .backend_ndarray import (
        NDArray,
        all_devices,
        cpu,
        cpu_numpy,
        cuda,
        default_device,
        get_device,
        registered_devices,
    )
elif BACKEND == "np":
    from numpy import ndarray as NDArray  # noqa: F401

    from . import backend_numpy as array_api  # noqa: F401
    from .backend_numpy import Device, all_devices, cpu, cpu_numpy, cuda, default_device, get_device, registered_devices  # noqa: F401
else:
    raise RuntimeError(f"unknown NEEDLE_BACKEND {BACKEND!r}: use 'nd' or 'np'")
