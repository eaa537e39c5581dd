"""Operators: each class has `compute` (forward on arrays) and `gradient` (on Tensors)."""
from .ops_mathematic import *  # noqa: F401,F403
from .ops_logarithmic import *  # noqa: F401,F403
from .ops_tuple import *  # noqa: F401,F403
from .ops_layout import *  # noqa: F401,F403
from .ops_conv import *  # noqa: F401,F403
from .ops_normalization import *  # noqa: F401,F403
from .ops_reduction import *  # noqa: F401,F403
from .ops_indexing import *  # noqa: F401,F403
from .ops_mathematic import _axis, normalize_axes, sum_to_shape, expand_reduced  # noqa: F401
