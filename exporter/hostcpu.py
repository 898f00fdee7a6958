"""What the host CPU is, for numbers whose meaning depends on it.

onnxruntime's fused int8 kernels saturate on x86 CPUs without VNNI (an AVX2-only AMD EPYC gave the
MLPerf Tiny AD int8 model +13 % anomaly score where reference QDQ semantics give +2 %), and LiteRT's
int8 kernels there run slower than float while phones run int8 faster. Reports and benchmarks say
which kind of host measured them; this module reads that from ``/proc/cpuinfo`` (Linux) and never
fails: an unreadable cpuinfo gives an empty flag set.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

#: Linux cpuinfo flags for int8 dot-product instructions on x86 (AVX-512 VNNI, AVX-VNNI on AVX2 CPUs).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class HostCpu:
    """The host CPU: model name, cpuinfo flags, whether it has x86 VNNI, machine architecture."""

    model_name: str
    flags: frozenset[str]
    has_vnni: bool
    arch: str

    @property
    def vnni_flags(self) -> list[str]:
        return [f for f in VNNI_FLAGS if f in self.flags]

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "AMD64", "i386", "i686")

    def describe(self) -> str:
        """One phrase for reports, e.g. ``CPU has VNNI (avx512_vnni)`` or ``CPU lacks VNNI (AVX2 only)``."""
        if not self.is_x86:
            return f"{self.arch} CPU (not x86: VNNI does not apply)"
        if self.has_vnni:
            return f"CPU has VNNI ({', '.join(self.vnni_flags)})"
        simd = "AVX-512" if "avx512f" in self.flags else "AVX2" if "avx2" in self.flags else "no AVX2"
        return f"CPU lacks VNNI ({simd} only)"

    def to_dict(self) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "arch": self.arch,
            "has_vnni": self.has_vnni,
            "describe": self.describe(),
        }


def parse_cpuinfo(text: str, arch: str) -> HostCpu:
    """A :class:`HostCpu` from the text of ``/proc/cpuinfo`` (first processor block is enough)."""
    model_name = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model_name:
            model_name = value.strip()
        elif key in ("flags", "features") and not flags:  # "Features" on ARM
            flags = set(value.split())
    has_vnni = any(f in flags for f in VNNI_FLAGS)
    return HostCpu(model_name or platform.processor() or arch, frozenset(flags), has_vnni, arch)


@functools.lru_cache(maxsize=1)
def host_cpu() -> HostCpu:
    """This machine's CPU (cached: it does not change while edgeport runs)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text, platform.machine() or "unknown")


__all__ = ["VNNI_FLAGS", "HostCpu", "host_cpu", "parse_cpuinfo"]
