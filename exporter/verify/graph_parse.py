"""Reading a .tflite flatbuffer into :mod:`exporter.verify.graph`'s immutable objects, and sharing the result.

The generated accessors (``ai_edge_litert.schema_py_generated``) trust every offset, so the file is first
verified (:func:`exporter.verify.integrity.check_tflite_bytes`) and every tensor index the checks follow is
bounded here. Parsed graphs are kept by the sha256 of their bytes: an export reads each model a dozen times.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..errors import InputModelError
from .graph import (
    _ACTIVATIONS,
    _CONST_INPUT_OPTIONS,
    _PADDINGS,
    BUILTIN_NAMES,
    ITEMSIZE,
    NUMPY_DTYPES,
    TYPE_NAMES,
    Op,
    Tensor,
    TFLiteGraph,
)
from .integrity import CORRUPT_HINT, check_tflite_bytes


def parse(buf: bytes, source: str) -> TFLiteGraph:
    """The graph of ``buf`` (already known to carry the TFL3 identifier), parsed once per distinct file."""
    key = hashlib.sha256(buf).digest()
    if key in _PARSED:  # an export reads each model a dozen times (checks, memory, sizes, per target)
        _PARSED.move_to_end(key)
        return _PARSED[key]
    check_tflite_bytes(buf, source)  # the generated accessors below trust every offset
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
        graph = _build(model, buf)
    except InputModelError as exc:
        raise InputModelError(f"{source} is a corrupt TFLite flatbuffer: {exc.message}", hint=CORRUPT_HINT) from exc
    except Exception as exc:  # the generated parser raises anything from struct.error to IndexError
        raise InputModelError(
            f"{source} is a corrupt TFLite flatbuffer ({type(exc).__name__}: {exc}).", hint=CORRUPT_HINT
        ) from exc
    _remember(key, graph)
    return graph


def _as_tuple(values: Any) -> tuple:
    if values is None:
        return ()
    return tuple(np.asarray(values).tolist())


def _decode(name: Any) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes | bytearray) else str(name)


def _snake(name: str) -> str:
    """``dilationWFactor`` -> ``dilation_w_factor`` (the schema's own field names)."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"([A-Z])([A-Z][a-z])", r"\1_\2", name).lower()


def _op_name(code: Any) -> tuple[str, str | None]:
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = _decode(code.customCode)
        return (custom if custom.startswith("Flex") else f"CUSTOM:{custom}"), custom
    return name, None


def _buffer_bytes(buffer: Any, whole: bytes | bytearray | None) -> bytes | None:
    if buffer is None:
        return None
    if buffer.data is not None and len(buffer.data) > 0:
        return bytes(np.asarray(buffer.data, dtype=np.uint8))
    if buffer.offset and buffer.offset > 1 and buffer.size and whole is not None:  # > 2 GB layout
        return bytes(whole[buffer.offset : buffer.offset + buffer.size])
    return None


def _tensor(index: int, raw: Any, data: bytes | None) -> Tensor:
    shape = _as_tuple(raw.shape)
    signature = _as_tuple(raw.shapeSignature) or shape
    dtype = TYPE_NAMES.get(int(raw.type), f"type_{raw.type}")
    q = raw.quantization
    scale = tuple(float(s) for s in _as_tuple(q.scale)) if q is not None else ()
    zero_point = tuple(int(z) for z in _as_tuple(q.zeroPoint)) if q is not None else ()
    nbytes = math.prod(shape) * ITEMSIZE.get(dtype, 1)
    if dtype == "string" and data is not None:
        nbytes = len(data)
    return Tensor(
        index=index,
        name=_decode(raw.name),
        shape=shape,
        shape_signature=signature,
        dtype=dtype,
        scale=scale,
        zero_point=zero_point,
        is_constant=data is not None,
        nbytes=nbytes,
        buffer=int(raw.buffer),
        is_variable=bool(raw.isVariable),
    )


def _options(raw_options: Any) -> dict[str, Any]:
    """The op's options table as snake_case keys, enums by name, arrays as lists."""
    if raw_options is None:
        return {}
    result: dict[str, Any] = {}
    for key, value in vars(raw_options).items():
        key = _snake(key)
        if key == "fused_activation_function":
            value = _ACTIVATIONS.get(int(value), str(value))
        elif key == "padding" and isinstance(value, int):
            value = _PADDINGS.get(value, str(value))
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, bytes | bytearray):
            value = _decode(value)
        elif not isinstance(value, int | float | str | bool | list | type(None)):
            continue  # nested tables (e.g. sparsity) are of no use to the checks
        result[key] = value
    return result


