"""The benchmark stage on real models: LiteRT, TFLite Micro (exact arena, aborts contained) and onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import run_cli

from exporter.benchmark import benchmark, measure_arena
from exporter.benchmark.host import usable_cores
from exporter.errors import InputModelError, NotSupportedError, UsageError


@pytest.fixture(scope="session")
def vww(assets):
    return assets / "models" / "mlperf_tiny" / "visual_wake_words" / "vww_96_int8.tflite"


@pytest.fixture(scope="session")
def hello_world(assets):
    return assets / "models" / "tflm" / "hello_world" / "hello_world_int8.tflite"


@pytest.fixture(scope="session")
def softmax_1000(tmp_path_factory):
    """A full-int8 Dense(1000, softmax) exported by edgeport: TFLite Micro's int8 SOFTMAX aborts on it."""
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    import exporter

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="features"), keras.layers.Dense(1000, activation="softmax")])
    folder = tmp_path_factory.mktemp("softmax1000")
    model.save(folder / "dense1000.keras")
    exporter.export(folder / "dense1000.keras", target="android-arm64", calib="synthetic", output_dir=folder / "out")
    path = folder / "out" / "model_int8.tflite"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="onnxruntime is in edgeport's [onnx] extra")
    pytest.importorskip("tf2onnx", reason="tf2onnx is in edgeport's [onnx] extra")
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 1), name="x")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="y")(x))
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    spec = (tf.TensorSpec((1, 16, 16, 1), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))
    return path


def _tflm_runs(blob: bytes, arena: int) -> bool:
    """Independent of edgeport's code: does TFLite Micro allocate and invoke with this arena?"""
    from tflite_micro.python.tflite_micro import runtime

    from exporter.tfimport import silenced_stderr_fd

    with silenced_stderr_fd():
        try:
            interp = runtime.Interpreter.from_bytes(blob, arena_size=arena)
        except RuntimeError:
            return False
        detail = interp.get_input_details(0)
        interp.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
        interp.invoke()
    return True


# --- the CLI on the real VWW model -----------------------------------------------------------------


def test_bench_vww_android_and_cortex_m4_prints_statistics(capsys, tmp_path, vww):
    out_json = tmp_path / "bench.json"
    run = run_cli(capsys, "bench", vww, "--target", "android-arm64,cortex-m4", "--runs", "5", "--json", out_json)
    assert run.code == 0, run.err
    blocks = run.out.split("\n\n")
    assert len(blocks) == 2
    android, mcu = blocks
    assert android.startswith("android-arm64: vww_96_int8.tflite")
    assert "LiteRT 2.3.0, XNNPACK on" in android or "XNNPACK on" in android
    assert mcu.startswith("cortex-m4: vww_96_int8.tflite") and "TFLite Micro" in mcu
    for block in blocks:
        for word in (
            "median",
            "mean",
            "p90",
            "p99",
            "min",
            "max",
            "stdev",
            "over 5 runs",
            "peak memory",
            "load",
            "first run",
        ):
            assert word in block, (word, block)
        assert "Host timings are not device timings" in block
    assert "not CMSIS-NN on the Arm Cortex-M4F" in mcu
    assert "allocating 16 bytes less fails" in mcu

    data = json.loads(out_json.read_text())
    by_target = {r["target"]: r for r in data["results"]}
    assert set(by_target) == {"android-arm64", "cortex-m4"} and data["errors"] == []
    arena = by_target["cortex-m4"]["arena"]["bytes"]
    assert f"arena         {arena:,} bytes" in mcu
    assert _tflm_runs(vww.read_bytes(), arena) and not _tflm_runs(vww.read_bytes(), arena - 16)
    assert by_target["android-arm64"]["arena"] is None
    for result in by_target.values():
        latency = result["latency"]
        assert len(latency["timings_ms"]) == latency["runs"] == 5
        assert latency["min_ms"] <= latency["median_ms"] <= latency["max_ms"]
        assert latency["median_ms"] == pytest.approx(float(np.median(latency["timings_ms"])))
        assert latency["p90_ms"] == pytest.approx(float(np.percentile(latency["timings_ms"], 90)))
        assert latency["stdev_ms"] == pytest.approx(float(np.std(latency["timings_ms"], ddof=1)))
        assert result["host_cores"] == usable_cores() and result["host_cpu"]
        assert result["method"].startswith("measured (host, ")
    assert by_target["cortex-m4"]["interpreter"] == "tflite-micro" and by_target["cortex-m4"]["xnnpack"] is None
    assert by_target["android-arm64"]["interpreter_version"] == "2.3.0"


