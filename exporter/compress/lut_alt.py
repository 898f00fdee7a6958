"""The arena of a LUT-compressed model when its decoded tensors live in alternate decompression memory.

Runs inside the :mod:`exporter.compress.lut_check` child. With ``alt_decompression_memory_size`` the
wheel's interpreter hands DECODE a separate region (firmware: ``SetDecompressionMemory``); a DECODE
whose outputs do not fit falls back to the arena as a whole (measured on AD: a region one byte
smaller than its largest decoded tensor, 81,919 B, left the arena head at 82,688 B; 81,920 B took it
back to 768 B). The region is reused by every DECODE, so it needs the largest one's outputs.

:func:`min_alt_layout` finds, by measurement, the smallest region that keeps every decoded tensor
out of the arena (the arena head no larger than with an unlimited region), then the smallest arena
that allocates and invokes beside it, probing in forked processes like
:func:`exporter.benchmark.tflm.find_min_arena` (a too-small arena can crash TFLite Micro).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..benchmark.tflm import captured_stderr, generous_arena

_TOTAL_HEAD = re.compile(r"Arena allocation (total|head) (\d+) bytes")
_DECODE = b"TFLM_DECODE"


def decoded_bytes(blob: bytes) -> tuple[int, int]:
    """(sum over all DECODE outputs, largest sum of one DECODE's outputs), in bytes, from the model."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(bytearray(blob), 0)
    main = root.Subgraphs(0)
    sizes = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8}  # TensorType -> bytes per element
    total = largest = 0
    for i in range(main.OperatorsLength()):
        op = main.Operators(i)
        if root.OperatorCodes(op.OpcodeIndex()).CustomCode() != _DECODE:
            continue
        one = 0
        for k in range(op.OutputsLength()):
            t = main.Tensors(op.Outputs(k))
            n = int(np.prod(t.ShapeAsNumpy())) if t.ShapeLength() else 1
            one += -(-n * sizes.get(t.Type(), 4) // 16) * 16
        total, largest = total + one, max(largest, one)
    return total, largest


def _allocations(blob: bytes, n_inputs: int, capture: Path, alt: int, arena: int) -> dict[str, int]:
    """The RecordingMicroAllocator's total and head after one invoke on zeros (raises RuntimeError)."""
    from tflite_micro.python.tflite_micro import runtime

    with captured_stderr(capture) as text:
        interp = runtime.Interpreter.from_bytes(blob, arena_size=arena, alt_decompression_memory_size=alt)
        for j in range(n_inputs):
            d = interp.get_input_details(j)
            interp.set_input(np.zeros(d["shape"], d["dtype"]), j)
        interp.invoke()
        interp.print_allocations()
    return {k: int(v) for k, v in _TOTAL_HEAD.findall(text[0])}


def _works(blob: bytes, n_inputs: int, capture: Path, alt: int, arena: int) -> bool:
    """Does this arena (beside ``alt``) allocate and invoke? Probed in a forked child: it may crash."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _allocations(blob, n_inputs, capture, alt, arena)
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def min_alt_layout(blob: bytes, n_inputs: int, capture: Path, arena_without: int) -> dict[str, Any]:
    """The smallest decompression region that keeps DECODE outputs out of the arena, and the arena beside it.

    ``arena_without`` is the measured minimum arena with no region; it is the answer (with a region
    of 0 B) when the decoded tensors already fit in the arena's head beside the activations.
    """
    total, largest = decoded_bytes(blob)
    if total == 0:
        return {"alt_bytes": 0, "arena_bytes": arena_without, "largest_decode_bytes": 0, "method": "no DECODE op"}
    big = generous_arena(len(blob))
    floor = _allocations(blob, n_inputs, capture, total, big)["head"]
    if _allocations(blob, n_inputs, capture, 0, big)["head"] <= floor:
        return {
            "alt_bytes": 0,
            "arena_bytes": arena_without,
            "largest_decode_bytes": largest,
            "method": (
                f"no region needed: the decoded tensors (largest DECODE {largest:,} B) fit in the arena head "
                f"the activations need anyway ({floor:,} B)"
            ),
        }
    lo, hi = 0, total
    while hi - lo > 1:  # smallest region whose head equals the unlimited-region head
        mid = (lo + hi) // 2
        if _allocations(blob, n_inputs, capture, mid, big)["head"] <= floor:
            hi = mid
        else:
            lo = mid
    alt = hi
    recorded = _allocations(blob, n_inputs, capture, alt, big)["total"]
    top, step = recorded, 16
    while not _works(blob, n_inputs, capture, alt, top):
        top, step = recorded + step, step * 2
    bottom = max(top - 1024, 0)
    while bottom > 0 and _works(blob, n_inputs, capture, alt, bottom):
        top, bottom = bottom, max(bottom - 1024, 0)
    while top - bottom > 1:
        mid = (top + bottom) // 2
        if _works(blob, n_inputs, capture, alt, mid):
            top = mid
        else:
            bottom = mid
    return {
        "alt_bytes": alt,
        "arena_bytes": top,
        "largest_decode_bytes": largest,
        "method": (
            f"smallest alt_decompression_memory_size keeping the arena head at {floor:,} B (bisected; the "
            f"largest DECODE writes {largest:,} B), then the smallest arena_size beside it that allocates and invokes"
        ),
    }
