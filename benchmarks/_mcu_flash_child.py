"""TFLite Micro child for benchmarks/mcu_flash.py: model outputs on a fixed input set, and interleaved latency.

Run only by mcu_flash.py, one fresh process per request (``python _mcu_flash_child.py REQUEST.json``),
so TFLite Micro's ``abort()`` on a model ends this child, not the benchmark, and no TensorFlow is
loaded in the process being timed. Two modes:

- ``outputs``: one model, every sample of an .npz (float inputs quantized with the input's scale and
  zero point, as firmware does), outputs dequantized with the output's; also the raw int8 outputs, so
  the parent can compare two models byte for byte.
- ``latency``: several models loaded side by side and invoked in round-robin batches (the order
  rotating every round), so a drift of the machine lands on all of them alike; per-round medians.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Arena for every interpreter here: far above what VWW (about 106 kB) and AD (about 101 kB) need.
ARENA = 4 << 20


def _interpreter(path: str) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(Path(path).read_bytes(), arena_size=ARENA)


def _quant(detail: dict[str, Any]) -> tuple[float, int]:
    quant = detail.get("quantization_parameters") or {}
    scale = float((list(quant.get("scales", [])) or [1.0])[0]) or 1.0
    return scale, int((list(quant.get("zero_points", [])) or [0])[0])


def _quantize(sample: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    sample = sample.reshape(tuple(int(d) for d in detail["shape"]))
    if np.issubdtype(dtype, np.integer):
        scale, zero = _quant(detail)
        info = np.iinfo(dtype)
        sample = np.clip(np.round(sample / scale) + zero, info.min, info.max)
    return np.ascontiguousarray(sample.astype(dtype))


def outputs(request: dict[str, Any]) -> dict[str, Any]:
    interp = _interpreter(request["model"])
    detail_in = interp.get_input_details(0)
    detail_out = interp.get_output_details(0)
    scale, zero = _quant(detail_out)
    data = np.load(request["inputs"])
    raw = []
    for sample in data:
        interp.reset()
        interp.set_input(_quantize(sample[None], detail_in), 0)
        interp.invoke()
        raw.append(np.array(interp.get_output(0)).reshape(-1))
    raw_arr = np.stack(raw)
    np.savez(request["result_npz"], raw=raw_arr, real=(raw_arr.astype(np.float64) - zero) * scale)
    return {"ok": True, "samples": len(raw)}


def latency(request: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    interps = []
    for path in request["models"]:
        interp = _interpreter(path)
        detail = interp.get_input_details(0)
        info = np.iinfo(np.dtype(detail["dtype"]))
        shape = tuple(int(d) for d in detail["shape"])
        interp.set_input(rng.integers(info.min, int(info.max) + 1, shape, dtype=np.dtype(detail["dtype"])), 0)
        for _ in range(request["warmup"]):
            interp.invoke()
        interps.append(interp)
    rounds, batch = request["rounds"], request["batch"]
    from _interleave import rotating_rounds  # beside this script, first on sys.path

    _, medians = rotating_rounds([i.invoke for i in interps], rounds, batch)
    return {"ok": True, "round_medians_ms": medians}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    result = {"outputs": outputs, "latency": latency}[request["mode"]](request)
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
