"""TFLite Micro's flash layout: per-channel zero points stored once per tensor (exporter.convert.compact).

On real models: the shared file is smaller by 8 B per channel, TFLite Micro's outputs are bit-identical
(child processes), LiteRT refuses it, edgeport itself reads it (the same model with the zero points
repeated), and the Cortex-M export ships it, checked, unless --keep-zero-points.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli

from exporter.compress.lut_check import check_bit_exact
from exporter.convert.compact import expand_zero_points, share_zero_points, tflm_only

VWW = "models/mlperf_tiny/visual_wake_words/vww_96_int8.tflite"
AD = "models/mlperf_tiny/anomaly_detection/ad01_int8.tflite"


def _per_channel(model: bytes) -> list[tuple[int, int]]:
    """(scales, zero points) of every tensor with more than one scale."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    out = []
    for t in m.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            out.append((len(q.scale), len(q.zeroPoint)))
    return out


def _litert_outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_vww_reference_shared_is_smaller_bit_exact_in_tflm_and_refused_by_litert(assets):
    original = (assets / VWW).read_bytes()
    shared, report = share_zero_points(original)
    before, after = _per_channel(original), _per_channel(shared)
    channels = sum(scales for scales, _ in before)
    assert report.tensors == len(before) == len(after) > 40
    assert all(zps == scales for scales, zps in before) and all(zps == 1 for _, zps in after)
    # 8 B per dropped int64, within the flatbuffer's re-layout (VWW: 2,700+ channels)
    assert abs(report.saved - 8 * (channels - len(before))) < 2_000, (report.saved, channels)
    assert tflm_only(shared) == "its per-channel zero points are stored once per tensor"
    assert tflm_only(original) is None

    rng = np.random.default_rng(3)
    inputs = [rng.uniform(0, 1, size=(1, 96, 96, 3)).astype(np.float32) for _ in range(4)]
    check = check_bit_exact(original, shared, inputs, arena=False)
    assert check.bit_exact and check.samples == 4, check.summary()

    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises(ValueError, match="1 zero_point values"):
        Interpreter(model_content=shared)
    x = rng.integers(-128, 128, size=(1, 96, 96, 3), dtype=np.int8)
    expanded = expand_zero_points(shared)
    assert _per_channel(expanded) == before
    assert np.array_equal(_litert_outputs(expanded, x), _litert_outputs(original, x))


def test_per_tensor_model_is_left_as_it_is(assets):
    original = (assets / AD).read_bytes()
    shared, report = share_zero_points(original)
    assert shared == original and report.tensors == 0 and report.saved == 0


def test_edgeport_reads_the_shared_layout_as_input(assets, tmp_path, capsys):
    """A TFLite Micro file is a valid model, not a corrupt one: exported again for LiteRT it loads there,
    and LiteRT benchmarks it (the same model, zero points repeated in memory)."""
    shared = tmp_path / "vww_shared.tflite"
    shared.write_bytes(share_zero_points((assets / VWW).read_bytes())[0])
    run = run_cli(capsys, "export", shared, "--target", "android-arm64", "-o", tmp_path / "out", "--quiet")
    assert run.code == 0, run.err
    written = (tmp_path / "out" / "model_int8.tflite").read_bytes()
    assert tflm_only(written) is None and _per_channel(written)[0][1] > 1
    out = tmp_path / "bench.json"
    run = run_cli(capsys, "bench", shared, "--target", "android-arm64", "--runs", "3", "--warmup", "0", "--json", out)
    assert run.code == 0, run.err
    result = json.loads(out.read_text())["results"][0]
    assert result["interpreter"] == "litert" and result["latency"]["runs"] == 3 and result["latency"]["median_ms"] > 0


def test_cortex_m_export_ships_shared_zero_points_checked_and_says_so(
    tiny_keras_path, tiny_calib_path, tmp_path, capsys
):
    base = ("export", tiny_keras_path, "--target", "cortex-m4", "--calib", tiny_calib_path, "--format", "tflite")
    run = run_cli(capsys, *base, "-o", tmp_path / "shared")
    assert run.code == 0, run.err
    assert "loads in TFLite Micro only" in run.err and "--keep-zero-points" in run.err  # on the terminal
    report = json.loads((tmp_path / "shared" / "report.json").read_text())
    packing = report["flash_packing"]
    shipped = (tmp_path / "shared" / "model_int8.tflite").read_bytes()
    assert packing["shipped_bytes"] == len(shipped) == report["memory"]["model_bytes"]
    assert packing["zero_points"]["tensors"] >= 2  # the conv's filter and bias
    assert report["zero_points_check"]["bit_exact"] and report["zero_points_check"]["samples"] >= 1
    assert "zero points stored once" in report["conversion"]["zero_points"]
    assert "zero points stored once" in (tmp_path / "shared" / "report.md").read_text()
    flash = next(f for f in report["fit"] if f["resource"] == "flash")
    assert flash["needed_bytes"] == len(shipped) + report["cortex_m"]["kernel_code"]["total_bytes"]
    array = (tmp_path / "shared" / "model_data.cc").read_text()
    assert f"{len(shipped)}" in array  # the C array holds the shipped bytes

    run = run_cli(capsys, *base, "--keep-zero-points", "-o", tmp_path / "kept", "--quiet")
    assert run.code == 0, run.err
    kept = (tmp_path / "kept" / "model_int8.tflite").read_bytes()
    assert tflm_only(kept) is None and len(kept) - len(shipped) == packing["zero_points"]["saved"]
    assert "flash_packing" not in json.loads((tmp_path / "kept" / "report.json").read_text())


def test_a_given_tflite_ships_as_given(assets, tmp_path, capsys):
    """edgeport does not re-lay a .tflite the user converted: the Cortex-M file is their bytes."""
    run = run_cli(capsys, "export", assets / VWW, "--target", "cortex-m4", "-o", tmp_path, "--quiet")
    assert run.code == 0, run.err
    assert (tmp_path / "model_int8.tflite").read_bytes() == (assets / VWW).read_bytes()
