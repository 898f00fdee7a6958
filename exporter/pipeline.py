"""The export driver: load -> calibrate -> convert -> verify -> analyze -> report, as a flat list of steps.

Each step is a call into the stage's own package; this module only sequences them, shares work
between targets (one load, one calibration, one conversion per distinct quantization config) and
writes the outputs atomically at the very end, so a failure anywhere leaves no file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import ensure_dir, scratch_dir, write_bytes, write_text
from .calibrate.dataset import CalibrationSet
from .convert.session import ConversionSession, Converted
from .convert.tflite import QuantizationConfig
from .devices import after_write, prepare, report_section
from .errors import CalibrationDataError, EdgeportError, InputModelError, NotSupportedError, OutputPathError, UsageError
from .guard import GuardSpec
from .load.model import SourceModel
from .options import ExportOptions
from .profiles import TargetProfile, load_profiles
from .progress import Progress
from .report.report import (
    VERDICT_FORCED,
    VERDICT_NOT_SUPPORTED,
    VERDICT_OK,
    Artifact,
    FitCheck,
    TargetReport,
    render_markdown,
    render_summary,
)
from .tfimport import import_tensorflow_quietly

log = logging.getLogger(__name__)

MODEL_FILE = "model_int8.tflite"
#: Inputs used for the float-vs-int8 agreement check at export time (issue: top class agrees).
FIDELITY_MAX_SAMPLES = 200
#: Samples the per-layer error runs on (every tensor of both models is kept per sample).
LAYER_ERROR_SAMPLES = 50


@dataclass
class ExportResult:
    """What :func:`export` returns: one report per target, plus the shared facts."""

    reports: list[TargetReport]
    common: dict[str, Any]
    output_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    @property
    def exit_code(self) -> int:
        return (
            0 if all(r.verdict in (VERDICT_OK, VERDICT_FORCED) for r in self.reports) else NotSupportedError.exit_code
        )

    def summary(self) -> str:
        return render_summary(self.reports)

    def report(self, target: str) -> TargetReport:
        return next(r for r in self.reports if r.target == target)


def export(
    model: str | os.PathLike[str],
    target: str | list[str] = "all",
    calib: str | None = None,
    options: ExportOptions | None = None,
    *,
    progress: Progress | None = None,
    **overrides: Any,
) -> ExportResult:
    """Export ``model`` for each target; see the README's Python API section.

    ``overrides`` are :class:`ExportOptions` fields (``output_dir=``, ``calib_samples=``, ...).
    Raises an :class:`~exporter.errors.EdgeportError` for bad input or failed conversion; a model that
    does not fit or is not supported is *returned* with verdict "not supported" (the CLI exits 3).
    """
    from .load import load_model

    opts = _options(options, calib, overrides)
    progress = progress or Progress(enabled=False)
    model_path = Path(model)
    profiles = [_with_budgets(p, opts) for p in load_profiles(target if isinstance(target, str) else ",".join(target))]

    if not model_path.exists():
        raise InputModelError(f"Model file {model_path} does not exist.", hint="Check the path.")
    out_dirs = _plan_outputs(model_path, profiles, opts)
    if model_path.suffix.lower() != ".tflite":
        progress.step("load", "importing TensorFlow")
        import_tensorflow_quietly(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    progress.step("load", f"loading {model_path.name}")
    source = load_model(model_path, input_shape=opts.input_shape, unsafe=opts.unsafe)
    if opts.edgetpu_compat:
        _apply_edgetpu_compat(source)
    if opts.prune is not None:
        _apply_prune(source, opts, progress)

    progress.step("calibrate", "reading calibration data")
    calibration = None if source.is_tflite else _calibrate(source, opts)
    evaluation = _evaluation(source, opts, calibration)
    checked = evaluation or calibration
    guard = GuardSpec(opts.max_accuracy_drop, opts.min_agreement)
    _check_guard_inputs(guard, checked)

    with scratch_dir() as work:
        session = None
        if not source.is_tflite:
            recalibrate = partial(_recalibrate, source, opts, evaluation)
            session = ConversionSession(source, calibration, work, progress, recalibrate)
        reference = _reference_outputs(source, checked, session)
        onnx = _export_onnx(source, profiles, opts, calibration, evaluation, work, progress)
        results = []
        for profile in profiles:
            progress.step("verify", f"{profile.name}: checking ops, dtypes, memory and fidelity")
            if "tflite" in _formats(profile, opts):
                report, model = _export_target(source, profile, session, checked, reference, opts, guard, progress)
            else:
                report, model = _onnx_only_report(profile, onnx), None
            _attach_onnx(report, profile, opts, onnx)
            if opts.bench:
                _benchmark(report, profile, model, onnx, opts, progress)
            if opts.bench_device and model is not None and report.verdict != VERDICT_NOT_SUPPORTED:
                _benchmark_on_device(report, profile, model, opts, work, progress)
            results.append((report, model))
        common = _common(source, calibration, evaluation)
        progress.step("write", "writing outputs")
        for (report, model), profile in zip(results, profiles, strict=True):
            _write_target(report, model, out_dirs[profile.name], common, profile, source, onnx, opts)
        if opts.keep_workdir:
            shutil.copytree(work, Path(out_dirs[profiles[0].name]) / "_work", dirs_exist_ok=True)
    progress.done()
    return ExportResult(reports=[r for r, _ in results], common=common, output_dirs=out_dirs)


# --- steps ---------------------------------------------------------------------------------------


def _options(options: ExportOptions | None, calib: str | None, overrides: dict[str, Any]) -> ExportOptions:
    base = options or ExportOptions()
    fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
    if calib is not None:
        fields["calib"] = calib
    fields.update(overrides)
    if fields.get("output_dir") is not None:
        fields["output_dir"] = Path(fields["output_dir"])
    return ExportOptions(**fields)


def _plan_outputs(model_path: Path, profiles: list[TargetProfile], opts: ExportOptions) -> dict[str, Path]:
    """Where each target's files go; refuses to write over the input before any work is done."""
    if opts.output_dir is None:
        root = Path("edgeport-out") / (model_path.name if model_path.is_dir() else model_path.stem)
        dirs = {p.name: root / p.name for p in profiles}
    elif len(profiles) == 1:
        dirs = {profiles[0].name: opts.output_dir}
    else:
        dirs = {p.name: opts.output_dir / p.name for p in profiles}
    source_path = model_path.resolve()
    for directory in dirs.values():
        for name in (MODEL_FILE, "report.json", "report.md"):
            if (directory / name).resolve() == source_path:
                raise OutputPathError(
                    f"The output {directory / name} is the input model itself; edgeport never overwrites its input.",
                    hint="Choose another output directory with -o.",
                )
        if directory.resolve() == source_path:
            raise OutputPathError(
                f"The output directory {directory} is the input model; edgeport never overwrites its input.",
                hint="Choose another output directory with -o.",
            )
        _check_writable(directory)
    return dirs


