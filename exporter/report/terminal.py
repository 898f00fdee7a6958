"""Report warnings as terminal lines: what ``edgeport export`` (and ``run``) print on stderr after the work.

report.json and report.md hold each warning; a make or CI log shows only the terminal, so the CLI
prints every one once, as ``edgeport: warning: <the report's words>``. This module only builds the
lines; the CLI prints them (the Python API prints nothing).
"""

from __future__ import annotations

from typing import Any

from .report import TargetReport, all_warnings


def warning_lines(per_target: dict[str, list[str]], shared: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The warnings of several targets' reports as terminal lines, each distinct warning once.

    A warning about the model or its data (``shared``), or one every target of a multi-target run
    has, is printed as it stands; any other gets the names of the targets it concerns as a prefix
    (``cortex-m55-ethos-u55: Vela ...``). Whitespace runs become one space so each is one line; the
    words stay those of report.json. Shared ones come first, then the rest in target order.
    """
    one_line = {" ".join(w.split()) for w in shared}
    targets_of: dict[str, list[str]] = {}
    for target, warnings in per_target.items():
        for warning in warnings:
            holders = targets_of.setdefault(" ".join(warning.split()), [])
            if target not in holders:
                holders.append(target)
    general = [w for w, t in targets_of.items() if w in one_line or (len(per_target) > 1 and len(t) == len(per_target))]
    specific = [f"{', '.join(t)}: {w}" for w, t in targets_of.items() if w not in general]
    return general + specific


def export_warning_lines(reports: list[TargetReport], common: dict[str, Any]) -> list[str]:
    """:func:`warning_lines` of an export: every warning of every report.json it wrote."""
    shared = list(common.get("model", {}).get("notes") or [])
    for key in ("calibration", "evaluation"):
        shared += (common.get(key) or {}).get("warnings") or []
    return warning_lines({r.target: all_warnings(r, common) for r in reports}, shared)
