"""Which constant tensors TFLite Micro reads LUT-compressed, and in which layout: the rules, as data.

TFLite Micro's compression (the ``tflite-micro`` wheel's ``compression`` package) rewrites a constant
tensor as packed indices plus a value table and inserts a ``TFLM_DECODE`` custom op before each
consumer; DECODE writes the decoded tensor into the arena just before the consumer runs. Two facts
of its C++ decide what is safe, and each was confirmed on real models with the wheel's interpreter
(the measured matrix is in docs/lut.md):

1. **The layout comes from the tensor's quantization, not from the compressor's spec.**
   ``DecodeStateLut::Setup`` (``kernels/decode_state_lut.cc``) takes the number of value tables from
   ``len(scale)`` and their order from ``quantized_dimension``: 0 means contiguous channels, the last
   axis (depthwise filters, ``[1, H, W, C]``) means interleaved ones, anything else fails Prepare.
   So a per-channel-quantized tensor must be compressed ``PerChannel(axis=quantized_dimension)`` and a
   per-tensor-quantized one ``PerTensor``; any other pairing decodes garbage, silently.
2. **The consumer must not read the tensor in Prepare.** A DECODE output has no data until Invoke
   and is not constant; kernels that check constness or precompute from their weights in Prepare
   (CMSIS-NN's LSTM and SVDF kernel sums) fail or read an unset buffer on the device even where the
   host's reference kernels are bit-exact. Only the measured (op, input) pairs below, whose CMSIS-NN
   Prepare reads no weight data, are allowed; everything else is refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from ..errors import InputModelError
from ..verify.graph import BUILTIN_NAMES, NUMPY_DTYPES, TYPE_NAMES
from ..verify.integrity import CORRUPT_HINT, check_tflite_bytes

#: Tensor types DecodeStateLut::Decode writes (others fail at Invoke with "unsupported tensor type").
DECODE_DTYPES = frozenset({"bool", "float32", "int8", "int16", "int32", "int64"})
#: The name :func:`op_names` gives TFLite Micro's DECODE operator.
DECODE_OP = "CUSTOM:TFLM_DECODE"
#: The DCM's 3-bit width field and its value-table stride (<= 128 entries per channel).
MAX_INDEX_BITS = 7

#: (op, input position) -> the input's name, for every pair measured bit-exact with LUT compression
#: (docs/lut.md: VWW, AD, hello_world, micro_speech, mnist_lstm and small models built from their
#: layers) whose CMSIS-NN kernel also reads the input only in Eval (its Prepare reads shapes and
#: quantization; source read in tflite-micro's kernels/cmsis_nn/).
KERNEL_INPUTS: dict[tuple[str, int], str] = {
    ("CONV_2D", 1): "filter",
    ("CONV_2D", 2): "bias",
    ("DEPTHWISE_CONV_2D", 1): "filter",
    ("DEPTHWISE_CONV_2D", 2): "bias",
    ("FULLY_CONNECTED", 1): "weights",
    ("FULLY_CONNECTED", 2): "bias",
    ("TRANSPOSE_CONV", 1): "filter",
    ("TRANSPOSE_CONV", 3): "bias",
    ("ADD", 0): "constant operand",
    ("ADD", 1): "constant operand",
    ("MUL", 0): "constant operand",
    ("MUL", 1): "constant operand",
}
#: Ops refused by name, with the reason (from the kernels' source; see docs/lut.md).
REFUSED_OPS: dict[str, str] = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "fails on Cortex-M: CMSIS-NN's LSTM Prepare requires constant weights and "
    "biases (IsConstantTensor) and computes kernel sums from them (bit-exact only with the reference kernels)",
    "SVDF": "CMSIS-NN's SVDF computes kernel sums from its feature weights in Prepare, before DECODE has run",
}


@dataclass(frozen=True)
class Use:
    """One read of a tensor: operator ``op_index`` (name ``op``) takes it as input ``position``."""

    op_index: int
    op: str
    position: int


@dataclass(frozen=True)
class ConstTensor:
    """A constant tensor of the main subgraph and where its data sits in the file."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    buffer: int
    #: Absolute offset of the buffer's bytes in the file, and how many there are.
    offset: int
    nbytes: int
    uses: tuple[Use, ...]
    is_output: bool = False
    is_variable: bool = False
    #: Why the buffer cannot be rewritten alone (shared with a tensor of another subgraph), if so.
    shared: str | None = None

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def channel_axis(self) -> int | None:
        """The axis the value tables run along (the quantized dimension), None for one table."""
        return self.quantized_dimension if self.per_channel else None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def array(self, model: bytes | bytearray) -> np.ndarray:
        """The tensor's values, shaped, read from ``model`` (a copy)."""
        raw = np.frombuffer(bytes(model[self.offset : self.offset + self.nbytes]), dtype=NUMPY_DTYPES[self.dtype])
        return raw.reshape(self.shape).copy()

    def channels(self, values: np.ndarray) -> np.ndarray:
        """``values`` as [channels, elements]: one row per value table (one row when per-tensor)."""
        axis = self.channel_axis
        if axis is None:
            return values.reshape(1, -1)
        return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)


