"""Per-op Edge TPU compatibility: can ``edgetpu_compiler`` 16 map this op, and if not, why not.

Each rule is a small function registered with :func:`rule`; **its docstring is the user-facing reason**
(formatted with the fields the rule returns), as in Vela's supported-operators module, so
:func:`reason_templates` can list every reason for the docs. A rule returns None when the op passes, or
a dict of fields when it does not. Rules run in order; the first that fails decides the op's status.

The limits (section A of ``targets/ops/edgetpu_ops.txt``, Coral's table of known limitations) come from
the op list shipped with the package; the version table from :mod:`.versions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...profiles import TargetProfile
from ...verify.checks import softmax_too_large, too_many_dims
from ...verify.graph import Op, Tensor, TFLiteGraph
from . import statuses
from .versions import MAX_VERSIONS, PARSE_LIMITS

#: Dtypes the Edge TPU computes on. int32 constants (biases, shapes, axes) are not computed on.
_QUANTIZED = frozenset({"int8", "uint8"})
_POOLS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D"})
_RESIZES = frozenset({"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"})


@dataclass(frozen=True)
class Rejection:
    """Why one op does not map: the compiler's status string, a stable code, and the reason in words."""

    status: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "code": self.code, "reason": self.reason}


RuleFunction = Callable[[TFLiteGraph, Op, TargetProfile], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Rule:
    function: RuleFunction
    code: str
    status: str

    @property
    def template(self) -> str:
        return " ".join((self.function.__doc__ or "").split())


RULES: list[Rule] = []


def rule(code: str, status: str) -> Callable[[RuleFunction], RuleFunction]:
    """Register a rule under a stable snake_case code and the compiler status it produces."""

    def register(function: RuleFunction) -> RuleFunction:
        if not function.__doc__:
            raise TypeError(f"rule {function.__name__} needs a docstring: it is the user-facing reason")
        RULES.append(Rule(function, code, status))
        return function

    return register


def reason_templates() -> dict[str, str]:
    """Rule code -> reason template, for documentation."""
    return {r.code: r.template for r in RULES}


def check_op(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> Rejection | None:
    """The first rule ``op`` fails, or None when the compiler would map it (on its own)."""
    for registered in RULES:
        fields = registered.function(graph, op, profile)
        if fields is not None:
            text = registered.template.format(op_name=op.name, op_index=op.index, **fields)
            return Rejection(registered.status, registered.code, text)
    return None


# --- helpers -----------------------------------------------------------------------------------------


def activations(graph: TFLiteGraph, op: Op) -> list[Tensor]:
    """The non-constant tensors an op reads or writes (what the Edge TPU computes on)."""
    return [t for t in (*graph.op_inputs(op), *graph.op_outputs(op)) if not t.is_constant]


def is_float_input_quantize(graph: TFLiteGraph, op: Op) -> bool:
    """QUANTIZE of a float graph input: host-side input conversion, not part of the network."""
    if op.name != "QUANTIZE":
        return False
    inputs = graph.op_inputs(op)
    return bool(inputs) and inputs[0].is_float and inputs[0].index in graph.inputs


def is_float_output_dequantize(graph: TFLiteGraph, op: Op) -> bool:
    """DEQUANTIZE into a float graph output: host-side output conversion."""
    if op.name != "DEQUANTIZE":
        return False
    outputs = graph.op_outputs(op)
    return bool(outputs) and outputs[0].is_float and outputs[0].index in graph.outputs


def _non1(shape: tuple[int, ...]) -> list[int]:
    return [d for d in shape if d != 1]


def _axes(values: Any, rank: int) -> list[int]:
    axes = values if isinstance(values, list) else [values]
    flat: list[int] = []
    for a in axes:
        flat.extend(a if isinstance(a, list) else [a])
    return sorted({a % rank if rank else a for a in flat})


# --- rules (order matters: the first failing rule names the status) ----------------------------------


@rule("float_input", statuses.UNSPECIFIED)
def float_input(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """QUANTIZE (op {op_index}) converts the float model input '{tensor}' to {dtype} on the host CPU: the Edge
    TPU takes int8/uint8 inputs only (real compilers print this status for it)."""
    if not is_float_input_quantize(graph, op):
        return None
    out = graph.op_outputs(op)
    return {"tensor": graph.op_inputs(op)[0].name, "dtype": out[0].dtype if out else "int8"}


@rule("unsupported_dtype", statuses.UNSUPPORTED_DTYPE)
def unsupported_dtype(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """{op_name} (op {op_index}) computes on {dtype} tensor '{tensor}'; the Edge TPU computes on int8/uint8
    tensors only."""
    for t in activations(graph, op):
        if t.dtype in _QUANTIZED:
            continue
        if t.dtype == "int16" and t.is_variable and op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            continue  # the int16 cell state of a full-int8 LSTM (mapped in keras_lstm_mnist_ptq)
        return {"dtype": t.dtype, "tensor": t.name}
    for t in graph.op_inputs(op):
        if t.is_constant and t.is_float:
            return {"dtype": f"{t.dtype} constant", "tensor": t.name}
    return None


@rule("op_not_supported", statuses.NOT_SUPPORTED)
def op_not_supported(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """{op_name} (op {op_index}) has no Edge TPU implementation: it is not on Coral's list of supported
    operations."""
    if op.is_custom or op.is_flex or op.name not in profile.ops.names or op.name not in MAX_VERSIONS:
        return {}
    return None


@rule("op_version", statuses.VERSION_NOT_SUPPORTED)
def op_version(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """{op_name} (op {op_index}) is version {version}; compiler 16 maps versions up to {max_version}
    ({feature}).{parse}"""
    limit = MAX_VERSIONS[op.name]
    if op.version <= limit.max_version:
        return None
    parse = ""
    if op.name in PARSE_LIMITS and op.version > PARSE_LIMITS[op.name][0]:
        parse = " This version is too new for the compiler to even read the model: it would fail outright."
    feature = f"version {limit.max_version + 1} adds {limit.next_feature}" if limit.next_feature else limit.evidence
    return {"version": op.version, "max_version": limit.max_version, "feature": feature, "parse": parse}


@rule("dynamic_shape", statuses.UNSPECIFIED)
def dynamic_shape(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """Tensor '{tensor}' of {op_name} (op {op_index}) has dynamic dimensions (shape signature {signature}); the
    Edge TPU needs static shapes (a dynamic batch of stored size 1 is accepted)."""
    for t in activations(graph, op):
        if any(d < 0 for d in t.shape_signature[1:]):
            return {"tensor": t.name, "signature": list(t.shape_signature)}
    return None


@rule("too_many_dims", statuses.UNSPECIFIED)
def rank(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """Tensor '{tensor}' of {op_name} (op {op_index}) has shape {shape}: the Edge TPU maps at most {limit}
    innermost dimensions larger than 1."""
    for t in activations(graph, op):
        if too_many_dims(graph, t, profile):
            return {"tensor": t.name, "shape": list(t.shape), "limit": profile.ops.limits.get("max_non1_dims", 3)}
    return None


@rule("softmax_limit", statuses.UNSPECIFIED)
def softmax_limit(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """SOFTMAX (op {op_index}) has input shape {shape}; the Edge TPU maps a softmax over a 1-D tensor (leading 1s
    allowed) of at most {limit} elements."""
    if op.name != "SOFTMAX":
        return None
    shape = graph.op_inputs(op)[0].shape
    if len(_non1(shape)) > 1 or softmax_too_large(graph, op, profile):
        return {"shape": list(shape), "limit": profile.ops.limits.get("softmax_max_elements", 16000)}
    return None


@rule("mean_axes", statuses.UNSPECIFIED)
def mean_axes(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """MEAN (op {op_index}) reduces axes {axes} of a {rank}-D tensor; the Edge TPU reduces along x and/or y
    only (axes 1 and 2 of NHWC)."""
    if op.name != "MEAN" or "axes" not in op.options:
        return None
    shape = graph.op_inputs(op)[0].shape
    axes = _axes(op.options["axes"], len(shape))
    spatial = {1, 2} if len(shape) == 4 else {0, 1} if len(shape) == 3 else set()
    if not set(axes) <= spatial:
        return {"axes": axes, "rank": len(shape)}
    return None


@rule("pad_axes", statuses.UNSPECIFIED)
def pad_axes(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """PAD (op {op_index}) pads dimensions {dims} (paddings {paddings}); the Edge TPU pads along x and/or y
    only."""
    if op.name not in ("PAD", "PADV2") or "paddings" not in op.options:
        return None
    paddings = op.options["paddings"]
    rank_ = len(paddings)
    spatial = {1, 2} if rank_ == 4 else {0, 1} if rank_ == 3 else set()
    dims = [i for i, (before, after) in enumerate(paddings) if before or after]
    if not set(dims) <= spatial:
        return {"dims": dims, "paddings": paddings}
    return None


@rule("strided_slice", statuses.STRIDED_SLICE_STRIDES)
def strided_slice(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """STRIDED_SLICE (op {op_index}) has strides {strides}{masks}; the Edge TPU maps it only with all strides 1,
    ellipsis_mask 0 and new_axis_mask 0."""
    if op.name != "STRIDED_SLICE":
        return None
    strides = op.options.get("strides")
    masks = ""
    if op.options.get("ellipsis_mask") or op.options.get("new_axis_mask"):
        masks = (
            f", ellipsis_mask {op.options.get('ellipsis_mask', 0)}, new_axis_mask {op.options.get('new_axis_mask', 0)}"
        )
    if (strides is not None and any(s != 1 for s in strides)) or masks:
        return {"strides": strides, "masks": masks}
    return None


@rule("resize_rank", statuses.UNSPECIFIED)
def resize_rank(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """{op_name} (op {op_index}) resizes a tensor of shape {shape}; the Edge TPU resizes 3-D tensors
    (height, width, channels with batch 1) only."""
    if op.name not in _RESIZES:
        return None
    shape = graph.op_inputs(op)[0].shape
    if len(shape) > 4 or (len(shape) == 4 and shape[0] != 1):
        return {"shape": list(shape)}
    return None


@rule("fused_activation", statuses.UNSPECIFIED)
def fused_activation(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """{op_name} (op {op_index}) has a fused {activation} activation; the Edge TPU maps {op_name} only without
    one."""
    if op.name not in _POOLS and op.name != "CONCATENATION":
        return None
    activation = op.options.get("fused_activation_function", "NONE")
    return {"activation": activation} if activation not in ("NONE", None) else None


@rule("concat_constant", statuses.UNSPECIFIED)
def concat_constant(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """CONCATENATION (op {op_index}) has a constant input ({detail}); the Edge TPU maps a concatenation with a
    constant only when it has exactly 2 inputs and the constant is all zeros (a zero padding)."""
    if op.name != "CONCATENATION":
        return None
    inputs = graph.op_inputs(op)
    constants = [t for t in inputs if t.is_constant]
    if not constants:
        return None
    if len(inputs) != 2:
        return {"detail": f"{len(inputs)} inputs"}
    data = graph.constant(constants[0])
    if data is None or data.any():
        return {"detail": f"'{constants[0].name}' is not all zeros"}
    return None


@rule("fully_connected_output", statuses.UNSPECIFIED)
def fully_connected_output(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """FULLY_CONNECTED (op {op_index}) {detail}; the Edge TPU maps a fully-connected layer with the default
    weights format and a 1-D output (leading 1s allowed) only."""
    if op.name != "FULLY_CONNECTED":
        return None
    if op.options.get("weights_format", 0) not in (0, "DEFAULT"):
        return {"detail": f"uses weights format {op.options['weights_format']}"}
    out = graph.op_outputs(op)[0].shape
    if len(_non1(out)) > 1:
        return {"detail": f"has output shape {list(out)}"}
    return None


@rule("squeeze_relayout", statuses.UNSPECIFIED)
def squeeze_relayout(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> dict[str, Any] | None:
    """SQUEEZE (op {op_index}) removes dimensions {dims} of shape {shape}, some after a dimension larger than 1;
    the Edge TPU maps a squeeze of leading 1s only (no relayout)."""
    if op.name != "SQUEEZE":
        return None
    shape = graph.op_inputs(op)[0].shape
    dims = op.options.get("squeeze_dims") or [i for i, d in enumerate(shape) if d == 1]
    dims = _axes(dims, len(shape))
    first_big = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(d > first_big for d in dims):
        return {"dims": dims, "shape": list(shape)}
    return None
