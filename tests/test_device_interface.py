"""The device interface written in code, the registry of devices by name, and the array API
that both array layers (NDArray and numpy mode) provide."""
import inspect
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import array_interface, backend_numpy
from needle import backend_ndarray as nd
from needle.backend_ndarray import device as device_module
from needle.backend_ndarray import interface

ROOT = Path(__file__).resolve().parents[1]


def _kernel_modules():
    return [d.mod for d in nd.all_devices() if d.enabled()]


def test_the_interface_lists_every_kernel_family():
    names = set(interface.REQUIRED_KERNELS)
    for family in ("Array", "to_numpy", "from_numpy", "fill", "compact", "ewise_setitem", "scalar_setitem",
                   "ewise_add", "scalar_add", "ewise_lt", "scalar_ge", "ewise_exp", "ewise_where", "reduce_sum",
                   "reduce_argmax", "matmul", "take_rows", "index_add_rows", "one_hot_rows"):
        assert family in names
    assert len(names) == len(interface.REQUIRED_KERNELS)  # no duplicates


@pytest.mark.parametrize("mod", _kernel_modules(), ids=lambda m: m.__device_name__)
def test_every_device_module_provides_every_kernel(mod):
    assert interface.missing_kernels(mod) == []
    for name in interface.REQUIRED_KERNELS:
        implemented = inspect.signature(getattr(mod, name))
        assert tuple(implemented.parameters) == interface.kernel_parameters(name), name


def test_a_module_missing_a_kernel_is_reported():
    partial = types.ModuleType("partial_device")
    partial.__device_name__, partial.__tile_size__ = "partial", 8
    partial.Array = object
    missing = interface.missing_kernels(partial)
    assert "ewise_add" in missing and "matmul" in missing and "Array" not in missing


@pytest.mark.parametrize("layer", [nd, backend_numpy], ids=["backend_ndarray", "backend_numpy"])
def test_both_array_layers_provide_every_array_function(layer):
    assert array_interface.missing_functions(layer) == []


def test_registry_lists_and_finds_devices_by_name():
    assert nd.registered_devices()[:3] == ["cpu", "cuda", "cpu_numpy"]
    assert [str(d) for d in ndl.all_devices()] == ["cpu()", "cuda()", "cpu_numpy()"]
    assert nd.get_device("cpu") is ndl.cpu() and nd.get_device("cpu_numpy") == ndl.cpu_numpy()
    with pytest.raises(ValueError, match="unknown device 'tpu'.*cpu, cuda, cpu_numpy"):
        nd.get_device("tpu")


def test_a_disabled_device_names_what_is_missing():
    cuda = ndl.cuda()
    if cuda.enabled():
        pytest.skip("a CUDA device is available here")
    assert str(cuda) == "cuda()" and cuda.why_unavailable
    with pytest.raises(RuntimeError, match="cuda.*not available"):
        ndl.Tensor([1.0], device=cuda)


def test_a_new_device_is_one_module_and_one_registration(monkeypatch):
    """Register a device whose kernels are the reference ones under another name: tensors,
    autograd and the CLI's choices see it, without any other change."""
    monkeypatch.setattr(device_module, "_LOADERS", dict(device_module._LOADERS))
    monkeypatch.setattr(device_module, "_DEVICES", dict(device_module._DEVICES))
    from needle.backend_ndarray import kernels_cpu_numpy

    nd.register_device("twin", lambda: (kernels_cpu_numpy, ""))
    twin = nd.get_device("twin")
    assert "twin" in nd.registered_devices() and twin in ndl.all_devices() and twin.enabled()
    a = np.random.randn(3, 4)
    x = ndl.Tensor(a, device=twin, dtype="float64")
    y = (x.relu() * 2).sum()
    y.backward()
    assert x.device == twin and x.grad.device == twin
    np.testing.assert_allclose(y.numpy(), (np.maximum(a, 0) * 2).sum())
    np.testing.assert_allclose(x.grad.numpy(), (a > 0) * 2.0)
    from needle.train import cli

    choices = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]
    assert "twin" in next(a for a in choices._actions if a.dest == "device").choices


def test_numpy_mode_has_the_same_names(tmp_path):
    code = ("import needle as ndl; print(ndl.cuda().enabled(), ndl.cpu_numpy().enabled(), "
            "[str(d) for d in ndl.all_devices()], ndl.registered_devices())")
    env = {"NEEDLE_BACKEND": "np", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT / "python")}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "['needle.cpu()']", "['cpu']"]


def test_nothing_above_the_array_layer_branches_on_the_backend_or_touches_numpy():
    """autograd, ops, nn, optim and init reach data only through array_api."""
    import re

    package = ROOT / "python" / "needle"
    numpy_import = re.compile(r"^\s*(import numpy|from numpy)", re.M)
    paths = [p for folder in ("ops", "nn", "init", "optim") for p in (package / folder).glob("*.py")]
    for path in paths + [package / "autograd.py"]:
        text = path.read_text()
        assert "BACKEND" not in text, path
        assert not numpy_import.search(text), path
