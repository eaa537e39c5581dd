"""What the machine running the tests provides: real data, and graphviz's `dot`.

Real data comes from one of two sources, with the same layout:

* "sample": small cuts of the real files, shipped in tests/data (see its README.md),
  so that a fresh clone runs every test with nothing beside it;
* "full": the complete files, in the folder named by the environment variable
  NEEDLE_DATA (``mnist/t10k-images-idx3-ubyte.gz``, ``mnist/t10k-labels-idx1-ubyte.gz``,
  ``mnist/train-labels-idx1-ubyte.gz``, ``names/names.txt``, ``tinyshakespeare/input.txt``).

Every data test runs on the sample; when NEEDLE_DATA is set it runs on the full files too
(the `data` fixture of conftest.py is parametrized over `sources()`).
"""
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "data"
ENV = "NEEDLE_DATA"

# The sample of tiny shakespeare is the text the package already ships (the lm recipe's
# default), rather than a second copy of the same lines under tests/data.
SAMPLE_OVERRIDES = {"tinyshakespeare/input.txt": ROOT / "python" / "needle" / "data" / "text" / "tinyshakespeare.txt"}

requires_dot = pytest.mark.skipif(shutil.which("dot") is None,
                                  reason="graphviz's dot is not installed (a platform limit; CI installs it)")


def full_data_dir():
    """The folder NEEDLE_DATA names (absolute), or None when it is unset or empty."""
    value = os.environ.get(ENV, "")
    return Path(value).resolve() if value else None


class DataSource:
    """The real data files of one source; asking for a file that is not there fails the test."""

    def __init__(self, name: str, root: Path):
        self.name, self.root = name, root

    def __repr__(self):
        return f"DataSource({self.name!r}, {str(self.root)!r})"

    def file(self, relative: str) -> Path:
        path = SAMPLE_OVERRIDES.get(relative, self.root / relative) if self.name == "sample" else self.root / relative
        if not path.is_file():
            if self.name == "full":
                pytest.fail(f"{path} is missing: {ENV}={self.root} must hold mnist/*-ubyte.gz, names/names.txt "
                            "and tinyshakespeare/input.txt (see tests/data/README.md)", pytrace=False)
            pytest.fail(f"the shipped test data sample {path} is missing (see tests/data/README.md)", pytrace=False)
        return path

    @property
    def mnist_images(self) -> Path:
        """MNIST test-split images (IDX, gzip): 10,000 in the full file, the first 500 in the sample."""
        return self.file("mnist/t10k-images-idx3-ubyte.gz")

    @property
    def mnist_labels(self) -> Path:
        return self.file("mnist/t10k-labels-idx1-ubyte.gz")

    @property
    def mnist_train_labels(self) -> Path:
        """All 60,000 MNIST training labels, in both sources."""
        return self.file("mnist/train-labels-idx1-ubyte.gz")

    @property
    def names(self) -> Path:
        return self.file("names/names.txt")

    @property
    def shakespeare(self) -> Path:
        return self.file("tinyshakespeare/input.txt")


def sources() -> list:
    """The sample, then the full files when NEEDLE_DATA is set."""
    found = [DataSource("sample", SAMPLE_DIR)]
    full = full_data_dir()
    if full is not None:
        found.append(DataSource("full", full))
    return found
