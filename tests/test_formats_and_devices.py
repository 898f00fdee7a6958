"""Export-level wiring: ONNX beside TFLite, host benchmarks in the report, the Edge TPU section and its fix."""

from __future__ import annotations

import json

import pytest
from cli_helpers import files_under, quiet_keras, run_cli

import exporter


@pytest.fixture(scope="module")
def gelu_model(tmp_path_factory):
    """Conv -> exact GELU -> conv -> pool -> dense: GELU in the middle of the graph."""
    keras = quiet_keras()
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.Activation("gelu", name="mid_gelu")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    path = tmp_path_factory.mktemp("gelu") / "gelu_mid.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classifier")(x)).save(path)
    return path


def test_android_writes_tflite_and_onnx_with_benchmarks_side_by_side(tmp_path, tiny_keras_path, tiny_calib_path):
    result = exporter.export(
        tiny_keras_path,
        target="android-arm64",
        calib=str(tiny_calib_path),
        output_dir=tmp_path,
        bench=True,
        bench_runs=5,
    )
    assert result.exit_code == 0
    names = {p.name for p in files_under(tmp_path)}
    assert {"model_int8.tflite", "model_float.onnx", "model_int8.onnx", "report.html"} <= names
    report = json.loads((tmp_path / "report.json").read_text())
    onnx = report["onnx"]
    assert onnx["float"]["size_bytes"] == (tmp_path / "model_float.onnx").stat().st_size
    assert onnx["float"]["check"]["max_abs_error"] < 1e-4
    assert onnx["int8"]["check"]["top1_agreement"] is not None
    benches = {b["model"]: b for b in report["benchmark"]}
    assert set(benches) == {"tflite", "onnx-float", "onnx-int8"}
    assert benches["tflite"]["interpreter"] == "litert" and benches["onnx-int8"]["interpreter"] == "onnxruntime"
    assert benches["tflite"]["latency"]["runs"] == 5 and len(benches["tflite"]["latency"]["timings_ms"]) == 5
    md = (tmp_path / "report.md").read_text()
    assert "## ONNX" in md and "## Host benchmark" in md and "Host timings are not device timings" in md
    html = (tmp_path / "report.html").read_text()
    assert "<h2>ONNX</h2>" in html and "<code>model_int8.onnx</code>" in html


def test_generic_onnx_target_writes_only_onnx(tmp_path, tiny_keras_path, tiny_calib_path, capsys):
    run = run_cli(
        capsys, "export", tiny_keras_path, "--target", "onnx", "--calib", tiny_calib_path, "-o", tmp_path, "--quiet"
    )
    assert run.code == 0, run.err
    names = {p.name for p in files_under(tmp_path)}
    assert "model_int8.onnx" in names and "model_int8.tflite" not in names


def test_cortex_m_ram_is_the_measured_arena_with_margin_plus_io(tmp_path, tiny_keras_path, tiny_calib_path):
    result = exporter.export(
        tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path, bench=True, bench_runs=3
    )
    report = result.report("cortex-m4")
    ram = next(f for f in report.fit if f.resource == "ram")
    firmware = report.extra["cortex_m"].to_dict()  # the section object; report.json holds its dict
    measured = report.extra["benchmark"][0]["arena"]["bytes"]  # the benchmark's own bisection agrees
    assert firmware["arena"]["measured_bytes"] == measured
    assert measured <= firmware["arena"]["bytes"] <= 1.15 * measured + 16
    assert ram.needed_bytes == firmware["arena"]["bytes"] + firmware["io_bytes"]
    assert "tensor arena" in ram.method
    assert "<h2>Firmware (TFLite Micro)</h2>" in (tmp_path / "report.html").read_text()


def test_exact_gelu_with_explicit_onnx_format_fails_with_no_file(gelu_model, tmp_path, tiny_calib_path, capsys):
    run = run_cli(
        capsys,
        "export",
        gelu_model,
        "--target",
        "android-arm64",
        "--format",
        "onnx",
        "--calib",
        tiny_calib_path,
        "-o",
        tmp_path,
        "--quiet",
    )
    # ONNX was the only output asked for: the target is "not supported" with the reason (exit 3), and only
    # its reports are written, no model file (README, exit codes)
    assert run.code == 3
    assert "mid_gelu" in run.err and "approximate=True" in run.err
    assert sorted(p.name for p in files_under(tmp_path)) == ["report.html", "report.json", "report.md"]
    assert '"verdict": "not supported"' in (tmp_path / "report.json").read_text()


def test_exact_gelu_when_onnx_is_only_the_default_keeps_the_tflite(gelu_model, tmp_path, tiny_calib_path):
    result = exporter.export(gelu_model, target="android-arm64", calib=str(tiny_calib_path), output_dir=tmp_path)
    assert result.exit_code == 0
    assert (tmp_path / "model_int8.tflite").exists() and not list(tmp_path.glob("*.onnx"))
    assert any(w.startswith("ONNX not written") and "mid_gelu" in w for w in result.report("android-arm64").warnings)


def test_edgetpu_report_names_the_first_cpu_layer_and_compat_fixes_it(gelu_model, tmp_path, tiny_calib_path, capsys):
    result = exporter.export(
        gelu_model, target="edgetpu", calib=str(tiny_calib_path), output_dir=tmp_path / "plain", force=True
    )
    section = result.report("edgetpu").extra["edgetpu"]
    assert section["fully_mapped"] is False
    assert "mid_gelu" in json.dumps(section["first_cpu_op"])
    assert section["tools"]["compiler"] is None and "edgetpu-compiler" in section["tools"]["note"]
    run = run_cli(
        capsys,
        "export",
        gelu_model,
        "--target",
        "edgetpu",
        "--calib",
        tiny_calib_path,
        "--edgetpu-compat",
        "-o",
        tmp_path / "fixed",
        "--quiet",
    )
    assert run.code == 0, run.err
    fixed = json.loads((tmp_path / "fixed" / "report.json").read_text())
    assert fixed["edgetpu"]["fully_mapped"] is True
    assert "<h2>Edge TPU partition</h2>" in (tmp_path / "fixed" / "report.html").read_text()
    assert any("--edgetpu-compat" in note for note in fixed["model"]["notes"])
