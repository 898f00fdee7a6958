"""exporter.analyze.memory: flash/RAM estimates from the graph, checked against TFLite Micro's own arena."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.analyze import estimate_memory, live_ranges
from exporter.verify import TFLiteGraph

#: The real VWW arena was 1.88x the estimate on the x86-64 host (103,680 B vs 55,296 B, TFLM 2026-10);
#: the bound below is a stated factor, not a fit: TFLM adds per-op persistent data on top of activations.
ARENA_FACTOR = 2.5

_TFLM_SCRIPT = """
import sys
from tflite_micro.python.tflite_micro import runtime
interpreter = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
interpreter.print_allocations()
"""


def tflm_arena(path: Path) -> dict[str, int]:
    """TFLite Micro's recorded arena (total, head = planned non-persistent, tail = persistent).

    Run in a child process: TFLM writes the numbers to the C-level stderr, and some kernels abort().
    """
    pytest.importorskip("tflite_micro")
    done = subprocess.run(
        [sys.executable, "-c", _TFLM_SCRIPT, str(path), str(8 * 1024 * 1024)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = dict(re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", done.stderr))
    assert done.returncode == 0 and len(found) == 3, done.stderr[-2000:]
    return {key: int(value) for key, value in found.items()}


@pytest.fixture(scope="module")
def vww_path(assets: Path) -> Path:
    return assets / "models" / "mlperf_tiny" / "visual_wake_words" / "vww_96_int8.tflite"


def test_vww_estimate_matches_a_hand_count(vww_path: Path) -> None:
    graph = TFLiteGraph.from_file(vww_path)
    estimate = estimate_memory(graph)
    assert estimate.model_bytes == vww_path.stat().st_size == 333_288
    # Weights: the constant buffers the tensors use, as the schema stores them (the model's metadata buffer,
    # 16 B of min_runtime_version, is not a weight; the rest of the file is mostly per-channel quantization).
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(vww_path.read_bytes()), 0)
    used = {t.buffer for t in model.subgraphs[0].tensors}
    stored = sum(len(b.data) for i, b in enumerate(model.buffers) if i in used and b.data is not None)
    assert estimate.weights_bytes == stored == 219_072
    # Peak at op 2 (1x1 conv 48x48x8 -> 48x48x16, int8): input and output live together.
    assert estimate.peak_op_index == 2
    assert estimate.activation_peak_bytes == 48 * 48 * 8 + 48 * 48 * 16
    assert estimate.io_bytes == 96 * 96 * 3 + 2
    sizes = [t.nbytes for t in estimate.largest_tensors]
    assert len(sizes) == 5 and sizes == sorted(sizes, reverse=True) and sizes[0] == 48 * 48 * 16
    assert all(t.name and t.dtype == "int8" for t in estimate.largest_tensors)
    assert any("estimate, not a measurement" in line for line in estimate.method)
    assert json.loads(json.dumps(estimate.to_dict()))["activation_peak_bytes"] == estimate.activation_peak_bytes


def test_live_ranges_follow_execution_order(vww_path: Path) -> None:
    graph = TFLiteGraph.from_file(vww_path)
    ranges = live_ranges(graph)
    last = len(graph.ops) - 1
    assert ranges[graph.inputs[0]] == (0, 0)  # read by the first conv only
    assert ranges[graph.outputs[0]] == (last, last)  # written by the softmax, kept to the end
    assert all(not graph.tensors[i].is_constant for i in ranges)
    assert ranges[graph.ops[5].outputs[0]] == (5, 6)


def test_vww_estimate_against_the_measured_tflite_micro_arena(vww_path: Path) -> None:
    estimate = estimate_memory(TFLiteGraph.from_file(vww_path)).activation_peak_bytes
    arena = tflm_arena(vww_path)
    # Measured on the x86-64 host: total 103,680 B = head 73,728 (planned activations) + tail 29,952.
    assert estimate <= arena["head"] <= arena["total"] <= ARENA_FACTOR * estimate, (estimate, arena)


@pytest.mark.parametrize(
    "relative",
    [
        "mlperf_tiny/anomaly_detection/ad01_int8.tflite",
        "mlperf_tiny/streaming_wakeword/str_ww_ref_model.tflite",
        "tflm/micro_speech/micro_speech_quantized.tflite",
        "edgetpu_pairs/mnist7.tflite",
    ],
)
def test_estimate_is_a_lower_bound_of_tflm_planned_activations(assets: Path, relative: str) -> None:
    """A perfect planner needs the liveness peak; TFLM's greedy planner needs at least as much."""
    path = assets / "models" / relative
    estimate = estimate_memory(TFLiteGraph.from_file(path)).activation_peak_bytes
    arena = tflm_arena(path)
    assert 0 < estimate <= arena["head"] <= arena["total"], (estimate, arena)
