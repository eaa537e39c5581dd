"""Every module of needle.nn and every function of needle.nn.functional exports to ONNX and runs
in onnxruntime with needle's numbers; so does every op class of needle.ops that a forward pass
can use.

The tables below hold one example per entry (constructor arguments and inputs); the walk over
`needle.nn.__all__` / `needle.nn.functional.__all__` / `needle.ops` fails for an entry without
one, so a new module, function or op without an ONNX mapping fails here. What is not
exportable is listed with the reason, and its export must raise an error that says so.

Each example is exported at batch 2 (the batch axis dynamic) and run by onnxruntime at batch 2
and 3 against needle's eager output: float outputs within F32_TOL of the outputs' scale (the
bound tests/test_onnx.py derives), integer and bool outputs equal. README's ONNX table of the
modules' differences is this file's output: `python tests/test_onnx_coverage.py`.
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

import needle as ndl
import needle.nn.functional as F
import needle.onnx
from needle import nn, ops
from needle.onnx.ops_table import OP_TABLE

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# float32 rounding of two runtimes, relative to the outputs' scale: tests/test_onnx.py's F32_TOL
# (each runtime a few u = 2^-24 from a float64 evaluation, 16 u each)
F32_TOL = 2 * 16 * 2.0 ** -24
BATCHES = (2, 3)


# ----------------------------------------------------------------------------- example inputs

def floats(*shape, scale=1.0):
    return lambda b: np.random.randn(b, *shape).astype(np.float32) * np.float32(scale)


def probabilities(*shape):
    return lambda b: np.random.uniform(0.02, 0.98, (b, *shape)).astype(np.float32)


def ids(high, *shape):
    return lambda b: np.random.randint(0, high, (b, *shape)).astype(np.int64)


def sequence(length, *shape):
    """(length, batch, ...) floats: the batch on axis 1."""
    return lambda b: np.random.randn(length, b, *shape).astype(np.float32)


def several(*makers):
    """Example inputs made by each maker, as one tuple."""
    return lambda b: tuple(m(b) for m in makers)


@dataclass
class Example:
    """A module (built by `build`) and its inputs at batch b (`inputs(b)`: an array or a tuple of
    them, nested as the module's arguments); `batch_axes`: as needle.onnx.export's."""

    build: Callable[[], nn.Module]
    inputs: Callable[[int], Any]
    batch_axes: Any = 0
    export: Dict[str, Any] = field(default_factory=dict)


class Call(nn.Module):
    """A functional op as a module: forward(*inputs) = fn(*inputs, **tensors, **settings), the
    tensors (weights, running statistics) held as parameters."""

    def __init__(self, fn: Callable, tensors: Optional[Dict[str, np.ndarray]] = None, **settings: Any):
        super().__init__()
        self.fn = fn
        self.names = list(tensors or {})
        for name, value in (tensors or {}).items():
            setattr(self, name, nn.Parameter(value.astype(np.float32)))
        self.settings = settings

    def forward(self, *inputs):
        return self.fn(*inputs, **{n: getattr(self, n) for n in self.names}, **self.settings)


def with_running_stats(model: nn.Module, make: Callable[[int], np.ndarray]) -> nn.Module:
    """Two training passes, so that BatchNorm's running statistics are not 0 and 1."""
    model.train()
    for _ in range(2):
        model(ndl.Tensor(make(6) * 2 + 0.5))
    model.eval()
    return model


def rnd(*shape):
    return np.random.randn(*shape).astype(np.float32)


# ----------------------------------------------------------------------------- nn's modules

MODULES: Dict[str, Example] = {
    "Identity": Example(lambda: nn.Identity(), floats(3)),
    "Linear": Example(lambda: nn.Linear(4, 3), floats(4)),
    "Flatten": Example(lambda: nn.Flatten(), floats(2, 3)),
    "ReLU": Example(lambda: nn.ReLU(), floats(5)),
    "Tanh": Example(lambda: nn.Tanh(), floats(5)),
    "Sigmoid": Example(lambda: nn.Sigmoid(), floats(5)),
    "Sequential": Example(lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), floats(4)),
    "SoftmaxLoss": Example(lambda: nn.SoftmaxLoss(), several(floats(5), ids(5))),
    "BatchNorm1d": Example(lambda: with_running_stats(nn.BatchNorm1d(4), floats(4)), floats(4)),
    "BatchNorm2d": Example(lambda: with_running_stats(nn.BatchNorm2d(3), floats(3, 4, 4)), floats(3, 4, 4)),
    "LayerNorm1d": Example(lambda: nn.LayerNorm1d(4), floats(4)),
    "Dropout": Example(lambda: nn.Dropout(0.5), floats(4)),
    "Residual": Example(lambda: nn.Residual(nn.Linear(4, 4)), floats(4)),
    "Conv": Example(lambda: nn.Conv(3, 4, 3, stride=2), floats(3, 7, 7)),
    "RNNCell": Example(lambda: nn.RNNCell(3, 4, nonlinearity="relu"), several(floats(3), floats(4))),
    "RNN": Example(lambda: nn.RNN(3, 4, num_layers=2), sequence(5, 3), batch_axes=1),
    "LSTMCell": Example(lambda: nn.LSTMCell(3, 4), floats(3)),
    "LSTM": Example(lambda: nn.LSTM(3, 4), several(sequence(5, 3), lambda b: (rnd(1, b, 4), rnd(1, b, 4))),
                    batch_axes=1),
    "Embedding": Example(lambda: nn.Embedding(10, 4, padding_idx=1), ids(10, 6)),
    "MultiHeadAttention": Example(lambda: nn.MultiHeadAttention(causal=True),
                                  several(floats(2, 5, 4), floats(2, 5, 4), floats(2, 5, 4))),
    "AttentionLayer": Example(lambda: nn.AttentionLayer(6, 2, 3, causal=True), floats(5, 6)),
    "TransformerLayer": Example(lambda: nn.TransformerLayer(6, 2, 3, 8), floats(5, 6)),
    "Transformer": Example(lambda: nn.Transformer(6, 8, 2, num_head=2, dim_head=3, sequence_len=7),
                           sequence(5, 6), batch_axes=1),
    "Conv1d": Example(lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), floats(3, 9)),
    "Conv2d": Example(lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), floats(3, 5, 6)),
    "MaxPool2d": Example(lambda: nn.MaxPool2d(3, stride=2, padding=1), floats(3, 7, 6)),
    "AvgPool2d": Example(lambda: nn.AvgPool2d(3, stride=2, padding=1), floats(3, 7, 6)),
    "AdaptiveAvgPool2d": Example(lambda: nn.AdaptiveAvgPool2d((2, 3)), floats(3, 5, 7)),
    "Softmax": Example(lambda: nn.Softmax(dim=1), floats(5)),
    "LogSoftmax": Example(lambda: nn.LogSoftmax(dim=1), floats(5)),
    "GELU": Example(lambda: nn.GELU(), floats(7, scale=3)),
    "SiLU": Example(lambda: nn.SiLU(), floats(7, scale=3)),
    "LeakyReLU": Example(lambda: nn.LeakyReLU(0.2), floats(7)),
    "MSELoss": Example(lambda: nn.MSELoss(), several(floats(4), floats(4))),
    "CrossEntropyLoss": Example(lambda: nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=2),
                                several(floats(5), ids(5))),
    "LayerNorm": Example(lambda: nn.LayerNorm((3, 4)), floats(2, 3, 4)),
    "GRUCell": Example(lambda: nn.GRUCell(3, 4), floats(3)),
    "GRU": Example(lambda: nn.GRU(3, 4, num_layers=2), sequence(5, 3), batch_axes=1),
    "NLLLoss": Example(lambda: nn.NLLLoss(reduction="sum"), several(floats(5), ids(5))),
    "BCELoss": Example(lambda: nn.BCELoss(), several(probabilities(4), probabilities(4))),
    "BCEWithLogitsLoss": Example(lambda: nn.BCEWithLogitsLoss(pos_weight=ndl.Tensor(np.float32([1, 2, 3, 0.5]))),
                                 several(floats(4, scale=5), probabilities(4))),
    "ConvTranspose2d": Example(lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
                               floats(3, 4, 5)),
    "Softplus": Example(lambda: nn.Softplus(beta=2, threshold=4), floats(7, scale=4)),
    "Dropout2d": Example(lambda: nn.Dropout2d(0.5), floats(3, 4, 4)),
}

