"""The tutorials (tutorials/*.py, jupytext percent scripts) run top to bottom in their small
mode (NEEDLE_TUTORIAL_SMALL=1) from a foreign working directory, on the data shipped inside
the package: each ends with its own sanity asserts (loss went down, accuracy above chance),
so a broken tutorial exits non-zero. They also convert to valid notebooks with jupytext.
The shipped data is checked here too: the MNIST test split as it was published, found
through needle.data.datasets.shipped_path."""
import ast
import fnmatch
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest

import needle
from needle.data.datasets import MNISTDataset, parse_mnist, shipped_files, shipped_path
from testenv import full_data_dir

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NAMES = ["01_autodiff_from_scratch.py", "02_softmax_regression.py", "03_mlp_mnist.py", "04_cnn.py",
         "05_lstm_language_model.py", "06_gpt.py"]


def test_the_tutorials_are_the_listed_ones():
    """The docs link to these names: a renamed or added tutorial must be listed (here and in the README)."""
    assert sorted(p.name for p in TUTORIALS.glob("*.py")) == NAMES
    readme = (TUTORIALS / "README.md").read_text()
    for name in NAMES:
        assert name in readme, name


@pytest.mark.parametrize("name", NAMES)
def test_tutorial_runs_in_small_mode(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), NEEDLE_TUTORIAL_SMALL="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(TUTORIALS / name)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    # the last line of each tutorial is printed after its sanity asserts passed
    assert out.stdout.strip().splitlines()[-1].startswith(f"tutorial {name[:2]} done"), out.stdout[-500:]
    assert list(tmp_path.iterdir()) == []  # a tutorial writes nothing into the working directory


@pytest.mark.parametrize("name", NAMES)
def test_tutorial_converts_to_a_notebook(name):
    nb = jupytext.read(TUTORIALS / name, fmt="py:percent")
    notebook = nbformat.reads(jupytext.writes(nb, fmt="ipynb"), as_version=4)
    nbformat.validate(notebook)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith(f"# {int(name[:2])}. ")
    assert kinds.count("markdown") >= 5 and kinds.count("code") >= 5, kinds
    # the cells hold the whole script: no line is lost or left as a cell marker
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "# %%" not in code
    script_lines = [line for line in (TUTORIALS / name).read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert [line for line in code.splitlines() if line.strip() and not line.startswith("#")] == script_lines


# --- the data shipped inside the package --------------------------------------------------

def test_shipped_path_finds_the_files_inside_the_package():
    data_dir = Path(needle.__file__).parent / "data"
    assert shipped_files() == ["mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
                               "text/tinyshakespeare.txt", "text/tinyshakespeare_full.txt"]
    for name in shipped_files():
        path = Path(shipped_path(name))
        assert path.is_absolute() and path.is_file()
        assert path == data_dir.joinpath(*name.split("/"))


@pytest.mark.parametrize("bad, error, words", [
    ("mnist/train-images-idx3-ubyte.gz", FileNotFoundError, ["train-images-idx3-ubyte.gz", "mnist/t10k-images"]),
    ("mnist", FileNotFoundError, ["'mnist'"]),
    ("../autograd.py", ValueError, ["'../autograd.py'", ".."]),
    ("/etc/hostname", ValueError, ["'/etc/hostname'", "relative"]),
    ("mnist\\t10k-labels-idx1-ubyte.gz", ValueError, ["'/' separators"]),
    ("", ValueError, ["''"]),
    (Path("mnist/t10k-labels-idx1-ubyte.gz"), TypeError, ["PosixPath", "str"]),
    (None, TypeError, ["NoneType"]),
])
def test_shipped_path_refuses_bad_names(bad, error, words):
    with pytest.raises(error) as info:
        shipped_path(bad)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_shipped_mnist_is_the_whole_test_split():
    images = shipped_path("mnist/t10k-images-idx3-ubyte.gz")
    labels = shipped_path("mnist/t10k-labels-idx1-ubyte.gz")
    X, y = parse_mnist(images, labels)
    assert X.shape == (10000, 784) and y.shape == (10000,)
    # facts of the published file: class counts of the test split and its first labels
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # the first 500 are the sample the tests ship (a cut of the same file)
    sample = MNISTDataset(ROOT / "tests" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz",
                          ROOT / "tests" / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(X[:500], sample.X)
    np.testing.assert_array_equal(y[:500], sample.y)


def test_shipped_mnist_equals_the_full_data_folder_when_there_is_one():
    """With NEEDLE_DATA (CI sets it where the project's full data folder sits beside the checkout)
    the shipped files must be those files, unchanged; without it the test checks the gzip
    container is intact instead."""
    full = full_data_dir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shipped = Path(shipped_path(f"mnist/{name}")).read_bytes()
        content = gzip.decompress(shipped)  # raises on a truncated or corrupt file
        assert len(content) in (16 + 10000 * 784, 8 + 10000)
        if full:
            assert shipped == (full / "mnist" / name).read_bytes()


def test_pyproject_ships_the_data_files():
    """Every shipped data file and README matches a package-data glob, so an installed needle has them."""
    # the one line under [tool.setuptools.package-data] (tomllib is Python 3.11+, needle supports 3.10)
    text = (ROOT / "pyproject.toml").read_text()
    line = re.search(r"^\[tool\.setuptools\.package-data\]\s*\n(?:#.*\n)*needle = (\[.*\])$", text, re.M)
    assert line, "pyproject.toml has no one-line needle = [...] under [tool.setuptools.package-data]"
    globs = ast.literal_eval(line.group(1))
    data_dir = Path(needle.__file__).parent / "data"
    wanted = [f"data/{name}" for name in shipped_files()]
    wanted += [p.relative_to(data_dir.parent).as_posix() for p in data_dir.glob("*/README.md")]
    assert "data/mnist/README.md" in wanted and "data/text/README.md" in wanted
    for name in wanted:
        assert any(fnmatch.fnmatch(name, g) for g in globs), (name, globs)
