"""hw0 ``simple_ml_ext``: re-exports apps/simple_ml_ext.py (the course's tests put ./src on sys.path)."""
from _apps_loader import load_app, reexport

reexport(globals(), load_app("_needle_hw0_simple_ml_ext", "simple_ml_ext.py"))
