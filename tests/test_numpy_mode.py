"""Runs the numpy-mode suite (tests/np_mode) in a fresh process with NEEDLE_BACKEND=np,
and checks how NEEDLE_BACKEND is read at import."""
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(**overrides):
    # a clean child: no variables of the pytest run (or xdist worker) that launched us
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEEDLE_BACKEND"))}
    env.update(overrides)
    return env


def _run(args, **env):
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=_env(**env), capture_output=True, text=True, timeout=600
    )


def test_numpy_mode_suite_passes():
    proc = _run(["-m", "pytest", "tests/np_mode", "-q", "-p", "no:cacheprovider"], NEEDLE_BACKEND="np")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output  # (pytest returns 5, not 0, when it collects nothing)


def test_np_mode_folder_is_skipped_without_the_variable():
    proc = _run(["-m", "pytest", "tests/np_mode", "-q", "-p", "no:cacheprovider", "--collect-only"])
    output = proc.stdout + proc.stderr
    assert "test_np_mode.py" not in output, output


def test_unknown_backend_raises_runtime_error_on_import():
    proc = _run(["-c", "import needle"], NEEDLE_BACKEND="tensorflow")
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr, proc.stderr
    assert "tensorflow" in proc.stderr, proc.stderr


def test_backend_selection_is_read_at_import():
    code = (
        "import numpy, needle as ndl; from needle import backend_ndarray as nd, backend_numpy;"
        "print(ndl.BACKEND, ndl.array_api is backend_numpy, ndl.NDArray is numpy.ndarray, nd.NDArray is not None)"
    )
    default = _run(["-c", code])
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["nd", "False", "False", "True"]
    explicit_nd = _run(["-c", code], NEEDLE_BACKEND="nd")
    assert explicit_nd.stdout.split() == ["nd", "False", "False", "True"], explicit_nd.stderr
    numpy_mode = _run(["-c", code], NEEDLE_BACKEND="np")
    assert numpy_mode.returncode == 0, numpy_mode.stderr
    assert numpy_mode.stdout.split() == ["np", "True", "True", "True"]


def test_numpy_mode_suite_also_runs_on_the_full_data(tmp_path, monkeypatch):
    """NEEDLE_DATA reaches the numpy-mode child, whose data tests then run on both sources."""
    monkeypatch.setenv("NEEDLE_DATA", str(tmp_path))
    proc = _run(["-m", "pytest", "tests/np_mode/test_data_np.py", "-p", "no:cacheprovider", "--collect-only"],
                NEEDLE_BACKEND="np")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "test_np_mode_mnist_loader[sample]" in output and "test_np_mode_mnist_loader[full]" in output, output
