"""Device-specific code: one module or subpackage per device class (e.g. ``android``: phones over adb).

The driver stays generic: it asks :func:`report_section` for a device's own analysis of a converted
model, and calls :func:`after_write` once the model file exists (to run a vendor compiler when one is
installed). A device with nothing extra to say needs no entry here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report_section(
    profile: Any, graph: Any, layers: dict[str, str] | None
) -> tuple[str, dict[str, Any], list[str]] | None:
    """(report key, data, warnings) of the target's device-specific analysis, or None."""
    if profile.runtime.name == "edgetpu":
        from .edgetpu.export_hooks import analyze_for_report

        return analyze_for_report(graph, layers, profile)
    return None


def after_write(profile: Any, model_path: Path, layers: dict[str, str] | None, report: Any) -> None:
    """Run the device's real tools on the written model when they are installed."""
    if profile.runtime.name == "edgetpu":
        from .edgetpu.export_hooks import compile_if_available

        compile_if_available(model_path, layers, profile, report)
