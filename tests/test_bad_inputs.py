"""Every bad input, in every subcommand and API entry point, ends the same way.

What each case asserts (issue 14): the documented exit code (or exception class); exactly one line on
stderr, ``edgeport: error: <what is wrong> <what to do>``, with a remedy in it; no traceback; nothing on
stdout; no file or folder created, and every input byte-identical afterwards. The files are built
in-test from real ones (the tiny Keras model of conftest.py, the repository's tfmot .h5, TFLite Micro's
hello_world int8 model from ../shared) by truncating, emptying, renaming or overwriting them.

Most refusals happen before TensorFlow is imported, so the cases are cheap; the few that need a loaded
Keras model reuse the session's tiny model.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CliRun, run_cli

from exporter.errors import (
    CalibrationDataError,
    EdgeportError,
    InputModelError,
    OutputPathError,
    ProfileError,
    UsageError,
)

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
H5_MODEL = ROOT / "tests" / "data" / "tfmot_pruned_cnn.h5"
TFLITE_ASSET = Path("models") / "tflm" / "hello_world" / "hello_world_int8.tflite"

#: Progress lines ("[   0.0s] load      loading x.keras") are the one other thing allowed on stderr.
_PROGRESS = re.compile(r"^\[\s*\d+\.\ds\]\s")
#: A remedy: a sentence or clause that starts with an instruction, or states the accepted values.
_REMEDY_VERBS = (
    "pass|use|re-run|rerun|re-save|resave|save|check|copy|rename|install|set|give|point|inherit|choose|connect"
    "|convert|re-convert|remove|add|fix|try|run|export|see|start|upgrade|build|unlock|replug|wait|name|keep|drop"
    "|put|move|delete|lower|raise|increase|reduce|free|retry|replace|create|download|provide|specify|make|call"
)
_REMEDY = re.compile(
    rf"(?:^|[.;:(,]\s+|\bor\s+|\bthen\s+)(?:{_REMEDY_VERBS})\b"
    r"|\bmust (?:be|name|hold)\b|\btakes\b|\bone of\b|\bchoose from\b|(?-i:\bValid \w+:)|\baccepts\b|--help",
    re.IGNORECASE,
)


# --- the assertions every case shares --------------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> sha256 (folders: "dir")."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def has_remedy(text: str) -> bool:
    return bool(_REMEDY.search(text))


def check_message(message: str, pattern: str) -> None:
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message, message
    assert re.search(pattern, message), f"{pattern!r} not in: {message}"
    assert has_remedy(message), f"no remedy (what to do) in: {message}"


def refuse(capfd, workdir: Path, args: list, pattern: str, code: int = 2) -> CliRun:
    """Run the CLI in ``workdir`` and assert a clean refusal that left ``workdir`` as it was."""
    before = tree(workdir)
    capfd.readouterr()  # drop what fixtures printed (TensorFlow's start-up, ...)
    run = run_cli(capfd, *args)
    assert run.code == code, f"exit {run.code} (expected {code}): {run.err}"
    assert "Traceback" not in run.err + run.out, run.err
    lines = [ln for ln in run.err.splitlines() if ln.strip() and not _PROGRESS.match(ln)]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{run.err}"
    assert lines[0].startswith("edgeport: error: "), lines[0]
    check_message(lines[0], pattern)
    assert run.out.strip() == "", f"stdout must stay empty on refusal: {run.out}"
    assert tree(workdir) == before, "a refused run must create, change or delete no file"
    return run


def refuse_api(capfd, workdir: Path, call: Callable[[], object], error: type[EdgeportError], pattern: str) -> None:
    """Call the Python API and assert it raises ``error`` (one line, with a remedy) and wrote nothing."""
    before = tree(workdir)
    capfd.readouterr()
    with pytest.raises(EdgeportError) as info:
        call()
    assert isinstance(info.value, error), f"{type(info.value).__name__} (expected {error.__name__}): {info.value}"
    check_message(str(info.value), pattern)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert tree(workdir) == before, "a refused call must create, change or delete no file"


# --- inputs ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path: default output folders (edgeport-out/, <model>_pruned.keras) land there, in sight."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def good_tflite_bytes(assets) -> bytes:
    """TFLite Micro's hello_world int8 model: a real, valid, tiny .tflite."""
    return (assets / TFLITE_ASSET).read_bytes()


