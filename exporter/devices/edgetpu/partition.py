"""Predict the compiler's partition: which ops run on the Edge TPU, which on the host CPU, and why.

``edgetpu_compiler`` walks the graph in execution order and maps ops into ONE Edge TPU subgraph until it
meets an op it cannot map. That op, and every op that depends on it, runs on the host CPU -- supported ops
among them get the status "More than one subgraph is not supported" (real logs of compilers 14.1 and
15.0 show exactly this). Ops that do not depend on it still map (tiny_yolo_edgetpu.log, 14.1: the branch
parallel to the unsupported RESIZE_NEAREST_NEIGHBOR stayed on the Edge TPU). The one exception seen in
real logs is the float->int8 QUANTIZE of a float model input: it runs on the CPU *before* the Edge TPU
subgraph and does not end it (mnist4_edgetpu.log, 15.0: QUANTIZE unmapped, every later op mapped).

Everything here reads the flatbuffer (:class:`TFLiteGraph`); nothing imports TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...profiles import TargetProfile, load_profile
from ...report.report import human_bytes
from ...verify.graph import Op, TFLiteGraph
from . import statuses
from .fixes import Fix, fixes_for
from .ops import Rejection, check_op, is_float_input_quantize, is_float_output_dequantize

#: The compiler version whose behaviour is predicted (the last release).
COMPILER_VERSION = "16.0.384591198"
PARAM_SOURCE = (
    "estimate (sum of the constant tensor bytes the mapped ops read; the compiler's own figure adds its "
    "weight layout, so it is usually a little higher)"
)


@dataclass(frozen=True)
class OpPlacement:
    """One op of the main subgraph: where it runs, the compiler status, and the reason in words."""

    index: int
    name: str
    version: int
    on_tpu: bool
    status: str
    reason: str = ""
    code: str = ""
    layer: str | None = None
    #: True for the float I/O conversions at the ends (QUANTIZE of a float input, DEQUANTIZE to a float output).
    boundary: bool = False
    param_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.name,
            "version": self.version,
            "on_edgetpu": self.on_tpu,
            "status": self.status,
            "reason": self.reason,
            "code": self.code,
            "layer": self.layer,
            "boundary": self.boundary,
            "param_bytes": self.param_bytes,
        }


@dataclass(frozen=True)
class Segment:
    """One pipeline segment (``--num_segments``): its mapped ops and their parameter bytes."""

    index: int
    op_indices: tuple[int, ...]
    param_bytes: int
    fits_cache: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ops": len(self.op_indices),
            "first_op": self.op_indices[0] if self.op_indices else None,
            "last_op": self.op_indices[-1] if self.op_indices else None,
            "param_bytes": self.param_bytes,
            "fits_param_cache": self.fits_cache,
        }


@dataclass
class EdgeTpuAnalysis:
    """The predicted partition of one model for the Edge TPU, with verdict and fixes."""

    ops: list[OpPlacement]
    first_cpu: OpPlacement | None
    param_bytes: int
    param_cache_bytes: int
    num_segments: int = 1
    segments: list[Segment] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    model_name: str = "model.tflite"
    notes: list[str] = field(default_factory=list)

    # --- summaries ---------------------------------------------------------------------------------

    @property
    def mapped(self) -> list[OpPlacement]:
        return [p for p in self.ops if p.on_tpu]

    @property
    def cpu(self) -> list[OpPlacement]:
        return [p for p in self.ops if not p.on_tpu]

    @property
    def fully_mapped(self) -> bool:
        return not self.cpu

    @property
    def subgraphs(self) -> int:
        return 1 if self.mapped else 0

    @property
    def streams_off_chip(self) -> bool:
        if self.num_segments > 1 and self.segments:
            return not all(s.fits_cache for s in self.segments)
        return self.param_bytes > self.param_cache_bytes

    def mapped_counts(self) -> dict[str, int]:
        return dict(Counter(p.name for p in self.mapped))

    def cpu_counts(self) -> dict[str, int]:
        return dict(Counter(p.name for p in self.cpu))

    @property
    def verdict(self) -> str:
        total, mapped = len(self.ops), len(self.mapped)
        if not self.ops:
            return "the model has no ops"
        if mapped == total:
            return f"all {total} ops on the Edge TPU"
        if mapped == 0 and self.first_cpu is not None:
            return f"0 of {total} ops on the Edge TPU; first CPU op: {_where(self.first_cpu)}"
        if self.first_cpu is None:  # only the float I/O conversions at the ends
            ends = ", ".join(f"{p.name} (op {p.index})" for p in self.cpu)
            return f"{mapped} of {total} ops on the Edge TPU; on the CPU: the float I/O conversions {ends}"
        return f"{mapped} of {total} ops on the Edge TPU; first CPU op: {_where(self.first_cpu)}"

    @property
    def param_warning(self) -> str | None:
        if not self.streams_off_chip:
            return None
        if self.num_segments > 1:
            over = [s for s in self.segments if not s.fits_cache]
            return (
                f"{len(over)} of {self.num_segments} segments hold more parameters than one Edge TPU's "
                f"{human_bytes(self.param_cache_bytes)} cache: they stream from the host every inference."
            )
        return (
            f"Parameters of the mapped ops ({human_bytes(self.param_bytes)}) exceed the "
            f"{human_bytes(self.param_cache_bytes)} on-chip cache: about "
            f"{human_bytes(self.param_bytes - self.param_cache_bytes)} stream from the host every inference "
            f"(slower). Shrink the model, or pipeline it over several Edge TPUs (--num-segments)."
        )

    # --- output ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "compiler_predicted": COMPILER_VERSION,
            "how": "predicted by edgeport from the .tflite (compiler not run)",
            "verdict": self.verdict,
            "fully_mapped": self.fully_mapped,
            "total_ops": len(self.ops),
            "ops_on_edgetpu": len(self.mapped),
            "ops_on_cpu": len(self.cpu),
            "edgetpu_subgraphs": self.subgraphs,
            "first_cpu_op": self.first_cpu.to_dict() if self.first_cpu else None,
            "mapped_counts": self.mapped_counts(),
            "cpu_counts": self.cpu_counts(),
            "param_cache": {
                "param_bytes": self.param_bytes,
                "cache_bytes": self.param_cache_bytes,
                "streams_off_chip": self.streams_off_chip,
                "source": PARAM_SOURCE,
            },
            "num_segments": self.num_segments,
            "segments": [s.to_dict() for s in self.segments],
            "fixes": [f.to_dict() for f in self.fixes],
            "notes": list(self.notes),
            "ops": [p.to_dict() for p in self.ops],
        }

    def render_log(self) -> str:
        """The prediction in the compiler's own log format, plus a reason column."""
        lines = [
            f"Edge TPU Compiler version {COMPILER_VERSION} (predicted by edgeport; the compiler was not run)",
            f"Input: {self.model_name}",
            "",
            f"Number of Edge TPU subgraphs: {self.subgraphs}",
            f"Total number of operations: {len(self.ops)}",
            f"Number of operations that will run on Edge TPU: {len(self.mapped)}",
            f"Number of operations that will run on CPU: {len(self.cpu)}",
            f"On-chip memory used for caching model parameters: {human_bytes(min(self.param_bytes, self.param_cache_bytes))} (estimate)",
            f"Off-chip memory used for streaming uncached model parameters: "
            f"{human_bytes(max(0, self.param_bytes - self.param_cache_bytes)) if self.num_segments == 1 else 'see segments'} (estimate)",
            "",
        ]
        rows: dict[tuple[str, str, str], int] = {}
        for p in self.ops:
            key = (p.name, p.status, p.reason if not p.on_tpu else "")
            rows[key] = rows.get(key, 0) + 1
        status_width = max([len(s) for _, s, _ in rows] + [len("Status")])
        lines.append(f"{'Operator':<30} {'Count':<10} {'Status':<{status_width}}  Reason")
        lines.append("")
        for (name, status, reason), count in rows.items():
            lines.append(f"{name:<30} {count:<10} {status:<{status_width}}  {reason}".rstrip())
        return "\n".join(lines) + "\n"


