"""Running native-code work (converters, quantizers) in a child process, and describing how it ended.

The TFLite converter and onnxruntime's quantizer are native code that can segfault, abort or exhaust
memory. Each runs as ``python -m <worker module> REQUEST.json``: the request and the result travel as
JSON files in a private folder, the child's output goes to a log file, and a crash becomes an exit
status the caller turns into a one-line error instead of taking edgeport down with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChildRun:
    """How a worker ended: its exit status, its result file (None if it never wrote one), its log."""

    returncode: int
    result: dict[str, Any] | None
    log_path: Path

    @property
    def crashed(self) -> bool:
        return self.returncode != 0 or self.result is None


def child_env(**extra: str) -> dict[str, str]:
    """The environment every edgeport child starts with. PYTHONSAFEPATH: ``python -m`` would put the
    working directory first on sys.path, and a user's folder named ``exporter`` would shadow edgeport."""
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONSAFEPATH="1", **extra)


@dataclass(frozen=True)
class WorkerFiles:
    """Where one worker request, its result and its log live (a private folder of the caller's)."""

    request: Path
    result: Path
    log: Path

    @classmethod
    def write(cls, request: dict[str, Any], workdir: Path, tag: str) -> WorkerFiles:
        """Write ``request`` (with the ``result_path`` key the worker answers in) for tag ``tag``."""
        files = cls(workdir / f"{tag}.request.json", workdir / f"{tag}.result.json", workdir / f"{tag}.log")
        files.request.write_text(json.dumps(dict(request, result_path=str(files.result))))
        return files

    def run(self, returncode: int) -> ChildRun:
        """How the request ended: ``returncode`` and the result file, if the worker wrote one."""
        result = json.loads(self.result.read_text()) if self.result.is_file() else None
        return ChildRun(returncode, result, self.log)


def run_worker(
    module: str,
    request: dict[str, Any],
    workdir: Path,
    tag: str,
    *,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run ``python -m module`` on ``request`` (a ``result_path`` key is added); TimeoutExpired propagates."""
    files = WorkerFiles.write(request, workdir, tag)
    with files.log.open("wb") as log_file:
        proc = subprocess.run(
            [sys.executable, "-m", module, str(files.request)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env(**(env or {})),
            timeout=timeout_s,
            check=False,
        )
    return files.run(proc.returncode)


def signal_name(returncode: int) -> str:
    """``signal SIGSEGV`` for a child killed by a signal, else ``exit status N``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def log_tail(path: Path) -> str:
    """The child's last meaningful output line (TensorFlow's start-up banners skipped)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if not ln.startswith(("WARNING: All log messages", "W0000", "I0000"))]
    return lines[-1][:200] if lines else ""


def first_line(error: object) -> str:
    """The first non-empty line of an error message, for one-line reports."""
    for line in str(error).strip().splitlines():
        if line.strip():
            return line.strip()[:300].rstrip(".")
    return type(error).__name__
