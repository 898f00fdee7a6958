"""Where int8 lost accuracy: the error of every int8 op output against the float model, by Keras layer.

Method (an equivalent of ``tf.lite.experimental.QuantizationDebugger`` that needs no TensorFlow and
works on the two ``.tflite`` files the export already has):

* The float reference is a float TFLite model converted from the *same* SavedModel without
  quantization. Both models run in LiteRT with ``experimental_preserve_all_tensors=True`` and the
  builtin reference kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: XNNPACK would fuse ops and hide
  their outputs) on the same float inputs (quantized with the int8 input's own scale/zero point).
* Each int8 op output is matched to a float tensor: (1) by tensor name -- the converter names a fused
  op's output after the TF ops it fused, identically in the float and the int8 conversion of one
  SavedModel (checked on Conv/BatchNorm/ReLU/Add/Dense/Softmax models); (2) graph inputs and outputs
  by position (uint8 I/O adds QUANTIZE ops whose outputs take the graph I/O names); (3) else the n-th
  op of the same type in the same Keras layer. Int8 ops with no float counterpart (requantizing
  QUANTIZE ops the quantizer inserts) are listed in ``unmatched``, never silently compared to
  something else.
* Two errors per tensor, int8 dequantized with the tensor's scale and zero point:

  - **end to end** (``snr_db``, ``rmse_over_range``, ``mean_abs_error``): against the float model's
    activation for the same input. It accumulates the error of every op before it, so it says how much
    has been lost *by* this point.
  - **this op alone** (``local_snr_db``, ``local_rmse_over_range``): against the float op run on the
    *int8 model's own* (dequantized) inputs. It says how much *this* op lost, which is what the user
    can fix (outlier weights, a bad activation range). Computed with one float model in which every
    op reads its own copy of its inputs, all made graph inputs, so a single invoke per sample runs
    every op in isolation.

  Rows are ranked worst first by the op-alone SNR (end-to-end SNR where it could not be computed):
  the end-to-end SNR of every op after a damaged one is as bad as the damaged one's, so ranking by it
  would not point at the layer to fix.

Agreement with the QuantizationDebugger (verified, tests/test_layer_error.py): its layer statistics
come from NumericVerify ops that compare each int8 op with its float op fed the dequantized int8
inputs -- the definition of "this op alone". On the debugger's own calibrated model of a trained MNIST
CNN, the SNRs agree within 0.02 dB (conv1 45.99 vs 45.98, conv2 46.27 vs 46.26, classifier 42.44 vs
42.42). Known differences: (1) the debugger feeds the *first* op the float input itself, so its number
there is our end-to-end one (we report the input's own quantization as an ``INPUT`` row instead);
(2) for ops that share their input's scale (AVERAGE_POOL_2D, CONCATENATION, RESHAPE) it reported
~143 dB, i.e. no error, where we measured 32.96 dB for an int8 2x2 average pool -- a numpy average
of the int8 model's own dequantized input gives the same 32.96 dB, so the rounding is real.
The debugger needs TensorFlow and the converter object; this needs neither.

SNR is ``10 log10(mean(float^2) / mean((float - int8)^2))`` pooled over all elements and samples;
``None`` in :meth:`LayerErrorReport.to_dict` means no error at all (infinite SNR). A limitation
shared with the debugger: a tensor whose power is dominated by a few huge channels can show a high
SNR while its small channels are crushed; the consumer's end-to-end SNR then shows the loss.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationDataError, InputModelError, NotSupportedError
from .inference import dequantize, quantize

log = logging.getLogger(__name__)

#: Dtypes of the int8 model's tensors that carry real values through a scale and zero point.
_QUANTIZED = frozenset({"int8", "uint8", "int16"})
_FLOAT = frozenset({"float32", "float16"})
#: Ops that change only the integer encoding of a tensor, not its real values.
_REQUANTIZE = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class LayerError:
    """The error of one int8 op output tensor (see the module docstring for the two definitions)."""

    layer: str | None  # Keras layer; None when the tensor name names no layer
    op: str
    op_index: int
    tensor: str
    shape: tuple[int, ...]
    snr_db: float  # end to end; inf when identical
    rmse_over_range: float | None  # end-to-end RMSE / (max - min of the float tensor); None for a constant tensor
    mean_abs_error: float
    local_snr_db: float | None = None  # this op alone; None when it could not be computed
    local_rmse_over_range: float | None = None
    matched_by: str = "name"  # "name" | "graph input/output" | "layer and op type"
    local_note: str = ""  # why the op-alone error is missing, when it is

    @property
    def rank_snr(self) -> float:
        """The SNR rows are ranked by: this op alone when known, else end to end."""
        return self.local_snr_db if self.local_snr_db is not None else self.snr_db

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "op": self.op,
            "op_index": self.op_index,
            "tensor": self.tensor,
            "shape": list(self.shape),
            "snr_db": _finite(self.snr_db),
            "rmse_over_range": self.rmse_over_range,
            "mean_abs_error": self.mean_abs_error,
            "local_snr_db": _finite(self.local_snr_db),
            "local_rmse_over_range": self.local_rmse_over_range,
            "local": "measured" if self.local_snr_db is not None else (self.local_note or "not computed"),
            "matched_by": self.matched_by,
        }


@dataclass
class LayerErrorReport:
    """Per-op errors of an int8 model, worst first."""

    rows: list[LayerError]
    samples: int
    method: str
    unmatched: list[dict[str, Any]] = field(default_factory=list)

    def worst(self, n: int = 10) -> list[LayerError]:
        return self.rows[:n]

    def by_layer(self) -> dict[str, LayerError]:
        """The worst row of each Keras layer (unattributed ops under their op name)."""
        result: dict[str, LayerError] = {}
        for row in self.rows:
            result.setdefault(row.layer or f"({row.op})", row)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "samples": self.samples,
            "rows": [r.to_dict() for r in self.rows],
            "unmatched": list(self.unmatched),
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else float(x)


class _Stats:
    """Streaming error statistics of one tensor pair (the models' activations never pile up in RAM)."""

    def __init__(self) -> None:
        self.n = 0
        self.signal = 0.0
        self.noise = 0.0
        self.abs_err = 0.0
        self.lo = math.inf
        self.hi = -math.inf

    def add(self, reference: np.ndarray, actual: np.ndarray) -> None:
        ref = reference.astype(np.float64).ravel()
        diff = ref - actual.astype(np.float64).ravel()
        self.n += ref.size
        self.signal += float(np.dot(ref, ref))
        self.noise += float(np.dot(diff, diff))
        self.abs_err += float(np.abs(diff).sum())
        if ref.size:
            self.lo = min(self.lo, float(ref.min()))
            self.hi = max(self.hi, float(ref.max()))

    def snr_db(self) -> float:
        if self.noise == 0:
            return math.inf
        if self.signal == 0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    def rmse_over_range(self) -> float | None:
        span = self.hi - self.lo
        if self.n == 0 or not span > 0:
            return None
        return math.sqrt(self.noise / self.n) / span

    def mean_abs(self) -> float:
        return self.abs_err / self.n if self.n else 0.0


@dataclass
class _Pair:
    """One int8 op output matched to a float tensor."""

    q_op: Any | None  # None for a graph input (its quantization error)
    q_tensor: Any
    f_tensor: Any
    matched_by: str
    f_op: Any | None = None  # the float op producing f_tensor, when it is the same kind of op
    end: _Stats = field(default_factory=_Stats)
    local: _Stats | None = None
    local_note: str = ""


def layer_errors(
    float_model: bytes,
    int8_model: bytes,
    inputs: list[np.ndarray],
    layers: Mapping[str, str] | None = None,
    max_samples: int = 50,
) -> LayerErrorReport:
    """Error of each int8 op output against the float model, worst first (see the module docstring).

    ``inputs[i]`` holds float samples (N, ...) for model input ``i``, preprocessed as for the model;
    ``layers`` maps Keras layer name -> class (``SourceModel.layers``) to name rows by layer.
    """
    from ..verify.graph import TFLiteGraph

    fgraph = TFLiteGraph.from_bytes(float_model, source="The float reference model")
    qgraph = TFLiteGraph.from_bytes(int8_model, source="The int8 model")
    if layers:
        fgraph, qgraph = fgraph.with_keras_layers(layers), qgraph.with_keras_layers(layers)
    if len(fgraph.inputs) != len(qgraph.inputs) or len(inputs) != len(qgraph.inputs):
        raise InputModelError(
            f"Per-layer error needs a float and an int8 model of the same graph and one array per input; received "
            f"a float model with {len(fgraph.inputs)} inputs, an int8 model with {len(qgraph.inputs)} and {len(inputs)} arrays.",
            hint="Convert both models from the same SavedModel.",
        )
    n = min(int(inputs[0].shape[0]), max_samples)
    if n < 1:
        raise CalibrationDataError("Per-layer error needs at least one input sample; received none.")
    pairs, unmatched = _match(fgraph, qgraph)
    local_model, local_inputs = _isolated_model(float_model, fgraph, qgraph, pairs)
    for k, (q_index, f_index) in enumerate(zip(qgraph.inputs, fgraph.inputs, strict=True)):
        qt = qgraph.tensors[q_index]
        if qt.dtype in _QUANTIZED:  # the input's own quantization: a loss no op is charged with
            stats = _Stats()
            pairs.insert(
                k,
                _Pair(
                    q_op=None,
                    q_tensor=qt,
                    f_tensor=fgraph.tensors[f_index],
                    matched_by="graph input/output",
                    end=stats,
                    local=stats,
                ),
            )

    q_interp = _interpreter(int8_model, "int8 model")
    f_interp = _interpreter(float_model, "float reference model")
    l_interp = None
    if local_model is not None:
        try:
            l_interp = _interpreter(local_model, "float model with isolated ops")
        except NotSupportedError as exc:  # keep the end-to-end errors; say why the op-alone ones are missing
            log.debug("op-alone error not measured: %s", exc)
            for pair in pairs:
                if pair.f_op is not None:
                    pair.local, pair.local_note = None, "not computed: the isolated float ops did not load in LiteRT"
    q_in = q_interp.get_input_details()
    f_in = f_interp.get_input_details()
    for i in range(n):
        for k, (qd, fd) in enumerate(zip(q_in, f_in, strict=True)):
            sample = inputs[k][i : i + 1].astype(np.float32)
            scale, zp = qd["quantization"]
            q_interp.set_tensor(qd["index"], quantize(sample.reshape(qd["shape"]), qd["dtype"], scale, zp))
            f_interp.set_tensor(fd["index"], sample.reshape(fd["shape"]))
        q_interp.invoke()
        f_interp.invoke()
        q_values: dict[int, np.ndarray] = {}

        def real(t: Any, q_values: dict[int, np.ndarray] = q_values) -> np.ndarray:
            if t.index not in q_values:
                q_values[t.index] = _real(q_interp.get_tensor(t.index), t)
            return q_values[t.index]

        for pair in pairs:
            pair.end.add(f_interp.get_tensor(pair.f_tensor.index), real(pair.q_tensor))
            if pair.local is not None and pair.f_op is None and pair.q_op is not None:  # a (de)quantize op
                pair.local.add(real(qgraph.tensors[pair.q_op.inputs[0]]), real(pair.q_tensor))
        if l_interp is not None:
            for new_index, q_index in local_inputs:
                l_interp.set_tensor(new_index, real(qgraph.tensors[q_index]).astype(np.float32))
            l_interp.invoke()
            for pair in pairs:
                if pair.local is not None and pair.f_op is not None:
                    pair.local.add(l_interp.get_tensor(pair.f_tensor.index), real(pair.q_tensor))

    rows = [
        LayerError(
            layer=_layer(qgraph, fgraph, p),
            op=p.q_op.name if p.q_op is not None else "INPUT",
            op_index=p.q_op.index if p.q_op is not None else -1,
            tensor=p.q_tensor.name,
            shape=tuple(p.q_tensor.shape),
            snr_db=p.end.snr_db(),
            rmse_over_range=p.end.rmse_over_range(),
            mean_abs_error=p.end.mean_abs(),
            local_snr_db=p.local.snr_db() if p.local is not None and p.local.n else None,
            local_rmse_over_range=p.local.rmse_over_range() if p.local is not None and p.local.n else None,
            matched_by=p.matched_by,
            local_note=p.local_note,
        )
        for p in pairs
    ]
    rows.sort(key=lambda r: (r.rank_snr, r.snr_db, r.op_index))
    return LayerErrorReport(rows=rows, samples=n, method=_method(n), unmatched=unmatched)


def _layer(qgraph: Any, fgraph: Any, pair: _Pair) -> str | None:
    if pair.q_op is None:
        return None
    return qgraph.layer_of_op(pair.q_op) or (fgraph.layer_of_op(pair.f_op) if pair.f_op is not None else None)


def _method(n: int) -> str:
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        litert = "?"
    return (
        f"measured (host, LiteRT {litert} reference kernels, {n} samples): each int8 op output, dequantized, "
        "against the float TFLite model of the same SavedModel; snr_db/rmse_over_range end to end, "
        "local_snr_db for the op alone (float op fed the int8 model's dequantized inputs, as the "
        "QuantizationDebugger does); ranked worst first by the op-alone SNR"
    )


def _interpreter(model: bytes, what: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..convert.compact import for_litert
    from ..tfimport import silenced_stderr_fd

    try:
        with silenced_stderr_fd():
            interp = Interpreter(
                model_content=for_litert(model),
                experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotSupportedError(
            f"Per-layer error needs the {what} to run in LiteRT's builtin kernels; it does not ({first[:200]})."
        ) from exc
    return interp


def _real(values: np.ndarray, tensor: Any) -> np.ndarray:
    if tensor.dtype in _QUANTIZED and tensor.scale:
        return dequantize(values, tensor.scale[0], tensor.zero_point[0] if tensor.zero_point else 0)
    return values.astype(np.float32)


# --- matching -------------------------------------------------------------------------------------


def _match(fgraph: Any, qgraph: Any) -> tuple[list[_Pair], list[dict[str, Any]]]:
    """Pair every comparable int8 op output with a float tensor (see the module docstring)."""
    f_outputs = [(op, t) for op in fgraph.ops for t in fgraph.op_outputs(op)]
    by_name: dict[str, list] = {}
    for op, t in f_outputs:
        by_name.setdefault(t.name, []).append((op, t))
    f_io = {("in", k): i for k, i in enumerate(fgraph.inputs)} | {("out", k): i for k, i in enumerate(fgraph.outputs)}
    q_io = {i: ("in", k) for k, i in enumerate(qgraph.inputs)} | {i: ("out", k) for k, i in enumerate(qgraph.outputs)}
    by_layer_op: dict[tuple[str | None, str], list] = {}
    for op in fgraph.ops:
        by_layer_op.setdefault((fgraph.layer_of_op(op), op.name), []).append(op)
    seen_layer_op: dict[tuple[str | None, str], int] = {}

    pairs: list[_Pair] = []
    unmatched: list[dict[str, Any]] = []
    used: set[int] = set()
    q2f = {q: fgraph.inputs[k] for k, q in enumerate(qgraph.inputs)}  # int8 tensor -> its float twin
    for q_op in qgraph.ops:
        key = (qgraph.layer_of_op(q_op), q_op.name)
        occurrence = seen_layer_op.get(key, 0)
        seen_layer_op[key] = occurrence + 1
        outputs = qgraph.op_outputs(q_op)
        for position, qt in enumerate(outputs):
            if qt.dtype not in _QUANTIZED | _FLOAT:
                unmatched.append(_unmatched(qgraph, q_op, qt, f"{qt.dtype} output carries no real values"))
                continue
            found = None
            candidates = [c for c in by_name.get(qt.name, []) if c[1].shape == qt.shape and c[1].index not in used]
            if len(candidates) == 1:
                found = (*candidates[0], "name")
            elif qt.index in q_io and q_io[qt.index] in f_io:
                ft = fgraph.tensors[f_io[q_io[qt.index]]]
                if ft.shape == qt.shape:
                    producer = fgraph.producers.get(ft.index)
                    found = (fgraph.ops[producer] if producer is not None else None, ft, "graph input/output")
            if found is None and q_op.name in _REQUANTIZE and q_op.inputs and q_op.inputs[0] in q2f:
                ft = fgraph.tensors[q2f[q_op.inputs[0]]]  # (de)quantizing keeps the real values
                if ft.shape == qt.shape:
                    producer = fgraph.producers.get(ft.index)
                    found = (fgraph.ops[producer] if producer is not None else None, ft, "input of a (de)quantize op")
            if found is None:
                same = by_layer_op.get(key, [])
                if key[0] is not None and occurrence < len(same):
                    f_op = same[occurrence]
                    f_outs = fgraph.op_outputs(f_op)
                    if position < len(f_outs) and f_outs[position].shape == qt.shape:
                        found = (f_op, f_outs[position], "layer and op type")
            if found is None:
                unmatched.append(
                    _unmatched(qgraph, q_op, qt, "no float tensor of the same name, I/O position or layer and op type")
                )
                continue
            f_op, ft, how = found
            used.add(ft.index)
            q2f[qt.index] = ft.index
            pair = _Pair(q_op=q_op, q_tensor=qt, f_tensor=ft, matched_by=how)
            pair.f_op = f_op if f_op is not None and f_op.name == q_op.name else None
            if q_op.name in _REQUANTIZE and pair.f_op is None:
                pair.local = _Stats()  # reference: the op's own dequantized input (see layer_errors)
            pairs.append(pair)
    return pairs, unmatched


def _unmatched(graph: Any, op: Any, tensor: Any, why: str) -> dict[str, Any]:
    return {"op": op.name, "op_index": op.index, "tensor": tensor.name, "layer": graph.layer_of_op(op), "why": why}


# --- the isolated float model ("this op alone") ---------------------------------------------------


def _isolated_model(
    float_model: bytes, fgraph: Any, qgraph: Any, pairs: Sequence[_Pair]
) -> tuple[bytes | None, list[tuple[int, int]]]:
    """A copy of the float model where each paired op reads fresh graph-input copies of its
    non-constant inputs, so one invoke evaluates every op on inputs we choose.

    Returns the model and, for each new input tensor, the index of the int8 tensor whose dequantized
    values feed it.
    Ops whose inputs cannot be matched one to one keep ``local=None`` with a note.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if fgraph.subgraph_count != 1:
        for p in pairs:
            p.local_note = "not computed: the model has control-flow subgraphs"
        return None, []
    model = schema.ModelT.InitFromPackedBuf(bytearray(float_model), 0)
    sg = model.subgraphs[0]
    feeds: list[tuple[int, int]] = []
    done: set[int] = set()
    pair_by_op: dict[int, list[_Pair]] = {}
    for p in pairs:
        pair_by_op.setdefault(p.f_op.index if p.f_op is not None else -1, []).append(p)
    for f_index, group in pair_by_op.items():
        if f_index < 0:
            for p in group:
                if p.local is None:
                    p.local_note = "not computed: the int8 op has no float op of the same type"
            continue
        if f_index in done:
            continue
        done.add(f_index)
        f_op = fgraph.ops[f_index]
        q_op = group[0].q_op
        reason = _local_blocker(fgraph, qgraph, f_op, q_op)
        if reason:
            for p in group:
                p.local_note = f"not computed: {reason}"
            continue
        raw_op = sg.operators[f_index]
        new_inputs = []
        for position, f_in in enumerate(f_op.inputs):
            if f_in < 0 or fgraph.tensors[f_in].is_constant:
                new_inputs.append(f_in)
                continue
            q_in = q_op.inputs[position]
            clone = copy.deepcopy(sg.tensors[f_in])
            clone.name = (fgraph.tensors[f_in].name + f"/edgeport_isolated_{f_index}_{position}").encode()
            clone.buffer = 0
            sg.tensors.append(clone)
            new_index = len(sg.tensors) - 1
            new_inputs.append(new_index)
            feeds.append((new_index, q_in))
        raw_op.inputs = np.asarray(new_inputs, dtype=np.int32)
        for p in group:
            p.local = _Stats()
    if not feeds:
        return None, []
    sg.inputs = np.asarray([f for f, _ in feeds], dtype=np.int32)
    sg.outputs = np.asarray(sorted({p.f_tensor.index for p in pairs if p.local is not None}), dtype=np.int32)
    model.signatureDefs = []
    builder = flatbuffers.Builder(max(1024, len(float_model) + 1024))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), feeds


def _local_blocker(fgraph: Any, qgraph: Any, f_op: Any, q_op: Any) -> str:
    """Why an op cannot be run alone on the int8 model's inputs ('' when it can)."""
    if len(f_op.inputs) != len(q_op.inputs):
        return f"the float {f_op.name} has {len(f_op.inputs)} inputs, the int8 one {len(q_op.inputs)}"
    for f_in, q_in in zip(f_op.inputs, q_op.inputs, strict=True):
        if f_in < 0 or fgraph.tensors[f_in].is_constant:
            continue
        if q_in < 0:
            return "an input present in the float op is omitted in the int8 op"
        if fgraph.tensors[f_in].is_variable:
            return "the op reads a variable tensor"
        if fgraph.tensors[f_in].dtype not in _FLOAT:
            return f"a {fgraph.tensors[f_in].dtype} input"
        if (
            qgraph.tensors[q_in].dtype not in _QUANTIZED | _FLOAT
            or qgraph.tensors[q_in].shape != fgraph.tensors[f_in].shape
        ):
            return "the int8 op's inputs differ in type or shape from the float op's"
    return ""
