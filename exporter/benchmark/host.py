"""Facts about the machine a benchmark runs on, read from the OS (standard library only).

Kept separate from the timing code because both sides need them: the parent reports the host and
caps threads to the cores it may use, the child reads its own peak memory.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys

#: Distribution whose version names each interpreter in reports.
DISTRIBUTIONS = {"litert": "ai-edge-litert", "tflite-micro": "tflite-micro", "onnxruntime": "onnxruntime"}


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` "model name"), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask (a container or ``taskset`` limits it), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def interpreter_version(interpreter: str) -> str:
    dist = DISTRIBUTIONS.get(interpreter, interpreter)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def peak_rss() -> tuple[int, str]:
    """Peak resident memory of this process's own address space, in bytes, and how it was read.

    ``VmHWM`` is preferred to ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``execve``, so a child started by a 1 GB parent (pytest with TensorFlow loaded) reports the parent's
    peak — measured here: 811 MiB from ru_maxrss for a child whose VmHWM was 11 MiB.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM (/proc/self/status) of the benchmark process"
    except (OSError, ValueError, IndexError):
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return maxrss * scale, "getrusage(RUSAGE_SELF).ru_maxrss of the benchmark process"


def describe_host() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
