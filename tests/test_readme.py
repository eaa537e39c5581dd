"""The README's set-up commands are the ones CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    test_command = next(b.strip() for b in _bash_blocks(readme) if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_main_command_runs_the_default_training_recipe():
    readme = (ROOT / "README.md").read_text()
    first = _bash_blocks(readme)[0].strip()
    assert first.startswith("pip install -e . && python -m needle train")
    assert first.endswith("train")  # the embedded default recipe: no data files needed
