"""`export --cluster K`: int8 weights clustered per channel; TFLite Micro targets ship them LUT-compressed.

One export to cortex-m4 (TFLite Micro) and android-arm64 (LiteRT) of a CNN trained on real MNIST, against
the same export without --cluster: the firmware files, the arena, the fit check and the report must all
describe the compressed model, and the phone must get plain int8 tensors with at most K values per channel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

import exporter
from exporter.verify.graph import TFLiteGraph

K = 16


@pytest.fixture(scope="module")
def calib(mnist_splits, tmp_path_factory) -> Path:
    x, _ = mnist_splits["calib"]
    path = tmp_path_factory.mktemp("cluster_calib") / "calib.npy"
    np.save(path, x[:64])
    return path


@pytest.fixture(scope="module")
def exports(mnist_cnn_path, calib, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cluster_exports")
    targets = "cortex-m4,android-arm64"
    exporter.export(mnist_cnn_path, target=targets, calib=str(calib), output_dir=out / "plain", formats=("tflite",))
    exporter.export(
        mnist_cnn_path, target=targets, calib=str(calib), output_dir=out / "clustered", formats=("tflite",), cluster=K
    )
    return {"plain": out / "plain", "clustered": out / "clustered"}


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _values_per_channel(graph: TFLiteGraph) -> list[int]:
    """For each conv/FC weight tensor, the most distinct int8 values one of its output channels holds."""
    found = []
    for op in graph.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weights = graph.constant(op.inputs[1])
        if weights is None or weights.dtype != np.int8:
            continue
        axis = 3 if op.name == "DEPTHWISE_CONV_2D" else 0
        moved = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
        found.append(max(len(np.unique(row)) for row in moved))
    return found


def _clustered_as_reported(graph: TFLiteGraph, report: dict) -> bool:
    """At least as many weight tensors hold <= K values per channel as the report says were clustered, and
    every tensor clustering left alone has its reason (small ones stay exact: a table would not shrink them)."""
    clustering = report["conversion"]["int8_clustering"]
    within = sum(v <= K for v in _values_per_channel(graph))
    return (
        bool(clustering["tensors"])
        and within >= len(clustering["tensors"])
        and clustering["max_values_per_channel"] <= K
        and all(reason for reason in clustering["skipped"].values())
    )


def test_cortex_m_gets_a_smaller_lut_compressed_model_that_runs_bit_exact(exports):
    plain = exports["plain"] / "cortex-m4"
    clustered = exports["clustered"] / "cortex-m4"
    model = (clustered / "model_int8.tflite").read_bytes()
    graph = TFLiteGraph.from_bytes(model)
    assert "CUSTOM:TFLM_DECODE" in graph.op_counts(), "DECODE ops read the compressed tensors"
    assert len(model) < 0.9 * (plain / "model_int8.tflite").stat().st_size
    report = _report(clustered)
    lut = report["lut_compression"]
    assert lut["check"]["bit_exact"] is True, "TFLite Micro's outputs are bit-identical to the uncompressed model"
    assert lut["compressed"] and all(t["bits"] <= 4 for t in lut["compressed"])
    assert lut["shipped"] is True
    assert report["memory"]["model_bytes"] == len(model)
    assert report["memory"]["weights_bytes"] < len(model), "the weight figure is the shipped file's"
    flash = next(f for f in report["fit"] if f["resource"] == "flash")
    assert flash["needed_bytes"] >= len(model)
    # the firmware files describe the same model: its array, DECODE registered, the arena measured on it
    data_cc = (clustered / "model_data.cc").read_text()
    assert f"= {len(model)}u;" in data_cc
    assert "AddDecode" in (clustered / "model_ops.h").read_text()
    arena = report["cortex_m"]["arena"]["bytes"]
    assert f"#define MODEL_ARENA_SIZE {arena}" in (clustered / "model_settings.h").read_text()
    assert "LUT-compressed for TFLite Micro" in (clustered / "report.md").read_text()


def test_the_phone_gets_plain_int8_with_at_most_k_values_per_channel(exports):
    phone = exports["clustered"] / "android-arm64"
    graph = TFLiteGraph.from_file(phone / "model_int8.tflite")
    assert "CUSTOM:TFLM_DECODE" not in graph.op_counts(), "LiteRT has no DECODE kernel: plain tensors"
    report = _report(phone)
    assert _clustered_as_reported(graph, report)
    plain = TFLiteGraph.from_file(exports["plain"] / "android-arm64" / "model_int8.tflite")
    assert sum(v <= K for v in _values_per_channel(plain)) < sum(v <= K for v in _values_per_channel(graph))
    assert report["conversion"]["int8_clustering"]["max_values_per_channel"] <= K
    assert "weights clustered to 16 int8 values per channel" in report["conversion"]["scheme"]
    assert "reads plain int8 tensors" in report["conversion"]["clustering_buys"]
    assert "clustering buys a smaller download" in (phone / "report.md").read_text()


def test_clustering_costs_little_accuracy_on_real_mnist(exports):
    plain = _report(exports["plain"] / "cortex-m4")["fidelity"]["outputs"][0]
    clustered = _report(exports["clustered"] / "cortex-m4")["fidelity"]["outputs"][0]
    assert clustered["samples"] == plain["samples"] >= 50
    assert clustered["top1_agreement"] >= plain["top1_agreement"] - 0.05


def test_a_model_clustered_by_compress_is_lut_compressed_on_export(mnist_cnn_path, calib, tmp_path):
    from exporter.compress import ClusterSpec, cluster_model
    from exporter.load import load_model

    source = load_model(mnist_cnn_path)
    model, _ = cluster_model(source.keras_model, ClusterSpec(clusters=8))
    path = tmp_path / "clustered.keras"
    model.save(path)
    exporter.export(path, target="cortex-m4", calib=str(calib), output_dir=tmp_path / "out")
    report = _report(tmp_path / "out")
    assert report["lut_compression"]["check"]["bit_exact"] is True
    assert report["lut_compression"]["compressed"]
    assert max(t["bits"] for t in report["lut_compression"]["compressed"]) <= 3, "8 shared values: 3-bit indices"


def test_cluster_out_of_range_is_one_line_exit_2(capsys, mnist_cnn_path, calib, tmp_path):
    run = run_cli(
        capsys,
        "export",
        mnist_cnn_path,
        "--target",
        "cortex-m4",
        "--calib",
        calib,
        "--cluster",
        "1",
        "-o",
        tmp_path / "o",
    )
    assert run.code == 2
    assert "--cluster needs 2..128 values per channel" in run.error_line
    assert not (tmp_path / "o").exists()


def test_a_compressor_crash_ships_the_plain_model_with_a_warning(mnist_cnn_path, calib, tmp_path, monkeypatch):
    """The compressor's native code runs in a child: its abort costs the LUT, never the export."""
    from exporter.compress.lut_child import CRASH_ENV

    monkeypatch.setenv(CRASH_ENV, "1")
    result = exporter.export(mnist_cnn_path, target="cortex-m4", calib=str(calib), output_dir=tmp_path, cluster=K)
    report = result.report("cortex-m4")
    assert report.verdict == "ok"
    assert any(w.startswith("Weights not LUT-compressed: LUT compression failed") for w in report.warnings)
    graph = TFLiteGraph.from_file(tmp_path / "model_int8.tflite")
    assert "CUSTOM:TFLM_DECODE" not in graph.op_counts()
    assert _clustered_as_reported(graph, _report(tmp_path)), "still clustered: only the LUT step was lost"