def _root_offset_past_end(data: bytes) -> bytes:
    return (len(data) * 16).to_bytes(4, "little") + data[4:]


def _garbage_with_identifier(data: bytes) -> bytes:
    noise = bytearray(np.random.default_rng(14).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    noise[4:8] = b"TFL3"
    return bytes(noise)


#: Structurally invalid .tflite files: LiteRT's loader rejects each one.
CORRUPT_TFLITE = {
    "truncated": lambda data: data[: len(data) // 2],
    "root_offset_past_end": _root_offset_past_end,
    "garbage_with_identifier": _garbage_with_identifier,
}


@pytest.fixture(params=sorted(CORRUPT_TFLITE))
def corrupt_tflite(request, tmp_path, good_tflite_bytes) -> Path:
    path = tmp_path / f"{request.param}.tflite"
    path.write_bytes(CORRUPT_TFLITE[request.param](good_tflite_bytes))
    return path


@pytest.fixture
def good_tflite(tmp_path, good_tflite_bytes) -> Path:
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(good_tflite_bytes)
    return path


@pytest.fixture
def fake_benchmark_binary(tmp_path) -> Path:
    """A stand-in ``benchmark_model`` for ``--device local``: only reached if the model was not checked."""
    path = tmp_path / "benchmark_model"
    path.write_text("#!/bin/sh\necho 'INFO: Average inference timings in us: Warmup: 10, Init: 5, Inference: 7'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def tiny_keras(tmp_path, tiny_keras_path) -> Path:
    path = tmp_path / "tiny.keras"
    shutil.copyfile(tiny_keras_path, path)
    return path


@pytest.fixture
def calib(tmp_path, tiny_calib_path) -> Path:
    path = tmp_path / "calib.npy"
    shutil.copyfile(tiny_calib_path, path)
    return path


def _zip(entries: dict[str, str]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


#: Broken Keras model files: name -> (bytes from the tiny .keras, what the error line must say). None of
#: them needs TensorFlow to be refused.
BROKEN_KERAS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty.keras": (lambda _: b"", r"empty\.keras is empty \(0 bytes\)"),
    "not_a_zip.keras": (lambda _: b"PK\x03\x04 this is not really a zip archive", r"not_a_zip\.keras is not a valid"),
    "truncated.keras": (lambda tiny: tiny[: len(tiny) // 2], r"truncated\.keras is not a valid"),
    "no_config.keras": (lambda _: _zip({"hello.txt": "no config here"}), r"zip without config\.json"),
    "config_not_json.keras": (lambda _: _zip({"config.json": "{nope"}), r"config_not_json\.keras is not a valid"),
    "config_not_a_model.keras": (lambda _: _zip({"config.json": "[1, 2]"}), r"does not describe a Keras model"),
    "hdf5_named.keras": (lambda _: H5_MODEL.read_bytes(), r"It is an HDF5 file: rename it to \.h5"),
    "text.h5": (lambda _: b"definitely not HDF5\n", r"not an HDF5 file"),
    "empty.h5": (lambda _: b"", r"empty\.h5 is empty"),
    "truncated.h5": (lambda _: H5_MODEL.read_bytes()[: H5_MODEL.stat().st_size // 2], r"truncated\.h5 is truncated"),
    "zip_named.h5": (lambda tiny: tiny, r"It is a zip file: .*rename it to \.keras"),
}


@pytest.fixture(params=sorted(BROKEN_KERAS))
def broken_keras(request, tmp_path, tiny_keras_path) -> tuple[Path, str]:
    make, pattern = BROKEN_KERAS[request.param]
    path = tmp_path / request.param
    path.write_bytes(make(tiny_keras_path.read_bytes()))
    return path, pattern


# --- export ----------------------------------------------------------------------------------------


def test_export_broken_model_files(capfd, tmp_path, broken_keras, calib):
    path, pattern = broken_keras
    refuse(capfd, tmp_path, ["export", path, "--calib", calib, "-o", "out", "--quiet"], pattern)


def test_export_missing_model_file(capfd, tmp_path, calib):
    refuse(capfd, tmp_path, ["export", "nope.keras", "--calib", calib, "-o", "out"], r"nope\.keras does not exist")


def test_export_directory_that_is_no_saved_model(capfd, tmp_path, calib):
    (tmp_path / "not_a_savedmodel").mkdir()
    (tmp_path / "not_a_savedmodel" / "readme.txt").write_text("hello")
    refuse(capfd, tmp_path, ["export", "not_a_savedmodel", "--calib", calib, "-o", "out"], r"(?i)not a SavedModel")


def test_export_unsupported_suffix(capfd, tmp_path, calib):
    (tmp_path / "model.pt").write_bytes(b"\x80\x02torch")
    refuse(capfd, tmp_path, ["export", "model.pt", "--calib", calib, "-o", "out"], r"Unsupported model file .*\.pt")


PROFILE_CASES = {
    "unknown_name": (None, "cortex-m3", r"Unknown target 'cortex-m3'"),
    "wrong_type": (
        'inherit = "cortex-m4"\n[memory]\nram_budget_bytes = "512k"\n',
        "mine.toml",
        r"mine\.toml: key 'memory\.ram_budget_bytes' must be an integer",
    ),
    "inherit_unknown": (
        'inherit = "no-such-board"\n',
        "mine.toml",
        r"mine\.toml: key 'inherit' names an unknown profile 'no-such-board'",
    ),
    "inherit_missing_file": (
        'inherit = "bases/base.toml"\n',
        "mine.toml",
        r"mine\.toml: key 'inherit' names 'bases/base\.toml', but .* does not exist",
    ),
    "not_toml": ("inherit = = 3\n", "mine.toml", r"mine\.toml is not valid TOML"),
    "missing_file": (None, "absent.toml", r"absent\.toml does not exist"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_export_bad_target_profile(capfd, tmp_path, good_tflite, case):
    text, target, pattern = PROFILE_CASES[case]
    if text is not None:
        (tmp_path / target).write_text(text)
    refuse(capfd, tmp_path, ["export", good_tflite, "--target", target, "-o", "out"], pattern)


def test_export_calibration_of_the_wrong_shape(capfd, tmp_path, tiny_keras):
    np.save(tmp_path / "wrong.npy", np.zeros((10, 28, 28, 1), np.float32))
    refuse(capfd, tmp_path, ["export", tiny_keras, "-t", "cortex-m4", "--calib", "wrong.npy", "-o", "out"], r"shape")


def test_export_calibration_with_nan(capfd, tmp_path, tiny_keras):
    data = np.random.default_rng(0).random((60, 16, 16, 1), dtype=np.float32)
    data[7, 3, 3, 0] = np.nan
    np.save(tmp_path / "nan.npy", data)
    refuse(capfd, tmp_path, ["export", tiny_keras, "-t", "cortex-m4", "--calib", "nan.npy", "-o", "out"], r"(?i)nan")


def test_export_empty_image_folder(capfd, tmp_path, tiny_keras):
    (tmp_path / "images").mkdir()
    refuse(
        capfd, tmp_path, ["export", tiny_keras, "-t", "cortex-m4", "--calib", "images", "-o", "out"], r"(?i)no image"
    )


def test_export_missing_calibration_file(capfd, tmp_path, tiny_keras):
    refuse(capfd, tmp_path, ["export", tiny_keras, "-t", "cortex-m4", "--calib", "gone.npz", "-o", "out"], r"gone\.npz")


def test_export_without_calibration_data(capfd, tmp_path, tiny_keras):
    refuse(
        capfd,
        tmp_path,
        ["export", tiny_keras, "-t", "cortex-m4", "-o", "out"],
        r"needs representative calibration data",
    )


def test_export_output_inside_a_file(capfd, tmp_path, good_tflite):
    (tmp_path / "a_file").write_text("x")
    refuse(capfd, tmp_path, ["export", good_tflite, "-t", "cortex-m4", "-o", "a_file/out"], r"is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_export_read_only_output_directory(capfd, tmp_path, good_tflite):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        refuse(capfd, tmp_path, ["export", good_tflite, "-t", "cortex-m4", "-o", "ro/out"], r"not writable")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_export_never_overwrites_its_input(capfd, tmp_path, good_tflite):
    refuse(capfd, tmp_path, ["export", good_tflite, "-t", "cortex-m4", "-o", tmp_path], r"never overwrites its input")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--input-range", "0,2", "--calib", "synthetic"], r"--input-range must be one of 0,1, -1,1, 0,255"),
        (["--calib-samples", "0"], r"--calib-samples must be at least 1"),
        (["--format", "bogus"], r"--format takes tflite, onnx or tflite,onnx"),
        (["--input-shape", "a,b"], r"--input-shape must be integers"),
        (["--io-dtype", "int4"], r"argument --io-dtype: invalid choice: 'int4'"),
    ],
    ids=["input-range", "calib-samples", "format", "input-shape", "io-dtype"],
)
def test_export_bad_option_values(capfd, tmp_path, good_tflite, args, pattern):
    refuse(capfd, tmp_path, ["export", good_tflite, "-t", "cortex-m4", "-o", "out", *args], pattern)


def test_export_without_a_model_argument(capfd, tmp_path):
    refuse(capfd, tmp_path, ["export"], r"the following arguments are required: model")


def test_export_lambda_layer_under_safe_mode(capfd, tmp_path, calib):
    from cli_helpers import quiet_keras

    keras = quiet_keras()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double_it")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(tmp_path / "lambda.keras")
    refuse(capfd, tmp_path, ["export", "lambda.keras", "--calib", calib, "-o", "out"], r"'double_it'.*--unsafe")


def test_export_dynamic_input_shape(capfd, tmp_path, calib):
    from cli_helpers import quiet_keras

    keras = quiet_keras()
    inputs = keras.Input((None, None, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(tmp_path / "dynamic.keras")
    refuse(capfd, tmp_path, ["export", "dynamic.keras", "--calib", calib, "-o", "out"], r"dynamic shape.*--input-shape")


# --- corrupt .tflite files, through every reader ------------------------------------------------------

CORRUPT = r"corrupt TFLite flatbuffer"


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{model}", "-t", "cortex-m4", "-o", "out"],
        ["bench", "{model}", "-t", "cortex-m4"],
        ["bench", "{model}", "-t", "android-arm64"],
        ["bench", "{model}", "-t", "android-arm64", "--device", "local", "--benchmark-binary", "{binary}"],
        ["edgetpu", "{model}", "--no-compile"],
        ["suggest", "{model}", "-t", "cortex-m4"],
    ],
    ids=["export", "bench-cortex-m4", "bench-android", "bench-device-local", "edgetpu", "suggest"],
)
def test_corrupt_tflite_in_every_subcommand(capfd, tmp_path, corrupt_tflite, fake_benchmark_binary, command):
    args = [a.format(model=corrupt_tflite, binary=fake_benchmark_binary) for a in command]
    refuse(capfd, tmp_path, args, CORRUPT)


def _api_calls(tmp_path: Path, binary: Path) -> dict[str, Callable[[Path], object]]:
    import exporter

    return {
        "TFLiteGraph.from_file": lambda p: exporter.TFLiteGraph.from_file(p),
        "verify": lambda p: exporter.verify(p, "cortex-m4"),
        "estimate_memory": lambda p: exporter.estimate_memory(p),
        "benchmark-cortex-m4": lambda p: exporter.benchmark(p, "cortex-m4", runs=1),
        "benchmark-android": lambda p: exporter.benchmark(p, "android-arm64", runs=1),
        "measure_arena": lambda p: exporter.measure_arena(p),
        "analyze_edgetpu": lambda p: exporter.analyze_edgetpu(p),
        "load_model": lambda p: exporter.load_model(p),
        "bench_on_device-local": lambda p: exporter.bench_on_device(
            p, "android-arm64", "local", benchmark_binary=binary
        ),
        "export": lambda p: exporter.export(p, target="cortex-m4", output_dir=tmp_path / "out"),
    }


API_READERS = [
    "TFLiteGraph.from_file",
    "verify",
    "estimate_memory",
    "benchmark-cortex-m4",
    "benchmark-android",
    "measure_arena",
    "analyze_edgetpu",
    "load_model",
    "bench_on_device-local",
    "export",
]


@pytest.mark.parametrize("reader", API_READERS)
def test_corrupt_tflite_in_every_api_entry_point(capfd, tmp_path, corrupt_tflite, fake_benchmark_binary, reader):
    call = _api_calls(tmp_path, fake_benchmark_binary)[reader]
    refuse_api(capfd, tmp_path, lambda: call(corrupt_tflite), InputModelError, CORRUPT)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [(b"", r"is not a TFLite flatbuffer"), (b"\x18\x00\x00\x00XXXX" + b"\x00" * 64, r"is not a TFLite flatbuffer")],
    ids=["empty", "no-identifier"],
)
@pytest.mark.parametrize("command", ["bench", "edgetpu"])
def test_not_a_tflite_at_all(capfd, tmp_path, content, pattern, command):
    (tmp_path / "m.tflite").write_bytes(content)
    refuse(capfd, tmp_path, [command, "m.tflite", *(["-t", "cortex-m4"] if command == "bench" else [])], pattern)


# --- bench -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["missing.tflite", "-t", "cortex-m4"], r"missing\.tflite does not exist"),
        (["{keras}", "-t", "cortex-m4"], r"'edgeport bench' runs \.tflite and \.onnx files"),
        (["{model}"], r"needs a target"),
        (["{model}", "-t", "cortex-m3"], r"Unknown target 'cortex-m3'"),
        (["{model}", "-t", "cortex-m4", "--input", "wrong.npy"], r"does not fit input"),
        (["{model}", "-t", "android-arm64", "--device", "phone"], r"--device must be 'adb'"),
        (["{model}", "-t", "cortex-m4", "--runs", "0"], r"--runs must be an integer, at least 1"),
        (["broken.onnx"], r"onnxruntime cannot load broken\.onnx"),
        (["empty.onnx"], r"ONNX file empty\.onnx is empty"),
    ],
    ids=[
        "missing",
        "keras-file",
        "no-target",
        "unknown-target",
        "input-shape",
        "device-spec",
        "runs",
        "onnx",
        "onnx-empty",
    ],
)
def test_bench_refusals(capfd, tmp_path, good_tflite, tiny_keras, args, pattern):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 3), np.float32))
    (tmp_path / "broken.onnx").write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "empty.onnx").write_bytes(b"")
    refuse(capfd, tmp_path, ["bench", *(a.format(model=good_tflite, keras=tiny_keras) for a in args)], pattern)


def test_bench_device_adb_without_device_prints_nothing_of_adb(capfd, tmp_path, good_tflite, monkeypatch):
    """adb's own "* daemon not running; starting now" lines must not reach the terminal (capfd sees fd 2)."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))  # a private server, never the user's
    run = refuse(
        capfd,
        tmp_path,
        ["bench", good_tflite, "-t", "android-arm64", "--device", "adb"],
        r"No Android device found over adb|No adb program found",
    )
    assert "daemon" not in run.err


# --- edgetpu, report, targets, top level ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["missing.tflite"], r"missing\.tflite does not exist"),
        (["{keras}"], r"reads a \.tflite model; received tiny\.keras"),
        (["{model}", "--num-segments", "0"], r"--num-segments must be at least 1"),
    ],
    ids=["missing", "keras-file", "segments"],
)
def test_edgetpu_refusals(capfd, tmp_path, good_tflite, tiny_keras, args, pattern):
    refuse(capfd, tmp_path, ["edgetpu", *(a.format(model=good_tflite, keras=tiny_keras) for a in args)], pattern)


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        ({}, r"Report directory build does not exist"),
        ({"build/notes.txt": "hello"}, r"No report\.json in build"),
        ({"build/report.json": "{bad"}, r"report\.json is not valid JSON"),
    ],
    ids=["missing", "no-report-json", "invalid-json"],
)
def test_report_refusals(capfd, tmp_path, setup, pattern):
    for name, text in setup.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    refuse(capfd, tmp_path, ["report", "build"], pattern)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["targets", "show", "cortex-m3"], r"Unknown target 'cortex-m3'"),
        (["targets", "show", "mine.toml"], r"mine\.toml: key 'inherit' names an unknown profile"),
        (["targets", "bogus"], r"invalid choice: 'bogus'"),
        (["bogus"], r"argument COMMAND: invalid choice: 'bogus'"),
    ],
    ids=["targets-unknown", "targets-bad-inherit", "targets-action", "unknown-command"],
)
def test_targets_and_command_refusals(capfd, tmp_path, args, pattern):
    (tmp_path / "mine.toml").write_text('inherit = "no-such-board"\n')
    refuse(capfd, tmp_path, args, pattern)


# --- run (recipes) --------------------------------------------------------------------------------

RECIPES = {
    "missing": (None, [], r"Recipe .*absent\.toml does not exist"),
    "not-toml": ("model = = 1\n", [], r"not valid TOML"),
    "no-model": ("seed = 1\n", [], r"model: required"),
    "model-missing": ('model = "gone.keras"\n', [], r"gone\.keras does not exist"),
    "unknown-step": ('model = "tiny.keras"\n[[step]]\nkind = "shrink"\n', [], r"unknown step 'shrink'"),
    "broken-model": ('model = "broken.keras"\n[[step]]\nkind = "lowrank"\nenergy = 0.9\n', [], r"broken\.keras"),
    "broken-model-check": (
        'model = "broken.keras"\n[[step]]\nkind = "lowrank"\nenergy = 0.9\n',
        ["--check"],
        r"broken\.keras is not a valid \.keras archive",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_run_refusals(capfd, tmp_path, tiny_keras, case):
    text, extra, pattern = RECIPES[case]
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    name = "absent.toml" if text is None else "recipe.toml"
    if text is not None:
        (tmp_path / name).write_text(text)
    refuse(capfd, tmp_path, ["run", name, "--quiet", *extra], pattern)


# --- compress --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["missing.keras", "--prune", "0.5"], r"missing\.keras does not exist"),
        (["broken.keras", "--prune", "0.5"], r"broken\.keras is not a valid \.keras archive"),
        (["truncated.h5", "--prune", "0.5"], r"truncated\.h5 is truncated"),
        (["broken.keras", "--lowrank", "4"], r"broken\.keras is not a valid \.keras archive"),
        (["{keras}"], r"Nothing to do"),
        (["{keras}", "--prune", "lots"], r"--prune takes 0\.5 or 50%"),
        (["{model}", "--prune", "0.5"], r"needs a Keras model .*is a \.tflite file"),
        (["{model}", "--cluster", "16"], r"needs Keras models .*is a \.tflite file"),
        (["{keras}", "--prune", "0.5", "-o", "{keras}"], r"never overwrites its input"),
        (["{keras}", "--distill-from", "{keras}"], r"--distill-from needs labelled training data"),
        (["{keras}", "--distill-from", "broken.keras", "--train", "t.npz"], r"broken\.keras is not a valid"),
    ],
    ids=[
        "missing",
        "broken-keras",
        "truncated-h5",
        "broken-keras-lowrank",
        "nothing-to-do",
        "prune-spec",
        "tflite-prune",
        "tflite-cluster",
        "output-is-input",
        "distill-no-train",
        "broken-teacher",
    ],
)
def test_compress_refusals(capfd, tmp_path, good_tflite, tiny_keras, args, pattern):
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    (tmp_path / "truncated.h5").write_bytes(H5_MODEL.read_bytes()[:4096])
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 16, 16, 1), np.float32), y=np.zeros(4, np.int64))
    filled = [a.format(model=good_tflite, keras=tiny_keras) for a in args]
    refuse(capfd, tmp_path, ["compress", *filled, "--quiet"], pattern)


# --- suggest ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["missing.keras", "-t", "cortex-m4"], r"missing\.keras does not exist"),
        (["broken.keras", "-t", "cortex-m4"], r"broken\.keras is not a valid \.keras archive"),
        (["{model}", "-t", "cortex-m3"], r"Unknown target 'cortex-m3'"),
        (["{model}"], r"the following arguments are required: -t/--target"),
    ],
    ids=["missing", "broken-keras", "unknown-target", "no-target"],
)
def test_suggest_refusals(capfd, tmp_path, good_tflite, args, pattern):
    (tmp_path / "broken.keras").write_bytes(b"PK\x05\x06" + b"\x00" * 10)  # an empty zip directory, cut short
    refuse(capfd, tmp_path, ["suggest", *(a.format(model=good_tflite) for a in args)], pattern)


# --- the Python API --------------------------------------------------------------------------------


def _api_cases(tmp_path: Path, good: Path, tiny: Path) -> dict[str, tuple[Callable[[], object], type, str]]:
    import exporter
    from exporter.compress import compress
    from exporter.recipe import load_recipe

    out = tmp_path / "out"
    return {
        "export-missing": (lambda: exporter.export(tmp_path / "nope.keras", "cortex-m4"), InputModelError, "does not"),
        "export-broken-keras": (
            lambda: exporter.export(tmp_path / "broken.keras", "cortex-m4", calib="synthetic", output_dir=out),
            InputModelError,
            r"broken\.keras is not a valid \.keras archive",
        ),
        "export-unknown-target": (
            lambda: exporter.export(good, "cortex-m3", output_dir=out),
            ProfileError,
            r"Unknown target 'cortex-m3'",
        ),
        "export-over-input": (
            lambda: exporter.export(good, "cortex-m4", output_dir=tmp_path),
            OutputPathError,
            r"never overwrites its input",
        ),
        "load_model-truncated-h5": (
            lambda: exporter.load_model(tmp_path / "truncated.h5"),
            InputModelError,
            r"truncated\.h5 is truncated",
        ),
        "load_model-suffix": (lambda: exporter.load_model(tmp_path / "t.npz"), InputModelError, r"Unsupported"),
        "load_profile-inherit": (
            lambda: exporter.load_profile(tmp_path / "mine.toml"),
            ProfileError,
            r"mine\.toml: key 'inherit' names an unknown profile",
        ),
        "load_calibration-missing": (
            lambda: exporter.load_calibration(str(tmp_path / "gone.npz"), exporter.load_model(good).inputs),
            CalibrationDataError,
            r"gone\.npz",
        ),
        "compress-broken-keras": (
            lambda: compress(tmp_path / "broken.keras", "0.5"),
            InputModelError,
            r"broken\.keras is not a valid",
        ),
        "compress-bad-spec": (lambda: compress(tiny, "lots"), UsageError, r"--prune takes|0\.5 or 50%"),
        "compress-tflite": (lambda: compress(good, "0.5"), UsageError, r"needs a Keras model"),
        "benchmark-unknown-target": (lambda: exporter.benchmark(good, "cortex-m3"), ProfileError, r"cortex-m3"),
        "verify-unknown-target": (lambda: exporter.verify(good, "cortex-m3"), ProfileError, r"cortex-m3"),
        "estimate_memory-empty-bytes": (lambda: exporter.estimate_memory(b""), InputModelError, r"not a TFLite"),
        "analyze_edgetpu-missing": (
            lambda: exporter.analyze_edgetpu(tmp_path / "gone.tflite"),
            InputModelError,
            r"gone\.tflite does not exist",
        ),
        "bench_on_device-spec": (
            lambda: exporter.bench_on_device(good, "android-arm64", "phone"),
            UsageError,
            r"--device must be 'adb'",
        ),
        "load_recipe-not-toml": (lambda: load_recipe(tmp_path / "r.toml"), UsageError, r"not valid TOML"),
    }


API_CASES = [
    "export-missing",
    "export-broken-keras",
    "export-unknown-target",
    "export-over-input",
    "load_model-truncated-h5",
    "load_model-suffix",
    "load_profile-inherit",
    "load_calibration-missing",
    "compress-broken-keras",
    "compress-bad-spec",
    "compress-tflite",
    "benchmark-unknown-target",
    "verify-unknown-target",
    "estimate_memory-empty-bytes",
    "analyze_edgetpu-missing",
    "bench_on_device-spec",
    "load_recipe-not-toml",
]


@pytest.mark.parametrize("case", API_CASES)
def test_python_api_refusals(capfd, tmp_path, good_tflite, tiny_keras, case):
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    (tmp_path / "truncated.h5").write_bytes(H5_MODEL.read_bytes()[:-100])
    (tmp_path / "mine.toml").write_text('inherit = "no-such-board"\n')
    (tmp_path / "r.toml").write_text("model = = 1\n")
    np.savez(tmp_path / "t.npz", x=np.zeros(3))
    call, error, pattern = _api_cases(tmp_path, good_tflite, tiny_keras)[case]
    refuse_api(capfd, tmp_path, call, error, pattern)


# --- fresh processes: what a user or make really runs -------------------------------------------------

_FAST_CHECK = """
import sys, time, contextlib, io
from exporter.cli import main
cases = [line.split("|") for line in sys.argv[1:]]
for case in cases:
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(case)
    print(f"{code}|{time.monotonic() - start:.2f}|{err.getvalue().strip()}")
print("tensorflow imported" if "tensorflow" in sys.modules else "tensorflow not imported")
"""


def test_broken_keras_files_are_refused_before_tensorflow_loads(tmp_path, tiny_keras_path):
    """Each subcommand that loads Keras models refuses an empty, non-zip or config-less .keras (and a
    truncated .h5) in a fresh process without importing TensorFlow, well under 2 s."""
    (tmp_path / "empty.keras").write_bytes(b"")
    (tmp_path / "notzip.keras").write_bytes(b"PK\x03\x04 junk")
    (tmp_path / "noconfig.keras").write_bytes(_zip({"weights.h5": "x"}))
    (tmp_path / "truncated.h5").write_bytes(H5_MODEL.read_bytes()[: H5_MODEL.stat().st_size // 3])
    (tmp_path / "recipe.toml").write_text('model = "notzip.keras"\n[[step]]\nkind = "lowrank"\nenergy = 0.9\n')
    cases = [
        "export|empty.keras|--calib|synthetic|-t|cortex-m4|-o|out",
        "export|notzip.keras|--calib|synthetic|-t|cortex-m4|-o|out",
        "export|noconfig.keras|--calib|synthetic|-t|cortex-m4|-o|out",
        "export|truncated.h5|--calib|synthetic|-t|cortex-m4|-o|out",
        "compress|empty.keras|--prune|0.5",
        "compress|truncated.h5|--cluster|16",
        "suggest|notzip.keras|-t|cortex-m4",
        "run|recipe.toml",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _FAST_CHECK, *cases], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    *results, imported = proc.stdout.strip().splitlines()
    for case, result in zip(cases, results, strict=True):
        code, seconds, err = result.split("|", 2)
        assert code == "2" and err.startswith("edgeport: error: ") and "\n" not in err, (case, result)
        assert float(seconds) < 2.0, f"{case}: {seconds} s"
    assert imported == "tensorflow not imported"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["empty.keras", "notzip.keras", "noconfig.keras", "truncated.h5", "recipe.toml"]
    )


def test_console_script_prints_one_line_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "export", str(tmp_path / "missing.h5"), "--calib", "synthetic"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []


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


def test_remedy_check_is_not_vacuous():
    """The remedy heuristic refuses bare statements of what is wrong, so the cases above can fail."""
    assert not has_remedy("Model file x.tflite does not exist.")
    assert not has_remedy("Target profile p.toml is not valid TOML: Invalid value (at line 1, column 11).")
    assert has_remedy("File x.keras is empty. Copy it again, or re-save the model.")
    assert has_remedy("--runs must be an integer, at least 1; received 0.")
