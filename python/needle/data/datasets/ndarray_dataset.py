"""A dataset over in-memory numpy arrays."""
from __future__ import annotations

from ..data_basic import Dataset


class NDArrayDataset(Dataset):
    """``dataset[i]`` is ``tuple(a[i] for a in arrays)``; works for ints, slices and index arrays."""

    batched_indexing = True  # the DataLoader fetches a batch with one dataset[index_array]

    def __init__(self, *arrays):
        super().__init__()
        if not arrays:
            raise ValueError("NDArrayDataset needs at least one array")
        lengths = []
        for k, a in enumerate(arrays):
            try:
                lengths.append(len(a))
            except TypeError:
                raise TypeError(
                    f"NDArrayDataset array {k} has no length (got {type(a).__name__}); pass arrays"
                ) from None
        if any(n != lengths[0] for n in lengths):
            raise ValueError(f"NDArrayDataset arrays must have the same length, got lengths {lengths}")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, i) -> object:
        return tuple(a[i] for a in self.arrays)
