"""Operators: each class has `compute` (forward on arrays, through `array_api` only) and
`gradient` (on Tensors), side by side in the module of its kind:

* `elementwise`   arithmetic, math functions, comparisons, where, casts
* `shape`         transpose/permute, reshape, broadcast, stack/split, flip, dilate
* `reduction`     sum, mean, max, argmax, logsumexp, logsoftmax, softmax
* `matmul`        matrix products
* `indexing`      tensor[index]: gather and its scatter-add gradient
* `conv`          2-D convolution (im2col) and its two adjoints
* `pooling`       2-D max and average pooling, and the window ops (im2col, col2im) they share
* `special`       special functions (erf)
* `loss`          losses whose gradient is PyTorch's formula (binary cross-entropy)
* `normalization` batch normalisation as one op
* `lstm`          the LSTM cell's pointwise part, and a layer's recurrence over a sequence, as ops
* `tuple_ops`     ops that build or read tuples of tensors
"""
from ..autograd import NDArray, Op, Tensor, TensorOp, TensorTuple, TensorTupleOp, Value  # noqa: F401
from . import elementwise, indexing, loss, lstm, normalization, pooling, reduction, shape, special, tuple_ops
from .conv import Conv, ConvInputGrad, ConvWeightGrad, conv
from .elementwise import *  # noqa: F401,F403  (every elementwise op and function, by its __all__)
from .elementwise import (
    AddScalar,
    Cast,
    DivScalar,
    EWiseAdd,
    EWiseDiv,
    EWiseMul,
    EWisePow,
    Exp,
    Log,
    Maximum,
    MaximumScalar,
    MulScalar,
    Negate,
    PowerScalar,
    ReLU,
    RPowerScalar,
    Sigmoid,
    Sqrt,
    Tanh,
    Where,
    add,
    add_scalar,
    broadcast_tensors,
    cast,
    divide,
    divide_scalar,
    equal,
    exp,
    greater,
    greater_equal,
    less,
    less_equal,
    log,
    maximum,
    mul_scalar,
    multiply,
    negate,
    not_equal,
    power,
    power_scalar,
    relu,
    reverse_divide,
    reverse_power,
    reverse_subtract,
    sigmoid,
    sqrt,
    subtract,
    tanh,
    where,
)
from .elementwise import __all__ as _elementwise_all
from .indexing import GetItem, IndexPlan, OneHot, ScatterItem, SetItem, getitem, one_hot, setitem
from .loss import (
    BinaryCrossEntropy,
    LogSoftmaxNLLGrad,
    LogSoftmaxNLLLoss,
    NLLLoss,
    NLLLossGrad,
    binary_cross_entropy,
    logsoftmax_nll_loss,
    nll_loss,
)
from .lstm import LSTMGates, LSTMGatesGrad, LSTMLayer, LSTMLayerGrad, lstm_gates, lstm_layer
from .matmul import AddMM, MatMul, MatMulTransposed, addmm, matmul
from .normalization import (
    BatchNorm,
    BatchNormGrad,
    LayerNorm,
    LayerNormGrad,
    batch_norm,
    layer_norm,
    layer_norm_formula,
)
from .pooling import AvgPool2d, Col2Im, Im2Col, MaxPool2d, avg_pool2d, col2im, im2col, max_pool2d
from .reduction import (
    ArgExtreme,
    Argsort,
    Gather,
    HistogramResult,
    LogSoftmax,
    LogSoftmaxGrad,
    LogSumExp,
    Max,
    Softmax,
    SoftmaxGrad,
    SortResult,
    Summation,
    Variance,
    all_of,
    any_of,
    argmax,
    argmin,
    argsort,
    check_extremes,
    check_ids,
    expand_reduced,
    extremes,
    gather,
    histc,
    histogram,
    logsoftmax,
    logsumexp,
    max,
    mean,
    minimum_of,
    softmax,
    sort,
    std,
    sum_to_shape,
    summation,
    topk,
    var,
)
from .shape import (
    BroadcastTo,
    Clone,
    Concatenate,
    Dilate,
    Flip,
    Permute,
    Reshape,
    Split,
    SplitSections,
    Stack,
    Transpose,
    UnDilate,
    broadcast_to,
    cat,
    chunk,
    clone,
    dilate,
    expand,
    flatten,
    flip,
    narrow,
    permute,
    reshape,
    roll,
    split,
    split_sections,
    squeeze,
    stack,
    transpose,
    unbind,
    undilate,
    unsqueeze,
)
from .special import Erf, erf
from .tuple_ops import (
    FusedAddScalars,
    MakeTensorTuple,
    SparseTuple,
    TupleGetItem,
    add_tuples,
    fused_add_scalars,
    make_tuple,
    tuple_entries,
    tuple_get_item,
)

