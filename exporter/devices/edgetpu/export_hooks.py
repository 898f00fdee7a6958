"""What an ``edgeport export --target edgetpu`` adds to the report: the predicted partition, and the
real compiler's verdict compared with it when ``edgetpu_compiler`` is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .partition import analyze_edgetpu
from .tools import compare, find_tools, mismatch_warning, note_absent_once, run_compiler


def analyze_for_report(
    graph: Any, layers: dict[str, str] | None, profile: Any
) -> tuple[str, dict[str, Any], list[str]]:
    analysis = analyze_edgetpu(graph, layers=layers or None, profile=profile)
    warnings = []
    if not analysis.fully_mapped:
        warnings.append(f"Edge TPU partition (predicted): {analysis.verdict}.")
        for fix in analysis.fixes:
            where = f" (layer {fix.layer!r})" if fix.layer else ""
            auto = f"; {fix.automatic} applies it" if fix.automatic else ""
            warnings.append(f"Edge TPU fix for {fix.op}{where}: {fix.remedy}{auto}.")
    if analysis.param_warning:
        warnings.append(analysis.param_warning)
    return "edgetpu", analysis.to_dict(), warnings


def compile_if_available(model_path: Path, layers: dict[str, str] | None, profile: Any, report: Any) -> None:
    """Compile with the real tool (writing model_int8_edgetpu.tflite next to the model) or say once it is absent."""
    from ...verify.graph import TFLiteGraph

    tools = find_tools()
    section = report.extra.setdefault("edgetpu", {})
    section["tools"] = tools.to_dict()
    if tools.compiler is None:
        note = note_absent_once(tools)
        if note:
            report.warnings.append(note)
        return
    run = run_compiler(model_path, model_path.parent)
    if run is None:
        return
    section["compiled"] = run.to_dict()
    analysis = analyze_edgetpu(TFLiteGraph.from_file(model_path), layers=layers or None, profile=profile)
    differences = compare(analysis, run)
    if differences:
        warning = mismatch_warning(differences)
        if warning:
            report.warnings.append(warning)
        section["prediction_mismatch"] = differences
