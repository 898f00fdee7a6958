"""Device-specific code: one module or subpackage per device class (e.g. ``android``: phones over adb).

The driver stays generic: it asks :func:`report_section` for a device's own analysis of a converted
model, lets :func:`prepare` measure the model that will be written (before anything is written, so a
board it does not fit makes the verdict), and calls :func:`after_write` once the model file exists
(to run a vendor compiler or write firmware sources). A device with nothing extra to say needs no
entry here. ``options`` is the export's :class:`~exporter.options.ExportOptions` (or None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CORTEX_M = ("tflite-micro", "tflite-micro+ethos-u")


def report_section(
    profile: Any, graph: Any, layers: dict[str, str] | None, options: Any = None
) -> tuple[str, Any, list[str], list[str]] | None:
    """(report key, data, warnings, reasons) of the target's device-specific analysis, or None.

    ``reasons`` make the target "not supported" (e.g. a float model for an NPU that runs only int8).
    """
    if profile.runtime.name == "edgetpu":
        from .edgetpu.export_hooks import analyze_for_report

        key, data, warnings = analyze_for_report(graph, layers, profile)
        return key, data, warnings, []
    if profile.runtime.name in _CORTEX_M:
        from . import cortex_m

        return cortex_m.report_section(profile, graph, layers, options)
    return None


def prepare(profile: Any, model: bytes, report: Any, options: Any = None) -> None:
    """Device measurements on the final model (arena, NPU compiler, fit against the board), in place."""
    if profile.runtime.name in _CORTEX_M:
        from . import cortex_m

        cortex_m.prepare(profile, model, report, options)


def after_write(
    profile: Any,
    model_path: Path,
    layers: dict[str, str] | None,
    report: Any,
    options: Any = None,
    source_path: Path | None = None,
) -> None:
    """Run the device's real tools on the written model when they are installed; write its sources."""
    if profile.runtime.name == "edgetpu":
        from .edgetpu.export_hooks import compile_if_available

        compile_if_available(model_path, layers, profile, report)
    elif profile.runtime.name in _CORTEX_M:
        from . import cortex_m

        cortex_m.after_write(profile, model_path, layers, report, options, source_path)
