"""``edgeport report DIR``: rebuild report.html (and report.md) from the report.json an export wrote."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="rebuild report.html and report.md from an export folder's report.json",
        description="Regenerate the self-contained report.html (charts inline, no network needed) and report.md "
        "from DIR/report.json, or from every DIR/*/report.json of a multi-target export.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="an export's output folder (-o), or its parent")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report.html import write_html_report

    for path in write_html_report(args.directory):
        print(path)
    return 0
