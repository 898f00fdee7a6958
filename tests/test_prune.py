"""Pruning (exporter.compress) on real MNIST models: accuracy, zeros through int8, size, structure, tfmot files.

Latency is not asserted here (benchmarks/pruning.py measures it side by side).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from mnist_models import wide_cnn

from exporter import export
from exporter.compress import PruneSpec, compress, prune_model
from exporter.compress.prune import magnitude_masks, nm_mask, polynomial_sparsity, round_targets
from exporter.compress.sparsity import keras_sparsity
from exporter.errors import UsageError

DATA = Path(__file__).parent / "data"
TFMOT_H5 = DATA / "tfmot_pruned_cnn.h5"


def _gzip(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def _weights_gzip(path: Path) -> int:
    from exporter.compress.sparsity import weight_tensors
    from exporter.verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_file(path)
    blob = b"".join(graph.constant(t.tensor).tobytes() for t in weight_tensors(graph))
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory, mnist_splits):
    """The train/calib/eval splits as .npz files (what a user passes to --train/--calib/--eval)."""
    folder = tmp_path_factory.mktemp("mnist_npz")
    for name, (x, y) in mnist_splits.items():
        np.savez(folder / f"{name}.npz", x=x, y=y)
    return {name: folder / f"{name}.npz" for name in mnist_splits}


@pytest.fixture(scope="module")
def wide_cnn_path(tmp_path_factory, mnist_splits):
    """The benchmark's MNIST CNN (scripts/mnist_models.py), trained 1 epoch: ~48k weights dominate its file."""
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    x, y = mnist_splits["train"]
    model = wide_cnn()
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("wide") / "wide_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def wide_dense_export(tmp_path_factory, wide_cnn_path, mnist_files):
    out = tmp_path_factory.mktemp("wide_dense")
    export(
        wide_cnn_path, "android-arm64", calib=f"{mnist_files['calib']}:x", output_dir=out, formats=("tflite",),
        gzip=True,
    )  # fmt: skip
    return out / "model_int8.tflite"


# --- masks and schedules (no training) -------------------------------------------------------------


def test_spec_parses_every_form_and_rejects_bad_values():
    assert PruneSpec.parse("0.5").sparsity == 0.5
    assert PruneSpec.parse("75%").sparsity == 0.75
    two_four = PruneSpec.parse("2:4")
    assert (two_four.method, two_four.sparsity) == ("n:m", 0.5)
    assert PruneSpec.parse("channels:50%").method == "channels"
    with pytest.raises(UsageError, match="between 0 and 1"):
        PruneSpec.parse("150%")
    with pytest.raises(UsageError, match="0 < N < M"):
        PruneSpec.parse("4:2")
    with pytest.raises(UsageError, match="--rounds 3 .* needs training data"):
        PruneSpec.parse("0.5", rounds=3)


def test_polynomial_schedule_ramps_fast_then_slow_and_ends_on_target():
    values = [polynomial_sparsity(t, 0, 100, 0.0, 0.8) for t in (0, 25, 50, 100, 150)]
    assert values[0] == 0.0 and values[-2] == pytest.approx(0.8) and values[-1] == pytest.approx(0.8)
    assert values[1] - values[0] > values[3] - values[2]  # cubic: most of the pruning happens early
    assert round_targets(0.5, 3)[-1] == pytest.approx(0.5)


def test_two_four_mask_keeps_the_two_largest_of_every_four_input_channels():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 5)).astype(np.float32)
    mask = nm_mask(kernel, "Conv2D", 2, 4)
    groups = np.moveaxis(mask, -2, -1).reshape(3, 3, 5, 2, 4)
    assert np.all(groups.sum(axis=-1) == 2)
    magnitudes = np.abs(np.moveaxis(kernel, -2, -1).reshape(3, 3, 5, 2, 4))
    kept_min = np.where(groups, magnitudes, np.inf).min(axis=-1)
    dropped_max = np.where(groups, -np.inf, magnitudes).max(axis=-1)
    assert np.all(kept_min >= dropped_max)
    assert nm_mask(rng.normal(size=(3, 3, 3, 4)), "Conv2D") is None  # 3 input channels: no groups of 4


def test_global_threshold_prunes_layers_unevenly_per_layer_evenly():
    class Fake:
        def __init__(self, name, values):
            self.name, self.kind = name, "Dense"
            self.kernel = type("K", (), {"numpy": lambda _self: values, "shape": values.shape})()

    big = np.linspace(1, 2, 100, dtype=np.float32).reshape(10, 10)
    small = np.linspace(0.01, 0.02, 100, dtype=np.float32).reshape(10, 10)
    targets = [Fake("big", big), Fake("small", small)]
    per_layer = magnitude_masks(targets, 0.5, "layer")
    assert [int((~m).sum()) for m in per_layer.values()] == [50, 50]
    shared = magnitude_masks(targets, 0.5, "global")
    assert int((~shared["big"]).sum()) == 0 and int((~shared["small"]).sum()) == 100


