"""The example scripts refuse bad flags up front: one stderr line naming the flag and the
value, exit status 2, no traceback, and nothing trained. A diverging scalar_train run
stops with one line (exit 1) instead of a traceback from deep inside the math."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(script, *argv, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *map(str, argv)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def assert_refused(out, *names):
    """Exit 2, one stderr line that names every string in `names`, no traceback, no output."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "error:" in lines[0], lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert out.stdout == ""  # refused before any training output
    return lines[0]


BAD_FLAGS = [
    ("gan.py", ["--lr", "nan"], ["--lr", "nan"]),
    ("gan.py", ["--lr", "-1"], ["--lr", "-1"]),
    ("gan.py", ["--lr", "inf"], ["--lr", "inf"]),
    ("gan.py", ["--steps", "0"], ["--steps", "0"]),
    ("gan.py", ["--batch", "1"], ["--batch", "1"]),
    ("gan.py", ["--hidden", "0"], ["--hidden", "0"]),
    ("gan.py", ["--every", "-5"], ["--every", "-5"]),
    ("gan.py", ["--seed", "-1"], ["--seed", "-1"]),
    ("gan_mnist.py", ["--lr", "nan"], ["--lr", "nan"]),
    ("gan_mnist.py", ["--epochs", "0"], ["--epochs", "0"]),
    ("gan_mnist.py", ["--batch", "1"], ["--batch", "1"]),
    ("gan_mnist.py", ["--batch", "1000000"], ["--batch", "1000000"]),
    ("gan_mnist.py", ["--hidden", "-2"], ["--hidden", "-2"]),
    ("toy_classifier.py", ["--hidden", "0,3"], ["--hidden", "0,3"]),
    ("toy_classifier.py", ["--hidden", "a,3"], ["--hidden", "a,3"]),
    ("toy_classifier.py", ["--lr", "-1"], ["--lr", "-1"]),
    ("toy_classifier.py", ["--classes", "1"], ["--classes", "1"]),
    ("toy_classifier.py", ["--batch-size", "0"], ["--batch-size", "0"]),
    ("toy_classifier.py", ["--n", "2"], ["--n", "2"]),
    ("scalar_train.py", ["--lr", "nan"], ["--lr", "nan"]),
    ("scalar_train.py", ["--lr", "0"], ["--lr", "0"]),
    ("scalar_train.py", ["--epochs", "0"], ["--epochs", "0"]),
    ("scalar_train.py", ["--log-every", "-1"], ["--log-every", "-1"]),
    ("scalar_train.py", ["--seed", "-1"], ["--seed", "-1"]),
    ("makemore_backprop.py", ["--batch-size", "1"], ["--batch-size", "1"]),
    ("makemore_backprop.py", ["--steps", "-1"], ["--steps", "-1"]),
    ("makemore_backprop.py", ["--hidden", "0"], ["--hidden", "0"]),
    ("makemore_backprop.py", ["--seed", "-1"], ["--seed", "-1"]),
    ("makemore_backprop.py", ["--names", "/nonexistent/names.txt"], ["--names", "/nonexistent/names.txt"]),
    ("manual_linear.py", ["--B", "0"], ["--B", "0"]),
    ("manual_linear.py", ["--atol", "nan"], ["--atol", "nan"]),
    ("manual_linear.py", ["--rtol", "-1"], ["--rtol", "-1"]),
    ("manual_linear.py", ["--seed", "-1"], ["--seed", "-1"]),
    # argparse's own errors are one line too (no usage block)
    ("gan.py", ["--steps", "ten"], ["--steps", "ten"]),
]


@pytest.mark.parametrize("script, argv, names", BAD_FLAGS, ids=[f"{s}{' '.join(a)}" for s, a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_naming_it(script, argv, names, tmp_path):
    assert_refused(run_example(script, *argv, cwd=tmp_path), *names)
    assert list(tmp_path.iterdir()) == []  # no --out folder made for a refused run


@pytest.mark.parametrize("script", ["gan.py", "gan_mnist.py", "toy_classifier.py"])
def test_out_that_is_a_file_or_under_a_file_is_refused_before_training(script, tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a folder")
    line = assert_refused(run_example(script, "--out", regular), "--out", str(regular))
    assert "not a folder" in line
    under = regular / "sub"
    line = assert_refused(run_example(script, "--out", under), "--out", str(under))
    assert "Not a directory" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_refused(run_example("gan.py", "--out", locked / "gan"), "--out", str(locked / "gan"))
    finally:
        locked.chmod(0o700)


def test_out_dir_problem_really_writes(tmp_path, monkeypatch):
    """The check creates and deletes a file (os.access says yes to root on a read-only mount)."""
    from needle.utils import cli

    assert cli.out_dir_problem(str(tmp_path / "new")) is None
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    assert "Permission denied" in cli.out_dir_problem(str(tmp_path / "new"))


def test_gan_every_zero_never_prints_losses(tmp_path):
    out = run_example("gan.py", "--steps", "2", "--batch", "8", "--every", "0", "--out", tmp_path / "o")
    assert out.returncode == 0, out.stderr
    assert "step" not in out.stdout
    assert (tmp_path / "o" / "gan_gaussian.png").exists()


@pytest.mark.parametrize("lr", ["1e10", "100"])
def test_scalar_train_divergence_is_one_line(lr):
    out = run_example("scalar_train.py", "--lr", lr, "--epochs", "20", "--n", "20")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "diverged at epoch" in lines[0] and "--lr" in lines[0], lines[0]
