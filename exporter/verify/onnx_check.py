"""Does an exported ONNX model load in onnxruntime, and does it agree with the Keras model?

tf2onnx writes a file even when it could not convert an op (exact GELU leaves a TF ``Erfc`` node that
onnxruntime refuses), so a written file proves nothing: every ONNX model edgeport hands over is loaded
and run here first. Float models must match Keras to float round-off; int8 QDQ models are judged like
the TFLite int8 models (top-1 agreement, SNR) through :func:`exporter.analyze.fidelity.compare`.

int8 numbers must not depend on the host CPU: onnxruntime's fused int8 kernels saturate on x86 CPUs
without VNNI (MLPerf Tiny AD: +13 % anomaly score on an AVX2-only EPYC, +2 % with reference
semantics), so the int8 fidelity edgeport reports and gates on is measured with graph optimizations
off (:data:`REFERENCE_QDQ`: every QDQ pair runs as dequantize -> float op -> quantize, as the ONNX
spec defines it). The host's optimized kernels are measured too and labelled with the CPU's VNNI.

The sessions run in :mod:`exporter.convert.onnx_worker`'s child process; this process only compares
the outputs (:func:`compare_outputs`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analyze.fidelity import Fidelity, compare
from ..childproc import first_line
from ..errors import ConversionError

log = logging.getLogger(__name__)

#: A float ONNX model agrees with Keras when every output is within ATOL + RTOL * max|Keras output|.
#: Measured: MNIST CNN (softmax) 1e-7; the MLPerf Tiny AD autoencoder (outputs up to 62) 5e-3, from
#: float32 summation order only. A real conversion bug is orders of magnitude above this.
FLOAT_ATOL = 1e-4
FLOAT_RTOL = 1e-3
#: Batch size for models with a dynamic batch dimension (static batch-1 models run sample by sample).
_CHUNK = 64


#: How an int8 check was run: the semantics the numbers stand for.
REFERENCE_QDQ = "reference QDQ semantics (onnxruntime ORT_DISABLE_ALL: dequantize -> float op -> quantize)"
FLOAT_KERNELS = "onnxruntime default graph optimizations (float kernels)"


def host_kernels_label() -> str:
    """``host kernels: onnxruntime optimized (ORT_ENABLE_ALL), CPU has VNNI (avx512_vnni)`` or ``... lacks VNNI``."""
    from ..hostcpu import host_cpu

    return f"host kernels: onnxruntime optimized (ORT_ENABLE_ALL), {host_cpu().describe()}"


class OnnxLoadError(RuntimeError):
    """onnxruntime refused the model; ``detail`` is its first line (e.g. ``No Op registered for Erfc ...``)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def runtime_version() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"


def load_session(model: bytes | str, *, threads: int = 1, optimized: bool = True) -> Any:
    """An onnxruntime CPU session, or :class:`OnnxLoadError` with onnxruntime's reason.

    ``optimized=False`` turns graph optimizations off (:data:`REFERENCE_QDQ`): int8 QDQ models then
    compute what the file means, not what the host's fused int8 kernels make of it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors reach us as exceptions; keep its C++ warnings off stderr
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/NotImplemented subclasses of RuntimeError
        raise OnnxLoadError(first_line(exc)) from exc


def run_session(session: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs for N samples (``inputs[i]`` is (N, ...) for model input i), batch 1 or in chunks."""
    feeds = session.get_inputs()
    if len(feeds) != len(inputs):
        raise ConversionError(f"The ONNX model has {len(feeds)} inputs; received {len(inputs)} input arrays to check.")
    count = int(inputs[0].shape[0])
    batch = feeds[0].shape[0] if feeds[0].shape else 1
    step = _CHUNK if not isinstance(batch, int) else max(1, int(batch))
    pieces: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        stop = min(count, start + step)
        if isinstance(batch, int) and stop - start != batch:
            break  # a static batch > 1 model cannot take the remainder
        feed = {
            f.name: np.ascontiguousarray(a[start:stop], dtype=np.float32) for f, a in zip(feeds, inputs, strict=True)
        }
        pieces.append(session.run(None, feed))
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(session.get_outputs()))]


