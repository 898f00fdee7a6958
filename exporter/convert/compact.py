"""Shrink what a microcontroller never reads: long fused tensor names and the converter's metadata.

The converter names a fused tensor after every op it absorbed
(``functional_1/activation_8_1/Relu;functional_1/batch_normalization_8_1/batchnorm/add_1``): on a Dense
autoencoder that is 3 KB of flash for strings TFLite Micro never looks at. Each name keeps its first
part without the model scope (``activation_8_1/Relu``), so a person can still tell the layers apart,
and the ``CONVERSION_METADATA`` buffer goes. Weights, quantization and the graph are untouched: the
compacted model computes bit-identical outputs. Analysis runs on the full names before this step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCOPE = re.compile(r"^(?:functional|model|sequential)(?:_\d+)*/")
_DROPPED_METADATA = {b"CONVERSION_METADATA"}


@dataclass(frozen=True)
class Compaction:
    before: int
    after: int

    @property
    def saved(self) -> int:
        return self.before - self.after

    def describe(self) -> str:
        return f"tensor names shortened and converter metadata dropped for flash: {self.saved:,} B saved ({self.before:,} -> {self.after:,} B)"


def short_name(name: str) -> str:
    first = name.split(";")[0]
    return _SCOPE.sub("", first) or first


def compact(model: bytes) -> tuple[bytes, Compaction]:
    """The same model with short tensor names and without converter metadata (or unchanged if not smaller)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    for graph in m.subgraphs or []:
        for tensor in graph.tensors or []:
            if tensor.name:
                tensor.name = short_name(tensor.name.decode("utf-8", "replace")).encode()
    if m.metadata:
        dropped = [entry for entry in m.metadata if entry.name in _DROPPED_METADATA]
        for entry in dropped:
            m.buffers[entry.buffer].data = None
        m.metadata = [entry for entry in m.metadata if entry.name not in _DROPPED_METADATA]
    builder = flatbuffers.Builder(len(model))
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    if len(out) >= len(model):
        return model, Compaction(len(model), len(model))
    return out, Compaction(len(model), len(out))