def _check_writable(directory: Path) -> None:
    """Fail before the minutes of conversion, not after, when the output cannot be written."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"The output path {probe} exists and is not a directory.", hint="Choose another -o.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"Output directory {probe} is not writable.", hint="Choose a writable directory with -o.")


def _calibrate(source: SourceModel, opts: ExportOptions) -> CalibrationSet:
    from .calibrate import load_calibration, synthetic_calibration

    if opts.calib is None:
        raise CalibrationDataError(
            "Full-integer int8 export needs representative calibration data, and none was given.",
            hint="Pass --calib DATA (.npy, .npz[:key], an image folder or module:function), "
            "or --calib synthetic to accept unrepresentative random data.",
        )
    if opts.calib == "synthetic":
        return synthetic_calibration(source.inputs, samples=opts.calib_samples, seed=opts.seed)
    return load_calibration(
        opts.calib,
        source.inputs,
        samples=opts.calib_samples,
        seed=opts.seed,
        input_range=opts.input_range,
        mean=list(opts.mean) if opts.mean else None,
        std=list(opts.std) if opts.std else None,
    )


def _evaluation(source: SourceModel, opts: ExportOptions, calibration: CalibrationSet | None) -> CalibrationSet | None:
    """Held-out samples for the fidelity report, disjoint from calibration unless allowed otherwise.

    When ``--eval`` and ``--calib`` name the same file or folder, the calibration samples are excluded
    from the evaluation subset by index, so accuracy is never measured on the data that set the ranges.
    """
    if opts.eval is None:
        return None
    from .calibrate import load_calibration

    exclude = None
    if calibration is not None and not opts.allow_overlap and _same_source(opts.eval, opts.calib):
        exclude = list(calibration.indices)
    evaluation = load_calibration(
        opts.eval,
        source.inputs,
        samples=opts.eval_samples,
        seed=opts.seed + 1,
        input_range=opts.input_range,
        mean=list(opts.mean) if opts.mean else None,
        std=list(opts.std) if opts.std else None,
        exclude=exclude,
    )
    evaluation.role = "evaluation"
    if exclude is not None:
        evaluation.preprocessing = (evaluation.preprocessing + "; " if evaluation.preprocessing else "") + (
            f"disjoint from the {len(exclude)} calibration samples (same source, their indices excluded)"
        )
    elif opts.allow_overlap:
        evaluation.preprocessing = (evaluation.preprocessing + "; " if evaluation.preprocessing else "") + (
            "may overlap the calibration samples (--allow-overlap)"
        )
    else:
        evaluation.preprocessing = (evaluation.preprocessing + "; " if evaluation.preprocessing else "") + (
            "from a different source than the calibration data"
        )
    return evaluation


def _same_source(a: str | None, b: str | None) -> bool:
    """Do two data specs read the same file or folder (``x.npz:x`` and ``x.npz:x,y`` do)?"""
    if not a or not b or "synthetic" in (a, b):
        return False

    def base(spec: str) -> Path:
        path = Path(spec).expanduser()
        if not path.exists() and ":" in spec:
            path = Path(spec.rsplit(":", 1)[0]).expanduser()
        return path.resolve()

    return base(a) == base(b)


def _formats(profile: TargetProfile, opts: ExportOptions) -> tuple[str, ...]:
    """What to write for this target: --format when given (TFLite-only targets keep TFLite), else the profile's."""
    if opts.formats is None:
        return profile.formats
    if profile.formats == ("onnx",):
        return ("onnx",)
    return opts.formats