@dataclass(frozen=True)
class Rule:
    """Whether a tensor may be LUT-compressed and how: ``axis`` is the PerChannel axis, None PerTensor."""

    allowed: bool
    reason: str
    axis: int | None = None

    @property
    def mode(self) -> str:
        return "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"


def _root(model: bytes | bytearray, source: str) -> schema.Model:
    if len(model) < 8 or bytes(model[4:8]) != b"TFL3":
        raise InputModelError(f"{source} is not a TFLite flatbuffer (no 'TFL3' at byte 4).", hint=CORRUPT_HINT)
    check_tflite_bytes(bytes(model), source)
    return schema.Model.GetRootAs(bytearray(model), 0)


def _op_name(root: schema.Model, op: schema.Operator) -> str:
    code = root.OperatorCodes(op.OpcodeIndex())
    name = BUILTIN_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
    if name == "CUSTOM":
        name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
    return name


def op_names(model: bytes | bytearray, source: str = "The model") -> tuple[str, ...]:
    """The main subgraph's operators in order (``CUSTOM:TFLM_DECODE`` for a DECODE op)."""
    root = _root(model, source)
    main = root.Subgraphs(0)
    return tuple(_op_name(root, main.Operators(i)) for i in range(main.OperatorsLength()))


def legacy_opcodes(model: bytes | bytearray) -> bool:
    """True when an operator code carries its op only in ``deprecated_builtin_code`` (pre-2.4 schema).

    TFLite Micro's model editor reads ``builtin_code`` alone and would rebuild every such op as
    ADD (code 0) merged into one opcode: measured on micro_speech_quantized.tflite, whose rebuilt
    ops all became SOFTMAX and failed to prepare.
    """
    root = schema.Model.GetRootAs(bytearray(model), 0)
    codes = (root.OperatorCodes(i) for i in range(root.OperatorCodesLength()))
    return any(c.BuiltinCode() < c.DeprecatedBuiltinCode() for c in codes)


def read_constants(model: bytes | bytearray, source: str = "The model") -> tuple[ConstTensor, ...]:
    """Every constant numeric tensor of subgraph 0 with its data's place in the file and its uses."""
    root = _root(model, source)
    main = root.Subgraphs(0)
    uses: dict[int, list[Use]] = {}
    for op_index in range(main.OperatorsLength()):
        op = main.Operators(op_index)
        name = _op_name(root, op)
        for position in range(op.InputsLength()):
            t = op.Inputs(position)
            if t >= 0:
                uses.setdefault(t, []).append(Use(op_index, name, position))
    outputs = {main.Outputs(i) for i in range(main.OutputsLength())}
    elsewhere = _buffers_of_other_subgraphs(root)
    found = []
    for index in range(main.TensorsLength()):
        tensor = main.Tensors(index)
        dtype = TYPE_NAMES.get(tensor.Type(), str(tensor.Type()))
        located = _locate(root.Buffers(tensor.Buffer())) if 0 < tensor.Buffer() < root.BuffersLength() else None
        if located is None or dtype not in NUMPY_DTYPES:
            continue
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        if located[1] != math.prod(shape) * np.dtype(NUMPY_DTYPES[dtype]).itemsize:
            continue
        quant = tensor.Quantization()
        scales = tuple(float(s) for s in quant.ScaleAsNumpy()) if quant is not None and quant.ScaleLength() else ()
        zps = tuple(int(z) for z in quant.ZeroPointAsNumpy()) if quant is not None and quant.ZeroPointLength() else ()
        found.append(
            ConstTensor(
                index=index,
                name=(tensor.Name() or b"").decode("utf-8", "replace"),
                dtype=dtype,
                shape=shape,
                scales=scales,
                zero_points=zps,
                quantized_dimension=int(quant.QuantizedDimension()) if quant is not None else 0,
                buffer=int(tensor.Buffer()),
                offset=located[0],
                nbytes=located[1],
                uses=tuple(uses.get(index, ())),
                is_output=index in outputs,
                is_variable=bool(tensor.IsVariable()),
                shared=elsewhere.get(int(tensor.Buffer())),
            )
        )
    return tuple(found)


