"""Shrink what a microcontroller never reads: long fused tensor names and the converter's metadata.

The converter names a fused tensor after every op it absorbed
(``functional_1/activation_8_1/Relu;functional_1/batch_normalization_8_1/batchnorm/add_1``): on a Dense
autoencoder that is 3 KB of flash for strings TFLite Micro never looks at. Each name keeps its first
part without the model scope (``activation_8_1/Relu``), so a person can still tell the layers apart,
and the ``CONVERSION_METADATA`` buffer goes. Weights, quantization and the graph are untouched: the
compacted model computes bit-identical outputs. Analysis runs on the full names before this step.

TFLite Micro targets go one step further (:func:`share_zero_points`): a per-channel tensor whose zero
points are all equal stores one, which TFLite Micro reads for every channel and LiteRT refuses.
:func:`tflm_only` says when a file is in such a TFLite-Micro-only layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
    out = pack_model(m, len(model))
    if len(out) >= len(model):
        return model, Compaction(len(model), len(model))
    return out, Compaction(len(model), len(out))


@dataclass(frozen=True)
class SharedZeroPoints(Compaction):
    """What :func:`share_zero_points` rewrote: how many tensors, and the file's size before and after."""

    tensors: int = 0

    def describe(self) -> str:
        return (
            f"per-channel zero points stored once per tensor for TFLite Micro ({self.tensors} tensors): "
            f"{self.saved:,} B saved ({self.before:,} -> {self.after:,} B)"
        )


def share_zero_points(model: bytes) -> tuple[bytes, SharedZeroPoints]:
    """The model with each per-channel tensor's zero points stored once, when they are all equal.

    A per-channel int8 tensor stores a float32 scale and an int64 zero point per channel, and the
    zero points of symmetric weights are all 0: 8 B per channel of flash (VWW: 44 kB, 13 % of the
    file). TFLite Micro's allocator reads a one-entry zero-point vector as that value for every
    channel ("As a space-saving optimization, zero point arrays for weights can be reduced to a
    single value", ``InitializeTfLiteTensorFromFlatbuffer`` in micro_allocator.cc), so its kernels
    see the same quantization. LiteRT's loader refuses such a file ("QuantizationParam has 1
    zero_point values and 8 scale values"): only TFLite Micro targets get it.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    count = 0
    for graph in m.subgraphs or []:
        for tensor in graph.tensors or []:
            q = tensor.quantization
            zps = np.asarray(q.zeroPoint) if q is not None and q.zeroPoint is not None else np.zeros(0)
            scales = q.scale if q is not None and q.scale is not None else ()
            if len(zps) > 1 and len(zps) == len(scales) and np.all(zps == zps[0]):
                q.zeroPoint = zps[:1].astype(np.int64)
                count += 1
    if not count:
        return model, SharedZeroPoints(len(model), len(model))
    out = pack_model(m, len(model))
    if len(out) >= len(model):
        return model, SharedZeroPoints(len(model), len(model))
    return out, SharedZeroPoints(len(model), len(out), count)


def expand_zero_points(model: bytes) -> bytes:
    """The inverse of :func:`share_zero_points`: one zero point per channel again, as LiteRT requires."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    for graph in m.subgraphs or []:
        for tensor in graph.tensors or []:
            q = tensor.quantization
            if q is None or q.zeroPoint is None or q.scale is None:
                continue
            if len(q.zeroPoint) == 1 and len(q.scale) > 1:
                q.zeroPoint = np.full(len(q.scale), int(q.zeroPoint[0]), dtype=np.int64)
    return pack_model(m, len(model) + 16 * 1024)


def for_litert(model: bytes) -> bytes:
    """``model`` as LiteRT can load it: a shared-zero-point file with the zero points repeated (the same
    model, lossless), anything else unchanged. LUT-compressed files stay TFLite Micro's."""
    layout = tflm_only(model)
    return expand_zero_points(model) if layout == SHARED_ZERO_POINTS else model


#: :func:`tflm_only`'s reason for a file in the shared-zero-point layout.
SHARED_ZERO_POINTS = "its per-channel zero points are stored once per tensor"


def pack_model(root: Any, size: int) -> bytes:
    """The object-API model serialised as a .tflite flatbuffer."""
    import flatbuffers

    builder = flatbuffers.Builder(size)
    builder.Finish(root.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflm_only(model: bytes) -> str | None:
    """Why LiteRT cannot load ``model`` while TFLite Micro can (its flash layout), or None.

    A LUT-compressed file needs the DECODE kernel only TFLite Micro has; a file with shared zero
    points (:func:`share_zero_points`) fails LiteRT's quantization check."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(bytearray(model), 0)
    for i in range(root.OperatorCodesLength()):
        if (root.OperatorCodes(i).CustomCode() or b"") == b"TFLM_DECODE":
            return "its weights are LUT-compressed, decoded by DECODE operators only TFLite Micro has"
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            q = graph.Tensors(t).Quantization()
            if q is not None and q.ZeroPointLength() == 1 and q.ScaleLength() > 1:
                return SHARED_ZERO_POINTS
    return None