def _apply_edgetpu_compat(source: SourceModel) -> None:
    """--edgetpu-compat: replace activations the Edge TPU cannot map (GELU, hard-swish) with ReLU6."""
    if source.keras_model is None:
        raise UsageError(
            "--edgetpu-compat rewrites Keras layers; it needs a .keras or .h5 model.", hint="Drop the flag."
        )
    from .devices.edgetpu import edgetpu_compat_fixes

    source.keras_model, changes = edgetpu_compat_fixes(source.keras_model)
    source.layers = {layer.name: type(layer).__name__ for layer in source.keras_model.layers} | source.layers
    source.notes.extend(f"--edgetpu-compat: {change}" for change in changes)


def _apply_prune(source: SourceModel, opts: ExportOptions, progress: Progress) -> None:
    """--prune: prune (and with --train fine-tune) a copy of the loaded Keras model before calibration."""
    if source.keras_model is None:
        raise UsageError("--prune rewrites Keras weights; it needs a .keras or .h5 model.", hint="Drop --prune.")
    from .compress import PruneSpec, prune_model
    from .compress.api import load_labelled

    spec = PruneSpec.parse(opts.prune) if isinstance(opts.prune, str) else opts.prune
    pre = {"input_range": opts.input_range, "mean": list(opts.mean or []) or None, "std": list(opts.std or []) or None}
    train = None
    if spec.train:
        train = load_labelled(spec.train, source.inputs, spec.train_samples, spec.seed, "Training", **pre)
    evaluation = None
    if opts.eval is not None:
        try:
            evaluation = load_labelled(opts.eval, source.inputs, opts.eval_samples, opts.seed + 1, "Evaluation", **pre)
        except CalibrationDataError as exc:  # unlabelled --eval: prune anyway, without accuracy per step
            log.info("pruning accuracy not measured: %s", exc)
    progress.step("prune", spec.describe())
    source.keras_model, pruned = prune_model(
        source.keras_model, spec, train=train, eval=evaluation, verbose=progress.enabled
    )
    source.pruning = pruned.to_dict()  # read by _attach_sparsity for every target's report
    source.notes.append(f"--prune: {spec.describe()} (the input file is unchanged)")


