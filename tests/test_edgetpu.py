"""Edge TPU: the predicted partition against the real compiler's output, the log parser on real logs,
the Keras remedies end to end, and the real-compiler path through a fake ``edgetpu_compiler``."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import run_cli

from exporter.devices.edgetpu import (
    MAX_VERSIONS,
    analyze_edgetpu,
    compare,
    count_compiled,
    find_tools,
    mismatch_warning,
    parse_compiler_log,
    reason_templates,
    run_compiler,
    statuses,
)
from exporter.devices.edgetpu import tools as edgetpu_tools
from exporter.errors import DeviceError
from exporter.profiles import Memory, load_profile, op_list_path, read_op_list
from exporter.verify.graph import TFLiteGraph

PAIRS = "models/edgetpu_pairs"


def _pairs(assets: Path) -> list[dict[str, object]]:
    rows = []
    lines = [
        ln
        for ln in (assets / PAIRS / "partitioning_ground_truth.tsv").read_text().splitlines()
        if not ln.startswith("#")
    ]
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=True))
        row["ops_left_on_cpu"] = json.loads(row["ops_left_on_cpu"])
        row["ops_mapped_to_tpu"] = json.loads(row["ops_mapped_to_tpu"])
        rows.append(row)
    return rows


# --- the op-version table --------------------------------------------------------------------------------


def test_version_table_covers_exactly_the_supported_ops():
    names = read_op_list("edgetpu")
    assert op_list_path("edgetpu").is_file()
    assert set(MAX_VERSIONS) == set(names)
    assert all(v.basis in ("observed", "int8", "rejected") and v.evidence for v in MAX_VERSIONS.values())
    assert all(template for template in reason_templates().values())


# --- prediction vs the real compiler on every real pair -----------------------------------------------


def test_every_pair_prediction_matches_the_compiler(assets):
    rows = _pairs(assets)
    assert len(rows) == 7
    for row in rows:
        cpu_model = TFLiteGraph.from_file(assets / PAIRS / row["cpu_model"])
        twin = TFLiteGraph.from_file(assets / PAIRS / row["edgetpu_model"])
        analysis = analyze_edgetpu(cpu_model, model_name=str(row["cpu_model"]))
        custom, left = count_compiled(twin)
        # the compiled twin: ops outside the edgetpu-custom-op are the CPU ops
        assert custom == int(row["n_edgetpu_custom_ops"]) == analysis.subgraphs, row["cpu_model"]
        assert analysis.cpu_counts() == left == row["ops_left_on_cpu"], row["cpu_model"]
        expected_mapped = Counter(op.name for op in cpu_model.ops) - Counter(left)
        assert analysis.mapped_counts() == dict(expected_mapped) == row["ops_mapped_to_tpu"], row["cpu_model"]
        assert len(analysis.ops) == int(row["total_ops_cpu"])
        assert analysis.verdict == f"all {row['total_ops_cpu']} ops on the Edge TPU"


@pytest.mark.parametrize("stem", ["mnist7", "mnist9"])
def test_prediction_agrees_with_the_real_log(assets, stem):
    analysis = analyze_edgetpu(TFLiteGraph.from_file(assets / PAIRS / f"{stem}.tflite"))
    real = parse_compiler_log((assets / PAIRS / f"{stem}_edgetpu.log").read_text())
    assert compare(analysis, real) == []


def test_compare_names_the_ops_that_differ(assets):
    """mnist9 has two QUANTIZE ops (uint8 I/O) that mnist7's log does not: a loud mismatch naming QUANTIZE."""
    analysis = analyze_edgetpu(TFLiteGraph.from_file(assets / PAIRS / "mnist9.tflite"))
    wrong_log = parse_compiler_log((assets / PAIRS / "mnist7_edgetpu.log").read_text())
    lines = compare(analysis, wrong_log)
    assert len(lines) == 1 and lines[0].startswith("QUANTIZE: predicted 2 on the Edge TPU")
    assert "QUANTIZE" in mismatch_warning(lines)


def test_param_cache_estimate_and_off_chip_warning(assets):
    graph = TFLiteGraph.from_file(assets / PAIRS / "mnist7.tflite")
    analysis = analyze_edgetpu(graph)
    assert 0.95 * graph.size_bytes < analysis.param_bytes < graph.size_bytes  # weights dominate the file
    assert analysis.param_cache_bytes == 8 * 1024 * 1024 and not analysis.streams_off_chip
    assert analysis.param_warning is None
    profile = load_profile("edgetpu")
    small = dataclasses.replace(profile, memory=Memory(param_cache_bytes=1_000_000))
    tight = analyze_edgetpu(graph, profile=small)
    assert tight.streams_off_chip and "stream from the host" in tight.param_warning


