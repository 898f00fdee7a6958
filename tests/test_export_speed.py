"""Nothing redundant in an export: one converter host reused, each arena measured once, no pointless
per-tensor candidate, and the same bytes as one-shot children (speed itself is in benchmarks/speed.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from cli_helpers import quiet_keras

import exporter
from exporter import workers
from exporter.benchmark import api as bench_api

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A CNN whose 128-unit Dense makes per-tensor Dense worth a second conversion on an MCU."""
    keras = quiet_keras()
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    folder = tmp_path_factory.mktemp("dense")
    model.save(folder / "dense.keras")
    np.save(folder / "calib.npy", np.random.default_rng(0).random((40, 16, 16, 1), dtype=np.float32))
    return folder / "dense.keras", folder / "calib.npy"


@pytest.fixture
def counted(monkeypatch):
    """Counts hosts started by export pools and arena children started, without changing either."""
    pools: list[workers.WorkerPool] = []
    original_init = workers.WorkerPool.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(workers.WorkerPool, "__init__", init)
    arenas: list[int] = []
    measure = bench_api._measure_arena_in_child

    def counting(source):
        arenas.append(1)
        return measure(source)

    monkeypatch.setattr(bench_api, "_measure_arena_in_child", counting)
    monkeypatch.setattr("exporter.analyze.memo._SHARED", {})
    return pools, arenas


def test_one_host_serves_every_conversion_and_the_arena_is_measured_once(counted, dense_model, tmp_path):
    pools, arenas = counted
    model, calib = dense_model
    result = exporter.export(model, target="cortex-m4,cortex-m7", calib=str(calib), output_dir=tmp_path)
    dense = result.report("cortex-m4").extra["dense_quantization"]
    assert {c["scheme"] for c in dense["candidates"]} == {"per-channel", "per-tensor"}, "two conversions ran"
    assert len(pools) == 1 and pools[0].hosts_started == 1, "every conversion of the export ran on one host"
    first, second = (tmp_path / t / "model_int8.tflite" for t in ("cortex-m4", "cortex-m7"))
    assert first.read_bytes() == second.read_bytes()
    assert len(arenas) == len(dense["candidates"]), "each candidate's arena once, reused by the same bytes"
    for target in ("cortex-m4", "cortex-m7"):
        arena = json.loads((tmp_path / target / "report.json").read_text())["cortex_m"]["arena"]
        assert arena["bytes"] > 0


def test_pool_output_is_byte_identical_to_one_shot_children(dense_model, tmp_path, monkeypatch):
    model, calib = dense_model
    exporter.export(model, target="android-arm64", calib=str(calib), output_dir=tmp_path / "pool", formats=("tflite",))
    monkeypatch.setattr(workers, "current", lambda: None)  # every conversion in its own one-shot child
    exporter.export(
        model, target="android-arm64", calib=str(calib), output_dir=tmp_path / "oneshot", formats=("tflite",)
    )
    digest = [
        hashlib.sha256((tmp_path / d / "model_int8.tflite").read_bytes()).hexdigest() for d in ("pool", "oneshot")
    ]
    assert digest[0] == digest[1]


def test_per_tensor_candidate_skipped_when_it_cannot_change_the_verdict(counted, dense_model, tmp_path):
    model, calib = dense_model
    result = exporter.export(model, target="cortex-m4", calib=str(calib), output_dir=tmp_path, flash_budget=20_000)
    report = result.report("cortex-m4")
    assert report.verdict == "not supported"
    dense = report.extra["dense_quantization"]
    assert [c["scheme"] for c in dense["candidates"]] == ["per-channel"]
    assert "over the 20,000 B flash budget" in dense["reason"]


