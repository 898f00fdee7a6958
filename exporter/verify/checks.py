"""Compatibility checks: can this .tflite run on this target, and if not, what should the user change?

Each check is a small function registered with :func:`check`. It takes ``(graph, item, profile)`` —
``item`` is an :class:`Op` (scope ``op``), a non-constant :class:`Tensor` that an op reads or writes
(scope ``tensor``), a graph input or output tensor (scope ``io``) or None (scope ``graph``) — and returns
findings. **Its docstring is the user-facing message template** (Vela's ``tflite_supported_operators.py``
does the same), formatted with the specifics, so the same text can generate a supported-ops page per
target (:func:`message_templates`). A template may use the standard fields of :func:`report`
(``{op_name}``, ``{op_index}``, ``{tensor}``, ``{layer}``, ``{where}``, ``{target}``, ``{runtime}``,
``{remedy}``) and the keywords its check passes.

Adding a check is one function here plus a test; :func:`run_checks` finds it through the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..profiles import ALL_BUILTINS, TargetProfile
from .graph import Op, Tensor, TFLiteGraph

Severity = Literal["error", "warning"]
Scope = Literal["graph", "io", "op", "tensor"]

#: Custom ops that LiteRT's BuiltinOpResolver registers itself (tensorflow/lite/core/kernels/register.cc).
LITERT_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram", "NumericVerify"})
#: What the Edge TPU compiler leaves in a compiled model: the whole mapped part as one custom op.
EDGETPU_CUSTOM_OP = "CUSTOM:edgetpu-custom-op"
#: Android/LiteRT profile to point users at when their model needs float ops.
FLOAT_TARGET = "android-arm64"


@dataclass(frozen=True)
class Finding:
    """One problem found in a model for a target: what, where (op, tensor, Keras layer), and what to do."""

    severity: Severity
    code: str
    message: str
    op_index: int | None = None
    op_name: str | None = None
    tensor: str | None = None
    layer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CheckFunction = Callable[[TFLiteGraph, Any, TargetProfile], list[Finding]]


@dataclass(frozen=True)
class Check:
    """A registered check: its function, the items it visits, and its stable reason code."""

    function: CheckFunction
    scope: Scope
    code: str
    #: Also visit ops of non-main subgraphs (WHILE/IF bodies); only for checks that need no tensors.
    all_subgraphs: bool = False

    @property
    def template(self) -> str:
        return _template(self.function)


#: Every check, in the order they run. Order matters for ops: only the first error per op is kept.
REGISTRY: list[Check] = []


def check(scope: Scope, code: str, *, all_subgraphs: bool = False) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under a stable snake_case reason code."""

    def register(function: CheckFunction) -> CheckFunction:
        if not function.__doc__:
            raise TypeError(f"check {function.__name__} needs a docstring: it is the user-facing message")
        REGISTRY.append(Check(function, scope, code, all_subgraphs))
        return function

    return register


def message_templates() -> dict[str, str]:
    """Reason code -> message template, for documentation pages."""
    return {c.code: c.template for c in REGISTRY}


def _template(function: Callable[..., Any]) -> str:
    return " ".join((function.__doc__ or "").split())


def _code(function: Callable[..., Any]) -> str:
    for registered in REGISTRY:
        if registered.function is function:
            return registered.code
    raise KeyError(function.__name__)


# --- building findings ---------------------------------------------------------------------------


