"""Runs the cuda device's suite (tests/cuda) in a fresh process under numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1), where its kernels run as Python on the CPU, so the single test
command checks the cuda device on machines without a GPU."""
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


def test_cuda_suite_passes_in_the_simulator():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/cuda", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env=_env(NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True, timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]  # (pytest returns 5, not 0, when it collects nothing)
    assert " passed" in output and "failed" not in output, output[-5000:]


def test_cuda_folder_is_skipped_without_the_simulator_or_a_gpu():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/cuda", "-p", "no:cacheprovider", "--collect-only"],
        cwd=REPO_ROOT, env=_env(NUMBA_ENABLE_CUDASIM="0", NEEDLE_TEST_CUDA="0"), capture_output=True, text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 5 and "no tests collected" in output, output  # 5: pytest collected nothing