__all__ = [
    # the course's op functions and classes
    "add", "add_scalar", "multiply", "mul_scalar", "power", "power_scalar", "divide", "divide_scalar",
    "transpose", "reshape", "broadcast_to", "summation", "matmul", "addmm", "AddMM", "negate", "log", "exp", "relu",
    "tanh",
    "stack", "split", "flip", "dilate", "undilate", "conv", "logsoftmax", "logsumexp", "make_tuple",
    "tuple_get_item", "fused_add_scalars",
    "EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar", "EWiseDiv", "DivScalar",
    "Transpose", "Reshape", "BroadcastTo", "Summation", "MatMul", "MatMulTransposed", "Negate", "Log", "Exp",
    "ReLU", "Tanh",
    "Stack", "Split", "Flip", "Dilate", "UnDilate", "Conv", "LogSoftmax", "LogSumExp", "MakeTensorTuple",
    "TupleGetItem", "FusedAddScalars",
    # the autograd names the course's star-imports carry along
    "Tensor", "TensorTuple", "Value", "Op", "TensorOp", "TensorTupleOp", "NDArray",
    # beyond the course
    "subtract", "reverse_subtract", "reverse_divide", "reverse_power", "sigmoid", "sqrt", "maximum", "where",
    "cast", "less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "broadcast_tensors",
    "permute", "flatten", "mean", "max", "argmax", "softmax", "getitem", "batch_norm", "add_tuples",
    "sum_to_shape", "expand_reduced", "tuple_entries", "extremes",
    "RPowerScalar", "Sigmoid", "Sqrt", "Maximum", "MaximumScalar", "Where", "Cast", "Permute", "Max", "Softmax",
    "GetItem", "ScatterItem", "IndexPlan", "BatchNorm", "ConvInputGrad", "ConvWeightGrad", "SparseTuple",
    "max_pool2d", "avg_pool2d", "im2col", "col2im", "erf", "MaxPool2d", "AvgPool2d", "Im2Col", "Col2Im", "Erf",
    "binary_cross_entropy", "BinaryCrossEntropy", "nll_loss", "NLLLoss", "NLLLossGrad", "LogSoftmaxNLLGrad",
    "LogSoftmaxNLLLoss", "logsoftmax_nll_loss",
    "one_hot", "OneHot", "lstm_gates", "LSTMGates", "LSTMGatesGrad", "lstm_layer", "LSTMLayer", "LSTMLayerGrad",
    "BatchNormGrad", "LogSoftmaxGrad", "SoftmaxGrad", "LayerNorm", "LayerNormGrad", "layer_norm",
    "layer_norm_formula",
    # PyTorch's functions (torch.cat, torch.topk, ...; the ones named like Python builtins -- sum, min,
    # all, any, abs, pow -- are needle.functions', kept out of star imports)
    "cat", "split_sections", "chunk", "unbind", "unsqueeze", "squeeze", "expand", "narrow", "roll", "clone",
    "argmin", "argsort", "sort", "topk", "gather", "histc", "histogram", "Concatenate", "SplitSections", "Clone",
    "SortResult", "HistogramResult", "ArgExtreme", "Argsort", "Gather", "Variance",
    # the op modules
    "elementwise", "shape", "reduction", "indexing", "normalization", "tuple_ops", "pooling", "special", "loss",
    "lstm",
]
__all__ += [name for name in _elementwise_all if name not in __all__]
