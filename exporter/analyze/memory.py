"""Estimate how much flash and RAM a .tflite model needs, from the flatbuffer alone.

MCU users must know before flashing whether a model fits: flash holds the model file, RAM holds the
activation arena. TFLite Micro's exact arena is only known by running its allocator (it adds per-op
persistent buffers, tensor structs and scratch space, and its planner may fragment), so this module gives
a fast, interpreter-free estimate and says so in ``method``; a measured arena, where available, belongs
next to it in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..verify.graph import TFLiteGraph

#: TFLite Micro aligns every arena allocation to 16 bytes (MicroArenaBufferAlignment()).
ALIGNMENT = 16


@dataclass(frozen=True)
class TensorBytes:
    """A tensor and the bytes it occupies."""

    name: str
    nbytes: int
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nbytes": self.nbytes, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class MemoryEstimate:
    """Flash and RAM needs of a model, estimated from its graph (see ``method`` for how)."""

    model_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    peak_op_index: int | None
    io_bytes: int
    largest_tensors: tuple[TensorBytes, ...]
    method: tuple[str, ...]
    alignment: int = ALIGNMENT

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_bytes": self.model_bytes,
            "weights_bytes": self.weights_bytes,
            "activation_peak_bytes": self.activation_peak_bytes,
            "peak_op_index": self.peak_op_index,
            "io_bytes": self.io_bytes,
            "largest_tensors": [t.to_dict() for t in self.largest_tensors],
            "alignment": self.alignment,
            "method": list(self.method),
        }


def _aligned(nbytes: int, alignment: int) -> int:
    return -(-nbytes // alignment) * alignment


def live_ranges(graph: TFLiteGraph) -> dict[int, tuple[int, int]]:
    """Tensor index -> (first op, last op) during which a non-constant tensor must be in RAM.

    A tensor is live from the op that writes it (graph inputs and variables from the first op) to its last
    reader (graph outputs and variables to the last op); a tensor nobody reads lives for its producer only.
    """
    last_op = max(len(graph.ops) - 1, 0)
    touched = dict.fromkeys(i for op in graph.ops for i in (*op.inputs, *op.outputs) if i >= 0)
    touched.update(dict.fromkeys(graph.inputs))
    touched.update(dict.fromkeys(graph.outputs))
    ranges: dict[int, tuple[int, int]] = {}
    for index in touched:
        tensor = graph.tensors[index]
        if tensor.is_constant:
            continue
        whole = index in graph.inputs or tensor.is_variable or index not in graph.producers
        first = 0 if whole else graph.producers[index]
        readers = graph.consumers.get(index, [])
        last = last_op if (index in graph.outputs or tensor.is_variable) else max(readers, default=first)
        ranges[index] = (first, max(first, last))
    return ranges


def estimate_memory(graph: TFLiteGraph | str | bytes, *, alignment: int = ALIGNMENT, top: int = 5) -> MemoryEstimate:
    """Estimate flash (model file, weights) and RAM (peak of live activations) for ``graph`` (a
    :class:`TFLiteGraph`, or a .tflite path or bytes, verified structurally first)."""
    from ..verify.integrity import as_graph

    graph = as_graph(graph)
    weights: dict[int, int] = {}
    for tensor in graph.tensors:
        if tensor.is_constant:
            weights[tensor.buffer] = max(weights.get(tensor.buffer, 0), tensor.nbytes)
    ranges = live_ranges(graph)
    peak, peak_op = 0, None
    for step in range(len(graph.ops)):
        live = sum(
            _aligned(graph.tensors[i].nbytes, alignment) for i, (first, last) in ranges.items() if first <= step <= last
        )
        if live > peak:
            peak, peak_op = live, step
    if not graph.ops:  # a graph that only passes its input through still holds its I/O
        peak = sum(_aligned(graph.tensors[i].nbytes, alignment) for i in ranges)
    io_indices = dict.fromkeys([*graph.inputs, *graph.outputs])
    largest = sorted((graph.tensors[i] for i in ranges), key=lambda t: (-t.nbytes, t.index))[:top]
    return MemoryEstimate(
        model_bytes=graph.size_bytes,
        weights_bytes=sum(weights.values()),
        activation_peak_bytes=peak,
        peak_op_index=peak_op,
        io_bytes=sum(graph.tensors[i].nbytes for i in io_indices),
        largest_tensors=tuple(TensorBytes(t.name, t.nbytes, t.shape, t.dtype) for t in largest),
        method=(
            "model_bytes: size of the .tflite file, which is what flash must hold (weights plus graph).",
            "weights_bytes: bytes of the constant tensors' buffers (each shared buffer counted once).",
            "activation_peak_bytes: an estimate, not a measurement: the largest sum, over the ops in execution "
            "order, of the non-constant tensors live at that op (from the op that writes a tensor, graph "
            f"inputs from the start, to its last reader, graph outputs to the end), each rounded up to "
            f"{alignment} bytes. It assumes a perfect memory planner and ignores what TFLite Micro adds to its "
            "arena (per-op persistent data such as per-channel multipliers, tensor and node structs, scratch "
            "buffers), so the real arena is larger.",
            "io_bytes: bytes of the graph's input and output tensors.",
        ),
        alignment=alignment,
    )


def budget_remedy(resource: str, needed: int, budget: int) -> str:
    """What to change when a model is over a board's budget, scaled to how far over it is."""
    ratio = needed / budget if budget else float("inf")
    if resource == "flash":
        width = min(1.0, (1 / ratio) ** 0.5) if ratio > 1 else 1.0
        return (
            f"To fit ({ratio:.1f}x over): make the layers above smaller (a width multiplier near {width:.2f} scales "
            "weights by its square; edgeport suggest computes one), remove filters with --prune channels:0.5 "
            "--train DATA, or pass --flash-budget if the board has more flash."
        )
    return (
        f"To fit ({ratio:.1f}x over): activations scale with the input area and the early layers' channels: a "
        "smaller input resolution (rebuild the model; --input-shape where its inputs are dynamic), fewer filters "
        "in the layers above, or "
        "a stride-2 first layer; edgeport suggest computes the input size, or pass --ram-budget if the board has "
        "more RAM."
    )
