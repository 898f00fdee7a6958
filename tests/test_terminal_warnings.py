"""Warnings that decide whether an artifact is usable reach the terminal, not only report.md.

Real exports of the tiny CNN (tests/conftest.py) calibrated on a folder of RGB pictures, one sample,
no --input-range, for an Ethos-U target with Vela hidden and a Cortex-M4: each of the four warnings
must be in report.json and on stderr exactly once, in the report's words; --quiet silences them.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from exporter.cli import main
from exporter.progress import WARNING_PREFIX

NPU, MCU = "cortex-m55-ethos-u55", "cortex-m4"

#: (case, words every report.json warning of that case holds, targets whose reports hold it)
CASES = [
    ("one calibration sample", "quantization ranges from 1 samples may be unrepresentative", (NPU, MCU)),
    ("assumed 0..1 range", "were scaled to 0..1 because no input range was given", (NPU, MCU)),
    ("RGB to one channel", "are colour (RGB) and were converted to 1-channel grayscale", (NPU, MCU)),
    ("Vela not installed", "Vela (ethos-u-vela) is not installed, so nothing was compiled for the", (NPU,)),
]


def _export(tmp: Path, model: Path, images: Path, *extra: str) -> tuple[int, str, str, Path]:
    """The real CLI in-process with Vela hidden; stdout and stderr captured here (module-scoped runs)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr("exporter.devices.cortex_m.vela.available", lambda: False)
        args = ["export", model, "--target", f"{NPU},{MCU}", "--calib", images, "--calib-samples", "1"]
        code = main([str(a) for a in (*args, "-o", tmp / "out", *extra)])
    return code, out.getvalue(), err.getvalue(), tmp / "out"


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("rgb") / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def loud(tmp_path_factory, tiny_keras_path, rgb_folder):
    return _export(tmp_path_factory.mktemp("loud"), tiny_keras_path, rgb_folder)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory, tiny_keras_path, rgb_folder):
    """--quiet, and --eval on the same folder: the calibration set's warnings must still reach report.json."""
    return _export(tmp_path_factory.mktemp("quiet"), tiny_keras_path, rgb_folder, "--eval", rgb_folder, "--quiet")


def _reports(out: Path) -> dict[str, dict]:
    return {t: json.loads((out / t / "report.json").read_text()) for t in (NPU, MCU)}


@pytest.mark.parametrize(("case", "words", "targets"), CASES, ids=[c[0] for c in CASES])
def test_warning_is_in_report_json_and_once_on_stderr_in_the_same_words(loud, case, words, targets):
    code, _, err, out = loud
    assert code == 0, err
    reports = _reports(out)
    held = {t: [w for w in reports[t]["warnings"] if words in w] for t in (NPU, MCU)}
    assert all(len(held[t]) == 1 for t in targets), held
    assert not any(held[t] for t in (NPU, MCU) if t not in targets), held
    warning = held[targets[0]][0]
    assert all(held[t] == [warning] for t in targets)  # the same words in every report that holds it
    lines = [ln for ln in err.splitlines() if words in ln]
    assert len(lines) == 1, err
    prefix = "" if len(targets) == 2 else f"{targets[0]}: "  # shared: as it stands; else named by target
    assert lines[0] == f"{WARNING_PREFIX}{prefix}{warning}", (lines[0], warning)
    md = (out / targets[0] / "report.md").read_text()
    assert f"- {warning}" in md


def test_terminal_order_and_the_npu_row(loud):
    """Warnings after the progress lines (and before the table); the Ethos-U row does not claim the NPU."""
    code, stdout, err, out = loud
    lines = err.splitlines()
    warned = [i for i, ln in enumerate(lines) if ln.startswith(WARNING_PREFIX)]
    done = next(i for i, ln in enumerate(lines) if ln.split("] ", 1)[-1].startswith("done"))
    assert warned and min(warned) > done and warned == list(range(min(warned), max(warned) + 1)), err
    assert len(warned) == len(set(lines[i] for i in warned)), "each warning once"
    row = next(ln for ln in stdout.splitlines() if ln.startswith(NPU))
    assert row.rstrip().endswith("ok, NPU not compiled (no Vela)"), row
    assert next(ln for ln in stdout.splitlines() if ln.startswith(MCU)).rstrip().endswith(" ok")
    npu = _reports(out)[NPU]
    assert npu["verdict"] == "ok" and npu["cortex_m"]["npu_compiled"] is False and npu["cortex_m"]["vela"] is None
    assert _reports(out)[MCU]["cortex_m"]["npu_compiled"] is None
    assert not (out / NPU / "model_vela.tflite").exists()
    assert "NPU not compiled (no Vela)" in (out / NPU / "report.md").read_text()


def test_quiet_silences_the_warnings_and_the_reports_keep_them(quiet):
    code, _, err, out = quiet
    assert code == 0, err
    assert WARNING_PREFIX not in err and "[" not in err, err  # no warning, no progress line
    reports = _reports(out)
    for _, words, targets in CASES:
        for target in targets:
            assert sum(words in w for w in reports[target]["warnings"]) == 1, (words, reports[target]["warnings"])
    # the evaluation set's own count warning speaks of accuracy, not of quantization ranges
    evaluation = reports[MCU]["evaluation"]
    assert evaluation["samples"] == 2
    assert any(w.startswith("fidelity measured on 2 evaluation samples is coarse") for w in evaluation["warnings"])
    assert not any("quantization ranges from 2 samples" in w for w in reports[MCU]["warnings"])


def test_python_api_prints_no_warning(tiny_keras_path, rgb_folder, tmp_path, capfd):
    import exporter

    result = exporter.export(
        tiny_keras_path, target=MCU, calib=str(rgb_folder), calib_samples=1, output_dir=tmp_path / "api"
    )
    assert any("quantization ranges from 1 samples" in w for w in result.reports[0].warnings)
    assert WARNING_PREFIX not in capfd.readouterr().err


def test_warning_lines_dedupe_and_prefix():
    from exporter.report.terminal import warning_lines

    lines = warning_lines(
        {"a": ["data w", "op w", "only a", "two\n  lines"], "b": ["data w", "op w"], "c": ["data w", "op w", "only a"]},
        shared=["data w"],
    )
    assert lines == ["data w", "op w", "a, c: only a", "a: two lines"]
    assert warning_lines({"solo": ["data w", "device w"]}, shared=["data w"]) == ["data w", "solo: device w"]
