"""The one-line errors of the ONNX export: unsupported ops named with their Keras layer, crashes, memory.

Every message ends in "no .onnx file was written" and carries a hint that says how to get an ONNX
model (the layer change, another opset, fewer samples) or to export TFLite meanwhile.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

from ..calibrate.dataset import CalibrationSet
from ..childproc import ChildRun, first_line, log_tail, signal_name
from ..errors import ConversionError
from ..load.model import SourceModel

#: tf2onnx 1.17 knows opsets up to 18.
MAX_OPSET = 18

#: TF ops tf2onnx cannot express, with the change to the Keras model that avoids them.
_KNOWN_FIXES = {
    "Erfc": (
        "exact GELU",
        "Use the tanh approximation: keras.activations.gelu(x, approximate=True) instead of "
        "Activation('gelu') / activation='gelu' (exact erf form), then export again.",
    ),
}
_NO_OP_REGISTERED = re.compile(r"No Op registered for (\w+)")


def crash_error(run: ChildRun, what: str, calibration: CalibrationSet | None, method: str) -> ConversionError:
    how = signal_name(run.returncode)
    text = run.log_path.read_text(errors="replace") if run.log_path.is_file() else ""
    if run.returncode in (-signal.SIGKILL, 137) or "MemoryError" in text:
        if what == "onnxruntime" and calibration is not None:
            return memory_error(method, calibration.count, how)
        return ConversionError(
            f"{what} ran out of memory ({how}) converting the model to ONNX; no .onnx file was written.",
            hint="Free memory or export with --format tflite.",
        )
    tail = log_tail(run.log_path)
    return ConversionError(
        f"{what} crashed ({how}) while exporting ONNX{('; last output: ' + tail) if tail else ''}; "
        "no .onnx file was written.",
        hint="Re-run with --debug to keep the worker log, or export with --format tflite.",
    )


def memory_error(method: str, samples: int, how: str) -> ConversionError:
    if method in ("entropy", "percentile"):
        hint = f"Use calibrate_method 'minmax' (no histograms), or fewer than {samples} calibration samples."
        why = f"'{method}' calibration keeps a histogram of every activation tensor"
    else:
        hint = f"Use fewer than {samples} calibration samples."
        why = "calibration runs every activation tensor"
    return ConversionError(
        f"The onnxruntime quantizer ran out of memory ({how}): {why} over {samples} samples; no .onnx file was written.",
        hint=hint,
    )


def convert_error(source: SourceModel, result: dict[str, Any], opset: int) -> ConversionError:
    stage = result.get("stage")
    if stage == "unsupported":
        return unsupported_error(source, dict(result["ops"]), opset)
    if stage == "io":
        return ConversionError(
            f"{result.get('error')}; no .onnx file was written.",
            hint="Report the model to edgeport; export with --format tflite meanwhile.",
        )
    tail = result.get("tail") or ""
    text = first_line(Exception(result.get("error", ""))) or result.get("error_type", "error")
    return ConversionError(
        f"tf2onnx could not convert the model: {text}{(' (' + tail + ')') if tail else ''}; no .onnx file was written.",
        hint="Re-run with --debug to see the tf2onnx log.",
    )


def verify_error(
    source: SourceModel,
    result: dict[str, Any],
    float_path: Path,
    opset: int,
    method: str,
    calibration: CalibrationSet | None,
) -> ConversionError:
    if result.get("stage") == "load":
        kind, detail = result.get("kind", "float"), result.get("detail", "")
        missing = _NO_OP_REGISTERED.search(detail)
        if missing and kind == "float":
            import onnx  # a protobuf parse, no onnxruntime session

            proto = onnx.load_model_from_string(float_path.read_bytes())
            node = next((n.name for n in proto.graph.node if n.op_type == missing.group(1)), "")
            return unsupported_error(source, {missing.group(1): node}, opset)
        return ConversionError(
            f"onnxruntime cannot load the {kind} ONNX model ({detail}); no .onnx file was written.",
            hint="Try another opset, or export the float model only (no calibration) and report the model to edgeport.",
        )
    samples = calibration.count if calibration is not None else 0
    if result.get("error_type") == "MemoryError":
        return memory_error(method, samples, "MemoryError")
    text = first_line(Exception(result.get("error", ""))) or result.get("error_type", "error")
    return ConversionError(
        f"onnxruntime could not quantize the model to int8 QDQ with {method} calibration "
        f"({result.get('error_type')}: {text}); no .onnx file was written.",
        hint="Try calibrate_method 'minmax' or per_channel=False, or export the float ONNX model only.",
    )


# --- unsupported ops ------------------------------------------------------------------------------


def unsupported_error(source: SourceModel, found: dict[str, str], opset: int) -> ConversionError:
    op, node = next(((o, n) for o, n in found.items() if o in _KNOWN_FIXES), next(iter(found.items())))
    layer = layer_for_node(node, source.layers)
    where = f"Keras layer '{layer}' ({source.layers[layer]})" if layer else "the model"
    others = sorted(set(found) - {op})
    also = f" (also unsupported: {', '.join(others)})" if others else ""
    if op in _KNOWN_FIXES:
        what, hint = _KNOWN_FIXES[op]
        return ConversionError(
            f"ONNX export failed: {where} uses {what}, whose TF op {op} has no ONNX conversion in "
            f"{tf2onnx_version()} (opset {opset}), so onnxruntime cannot load the model{also}; no .onnx file was written.",
            hint=hint,
        )
    return ConversionError(
        f"ONNX export failed: {where} uses TF op {op}, which {tf2onnx_version()} cannot convert to ONNX "
        f"(opset {opset}){also}; no .onnx file was written.",
        hint=f"Replace that layer with standard ops, or try a newer opset (opset={MAX_OPSET}).",
    )


def layer_for_node(node_name: str, layers: dict[str, str]) -> str | None:
    """The Keras layer a TF node name comes from (``model_1/act_gelu_1/Gelu/Erfc`` -> ``act_gelu``).

    TF name scopes add ``_1``-style suffixes to layer names, so the stripped form is tried first;
    the deepest matching scope wins (a layer inside a nested model, not the nested model).
    """
    parts = [p for p in node_name.split("/") if p]
    for part in reversed(parts[:-1] if len(parts) > 1 else parts):
        stripped = re.sub(r"_\d+$", "", part)
        for candidate in (stripped, part):
            if candidate in layers and layers[candidate] != "InputLayer":
                return candidate
    return None


def tf2onnx_version() -> str:
    from importlib.metadata import version

    return f"tf2onnx {version('tf2onnx')}"


__all__ = ["convert_error", "crash_error", "layer_for_node", "memory_error", "tf2onnx_version", "verify_error"]
