"""``python -m mlb_core.bench``: an alias of ``mlb bench``."""

import sys

from mlb_core.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
