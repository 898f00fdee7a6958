"""A light, read-only object model of a .tflite flatbuffer, for auditing without TensorFlow.

Every check edgeport runs on an exported model (ops, dtypes, shapes, quantization, memory) reads this
model instead of an interpreter: LiteRT's interpreter hides ops behind delegates (XNNPACK shows up as
``DELEGATE``) and refuses Flex models, while the flatbuffer always says what the converter wrote.
Parsing uses ``ai_edge_litert.schema_py_generated`` (imports in about 0.1 s); TensorFlow is never
imported here.

Parsing, and the cache of parsed graphs by content, live in :mod:`exporter.verify.graph_parse`. Only the
main subgraph (index 0, the one the runtime invokes) is modelled in full; the ops of other subgraphs
(WHILE/IF bodies) are kept in :attr:`TFLiteGraph.other_ops` so op-support checks still see them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..errors import InputModelError
from .layers import keras3_scoped, layer_for_tensor

_FILE_IDENTIFIER = b"TFL3"

BUILTIN_NAMES: dict[int, str] = {
    v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}
TYPE_NAMES: dict[int, str] = {
    v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)
}
_ACTIVATIONS: dict[int, str] = {
    v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_") and isinstance(v, int)
}
_PADDINGS: dict[int, str] = {
    v: k for k, v in vars(schema.Padding).items() if not k.startswith("_") and isinstance(v, int)
}

#: Bytes per element of each TFLite tensor type (sub-byte types round up to one byte per element,
#: which is how the reference runtimes store them unless packed).
ITEMSIZE: dict[str, int] = {
    "float32": 4, "float16": 2, "float64": 8, "bfloat16": 2,
    "int32": 4, "uint8": 1, "int64": 8, "string": 1, "bool": 1, "int16": 2, "complex64": 8,
    "int8": 1, "complex128": 16, "uint64": 8, "resource": 0, "variant": 0, "uint32": 4,
    "uint16": 2, "int4": 1, "int2": 1, "uint4": 1,
}  # fmt: skip
NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "bool": np.bool_,
}  # fmt: skip
FLOAT_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16"})

# Ops whose options come from a constant input tensor rather than the options table: name -> (key, input).
_CONST_INPUT_OPTIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "STRIDED_SLICE": (("begin", 1), ("end", 2), ("strides", 3)),
    "MEAN": (("axes", 1),),
    "SUM": (("axes", 1),),
    "REDUCE_MAX": (("axes", 1),),
    "REDUCE_MIN": (("axes", 1),),
    "REDUCE_PROD": (("axes", 1),),
    "PAD": (("paddings", 1),),
    "PADV2": (("paddings", 1),),
    "MIRROR_PAD": (("paddings", 1),),
    "RESHAPE": (("target_shape", 1),),
    "TRANSPOSE": (("perm", 1),),
    "TILE": (("multiples", 1),),
    "RESIZE_BILINEAR": (("size", 1),),
    "RESIZE_NEAREST_NEIGHBOR": (("size", 1),),
}


@dataclass(frozen=True)
class Tensor:
    """One tensor of the main subgraph. ``shape`` is what runtimes allocate; ``shape_signature`` keeps -1
    for dimensions the converter left dynamic (equal to ``shape`` when the file stores no signature)."""

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    is_constant: bool
    nbytes: int
    buffer: int = 0
    is_variable: bool = False

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    @property
    def size(self) -> int:
        """Number of elements (1 for a scalar)."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "shape": list(self.shape),
            "shape_signature": list(self.shape_signature),
            "dtype": self.dtype,
            "scale": list(self.scale),
            "zero_point": list(self.zero_point),
            "is_constant": self.is_constant,
            "nbytes": self.nbytes,
        }


@dataclass(frozen=True)
class Op:
    """One operator. ``name`` is the BuiltinOperator name (``CONV_2D``), ``CUSTOM:<code>`` for custom ops
    (``CUSTOM:edgetpu-custom-op``) or the bare code for Flex ops (``FlexCumprod``). ``inputs`` keeps -1 where
    the schema marks an omitted optional input (e.g. a FULLY_CONNECTED without bias)."""

    index: int
    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    custom_code: str | None = None
    subgraph: int = 0

    @property
    def is_flex(self) -> bool:
        return self.name.startswith("Flex")

    @property
    def is_custom(self) -> bool:
        return self.custom_code is not None


