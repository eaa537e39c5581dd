"""needle.viz: computation graphs (graphviz), decision boundaries (matplotlib), the toy example."""
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.data import toy_datasets
from needle.models import MLP
from needle.viz import graph, model_predictor, plot_decision_boundary, render_graph
from needle.viz.boundary import predicted_classes
from testenv import requires_dot

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODE_RE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\]\s*$')
EDGE_RE = re.compile(r"^\s*(n\d+) -> (n\d+)(?: \[(.*)\])?\s*$")


def parse(dot):
    """({node id: (label fields, attribute text)}, [(tail, head), ...]) from a Digraph's body."""
    nodes, edges = {}, []
    for line in dot.body:
        m = NODE_RE.match(line)
        if m:
            label = m.group(2).strip("{}")
            fields = [f.replace("\\", "") for f in re.split(r"(?<!\\)\|", label)]
            nodes[m.group(1)] = (fields, m.group(3))
            continue
        m = EDGE_RE.match(line)
        assert m, f"unexpected line in the graph body: {line!r}"
        edges.append((m.group(1), m.group(2)))
    return nodes, edges


def tensor(shape, requires_grad=True, seed=0):
    data = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    return ndl.Tensor(data, dtype="float32", requires_grad=requires_grad)


def png_size(data: bytes):
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


# --- graph ------------------------------------------------------------------------------

def test_graph_nodes_and_edges_of_known_expression():
    a, b = tensor((2, 3), seed=1), tensor((2, 3), seed=2)
    y = (a * b + a).sum()
    nodes, edges = parse(graph(y))
    # topological order: leaves first, then the ops in the order they were applied
    assert [fields[0] for fields, _ in nodes.values()] == ["leaf", "leaf", "EWiseMul", "EWiseAdd", "Summation"]
    assert list(nodes) == ["n0", "n1", "n2", "n3", "n4"]
    assert sorted(edges) == sorted([("n0", "n2"), ("n1", "n2"), ("n2", "n3"), ("n0", "n3"), ("n3", "n4")])
    source = graph(y).source
    assert source.count("->") == 5
    # shapes and dtypes
    for node in ("n0", "n1", "n2", "n3"):
        assert "(2, 3) float32" in nodes[node][0]
    assert "() float32" in nodes["n4"][0]
    # the output is highlighted
    assert "penwidth=2" in nodes["n4"][1] and "penwidth" not in nodes["n3"][1]


def test_graph_is_deterministic():
    def build():
        a, b = tensor((3,), seed=1), tensor((3,), seed=2)
        return graph(((a - b) * a).sum(), names={a: "a"}).source

    assert build() == build()


def test_input_used_twice_gives_two_edges():
    x = tensor((4,))
    nodes, edges = parse(graph(x * x))
    assert edges == [("n0", "n1"), ("n0", "n1")]
    assert nodes["n1"][0][0] == "EWiseMul"
    # the input slots of a two-input op are labelled 0 and 1
    assert [line for line in graph(x * x).body if "->" in line] == [
        "\tn0 -> n1 [headlabel=0]\n", "\tn0 -> n1 [headlabel=1]\n"]


def test_grads_shown_after_backward():
    a, b = tensor((2, 3), seed=1), tensor((2, 3), seed=2)
    y = (a * b + a).sum()
    before, _ = parse(graph(y))
    assert not any("grad" in f for fields, _ in before.values() for f in fields)
    y.backward()
    after, _ = parse(graph(y))
    expected_a = np.linalg.norm(b.numpy() + 1)
    grad_a = [f for f in after["n0"][0] if f.startswith("grad")]
    assert grad_a == [f"grad (2, 3) norm={expected_a:.4g}"]
    assert after["n4"][0][-1] == "grad () norm=1"
    # show_grad=False hides them again
    hidden, _ = parse(graph(y, show_grad=False))
    assert not any("grad" in f for fields, _ in hidden.values() for f in fields)


