"""needle.onnx: exported models give needle's numbers in onnxruntime; `needle export CHECKPOINT`.

Each model is exported at one batch size and run by onnxruntime (CPUExecutionProvider)
at that batch size and another one (the batch axis is dynamic), within float32 rounding of
needle's eager output (`F32_TOL`, relative to the outputs' scale). The remaining differences
are that rounding, a few parts in 1e7 of the outputs (both runtimes are that far from a
float64 evaluation): a float64 export of a two-layer Transformer matches to 1e-12.
"""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import needle as ndl
import needle.nn.functional as F
import needle.onnx
from needle import nn, ops
from needle.models import GPT, MLP, LanguageModel, MLPResNet, ResNet9
from needle.train import cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
# float32 exports: each runtime's outputs are within a few u = 2^-24 of a float64 evaluation,
# relative to their largest magnitude (the one-layer Transformer's logits, up to ~15: 2-3e-7 of
# that, needle and onnxruntime alike), in a summation order and with exp/tanh kernels that each
# runtime picks for the CPU (SIMD width, BLAS kernel). So the two may differ by the sum of two
# such errors; 16 u each, of the outputs' scale (1 below that), is 1.9e-6 of it. (An absolute
# 1e-5 left the Transformer's 4e-6 too little room on a CPU whose kernels round the other way.)
F32_TOL = 2 * 16 * 2.0 ** -24


# ----------------------------------------------------------------------------- helpers

def flat(result):
    """A model's result (tensors in nested tuples) as a list of numpy arrays."""
    if isinstance(result, ndl.Tensor):
        return [result.numpy()]
    return [a for item in result for a in flat(item)]


def needle_outputs(model, x):
    model.eval()
    with ndl.no_grad():
        return flat(model(ndl.Tensor(x, dtype=x.dtype.name)))


def runtime(model_or_path):
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def max_difference(session, model, x, scaled=False):
    """The largest |onnxruntime - needle| over the outputs; `scaled`: divided by the outputs'
    largest magnitude (or 1, if that is smaller), the measure `F32_TOL` bounds."""
    got = session.run(None, {session.get_inputs()[0].name: x})
    want = needle_outputs(model, x)
    assert [g.shape for g in got] == [w.shape for w in want]
    difference = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    return difference / max(1.0, *(float(np.abs(w).max()) for w in want)) if scaled else difference


def floats(*shape):
    return lambda batch: np.random.randn(batch, *shape).astype(np.float32)


def token_ids(seq_len, vocabulary):
    return lambda batch: np.random.randint(0, vocabulary, (seq_len, batch)).astype(np.int64)


def with_running_stats(model, x):
    """A few training-mode passes, so that BatchNorm's running statistics are not 0 and 1."""
    model.train()
    for _ in range(2):
        model(ndl.Tensor(x * 2 + 0.5))
    return model


# ----------------------------------------------------------------------------- the five models

def mlp():
    return MLP(8, [16, 16], 5), floats(8), 0


def mlp_resnet():
    model = MLPResNet(12, 16, num_blocks=2, num_classes=5, drop_prob=0.5)
    return with_running_stats(model, floats(12)(10)), floats(12), 0


def resnet9():
    return with_running_stats(ResNet9(), floats(3, 32, 32)(4)), floats(3, 32, 32), 0


def lstm_lm():
    return LanguageModel(8, 20, 12, num_layers=2, seq_model="lstm"), token_ids(6, 20), 1


def transformer_lm():
    # one layer: its logits (up to ~15) keep float32's rounding (2-3e-7 of them, in needle and
    # onnxruntime alike) under F32_TOL; two layers are checked in float64 below
    return LanguageModel(16, 20, 32, num_layers=1, seq_model="transformer", seq_len=8), token_ids(8, 20), 1


@pytest.mark.parametrize("build", [mlp, mlp_resnet, resnet9, lstm_lm, transformer_lm],
                         ids=lambda f: f.__name__)
def test_onnxruntime_gives_needles_outputs_at_two_batch_sizes(build, tmp_path):
    model, make, axis = build()
    path = tmp_path / "model.onnx"
    needle.onnx.export(model, (make(3),), str(path), batch_axes=axis)
    session = runtime(path)
    assert session.get_inputs()[0].shape[axis] == "batch"
    for batch in (3, 5):
        assert max_difference(session, model, make(batch), scaled=True) <= F32_TOL


def test_export_restores_modes_and_flags():
    model, make, _ = mlp_resnet()
    model.train()
    needle.onnx.export(model, (make(2),), None)
    bn = model.modules[2].modules[0].fn.modules[1]
    assert model.training and bn.training
    assert not bn.running_mean.requires_grad and bn.weight.requires_grad