def report(
    function: Callable[..., Any],
    severity: Severity,
    graph: TFLiteGraph,
    profile: TargetProfile,
    *,
    op: Op | None = None,
    tensor: Tensor | None = None,
    remedy: str = "",
    **fields: Any,
) -> Finding:
    """A finding whose message is ``function``'s docstring formatted with the standard fields and ``fields``.

    ``{where}`` reads " in layer 'ln' (LayerNormalization)" when the Keras layer is known, else
    " at tensor '<name>'" when there is a tensor, else "".
    """
    layer = None
    if tensor is not None:
        layer = graph.layer_of(tensor)
    if layer is None and op is not None and op.subgraph == 0:
        layer = graph.layer_of_op(op)
    if layer is not None:
        layer_class = graph.keras_layers.get(layer, "")
        where = f" in layer '{layer}'" + (f" ({layer_class})" if layer_class else "")
    elif tensor is not None:
        where = f" at tensor '{tensor.name}'"
    else:
        where = ""
    values = {
        "op_name": op.name if op else "",
        "op_index": (f"{op.index} of subgraph {op.subgraph}" if op.subgraph else op.index) if op else "",
        "tensor": tensor.name if tensor else "",
        "layer": layer or "",
        "where": where,
        "target": profile.name,
        "runtime": _runtime_title(profile),
        "remedy": remedy,
        **fields,
    }
    message = " ".join(_template(function).format(**values).split())
    return Finding(
        severity=severity,
        code=_code(function),
        message=message,
        op_index=op.index if op else None,
        op_name=op.name if op else None,
        tensor=tensor.name if tensor else None,
        layer=layer,
    )


def _runtime_title(profile: TargetProfile) -> str:
    return {
        "litert": "LiteRT",
        "tflite-micro": "TFLite Micro",
        "tflite-micro+ethos-u": "TFLite Micro (Ethos-U)",
        "edgetpu": "the Edge TPU compiler",
    }.get(profile.runtime.name, profile.runtime.name)


def _strict(profile: TargetProfile) -> bool:
    """MCUs and the Edge TPU need static, batch-1 graphs; LiteRT on a phone can resize."""
    return profile.runtime.name != "litert"


def _layer_class(graph: TFLiteGraph, op: Op | None = None, tensor: Tensor | None = None) -> str:
    layer = graph.layer_of(tensor) if tensor is not None else None
    if layer is None and op is not None and op.subgraph == 0:
        layer = graph.layer_of_op(op)
    return graph.keras_layers.get(layer, "") if layer else ""


# --- what to do about it ---------------------------------------------------------------------------

#: Keras layer class -> what to do when it leaves ops the target cannot run (preferred over the op table).
LAYER_REMEDIES: Mapping[str, str] = {
    "LayerNormalization": (
        "The TFLite converter does not quantize LayerNormalization (it leaves DEQUANTIZE/NEG/QUANTIZE or "
        f"RSQRT ops): use BatchNormalization, or choose {FLOAT_TARGET}, where float ops run."
    ),
    "GroupNormalization": f"Use BatchNormalization, or choose {FLOAT_TARGET}, where float ops run.",
    "UpSampling2D": (
        "UpSampling2D(interpolation='nearest') converts to RESHAPE/TILE with 5-D tensors: use "
        "Resizing(h, w, interpolation='nearest'), which converts to RESIZE_NEAREST_NEIGHBOR."
    ),
    "GRU": f"Recurrent layers keep float or unsupported ops: use Conv1D blocks, or choose {FLOAT_TARGET}.",
    "LSTM": f"Recurrent layers keep float or unsupported ops: use Conv1D blocks, or choose {FLOAT_TARGET}.",
    "MultiHeadAttention": f"Attention needs BATCH_MATMUL and softmax over activations: choose {FLOAT_TARGET}.",
}

