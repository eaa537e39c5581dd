"""`needle.utils.data`: needle's data package (`needle.data`) under PyTorch's path, so
`torch.utils.data.DataLoader`, `TensorDataset`, `random_split`, ... read the same in ported
code (`from needle.utils.data import DataLoader`). The same objects as `needle.data`'s."""
from ..data import *  # noqa: F401,F403
from ..data import __all__  # noqa: F401