def test_onnx_bytes_are_reproducible(dense_model, tmp_path):
    """Two exports of the same inputs give the same .onnx files (tf2onnx's initializer order varies by run);
    the ONNX children ran beside the TFLite conversion here, which must not change a byte either."""
    import random

    import onnx

    from exporter.convert.onnx_graph import initializers_in_use_order

    model, calib = dense_model
    for run in ("a", "b"):
        exporter.export(model, target="android-arm64", calib=str(calib), output_dir=tmp_path / run)
    for name in ("model_float.onnx", "model_int8.onnx", "model_int8.tflite"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    proto = onnx.load(tmp_path / "a" / "model_float.onnx")
    shuffled = list(proto.graph.initializer)
    assert len(shuffled) >= 3
    random.Random(0).shuffle(shuffled)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(shuffled)
    initializers_in_use_order(proto)
    assert proto.SerializeToString() == (tmp_path / "a" / "model_float.onnx").read_bytes()


def test_float_twin_is_queued_on_the_one_host(counted, dense_model, tmp_path, monkeypatch):
    """With per-layer error wanted, the float twin is queued on the export's one converter host right
    behind the int8 model (no second TensorFlow import); the files are the same as when each conversion
    is only started when a step asks for it."""
    from exporter.convert.session import ConversionSession

    pools, _ = counted
    prefetched: list[object] = []
    original = ConversionSession.prefetch

    def prefetch(self, config):
        prefetched.append(config)
        return original(self, config)

    monkeypatch.setattr(ConversionSession, "prefetch", prefetch)
    model, calib = dense_model
    result = exporter.export(model, target="cortex-m4", calib=str(calib), output_dir=tmp_path / "p", per_layer=True)
    assert result.report("cortex-m4").extra.get("layer_errors"), "per-layer error was measured"
    assert None in prefetched and len(prefetched) >= 2, "the int8 model and the float twin were both queued early"
    assert pools[-1].hosts_started == 1, "both ran on one host"
    monkeypatch.setattr(ConversionSession, "prefetch", lambda self, config: None)
    exporter.export(model, target="cortex-m4", calib=str(calib), output_dir=tmp_path / "s", per_layer=True)
    assert pools[-1].hosts_started == 1
    for name in ("model_int8.tflite", "model_data.cc", "model_settings.h"):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "s" / name).read_bytes(), name


def test_children_run_edgeports_code_whatever_the_working_directory(dense_model, tmp_path, monkeypatch):
    """A user's project may hold a folder named 'exporter': the converter hosts and benchmark children
    must still import edgeport (python -m puts the working directory first on sys.path)."""
    shadow = tmp_path / "exporter"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the user\\'s own exporter package was imported')\n")
    monkeypatch.chdir(tmp_path)
    model, calib = dense_model
    result = exporter.export(model, target="cortex-m4", calib=str(calib), output_dir=tmp_path / "out")
    assert result.report("cortex-m4").verdict == "ok"
    assert exporter.benchmark(tmp_path / "out" / "model_int8.tflite", "cortex-m4", runs=1).latency is not None


def test_fidelity_is_measured_once_per_distinct_model(dense_model, tmp_path, monkeypatch):
    """cortex-m4 and cortex-m7 get the same int8 bytes: one LiteRT fidelity run, the same numbers in both
    reports; a different model (another seed of calibration) is measured again."""
    from exporter.analyze import memo
    from exporter.steps import analysis

    calls: list[int] = []
    original = analysis._measure_fidelity

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(analysis, "_measure_fidelity", counting)
    monkeypatch.setattr(memo, "_RESULTS", type(memo._RESULTS)())
    model, calib = dense_model
    result = exporter.export(model, target="cortex-m4,cortex-m7", calib=str(calib), output_dir=tmp_path)
    m4, m7 = (result.report(t) for t in ("cortex-m4", "cortex-m7"))
    assert m4.fidelity == m7.fidelity and m4.fidelity["outputs"]
    distinct = {c["scheme"] for c in m4.extra["dense_quantization"]["candidates"]}
    assert len(calls) == len(distinct), "per-channel and per-tensor candidates once each, not once per target"
    m4.fidelity["outputs"][0]["snr_db"] = -1.0
    assert m7.fidelity["outputs"][0]["snr_db"] != -1.0, "each report holds its own copy"


def test_content_key_tells_shapes_and_types_apart():
    from exporter.analyze.memo import content_key

    a = np.arange(6, dtype=np.float32)
    assert content_key(a) == content_key(a.copy())
    assert content_key(a) != content_key(a.reshape(2, 3))
    assert content_key(a) != content_key(a.tobytes())
    assert content_key(a, None) != content_key(None, a)


def test_a_deduplicated_onnx_constant_gets_the_same_name_whichever_copy_tf2onnx_kept():
    """MobileNetV2's ReLU6 bounds are one shared constant whose name tf2onnx takes from a different block
    on each run; after canonicalisation both runs' graphs serialize to the same bytes."""
    from onnx import TensorProto, helper, numpy_helper

    from exporter.convert.onnx_graph import initializers_in_use_order

    def graph(kept: str, order: list[str]) -> bytes:
        consts = {
            kept: numpy_helper.from_array(np.float32(6.0), kept),
            "lo": numpy_helper.from_array(np.float32(0.0), "lo"),
        }
        nodes = [
            helper.make_node("Clip", [src, "lo", kept], [dst], name=f"relu_{i}")
            for i, (src, dst) in enumerate([("x", "y"), ("y", "z")])
        ]
        proto = helper.make_model(
            helper.make_graph(
                nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])], [consts[n] for n in order],
            )
        )  # fmt: skip
        initializers_in_use_order(proto)
        return proto.SerializeToString()

    assert graph("block_3/max", ["block_3/max", "lo"]) == graph("block_5/max", ["lo", "block_5/max"])
