"""MNIST-format (IDX, usually gzipped) image classification datasets.

Works for MNIST and Fashion-MNIST: images magic 2051 (big-endian header
``magic, count, rows, cols``), labels magic 2049 (``magic, count``), unsigned
byte data.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from typing import List, Optional

import numpy as np

from ..data_basic import Dataset
from ._files import check_file

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """The file's content, gunzipped when it is a gzip file (plain IDX files are accepted too)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path!r} is not a valid gzip file (truncated or corrupt): {e}") from None


def read_idx(path, magic: int, what: str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with the given magic number.

    Returns a uint8 array of shape ``(count,)`` for labels (magic 2049) or
    ``(count, rows, cols)`` for images (magic 2051).
    """
    path = check_file(path, what)
    data = _read_bytes(path)
    ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[magic]
    header_len = 4 * (1 + ndim)
    if len(data) < 4:
        raise ValueError(f"{what} {path!r} is too short ({len(data)} bytes) to be an IDX file")
    (found_magic,) = struct.unpack(">I", data[:4])
    if found_magic != magic:
        kind = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(found_magic)
        hint = f" (this looks like an IDX {kind} file)" if kind else ""
        raise ValueError(
            f"{what} {path!r} has bad magic number {found_magic}, expected {magic}{hint}"
        )
    if len(data) < header_len:
        raise ValueError(
            f"{what} {path!r} is truncated: header needs {header_len} bytes, file has {len(data)}"
        )
    dims = struct.unpack(">" + "I" * ndim, data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header_len
    if actual != expected:
        raise ValueError(
            f"{what} {path!r}: header says {' x '.join(map(str, dims))} = {expected} bytes of data, "
            f"but the file has {actual}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _load_mnist(image_filename, label_filename):
    images = read_idx(image_filename, IMAGES_MAGIC, "MNIST image file")
    labels = read_idx(label_filename, LABELS_MAGIC, "MNIST label file")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST image file {image_filename!r} has {images.shape[0]} images but label file "
            f"{label_filename!r} has {labels.shape[0]} labels"
        )
    n, rows, cols = images.shape
    X = images.reshape(n, rows * cols).astype(np.float32) / np.float32(255.0)
    return X, labels.copy(), (rows, cols)


def parse_mnist(image_filename, label_filename):
    """Images as float32 ``(N, rows*cols)`` scaled to [0, 1] and labels as uint8 ``(N,)``."""
    X, y, _ = _load_mnist(image_filename, label_filename)
    return X, y


class MNISTDataset(Dataset):
    """MNIST (or Fashion-MNIST) from its IDX files.

    Attributes:
        X: float32 ``(N, 784)`` images scaled to [0, 1].
        y: uint8 ``(N,)`` labels.

    ``dataset[i]`` is ``(X[i], y[i])`` (also for slices and index arrays); with
    transforms, each image is reshaped to ``(28, 28, 1)``, transformed
    (transform list order, images in index order) and flattened back, so the
    shapes are the same as without transforms.
    """

    batched_indexing = True  # the DataLoader fetches a batch with one dataset[index_array]

    def __init__(self, image_filename: str, label_filename: str, transforms: Optional[List] = None):
        super().__init__(transforms)
        self.X, self.y, (rows, cols) = _load_mnist(image_filename, label_filename)
        self.image_shape = (rows, cols, 1)

    def __getitem__(self, index) -> object:
        X, y = self.X[index], self.y[index]
        if self.transforms:
            X = self._per_image(X, 1, self._transform_one)
        return X, y

    def _transform_one(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.apply_transforms(x.reshape(self.image_shape)))
        if out.size != x.size:
            raise ValueError(
                f"MNIST transforms must keep the image size {self.image_shape}, got shape {out.shape}"
            )
        return out.astype(x.dtype, copy=False).reshape(x.shape)

    def __len__(self) -> int:
        return self.X.shape[0]
