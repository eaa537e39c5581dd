"""The data samples in tests/data are what tests/data/README.md says they are.

Without NEEDLE_DATA this checks the samples on their own (sizes, formats, coverage);
with it, that each sample is exactly the documented cut of the full file.
"""
import gzip

import numpy as np

from testenv import SAMPLE_DIR, SAMPLE_OVERRIDES, DataSource, full_data_dir

SAMPLE = DataSource("sample", SAMPLE_DIR)


def idx(path):
    """(magic, dims, payload bytes) of a gzipped IDX file."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(raw[3])]
    return magic, dims, raw[4 + 4 * len(dims):]


def test_mnist_sample_is_500_test_images_and_all_training_labels():
    magic, dims, pixels = idx(SAMPLE.mnist_images)
    assert magic == 2051 and dims == [500, 28, 28] and len(pixels) == 500 * 28 * 28
    magic, dims, labels = idx(SAMPLE.mnist_labels)
    assert magic == 2049 and dims == [500] and len(labels) == 500
    assert set(labels) == set(range(10))
    magic, dims, train = idx(SAMPLE.mnist_train_labels)
    assert magic == 2049 and dims == [60000] and len(train) == 60000
    # the published class counts of MNIST's training set
    counts = np.bincount(np.frombuffer(train, np.uint8), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_names_sample_has_every_letter():
    lines = SAMPLE.names.read_text(encoding="utf-8").splitlines()
    assert 3000 < len(lines) < 5000
    assert all(line.isalpha() and line.islower() for line in lines)
    assert set("".join(lines)) == set("abcdefghijklmnopqrstuvwxyz")


def test_shakespeare_sample_is_the_text_the_package_ships():
    assert SAMPLE.shakespeare == SAMPLE_OVERRIDES["tinyshakespeare/input.txt"]
    assert not (SAMPLE_DIR / "tinyshakespeare").exists()  # one copy only
    lines = SAMPLE.shakespeare.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2000 and lines[0] == "First Citizen:"


# defined only with NEEDLE_DATA set: without the full files there is nothing to compare (and
# nothing is skipped for want of data)
if full_data_dir() is not None:
    def test_samples_are_the_documented_cuts_of_the_full_files():
        _check_cuts(DataSource("full", full_data_dir()))


def _check_cuts(full):
    for image_or_label, item in (("mnist_images", 28 * 28), ("mnist_labels", 1)):
        magic, dims, payload = idx(getattr(SAMPLE, image_or_label))
        full_magic, full_dims, full_payload = idx(getattr(full, image_or_label))
        assert (magic, dims[1:]) == (full_magic, full_dims[1:]) and full_dims[0] == 10000
        assert payload == full_payload[: dims[0] * item]
    assert SAMPLE.mnist_train_labels.read_bytes() == full.mnist_train_labels.read_bytes()
    assert SAMPLE.names.read_text(encoding="utf-8").splitlines() == \
        full.names.read_text(encoding="utf-8").splitlines()[::8]
    sample_text = SAMPLE.shakespeare.read_text(encoding="utf-8")
    assert full.shakespeare.read_text(encoding="utf-8").startswith(sample_text)
