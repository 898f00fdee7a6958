"""--bench and --bench-device: time the written models and put the numbers beside the estimates.

A measured TFLite Micro arena replaces the RAM estimate in the fit table, because a measurement on the
target's own interpreter beats a live-range estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import NotSupportedError
from ..options import ExportOptions
from ..profiles import TargetProfile
from ..progress import Progress
from ..report.report import VERDICT_FORCED, VERDICT_NOT_SUPPORTED, FitCheck, TargetReport


def benchmark_on_host(
    report: TargetReport,
    profile: TargetProfile,
    model: bytes | None,
    onnx: Any,
    opts: ExportOptions,
    progress: Progress,
) -> None:
    """--bench: time the written model(s) through the target's own interpreter on this host."""
    from ..benchmark import benchmark

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
            use_measured_arena(report, profile, int(arena["bytes"]), opts)
    if results:
        report.extra["benchmark"] = results


def benchmark_on_device(
    report: TargetReport, profile: TargetProfile, model: bytes, opts: ExportOptions, work: Path, progress: Progress
) -> None:
    """--bench-device: benchmark_model on the phone (or emulator); numbers land beside the host ones."""
    if profile.runtime.name != "litert":
        report.warnings.append(
            f"--bench-device: skipped for {profile.name}; only LiteRT (phone) targets run benchmark_model."
        )
        return
    from ..devices.android import bench_on_device

    path = work / f"{profile.name}_device.tflite"
    path.write_bytes(model)
    progress.step("bench", f"{profile.name}: benchmark_model on device {opts.bench_device}")
    result = bench_on_device(
        path, profile, opts.bench_device, num_runs=opts.bench_runs, benchmark_binary=opts.benchmark_binary
    )
    report.extra["device_benchmark"] = result.to_dict()


def use_measured_arena(report: TargetReport, profile: TargetProfile, arena: int, opts: ExportOptions) -> None:
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