# Module classes that cannot be exported, with the reason and what their export raises
NOT_EXPORTABLE_MODULES: Dict[str, Tuple[str, str]] = {
    "Module": ("the base class: it has no forward of its own", "missing the required \"forward\" function"),
    "ModuleList": ("a container: no forward of its own (export the module that holds it)",
                   "missing the required \"forward\" function"),
    "ModuleDict": ("a container: no forward of its own (export the module that holds it)",
                   "missing the required \"forward\" function"),
    "ParameterList": ("a container: no forward of its own (export the module that holds it)",
                      "missing the required \"forward\" function"),
    "ParameterDict": ("a container: no forward of its own (export the module that holds it)",
                      "missing the required \"forward\" function"),
}

# ----------------------------------------------------------------------------- nn.functional

C4 = {"weight": rnd(3, 2, 3, 3), "bias": rnd(2)}

FUNCTIONS: Dict[str, Example] = {
    "softplus": Example(lambda: Call(lambda x: (F.softplus(x), F.softplus(x, beta=0.5, threshold=3))),
                        floats(7, scale=8)),
    "linear": Example(lambda: Call(F.linear, {"weight": rnd(3, 4), "bias": rnd(3)}), floats(2, 4)),
    "relu": Example(lambda: Call(F.relu), floats(5)),
    "tanh": Example(lambda: Call(F.tanh), floats(5)),
    "sigmoid": Example(lambda: Call(F.sigmoid), floats(5, scale=5)),
    "dropout": Example(lambda: Call(F.dropout, p=0.3, training=False), floats(5)),
    "batch_norm": Example(lambda: Call(F.batch_norm, {"running_mean": rnd(3), "running_var": rnd(3) ** 2 + 0.5,
                                                      "weight": rnd(3), "bias": rnd(3)}),
                          floats(3, 2, 2)),
    "layer_norm": Example(lambda: Call(F.layer_norm, {"weight": rnd(4), "bias": rnd(4)}, normalized_shape=(4,)),
                          floats(3, 4)),
    "conv2d": Example(lambda: Call(F.conv2d, {"weight": rnd(4, 3, 2, 3)}, stride=(1, 2), padding=(1, 0),
                                   dilation=(2, 1)), floats(3, 6, 7)),
    "conv1d": Example(lambda: Call(F.conv1d, {"weight": rnd(4, 3, 3), "bias": rnd(4)}, stride=2, padding=1),
                      floats(3, 8)),
    "max_pool2d": Example(lambda: Call(F.max_pool2d, kernel_size=2), floats(3, 5, 6)),
    "avg_pool2d": Example(lambda: Call(F.avg_pool2d, kernel_size=3, stride=2, padding=1, count_include_pad=False),
                          floats(3, 5, 6)),
    "adaptive_avg_pool2d": Example(lambda: Call(lambda x: (F.adaptive_avg_pool2d(x, (3, None)),
                                                           F.adaptive_avg_pool2d(x, 1))), floats(2, 7, 6)),
    "softmax": Example(lambda: Call(F.softmax, dim=-1), floats(3, 5)),
    "log_softmax": Example(lambda: Call(F.log_softmax, dim=1), floats(3, 5)),
    "gelu": Example(lambda: Call(lambda x: (F.gelu(x), F.gelu(x, approximate="tanh"))), floats(9, scale=3)),
    "silu": Example(lambda: Call(F.silu), floats(9, scale=5)),
    "leaky_relu": Example(lambda: Call(F.leaky_relu, negative_slope=0.05), floats(6)),
    "mse_loss": Example(lambda: Call(lambda x, t: (F.mse_loss(x, t), F.mse_loss(x, t, reduction="none"))),
                        several(floats(4), floats(4))),
    "cross_entropy": Example(lambda: Call(lambda x, t, p, weight: (
        F.cross_entropy(x, t, weight), F.cross_entropy(x, t, ignore_index=0, reduction="none"),
        F.cross_entropy(x, p, label_smoothing=0.2)), {"weight": np.random.rand(5) + 0.5}),
        several(floats(5), ids(5), probabilities(5))),
    "embedding": Example(lambda: Call(F.embedding, {"weight": rnd(9, 3)}, padding_idx=0), ids(9, 4)),
    "one_hot": Example(lambda: Call(F.one_hot, num_classes=6), ids(6, 3)),
    "dropout2d": Example(lambda: Call(F.dropout2d, p=0.3, training=False), floats(3, 2, 2)),
    "pad": Example(lambda: Call(lambda x: (F.pad(x, (1, 2, 0, 1), value=0.5), F.pad(x, (1, -1)),
                                           F.pad(x, (2, 1, 1, 0), mode="reflect"), F.pad(x, (1, 1, 2, 0), mode="replicate"),
                                           F.pad(x, (0, 0, 2, 3), mode="circular"))), floats(3, 4, 5)),
    "conv_transpose2d": Example(lambda: Call(F.conv_transpose2d, C4, stride=2, padding=1, groups=1), floats(3, 3, 4)),
    "nll_loss": Example(lambda: Call(F.nll_loss, ignore_index=1), several(floats(5), ids(5))),
    "binary_cross_entropy": Example(lambda: Call(F.binary_cross_entropy, {"weight": np.random.rand(4)}),
                                    several(probabilities(4), probabilities(4))),
    "binary_cross_entropy_with_logits": Example(
        lambda: Call(F.binary_cross_entropy_with_logits, {"pos_weight": np.random.rand(4) + 0.5}, reduction="none"),
        several(floats(4, scale=10), probabilities(4))),
    "scaled_dot_product_attention": Example(
        lambda: Call(lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                      F.scaled_dot_product_attention(q, k, v, attn_mask=(k[:, :, :, 0:1] > 0)
                                                                     .broadcast_to(k.shape[:2] + (4, 4))
                                                                     .permute((0, 1, 3, 2))))),
        several(floats(2, 4, 3), floats(2, 4, 3), floats(2, 4, 3))),
}

