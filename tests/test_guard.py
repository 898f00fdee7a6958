"""The accuracy guard: fallbacks tried in order, the first that passes kept, exit 3 with the drop when none does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli

from exporter.errors import UsageError
from exporter.guard import GuardSpec
from exporter.verify.graph import TFLiteGraph


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    """A Dense model whose hidden activation has one huge unit the head ignores.

    int8 activations give that tensor a range set by the outlier, crushing the informative units to a
    few levels: plain int8 agrees with float on ~30% of inputs, 16x8 on ~95%. A real failure mode
    (outlier channels), made deterministic.
    """
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.Dense(8, name="wide")(inputs)
    outputs = keras.layers.Dense(4, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    w, b = model.get_layer("wide").get_weights()
    w[:, 0] *= 2000.0
    model.get_layer("wide").set_weights([w, b])
    w2, b2 = model.get_layer("head").get_weights()
    w2[0, :] = 0.0
    model.get_layer("head").set_weights([w2, b2])
    folder = tmp_path_factory.mktemp("outlier")
    path = folder / "outlier.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(300, 16)).astype(np.float32)
    held = rng.normal(size=(300, 16)).astype(np.float32)
    labels = model.predict(held, verbose=0).argmax(1)  # float model is right by construction: drop = int8 errors
    np.save(folder / "calib.npy", calib)
    np.savez(folder / "eval.npz", x=held, y=labels)
    return path, folder


def _export(capsys, outlier_model, out, target, *guard, labelled_eval=True):
    """edgeport export of the outlier model, calibrated on 100 of its samples, with the given guard flags."""
    path, folder = outlier_model
    evaluation = ["--eval", f"{folder / 'eval.npz'}:x,y"] if labelled_eval else []
    return run_cli(
        capsys, "export", path, "--target", target, "--calib", folder / "calib.npy", "--calib-samples", "100",
        *evaluation, *guard, "-o", out, "--quiet",
    )  # fmt: skip


def test_guard_spec_validation_and_measure():
    with pytest.raises(UsageError, match="percentage from 0 to 100"):
        GuardSpec(min_agreement_pct=120)
    spec = GuardSpec(max_accuracy_drop_pp=1.0)
    assert spec.passes(0.5) and not spec.passes(1.5) and not spec.passes(None)
    assert spec.measure({"outputs": [{"accuracy_drop_pp": 2.5, "top1_agreement": 0.9}]}) == 2.5
    assert GuardSpec(min_agreement_pct=95).measure({"outputs": [{"top1_agreement": 0.9}]}) == pytest.approx(90.0)


def test_guard_tighter_than_int8_keeps_the_first_fallback_that_passes(outlier_model, tmp_path, capsys):
    run = _export(capsys, outlier_model, tmp_path, "android-arm64", "--min-agreement", "90")
    assert run.code == 0, run.err
    report = json.loads((tmp_path / "report.json").read_text())
    guard = report["guard"]
    attempts = {a["name"]: a for a in guard["attempts"]}
    assert attempts["plain int8"]["value"] < 90 and not attempts["plain int8"]["passed"]
    assert attempts["more calibration samples"]["detail"] == "300 samples instead of 100"
    assert guard["passed"] and guard["kept"] == "16x8 (int16 activations)"
    assert attempts["16x8 (int16 activations)"]["value"] >= 90
    assert [a["name"] for a in guard["attempts"]][:4] == [
        "plain int8",
        "more calibration samples",
        "different calibration choice",
        "per-tensor for the worst layer",
    ]
    assert "Dense" in attempts["per-tensor for the worst layer"]["detail"]
    graph = TFLiteGraph.from_file(tmp_path / "model_int8.tflite")
    assert graph.tensors[graph.inputs[0]].dtype == "int16"  # the kept 16x8 model is what was written
    assert report["fidelity"]["outputs"][0]["top1_agreement"] >= 0.9
    assert "Accuracy guard" in (tmp_path / "report.md").read_text()


def test_guard_nothing_passes_exits_3_with_the_measured_drop(outlier_model, tmp_path, capsys):
    run = _export(capsys, outlier_model, tmp_path, "edgetpu", "--max-accuracy-drop", "1")
    assert run.code == 3
    assert (
        "Accuracy guard failed: int8 accuracy drop (pp) is" in run.err and "required accuracy drop <= 1 pp" in run.err
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "not supported"
    skipped = [a for a in report["guard"]["attempts"] if a["note"] == "skipped"]
    assert {a["name"] for a in skipped} >= {"16x8 (int16 activations)", "float fallback"}  # the Edge TPU allows neither
    assert not (tmp_path / "model_int8.tflite").exists()


def test_max_accuracy_drop_needs_labels(outlier_model, tmp_path, capsys):
    run = _export(capsys, outlier_model, tmp_path, "android-arm64", "--max-accuracy-drop", "1", labelled_eval=False)
    assert run.code == 2 and "--max-accuracy-drop needs labelled evaluation data" in run.err
