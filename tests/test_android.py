"""Device benchmarking over adb: the parser on real benchmark_model logs, and the whole flow on stand-ins.

Stand-ins, from closest-to-a-phone down: a fake adb *server* on loopback that speaks the adb protocol
(the real adbutils client and the real adb binary talk to it; a bash under a temp folder plays the
device), and ``LocalDevice`` (the host itself). The fake ``benchmark_model`` prints lines copied from
the real logs in ../shared/assets/benchmark_model_outputs and honours its flags.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from exporter.devices.android import (
    ADB_METHOD,
    AdbBinaryDevice,
    AdbutilsDevice,
    BenchmarkModelOptions,
    DeviceDisconnected,
    LocalDevice,
    bench_on_device,
    big_core_mask,
    find_device,
    find_devices,
    parse_benchmark_output,
)
from exporter.devices.android.adb import server_running
from exporter.devices.android.binary import elf_abi
from exporter.devices.android.device import DeviceTimeout
from exporter.devices.android.local import LOCAL_METHOD
from exporter.errors import DeviceError, NotSupportedError, UsageError

OUTPUTS = "benchmark_model_outputs"
XIAOMI = "lp6m_yolov5s_android__benchmark_README__XiaomiMi11_tf2.4.md"
README = "tensorflow_lite_tools_benchmark_README__profiling_example.md"
MODEL = "models/mlperf_tiny/anomaly_detection/ad01_int8.tflite"


# --- reading the markdown assets --------------------------------------------------------------------


def log_blocks(path: Path) -> dict[str, list[str]]:
    """Fenced blocks holding tool output (not ```sh commands), keyed by "## heading / ### heading"."""
    h2 = h3 = ""
    blocks: dict[str, list[str]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            h2, h3 = line[3:].strip(), ""
        elif line.startswith("### "):
            h3 = line[4:].strip()
        elif line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            body = "\n".join(lines[i + 1 : j]) + "\n"
            if not lang and not body.lstrip().startswith("adb shell"):
                blocks.setdefault(f"{h2} / {h3}", []).append(body)
            i = j
        i += 1
    return blocks


@pytest.fixture(scope="module")
def outputs(assets) -> Path:
    return assets / OUTPUTS


@pytest.fixture(scope="module")
def xiaomi(outputs) -> dict[str, list[str]]:
    return log_blocks(outputs / XIAOMI)


# --- the parser on every real log -----------------------------------------------------------------


def test_every_asset_file_and_block_is_read(outputs):
    files = sorted(p.name for p in outputs.glob("*.md"))
    assert files == sorted([XIAOMI, README])
    for name in files:
        for key, bodies in log_blocks(outputs / name).items():
            for body in bodies:
                out = parse_benchmark_output(body)
                assert out.inference_avg_us is not None or out.failures or out.op_profiles, (
                    f"{name}: {key} read nothing"
                )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "FP32 model / None(CPU)",
            dict(init=16242, first=360262, warmup=304586, avg=249684, count=50, sfirst=249042, curr=250889,
                 min=247067, max=254474, std=1442, mem=(4.92969, 138.809)),
        ),
        (
            "FP32 model / NNAPI qti-gpu fp32",
            dict(init=404292, first=188086, warmup=175313, avg=156669, count=50, sfirst=157195, curr=159511,
                 min=149738, max=161935, std=2352, mem=(6.80469, 61.0078)),
        ),
        (
            "FP32 model / NNAPI qti-gpu fp16",
            dict(init=365972, first=120877, warmup=108605, avg=92571.2, count=50, sfirst=96719, curr=90158,
                 min=89745, max=96719, std=1638, mem=(6.90625, 61.0547)),
        ),
        (
            "int8 model / None(CPU)",
            dict(init=1779, first=152949, warmup=110690, avg=95788.3, count=50, sfirst=94518, curr=95117,
                 min=93066, max=99490, std=1284, mem=(5.15625, 36.9883)),
        ),
    ],
)  # fmt: skip
def test_xiaomi_mi11_timings(xiaomi, section, expected):
    (body,) = xiaomi[section]
    out = parse_benchmark_output(body)
    assert out.ok and out.timing_format == "current" and out.failures == []
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us, out.inference_avg_us) == (
        expected["init"], expected["first"], expected["warmup"], expected["avg"],
    )  # fmt: skip
    s = out.inference
    assert (s.count, s.first, s.curr, s.min, s.max, s.avg, s.std) == (
        expected["count"], expected["sfirst"], expected["curr"], expected["min"], expected["max"], expected["avg"],
        expected["std"],
    )  # fmt: skip
    assert s.median is None and out.warmup is None
    assert (out.memory_init_mb, out.memory_overall_mb) == expected["mem"]
    assert out.memory_kind == "peak"


def test_xiaomi_nnapi_profile_tables(xiaomi):
    (body,) = xiaomi["FP32 model / NNAPI qti-gpu Profile"]
    out = parse_benchmark_output(body)
    assert not out.ok and out.inference_avg_us is None  # this log holds only the profiler's tables
    init, runs = out.profile("init"), out.profile("inference")
    assert [(o.node_type, o.avg_ms, o.percent, o.times_called) for o in init.run_order] == [
        ("ModifyGraphWithDelegate", 413.346, 56.670, 1),
        ("AllocateTensors", 158.023, 43.330, 2),
    ]
    assert [(t.node_type, t.count, t.avg_ms) for t in init.by_type] == [
        ("ModifyGraphWithDelegate", 1, 413.346),
        ("AllocateTensors", 1, 316.045),
    ]
    assert init.nodes_executed == 2
    assert (init.timings.count, init.timings.curr, init.timings.avg) == (1, 729391, 729391)
    assert runs.nodes_executed == 11 and len(runs.run_order) == 11 and len(runs.top_by_time) == 10
    top = out.top_ops(3)
    assert [(o.node_type, o.avg_ms, o.percent, o.first_ms) for o in top] == [
        ("TfLiteNnapiDelegate", 79.010, 49.781, 78.701),
        ("TfLiteNnapiDelegate", 56.058, 35.320, 60.220),
        ("TfLiteNnapiDelegate", 14.418, 9.084, 15.910),
    ]
    assert top[0].name == "[model/tf.nn.silu_16/mul, model/tf.nn.silu_26/mul, model/tf.nn.silu_35/mul]:231"
    assert runs.run_order[0].name == "[model/tf.strided_slice/StridedSlice]:0"
    assert runs.run_order[0].start_ms == 0.021
    assert [(t.node_type, t.count, t.avg_ms, t.percent) for t in runs.by_type] == [
        ("TfLiteNnapiDelegate", 3, 149.483, 94.187),
        ("STRIDED_SLICE", 6, 8.347, 5.259),
        ("RESIZE_NEAREST_NEIGHBOR", 2, 0.879, 0.554),
    ]
    t = runs.timings
    assert (t.count, t.first, t.curr, t.min, t.max, t.avg, t.std) == (50, 164033, 158560, 146535, 166638, 158715, 2931)


def test_xiaomi_nnapi_failures(xiaomi):
    (default,) = xiaomi["int8 model / NNAPI qti-default (Not working)"]
    out = parse_benchmark_output(default)
    assert not out.ok and out.inference_avg_us is None
    assert (
        out.first_error
        == "NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation."
    )
    assert "Node number 248 (TfLiteNnapiDelegate) failed to prepare." in out.failures
    assert out.failures[-1] == "Benchmarking failed."
    assert out.last_error == "Failed to apply NNAPI delegate."
    assert "Created TensorFlow Lite delegate for NNAPI." in out.delegate_messages

    dsp, logcat = xiaomi["int8 model / NNAPI qti-dsp (Not working)"]
    out = parse_benchmark_output(dsp)
    assert out.first_error == "NN API returned error ANEURALNETWORKS_BAD_DATA at line 1068 while adding operation."
    assert out.last_error == "Failed to apply NNAPI delegate."
    assert "NNAPI delegate created." in out.delegate_messages

    # The adb logcat of the same failure: logcat prefixes are stripped, the tflite errors found.
    out = parse_benchmark_output(logcat)
    assert out.inference_avg_us is None
    assert "NN API returned error ANEURALNETWORKS_OP_FAILED at line 4113 while running computation." in out.failures
    assert out.last_error == "Node number 248 (TfLiteNnapiDelegate) failed to invoke."


def test_readme_profiling_example_old_format(outputs):
    (body,) = log_blocks(outputs / README)["Profiling model operators / "]
    out = parse_benchmark_output(body)
    assert out.ok and out.timing_format == "old"
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (83235, 38467, 79760.9)
    assert out.first_inference_us is None and out.inference is None  # the old format prints neither
    prof = out.profile("inference")
    assert prof.nodes_executed == 31 and len(prof.run_order) == 31 and len(prof.top_by_time) == 10
    top = out.top_ops(2)
    assert [(o.node_type, o.name, o.avg_ms, o.percent) for o in top] == [
        ("CONV_2D", "[MobilenetV1/MobilenetV1/Conv2d_3_pointwise/Relu6]", 6.652, 0.167),
        ("CONV_2D", "[MobilenetV1/MobilenetV1/Conv2d_1_pointwise/Relu6]", 6.107, 0.153),
    ]
    assert (prof.run_order[-1].node_type, prof.run_order[-1].avg_ms) == ("SOFTMAX", 0.029)
    assert [(t.node_type, t.count, t.avg_ms, t.percent) for t in prof.by_type[:2]] == [
        ("CONV_2D", 15, 1.406, 89.270),
        ("DEPTHWISE_CONV_2D", 13, 0.169, 10.730),
    ]
    t = prof.timings
    assert (t.count, t.first, t.min, t.max, t.avg, t.std) == (50, 79449, 77385, 88213, 79732, 1929)


# A slow model on a newer release: INFO prefixes, warm-up and timed statistics with percentiles,
# doubles in C++ stream notation, both memory lines and an XNNPACK partition message.
NEWER_SLOW_LOG = """\
INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/big.tflite]
INFO: Loaded model /data/local/tmp/big.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 58 out of 66 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 3 partitions for the whole graph.
INFO: The input model file size (MB): 98.2
INFO: Initialized session in 1234.57ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=3012345

INFO: Running benchmark for at least 5 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=2.99e+06 curr=2.95e+06 min=2.91e+06 max=2.99e+06 avg=2.95034e+06 std=28123 p5=2.91e+06 median=2.95e+06 p95=2.99e+06

INFO: Inference timings in us: Init: 1.23457e+06, First inference: 3.01234e+06, Warmup (avg): 3.01234e+06, Inference (avg): 2.95034e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=101.5 overall=140.25
INFO: Overall peak memory footprint (MB) via periodic monitoring: 150.75
"""


def test_scientific_notation_percentiles_and_newer_memory_lines():
    out = parse_benchmark_output(NEWER_SLOW_LOG)
    assert out.ok
    assert out.inference_avg_us == 2950340.0 and out.init_us == 1234570.0 and out.first_inference_us == 3012340.0
    s = out.inference
    assert (s.count, s.first, s.min, s.max, s.avg, s.std) == (5, 2990000.0, 2910000.0, 2990000.0, 2950340.0, 28123)
    assert (s.p5, s.median, s.p95) == (2910000.0, 2950000.0, 2990000.0)
    w = out.warmup  # "count=1 curr=X": one warm-up run, min = max = avg = curr
    assert (w.count, w.curr, w.min, w.max, w.avg, w.std) == (1, 3012345, 3012345, 3012345, 3012345, 0.0)
    assert (out.memory_init_mb, out.memory_overall_mb, out.memory_kind) == (101.5, 140.25, "delta from tool start")
    assert out.peak_memory_mb == 150.75
    (d,) = out.delegates
    assert (d.delegate, d.replaced, d.total, d.partitions, d.fully_delegated) == (
        "TfLiteXNNPackDelegate",
        58,
        66,
        3,
        False,
    )
    assert out.failures == []


def test_old_format_line_alone_and_all_same_runs():
    out = parse_benchmark_output(
        "count=3 curr=1500(all same)\nAverage inference timings in us: Warmup: 1.6e+03, Init: 38467, Inference: 1500\n"
    )
    assert out.ok and out.timing_format == "old"
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (1600.0, 38467, 1500)
    s = out.inference
    assert (s.count, s.min, s.max, s.avg, s.std) == (3, 1500, 1500, 1500, 0.0)


# --- options and cores -------------------------------------------------------------------------------


def test_options_make_the_command_line():
    opts = BenchmarkModelOptions(num_threads=4, use_xnnpack=True, warmup_runs=5, num_runs=50,
                                 enable_op_profiling=True, cpu_mask="f0")  # fmt: skip
    assert opts.command("/data/local/tmp/e/benchmark_model", "/data/local/tmp/e/m.tflite") == (
        "taskset f0 /data/local/tmp/e/benchmark_model --graph=/data/local/tmp/e/m.tflite --num_threads=4 "
        "--use_xnnpack=true --use_gpu=false --use_nnapi=false --warmup_runs=5 --num_runs=50 --enable_op_profiling=true"
    )
    with pytest.raises(UsageError, match="--runs must be at least 1; received 0"):
        BenchmarkModelOptions(num_threads=1, use_xnnpack=True, num_runs=0)
    with pytest.raises(UsageError, match="Choose one delegate"):
        BenchmarkModelOptions(num_threads=1, use_xnnpack=True, use_gpu=True, use_nnapi=True)


@pytest.mark.parametrize(
    ("freqs", "mask"),
    [
        ([1804800] * 4 + [2419200] * 3 + [2841600], "f0"),  # Snapdragon 888 (Mi 11): 4 LITTLE, 3 big, 1 prime
        ([1803000] * 4 + [2348000] * 2 + [2850000] * 2, "f0"),  # Tensor G2 (Pixel 7)
        ([1800000] * 6 + [2200000] * 2, "c0"),  # 6 + 2
        ([2000000] * 8, None),  # one cluster: nothing to pin to
        ([None] * 4, None),  # no cpufreq (emulators, containers)
    ],
)
def test_big_core_mask(freqs, mask):
    assert big_core_mask(freqs) == mask


# --- the flow on the host stand-in ---------------------------------------------------------------------

FAKE_BENCHMARK_MODEL = r"""#!/usr/bin/env bash
# A stand-in for TFLite's benchmark_model: parses its flags like the tool, prints lines copied from real logs.
DATA=__DATA__
graph= threads=1 runs=50 warmup=1 xnnpack=false gpu=false nnapi=false prof=false
for a in "$@"; do
  case "$a" in
    --graph=*) graph=${a#*=} ;; --num_threads=*) threads=${a#*=} ;; --num_runs=*) runs=${a#*=} ;;
    --warmup_runs=*) warmup=${a#*=} ;; --use_xnnpack=*) xnnpack=${a#*=} ;; --use_gpu=*) gpu=${a#*=} ;;
    --use_nnapi=*) nnapi=${a#*=} ;; --enable_op_profiling=*) prof=${a#*=} ;;
    *) echo "Unconsumed cmdline flags: $a"; echo "Benchmarking failed."; exit 1 ;;
  esac
done
echo "STARTING!"
echo "Num threads: [$threads]"
echo "Graph: [$graph]"
echo "Use xnnpack: [$xnnpack]"
echo "Num runs: [$runs] Warmup runs: [$warmup]"
echo "Cpus allowed: [$(grep Cpus_allowed_list /proc/self/status | cut -f2)]"
echo "cwd: [$PWD]"
if [ ! -f "$graph" ]; then echo "ERROR: Could not open '$graph'."; echo "Failed to mmap model $graph"; exit 1; fi
echo "Loaded model $graph"
if [ -n "$FAKE_PID_FILE" ]; then echo $$ > "$FAKE_PID_FILE"; fi
if [ "$FAKE_MODE" = sleep ]; then for i in $(seq 300); do sleep 0.2; done; fi
if [ "$FAKE_MODE" = crash ]; then kill -SEGV $$; fi
if [ "$nnapi" = true ]; then sed -n '/^INFO: Initialized/,$p' "$DATA/nnapi_fail.txt"; exit 1; fi
echo "INFO: Initialized TensorFlow Lite runtime."
if [ "$xnnpack" = true ]; then
  echo "INFO: Replacing 11 out of 11 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions."
fi
sed "s/^count=50 /count=$runs /" "$DATA/cpu.txt"
if [ "$prof" = true ]; then cat "$DATA/profile.txt"; fi
exit 0
"""


@pytest.fixture
def fake_binary(tmp_path, xiaomi) -> Path:
    """A benchmark_model stand-in whose output comes from the Mi 11 logs."""
    data = tmp_path / "fake_data"
    data.mkdir()
    (data / "cpu.txt").write_text(xiaomi["FP32 model / None(CPU)"][0])
    (data / "nnapi_fail.txt").write_text(xiaomi["int8 model / NNAPI qti-default (Not working)"][0])
    (data / "profile.txt").write_text(xiaomi["FP32 model / NNAPI qti-gpu Profile"][0])
    path = tmp_path / "benchmark_model"
    path.write_text(FAKE_BENCHMARK_MODEL.replace("__DATA__", str(data)))
    path.chmod(0o755)
    return path


@pytest.fixture
def model(assets) -> Path:
    return assets / MODEL


@pytest.fixture(autouse=True)
def _no_user_binary(monkeypatch, tmp_path):
    """Tests never pick up a real benchmark_model from the user's cache or environment."""
    monkeypatch.delenv("EDGEPORT_BENCHMARK_MODEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("FAKE_MODE", "FAKE_PID_FILE"):
        monkeypatch.delenv(var, raising=False)


def fake_cpu_sysfs(tmp_path: Path, freqs: list[int]) -> Path:
    root = tmp_path / "sysfs_cpu"
    for i, freq in enumerate(freqs):
        (root / f"cpu{i}" / "cpufreq").mkdir(parents=True)
        (root / f"cpu{i}" / "cpufreq" / "cpuinfo_max_freq").write_text(f"{freq}\n")
    return root


PHONE_PROPS = {
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.model": "M2011K2G",
    "ro.product.manufacturer": "Xiaomi",
    "ro.board.platform": "lahaina",
    "ro.build.version.release": "12",
    "ro.build.version.sdk": "31",
}


def leftovers(device: LocalDevice) -> list[str]:
    return sorted(p.name for p in device.root.iterdir())


def test_full_flow_on_local_stand_in(tmp_path, model, fake_binary):
    # Two "cores" with different max frequencies: the faster one is the big cluster (this host has 2+ CPUs).
    big = max(os.sched_getaffinity(0))
    freqs = [1800000] * (big + 1)
    freqs[big] = 2400000
    device = LocalDevice(props=PHONE_PROPS, remap={"/sys/devices/system/cpu": fake_cpu_sysfs(tmp_path, freqs)})
    try:
        result = bench_on_device(model, "android-arm64", device, threads=3, warmup_runs=2, num_runs=7,
                                 big_cores=True, op_profiling=True, benchmark_binary=fake_binary)  # fmt: skip
        assert leftovers(device) == []  # everything pushed was removed
        cmds = device.history
    finally:
        device.close()

    workdir = re.search(r"/data/local/tmp/edgeport-[0-9a-f]{8}", result.command).group(0)
    mask = format(1 << big, "x")
    assert result.command == (
        f"taskset {mask} {workdir}/benchmark_model --graph={workdir}/ad01_int8.tflite --num_threads=3 "
        "--use_xnnpack=true --use_gpu=false --use_nnapi=false --warmup_runs=2 --num_runs=7 --enable_op_profiling=true"
    )
    # The command sequence a phone gets: mkdir, push x2, chmod, run in the background, stop + remove.
    run_at = next(i for i, c in enumerate(cmds) if "--graph=" in c)
    assert cmds[: run_at + 1] == [
        cmds[0],
        f"mkdir -p {workdir}",
        f"push {model} {workdir}/ad01_int8.tflite",
        f"push {fake_binary} {workdir}/benchmark_model",
        f"chmod +x {workdir}/benchmark_model",
        f"{result.command} 2>&1 & echo $! > {workdir}/benchmark_model.pid; wait $!",
    ]
    assert "cpufreq/cpuinfo_max_freq" in cmds[0]
    assert "kill -9" in cmds[run_at + 1] and cmds[run_at + 2] == f"rm -rf {workdir}"

    # The flags reached the tool, the affinity too, and the numbers are the log's.
    assert "Num threads: [3]" in result.log and "Num runs: [7] Warmup runs: [2]" in result.log
    assert f"Cpus allowed: [{big}]" in result.log
    r = result.result
    assert (r.init_us, r.first_inference_us, r.warmup_avg_us, r.inference_avg_us) == (16242, 360262, 304586, 249684)
    assert (r.inference.count, r.inference.min, r.inference.max, r.inference.std) == (7, 247067, 254474, 1442)
    assert (r.memory_init_mb, r.memory_overall_mb) == (4.92969, 138.809)
    assert r.delegates[0].delegate == "TfLiteXNNPackDelegate"
    assert r.top_ops(1)[0].avg_ms == 79.010

    info = result.device
    assert (info.model, info.manufacturer, info.soc, info.android_version, info.sdk, info.abi) == (
        "M2011K2G", "Xiaomi", "lahaina", "12", "31", "arm64-v8a",
    )  # fmt: skip
    assert info.cpu_max_freq_khz == freqs and info.cores == len(freqs)
    assert result.notes == [f"3 threads share 1 big core (mask {mask})."]

    # Labelled as what it is: the host, not a device.
    data = json.loads(json.dumps(result.to_dict()))
    assert data["method"] == LOCAL_METHOD == data["timings_us"]["method"] == data["memory_mb"]["method"]
    assert data["timings_us"]["inference_avg"] == 249684 and data["timings_us"]["inference"]["count"] == 7
    assert (
        data["settings"]["cpu_mask"] == mask and data["op_profile"]["top_ops"][0]["node_type"] == "TfLiteNnapiDelegate"
    )
    text = result.render()
    assert "inference avg   249.68 ms ± 1.44 ms (min 247.07 ms, max 254.47 ms, n=7)" in text
    assert "Xiaomi M2011K2G [local] (SoC lahaina, Android 12, SDK 31, arm64-v8a" in text


def test_emulator_abi_is_accepted_with_a_note(model, fake_binary):
    device = LocalDevice(props={**PHONE_PROPS, "ro.product.cpu.abi": "x86_64"})
    try:
        result = bench_on_device(
            model, "android-arm64", device, num_runs=3, big_cores=True, benchmark_binary=fake_binary
        )
    finally:
        device.close()
    assert (
        "x86_64 device, not an arm64 phone (an emulator image, or the host standing in): its timings are not representative"
        in result.notes[0]
    )
    assert any("--big-cores" in n for n in result.notes) and result.options.cpu_mask is None
    assert result.result.inference.count == 3

    arm_emulator = LocalDevice(props={**PHONE_PROPS, "ro.kernel.qemu": "1"})
    try:
        result = bench_on_device(model, "android-arm64", arm_emulator, num_runs=3, benchmark_binary=fake_binary)
    finally:
        arm_emulator.close()
    assert result.device.emulator and "is an Android emulator: its timings measure the computer" in result.notes[0]


def test_local_spec_is_the_host_labelled_as_such(model, fake_binary):
    result = bench_on_device(model, "android-arm64", "local", num_runs=2, benchmark_binary=fake_binary)
    assert result.method == LOCAL_METHOD and result.device.serial == "local"
    assert result.device.model.startswith("host stand-in")
    assert result.to_dict()["timings_us"]["method"].startswith("host stand-in")


def test_wrong_abi_and_wrong_target_are_refused(model, fake_binary):
    device = LocalDevice(props={**PHONE_PROPS, "ro.product.cpu.abi": "armeabi-v7a"})
    try:
        with pytest.raises(
            DeviceError, match=r"needs an arm64-v8a device .* reports ro.product.cpu.abi=armeabi-v7a"
        ) as exc:
            bench_on_device(model, "android-arm64", device, benchmark_binary=fake_binary)
        assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
        with pytest.raises(UsageError, match="target 'cortex-m4' is a mcu running tflite-micro"):
            bench_on_device(model, "cortex-m4", device, benchmark_binary=fake_binary)
        assert device.history[-1].startswith("for c in")  # the wrong target was refused before any command
    finally:
        device.close()


def test_missing_binary_says_where_to_get_it(model, tmp_path):
    device = LocalDevice(props=PHONE_PROPS)
    try:
        with pytest.raises(UsageError) as exc:
            bench_on_device(model, "android-arm64", device)
        msg = str(exc.value)
        assert "\n" not in msg and exc.value.exit_code == 2
        assert "No benchmark_model binary for arm64-v8a" in msg
        assert (
            "tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/android_aarch64_benchmark_model"
            in msg
        )
        assert "bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model" in msg
        assert str(tmp_path / "cache" / "edgeport" / "benchmark_model" / "arm64-v8a" / "benchmark_model") in msg
        assert "EDGEPORT_BENCHMARK_MODEL" in msg and "--benchmark-binary" in msg
        assert leftovers(device) == []
    finally:
        device.close()


def test_host_build_is_refused_for_a_phone(model):
    # This Python is a host ELF (x86-64 here): pushing such a benchmark_model to an arm64 phone cannot work.
    host_abi = elf_abi(Path(sys.executable))
    phone_abi = "x86_64" if host_abi == "arm64-v8a" else "arm64-v8a"
    device = LocalDevice(props={**PHONE_PROPS, "ro.product.cpu.abi": phone_abi})
    try:
        with pytest.raises(
            UsageError, match=rf"benchmark_model at .* is built for {host_abi}, but the device is {phone_abi}"
        ):
            bench_on_device(model, "android-arm64", device, benchmark_binary=sys.executable)
        assert leftovers(device) == []
    finally:
        device.close()


def test_binary_from_environment_and_cache(model, fake_binary, tmp_path, monkeypatch):
    cached = tmp_path / "cache" / "edgeport" / "benchmark_model" / "arm64-v8a" / "benchmark_model"
    cached.parent.mkdir(parents=True)
    shutil.copy(fake_binary, cached)
    device = LocalDevice(props=PHONE_PROPS)
    try:
        assert bench_on_device(model, "android-arm64", device, num_runs=2).binary == str(cached)
        monkeypatch.setenv("EDGEPORT_BENCHMARK_MODEL", str(fake_binary))
        assert bench_on_device(model, "android-arm64", device, num_runs=2).binary == str(fake_binary)
    finally:
        device.close()


def test_delegate_failure_is_not_supported_exit_3(model, fake_binary):
    device = LocalDevice(props=PHONE_PROPS)
    try:
        with pytest.raises(NotSupportedError) as exc:
            bench_on_device(model, "android-arm64", device, use_nnapi=True, benchmark_binary=fake_binary)
        assert leftovers(device) == []
    finally:
        device.close()
    msg = str(exc.value)
    assert exc.value.exit_code == 3 and "\n" not in msg
    assert msg.startswith(
        "ad01_int8.tflite cannot run on local with NNAPI: Failed to apply NNAPI delegate. (first error: NN API "
        "returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.)"
    )
    assert "without --use-gpu/--use-nnapi" in msg


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [
        ("crash", r"benchmark_model failed on local \(killed by SIGSEGV\)"),
        ("badflag", r"benchmark_model failed on local \(exit 1\): Unconsumed cmdline flags: --bogus"),
        ("noexec", r"benchmark_model could not start on local \(exit 126\): .*(Exec format error|cannot execute)"),
    ],
)
def test_tool_failures_are_exit_2(model, fake_binary, tmp_path, monkeypatch, mode, pattern):
    binary = fake_binary
    if mode == "crash":
        monkeypatch.setenv("FAKE_MODE", "crash")
    elif mode == "badflag":
        binary = tmp_path / "bm_badflag"
        binary.write_text(
            fake_binary.read_text().replace(
                'echo "STARTING!"', 'set -- --bogus; echo "Unconsumed cmdline flags: --bogus"; exit 1'
            )
        )
    else:
        binary = tmp_path / "bm_noexec"
        binary.write_bytes(b"\x00\x01 this is not a program\n")
    device = LocalDevice(props=PHONE_PROPS)
    try:
        with pytest.raises(DeviceError, match=pattern) as exc:
            bench_on_device(model, "android-arm64", device, benchmark_binary=binary)
        assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
        assert leftovers(device) == []
    finally:
        device.close()


def process_gone(pid: int, seconds: float = 5) -> bool:
    """The process has ended (killed processes take a moment to go on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):  # a zombie waits for its reaper but runs nothing
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def wait_for_file(path: Path, seconds: float = 30) -> str:  # generous: CI runs one worker per core
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_timeout_stops_the_run_and_cleans_up(model, fake_binary, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "sleep")
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "fake.pid"))
    device = LocalDevice(props=PHONE_PROPS)
    try:
        with pytest.raises(
            DeviceTimeout, match=r"benchmark_model did not finish within 1.5 s on local \(50 runs of ad01_int8.tflite\)"
        ) as exc:
            bench_on_device(model, "android-arm64", device, benchmark_binary=fake_binary, timeout_s=1.5)
        assert exc.value.exit_code == 2
        assert leftovers(device) == []
    finally:
        device.close()
    assert process_gone(int((tmp_path / "fake.pid").read_text()))


def test_ctrl_c_cleans_up(model, fake_binary, tmp_path, monkeypatch):
    pid_file = tmp_path / "fake.pid"
    monkeypatch.setenv("FAKE_MODE", "sleep")
    monkeypatch.setenv("FAKE_PID_FILE", str(pid_file))
    main = threading.main_thread().ident

    def press_ctrl_c():
        wait_for_file(pid_file)
        signal.pthread_kill(main, signal.SIGINT)

    # A shell starts background jobs with SIGINT ignored (CI may run us so): Ctrl-C must reach us here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    device = LocalDevice(props=PHONE_PROPS)
    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    try:
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            bench_on_device(model, "android-arm64", device, benchmark_binary=fake_binary, timeout_s=60)
        presser.join(5)
        assert leftovers(device) == []
    finally:
        device.close()
        signal.signal(signal.SIGINT, previous)
    assert process_gone(int(pid_file.read_text()))


class VanishingDevice(LocalDevice):
    """Starts the benchmark for real, then behaves like a phone whose cable was pulled."""

    def shell(self, cmd, timeout=None):
        if "--graph=" in cmd:  # started in the background, not waited for
            super().shell(cmd.replace(" 2>&1 &", " >/dev/null 2>&1 &").replace("; wait $!", ""), timeout=timeout)
            if os.environ.get("FAKE_PID_FILE"):  # the cable is pulled once the benchmark really runs
                wait_for_file(Path(os.environ["FAKE_PID_FILE"]))
            raise DeviceDisconnected(self.serial, during="a device command")
        return super().shell(cmd, timeout)


def test_disconnect_mid_run_on_stand_in(model, fake_binary, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "sleep")
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "fake.pid"))
    device = VanishingDevice(props=PHONE_PROPS)
    try:
        with pytest.raises(DeviceDisconnected) as exc:
            bench_on_device(model, "android-arm64", device, benchmark_binary=fake_binary)
        assert leftovers(device) == []
    finally:
        device.close()
    assert str(exc.value).startswith("Device local disconnected during the benchmark.")
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    assert process_gone(int(wait_for_file(tmp_path / "fake.pid")))


def test_bad_model_and_device_spec(tmp_path, fake_binary):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(UsageError, match="is not a TFLite flatbuffer"):
        bench_on_device(bad, "android-arm64", "local", benchmark_binary=fake_binary)
    with pytest.raises(UsageError, match="--device must be 'adb' .* received 'usb'"):
        find_devices("usb")


# --- a fake adb server on loopback: real clients, protocol-level stand-in device ---------------------


class FakeAdbServer:
    """Answers the adb host protocol on 127.0.0.1 for listed devices; bash in a temp folder is the device.

    Handles host:version/devices/kill, transports, ``shell:`` (v1) and the sync STAT/SEND push.
    ``vanish_on`` makes the device disappear in the middle of the first shell command containing it.
    """

    def __init__(self, root: Path, devices: list[tuple[str, str]], props: dict[str, str] | None = None) -> None:
        self.root = root / "device"
        self.root.mkdir()
        self.devices = list(devices)
        self.requests: list[str] = []
        self.vanish_on: str | None = None
        bindir = root / "device_bin"
        bindir.mkdir()
        getprop = bindir / "getprop"
        cases = "".join(f'  {k}) echo "{v}" ;;\n' for k, v in (props or PHONE_PROPS).items())
        getprop.write_text(f'#!/usr/bin/env bash\ncase "$1" in\n{cases}  *) echo "" ;;\nesac\n')
        getprop.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        try:  # wakes the accept() thread; a bare close() could leave it accepting on a reused fd number
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)

    def host_path(self, remote: str) -> str:
        return remote.replace("/data/local/tmp", str(self.root))

    @staticmethod
    def _recv(c: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = c.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    @staticmethod
    def _block(text: str) -> bytes:
        data = text.encode()
        return b"%04x" % len(data) + data

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._stop:
                conn.close()
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _ready(self, serial: str) -> bool:
        return (serial, "device") in self.devices

    def _handle(self, c: socket.socket) -> None:
        try:
            while True:
                req = self._recv(c, int(self._recv(c, 4), 16)).decode()
                self.requests.append(req)
                if req == "host:version":
                    c.sendall(b"OKAY" + self._block("0029"))
                    return
                if req.startswith("host:devices"):
                    c.sendall(b"OKAY" + self._block("".join(f"{s}\t{st}\n" for s, st in self.devices)))
                    return
                if req == "host:kill":
                    c.sendall(b"OKAY")
                    return
                if req.endswith(":features"):
                    c.sendall(b"OKAY" + self._block(""))
                    return
                if req.startswith(("host:tport:serial:", "host:transport:")):
                    serial = req.rsplit(":", 1)[1]
                    if not self._ready(serial):
                        c.sendall(b"FAIL" + self._block(f"device '{serial}' not found"))
                        return
                    c.sendall(b"OKAY" + (struct.pack("<Q", 1) if "tport" in req else b""))
                    continue
                if req.startswith("shell:"):
                    c.sendall(b"OKAY")
                    self._shell(c, req[len("shell:") :])
                    return
                if req == "sync:":
                    c.sendall(b"OKAY")
                    self._sync(c)
                    return
                c.sendall(b"FAIL" + self._block(f"unknown request {req}"))
                return
        except (EOFError, OSError):
            return
        finally:
            c.close()

    def _shell(self, c: socket.socket, cmd: str) -> None:
        proc = subprocess.Popen(["bash", "-c", self.host_path(cmd)], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        if self.vanish_on and self.vanish_on in cmd:
            c.sendall(proc.stdout.readline())  # a first line, then the cable is pulled
            self.devices = []
            proc.kill()
            proc.wait()
            return
        out, _ = proc.communicate()
        c.sendall(out)

    def _sync(self, c: socket.socket) -> None:
        handle = None
        while True:
            cmd = self._recv(c, 4)
            size = struct.unpack("<I", self._recv(c, 4))[0]
            if cmd == b"STAT":
                path = Path(self.host_path(self._recv(c, size).decode()))
                mode = (stat.S_IFDIR | 0o755) if path.is_dir() else (stat.S_IFREG | 0o644) if path.exists() else 0
                c.sendall(b"STAT" + struct.pack("<III", mode, path.stat().st_size if path.is_file() else 0, 0))
            elif cmd == b"SEND":
                remote, _, mode = self._recv(c, size).decode().rpartition(",")
                handle = open(self.host_path(remote), "wb")  # noqa: SIM115 - closed at DONE
            elif cmd == b"DATA":
                handle.write(self._recv(c, size))
            elif cmd == b"DONE":
                handle.close()
                c.sendall(b"OKAY" + struct.pack("<I", 0))
            elif cmd == b"QUIT":
                return


@pytest.fixture
def adb_server(tmp_path, monkeypatch):
    """Start a FakeAdbServer and point adb clients at it (ANDROID_ADB_SERVER_PORT)."""
    servers: list[FakeAdbServer] = []

    def start(devices, props=None) -> FakeAdbServer:
        server = FakeAdbServer(tmp_path, devices, props)
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _adbutils_or_skip():
    return pytest.importorskip("adbutils", reason="adbutils is not installed (pip install 'edgeport[android]')")


def _adb_binary_or_skip() -> str:
    from exporter.devices.android.adb import find_adb_binary

    adb = find_adb_binary()
    if not adb:
        pytest.skip("no adb program: install adbutils (bundles adb) or Debian's adb")
    return adb


BACKENDS = ["adbutils", "binary"]


def _need(backend: str) -> None:
    _adbutils_or_skip() if backend == "adbutils" else _adb_binary_or_skip()


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_devices_need_a_serial(adb_server, backend):
    _need(backend)
    server = adb_server([("emulator-5554", "device"), ("R58M12345", "device")])
    with pytest.raises(DeviceError) as exc:
        find_device("adb", backend=backend)
    assert str(exc.value) == (
        "Several Android devices are connected (emulator-5554, R58M12345): choose one with --device adb:SERIAL, "
        "e.g. --device adb:emulator-5554."
    )
    assert exc.value.exit_code == 2
    device = find_device("adb:R58M12345", backend=backend)
    assert device.serial == "R58M12345" and device.method == ADB_METHOD
    assert isinstance(device, AdbutilsDevice if backend == "adbutils" else AdbBinaryDevice)
    device.close()
    assert "host:kill" not in server.requests  # a server edgeport did not start is left alone
    assert server_running("127.0.0.1", server.port)


@pytest.mark.parametrize("backend", BACKENDS)
def test_serial_not_found_and_unauthorized(adb_server, backend):
    _need(backend)
    adb_server([("emulator-5554", "device"), ("R58M12345", "unauthorized")])
    with pytest.raises(
        DeviceError,
        match=r"^Device XYZ is not connected \(adb lists: emulator-5554 \(device\), R58M12345 \(unauthorized\)\)",
    ):
        find_devices("adb:XYZ", backend=backend)
    with pytest.raises(
        DeviceError, match="Device R58M12345 is unauthorized: unlock it and accept the 'Allow USB debugging' prompt"
    ):
        find_devices("adb:R58M12345", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_over_the_adb_protocol(adb_server, backend, model, fake_binary):
    _need(backend)
    server = adb_server([("R58M12345", "device")])
    result = bench_on_device(model, "android-arm64", "adb", num_runs=4, benchmark_binary=fake_binary)
    assert result.method == ADB_METHOD and result.device.serial == "R58M12345"
    assert result.device.model == "M2011K2G" and result.device.abi == "arm64-v8a"
    assert result.result.inference_avg_us == 249684 and result.result.inference.count == 4
    assert list(server.root.iterdir()) == []  # pushed over sync, removed with rm -rf
    assert any(r == "sync:" for r in server.requests) and "host:kill" not in server.requests


def test_disconnect_mid_run_over_adb(adb_server, model, fake_binary):
    _adbutils_or_skip()
    server = adb_server([("R58M12345", "device")])
    server.vanish_on = "--graph="
    with pytest.raises(DeviceDisconnected) as exc:
        bench_on_device(model, "android-arm64", "adb:R58M12345", benchmark_binary=fake_binary)
    msg = str(exc.value)
    assert msg.startswith("Device R58M12345 disconnected during the benchmark.") and "\n" not in msg
    # The device is gone, so clean-up could not run: the message says what may be left and how to remove it.
    assert re.search(r"may remain in /data/local/tmp/edgeport-[0-9a-f]{8}; delete them with 'adb shell rm -rf", msg)
    assert exc.value.exit_code == 2


# --- the real adb: no device, and the server edgeport started is stopped again ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adb_processes(port: int) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"tcp:{port}"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "adb" in ln and "pgrep" not in ln]


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_adb_no_device_stops_the_server_it_started(backend, monkeypatch):
    _need(backend)
    if shutil.which("pgrep") is None:
        pytest.skip("pgrep is needed to check that no adb server is left running")
    port = _free_port()  # a port of our own: a user's server on 5037 is never touched
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    assert not server_running("127.0.0.1", port)
    with pytest.raises(DeviceError) as exc:
        find_devices("adb", backend=backend)
    msg = str(exc.value)
    assert msg.startswith(
        "No Android device found over adb (edgeport started an adb server, found no device and stopped it again). "
        "Connect a phone by USB with USB debugging on"
    )
    assert "emulator -avd NAME" in msg and "\n" not in msg and exc.value.exit_code == 2
    assert not server_running("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while _adb_processes(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _adb_processes(port) == []


def test_real_adb_server_already_running_is_left_alone(monkeypatch):
    adb = _adb_binary_or_skip()
    port = _free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    subprocess.run([adb, "-P", str(port), "start-server"], capture_output=True, timeout=30, check=True)
    try:
        assert server_running("127.0.0.1", port)
        with pytest.raises(
            DeviceError, match=rf"No Android device found over adb \(the adb server at 127.0.0.1:{port} lists none\)"
        ):
            find_devices("adb", backend="binary")
        assert server_running("127.0.0.1", port)  # the user's server keeps running
    finally:
        subprocess.run([adb, "-P", str(port), "kill-server"], capture_output=True, timeout=30)


# --- the CLI and the export report -----------------------------------------------------------------


def test_bench_cli_on_the_stand_in_device(model, fake_binary, tmp_path, capsys):
    from cli_helpers import run_cli

    out = tmp_path / "device.json"
    run = run_cli(
        capsys,
        "bench",
        model,
        "--target",
        "android-arm64",
        "--device",
        "local",
        "--benchmark-binary",
        fake_binary,
        "--runs",
        "3",
        "--threads",
        "2",
        "--json",
        out,
    )
    assert run.code == 0, run.err
    data = json.loads(out.read_text())
    assert data["timings_us"]["method"].startswith("host stand-in")
    assert data["settings"]["num_threads"] == 2
    assert data["timings_us"]["inference"]["count"] == 3


def test_export_bench_device_puts_device_numbers_in_the_report(fake_binary, tmp_path, tiny_keras_path, tiny_calib_path):
    import exporter

    result = exporter.export(
        tiny_keras_path,
        target="android-arm64",
        calib=str(tiny_calib_path),
        output_dir=tmp_path / "o",
        formats=("tflite",),
        bench_device="local",
        benchmark_binary=fake_binary,
        bench_runs=4,
    )
    device = result.report("android-arm64").extra["device_benchmark"]
    assert device["device"]["serial"] == "local" and device["timings_us"]["inference"]["count"] == 4
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["device_benchmark"]["method"].startswith("host stand-in")
    assert "## Device benchmark" in (tmp_path / "o" / "report.md").read_text()


def test_bench_cli_without_adb_device_is_one_line_exit_2(model, tmp_path, capsys, monkeypatch):
    from cli_helpers import run_cli

    _adbutils_or_skip()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "5099")  # a private port: never touch a user's server
    run = run_cli(capsys, "bench", model, "--target", "android-arm64", "--device", "adb")
    assert run.code == 2
    lines = [ln for ln in run.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in run.err
