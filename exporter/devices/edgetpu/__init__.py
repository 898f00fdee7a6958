"""The Coral Edge TPU: predict ``edgetpu_compiler``'s partition op by op, parse its logs, and use the real
compiler and device when this machine has them.

    from exporter.verify.graph import TFLiteGraph
    from exporter.devices.edgetpu import analyze_edgetpu
    analysis = analyze_edgetpu(TFLiteGraph.from_file("model_int8.tflite"), layers=source.layers)
    print(analysis.render_log(), analysis.verdict)

Nothing here imports TensorFlow except :func:`edgetpu_compat_fixes` (it rewrites a Keras model).
"""

from __future__ import annotations

from .compiler_log import CompilerLog, OperatorStatus, parse_compiler_log
from .fixes import Fix, edgetpu_compat_fixes
from .ops import RULES, Rejection, check_op, reason_templates
from .partition import COMPILER_VERSION, EdgeTpuAnalysis, OpPlacement, Segment, analyze_edgetpu
from .tools import (
    CompilerRun,
    ToolStatus,
    benchmark_on_device,
    compare,
    count_compiled,
    find_tools,
    mismatch_warning,
    note_absent_once,
    run_compiler,
)
from .versions import MAX_VERSIONS, PARSE_LIMITS, version_table

__all__ = [
    "COMPILER_VERSION",
    "MAX_VERSIONS",
    "PARSE_LIMITS",
    "RULES",
    "CompilerLog",
    "CompilerRun",
    "EdgeTpuAnalysis",
    "Fix",
    "OpPlacement",
    "OperatorStatus",
    "Rejection",
    "Segment",
    "ToolStatus",
    "analyze_edgetpu",
    "benchmark_on_device",
    "check_op",
    "compare",
    "count_compiled",
    "edgetpu_compat_fixes",
    "find_tools",
    "mismatch_warning",
    "note_absent_once",
    "parse_compiler_log",
    "reason_templates",
    "run_compiler",
    "version_table",
]