#: Op -> what to do when the target's runtime lacks it.
OP_REMEDIES: Mapping[str, str] = {
    "GELU": (
        "Exact and approximate GELU both convert to the GELU op, which this runtime lacks: use ReLU6 or ReLU "
        "(hard_swish also works on TFLite Micro)."
    ),
    "HARD_SWISH": "Use ReLU6 instead of hard_swish/hard_silu.",
    "TILE": (
        "TILE usually comes from UpSampling2D(interpolation='nearest'): use Resizing(h, w, "
        "interpolation='nearest'), which converts to RESIZE_NEAREST_NEIGHBOR."
    ),
    "TOPK_V2": "Take the top-k on the host after inference: remove top_k from the model.",
    "ARG_MAX": "Take the argmax on the host after inference: remove it from the model.",
    "CAST": "Remove dtype casts from the model (keep index arithmetic outside it).",
    "WHILE": "An LSTM/GRU without unroll=True converts to a WHILE loop: set unroll=True, or use Conv1D blocks.",
    "BATCH_MATMUL": "A matmul between two activations (attention, einsum): use Dense/Conv layers instead.",
    "RSQRT": "RSQRT usually comes from LayerNormalization: use BatchNormalization.",
    "SQUARED_DIFFERENCE": "SQUARED_DIFFERENCE usually comes from LayerNormalization: use BatchNormalization.",
    "DEQUANTIZE": (
        "DEQUANTIZE turns int8 back into float inside the model: find the layer that stays float "
        f"(often LayerNormalization) and replace it, or choose {FLOAT_TARGET}."
    ),
    "LOGISTIC": "Use ReLU6 instead of sigmoid activations inside the network.",
    "EXP": "EXP comes from softmax-like or exponential layers: move it to the host or use ReLU6.",
    "DIV": "Replace the division by a multiplication with a constant, or move it to the host.",
    "CUSTOM:TFLM_DECODE": (
        "This file is LUT-compressed for TFLite Micro (its DECODE ops unpack the weights); LiteRT, the Edge TPU "
        "compiler and Vela read plain int8 tensors: export the Keras model (or the uncompressed .tflite, such as "
        "the android-arm64 or cortex-m55-ethos-u55 model_int8.tflite of the same export) to this target."
    ),
}

_GENERIC_REMEDY = (
    "Replace the layer that makes it, or choose a target whose runtime has it "
    "(`edgeport targets show {target}` lists the supported ops)."
)


_FLOAT_REMEDY = (
    "Find the layer that stays float and make it quantizable (int8 builtin ops only), "
    f"or choose {FLOAT_TARGET}, where float ops run."
)


def remedy_for(
    graph: TFLiteGraph,
    profile: TargetProfile,
    op: Op | None = None,
    tensor: Tensor | None = None,
    *,
    ops: Mapping[str, str] = OP_REMEDIES,
    default: str | None = None,
) -> str:
    """The most specific advice: by Keras layer class first, then by op name (``ops``), then ``default``."""
    layer_class = _layer_class(graph, op, tensor)
    if layer_class in LAYER_REMEDIES:
        return LAYER_REMEDIES[layer_class]
    if op is not None and op.name in ops:
        return ops[op.name]
    return default if default is not None else _GENERIC_REMEDY.format(target=profile.name)


def supports(profile: TargetProfile, op: Op) -> bool:
    """Whether the target's runtime has a kernel for ``op`` (Flex ops: never)."""
    if op.is_flex or op.name.startswith("DELEGATE"):
        return False
    if op.is_custom:
        if profile.ops.op_list == ALL_BUILTINS:
            return op.custom_code in LITERT_CUSTOM_OPS
        if profile.runtime.name == "edgetpu" and op.name == EDGETPU_CUSTOM_OP:
            return True  # an already compiled model
        return op.custom_code in profile.ops.names or op.name in profile.ops.names
    return profile.ops.supports(op.name)


# --- op support ------------------------------------------------------------------------------------


