"""Test-suite set-up shared by every test module."""
import os

import numpy as np
import pytest

import testenv

# tests/np_mode runs in its own process with NEEDLE_BACKEND=np (see test_numpy_mode.py)
collect_ignore_glob = [] if os.environ.get("NEEDLE_BACKEND") == "np" else ["np_mode/*"]
# tests/cuda runs where CUDA kernels can: under numba's simulator (test_cuda_simulated.py starts
# it so, NUMBA_ENABLE_CUDASIM=1) or on a GPU when asked (NEEDLE_TEST_CUDA=1)
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("NEEDLE_TEST_CUDA") != "1":
    collect_ignore_glob.append("cuda")  # the folder itself: its conftest needs the device

# child processes (the numpy-mode suite, examples) run in other folders: a relative
# NEEDLE_DATA must name the same folder there
if testenv.full_data_dir() is not None:
    os.environ[testenv.ENV] = str(testenv.full_data_dir())


@pytest.fixture(autouse=True)
def _seed_numpy():
    """Every test starts from the same global numpy RNG state."""
    np.random.seed(0)


@pytest.fixture(scope="session", params=testenv.sources(), ids=lambda source: source.name)
def data(request) -> testenv.DataSource:
    """Real data files: the samples in tests/data, and the full files under $NEEDLE_DATA when it is set."""
    return request.param
