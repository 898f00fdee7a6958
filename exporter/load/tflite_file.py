"""Existing ``.tflite`` files, read with the flatbuffer schema only.

``ai_edge_litert.schema_py_generated`` parses the model in milliseconds without importing TensorFlow
(about 3 s and 600 MB), which matters because a .tflite input is only re-checked, never converted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputModelError
from .model import SourceModel, TensorSpec
from .shapes import first_line, resolve_inputs, show_shape

FILE_IDENTIFIER = b"TFL3"


def load_tflite(path: Path, *, input_shape: tuple[int, ...] | None) -> SourceModel:
    """Describe a .tflite file's main subgraph; its shapes are fixed, so --input-shape must agree."""
    data = _read(path)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise InputModelError(
            f"File {path} is not a TFLite model (no 'TFL3' flatbuffer identifier at bytes 4..8).",
            hint="Pass a .tflite written by the TFLite converter, or the .keras/.h5/SavedModel to convert.",
        )
    from ..verify.integrity import CORRUPT_HINT, check_tflite_bytes

    check_tflite_bytes(data, f"File {path}")  # the accessors below trust every offset
    try:
        subgraph = _main_subgraph(data)
        raw_inputs = [_tensor(subgraph, subgraph.Inputs(i)) for i in range(subgraph.InputsLength())]
        raw_outputs = [_tensor(subgraph, subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())]
    except InputModelError:
        raise
    except Exception as exc:  # a truncated flatbuffer raises struct/index errors from deep inside
        raise InputModelError(
            f"File {path} is a corrupt TFLite flatbuffer ({first_line(exc)}).",
            hint=CORRUPT_HINT,
        ) from exc

    notes: list[str] = []
    for name, shape, signature, _ in raw_inputs:
        if len(shape) >= 1 and shape[0] != 1:
            raise InputModelError(
                f"TFLite input '{name}' has batch {shape[0]} {show_shape(shape)}; edge targets run batch 1.",
                hint="Convert the model again with a batch-1 input signature.",
            )
        if signature is not None and any(d < 0 for d in signature):
            notes.append(
                f"TFLite input '{name}' declares a dynamic shape_signature {show_shape(signature)}; "
                f"using its static shape {show_shape(shape)}."
            )
    inputs, _ = resolve_inputs(
        [(name, shape, dtype, None) for name, shape, _, dtype in raw_inputs], input_shape, fixed=True
    )
    outputs = [TensorSpec(name=name, shape=shape, dtype=dtype) for name, shape, _, dtype in raw_outputs]
    data = _portable(data, notes)
    return SourceModel(
        path=path,
        format="tflite",
        loader="tflite flatbuffer (ai_edge_litert schema)",
        inputs=inputs,
        outputs=outputs,
        tflite_bytes=data,
        notes=notes,
    )


def _portable(data: bytes, notes: list[str]) -> bytes:
    """A Cortex-M file edgeport wrote with shared zero points, with them repeated per channel again (the
    same model, lossless), so LiteRT analyses it and every target's file loads where it should."""
    from ..convert.compact import expand_zero_points, tflm_only

    layout = tflm_only(data)
    if layout is None or "zero points" not in layout:
        return data
    notes.append(
        "the file stores one zero point per per-channel tensor (TFLite Micro's flash layout); read with one per channel"
    )
    return expand_zero_points(data)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputModelError(f"File {path} cannot be read ({first_line(exc)}).") from exc


def _main_subgraph(data: bytes) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise InputModelError("TFLite model has no subgraph.", hint="Re-run the TFLite converter.")
    return model.Subgraphs(0)


def _tensor(subgraph: Any, index: int) -> tuple[str, tuple[int, ...], tuple[int, ...] | None, str]:
    tensor = subgraph.Tensors(index)
    name = (tensor.Name() or b"").decode("utf-8", "replace") or f"tensor_{index}"
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    signature = None
    if not tensor.ShapeSignatureIsNone() and tensor.ShapeSignatureLength():
        signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy())
    return name, shape, signature, _dtype_name(tensor.Type())


def _dtype_name(code: int) -> str:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    return names.get(code, f"tensor_type_{code}")