NOT_EXPORTABLE_FUNCTIONS: Dict[str, Tuple[str, str]] = {}

# the tensor functions of needle.ops and needle.functions (PyTorch's torch.X and the course's ops)
ties = lambda b: np.round(np.random.randn(b, 6) * 2).astype(np.float32)  # noqa: E731  (repeated values)
TENSOR_FUNCTIONS: Dict[str, Example] = {
    "cat": Example(lambda: Call(lambda x, y: (ndl.cat([x, y], dim=1), ndl.cat([x, x * 2]))), several(floats(3), floats(2))),
    "stack": Example(lambda: Call(lambda x: (ndl.stack([x, x * 2], 1), ndl.stack([x, -x], dim=2))), floats(3)),
    "split": Example(lambda: Call(lambda x: (ops.split(x, 1), x.split([1, 3], dim=1), x.split(2, 1))), floats(4)),
    "chunk": Example(lambda: Call(lambda x: x.chunk(2, 1)), floats(5)),
    "unbind": Example(lambda: Call(lambda x: ops.unbind(x, 1)), floats(3)),
    "narrow": Example(lambda: Call(lambda x: x.narrow(1, 1, 2)), floats(4)),
    "squeeze": Example(lambda: Call(lambda x: (x.unsqueeze(1).squeeze(1), x.unsqueeze(-1).expand(-1, 3, 2))),
                       floats(3)),
    "roll": Example(lambda: Call(lambda x: (x.roll(1, 1), x.roll((2, -1), (1, 2)))), floats(4, 3)),
    "flip": Example(lambda: Call(lambda x: ops.flip(x, (1,))), floats(4)),
    "clone": Example(lambda: Call(lambda x: x.clone() * 2), floats(4)),
    "clamp": Example(lambda: Call(lambda x, lo, hi: (x.clamp(-0.5, 0.7), ndl.clamp(x, min=-0.3), x.clamp(max=0.1),
                                                     x.clamp(lo, hi), x.clamp(0.9, 0.2), ndl.clip(x, lo))),
                     several(floats(5), floats(5, scale=0.3), floats(5, scale=0.3))),
    "tril": Example(lambda: Call(lambda x: (x.tril(), x.triu(1), ndl.tril(x, -1))), floats(4, 5)),
    "tril_batch_rows": Example(lambda: Call(lambda x: (x.tril(), x.triu())), floats(4)),
    "masked_fill": Example(lambda: Call(lambda x: (x.masked_fill(x > 0, 0.5), x.masked_fill(x < -0.5, -np.inf))),
                           floats(5)),
    "where": Example(lambda: Call(lambda x, y: (ops.where(x > y, x, y), ops.where(x > 0, x, 0.0))),
                     several(floats(4), floats(4))),
    "maximum": Example(lambda: Call(lambda x, y: (ops.maximum(x, y), ndl.minimum(x, y), ndl.max(x, y))),
                       several(floats(4), floats(4))),
    "max_min_dim": Example(lambda: Call(lambda x: (x.max(1).values, x.min(0, True).values, x.max(1).indices,
                                                   x.amax(1) if hasattr(x, "amax") else x.max(axes=1))), ties),
    "argmax": Example(lambda: Call(lambda x: (x.argmax(1), ndl.argmin(x, 1, True), x.argmax(), x.argmin(dim=0))),
                      ties),
    "topk": Example(lambda: Call(lambda x: (x.topk(3).values, x.topk(3).indices, x.topk(2, 1, largest=False).indices)),
                    ties),
    "sort": Example(lambda: Call(lambda x: (x.sort(1).values, x.sort(1).indices, x.sort(1, descending=True).indices,
                                            ops.argsort(x, 1))), ties),
    "gather": Example(lambda: Call(lambda x, i: x.gather(1, i)), several(floats(5), ids(5, 3))),
    "var": Example(lambda: Call(lambda x: (x.var(1), x.std(1, keepdim=True), x.var((1, 2), unbiased=False),
                                           ndl.std(x))), floats(4, 3)),
    "sum": Example(lambda: Call(lambda x: (ndl.sum(x, dim=1), ndl.mean(x, 1, keepdim=True), x.sum(), x.mean()),
                                ), floats(4)),
    "unary": Example(lambda: Call(lambda x: (x.sin(), x.cos(), ndl.abs(x), x.abs().log10(), ops.log1p(x.abs()),
                                             ops.erf(x), x.sqrt() if False else x.abs().sqrt(), ndl.pow(x, 2),
                                             x.exp(), x.sigmoid() if hasattr(x, "sigmoid") else ops.sigmoid(x))),
                     floats(5)),
    "softmax": Example(lambda: Call(lambda x: (ndl.softmax(x, 1), ndl.log_softmax(x, dim=-1), ops.logsumexp(x, (1,)))),
                       floats(5)),
    "all_any": Example(lambda: Call(lambda x: (ndl.all(x > -1, 1), ndl.any(x > 1, dim=1))), floats(5)),
    "matmul": Example(lambda: Call(lambda x, y: (x @ y, ops.matmul(x, y))), several(floats(3, 4), floats(4, 2))),
    "getitem": Example(lambda: Call(lambda x: (x[:, 1:3], x[:, ::2], x[:, None, 0], x[..., -1])), floats(4, 3)),
}

