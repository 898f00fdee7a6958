"""The accuracy guard's last remedy: quantization-aware training on --train, for one target.

Post-training remedies (more samples, per-tensor weights, 16x8 activations, float layers) only change how
the trained weights are converted; integer-only targets allow no float layers at all. When none of them
passes and labelled --train data was given, the model is trained as that target's int8 kernels compute
it (:mod:`exporter.compress.qat`), converted with the scheme it trained, and judged like every other
attempt: against the original float model's outputs and accuracy on the same samples.
"""

from __future__ import annotations

from dataclasses import replace

from ..calibrate.dataset import CalibrationSet
from ..convert.session import ConversionSession, Converted
from ..errors import EdgeportError
from ..guard import Attempt, GuardSpec
from ..load.model import SourceModel
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..progress import Progress
from ..report.report import TargetReport

#: The attempt's name in report.json ``guard.attempts``.
NAME = "quantization-aware training"


def qat_applies(opts: ExportOptions, source: SourceModel) -> bool:
    """Labelled training data, a Keras model that is not QAT already: the remedy can run."""
    from ..compress.qat import is_qat_model

    return opts.train is not None and source.keras_model is not None and not is_qat_model(source.keras_model)


def qat_attempt(
    spec: GuardSpec,
    source: SourceModel,
    profile: TargetProfile,
    session: ConversionSession,
    report: TargetReport,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
    progress: Progress,
) -> tuple[Attempt, TargetReport | None, Converted | None]:
    """Train, convert and measure; the attempt (kept when it passes) with its report and model."""
    from ..compress.api import load_labelled
    from ..compress.qat import QatSpec, quantization_aware_training
    from .analysis import analyze, config_for, fidelity_inputs
    from .qat import check_qat_outputs, follow_qat_scheme
    from .rewrite import preprocessing_options

    base = config_for(profile, opts)
    dense = (report.extra.get("dense_quantization") or {}).get("chosen")
    qat_spec = QatSpec(
        epochs=max(opts.epochs, 1),
        per_tensor=not base.per_channel,
        dense_per_tensor=base.per_tensor_dense or dense == "per-tensor",
        seed=opts.seed,
    )
    detail = f"{qat_spec.epochs} epoch(s) on --train, then converted with the scheme it trained"
    try:
        train = load_labelled(
            opts.train, source.inputs, opts.train_samples, opts.seed, "Training", **preprocessing_options(opts)
        )
        progress.step("guard", f"{profile.name}: trying {NAME} ({qat_spec.epochs} epoch(s))")
        model, trained = quantization_aware_training(source.keras_model, train, qat_spec)
        qat_source = replace(source, keras_model=model, notes=[], reference_cache={})
        qat_opts = follow_qat_scheme(qat_source, replace(opts, dense_quant="auto"))
        work = session.work / f"qat_{profile.name}"
        work.mkdir(parents=True, exist_ok=True)
        converted = ConversionSession(qat_source, session.calibration, work, progress).convert(
            config_for(profile, qat_opts)
        )
        converted.info["qat"] = trained.summary()
        attempt_report = analyze(qat_source, profile, converted, checked, reference, qat_opts)
        inputs = fidelity_inputs(checked) if checked is not None else None
        check_qat_outputs(attempt_report, qat_source, converted.model, inputs)
    except EdgeportError as exc:
        return Attempt(NAME, detail, base, None, False, False, note=f"not run: {exc}"), None, None
    value = spec.measure(attempt_report.fidelity)
    verified = not attempt_report.reasons
    attempt = Attempt(NAME, detail, base, value, spec.passes(value) and verified, verified)
    attempt.kept = attempt.passed
    return attempt, attempt_report, converted
