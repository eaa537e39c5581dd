"""The cuda device where it cannot run (this suite runs without a GPU; tests/cuda runs its
kernels in the simulator): disabled, saying what is missing, and refusing to be used."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle.backend_ndarray import NDArray

ROOT = Path(__file__).resolve().parents[1]

needs_no_gpu = pytest.mark.skipif(ndl.cuda().enabled(), reason="a CUDA GPU (or the simulator) is available here")


def _cuda_state(prelude: str = "") -> list:
    code = prelude + "import needle as ndl; d = ndl.cuda(); print(d.enabled()); print(d.why_unavailable)"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "python"), "NUMBA_ENABLE_CUDASIM": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@needs_no_gpu
def test_cuda_is_disabled_and_names_the_missing_piece():
    cuda = ndl.cuda()
    assert not cuda.enabled() and str(cuda) == "cuda()"
    assert cuda.why_unavailable in ("no CUDA GPU found (numba.cuda.is_available() is False)",
                                    "numba-cuda is not installed (pip install -e \".[cuda]\")")


def test_without_numba_cuda_the_reason_says_how_to_install_it():
    enabled, why = _cuda_state("import sys; sys.modules['numba_cuda'] = None; ")
    assert enabled == "False"
    assert why == "numba-cuda is not installed (pip install -e \".[cuda]\")"


@needs_no_gpu
def test_using_a_disabled_cuda_raises_a_clear_error():
    why = ndl.cuda().why_unavailable
    with pytest.raises(RuntimeError, match=r"device cuda\(\) is not available here: " + why.split(" (")[0]):
        ndl.Tensor([1.0], device=ndl.cuda())
    with pytest.raises(RuntimeError, match="not available here"):
        ndl.Tensor([1.0]).to(ndl.cuda())
    with pytest.raises(RuntimeError, match="not available here"):
        NDArray([1.0]).to(ndl.cuda())


def test_tensor_to_moves_between_host_devices_as_a_new_leaf():
    x = ndl.Tensor(np.arange(6.0).reshape(2, 3), device=ndl.cpu(), dtype="float64")
    y = (x * 3).to(ndl.cpu_numpy())
    assert y.device == ndl.cpu_numpy() and y.dtype == "float64" and y.requires_grad and y.is_leaf()
    np.testing.assert_array_equal(y.numpy(), 3 * np.arange(6.0).reshape(2, 3))
    assert x.to(ndl.cpu()) is x
    ids = ndl.Tensor(np.array([2, 0]), dtype="int64").to(ndl.cpu_numpy())
    assert ids.dtype == "int64" and not ids.requires_grad


def test_host_arrays_have_no_cuda_array_interface_but_export_dlpack():
    x = ndl.Tensor(np.arange(4.0, dtype=np.float32))
    assert not hasattr(x, "__cuda_array_interface__")
    assert not hasattr(x.realize_cached_data(), "__cuda_array_interface__")
    np.testing.assert_array_equal(np.from_dlpack(x), np.arange(4.0))
