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
    result_path = workdir / f"{tag}.result.json"
    request = dict(request, result_path=str(result_path))
    request_path = workdir / f"{tag}.request.json"
    request_path.write_text(json.dumps(request))
    log_path = workdir / f"{tag}.log"
    # PYTHONSAFEPATH: a folder named "exporter" in the user's working directory must not shadow edgeport
    child_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONSAFEPATH="1", **(env or {}))
    with log_path.open("wb") as log_file:
        proc = subprocess.run(
            [sys.executable, "-m", module, str(request_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env,
            timeout=timeout_s,
            check=False,
        )
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    return ChildRun(proc.returncode, result, log_path)


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
