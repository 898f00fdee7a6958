"""Pin the input quantization of an int8 model to the input's declared value range.

The converter derives the input's scale and zero point from the values it saw during calibration, so
a set of photos whose darkest pixel is 9 gives a scale slightly off 1/255. Firmware wants the declared
range instead: with images scaled to 0..1, int8 input = pixel - 128 exactly (scale 1/255, zero point
-128), as in the MLPerf Tiny reference models. Widening the input range to the declared one is always
safe (the data lies inside it); the only values that depend on the input scale are the int32 biases of
the ops that consume the input (bias scale = input scale x weight scale), which are requantized here.
Consumers whose kernels require equal input and output scales (pooling, reshape, concatenation...) would
need more rewriting, so models whose input feeds such an op are left as converted, and the caller says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Ops whose kernels recompute their requantization multipliers from the tensors' scales at prepare
#: time, so a new input scale is honoured as long as their int32 bias (if any) is rescaled with it.
_RESCALING_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "QUANTIZE", "ADD", "SUB", "MUL"}
_BIASED_OPS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2}


@dataclass(frozen=True)
class PinResult:
    """What pinning did, for the report."""

    pinned: bool
    detail: str
    scale: float | None = None
    zero_point: int | None = None


def quant_params(low: float, high: float, dtype: str) -> tuple[float, int]:
    """Scale and zero point that map [low, high] (widened to include 0) onto the dtype's full range."""
    low, high = min(low, 0.0), max(high, 0.0)
    qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
    scale = (high - low) / float(qmax - qmin)
    if scale == 0:
        raise ValueError("empty input range")
    zero_point = int(np.clip(round(qmin - low / scale), qmin, qmax))
    return scale, zero_point


def pin_input_range(model: bytes, input_index: int, value_range: tuple[float, float]) -> tuple[bytes, PinResult]:
    """Return the model with input ``input_index`` quantized over ``value_range`` (or unchanged, and why)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    graph = m.subgraphs[0]
    tensor_id = int(graph.inputs[input_index])
    tensor = graph.tensors[tensor_id]
    dtype = {schema.TensorType.INT8: "int8", schema.TensorType.UINT8: "uint8"}.get(tensor.type)
    if dtype is None or tensor.quantization is None or tensor.quantization.scale is None:
        return model, PinResult(False, "input is not quantized; nothing to pin")
    old_scale = float(tensor.quantization.scale[0])
    old_zp = int(tensor.quantization.zeroPoint[0])
    new_scale, new_zp = quant_params(*value_range, dtype)
    if np.isclose(old_scale, new_scale, rtol=1e-6) and old_zp == new_zp:
        return model, PinResult(True, "calibration already covered the declared range", new_scale, new_zp)

    consumers = []
    for op in graph.operators:
        if op.inputs is not None and tensor_id in list(op.inputs):
            code = m.operatorCodes[op.opcodeIndex]
            consumers.append((names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"), op))
    blocking = sorted({name for name, _ in consumers if name not in _RESCALING_OPS})
    if blocking:
        return model, PinResult(
            False, f"input feeds {', '.join(blocking)}, whose kernels need equal scales; kept the calibrated range"
        )
    bias_ids = []
    for name, op in consumers:
        slot = _BIASED_OPS.get(name)
        if slot is not None and len(op.inputs) > slot and op.inputs[slot] >= 0:
            bias_ids.append(int(op.inputs[slot]))
    for bias_id in bias_ids:
        if sum(1 for op in graph.operators if op.inputs is not None and bias_id in list(op.inputs)) > 1:
            return model, PinResult(False, "a bias tensor is shared between ops; kept the calibrated range")

    ratio = old_scale / new_scale
    for bias_id in bias_ids:
        bias = graph.tensors[bias_id]
        buffer = m.buffers[bias.buffer]
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int32) if buffer.data is not None else None
        if values is None or bias.type != schema.TensorType.INT32:
            return model, PinResult(
                False, "a consumer's bias is not a constant int32 tensor; kept the calibrated range"
            )
        rescaled = np.clip(np.round(values.astype(np.float64) * ratio), -(2**31), 2**31 - 1).astype(np.int32)
        buffer.data = np.frombuffer(rescaled.tobytes(), dtype=np.uint8)
        bias.quantization.scale = (np.asarray(bias.quantization.scale, dtype=np.float64) / ratio).astype(np.float32)
    tensor.quantization.scale = np.asarray([new_scale], dtype=np.float32)
    tensor.quantization.zeroPoint = np.asarray([new_zp], dtype=np.int64)
    tensor.quantization.min = None
    tensor.quantization.max = None
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    detail = (
        f"input quantization pinned to the declared range {value_range[0]:g}..{value_range[1]:g}: "
        f"scale {new_scale:.8g}, zero point {new_zp} (calibration gave scale {old_scale:.8g}, zero point {old_zp})"
    )
    return bytes(builder.Output()), PinResult(True, detail, new_scale, new_zp)