def test_transformer_export_is_exact_in_float64():
    model = LanguageModel(16, 20, 32, num_layers=2, seq_model="transformer", seq_len=8, dtype="float64")
    ids = token_ids(8, 20)
    proto = needle.onnx.export(model, (ids(2),), None, batch_axes=1)
    assert max_difference(runtime(proto), model, ids(4)) <= 1e-12


def test_lstm_outputs_and_their_batch_dimensions():
    model, make, _ = lstm_lm()
    proto = needle.onnx.export(model, (make(2),), None, batch_axes=1, input_names=["tokens"],
                               output_names=["logits", "h_n", "c_n"])
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    assert shapes == {"logits": ["6*batch", 20], "h_n": [2, "batch", 12], "c_n": [2, "batch", 12]}
    assert proto.opset_import[0].version == needle.onnx.OPSET == 17


def test_parameters_and_buffers_are_initializers_by_state_dict_name():
    model, make, _ = mlp_resnet()
    proto = needle.onnx.export(model, (make(2),), None)
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) <= names


def test_embedding_with_float_ids_and_slices_relative_to_the_batch():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, 4)

        def forward(self, ids):
            y = self.embedding(ids)
            return y[1:, 1:] * 2, y[-1], ops.flip(y, (0,)), y[:, [0, 0, 1]]

    model = Model()
    make = lambda b: np.random.randint(0, 10, (b, 3)).astype(np.float32)  # noqa: E731  whole-number floats
    session = runtime(needle.onnx.export(model, (make(4),), None))
    for batch in (4, 6):
        assert max_difference(session, model, make(batch)) == 0


class EveryOp(nn.Module):
    """The mapped ops that the five models do not use, each once, on a (batch, 3, 4) float64
    input: in float64 both runtimes agree to rounding far below any float32 difference."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.random.randn(3, 4), dtype="float64")
        self.keep = ndl.Tensor(np.random.rand(3, 4) > 0.5, dtype="bool")  # a constant mask

    def forward(self, x):
        w = self.w.broadcast_to(x.shape)
        p = ops.exp(x) + 0.5  # positive
        y = ops.log(p) * 3 - p ** w + 2 ** x - 1 / p + ops.sqrt(p) + p ** 1.5 + p ** -0.5 + p ** 2
        y = ops.maximum(y, w) + ops.maximum(x, 0.1) + ops.where(self.keep.broadcast_to(x.shape), y, -x)
        y = ops.cast(ops.cast(y, "float32") * 2, "float64") / 2 + ops.sigmoid(x) + ops.tanh(-x)
        a, b = ops.fused_add_scalars(y, 1.0, -2.0)
        z = ops.permute(a * b, (2, 0, 1))  # (4, batch, 3)
        rows = ops.stack(list(ops.split(z, 2)), 0)  # split along a fixed axis, stacked back
        return (ops.max(rows, axes=(1,)), ops.logsumexp(y, axes=(1, 2)), ops.logsoftmax(y, axis=1),
                ops.flip(y, (1, 2)), ops.summation(y, axes=None), ops.transpose(y).relu())


def test_every_other_mapped_op_is_exact_in_float64():
    model = EveryOp()
    make = lambda batch: np.random.randn(batch, 3, 4) / 2  # noqa: E731  float64, outputs up to ~1e3
    proto = needle.onnx.export(model, (make(3),), None)
    used = {type(n.op).__name__ for n in needle.onnx.trace.capture(model, [ndl.Tensor(make(2))]).nodes if n.op}
    assert {"EWisePow", "RPowerScalar", "Maximum", "MaximumScalar", "Where", "Cast", "FusedAddScalars", "Permute",
            "Stack", "Split", "Max", "LogSumExp", "LogSoftmax", "Flip", "Log", "Exp", "Sqrt"} <= used
    session = runtime(proto)
    for batch in (3, 6):
        assert max_difference(session, model, make(batch)) <= 1e-10  # float32 would differ by ~1e-4


class Convolutions(nn.Module):
    """Conv2d's settings beyond the course's nn.Conv, and Conv1d: each an ONNX Conv with its
    pads, strides, dilations and group (reflect padding: two Gathers before it)."""

    def __init__(self, dtype):
        super().__init__()
        self.layers = [nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=2, groups=2, dtype=dtype),
                       nn.Conv2d(6, 6, 4, padding="same", groups=6, dtype=dtype),  # uneven pads (1, 2)
                       nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect", bias=False, dtype=dtype)]
        self.line = nn.Conv1d(4, 3, 3, stride=2, padding=1, dtype=dtype)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        n, c, h, w = x.shape
        return x, self.line(x.reshape((n, c, h * w)))


def test_conv2d_and_conv1d_export_with_their_geometry():
    """float32 only: onnxruntime's CPU Conv has no float64 kernel."""
    model = Convolutions("float32")
    make = lambda batch: np.random.randn(batch, 4, 9, 11).astype(np.float32)  # noqa: E731
    proto = needle.onnx.export(model, (make(3),), None)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    attrs = [{a.name: list(a.ints) or a.i for a in n.attribute} for n in convs]
    assert [(a["pads"], a["strides"], a["dilations"], a["group"]) for a in attrs] == [
        ([1, 2, 1, 2], [2, 1], [2, 2], 2), ([1, 1, 2, 2], [1, 1], [1, 1], 6), ([0, 0, 0, 0], [1, 1], [1, 1], 1),
        ([0, 1, 0, 1], [1, 2], [1, 1], 1)]
    session = runtime(proto)
    for batch in (3, 5):
        assert max_difference(session, model, make(batch), scaled=True) <= F32_TOL


