"""The NDArray layer: strided arrays over device buffers (cpu, cpu_numpy, cuda)."""
from .ndarray import *  # noqa: F401,F403
from .ndarray import BackendDevice, NDArray  # noqa: F401
