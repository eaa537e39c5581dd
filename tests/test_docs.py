"""The documentation's code runs: every ```python block of docs/**/*.md, page by page.

The blocks of one page run in order in one namespace, like the cells of a notebook, in a
fresh Python process per page (a page may register a device or seed numpy's generator)
whose working folder is a temporary one (a page may write files). A traceback names the
page and its line: each block is compiled with the page as its file name, at its line.

A block that must not run here (an `mpiexec` launch, a GPU) is marked by the line
`<!-- no-run -->` right before its opening fence; the marker is for those cases only.

The site itself (`mkdocs build --strict`) is built by CI (.ci/run) before the tests.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)(.*)$")


@dataclass
class Block:
    line: int  # the page's line number of the block's first code line (1-based)
    code: str
    language: str
    run: bool


def extract_blocks(text: str) -> List[Block]:
    """The fenced code blocks of a markdown page, in order, with their first code line."""
    blocks: List[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.group(1), match.group(2), match.group(3).lower()
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: List[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: the code block opened here is never closed")
        blocks.append(Block(i + 2, "\n".join(body) + "\n", language, previous != NO_RUN))
        i = j + 1
    return blocks


def python_blocks(page: Path) -> List[Block]:
    return [b for b in extract_blocks(page.read_text()) if b.language in ("python", "py")]


def run_page(page: Path) -> None:
    """Run a page's python blocks in order in one namespace (what the test runs in a subprocess)."""
    namespace: dict = {"__name__": "__main__"}
    for block in python_blocks(page):
        if block.run:
            # blank lines in front put the code at its line of the page in tracebacks
            exec(compile("\n" * (block.line - 1) + block.code, str(page), "exec"), namespace)


PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p))


def test_the_docs_have_code_to_run():
    """The guides are where the code is: each of them has python blocks (so a page whose fences
    stopped being recognised, e.g. by a typo in the language, fails here instead of passing)."""
    guides = sorted((DOCS / "guides").glob("*.md"))
    assert len(guides) >= 8
    for guide in guides:
        assert [b for b in python_blocks(guide) if b.run], f"{guide.relative_to(ROOT)} has no python block that runs"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NEEDLE_BACKEND", None)  # the docs describe the default (nd) backend
    env.setdefault("MPLBACKEND", "Agg")
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_docs; " \
             f"test_docs.run_page(__import__('pathlib').Path({str(page)!r}))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{page.relative_to(ROOT)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def test_no_run_marker_is_rare():
    """Blocks that do not run are the exception: at most a few per page, and never a whole page."""
    for page in PAGES:
        blocks = python_blocks(page)
        skipped = [b for b in blocks if not b.run]
        assert len(skipped) <= 3 and len(skipped) < len(blocks), f"{page.relative_to(ROOT)}: {len(skipped)} no-run"


# --- the extractor itself ----------------------------------------------------------------

def test_extract_blocks_finds_languages_lines_and_the_marker():
    text = "# t\n\n```python\nx = 1\n```\n\ntext\n\n<!-- no-run -->\n```python\nraise SystemExit\n```\n" \
           "```bash\nls\n```\n\n- item\n\n    ```python\n    y = x + 1\n    ```\n"
    blocks = extract_blocks(text)
    assert [(b.language, b.line, b.run) for b in blocks] == [("python", 4, True), ("python", 11, False),
                                                             ("bash", 14, True), ("python", 20, True)]
    assert blocks[0].code == "x = 1\n" and blocks[3].code == "y = x + 1\n"


def test_extract_blocks_refuses_an_unclosed_fence():
    with pytest.raises(ValueError, match="line 2"):
        extract_blocks("text\n```python\nx = 1\n")


def test_run_page_reports_the_page_line(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# p\n\n```python\nx = 2\n```\n\nprose\n\n```python\nassert x == 2\nraise KeyError('here')\n```\n")
    with pytest.raises(KeyError) as info:
        run_page(page)
    frames = [(f.filename, f.lineno) for f in __import__("traceback").extract_tb(info.tb)]
    assert (str(page), 11) in frames


def test_tutorials_page_lists_every_tutorial():
    """docs/tutorials.md names each tutorial under tutorials/ (the jupytext scripts), and names no other."""
    listed = set(re.findall(r"tutorials/(\d\d_\w+\.py)", (DOCS / "tutorials.md").read_text()))
    assert len(listed) == 6
    present = {p.name for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.py")}
    assert present <= listed, f"tutorials not on docs/tutorials.md: {sorted(present - listed)}"
    if present:
        assert listed <= present, f"docs/tutorials.md names missing tutorials: {sorted(listed - present)}"


def test_every_figure_is_made_by_a_command_given_next_to_it():
    """Each image a page shows from docs/img is made by a command that the page gives within a few
    lines of it (in a code span or block), and that command names a file that exists."""
    for page in DOCS.rglob("*.md"):
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", line):
                if "img/" not in image:
                    continue
                near = "\n".join(lines[max(0, n - 8): n + 8])
                commands = re.findall(r"python (docs/[\w/.-]+\.py)", near)
                assert commands, f"{page.relative_to(ROOT)}:{n + 1}: no command next to {image}"
                assert all((ROOT / c).is_file() for c in commands), commands
                assert (page.parent / image).resolve().is_file(), image
