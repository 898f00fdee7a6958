"""examples/firmware: make runs 'edgeport export' as a rule, compiles what it wrote, and re-exports
only when the model (or calibration data, or profile) changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "firmware"
pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("g++") is None, reason="needs make and g++"
)


def _train(out: Path, epochs: int) -> None:
    script = ROOT / "scripts" / "train_demo_model.py"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, str(script), "--out-dir", str(out), "--epochs", str(epochs)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    _train(folder, 2)
    return folder


def _make(build: Path, demo: Path, *targets: str) -> str:
    edgeport = Path(sys.executable).with_name("edgeport")
    cmd = ["make", "-C", str(EXAMPLE), f"BUILD={build}", f"DEMO={demo}", f"EDGEPORT={edgeport}", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_make_builds_then_does_nothing_then_reexports_on_change(demo, tmp_path):
    model_dir = demo
    build = tmp_path / "build"
    first = _make(build, model_dir)
    assert "edgeport" in first and " export " in first
    assert "g++" in first and "OK" in first
    for name in ("model_data.cc", "model_data.h", "model_ops.h", "model_settings.h", "model.mk", "model.d"):
        assert (build / "model" / name).is_file(), name
    app = build / "app"
    assert app.is_file()

    second = _make(build, model_dir)
    assert "export" not in second and "g++" not in second and "Nothing to be done" in second

    # Touching the model re-exports; the outputs are byte-identical, so nothing is recompiled.
    later = time.time() + 2
    os.utime(model_dir / "digits_cnn.keras", (later, later))
    data_mtime = (build / "model" / "model_data.cc").stat().st_mtime_ns
    touched = _make(build, model_dir)
    assert " export " in touched and "g++" not in touched
    assert (build / "model" / "model_data.cc").stat().st_mtime_ns == data_mtime
    assert "Nothing to be done" in _make(build, model_dir)

    # Other calibration data (a prerequisite in the depfile) changes the int8 model: re-export,
    # recompile the array, relink and re-run the check.
    calib = np.load(model_dir / "digits_calib.npz")
    np.savez(model_dir / "digits_calib.npz", x=calib["x"][:40], y=calib["y"][:40])
    rebuilt = _make(build, model_dir)
    assert " export " in rebuilt and "model_data.cc" in rebuilt and "OK" in rebuilt
    assert "Nothing to be done" in _make(build, model_dir)

    # The cross-compiling target (no re-export: everything is up to date).
    out = _make(build, model_dir, "cortex-m4")
    assert " export " not in out
    if shutil.which("arm-none-eabi-g++"):
        assert "model .rodata:" in out
    else:
        assert "arm-none-eabi-g++ not found" in out
