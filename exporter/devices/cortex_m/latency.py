"""Device latency *estimate* for Cortex-M: each op's work (MACs) times the profile's cycles per MAC.

TFLite Micro runs one op after another on one core, and for the int8 CMSIS-NN kernels the time of an
op is close to proportional to its multiply-accumulates; the constant depends on the op type (a 1x1
convolution reuses each loaded input across output channels, a depthwise one cannot). So the estimate
is ``sum(work(op) * cycles_per_mac[op type] + overhead_cycles_per_op) / clock``, with the table and
its basis in the target profile's ``[latency]`` section (see docs/firmware.md for how the Cortex-M4
table was fitted to the MLPerf Tiny device results). It is an estimate, labelled as one everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Ops whose work is multiply-accumulates (the rest: elements read or written, see :func:`op_work`).
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D")


@dataclass(frozen=True)
class OpWork:
    """One op's work: how many units, and what a unit is."""

    index: int
    op: str
    units: int
    unit: str  # "MACs" | "input elements" | "output elements"
    output: str


def op_work(graph: Any, op: Any) -> OpWork:
    """Work of one op from its tensor shapes (no interpreter): MACs for the MAC ops, elements otherwise."""
    ins = graph.op_inputs(op)
    outs = graph.op_outputs(op)
    out = outs[0] if outs else None
    out_elems = math.prod(out.shape) if out is not None and out.shape else 0
    name = op.name
    units, unit = out_elems, "output elements"
    if name in ("CONV_2D", "CONV_3D") and len(ins) > 1:
        # weights [Cout, KH, KW, Cin]: every output element is a dot product of KH*KW*Cin
        units, unit = out_elems * math.prod(ins[1].shape[1:]), "MACs"
    elif name == "DEPTHWISE_CONV_2D" and len(ins) > 1:
        # weights [1, KH, KW, Cout]: every output element sums KH*KW products
        units, unit = out_elems * math.prod(ins[1].shape[1:-1]), "MACs"
    elif name == "FULLY_CONNECTED" and len(ins) > 1 and ins[1].shape:
        units, unit = out_elems * int(ins[1].shape[-1]), "MACs"
    elif name == "TRANSPOSE_CONV" and len(ins) > 2:
        # inputs: output_shape, weights [Cout, KH, KW, Cin], input: each input element feeds KH*KW*Cout
        weights, data = ins[1], ins[2]
        units, unit = math.prod(data.shape) * math.prod(weights.shape[:-1]), "MACs"
    elif name == "BATCH_MATMUL" and ins and ins[0].shape:
        units, unit = out_elems * int(ins[0].shape[-1]), "MACs"
    elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        window = int(op.options.get("filter_height", 1)) * int(op.options.get("filter_width", 1))
        units, unit = out_elems * window, "input elements"
    elif name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and ins:
        units, unit = math.prod(ins[0].shape), "input elements"
    return OpWork(op.index, name, int(units), unit, out.name if out is not None else "")


@dataclass(frozen=True)
class LayerLatency:
    index: int
    op: str
    units: int
    unit: str
    cycles_per_unit: float
    cycles: float
    layer: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.op,
            "layer": self.layer,
            "work": self.units,
            "unit": self.unit,
            "cycles_per_unit": self.cycles_per_unit,
            "cycles": round(self.cycles),
        }


@dataclass(frozen=True)
class LatencyEstimate:
    """An estimated on-device inference time, with the per-op rows it adds up from."""

    device: str
    clock_mhz: float
    total_cycles: float
    macs: int
    overhead_cycles_per_op: float
    rows: tuple[LayerLatency, ...]
    basis: str
    ops: tuple[str, ...] = ()  # op types that the table has no entry for (the default was used)

    @property
    def milliseconds(self) -> float:
        return self.total_cycles / (self.clock_mhz * 1e3)

    @property
    def method(self) -> str:
        return (
            f"estimate (sum over ops of work x cycles-per-MAC for the op type + {self.overhead_cycles_per_op:g} "
            f"cycles per op, at {self.clock_mhz:g} MHz on the {self.device}; table basis: {self.basis})"
        )

    def by_op_type(self) -> dict[str, dict[str, float]]:
        grouped: dict[str, dict[str, float]] = {}
        for row in self.rows:
            entry = grouped.setdefault(row.op, {"count": 0, "work": 0, "cycles": 0.0})
            entry["count"] += 1
            entry["work"] += row.units
            entry["cycles"] += row.cycles
        return {k: {**v, "cycles": round(v["cycles"])} for k, v in grouped.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_ms": round(self.milliseconds, 3),
            "estimated_cycles": round(self.total_cycles),
            "macs": self.macs,
            "clock_mhz": self.clock_mhz,
            "method": self.method,
            "basis": self.basis,
            "defaulted_op_types": list(self.ops),
            "by_op_type": self.by_op_type(),
            "layers": [r.to_dict() for r in self.rows],
        }


def estimate_latency(
    graph: Any, table: Any, clock_mhz: float, device: str, ops: Iterable[Any] | None = None
) -> LatencyEstimate:
    """The estimate for ``ops`` (default: every op of the main subgraph) under a profile's ``[latency]`` table."""
    rates = dict(table.cycles_per_mac)
    default = rates.get("default", 1.0)
    rows, missing = [], []
    for op in graph.ops if ops is None else ops:
        work = op_work(graph, op)
        rate = rates.get(work.op)
        if rate is None:
            rate = default
            if work.op not in missing:
                missing.append(work.op)
        cycles = work.units * rate + table.overhead_cycles_per_op
        rows.append(LayerLatency(work.index, work.op, work.units, work.unit, rate, cycles, graph.layer_of_op(op)))
    total = sum(r.cycles for r in rows)
    macs = sum(r.units for r in rows if r.unit == "MACs")
    return LatencyEstimate(
        device=device,
        clock_mhz=float(clock_mhz),
        total_cycles=total,
        macs=macs,
        overhead_cycles_per_op=table.overhead_cycles_per_op,
        rows=tuple(rows),
        basis=table.basis,
        ops=tuple(missing),
    )
