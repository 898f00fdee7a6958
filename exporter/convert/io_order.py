"""Put a converted model's inputs and outputs in the Keras model's order.

The TFLite converter orders a SavedModel signature's tensors its own way: a two-input model
``{"image", "meta"}`` comes out as ``(meta, image)``, and a list of two outputs as ``(output_1,
output_0)``. Everything downstream (fidelity, per-layer error, benchmarks, the C header's
``MODEL_INPUT_0``, a firmware's ``interpreter->input(0)``) indexes tensors by position, so the written
model's subgraph lists them in the order the user declared them, matched by signature key. The edit
is in place: two int32 vectors are permuted, nothing else in the file changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..load.model import SourceModel

#: SubGraph's vtable slots for ``inputs`` and ``outputs`` (tflite schema: tensors=4, inputs=6, outputs=8).
_INPUTS_SLOT, _OUTPUTS_SLOT = 6, 8


def signature_name(name: str, index: int) -> str:
    """The TF-legal signature key edgeport gives an input called ``name``."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name) or f"input_{index}"
    return cleaned if not cleaned[0].isdigit() else f"input_{cleaned}"


def signature_keys(source: SourceModel) -> tuple[list[str], list[str]]:
    """The serving signature's key for each of ``source.inputs`` and ``source.outputs``, in their order.

    Keras exports a dict of outputs under its keys and any other structure as ``output_0..n`` in
    flattened order (the order of ``source.outputs``); a SavedModel keeps its own signature keys.
    """
    if source.keras_model is None:  # re-traced with the SavedModel's own names (convert/tflite.py)
        return [s.name for s in source.inputs], [s.name for s in source.outputs]
    inputs = [signature_name(s.name, i) for i, s in enumerate(source.inputs)]
    structure = getattr(source.keras_model, "output", None)
    if isinstance(structure, dict) and len(structure) == len(source.outputs):
        return inputs, [s.name for s in source.outputs]
    return inputs, [f"output_{i}" for i in range(len(source.outputs))]


def _signature(model: Any) -> tuple[dict[str, int], dict[str, int]] | None:
    if model.SignatureDefsLength() == 0:
        return None
    sig = model.SignatureDefs(0)
    if sig.SubgraphIndex() != 0:
        return None

    def table(count: int, get: Any) -> dict[str, int]:
        return {get(j).Name().decode(): int(get(j).TensorIndex()) for j in range(count)}

    return table(sig.InputsLength(), sig.Inputs), table(sig.OutputsLength(), sig.Outputs)


def _permutation(current: Sequence[int], by_key: dict[str, int], keys: Sequence[str], what: str) -> list[int] | None:
    """Tensor ids in ``keys`` order, or None when already so; refuses a signature that does not match."""
    if len(keys) != len(current) or any(k not in by_key for k in keys):
        raise ConversionError(
            f"The converted model's {what} signature {sorted(by_key)} does not match the Keras model's {list(keys)}; "
            "edgeport cannot tell which tensor is which.",
            hint="Report the model to edgeport; name the Keras inputs/outputs with plain identifiers meanwhile.",
        )
    wanted = [by_key[k] for k in keys]
    if sorted(wanted) != sorted(current):
        raise ConversionError(f"The converted model's {what} signature names tensors that are not its {what}.")
    return None if wanted == list(current) else wanted


def order_io(model: bytes, input_keys: Sequence[str], output_keys: Sequence[str]) -> bytes:
    """``model`` with subgraph 0's inputs and outputs listed in ``input_keys`` / ``output_keys`` order.

    A model with one input and one output, or without a signature (the compat.v1 converter writes
    none; its order is the user's ``input_shapes`` order), is returned unchanged.
    """
    if len(input_keys) <= 1 and len(output_keys) <= 1:
        return model
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    signature = _signature(root)
    if signature is None:
        return model
    graph = root.Subgraphs(0)
    current_in = [graph.Inputs(j) for j in range(graph.InputsLength())]
    current_out = [graph.Outputs(j) for j in range(graph.OutputsLength())]
    new_in = _permutation(current_in, signature[0], input_keys, "input")
    new_out = _permutation(current_out, signature[1], output_keys, "output")
    if new_in is None and new_out is None:
        return model
    data = bytearray(model)
    for slot, values in ((_INPUTS_SLOT, new_in), (_OUTPUTS_SLOT, new_out)):
        if values is None:
            continue
        start = graph._tab.Vector(graph._tab.Offset(slot))
        data[start : start + 4 * len(values)] = np.asarray(values, dtype="<i4").tobytes()
    return bytes(data)


def keras_inputs(model: Any, arrays: Sequence[Any]) -> Any:
    """``arrays`` (one per input, in ``source.inputs`` order) in the structure the Keras model was built with.

    A dict-input model fed a list warns ("The structure of `inputs` doesn't match") and maps by position
    in flattened order; fed its own structure it maps by key, silently.
    """
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if struct is not None and len(arrays) > 1:
        try:
            return keras.tree.pack_sequence_as(struct, list(arrays))
        except (ValueError, TypeError):
            pass
    return arrays[0] if len(arrays) == 1 else list(arrays)


def keras_outputs(source: SourceModel, result: Any) -> list[Any]:
    """A Keras result (tensor, list or dict) as one array per ``source.outputs``, in that order."""
    if isinstance(result, dict):
        names = [s.name for s in source.outputs]
        if all(n in result for n in names):
            return [result[n] for n in names]
    import keras

    return list(keras.tree.flatten(result))