@check("op", "flex_op", all_subgraphs=True)
def flex_op(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> list[Finding]:
    """Op {op_name} (op {op_index}){where} is a TensorFlow op kept by SELECT_TF_OPS (Flex): {target} cannot
    run it, nor can any microcontroller, Edge TPU or LiteRT build without the Flex delegate. Convert with
    TFLITE_BUILTINS only and replace the layer that makes tf.{tf_op} with layers made of TFLite builtin ops."""
    if not op.is_flex:
        return []
    return [report(flex_op, "error", graph, profile, op=op, tf_op=op.name.removeprefix("Flex"))]


@check("op", "op_not_supported", all_subgraphs=True)
def op_not_supported(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> list[Finding]:
    """Op {op_name} (op {op_index}){where} is not supported by {runtime} ({target}). {remedy}"""
    if op.is_flex or supports(profile, op):
        return []
    return [report(op_not_supported, "error", graph, profile, op=op, remedy=remedy_for(graph, profile, op))]


# --- integer-only -------------------------------------------------------------------------------------


def op_float_tensors(graph: TFLiteGraph, op: Op) -> list[Tensor]:
    """The float tensors an op reads or writes (float constants included: they make a hybrid op)."""
    return [t for t in [*graph.op_inputs(op), *graph.op_outputs(op)] if t.is_float]


def _is_boundary_conversion(graph: TFLiteGraph, op: Op) -> bool:
    """QUANTIZE of a float graph input / DEQUANTIZE into a float graph output: an I/O dtype matter."""
    if op.name == "QUANTIZE":
        return all(i in graph.inputs for i in op.inputs if i >= 0 and graph.tensors[i].is_float)
    if op.name == "DEQUANTIZE":
        return all(o in graph.outputs for o in op.outputs if o >= 0 and graph.tensors[o].is_float)
    return False


_QUANTIZED_DTYPES = frozenset({"int8", "uint8", "int16", "int4"})


def _not_quantized(graph: TFLiteGraph) -> bool:
    """Float ops and no quantized activation at all: the converter ran without int8 quantization
    (int32 shape arithmetic such as SHAPE/STRIDED_SLICE does not count as quantized)."""
    return bool(graph.float_op_indices) and not graph.activation_dtypes & _QUANTIZED_DTYPES


@check("graph", "float_model")
def float_model(graph: TFLiteGraph, _: None, profile: TargetProfile) -> list[Finding]:
    """The model is not quantized ({float_ops} of {total_ops} ops compute in float, no int8 activations), and
    {target} runs integer-only kernels. Convert it to full int8 with a representative dataset
    (TFLITE_BUILTINS_INT8, int8 or uint8 I/O), or choose a target that runs float ops ({float_target})."""
    if profile.quantization.float_ops_allowed or not _not_quantized(graph):
        return []
    count = len(graph.float_op_indices)
    return [
        report(
            float_model, "error", graph, profile, float_ops=count, total_ops=len(graph.ops), float_target=FLOAT_TARGET
        )
    ]


@check("op", "float_op")
def float_op(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> list[Finding]:
    """Op {op_name} (op {op_index}){where} computes in float ({detail}), but {target} runs integer-only
    kernels. {remedy}"""
    if profile.quantization.float_ops_allowed or _is_boundary_conversion(graph, op):
        return []
    floats = op_float_tensors(graph, op)
    if not floats or _not_quantized(graph):  # a float model is one finding (float_model), not one per op
        return []
    activations = [t for t in [*graph.op_outputs(op), *graph.op_inputs(op)] if t.is_float and not t.is_constant]
    if op.name == "DEQUANTIZE":
        detail = f"it turns an integer tensor into {floats[-1].dtype} inside the graph"
    elif op.name == "QUANTIZE":
        detail = f"it re-quantizes the {floats[0].dtype} result of a float op"
    elif activations:
        detail = f"{activations[0].dtype} tensor '{activations[0].name}'"
    else:
        detail = f"{floats[0].dtype} constant '{floats[0].name}': a hybrid op"
    subject = activations[0] if activations else None
    return [
        report(
            float_op, "error", graph, profile, op=op, tensor=subject, detail=detail,
            remedy=remedy_for(graph, profile, op, subject, ops={"DEQUANTIZE": OP_REMEDIES["DEQUANTIZE"]}, default=_FLOAT_REMEDY),
        )
    ]  # fmt: skip


@check("io", "io_dtype")
def io_dtype(graph: TFLiteGraph, tensor: Tensor, profile: TargetProfile) -> list[Finding]:
    """Model {role} '{tensor}' is {dtype}; {target} expects {expected}{allowed}. {remedy}"""
    expected = profile.quantization.io_dtype
    if tensor.dtype == expected:
        return []
    allowed = tensor.dtype in profile.quantization.io_dtypes_allowed
    role = "input" if tensor.index in graph.inputs else "output"
    remedy = f"Convert with inference_input_type/inference_output_type {expected}"
    if tensor.is_float:
        action = "quantize inputs" if role == "input" else "dequantize outputs"
        remedy += f", and {action} on the device with the tensor's scale and zero point."
    elif tensor.dtype == "uint8":
        remedy += " (uint8 I/O costs a QUANTIZE op at each end of the graph)."
    else:
        remedy += "."
    note = f" (it also accepts {tensor.dtype})" if allowed else ""
    return [
        report(
            io_dtype, "warning" if allowed else "error", graph, profile, tensor=tensor,
            role=role, dtype=tensor.dtype, expected=expected, allowed=note, remedy=remedy,
        )
    ]  # fmt: skip


# --- shapes --------------------------------------------------------------------------------------------

_STATIC_EXPORT = (
    "Export with a static input signature: model.export(dir, format='tf_saved_model', "
    "input_signature=[tf.TensorSpec((1, ...))]) and convert with TFLiteConverter.from_saved_model."
)


@check("io", "dynamic_batch")
def dynamic_batch(graph: TFLiteGraph, tensor: Tensor, profile: TargetProfile) -> list[Finding]:
    """Model input '{tensor}' has a dynamic batch (shape signature {signature}); runtimes allocate the
    stored shape {shape}, which is what {target} will run. {remedy}"""
    if tensor.index not in graph.inputs or not tensor.shape_signature or tensor.shape_signature[0] >= 0:
        return []
    if any(d < 0 for d in tensor.shape_signature[1:]) or not tensor.shape or tensor.shape[0] != profile.batch:
        return []  # dynamic_shape / batch_size say more
    return [
        report(
            dynamic_batch, "warning", graph, profile, tensor=tensor,
            signature=list(tensor.shape_signature), shape=list(tensor.shape), remedy=_STATIC_EXPORT,
        )
    ]  # fmt: skip


@check("io", "dynamic_shape")
def dynamic_shape(graph: TFLiteGraph, tensor: Tensor, profile: TargetProfile) -> list[Finding]:
    """Model {role} '{tensor}' has dynamic dimensions (shape signature {signature}); {target} needs static
    shapes. {remedy}"""
    if not any(d < 0 for d in tensor.shape_signature[1:]):
        return []
    role = "input" if tensor.index in graph.inputs else "output"
    return [
        report(
            dynamic_shape, "error" if _strict(profile) else "warning", graph, profile, tensor=tensor,
            role=role, signature=list(tensor.shape_signature), remedy=_STATIC_EXPORT,
        )
    ]  # fmt: skip


@check("io", "batch_size")
def batch_size(graph: TFLiteGraph, tensor: Tensor, profile: TargetProfile) -> list[Finding]:
    """Model input '{tensor}' has batch {batch} (shape {shape}); {target} runs batch {expected}. {remedy}"""
    if tensor.index not in graph.inputs or len(tensor.shape) < 2 or tensor.shape[0] == profile.batch:
        return []
    return [
        report(
            batch_size, "error" if _strict(profile) else "warning", graph, profile, tensor=tensor,
            batch=tensor.shape[0], shape=list(tensor.shape), expected=profile.batch, remedy=_STATIC_EXPORT,
        )
    ]  # fmt: skip


# --- kernel limits ---------------------------------------------------------------------------------------


@check("op", "softmax_too_many_classes")
def softmax_too_many_classes(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> list[Finding]:
    """SOFTMAX (op {op_index}){where} has {classes} classes: TFLite Micro's int8 softmax kernel aborts
    above ~{limit} classes (the process dies with no message). Remove the final Softmax from the model and
    apply it on the host (an argmax needs none), or reduce the number of classes."""
    limit = profile.ops.limits.get("softmax_max_classes")
    if limit is None or op.name != "SOFTMAX":
        return []
    inputs = graph.op_inputs(op)
    if not inputs or inputs[0].dtype not in ("int8", "uint8") or not inputs[0].shape:
        return []
    classes = inputs[0].shape[-1]
    if classes <= limit:
        return []
    return [report(softmax_too_many_classes, "error", graph, profile, op=op, classes=classes, limit=limit)]


@check("op", "softmax_too_large")
def softmax_too_large(graph: TFLiteGraph, op: Op, profile: TargetProfile) -> list[Finding]:
    """SOFTMAX (op {op_index}){where} has {elements} input elements; the Edge TPU maps a softmax of at
    most {limit}, so it and every op after it would run on the host CPU. Remove the final Softmax from the
    model and apply it on the host."""
    limit = profile.ops.limits.get("softmax_max_elements")
    if limit is None or op.name != "SOFTMAX":
        return []
    inputs = graph.op_inputs(op)
    if not inputs or inputs[0].size <= limit:
        return []
    return [report(softmax_too_large, "error", graph, profile, op=op, elements=inputs[0].size, limit=limit)]


@check("tensor", "too_many_dims")
def too_many_dims(graph: TFLiteGraph, tensor: Tensor, profile: TargetProfile) -> list[Finding]:
    """Tensor '{tensor}'{where} has shape {shape}: the Edge TPU allows more than {limit} dimensions only
    when all but the innermost {limit} are 1, so op {op_name} (op {op_index}) and every op after it would
    run on the host CPU. {remedy}"""
    limit = profile.ops.limits.get("max_non1_dims")
    if limit is None or len(tensor.shape) <= limit or all(d == 1 for d in tensor.shape[: len(tensor.shape) - limit]):
        return []
    index = graph.producers.get(tensor.index)
    if index is None:
        index = graph.consumers.get(tensor.index, [None])[0]
    op = graph.ops[index] if index is not None else None
    layer_class = _layer_class(graph, op, tensor)
    if layer_class in LAYER_REMEDIES:
        remedy = LAYER_REMEDIES[layer_class]
    elif "up_sampling" in tensor.name:
        remedy = LAYER_REMEDIES["UpSampling2D"]
    else:
        remedy = f"Reshape so that at most the innermost {limit} dimensions are larger than 1."
    return [
        report(
            too_many_dims,
            "error",
            graph,
            profile,
            op=op,
            tensor=tensor,
            shape=list(tensor.shape),
            limit=limit,
            remedy=remedy,
        )
    ]


# --- running them ---------------------------------------------------------------------------------------


def _items(graph: TFLiteGraph, scope: Scope, all_subgraphs: bool) -> Iterable[Any]:
    if scope == "graph":
        return [None]
    if scope == "io":
        return [graph.tensors[i] for i in dict.fromkeys([*graph.inputs, *graph.outputs])]
    if scope == "op":
        return [*graph.ops, *graph.other_ops] if all_subgraphs else graph.ops
    touched = dict.fromkeys(i for op in graph.ops for i in (*op.inputs, *op.outputs) if i >= 0)
    return [graph.tensors[i] for i in touched if not graph.tensors[i].is_constant]


def run_checks(graph: TFLiteGraph, profile: TargetProfile, checks: Iterable[Check] | None = None) -> list[Finding]:
    """Every registered check over the graph. An op gets at most one error from the op-scope checks (the
    first registered wins: an op that cannot run at all need not also be reported as float)."""
    findings: list[Finding] = []
    ops_in_error: set[tuple[int, int]] = set()
    for registered in REGISTRY if checks is None else checks:
        for item in _items(graph, registered.scope, registered.all_subgraphs):
            if registered.scope == "op" and (item.subgraph, item.index) in ops_in_error:
                continue
            for finding in registered.function(graph, item, profile):
                findings.append(finding)
                if registered.scope == "op" and finding.severity == "error":
                    ops_in_error.add((item.subgraph, item.index))
    return findings