def test_num_segments_splits_the_mapped_part(assets):
    analysis = analyze_edgetpu(TFLiteGraph.from_file(assets / PAIRS / "mobv2.tflite"), num_segments=2)
    assert len(analysis.segments) == 2 and all(s.op_indices for s in analysis.segments)
    assert sum(s.param_bytes for s in analysis.segments) == analysis.param_bytes
    assert analysis.segments[0].op_indices[-1] < analysis.segments[1].op_indices[0]
    assert analysis.fully_mapped and "segments" in analysis.notes[0]


# --- the compiler-log parser on every real log ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "model", "total", "some"),
    [
        ("mnist7_edgetpu.log", "15.0.340273435", "mnist7.tflite", 8, {"FULLY_CONNECTED": 2, "SOFTMAX": 1}),
        ("mnist9_edgetpu.log", "15.0.340273435", "mnist9.tflite", 10, {"QUANTIZE": 2, "CONV_2D": 2}),
        (
            "yolov5n-int8_edgetpu_160.log",
            "16.0.384591198",
            "yolov5n-int8.tflite",
            262,
            {"CONV_2D": 60, "LOGISTIC": 66, "MUL": 75},
        ),
        (
            "yolov8n_full_integer_quant_edgetpu_160.log",
            "16.0.384591198",
            "yolov8n_saved_model/yolov8n_full_integer_quant.tflite",
            257,
            {"TRANSPOSE": 6, "SUB": 2, "SOFTMAX": 1, "STRIDED_SLICE": 20},
        ),
    ],
)
def test_parser_reads_every_real_log(assets, name, version, model, total, some):
    log = parse_compiler_log((assets / PAIRS / name).read_text())
    assert log.version == version and log.major_version == int(version.split(".")[0])
    assert log.input_model == model and log.output_model.endswith("_edgetpu.tflite")
    assert log.table_total == total
    assert log.status_counts() == {statuses.MAPPED: total}
    assert log.cpu_counts() == {}
    for op, count in some.items():
        assert log.mapped_counts()[op] == count
    assert log.to_dict()["operators"][0]["count"] >= 1


def test_every_log_in_the_assets_is_parsed(assets):
    logs = sorted((assets / PAIRS).glob("*.log"))
    assert len(logs) == 4
    assert all(parse_compiler_log(p.read_text()).operators for p in logs)


# Format of compiler 16 stdout with -s (line wording as printed by the compiler; the numbers are this test's own).
STDOUT_16 = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: net.tflite
Input size: 2.50MiB
Output model: net_edgetpu.tflite
Output size: 2.61MiB
On-chip memory used for caching model parameters: 2.40MiB
On-chip memory remaining for caching model parameters: 5.60MiB
Off-chip memory used for streaming uncached model parameters: 12.00KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 5
Operation log: net_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 3
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        2          Mapped to Edge TPU
GELU                           1          Operation not supported
CONV_2D                        1          More than one subgraph is not supported
QUANTIZE                       1          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_parser_reads_the_stdout_summary():
    log = parse_compiler_log(STDOUT_16)
    assert (log.version, log.compile_ms, log.timeout_s, log.succeeded) == ("16.0.384591198", 412, 180, True)
    assert log.input_size_bytes == round(2.5 * 1024**2) and log.off_chip_bytes == 12 * 1024
    assert log.on_chip_used_bytes == round(2.4 * 1024**2) and log.on_chip_remaining_bytes == round(5.6 * 1024**2)
    assert (log.subgraphs, log.total_ops, log.ops_on_tpu, log.ops_on_cpu) == (1, 5, 3, 2)
    assert log.operation_log == "net_edgetpu.log"
    assert log.mapped_counts() == {"CONV_2D": 2, "QUANTIZE": 1}
    assert log.cpu_counts() == {"GELU": 1, "CONV_2D": 1}


def test_parser_reads_a_refused_model():
    text = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "ERROR: Didn't find op for builtin opcode 'EXP' version '2'. An older version of this builtin might be supported.\n\n"
        "ERROR: Registration failed.\n\nInvalid model: m.tflite\nModel could not be parsed\n"
    )
    log = parse_compiler_log(text)
    assert log.succeeded is False and log.operators == []
    assert log.errors[0].startswith("ERROR: Didn't find op for builtin opcode 'EXP' version '2'")
    assert len(log.errors) == 4