def test_leaf_kinds_names_and_op_attributes():
    layer = nn.Linear(3, 2)
    x = tensor((4, 3), requires_grad=False)
    logits = layer(x)
    loss = ndl.summation(logits, axes=(1,)).sum()
    nodes, _ = parse(graph(loss, names={layer.weight: "W1", loss: "loss"}))
    labels = {fields[0]: fields for fields, _ in nodes.values()}
    assert labels["W1"][1] == "parameter" and "(3, 2) float32" in labels["W1"]
    assert "W1" in labels and "loss" in labels
    kinds = [fields[-2] if fields[0] in ("W1", "loss") else fields[0] for fields, _ in nodes.values()]
    assert kinds.count("parameter") == 2  # weight and bias
    assert kinds.count("constant") == 1  # x needs no grad
    assert "AddMM" in kinds  # the Linear layer: bias + x @ W as one op
    assert "Summation(axes=(1,))" in kinds
    assert labels["loss"][1] == "Summation"  # axes=None is not shown
    # {name: tensor} is accepted too, and parameters are coloured differently from constants
    nodes2, _ = parse(graph(loss, names={"W1": layer.weight}))
    assert sum(fields[0] == "W1" for fields, _ in nodes2.values()) == 1
    fills = {fields[0]: attrs for fields, attrs in nodes2.values()}
    assert fills["W1"] != fills["constant"]


def test_record_special_characters_are_escaped():
    a = tensor((2,))
    dot = graph(a * 2, names={a: "w{0}|<x>"})
    assert "w\\{0\\}\\|\\<x\\>" in dot.source
    nodes, _ = parse(dot)  # the escaped bar is inside the name field, not a field separator
    assert nodes["n0"][0] == ["w{0}|<x>", "leaf", "(2,) float32"]


@requires_dot
def test_record_special_characters_render(tmp_path):
    a = tensor((2,))
    dot = graph(a * 2, names={a: "w{0}|<x>"})
    path = render_graph(dot, str(tmp_path / "g.svg"))
    assert "w{0}|&lt;x&gt;" in Path(path).read_text()


def test_rankdir_top_to_bottom_groups_fields():
    a = tensor((2,))
    dot = graph(a + 1, rankdir="TB")
    assert "rankdir=TB" in dot.source
    assert '[label="{leaf|(2,) float32}"' in dot.source
    with pytest.raises(ValueError, match="rankdir"):
        graph(a + 1, rankdir="sideways")


def test_tensor_tuple_graph():
    a = tensor((2, 3))
    parts = ndl.split(a, 0)
    nodes, edges = parse(graph(parts))
    assert [f[0] for f, _ in nodes.values()] == ["leaf", "Split(axis=0)"]
    assert "tuple[2] (3,), (3,) float32" in nodes["n1"][0]
    total = (parts[0] * parts[1]).sum()
    nodes, edges = parse(graph(total))
    ops = [f[0] for f, _ in nodes.values()]
    assert ops == ["leaf", "Split(axis=0)", "TupleGetItem(index=0)", "TupleGetItem(index=1)", "EWiseMul",
                   "Summation"]
    assert edges.count(("n1", "n2")) == 1 and edges.count(("n1", "n3")) == 1


def test_max_nodes_error_counts_nodes():
    x = tensor((3,))
    y = x
    for _ in range(30):
        y = y * 1.5
    with pytest.raises(ValueError, match=r"has 31 nodes, more than max_nodes=10"):
        graph(y, max_nodes=10)
    assert len(parse(graph(y, max_nodes=31))[0]) == 31
    assert len(parse(graph(y, max_nodes=None))[0]) == 31


def test_graph_rejects_non_tensors():
    with pytest.raises(TypeError, match="Tensor"):
        graph(np.ones(3))
    with pytest.raises(TypeError, match="names"):
        graph(tensor((2,)), names={1: "x"})


@requires_dot
def test_render_graph_svg_and_png(tmp_path):
    a, b = tensor((2, 3), seed=1), tensor((2, 3), seed=2)
    y = (a * b + a).sum()
    y.backward()
    svg_path = tmp_path / "sub" / "g.svg"
    assert render_graph(y, str(svg_path)) == str(svg_path)
    svg = svg_path.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    for text in ("EWiseMul", "EWiseAdd", "Summation", "(2, 3) float32"):
        assert text in svg
    assert svg.count('class="edge"') == 5

    png = (tmp_path / "g.png")
    render_graph(y, str(png), names={a: "a"})
    width, height = png_size(png.read_bytes())
    assert width > 300 and height > 100
    # explicit format wins over the extension; no temporary files are left behind
    render_graph(y, str(tmp_path / "g.out"), format="png")
    assert (tmp_path / "g.out").read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.out", "g.png", "sub"]


