"""needle.manual: the backprop toolkit.

Layers whose backward pass is written by hand (no autograd), and tools to check
hand-written gradients against autograd, PyTorch and finite differences:

    ManualLinear, ManualTanh, ManualBatchNorm1d, ManualCrossEntropy,
    ManualEmbedding, ManualFlatten, ManualSequential
                                           forward(x) / backward(grad_out)
    cmp, compare_table, CmpResult          exact / approximate / maxdiff reports
    gradcheck                              autograd vs central differences

Import it explicitly (`import needle.manual`); `import needle` does not load it.
PyTorch is never imported here: torch tensors are recognised by duck typing.
"""
from .base import ManualLayer
from .batchnorm import ManualBatchNorm1d
from .compare import CmpResult, cmp, compare_table, default_tolerances, format_table
from .cross_entropy import ManualCrossEntropy
from .embedding import ManualEmbedding
from .flatten import ManualFlatten
from .gradcheck import gradcheck
from .linear import ManualLinear
from .sequential import ManualSequential
from .tanh import ManualTanh

__all__ = [
    "ManualLayer",
    "ManualLinear",
    "ManualTanh",
    "ManualBatchNorm1d",
    "ManualCrossEntropy",
    "ManualEmbedding",
    "ManualFlatten",
    "ManualSequential",
    "CmpResult",
    "cmp",
    "compare_table",
    "default_tolerances",
    "format_table",
    "gradcheck",
]
