"""Repository-wide pytest set-up.

The course's homework tests import `mugrade` (its grading client, not on PyPI)
at module level; a no-op stand-in lets them run here unchanged.
"""
import sys
import types

if "mugrade" not in sys.modules:
    mugrade = types.ModuleType("mugrade")
    mugrade.submit = lambda *args, **kwargs: None
    sys.modules["mugrade"] = mugrade
