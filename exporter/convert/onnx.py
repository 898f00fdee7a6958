"""ONNX export beside TFLite: a float model from tf2onnx and an int8 QDQ model from onnxruntime.

Both come from the same Keras model and the same calibration samples as the TFLite path, and neither
is handed over before onnxruntime has loaded it and its outputs agree with Keras: tf2onnx writes a
file even for ops it could not convert (exact GELU leaves a TF ``Erfc`` node that onnxruntime refuses),
so every model is built in a scratch folder, checked, and only then written with
:func:`exporter.atomic.write_bytes`. On any failure no ``.onnx`` file is written.

tf2onnx runs in this process (it is Python graph rewriting on the already-loaded model, about 0.1 s;
its logging is captured, not printed); onnxruntime's quantizer runs in a child process
(:mod:`exporter.convert.onnx_worker`) because Entropy/Percentile calibration can exhaust memory.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ensure_dir, scratch_dir, write_bytes
from ..calibrate.dataset import CalibrationSet
from ..childproc import first_line, run_worker, signal_name
from ..errors import CalibrationDataError, ConversionError, InputModelError, UsageError
from ..load.model import SourceModel
from ..verify.onnx_check import OnnxCheck, OnnxLoadError, check_onnx, load_session

log = logging.getLogger(__name__)

FLOAT_FILE = "model_float.onnx"
INT8_FILE = "model_int8.onnx"
DEFAULT_OPSET = 17
#: QDQ per-channel needs opset 13; tf2onnx 1.17 knows opsets up to 18.
MIN_OPSET, MAX_OPSET = 13, 18
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_TIMEOUT_S = 1800
#: Samples used to check a float model when the caller gives no inputs and no calibration set.
_SYNTHETIC_SAMPLES = 8
_REFERENCE_BATCH = 256

#: TF ops tf2onnx cannot express, with the change to the Keras model that avoids them.
_KNOWN_FIXES = {
    "Erfc": (
        "exact GELU",
        "Use the tanh approximation: keras.activations.gelu(x, approximate=True) instead of "
        "Activation('gelu') / activation='gelu' (exact erf form), then export again.",
    ),
}

_UNSUPPORTED_NODE = re.compile(r"Tensorflow op \[(.+?): (\w+)\] is not supported")
_UNSUPPORTED_COUNTER = re.compile(r"Unsupported ops: Counter\(\{(.*?)\}\)")
_NO_OP_REGISTERED = re.compile(r"No Op registered for (\w+)")


@dataclass
class OnnxModel:
    """One written ONNX file."""

    kind: str  # "float" | "int8"
    path: Path
    size_bytes: int
    check: OnnxCheck
    written: bool  # False when an identical file was already there (kept, mtime unchanged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "written": self.written,
            "check": self.check.to_dict(),
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
            agree = f"top-1 agreement {q.check.top1_agreement:.1%}, " if q.check.top1_agreement is not None else ""
            snr = f"SNR {q.check.snr_db:.1f} dB" if q.check.snr_db is not None else "SNR inf"
            lines.append(
                f"ONNX int8   {q.path.name}: {q.size_bytes:,} B, QDQ, {agree}{snr} vs Keras on "
                f"{q.check.samples} samples ({q.check.inputs_from})"
            )
        lines.append(f"  measured on the host with {f.check.runtime}")
        return "\n".join(lines)


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
    _validate_args(source, calibration, opset, calibrate_method, check_inputs)
    out_dir = Path(out_dir)
    ensure_dir(out_dir)
    timings: dict[str, float] = {}
    notes: list[str] = []
    input_names = [s.name for s in source.inputs]
    output_names = [s.name for s in source.outputs]

    from ..tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    start = time.perf_counter()
    function, specs = _traced_function(source, dynamic_batch)
    proto, tf2onnx_log = _run_tf2onnx(function, specs, opset)
    timings["convert_s"] = time.perf_counter() - start
    _raise_if_unsupported(source, proto, tf2onnx_log, opset)
    _rename_io(proto, input_names, output_names, dynamic_batch)
    float_bytes = proto.SerializeToString()

    inputs, inputs_from = _check_inputs(source, calibration, check_inputs, check_inputs_from)
    start = time.perf_counter()
    reference = _reference_outputs(source, function, inputs, dynamic_batch)
    timings["keras_reference_s"] = time.perf_counter() - start

    start = time.perf_counter()
    float_check = _check(source, float_bytes, inputs, reference, output_names, "float", inputs_from, opset)
    timings["verify_float_s"] = time.perf_counter() - start
    if not float_check.agrees:
        raise ConversionError(
            f"The float ONNX model disagrees with Keras: max |error| {float_check.max_abs_error:.3g} > tolerance "
            f"{float_check.tolerance:.3g} on {float_check.samples} samples ({inputs_from}); no .onnx file was written.",
            hint=f"Try another opset (opset={MIN_OPSET}..{MAX_OPSET}) and report the model to edgeport.",
        )

    int8_bytes = None
    int8_check = None
    quantization = None
    if calibration is not None:
        start = time.perf_counter()
        int8_bytes, worker = _quantize(source, float_bytes, calibration, per_channel, calibrate_method, timeout_s)
        timings["quantize_s"] = time.perf_counter() - start
        notes.extend(worker.get("notes", []))
        start = time.perf_counter()
        int8_check = _check(source, int8_bytes, inputs, reference, output_names, "int8", inputs_from, opset)
        timings["verify_int8_s"] = time.perf_counter() - start
        if not int8_check.agrees:
            raise ConversionError(
                f"The int8 ONNX model gives NaN or Inf outputs on {inputs_from}; no .onnx file was written.",
                hint="Check the calibration samples are preprocessed exactly like the model's inputs.",
            )
        quantization = {
            "format": "QDQ",
            "activations": "int8",
            "weights": "int8",
            "per_channel": per_channel,
            "calibrate_method": calibrate_method,
            "calibration_samples": calibration.count,
            "calibration_source": calibration.source,
            "quantizer": f"{_ort_version()} quantize_static (after quant_pre_process)",
        }

    # Everything is verified: now, and only now, write the files.
    float_path = out_dir / FLOAT_FILE
    float_model = OnnxModel("float", float_path, len(float_bytes), float_check, write_bytes(float_path, float_bytes))
    int8_model = None
    if int8_bytes is not None and int8_check is not None:
        int8_path = out_dir / INT8_FILE
        int8_model = OnnxModel("int8", int8_path, len(int8_bytes), int8_check, write_bytes(int8_path, int8_bytes))
    return OnnxExport(
        opset=opset,
        dynamic_batch=dynamic_batch,
        input_names=input_names,
        output_names=output_names,
        converter=f"{_tf2onnx_version()} (from_function, opset {opset})",
        float_model=float_model,
        int8_model=int8_model,
        quantization=quantization,
        timings_s=timings,
        notes=notes,
    )


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


# --- tracing and converting ----------------------------------------------------------------------


def _tensor_name(name: str, index: int) -> str:
    """A TF-legal name for a signature tensor; the ONNX graph gets the exact Keras name back later."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or f"input_{index}"
    return cleaned if cleaned[0].isalnum() else f"input_{cleaned}"


