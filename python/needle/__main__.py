"""`python -m needle ...`: the command line (see needle.train.cli)."""
import sys

from .train.cli import main

sys.exit(main())
