"""The ONNX quantizer's child process: ``python -m exporter.convert.onnx_worker REQUEST.json``.

onnxruntime's static quantization runs the model over every calibration sample and, for the Entropy
and Percentile methods, keeps a histogram of every activation tensor: on a large model that can grow
until the kernel's OOM killer ends the process. Running it here turns that into an exit status the
parent can explain, and keeps the quantizer's own ``print()`` chatter in a log file. Only
onnxruntime and numpy are imported (no TensorFlow): the child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

METHODS = ("minmax", "entropy", "percentile")
#: TensorRT's KL calibration histogram (2048 bins searched for the best 128-bin window).
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


class _Reader:
    """Feeds the calibration samples one at a time (batch 1), keyed by the ONNX input names."""

    def __init__(self, calib_path: str, names: list[str]) -> None:
        import numpy as np

        data = np.load(calib_path)
        self._arrays = [np.ascontiguousarray(data[f"input_{i}"], dtype=np.float32) for i in range(len(names))]
        self._names = names
        self._next = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._next >= self._arrays[0].shape[0]:
            return None
        i = self._next
        self._next += 1
        return {name: a[i : i + 1] for name, a in zip(self._names, self._arrays, strict=True)}

    def rewind(self) -> None:
        self._next = 0


def _reader(calib_path: str, names: list[str]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(calib_path, names)


def quantize(request: dict[str, Any]) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    workdir = Path(request["output_path"]).parent
    timings: dict[str, float] = {}
    notes: list[str] = []
    source = request["float_path"]
    pre = str(workdir / "preprocessed.onnx")
    start = time.perf_counter()
    try:
        quant_pre_process(source, pre)
        source = pre
    except Exception as exc:  # optional step: quantizing without it is still correct, only less optimal
        notes.append(
            f"onnxruntime quant_pre_process failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "quantized the model without pre-processing."
        )
    timings["preprocess_s"] = time.perf_counter() - start
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[request["calibrate_method"]]
    start = time.perf_counter()
    cache = None
    if request["calibrate_method"] == "entropy":
        cache = _entropy_ranges(source, request, workdir)
        notes.append(
            f"entropy calibration: KL-divergence thresholds over {ENTROPY_BINS}-bin histograms "
            f"({ENTROPY_QUANTIZED_BINS} quantized bins), computed by edgeport with onnxruntime's EntropyCalibrater."
        )
    quantize_static(
        source,
        request["output_path"],
        _reader(request["calib_path"], request["input_names"]),
        quant_format=QuantFormat.QDQ,
        per_channel=request["per_channel"],
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        calibration_cache_path=cache,
    )
    timings["quantize_s"] = time.perf_counter() - start
    return {"ok": True, "timings": timings, "notes": notes}


def _entropy_ranges(model_path: str, request: dict[str, Any], workdir: Path) -> str:
    """Entropy ranges from a histogram fine enough for the KL search to choose anything.

    ``quantize_static`` builds its EntropyCalibrater with 128 histogram bins and 128 quantized bins,
    which leaves exactly one candidate threshold (the full range): its "entropy" models were
    byte-identical to MinMax ones (MNIST CNN and MLPerf Tiny AD, onnxruntime 1.32). The ranges are
    computed here with TensorRT's 2048 bins and handed to ``quantize_static`` as its calibration cache.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        Path(model_path),
        None,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )
    calibrator.collect_data(_reader(request["calib_path"], request["input_names"]))
    cache = workdir / "entropy_ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return str(cache)


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    try:
        result = quantize(request)
    except MemoryError:
        result = {
            "ok": False,
            "error_type": "MemoryError",
            "error": "out of memory",
            "traceback": traceback.format_exc(),
        }
    except Exception as exc:  # reported to the parent, which turns it into a ConversionError
        result = {"ok": False, "error_type": type(exc).__name__, "error": str(exc), "traceback": traceback.format_exc()}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
