""":func:`exporter.compress.lut.lut_compress` in a child process, as the export runs it.

The compressor finishes every build with TFLite Micro's C++ FlatBuffer aligner (a native extension),
and a crash there must end a failed step, not edgeport: so the export never calls it in its own
process. The child writes the compressed bytes and the report; the parent rebuilds the
:class:`~exporter.compress.lut.LutReport`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..atomic import scratch_dir
from ..childproc import first_line, log_tail, run_worker, signal_name
from ..errors import ConversionError
from .lut import LutReport, LutTensor

_MODULE = "exporter.compress.lut_child"
TIMEOUT_S = 600.0
#: Set to make the child abort (tests of the parent's containment).
CRASH_ENV = "EDGEPORT_TEST_LUT_CRASH"


def lut_compress_in_child(
    model: bytes, *, max_bits: int = 7, max_decoded_bytes: int | None = None, timeout_s: float = TIMEOUT_S
) -> tuple[bytes, LutReport]:
    """``lut_compress(model, max_bits=..., max_decoded_bytes=...)`` in a child; a crash or timeout is a one-line
    ConversionError. Results are kept by content: the --dense-quant rule compresses each candidate, and the
    flash step then asks again for the chosen one."""
    key = (hashlib.sha256(model).digest(), max_bits, max_decoded_bytes, os.environ.get(CRASH_ENV))
    if key in _DONE:
        return _DONE[key]
    result = _compress_in_child(model, max_bits, max_decoded_bytes, timeout_s)
    _DONE[key] = result
    while len(_DONE) > 8:
        _DONE.pop(next(iter(_DONE)))
    return result


_DONE: dict[tuple[bytes, int, int | None, str | None], tuple[bytes, LutReport]] = {}


def _compress_in_child(
    model: bytes, max_bits: int, max_decoded_bytes: int | None, timeout_s: float
) -> tuple[bytes, LutReport]:
    with scratch_dir("edgeport-lut-") as work:
        source, target = work / "model.tflite", work / "compressed.tflite"
        source.write_bytes(model)
        request = {"model": str(source), "output": str(target), "max_bits": max_bits, "max_decoded": max_decoded_bytes}
        try:
            run = run_worker(_MODULE, request, work, "lut", timeout_s=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(f"LUT compression did not finish within {timeout_s:.0f} s.") from exc
        result = run.result or {}
        if run.crashed or not result.get("ok"):
            why = result.get("error") or (
                f"the compressor's process ended with {signal_name(run.returncode)}: {log_tail(run.log_path)}"
            )
            raise ConversionError(f"LUT compression failed: {why}", hint="Export with --lut off and report the model.")
        return target.read_bytes(), _report(result["report"])


def _report(data: dict[str, Any]) -> LutReport:
    tensors = tuple(LutTensor(**{**t, "shape": tuple(t["shape"])}) for t in data["compressed"])
    return LutReport(
        size_before=data["size_before"],
        size_after=data["size_after"],
        compressed=tensors,
        left=dict(data["left"]),
        rebuild_delta=data["rebuild_delta"],
        note=data["note"],
    )


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    if os.environ.get(CRASH_ENV):  # tests: the parent must survive a compressor that dies
        os.abort()
    from .lut import lut_compress

    try:
        compressed, report = lut_compress(
            Path(request["model"]).read_bytes(),
            max_bits=request["max_bits"],
            max_decoded_bytes=request.get("max_decoded"),
        )
        Path(request["output"]).write_bytes(compressed)
        result: dict[str, Any] = {"ok": True, "report": report.to_dict()}
    except Exception as exc:  # reported to the parent as a failed step, with its first line
        result = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
