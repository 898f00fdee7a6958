"""TFLite Micro on the host: the MCU interpreter's reference kernels compiled for x86-64.

Everything here runs inside the benchmark child process only (:mod:`exporter.benchmark.worker`): the
kernels call ``abort()`` on inputs they do not handle (int8 SOFTMAX above about 570 classes), which
would take the caller down with them.

The arena is measured, not estimated. TFLite Micro's Python wrapper has no getter for the arena it
used; its RecordingMicroAllocator prints ``Arena allocation total N bytes`` to the C-level stderr.
That total is close to, but not always, the minimum (measured on this host: VWW int8 works with 8
bytes less; hello_world int8 needs 432 bytes *more*, because planning memory taken during
AllocateTensors is freed before the total is read). So :func:`find_min_arena` starts from the total
and finds the smallest ``arena_size`` that allocates and invokes by bisection, then checks that 1 and
16 bytes less fail.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .engine import EngineError, InputSpec

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_NO_REGISTRATION = re.compile(r"Failed to get registration from op code (\w+)")
#: Largest arena tried when the recorded total is not enough.
_MAX_ARENA = 1 << 30


def generous_arena(model_size: int) -> int:
    """The arena for the recording run: big enough for activation-heavy models (10x model is not)."""
    return max(10 * model_size, 4 << 20)


@contextlib.contextmanager
def captured_stderr(path: Path) -> Iterator[list[str]]:
    """Send fd 2 (C and C++ writes included) to ``path`` and hand back what was written.

    A file, not a pipe, so a process that aborts mid-capture leaves the text for its parent to read.
    """
    out: list[str] = []
    with open(path, "ab") as sink:
        start = sink.tell()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    with open(path, "rb") as handle:
        handle.seek(start)
        out.append(handle.read().decode("utf-8", "replace"))


def missing_op(text: str) -> str | None:
    """The op TFLite Micro said it has no kernel for, from its stderr (None when it said nothing of the kind)."""
    match = _MISSING_OP.search(text) or _NO_REGISTRATION.search(text)
    return match.group(1) if match else None


def _allocation_error(text: str, arena: int, custom_ops: Sequence[str] = ()) -> EngineError:
    op = missing_op(text)
    if op:
        what = f"op {op}"
        if op == "CUSTOM" and custom_ops:
            what = f"custom op {', '.join(sorted(set(custom_ops)))}"
        quoted = text.strip().splitlines()[0] if text.strip() else op
        for line in text.splitlines():
            if op in line:
                quoted = line.strip()
                break
        return EngineError(
            "not_supported",
            f'TFLite Micro has no kernel for {what} ("{quoted}").',
            "Replace the layer that produces it, or choose a target whose runtime has the op.",
        )
    last = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = f": {last[-1][:200]}" if last else ""
    return EngineError(
        "not_supported",
        f"TFLite Micro failed to allocate tensors with a {arena:,}-byte arena{detail}.",
        "Check the model's ops against 'edgeport targets show' for this target.",
    )


class TFLMEngine:
    def __init__(
        self,
        blob: bytes,
        *,
        arena_size: int,
        n_inputs: int,
        capture: Path,
        names: Sequence[str] = (),
        custom_ops: Sequence[str] = (),
    ) -> None:
        self.blob = blob
        self.custom_ops = list(custom_ops)
        self.names = list(names)
        self.arena_size = arena_size
        self.n_inputs = n_inputs
        self.capture = capture
        self.interp = None

    def load(self) -> None:
        from tflite_micro.python.tflite_micro import runtime

        with captured_stderr(self.capture) as text:
            try:
                self.interp = runtime.Interpreter.from_bytes(self.blob, arena_size=self.arena_size)
                error = None
            except RuntimeError as exc:
                error = exc
        if error is not None:
            raise _allocation_error(text[0], self.arena_size, self.custom_ops) from error

    def input_specs(self) -> list[InputSpec]:
        specs = []
        for i in range(self.n_inputs):
            detail = self.interp.get_input_details(i)
            quant = detail.get("quantization_parameters") or {}
            scales = list(quant.get("scales", [])) or [0.0]
            zero_points = list(quant.get("zero_points", [])) or [0]
            specs.append(
                InputSpec(
                    name=self.names[i] if i < len(self.names) else f"input_{i}",
                    shape=tuple(int(d) for d in detail["shape"]),
                    dtype=np.dtype(detail["dtype"]),
                    scale=float(scales[0]),
                    zero_point=int(zero_points[0]),
                )
            )
        return specs

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        for i, array in enumerate(arrays):
            self.interp.set_input(array, i)

    def invoke(self) -> None:
        self.interp.invoke()


# --- arena ---------------------------------------------------------------------------------------


def _works(blob: bytes, arena: int, n_inputs: int, capture: Path) -> bool:
    """True when an interpreter with this arena allocates its tensors and completes one inference.

    Each probe runs in a forked process: some too-small arenas do not fail cleanly but crash TFLite
    Micro (measured: edgeport's AD export segfaults for every arena_size from about 14,500 to 16,500
    bytes, after "All temp buffers must be freed before calling ResetTempAllocations()"). A probe that
    dies counts as "does not work", which keeps the search going instead of ending the benchmark.
    """
    if not hasattr(os, "fork"):
        return _works_here(blob, arena, n_inputs, capture)
    pid = os.fork()
    if pid == 0:  # the probe: never returns into the caller's code
        code = 1
        try:
            code = 0 if _works_here(blob, arena, n_inputs, capture) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _works_here(blob: bytes, arena: int, n_inputs: int, capture: Path) -> bool:
    engine = TFLMEngine(blob, arena_size=arena, n_inputs=n_inputs, capture=capture)
    try:
        engine.load()
    except EngineError:
        return False
    engine.set_inputs([np.zeros(s.shape, s.dtype) for s in engine.input_specs()])
    with captured_stderr(capture):
        try:
            engine.invoke()
        except RuntimeError:
            return False
    return True


def record_allocations(
    blob: bytes, n_inputs: int, capture: Path, custom_ops: Sequence[str] = ()
) -> tuple[int, int | None, int | None]:
    """(total, head, tail) bytes printed by the RecordingMicroAllocator after one run with a generous arena."""
    arena = generous_arena(len(blob))
    engine = TFLMEngine(blob, arena_size=arena, n_inputs=n_inputs, capture=capture, custom_ops=custom_ops)
    engine.load()  # raises the one-line error for a missing op
    engine.set_inputs([np.zeros(s.shape, s.dtype) for s in engine.input_specs()])
    with captured_stderr(capture) as text:
        engine.invoke()
        engine.interp.print_allocations()
    total = _TOTAL.search(text[0])
    if total is None:
        raise EngineError(
            "internal", "TFLite Micro printed no 'Arena allocation total' line after print_allocations()."
        )
    head, tail = _HEAD.search(text[0]), _TAIL.search(text[0])
    return int(total.group(1)), int(head.group(1)) if head else None, int(tail.group(1)) if tail else None


def find_min_arena(blob: bytes, n_inputs: int, capture: Path, version: str, custom_ops: Sequence[str] = ()) -> dict:
    """The smallest arena that works, bracketed from the recorded total and bisected to the byte."""
    total, head, tail = record_allocations(blob, n_inputs, capture, custom_ops)
    attempts = 0

    def works(size: int) -> bool:
        nonlocal attempts
        attempts += 1
        return size > 0 and _works(blob, size, n_inputs, capture)

    hi, step = total, 16
    while not works(hi):  # the total was not enough: grow until an arena works
        hi = total + step
        step *= 2
        if hi > _MAX_ARENA:
            raise EngineError(
                "internal",
                f"No TFLite Micro arena up to {_MAX_ARENA:,} bytes worked after a recorded total of {total:,}.",
            )
    lo, step = hi - 64, 64
    while lo > 0 and works(lo):  # the total was more than enough: shrink until one fails
        hi, lo = lo, lo - step
        step *= 2
    lo = max(lo, 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return {
        "bytes": hi,
        "recorded_total_bytes": total,
        "head_bytes": head,
        "tail_bytes": tail,
        "minus_1_fails": not works(hi - 1),
        "minus_16_fails": not works(hi - 16),
        "attempts": attempts,
        "method": (
            f"measured (host x86-64, TFLite Micro {version}): smallest arena_size that allocates and invokes, "
            f"bisected from the RecordingMicroAllocator total ({total:,} B)"
        ),
        "interpreter_version": version,
    }
