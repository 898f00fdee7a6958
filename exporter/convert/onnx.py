"""ONNX export beside TFLite: a float model from tf2onnx and an int8 QDQ model from onnxruntime.

Both come from the same Keras model and the same calibration samples as the TFLite path, and neither
is handed over before onnxruntime has loaded it and its outputs agree with Keras: tf2onnx writes a
file even for ops it could not convert (exact GELU leaves a TF ``Erfc`` node that onnxruntime refuses),
so every model is built in a scratch folder, checked, and only then written with
:func:`exporter.atomic.write_bytes`. On any failure no ``.onnx`` file is written.

Nothing native runs in this process. Here the model (as the caller holds it, ``--prune`` and
``--edgetpu-compat`` edits included) is traced and frozen into a GraphDef, and the Keras reference
outputs are computed; tf2onnx runs in one child, onnxruntime (float run, calibration, quantizer, int8
runs) in another (:mod:`exporter.convert.onnx_worker`). A crash there is a one-line
:class:`ConversionError`, and this process never opens an ONNX session at all: it compares the
outputs the child wrote.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ensure_dir, scratch_dir, write_bytes
from ..calibrate.dataset import CalibrationSet
from ..childproc import run_worker
from ..errors import CalibrationDataError, ConversionError, InputModelError, UsageError
from ..load.model import SourceModel
from ..verify.onnx_check import FLOAT_KERNELS, REFERENCE_QDQ, OnnxCheck, compare_outputs, host_kernels_label
from ..workers import run_in_worker
from .onnx_errors import MAX_OPSET, convert_error, crash_error, layer_for_node, tf2onnx_version, verify_error
from .onnx_trace import frozen_graph, reference_outputs, traced_function

log = logging.getLogger(__name__)

FLOAT_FILE = "model_float.onnx"
INT8_FILE = "model_int8.onnx"
DEFAULT_OPSET = 17
#: QDQ per-channel needs opset 13; tf2onnx 1.17 knows opsets up to 18.
MIN_OPSET = 13
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_TIMEOUT_S = 1800
WORKER = "exporter.convert.onnx_worker"
#: Samples used to check a float model when the caller gives no inputs and no calibration set.
_SYNTHETIC_SAMPLES = 8


@dataclass
class OnnxModel:
    """One written ONNX file; int8 models carry the host-kernel check beside the reference one."""

    kind: str  # "float" | "int8"
    path: Path
    size_bytes: int
    check: OnnxCheck  # float: default kernels; int8: reference QDQ semantics (what edgeport reports)
    written: bool  # False when an identical file was already there (kept, mtime unchanged)
    host_check: OnnxCheck | None = None  # int8 only: onnxruntime's optimized kernels on this CPU

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "written": self.written,
            "check": self.check.to_dict(),
            "host_check": self.host_check.to_dict() if self.host_check else None,
        }


@dataclass
class OnnxExport:
    """What :func:`export_onnx` produced, for report.json and the human report."""

    opset: int
    dynamic_batch: bool
    input_names: list[str]
    output_names: list[str]
    converter: str
    float_model: OnnxModel
    int8_model: OnnxModel | None
    quantization: dict[str, Any] | None
    timings_s: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "dynamic_batch": self.dynamic_batch,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "converter": self.converter,
            "float": self.float_model.to_dict(),
            "int8": self.int8_model.to_dict() if self.int8_model else None,
            "quantization": self.quantization,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """Human lines for the CLI report."""
        f = self.float_model
        lines = [
            f"ONNX float  {f.path.name}: {f.size_bytes:,} B, opset {self.opset}, "
            f"max |error| vs Keras {f.check.max_abs_error:.2e} on {f.check.samples} samples ({f.check.inputs_from})",
        ]
        if self.int8_model is not None:
            q = self.int8_model
            lines.append(
                f"ONNX int8   {q.path.name}: {q.size_bytes:,} B, QDQ, {_quality(q.check)} vs Keras on "
                f"{q.check.samples} samples ({q.check.inputs_from}), {REFERENCE_QDQ}"
            )
            if q.host_check is not None:
                lines.append(f"  {q.host_check.semantics}: {_quality(q.host_check)}")
        lines.append(f"  measured on the host with {f.check.runtime}")
        return "\n".join(lines)


def _quality(check: OnnxCheck) -> str:
    agree = f"top-1 agreement {check.top1_agreement:.1%}, " if check.top1_agreement is not None else ""
    return agree + (f"SNR {check.snr_db:.1f} dB" if check.snr_db is not None else "SNR inf")


def export_onnx(
    source: SourceModel,
    out_dir: Path,
    *,
    calibration: CalibrationSet | None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    check_inputs: list[np.ndarray] | None = None,
    check_inputs_from: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> OnnxExport:
    """Write ``model_float.onnx`` (and ``model_int8.onnx`` given calibration) to ``out_dir``, verified.

    ``check_inputs`` (one (N, ...) float32 array per model input, e.g. the eval split) are the samples
    both models are checked on; without them the calibration samples are used, and without those
    seeded random inputs (float check only). ``check_inputs_from`` names them in the report.
    """
    return start_export_onnx(
        source,
        out_dir,
        calibration=calibration,
        opset=opset,
        dynamic_batch=dynamic_batch,
        per_channel=per_channel,
        calibrate_method=calibrate_method,
        check_inputs=check_inputs,
        check_inputs_from=check_inputs_from,
        timeout_s=timeout_s,
    )()


def start_export_onnx(
    source: SourceModel,
    out_dir: Path,
    *,
    calibration: CalibrationSet | None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    check_inputs: list[np.ndarray] | None = None,
    check_inputs_from: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Callable[[], OnnxExport]:
    """:func:`export_onnx` in two halves: the tracing (TensorFlow, in this process) now, and the returned
    ``finish()``, which runs the child processes, checks and writes: it uses no TensorFlow in this process,
    so it can run in a thread beside the TFLite conversion (exporter.steps.onnx)."""
    _validate_args(source, calibration, opset, calibrate_method, check_inputs)
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    input_names = [s.name for s in source.inputs]
    output_names = [s.name for s in source.outputs]

    from ..tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    start = time.perf_counter()
    function, specs = traced_function(source, dynamic_batch)
    graph_bytes, graph_inputs, graph_outputs = frozen_graph(source, function, specs)
    timings["trace_s"] = time.perf_counter() - start

    inputs, inputs_from = _check_inputs(source, calibration, check_inputs, check_inputs_from)
    start = time.perf_counter()
    reference = reference_outputs(source, function, inputs)
    timings["keras_reference_s"] = time.perf_counter() - start

    graph = [graph_bytes]
    del graph_bytes

    def finish() -> OnnxExport:
        with scratch_dir("edgeport-onnx-") as work:
            request = {
                "graph_path": str(work / "graph.pb"),
                "graph_inputs": graph_inputs,
                "graph_outputs": graph_outputs,
                "input_names": input_names,
                "output_names": output_names,
                "opset": opset,
                "dynamic_batch": dynamic_batch,
                "float_path": str(work / FLOAT_FILE),
                "int8_path": str(work / INT8_FILE),
                "check_path": str(work / "check.npz"),
                "calib_path": str(work / "calib.npz") if calibration is not None else None,
                "float_outputs": str(work / "float_outputs.npz"),
                "int8_reference_outputs": str(work / "int8_reference_outputs.npz"),
                "int8_host_outputs": str(work / "int8_host_outputs.npz"),
                "per_channel": per_channel,
                "calibrate_method": calibrate_method,
            }
            Path(request["graph_path"]).write_bytes(graph.pop())  # the only copy: gone once on disk
            converted = _run(dict(request, task="convert"), work, timeout_s, "tf2onnx")
            if not converted["ok"]:
                raise convert_error(source, converted, opset)
            timings.update(converted.get("timings", {}))
            _save_arrays(request["check_path"], inputs)
            if calibration is not None:
                _save_arrays(request["calib_path"], calibration.arrays)
            verified = _run(dict(request, task="verify"), work, timeout_s, "onnxruntime", calibration, calibrate_method)
            if not verified["ok"]:
                raise verify_error(source, verified, Path(request["float_path"]), opset, calibrate_method, calibration)
            timings.update(verified.get("timings", {}))

            def check(path: str, kind: str, semantics: str) -> OnnxCheck:
                with np.load(path) as data:
                    actual = [data[f"arr_{i}"] for i in range(len(data.files))]
                return compare_outputs(
                    actual, inputs, reference, output_names, kind=kind, inputs_from=inputs_from, semantics=semantics
                )

            float_check = check(request["float_outputs"], "float", FLOAT_KERNELS)
            if not float_check.agrees:
                raise ConversionError(
                    f"The float ONNX model disagrees with Keras: max |error| {float_check.max_abs_error:.3g} > tolerance "
                    f"{float_check.tolerance:.3g} on {float_check.samples} samples ({inputs_from}); no .onnx file was written.",
                    hint=f"Try another opset (opset={MIN_OPSET}..{MAX_OPSET}) and report the model to edgeport.",
                )
            float_bytes = Path(request["float_path"]).read_bytes()
            int8_bytes = int8_check = host_check = quantization = None
            if calibration is not None:
                int8_check = check(request["int8_reference_outputs"], "int8", REFERENCE_QDQ)
                host_check = check(request["int8_host_outputs"], "int8", host_kernels_label())
                if not int8_check.agrees:
                    raise ConversionError(
                        f"The int8 ONNX model gives NaN or Inf outputs on {inputs_from} ({REFERENCE_QDQ}); "
                        "no .onnx file was written.",
                        hint="Check the calibration samples are preprocessed exactly like the model's inputs.",
                    )
                int8_bytes = Path(request["int8_path"]).read_bytes()
                quantization = {
                    "format": "QDQ",
                    "activations": "int8",
                    "weights": "int8",
                    "per_channel": per_channel,
                    "calibrate_method": calibrate_method,
                    "calibration_samples": calibration.count,
                    "calibration_source": calibration.source,
                    "quantizer": f"{_ort_version()} quantize_static (after quant_pre_process)",
                    "fidelity_semantics": REFERENCE_QDQ,
                }

        # Everything is verified: now, and only now, write the files.
        ensure_dir(out_dir)
        float_path = out_dir / FLOAT_FILE
        float_model = OnnxModel(
            "float", float_path, len(float_bytes), float_check, write_bytes(float_path, float_bytes)
        )
        int8_model = None
        if int8_bytes is not None and int8_check is not None:
            int8_path = out_dir / INT8_FILE
            written = write_bytes(int8_path, int8_bytes)
            int8_model = OnnxModel("int8", int8_path, len(int8_bytes), int8_check, written, host_check)
        return OnnxExport(
            opset=opset,
            dynamic_batch=dynamic_batch,
            input_names=input_names,
            output_names=output_names,
            converter=f"{tf2onnx_version()} (from_graph_def on the frozen traced model, opset {opset})",
            float_model=float_model,
            int8_model=int8_model,
            quantization=quantization,
            timings_s=timings,
            notes=list(verified.get("notes", [])),
        )

    return finish


def _save_arrays(path: str, arrays: list[np.ndarray]) -> None:
    np.savez(path, **{f"input_{i}": np.asarray(a, dtype=np.float32) for i, a in enumerate(arrays)})


# --- arguments ------------------------------------------------------------------------------------


def _validate_args(
    source: SourceModel,
    calibration: CalibrationSet | None,
    opset: int,
    method: str,
    check_inputs: list[np.ndarray] | None,
) -> None:
    if source.is_tflite:
        raise InputModelError(
            f"{source.path} is a .tflite model; ONNX export needs the Keras model (.keras/.h5) or SavedModel it came from."
        )
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(
            f"ONNX opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (tf2onnx 1.17); received {opset!r}."
        )
    if method not in CALIBRATE_METHODS:
        raise UsageError(f"ONNX calibrate method must be one of {', '.join(CALIBRATE_METHODS)}; received {method!r}.")
    shapes = [tuple(s.shape[1:]) for s in source.inputs]
    for what, arrays in (("calibration", calibration.arrays if calibration else None), ("check", check_inputs)):
        if arrays is None:
            continue
        got = [tuple(np.shape(a)[1:]) for a in arrays]
        if got != shapes or any(np.shape(a)[0] != np.shape(arrays[0])[0] for a in arrays):
            raise CalibrationDataError(
                f"ONNX {what} inputs must be one (N, ...) array per model input with sample shapes {shapes}; received {got}."
            )
        if arrays and np.shape(arrays[0])[0] == 0:
            raise CalibrationDataError(f"ONNX {what} inputs hold no samples.")


# --- checking -------------------------------------------------------------------------------------


def _check_inputs(
    source: SourceModel,
    calibration: CalibrationSet | None,
    check_inputs: list[np.ndarray] | None,
    check_inputs_from: str | None,
) -> tuple[list[np.ndarray], str]:
    if check_inputs is not None:
        return [np.asarray(a, dtype=np.float32) for a in check_inputs], check_inputs_from or "given check inputs"
    if calibration is not None:
        return [np.asarray(a, dtype=np.float32) for a in calibration.arrays], (
            f"the {calibration.count} calibration samples ({calibration.source}; seen during calibration)"
        )
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((_SYNTHETIC_SAMPLES, *s.shape[1:])).astype(np.float32) for s in source.inputs]
    return arrays, f"{_SYNTHETIC_SAMPLES} seeded random-normal inputs (no calibration or eval data given)"


# --- child processes -------------------------------------------------------------------------------


def _run(
    request: dict[str, Any],
    work: Path,
    timeout_s: float,
    what: str,
    calibration: CalibrationSet | None = None,
    method: str = "minmax",
) -> dict[str, Any]:
    """One worker task; a crash, an OOM kill or a timeout becomes a one-line ConversionError."""
    task = request["task"]
    try:
        if task == "convert":  # tf2onnx needs TensorFlow: a warm host of the export has it loaded already
            run = run_in_worker(WORKER, request, work, task, timeout_s=timeout_s)
        else:  # onnxruntime only: a light one-shot child
            run = run_worker(WORKER, request, work, task, timeout_s=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(
            f"{what} did not finish within {timeout_s:.0f} s and was stopped; no .onnx file was written."
        ) from exc
    log.debug("ONNX %s worker log:\n%s", task, run.log_path.read_text(errors="replace"))
    if run.crashed:
        raise crash_error(run, what, calibration, method)
    result = run.result or {}
    if not result.get("ok"):
        log.debug("ONNX %s worker traceback:\n%s", task, result.get("traceback", ""))
    return result


# --- versions -------------------------------------------------------------------------------------


def _ort_version() -> str:
    from importlib.metadata import version

    return f"onnxruntime {version('onnxruntime')}"


__all__ = [
    "CALIBRATE_METHODS",
    "FLOAT_FILE",
    "INT8_FILE",
    "OnnxExport",
    "OnnxModel",
    "export_onnx",
    "layer_for_node",
]