# tensor functions that cannot be exported, with the reason and the error's words
NOT_EXPORTABLE_TENSOR_FUNCTIONS: Dict[str, str] = {
    "histc": "counts into bins: not differentiable, computed on the host",
    "histogram": "counts into bins: not differentiable, computed on the host",
    "isclose": "computed on the host as a constant (a test helper, as torch.isclose is used)",
    "allclose": "a Python bool, not a tensor",
}

# ----------------------------------------------------------------------------- needle.ops

# op classes with no ONNX mapping: what they are, and why a forward pass in eval mode does not
# use them (or cannot be exported)
UNMAPPED_OPS = {
    "BatchNorm": "batch normalisation with batch statistics: training mode only (eval uses running statistics)",
    "BatchNormGrad": "the gradient of batch normalisation: backward only",
    "ThresholdBackward": "the gradient of relu: backward only",
    "TanhBackward": "the gradient of tanh: backward only",
    "LSTMGatesGrad": "the gradient of the LSTM cell's pointwise part: backward only",
    "LSTMLayerGrad": "the gradient of an LSTM layer's recurrence: backward only",
    "LogSoftmaxGrad": "the gradient of logsoftmax: backward only",
    "SoftmaxGrad": "the gradient of softmax: backward only",
    "NLLLossGrad": "the gradient of nll_loss: backward only",
    "LogSoftmaxNLLGrad": "the gradient of nll_loss(logsoftmax(x)): backward only",
    "LayerNormGrad": "the gradient of layer_norm: backward only",
    "ConvWeightGrad": "the gradient of conv with respect to its kernel: backward only",
    "Dilate": "conv's stride in its gradient: backward only",
    "UnDilate": "Dilate's adjoint: backward only",
    "ScatterItem": "GetItem's gradient: backward only",
    "Im2Col": "the windows of pooling's gradient: backward only",
    "Col2Im": "Im2Col's adjoint, pooling's gradient: backward only",
    "SparseTuple": "a tuple of gradients: backward only",
}


