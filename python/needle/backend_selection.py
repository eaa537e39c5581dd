"""Chooses the array layer once, at import, from NEEDLE_BACKEND ("nd" or "np")."""
import os

BACKEND = os.environ.get("NEEDLE_BACKEND", "nd")

if BACKEND == "nd":
    from . import backend_ndarray as array_api
    from .backend_ndarray import (  # noqa: F401
        BackendDevice as Device,
        NDArray,
        all_devices,
        cpu,
        cpu_numpy,
        cuda,
        default_device,
    )
elif BACKEND == "np":
    import numpy as array_api  # noqa: F401
    from numpy import ndarray as NDArray  # noqa: F401

    from .backend_numpy import Device, all_devices, cpu, default_device  # noqa: F401
else:
    raise RuntimeError(f"unknown NEEDLE_BACKEND {BACKEND!r}: use 'nd' or 'np'")
