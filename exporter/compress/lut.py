"""LUT compression of clustered weights for TFLite Micro: packed indices + a value table, decoded by DECODE.

:func:`lut_compress` takes an int8 model whose weights hold few distinct values per channel (for
instance after :func:`exporter.compress.int8_cluster.cluster_int8`) and hands every tensor the rules
allow (:mod:`exporter.compress.lut_rules`) to TFLite Micro's own compressor
(``tflite_micro.tensorflow.lite.micro.compression``), which packs ``ceil(log2(distinct))``-bit
indices, stores one value table per channel and inserts a ``TFLM_DECODE`` op before each consumer.

A tensor is compressed only when that pays in real bytes, measured by building the model with it
and without it: the value tables, the ancillary tensor, the DECODE op, its decoded output tensor
(a copy of the original's quantization: 12 bytes per channel) and the alignment padding all count,
not only the packed indices. The result is deterministic (same input, byte-identical output).
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InternalError, UsageError
from .int8_cluster import max_distinct_per_channel
from .lut_rules import (
    DECODE_OP,
    MAX_INDEX_BITS,
    ConstTensor,
    Rule,
    legacy_opcodes,
    op_names,
    read_constants,
    tensor_rule,
)


@dataclass(frozen=True)
class LutTensor:
    """One compressed tensor: its index width, layout and what it costs in the file before and after."""

    name: str
    op: str
    shape: tuple[int, ...]
    dtype: str
    bits: int
    mode: str
    bytes_before: int
    #: ``bytes_before`` plus the measured change of the file's size when only this tensor is compressed.
    bytes_after: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LutReport:
    """What :func:`lut_compress` compressed, what it left and why, and the file sizes."""

    size_before: int
    size_after: int
    compressed: tuple[LutTensor, ...] = ()
    left: dict[str, str] = field(default_factory=dict)
    #: Size change of re-serialising the model without compressing anything (the editor's layout).
    rebuild_delta: int = 0
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.compressed)

    @property
    def saved(self) -> int:
        return self.size_before - self.size_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_before": self.size_before,
            "size_after": self.size_after,
            "saved": self.saved,
            "rebuild_delta": self.rebuild_delta,
            "compressed": [t.to_dict() for t in self.compressed],
            "left": dict(self.left),
            "note": self.note,
        }

    def summary(self) -> str:
        if not self.compressed:
            return f"LUT compression: nothing compressed ({self.note})"
        bits = sorted({t.bits for t in self.compressed})
        return (
            f"LUT compression: {len(self.compressed)} tensors at {'/'.join(map(str, bits))}-bit indices, "
            f"{self.size_before:,} -> {self.size_after:,} B ({self.size_after / self.size_before:.3f}x); "
            f"{len(self.left)} left uncompressed"
        )


@dataclass(frozen=True)
class _Candidate:
    tensors: tuple[ConstTensor, ...]  # the aliases of one buffer
    rule: Rule
    bits: int


def index_bits(distinct: int) -> int:
    """Index width for ``distinct`` values: ceil(log2(distinct)), at least 1."""
    return max(1, math.ceil(math.log2(max(distinct, 1))))


def lut_compress(
    model: bytes, *, max_bits: int = MAX_INDEX_BITS, max_decoded_bytes: int | None = None
) -> tuple[bytes, LutReport]:
    """LUT-compress every tensor of ``model`` the rules allow and that saves bytes; ``model`` is not modified.

    Index bits per tensor: ceil(log2(the most distinct values in one of its channels)), at least 1;
    tensors needing more than ``max_bits`` (1..7) stay int8, and so do tensors larger than
    ``max_decoded_bytes`` when given (DECODE writes the whole decoded tensor to RAM before its
    consumer runs). Returns the input bytes unchanged, with the reason in the report's ``note``,
    when nothing qualifies or the rebuilt file would not be smaller.
    """
    if isinstance(max_bits, bool) or not isinstance(max_bits, int) or not 1 <= max_bits <= MAX_INDEX_BITS:
        raise UsageError(
            f"LUT index width must be 1..{MAX_INDEX_BITS} bits; received {max_bits!r}.",
            hint="TFLite Micro's DECODE reads 1- to 7-bit indices; pass 4 for 16-value tables.",
        )
    model = bytes(model)
    names = op_names(model)
    if DECODE_OP in names:
        return model, LutReport(len(model), len(model), note="the model is LUT-compressed already")
    left: dict[str, str] = {}
    candidates: list[_Candidate] = []
    by_buffer: dict[int, list[ConstTensor]] = {}
    for tensor in read_constants(model):
        by_buffer.setdefault(tensor.buffer, []).append(tensor)
    for aliases in by_buffer.values():
        candidate = _candidate(aliases, model, max_bits, max_decoded_bytes, left)
        if candidate is not None:
            candidates.append(candidate)
    if not candidates:
        return model, LutReport(len(model), len(model), left=left, note="no tensor is eligible")

    source = _with_builtin_codes(model) if legacy_opcodes(model) else model
    baseline = len(_build(source, []))
    chosen: list[tuple[_Candidate, int]] = []
    for candidate in candidates:
        delta = len(_build(source, [candidate])) - baseline
        if delta >= 0:
            left[candidate.tensors[0].name] = (
                f"{candidate.bits}-bit indices, value tables and DECODE cost {delta:+,} B in the file (measured)"
            )
        else:
            chosen.append((candidate, delta))
    if not chosen:
        return model, LutReport(len(model), len(model), left=left, note="no tensor saves bytes")
    result = _build(source, [c for c, _ in chosen])
    _check_ops(names, result, [c for c, _ in chosen])
    if len(result) >= len(model):
        note = f"the compressed file would be {len(result):,} B, not smaller than {len(model):,} B"
        return model, LutReport(len(model), len(model), left=left, note=note)
    rows = tuple(_row(c, delta) for c, delta in chosen)
    return result, LutReport(len(model), len(result), rows, left, rebuild_delta=baseline - len(model))


def _candidate(
    aliases: list[ConstTensor], model: bytes, max_bits: int, max_decoded: int | None, left: dict[str, str]
) -> _Candidate | None:
    """The tensor (all the aliases of one buffer) as a compression candidate, or None with the reason in ``left``."""
    tensor = aliases[0]
    rules = [tensor_rule(t) for t in aliases]
    refused = next((r for r in rules if not r.allowed), None)
    if refused is not None:
        left[tensor.name] = refused.reason
        return None
    if len({r.axis for r in rules}) > 1:
        left[tensor.name] = "its buffer is shared by tensors of different layouts"
        return None
    distinct = max_distinct_per_channel(tensor, model)
    bits = index_bits(distinct)
    if bits > max_bits:
        left[tensor.name] = f"{distinct} distinct values in a channel need {bits}-bit indices (> {max_bits})"
        return None
    if max_decoded is not None and tensor.nbytes > max_decoded:
        left[tensor.name] = f"decoded it needs {tensor.nbytes:,} B of RAM (> {max_decoded:,})"
        return None
    floor = _least_cost(tensor, bits, distinct)
    if floor >= 0:
        left[tensor.name] = f"{bits}-bit indices plus value tables cost at least {floor:+,} B (no saving)"
        return None
    return _Candidate(tuple(aliases), rules[0], bits)


def _least_cost(tensor: ConstTensor, bits: int, distinct: int) -> int:
    """A lower bound on the file-size change of compressing ``tensor``, to skip hopeless builds.

    Counted: packed indices, the value tables (``channels x distinct`` entries), the 16-byte DCM
    header and the decoded tensor's copy of the quantization (4 B per scale, 8 B per zero point:
    one per channel, or one in all once they are shared). The real cost adds names, tables and
    padding, which is why candidates are measured.
    """
    itemsize = tensor.nbytes // max(tensor.size, 1)
    rows = len(tensor.scales) if tensor.per_channel else 1
    packed = math.ceil(tensor.size * bits / 8)
    quantization = 4 * len(tensor.scales) + 8 * len(tensor.zero_points)
    return packed + rows * distinct * itemsize + 16 + quantization - tensor.nbytes


def _row(candidate: _Candidate, delta: int) -> LutTensor:
    tensor = candidate.tensors[0]
    return LutTensor(
        name=tensor.name,
        op=",".join(sorted({u.op for t in candidate.tensors for u in t.uses})),
        shape=tensor.shape,
        dtype=tensor.dtype,
        bits=candidate.bits,
        mode=candidate.rule.mode,
        bytes_before=tensor.nbytes,
        bytes_after=tensor.nbytes + delta,
    )


def _check_ops(before: tuple[str, ...], after: bytes, chosen: list[_Candidate]) -> None:
    """The compressed model runs the same operators in the same order, plus one DECODE per consumer."""
    ops = op_names(after, "The compressed model")
    consumers = {u.op_index for c in chosen for t in c.tensors for u in t.uses}
    kept = tuple(op for op in ops if op != DECODE_OP)
    if kept != before or len(ops) - len(kept) != len(consumers):
        raise InternalError(
            f"TFLite Micro's compressor changed the model's operators ({len(before)} ops became "
            f"{len(kept)} plus {len(ops) - len(kept)} DECODE).",
            hint="Export without --cluster for Cortex-M and report the model.",
        )


def _with_builtin_codes(model: bytes) -> bytes:
    """The model with every operator code's ``builtin_code`` set from ``deprecated_builtin_code``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    root = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    for code in root.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(root.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _build(model: bytes, candidates: list[_Candidate]) -> bytes:
    """The model rebuilt by TFLite Micro's compression package with ``candidates`` compressed.

    The steps of its ``compress.compress`` (LUT plugin, DECODE insertion, FlatBuffer alignment), plus
    one repair: the package sets a rewritten tensor's quantization to None but its serialiser keeps
    the original ``QuantizationParameters``, so the packed uint8 indices would still carry one scale
    and zero point per channel (12 B each in flash) that LiteRT's loader rejects as inconsistent
    ("num_scales must be 1 ... or 8192 for per-axis quantization"). DECODE reads the quantization
    of its output, a copy of the original tensor, so dropping the stale one changes no output.
    """
    from tflite_micro.tensorflow.lite.micro.compression import decode_insert, lut, model_editor, spec
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflm_schema

    editable = model_editor.read(model)
    if candidates:
        plugin = lut.LutCompressor()
        results = {}
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # "resulted in expansion": measured and reported instead
            for c in candidates:
                mode = spec.PerTensor() if c.rule.axis is None else spec.PerChannel(axis=c.rule.axis)
                method = spec.LookUpTableCompression(index_bitwidth=c.bits, mode=mode)
                for t in c.tensors:
                    results[(0, t.index)] = plugin.compress(editable.subgraphs[0].tensors[t.index], method)
            decode_insert.insert_decode_operators(editable, results)
        for _, index in results:
            tensor = editable.subgraphs[0].tensors[index]
            if tensor.dtype == tflm_schema.TensorType.UINT8 and tensor.quantization is None:
                tensor._fb.quantization = None
    else:  # what DECODE insertion ends with, so the baseline differs from a build only by the compression
        model_editor.dedupe_buffers(editable)
        model_editor.prune_buffers(editable)
    return _aligned(bytes(editable.build()))


def _aligned(blob: bytes) -> bytes:
    """The FlatBuffer re-laid with the schema's alignment, as ``compress.compress`` finishes its output."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="edgeport-lut-") as work:
        src, dst = Path(work, "in.tflite"), Path(work, "out.tflite")
        src.write_bytes(blob)
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(src), str(dst))
        return dst.read_bytes()
