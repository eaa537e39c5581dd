"""Test-suite set-up shared by every test module."""
import os

import numpy as np
import pytest

# tests/np_mode runs in its own process with NEEDLE_BACKEND=np (see test_numpy_mode.py)
collect_ignore_glob = [] if os.environ.get("NEEDLE_BACKEND") == "np" else ["np_mode/*"]


@pytest.fixture(autouse=True)
def _seed_numpy():
    """Every test starts from the same global numpy RNG state."""
    np.random.seed(0)
