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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import ensure_dir, scratch_dir, write_bytes, write_text
from .calibrate.dataset import CalibrationSet
from .convert.tflite import QuantizationConfig
from .errors import CalibrationDataError, InputModelError, NotSupportedError, OutputPathError
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
        return 0 if all(r.verdict in (VERDICT_OK, VERDICT_FORCED) for r in self.reports) else NotSupportedError.exit_code

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
    profiles = load_profiles(target if isinstance(target, str) else ",".join(target))

    if not model_path.exists():
        raise InputModelError(f"Model file {model_path} does not exist.", hint="Check the path.")
    out_dirs = _plan_outputs(model_path, profiles, opts)
    if model_path.suffix.lower() != ".tflite":
        progress.step("load", "importing TensorFlow")
        import_tensorflow_quietly(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    progress.step("load", f"loading {model_path.name}")
    source = load_model(model_path, input_shape=opts.input_shape, unsafe=opts.unsafe)

    progress.step("calibrate", "reading calibration data")
    calibration = None if source.is_tflite else _calibrate(source, opts)
    evaluation = _evaluation(source, opts, calibration)

    with scratch_dir() as work:
        models, conversions, float_model = _convert_all(source, profiles, calibration, opts, work, progress)
        progress.step("verify", "checking ops, dtypes and memory per target")
        checked = _fidelity_inputs(calibration, evaluation)
        reference = _reference_outputs(source, checked, float_model)
        reports = [
            _analyze_target(source, profile, models[_config_for(profile, opts, source)], conversions, checked, reference, opts)
            for profile in profiles
        ]
        common = _common(source, calibration, evaluation)
        progress.step("write", "writing outputs")
        for report, profile in zip(reports, profiles, strict=True):
            _write_target(report, models[_config_for(profile, opts, source)], out_dirs[profile.name], common, opts)
        if opts.keep_workdir:
            kept = Path(out_dirs[profiles[0].name]) / "_work"
            shutil.copytree(work, kept, dirs_exist_ok=True)
    progress.done()
    return ExportResult(reports=reports, common=common, output_dirs=out_dirs)


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


def _fidelity_inputs(calibration: CalibrationSet | None, evaluation: CalibrationSet | None) -> CalibrationSet | None:
    """What float and int8 are compared on: the evaluation set when given, else the calibration samples."""
    if evaluation is not None:
        return evaluation
    if calibration is None:
        return None
    return calibration


def _config_for(profile: TargetProfile, opts: ExportOptions, source: SourceModel) -> QuantizationConfig | str:
    if source.is_tflite:
        return "given"
    io = opts.io_dtype or profile.quantization.io_dtype
    per_channel = profile.quantization.per_channel if opts.per_channel is None else opts.per_channel
    return QuantizationConfig(io_dtype=io, per_channel=per_channel)


def _convert_all(
    source: SourceModel,
    profiles: list[TargetProfile],
    calibration: CalibrationSet | None,
    opts: ExportOptions,
    work: Path,
    progress: Progress,
) -> tuple[dict[Any, bytes], dict[Any, dict[str, Any]], bytes | None]:
    """One conversion per distinct quantization config; a .tflite input is taken as it is."""
    from .convert.input_range import pin_input_range
    from .convert.tflite import prepare_saved_model, run_converter, write_calibration

    if source.is_tflite:
        return {"given": source.tflite_bytes}, {"given": {"scheme": "given .tflite (not reconverted)"}}, None
    configs = list(dict.fromkeys(_config_for(p, opts, source) for p in profiles))
    progress.step("convert", "preparing a static-shape SavedModel")
    saved_model, mode = prepare_saved_model(source, work)
    calib_path = write_calibration(calibration, work / "calibration.npz")
    models: dict[Any, bytes] = {}
    conversions: dict[Any, dict[str, Any]] = {}
    for i, config in enumerate(configs):
        progress.step("convert", f"converting ({config.describe()}) [{i + 1}/{len(configs)}]")
        started = time.perf_counter()
        models[config] = run_converter(
            source, saved_model, mode, work, config=config, calib_path=calib_path, tag=f"int8_{i}"
        )
        pins = []
        for index, declared in enumerate(calibration.declared_ranges or []):
            if declared is not None:
                models[config], pin = pin_input_range(models[config], index, declared)
                pins.append(pin.detail)
        conversions[config] = {
            "input_quantization": pins,
            "scheme": config.describe(),
            "io_dtype": config.io_dtype,
            "per_channel": config.per_channel,
            "converter": f"tf.lite.TFLiteConverter ({mode}, TFLITE_BUILTINS_INT8 only)",
            "seconds": round(time.perf_counter() - started, 2),
        }
    float_model = None
    if source.keras_model is None:
        progress.step("convert", "converting a float reference (for fidelity)")
        float_model = run_converter(source, saved_model, mode, work, config=None, calib_path=None, tag="float")
    return models, conversions, float_model


def _reference_outputs(source: SourceModel, checked: CalibrationSet | None, float_model: bytes | None):
    if checked is None:
        return None
    from .analyze.inference import run_reference

    return run_reference(source, _limit(checked), float_model)


def _limit(samples: CalibrationSet) -> list:
    """The inputs fidelity runs on: all evaluation samples, or the first calibration ones."""
    limit = None if samples.role == "evaluation" else FIDELITY_MAX_SAMPLES
    return [a[:limit] for a in samples.arrays]


def _analyze_target(
    source: SourceModel,
    profile: TargetProfile,
    model: bytes,
    conversions: dict[Any, dict[str, Any]],
    calibration: CalibrationSet | None,
    reference: list | None,
    opts: ExportOptions,
) -> TargetReport:
    from .analyze.memory import estimate_memory
    from .verify import verify
    from .verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model)
    verification = verify(graph, profile, source.layers)
    memory = estimate_memory(graph)
    fit = _fit_checks(profile, memory)
    reasons = [f.message for f in verification.errors]
    warnings = [f.message for f in verification.warnings] + list(source.notes)
    if calibration is not None:
        warnings += calibration.warnings
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
    if reference is not None and calibration is not None:
        fidelity = _fidelity(model, reference, calibration, source)
    return TargetReport(
        target=profile.name,
        profile=profile.to_dict(),
        verdict=verdict,
        reasons=reasons,
        warnings=warnings,
        conversion=conversions[_config_for(profile, opts, source)],
        verification=verification.to_dict(),
        memory=memory.to_dict(),
        fit=fit,
        fidelity=fidelity,
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
            FitCheck("param_cache", memory.weights_bytes, profile.memory.param_cache_bytes, "measured: constant tensor bytes")
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
    return compare(reference, actual, names[: len(actual)], how, labels=labels).to_dict()


def _common(source: SourceModel, calibration: CalibrationSet | None, evaluation: CalibrationSet | None = None) -> dict[str, Any]:
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


def _write_target(report: TargetReport, model: bytes, directory: Path, common: dict[str, Any], opts: ExportOptions) -> None:
    ensure_dir(directory)
    report.output_dir = str(directory)
    if report.verdict != VERDICT_NOT_SUPPORTED:
        write_bytes(directory / MODEL_FILE, model)
        report.artifacts.append(_artifact(MODEL_FILE, directory / MODEL_FILE, model))
    md = render_markdown(report, common)
    write_text(directory / "report.md", md)
    write_text(directory / "report.json", report.to_json(common))


def _artifact(name: str, path: Path, data: bytes) -> Artifact:
    return Artifact(name=name, path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
