"""``python -m bluesky_analysis_store.cli``: the ``bas`` command."""

import sys

from ._commands import main

sys.exit(main())