def _attach_sparsity(
    report: TargetReport, profile: TargetProfile, named: bytes, model: bytes, source: SourceModel
) -> None:
    """Per target: the pruned zeros that survived int8, and what they buy there (exporter.compress.sparsity)."""
    from .compress.sparsity import sparsity_section

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


def _export_onnx(source, profiles, opts, calibration, evaluation, work, progress) -> Any:
    """One ONNX export shared by every target that wants it (an error is kept when ONNX was only a default)."""
    wanted = [p for p in profiles if "onnx" in _formats(p, opts)]
    if not wanted:
        return None
    explicit = opts.formats is not None or any(p.formats == ("onnx",) for p in wanted)
    if source.keras_model is None:
        error = UsageError("ONNX export needs a Keras model (.keras or .h5).", hint="Pass --format tflite.")
        if explicit:
            raise error
        return error
    from .convert.onnx import export_onnx

    progress.step("convert", "exporting ONNX (float and int8 QDQ)")
    check = _limit(evaluation) if evaluation is not None else None
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


def _attach_onnx(report: TargetReport, profile: TargetProfile, opts: ExportOptions, onnx: Any) -> None:
    if "onnx" not in _formats(profile, opts) or onnx is None:
        return
    if isinstance(onnx, Exception):
        report.warnings.append(f"ONNX not written: {onnx}")
        return
    report.extra["onnx"] = onnx.to_dict()


def _onnx_only_report(profile: TargetProfile, onnx: Any) -> TargetReport:
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


def _benchmark(
    report: TargetReport,
    profile: TargetProfile,
    model: bytes | None,
    onnx: Any,
    opts: ExportOptions,
    progress: Progress,
) -> None:
    """--bench: time the written model(s) through the target's own interpreter on this host."""
    from .benchmark import benchmark

    results = []
    candidates: list[tuple[str, Any]] = []
    if model is not None and report.verdict != VERDICT_NOT_SUPPORTED:
        candidates.append(("tflite", model))
    if "onnx" in report.extra and onnx is not None and not isinstance(onnx, Exception):
        for onnx_model in (onnx.float_model, onnx.int8_model):
            if onnx_model is not None:
                candidates.append((f"onnx-{onnx_model.kind}", str(onnx_model.path)))
    for label, candidate in candidates:
        progress.step("bench", f"{profile.name}: timing {label} on this host")
        try:
            result = benchmark(candidate, profile, runs=opts.bench_runs)
        except NotSupportedError as exc:
            report.reasons.append(f"Benchmark: {exc}")
            report.verdict = VERDICT_FORCED if opts.force else VERDICT_NOT_SUPPORTED
            continue
        entry = result.to_dict()
        entry["model"] = label
        results.append(entry)
        arena = entry.get("arena") or {}
        if label == "tflite" and arena.get("bytes"):
            _use_measured_arena(report, profile, int(arena["bytes"]), opts)
    if results:
        report.extra["benchmark"] = results


def _benchmark_on_device(
    report: TargetReport, profile: TargetProfile, model: bytes, opts: ExportOptions, work: Path, progress: Progress
) -> None:
    """--bench-device: benchmark_model on the phone (or emulator); numbers land beside the host ones."""
    if profile.runtime.name != "litert":
        report.warnings.append(
            f"--bench-device: skipped for {profile.name}; only LiteRT (phone) targets run benchmark_model."
        )
        return
    from .devices.android import bench_on_device

    path = work / f"{profile.name}_device.tflite"
    path.write_bytes(model)
    progress.step("bench", f"{profile.name}: benchmark_model on device {opts.bench_device}")
    result = bench_on_device(
        path, profile, opts.bench_device, num_runs=opts.bench_runs, benchmark_binary=opts.benchmark_binary
    )
    report.extra["device_benchmark"] = result.to_dict()


