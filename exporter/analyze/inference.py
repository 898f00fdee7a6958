"""Run a model on samples: the int8 .tflite through LiteRT, the float reference through Keras.

Quantized I/O is handled here once, so every measurement compares real-valued outputs: inputs are
quantized with the model's own scale and zero point, outputs dequantized the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..load.model import SourceModel
from .memo import content_key

#: Keras reference batches hold about this many input elements (MobileNetV2 224x224: 6 samples), so
#: activations stay in the tens of MB; small inputs run 256 at a time.
REFERENCE_ELEMENTS = 2**20
REFERENCE_BATCH = 256


def _interpreter(model: bytes, threads: int = 1):
    """A LiteRT interpreter, created without its "Created XNNPACK delegate" banner on stderr."""
    from ai_edge_litert.interpreter import Interpreter

    from ..convert.compact import for_litert
    from ..tfimport import silenced_stderr_fd

    with silenced_stderr_fd():
        interp = Interpreter(model_content=for_litert(model), num_threads=threads)
        interp.allocate_tensors()
    return interp


def quantize(values: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Real values to the tensor's integer type, as firmware would (round half away, saturate)."""
    if np.issubdtype(dtype, np.floating) or scale == 0:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(values / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating) or scale == 0:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_tflite(model: bytes, inputs: Sequence[np.ndarray], *, threads: int = 1) -> list[np.ndarray]:
    """Outputs (real-valued, stacked over samples) of a .tflite for float ``inputs[i]`` of shape (N, ...)."""
    interp = _interpreter(model, threads)
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()
    n = int(inputs[0].shape[0])
    outputs: list[list[np.ndarray]] = [[] for _ in out_details]
    for i in range(n):
        for detail, array in zip(in_details, inputs, strict=True):
            scale, zp = detail["quantization"]
            sample = array[i : i + 1].reshape(detail["shape"])
            interp.set_tensor(detail["index"], quantize(sample, detail["dtype"], scale, zp))
        interp.invoke()
        for k, detail in enumerate(out_details):
            scale, zp = detail["quantization"]
            outputs[k].append(dequantize(interp.get_tensor(detail["index"]), scale, zp)[0])
    return [np.stack(o) for o in outputs]


def run_reference(
    source: SourceModel, inputs: Sequence[np.ndarray], float_tflite: bytes | None = None
) -> list[np.ndarray]:
    """Float outputs of the original model: Keras when we have it, else its float TFLite twin."""
    if source.keras_model is not None:
        return keras_reference(source, inputs)
    if float_tflite is not None:
        return run_tflite(float_tflite, inputs)
    if source.tflite_bytes is not None:
        raise ValueError("no float reference for a .tflite input")
    raise ValueError("no float reference available")


def keras_reference(source: SourceModel, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's float outputs, one array per ``source.outputs``, for (N, ...) ``inputs``.

    The model runs as one graph (``tf.function``) in batches sized by the input (see
    :data:`REFERENCE_ELEMENTS`): ``model.predict`` in eager batches of 26 MobileNetV2 224x224 samples
    added 2.4 GB of RSS and took 23 s for 200 samples; the graph in batches of 6 adds about 0.2 GB and
    takes 6 s.
    """
    key = content_key(*inputs)
    cache = source.reference_cache
    if key not in cache:  # the ONNX check and the TFLite fidelity usually ask for the same samples
        cache.clear()  # one entry: the cache must not hold every evaluation set of a long recipe
        cache[key] = _keras_reference(source, inputs)
    return [a.copy() for a in cache[key]]


def _keras_reference(source: SourceModel, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import tensorflow as tf

    from ..convert.io_order import keras_inputs, keras_outputs

    model = source.keras_model

    def call(*args: Any) -> tuple[Any, ...]:
        with warnings.catch_warnings():  # Keras 2 files declare inputs as a list: "structure ... doesn't match"
            warnings.simplefilter("ignore", UserWarning)
            return tuple(keras_outputs(source, model(keras_inputs(model, list(args)), training=False)))

    per_sample = max(1, sum(int(np.prod(a.shape[1:])) for a in inputs))
    step = max(1, min(REFERENCE_BATCH, REFERENCE_ELEMENTS // per_sample))
    return batched_outputs(tf.function(call, reduce_retracing=True), inputs, step)


def batched_outputs(call: Callable[..., Any], inputs: Sequence[np.ndarray], step: int) -> list[np.ndarray]:
    """``call`` on ``step`` samples at a time, its outputs concatenated (float32) over all samples."""
    import tensorflow as tf

    count = int(inputs[0].shape[0])
    pieces: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        outs = call(*[tf.constant(np.asarray(a[start : start + step])) for a in inputs])
        pieces.append([np.asarray(o, dtype=np.float32) for o in outs])
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]
