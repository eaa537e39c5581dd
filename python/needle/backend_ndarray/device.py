"""Devices: a name, the kernel module behind it, and a registry to find them by name.

Adding a device is one kernel module (implementing `interface.DeviceKernels`) and
one `register_device(name, loader)` call; `all_devices()`, `ndl.all_devices()` and
the CLI's `--device` choices all come from this registry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import numpy as np

from .._packaging import install_hint
from ..dtypes import storage_dtype

if TYPE_CHECKING:
    from .ndarray import NDArray

__all__ = ["BackendDevice", "register_device", "get_device", "registered_devices", "all_devices", "cpu",
           "cpu_numpy", "cuda", "default_device"]


class DeviceUnavailableError(RuntimeError, AttributeError):
    """A kernel of a device that cannot run here was asked for."""


class BackendDevice:
    """A device: a name plus the kernel module that implements it (None when unavailable).

    Attribute look-ups fall through to the kernel module, as in the course
    (`device.matmul_tiled`, `device.__tile_size__`, `device.Array`, ...). The array layer
    runs kernels through `call` and allocates through `allocate`, where a compiled step's
    recorder (`recorder`, set while it traces) sees them. `why_unavailable` says what is
    missing when `enabled()` is False.
    """

    recorder = None  # the needle.compile Recorder tracing a step, if any

    def __init__(self, name: str, mod, why_unavailable: str = ""):
        self.name = name
        self.mod = mod
        self.why_unavailable = why_unavailable

    def call(self, name: str, *args):
        """Run kernel `name` (of the interface) on `args`, through the recorder while one traces."""
        recorder = self.recorder
        if recorder is not None:
            return recorder.call(self, name, args)
        return getattr(self, name)(*args)

    def allocate(self, size: int, dtype: str = "float32"):
        """A new buffer of `size` elements (the kernel module's Array), noted by the recorder."""
        buffer = self.Array(size, dtype)
        if self.recorder is not None:
            self.recorder.allocated_now(self, buffer)
        return buffer

    def __eq__(self, other) -> bool:
        return isinstance(other, BackendDevice) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name + "()"

    def __getattr__(self, name):
        if name.startswith("__") and name not in ("__tile_size__", "__device_name__"):
            raise AttributeError(name)  # Python's own protocol look-ups are not kernels
        if name == "mod":
            raise AttributeError(name)
        if self.__dict__.get("mod") is None:
            # a kernel of a device that cannot run here (ndl.zeros(2, device=ndl.cuda()) on a machine
            # without a GPU): the message of every other use of an unavailable device, as an error
            # that is also an AttributeError, so hasattr(device, kernel) stays False
            raise DeviceUnavailableError(f"device {self} is not available here: {self.why_unavailable or 'no kernels'}")
        kernel = getattr(self.mod, name)
        self.__dict__[name] = kernel  # later look-ups skip __getattr__ (this is on every op's path)
        return kernel

    def enabled(self) -> bool:
        return self.mod is not None

    @property
    def type(self) -> str:
        """The device's name (PyTorch's `device.type`: "cpu", "cuda", "cpu_numpy")."""
        return self.name

    # factories (the RNG calls here are part of the contract: one numpy draw each). The draw
    # is a host call, so a compiled step draws fresh numbers on every replay.
    def randn(self, *shape, dtype="float32") -> "NDArray":
        return self._random(np.random.randn, shape, dtype)

    def rand(self, *shape, dtype="float32") -> "NDArray":
        return self._random(np.random.rand, shape, dtype)

    def _random(self, draw, shape, dtype) -> "NDArray":
        out = self.empty(shape, dtype)
        from .recording import host_call

        host_call(_fill_random, self, draw, tuple(shape), out._handle)
        return out

    def one_hot(self, n: int, i, dtype="float32") -> "NDArray":
        """Rows `i` (int array or NDArray of class ids, any shape) of the n x n identity: i.shape + (n,)."""
        from .functions import one_hot

        return one_hot(n, i, dtype=dtype, device=self)

    def empty(self, shape, dtype="float32") -> "NDArray":
        return _ndarray().make(tuple(shape), device=self, dtype=storage_dtype(dtype))

    def full(self, shape, fill_value, dtype="float32") -> "NDArray":
        arr = self.empty(shape, dtype)
        arr.fill(fill_value)
        return arr

    def zeros(self, *shape, dtype="float32") -> "NDArray":
        return self.full(shape, 0, dtype)

    def ones(self, *shape, dtype="float32") -> "NDArray":
        return self.full(shape, 1, dtype)


def _ndarray():
    from .ndarray import NDArray

    return NDArray


def _fill_random(device: BackendDevice, draw, shape: tuple, out) -> None:
    """out <- one numpy draw of `shape` (np.random.rand or randn), cast to out's dtype."""
    device.call("from_numpy", draw(*shape), out)  # inside a host call: never recorded


# --- the registry ---------------------------------------------------------------------------

# name -> a function returning (kernel module or None, why it is unavailable)
_LOADERS: Dict[str, Callable[[], tuple]] = {}
_DEVICES: Dict[str, BackendDevice] = {}


def register_device(name: str, loader: Callable[[], tuple]) -> None:
    """Make device `name` available: `loader()` returns (kernel module, "") or (None, reason).

    The loader runs on first use, so a device whose libraries are heavy or missing costs
    nothing until asked for. Registering a name twice replaces the earlier loader.
    """
    _LOADERS[name] = loader
    _DEVICES.pop(name, None)


def get_device(name: str) -> BackendDevice:
    """The registered device called `name`; ValueError naming the known ones otherwise."""
    found = _DEVICES.get(name)
    if found is not None:
        return found
    if name not in _LOADERS:
        raise ValueError(f"unknown device {name!r}; known devices: {', '.join(_LOADERS)}")
    mod, why = _LOADERS[name]()
    found = _DEVICES[name] = BackendDevice(name, mod, why)
    return found


def registered_devices() -> List[str]:
    """Names of every registered device, in registration order."""
    return list(_LOADERS)


def all_devices() -> List[BackendDevice]:
    """Every registered device, available or not (the course's order: cpu, cuda, cpu_numpy)."""
    return [get_device(name) for name in _LOADERS]


def _load_cpu():
    from . import kernels_cpu

    return kernels_cpu, ""


def _load_cpu_numpy():
    from . import kernels_cpu_numpy

    return kernels_cpu_numpy, ""


def _load_cuda():
    try:
        from . import kernels_cuda  # noqa: PLC0415
    except ImportError as err:
        return None, f"the cuda device needs numba-cuda ({install_hint('cuda')}): {err}"
    why = kernels_cuda.unavailable_reason()
    return (None, why) if why else (kernels_cuda, "")


register_device("cpu", _load_cpu)
register_device("cuda", _load_cuda)
register_device("cpu_numpy", _load_cpu_numpy)


def cpu() -> BackendDevice:
    """The fast host device."""
    return get_device("cpu")


def cpu_numpy() -> BackendDevice:
    """The reference host device (plain numpy kernels)."""
    return get_device("cpu_numpy")


def cuda() -> BackendDevice:
    """The GPU device; `enabled()` is False (and `why_unavailable` says why) when it cannot run here.
    `ndl.cuda.is_available()` and `ndl.cuda.device_count()` answer as torch.cuda's do."""
    return get_device("cuda")


def _cuda_is_available() -> bool:
    """Whether the cuda device can run here (PyTorch's torch.cuda.is_available)."""
    return cuda().enabled()


def _cuda_device_count() -> int:
    """1 where the cuda device can run, else 0 (needle uses one GPU; torch.cuda.device_count)."""
    return int(_cuda_is_available())


# torch.cuda.is_available() is how PyTorch code picks its device: the course's function ndl.cuda
# answers it too
cuda.is_available = _cuda_is_available  # type: ignore[attr-defined]
cuda.device_count = _cuda_device_count  # type: ignore[attr-defined]


def default_device() -> BackendDevice:
    return cpu()


def check_enabled(dev: Optional[BackendDevice]) -> None:
    """TypeError for a non-device, RuntimeError naming what is missing for a disabled one."""
    if not isinstance(dev, BackendDevice):
        raise TypeError(f"expected a needle device, got {dev!r}")
    if not dev.enabled():
        raise RuntimeError(f"device {dev} is not available here: {dev.why_unavailable or 'no kernels'}")
