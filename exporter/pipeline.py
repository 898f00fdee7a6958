"""The export driver: load -> calibrate -> convert -> verify -> analyze -> report, as a flat list of steps.

Each step is a call into the stage's own package; this module only sequences them, shares work
between targets (one load, one calibration, one conversion per distinct quantization config) and
writes the outputs atomically at the very end, so a failure anywhere leaves no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from .atomic import scratch_dir
from .calibrate.dataset import CalibrationSet
from .convert.session import ConversionSession
from .errors import CalibrationDataError, InputModelError, NotSupportedError, OutputPathError, UsageError
from .guard import GuardSpec
from .load.model import SourceModel
from .options import ExportOptions
from .profiles import TargetProfile, load_profiles
from .progress import Progress
from .report.report import (
    VERDICT_FORCED,
    VERDICT_NOT_SUPPORTED,
    VERDICT_OK,
    TargetReport,
    render_summary,
)
from .staging import Stage, interrupts_held
from .steps.analysis import fidelity_inputs
from .steps.bench import benchmark_on_device, benchmark_on_host
from .steps.converting import prefetch, prefetch_device_work
from .steps.guarding import check_guard_inputs
from .steps.onnx import (
    attach_onnx,
    drop_stale_onnx,
    formats_for,
    onnx_failed_on_request,
    onnx_only_report,
    start_onnx,
)
from .steps.outputs import GZIP_FILE, MODEL_FILE, common_facts, prerender_charts, write_target
from .steps.qat import follow_qat_scheme
from .steps.rewrite import apply_cluster, apply_edgetpu_compat, apply_prune
from .steps.target import export_target
from .tfimport import import_tensorflow_quietly
from .workers import WorkerPool

log = logging.getLogger(__name__)

__all__ = ["GZIP_FILE", "MODEL_FILE", "ExportResult", "export"]


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
        produced = all(r.verdict in (VERDICT_OK, VERDICT_FORCED) for r in self.reports)
        # ONNX asked for by --format and not written: 3, like a target that could not be produced
        return 0 if produced and not onnx_failed_on_request(self.reports) else NotSupportedError.exit_code

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
    from .load import precheck_model

    opts = _options(options, calib, overrides)
    progress = progress or Progress(enabled=False)
    model_path = Path(model)
    profiles = [_with_budgets(p, opts) for p in load_profiles(target if isinstance(target, str) else ",".join(target))]

    if not model_path.exists():
        raise InputModelError(f"Model file {model_path} does not exist.", hint="Check the path.")
    out_dirs = _plan_outputs(model_path, profiles, opts)
    precheck_model(model_path)  # an empty, truncated or mislabelled file is refused before the TF import
    if model_path.suffix.lower() == ".tflite":
        if opts.cluster is not None:
            raise UsageError(
                f"--cluster re-chooses the int8 weights of a conversion; {model_path.name} is already a .tflite "
                "and is not converted again.",
                hint="Export the Keras or SavedModel source with --cluster K.",
            )
        return _export(model_path, profiles, out_dirs, opts, progress)
    # One converter host, started now so its TensorFlow import overlaps this process's. Every conversion
    # and tf2onnx run in processes it forks, two at a time on 2+ cores: tf2onnx then runs beside the int8
    # conversion without a second TensorFlow import (a second host's import, 3.5 s of CPU, cost more than
    # the overlap gained; benchmarks/speed_results.md).
    with WorkerPool().active() as pool:
        pool.warm()
        return _export(model_path, profiles, out_dirs, opts, progress)


def _export(
    model_path: Path,
    profiles: list[TargetProfile],
    out_dirs: dict[str, Path],
    opts: ExportOptions,
    progress: Progress,
) -> ExportResult:
    """The export's steps, in order (conversions go to the active WorkerPool's hosts)."""
    from .load import load_model

    if model_path.suffix.lower() != ".tflite":
        progress.step("load", "importing TensorFlow")
        import_tensorflow_quietly(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    progress.step("load", f"loading {model_path.name}")
    source = load_model(model_path, input_shape=opts.input_shape, unsafe=opts.unsafe)
    opts = follow_qat_scheme(source, opts)
    if opts.edgetpu_compat:
        apply_edgetpu_compat(source)
    if opts.prune is not None:
        apply_prune(source, opts, progress)
    if opts.cluster is not None and opts.train is not None:
        apply_cluster(source, opts, progress)

    progress.step("calibrate", "reading calibration data")
    calibration = None if source.is_tflite else _calibrate(source, opts)
    evaluation = _evaluation(source, opts, calibration)
    checked = evaluation or calibration
    guard = GuardSpec(opts.max_accuracy_drop, opts.min_agreement)
    check_guard_inputs(guard, checked)

    with scratch_dir() as work, contextlib.ExitStack() as stack:
        session = None
        if not source.is_tflite:
            recalibrate = partial(_recalibrate, source, opts, evaluation)
            session = ConversionSession(source, calibration, work, progress, recalibrate)
            prefetch(session, source, profiles, checked, opts, guard)
        # ONNX is traced first; its child processes then run beside the first TFLite conversion, and are
        # waited for before anything is benchmarked (a benchmark must not share the CPU with them)
        onnx_job = start_onnx(source, profiles, opts, calibration, evaluation, work, progress)
        stack.callback(onnx_job.wait)  # on any failure too: its files live in this scratch folder
        reference = _reference_outputs(source, checked, session)
        tflite: dict[str, tuple[TargetReport, bytes | None]] = {}
        for profile in (p for p in profiles if "tflite" in formats_for(p, opts)):  # while ONNX runs
            progress.step("verify", f"{profile.name}: checking ops, dtypes, memory and fidelity")
            report, model = export_target(source, profile, session, checked, reference, opts, guard, progress)
            if not tflite and session is not None and model is not None:
                prefetch_device_work(profile, profiles, model, opts)  # the MCU targets' arena and Vela
            tflite[profile.name] = report, model
        if onnx_job.running:
            prerender_charts([report for report, _ in tflite.values()])
        onnx = onnx_job.result(progress)  # before any benchmark: it must not share the CPU with ONNX's children
        results = []
        for profile in profiles:
            report, model = tflite.get(profile.name) or (onnx_only_report(profile, onnx), None)
            attach_onnx(report, profile, opts, onnx)
            if opts.bench:
                benchmark_on_host(report, profile, model, onnx, opts, progress)
            if opts.bench_device and model is not None and report.verdict != VERDICT_NOT_SUPPORTED:
                benchmark_on_device(report, profile, model, opts, work, progress)
            results.append((report, model))
        common = common_facts(source, calibration, evaluation)
        progress.step("write", "writing outputs")
        _write_outputs(results, profiles, out_dirs, common, source, onnx, opts)
        if opts.keep_workdir:
            shutil.copytree(work, Path(out_dirs[profiles[0].name]) / "_work", dirs_exist_ok=True)
    progress.done()
    return ExportResult(reports=[r for r, _ in results], common=common, output_dirs=out_dirs)


# --- steps ---------------------------------------------------------------------------------------


def _write_outputs(
    results: list[tuple[TargetReport, bytes | None]],
    profiles: list[TargetProfile],
    out_dirs: dict[str, Path],
    common: dict[str, Any],
    source: SourceModel,
    onnx: Any,
    opts: ExportOptions,
) -> None:
    """Stage every target, then move them all into place: a failure or Ctrl-C before the moves leaves
    every output folder as it was; the moves themselves are not interrupted (see exporter.staging)."""
    stages: list[Stage] = []
    try:
        for (report, model), profile in zip(results, profiles, strict=True):
            stages.append(Stage.create(out_dirs[profile.name]))
            write_target(report, model, stages[-1], common, profile, source, onnx, opts)
            drop_stale_onnx(report, stages[-1])
        with interrupts_held():
            for stage in stages:
                stage.commit()
    finally:
        for stage in stages:
            stage.discard()


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
    evaluation.set_role("evaluation")
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

    def base(spec: str) -> tuple[Path, str]:
        path, function = Path(spec).expanduser(), ""
        if not path.exists() and ":" in spec:
            left, right = spec.rsplit(":", 1)
            path = Path(left).expanduser()
            if path.suffix.lower() != ".npz":  # file.py:train and file.py:calib are two sources
                function = right
        return path.resolve(), function

    return base(a) == base(b)


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


def _reference_outputs(source: SourceModel, checked: CalibrationSet | None, session: ConversionSession | None):
    """Float outputs on the checked samples: Keras when we have it, else the float TFLite twin."""
    if checked is None or session is None:
        return None
    from .analyze.inference import run_reference

    float_model = session.float_model() if source.keras_model is None else None
    return run_reference(source, fidelity_inputs(checked), float_model)


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
