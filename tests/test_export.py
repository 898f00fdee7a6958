"""The export driver end to end on tiny models: verdicts, exit codes, determinism, every source format."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import files_under, quiet_keras, run_cli

import exporter
from exporter.errors import ConversionError
from exporter.verify.graph import TFLiteGraph

DATA = Path(__file__).parent / "data"


def _save(model, folder: Path, name: str) -> Path:
    path = folder / name
    model.save(path)
    return path


def test_python_api_mirrors_the_cli(tmp_path, tiny_keras_path, tiny_calib_path):
    result = exporter.export(
        tiny_keras_path, target=["cortex-m4", "edgetpu"], calib=str(tiny_calib_path), output_dir=tmp_path
    )
    assert result.exit_code == 0 and result.ok
    assert [r.target for r in result.reports] == ["cortex-m4", "edgetpu"]
    report = result.report("cortex-m4")
    assert report.verdict == "ok"
    assert {f.resource for f in report.fit} == {"flash", "ram"}
    assert result.report("edgetpu").fit[-1].resource == "param_cache"
    assert report.fidelity["outputs"][0]["samples"] == 60
    assert (tmp_path / "cortex-m4" / "model_int8.tflite").is_file()
    assert "cortex-m4" in result.summary() and "verdict" in result.summary()
    on_disk = json.loads((tmp_path / "cortex-m4" / "report.json").read_text())
    assert on_disk["calibration"]["samples"] == 60 and on_disk["calibration"]["seed"] == 0
    assert on_disk["conversion"]["per_channel"] is True
    assert on_disk["artifacts"][0]["bytes"] == (tmp_path / "cortex-m4" / "model_int8.tflite").stat().st_size


def test_targets_sharing_a_quantization_config_share_one_conversion(tmp_path, tiny_keras_path, tiny_calib_path):
    result = exporter.export(tiny_keras_path, target="all", calib=str(tiny_calib_path), output_dir=tmp_path)
    assert len(result.reports) == 5
    conversions = [
        {k: v for k, v in r.conversion.items() if k not in ("compaction", "zero_points")} for r in result.reports
    ]
    assert all(c == conversions[0] for c in conversions)  # same timing too: converted once, not five times
    # MCU targets get the flash-compacted file (names shortened; TFLite Micro's with zero points shared, the
    # Ethos-U's, which Vela reads, without), the others the converter's bytes
    digests = {r.target: r.artifacts[0].sha256 for r in result.reports}
    tflm = {t for t in digests if t in ("cortex-m4", "cortex-m7")}
    others = {t for t in digests if not t.startswith("cortex-m")}
    assert len({digests[t] for t in tflm}) == 1 and len({digests[t] for t in others}) == 1
    assert len(set(digests.values())) == 3


def test_rerun_is_byte_identical_and_keeps_mtimes(tmp_path, tiny_keras_path, tiny_calib_path):
    args = dict(target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path, gzip=True)
    exporter.export(tiny_keras_path, **args)
    outputs = [tmp_path / "model_int8.tflite", tmp_path / "model_int8.tflite.gz"]
    first = [(p.read_bytes(), p.stat().st_mtime_ns) for p in outputs]
    time.sleep(0.05)
    exporter.export(tiny_keras_path, **args)
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in outputs] == first, "unchanged outputs are not rewritten"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_gzip_flag_writes_a_gunzip_able_twin_and_a_later_run_without_it_removes_it(
    tmp_path, tiny_keras_path, tiny_calib_path, capsys
):
    import gzip

    args = ("export", tiny_keras_path, "--target", "android-arm64", "--calib", tiny_calib_path, "-o", tmp_path)
    run = run_cli(capsys, *args, "--format", "tflite", "--gzip", "--quiet")
    assert run.code == 0, run.err
    model, packed = tmp_path / "model_int8.tflite", tmp_path / "model_int8.tflite.gz"
    assert gzip.decompress(packed.read_bytes()) == model.read_bytes()
    assert packed.stat().st_size <= len(gzip.compress(model.read_bytes(), 9))  # never worse than gzip -9
    report = json.loads((tmp_path / "report.json").read_text())
    listed = {a["name"]: a["bytes"] for a in report["artifacts"]}
    assert listed["model_int8.tflite.gz"] == packed.stat().st_size
    assert "model_int8.tflite.gz:" in (tmp_path / "report.md").read_text()
    # Without --gzip the old .gz would describe whatever model came before: it is removed, not left stale.
    assert run_cli(capsys, *args, "--format", "tflite", "--quiet").code == 0
    assert model.is_file() and not packed.exists()
    assert "model_int8.tflite.gz" not in {
        a["name"] for a in json.loads((tmp_path / "report.json").read_text())["artifacts"]
    }


def test_input_model_is_never_modified(tmp_path, tiny_keras_path, tiny_calib_path):
    before = tiny_keras_path.read_bytes(), tiny_keras_path.stat().st_mtime_ns
    exporter.export(tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path)
    assert (tiny_keras_path.read_bytes(), tiny_keras_path.stat().st_mtime_ns) == before


def test_int8_tflite_is_retargeted_without_reconversion(tmp_path, tiny_keras_path, tiny_calib_path, capsys):
    exporter.export(tiny_keras_path, target="android-arm64", calib=str(tiny_calib_path), output_dir=tmp_path / "a")
    given = tmp_path / "a" / "model_int8.tflite"
    run = run_cli(capsys, "export", given, "--target", "cortex-m7,edgetpu", "-o", tmp_path / "b", "--quiet")
    assert run.code == 0, run.err
    for target in ("cortex-m7", "edgetpu"):
        assert (tmp_path / "b" / target / "model_int8.tflite").read_bytes() == given.read_bytes()
        report = json.loads((tmp_path / "b" / target / "report.json").read_text())
        assert report["conversion"]["scheme"].startswith("given .tflite")
        assert report["model"]["format"] == "tflite"


def test_saved_model_directory_exports(tmp_path, tiny_calib_path):
    keras = quiet_keras()
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    folder = tmp_path / "saved"
    model.export(
        str(folder),
        format="tf_saved_model",
        input_signature=[tf.TensorSpec((None, 16, 16, 1), tf.float32)],
        verbose=False,
    )
    result = exporter.export(folder, target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path / "out")
    report = result.report("cortex-m4")
    assert report.verdict == "ok", report.reasons
    assert report.fidelity["outputs"][0]["snr_db"] > 20  # float reference = float TFLite of the same SavedModel
    graph = TFLiteGraph.from_file(tmp_path / "out" / "model_int8.tflite")
    assert list(graph.tensors[graph.inputs[0]].shape_signature) == [1, 16, 16, 1]  # static batch 1


def test_tf23_era_saved_model_goes_through_compat_v1(tmp_path):
    folder = DATA / "legacy_saved_model"
    source = exporter.load_model(folder)
    assert source.loader == "compat.v1"
    shape = source.inputs[0].shape
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((40, *shape[1:]), dtype=np.float32))
    result = exporter.export(folder, target="android-arm64", calib=str(calib), output_dir=tmp_path / "out")
    report = result.report("android-arm64")
    assert report.verdict == "ok", report.reasons
    assert "compat.v1" in report.conversion["converter"]
    assert report.fidelity["outputs"][0]["snr_db"] > 15


def test_unsupported_op_exits_3_names_the_layer_and_writes_no_model(tmp_path, tiny_calib_path, capsys):
    keras = quiet_keras()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, name="features")(inputs)
    x = keras.layers.Activation("gelu", name="gelu_act")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = _save(keras.Model(inputs, keras.layers.Dense(3)(x)), tmp_path, "gelu.keras")
    out = tmp_path / "out"
    run = run_cli(capsys, "export", path, "--target", "cortex-m4", "--calib", tiny_calib_path, "-o", out, "--quiet")
    assert run.code == 3
    assert "GELU" in run.err and "gelu_act" in run.err
    assert not (out / "model_int8.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "not supported" and report["reasons"]
    # the same model is fine on a phone, and --force writes it for the MCU, saying why
    assert (
        run_cli(
            capsys,
            "export",
            path,
            "--target",
            "android-arm64",
            "--calib",
            tiny_calib_path,
            "-o",
            tmp_path / "phone",
            "--quiet",
        ).code
        == 0
    )
    forced = run_cli(
        capsys, "export", path, "--target", "cortex-m4", "--calib", tiny_calib_path, "-o", out, "--quiet", "--force"
    )
    assert forced.code == 0 and (out / "model_int8.tflite").exists()
    assert json.loads((out / "report.json").read_text())["verdict"] == "written with --force"


def test_model_too_large_for_the_board_exits_3_with_numbers(tmp_path, tiny_keras_path, tiny_calib_path, capsys):
    profile = tmp_path / "small-board.toml"
    profile.write_text(
        'inherit = "cortex-m4"\nname = "small-board"\ntitle = "tiny"\ndescription = "a board with 2 KiB of flash"\n'
        "[memory]\nflash_budget_bytes = 2048\n"
    )
    run = run_cli(
        capsys,
        "export",
        tiny_keras_path,
        "--target",
        profile,
        "--calib",
        tiny_calib_path,
        "-o",
        tmp_path / "o",
        "--quiet",
    )
    assert run.code == 3
    assert "flash needs" in run.err and "over the budget of 2,048 B" in run.err
    assert "To fit (" in run.err and "--flash-budget" in run.err  # and what to change


def test_over_budget_on_a_phone_says_what_to_change(tmp_path, tiny_keras_path, tiny_calib_path, capsys):
    args = ("export", tiny_keras_path, "-t", "android-arm64", "--calib", tiny_calib_path, "-o", tmp_path / "o")
    run = run_cli(capsys, *args, "--format", "tflite", "--flash-budget", "1K", "--quiet")
    assert run.code == 3
    reason = next(r for r in json.loads((tmp_path / "o" / "report.json").read_text())["reasons"] if "flash" in r)
    assert "over the budget of 1,024 B" in reason and "To fit (" in reason and "width multiplier" in reason
    assert "Biggest layers: layer classifier" in reason or "Biggest layers: layer conv" in reason, reason


def test_float_ops_left_by_layernorm_are_named_for_integer_only_targets(tmp_path, tiny_calib_path):
    keras = quiet_keras()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="my_layernorm")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = _save(keras.Model(inputs, keras.layers.Dense(3)(x)), tmp_path, "ln.keras")
    result = exporter.export(
        path, target="edgetpu,android-arm64", calib=str(tiny_calib_path), output_dir=tmp_path / "o"
    )
    edgetpu = result.report("edgetpu")
    assert edgetpu.verdict == "not supported"
    assert edgetpu.verification["fully_integer"] is False
    assert any("my_layernorm" in reason for reason in edgetpu.reasons), edgetpu.reasons
    assert result.report("android-arm64").verdict == "ok"
    assert result.exit_code == 3


def test_tflm_softmax_limit_is_flagged_before_anyone_runs_it(tmp_path):
    keras = quiet_keras()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1000, activation="softmax", name="head")])
    path = _save(model, tmp_path, "wide.keras")
    calib = tmp_path / "x.npy"
    np.save(calib, np.random.default_rng(0).random((50, 8), dtype=np.float32))
    result = exporter.export(path, target="cortex-m4,android-arm64", calib=str(calib), output_dir=tmp_path / "o")
    assert result.report("cortex-m4").verdict == "not supported"
    assert any("570" in r for r in result.report("cortex-m4").reasons)
    assert result.report("android-arm64").verdict == "ok"


def test_converter_crash_on_non_unrolled_lstm_is_contained(tmp_path):
    keras = quiet_keras()
    model = keras.Sequential([keras.Input((12, 4)), keras.layers.LSTM(8, name="my_lstm"), keras.layers.Dense(2)])
    path = _save(model, tmp_path, "lstm.keras")
    calib = tmp_path / "seq.npy"
    np.save(calib, np.random.default_rng(0).random((20, 12, 4), dtype=np.float32))
    with pytest.raises(ConversionError, match=r"my_lstm.*unroll=True") as info:
        exporter.export(path, target="android-arm64", calib=str(calib), output_dir=tmp_path / "o")
    assert info.value.exit_code == 4
    assert files_under(tmp_path / "o") == []


def test_synthetic_calibration_is_marked_not_representative(tmp_path, tiny_keras_path):
    result = exporter.export(tiny_keras_path, target="cortex-m4", calib="synthetic", output_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["calibration"]["representative"] is False
    assert "synthetic, not representative" in (tmp_path / "report.md").read_text()
    assert result.exit_code == 0


def test_default_output_folder_is_per_model_and_target(tmp_path, tiny_keras_path, tiny_calib_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exporter.export(tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path))
    assert (tmp_path / "edgeport-out" / "tiny" / "cortex-m4" / "model_int8.tflite").is_file()
    assert os.listdir(tmp_path) == ["edgeport-out"]
