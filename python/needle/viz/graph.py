"""The computation graph behind a Tensor, as a graphviz Digraph (and SVG/PNG files).

    >>> loss = (a * b + a).sum()
    >>> dot = needle.viz.graph(loss, names={a: "a", b: "b"})
    >>> needle.viz.render_graph(loss, "graph.svg")

Nodes are the Values of `find_topo_sort([tensor])`, with ids n0, n1, ... in that
(inputs-before-users) order, so the drawing of a given expression is always the
same text. Each node is a record: optional name, op class name with its simple
attributes, e.g. Summation(axes=(1,)) (or "parameter", "leaf", "constant" for
leaves), shape and dtype, and, once `backward()` has run, the gradient's shape and norm.
There is one edge per input slot, so `x * x` draws two edges from x.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy

from .._packaging import install_hint
from ..autograd import TensorTuple, Value, find_topo_sort
from ..serialization import atomic_write_bytes

DEFAULT_MAX_NODES = 1000

# fill colours by node kind
_FILL = {
    "parameter": "#cdebc5",  # green
    "leaf": "#cfe0f7",  # blue: a leaf that requires grad (an input being differentiated)
    "constant": "#ececec",  # grey
    "op": "#ffffff",
    "output": "#fde3b0",  # orange: the tensor the graph was drawn for
}
_RECORD_SPECIAL = "\\{}|<>\""


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise ImportError(
            f"drawing computation graphs needs the graphviz Python package: {install_hint('plot')} "
            "(and the dot program: apt-get install graphviz)"
        ) from None
    return graphviz


def _escape(text: str) -> str:
    """Text safe inside a graphviz record label (braces, bars, angle brackets are syntax there)."""
    return "".join("\\" + ch if ch in _RECORD_SPECIAL else ch for ch in str(text))


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _parts(value: Value) -> Tuple[list, list]:
    """(shapes, dtypes) of a Tensor (one each) or of the members of a TensorTuple."""
    data = value.realize_cached_data()
    members = data if isinstance(value, TensorTuple) else (data,)
    return [tuple(m.shape) for m in members], [str(m.dtype) for m in members]


def _describe_data(value: Value) -> str:
    shapes, dtypes = _parts(value)
    if not isinstance(value, TensorTuple):
        return f"{_fmt_shape(shapes[0])} {dtypes[0]}"
    dtype = dtypes[0] if len(set(dtypes)) == 1 else "/".join(dtypes)
    shown = ", ".join(_fmt_shape(s) for s in shapes[:4]) + (", ..." if len(shapes) > 4 else "")
    return f"tuple[{len(shapes)}] {shown} {dtype}"


def _to_numpy(data) -> numpy.ndarray:
    return data if isinstance(data, numpy.ndarray) else numpy.asarray(data.numpy())


def _describe_grad(grad: Value) -> str:
    data = grad.realize_cached_data()
    members = data if isinstance(grad, TensorTuple) else (data,)
    arrays = [_to_numpy(m).astype(numpy.float64) for m in members]
    norm = float(numpy.sqrt(sum(float((a * a).sum()) for a in arrays)))
    if isinstance(grad, TensorTuple):
        shape = f"tuple[{len(arrays)}]"
    else:
        shape = _fmt_shape(arrays[0].shape)
    return f"grad {shape} norm={norm:.4g}"


def _simple(value) -> bool:
    if isinstance(value, (bool, int, float, str, numpy.integer, numpy.floating)):
        return True
    return isinstance(value, (tuple, list)) and len(value) <= 8 and all(
        isinstance(v, (bool, int, float, numpy.integer, numpy.floating)) for v in value
    )


def _op_attributes(op) -> str:
    """The op's short, informative attributes, e.g. "axes=(1,)" or "scalar=2.0" ("" if none)."""
    shown = []
    for key, value in sorted(vars(op).items()):
        if key.startswith("_") or value is None or value is False or not _simple(value):
            continue
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, (numpy.integer, numpy.floating)):
            value = value.item()
        text = f"{key}={value!r}" if not isinstance(value, float) else f"{key}={value:.4g}"
        shown.append(text if len(text) <= 28 else text[:25] + "...")
    return ", ".join(shown)


def _parameter_class():
    try:
        from ..nn import Parameter
    except ImportError:  # nn unavailable (e.g. a partially imported package): no Parameter nodes
        return None
    return Parameter


def _kind(value: Value, parameter_cls) -> str:
    if value.op is not None:
        return type(value.op).__name__
    if parameter_cls is not None and isinstance(value, parameter_cls):
        return "parameter"
    return "leaf" if value.requires_grad else "constant"


def _name_map(names) -> Dict[int, str]:
    """{id(value): name} from {value: name} or, for convenience, {name: value} / (name, value) pairs."""
    if names is None:
        return {}
    items = names.items() if isinstance(names, Mapping) else names
    out = {}
    for key, val in items:
        if isinstance(key, str) and isinstance(val, Value):
            key, val = val, key
        if not isinstance(key, Value):
            raise TypeError(f"graph names must map tensors to strings, got a key of type {type(key).__name__}")
        out[id(key)] = str(val)
    return out