def test_reference_kernels_are_much_slower_than_xnnpack(vww):
    """A sanity check that the two interpreters really ran: TFLM's reference kernels vs XNNPACK, same model."""
    litert = benchmark(vww, "edgetpu", runs=5, warmup=1)
    tflm = benchmark(vww, "cortex-m4", runs=3, warmup=0)
    assert litert.interpreter == "litert" and litert.xnnpack is True
    assert tflm.latency.median_ms > 5 * litert.latency.median_ms


# --- the TFLite Micro arena ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["vww", "hello_world"])
def test_arena_is_the_smallest_that_works(request, fixture):
    path = request.getfixturevalue(fixture)
    blob = path.read_bytes()
    arena = measure_arena(path)
    assert arena.minus_16_fails and arena.minus_1_fails
    assert _tflm_runs(blob, arena.bytes)
    assert not _tflm_runs(blob, arena.bytes - 16)
    assert not _tflm_runs(blob, arena.bytes - 1)
    assert "bisected from the RecordingMicroAllocator total" in arena.method
    assert measure_arena(blob).bytes == arena.bytes  # bytes in, same answer


def test_recorded_total_is_not_the_minimum(vww, hello_world):
    """Why edgeport searches: the recorder's total is 8 B too much for VWW and 432 B too little for hello_world
    (tflite-micro 0.dev20261023182759: 103,680 -> 103,672 and 1,504 -> 1,936)."""
    vww_arena, hw_arena = measure_arena(vww), measure_arena(hello_world)
    assert vww_arena.bytes < vww_arena.recorded_total_bytes
    assert hw_arena.bytes > hw_arena.recorded_total_bytes
    assert not _tflm_runs(hello_world.read_bytes(), hw_arena.recorded_total_bytes)


# --- failures --------------------------------------------------------------------------------------


def test_tflm_abort_is_one_line_exit_3_and_the_caller_survives(capsys, softmax_1000):
    run = run_cli(capsys, "bench", softmax_1000, "--target", "cortex-m4", "--runs", "3")
    assert run.code == 3
    errors = [ln for ln in run.err.splitlines() if ln.strip()]
    assert len(errors) == 1, run.err
    assert errors[0].startswith("edgeport: error: TFLite Micro crashed (SIGABRT)")
    assert "SOFTMAX" in errors[0] and "1000" in errors[0] and "Traceback" not in run.err
    # still here: the same model runs in LiteRT right after
    with pytest.raises(NotSupportedError, match="SIGABRT"):
        benchmark(softmax_1000, "cortex-m7", runs=1)
    assert benchmark(softmax_1000, "android-arm64", runs=3).latency.runs == 3


def test_multi_target_keeps_going_after_one_target_fails(capsys, softmax_1000):
    run = run_cli(capsys, "bench", softmax_1000, "--target", "cortex-m4,android-arm64", "--runs", "2")
    assert run.code == 3
    assert "android-arm64: model_int8.tflite" in run.out and "median" in run.out
    assert "cortex-m4" not in run.out and run.error_line.startswith("edgeport: error: TFLite Micro crashed")


def test_custom_op_unknown_to_tflm_names_it(capsys, assets):
    model = assets / "models" / "edgetpu_pairs" / "mnist9_edgetpu.tflite"
    run = run_cli(capsys, "bench", model, "--target", "cortex-m4")
    assert run.code == 3
    assert "TFLite Micro has no kernel for custom op edgetpu-custom-op" in run.error_line


@pytest.mark.parametrize("kind", ["random", "truncated", "missing", "onnx"])
def test_corrupt_model_is_exit_2_one_line(capsys, tmp_path, vww, kind):
    path = tmp_path / ("bad.onnx" if kind == "onnx" else "bad.tflite")
    if kind == "random" or kind == "onnx":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(vww.read_bytes()[:3000])
    run = run_cli(capsys, "bench", path, "--target", "cortex-m4")
    assert run.code == 2
    assert len([ln for ln in run.err.splitlines() if ln.strip()]) == 1 and run.error_line, run.err
    assert "Traceback" not in run.err and run.out == ""