def _where(p: OpPlacement) -> str:
    layer = f" in layer '{p.layer}'" if p.layer else ""
    return f"{p.name} at op {p.index}{layer} ({p.status.lower()})"


def analyze_edgetpu(
    graph: TFLiteGraph | str | bytes,
    *,
    layers: Mapping[str, str] | None = None,
    num_segments: int = 1,
    profile: TargetProfile | None = None,
    model_name: str = "model.tflite",
) -> EdgeTpuAnalysis:
    """Predict which ops ``edgetpu_compiler`` 16 maps to the Edge TPU, why the rest are not, and how to fix it.

    ``layers`` maps Keras layer names to classes (``SourceModel.layers``) so the first CPU op is named by
    the layer it came from. ``num_segments`` > 1 predicts the compiler's pipelining split (``-n``).
    """
    if num_segments < 1:
        from ...errors import UsageError

        raise UsageError(f"--num-segments must be at least 1; received {num_segments}.")
    from ...verify.integrity import as_graph

    graph = as_graph(graph)  # a .tflite path or bytes works too, verified first
    profile = profile or load_profile("edgetpu")
    if layers:
        graph = graph.with_keras_layers(layers)
    cache = profile.memory.param_cache_bytes or 8 * 1024 * 1024
    placements: list[OpPlacement] = []
    cpu_tensors: set[int] = set()
    first_cpu: OpPlacement | None = None
    counted: set[int] = set()
    for op in graph.ops:
        rejection = check_op(graph, op, profile)
        blocked = any(t in cpu_tensors for t in op.inputs if t >= 0)
        boundary = is_float_input_quantize(graph, op) or is_float_output_dequantize(graph, op)
        layer = graph.layer_of_op(op) if graph.keras_layers else None
        if rejection is None and not blocked:
            placements.append(
                OpPlacement(
                    op.index,
                    op.name,
                    op.version,
                    True,
                    statuses.MAPPED,
                    layer=layer,
                    param_bytes=_params(graph, op, counted),
                )
            )
            continue
        if rejection is None:  # supported, but downstream of the first CPU op
            rejection = Rejection(
                statuses.MORE_THAN_ONE_SUBGRAPH,
                "after_cpu_op",
                f"runs after the first CPU op ({first_cpu.name} at op {first_cpu.index})"
                if first_cpu
                else "runs after a CPU op",
            )
        placement = OpPlacement(
            op.index, op.name, op.version, False, rejection.status, rejection.reason, rejection.code, layer, boundary
        )
        placements.append(placement)
        if is_float_input_quantize(graph, op) and not blocked:
            continue  # host-side input conversion before the Edge TPU subgraph: it does not end it
        cpu_tensors.update(t for t in op.outputs if t >= 0)
        if first_cpu is None and not placement.boundary:
            first_cpu = placement
    param_bytes = sum(p.param_bytes for p in placements)
    analysis = EdgeTpuAnalysis(
        ops=placements,
        first_cpu=first_cpu,
        param_bytes=param_bytes,
        param_cache_bytes=cache,
        num_segments=num_segments,
        model_name=model_name,
    )
    if num_segments > 1:
        analysis.segments = _segments(placements, num_segments, cache)
        analysis.notes.append(
            f"--num-segments {num_segments}: the compiler splits the mapped ops into {num_segments} consecutive "
            f"segments of about equal parameter size (estimate below), one model per Edge TPU, each with its own "
            f"{human_bytes(cache)} parameter cache; which ops map does not change (the first CPU op still ends "
            f"the Edge TPU part)."
        )
    analysis.fixes = fixes_for(graph, analysis)
    return analysis


def _params(graph: TFLiteGraph, op: Op, counted: set[int]) -> int:
    """Bytes of the constant tensors this op reads that no earlier mapped op already counted."""
    total = 0
    for t in graph.op_inputs(op):
        if t.is_constant and t.index not in counted:
            counted.add(t.index)
            total += t.nbytes
    return total


def _segments(placements: list[OpPlacement], n: int, cache: int) -> list[Segment]:
    """Split the mapped ops, in order, into ``n`` runs of about equal parameter bytes."""
    mapped = [p for p in placements if p.on_tpu]
    total = sum(p.param_bytes for p in mapped)
    target = total / n if n else total
    segments: list[list[OpPlacement]] = [[]]
    running = 0
    for p in mapped:
        remaining_ops = len(mapped) - sum(len(s) for s in segments)
        if (
            segments[-1]
            and len(segments) < n
            and (running >= target * len(segments) or remaining_ops <= n - len(segments))
        ):
            segments.append([])
        segments[-1].append(p)
        running += p.param_bytes
    while len(segments) < n:
        segments.append([])
    return [
        Segment(i, tuple(p.index for p in s), sum(p.param_bytes for p in s), sum(p.param_bytes for p in s) <= cache)
        for i, s in enumerate(segments)
    ]
