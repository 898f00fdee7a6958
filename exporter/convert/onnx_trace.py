"""The parent's side of the ONNX export: trace the model it holds and freeze it into a GraphDef.

Pure TensorFlow graph work on the model already in memory (``--prune`` and ``--edgetpu-compat``
edits included), safe in this process; tf2onnx and onnxruntime run in children
(:mod:`exporter.convert.onnx_worker`).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from ..childproc import first_line
from ..errors import ConversionError
from ..load.model import SourceModel


def tensor_name(name: str, index: int) -> str:
    """A TF-legal name for a signature tensor; the ONNX graph gets the exact Keras name back later."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or f"input_{index}"
    return cleaned if cleaned[0].isalnum() else f"input_{cleaned}"


def traced_function(source: SourceModel, dynamic_batch: bool) -> tuple[Any, list[Any]]:
    """A ``tf.function`` returning the outputs as a flat tuple in ``source.outputs`` order, and its specs."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec(
            (None if dynamic_batch else 1, *spec.shape[1:]), tf.as_dtype(spec.dtype), name=tensor_name(spec.name, i)
        )
        for i, spec in enumerate(source.inputs)
    ]
    if source.keras_model is not None:
        import keras

        from .io_order import keras_inputs

        model = source.keras_model

        def call(*args: Any) -> tuple[Any, ...]:
            with warnings.catch_warnings():  # Keras 2 files declare inputs as a list: "structure ... doesn't match"
                warnings.simplefilter("ignore", UserWarning)
                return tuple(keras.tree.flatten(model(keras_inputs(model, list(args)), training=False)))

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


def frozen_graph(source: SourceModel, function: Any, specs: list[Any]) -> tuple[bytes, list[str], list[str]]:
    """The traced model as a GraphDef with every variable and captured tensor folded into constants.

    This is what ``tf2onnx.convert.from_function`` does first, minus its one flaw: it lists the
    function's captured eager tensors (``Normalization(mean=..., variance=...)``, adapted
    Normalization layers) as extra graph inputs. Here the frozen function's inputs are exactly the
    model's. Pure graph rewriting, safe in this process; tf2onnx itself runs in the child.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        concrete = function.get_concrete_function(*specs)
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    except Exception as exc:
        raise ConversionError(
            f"Could not trace the model for ONNX with input shapes {[tuple(s.shape) for s in specs]}: {first_line(exc)}; "
            "no .onnx file was written.",
            hint="Check the model runs on a batch of 1 (Keras model(x) with x of that shape).",
        ) from exc
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    outputs = [t.name for t in frozen.outputs if t.dtype != tf.dtypes.resource]
    if len(inputs) != len(source.inputs) or len(outputs) != len(source.outputs):
        raise ConversionError(
            f"The frozen TensorFlow graph has {len(inputs)} inputs and {len(outputs)} outputs; the model has "
            f"{len(source.inputs)} and {len(source.outputs)}; no .onnx file was written.",
            hint="Report the model to edgeport; export with --format tflite meanwhile.",
        )
    return frozen.graph.as_graph_def(add_shapes=True).SerializeToString(), inputs, outputs


def reference_outputs(source: SourceModel, function: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Keras (or SavedModel) float outputs for every check sample, in ``source.outputs`` order."""
    from ..analyze.inference import batched_outputs, keras_reference

    if source.keras_model is not None:
        return keras_reference(source, inputs)
    return batched_outputs(function, inputs, step=1)
