"""A fast subset of the model zoo (benchmarks/zoo.py) through the real export, verdicts asserted per target.

The full zoo takes most of an hour; these three cover its riskiest seams in under a minute: a
multi-input multi-output model on every TFLite target, a keras.applications network, and a model
with Rescaling and Normalization layers inside (which once broke the ONNX export). The models
come from scripts/zoo_models.py, random weights made non-degenerate from data, exactly as the zoo
builds them.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import quiet_keras, run_cli

TFLITE_TARGETS = ("android-arm64", "cortex-m4", "cortex-m55-ethos-u55", "cortex-m7", "edgetpu")

#: model -> (export arguments, expected verdict per target). Only the Normalization case writes ONNX
#: (android-arm64's default formats are TFLite and ONNX; --format tflite skips the ONNX conversion).
CASES = {
    "multi-input-output": (["--target", "all", "--format", "tflite"], dict.fromkeys(TFLITE_TARGETS, "ok")),
    "MobileNetV2-0.35-32": (
        ["--target", "android-arm64,cortex-m4,edgetpu", "--format", "tflite"],
        dict.fromkeys(("android-arm64", "cortex-m4", "edgetpu"), "ok"),
    ),
    "Normalization+Rescaling": (["--target", "android-arm64,onnx"], {"android-arm64": "ok", "onnx": "ok"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_model_exports_with_expected_verdicts(capsys, tmp_path, name):
    import zoo_models

    keras = quiet_keras()
    saved = zoo_models.save(name, tmp_path / "model", keras, calib_samples=32)
    args, expected = CASES[name]
    out = tmp_path / "out"
    run = run_cli(capsys, "export", saved["model"], *args, "--calib", saved["calib"], "-o", out, "--quiet")
    assert "Traceback" not in run.err
    verdicts, reasons = {}, {}
    for target in expected:
        report = out / target / "report.json"
        assert report.is_file(), (target, run.error_line or run.err[-2000:])
        data = json.loads(report.read_text())
        verdicts[target], reasons[target] = data["verdict"], data["reasons"]
        if data["verdict"] == "ok":  # an ok target wrote its model
            assert any((out / target).glob("*.onnx" if target == "onnx" else "*.tflite")), target
    assert verdicts == expected, reasons
    assert run.code == 0, run.error_line