def test_tflite_on_the_onnx_target_is_a_usage_error(capsys, vww):
    run = run_cli(capsys, "bench", vww, "--target", "onnx")
    assert run.code == 2 and "runs ONNX models in onnxruntime" in run.error_line


def test_tflite_without_target_is_a_usage_error(vww):
    with pytest.raises(UsageError, match="needs a target"):
        benchmark(vww, None)
    with pytest.raises(InputModelError, match="not a TFLite flatbuffer"):
        benchmark(b"not a model at all", "cortex-m4")


# --- options ---------------------------------------------------------------------------------------


def test_threads_capped_to_host_cores_is_reported(vww):
    cores = usable_cores()
    result = benchmark(vww, "android-arm64", threads=cores + 3, runs=3, warmup=0)
    assert (result.threads_requested, result.threads_used, result.threads_capped) == (cores + 3, cores, True)
    assert f"requested {cores + 3}, capped to the host's {cores} cores" in result.render()
    assert result.to_dict()["threads_capped"] is True
    single = benchmark(vww, "android-arm64", threads=1, runs=3, warmup=0)
    assert (single.threads_used, single.threads_capped) == (1, False) and "capped" not in single.render()


def test_runs_and_min_time_are_honoured(capsys, vww):
    assert benchmark(vww, "edgetpu", runs=7, warmup=0).latency.runs == 7
    timed = benchmark(vww, "edgetpu", runs=1, min_time=0.3, warmup=0)
    assert timed.latency.elapsed_s >= 0.3 and timed.latency.runs > 10
    assert len(timed.latency.timings_ms) == timed.latency.runs
    run = run_cli(capsys, "bench", vww, "--target", "cortex-m4", "--runs", "3", "--warmup", "1")
    assert run.code == 0 and "over 3 runs" in run.out and "then 1 warm-up runs" in run.out


def test_input_file_is_used_and_checked(tmp_path, vww):
    sample = np.random.default_rng(5).random((96, 96, 3), dtype=np.float32)  # real values: quantized on the way in
    np.save(tmp_path / "x.npy", sample)
    result = benchmark(vww, "edgetpu", runs=2, inputs=tmp_path / "x.npy")
    assert result.inputs == "from x.npy" and any("quantized with scale" in n for n in result.notes)
    np.save(tmp_path / "wrong.npy", np.zeros((28, 28), np.float32))
    with pytest.raises(UsageError, match=r"does not fit input .* of shape \(1, 96, 96, 3\)"):
        benchmark(vww, "edgetpu", runs=2, inputs=tmp_path / "wrong.npy")


def test_peak_memory_is_the_child_processes_own(vww, softmax_1000):
    """This process holds TensorFlow (hundreds of MB); the benchmark's peak must not include it."""
    assert "tensorflow" in sys.modules
    result = benchmark(vww, "android-arm64", runs=3)
    assert result.baseline_rss_bytes <= result.peak_rss_bytes < 300 * 2**20
    assert "VmHWM" in result.rss_method


# --- onnxruntime -----------------------------------------------------------------------------------


def test_onnx_runs_in_onnxruntime(capsys, tiny_onnx):
    run = run_cli(capsys, "bench", tiny_onnx, "--runs", "10")
    assert run.code == 0, run.err
    assert run.out.startswith("host: tiny.onnx") and "onnxruntime 1." in run.out and "over 10 runs" in run.out
    result = benchmark(tiny_onnx, "android-arm64", runs=5, threads=1)
    assert result.interpreter == "onnxruntime" and result.model_format == "onnx" and result.xnnpack is None
    assert result.inputs.startswith("random, seed 0 (x float32[1, 16, 16, 1])")


# --- start-up ---------------------------------------------------------------------------------------


