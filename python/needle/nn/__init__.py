"""Neural-network modules: the course's layers (nn_basic, nn_conv, nn_sequence, nn_transformer)."""
from .nn_basic import (
    BatchNorm1d, BatchNorm2d, Dropout, Flatten, Identity, LayerNorm1d, Linear, Module, Parameter, ReLU, Residual,
    Sequential, SoftmaxLoss, Tanh,
)
from .nn_conv import Conv
from .nn_sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell, Sigmoid
from .nn_transformer import AttentionLayer, MultiHeadAttention, Transformer, TransformerLayer

__all__ = [
    "Module", "Parameter", "Identity", "Linear", "Flatten", "ReLU", "Tanh", "Sigmoid", "Sequential", "SoftmaxLoss",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm1d", "Dropout", "Residual", "Conv", "RNNCell", "RNN", "LSTMCell",
    "LSTM", "Embedding", "MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer",
]