def layout_rule(tensor: ConstTensor) -> Rule:
    """The value-table layout DECODE will use for ``tensor``, or why it cannot decode it.

    DecodeStateLut::Setup reads the layout from the quantization: per-channel (``len(scale) > 1``)
    means PerChannel along ``quantized_dimension``, which must be axis 0 (contiguous channels) or the
    last axis (interleaved); one scale (or none) means PerTensor and needs ``quantized_dimension == 0``
    (Setup rejects any other axis even for a single channel).
    """
    if tensor.dtype not in DECODE_DTYPES:
        return Rule(False, f"DECODE cannot write {tensor.dtype} tensors")
    if not tensor.shape or tensor.size == 0:
        return Rule(False, "scalar or empty tensor")
    qd, rank = tensor.quantized_dimension, len(tensor.shape)
    if tensor.per_channel:
        if qd not in (0, rank - 1):
            return Rule(False, f"quantized_dimension {qd} of a rank-{rank} tensor: DECODE handles axis 0 or the last")
        if tensor.shape[qd] != len(tensor.scales):
            return Rule(False, f"{len(tensor.scales)} scales for {tensor.shape[qd]} channels on axis {qd}")
        return Rule(True, f"per-channel quantized along axis {qd}", axis=qd)
    if qd != 0:
        return Rule(False, f"one scale with quantized_dimension {qd}: DECODE's Setup rejects a nonzero axis")
    return Rule(True, "per-tensor quantized" if tensor.scales else "not quantized", axis=None)


def lut_rule(op: str, input_index: int, tensor: ConstTensor) -> Rule:
    """May ``op`` read ``tensor`` at input ``input_index`` LUT-compressed, and in which mode?

    Allowed: the (op, input) pairs of :data:`KERNEL_INPUTS` (measured bit-exact), in the layout of
    :func:`layout_rule`. Refused: ops of :data:`REFUSED_OPS` (they read weights in Prepare), inputs
    TFLite Micro's compressor itself forbids (shapes and parameters read in Prepare), and every pair
    not measured.
    """
    if op in REFUSED_OPS:
        return Rule(False, f"{op} {REFUSED_OPS[op]}")
    name = KERNEL_INPUTS.get((op, input_index))
    if name is None:
        return Rule(False, f"{op} input {input_index} is not a weight input LUT compression is allowed for")
    layout = layout_rule(tensor)
    if not layout.allowed:
        return layout
    return Rule(True, f"{op} {name}, {layout.reason}", axis=layout.axis)


def tensor_rule(tensor: ConstTensor) -> Rule:
    """:func:`lut_rule` over every use of ``tensor``: all its readers must allow the same layout."""
    if not tensor.uses:
        return Rule(False, "no operator reads it")
    if tensor.is_output:
        return Rule(False, "it is a model output")
    if tensor.is_variable:
        return Rule(False, "it is a variable")
    if tensor.shared:
        return Rule(False, tensor.shared)
    rules = [lut_rule(use.op, use.position, tensor) for use in tensor.uses]
    refused = [r for r in rules if not r.allowed]
    if refused:
        return refused[0]
    return rules[0]


def _locate(buffer: schema.Buffer | None) -> tuple[int, int] | None:
    """(absolute offset, length) of a buffer's bytes: its data vector, or offset/size past 2 GB."""
    if buffer is None:
        return None
    slot = buffer._tab.Offset(4)  # Buffer.data
    if slot:
        length = buffer._tab.VectorLen(slot)
        return (buffer._tab.Vector(slot), length) if length else None
    if buffer.Offset() > 1 and buffer.Size():
        return int(buffer.Offset()), int(buffer.Size())
    return None


def _buffers_of_other_subgraphs(root: schema.Model) -> dict[int, str]:
    """Buffer index -> why it is shared, for buffers a tensor of subgraph 1+ also reads."""
    shared: dict[int, str] = {}
    for sg_index in range(1, root.SubgraphsLength()):
        sg = root.Subgraphs(sg_index)
        for t in range(sg.TensorsLength()):
            buffer = sg.Tensors(t).Buffer()
            if buffer > 0:
                shared.setdefault(buffer, f"its buffer is shared with subgraph {sg_index}")
    return shared
