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
from typing import Any

from ..hostcpu import HostCpu, host_cpu

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


#: ARM cpuinfo "Features" flag for the int8 dot-product instructions (SDOT/UDOT) phones' cores have.
ARM_DOT_FLAG = "asimddp"
#: Measured on an AVX2-only x86 host (STACK.md): LiteRT/XNNPACK int8 time over float time.
NO_VNNI_INT8_SLOWDOWN = "MobileNetV2 0.35 96x96 int8 took 1.54x the float time under XNNPACK"


def int8_kernels(cpu: HostCpu | None = None) -> dict[str, Any]:
    """Whether this host has int8 dot-product instructions, and what that means for its int8 timings.

    Host int8 latency is only comparable with a phone's when the host has the same kind of
    instructions: x86 VNNI (``avx512_vnni``/``avx_vnni``) or ARM dot-product (``asimddp``). Without
    them int8 runs slower than float on the host while phones run it faster, so the note says so.
    """
    cpu = cpu or host_cpu()
    arm = cpu.arch in ("aarch64", "arm64") or cpu.arch.startswith("arm")
    if cpu.is_x86:
        has_dot, flags = cpu.has_vnni, cpu.vnni_flags
        if has_dot:
            note = (
                f"has VNNI ({', '.join(flags)}: x86 int8 dot-product instructions), so int8 can run "
                "faster than float here, as on a phone's ARM cores; host latency is still not a phone prediction."
            )
        else:
            simd = "AVX-512" if "avx512f" in cpu.flags else "AVX2" if "avx2" in cpu.flags else "no AVX2"
            note = (
                f"no VNNI ({simd} only; neither avx512_vnni nor avx_vnni in /proc/cpuinfo), so int8 runs slower "
                f"than float on this host (measured: {NO_VNNI_INT8_SLOWDOWN}), while phones (ARM dot-product "
                "instructions) run int8 faster: host int8 latency is not a phone prediction."
            )
    elif arm:
        has_dot, flags = ARM_DOT_FLAG in cpu.flags, [ARM_DOT_FLAG] if ARM_DOT_FLAG in cpu.flags else []
        if has_dot:
            note = (
                "has ARM int8 dot-product instructions (asimddp), like current phone cores; host latency is "
                "still not a phone prediction."
            )
        else:
            note = (
                "no ARM dot-product instructions (asimddp missing from /proc/cpuinfo), so int8 runs slower here "
                "than on phones that have them: host int8 latency is not a phone prediction."
            )
    else:
        has_dot, flags = False, []
        note = f"{cpu.arch} CPU: int8 dot-product support unknown; host int8 latency is not a phone prediction."
    return {
        "cpu": cpu.model_name,
        "arch": cpu.arch,
        "has_vnni": cpu.has_vnni if cpu.is_x86 else None,  # an x86 notion
        "int8_dot_product": has_dot,
        "dot_product_flags": flags,
        "note": f"{cpu.model_name} ({cpu.arch}): {note}",
    }


def host_kernels_note(cpu: HostCpu | None = None) -> str:
    """The one line every host benchmark prints: CPU, VNNI or not, and what that does to int8 timings."""
    return str(int8_kernels(cpu)["note"])


def describe_host() -> dict[str, object]:
    kernels = int8_kernels()
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "has_vnni": kernels["has_vnni"],
        "int8_dot_product": kernels["int8_dot_product"],
        "int8_note": kernels["note"],
    }
