"""CIFAR-10 from the "python version" batches (``cifar-10-batches-py``)."""
from __future__ import annotations

import os
import pickle
from typing import List, Optional

import numpy as np

from ..data_basic import Dataset
from ._files import check_dir, check_file

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
IMAGE_SHAPE = (3, 32, 32)
_ROW = 3 * 32 * 32


def load_cifar_batch(path):
    """One pickled batch: ``(data uint8 (n, 3072), labels int64 (n,))``, with errors naming the file."""
    path = check_file(path, "CIFAR-10 batch file")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # truncated/corrupt pickles raise many different exception types
        raise ValueError(
            f"CIFAR-10 batch file {path!r} is not a readable pickle (corrupt or truncated): "
            f"{type(e).__name__}: {e}"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR-10 batch file {path!r} holds a {type(batch).__name__}, expected a dict")
    for key in (b"data", b"labels"):
        if key not in batch:
            raise ValueError(
                f"CIFAR-10 batch file {path!r} has no {key!r} entry (keys: {sorted(map(repr, batch))})"
            )
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except Exception as e:
        raise ValueError(f"CIFAR-10 batch file {path!r}: unreadable data or labels: {e}") from None
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise ValueError(
            f"CIFAR-10 batch file {path!r}: b'data' has shape {data.shape}, expected (n, {_ROW})"
        )
    if data.dtype.kind not in "ui":
        raise ValueError(
            f"CIFAR-10 batch file {path!r}: b'data' has dtype {data.dtype}, expected uint8 pixel values"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise ValueError(
            f"CIFAR-10 batch file {path!r}: {data.shape[0]} images but "
            f"{labels.shape[0] if labels.ndim == 1 else labels.shape} labels"
        )
    if labels.size and labels.dtype.kind not in "ui":
        raise ValueError(f"CIFAR-10 batch file {path!r}: labels must be integers, got dtype {labels.dtype}")
    return data, labels.astype(np.int64)


class CIFAR10Dataset(Dataset):
    """CIFAR-10 images and labels.

    Args:
        base_folder: the ``cifar-10-batches-py`` directory.
        train: read ``data_batch_1`` ... ``data_batch_5`` (in that order) if true,
            else ``test_batch``.
        p: unused (kept for API compatibility).
        transforms: optional list of image transforms; they see each image in
            ``H x W x C`` layout (like the other transforms) and the result is
            returned in ``C x H x W`` layout.

    Attributes:
        X: float32 ``(N, 3, 32, 32)``, pixel values / 255.
        y: int64 ``(N,)`` labels.
    """

    batched_indexing = True  # the DataLoader fetches a batch with one dataset[index_array]

    def __init__(self, base_folder: str, train: bool, p: Optional[float] = 0.5,
                 transforms: Optional[List] = None):
        super().__init__(transforms)
        base_folder = check_dir(base_folder, "CIFAR-10 base folder")
        files = TRAIN_FILES if train else TEST_FILES
        data, labels = [], []
        for name in files:
            d, l = load_cifar_batch(os.path.join(base_folder, name))
            data.append(d)
            labels.append(l)
        self.X = (np.concatenate(data).astype(np.float32) / np.float32(255.0)).reshape((-1,) + IMAGE_SHAPE)
        self.y = np.concatenate(labels)

    def __getitem__(self, index) -> object:
        """``(image, label)``; image is a numpy ``(3, 32, 32)`` array for an int index."""
        X, y = self.X[index], self.y[index]
        if self.transforms:
            X = self._per_image(X, 3, self._transform_one)
        return X, y

    def _transform_one(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.apply_transforms(x.transpose(1, 2, 0)))  # CHW -> HWC
        if out.shape != (x.shape[1], x.shape[2], x.shape[0]):
            raise ValueError(
                f"CIFAR-10 transforms must keep the image shape (32, 32, 3) in HWC layout, got {out.shape}"
            )
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=x.dtype)

    def __len__(self) -> int:
        """Number of images."""
        return self.X.shape[0]
