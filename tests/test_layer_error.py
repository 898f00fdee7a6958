"""Per-layer quantization error and size by layer, on a real trained MNIST CNN.

The method is checked three ways: the float TFLite reference equals Keras, the op-alone SNR agrees with
TensorFlow's own QuantizationDebugger on the same calibrated model, and a layer damaged on purpose
(outlier weights that the float model never feels) is ranked worst.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from exporter.analyze.inference import run_tflite
from exporter.analyze.layer_error import layer_errors
from exporter.analyze.memory import estimate_memory
from exporter.analyze.size_breakdown import OVERHEAD, size_by_layer
from exporter.errors import InputModelError
from exporter.report.report import dumps
from exporter.verify.graph import TFLiteGraph

CALIB = 200
SAMPLES = 40


def _convert(source, calib: np.ndarray, work: Path, io_dtype: str = "int8") -> tuple[bytes, bytes, Path]:
    """The float reference and the int8 model from one static SavedModel, as the export makes them."""
    from exporter.convert.tflite import QuantizationConfig, prepare_saved_model, run_converter

    saved, mode = prepare_saved_model(source, work)
    np.savez(work / "calib.npz", input_0=calib.astype(np.float32))
    float_model = run_converter(source, saved, mode, work, config=None, calib_path=None, tag="float")
    int8_model = run_converter(
        source,
        saved,
        mode,
        work,
        config=QuantizationConfig(io_dtype=io_dtype),
        calib_path=work / "calib.npz",
        tag="int8",
    )
    return float_model, int8_model, saved


@pytest.fixture(scope="module")
def cnn(mnist_cnn_path, mnist_splits, tmp_path_factory):
    from exporter.load import load_model

    source = load_model(mnist_cnn_path)
    calib = mnist_splits["calib"][0][:CALIB]
    float_model, int8_model, saved = _convert(source, calib, tmp_path_factory.mktemp("cnn"))
    return {
        "source": source,
        "float": float_model,
        "int8": int8_model,
        "saved": saved,
        "calib": calib,
        "eval": mnist_splits["eval"][0][:SAMPLES],
    }


@pytest.fixture(scope="module")
def healthy(cnn):
    return layer_errors(cnn["float"], cnn["int8"], [cnn["eval"]], cnn["source"].layers)


def test_float_tflite_reference_equals_keras(cnn):
    """The reference the per-layer error compares against is the Keras model, to float precision."""
    x = cnn["eval"]
    keras_out = cnn["source"].keras_model.predict(x, verbose=0)
    tflite_out = run_tflite(cnn["float"], [x])[0]
    assert np.max(np.abs(keras_out - tflite_out)) < 1e-4


def test_every_conv_and_dense_layer_has_a_row_with_high_snr(cnn, healthy):
    weighted = {name for name, cls in cnn["source"].layers.items() if cls in ("Conv2D", "Dense")}
    assert weighted == {"conv1", "conv2", "classifier"}
    rows = healthy.rows
    assert {r.layer for r in rows} >= weighted
    assert not healthy.unmatched
    for r in rows:
        if r.layer in weighted:
            assert r.op in ("CONV_2D", "FULLY_CONNECTED", "SOFTMAX")
            assert math.isfinite(r.snr_db) and r.snr_db > 15, r
            assert r.local_snr_db is not None and r.local_snr_db > 15, r
            assert r.rmse_over_range is not None and 0 < r.rmse_over_range < 0.05
    # the int8 input's own quantization is a row too (no op is charged with it)
    assert any(r.op == "INPUT" and r.layer is None for r in rows)
    ranked = [r.rank_snr for r in rows]
    assert ranked == sorted(ranked)
    assert healthy.worst(2) == rows[:2]
    assert healthy.samples == SAMPLES
    data = json.loads(dumps(healthy.to_dict()))
    assert data["method"].startswith("measured (host, LiteRT")
    assert len(data["rows"]) == len(rows)
    assert {"layer", "op", "tensor", "snr_db", "rmse_over_range", "mean_abs_error", "shape", "local_snr_db"} <= set(
        data["rows"][0]
    )


def test_max_pool_alone_adds_no_error_but_inherits_it(healthy):
    """An int8 max pool picks the same element as float: zero error alone, its input's error end to end."""
    pool = next(r for r in healthy.rows if r.op == "MAX_POOL_2D")
    assert pool.local_snr_db == math.inf
    assert math.isfinite(pool.snr_db) and pool.snr_db > 15


def test_agrees_with_tensorflow_quantization_debugger(cnn):
    """On the debugger's own calibrated model, our op-alone SNR matches its NumericVerify SNR per layer."""
    import tensorflow as tf

    calib = cnn["calib"][:100]
    evaluation = cnn["eval"]

    def representative():
        for i in range(calib.shape[0]):
            yield [calib[i : i + 1]]

    def debug_data():
        for i in range(evaluation.shape[0]):
            yield [evaluation[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(cnn["saved"]))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    calibrated = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data)
    # Its signal power needs the float tensor after the run: only the model-content constructor keeps
    # all tensors (with the converter one, tensor memory is reused and reads back garbage).
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=calibrated.quant_model,
        debug_dataset=debug_data,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={
                "signal_power": lambda f, q, s, z: float(np.mean(np.square(np.asarray(f, np.float64))))
            }
        ),
    )
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    theirs = {
        row["tensor_name"]: 10 * math.log10(float(row["signal_power"]) / float(row["mean_squared_error"]))
        for row in csv.DictReader(io.StringIO(dump.getvalue()))
        if float(row["mean_squared_error"]) > 0
    }
    float_model = cnn["float"]
    ours = layer_errors(float_model, calibrated.get_nondebug_quantized_model(), [evaluation], cnn["source"].layers)
    compared = 0
    for row in ours.rows:
        if row.op not in ("CONV_2D", "FULLY_CONNECTED") or row.tensor not in theirs:
            continue
        # The debugger feeds the first op the float input itself, not its int8 quantization, so its
        # number for that op is our end-to-end one (input quantization included).
        first = row.op_index == min(r.op_index for r in ours.rows if r.op_index >= 0 and r.op != "QUANTIZE")
        mine = row.snr_db if first else row.local_snr_db
        print(f"{row.layer}: ours {mine:.2f} dB, QuantizationDebugger {theirs[row.tensor]:.2f} dB")
        assert abs(mine - theirs[row.tensor]) < 0.5, (row.layer, mine, theirs[row.tensor])
        compared += 1
    assert compared == 3  # conv1, conv2, classifier


