"""Full-integer TFLite conversion, run in a child process.

The parent prepares a static-shape SavedModel (batch 1, the Vela and Edge TPU want no dynamic batch),
writes the calibration samples to a file, and runs :mod:`exporter.convert.worker`. A converter that
raises becomes a :class:`ConversionError` naming the op and the Keras layer it came from; a converter
that crashes (signal) becomes one naming the recurrent layers that cause it and the fix.
"""

from __future__ import annotations

import logging
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..calibrate.dataset import CalibrationSet
from ..childproc import first_line, log_tail, signal_name
from ..errors import ConversionError, InputModelError
from ..load.model import SourceModel
from ..workers import run_in_worker
from .io_order import keras_inputs, signature_keys, signature_name

log = logging.getLogger(__name__)

#: A generous ceiling: MobileNet-size models convert in seconds; a hung converter must not hang make.
DEFAULT_TIMEOUT_S = 1800
RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Bidirectional", "RNN")


@dataclass(frozen=True)
class QuantizationConfig:
    """How one conversion quantizes; targets that share a config share one conversion."""

    io_dtype: str = "int8"
    per_channel: bool = True
    per_tensor_dense: bool = False
    int16_activations: bool = False
    legacy_quantizer: bool = False
    #: Calibration samples (None: the user's --calib-samples); the accuracy guard may raise it.
    calib_samples: int | None = None
    #: TFLite op output names kept in float (selective quantization; targets that allow float only).
    float_nodes: tuple[str, ...] = ()
    #: --cluster K: int8 weights re-chosen after conversion, at most K values per output channel.
    int8_clusters: int | None = None
    #: --lut-max-decoded with --cluster: tensors that would stay plain under the cap are not clustered either.
    int8_lut_max_decoded: int | None = None

    def describe(self) -> str:
        scheme = "int16 activations / int8 weights (16x8)" if self.int16_activations else "full-integer int8"
        io = "int16" if self.int16_activations and self.io_dtype != "float32" else self.io_dtype
        parts = [f"{scheme}, {io} I/O"]
        parts.append("per-channel weights" if self.per_channel else "per-tensor weights")
        if self.per_tensor_dense:
            parts.append("per-tensor Dense")
        if self.legacy_quantizer:
            parts.append("legacy (TOCO) quantizer")
        if self.calib_samples:
            parts.append(f"{self.calib_samples} calibration samples")
        if self.float_nodes:
            parts.append(f"{len(self.float_nodes)} op(s) kept in float")
        if self.int8_clusters:
            parts.append(f"weights clustered to {self.int8_clusters} int8 values per channel")
        return ", ".join(parts)


def prepare_saved_model(source: SourceModel, workdir: Path) -> tuple[Path, str]:
    """A SavedModel with static batch-1 input shapes, and the converter mode that reads it.

    Keras models are exported with an explicit input signature (``from_keras_model`` would leave a
    dynamic batch). SavedModels TF can load are re-traced the same way; the TF 2.3-era ones it refuses
    go to the compat.v1 converter, which takes the shapes as an argument.
    """
    if source.keras_model is not None:
        return _export_keras(source, workdir / "static_savedmodel"), "v2"
    if source.saved_model_dir is not None:
        if source.loader.startswith("compat.v1"):
            return source.saved_model_dir, "compat.v1"
        return _retrace_saved_model(source, workdir / "static_savedmodel"), "v2"
    raise InputModelError(f"{source.path} is already a .tflite model; it cannot be converted again.")


