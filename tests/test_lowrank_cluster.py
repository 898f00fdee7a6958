"""Low-rank factorization (MLPerf Tiny AD autoencoder) and weight clustering (MNIST, int8 gzip size)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from mnist_models import two_conv_cnn

AD_FLOAT_SCORE = 9.4913


def ad_windows(assets) -> np.ndarray:
    raw = np.fromfile(
        assets / "models/mlperf_tiny/anomaly_detection/normal_id_01_00000000_hist_librosa.bin", dtype=np.float32
    )
    frames = raw.reshape(200, 128)
    return np.stack([frames[t : t + 5].reshape(640) for t in range(196)])


def score(model, windows) -> float:
    return float(np.mean(np.mean(np.square(windows - model.predict(windows, verbose=0)), axis=1)))


def test_lowrank_energy_09_on_the_ad_autoencoder(assets):
    from exporter.compress.lowrank import LowRankSpec, factorize
    from exporter.load import load_model

    model = load_model(assets / "models/mlperf_tiny/anomaly_detection/ad01.h5").keras_model
    windows = ad_windows(assets)
    assert score(model, windows) == pytest.approx(AD_FLOAT_SCORE, rel=1e-3)
    # Calibrate on windows 102..195 (frames 102..199); windows 0..97 (frames 0..101) share no frame with them.
    new, report = factorize(model, LowRankSpec.parse("energy=0.9"), calib=windows[102:])
    print("\n" + report.summary())
    assert report.saved_fraction >= 0.40
    assert new.count_params() == report.params_after <= 0.6 * model.count_params()
    assert {f.name for f in report.layers} >= {"dense", "dense_9"}
    big = next(f for f in report.layers if f.name == "dense")
    assert big.rank < big.full_rank and big.energy_kept >= 0.9 and big.params_after == big.rank * (640 + 128)
    whole, held_out = score(new, windows), score(new, windows[:98])
    assert abs(whole - AD_FLOAT_SCORE) / AD_FLOAT_SCORE < 0.05, whole
    assert abs(held_out - score(model, windows[:98])) / score(model, windows[:98]) < 0.05, held_out
    # the input model is untouched
    assert score(model, windows) == pytest.approx(AD_FLOAT_SCORE, rel=1e-3)


def test_conv_factorization_is_exact_for_a_low_rank_kernel():
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from exporter.compress.lowrank import factorize

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12, 12, 8)), keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="c")]
    )
    rng = np.random.default_rng(0)
    kernel = (rng.normal(size=(72, 4)) @ rng.normal(size=(4, 32))).reshape(3, 3, 8, 32).astype(np.float32)
    model.get_layer("c").kernel.assign(kernel)
    new, report = factorize(model, "4")
    assert [(f.rank, f.params_after) for f in report.layers] == [(4, 4 * (72 + 32))]
    x = rng.normal(size=(4, 12, 12, 8)).astype(np.float32)
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-3, atol=1e-3)


def test_lowrank_spec_errors():
    from exporter.compress.lowrank import LowRankSpec
    from exporter.errors import UsageError

    assert LowRankSpec.parse("16").rank == 16 and LowRankSpec.parse("energy=90%").energy == pytest.approx(0.9)
    with pytest.raises(UsageError, match="--lowrank takes a rank"):
        LowRankSpec.parse("lots")
    with pytest.raises(UsageError, match=r"energy must be in \(0, 1\]"):
        LowRankSpec(energy=0.0)


@pytest.fixture(scope="module")
def dense_cnn(mnist_splits):
    """A small MNIST CNN whose Dense layer holds most weights (where clustering matters for flash)."""
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    model = two_conv_cnn(8, 16, 64)
    model.fit(*mnist_splits["train"], epochs=3, batch_size=64, verbose=0)
    return model


def test_cluster_16_keeps_accuracy_and_shrinks_gzip_int8(dense_cnn, mnist_splits, tmp_path):
    from exporter import export
    from exporter.compress.cluster import cluster_model, int8_distinct_values
    from exporter.compress.finetune import accuracy

    clustered, report = cluster_model(
        dense_cnn, 16, train=mnist_splits["train"], eval=mnist_splits["eval"], epochs=1, seed=0
    )
    print("\n" + report.summary())
    base = accuracy(dense_cnn, *mnist_splits["eval"])
    after = accuracy(clustered, *mnist_splits["eval"])
    assert base - after < 0.01, (base, after)
    assert set(report.layers) == {"conv2", "hidden", "classifier"}  # conv1 (72 weights) is too small to gain
    for name in report.layers:
        assert np.unique(clustered.get_layer(name).kernel.numpy()).size <= 16

    np.save(tmp_path / "calib.npy", mnist_splits["calib"][0][:200])
    sizes = {}
    for label, model in (("plain", dense_cnn), ("clustered", clustered)):
        path = tmp_path / f"{label}.keras"
        model.save(path)
        export(path, "cortex-m4", str(tmp_path / "calib.npy"), output_dir=tmp_path / label, lut="off")
        blob = (tmp_path / label / "model_int8.tflite").read_bytes()
        sizes[label] = (len(blob), len(gzip.compress(blob, 9)))
        if label == "clustered":
            distinct = int8_distinct_values(blob)
            assert distinct and max(distinct.values()) <= 16, distinct  # clustering survives int8, per channel
        else:
            assert max(int8_distinct_values(blob).values()) > 16
    print(sizes)
    assert sizes["clustered"][0] == pytest.approx(sizes["plain"][0], rel=0.02)  # plain int8 tensors: same size
    assert sizes["clustered"][1] <= 0.75 * sizes["plain"][1]  # >= 25% smaller gzip
    # with the default --lut auto, TFLite Micro gets the clustered kernels as 4-bit lookup-table indices
    export(tmp_path / "clustered.keras", "cortex-m4", str(tmp_path / "calib.npy"), output_dir=tmp_path / "lut")
    lut = (tmp_path / "lut" / "model_int8.tflite").read_bytes()
    assert b"TFLM_DECODE" in lut
    assert len(lut) <= 0.75 * sizes["plain"][0]


def test_cluster_spec_errors():
    from exporter.compress.cluster import ClusterSpec
    from exporter.errors import UsageError

    with pytest.raises(UsageError, match="--cluster needs 2..256"):
        ClusterSpec(clusters=1)
