"""Data loading: datasets, the batching DataLoader (with PyTorch's samplers, collation and worker
processes) and image transforms."""
from . import datasets  # noqa: F401
from .collate import default_collate  # noqa: F401
from .data_basic import ConcatDataset, DataLoader, Dataset, uses_batched_indexing  # noqa: F401
from .data_transforms import RandomCrop, RandomFlipHorizontal, Transform  # noqa: F401
from .dataset_utils import Subset, TensorDataset, random_split  # noqa: F401
from .datasets import CIFAR10Dataset, Corpus, Dictionary, MNISTDataset, NDArrayDataset, batchify, get_batch  # noqa: F401
from .sampler import (  # noqa: F401
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from .workers import WorkerInfo, get_worker_info  # noqa: F401

__all__ = [
    "Dataset", "DataLoader", "default_collate", "uses_batched_indexing", "DistributedSampler", "Transform",
    "RandomFlipHorizontal", "RandomCrop",
    "MNISTDataset", "NDArrayDataset", "CIFAR10Dataset", "Dictionary", "Corpus",
    "batchify", "get_batch", "datasets",
    "TensorDataset", "Subset", "ConcatDataset", "random_split",
    "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler", "BatchSampler",
    "get_worker_info", "WorkerInfo",
]