# --- the acceptance checks ----------------------------------------------------------------


def test_unstructured_50pct_keeps_accuracy_zeros_survive_int8_and_gzip_shrinks(mnist_cnn_path, mnist_files, tmp_path):
    """export --prune 0.5 --train: accuracy within 1 pp of dense, zeros exact in int8, smaller gzip."""
    dense_before = _sha(mnist_cnn_path)
    spec = PruneSpec.parse("0.5", default_skips=False, train=f"{mnist_files['train']}:x,y", epochs=2)
    common = {"calib": f"{mnist_files['calib']}:x", "eval": f"{mnist_files['eval']}:x,y", "formats": ("tflite",)}
    pruned = export(mnist_cnn_path, "android-arm64", output_dir=tmp_path / "pruned", prune=spec, **common)
    dense = export(mnist_cnn_path, "android-arm64", output_dir=tmp_path / "dense", **common)
    assert _sha(mnist_cnn_path) == dense_before  # the input model is never modified

    section = pruned.report("android-arm64").extra["sparsity"]
    steps = section["pruning"]["steps"]
    assert steps[0]["step"] == "dense" and steps[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert steps[-1]["accuracy"] >= steps[0]["accuracy"] - 0.01, steps
    assert section["zeros_survived"]["float_zeros"] > 2500
    assert section["zeros_survived"]["fraction"] >= 0.99
    assert section["int8_weights"]["sparsity"] >= 0.49
    assert "sparsity" not in dense.report("android-arm64").extra  # a dense model gets no section
    assert any("no speed-up" in line for line in section["buys"])
    # Int8 accuracy of the pruned model stays within 1 pp of the dense model's int8 accuracy.
    acc_pruned = pruned.report("android-arm64").fidelity["outputs"][0]["int8_accuracy"]
    acc_dense = dense.report("android-arm64").fidelity["outputs"][0]["int8_accuracy"]
    assert acc_pruned >= acc_dense - 0.01
    # This 5.2k-weight CNN's file is ~25% flatbuffer overhead after gzip; the weights alone shrink more.
    drop = 1 - _gzip(tmp_path / "pruned" / "model_int8.tflite") / _gzip(tmp_path / "dense" / "model_int8.tflite")
    assert drop >= 0.18, drop


def test_unstructured_50pct_cuts_gzip_by_30pct_when_weights_dominate(
    wide_cnn_path, wide_dense_export, mnist_files, tmp_path
):
    spec = PruneSpec.parse("0.5", default_skips=False, train=f"{mnist_files['train']}:x,y", epochs=2)
    result = export(
        wide_cnn_path, "android-arm64", calib=f"{mnist_files['calib']}:x", eval=f"{mnist_files['eval']}:x,y",
        output_dir=tmp_path, prune=spec, formats=("tflite",), gzip=True,
    )  # fmt: skip
    section = result.report("android-arm64").extra["sparsity"]
    steps = section["pruning"]["steps"]  # the whole must-show on one model: accuracy, zeros, gzip
    assert steps[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert steps[-1]["accuracy"] >= steps[0]["accuracy"] - 0.01, steps
    survived = section["zeros_survived"]
    assert survived["fraction"] >= 0.99 and not survived["unmatched_layers"]  # conv2 is fused with bn2 + relu2
    pruned = tmp_path / "model_int8.tflite"
    assert pruned.stat().st_size == wide_dense_export.stat().st_size  # uncompressed: no smaller at all
    # The .tflite.gz edgeport ships (--gzip) against the dense model's: the must-show number.
    shipped = Path(f"{pruned}.gz").stat().st_size / Path(f"{wide_dense_export}.gz").stat().st_size
    assert 1 - shipped >= 0.30, shipped
    # The gzip tool's -9 loses 4-5 points of that to 3-byte zero matches (exporter/analyze/compressed.py):
    # the weight bytes alone still drop >= 30%, the whole file ~29-30% (its ~3.7 KB of scales, biases and
    # flatbuffer structure does not shrink).
    weights = 1 - _weights_gzip(pruned) / _weights_gzip(wide_dense_export)
    assert weights >= 0.30, weights
    drop = 1 - _gzip(pruned) / _gzip(wide_dense_export)
    assert drop >= 0.27, drop
    assert 1 - shipped > drop
    # The report measures against the dense twin (zeros refilled from the surviving, larger values, so
    # more compressible than the real dense model: a conservative baseline), with both encoders.
    size = section["size"]
    assert size["best_gzip_bytes"] == Path(f"{pruned}.gz").stat().st_size
    assert size["best_gzip_saving"] > size["gzip_saving"] > 0.2
    assert any("edgeport's .tflite.gz" in line for line in section["buys"])


def test_channel_pruning_removes_half_the_middle_filters_and_shrinks_the_tflite(
    wide_cnn_path, wide_dense_export, mnist_splits, mnist_files, tmp_path
):
    import keras

    out = tmp_path / "channels.keras"
    report = compress(
        wide_cnn_path, "channels:0.5", output=out, train=mnist_splits["train"], eval=mnist_splits["eval"], epochs=1
    )
    assert report.channels == {"conv2": [32, 16], "conv3": [32, 16]}
    assert "first conv" in report.skipped["conv1"] and "classifier" in report.skipped["classifier"]
    assert "not pruned by channels" in report.skipped["fc"]  # only conv filters are removed
    model = keras.saving.load_model(out)
    layers = {layer.name: layer for layer in model.layers}
    assert tuple(layers["bn2"].gamma.shape) == (16,)  # BatchNorm rewired with its conv
    assert tuple(layers["conv3"].kernel.shape) == (3, 3, 16, 16)  # input channels follow conv2
    assert tuple(layers["fc"].kernel.shape) == (4 * 4 * 16, 64)  # Flatten -> Dense rows follow conv3
    assert report.final_accuracy >= report.dense_accuracy - 0.02, report.summary()
    export(out, "android-arm64", calib=f"{mnist_files['calib']}:x", output_dir=tmp_path / "exp", formats=("tflite",))
    size = (tmp_path / "exp" / "model_int8.tflite").stat().st_size
    assert size <= 0.65 * wide_dense_export.stat().st_size, (size, wide_dense_export.stat().st_size)


def test_tfmot_pruned_keras2_h5_is_stripped_and_exported(tmp_path, mnist_files):
    before = _sha(TFMOT_H5)
    result = export(TFMOT_H5, "cortex-m4", calib=f"{mnist_files['calib']}:x", output_dir=tmp_path)
    report = result.report("cortex-m4")
    assert report.verdict == "ok"
    assert any("prune_low_magnitude" in n and "stripped" in n for n in result.common["model"]["notes"])
    section = report.extra["sparsity"]
    assert section["zeros_survived"]["fraction"] >= 0.99
    assert {row["layer"] for row in section["zeros_survived"]["layers"]} == {"conv1", "conv2", "classifier"}
    assert _sha(TFMOT_H5) == before

    from exporter.load import load_model

    probe = np.load(DATA / "tfmot_pruned_cnn_probe.npz")
    model = load_model(TFMOT_H5).keras_model
    np.testing.assert_allclose(model.predict(probe["x"], verbose=0), probe["y"], atol=1e-5)
    assert keras_sparsity(model)["sparsity"] == pytest.approx(0.5, abs=0.01)


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_compress_two_four_writes_a_new_keras_and_leaves_the_input(capsys, mnist_cnn_path, tmp_path):
    before = _sha(mnist_cnn_path)
    out = tmp_path / "pruned.keras"
    run = run_cli(capsys, "compress", mnist_cnn_path, "--prune", "2:4", "--prune-all", "-o", out, "--quiet")
    assert run.code == 0, run.err
    assert "2:4 structured sparsity" in run.out and "left dense: conv1" in run.out  # 1 input channel: no groups
    assert _sha(mnist_cnn_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["pruned.keras"]  # no temporary file left behind
    import keras

    patterns = {row["layer"]: row["pattern"] for row in keras_sparsity(keras.saving.load_model(out))["layers"]}
    assert patterns == {"conv1": "dense", "conv2": "2:4", "classifier": "2:4"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--prune", "1.5"), "--prune needs a fraction between 0 and 1"),
        (
            ("--prune", "0.5", "--rounds", "2"),
            "--rounds 2 alternates pruning and retraining, which needs training data",
        ),
        (("--prune", "0.5", "--prune-skip", "nope"), "--prune-skip names layer 'nope'"),
    ],
)
def test_cli_compress_bad_input_is_one_line_exit_2(capsys, mnist_cnn_path, tmp_path, args, message):
    run = run_cli(capsys, "compress", mnist_cnn_path, *args, "-o", tmp_path / "x.keras", "--quiet")
    assert run.code == 2
    assert message in run.error_line
    assert "Traceback" not in run.err
    assert not (tmp_path / "x.keras").exists()


def test_cli_compress_refuses_to_overwrite_its_input(capsys, mnist_cnn_path):
    before = _sha(mnist_cnn_path)
    run = run_cli(capsys, "compress", mnist_cnn_path, "--prune", "0.5", "-o", mnist_cnn_path, "--quiet")
    assert run.code == 2 and "never overwrites its input" in run.error_line
    assert _sha(mnist_cnn_path) == before


def test_prune_model_leaves_the_given_model_untouched(mnist_cnn_path):
    import keras

    model = keras.saving.load_model(mnist_cnn_path)
    weights = [w.copy() for w in model.get_weights()]
    pruned, report = prune_model(model, "0.5")
    assert report.pruned_layers == ["conv2"]  # conv1 and classifier skipped by default, and said so
    assert "first conv" in report.skipped["conv1"] and "classifier" in report.skipped["classifier"]
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert keras_sparsity(pruned)["layers"][1]["sparsity"] == pytest.approx(0.5, abs=0.01)
