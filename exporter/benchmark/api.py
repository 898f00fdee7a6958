"""``benchmark()`` and ``measure_arena()``: plan a run from the target profile, run it in a child, report.

The parent never loads an interpreter. It validates the model (a bad file is exit 2 before any child
starts), resolves threads/XNNPACK/runs from the profile's ``[benchmark]`` section, and starts
:mod:`exporter.benchmark.worker`. A child killed by a signal, TFLite Micro's ``abort()`` included, is
a :class:`NotSupportedError` naming the signal; the caller keeps running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analyze.memo import shared, start_shared
from ..atomic import scratch_dir
from ..childproc import child_env
from ..convert.compact import SHARED_ZERO_POINTS, tflm_only
from ..errors import InputModelError, InternalError, NotSupportedError, UsageError
from ..profiles import TargetProfile, load_profile
from .host import cpu_model, int8_kernels, usable_cores
from .result import ArenaMeasurement, BenchmarkResult, Latency

log = logging.getLogger(__name__)

ONNX_SUFFIXES = (".onnx",)
_KERNELS = {
    "litert": "LiteRT builtin kernels",
    "tflite-micro": "TFLite Micro reference kernels (portable C++, compiled for this host)",
    "onnxruntime": "onnxruntime CPU execution provider",
}
#: int8 SOFTMAX in TFLite Micro aborts above about this many classes (STACK.md; MobileNetV2's 1000), and
#: on a near-zero input scale (measured: a random-weight MobileNetV2-0.35 whose logits' scale is 7.8e-09).
_TFLM_SOFTMAX_ABORT_CLASSES = 570


@dataclass(frozen=True)
class _Model:
    path: Path | None
    blob: bytes | None
    display: str
    format: str
    size: int
    input_names: tuple[str, ...]
    softmax_classes: int
    custom_ops: tuple[str, ...] = ()
    softmax_input_scale: float | None = None
    #: Why only TFLite Micro loads the file (edgeport's Cortex-M flash layout), or None.
    tflm_layout: str | None = None

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)


def benchmark(
    model: str | os.PathLike[str] | bytes,
    target: TargetProfile | str | None,
    *,
    runs: int | None = None,
    min_time: float | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    inputs: str | os.PathLike[str] | Any | None = None,
    seed: int = 0,
) -> BenchmarkResult:
    """Time ``model`` on this host through ``target``'s own interpreter and measure its memory.

    Defaults come from the profile's ``[benchmark]`` section. ``.onnx`` files run in onnxruntime
    whatever the target (``target`` may then be None: 1 thread). ``inputs`` is a .npy/.npz path, an
    array, a list of arrays (one per input) or a name -> array mapping; default: seeded random data.
    Raises :class:`InputModelError` (bad model), :class:`UsageError` (bad options or inputs) or
    :class:`NotSupportedError` (the interpreter refuses or crashes on the model).
    """
    source = _resolve_model(model)
    profile = _resolve_profile(target, source)
    bench = profile.benchmark if profile else None
    runs = _positive("runs", runs if runs is not None else (bench.runs if bench else 50), allow_zero=False)
    warmup = _positive("warmup", warmup if warmup is not None else (bench.warmup if bench else 5))
    min_time = float(min_time) if min_time is not None else 0.0
    if min_time < 0:
        raise UsageError(f"--min-time must be zero or more seconds; received {min_time}.")
    requested = _positive(
        "threads", threads if threads is not None else (bench.threads if bench else 1), allow_zero=False
    )

    engine = "onnxruntime" if source.format == "onnx" else bench.interpreter
    if engine == "onnxruntime" and source.format != "onnx":
        raise UsageError(
            f"Target {profile.name} runs ONNX models in onnxruntime; {source.display} is a .tflite.",
            hint=f"Benchmark the .onnx file that 'edgeport export --target {profile.name}' wrote, "
            "or pick a TFLite target (e.g. android-arm64, cortex-m4).",
        )
    if engine == "litert" and source.tflm_layout not in (None, SHARED_ZERO_POINTS):  # LUT: DECODE is TFLM's
        raise UsageError(
            f"{source.display} is in TFLite Micro's flash layout ({source.tflm_layout}): LiteRT does not load it.",
            hint="Benchmark it with --target cortex-m4 (TFLite Micro), or re-export with "
            "--keep-zero-points --lut off for a file LiteRT also loads.",
        )
    cores = usable_cores()
    notes: list[str] = []
    if engine == "tflite-micro":
        used = 1
        if requested > 1:
            notes.append(f"TFLite Micro is single-threaded; {requested} threads requested, 1 used")
    else:
        used = min(requested, cores)
        if used < requested:
            notes.append(f"threads capped to the host's {cores} usable cores (requested {requested})")
    xnnpack = bench.xnnpack if engine == "litert" else None

    with scratch_dir("edgeport-bench-") as work:
        model_path = source.path
        if model_path is None:
            model_path = work / "model.tflite"
            model_path.write_bytes(source.blob)
        plan: dict[str, Any] = {
            "mode": "bench",
            "engine": engine,
            "model": str(model_path),
            "threads": used,
            "xnnpack": xnnpack,
            "runs": runs,
            "min_time": min_time,
            "warmup": warmup,
            "seed": seed,
            "n_inputs": source.n_inputs,
            "input_names": list(source.input_names),
            "custom_ops": list(source.custom_ops),
            "capture": str(work / "stderr.txt"),
            "input_file": _inputs_file(inputs, work),
        }
        data = _run_child(plan, work, source, profile)

    notes.extend(data.get("input_notes", []))
    arena = ArenaMeasurement.from_dict(data["arena"]) if data.get("arena") else None
    kernels = int8_kernels()
    return BenchmarkResult(
        model=source.display,
        model_format=source.format,
        model_bytes=source.size,
        target=profile.name if profile else "host",
        interpreter=engine,
        interpreter_version=data["interpreter_version"],
        kernels=_KERNELS[engine] + (" + XNNPACK" if xnnpack else ""),
        xnnpack=xnnpack,
        threads_requested=requested,
        threads_used=used,
        load_ms=data["load_ms"],
        first_inference_ms=data["first_inference_ms"],
        warmup_runs=warmup,
        min_time_s=min_time,
        latency=Latency.from_timings(data["timings_ms"], elapsed_s=data["elapsed_s"]),
        peak_rss_bytes=data["peak_rss_bytes"],
        baseline_rss_bytes=data["baseline_rss_bytes"],
        rss_method=data["rss_method"],
        host_cpu=cpu_model(),
        host_cores=usable_cores(),
        inputs=data["inputs"],
        host_has_vnni=kernels["has_vnni"],
        host_int8_dot_product=bool(kernels["int8_dot_product"]),
        host_int8_note=str(kernels["note"]),
        arena=arena,
        device_note=_device_note(engine, profile),
        notes=tuple(notes),
    )


def measure_arena(model: bytes | str | os.PathLike[str]) -> ArenaMeasurement:
    """The smallest TFLite Micro arena (bytes) that allocates and runs ``model`` on this host, verified.

    Runs in a child process, like the benchmark: a model whose kernels abort raises
    :class:`NotSupportedError` instead of ending the caller.
    """
    source = _resolve_model(model)
    if source.format != "tflite":
        raise UsageError(f"measure_arena needs a .tflite model; received {source.display}.")
    blob = source.blob if source.blob is not None else Path(source.path).read_bytes()
    key = hashlib.sha256(blob).hexdigest()
    return shared(f"arena:{key}", lambda: _measure_arena_in_child(source))


def prefetch_arena(model: bytes) -> None:
    """Start measuring ``model``'s arena in the background (the work is a child process, so this uses a
    core the export leaves idle while it waits for ONNX); :func:`measure_arena` then takes the result.
    The same bytes on the same TFLite Micro need the same arena: cortex-m4, -m7 and the Ethos-U target
    often get byte-identical models, measured once."""
    blob = bytes(model)
    key = hashlib.sha256(blob).hexdigest()
    start_shared(f"arena:{key}", lambda: _measure_arena_in_child(_tflite_model(blob, None, "model bytes")))


def _measure_arena_in_child(source: _Model) -> ArenaMeasurement:
    with scratch_dir("edgeport-arena-") as work:
        model_path = source.path or work / "model.tflite"
        if source.path is None:
            model_path.write_bytes(source.blob)
        plan = {
            "mode": "arena",
            "engine": "tflite-micro",
            "model": str(model_path),
            "n_inputs": source.n_inputs,
            "custom_ops": list(source.custom_ops),
            "capture": str(work / "stderr.txt"),
        }
        data = _run_child(plan, work, source, None)
    return ArenaMeasurement.from_dict(data["arena"])


# --- planning ------------------------------------------------------------------------------------


def _resolve_model(model: str | os.PathLike[str] | bytes) -> _Model:
    if isinstance(model, (bytes, bytearray, memoryview)):
        blob = bytes(model)
        return _tflite_model(blob, None, "model bytes")
    path = Path(model).expanduser()
    if not path.exists():
        raise InputModelError(f"Model file {path} does not exist.", hint="Pass a .tflite or .onnx file.")
    if path.is_dir():
        raise InputModelError(
            f"{path} is a directory; 'bench' runs a .tflite or .onnx file.",
            hint="Export the model first ('edgeport export'), then benchmark its model_int8.tflite.",
        )
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputModelError(f"Cannot read model file {path}: {exc.strerror or exc}.") from exc
    if path.suffix.lower() in ONNX_SUFFIXES:
        if not blob:
            raise InputModelError(f"ONNX file {path} is empty.", hint="Export the model to ONNX again.")
        return _Model(
            path=path, blob=None, display=path.name, format="onnx", size=len(blob), input_names=(), softmax_classes=0
        )
    if path.suffix.lower() != ".tflite" and blob[4:8] != b"TFL3":
        raise InputModelError(
            f"Unsupported model file {path} (suffix '{path.suffix or 'none'}').",
            hint="'edgeport bench' runs .tflite and .onnx files; export a Keras model first with 'edgeport export'.",
        )
    return _tflite_model(blob, path, path.name)


def _tflite_model(blob: bytes, path: Path | None, display: str) -> _Model:
    from ..verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(blob, source=str(path) if path else "The model")
    softmax, softmax_scale = 0, None
    for op in graph.ops:
        if op.name == "SOFTMAX":
            out, inp = graph.op_outputs(op), graph.op_inputs(op)
            if out and out[0].shape:
                softmax = max(softmax, int(out[0].shape[-1]))
            if inp and inp[0].scale and inp[0].dtype in ("int8", "uint8", "int16"):
                scale = float(min(inp[0].scale))
                softmax_scale = scale if softmax_scale is None else min(softmax_scale, scale)
    names = tuple(graph.tensor(i).name for i in graph.inputs)
    custom = tuple(sorted({op.custom_code for op in (*graph.ops, *graph.other_ops) if op.custom_code}))
    return _Model(
        path,
        blob if path is None else None,
        display,
        "tflite",
        len(blob),
        names,
        softmax,
        custom,
        softmax_scale,
        tflm_only(blob),
    )


def _resolve_profile(target: TargetProfile | str | None, source: _Model) -> TargetProfile | None:
    if isinstance(target, TargetProfile):
        return target
    if target is None or (isinstance(target, str) and not target.strip()):
        if source.format == "onnx":
            return None
        raise UsageError(
            "Benchmarking a .tflite model needs a target: its profile picks the interpreter.",
            hint="Pass --target, e.g. --target android-arm64 or --target cortex-m4.",
        )
    return load_profile(target)


def _positive(name: str, value: Any, *, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        least = "zero or more" if allow_zero else "at least 1"
        raise UsageError(f"--{name} must be an integer, {least}; received {value!r}.")
    return value


def _inputs_file(inputs: Any, work: Path) -> str | None:
    """Inputs as a file for the child: a path is passed through, arrays are saved to an .npz."""
    if inputs is None:
        return None
    if isinstance(inputs, (str, os.PathLike)):
        path = Path(inputs).expanduser()
        if not path.is_file():
            raise UsageError(f"Input file {path} does not exist.", hint="Pass a .npy (one input) or .npz file.")
        return str(path.resolve())
    import numpy as np

    if isinstance(inputs, np.ndarray):
        arrays = {"arr_0": inputs}
    elif isinstance(inputs, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in inputs.items()}
    elif isinstance(inputs, Sequence):
        arrays = {f"arr_{i}": np.asarray(v) for i, v in enumerate(inputs)}
    else:
        raise UsageError(
            f"inputs must be a path, an array, a list or a dict of arrays; received {type(inputs).__name__}."
        )
    path = work / "inputs.npz"
    np.savez(path, **arrays)
    return str(path)


# --- the child -----------------------------------------------------------------------------------


def _run_child(plan: dict[str, Any], work: Path, source: _Model, profile: TargetProfile | None) -> dict[str, Any]:
    plan_path, out_path = work / "plan.json", work / "result.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    root = str(Path(__file__).resolve().parents[2])
    env = child_env(TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "exporter.benchmark.worker", str(plan_path), str(out_path)]
    log.debug("benchmark child: %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr.decode("utf-8", "replace")
    capture = Path(plan["capture"])
    if capture.is_file():
        stderr = capture.read_text(encoding="utf-8", errors="replace") + "\n" + stderr
    where = f"{source.display}" + (f" on target {profile.name}" if profile else "")
    interpreter = {"litert": "LiteRT", "tflite-micro": "TFLite Micro", "onnxruntime": "onnxruntime"}[plan["engine"]]

    if proc.returncode < 0:
        raise _signal_error(-proc.returncode, interpreter, where, stderr, source, plan["engine"])
    data = None
    if out_path.is_file():
        try:
            data = json.loads(out_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = None
    if proc.returncode == 0 and data and data.get("ok"):
        return data
    if data and not data.get("ok"):
        kind, hint = data.get("kind"), data.get("hint")
        message = data["message"] if kind == "model" else f"{where}: {data['message']}"
        if kind == "not_supported":
            raise NotSupportedError(message, hint=hint)
        if kind == "model":
            raise InputModelError(message, hint=hint)
        if kind == "usage":
            raise UsageError(message, hint=hint)
        raise InternalError(message, hint=hint)
    last = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    raise InternalError(
        f"The benchmark process for {where} failed with exit code {proc.returncode}"
        + (f": {last[-1][:300]}" if last else "."),
        hint="Re-run with --debug and report it.",
    )


def _signal_error(
    signum: int, interpreter: str, where: str, stderr: str, source: _Model, engine: str
) -> NotSupportedError:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    from .tflm import missing_op

    op = missing_op(stderr)
    if op:
        cause = f"; TFLite Micro has no kernel for op {op}"
        hint = "Replace the layer that produces it, or choose a target whose runtime has the op."
    elif engine == "tflite-micro" and source.softmax_classes > _TFLM_SOFTMAX_ABORT_CLASSES:
        cause = (
            f"; its int8 SOFTMAX kernel aborts above about {_TFLM_SOFTMAX_ABORT_CLASSES} classes "
            f"and this model's softmax has {source.softmax_classes}"
        )
        hint = "Use fewer classes (or drop the final softmax and take the argmax of the logits) for a microcontroller."
    elif engine == "tflite-micro" and source.softmax_input_scale is not None and source.softmax_input_scale < 1e-6:
        cause = (
            f"; its int8 SOFTMAX kernel aborts on a degenerate input scale, and this model's softmax input "
            f"scale is {source.softmax_input_scale:.2g} (the calibration range of the logits collapsed)"
        )
        hint = "Calibrate with real, representative data; random weights or inputs give near-zero logit ranges."
    else:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "RecordingMicroAllocator" not in ln]
        cause = f" after printing: {lines[-1][:200]}" if lines else " without a message"
        hint = "The model cannot run in this interpreter; check its ops and quantization with 'edgeport export'."
    return NotSupportedError(f"{interpreter} crashed ({name}) running {where}{cause}.", hint=hint)


def _device_note(engine: str, profile: TargetProfile | None) -> str:
    if engine == "tflite-micro":
        cpu = profile.device.cpu if profile else "the MCU"
        clock = f" at {profile.device.clock_mhz:g} MHz" if profile and profile.device.clock_mhz else ""
        npu = ""
        if profile and profile.npu is not None:
            npu = f" (nor the {profile.npu.accelerator} NPU, which runs the Vela-compiled ops on the device)"
        return (
            f"Host timings are not device timings: this run measures TFLite Micro's x86-64 reference kernels, "
            f"not CMSIS-NN on the {cpu}{clock}{npu}; use it to compare models, not to predict device latency. "
            "The arena is the x86-64 figure (64-bit pointers, host kernels); on the MCU it can differ, so keep a margin."
        )
    if engine == "litert":
        if profile and profile.runtime.name == "edgetpu":
            return (
                "Host timings are not device timings: this is the CPU model through LiteRT on this host's CPU, "
                "not the Edge TPU; only the device gives Edge TPU latency."
            )
        return (
            "Host timings are not device timings: the same LiteRT kernels run on this x86-64 CPU, not the phone's "
            "Arm cores; run the model on the device for its latency."
        )
    return "Host timings are not device timings: onnxruntime on this host's CPU."
