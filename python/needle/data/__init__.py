"""Data loading: datasets, the batching DataLoader and image transforms."""
from . import datasets  # noqa: F401
from .collate import default_collate  # noqa: F401
from .data_basic import DataLoader, Dataset, uses_batched_indexing  # noqa: F401
from .data_transforms import RandomCrop, RandomFlipHorizontal, Transform  # noqa: F401
from .datasets import CIFAR10Dataset, Corpus, Dictionary, MNISTDataset, NDArrayDataset, batchify, get_batch  # noqa: F401
from .sampler import DistributedSampler  # noqa: F401

__all__ = [
    "Dataset", "DataLoader", "default_collate", "uses_batched_indexing", "DistributedSampler", "Transform",
    "RandomFlipHorizontal", "RandomCrop",
    "MNISTDataset", "NDArrayDataset", "CIFAR10Dataset", "Dictionary", "Corpus",
    "batchify", "get_batch", "datasets",
]
