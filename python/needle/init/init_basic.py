"""Basic tensor factories. `device=None` means the selected backend's cpu()."""
from .. import autograd
from ..backend_selection import array_api, as_device, cpu

__all__ = ["rand", "randn", "constant", "ones", "zeros", "randb", "one_hot", "zeros_like", "ones_like", "arange"]


def _dims(shape: tuple) -> tuple:
    """The course's zeros(2, 3) and PyTorch's zeros((2, 3)) alike."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _device(device):
    """A device given as a device or a name ("cpu", PyTorch's "cuda:0"); None is cpu()."""
    return cpu() if device is None else as_device(device)


def _tensor(array, device, dtype, requires_grad):
    if not requires_grad:  # a factory's own array needs no second copy
        return autograd.Tensor.make_const(array_api.astype(array, dtype))
    return autograd.Tensor(array, device=device, dtype=dtype, requires_grad=requires_grad)


def rand(*shape, low=0.0, high=1.0, device=None, dtype="float32", requires_grad=False):
    """Uniform in [low, high): one np.random.rand(*shape)."""
    device = _device(device)
    array = device.rand(*_dims(shape)) * (high - low) + low
    return _tensor(array, device, dtype, requires_grad)


def randn(*shape, mean=0.0, std=1.0, device=None, dtype="float32", requires_grad=False):
    """Normal(mean, std**2): one np.random.randn(*shape)."""
    device = _device(device)
    array = device.randn(*_dims(shape)) * std + mean
    return _tensor(array, device, dtype, requires_grad)


def constant(*shape, c=1.0, device=None, dtype="float32", requires_grad=False):
    """Every element equal to c."""
    device = _device(device)
    array = device.full(_dims(shape), c, dtype=dtype)
    return _tensor(array, device, dtype, requires_grad)


def ones(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(*shape, p=0.5, device=None, dtype="bool", requires_grad=False):
    """Bernoulli(p) mask: one np.random.rand(*shape), True where u <= p (bool unless dtype says)."""
    device = _device(device)
    array = array_api.less_equal(device.rand(*_dims(shape)), p)
    return _tensor(array, device, dtype, requires_grad)


def one_hot(n, i, device=None, dtype="float32", requires_grad=False):
    """Rows of the n x n identity picked by the class ids in tensor i: shape i.shape + (n,).

    Built on the device from i's data (int64, or floats holding whole numbers): no
    host round trip and no n x n identity. ValueError names an id outside [0, n).
    """
    device = _device(device)
    if isinstance(i, autograd.Tensor) and not requires_grad and i.device == device:
        from .. import ops  # (an op, so that an export's capture records it: ONNX OneHot)

        return ops.one_hot(i, n, dtype=dtype)
    ids = i.realize_cached_data() if isinstance(i, autograd.Tensor) else i
    return _tensor(array_api.one_hot(n, ids, dtype=dtype, device=device), device, dtype, requires_grad)


def zeros_like(array, *, device=None, requires_grad=False):
    device = array.device if device is None else as_device(device)
    return zeros(*array.shape, dtype=array.dtype, device=device, requires_grad=requires_grad)


def ones_like(array, *, device=None, requires_grad=False):
    device = array.device if device is None else as_device(device)
    return ones(*array.shape, dtype=array.dtype, device=device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, *, device=None, dtype="int64", requires_grad=False):
    """start, start + step, ... up to stop (exclusive), like numpy/PyTorch; int64 by default."""
    device = _device(device)
    return _tensor(array_api.arange(start, stop, step, dtype=dtype, device=device), device, dtype, requires_grad)
