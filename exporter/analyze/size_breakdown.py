"""Which Keras layers the model's flash goes to: constant tensor bytes attributed to layers.

When a model does not fit in flash, the user needs to know which layer to shrink; the total says
nothing about that. Bytes are counted exactly as :func:`exporter.analyze.memory.estimate_memory`
counts ``weights_bytes`` (each constant buffer once, at the size of its largest tensor), so the rows
add up to that number. A constant belongs to the layer its own name names (the converter names
weights after the layer variable), else to the layer of the first op that reads it, else to "other"
(e.g. shape constants of a Reshape the converter created). The rest of the file (graph structure,
quantization parameters, metadata) is reported as one "(graph and metadata)" row only when asked,
because it is not a layer's doing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..verify.graph import TFLiteGraph

OTHER = "other"
OVERHEAD = "(graph and metadata)"


def size_by_layer(
    graph: TFLiteGraph, layers: Mapping[str, str] | None = None, *, include_overhead: bool = False
) -> list[dict[str, Any]]:
    """Constant bytes per Keras layer, largest first: ``layer``, ``class``, ``bytes``, ``params``
    (element count), ``tensors``, ``share`` (of the model file's bytes).

    ``layers`` (name -> class) overrides the names the graph carries; without either, every constant
    lands in "other". ``include_overhead`` adds the bytes of the file that are not constants.
    """
    if layers:
        graph = graph.with_keras_layers(layers)
    seen: dict[int, tuple[str, int, int]] = {}  # buffer -> (layer, bytes, params)
    for tensor in graph.tensors:
        if not tensor.is_constant:
            continue
        name = _owner(graph, tensor)
        if tensor.buffer in seen and seen[tensor.buffer][1] >= tensor.nbytes:
            continue  # a shared buffer is stored once, and charged to its first (largest) user
        seen[tensor.buffer] = (name, tensor.nbytes, tensor.size)
    totals: dict[str, dict[str, Any]] = {}
    for name, nbytes, params in seen.values():
        row = totals.setdefault(
            name, {"layer": name, "class": graph.keras_layers.get(name), "bytes": 0, "params": 0, "tensors": 0}
        )
        row["bytes"] += nbytes
        row["params"] += params
        row["tensors"] += 1
    rows = list(totals.values())
    if include_overhead:
        rest = graph.size_bytes - sum(r["bytes"] for r in rows)
        rows.append({"layer": OVERHEAD, "class": None, "bytes": max(rest, 0), "params": 0, "tensors": 0})
    for row in rows:
        row["share"] = row["bytes"] / graph.size_bytes if graph.size_bytes else 0.0
    rows.sort(key=lambda r: (-r["bytes"], r["layer"]))
    return rows


def _owner(graph: TFLiteGraph, tensor: Any) -> str:
    layer = graph.layer_of(tensor)
    if layer is not None:
        return layer
    for op_index in graph.consumers.get(tensor.index, []):
        layer = graph.layer_of_op(graph.ops[op_index])
        if layer is not None:
            return layer
    return OTHER
