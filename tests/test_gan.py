"""The GAN examples (the GAN lectures): the 2-D Gaussian is learned; the scripts run and draw."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gan = _load("gan")


def _distance(samples):
    """(|mean error|, relative Frobenius error of the covariance) against the target."""
    target = gan.target_covariance()
    mean_error = np.linalg.norm(samples.mean(axis=0) - gan.TARGET_MEAN)
    cov_error = np.linalg.norm(np.cov(samples, rowvar=False) - target) / np.linalg.norm(target)
    return mean_error, cov_error


def test_the_generator_learns_the_target_gaussian():
    """After 1,500 alternating updates the generated mean is within 0.35 of the target (whose
    spread is ~2) and the covariance within 25% (Frobenius, relative); an untrained generator
    is several times farther on both."""
    rng = np.random.RandomState(5)
    untrained = gan.GAN().sample(4000, rng)
    start_mean, start_cov = _distance(untrained)
    trained = gan.train(steps=1500, batch=128, seed=0, lr=0.01, hidden=20).sample(4000, rng)
    mean_error, cov_error = _distance(trained)
    assert mean_error < 0.35 and cov_error < 0.25, (mean_error, cov_error)
    assert mean_error < start_mean / 3 and cov_error < start_cov / 2, (start_mean, start_cov)


def test_the_real_samples_have_the_stated_distribution():
    real = gan.sample_real(200_000, np.random.RandomState(0))
    np.testing.assert_allclose(real.mean(axis=0), gan.TARGET_MEAN, atol=0.02)
    np.testing.assert_allclose(np.cov(real, rowvar=False), gan.target_covariance(), rtol=0.02, atol=0.02)


def test_bce_with_logits_matches_the_formula():
    import needle as ndl

    t = np.array([[-30.0], [-1.0], [0.0], [2.0], [40.0]], dtype=np.float32)
    for y in (0.0, 1.0):
        x = t[:, 0].astype(np.float64)  # the formula in float64: numpy's float32 log and exp round per CPU
        expected = np.mean(np.logaddexp(0, x) - y * x)
        got = float(gan.bce_with_logits(ndl.Tensor(t), y).numpy())
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_gaussian_script_prints_and_draws(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "gan.py"), "--steps", "50", "--every", "25",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "step     0" in out.stdout and "generated mean" in out.stdout
    png = (tmp_path / "gan_gaussian.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_mnist_script_runs_on_the_shipped_sample(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "gan_mnist.py"), "--epochs", "1", "--batch", "100",
                          "--hidden", "32", "--data", str(ROOT / "tests" / "data" / "mnist"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "500 images" in out.stdout and "epoch   1" in out.stdout
    assert (tmp_path / "gan_mnist.png").read_bytes()[:4] == b"\x89PNG"


def test_help_documents_the_options():
    for script, options in (("gan.py", ["--steps", "--batch", "--lr", "--out"]),
                            ("gan_mnist.py", ["--data", "--epochs", "--out"])):
        out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and all(o in out.stdout for o in options)