class PyTorchLayers(nn.Module):
    """ConvTranspose2d (an ONNX ConvTranspose: strides, pads, group, dilations, output_padding),
    ReLU(inplace=True), Dropout2d (identity in evaluation) and LayerNorm over two axes."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.up2 = nn.ConvTranspose2d(6, 3, (2, 3), stride=(2, 3), dilation=(1, 2), output_padding=(1, 2), bias=False)
        self.relu, self.drop = nn.ReLU(inplace=True), nn.Dropout2d(0.5)
        self.norm = nn.LayerNorm((3, 8))

    def forward(self, x):
        y = self.up2(self.drop(self.relu(self.up(x))))  # (N, 3, 22, ...)
        return self.norm(ops.permute(y, (0, 3, 1, 2))[:, :, :, :8])


def test_conv_transpose_relu_inplace_and_layer_norm_export():
    """float32 only: onnxruntime's CPU ConvTranspose has no float64 kernel."""
    model = PyTorchLayers()
    make = lambda batch: np.random.randn(batch, 4, 5, 6).astype(np.float32)  # noqa: E731
    proto = needle.onnx.export(model, (make(2),), None)
    convs = [{a.name: list(a.ints) or a.i for a in n.attribute} for n in proto.graph.node
             if n.op_type == "ConvTranspose"]
    assert [(a["strides"], a["pads"], a["group"], a["dilations"], a["output_padding"]) for a in convs] == [
        ([2, 2], [1, 1, 0, 0], 2, [1, 1], [0, 0]), ([2, 3], [0, 0, 0, 0], 1, [1, 2], [1, 2])]
    session = runtime(proto)
    for batch in (2, 3):
        assert max_difference(session, model, make(batch), scaled=True) <= F32_TOL


def test_gru_exports_like_lstm():
    model = nn.GRU(3, 5, num_layers=2, dtype="float64")
    make = lambda batch: np.random.randn(4, batch, 3)  # noqa: E731
    session = runtime(needle.onnx.export(model, (make(2),), None, batch_axes=1))
    for batch in (2, 5):
        assert max_difference(session, model, make(batch)) <= 1e-12


class Attention(nn.Module):
    """scaled_dot_product_attention, causal and with a constant bool mask (its dead query row
    gives zeros): MatMul, Where and Softmax with constant masks."""

    def __init__(self):
        super().__init__()
        mask = np.random.rand(5, 5) < 0.7
        mask[3] = False
        self.mask = ndl.Tensor(mask, dtype="bool")

    def forward(self, x):
        causal = F.scaled_dot_product_attention(x, x * 2, x, is_causal=True)
        return causal + F.scaled_dot_product_attention(x, x, x * 3, attn_mask=self.mask, scale=0.3)


def test_scaled_dot_product_attention_exports_exactly_in_float64():
    model = Attention()
    make = lambda batch: np.random.randn(batch, 2, 5, 4)  # noqa: E731
    session = runtime(needle.onnx.export(model, (make(2),), None))
    for batch in (2, 4):
        assert max_difference(session, model, make(batch)) <= 1e-12


def test_a_layer_that_compares_its_input_exports_the_comparison():
    """Softplus and LeakyReLU choose a branch by comparing the input: the comparison is a node of
    the graph (ONNX Greater), not a constant, so both branches follow the input at run time."""
    for layer in (nn.Softplus(beta=2, threshold=3), nn.LeakyReLU(0.2)):
        make = lambda batch: np.random.randn(batch, 5).astype(np.float32) * 4  # noqa: E731  both branches
        proto = needle.onnx.export(layer, (make(2),), None)
        assert "Greater" in {n.op_type for n in proto.graph.node}
        session = runtime(proto)
        for batch in (2, 7):
            assert max_difference(session, layer, make(batch), scaled=True) <= F32_TOL


def test_fixed_batch_export():
    model, make, _ = mlp()
    proto = needle.onnx.export(model, (make(3),), None, dynamic_batch=False)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 8]
    assert max_difference(runtime(proto), model, make(3), scaled=True) <= F32_TOL


