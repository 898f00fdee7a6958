"""Verify an exported .tflite against a target profile: what it contains, and whether the target can run it.

``verify(graph, profile)`` reads the flatbuffer (never an interpreter, which hides ops behind delegates),
runs every registered check of :mod:`exporter.verify.checks` and returns a :class:`Verification`: the
findings (errors block the export, warnings are reported), the op inventory, the I/O signature and
whether the model is fully integer. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..profiles import TargetProfile, load_profile
from .checks import REGISTRY, Finding, message_templates, run_checks, supports
from .graph import Op, Tensor, TFLiteGraph
from .integrity import as_graph
from .layers import layer_for_tensor

__all__ = [
    "REGISTRY",
    "Finding",
    "IoTensor",
    "Op",
    "OpSummary",
    "TFLiteGraph",
    "Tensor",
    "Verification",
    "is_fully_integer",
    "layer_for_tensor",
    "message_templates",
    "verify",
]


@dataclass(frozen=True)
class IoTensor:
    """A model input or output as the application sees it (quantize with scale/zero_point)."""

    role: str  # "input" | "output"
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": list(self.scale),
            "zero_point": list(self.zero_point),
        }


@dataclass(frozen=True)
class OpSummary:
    """One op type of the model: how often it occurs and whether the target's runtime has it."""

    count: int
    supported: bool


@dataclass(frozen=True)
class Verification:
    """The result of checking one model against one target."""

    target: str
    findings: tuple[Finding, ...]
    #: Op name -> count over every subgraph (the main one first; WHILE/IF bodies add theirs).
    op_counts: Mapping[str, int]
    #: Op name -> count and whether the target's runtime has a kernel for it.
    ops: Mapping[str, OpSummary]
    #: See :func:`is_fully_integer`.
    fully_integer: bool
    io: tuple[IoTensor, ...]
    subgraph_count: int = 1
    model_bytes: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing blocks running the model on the target (warnings allowed)."""
        return not self.errors

    @property
    def unsupported_ops(self) -> list[str]:
        """Op names the target's runtime lacks, in order of first appearance."""
        return [name for name, summary in self.ops.items() if not summary.supported]

    def counts_by_code(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for report.json."""
        return {
            "target": self.target,
            "ok": self.ok,
            "fully_integer": self.fully_integer,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "counts_by_code": self.counts_by_code(),
            "findings": [f.to_dict() for f in self.findings],
            "op_counts": dict(self.op_counts),
            "ops": {name: {"count": s.count, "supported": s.supported} for name, s in self.ops.items()},
            "unsupported_ops": self.unsupported_ops,
            "io": [t.to_dict() for t in self.io],
            "subgraph_count": self.subgraph_count,
            "model_bytes": self.model_bytes,
        }


def is_fully_integer(graph: TFLiteGraph) -> bool:
    """True when no op of the main subgraph reads or writes a float tensor — constants included, so a
    hybrid op with float weights or bias counts as float — and every graph input and output is an
    integer type. Float constants that no op reads are ignored. Ops of other subgraphs are not looked at.
    """
    io_float = any(graph.tensors[i].is_float for i in (*graph.inputs, *graph.outputs))
    return not io_float and not graph.float_op_indices


def verify(
    graph: TFLiteGraph | str | os.PathLike[str] | bytes,
    profile: TargetProfile | str,
    layers: Mapping[str, str] | None = None,
) -> Verification:
    """Check ``graph`` (a :class:`TFLiteGraph`, or a .tflite path or bytes, verified structurally first)
    against ``profile`` (a :class:`TargetProfile`, or a shipped target's name or a profile path).

    ``layers`` maps the Keras model's layer names to their class names (``{"ln": "LayerNormalization"}``);
    with it, findings name the layer each problem came from and give layer-specific advice.
    """
    graph = as_graph(graph)
    if not isinstance(profile, TargetProfile):
        profile = load_profile(profile)
    if layers:
        graph = graph.with_keras_layers(layers)
    findings = run_checks(graph, profile)
    counts = graph.op_counts()
    for op in graph.other_ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    first: dict[str, Op] = {}
    for op in (*graph.ops, *graph.other_ops):
        first.setdefault(op.name, op)
    io = tuple(
        IoTensor(role, t.name, t.shape, t.dtype, t.scale, t.zero_point)
        for role, indices in (("input", graph.inputs), ("output", graph.outputs))
        for t in (graph.tensors[i] for i in indices)
    )
    return Verification(
        target=profile.name,
        findings=tuple(findings),
        op_counts=counts,
        ops={name: OpSummary(count, supports(profile, first[name])) for name, count in counts.items()},
        fully_integer=is_fully_integer(graph),
        io=io,
        subgraph_count=graph.subgraph_count,
        model_bytes=graph.size_bytes,
    )