def _flat(item) -> List[Any]:
    if isinstance(item, (tuple, list, ndl.TensorTuple)):
        return [x for sub in item for x in _flat(sub)]
    return [item]


def _needle_outputs(model: nn.Module, inputs) -> List[np.ndarray]:
    model.eval()
    args = inputs if isinstance(inputs, tuple) else (inputs,)

    def tensors(item):
        if isinstance(item, (tuple, list)):
            return type(item)(tensors(x) for x in item)
        return ndl.Tensor(item, dtype=item.dtype.name, requires_grad=False)

    with ndl.no_grad():
        result = model(*tensors(args))
    return [t.numpy() for t in _flat(result) if t is not None]


def measure(example: Example) -> List[Tuple[float, float]]:
    """For each batch size of BATCHES: (the max |onnxruntime - needle| over the float outputs,
    their largest magnitude); asserts that integer and bool outputs are equal."""
    np.random.seed(0)
    model = example.build()
    proto = needle.onnx.export(model, example.inputs(BATCHES[0]), None, batch_axes=example.batch_axes,
                               **example.export)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    results = []
    for batch in BATCHES:
        inputs = example.inputs(batch)
        got = session.run(None, dict(zip(names, _flat(inputs))))
        want = _needle_outputs(model, inputs)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            if w.dtype.kind != "f":
                assert g.dtype == w.dtype and np.array_equal(g, w)
        pairs = [(g, w) for g, w in zip(got, want) if w.dtype.kind == "f" and w.size]
        results.append((max([0.0] + [float(np.abs(g - w).max()) for g, w in pairs]),
                        max([0.0] + [float(np.abs(w).max()) for _, w in pairs])))
    return results


