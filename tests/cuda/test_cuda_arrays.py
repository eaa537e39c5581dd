"""Arrays and tensors on cuda: moving data between devices, zero-copy views for other
libraries (CUDA Array Interface, DLPack), and data staying on the device between ops."""
import numpy as np
import pytest

import needle as ndl
from needle import nn, optim
from needle.backend_ndarray import NDArray
from needle.backend_ndarray import kernels_cuda as GPU

CPU, CUDA = ndl.cpu(), ndl.cuda()


def test_the_device_is_named_and_enabled():
    assert str(CUDA) == "cuda()" and CUDA.enabled() and CUDA.why_unavailable == ""
    assert CUDA in ndl.all_devices() and CUDA.__tile_size__ == 4 and CUDA.__device_name__ == "cuda"


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_ndarray_to_moves_data_both_ways(dtype):
    host = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    x = NDArray(host, device=CPU, dtype=dtype)
    on_gpu = x.to(CUDA)
    assert on_gpu.device == CUDA and on_gpu.dtype == dtype and on_gpu.to(CUDA) is on_gpu
    back = on_gpu.permute((1, 0)).to(CPU)
    assert back.device == CPU and back.dtype == dtype
    np.testing.assert_array_equal(back.numpy(), host.T)


def test_tensor_to_gives_a_new_leaf_with_the_same_dtype_and_requires_grad():
    x = ndl.Tensor(np.arange(6.0).reshape(2, 3), device=CPU, dtype="float64", requires_grad=True)
    y = (x * 2).to(CUDA)
    assert y.device == CUDA and y.dtype == "float64" and y.requires_grad and y.is_leaf()
    assert y.to(CUDA) is y
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), 4 * np.arange(6.0).reshape(2, 3))
    labels = ndl.Tensor(np.array([1, 0]), device=CUDA, dtype="int64").to(CPU)
    assert labels.dtype == "int64" and not labels.requires_grad and labels.device == CPU
    with pytest.raises(ValueError, match="different devices"):
        x + y


def test_cuda_array_interface_describes_views_of_the_same_memory():
    x = ndl.Tensor(np.arange(24, dtype="float32").reshape(2, 3, 4), device=CUDA)
    data = x.realize_cached_data()
    whole = x.__cuda_array_interface__
    assert whole["shape"] == (2, 3, 4) and whole["strides"] is None and whole["typestr"] == "<f4"
    assert whole["data"][0] == data._handle.ptr() and whole["version"] == 3
    view = data.permute((2, 0, 1))[1:3]
    described = view.__cuda_array_interface__
    assert described["shape"] == (2, 2, 3) and described["strides"] == (4, 48, 16)
    assert described["data"][0] == data._handle.ptr() + 4 and view._handle.ptr() == data._handle.ptr()
    assert not hasattr(ndl.Tensor([1.0], device=CPU), "__cuda_array_interface__")


def test_dlpack_export_names_its_alternative_without_cupy():
    x = ndl.Tensor(np.ones((2, 2), "float32"), device=CUDA)
    assert x.__dlpack_device__() == (2, 0)  # kDLCUDA, device 0
    assert GPU._cupy() is None  # the simulator has no CuPy; with CuPy the export goes through it
    with pytest.raises(TypeError, match="needs CuPy.*__cuda_array_interface__.*torch.as_tensor"):
        x.__dlpack__()


def _count_transfers(monkeypatch):
    """Counts every copy between host and device from now on."""
    counts = {"to host": 0, "to device": 0}
    array_type = type(GPU.Array(1).array)
    for method, key in (("copy_to_host", "to host"), ("copy_to_device", "to device")):
        original = getattr(array_type, method)

        def counted(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, method, counted)
    return counts


def test_a_training_step_keeps_its_data_on_the_device(monkeypatch):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8, device=CUDA), nn.ReLU(), nn.Linear(8, 2, device=CUDA))
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = ndl.Tensor(np.random.randn(5, 4), device=CUDA)
    y = ndl.Tensor(np.random.randn(5, 2), device=CUDA)
    counts = _count_transfers(monkeypatch)
    for _ in range(2):
        opt.reset_grad()
        loss = ((model(x) - y) ** 2).sum() / 5
        loss.backward()
        opt.step()
    assert counts == {"to host": 0, "to device": 0}
    loss.numpy()
    assert counts["to host"] == 1  # .numpy() is the transfer


@pytest.mark.parametrize("case", ["heads", "transposed-a", "broadcast-batch"])
def test_batched_matmul_reads_views_of_any_batch_layout(case):
    """Attention's head views (batch axes no one stride steps through: gathered first), a
    transposed batch (read in place) and a batch stride of 0 give numpy's products."""
    r = np.random.RandomState(4)
    x, y = r.randn(4, 6, 15).astype(np.float32), r.randn(4, 6, 15).astype(np.float32)
    a, b = NDArray(x, device=CUDA), NDArray(y, device=CUDA)
    heads = (4, 6, 3, 5)
    if case == "heads":
        a, b = a.reshape(heads).permute((0, 2, 1, 3)), b.reshape(heads).permute((0, 2, 3, 1))
        x, y = x.reshape(heads).transpose(0, 2, 1, 3), y.reshape(heads).transpose(0, 2, 3, 1)
    elif case == "transposed-a":
        a, b = a.permute((0, 2, 1)), b
        x = x.transpose(0, 2, 1)
    else:
        w = r.randn(5, 7).astype(np.float32)
        a, b = a.reshape(heads).permute((0, 2, 1, 3)), NDArray(w, device=CUDA).broadcast_to((4, 3, 5, 7))
        x, y = x.reshape(heads).transpose(0, 2, 1, 3), np.broadcast_to(w, (4, 3, 5, 7))
    np.testing.assert_allclose((a @ b).numpy(), np.matmul(x, y), rtol=1e-5, atol=1e-5)