def _damaged_model(path: Path):
    """The trained CNN with conv1's channel 0 dead (always 0) and conv2 reading it through weights 500x
    larger than any other: float never feels them, but conv2's per-channel int8 scale becomes so
    coarse that its real weights round to zero."""
    import keras

    model = keras.saving.load_model(path)
    kernel, bias = model.get_layer("conv1").get_weights()
    kernel[..., 0] = 0.0
    bias[0] = -1.0
    model.get_layer("conv1").set_weights([kernel, bias])
    dead_only = keras.models.clone_model(model)
    dead_only.set_weights(model.get_weights())
    kernel, bias = model.get_layer("conv2").get_weights()
    kernel[:, :, 0, :] = 500.0 * np.abs(kernel).max()
    model.get_layer("conv2").set_weights([kernel, bias])
    return model, dead_only


def test_damaged_layer_is_ranked_worst(mnist_cnn_path, cnn, tmp_path):
    from exporter.load import load_model

    damaged, dead_only = _damaged_model(mnist_cnn_path)
    x = cnn["eval"]
    # the outliers are invisible in float: the damage is quantization's alone
    np.testing.assert_array_equal(damaged.predict(x, verbose=0), dead_only.predict(x, verbose=0))
    damaged.save(tmp_path / "damaged.keras")
    source = load_model(tmp_path / "damaged.keras")
    float_model, int8_model, _ = _convert(source, cnn["calib"], tmp_path / "work")
    report = layer_errors(float_model, int8_model, [x], source.layers)
    worst = report.rows[0]
    assert (worst.layer, worst.op) == ("conv2", "CONV_2D"), [(r.layer, r.op, r.rank_snr) for r in report.rows]
    assert worst.local_snr_db < 10
    # next worst is far behind (the classifier clips a little: its inputs left their calibrated range)
    assert report.rows[1].rank_snr > worst.local_snr_db + 10
    conv1 = next(r for r in report.rows if r.layer == "conv1")
    assert conv1.local_snr_db > 30
    # downstream ops inherit the damage end to end, which is why ranking uses the op-alone SNR
    pool2 = next(r for r in report.rows if r.layer == "pool2")
    assert pool2.snr_db < 10 and pool2.local_snr_db > 30


def test_uint8_io_quantize_ops_are_matched(cnn, tmp_path):
    """uint8 I/O adds QUANTIZE ops at both ends: they are compared, not dropped or mismatched."""
    from exporter.convert.tflite import QuantizationConfig, run_converter

    np.savez(tmp_path / "calib.npz", input_0=cnn["calib"])
    uint8_model = run_converter(
        cnn["source"], cnn["saved"], "v2", tmp_path, config=QuantizationConfig(io_dtype="uint8"),
        calib_path=tmp_path / "calib.npz", tag="u8",
    )  # fmt: skip
    report = layer_errors(cnn["float"], uint8_model, [cnn["eval"]], cnn["source"].layers)
    assert not report.unmatched
    quantize_rows = [r for r in report.rows if r.op == "QUANTIZE"]
    assert len(quantize_rows) == 2
    assert all(r.snr_db > 15 and r.local_snr_db is not None for r in quantize_rows)


def test_mismatched_models_are_refused(cnn):
    with pytest.raises(InputModelError, match="same graph and one array per input"):
        layer_errors(cnn["float"], cnn["int8"], [cnn["eval"], cnn["eval"]])


def test_size_by_layer_sums_to_the_constant_bytes(cnn):
    graph = TFLiteGraph.from_bytes(cnn["int8"])
    rows = size_by_layer(graph, cnn["source"].layers)
    assert sum(r["bytes"] for r in rows) == estimate_memory(graph).weights_bytes
    by_name = {r["layer"]: r for r in rows}
    assert {"conv1", "conv2", "classifier"} <= set(by_name)
    # Dense 400 -> 10: 4,000 int8 weights + 10 int32 biases; conv2 3x3x8x16 + 16 biases
    assert by_name["classifier"]["params"] == 4010 and by_name["classifier"]["bytes"] == 4040
    assert by_name["conv2"]["params"] == 1168 and by_name["conv2"]["class"] == "Conv2D"
    assert rows[0]["layer"] == "classifier"
    assert [r["bytes"] for r in rows] == sorted((r["bytes"] for r in rows), reverse=True)
    with_rest = size_by_layer(graph, cnn["source"].layers, include_overhead=True)
    assert sum(r["bytes"] for r in with_rest) == graph.size_bytes
    assert any(r["layer"] == OVERHEAD for r in with_rest)
    assert abs(sum(r["share"] for r in with_rest) - 1.0) < 1e-9
    assert all(r["layer"] == "other" for r in size_by_layer(graph))  # no layer names: nothing attributed