def _export_keras(source: SourceModel, out: Path) -> Path:
    import tensorflow as tf

    specs = [
        tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=signature_name(spec.name, i))
        for i, spec in enumerate(source.inputs)
    ]
    model = source.keras_model
    # One positional argument in the structure the model was built with: a dict-input model gets a dict
    # keyed by input name, a list-input model one list (a flat list of specs would be read as separate
    # call arguments: "expects 2 named input(s) ... but it received 1 input tensors").
    signature = [keras_inputs(model, specs)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Keras 2 files: "structure of `inputs` doesn't match"
            try:
                model.export(str(out), format="tf_saved_model", input_signature=signature, verbose=False)
            except TypeError:
                model.export(str(out), format="tf_saved_model", input_signature=signature)
    except Exception as exc:
        shapes = ", ".join(f"{s.name} {s.shape}" for s in source.inputs)
        raise ConversionError(
            f"TensorFlow could not trace the Keras model on batch-1 inputs ({shapes}): {first_line(exc)}.",
            hint="If an input has unknown dimensions, pass --input-shape; otherwise check that the model "
            "runs on one sample (model(x) with these shapes) and report it to edgeport.",
        ) from exc
    return out


def _retrace_saved_model(source: SourceModel, out: Path) -> Path:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source.saved_model_dir))
    fn = loaded.signatures["serving_default"]
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]

    class Static(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = loaded

        @tf.function(input_signature=specs)
        def serve(self, *args):
            return fn(**{s.name: a for s, a in zip(source.inputs, args, strict=True)})

    module = Static()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


def write_calibration(calib: CalibrationSet, path: Path) -> Path:
    np.savez(path, **{f"input_{i}": a.astype(np.float32) for i, a in enumerate(calib.arrays)})
    return path


def run_converter(
    source: SourceModel,
    saved_model_dir: Path,
    mode: str,
    workdir: Path,
    *,
    config: QuantizationConfig | None,
    calib_path: Path | None,
    tag: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bytes:
    """Convert in a child process; ``config=None`` gives a float model (the fidelity reference)."""
    output = workdir / f"{tag}.tflite"
    request = {
        "mode": mode,
        "saved_model_dir": str(saved_model_dir),
        "input_shapes": {(s.tensor_name or s.name): list(s.shape) for s in source.inputs},
        "n_inputs": len(source.inputs),
        # The calibrator feeds a list by the converted graph's input order, which is not the Keras order
        # (exporter.convert.io_order); keyed by signature name, each sample reaches its own input.
        "input_keys": signature_keys(source)[0] if mode == "v2" else None,
        "input_dtypes": [s.dtype for s in source.inputs],
        "quantize": config is not None,
        "calib_path": str(calib_path) if calib_path else None,
        "output_path": str(output),
    }
    if config is not None:
        request.update(
            io_dtype=config.io_dtype,
            per_channel=config.per_channel,
            per_tensor_dense=config.per_tensor_dense,
            int16_activations=config.int16_activations,
            legacy_quantizer=config.legacy_quantizer,
            float_nodes=list(config.float_nodes),
        )
    try:
        run = run_in_worker("exporter.convert.worker", request, workdir, tag, timeout_s=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"The TFLite converter did not finish within {timeout_s:.0f} s and was stopped.") from exc
    if run.crashed:
        raise _crash_error(source, run.returncode, run.log_path)
    result = run.result
    if not result["ok"]:
        raise _failure_error(source, result)
    return output.read_bytes()


def _crash_error(source: SourceModel, returncode: int, log_path: Path) -> ConversionError:
    how = signal_name(returncode)
    recurrent = [name for name, cls in source.layers.items() if cls in RECURRENT_LAYERS]
    if recurrent:
        return ConversionError(
            f"The TFLite converter crashed ({how}) while calibrating; layer '{recurrent[0]}' ({source.layers[recurrent[0]]})"
            " is a recurrent layer that the converter cannot quantize unless it is unrolled.",
            hint=f"Rebuild the model with {source.layers[recurrent[0]]}(..., unroll=True) and a fixed sequence length.",
        )
    tail = log_tail(log_path)
    return ConversionError(
        f"The TFLite converter crashed ({how}).{(' Last output: ' + tail) if tail else ''}",
        hint="Re-run with --debug to keep the converter log.",
    )


def _failure_error(source: SourceModel, result: dict) -> ConversionError:
    text = result.get("error", "")
    unsupported = re.findall(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op", text)
    layer = _layer_in_text(text, source.layers)
    if unsupported:
        where = f" (from Keras layer '{layer}')" if layer else ""
        return ConversionError(
            f"The model uses {', '.join(sorted(set(unsupported)))}{where}, which has no int8 TFLite builtin kernel;"
            " edgeport never produces Flex (SELECT_TF_OPS) models.",
            hint="Replace that layer with one made of standard ops (Conv, Dense, ReLU/ReLU6, pooling, Add, Concatenate).",
        )
    if "TensorListReserve" in text or "element_shape to be static" in text:
        recurrent = [name for name, cls in source.layers.items() if cls in RECURRENT_LAYERS]
        name = recurrent[0] if recurrent else "a recurrent layer"
        return ConversionError(
            f"The converter cannot lower {name} without unrolling it.",
            hint="Rebuild it with unroll=True and a fixed sequence length.",
        )
    return ConversionError(f"The TFLite converter failed: {result.get('error_type', 'error')}: {first_line(text)}.")


def _layer_in_text(text: str, layers: dict[str, str]) -> str | None:
    for name in sorted(layers, key=len, reverse=True):
        if re.search(rf"/{re.escape(name)}(?:_\d+)?/", text):
            return name
    return None
