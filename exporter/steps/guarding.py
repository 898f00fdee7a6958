"""Run the accuracy guard for one target: convert each fallback, analyze it, keep the first that passes.

exporter.guard decides *which* remedies to try and in what order; this module is the part that needs
the conversion session and the analysis, so the policy stays testable without TensorFlow.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from ..calibrate.dataset import CalibrationSet
from ..convert.session import ConversionSession, Converted
from ..convert.tflite import QuantizationConfig
from ..errors import EdgeportError, UsageError
from ..guard import GuardSpec
from ..load.model import SourceModel
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..progress import Progress
from ..report.report import VERDICT_FORCED, VERDICT_NOT_SUPPORTED, TargetReport
from .analysis import analyze, config_for


def check_guard_inputs(guard: GuardSpec, checked: CalibrationSet | None) -> None:
    if guard.max_accuracy_drop_pp is not None and (checked is None or checked.labels is None):
        raise UsageError(
            "--max-accuracy-drop needs labelled evaluation data.",
            hint="Pass --eval data.npz:x,y (or an image folder with class sub-folders), or guard with --min-agreement PCT.",
        )
    if guard.active and checked is None:
        raise UsageError("The accuracy guard needs data to measure on.", hint="Pass --calib and --eval.")


def guard_target(
    spec: GuardSpec,
    source: SourceModel,
    profile: TargetProfile,
    session: ConversionSession,
    converted: Converted,
    report: TargetReport,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
    layer_rows: Any,
    progress: Progress,
) -> tuple[TargetReport, Converted]:
    """Run the accuracy guard's fallbacks for a target (see exporter.guard) and keep what passes."""
    from .. import guard as accuracy_guard
    from .guard_qat import qat_applies, qat_attempt

    if report.reasons:
        report.extra["guard"] = {
            "requirement": spec.describe(),
            "passed": False,
            "attempts": [],
            "note": "not run: the model does not run on this target",
        }
        return report, converted
    candidates: dict[QuantizationConfig, tuple[TargetReport, Converted]] = {}

    def evaluate(config: QuantizationConfig) -> tuple[float | None, bool, str]:
        progress.step("guard", f"{profile.name}: trying {config.describe()}")
        try:
            attempt = session.convert(config)
        except EdgeportError as exc:
            return None, False, f"conversion failed: {exc}"
        attempt_report = analyze(source, profile_for(profile, config), attempt, checked, reference, opts)
        candidates[config] = (attempt_report, attempt)
        note = "; ".join(attempt_report.reasons)
        return spec.measure(attempt_report.fidelity), not attempt_report.reasons, note

    def worst(count: int) -> list[accuracy_guard.WorstLayer]:
        return worst_layers(layer_rows, source, count)

    base = config_for(profile, opts)
    plain = (spec.measure(report.fidelity), True)
    steps = partial(
        accuracy_guard.plan,
        profile,
        base,
        calib_count=session.calibration.count,
        calib_available=session.calibration.available,
        worst=worst,
    )
    outcome = accuracy_guard.run(spec, profile, base, plain, evaluate, steps)
    kept = outcome.kept
    if kept is None and qat_applies(opts, source):  # the last remedy: train the int8 model itself
        attempt, qat_report, qat_converted = qat_attempt(
            spec, source, profile, session, report, checked, reference, opts, progress
        )
        outcome.attempts.append(attempt)
        if attempt.kept and qat_report is not None and qat_converted is not None:
            report, converted, kept = qat_report, qat_converted, attempt
            report.warnings.append(
                f"Accuracy guard: post-training int8 missed {spec.describe()}; kept {attempt.name} "
                f"({attempt.detail}; {qat_converted.info['qat']})."
            )
    if kept is not None and kept.config != base:
        report, converted = candidates[kept.config]
        report.warnings.append(
            f"Accuracy guard: plain int8 missed {spec.describe()}; kept '{kept.name}' ({kept.detail})."
        )
    elif kept is None:
        report.reasons.append(outcome.failure_reason())
        report.verdict = VERDICT_FORCED if opts.force else VERDICT_NOT_SUPPORTED
    report.extra["guard"] = outcome.to_dict()
    return report, converted


def profile_for(profile: TargetProfile, config: QuantizationConfig) -> TargetProfile:
    """16x8 models have int16 I/O: verify them against a profile that expects it."""
    if not config.int16_activations:
        return profile
    quant = replace(
        profile.quantization, io_dtype="int16", io_dtypes_allowed=(*profile.quantization.io_dtypes_allowed, "int16")
    )
    return replace(profile, quantization=quant)


def worst_layers(rows: Any, source: SourceModel, count: int) -> list:
    from ..guard import WorstLayer

    if rows is None:
        return []
    grouped: dict[str, list[str]] = {}
    for row in rows.rows:
        if row.layer:
            grouped.setdefault(row.layer, []).append(row.tensor)
    layers = list(grouped)[:count]
    return [WorstLayer(name, source.layers.get(name, "?"), tuple(grouped[name])) for name in layers]