def graph(
    tensor: Value,
    *,
    show_grad: bool = True,
    rankdir: str = "LR",
    max_nodes: Optional[int] = DEFAULT_MAX_NODES,
    names: Union[Mapping, Iterable, None] = None,
    show_attributes: bool = True,
):
    """The computation graph that ends at `tensor` (a Tensor or TensorTuple) as a graphviz.Digraph.

    Args:
        show_grad: add the gradient's shape and norm to nodes whose `.grad` is set.
        rankdir: graphviz layout direction ("LR", "TB", "RL", "BT").
        max_nodes: raise ValueError if the graph has more nodes than this (None: no limit).
        names: {tensor: "W1", ...} labels for chosen tensors ({"W1": tensor} is accepted too).
        show_attributes: show simple op attributes such as axes=(1,) or scalar=2.0.
    """
    if not isinstance(tensor, Value):
        raise TypeError(f"graph() needs a needle Tensor or TensorTuple, got {type(tensor).__name__}")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise ValueError(f"rankdir must be one of 'LR', 'RL', 'TB', 'BT', got {rankdir!r}")
    label_names = _name_map(names)
    nodes = find_topo_sort([tensor])
    if max_nodes is not None and len(nodes) > max_nodes:
        raise ValueError(
            f"the computation graph has {len(nodes)} nodes, more than max_nodes={max_nodes}; "
            "pass a larger max_nodes (or max_nodes=None) to draw it anyway"
        )
    graphviz = _graphviz()
    parameter_cls = _parameter_class()
    dot = graphviz.Digraph(
        name="needle",
        graph_attr={"rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.35", "fontname": "Helvetica"},
        node_attr={"shape": "record", "style": "filled", "fontname": "Helvetica", "fontsize": "11",
                   "color": "#555555", "height": "0.3"},
        edge_attr={"color": "#555555", "arrowsize": "0.7", "fontname": "Helvetica", "labelfontsize": "9",
                   "labelfontcolor": "#777777", "labeldistance": "1.6", "labelangle": "-40"},
    )
    ids = {id(value): f"n{i}" for i, value in enumerate(nodes)}
    for value in nodes:
        kind = _kind(value, parameter_cls)
        fields = []
        if id(value) in label_names:
            fields.append(label_names[id(value)])
        attributes = _op_attributes(value.op) if show_attributes and value.op is not None else ""
        fields.append(f"{kind}({attributes})" if attributes else kind)
        fields.append(_describe_data(value))
        grad = getattr(value, "grad", None)
        if show_grad and grad is not None:
            fields.append(_describe_grad(grad))
        body = "|".join(_escape(f) for f in fields)
        # fields are stacked across the flow direction: top-to-bottom for LR layouts
        label = body if rankdir in ("LR", "RL") else "{" + body + "}"
        if value is tensor:
            style = {"fillcolor": _FILL["output"], "penwidth": "2"}
        else:
            style = {"fillcolor": _FILL.get(kind, _FILL["op"])}
        dot.node(ids[id(value)], label=label, **style)
    for value in nodes:
        multi = len(value.inputs) > 1
        for slot, inp in enumerate(value.inputs):
            # the inputs of multi-input ops are numbered (the order matters for a @ b, a / b, ...),
            # as a head label: beside the arrowhead, clear of the line
            attrs = {"headlabel": str(slot)} if multi else {}
            dot.edge(ids[id(inp)], ids[id(value)], **attrs)
    return dot


def _check_format(path: str, format: Optional[str]) -> str:
    if format is None:
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        format = ext if ext in ("svg", "png", "pdf") else "svg"
    format = format.lower()
    if format not in ("svg", "png", "pdf"):
        raise ValueError(f"render_graph: format must be 'svg', 'png' or 'pdf', got {format!r}")
    return format


def render_graph(tensor, path: str, format: Optional[str] = None, *, dpi: Optional[int] = None, **graph_kwargs) -> str:
    """Draw `tensor`'s computation graph (or a Digraph from `graph`) into `path`, atomically.

    `format` is "svg", "png" or "pdf" (default: from the file name's extension, else svg);
    `dpi` sets the PNG resolution (default 150); other keywords go to `graph`. Returns `path`.
    """
    format = _check_format(path, format)
    graphviz = _graphviz()
    dot = tensor if isinstance(tensor, graphviz.Digraph) else graph(tensor, **graph_kwargs)
    if format == "png":
        dot = dot.copy()
        dot.graph_attr["dpi"] = str(dpi or 150)
    try:
        data = dot.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(
            "render_graph needs the graphviz 'dot' program, which was not found on PATH: "
            "install it with `apt-get install graphviz` (or `brew install graphviz`)"
        ) from None
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
