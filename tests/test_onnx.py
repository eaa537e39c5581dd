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
from needle.models import MLP, LanguageModel, MLPResNet, ResNet9
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


def test_a_layer_that_compares_its_input_is_refused_by_name():
    """Softplus and LeakyReLU choose a branch by comparing the input (a constant outside the op
    graph): the export refuses them with the exporter's reason, not a wrong graph."""
    for layer in (nn.Softplus(), nn.LeakyReLU(0.2)):
        with pytest.raises(ValueError, match="depends on the input's data"):
            needle.onnx.export(layer, (np.random.randn(2, 3).astype(np.float32),), None)


def test_fixed_batch_export():
    model, make, _ = mlp()
    proto = needle.onnx.export(model, (make(3),), None, dynamic_batch=False)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [3, 8]
    assert max_difference(runtime(proto), model, make(3), scaled=True) <= F32_TOL


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
            return ops.where(x > 0, self.linear(x), 0.0)  # x > 0 is a constant: the graph cannot see it

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
    assert summary["inputs"] == {"tokens": [8, "batch"]}
    vocabulary = summary["outputs"]["logits"][1]
    assert summary["outputs"] == {"logits": ["8*batch", vocabulary], "h_n": [1, "batch", 16],
                                  "c_n": [1, "batch", 16]}
    model = stored_model(tmp_path / "last.safetensors", LanguageModel(8, vocabulary, 16, 1, seq_model="lstm"))
    session = runtime(out)
    for batch in (1, 3):
        assert max_difference(session, model, token_ids(8, vocabulary)(batch), scaled=True) <= F32_TOL


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