# --- Keras models end to end (one TF session; ~30 s) ---------------------------------------------------


@pytest.fixture(scope="module")
def keras_exports(tmp_path_factory):
    """A CNN with swish early and GELU in its middle, exported int8; its --edgetpu-compat rewrite exported
    with int8 and with float I/O."""
    import exporter
    from exporter.devices.edgetpu import edgetpu_compat_fixes
    from exporter.load import load_model
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    work = tmp_path_factory.mktemp("edgetpu")
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3), name="image"),
            keras.layers.Conv2D(8, 3, padding="same", activation="swish", name="conv_swish"),
            keras.layers.Conv2D(8, 3, padding="same", activation="gelu", name="conv_gelu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="gelu_cnn",
    )
    model.save(work / "gelu.keras")
    fixed, changes = edgetpu_compat_fixes(model)
    fixed.save(work / "fixed.keras")
    out = {}
    for key, path, io in (
        ("gelu", "gelu.keras", "int8"),
        ("fixed", "fixed.keras", "int8"),
        ("fixed_float_io", "fixed.keras", "float32"),
    ):
        exporter.export(work / path, target="android-arm64", calib="synthetic", output_dir=work / key, io_dtype=io)
        out[key] = work / key / "model_int8.tflite"
    out["layers"] = load_model(work / "gelu.keras").layers
    out["fixed_layers"] = load_model(work / "fixed.keras").layers
    out["changes"] = changes
    out["model"], out["fixed_model"] = model, fixed
    return out