# ----------------------------------------------------------------------------- dynamic axes

def shapes_of(values):
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_gpt_exports_with_a_dynamic_batch_and_sequence_length():
    """GPT: the causal mask is a Slice of the stored (block_size, block_size) mask whose end is the
    input's length, the position ids are computed for that length; every length up to block_size
    runs, at any batch size (the example is at block_size itself)."""
    model = GPT(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
    ids = lambda b, t: np.random.randint(0, 13, (b, t)).astype(np.int64)  # noqa: E731
    proto = needle.onnx.export(model, (ids(2, 8),), None, input_names=["idx"], output_names=["logits"],
                               dynamic_axes={"idx": {0: "batch", 1: "sequence"},
                                             "logits": {0: "batch", 1: "sequence"}})
    assert shapes_of(proto.graph.input) == {"idx": ["batch", "sequence"]}
    assert shapes_of(proto.graph.output) == {"logits": ["batch", "sequence", 13]}
    session = runtime(proto)
    model.eval()
    for b, t in [(1, 1), (3, 2), (2, 5), (4, 8)]:
        x = ids(b, t)
        (got,) = session.run(None, {"idx": x})
        with ndl.no_grad():
            want = model(ndl.Tensor(x, dtype="int64"))[0].numpy()
        assert got.shape == (b, t, 13)
        assert np.abs(got - want).max() <= F32_TOL * max(1.0, float(np.abs(want).max()))


def test_transformer_language_model_exports_a_dynamic_sequence_length():
    """(seq_len, batch) ids: logits (seq_len * batch, vocabulary) -- a product of the two sizes --
    and the Transformer's positions (an arange of the length) follow the input."""
    model = LanguageModel(8, 20, 12, num_layers=1, seq_model="transformer", seq_len=10, num_head=2, dim_head=4)
    proto = needle.onnx.export(model, (token_ids(6, 20)(2),), None, input_names=["tokens"],
                               output_names=["logits", "state"], dynamic_axes={"tokens": {0: "sequence", 1: "batch"}})
    assert shapes_of(proto.graph.output) == {"logits": ["batch*sequence", 20], "state": ["sequence", "batch", 8]}
    session = runtime(proto)
    for t, b in [(1, 1), (3, 4), (10, 2)]:
        assert max_difference(session, model, token_ids(t, 20)(b), scaled=True) <= F32_TOL


@pytest.mark.parametrize("seq_model", ["lstm", "rnn"])
def test_an_rnn_over_a_dynamic_sequence_is_refused_with_the_reason(seq_model):
    model = LanguageModel(4, 10, 6, seq_model=seq_model)
    with pytest.raises(ValueError, match=r"RNN/LSTM/GRU unrolled over the sequence.*fixed size"):
        needle.onnx.export(model, (token_ids(5, 10)(2),), None, dynamic_axes={"input_0": {0: "seq", 1: "batch"}})


@pytest.mark.parametrize("seq_model", ["lstm", "rnn"])
def test_an_rnn_language_models_initial_state_is_an_optional_input(seq_model):
    """h0 (and c0) are inputs with a zero default: left out, the model runs from zeros; given, from
    them; the final state is an output."""
    model = LanguageModel(4, 10, 6, num_layers=2, seq_model=seq_model)
    zeros = np.zeros((2, 3, 6), np.float32)
    names = ["tokens", "h0", "c0"] if seq_model == "lstm" else ["tokens", "h0"]
    state = (zeros, zeros) if seq_model == "lstm" else zeros
    proto = needle.onnx.export(model, (token_ids(5, 10)(3), state), None, batch_axes=1, input_names=names,
                               optional_inputs=names[1:])
    assert shapes_of(proto.graph.input) == {"tokens": [5, "batch"], **{n: [2, "batch", 6] for n in names[1:]}}
    defaults = {t.name: list(t.dims) for t in proto.graph.initializer if t.name in names}
    assert defaults == {n: [2, 1, 6] for n in names[1:]}  # stored once, expanded to the batch
    session = runtime(proto)
    model.eval()
    for batch in (1, 4):
        x = token_ids(5, 10)(batch)
        assert max_difference(session, model, x, scaled=True) <= F32_TOL
        given = [np.random.randn(2, batch, 6).astype(np.float32) for _ in names[1:]]
        got = session.run(None, {"tokens": x, **dict(zip(names[1:], given))})
        h = tuple(ndl.Tensor(g) for g in given) if seq_model == "lstm" else ndl.Tensor(given[0])
        with ndl.no_grad():
            want = flat(model(ndl.Tensor(x, dtype="int64"), h))
        assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= F32_TOL * max(
            1.0, *(float(np.abs(w).max()) for w in want))


def test_a_mean_over_a_dynamic_axis_divides_by_its_size():
    """mean over the batch and sequence: the count is computed from the input's shape."""
    class Pool(nn.Module):
        def forward(self, x):
            return ops.mean(x, axes=(0, 1)), ops.mean(x)

    model = Pool()
    make = lambda b, t: np.random.randn(b, t, 3)  # noqa: E731
    session = runtime(needle.onnx.export(model, (make(2, 4),), None, dynamic_axes={"input_0": {0: "b", 1: "t"}}))
    for b, t in [(1, 1), (5, 2), (3, 7)]:
        x = make(b, t)
        got = session.run(None, {"input_0": x})
        assert np.abs(got[0] - x.mean(axis=(0, 1))).max() <= 1e-12 and abs(got[1] - x.mean()) <= 1e-12


def test_a_size_that_is_not_of_degree_one_is_refused():
    """A size T * T (a flattened T x T attention map) is found at the check point, not exported wrong."""
    class Square(nn.Module):
        def forward(self, x):
            t = x.shape[0]
            return (x.reshape((t, 1)) @ x.reshape((1, t))).reshape((t * t,))

    with pytest.raises(ValueError, match="no polynomial of degree one"):
        needle.onnx.export(Square(), (np.random.randn(4),), None)


def test_dynamic_axes_errors_name_the_problem():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"dynamic_axes names \['y'\], which are not inputs"):
        needle.onnx.export(nn.Linear(3, 2), (x,), None, dynamic_axes={"y": {0: "batch"}})
    with pytest.raises(ValueError, match="dynamic axis 2 of input 'input_0' of shape"):
        needle.onnx.export(nn.Linear(3, 2), (x,), None, dynamic_axes={"input_0": {2: "batch"}})
    with pytest.raises(ValueError, match=r"axis 1 of output 'output_0' is batch, but the graph computes it as 2"):
        needle.onnx.export(nn.Linear(3, 2), (x,), None, dynamic_axes={"input_0": {0: "batch"},
                                                                       "output_0": {1: "batch"}})
    with pytest.raises(ValueError, match="the inputs' 'batch' axes have different sizes"):
        needle.onnx.export(Concat2(), (x, np.ones((3, 3), np.float32)), None)
    with pytest.raises(ValueError, match="optional input 'input_0' is its example value"):
        needle.onnx.export(nn.Linear(3, 2), (np.random.randn(2, 3).astype(np.float32),), None,
                           optional_inputs=["input_0"])


