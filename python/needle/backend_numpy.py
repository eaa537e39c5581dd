"""The numpy-mode device (NEEDLE_BACKEND=np): arrays are plain numpy arrays.

Dtypes are preserved here (float64 stays float64), which is what the course's
finite-difference tests rely on.
"""
import numpy as np

__all__ = ["Device", "CPUDevice", "cpu", "default_device", "all_devices"]


class Device:
    """Base class for numpy-mode devices."""


class CPUDevice(Device):
    """The one numpy-mode device: host memory."""

    name = "cpu"

    def __repr__(self) -> str:
        return "needle.cpu()"

    def __hash__(self) -> int:
        return self.__repr__().__hash__()

    def __eq__(self, other) -> bool:
        return isinstance(other, CPUDevice)

    def enabled(self) -> bool:
        return True

    def zeros(self, *shape, dtype="float32"):
        return np.zeros(shape, dtype=dtype)

    def ones(self, *shape, dtype="float32"):
        return np.ones(shape, dtype=dtype)

    def randn(self, *shape):
        return np.random.randn(*shape)

    def rand(self, *shape):
        return np.random.rand(*shape)

    def one_hot(self, n, i, dtype="float32"):
        idx = np.asarray(i)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
            raise ValueError(f"one_hot: class index {bad} is out of range for {n} classes")
        return np.eye(n, dtype=dtype)[idx.astype(np.int64)]

    def empty(self, shape, dtype="float32"):
        return np.empty(shape, dtype=dtype)

    def full(self, shape, fill_value, dtype="float32"):
        return np.full(shape, fill_value, dtype=dtype)


_CPU = CPUDevice()


def cpu() -> CPUDevice:
    return _CPU


def default_device() -> CPUDevice:
    return _CPU


def all_devices() -> list:
    return [_CPU]
