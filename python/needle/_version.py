"""needle's version: the one place it is written.

`needle.__version__`, `needle --version` and the distribution's metadata (pyproject.toml's
`[tool.setuptools.dynamic] version`, read statically at build time) all come from here.
"""
__version__ = "0.1.0"
