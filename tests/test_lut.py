"""TFLite Micro LUT compression of int8-clustered weights, on real models: rules, clustering, compression, the check.

Every compressed model here is run by the wheel's TFLite Micro interpreter (in child processes) and
compared byte for byte with its uncompressed twin; the disallowed layouts are shown to change outputs.
"""

from __future__ import annotations

import io
import itertools
import warnings
from contextlib import redirect_stderr

import numpy as np
import pytest

from exporter.compress.int8_cluster import cluster_int8, max_distinct_per_channel, optimal_levels
from exporter.compress.lut import index_bits, lut_compress
from exporter.compress.lut_check import check_bit_exact
from exporter.compress.lut_rules import ConstTensor, Use, layout_rule, lut_rule, op_names, read_constants, tensor_rule
from exporter.errors import UsageError

VWW = "models/mlperf_tiny/visual_wake_words/vww_96_int8.tflite"
AD = "models/mlperf_tiny/anomaly_detection/ad01_int8.tflite"
HELLO = "models/tflm/hello_world/hello_world_int8.tflite"
LSTM = "models/tflm/mnist_lstm/trained_lstm_int8.tflite"
MICRO_SPEECH = "models/tflm/micro_speech/micro_speech_quantized.tflite"


@pytest.fixture(scope="module")
def vww(assets) -> bytes:
    return (assets / VWW).read_bytes()


@pytest.fixture(scope="module")
def ad(assets) -> bytes:
    return (assets / AD).read_bytes()


@pytest.fixture(scope="module")
def ad16(ad) -> tuple[bytes, bytes]:
    """AD clustered to 16 int8 values per channel, and that LUT-compressed."""
    clustered, _ = cluster_int8(ad, 16)
    compressed, _ = lut_compress(clustered)
    return clustered, compressed


def _samples(shape: tuple[int, ...], n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(n)]


def _tensor(model: bytes, name: str) -> ConstTensor:
    return next(t for t in read_constants(model) if t.name == name)


def _wheel_lut(model: bytes, tensor: ConstTensor, bits: int, axis: int | None) -> bytes:
    """Compress one tensor with TFLite Micro's own tool in a layout of our choosing (right or wrong)."""
    from tflite_micro.tensorflow.lite.micro.compression import spec
    from tflite_micro.tensorflow.lite.micro.compression.compress import compress

    mode = spec.PerTensor() if axis is None else spec.PerChannel(axis=axis)
    method = spec.LookUpTableCompression(index_bitwidth=bits, mode=mode)
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return bytes(compress(model, [spec.Tensor(subgraph=0, tensor=tensor.index, compression=[method])]))


# --- the rules ------------------------------------------------------------------------------------