class Concat2(nn.Module):
    def forward(self, a, b):
        return a.sum() + b.sum()


def test_points_fit_sizes_of_degree_one_in_each_axis():
    from needle.onnx.dynamic import Points, Sym

    points = Points(["b", "t"], [3, 8], [1, -1])  # b: 3, 4; t: 8, 7; the check point (5, 6)
    sizes = [points.sizes(k) for k in range(len(points.values))]
    assert len(sizes) == 5 and sizes[-1] == {"b": 5, "t": 6}
    assert points.fit([s["b"] * s["t"] * 4 + 1 for s in sizes]) == Sym((((), 1), (("b", "t"), 4)))
    assert str(points.fit([s["b"] * s["t"] * 4 + 1 for s in sizes])) == "4*b*t+1"
    assert str(points.fit([2 * s["t"] - s["b"] for s in sizes])) == "-b+2*t"
    assert points.fit([7] * 5) == 7
    with pytest.raises(ValueError, match="no polynomial"):
        points.fit([s["t"] ** 2 for s in sizes])


def test_comparisons_keep_needles_dtypes_and_nan_rules():
    """int64 against a fractional scalar compares in float64 (2 < 2.5), bools order as 0 < 1, and
    != is true for nan (IEEE), each as a graph node."""
    class Compare(nn.Module):
        def forward(self, x, ids, flags):
            return (ops.less(ids, 2.5), ops.greater_equal(ids, 3), ops.less(flags, ops.greater(x, 0)),
                    ops.not_equal(x, x), ops.equal(ids, ops.flip(ids, (1,))), ops.not_equal(x, 0.5))

    x = np.array([[0.5, np.nan, -1.0], [2.0, 0.0, np.inf]], np.float32)
    ids = np.array([[1, 2, 3], [4, 2, 0]], np.int64)
    flags = np.array([[True, False, True], [False, False, True]])
    model = Compare()
    proto = needle.onnx.export(model, (x, ids, flags), None, dynamic_batch=False)
    got = runtime(proto).run(None, {"input_0": x, "input_1": ids, "input_2": flags})
    with ndl.no_grad():
        want = flat(model(ndl.Tensor(x), ndl.Tensor(ids, dtype="int64"), ndl.Tensor(flags, dtype="bool")))
    for g, w in zip(got, want):
        assert g.dtype == np.bool_ and np.array_equal(g, w)
    assert np.array_equal(want[3], np.isnan(x))


