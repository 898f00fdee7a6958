"""The real Edge TPU tools, when this machine has them: ``edgetpu_compiler`` and ``libedgetpu.so.1``.

The compiler (last release 16.0, x86-64 Linux only) and the runtime come from Coral's apt repository,
not from PyPI or Debian, so most machines have neither. edgeport then predicts the compiler
(:mod:`.partition`) and says once, plainly, what is missing and how to install it. When the compiler is
present it is run, its output model is written next to the input, its log parsed and compared with
the prediction: a disagreement is reported loudly, because it means the prediction is wrong.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...atomic import scratch_dir, write_bytes, write_text
from ...errors import ConversionError, DeviceError
from ...guides import doc
from .compiler_log import CompilerLog, parse_compiler_log
from .partition import EdgeTpuAnalysis

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
RUNTIME_LIBRARY = "libedgetpu.so.1"
#: Seconds before a hung compiler is killed (the compiler's own default timer is 180 s).
COMPILER_TIMEOUT_S = 300
_APT = (
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    "echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | "
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && sudo apt-get update && sudo apt-get install {packages}"
)
_said_absent = False


@dataclass(frozen=True)
class ToolStatus:
    """Which Edge TPU tools this machine has."""

    compiler: str | None
    runtime: str | None

    @property
    def note(self) -> str | None:
        """One plain line on what is missing and how to install it (None when both are present)."""
        missing = []
        packages = []
        if self.compiler is None:
            missing.append(f"{COMPILER} (the partition above is predicted, not compiled)")
            packages.append("edgetpu-compiler")
        if self.runtime is None:
            missing.append(f"the Edge TPU runtime {RUNTIME_LIBRARY} (no on-device benchmark)")
            packages.append("libedgetpu1-std")
        if not missing:
            return None
        return (
            f"Not found on this machine: {' and '.join(missing)}. Install from Coral's apt repository "
            f"({'x86-64 Linux only for the compiler; ' if self.compiler is None else ''}plug in the Edge TPU for "
            f"benchmarks): {_APT.format(packages=' '.join(packages))}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"compiler": self.compiler, "runtime": self.runtime, "note": self.note}


def find_tools() -> ToolStatus:
    """The compiler on PATH and the runtime library the dynamic loader can open, or None for each."""
    return ToolStatus(compiler=shutil.which(COMPILER), runtime=_find_runtime())


def _find_runtime() -> str | None:
    try:
        ctypes.CDLL(RUNTIME_LIBRARY)
    except OSError:
        return None
    return RUNTIME_LIBRARY


def note_absent_once(status: ToolStatus) -> str | None:
    """The absent-tools note the first time it is needed in this process, None afterwards (say it once)."""
    global _said_absent
    if status.note is None or _said_absent:
        return None
    _said_absent = True
    return status.note


# --- the compiler --------------------------------------------------------------------------------------


@dataclass
class CompilerRun:
    """One real compiler run: its parsed log, where its outputs went, and how long it took."""

    command: list[str]
    returncode: int
    seconds: float
    log: CompilerLog
    output_model: Path | None
    log_file: Path | None
    stdout: str = field(repr=False, default="")

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "output_model": str(self.output_model) if self.output_model else None,
            "log_file": str(self.log_file) if self.log_file else None,
            "log": self.log.to_dict(),
            "how": f"measured (edgetpu_compiler {self.log.version or '?'} run by edgeport)",
        }


def run_compiler(
    model_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    num_segments: int = 1,
    timeout_s: float = COMPILER_TIMEOUT_S,
    compiler: str | None = None,
) -> CompilerRun | None:
    """Compile ``model_path`` with the real ``edgetpu_compiler``; None when it is not installed.

    The compiler writes into a private scratch folder; its ``<stem>_edgetpu.tflite`` and ``.log`` are then
    written atomically into ``out_dir`` (default: next to the model), so a killed or failed compile never
    leaves a half-written model. A compiler that refuses the model raises :class:`ConversionError` with
    its first error line.
    """
    compiler = compiler or shutil.which(COMPILER)
    if compiler is None:
        return None
    model = Path(model_path)
    out = Path(out_dir) if out_dir is not None else model.parent
    with scratch_dir("edgeport-edgetpu-") as work:
        command = [compiler, "-s", "-o", str(work)]
        if num_segments > 1:
            command += ["-n", str(num_segments)]
        command.append(str(model.resolve()))
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=work, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(
                f"edgetpu_compiler did not finish within {timeout_s:.0f} s on {model.name}; nothing was written.",
                hint="Re-run with a simpler model, or compile by hand to see where it stops.",
            ) from exc
        except OSError as exc:
            raise ConversionError(f"Cannot run {compiler}: {exc.strerror or exc}.") from exc
        seconds = time.perf_counter() - started
        stdout = (done.stdout or "") + (("\n" + done.stderr) if done.stderr else "")
        logs = sorted(work.glob("*_edgetpu.log"))
        text = stdout + "".join("\n" + p.read_text(encoding="utf-8", errors="replace") for p in logs)
        parsed = parse_compiler_log(text)
        compiled = sorted(work.glob("*_edgetpu.tflite"))
        if done.returncode != 0 or not compiled:
            first = parsed.errors[0] if parsed.errors else (stdout.strip().splitlines() or ["no output"])[-1]
            raise ConversionError(
                f"edgetpu_compiler failed on {model.name} (exit {done.returncode}): {first}",
                hint=f"See the versions table in {doc('edgetpu.md')}; 'edgeport edgetpu MODEL' predicts which op is at fault.",
            )
        written_model = None
        for path in compiled:
            target = out / path.name
            write_bytes(target, path.read_bytes())
            written_model = written_model or target
        written_log = None
        for path in logs:
            written_log = out / path.name
            write_text(written_log, path.read_text(encoding="utf-8", errors="replace"))
    log.debug("edgetpu_compiler: %s", stdout)
    return CompilerRun(command, done.returncode, seconds, parsed, written_model, written_log, stdout)


def compare(prediction: EdgeTpuAnalysis, compiled: CompilerLog | CompilerRun) -> list[str]:
    """Where the prediction and the real compiler disagree, one line per op type; empty when they agree."""
    real = compiled.log if isinstance(compiled, CompilerRun) else compiled
    if not real.operators:
        return ["the compiler log has no operator table (run the compiler with -s): nothing to compare"]
    predicted_tpu, predicted_cpu = prediction.mapped_counts(), prediction.cpu_counts()
    real_tpu, real_cpu = real.mapped_counts(), real.cpu_counts()
    lines = []
    for op in sorted(set(predicted_tpu) | set(predicted_cpu) | set(real_tpu) | set(real_cpu)):
        p = (predicted_tpu.get(op, 0), predicted_cpu.get(op, 0))
        r = (real_tpu.get(op, 0), real_cpu.get(op, 0))
        if p != r:
            lines.append(
                f"{op}: predicted {p[0]} on the Edge TPU / {p[1]} on the CPU, "
                f"compiler {real.version or '?'} mapped {r[0]} / left {r[1]} on the CPU"
            )
    return lines


def count_compiled(graph: Any) -> tuple[int, dict[str, int]]:
    """(edgetpu-custom-op count, op -> count of the ops left outside it) of a compiled ``_edgetpu.tflite``."""
    from ...verify.checks import EDGETPU_CUSTOM_OP

    custom = sum(1 for op in graph.ops if op.name == EDGETPU_CUSTOM_OP)
    left: dict[str, int] = {}
    for op in graph.ops:
        if op.name != EDGETPU_CUSTOM_OP:
            left[op.name] = left.get(op.name, 0) + 1
    return custom, left


# --- the device ------------------------------------------------------------------------------------------


def benchmark_on_device(
    edgetpu_model: str | Path, *, runs: int = 50, warmup: int = 5, library: str = RUNTIME_LIBRARY
) -> dict[str, Any]:
    """Time a compiled model on an attached Edge TPU through the LiteRT Edge TPU delegate.

    Raises :class:`DeviceError` when the runtime library or the device is absent. Inputs are zeros of the
    model's input dtype: the Edge TPU's latency does not depend on the values.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    from ...benchmark.host import interpreter_version

    if library == RUNTIME_LIBRARY and _find_runtime() is None:
        raise DeviceError(
            f"The Edge TPU runtime {library} is not installed, so nothing can run on an Edge TPU here.",
            hint="Install libedgetpu1-std from Coral's apt repository and plug in the Coral device.",
        )
    try:
        delegate = load_delegate(library)
    except (ValueError, OSError, RuntimeError) as exc:
        raise DeviceError(
            f"Cannot open the Edge TPU through {library}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}.",
            hint="Plug in the Coral device and install libedgetpu1-std from Coral's apt repository.",
        ) from exc
    interpreter = Interpreter(model_path=str(edgetpu_model), experimental_delegates=[delegate])
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    times_ms = sorted(t * 1000 for t in times)
    return {
        "runs": runs,
        "warmup": warmup,
        "median_ms": times_ms[len(times_ms) // 2],
        "min_ms": times_ms[0],
        "max_ms": times_ms[-1],
        "how": f"device (Edge TPU via {library}, LiteRT {interpreter_version('litert')} delegate; CPU ops on this host)",
    }


def mismatch_warning(lines: Iterable[str]) -> str | None:
    """The loud one-line warning for a prediction the real compiler contradicts."""
    lines = list(lines)
    if not lines:
        return None
    ops = ", ".join(line.split(":", 1)[0] for line in lines)
    return (
        f"WARNING: edgeport's Edge TPU prediction disagrees with the real compiler for {ops} -- trust the "
        "compiler, and please report this model (the differences follow)."
    )