def test_rules_follow_each_tensors_quantization(vww, assets):
    """Conv filters per-channel along axis 0, depthwise along axis 3, per-tensor FC; shapes and LSTM refused."""
    conv = _tensor(vww, "model/conv2d_13/Conv2D")
    depthwise = next(t for t in read_constants(vww) if t.shape == (1, 3, 3, 256))
    dense = _tensor(vww, "model/dense/MatMul")
    reshape = _tensor(vww, "model/flatten/Const")
    assert (tensor_rule(conv).allowed, tensor_rule(conv).axis) == (True, 0)
    assert (tensor_rule(depthwise).allowed, tensor_rule(depthwise).axis) == (True, 3)
    assert (tensor_rule(dense).allowed, tensor_rule(dense).mode) == (True, "per-tensor")
    assert not tensor_rule(reshape).allowed and "RESHAPE input 1" in tensor_rule(reshape).reason

    lstm = (assets / LSTM).read_bytes()
    weights = [t for t in read_constants(lstm) if t.uses[0].op == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert len(weights) == 12
    for t in weights:
        rule = tensor_rule(t)
        assert not rule.allowed and "CMSIS-NN" in rule.reason

    # A layout DECODE's Setup cannot express, and an op nobody measured.
    odd = ConstTensor(0, "w", "int8", (4, 5, 6), (0.1,) * 5, (0,) * 5, 1, 1, 0, 120, (Use(0, "CONV_2D", 1),))
    assert not layout_rule(odd).allowed and "quantized_dimension 1" in layout_rule(odd).reason
    single = ConstTensor(0, "w", "int8", (1, 3, 3, 1), (0.1,), (0,), 3, 1, 0, 9, (Use(0, "DEPTHWISE_CONV_2D", 1),))
    assert not tensor_rule(single).allowed and "nonzero axis" in tensor_rule(single).reason
    assert not lut_rule("CONCATENATION", 1, conv).allowed


def test_allowed_layout_is_bit_exact_and_the_wrong_one_is_caught(vww):
    """VWW's last 1x1 conv at 4 bits: PerChannel(axis 0) matches; PerTensor (one table) changes outputs.

    The wrong layout is what the issue observed: DECODE takes 256 tables from the quantization and
    reads past the single table it was given. check_bit_exact must catch it.
    """
    conv = _tensor(vww, "model/conv2d_13/Conv2D")
    per_channel, _ = cluster_int8(vww, 16)
    right = _wheel_lut(per_channel, conv, 4, 0)
    samples = _samples((1, 96, 96, 3), 3)
    ok = check_bit_exact(per_channel, right, samples, arena=False)
    assert ok.bit_exact and ok.samples == 3 and ok.outputs == 1 and ok.mismatch is None

    # Round the whole tensor to 16 values so a single table is possible, then compress it per tensor.
    whole = bytearray(per_channel)
    values = conv.array(per_channel)
    levels = optimal_levels(*[a.astype(np.int64) for a in np.unique(values, return_counts=True)], 16)
    table = dict(zip(np.unique(values).tolist(), levels.tolist(), strict=True))
    whole[conv.offset : conv.offset + conv.nbytes] = np.vectorize(table.get)(values).astype(np.int8).tobytes()
    wrong = _wheel_lut(bytes(whole), conv, 4, None)
    bad = check_bit_exact(bytes(whole), wrong, samples, arena=False)
    assert not bad.bit_exact and bad.mismatch is not None and bad.mismatch.max_abs_diff > 0
    assert "NOT bit-exact" in bad.summary()


# --- clustering -----------------------------------------------------------------------------------


def test_optimal_levels_match_brute_force():
    """The DP's centroids give the least squared error of every choice of <= k integer levels."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = np.sort(rng.choice(np.arange(-12, 13), size=7, replace=False)).astype(np.int64)
        counts = rng.integers(1, 9, 7)
        k = int(rng.integers(2, 5))
        got = optimal_levels(values, counts, k)
        assert len(np.unique(got)) <= k
        cost = float(np.sum(counts * (values - got) ** 2))
        best = np.inf
        for centres in itertools.combinations(range(int(values.min()), int(values.max()) + 1), k):
            c = np.asarray(centres)
            best = min(best, float(np.sum(counts * np.min((values[:, None] - c[None, :]) ** 2, axis=1))))
        assert cost == pytest.approx(best)


def test_cluster_int8_keeps_k_values_per_channel_and_every_other_byte(vww):
    clustered, report = cluster_int8(vww, 4)
    assert len(clustered) == len(vww) and clustered != vww
    touched = np.zeros(len(vww), dtype=bool)
    by_name = {t.name: t for t in read_constants(vww)}
    for row in report.tensors:
        t = by_name[row.name]
        touched[t.offset : t.offset + t.nbytes] = True
        assert max_distinct_per_channel(t, clustered) <= 4 == row.distinct_after or row.distinct_before <= 4
        assert row.mean_abs_error_lsb >= 0 and row.channels == (t.shape[t.channel_axis] if t.per_channel else 1)
    diff = np.frombuffer(vww, np.uint8) != np.frombuffer(clustered, np.uint8)
    assert diff.any() and not (diff & ~touched).any()  # only clustered tensors' bytes moved
    assert {r.op for r in report.tensors} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert "model/flatten/Const" not in {r.name for r in report.tensors}  # int32 shape: never clustered

    skipped, skip_report = cluster_int8(vww, 4, skip=("conv2d_13",))
    assert skip_report.skipped["model/conv2d_13/Conv2D"] == "skipped by request"
    conv = by_name["model/conv2d_13/Conv2D"]
    assert skipped[conv.offset : conv.offset + conv.nbytes] == vww[conv.offset : conv.offset + conv.nbytes]
    with pytest.raises(UsageError, match="2..256"):
        cluster_int8(vww, 1)


# --- compression ----------------------------------------------------------------------------------


def test_lut_compress_shrinks_ad_as_the_index_width_predicts_and_is_deterministic(ad, ad16):
    clustered, compressed = ad16
    again, report = lut_compress(clustered)
    assert again == compressed  # same input, byte-identical output
    assert {t.bits for t in report.compressed} == {4} and len(report.compressed) == 10
    assert all(t.mode == "per-tensor" and t.op == "FULLY_CONNECTED" for t in report.compressed)
    weights = sum(t.bytes_before for t in report.compressed)
    predicted = len(ad) - weights // 2  # 4-bit indices replace int8 weights; tables and DECODE cost a little
    assert predicted <= len(compressed) <= predicted * 1.02
    assert report.size_after == len(compressed) and op_names(compressed).count("CUSTOM:TFLM_DECODE") == 10
    assert all("int32" not in t.dtype for t in report.compressed) and len(report.left) == 10  # biases left
    assert lut_compress(compressed)[1].note == "the model is LUT-compressed already"


def test_lut_compress_vww_at_2_bits(vww):
    clustered, _ = cluster_int8(vww, 4)
    compressed, report = lut_compress(clustered)
    assert {t.bits for t in report.compressed} == {2}
    assert all(t.bytes_after < t.bytes_before for t in report.compressed)
    # Depthwise filters have 9 weights per channel: a table per channel never pays, and is left.
    assert any("DEPTHWISE" not in t.op for t in report.compressed)
    assert all(t.op != "DEPTHWISE_CONV_2D" for t in report.compressed)
    saved = sum(t.bytes_before - t.bytes_after for t in report.compressed)  # each measured alone
    assert len(clustered) - len(compressed) == pytest.approx(saved, abs=1024)  # one DECODE opcode, not 12
    ideal = sum(t.bytes_before for t in report.compressed) * 6 // 8  # 2-bit indices for int8 weights
    assert 0.9 * ideal < len(clustered) - len(compressed) < ideal  # minus 4-entry tables per channel
    assert len(compressed) / len(vww) < 0.60


def test_nothing_eligible_comes_back_unchanged(assets):
    hello = (assets / HELLO).read_bytes()  # unclustered: its int8 weights need 8-bit indices
    out, report = lut_compress(hello)
    assert out == hello and not report.changed and report.size_after == len(hello)
    assert report.note == "no tensor is eligible" and len(report.left) == 6
    clustered, _ = cluster_int8(hello, 16)
    out, report = lut_compress(clustered)
    assert out == clustered and not report.changed  # 256-byte kernels: the tables and DECODE cost more
    with pytest.raises(UsageError, match="1..7 bits"):
        lut_compress(hello, max_bits=8)


def test_old_schema_opcodes_are_compressed_correctly(assets):
    """micro_speech stores its ops in deprecated_builtin_code only; the wheel's editor alone would break it."""
    model = (assets / MICRO_SPEECH).read_bytes()
    clustered, _ = cluster_int8(model, 16)
    compressed, report = lut_compress(clustered)
    assert [t.name for t in report.compressed] == ["final_fc_weights/read/transpose"]
    names = op_names(compressed)
    assert names.count("CUSTOM:TFLM_DECODE") == 1
    assert [n for n in names if n != "CUSTOM:TFLM_DECODE"] == list(op_names(model))
    assert check_bit_exact(clustered, compressed, _samples((1, 49, 40, 1), 2), arena=False).bit_exact


# --- the check ------------------------------------------------------------------------------------


def test_check_measures_both_arena_layouts(ad16):
    """AD: decoded in the arena, the 640x128 matrix (81,920 B) lands in it; given alt memory, it does not."""
    clustered, compressed = ad16
    check = check_bit_exact(clustered, compressed, _samples((1, 640), 4))
    assert check.bit_exact and check.error is None
    a = check.arena
    assert a.reference == 4632  # the uncompressed reference's arena (measured, tests/test_benchmark.py figures)
    assert a.compressed >= a.reference + 81920
    assert a.alt_decompression == 81920 and a.reference < a.compressed_with_alt < a.reference + 4096
    assert "decompression memory" in check.summary()


def test_check_catches_a_corrupt_value_table_and_a_refused_model(ad16):
    clustered, compressed = ad16
    blob = bytearray(compressed)
    root_tensors = read_constants(compressed)
    ancillary = next(t for t in root_tensors if t.name.endswith("dense/MatMul_ancillary"))
    table = slice(ancillary.offset + 16, ancillary.offset + ancillary.nbytes)  # after the 16-byte DCM header
    blob[table] = bytes(ancillary.nbytes - 16)  # the first layer's 16 weight values all read as 0
    check = check_bit_exact(clustered, bytes(blob), _samples((1, 640), 2), arena=False)
    assert not check.bit_exact and check.mismatch is not None and check.error is None

    blob[ancillary.offset + 1] = 2  # DCM version 2: DECODE refuses the model in Prepare
    refused = check_bit_exact(clustered, bytes(blob), _samples((1, 640), 1), arena=False)
    assert not refused.bit_exact and refused.error and "refused" in refused.error
    assert check_bit_exact(clustered, compressed, _samples((1, 640), 2), arena=False).bit_exact


def test_index_bits():
    assert [index_bits(n) for n in (1, 2, 3, 4, 5, 16, 17, 128)] == [1, 1, 2, 2, 3, 4, 5, 7]


def test_activation_weighted_clustering_with_bias_correction_keeps_the_ad_score(ad, assets):
    """On the real AD sample: clustering weighted by the inputs' E[x^2], with the mean output shift moved
    into the int32 biases, stays much closer to the unclustered int8 model's anomaly score than plain
    per-channel clustering, and still keeps <= K values per channel and the file's length."""
    from exporter.analyze.inference import run_tflite
    from exporter.compress.int8_stats import input_stats

    frames = np.fromfile(
        assets / "models/mlperf_tiny/anomaly_detection/normal_id_01_00000000_hist_librosa.bin", dtype=np.float32
    ).reshape(200, 128)
    windows = np.stack([frames[t : t + 5].reshape(640) for t in range(196)])

    def score(model: bytes) -> float:
        outputs = run_tflite(model, [windows])[0]
        return float(np.mean(np.mean((windows - outputs) ** 2, axis=1)))

    stats = input_stats(ad, [[w[None]] for w in windows[::6]])
    assert stats, "every FULLY_CONNECTED weight tensor has input statistics"
    plain, _ = cluster_int8(ad, 8)
    weighted, report = cluster_int8(ad, 8, stats=stats)
    assert len(weighted) == len(ad)
    assert all(t.weighted and t.distinct_after <= 8 for t in report.tensors)
    assert sum(t.bias_corrected for t in report.tensors) > 0
    base = score(ad)
    assert abs(score(weighted) - base) < 0.5 * abs(score(plain) - base)


def test_refit_to_output_lowers_the_output_error_and_keeps_k_values():
    """On correlated inputs, refitting the DP's values and indices under Cov[x] lowers the output error
    (w - c) Cov (w - c)^T of every row set, never raises it, and keeps <= K int8 values per row."""
    from exporter.compress.int8_cluster import cluster_channels
    from exporter.compress.int8_refit import refit_to_output

    rng = np.random.default_rng(4)
    mix = rng.standard_normal((48, 48))
    x = rng.standard_normal((4000, 48)) @ mix  # strongly correlated features
    cov = np.cov(x, rowvar=False)
    rows = np.clip(np.round(rng.standard_normal((16, 48)) * 40), -127, 127).astype(np.int8)
    plain = cluster_channels(rows, 4)
    refit = refit_to_output(rows, plain, 4, cov)

    def error(c: np.ndarray) -> float:
        d = rows.astype(np.float64) - c.astype(np.float64)
        return float(np.einsum("oj,jk,ok->", d, cov, d))

    assert error(refit) < 0.7 * error(plain)
    assert max(np.unique(r).size for r in refit) <= 4
    assert refit.dtype == np.int8 and int(refit.min()) >= -127
    assert np.array_equal(refit_to_output(rows, rows, 256, cov), rows), "nothing to gain: unchanged"


def test_refitted_clustering_keeps_the_ad_output_on_held_out_windows(ad, assets):
    """Statistics from the even windows of the AD sample, output measured on the odd ones: the covariance
    refit (layer by layer) cuts the output error of importance-weighted clustering alone by over 30 % at K=8
    (the reference file: per-tensor, one 8-value table per tensor)."""
    from dataclasses import replace as with_fields

    from exporter.analyze.inference import run_tflite
    from exporter.compress.int8_cluster import cluster_on_calibration
    from exporter.compress.int8_stats import input_stats

    frames = np.fromfile(
        assets / "models/mlperf_tiny/anomaly_detection/normal_id_01_00000000_hist_librosa.bin", dtype=np.float32
    ).reshape(200, 128)
    windows = np.stack([frames[t : t + 5].reshape(640) for t in range(196)])
    fit, held = windows[0::2], windows[1::2]
    stats = input_stats(ad, [[w[None]] for w in fit])
    weighted, _ = cluster_int8(ad, 8, stats={k: with_fields(v, covariance=None) for k, v in stats.items()})
    refitted, report = cluster_on_calibration(ad, [fit], 8)
    assert all(t.refit and t.layered and t.distinct_after <= 8 for t in report.tensors if t.op == "FULLY_CONNECTED")
    assert len(refitted) == len(ad)
    base = run_tflite(ad, [held])[0]

    def error(model: bytes) -> float:
        return float(np.mean((run_tflite(model, [held])[0] - base) ** 2))

    assert error(refitted) < 0.7 * error(weighted)  # measured: 0.60 vs 1.07
