"""Datasets; also re-exports the data basics so ``needle.data.datasets.X`` works for every name."""
from ..collate import default_collate  # noqa: F401
from ..data_basic import DataLoader, Dataset, uses_batched_indexing  # noqa: F401
from ..data_transforms import RandomCrop, RandomFlipHorizontal, Transform  # noqa: F401
from .cifar10_dataset import CIFAR10Dataset  # noqa: F401
from .mnist_dataset import MNISTDataset, parse_mnist  # noqa: F401
from .ndarray_dataset import NDArrayDataset  # noqa: F401
from .ptb_dataset import Corpus, Dictionary, batchify, get_batch  # noqa: F401
from .shipped import shipped_files, shipped_path  # noqa: F401

__all__ = [
    "Dataset", "DataLoader", "default_collate", "uses_batched_indexing", "Transform", "RandomFlipHorizontal",
    "RandomCrop",
    "MNISTDataset", "NDArrayDataset", "CIFAR10Dataset", "Dictionary", "Corpus",
    "batchify", "get_batch", "shipped_path", "shipped_files",
]