def within_f32_rounding(example: Example) -> None:
    """Each batch size's difference within F32_TOL of the outputs' scale (their largest magnitude, 1
    below that)."""
    for difference, largest in measure(example):
        assert difference <= F32_TOL * max(1.0, largest), (difference, largest)


def _module_classes() -> List[str]:
    return [name for name in nn.__all__ if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)]


def test_every_module_and_function_has_an_example_or_a_reason():
    modules = set(_module_classes())
    missing = sorted(modules - set(MODULES) - set(NOT_EXPORTABLE_MODULES))
    assert not missing, (f"needle.nn modules without an ONNX example: {missing}; add a row to MODULES in "
                         "tests/test_onnx_coverage.py (or to NOT_EXPORTABLE_MODULES with the reason)")
    assert set(MODULES) | set(NOT_EXPORTABLE_MODULES) <= modules, "rows for names needle.nn no longer has"
    functions = {name for name in F.__all__ if callable(getattr(F, name))}
    missing = sorted(functions - set(FUNCTIONS) - set(NOT_EXPORTABLE_FUNCTIONS))
    assert not missing, (f"needle.nn.functional functions without an ONNX example: {missing}; add a row to "
                         "FUNCTIONS in tests/test_onnx_coverage.py (or to NOT_EXPORTABLE_FUNCTIONS with the reason)")
    assert set(FUNCTIONS) | set(NOT_EXPORTABLE_FUNCTIONS) <= functions, "rows for names F no longer has"


