"""tf2onnx on a frozen TensorFlow graph, and the ONNX graph edits that make its output deterministic.

Runs in the ONNX worker's child process (:mod:`exporter.convert.onnx_worker`), never in edgeport's
own process. The parent freezes the traced model into a GraphDef (variables *and* captured eager
tensors become constants), which is why Keras ``Normalization(mean=..., variance=...)`` and adapted
layers convert: ``tf2onnx.convert.from_function`` lists a function's captured tensors as graph inputs
(``tf2onnx produced 3 inputs and 1 outputs; the Keras model has 1 and 1``), a frozen graph has none.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_UNSUPPORTED_NODE = re.compile(r"Tensorflow op \[(.+?): (\w+)\] is not supported")
_UNSUPPORTED_COUNTER = re.compile(r"Unsupported ops: Counter\(\{(.*?)\}\)")
_INSERTED = re.compile(r"__(\d+)(?=$|[:/_])")


class GraphIOError(ValueError):
    """tf2onnx's graph has a different number of inputs or outputs than the Keras model."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a malformed record must not break the conversion
            self.lines.append(str(record.msg))


@contextmanager
def captured_tf2onnx_log() -> Iterator[list[str]]:
    """tf2onnx logs through Python logging with no handler (lastResort prints to stderr): capture it."""
    logger = logging.getLogger("tf2onnx")
    handler = _Collect()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def convert_graph_def(graph_bytes: bytes, inputs: list[str], outputs: list[str], opset: int, log: list[str]) -> Any:
    """``tf2onnx.convert.from_graph_def`` on a frozen GraphDef; tf2onnx's log lines go to ``log``."""
    import tensorflow as tf
    import tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    # What tf2onnx.tf_loader.from_function does after freezing (ResourceGather left in function bodies).
    graph_def = tf2onnx.tf_loader.fix_freezing_errors_part2(graph_def)
    with captured_tf2onnx_log() as lines:
        try:
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=opset)
        finally:
            log.extend(lines)
    return proto


def unsupported_ops(proto: Any, tf2onnx_log: list[str]) -> dict[str, str]:
    """TF ops tf2onnx could not express (it writes them into the file anyway): op type -> TF node name."""
    import onnx.defs

    found: dict[str, str] = {}
    for line in tf2onnx_log:
        match = _UNSUPPORTED_NODE.search(line)
        if match:
            found.setdefault(match.group(2), match.group(1))
        counter = _UNSUPPORTED_COUNTER.search(line)
        if counter:
            for op in re.findall(r"'(\w+)'", counter.group(1)):
                found.setdefault(op, "")
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type) and not found.get(node.op_type):
            found[node.op_type] = node.name
    return found


def rename_io(proto: Any, input_names: list[str], output_names: list[str], dynamic_batch: bool) -> None:
    """Give graph inputs/outputs the Keras names (tf2onnx leaves outputs as ``Identity:0``)."""
    graph = proto.graph
    if len(graph.input) != len(input_names) or len(graph.output) != len(output_names):
        raise GraphIOError(
            f"tf2onnx produced {len(graph.input)} inputs and {len(graph.output)} outputs; the Keras model has "
            f"{len(input_names)} and {len(output_names)}"
        )
    mapping = {}
    for value, name in (*zip(graph.input, input_names, strict=True), *zip(graph.output, output_names, strict=True)):
        if value.name != name:
            mapping[value.name] = name
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    clash = (set(mapping.values()) & taken) - set(mapping)
    for old in clash:  # an internal tensor already carries a Keras name: move it out of the way
        mapping.setdefault(old, f"{old}__internal")
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = mapping.get(value.name, value.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    renumber_inserted_names(graph)
    graph.doc_string = ""  # tf2onnx writes the graph's name, numbered per process
    if dynamic_batch:
        for value in (*graph.input, *graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                dims[0].dim_param = "batch"


def renumber_inserted_names(graph: Any) -> None:
    """Number tf2onnx's inserted names (``Transpose__25``) in graph order.

    tf2onnx takes the numbers from a process-wide counter, so the same model converted twice in one
    process gave different bytes; renumbered, it gives the same file, which
    :func:`exporter.atomic.write_bytes` then keeps untouched.
    """
    numbers: dict[str, str] = {}

    def names() -> Iterator[str]:
        for node in graph.node:
            yield node.name
            yield from node.input
            yield from node.output
        for value in (*graph.initializer, *graph.value_info):
            yield value.name

    for name in names():
        for number in _INSERTED.findall(name):
            numbers.setdefault(number, str(len(numbers) + 1))

    def fix(name: str) -> str:
        return _INSERTED.sub(lambda m: f"__{numbers.get(m.group(1), m.group(1))}", name)

    for node in graph.node:
        node.name = fix(node.name)
        node.input[:] = [fix(n) for n in node.input]
        node.output[:] = [fix(n) for n in node.output]
    for value in (*graph.initializer, *graph.value_info):
        value.name = fix(value.name)


__all__ = ["GraphIOError", "convert_graph_def", "rename_io", "renumber_inserted_names", "unsupported_ops"]


def initializers_in_use_order(proto: Any) -> None:
    """Make tf2onnx's output reproducible: the same model must give the same .onnx bytes.

    tf2onnx changes two things from run to run (the nodes do not change): the order of the initializers,
    and, for a constant it deduplicated (ReLU6's 0 and 6, shared by every block), which consumer's name the
    kept copy carries. So a shared initializer is renamed after its first consumer and input slot
    (``<node>__shared<k>``), and the initializers are ordered by first use, then name. A firmware or app
    build that checks in or hashes the model then gets the same file from the same inputs.
    """
    graph = proto.graph
    names = {t.name for t in graph.initializer}
    uses: dict[str, list[tuple[int, int]]] = {}
    for position, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name in names:
                uses.setdefault(name, []).append((position, slot))
    renamed: dict[str, str] = {}
    for name, where in uses.items():
        if len({position for position, _ in where}) > 1:
            position, slot = where[0]
            renamed[name] = f"{graph.node[position].name}__shared{slot}"
    if renamed:
        for node in graph.node:
            for slot, name in enumerate(node.input):
                if name in renamed:
                    node.input[slot] = renamed[name]
        for tensor in graph.initializer:
            tensor.name = renamed.get(tensor.name, tensor.name)
    first_use: dict[str, int] = {}
    for position, node in enumerate(graph.node):
        for name in node.input:
            first_use.setdefault(name, position)
    ordered = sorted(graph.initializer, key=lambda t: (first_use.get(t.name, len(first_use) + 1), t.name))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
