"""Every bad input ends in one line on stderr, its documented exit code, no traceback and no file written."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import files_under, run_cli

pytestmark = pytest.mark.filterwarnings("ignore")


def _expect_refusal(capsys, tmp_path: Path, args: list, pattern: str, code: int = 2) -> None:
    out_dir = tmp_path / "out"
    before = set(files_under(tmp_path))
    run = run_cli(capsys, "export", *args, "-o", out_dir, "--quiet")
    assert run.code == code, run.err
    assert "Traceback" not in run.err
    error_lines = [ln for ln in run.err.splitlines() if ln.strip()]
    assert len(error_lines) == 1, run.err
    import re

    assert re.search(pattern, error_lines[0]), error_lines[0]
    assert set(files_under(tmp_path)) == before, "a failed run must leave no file behind"


def test_missing_model_file(capsys, tmp_path, tiny_calib_path):
    _expect_refusal(
        capsys, tmp_path, [tmp_path / "nope.keras", "--calib", tiny_calib_path], r"nope\.keras does not exist"
    )


def test_directory_that_is_no_saved_model(capsys, tmp_path, tiny_calib_path):
    folder = tmp_path / "not_a_savedmodel"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    _expect_refusal(capsys, tmp_path, [folder, "--calib", tiny_calib_path], r"(?i)not a SavedModel")


def test_corrupt_keras_file(capsys, tmp_path, tiny_calib_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    _expect_refusal(capsys, tmp_path, [bad, "--calib", tiny_calib_path], r"(?i)broken\.keras.*(not a valid|corrupt)")


def test_truncated_keras_archive(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    data = tiny_keras_path.read_bytes()
    bad = tmp_path / "truncated.keras"
    bad.write_bytes(data[: len(data) // 2])
    _expect_refusal(capsys, tmp_path, [bad, "--calib", tiny_calib_path], r"truncated\.keras")


def test_text_file_named_h5(capsys, tmp_path, tiny_calib_path):
    bad = tmp_path / "model.h5"
    bad.write_text("definitely not HDF5\n")
    _expect_refusal(capsys, tmp_path, [bad, "--calib", tiny_calib_path], r"(?i)not an HDF5 file")


def test_lambda_layer_under_safe_mode(capsys, tmp_path, tiny_calib_path):
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double_it")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    _expect_refusal(capsys, tmp_path, [path, "--calib", tiny_calib_path], r"(?i)lambda.*--unsafe")


def test_dynamic_input_shape_without_input_shape(capsys, tmp_path, tiny_calib_path):
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "dynamic.keras"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    _expect_refusal(capsys, tmp_path, [path, "--calib", tiny_calib_path], r"dynamic shape.*--input-shape")


def test_calibration_of_the_wrong_shape(capsys, tmp_path, tiny_keras_path):
    calib = tmp_path / "wrong.npy"
    np.save(calib, np.zeros((10, 28, 28, 1), np.float32))
    _expect_refusal(capsys, tmp_path, [tiny_keras_path, "--calib", calib], r"(?i)shape")


def test_calibration_with_nan(capsys, tmp_path, tiny_keras_path):
    data = np.random.default_rng(0).random((60, 16, 16, 1), dtype=np.float32)
    data[7, 3, 3, 0] = np.nan
    calib = tmp_path / "nan.npy"
    np.save(calib, data)
    _expect_refusal(capsys, tmp_path, [tiny_keras_path, "--calib", calib], r"(?i)nan")


def test_empty_image_folder(capsys, tmp_path, tiny_keras_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _expect_refusal(capsys, tmp_path, [tiny_keras_path, "--calib", folder], r"(?i)no image")


def test_no_calibration_data(capsys, tmp_path, tiny_keras_path):
    _expect_refusal(capsys, tmp_path, [tiny_keras_path], r"needs representative calibration data.*--calib synthetic")


def test_unknown_target(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    _expect_refusal(
        capsys,
        tmp_path,
        [tiny_keras_path, "--calib", tiny_calib_path, "--target", "cortex-m3"],
        r"Unknown target 'cortex-m3'",
    )


def test_malformed_user_profile(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    profile = tmp_path / "mine.toml"
    profile.write_text('inherit = "cortex-m4"\n[memory]\nram_budget_bytes = "512k"\n')
    _expect_refusal(
        capsys,
        tmp_path,
        [tiny_keras_path, "--calib", tiny_calib_path, "--target", profile],
        r"'memory\.ram_budget_bytes' must be an integer",
    )


def test_output_directory_not_writable(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    before = set(files_under(tmp_path))
    run = run_cli(capsys, "export", tiny_keras_path, "--calib", tiny_calib_path, "-o", blocker / "out", "--quiet")
    assert run.code == 2 and "Traceback" not in run.err
    assert "is not a directory" in run.error_line
    assert set(files_under(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_read_only_output_directory(capsys, tmp_path, tiny_keras_path, tiny_calib_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        run = run_cli(capsys, "export", tiny_keras_path, "--calib", tiny_calib_path, "-o", ro / "out", "--quiet")
        assert run.code == 2 and "not writable" in run.error_line
    finally:
        ro.chmod(0o700)


def test_output_path_equal_to_input(capsys, tmp_path, tiny_calib_path):
    # an existing int8 model in the output folder, re-checked for a target, must not be overwritten
    folder = tmp_path / "build"
    folder.mkdir()
    model = folder / "model_int8.tflite"
    model.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\x00" * 64)
    before = model.read_bytes()
    run = run_cli(capsys, "export", model, "--target", "cortex-m4", "-o", folder, "--quiet")
    assert run.code == 2 and "Traceback" not in run.err
    assert "never overwrites its input" in run.error_line
    assert model.read_bytes() == before
    assert files_under(folder) == [model]


def test_bad_option_values_are_usage_errors(capsys, tmp_path, tiny_keras_path):
    run = run_cli(capsys, "export", tiny_keras_path, "--input-range", "0,2", "--calib", "synthetic", "--quiet")
    assert run.code == 2 and "--input-range must be one of 0,1, -1,1, 0,255" in run.err
    run = run_cli(capsys, "export", tiny_keras_path, "--calib-samples", "0")
    assert run.code == 2 and "--calib-samples must be at least 1" in run.err
    run = run_cli(capsys, "export")
    assert run.code == 2 and "the following arguments are required: model" in run.err


def test_console_script_prints_one_line_without_traceback(tmp_path):
    """``python -m exporter`` in a fresh process: what a user or make really runs."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "export", str(tmp_path / "missing.h5"), "--calib", "synthetic"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert not (tmp_path / "edgeport-out").exists()


def test_help_and_targets_do_not_import_tensorflow():
    code = (
        "import sys; from exporter.cli import main; import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['targets']); main(['targets', 'show', 'edgetpu'])\n"
        "    assert main(['--help']) == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ai_edge_litert', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_keras_zip_without_config(capsys, tmp_path, tiny_calib_path):
    bad = tmp_path / "empty.keras"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("hello.txt", "no config here")
    _expect_refusal(capsys, tmp_path, [bad, "--calib", tiny_calib_path], r"empty\.keras")