def test_log1p_is_accurate_near_zero():
    """ONNX has no Log1p: log(u) * x / (u - 1), u = 1 + x, keeps log1p's digits where log(1 + x)
    would lose them all, in float64 to a few ulps of numpy's log1p."""
    class Log1p(nn.Module):
        def forward(self, x):
            return ops.log1p(x)

    x = np.array([[1e-300, -1e-17, 3e-12, -0.4, 2.0, 1e300, -1.0, np.inf, -2.0, np.nan]])
    with np.errstate(divide="ignore", invalid="ignore"):  # log1p(-1) = -inf, log1p(-2) = nan
        got = runtime(needle.onnx.export(Log1p(), (x,), None)).run(None, {"input_0": x})[0]
        want = np.log1p(x)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    finite = np.isfinite(want)
    assert np.all(np.abs(got[finite] - want[finite]) <= 4 * np.spacing(np.abs(want[finite])))


def test_a_detached_value_is_the_value_in_the_graph():
    """detach() changes gradients only: a detached copy of a graph value is that value in the export."""
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            y = self.linear(x)
            return y * y.detach() + self.linear.weight.detach().sum()

    model = Detached()
    make = lambda b: np.random.randn(b, 3).astype(np.float32)  # noqa: E731
    proto = needle.onnx.export(model, (make(2),), None)
    assert not [t for t in proto.graph.initializer if tuple(t.dims) == (3, 3) and t.name != "linear.weight"]
    session = runtime(proto)
    for batch in (2, 5):
        assert max_difference(session, model, make(batch), scaled=True) <= F32_TOL


def test_capture_records_every_op_and_eager_keeps_constants():
    """Eager: a comparison (or an op on constants) is a constant leaf; under recording_every_op it
    is a node that needs no gradient."""
    from needle.autograd import recording_every_op

    x = ndl.Tensor(np.random.randn(3), requires_grad=True)
    ids = ndl.Tensor(np.array([0, 2]), dtype="int64")
    assert (x > 0).op is None and (ids + 1).op is None
    with recording_every_op():
        mask, shifted = x > 0, ids + 1
    assert isinstance(mask.op, ops.GreaterScalar) and mask.inputs[0] is x and not mask.requires_grad
    assert isinstance(shifted.op, ops.AddScalar) and not shifted.requires_grad
    assert (x > 0).op is None  # the mode ends with the block


# ----------------------------------------------------------------------------- what cannot be exported

class Dilated(nn.Module):
    def forward(self, x):
        return ops.dilate(x, (1,), 1)


class Foo(ndl.TensorOp):
    def compute(self, a):
        return a


class UsesFoo(nn.Module):
    def forward(self, x):
        return Foo()(x) * 2


@pytest.mark.parametrize("model, qualified", [(Dilated(), "needle.ops.shape.Dilate"),
                                              (UsesFoo(), f"{__name__}.Foo")], ids=["Dilate", "Foo"])
def test_an_op_without_mapping_is_named(model, qualified):
    op = qualified.rsplit(".", 1)[1]
    with pytest.raises(NotImplementedError, match=rf"no ONNX mapping for op {op} \({qualified}\)"):
        needle.onnx.export(model, (np.ones((3, 4), np.float32),), None)


def test_a_constant_computed_from_the_inputs_data_is_refused():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            positive = ndl.Tensor(x.numpy() > 0, dtype="bool")  # made from the data: the graph cannot see it
            return ops.where(positive, self.linear(x), 0.0)

    with pytest.raises(ValueError, match="depends on the input's data"):
        needle.onnx.export(Masked(), (np.random.randn(4, 3).astype(np.float32),), None)


def test_an_input_outside_the_graph_is_refused():
    class Ignores(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x, y):
            return self.linear(x)

    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="input 'input_1' does not reach the outputs"):
        needle.onnx.export(Ignores(), (x, x), None)