def _use_measured_arena(report: TargetReport, profile: TargetProfile, arena: int, opts: ExportOptions) -> None:
    """Replace the RAM estimate by TFLite Micro's measured arena: a measurement beats an estimate."""
    for index, check in enumerate(report.fit):
        if check.resource == "ram" and "tensor arena" not in check.method:  # MCU targets: already arena + I/O
            measured = FitCheck(
                "ram", arena, profile.memory.ram_budget_bytes, "measured: TFLite Micro arena on the host (x86-64)"
            )
            report.fit[index] = measured
            if not measured.fits:
                report.reasons.append(
                    f"ram needs {arena:,} B ({measured.method}), over the budget of {measured.budget_bytes:,} B."
                )
                report.verdict = VERDICT_FORCED if opts.force else VERDICT_NOT_SUPPORTED


def _recalibrate(
    source: SourceModel, opts: ExportOptions, evaluation: CalibrationSet | None, samples: int
) -> CalibrationSet:
    """Calibration with another sample count (the guard's first fallback), still disjoint from evaluation."""
    from .calibrate import load_calibration

    exclude = list(evaluation.indices) if evaluation is not None and _same_source(opts.eval, opts.calib) else None
    return load_calibration(
        opts.calib,
        source.inputs,
        samples=samples,
        seed=opts.seed,
        input_range=opts.input_range,
        mean=list(opts.mean) if opts.mean else None,
        std=list(opts.std) if opts.std else None,
        exclude=exclude,
    )


def _check_guard_inputs(guard: GuardSpec, checked: CalibrationSet | None) -> None:
    if guard.max_accuracy_drop_pp is not None and (checked is None or checked.labels is None):
        raise UsageError(
            "--max-accuracy-drop needs labelled evaluation data.",
            hint="Pass --eval data.npz:x,y (or an image folder with class sub-folders), or guard with --min-agreement PCT.",
        )
    if guard.active and checked is None:
        raise UsageError("The accuracy guard needs data to measure on.", hint="Pass --calib and --eval.")


def _config_for(profile: TargetProfile, opts: ExportOptions) -> QuantizationConfig:
    io = opts.io_dtype or profile.quantization.io_dtype
    per_channel = profile.quantization.per_channel if opts.per_channel is None else opts.per_channel
    per_tensor_dense = profile.is_mcu and per_channel and opts.dense_quant == "per-tensor"
    return QuantizationConfig(io_dtype=io, per_channel=per_channel, per_tensor_dense=per_tensor_dense)


def _reference_outputs(source: SourceModel, checked: CalibrationSet | None, session: ConversionSession | None):
    """Float outputs on the checked samples: Keras when we have it, else the float TFLite twin."""
    if checked is None or session is None:
        return None
    from .analyze.inference import run_reference

    float_model = session.float_model() if source.keras_model is None else None
    return run_reference(source, _limit(checked), float_model)


def _limit(samples: CalibrationSet) -> list:
    """The inputs fidelity runs on: all evaluation samples, or the first calibration ones."""
    limit = None if samples.role == "evaluation" else FIDELITY_MAX_SAMPLES
    return [a[:limit] for a in samples.arrays]