@dataclass(frozen=True)
class TFLiteGraph:
    """The main subgraph of a .tflite model plus file-level facts (size, subgraph count)."""

    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    size_bytes: int
    subgraph_count: int = 1
    other_ops: tuple[Op, ...] = ()
    description: str = ""
    #: Tensor index -> data of the constant tensors with a numeric dtype (see :meth:`constant`).
    constants: Mapping[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: Keras layer name -> layer class name, when the model came from Keras (see :meth:`with_keras_layers`).
    keras_layers: Mapping[str, str] = field(default_factory=dict, compare=False)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> TFLiteGraph:
        path = Path(path)
        try:
            buf = path.read_bytes()
        except FileNotFoundError as exc:
            raise InputModelError(
                f"Model file {path} does not exist.",
                hint="Check the path; pass the .tflite that 'edgeport export' wrote.",
            ) from exc
        except IsADirectoryError as exc:
            raise InputModelError(
                f"{path} is a directory, not a .tflite file.", hint="Pass the model_int8.tflite inside it."
            ) from exc
        except OSError as exc:
            raise InputModelError(
                f"Cannot read model file {path}: {exc.strerror or exc}.",
                hint="Check its permissions, or copy it again.",
            ) from exc
        return cls.from_bytes(buf, source=str(path))

    @classmethod
    def from_bytes(cls, buf: bytes, *, source: str = "The model") -> TFLiteGraph:
        """Parse a .tflite flatbuffer; anything that is not one raises :class:`InputModelError`."""
        if len(buf) < 8 or buf[4:8] != _FILE_IDENTIFIER:
            raise InputModelError(
                f"{source} is not a TFLite flatbuffer (expected file identifier 'TFL3' at byte 4; "
                f"received {bytes(buf[4:8])!r}).",
                hint="Pass a .tflite file written by the TFLite converter; if it was one, it is damaged: copy it again.",
            )
        from .graph_parse import parse

        return parse(buf, source)

    def with_keras_layers(self, layers: Mapping[str, str]) -> TFLiteGraph:
        """The same graph, annotated with the Keras model's layers (name -> class) for attribution."""
        return dataclasses.replace(self, keras_layers=dict(layers))

    # --- queries --------------------------------------------------------------------------------

    def op_counts(self) -> dict[str, int]:
        """Op name -> number of ops in the main subgraph, in order of first appearance."""
        return dict(Counter(op.name for op in self.ops))

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def constant(self, tensor: Tensor | int) -> np.ndarray | None:
        """The data of a constant tensor, shaped (None when it is not constant or not numeric)."""
        return self.constants.get(tensor if isinstance(tensor, int) else tensor.index)

    def op_inputs(self, op: Op) -> list[Tensor]:
        """The op's input tensors, omitted optional inputs (-1) skipped."""
        return [self.tensors[i] for i in op.inputs if i >= 0]

    def op_outputs(self, op: Op) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs if i >= 0]

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    @cached_property
    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the op that writes it."""
        return {t: op.index for op in self.ops for t in op.outputs if t >= 0}

    @cached_property
    def consumers(self) -> dict[int, list[int]]:
        """Tensor index -> indices of the ops that read it, in execution order."""
        result: dict[int, list[int]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    result.setdefault(t, []).append(op.index)
        return result

    def layer_of(self, tensor: Tensor | int | None) -> str | None:
        """The Keras layer a tensor came from, when the graph carries the model's layer names."""
        if tensor is None or not self.keras_layers:
            return None
        t = self.tensors[tensor] if isinstance(tensor, int) else tensor
        return layer_for_tensor(t.name, self.keras_layers, keras3_scopes=self._keras3_scopes)

    def layer_of_op(self, op: Op) -> str | None:
        """The Keras layer of an op: that of its outputs, else of its weights (named after the op's own
        layer even when the output is a renamed graph output), else of its other inputs."""
        inputs = self.op_inputs(op)
        ordered = [
            *self.op_outputs(op),
            *(x for x in inputs if x.is_constant),
            *(x for x in inputs if not x.is_constant),
        ]
        for t in ordered:
            layer = self.layer_of(t)
            if layer is not None:
                return layer
        return None

    @cached_property
    def float_op_indices(self) -> tuple[int, ...]:
        """Ops of the main subgraph that read or write a float tensor (float constants included)."""
        return tuple(
            op.index for op in self.ops if any(t.is_float for t in (*self.op_inputs(op), *self.op_outputs(op)))
        )

    @cached_property
    def activation_dtypes(self) -> frozenset[str]:
        """Dtypes of the non-constant tensors the main subgraph's ops read or write."""
        touched = {i for op in self.ops for i in (*op.inputs, *op.outputs) if i >= 0}
        return frozenset(self.tensors[i].dtype for i in touched if not self.tensors[i].is_constant)

    @cached_property
    def _keras3_scopes(self) -> bool | None:
        return keras3_scoped((t.name for t in self.tensors), self.keras_layers)


# --- building -------------------------------------------------------------------------------------