def _op_classes() -> Dict[str, type]:
    """Every op class defined in needle.ops, exported or not (subclasses of Op, recursively)."""
    found: Dict[str, type] = {}
    todo = [ops.Op]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("needle.ops.") and not sub.__name__.startswith("_"):  # not a base
                found[sub.__name__] = sub
    return found


def test_every_op_class_is_mapped_or_backward_only():
    classes = _op_classes()
    unmapped = sorted(name for name, cls in classes.items() if cls not in OP_TABLE)
    assert unmapped == sorted(UNMAPPED_OPS), (
        f"op classes without an ONNX mapping: {sorted(set(unmapped) - set(UNMAPPED_OPS))}: map them in "
        "needle/onnx/ops_table.py (an elementwise primitive: give its row an `onnx` name), or list them in "
        "UNMAPPED_OPS with the reason")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_exports_with_needles_numbers(name):
    within_f32_rounding(MODULES[name])


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_exports_with_needles_numbers(name):
    within_f32_rounding(FUNCTIONS[name])


def test_every_tensor_function_has_an_example_or_a_reason():
    """The PyTorch-style functions (needle.functions) and the tensor ops of needle.ops that build
    forward computations: each has an example row above, or a reason it cannot be exported."""
    from needle import functions

    covered = set(TENSOR_FUNCTIONS) | set(NOT_EXPORTABLE_TENSOR_FUNCTIONS)
    words = " ".join(inspect.getsource(ex.build) for ex in TENSOR_FUNCTIONS.values())
    wanted = {n for n in functions.__all__ if n not in ("numel", "is_tensor", "is_floating_point")}
    wanted |= {"cat", "stack", "split", "chunk", "unbind", "narrow", "squeeze", "unsqueeze", "expand", "roll", "flip",
               "clone", "clamp", "tril", "triu", "masked_fill", "where", "maximum", "argsort", "sort", "topk",
               "gather", "var", "std", "sin", "cos", "log10", "log1p", "erf", "logsumexp", "isclose", "histc",
               "histogram", "matmul"}
    missing = sorted(n for n in wanted if n not in covered and f"{n}(" not in words)
    assert not missing, f"tensor functions without an ONNX example or a reason: {missing}"


@pytest.mark.parametrize("name", sorted(TENSOR_FUNCTIONS))
def test_tensor_function_exports_with_needles_numbers(name):
    within_f32_rounding(TENSOR_FUNCTIONS[name])


@pytest.mark.parametrize("name", sorted(NOT_EXPORTABLE_MODULES))
def test_what_cannot_be_exported_says_why(name):
    reason, message = NOT_EXPORTABLE_MODULES[name]
    cls = getattr(nn, name)
    model = cls([]) if name in ("ModuleList", "ParameterList") else cls({}) if name.endswith("Dict") else cls()
    with pytest.raises(NotImplementedError, match=message):
        needle.onnx.export(model, (np.ones((2, 3), np.float32),), None)


def readme_table() -> str:
    """The README's ONNX table: each module's max abs difference at the two batch sizes."""
    lines = [f"| module (example in tests/test_onnx_coverage.py) | batch {BATCHES[0]} | batch {BATCHES[1]} | "
             "largest output |", "| --- | --- | --- | --- |"]
    for name in sorted(MODULES):
        (d1, _), (d2, largest) = measure(MODULES[name])
        lines.append(f"| `{name}` | {_number(d1)} | {_number(d2)} | {largest:.2g} |")
    return "\n".join(lines)


def _number(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


if __name__ == "__main__":  # python tests/test_onnx_coverage.py: the README table
    sys.stdout.write(readme_table() + "\n")