def test_needle_imports_without_onnx():
    code = (
        "import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
        "import numpy as np, needle, needle.onnx\n"
        "from needle.train import cli\n"
        "try:\n"
        "    needle.onnx.export(needle.nn.Linear(2, 2), (np.ones((1, 2), np.float32),), None)\n"
        "except ImportError as err:\n"
        "    print('ImportError:', err)\n"
        "print('rc', cli.main(['export', 'missing.safetensors', '--out', 'x.onnx']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'ImportError: needle.onnx needs the onnx package: pip install -e ".[onnx]"' in proc.stdout
    assert "rc 2" in proc.stdout
    assert proc.stderr.strip() == 'needle: error: needle.onnx needs the onnx package: pip install -e ".[onnx]"'


# ----------------------------------------------------------------------------- needle export CHECKPOINT

def quiet_main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    rc, _, err = quiet_main("train", "--no-progress", "--epochs", 1, "--samples", 200, "--checkpoint", folder)
    assert rc == 0, err
    return folder / "last.safetensors"


def stored_model(checkpoint, model):
    arrays = load_file(str(checkpoint))
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
    return model


def test_cli_exports_a_toy_checkpoint(toy_checkpoint, tmp_path):
    out = tmp_path / "onnx" / "toy.onnx"
    rc, stdout, err = quiet_main("export", toy_checkpoint.parent, "--out", out)  # the run's folder works too
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["recipe"] == "toy" and summary["epoch"] == 1 and summary["opset"] == 17
    assert summary["inputs"] == {"x": ["batch", 2]} and summary["outputs"] == {"logits": ["batch", 3]}
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.onnx"]  # written atomically, no temporaries
    model = stored_model(toy_checkpoint, MLP(2, [64, 64], 3))
    session = runtime(out)
    for batch in (5, 17):
        assert max_difference(session, model, floats(2)(batch), scaled=True) <= F32_TOL


def test_cli_exports_an_lstm_language_model_checkpoint(tmp_path):
    rc, _, err = quiet_main("train", "lm", "--no-progress", "--epochs", 1, "--limit", 2000, "--seq-len", 8,
                            "--hidden", 16, "--embedding", 8, "--batch-size", 8, "--sample", 0,
                            "--checkpoint", tmp_path)
    assert rc == 0, err
    out = tmp_path / "lm.onnx"
    rc, stdout, err = quiet_main("export", tmp_path / "last.safetensors", "--out", out)
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["inputs"] == {"tokens": [8, "batch"], "h0": [1, "batch", 16], "c0": [1, "batch", 16]}
    vocabulary = summary["outputs"]["logits"][1]
    assert summary["outputs"] == {"logits": ["8*batch", vocabulary], "h_n": [1, "batch", 16],
                                  "c_n": [1, "batch", 16]}
    model = stored_model(tmp_path / "last.safetensors", LanguageModel(8, vocabulary, 16, 1, seq_model="lstm"))
    session = runtime(out)
    assert [i.name for i in session.get_inputs()] == ["tokens"]  # h0 and c0 may be left out: zeros
    for batch in (1, 3):
        assert max_difference(session, model, token_ids(8, vocabulary)(batch), scaled=True) <= F32_TOL
    # given, the initial state is used: the state after one window continues into the next
    first, second = token_ids(8, vocabulary)(3), token_ids(8, vocabulary)(3)
    _, h, c = session.run(None, {"tokens": first})
    got = session.run(None, {"tokens": second, "h0": h, "c0": c})
    model.eval()
    with ndl.no_grad():
        want = flat(model(ndl.Tensor(second, dtype="int64"), (ndl.Tensor(h), ndl.Tensor(c))))
    scale = max(1.0, *(float(np.abs(w).max()) for w in want))
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= F32_TOL * scale


def test_cli_exports_a_gpt_checkpoint(tmp_path):
    """`needle train gpt` stores its GPT's configuration in the checkpoint's info: the export
    rebuilds it and takes any batch and any length up to block_size."""
    from needle.train.recipes import TINY_SHAKESPEARE

    rc, _, err = quiet_main("train", "gpt", "--limit", 20000, "--iters", 4, "--eval-interval", 2, "--eval-iters", 1,
                            "--batch-size", 2, "--block-size", 8, "--n-layer", 1, "--n-head", 2, "--n-embd", 8,
                            "--no-progress", "--sample", 0, "--text", TINY_SHAKESPEARE, "--checkpoint", tmp_path)
    assert rc == 0, err
    out = tmp_path / "gpt.onnx"
    rc, stdout, err = quiet_main("export", tmp_path, "--out", out)
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    vocabulary = summary["outputs"]["logits"][2]
    assert summary["recipe"] == "gpt" and summary["inputs"] == {"idx": ["batch", "sequence"]}
    assert summary["outputs"] == {"logits": ["batch", "sequence", vocabulary]}
    from needle.train.sample import load_gpt_checkpoint

    model, _ = load_gpt_checkpoint(str(tmp_path / "last.safetensors"))
    model.eval()
    session = runtime(out)
    for b, t in [(1, 8), (3, 5)]:
        x = np.random.randint(0, vocabulary, (b, t)).astype(np.int64)
        (got,) = session.run(None, {"idx": x})
        with ndl.no_grad():
            want = model(ndl.Tensor(x, dtype="int64"))[0].numpy()
        assert np.abs(got - want).max() <= F32_TOL * max(1.0, float(np.abs(want).max()))


def _rewrite(source, target, *, arrays=None, meta_change=None):
    arrays = load_file(str(source)) if arrays is None else arrays
    with safe_open(str(source), framework="numpy") as f:
        meta = json.loads(f.metadata()["needle_checkpoint"])
    if meta_change:
        meta_change(meta)
    save_file(arrays, str(target), metadata={"needle_checkpoint": json.dumps(meta)})


def _bad_checkpoint(kind, good, path):
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint" * 8)
    elif kind == "corrupted":  # one weight changed after the checksum was taken
        arrays = load_file(str(good))
        arrays["model/0.weight"][0, 0] += 1
        _rewrite(good, path, arrays=arrays)
    elif kind == "unknown-recipe":
        _rewrite(good, path, meta_change=lambda meta: meta["info"]["config"].update(recipe="nope"))
    elif kind == "not-a-checkpoint":
        save_file({"x": np.zeros(2, np.float32)}, str(path))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"),
    ("garbage", "is not a readable safetensors file"),
    ("not-a-checkpoint", "is not a needle checkpoint"),
    ("corrupted", "is corrupted"),
    ("unknown-recipe", "recipe 'nope' cannot be exported"),
])
def test_cli_export_errors_are_one_line(toy_checkpoint, tmp_path, kind, message):
    path = _bad_checkpoint(kind, toy_checkpoint, tmp_path / "ckpt.safetensors")
    out = tmp_path / "model.onnx"
    rc, stdout, err = quiet_main("export", path, "--out", out)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("needle: error:") and message in err, err
    assert not out.exists()