def _traced_function(source: SourceModel, dynamic_batch: bool) -> tuple[Any, list[Any]]:
    """A ``tf.function`` returning the outputs as a flat tuple in ``source.outputs`` order, and its specs."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec(
            (None if dynamic_batch else 1, *spec.shape[1:]), tf.as_dtype(spec.dtype), name=_tensor_name(spec.name, i)
        )
        for i, spec in enumerate(source.inputs)
    ]
    if source.keras_model is not None:
        import keras

        model = source.keras_model
        single = len(source.inputs) == 1

        def call(*args: Any) -> tuple[Any, ...]:
            with warnings.catch_warnings():  # Keras 2 files declare inputs as a list: "structure ... doesn't match"
                warnings.simplefilter("ignore", UserWarning)
                return tuple(keras.tree.flatten(model(args[0] if single else list(args), training=False)))

        return tf.function(call), specs
    if source.saved_model_dir is not None and not source.loader.startswith("compat.v1"):
        loaded = tf.saved_model.load(str(source.saved_model_dir))
        names = [s.name for s in source.inputs]
        outputs = [s.name for s in source.outputs]

        def serve(*args: Any) -> tuple[Any, ...]:
            # ``loaded`` (not just its signature) stays referenced: its variables must outlive the trace.
            result = loaded.signatures["serving_default"](**dict(zip(names, args, strict=True)))
            return tuple(result[o] for o in outputs)

        return tf.function(serve), specs
    raise ConversionError(
        f"ONNX export of {source.path} needs a Keras model or a SavedModel that TensorFlow 2 can load; "
        "this SavedModel only loads with the TF1-compatible converter.",
        hint="Load the original model in Keras, save it with model.save('model.keras') and export that file.",
    )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a malformed record must not break the conversion
            self.lines.append(str(record.msg))


@contextmanager
def _captured_tf2onnx_log() -> Iterator[list[str]]:
    """tf2onnx logs through Python logging with no handler (lastResort prints to stderr): capture it."""
    from ..tfimport import silenced_stderr_fd

    logger = logging.getLogger("tf2onnx")
    handler = _Collect()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with silenced_stderr_fd():
            yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for line in handler.lines:
            log.debug("tf2onnx: %s", line)


def _run_tf2onnx(function: Any, specs: list[Any], opset: int) -> tuple[Any, list[str]]:
    import tf2onnx

    with _captured_tf2onnx_log() as lines:
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=tuple(specs), opset=opset)
        except Exception as exc:
            tail = next((ln for ln in reversed(lines) if "rror" in ln), "")
            raise ConversionError(
                f"tf2onnx could not convert the model: {first_line(exc)}{(' (' + tail + ')') if tail else ''}.",
                hint="Re-run with --debug to see the tf2onnx log.",
            ) from exc
    return proto, list(lines)


# --- unsupported ops ------------------------------------------------------------------------------


def _raise_if_unsupported(source: SourceModel, proto: Any, tf2onnx_log: list[str], opset: int) -> None:
    """Refuse a graph that still holds TF ops tf2onnx could not express (it writes them anyway)."""
    import onnx.defs

    found: dict[str, str] = {}  # op type -> TF node name
    for line in tf2onnx_log:
        match = _UNSUPPORTED_NODE.search(line)
        if match:
            found.setdefault(match.group(2), match.group(1))
        counter = _UNSUPPORTED_COUNTER.search(line)
        if counter:
            for op in re.findall(r"'(\w+)'", counter.group(1)):
                found.setdefault(op, "")
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            if not found.get(node.op_type):
                found[node.op_type] = node.name
    if found:
        raise _unsupported_error(source, found, opset)


def _unsupported_error(source: SourceModel, found: dict[str, str], opset: int) -> ConversionError:
    op, node = next(((o, n) for o, n in found.items() if o in _KNOWN_FIXES), next(iter(found.items())))
    layer = layer_for_node(node, source.layers)
    where = f"Keras layer '{layer}' ({source.layers[layer]})" if layer else "the model"
    others = sorted(set(found) - {op})
    also = f" (also unsupported: {', '.join(others)})" if others else ""
    if op in _KNOWN_FIXES:
        what, hint = _KNOWN_FIXES[op]
        return ConversionError(
            f"ONNX export failed: {where} uses {what}, whose TF op {op} has no ONNX conversion in "
            f"{_tf2onnx_version()} (opset {opset}), so onnxruntime cannot load the model{also}; no .onnx file was written.",
            hint=hint,
        )
    return ConversionError(
        f"ONNX export failed: {where} uses TF op {op}, which {_tf2onnx_version()} cannot convert to ONNX "
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


# --- naming ---------------------------------------------------------------------------------------


def _rename_io(proto: Any, input_names: list[str], output_names: list[str], dynamic_batch: bool) -> None:
    """Give graph inputs/outputs the Keras names (tf2onnx leaves outputs as ``Identity:0``)."""
    graph = proto.graph
    if len(graph.input) != len(input_names) or len(graph.output) != len(output_names):
        raise ConversionError(
            f"tf2onnx produced {len(graph.input)} inputs and {len(graph.output)} outputs; the Keras model has "
            f"{len(input_names)} and {len(output_names)}."
        )
    mapping = {}
    for value, name in (*zip(graph.input, input_names, strict=True), *zip(graph.output, output_names, strict=True)):
        if value.name != name:
            mapping[value.name] = name
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    clash = (set(mapping.values()) & taken) - set(mapping)
    for old in clash:  # an internal tensor already carries a Keras name: move it out of the way
        mapping.setdefault(old, f"{old}__internal")
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = mapping.get(value.name, value.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    _renumber_inserted_names(graph)
    graph.doc_string = ""  # tf2onnx writes the traced function's name, numbered per process
    if dynamic_batch:
        for value in (*graph.input, *graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                dims[0].dim_param = "batch"


_INSERTED = re.compile(r"__(\d+)(?=$|[:/_])")


def _renumber_inserted_names(graph: Any) -> None:
    """Number tf2onnx's inserted names (``Transpose__25``) in graph order.

    tf2onnx takes the numbers from a process-wide counter, so the same model converted twice in one
    process gave different bytes; renumbered, it gives the same file, which
    :func:`exporter.atomic.write_bytes` then keeps untouched.
    """
    numbers: dict[str, str] = {}

    def names() -> Iterator[str]:
        for node in graph.node:
            yield node.name
            yield from node.input
            yield from node.output
        for value in (*graph.initializer, *graph.value_info):
            yield value.name

    for name in names():
        for number in _INSERTED.findall(name):
            numbers.setdefault(number, str(len(numbers) + 1))

    def fix(name: str) -> str:
        return _INSERTED.sub(lambda m: f"__{numbers.get(m.group(1), m.group(1))}", name)

    for node in graph.node:
        node.name = fix(node.name)
        node.input[:] = [fix(n) for n in node.input]
        node.output[:] = [fix(n) for n in node.output]
    for value in (*graph.initializer, *graph.value_info):
        value.name = fix(value.name)


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
        return [a.astype(np.float32) for a in calibration.arrays], (
            f"the {calibration.count} calibration samples ({calibration.source}; seen during calibration)"
        )
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((_SYNTHETIC_SAMPLES, *s.shape[1:])).astype(np.float32) for s in source.inputs]
    return arrays, f"{_SYNTHETIC_SAMPLES} seeded random-normal inputs (no calibration or eval data given)"


def _reference_outputs(
    source: SourceModel, function: Any, inputs: list[np.ndarray], dynamic_batch: bool
) -> list[np.ndarray]:
    """Keras (or SavedModel) float outputs for every check sample, in ``source.outputs`` order."""
    count = int(inputs[0].shape[0])
    step = _REFERENCE_BATCH if source.keras_model is not None else 1
    call = function.python_function if source.keras_model is not None else function
    pieces: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        outs = call(*[a[start : start + step] for a in inputs])
        pieces.append([np.asarray(o) for o in outs])
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]


def _check(
    source: SourceModel,
    data: bytes,
    inputs: list[np.ndarray],
    reference: list[np.ndarray],
    output_names: list[str],
    kind: str,
    inputs_from: str,
    opset: int,
) -> OnnxCheck:
    try:
        session = load_session(data)
    except OnnxLoadError as exc:
        missing = _NO_OP_REGISTERED.search(exc.detail)
        if missing and kind == "float":
            import onnx

            proto = onnx.load_from_string(data)
            node = next((n.name for n in proto.graph.node if n.op_type == missing.group(1)), "")
            raise _unsupported_error(source, {missing.group(1): node}, opset) from exc
        raise ConversionError(
            f"onnxruntime cannot load the {kind} ONNX model ({exc.detail}); no .onnx file was written.",
            hint="Try another opset, or export the float model only (no calibration) and report the model to edgeport.",
        ) from exc
    return check_onnx(data, inputs, reference, output_names, kind=kind, inputs_from=inputs_from, session=session)


# --- quantizing (child process) -------------------------------------------------------------------


def _quantize(
    source: SourceModel,
    float_bytes: bytes,
    calibration: CalibrationSet,
    per_channel: bool,
    method: str,
    timeout_s: float,
) -> tuple[bytes, dict[str, Any]]:
    with scratch_dir("edgeport-onnx-") as work:
        float_path = work / "float.onnx"
        float_path.write_bytes(float_bytes)
        calib_path = work / "calib.npz"
        np.savez(calib_path, **{f"input_{i}": a.astype(np.float32) for i, a in enumerate(calibration.arrays)})
        output = work / "int8.onnx"
        request = {
            "float_path": str(float_path),
            "calib_path": str(calib_path),
            "input_names": [s.name for s in source.inputs],
            "output_path": str(output),
            "per_channel": per_channel,
            "calibrate_method": method,
        }
        try:
            run = run_worker("exporter.convert.onnx_worker", request, work, "quantize", timeout_s=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(
                f"The onnxruntime quantizer did not finish within {timeout_s:.0f} s and was stopped; no .onnx file was written."
            ) from exc
        log_path = run.log_path
        log.debug("onnxruntime quantizer log:\n%s", log_path.read_text(errors="replace"))
        if run.crashed:
            raise _crash_error(run.returncode, method, calibration.count, log_path)
        result = run.result
        if not result["ok"]:
            log.debug("onnxruntime quantizer traceback:\n%s", result.get("traceback", ""))
            raise _quantize_error(result, method, calibration.count)
        return output.read_bytes(), result


def _crash_error(returncode: int, method: str, samples: int, log_path: Path) -> ConversionError:
    how = signal_name(returncode)
    if returncode in (-signal.SIGKILL, 137) or "MemoryError" in log_path.read_text(errors="replace"):
        return _memory_error(method, samples, how)
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    tail = lines[-1][:200] if lines else ""
    return ConversionError(
        f"The onnxruntime quantizer crashed ({how}){('; last output: ' + tail) if tail else ''}; no .onnx file was written.",
        hint="Re-run with --debug to keep the quantizer log, or export the float ONNX model only.",
    )


def _memory_error(method: str, samples: int, how: str) -> ConversionError:
    if method in ("entropy", "percentile"):
        hint = f"Use calibrate_method 'minmax' (no histograms), or fewer than {samples} calibration samples."
        why = f"'{method}' calibration keeps a histogram of every activation tensor"
    else:
        hint = f"Use fewer than {samples} calibration samples."
        why = "calibration holds every activation tensor"
    return ConversionError(
        f"The onnxruntime quantizer ran out of memory ({how}): {why} over {samples} samples; no .onnx file was written.",
        hint=hint,
    )


def _quantize_error(result: dict[str, Any], method: str, samples: int) -> ConversionError:
    if result.get("error_type") == "MemoryError":
        return _memory_error(method, samples, "MemoryError")
    text = first_line(Exception(result.get("error", ""))) or result.get("error_type", "error")
    return ConversionError(
        f"onnxruntime could not quantize the model to int8 QDQ with {method} calibration "
        f"({result.get('error_type')}: {text}); no .onnx file was written.",
        hint="Try calibrate_method 'minmax' or per_channel=False, or export the float ONNX model only.",
    )


# --- versions -------------------------------------------------------------------------------------


def _tf2onnx_version() -> str:
    import tf2onnx

    return f"tf2onnx {tf2onnx.__version__}"


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


__all__ = [
    "CALIBRATE_METHODS",
    "FLOAT_FILE",
    "INT8_FILE",
    "OnnxExport",
    "OnnxModel",
    "export_onnx",
    "layer_for_node",
]
