"""The ONNX child processes: ``python -m exporter.convert.onnx_worker REQUEST.json``.

Everything native on the ONNX path runs here, never in edgeport's own process: tf2onnx (task
``convert``, the only one that imports TensorFlow), and onnxruntime (task ``verify``: loading the
float model, running it on the check samples, calibrating, ``quantize_static``, running the int8
model). A segfault, abort or OOM kill in either becomes an exit status the parent turns into one
line, and the TFLite targets of the same export are not touched. Inputs and outputs travel as
.npz files in the parent's private folder; the result is a JSON file.

Calibration memory is bounded: ranges are collected over chunks of the calibration samples and
merged (exact for MinMax), then handed to ``quantize_static`` as its calibration cache. onnxruntime's
own histogram calibrators keep every activation tensor of every sample until the end, and its
``CalibMaxIntermediateOutputs`` option (1.32) clears the collected outputs without merging them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

METHODS = ("minmax", "entropy", "percentile")
#: TensorRT's KL calibration histogram (2048 bins searched for the best 128-bin window).
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
#: Histogram methods hold every activation of a chunk at once: chunks are sized to about this much.
HISTOGRAM_CHUNK_BYTES = 256 * 2**20
#: MinMax keeps two reduced values per tensor and sample; chunks only bound the list of them.
MINMAX_CHUNK = 64
#: Set to "convert" or "verify" to make that task abort (tests of the parent's crash handling).
CRASH_ENV = "EDGEPORT_TEST_ONNX_WORKER_ABORT"


class _Reader:
    """Feeds samples ``start..stop`` one at a time (batch 1), keyed by the ONNX input names."""

    def __init__(self, arrays: list[Any], names: list[str], start: int = 0, stop: int | None = None) -> None:
        self._arrays = arrays
        self._names = names
        self._start = start
        self._stop = arrays[0].shape[0] if stop is None else min(stop, arrays[0].shape[0])
        self._next = start

    def get_next(self) -> dict[str, Any] | None:
        if self._next >= self._stop:
            return None
        i = self._next
        self._next += 1
        return {name: a[i : i + 1] for name, a in zip(self._names, self._arrays, strict=True)}

    def rewind(self) -> None:
        self._next = self._start


def _reader(arrays: list[Any], names: list[str], start: int = 0, stop: int | None = None) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(arrays, names, start, stop)


def load_arrays(path: str, count: int) -> list[Any]:
    import numpy as np

    data = np.load(path)
    return [np.ascontiguousarray(data[f"input_{i}"], dtype=np.float32) for i in range(count)]


# --- task: convert (tf2onnx; imports TensorFlow) ----------------------------------------------------


def convert(request: dict[str, Any]) -> dict[str, Any]:
    from .onnx_graph import GraphIOError, convert_graph_def, initializers_in_use_order, rename_io, unsupported_ops

    start = time.perf_counter()
    graph_bytes = Path(request["graph_path"]).read_bytes()
    lines: list[str] = []
    try:
        proto = convert_graph_def(
            graph_bytes, request["graph_inputs"], request["graph_outputs"], request["opset"], lines
        )
    except Exception as exc:  # tf2onnx raised: the parent words it
        tail = next((ln for ln in reversed(lines) if "rror" in ln), "")
        return {"ok": False, "stage": "tf2onnx", "error_type": type(exc).__name__, "error": str(exc), "tail": tail}
    found = unsupported_ops(proto, lines)
    if found:
        return {"ok": False, "stage": "unsupported", "ops": found, "log": lines[-50:]}
    try:
        rename_io(proto, request["input_names"], request["output_names"], request["dynamic_batch"])
    except GraphIOError as exc:
        return {"ok": False, "stage": "io", "error_type": "GraphIOError", "error": str(exc)}
    initializers_in_use_order(proto)
    Path(request["float_path"]).write_bytes(proto.SerializeToString())
    return {"ok": True, "timings": {"convert_s": time.perf_counter() - start}, "log": lines[-50:]}


# --- task: verify (onnxruntime only) ---------------------------------------------------------------


def verify(request: dict[str, Any]) -> dict[str, Any]:
    """Run the float model, quantize it (given calibration), run the int8 model both ways."""
    import numpy as np

    from ..verify.onnx_check import OnnxLoadError, load_session, run_session

    timings: dict[str, float] = {}
    notes: list[str] = []
    names = request["input_names"]
    inputs = load_arrays(request["check_path"], len(names))
    start = time.perf_counter()
    try:
        session = load_session(request["float_path"])
    except OnnxLoadError as exc:
        return {"ok": False, "stage": "load", "kind": "float", "detail": exc.detail}
    np.savez(request["float_outputs"], *run_session(session, inputs))
    del session
    timings["verify_float_s"] = time.perf_counter() - start
    if not request.get("calib_path"):
        return {"ok": True, "timings": timings, "notes": notes}

    start = time.perf_counter()
    try:
        quantize(request, notes)
    except MemoryError:
        return {"ok": False, "stage": "quantize", "error_type": "MemoryError", "error": "out of memory"}
    except Exception as exc:  # reported to the parent, which turns it into a ConversionError
        return {
            "ok": False,
            "stage": "quantize",
            "error_type": type(exc).__name__,
            "error": str(exc),
            "traceback": traceback.format_exc(),
        }
    timings["quantize_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for optimized, key in ((False, "int8_reference_outputs"), (True, "int8_host_outputs")):
        try:
            session = load_session(request["int8_path"], optimized=optimized)
        except OnnxLoadError as exc:
            return {"ok": False, "stage": "load", "kind": "int8", "detail": exc.detail}
        np.savez(request[key], *run_session(session, inputs))
        del session
    timings["verify_int8_s"] = time.perf_counter() - start
    return {"ok": True, "timings": timings, "notes": notes}


def quantize(request: dict[str, Any], notes: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    workdir = Path(request["int8_path"]).parent
    source = request["float_path"]
    pre = str(workdir / "preprocessed.onnx")
    try:
        quant_pre_process(source, pre)
        source = pre
    except Exception as exc:  # optional step: quantizing without it is still correct, only less optimal
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        notes.append(
            f"onnxruntime quant_pre_process failed ({type(exc).__name__}: {first}); "
            "quantized the model without pre-processing."
        )
    method = request["calibrate_method"]
    arrays = load_arrays(request["calib_path"], len(request["input_names"]))
    ranges, chunk = calibration_ranges(source, arrays, request["input_names"], method, workdir)
    cache = workdir / "ranges.json"
    save_tensors_data(ranges, cache)
    notes.append(
        f"{method} ranges collected by edgeport over {arrays[0].shape[0]} samples in chunks of {chunk} "
        "(bounded memory) and passed to quantize_static as its calibration cache."
    )
    if method == "entropy":
        notes.append(
            f"entropy calibration: KL-divergence thresholds over {ENTROPY_BINS}-bin histograms "
            f"({ENTROPY_QUANTIZED_BINS} quantized bins), computed with onnxruntime's EntropyCalibrater."
        )
    quantize_static(
        source,
        request["int8_path"],
        _reader(arrays, request["input_names"]),
        quant_format=QuantFormat.QDQ,
        per_channel=request["per_channel"],
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=_METHOD[method](CalibrationMethod),
        calibration_cache_path=str(cache),
    )


_METHOD = {
    "minmax": lambda m: m.MinMax,
    "entropy": lambda m: m.Entropy,
    "percentile": lambda m: m.Percentile,
}


def calibration_ranges(
    model_path: str, arrays: list[Any], names: list[str], method: str, workdir: Path, chunk: int | None = None
) -> tuple[Any, int]:
    """Activation ranges over every sample, collected ``chunk`` samples at a time (default: sized by memory).

    MinMax merges chunk ranges by min/max, so the result equals one pass over all samples. The
    histogram methods merge chunk histograms (re-binned when the range grows), as onnxruntime does
    between its own strided passes.

    ``quantize_static``'s own 128-bin entropy calibration leaves exactly one candidate threshold (the
    full range): its "entropy" models were byte-identical to MinMax ones (MNIST CNN and MLPerf Tiny AD,
    onnxruntime 1.32), so entropy uses TensorRT's 2048 bins here.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    extra = {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS} if method == "entropy" else {}
    calibrator = create_calibrator(
        Path(model_path),
        None,
        augmented_model_path=str(workdir / f"augmented_{method}.onnx"),
        calibrate_method=_METHOD[method](CalibrationMethod),
        extra_options=extra,
    )
    count = int(arrays[0].shape[0])
    if chunk is None:
        chunk = MINMAX_CHUNK if method == "minmax" else max(1, HISTOGRAM_CHUNK_BYTES // _sample_bytes(model_path))
    chunk = max(1, min(chunk, count))
    for start in range(0, count, chunk):
        calibrator.collect_data(_reader(arrays, names, start, start + chunk))
    return calibrator.compute_data(), chunk


def _sample_bytes(model_path: str) -> int:
    """Float32 bytes of every activation of one sample, from the shapes ``quant_pre_process`` inferred."""
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    total = 0
    for value in (*model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        size = 1
        for i, dim in enumerate(dims):
            size *= dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else (1 if i == 0 else 64)
        total += 4 * size
    return max(total, 1)


# --- entry point ---------------------------------------------------------------------------------

_TASKS = {"convert": convert, "verify": verify}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    task = request["task"]
    if os.environ.get(CRASH_ENV) == task:
        os.abort()
    try:
        result = _TASKS[task](request)
    except MemoryError:
        result = {"ok": False, "stage": task, "error_type": "MemoryError", "error": "out of memory"}
    except Exception as exc:  # reported to the parent, which turns it into a ConversionError
        result = {
            "ok": False,
            "stage": task,
            "error_type": type(exc).__name__,
            "error": str(exc),
            "traceback": traceback.format_exc(),
        }
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
