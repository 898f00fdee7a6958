"""Exporting a quantization-aware model: convert it with the scheme it was trained for, and prove the
int8 file computes what the fake-quantized Keras model computes.

A QAT model (:mod:`exporter.compress.qat`) holds its weight scheme in its layers (per-channel or
per-tensor, Dense per-tensor for a microcontroller), and its activation ranges in its quantizers, which
the converter reads. Converting it another way (``--dense-quant auto`` picking per-tensor Dense for a
model trained per-channel) would requantize trained weights; so the export follows the model, and says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..load.model import SourceModel
from ..options import ExportOptions
from ..report.report import TargetReport

#: The share of int8 output values that must be within one step of the fake-quantized model's (issue #17).
MIN_WITHIN_ONE_LSB = 0.99


def qat_scheme(model: Any) -> dict[str, bool] | None:
    """The weight scheme a QAT model was trained with, or None for any other model."""
    from ..compress.qat import is_qat_model

    if model is None or not is_qat_model(model):
        return None
    layers = [layer for layer in model.layers if hasattr(layer, "per_channel") and hasattr(layer, "quantized_kernel")]
    convs = [layer.per_channel for layer in layers if type(layer).__name__ != "QuantizedDense"]
    dense = [layer.per_channel for layer in layers if type(layer).__name__ == "QuantizedDense"]
    per_channel = all(convs) if convs else all(dense) if dense else True
    return {"per_channel": per_channel, "dense_per_tensor": per_channel and bool(dense) and not any(dense)}


def follow_qat_scheme(source: SourceModel, opts: ExportOptions) -> ExportOptions:
    """``opts`` with the weight scheme the QAT model was trained for, unless the user forced another."""
    scheme = qat_scheme(source.keras_model)
    if scheme is None:
        return opts
    changes: dict[str, Any] = {}
    if opts.per_channel is None and not scheme["per_channel"]:
        changes["per_channel"] = False
    if opts.dense_quant == "auto" and scheme["per_channel"]:
        changes["dense_quant"] = "per-tensor" if scheme["dense_per_tensor"] else "per-channel"
    trained = "per-channel" if scheme["per_channel"] else "per-tensor"
    if scheme["dense_per_tensor"]:
        trained += ", Dense per-tensor"
    source.notes.append(
        f"quantization-aware model: converted with the weight scheme it was trained for ({trained}) and its "
        "trained activation ranges"
    )
    return replace(opts, **changes) if changes else opts


def check_qat_outputs(
    report: TargetReport, source: SourceModel, model: bytes | None = None, inputs: list | None = None
) -> None:
    """For a QAT model: the share of int8 values within one step of the fake-quantized Keras model's,
    reported, and a warning on the terminal when it is below 99% (the ranges or the scheme did not carry).

    Where the single output ends in softmax, sigmoid or tanh, the values compared are that op's int8
    input (the logits): both sides then hold the same grid, while the fixed-range op magnifies a one-step
    difference in a logit (scale 0.13 on an MNIST CNN) into up to 8 steps of its 1/256 output."""
    if qat_scheme(source.keras_model) is None or not report.fidelity:
        return
    measured = _logit_shares(source.keras_model, model, inputs) if model is not None and inputs else None
    where = "the int8 logits before the output's {op}"
    if measured is None:
        where = "the outputs"
        shares = [(o["name"], o.get("within_one_lsb")) for o in report.fidelity.get("outputs", [])]
        measured = [(name, share) for name, share in shares if share is not None]
    if not measured:
        return
    worst_name, worst = min(measured, key=lambda item: item[1])
    what = where.format(op=worst_name.split(":")[-1])
    samples = report.fidelity["outputs"][0]["samples"]
    report.conversion["qat"] = (
        f"QAT check: {what} within 1 LSB of the fake-quantized Keras model's on {worst:.2%} of values at worst "
        f"({samples} samples, LiteRT on the host; at least {MIN_WITHIN_ONE_LSB:.0%} required)"
    )
    if worst < MIN_WITHIN_ONE_LSB:
        report.warnings.append(
            f"QAT check failed: only {worst:.2%} of the values of {what} are within 1 LSB of the fake-quantized "
            "Keras model (needs 99%); the int8 file does not compute what was trained. Please report the model."
        )


#: Output ops whose int8 output range the converter fixes; the check compares their inputs instead.
_FIXED_RANGE_OPS = {"SOFTMAX": "softmax", "LOGISTIC": "sigmoid", "TANH": "tanh"}


def _logit_shares(keras_model: Any, model: bytes, inputs: list) -> list[tuple[str, float]] | None:
    """The one-step share at the input of a single output's softmax / sigmoid / tanh; None otherwise."""
    import keras

    from ..analyze.fidelity import within_one_lsb
    from ..analyze.litert_child import run_tflite_in_child
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    if len(graph.outputs) != 1 or len(keras_model.outputs) != 1:
        return None
    producer = graph.producers.get(graph.outputs[0])
    op = graph.ops[producer] if producer is not None else None
    if op is None or op.name not in _FIXED_RANGE_OPS:
        return None
    tap = graph.tensors[op.inputs[0]]
    last = keras_model.outputs[0]._keras_history.operation
    if type(last).__name__ not in ("Activation", "Softmax"):
        return None
    logits = keras.Model(keras_model.inputs, last.input)
    expected = np.asarray(logits.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0))
    actual = run_tflite_in_child(_with_outputs(model, [tap.index]), inputs)[0]
    quant = (tap.scale[0], tap.zero_point[0] if tap.zero_point else 0) if tap.scale else None
    share = within_one_lsb(expected.reshape(actual.shape), actual, quant)
    return None if share is None else [(f"{tap.name}:{op.name}", share)]


def _with_outputs(model: bytes, outputs: list[int]) -> bytes:
    """The same model with ``outputs`` as the main subgraph's outputs (an inner tensor made readable)."""
    from ai_edge_litert import schema_py_generated as schema

    from ..convert.compact import pack_model

    root = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    root.subgraphs[0].outputs = np.asarray(outputs, dtype=np.int32)
    root.signatureDefs = None
    return pack_model(root, len(model) + 1024)
