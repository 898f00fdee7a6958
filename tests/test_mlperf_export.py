"""End to end on the real MLPerf Tiny models: the numbers are checked against the published references."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_helpers import run_cli

from exporter.verify.graph import TFLiteGraph

VWW_REFERENCE_BYTES = 333_288
AD_FLOAT_SCORE = 9.4913  # float Keras ad01.h5 on the 196 windows of the shipped sample (assets README)


@pytest.fixture(scope="module")
def vww_images(assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vww_calib")
    for name in ("cat.bmp", "grace_hopper.bmp"):
        shutil.copy(assets / "images" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def vww_export(assets, vww_images, tmp_path_factory):
    from exporter.cli import main

    out = tmp_path_factory.mktemp("vww_out")

    code = main(
        [
            "export",
            str(assets / "models/mlperf_tiny/visual_wake_words/vww_96.h5"),
            "--target",
            "edgetpu,cortex-m4,android-arm64",
            "--calib",
            str(vww_images),
            "--input-range",
            "0,1",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    return code, out


def test_vww_exports_for_three_targets(vww_export):
    code, out = vww_export
    assert code == 0
    for target in ("edgetpu", "cortex-m4", "android-arm64"):
        assert (out / target / "model_int8.tflite").is_file()
        report = json.loads((out / target / "report.json").read_text())
        assert report["verdict"] == "ok", report["reasons"]
        assert report["schema_version"] == 1


def test_vww_int8_input_quantization_matches_reference(vww_export):
    _, out = vww_export
    graph = TFLiteGraph.from_file(out / "cortex-m4" / "model_int8.tflite")
    tensor = graph.tensors[graph.inputs[0]]
    assert tensor.dtype == "int8" and list(tensor.shape) == [1, 96, 96, 3]
    assert tensor.scale[0] == pytest.approx(1 / 255, rel=1e-5)
    assert tensor.zero_point[0] == -128


def test_vww_int8_no_larger_than_reference(vww_export):
    _, out = vww_export
    size = (out / "edgetpu" / "model_int8.tflite").stat().st_size
    assert size <= VWW_REFERENCE_BYTES


def test_vww_top_class_agrees_with_float_on_calibration_images(vww_export):
    _, out = vww_export
    report = json.loads((out / "edgetpu" / "report.json").read_text())
    fidelity = report["fidelity"]["outputs"][0]
    assert fidelity["samples"] == 2
    assert fidelity["top1_agreement"] == 1.0


def test_vww_every_op_supported_on_edgetpu_and_tflm(vww_export):
    _, out = vww_export
    for target in ("edgetpu", "cortex-m4"):
        verification = json.loads((out / target / "report.json").read_text())["verification"]
        assert verification["fully_integer"] is True
        assert verification["ops"], "no ops reported"
        assert all(info["supported"] for info in verification["ops"].values()), verification["ops"]
        assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(verification["ops"])


def test_vww_uint8_io(assets, vww_images, tmp_path, capsys):
    run = run_cli(
        capsys,
        "export",
        assets / "models/mlperf_tiny/visual_wake_words/vww_96.h5",
        "--target",
        "edgetpu",
        "--io-dtype",
        "uint8",
        "--calib",
        vww_images,
        "--input-range",
        "0,1",
        "-o",
        tmp_path,
        "--quiet",
    )
    assert run.code == 0, run.err
    graph = TFLiteGraph.from_file(tmp_path / "model_int8.tflite")
    tensor = graph.tensors[graph.inputs[0]]
    assert tensor.dtype == "uint8"
    assert tensor.scale[0] == pytest.approx(1 / 255, rel=1e-5)
    assert tensor.zero_point[0] == 0


def ad_windows(assets) -> np.ndarray:
    """The 196 sliding five-frame windows (640 values each) of the shipped 200x128 log-mel sample."""
    raw = np.fromfile(
        assets / "models/mlperf_tiny/anomaly_detection/normal_id_01_00000000_hist_librosa.bin", dtype=np.float32
    )
    frames = raw.reshape(200, 128)
    return np.stack([frames[t : t + 5].reshape(640) for t in range(196)])


def anomaly_score(inputs: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.mean(np.mean(np.square(inputs - outputs), axis=1)))


def test_ad_int8_anomaly_score_within_2_percent_of_float(assets, tmp_path, capsys):
    from exporter.analyze.inference import run_tflite
    from exporter.convert.compact import expand_zero_points, tflm_only
    from exporter.load import load_model

    windows = ad_windows(assets)
    calib = tmp_path / "ad_windows.npy"
    np.save(calib, windows)
    model_path = assets / "models/mlperf_tiny/anomaly_detection/ad01.h5"
    run = run_cli(  # per-channel Dense: auto takes per-tensor for its arena (+5.4 %; tests/test_dense_quant_ram.py)
        capsys, "export", model_path, "--target", "cortex-m4", "--calib", calib, "--dense-quant", "per-channel",
        "-o", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert run.code == 0, run.err

    source = load_model(model_path)
    float_score = anomaly_score(windows, source.keras_model.predict(windows, verbose=0))
    assert float_score == pytest.approx(AD_FLOAT_SCORE, rel=1e-3)
    int8 = (tmp_path / "out" / "model_int8.tflite").read_bytes()
    assert "zero points" in (tflm_only(int8) or "")  # TFLite Micro's layout; the same model with them repeated:
    int8_score = anomaly_score(windows, run_tflite(expand_zero_points(int8), [windows])[0])
    assert abs(int8_score - float_score) / float_score < 0.02, (int8_score, float_score)
    fidelity = json.loads((tmp_path / "out" / "report.json").read_text())["fidelity"]["outputs"][0]
    assert fidelity["top1_agreement"] is None  # a 640-value reconstruction has no "top class"
    assert fidelity["snr_db"] > 20