def test_lut_off_keeps_plain_tensors_on_the_mcu(mnist_cnn_path, calib, tmp_path):
    exporter.export(mnist_cnn_path, target="cortex-m4", calib=str(calib), output_dir=tmp_path, cluster=K, lut="off")
    graph = TFLiteGraph.from_file(tmp_path / "model_int8.tflite")
    assert "CUSTOM:TFLM_DECODE" not in graph.op_counts()
    assert "lut_compression" not in _report(tmp_path)


def test_cluster_with_train_fine_tunes_shared_values_then_ships_them_lut_compressed(
    mnist_cnn_path, mnist_splits, calib, tmp_path
):
    import hashlib

    x, y = mnist_splits["train"]
    train = tmp_path / "train.npz"
    np.savez(train, x=x[:2000], y=y[:2000])
    before = hashlib.sha256(mnist_cnn_path.read_bytes()).hexdigest()
    result = exporter.export(
        mnist_cnn_path,
        target="cortex-m4",
        calib=str(calib),
        output_dir=tmp_path / "o",
        cluster=8,
        train=f"{train}:x,y",
        epochs=1,
    )
    assert hashlib.sha256(mnist_cnn_path.read_bytes()).hexdigest() == before, "the input model is never modified"
    common_notes = " ".join(result.common["model"].get("notes", []))
    assert "--cluster 8 --train" in common_notes
    report = _report(tmp_path / "o")
    assert report["lut_compression"]["shipped"] is True
    assert max(t["bits"] for t in report["lut_compression"]["compressed"]) <= 3
    assert report["fidelity"]["outputs"][0]["top1_agreement"] >= 0.9


