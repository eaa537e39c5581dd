"""Chooses the array layer once, at import, from NEEDLE_BACKEND ("nd" or "np").

Both layers export the same names: `array_api` (the module of array functions that
ops call, see `needle.array_interface`), `NDArray` (the array class), `Device`, and
the device functions. Nothing above this module knows which one was chosen.
"""
import os
from typing import TYPE_CHECKING

__all__ = ["BACKEND", "array_api", "NDArray", "Device", "cpu", "cpu_numpy", "cuda", "default_device", "device",
           "as_device", "all_devices", "get_device", "registered_devices"]

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


class _DeviceMeta(type):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, Device)


class device(metaclass=_DeviceMeta):  # noqa: N801  (PyTorch's name)
    """`ndl.device("cpu")`, like torch.device: the needle device called "cpu", "cuda" or
    "cpu_numpy" (an index ":0" is accepted, the only one there is). A device given is
    returned as it is, and `isinstance(x.device, ndl.device)` holds. "cuda" on a machine
    without a GPU (or in numpy mode) gives the device whose `enabled()` is False, as
    `ndl.cuda()` does. ValueError for any other name."""

    def __new__(cls, spec, index=None):
        return as_device(spec if index is None else f"{spec}:{index}")


def as_device(spec):
    """A device from a device or its name (torch's "cuda:0" included); None stays None.
    ValueError names an unknown device, TypeError anything that is not a device or a name."""
    if spec is None or isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"expected a device or a device name, got {type(spec).__name__}")
    name, _, index = spec.partition(":")
    if index and index != "0":
        raise ValueError(f"device {spec!r}: needle has one device of each kind, index 0")
    if name in registered_devices():
        return get_device(name)
    if name == "cuda":
        return cuda()
    if name == "cpu_numpy":
        return cpu_numpy()
    raise ValueError(f"unknown device {spec!r}; known devices: {', '.join(registered_devices())}")