def test_render_graph_rejects_unknown_formats_before_drawing(tmp_path):
    y = tensor((2,)) * 2
    with pytest.raises(ValueError, match="format"):
        render_graph(y, str(tmp_path / "g.gif"), format="gif")
    with pytest.raises(ValueError, match="format"):
        render_graph(y, str(tmp_path / "g.svg"), format="jpeg")
    assert list(tmp_path.iterdir()) == []


def test_render_graph_without_dot_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        render_graph(tensor((2,)) * 2, str(tmp_path / "g.svg"))
    assert not (tmp_path / "g.svg").exists()


def test_missing_optional_packages_have_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[plot\]"'):
        graph(tensor((2,)) * 2)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[plot\]"'):
        plot_decision_boundary(lambda p: p[:, 0], np.zeros((3, 2)), np.zeros(3), str(tmp_path / "b.png"))


def test_importing_viz_does_not_import_plot_libraries():
    code = ("import sys, needle.viz; "
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'graphviz')]; "
            "assert not loaded, loaded; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# --- decision boundaries -------------------------------------------------------------------

def blended(hex_color, alpha=0.28):
    """The RGB a class colour takes when drawn with `alpha` over white."""
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return 1.0 - alpha * (1.0 - rgb)


def colour_fraction(path, hex_color):
    import matplotlib.pyplot as plt

    image = plt.imread(path)[..., :3]
    close = np.abs(image - blended(hex_color)).max(axis=-1) < 0.02
    return close.mean()


BLUE, ORANGE, GREEN = "#1f77b4", "#ff7f0e", "#2ca02c"


def test_predicted_classes():
    np.testing.assert_array_equal(predicted_classes(np.array([[0.1, 0.9], [2.0, -1.0]])), [1, 0])
    np.testing.assert_array_equal(predicted_classes(np.array([0.2, 0.7])), [0, 1])  # probabilities
    np.testing.assert_array_equal(predicted_classes(np.array([-3.0, 1.5])), [0, 1])  # logits
    np.testing.assert_array_equal(predicted_classes(np.array([[-3.0], [2.0]])), [0, 1])
    np.testing.assert_array_equal(predicted_classes(np.array([2, 0, 1])), [2, 0, 1])  # labels
    with pytest.raises(ValueError, match="shape"):
        predicted_classes(np.zeros((2, 2, 2)))


def test_boundary_two_classes_without_history(tmp_path):
    X, y = toy_datasets.simple(80)
    seen = []

    def predict(points):
        seen.append((points.dtype, points.shape))
        return 1.0 / (1.0 + np.exp(-(0.5 - points[:, 0]) * 20))  # P(class 1) = left of x0 = 0.5

    path = tmp_path / "b.png"
    assert plot_decision_boundary(predict, X, y, str(path), resolution=50) == str(path)
    data = path.read_bytes()
    width, height = png_size(data)
    assert len(data) > 10_000 and width < 700  # one panel
    assert seen[0] == (np.float32, (2500, 2))
    # both class regions are painted, in the class colours, roughly half each
    blue, orange = colour_fraction(path, BLUE), colour_fraction(path, ORANGE)
    assert blue > 0.15 and orange > 0.15
    assert colour_fraction(path, GREEN) < 0.001


def test_boundary_three_classes_with_history(tmp_path):
    X, y = toy_datasets.spiral(90, classes=3)

    def predict(points):  # angle sectors around the centre
        angle = np.arctan2(points[:, 1] - 0.5, points[:, 0] - 0.5)
        centres = np.array([-2.0, 0.0, 2.0])
        return -np.abs(angle[:, None] - centres[None, :])

    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.2 / e} for e in range(1, 11)]
    path = tmp_path / "b3.png"
    plot_decision_boundary(predict, X, y, str(path), history=history, title="three", resolution=60)
    data = path.read_bytes()
    width, height = png_size(data)
    assert len(data) > 20_000 and width > 900  # two panels
    for colour in (BLUE, ORANGE, GREEN):
        assert colour_fraction(path, colour) > 0.03

    # a constant predictor paints one region only
    only = tmp_path / "one.png"
    plot_decision_boundary(lambda p: np.tile([0.0, 1.0, 0.0], (len(p), 1)), X, y, str(only), resolution=20)
    assert colour_fraction(only, ORANGE) > 0.2
    assert colour_fraction(only, BLUE) < 0.001 and colour_fraction(only, GREEN) < 0.001