def test_cli_export_out_is_a_folder(toy_checkpoint, tmp_path):
    rc, _, err = quiet_main("export", toy_checkpoint, "--out", tmp_path)
    assert rc == 2 and err.startswith("needle: error: --out") and "is a folder" in err


def test_export_to_an_unwritable_place_names_the_target(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a folder")
    path = str(regular / "m.onnx")
    model, make, axis = mlp()
    with pytest.raises(OSError) as err:  # serialization.WriteError, errno ENOTDIR
        needle.onnx.export(model, (make(3),), path, batch_axes=axis)
    assert path in str(err.value) and "Not a directory" in str(err.value)
    assert ".tmp-" not in str(err.value)


def test_cli_export_empty_out_is_refused(toy_checkpoint):
    rc, out, err = quiet_main("export", toy_checkpoint, "--out", "")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("needle: error: argument --out") and "empty" in err, err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc here")
def test_cli_export_out_where_no_file_can_be_made_is_refused_before_work(toy_checkpoint, monkeypatch):
    import needle.train.export

    monkeypatch.setattr(needle.train.export, "export_checkpoint",
                        lambda *a, **k: pytest.fail("exported although --out cannot be written"))
    rc, _, err = quiet_main("export", toy_checkpoint, "--out", "/proc/model.onnx")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("needle: error: --out /proc/model.onnx"), err


def test_cli_export_write_failure_names_out_not_the_temporary(toy_checkpoint, tmp_path, monkeypatch):
    import needle.onnx.exporter
    from needle import serialization

    def full_disk(path, data):
        raise serialization.WriteError(28, "No space left on device", path)

    monkeypatch.setattr(needle.onnx.exporter, "atomic_write_bytes", full_disk)
    out = tmp_path / "m.onnx"
    rc, _, err = quiet_main("export", toy_checkpoint, "--out", out)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"needle: error: --out {out}") and "No space left" in err and ".tmp-" not in err


def test_the_ops_backward_passes_use_export_as_their_formulas():
    """ops.add_n (ONNX Sum), ops.MatMulTransposed (Transpose + MatMul) and ops.layer_norm's
    statistics, used in a forward pass, run in onnxruntime with needle's numbers (float64)."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(ndl.Tensor(np.random.RandomState(0).randn(5, 3), dtype="float64"))
            self.gamma = nn.Parameter(ndl.Tensor(np.ones(3), dtype="float64"))
            self.beta = nn.Parameter(ndl.Tensor(np.zeros(3), dtype="float64"))

        def forward(self, x):
            y = ops.MatMulTransposed(False, True)(x, self.w)  # x @ w^T: (batch, 5)
            z = ops.MatMulTransposed(True, False)(self.w, self.w)  # w^T @ w: (3, 3)
            out, mean, var = ops.layer_norm(y @ self.w, self.gamma, self.beta).tuple()
            return ops.add_n([out, mean.broadcast_to(out.shape), var.broadcast_to(out.shape)]) + z.sum()

    model = Model()
    x = np.random.RandomState(1).randn(2, 3)
    proto = needle.onnx.export(model, (x,), None, batch_axes=0)
    assert max_difference(runtime(proto), model, np.random.RandomState(2).randn(4, 3)) <= 1e-12
