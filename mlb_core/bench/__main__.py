"""``python -m mlb_core.bench``: an alias of ``mlb bench``."""

import sys

from mlb_core.bench.command import main

sys.exit(main())
