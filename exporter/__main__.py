"""``python -m exporter`` is the ``edgeport`` command."""

from .cli import run

run()