def test_boundary_history_of_floats_and_label_predictor(tmp_path):
    X, y = toy_datasets.xor(60)
    labels = lambda p: ((p[:, 0] < 0.5) ^ (p[:, 1] > 0.5)).astype(np.int64)  # noqa: E731
    path = tmp_path / "xor.png"
    plot_decision_boundary(labels, X, y, str(path), history=[0.7, 0.5, 0.3, 0.2], resolution=40)
    width, _ = png_size(path.read_bytes())
    assert width > 900
    assert colour_fraction(path, BLUE) > 0.05 and colour_fraction(path, ORANGE) > 0.05


def test_boundary_input_errors(tmp_path):
    predict = lambda p: p[:, 0]  # noqa: E731
    out = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_decision_boundary(predict, np.zeros((4, 3)), np.zeros(4), out)
    with pytest.raises(ValueError, match="3 labels for 4 points"):
        plot_decision_boundary(predict, np.zeros((4, 2)), np.zeros(3), out)
    with pytest.raises(ValueError, match="history"):
        plot_decision_boundary(predict, np.zeros((4, 2)), np.zeros(4), out, history=[])
    with pytest.raises(ValueError, match="train_loss"):
        plot_decision_boundary(predict, np.zeros((4, 2)), np.zeros(4), out, history=[{"loss": 1.0}])
    with pytest.raises(ValueError, match="rows"):
        plot_decision_boundary(lambda p: p[:3, 0], np.random.rand(4, 2), np.zeros(4), out, resolution=5)
    assert not os.path.exists(out)


def test_model_predictor_eval_mode_and_no_graph():
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    predict = model_predictor(model, batch_size=7)
    points = np.random.RandomState(0).rand(20, 2)  # float64 in, float32 to the model
    out = predict(points)
    assert out.shape == (20, 3) and isinstance(out, np.ndarray)
    model.eval()
    expected = model(ndl.Tensor(points.astype(np.float32), requires_grad=False)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)  # dropout off: eval mode
    model.train()
    predict(points)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


def test_model_predictor_draws_trained_mlp(tmp_path):
    model = MLP(2, [8], 2)
    X, y = toy_datasets.simple(40)
    path = tmp_path / "mlp.png"
    plot_decision_boundary(model_predictor(model), X, y, str(path), resolution=30)
    assert png_size(path.read_bytes())[0] > 300


# --- the example script ----------------------------------------------------------------------

TOY_ARGS = ["--dataset", "xor", "--epochs", "3", "--n", "40", "--hidden", "8"]
TOY_GRAPH_TEXTS = ("AddMM", "ReLU", "layer0.weight", "parameter", "loss", "grad (")


def run_toy_example(out, env=None):
    script = REPO / "examples" / "toy_classifier.py"
    return subprocess.run([sys.executable, str(script), *TOY_ARGS, "--out", str(out)],
                          capture_output=True, text=True, cwd=out.parent, env=env)


@pytest.fixture(scope="module")
def toy_example(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "out"
    result = run_toy_example(out)
    assert result.returncode == 0, result.stderr
    return result, out


def test_toy_classifier_example(toy_example):
    result, out = toy_example
    assert "epoch    3" in result.stdout
    boundary = (out / "boundary.png").read_bytes()
    assert png_size(boundary)[0] > 900 and len(boundary) > 20_000
    source = (out / "graph.gv").read_text()
    assert source.startswith("digraph needle {") and "rankdir=TB" in source
    for text in TOY_GRAPH_TEXTS:
        assert text in source


@requires_dot
def test_toy_classifier_example_draws_the_graph(toy_example):
    result, out = toy_example
    svg = (out / "graph.svg").read_text()
    assert "<svg" in svg
    for text in TOY_GRAPH_TEXTS:
        assert text in svg
    assert "not installed" not in result.stdout


def test_toy_classifier_example_without_dot(tmp_path):
    """Without graphviz's dot the example still succeeds: boundary and graph source, and a note."""
    env = dict(os.environ, PATH=str(tmp_path))  # an empty PATH: no dot, wherever it is installed
    out = tmp_path / "out"
    result = run_toy_example(out, env)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "dot is not installed" in notes[0] and "apt-get install graphviz" in notes[0]
    assert sorted(p.name for p in out.iterdir()) == ["boundary.png", "graph.gv"]
    for text in TOY_GRAPH_TEXTS:
        assert text in (out / "graph.gv").read_text()


def test_toy_classifier_help():
    script = REPO / "examples" / "toy_classifier.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--dataset", "--epochs", "--out", "spiral"):
        assert option in result.stdout
