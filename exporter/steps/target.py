"""One target's export: convert, analyze, guard, the form its flash gets, and the device's own checks.

The driver (exporter.pipeline) calls :func:`export_target` once per TFLite target, in profile order,
while the ONNX export runs beside it; everything here is per target, nothing is written.
"""

from __future__ import annotations

import logging

from ..calibrate.dataset import CalibrationSet
from ..compress.cluster import is_clustered
from ..convert.session import ConversionSession, Converted
from ..devices import prepare
from ..errors import EdgeportError
from ..guard import GuardSpec
from ..load.model import SourceModel
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..progress import Progress
from ..report.report import TargetReport
from .analysis import analyze, config_for, fidelity_inputs, layer_error_rows, layer_sizes
from .converting import convert_for_target
from .flash import clustering_buys, compact_for_flash, pack_for_tflm, vela_clustering
from .guarding import guard_target
from .qat import check_qat_outputs

log = logging.getLogger(__name__)


def export_target(
    source: SourceModel,
    profile: TargetProfile,
    session: ConversionSession | None,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
    guard: GuardSpec,
    progress: Progress,
) -> tuple[TargetReport, bytes]:
    """Convert (or take the given .tflite), analyze, and apply the accuracy guard for one target."""
    dense_choice = None
    if session is None:
        converted = Converted(source.tflite_bytes, {"scheme": "given .tflite (not reconverted)"})
    else:
        converted, dense_choice = convert_for_target(source, profile, session, checked, reference, opts)
    report = analyze(source, profile, converted, checked, reference, opts)
    check_qat_outputs(report, source, converted.model, fidelity_inputs(checked) if checked is not None else None)
    if dense_choice is not None:
        report.extra["dense_quantization"] = dense_choice.to_dict()
    want_layers = (
        session is not None and checked is not None and (opts.per_layer or guard.active or opts.eval is not None)
    )
    layer_rows = layer_error_rows(source, session, converted.model, checked) if want_layers else None
    if guard.active and session is not None:
        report, converted = guard_target(
            guard, source, profile, session, converted, report, checked, reference, opts, layer_rows, progress
        )
        if layer_rows is not None and report.conversion.get("scheme") != converted.info.get("scheme"):
            layer_rows = layer_error_rows(source, session, converted.model, checked)
    if layer_rows is not None:
        report.extra["layer_errors"] = layer_rows.to_dict()
    report.extra["size_by_layer"] = layer_sizes(converted.model, source)
    _name_flash_consumers(report)
    model = converted.model
    if profile.is_mcu and session is not None:
        model = compact_for_flash(report, model)
    plain = model  # int8 tensors, as analysed: what the sparsity figures read
    if profile.is_mcu:
        model = pack_for_tflm(
            report,
            profile,
            model,
            session.calibration if session is not None else checked,
            opts,
            source.keras_model is not None and is_clustered(source.keras_model),
            converted=session is not None,
        )
        vela_clustering(report, profile, session, config_for(profile, opts), model)
    clustering_buys(report, profile, model)
    prepare(profile, model, report, opts)
    _attach_sparsity(report, profile, converted.model, plain, source)
    return report, model


def _name_flash_consumers(report: TargetReport) -> None:
    """An over-flash reason names the Keras layers that hold most of the weights (what to shrink first)."""
    rows = sorted((r for r in report.extra.get("size_by_layer") or [] if r.get("bytes")), key=lambda r: -r["bytes"])
    if not rows:
        return
    biggest = "; ".join(f"layer {r['layer']} {r['bytes']:,} B" for r in rows[:3])
    for index, reason in enumerate(report.reasons):
        if reason.startswith("flash needs ") and "Biggest" not in reason and " To fit (" in reason:
            head, tail = reason.split(" To fit (", 1)
            report.reasons[index] = f"{head} Biggest layers: {biggest}. To fit ({tail}"


def _attach_sparsity(
    report: TargetReport, profile: TargetProfile, named: bytes, model: bytes, source: SourceModel
) -> None:
    """Per target: the pruned zeros that survived int8, and what they buy there (exporter.compress.sparsity)."""
    from ..compress.sparsity import sparsity_section

    pruning = source.pruning
    try:
        section = sparsity_section(profile, model, source.keras_model, source.layers, named=named)
    except EdgeportError as exc:
        log.warning("sparsity not analysed: %s", exc)
        section = None
    if section is None and pruning is None:
        return
    section = section or {
        "buys": ["no sparse weights: the model is dense (channel pruning makes it smaller, not sparser)"]
    }
    if pruning is not None:
        section["pruning"] = pruning
    survived = (section.get("zeros_survived") or {}).get("fraction")
    if survived is not None and survived < 0.99:
        report.warnings.append(f"Only {survived:.1%} of the pruned zeros are exact zeros in the int8 model.")
    report.extra["sparsity"] = section