@dataclass
class OnnxCheck:
    """One ONNX model run on the host against the Keras float outputs."""

    model: str  # "float" | "int8"
    runtime: str  # e.g. "onnxruntime 1.32.0, CPUExecutionProvider"
    semantics: str  # REFERENCE_QDQ, FLOAT_KERNELS or host_kernels_label()
    samples: int
    inputs_from: str
    fidelity: Fidelity
    tolerance: float | None = None  # float models: the bound max_abs_error had to meet
    warnings: list[str] = field(default_factory=list)

    @property
    def max_abs_error(self) -> float:
        return max(o.max_abs_error for o in self.fidelity.outputs)

    @property
    def top1_agreement(self) -> float | None:
        return self.fidelity.top1_agreement

    @property
    def snr_db(self) -> float | None:
        return self.fidelity.snr_db

    @property
    def agrees(self) -> bool:
        """Float: within tolerance. int8: finite outputs (its accuracy is reported, not gated)."""
        if self.tolerance is not None:
            return self.max_abs_error <= self.tolerance
        return all(math.isfinite(o.max_abs_error) for o in self.fidelity.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "measured": f"measured (host, {self.runtime}, {self.semantics})",
            "semantics": self.semantics,
            "samples": self.samples,
            "inputs_from": self.inputs_from,
            "max_abs_error": _finite(self.max_abs_error),
            "tolerance": self.tolerance,
            "agrees": self.agrees,
            "top1_agreement": self.top1_agreement,
            "snr_db": _finite(self.snr_db) if self.snr_db is not None else None,
            "fidelity": self.fidelity.to_dict(),
            "warnings": list(self.warnings),
        }


def float_tolerance(reference: Sequence[np.ndarray]) -> float:
    scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in reference)
    return FLOAT_ATOL + FLOAT_RTOL * scale


def check_onnx(
    model: bytes | str,
    inputs: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    output_names: Sequence[str],
    *,
    kind: str,
    inputs_from: str,
    optimized: bool | None = None,
) -> OnnxCheck:
    """Run ``model`` on ``inputs`` in this process and compare with the Keras float ``reference`` outputs.

    For a file that already ran in a child (edgeport's own export uses :func:`compare_outputs`).
    int8 models run with reference semantics unless ``optimized=True``.
    Raises :class:`OnnxLoadError` when onnxruntime refuses the model.
    """
    optimized = kind == "float" if optimized is None else optimized
    session = load_session(model, optimized=optimized)
    semantics = FLOAT_KERNELS if kind == "float" else host_kernels_label() if optimized else REFERENCE_QDQ
    actual = run_session(session, inputs)
    return compare_outputs(
        actual, inputs, reference, output_names, kind=kind, inputs_from=inputs_from, semantics=semantics
    )


def compare_outputs(
    actual: Sequence[np.ndarray],
    inputs: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    output_names: Sequence[str],
    *,
    kind: str,
    inputs_from: str,
    semantics: str,
) -> OnnxCheck:
    """An :class:`OnnxCheck` from ONNX outputs (one (N, ...) array per output) against Keras.

    ``kind="float"`` sets a tolerance (see :data:`FLOAT_RTOL`); ``kind="int8"`` only measures.
    """
    actual = [np.asarray(a) for a in actual]
    if len(actual) != len(output_names):
        raise ConversionError(
            f"The {kind} ONNX model has {len(actual)} outputs; the Keras model has {len(output_names)}."
        )
    samples = int(actual[0].shape[0]) if actual else 0
    reference = [np.asarray(r)[:samples] for r in reference]
    warnings = []
    for out, ref, act in zip(output_names, reference, actual, strict=True):
        if act.shape != ref.shape:
            raise ConversionError(
                f"The {kind} ONNX model's output '{out}' has shape {act.shape[1:]} per sample; Keras gives {ref.shape[1:]}."
            )
        if not np.all(np.isfinite(act)):
            warnings.append(f"ONNX {kind} output '{out}' holds NaN or Inf on {inputs_from}.")
    sizes = [int(np.prod(np.asarray(a).shape[1:])) for a in inputs]
    fidelity = compare(reference, actual, list(output_names), inputs_from, input_sizes=sizes)
    return OnnxCheck(
        model=kind,
        runtime=f"{runtime_version()}, CPUExecutionProvider",
        semantics=semantics,
        samples=samples,
        inputs_from=inputs_from,
        fidelity=fidelity,
        tolerance=float_tolerance(reference) if kind == "float" else None,
        warnings=warnings,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) or math.isnan(value) else value
