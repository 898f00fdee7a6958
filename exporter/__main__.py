"""``python -m exporter`` is the ``edgeport`` command."""

import sys

from .cli import main

sys.exit(main())
