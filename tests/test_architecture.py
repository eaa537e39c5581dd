"""The import graph of needle's source points one way (docs/architecture.md, "Import rule").

The graph is computed from the source with `ast`, every import statement counted, the ones
inside functions included (an import deferred to call time is still a dependency). Nodes
are needle's top-level packages and modules (needle.nn, needle.autograd, ...), or single
modules for the module-level checks. `from X import name` is an edge to the module
X.name when there is one, else to X. The root package `needle` only re-exports, so an
import of it (`import needle as ndl`) is not an edge.

The rule: the only strongly connected component of more than one package is
{needle.autograd, needle.ops} (Tensor's methods call the ops, the ops build Tensors).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Set

NEEDLE = Path(__file__).resolve().parent.parent / "python" / "needle"

Graph = Dict[str, Set[str]]


def module_name(path: Path, root: Path) -> str:
    """needle.nn.nn_basic for root/nn/nn_basic.py, needle.nn for root/nn/__init__.py."""
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, module: str) -> Iterable[str]:
    """Every module name an import statement in `path` mentions (absolute, dotted), with
    `from X import a` giving both X and X.a (resolved against the real modules later)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def module_graph(root: Path = NEEDLE) -> Graph:
    """module -> the modules of the same root it imports (see the module docstring)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name
    graph: Graph = {m: set() for m in files}
    for module, path in files.items():
        names = list(imported_names(path, module))
        for name in names:
            if name != top and not name.startswith(top + "."):
                continue
            if name not in files and name.rpartition(".")[0] in names:
                continue  # `from X import a` where a is a name in X, not a module: X is already listed
            while name not in files and "." in name:
                name = name.rpartition(".")[0]
            if name == top and module != top:
                continue  # the root only re-exports
            if name != module:
                graph[module].add(name)
    return graph


def collapse(graph: Graph, node_of) -> Graph:
    """The graph between groups of modules: node_of(module) names its group."""
    out: Graph = {}
    for module, targets in graph.items():
        a = node_of(module)
        out.setdefault(a, set())
        for target in targets:
            b = node_of(target)
            if a != b:
                out[a].add(b)
            out.setdefault(b, set())
    return out


def package_of(module: str) -> str:
    """needle.nn.nn_basic -> needle.nn; needle.autograd -> needle.autograd."""
    return ".".join(module.split(".")[:2])


def cycles(graph: Graph) -> List[Set[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


# --------------------------------------------------------------------------- the graph code itself

def _write(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "from . import low, high\n",
        "low/__init__.py": "from .core import thing\n",
        "low/core.py": "thing = 1\n",
        "high/__init__.py": "def late():\n    from ..low.core import thing\n    return thing\n",
        "mid.py": "import pkg.high\n",
        "back.py": "def f():\n    from pkg import mid\n",
        "top.py": "import pkg\nfrom pkg.low import thing\n",
    })
    graph = module_graph(root)
    assert graph["pkg.low"] == {"pkg.low.core"}
    assert graph["pkg.high"] == {"pkg.low.core"}  # from a function, two levels up
    assert graph["pkg.top"] == {"pkg.low"}  # `import pkg` is no edge; `thing` is a name in pkg.low
    packages = collapse(graph, package_of)
    assert packages["pkg.high"] == {"pkg.low"} and packages["pkg.mid"] == {"pkg.high"}
    assert cycles(packages) == []
    _write(root, {"low/core.py": "def f():\n    import pkg.back\n"})  # low -> back -> mid -> high -> low
    assert cycles(collapse(module_graph(root), package_of)) == [{"pkg.low", "pkg.back", "pkg.mid", "pkg.high"}]


def test_the_graph_of_needle_has_the_edges_the_layers_need():
    packages = collapse(module_graph(), package_of)
    assert {"needle.autograd", "needle.init"} <= packages["needle.nn"]
    assert "needle.ops" in packages["needle.autograd"]  # a function-level import (Tensor's methods)
    assert {"needle.distributed", "needle.onnx", "needle.data"} <= packages["needle.train"]


# --------------------------------------------------------------------------- the rule

def test_packages_form_no_cycle_but_autograd_and_ops():
    packages = collapse(module_graph(), package_of)
    assert cycles(packages) == [{"needle.autograd", "needle.ops"}]


def test_libraries_do_not_import_the_command_line():
    """needle.train (the CLI and the training loops) sits on top: the libraries it drives
    never import it, nor does the data layer import the MPI one."""
    packages = collapse(module_graph(), package_of)
    for library in ("needle.data", "needle.distributed", "needle.onnx", "needle.nn", "needle.compile"):
        assert "needle.train" not in packages[library], library
    assert "needle.distributed" not in packages["needle.data"]


def test_shape_and_reduction_ops_do_not_import_each_other():
    """Among the op modules (without the package needle.ops, which re-exports them all, and
    autograd, through which every op module reaches every other), ops/shape.py and
    ops/reduction.py are in no loop: reduction builds on shape, not the other way."""
    graph = module_graph()
    ops = {m: {t for t in targets if t.startswith("needle.ops.")}
           for m, targets in graph.items() if m.startswith("needle.ops.")}
    assert "needle.ops.shape" in ops["needle.ops.reduction"]
    for component in cycles(ops):
        assert not {"needle.ops.shape", "needle.ops.reduction"} <= component, component


def test_the_compiler_modules_form_no_loop():
    """compile/program.py lowers a recording and imports fusion.py for one pass; fusion.py and
    its code generators build on the recording module, never on program.py."""
    graph = module_graph()
    compile_modules = {m: {t for t in targets if t.startswith("needle.compile.")}
                       for m, targets in graph.items() if m.startswith("needle.compile.")}
    assert cycles(compile_modules) == []
    for generator in ("needle.compile.fusion", "needle.compile.fusion_cpu", "needle.compile.fusion_cuda"):
        assert "needle.compile.program" not in compile_modules[generator], generator
