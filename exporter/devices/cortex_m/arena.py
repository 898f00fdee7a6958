"""The tensor arena a firmware allocates: TFLite Micro's measured need plus a stated margin.

The need is measured, not estimated (:func:`exporter.benchmark.measure_arena`: the smallest
``arena_size`` that allocates and invokes, in a child process). It is an x86-64 host figure: TFLite
Micro's bookkeeping structs hold pointers, so on a 32-bit Cortex-M they are smaller and the host
figure is, in practice, an upper bound for the same kernels. The margin covers what the host cannot
see (optimized kernels' scratch buffers differ from the reference kernels'); it is never negative,
so the size written is never below what TFLite Micro needed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MARGIN = 0.10
ALIGNMENT = 16


@dataclass(frozen=True)
class ArenaSize:
    measured_bytes: int
    margin: float
    bytes: int
    method: str
    alignment: int = ALIGNMENT

    @property
    def derivation(self) -> str:
        return (
            f"{self.measured_bytes:,} B ({self.method}) + {self.margin:.0%} margin, "
            f"rounded up to {self.alignment} B = {self.bytes:,} B"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "measured_bytes": self.measured_bytes,
            "margin": self.margin,
            "alignment": self.alignment,
            "method": self.method,
            "derivation": self.derivation,
        }


def with_margin(measured: int, method: str, margin: float = DEFAULT_MARGIN) -> ArenaSize:
    """``measured`` plus ``margin`` (a fraction), rounded up to 16 bytes; never below ``measured``."""
    if margin < 0:
        raise ValueError("arena margin must not be negative")
    padded = math.ceil(measured * (1.0 + margin))
    size = -(-padded // ALIGNMENT) * ALIGNMENT
    return ArenaSize(measured, margin, max(size, measured), method)