def _export_target(
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
        converted, dense_choice = _convert_for_target(source, profile, session, checked, reference, opts)
    report = _analyze(source, profile, converted, checked, reference, opts)
    if dense_choice is not None:
        report.extra["dense_quantization"] = dense_choice.to_dict()
    want_layers = (
        session is not None and checked is not None and (opts.per_layer or guard.active or opts.eval is not None)
    )
    layer_rows = _layer_errors(source, session, converted.model, checked) if want_layers else None
    if guard.active and session is not None:
        report, converted = _guard(
            guard, source, profile, session, converted, report, checked, reference, opts, layer_rows, progress
        )
        if layer_rows is not None and report.conversion.get("scheme") != converted.info.get("scheme"):
            layer_rows = _layer_errors(source, session, converted.model, checked)
    if layer_rows is not None:
        report.extra["layer_errors"] = layer_rows.to_dict()
    report.extra["size_by_layer"] = _size_by_layer(converted.model, source)
    model = converted.model
    if profile.is_mcu and session is not None:
        model = _compact_for_flash(report, model)
    prepare(profile, model, report, opts)
    _attach_sparsity(report, profile, converted.model, model, source)
    return report, model


def _convert_for_target(
    source: SourceModel,
    profile: TargetProfile,
    session: ConversionSession,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
) -> tuple[Converted, Any]:
    """The target's conversion; on an MCU with per-channel Dense weights, per-tensor Dense is converted
    too and --dense-quant decides on both models' fidelity (exporter.devices.cortex_m.dense_quant)."""
    config = _config_for(profile, opts)
    if not profile.is_mcu or not config.per_channel:
        return session.convert(config), None
    from .devices.cortex_m import dense_quant
    from .devices.cortex_m.dense_quant import Candidate, decide
    from .verify.graph import TFLiteGraph

    per_channel = session.convert(replace(config, per_tensor_dense=False))
    saving = dense_quant.per_channel_dense_bytes(TFLiteGraph.from_bytes(per_channel.model))
    if not saving:
        return per_channel, None
    if opts.dense_quant == "auto" and saving < dense_quant.MIN_SAVING_BYTES:
        return per_channel, dense_quant.not_tried(Candidate("per-channel", len(per_channel.model), None), saving)
    per_tensor = session.convert(replace(config, per_tensor_dense=True))

    def candidate(scheme: str, converted: Converted) -> Candidate:
        measured = reference is not None and checked is not None
        return Candidate(
            scheme, len(converted.model), _fidelity(converted.model, reference, checked, source) if measured else None
        )

    choice = decide(opts.dense_quant, candidate("per-channel", per_channel), candidate("per-tensor", per_tensor))
    return (per_tensor if choice.chosen == "per-tensor" else per_channel), choice


def _with_budgets(profile: TargetProfile, opts: ExportOptions) -> TargetProfile:
    """--flash-budget / --ram-budget replace the profile's budgets (the report shows the values used)."""
    if opts.flash_budget is None and opts.ram_budget is None:
        return profile
    memory = replace(
        profile.memory,
        flash_budget_bytes=opts.flash_budget if opts.flash_budget is not None else profile.memory.flash_budget_bytes,
        ram_budget_bytes=opts.ram_budget if opts.ram_budget is not None else profile.memory.ram_budget_bytes,
    )
    return replace(profile, memory=memory)


def _compact_for_flash(report: TargetReport, model: bytes) -> bytes:
    """MCU flash: drop what TFLite Micro never reads (after analysis, which uses the full names)."""
    from .convert.compact import compact

    model, compaction = compact(model)
    if compaction.saved:
        report.conversion["compaction"] = compaction.describe()
        report.memory["model_bytes"] = len(model)
        for check in report.fit:
            if check.resource == "flash":
                check.needed_bytes = len(model)
    return model


def _guard(
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
    from . import guard as accuracy_guard

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
        attempt_report = _analyze(source, _profile_for(profile, config), attempt, checked, reference, opts)
        candidates[config] = (attempt_report, attempt)
        note = "; ".join(attempt_report.reasons)
        return spec.measure(attempt_report.fidelity), not attempt_report.reasons, note

    def worst(count: int) -> list[accuracy_guard.WorstLayer]:
        return _worst_layers(layer_rows, source, count)

    base = _config_for(profile, opts)
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


def _profile_for(profile: TargetProfile, config: QuantizationConfig) -> TargetProfile:
    """16x8 models have int16 I/O: verify them against a profile that expects it."""
    if not config.int16_activations:
        return profile
    quant = replace(
        profile.quantization, io_dtype="int16", io_dtypes_allowed=(*profile.quantization.io_dtypes_allowed, "int16")
    )
    return replace(profile, quantization=quant)


def _layer_errors(source: SourceModel, session: ConversionSession, model: bytes, checked: CalibrationSet):
    """Per-layer error of ``model`` against the float twin, or None when it cannot be measured."""
    from .analyze.layer_error import layer_errors

    try:
        return layer_errors(
            session.float_model(), model, [a[:LAYER_ERROR_SAMPLES] for a in checked.arrays], source.layers
        )
    except EdgeportError as exc:
        log.warning("per-layer error not measured: %s", exc)
        return None


def _worst_layers(rows: Any, source: SourceModel, count: int) -> list:
    from .guard import WorstLayer

    if rows is None:
        return []
    grouped: dict[str, list[str]] = {}
    for row in rows.rows:
        if row.layer:
            grouped.setdefault(row.layer, []).append(row.tensor)
    layers = list(grouped)[:count]
    return [WorstLayer(name, source.layers.get(name, "?"), tuple(grouped[name])) for name in layers]


def _size_by_layer(model: bytes, source: SourceModel) -> list[dict[str, Any]]:
    from .analyze.size_breakdown import size_by_layer
    from .verify.graph import TFLiteGraph

    return size_by_layer(TFLiteGraph.from_bytes(model), source.layers or None)


def _analyze(
    source: SourceModel,
    profile: TargetProfile,
    converted: Converted,
    checked: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
) -> TargetReport:
    from .analyze.memory import estimate_memory
    from .verify import verify
    from .verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(converted.model)
    verification = verify(graph, profile, source.layers)
    memory = estimate_memory(graph)
    fit = _fit_checks(profile, memory)
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
                f"{check.resource} needs {check.needed_bytes:,} B ({check.method}), over the budget of {check.budget_bytes:,} B."
            )
    verdict = VERDICT_OK if not reasons else (VERDICT_FORCED if opts.force else VERDICT_NOT_SUPPORTED)
    fidelity = None
    if reference is not None and checked is not None:
        fidelity = _fidelity(converted.model, reference, checked, source)
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


def _fit_checks(profile: TargetProfile, memory: Any) -> list[FitCheck]:
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


def _fidelity(model: bytes, reference: list, checked: CalibrationSet, source: SourceModel) -> dict[str, Any]:
    from .analyze.fidelity import compare
    from .analyze.inference import run_tflite

    inputs = _limit(checked)
    count = inputs[0].shape[0]
    actual = run_tflite(model, inputs)
    names = [o.name for o in source.outputs] or [f"output_{i}" for i in range(len(actual))]
    if checked.role == "evaluation":
        what = f"{count} evaluation samples from {checked.source} ({checked.preprocessing})"
    else:
        what = f"the first {count} calibration samples (not held out; pass --eval for held-out accuracy)"
    how = f"{what}; float = {'Keras' if source.keras_model is not None else 'float TFLite'}, int8 = LiteRT on the host"
    labels = checked.labels[:count] if checked.labels is not None else None
    sizes = [int(np.prod(spec.shape[1:])) for spec in source.inputs]
    return compare(reference, actual, names[: len(actual)], how, labels=labels, input_sizes=sizes).to_dict()


def _common(
    source: SourceModel, calibration: CalibrationSet | None, evaluation: CalibrationSet | None = None
) -> dict[str, Any]:
    return {
        "edgeport_version": __version__,
        "model": {
            "name": source.name,
            "path": str(source.path),
            "format": source.format,
            "loader": source.loader,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.inputs],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.outputs],
            "notes": list(source.notes),
        },
        "calibration": calibration.to_dict() if calibration is not None else None,
        "evaluation": evaluation.to_dict() if evaluation is not None else None,
    }


