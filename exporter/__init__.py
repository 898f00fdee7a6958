"""edgeport: export Keras models to verified full-int8 TFLite for phones, the Edge TPU and Cortex-M.

The public API mirrors the CLI::

    import exporter
    result = exporter.export("model.keras", target="cortex-m4", calib="calib.npz", output_dir="build")
    print(result.summary())

Attributes are imported on first use, so ``import exporter`` (and ``edgeport --help``) stays fast:
TensorFlow is loaded only by the steps that need it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "export": ("exporter.pipeline", "export"),
    "ExportResult": ("exporter.pipeline", "ExportResult"),
    "ExportOptions": ("exporter.options", "ExportOptions"),
    "load_profile": ("exporter.profiles", "load_profile"),
    "available_targets": ("exporter.profiles", "available_targets"),
    "TargetProfile": ("exporter.profiles", "TargetProfile"),
    "load_model": ("exporter.load", "load_model"),
    "load_calibration": ("exporter.calibrate", "load_calibration"),
    "verify": ("exporter.verify", "verify"),
    "TFLiteGraph": ("exporter.verify.graph", "TFLiteGraph"),
    "estimate_memory": ("exporter.analyze.memory", "estimate_memory"),
    "EdgeportError": ("exporter.errors", "EdgeportError"),
    "benchmark": ("exporter.benchmark", "benchmark"),
    "measure_arena": ("exporter.benchmark", "measure_arena"),
    "analyze_edgetpu": ("exporter.devices.edgetpu", "analyze_edgetpu"),
    "bench_on_device": ("exporter.devices.android", "bench_on_device"),
    "export_onnx": ("exporter.convert.onnx", "export_onnx"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
