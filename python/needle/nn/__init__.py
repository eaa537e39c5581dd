"""Neural-network modules: the course's layers (nn_basic, nn_conv, nn_sequence, nn_transformer),
PyTorch-style layers (nn_activation, nn_loss, nn_pooling, Conv1d, Conv2d, ConvTranspose2d, LayerNorm,
GRU, Dropout2d) and their functional forms (needle.nn.functional, also importable as
`import needle.nn.functional as F`), PyTorch's containers (ModuleList, ModuleDict, ParameterList,
ParameterDict), in-place initialisers (needle.nn.init, not the course's needle.init) and gradient
clipping (needle.nn.utils)."""
from . import functional, init, utils
from .nn_activation import GELU, LeakyReLU, LogSoftmax, SiLU, Softmax, Softplus
from .nn_basic import (
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Dropout2d,
    Flatten,
    Identity,
    LayerNorm,
    LayerNorm1d,
    Linear,
    Module,
    Parameter,
    ReLU,
    Residual,
    Sequential,
    SoftmaxLoss,
    Tanh,
)
from .nn_container import ModuleDict, ModuleList, ParameterDict, ParameterList
from .nn_conv import Conv, Conv1d, Conv2d, ConvTranspose2d
from .nn_loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .nn_pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .nn_sequence import GRU, LSTM, RNN, Embedding, GRUCell, LSTMCell, RNNCell, Sigmoid
from .nn_transformer import AttentionLayer, MultiHeadAttention, Transformer, TransformerLayer

__all__ = [
    "Module", "Parameter", "Identity", "Linear", "Flatten", "ReLU", "Tanh", "Sigmoid", "Sequential", "SoftmaxLoss",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm1d", "Dropout", "Residual", "Conv", "RNNCell", "RNN", "LSTMCell",
    "LSTM", "Embedding", "MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer",
    # PyTorch-style layers beyond the course
    "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Softmax", "LogSoftmax", "GELU", "SiLU",
    "LeakyReLU", "MSELoss", "CrossEntropyLoss", "functional",
    # PyTorch's containers, initialisers and gradient clipping
    "ModuleList", "ModuleDict", "ParameterList", "ParameterDict", "init", "utils",
    "LayerNorm", "GRUCell", "GRU", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "ConvTranspose2d", "Softplus",
    "Dropout2d",
]
