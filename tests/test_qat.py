"""Quantization-aware training (exporter.compress.qat): the rebuild computes what the int8 kernels compute.

Each model here is rebuilt fake-quantized, saved as .keras, loaded back with safe_mode on and exported
by edgeport: the int8 file's outputs must sit within one int8 step of the Keras model's on at least 99%
of the values (measured in LiteRT, reported), which holds only when BatchNormalization folding, fused
activations, weight scales and the trained activation ranges all match the converter's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import quiet_keras, run_cli

from exporter.errors import UsageError


def _residual_model(head: str = "softmax", units: int = 3):
    """Conv+BN+ReLU6, depthwise+BN+ReLU, a residual add with ReLU, a concatenation, pooling, Dense ``head``."""
    keras = quiet_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((16, 16, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = layers.ReLU(6.0, name="r1")(layers.BatchNormalization(name="bn1")(x))
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.Activation("relu", name="r2")(layers.BatchNormalization(name="bn2")(y))
    y = layers.Conv2D(8, 1, name="pw")(y)
    x = layers.ReLU(name="r3")(layers.Add(name="add")([x, y]))
    a = layers.Conv2D(4, 1, activation="relu", name="ca")(x)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="cb")(x)
    x = layers.MaxPooling2D(name="mp")(layers.Concatenate(name="cat")([a, b]))
    x = layers.Dense(units, activation=head, name="out")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial statistics, so a wrong fold shows
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
    return model


def test_rebuild_folds_fuses_and_exports_within_one_lsb(tmp_path, capsys):
    from exporter.compress.qat import QatSpec, prepare_qat

    model = _residual_model()
    before = [w.copy() for w in model.get_weights()]
    data = np.random.default_rng(1).random((64, 16, 16, 1), dtype=np.float32)
    qat, report = prepare_qat(model, data, QatSpec())
    assert report.folded == {"bn1": "c1", "bn2": "dw"} and set(report.fused) == {"r1", "r2"}
    assert sorted(report.quantized_layers) == ["c1", "ca", "cb", "dw", "out", "pw"]
    names = {layer.name for layer in qat.layers}
    assert {"bn1", "bn2", "r1", "r2"}.isdisjoint(names) and "r3" in names  # ADD's ReLU stays, fused by the converter
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))  # input untouched
    # the rebuild is the float model up to int8 rounding
    assert np.abs(qat.predict(data, verbose=0) - model.predict(data, verbose=0)).max() < 0.02

    path = tmp_path / "qat.keras"
    qat.save(path)
    np.save(tmp_path / "calib.npy", data)
    run = run_cli(capsys, "export", path, "--target", "android-arm64,cortex-m4", "--calib", tmp_path / "calib.npy",
                  "--format", "tflite", "-o", tmp_path / "out")  # fmt: skip
    assert run.code == 0, run.err
    assert "quantization-aware model" in run.err  # safe_mode load, and the scheme it follows, on the terminal
    for target in ("android-arm64", "cortex-m4"):
        exported = json.loads((tmp_path / "out" / target / "report.json").read_text())
        assert exported["model"]["loader"].endswith("safe_mode=True)")
        share = exported["fidelity"]["outputs"][0]["within_one_lsb"]
        assert share >= 0.99, (target, exported["fidelity"])
        assert "QAT check: the int8 logits before the output's SOFTMAX within 1 LSB" in exported["conversion"]["qat"]
        assert not any("QAT check failed" in w for w in exported["warnings"])
    dense = json.loads((tmp_path / "out" / "cortex-m4" / "report.json").read_text())["dense_quantization"]
    assert dense["chosen"] == "per-channel" and dense["mode"] == "per-channel"  # trained per-channel: kept


def test_one_lsb_share_counts_steps_and_the_check_warns_below_99_percent():
    """The metric on known numbers, and the export's warning when a QAT model's int8 file drifts."""
    from types import SimpleNamespace

    from exporter.analyze.fidelity import compare
    from exporter.steps.qat import check_qat_outputs

    scale, zero = 0.05, -10
    reference = np.round(np.random.default_rng(0).uniform(-3, 3, (100, 10)) / scale) * scale
    actual = reference.copy()
    actual[:, 0] += scale  # one step off: still within
    actual[:4, 1] += 2 * scale  # two steps off on 4 of 1,000 values
    fidelity = compare([reference], [actual], ["y"], "test", output_quant=[(scale, zero)]).to_dict()
    assert fidelity["outputs"][0]["within_one_lsb"] == pytest.approx(0.996)
    actual[:20, 2] -= 3 * scale  # 24 of 1,000 values off by more than a step
    fidelity = compare([reference], [actual], ["y"], "test", output_quant=[(scale, zero)]).to_dict()
    report = SimpleNamespace(fidelity=fidelity, conversion={}, warnings=[])
    source = SimpleNamespace(keras_model=_qat_model())
    check_qat_outputs(report, source)
    assert (
        "the outputs within 1 LSB of the fake-quantized Keras model's on 97.60% of values" in report.conversion["qat"]
    )
    assert any(w.startswith("QAT check failed: only 97.60% of the values of the outputs") for w in report.warnings)


def _qat_model():
    from exporter.compress.qat import prepare_qat

    return prepare_qat(_residual_model(), np.random.default_rng(1).random((8, 16, 16, 1), dtype=np.float32))[0]


def test_mcu_scheme_per_channel_conv_per_tensor_dense_is_what_the_export_converts(tmp_path, capsys):
    """QAT for a microcontroller (Dense per tensor, convolutions per channel): the export keeps both as trained."""
    from exporter.compress.qat import QatSpec, prepare_qat
    from exporter.verify.graph import TFLiteGraph

    data = np.random.default_rng(1).random((32, 16, 16, 1), dtype=np.float32)
    prepare_qat(_residual_model(), data, QatSpec(dense_per_tensor=True))[0].save(tmp_path / "qat.keras")
    np.save(tmp_path / "calib.npy", data)
    run = run_cli(capsys, "export", tmp_path / "qat.keras", "--target", "cortex-m4", "--calib", tmp_path / "calib.npy",
                  "--format", "tflite", "-o", tmp_path / "out", "--quiet")  # fmt: skip
    assert run.code == 0, run.err
    assert "(per-channel, Dense per-tensor)" in json.dumps(json.loads((tmp_path / "out" / "report.json").read_text()))
    graph = TFLiteGraph.from_file(tmp_path / "out" / "model_int8.tflite")
    scales = {
        op.name: len(graph.tensors[op.inputs[1]].scale) for op in graph.ops if op.name in ("CONV_2D", "FULLY_CONNECTED")
    }
    assert scales["FULLY_CONNECTED"] == 1 and scales["CONV_2D"] > 1, scales


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("lstm", "QAT cannot fake-quantize layer 'rnn' (LSTM)"),
        ("bn_after_add", "QAT cannot fold BatchNormalization 'bn'"),
        ("gelu", "activation 'gelu' is not one TFLite int8 fuses"),
    ],
)
def test_layers_it_cannot_mirror_are_refused_by_name(build, message):
    from exporter.compress.qat import prepare_qat

    keras = quiet_keras()
    layers = keras.layers
    if build == "lstm":
        inp = keras.Input((8, 4))
        out = layers.Dense(2)(layers.LSTM(4, name="rnn")(inp))
        data = np.zeros((4, 8, 4), np.float32)
    elif build == "bn_after_add":
        inp = keras.Input((8, 8, 2))
        x = layers.Add()([layers.Conv2D(2, 1)(inp), inp])
        out = layers.BatchNormalization(name="bn")(x)
        data = np.zeros((4, 8, 8, 2), np.float32)
    else:
        inp = keras.Input((8,))
        out = layers.Dense(4, activation="gelu", name="g")(inp)
        data = np.zeros((4, 8), np.float32)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_qat(keras.Model(inp, out), data)


def test_compress_qat_on_mnist_per_tensor_recovers_accuracy(mnist_cnn_path, mnist_splits, tmp_path, capsys):
    """The real MNIST CNN, per-tensor weights for a microcontroller: QAT's int8 export is at least as accurate
    on held-out digits as the plain int8 export of the float model, and within 1 pp of float."""
    for name in ("train", "calib", "eval"):
        x, y = mnist_splits[name]
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    out = tmp_path / "mnist_qat.keras"
    run = run_cli(capsys, "compress", mnist_cnn_path, "--qat", "--per-tensor", "--target", "cortex-m4",
                  "--train", f"{tmp_path / 'train.npz'}:x,y", "--train-samples", "2000", "--epochs", "1",
                  "--eval", f"{tmp_path / 'eval.npz'}:x,y", "-o", out, "--quiet")  # fmt: skip
    assert run.code == 0, run.err
    assert "QAT: 3 layers with int8 weights (per-tensor)" in run.out and out.is_file()
    accuracies = {}
    for label, model in (("qat", out), ("ptq", mnist_cnn_path)):
        args = ("export", model, "--target", "cortex-m4", "--calib", f"{tmp_path / 'calib.npz'}:x", "--per-tensor",
                "--eval", f"{tmp_path / 'eval.npz'}:x,y", "--eval-samples", "1000", "--format", "tflite",
                "-o", tmp_path / label, "--quiet")  # fmt: skip
        run = run_cli(capsys, *args)
        assert run.code == 0, run.err
        fidelity = json.loads((tmp_path / label / "report.json").read_text())["fidelity"]["outputs"][0]
        accuracies[label] = fidelity
    from exporter.verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_file(tmp_path / "qat" / "model_int8.tflite")
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.name in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weights) == 3 and all(len(t.scale) == 1 for t in weights)  # per-tensor, as trained
    qat, ptq = accuracies["qat"], accuracies["ptq"]
    check = json.loads((tmp_path / "qat" / "report.json").read_text())["conversion"]["qat"]
    share = float(check.split(" on ")[1].split("%")[0]) / 100
    assert share >= 0.99 and "logits before the output's SOFTMAX" in check, check
    assert qat["int8_accuracy"] >= ptq["int8_accuracy"] - 0.002, (qat, ptq)
    assert ptq["float_accuracy"] - qat["int8_accuracy"] <= 0.01, (qat, ptq)


def test_clustered_and_pruned_models_keep_their_structure_through_qat(mnist_cnn_path, mnist_splits, tmp_path, capsys):
    """QAT after clustering keeps at most K values per output channel (so the Cortex-M export still ships
    LUT-compressed weights), and after pruning keeps the zeros."""
    from exporter.compress import PruneSpec, cluster_model, prune_model
    from exporter.compress.qat import QatSpec, quantization_aware_training
    from exporter.load import load_model

    model = load_model(mnist_cnn_path).keras_model
    x, y = mnist_splits["train"]
    train = (x[:1000], y[:1000])
    clustered, _ = cluster_model(model, 16)
    qat, report = quantization_aware_training(clustered, train, QatSpec(epochs=1))
    assert report.held == {"conv2": "shared values", "classifier": "shared values"}, report.held
    for name in report.held:
        kernel = qat.get_layer(name).inner.kernel.numpy()
        per_channel = kernel.reshape(-1, kernel.shape[-1])
        assert max(np.unique(per_channel[:, c]).size for c in range(per_channel.shape[1])) <= 16
    qat.save(tmp_path / "clustered_qat.keras")
    np.savez(tmp_path / "calib.npz", x=mnist_splits["calib"][0][:100])
    run = run_cli(capsys, "export", tmp_path / "clustered_qat.keras", "--target", "cortex-m4", "--calib",
                  f"{tmp_path / 'calib.npz'}:x", "--format", "tflite", "-o", tmp_path / "out", "--quiet")  # fmt: skip
    assert run.code == 0, run.err
    exported = json.loads((tmp_path / "out" / "report.json").read_text())
    assert exported["lut_compression"]["shipped"] and exported["lut_compression"]["check"]["bit_exact"]
    assert "QAT check" in exported["conversion"]["qat"]

    pruned, _ = prune_model(model, PruneSpec.parse("50%"))
    qat, report = quantization_aware_training(pruned, train, QatSpec(epochs=1))
    assert report.held == {"conv2": "zeros"}, report.held  # the default skips the first and last layers
    kernel = qat.get_layer("conv2").inner.kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)


def test_accuracy_guard_trains_the_int8_model_as_its_last_remedy(mnist_cnn_path, mnist_splits, tmp_path, capsys):
    """An MNIST CNN whose first conv has one channel 2000x louder (the next conv compensates: the float
    model is unchanged) loses ~24 pp to post-training int8 on the Edge TPU (one activation range for all
    channels) and no post-training remedy helps; with --train, QAT is tried last and kept."""
    from exporter.load import load_model

    model = load_model(mnist_cnn_path).keras_model
    kernel, bias = model.get_layer("conv1").get_weights()
    kernel2, bias2 = model.get_layer("conv2").get_weights()
    kernel[..., 0] *= 2000.0
    bias[0] *= 2000.0
    kernel2[:, :, 0, :] /= 2000.0
    model.get_layer("conv1").set_weights([kernel, bias])
    model.get_layer("conv2").set_weights([kernel2, bias2])
    model.save(tmp_path / "loud.keras")
    for name in ("train", "calib", "eval"):
        x, y = mnist_splits[name]
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    args = ("export", tmp_path / "loud.keras", "--target", "edgetpu", "--calib", f"{tmp_path / 'calib.npz'}:x",
            "--eval", f"{tmp_path / 'eval.npz'}:x,y", "--eval-samples", "600", "--max-accuracy-drop", "6",
            "--format", "tflite")  # fmt: skip
    run = run_cli(capsys, *args, "-o", tmp_path / "plain", "--quiet")
    assert run.code == 3 and "Accuracy guard failed" in run.err  # without --train: no QAT, refused
    run = run_cli(capsys, *args, "--train", f"{tmp_path / 'train.npz'}:x,y", "--train-samples", "3000",
                  "--epochs", "2", "-o", tmp_path / "qat")  # fmt: skip
    assert run.code == 0, run.err
    assert "kept quantization-aware training" in run.err  # on the terminal
    report = json.loads((tmp_path / "qat" / "report.json").read_text())
    attempts = {a["name"]: a for a in report["guard"]["attempts"]}
    assert attempts["plain int8"]["value"] > 15 and not attempts["plain int8"]["passed"]
    assert attempts["quantization-aware training"]["kept"] and attempts["quantization-aware training"]["value"] <= 6
    assert report["fidelity"]["outputs"][0]["accuracy_drop_pp"] <= 6  # the shipped file is the QAT one
    assert "QAT check" in report["conversion"]["qat"]


def test_without_labels_qat_learns_the_float_models_outputs_on_a_dense_autoencoder(assets):
    """MLPerf AD (Dense + BatchNormalization + ReLU, 640->640) with its one shipped sample: trained on the
    even windows to match the float outputs, the fake-quantized model is closer to float on the odd ones."""
    from test_mlperf_export import ad_windows

    from exporter.compress.qat import QatSpec, prepare_qat, quantization_aware_training
    from exporter.load import load_model

    model = load_model(assets / "models/mlperf_tiny/anomaly_detection/ad01.h5").keras_model
    windows = ad_windows(assets)
    even, odd = windows[0::2], windows[1::2]
    spec = QatSpec(epochs=15, batch_size=16, dense_per_tensor=True)
    reference = model.predict(odd, verbose=0)
    untrained, _ = prepare_qat(model, even, spec)
    trained, report = quantization_aware_training(model, (even, None), spec)
    assert len(report.folded) == 9 and "float model's outputs" in report.target
    before = np.mean((untrained.predict(odd, verbose=0) - reference) ** 2)
    after = np.mean((trained.predict(odd, verbose=0) - reference) ** 2)
    assert after < 0.9 * before, (before, after)