def test_bench_help_imports_no_interpreter():
    code = (
        "import sys\n"
        "from exporter.cli import main\n"
        "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorflow', 'ai_edge_litert', 'onnxruntime', 'tflite_micro', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert "HEAVY []" in out.stdout


# --- which kernels the host has (VNNI / ARM dot-product) ------------------------------------------

_CPUINFO = {
    "avx2": (
        "x86_64",
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
        "flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2\n",
    ),
    "vnni": (
        "x86_64",
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C\n"
        "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512vl avx512_vnni\n",
    ),
    "arm": (
        "aarch64",
        "processor\t: 0\nBogoMIPS\t: 50.00\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimdrdm lrcpc dcpop asimddp\n",
    ),
}


def _fake_cpu(monkeypatch, kind: str):
    """Make the benchmark see a CPU from fake /proc/cpuinfo text (never this host's own)."""
    from exporter import hostcpu
    from exporter.benchmark import host

    arch, text = _CPUINFO[kind]
    cpu = hostcpu.parse_cpuinfo(text, arch)
    monkeypatch.setattr(host, "host_cpu", lambda: cpu)
    return cpu


@pytest.mark.parametrize("kind", sorted(_CPUINFO))
def test_host_int8_note_names_the_cpu_and_its_dot_product_instructions(monkeypatch, kind):
    from exporter.benchmark.host import describe_host, host_kernels_note, int8_kernels

    cpu = _fake_cpu(monkeypatch, kind)
    facts, note = int8_kernels(), host_kernels_note()
    assert note == facts["note"] == describe_host()["int8_note"]
    assert note.startswith(f"{cpu.model_name} ({cpu.arch}): ")
    assert "host int8 latency is not a phone prediction" in note or "not a phone prediction" in note
    if kind == "avx2":
        assert (facts["has_vnni"], facts["int8_dot_product"]) == (False, False)
        assert "AMD EPYC 7B12" in note and "no VNNI (AVX2 only" in note
        assert "int8 runs slower than float on this host" in note and "1.54x the float time" in note
        assert "phones (ARM dot-product instructions) run int8 faster" in note
    elif kind == "vnni":
        assert (facts["has_vnni"], facts["int8_dot_product"], facts["dot_product_flags"]) == (
            True,
            True,
            ["avx512_vnni"],
        )
        assert "has VNNI (avx512_vnni" in note and "slower" not in note
    else:
        assert (facts["has_vnni"], facts["int8_dot_product"], facts["dot_product_flags"]) == (None, True, ["asimddp"])
        assert "asimddp" in note and "VNNI" not in note and "slower" not in note


def test_arm_without_dot_product_says_int8_is_slower_than_on_phones(monkeypatch):
    from exporter import hostcpu
    from exporter.benchmark import host

    cpu = hostcpu.parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", "aarch64")
    monkeypatch.setattr(host, "host_cpu", lambda: cpu)
    facts = host.int8_kernels()
    assert facts["int8_dot_product"] is False and "asimddp missing" in facts["note"]


@pytest.mark.parametrize("kind", ["avx2", "vnni"])
def test_every_host_benchmark_output_says_which_kernels_the_host_has(monkeypatch, capsys, tmp_path, vww, kind):
    """CLI block, --json, report.json's benchmark entries and report.md all carry the host line."""
    from exporter.report.markdown import extra_sections

    _fake_cpu(monkeypatch, kind)
    out_json = tmp_path / "bench.json"
    run = run_cli(capsys, "bench", vww, "--target", "android-arm64", "--runs", "2", "--json", out_json)
    assert run.code == 0, run.err
    entry = json.loads(out_json.read_text())["results"][0]
    note = entry["host_int8_note"]
    assert f"  host int8     {note}" in run.out
    assert entry["host_has_vnni"] is (kind == "vnni") and entry["host_int8_dot_product"] is (kind == "vnni")
    assert ("int8 runs slower than float on this host" in note) is (kind == "avx2")
    markdown = "\n".join(extra_sections({"benchmark": [entry]}))
    assert f"- Host CPU: {note}" in markdown


def test_export_bench_report_json_and_md_carry_the_host_line(monkeypatch, tmp_path, tiny_keras_path, tiny_calib_path):
    """`edgeport export --bench`: report.json's benchmark entries and report.md name the host's int8 kernels."""
    import exporter

    _fake_cpu(monkeypatch, "avx2")
    result = exporter.export(
        tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path, bench=True, bench_runs=2
    )
    assert result.exit_code == 0
    (entry,) = json.loads((tmp_path / "report.json").read_text())["benchmark"]
    assert entry["host_has_vnni"] is False and "int8 runs slower than float on this host" in entry["host_int8_note"]
    assert f"- Host CPU: {entry['host_int8_note']}" in (tmp_path / "report.md").read_text()
