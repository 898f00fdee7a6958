"""Flash for the kernels: an *estimate* of the code each registered TFLite Micro op links in.

A firmware links only the kernels its resolver registers, so the model's flash cost is the model
array plus that code plus the runtime (interpreter, allocator, flatbuffer access). The figures below
were not measured here (this environment has no Arm toolchain build of TFLite Micro); they are round
numbers of the size of Thumb-2 builds at -Os of TFLite Micro with CMSIS-NN, consistent with the
commonly reported 20-50 KB for the runtime plus a handful of kernels. Treat the total as +-50%: read
your linker map (``arm-none-eabi-size``, ``-Wl,-Map``) for the real figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The interpreter, memory planner, flatbuffer reading and error reporting, linked whatever the model.
RUNTIME_BYTES = 20_000
#: Per-op kernel code (CMSIS-NN kernel + TFLite Micro wrapper and reference fallback paths), bytes.
KERNEL_BYTES: dict[str, int] = {
    "CONV_2D": 10_000,
    "DEPTHWISE_CONV_2D": 10_000,
    "FULLY_CONNECTED": 5_000,
    "TRANSPOSE_CONV": 6_000,
    "BATCH_MATMUL": 5_000,
    "AVERAGE_POOL_2D": 3_000,
    "MAX_POOL_2D": 3_000,
    "SOFTMAX": 4_000,
    "LOGISTIC": 3_000,
    "TANH": 3_000,
    "ADD": 4_000,
    "MUL": 3_000,
    "SUB": 3_000,
    "CONCATENATION": 2_000,
    "RESHAPE": 500,
    "QUANTIZE": 2_000,
    "DEQUANTIZE": 2_000,
    "PAD": 2_000,
    "MEAN": 3_000,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 12_000,
    "ethos-u": 6_000,  # the Ethos-U custom op and its driver interface (the NPU driver itself is extra)
}
DEFAULT_KERNEL_BYTES = 2_000
BASIS = (
    "estimate: not measured here; round Thumb-2 -Os sizes of TFLite Micro + CMSIS-NN kernels "
    f"({RUNTIME_BYTES:,} B runtime + a per-op table, default {DEFAULT_KERNEL_BYTES:,} B), about +-50%; "
    "the linker map of your firmware has the real figure"
)


@dataclass(frozen=True)
class KernelCode:
    runtime_bytes: int
    per_op: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return self.runtime_bytes + sum(self.per_op.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "runtime_bytes": self.runtime_bytes,
            "per_op_bytes": dict(self.per_op),
            "method": BASIS,
        }


def kernel_code(op_names: list[str]) -> KernelCode:
    """The estimated code for a resolver that registers ``op_names`` (each counted once)."""
    return KernelCode(RUNTIME_BYTES, {op: KERNEL_BYTES.get(op, DEFAULT_KERNEL_BYTES) for op in dict.fromkeys(op_names)})
