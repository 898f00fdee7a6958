"""TensorFlow SavedModel directories.

The serving signature is read from ``saved_model.pb`` itself (a protobuf, no graph execution), so it is
available even for SavedModels TF 2.21 refuses to load: TF 2.3-era Keras SavedModels carrying optimizer
slot variables fail in ``tf.saved_model.load`` with ``'_UserObject' object has no attribute 'add_slot'``,
yet ``tf.compat.v1.lite.TFLiteConverter.from_saved_model`` still converts them. ``loader`` tells the
converter which of the two paths to take.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import InputModelError
from .model import SourceModel, TensorSpec
from .shapes import RawShape, first_line, output_spec, resolve_inputs

log = logging.getLogger(__name__)

SIGNATURE_KEY = "serving_default"
LOADER_V2 = "tf.saved_model.load"
LOADER_COMPAT_V1 = "compat.v1"


def is_saved_model_dir(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def load_saved_model(path: Path, *, input_shape: tuple[int, ...] | None) -> SourceModel:
    """Read the serving signature, then check TF 2 can load the graph; fall back to compat.v1 if not."""
    if not is_saved_model_dir(path):
        raise InputModelError(
            f"{path} is a directory but not a SavedModel (no saved_model.pb inside).",
            hint="Pass a SavedModel directory, a .keras or .h5 file, or a .tflite file.",
        )
    raw_inputs, raw_outputs = _read_signature(path)
    inputs, notes = resolve_inputs(raw_inputs, input_shape)
    outputs = [output_spec(name, shape, dtype, tensor) for name, shape, dtype, tensor in raw_outputs]

    loader = LOADER_V2
    error = _try_tf_load(path)
    if error is not None:
        loader = LOADER_COMPAT_V1
        notes.append(
            f"TensorFlow cannot load this SavedModel ({first_line(error)}); its serving signature was read "
            "from saved_model.pb and it will be converted with the TF1-compatible converter "
            "(tf.compat.v1.lite.TFLiteConverter.from_saved_model)."
        )
    return SourceModel(
        path=path,
        format="saved_model",
        loader=loader,
        inputs=inputs,
        outputs=outputs,
        saved_model_dir=path,
        notes=notes,
    )


def signature_inputs(saved_model_dir: str | Path) -> list[TensorSpec]:
    """The ``serving_default`` inputs as declared (unknown sizes as -1), read without loading the graph.

    ``tensor_name`` is the graph tensor (no ``:0``) the compat.v1 converter wants as the key of
    ``input_shapes``; ``name`` is the signature key the TF 2 signature function takes as a keyword.
    """
    raw_inputs, _ = _read_signature(Path(saved_model_dir))
    return [
        TensorSpec(name=name, shape=_declared(shape), dtype=dtype, tensor_name=tensor)
        for name, shape, dtype, tensor in raw_inputs
    ]


def signature_outputs(saved_model_dir: str | Path) -> list[TensorSpec]:
    """The ``serving_default`` outputs as declared, like :func:`signature_inputs`."""
    _, raw_outputs = _read_signature(Path(saved_model_dir))
    return [
        TensorSpec(name=name, shape=_declared(shape), dtype=dtype, tensor_name=tensor)
        for name, shape, dtype, tensor in raw_outputs
    ]


def _declared(shape: RawShape) -> tuple[int, ...]:
    return tuple(-1 if d is None else d for d in shape) if shape is not None else ()


def _try_tf_load(path: Path) -> Exception | None:
    """None when ``tf.saved_model.load`` accepts the directory, else the exception it raised."""
    import tensorflow as tf

    try:
        tf.saved_model.load(str(path))
    except Exception as exc:  # any refusal: the signature we already read decides if we can go on
        log.info("tf.saved_model.load failed for %s: %s", path, first_line(exc))
        return exc
    return None


Raw = list[tuple[str, RawShape, str, str | None]]


def _read_signature(path: Path) -> tuple[Raw, Raw]:
    signature = _serving_signature(_parse_proto(path), path)
    return _tensor_infos(signature.inputs), _tensor_infos(signature.outputs)


def _parse_proto(path: Path) -> Any:
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    binary = path / "saved_model.pb"
    try:
        if binary.is_file():
            proto.ParseFromString(binary.read_bytes())
        else:
            text_format.Parse((path / "saved_model.pbtxt").read_text(encoding="utf-8"), proto)
    except (message.DecodeError, text_format.ParseError, OSError, UnicodeDecodeError) as exc:
        raise InputModelError(
            f"SavedModel {path} has a corrupt saved_model.pb ({first_line(exc)}).",
            hint="Re-export it with tf.saved_model.save or model.export(..., format='tf_saved_model').",
        ) from exc
    if not proto.meta_graphs:
        raise InputModelError(f"SavedModel {path} holds no MetaGraph.", hint="Re-export the model.")
    return proto


def _serving_signature(proto: Any, path: Path) -> Any:
    """The serving signature of the 'serve' MetaGraph (or the only one)."""
    graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(proto.meta_graphs)
    for graph in graphs:
        if SIGNATURE_KEY in graph.signature_def:
            return graph.signature_def[SIGNATURE_KEY]
    available = sorted({k for g in graphs for k in g.signature_def if not k.startswith("__")})
    raise InputModelError(
        f"SavedModel {path} has no '{SIGNATURE_KEY}' signature (signatures: {', '.join(available) or 'none'}).",
        hint="Re-export it with signatures={'serving_default': ...} (model.export does this).",
    )


def _tensor_infos(infos: Any) -> Raw:
    from tensorflow.core.framework import types_pb2

    result: Raw = []
    for key in sorted(infos):
        info = infos[key]
        shape: RawShape = None
        if not info.tensor_shape.unknown_rank:
            shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        dtype = types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower()
        dtype = {"float": "float32", "double": "float64", "half": "float16"}.get(dtype, dtype)
        tensor = info.name.split(":")[0] if info.name else None
        result.append((key, shape, dtype, tensor))
    return result
