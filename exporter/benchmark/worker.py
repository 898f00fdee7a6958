"""The benchmark child process: ``python -m exporter.benchmark.worker PLAN.json RESULT.json``.

Every benchmark runs here, never in the caller, for two reasons: TFLite Micro's kernels can
``abort()`` (the parent sees a signal and reports it in one line), and the peak memory read at the
end is this process's own — the interpreter, the model and its tensors, not the caller's TensorFlow.

The plan says which engine and how long to run; the result JSON holds raw timings and facts, and the
parent (:mod:`exporter.benchmark.api`) turns them into a :class:`BenchmarkResult`. Failures the user
can act on are written as ``{"ok": false, "kind": ..., "message": ...}`` with exit code 2 or 3.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from .engine import Engine, EngineError, file_inputs, random_inputs
from .host import interpreter_version, peak_rss

#: A --min-time run on a microsecond model stops here rather than fill memory with timings.
MAX_RUNS = 1_000_000
_EXIT = {"model": 2, "usage": 2, "not_supported": 3, "internal": 1}


def time_runs(invoke, runs: int, min_time_s: float, max_runs: int = MAX_RUNS) -> list[float]:
    """Per-run wall time (ms) of ``invoke``: at least ``runs`` runs and at least ``min_time_s`` seconds.

    The garbage collector is paused so a Python collection never lands inside a timed inference.
    """
    timings: list[float] = []
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        deadline = start + int(min_time_s * 1e9)
        while len(timings) < runs or clock() < deadline:
            t0 = clock()
            invoke()
            timings.append((clock() - t0) / 1e6)
            if len(timings) >= max_runs:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def _engine(plan: dict[str, Any], blob: bytes | None, arena: int | None) -> Engine:
    kind = plan["engine"]
    if kind == "litert":
        from .litert import LiteRTEngine

        return LiteRTEngine(blob, threads=plan["threads"], xnnpack=plan["xnnpack"])
    if kind == "tflite-micro":
        from .tflm import TFLMEngine

        return TFLMEngine(
            blob,
            arena_size=arena,
            n_inputs=plan["n_inputs"],
            capture=Path(plan["capture"]),
            names=plan.get("input_names", ()),
            custom_ops=plan.get("custom_ops", ()),
        )
    if kind == "onnxruntime":
        from .onnx import OnnxEngine

        return OnnxEngine(Path(plan["model"]), threads=plan["threads"])
    raise EngineError("internal", f"unknown engine {kind!r}")


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Load, warm up and time the model as the plan says; returns the JSON-ready measurements."""
    kind = plan["engine"]
    import numpy as np  # noqa: F401  (imported before the baseline so it is not counted as the model's)

    if kind == "litert":
        import ai_edge_litert.interpreter  # noqa: F401
    elif kind == "tflite-micro":
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    baseline, _ = peak_rss()
    version = interpreter_version(kind)
    blob = None if kind == "onnxruntime" else Path(plan["model"]).read_bytes()

    result: dict[str, Any] = {"ok": True, "interpreter_version": version, "baseline_rss_bytes": baseline}
    arena_bytes = None
    if kind == "tflite-micro":
        from .tflm import find_min_arena

        arena = find_min_arena(blob, plan["n_inputs"], Path(plan["capture"]), version, plan.get("custom_ops", ()))
        result["arena"] = arena
        arena_bytes = arena["bytes"]
        if plan.get("mode") == "arena":
            result["peak_rss_bytes"], result["rss_method"] = peak_rss()
            return result

    engine = _engine(plan, blob, arena_bytes)
    t0 = time.perf_counter_ns()
    engine.load()
    result["load_ms"] = (time.perf_counter_ns() - t0) / 1e6

    specs = engine.input_specs()
    if plan.get("input_file"):
        arrays, notes = file_inputs(Path(plan["input_file"]), specs)
        result["inputs"] = f"from {Path(plan['input_file']).name}"
        result["input_notes"] = notes
    else:
        arrays = random_inputs(specs, plan["seed"])
        result["inputs"] = (
            f"random, seed {plan['seed']} ("
            + "; ".join(f"{s.name} {np.dtype(s.dtype).name}{list(s.shape)}" for s in specs)
            + ")"
        )
        result["input_notes"] = []
    engine.set_inputs(arrays)

    t0 = time.perf_counter_ns()
    engine.invoke()
    result["first_inference_ms"] = (time.perf_counter_ns() - t0) / 1e6
    for _ in range(plan["warmup"]):
        engine.invoke()
    t0 = time.perf_counter_ns()
    result["timings_ms"] = time_runs(engine.invoke, plan["runs"], plan["min_time"])
    result["elapsed_s"] = (time.perf_counter_ns() - t0) / 1e9
    result["peak_rss_bytes"], result["rss_method"] = peak_rss()
    return result


def main(argv: list[str]) -> int:
    plan_path, out_path = Path(argv[0]), Path(argv[1])
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    try:
        result = run(plan)
        code = 0
    except EngineError as exc:
        result = {"ok": False, "kind": exc.kind, "message": exc.message, "hint": exc.hint}
        code = _EXIT.get(exc.kind, 1)
    out_path.write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
