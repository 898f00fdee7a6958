"""Is this .tflite a model LiteRT would load? Asked before edgeport reads a single field of it.

edgeport's own reader (:mod:`exporter.verify.graph`) uses the generated flatbuffer accessors, which
trust every offset: a damaged file can parse into nonsense (a tensor index past the end, an offset
that aliases other data) that later surfaces as an ``IndexError`` deep inside a check, or is even
"benchmarked" by TFLite Micro, which verifies nothing. LiteRT's loader runs the FlatBuffers verifier
(every offset, vector and string in bounds, vtables sane) and then the interpreter builder's semantic
checks (tensor, buffer and opcode indices, constant buffer sizes, schema version). Building the
interpreter with no delegates takes about a millisecond (2 MB model) and never allocates tensors;
custom ops (``edgetpu-custom-op``, Flex) are resolved only at allocation, so they pass here and are
judged by the target's op checks, as they should be.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ..errors import InputModelError

if TYPE_CHECKING:
    from .graph import TFLiteGraph

#: The LiteRT wording for a file the FlatBuffers verifier rejects.
_NOT_A_FLATBUFFER = "not a valid Flatbuffer"
#: LiteRT wordings for an op it has no kernel for: a newer converter's model, or a damaged op table.
_UNKNOWN_OP = ("Didn't find op for builtin opcode", "builtin_code out of range")

#: Op versions grow by one per kernel change; the highest in today's schema is in the low tens.
_MAX_PLAUSIBLE_OP_VERSION = 64

CORRUPT_HINT = (
    "The file is damaged or truncated: copy it again (compare its size and checksum with the original) "
    "or re-run the converter / 'edgeport export' that wrote it."
)


def check_tflite_bytes(buf: bytes | bytearray, source: str = "The model") -> None:
    """Raise :class:`InputModelError` (exit 2) unless LiteRT's loader accepts ``buf``."""
    message = _litert_rejection(bytes(buf))
    if message is None:
        return
    if any(marker in message for marker in _UNKNOWN_OP) and _plausible_op(message):
        raise InputModelError(
            f"{source} uses an op this LiteRT cannot load ({_first_line(message)}): it was written by a newer "
            "converter than the installed ai-edge-litert, or its op table is corrupt.",
            hint="Upgrade ai-edge-litert (pip install -U ai-edge-litert), or re-convert the model.",
        )
    what = "the FlatBuffers verifier" if _NOT_A_FLATBUFFER in message else "the LiteRT loader"
    raise InputModelError(
        f"{source} is a corrupt TFLite flatbuffer: {what} rejects it ({_first_line(message)}).",
        hint=CORRUPT_HINT,
    )


def _plausible_op(message: str) -> bool:
    """A real newer op: a named builtin at a small version. Damage yields '' or versions in the millions."""
    found = re.search(r"builtin opcode '([^']*)' version '(-?\d+)'", message)
    if found is None:
        return "builtin_code out of range" in message and bool(re.search(r"out of range: \d{1,3}\b", message))
    return bool(found.group(1)) and 0 < int(found.group(2)) <= _MAX_PLAUSIBLE_OP_VERSION


#: LiteRT's refusal of TFLite Micro's shared zero points (exporter.convert.compact.share_zero_points).
_SHARED_ZERO_POINTS = re.compile(r"QuantizationParam has 1 zero_point values and \d+ scale values")


def _litert_rejection(buf: bytes) -> str | None:
    """LiteRT's own words for why it cannot load ``buf``; None when it loads.

    A file whose only fault for LiteRT is TFLite Micro's one-zero-point-per-tensor layout (what
    edgeport writes for Cortex-M) is judged as the same file with the zero points repeated: the
    FlatBuffers verifier has passed by the time LiteRT checks quantization, so reading it is safe."""
    message = _litert_load(buf)
    if message is not None and _SHARED_ZERO_POINTS.search(message):
        from ..convert.compact import expand_zero_points

        return _litert_load(expand_zero_points(buf))
    return message


def _litert_load(buf: bytes) -> str | None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        Interpreter(
            model_content=buf,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except (ValueError, RuntimeError) as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else message
    return text.rstrip(".")[:200]


def as_graph(model: TFLiteGraph | str | os.PathLike[str] | bytes) -> TFLiteGraph:
    """The API's entry points take what users hold: a :class:`TFLiteGraph`, a .tflite path or its bytes.
    Paths and bytes go through :meth:`TFLiteGraph.from_file` / ``from_bytes``, so they are verified first."""
    from .graph import TFLiteGraph

    if isinstance(model, TFLiteGraph):
        return model
    if isinstance(model, bytes | bytearray | memoryview):
        return TFLiteGraph.from_bytes(bytes(model))
    if isinstance(model, str | os.PathLike):
        return TFLiteGraph.from_file(model)
    from ..errors import UsageError

    raise UsageError(
        f"Expected a TFLiteGraph, a .tflite path or the model's bytes; received {type(model).__name__}.",
        hint="Pass the path of the .tflite file.",
    )