def _write_target(
    report: TargetReport,
    model: bytes | None,
    directory: Path,
    common: dict[str, Any],
    profile: TargetProfile,
    source: SourceModel,
    onnx: Any,
    opts: ExportOptions | None = None,
) -> None:
    """Write the target's files: model(s) unless not supported, then report.json, report.md, report.html."""
    from .report.html import render_html

    ensure_dir(directory)
    report.output_dir = str(directory)
    if report.verdict != VERDICT_NOT_SUPPORTED:
        if model is not None:
            write_bytes(directory / MODEL_FILE, model)
            report.artifacts.append(_artifact(MODEL_FILE, directory / MODEL_FILE, model))
            after_write(profile, directory / MODEL_FILE, source.layers, report, opts, source.path)
        if "onnx" in report.extra and not isinstance(onnx, Exception) and onnx is not None:
            for onnx_model in (onnx.float_model, onnx.int8_model):
                if onnx_model is not None:
                    data = Path(onnx_model.path).read_bytes()
                    write_bytes(directory / Path(onnx_model.path).name, data)
                    report.artifacts.append(
                        _artifact(Path(onnx_model.path).name, directory / Path(onnx_model.path).name, data)
                    )
    data = report.to_dict(common)
    write_text(directory / "report.md", render_markdown(report, common))
    write_text(directory / "report.html", render_html(data))
    write_text(directory / "report.json", report.to_json(common))


def _artifact(name: str, path: Path, data: bytes) -> Artifact:
    return Artifact(name=name, path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
