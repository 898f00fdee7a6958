"""Analyze one converted model for one target: ops, memory, fit, fidelity, per-layer error and size.

Every number here is either measured on the host (fidelity through LiteRT, file and tensor sizes) or
an estimate that says so (activation peak); the export driver and the accuracy guard both call
:func:`analyze`, so a fallback is judged exactly as the first conversion was.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..analyze.memo import content_key, memo
from ..analyze.memory import budget_remedy
from ..calibrate.dataset import CalibrationSet
from ..convert.session import ConversionSession, Converted
from ..convert.tflite import QuantizationConfig
from ..devices import report_section
from ..errors import EdgeportError
from ..load.model import SourceModel
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..report.report import VERDICT_FORCED, VERDICT_NOT_SUPPORTED, VERDICT_OK, FitCheck, TargetReport

log = logging.getLogger(__name__)

#: Inputs used for the float-vs-int8 agreement check at export time (issue: top class agrees).
FIDELITY_MAX_SAMPLES = 200
#: Samples the per-layer error runs on (every tensor of both models is kept per sample).
LAYER_ERROR_SAMPLES = 50


def config_for(profile: TargetProfile, opts: ExportOptions) -> QuantizationConfig:
    io = opts.io_dtype or profile.quantization.io_dtype
    per_channel = profile.quantization.per_channel if opts.per_channel is None else opts.per_channel
    per_tensor_dense = profile.is_mcu and per_channel and opts.dense_quant == "per-tensor"
    return QuantizationConfig(
        io_dtype=io,
        per_channel=per_channel,
        per_tensor_dense=per_tensor_dense,
        int8_clusters=opts.cluster,
        int8_lut_max_decoded=opts.lut_max_decoded if opts.cluster else None,
    )


def analyze(
    source: SourceModel,
    profile: TargetProfile,
    converted: Converted,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
) -> TargetReport:
    from ..analyze.memory import estimate_memory
    from ..verify import verify
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(converted.model)
    verification = verify(graph, profile, source.layers)
    memory = estimate_memory(graph)
    fit = fit_checks(profile, memory)
    reasons = [f.message for f in verification.errors]
    warnings = [f.message for f in verification.warnings] + list(source.notes)
    extra: dict[str, Any] = {}
    section = report_section(profile, graph, source.layers, opts)
    if section is not None:
        key, data, device_warnings, device_reasons = section
        extra[key] = data
        warnings += device_warnings
        reasons += device_reasons
    if checked is not None:
        warnings += checked.warnings
    for check in fit:
        if not check.fits and check.resource == "param_cache":
            warnings.append(
                f"Parameters need {check.needed_bytes:,} B, more than the {check.budget_bytes:,} B on-chip cache: "
                "they will stream from the host each inference (slower)."
            )
        elif not check.fits:
            reasons.append(
                f"{check.resource} needs {check.needed_bytes:,} B ({check.method}), over the budget of "
                f"{check.budget_bytes:,} B. {budget_remedy(check.resource, check.needed_bytes, check.budget_bytes)}"
            )
    verdict = VERDICT_OK if not reasons else (VERDICT_FORCED if opts.force else VERDICT_NOT_SUPPORTED)
    fidelity = None
    if reference is not None and checked is not None:
        fidelity = measure_fidelity(converted.model, reference, checked, source)
    return TargetReport(
        target=profile.name,
        profile=profile.to_dict(),
        verdict=verdict,
        reasons=reasons,
        warnings=warnings,
        conversion=dict(converted.info),
        verification=verification.to_dict(),
        memory=memory.to_dict(),
        fit=fit,
        fidelity=fidelity,
        extra=extra,
    )


def fit_checks(profile: TargetProfile, memory: Any) -> list[FitCheck]:
    checks = [
        FitCheck("flash", memory.model_bytes, profile.memory.flash_budget_bytes, "measured: .tflite file size"),
        FitCheck(
            "ram",
            memory.activation_peak_bytes,
            profile.memory.ram_budget_bytes,
            "estimate: peak of live activation tensors",
        ),
    ]
    if profile.memory.param_cache_bytes:
        checks.append(
            FitCheck(
                "param_cache", memory.weights_bytes, profile.memory.param_cache_bytes, "measured: constant tensor bytes"
            )
        )
    return checks


def _measure_fidelity(model: bytes, reference: list, checked: CalibrationSet, source: SourceModel) -> dict[str, Any]:
    from ..analyze.fidelity import compare
    from ..analyze.litert_child import run_tflite_in_child

    inputs = fidelity_inputs(checked)
    count = inputs[0].shape[0]
    actual = run_tflite_in_child(model, inputs)
    names = [o.name for o in source.outputs] or [f"output_{i}" for i in range(len(actual))]
    if checked.role == "evaluation":
        what = f"{count} evaluation samples from {checked.source} ({checked.preprocessing})"
    else:
        what = f"the first {count} calibration samples (not held out; pass --eval for held-out accuracy)"
    how = f"{what}; float = {'Keras' if source.keras_model is not None else 'float TFLite'}, int8 = LiteRT on the host"
    labels = checked.labels[:count] if checked.labels is not None else None
    sizes = [int(np.prod(spec.shape[1:])) for spec in source.inputs]
    quant = _output_quantization(model)
    return compare(
        reference, actual, names[: len(actual)], how, labels=labels, input_sizes=sizes, output_quant=quant
    ).to_dict()


def _output_quantization(model: bytes) -> list[tuple[float, int] | None]:
    """(scale, zero point) of each int8 output, None for the others (float, int16)."""
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    return [
        (t.scale[0], t.zero_point[0] if t.zero_point else 0) if t.dtype in ("int8", "uint8") and t.scale else None
        for t in graph.output_tensors
    ]


def measure_fidelity(model: bytes, reference: list, checked: CalibrationSet, source: SourceModel) -> dict[str, Any]:
    """Fidelity of ``model`` on ``checked`` against ``reference``. Targets that got the same bytes (with
    ``all``: android-arm64, the Cortex-Ms, often the Edge TPU) share one measurement: it is keyed by the
    contents of everything it depends on, so a cached result is exactly the one a new run would give."""
    key = content_key(
        model, *fidelity_inputs(checked), *reference, checked.labels, checked.role, checked.source,
        checked.preprocessing, [o.name for o in source.outputs], source.keras_model is not None,
    )  # fmt: skip
    return memo(key, lambda: _measure_fidelity(model, reference, checked, source))


def fidelity_inputs(samples: CalibrationSet) -> list:
    """The inputs fidelity runs on: all evaluation samples, or the first calibration ones."""
    limit = None if samples.role == "evaluation" else FIDELITY_MAX_SAMPLES
    return [a[:limit] for a in samples.arrays]


def layer_error_rows(source: SourceModel, session: ConversionSession, model: bytes, checked: CalibrationSet):
    """Per-layer error of ``model`` against the float twin, or None when it cannot be measured."""
    from ..analyze.litert_child import layer_errors_in_child
    from .qat import qat_scheme

    if qat_scheme(source.keras_model) is not None:
        log.warning(
            "per-layer error not measured: a quantization-aware model has no float twin (its float conversion "
            "keeps the fake quantization as QUANTIZE/DEQUANTIZE pairs); the QAT check compares the int8 file "
            "with the model instead"
        )
        return None
    try:
        float_model, inputs = session.float_model(), [a[:LAYER_ERROR_SAMPLES] for a in checked.arrays]
        key = content_key("layer_errors", float_model, model, *inputs, sorted(source.layers.items()))
        return memo(key, lambda: layer_errors_in_child(float_model, model, inputs, source.layers))
    except EdgeportError as exc:
        log.warning("per-layer error not measured: %s", exc)
        return None


def layer_sizes(model: bytes, source: SourceModel) -> list[dict[str, Any]]:
    from ..analyze.size_breakdown import size_by_layer
    from ..verify.graph import TFLiteGraph

    return size_by_layer(TFLiteGraph.from_bytes(model), source.layers or None)