def _ops(subgraph: Any, model: Any, sg_index: int, values: Mapping[int, np.ndarray]) -> Iterator[Op]:
    for index, raw in enumerate(subgraph.operators or []):
        code = model.operatorCodes[raw.opcodeIndex]
        name, custom = _op_name(code)
        inputs = _as_tuple(raw.inputs)
        options = _options(raw.builtinOptions)
        for key, position in _CONST_INPUT_OPTIONS.get(name, ()):
            if position < len(inputs) and inputs[position] in values:
                options[key] = values[inputs[position]].tolist()
        yield Op(
            index=index,
            name=name,
            version=int(code.version),
            inputs=tuple(int(i) for i in inputs),
            outputs=tuple(int(i) for i in _as_tuple(raw.outputs)),
            options=options,
            custom_code=custom,
            subgraph=sg_index,
        )


def _build(model: Any, whole: bytes | bytearray) -> TFLiteGraph:
    if not model.subgraphs:
        raise InputModelError("The TFLite model has no subgraph: there is nothing to run.")
    main = model.subgraphs[0]
    buffers = model.buffers or []
    tensors: list[Tensor] = []
    values: dict[int, np.ndarray] = {}
    for index, raw in enumerate(main.tensors or []):
        data = _buffer_bytes(buffers[raw.buffer], whole) if 0 < raw.buffer < len(buffers) else None
        tensor = _tensor(index, raw, data)
        tensors.append(tensor)
        if data is not None and tensor.dtype in NUMPY_DTYPES:
            array = np.frombuffer(data, dtype=NUMPY_DTYPES[tensor.dtype])
            if array.size == math.prod(tensor.shape):
                values[index] = array.reshape(tensor.shape)
    other = tuple(op for i, sg in enumerate(model.subgraphs[1:], start=1) for op in _ops(sg, model, i, {}))
    ops = tuple(_ops(main, model, 0, values))
    inputs = tuple(int(i) for i in _as_tuple(main.inputs))
    outputs = tuple(int(i) for i in _as_tuple(main.outputs))
    _check_indices(ops, inputs, outputs, len(tensors))
    return TFLiteGraph(
        ops=ops,
        tensors=tuple(tensors),
        inputs=inputs,
        outputs=outputs,
        size_bytes=len(whole),
        subgraph_count=len(model.subgraphs),
        other_ops=other,
        description=_decode(model.description),
        constants=values,
    )


#: Parsed graphs by sha256 of their file: a graph is immutable (frozen dataclasses, read-only constant
#: arrays that view the file's bytes), so every reader of the same bytes can share one. Bounded by count
#: and by the files' total size (a ResNet50 holds 100 MB of constants).
_PARSED: OrderedDict[bytes, TFLiteGraph] = OrderedDict()
_PARSED_MAX_ENTRIES = 8
_PARSED_MAX_BYTES = 256 * 1024 * 1024


def _remember(key: bytes, graph: TFLiteGraph) -> None:
    _PARSED[key] = graph
    while len(_PARSED) > _PARSED_MAX_ENTRIES or (
        len(_PARSED) > 1 and sum(g.size_bytes for g in _PARSED.values()) > _PARSED_MAX_BYTES
    ):
        _PARSED.popitem(last=False)


def _check_indices(ops: tuple[Op, ...], inputs: tuple[int, ...], outputs: tuple[int, ...], count: int) -> None:
    """Every tensor index the checks will follow must name a tensor (LiteRT's loader checks this too;
    this keeps the reader safe on its own, e.g. for files that only TFLite Micro would load)."""
    for where, indices in (("subgraph inputs", inputs), ("subgraph outputs", outputs)):
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise InputModelError(f"The {where} name tensor {bad[0]}, but the main subgraph has {count} tensors.")
    for op in ops:
        bad = [i for i in (*op.inputs, *op.outputs) if not -1 <= i < count]
        if bad:
            raise InputModelError(
                f"Op {op.index} ({op.name}) names tensor {bad[0]}, but the main subgraph has {count} tensors."
            )
