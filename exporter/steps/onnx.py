"""ONNX for the targets that want it: one export shared by all of them, attached to each report.

ONNX is a default for some targets (android-arm64 writes both formats), so a failure there is kept as
a warning unless the user asked for ONNX explicitly, in which case it is the export's error.
"""

from __future__ import annotations

from typing import Any

from ..errors import EdgeportError, UsageError
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..report.report import VERDICT_OK, TargetReport
from .analysis import fidelity_inputs


def formats_for(profile: TargetProfile, opts: ExportOptions) -> tuple[str, ...]:
    """What to write for this target: --format when given (TFLite-only targets keep TFLite), else the profile's."""
    if opts.formats is None:
        return profile.formats
    if profile.formats == ("onnx",):
        return ("onnx",)
    return opts.formats


def export_onnx_once(source, profiles, opts, calibration, evaluation, work, progress) -> Any:
    """One ONNX export shared by every target that wants it (an error is kept when ONNX was only a default)."""
    wanted = [p for p in profiles if "onnx" in formats_for(p, opts)]
    if not wanted:
        return None
    explicit = opts.formats is not None or any(p.formats == ("onnx",) for p in wanted)
    if source.keras_model is None:
        error = UsageError("ONNX export needs a Keras model (.keras or .h5).", hint="Pass --format tflite.")
        if explicit:
            raise error
        return error
    from ..convert.onnx import export_onnx

    progress.step("convert", "exporting ONNX (float and int8 QDQ)")
    check = fidelity_inputs(evaluation) if evaluation is not None else None
    try:
        return export_onnx(
            source,
            work / "onnx",
            calibration=calibration,
            opset=opts.onnx_opset,
            dynamic_batch=opts.onnx_dynamic_batch,
            per_channel=True if opts.per_channel is None else opts.per_channel,
            calibrate_method=opts.onnx_calibrate,
            check_inputs=check,
            check_inputs_from=f"{evaluation.count} evaluation samples from {evaluation.source}" if evaluation else None,
        )
    except EdgeportError as exc:
        if explicit:
            raise
        return exc


def attach_onnx(report: TargetReport, profile: TargetProfile, opts: ExportOptions, onnx: Any) -> None:
    if "onnx" not in formats_for(profile, opts) or onnx is None:
        return
    if isinstance(onnx, Exception):
        report.warnings.append(f"ONNX not written: {onnx}")
        return
    report.extra["onnx"] = onnx.to_dict()


def onnx_only_report(profile: TargetProfile, onnx: Any) -> TargetReport:
    """The generic ONNX target: no TFLite model, the ONNX files and their checks are the result."""
    int8 = onnx.int8_model
    fidelity = int8.check.to_dict().get("fidelity") if int8 is not None else None
    return TargetReport(
        target=profile.name,
        profile=profile.to_dict(),
        verdict=VERDICT_OK,
        conversion={
            "scheme": "ONNX: float (tf2onnx) and int8 QDQ (onnxruntime quantize_static)",
            "converter": onnx.to_dict().get("converter"),
        },
        memory={"model_bytes": int8.size_bytes if int8 is not None else onnx.float_model.size_bytes},
        fidelity=fidelity,
    )