def test_ethos_u_gets_the_plain_file_and_vela_flash_clustered_vs_unclustered(mnist_cnn_path, calib, tmp_path):
    from exporter.devices.cortex_m import vela

    if not vela.available():
        pytest.skip("Vela (ethos-u-vela) is not installed: pip install 'edgeport[npu]'")
    exporter.export(mnist_cnn_path, target="cortex-m55-ethos-u55", calib=str(calib), output_dir=tmp_path, cluster=K)
    graph = TFLiteGraph.from_file(tmp_path / "model_int8.tflite")
    assert "CUSTOM:TFLM_DECODE" not in graph.op_counts(), "Vela reads plain int8: no LUT for the Ethos-U"
    report = _report(tmp_path)
    assert _clustered_as_reported(graph, report)
    compared = report["vela_clustering"]
    assert compared["clustered_flash_bytes"] > 0 and compared["unclustered_flash_bytes"] > 0
    assert compared["clustered_flash_bytes"] <= compared["unclustered_flash_bytes"]
    assert "Vela flash" in report["conversion"]["vela_clustering"]
    assert report["cortex_m"]["vela"]["off_chip_flash_bytes"] == compared["clustered_flash_bytes"]


def test_cluster_on_a_tflite_is_one_line_exit_2(capsys, exports, tmp_path):
    """A .tflite is not converted again, so --cluster cannot apply: refused before anything runs or is written."""
    given = exports["plain"] / "cortex-m4" / "model_int8.tflite"
    run = run_cli(capsys, "export", given, "--target", "cortex-m4", "--cluster", "16", "-o", tmp_path / "o")
    assert run.code == 2
    assert "--cluster re-chooses the int8 weights of a conversion" in run.error_line
    assert "Traceback" not in run.err
    assert not (tmp_path / "o").exists()


def test_a_lut_compressed_file_sent_to_litert_says_what_it_is(capsys, exports, tmp_path):
    """The firmware's LUT file given to a phone target: not supported (exit 3), and the reason says the file is
    LUT-compressed for TFLite Micro and which file to export instead, not only that an op is unknown."""
    lut_file = exports["clustered"] / "cortex-m4" / "model_int8.tflite"
    assert "CUSTOM:TFLM_DECODE" in {op.name for op in TFLiteGraph.from_file(lut_file).ops}
    run = run_cli(capsys, "export", lut_file, "--target", "android-arm64", "-o", tmp_path / "o")
    assert run.code == 3
    text = run.out + run.err
    assert "LUT-compressed for TFLite Micro" in text and "android-arm64" in text
    assert "Traceback" not in run.err


def test_lut_max_decoded_keeps_big_tensors_plain_and_the_arena_smaller(capsys, tmp_path):
    """--lut-max-decoded caps what DECODE writes into the arena: on an MLP with a 16 kB and an 8 kB weight
    matrix, a 10 kB cap leaves the 16 kB one plain (its reason in the report) and compresses the other; the
    file grows against the uncapped export, and the measured arena shrinks."""
    from cli_helpers import quiet_keras

    keras = quiet_keras()
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((128,)),
            keras.layers.Dense(128, activation="relu", name="wide"),
            keras.layers.Dense(64, activation="relu", name="narrow"),
            keras.layers.Dense(10, name="head"),
        ]
    )
    model.save(tmp_path / "mlp.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32))
    common = ["export", tmp_path / "mlp.keras", "--target", "cortex-m4", "--calib", tmp_path / "calib.npy"]
    common += ["--cluster", "16", "--format", "tflite", "--quiet"]
    assert run_cli(capsys, *common, "-o", tmp_path / "full").code == 0
    run = run_cli(capsys, *common, "--lut-max-decoded", "10K", "-o", tmp_path / "capped")
    assert run.code == 0, run.err
    full, capped = _report(tmp_path / "full"), _report(tmp_path / "capped")
    sizes = {t["name"]: t["bytes_before"] for t in full["lut_compression"]["compressed"]}
    assert any(v > 10 * 1024 for v in sizes.values()) and any(v <= 10 * 1024 for v in sizes.values()), sizes
    lut = capped["lut_compression"]
    assert lut["shipped"] is True
    assert lut["compressed"] and all(t["bytes_before"] <= 10 * 1024 for t in lut["compressed"])
    big = next(name for name, size in sizes.items() if size > 10 * 1024)
    assert big in lut["left"], "the tensor over the cap is stored plain"
    clustered = [len(r["conversion"]["int8_clustering"]["tensors"]) for r in (full, capped)]
    assert clustered[1] < clustered[0], "a tensor the cap keeps plain is not clustered either: it stays exact"
    reasons = capped["conversion"]["int8_clustering"]["skipped"].values()
    assert any("lookup table it would not make the file smaller" in r for r in reasons)
    assert capped["memory"]["model_bytes"] > full["memory"]["model_bytes"]
    assert capped["cortex_m"]["arena"]["bytes"] < full["cortex_m"]["arena"]["bytes"]
    bad = run_cli(capsys, *common[:6], "--lut-max-decoded", "0")
    assert bad.code == 2 and "--lut-max-decoded" in bad.error_line