@pytest.mark.slow
def test_gelu_in_the_middle_is_the_first_cpu_op(keras_exports):
    graph = TFLiteGraph.from_file(keras_exports["gelu"])
    analysis = analyze_edgetpu(graph, layers=keras_exports["layers"])
    first = analysis.first_cpu
    assert first is not None and first.name == "GELU" and first.layer == "conv_gelu"
    assert first.status == statuses.NOT_SUPPORTED
    # swish converts to LOGISTIC + MUL, which the Edge TPU maps (yolov5n log): it stays on the chip
    before = [p for p in analysis.ops if p.index < first.index]
    assert before and all(p.on_tpu for p in before) and {"LOGISTIC", "MUL"} <= {p.name for p in before}
    after = [p for p in analysis.ops if p.index > first.index]
    assert after and all(not p.on_tpu and p.status == statuses.MORE_THAN_ONE_SUBGRAPH for p in after)
    assert {"CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= {p.name for p in after}
    assert analysis.verdict == (
        f"{len(before)} of {len(analysis.ops)} ops on the Edge TPU; first CPU op: GELU at op {first.index} "
        "in layer 'conv_gelu' (operation not supported)"
    )
    fix = analysis.fixes[0]
    assert fix.layer == "conv_gelu" and fix.layer_class == "Conv2D" and "ReLU6" in fix.remedy
    assert fix.automatic == "--edgetpu-compat"
    log = analysis.render_log()
    assert "GELU                           1          Operation not supported" in log
    assert "More than one subgraph is not supported" in log
    assert analysis.to_dict()["first_cpu_op"]["layer"] == "conv_gelu"


@pytest.mark.slow
def test_compat_fixes_make_everything_map(keras_exports):
    assert keras_exports["changes"] == ["layer 'conv_gelu' (Conv2D): activation gelu -> relu6"]
    assert keras_exports["model"].get_layer("conv_swish").activation.__name__ == "silu"  # swish maps: kept
    weights = zip(keras_exports["model"].get_weights(), keras_exports["fixed_model"].get_weights(), strict=True)
    assert all((a == b).all() for a, b in weights)
    analysis = analyze_edgetpu(TFLiteGraph.from_file(keras_exports["fixed"]), layers=keras_exports["fixed_layers"])
    assert analysis.fully_mapped and analysis.fixes == []
    assert analysis.verdict == f"all {len(analysis.ops)} ops on the Edge TPU"


@pytest.mark.slow
def test_float_io_is_flagged_and_int8_io_is_not(keras_exports):
    floating = analyze_edgetpu(TFLiteGraph.from_file(keras_exports["fixed_float_io"]))
    cpu = floating.cpu
    assert [(p.name, p.boundary) for p in cpu] == [("QUANTIZE", True), ("DEQUANTIZE", True)]
    assert cpu[0].index == 0 and cpu[1].index == len(floating.ops) - 1
    assert cpu[0].status == statuses.UNSPECIFIED and cpu[1].status == statuses.UNSUPPORTED_DTYPE
    assert floating.first_cpu is None and len(floating.mapped) == len(floating.ops) - 2
    assert "float I/O conversions" in floating.verdict
    assert floating.fixes[0].automatic == "--io-dtype int8"
    integer = analyze_edgetpu(TFLiteGraph.from_file(keras_exports["fixed"]))
    assert integer.fully_mapped and not any(p.boundary for p in integer.ops)


# --- the real tools: a fake edgetpu_compiler on PATH ----------------------------------------------------

FAKE_COMPILER = r'''#!{python}
"""Stands in for edgetpu_compiler: copies a real compiled twin and prints/writes its real log."""
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("-o") + 1]) if "-o" in args else Path.cwd()
model = Path(args[-1])
pairs = Path(os.environ["FAKE_EDGETPU_PAIRS"])
stem = os.environ.get("FAKE_EDGETPU_AS", model.stem)
log = (pairs / f"{{stem}}_edgetpu.log").read_text()
print(log.splitlines()[0])
print()
print("Model compiled successfully in 7 ms.")
print(log)
shutil.copy(pairs / f"{{stem}}_edgetpu.tflite", out / f"{{model.stem}}_edgetpu.tflite")
(out / f"{{model.stem}}_edgetpu.log").write_text(log)
'''


@pytest.fixture
def fake_compiler(tmp_path, assets, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(FAKE_COMPILER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_EDGETPU_PAIRS", str(assets / PAIRS))
    return script


def test_real_compiler_path_writes_next_to_the_model_and_agrees(fake_compiler, assets, tmp_path, capsys):
    model = tmp_path / "models" / "mnist7.tflite"
    model.parent.mkdir()
    model.write_bytes((assets / PAIRS / "mnist7.tflite").read_bytes())
    run = run_compiler(model)
    compiled = tmp_path / "models" / "mnist7_edgetpu.tflite"
    assert run is not None and run.output_model == compiled
    assert compiled.read_bytes() == (assets / PAIRS / "mnist7_edgetpu.tflite").read_bytes()
    assert run.log.version == "15.0.340273435" and run.log.compile_ms == 7 and run.log.table_total == 8
    assert not list(compiled.parent.glob(".*.tmp"))
    result = run_cli(capsys, "edgetpu", model, "--json", tmp_path / "out.json")
    assert result.code == 0, result.err
    assert "The real compiler agrees with the prediction." in result.out
    assert "Not found on this machine: edgetpu_compiler" not in result.out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["compiler_run"]["log"]["mapped_counts"]["CONV_2D"] == 2 and data["mismatches"] == []


def test_real_compiler_mismatch_is_loud(fake_compiler, assets, tmp_path, capsys, monkeypatch):
    model = tmp_path / "mnist9.tflite"
    model.write_bytes((assets / PAIRS / "mnist9.tflite").read_bytes())
    monkeypatch.setenv("FAKE_EDGETPU_AS", "mnist7")  # the compiler's answer for another model
    result = run_cli(capsys, "edgetpu", model)
    assert result.code == 3
    assert "WARNING: edgeport's Edge TPU prediction disagrees with the real compiler for QUANTIZE" in result.err


def test_absent_tools_are_named_once_with_how_to_install(assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler here
    monkeypatch.setattr(edgetpu_tools, "_said_absent", False)
    tools = find_tools()
    if tools.runtime is not None:
        pytest.skip("this machine has libedgetpu.so.1")
    first = run_cli(capsys, "edgetpu", assets / PAIRS / "mnist9.tflite")
    assert first.code == 0
    assert first.out.count("Not found on this machine") == 1
    assert "sudo apt-get install edgetpu-compiler libedgetpu1-std" in first.out and "x86-64" in first.out
    again = run_cli(capsys, "edgetpu", assets / PAIRS / "mnist7.tflite")
    assert "Not found on this machine" not in again.out  # said once per process
    assert run_compiler(assets / PAIRS / "mnist7.tflite") is None
    with pytest.raises(DeviceError, match="libedgetpu"):
        edgetpu_tools.benchmark_on_device(assets / PAIRS / "mnist7_edgetpu.tflite")


def test_cli_rejects_a_non_tflite(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_bytes(b"x")
    result = run_cli(capsys, "edgetpu", path)
    assert result.code == 2 and "reads a .tflite model" in result.error_line
    result = run_cli(capsys, "edgetpu", tmp_path / "missing.tflite")
    assert result.code == 2 and "does not exist" in result.error_line
