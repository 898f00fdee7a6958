"""Float vs int8 on held-out data: accuracy of each, agreement, error; calibration and evaluation disjoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

import exporter
from exporter.analyze.fidelity import accuracy, compare, snr_db


def test_snr_and_accuracy_helpers_on_known_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert snr_db(ref, ref) == float("inf")
    assert snr_db(ref, ref * 0.9) == pytest.approx(20.0, abs=1e-4)  # error power 1/100 of signal
    assert accuracy(ref, np.array([0, 1])) == 1.0 and accuracy(ref, np.array([1, 1])) == 0.5
    fid = compare([ref], [ref[::-1]], ["out"], "test", labels=np.array([0, 1]))
    out = fid.outputs[0]
    assert out.top1_agreement == 0.0 and out.float_accuracy == 1.0 and out.int8_accuracy == 0.0
    assert fid.accuracy_drop_pp == pytest.approx(100.0)


@pytest.fixture(scope="module")
def mnist_files(mnist_splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist_npz")
    np.savez(folder / "calib.npz", x=mnist_splits["calib"][0])
    np.savez(folder / "eval.npz", x=mnist_splits["eval"][0], y=mnist_splits["eval"][1])
    return folder


def test_mnist_int8_accuracy_within_one_point_on_held_out_split(mnist_cnn_path, mnist_files, tmp_path):
    result = exporter.export(
        mnist_cnn_path,
        target="cortex-m4",
        calib=str(mnist_files / "calib.npz:x"),
        eval=str(mnist_files / "eval.npz:x,y"),
        eval_samples=3000,
        output_dir=tmp_path,
    )
    fidelity = result.report("cortex-m4").fidelity
    out = fidelity["outputs"][0]
    assert out["samples"] == 3000
    assert out["float_accuracy"] > 0.9, "the fixture model should have learned MNIST"
    assert abs(out["accuracy_drop_pp"]) <= 1.0, out
    assert out["top1_agreement"] >= 0.98
    assert "evaluation samples" in fidelity["inputs_from"] and "different source" in fidelity["inputs_from"]
    md = (tmp_path / "report.md").read_text()
    assert "float acc." in md and f"{100 * out['int8_accuracy']:.1f}%" in md
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["evaluation"]["role"] == "evaluation" and data["calibration"]["role"] == "calibration"


def test_eval_from_the_calibration_file_excludes_calibration_samples(mnist_splits, mnist_cnn_path, tmp_path):
    x = np.concatenate([mnist_splits["calib"][0], mnist_splits["eval"][0][:500]])
    y = np.concatenate([mnist_splits["calib"][1], mnist_splits["eval"][1][:500]])
    data = tmp_path / "all.npz"
    np.savez(data, x=x, y=y)
    exporter.export(
        mnist_cnn_path,
        target="android-arm64",
        calib=f"{data}:x",
        calib_samples=300,
        eval=f"{data}:x,y",
        output_dir=tmp_path / "o",
    )
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    calib_idx, eval_idx = set(report["calibration"]["indices"]), set(report["evaluation"]["indices"])
    assert len(calib_idx) == 300 and len(eval_idx) == 1000  # --eval-samples default, from the 1,200 left
    assert not calib_idx & eval_idx
    assert "disjoint from the 300 calibration samples" in report["fidelity"]["inputs_from"]


def test_allow_overlap_is_said_in_the_report(mnist_splits, mnist_cnn_path, tmp_path):
    data = tmp_path / "small.npz"
    np.savez(data, x=mnist_splits["calib"][0][:100], y=mnist_splits["calib"][1][:100])
    exporter.export(
        mnist_cnn_path,
        target="android-arm64",
        calib=f"{data}:x",
        eval=f"{data}:x,y",
        allow_overlap=True,
        output_dir=tmp_path,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["evaluation"]["samples"] == 100
    assert "may overlap" in report["fidelity"]["inputs_from"]
