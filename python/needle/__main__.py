"""`python -m needle ...`: the command line (see needle.cli)."""
import sys

from .cli import main

sys.exit(main())
