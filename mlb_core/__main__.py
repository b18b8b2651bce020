"""``python -m mlb_core``: the ``mlb`` command."""

import sys

from mlb_core.cli import main

sys.exit(main())
