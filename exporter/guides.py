"""Where the guides that ``--help`` cites are: ``docs/*.md`` ships inside the package as ``exporter/docs/``.

Help texts name the installed file by its absolute path, so a user of the wheel (who has no checkout and
no ``docs/`` folder beside them) can open exactly what the help points to; tests/test_wheel.py checks
every path cited by every ``--help`` exists in an installed copy.
"""

from __future__ import annotations

from pathlib import Path

#: The shipped guides (in a checkout, ``exporter/docs`` is a symlink to the repository's ``docs/``).
DOCS_DIR = Path(__file__).resolve().parent / "docs"


def doc(name: str) -> str:
    """Absolute path of the shipped guide ``name`` (``"android.md"``), for help texts."""
    return str(DOCS_DIR / name)
