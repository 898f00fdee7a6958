"""The converter's child process: ``python -m exporter.convert.worker REQUEST.json``.

The TFLite converter and its calibrator are native code that can kill the whole process (a
non-unrolled LSTM segfaults the calibrator). Running them here, in a child, turns such a crash into an
exit status the parent can explain. The request and the result travel as files in a private folder;
this module imports TensorFlow, the parent never needs to for conversion.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _representative(calib_path: str, n_inputs: int, keys: list[str] | None, dtypes: list[str] | None):
    """Batch-1 samples; keyed by signature name when the model has a signature (see io_order)."""
    import numpy as np

    data = np.load(calib_path)
    types = dtypes or ["float32"] * n_inputs
    arrays = [data[f"input_{i}"].astype(types[i]) for i in range(n_inputs)]

    def generate():
        for i in range(arrays[0].shape[0]):
            sample = [a[i : i + 1] for a in arrays]
            yield dict(zip(keys, sample, strict=True)) if keys and n_inputs > 1 else sample

    return generate


def _converter(request: dict[str, Any]):
    import tensorflow as tf

    mode = request["mode"]
    if mode == "compat.v1":
        shapes = {name: list(shape) for name, shape in request["input_shapes"].items()}
        return tf.compat.v1.lite.TFLiteConverter.from_saved_model(request["saved_model_dir"], input_shapes=shapes)
    return tf.lite.TFLiteConverter.from_saved_model(request["saved_model_dir"])


def convert(request: dict[str, Any]) -> bytes:
    import tensorflow as tf

    converter = _converter(request)
    if request["quantize"]:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(
            request["calib_path"], request["n_inputs"], request.get("input_keys"), request.get("input_dtypes")
        )
        if request.get("int16_activations"):
            ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        else:
            ops = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        converter.target_spec.supported_ops = [ops]
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32, "int16": tf.int16}[request["io_dtype"]]
        if request.get("int16_activations") and io in (tf.int8, tf.uint8):
            io = tf.int16  # 16x8 models take int16 (or float) I/O
        converter.inference_input_type = io
        converter.inference_output_type = io
        if not request.get("per_channel", True):
            converter._experimental_disable_per_channel = True
        if request.get("per_tensor_dense"):
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        if request.get("legacy_quantizer"):
            converter.experimental_new_quantizer = False
        if request.get("float_nodes"):
            return _selective(converter, request)
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _selective(converter, request: dict[str, Any]) -> bytes:
    """Quantize everything but the named ops (TFLite's quantization debugger's denylist)."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(request["float_nodes"]))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options
    )
    return debugger.get_nondebug_quantized_model()


def main(argv: list[str]) -> int:
    request_path = Path(argv[0])
    request = json.loads(request_path.read_text())
    result_path = Path(request["result_path"])
    try:
        blob = convert(request)
        Path(request["output_path"]).write_bytes(blob)
        result = {"ok": True, "bytes": len(blob)}
    except Exception as exc:  # reported to the parent, which turns it into a ConversionError
        result = {
            "ok": False,
            "error_type": type(exc).__name__,
            "error": str(exc),
            "traceback": traceback.format_exc(),
        }
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
