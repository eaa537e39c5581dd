"""The distribution `needle-dl`: what its wheel and sdist hold, and that an installed wheel runs.

The wheel and the sdist are built from a copy of the checkout's packaging files (so the
checkout gets no build/ or egg-info folders), without network: `pip wheel --no-deps
--no-build-isolation --no-index` and setuptools' PEP 517 `build_sdist` hook (what
`python -m build --sdist --no-isolation` calls). The copy gets two planted files: a file in
a new folder under needle/data, which the wheel must carry (the globs cover data added
later, e.g. MNIST files), and a .pyc in needle/data/__pycache__, which it must not.
The wheel is installed with `pip install --target` and run from another folder with
PYTHONPATH pointing at that folder only.
"""
from __future__ import annotations

import ast
import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List, Set

import pytest

import needle
from needle import _packaging
from needle._packaging import DISTRIBUTION, install_hint
from needle.train.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "python" / "needle" / "data"
# what a build reads: the package, its metadata, and the files the sdist ships beside it
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in")
PLANTED = "planted/nested/extra.bin"  # a data file in a folder that does not exist in the checkout
PLANTED_PYC = "__pycache__/planted.cpython-311.pyc"
TIMEOUT = 180


def _data_files() -> Set[str]:
    """Every file under python/needle/data, relative to it, but Python's byte-code caches."""
    return {p.relative_to(DATA).as_posix() for p in DATA.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _copy_source(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "python", dest / "python",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    data = dest / "python" / "needle" / "data"
    for planted, content in ((PLANTED, b"\x00planted data\n"), (PLANTED_PYC, b"not byte code")):
        (data / planted).parent.mkdir(parents=True, exist_ok=True)
        (data / planted).write_bytes(content)
    return dest


def _run(args: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEEDLE_BACKEND")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def _pip_wheel(source: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(out)], cwd=source, env=_env())
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(text: str):
    return email.parser.Parser().parsestr(text)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return _pip_wheel(_copy_source(tmp / "src"), tmp / "dist")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sdist")
    source = _copy_source(tmp / "src")
    out = tmp / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = _run([sys.executable, "-c", code], cwd=source, env=_env()).stdout.strip().splitlines()[-1]
    return out / name


def test_the_wheel_is_needle_dl_at_needles_version(wheel):
    assert wheel.name == f"needle_dl-{needle.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"needle_dl-{needle.__version__}.dist-info"
        meta = _metadata(zf.read(f"{info}/METADATA").decode())
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DISTRIBUTION == "needle-dl"
    assert meta["Version"] == needle.__version__
    assert meta["License-Expression"] == "MIT"
    # the extras the install hints name are the ones the metadata declares
    assert sorted(meta.get_all("Provides-Extra")) == sorted(_packaging.EXTRAS)
    assert "needle = needle.train.cli:main" in entry_points
    # one top-level package, `needle`: no tests, apps or examples
    assert {n.split("/")[0] for n in names} == {"needle", info}


def test_the_wheel_carries_every_data_file_their_attribution_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        license_files = [n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE"]
        assert len(license_files) == 1, names
        assert zf.read(license_files[0]) == (ROOT / "LICENSE").read_bytes()
        attribution = zf.read("needle/data/text/README.md").decode()
    data = {n[len("needle/data/"):] for n in names if n.startswith("needle/data/")}
    expected = _data_files() | {PLANTED}
    assert "text/tinyshakespeare.txt" in expected and "text/README.md" in expected
    assert data == expected  # every file, the planted folder's too, and no __pycache__
    assert "tiny shakespeare" in attribution and "public domain" in attribution
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the needle authors\n")


def test_the_sdist_ships_license_changelog_readme_and_data_and_builds_the_same_wheel(sdist, tmp_path):
    assert sdist.name == f"needle_dl-{needle.__version__}.tar.gz"
    top = f"needle_dl-{needle.__version__}"
    with tarfile.open(sdist) as tf:
        names = {m.name for m in tf.getmembers() if m.isfile()}
        tf.extractall(tmp_path, filter="data")
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO"):
        assert f"{top}/{name}" in names
    prefix = f"{top}/python/needle/data/"
    assert {n[len(prefix):] for n in names if n.startswith(prefix)} == _data_files() | {PLANTED}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert _metadata((tmp_path / top / "PKG-INFO").read_text())["Version"] == needle.__version__
    # what pip does with an sdist: build a wheel from the unpacked folder
    rebuilt = _pip_wheel(tmp_path / top, tmp_path / "dist")
    with zipfile.ZipFile(rebuilt) as zf:
        names = set(zf.namelist())
    assert {n[len("needle/data/"):] for n in names if n.startswith("needle/data/")} == _data_files() | {PLANTED}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_installed_wheel_trains_and_samples_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
          str(wheel)], cwd=tmp_path, env=_env())
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env(PYTHONPATH=str(target))
    python = [sys.executable]

    where = _run(python + ["-c", "import needle; print(needle.__file__); print(needle.__version__)"], work, env)
    path, version = where.stdout.split()
    assert Path(path).resolve() == (target / "needle" / "__init__.py").resolve()  # not the checkout's
    assert version == needle.__version__
    assert _run(python + ["-m", "needle", "--version"], work, env).stdout == f"needle {needle.__version__}\n"
    script = target / "bin" / "needle"  # the console script pip wrote
    assert _run([str(script), "--version"], work, env).stdout == f"needle {needle.__version__}\n"

    # the installed copy's install hints name the distribution, not a clone's `-e .`
    hint = _run(python + ["-c", "from needle._packaging import install_hint; print(install_hint('onnx'))"], work, env)
    assert hint.stdout.strip() == 'pip install "needle-dl[onnx]"'

    toy = _run(python + ["-m", "needle", "train", "--epochs", "1", "--samples", "64", "--no-progress",
                         "--no-compile", "--summary", "toy.json"], work, env)
    summary = json.loads((work / "toy.json").read_text())
    assert summary["recipe"] == "toy" and summary["epochs"] == 1, toy.stdout
    # lm's default text is the tiny shakespeare shipped in the wheel; the checkpoint feeds `needle sample`
    lm = _run(python + ["-m", "needle", "train", "lm", "--epochs", "1", "--limit", "600", "--seq-len", "8",
                        "--embedding", "4", "--hidden", "4", "--batch-size", "4", "--sample", "5", "--no-progress", "--no-compile",
                        "--checkpoint", "ck"], work, env)
    shipped = target / "needle" / "data" / "text" / "tinyshakespeare.txt"
    assert f"on {shipped} by char" in lm.stdout
    sample = _run([str(script), "sample", "ck", "--tokens", "12", "--prompt", "A"], work, env)
    assert sample.stdout.startswith("A") and len(sample.stdout.rstrip("\n")) >= 12


def test_version_is_one_string_from_one_file(capsys):
    source = (ROOT / "python" / "needle" / "_version.py").read_text()
    assigned = [node.value.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"]]
    assert assigned == [needle.__version__]
    assert needle.__version__.count(".") == 2 and all(p.isdigit() for p in needle.__version__.split("."))
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
    assert 'version = {attr = "needle._version.__version__"}' in (ROOT / "pyproject.toml").read_text()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"needle {needle.__version__}\n"
    assert f"## {needle.__version__} - " in (ROOT / "CHANGELOG.md").read_text()


def test_a_missing_extra_names_the_install_command_for_this_install(monkeypatch):
    from needle.onnx import require_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    # the tests run from the clone (editable install or PYTHONPATH=python): the clone's command
    assert _packaging.source_checkout() == ROOT
    with pytest.raises(ImportError) as err:
        require_onnx()
    assert str(err.value) == 'needle.onnx needs the onnx package: pip install -e ".[onnx]"'
    # the same needle installed from a wheel: the distribution's name
    monkeypatch.setattr(_packaging, "source_checkout", lambda: None)
    with pytest.raises(ImportError) as err:
        require_onnx()
    assert str(err.value) == 'needle.onnx needs the onnx package: pip install "needle-dl[onnx]"'
    assert install_hint("distributed") == 'pip install "needle-dl[distributed]"'
    assert install_hint(package="torch") == "pip install torch"


@pytest.mark.parametrize("kwargs, message", [
    ({"extra": "onnxx"}, "'onnxx' is not one of needle's extras"),
    ({}, "give either extra or package"),
    ({"extra": "onnx", "package": "onnx"}, "give either extra or package"),
])
def test_install_hint_refuses_an_unknown_extra_or_an_unclear_request(kwargs, message):
    with pytest.raises(ValueError, match=message):
        install_hint(**kwargs)


def test_every_install_hint_in_the_package_comes_from_install_hint():
    """No string in needle's code spells a pip command itself (docstrings may show one):
    the commands all come from needle._packaging.install_hint, so they agree."""
    package = ROOT / "python" / "needle"
    found = []
    for path in package.rglob("*.py"):
        if path.name == "_packaging.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and "pip install" in node.value
                    and id(node) not in docstrings):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        # docstrings that show one name the distribution, never PyPI's unrelated `needle`
        text = path.read_text()
        assert 'pip install "needle[' not in text and "pip install needle " not in text, path
    assert found == []
